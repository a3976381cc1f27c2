//! Sandbox fault injection: `POST /__emulator/faults` arms a fault that the next matching
//! request (provider, method, path pattern) suffers, so tests and demos can reproduce the
//! failures each provider documents without a real outage. `GET /__emulator/faults` lists what
//! is still armed, `DELETE /__emulator/faults` disarms everything, and
//! `POST /__emulator/stripe/refunds/{id}` resolves a refund left `pending` (to `succeeded`,
//! `failed` or `canceled`), and `POST /__emulator/opp/payments/{id}` resolves an OPP transaction
//! left pending by the `opp_pending` fault (to `succeeded` or `declined`). The emulator only exists in the sandbox; paywarden's CLI refuses to
//! arm faults on a provider that is not the emulator (docs/emulator.md, "Failure injection").
//!
//! Faults act around the real handlers, so "after commit" means the emulator's state really
//! changed (a refund exists) while the client hears something else.

use std::{sync::Arc, time::Duration};

use axum::{
    body::Body,
    extract::{Path, Request, State},
    http::{HeaderValue, Method, StatusCode},
    middleware::Next,
    response::{IntoResponse, Response},
    routing::{get, post},
    Json, Router,
};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sqlx::{Row, SqlitePool};
use tokio::sync::Mutex;

/// The provider whose API a request belongs to (by path, as the emulator routes them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FaultProvider {
    /// OPP: `/v1/payments*`, `/v1/query*`.
    Opp,
    /// Stripe: every other `/v1/...` path.
    Stripe,
    /// ifthenpay: everything else.
    Ifthenpay,
}

impl FaultProvider {
    fn of(path: &str) -> Self {
        if path.starts_with("/v1/payments") || path.starts_with("/v1/query") {
            Self::Opp
        } else if path.starts_with("/v1/") {
            Self::Stripe
        } else {
            Self::Ifthenpay
        }
    }
}

/// What happens to a matching request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FaultAction {
    /// The request is handled (committed), then the answer is held `hold_ms` (default 30 s):
    /// the client times out although the operation happened.
    TimeoutAfterCommit {
        /// How long the answer is held.
        #[serde(default = "default_hold")]
        hold_ms: u64,
    },
    /// The request is handled (committed), then answered with HTTP `status` (default 500) and
    /// the provider's server-error body instead of the real answer.
    ErrorAfterCommit {
        /// A 5xx status.
        #[serde(default = "default_500")]
        status: u16,
    },
    /// The request is handled (committed), then the connection is cut while the answer is
    /// being sent: the client sees a reset after sending.
    ResetAfterCommit,
    /// HTTP 409: another request with the same idempotency key is in flight (Stripe's
    /// `idempotency_key_in_use`). With `commit` (default true) that other request is this one,
    /// handled in the background: the operation happens although the client heard 409.
    Conflict {
        /// Whether the request is handled anyway.
        #[serde(default = "default_true")]
        commit: bool,
        /// `Retry-After` seconds, if any.
        #[serde(default)]
        retry_after_s: Option<u64>,
    },
    /// HTTP 429 with `Retry-After`: rate limited, not processed at all.
    Throttle {
        /// `Retry-After` seconds (default 1).
        #[serde(default = "default_one")]
        retry_after_s: u64,
    },
    /// Late delivery: the request is held `delay_ms` before it is handled; it is handled even
    /// if the client has stopped waiting.
    Delay {
        /// How long the request is held.
        delay_ms: u64,
    },
    /// Stripe `POST /v1/refunds` only: the refund is created `pending` (the charge's
    /// `amount_refunded` counts it, as Stripe's does) until `POST
    /// /__emulator/stripe/refunds/{id}` resolves it, or `then` after `after_ms`.
    RefundPending {
        /// What it becomes by itself after `after_ms` (`succeeded`, `failed`, `canceled`);
        /// `None`: it stays pending until resolved.
        #[serde(default)]
        then: Option<String>,
        /// When `then` happens.
        #[serde(default)]
        after_ms: u64,
    },
    /// OPP `POST /v1/payments` and `POST /v1/payments/{id}`: an operation OPP's rules accept
    /// is stored and answered pending (`000.200.000` "transaction pending", HTTP 200), not yet
    /// counted on the payment, until `POST /__emulator/opp/payments/{id}` resolves it, or
    /// `then` after `after_ms`. Source: OPP "Result codes", pending group `^(000\.200)`:
    /// "an open session in the background, meaning within half an hour there will be a status
    /// change" (developers.primeiropay.com/result-codes, an OPP white-label copy of
    /// docs.oppwa.com/reference/resultCodes); the change arrives as a `PAYMENT` webhook
    /// notification "when a payment is created or updated" (OPP "Webhooks", payload) and on
    /// `GET /v1/query/{id}`. Which operations an acquirer leaves pending is not published:
    /// that this fault decides it is an assumption (docs/emulator.md).
    OppPending {
        /// What it becomes by itself after `after_ms` (`succeeded` or `declined`); `None`: it
        /// stays pending until resolved.
        #[serde(default)]
        then: Option<String>,
        /// When `then` happens.
        #[serde(default)]
        after_ms: u64,
    },
    /// ifthenpay, the sandbox shopper (`POST /sandbox/ifthenpay/shopper`) paying: the payment
    /// callback is sent `copies` extra times (a duplicate callback).
    CallbackDuplicate {
        /// Extra copies (default 1).
        #[serde(default = "default_one_u32")]
        copies: u32,
    },
    /// ifthenpay shopper paying: the payment callback is sent `delay_ms` later (a late
    /// callback), in the background.
    CallbackLate {
        /// How late.
        delay_ms: u64,
    },
}

fn default_one_u32() -> u32 {
    1
}

fn default_hold() -> u64 {
    30_000
}
fn default_500() -> u16 {
    500
}
fn default_true() -> bool {
    true
}
fn default_one() -> u64 {
    1
}

/// One armed fault.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fault {
    /// Only requests of this provider (any when absent).
    #[serde(default)]
    pub provider: Option<FaultProvider>,
    /// Only requests with this method (any when absent), e.g. `POST`.
    #[serde(default)]
    pub method: Option<String>,
    /// The path pattern: `*` matches any run of characters (`/v1/payments/*`), anything else
    /// itself; the query string is not part of it.
    pub path: String,
    /// What happens.
    pub action: FaultAction,
    /// How many matching requests suffer it (default 1).
    #[serde(default = "default_times")]
    pub times: u32,
}

fn default_times() -> u32 {
    1
}

fn glob(pattern: &str, text: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == text,
        Some((head, rest)) => {
            let Some(after) = text.strip_prefix(head) else {
                return false;
            };
            (0..=after.len())
                .filter(|i| after.is_char_boundary(*i))
                .any(|i| glob(rest, &after[i..]))
        }
    }
}

impl Fault {
    fn matches(&self, method: &Method, path: &str) -> bool {
        self.provider.is_none_or(|p| p == FaultProvider::of(path))
            && self
                .method
                .as_deref()
                .is_none_or(|m| m.eq_ignore_ascii_case(method.as_str()))
            && glob(&self.path, path)
    }
}

/// How the ifthenpay shopper's payment callback is sent (read by its handler).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct CallbackFault {
    /// Extra copies of the callback.
    pub(crate) extra_copies: u32,
    /// How late it is sent.
    pub(crate) delay_ms: u64,
}

/// Marks a Stripe refund request whose refund is created `pending` (read by its handler).
#[derive(Debug, Clone, Copy)]
pub(crate) struct RefundPending;

/// Marks an OPP payment request answered pending (`000.200.000`; read by its handler).
#[derive(Debug, Clone, Copy)]
pub(crate) struct OppPending;

/// The armed faults and what resolving a pending refund needs.
#[derive(Debug)]
pub(crate) struct Faults {
    armed: Mutex<Vec<Fault>>,
    pub(crate) stripe: SqlitePool,
    pub(crate) webhooks: Arc<crate::webhooks::Webhooks>,
    /// OPP's transactions (pending ones are resolved here).
    pub(crate) opp: crate::store::Store,
}

type Shared = Arc<Faults>;

impl Faults {
    pub(crate) fn new(
        stripe: SqlitePool,
        webhooks: Arc<crate::webhooks::Webhooks>,
        opp: crate::store::Store,
    ) -> Shared {
        Arc::new(Faults {
            armed: Mutex::new(Vec::new()),
            stripe,
            webhooks,
            opp,
        })
    }

    async fn take(&self, method: &Method, path: &str) -> Option<FaultAction> {
        let mut armed = self.armed.lock().await;
        let i = armed.iter().position(|f| f.matches(method, path))?;
        let action = armed[i].action.clone();
        armed[i].times = armed[i].times.saturating_sub(1);
        if armed[i].times == 0 {
            armed.remove(i);
        }
        Some(action)
    }
}

/// The control endpoints (`/__emulator/...`).
pub(crate) fn router(faults: Shared) -> Router {
    Router::new()
        .route("/__emulator/faults", get(list).post(arm).delete(disarm_all))
        .route("/__emulator/stripe/refunds/{id}", post(resolve))
        .route("/__emulator/opp/payments/{id}", post(resolve_opp))
        .route("/__emulator/stripe/disputes", post(crate::disputes::create))
        .with_state(faults)
}

async fn list(State(f): State<Shared>) -> Json<Vec<Fault>> {
    Json(f.armed.lock().await.clone())
}

async fn arm(State(f): State<Shared>, Json(fault): Json<Fault>) -> Response {
    if fault.times == 0 || fault.path.is_empty() {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "`path` must be non-empty and `times` at least 1"})),
        )
            .into_response();
    }
    if let FaultAction::ErrorAfterCommit { status } = fault.action {
        if !(500..=599).contains(&status) {
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({"error": "error_after_commit takes a 5xx status"})),
            )
                .into_response();
        }
    }
    tracing::warn!(?fault, "sandbox fault armed");
    f.armed.lock().await.push(fault.clone());
    (StatusCode::CREATED, Json(fault)).into_response()
}

async fn disarm_all(State(f): State<Shared>) -> StatusCode {
    f.armed.lock().await.clear();
    StatusCode::NO_CONTENT
}

#[derive(Debug, Deserialize)]
struct Resolution {
    status: String,
    #[serde(default)]
    failure_reason: Option<String>,
}

async fn resolve(
    State(f): State<Shared>,
    Path(id): Path<String>,
    Json(r): Json<Resolution>,
) -> Response {
    match resolve_refund(
        &f.stripe,
        &f.webhooks,
        &id,
        &r.status,
        r.failure_reason.as_deref(),
    )
    .await
    {
        Ok(body) => Json(body).into_response(),
        Err((status, message)) => (status, Json(json!({"error": message}))).into_response(),
    }
}

#[derive(Debug, Deserialize)]
struct OppResolution {
    result: String,
}

async fn resolve_opp(
    State(f): State<Shared>,
    Path(id): Path<String>,
    Json(r): Json<OppResolution>,
) -> Response {
    match crate::handlers::resolve_pending(&f.opp, &f.webhooks, &id, &r.result).await {
        Ok(body) => Json(body).into_response(),
        Err((status, message)) => (status, Json(json!({"error": message}))).into_response(),
    }
}

/// Resolves pending refund `id` to `status`. `failed` and `canceled` give the amount back to
/// the charge (`amount_refunded` down, `refunded` false), as Stripe returns a failed refund's
/// funds to the balance; `failed` carries `failure_reason` (default `unknown`).
pub(crate) async fn resolve_refund(
    pool: &SqlitePool,
    webhooks: &crate::webhooks::Webhooks,
    id: &str,
    status: &str,
    failure_reason: Option<&str>,
) -> Result<Value, (StatusCode, String)> {
    let internal = |e: sqlx::Error| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string());
    if !["succeeded", "failed", "canceled"].contains(&status) {
        return Err((
            StatusCode::BAD_REQUEST,
            "status must be succeeded, failed or canceled".into(),
        ));
    }
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.map_err(internal)?;
    let row =
        sqlx::query("SELECT account, body FROM stripe_objects WHERE object = 'refund' AND id = ?")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(internal)?
            .ok_or((StatusCode::NOT_FOUND, format!("no refund {id}")))?;
    let account: String = row.try_get("account").map_err(internal)?;
    let text: String = row.try_get("body").map_err(internal)?;
    let mut refund: Value = serde_json::from_str(&text)
        .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    if refund["status"] != "pending" {
        return Err((
            StatusCode::CONFLICT,
            format!("refund {id} is {}, not pending", refund["status"]),
        ));
    }
    refund["status"] = json!(status);
    if status != "succeeded" {
        if status == "failed" {
            refund["failure_reason"] = json!(failure_reason.unwrap_or("unknown"));
        }
        let charge_id = refund["charge"].as_str().unwrap_or_default().to_string();
        let amount = refund["amount"].as_i64().unwrap_or(0);
        let text: Option<String> = sqlx::query_scalar(
            "SELECT body FROM stripe_objects WHERE account = ? AND object = 'charge' AND id = ?",
        )
        .bind(&account)
        .bind(&charge_id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(internal)?;
        if let Some(text) = text {
            let mut charge: Value = serde_json::from_str(&text)
                .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
            let refunded = charge["amount_refunded"].as_i64().unwrap_or(0);
            charge["amount_refunded"] = json!((refunded - amount).max(0));
            charge["refunded"] = json!(false);
            sqlx::query("UPDATE stripe_objects SET body = ? WHERE account = ? AND id = ?")
                .bind(charge.to_string())
                .bind(&account)
                .bind(&charge_id)
                .execute(&mut *tx)
                .await
                .map_err(internal)?;
        }
    }
    sqlx::query("UPDATE stripe_objects SET body = ? WHERE account = ? AND id = ?")
        .bind(refund.to_string())
        .bind(&account)
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(internal)?;
    tx.commit().await.map_err(internal)?;
    tracing::warn!(refund = id, status, "sandbox refund resolved");
    // Stripe sends `refund.updated` when a refund's status changes (docs.stripe.com/api/events/types).
    webhooks.stripe_event(&account, "refund.updated", &refund);
    Ok(refund)
}

/// The middleware applying armed faults to every provider request.
pub(crate) async fn inject(State(f): State<Shared>, mut request: Request, next: Next) -> Response {
    let path = request.uri().path().to_string();
    if path.starts_with("/__emulator/") {
        let mut response = next.run(request).await;
        response
            .headers_mut()
            .insert("x-paywarden-sandbox", HeaderValue::from_static("true"));
        return response;
    }
    let Some(action) = f.take(request.method(), &path).await else {
        return next.run(request).await;
    };
    let provider = FaultProvider::of(&path);
    tracing::warn!(?action, path, "sandbox fault injected");
    // Handled on its own task: it completes (commits) whatever the client does meanwhile.
    let handle = |request: Request, next: Next| async move {
        tokio::spawn(next.run(request))
            .await
            .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
    };
    match action {
        FaultAction::TimeoutAfterCommit { hold_ms } => {
            let response = handle(request, next).await;
            tokio::time::sleep(Duration::from_millis(hold_ms)).await;
            response
        }
        FaultAction::ErrorAfterCommit { status } => {
            let _ = handle(request, next).await;
            server_error(provider, status)
        }
        FaultAction::ResetAfterCommit => {
            let _ = handle(request, next).await;
            cut_connection()
        }
        FaultAction::Conflict {
            commit,
            retry_after_s,
        } => {
            if commit {
                tokio::spawn(next.run(request));
            }
            let mut response = error_body(
                provider,
                StatusCode::CONFLICT,
                json!({"error": {
                    "type": "idempotency_error",
                    "code": "idempotency_key_in_use",
                    "message": "There is currently another in-progress request using this Stripe API key and idempotency key. Please try again later.",
                }}),
                json!({"result": {"code": "800.900.100", "description": "a request with the same merchant reference is being processed"}}),
            );
            if let Some(s) = retry_after_s {
                set_retry_after(&mut response, s);
            }
            response
        }
        FaultAction::Throttle { retry_after_s } => {
            let mut response = error_body(
                provider,
                StatusCode::TOO_MANY_REQUESTS,
                json!({"error": {
                    "type": "invalid_request_error",
                    "code": "rate_limit",
                    "message": "Too many requests hit the API too quickly. We recommend an exponential backoff of your requests.",
                }}),
                json!({"result": {"code": "800.120.100", "description": "Too many requests. Please try again later."}}),
            );
            set_retry_after(&mut response, retry_after_s);
            response
        }
        FaultAction::CallbackDuplicate { copies } => {
            request.extensions_mut().insert(CallbackFault {
                extra_copies: copies,
                delay_ms: 0,
            });
            next.run(request).await
        }
        FaultAction::CallbackLate { delay_ms } => {
            request.extensions_mut().insert(CallbackFault {
                extra_copies: 0,
                delay_ms,
            });
            next.run(request).await
        }
        FaultAction::Delay { delay_ms } => {
            tokio::time::sleep(Duration::from_millis(delay_ms)).await;
            handle(request, next).await
        }
        FaultAction::OppPending { then, after_ms } => {
            request.extensions_mut().insert(OppPending);
            let response = handle(request, next).await;
            let Some(then) = then else {
                return response;
            };
            let (store, webhooks) = (f.opp.clone(), f.webhooks.clone());
            settle_later(response, after_ms, move |id| async move {
                if let Err((_, e)) =
                    crate::handlers::resolve_pending(&store, &webhooks, &id, &then).await
                {
                    tracing::error!(error = %e, "could not resolve a pending sandbox OPP transaction");
                }
            })
            .await
        }
        FaultAction::RefundPending { then, after_ms } => {
            request.extensions_mut().insert(RefundPending);
            let response = handle(request, next).await;
            let Some(then) = then else {
                return response;
            };
            let (pool, webhooks) = (f.stripe.clone(), f.webhooks.clone());
            settle_later(response, after_ms, move |id| async move {
                if let Err((_, e)) = resolve_refund(&pool, &webhooks, &id, &then, None).await {
                    tracing::error!(error = %e, "could not resolve a pending sandbox refund");
                }
            })
            .await
        }
    }
}

/// Answers `response` unchanged and, when its JSON body names the object it created (`id`),
/// runs `settle` with that id `after_ms` later in a task of its own: how the pending faults
/// resolve what they made pending (the provider's later status change and webhook).
async fn settle_later<F, Fut>(response: Response, after_ms: u64, settle: F) -> Response
where
    F: FnOnce(String) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    if let Some(id) = serde_json::from_slice::<Value>(&bytes)
        .ok()
        .and_then(|v| v["id"].as_str().map(str::to_string))
    {
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(after_ms)).await;
            settle(id).await;
        });
    }
    Response::from_parts(parts, Body::from(bytes))
}

fn set_retry_after(response: &mut Response, seconds: u64) {
    if let Ok(v) = HeaderValue::from_str(&seconds.to_string()) {
        response.headers_mut().insert("retry-after", v);
    }
}

fn error_body(provider: FaultProvider, status: StatusCode, stripe: Value, opp: Value) -> Response {
    let body = match provider {
        FaultProvider::Stripe => stripe,
        _ => opp,
    };
    let mut response = (status, Json(body)).into_response();
    response
        .headers_mut()
        .insert("x-paywarden-sandbox", HeaderValue::from_static("true"));
    response
}

fn server_error(provider: FaultProvider, status: u16) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    error_body(
        provider,
        status,
        json!({"error": {
            "type": "api_error",
            "message": "Something went wrong on Stripe's end. (Sandbox fault injected after the request was processed.)",
        }}),
        json!({"result": {"code": "999.999.999", "description": "UNDEFINED CONNECTOR/ACQUIRER ERROR"}}),
    )
}

/// An answer whose body fails after its headers: the connection is cut mid-answer.
fn cut_connection() -> Response {
    let stream = futures_util_once();
    let mut response = Response::new(Body::from_stream(stream));
    response
        .headers_mut()
        .insert("content-type", HeaderValue::from_static("application/json"));
    response
}

fn futures_util_once(
) -> impl futures_core::Stream<Item = Result<axum::body::Bytes, std::io::Error>> + Send {
    struct Once(bool);
    impl futures_core::Stream for Once {
        type Item = Result<axum::body::Bytes, std::io::Error>;
        fn poll_next(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Self::Item>> {
            if self.0 {
                return std::task::Poll::Ready(None);
            }
            self.0 = true;
            std::task::Poll::Ready(Some(Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "sandbox fault: connection cut after the request was processed",
            ))))
        }
    }
    Once(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_match_by_pattern_and_provider() {
        assert!(glob("/v1/refunds", "/v1/refunds"));
        assert!(glob("/v1/payments/*", "/v1/payments/abc"));
        assert!(!glob("/v1/payments/*", "/v1/payments"));
        assert!(glob("*", "/anything"));
        assert_eq!(FaultProvider::of("/v1/query/x"), FaultProvider::Opp);
        assert_eq!(FaultProvider::of("/v1/refunds"), FaultProvider::Stripe);
        assert_eq!(
            FaultProvider::of("/api/spg/payment/mbway"),
            FaultProvider::Ifthenpay
        );
    }
}
