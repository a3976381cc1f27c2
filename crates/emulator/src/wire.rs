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

/// The transaction object (OPP's payment response) for a stored transaction, as a value (for
/// a notification's payload); [`TxBody`] is the same object written straight into a body.
pub(crate) fn transaction(tx: &Tx) -> Value {
    // Only strings and maps of strings: writing them into a value cannot fail.
    serde_json::to_value(TxBody(tx)).unwrap_or_default()
}

/// The transaction object (OPP's payment response, "Payment response" in OPP's API reference)
/// of a stored transaction, serialized without a `serde_json::Value` in between: `id`,
/// `referencedId` (back-office operations), `paymentType`, `paymentBrand`, `amount` (OPP's
/// decimal string, `opp_amount`), `currency` (ISO 4217), `descriptor`,
/// `merchantTransactionId`, `result {code, description}`, `customParameters` (as sent; a
/// name sent twice keeps its last value), `card {bin, last4Digits, holder, expiryMonth,
/// expiryYear}`, `resultDetails {ConnectorTxID1, ExtendedDescription}`, `buildNumber`,
/// `timestamp` (`opp_time`) and `ndc`; absent optional fields are left out. Keys are written
/// in byte order at every level, as a `serde_json::Map` orders them.
pub(crate) struct TxBody<'a>(pub(crate) &'a Tx);

impl serde::Serialize for TxBody<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        /// `{code, description}`.
        struct ResultBody<'a>(&'a Tx);
        impl serde::Serialize for ResultBody<'_> {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                let mut m = serializer.serialize_map(Some(2))?;
                m.serialize_entry("code", &self.0.result_code)?;
                m.serialize_entry("description", &self.0.result_description)?;
                m.end()
            }
        }
        /// `{ConnectorTxID1, ExtendedDescription?}`.
        struct Details<'a>(&'a Tx);
        impl serde::Serialize for Details<'_> {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                let mut m = serializer.serialize_map(None)?;
                m.serialize_entry("ConnectorTxID1", &self.0.connector_tx_id)?;
                if let Some(reason) = &self.0.result_reason {
                    m.serialize_entry("ExtendedDescription", reason)?;
                }
                m.end()
            }
        }
        /// `{bin, expiryMonth, expiryYear, holder?, last4Digits}`.
        struct Card<'a>(&'a crate::store::CardSummary);
        impl serde::Serialize for Card<'_> {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                let mut m = serializer.serialize_map(None)?;
                m.serialize_entry("bin", &self.0.bin)?;
                m.serialize_entry("expiryMonth", &self.0.expiry_month)?;
                m.serialize_entry("expiryYear", &self.0.expiry_year)?;
                if let Some(holder) = &self.0.holder {
                    m.serialize_entry("holder", holder)?;
                }
                m.serialize_entry("last4Digits", &self.0.last4)?;
                m.end()
            }
        }
        let tx = self.0;
        let mut m = serializer.serialize_map(None)?;
        m.serialize_entry("amount", &crate::handlers::opp_amount(tx.amount))?;
        m.serialize_entry("buildNumber", BUILD_NUMBER)?;
        if let Some(card) = &tx.card {
            m.serialize_entry("card", &Card(card))?;
        }
        m.serialize_entry("currency", tx.amount.currency().code())?;
        if !tx.custom_parameters.is_empty() {
            // Ordered by name, the last value of a name sent twice.
            let custom: std::collections::BTreeMap<&str, &str> = tx
                .custom_parameters
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            m.serialize_entry("customParameters", &custom)?;
        }
        m.serialize_entry("descriptor", &tx.descriptor)?;
        m.serialize_entry("id", &tx.id)?;
        if let Some(mtid) = &tx.merchant_transaction_id {
            m.serialize_entry("merchantTransactionId", mtid)?;
        }
        m.serialize_entry("ndc", &tx.ndc)?;
        m.serialize_entry("paymentBrand", &tx.payment_brand)?;
        m.serialize_entry("paymentType", tx.payment_type.code())?;
        if let Some(r) = &tx.referenced_id {
            m.serialize_entry("referencedId", r)?;
        }
        m.serialize_entry("result", &ResultBody(tx))?;
        m.serialize_entry("resultDetails", &Details(tx))?;
        m.serialize_entry("timestamp", &opp_time(tx.created_at))?;
        m.end()
    }
}

/// Where a query answer lists its transactions: `payments` (one payment's transactions, a
/// merchant reference's) or `records` (a page of the date-range report).
#[derive(Clone, Copy)]
pub(crate) enum ListKey {
    Payments,
    Records,
}

/// A report page's paging fields: `pageNo`, `limit` (1-100), `totalCount` and `totalPages`.
pub(crate) struct Paging {
    pub page_no: u32,
    pub limit: u32,
    pub total_count: u64,
    pub total_pages: u64,
}

/// HTTP 200 with a successful query's body (`000.000.100`): [`envelope`]'s fields, the
/// transactions under `key` ([`TxBody`] each) and the report's [`Paging`] when given, written
/// straight into the body, keys in byte order as a `serde_json::Map` has them.
pub(crate) fn list_reply(
    key: ListKey,
    txs: &[Tx],
    paging: Option<Paging>,
    entity_id: &str,
) -> Response {
    struct Body<'a> {
        key: ListKey,
        txs: &'a [Tx],
        paging: Option<Paging>,
        timestamp: String,
        ndc: String,
    }
    impl serde::Serialize for Body<'_> {
        fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            use serde::ser::SerializeMap;
            let txs = TxList(self.txs);
            let mut m = serializer.serialize_map(None)?;
            m.serialize_entry("buildNumber", BUILD_NUMBER)?;
            if let Some(p) = &self.paging {
                m.serialize_entry("limit", &p.limit)?;
            }
            m.serialize_entry("ndc", &self.ndc)?;
            if let Some(p) = &self.paging {
                m.serialize_entry("pageNo", &p.page_no)?;
            }
            match self.key {
                ListKey::Payments => m.serialize_entry("payments", &txs)?,
                ListKey::Records => m.serialize_entry("records", &txs)?,
            }
            let (code, description) = crate::codes::SUCCESSFUL_REQUEST;
            m.serialize_entry("result", &Code { code, description })?;
            m.serialize_entry("timestamp", &self.timestamp)?;
            if let Some(p) = &self.paging {
                m.serialize_entry("totalCount", &p.total_count)?;
                m.serialize_entry("totalPages", &p.total_pages)?;
            }
            m.end()
        }
    }
    struct TxList<'a>(&'a [Tx]);
    impl serde::Serialize for TxList<'_> {
        fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            serializer.collect_seq(self.0.iter().map(TxBody))
        }
    }
    #[derive(serde::Serialize)]
    struct Code<'a> {
        code: &'a str,
        description: &'a str,
    }
    let body = Body {
        key,
        txs,
        paging,
        timestamp: opp_time(now()),
        ndc: new_ndc(Some(entity_id)),
    };
    (StatusCode::OK, Json(body)).into_response()
}

/// A response body with `result`, stamped with `buildNumber`, the current `timestamp` and a
/// fresh `ndc` (a successful query's body is [`list_reply`]'s).
pub(crate) fn envelope(result: Value, entity_id: Option<&str>) -> Value {
    let mut m = Map::new();
    m.insert("result".into(), result);
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
    reply(status, envelope(result(code), entity_id))
}

/// HTTP 400, `200.300.404` "invalid or missing parameter" with `result.parameterErrors`.
pub(crate) fn parameter_errors(errors: Vec<ParamError>, entity_id: Option<&str>) -> Response {
    let (code, description) = crate::codes::INVALID_PARAMETER;
    let result = json!({
        "code": code,
        "description": description,
        "parameterErrors": errors,
    });
    reply(StatusCode::BAD_REQUEST, envelope(result, entity_id))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(full: bool) -> Tx {
        use paywarden_domain::{Currency, Money, PaymentType};
        let at = NaiveDateTime::parse_from_str("2026-11-21 14:03:22", "%Y-%m-%d %H:%M:%S").unwrap();
        let eur = Currency::from_code("EUR").unwrap();
        Tx {
            id: "8ac7a4a1000000000000000000000001".into(),
            entity_id: "8ac7a4c9000000000000000000000001".into(),
            root_id: "8ac7a4a1000000000000000000000000".into(),
            referenced_id: full.then(|| "8ac7a4a1000000000000000000000000".to_string()),
            payment_type: if full {
                PaymentType::Refund
            } else {
                PaymentType::Debit
            },
            payment_brand: "VISA".into(),
            amount: Money::from_minor(1050, eur).unwrap(),
            descriptor: "1234.5678.9012 PAYWARDEN_SANDBOX".into(),
            merchant_transaction_id: full.then(|| "order-\"7\"".to_string()),
            succeeded: true,
            result_code: "000.100.110".into(),
            result_description:
                "Request successfully processed in 'Merchant in Integrator Test Mode'".into(),
            result_reason: full.then(|| "a reason".to_string()),
            card: full.then(|| crate::store::CardSummary {
                bin: "420000".into(),
                last4: "0000".into(),
                holder: Some("Jane Jones".into()),
                expiry_month: "05".into(),
                expiry_year: "2034".into(),
            }),
            connector_tx_id: "PWSBX0011223344556677".into(),
            ndc: "8ac7a4c9000000000000000000000001_abc".into(),
            created_at: at,
            custom_parameters: if full {
                vec![
                    ("b".into(), "2".into()),
                    ("a".into(), "1".into()),
                    ("b".into(), "3".into()),
                ]
            } else {
                Vec::new()
            },
        }
    }

    #[test]
    fn a_transaction_is_written_as_opps_payment_response() {
        // The bytes the emulator wrote when it built a `serde_json::Value` first (taken from
        // that version): the same fields, keys in byte order at every level, optional fields
        // left out, a custom parameter sent twice with its last value.
        let full = r#"{"amount":"10.50","buildNumber":"paywarden-emulator@0.1.0","card":{"bin":"420000","expiryMonth":"05","expiryYear":"2034","holder":"Jane Jones","last4Digits":"0000"},"currency":"EUR","customParameters":{"a":"1","b":"3"},"descriptor":"1234.5678.9012 PAYWARDEN_SANDBOX","id":"8ac7a4a1000000000000000000000001","merchantTransactionId":"order-\"7\"","ndc":"8ac7a4c9000000000000000000000001_abc","paymentBrand":"VISA","paymentType":"RF","referencedId":"8ac7a4a1000000000000000000000000","result":{"code":"000.100.110","description":"Request successfully processed in 'Merchant in Integrator Test Mode'"},"resultDetails":{"ConnectorTxID1":"PWSBX0011223344556677","ExtendedDescription":"a reason"},"timestamp":"2026-11-21 14:03:22+0000"}"#;
        let minimal = r#"{"amount":"10.50","buildNumber":"paywarden-emulator@0.1.0","currency":"EUR","descriptor":"1234.5678.9012 PAYWARDEN_SANDBOX","id":"8ac7a4a1000000000000000000000001","ndc":"8ac7a4c9000000000000000000000001_abc","paymentBrand":"VISA","paymentType":"DB","result":{"code":"000.100.110","description":"Request successfully processed in 'Merchant in Integrator Test Mode'"},"resultDetails":{"ConnectorTxID1":"PWSBX0011223344556677"},"timestamp":"2026-11-21 14:03:22+0000"}"#;
        for (tx, expected) in [(sample(true), full), (sample(false), minimal)] {
            assert_eq!(serde_json::to_string(&TxBody(&tx)).unwrap(), expected);
            assert_eq!(serde_json::to_string(&transaction(&tx)).unwrap(), expected);
        }
    }

    #[tokio::test]
    async fn a_query_answer_lists_its_transactions_and_paging_in_key_order() {
        for (key, paging) in [
            (
                ListKey::Records,
                Some(Paging {
                    page_no: 3,
                    limit: 2,
                    total_count: 7,
                    total_pages: 4,
                }),
            ),
            (ListKey::Payments, None),
        ] {
            let response = list_reply(
                key,
                &[sample(true), sample(false)],
                paging,
                "8ac7a4c9000000000000000000000001",
            );
            assert_eq!(response.status(), StatusCode::OK);
            assert_eq!(response.headers()["content-type"], "application/json");
            let body = axum::body::to_bytes(response.into_body(), 1 << 20)
                .await
                .unwrap();
            let value: Value = serde_json::from_slice(&body).unwrap();
            // Written in the order a `serde_json::Map` (sorted) writes the same value.
            assert_eq!(
                std::str::from_utf8(&body).unwrap(),
                serde_json::to_string(&value).unwrap()
            );
            let listed = match key {
                ListKey::Records => &value["records"],
                ListKey::Payments => &value["payments"],
            };
            assert_eq!(
                listed,
                &json!([transaction(&sample(true)), transaction(&sample(false))])
            );
            assert_eq!(
                value["result"],
                json!({"code": "000.000.100", "description": crate::codes::SUCCESSFUL_REQUEST.1})
            );
            assert_eq!(value["buildNumber"], BUILD_NUMBER);
            assert!(value["ndc"]
                .as_str()
                .unwrap()
                .starts_with("8ac7a4c9000000000000000000000001_"));
            assert!(value["timestamp"].as_str().unwrap().ends_with("+0000"));
            let fields = value.as_object().unwrap().len();
            match key {
                ListKey::Records => {
                    assert_eq!(
                        (
                            &value["pageNo"],
                            &value["limit"],
                            &value["totalCount"],
                            &value["totalPages"]
                        ),
                        (&json!(3), &json!(2), &json!(7), &json!(4))
                    );
                    assert_eq!(fields, 9);
                }
                ListKey::Payments => assert_eq!(fields, 5),
            }
        }
    }

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
