//! Parameters, outputs and key sets of the ifthenpay tools.

use super::*;

pub(super) fn is_false(b: &bool) -> bool {
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
    /// Days until the reference expires (0-31, 45, 60, 90, 120, 180, 365 or 730); omit for no expiry.
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
    /// Unique order identifier (max 15 chars).
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
pub(super) enum KeyKind {
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
    pub(super) fn argument(self) -> &'static str {
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
    pub(super) fn keys(&self) -> Keys {
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
pub(super) struct Keys {
    pub(super) mb: Option<SecretString>,
    pub(super) mbway: Option<SecretString>,
    pub(super) payshop: Option<SecretString>,
    pub(super) ccard: Option<SecretString>,
    pub(super) gateway: Option<SecretString>,
    pub(super) cofidis: Option<SecretString>,
    pub(super) pix: Option<SecretString>,
    pub(super) backoffice: Option<SecretString>,
}

impl Keys {
    pub(super) fn get(&self, kind: KeyKind) -> Option<&SecretString> {
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
pub(super) struct ResolvedKey {
    pub(super) key: SecretString,
    /// The key's keyed id ([`crate::audit_anchor::KeyIds`]): what records, audit entries
    /// (`key:<id>`) and idempotency keys carry.
    pub(super) id: String,
    /// The entity the call acts for.
    pub(super) entity: String,
    /// Whether paywarden holds the key (configuration) rather than the caller passing it: reads
    /// are then limited to the entity's own requests.
    pub(super) held: bool,
}

// ---------------------------------------------------------------------------------------------
// Validation
