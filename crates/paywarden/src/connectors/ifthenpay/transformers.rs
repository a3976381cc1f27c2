//! ifthenpay's wire types (its own field names, PascalCase or camelCase per endpoint) and their
//! exhaustive mapping onto the connector's types. Nothing here leaves the connector.

use chrono::{NaiveDate, NaiveDateTime};
use paywarden_domain::{Currency, Money};
use serde::Deserialize;
use serde_json::Value;

use super::{IfthenpayError, MbwayState};

/// ifthenpay's date-time format (`dd-MM-yyyy HH:mm:ss`).
pub(super) const WIRE_TIME: &str = "%d-%m-%Y %H:%M:%S";

/// A field that ifthenpay sends as a string or a number (amounts, PIN codes).
pub(super) fn loose_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Parses an amount ifthenpay sent ("25.00", 25.5, "63,35") exactly into `currency`. A JSON
/// number is read through its shortest round-trip decimal text, never through arithmetic.
pub(super) fn parse_amount(value: &Value, currency: Currency) -> Option<Money> {
    let text = loose_text(value)?.replace(',', ".");
    Money::parse(&text, currency).ok()
}

/// The outcome codes of the `"0"`-means-success endpoints (Multibanco `Status`, Payshop `Code`,
/// card / Cofidis / PIX `status`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum InitStatus {
    /// `"0"`: created.
    Success,
    /// Any other code: refused (invalid key, invalid parameters), with the code.
    Refused(String),
}

impl InitStatus {
    pub(super) fn parse(code: &str) -> InitStatus {
        if code.trim() == "0" {
            InitStatus::Success
        } else {
            InitStatus::Refused(code.trim().to_string())
        }
    }

    /// `Ok` on success, else the provider's refusal with its message.
    pub(super) fn into_result(self, message: &str) -> Result<(), IfthenpayError> {
        match self {
            InitStatus::Success => Ok(()),
            InitStatus::Refused(code) => Err(IfthenpayError::Rejected {
                code,
                message: message.to_string(),
            }),
        }
    }
}

/// MB WAY request codes (`POST /spg/payment/mbway`, `Status`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum MbwayInitCode {
    /// `000`: the request reached the shopper's app; awaiting approval.
    Sent,
    /// `100`: the request could not be initialised (bad parameters).
    Failed,
    /// `122`: declined to the user (no MB WAY on that number, limits).
    Declined,
    /// `999`: error (invalid key and others).
    Error,
    /// A code ifthenpay has not documented.
    Other(String),
}

impl MbwayInitCode {
    pub(super) fn parse(code: &str) -> MbwayInitCode {
        match code.trim() {
            "000" => MbwayInitCode::Sent,
            "100" => MbwayInitCode::Failed,
            "122" => MbwayInitCode::Declined,
            "999" => MbwayInitCode::Error,
            other => MbwayInitCode::Other(other.to_string()),
        }
    }
}

/// MB WAY status codes (`GET /spg/payment/mbway/status`, `Status`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum MbwayStatusCode {
    /// `000`: paid.
    Paid,
    /// `020`: rejected by the shopper in the app.
    Rejected,
    /// `101`: expired (not approved within 4 minutes).
    Expired,
    /// `122`: declined / cancelled.
    Declined,
    /// `123`: still pending (the emulator's code for a request awaiting the shopper).
    Pending,
    /// `999`: error (invalid key, unknown request).
    Error,
    /// A code ifthenpay has not documented.
    Other(String),
}

impl MbwayStatusCode {
    pub(super) fn parse(code: &str) -> MbwayStatusCode {
        match code.trim() {
            "000" => MbwayStatusCode::Paid,
            "020" => MbwayStatusCode::Rejected,
            "101" => MbwayStatusCode::Expired,
            "122" => MbwayStatusCode::Declined,
            "123" => MbwayStatusCode::Pending,
            "999" => MbwayStatusCode::Error,
            other => MbwayStatusCode::Other(other.to_string()),
        }
    }

    /// The connector's state, or the provider's refusal.
    pub(super) fn state(self) -> Option<MbwayState> {
        match self {
            MbwayStatusCode::Paid => Some(MbwayState::Paid),
            MbwayStatusCode::Rejected => Some(MbwayState::Rejected),
            MbwayStatusCode::Expired => Some(MbwayState::Expired),
            MbwayStatusCode::Declined => Some(MbwayState::Declined),
            MbwayStatusCode::Pending => Some(MbwayState::Pending),
            MbwayStatusCode::Other(_) => Some(MbwayState::Unknown),
            MbwayStatusCode::Error => None,
        }
    }
}

/// `POST /multibanco/reference/init` answer.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct WireMultibanco {
    #[serde(default)]
    pub amount: Value,
    #[serde(default)]
    pub entity: Value,
    #[serde(default)]
    pub expiry_date: Option<String>,
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub reference: Value,
    #[serde(default)]
    pub request_id: Option<String>,
    #[serde(default)]
    pub status: Value,
}

/// ifthenpay's Multibanco `ExpiryDate`: `dd-MM-yyyy`, or empty for none.
pub(super) fn parse_expiry(raw: Option<&str>) -> Option<NaiveDate> {
    let raw = raw?.trim();
    NaiveDate::parse_from_str(raw, "%d-%m-%Y")
        .or_else(|_| NaiveDate::parse_from_str(raw, "%Y%m%d"))
        .or_else(|_| NaiveDate::parse_from_str(raw, "%Y-%m-%d"))
        .ok()
}

/// `POST /spg/payment/mbway` answer.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct WireMbwayInit {
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub request_id: Option<String>,
    #[serde(default)]
    pub status: Value,
}

/// `GET /spg/payment/mbway/status` answer.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct WireMbwayStatus {
    #[serde(default)]
    pub created_at: Option<String>,
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub status: Value,
    #[serde(default)]
    pub update_at: Option<String>,
}

/// A wire time (`dd-MM-yyyy HH:mm:ss`), or `None` when absent or unreadable.
pub(super) fn parse_wire_time(raw: Option<&str>) -> Option<NaiveDateTime> {
    NaiveDateTime::parse_from_str(raw?.trim(), WIRE_TIME).ok()
}

/// `POST /payshop/reference/` answer.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct WirePayshop {
    #[serde(default)]
    pub code: Value,
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub reference: Value,
    #[serde(default)]
    pub request_id: Option<String>,
}

/// `POST /creditcard/init/{key}` answer.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct WireCard {
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub payment_url: Option<String>,
    #[serde(default)]
    pub request_id: Option<String>,
    #[serde(default)]
    pub status: Value,
}

/// `POST /cofidis/init/{key}` and `POST /pix/init/{key}` answers (camelCase).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct WireCheckout {
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub payment_url: Option<String>,
    #[serde(default)]
    pub qr_code_value: Option<String>,
    #[serde(default)]
    pub request_id: Option<String>,
    #[serde(default)]
    pub status: Value,
}

/// `POST /gateway/pinpay/{key}` answer.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct WirePinpay {
    #[serde(default)]
    pub pin_code: Value,
    #[serde(default)]
    pub redirect_url: Option<String>,
    #[serde(default)]
    pub pinpay_url: Option<String>,
}

/// `POST /v2/payments/read` answer.
#[derive(Debug, Deserialize)]
pub(super) struct WirePayments {
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub status: Value,
    #[serde(default)]
    pub payments: Vec<WirePayment>,
}

/// One payment of the v2 list.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct WirePayment {
    #[serde(default)]
    pub amount: Value,
    #[serde(default)]
    pub entity: Value,
    #[serde(default)]
    pub order_id: Value,
    #[serde(default)]
    pub payment_date: Option<String>,
    #[serde(default)]
    pub reference: Value,
    #[serde(default)]
    pub request_id: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_map_exhaustively() {
        assert_eq!(
            MbwayStatusCode::parse("000").state(),
            Some(MbwayState::Paid)
        );
        assert_eq!(
            MbwayStatusCode::parse("020").state(),
            Some(MbwayState::Rejected)
        );
        assert_eq!(
            MbwayStatusCode::parse("101").state(),
            Some(MbwayState::Expired)
        );
        assert_eq!(
            MbwayStatusCode::parse("122").state(),
            Some(MbwayState::Declined)
        );
        assert_eq!(
            MbwayStatusCode::parse("123").state(),
            Some(MbwayState::Pending)
        );
        assert_eq!(
            MbwayStatusCode::parse("777").state(),
            Some(MbwayState::Unknown)
        );
        assert_eq!(MbwayStatusCode::parse("999").state(), None);
        assert_eq!(MbwayInitCode::parse("000"), MbwayInitCode::Sent);
        assert_eq!(InitStatus::parse("0"), InitStatus::Success);
        assert_eq!(InitStatus::parse("-1"), InitStatus::Refused("-1".into()));
    }

    #[test]
    fn amounts_are_exact() {
        let eur = Currency::EUR;
        assert_eq!(
            parse_amount(&serde_json::json!("25.00"), eur).map(|m| m.minor_units()),
            Some(2500)
        );
        assert_eq!(
            parse_amount(&serde_json::json!(0.01), eur).map(|m| m.minor_units()),
            Some(1)
        );
        assert_eq!(
            parse_amount(&serde_json::json!("63,35"), eur).map(|m| m.minor_units()),
            Some(6335)
        );
        assert_eq!(
            parse_expiry(Some("20-11-2026")),
            NaiveDate::from_ymd_opt(2026, 11, 20)
        );
        assert_eq!(parse_expiry(Some("")), None);
    }
}
