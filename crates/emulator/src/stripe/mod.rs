//! The Stripe side of the emulator: a stateful subset of Stripe's API v1, on the same port as
//! OPP's (`/v1/payments*` and `/v1/query*` are OPP's; every other `/v1/...` path is Stripe's).
//!
//! | endpoint | Stripe operation |
//! |---|---|
//! | `POST /v1/customers`, `GET /v1/customers?email=` | create, list (exact `email` filter) |
//! | `GET /v1/customers/search?query=email:'...'` | search (`search_result` envelope) |
//! | `GET`/`POST /v1/customers/{id}` | retrieve, update |
//! | `POST /v1/payment_intents`, `GET /v1/payment_intents?customer=` | create (and confirm), list |
//! | `GET /v1/payment_intents/{id}`, `GET /v1/charges/{id}` | retrieve |
//! | `POST /v1/refunds`, `GET /v1/refunds?payment_intent=&charge=`, `GET /v1/refunds/{id}` | refund, list, retrieve |
//! | `POST /v1/products`, `POST /v1/prices`, `POST /v1/payment_links` (+ `GET .../{id}`) | catalog and payment links |
//! | `GET /sandbox/pay/{plink_id}` | the (unauthenticated) sandbox page a payment link's `url` points at |
//!
//! Conventions, as Stripe's: form-encoded requests (POST body, GET query string) with bracket
//! nesting (`metadata[k]=v`, `line_items[0][price]=...`); JSON answers; amounts are integers in
//! the currency's smallest unit; `created` is unix seconds; lists are newest first with
//! `limit` (1..=100, default 10), `starting_after` / `ending_before` cursors and the envelope
//! `{"object": "list", "data", "has_more", "url"}`; errors are
//! `{"error": {"type", "code", "message", "param", "doc_url"}}` with Stripe's HTTP statuses (400
//! invalid request, 401 bad key, 402 card declined, 404 unknown object in the path, 500
//! storage failure). Every answer carries a `Request-Id: req_...` header.
//!
//! Authentication: `Authorization: Bearer <key>` (or HTTP Basic with the key as user name, as
//! `curl -u sk_test_...:` sends it). Each configured key ([`crate::StripeCredential`]) belongs
//! to one Stripe account; every object is scoped to the account of the key that created it.
//!
//! Idempotency (Stripe's documented v1 semantics): a POST with `Idempotency-Key` stores the
//! status and body of its first answer, per account; the same key with the same method, path and
//! parameters is answered with that stored response plus `Idempotent-Replayed: true`, without
//! executing again; the same key with other parameters or another path is HTTP 400
//! `idempotency_error`. As on Stripe, answers to requests that failed parameter validation
//! (`parameter_*` codes) and storage failures (HTTP 500, nothing written) are not stored, so a
//! corrected retry may reuse the key. Every write runs in one SQLite `BEGIN IMMEDIATE`
//! transaction with its idempotency record, so concurrent writes (refunds of one charge, retries
//! with one key) are serialised: a charge can never be refunded beyond its amount.

mod catalog;
mod customers;
mod error;
mod events;
mod expand;
mod form;
mod payments;
mod store;

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE, HOST};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use base64::Engine as _;
use paywarden_domain::Currency;
use rand::distributions::{Alphanumeric, DistString};
use serde_json::{json, Value};
use sqlx::SqliteConnection;

use crate::StripeCredential;
use error::ApiError;
use form::{at_least, at_most, Form};
pub(crate) use store::StripeStore;
use store::{kind, IdempotentResponse, ListQuery};

/// The emulator-only metadata key that backdates a PaymentIntent (and its Charge):
/// `metadata[sandbox_created]=<unix seconds>`, between 0 and now. Real Stripe has no such
/// thing (it would store the key as ordinary metadata and ignore it); the seed uses it for the
/// "older than 90 days" demo order.
pub(crate) const SANDBOX_CREATED: &str = "sandbox_created";

/// Stripe's default list page size.
const DEFAULT_LIMIT: i64 = 10;

/// Stripe's largest list page size.
const MAX_LIMIT: i64 = 100;

/// Stripe's longest idempotency key.
const MAX_IDEMPOTENCY_KEY_CHARS: usize = 255;

/// State shared by every Stripe request.
pub(crate) struct StripeShared {
    pub(crate) store: StripeStore,
    pub(crate) keys: Vec<StripeCredential>,
    /// Sends webhook events ([`crate::webhooks`]).
    pub(crate) webhooks: Arc<crate::webhooks::Webhooks>,
}

/// The Stripe API router (state applied; merged into the emulator's router).
pub(crate) fn router(shared: Arc<StripeShared>) -> Router {
    Router::new()
        .route("/v1/customers", get(list_customers).post(create_customer))
        .route("/v1/customers/search", get(search_customers))
        .route(
            "/v1/customers/{id}",
            get(retrieve_customer).post(update_customer),
        )
        .route(
            "/v1/payment_intents",
            get(list_payment_intents).post(create_payment_intent),
        )
        .route("/v1/payment_intents/{id}", get(retrieve_payment_intent))
        .route("/v1/charges/{id}", get(retrieve_charge))
        .route("/v1/refunds", get(list_refunds).post(create_refund))
        .route("/v1/refunds/{id}", get(retrieve_refund))
        .route("/v1/products", axum::routing::post(create_product))
        .route("/v1/products/{id}", get(retrieve_product))
        .route("/v1/prices", axum::routing::post(create_price))
        .route("/v1/prices/{id}", get(retrieve_price))
        .route(
            "/v1/payment_links",
            axum::routing::post(create_payment_link),
        )
        .route("/v1/payment_links/{id}", get(retrieve_payment_link))
        .route("/sandbox/pay/{id}", get(sandbox_payment_page))
        .route(
            "/v1/webhook_endpoints",
            axum::routing::post(events::create_webhook_endpoint),
        )
        .fallback(unrecognized)
        .with_state(shared)
}

// ---------------------------------------------------------------------------------------------
// Helpers shared by the endpoint modules

/// `n` random ASCII letters and digits.
pub(crate) fn random_alphanumeric(n: usize) -> String {
    Alphanumeric.sample_string(&mut rand::thread_rng(), n)
}

/// A Stripe-style id: `prefix` (`cus_`, `pi_`, ...) and `n` random letters and digits.
pub(crate) fn new_id(prefix: &str, n: usize) -> String {
    format!("{prefix}{}", random_alphanumeric(n))
}

/// Now, in unix seconds (Stripe's `created`).
pub(crate) fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Stripe's list envelope: `{"object": "list", "data", "has_more", "url"}`.
pub(crate) fn list_envelope(url: &str, data: Vec<Value>, has_more: bool) -> Value {
    json!({ "object": "list", "data": data, "has_more": has_more, "url": url })
}

/// `limit`: 1..=100, default 10 (Stripe's `parameter_invalid_integer` otherwise).
pub(crate) fn parse_limit(form: &Form) -> Result<i64, ApiError> {
    match form.integer("limit")? {
        None => Ok(DEFAULT_LIMIT),
        Some(n) => at_most("limit", at_least("limit", n, 1)?, MAX_LIMIT),
    }
}

/// A list request of `kind` from `limit`, `starting_after` and `ending_before` (at most one
/// cursor, as on Stripe).
pub(crate) fn list_query<'a>(
    form: &'a Form,
    kind: &'static str,
    filters: Vec<(&'static str, &'a str)>,
) -> Result<ListQuery<'a>, ApiError> {
    let starting_after = form.filter("starting_after")?;
    let ending_before = form.filter("ending_before")?;
    if starting_after.is_some() && ending_before.is_some() {
        return Err(ApiError::invalid(
            None,
            "You may only specify one of these parameters: ending_before, starting_after.",
            Some("ending_before"),
        ));
    }
    Ok(ListQuery {
        kind,
        filters,
        starting_after,
        ending_before,
        limit: parse_limit(form)?,
        created: form.created_range()?,
    })
}

/// A required three-letter ISO 4217 currency parameter, answered lower case as Stripe does
/// (`USD` and `usd` are both accepted).
pub(crate) fn parse_currency(form: &Form, name: &str) -> Result<String, ApiError> {
    let raw = form.required(name)?;
    let upper = raw.to_ascii_uppercase();
    if upper.len() != 3 || Currency::from_code(&upper).is_err() {
        return Err(ApiError::invalid(
            None,
            format!(
                "Invalid currency: {raw}. The paywarden Stripe emulator accepts three-letter ISO 4217 codes, such as usd, eur or gbp."
            ),
            Some(name),
        ));
    }
    Ok(upper.to_ascii_lowercase())
}

// ---------------------------------------------------------------------------------------------
// Authentication

/// Stripe's message when no key was sent.
const NO_KEY_MESSAGE: &str = "You did not provide an API key. You need to provide your API key \
     in the Authorization header, using Bearer auth (e.g. 'Authorization: Bearer \
     YOUR_SECRET_KEY'). The paywarden Stripe emulator accepts only its configured test keys.";

/// The account of the key in `Authorization` (Bearer, or Basic with the key as user name).
fn authenticate<'a>(shared: &'a StripeShared, headers: &HeaderMap) -> Result<&'a str, ApiError> {
    let Some(value) = headers.get(AUTHORIZATION) else {
        return Err(ApiError::unauthenticated(NO_KEY_MESSAGE));
    };
    let value = value.to_str().unwrap_or("").trim();
    let (scheme, credentials) = value.split_once(' ').unwrap_or((value, ""));
    let credentials = credentials.trim();
    let key = if scheme.eq_ignore_ascii_case("bearer") {
        credentials.to_string()
    } else if scheme.eq_ignore_ascii_case("basic") {
        base64::engine::general_purpose::STANDARD
            .decode(credentials)
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .map(|user_pass| {
                user_pass
                    .split_once(':')
                    .map_or(user_pass.clone(), |(user, _)| user.to_string())
            })
            .unwrap_or_default()
    } else {
        String::new()
    };
    if key.is_empty() {
        return Err(ApiError::unauthenticated(NO_KEY_MESSAGE));
    }
    shared
        .keys
        .iter()
        .find(|c| constant_time_eq(c.key.as_bytes(), key.as_bytes()))
        .map(|c| c.account.as_str())
        .ok_or_else(|| {
            ApiError::unauthenticated(format!("Invalid API Key provided: {}", mask_key(&key)))
        })
}

/// Compares without an early exit on the first differing byte.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A key as Stripe shows it in "Invalid API Key provided": its mode prefix, asterisks and the
/// last four characters (`sk_test_****************abcd`); never the whole key.
pub(crate) fn mask_key(key: &str) -> String {
    const PREFIXES: [&str; 6] = [
        "sk_test_", "rk_test_", "pk_test_", "sk_live_", "rk_live_", "pk_live_",
    ];
    let chars: Vec<char> = key.chars().collect();
    let prefix = PREFIXES.iter().find(|p| key.starts_with(**p)).copied();
    let prefix_len = prefix.map_or(0, str::len);
    // Fewer than 8 secret characters: show none of them.
    if chars.len() < prefix_len + 8 {
        return format!("{}****", prefix.unwrap_or(""));
    }
    let last4: String = chars[chars.len() - 4..].iter().collect();
    let hidden = (chars.len() - prefix_len - 4).min(24);
    format!("{}{}{last4}", prefix.unwrap_or(""), "*".repeat(hidden))
}

// ---------------------------------------------------------------------------------------------
// Dispatch

/// A write (POST) operation.
enum Write {
    CreateCustomer,
    UpdateCustomer(String),
    CreatePaymentIntent,
    /// `pending`: a sandbox fault leaves the refund pending ([`crate::faults`]).
    CreateRefund {
        pending: bool,
    },
    CreateProduct,
    CreatePrice,
    CreatePaymentLink {
        origin: String,
    },
}

/// A read (GET) operation.
enum Read {
    ListCustomers,
    SearchCustomers,
    ListPaymentIntents,
    ListRefunds,
    /// One object of a kind by the id in the path.
    One(&'static str, String),
}

async fn run_write(
    op: &Write,
    conn: &mut SqliteConnection,
    account: &str,
    form: &Form,
) -> Result<Value, ApiError> {
    match op {
        Write::CreateCustomer => customers::create(conn, account, form).await,
        Write::UpdateCustomer(id) => customers::update(conn, account, id, form).await,
        Write::CreatePaymentIntent => payments::create_payment_intent(conn, account, form).await,
        Write::CreateRefund { pending } => {
            payments::create_refund(conn, account, form, *pending).await
        }
        Write::CreateProduct => catalog::create_product(conn, account, form).await,
        Write::CreatePrice => catalog::create_price(conn, account, form).await,
        Write::CreatePaymentLink { origin } => {
            catalog::create_payment_link(conn, account, form, origin).await
        }
    }
}

async fn run_read(
    op: &Read,
    conn: &mut SqliteConnection,
    account: &str,
    form: &Form,
) -> Result<Value, ApiError> {
    match op {
        Read::ListCustomers => customers::list(conn, account, form).await,
        Read::SearchCustomers => customers::search(conn, account, form).await,
        Read::ListPaymentIntents => payments::list_payment_intents(conn, account, form).await,
        Read::ListRefunds => payments::list_refunds(conn, account, form).await,
        Read::One(kind, id) => {
            form.only(&[])?;
            match *kind {
                kind::CUSTOMER => customers::retrieve(conn, account, id).await,
                kind::PAYMENT_INTENT => payments::retrieve_payment_intent(conn, account, id).await,
                kind::CHARGE => payments::retrieve_charge(conn, account, id).await,
                other => catalog::retrieve(conn, account, other, id).await,
            }
        }
    }
}

/// A JSON answer with the `Request-Id` header (and `Idempotent-Replayed: true` for a replay).
fn respond(status: StatusCode, body: String, request_id: &str, replayed: bool) -> Response {
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Ok(v) = HeaderValue::from_str(request_id) {
        headers.insert("request-id", v);
    }
    if replayed {
        headers.insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    if status == StatusCode::UNAUTHORIZED {
        headers.insert(
            "www-authenticate",
            HeaderValue::from_static("Bearer realm=\"Stripe\""),
        );
    }
    response
}

fn respond_error(error: &ApiError, request_id: &str) -> Response {
    if let ApiError::Internal(e) = error {
        tracing::error!(error = %e, "stripe emulator storage failure");
    }
    respond(error.status(), error.body().to_string(), request_id, false)
}

/// Whether an answer is stored for its idempotency key: everything that began executing, i.e.
/// not parameter-validation failures (`parameter_*` codes) and not storage failures.
fn stores_idempotently(result: &Result<Value, ApiError>) -> bool {
    match result {
        Ok(_) => true,
        Err(ApiError::Internal(_)) => false,
        Err(ApiError::Stripe { code, .. }) => !code.is_some_and(|c| c.starts_with("parameter_")),
    }
}

/// The `Idempotency-Key` header, if any (1 to 255 characters).
fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = value.to_str().map_err(|_| {
        ApiError::invalid(
            None,
            "Invalid Idempotency-Key: it must be visible ASCII characters.",
            None,
        )
    })?;
    if key.is_empty() || key.chars().count() > MAX_IDEMPOTENCY_KEY_CHARS {
        return Err(ApiError::invalid(
            None,
            format!(
                "Invalid Idempotency-Key: keys are 1 to {MAX_IDEMPOTENCY_KEY_CHARS} characters long."
            ),
            None,
        ));
    }
    Ok(Some(key.to_string()))
}

/// POST bodies must be forms (a missing `Content-Type` is read as one).
fn check_content_type(headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(content_type) = headers.get(CONTENT_TYPE) else {
        return Ok(());
    };
    let essence = content_type
        .to_str()
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_string();
    if essence.is_empty() || essence.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
        return Ok(());
    }
    Err(ApiError::invalid(
        None,
        format!(
            "Invalid request: Stripe's API takes application/x-www-form-urlencoded bodies, not {essence}."
        ),
        None,
    ))
}

/// Authenticates, decodes, and runs one write in a `BEGIN IMMEDIATE` transaction together with
/// its idempotency record.
async fn write(
    shared: &StripeShared,
    headers: &HeaderMap,
    path: &str,
    body: &[u8],
    op: Write,
) -> Response {
    let request_id = new_id("req_", 14);
    let prepared = (|| {
        let account = authenticate(shared, headers)?;
        check_content_type(headers)?;
        let form = Form::decode(body)?;
        let key = idempotency_key(headers)?;
        Ok::<_, ApiError>((account, form, key))
    })();
    let (account, form, key) = match prepared {
        Ok(p) => p,
        Err(e) => return respond_error(&e, &request_id),
    };
    match write_in_transaction(shared, account, &form, key.as_deref(), path, &op).await {
        Ok((status, body, replayed)) => {
            if status == StatusCode::OK && !replayed {
                events::after_write(shared, account, &op, &body).await;
            }
            respond(status, body, &request_id, replayed)
        }
        Err(e) => respond_error(&e, &request_id),
    }
}

/// `(status, body, replayed)` of a write; `Err` only for what is answered without being stored.
async fn write_in_transaction(
    shared: &StripeShared,
    account: &str,
    form: &Form,
    key: Option<&str>,
    path: &str,
    op: &Write,
) -> Result<(StatusCode, String, bool), ApiError> {
    let expand_paths = form.expand()?;
    let mut tx = shared.store.pool.begin_with("BEGIN IMMEDIATE").await?;
    let fingerprint = form.fingerprint("POST", path);
    if let Some(key) = key {
        if let Some(stored) = store::idempotent_response(&mut tx, account, key).await? {
            tx.rollback().await?;
            if stored.fingerprint != fingerprint {
                return Err(ApiError::Stripe {
                    status: StatusCode::BAD_REQUEST,
                    kind: "idempotency_error",
                    code: None,
                    message: format!(
                        "Keys for idempotent requests can only be used with the same parameters they were first used with. Try using a key other than '{key}' if you meant to execute a different request."
                    ),
                    param: None,
                    extra: serde_json::Map::new(),
                });
            }
            let status =
                StatusCode::from_u16(stored.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            return Ok((status, stored.body, true));
        }
    }
    let result = match run_write(op, &mut tx, account, form).await {
        Ok(mut value) => {
            if let Err(e) = expand::apply(&mut tx, account, &expand_paths, &mut value).await {
                // Refused as a whole: nothing of the write is kept or stored for the key.
                let _ = tx.rollback().await;
                return Err(e);
            }
            Ok(value)
        }
        Err(e) => Err(e),
    };
    let store_it = stores_idempotently(&result);
    let (status, body) = match result {
        Ok(value) => (StatusCode::OK, value.to_string()),
        Err(e @ ApiError::Internal(_)) => {
            // Nothing of this request is kept (dropping the transaction would roll back too).
            let _ = tx.rollback().await;
            return Err(e);
        }
        Err(e) => (e.status(), e.body().to_string()),
    };
    if let (Some(key), true) = (key, store_it) {
        store::store_idempotent_response(
            &mut tx,
            account,
            key,
            &IdempotentResponse {
                fingerprint,
                status: status.as_u16(),
                body: body.clone(),
            },
            now(),
        )
        .await?;
    }
    // A refused request may have written on purpose (a declined PaymentIntent and its failed
    // Charge), so the transaction is committed either way.
    tx.commit().await?;
    Ok((status, body, false))
}

/// Authenticates, decodes the query string and runs one read.
async fn read(
    shared: &StripeShared,
    headers: &HeaderMap,
    query: Option<&str>,
    op: Read,
) -> Response {
    let request_id = new_id("req_", 14);
    let result = async {
        let account = authenticate(shared, headers)?;
        let form = Form::decode(query.unwrap_or("").as_bytes())?;
        let expand_paths = form.expand()?;
        let mut conn = shared.store.pool.acquire().await?;
        let mut value = run_read(&op, &mut conn, account, &form).await?;
        expand::apply(&mut conn, account, &expand_paths, &mut value).await?;
        Ok::<_, ApiError>(value)
    }
    .await;
    match result {
        Ok(value) => respond(StatusCode::OK, value.to_string(), &request_id, false),
        Err(e) => respond_error(&e, &request_id),
    }
}

// ---------------------------------------------------------------------------------------------
// Endpoints

type Shared = State<Arc<StripeShared>>;

async fn create_customer(State(s): Shared, headers: HeaderMap, uri: Uri, body: Bytes) -> Response {
    write(&s, &headers, uri.path(), &body, Write::CreateCustomer).await
}

async fn update_customer(
    State(s): Shared,
    Path(id): Path<String>,
    headers: HeaderMap,
    uri: Uri,
    body: Bytes,
) -> Response {
    write(&s, &headers, uri.path(), &body, Write::UpdateCustomer(id)).await
}

async fn create_payment_intent(
    State(s): Shared,
    headers: HeaderMap,
    uri: Uri,
    body: Bytes,
) -> Response {
    write(&s, &headers, uri.path(), &body, Write::CreatePaymentIntent).await
}

async fn create_refund(
    State(s): Shared,
    pending: Option<axum::Extension<crate::faults::RefundPending>>,
    headers: HeaderMap,
    uri: Uri,
    body: Bytes,
) -> Response {
    let op = Write::CreateRefund {
        pending: pending.is_some(),
    };
    write(&s, &headers, uri.path(), &body, op).await
}

async fn create_product(State(s): Shared, headers: HeaderMap, uri: Uri, body: Bytes) -> Response {
    write(&s, &headers, uri.path(), &body, Write::CreateProduct).await
}

async fn create_price(State(s): Shared, headers: HeaderMap, uri: Uri, body: Bytes) -> Response {
    write(&s, &headers, uri.path(), &body, Write::CreatePrice).await
}

async fn create_payment_link(
    State(s): Shared,
    headers: HeaderMap,
    uri: Uri,
    body: Bytes,
) -> Response {
    let origin = origin(&headers);
    write(
        &s,
        &headers,
        uri.path(),
        &body,
        Write::CreatePaymentLink { origin },
    )
    .await
}

/// `http://<Host>` of the request (the emulator's own address as the client reached it), for
/// payment links' sandbox URLs; `http://localhost` when the header is missing or odd.
fn origin(headers: &HeaderMap) -> String {
    let host = headers
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| {
            !h.is_empty()
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
        })
        .unwrap_or("localhost");
    format!("http://{host}")
}

async fn list_customers(State(s): Shared, headers: HeaderMap, RawQuery(q): RawQuery) -> Response {
    read(&s, &headers, q.as_deref(), Read::ListCustomers).await
}

async fn search_customers(State(s): Shared, headers: HeaderMap, RawQuery(q): RawQuery) -> Response {
    read(&s, &headers, q.as_deref(), Read::SearchCustomers).await
}

async fn list_payment_intents(
    State(s): Shared,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    read(&s, &headers, q.as_deref(), Read::ListPaymentIntents).await
}

async fn list_refunds(State(s): Shared, headers: HeaderMap, RawQuery(q): RawQuery) -> Response {
    read(&s, &headers, q.as_deref(), Read::ListRefunds).await
}

async fn retrieve_one(
    s: &StripeShared,
    headers: &HeaderMap,
    query: Option<&str>,
    kind: &'static str,
    id: String,
) -> Response {
    read(s, headers, query, Read::One(kind, id)).await
}

macro_rules! retrieve_handler {
    ($name:ident, $kind:expr) => {
        async fn $name(
            State(s): Shared,
            Path(id): Path<String>,
            headers: HeaderMap,
            RawQuery(q): RawQuery,
        ) -> Response {
            retrieve_one(&s, &headers, q.as_deref(), $kind, id).await
        }
    };
}

retrieve_handler!(retrieve_customer, kind::CUSTOMER);
retrieve_handler!(retrieve_payment_intent, kind::PAYMENT_INTENT);
retrieve_handler!(retrieve_charge, kind::CHARGE);
retrieve_handler!(retrieve_refund, kind::REFUND);
retrieve_handler!(retrieve_product, kind::PRODUCT);
retrieve_handler!(retrieve_price, kind::PRICE);
retrieve_handler!(retrieve_payment_link, kind::PAYMENT_LINK);

/// Any other path: Stripe's 404 `invalid_request_error` "Unrecognized request URL".
async fn unrecognized(method: Method, uri: Uri) -> Response {
    let error = ApiError::Stripe {
        status: StatusCode::NOT_FOUND,
        kind: "invalid_request_error",
        code: None,
        message: format!(
            "Unrecognized request URL ({method}: {}). The paywarden emulator serves OPP's /v1/payments and /v1/query and a subset of Stripe's API v1; see docs/emulator.md.",
            uri.path()
        ),
        param: None,
        extra: serde_json::Map::new(),
    };
    respond_error(&error, &new_id("req_", 14))
}

/// `GET /sandbox/pay/{plink_id}`: a plain-text stand-in for Stripe's hosted payment page, saying
/// loudly that nothing can be paid here. Unauthenticated (reached by the link's unguessable id).
async fn sandbox_payment_page(State(s): Shared, Path(id): Path<String>) -> Response {
    let found = async {
        let mut conn = s.store.pool.acquire().await?;
        catalog::payment_link_page(&mut conn, &id).await
    }
    .await;
    let text_response = |status: StatusCode, text: String| {
        let mut r = (status, text).into_response();
        r.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        r
    };
    match found {
        Ok(Some((link, extra))) => {
            let currency = link["currency"].as_str().unwrap_or("").to_uppercase();
            let mut text = format!(
                "PAYWARDEN SANDBOX - Stripe emulator payment link {id}\n\
                 This page stands in for a Stripe Checkout page. Nothing can be paid here and no money moves.\n\n"
            );
            if let Some(lines) = extra["line_items"].as_array() {
                for line in lines {
                    text.push_str(&format!(
                        "{} x {} at {} minor units = {} {currency} minor units\n",
                        line["quantity"], line["price"], line["unit_amount"], line["amount_total"]
                    ));
                }
            }
            text.push_str(&format!(
                "\nTotal: {} {currency} minor units\n",
                extra["amount_total"]
            ));
            text_response(StatusCode::OK, text)
        }
        Ok(None) => text_response(
            StatusCode::NOT_FOUND,
            format!("PAYWARDEN SANDBOX - no payment link {id}\n"),
        ),
        Err(e) => respond_error(&e, &new_id("req_", 14)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_masked() {
        let key = "sk_test_paywarden_demo_key_only_valid_against_the_emulator";
        let masked = mask_key(key);
        assert!(masked.starts_with("sk_test_*"));
        assert!(masked.ends_with("ator"));
        assert!(!masked.contains("paywarden"));
        assert_eq!(mask_key("sk_test_abc"), "sk_test_****");
        assert_eq!(mask_key("short"), "****");
        assert_eq!(mask_key("whatever_long_token"), "***************oken");
    }

    #[test]
    fn limits() {
        assert_eq!(parse_limit(&Form::decode(b"").unwrap()).unwrap(), 10);
        assert_eq!(
            parse_limit(&Form::decode(b"limit=100").unwrap()).unwrap(),
            100
        );
        assert!(parse_limit(&Form::decode(b"limit=0").unwrap()).is_err());
        assert!(parse_limit(&Form::decode(b"limit=101").unwrap()).is_err());
    }

    #[test]
    fn currencies() {
        let f = Form::decode(b"currency=USD").unwrap();
        assert_eq!(parse_currency(&f, "currency").unwrap(), "usd");
        let f = Form::decode(b"currency=dollars").unwrap();
        assert!(parse_currency(&f, "currency").is_err());
    }
}
