//! Stripe Customers: `POST /v1/customers`, `GET /v1/customers`, `GET /v1/customers/search`,
//! `GET /v1/customers/{id}`.

use serde_json::{json, Value};
use sqlx::SqliteConnection;

use super::error::ApiError;
use super::form::{parse_integer, Form};
use super::store::{self, kind, CustomerClause, NewObject};
use super::{list_envelope, list_query, new_id, now, parse_limit};

/// `POST /v1/customers`: `email`, `name`, `description`, `phone`, `metadata`.
pub(crate) async fn create(
    conn: &mut SqliteConnection,
    account: &str,
    form: &Form,
) -> Result<Value, ApiError> {
    form.only(&["email", "name", "description", "phone", "metadata"])?;
    let email = form.text("email", 512)?;
    if let Some(e) = &email {
        if !valid_email(e) {
            return Err(ApiError::invalid(
                Some("email_invalid"),
                format!("Invalid email address: {e}"),
                Some("email"),
            ));
        }
    }
    let name = form.text("name", 256)?;
    let description = form.text("description", 350)?;
    let phone = form.text("phone", 20)?;
    let metadata = form.metadata()?;
    let id = new_id("cus_", 14);
    let created = now();
    let prefix: String = id
        .trim_start_matches("cus_")
        .chars()
        .take(8)
        .collect::<String>()
        .to_uppercase();
    let body = json!({
        "id": id,
        "object": "customer",
        "address": null,
        "balance": 0,
        "created": created,
        "currency": null,
        "default_source": null,
        "delinquent": false,
        "description": description,
        "discount": null,
        "email": email,
        "invoice_prefix": prefix,
        "invoice_settings": {
            "custom_fields": null,
            "default_payment_method": null,
            "footer": null,
            "rendering_options": null
        },
        "livemode": false,
        "metadata": metadata,
        "name": name,
        "next_invoice_sequence": 1,
        "phone": phone,
        "preferred_locales": [],
        "shipping": null,
        "tax_exempt": "none",
        "test_clock": null
    });
    store::insert(
        conn,
        account,
        &NewObject {
            kind: kind::CUSTOMER,
            id: &id,
            created,
            customer: Some(&id),
            payment_intent: None,
            charge: None,
            email: email.as_deref(),
            body: &body,
            extra: None,
        },
    )
    .await?;
    Ok(body)
}

/// Stripe accepts a loose address: something before and after one `@`, no whitespace.
fn valid_email(e: &str) -> bool {
    match e.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && !domain.is_empty()
                && !domain.contains('@')
                && !e.chars().any(char::is_whitespace)
        }
        None => false,
    }
}

/// `GET /v1/customers?email=&limit=&starting_after=`: newest first; `email` is an exact,
/// case-sensitive filter (as Stripe's).
pub(crate) async fn list(
    conn: &mut SqliteConnection,
    account: &str,
    form: &Form,
) -> Result<Value, ApiError> {
    form.only(&[
        "email",
        "created",
        "limit",
        "starting_after",
        "ending_before",
    ])?;
    let mut filters = Vec::new();
    if let Some(email) = form.filter("email")? {
        filters.push(("email", email));
    }
    let (data, has_more) =
        store::list(conn, account, &list_query(form, kind::CUSTOMER, filters)?).await?;
    Ok(list_envelope("/v1/customers", data, has_more))
}

/// `GET /v1/customers/search?query=&limit=&page=`: Stripe's search envelope
/// (`object: "search_result"`, `next_page`). The query supports `email:'...'` (case-insensitive)
/// and `name:'...'` clauses joined with ` AND `.
pub(crate) async fn search(
    conn: &mut SqliteConnection,
    account: &str,
    form: &Form,
) -> Result<Value, ApiError> {
    form.only(&["query", "limit", "page"])?;
    let clauses = parse_query(form.required("query")?)?;
    let limit = parse_limit(form)?;
    let offset = match form.get("page") {
        None => 0,
        Some(page) => page
            .strip_prefix("pwpage_")
            .and_then(|n| parse_integer("page", n).ok())
            .filter(|n| *n >= 0)
            .ok_or_else(|| {
                ApiError::invalid(
                    None,
                    format!("Invalid page: {page} (use the next_page of a previous search)"),
                    Some("page"),
                )
            })?,
    };
    let (data, has_more) = store::search_customers(conn, account, &clauses, offset, limit).await?;
    let next_page = has_more.then(|| format!("pwpage_{}", offset + limit));
    Ok(json!({
        "object": "search_result",
        "data": data,
        "has_more": has_more,
        "next_page": next_page,
        "url": "/v1/customers/search"
    }))
}

/// Parses `email:'x@y'` / `name:"Ada"` clauses joined by ` AND `.
fn parse_query(query: &str) -> Result<Vec<CustomerClause>, ApiError> {
    let unsupported = || {
        ApiError::invalid(
            None,
            format!(
                "Invalid search query: {query}. The paywarden emulator supports email:'...' and name:'...' clauses joined with AND."
            ),
            Some("query"),
        )
    };
    let mut clauses = Vec::new();
    for clause in query.split(" AND ") {
        let (field, value) = clause.trim().split_once(':').ok_or_else(unsupported)?;
        let value = value.trim();
        let unquoted = value
            .strip_prefix('\'')
            .and_then(|v| v.strip_suffix('\''))
            .or_else(|| value.strip_prefix('"').and_then(|v| v.strip_suffix('"')))
            .ok_or_else(unsupported)?;
        match field.trim() {
            "email" => clauses.push(CustomerClause::Email(unquoted.to_string())),
            "name" => clauses.push(CustomerClause::Name(unquoted.to_string())),
            _ => return Err(unsupported()),
        }
    }
    Ok(clauses)
}

/// `POST /v1/customers/{id}`: updates `email`, `name`, `description`, `phone` (an empty value
/// unsets the field, as on Stripe) and merges `metadata` (`metadata[k]=` removes key `k`).
/// Unknown id: 404 `resource_missing`.
pub(crate) async fn update(
    conn: &mut SqliteConnection,
    account: &str,
    id: &str,
    form: &Form,
) -> Result<Value, ApiError> {
    form.only(&["email", "name", "description", "phone", "metadata"])?;
    let mut body = store::require(conn, account, kind::CUSTOMER, id, "id")
        .await?
        .body;
    for (field, max) in [
        ("email", 512),
        ("name", 256),
        ("description", 350),
        ("phone", 20),
    ] {
        if !form.sent(field) {
            continue;
        }
        let value = form.text(field, max)?;
        if field == "email" {
            if let Some(e) = &value {
                if !valid_email(e) {
                    return Err(ApiError::invalid(
                        Some("email_invalid"),
                        format!("Invalid email address: {e}"),
                        Some("email"),
                    ));
                }
            }
        }
        body[field] = json!(value);
    }
    let updates = form.metadata()?;
    let mut metadata = body["metadata"].as_object().cloned().unwrap_or_default();
    for (name, value) in form.pairs() {
        if let Some(key) = name
            .strip_prefix("metadata[")
            .and_then(|k| k.strip_suffix(']'))
        {
            if value.is_empty() {
                metadata.remove(key);
            }
        }
    }
    metadata.extend(updates);
    body["metadata"] = Value::Object(metadata);
    let email = body["email"].as_str().map(str::to_string);
    store::update_customer(conn, account, id, email.as_deref(), &body).await?;
    Ok(body)
}

/// `GET /v1/customers/{id}`.
pub(crate) async fn retrieve(
    conn: &mut SqliteConnection,
    account: &str,
    id: &str,
) -> Result<Value, ApiError> {
    Ok(store::require(conn, account, kind::CUSTOMER, id, "id")
        .await?
        .body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries() {
        assert_eq!(
            parse_query("email:'a@b.c'").unwrap(),
            vec![CustomerClause::Email("a@b.c".into())]
        );
        assert_eq!(
            parse_query("email:\"a@b.c\" AND name:'Ada L'").unwrap(),
            vec![
                CustomerClause::Email("a@b.c".into()),
                CustomerClause::Name("Ada L".into())
            ]
        );
        assert!(parse_query("email~'a'").is_err());
        assert!(parse_query("phone:'1'").is_err());
        assert!(parse_query("email:a@b").is_err());
    }

    #[test]
    fn emails() {
        assert!(valid_email("a@b.c"));
        assert!(!valid_email("ab.c"));
        assert!(!valid_email("a @b.c"));
        assert!(!valid_email("a@b@c"));
    }
}
