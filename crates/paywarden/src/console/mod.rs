//! The operator console at `/console`: the pages the people who answer for the money use to
//! see what agents asked, what the policy decided, who approved, what the provider did and
//! whether the record is intact.
//!
//! - `GET /console`: redirects to the approvals.
//! - `GET /console/approvals`: the queue (pending) and the decided requests; each links to its
//!   `/approvals/{id}` page ([`crate::approvals_http`]), where the operator decides.
//! - `GET /console/activity` (`entity`, `tool`, `outcome`, `payment`, `from`, `to`, `seq`):
//!   the audit log, filtered, newest first, each row with its chain position and hash; the
//!   chain's verification status with the signed checkpoints. `GET /console/activity.jsonl`
//!   (same filters): the matching rows as JSON Lines, oldest first, exactly as stored.
//! - `GET /console/timeline?ref=ID`: everything about one transaction, order or ifthenpay
//!   reference, in order: tool calls, policy decisions, approvals, provider requests, receipts,
//!   ifthenpay payment requests and callbacks.
//! - `GET /console/policy` (`seq=N`: filled from that audit entry) and `POST /console/policy`:
//!   the policy playground; evaluates the running policy or an edited copy.
//! - `GET /console/entities`: toolsets, read-only state, limits, entities and key ids.
//! - `GET /console/receipts`, `/console/receipts/{id}`, `/console/receipts/{id}/download`.
//!
//! The same guards as the approval page: HTTP Basic operator credentials from `[[operators]]`
//! (401 without, 503 with none configured), a CSRF token and a same-origin check on every
//! POST, the strict Content-Security-Policy and friends on every response; the HTTP server
//! adds the allowed-`Host` check. Pages are minijinja templates ([`render`]), escaped
//! automatically; they need no JavaScript.

pub mod render;

use std::{
    collections::{BTreeMap, BTreeSet, HashSet},
    sync::Arc,
};

use axum::{
    body::Bytes,
    extract::{FromRequestParts, Path, Query, State},
    http::{header, request::Parts, HeaderMap, HeaderValue, StatusCode},
    middleware,
    response::{Html, IntoResponse, Redirect, Response},
    routing::get,
    Router,
};
use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::{
    approvals_http::{self, PageState},
    audit_anchor::{CheckpointWriter, KeyIds},
    config::{Config, OperatorConfig},
    policy::{Policy, PolicyInput, StepResult},
    store::{Approval, ApprovalStatus, AuditRecord, Store},
};

use render::{amount_of, format_stored_time, render};

/// Most audit rows one activity page shows (the export has them all).
pub const PAGE_ROWS: usize = 500;

/// What the console shows and signs with.
pub struct ConsoleParts {
    /// The database.
    pub store: Store,
    /// The operators who may sign in.
    pub operators: Vec<OperatorConfig>,
    /// The key CSRF tokens are MACed with (shared with the approval page and every replica).
    pub csrf_key: [u8; 32],
    /// The running configuration (secrets are never shown: only keyed ids of them).
    pub config: Config,
    /// The receipt signing key's id and public key.
    pub receipt_key: (String, String),
    /// The audit checkpoint writer: its file and signing key verify the chain.
    pub checkpoints: Arc<CheckpointWriter>,
    /// The keyed ids of provider keys.
    pub key_ids: KeyIds,
}

struct ConsoleState {
    page: Arc<PageState>,
    config: Config,
    receipt_key: (String, String),
    checkpoints: Arc<CheckpointWriter>,
    key_ids: KeyIds,
}

impl ConsoleState {
    fn store(&self) -> &Store {
        self.page.store()
    }
}

/// Builds the console's router (every `/console` route).
pub fn router(parts: ConsoleParts) -> Router {
    let state = Arc::new(ConsoleState {
        page: approvals_http::page_state(parts.store, parts.operators, parts.csrf_key),
        config: parts.config,
        receipt_key: parts.receipt_key,
        checkpoints: parts.checkpoints,
        key_ids: parts.key_ids,
    });
    Router::new()
        .route(
            "/console",
            get(|| async { Redirect::to("/console/approvals") }),
        )
        .route(
            "/console/",
            get(|| async { Redirect::to("/console/approvals") }),
        )
        .route("/console/approvals", get(approvals_page))
        .route("/console/activity", get(activity_page))
        .route("/console/activity.jsonl", get(activity_export))
        .route("/console/timeline", get(timeline_page))
        .route("/console/policy", get(policy_page).post(policy_evaluate))
        .route("/console/entities", get(entities_page))
        .route("/console/receipts", get(receipts_page))
        .route("/console/receipts/{id}", get(receipt_page))
        .route("/console/receipts/{id}/download", get(receipt_download))
        .layer(middleware::map_response(approvals_http::security_headers))
        .with_state(state)
}

/// The signed-in operator; rejects with 503 (no operators) or 401.
struct Operator(String);

impl FromRequestParts<Arc<ConsoleState>> for Operator {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<ConsoleState>,
    ) -> Result<Self, Self::Rejection> {
        approvals_http::signed_in(&state.page, &parts.headers)
            .map(Operator)
            .map_err(|r| *r)
    }
}

fn page(
    template: &str,
    operator: &str,
    section: &str,
    title: &str,
    context: impl Serialize,
) -> Response {
    match render(template, Some(operator), section, title, context) {
        Ok(html) => Html(html).into_response(),
        Err(error) => {
            tracing::error!(%error, template, "console page failed to render");
            approvals_http::internal_error(&error)
        }
    }
}

fn failed(error: &dyn std::error::Error) -> Response {
    approvals_http::internal_error(error)
}

// ---------------------------------------------------------------------------------------------
// Approvals

async fn approvals_page(
    Operator(operator): Operator,
    State(state): State<Arc<ConsoleState>>,
) -> Response {
    let approvals = match state.store().list_approvals(None).await {
        Ok(a) => a,
        Err(e) => return failed(&e),
    };
    let (pending, decided): (Vec<Approval>, Vec<Approval>) = approvals
        .into_iter()
        .partition(|a| a.status == ApprovalStatus::Pending);
    let sections = vec![
        approvals_http::section(
            Some("Queue: waiting for a decision"),
            "Nothing is waiting for you.",
            &pending,
            false,
        ),
        approvals_http::section(
            Some("Decided and expired"),
            "No decided requests yet.",
            &decided,
            true,
        ),
    ];
    let count_text = format!(
        "{} pending, {} decided or expired",
        pending.len(),
        decided.len()
    );
    page(
        "approvals.html",
        &operator,
        "approvals",
        "Approvals",
        json!({
            "heading": "Approvals",
            "count_text": count_text,
            "sections": sections,
        }),
    )
}

// ---------------------------------------------------------------------------------------------
// Activity

/// The activity filters (every one optional; empty means any).
#[derive(Debug, Default, Clone, Deserialize, Serialize)]
struct ActivityQuery {
    entity: Option<String>,
    tool: Option<String>,
    outcome: Option<String>,
    payment: Option<String>,
    from: Option<String>,
    to: Option<String>,
    seq: Option<String>,
}

fn nonempty(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

/// A filter time: `2026-12-03`, `2026-12-03T14:30` or `…:05`, or RFC 3339; UTC.
fn parse_filter_time(text: &str, end_of_day: bool) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Some(t.with_timezone(&Utc));
    }
    for format in ["%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(text, format) {
            return Some(t.and_utc());
        }
    }
    let day = NaiveDate::parse_from_str(text, "%Y-%m-%d").ok()?;
    let t = if end_of_day {
        day.and_hms_opt(23, 59, 59)?
    } else {
        day.and_hms_opt(0, 0, 0)?
    };
    Some(t.and_utc())
}

fn stored_time(at: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(at)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// Whether `value` (any depth) holds the string `id`.
fn json_mentions(value: &Value, id: &str) -> bool {
    match value {
        Value::String(s) => s == id,
        Value::Array(items) => items.iter().any(|v| json_mentions(v, id)),
        Value::Object(map) => map.values().any(|v| json_mentions(v, id)),
        _ => false,
    }
}

/// Whether an audit row is about `id`: its transaction, provider request, or an argument.
pub(crate) fn record_mentions(record: &AuditRecord, id: &str) -> bool {
    record.entry.transaction_id.as_deref() == Some(id)
        || record.entry.provider_request_id.as_deref() == Some(id)
        || json_mentions(&record.entry.arguments, id)
}

/// The rows matching `query`, oldest first; `Err` names a filter that does not parse.
fn filter_records(
    records: Vec<AuditRecord>,
    query: &ActivityQuery,
) -> Result<Vec<AuditRecord>, String> {
    let from = match nonempty(&query.from) {
        Some(t) => {
            Some(parse_filter_time(t, false).ok_or_else(|| format!("`from` is not a time: {t}"))?)
        }
        None => None,
    };
    let to = match nonempty(&query.to) {
        Some(t) => {
            Some(parse_filter_time(t, true).ok_or_else(|| format!("`to` is not a time: {t}"))?)
        }
        None => None,
    };
    let seq = match nonempty(&query.seq) {
        Some(s) => Some(
            s.parse::<i64>()
                .map_err(|_| format!("`seq` is not a number: {s}"))?,
        ),
        None => None,
    };
    let entity = nonempty(&query.entity);
    let tool = nonempty(&query.tool);
    let outcome = nonempty(&query.outcome);
    let payment = nonempty(&query.payment);
    Ok(records
        .into_iter()
        .filter(|r| seq.is_none_or(|s| r.seq == s))
        .filter(|r| entity.is_none_or(|e| r.entry.entity_id == e))
        .filter(|r| {
            tool.is_none_or(|t| {
                r.entry.tool == t || format!("{}/{}", r.entry.toolset, r.entry.tool) == t
            })
        })
        .filter(|r| outcome.is_none_or(|o| r.entry.outcome == o))
        .filter(|r| payment.is_none_or(|p| record_mentions(r, p)))
        .filter(|r| {
            let at = stored_time(&r.at);
            from.is_none_or(|f| at.is_some_and(|a| a >= f))
                && to.is_none_or(|t| at.is_some_and(|a| a <= t))
        })
        .collect())
}

#[derive(Debug, Serialize)]
struct ChainView {
    ok: bool,
    entries: i64,
    #[serde(rename = "break")]
    chain_break: Option<Value>,
    trusted: usize,
    key_id: String,
    latest: Option<Value>,
    findings: Vec<String>,
}

async fn chain_status(state: &ConsoleState) -> Result<(ChainView, i64), Response> {
    let signer = state.checkpoints.signer();
    let (found, mut unreadable) =
        crate::audit_anchor::read_checkpoints(state.checkpoints.path(), false)
            .map_err(|e| failed(&e))?;
    let report = crate::audit_anchor::verify(state.store(), found, &[signer.verifying_key()])
        .await
        .map_err(|e| failed(&e))?;
    let anchored = report.latest.as_ref().map_or(0, |l| l.checkpoint.seq);
    let mut findings: Vec<String> = report.findings.iter().map(ToString::to_string).collect();
    findings.extend(unreadable.drain(..).map(|f| f.to_string()));
    Ok((
        ChainView {
            ok: report.is_ok() && findings.is_empty(),
            entries: report.entries,
            chain_break: report
                .chain_break
                .as_ref()
                .map(|b| json!({"seq": b.seq, "reason": b.reason})),
            trusted: report.trusted,
            key_id: signer.key_id(),
            latest: report.latest.as_ref().map(
                |l| json!({"seq": l.checkpoint.seq, "at": format_stored_time(&l.checkpoint.at)}),
            ),
            findings,
        },
        anchored,
    ))
}

fn row_view(r: &AuditRecord, anchored: i64) -> Value {
    json!({
        "seq": r.seq,
        "at": r.at,
        "at_text": format_stored_time(&r.at),
        "entity": r.entry.entity_id,
        "toolset": r.entry.toolset,
        "tool": r.entry.tool,
        "outcome": r.entry.outcome,
        "result_code": r.entry.result_code,
        "client": r.entry.client_name,
        "amount": amount_of(&r.entry.arguments),
        "transaction_id": r.entry.transaction_id,
        "message": r.entry.message,
        "sandbox": r.entry.sandbox,
        "hash": r.hash,
        "prev_hash": r.prev_hash,
        "anchored": r.seq <= anchored,
    })
}

async fn activity_page(
    Operator(operator): Operator,
    State(state): State<Arc<ConsoleState>>,
    Query(query): Query<ActivityQuery>,
) -> Response {
    let records = match state.store().audit_records(None).await {
        Ok(r) => r,
        Err(e) => return failed(&e),
    };
    let entities: BTreeSet<String> = records.iter().map(|r| r.entry.entity_id.clone()).collect();
    let tools: BTreeSet<String> = records.iter().map(|r| r.entry.tool.clone()).collect();
    let mut outcomes: BTreeSet<String> = [
        "ok",
        "rejected",
        "error",
        "replay",
        "denied",
        "confirmation_required",
        "approval_pending",
    ]
    .iter()
    .map(ToString::to_string)
    .collect();
    outcomes.extend(records.iter().map(|r| r.entry.outcome.clone()));
    let matching = match filter_records(records, &query) {
        Ok(m) => m,
        Err(reason) => return bad_request(&operator, "activity", "Unreadable filter", &reason),
    };
    let (chain, anchored) = match chain_status(&state).await {
        Ok(c) => c,
        Err(response) => return response,
    };
    let total = matching.len();
    let rows: Vec<Value> = matching
        .iter()
        .rev()
        .take(PAGE_ROWS)
        .map(|r| row_view(r, anchored))
        .collect();
    let export_href = format!(
        "/console/activity.jsonl?{}",
        serde_urlencoded::to_string(&query).unwrap_or_default()
    );
    page(
        "activity.html",
        &operator,
        "activity",
        "Activity",
        json!({
            "chain": chain,
            "q": query,
            "rows": rows,
            "total": total,
            "shown": rows.len(),
            "entities": entities,
            "tools": tools,
            "outcomes": outcomes,
            "export_href": export_href,
        }),
    )
}

async fn activity_export(
    Operator(operator): Operator,
    State(state): State<Arc<ConsoleState>>,
    Query(query): Query<ActivityQuery>,
) -> Response {
    let records = match state.store().audit_records(None).await {
        Ok(r) => r,
        Err(e) => return failed(&e),
    };
    let matching = match filter_records(records, &query) {
        Ok(m) => m,
        Err(reason) => return bad_request(&operator, "activity", "Unreadable filter", &reason),
    };
    let mut body = String::new();
    for record in &matching {
        match serde_json::to_string(record) {
            Ok(line) => {
                body.push_str(&line);
                body.push('\n');
            }
            Err(e) => return failed(&e),
        }
    }
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/jsonl; charset=utf-8"),
            ),
            (
                header::CONTENT_DISPOSITION,
                HeaderValue::from_static("attachment; filename=\"paywarden-audit.jsonl\""),
            ),
        ],
        body,
    )
        .into_response()
}

fn bad_request(operator: &str, section: &str, title: &str, reason: &str) -> Response {
    let mut response = page(
        "message.html",
        operator,
        section,
        title,
        json!({"paragraphs": [reason]}),
    );
    *response.status_mut() = StatusCode::BAD_REQUEST;
    response
}

// ---------------------------------------------------------------------------------------------
// Timeline

#[derive(Debug, Deserialize)]
struct TimelineQuery {
    #[serde(rename = "ref")]
    reference: Option<String>,
}

#[derive(Debug, Serialize)]
struct Event {
    #[serde(skip)]
    when: DateTime<Utc>,
    #[serde(skip)]
    order: (u8, i64),
    at: String,
    at_text: String,
    kind: &'static str,
    class: &'static str,
    title: String,
    code: Option<String>,
    badge: Option<String>,
    amount: Option<String>,
    lines: Vec<String>,
    link: Option<Value>,
}

fn event(
    when: DateTime<Utc>,
    order: (u8, i64),
    kind: &'static str,
    class: &'static str,
    title: String,
) -> Event {
    Event {
        when,
        order,
        at: when.to_rfc3339(),
        at_text: render::format_time(when),
        kind,
        class,
        title,
        code: None,
        badge: None,
        amount: None,
        lines: Vec::new(),
        link: None,
    }
}

async fn timeline_page(
    Operator(operator): Operator,
    State(state): State<Arc<ConsoleState>>,
    Query(query): Query<TimelineQuery>,
) -> Response {
    let Some(reference) = query
        .reference
        .as_deref()
        .map(str::trim)
        .filter(|r| !r.is_empty())
    else {
        return page(
            "timeline.html",
            &operator,
            "timeline",
            "Payment timeline",
            json!({"reference": null}),
        );
    };
    let store = state.store();
    let (records, approvals, receipts) = match (
        store.audit_records(None).await,
        store.list_approvals(None).await,
        store.receipts(None).await,
    ) {
        (Ok(a), Ok(b), Ok(c)) => (a, b, c),
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => return failed(&e),
    };
    // The ids this reference brings in: approvals of it, and what its calls created (a refund's
    // own transaction id), one step out.
    let mut ids: BTreeSet<String> = BTreeSet::from([reference.to_string()]);
    for a in &approvals {
        if json_mentions(&a.arguments, reference)
            || json_mentions(&a.preview, reference)
            || a.outcome
                .as_ref()
                .is_some_and(|o| json_mentions(o, reference))
        {
            ids.insert(a.id.clone());
            if let Some(t) = a
                .outcome
                .as_ref()
                .and_then(|o| o.get("id"))
                .and_then(Value::as_str)
            {
                ids.insert(t.to_string());
            }
        }
    }
    for r in &records {
        if record_mentions(r, reference) {
            if let Some(t) = &r.entry.transaction_id {
                ids.insert(t.clone());
            }
        }
    }
    // ifthenpay: the payment requests of any entity seen, and the callbacks (provider events).
    let entities: BTreeSet<&str> = records.iter().map(|r| r.entry.entity_id.as_str()).collect();
    let mut requests = Vec::new();
    for entity in entities {
        match store.ifthenpay_requests(entity).await {
            Ok(found) => requests.extend(found),
            Err(e) => return failed(&e),
        }
    }
    let callbacks = match store.ifthenpay_callbacks().await {
        Ok(c) => c,
        Err(e) => return failed(&e),
    };
    let request_ids = |q: &crate::store::IfthenpayRequest| {
        [
            Some(q.order_id.clone()),
            q.reference.clone(),
            q.request_id.clone(),
        ]
        .into_iter()
        .flatten()
        .collect::<Vec<String>>()
    };
    let requests: Vec<_> = requests
        .into_iter()
        .filter(|q| request_ids(q).iter().any(|id| ids.contains(id)))
        .collect();
    for q in &requests {
        ids.extend(request_ids(q));
    }
    let mut events = Vec::new();
    for q in &requests {
        let Some(when) = stored_time(&q.created_at) else {
            continue;
        };
        let mut e = event(
            when,
            (1, -1),
            "provider request",
            "provider",
            format!("ifthenpay {} payment request ({})", q.method, q.tool),
        );
        e.badge = Some(q.status.clone());
        e.amount = Some(render::format_money(q.amount_minor, &q.currency));
        e.lines.push(format!("order {}", q.order_id));
        if let Some(r) = &q.reference {
            let mb = q
                .mb_entity
                .as_deref()
                .map(|m| format!("{m} "))
                .unwrap_or_default();
            e.lines.push(format!("reference {mb}{r}"));
        }
        if let Some(r) = &q.request_id {
            e.lines.push(format!("request id {r}"));
        }
        e.lines.push(format!("key id {}", q.key_id));
        events.push(e);
    }
    for c in callbacks.iter().filter(|c| {
        c.request_row
            .is_some_and(|row| requests.iter().any(|q| q.id == row))
            || [&c.order_id, &c.reference, &c.request_id]
                .into_iter()
                .flatten()
                .any(|id| ids.contains(id))
    }) {
        let Some(when) = stored_time(&c.received_at) else {
            continue;
        };
        let mut e = event(
            when,
            (5, 0),
            "provider event",
            "provider",
            if c.kind == "refund" {
                "ifthenpay refund callback (DEVOLVIDO)".into()
            } else {
                "ifthenpay payment callback".into()
            },
        );
        e.badge = Some(if c.accepted { "ok" } else { "rejected" }.into());
        let currency = requests
            .iter()
            .find(|q| Some(q.id) == c.request_row)
            .map_or("EUR", |q| q.currency.as_str());
        e.amount = c
            .amount_minor
            .map(|m| render::format_money(m, currency))
            .or_else(|| c.amount_text.clone());
        if let Some(m) = &c.payment_method {
            e.lines.push(format!("payment method {m}"));
        }
        if let Some(reason) = &c.reason {
            e.lines.push(format!("refused: {reason}"));
        }
        events.push(e);
    }
    // Stripe webhook events and OPP notifications stored for any id of this payment.
    let entities: BTreeSet<&str> = records.iter().map(|r| r.entry.entity_id.as_str()).collect();
    let mut provider_events = Vec::new();
    for entity in entities {
        for id in &ids {
            match store.events_for(entity, id).await {
                Ok(found) => provider_events.extend(found),
                Err(e) => return failed(&e),
            }
        }
    }
    provider_events.sort_by_key(|p| p.id);
    provider_events.dedup_by_key(|p| p.id);
    for p in &provider_events {
        let Some(when) = stored_time(&p.received_at) else {
            continue;
        };
        let mut e = event(
            when,
            (5, p.id),
            "provider event",
            "provider",
            format!("{} {}", p.event.provider, p.event.event_type),
        );
        e.badge = Some(p.event.outcome.clone());
        if let (Some(minor), Some(currency)) = (p.event.amount_minor, &p.event.currency) {
            e.amount = Some(render::format_money(minor, currency));
        }
        if let Some(o) = &p.event.object_id {
            e.lines.push(format!("object {o}"));
        }
        if let Some(status) = &p.event.status {
            e.lines.push(format!("status {status}"));
        }
        e.lines.push(format!("event {}", p.event.event_id));
        events.push(e);
    }
    for r in records
        .iter()
        .filter(|r| ids.iter().any(|id| record_mentions(r, id)))
    {
        let Some(when) = stored_time(&r.at) else {
            continue;
        };
        let operator_view = r
            .entry
            .client_name
            .as_deref()
            .is_some_and(|c| c.starts_with("operator:"));
        let (kind, class) = if operator_view {
            ("operator", "approval")
        } else if r.entry.provider_request_id.is_some() {
            ("tool call → provider", "provider")
        } else {
            ("tool call", "call")
        };
        let mut e = event(
            when,
            (1, r.seq),
            kind,
            class,
            format!("{}/{}", r.entry.toolset, r.entry.tool),
        );
        e.badge = Some(r.entry.outcome.clone());
        e.amount = amount_of(&r.entry.arguments);
        e.lines.push(format!(
            "audit #{} by {}",
            r.seq,
            r.entry
                .client_name
                .as_deref()
                .unwrap_or("an undeclared client")
        ));
        if let Some(m) = &r.entry.message {
            e.lines.push(m.clone());
        }
        if let Some(p) = &r.entry.provider_request_id {
            e.lines.push(format!("provider request {p}"));
        }
        if let Some(c) = &r.entry.result_code {
            e.lines.push(format!("provider result {c}"));
        }
        if let Some(t) = &r.entry.transaction_id {
            e.lines.push(format!("transaction {t}"));
        }
        e.link = Some(
            json!({"href": format!("/console/activity?seq={}", r.seq), "label": format!("audit entry #{}", r.seq)}),
        );
        events.push(e);
    }
    for a in approvals.iter().filter(|a| ids.contains(&a.id)) {
        let link =
            json!({"href": format!("/approvals/{}", a.id), "label": format!("approval {}", a.id)});
        let mut e = event(
            a.created_at,
            (0, 0),
            "policy decision",
            "approval",
            "policy sends it to a person".into(),
        );
        e.code = Some(format!("rule {}", a.rule));
        e.badge = Some("human".into());
        e.amount = amount_of(&a.preview);
        e.lines.push(a.message.clone());
        e.lines.push(format!(
            "asked by {} for entity {}",
            a.client_name.as_deref().unwrap_or("an undeclared client"),
            a.entity_id
        ));
        e.link = Some(link.clone());
        events.push(e);
        if let (Some(by), Some(at)) = (&a.decided_by, a.decided_at) {
            let verb = if a.status == ApprovalStatus::Denied {
                "denied"
            } else {
                "approved"
            };
            let mut e = event(
                at,
                (2, 0),
                "approval",
                "approval",
                format!("{verb} by {by}"),
            );
            e.badge = Some(verb.into());
            if let Some(note) = &a.decision_note {
                e.lines.push(format!("note: {note}"));
            }
            e.link = Some(link.clone());
            events.push(e);
        }
        if let Some(at) = a.executed_at {
            let mut e = event(at, (3, 0), "execution", "provider", "executed".into());
            e.badge = Some(a.status.as_str().into());
            e.link = Some(link);
            events.push(e);
        }
    }
    for rc in receipts.iter().filter(|rc| {
        rc.transaction_id.as_ref().is_some_and(|t| ids.contains(t))
            || ids.iter().any(|id| json_mentions(&rc.body, id))
    }) {
        let Some(when) = stored_time(&rc.issued_at) else {
            continue;
        };
        let mut e = event(
            when,
            (4, rc.audit_seq),
            "receipt",
            "receipt",
            "receipt issued".into(),
        );
        e.code = Some(rc.id.clone());
        e.amount = receipt_amount(&rc.body);
        e.lines
            .push(format!("signed; points at audit entry #{}", rc.audit_seq));
        e.link = Some(
            json!({"href": format!("/console/receipts/{}", rc.id), "label": "show and download the receipt"}),
        );
        events.push(e);
    }
    // Whole seconds first (ifthenpay's records keep no more), then the order of the steps
    // within one call: decision, request and call, approval, execution, receipt, provider event.
    events.sort_by(|a, b| {
        a.when
            .timestamp()
            .cmp(&b.when.timestamp())
            .then(a.order.cmp(&b.order))
            .then(a.when.cmp(&b.when))
    });
    ids.remove(reference);
    page(
        "timeline.html",
        &operator,
        "timeline",
        &format!("Timeline {reference}"),
        json!({"reference": reference, "events": events, "related": ids}),
    )
}

fn receipt_amount(body: &Value) -> Option<String> {
    let amount = body.get("amount")?;
    Some(render::format_money(
        amount.get("minor")?.as_i64()?,
        amount.get("currency")?.as_str()?,
    ))
}

// ---------------------------------------------------------------------------------------------
// Policy playground

#[derive(Debug, Default, Deserialize, Serialize)]
struct PolicyForm {
    #[serde(default)]
    tool: String,
    #[serde(default)]
    entity: String,
    #[serde(default)]
    amount: String,
    #[serde(default)]
    currency: String,
    #[serde(default)]
    age_days: String,
    #[serde(default)]
    moved_today: String,
    #[serde(default)]
    client: String,
    #[serde(default, skip_serializing)]
    source: Option<String>,
}

/// The running policy: its origin and text.
fn running_policy(config: &Config) -> (String, String) {
    match &config.safety.policy_file {
        Some(path) => (
            path.display().to_string(),
            std::fs::read_to_string(path).unwrap_or_default(),
        ),
        None => (
            crate::policy::BUILTIN_ORIGIN.to_string(),
            crate::policy::BUILTIN_SOURCE.to_string(),
        ),
    }
}

const CSRF_POLICY: &str = "console:policy";

fn tool_names() -> Vec<&'static str> {
    crate::catalog::CATALOG.iter().map(|t| t.name).collect()
}

#[derive(Debug, Deserialize)]
struct PolicyQuery {
    seq: Option<i64>,
}

async fn policy_page(
    Operator(operator): Operator,
    State(state): State<Arc<ConsoleState>>,
    Query(query): Query<PolicyQuery>,
) -> Response {
    let mut form = PolicyForm {
        tool: "perform_refund".into(),
        entity: state.config.entity_id.clone().unwrap_or_default(),
        amount: "12.50".into(),
        currency: "EUR".into(),
        moved_today: "0".into(),
        ..PolicyForm::default()
    };
    if let Some(seq) = query.seq {
        let records = match state.store().audit_records(None).await {
            Ok(r) => r,
            Err(e) => return failed(&e),
        };
        let Some(r) = records.into_iter().find(|r| r.seq == seq) else {
            return bad_request(
                &operator,
                "policy",
                "No such audit entry",
                &format!("There is no audit entry #{seq}."),
            );
        };
        form = form_from_record(&r);
    }
    policy_response(&state, &operator, &form, query.seq, None, None)
}

/// The playground's form filled from a past call.
fn form_from_record(r: &AuditRecord) -> PolicyForm {
    let args = &r.entry.arguments;
    let currency = args
        .get("currency")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_ascii_uppercase();
    let amount = match args.get("amount") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n
            .as_i64()
            .and_then(|minor| {
                paywarden_domain::Currency::from_code(&currency)
                    .and_then(|c| paywarden_domain::Money::from_minor(minor, c))
                    .ok()
            })
            .map(|m| m.to_decimal_string())
            .unwrap_or_else(|| n.to_string()),
        _ => String::new(),
    };
    PolicyForm {
        tool: r.entry.tool.clone(),
        entity: r.entry.entity_id.clone(),
        amount,
        currency,
        moved_today: "0".into(),
        client: r.entry.client_name.clone().unwrap_or_default(),
        ..PolicyForm::default()
    }
}

async fn policy_evaluate(
    Operator(operator): Operator,
    State(state): State<Arc<ConsoleState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(response) =
        approvals_http::check_post(&state.page, &operator, &headers, &body, CSRF_POLICY)
    {
        return *response;
    }
    let Ok(form) = serde_urlencoded::from_bytes::<PolicyForm>(&body) else {
        return bad_request(
            &operator,
            "policy",
            "Unreadable form",
            "The form could not be read.",
        );
    };
    match evaluate(&state.config, &form) {
        Ok(result) => policy_response(&state, &operator, &form, None, Some(result), None),
        Err(error) => policy_response(&state, &operator, &form, None, None, Some(error)),
    }
}

fn policy_response(
    state: &ConsoleState,
    operator: &str,
    form: &PolicyForm,
    from_seq: Option<i64>,
    result: Option<Value>,
    error: Option<String>,
) -> Response {
    let (origin, running) = running_policy(&state.config);
    let source = form.source.clone().unwrap_or(running);
    page(
        "policy.html",
        operator,
        "policy",
        "Policy playground",
        json!({
            "csrf": state.page.csrf_token(CSRF_POLICY, operator),
            "origin": origin,
            "source": source,
            "f": form,
            "tools": tool_names(),
            "from_seq": from_seq,
            "result": result,
            "error": error,
        }),
    )
}

/// Evaluates the form's call against its policy text (the running policy when unedited), as
/// `paywarden policy check` does; `Err` says what cannot be read.
fn evaluate(config: &Config, form: &PolicyForm) -> Result<Value, String> {
    let (origin, running) = running_policy(config);
    let source = form.source.clone().unwrap_or_else(|| running.clone());
    // Browsers send textarea lines with CRLF.
    let source = source.replace("\r\n", "\n");
    let edited = source.trim() != running.replace("\r\n", "\n").trim();
    let origin = if edited {
        format!("edited copy of {origin}")
    } else {
        origin
    };
    let policy = Policy::from_toml(&source, &origin).map_err(|e| e.to_string())?;
    let spec = crate::catalog::spec(form.tool.trim())
        .ok_or_else(|| format!("unknown tool {:?}", form.tool))?;
    let currency = form.currency.trim().to_ascii_uppercase();
    let (amount_minor, moved_today_minor, currency) = if currency.is_empty() {
        (None, 0, None)
    } else {
        let c = paywarden_domain::Currency::from_code(&currency).map_err(|e| e.to_string())?;
        let amount = match form.amount.trim() {
            "" => None,
            a => Some(
                paywarden_domain::Money::parse(a, c)
                    .map_err(|e| format!("amount: {e}"))?
                    .minor_units(),
            ),
        };
        let moved = match form.moved_today.trim() {
            "" => 0,
            m => paywarden_domain::Money::parse(m, c)
                .map_err(|e| format!("moved today: {e}"))?
                .minor_units(),
        };
        (amount, moved, Some(currency))
    };
    let age = match form.age_days.trim() {
        "" => None,
        a => Some(
            a.parse::<i64>()
                .map_err(|_| format!("transaction age is not a whole number of days: {a}"))?,
        ),
    };
    let client = Some(form.client.trim().to_string()).filter(|c| !c.is_empty());
    let input = PolicyInput {
        toolset: spec.toolset.to_string(),
        tool: spec.name.to_string(),
        entity: form.entity.trim().to_string(),
        moves_money: spec.effect.moves_money(),
        amount_minor,
        currency,
        transaction_age_days: age,
        moved_today_minor,
        client,
    };
    let explanation = policy.explain(&input).map_err(|e| e.to_string())?;
    let report = crate::policy::render_check(&explanation);
    let steps: Vec<Value> = explanation
        .steps
        .iter()
        .map(|s| {
            let result = match &s.result {
                StepResult::Matched => format!("true → {}", s.action),
                StepResult::NotMatched => "false".to_string(),
                StepResult::Skipped => "skipped (toolsets)".to_string(),
                StepResult::Error(reason) => format!("error: {reason}"),
            };
            json!({"line": s.line, "rule": s.rule, "when": s.when, "result": result})
        })
        .collect();
    let (decision, rule, message, line) = match &explanation.outcome {
        Ok(v) => (
            v.decision.to_string(),
            v.rule.clone(),
            v.message.clone(),
            (v.rule != crate::policy::DEFAULT_RULE_NAME)
                .then(|| explanation.steps.last().map(|s| s.line))
                .flatten(),
        ),
        Err(e) => (
            "refused".to_string(),
            "none".to_string(),
            format!("evaluation failed: {e}"),
            None,
        ),
    };
    Ok(json!({
        "origin": explanation.origin,
        "edited": edited,
        "decision": decision,
        "rule": rule,
        "line": line,
        "message": message,
        "steps": steps,
        "not_reached": explanation.not_reached,
        "report": report,
    }))
}

// ---------------------------------------------------------------------------------------------
// Entities and settings

fn secret_id(key_ids: &KeyIds, secret: Option<&secrecy::SecretString>) -> Option<String> {
    secret
        .map(|s| s.expose_secret().trim().to_string())
        .filter(|s| !s.is_empty())
        .map(|s| key_ids.id(&s))
}

/// The ids of a set of ifthenpay keys: (name, keyed id).
/// The nine ifthenpay keys of a key set (the server's `[ifthenpay]` or an entity's), by name:
/// both have the same fields but are different types.
macro_rules! ifthenpay_keys {
    ($k:expr) => {
        [
            ("MB", $k.mb_key.as_ref()),
            ("MB WAY", $k.mbway_key.as_ref()),
            ("Payshop", $k.payshop_key.as_ref()),
            ("CCARD", $k.ccard_key.as_ref()),
            ("gateway", $k.gateway_key.as_ref()),
            ("Cofidis", $k.cofidis_key.as_ref()),
            ("Pix", $k.pix_key.as_ref()),
            ("backoffice", $k.bo_key.as_ref()),
            ("anti-phishing", $k.anti_phishing_key.as_ref()),
        ]
    };
}

fn ifthenpay_ids(
    key_ids: &KeyIds,
    keys: [(&str, Option<&secrecy::SecretString>); 9],
) -> Vec<Value> {
    keys.into_iter()
        .filter_map(|(name, key)| secret_id(key_ids, key).map(|id| json!({"name": name, "id": id})))
        .collect()
}

async fn entities_page(
    Operator(operator): Operator,
    State(state): State<Arc<ConsoleState>>,
) -> Response {
    let records = match state.store().audit_records(None).await {
        Ok(r) => r,
        Err(e) => return failed(&e),
    };
    let config = &state.config;
    let ids = &state.key_ids;
    let mut seen: BTreeMap<String, (usize, String)> = BTreeMap::new();
    for r in records
        .iter()
        .filter(|r| r.entry.entity_id != "*" && !r.entry.tool.ends_with("_page_view"))
    {
        let e = seen.entry(r.entry.entity_id.clone()).or_default();
        e.0 += 1;
        e.1 = r.at.clone();
    }
    let mut entities = Vec::new();
    let mut listed = HashSet::new();
    let entity_row =
        |id: &str, configured: bool, token_id: Option<String>, ifthenpay: Vec<Value>| {
            let (calls, last) = seen.get(id).cloned().unwrap_or_default();
            json!({
                "id": id,
                "configured": configured,
                "token_id": token_id,
                "ifthenpay": ifthenpay,
                "calls": calls,
                "last": (!last.is_empty()).then_some(&last),
                "last_text": format_stored_time(&last),
            })
        };
    if let Some(id) = &config.entity_id {
        listed.insert(id.clone());
        entities.push(entity_row(
            id,
            true,
            secret_id(ids, config.token.as_ref()),
            Vec::new(),
        ));
    }
    for known in &config.entities {
        if !listed.insert(known.id.clone()) {
            continue;
        }
        let ifthenpay = known
            .ifthenpay
            .as_ref()
            .map(|k| ifthenpay_ids(ids, ifthenpay_keys!(k)))
            .unwrap_or_default();
        entities.push(entity_row(
            &known.id,
            true,
            Some(ids.id(&known.token_sha256)),
            ifthenpay,
        ));
    }
    for id in seen.keys() {
        if listed.insert(id.clone()) {
            entities.push(entity_row(id, false, None, Vec::new()));
        }
    }
    let i = &config.ifthenpay;
    let ifthenpay = ifthenpay_ids(ids, ifthenpay_keys!(i));
    let (origin, source) = running_policy(config);
    let policy = Policy::from_toml(&source, &origin).ok();
    let settings = json!({
        "toolsets": config.safety.toolsets,
        "read_only": config.safety.read_only,
        "policy": origin,
        "rules": policy.as_ref().map_or(0, |p| p.rules().len()),
        "default": policy.as_ref().map(|p| p.default_decision().to_string()),
        "refund_window_days": config.safety.refund_window_days,
        "confirmation_ttl_secs": config.safety.confirmation_ttl_secs,
        "approval_ttl_secs": config.safety.approval_ttl_secs,
        "max_sessions": config.http.max_sessions,
        "max_sessions_per_entity": config.http.max_sessions_per_entity,
        "max_body_bytes": config.http.max_body_bytes,
        "operators": state.page.operator_names(),
    });
    let keys = json!({
        "receipt_key_id": state.receipt_key.0,
        "audit_key_id": state.checkpoints.signer().key_id(),
        "stripe": secret_id(ids, config.stripe.api_key.as_ref()),
        "ifthenpay": ifthenpay,
    });
    page(
        "entities.html",
        &operator,
        "entities",
        "Entities and settings",
        json!({"settings": settings, "keys": keys, "entities": entities}),
    )
}

// ---------------------------------------------------------------------------------------------
// Receipts

async fn receipts_page(
    Operator(operator): Operator,
    State(state): State<Arc<ConsoleState>>,
) -> Response {
    let receipts = match state.store().receipts(None).await {
        Ok(r) => r,
        Err(e) => return failed(&e),
    };
    let rows: Vec<Value> = receipts
        .iter()
        .rev()
        .map(|r| {
            json!({
                "id": r.id,
                "issued_at": r.issued_at,
                "issued_text": format_stored_time(&r.issued_at),
                "entity": r.entity_id,
                "tool": r.tool,
                "amount": receipt_amount(&r.body),
                "transaction_id": r.transaction_id,
                "audit_seq": r.audit_seq,
            })
        })
        .collect();
    page(
        "receipts.html",
        &operator,
        "receipts",
        "Receipts",
        json!({"receipts": rows, "key_id": state.receipt_key.0, "public_key": state.receipt_key.1}),
    )
}

/// `rcpt_` and a UUID's letters (hex and `-`).
fn valid_receipt_id(id: &str) -> bool {
    id.strip_prefix("rcpt_").is_some_and(|rest| {
        !rest.is_empty()
            && rest.len() <= 64
            && rest.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')
    })
}

async fn load_receipt(
    state: &ConsoleState,
    operator: &str,
    id: &str,
) -> Result<crate::store::StoredReceipt, Response> {
    let not_found = || {
        let mut response = page(
            "message.html",
            operator,
            "receipts",
            "No such receipt",
            json!({"paragraphs": ["There is no receipt with this id."], "link": {"href": "/console/receipts", "label": "All receipts"}}),
        );
        *response.status_mut() = StatusCode::NOT_FOUND;
        response
    };
    if !valid_receipt_id(id) {
        return Err(not_found());
    }
    match state.store().receipt(id, None).await {
        Ok(Some(r)) => Ok(r),
        Ok(None) => Err(not_found()),
        Err(e) => Err(failed(&e)),
    }
}

async fn receipt_page(
    Operator(operator): Operator,
    State(state): State<Arc<ConsoleState>>,
    Path(id): Path<String>,
) -> Response {
    let r = match load_receipt(&state, &operator, &id).await {
        Ok(r) => r,
        Err(response) => return response,
    };
    let view = json!({
        "id": r.id,
        "issued_at": r.issued_at,
        "issued_text": format_stored_time(&r.issued_at),
        "entity": r.entity_id,
        "tool": r.tool,
        "amount": receipt_amount(&r.body),
        "transaction_id": r.transaction_id,
        "audit_seq": r.audit_seq,
        "body": serde_json::to_string_pretty(&r.body).unwrap_or_default(),
    });
    page(
        "receipt.html",
        &operator,
        "receipts",
        &format!("Receipt {}", r.id),
        json!({"r": view, "key_id": state.receipt_key.0, "public_key": state.receipt_key.1}),
    )
}

async fn receipt_download(
    Operator(operator): Operator,
    State(state): State<Arc<ConsoleState>>,
    Path(id): Path<String>,
) -> Response {
    let r = match load_receipt(&state, &operator, &id).await {
        Ok(r) => r,
        Err(response) => return response,
    };
    let body = match serde_json::to_string_pretty(&r.body) {
        Ok(b) => b + "\n",
        Err(e) => return failed(&e),
    };
    // The id was checked to be `rcpt_` and hex digits and dashes: safe in the header.
    let disposition = HeaderValue::from_str(&format!("attachment; filename=\"{}.json\"", r.id))
        .unwrap_or_else(|_| HeaderValue::from_static("attachment"));
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        body,
    )
        .into_response()
}
