//! Resource subscriptions of session clients (MCP 2025-era `resources/subscribe` and
//! `resources/unsubscribe`; the server sends `notifications/resources/updated` with the URI
//! when the resource changes: MCP specification, "Resources" → "Subscriptions").
//!
//! A payment's resource is `paywarden://payments/{provider}/{payment id}` ([`payment_uri`]);
//! the ops toolset's `payment://{pi_...}` names the same Stripe payment and may be subscribed
//! to as well. A subscription belongs to the entity that made it: an event about a payment of
//! entity A is never announced to B's sessions, even for the same URI.

use std::sync::Mutex;

use rmcp::{model::ResourceUpdatedNotificationParam, service::Peer, RoleServer};

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

struct Subscriber {
    uri: String,
    entity_id: String,
    /// The Streamable HTTP session (`Mcp-Session-Id`), `None` for stdio.
    session: Option<String>,
    peer: Peer<RoleServer>,
}

/// Who subscribed to what. Shared by every session of the process.
#[derive(Default)]
pub struct Subscriptions {
    subscribers: Mutex<Vec<Subscriber>>,
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
        subscribers.retain(|s| !s.peer.is_transport_closed());
        if subscribers
            .iter()
            .any(|s| s.uri == uri && s.entity_id == entity_id && s.session == session)
        {
            return;
        }
        subscribers.push(Subscriber {
            uri: uri.to_string(),
            entity_id: entity_id.to_string(),
            session,
            peer,
        });
    }

    /// Ends the subscription of session `session` of `entity_id` to `uri` (none: nothing).
    pub fn unsubscribe(&self, entity_id: &str, session: Option<&str>, uri: &str) {
        self.lock().retain(|s| {
            !(s.uri == uri && s.entity_id == entity_id && s.session.as_deref() == session)
        });
    }

    /// How many live subscriptions there are.
    pub fn len(&self) -> usize {
        self.lock()
            .iter()
            .filter(|s| !s.peer.is_transport_closed())
            .count()
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
        let targets: Vec<(String, Peer<RoleServer>)> = {
            let mut subscribers = self.lock();
            subscribers.retain(|s| !s.peer.is_transport_closed());
            subscribers
                .iter()
                .filter(|s| {
                    s.entity_id == entity_id
                        && parse_payment_uri(&s.uri) == Some((provider, payment_id))
                })
                .map(|s| (s.uri.clone(), s.peer.clone()))
                .collect()
        };
        let mut sent = 0;
        for (uri, peer) in targets {
            match peer
                .notify_resource_updated(ResourceUpdatedNotificationParam::new(uri))
                .await
            {
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
