//! paywarden's own payment model: what connectors return and what tools answer with.
//!
//! Tool results keep OPP's response shape (`id`, `referencedId`, `paymentType`, `amount` as a
//! decimal string, `currency`, `result{code,description}`, `timestamp`, ...) and add what a
//! model needs to act safely: `amountMinor` (integer minor units), `resultFamily` and
//! `resultCategory` (OPP's documented result-code groups), and `sandbox`.

use chrono::{DateTime, Utc};
use paywarden_domain::{Money, PaymentType, ResultCategory, ResultCode, ResultFamily};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// An OPP result: code, OPP's description and the code's family.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResultInfo {
    /// OPP result code, `ddd.ddd.ddd` (e.g. `000.100.110`).
    pub code: String,
    /// OPP's description of the code.
    pub description: String,
}

impl ResultInfo {
    /// Builds a result from OPP's `result.code` and `result.description`.
    pub fn new(code: &str, description: &str) -> Self {
        Self {
            code: code.to_string(),
            description: description.to_string(),
        }
    }

    /// The code's family per OPP's documented patterns (`Unknown` for a malformed code).
    pub fn family(&self) -> ResultFamily {
        ResultCode::parse(&self.code)
            .map(|c| c.family())
            .unwrap_or(ResultFamily::Unknown)
    }

    /// The code's coarse category (success, pending, rejected by bank/validation, errors).
    pub fn category(&self) -> ResultCategory {
        self.family().category()
    }

    /// Whether the code is in OPP's successful families (including "manual review").
    pub fn is_success(&self) -> bool {
        ResultCode::parse(&self.code)
            .map(|c| c.is_success())
            .unwrap_or(false)
    }

    /// Whether the code is in one of OPP's pending groups (OPP result codes: `000.200`
    /// "transaction pending", `800.400.5` and `100.400.500` "waiting for confirmation/non-instant
    /// payment"; [`ResultCategory::Pending`]): accepted, its outcome comes later.
    pub fn is_pending(&self) -> bool {
        self.category() == ResultCategory::Pending
    }
}

/// One entry of OPP's `result.parameterErrors`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ParameterError {
    /// The parameter OPP refused, e.g. `amount`.
    pub name: String,
    /// The value sent, as OPP echoes it.
    pub value: Option<String>,
    /// OPP's explanation.
    pub message: String,
}

/// Masked card data as OPP returns it (never a full card number).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CardSummary {
    /// First six digits.
    pub bin: Option<String>,
    /// Last four digits.
    pub last4_digits: Option<String>,
    /// Card holder name.
    pub holder: Option<String>,
    /// Expiry month, `MM`.
    pub expiry_month: Option<String>,
    /// Expiry year, `YYYY`.
    pub expiry_year: Option<String>,
}

/// One OPP transaction, mapped from OPP's payment object.
#[derive(Debug, Clone, PartialEq)]
pub struct Transaction {
    /// OPP's transaction id.
    pub id: String,
    /// The transaction this one references (back-office operations).
    pub referenced_id: Option<String>,
    /// OPP payment type.
    pub payment_type: PaymentType,
    /// Amount with its currency, in minor units.
    pub amount: Money,
    /// OPP's result.
    pub result: ResultInfo,
    /// When OPP processed it (UTC).
    pub timestamp: Option<DateTime<Utc>>,
    /// The merchant's own reference.
    pub merchant_transaction_id: Option<String>,
    /// Statement descriptor.
    pub descriptor: Option<String>,
    /// Brand, e.g. `VISA`.
    pub payment_brand: Option<String>,
    /// Masked card data.
    pub card: Option<CardSummary>,
    /// OPP's request id (`ndc`), recorded in the audit log.
    pub ndc: Option<String>,
    /// `customParameters` as OPP echoes them (name → value); paywarden's own reference of an
    /// idempotency key travels as [`crate::toolsets::opp::REFERENCE_PARAMETER`].
    pub custom_parameters: std::collections::BTreeMap<String, String>,
}

/// A transaction as tools return it: OPP's response shape plus paywarden's additions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TransactionView {
    /// OPP transaction id.
    pub id: String,
    /// The referenced transaction's id, for back-office operations.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub referenced_id: Option<String>,
    /// OPP payment type: PA, DB, CP, RV, RF, RB, CB or CR.
    pub payment_type: String,
    /// Amount as OPP writes it: a decimal string with the currency's number of decimals.
    pub amount: String,
    /// Amount in integer minor units of `currency` (e.g. cents).
    pub amount_minor: i64,
    /// ISO 4217 currency code.
    pub currency: String,
    /// OPP's result code and description.
    pub result: ResultInfo,
    /// The result code's family, from OPP's documented code patterns.
    pub result_family: String,
    /// The family's category: success, success_manual_review, pending, rejected_by_bank,
    /// rejected_by_validation, communication_error, system_error or unknown.
    pub result_category: String,
    /// Processing time, `YYYY-MM-DD HH:MM:SS+0000` (UTC), as OPP writes it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<String>,
    /// The merchant's own reference.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub merchant_transaction_id: Option<String>,
    /// Statement descriptor.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub descriptor: Option<String>,
    /// Payment brand, e.g. VISA.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payment_brand: Option<String>,
    /// Masked card data.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub card: Option<CardSummary>,
    /// OPP's request id for this transaction.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ndc: Option<String>,
}

impl Transaction {
    /// The tool-facing view of this transaction.
    pub fn view(&self) -> TransactionView {
        TransactionView {
            id: self.id.clone(),
            referenced_id: self.referenced_id.clone(),
            payment_type: self.payment_type.code().to_string(),
            amount: self.amount.to_decimal_string(),
            amount_minor: self.amount.minor_units(),
            currency: self.amount.currency().code().to_string(),
            result: self.result.clone(),
            result_family: serde_label(&self.result.family()),
            result_category: serde_label(&self.result.category()),
            timestamp: self
                .timestamp
                .map(|t| t.format("%Y-%m-%d %H:%M:%S+0000").to_string()),
            merchant_transaction_id: self.merchant_transaction_id.clone(),
            descriptor: self.descriptor.clone(),
            payment_brand: self.payment_brand.clone(),
            card: self.card.clone(),
            ndc: self.ndc.clone(),
        }
    }

    /// The state-machine record of this transaction. A back-office operation in OPP's pending
    /// groups (`000.200`, `800.400.5`, `100.400.500`) counts as if it succeeded: it still may,
    /// so what it would move is held (a refund pending at OPP is not refunded a second time
    /// meanwhile); an initial payment counts only once it succeeded.
    pub fn ledger_record(&self) -> paywarden_domain::TxRecord {
        let pending = self.result.is_pending();
        paywarden_domain::TxRecord {
            id: self.id.clone(),
            payment_type: self.payment_type,
            amount: self.amount,
            referenced_id: self.referenced_id.clone(),
            succeeded: self.result.is_success() || (pending && self.referenced_id.is_some()),
        }
    }
}

/// The serde string of a unit enum value (e.g. `"success"`), for schema-free domain enums.
pub(crate) fn serde_label<T: Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => s,
        _ => String::from("unknown"),
    }
}
