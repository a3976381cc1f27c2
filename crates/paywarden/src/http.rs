//! The HTTP surface: Streamable HTTP MCP endpoints (rmcp) at `/mcp` and `/agentic/v1/mcp`,
//! their 2024-11-05 HTTP+SSE twins ([`crate::http_sse`]: `/sse`, `/agentic/v1/sse`),
//! `GET /healthz`, the operators' approval page (`/approvals`), and request body bounds.
//! Every MCP request is authenticated ([`crate::auth`]) before rmcp sees it, and sessions are
//! counted against their limits ([`crate::sessions`]).

use std::sync::Arc;

use axum::{
    body::Body,
    extract::Request,
    http::{Method, StatusCode},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::get,
    Json, Router,
};
use rmcp::transport::streamable_http_server::{
    session::local::LocalSessionManager, StreamableHttpServerConfig, StreamableHttpService,
};
use tokio_util::sync::CancellationToken;
use tower_http::limit::RequestBodyLimitLayer;

use crate::{
    auth::Authenticator,
    config::HttpConfig,
    mcp::{Endpoint, McpState, PaywardenMcp},
    sessions::{BoundedSessions, SessionLimits},
};

/// Builds the router. `csrf_key` keys the approval page's CSRF tokens (shared by replicas);
/// `cancel` ends open MCP sessions and streams on shutdown.
pub fn router(
    state: Arc<McpState>,
    http: &HttpConfig,
    store: crate::store::Store,
    operators: Vec<crate::config::OperatorConfig>,
    csrf_key: [u8; 32],
    cancel: CancellationToken,
) -> Router {
    let sandbox = state.sandbox;
    let config = StreamableHttpServerConfig::default()
        .with_allowed_hosts(http.allowed_hosts.clone())
        .with_allowed_origins(http.allowed_origins.clone())
        .enforce_origin_validation()
        .with_max_request_body_bytes(http.max_body_bytes)
        .with_cancellation_token(cancel.clone());
    let sse = crate::http_sse::router(
        state.clone(),
        crate::http_sse::SseConfig {
            idle_timeout: std::time::Duration::from_secs(http.session_idle_timeout_secs.max(1)),
            keep_alive: config.sse_keep_alive,
            cancel,
            max_sessions: crate::http_sse::MAX_SESSIONS,
        },
    );
    // One count of sessions over every endpoint (see crate::sessions).
    let limits = SessionLimits::new(http.max_sessions, http.max_sessions_per_entity);
    let sessions = || {
        let mut manager = LocalSessionManager::default();
        manager.session_config.keep_alive = Some(std::time::Duration::from_secs(
            http.session_idle_timeout_secs.max(1),
        ));
        Arc::new(BoundedSessions::new(manager, limits.clone()))
    };
    let ifthenpay = state.toolsets.iter().any(|t| t == "ifthenpay").then(|| {
        crate::ifthenpay_http::router(state.clone(), config.clone(), sessions(), limits.clone())
    });
    let authenticator = state.authenticator.clone();
    // One handler per endpoint, cloned for each session: the tools and their schemas are
    // built once, not once per session (which cost most of a session's memory).
    let unified = PaywardenMcp::for_endpoint(state.clone(), Endpoint::Unified);
    let mcp = SharedMcpService::new(StreamableHttpService::new(
        move || Ok(unified.clone()),
        sessions(),
        config.clone(),
    ));
    let opp_compat = PaywardenMcp::for_endpoint(state.clone(), Endpoint::OppCompat);
    let opp = SharedMcpService::new(StreamableHttpService::new(
        move || Ok(opp_compat.clone()),
        sessions(),
        config,
    ));
    let endpoints = Router::new()
        .route_service("/mcp", mcp)
        .route_service("/agentic/v1/mcp", opp)
        .merge(sse)
        // One middleware for every check, in order (`guard_mcp_request`): with a `from_fn`
        // layer per check, each boxed and moved the request's future once more; the six cost
        // 3 % of an audited read's CPU (docs/performance.md, "One middleware for the MCP
        // routes").
        .route_layer(middleware::from_fn_with_state(
            Arc::new(McpGuard {
                allowed_hosts: http.allowed_hosts.clone(),
                allowed_origins: http.allowed_origins.clone(),
                authenticator,
                limits,
            }),
            guard_mcp_request,
        ));
    Router::new()
        .route(
            "/healthz",
            get(move || async move {
                Json(serde_json::json!({ "status": "ok", "sandbox": sandbox }))
            }),
        )
        .merge(endpoints)
        .merge(
            crate::approvals_http::router_with_csrf_key(store, operators, csrf_key).layer(middleware::from_fn_with_state(
                Arc::new(http.allowed_hosts.clone()),
                check_host,
            )),
        )
        .layer(RequestBodyLimitLayer::new(http.max_body_bytes))
        // Outside the body-limit layer: `/mcp/payments/` checks Host names and bounds bodies
        // itself, so that its 403 and 413 carry the seed's CORS headers and JSON-RPC error.
        .merge(ifthenpay.unwrap_or_default())
}

/// rmcp's Streamable HTTP service for one endpoint, behind an `Arc`.
///
/// axum clones a route's service for every request, and every `route_layer` middleware clones
/// the service inside it once more per request. Cloning rmcp's `StreamableHttpService` copies its
/// configuration (the allowed `Host` and `Origin` lists, a string each) and its cancellation
/// token (a mutex shared by every clone), so an audited read paid for about seven such copies
/// and drops; cloning this wrapper is one atomic increment. Requests are served by
/// `StreamableHttpService::handle`, exactly as its own `tower::Service` implementation does.
/// docs/performance.md, "The MCP service, copied per request".
#[derive(Clone)]
pub(crate) struct SharedMcpService(Arc<StreamableHttpService<PaywardenMcp, BoundedSessions>>);

impl SharedMcpService {
    pub(crate) fn new(service: StreamableHttpService<PaywardenMcp, BoundedSessions>) -> Self {
        Self(Arc::new(service))
    }

    /// Serves one request (rmcp's `StreamableHttpService::handle`).
    pub(crate) async fn handle(&self, request: Request<Body>) -> Response {
        self.0.handle(request).await.map(Body::new)
    }
}

impl tower::Service<Request<Body>> for SharedMcpService {
    type Response = Response;
    type Error = std::convert::Infallible;
    type Future = futures::future::BoxFuture<'static, Result<Response, Self::Error>>;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let service = self.clone();
        Box::pin(async move { Ok(service.handle(request).await) })
    }
}

/// The approval page answers only under the allowed `Host` names (as rmcp does for the MCP
/// endpoints), so a DNS-rebinding page cannot reach it through the operator's browser.
/// Anything else is HTTP 403 `Forbidden: Host header is not allowed` ([`host_allowed`]).
pub(crate) async fn check_host(
    axum::extract::State(allowed): axum::extract::State<Arc<Vec<String>>>,
    request: Request<Body>,
    next: Next,
) -> Response {
    if host_allowed(request.headers(), &allowed) {
        next.run(request).await
    } else {
        host_refused()
    }
}

/// Whether the `Host` header names an allowed host: its name without the port (`[::1]:8080`
/// is `::1`) or the whole header, compared without case. Every host is allowed when `allowed`
/// is empty; a missing or non-text header is the empty name.
fn host_allowed(headers: &http::HeaderMap, allowed: &[String]) -> bool {
    let host = headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    let name = match host.strip_prefix('[') {
        // [::1]:8080
        Some(rest) => rest.split(']').next().unwrap_or_default().to_string(),
        None => host
            .rsplit_once(':')
            .map_or(host.clone(), |(h, _)| h.to_string()),
    };
    allowed.is_empty()
        || allowed
            .iter()
            .any(|a| a.eq_ignore_ascii_case(&name) || a.eq_ignore_ascii_case(&host))
}

/// HTTP 403 `Forbidden: Host header is not allowed`.
fn host_refused() -> Response {
    (
        StatusCode::FORBIDDEN,
        "Forbidden: Host header is not allowed",
    )
        .into_response()
}

/// A request with an `Origin` header (a browser page) must come from an allowed origin, as rmcp
/// judges it: `scheme://host[:port]`, `:*` for any port, an entry without a port matching any
/// port; with no allowed origins, no page is. Requests without `Origin` pass.
fn origin_header_allowed(headers: &http::HeaderMap, allowed: &[String]) -> bool {
    match headers.get(http::header::ORIGIN) {
        None => true,
        Some(value) => value
            .to_str()
            .is_ok_and(|origin| origin_allowed(origin, allowed)),
    }
}

/// What the MCP routes (`/mcp`, `/agentic/v1/mcp` and the HTTP+SSE routes) check before rmcp
/// sees a request, in [`guard_mcp_request`].
struct McpGuard {
    /// `[http] allowed_hosts` ([`host_allowed`]).
    allowed_hosts: Vec<String>,
    /// `[http] allowed_origins` ([`origin_header_allowed`]).
    allowed_origins: Vec<String>,
    /// Verifies `X-Entity-Id` / `X-Token` ([`Authenticator::authenticate_request`]).
    authenticator: Arc<Authenticator>,
    /// Session admission ([`SessionLimits::admit`]).
    limits: Arc<SessionLimits>,
}

/// Every check of the MCP routes in one middleware, in this order; the first that refuses
/// answers:
/// 1. `Host` not allowed: HTTP 403 `Forbidden: Host header is not allowed`;
/// 2. an `Origin` that is not allowed: HTTP 403 `Forbidden: Origin header is not allowed`;
/// 3. a POST whose body cannot be read: HTTP 413 with JSON-RPC error -32600; a POST whose body
///    is not JSON: HTTP 400 with JSON-RPC's parse error -32700 (the body is already bounded by
///    the body-limit layer);
/// 4. every request but CORS preflight (`OPTIONS`): [`Authenticator::authenticate_request`]
///    (HTTP 401 or 503, [`crate::auth::AuthError`]);
/// 5. [`SessionLimits::admit`]: a POST `initialize` without `Mcp-Session-Id` reserves a session
///    slot, held until the service has answered ([`crate::sessions::SessionRefusal`] at a
///    limit or for another entity's session).
///
/// Host and Origin come before credentials, so a foreign name or page gets 403, never a 401
/// that explains how to authenticate (rmcp checks both again inside); credentials are looked
/// at only for well-formed JSON, and a session slot is reserved only for a caller they admit.
///
/// A session ended by the client's `DELETE` is answered 200 OK, not rmcp's 202 Accepted: the
/// session is closed by then, and the official SDKs count only 200 and 204 as success (the
/// Python SDK logs "Session termination failed: 202" on every exit otherwise). The MCP spec
/// (Streamable HTTP, session management) names no success status. Other answers pass as they
/// are.
async fn guard_mcp_request(
    axum::extract::State(guard): axum::extract::State<Arc<McpGuard>>,
    request: Request<Body>,
    next: Next,
) -> Response {
    if !host_allowed(request.headers(), &guard.allowed_hosts) {
        return host_refused();
    }
    if !origin_header_allowed(request.headers(), &guard.allowed_origins) {
        return (
            StatusCode::FORBIDDEN,
            "Forbidden: Origin header is not allowed",
        )
            .into_response();
    }
    let delete = request.method() == Method::DELETE;
    let mut response = guard.admit(request, next).await;
    if delete && response.status() == StatusCode::ACCEPTED {
        *response.status_mut() = StatusCode::OK;
    }
    response
}

impl McpGuard {
    /// Steps 3 to 5 of [`guard_mcp_request`], then the service.
    async fn admit(&self, request: Request<Body>, next: Next) -> Response {
        let (parts, body) = request.into_parts();
        let (body, bytes) = if parts.method == Method::POST {
            let bytes = match axum::body::to_bytes(body, usize::MAX).await {
                Ok(b) => b,
                Err(e) => return (
                    StatusCode::PAYLOAD_TOO_LARGE,
                    Json(serde_json::json!({
                        "jsonrpc": "2.0", "id": null,
                        "error": {"code": -32600, "message": format!("request body could not be read: {e}")}
                    })),
                )
                    .into_response(),
            };
            if let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(&bytes) {
                return (
                    StatusCode::BAD_REQUEST,
                    Json(serde_json::json!({
                        "jsonrpc": "2.0", "id": null,
                        "error": {"code": -32700, "message": format!("Parse error: the request body is not valid JSON ({e}); send one JSON-RPC 2.0 message")}
                    })),
                )
                    .into_response();
            }
            (Body::from(bytes.clone()), Some(bytes))
        } else {
            (body, None)
        };
        let mut request = Request::from_parts(parts, body);
        if request.method() != Method::OPTIONS {
            if let Err(refusal) = self.authenticator.authenticate_request(&mut request).await {
                // The message never holds the token.
                tracing::debug!(error = %refusal, "request refused before it was served");
                return refusal.into_response();
            }
        }
        // Admission reads the body only for a POST without `Mcp-Session-Id` (an `initialize`
        // there reserves a slot); other requests have none to give.
        match self
            .limits
            .admit(&mut request, bytes.as_deref().unwrap_or_default())
        {
            Ok(slot) => {
                let response = next.run(request).await;
                drop(slot);
                response
            }
            Err(refusal) => refusal.into_response(),
        }
    }
}

/// (scheme, host, port) of an origin or an allowed-origin entry, parsed as a URL (WHATWG URL
/// parsing, the `url` crate): exactly `scheme://host[:port]`, so user info, a path, a query or a
/// fragment make it no origin, and so does a port that is not a number
/// (`http://127.0.0.1:1.evil.com`, which a host-only check took for 127.0.0.1). The port is
/// `None` when none is written; a written default port (`:443`) is kept.
fn origin_parts(value: &str) -> Option<(String, String, Option<u16>)> {
    let value = value.trim();
    let (_, authority) = value.split_once("://")?;
    if authority.is_empty() || authority.contains(['/', '?', '#', '@', '\\']) {
        return None;
    }
    let url = url::Url::parse(value).ok()?;
    let host = url
        .host_str()?
        .trim_matches(['[', ']'])
        .to_ascii_lowercase();
    let after_host = authority
        .rsplit_once(']')
        .map_or(authority, |(_, rest)| rest);
    let port = if after_host.contains(':') {
        Some(url.port_or_known_default()?)
    } else {
        None
    };
    Some((url.scheme().to_string(), host, port))
}

fn origin_allowed(origin: &str, allowed: &[String]) -> bool {
    let Some((scheme, host, port)) = origin_parts(origin) else {
        return false;
    };
    let default_port = match scheme.as_str() {
        "http" => Some(80),
        "https" => Some(443),
        _ => None,
    };
    allowed.iter().any(|entry| {
        let (entry, any_port) = match entry.trim().strip_suffix(":*") {
            Some(base) => (base, true),
            None => (entry.trim(), false),
        };
        match origin_parts(entry) {
            Some((s, h, p)) if s == scheme && h == host => {
                any_port || p.is_none() || p == port.or(default_port)
            }
            _ => false,
        }
    })
}

/// A provider `GET /readyz` checks: any HTTP answer from `base_url` counts as reachable (the
/// probe sends no credentials, so 401 or 404 is the normal answer); a connection failure or a
/// timeout does not.
#[derive(Debug, Clone)]
pub struct ProviderProbe {
    /// The name in the report (`opp`, `stripe`).
    pub name: String,
    /// The provider's API base URL, as configured.
    pub base_url: String,
}

/// What `GET /readyz` checks: paywarden's database and the providers.
#[derive(Debug, Clone)]
pub struct Readiness {
    /// paywarden's database (`SELECT 1`).
    pub store: crate::store::Store,
    /// The providers' base URLs.
    pub providers: Vec<ProviderProbe>,
    /// The time each check may take.
    pub timeout: std::time::Duration,
}

/// `GET /readyz` for orchestrators: HTTP 200 `{"status":"ready","checks":{...},"warnings":[...]}`
/// when the database answers and every provider is reachable; else HTTP 503
/// `{"status":"not_ready","failed":[names],"checks":{name:{"ok":false,"error":...}},"warnings":[...]}`.
/// `warnings` lists unacknowledged late arrivals at a provider (they never fail readiness).
/// Each check is bounded by [`Readiness::timeout`]; the checks run concurrently.
pub fn readiness_router(readiness: Readiness) -> Router {
    let client = reqwest::Client::builder()
        .timeout(readiness.timeout)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap_or_default();
    let readiness = Arc::new((readiness, client));
    Router::new().route(
        "/readyz",
        get(move || {
            let readiness = readiness.clone();
            async move { readyz(&readiness.0, &readiness.1).await }
        }),
    )
}

async fn readyz(readiness: &Readiness, client: &reqwest::Client) -> Response {
    let database = async {
        let engine = readiness.store.engine().as_str();
        let outcome = tokio::time::timeout(readiness.timeout, readiness.store.ping()).await;
        let error = match outcome {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(_) => Some(format!(
                "no answer within {} ms",
                readiness.timeout.as_millis()
            )),
        };
        (
            "database".to_string(),
            check_json(error, serde_json::json!({ "engine": engine })),
        )
    };
    let providers = readiness.providers.iter().map(|probe| async move {
        let error = match client.get(&probe.base_url).send().await {
            Ok(_) => None,
            Err(e) if e.is_timeout() => Some(format!(
                "{} did not answer within {} ms",
                probe.base_url,
                readiness.timeout.as_millis()
            )),
            Err(e) => Some(format!("{} is unreachable: {e}", probe.base_url)),
        };
        (
            probe.name.clone(),
            check_json(error, serde_json::json!({ "url": probe.base_url })),
        )
    });
    let (database, providers) =
        tokio::join!(database, futures_join_all(providers.collect::<Vec<_>>()));
    let warnings = reconciliation_warnings(readiness).await;
    let mut checks = serde_json::Map::new();
    let mut failed = Vec::new();
    for (name, check) in std::iter::once(database).chain(providers) {
        if check["ok"] != serde_json::Value::Bool(true) {
            failed.push(name.clone());
        }
        checks.insert(name, check);
    }
    if failed.is_empty() {
        (
            StatusCode::OK,
            Json(serde_json::json!({ "status": "ready", "checks": checks, "warnings": warnings })),
        )
            .into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({ "status": "not_ready", "failed": failed, "checks": checks, "warnings": warnings })),
        )
            .into_response()
    }
}

/// What `/readyz` warns about without failing: operations that reached a provider after their
/// idempotency key's settle window (a late duplicate moved money twice), until an operator
/// acknowledges them with `paywarden reconcile --acknowledge`.
async fn reconciliation_warnings(readiness: &Readiness) -> Vec<String> {
    match tokio::time::timeout(readiness.timeout, readiness.store.unacknowledged_late()).await {
        Ok(Ok(late)) => late
            .iter()
            .map(|l| {
                format!(
                    "{}: {} transaction {} under idempotency key {:?} (entity {}) reached the provider after its settle window; review it with `paywarden reconcile`",
                    l.kind.as_deref().unwrap_or("late_arrival"),
                    l.tool,
                    l.transaction_id.as_deref().unwrap_or("?"),
                    l.key,
                    l.entity_id
                )
            })
            .collect(),
        _ => Vec::new(),
    }
}

fn check_json(error: Option<String>, mut extra: serde_json::Value) -> serde_json::Value {
    if let serde_json::Value::Object(map) = &mut extra {
        map.insert("ok".into(), serde_json::Value::Bool(error.is_none()));
        if let Some(error) = error {
            map.insert("error".into(), serde_json::Value::String(error));
        }
    }
    extra
}

/// Awaits every future concurrently; outputs in input order (a handful of probes, so no
/// extra dependency for a `join_all`).
async fn futures_join_all<F: std::future::Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut pending: Vec<_> = futures.into_iter().map(Box::pin).enumerate().collect();
    let mut results: Vec<Option<F::Output>> = (0..pending.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        pending.retain_mut(|(i, f)| match f.as_mut().poll(cx) {
            std::task::Poll::Ready(v) => {
                results[*i] = Some(v);
                false
            }
            std::task::Poll::Pending => true,
        });
        if pending.is_empty() {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
    results.into_iter().flatten().collect()
}

#[cfg(test)]
mod tests {
    use super::origin_allowed;

    #[test]
    fn origins_are_matched_as_rmcp_matches_them() {
        let defaults: Vec<String> = crate::config::HttpConfig::default().allowed_origins;
        for ok in [
            "http://localhost:5173",
            "http://127.0.0.1",
            "https://localhost:8443",
            "HTTP://LOCALHOST:1",
        ] {
            assert!(origin_allowed(ok, &defaults), "{ok}");
        }
        for refused in [
            "https://evil.example",
            "http://localhost.evil.example:8080",
            "null",
            "",
            "file://",
            "http://127.0.0.2:80",
            // The attack (black-box test, 2026-12-03): a host-only reading of these saw an
            // allowed host.
            "http://127.0.0.1:1.evil.com",
            "http://localhost:8080.evil.example",
            "http://127.0.0.1:99999",
            "http://evil.example@127.0.0.1:1",
            "http://127.0.0.1:1@evil.example",
            "http://localhost:1/path",
            "http://localhost:1?q",
        ] {
            assert!(!origin_allowed(refused, &defaults), "{refused}");
        }
        let domain = vec![
            "https://pay.example.com".to_string(),
            "https://ops.example.com:8443".to_string(),
        ];
        assert!(origin_allowed("https://pay.example.com", &domain));
        assert!(origin_allowed("https://ops.example.com:8443", &domain));
        assert!(!origin_allowed("https://ops.example.com", &domain)); // default port 443
        assert!(!origin_allowed("http://pay.example.com", &domain)); // scheme matters
        assert!(!origin_allowed("https://pay.example.com.evil", &domain));
        assert!(!origin_allowed("http://localhost:3000", &[])); // no allowed origins: no page
        let explicit = vec!["https://pay.example.com:443".to_string()];
        assert!(origin_allowed("https://pay.example.com", &explicit));
        assert!(!origin_allowed("https://pay.example.com:8443", &explicit));
        assert!(origin_allowed(
            "http://[::1]:8080",
            &["http://[::1]:*".to_string()]
        ));
    }
}
