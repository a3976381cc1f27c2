//! The operator approval page: where a person approves or denies the operations the policy
//! marks `human`.
//!
//! - `GET /approvals`: pending requests (`?all=1`: every request), newest first.
//! - `GET /approvals/{id}`: exactly what will move (the preview, the policy rule, the full
//!   redacted arguments), the decision if there is one, and, while pending, the Approve / Deny
//!   form.
//! - `POST /approvals/{id}/decision` (form: `decision=approve|deny`, `note`, `csrf`): records
//!   the decision under the signed-in operator's name and redirects (303) back to the page.
//!
//! Every page view by a signed-in operator (the list, or one request) is appended to the audit
//! log (tool `approval_page_view`, client `operator:<name>`, under the request's entity).
//!
//! Operators sign in with HTTP Basic: the user name is the operator's name, the password their
//! token, checked in constant time against the SHA-256 in `config.operators`. Without valid
//! credentials every route answers 401 and shows no approval data; with no operators
//! configured, 503. Decisions also need the form's CSRF token (an HMAC, under a per-router
//! random key, of the approval id and the operator) and, when the browser sends `Origin`, an
//! origin matching `Host`. Every response carries a strict Content-Security-Policy,
//! `X-Frame-Options: DENY` and `Cache-Control: no-store`.
//!
//! The page renders these fields of an approval's `preview` by name, and any others as a
//! list: `operation`; `amount` (decimal string) with `currency`, or `amount_minor` with
//! `currency`; `reference_id` (or `reference`) with `reference_payment_type`; `from`; `to`;
//! `tool` and `entity` (shown once, under "Request", when they match the request); and
//! `sandbox: true`, which shows a SANDBOX banner. camelCase spellings (`amountMinor`,
//! `referenceId`, `referencePaymentType`) work too, as in `service::safety::PreviewView`.

use std::sync::Arc;

use axum::{
    body::Bytes,
    extract::{FromRequestParts, Path, Query, State},
    http::{header, request::Parts, HeaderMap, HeaderValue, StatusCode},
    middleware,
    response::{Html, IntoResponse, Response},
    routing::{get, post},
    Router,
};
use base64::Engine as _;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use paywarden_domain::{Currency, Money};
use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::console::render::{format_time, label, render, TimeView};
use crate::{
    config::OperatorConfig,
    store::{Approval, ApprovalError, ApprovalStatus, Store},
};

/// The HTTP Basic realm operators sign in to.
pub const REALM: &str = "paywarden approvals";

/// `Content-Security-Policy` of every page: no scripts, no external anything, forms only to
/// this server.
pub const CONTENT_SECURITY_POLICY: &str =
    "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'";

/// Longest accepted decision note, in characters.
pub const MAX_NOTE_CHARS: usize = 2_000;

type HmacSha256 = Hmac<Sha256>;

/// The link to one approval request's page, for messages to the model and the operator.
/// `public_base` is the server's public base URL (a trailing `/` is ignored).
pub fn approval_url(public_base: &str, id: &str) -> String {
    format!("{}/approvals/{id}", public_base.trim_end_matches('/'))
}

/// Builds the approval page's router (routes `/approvals`, `/approvals/{id}` and
/// `/approvals/{id}/decision`) over `store`, for `operators`. Operators whose `token_sha256` is
/// not 64 hex digits can never sign in (a warning is logged); with none usable, every route
/// answers 503.
pub fn router(store: Store, operators: Vec<OperatorConfig>) -> Router {
    router_with_csrf_key(store, operators, rand::random())
}

/// [`router`] with the key its CSRF tokens are MACed with. Replicas behind one load balancer
/// must share it (paywarden keeps it in the shared database, see
/// [`Store::shared_secret`](crate::store::Store::shared_secret)), so a page served by one
/// replica can be submitted to another.
pub fn router_with_csrf_key(
    store: Store,
    operators: Vec<OperatorConfig>,
    csrf_key: [u8; 32],
) -> Router {
    let state = page_state(store, operators, csrf_key);
    Router::new()
        .route("/approvals", get(list_page))
        .route("/approvals/{id}", get(detail_page))
        .route("/approvals/{id}/decision", post(decide))
        .layer(middleware::map_response(security_headers))
        .with_state(state)
}

struct OperatorCredential {
    name: String,
    name_hash: [u8; 32],
    token_hash: [u8; 32],
}

/// Builds the operator sign-in and CSRF state the approval page and the console share.
/// Operators whose `token_sha256` is not 64 hex digits can never sign in (a warning is logged).
pub(crate) fn page_state(
    store: Store,
    operators: Vec<OperatorConfig>,
    csrf_key: [u8; 32],
) -> Arc<PageState> {
    let mut usable = Vec::new();
    let mut unusable = Vec::new();
    for operator in operators {
        match decode_sha256(&operator.token_sha256) {
            Some(token_hash) => usable.push(OperatorCredential {
                name_hash: Sha256::digest(operator.name.as_bytes()).into(),
                name: operator.name,
                token_hash,
            }),
            None => {
                tracing::warn!(
                    operator = %operator.name,
                    "operator ignored: token_sha256 must be the 64 hex digits of SHA-256(token)"
                );
                unusable.push(operator.name);
            }
        }
    }
    Arc::new(PageState {
        store,
        operators: usable,
        unusable,
        csrf_key,
    })
}

/// Who may sign in, and the key of the forms' CSRF tokens.
pub(crate) struct PageState {
    store: Store,
    operators: Vec<OperatorCredential>,
    unusable: Vec<String>,
    csrf_key: [u8; 32],
}

fn decode_sha256(hex_digest: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex_digest.trim(), &mut out).ok()?;
    Some(out)
}

impl PageState {
    /// The operator these credentials belong to. Every operator is compared, each in constant
    /// time, so timing tells nothing about names or tokens.
    fn authenticate(&self, user: &str, token: &str) -> Option<&str> {
        let user_hash = Sha256::digest(user.as_bytes());
        let token_hash = Sha256::digest(token.as_bytes());
        let mut found = None;
        for operator in &self.operators {
            let matches = user_hash.as_slice().ct_eq(&operator.name_hash)
                & token_hash.as_slice().ct_eq(&operator.token_hash);
            if bool::from(matches) && found.is_none() {
                found = Some(operator.name.as_str());
            }
        }
        found
    }

    fn csrf_mac(&self, id: &str, operator: &str) -> Option<HmacSha256> {
        let mut mac = HmacSha256::new_from_slice(&self.csrf_key).ok()?;
        mac.update(b"paywarden approval decision\0");
        mac.update(id.as_bytes());
        mac.update(b"\0");
        mac.update(operator.as_bytes());
        Some(mac)
    }

    /// The database.
    pub(crate) fn store(&self) -> &Store {
        &self.store
    }

    /// The names of the operators who can sign in.
    pub(crate) fn operator_names(&self) -> Vec<&str> {
        self.operators.iter().map(|o| o.name.as_str()).collect()
    }

    /// The CSRF token of `operator`'s form `id` (an approval id, or a console form's name), hex.
    pub(crate) fn csrf_token(&self, id: &str, operator: &str) -> String {
        self.csrf_mac(id, operator)
            .map(|mac| hex::encode(mac.finalize().into_bytes()))
            .unwrap_or_default()
    }

    fn csrf_valid(&self, id: &str, operator: &str, token: &str) -> bool {
        let Ok(bytes) = hex::decode(token.trim()) else {
            return false;
        };
        self.csrf_mac(id, operator)
            .is_some_and(|mac| mac.verify_slice(&bytes).is_ok())
    }
}

/// The operator the request's HTTP Basic credentials sign in; the 503 page when no operator
/// is configured, the 401 challenge when the credentials are missing or wrong.
pub(crate) fn signed_in(state: &PageState, headers: &HeaderMap) -> Result<String, Box<Response>> {
    if state.operators.is_empty() {
        return Err(Box::new(not_configured(&state.unusable)));
    }
    basic_credentials(headers)
        .and_then(|(user, token)| state.authenticate(&user, &token).map(str::to_string))
        .ok_or_else(|| Box::new(unauthorized()))
}

/// Checks a console form POST: same origin, readable, and carrying `operator`'s CSRF token
/// for form `purpose`; otherwise the 403 (or 400) page.
pub(crate) fn check_post(
    state: &PageState,
    operator: &str,
    headers: &HeaderMap,
    body: &[u8],
    purpose: &str,
) -> Result<(), Box<Response>> {
    if let Err(reason) = same_origin(headers) {
        return Err(Box::new(message_page(
            StatusCode::FORBIDDEN,
            operator,
            "Request refused",
            &[reason, "Open the page on this server and submit it there."],
            None,
        )));
    }
    #[derive(Deserialize)]
    struct Csrf {
        csrf: Option<String>,
    }
    let token = serde_urlencoded::from_bytes::<Csrf>(body)
        .ok()
        .and_then(|f| f.csrf);
    if !token
        .as_deref()
        .is_some_and(|t| state.csrf_valid(purpose, operator, t))
    {
        return Err(Box::new(message_page(
            StatusCode::FORBIDDEN,
            operator,
            "Request refused",
            &["The form's security token is missing or does not match this form and operator.                Reload the page and submit it there."],
            None,
        )));
    }
    Ok(())
}

/// The signed-in operator's name; rejects with 503 (no operators) or 401.
struct SignedIn(String);

impl FromRequestParts<Arc<PageState>> for SignedIn {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<PageState>,
    ) -> Result<Self, Self::Rejection> {
        signed_in(state, &parts.headers)
            .map(SignedIn)
            .map_err(|r| *r)
    }
}

/// The user name and password of an `Authorization: Basic` header.
fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (user, token) = decoded.split_once(':')?;
    Some((user.to_string(), token.to_string()))
}

/// Adds the operator pages' security headers (CSP, frame, cache, sniffing, referrer).
pub(crate) async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // Not `no-referrer`: under it, browsers send `Origin: null` with the page's own form
    // POST, which the Origin check must refuse.
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    response
}

// ---------------------------------------------------------------------------------------------
// Handlers

#[derive(Debug, Deserialize)]
struct ListQuery {
    all: Option<String>,
}

async fn list_page(
    SignedIn(operator): SignedIn,
    State(state): State<Arc<PageState>>,
    Query(query): Query<ListQuery>,
) -> Response {
    let all = query
        .all
        .as_deref()
        .is_some_and(|v| !matches!(v, "" | "0" | "false"));
    let status = if all {
        None
    } else {
        Some(ApprovalStatus::Pending)
    };
    let approvals = match state.store.list_approvals(status).await {
        Ok(a) => a,
        Err(e) => return internal_error(&e),
    };
    let viewed = format!("{} shown", plural(approvals.len(), "request", "requests"));
    if let Err(response) = audit_view(
        &state,
        &operator,
        None,
        serde_json::json!({ "all": all }),
        "ok",
        Some(viewed),
    )
    .await
    {
        return response;
    }
    let heading = if all {
        "All approval requests"
    } else {
        "Pending approval requests"
    };
    let empty = if all {
        "No approval requests yet."
    } else {
        "No pending approval requests. Nothing is waiting for you."
    };
    let toggle = if all {
        serde_json::json!({"href": "/approvals", "label": "Show pending only"})
    } else {
        serde_json::json!({"href": "/approvals?all=1", "label": "Show all, decided ones too"})
    };
    render_page(
        StatusCode::OK,
        Some(&operator),
        "approvals.html",
        heading,
        serde_json::json!({
            "heading": heading,
            "toggle": toggle,
            "count_text": plural(approvals.len(), "request", "requests"),
            "sections": [section(None, empty, &approvals, all)],
        }),
    )
}

async fn detail_page(
    SignedIn(operator): SignedIn,
    State(state): State<Arc<PageState>>,
    Path(id): Path<String>,
) -> Response {
    let loaded = load(&state, &operator, &id).await;
    let arguments = serde_json::json!({ "approvalId": id });
    let (outcome, message) = match &loaded {
        Ok(_) => ("ok", None),
        Err(_) => ("error", Some("no such approval request".to_string())),
    };
    if let Err(response) = audit_view(
        &state,
        &operator,
        loaded.as_ref().ok(),
        arguments,
        outcome,
        message,
    )
    .await
    {
        return response;
    }
    let approval = match loaded {
        Ok(a) => a,
        Err(response) => return response,
    };
    let csrf = state.csrf_token(&approval.id, &operator);
    let history = match history(&state.store, &approval).await {
        Ok(h) => h,
        Err(response) => return response,
    };
    render_page(
        StatusCode::OK,
        Some(&operator),
        "approval.html",
        &format!("Approval {}", approval.id),
        detail_context(&approval, &csrf, Utc::now(), history),
    )
}

#[derive(Debug, Deserialize)]
struct DecisionForm {
    decision: Option<String>,
    note: Option<String>,
    csrf: Option<String>,
}

async fn decide(
    SignedIn(operator): SignedIn,
    State(state): State<Arc<PageState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(reason) = same_origin(&headers) {
        return message_page(
            StatusCode::FORBIDDEN,
            &operator,
            "Decision refused",
            &[
                reason,
                "Open the approval page on this server and decide there.",
            ],
            None,
        );
    }
    let Ok(form) = serde_urlencoded::from_bytes::<DecisionForm>(&body) else {
        return message_page(
            StatusCode::BAD_REQUEST,
            &operator,
            "Unreadable form",
            &["The decision form could not be read. Reload the approval page and try again."],
            None,
        );
    };
    if !valid_id(&id)
        || !form
            .csrf
            .as_deref()
            .is_some_and(|token| state.csrf_valid(&id, &operator, token))
    {
        return message_page(
            StatusCode::FORBIDDEN,
            &operator,
            "Decision refused",
            &[
                "The form's security token is missing or does not match this request and \
               operator, so nothing was decided. Reload the approval page and decide there.",
            ],
            None,
        );
    }
    let approve = match form.decision.as_deref() {
        Some("approve") => true,
        Some("deny") => false,
        _ => {
            return message_page(
                StatusCode::BAD_REQUEST,
                &operator,
                "No decision",
                &["The form must say decision=approve or decision=deny. Nothing was decided."],
                None,
            )
        }
    };
    let note = form
        .note
        .as_deref()
        .map(str::trim)
        .filter(|n| !n.is_empty());
    if note.is_some_and(|n| n.chars().count() > MAX_NOTE_CHARS) {
        return message_page(
            StatusCode::BAD_REQUEST,
            &operator,
            "Note too long",
            &[&format!(
                "A note can have at most {MAX_NOTE_CHARS} characters. Nothing was decided."
            )],
            None,
        );
    }
    match state
        .store
        .decide_approval(&id, approve, &operator, note)
        .await
    {
        Ok(approval) => {
            tracing::info!(
                approval = %approval.id,
                operator = %operator,
                decision = %approval.status,
                "approval request decided"
            );
            let location = format!("/approvals/{}", approval.id);
            match HeaderValue::from_str(&location) {
                Ok(location) => {
                    (StatusCode::SEE_OTHER, [(header::LOCATION, location)]).into_response()
                }
                Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
            }
        }
        Err(ApprovalError::NotFound { .. } | ApprovalError::WrongEntity { .. }) => {
            not_found(&operator)
        }
        Err(e @ (ApprovalError::NotPending { .. } | ApprovalError::Expired { .. })) => {
            let link = format!("/approvals/{id}");
            let title = if matches!(e, ApprovalError::Expired { .. }) {
                "Request expired"
            } else {
                "Already decided"
            };
            message_page(
                StatusCode::CONFLICT,
                &operator,
                title,
                &[&e.to_string(), "Nothing was changed."],
                Some((&link, "Back to the request")),
            )
        }
        Err(ApprovalError::Store(e)) => internal_error(&e),
        Err(e) => internal_error(&e),
    }
}

/// Puts an operator's view of the approval page on the audit record, with the append the tools
/// use ([`Store::append_audit`], which masks the row): tool `approval_page_view`, client
/// `operator:<name>`, under the viewed request's entity and toolset (`*` and `paywarden` for
/// the list, or an id that matched nothing: `outcome` `error`). A view that cannot be recorded
/// is not shown.
async fn audit_view(
    state: &PageState,
    operator: &str,
    approval: Option<&Approval>,
    arguments: Value,
    outcome: &str,
    message: Option<String>,
) -> Result<(), Response> {
    let entry = crate::store::AuditEntry {
        entity_id: approval.map_or_else(|| "*".to_string(), |a| a.entity_id.clone()),
        client_name: Some(format!("operator:{operator}")),
        toolset: approval.map_or_else(|| "paywarden".to_string(), |a| a.toolset.clone()),
        tool: "approval_page_view".into(),
        arguments,
        outcome: outcome.into(),
        result_code: None,
        provider_request_id: None,
        transaction_id: approval.map(|a| a.id.clone()),
        message,
        duration_ms: 0,
        sandbox: approval.is_some_and(|a| is_sandbox(&a.preview)),
    };
    state
        .store
        .append_audit(&entry)
        .await
        .map(|_| ())
        .map_err(|e| internal_error(&e))
}

/// Loads an approval for display; 404 page for unknown or malformed ids.
async fn load(state: &PageState, operator: &str, id: &str) -> Result<Approval, Response> {
    if !valid_id(id) {
        return Err(not_found(operator));
    }
    match state.store.approval(id).await {
        Ok(Some(a)) => Ok(a),
        Ok(None) => Err(not_found(operator)),
        Err(e) => Err(internal_error(&e)),
    }
}

/// `apr_` and 32 lower-case hex digits.
fn valid_id(id: &str) -> bool {
    id.strip_prefix("apr_").is_some_and(|hex| {
        hex.len() == 32
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// A POST from a browser must come from this server's own pages: its `Origin` (when sent)
/// must be this `Host`, and its `Sec-Fetch-Site` (when sent) same-origin.
fn same_origin(headers: &HeaderMap) -> Result<(), &'static str> {
    if let Some(site) = headers.get("sec-fetch-site") {
        let site = site.to_str().unwrap_or_default();
        if !matches!(site, "same-origin" | "none") {
            return Err("The decision came from another site's page.");
        }
    }
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Ok(());
    };
    let origin = origin.to_str().unwrap_or_default().trim();
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default()
        .trim();
    let authority = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"));
    match authority {
        Some(authority) if !host.is_empty() && authority.eq_ignore_ascii_case(host) => Ok(()),
        _ => Err("The decision came from a page of another origin than this server."),
    }
}

// ---------------------------------------------------------------------------------------------
// Rendering

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

pub(crate) fn is_sandbox(preview: &Value) -> bool {
    preview.get("sandbox").and_then(Value::as_bool) == Some(true)
}

/// The first of `keys` present (and not null) in the preview object.
fn pick<'a>(preview: &'a Value, keys: &[&'static str]) -> Option<(&'static str, &'a Value)> {
    keys.iter()
        .find_map(|k| preview.get(*k).filter(|v| !v.is_null()).map(|v| (*k, v)))
}

const OPERATION_KEYS: &[&str] = &["operation", "op"];
const AMOUNT_KEYS: &[&str] = &["amount", "amount_minor", "amountMinor", "currency"];
const REFERENCE_KEYS: &[&str] = &[
    "reference_id",
    "referenceId",
    "reference",
    "reference_transaction",
    "referenceTransaction",
    "referenced_id",
];
const REFERENCE_TYPE_KEYS: &[&str] = &["reference_payment_type", "referencePaymentType"];
const FROM_KEYS: &[&str] = &["from", "payer"];
const TO_KEYS: &[&str] = &["to", "payee", "recipient"];

/// "10.00 EUR" from the preview: `amount` (string, or an object with `amount` and
/// `currency`) with `currency`, else `amount_minor` with `currency` formatted in the
/// currency's minor unit. Never goes through floating point.
pub(crate) fn amount_text(preview: &Value) -> Option<String> {
    let currency = preview.get("currency").and_then(Value::as_str);
    match preview.get("amount") {
        Some(Value::String(amount)) => {
            return Some(match currency {
                Some(c) => format!("{amount} {c}"),
                None => amount.clone(),
            })
        }
        Some(Value::Number(amount)) => {
            return Some(match currency {
                Some(c) => format!("{amount} {c}"),
                None => amount.to_string(),
            })
        }
        Some(Value::Object(inner)) => {
            if let Some(text) = amount_text(&Value::Object(inner.clone())) {
                return Some(text);
            }
        }
        _ => {}
    }
    let minor = pick(preview, &["amount_minor", "amountMinor"]).and_then(|(_, v)| v.as_i64())?;
    let currency = currency?;
    match Currency::from_code(currency).and_then(|c| Money::from_minor(minor, c)) {
        Ok(money) => Some(money.to_string()),
        Err(_) => Some(format!("{minor} (minor units of {currency})")),
    }
}

/// A plain-text one-line summary of a preview ("refund 10.00 EUR of 8ac7…"), for the CLI.
pub(crate) fn preview_summary(preview: &Value) -> String {
    let mut parts = Vec::new();
    if let Some(op) = pick(preview, OPERATION_KEYS).and_then(|(_, v)| v.as_str()) {
        parts.push(op.to_string());
    }
    if let Some(amount) = amount_text(preview) {
        parts.push(amount);
    }
    if let Some((_, reference)) = pick(preview, REFERENCE_KEYS) {
        if let Some(id) = reference
            .as_str()
            .or_else(|| reference.get("id").and_then(Value::as_str))
        {
            parts.push(format!("of {id}"));
        }
    }
    if is_sandbox(preview) {
        parts.push("[SANDBOX]".to_string());
    }
    if parts.is_empty() {
        "-".to_string()
    } else {
        parts.join(" ")
    }
}

/// The list's "what will move": operation, amount and reference, as text.
fn moves_view(preview: &Value) -> Value {
    let operation = pick(preview, OPERATION_KEYS).map(|(_, op)| match op {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    });
    let reference = pick(preview, REFERENCE_KEYS).and_then(|(_, r)| {
        r.as_str()
            .or_else(|| r.get("id").and_then(Value::as_str))
            .map(str::to_string)
    });
    serde_json::json!({
        "operation": operation,
        "amount": crate::console::render::amount_of(preview).or_else(|| amount_text(preview)),
        "reference": reference,
    })
}

/// The reference transaction a preview names, when it is a plain id.
fn reference_of(preview: &Value) -> Option<String> {
    pick(preview, REFERENCE_KEYS).and_then(|(_, r)| r.as_str().map(str::to_string))
}

/// One list section's template context: its `title`, the text when `approvals` is empty, and
/// one row per request (with its status when `show_status`).
pub(crate) fn section(
    title: Option<&str>,
    empty: &str,
    approvals: &[Approval],
    show_status: bool,
) -> Value {
    let now = Utc::now();
    let items: Vec<Value> = approvals
        .iter()
        .map(|a| {
            let last = match a.status {
                ApprovalStatus::Pending => Some(TimeView::new(a.expires_at, Some(now))),
                ApprovalStatus::Expired => Some(TimeView::new(a.expires_at, Some(now))),
                _ => a.decided_at.map(|t| TimeView::new(t, Some(now))),
            };
            serde_json::json!({
                "id": a.id,
                "status": a.status.as_str(),
                "sandbox": is_sandbox(&a.preview),
                "moves": moves_view(&a.preview),
                "toolset": a.toolset,
                "tool": a.tool,
                "entity": a.entity_id,
                "client": a.client_name,
                "created": TimeView::new(a.created_at, Some(now)),
                "last": last,
                "decided_by": a.decided_by,
            })
        })
        .collect();
    serde_json::json!({
        "title": title,
        "empty": empty,
        "items": items,
        "show_status": show_status,
        "last_column": if show_status { "Decided / expires" } else { "Expires" },
    })
}

/// The rows of "What will move": operation, amount, reference, from, to, then every other
/// preview field.
fn what_rows(a: &Approval) -> Vec<Value> {
    let preview = &a.preview;
    let mut rows = Vec::new();
    let mut shown: Vec<&str> = vec!["sandbox"];
    // The preview may repeat the tool and entity; shown under "Request" unless they differ.
    if preview.get("tool").and_then(Value::as_str) == Some(a.tool.as_str()) {
        shown.push("tool");
    }
    if preview.get("entity").and_then(Value::as_str) == Some(a.entity_id.as_str()) {
        shown.push("entity");
    }
    if let Some((key, op)) = pick(preview, OPERATION_KEYS) {
        rows.push(serde_json::json!({"label": "Operation", "kind": "operation", "value": op}));
        shown.push(key);
    }
    if let Some(amount) =
        crate::console::render::amount_of(preview).or_else(|| amount_text(preview))
    {
        // The ISO code beside a symbol: "$" and "¥" name several currencies.
        let code = preview
            .get("currency")
            .and_then(Value::as_str)
            .map(str::to_ascii_uppercase)
            .filter(|c| !amount.ends_with(c.as_str()));
        rows.push(
            serde_json::json!({"label": "Amount", "kind": "amount", "value": amount, "code": code}),
        );
        shown.extend_from_slice(AMOUNT_KEYS);
    }
    if let Some((key, reference)) = pick(preview, REFERENCE_KEYS) {
        let mut row = serde_json::json!({"label": "Reference transaction", "kind": "reference", "value": reference});
        if let Some(id) = reference.as_str() {
            row["timeline"] = Value::String(format!(
                "/console/timeline?ref={}",
                percent_encoding::utf8_percent_encode(id, percent_encoding::NON_ALPHANUMERIC)
            ));
        }
        if let Some((type_key, Value::String(payment_type))) = pick(preview, REFERENCE_TYPE_KEYS) {
            row["payment_type"] = Value::String(payment_type.clone());
            shown.push(type_key);
        }
        rows.push(row);
        shown.push(key);
    }
    if let Some((key, from)) = pick(preview, FROM_KEYS) {
        rows.push(serde_json::json!({"label": "From", "kind": "value", "value": from}));
        shown.push(key);
    }
    if let Some((key, to)) = pick(preview, TO_KEYS) {
        rows.push(serde_json::json!({"label": "To", "kind": "value", "value": to}));
        shown.push(key);
    }
    match preview {
        Value::Object(map) => {
            for (k, v) in map.iter().filter(|(k, _)| !shown.contains(&k.as_str())) {
                rows.push(serde_json::json!({"label": label(k), "kind": "value", "value": v}));
            }
        }
        Value::Null => {}
        other => {
            rows.push(serde_json::json!({"label": "Preview", "kind": "value", "value": other}))
        }
    }
    rows
}

fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
}

/// The detail page's template context.
fn detail_context(a: &Approval, csrf: &str, now: DateTime<Utc>, history: Vec<Value>) -> Value {
    serde_json::json!({
        "a": {
            "id": a.id,
            "status": a.status.as_str(),
            "sandbox": is_sandbox(&a.preview),
            "rule": a.rule,
            "message": a.message,
            "toolset": a.toolset,
            "tool": a.tool,
            "entity": a.entity_id,
            "client": a.client_name,
            "created": TimeView::new(a.created_at, Some(now)),
            "expires": TimeView::new(a.expires_at, Some(now)),
            "request_hash": a.request_hash,
            "arguments": pretty(&a.arguments),
            "decided_by": a.decided_by.as_ref().filter(|_| a.decided_at.is_some()),
            "decided_at": a.decided_at.map(format_time),
            "note": a.decision_note,
            "executed_at": a.executed_at.map(format_time),
            "outcome": a.outcome.as_ref().map(pretty),
        },
        "what": what_rows(a),
        "csrf": csrf,
        "max_note": MAX_NOTE_CHARS,
        "history": history,
        "reference": reference_of(&a.preview),
    })
}

/// The audit rows about this request or the payment it refers to (operators' page views
/// left out), oldest first.
async fn history(store: &Store, a: &Approval) -> Result<Vec<Value>, Response> {
    let reference = reference_of(&a.preview);
    let records = store
        .audit_records(Some(&a.entity_id))
        .await
        .map_err(|e| internal_error(&e))?;
    Ok(records
        .iter()
        .filter(|r| r.entry.tool != "approval_page_view")
        .filter(|r| {
            crate::console::record_mentions(r, &a.id)
                || reference
                    .as_deref()
                    .is_some_and(|id| crate::console::record_mentions(r, id))
        })
        .map(|r| {
            serde_json::json!({
                "seq": r.seq,
                "at": r.at,
                "at_text": crate::console::render::format_stored_time(&r.at),
                "toolset": r.entry.toolset,
                "tool": r.entry.tool,
                "outcome": r.entry.outcome,
                "client": r.entry.client_name,
                "transaction_id": r.entry.transaction_id,
            })
        })
        .collect())
}

/// A rendered page, or the error page when rendering fails.
fn render_page(
    status: StatusCode,
    operator: Option<&str>,
    template: &str,
    title: &str,
    context: Value,
) -> Response {
    match render(template, operator, "approvals", title, context) {
        Ok(html) => (status, Html(html)).into_response(),
        Err(error) => {
            tracing::error!(%error, template, "approval page failed to render");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                Html("<!doctype html><title>error</title><p>The page could not be rendered.</p>"),
            )
                .into_response()
        }
    }
}

/// A page without operator data (sign-in and configuration errors).
fn bare_page(status: StatusCode, title: &str, blocks: Value) -> Response {
    render_page(
        status,
        None,
        "message.html",
        title,
        serde_json::json!({ "blocks": blocks }),
    )
}

fn message_page(
    status: StatusCode,
    operator: &str,
    title: &str,
    paragraphs: &[&str],
    link: Option<(&str, &str)>,
) -> Response {
    render_page(
        status,
        Some(operator),
        "message.html",
        title,
        serde_json::json!({
            "paragraphs": paragraphs,
            "link": link.map(|(href, label)| serde_json::json!({"href": href, "label": label})),
        }),
    )
}

fn unauthorized() -> Response {
    let mut response = bare_page(
        StatusCode::UNAUTHORIZED,
        "Operator sign-in required",
        serde_json::json!([{"p": "This page is for paywarden operators. Sign in with your operator \
             name as the user name and your operator token as the password."}]),
    );
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"paywarden approvals\""),
    );
    response
}

fn not_configured(unusable: &[String]) -> Response {
    let mut blocks = vec![
        serde_json::json!({"p": "Nobody can approve or deny requests because no operators are \
            configured. Add one per person to paywarden's configuration file and restart paywarden:"}),
        serde_json::json!({"pre": "[[operators]]\nname = \"alice\"\ntoken_sha256 = \"<SHA-256 of alice's token, hex>\""}),
        serde_json::json!({"p": "Make a token and its hash with, for example:"}),
        serde_json::json!({"pre": "token=$(openssl rand -hex 24); echo \"token: $token\"\nprintf %s \"$token\" | sha256sum"}),
        serde_json::json!({"p": "The operator then signs in here with the name as user name and the \
            token as password. Until then, requests can also be decided with `paywarden approvals \
            approve ID` on the server."}),
    ];
    if !unusable.is_empty() {
        blocks.push(serde_json::json!({"p": format!(
            "These configured operators were ignored because their token_sha256 is not 64 hex \
             digits: {}.",
            unusable.join(", ")
        )}));
    }
    bare_page(
        StatusCode::SERVICE_UNAVAILABLE,
        "No operators configured",
        Value::Array(blocks),
    )
}

fn not_found(operator: &str) -> Response {
    message_page(
        StatusCode::NOT_FOUND,
        operator,
        "No such approval request",
        &["There is no approval request with this id."],
        Some(("/approvals", "See the pending requests")),
    )
}

/// The error page for a failed database read or write (details in the log only).
pub(crate) fn internal_error(error: &dyn std::error::Error) -> Response {
    tracing::error!(error = %error, "operator page failed");
    bare_page(
        StatusCode::INTERNAL_SERVER_ERROR,
        "Something went wrong",
        serde_json::json!([{"p": "paywarden could not read or write its database. Nothing was \
            decided. Try again; the server log has the details."}]),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn approval_urls_join_cleanly() {
        assert_eq!(
            approval_url("https://pay.example.com/", "apr_1"),
            "https://pay.example.com/approvals/apr_1"
        );
        assert_eq!(
            approval_url("http://127.0.0.1:8080", "apr_1"),
            "http://127.0.0.1:8080/approvals/apr_1"
        );
    }

    #[test]
    fn amounts_render_without_floats() {
        let p = serde_json::json!({"amount": "10.00", "currency": "EUR"});
        assert_eq!(amount_text(&p).as_deref(), Some("10.00 EUR"));
        let p = serde_json::json!({"amount_minor": 1500, "currency": "KWD"});
        assert_eq!(amount_text(&p).as_deref(), Some("1.500 KWD"));
        let p = serde_json::json!({"amount": {"amount": "5", "currency": "JPY"}});
        assert_eq!(amount_text(&p).as_deref(), Some("5 JPY"));
        assert_eq!(amount_text(&serde_json::json!({"operation": "x"})), None);
    }

    #[test]
    fn ids_are_checked_before_any_lookup() {
        assert!(valid_id("apr_0123456789abcdef0123456789abcdef"));
        assert!(!valid_id("apr_0123456789ABCDEF0123456789abcdef"));
        assert!(!valid_id("apr_../../etc"));
        assert!(!valid_id("0123456789abcdef0123456789abcdef"));
    }

    #[test]
    fn labels_read_as_words() {
        assert_eq!(label("amount_minor"), "Amount minor");
        assert_eq!(label("merchantTransactionId"), "Merchant transaction id");
    }

    #[test]
    fn basic_credentials_parse() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic YWxpY2U6czNjcjN0OndpdGg6Y29sb25z"),
        );
        assert_eq!(
            basic_credentials(&headers),
            Some(("alice".to_string(), "s3cr3t:with:colons".to_string()))
        );
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer x"));
        assert_eq!(basic_credentials(&headers), None);
    }

    #[test]
    fn foreign_origins_are_refused() {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_static("127.0.0.1:8080"));
        assert!(same_origin(&headers).is_ok());
        headers.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://127.0.0.1:8080"),
        );
        assert!(same_origin(&headers).is_ok());
        headers.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://evil.example"),
        );
        assert!(same_origin(&headers).is_err());
        headers.insert(header::ORIGIN, HeaderValue::from_static("null"));
        assert!(same_origin(&headers).is_err());
        headers.remove(header::ORIGIN);
        headers.insert("sec-fetch-site", HeaderValue::from_static("cross-site"));
        assert!(same_origin(&headers).is_err());
    }
}
