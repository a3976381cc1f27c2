//! Validation of ops tool arguments and the views of stored records.

use super::*;
use chrono::Datelike;

pub(super) fn invalid(message: impl Into<String>) -> ServiceError {
    ServiceError::InvalidArguments(message.into())
}

pub(super) fn stamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// A plausible e-mail address: one `@`, something on both sides, a dot in the domain, no
/// spaces, at most 254 characters.
pub(super) fn validate_email(raw: &str) -> Result<String, ServiceError> {
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
pub(super) enum CustomerRef {
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
    pub(super) fn from_params(
        email: Option<&str>,
        customer: Option<&str>,
    ) -> Result<Self, ServiceError> {
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
pub(super) fn validate_stripe_id(field: &str, raw: &str) -> Result<String, ServiceError> {
    let id = raw.trim();
    if (3..=255).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        Ok(id.to_string())
    } else {
        Err(invalid(format!(
            "{field} {raw:?} is not a Stripe id; send the PaymentIntent id list_payments shows (pi_...)"
        )))
    }
}

pub(super) fn currency_of(code: &str) -> Result<Currency, ServiceError> {
    Currency::from_code(&code.trim().to_ascii_uppercase()).map_err(|e| invalid(e.to_string()))
}

/// `cents` minor units of `currency` (any case) as a decimal string in the currency's
/// minor-unit precision and the upper-case ISO 4217 code: `(4999, "usd")` gives `("49.99",
/// "USD")`. A code that is not an active ISO 4217 currency, or a negative amount, gives the
/// minor units as they are (`"-150"`).
pub(super) fn money(cents: i64, currency: &str) -> (String, String) {
    let code = currency.to_ascii_uppercase();
    match Currency::from_code(&code)
        .ok()
        .and_then(|c| Money::from_minor(cents, c).ok())
    {
        // `from_code` matched `code` exactly, so it is the currency's own code.
        Some(m) => (m.to_decimal_string(), code),
        None => (cents.to_string(), code),
    }
}

pub(super) fn customer_view(c: &CustomerRecord) -> CustomerView {
    CustomerView {
        id: c.id.clone(),
        email: c.email.clone(),
        name: c.name.clone(),
        stripe_customer_id: c.stripe_customer_id.clone(),
    }
}

pub(super) fn order_view(o: &OrderRecord) -> OrderView {
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

/// `day` as `YYYY-MM-DD`: the bytes of its `Display` (ISO 8601) for the years 0 to 9999, and
/// its `Display` for any other, written without the formatting machinery (a result formats a
/// day for every line; docs/performance.md, "An audited read's own formatting").
pub(super) fn iso_day(day: NaiveDate) -> String {
    let Ok(year) = u32::try_from(day.year()) else {
        return day.to_string();
    };
    if year > 9999 {
        return day.to_string();
    }
    let (month, date) = (day.month(), day.day());
    let digits = [
        year / 1000,
        year / 100 % 10,
        year / 10 % 10,
        year % 10,
        month / 10,
        month % 10,
        date / 10,
        date % 10,
    ];
    let mut out = String::with_capacity(10);
    for (i, digit) in digits.into_iter().enumerate() {
        if i == 4 || i == 6 {
            out.push('-');
        }
        out.push(char::from_digit(digit, 10).unwrap_or('0'));
    }
    out
}

pub(super) fn parse_day(field: &str, raw: &str) -> Result<NaiveDate, ServiceError> {
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
pub(super) struct RefundCommand {
    pub(super) email: String,
    pub(super) charge_id: Option<String>,
    pub(super) amount_cents: Option<i64>,
    pub(super) reason: String,
    pub(super) confirmation_token: Option<String>,
    pub(super) approval_id: Option<String>,
    pub(super) idempotency_key: Option<String>,
}

/// The order and amounts a refund will act on, checked against the database and Stripe.
#[derive(Debug, Clone)]
pub(super) struct CheckedRefund {
    pub(super) customer: CustomerRecord,
    pub(super) order: OrderRecord,
    pub(super) payment_intent: String,
    pub(super) amount_cents: i64,
    /// Stripe's `amount_refunded` of the charge before this refund.
    pub(super) refunded_before: i64,
    pub(super) charge_amount: i64,
}

/// What `refund_log.refunded_by` says for every refund made through the tools: the Payment Ops
/// seed's schema defines the column as `"ai-assistant"`. Who called and with which MCP client
/// (and, for an approval, which operator decided) is in the audit log, keyed by the refund.
pub const REFUNDED_BY: &str = "ai-assistant";

/// Who a review flag says flagged it (and what Stripe's refund metadata records as `client`):
/// the MCP client's name (or `ai-assistant`) and the entity.
pub(super) fn actor_label(caller: &Caller) -> String {
    format!(
        "{} via paywarden (entity {})",
        caller.client_name.as_deref().unwrap_or("ai-assistant"),
        caller.entity_id
    )
}

pub(super) fn validate_refund(params: IssueRefundParams) -> Result<RefundCommand, ServiceError> {
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
    fn iso_days_are_the_bytes_of_chronos_display() {
        let mut day = NaiveDate::from_ymd_opt(1999, 1, 1).unwrap();
        let last = NaiveDate::from_ymd_opt(2031, 12, 31).unwrap();
        while day <= last {
            assert_eq!(iso_day(day), day.to_string());
            day = day.succ_opt().unwrap();
        }
        for (y, m, d) in [
            (0, 1, 1),
            (7, 2, 3),
            (999, 12, 31),
            (9999, 12, 31),
            (10000, 1, 1),
            (-1, 6, 15),
            (-44, 3, 15),
        ] {
            let day = NaiveDate::from_ymd_opt(y, m, d).unwrap();
            assert_eq!(iso_day(day), day.to_string(), "{y}-{m}-{d}");
        }
    }

    #[test]
    fn money_is_the_decimal_amount_and_the_upper_case_code() {
        assert_eq!(money(4999, "usd"), ("49.99".into(), "USD".into()));
        assert_eq!(money(5, "EUR"), ("0.05".into(), "EUR".into()));
        assert_eq!(money(1000, "jpy"), ("1000".into(), "JPY".into()));
        assert_eq!(money(1234, "kwd"), ("1.234".into(), "KWD".into()));
        // Not an active ISO 4217 currency, or a negative amount: the minor units as they are.
        assert_eq!(money(150, "xyz"), ("150".into(), "XYZ".into()));
        assert_eq!(money(-150, "usd"), ("-150".into(), "USD".into()));
    }

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
