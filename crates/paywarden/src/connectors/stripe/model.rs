//! What leaves the Stripe connector: paywarden's own view of Stripe objects. Amounts are
//! [`Money`] (integer minor units plus an ISO 4217 [`paywarden_domain::Currency`]); times are
//! UTC; ids are Stripe's opaque strings (up to 255 characters, prefixes such as `pi_` are not
//! guaranteed by Stripe and are never parsed).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use paywarden_domain::Money;

/// A Stripe customer (Stripe object `customer`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Customer {
    /// Stripe `id`, e.g. `cus_NffrFeUfNV2Hib`.
    pub id: String,
    /// Stripe `email`; `None` when the customer has none.
    pub email: Option<String>,
    /// Stripe `name`.
    pub name: Option<String>,
    /// Stripe `created` (Unix seconds), as UTC.
    pub created: DateTime<Utc>,
}

/// Stripe `payment_intent.status`. Stripe documents exactly these seven values; a value outside
/// them is reported as [`super::StripeError::UnexpectedResponse`] rather than guessed at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PaymentIntentStatus {
    /// `requires_payment_method`: no (usable) payment method attached yet, or the last attempt
    /// failed.
    RequiresPaymentMethod,
    /// `requires_confirmation`: ready, waiting for confirmation.
    RequiresConfirmation,
    /// `requires_action`: the customer must act (e.g. 3-D Secure).
    RequiresAction,
    /// `processing`: the payment method is processing the payment.
    Processing,
    /// `requires_capture`: authorized, waiting for capture.
    RequiresCapture,
    /// `canceled`: canceled; no further charges possible.
    Canceled,
    /// `succeeded`: the funds are captured.
    Succeeded,
}

impl PaymentIntentStatus {
    /// Stripe's wire value, e.g. `"requires_capture"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RequiresPaymentMethod => "requires_payment_method",
            Self::RequiresConfirmation => "requires_confirmation",
            Self::RequiresAction => "requires_action",
            Self::Processing => "processing",
            Self::RequiresCapture => "requires_capture",
            Self::Canceled => "canceled",
            Self::Succeeded => "succeeded",
        }
    }

    /// Parses Stripe's wire value; `None` for anything undocumented.
    pub fn from_wire(raw: &str) -> Option<Self> {
        Some(match raw {
            "requires_payment_method" => Self::RequiresPaymentMethod,
            "requires_confirmation" => Self::RequiresConfirmation,
            "requires_action" => Self::RequiresAction,
            "processing" => Self::Processing,
            "requires_capture" => Self::RequiresCapture,
            "canceled" => Self::Canceled,
            "succeeded" => Self::Succeeded,
            _ => return None,
        })
    }
}

/// A Stripe PaymentIntent (Stripe object `payment_intent`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentIntent {
    /// Stripe `id`, e.g. `pi_3MtwBwLkdIwHu7ix28a3tqPa`.
    pub id: String,
    /// Stripe `customer` (an id; paywarden never asks Stripe to expand it).
    pub customer: Option<String>,
    /// Stripe `amount` (minor units) with `currency`: the amount intended to be collected.
    pub amount: Money,
    /// Stripe `amount_received` (minor units, same currency): what was actually collected.
    pub amount_received: Money,
    /// Stripe `status`.
    pub status: PaymentIntentStatus,
    /// Stripe `latest_charge` (a charge id), `None` before any attempt.
    pub latest_charge: Option<String>,
    /// Stripe `created` (Unix seconds), as UTC.
    pub created: DateTime<Utc>,
    /// Stripe `metadata` (string keys and values).
    pub metadata: BTreeMap<String, String>,
}

/// A Stripe charge (Stripe object `charge`), reduced to what refund decisions need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Charge {
    /// Stripe `id`, e.g. `ch_3MmlLrLkdIwHu7ix0snN0B15`.
    pub id: String,
    /// Stripe `amount` (minor units) with `currency`.
    pub amount: Money,
    /// Stripe `amount_refunded` (minor units, same currency); zero when nothing was refunded.
    pub amount_refunded: Money,
    /// Stripe `refunded`: `true` once the charge is fully refunded.
    pub refunded: bool,
    /// Stripe `payment_intent` (an id), when the charge belongs to one.
    pub payment_intent: Option<String>,
}

/// Stripe `refund.status`. Stripe documents exactly these five values; a value outside them is
/// reported as [`super::StripeError::UnexpectedResponse`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RefundStatus {
    /// `pending`: submitted, not final yet.
    Pending,
    /// `requires_action`: the customer must act (e.g. provide bank details).
    RequiresAction,
    /// `succeeded`: the money is on its way back.
    Succeeded,
    /// `failed`: the refund failed; the money returned to the balance.
    Failed,
    /// `canceled`: the refund was canceled.
    Canceled,
}

impl RefundStatus {
    /// Stripe's wire value, e.g. `"succeeded"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::RequiresAction => "requires_action",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Canceled => "canceled",
        }
    }

    /// Parses Stripe's wire value; `None` for anything undocumented.
    pub fn from_wire(raw: &str) -> Option<Self> {
        Some(match raw {
            "pending" => Self::Pending,
            "requires_action" => Self::RequiresAction,
            "succeeded" => Self::Succeeded,
            "failed" => Self::Failed,
            "canceled" => Self::Canceled,
            _ => return None,
        })
    }
}

/// Stripe `refund.reason`. A request may only carry the three user-provided reasons
/// (`duplicate`, `fraudulent`, `requested_by_customer`); Stripe itself sets
/// `expired_uncaptured_charge`, and has added values to this field before without an API version
/// change (that is how `expired_uncaptured_charge` arrived), hence [`RefundReason::Unknown`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RefundReason {
    /// `duplicate`.
    Duplicate,
    /// `fraudulent`.
    Fraudulent,
    /// `requested_by_customer`.
    RequestedByCustomer,
    /// `expired_uncaptured_charge` (set by Stripe only; refused in a request).
    ExpiredUncapturedCharge,
    /// A value Stripe added after this code was written (responses only; refused in a request).
    Unknown(String),
}

impl RefundReason {
    /// Stripe's wire value.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Duplicate => "duplicate",
            Self::Fraudulent => "fraudulent",
            Self::RequestedByCustomer => "requested_by_customer",
            Self::ExpiredUncapturedCharge => "expired_uncaptured_charge",
            Self::Unknown(raw) => raw,
        }
    }

    /// Parses Stripe's wire value; never fails (see [`RefundReason::Unknown`]).
    pub fn from_wire(raw: &str) -> Self {
        match raw {
            "duplicate" => Self::Duplicate,
            "fraudulent" => Self::Fraudulent,
            "requested_by_customer" => Self::RequestedByCustomer,
            "expired_uncaptured_charge" => Self::ExpiredUncapturedCharge,
            other => Self::Unknown(other.to_string()),
        }
    }

    /// Whether a refund request may carry this reason (the three user-provided ones).
    pub fn is_requestable(&self) -> bool {
        matches!(
            self,
            Self::Duplicate | Self::Fraudulent | Self::RequestedByCustomer
        )
    }
}

/// A Stripe refund (Stripe object `refund`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refund {
    /// Stripe `id`, e.g. `re_1Nispe2eZvKYlo2Cd31jOCgZ`.
    pub id: String,
    /// Stripe `amount` (minor units) with `currency`.
    pub amount: Money,
    /// Stripe `status`.
    pub status: RefundStatus,
    /// Stripe `payment_intent` (an id).
    pub payment_intent: Option<String>,
    /// Stripe `charge` (an id).
    pub charge: Option<String>,
    /// Stripe `reason`.
    pub reason: Option<RefundReason>,
    /// Stripe `created` (Unix seconds), as UTC.
    pub created: DateTime<Utc>,
    /// Stripe `metadata`.
    pub metadata: BTreeMap<String, String>,
}

/// A Stripe product (Stripe object `product`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Product {
    /// Stripe `id`, e.g. `prod_NWjs8kKbJWmuuc`.
    pub id: String,
    /// Stripe `name`.
    pub name: String,
}

/// A one-time Stripe price (Stripe object `price`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Price {
    /// Stripe `id`, e.g. `price_1MoBy5LkdIwHu7ixZhnattbh`.
    pub id: String,
    /// Stripe `product` (an id).
    pub product: String,
    /// Stripe `unit_amount` (minor units) with `currency`.
    pub unit_amount: Money,
}

/// A Stripe payment link (Stripe object `payment_link`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentLink {
    /// Stripe `id`, e.g. `plink_1MoC3ULkdIwHu7ixZjtGpVl2`.
    pub id: String,
    /// Stripe `url`: the page a customer pays on.
    pub url: String,
}

/// One page of a Stripe list (`{"object": "list", "data": [...], "has_more": bool}`) or search
/// result (`"object": "search_result"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListPage<T> {
    /// The objects on this page, in Stripe's order (newest first for lists).
    pub data: Vec<T>,
    /// Stripe `has_more`: more objects follow this page. For the paging helpers, `true` means
    /// the cap was reached before the end.
    pub has_more: bool,
}

/// What Stripe said about an idempotent write (response headers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replayed {
    /// `Idempotent-Replayed: true`: Stripe returned the stored result of an earlier request
    /// with the same `Idempotency-Key` instead of performing the write again.
    pub replayed: bool,
    /// `Request-Id` of this response (e.g. `req_...`), for support and audit.
    pub request_id: Option<String>,
}
