//! The ifthenpay toolset's operations on the pipeline: seven payment-request creations
//! (Multibanco, MB WAY, Payshop, card, PinPay, Cofidis Pay, PIX), the MB WAY status read, the
//! payments list, and the callbacks ifthenpay sends when a shopper pays.
//!
//! Each tool takes the seed's snake_case arguments; amounts are JSON numbers in EUR (BRL for
//! PIX) parsed exactly into integer minor units (the number's shortest decimal text, never
//! float arithmetic). Creations are money-moving calls for the safety layer: they pass the
//! policy (`toolset = "ifthenpay"`), are refused in read-only mode, and run under an idempotency
//! key derived from the tool, the caller's entity and the order id, so a retried creation
//! returns the first reference instead of creating a second one.
//!
//! Tenants: every request paywarden records belongs to the entity that created it (an
//! authenticated entity, or `key:<id>` for an anonymous caller passing a key of its own, never
//! mixing with an entity). With keys the server holds (`[ifthenpay]`, or an entity's own
//! `[entities.ifthenpay]`), `mbway_check_status` answers only for the caller's own requests and
//! `payments_list` shows only the payments of the caller's own requests, although ifthenpay's
//! backoffice returns the whole merchant account. A caller that passes its own key gets what
//! ifthenpay answers for that key, as in the seed. Results are the seed's output objects, as
//! `structuredContent` and as the JSON text of `content[0]`; a key ifthenpay refuses is the tool
//! error `Invalid key or API error: ...`. Keys never reach the audit log, a result or an error.

use std::collections::HashMap;

use chrono::{NaiveDate, NaiveDateTime, Utc};
use paywarden_domain::{Currency, Money};
use schemars::JsonSchema;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{AuditFacts, Caller, Pipeline, ServiceError, Settlement, ToolOutcome};
use crate::{
    config::IfthenpayConfig,
    connectors::ifthenpay::{IfthenpayClient, IfthenpayError, PaymentsQuery},
    policy::{Decision, PolicyInput},
    store::{IfthenpayCallback, NewIfthenpayRequest},
};

/// The toolset's name in configuration, policy and the audit log.
pub const TOOLSET: &str = "ifthenpay";

/// The seed's nine tools.
pub const TOOLS: [&str; 9] = [
    "multibanco_create_reference",
    "mbway_request_payment",
    "mbway_check_status",
    "payshop_create_reference",
    "creditcard_create_payment",
    "pinpay_create_payment",
    "cofidis_create_payment",
    "pix_create_payment",
    "payments_list",
];

/// The tools that create a payment request (money-moving for the safety layer: hidden and
/// refused in read-only mode, subject to policy and idempotency).
pub const CREATION_TOOLS: [&str; 7] = [
    "multibanco_create_reference",
    "mbway_request_payment",
    "payshop_create_reference",
    "creditcard_create_payment",
    "pinpay_create_payment",
    "cofidis_create_payment",
    "pix_create_payment",
];

/// The largest amount a tool accepts: 999,999.99 (Multibanco's eight-digit amount field).
const MAX_AMOUNT_MINOR: i64 = 99_999_999;

fn is_false(b: &bool) -> bool {
    !*b
}

// ---------------------------------------------------------------------------------------------
// Parameters (the seed's input tables)

/// `multibanco_create_reference` arguments.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MultibancoParams {
    /// ifthenpay Multibanco key. May be omitted when paywarden holds one in its configuration
    /// (then authenticate with X-Entity-Id / X-Token).
    pub mb_key: Option<String>,
    /// Unique order identifier (1-25 characters).
    pub order_id: String,
    /// Amount in EUR (e.g. 10.50): above 0, at most two decimals.
    pub amount: serde_json::Number,
    /// Days until the reference expires (0-31); omit for no expiry.
    pub expiry_days: Option<i64>,
}

/// `mbway_request_payment` arguments.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MbwayRequestParams {
    /// ifthenpay MB WAY key (may be omitted when configured on the server).
    pub mbway_key: Option<String>,
    /// Unique order identifier (1-15 characters).
    pub order_id: String,
    /// Amount in EUR (e.g. 10.50): above 0, at most two decimals.
    pub amount: serde_json::Number,
    /// Phone number in format 351#912345678 (country code#number).
    pub phone: String,
    /// Description shown in the MB WAY app (at most 100 characters).
    pub description: Option<String>,
}

/// `mbway_check_status` arguments.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MbwayStatusParams {
    /// ifthenpay MB WAY key (may be omitted when configured on the server).
    pub mbway_key: Option<String>,
    /// Request ID returned by mbway_request_payment.
    pub request_id: String,
}

/// `payshop_create_reference` arguments.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PayshopParams {
    /// ifthenpay Payshop key (may be omitted when configured on the server).
    pub payshop_key: Option<String>,
    /// Unique order identifier (max 25 chars).
    pub order_id: String,
    /// Amount in EUR (e.g. 10.50).
    pub amount: serde_json::Number,
    /// Expiry date in YYYYMMDD format (today or later); omit for no expiry.
    pub expiry_date: Option<String>,
}

/// `creditcard_create_payment` arguments.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreditCardParams {
    /// ifthenpay Credit Card key (may be omitted when configured on the server).
    pub ccard_key: Option<String>,
    /// Unique order identifier (max 15 chars).
    pub order_id: String,
    /// Amount in EUR.
    pub amount: serde_json::Number,
    /// URL after successful payment (http or https).
    pub success_url: String,
    /// URL on payment failure.
    pub error_url: String,
    /// URL if the customer cancels.
    pub cancel_url: String,
    /// Checkout language: "pt" or "en"; default "pt".
    pub language: Option<String>,
}

/// `pinpay_create_payment` arguments.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PinpayParams {
    /// ifthenpay Gateway key (may be omitted when configured on the server).
    pub gateway_key: Option<String>,
    /// Unique order identifier (max 15 chars).
    pub order_id: String,
    /// Amount (EUR, or BRL for PIX).
    pub amount: serde_json::Number,
    /// Semicolon-separated methods in METHOD|KEY format: MB, MBWAY, PAYSHOP, CCARD, COFIDIS,
    /// PIX, GOOGLE, APPLE (e.g. "MB|AAA-000000;CCARD|BBB-000000").
    pub accounts: Option<String>,
    /// Pre-selects a method: 1=MB, 2=MBWAY, 3=Payshop, 4=Card, 7=Cofidis, 8=PIX. Omit when
    /// multiple methods.
    pub selected_method: Option<String>,
    /// Single-use payment: "true" — link expires after one use.
    pub otp: Option<String>,
    /// Link expiry date in YYYYMMDD format.
    pub expiry_date: Option<String>,
    /// Description on the payment page (max 200 chars).
    pub description: Option<String>,
    /// Language: "pt", "en", "es", "fr".
    pub lang: Option<String>,
    /// URL after successful payment.
    pub success_url: Option<String>,
    /// URL on payment failure.
    pub error_url: Option<String>,
    /// URL if the customer cancels.
    pub cancel_url: Option<String>,
    /// URL for the close button on the payment page.
    pub btn_close_url: Option<String>,
    /// Label for the close button (max 50 chars).
    pub btn_close_label: Option<String>,
}

/// `cofidis_create_payment` arguments.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CofidisParams {
    /// ifthenpay Cofidis Pay key (may be omitted when configured on the server).
    pub cofidis_key: Option<String>,
    /// Unique order identifier (max 15 chars).
    pub order_id: String,
    /// Amount in EUR (subject to Cofidis limits).
    pub amount: serde_json::Number,
    /// Return URL; the API appends &Success=True on approval.
    pub return_url: String,
    /// Payment description or reference (max 200 chars).
    pub description: Option<String>,
    /// Customer full name.
    pub customer_name: Option<String>,
    /// Customer email.
    pub customer_email: Option<String>,
    /// Phone with country code (e.g. +351256245560).
    pub customer_phone: Option<String>,
}

/// `pix_create_payment` arguments.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PixParams {
    /// ifthenpay PIX key (may be omitted when configured on the server).
    pub pix_key: Option<String>,
    /// Unique order identifier (max 25 chars).
    pub order_id: String,
    /// Amount in BRL (e.g. 50.00).
    pub amount: serde_json::Number,
    /// Return URL after payment.
    pub redirect_url: String,
    /// Customer full name (max 150 chars).
    pub customer_name: String,
    /// CPF — 11 digits only, with valid check digits (e.g. 74026594025).
    pub customer_cpf: String,
    /// Customer email.
    pub customer_email: String,
    /// Phone with country code (e.g. +5585912345678).
    pub customer_phone: String,
    /// Description (max 200 chars).
    pub description: Option<String>,
    /// Address (max 250 chars).
    pub customer_address: Option<String>,
    /// City (max 50 chars).
    pub customer_city: Option<String>,
    /// State (e.g. CE, SP).
    pub customer_state: Option<String>,
    /// Postal code (max 20 chars).
    pub customer_zip_code: Option<String>,
}

/// `payments_list` arguments.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PaymentsListParams {
    /// ifthenpay Backoffice key (provided in your contract; may be omitted when configured on
    /// the server).
    pub bo_key: Option<String>,
    /// Method filter: MB, MBWAY, PAYSHOP, CCARD, COFIDIS, GOOGLE, APPLE, PIX, or entity number
    /// (5 digits). Omit for all.
    pub entity: Option<String>,
    /// Method key or sub-entity.
    pub sub_entity: Option<String>,
    /// Filter by order ID.
    pub order_id: Option<String>,
    /// Filter by reference.
    pub reference: Option<String>,
    /// Filter by request ID.
    pub request_id: Option<String>,
    /// Filter by exact amount (e.g. "25.00").
    pub amount: Option<String>,
    /// Start date: dd-MM-yyyy HH:mm:ss.
    pub date_start: Option<String>,
    /// End date: dd-MM-yyyy HH:mm:ss.
    pub date_end: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// Outputs (the seed's output tables)

/// `multibanco_create_reference` result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct MultibancoOutput {
    /// Multibanco entity (5 digits).
    pub entity: String,
    /// Payment reference (9 digits).
    pub reference: String,
    /// Payment amount, e.g. "25.00".
    pub amount: String,
    /// Expiry date (YYYYMMDD) or null.
    pub expiry_date: Option<String>,
    /// Unique request identifier.
    pub request_id: String,
    /// Present and true when paywarden's offline emulator answered (no real money).
    #[serde(default, skip_serializing_if = "is_false")]
    pub sandbox: bool,
}

/// `mbway_request_payment` result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct MbwayRequestOutput {
    /// Token for status polling via mbway_check_status.
    pub request_id: String,
    /// Initial status — always "pending".
    pub status: String,
    /// Status message.
    pub message: String,
    /// True when the offline emulator answered.
    #[serde(default, skip_serializing_if = "is_false")]
    pub sandbox: bool,
}

/// `mbway_check_status` result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct MbwayStatusOutput {
    /// paid | rejected | expired | declined | pending | unknown.
    pub status: String,
    /// Raw API code: 000=paid, 020=rejected, 101=expired, 122=cancelled.
    pub status_code: String,
    /// Status message.
    pub message: String,
    /// Creation timestamp ("YYYY-MM-DD HH:MM:SS").
    pub created_at: Option<String>,
    /// Last update timestamp.
    pub updated_at: Option<String>,
    /// True when the offline emulator answered.
    #[serde(default, skip_serializing_if = "is_false")]
    pub sandbox: bool,
}

/// `payshop_create_reference` result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PayshopOutput {
    /// Payshop reference (13 digits).
    pub reference: String,
    /// Unique request identifier.
    pub request_id: String,
    /// Payment amount.
    pub amount: String,
    /// True when the offline emulator answered.
    #[serde(default, skip_serializing_if = "is_false")]
    pub sandbox: bool,
}

/// `creditcard_create_payment` and `cofidis_create_payment` result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CheckoutOutput {
    /// Hosted checkout URL.
    pub payment_url: String,
    /// Unique request identifier.
    pub request_id: String,
    /// Payment amount.
    pub amount: String,
    /// True when the offline emulator answered.
    #[serde(default, skip_serializing_if = "is_false")]
    pub sandbox: bool,
}

/// `pinpay_create_payment` result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PinpayOutput {
    /// Payment URL to share with the customer.
    pub redirect_url: String,
    /// Direct pinpay.pt URL.
    pub pinpay_url: Option<String>,
    /// PIN code to access the checkout.
    pub pin_code: Option<String>,
    /// Payment amount.
    pub amount: String,
    /// True when the offline emulator answered.
    #[serde(default, skip_serializing_if = "is_false")]
    pub sandbox: bool,
}

/// `pix_create_payment` result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PixOutput {
    /// Unique request identifier.
    pub request_id: String,
    /// Payment URL.
    pub payment_url: String,
    /// PIX QR code value.
    pub qr_code_value: Option<String>,
    /// Payment amount.
    pub amount: String,
    /// True when the offline emulator answered.
    #[serde(default, skip_serializing_if = "is_false")]
    pub sandbox: bool,
}

/// One completed payment in `payments_list`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PaymentView {
    /// The order id.
    pub order_id: String,
    /// Amount paid, e.g. "25.00".
    pub amount: String,
    /// Always "paid" (the list holds completed payments).
    pub status: String,
    /// ifthenpay's entity: the method (MB, MBWAY, CCARD, ...) or the 5-digit Multibanco entity.
    pub entity: String,
    /// The payment method: MB, MBWAY, PAYSHOP, CCARD, COFIDIS, GOOGLE, APPLE or PIX.
    pub method: String,
    /// Reference (Multibanco, Payshop; the order id for other methods).
    pub reference: Option<String>,
    /// Request id.
    pub request_id: Option<String>,
    /// When it was paid ("dd-MM-yyyy HH:mm:ss", as ifthenpay reports it).
    pub payment_date: Option<String>,
}

/// `payments_list` result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PaymentsListOutput {
    /// Number of records returned.
    pub count: u64,
    /// List of payment objects, newest first.
    pub payments: Vec<PaymentView>,
    /// True when the offline emulator answered.
    #[serde(default, skip_serializing_if = "is_false")]
    pub sandbox: bool,
}

// ---------------------------------------------------------------------------------------------
// Callers

/// Who is calling an ifthenpay tool.
#[derive(Debug, Clone)]
pub enum Identity {
    /// No credentials (the compat endpoint without headers): keys must come as arguments.
    Anonymous {
        /// The MCP client's name, when known.
        client_name: Option<String>,
    },
    /// `X-Entity-Id` / `X-Token` headers, checked against the allowed entities before a
    /// configured key is used.
    Claimed(Caller),
    /// The local transport (stdio): one local user, trusted.
    Local(Caller),
}

/// Which configured key a tool uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyKind {
    Mb,
    Mbway,
    Payshop,
    Ccard,
    Gateway,
    Cofidis,
    Pix,
    Backoffice,
}

impl KeyKind {
    fn argument(self) -> &'static str {
        match self {
            KeyKind::Mb => "mb_key",
            KeyKind::Mbway => "mbway_key",
            KeyKind::Payshop => "payshop_key",
            KeyKind::Ccard => "ccard_key",
            KeyKind::Gateway => "gateway_key",
            KeyKind::Cofidis => "cofidis_key",
            KeyKind::Pix => "pix_key",
            KeyKind::Backoffice => "bo_key",
        }
    }
}

/// An entity's own ifthenpay keys (`[entities.ifthenpay]` in the configuration): used instead
/// of the global `[ifthenpay]` keys for that entity, all of them (a key missing here is not
/// taken from `[ifthenpay]`). `anti_phishing_key` is what ifthenpay puts in callbacks about
/// this entity's account. Never serialised, logged or returned.
#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntityKeys {
    /// Multibanco key (`mb_key`).
    pub mb_key: Option<SecretString>,
    /// MB WAY key (`mbway_key`).
    pub mbway_key: Option<SecretString>,
    /// Payshop key (`payshop_key`).
    pub payshop_key: Option<SecretString>,
    /// Credit card key (`ccard_key`).
    pub ccard_key: Option<SecretString>,
    /// Gateway key for PinPay (`gateway_key`).
    pub gateway_key: Option<SecretString>,
    /// Cofidis Pay key (`cofidis_key`).
    pub cofidis_key: Option<SecretString>,
    /// PIX key (`pix_key`).
    pub pix_key: Option<SecretString>,
    /// Backoffice key (`bo_key`).
    pub bo_key: Option<SecretString>,
    /// The anti-phishing key of callbacks about this entity's requests (default: the global
    /// `[ifthenpay] anti_phishing_key`).
    pub anti_phishing_key: Option<SecretString>,
}

impl std::fmt::Debug for EntityKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EntityKeys([redacted])")
    }
}

impl EntityKeys {
    fn keys(&self) -> Keys {
        Keys {
            mb: self.mb_key.clone(),
            mbway: self.mbway_key.clone(),
            payshop: self.payshop_key.clone(),
            ccard: self.ccard_key.clone(),
            gateway: self.gateway_key.clone(),
            cofidis: self.cofidis_key.clone(),
            pix: self.pix_key.clone(),
            backoffice: self.bo_key.clone(),
        }
    }
}

/// A set of keys paywarden holds (`[ifthenpay]`, or an entity's own; the emulator's demo keys
/// are NOT implied: they are public and meant to be passed as arguments).
#[derive(Clone, Default)]
struct Keys {
    mb: Option<SecretString>,
    mbway: Option<SecretString>,
    payshop: Option<SecretString>,
    ccard: Option<SecretString>,
    gateway: Option<SecretString>,
    cofidis: Option<SecretString>,
    pix: Option<SecretString>,
    backoffice: Option<SecretString>,
}

impl Keys {
    fn get(&self, kind: KeyKind) -> Option<&SecretString> {
        match kind {
            KeyKind::Mb => self.mb.as_ref(),
            KeyKind::Mbway => self.mbway.as_ref(),
            KeyKind::Payshop => self.payshop.as_ref(),
            KeyKind::Ccard => self.ccard.as_ref(),
            KeyKind::Gateway => self.gateway.as_ref(),
            KeyKind::Cofidis => self.cofidis.as_ref(),
            KeyKind::Pix => self.pix.as_ref(),
            KeyKind::Backoffice => self.backoffice.as_ref(),
        }
        .filter(|k| !k.expose_secret().trim().is_empty())
    }
}

/// A key in use and where it came from.
struct ResolvedKey {
    key: SecretString,
    /// The key's keyed id ([`crate::audit_anchor::KeyIds`]): what records, audit entries
    /// (`key:<id>`) and idempotency keys carry.
    id: String,
    /// The entity the call acts for.
    entity: String,
    /// Whether paywarden holds the key (configuration) rather than the caller passing it: reads
    /// are then limited to the entity's own requests.
    held: bool,
}

// ---------------------------------------------------------------------------------------------
// Validation

fn invalid(message: impl Into<String>) -> ServiceError {
    ServiceError::InvalidArguments(message.into())
}

fn check_text(field: &str, value: &str, max: usize) -> Result<(), ServiceError> {
    if value.trim().is_empty() {
        return Err(invalid(format!("{field} must not be empty")));
    }
    if value.chars().count() > max {
        return Err(invalid(format!(
            "{field} is {} characters long; at most {max} are allowed",
            value.chars().count()
        )));
    }
    if value.chars().any(char::is_control) {
        return Err(invalid(format!(
            "{field} must not contain control characters"
        )));
    }
    Ok(())
}

fn check_optional(field: &str, value: Option<&str>, max: usize) -> Result<(), ServiceError> {
    value.map_or(Ok(()), |v| check_text(field, v, max))
}

/// Parses an amount given as a JSON number into exact minor units of `currency`: the number's
/// shortest round-trip decimal text (25.5 → "25.5") is parsed as a decimal, so no float
/// arithmetic ever touches it. Above zero, at most two decimals, at most 999,999.99.
pub fn parse_amount(
    number: &serde_json::Number,
    currency: Currency,
) -> Result<Money, ServiceError> {
    let text = number.to_string();
    if text.contains(['e', 'E']) {
        return Err(invalid(format!(
            "amount {text} must be a plain decimal number such as 10.50"
        )));
    }
    let money = Money::parse(&text, currency).map_err(|_| {
        invalid(format!(
            "amount {text} is not a valid {} amount: use a number above 0 with at most two decimals, e.g. 10.50",
            currency.code()
        ))
    })?;
    if money.minor_units() <= 0 {
        return Err(invalid(format!("amount {text} must be greater than 0")));
    }
    if money.minor_units() > MAX_AMOUNT_MINOR {
        return Err(invalid(format!(
            "amount {text} is above the maximum of 999999.99"
        )));
    }
    Ok(money)
}

/// `351#912345678`: a 1-3 digit country code, `#`, 6-15 digits; Portuguese (351) numbers are
/// 9 digits starting with 9.
pub fn check_mbway_phone(phone: &str) -> Result<(), ServiceError> {
    // Messages never quote the number (personal data).
    let error = || invalid("phone is not in the format 351#912345678 (country code#number)");
    let (cc, number) = phone.split_once('#').ok_or_else(error)?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(cc) || !digits(number) || cc.len() > 3 || !(6..=15).contains(&number.len()) {
        return Err(error());
    }
    if cc == "351" && (number.len() != 9 || !number.starts_with('9')) {
        return Err(invalid(
            "phone: a Portuguese MB WAY number is 9 digits starting with 9, e.g. 351#912345678",
        ));
    }
    Ok(())
}

/// A Brazilian CPF: 11 digits (digits only), not all equal, with both check digits right.
/// Messages never quote the CPF (personal data).
pub fn check_cpf(cpf: &str) -> Result<(), ServiceError> {
    let digits: Vec<u32> = cpf.chars().filter_map(|c| c.to_digit(10)).collect();
    if digits.len() != 11 || cpf.len() != 11 {
        return Err(invalid(
            "customer_cpf must be exactly 11 digits, digits only (e.g. 74026594025)",
        ));
    }
    if digits.iter().all(|d| *d == digits[0]) {
        return Err(invalid("customer_cpf is not a valid CPF"));
    }
    let check = |n: usize| {
        let sum: u32 = digits[..n]
            .iter()
            .enumerate()
            .map(|(i, d)| d * (n as u32 + 1 - i as u32))
            .sum();
        (sum * 10 % 11) % 10
    };
    if check(9) != digits[9] || check(10) != digits[10] {
        return Err(invalid(
            "customer_cpf has invalid check digits: check the number with the customer",
        ));
    }
    Ok(())
}

fn check_url(field: &str, value: &str) -> Result<(), ServiceError> {
    match url::Url::parse(value) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {
            check_text(field, value, 500)
        }
        _ => Err(invalid(format!(
            "{field} {value:?} must be an absolute http(s) URL"
        ))),
    }
}

fn check_email(field: &str, value: &str) -> Result<(), ServiceError> {
    check_text(field, value, 250)?;
    let ok = match value.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !value.contains(char::is_whitespace)
                && !domain.contains('@')
        }
        None => false,
    };
    if ok {
        Ok(())
    } else {
        Err(invalid(format!(
            "{field} is not an e-mail address (one @, then a domain with a dot)"
        )))
    }
}

/// `+` and 8-15 digits (e.g. +5585912345678, +351256245560).
fn check_intl_phone(field: &str, value: &str) -> Result<(), ServiceError> {
    let ok = value
        .strip_prefix('+')
        .is_some_and(|d| (8..=15).contains(&d.len()) && d.bytes().all(|b| b.is_ascii_digit()));
    if ok {
        Ok(())
    } else {
        Err(invalid(format!(
            "{field} must be a phone number with country code, e.g. +351256245560"
        )))
    }
}

/// `YYYYMMDD`, a real date, today (UTC) or later.
fn parse_yyyymmdd(field: &str, value: &str) -> Result<NaiveDate, ServiceError> {
    let date = (value.len() == 8 && value.bytes().all(|b| b.is_ascii_digit()))
        .then(|| NaiveDate::parse_from_str(value, "%Y%m%d").ok())
        .flatten()
        .ok_or_else(|| {
            invalid(format!(
                "{field} {value:?} is not a date in YYYYMMDD format (e.g. 20301231)"
            ))
        })?;
    if date < Utc::now().date_naive() {
        return Err(invalid(format!("{field} {value} is in the past")));
    }
    Ok(date)
}

/// `dd-MM-yyyy HH:mm:ss`.
fn parse_list_date(field: &str, value: &str) -> Result<NaiveDateTime, ServiceError> {
    NaiveDateTime::parse_from_str(value, "%d-%m-%Y %H:%M:%S")
        .ok()
        .filter(|_| value.len() == 19)
        .ok_or_else(|| {
            invalid(format!(
                "{field} {value:?} is not a date in dd-MM-yyyy HH:mm:ss format (e.g. 01-06-2026 00:00:00)"
            ))
        })
}

/// The methods PinPay accepts in `accounts`, with the `selected_method` code each answers to.
const PINPAY_METHODS: [(&str, &str); 8] = [
    ("MB", "1"),
    ("MBWAY", "2"),
    ("PAYSHOP", "3"),
    ("CCARD", "4"),
    ("COFIDIS", "7"),
    ("PIX", "8"),
    ("GOOGLE", "4"),
    ("APPLE", "4"),
];

/// Checks PinPay `accounts` (`METHOD|KEY;...`, or ifthenpay's offline Multibanco
/// `ENTITY|SUBENTITY` as 5 and 3 digits) and returns the `selected_method` codes it covers.
pub fn check_accounts(accounts: &str) -> Result<Vec<&'static str>, ServiceError> {
    let mut codes = Vec::new();
    let mut seen = Vec::new();
    let entries: Vec<&str> = accounts.split(';').filter(|e| !e.is_empty()).collect();
    if entries.is_empty() {
        return Err(invalid(
            "accounts is empty: give methods as METHOD|KEY separated by ';', e.g. \"MB|AAA-000000;CCARD|BBB-000000\"",
        ));
    }
    for (n, entry) in (1..).zip(entries) {
        // Messages name an entry by its position, and its method only when it is one: what
        // stands in a method's or a key's place may be a key.
        let (method, key) = entry.split_once('|').ok_or_else(|| {
            invalid(format!(
                "accounts entry {n} is not METHOD|KEY (e.g. CCARD|BBB-000000)"
            ))
        })?;
        let mb_entity = method.len() == 5 && method.bytes().all(|b| b.is_ascii_digit());
        let known = PINPAY_METHODS
            .iter()
            .find(|(m, _)| *m == method)
            .map(|(_, c)| *c);
        let code = match known {
            Some(code) => code,
            None if mb_entity => "1",
            None => {
                return Err(invalid(format!(
                    "accounts entry {n}: unknown method; use MB, MBWAY, PAYSHOP, CCARD, COFIDIS, PIX, GOOGLE or APPLE (or a 5-digit Multibanco entity)"
                )))
            }
        };
        let key_ok = !key.is_empty()
            && key.len() <= 50
            && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if !key_ok {
            return Err(invalid(format!(
                "accounts entry {n} ({method}): the key must be letters, digits and '-'"
            )));
        }
        if mb_entity && (key.len() != 3 || !key.bytes().all(|b| b.is_ascii_digit())) {
            return Err(invalid(format!(
                "accounts entry {n} (Multibanco entity {method}): the sub-entity must be 3 digits"
            )));
        }
        if seen.contains(&method) {
            return Err(invalid(format!("accounts lists {method} twice")));
        }
        seen.push(method);
        codes.push(code);
    }
    Ok(codes)
}

fn check_choice(field: &str, value: Option<&str>, allowed: &[&str]) -> Result<(), ServiceError> {
    match value {
        Some(v) if !allowed.contains(&v) => Err(invalid(format!(
            "{field} {v:?} must be one of {}",
            allowed
                .iter()
                .map(|a| format!("\"{a}\""))
                .collect::<Vec<_>>()
                .join(", ")
        ))),
        _ => Ok(()),
    }
}

/// Methods `payments_list` can filter on.
const LIST_METHODS: [&str; 8] = [
    "MB", "MBWAY", "PAYSHOP", "CCARD", "COFIDIS", "GOOGLE", "APPLE", "PIX",
];

// ---------------------------------------------------------------------------------------------
// The service

/// A validated creation, ready for the connector.
enum Creation {
    Multibanco {
        order_id: String,
        amount: Money,
        expiry_days: Option<u32>,
    },
    Mbway {
        order_id: String,
        amount: Money,
        phone: String,
        description: Option<String>,
    },
    Payshop {
        order_id: String,
        amount: Money,
        expiry: Option<NaiveDate>,
    },
    Card {
        order_id: String,
        amount: Money,
        body: Value,
    },
    Pinpay {
        order_id: String,
        amount: Money,
        body: Value,
    },
    Cofidis {
        order_id: String,
        amount: Money,
        body: Value,
    },
    Pix {
        order_id: String,
        amount: Money,
        body: Value,
    },
}

impl Creation {
    fn order_id(&self) -> &str {
        match self {
            Creation::Multibanco { order_id, .. }
            | Creation::Mbway { order_id, .. }
            | Creation::Payshop { order_id, .. }
            | Creation::Card { order_id, .. }
            | Creation::Pinpay { order_id, .. }
            | Creation::Cofidis { order_id, .. }
            | Creation::Pix { order_id, .. } => order_id,
        }
    }

    fn amount(&self) -> Money {
        match self {
            Creation::Multibanco { amount, .. }
            | Creation::Mbway { amount, .. }
            | Creation::Payshop { amount, .. }
            | Creation::Card { amount, .. }
            | Creation::Pinpay { amount, .. }
            | Creation::Cofidis { amount, .. }
            | Creation::Pix { amount, .. } => *amount,
        }
    }

    fn method(&self) -> &'static str {
        match self {
            Creation::Multibanco { .. } => "MB",
            Creation::Mbway { .. } => "MBWAY",
            Creation::Payshop { .. } => "PAYSHOP",
            Creation::Card { .. } => "CCARD",
            Creation::Pinpay { .. } => "PINPAY",
            Creation::Cofidis { .. } => "COFIDIS",
            Creation::Pix { .. } => "PIX",
        }
    }
}

/// The ifthenpay toolset's service.
#[derive(Clone)]
pub struct IfthenpayService {
    pipeline: Pipeline,
    client: Option<IfthenpayClient>,
    keys: Keys,
    /// Entities' own key sets (`[entities.ifthenpay]`), by entity id.
    entity_keys: std::sync::Arc<HashMap<String, Keys>>,
    anti_phishing_key: Option<SecretString>,
    /// Entities' own anti-phishing keys, by entity id.
    entity_anti_phishing_keys: std::sync::Arc<HashMap<String, SecretString>>,
    entities: Vec<super::ops::KnownEntity>,
    sandbox: bool,
    key_ids: crate::audit_anchor::KeyIds,
}

impl std::fmt::Debug for IfthenpayService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IfthenpayService")
            .field(
                "base_url",
                &self.client.as_ref().map(IfthenpayClient::base_url),
            )
            .field("sandbox", &self.sandbox)
            .finish_non_exhaustive()
    }
}

impl IfthenpayService {
    /// The service over `pipeline`. `client` is `None` when neither a base URL nor the emulator
    /// is available (tools then answer a tool error saying so). `sandbox`: the emulator answers;
    /// then the demo anti-phishing key applies unless configured. `entities` may use the keys
    /// held in `config` (the configured entities, or the demo ones with the emulator).
    pub fn new(
        pipeline: Pipeline,
        client: Option<IfthenpayClient>,
        config: &IfthenpayConfig,
        sandbox: bool,
        entities: Vec<super::ops::KnownEntity>,
    ) -> Self {
        let keys = Keys {
            mb: config.mb_key.clone(),
            mbway: config.mbway_key.clone(),
            payshop: config.payshop_key.clone(),
            ccard: config.ccard_key.clone(),
            gateway: config.gateway_key.clone(),
            cofidis: config.cofidis_key.clone(),
            pix: config.pix_key.clone(),
            backoffice: config.bo_key.clone(),
        };
        let anti_phishing_key = config.anti_phishing_key.clone().or_else(|| {
            sandbox.then(|| {
                SecretString::from(paywarden_emulator::IFTHENPAY_ANTI_PHISHING_KEY.to_string())
            })
        });
        let entity_keys = entities
            .iter()
            .filter_map(|e| e.ifthenpay.as_ref().map(|k| (e.id.clone(), k.keys())))
            .collect();
        let entity_anti_phishing_keys = entities
            .iter()
            .filter_map(|e| {
                let key = e.ifthenpay.as_ref()?.anti_phishing_key.clone()?;
                Some((e.id.clone(), key))
            })
            .collect();
        Self {
            pipeline,
            client,
            keys,
            entity_keys: std::sync::Arc::new(entity_keys),
            anti_phishing_key,
            entity_anti_phishing_keys: std::sync::Arc::new(entity_anti_phishing_keys),
            entities,
            sandbox,
            key_ids: crate::audit_anchor::KeyIds::ephemeral(),
        }
    }

    /// Names provider keys by `key_ids` (HMAC-SHA-256 under the server's secret) in records,
    /// audit entries and idempotency keys. Without it, ids are keyed by a secret of this
    /// process only, and change at every start.
    #[must_use]
    pub fn with_key_ids(mut self, key_ids: crate::audit_anchor::KeyIds) -> Self {
        self.key_ids = key_ids;
        self
    }

    /// The keyed id of a provider key, as records and `key:<id>` entities carry it.
    pub fn key_id(&self, key: &str) -> String {
        self.key_ids.id(key)
    }

    /// The pipeline.
    pub fn pipeline(&self) -> &Pipeline {
        &self.pipeline
    }

    /// Whether the offline emulator answers.
    pub fn sandbox(&self) -> bool {
        self.sandbox
    }

    /// Whether paywarden holds any ifthenpay key (callers must then authenticate to use them).
    pub fn holds_keys(&self) -> bool {
        [
            KeyKind::Mb,
            KeyKind::Mbway,
            KeyKind::Payshop,
            KeyKind::Ccard,
            KeyKind::Gateway,
            KeyKind::Cofidis,
            KeyKind::Pix,
            KeyKind::Backoffice,
        ]
        .into_iter()
        .any(|k| self.held_anywhere(k))
    }

    /// Whether `[ifthenpay]` or any entity's own key set holds a key of `kind`.
    fn held_anywhere(&self, kind: KeyKind) -> bool {
        self.keys.get(kind).is_some() || self.entity_keys.values().any(|k| k.get(kind).is_some())
    }

    /// The keys `entity` may use: its own key set when it has one, else `[ifthenpay]`'s.
    fn keys_of(&self, entity: &str) -> &Keys {
        self.entity_keys.get(entity).unwrap_or(&self.keys)
    }

    /// The key argument of `tool` (`mb_key` for `multibanco_create_reference`, ...).
    pub fn key_argument(tool: &str) -> Option<&'static str> {
        let kind = match tool {
            "multibanco_create_reference" => KeyKind::Mb,
            "mbway_request_payment" | "mbway_check_status" => KeyKind::Mbway,
            "payshop_create_reference" => KeyKind::Payshop,
            "creditcard_create_payment" => KeyKind::Ccard,
            "pinpay_create_payment" => KeyKind::Gateway,
            "cofidis_create_payment" => KeyKind::Cofidis,
            "pix_create_payment" => KeyKind::Pix,
            "payments_list" => KeyKind::Backoffice,
            _ => return None,
        };
        Some(kind.argument())
    }

    /// Whether paywarden holds the key that `argument` names (so calls may omit it).
    pub fn holds_key(&self, argument: &str) -> bool {
        [
            KeyKind::Mb,
            KeyKind::Mbway,
            KeyKind::Payshop,
            KeyKind::Ccard,
            KeyKind::Gateway,
            KeyKind::Cofidis,
            KeyKind::Pix,
            KeyKind::Backoffice,
        ]
        .into_iter()
        .any(|k| k.argument() == argument && self.held_anywhere(k))
    }

    /// Whether `entity_id`/`token` is an entity allowed to use the configured keys (constant
    /// time on the token hash).
    pub fn authenticates(&self, entity_id: &str, token: &str) -> bool {
        use subtle::ConstantTimeEq;
        let hash = super::safety::token_hash(token);
        self.entities.iter().any(|e| {
            e.id == entity_id && bool::from(e.token_sha256.as_bytes().ct_eq(hash.as_bytes()))
        })
    }

    fn authenticated_entity(&self, identity: &Identity) -> Option<String> {
        match identity {
            Identity::Anonymous { .. } => None,
            Identity::Local(caller) => Some(caller.entity_id.clone()),
            Identity::Claimed(caller) => self
                .authenticates(&caller.entity_id, caller.token.expose_secret())
                .then(|| caller.entity_id.clone()),
        }
    }

    fn client_name(identity: &Identity) -> Option<String> {
        match identity {
            Identity::Anonymous { client_name } => client_name.clone(),
            Identity::Claimed(c) | Identity::Local(c) => c.client_name.clone(),
        }
    }

    /// The caller the pipeline audits and scopes by.
    fn pipeline_caller(identity: &Identity, entity: &str) -> Caller {
        Caller {
            entity_id: entity.to_string(),
            token: SecretString::from(String::new()),
            client_name: Self::client_name(identity),
        }
    }

    /// Resolves the key of a call: the argument, else the configured key for an authenticated
    /// caller (its own key set when it has one, else `[ifthenpay]`'s). A [`Refusal`] holds a
    /// tool-error outcome or an invalid-arguments error; neither quotes the key.
    fn resolve_key(
        &self,
        identity: &Identity,
        kind: KeyKind,
        argument: Option<&str>,
    ) -> Result<ResolvedKey, Refusal> {
        let authenticated = self.authenticated_entity(identity);
        if let Some(key) = argument {
            if key.trim().is_empty() || key.len() > 100 || key.chars().any(char::is_control) {
                return Err(bad(invalid(format!(
                    "{} must be the ifthenpay key (letters, digits and '-')",
                    kind.argument()
                ))));
            }
            let id = self.key_id(key);
            let entity = authenticated.unwrap_or_else(|| format!("key:{id}"));
            return Ok(ResolvedKey {
                key: SecretString::from(key.to_string()),
                id,
                entity,
                held: false,
            });
        }
        let configured = match &authenticated {
            Some(entity) => self.keys_of(entity).get(kind),
            None => self
                .keys
                .get(kind)
                .or_else(|| self.entity_keys.values().find_map(|k| k.get(kind))),
        };
        let Some(configured) = configured else {
            return Err(bad(invalid(format!(
                "{} is required: this server holds no ifthenpay {} for this caller",
                kind.argument(),
                kind.argument()
            ))));
        };
        match authenticated {
            Some(entity) => Ok(ResolvedKey {
                id: self.key_id(configured.expose_secret()),
                key: configured.clone(),
                entity,
                held: true,
            }),
            None => Err(Box::new(Ok(self.error(
                "unauthenticated",
                &format!(
                    "Authentication required: {} was omitted, and this server's own ifthenpay key may only be used by an authenticated entity. Send X-Entity-Id and X-Token headers of an allowed entity, or pass {}.",
                    kind.argument(),
                    kind.argument()
                ),
            )))),
        }
    }

    /// A tool-error outcome: the message as `content[0].text`.
    fn error(&self, kind: &str, message: &str) -> ToolOutcome {
        ToolOutcome {
            structured: json!({"error": {"kind": kind, "message": message}, "sandbox": self.sandbox}),
            is_error: true,
            text: message.to_string(),
            audit: AuditFacts {
                outcome: if kind == "denied_by_policy" {
                    "denied".into()
                } else {
                    "error".into()
                },
                ..AuditFacts::default()
            },
        }
    }

    /// A success outcome: the output as `structuredContent` and as the JSON text (fields in the
    /// seed's order).
    fn success<T: Serialize>(&self, output: &T, request_id: Option<String>) -> ToolOutcome {
        ToolOutcome {
            text: serde_json::to_string(output).unwrap_or_default(),
            structured: to_value(output),
            is_error: false,
            audit: AuditFacts {
                outcome: "ok".into(),
                provider_request_id: request_id.clone(),
                transaction_id: request_id,
                ..AuditFacts::default()
            },
        }
    }

    /// The tool error for a connector failure, and whether the call may have happened.
    fn provider_failure(&self, e: IfthenpayError) -> (ToolOutcome, Settlement) {
        match e {
            IfthenpayError::Rejected { code, message } => {
                let mut outcome = self.error(
                    "provider_rejected",
                    &format!("Invalid key or API error: {message}"),
                );
                outcome.audit.outcome = "rejected".into();
                outcome.audit.result_code = Some(code);
                (outcome, Settlement::Final)
            }
            IfthenpayError::Timeout(_) => (
                self.error(
                    "provider_timeout",
                    &format!("API error: {e}. Retry with the same arguments: paywarden will not create a second request for this order_id."),
                ),
                Settlement::Unknown,
            ),
            IfthenpayError::Unreachable { .. } => (
                self.error("provider_unreachable", &format!("API error: {e}. Nothing was created; retry later.")),
                Settlement::NotSent,
            ),
            IfthenpayError::UnexpectedResponse { .. } => (
                self.error("provider_error", &format!("API error: {e}")),
                Settlement::Final,
            ),
        }
    }

    fn unconfigured(&self) -> ToolOutcome {
        self.error(
            "not_configured",
            "API error: ifthenpay is not configured on this server (set ifthenpay.base_url, or run with the offline emulator).",
        )
    }

    /// Runs one ifthenpay tool: parse, validate, resolve the key, policy and idempotency for
    /// creations, the connector call, records, audit.
    ///
    /// # Errors
    /// [`ServiceError::InvalidArguments`] (audited) for an unknown tool or malformed arguments;
    /// [`ServiceError::Store`] when paywarden's database fails. Refusals (policy, read-only,
    /// provider) are tool-error outcomes.
    pub async fn call(
        &self,
        identity: &Identity,
        tool: &str,
        arguments: &serde_json::Map<String, Value>,
    ) -> Result<ToolOutcome, ServiceError> {
        let args = Value::Object(arguments.clone());
        let audited_refusal = |entity: String, result: Result<ToolOutcome, ServiceError>| {
            let caller = Self::pipeline_caller(identity, &entity);
            let args = args.clone();
            async move {
                self.pipeline
                    .read(&caller, TOOLSET, tool, &args, || async { result })
                    .await
            }
        };
        let fallback_entity = self
            .authenticated_entity(identity)
            .unwrap_or_else(|| "anonymous".to_string());
        let prepared = match self.prepare(identity, tool, &args) {
            Ok(p) => p,
            Err(refusal) => return audited_refusal(fallback_entity, *refusal).await,
        };
        match prepared {
            Prepared::Create(key, creation) => {
                self.create(identity, tool, &args, key, creation).await
            }
            Prepared::MbwayStatus(key, request_id) => {
                let caller = Self::pipeline_caller(identity, &key.entity);
                self.pipeline
                    .read(&caller, TOOLSET, tool, &args, || async {
                        Ok(self.mbway_status(&key, &request_id).await?)
                    })
                    .await
            }
            Prepared::List(key, query) => {
                let caller = Self::pipeline_caller(identity, &key.entity);
                self.pipeline
                    .read(&caller, TOOLSET, tool, &args, || async {
                        Ok(self.payments_list(&key, &query).await?)
                    })
                    .await
            }
        }
    }

    /// The caller under which a request of `identity` that is not one of the tools is audited:
    /// the authenticated entity, else `anonymous` (an unverified `X-Entity-Id` writes nothing
    /// into that entity's record).
    pub fn audit_caller(&self, identity: &Identity) -> Caller {
        let entity = self
            .authenticated_entity(identity)
            .unwrap_or_else(|| "anonymous".to_string());
        Self::pipeline_caller(identity, &entity)
    }

    /// Puts a call of a tool this toolset does not have (or hides, in read-only mode) on the
    /// audit record, under the caller's scope, as an error.
    ///
    /// # Errors
    /// [`ServiceError::Store`] when the audit log cannot be written.
    pub async fn audit_unknown_tool(
        &self,
        identity: &Identity,
        tool: &str,
        arguments: &Value,
    ) -> Result<(), ServiceError> {
        let caller = self.audit_caller(identity);
        let refusal = Err(invalid(format!("tool not found: {tool}")));
        match self
            .pipeline
            .read(&caller, TOOLSET, tool, arguments, || async { refusal })
            .await
        {
            Err(e @ ServiceError::Store(_)) => Err(e),
            _ => Ok(()),
        }
    }

    /// Parses and validates; resolves the key.
    fn prepare(&self, identity: &Identity, tool: &str, args: &Value) -> Result<Prepared, Refusal> {
        fn parse<T: serde::de::DeserializeOwned>(
            tool: &str,
            args: &Value,
        ) -> Result<T, ServiceError> {
            crate::mask::deserialize(args.clone()).map_err(|e| {
                invalid(format!(
                    "invalid arguments for {tool}: {e}; see the tool's inputSchema"
                ))
            })
        }
        let eur = Currency::EUR;
        match tool {
            "multibanco_create_reference" => {
                let p: MultibancoParams = parse(tool, args).map_err(bad)?;
                check_text("order_id", &p.order_id, 25).map_err(bad)?;
                let amount = parse_amount(&p.amount, eur).map_err(bad)?;
                let expiry_days = match p.expiry_days {
                    None => None,
                    Some(d) if (0..=31).contains(&d) => Some(d as u32),
                    Some(d) => {
                        return Err(bad(invalid(format!(
                            "expiry_days {d} must be between 0 and 31 (omit it for no expiry)"
                        ))))
                    }
                };
                let key = self.resolve_key(identity, KeyKind::Mb, p.mb_key.as_deref())?;
                Ok(Prepared::Create(
                    key,
                    Creation::Multibanco {
                        order_id: p.order_id,
                        amount,
                        expiry_days,
                    },
                ))
            }
            "mbway_request_payment" => {
                let p: MbwayRequestParams = parse(tool, args).map_err(bad)?;
                check_text("order_id", &p.order_id, 15).map_err(bad)?;
                let amount = parse_amount(&p.amount, eur).map_err(bad)?;
                check_mbway_phone(&p.phone).map_err(bad)?;
                check_optional("description", p.description.as_deref(), 100).map_err(bad)?;
                let key = self.resolve_key(identity, KeyKind::Mbway, p.mbway_key.as_deref())?;
                Ok(Prepared::Create(
                    key,
                    Creation::Mbway {
                        order_id: p.order_id,
                        amount,
                        phone: p.phone,
                        description: p.description,
                    },
                ))
            }
            "mbway_check_status" => {
                let p: MbwayStatusParams = parse(tool, args).map_err(bad)?;
                check_text("request_id", &p.request_id, 100).map_err(bad)?;
                let key = self.resolve_key(identity, KeyKind::Mbway, p.mbway_key.as_deref())?;
                Ok(Prepared::MbwayStatus(key, p.request_id))
            }
            "payshop_create_reference" => {
                let p: PayshopParams = parse(tool, args).map_err(bad)?;
                check_text("order_id", &p.order_id, 25).map_err(bad)?;
                let amount = parse_amount(&p.amount, eur).map_err(bad)?;
                let expiry = p
                    .expiry_date
                    .as_deref()
                    .map(|d| parse_yyyymmdd("expiry_date", d))
                    .transpose()
                    .map_err(bad)?;
                let key = self.resolve_key(identity, KeyKind::Payshop, p.payshop_key.as_deref())?;
                Ok(Prepared::Create(
                    key,
                    Creation::Payshop {
                        order_id: p.order_id,
                        amount,
                        expiry,
                    },
                ))
            }
            "creditcard_create_payment" => {
                let p: CreditCardParams = parse(tool, args).map_err(bad)?;
                check_text("order_id", &p.order_id, 15).map_err(bad)?;
                let amount = parse_amount(&p.amount, eur).map_err(bad)?;
                check_url("success_url", &p.success_url).map_err(bad)?;
                check_url("error_url", &p.error_url).map_err(bad)?;
                check_url("cancel_url", &p.cancel_url).map_err(bad)?;
                check_choice("language", p.language.as_deref(), &["pt", "en"]).map_err(bad)?;
                let key = self.resolve_key(identity, KeyKind::Ccard, p.ccard_key.as_deref())?;
                let body = json!({
                    "orderId": p.order_id,
                    "amount": amount.to_decimal_string(),
                    "successUrl": p.success_url,
                    "errorUrl": p.error_url,
                    "cancelUrl": p.cancel_url,
                    "language": p.language.unwrap_or_else(|| "pt".into()),
                });
                Ok(Prepared::Create(
                    key,
                    Creation::Card {
                        order_id: p.order_id,
                        amount,
                        body,
                    },
                ))
            }
            "pinpay_create_payment" => {
                let p: PinpayParams = parse(tool, args).map_err(bad)?;
                check_text("order_id", &p.order_id, 15).map_err(bad)?;
                let covered = p
                    .accounts
                    .as_deref()
                    .map(check_accounts)
                    .transpose()
                    .map_err(bad)?;
                check_choice(
                    "selected_method",
                    p.selected_method.as_deref(),
                    &["1", "2", "3", "4", "7", "8"],
                )
                .map_err(bad)?;
                if let (Some(selected), Some(covered)) = (&p.selected_method, &covered) {
                    if !covered.contains(&selected.as_str()) {
                        return Err(bad(invalid(format!(
                            "selected_method {selected:?} has no matching entry in accounts (1=MB, 2=MBWAY, 3=PAYSHOP, 4=CCARD/GOOGLE/APPLE, 7=COFIDIS, 8=PIX)"
                        ))));
                    }
                }
                check_choice("otp", p.otp.as_deref(), &["true", "false"]).map_err(bad)?;
                check_choice("lang", p.lang.as_deref(), &["pt", "en", "es", "fr"]).map_err(bad)?;
                check_optional("description", p.description.as_deref(), 200).map_err(bad)?;
                check_optional("btn_close_label", p.btn_close_label.as_deref(), 50).map_err(bad)?;
                for (field, url) in [
                    ("success_url", &p.success_url),
                    ("error_url", &p.error_url),
                    ("cancel_url", &p.cancel_url),
                    ("btn_close_url", &p.btn_close_url),
                ] {
                    if let Some(u) = url {
                        check_url(field, u).map_err(bad)?;
                    }
                }
                let expiry = p
                    .expiry_date
                    .as_deref()
                    .map(|d| parse_yyyymmdd("expiry_date", d))
                    .transpose()
                    .map_err(bad)?;
                // PIX-only links are in BRL; every other method charges EUR.
                let pix_only = p.selected_method.as_deref() == Some("8")
                    || covered.as_deref() == Some(&["8"][..]);
                let currency = if pix_only { Currency::BRL } else { eur };
                let amount = parse_amount(&p.amount, currency).map_err(bad)?;
                let key = self.resolve_key(identity, KeyKind::Gateway, p.gateway_key.as_deref())?;
                let mut body = json!({ "id": p.order_id, "amount": amount.to_decimal_string() });
                let optional = [
                    ("accounts", p.accounts),
                    ("selected_method", p.selected_method),
                    ("otp", p.otp),
                    ("expiredate", expiry.map(|d| d.format("%Y%m%d").to_string())),
                    ("description", p.description),
                    ("lang", p.lang),
                    ("success_url", p.success_url),
                    ("error_url", p.error_url),
                    ("cancel_url", p.cancel_url),
                    ("btnCloseUrl", p.btn_close_url),
                    ("btnCloseLabel", p.btn_close_label),
                ];
                for (name, value) in optional {
                    if let Some(v) = value {
                        body[name] = json!(v);
                    }
                }
                Ok(Prepared::Create(
                    key,
                    Creation::Pinpay {
                        order_id: p.order_id,
                        amount,
                        body,
                    },
                ))
            }
            "cofidis_create_payment" => {
                let p: CofidisParams = parse(tool, args).map_err(bad)?;
                check_text("order_id", &p.order_id, 15).map_err(bad)?;
                let amount = parse_amount(&p.amount, eur).map_err(bad)?;
                check_url("return_url", &p.return_url).map_err(bad)?;
                check_optional("description", p.description.as_deref(), 200).map_err(bad)?;
                check_optional("customer_name", p.customer_name.as_deref(), 150).map_err(bad)?;
                if let Some(e) = &p.customer_email {
                    check_email("customer_email", e).map_err(bad)?;
                }
                if let Some(ph) = &p.customer_phone {
                    check_intl_phone("customer_phone", ph).map_err(bad)?;
                }
                let key = self.resolve_key(identity, KeyKind::Cofidis, p.cofidis_key.as_deref())?;
                let mut body = json!({
                    "orderId": p.order_id,
                    "amount": amount.to_decimal_string(),
                    "returnUrl": p.return_url,
                });
                for (name, value) in [
                    ("description", p.description),
                    ("customerName", p.customer_name),
                    ("customerEmail", p.customer_email),
                    ("customerPhone", p.customer_phone),
                ] {
                    if let Some(v) = value {
                        body[name] = json!(v);
                    }
                }
                Ok(Prepared::Create(
                    key,
                    Creation::Cofidis {
                        order_id: p.order_id,
                        amount,
                        body,
                    },
                ))
            }
            "pix_create_payment" => {
                let p: PixParams = parse(tool, args).map_err(bad)?;
                check_text("order_id", &p.order_id, 25).map_err(bad)?;
                let amount = parse_amount(&p.amount, Currency::BRL).map_err(bad)?;
                check_url("redirect_url", &p.redirect_url).map_err(bad)?;
                check_text("customer_name", &p.customer_name, 150).map_err(bad)?;
                check_cpf(&p.customer_cpf).map_err(bad)?;
                check_email("customer_email", &p.customer_email).map_err(bad)?;
                check_intl_phone("customer_phone", &p.customer_phone).map_err(bad)?;
                check_optional("description", p.description.as_deref(), 200).map_err(bad)?;
                check_optional("customer_address", p.customer_address.as_deref(), 250)
                    .map_err(bad)?;
                check_optional("customer_city", p.customer_city.as_deref(), 50).map_err(bad)?;
                check_optional("customer_state", p.customer_state.as_deref(), 50).map_err(bad)?;
                check_optional("customer_zip_code", p.customer_zip_code.as_deref(), 20)
                    .map_err(bad)?;
                let key = self.resolve_key(identity, KeyKind::Pix, p.pix_key.as_deref())?;
                let mut body = json!({
                    "orderId": p.order_id,
                    "amount": amount.to_decimal_string(),
                    "redirectUrl": p.redirect_url,
                    "customerName": p.customer_name,
                    "customerCpf": p.customer_cpf,
                    "customerEmail": p.customer_email,
                    "customerPhone": p.customer_phone,
                });
                for (name, value) in [
                    ("description", p.description),
                    ("customerAddress", p.customer_address),
                    ("customerCity", p.customer_city),
                    ("customerState", p.customer_state),
                    ("customerZipCode", p.customer_zip_code),
                ] {
                    if let Some(v) = value {
                        body[name] = json!(v);
                    }
                }
                Ok(Prepared::Create(
                    key,
                    Creation::Pix {
                        order_id: p.order_id,
                        amount,
                        body,
                    },
                ))
            }
            "payments_list" => {
                let p: PaymentsListParams = parse(tool, args).map_err(bad)?;
                let entity = match p.entity {
                    None => None,
                    Some(e) => {
                        let upper = e.to_ascii_uppercase();
                        let number = upper.len() == 5 && upper.bytes().all(|b| b.is_ascii_digit());
                        if !number && !LIST_METHODS.contains(&upper.as_str()) {
                            return Err(bad(invalid(format!(
                                "entity {e:?} must be MB, MBWAY, PAYSHOP, CCARD, COFIDIS, GOOGLE, APPLE, PIX or a 5-digit entity number"
                            ))));
                        }
                        Some(upper)
                    }
                };
                for (field, value) in [
                    ("sub_entity", &p.sub_entity),
                    ("order_id", &p.order_id),
                    ("reference", &p.reference),
                    ("request_id", &p.request_id),
                ] {
                    check_optional(field, value.as_deref(), 100).map_err(bad)?;
                }
                let amount = match &p.amount {
                    None => None,
                    Some(a) => Some(
                        Money::parse_positive(a.trim(), eur)
                            .map_err(|_| {
                                invalid(format!(
                                    "amount {a:?} must be a decimal above 0 with at most two decimals, e.g. \"25.00\""
                                ))
                            })
                            .map_err(bad)?,
                    ),
                };
                let date_start = p
                    .date_start
                    .as_deref()
                    .map(|d| parse_list_date("date_start", d))
                    .transpose()
                    .map_err(bad)?;
                let date_end = p
                    .date_end
                    .as_deref()
                    .map(|d| parse_list_date("date_end", d))
                    .transpose()
                    .map_err(bad)?;
                if let (Some(s), Some(e)) = (date_start, date_end) {
                    if s > e {
                        return Err(bad(invalid("date_start is after date_end")));
                    }
                }
                let key = self.resolve_key(identity, KeyKind::Backoffice, p.bo_key.as_deref())?;
                Ok(Prepared::List(
                    key,
                    PaymentsQuery {
                        entity,
                        sub_entity: p.sub_entity.map(SecretString::from),
                        order_id: p.order_id,
                        reference: p.reference,
                        request_id: p.request_id,
                        amount,
                        date_start,
                        date_end,
                    },
                ))
            }
            other => Err(bad(invalid(format!(
                "unknown tool {other:?}: this toolset has {}",
                TOOLS.join(", ")
            )))),
        }
    }

    /// A creation through the safety layer: read-only, policy, then the idempotent write.
    async fn create(
        &self,
        identity: &Identity,
        tool: &str,
        args: &Value,
        key: ResolvedKey,
        creation: Creation,
    ) -> Result<ToolOutcome, ServiceError> {
        let caller = Self::pipeline_caller(identity, &key.entity);
        let refuse = |outcome: ToolOutcome| {
            let caller = caller.clone();
            async move {
                self.pipeline
                    .read(&caller, TOOLSET, tool, args, || async { Ok(outcome) })
                    .await
            }
        };
        if self.pipeline.safety().config.read_only {
            return refuse(self.error(
                "read_only",
                &format!("{tool} is refused: this paywarden runs in read-only mode, where no payment request is created."),
            ))
            .await;
        }
        let amount = creation.amount();
        let input = PolicyInput {
            toolset: TOOLSET.into(),
            tool: tool.into(),
            entity: key.entity.clone(),
            moves_money: true,
            amount_minor: Some(amount.minor_units()),
            currency: Some(amount.currency().code().to_string()),
            transaction_age_days: None,
            moved_today_minor: self
                .pipeline
                .store()
                .moved_today(&key.entity, amount.currency().code())
                .await?,
            client: caller.client_name.clone(),
        };
        let verdict = match self.pipeline.safety().policy.evaluate(&input) {
            Ok(v) => v,
            Err(e) => {
                return refuse(self.error(
                    "policy_error",
                    &format!("{tool} is refused: the policy could not be evaluated ({e}); nothing was created."),
                ))
                .await
            }
        };
        match verdict.decision {
            Decision::Allow => {}
            Decision::Deny => {
                return refuse(self.error(
                    "denied_by_policy",
                    &format!(
                    "{tool} is denied by policy rule {:?}: {}. Nothing was created; do not retry.",
                    verdict.rule, verdict.message
                ),
                ))
                .await
            }
            Decision::Confirm | Decision::Human => {
                // The seed's tools have no confirmation round trip: a policy that wants one
                // refuses, and the operator decides by changing the policy.
                return refuse(self.error(
                    "policy_requires_approval",
                    &format!(
                        "{tool} is refused: policy rule {:?} asks for {} ({}), which ifthenpay's tools cannot offer. Nothing was created. The server's operator must allow this call in the policy (see docs/policy.md, rule ifthenpay-payment-requests).",
                        verdict.rule,
                        if verdict.decision == Decision::Confirm { "a confirmation" } else { "a person's approval" },
                        verdict.message
                    ),
                ))
                .await;
            }
        }
        // One order id, one request, per entity and tool: the idempotency key names the entity
        // (the pipeline also stores it per entity). An order id this entity already used under
        // a key of another form (before 0006 rewrote them, or with two keys) is refused too.
        let idempotency_key = format!("ifthenpay:{tool}:{}:{}", key.entity, creation.order_id());
        let store = self.pipeline.store();
        if store
            .idempotency_key(&key.entity, &idempotency_key)
            .await?
            .is_none()
            && store
                .ifthenpay_order_used(&key.entity, tool, creation.order_id())
                .await?
        {
            return refuse(self.order_id_conflict(creation.order_id())).await;
        }
        let outcome = self
            .pipeline
            .write(&caller, TOOLSET, tool, args, Some(&idempotency_key), || {
                self.execute(&caller, tool, &key, creation)
            })
            .await?;
        Ok(self.finish(outcome, args))
    }

    /// Rewrites pipeline-made outcomes (replays, key conflicts) into this toolset's shape: JSON
    /// text for results, the plain message for errors.
    fn finish(&self, mut outcome: ToolOutcome, args: &Value) -> ToolOutcome {
        if outcome.structured["error"]["kind"] == "idempotency_key_conflict" {
            let order = args
                .get("order_id")
                .and_then(Value::as_str)
                .unwrap_or_default();
            return self.order_id_conflict(order);
        }
        if outcome.is_error && outcome.text.starts_with("[SANDBOX") {
            // Pipeline-made errors (a key still in progress, an unknown outcome) carry the
            // sandbox banner line; this toolset's errors are the plain message.
            if let Some((_, message)) = outcome.text.split_once('\n') {
                outcome.text = message.to_string();
            }
        }
        if outcome.audit.outcome == "replay" {
            if outcome.is_error {
                outcome.text = outcome
                    .structured
                    .get("error")
                    .and_then(|e| e.get("message"))
                    .and_then(Value::as_str)
                    .map(String::from)
                    .unwrap_or(outcome.text);
            } else if let Some(original) = outcome.text.lines().last() {
                // The pipeline prefixes the first call's text (one line of JSON) with a replay
                // note; the text stays the seed's JSON, and says `idempotentReplay: true` as
                // `structuredContent` does.
                outcome.text = replay_text(original, &outcome.structured);
            }
        }
        outcome
    }

    /// The refusal of an order id this entity already used for this tool with other arguments.
    fn order_id_conflict(&self, order: &str) -> ToolOutcome {
        self.error(
            "order_id_conflict",
            &format!("order_id {order:?} was already used with other arguments (a different amount or details); a payment request for this order exists already. Use a new order_id for a new request, or resend the original arguments to get the original result."),
        )
    }

    async fn execute(
        &self,
        caller: &Caller,
        tool: &str,
        key: &ResolvedKey,
        creation: Creation,
    ) -> Result<(ToolOutcome, Settlement), ServiceError> {
        let Some(client) = &self.client else {
            return Ok((self.unconfigured(), Settlement::NotSent));
        };
        let amount = creation.amount();
        let amount_text = amount.to_decimal_string();
        let method = creation.method();
        let order_id = creation.order_id().to_string();
        let sandbox = self.sandbox;
        // (output as JSON text, request id, Multibanco entity, reference)
        let result: Result<Created, IfthenpayError> = match creation {
            Creation::Multibanco {
                order_id,
                amount,
                expiry_days,
            } => client
                .multibanco_init(&key.key, &order_id, amount, expiry_days)
                .await
                .map(|r| {
                    let out = MultibancoOutput {
                        entity: r.entity.clone(),
                        reference: r.reference.clone(),
                        amount: r.amount.to_decimal_string(),
                        expiry_date: r.expiry_date.map(|d| d.format("%Y%m%d").to_string()),
                        request_id: r.request_id.clone(),
                        sandbox,
                    };
                    (
                        to_json(&out),
                        Some(r.request_id),
                        Some(r.entity),
                        Some(r.reference),
                    )
                }),
            Creation::Mbway {
                order_id,
                amount,
                phone,
                description,
            } => client
                .mbway_init(&key.key, &order_id, amount, &phone, description.as_deref())
                .await
                .map(|request_id| {
                    let out = MbwayRequestOutput {
                        request_id: request_id.clone(),
                        status: "pending".into(),
                        message: "Payment request sent".into(),
                        sandbox,
                    };
                    (to_json(&out), Some(request_id), None, None)
                }),
            Creation::Payshop {
                order_id,
                amount,
                expiry,
            } => client
                .payshop_init(&key.key, &order_id, amount, expiry)
                .await
                .map(|r| {
                    let out = PayshopOutput {
                        reference: r.reference.clone(),
                        request_id: r.request_id.clone(),
                        amount: amount_text.clone(),
                        sandbox,
                    };
                    (to_json(&out), Some(r.request_id), None, Some(r.reference))
                }),
            Creation::Card { body, .. } | Creation::Cofidis { body, .. } => {
                let checkout = if method == "CCARD" {
                    client.creditcard_init(&key.key, &body).await
                } else {
                    client.cofidis_init(&key.key, &body).await
                };
                checkout.map(|c| {
                    let out = CheckoutOutput {
                        payment_url: c.payment_url,
                        request_id: c.request_id.clone(),
                        amount: amount_text.clone(),
                        sandbox,
                    };
                    (to_json(&out), Some(c.request_id), None, None)
                })
            }
            Creation::Pix { body, .. } => client.pix_init(&key.key, &body).await.map(|c| {
                let out = PixOutput {
                    request_id: c.request_id.clone(),
                    payment_url: c.payment_url,
                    qr_code_value: c.qr_code_value,
                    amount: amount_text.clone(),
                    sandbox,
                };
                (to_json(&out), Some(c.request_id), None, None)
            }),
            Creation::Pinpay { body, .. } => client.pinpay_init(&key.key, &body).await.map(|l| {
                let out = PinpayOutput {
                    redirect_url: l.redirect_url,
                    pinpay_url: l.pinpay_url,
                    pin_code: l.pin_code.clone(),
                    amount: amount_text.clone(),
                    sandbox,
                };
                (to_json(&out), None, None, l.pin_code)
            }),
        };
        match result {
            Ok((text, request_id, mb_entity, reference)) => {
                self.pipeline
                    .store()
                    .record_ifthenpay_request(&NewIfthenpayRequest {
                        entity_id: caller.entity_id.clone(),
                        tool: tool.to_string(),
                        method: method.to_string(),
                        key_id: key.id.clone(),
                        order_id,
                        request_id: request_id.clone(),
                        mb_entity,
                        reference,
                        amount_minor: amount.minor_units(),
                        currency: amount.currency().code().to_string(),
                    })
                    .await?;
                let structured: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                let mut outcome = self.success(&structured, request_id);
                outcome.text = text;
                Ok((outcome, Settlement::Final))
            }
            Err(e) => Ok(self.provider_failure(e)),
        }
    }

    async fn mbway_status(
        &self,
        key: &ResolvedKey,
        request_id: &str,
    ) -> Result<ToolOutcome, crate::store::StoreError> {
        let Some(client) = &self.client else {
            return Ok(self.unconfigured());
        };
        // With a key the server holds, only the caller's own requests: ifthenpay would answer
        // for any request of the merchant account, other tenants' included.
        if key.held
            && self
                .pipeline
                .store()
                .ifthenpay_request_of(&key.entity, "MBWAY", request_id)
                .await?
                .is_none()
        {
            return Ok(self.error(
                "not_found",
                "No MB WAY request with this request_id was made by this entity with this server's key. Use the request_id that mbway_request_payment returned to you.",
            ));
        }
        match client.mbway_status(&key.key, request_id).await {
            Ok(status) => {
                let state = status.state;
                let message = match state {
                    crate::connectors::ifthenpay::MbwayState::Paid => {
                        "Payment approved".to_string()
                    }
                    crate::connectors::ifthenpay::MbwayState::Rejected => {
                        "Payment rejected by the customer".to_string()
                    }
                    crate::connectors::ifthenpay::MbwayState::Expired => {
                        "Payment request expired: not approved within 4 minutes".to_string()
                    }
                    crate::connectors::ifthenpay::MbwayState::Declined => {
                        "Payment declined or cancelled".to_string()
                    }
                    crate::connectors::ifthenpay::MbwayState::Pending => {
                        "Waiting for the customer to approve in the MB WAY app".to_string()
                    }
                    crate::connectors::ifthenpay::MbwayState::Unknown => status.message.clone(),
                };
                let fmt =
                    |t: Option<NaiveDateTime>| t.map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string());
                let out = MbwayStatusOutput {
                    status: state.as_str().to_string(),
                    status_code: status.code.clone(),
                    message,
                    created_at: fmt(status.created_at),
                    updated_at: fmt(status.updated_at),
                    sandbox: self.sandbox,
                };
                if state != crate::connectors::ifthenpay::MbwayState::Pending
                    && state != crate::connectors::ifthenpay::MbwayState::Unknown
                {
                    self.pipeline
                        .store()
                        .set_ifthenpay_status(&key.entity, request_id, state.as_str())
                        .await?;
                }
                let mut outcome = self.success(&out, Some(request_id.to_string()));
                outcome.audit.result_code = Some(status.code);
                Ok(outcome)
            }
            Err(e) => Ok(self.provider_failure(e).0),
        }
    }

    async fn payments_list(
        &self,
        key: &ResolvedKey,
        query: &PaymentsQuery,
    ) -> Result<ToolOutcome, crate::store::StoreError> {
        let Some(client) = &self.client else {
            return Ok(self.unconfigured());
        };
        match client.payments_read(&key.key, query).await {
            Ok(mut records) => {
                if key.held {
                    // ifthenpay's backoffice lists the whole merchant account: keep the
                    // payments of this entity's own requests.
                    let own = self
                        .pipeline
                        .store()
                        .ifthenpay_requests(&key.entity)
                        .await?;
                    records.retain(|r| owns(&own, r));
                }
                let payments: Vec<PaymentView> = records
                    .into_iter()
                    .map(|r| {
                        let method = if r.entity.len() == 5
                            && r.entity.bytes().all(|b| b.is_ascii_digit())
                        {
                            "MB".to_string()
                        } else {
                            r.entity.to_ascii_uppercase()
                        };
                        PaymentView {
                            order_id: r.order_id,
                            amount: r.amount.to_decimal_string(),
                            status: "paid".into(),
                            entity: r.entity,
                            method,
                            reference: r.reference,
                            request_id: r.request_id,
                            payment_date: r
                                .payment_date
                                .map(|d| d.format("%d-%m-%Y %H:%M:%S").to_string()),
                        }
                    })
                    .collect();
                let out = PaymentsListOutput {
                    count: payments.len() as u64,
                    payments,
                    sandbox: self.sandbox,
                };
                Ok(self.success(&out, None))
            }
            Err(e) => Ok(self.provider_failure(e).0),
        }
    }

    /// Handles a callback ifthenpay sent (the query of `GET /ifthenpay/callback`): checks the
    /// anti-phishing key (constant time) and the amount against the request paywarden created,
    /// records the payment, and records every callback, refused ones too. Returns the HTTP
    /// status and body to answer (200 `OK`; 403 wrong key; 404 unknown payment; 409 amount
    /// mismatch; 400 unreadable amount). The key itself is never stored or logged.
    ///
    /// # Errors
    /// [`ServiceError::Store`].
    pub async fn callback(
        &self,
        query: &HashMap<String, String>,
    ) -> Result<(u16, &'static str), ServiceError> {
        use subtle::ConstantTimeEq;
        let get = |names: &[&str]| {
            names
                .iter()
                .find_map(|n| query.get(*n))
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let order_id = get(&["orderId", "order_id", "id"]);
        let request_id = get(&["requestId", "request_id"]);
        let reference = get(&["reference"]);
        let amount_text = get(&["amount", "valor"]);
        let payment_method = get(&["payment_method", "paymentMethod"]);
        let sent_key = get(&["key", "anti_phishing_key", "apk"]).unwrap_or_default();
        let mb_entity = get(&["entity"]);
        let found = self
            .pipeline
            .store()
            .find_ifthenpay_request(
                request_id.as_deref(),
                reference.as_deref(),
                mb_entity.as_deref(),
                order_id.as_deref(),
            )
            .await?;
        // The anti-phishing key of the account the request was made with: the entity's own,
        // else the global one.
        let expected = found
            .as_ref()
            .and_then(|r| self.entity_anti_phishing_keys.get(&r.entity_id))
            .or(self.anti_phishing_key.as_ref());
        let key_ok = expected
            .is_some_and(|k| bool::from(k.expose_secret().as_bytes().ct_eq(sent_key.as_bytes())));
        let currency = found
            .as_ref()
            .and_then(|r| Currency::from_code(&r.currency).ok())
            .unwrap_or(Currency::EUR);
        let parsed = amount_text
            .as_deref()
            .and_then(|a| Money::parse(&a.replace(',', "."), currency).ok());
        let (accepted, reason, status, body) = if !key_ok {
            (
                false,
                Some("wrong_anti_phishing_key"),
                403,
                "invalid anti-phishing key",
            )
        } else {
            match (&found, parsed) {
                (None, _) => (false, Some("unknown_payment"), 404, "unknown payment"),
                (Some(_), None) => (false, Some("bad_amount"), 400, "unreadable amount"),
                (Some(r), Some(m)) if m.minor_units() != r.amount_minor => {
                    (false, Some("amount_mismatch"), 409, "amount does not match")
                }
                (Some(_), Some(_)) => (true, None, 200, "OK"),
            }
        };
        let record = IfthenpayCallback {
            request_row: found.as_ref().map(|r| r.id),
            entity_id: found.as_ref().map(|r| r.entity_id.clone()),
            order_id: order_id.clone(),
            request_id: request_id.clone(),
            reference: reference.clone(),
            payment_method: payment_method.clone(),
            amount_text: amount_text.clone(),
            amount_minor: parsed.map(|m| m.minor_units()),
            accepted,
            reason: reason.map(String::from),
            received_at: String::new(),
        };
        self.pipeline
            .store()
            .record_ifthenpay_callback(&record)
            .await?;
        if accepted {
            if let Some(r) = &found {
                self.pipeline.store().mark_ifthenpay_paid(r.id).await?;
            }
        }
        // The audit log sees every callback, without the key.
        let caller = Caller {
            entity_id: found
                .as_ref()
                .map_or_else(|| "unknown".to_string(), |r| r.entity_id.clone()),
            token: SecretString::from(String::new()),
            client_name: Some("ifthenpay callback".into()),
        };
        let facts = AuditFacts {
            outcome: if accepted {
                "ok".into()
            } else {
                "rejected".into()
            },
            result_code: reason.map(String::from),
            provider_request_id: request_id.clone(),
            transaction_id: found.as_ref().and_then(|r| r.request_id.clone()),
            receipt: None,
        };
        let arguments = json!({
            "orderId": order_id, "requestId": request_id, "reference": reference,
            "amount": amount_text, "payment_method": payment_method, "anti_phishing_key_valid": key_ok,
        });
        let message = if accepted {
            "payment recorded".to_string()
        } else {
            format!("callback refused: {}", reason.unwrap_or_default())
        };
        let audited = ToolOutcome {
            structured: json!({}),
            is_error: !accepted,
            text: message,
            audit: facts,
        };
        self.pipeline
            .read(&caller, TOOLSET, "callback", &arguments, || async {
                Ok(audited)
            })
            .await?;
        Ok((status, body))
    }

    /// Registers paywarden's callback URL (`{base}/ifthenpay/callback?key=[ANTI_PHISHING_KEY]&...`)
    /// with the emulator for every demo key, with the demo backoffice key. Sandbox only: against
    /// the live API the operator activates the callback in ifthenpay's backoffice.
    pub async fn activate_demo_callbacks(&self, base: &str) {
        let (Some(client), true, Some(ap_key)) =
            (&self.client, self.sandbox, &self.anti_phishing_key)
        else {
            return;
        };
        let url = callback_template(base);
        let bo = SecretString::from(paywarden_emulator::IFTHENPAY_BACKOFFICE_KEY.to_string());
        for (entity, key) in [
            ("MB", paywarden_emulator::IFTHENPAY_MB_KEY),
            ("MBWAY", paywarden_emulator::IFTHENPAY_MBWAY_KEY),
            ("PAYSHOP", paywarden_emulator::IFTHENPAY_PAYSHOP_KEY),
            ("CCARD", paywarden_emulator::IFTHENPAY_CCARD_KEY),
            ("PINPAY", paywarden_emulator::IFTHENPAY_GATEWAY_KEY),
            ("COFIDIS", paywarden_emulator::IFTHENPAY_COFIDIS_KEY),
            ("PIX", paywarden_emulator::IFTHENPAY_PIX_KEY),
        ] {
            let key = SecretString::from(key.to_string());
            if let Err(e) = client
                .activate_callback(&bo, entity, &key, ap_key, &url)
                .await
            {
                tracing::warn!(error = %e, entity, "ifthenpay callback activation failed");
            }
        }
    }
}

/// Whether payment record `r` from ifthenpay's backoffice is the payment of one of the `own`
/// requests: by request id when ifthenpay gives one, else by reference (with the Multibanco
/// entity). An order id alone is not enough: order ids are unique per entity only.
fn owns(
    own: &[crate::store::IfthenpayRequest],
    r: &crate::connectors::ifthenpay::PaymentRecord,
) -> bool {
    match r.request_id.as_deref().filter(|id| !id.is_empty()) {
        Some(id) => own.iter().any(|q| q.request_id.as_deref() == Some(id)),
        None => r
            .reference
            .as_deref()
            .filter(|x| !x.is_empty())
            .is_some_and(|reference| {
                own.iter().any(|q| {
                    q.reference.as_deref() == Some(reference)
                        && q.mb_entity.as_deref().is_none_or(|e| e == r.entity)
                })
            }),
    }
}

/// paywarden's callback URL with ifthenpay's placeholders, as registered at ifthenpay.
pub fn callback_template(base: &str) -> String {
    format!(
        "{}/ifthenpay/callback?key=[ANTI_PHISHING_KEY]&orderId=[ORDER_ID]&amount=[AMOUNT]&requestId=[REQUEST_ID]&entity=[ENTITY]&reference=[REFERENCE]&payment_datetime=[PAYMENT_DATETIME]&payment_method=[PAYMENT_METHOD]",
        base.trim_end_matches('/')
    )
}

/// Why a call stops before the provider: a tool-error outcome (`Ok`) or invalid arguments.
type Refusal = Box<Result<ToolOutcome, ServiceError>>;

fn bad(e: ServiceError) -> Refusal {
    Box::new(Err(e))
}

/// A creation's result: (output as JSON text, request id, Multibanco entity, reference).
type Created = (String, Option<String>, Option<String>, Option<String>);

enum Prepared {
    Create(ResolvedKey, Creation),
    MbwayStatus(ResolvedKey, String),
    List(ResolvedKey, PaymentsQuery),
}

fn to_value<T: Serialize>(value: &T) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}

fn to_json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

/// The text of a replayed result: the first call's JSON text (fields in the seed's order) with
/// `"idempotentReplay":true` appended, so that it and `structured` (which says so too) hold
/// the same data; `structured` as JSON should the first text not be a JSON object.
fn replay_text(original: &str, structured: &Value) -> String {
    let original = original.trim();
    let spliced = original.strip_suffix('}').map(|head| {
        let head = head.trim_end();
        let separator = if head.ends_with('{') { "" } else { "," };
        format!("{head}{separator}\"idempotentReplay\":true}}")
    });
    match spliced {
        Some(text) if serde_json::from_str::<Value>(&text).ok().as_ref() == Some(structured) => {
            text
        }
        _ => structured.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn num(v: Value) -> serde_json::Number {
        match v {
            Value::Number(n) => n,
            other => panic!("{other}"),
        }
    }

    #[test]
    fn amounts_are_exact_minor_units() {
        let eur = Currency::EUR;
        assert_eq!(
            parse_amount(&num(json!(25.00)), eur).unwrap().minor_units(),
            2500
        );
        assert_eq!(
            parse_amount(&num(json!(15.5)), eur).unwrap().minor_units(),
            1550
        );
        assert_eq!(
            parse_amount(&num(json!(99.99)), eur).unwrap().minor_units(),
            9999
        );
        assert_eq!(
            parse_amount(&num(json!(0.01)), eur).unwrap().minor_units(),
            1
        );
        assert_eq!(
            parse_amount(&num(json!(7)), eur).unwrap().minor_units(),
            700
        );
        for bad in [
            json!(0),
            json!(-1.0),
            json!(10.001),
            json!(1e30),
            json!(1000000.0),
        ] {
            assert!(parse_amount(&num(bad.clone()), eur).is_err(), "{bad}");
        }
    }

    #[test]
    fn cpf_check_digits() {
        assert!(check_cpf("74026594025").is_ok());
        assert!(check_cpf("52998224725").is_ok());
        assert!(check_cpf("74026594024").is_err());
        assert!(check_cpf("11111111111").is_err());
        assert!(check_cpf("740.265.940-25").is_err());
        assert!(check_cpf("7402659402").is_err());
    }

    #[test]
    fn mbway_phones() {
        assert!(check_mbway_phone("351#912345678").is_ok());
        assert!(check_mbway_phone("34#612345678").is_ok());
        assert!(check_mbway_phone("912345678").is_err());
        assert!(check_mbway_phone("351#212345678").is_err());
        assert!(check_mbway_phone("351#91234567").is_err());
        assert!(check_mbway_phone("+351#912345678").is_err());
    }

    #[test]
    fn pinpay_accounts() {
        assert_eq!(check_accounts("CCARD|AAA-000001").unwrap(), vec!["4"]);
        assert_eq!(
            check_accounts(
                "MB|A-1;MBWAY|B-2;PAYSHOP|C-3;CCARD|D-4;COFIDIS|E-5;PIX|F-6;GOOGLE|G-7;APPLE|H-8"
            )
            .unwrap(),
            vec!["1", "2", "3", "4", "7", "8", "4", "4"]
        );
        assert_eq!(check_accounts("11249|999;").unwrap(), vec!["1"]);
        for bad in [
            "",
            "CCARD",
            "VISA|X-1",
            "CCARD|",
            "CCARD|a b",
            "CCARD|X-1;CCARD|X-2",
            "11249|99",
        ] {
            assert!(check_accounts(bad).is_err(), "{bad}");
        }
        // Error messages never echo a key.
        let ServiceError::InvalidArguments(m) =
            check_accounts("secretkeyvalue-without-pipe").unwrap_err()
        else {
            panic!()
        };
        assert!(!m.contains("secretkeyvalue"), "{m}");
    }

    #[test]
    fn dates() {
        assert!(parse_yyyymmdd("expiry_date", "20991231").is_ok());
        assert!(parse_yyyymmdd("expiry_date", "20200101").is_err());
        assert!(parse_yyyymmdd("expiry_date", "2099-12-31").is_err());
        assert!(parse_yyyymmdd("expiry_date", "20990230").is_err());
        assert!(parse_list_date("date_start", "01-06-2026 00:00:00").is_ok());
        assert!(parse_list_date("date_start", "2026-06-01 00:00:00").is_err());
        assert!(parse_list_date("date_start", "01-06-2026").is_err());
    }
}
