//! Money: a non-negative integer number of minor units together with its [`Currency`].
//!
//! Amounts never travel as floats. OPP's API sends amounts as decimal strings with a `.` as the
//! decimal separator (`amount=10.00`, `currency=EUR`); [`Money::parse`] turns such a string into
//! minor units exactly, and [`Money::to_decimal_string`] turns minor units back into the string
//! OPP expects, with exactly as many decimals as the currency's ISO 4217 exponent.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::currency::Currency;

/// What was wrong with an amount or a currency, and what to send instead.
///
/// Returned by [`Money`]'s constructors and arithmetic and by [`Currency::from_code`]. Every
/// message names the offending input and gives an example of an accepted value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    /// The amount string was empty.
    #[error("amount is empty; send a decimal amount such as \"10.00\"")]
    Empty,

    /// The amount string is not `digits [ "." digits ]`: whitespace, a `+` sign, a missing
    /// integer or fraction part (`".5"`, `"1."`), separators (`"1,00"`, `"1 000"`), letters
    /// (`"NaN"`, `"inf"`) or non-ASCII digits.
    #[error(
        "amount {input:?} is not a plain decimal number; send ASCII digits with an optional '.' \
         followed by digits, e.g. \"10.00\" (no spaces, signs, thousands separators or ',' as \
         decimal separator)"
    )]
    Malformed {
        /// The rejected input, verbatim.
        input: String,
    },

    /// The amount is negative (`"-1.00"`, `Money::from_minor(-1, ..)`, or a subtraction that
    /// would go below zero). Amounts are never negative.
    #[error(
        "amount {input:?} is negative; amounts are never negative: send the positive amount, \
         e.g. \"10.00\", and use a refund or reversal to move money back"
    )]
    Negative {
        /// The rejected input (or the operation that would have gone negative).
        input: String,
    },

    /// The amount uses exponent notation (`"1e3"`, `"1E3"`, `"2.5e-1"`).
    #[error(
        "amount {input:?} uses exponent notation; send plain decimal digits instead, e.g. \
         \"1000.00\" rather than \"1e3\""
    )]
    ExponentNotation {
        /// The rejected input, verbatim.
        input: String,
    },

    /// The amount has more decimal places than the currency's ISO 4217 exponent allows
    /// (`"10.001"` EUR, `"1.5"` JPY).
    #[error("{}", too_many_decimals_message(.input, .currency, .exponent))]
    TooManyDecimals {
        /// The rejected input, verbatim.
        input: String,
        /// The currency the amount was parsed for.
        currency: Currency,
        /// That currency's exponent: the most decimal places allowed.
        exponent: u8,
    },

    /// The amount is zero where a positive amount is required ([`Money::parse_positive`]).
    #[error("amount is zero; send an amount greater than zero, e.g. \"10.00\"")]
    Zero,

    /// The amount does not fit in an `i64` number of minor units.
    #[error(
        "amount {input:?} is too large: it does not fit in {max} minor units; send a smaller \
         amount",
        max = i64::MAX
    )]
    Overflow {
        /// The rejected input (or the operation that overflowed).
        input: String,
    },

    /// The currency code is not an active ISO 4217 alphabetic code with a minor unit.
    #[error(
        "unknown currency {code:?}; send an active ISO 4217 alphabetic code in upper case, \
         e.g. \"EUR\"{}",
        did_you_mean(.code)
    )]
    UnknownCurrency {
        /// The rejected code, verbatim.
        code: String,
    },

    /// Two amounts in different currencies were combined.
    #[error(
        "amount is in {found} but {expected} was expected; send the amount in {expected} \
         (currencies are never converted)"
    )]
    CurrencyMismatch {
        /// The currency that was required.
        expected: Currency,
        /// The currency that was given.
        found: Currency,
    },
}

fn too_many_decimals_message(input: &str, currency: &Currency, exponent: &u8) -> String {
    let (int_part, frac_part) = input.split_once('.').unwrap_or((input, ""));
    let places = frac_part.chars().count();
    let plural = if places == 1 { "" } else { "s" };
    let allowed = usize::from(*exponent);
    if allowed == 0 {
        format!(
            "amount {input:?} has {places} decimal place{plural} but {currency} has 0; send a \
             whole number without a decimal point, e.g. \"{int_part}\""
        )
    } else {
        let kept: String = frac_part.chars().take(allowed).collect();
        format!(
            "amount {input:?} has {places} decimal place{plural} but {currency} has {allowed}; \
             send at most {allowed}, e.g. \"{int_part}.{kept}\""
        )
    }
}

fn did_you_mean(code: &str) -> String {
    let upper = code.trim().to_ascii_uppercase();
    if upper != code && Currency::from_code(&upper).is_ok() {
        format!(" (did you mean \"{upper}\"?)")
    } else {
        String::new()
    }
}

/// An amount of money: a non-negative integer number of minor units and its [`Currency`].
///
/// `Money { minor: 1050, currency: EUR }` is 10.50 EUR; with JPY it is 1050 JPY; with KWD it is
/// 1.050 KWD. The minor units are private so that the invariant "never negative" holds; build
/// values with [`Money::from_minor`], [`Money::parse`], [`Money::parse_positive`] or
/// [`Money::zero`].
///
/// Equality compares both the minor units and the currency. There is deliberately no ordering:
/// compare [`Money::minor_units`] after checking the currencies agree.
///
/// Serialized (serde) as OPP sends it, `{"amount": "10.50", "currency": "EUR"}`; deserialization
/// validates the pair with [`Money::parse`] (zero is accepted).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
#[serde(try_from = "MoneyRepr", into = "MoneyRepr")]
pub struct Money {
    minor: i64,
    currency: Currency,
}

/// The serde shape of [`Money`].
#[derive(Serialize, Deserialize)]
struct MoneyRepr {
    amount: String,
    currency: Currency,
}

impl From<Money> for MoneyRepr {
    fn from(m: Money) -> Self {
        MoneyRepr {
            amount: m.to_decimal_string(),
            currency: m.currency,
        }
    }
}

impl TryFrom<MoneyRepr> for Money {
    type Error = MoneyError;

    fn try_from(repr: MoneyRepr) -> Result<Self, Self::Error> {
        Money::parse(&repr.amount, repr.currency)
    }
}

impl Money {
    /// Builds an amount from a number of minor units (cents for EUR, yen for JPY, fils for KWD).
    ///
    /// # Errors
    /// [`MoneyError::Negative`] if `minor < 0`. Zero is allowed.
    pub fn from_minor(minor: i64, currency: Currency) -> Result<Money, MoneyError> {
        if minor < 0 {
            return Err(MoneyError::Negative {
                input: format!("{minor} minor units of {currency}"),
            });
        }
        Ok(Money { minor, currency })
    }

    /// Zero in `currency`.
    pub fn zero(currency: Currency) -> Money {
        Money { minor: 0, currency }
    }

    /// Crate-internal constructor for values computed from already valid amounts; a negative
    /// result (only possible from inconsistent input) is clamped to zero.
    pub(crate) fn clamped(minor: i64, currency: Currency) -> Money {
        Money {
            minor: minor.max(0),
            currency,
        }
    }

    /// Parses an OPP decimal amount string exactly into minor units of `currency`.
    ///
    /// Grammar (ASCII only): `digits [ "." digits ]`, with at most `currency.exponent()` fraction
    /// digits, and no `.` at all when the exponent is 0. Fewer fraction digits than the exponent
    /// are fine (`"10.5"` EUR is 1050 minor units); leading zeros are fine (`"007.50"`). Zero is
    /// allowed here; use [`Money::parse_positive`] to refuse it.
    ///
    /// # Errors
    /// - [`MoneyError::Empty`] for `""`;
    /// - [`MoneyError::Negative`] for a leading `-` (`"-1.00"`);
    /// - [`MoneyError::ExponentNotation`] for `"1e3"`, `"1E3"`, `"2.5e-1"`;
    /// - [`MoneyError::TooManyDecimals`] for `"1.001"` EUR, `"1.5"` JPY, `"1.0001"` KWD;
    /// - [`MoneyError::Overflow`] when the value exceeds `i64::MAX` minor units;
    /// - [`MoneyError::Malformed`] for anything else (`" 1.00"`, `"+1"`, `"1."`, `".5"`,
    ///   `"1,00"`, `"NaN"`, `"inf"`).
    pub fn parse(input: &str, currency: Currency) -> Result<Money, MoneyError> {
        if input.is_empty() {
            return Err(MoneyError::Empty);
        }
        let (int_part, frac_part) = match input.split_once('.') {
            Some((int_part, frac_part)) => (int_part, Some(frac_part)),
            None => (input, None),
        };
        let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if !all_digits(int_part) || !frac_part.is_none_or(all_digits) {
            return Err(diagnose(input));
        }
        let frac_part = frac_part.unwrap_or("");
        let exponent = currency.exponent();
        if frac_part.len() > usize::from(exponent) || (exponent == 0 && input.contains('.')) {
            return Err(MoneyError::TooManyDecimals {
                input: input.to_owned(),
                currency,
                exponent,
            });
        }
        let overflow = || MoneyError::Overflow {
            input: input.to_owned(),
        };
        let mut minor: i64 = 0;
        // Integer digits, then the fraction digits right-padded with zeros to `exponent` digits.
        let padding = usize::from(exponent) - frac_part.len();
        let digits = int_part
            .bytes()
            .chain(frac_part.bytes())
            .chain(std::iter::repeat_n(b'0', padding));
        for digit in digits {
            minor = minor
                .checked_mul(10)
                .and_then(|m| m.checked_add(i64::from(digit - b'0')))
                .ok_or_else(overflow)?;
        }
        Ok(Money { minor, currency })
    }

    /// Same as [`Money::parse`], but zero is refused.
    ///
    /// # Errors
    /// Everything [`Money::parse`] returns, plus [`MoneyError::Zero`] for `"0"`, `"0.00"`, ...
    pub fn parse_positive(input: &str, currency: Currency) -> Result<Money, MoneyError> {
        let money = Money::parse(input, currency)?;
        if money.is_zero() {
            return Err(MoneyError::Zero);
        }
        Ok(money)
    }

    /// The amount in minor units (never negative).
    pub fn minor_units(&self) -> i64 {
        self.minor
    }

    /// The currency of the amount.
    pub fn currency(&self) -> Currency {
        self.currency
    }

    /// Whether the amount is zero.
    pub fn is_zero(&self) -> bool {
        self.minor == 0
    }

    /// The amount as OPP expects it: major units, `.`, and exactly `exponent` fraction digits
    /// ("10.00" EUR, "1000" JPY, "1.500" KWD). [`Money::parse`] reads it back to the same value.
    ///
    /// Built from the minor units' digits, zero-padded to at least `exponent + 1` digits, with
    /// the `.` put in before the last `exponent` of them: the same bytes as
    /// `format!("{major}.{fraction:0exponent$}")`, without the formatting machinery (amounts
    /// are formatted for every line of a result; docs/performance.md, "An audited read's own
    /// formatting").
    pub fn to_decimal_string(&self) -> String {
        let exponent = usize::from(self.currency.exponent());
        let digits = self.minor.to_string();
        if exponent == 0 {
            return digits;
        }
        if self.minor < 0 {
            // No constructor makes a negative amount; written as it always was.
            let per_major = self.currency.minor_units_per_major();
            return format!(
                "{}.{:0exponent$}",
                self.minor / per_major,
                self.minor % per_major
            );
        }
        let pad = (exponent + 1).saturating_sub(digits.len());
        let mut out = String::with_capacity(pad + digits.len() + 1);
        out.extend(std::iter::repeat_n('0', pad));
        out.push_str(&digits);
        out.insert(out.len() - exponent, '.');
        out
    }

    /// Adds two amounts of the same currency.
    ///
    /// # Errors
    /// [`MoneyError::CurrencyMismatch`] (`expected` is `self`'s currency) or
    /// [`MoneyError::Overflow`].
    pub fn checked_add(&self, other: Money) -> Result<Money, MoneyError> {
        self.same_currency(&other)?;
        let minor = self
            .minor
            .checked_add(other.minor)
            .ok_or_else(|| MoneyError::Overflow {
                input: format!("{self} + {other}"),
            })?;
        Ok(Money {
            minor,
            currency: self.currency,
        })
    }

    /// Subtracts `other` from `self` (same currency).
    ///
    /// # Errors
    /// [`MoneyError::CurrencyMismatch`] (`expected` is `self`'s currency),
    /// [`MoneyError::Negative`] if `other` is larger than `self`, or [`MoneyError::Overflow`].
    pub fn checked_sub(&self, other: Money) -> Result<Money, MoneyError> {
        self.same_currency(&other)?;
        let minor = self
            .minor
            .checked_sub(other.minor)
            .ok_or_else(|| MoneyError::Overflow {
                input: format!("{self} - {other}"),
            })?;
        if minor < 0 {
            return Err(MoneyError::Negative {
                input: format!("{self} - {other}"),
            });
        }
        Ok(Money {
            minor,
            currency: self.currency,
        })
    }

    fn same_currency(&self, other: &Money) -> Result<(), MoneyError> {
        if self.currency != other.currency {
            return Err(MoneyError::CurrencyMismatch {
                expected: self.currency,
                found: other.currency,
            });
        }
        Ok(())
    }
}

/// Works out which error best describes an input that does not match the grammar.
fn diagnose(input: &str) -> MoneyError {
    let numeric_looking = |s: &str| {
        s.bytes().any(|b| b.is_ascii_digit())
            && s.bytes()
                .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-'))
    };
    if let Some(rest) = input.strip_prefix('-') {
        if numeric_looking(rest) {
            return MoneyError::Negative {
                input: input.to_owned(),
            };
        }
    }
    if numeric_looking(input) && looks_like_exponent_notation(input) {
        return MoneyError::ExponentNotation {
            input: input.to_owned(),
        };
    }
    MoneyError::Malformed {
        input: input.to_owned(),
    }
}

/// `[+] mantissa (e|E) [+|-] digits`, where the mantissa has at least one digit and at most one
/// `.`.
fn looks_like_exponent_notation(input: &str) -> bool {
    let unsigned = input.strip_prefix('+').unwrap_or(input);
    let Some(split) = unsigned.find(['e', 'E']) else {
        return false;
    };
    let (mantissa, exponent) = unsigned.split_at(split);
    let exponent = exponent.get(1..).unwrap_or("");
    let exponent = exponent
        .strip_prefix('+')
        .or_else(|| exponent.strip_prefix('-'))
        .unwrap_or(exponent);
    let mantissa_ok = mantissa.bytes().filter(|b| *b == b'.').count() <= 1
        && mantissa.bytes().any(|b| b.is_ascii_digit())
        && mantissa.bytes().all(|b| b.is_ascii_digit() || b == b'.');
    let exponent_ok = !exponent.is_empty() && exponent.bytes().all(|b| b.is_ascii_digit());
    mantissa_ok && exponent_ok
}

/// Formats as `"<decimal> <code>"`, e.g. `10.00 EUR`, `1000 JPY`, `1.500 KWD`.
impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.to_decimal_string(), self.currency)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cur(code: &str) -> Currency {
        Currency::from_code(code).unwrap_or_else(|e| panic!("{e}"))
    }

    fn minor(input: &str, currency: Currency) -> i64 {
        Money::parse(input, currency)
            .map(|m| m.minor_units())
            .unwrap_or_else(|e| panic!("{input:?}: {e}"))
    }

    #[test]
    fn parses_exactly() {
        assert_eq!(minor("10.00", Currency::EUR), 1000);
        assert_eq!(minor("10.5", Currency::EUR), 1050);
        assert_eq!(minor("10", Currency::EUR), 1000);
        assert_eq!(minor("0.01", Currency::EUR), 1);
        assert_eq!(minor("0", Currency::EUR), 0);
        assert_eq!(minor("007.50", Currency::EUR), 750);
        assert_eq!(minor("1000", Currency::JPY), 1000);
        assert_eq!(minor("1.5", Currency::KWD), 1500);
        assert_eq!(minor("1.001", Currency::KWD), 1001);
        assert_eq!(minor("0.0001", cur("CLF")), 1);
        assert_eq!(
            minor("92233720368547758.07", Currency::EUR),
            i64::MAX,
            "the largest EUR amount"
        );
        assert_eq!(minor("9223372036854775807", Currency::JPY), i64::MAX);
        assert_eq!(
            minor("0000000000000000000000000000001.00", Currency::EUR),
            100
        );
    }

    fn err(input: &str, currency: Currency) -> MoneyError {
        match Money::parse(input, currency) {
            Ok(m) => panic!("{input:?} parsed as {m}"),
            Err(e) => e,
        }
    }

    fn malformed(input: &str) -> MoneyError {
        MoneyError::Malformed {
            input: input.to_owned(),
        }
    }

    #[test]
    fn rejects_empty() {
        assert_eq!(err("", Currency::EUR), MoneyError::Empty);
    }

    #[test]
    fn rejects_whitespace() {
        for input in [" 1.00", "1.00 ", "1 000.00", "\t1", "1.0\n", "\u{a0}1"] {
            assert_eq!(err(input, Currency::EUR), malformed(input), "{input:?}");
        }
    }

    #[test]
    fn rejects_signs() {
        assert_eq!(
            err("-1.00", Currency::EUR),
            MoneyError::Negative {
                input: "-1.00".into()
            }
        );
        assert_eq!(
            err("-0", Currency::EUR),
            MoneyError::Negative { input: "-0".into() }
        );
        assert_eq!(err("+1", Currency::EUR), malformed("+1"));
        assert_eq!(err("+1.00", Currency::EUR), malformed("+1.00"));
        assert_eq!(err("-", Currency::EUR), malformed("-"));
    }

    #[test]
    fn rejects_exponent_notation() {
        for input in ["1e3", "1E3", "1.5e2", "2.5e-1", "1e+3", "+1e3"] {
            assert_eq!(
                err(input, Currency::EUR),
                MoneyError::ExponentNotation {
                    input: input.into()
                },
                "{input:?}"
            );
        }
        // Not exponent notation, merely malformed.
        for input in ["e3", "1e", "1ee3", "EUR"] {
            assert_eq!(err(input, Currency::EUR), malformed(input), "{input:?}");
        }
    }

    #[test]
    fn rejects_nan_and_infinity() {
        for input in ["NaN", "nan", "inf", "Infinity", "-inf"] {
            assert_eq!(err(input, Currency::EUR), malformed(input), "{input:?}");
        }
    }

    #[test]
    fn rejects_missing_parts_and_separators() {
        for input in [
            "1.", ".5", ".", "1,00", "1,000.00", "1.000,00", "1..0", "1.0.0", "1_000", "١٢", "１",
        ] {
            assert_eq!(err(input, Currency::EUR), malformed(input), "{input:?}");
        }
        assert_eq!(err("1.", Currency::JPY), malformed("1."));
    }

    #[test]
    fn rejects_too_many_decimals() {
        let too_many = |input: &str, currency: Currency| MoneyError::TooManyDecimals {
            input: input.into(),
            currency,
            exponent: currency.exponent(),
        };
        assert_eq!(
            err("1.001", Currency::EUR),
            too_many("1.001", Currency::EUR)
        );
        assert_eq!(
            err("1.000", Currency::EUR),
            too_many("1.000", Currency::EUR)
        );
        assert_eq!(err("1.5", Currency::JPY), too_many("1.5", Currency::JPY));
        assert_eq!(err("1.0", Currency::JPY), too_many("1.0", Currency::JPY));
        assert_eq!(
            err("1.0001", Currency::KWD),
            too_many("1.0001", Currency::KWD)
        );
        assert_eq!(err("1.00001", cur("CLF")), too_many("1.00001", cur("CLF")));
    }

    #[test]
    fn rejects_overflow() {
        let overflow = |input: &str| MoneyError::Overflow {
            input: input.into(),
        };
        assert_eq!(
            err("99999999999999999999", Currency::EUR),
            overflow("99999999999999999999")
        );
        assert_eq!(
            err("92233720368547758.08", Currency::EUR),
            overflow("92233720368547758.08")
        );
        assert_eq!(
            err("9223372036854775808", Currency::JPY),
            overflow("9223372036854775808")
        );
        assert_eq!(
            err("9223372036854775.808", Currency::KWD),
            overflow("9223372036854775.808")
        );
    }

    #[test]
    fn parse_positive_rejects_zero_only() {
        assert_eq!(
            Money::parse_positive("0", Currency::EUR),
            Err(MoneyError::Zero)
        );
        assert_eq!(
            Money::parse_positive("0.00", Currency::EUR),
            Err(MoneyError::Zero)
        );
        assert_eq!(
            Money::parse_positive("0.01", Currency::EUR).map(|m| m.minor_units()),
            Ok(1)
        );
        assert_eq!(
            Money::parse_positive("", Currency::EUR),
            Err(MoneyError::Empty)
        );
    }

    #[test]
    fn formats_with_exactly_exponent_decimals() {
        let m =
            |minor: i64, c: Currency| Money::from_minor(minor, c).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(m(1000, Currency::EUR).to_decimal_string(), "10.00");
        assert_eq!(m(1050, Currency::EUR).to_decimal_string(), "10.50");
        assert_eq!(m(1, Currency::EUR).to_decimal_string(), "0.01");
        assert_eq!(m(0, Currency::EUR).to_decimal_string(), "0.00");
        assert_eq!(m(1000, Currency::JPY).to_decimal_string(), "1000");
        assert_eq!(m(0, Currency::JPY).to_decimal_string(), "0");
        assert_eq!(m(1500, Currency::KWD).to_decimal_string(), "1.500");
        assert_eq!(m(7, Currency::KWD).to_decimal_string(), "0.007");
        assert_eq!(m(12345, cur("CLF")).to_decimal_string(), "1.2345");
        assert_eq!(
            m(i64::MAX, Currency::EUR).to_decimal_string(),
            "92233720368547758.07"
        );
        assert_eq!(m(1000, Currency::EUR).to_string(), "10.00 EUR");
        assert_eq!(m(1000, Currency::JPY).to_string(), "1000 JPY");
        assert_eq!(m(1500, Currency::KWD).to_string(), "1.500 KWD");
    }

    #[test]
    fn decimal_strings_are_the_bytes_of_major_dot_padded_fraction() {
        // The definition the faster construction must match, for every exponent in use.
        fn by_definition(minor: i64, currency: Currency) -> String {
            let exponent = usize::from(currency.exponent());
            if exponent == 0 {
                return minor.to_string();
            }
            let per_major = currency.minor_units_per_major();
            format!("{}.{:0exponent$}", minor / per_major, minor % per_major)
        }
        let currencies = [
            Currency::JPY,
            Currency::EUR,
            Currency::KWD,
            Currency::from_code("CLF").unwrap(),
        ];
        let mut amounts: Vec<i64> = (0..2_000).collect();
        for power in 0..19 {
            let p = 10_i64.pow(power);
            amounts.extend([p - 1, p, p + 1, p * 7 + 3]);
        }
        amounts.push(i64::MAX);
        for currency in currencies {
            for &minor in &amounts {
                let amount = Money { minor, currency };
                assert_eq!(
                    amount.to_decimal_string(),
                    by_definition(minor, currency),
                    "{minor} minor units of {currency}"
                );
            }
        }
    }

    #[test]
    fn from_minor_rejects_negative() {
        assert!(matches!(
            Money::from_minor(-1, Currency::EUR),
            Err(MoneyError::Negative { .. })
        ));
        assert_eq!(
            Money::from_minor(0, Currency::EUR),
            Ok(Money::zero(Currency::EUR))
        );
        assert!(Money::zero(Currency::USD).is_zero());
        assert_eq!(
            Money::clamped(-5, Currency::EUR),
            Money::zero(Currency::EUR)
        );
    }

    #[test]
    fn checked_arithmetic() {
        let eur = |minor: i64| Money::from_minor(minor, Currency::EUR);
        let (Ok(a), Ok(b)) = (eur(1000), eur(250)) else {
            panic!("valid amounts")
        };
        assert_eq!(a.checked_add(b), eur(1250));
        assert_eq!(a.checked_sub(b), eur(750));
        assert_eq!(a.checked_sub(a), eur(0));
        assert!(matches!(b.checked_sub(a), Err(MoneyError::Negative { .. })));
        let usd = Money::zero(Currency::USD);
        assert_eq!(
            a.checked_add(usd),
            Err(MoneyError::CurrencyMismatch {
                expected: Currency::EUR,
                found: Currency::USD
            })
        );
        assert!(matches!(
            a.checked_sub(usd),
            Err(MoneyError::CurrencyMismatch { .. })
        ));
        let Ok(max) = eur(i64::MAX) else {
            panic!("valid amount")
        };
        assert!(matches!(
            max.checked_add(b),
            Err(MoneyError::Overflow { .. })
        ));
    }

    #[test]
    fn messages_say_what_was_wrong_and_what_to_send() {
        let msg = |e: MoneyError| e.to_string();
        assert_eq!(
            msg(err("10.001", Currency::EUR)),
            "amount \"10.001\" has 3 decimal places but EUR has 2; send at most 2, e.g. \"10.00\""
        );
        assert_eq!(
            msg(err("1.5", Currency::JPY)),
            "amount \"1.5\" has 1 decimal place but JPY has 0; send a whole number without a \
             decimal point, e.g. \"1\""
        );
        assert!(msg(err("1.0001", Currency::KWD)).contains("e.g. \"1.000\""));
        for e in [
            MoneyError::Empty,
            err(" 1.00", Currency::EUR),
            err("-1.00", Currency::EUR),
            err("1e3", Currency::EUR),
            err("99999999999999999999", Currency::EUR),
            MoneyError::Zero,
            MoneyError::UnknownCurrency { code: "eur".into() },
            MoneyError::CurrencyMismatch {
                expected: Currency::EUR,
                found: Currency::USD,
            },
        ] {
            let text = msg(e);
            assert!(text.contains("send"), "no advice in {text:?}");
        }
        assert!(msg(err("1,00", Currency::EUR)).contains("\"1,00\""));
        assert!(msg(MoneyError::CurrencyMismatch {
            expected: Currency::EUR,
            found: Currency::USD,
        })
        .contains("in USD but EUR was expected"));
    }

    #[test]
    fn serde_shape() {
        let Ok(m) = Money::parse("10.5", Currency::EUR) else {
            panic!("valid")
        };
        let json = serde_json::to_string(&m).unwrap_or_default();
        assert_eq!(json, r#"{"amount":"10.50","currency":"EUR"}"#);
        let back: Result<Money, _> = serde_json::from_str(&json);
        assert_eq!(back.ok(), Some(m));
        let bad: Result<Money, _> = serde_json::from_str(r#"{"amount":"10.505","currency":"EUR"}"#);
        let text = bad.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(text.contains("decimal places"), "{text}");
        let bad: Result<Money, _> = serde_json::from_str(r#"{"amount":"1","currency":"eur"}"#);
        assert!(bad.is_err());
    }

    /// A representative set: every exponent (0, 2, 3, 4) and several currencies per exponent.
    fn representative() -> impl Strategy<Value = Currency> {
        prop::sample::select(
            [
                "EUR", "USD", "GBP", "BRL", "JPY", "KRW", "ISK", "CLP", "KWD", "BHD", "TND", "CLF",
                "UYW",
            ]
            .iter()
            .filter_map(|code| Currency::from_code(code).ok())
            .collect::<Vec<_>>(),
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn decimal_string_round_trips(currency in representative(), minor in 0_i64..=1_000_000_000_000_000) {
            let m = Money::from_minor(minor, currency);
            prop_assert!(m.is_ok());
            let m = m.unwrap_or_else(|_| Money::zero(currency));
            let text = m.to_decimal_string();
            let dot = text.find('.');
            match currency.exponent() {
                0 => prop_assert!(dot.is_none()),
                e => prop_assert_eq!(dot.map(|d| text.len() - d - 1), Some(usize::from(e))),
            }
            prop_assert_eq!(Money::parse(&text, currency), Ok(m));
        }

        #[test]
        fn parse_never_panics(input in any::<String>(), currency in representative()) {
            let _ = Money::parse(&input, currency);
            let _ = Money::parse_positive(&input, currency);
        }

        #[test]
        fn parse_never_panics_on_number_like_strings(
            input in "[-+0-9.,eE ]{0,40}",
            currency in representative(),
        ) {
            if let Ok(m) = Money::parse(&input, currency) {
                // Anything accepted has the documented grammar.
                prop_assert!(input.bytes().all(|b| b.is_ascii_digit() || b == b'.'));
                prop_assert_eq!(m.currency(), currency);
            }
        }

        #[test]
        fn too_many_fraction_digits_are_rejected(
            currency in representative(),
            int_part in "[0-9]{1,10}",
            extra in 1_usize..6,
            seed in "[0-9]{10}",
        ) {
            let places = usize::from(currency.exponent()) + extra;
            let frac: String = seed.chars().cycle().take(places).collect();
            let input = format!("{int_part}.{frac}");
            prop_assert_eq!(
                Money::parse(&input, currency),
                Err(MoneyError::TooManyDecimals {
                    input: input.clone(),
                    currency,
                    exponent: currency.exponent(),
                })
            );
        }

        #[test]
        fn allowed_decimals_round_trip_up_to_trailing_zeros(
            currency in representative(),
            int_part in "[0-9]{1,12}",
            frac_seed in "[0-9]{4}",
            frac_len in 1_usize..=4,
        ) {
            let exponent = usize::from(currency.exponent());
            let input = if exponent == 0 {
                int_part.clone()
            } else {
                let frac: String = frac_seed.chars().take(frac_len.min(exponent)).collect();
                format!("{int_part}.{frac}")
            };
            let parsed = Money::parse(&input, currency);
            prop_assert!(parsed.is_ok(), "{:?}", parsed);
            let parsed = parsed.unwrap_or_else(|_| Money::zero(currency));
            // Expected normal form: no leading zeros, fraction right-padded to `exponent`.
            let (int_in, frac_in) = input.split_once('.').unwrap_or((&input, ""));
            let int_norm = int_in.trim_start_matches('0');
            let int_norm = if int_norm.is_empty() { "0" } else { int_norm };
            let expected = if exponent == 0 {
                int_norm.to_owned()
            } else {
                format!("{int_norm}.{frac_in:0<exponent$}")
            };
            prop_assert_eq!(parsed.to_decimal_string(), expected);
        }
    }
}
