//! Stripe wire types (the JSON Stripe answers with) and their mapping onto paywarden's model.
//! Field names follow Stripe's API reference (`id`, `object`, `amount`, `currency`,
//! `amount_received`, `status`, `latest_charge`, `created`, `metadata`, `has_more`, and the
//! error envelope `error.type`, `error.code`, `error.message`, `error.param`,
//! `error.decline_code`).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use paywarden_domain::{Currency, Money};
use serde::Deserialize;

use super::model::{
    Charge, Customer, PaymentIntent, PaymentIntentStatus, PaymentLink, Price, Product, Refund,
    RefundReason, RefundStatus,
};

/// Currencies whose Stripe amount unit differs from the ISO 4217 minor unit: Stripe takes ISK
/// and UGX amounts with two decimals (ISO 4217: zero) and treats MGA as zero-decimal (ISO 4217:
/// two). Paywarden refuses them rather than misstate an amount by a factor of 100.
pub(crate) const MISMATCHED_CURRENCIES: [&str; 3] = ["ISK", "MGA", "UGX"];

/// Why a wire object could not become a model value.
#[derive(Debug, thiserror::Error)]
pub(crate) enum MappingError {
    #[error("Stripe {object} is missing `{field}`")]
    Missing {
        object: &'static str,
        field: &'static str,
    },
    #[error("Stripe {object} has {field} {value:?} that paywarden cannot interpret: {reason}")]
    Invalid {
        object: &'static str,
        field: &'static str,
        value: String,
        reason: String,
    },
}

/// `{"error": {...}}` as Stripe sends it on every non-2xx answer.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct WireErrorEnvelope {
    pub error: WireError,
}

/// Stripe's `error` object.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct WireError {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub code: Option<String>,
    pub message: Option<String>,
    pub param: Option<String>,
    pub decline_code: Option<String>,
}

/// A list (`object: "list"`) or search result (`object: "search_result"`).
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct WireList<T> {
    pub data: Vec<T>,
    #[serde(default)]
    pub has_more: bool,
}

/// A Stripe `customer`, or a deleted one (`{"id", "object": "customer", "deleted": true}`).
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct WireCustomer {
    pub id: String,
    #[serde(default)]
    pub deleted: bool,
    pub email: Option<String>,
    pub name: Option<String>,
    pub created: Option<i64>,
}

/// A Stripe `payment_intent`.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct WirePaymentIntent {
    pub id: String,
    pub amount: i64,
    #[serde(default)]
    pub amount_received: i64,
    pub currency: String,
    pub customer: Option<String>,
    pub status: String,
    pub latest_charge: Option<String>,
    pub created: i64,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

/// A Stripe `charge`.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct WireCharge {
    pub id: String,
    pub amount: i64,
    #[serde(default)]
    pub amount_refunded: i64,
    pub currency: String,
    #[serde(default)]
    pub refunded: bool,
    pub payment_intent: Option<String>,
}

/// A Stripe `refund`.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct WireRefund {
    pub id: String,
    pub amount: i64,
    pub currency: String,
    pub status: Option<String>,
    pub payment_intent: Option<String>,
    pub charge: Option<String>,
    pub reason: Option<String>,
    pub created: i64,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

/// A Stripe `product`.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct WireProduct {
    pub id: String,
    pub name: String,
}

/// A Stripe `price`.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct WirePrice {
    pub id: String,
    pub product: String,
    pub unit_amount: Option<i64>,
    pub currency: String,
}

/// A Stripe `payment_link`.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct WirePaymentLink {
    pub id: String,
    pub url: String,
}

/// Stripe's lower-case currency (`"usd"`) as an ISO 4217 [`Currency`].
pub(crate) fn currency(object: &'static str, raw: &str) -> Result<Currency, MappingError> {
    let upper = raw.to_ascii_uppercase();
    let invalid = |reason: String| MappingError::Invalid {
        object,
        field: "currency",
        value: raw.to_string(),
        reason,
    };
    if MISMATCHED_CURRENCIES.contains(&upper.as_str()) {
        return Err(invalid(
            "Stripe's amount unit for this currency differs from ISO 4217's minor unit".into(),
        ));
    }
    Currency::from_code(&upper).map_err(|e| invalid(e.to_string()))
}

fn money(
    object: &'static str,
    field: &'static str,
    minor: i64,
    currency: Currency,
) -> Result<Money, MappingError> {
    Money::from_minor(minor, currency).map_err(|e| MappingError::Invalid {
        object,
        field,
        value: minor.to_string(),
        reason: e.to_string(),
    })
}

fn timestamp(object: &'static str, seconds: i64) -> Result<DateTime<Utc>, MappingError> {
    DateTime::from_timestamp(seconds, 0).ok_or_else(|| MappingError::Invalid {
        object,
        field: "created",
        value: seconds.to_string(),
        reason: "not a Unix timestamp in range".into(),
    })
}

impl WireCustomer {
    /// `None` for a deleted customer.
    pub(crate) fn into_model(self) -> Result<Option<Customer>, MappingError> {
        if self.deleted {
            return Ok(None);
        }
        let created = self.created.ok_or(MappingError::Missing {
            object: "customer",
            field: "created",
        })?;
        Ok(Some(Customer {
            id: self.id,
            email: self.email,
            name: self.name,
            created: timestamp("customer", created)?,
        }))
    }
}

impl WirePaymentIntent {
    pub(crate) fn into_model(self) -> Result<PaymentIntent, MappingError> {
        const O: &str = "payment_intent";
        let currency = currency(O, &self.currency)?;
        let status =
            PaymentIntentStatus::from_wire(&self.status).ok_or_else(|| MappingError::Invalid {
                object: O,
                field: "status",
                value: self.status.clone(),
                reason: "not a documented PaymentIntent status".into(),
            })?;
        Ok(PaymentIntent {
            amount: money(O, "amount", self.amount, currency)?,
            amount_received: money(O, "amount_received", self.amount_received, currency)?,
            created: timestamp(O, self.created)?,
            id: self.id,
            customer: self.customer,
            status,
            latest_charge: self.latest_charge,
            metadata: self.metadata,
        })
    }
}

impl WireCharge {
    pub(crate) fn into_model(self) -> Result<Charge, MappingError> {
        const O: &str = "charge";
        let currency = currency(O, &self.currency)?;
        Ok(Charge {
            amount: money(O, "amount", self.amount, currency)?,
            amount_refunded: money(O, "amount_refunded", self.amount_refunded, currency)?,
            id: self.id,
            refunded: self.refunded,
            payment_intent: self.payment_intent,
        })
    }
}

impl WireRefund {
    pub(crate) fn into_model(self) -> Result<Refund, MappingError> {
        const O: &str = "refund";
        let currency = currency(O, &self.currency)?;
        let raw_status = self.status.ok_or(MappingError::Missing {
            object: O,
            field: "status",
        })?;
        let status = RefundStatus::from_wire(&raw_status).ok_or_else(|| MappingError::Invalid {
            object: O,
            field: "status",
            value: raw_status.clone(),
            reason: "not a documented refund status".into(),
        })?;
        Ok(Refund {
            amount: money(O, "amount", self.amount, currency)?,
            created: timestamp(O, self.created)?,
            id: self.id,
            status,
            payment_intent: self.payment_intent,
            charge: self.charge,
            reason: self.reason.as_deref().map(RefundReason::from_wire),
            metadata: self.metadata,
        })
    }
}

impl WireProduct {
    pub(crate) fn into_model(self) -> Product {
        Product {
            id: self.id,
            name: self.name,
        }
    }
}

impl WirePrice {
    pub(crate) fn into_model(self) -> Result<Price, MappingError> {
        const O: &str = "price";
        let currency = currency(O, &self.currency)?;
        let unit_amount = self.unit_amount.ok_or(MappingError::Missing {
            object: O,
            field: "unit_amount",
        })?;
        Ok(Price {
            id: self.id,
            product: self.product,
            unit_amount: money(O, "unit_amount", unit_amount, currency)?,
        })
    }
}

impl WirePaymentLink {
    pub(crate) fn into_model(self) -> PaymentLink {
        PaymentLink {
            id: self.id,
            url: self.url,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lower_case_currencies_map_to_iso_codes() {
        assert_eq!(currency("x", "usd").unwrap(), Currency::USD);
        assert_eq!(currency("x", "jpy").unwrap(), Currency::JPY);
        assert!(currency("x", "isk").is_err());
        assert!(currency("x", "mga").is_err());
        assert!(currency("x", "zzz").is_err());
    }

    #[test]
    fn payment_intent_maps_and_rejects_unknown_status() {
        let json = serde_json::json!({
            "id": "pi_1", "object": "payment_intent", "amount": 2000, "amount_received": 2000,
            "currency": "eur", "customer": "cus_1", "status": "succeeded",
            "latest_charge": "ch_1", "created": 1_700_000_000, "metadata": {"order": "7"}
        });
        let pi: WirePaymentIntent = serde_json::from_value(json.clone()).unwrap();
        let pi = pi.into_model().unwrap();
        assert_eq!(pi.amount.minor_units(), 2000);
        assert_eq!(pi.amount.currency(), Currency::EUR);
        assert_eq!(pi.status, PaymentIntentStatus::Succeeded);
        assert_eq!(pi.metadata.get("order").map(String::as_str), Some("7"));
        let mut odd = json;
        odd["status"] = "teleported".into();
        let pi: WirePaymentIntent = serde_json::from_value(odd).unwrap();
        assert!(matches!(
            pi.into_model(),
            Err(MappingError::Invalid {
                field: "status",
                ..
            })
        ));
    }

    #[test]
    fn refund_reasons_tolerate_new_values() {
        assert_eq!(
            RefundReason::from_wire("expired_uncaptured_charge"),
            RefundReason::ExpiredUncapturedCharge
        );
        assert_eq!(
            RefundReason::from_wire("something_new"),
            RefundReason::Unknown("something_new".into())
        );
        assert!(!RefundReason::Unknown("x".into()).is_requestable());
        assert!(RefundReason::Duplicate.is_requestable());
    }

    #[test]
    fn deleted_customers_map_to_none() {
        let c: WireCustomer =
            serde_json::from_str(r#"{"id":"cus_1","object":"customer","deleted":true}"#).unwrap();
        assert!(c.into_model().unwrap().is_none());
    }
}
