//! Provider events (table `provider_events`, `migrations/*/0013_provider_events.sql`): every
//! Stripe webhook event and OPP webhook notification paywarden accepted, stored once per
//! `(provider, event_id)`, and read back per entity and payment with [`Store::events_for`]
//! (what the Tasks code and the `paywarden://payments/...` resources read).

use chrono::{SecondsFormat, Utc};
use serde::Serialize;
use sqlx::Row;

use super::{Store, StoreError};

/// An event to store (`id` and `received_at` are set by the store).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NewProviderEvent {
    /// `stripe` or `opp`.
    pub provider: String,
    /// The provider's event id: Stripe's `evt_...`; for OPP (whose notifications carry no
    /// event id) the SHA-256 (hex) of the decrypted notification.
    pub event_id: String,
    /// The entity whose payment the event is about; `""` when paywarden has no record of it.
    pub entity_id: String,
    /// The payment as the entity knows it: Stripe PaymentIntent `pi_...`, OPP payment id.
    pub payment_id: Option<String>,
    /// Stripe's event `type` (`refund.updated`, ...) or OPP's notification `type` (`PAYMENT`).
    pub event_type: String,
    /// The object the event is about (`re_`, `ch_`, `dp_`, `pi_`, or the OPP transaction id).
    pub object_id: Option<String>,
    /// The object's status (Stripe) or result code (OPP, e.g. `000.100.110`).
    pub status: Option<String>,
    /// Amount in minor units of `currency`.
    pub amount_minor: Option<i64>,
    /// ISO 4217 code, upper case.
    pub currency: Option<String>,
    /// `applied` (paywarden's records changed), `recorded` (kept, nothing to change),
    /// `ignored` (a type paywarden does not act on) or `unmatched` (no record of the payment).
    pub outcome: String,
    /// What paywarden keeps of the event (no card data, personal data or secrets).
    pub summary: serde_json::Value,
}

/// A stored event.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProviderEvent {
    /// Row id (increasing in arrival order).
    pub id: i64,
    /// The event as stored.
    #[serde(flatten)]
    pub event: NewProviderEvent,
    /// UTC RFC 3339.
    pub received_at: String,
}

impl Store {
    /// Stores `event` unless an event with the same `(provider, event_id)` is stored already.
    /// Returns the new row id, or `None` for a replay (nothing is written then).
    ///
    /// # Errors
    /// [`StoreError::Database`].
    pub async fn record_provider_event(
        &self,
        event: &NewProviderEvent,
    ) -> Result<Option<i64>, StoreError> {
        let insert = sqlx::query_scalar(
            "INSERT INTO provider_events (provider, event_id, entity_id, payment_id, event_type, object_id, \
             status, amount_minor, currency, outcome, summary, received_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
             ON CONFLICT (provider, event_id) DO NOTHING RETURNING id",
        )
        .bind(&event.provider)
        .bind(&event.event_id)
        .bind(&event.entity_id)
        .bind(&event.payment_id)
        .bind(&event.event_type)
        .bind(&event.object_id)
        .bind(&event.status)
        .bind(event.amount_minor)
        .bind(&event.currency)
        .bind(&event.outcome)
        .bind(event.summary.to_string())
        .bind(Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true))
        ;
        let mut conn = self.write_conn().await?;
        let id: Option<i64> = insert.fetch_optional(&mut *conn).await?;
        conn.written().await?;
        Ok(id)
    }

    /// Whether an event `(provider, event_id)` is stored.
    ///
    /// # Errors
    /// [`StoreError::Database`].
    pub async fn provider_event_seen(
        &self,
        provider: &str,
        event_id: &str,
    ) -> Result<bool, StoreError> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM provider_events WHERE provider = $1 AND event_id = $2",
        )
        .bind(provider)
        .bind(event_id)
        .fetch_one(self.pool())
        .await?;
        Ok(n > 0)
    }

    /// The events about payment `payment_id` of `entity_id` (any provider), oldest first.
    /// Another entity's events are never returned.
    ///
    /// # Errors
    /// [`StoreError::Database`], [`StoreError::Json`] for an unreadable stored summary.
    pub async fn events_for(
        &self,
        entity_id: &str,
        payment_id: &str,
    ) -> Result<Vec<ProviderEvent>, StoreError> {
        let rows = sqlx::query(
            "SELECT * FROM provider_events WHERE entity_id = $1 AND payment_id = $2 ORDER BY id",
        )
        .bind(entity_id)
        .bind(payment_id)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| {
                let summary: String = row.try_get("summary")?;
                Ok(ProviderEvent {
                    id: row.try_get("id")?,
                    event: NewProviderEvent {
                        provider: row.try_get("provider")?,
                        event_id: row.try_get("event_id")?,
                        entity_id: row.try_get("entity_id")?,
                        payment_id: row.try_get("payment_id")?,
                        event_type: row.try_get("event_type")?,
                        object_id: row.try_get("object_id")?,
                        status: row.try_get("status")?,
                        amount_minor: row.try_get("amount_minor")?,
                        currency: row.try_get("currency")?,
                        outcome: row.try_get("outcome")?,
                        summary: serde_json::from_str(&summary)?,
                    },
                    received_at: row.try_get("received_at")?,
                })
            })
            .collect()
    }

    /// The entities with an order paid by Stripe PaymentIntent `payment_intent` (normally one).
    ///
    /// # Errors
    /// [`StoreError::Database`].
    pub async fn entities_of_payment_intent(
        &self,
        payment_intent: &str,
    ) -> Result<Vec<String>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT DISTINCT entity_id FROM orders WHERE stripe_charge_id = $1 ORDER BY entity_id",
        )
        .bind(payment_intent)
        .fetch_all(self.pool())
        .await?)
    }

    /// The entity and order of the refund_log row of Stripe refund `stripe_refund_id`, with the
    /// PaymentIntent that order was paid by.
    ///
    /// # Errors
    /// [`StoreError::Database`].
    pub async fn refund_owner(
        &self,
        stripe_refund_id: &str,
    ) -> Result<Option<(String, Option<String>)>, StoreError> {
        let row = sqlx::query(
            "SELECT r.entity_id, o.stripe_charge_id FROM refund_log r JOIN orders o \
             ON o.id = r.order_id AND o.entity_id = r.entity_id WHERE r.stripe_refund_id = $1",
        )
        .bind(stripe_refund_id)
        .fetch_optional(self.pool())
        .await?;
        row.map(|row| Ok((row.try_get("entity_id")?, row.try_get("stripe_charge_id")?)))
            .transpose()
    }
}
