//! OPP's JSON shapes: the transaction object, the `result` object, query envelopes, and the
//! common `buildNumber` / `timestamp` / `ndc` fields.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{NaiveDateTime, Timelike, Utc};
use rand::Rng;
use serde_json::{json, Map, Value};

use crate::params::ParamError;
use crate::store::Tx;

/// `buildNumber` on every response: `paywarden-emulator@<crate version>`.
pub(crate) const BUILD_NUMBER: &str = concat!("paywarden-emulator@", env!("CARGO_PKG_VERSION"));

/// OPP's timestamp format, always UTC: `2026-11-21 14:03:22+0000`.
pub(crate) fn opp_time(t: NaiveDateTime) -> String {
    t.format("%Y-%m-%d %H:%M:%S+0000").to_string()
}

/// Now, UTC, truncated to whole seconds (the precision the emulator stores).
pub(crate) fn now() -> NaiveDateTime {
    let t = Utc::now().naive_utc();
    t.with_nanosecond(0).unwrap_or(t)
}

/// `n` random bytes as lowercase hex (`2n` characters).
pub(crate) fn random_hex(n: usize) -> String {
    let mut rng = rand::thread_rng();
    (0..n).map(|_| format!("{:02x}", rng.gen::<u8>())).collect()
}

/// A new transaction id: 32 lowercase hex characters, like OPP's.
pub(crate) fn new_id() -> String {
    random_hex(16)
}

/// A new `ndc` (OPP's request trace id): `<entityId>_<32 hex>`, or just the hex when the
/// request named no authenticated entity.
pub(crate) fn new_ndc(entity_id: Option<&str>) -> String {
    match entity_id {
        Some(e) => format!("{e}_{}", random_hex(16)),
        None => random_hex(16),
    }
}

/// A descriptor like OPP's default one: `dddd.dddd.dddd PAYWARDEN_SANDBOX` (OPP's short id
/// followed by the channel name).
pub(crate) fn default_descriptor() -> String {
    let mut rng = rand::thread_rng();
    format!(
        "{:04}.{:04}.{:04} PAYWARDEN_SANDBOX",
        rng.gen_range(0..10_000),
        rng.gen_range(0..10_000),
        rng.gen_range(0..10_000)
    )
}

/// A connector (acquirer) transaction id for `resultDetails.ConnectorTxID1`.
pub(crate) fn new_connector_tx_id() -> String {
    format!("PWSBX{}", random_hex(8).to_uppercase())
}

/// OPP's `result` object.
pub(crate) fn result(code: (&str, &str)) -> Value {
    json!({ "code": code.0, "description": code.1 })
}

/// The transaction object (OPP's payment response) for a stored transaction.
pub(crate) fn transaction(tx: &Tx) -> Value {
    let mut m = Map::new();
    m.insert("id".into(), json!(tx.id));
    if let Some(r) = &tx.referenced_id {
        m.insert("referencedId".into(), json!(r));
    }
    m.insert("paymentType".into(), json!(tx.payment_type.code()));
    m.insert("paymentBrand".into(), json!(tx.payment_brand));
    m.insert(
        "amount".into(),
        json!(crate::handlers::opp_amount(tx.amount)),
    );
    m.insert("currency".into(), json!(tx.amount.currency().code()));
    m.insert("descriptor".into(), json!(tx.descriptor));
    if let Some(mtid) = &tx.merchant_transaction_id {
        m.insert("merchantTransactionId".into(), json!(mtid));
    }
    m.insert(
        "result".into(),
        json!({ "code": tx.result_code, "description": tx.result_description }),
    );
    if !tx.custom_parameters.is_empty() {
        let custom: Map<String, Value> = tx
            .custom_parameters
            .iter()
            .map(|(k, v)| (k.clone(), json!(v)))
            .collect();
        m.insert("customParameters".into(), Value::Object(custom));
    }
    if let Some(card) = &tx.card {
        let mut c = Map::new();
        c.insert("bin".into(), json!(card.bin));
        c.insert("last4Digits".into(), json!(card.last4));
        if let Some(holder) = &card.holder {
            c.insert("holder".into(), json!(holder));
        }
        c.insert("expiryMonth".into(), json!(card.expiry_month));
        c.insert("expiryYear".into(), json!(card.expiry_year));
        m.insert("card".into(), Value::Object(c));
    }
    let mut details = Map::new();
    details.insert("ConnectorTxID1".into(), json!(tx.connector_tx_id));
    if let Some(reason) = &tx.result_reason {
        details.insert("ExtendedDescription".into(), json!(reason));
    }
    m.insert("resultDetails".into(), Value::Object(details));
    m.insert("buildNumber".into(), json!(BUILD_NUMBER));
    m.insert("timestamp".into(), json!(opp_time(tx.created_at)));
    m.insert("ndc".into(), json!(tx.ndc));
    Value::Object(m)
}

/// A response body with `result` plus `extra` fields, stamped with `buildNumber`, the current
/// `timestamp` and a fresh `ndc`.
pub(crate) fn envelope(result: Value, extra: Map<String, Value>, entity_id: Option<&str>) -> Value {
    let mut m = Map::new();
    m.insert("result".into(), result);
    m.extend(extra);
    m.insert("buildNumber".into(), json!(BUILD_NUMBER));
    m.insert("timestamp".into(), json!(opp_time(now())));
    m.insert("ndc".into(), json!(new_ndc(entity_id)));
    Value::Object(m)
}

/// A JSON response.
pub(crate) fn reply(status: StatusCode, body: Value) -> Response {
    (status, Json(body)).into_response()
}

/// An error response: just a `result` with `code`, at `status`.
pub(crate) fn error(status: StatusCode, code: (&str, &str), entity_id: Option<&str>) -> Response {
    reply(status, envelope(result(code), Map::new(), entity_id))
}

/// HTTP 400, `200.300.404` "invalid or missing parameter" with `result.parameterErrors`.
pub(crate) fn parameter_errors(errors: Vec<ParamError>, entity_id: Option<&str>) -> Response {
    let (code, description) = crate::codes::INVALID_PARAMETER;
    let result = json!({
        "code": code,
        "description": description,
        "parameterErrors": errors,
    });
    reply(
        StatusCode::BAD_REQUEST,
        envelope(result, Map::new(), entity_id),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        let t = NaiveDateTime::parse_from_str("2026-11-21 14:03:22", "%Y-%m-%d %H:%M:%S").unwrap();
        assert_eq!(opp_time(t), "2026-11-21 14:03:22+0000");
        let id = new_id();
        assert_eq!(id.len(), 32);
        assert!(id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
        assert!(new_ndc(Some("e")).starts_with("e_"));
        let d = default_descriptor();
        assert_eq!(d.len(), "0000.0000.0000 PAYWARDEN_SANDBOX".len());
        assert_eq!(now().and_utc().timestamp_subsec_nanos(), 0);
    }
}
