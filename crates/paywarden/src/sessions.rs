//! Streamable HTTP sessions (2025-era clients) as a bounded resource.
//!
//! Each session holds a worker task, its channels and a handler in memory until its client
//! closes it (`DELETE`) or it idles out, so sessions are counted: at most
//! [`crate::config::HttpConfig::max_sessions`] on the whole server and
//! [`crate::config::HttpConfig::max_sessions_per_entity`] per entity. The entity is the one
//! [`crate::auth`] verified; callers without credentials (possible only at `/mcp/payments/`)
//! share the allowance of [`ANONYMOUS`].
//!
//! An `initialize` that would open a session first reserves a slot ([`SessionLimits::admit`]);
//! at a limit it is answered at once (HTTP 429 for the entity's limit, 503 with `Retry-After`
//! for the server's) with a JSON-RPC error, and no session is created. The reservation rides
//! in the request's extensions into [`BoundedSessions`], rmcp's session manager wrapped, which
//! binds it to the new session id; closing the session, for whatever reason (`DELETE`, idle
//! timeout, shutdown), frees the slot. A reservation no session took is freed when the request
//! ends.
//!
//! A session belongs to the entity that opened it: a request naming another entity's
//! `Mcp-Session-Id` (a `GET` of its stream, a `DELETE`, a message) gets the same 404 as an
//! unknown session.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use axum::{
    body::Body,
    extract::Request,
    http::{HeaderValue, Method, StatusCode},
    response::{IntoResponse, Response},
    Json,
};
use rmcp::{
    model::{ClientJsonRpcMessage, GetExtensions, ServerJsonRpcMessage},
    transport::streamable_http_server::session::{
        local::{LocalSessionManager, LocalSessionManagerError},
        ServerSseMessage, SessionId, SessionManager,
    },
};

use crate::auth::Authenticated;

/// The allowance shared by callers without credentials.
pub const ANONYMOUS: &str = "(anonymous)";

/// Counts of open (and reserved) sessions, against the limits.
#[derive(Debug)]
pub struct SessionLimits {
    max_total: usize,
    max_per_entity: usize,
    counts: Mutex<Counts>,
}

#[derive(Debug, Default)]
struct Counts {
    /// Reserved and open sessions.
    total: usize,
    /// Reserved and open sessions per entity.
    per_entity: HashMap<String, usize>,
    /// Open sessions and their entity.
    open: HashMap<SessionId, String>,
}

/// Which limit an `initialize` hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitHit {
    /// The server's `max_sessions`.
    Server(usize),
    /// The entity's `max_sessions_per_entity`.
    Entity(usize),
}

/// A counted slot not yet bound to a session; freed when dropped unbound.
#[derive(Debug)]
struct Reservation {
    limits: Arc<SessionLimits>,
    entity: String,
    bound: bool,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if !self.bound {
            self.limits.release(&self.entity);
        }
    }
}

/// The request extension carrying a reservation to [`BoundedSessions`].
#[derive(Debug, Clone)]
pub struct SessionSlot(Arc<Mutex<Option<Reservation>>>);

/// Held by the transport while the request runs: frees the reservation if no session took it.
#[derive(Debug)]
pub struct SlotGuard(SessionSlot);

impl Drop for SlotGuard {
    fn drop(&mut self) {
        if let Ok(mut slot) = (self.0).0.lock() {
            slot.take();
        }
    }
}

impl SessionLimits {
    /// Limits of `max_total` sessions and `max_per_entity` per entity (each at least 1).
    pub fn new(max_total: usize, max_per_entity: usize) -> Arc<Self> {
        Arc::new(Self {
            max_total: max_total.max(1),
            max_per_entity: max_per_entity.max(1),
            counts: Mutex::new(Counts::default()),
        })
    }

    /// Open sessions: on the server, and of `entity`.
    pub fn open(&self, entity: &str) -> (usize, usize) {
        self.counts.lock().map_or((0, 0), |c| {
            (
                c.open.len(),
                c.open.values().filter(|e| e.as_str() == entity).count(),
            )
        })
    }

    fn try_reserve(self: &Arc<Self>, entity: &str) -> Result<Reservation, LimitHit> {
        let mut counts = self
            .counts
            .lock()
            .map_err(|_| LimitHit::Server(self.max_total))?;
        let mine = counts.per_entity.get(entity).copied().unwrap_or(0);
        if mine >= self.max_per_entity {
            return Err(LimitHit::Entity(self.max_per_entity));
        }
        if counts.total >= self.max_total {
            return Err(LimitHit::Server(self.max_total));
        }
        counts.total += 1;
        *counts.per_entity.entry(entity.to_string()).or_default() += 1;
        Ok(Reservation {
            limits: self.clone(),
            entity: entity.to_string(),
            bound: false,
        })
    }

    fn release(&self, entity: &str) {
        if let Ok(mut counts) = self.counts.lock() {
            counts.total = counts.total.saturating_sub(1);
            if let Some(n) = counts.per_entity.get_mut(entity) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    counts.per_entity.remove(entity);
                }
            }
        }
    }

    fn bind(&self, mut reservation: Reservation, id: &SessionId) {
        if let Ok(mut counts) = self.counts.lock() {
            counts.open.insert(id.clone(), reservation.entity.clone());
            reservation.bound = true;
        }
    }

    fn close(&self, id: &SessionId) {
        let entity = self
            .counts
            .lock()
            .ok()
            .and_then(|mut counts| counts.open.remove(id));
        if let Some(entity) = entity {
            self.release(&entity);
        }
    }

    /// The entity that opened session `id`, while it is open.
    fn owner(&self, id: &str) -> Option<String> {
        self.counts.lock().ok()?.open.get(id).cloned()
    }

    /// Admission of one request to a Streamable HTTP service. A request naming a session
    /// (`Mcp-Session-Id`) passes only for the entity that opened it. A POST without one whose
    /// `body` is an `initialize` request reserves a session slot for the request's
    /// [`Authenticated`] entity (else [`ANONYMOUS`]). Anything else passes untouched. Hold the
    /// returned guard until the service has answered.
    ///
    /// # Errors
    /// [`SessionRefusal`]; answer the caller with [`SessionRefusal::into_response`].
    pub fn admit(
        self: &Arc<Self>,
        request: &mut Request<Body>,
        body: &[u8],
    ) -> Result<Option<SlotGuard>, SessionRefusal> {
        let entity = request
            .extensions()
            .get::<Authenticated>()
            .map_or(ANONYMOUS, |a| a.entity_id.as_str())
            .to_string();
        if let Some(id) = request.headers().get("mcp-session-id") {
            let owner = id.to_str().ok().and_then(|id| self.owner(id));
            return match owner {
                Some(owner) if owner != entity => Err(SessionRefusal::ForeignSession),
                _ => Ok(None),
            };
        }
        if request.method() != Method::POST {
            return Ok(None);
        }
        if !is_initialize(body) {
            return Ok(None);
        }
        match self.try_reserve(&entity) {
            Ok(reservation) => {
                let slot = SessionSlot(Arc::new(Mutex::new(Some(reservation))));
                request.extensions_mut().insert(slot.clone());
                Ok(Some(SlotGuard(slot)))
            }
            Err(hit) => Err(SessionRefusal::Limit {
                hit,
                id: serde_json::from_slice::<serde_json::Value>(body)
                    .ok()
                    .and_then(|message| message.get("id").cloned())
                    .unwrap_or_default(),
            }),
        }
    }
}

/// Whether `body` is one JSON object whose `method` is the string `initialize`. Read without
/// building the message (every stateless call passes here; its arguments and `_meta` are only
/// skipped); a body that does not fit that shape (a duplicate `method` key, a `method` that is
/// not a string) is read whole, as `serde_json::Value` reads it (the last of duplicate keys).
fn is_initialize(body: &[u8]) -> bool {
    #[derive(serde::Deserialize)]
    struct Head<'a> {
        #[serde(borrow)]
        method: Option<std::borrow::Cow<'a, str>>,
    }
    // serde's derived structs also read arrays (by position): only an object is a message.
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return false;
    }
    match serde_json::from_slice::<Head<'_>>(body) {
        Ok(head) => head.method.as_deref() == Some("initialize"),
        Err(_) => serde_json::from_slice::<serde_json::Value>(body).is_ok_and(|message| {
            message.get("method").and_then(|m| m.as_str()) == Some("initialize")
        }),
    }
}

/// A request [`SessionLimits::admit`] refused.
#[derive(Debug, Clone, PartialEq)]
pub enum SessionRefusal {
    /// An `initialize` at a limit.
    Limit {
        /// Which limit.
        hit: LimitHit,
        /// The JSON-RPC id of the `initialize`.
        id: serde_json::Value,
    },
    /// A request naming a session another entity opened.
    ForeignSession,
}

impl SessionRefusal {
    /// The HTTP answer: at a limit 429 (the entity's) or 503 with `Retry-After` (the server's),
    /// with a JSON-RPC error (code -32000, `data: {scope, limit}`) saying what to do; for
    /// another entity's session, rmcp's own answer to an unknown session (404), which reveals
    /// nothing.
    pub fn into_response(self) -> Response {
        match self {
            SessionRefusal::Limit { hit, id } => limit_response(hit, id),
            SessionRefusal::ForeignSession => {
                (StatusCode::NOT_FOUND, "Not Found: Session not found").into_response()
            }
        }
    }
}

fn limit_response(hit: LimitHit, id: serde_json::Value) -> Response {
    let (status, message, scope, limit) = match hit {
        LimitHit::Entity(limit) => (
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "Too many open sessions: this entity already holds {limit} MCP sessions (http.max_sessions_per_entity). Close sessions you no longer use (HTTP DELETE with their Mcp-Session-Id; most clients do this when they disconnect) or reuse one, then initialize again; idle sessions close by themselves after http.session_idle_timeout_secs."
            ),
            "entity",
            limit,
        ),
        LimitHit::Server(limit) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "The server is at its limit of {limit} open MCP sessions (http.max_sessions). Retry after a while, close sessions you no longer use (HTTP DELETE with their Mcp-Session-Id), or use the stateless 2026-07-28 protocol, which needs no session."
            ),
            "server",
            limit,
        ),
    };
    let mut response = (
        status,
        Json(serde_json::json!({
            "jsonrpc": "2.0",
            "id": id,
            "error": {
                "code": -32000,
                "message": message,
                "data": { "scope": scope, "limit": limit },
            },
        })),
    )
        .into_response();
    if status == StatusCode::SERVICE_UNAVAILABLE {
        response
            .headers_mut()
            .insert(http::header::RETRY_AFTER, HeaderValue::from_static("30"));
    }
    response
}

/// Errors of [`BoundedSessions`].
#[derive(Debug, thiserror::Error)]
pub enum BoundedSessionError {
    /// rmcp's local session manager failed.
    #[error(transparent)]
    Local(#[from] LocalSessionManagerError),
    /// An `initialize` reached the session manager without a reserved slot (a transport that
    /// skipped [`SessionLimits::admit`]); the session is closed.
    #[error("no session slot was reserved for this initialize")]
    Unadmitted,
}

/// rmcp's [`LocalSessionManager`], counted against [`SessionLimits`].
#[derive(Debug)]
pub struct BoundedSessions {
    inner: LocalSessionManager,
    limits: Arc<SessionLimits>,
}

impl BoundedSessions {
    /// `inner`'s sessions, counted in `limits`.
    pub fn new(inner: LocalSessionManager, limits: Arc<SessionLimits>) -> Self {
        Self { inner, limits }
    }
}

impl SessionManager for BoundedSessions {
    type Error = BoundedSessionError;
    type Transport = <LocalSessionManager as SessionManager>::Transport;

    async fn create_session(&self) -> Result<(SessionId, Self::Transport), Self::Error> {
        Ok(self.inner.create_session().await?)
    }

    async fn initialize_session(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<ServerJsonRpcMessage, Self::Error> {
        let reservation = match &message {
            ClientJsonRpcMessage::Request(request) => request
                .request
                .extensions()
                .get::<http::request::Parts>()
                .and_then(|parts| parts.extensions.get::<SessionSlot>())
                .and_then(|slot| slot.0.lock().ok().and_then(|mut r| r.take())),
            _ => None,
        };
        let Some(reservation) = reservation else {
            let _ = self.inner.close_session(id).await;
            return Err(BoundedSessionError::Unadmitted);
        };
        // Bound before the handshake, so a session that ends at once still frees its slot.
        self.limits.bind(reservation, id);
        match self.inner.initialize_session(id, message).await {
            Ok(response) => Ok(response),
            Err(e) => {
                self.limits.close(id);
                Err(e.into())
            }
        }
    }

    async fn has_session(&self, id: &SessionId) -> Result<bool, Self::Error> {
        Ok(self.inner.has_session(id).await?)
    }

    async fn close_session(&self, id: &SessionId) -> Result<(), Self::Error> {
        self.limits.close(id);
        Ok(self.inner.close_session(id).await?)
    }

    async fn create_stream(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<
        impl futures_core::Stream<Item = ServerSseMessage> + Send + Sync + 'static,
        Self::Error,
    > {
        Ok(self.inner.create_stream(id, message).await?)
    }

    async fn accept_message(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<(), Self::Error> {
        Ok(self.inner.accept_message(id, message).await?)
    }

    async fn create_standalone_stream(
        &self,
        id: &SessionId,
    ) -> Result<
        impl futures_core::Stream<Item = ServerSseMessage> + Send + Sync + 'static,
        Self::Error,
    > {
        Ok(self.inner.create_standalone_stream(id).await?)
    }

    async fn resume(
        &self,
        id: &SessionId,
        last_event_id: String,
    ) -> Result<
        impl futures_core::Stream<Item = ServerSseMessage> + Send + Sync + 'static,
        Self::Error,
    > {
        Ok(self.inner.resume(id, last_event_id).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_initialize_is_recognised_as_reading_the_whole_message_recognises_it() {
        let by_definition = |body: &[u8]| {
            serde_json::from_slice::<serde_json::Value>(body)
                .is_ok_and(|m| m.get("method").and_then(|m| m.as_str()) == Some("initialize"))
        };
        let bodies: [&[u8]; 15] = [
            br#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25"}}"#,
            br#" {"method":"initi\u0061lize"}"#,
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"initialize"}}"#,
            br#"{"method":"tools/call","method":"initialize"}"#,
            br#"{"method":"initialize","method":"tools/call"}"#,
            br#"{"method":1}"#,
            br#"{"method":null}"#,
            br#"{"params":{"method":"initialize"}}"#,
            br#"["initialize"]"#,
            br#"[{"jsonrpc":"2.0","id":1,"method":"initialize"}]"#,
            br#""initialize""#,
            br#"{"method":"initialize""#,
            b"",
            br#"{}"#,
            br#"{"method":"Initialize"}"#,
        ];
        for body in bodies {
            assert_eq!(
                is_initialize(body),
                by_definition(body),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        assert!(is_initialize(bodies[0]) && is_initialize(bodies[1]) && is_initialize(bodies[3]));
    }

    #[test]
    fn reservations_count_until_dropped_or_closed() {
        let limits = SessionLimits::new(3, 2);
        let a = limits.try_reserve("a").unwrap();
        let _a2 = limits.try_reserve("a").unwrap();
        assert_eq!(limits.try_reserve("a").unwrap_err(), LimitHit::Entity(2));
        let b = limits.try_reserve("b").unwrap();
        assert_eq!(limits.try_reserve("c").unwrap_err(), LimitHit::Server(3));
        drop(b);
        let id: SessionId = "s1".to_string().into();
        let c = limits.try_reserve("c").unwrap();
        limits.bind(c, &id);
        assert_eq!(limits.open("c"), (1, 1));
        assert!(limits.try_reserve("d").is_err(), "a bound slot stays taken");
        limits.close(&id);
        limits.close(&id); // twice: no effect
        assert_eq!(limits.open("c"), (0, 0));
        drop(a);
        assert!(limits.try_reserve("d").is_ok());
    }
}
