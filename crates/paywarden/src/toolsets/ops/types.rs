//! Parameters and outputs of the ops tools.

use super::*;

/// `lookup_customer` / `get_order_history` parameters.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EmailParams {
    /// The customer's e-mail address, e.g. `sarah@example.com`.
    pub email: String,
}

/// `list_payments` parameters: the customer by `email` or by `customer` (the seed's demo calls
/// `list_payments(customer="cus_...")` with the id `lookup_customer` returned); one of the two
/// is required, and when both are sent they must name the same customer.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListPaymentsParams {
    /// The customer's e-mail address, e.g. `sarah@example.com`.
    pub email: Option<String>,
    /// The customer: a Stripe customer id (`cus_...`, as `lookup_customer` returns it) or an
    /// e-mail address. Use this or `email`.
    pub customer: Option<String>,
    /// How many of the most recent PaymentIntents, 1-100 (default 5).
    #[schemars(range(min = 1, max = 100))]
    pub limit: Option<u32>,
}

/// `issue_refund` parameters.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IssueRefundParams {
    /// The customer's e-mail address; the charge must be theirs.
    pub email: String,
    /// The Stripe PaymentIntent id (`pi_...`, as list_payments shows it) to refund; a charge
    /// id (`ch_...`) is resolved to its PaymentIntent. Omitted: the customer's most recent
    /// paid order.
    pub charge_id: Option<String>,
    /// Amount to refund in minor units (cents: 4999 = $49.99). Omitted: everything not yet
    /// refunded.
    pub amount_cents: Option<i64>,
    /// Why (free text, recorded in refund_log; default `requested_by_customer`). `duplicate`,
    /// `fraudulent` and `requested_by_customer` are passed to Stripe as its `reason`.
    pub reason: Option<String>,
    /// The seed's flag. It never authorises a refund by itself: the preview's
    /// `confirmation_token` (or an approved `approval_id`) does.
    pub confirmed: Option<bool>,
    /// The token from this tool's preview, sent with the same arguments to execute it.
    pub confirmation_token: Option<String>,
    /// An approved approval request's id, sent with the same arguments to execute it.
    pub approval_id: Option<String>,
    /// Idempotency key: a retry with the same key returns the first outcome and refunds
    /// nothing again; the same key with other arguments is refused.
    pub idempotency_key: Option<String>,
}

/// `create_payment_link` parameters.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PaymentLinkParams {
    /// Price per unit in minor units (cents: 4999 = $49.99). Positive.
    pub amount_cents: i64,
    /// What is sold (the Stripe product name), 1-250 characters.
    pub description: String,
    /// ISO 4217 currency (default `usd`).
    pub currency: Option<String>,
    /// Quantity, 1-999 (default 1).
    pub quantity: Option<u32>,
    /// Idempotency key, passed to Stripe: a retry creates no second link.
    pub idempotency_key: Option<String>,
    /// When the policy asks for a confirmation: the token from this tool's preview, sent with
    /// the same arguments to create the link.
    pub confirmation_token: Option<String>,
    /// When the policy asks for a person: the approved approval request's id.
    pub approval_id: Option<String>,
}

/// `revenue_summary` parameters.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RevenueParams {
    /// First day, `YYYY-MM-DD` (UTC).
    pub start_date: String,
    /// Last day, `YYYY-MM-DD` (UTC), inclusive.
    pub end_date: String,
}

/// `flag_for_review` parameters.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FlagParams {
    /// The Stripe PaymentIntent id (`pi_...`) of the charge to flag.
    pub charge_id: String,
    /// What a person should look at (1-2000 characters).
    pub note: String,
}

/// A customer as the tools show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CustomerView {
    /// Internal id (uuid).
    pub id: String,
    /// E-mail.
    pub email: String,
    /// Name.
    pub name: String,
    /// Stripe customer id (`cus_...`).
    pub stripe_customer_id: Option<String>,
}

/// A sum of money in one currency.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct AmountView {
    /// ISO 4217 code, upper case.
    pub currency: String,
    /// Minor units.
    pub amount_cents: i64,
    /// Decimal string with the currency's decimals, e.g. `"49.99"`.
    pub amount: String,
}

/// An order as the tools show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct OrderView {
    /// Order id (uuid).
    pub order_id: String,
    /// Stripe PaymentIntent id (`pi_...`).
    pub stripe_charge_id: Option<String>,
    /// Amount, minor units.
    pub amount_cents: i64,
    /// Refunded so far, minor units.
    pub refunded_cents: i64,
    /// Still refundable, minor units.
    pub refundable_cents: i64,
    /// Decimal amount, e.g. `"49.99"`.
    pub amount: String,
    /// ISO 4217 code, upper case.
    pub currency: String,
    /// `paid`, `refunded` or `partially_refunded`.
    pub status: String,
    /// When paid (UTC, RFC 3339).
    pub created_at: String,
    /// Age in days.
    pub age_days: i64,
}

/// Stripe's side of a customer, as `lookup_customer` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct StripeCustomerView {
    /// `ok`, `not_linked` (no Stripe id), `missing` (Stripe has no such customer) or
    /// `unavailable` (Stripe could not be asked).
    pub status: String,
    /// Stripe customer id.
    pub id: Option<String>,
    /// E-mail at Stripe.
    pub email: Option<String>,
    /// Name at Stripe.
    pub name: Option<String>,
    /// What went wrong, when `unavailable`.
    pub error: Option<String>,
}

/// `lookup_customer` output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct LookupCustomerOutput {
    /// The internal record.
    pub customer: CustomerView,
    /// Orders in total.
    pub order_count: usize,
    /// Orders fully paid (nothing refunded).
    pub paid_count: usize,
    /// Orders refunded in full.
    pub refunded_count: usize,
    /// Orders refunded in part.
    pub partially_refunded_count: usize,
    /// Paid minus refunded, per currency.
    pub lifetime_value: Vec<AmountView>,
    /// Live status at Stripe.
    pub stripe: StripeCustomerView,
    /// True when the offline emulator stands in for Stripe.
    pub sandbox: bool,
}

/// One Stripe payment in `list_payments`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PaymentView {
    /// Stripe PaymentIntent id (`pi_...`): what issue_refund takes as `charge_id`.
    pub payment_intent_id: String,
    /// Its latest charge (`ch_...`).
    pub charge_id: Option<String>,
    /// Amount, minor units.
    pub amount_cents: i64,
    /// Decimal amount.
    pub amount: String,
    /// ISO 4217 code, upper case.
    pub currency: String,
    /// Stripe PaymentIntent status (`succeeded`, ...).
    pub status: String,
    /// Refunded at Stripe, minor units (from the charge).
    pub amount_refunded_cents: Option<i64>,
    /// When created (UTC, RFC 3339).
    pub created: String,
    /// The internal order it paid, if any.
    pub order_id: Option<String>,
}

/// `list_payments` output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ListPaymentsOutput {
    /// The customer.
    pub customer: CustomerView,
    /// Most recent first.
    pub payments: Vec<PaymentView>,
    /// Whether Stripe has older ones.
    pub has_more: bool,
    /// True when the offline emulator stands in for Stripe.
    pub sandbox: bool,
}

/// One refund_log row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RefundLogView {
    /// Log id (uuid).
    pub id: String,
    /// Stripe refund id.
    pub stripe_refund_id: Option<String>,
    /// Minor units.
    pub amount_cents: i64,
    /// Why.
    pub reason: String,
    /// Which agent or client.
    pub refunded_by: String,
    /// When (UTC).
    pub created_at: String,
    /// Stripe's refund status as paywarden last saw it: `succeeded`, `pending` (not done yet),
    /// `failed` or `canceled` (undone: not counted in the order's refunded amount).
    pub status: String,
}

/// An order with its refunds, in `get_order_history`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct OrderHistoryEntry {
    /// The order.
    #[serde(flatten)]
    pub order: OrderView,
    /// Its refunds.
    pub refunds: Vec<RefundLogView>,
}

/// `get_order_history` output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct OrderHistoryOutput {
    /// The customer.
    pub customer: CustomerView,
    /// Newest first.
    pub orders: Vec<OrderHistoryEntry>,
    /// True when the offline emulator stands in for Stripe.
    pub sandbox: bool,
}

/// The refund Stripe made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RefundView {
    /// Stripe refund id (`re_...`).
    pub stripe_refund_id: String,
    /// Minor units.
    pub amount_cents: i64,
    /// Decimal amount.
    pub amount: String,
    /// ISO 4217 code, upper case.
    pub currency: String,
    /// Stripe refund status (`succeeded`, `pending`, ...).
    pub status: String,
    /// The PaymentIntent refunded.
    pub payment_intent_id: String,
}

/// `issue_refund` output: a preview with its confirmation token, an approval request, or the
/// executed refund with the updated order and its refund_log row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct IssueRefundOutput {
    /// `executed`, `pending` (Stripe accepted the refund but has not completed it; booked
    /// provisionally and tracked), `confirmation_required`, `approval_pending`,
    /// `approval_denied` or `approval_expired`.
    pub status: String,
    /// The refund (when executed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refund: Option<RefundView>,
    /// The order after the refund (when executed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order: Option<OrderView>,
    /// The refund_log row id (when executed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refund_log_id: Option<String>,
    /// Who the log says refunded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refunded_by: Option<String>,
    /// The confirmation request (when `confirmation_required`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<serde_json::Map<String, serde_json::Value>>")]
    pub confirmation: Option<serde_json::Value>,
    /// The approval request (when a person decides).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<serde_json::Map<String, serde_json::Value>>")]
    pub approval: Option<serde_json::Value>,
    /// The signed receipt of the movement (when executed): see `paywarden receipt verify`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<serde_json::Map<String, serde_json::Value>>")]
    pub receipt: Option<crate::receipts::Receipt>,
    /// True when the offline emulator stands in for Stripe.
    pub sandbox: bool,
    /// True when this is the stored first outcome of a retried call.
    #[serde(rename = "idempotentReplay")]
    pub idempotent_replay: bool,
}

/// `create_payment_link` output: the link created, or (when the policy asks for it) a
/// confirmation request or an approval request, with what the link would ask for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PaymentLinkOutput {
    /// `created`, `confirmation_required`, `approval_pending`, `approval_denied` or
    /// `approval_expired`.
    pub status: String,
    /// The link to send to the customer (when created).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Stripe payment link id (`plink_...`, when created).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment_link_id: Option<String>,
    /// Stripe product id (when created).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product_id: Option<String>,
    /// Stripe price id (when created).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price_id: Option<String>,
    /// The confirmation request (when `confirmation_required`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<serde_json::Map<String, serde_json::Value>>")]
    pub confirmation: Option<serde_json::Value>,
    /// The approval request (when a person decides).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<serde_json::Map<String, serde_json::Value>>")]
    pub approval: Option<serde_json::Value>,
    /// Unit price, minor units.
    pub amount_cents: i64,
    /// Decimal unit price.
    pub amount: String,
    /// ISO 4217 code, upper case.
    pub currency: String,
    /// Quantity.
    pub quantity: u32,
    /// What is sold.
    pub description: String,
    /// True when the offline emulator stands in for Stripe.
    pub sandbox: bool,
    /// True when this is the stored first outcome of a retried call.
    #[serde(default, rename = "idempotentReplay")]
    pub idempotent_replay: bool,
}

/// One day and currency of `revenue_summary`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RevenueDay {
    /// `YYYY-MM-DD` (UTC).
    pub day: String,
    /// ISO 4217 code, upper case.
    pub currency: String,
    /// Orders paid that day.
    pub orders: i64,
    /// Their amounts, minor units.
    pub gross_cents: i64,
    /// Refunded of them, minor units.
    pub refunded_cents: i64,
    /// Gross minus refunded, minor units.
    pub net_cents: i64,
    /// Net as a decimal string.
    pub net: String,
}

/// `revenue_summary` output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RevenueOutput {
    /// First day.
    pub start_date: String,
    /// Last day (inclusive).
    pub end_date: String,
    /// Per day and currency.
    pub days: Vec<RevenueDay>,
    /// Per currency over the range (`day` is `"total"`).
    pub totals: Vec<RevenueDay>,
}

/// `flag_for_review` output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct FlagOutput {
    /// Flag id (uuid).
    pub flag_id: String,
    /// The order.
    pub order_id: String,
    /// The PaymentIntent flagged.
    pub charge_id: String,
    /// The note.
    pub note: String,
    /// Who flagged it.
    pub flagged_by: String,
    /// `open`.
    pub status: String,
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------
