//! Validation of ifthenpay tool arguments (the seed's rules) and the typed creations.

use super::*;

pub(super) fn invalid(message: impl Into<String>) -> ServiceError {
    ServiceError::InvalidArguments(message.into())
}

pub(super) fn check_text(field: &str, value: &str, max: usize) -> Result<(), ServiceError> {
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

pub(super) fn check_optional(
    field: &str,
    value: Option<&str>,
    max: usize,
) -> Result<(), ServiceError> {
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

pub(super) fn check_url(field: &str, value: &str) -> Result<(), ServiceError> {
    match url::Url::parse(value) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {
            check_text(field, value, 500)
        }
        _ => Err(invalid(format!(
            "{field} {value:?} must be an absolute http(s) URL"
        ))),
    }
}

pub(super) fn check_email(field: &str, value: &str) -> Result<(), ServiceError> {
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
pub(super) fn check_intl_phone(field: &str, value: &str) -> Result<(), ServiceError> {
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
pub(super) fn parse_yyyymmdd(field: &str, value: &str) -> Result<NaiveDate, ServiceError> {
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
pub(super) fn parse_list_date(field: &str, value: &str) -> Result<NaiveDateTime, ServiceError> {
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
pub(super) const PINPAY_METHODS: [(&str, &str); 8] = [
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

pub(super) fn check_choice(
    field: &str,
    value: Option<&str>,
    allowed: &[&str],
) -> Result<(), ServiceError> {
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
pub(super) const LIST_METHODS: [&str; 8] = [
    "MB", "MBWAY", "PAYSHOP", "CCARD", "COFIDIS", "GOOGLE", "APPLE", "PIX",
];

// ---------------------------------------------------------------------------------------------
// The service

/// A validated creation, ready for the connector.
#[derive(Clone)]
pub(super) enum Creation {
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
    pub(super) fn order_id(&self) -> &str {
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

    pub(super) fn amount(&self) -> Money {
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

    pub(super) fn method(&self) -> &'static str {
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
