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

use std::{borrow::Cow, fmt::Write as _, sync::Arc};

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
    let state = Arc::new(PageState {
        store,
        operators: usable,
        unusable,
        csrf_key,
    });
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

struct PageState {
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

    /// The CSRF token of `operator`'s decision form for approval `id` (hex).
    fn csrf_token(&self, id: &str, operator: &str) -> String {
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

/// The signed-in operator's name; rejects with 503 (no operators) or 401.
struct SignedIn(String);

impl FromRequestParts<Arc<PageState>> for SignedIn {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<PageState>,
    ) -> Result<Self, Self::Rejection> {
        if state.operators.is_empty() {
            return Err(not_configured(&state.unusable));
        }
        basic_credentials(&parts.headers)
            .and_then(|(user, token)| state.authenticate(&user, &token).map(str::to_string))
            .map(SignedIn)
            .ok_or_else(unauthorized)
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

async fn security_headers(mut response: Response) -> Response {
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
    let now = Utc::now();
    let mut body = String::new();
    let heading = if all {
        "All approval requests"
    } else {
        "Pending approval requests"
    };
    let _ = write!(
        body,
        "<h1>{heading}</h1><p class=\"muted\">{} &middot; {}</p>",
        if all {
            "<a href=\"/approvals\">Show pending only</a>"
        } else {
            "<a href=\"/approvals?all=1\">Show all, decided ones too</a>"
        },
        plural(approvals.len(), "request", "requests"),
    );
    if approvals.is_empty() {
        body.push_str(if all {
            "<div class=\"card\"><p>No approval requests yet.</p></div>"
        } else {
            "<div class=\"card\"><p>No pending approval requests. Nothing is waiting for you.</p></div>"
        });
    } else {
        body.push_str(
            "<div class=\"scroll\"><table class=\"list\"><thead><tr><th>Request</th>\
             <th>What will move</th><th>Tool</th><th>Entity</th><th>Created</th><th>Expires</th>\
             </tr></thead><tbody>",
        );
        for a in &approvals {
            let _ = write!(
                body,
                "<tr><td class=\"id\"><a href=\"/approvals/{id}\"><code>{id}</code></a>{sandbox}{status}</td>\
                 <td>{moves}</td><td><code>{toolset}/{tool}</code></td>\
                 <td class=\"id\"><code>{entity}</code></td><td>{created}</td><td>{expires}</td></tr>",
                id = esc(&a.id),
                sandbox = if is_sandbox(&a.preview) {
                    "<br><span class=\"tag sandbox-tag\">SANDBOX</span>"
                } else {
                    ""
                },
                status = if all {
                    Cow::Owned(format!(" {}", badge(a.status)))
                } else {
                    Cow::Borrowed("")
                },
                toolset = esc(&a.toolset),
                tool = esc(&a.tool),
                entity = esc(&a.entity_id),
                moves = what_moves(&a.preview),
                created = time_cell(a.created_at, now),
                expires = if a.status == ApprovalStatus::Pending {
                    time_cell(a.expires_at, now)
                } else {
                    "&mdash;".to_string()
                },
            );
        }
        body.push_str("</tbody></table></div>");
    }
    layout(&operator, heading, &body).into_response()
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
    let body = detail_html(&approval, &csrf, Utc::now());
    layout(&operator, &format!("Approval {}", approval.id), &body).into_response()
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
            &format!(
                "<p>{}</p><p>Open the approval page on this server and decide there.</p>",
                esc(reason)
            ),
        );
    }
    let Ok(form) = serde_urlencoded::from_bytes::<DecisionForm>(&body) else {
        return message_page(
            StatusCode::BAD_REQUEST,
            &operator,
            "Unreadable form",
            "<p>The decision form could not be read. Reload the approval page and try again.</p>",
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
            "<p>The form's security token is missing or does not match this request and \
             operator, so nothing was decided. Reload the approval page and decide there.</p>",
        );
    }
    let approve = match form.decision.as_deref() {
        Some("approve") => true,
        Some("deny") => false,
        _ => return message_page(
            StatusCode::BAD_REQUEST,
            &operator,
            "No decision",
            "<p>The form must say <code>decision=approve</code> or <code>decision=deny</code>. \
                 Nothing was decided.</p>",
        ),
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
            &format!(
                "<p>A note can have at most {MAX_NOTE_CHARS} characters. Nothing was decided.</p>"
            ),
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
            let link = format!("/approvals/{}", esc(&id));
            let title = if matches!(e, ApprovalError::Expired { .. }) {
                "Request expired"
            } else {
                "Already decided"
            };
            message_page(
                StatusCode::CONFLICT,
                &operator,
                title,
                &format!(
                    "<p>{}</p><p>Nothing was changed. <a href=\"{link}\">Back to the request</a></p>",
                    esc(&e.to_string())
                ),
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

/// Escapes `s` for HTML text and quoted attribute values.
fn esc(s: &str) -> Cow<'_, str> {
    html_escape::encode_safe(s)
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

pub(crate) fn is_sandbox(preview: &Value) -> bool {
    preview.get("sandbox").and_then(Value::as_bool) == Some(true)
}

fn badge(status: ApprovalStatus) -> String {
    format!("<span class=\"badge {s}\">{s}</span>", s = status.as_str())
}

fn format_time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// `t` and how far it is from `now` ("in 23 h 59 min", "5 min ago").
fn time_html(t: DateTime<Utc>, now: DateTime<Utc>) -> String {
    format!(
        "<time datetime=\"{}\">{}</time> <span class=\"muted\">({})</span>",
        esc(&t.to_rfc3339()),
        esc(&format_time(t)),
        relative_time(t, now)
    )
}

/// A table cell's compact time: "2026-11-21 14:39 UTC" over "in 23 h 59 min".
fn time_cell(t: DateTime<Utc>, now: DateTime<Utc>) -> String {
    format!(
        "<time class=\"nowrap\" datetime=\"{}\">{}</time><br><span class=\"muted nowrap\">{}</span>",
        esc(&t.to_rfc3339()),
        esc(&t.format("%Y-%m-%d %H:%M UTC").to_string()),
        relative_time(t, now)
    )
}

/// How far `t` is from `now`: "in 23 h 59 min", "5 min ago".
fn relative_time(t: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let delta = t.signed_duration_since(now);
    let minutes = delta.num_minutes().abs();
    let span = if minutes < 1 {
        "under a minute".to_string()
    } else if minutes < 60 {
        format!("{minutes} min")
    } else if minutes < 48 * 60 {
        format!("{} h {} min", minutes / 60, minutes % 60)
    } else {
        format!("{} days", minutes / (24 * 60))
    };
    if delta.num_seconds() >= 0 {
        format!("in {span}")
    } else {
        format!("{span} ago")
    }
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

/// A one-line summary for the list: "refund 10.00 EUR of 8ac7…".
fn what_moves(preview: &Value) -> String {
    let mut parts = Vec::new();
    if let Some((_, op)) = pick(preview, OPERATION_KEYS) {
        parts.push(format!("<strong>{}</strong>", value_text(op)));
    }
    if let Some(amount) = amount_text(preview) {
        parts.push(format!("<span class=\"nowrap\">{}</span>", esc(&amount)));
    }
    if let Some((_, reference)) = pick(preview, REFERENCE_KEYS) {
        if let Some(id) = reference
            .as_str()
            .or_else(|| reference.get("id").and_then(Value::as_str))
        {
            parts.push(format!("of <code>{}</code>", esc(id)));
        }
    }
    if parts.is_empty() {
        "&mdash;".to_string()
    } else {
        parts.join(" ")
    }
}

/// A scalar as escaped text; objects and arrays as nested lists.
fn value_text(v: &Value) -> String {
    match v {
        Value::Null => "&mdash;".to_string(),
        Value::String(s) => esc(s).into_owned(),
        Value::Bool(b) => if *b { "yes" } else { "no" }.to_string(),
        Value::Number(n) => esc(&n.to_string()).into_owned(),
        Value::Array(items) => {
            let mut out = String::from("<ul class=\"plain\">");
            for item in items {
                let _ = write!(out, "<li>{}</li>", value_text(item));
            }
            out.push_str("</ul>");
            out
        }
        Value::Object(map) => {
            let mut out = String::from("<dl class=\"kv nested\">");
            for (k, v) in map {
                let _ = write!(out, "<dt>{}</dt><dd>{}</dd>", esc(&label(k)), value_text(v));
            }
            out.push_str("</dl>");
            out
        }
    }
}

/// `amount_minor` / `amountMinor` → "Amount minor".
fn label(key: &str) -> String {
    let mut out = String::with_capacity(key.len() + 4);
    for (i, c) in key.chars().enumerate() {
        if c == '_' || c == '-' {
            out.push(' ');
        } else if c.is_ascii_uppercase() && i > 0 {
            out.push(' ');
            out.push(c.to_ascii_lowercase());
        } else if i == 0 {
            out.push(c.to_ascii_uppercase());
        } else {
            out.push(c);
        }
    }
    out
}

fn row(out: &mut String, label: &str, value_html: &str) {
    let _ = write!(out, "<dt>{}</dt><dd>{value_html}</dd>", esc(label));
}

fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
}

fn detail_html(a: &Approval, csrf: &str, now: DateTime<Utc>) -> String {
    let preview = &a.preview;
    let mut out = String::new();
    if is_sandbox(preview) {
        out.push_str(
            "<div class=\"sandbox\">SANDBOX &mdash; this request runs against the offline \
             emulator; no real money moves.</div>",
        );
    }
    let _ = write!(
        out,
        "<h1>Approval request <code>{}</code> {}</h1>",
        esc(&a.id),
        badge(a.status)
    );

    // What will move.
    out.push_str("<section class=\"card\"><h2>What will move</h2><dl class=\"kv\">");
    let mut shown: Vec<&str> = vec!["sandbox"];
    // The preview may repeat the tool and entity; shown under "Request" unless they differ.
    if preview.get("tool").and_then(Value::as_str) == Some(a.tool.as_str()) {
        shown.push("tool");
    }
    if preview.get("entity").and_then(Value::as_str) == Some(a.entity_id.as_str()) {
        shown.push("entity");
    }
    if let Some((key, op)) = pick(preview, OPERATION_KEYS) {
        row(
            &mut out,
            "Operation",
            &format!("<strong>{}</strong>", value_text(op)),
        );
        shown.push(key);
    }
    if let Some(amount) = amount_text(preview) {
        row(
            &mut out,
            "Amount",
            &format!("<span class=\"amount\">{}</span>", esc(&amount)),
        );
        shown.extend_from_slice(AMOUNT_KEYS);
    }
    if let Some((key, reference)) = pick(preview, REFERENCE_KEYS) {
        let mut html = match reference {
            Value::String(id) => format!("<code>{}</code>", esc(id)),
            other => value_text(other),
        };
        if let Some((type_key, Value::String(payment_type))) = pick(preview, REFERENCE_TYPE_KEYS) {
            let _ = write!(
                html,
                " <span class=\"muted\">(payment type {})</span>",
                esc(payment_type)
            );
            shown.push(type_key);
        }
        row(&mut out, "Reference transaction", &html);
        shown.push(key);
    }
    if let Some((key, from)) = pick(preview, FROM_KEYS) {
        row(&mut out, "From", &value_text(from));
        shown.push(key);
    }
    if let Some((key, to)) = pick(preview, TO_KEYS) {
        row(&mut out, "To", &value_text(to));
        shown.push(key);
    }
    match preview {
        Value::Object(map) => {
            for (k, v) in map.iter().filter(|(k, _)| !shown.contains(&k.as_str())) {
                row(&mut out, &label(k), &value_text(v));
            }
        }
        Value::Null => {}
        other => row(&mut out, "Preview", &value_text(other)),
    }
    out.push_str("</dl></section>");

    // Why a person must decide.
    let _ = write!(
        out,
        "<section class=\"card\"><h2>Why it needs a person</h2><dl class=\"kv\">\
         <dt>Policy rule</dt><dd><code>{}</code></dd><dt>Message</dt><dd>{}</dd></dl></section>",
        esc(&a.rule),
        esc(&a.message)
    );

    // The request.
    out.push_str("<section class=\"card\"><h2>Request</h2><dl class=\"kv\">");
    row(
        &mut out,
        "Tool",
        &format!("<code>{}/{}</code>", esc(&a.toolset), esc(&a.tool)),
    );
    row(
        &mut out,
        "Entity",
        &format!("<code>{}</code>", esc(&a.entity_id)),
    );
    row(
        &mut out,
        "Client",
        &a.client_name
            .as_deref()
            .map(|c| esc(c).into_owned())
            .unwrap_or_else(|| "<span class=\"muted\">not declared</span>".to_string()),
    );
    row(&mut out, "Created", &time_html(a.created_at, now));
    match a.status {
        ApprovalStatus::Pending => row(&mut out, "Expires", &time_html(a.expires_at, now)),
        ApprovalStatus::Expired => row(&mut out, "Expired", &time_html(a.expires_at, now)),
        _ => {}
    }
    row(
        &mut out,
        "Request hash",
        &format!("<code class=\"small\">{}</code>", esc(&a.request_hash)),
    );
    let _ = write!(
        out,
        "</dl><h3>Full arguments</h3><pre>{}</pre></section>",
        esc(&pretty(&a.arguments))
    );

    // Decision and execution.
    if let (Some(by), Some(at)) = (&a.decided_by, a.decided_at) {
        let verb = match a.status {
            ApprovalStatus::Denied => "denied",
            _ => "approved",
        };
        let _ = write!(
            out,
            "<section class=\"card decision {verb}\"><h2>Decision</h2><p class=\"verdict\">\
             <strong>{Verb}</strong> by <strong class=\"operator\">{by}</strong> at {at}</p>",
            Verb = if verb == "denied" {
                "Denied"
            } else {
                "Approved"
            },
            by = esc(by),
            at = esc(&format_time(at)),
        );
        if let Some(note) = &a.decision_note {
            let _ = write!(out, "<p>Note: <q>{}</q></p>", esc(note));
        }
        match a.status {
            ApprovalStatus::Approved => out.push_str(
                "<p class=\"muted\">The agent can now execute this request once, with exactly \
                 these arguments.</p>",
            ),
            ApprovalStatus::Executing => {
                out.push_str("<p>The agent is executing this request now.</p>")
            }
            _ => {}
        }
        if let Some(executed_at) = a.executed_at {
            let _ = write!(
                out,
                "<p>Executed at {}.</p>",
                esc(&format_time(executed_at))
            );
        }
        if let Some(outcome) = &a.outcome {
            let _ = write!(out, "<h3>Outcome</h3><pre>{}</pre>", esc(&pretty(outcome)));
        }
        out.push_str("</section>");
    } else if a.status == ApprovalStatus::Expired {
        out.push_str(
            "<section class=\"card decision expired\"><h2>Decision</h2><p>This request expired \
             before anyone decided it. It can no longer be approved; the agent must ask again.</p>\
             </section>",
        );
    }

    if a.status == ApprovalStatus::Pending {
        let _ = write!(
            out,
            "<section class=\"card\"><h2>Your decision</h2>\
             <form method=\"post\" action=\"/approvals/{id}/decision\">\
             <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
             <label for=\"note\">Note (optional, recorded with your decision)</label>\
             <textarea id=\"note\" name=\"note\" maxlength=\"{MAX_NOTE_CHARS}\"></textarea>\
             <div class=\"buttons\">\
             <button type=\"submit\" name=\"decision\" value=\"approve\" class=\"approve\">Approve</button>\
             <button type=\"submit\" name=\"decision\" value=\"deny\" class=\"deny\">Deny</button>\
             </div><p class=\"muted\">Approving lets the agent execute exactly this request, \
             once. Denying tells it not to.</p></form></section>",
            id = esc(&a.id),
            csrf = esc(csrf),
        );
    }
    out
}

const STYLE: &str = "\
*{box-sizing:border-box}\
body{font:15px/1.5 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:0;background:#f4f5f7;color:#1d2125}\
header{background:#1f2933;color:#fff;padding:.6rem 1.5rem;display:flex;justify-content:space-between;align-items:center}\
header a{color:#fff;text-decoration:none;font-weight:600}\
header .who{opacity:.85;font-size:.9rem}\
main{max-width:1040px;margin:1.5rem auto;padding:0 1rem}\
.scroll{overflow-x:auto}\
table.list td.id{max-width:12rem;word-break:break-all}\
table.list td.id code{font-size:.8rem}\
h1{font-size:1.35rem;margin:.2rem 0 1rem}\
h2{font-size:1.05rem;margin:0 0 .6rem}\
h3{font-size:.95rem;margin:1rem 0 .4rem}\
a{color:#1c5fbf}\
code{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:.9em}\
.small{font-size:.75rem;word-break:break-all}\
.muted{color:#5f6b7a}\
.nowrap{white-space:nowrap}\
.card{background:#fff;border:1px solid #dde1e6;border-radius:8px;padding:1rem 1.25rem;margin-bottom:1rem}\
.sandbox{background:#fff3bf;border:2px dashed #e67700;color:#7c3d00;font-weight:700;padding:.6rem 1rem;border-radius:8px;margin-bottom:1rem;letter-spacing:.02em}\
.tag{font-size:.7rem;font-weight:700;padding:.05rem .35rem;border-radius:4px}\
.sandbox-tag{background:#fff3bf;color:#7c3d00;border:1px dashed #e67700}\
dl.kv{display:grid;grid-template-columns:11rem 1fr;gap:.35rem 1rem;margin:0}\
dl.kv dt{color:#5f6b7a}\
dl.kv dd{margin:0;overflow-wrap:anywhere}\
dl.nested{grid-template-columns:auto 1fr;font-size:.92em}\
ul.plain{margin:0;padding-left:1.1rem}\
.amount{font-size:1.5rem;font-weight:700}\
.badge{display:inline-block;font-size:.75rem;font-weight:700;text-transform:uppercase;letter-spacing:.04em;padding:.1rem .5rem;border-radius:999px;vertical-align:middle;background:#e9ecef;color:#343a40}\
.badge.pending{background:#fff3bf;color:#7c5e00}\
.badge.approved{background:#d3f9d8;color:#1b5e20}\
.badge.denied{background:#ffe3e3;color:#a51d1d}\
.badge.executing,.badge.executed{background:#d0ebff;color:#1c4f82}\
.decision.approved{border-left:5px solid #2f9e44}\
.decision.denied{border-left:5px solid #c92a2a}\
.decision.expired{border-left:5px solid #868e96}\
.verdict{font-size:1.1rem}\
pre{background:#f1f3f5;border:1px solid #e3e6ea;padding:.75rem;border-radius:6px;overflow:auto;font-size:13px;margin:0}\
table{width:100%;border-collapse:collapse;background:#fff;border:1px solid #dde1e6;border-radius:8px}\
th,td{padding:.55rem .7rem;border-bottom:1px solid #e9ecef;text-align:left;vertical-align:top}\
th{font-size:.8rem;text-transform:uppercase;letter-spacing:.04em;color:#5f6b7a;background:#f8f9fa}\
label{display:block;margin-bottom:.3rem;color:#5f6b7a}\
textarea{width:100%;min-height:4.5rem;font:inherit;padding:.5rem;border:1px solid #ced4da;border-radius:6px}\
.buttons{display:flex;gap:.75rem;margin-top:.8rem}\
button{font:inherit;font-weight:700;padding:.55rem 1.6rem;border-radius:6px;border:2px solid;cursor:pointer}\
button.approve{background:#2f9e44;border-color:#2b8a3e;color:#fff}\
button.deny{background:#fff;border-color:#c92a2a;color:#c92a2a}\
";

fn layout(operator: &str, title: &str, body: &str) -> Html<String> {
    Html(format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title} &middot; paywarden</title><style>{STYLE}</style></head><body>\
         <header><a href=\"/approvals\">paywarden &middot; approvals</a>\
         <span class=\"who\">signed in as <strong>{operator}</strong></span></header>\
         <main>{body}</main></body></html>",
        title = esc(title),
        operator = esc(operator),
    ))
}

/// A page without operator data (sign-in and configuration errors).
fn bare_page(status: StatusCode, title: &str, body: &str) -> Response {
    (
        status,
        Html(format!(
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
             <title>{title} &middot; paywarden</title><style>{STYLE}</style></head><body>\
             <header><span>paywarden &middot; approvals</span></header>\
             <main><h1>{title}</h1><div class=\"card\">{body}</div></main></body></html>",
            title = esc(title),
        )),
    )
        .into_response()
}

fn message_page(status: StatusCode, operator: &str, title: &str, body_html: &str) -> Response {
    (
        status,
        layout(
            operator,
            title,
            &format!(
                "<h1>{}</h1><div class=\"card\">{body_html}</div>",
                esc(title)
            ),
        ),
    )
        .into_response()
}

fn unauthorized() -> Response {
    let mut response = bare_page(
        StatusCode::UNAUTHORIZED,
        "Operator sign-in required",
        "<p>This page is for paywarden operators. Sign in with your operator name as the user \
         name and your operator token as the password.</p>",
    );
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"paywarden approvals\""),
    );
    response
}

fn not_configured(unusable: &[String]) -> Response {
    let unusable_note = if unusable.is_empty() {
        String::new()
    } else {
        format!(
            "<p>These configured operators were ignored because their <code>token_sha256</code> \
             is not 64 hex digits: {}.</p>",
            unusable
                .iter()
                .map(|n| format!("<code>{}</code>", esc(n)))
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    bare_page(
        StatusCode::SERVICE_UNAVAILABLE,
        "No operators configured",
        &format!(
            "<p>Nobody can approve or deny requests because no operators are configured. \
             Add one per person to paywarden's configuration file and restart paywarden:</p>\
             <pre>[[operators]]\nname = \"alice\"\ntoken_sha256 = \"&lt;SHA-256 of alice's token, hex&gt;\"</pre>\
             <p>Make a token and its hash with, for example:</p>\
             <pre>token=$(openssl rand -hex 24); echo \"token: $token\"\nprintf %s \"$token\" | sha256sum</pre>\
             <p>The operator then signs in here with the name as user name and the token as \
             password. Until then, requests can also be decided with \
             <code>paywarden approvals approve ID</code> on the server.</p>{unusable_note}"
        ),
    )
}

fn not_found(operator: &str) -> Response {
    message_page(
        StatusCode::NOT_FOUND,
        operator,
        "No such approval request",
        "<p>There is no approval request with this id. <a href=\"/approvals\">See the pending \
         requests</a>.</p>",
    )
}

fn internal_error(error: &dyn std::error::Error) -> Response {
    tracing::error!(error = %error, "approval page failed");
    bare_page(
        StatusCode::INTERNAL_SERVER_ERROR,
        "Something went wrong",
        "<p>paywarden could not read or write its database. Nothing was decided. Try again; \
         the server log has the details.</p>",
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
