//! The `ops` toolset's service: the Payment Ops seed's tools (Stripe joined with the merchant's
//! own orders database) on paywarden's pipeline.
//!
//! paywarden holds the Stripe key, so it authenticates the caller itself (the entity's token,
//! stored as its SHA-256) before any tool runs, and every record is scoped by entity.
//! `issue_refund` keeps the seed's two steps but never trusts the model's `confirmed`
//! boolean: its first call returns a preview and a single-use confirmation token (or, when the
//! policy says so, an approval request for a person), and only the same call carrying that
//! token (or an approved approval) moves money. The refund window, the refundable remainder
//! (Stripe's `amount_refunded` is the truth) and the customer named are checked before the
//! preview and again under a per-order lease right before Stripe is called. Stripe gets an
//! `Idempotency-Key` derived from paywarden's key, so a retry never refunds twice, and two
//! separately confirmed partial refunds of one order never collide.

use std::{collections::BTreeMap, sync::Arc};

use chrono::{DateTime, Duration as ChronoDuration, NaiveDate, Utc};
use paywarden_domain::{Currency, Money};
use schemars::JsonSchema;
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{
    gate::{derived_key, Gate, GateRequest},
    reconcile::{Found, Intent, Reconciler},
    safety::{binding_hash, token_hash, PreviewView},
    AuditFacts, Caller, Pipeline, ServiceError, Settlement, ToolOutcome,
};
use crate::{
    connectors::stripe::{
        PaymentIntent, PaymentIntentStatus, Refund, RefundReason, RefundRequest, RefundStatus,
        StripeClient, StripeError,
    },
    policy::{Decision, PolicyInput},
    store::{CustomerRecord, OrderRecord, OrderStatus},
};

/// The toolset's name.
pub const TOOLSET: &str = "ops";

/// An entity paywarden knows (`[[entities]]`): its id, the SHA-256 (hex) of its token, and
/// optionally ifthenpay keys of its own (`[entities.ifthenpay]`, used instead of the global
/// `[ifthenpay]` keys for this entity; never serialised).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KnownEntity {
    /// Entity id (the `X-Entity-Id` header).
    pub id: String,
    /// Hex SHA-256 of its token (the `X-Token` header); the token itself is never stored.
    pub token_sha256: String,
    /// The entity's own ifthenpay keys.
    #[serde(default, skip_serializing)]
    pub ifthenpay: Option<super::ifthenpay::EntityKeys>,
}

/// The ops service: orders database + Stripe connector on the pipeline.
#[derive(Debug, Clone)]
pub struct OpsService {
    pipeline: Pipeline,
    stripe: StripeClient,
    entities: Arc<Vec<KnownEntity>>,
}

// ---------------------------------------------------------------------------------------------
// Parameters (the seed's names, snake_case) and outputs
// ---------------------------------------------------------------------------------------------

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
    /// `executed`, `confirmation_required`, `approval_pending`, `approval_denied` or
    /// `approval_expired`.
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

fn invalid(message: impl Into<String>) -> ServiceError {
    ServiceError::InvalidArguments(message.into())
}

fn stamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// A plausible e-mail address: one `@`, something on both sides, a dot in the domain, no
/// spaces, at most 254 characters.
fn validate_email(raw: &str) -> Result<String, ServiceError> {
    let email = raw.trim();
    let ok = email.len() <= 254
        && !email.contains(char::is_whitespace)
        && email.split('@').count() == 2
        && email
            .split_once('@')
            .is_some_and(|(l, d)| !l.is_empty() && d.contains('.') && !d.starts_with('.'));
    if ok {
        Ok(email.to_string())
    } else {
        // Never quoted back (personal data), and no example address (it would be masked).
        Err(invalid(
            "email is not an e-mail address: send the customer's full address (one @, a dot in the domain, no spaces)",
        ))
    }
}

/// How `list_payments` names its customer: by e-mail, by Stripe customer id, or both.
#[derive(Debug, Clone, PartialEq, Eq)]
enum CustomerRef {
    /// An e-mail address (validated).
    Email(String),
    /// A Stripe customer id (`cus_...`).
    StripeCustomer(String),
    /// Both, which must name the same customer.
    Both { email: String, stripe: String },
}

impl CustomerRef {
    /// From `email` and `customer` (`cus_...` or an e-mail address).
    ///
    /// # Errors
    /// [`ServiceError::InvalidArguments`] when neither is sent, or one is malformed.
    fn from_params(email: Option<&str>, customer: Option<&str>) -> Result<Self, ServiceError> {
        let email = email.map(validate_email).transpose()?;
        let customer = match customer.map(str::trim) {
            None => None,
            Some(c) if c.contains('@') => Some(Self::Email(validate_email(c)?)),
            Some(c) if c.starts_with("cus_") => {
                Some(Self::StripeCustomer(validate_stripe_id("customer", c)?))
            }
            Some(c) => {
                return Err(invalid(format!(
                    "customer {c:?} is neither a Stripe customer id (cus_...) nor an e-mail address; send the id lookup_customer returns"
                )))
            }
        };
        match (email, customer) {
            (None, None) => Err(invalid(
                "send the customer as email (e.g. sarah@example.com) or customer (the Stripe customer id cus_... that lookup_customer returns)",
            )),
            (Some(e), None) => Ok(Self::Email(e)),
            (None, Some(c)) => Ok(c),
            (Some(e), Some(Self::Email(other))) => {
                if e.eq_ignore_ascii_case(&other) {
                    Ok(Self::Email(e))
                } else {
                    Err(invalid("email and customer name two different customers; send one of them"))
                }
            }
            (Some(e), Some(Self::StripeCustomer(stripe))) => Ok(Self::Both { email: e, stripe }),
            (Some(_), Some(Self::Both { .. })) => Err(invalid("send email or customer")),
        }
    }
}

/// A Stripe object id: 3-255 characters of `[A-Za-z0-9_]`.
fn validate_stripe_id(field: &str, raw: &str) -> Result<String, ServiceError> {
    let id = raw.trim();
    if (3..=255).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        Ok(id.to_string())
    } else {
        Err(invalid(format!(
            "{field} {raw:?} is not a Stripe id; send the PaymentIntent id list_payments shows (pi_...)"
        )))
    }
}

fn currency_of(code: &str) -> Result<Currency, ServiceError> {
    Currency::from_code(&code.trim().to_ascii_uppercase()).map_err(|e| invalid(e.to_string()))
}

fn money(cents: i64, currency: &str) -> (String, String) {
    match Currency::from_code(&currency.to_ascii_uppercase())
        .ok()
        .and_then(|c| Money::from_minor(cents, c).ok())
    {
        Some(m) => (m.to_decimal_string(), m.currency().code().to_string()),
        None => (cents.to_string(), currency.to_ascii_uppercase()),
    }
}

fn customer_view(c: &CustomerRecord) -> CustomerView {
    CustomerView {
        id: c.id.clone(),
        email: c.email.clone(),
        name: c.name.clone(),
        stripe_customer_id: c.stripe_customer_id.clone(),
    }
}

fn order_view(o: &OrderRecord) -> OrderView {
    let (amount, currency) = money(o.amount_cents, &o.currency);
    OrderView {
        order_id: o.id.clone(),
        stripe_charge_id: o.stripe_charge_id.clone(),
        amount_cents: o.amount_cents,
        refunded_cents: o.refunded_cents,
        refundable_cents: o.refundable_cents(),
        amount,
        currency,
        status: o.status.as_str().to_string(),
        created_at: stamp(o.created_at),
        age_days: (Utc::now() - o.created_at).num_days(),
    }
}

fn parse_day(field: &str, raw: &str) -> Result<NaiveDate, ServiceError> {
    NaiveDate::parse_from_str(raw.trim(), "%Y-%m-%d").map_err(|_| {
        invalid(format!(
            "{field} {raw:?} is not a date; use YYYY-MM-DD, e.g. 2026-01-31"
        ))
    })
}

/// The Stripe `Idempotency-Key` for paywarden's key `key` of `entity_id`: stable, at most 255
/// characters, and distinct per entity and key.
pub fn stripe_idempotency_key(entity_id: &str, key: &str) -> String {
    let digest = Sha256::digest(format!("{entity_id}\n{key}").as_bytes());
    format!("paywarden-{}", hex::encode(digest))
}

/// What a validated `issue_refund` asks for.
#[derive(Debug, Clone)]
struct RefundCommand {
    email: String,
    charge_id: Option<String>,
    amount_cents: Option<i64>,
    reason: String,
    confirmation_token: Option<String>,
    approval_id: Option<String>,
    idempotency_key: Option<String>,
}

/// The order and amounts a refund will act on, checked against the database and Stripe.
#[derive(Debug, Clone)]
struct CheckedRefund {
    customer: CustomerRecord,
    order: OrderRecord,
    payment_intent: String,
    amount_cents: i64,
    /// Stripe's `amount_refunded` of the charge before this refund.
    refunded_before: i64,
    charge_amount: i64,
}

impl OpsService {
    /// The ops service over `pipeline`, sending to Stripe through `stripe`; `entities` are the
    /// callers paywarden accepts for this toolset.
    pub fn new(pipeline: Pipeline, stripe: StripeClient, entities: Vec<KnownEntity>) -> Self {
        Self {
            pipeline,
            stripe,
            entities: Arc::new(entities),
        }
    }

    /// The pipeline.
    pub fn pipeline(&self) -> &Pipeline {
        &self.pipeline
    }

    /// The Stripe connector.
    pub fn stripe(&self) -> &StripeClient {
        &self.stripe
    }

    /// Whether `caller` is an entity paywarden knows, with its token (compared as SHA-256, in
    /// constant time).
    pub fn authenticates(&self, caller: &Caller) -> bool {
        use subtle::ConstantTimeEq;
        let presented = token_hash(caller.token.expose_secret());
        self.entities.iter().any(|e| {
            e.id == caller.entity_id
                && bool::from(presented.as_bytes().ct_eq(e.token_sha256.as_bytes()))
        })
    }

    fn unauthenticated(&self, tool: &str) -> ToolOutcome {
        let mut outcome = self.pipeline.error_outcome(
            "unauthenticated",
            &format!(
                "{tool} is refused: paywarden holds the Stripe key for this toolset and does not know this entity with this token. Check X-Entity-Id and X-Token (or PAYWARDEN_ENTITY_ID / PAYWARDEN_TOKEN for stdio)."
            ),
            None,
        );
        outcome.audit.outcome = "unauthenticated".into();
        outcome
    }

    /// Runs a read tool: authentication, `run`, audit.
    async fn read<F, Fut>(
        &self,
        caller: &Caller,
        tool: &str,
        arguments: &serde_json::Value,
        run: F,
    ) -> Result<ToolOutcome, ServiceError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<ToolOutcome, ServiceError>>,
    {
        let authenticated = self.authenticates(caller);
        self.pipeline
            .read(caller, TOOLSET, tool, arguments, || async {
                if !authenticated {
                    return Ok(self.unauthenticated(tool));
                }
                run().await
            })
            .await
    }

    /// Admission of a write tool: malformed arguments, an unknown caller and read-only mode are
    /// answered (and audited) here; `Ok` carries the validated request on.
    async fn admit_write<T>(
        &self,
        caller: &Caller,
        tool: &str,
        arguments: &serde_json::Value,
        validated: Result<T, ServiceError>,
    ) -> Result<T, Result<ToolOutcome, ServiceError>> {
        let refusal = match validated {
            Err(e) => Err(e),
            Ok(_) if !self.authenticates(caller) => Ok(self.unauthenticated(tool)),
            Ok(_)
                if self.pipeline.safety().config.read_only
                    && crate::catalog::hidden_in_read_only(tool) =>
            {
                Ok(self.pipeline.error_outcome(
                "read_only",
                &format!("{tool} is refused: this paywarden runs in read-only mode, where no tool moves money or writes to a provider."),
                None,
            ))
            }
            Ok(v) => return Ok(v),
        };
        Err(self
            .pipeline
            .read(caller, TOOLSET, tool, arguments, || async { refusal })
            .await)
    }

    fn ok(&self, structured: serde_json::Value, text: String, facts: AuditFacts) -> ToolOutcome {
        ToolOutcome {
            text: self.pipeline.decorate(&format!("{text}\n{structured}")),
            structured,
            is_error: false,
            audit: AuditFacts {
                outcome: "ok".into(),
                ..facts
            },
        }
    }

    fn not_found(&self, what: &str) -> ToolOutcome {
        let mut o = self.pipeline.error_outcome("not_found", what, None);
        o.audit.outcome = "rejected".into();
        o
    }

    /// A Stripe failure as a tool error that says whether the request may have reached Stripe,
    /// for a `call` of the given kind.
    fn stripe_failure(
        &self,
        tool: &str,
        error: &StripeError,
        call: StripeCall,
    ) -> (ToolOutcome, Settlement) {
        // The request may have reached Stripe, which may have acted: what that means per call.
        let indeterminate = match call {
            StripeCall::Read => (
                "Nothing changed (this was a read). Try again later.",
                Settlement::NotSent,
            ),
            StripeCall::Refund => (
                "The request may have reached Stripe, so the outcome is UNKNOWN: do not start a new refund. Retry this exact call (same arguments and token or idempotency_key): paywarden asks Stripe first and never refunds twice.",
                Settlement::Unknown,
            ),
            // Retried under the same Stripe Idempotency-Key, Stripe answers with what it created.
            StripeCall::Create => (
                "The request may have reached Stripe, which may have created it: the outcome is unknown. Retry this exact call with the same idempotency_key: Stripe then returns what it created, never a second one (without an idempotency_key a retry may create a second one).",
                Settlement::NotSent,
            ),
        };
        let (kind, advice, settlement) = match error {
            StripeError::Timeout(_) => ("provider_timeout", indeterminate.0, indeterminate.1),
            StripeError::Unreachable { .. } => (
                "provider_unreachable",
                "Nothing was sent. Check that Stripe (or the emulator) is reachable, then retry.",
                Settlement::NotSent,
            ),
            StripeError::ConnectionLost { .. } => {
                ("provider_connection_lost", indeterminate.0, indeterminate.1)
            }
            StripeError::Authentication { .. } | StripeError::InvalidKey { .. } | StripeError::LiveKeyRefused { .. } => (
                "provider_authentication",
                "paywarden's Stripe key was refused: an operator must fix STRIPE_API_KEY / [stripe] api_key. Nothing was done.",
                Settlement::Final,
            ),
            StripeError::PermissionDenied { .. } => (
                "provider_permission",
                "The restricted Stripe key lacks this permission: an operator must grant it. Nothing was done.",
                Settlement::Final,
            ),
            StripeError::NotFound { .. } => ("not_found", "Check the id with list_payments.", Settlement::Final),
            // Stripe documents a 5xx answer to a write as indeterminate: it may have acted.
            StripeError::Api { status, .. } if *status >= 500 => {
                ("provider_error", indeterminate.0, indeterminate.1)
            }
            StripeError::Api { .. } => ("provider_rejected", "Stripe refused it; nothing was done.", Settlement::Final),
            StripeError::UnexpectedResponse { .. } if call == StripeCall::Read => (
                "provider_error",
                "Stripe's answer could not be read; nothing changed (this was a read). Try again later.",
                Settlement::NotSent,
            ),
            StripeError::UnexpectedResponse { .. } => ("provider_error", indeterminate.0, indeterminate.1),
            StripeError::InvalidArgument { .. } => ("invalid_request", "Nothing was sent: fix the arguments.", Settlement::NotSent),
        };
        let request_id = match error {
            StripeError::Api { request_id, .. }
            | StripeError::Authentication { request_id, .. }
            | StripeError::PermissionDenied { request_id, .. }
            | StripeError::NotFound { request_id, .. }
            | StripeError::UnexpectedResponse { request_id, .. } => request_id.clone(),
            _ => None,
        };
        let code = match error {
            StripeError::Api { code, .. } => code.clone(),
            _ => None,
        };
        let mut outcome = self.pipeline.error_outcome(
            kind,
            &format!("{tool} failed: {error}. {advice}"),
            code.as_deref(),
        );
        outcome.audit.provider_request_id = request_id;
        (outcome, settlement)
    }

    async fn customer_or_outcome(
        &self,
        caller: &Caller,
        email: &str,
    ) -> Result<Result<CustomerRecord, ToolOutcome>, ServiceError> {
        Ok(
            match self
                .pipeline
                .store()
                .customer_by_email(&caller.entity_id, email)
                .await?
            {
                Some(c) => Ok(c),
                None => Err(self.not_found(&format!(
                    "No customer found with email '{email}' in the orders database. Check the address (lookup_customer takes the exact e-mail)."
                ))),
            },
        )
    }

    /// The customer `who` names, checked against this entity's orders database; a customer
    /// named both ways must be one customer.
    async fn customer_ref_or_outcome(
        &self,
        caller: &Caller,
        who: &CustomerRef,
    ) -> Result<Result<CustomerRecord, ToolOutcome>, ServiceError> {
        let (by_email, by_stripe) = match who {
            CustomerRef::Email(e) => (Some(e.as_str()), None),
            CustomerRef::StripeCustomer(c) => (None, Some(c.as_str())),
            CustomerRef::Both { email, stripe } => (Some(email.as_str()), Some(stripe.as_str())),
        };
        let found_by_stripe = match by_stripe {
            Some(id) => match self
                .pipeline
                .store()
                .customer_by_stripe_id(&caller.entity_id, id)
                .await?
            {
                Some(c) => Some(c),
                None => {
                    return Ok(Err(self.not_found(&format!(
                        "No customer with Stripe customer id '{id}' in the orders database. Send the id lookup_customer returned (stripe_customer_id), or the customer's e-mail."
                    ))))
                }
            },
            None => None,
        };
        match (by_email, found_by_stripe) {
            (None, Some(c)) => Ok(Ok(c)),
            (Some(email), found) => {
                let by_mail = match self.customer_or_outcome(caller, email).await? {
                    Ok(c) => c,
                    Err(o) => return Ok(Err(o)),
                };
                match found {
                    Some(c) if c.id != by_mail.id => Err(invalid(
                        "email and customer name two different customers; send one of them",
                    )),
                    _ => Ok(Ok(by_mail)),
                }
            }
            (None, None) => Err(invalid(
                "send the customer as email (e.g. sarah@example.com) or customer (the Stripe customer id cus_... that lookup_customer returns)",
            )),
        }
    }

    // -----------------------------------------------------------------------------------------
    // Reads
    // -----------------------------------------------------------------------------------------

    /// `lookup_customer`: the orders-database record merged with the live Stripe customer.
    ///
    /// # Errors
    /// [`ServiceError::InvalidArguments`] for a malformed e-mail; [`ServiceError::Store`].
    pub async fn lookup_customer(
        &self,
        caller: &Caller,
        arguments: &serde_json::Value,
        params: EmailParams,
    ) -> Result<ToolOutcome, ServiceError> {
        self.read(caller, "lookup_customer", arguments, || async {
            let email = validate_email(&params.email)?;
            let (output, text) = match self.customer_profile(caller, &email).await? {
                Ok(found) => found,
                Err(outcome) => return Ok(outcome),
            };
            let structured =
                serde_json::to_value(&output).map_err(crate::store::StoreError::from)?;
            Ok(self.ok(structured, text, AuditFacts::default()))
        })
        .await
    }

    /// The profile behind `lookup_customer` and `customer://{email}`.
    ///
    /// # Errors
    /// [`ServiceError::Store`]; `Ok(Err(outcome))` when the customer is unknown.
    pub async fn customer_profile(
        &self,
        caller: &Caller,
        email: &str,
    ) -> Result<Result<(LookupCustomerOutput, String), ToolOutcome>, ServiceError> {
        let customer = match self.customer_or_outcome(caller, email).await? {
            Ok(c) => c,
            Err(o) => return Ok(Err(o)),
        };
        let orders = self
            .pipeline
            .store()
            .orders_of(&caller.entity_id, &customer.id)
            .await?;
        let mut ltv: BTreeMap<String, i64> = BTreeMap::new();
        for o in &orders {
            *ltv.entry(o.currency.clone()).or_default() += o.amount_cents - o.refunded_cents;
        }
        let lifetime_value: Vec<AmountView> = ltv
            .into_iter()
            .map(|(currency, cents)| {
                let (amount, currency) = money(cents, &currency);
                AmountView {
                    currency,
                    amount_cents: cents,
                    amount,
                }
            })
            .collect();
        let stripe = match &customer.stripe_customer_id {
            None => StripeCustomerView {
                status: "not_linked".into(),
                id: None,
                email: None,
                name: None,
                error: None,
            },
            Some(id) => match self.stripe.customer(id).await {
                Ok(c) => StripeCustomerView {
                    status: "ok".into(),
                    id: Some(c.id),
                    email: c.email,
                    name: c.name,
                    error: None,
                },
                Err(StripeError::NotFound { .. }) => StripeCustomerView {
                    status: "missing".into(),
                    id: Some(id.clone()),
                    email: None,
                    name: None,
                    error: Some("Stripe has no such customer (deleted?)".into()),
                },
                Err(e) => StripeCustomerView {
                    status: "unavailable".into(),
                    id: Some(id.clone()),
                    email: None,
                    name: None,
                    error: Some(e.to_string()),
                },
            },
        };
        let count = |s: OrderStatus| orders.iter().filter(|o| o.status == s).count();
        let output = LookupCustomerOutput {
            customer: customer_view(&customer),
            order_count: orders.len(),
            paid_count: count(OrderStatus::Paid),
            refunded_count: count(OrderStatus::Refunded),
            partially_refunded_count: count(OrderStatus::PartiallyRefunded),
            lifetime_value: lifetime_value.clone(),
            stripe: stripe.clone(),
            sandbox: self.pipeline.sandbox(),
        };
        let text = format!(
            "Customer {} <{}> (internal id {}): {} orders ({} paid, {} refunded, {} partially refunded); lifetime value {}; Stripe {} ({}).",
            customer.name,
            customer.email,
            customer.id,
            output.order_count,
            output.paid_count,
            output.refunded_count,
            output.partially_refunded_count,
            lifetime_value
                .iter()
                .map(|a| format!("{} {}", a.amount, a.currency))
                .collect::<Vec<_>>()
                .join(", "),
            stripe.id.as_deref().unwrap_or("-"),
            stripe.status
        );
        Ok(Ok((output, text)))
    }

    /// `list_payments`: the customer's most recent Stripe PaymentIntents, with refunded
    /// amounts from their charges and the internal order each paid.
    ///
    /// # Errors
    /// [`ServiceError::InvalidArguments`]; [`ServiceError::Store`].
    pub async fn list_payments(
        &self,
        caller: &Caller,
        arguments: &serde_json::Value,
        params: ListPaymentsParams,
    ) -> Result<ToolOutcome, ServiceError> {
        self.read(caller, "list_payments", arguments, || async {
            let who =
                CustomerRef::from_params(params.email.as_deref(), params.customer.as_deref())?;
            let limit = params.limit.unwrap_or(5);
            if !(1..=100).contains(&limit) {
                return Err(invalid(format!("limit {limit} must be between 1 and 100")));
            }
            let customer = match self.customer_ref_or_outcome(caller, &who).await? {
                Ok(c) => c,
                Err(o) => return Ok(o),
            };
            let email = customer.email.clone();
            let Some(stripe_id) = customer.stripe_customer_id.clone() else {
                return Ok(
                    self.not_found(&format!("Customer '{email}' has no linked Stripe account."))
                );
            };
            let page = match self
                .stripe
                .payment_intents(Some(&stripe_id), u8::try_from(limit).unwrap_or(100), None)
                .await
            {
                Ok(p) => p,
                Err(e) => return Ok(self.stripe_failure("list_payments", &e, StripeCall::Read).0),
            };
            let mut payments = Vec::new();
            for pi in &page.data {
                payments.push(self.payment_view(caller, pi).await?);
            }
            let output = ListPaymentsOutput {
                customer: customer_view(&customer),
                payments,
                has_more: page.has_more,
                sandbox: self.pipeline.sandbox(),
            };
            let lines: Vec<String> = output
                .payments
                .iter()
                .map(|p| {
                    format!(
                        "- {} {} | {} | {} | intent {} | charge {} | refunded {}",
                        p.amount,
                        p.currency,
                        p.status,
                        p.created,
                        p.payment_intent_id,
                        p.charge_id.as_deref().unwrap_or("-"),
                        p.amount_refunded_cents
                            .map_or("?".into(), |c| money(c, &p.currency).0)
                    )
                })
                .collect();
            let text = format!(
                "Recent payments for {} ({email}), newest first:\n{}",
                customer.name,
                if lines.is_empty() {
                    "(none)".to_string()
                } else {
                    lines.join("\n")
                }
            );
            let structured =
                serde_json::to_value(&output).map_err(crate::store::StoreError::from)?;
            Ok(self.ok(structured, text, AuditFacts::default()))
        })
        .await
    }

    async fn payment_view(
        &self,
        caller: &Caller,
        pi: &PaymentIntent,
    ) -> Result<PaymentView, ServiceError> {
        let refunded = match &pi.latest_charge {
            Some(ch) => self
                .stripe
                .charge(ch)
                .await
                .ok()
                .map(|c| c.amount_refunded.minor_units()),
            None => None,
        };
        let order = self
            .pipeline
            .store()
            .order_by_charge(&caller.entity_id, &pi.id)
            .await?;
        Ok(PaymentView {
            payment_intent_id: pi.id.clone(),
            charge_id: pi.latest_charge.clone(),
            amount_cents: pi.amount.minor_units(),
            amount: pi.amount.to_decimal_string(),
            currency: pi.amount.currency().code().to_string(),
            status: pi.status.as_str().to_string(),
            amount_refunded_cents: refunded,
            created: stamp(pi.created),
            order_id: order.map(|o| o.id),
        })
    }

    /// `get_order_history`: the customer's orders from the orders database, with refunds.
    ///
    /// # Errors
    /// [`ServiceError::InvalidArguments`]; [`ServiceError::Store`].
    pub async fn get_order_history(
        &self,
        caller: &Caller,
        arguments: &serde_json::Value,
        params: EmailParams,
    ) -> Result<ToolOutcome, ServiceError> {
        self.read(caller, "get_order_history", arguments, || async {
            let email = validate_email(&params.email)?;
            let customer = match self.customer_or_outcome(caller, &email).await? {
                Ok(c) => c,
                Err(o) => return Ok(o),
            };
            let store = self.pipeline.store();
            let mut orders = Vec::new();
            for o in store.orders_of(&caller.entity_id, &customer.id).await? {
                let refunds = store
                    .refund_log(&caller.entity_id, &o.id)
                    .await?
                    .into_iter()
                    .map(|r| RefundLogView {
                        id: r.id,
                        stripe_refund_id: r.stripe_refund_id,
                        amount_cents: r.amount_cents,
                        reason: r.reason,
                        refunded_by: r.refunded_by,
                        created_at: stamp(r.created_at),
                    })
                    .collect();
                orders.push(OrderHistoryEntry {
                    order: order_view(&o),
                    refunds,
                });
            }
            let lines: Vec<String> = orders
                .iter()
                .map(|e| {
                    format!(
                        "- {} {} | {} | {} | order {} | charge {}",
                        e.order.amount,
                        e.order.currency,
                        e.order.status,
                        e.order.created_at,
                        e.order.order_id,
                        e.order.stripe_charge_id.as_deref().unwrap_or("-")
                    )
                })
                .collect();
            let output = OrderHistoryOutput {
                customer: customer_view(&customer),
                orders,
                sandbox: self.pipeline.sandbox(),
            };
            let text = format!(
                "Order history for {} ({email}), newest first:\n{}",
                customer.name,
                if lines.is_empty() {
                    "(none)".to_string()
                } else {
                    lines.join("\n")
                }
            );
            let structured =
                serde_json::to_value(&output).map_err(crate::store::StoreError::from)?;
            Ok(self.ok(structured, text, AuditFacts::default()))
        })
        .await
    }

    /// The order behind `payment://{charge_id}`, with its refunds and live Stripe status.
    ///
    /// # Errors
    /// [`ServiceError::Store`]; `Ok(None)` when this entity has no such order.
    pub async fn payment_resource(
        &self,
        caller: &Caller,
        charge_id: &str,
    ) -> Result<Option<serde_json::Value>, ServiceError> {
        let store = self.pipeline.store();
        let Some(order) = store.order_by_charge(&caller.entity_id, charge_id).await? else {
            return Ok(None);
        };
        let customer = store
            .customer(&caller.entity_id, &order.customer_id)
            .await?;
        let refunds: Vec<serde_json::Value> = store
            .refund_log(&caller.entity_id, &order.id)
            .await?
            .into_iter()
            .map(|r| {
                serde_json::json!({
                    "id": r.id, "stripe_refund_id": r.stripe_refund_id, "amount_cents": r.amount_cents,
                    "reason": r.reason, "refunded_by": r.refunded_by, "created_at": stamp(r.created_at),
                })
            })
            .collect();
        let stripe = match self.stripe.payment_intent(charge_id).await {
            Ok(pi) => serde_json::to_value(self.payment_view(caller, &pi).await?)
                .map_err(crate::store::StoreError::from)?,
            Err(e) => serde_json::json!({ "status": "unavailable", "error": e.to_string() }),
        };
        Ok(Some(serde_json::json!({
            "order": order_view(&order),
            "customer": customer.as_ref().map(customer_view),
            "refunds": refunds,
            "stripe": stripe,
            "sandbox": self.pipeline.sandbox(),
        })))
    }

    /// `revenue_summary`: orders paid in the range, net of refunds, per day and currency.
    ///
    /// # Errors
    /// [`ServiceError::InvalidArguments`] for bad or reversed dates; [`ServiceError::Store`].
    pub async fn revenue_summary(
        &self,
        caller: &Caller,
        arguments: &serde_json::Value,
        params: RevenueParams,
    ) -> Result<ToolOutcome, ServiceError> {
        self.read(caller, "revenue_summary", arguments, || async {
            let start = parse_day("start_date", &params.start_date)?;
            let end = parse_day("end_date", &params.end_date)?;
            if end < start {
                return Err(invalid(format!(
                    "end_date {end} is before start_date {start}; send start_date <= end_date"
                )));
            }
            if (end - start).num_days() > 3660 {
                return Err(invalid(
                    "the range is longer than 10 years; ask for a shorter one",
                ));
            }
            let from = start.and_time(chrono::NaiveTime::MIN).and_utc();
            let to = (end + ChronoDuration::days(1))
                .and_time(chrono::NaiveTime::MIN)
                .and_utc();
            let lines = self
                .pipeline
                .store()
                .revenue(&caller.entity_id, from, to)
                .await?;
            let day = |day: String, currency: &str, orders: i64, gross: i64, refunded: i64| {
                let (net, code) = money(gross - refunded, currency);
                RevenueDay {
                    day,
                    currency: code,
                    orders,
                    gross_cents: gross,
                    refunded_cents: refunded,
                    net_cents: gross - refunded,
                    net,
                }
            };
            let days: Vec<RevenueDay> = lines
                .iter()
                .map(|l| {
                    day(
                        l.day.to_string(),
                        &l.currency,
                        l.orders,
                        l.gross_cents,
                        l.refunded_cents,
                    )
                })
                .collect();
            let mut per_currency: BTreeMap<String, (i64, i64, i64)> = BTreeMap::new();
            for l in &lines {
                let t = per_currency.entry(l.currency.clone()).or_default();
                t.0 += l.orders;
                t.1 += l.gross_cents;
                t.2 += l.refunded_cents;
            }
            let totals: Vec<RevenueDay> = per_currency
                .iter()
                .map(|(c, (o, g, r))| day("total".into(), c, *o, *g, *r))
                .collect();
            let text = if totals.is_empty() {
                format!("No paid orders found between {start} and {end}.")
            } else {
                format!(
                    "Revenue {start} to {end} (paid orders net of refunds): {}",
                    totals
                        .iter()
                        .map(|t| format!("{} {} over {} orders", t.net, t.currency, t.orders))
                        .collect::<Vec<_>>()
                        .join("; ")
                )
            };
            let output = RevenueOutput {
                start_date: start.to_string(),
                end_date: end.to_string(),
                days,
                totals,
            };
            let structured =
                serde_json::to_value(&output).map_err(crate::store::StoreError::from)?;
            Ok(self.ok(structured, text, AuditFacts::default()))
        })
        .await
    }

    // -----------------------------------------------------------------------------------------
    // Writes
    // -----------------------------------------------------------------------------------------

    /// `flag_for_review`: records a charge for a person to look at (moves no money).
    ///
    /// # Errors
    /// [`ServiceError::InvalidArguments`]; [`ServiceError::Store`].
    pub async fn flag_for_review(
        &self,
        caller: &Caller,
        arguments: &serde_json::Value,
        params: FlagParams,
    ) -> Result<ToolOutcome, ServiceError> {
        let tool = "flag_for_review";
        let validated = validate_stripe_id("charge_id", &params.charge_id).and_then(|charge_id| {
            let note = params.note.trim().to_string();
            if note.is_empty() || note.chars().count() > 2000 {
                return Err(invalid(
                    "note must say, in 1 to 2000 characters, what a person should look at",
                ));
            }
            Ok((charge_id, note))
        });
        // A write (moves no money): refused in read-only mode, as the catalogue says.
        let (charge_id, note) = match self.admit_write(caller, tool, arguments, validated).await {
            Ok(v) => v,
            Err(refused) => return refused,
        };
        let note = note.as_str();
        self.read(caller, tool, arguments, || async {
            let store = self.pipeline.store();
            let Some(order) = store.order_by_charge(&caller.entity_id, &charge_id).await? else {
                return Ok(self.not_found(&format!(
                    "No order found with charge ID `{charge_id}`. Use the PaymentIntent id (pi_...) that list_payments or get_order_history shows."
                )));
            };
            let by = actor_label(caller);
            let flag = store.flag_for_review(&caller.entity_id, &order, note, &by).await?;
            let output = FlagOutput {
                flag_id: flag.id.clone(),
                order_id: flag.order_id,
                charge_id: flag.stripe_charge_id,
                note: flag.note,
                flagged_by: flag.flagged_by,
                status: flag.status,
            };
            let text = format!("Charge `{charge_id}` flagged for review (flag {}). Note: {note}", flag.id);
            let structured = serde_json::to_value(&output).map_err(crate::store::StoreError::from)?;
            Ok(self.ok(
                structured,
                text,
                AuditFacts { transaction_id: Some(charge_id.clone()), ..AuditFacts::default() },
            ))
        })
        .await
    }

    /// `create_payment_link`: a Stripe product, a one-time price and a payment link for it.
    /// It asks the customer for money and pays nothing out; with an `idempotency_key`, a retry
    /// returns the first link.
    ///
    /// # Errors
    /// [`ServiceError::InvalidArguments`] for no amount, a zero quantity, an unknown currency
    /// or an empty description; [`ServiceError::Store`].
    pub async fn create_payment_link(
        &self,
        caller: &Caller,
        arguments: &serde_json::Value,
        params: PaymentLinkParams,
    ) -> Result<ToolOutcome, ServiceError> {
        let tool = "create_payment_link";
        let validated = (|| {
            let currency = currency_of(params.currency.as_deref().unwrap_or("usd"))?;
            if params.amount_cents <= 0 {
                return Err(invalid(format!(
                    "amount_cents {} must be a positive number of minor units (4999 = 49.99)",
                    params.amount_cents
                )));
            }
            let amount = Money::from_minor(params.amount_cents, currency)
                .map_err(|e| invalid(e.to_string()))?;
            let quantity = params.quantity.unwrap_or(1);
            if !(1..=999).contains(&quantity) {
                return Err(invalid(format!(
                    "quantity {quantity} must be between 1 and 999"
                )));
            }
            let description = params.description.trim().to_string();
            if description.is_empty() || description.chars().count() > 250 {
                return Err(invalid(
                    "description must name what is sold, 1 to 250 characters",
                ));
            }
            if let Some(k) = &params.idempotency_key {
                if k.trim().is_empty() || k.len() > 200 {
                    return Err(invalid("idempotency_key must be 1 to 200 characters"));
                }
            }
            Ok((amount, quantity, description))
        })();
        let (amount, quantity, description) =
            match self.admit_write(caller, tool, arguments, validated).await {
                Ok(v) => v,
                Err(refused) => return refused,
            };
        // The policy decides a payment link like any call that asks for money (the built-in
        // rule `payment-links` allows it: the payer approves each payment); a verdict of
        // confirm or human goes through the gate, as for every other toolset.
        let binding = binding_hash(tool, arguments);
        let key = derived_key(
            params.idempotency_key.as_deref(),
            params.confirmation_token.as_deref(),
            params.approval_id.as_deref(),
        );
        let total = amount.minor_units().saturating_mul(i64::from(quantity));
        let (total_text, currency_code) = money(total, amount.currency().code());
        let defaults = serde_json::json!({
            "amount_cents": amount.minor_units(),
            "amount": amount.to_decimal_string(),
            "currency": amount.currency().code(),
            "quantity": quantity,
            "description": description,
        });
        self.pipeline
            .write(caller, TOOLSET, tool, arguments, key.as_deref(), || async {
                let preview = PreviewView {
                    tool: tool.into(),
                    operation: "Stripe payment link (asks a payer for money)".into(),
                    entity: caller.entity_id.clone(),
                    reference_id: "new payment link".into(),
                    reference_payment_type: "payment_link".into(),
                    amount: total_text.clone(),
                    amount_minor: total,
                    currency: currency_code.clone(),
                    from: "whoever pays through the link".into(),
                    to: format!("merchant entity {} (Stripe balance)", caller.entity_id),
                    sandbox: self.pipeline.sandbox(),
                };
                let moved_today = self
                    .pipeline
                    .store()
                    .moved_today(&caller.entity_id, &currency_code)
                    .await?;
                let gate = self
                    .pipeline
                    .gate(GateRequest {
                        caller,
                        toolset: TOOLSET,
                        tool,
                        arguments,
                        binding: &binding,
                        preview,
                        policy: PolicyInput {
                            toolset: TOOLSET.into(),
                            tool: tool.into(),
                            entity: caller.entity_id.clone(),
                            moves_money: crate::catalog::moves_money(tool),
                            amount_minor: Some(total),
                            currency: Some(currency_code.clone()),
                            transaction_age_days: None,
                            moved_today_minor: moved_today,
                            client: caller.client_name.clone(),
                        },
                        floor: Decision::Allow,
                        confirmation_token: params.confirmation_token.as_deref(),
                        approval_id: params.approval_id.as_deref(),
                        argument_names: ("confirmation_token", "approval_id"),
                        output_defaults: defaults.clone(),
                        key: key.as_deref(),
                    })
                    .await?;
                let claims = match gate {
                    Gate::Stop(outcome, settlement) => return Ok((outcome, settlement)),
                    Gate::Execute(claims) => claims,
                };
                let (outcome, settlement) = self
                    .send_payment_link(caller, key.as_deref(), amount, quantity, &description)
                    .await?;
                self.pipeline
                    .finish_gated(&claims, &outcome, settlement)
                    .await?;
                Ok((outcome, settlement))
            })
            .await
    }

    /// Creates the product, the price and the payment link at Stripe, each with its own
    /// `Idempotency-Key` derived from the call's key.
    async fn send_payment_link(
        &self,
        caller: &Caller,
        key: Option<&str>,
        amount: Money,
        quantity: u32,
        description: &str,
    ) -> Result<(ToolOutcome, Settlement), ServiceError> {
        let tool = "create_payment_link";
        let stripe_key = |step: &str| {
            key.map(|k| format!("{}-{step}", stripe_idempotency_key(&caller.entity_id, k)))
        };
        let product = match self
            .stripe
            .create_product(description, stripe_key("product").as_deref())
            .await
        {
            Ok(p) => p,
            Err(e) => return Ok(self.stripe_failure(tool, &e, StripeCall::Create)),
        };
        let price = match self
            .stripe
            .create_price(&product.id, amount, stripe_key("price").as_deref())
            .await
        {
            Ok(p) => p,
            Err(e) => return Ok(self.stripe_failure(tool, &e, StripeCall::Create)),
        };
        let mut metadata = BTreeMap::new();
        metadata.insert("paywarden_entity".to_string(), caller.entity_id.clone());
        let link = match self
            .stripe
            .create_payment_link(
                &[(price.id.as_str(), quantity)],
                &metadata,
                stripe_key("link").as_deref(),
            )
            .await
        {
            Ok(l) => l,
            Err(e) => return Ok(self.stripe_failure(tool, &e, StripeCall::Create)),
        };
        let output = PaymentLinkOutput {
            status: "created".into(),
            url: Some(link.url.clone()),
            payment_link_id: Some(link.id.clone()),
            product_id: Some(product.id),
            price_id: Some(price.id),
            confirmation: None,
            approval: None,
            amount_cents: amount.minor_units(),
            amount: amount.to_decimal_string(),
            currency: amount.currency().code().to_string(),
            quantity,
            description: description.to_string(),
            sandbox: self.pipeline.sandbox(),
            idempotent_replay: false,
        };
        let text = format!(
            "Payment link created: {}\nAmount: {} {} x {quantity} | Description: {description}",
            link.url,
            amount.to_decimal_string(),
            amount.currency().code()
        );
        let structured = serde_json::to_value(&output).map_err(crate::store::StoreError::from)?;
        Ok((
            self.ok(
                structured,
                text,
                AuditFacts {
                    transaction_id: Some(link.id),
                    ..AuditFacts::default()
                },
            ),
            Settlement::Final,
        ))
    }

    /// `issue_refund`: the seed's preview → confirm → refund, on paywarden's safety pipeline.
    /// Without a confirmation token (or approved approval) it previews and moves nothing; the
    /// model's `confirmed: true` alone never moves money.
    ///
    /// # Errors
    /// [`ServiceError::InvalidArguments`] for malformed arguments (audited);
    /// [`ServiceError::Store`]. Refusals, previews and approval requests are outcomes.
    pub async fn issue_refund(
        &self,
        caller: &Caller,
        arguments: &serde_json::Value,
        params: IssueRefundParams,
    ) -> Result<ToolOutcome, ServiceError> {
        let tool = "issue_refund";
        let command = match self
            .admit_write(caller, tool, arguments, validate_refund(params))
            .await
        {
            Ok(c) => c,
            Err(refused) => return refused,
        };
        let binding = binding_hash(tool, arguments);
        // With no key of its own, a confirmed or approved call is keyed by its token or
        // approval: a retry of it can never refund twice, and two separately confirmed partial
        // refunds never share a key.
        let key = derived_key(
            command.idempotency_key.as_deref(),
            command.confirmation_token.as_deref(),
            command.approval_id.as_deref(),
        );
        self.pipeline.check_late(self, caller, TOOLSET).await;
        if let Some(key) = &key {
            self.pipeline.reconcile(self, caller, key, &binding).await?;
        }
        self.pipeline
            .write(caller, TOOLSET, tool, arguments, key.as_deref(), || async {
                self.decide_refund(caller, &command, arguments, &binding, key.as_deref())
                    .await
            })
            .await
    }

    /// Executes an approved `issue_refund` approval (for `get_approval`), exactly once.
    ///
    /// # Errors
    /// [`ServiceError`] as [`OpsService::issue_refund`].
    pub async fn execute_approval(
        &self,
        caller: &Caller,
        approval: &crate::store::Approval,
    ) -> Result<ToolOutcome, ServiceError> {
        let mut arguments = approval.arguments.clone();
        if let serde_json::Value::Object(map) = &mut arguments {
            map.insert("approval_id".into(), approval.id.clone().into());
        }
        let params: IssueRefundParams = serde_json::from_value(arguments.clone()).map_err(|e| {
            invalid(format!(
                "approval {} holds unreadable arguments: {e}",
                approval.id
            ))
        })?;
        self.issue_refund(caller, &arguments, params).await
    }

    /// Finds the order, checks the customer, the refund window and Stripe's refundable
    /// remainder. `Ok(Err(..))` is a refusal to return as is.
    async fn check_refund(
        &self,
        caller: &Caller,
        command: &RefundCommand,
    ) -> Result<Result<CheckedRefund, (ToolOutcome, Settlement)>, ServiceError> {
        let tool = "issue_refund";
        let refuse = |kind: &str, message: String| {
            let mut o = self.pipeline.error_outcome(kind, &message, None);
            o.audit.outcome = "rejected".into();
            Ok(Err((o, Settlement::Final)))
        };
        let store = self.pipeline.store();
        let customer = match store
            .customer_by_email(&caller.entity_id, &command.email)
            .await?
        {
            Some(c) => c,
            None => {
                return refuse(
                    "not_found",
                    format!(
                        "No customer found with email '{}'. Nothing was refunded.",
                        command.email
                    ),
                )
            }
        };
        let order = match &command.charge_id {
            Some(id) => {
                // A charge id (ch_...) is resolved to its PaymentIntent, which orders record.
                let pi_id = if id.starts_with("ch_") {
                    match self.stripe.charge(id).await {
                        Ok(ch) => ch.payment_intent.unwrap_or_else(|| id.clone()),
                        Err(StripeError::NotFound { .. }) => id.clone(),
                        Err(e) => return Ok(Err(self.stripe_failure(tool, &e, StripeCall::Read))),
                    }
                } else {
                    id.clone()
                };
                match store.order_by_charge(&caller.entity_id, &pi_id).await? {
                    Some(o) if o.customer_id == customer.id => o,
                    Some(_) => {
                        return refuse(
                            "wrong_customer",
                            format!(
                                "Charge `{id}` belongs to another customer, not {}. Nothing was refunded; check the charge with list_payments for this customer.",
                                command.email
                            ),
                        )
                    }
                    None => {
                        return refuse(
                            "not_found",
                            format!(
                                "No order found with charge ID `{id}` for {}. Use a PaymentIntent id (pi_...) from list_payments.",
                                command.email
                            ),
                        )
                    }
                }
            }
            None => match store
                .orders_of(&caller.entity_id, &customer.id)
                .await?
                .into_iter()
                .find(|o| o.status == OrderStatus::Paid)
            {
                Some(o) => o,
                None => {
                    return refuse(
                        "not_found",
                        format!("No paid orders found for {} to refund.", command.email),
                    )
                }
            },
        };
        let window = self.pipeline.safety().config.refund_window_days;
        let age = (Utc::now() - order.created_at).num_days();
        if Utc::now() - order.created_at > ChronoDuration::days(window) {
            return refuse(
                "refund_window",
                format!(
                    "Refund denied by the {window}-day refund rule: charge `{}` is {age} days old. paywarden refuses refunds of older charges whatever is asked; handle this case outside the agent.",
                    order.stripe_charge_id.as_deref().unwrap_or(&order.id)
                ),
            );
        }
        let Some(pi_id) = order.stripe_charge_id.clone() else {
            return refuse(
                "not_found",
                format!("Order {} has no Stripe payment to refund.", order.id),
            );
        };
        let pi = match self.stripe.payment_intent(&pi_id).await {
            Ok(pi) => pi,
            Err(e) => return Ok(Err(self.stripe_failure(tool, &e, StripeCall::Read))),
        };
        if customer.stripe_customer_id.is_some() && pi.customer != customer.stripe_customer_id {
            return refuse(
                "wrong_customer",
                format!(
                    "Stripe says PaymentIntent `{pi_id}` belongs to another customer than {}. Nothing was refunded.",
                    command.email
                ),
            );
        }
        if pi.status != PaymentIntentStatus::Succeeded {
            return refuse(
                "not_refundable",
                format!(
                    "PaymentIntent `{pi_id}` is {}, not succeeded: there is nothing to refund.",
                    pi.status.as_str()
                ),
            );
        }
        let (charge_amount, refunded_before) = match &pi.latest_charge {
            Some(ch) => match self.stripe.charge(ch).await {
                Ok(c) => (c.amount.minor_units(), c.amount_refunded.minor_units()),
                Err(e) => return Ok(Err(self.stripe_failure(tool, &e, StripeCall::Read))),
            },
            None => (pi.amount_received.minor_units(), order.refunded_cents),
        };
        let refundable = (charge_amount - refunded_before).max(0);
        let (remainder, currency) = money(refundable, &order.currency);
        if refundable == 0 {
            return refuse(
                "already_refunded",
                format!(
                    "Charge `{pi_id}` is already refunded in full (order status {}). Nothing was refunded.",
                    if order.status == OrderStatus::Refunded { "refunded" } else { "refunded at Stripe" }
                ),
            );
        }
        let amount_cents = command.amount_cents.unwrap_or(refundable);
        if amount_cents > refundable {
            return refuse(
                "amount_too_large",
                format!(
                    "amount_cents {amount_cents} is more than the refundable remainder of charge `{pi_id}`: {refundable} ({remainder} {currency}). Nothing was refunded; ask for at most {refundable}."
                ),
            );
        }
        Ok(Ok(CheckedRefund {
            customer,
            order,
            payment_intent: pi_id,
            amount_cents,
            refunded_before,
            charge_amount,
        }))
    }

    async fn decide_refund(
        &self,
        caller: &Caller,
        command: &RefundCommand,
        arguments: &serde_json::Value,
        binding: &str,
        key: Option<&str>,
    ) -> Result<(ToolOutcome, Settlement), ServiceError> {
        let tool = "issue_refund";
        let checked = match self.check_refund(caller, command).await? {
            Ok(c) => c,
            Err(refusal) => return Ok(refusal),
        };
        let currency = checked.order.currency.to_ascii_uppercase();
        let (amount, _) = money(checked.amount_cents, &currency);
        let moved_today = self
            .pipeline
            .store()
            .moved_today(&caller.entity_id, &currency)
            .await?;
        let preview = PreviewView {
            tool: tool.into(),
            operation: "Stripe refund".into(),
            entity: caller.entity_id.clone(),
            reference_id: checked.payment_intent.clone(),
            reference_payment_type: "payment_intent".into(),
            amount,
            amount_minor: checked.amount_cents,
            currency: currency.clone(),
            from: format!("merchant entity {} (Stripe balance)", caller.entity_id),
            to: format!(
                "{} <{}> (order {}, reason: {})",
                checked.customer.name, checked.customer.email, checked.order.id, command.reason
            ),
            sandbox: self.pipeline.sandbox(),
        };
        let gate = self
            .pipeline
            .gate(GateRequest {
                caller,
                toolset: TOOLSET,
                tool,
                arguments,
                binding,
                preview,
                policy: PolicyInput {
                    toolset: TOOLSET.into(),
                    tool: tool.into(),
                    entity: caller.entity_id.clone(),
                    moves_money: true,
                    amount_minor: Some(checked.amount_cents),
                    currency: Some(currency),
                    transaction_age_days: Some((Utc::now() - checked.order.created_at).num_days()),
                    moved_today_minor: moved_today,
                    client: caller.client_name.clone(),
                },
                floor: Decision::Confirm,
                confirmation_token: command.confirmation_token.as_deref(),
                approval_id: command.approval_id.as_deref(),
                argument_names: ("confirmation_token", "approval_id"),
                output_defaults: serde_json::json!({}),
                key,
            })
            .await?;
        let claims = match gate {
            Gate::Stop(outcome, settlement) => return Ok((outcome, settlement)),
            Gate::Execute(claims) => claims,
        };
        let Some(key) = key else {
            // Unreachable in practice: execution needs a token or an approval, each of which
            // keys the call. Refuse rather than refund without a key.
            let outcome = self.pipeline.error_outcome(
                "internal",
                "issue_refund needs an idempotency key to execute; nothing was sent.",
                None,
            );
            self.pipeline
                .finish_gated(&claims, &outcome, Settlement::NotSent)
                .await?;
            return Ok((outcome, Settlement::NotSent));
        };
        // Under the lease, the checks run again on exactly the order and amount that were
        // previewed and agreed to, never on "the most recent paid order" afresh.
        let pinned = RefundCommand {
            charge_id: Some(checked.payment_intent.clone()),
            amount_cents: Some(checked.amount_cents),
            ..command.clone()
        };
        let (mut outcome, settlement) = self
            .execute_refund(caller, &pinned, &checked.order.id, key)
            .await?;
        self.pipeline
            .attach_receipt(&claims, &mut outcome, settlement, "stripe");
        self.pipeline
            .finish_gated(&claims, &outcome, settlement)
            .await
            .map_err(|e| match (e, settlement) {
                (ServiceError::Store(source), Settlement::Final | Settlement::Unknown) => {
                    self.pipeline.unrecorded(source)
                }
                (e, _) => e,
            })?;
        Ok((outcome, settlement))
    }

    /// Under the order's lease: check again on fresh Stripe state, refund at Stripe with the
    /// key's `Idempotency-Key`, then record the refund (order status, refund_log) and the
    /// movement.
    async fn execute_refund(
        &self,
        caller: &Caller,
        command: &RefundCommand,
        order_id: &str,
        key: &str,
    ) -> Result<(ToolOutcome, Settlement), ServiceError> {
        let tool = "issue_refund";
        let store = self.pipeline.store();
        let holder = uuid::Uuid::new_v4().to_string();
        let lease = ChronoDuration::milliseconds(
            i64::try_from(self.stripe.timeout().as_millis()).unwrap_or(i64::MAX / 8) * 4 + 5_000,
        );
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let resource = format!("order:{order_id}");
        while !store
            .try_lock_transaction(&caller.entity_id, &resource, &holder, lease)
            .await?
        {
            if std::time::Instant::now() > deadline {
                return Ok((
                    self.pipeline.error_outcome(
                        "busy",
                        &format!("{tool}: another refund of order {order_id} has been running for 30 s; nothing was sent. Retry the same call."),
                        None,
                    ),
                    Settlement::NotSent,
                ));
            }
            tokio::time::sleep(std::time::Duration::from_millis(15)).await;
        }
        let result = self.execute_refund_locked(caller, command, key).await;
        // Past the send, a failure to give the lease back must not hide the outcome: the
        // lease runs out on its own.
        if let Err(e) = store
            .unlock_transaction(&caller.entity_id, &resource, &holder)
            .await
        {
            tracing::warn!(error = %e, "could not release a transaction lease; it runs out on its own");
        }
        result
    }

    async fn execute_refund_locked(
        &self,
        caller: &Caller,
        command: &RefundCommand,
        key: &str,
    ) -> Result<(ToolOutcome, Settlement), ServiceError> {
        let checked = match self.check_refund(caller, command).await? {
            Ok(c) => c,
            Err(refusal) => return Ok(refusal),
        };
        self.send_refund(caller, command, &checked, key).await
    }

    async fn send_refund(
        &self,
        caller: &Caller,
        command: &RefundCommand,
        checked: &CheckedRefund,
        key: &str,
    ) -> Result<(ToolOutcome, Settlement), ServiceError> {
        let tool = "issue_refund";
        let by = REFUNDED_BY;
        let mut metadata = BTreeMap::new();
        metadata.insert("order_id".to_string(), checked.order.id.clone());
        metadata.insert("paywarden_key".to_string(), refund_marker(key));
        metadata.insert("refunded_by".to_string(), by.to_string());
        metadata.insert(
            "client".to_string(),
            actor_label(caller).chars().take(500).collect(),
        );
        metadata.insert(
            "reason".to_string(),
            command.reason.chars().take(500).collect(),
        );
        let intent = Intent {
            toolset: TOOLSET.into(),
            tool: tool.into(),
            reference_id: checked.payment_intent.clone(),
            operation: "refund".into(),
            amount_minor: Some(checked.amount_cents),
            currency: checked.order.currency.to_ascii_uppercase(),
            marker: refund_marker(key),
            settle_window_ms: u64::try_from(self.pipeline.settle_window().as_millis())
                .unwrap_or(u64::MAX),
            extra: serde_json::json!({
                "orderId": checked.order.id,
                "email": checked.customer.email,
                "reason": command.reason,
            }),
        };
        self.pipeline
            .store()
            .record_idempotent_intent(
                &caller.entity_id,
                key,
                &serde_json::to_value(&intent).map_err(crate::store::StoreError::from)?,
            )
            .await?;
        let reason = RefundReason::from_wire(&command.reason);
        let request = RefundRequest {
            payment_intent: checked.payment_intent.clone(),
            amount: Some(checked.amount_cents),
            reason: Some(if reason.is_requestable() {
                reason
            } else {
                RefundReason::RequestedByCustomer
            }),
            metadata,
        };
        let (refund, replayed) = match self
            .stripe
            .create_refund(&request, &stripe_idempotency_key(&caller.entity_id, key))
            .await
        {
            Ok(r) => r,
            Err(e) => return Ok(self.stripe_failure(tool, &e, StripeCall::Refund)),
        };
        match self
            .record_refund(caller, command, checked, &refund, replayed.request_id, by)
            .await
        {
            Ok(outcome) => Ok((outcome, Settlement::Final)),
            // Stripe refunded but paywarden could not record it: keep the key blocked as an
            // unknown outcome, so the retry finds the refund at Stripe (by its marker) and
            // records it instead of refunding again.
            Err(e) => {
                tracing::error!(error = %e, refund = %refund.id, "refund made at Stripe but not recorded yet");
                Ok((
                    self.pipeline.error_outcome(
                        "not_recorded",
                        &format!(
                            "issue_refund: Stripe made refund {} but paywarden could not record it ({e}). Retry this exact call: paywarden finds the refund at Stripe and records it; it never refunds twice.",
                            refund.id
                        ),
                        None,
                    ),
                    Settlement::Unknown,
                ))
            }
        }
    }

    async fn record_refund(
        &self,
        caller: &Caller,
        command: &RefundCommand,
        checked: &CheckedRefund,
        refund: &crate::connectors::stripe::Refund,
        request_id: Option<String>,
        by: &str,
    ) -> Result<ToolOutcome, ServiceError> {
        let store = self.pipeline.store();
        let amount = refund.amount.minor_units();
        let total = (checked.refunded_before + amount).min(checked.charge_amount);
        let log = store
            .record_refund(
                &caller.entity_id,
                &checked.order.id,
                &refund.id,
                amount,
                total,
                &command.reason,
                by,
            )
            .await?;
        store
            .record_movement(
                &caller.entity_id,
                TOOLSET,
                "issue_refund",
                &checked.payment_intent,
                &refund.id,
                amount,
                refund.amount.currency().code(),
            )
            .await?;
        let order = store
            .order(&caller.entity_id, &checked.order.id)
            .await?
            .unwrap_or_else(|| checked.order.clone());
        let view = order_view(&order);
        let output = IssueRefundOutput {
            status: "executed".into(),
            refund: Some(RefundView {
                stripe_refund_id: refund.id.clone(),
                amount_cents: amount,
                amount: refund.amount.to_decimal_string(),
                currency: refund.amount.currency().code().to_string(),
                status: refund.status.as_str().to_string(),
                payment_intent_id: checked.payment_intent.clone(),
            }),
            order: Some(view.clone()),
            refund_log_id: Some(log.id.clone()),
            refunded_by: Some(by.to_string()),
            confirmation: None,
            approval: None,
            sandbox: self.pipeline.sandbox(),
            idempotent_replay: false,
            receipt: None,
        };
        let structured = serde_json::to_value(&output).map_err(crate::store::StoreError::from)?;
        let text = format!(
            "Refunded {} {} to {} ({}) — Stripe refund {} ({}). Order {} is now {}; logged in refund_log as {} (reason: {}).",
            refund.amount.to_decimal_string(),
            refund.amount.currency().code(),
            checked.customer.name,
            checked.customer.email,
            refund.id,
            refund.status.as_str(),
            order.id,
            view.status,
            log.id,
            command.reason
        );
        Ok(self.ok(
            structured,
            text,
            AuditFacts {
                outcome: "ok".into(),
                result_code: Some(refund.status.as_str().to_string()),
                provider_request_id: request_id,
                transaction_id: Some(refund.id.clone()),
                receipt: None,
            },
        ))
    }
}

/// What kind of Stripe request failed, for what its failure means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StripeCall {
    /// A read: nothing changes at Stripe.
    Read,
    /// A refund: money may have moved; an unknown outcome is reconciled.
    Refund,
    /// A creation (product, price, payment link) under Stripe's own Idempotency-Key.
    Create,
}

/// paywarden's derived reference of idempotency key `key` on a Stripe refund (metadata
/// `paywarden_key`): how a refund whose answer paywarden never heard is recognised at Stripe.
fn refund_marker(key: &str) -> String {
    token_hash(key)[..32].to_string()
}

impl Reconciler for OpsService {
    type Op = Refund;

    fn found(refund: &Refund) -> Found {
        Found {
            transaction_id: refund.id.clone(),
            succeeded: !matches!(refund.status, RefundStatus::Failed | RefundStatus::Canceled),
        }
    }

    /// The refunds of exactly `intent`'s PaymentIntent, amount and currency that carry the
    /// key's marker (metadata `paywarden_key`).
    async fn find(&self, _caller: &Caller, intent: &Intent) -> Result<Vec<Refund>, String> {
        let refunds = self
            .stripe
            .refunds_for(&intent.reference_id)
            .await
            .map_err(|e| e.to_string())?;
        let mut found: Vec<Refund> = refunds
            .data
            .into_iter()
            .filter(|r| {
                r.metadata.get("paywarden_key") == Some(&intent.marker)
                    && r.payment_intent.as_deref() == Some(intent.reference_id.as_str())
                    && intent
                        .amount_minor
                        .is_none_or(|a| r.amount.minor_units() == a)
                    && r.amount.currency().code() == intent.currency
            })
            .collect();
        found.sort_by_key(|r| r.created);
        Ok(found)
    }

    /// Records a refund found at Stripe as `issue_refund` would have (refund_log, the order's
    /// refunded amount, the movement; each once).
    async fn record(
        &self,
        caller: &Caller,
        intent: &Intent,
        refund: &Refund,
    ) -> Result<ToolOutcome, ServiceError> {
        let field = |name: &str| {
            intent
                .extra
                .get(name)
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_string()
        };
        if !Self::found(refund).succeeded {
            let mut outcome = self.pipeline.error_outcome(
                "provider_rejected",
                &format!(
                    "issue_refund: Stripe refund {} of {} {} is {}: nothing was refunded.",
                    refund.id,
                    refund.amount.to_decimal_string(),
                    refund.amount.currency().code(),
                    refund.status.as_str()
                ),
                None,
            );
            outcome.audit.outcome = "rejected".into();
            outcome.audit.transaction_id = Some(refund.id.clone());
            return Ok(outcome);
        }
        let store = self.pipeline.store();
        let order = store.order(&caller.entity_id, &field("orderId")).await?;
        let customer = store
            .customer_by_email(&caller.entity_id, &field("email"))
            .await?;
        let (Some(order), Some(customer)) = (order, customer) else {
            // The order is gone from paywarden's database: the movement is still recorded.
            store
                .record_movement(
                    &caller.entity_id,
                    TOOLSET,
                    "issue_refund",
                    &intent.reference_id,
                    &refund.id,
                    refund.amount.minor_units(),
                    refund.amount.currency().code(),
                )
                .await?;
            return Ok(self.ok(
                serde_json::json!({"status": "executed", "stripe_refund_id": refund.id}),
                format!(
                    "Stripe made refund {} of {} {}; its order is no longer in paywarden's database.",
                    refund.id,
                    refund.amount.to_decimal_string(),
                    refund.amount.currency().code()
                ),
                AuditFacts {
                    transaction_id: Some(refund.id.clone()),
                    ..AuditFacts::default()
                },
            ));
        };
        let checked = CheckedRefund {
            refunded_before: order.refunded_cents,
            charge_amount: order.amount_cents,
            payment_intent: intent.reference_id.clone(),
            amount_cents: refund.amount.minor_units(),
            customer,
            order,
        };
        let command = RefundCommand {
            email: field("email"),
            charge_id: Some(intent.reference_id.clone()),
            amount_cents: Some(refund.amount.minor_units()),
            reason: field("reason"),
            confirmation_token: None,
            approval_id: None,
            idempotency_key: None,
        };
        self.record_refund(caller, &command, &checked, refund, None, REFUNDED_BY)
            .await
    }
}

/// What `refund_log.refunded_by` says for every refund made through the tools: the Payment Ops
/// seed's schema defines the column as `"ai-assistant"`. Who called and with which MCP client
/// (and, for an approval, which operator decided) is in the audit log, keyed by the refund.
pub const REFUNDED_BY: &str = "ai-assistant";

/// Who a review flag says flagged it (and what Stripe's refund metadata records as `client`):
/// the MCP client's name (or `ai-assistant`) and the entity.
fn actor_label(caller: &Caller) -> String {
    format!(
        "{} via paywarden (entity {})",
        caller.client_name.as_deref().unwrap_or("ai-assistant"),
        caller.entity_id
    )
}

fn validate_refund(params: IssueRefundParams) -> Result<RefundCommand, ServiceError> {
    let email = validate_email(&params.email)?;
    let charge_id = params
        .charge_id
        .as_deref()
        .map(|c| validate_stripe_id("charge_id", c))
        .transpose()?;
    if let Some(a) = params.amount_cents {
        if a <= 0 {
            return Err(invalid(format!(
                "amount_cents {a} must be a positive number of minor units (4999 = 49.99), or omitted to refund everything not yet refunded"
            )));
        }
    }
    let reason = params
        .reason
        .map(|r| r.trim().to_string())
        .filter(|r| !r.is_empty())
        .unwrap_or_else(|| "requested_by_customer".into());
    if reason.chars().count() > 500 {
        return Err(invalid("reason must be at most 500 characters"));
    }
    let bounded = |field: &str, v: Option<String>, max: usize| match v {
        Some(s) if s.trim().is_empty() || s.len() > max => {
            Err(invalid(format!("{field} must be 1 to {max} characters")))
        }
        other => Ok(other),
    };
    Ok(RefundCommand {
        email,
        charge_id,
        amount_cents: params.amount_cents,
        reason,
        confirmation_token: bounded("confirmation_token", params.confirmation_token, 100)?,
        approval_id: bounded("approval_id", params.approval_id, 100)?,
        idempotency_key: bounded("idempotency_key", params.idempotency_key, 255)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_and_ids_are_validated() {
        assert!(validate_email("sarah@example.com").is_ok());
        for bad in [
            "",
            "sarah",
            "a@b",
            "a b@example.com",
            "@example.com",
            "a@@example.com",
        ] {
            assert!(validate_email(bad).is_err(), "{bad}");
        }
        assert!(validate_stripe_id("charge_id", "pi_123abc").is_ok());
        assert!(validate_stripe_id("charge_id", "pi 1").is_err());
        assert!(validate_stripe_id("charge_id", "x").is_err());
    }

    #[test]
    fn stripe_keys_differ_per_entity_and_key() {
        let a = stripe_idempotency_key("e1", "k");
        assert_eq!(a, stripe_idempotency_key("e1", "k"));
        assert_ne!(a, stripe_idempotency_key("e2", "k"));
        assert_ne!(a, stripe_idempotency_key("e1", "k2"));
        assert!(a.len() <= 255);
    }

    #[test]
    fn refund_arguments_are_checked() {
        let base = IssueRefundParams {
            email: "sarah@example.com".into(),
            charge_id: None,
            amount_cents: None,
            reason: None,
            confirmed: Some(true),
            confirmation_token: None,
            approval_id: None,
            idempotency_key: None,
        };
        let c = validate_refund(base.clone()).unwrap();
        assert_eq!(c.reason, "requested_by_customer");
        assert!(validate_refund(IssueRefundParams {
            amount_cents: Some(0),
            ..base.clone()
        })
        .is_err());
        assert!(validate_refund(IssueRefundParams {
            amount_cents: Some(-5),
            ..base.clone()
        })
        .is_err());
        assert!(validate_refund(IssueRefundParams {
            idempotency_key: Some(" ".into()),
            ..base
        })
        .is_err());
    }
}
