//! OPP wire types (the JSON OPP answers with, the form fields it takes) and their mapping onto
//! paywarden's model. Field names follow OPP's server-to-server API reference
//! (`id`, `referencedId`, `paymentType`, `amount`, `currency`, `result.code`,
//! `result.description`, `result.parameterErrors`, `card.bin`, `card.last4Digits`, `ndc`, ...).

use chrono::{DateTime, NaiveDateTime, Utc};
use paywarden_domain::{Currency, Money, PaymentType};
use serde::Deserialize;

use crate::model::{CardSummary, ParameterError, ResultInfo, Transaction};

/// `result` as OPP sends it.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct WireResult {
    pub code: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub parameter_errors: Vec<WireParameterError>,
}

/// One entry of `result.parameterErrors`.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct WireParameterError {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub value: Option<serde_json::Value>,
    #[serde(default)]
    pub message: String,
}

/// `card` as OPP sends it (never the full PAN).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct WireCard {
    pub bin: Option<String>,
    pub last4_digits: Option<String>,
    pub holder: Option<String>,
    pub expiry_month: Option<String>,
    pub expiry_year: Option<String>,
}

/// A payment (transaction) object, as returned by `POST /v1/payments[/{id}]` and
/// `GET /v1/query/{id}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct WirePayment {
    pub id: Option<String>,
    pub referenced_id: Option<String>,
    pub payment_type: Option<String>,
    pub payment_brand: Option<String>,
    pub amount: Option<String>,
    pub currency: Option<String>,
    pub descriptor: Option<String>,
    pub merchant_transaction_id: Option<String>,
    pub result: WireResult,
    pub card: Option<WireCard>,
    pub timestamp: Option<String>,
    pub ndc: Option<String>,
    /// `customParameters`, echoed as sent (values are strings).
    #[serde(default)]
    pub custom_parameters: std::collections::BTreeMap<String, serde_json::Value>,
}

/// A query envelope: `GET /v1/query?merchantTransactionId=` (`payments`), the date-range
/// report (`records`, with paging), or `GET /v1/query/{id}?includeLinkedTransactions=true`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct WireQuery {
    pub result: WireResult,
    #[serde(default)]
    pub payments: Vec<WirePayment>,
    #[serde(default)]
    pub records: Vec<WirePayment>,
    pub page_no: Option<u32>,
    pub total_count: Option<u64>,
    pub total_pages: Option<u32>,
}

/// Why a wire payment could not become a [`Transaction`].
#[derive(Debug, thiserror::Error)]
pub(crate) enum MappingError {
    #[error("OPP payment is missing `{0}`")]
    Missing(&'static str),
    #[error("OPP payment has {field} {value:?} that paywarden cannot interpret: {reason}")]
    Invalid {
        field: &'static str,
        value: String,
        reason: String,
    },
}

impl WireResult {
    pub(crate) fn to_model(&self) -> ResultInfo {
        ResultInfo::new(&self.code, &self.description)
    }

    pub(crate) fn parameter_errors(&self) -> Vec<ParameterError> {
        self.parameter_errors
            .iter()
            .map(|p| ParameterError {
                name: p.name.clone(),
                value: p.value.as_ref().map(|v| match v {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                }),
                message: p.message.clone(),
            })
            .collect()
    }
}

/// OPP timestamps look like `2026-11-21 14:03:22+0000` (sometimes with milliseconds).
pub(crate) fn parse_timestamp(raw: &str) -> Option<DateTime<Utc>> {
    for format in ["%Y-%m-%d %H:%M:%S%.f%z", "%Y-%m-%d %H:%M:%S%z"] {
        if let Ok(t) = DateTime::parse_from_str(raw, format) {
            return Some(t.with_timezone(&Utc));
        }
    }
    NaiveDateTime::parse_from_str(raw, "%Y-%m-%d %H:%M:%S")
        .ok()
        .map(|t| t.and_utc())
}

/// Formats a UTC time the way OPP's query parameters take it (`date.from`, `date.to`).
pub(crate) fn format_query_time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S").to_string()
}

impl WirePayment {
    /// Maps an OPP payment onto paywarden's [`Transaction`].
    pub(crate) fn into_model(self) -> Result<Transaction, MappingError> {
        let id = self.id.ok_or(MappingError::Missing("id"))?;
        let raw_type = self
            .payment_type
            .ok_or(MappingError::Missing("paymentType"))?;
        let payment_type: PaymentType = raw_type.parse().map_err(|_| MappingError::Invalid {
            field: "paymentType",
            value: raw_type.clone(),
            reason: "not one of PA, DB, CP, RV, RF, RB, CB, CR".into(),
        })?;
        let raw_currency = self.currency.ok_or(MappingError::Missing("currency"))?;
        let currency = Currency::from_code(&raw_currency).map_err(|e| MappingError::Invalid {
            field: "currency",
            value: raw_currency.clone(),
            reason: e.to_string(),
        })?;
        let raw_amount = self.amount.ok_or(MappingError::Missing("amount"))?;
        let amount = Money::parse(&raw_amount, currency).map_err(|e| MappingError::Invalid {
            field: "amount",
            value: raw_amount.clone(),
            reason: e.to_string(),
        })?;
        let timestamp = match self.timestamp.as_deref() {
            Some(raw) => Some(parse_timestamp(raw).ok_or_else(|| MappingError::Invalid {
                field: "timestamp",
                value: raw.to_string(),
                reason: "expected `YYYY-MM-DD HH:MM:SS+0000`".into(),
            })?),
            None => None,
        };
        Ok(Transaction {
            id,
            referenced_id: self.referenced_id,
            payment_type,
            amount,
            result: self.result.to_model(),
            timestamp,
            merchant_transaction_id: self.merchant_transaction_id,
            descriptor: self.descriptor,
            payment_brand: self.payment_brand,
            card: self.card.map(|c| CardSummary {
                bin: c.bin,
                last4_digits: c.last4_digits,
                holder: c.holder,
                expiry_month: c.expiry_month,
                expiry_year: c.expiry_year,
            }),
            ndc: self.ndc,
            custom_parameters: self
                .custom_parameters
                .into_iter()
                .map(|(k, v)| match v {
                    serde_json::Value::String(s) => (k, s),
                    other => (k, other.to_string()),
                })
                .collect(),
        })
    }
}
