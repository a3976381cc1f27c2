//! Stripe's `expand[]`: a field holding the id of another object is answered with that object
//! instead (<https://docs.stripe.com/expand>; every operation of Stripe's OpenAPI spec documents
//! an `expand` parameter, and each object schema lists its `x-expandableFields`). Lists expand
//! their items' fields with a `data.` prefix; paths nest with dots (`data.latest_charge.customer`)
//! up to four levels, as on Stripe.
//!
//! The emulator expands the fields that refer to objects it stores (the table below). A field
//! Stripe would expand but whose object the emulator does not keep (`payment_method`,
//! `balance_transaction`, ...) is refused with a 400 that says so, rather than answered
//! unexpanded: an integration must never believe it got an object when it got an id.

use std::future::Future;
use std::pin::Pin;

use serde_json::Value;
use sqlx::SqliteConnection;

use super::error::ApiError;
use super::store::{self, kind};

/// Stripe's limit on the depth of an expansion.
const MAX_DEPTH: usize = 4;

/// `(object type, field) -> the kind of object the field's id names`, for the objects the
/// emulator stores (from the `x-expandableFields` of Stripe's schemas).
fn target(object: &str, field: &str) -> Option<&'static str> {
    Some(match (object, field) {
        ("payment_intent", "customer") | ("charge", "customer") => kind::CUSTOMER,
        ("payment_intent", "latest_charge") | ("refund", "charge") => kind::CHARGE,
        ("charge", "payment_intent") | ("refund", "payment_intent") => kind::PAYMENT_INTENT,
        ("price", "product") => kind::PRODUCT,
        ("product", "default_price") => kind::PRICE,
        _ => return None,
    })
}

fn cannot(path: &str, why: &str) -> ApiError {
    ApiError::invalid(
        None,
        format!("This property cannot be expanded ({path}){why}."),
        Some("expand"),
    )
}

/// Applies every `expand` path to `value` (an object or a list envelope).
pub(crate) async fn apply(
    conn: &mut SqliteConnection,
    account: &str,
    paths: &[&str],
    value: &mut Value,
) -> Result<(), ApiError> {
    for path in paths {
        let segments: Vec<&str> = path.split('.').collect();
        if segments.len() > MAX_DEPTH + 1 || segments.iter().any(|s| s.is_empty()) {
            return Err(cannot(path, ": at most four levels of expansion"));
        }
        expand(conn, account, path, &segments, value).await?;
    }
    Ok(())
}

fn expand<'a>(
    conn: &'a mut SqliteConnection,
    account: &'a str,
    path: &'a str,
    segments: &'a [&'a str],
    value: &'a mut Value,
) -> Pin<Box<dyn Future<Output = Result<(), ApiError>> + Send + 'a>> {
    Box::pin(async move {
        let Some((first, rest)) = segments.split_first() else {
            return Ok(());
        };
        let object = value["object"].as_str().unwrap_or_default().to_string();
        if object == "list" || object == "search_result" {
            if *first != "data" || rest.is_empty() {
                return Err(cannot(
                    path,
                    &format!(". You may want to try expanding 'data.{path}' instead"),
                ));
            }
            if let Some(items) = value["data"].as_array_mut() {
                for item in items {
                    expand(conn, account, path, rest, item).await?;
                }
            }
            return Ok(());
        }
        let Some(field) = value.get_mut(*first) else {
            return Err(cannot(path, ""));
        };
        let Some(kind) = target(&object, first) else {
            return Err(cannot(
                path,
                ": the paywarden Stripe emulator does not keep the object this field names",
            ));
        };
        match field {
            Value::Null => Ok(()), // nothing to expand, as on Stripe
            Value::String(id) => {
                let id = id.clone();
                let mut expanded = store::require(conn, account, kind, &id, "expand")
                    .await?
                    .body;
                expand(conn, account, path, rest, &mut expanded).await?;
                *field = expanded;
                Ok(())
            }
            // Already expanded by an earlier path (`latest_charge` then `latest_charge.customer`).
            Value::Object(_) => expand(conn, account, path, rest, field).await,
            _ => Err(cannot(path, "")),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expandable_fields() {
        assert_eq!(
            target("payment_intent", "latest_charge"),
            Some(kind::CHARGE)
        );
        assert_eq!(
            target("refund", "payment_intent"),
            Some(kind::PAYMENT_INTENT)
        );
        assert_eq!(target("price", "product"), Some(kind::PRODUCT));
        assert_eq!(target("payment_intent", "payment_method"), None);
        assert_eq!(target("customer", "email"), None);
    }
}
