//! Resource subscriptions of session clients (MCP 2025-era `resources/subscribe` and
//! `resources/unsubscribe`; the server sends `notifications/resources/updated` with the URI
//! when the resource changes: MCP specification, "Resources" → "Subscriptions").
//!
//! Clients of the stateless 2026-07-28 revision name the same URIs in the
//! `resourceSubscriptions` of a `subscriptions/listen` request and get the notifications on that
//! stream ([`Subscriptions::listen`]).
//!
//! A payment's resource is `paywarden://payments/{provider}/{payment id}` ([`payment_uri`]);
//! the ops toolset's `payment://{pi_...}` names the same Stripe payment and may be subscribed
//! to as well. A subscription belongs to the entity that made it: an event about a payment of
//! entity A is never announced to B's sessions, even for the same URI.

use std::sync::{
    atomic::{AtomicU64, Ordering},
    Mutex,
};

use rmcp::{
    model::ResourceUpdatedNotificationParam,
    service::{Peer, SubscriptionSink},
    RoleServer,
};

/// The URI scheme and prefix of payment resources.
pub const PAYMENT_URI_PREFIX: &str = "paywarden://payments/";

/// `paywarden://payments/{provider}/{payment_id}` (`provider` is `stripe` or `opp`).
pub fn payment_uri(provider: &str, payment_id: &str) -> String {
    format!("{PAYMENT_URI_PREFIX}{provider}/{payment_id}")
}

/// `(provider, payment id)` of a payment resource URI: `paywarden://payments/{provider}/{id}`,
/// or the ops toolset's `payment://{pi_...}` (Stripe).
pub fn parse_payment_uri(uri: &str) -> Option<(&str, &str)> {
    if let Some(id) = uri.strip_prefix("payment://") {
        return (!id.is_empty()).then_some(("stripe", id));
    }
    let rest = uri.strip_prefix(PAYMENT_URI_PREFIX)?;
    let (provider, id) = rest.split_once('/')?;
    (matches!(provider, "stripe" | "opp") && !id.is_empty() && !id.contains('/'))
        .then_some((provider, id))
}

/// Where a subscriber hears of updates.
#[derive(Clone)]
enum Sink {
    /// A 2025-era session (`resources/subscribe`).
    Session(Peer<RoleServer>),
    /// A 2026-07-28 `subscriptions/listen` stream (its id in this registry).
    Listen(SubscriptionSink, u64),
}

impl Sink {
    fn is_closed(&self) -> bool {
        match self {
            Sink::Session(peer) => peer.is_transport_closed(),
            // Removed by `end_listen` when its request ends.
            Sink::Listen(..) => false,
        }
    }
}

struct Subscriber {
    uri: String,
    entity_id: String,
    /// The Streamable HTTP session (`Mcp-Session-Id`), `None` for stdio and listen streams.
    session: Option<String>,
    sink: Sink,
}

/// Who subscribed to what. Shared by every session of the process.
#[derive(Default)]
pub struct Subscriptions {
    subscribers: Mutex<Vec<Subscriber>>,
    next_listen: AtomicU64,
}

impl std::fmt::Debug for Subscriptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscriptions")
            .field("count", &self.lock().len())
            .finish()
    }
}

impl Subscriptions {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Subscriber>> {
        // A panic while holding the lock leaves the list usable.
        self.subscribers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Subscribes `peer` (session `session` of `entity_id`) to `uri`; subscribing twice is one
    /// subscription.
    pub fn subscribe(
        &self,
        entity_id: &str,
        session: Option<String>,
        uri: &str,
        peer: Peer<RoleServer>,
    ) {
        let mut subscribers = self.lock();
        subscribers.retain(|s| !s.sink.is_closed());
        if subscribers.iter().any(|s| {
            s.uri == uri
                && s.entity_id == entity_id
                && s.session == session
                && matches!(s.sink, Sink::Session(_))
        }) {
            return;
        }
        subscribers.push(Subscriber {
            uri: uri.to_string(),
            entity_id: entity_id.to_string(),
            session,
            sink: Sink::Session(peer),
        });
    }

    /// Registers a 2026-07-28 `subscriptions/listen` stream of `entity_id` for `uris`; returns
    /// its id for [`Subscriptions::end_listen`].
    pub fn listen(&self, entity_id: &str, uris: &[String], sink: SubscriptionSink) -> u64 {
        let id = self.next_listen.fetch_add(1, Ordering::Relaxed);
        let mut subscribers = self.lock();
        for uri in uris {
            subscribers.push(Subscriber {
                uri: uri.clone(),
                entity_id: entity_id.to_string(),
                session: None,
                sink: Sink::Listen(sink.clone(), id),
            });
        }
        id
    }

    /// Ends listen stream `id` (its request was cancelled or closed).
    pub fn end_listen(&self, id: u64) {
        self.lock()
            .retain(|s| !matches!(s.sink, Sink::Listen(_, i) if i == id));
    }

    /// Ends the subscription of session `session` of `entity_id` to `uri` (none: nothing).
    pub fn unsubscribe(&self, entity_id: &str, session: Option<&str>, uri: &str) {
        self.lock().retain(|s| {
            !(s.uri == uri
                && s.entity_id == entity_id
                && s.session.as_deref() == session
                && matches!(s.sink, Sink::Session(_)))
        });
    }

    /// How many live subscriptions there are.
    pub fn len(&self) -> usize {
        self.lock().iter().filter(|s| !s.sink.is_closed()).count()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Sends `notifications/resources/updated` to every session of `entity_id` subscribed to
    /// payment `payment_id` at `provider` (under either URI naming it). Returns how many
    /// notifications were sent; sessions whose transport closed are dropped.
    pub async fn payment_updated(
        &self,
        entity_id: &str,
        provider: &str,
        payment_id: &str,
    ) -> usize {
        let targets: Vec<(String, Sink)> = {
            let mut subscribers = self.lock();
            subscribers.retain(|s| !s.sink.is_closed());
            subscribers
                .iter()
                .filter(|s| {
                    s.entity_id == entity_id
                        && parse_payment_uri(&s.uri) == Some((provider, payment_id))
                })
                .map(|s| (s.uri.clone(), s.sink.clone()))
                .collect()
        };
        let mut sent = 0;
        for (uri, sink) in targets {
            let result = match sink {
                Sink::Session(peer) => peer
                    .notify_resource_updated(ResourceUpdatedNotificationParam::new(uri))
                    .await
                    .map_err(|e| e.to_string()),
                Sink::Listen(sink, _) => sink
                    .notify_resource_updated(uri)
                    .await
                    .map_err(|e| e.to_string()),
            };
            match result {
                Ok(()) => sent += 1,
                Err(error) => tracing::debug!(%error, "a subscriber went away"),
            }
        }
        sent
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payment_uris_parse() {
        assert_eq!(
            parse_payment_uri(&payment_uri("stripe", "pi_1")),
            Some(("stripe", "pi_1"))
        );
        assert_eq!(
            parse_payment_uri("payment://pi_2"),
            Some(("stripe", "pi_2"))
        );
        assert_eq!(
            parse_payment_uri("paywarden://payments/opp/8ac7"),
            Some(("opp", "8ac7"))
        );
        for bad in [
            "paywarden://payments/x/1",
            "paywarden://payments/opp/",
            "paywarden://payments/opp/a/b",
            "customer://a@b",
            "payment://",
        ] {
            assert_eq!(parse_payment_uri(bad), None, "{bad}");
        }
    }
}
