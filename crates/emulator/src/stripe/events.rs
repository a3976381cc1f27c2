//! The Stripe events the emulator sends after its writes ([`crate::webhooks`] signs and
//! delivers them), and `POST /v1/webhook_endpoints` (docs.stripe.com/api/webhook_endpoints/create:
//! `url` and `enabled_events[]`; the answer carries the endpoint's signing `secret`).

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::{json, Value};
use sqlx::SqlitePool;

use super::{authenticate, form::Form, new_id, now, respond, respond_error, StripeShared, Write};
use crate::stripe::error::ApiError;

/// A charge with its `refunds` list (newest first), as `charge.refunded` carries it.
pub(crate) async fn charge_with_refunds(
    pool: &SqlitePool,
    account: &str,
    charge_id: &str,
) -> Option<Value> {
    let body: String = sqlx::query_scalar(
        "SELECT body FROM stripe_objects WHERE account = ? AND object = 'charge' AND id = ?",
    )
    .bind(account)
    .bind(charge_id)
    .fetch_optional(pool)
    .await
    .ok()??;
    let mut charge: Value = serde_json::from_str(&body).ok()?;
    let refunds: Vec<String> = sqlx::query_scalar(
        "SELECT body FROM stripe_objects WHERE account = ? AND object = 'refund' AND charge = ? \
         ORDER BY created DESC, seq DESC",
    )
    .bind(account)
    .bind(charge_id)
    .fetch_all(pool)
    .await
    .ok()?;
    let data: Vec<Value> = refunds
        .iter()
        .filter_map(|r| serde_json::from_str(r).ok())
        .collect();
    charge["refunds"] = json!({
        "object": "list",
        "data": data,
        "has_more": false,
        "url": format!("/v1/charges/{charge_id}/refunds"),
    });
    Some(charge)
}

/// Sends the events of a successful, non-replayed write.
pub(super) async fn after_write(shared: &StripeShared, account: &str, op: &Write, body: &str) {
    let Ok(object) = serde_json::from_str::<Value>(body) else {
        return;
    };
    let webhooks = &shared.webhooks;
    match op {
        Write::CreatePaymentIntent => {
            webhooks.stripe_event(account, "payment_intent.created", &object);
            match object["status"].as_str() {
                Some("succeeded") => {
                    webhooks.stripe_event(account, "payment_intent.succeeded", &object)
                }
                Some("requires_payment_method") => {
                    webhooks.stripe_event(account, "payment_intent.payment_failed", &object)
                }
                _ => {}
            }
        }
        Write::CreateRefund { .. } => {
            webhooks.stripe_event(account, "refund.created", &object);
            if let Some(charge_id) = object["charge"].as_str() {
                if let Some(charge) =
                    charge_with_refunds(&shared.store.pool, account, charge_id).await
                {
                    webhooks.stripe_event(account, "charge.refunded", &charge);
                }
            }
        }
        _ => {}
    }
}

/// `POST /v1/webhook_endpoints`: registers `url` for the key's account.
pub(super) async fn create_webhook_endpoint(
    State(shared): State<std::sync::Arc<StripeShared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let request_id = new_id("req_", 14);
    let result = (|| {
        let account = authenticate(&shared, &headers)?;
        let form = Form::decode(&body)?;
        let url = form.required("url")?.to_string();
        if !(url.starts_with("https://") || url.starts_with("http://")) {
            return Err(ApiError::invalid(
                None,
                "Invalid URL: the URL must be publicly accessible and start with https:// (the emulator also accepts http://).",
                Some("url"),
            ));
        }
        Ok::<_, ApiError>((account.to_string(), url))
    })();
    match result {
        Ok((account, url)) => {
            let secret = shared.webhooks.add_stripe_endpoint(&account, &url);
            let endpoint = json!({
                "id": new_id("we_", 24),
                "object": "webhook_endpoint",
                "api_version": null,
                "application": null,
                "created": now(),
                "description": null,
                "enabled_events": ["*"],
                "livemode": false,
                "metadata": {},
                "secret": secret,
                "status": "enabled",
                "url": url,
            });
            respond(StatusCode::OK, endpoint.to_string(), &request_id, false)
        }
        Err(e) => respond_error(&e, &request_id),
    }
}
