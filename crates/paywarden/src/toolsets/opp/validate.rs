//! Validation of OPP tool arguments and small conversions.

use super::*;

pub(super) fn invalid(message: impl Into<String>) -> ServiceError {
    ServiceError::InvalidArguments(message.into())
}

/// Checks an OPP transaction id: 1 to 64 characters of `A-Z a-z 0-9 . _ -`, starting with a
/// letter or digit.
pub fn validate_id(field: &str, id: &str) -> Result<String, ServiceError> {
    let id = id.trim();
    let ok = !id.is_empty()
        && id.len() <= 64
        && id.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(id.to_string())
    } else {
        Err(invalid(format!(
            "{field} {id:?} is not an OPP transaction id: send the 32-character id OPP returned (letters, digits, '.', '_', '-'; at most 64)"
        )))
    }
}

pub(super) fn validate_merchant_reference(
    value: Option<String>,
) -> Result<Option<String>, ServiceError> {
    match value {
        None => Ok(None),
        Some(v) if v.is_empty() || v.len() > 255 || v.chars().any(char::is_control) => Err(
            invalid("merchantTransactionId must be 1 to 255 printable characters"),
        ),
        Some(v) => Ok(Some(v)),
    }
}

/// Parses an amount/currency pair: both or neither.
pub fn parse_amount(
    amount: Option<&str>,
    currency: Option<&str>,
) -> Result<Option<Money>, ServiceError> {
    match (amount, currency) {
        (None, None) => Ok(None),
        (Some(_), None) => Err(invalid(
            "amount was given without currency: send both, e.g. amount \"10.00\" and currency \"EUR\"",
        )),
        (None, Some(_)) => Err(invalid(
            "currency was given without amount: send both, or neither to use the default amount",
        )),
        (Some(amount), Some(currency)) => {
            let currency = Currency::from_code(currency).map_err(|e| invalid(e.to_string()))?;
            Money::parse_positive(amount, currency)
                .map(Some)
                .map_err(|e| invalid(e.to_string()))
        }
    }
}

/// Parses `YYYY-MM-DD` (start or end of that day), `YYYY-MM-DD HH:MM:SS` or RFC 3339, as UTC.
pub fn parse_date(field: &str, raw: &str, end_of_day: bool) -> Result<DateTime<Utc>, ServiceError> {
    let raw = raw.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(raw) {
        return Ok(t.with_timezone(&Utc));
    }
    if let Ok(t) = NaiveDateTime::parse_from_str(raw, "%Y-%m-%d %H:%M:%S") {
        return Ok(t.and_utc());
    }
    if let Ok(d) = NaiveDate::parse_from_str(raw, "%Y-%m-%d") {
        let time = if end_of_day {
            d.and_hms_opt(23, 59, 59)
        } else {
            d.and_hms_opt(0, 0, 0)
        };
        if let Some(t) = time {
            return Ok(t.and_utc());
        }
    }
    Err(invalid(format!(
        "{field} {raw:?} is not a date: use YYYY-MM-DD, \"YYYY-MM-DD HH:MM:SS\" (UTC) or RFC 3339"
    )))
}

/// Parses OPP payment type codes.
pub fn parse_payment_types(field: &str, raw: &[String]) -> Result<Vec<PaymentType>, ServiceError> {
    raw.iter()
        .map(|t| {
            t.trim().parse::<PaymentType>().map_err(|_| {
                invalid(format!(
                    "{field} contains {t:?}: use OPP payment type codes PA, DB, CP, RV, RF, RB, CB, CR"
                ))
            })
        })
        .collect()
}

/// The merchant reference paywarden sends to OPP for an idempotency key: `pw` + 30 hex
/// characters of SHA-256(entity, key), stable across retries and within OPP's 8-255 limit.
pub fn derived_merchant_reference(entity_id: &str, key: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(format!("{entity_id}\n{key}").as_bytes());
    format!("pw{}", &hex::encode(digest)[..30])
}

pub(super) fn money_text(m: Money) -> String {
    format!("{} {}", m.to_decimal_string(), m.currency().code())
}

pub(super) fn balances_view(
    target: &Transaction,
    tree: &[paywarden_domain::TxRecord],
) -> BalancesView {
    let b = ledger::balances(&target.ledger_record(), tree);
    BalancesView {
        transaction_id: target.id.clone(),
        currency: target.amount.currency().code().to_string(),
        authorized: b.authorized.to_decimal_string(),
        captured: b.captured.to_decimal_string(),
        refunded: b.refunded.to_decimal_string(),
        charged_back: b.charged_back.to_decimal_string(),
        capturable: b.capturable.to_decimal_string(),
        refundable: b.refundable.to_decimal_string(),
        reversed: b.reversed,
    }
}

pub(super) fn tool_of(op: Operation) -> &'static str {
    match op {
        Operation::Capture => "perform_capture",
        Operation::Reversal => "perform_reversal",
        Operation::Refund => "perform_refund",
        Operation::Rebill => "perform_rebill",
        Operation::Chargeback => "perform_chargeback",
        Operation::ChargebackReversal => "perform_chargeback_reversal",
    }
}
