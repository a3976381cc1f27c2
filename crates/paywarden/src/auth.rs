//! Authentication of HTTP callers, before anything is served, stored, or a session opened.
//!
//! Every request to `/mcp` and `/agentic/v1/mcp` presents `X-Entity-Id` and `X-Token`.
//! [`Authenticator::authenticate_request`] judges them, and only then does the request reach
//! rmcp: `initialize` (and with it a session), tools, resources, completions, approvals,
//! confirmation tokens and idempotency keys. The judge is, in this order:
//!
//! 1. **Configured entities** (`[[entities]]`, each an id and the SHA-256 of its token): when
//!    any are configured, paywarden's own table decides (constant-time comparison), and OPP is
//!    not asked.
//! 2. **OPP itself** otherwise (in the sandbox, the emulator, which answers as OPP does): one
//!    cheap authenticated read, `GET /v1/query?entityId=…&merchantTransactionId=…` with the
//!    token as bearer. OPP answers HTTP 401/403 with `800.900.300` "invalid authentication
//!    information" (or `800.900.301`) for credentials it refuses, and a (usually empty) query
//!    result for good ones. A verdict is reused for [`crate::config::HttpConfig::auth_cache_ttl_secs`]
//!    from a size-capped LRU cache ([`hashlink::LruCache`]) keyed by HMAC-SHA-256 of entity and
//!    token under a per-process random key: the token itself is never kept. When OPP cannot be
//!    asked (unreachable, timeout), nothing is cached and the request gets HTTP 503. Requests
//!    for the same credentials that arrive while their check is in flight wait for its verdict
//!    (or its failure) instead of asking again, so a burst of first requests (a fleet of agents
//!    starting at once) asks OPP once per pair of credentials, and at most 32 checks are in
//!    flight at once.
//!
//! OPP still judges the token on every call paywarden makes with it; when it refuses one that
//! passed here (revoked since, or a configured entity OPP does not accept), the operation
//! releases whatever it had claimed (see [`crate::service::Settlement::NotSent`]).

use std::{
    sync::Mutex,
    time::{Duration, Instant},
};

use axum::{
    body::Body,
    extract::Request,
    http::{HeaderMap, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    Json,
};
use hashlink::LruCache;
use hmac::{Hmac, Mac};
use secrecy::SecretString;
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::{
    connectors::opp::{OppClient, OppCredentials, OppError},
    mcp::{HEADER_ENTITY_ID, HEADER_TOKEN},
    service::{ops::KnownEntity, safety::token_hash},
};

/// The merchant reference of the verification query: no transaction carries it, so OPP's
/// answer to good credentials is an empty result.
pub const PROBE_REFERENCE: &str = "paywarden-credential-check";

/// Most verification queries to OPP in flight at once; further requests wait their turn.
const MAX_VERIFICATIONS_IN_FLIGHT: usize = 32;

/// The request extension [`Authenticator::authenticate_request`] adds: the entity whose
/// credentials were verified. Handlers that read the caller from headers require it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authenticated {
    /// The verified entity id (the `X-Entity-Id` header).
    pub entity_id: String,
}

/// Why a caller was not authenticated.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AuthError {
    /// A header is absent or empty (its display name).
    #[error("missing {0} header: every request must carry X-Entity-Id and X-Token (your OPP entity id and access token; the demo credentials are printed by `paywarden serve` and listed in the README)")]
    Missing(&'static str),
    /// The judge refused the credentials; the reason names the judge and never the token.
    #[error("X-Entity-Id / X-Token were refused: {0}. Send your OPP entity id and its access token; nothing was served, stored or opened")]
    Refused(String),
    /// OPP could not be asked (unreachable, timeout, an unreadable answer).
    #[error("paywarden could not verify X-Entity-Id / X-Token with OPP ({0}); nothing was served, stored or opened. Retry shortly")]
    Unavailable(String),
}

impl AuthError {
    /// The HTTP answer: 401 with `{"error": "missing_credentials" | "invalid_credentials",
    /// "message", ...}`, or 503 `{"error": "authentication_unavailable", ...}` with
    /// `Retry-After`.
    pub fn into_response(self) -> Response {
        let message = self.to_string();
        match self {
            AuthError::Missing(header) => (
                StatusCode::UNAUTHORIZED,
                Json(serde_json::json!({
                    "error": "missing_credentials", "message": message, "header": header,
                })),
            )
                .into_response(),
            AuthError::Refused(_) => (
                StatusCode::UNAUTHORIZED,
                Json(serde_json::json!({ "error": "invalid_credentials", "message": message })),
            )
                .into_response(),
            AuthError::Unavailable(_) => {
                let mut response = (
                    StatusCode::SERVICE_UNAVAILABLE,
                    Json(serde_json::json!({
                        "error": "authentication_unavailable", "message": message,
                    })),
                )
                    .into_response();
                response
                    .headers_mut()
                    .insert(http::header::RETRY_AFTER, HeaderValue::from_static("5"));
                response
            }
        }
    }
}

/// Who judges credentials.
enum Judge {
    /// `[[entities]]`: id and SHA-256 of the token.
    Entities(Vec<KnownEntity>),
    /// OPP, asked once per pair of credentials and cache period.
    Provider(Box<ProviderJudge>),
}

/// OPP's word on a pair of credentials, until when it is reused.
#[derive(Clone)]
struct Verdict {
    /// `None`: accepted; `Some(reason)`: refused.
    refusal: Option<String>,
    until: Instant,
}

struct ProviderJudge {
    client: OppClient,
    ttl: Duration,
    key: [u8; 32],
    cache: Mutex<LruCache<[u8; 32], Verdict>>,
    in_flight: tokio::sync::Semaphore,
    /// The checks in flight, by cache key: the requests for one pair of credentials that
    /// arrive before its verdict share one question to OPP ([`Share`]).
    asking: Mutex<std::collections::HashMap<[u8; 32], Asking>>,
}

/// One credential check in flight, shared by every request for the same pair of credentials
/// that arrives before its verdict: `Ok` with [`ProviderJudge::verdict`]'s answer, or `Err`
/// with why OPP could not be asked (which is not cached: the next burst asks again).
type Asking = std::sync::Arc<tokio::sync::OnceCell<Result<Option<String>, String>>>;

/// A request's share of a check in flight ([`ProviderJudge::asking`]). The last share to go,
/// whether its check answered, failed, or every request waiting on it was cancelled, removes
/// the check, so nothing stays behind per pair of credentials once its burst is over.
struct Share<'a> {
    judge: &'a ProviderJudge,
    key: [u8; 32],
    cell: Option<Asking>,
}

impl Share<'_> {
    fn cell(&self) -> Option<&Asking> {
        self.cell.as_ref()
    }
}

impl Drop for Share<'_> {
    fn drop(&mut self) {
        let Ok(mut asking) = self.judge.asking.lock() else {
            return;
        };
        // Shares are made and dropped under this lock, so the count is exact here: the map's
        // and this one's mean this is the last share.
        if let Some(cell) = self.cell.take() {
            let last = std::sync::Arc::strong_count(&cell) == 2
                && asking
                    .get(&self.key)
                    .is_some_and(|c| std::sync::Arc::ptr_eq(c, &cell));
            drop(cell);
            if last {
                asking.remove(&self.key);
            }
        }
    }
}

/// Judges `X-Entity-Id` / `X-Token`; shared by every HTTP transport.
pub struct Authenticator {
    judge: Judge,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("judge", &self.judge_name())
            .finish()
    }
}

impl Authenticator {
    /// Judges against configured entities only.
    pub fn with_entities(entities: Vec<KnownEntity>) -> Self {
        Self {
            judge: Judge::Entities(entities),
        }
    }

    /// Judges by asking OPP through `client`, reusing a verdict for `ttl`, keeping at most
    /// `entries` verdicts (at least one).
    pub fn with_provider(client: OppClient, ttl: Duration, entries: usize) -> Self {
        let capacity = entries.max(1);
        Self {
            judge: Judge::Provider(Box::new(ProviderJudge {
                client,
                ttl,
                key: rand::random(),
                cache: Mutex::new(LruCache::new(capacity)),
                in_flight: tokio::sync::Semaphore::new(MAX_VERIFICATIONS_IN_FLIGHT),
                asking: Mutex::default(),
            })),
        }
    }

    /// `"entities"` or `"opp"`: who judges (for the start-up log).
    pub fn judge_name(&self) -> &'static str {
        match self.judge {
            Judge::Entities(_) => "entities",
            Judge::Provider(_) => "opp",
        }
    }

    /// Verifies `token` for `entity_id`.
    ///
    /// # Errors
    /// [`AuthError::Refused`] when the judge refuses them; [`AuthError::Unavailable`] when OPP
    /// cannot be asked.
    pub async fn authenticate(
        &self,
        entity_id: &str,
        token: &str,
    ) -> Result<Authenticated, AuthError> {
        let accepted = Authenticated {
            entity_id: entity_id.to_string(),
        };
        match &self.judge {
            Judge::Entities(entities) => {
                let presented = token_hash(token);
                // Every entry is compared, so the time taken says nothing about which matched.
                let known = entities.iter().fold(false, |found, e| {
                    let matches = e.id == entity_id
                        && bool::from(presented.as_bytes().ct_eq(e.token_sha256.as_bytes()));
                    found | matches
                });
                if known {
                    Ok(accepted)
                } else {
                    Err(AuthError::Refused(
                        "this paywarden does not know this entity with this token (configured [[entities]])".into(),
                    ))
                }
            }
            Judge::Provider(judge) => match judge.verdict(entity_id, token).await? {
                None => Ok(accepted),
                Some(reason) => Err(AuthError::Refused(reason)),
            },
        }
    }

    /// Reads `X-Entity-Id` / `X-Token` from `headers` and verifies them.
    ///
    /// # Errors
    /// [`AuthError::Missing`] naming an absent or empty header; else as [`Self::authenticate`].
    pub async fn authenticate_headers(
        &self,
        headers: &HeaderMap,
    ) -> Result<Authenticated, AuthError> {
        let header = |name: &str, display: &'static str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .ok_or(AuthError::Missing(display))
        };
        let entity_id = header(HEADER_ENTITY_ID, "X-Entity-Id")?;
        let token = header(HEADER_TOKEN, "X-Token")?;
        self.authenticate(entity_id, token).await
    }

    /// The one check every HTTP transport runs before it serves a request: verifies the
    /// request's credentials and marks it [`Authenticated`] (a request extension, which rmcp
    /// hands on to the handler with the request's parts).
    ///
    /// # Errors
    /// As [`Self::authenticate_headers`]; answer the caller with [`AuthError::into_response`].
    pub async fn authenticate_request(&self, request: &mut Request<Body>) -> Result<(), AuthError> {
        let authenticated = self.authenticate_headers(request.headers()).await?;
        request.extensions_mut().insert(authenticated);
        Ok(())
    }

    /// Like [`Self::authenticate_request`] for endpoints that also serve callers without
    /// credentials (`/mcp/payments/`): credentials, when sent and accepted, mark the request
    /// [`Authenticated`]; otherwise it goes on unmarked, as an anonymous caller.
    pub async fn mark_if_authenticated(&self, request: &mut Request<Body>) {
        let present = [HEADER_ENTITY_ID, HEADER_TOKEN]
            .iter()
            .any(|h| request.headers().contains_key(*h));
        if present {
            if let Ok(authenticated) = self.authenticate_headers(request.headers()).await {
                request.extensions_mut().insert(authenticated);
            }
        }
    }
}

impl ProviderJudge {
    fn cache_key(&self, entity_id: &str, token: &str) -> [u8; 32] {
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&self.key) else {
            // HMAC takes keys of any length; this arm is never taken.
            return [0; 32];
        };
        mac.update(entity_id.as_bytes());
        mac.update(&[0]);
        mac.update(token.as_bytes());
        mac.finalize().into_bytes().into()
    }

    fn cached(&self, key: &[u8; 32]) -> Option<Option<String>> {
        let mut cache = self.cache.lock().ok()?;
        match cache.get(key) {
            Some(verdict) if verdict.until > Instant::now() => Some(verdict.refusal.clone()),
            Some(_) => {
                cache.remove(key);
                None
            }
            None => None,
        }
    }

    /// This request's share of the check of `key` in flight, starting one when none is.
    fn share(&self, key: [u8; 32]) -> Share<'_> {
        let cell = self
            .asking
            .lock()
            .ok()
            .map(|mut asking| std::sync::Arc::clone(asking.entry(key).or_default()));
        Share {
            judge: self,
            key,
            cell,
        }
    }

    /// `None` when OPP accepts the credentials, `Some(reason)` when it refuses them.
    ///
    /// A verdict is cached for the TTL. Requests for the same credentials that arrive while
    /// their check is in flight wait for its verdict (or its failure) instead of asking OPP
    /// again: a burst of first requests asks once.
    async fn verdict(&self, entity_id: &str, token: &str) -> Result<Option<String>, AuthError> {
        let key = self.cache_key(entity_id, token);
        if let Some(verdict) = self.cached(&key) {
            return Ok(verdict);
        }
        let share = self.share(key);
        let outcome = match share.cell() {
            Some(cell) => cell
                .get_or_init(|| self.ask(&key, entity_id, token))
                .await
                .clone(),
            // The map's lock was poisoned (a panic while holding it): ask on this request's own.
            None => self.ask(&key, entity_id, token).await,
        };
        drop(share);
        outcome.map_err(AuthError::Unavailable)
    }

    /// Asks OPP about the credentials (at most [`MAX_VERIFICATIONS_IN_FLIGHT`] checks at once)
    /// and caches its verdict; `Err` when OPP could not be asked.
    async fn ask(
        &self,
        key: &[u8; 32],
        entity_id: &str,
        token: &str,
    ) -> Result<Option<String>, String> {
        let _permit = self.in_flight.acquire().await.map_err(|e| e.to_string())?;
        // A check that finished just before this one was started may have cached a verdict.
        if let Some(verdict) = self.cached(key) {
            return Ok(verdict);
        }
        let credentials = OppCredentials {
            entity_id: entity_id.to_string(),
            token: SecretString::from(token.to_string()),
        };
        let verdict = match self
            .client
            .query_by_merchant_transaction_id(&credentials, PROBE_REFERENCE)
            .await
        {
            Ok(_) | Err(OppError::NotFound { .. }) => None,
            Err(OppError::Authentication { result }) => Some(format!(
                "OPP does not accept this token for this entity ({} {})",
                result.code, result.description
            )),
            Err(OppError::InvalidParameters { result, .. }) => Some(format!(
                "OPP refused the entity id ({} {})",
                result.code, result.description
            )),
            Err(e) => return Err(e.to_string()),
        };
        if let Ok(mut cache) = self.cache.lock() {
            let until = Instant::now() + self.ttl;
            cache.insert(
                *key,
                Verdict {
                    refusal: verdict.clone(),
                    until,
                },
            );
        }
        Ok(verdict)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use paywarden_emulator::{Emulator, EmulatorConfig, DEMO_ENTITY_ID, DEMO_TOKEN};

    /// The checks in flight that `auth` still keeps.
    fn checks_kept(auth: &Authenticator) -> usize {
        match &auth.judge {
            Judge::Provider(judge) => judge.asking.lock().unwrap().len(),
            Judge::Entities(_) => 0,
        }
    }

    #[tokio::test]
    async fn a_check_whose_every_request_was_cancelled_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let emulator = Emulator::open(EmulatorConfig::demo(dir.path().join("emulator.db")))
            .await
            .unwrap()
            .spawn(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap())
            .await
            .unwrap();
        // OPP holds every query 300 ms: the requests below are cancelled while it answers.
        let armed = reqwest::Client::new()
            .post(format!("{}/__emulator/faults", emulator.base_url))
            .json(&serde_json::json!({"path": "/v1/query",
                "action": {"kind": "delay", "delay_ms": 300}, "times": 100}))
            .send()
            .await
            .unwrap();
        assert_eq!(armed.status(), 201);
        let client = OppClient::new(&emulator.base_url, Duration::from_secs(5)).unwrap();
        let auth = std::sync::Arc::new(Authenticator::with_provider(
            client,
            Duration::from_secs(60),
            16,
        ));
        // Callers that go away (a client disconnecting) while their shared check is in flight:
        // the same pair of credentials, and a different token each.
        let mut callers = Vec::new();
        for i in 0..6 {
            let auth = auth.clone();
            let token = if i % 2 == 0 {
                DEMO_TOKEN.to_string()
            } else {
                format!("made-up-{i}")
            };
            callers.push(tokio::spawn(async move {
                auth.authenticate(DEMO_ENTITY_ID, &token).await
            }));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(checks_kept(&auth), 4, "one check per pair in flight");
        for caller in &callers {
            caller.abort();
        }
        for caller in callers {
            assert!(caller.await.unwrap_err().is_cancelled());
        }
        assert_eq!(checks_kept(&auth), 0, "nothing kept for abandoned checks");
        // The next request for the same credentials asks again and gets its verdict.
        auth.authenticate(DEMO_ENTITY_ID, DEMO_TOKEN).await.unwrap();
        assert!(matches!(
            auth.authenticate(DEMO_ENTITY_ID, "made-up-1").await,
            Err(AuthError::Refused(_))
        ));
        assert_eq!(checks_kept(&auth), 0);
    }
}
