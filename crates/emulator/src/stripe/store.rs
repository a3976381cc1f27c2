//! The Stripe side's SQLite state (tables `stripe_objects` and `stripe_idempotency`, created by
//! `migrations/0002_stripe.sql`): every object as its Stripe JSON representation plus the
//! indexed columns the list and search endpoints filter on.

use serde_json::Value;
use sqlx::sqlite::SqlitePool;
use sqlx::{QueryBuilder, Row, Sqlite, SqliteConnection};

use super::error::ApiError;
use super::form::CreatedRange;
use crate::error::EmulatorError;

/// Stripe object types (the `object` field) the emulator stores.
pub(crate) mod kind {
    pub(crate) const CUSTOMER: &str = "customer";
    pub(crate) const PAYMENT_INTENT: &str = "payment_intent";
    pub(crate) const CHARGE: &str = "charge";
    pub(crate) const REFUND: &str = "refund";
    pub(crate) const PRODUCT: &str = "product";
    pub(crate) const PRICE: &str = "price";
    pub(crate) const PAYMENT_LINK: &str = "payment_link";
}

/// The Stripe state's connection pool: the OPP store's one connection to the same file
/// (`crate::store::CONNECTIONS`; the schema, the Stripe tables included, is applied by the OPP
/// store's migrations, which include `0002_stripe.sql`).
#[derive(Debug, Clone)]
pub(crate) struct StripeStore {
    pub(crate) pool: SqlitePool,
}

impl StripeStore {
    /// The Stripe side on the OPP store's pool (already migrated).
    pub(crate) fn new(pool: SqlitePool) -> StripeStore {
        StripeStore { pool }
    }
}

/// A new object row.
#[derive(Debug, Clone)]
pub(crate) struct NewObject<'a> {
    pub kind: &'static str,
    pub id: &'a str,
    pub created: i64,
    pub customer: Option<&'a str>,
    pub payment_intent: Option<&'a str>,
    pub charge: Option<&'a str>,
    pub email: Option<&'a str>,
    /// The Stripe JSON representation, served as is.
    pub body: &'a Value,
    /// Emulator-only data not on the wire (e.g. a payment link's line items).
    pub extra: Option<&'a Value>,
}

/// A stored object.
#[derive(Debug, Clone)]
pub(crate) struct Stored {
    pub body: Value,
    pub extra: Option<Value>,
}

/// Replaces a customer's JSON representation and its indexed `email` column.
pub(crate) async fn update_customer(
    conn: &mut SqliteConnection,
    account: &str,
    id: &str,
    email: Option<&str>,
    body: &Value,
) -> Result<(), ApiError> {
    sqlx::query("UPDATE stripe_objects SET body = ?, email = ? WHERE account = ? AND id = ?")
        .bind(body.to_string())
        .bind(email)
        .bind(account)
        .bind(id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Stores a new object.
pub(crate) async fn insert(
    conn: &mut SqliteConnection,
    account: &str,
    o: &NewObject<'_>,
) -> Result<(), ApiError> {
    sqlx::query(
        "INSERT INTO stripe_objects \
         (id, account, object, created, customer, payment_intent, charge, email, body, extra) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(o.id)
    .bind(account)
    .bind(o.kind)
    .bind(o.created)
    .bind(o.customer)
    .bind(o.payment_intent)
    .bind(o.charge)
    .bind(o.email)
    .bind(o.body.to_string())
    .bind(o.extra.map(Value::to_string))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Replaces an object's JSON representation.
pub(crate) async fn update_body(
    conn: &mut SqliteConnection,
    account: &str,
    id: &str,
    body: &Value,
) -> Result<(), ApiError> {
    sqlx::query("UPDATE stripe_objects SET body = ? WHERE account = ? AND id = ?")
        .bind(body.to_string())
        .bind(account)
        .bind(id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// One object of `account` of type `kind` by id (`None` when missing, of another account or of
/// another type).
pub(crate) async fn get(
    conn: &mut SqliteConnection,
    account: &str,
    kind: &str,
    id: &str,
) -> Result<Option<Stored>, ApiError> {
    let row = sqlx::query(
        "SELECT body, extra FROM stripe_objects WHERE account = ? AND object = ? AND id = ?",
    )
    .bind(account)
    .bind(kind)
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?;
    row.map(|row| stored(&row, id)).transpose()
}

/// A row's `body` and `extra` JSON, as stored for object `id`.
fn stored(row: &sqlx::sqlite::SqliteRow, id: &str) -> Result<Stored, ApiError> {
    let body: String = row.try_get("body")?;
    let extra: Option<String> = row.try_get("extra")?;
    Ok(Stored {
        body: parse_json(id, &body)?,
        extra: extra.map(|e| parse_json(id, &e)).transpose()?,
    })
}

/// One object of type `kind` by id, whatever its account (for the public sandbox payment-link
/// page, which is reached by its unguessable id, as Stripe's hosted pages are).
pub(crate) async fn get_any_account(
    conn: &mut SqliteConnection,
    kind: &str,
    id: &str,
) -> Result<Option<Stored>, ApiError> {
    let row = sqlx::query("SELECT body, extra FROM stripe_objects WHERE object = ? AND id = ?")
        .bind(kind)
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?;
    row.map(|row| stored(&row, id)).transpose()
}

/// Like [`get`], `resource_missing` when absent (`param` names where the id came from).
pub(crate) async fn require(
    conn: &mut SqliteConnection,
    account: &str,
    kind: &str,
    id: &str,
    param: &str,
) -> Result<Stored, ApiError> {
    get(conn, account, kind, id)
        .await?
        .ok_or_else(|| ApiError::no_such(kind, id, param))
}

fn parse_json(id: &str, text: &str) -> Result<Value, ApiError> {
    serde_json::from_str(text).map_err(|e| {
        ApiError::Internal(EmulatorError::Corrupt(format!(
            "stripe object {id}: invalid JSON ({e})"
        )))
    })
}

/// A list request: newest first (`created` descending, then the reverse storage order), at
/// most `limit` objects, after the `starting_after` cursor (older objects) or before the
/// `ending_before` cursor (newer objects); at most one cursor.
#[derive(Debug, Clone)]
pub(crate) struct ListQuery<'a> {
    pub kind: &'static str,
    /// Equality filters on the indexed columns: `customer`, `payment_intent`, `charge`, `email`.
    pub filters: Vec<(&'static str, &'a str)>,
    pub starting_after: Option<&'a str>,
    pub ending_before: Option<&'a str>,
    pub limit: i64,
    /// The `created` filter (`created`, `created[gt|gte|lt|lte]`).
    pub created: CreatedRange,
}

/// The `(created, seq)` sort key of the cursor object `id`; `resource_missing` on `param`.
async fn cursor(
    conn: &mut SqliteConnection,
    account: &str,
    kind: &'static str,
    id: &str,
    param: &str,
) -> Result<(i64, i64), ApiError> {
    let row = sqlx::query(
        "SELECT created, seq FROM stripe_objects WHERE account = ? AND object = ? AND id = ?",
    )
    .bind(account)
    .bind(kind)
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(row) = row else {
        return Err(ApiError::no_such(kind, id, param));
    };
    Ok((
        row.try_get::<i64, _>("created")?,
        row.try_get::<i64, _>("seq")?,
    ))
}

/// One page of a list: the objects (always newest first) and Stripe's `has_more` (more objects
/// beyond this page in the paging direction: older ones for `starting_after` or no cursor,
/// newer ones for `ending_before`).
pub(crate) async fn list(
    conn: &mut SqliteConnection,
    account: &str,
    q: &ListQuery<'_>,
) -> Result<(Vec<Value>, bool), ApiError> {
    let after = match q.starting_after {
        None => None,
        Some(id) => Some(cursor(conn, account, q.kind, id, "starting_after").await?),
    };
    let before = match q.ending_before {
        None => None,
        Some(id) => Some(cursor(conn, account, q.kind, id, "ending_before").await?),
    };
    let mut select =
        QueryBuilder::<Sqlite>::new("SELECT id, body FROM stripe_objects WHERE account = ");
    select.push_bind(account.to_string());
    select.push(" AND object = ");
    select.push_bind(q.kind);
    for (column, value) in &q.filters {
        // Column names come from the code, never from the request.
        select.push(format!(" AND {column} = "));
        select.push_bind(value.to_string());
    }
    for (op, bound) in [
        (" AND created > ", q.created.gt),
        (" AND created >= ", q.created.gte),
        (" AND created < ", q.created.lt),
        (" AND created <= ", q.created.lte),
    ] {
        if let Some(bound) = bound {
            select.push(op);
            select.push_bind(bound);
        }
    }
    if let Some((created, seq)) = after {
        select.push(" AND (created < ");
        select.push_bind(created);
        select.push(" OR (created = ");
        select.push_bind(created);
        select.push(" AND seq < ");
        select.push_bind(seq);
        select.push("))");
    }
    if let Some((created, seq)) = before {
        select.push(" AND (created > ");
        select.push_bind(created);
        select.push(" OR (created = ");
        select.push_bind(created);
        select.push(" AND seq > ");
        select.push_bind(seq);
        select.push("))");
        // The page nearest the cursor: ascending from it, reversed below.
        select.push(" ORDER BY created ASC, seq ASC LIMIT ");
    } else {
        select.push(" ORDER BY created DESC, seq DESC LIMIT ");
    }
    select.push_bind(q.limit + 1);
    let rows = select.build().fetch_all(&mut *conn).await?;
    let has_more = rows.len() as i64 > q.limit;
    let mut out = Vec::with_capacity(rows.len());
    for row in rows.iter().take(usize::try_from(q.limit).unwrap_or(0)) {
        let id: String = row.try_get("id")?;
        let body: String = row.try_get("body")?;
        out.push(parse_json(&id, &body)?);
    }
    if before.is_some() {
        out.reverse();
    }
    Ok((out, has_more))
}

/// A customer search clause: an equality on a customer field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CustomerClause {
    /// `email:'...'`, case-insensitive.
    Email(String),
    /// `name:'...'`, exact.
    Name(String),
}

/// Customers matching every clause, newest first, `limit` from `offset`, and whether more
/// follow.
pub(crate) async fn search_customers(
    conn: &mut SqliteConnection,
    account: &str,
    clauses: &[CustomerClause],
    offset: i64,
    limit: i64,
) -> Result<(Vec<Value>, bool), ApiError> {
    let mut select =
        QueryBuilder::<Sqlite>::new("SELECT id, body FROM stripe_objects WHERE account = ");
    select.push_bind(account.to_string());
    select.push(" AND object = ");
    select.push_bind(kind::CUSTOMER);
    for clause in clauses {
        match clause {
            CustomerClause::Email(e) => {
                select.push(" AND lower(email) = lower(");
                select.push_bind(e.clone());
                select.push(")");
            }
            CustomerClause::Name(n) => {
                select.push(" AND json_extract(body, '$.name') = ");
                select.push_bind(n.clone());
            }
        }
    }
    select.push(" ORDER BY created DESC, seq DESC LIMIT ");
    select.push_bind(limit + 1);
    select.push(" OFFSET ");
    select.push_bind(offset);
    let rows = select.build().fetch_all(&mut *conn).await?;
    let has_more = rows.len() as i64 > limit;
    let mut out = Vec::with_capacity(rows.len());
    for row in rows.iter().take(usize::try_from(limit).unwrap_or(0)) {
        let id: String = row.try_get("id")?;
        let body: String = row.try_get("body")?;
        out.push(parse_json(&id, &body)?);
    }
    Ok((out, has_more))
}

/// A stored idempotent response.
#[derive(Debug, Clone)]
pub(crate) struct IdempotentResponse {
    pub fingerprint: String,
    pub status: u16,
    pub body: String,
}

/// The response stored for `key` of `account`, if any.
pub(crate) async fn idempotent_response(
    conn: &mut SqliteConnection,
    account: &str,
    key: &str,
) -> Result<Option<IdempotentResponse>, ApiError> {
    let row = sqlx::query(
        "SELECT request_fingerprint, status, body FROM stripe_idempotency \
         WHERE account = ? AND idempotency_key = ?",
    )
    .bind(account)
    .bind(key)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let status: i64 = row.try_get("status")?;
    Ok(Some(IdempotentResponse {
        fingerprint: row.try_get("request_fingerprint")?,
        status: u16::try_from(status).unwrap_or(500),
        body: row.try_get("body")?,
    }))
}

/// Stores the first response for `key` of `account`.
pub(crate) async fn store_idempotent_response(
    conn: &mut SqliteConnection,
    account: &str,
    key: &str,
    response: &IdempotentResponse,
    created: i64,
) -> Result<(), ApiError> {
    sqlx::query(
        "INSERT INTO stripe_idempotency \
         (account, idempotency_key, request_fingerprint, status, body, created) \
         VALUES (?, ?, ?, ?, ?, ?)",
    )
    .bind(account)
    .bind(key)
    .bind(&response.fingerprint)
    .bind(i64::from(response.status))
    .bind(&response.body)
    .bind(created)
    .execute(&mut *conn)
    .await?;
    Ok(())
}
