//! Provider events in (issue 16, point 3): Stripe webhooks at `POST /webhooks/stripe` and OPP
//! webhook notifications at `POST /webhooks/opp`.
//!
//! Each request is authenticated first ([`signature`]: Stripe's `Stripe-Signature` with the
//! endpoint secret `stripe.webhook_secret` and a tolerance window; OPP's AES-256-GCM
//! notification with the hex key `opp.webhook_key`). One that does not authenticate changes
//! nothing, is answered HTTP 400 and audited (without the secret, the signature or the body).
//! An authentic event is stored once in `provider_events` ([`crate::store::Store::events_for`]
//! reads it back per entity and payment); a replay (same Stripe event id, same OPP
//! notification) is answered 200 and ignored. What paywarden acts on:
//!
//! | event | effect |
//! |---|---|
//! | Stripe `refund.updated` (and `refund.created`, `refund.failed`) | a pending refund_log row settled with the refund's final status ([`crate::store::Store::settle_refund`]: `failed`/`canceled` undo the booking) |
//! | Stripe `charge.refunded` | the same for each refund the charge lists |
//! | Stripe `charge.dispute.created` (and other `charge.dispute.*`) | the dispute recorded and the order flagged for review |
//! | Stripe `payment_intent.*` | the PaymentIntent's status stored |
//! | OPP `PAYMENT` | the transaction's state (result code, amount, type) stored for its payment |
//! | anything else | stored as `ignored`, answered 200 |
//!
//! Every event is audited under the entity whose payment it is about (`unknown` when paywarden
//! has no record of it), and session clients of that entity subscribed to the payment's
//! resource get `notifications/resources/updated` ([`subscriptions`]).

pub mod signature;
mod stripe;
pub mod subscriptions;

mod opp;

use std::sync::Arc;

use axum::{
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::post,
    Json, Router,
};
use secrecy::SecretString;
use serde_json::{json, Value};

use crate::store::{AuditEntry, NewProviderEvent, Store, StoreError};
pub use signature::SignatureError;
pub use subscriptions::{parse_payment_uri, payment_uri, Subscriptions};

/// The path Stripe is given for webhook events.
pub const STRIPE_PATH: &str = "/webhooks/stripe";
/// The path OPP is given for webhook notifications.
pub const OPP_PATH: &str = "/webhooks/opp";
/// Stripe's default tolerance for a signature's age, in seconds (stripe-python
/// `Webhook.DEFAULT_TOLERANCE`).
pub const DEFAULT_TOLERANCE_SECS: u64 = 300;

/// Why an event was refused. Each maps to one HTTP status; messages carry no secret.
#[derive(Debug, thiserror::Error)]
pub enum EventError {
    /// No endpoint secret / webhook key is configured for this provider (HTTP 404).
    #[error("paywarden has no {0} configured; set it to receive these events")]
    NotConfigured(&'static str),
    /// The event did not authenticate (HTTP 400).
    #[error(transparent)]
    Signature(#[from] SignatureError),
    /// The authenticated payload is not the JSON the provider documents (HTTP 400).
    #[error("unreadable event: {0}")]
    Payload(String),
    /// paywarden's database failed (HTTP 500: the provider retries).
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl EventError {
    fn status(&self) -> StatusCode {
        match self {
            Self::NotConfigured(_) => StatusCode::NOT_FOUND,
            Self::Signature(_) | Self::Payload(_) => StatusCode::BAD_REQUEST,
            Self::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// What receiving events needs.
#[derive(Clone)]
pub struct Events {
    store: Store,
    stripe_secret: Option<SecretString>,
    tolerance_secs: u64,
    opp_key: Option<SecretString>,
    sandbox: bool,
    subscriptions: Arc<Subscriptions>,
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Events")
            .field(
                "stripe_secret",
                &self.stripe_secret.as_ref().map(|_| "[redacted]"),
            )
            .field("tolerance_secs", &self.tolerance_secs)
            .field("opp_key", &self.opp_key.as_ref().map(|_| "[redacted]"))
            .finish_non_exhaustive()
    }
}

/// What one event did, before it is stored and audited.
pub(crate) struct Handled {
    pub event: NewProviderEvent,
    /// Audit outcome: `ok`, `reversed`, `ignored`.
    pub audit_outcome: &'static str,
    /// The audit row's message.
    pub message: String,
}

impl Events {
    /// Events for `store`: Stripe events verified with `stripe_secret` (`whsec_...`) within
    /// `tolerance_secs`, OPP notifications decrypted with `opp_key` (64 hex characters); a
    /// provider without its secret refuses events (HTTP 404). `subscriptions` are told of
    /// updated payments.
    pub fn new(
        store: Store,
        stripe_secret: Option<SecretString>,
        tolerance_secs: u64,
        opp_key: Option<SecretString>,
        sandbox: bool,
        subscriptions: Arc<Subscriptions>,
    ) -> Self {
        Self {
            store,
            stripe_secret,
            tolerance_secs,
            opp_key,
            sandbox,
            subscriptions,
        }
    }

    /// The subscriptions this receiver notifies.
    pub fn subscriptions(&self) -> &Arc<Subscriptions> {
        &self.subscriptions
    }

    /// The routes `POST /webhooks/stripe` and `POST /webhooks/opp`.
    pub fn router(self) -> Router {
        Router::new()
            .route(STRIPE_PATH, post(stripe_endpoint))
            .route(OPP_PATH, post(opp_endpoint))
            .with_state(Arc::new(self))
    }

    /// Audits one event-related fact under `entity_id` (`unknown` when none).
    #[allow(clippy::too_many_arguments)]
    async fn audit(
        &self,
        entity_id: &str,
        toolset: &str,
        tool: &str,
        arguments: Value,
        outcome: &str,
        result_code: Option<String>,
        transaction_id: Option<String>,
        message: String,
    ) -> Result<(), StoreError> {
        self.store
            .append_audit(&AuditEntry {
                entity_id: if entity_id.is_empty() {
                    "unknown".into()
                } else {
                    entity_id.to_string()
                },
                client_name: Some(format!("{tool} (provider event)")),
                toolset: toolset.into(),
                tool: tool.into(),
                arguments,
                outcome: outcome.into(),
                result_code,
                provider_request_id: None,
                transaction_id,
                message: Some(message),
                duration_ms: 0,
                sandbox: self.sandbox,
            })
            .await
            .map(|_| ())
    }

    /// Stores, audits and announces a handled event; `Ok(false)` when it was a replay (another
    /// delivery stored it first).
    async fn commit(
        &self,
        toolset: &str,
        tool: &str,
        handled: Handled,
    ) -> Result<bool, StoreError> {
        let event = &handled.event;
        if self.store.record_provider_event(event).await?.is_none() {
            return Ok(false);
        }
        self.audit(
            &event.entity_id,
            toolset,
            tool,
            json!({
                "eventId": event.event_id,
                "type": event.event_type,
                "object": event.object_id,
                "paymentId": event.payment_id,
                "status": event.status,
                "outcome": event.outcome,
            }),
            handled.audit_outcome,
            event.status.clone(),
            event.object_id.clone(),
            handled.message,
        )
        .await?;
        if let (false, Some(payment)) = (event.entity_id.is_empty(), &event.payment_id) {
            let sent = self
                .subscriptions
                .payment_updated(&event.entity_id, &event.provider, payment)
                .await;
            tracing::debug!(sent, provider = %event.provider, "payment update announced");
        }
        Ok(true)
    }

    /// Audits a refused event (bad signature, undecryptable, unreadable) under `unknown`.
    async fn refused(&self, toolset: &str, tool: &str, error: &EventError) {
        let code = match error {
            EventError::NotConfigured(_) => "not_configured",
            EventError::Signature(SignatureError::Stale { .. }) => "stale_signature",
            EventError::Signature(SignatureError::Decrypt | SignatureError::Encoding(_)) => {
                "decrypt_failed"
            }
            EventError::Signature(_) => "bad_signature",
            EventError::Payload(_) => "unreadable",
            EventError::Store(_) => return,
        };
        if let Err(e) = self
            .audit(
                "",
                toolset,
                tool,
                json!({ "reason": code }),
                "rejected",
                Some(code.into()),
                None,
                format!("provider event refused: {error}"),
            )
            .await
        {
            tracing::error!(error = %e, "could not audit a refused provider event");
        }
    }
}

fn answer(result: Result<Value, EventError>) -> Response {
    match result {
        Ok(body) => (StatusCode::OK, Json(body)).into_response(),
        Err(e) => {
            if let EventError::Store(_) = e {
                tracing::error!(error = %e, "provider event not recorded");
            }
            (e.status(), Json(json!({ "error": e.to_string() }))).into_response()
        }
    }
}

async fn stripe_endpoint(
    State(events): State<Arc<Events>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let result = events.stripe(&headers, &body).await;
    if let Err(e) = &result {
        events.refused("ops", "stripe_webhook", e).await;
    }
    answer(result)
}

async fn opp_endpoint(
    State(events): State<Arc<Events>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let result = events.opp(&headers, &body).await;
    if let Err(e) = &result {
        events.refused("opp", "opp_webhook", e).await;
    }
    answer(result)
}

/// An ISO 4217 code upper case, from Stripe's lower-case wire form.
pub(crate) fn currency_code(value: &Value) -> Option<String> {
    value.as_str().map(str::to_ascii_uppercase)
}
