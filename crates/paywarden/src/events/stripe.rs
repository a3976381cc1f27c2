//! Stripe webhook events (docs.stripe.com/api/events: `{"id": "evt_...", "object": "event",
//! "type", "created", "livemode", "data": {"object": {...}}}`). Refund objects
//! (docs.stripe.com/api/refunds/object) carry `status` `pending` | `requires_action` |
//! `succeeded` | `failed` | `canceled`; dispute objects (docs.stripe.com/api/disputes/object)
//! `reason` and `status`.

use axum::http::HeaderMap;
use secrecy::ExposeSecret;
use serde_json::{json, Value};

use super::{currency_code, signature, EventError, Events, Handled};
use crate::store::NewProviderEvent;

/// Refund statuses that are final (docs.stripe.com/refunds, "Failed refunds").
const FINAL: [&str; 3] = ["succeeded", "failed", "canceled"];

impl Events {
    /// Handles one `POST /webhooks/stripe`: verifies `Stripe-Signature`, then stores, acts on,
    /// audits and announces the event (module docs of [`crate::events`]). Returns the JSON to
    /// answer with HTTP 200: `{"received": true}`, with `"replay": true` for an event already
    /// received.
    ///
    /// # Errors
    /// [`EventError`]: not configured, bad signature, unreadable JSON, database failure.
    pub async fn stripe(&self, headers: &HeaderMap, body: &[u8]) -> Result<Value, EventError> {
        let secret = self
            .stripe_secret
            .as_ref()
            .ok_or(EventError::NotConfigured(
                "Stripe webhook endpoint secret (stripe.webhook_secret)",
            ))?;
        let header = headers
            .get("stripe-signature")
            .and_then(|v| v.to_str().ok());
        signature::verify_stripe(
            header,
            body,
            secret.expose_secret(),
            self.tolerance_secs,
            chrono::Utc::now().timestamp(),
        )?;
        let event: Value =
            serde_json::from_slice(body).map_err(|e| EventError::Payload(e.to_string()))?;
        let (Some(id), Some(kind)) = (event["id"].as_str(), event["type"].as_str()) else {
            return Err(EventError::Payload("an event has an id and a type".into()));
        };
        if self.store.provider_event_seen("stripe", id).await? {
            return self.replay("ops", "stripe_webhook", id).await;
        }
        let object = &event["data"]["object"];
        let handled = self.stripe_event(id, kind, object).await?;
        if self.commit("ops", "stripe_webhook", handled).await? {
            Ok(json!({ "received": true }))
        } else {
            self.replay("ops", "stripe_webhook", id).await
        }
    }

    /// A replayed event: acknowledged, audited, nothing else.
    pub(super) async fn replay(
        &self,
        toolset: &str,
        tool: &str,
        id: &str,
    ) -> Result<Value, EventError> {
        self.audit(
            "",
            toolset,
            tool,
            json!({ "eventId": id }),
            "replay",
            Some("replay".into()),
            None,
            "provider event received again: acknowledged and ignored".into(),
        )
        .await?;
        Ok(json!({ "received": true, "replay": true }))
    }

    /// The single entity with an order paid by `payment_intent`, or `""`.
    async fn entity_of(&self, payment_intent: Option<&str>) -> Result<String, EventError> {
        let Some(pi) = payment_intent else {
            return Ok(String::new());
        };
        let entities = self.store.entities_of_payment_intent(pi).await?;
        Ok(match entities.as_slice() {
            [one] => one.clone(),
            _ => String::new(),
        })
    }

    /// Settles refund `refund_id` of `entity_id` to `status` when its row is pending; the
    /// message says what happened, `None` when nothing changed.
    async fn settle(
        &self,
        entity_id: &str,
        refund_id: &str,
        status: &str,
    ) -> Result<Option<(String, bool)>, EventError> {
        if entity_id.is_empty() || !FINAL.contains(&status) {
            return Ok(None);
        }
        let Some(row) = self
            .store
            .settle_refund(entity_id, refund_id, status)
            .await?
        else {
            return Ok(None);
        };
        let undone = status != "succeeded";
        let message = if undone {
            format!(
                "Stripe refund {refund_id} (order {}) ended {status}: the money was NOT refunded; its booking is undone (refund_log row {} marked {status}, the order's refunded amount and the movement reversed).",
                row.order_id, row.id
            )
        } else {
            format!(
                "Stripe refund {refund_id} (order {}) was pending and has succeeded.",
                row.order_id
            )
        };
        Ok(Some((message, undone)))
    }

    async fn stripe_event(
        &self,
        id: &str,
        kind: &str,
        object: &Value,
    ) -> Result<Handled, EventError> {
        let text = |v: &Value| v.as_str().map(String::from);
        let object_id = text(&object["id"]);
        let status = text(&object["status"]);
        let mut event = NewProviderEvent {
            provider: "stripe".into(),
            event_id: id.into(),
            entity_id: String::new(),
            payment_id: None,
            event_type: kind.into(),
            object_id: object_id.clone(),
            status: status.clone(),
            amount_minor: object["amount"].as_i64(),
            currency: currency_code(&object["currency"]),
            outcome: "ignored".into(),
            summary: json!({}),
        };
        let mut summary = json!({
            "type": kind,
            "object": object["object"],
            "id": object["id"],
            "status": object["status"],
            "amount": object["amount"],
            "currency": object["currency"],
        });
        let mut audit_outcome = "ok";
        let mut message = format!("Stripe event {kind} received");
        if kind.starts_with("refund.") {
            let refund_id = object_id.clone().unwrap_or_default();
            let owner = self.store.refund_owner(&refund_id).await?;
            let (entity, pi) = match owner {
                Some((entity, pi)) => (entity, pi.or_else(|| text(&object["payment_intent"]))),
                None => {
                    let pi = text(&object["payment_intent"]);
                    (self.entity_of(pi.as_deref()).await?, pi)
                }
            };
            event.entity_id = entity;
            event.payment_id = pi;
            summary["payment_intent"] = json!(event.payment_id);
            summary["failure_reason"] = object["failure_reason"].clone();
            event.outcome = "recorded".into();
            if let Some((m, undone)) = self
                .settle(
                    &event.entity_id,
                    &refund_id,
                    status.as_deref().unwrap_or(""),
                )
                .await?
            {
                event.outcome = "applied".into();
                audit_outcome = if undone { "reversed" } else { "ok" };
                message = m;
            }
        } else if kind == "charge.refunded" {
            let pi = text(&object["payment_intent"]);
            event.entity_id = self.entity_of(pi.as_deref()).await?;
            event.payment_id = pi;
            event.status = Some("refunded".into());
            event.amount_minor = object["amount_refunded"].as_i64();
            summary["amount_refunded"] = object["amount_refunded"].clone();
            summary["payment_intent"] = json!(event.payment_id);
            event.outcome = "recorded".into();
            let refunds = object["refunds"]["data"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let mut settled = Vec::new();
            for refund in &refunds {
                let (Some(rid), Some(st)) = (refund["id"].as_str(), refund["status"].as_str())
                else {
                    continue;
                };
                if let Some((m, _)) = self.settle(&event.entity_id, rid, st).await? {
                    settled.push(m);
                }
            }
            if !settled.is_empty() {
                event.outcome = "applied".into();
                message = settled.join(" ");
            }
        } else if kind.starts_with("charge.dispute.") {
            let pi = text(&object["payment_intent"]);
            event.entity_id = self.entity_of(pi.as_deref()).await?;
            event.payment_id = pi.clone();
            summary["reason"] = object["reason"].clone();
            summary["charge"] = object["charge"].clone();
            summary["payment_intent"] = json!(pi);
            event.outcome = "recorded".into();
            if kind == "charge.dispute.created" && !event.entity_id.is_empty() {
                if let Some(order) = self
                    .store
                    .order_by_charge(&event.entity_id, pi.as_deref().unwrap_or_default())
                    .await?
                {
                    let note = format!(
                        "Stripe dispute {} opened by the cardholder's bank: reason {}, status {}, amount {} {} (minor units). Respond with evidence before its due date in Stripe.",
                        object_id.as_deref().unwrap_or("?"),
                        object["reason"].as_str().unwrap_or("unknown"),
                        status.as_deref().unwrap_or("unknown"),
                        event.amount_minor.unwrap_or(0),
                        event.currency.as_deref().unwrap_or("?"),
                    );
                    self.store
                        .flag_for_review(&event.entity_id, &order, &note, "stripe dispute")
                        .await?;
                    event.outcome = "applied".into();
                    message = note;
                }
            }
        } else if kind.starts_with("payment_intent.") {
            event.entity_id = self.entity_of(object_id.as_deref()).await?;
            event.payment_id = object_id.clone();
            event.outcome = "recorded".into();
            message = format!(
                "Stripe PaymentIntent {} is {}",
                object_id.as_deref().unwrap_or("?"),
                status.as_deref().unwrap_or("?")
            );
        } else {
            audit_outcome = "ignored";
            message = format!(
                "Stripe event type {kind} is not one paywarden acts on: acknowledged and ignored"
            );
        }
        if event.entity_id.is_empty() && event.outcome != "ignored" {
            event.outcome = "unmatched".into();
            audit_outcome = "ignored";
            message = format!("{message}; paywarden has no record of this payment");
        }
        event.summary = summary;
        Ok(Handled {
            event,
            audit_outcome,
            message,
        })
    }
}
