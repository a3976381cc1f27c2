//! The 2024-11-05 "HTTP with SSE" MCP transport, for the clients that still speak it (Cursor,
//! older SDK clients; the OPP seed addresses clients of "the Streamable HTTP (or SSE)
//! transport").
//!
//! Why our own: rmcp removed its SSE server transport in 0.11.0 ("remove SSE transport support",
//! modelcontextprotocol/rust-sdk#562), after the 2025-03-26 revision replaced it with Streamable
//! HTTP; rmcp 3.9 has none. This module is the transport only, built on rmcp's generic
//! [`Transport`] (two channels) and served with [`ServiceExt::serve_with_ct`] on the very handler
//! the Streamable HTTP endpoints use ([`PaywardenMcp::for_endpoint`]), so the tools, the pipeline,
//! the safety checks and the audit are the same code.
//!
//! The wire, as the 2024-11-05 specification (basic/transports, "HTTP with SSE") defines it:
//!
//! - `GET` the SSE endpoint opens a session. The server first sends an `endpoint` event whose
//!   data is the URI to POST messages to (an absolute path with the query,
//!   `/messages?sessionId=<id>`, which clients resolve against the SSE URL), then every
//!   server→client JSON-RPC message as a `message` event, plus keep-alive comments (`:`) at the
//!   Streamable HTTP endpoints' interval.
//! - `POST` one JSON-RPC message (request, notification or response) to that URI: HTTP 202
//!   Accepted with no body; the answer comes on the stream.
//!
//! Two families, with the Streamable HTTP endpoints' tools ([`SSE_FAMILIES`]):
//! `GET /sse` + `POST /messages?sessionId=…` (as `/mcp`) and `GET /agentic/v1/sse` +
//! `POST /agentic/v1/messages?sessionId=…` (as `/agentic/v1/mcp`, the OPP seed's eight tools).
//!
//! Security is the Streamable HTTP endpoints', from the same middleware ([`crate::http`]): the
//! `Host` and `Origin` checks (403), `X-Entity-Id`/`X-Token` on the `GET` and on every `POST`
//! (401 when missing), the request body limit (413) and JSON parse errors (400, -32700). In
//! addition, a session is bound to the credentials of the stream that opened it: a `POST` with
//! other credentials gets 403 and never reaches the session.
//!
//! Sessions: 128-bit random ids; at most [`MAX_SESSIONS`] open at once (then 503); a session
//! ends when its stream drops, when no message has gone either way for `[http]
//! session_idle_timeout_secs` (the server then ends the stream), and at shutdown. A `POST` to an
//! unknown or ended session gets 404, to a session of the other family too.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use axum::{
    body::Body,
    extract::{Query, Request},
    http::{header, HeaderMap, HeaderValue, StatusCode},
    response::{
        sse::{Event, KeepAlive},
        IntoResponse, Response, Sse,
    },
    routing::{get, post},
    Json, Router,
};
use rmcp::{
    model::{ClientJsonRpcMessage, GetExtensions, ServerJsonRpcMessage},
    transport::Transport,
    RoleServer, ServiceExt,
};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::mcp::{Endpoint, McpState, PaywardenMcp, HEADER_ENTITY_ID, HEADER_TOKEN};

/// The most SSE sessions open at once (both families together); a `GET` beyond gets 503.
pub const MAX_SESSIONS: usize = 1024;

/// Messages buffered per direction and session before the sender waits.
const CHANNEL_CAPACITY: usize = 64;

/// One endpoint family of the SSE transport.
#[derive(Debug, Clone, Copy)]
pub struct SseFamily {
    /// Where clients `GET` the event stream.
    pub sse_path: &'static str,
    /// Where they `POST` messages (`?sessionId=…`), as the `endpoint` event names it.
    pub messages_path: &'static str,
    /// Whose tools the family serves.
    pub endpoint: Endpoint,
}

/// The families: `/sse` serves what `/mcp` serves, `/agentic/v1/sse` what `/agentic/v1/mcp`
/// serves.
pub const SSE_FAMILIES: [SseFamily; 2] = [
    SseFamily {
        sse_path: "/sse",
        messages_path: "/messages",
        endpoint: Endpoint::Unified,
    },
    SseFamily {
        sse_path: "/agentic/v1/sse",
        messages_path: "/agentic/v1/messages",
        endpoint: Endpoint::OppCompat,
    },
];

/// The transport's settings, from those of the Streamable HTTP endpoints.
#[derive(Debug, Clone)]
pub struct SseConfig {
    /// A session with no message either way for this long is closed (`[http]
    /// session_idle_timeout_secs`).
    pub idle_timeout: Duration,
    /// Interval of the keep-alive comments on the stream (`None`: none).
    pub keep_alive: Option<Duration>,
    /// Cancelled at shutdown: every session ends and every stream closes.
    pub cancel: CancellationToken,
    /// The most sessions open at once.
    pub max_sessions: usize,
}

/// What the transport refuses, and how it answers over HTTP.
#[derive(Debug, thiserror::Error)]
pub enum SseError {
    /// A `POST` without `?sessionId=`.
    #[error("missing sessionId query parameter: POST each message to the URI the stream's `endpoint` event gave (…/messages?sessionId=…)")]
    MissingSessionId,
    /// No open session of this family has that id.
    #[error("Not Found: Session not found (it ended when its stream closed or stayed idle, or never existed): open a new stream with GET on the SSE endpoint")]
    UnknownSession,
    /// The `POST` carries other credentials than the stream that opened the session.
    #[error("this session was opened with other credentials: send the X-Entity-Id and X-Token the SSE stream was opened with, or open a stream of your own")]
    CredentialsMismatch,
    /// The `POST` body is not declared as JSON.
    #[error("Unsupported Media Type: Content-Type must be application/json")]
    UnsupportedMediaType,
    /// The body is JSON but not one JSON-RPC 2.0 message.
    #[error("Invalid Request: the body is not a JSON-RPC 2.0 message ({0}); send one request, notification or response per POST")]
    InvalidMessage(String),
    /// [`MAX_SESSIONS`] are open.
    #[error("too many open SSE sessions ({0}): retry later, or use the Streamable HTTP endpoint")]
    TooManySessions(usize),
    /// The session's stream closed while the message was handed over.
    #[error("the SSE stream of this session has closed")]
    StreamClosed,
}

impl IntoResponse for SseError {
    fn into_response(self) -> Response {
        let message = self.to_string();
        let (status, code) = match &self {
            Self::MissingSessionId => (StatusCode::BAD_REQUEST, "missing_session_id"),
            Self::UnknownSession | Self::StreamClosed => {
                return (StatusCode::NOT_FOUND, message).into_response()
            }
            Self::CredentialsMismatch => (StatusCode::FORBIDDEN, "credentials_mismatch"),
            Self::UnsupportedMediaType => {
                return (StatusCode::UNSUPPORTED_MEDIA_TYPE, message).into_response()
            }
            Self::InvalidMessage(_) => {
                return (
                    StatusCode::BAD_REQUEST,
                    Json(serde_json::json!({
                        "jsonrpc": "2.0", "id": null,
                        "error": {"code": -32600, "message": message}
                    })),
                )
                    .into_response()
            }
            Self::TooManySessions(_) => {
                let mut response = (
                    StatusCode::SERVICE_UNAVAILABLE,
                    Json(serde_json::json!({"error": "too_many_sessions", "message": message})),
                )
                    .into_response();
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
                return response;
            }
        };
        (
            status,
            Json(serde_json::json!({"error": code, "message": message})),
        )
            .into_response()
    }
}

/// The `?sessionId=` of a `POST`.
#[derive(Debug, serde::Deserialize)]
struct SessionQuery {
    #[serde(rename = "sessionId")]
    session_id: Option<String>,
}

/// Who opened a session: the entity and a digest of its token (the token itself is not kept).
#[derive(Clone)]
struct Credentials {
    entity_id: String,
    token_digest: [u8; 32],
}

impl Credentials {
    /// From `X-Entity-Id`/`X-Token` (present: the credentials middleware ran first).
    fn from_headers(headers: &HeaderMap) -> Self {
        let value = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
                .unwrap_or_default()
                .to_string()
        };
        Self {
            entity_id: value(HEADER_ENTITY_ID),
            token_digest: Sha256::digest(value(HEADER_TOKEN).as_bytes()).into(),
        }
    }

    fn matches(&self, other: &Self) -> bool {
        let entity = Sha256::digest(self.entity_id.as_bytes())
            .ct_eq(&Sha256::digest(other.entity_id.as_bytes()));
        let token = self.token_digest.ct_eq(&other.token_digest);
        (entity & token).into()
    }
}

/// An open session, as the `POST` handler needs it.
struct Session {
    family: &'static str,
    credentials: Credentials,
    inbox: mpsc::Sender<ClientJsonRpcMessage>,
}

/// The last message either way, for the idle timeout.
struct Activity {
    start: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Self {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let now = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(now, Ordering::Relaxed);
    }

    fn idle_for(&self) -> Duration {
        let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        self.start.elapsed().saturating_sub(last)
    }

    /// Resolves once nothing has happened for `limit`.
    async fn idle(&self, limit: Duration) {
        loop {
            let idle = self.idle_for();
            if idle >= limit {
                return;
            }
            tokio::time::sleep(limit - idle).await;
        }
    }
}

/// The open sessions, bounded.
struct Registry {
    max: usize,
    sessions: Mutex<HashMap<String, Session>>,
}

impl Registry {
    fn new(max: usize) -> Self {
        Self {
            max,
            sessions: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        self.sessions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Registers a session under a fresh random 128-bit id, unless `max` are open.
    fn register(&self, session: Session) -> Result<String, SseError> {
        let mut sessions = self.lock();
        if sessions.len() >= self.max {
            return Err(SseError::TooManySessions(self.max));
        }
        let id = hex::encode(rand::random::<[u8; 16]>());
        sessions.insert(id.clone(), session);
        Ok(id)
    }

    fn remove(&self, id: &str) {
        self.lock().remove(id);
    }

    /// The inbox of session `id` of `family`, if `credentials` opened it.
    fn inbox(
        &self,
        id: &str,
        family: &str,
        credentials: &Credentials,
    ) -> Result<mpsc::Sender<ClientJsonRpcMessage>, SseError> {
        let sessions = self.lock();
        let session = sessions
            .get(id)
            .filter(|s| s.family == family)
            .ok_or(SseError::UnknownSession)?;
        if !session.credentials.matches(credentials) {
            return Err(SseError::CredentialsMismatch);
        }
        Ok(session.inbox.clone())
    }
}

/// What every session of the router shares.
struct Shared {
    state: Arc<McpState>,
    config: SseConfig,
    registry: Registry,
}

/// rmcp's side of a session: client messages from the `POST`s in, server messages out to the
/// event stream.
struct ChannelTransport {
    inbox: mpsc::Receiver<ClientJsonRpcMessage>,
    outbox: mpsc::Sender<ServerJsonRpcMessage>,
    activity: Arc<Activity>,
}

impl Transport<RoleServer> for ChannelTransport {
    type Error = SseError;

    fn send(
        &mut self,
        item: ServerJsonRpcMessage,
    ) -> impl std::future::Future<Output = Result<(), Self::Error>> + Send + 'static {
        let outbox = self.outbox.clone();
        let activity = self.activity.clone();
        async move {
            activity.touch();
            outbox.send(item).await.map_err(|_| SseError::StreamClosed)
        }
    }

    async fn receive(&mut self) -> Option<ClientJsonRpcMessage> {
        let message = self.inbox.recv().await;
        self.activity.touch();
        message
    }

    async fn close(&mut self) -> Result<(), Self::Error> {
        self.inbox.close();
        Ok(())
    }
}

/// The SSE routes of both families. Mount them beside the Streamable HTTP endpoints, under the
/// same Host/Origin, credentials, body-limit and JSON middleware ([`crate::http::router`]).
pub fn router(state: Arc<McpState>, config: SseConfig) -> Router {
    let shared = Arc::new(Shared {
        state,
        registry: Registry::new(config.max_sessions),
        config,
    });
    let mut router = Router::new();
    for family in SSE_FAMILIES {
        let opener = shared.clone();
        let poster = shared.clone();
        router = router
            .route(
                family.sse_path,
                get(move |headers: HeaderMap| open_stream(opener, family, headers)),
            )
            .route(
                family.messages_path,
                post(move |query: Query<SessionQuery>, request: Request| {
                    accept_message(poster, family, query, request)
                }),
            );
    }
    router
}

/// `GET` the SSE endpoint: a new session and its event stream.
async fn open_stream(
    shared: Arc<Shared>,
    family: SseFamily,
    headers: HeaderMap,
) -> Result<Response, SseError> {
    let (inbox_tx, inbox_rx) = mpsc::channel(CHANNEL_CAPACITY);
    let (outbox_tx, outbox_rx) = mpsc::channel::<ServerJsonRpcMessage>(CHANNEL_CAPACITY);
    let id = shared.registry.register(Session {
        family: family.sse_path,
        credentials: Credentials::from_headers(&headers),
        inbox: inbox_tx,
    })?;
    let cancel = shared.config.cancel.child_token();
    let activity = Arc::new(Activity::new());
    let transport = ChannelTransport {
        inbox: inbox_rx,
        outbox: outbox_tx,
        activity: activity.clone(),
    };
    let handler = PaywardenMcp::for_endpoint(shared.state.clone(), family.endpoint);
    let session_cancel = cancel.clone();
    let session_shared = shared.clone();
    let session_id = id.clone();
    let idle_timeout = shared.config.idle_timeout;
    tokio::spawn(async move {
        let serve = async {
            match handler
                .serve_with_ct(transport, session_cancel.child_token())
                .await
            {
                Ok(running) => {
                    let _ = running.waiting().await;
                }
                Err(e) => tracing::debug!(error = %e, "SSE session ended before initialization"),
            }
        };
        tokio::select! {
            () = serve => {}
            () = activity.idle(idle_timeout) => {
                tracing::debug!(timeout_secs = idle_timeout.as_secs(), "idle SSE session closed");
            }
            () = session_cancel.cancelled() => {}
        }
        session_cancel.cancel();
        session_shared.registry.remove(&session_id);
    });

    let endpoint = format!("{}?sessionId={id}", family.messages_path);
    let stream = Outgoing {
        endpoint: Some(Event::default().event("endpoint").data(endpoint)),
        messages: outbox_rx,
        // Dropped with the response body when the client goes away: that ends the session.
        _guard: cancel.clone().drop_guard(),
        cancel,
    };
    let events = futures::stream::unfold(stream, |mut stream| async move {
        let event = stream.next().await?;
        Some((Ok::<_, SseError>(event), stream))
    });
    let sse = Sse::new(events);
    let mut response = match shared.config.keep_alive {
        Some(interval) => sse
            .keep_alive(KeepAlive::new().interval(interval))
            .into_response(),
        None => sse.into_response(),
    };
    // Proxies (nginx) must pass the events on at once.
    response
        .headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
}

/// The event stream of one session: the `endpoint` event, then the server's messages until
/// the session ends.
struct Outgoing {
    endpoint: Option<Event>,
    messages: mpsc::Receiver<ServerJsonRpcMessage>,
    cancel: CancellationToken,
    _guard: tokio_util::sync::DropGuard,
}

impl Outgoing {
    async fn next(&mut self) -> Option<Event> {
        if let Some(event) = self.endpoint.take() {
            return Some(event);
        }
        let message = tokio::select! {
            message = self.messages.recv() => message?,
            () = self.cancel.cancelled() => return None,
        };
        Some(
            Event::default()
                .event("message")
                .json_data(&message)
                .unwrap_or_else(|e| {
                    tracing::error!(error = %e, "unserialisable server message dropped");
                    Event::default().comment("unserialisable message dropped")
                }),
        )
    }
}

/// `POST` a message to a session: 202, and the answer goes out on the session's stream.
async fn accept_message(
    shared: Arc<Shared>,
    family: SseFamily,
    Query(query): Query<SessionQuery>,
    request: Request,
) -> Result<Response, SseError> {
    let id = query
        .session_id
        .filter(|id| !id.is_empty())
        .ok_or(SseError::MissingSessionId)?;
    let (parts, body) = request.into_parts();
    let inbox = shared.registry.inbox(
        &id,
        family.sse_path,
        &Credentials::from_headers(&parts.headers),
    )?;
    let is_json = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|essence| essence.trim().eq_ignore_ascii_case("application/json"));
    if !is_json {
        return Err(SseError::UnsupportedMediaType);
    }
    // Bounded by the body-limit layer before it gets here.
    let bytes = axum::body::to_bytes(body, usize::MAX)
        .await
        .map_err(|e| SseError::InvalidMessage(e.to_string()))?;
    let mut message: ClientJsonRpcMessage =
        serde_json::from_slice(&bytes).map_err(|e| SseError::InvalidMessage(e.to_string()))?;
    // As rmcp's Streamable HTTP service does: the handler reads the caller from the request.
    match &mut message {
        ClientJsonRpcMessage::Request(request) => {
            request.request.extensions_mut().insert(parts);
        }
        ClientJsonRpcMessage::Notification(notification) => {
            notification.notification.extensions_mut().insert(parts);
        }
        ClientJsonRpcMessage::Response(_) | ClientJsonRpcMessage::Error(_) => {}
    }
    inbox
        .send(message)
        .await
        .map_err(|_| SseError::StreamClosed)?;
    Ok((StatusCode::ACCEPTED, Body::empty()).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn credentials(entity: &str, token: &str) -> Credentials {
        let mut headers = HeaderMap::new();
        headers.insert(HEADER_ENTITY_ID, HeaderValue::from_str(entity).unwrap());
        headers.insert(HEADER_TOKEN, HeaderValue::from_str(token).unwrap());
        Credentials::from_headers(&headers)
    }

    #[test]
    fn credentials_match_only_on_both_entity_and_token() {
        let a = credentials("e1", "t1");
        assert!(a.matches(&credentials("e1", "t1")));
        assert!(
            a.matches(&credentials(" e1 ", "t1")),
            "trimmed, as the handler reads them"
        );
        assert!(!a.matches(&credentials("e2", "t1")));
        assert!(!a.matches(&credentials("e1", "t2")));
    }

    #[test]
    fn the_registry_is_bounded_and_ids_are_random_and_scoped_to_a_family() {
        let registry = Registry::new(2);
        let owner = credentials("e1", "t1");
        let session = || Session {
            family: "/sse",
            credentials: owner.clone(),
            inbox: mpsc::channel(1).0,
        };
        let first = registry.register(session()).unwrap();
        let second = registry.register(session()).unwrap();
        assert_ne!(first, second);
        assert_eq!(first.len(), 32);
        assert!(matches!(
            registry.register(session()),
            Err(SseError::TooManySessions(2))
        ));
        assert!(registry.inbox(&first, "/sse", &owner).is_ok());
        assert!(matches!(
            registry.inbox(&first, "/agentic/v1/sse", &owner),
            Err(SseError::UnknownSession)
        ));
        assert!(matches!(
            registry.inbox(&first, "/sse", &credentials("e2", "t1")),
            Err(SseError::CredentialsMismatch)
        ));
        registry.remove(&first);
        assert!(matches!(
            registry.inbox(&first, "/sse", &owner),
            Err(SseError::UnknownSession)
        ));
        assert!(
            registry.register(session()).is_ok(),
            "a freed slot is reusable"
        );
    }

    #[tokio::test]
    async fn activity_reports_idleness_after_the_limit() {
        let activity = Activity::new();
        activity.touch();
        assert!(activity.idle_for() < Duration::from_millis(50));
        let limit = Duration::from_millis(200);
        let started = Instant::now();
        activity.idle(limit).await;
        assert!(started.elapsed() >= Duration::from_millis(150));
    }
}
