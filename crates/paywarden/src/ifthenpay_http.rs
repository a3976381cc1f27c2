//! The ifthenpay seed's own HTTP surface:
//!
//! - `POST /mcp/payments/`: JSON-RPC 2.0 over plain HTTP POST with exactly the seed's contract:
//!   `initialize` (protocol version 2025-03-26, server `ifthenpay-mcp` 1.0.0, capabilities
//!   `{"tools": {}}`), `ping`, `tools/list`, `tools/call`; CORS headers on every answer
//!   (a refused Host name's 403 included: the endpoint checks Host names itself, inside its
//!   CORS layer); `OPTIONS` → 200 at once; any other HTTP method → 405; JSON-RPC errors -32700
//!   (invalid JSON, HTTP 400), -32600 (not a JSON-RPC 2.0 request; with HTTP 413, a body over
//!   the configured limit, which the endpoint bounds itself), -32601 (unknown method), -32602
//!   (unknown tool or invalid arguments), -32603 (internal error). Notifications (no `id`) get
//!   HTTP 202 with no body; batches are answered as arrays. No session is kept.
//!   No credentials are needed when keys come as arguments; a call that relies on keys held in
//!   paywarden's configuration must carry `X-Entity-Id`/`X-Token` of an allowed entity.
//!
//!   That is the endpoint as the seed's clients see it. A client that speaks a later MCP
//!   revision (see [`speaks_later_mcp`]: an `initialize` asking for a revision after
//!   2025-03-26, an `Mcp-Session-Id`, a 2026-07-28 request with its `_meta` envelope or
//!   standard headers) is served by rmcp's Streamable HTTP service with the same nine tools
//!   ([`crate::mcp::Endpoint::IfthenpayCompat`]): sessions for the handshake era (negotiated at
//!   the seed's 2025-03-26, with prompts, resources, completions and logging declared, all empty
//!   but logging), the stateless 2026-07-28 protocol (`server/discover`, caching hints,
//!   `input_required`). Its answers get the same CORS headers; non-POST methods stay 405.
//! - `GET /ifthenpay/callback`: where ifthenpay (or the emulator) reports a completed payment
//!   (`key` = anti-phishing key, `orderId`, `amount`, `requestId`, `entity`, `reference`,
//!   `payment_datetime`, `payment_method`); see
//!   [`crate::service::ifthenpay::IfthenpayService::callback`].

use std::{collections::HashMap, sync::Arc};

use axum::{
    body::Body,
    extract::{Query, Request, State},
    http::{header, HeaderMap, HeaderValue, Method, StatusCode},
    middleware,
    response::{IntoResponse, Response},
    routing::{any, get},
    Router,
};
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use secrecy::SecretString;
use serde_json::{json, Value};
use tower_http::limit::RequestBodyLimitLayer;

use crate::{
    mcp::{Endpoint, McpState, PaywardenMcp, HEADER_ENTITY_ID, HEADER_TOKEN},
    service::{ifthenpay::Identity, Caller, ServiceError},
    sessions::{BoundedSessions, SessionLimits},
};

/// The seed's protocol version.
pub const PROTOCOL_VERSION: &str = "2025-03-26";
/// The seed's server name.
pub const SERVER_NAME: &str = "ifthenpay-mcp";
/// The seed's server version.
pub const SERVER_VERSION: &str = "1.0.0";

/// `serverInfo.title` in the sandbox.
pub const SANDBOX_TITLE: &str = "ifthenpay-mcp (paywarden SANDBOX: offline emulator)";
/// `instructions` in the sandbox.
pub const SANDBOX_INSTRUCTIONS: &str = "SANDBOX: paywarden's offline ifthenpay emulator answers; no real money moves and no real provider is contacted. Demo keys are in paywarden's README.";

/// What the endpoint needs: the toolset's state for the seed's requests, and rmcp's Streamable
/// HTTP service for clients of later MCP revisions.
#[derive(Clone)]
struct Payments {
    state: Arc<McpState>,
    mcp: crate::http::SharedMcpService,
    limits: Arc<SessionLimits>,
    max_body_bytes: usize,
}

/// The routes: `/mcp/payments/` (and without the trailing slash) and `/ifthenpay/callback`.
/// `config`, `sessions` and `limits` are those of paywarden's other MCP endpoints (allowed
/// hosts and origins, body limit, shutdown, session idle timeout, session limits).
pub fn router(
    state: Arc<McpState>,
    config: StreamableHttpServerConfig,
    sessions: Arc<BoundedSessions>,
    limits: Arc<SessionLimits>,
) -> Router {
    let max_body_bytes = config.max_request_body_bytes;
    let hosts = Arc::new(config.allowed_hosts.clone());
    // Built once and cloned per session (see crate::http::router).
    let handler = PaywardenMcp::for_endpoint(state.clone(), Endpoint::IfthenpayCompat);
    let mcp = crate::http::SharedMcpService::new(StreamableHttpService::new(
        move || Ok(handler.clone()),
        sessions,
        config,
    ));
    let payments = Payments {
        state: state.clone(),
        mcp,
        limits,
        max_body_bytes,
    };
    let check_host = || middleware::from_fn_with_state(hosts.clone(), crate::http::check_host);
    Router::new()
        .route("/mcp/payments/", any(endpoint))
        .route("/mcp/payments", any(endpoint))
        .with_state(payments)
        .layer(check_host())
        // Outermost: the seed's CORS headers on every answer, a refused Host's 403 included.
        .layer(middleware::map_response(cors))
        .merge(
            Router::new()
                .route("/ifthenpay/callback", get(callback))
                .with_state(state)
                .layer(check_host())
                .layer(RequestBodyLimitLayer::new(max_body_bytes)),
        )
}

/// The seed's CORS headers, added to every answer of `/mcp/payments/` (its own, rmcp's, a
/// refused Host's 403, a too-large body's 413).
async fn cors(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("Content-Type, Authorization"),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("POST, OPTIONS"),
    );
    response
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    let mut response = (status, body.to_string()).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn error(id: Value, code: i64, message: impl Into<String>) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message.into()}})
}

async fn endpoint(State(payments): State<Payments>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let method = parts.method.clone();
    if method == Method::OPTIONS {
        return StatusCode::OK.into_response();
    }
    if method != Method::POST {
        let mut response = json_response(
            StatusCode::METHOD_NOT_ALLOWED,
            &json!({"error": "Method Not Allowed: this endpoint accepts only POST (and OPTIONS)"}),
        );
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST, OPTIONS"));
        return response;
    }
    let body = match axum::body::to_bytes(body, payments.max_body_bytes).await {
        Ok(body) => body,
        Err(_) => {
            return json_response(
                StatusCode::PAYLOAD_TOO_LARGE,
                &error(
                    Value::Null,
                    -32600,
                    format!(
                        "Invalid Request: the body is larger than {} bytes",
                        payments.max_body_bytes
                    ),
                ),
            )
        }
    };
    let message: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return json_response(
                StatusCode::BAD_REQUEST,
                &error(
                    Value::Null,
                    -32700,
                    format!("Parse error: invalid JSON ({e})"),
                ),
            )
        }
    };
    if speaks_later_mcp(&parts.headers, &message) {
        // Credentials, when sent, are verified; a session counts against its entity's
        // allowance, or the anonymous one.
        let mut request = Request::from_parts(parts, Body::from(body.clone()));
        payments
            .state
            .authenticator
            .mark_if_authenticated(&mut request)
            .await;
        let guard = match payments.limits.admit(&mut request, &body) {
            Ok(guard) => guard,
            Err(refusal) => return refusal.into_response(),
        };
        let response = payments.mcp.handle(request).await;
        drop(guard);
        return response;
    }
    let state = &payments.state;
    let identity = identity(&parts.headers);
    let answer = match message {
        Value::Array(batch) if batch.is_empty() => {
            Some(error(Value::Null, -32600, "Invalid Request: empty batch"))
        }
        Value::Array(batch) => {
            let mut answers = Vec::new();
            for item in batch {
                if let Some(a) = handle(state, &identity, item).await {
                    answers.push(a);
                }
            }
            (!answers.is_empty()).then_some(Value::Array(answers))
        }
        single => handle(state, &identity, single).await,
    };
    match answer {
        Some(body) => json_response(StatusCode::OK, &body),
        None => StatusCode::ACCEPTED.into_response(),
    }
}

/// Whether a request comes from a client of an MCP revision after the seed's 2025-03-26, which
/// rmcp serves: one that carries an `Mcp-Session-Id` (from rmcp's `initialize`), the 2026-07-28
/// standard header `Mcp-Method`, or an `MCP-Protocol-Version` other than 2025-03-26 (the
/// revision the MCP specification assumes when the header is absent); a 2026-07-28 request
/// (`server/discover`, or `io.modelcontextprotocol/*` keys in `params._meta`); or an
/// `initialize` asking for a later revision than 2025-03-26. Everything else, batches
/// included, is the seed's, answered exactly as the seed says.
fn speaks_later_mcp(headers: &HeaderMap, message: &Value) -> bool {
    if headers.contains_key("mcp-session-id") || headers.contains_key("mcp-method") {
        return true;
    }
    if headers
        .get("mcp-protocol-version")
        .is_some_and(|v| v.as_bytes() != PROTOCOL_VERSION.as_bytes())
    {
        return true;
    }
    let Value::Object(message) = message else {
        return false;
    };
    let method = message.get("method").and_then(Value::as_str);
    if method == Some("server/discover") {
        return true;
    }
    let params = message.get("params");
    let envelope = params
        .and_then(|p| p.get("_meta"))
        .and_then(Value::as_object)
        .is_some_and(|meta| {
            meta.keys()
                .any(|k| k.starts_with("io.modelcontextprotocol/"))
        });
    if envelope {
        return true;
    }
    // Protocol revisions are dates: a later one sorts after the seed's.
    method == Some("initialize")
        && params
            .and_then(|p| p.get("protocolVersion"))
            .and_then(Value::as_str)
            .is_some_and(|v| v > PROTOCOL_VERSION)
}

fn identity(headers: &HeaderMap) -> Identity {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(String::from)
    };
    match (header(HEADER_ENTITY_ID), header(HEADER_TOKEN)) {
        (Some(entity_id), Some(token)) => Identity::Claimed(Caller {
            entity_id,
            token: SecretString::from(token),
            client_name: None,
        }),
        _ => Identity::Anonymous { client_name: None },
    }
}

/// One JSON-RPC message; `None` for a notification (no answer).
async fn handle(state: &McpState, identity: &Identity, message: Value) -> Option<Value> {
    let Value::Object(map) = message else {
        return Some(error(
            Value::Null,
            -32600,
            "Invalid Request: a JSON-RPC 2.0 request is an object",
        ));
    };
    let id = map.get("id").cloned();
    let valid_id = matches!(
        id,
        None | Some(Value::String(_)) | Some(Value::Number(_)) | Some(Value::Null)
    );
    let method = map.get("method").and_then(Value::as_str);
    if map.get("jsonrpc").and_then(Value::as_str) != Some("2.0") || method.is_none() || !valid_id {
        return Some(error(
            id.filter(|_| valid_id).unwrap_or(Value::Null),
            -32600,
            "Invalid Request: \"jsonrpc\": \"2.0\" and a string \"method\" are required",
        ));
    }
    let method = method.unwrap_or_default();
    // A notification: nothing to answer (notifications/initialized and the like).
    let id = id?;
    let params = map.get("params").cloned().unwrap_or(Value::Null);
    let result = match method {
        "initialize" => Ok(initialize(state)),
        "ping" => Ok(json!({})),
        "tools/list" => Ok(json!({ "tools": tools(state) })),
        "tools/call" => call(state, identity, params).await,
        other => Err((-32601, format!("Method not found: {other}"))),
    };
    Some(match result {
        Ok(result) => json!({"jsonrpc": "2.0", "id": id, "result": result}),
        Err((code, message)) => error(id, code, message),
    })
}

fn initialize(state: &McpState) -> Value {
    let mut server_info = json!({"name": SERVER_NAME, "version": SERVER_VERSION});
    let mut result = json!({
        "protocolVersion": PROTOCOL_VERSION,
        "serverInfo": server_info.clone(),
        "capabilities": {"tools": {}},
    });
    if state.ifthenpay.sandbox() {
        server_info["title"] = json!(SANDBOX_TITLE);
        result["serverInfo"] = server_info;
        result["instructions"] = json!(SANDBOX_INSTRUCTIONS);
    }
    result
}

fn hidden(state: &McpState, name: &str) -> bool {
    state.read_only && crate::catalog::hidden_in_read_only(name)
}

/// The tools in the seed's order; their schemas are declared as JSON Schema Draft 7, as the
/// seed says (they use no keyword Draft 7 lacks).
fn tools(state: &McpState) -> Vec<Value> {
    PaywardenMcp::ifthenpay_seed_tool_list(&state.ifthenpay)
        .into_iter()
        .filter(|t| !hidden(state, &t.name))
        .filter_map(|t| serde_json::to_value(t).ok())
        .collect()
}

async fn call(
    state: &McpState,
    identity: &Identity,
    params: Value,
) -> Result<Value, (i64, String)> {
    let Value::Object(params) = params else {
        return Err((
            -32602,
            "Invalid params: tools/call needs {\"name\": ..., \"arguments\": {...}}".into(),
        ));
    };
    let Some(name) = params.get("name").and_then(Value::as_str) else {
        return Err((
            -32602,
            "Invalid params: \"name\" (the tool) is required".into(),
        ));
    };
    let known = crate::service::ifthenpay::TOOLS.contains(&name);
    if !known || hidden(state, name) {
        let arguments = params.get("arguments").cloned().unwrap_or(Value::Null);
        if let Err(e) = state
            .ifthenpay
            .audit_unknown_tool(identity, name, &arguments)
            .await
        {
            tracing::error!(error = %e, "audit append failed");
            return Err((
                -32603,
                "Internal error: paywarden's audit log could not be written; retry later".into(),
            ));
        }
        return Err((
            -32602,
            crate::mask::text(&format!("Invalid params: tool not found: {name}")),
        ));
    }
    let arguments = match params.get("arguments") {
        None | Some(Value::Null) => serde_json::Map::new(),
        Some(Value::Object(a)) => {
            // An explicit null is an absent argument, as on paywarden's other endpoints.
            let mut a = a.clone();
            crate::mcp::schema::drop_null_arguments(&mut a);
            a
        }
        Some(_) => {
            return Err((
                -32602,
                "Invalid params: \"arguments\" must be an object".into(),
            ))
        }
    };
    match state.ifthenpay.call(identity, name, &arguments).await {
        Ok(mut outcome) => {
            let structured = std::mem::take(outcome.structured_mut());
            let text = if outcome.is_error {
                crate::mask::text(&outcome.text)
            } else {
                outcome.text
            };
            let mut result = json!({
                "content": [{"type": "text", "text": text}],
                "isError": outcome.is_error,
            });
            if !outcome.is_error {
                result["structuredContent"] = structured;
            }
            Ok(result)
        }
        Err(ServiceError::InvalidArguments(message)) => Err((
            -32602,
            crate::mask::text(&format!("Invalid params: {message}")),
        )),
        Err(e @ ServiceError::Store(_)) => {
            tracing::error!(error = %e, "store failure");
            Err((
                -32603,
                "Internal error: paywarden's database failed; retry later".into(),
            ))
        }
        Err(e @ ServiceError::Unrecorded { .. }) => {
            tracing::error!(error = %e, "store failure after sending");
            Err((-32603, format!("Internal error: {e}")))
        }
    }
}

async fn callback(
    State(state): State<Arc<McpState>>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    match state.ifthenpay.callback(&query).await {
        Ok((status, body)) => (
            StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            body,
        )
            .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "ifthenpay callback not recorded");
            (StatusCode::INTERNAL_SERVER_ERROR, Body::from("error")).into_response()
        }
    }
}
