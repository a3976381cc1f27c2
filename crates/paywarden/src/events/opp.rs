//! OPP webhook notifications (OPP docs "Webhooks": a notification is
//! `{"type": "PAYMENT", "payload": {...}}`, the payload being the transaction as OPP's API
//! answers it: `id`, `referencedId` for back-office operations, `paymentType`, `paymentBrand`,
//! `amount` (decimal string), `currency`, `result.code`/`result.description`,
//! `merchantTransactionId`, `authentication.entityId`, `timestamp`). Only what paywarden keeps
//! of a transaction is stored: never card data or the customer.

use axum::http::HeaderMap;
use paywarden_domain::{Currency, Money};
use secrecy::ExposeSecret;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::{signature, EventError, Events, Handled};
use crate::store::NewProviderEvent;

impl Events {
    /// Handles one `POST /webhooks/opp`: decrypts and authenticates the notification, then
    /// stores, audits and announces it (module docs of [`crate::events`]). Returns the JSON to
    /// answer with HTTP 200 (`"replay": true` for a notification already received).
    ///
    /// # Errors
    /// [`EventError`]: not configured, not authentic, unreadable, database failure.
    pub async fn opp(&self, headers: &HeaderMap, body: &[u8]) -> Result<Value, EventError> {
        let key = self.opp_key.as_ref().ok_or(EventError::NotConfigured(
            "OPP webhook key (opp.webhook_key)",
        ))?;
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let plain = signature::decrypt_opp(
            body,
            header("x-initialization-vector"),
            header("x-authentication-tag"),
            key.expose_secret(),
        )?;
        let notification: Value =
            serde_json::from_slice(&plain).map_err(|e| EventError::Payload(e.to_string()))?;
        let kind = notification["type"]
            .as_str()
            .ok_or_else(|| EventError::Payload("a notification has a type".into()))?
            .to_string();
        // OPP notifications carry no event id: a delivery of the same notification is the
        // same plaintext.
        let id = hex::encode(Sha256::digest(&plain));
        // Working out the event writes nothing, so a delivery seen before is told apart by the
        // insert itself (`ON CONFLICT DO NOTHING`, in `commit`), not by a read before it.
        let handled = opp_event(&id, &kind, &notification["payload"]);
        if self.commit("opp", "opp_webhook", handled).await? {
            Ok(json!({ "received": true }))
        } else {
            self.replay("opp", "opp_webhook", &id).await
        }
    }
}

fn opp_event(id: &str, kind: &str, payload: &Value) -> Handled {
    let text = |v: &Value| v.as_str().filter(|s| !s.is_empty()).map(String::from);
    let mut event = NewProviderEvent {
        provider: "opp".into(),
        event_id: id.into(),
        entity_id: String::new(),
        payment_id: None,
        event_type: kind.into(),
        object_id: text(&payload["id"]),
        status: None,
        amount_minor: None,
        currency: None,
        outcome: "ignored".into(),
        summary: json!({ "type": kind }),
    };
    if kind != "PAYMENT" {
        return Handled {
            event,
            audit_outcome: "ignored",
            message: format!(
                "OPP notification type {kind} is not one paywarden acts on: acknowledged and ignored"
            ),
        };
    }
    let currency = text(&payload["currency"]).map(|c| c.to_ascii_uppercase());
    let amount_minor = match (text(&payload["amount"]), currency.as_deref()) {
        (Some(a), Some(c)) => Currency::from_code(c)
            .ok()
            .and_then(|c| Money::parse(&a, c).ok())
            .map(|m| m.minor_units()),
        _ => None,
    };
    let code = text(&payload["result"]["code"]);
    event.entity_id = text(&payload["authentication"]["entityId"]).unwrap_or_default();
    event.payment_id = text(&payload["referencedId"]).or_else(|| event.object_id.clone());
    event.status = code.clone();
    event.amount_minor = amount_minor;
    event.currency = currency;
    // The transaction as get_transactions shows one (its TransactionView fields).
    event.summary = json!({
        "type": kind,
        "id": payload["id"],
        "referencedId": payload["referencedId"],
        "paymentType": payload["paymentType"],
        "paymentBrand": payload["paymentBrand"],
        "amount": payload["amount"],
        "currency": payload["currency"],
        "result": {"code": payload["result"]["code"], "description": payload["result"]["description"]},
        "merchantTransactionId": payload["merchantTransactionId"],
        "timestamp": payload["timestamp"],
    });
    let message = format!(
        "OPP {} transaction {} of payment {}: result {} ({})",
        payload["paymentType"].as_str().unwrap_or("?"),
        event.object_id.as_deref().unwrap_or("?"),
        event.payment_id.as_deref().unwrap_or("?"),
        code.as_deref().unwrap_or("?"),
        payload["result"]["description"].as_str().unwrap_or(""),
    );
    let (outcome, audit_outcome) = if event.entity_id.is_empty() || event.object_id.is_none() {
        ("unmatched", "ignored")
    } else {
        ("applied", "ok")
    };
    event.outcome = outcome.into();
    Handled {
        event,
        audit_outcome,
        message,
    }
}
