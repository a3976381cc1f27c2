//! The sandbox control that makes the cardholder's bank dispute a charge:
//! `POST /__emulator/stripe/disputes` with `{"payment_intent": "pi_..."}` or
//! `{"charge": "ch_..."}`, optional `reason` (default `fraudulent`) and `amount` (minor units,
//! default the charge's amount). It stores a dispute shaped as Stripe's Dispute object
//! (docs.stripe.com/api/disputes/object: `id` `dp_...`, `object: "dispute"`, `amount`,
//! `currency`, `charge`, `payment_intent`, `reason`, `status: "needs_response"`,
//! `evidence_details`, `is_charge_refundable`, `livemode`, `created`), marks the charge
//! `disputed: true`, and sends `charge.dispute.created` to the account's webhook endpoints, as
//! Stripe does when a dispute opens (docs.stripe.com/disputes). Answers the dispute (HTTP 200),
//! 404 for an unknown charge, 400 without a charge or PaymentIntent.

use std::sync::Arc;

use axum::{extract::State, http::StatusCode, response::IntoResponse, response::Response, Json};
use serde::Deserialize;
use serde_json::{json, Value};
use sqlx::Row;

use crate::faults::Faults;

/// The reasons Stripe documents for a dispute (Dispute object, `reason`).
const REASONS: [&str; 14] = [
    "bank_cannot_process",
    "check_returned",
    "credit_not_processed",
    "customer_initiated",
    "debit_not_authorized",
    "duplicate",
    "fraudulent",
    "general",
    "incorrect_account_details",
    "insufficient_funds",
    "product_not_received",
    "product_unacceptable",
    "subscription_canceled",
    "unrecognized",
];

#[derive(Debug, Deserialize)]
pub(crate) struct NewDispute {
    #[serde(default)]
    payment_intent: Option<String>,
    #[serde(default)]
    charge: Option<String>,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    amount: Option<i64>,
}

fn refuse(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

pub(crate) async fn create(State(f): State<Arc<Faults>>, Json(new): Json<NewDispute>) -> Response {
    let reason = new.reason.unwrap_or_else(|| "fraudulent".into());
    if !REASONS.contains(&reason.as_str()) {
        return refuse(
            StatusCode::BAD_REQUEST,
            format!("reason must be one of {}", REASONS.join(", ")),
        );
    }
    let pool = &f.stripe;
    let charge_id = match (&new.charge, &new.payment_intent) {
        (Some(c), _) => c.clone(),
        (None, Some(pi)) => {
            let body: Option<String> = match sqlx::query_scalar(
                "SELECT body FROM stripe_objects WHERE object = 'payment_intent' AND id = ?",
            )
            .bind(pi)
            .fetch_optional(pool)
            .await
            {
                Ok(b) => b,
                Err(e) => return refuse(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
            };
            let Some(charge) = body
                .and_then(|b| serde_json::from_str::<Value>(&b).ok())
                .and_then(|v| v["latest_charge"].as_str().map(String::from))
            else {
                return refuse(
                    StatusCode::NOT_FOUND,
                    format!("no charged PaymentIntent {pi}"),
                );
            };
            charge
        }
        (None, None) => return refuse(StatusCode::BAD_REQUEST, "give payment_intent or charge"),
    };
    let row = match sqlx::query(
        "SELECT account, body FROM stripe_objects WHERE object = 'charge' AND id = ?",
    )
    .bind(&charge_id)
    .fetch_optional(pool)
    .await
    {
        Ok(Some(row)) => row,
        Ok(None) => return refuse(StatusCode::NOT_FOUND, format!("no charge {charge_id}")),
        Err(e) => return refuse(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    let (Ok(account), Ok(text)) = (
        row.try_get::<String, _>("account"),
        row.try_get::<String, _>("body"),
    ) else {
        return refuse(StatusCode::INTERNAL_SERVER_ERROR, "unreadable charge");
    };
    let Ok(mut charge) = serde_json::from_str::<Value>(&text) else {
        return refuse(StatusCode::INTERNAL_SERVER_ERROR, "unreadable charge");
    };
    let now = chrono::Utc::now().timestamp();
    let id = crate::stripe::new_id("dp_", 24);
    let dispute = json!({
        "id": id,
        "object": "dispute",
        "amount": new.amount.unwrap_or_else(|| charge["amount"].as_i64().unwrap_or(0)),
        "balance_transactions": [],
        "charge": charge_id,
        "created": now,
        "currency": charge["currency"],
        "evidence_details": {
            "due_by": now + 7 * 86_400,
            "has_evidence": false,
            "past_due": false,
            "submission_count": 0
        },
        "is_charge_refundable": false,
        "livemode": false,
        "metadata": {},
        "payment_intent": charge["payment_intent"],
        "reason": reason,
        "status": "needs_response",
    });
    charge["disputed"] = json!(true);
    let stored = async {
        let mut tx = pool.begin().await?;
        sqlx::query(
            "INSERT INTO stripe_disputes (id, account, charge, payment_intent, created, body) \
             VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(&id)
        .bind(&account)
        .bind(&charge_id)
        .bind(charge["payment_intent"].as_str())
        .bind(now)
        .bind(dispute.to_string())
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE stripe_objects SET body = ? WHERE account = ? AND id = ?")
            .bind(charge.to_string())
            .bind(&account)
            .bind(&charge_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await
    }
    .await;
    if let Err(e) = stored {
        return refuse(StatusCode::INTERNAL_SERVER_ERROR, e.to_string());
    }
    tracing::warn!(dispute = %id, "sandbox dispute opened");
    f.webhooks
        .stripe_event(&account, "charge.dispute.created", &dispute);
    (StatusCode::OK, Json(dispute)).into_response()
}
