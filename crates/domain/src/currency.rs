//! ISO 4217 currencies and their minor-unit exponents.
//!
//! Source: ISO 4217 "List One" (current currency & funds code list, as maintained by SIX on behalf
//! of ISO; the edition published 2026-01-01). Every entry of that list that has a minor unit is
//! here, with the exponent the list gives it (`CcyMnrUnts`):
//!
//! - exponent 0: BIF, CLP, DJF, GNF, ISK, JPY, KMF, KRW, PYG, RWF, UGX, UYI, VND, VUV, XAF, XOF, XPF;
//! - exponent 3: BHD, IQD, JOD, KWD, LYD, OMR, TND;
//! - exponent 4: CLF, UYW;
//! - exponent 2: every other entry (including the fund codes BOV, CHE, CHW, COU, MXV, USN and the
//!   Arab Accounting Dinar XAD, which the list gives a minor unit of 2).
//!
//! Left out are the codes whose minor unit ISO gives as "N.A.": precious metals (XAU, XAG, XPT,
//! XPD), bond-market units (XBA, XBB, XBC, XBD), XDR, XSU, XUA, the testing code XTS and the
//! "no currency" code XXX. Withdrawn codes (ANG, HRK, SLL, ZWL, CUC, ...) are not accepted either:
//! their successors (XCG, EUR, SLE, ZWG, CUP) are.
//!
//! Only the exact upper-case alphabetic code is accepted ("EUR", not "eur", " EUR" or "978").

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::money::MoneyError;

/// An active ISO 4217 currency: its alphabetic code and its minor-unit exponent.
///
/// The exponent is the number of decimal places of the currency: an amount of `minor` minor units
/// is `minor / 10^exponent` major units (EUR 2: 1050 minor = 10.50 EUR; JPY 0: 1050 minor =
/// 1050 JPY; KWD 3: 1050 minor = 1.050 KWD).
///
/// Construct one with [`Currency::from_code`] (or `str::parse`), or use a constant such as
/// [`Currency::EUR`]. Serialized (serde) as the code string, e.g. `"EUR"`; deserialization
/// accepts exactly the codes [`Currency::from_code`] accepts. Source: ISO 4217 List One.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Currency {
    code: &'static str,
    exponent: u8,
}

const fn cur(code: &'static str, exponent: u8) -> Currency {
    Currency { code, exponent }
}

/// An alphabetic code's bytes as one big-endian number: for codes of the same length (all of
/// [`ACTIVE`]'s are three letters) the numbers sort as the codes do.
fn code_key(code: &[u8]) -> u32 {
    code.iter().fold(0, |key, &b| key << 8 | u32::from(b))
}

/// Every accepted currency, sorted by code (binary-searched by [`Currency::from_code`]).
const ACTIVE: &[Currency] = &[
    cur("AED", 2),
    cur("AFN", 2),
    cur("ALL", 2),
    cur("AMD", 2),
    cur("AOA", 2),
    cur("ARS", 2),
    cur("AUD", 2),
    cur("AWG", 2),
    cur("AZN", 2),
    cur("BAM", 2),
    cur("BBD", 2),
    cur("BDT", 2),
    cur("BHD", 3),
    cur("BIF", 0),
    cur("BMD", 2),
    cur("BND", 2),
    cur("BOB", 2),
    cur("BOV", 2),
    cur("BRL", 2),
    cur("BSD", 2),
    cur("BTN", 2),
    cur("BWP", 2),
    cur("BYN", 2),
    cur("BZD", 2),
    cur("CAD", 2),
    cur("CDF", 2),
    cur("CHE", 2),
    cur("CHF", 2),
    cur("CHW", 2),
    cur("CLF", 4),
    cur("CLP", 0),
    cur("CNY", 2),
    cur("COP", 2),
    cur("COU", 2),
    cur("CRC", 2),
    cur("CUP", 2),
    cur("CVE", 2),
    cur("CZK", 2),
    cur("DJF", 0),
    cur("DKK", 2),
    cur("DOP", 2),
    cur("DZD", 2),
    cur("EGP", 2),
    cur("ERN", 2),
    cur("ETB", 2),
    cur("EUR", 2),
    cur("FJD", 2),
    cur("FKP", 2),
    cur("GBP", 2),
    cur("GEL", 2),
    cur("GHS", 2),
    cur("GIP", 2),
    cur("GMD", 2),
    cur("GNF", 0),
    cur("GTQ", 2),
    cur("GYD", 2),
    cur("HKD", 2),
    cur("HNL", 2),
    cur("HTG", 2),
    cur("HUF", 2),
    cur("IDR", 2),
    cur("ILS", 2),
    cur("INR", 2),
    cur("IQD", 3),
    cur("IRR", 2),
    cur("ISK", 0),
    cur("JMD", 2),
    cur("JOD", 3),
    cur("JPY", 0),
    cur("KES", 2),
    cur("KGS", 2),
    cur("KHR", 2),
    cur("KMF", 0),
    cur("KPW", 2),
    cur("KRW", 0),
    cur("KWD", 3),
    cur("KYD", 2),
    cur("KZT", 2),
    cur("LAK", 2),
    cur("LBP", 2),
    cur("LKR", 2),
    cur("LRD", 2),
    cur("LSL", 2),
    cur("LYD", 3),
    cur("MAD", 2),
    cur("MDL", 2),
    cur("MGA", 2),
    cur("MKD", 2),
    cur("MMK", 2),
    cur("MNT", 2),
    cur("MOP", 2),
    cur("MRU", 2),
    cur("MUR", 2),
    cur("MVR", 2),
    cur("MWK", 2),
    cur("MXN", 2),
    cur("MXV", 2),
    cur("MYR", 2),
    cur("MZN", 2),
    cur("NAD", 2),
    cur("NGN", 2),
    cur("NIO", 2),
    cur("NOK", 2),
    cur("NPR", 2),
    cur("NZD", 2),
    cur("OMR", 3),
    cur("PAB", 2),
    cur("PEN", 2),
    cur("PGK", 2),
    cur("PHP", 2),
    cur("PKR", 2),
    cur("PLN", 2),
    cur("PYG", 0),
    cur("QAR", 2),
    cur("RON", 2),
    cur("RSD", 2),
    cur("RUB", 2),
    cur("RWF", 0),
    cur("SAR", 2),
    cur("SBD", 2),
    cur("SCR", 2),
    cur("SDG", 2),
    cur("SEK", 2),
    cur("SGD", 2),
    cur("SHP", 2),
    cur("SLE", 2),
    cur("SOS", 2),
    cur("SRD", 2),
    cur("SSP", 2),
    cur("STN", 2),
    cur("SVC", 2),
    cur("SYP", 2),
    cur("SZL", 2),
    cur("THB", 2),
    cur("TJS", 2),
    cur("TMT", 2),
    cur("TND", 3),
    cur("TOP", 2),
    cur("TRY", 2),
    cur("TTD", 2),
    cur("TWD", 2),
    cur("TZS", 2),
    cur("UAH", 2),
    cur("UGX", 0),
    cur("USD", 2),
    cur("USN", 2),
    cur("UYI", 0),
    cur("UYU", 2),
    cur("UYW", 4),
    cur("UZS", 2),
    cur("VED", 2),
    cur("VES", 2),
    cur("VND", 0),
    cur("VUV", 0),
    cur("WST", 2),
    cur("XAD", 2),
    cur("XAF", 0),
    cur("XCD", 2),
    cur("XCG", 2),
    cur("XOF", 0),
    cur("XPF", 0),
    cur("YER", 2),
    cur("ZAR", 2),
    cur("ZMW", 2),
    cur("ZWG", 2),
];

impl Currency {
    /// Euro (ISO 4217 `EUR`, numeric 978), exponent 2.
    pub const EUR: Currency = cur("EUR", 2);
    /// US Dollar (ISO 4217 `USD`, numeric 840), exponent 2.
    pub const USD: Currency = cur("USD", 2);
    /// Pound Sterling (ISO 4217 `GBP`, numeric 826), exponent 2.
    pub const GBP: Currency = cur("GBP", 2);
    /// Yen (ISO 4217 `JPY`, numeric 392), exponent 0: amounts are whole yen.
    pub const JPY: Currency = cur("JPY", 0);
    /// Kuwaiti Dinar (ISO 4217 `KWD`, numeric 414), exponent 3 (1 KWD = 1000 fils).
    pub const KWD: Currency = cur("KWD", 3);
    /// Brazilian Real (ISO 4217 `BRL`, numeric 986), exponent 2.
    pub const BRL: Currency = cur("BRL", 2);

    /// Looks up an active ISO 4217 currency by its alphabetic code.
    ///
    /// Accepts exactly three upper-case ASCII letters naming an entry of ISO 4217 List One that
    /// has a minor unit (see the [module docs](self)).
    ///
    /// # Errors
    /// [`MoneyError::UnknownCurrency`] for anything else: lower or mixed case (`"eur"`),
    /// surrounding whitespace, numeric codes (`"978"`), withdrawn codes (`"HRK"`) and codes
    /// without a minor unit (`"XAU"`, `"XXX"`).
    pub fn from_code(code: &str) -> Result<Currency, MoneyError> {
        let well_formed = code.len() == 3 && code.bytes().all(|b| b.is_ascii_uppercase());
        if well_formed {
            // Compared as numbers, not strings: a string comparison is a `memcmp` call per
            // step, and amounts are formatted for every line of a result (docs/performance.md,
            // "An audited read's own formatting").
            let key = code_key(code.as_bytes());
            if let Ok(index) = ACTIVE.binary_search_by_key(&key, |c| code_key(c.code.as_bytes())) {
                if let Some(found) = ACTIVE.get(index) {
                    return Ok(*found);
                }
            }
        }
        Err(MoneyError::UnknownCurrency {
            code: code.to_owned(),
        })
    }

    /// The ISO 4217 alphabetic code, three upper-case ASCII letters (e.g. `"EUR"`).
    pub fn code(&self) -> &'static str {
        self.code
    }

    /// The ISO 4217 minor-unit exponent: the number of decimal places (0 to 4; EUR 2, JPY 0,
    /// KWD 3, CLF 4).
    pub fn exponent(&self) -> u8 {
        self.exponent
    }

    /// How many minor units make one major unit: `10^exponent` (EUR 100, JPY 1, KWD 1000).
    pub fn minor_units_per_major(&self) -> i64 {
        10_i64.pow(u32::from(self.exponent))
    }

    /// Every accepted currency, sorted by code (ISO 4217 List One, less the codes without a
    /// minor unit).
    pub fn all() -> &'static [Currency] {
        ACTIVE
    }
}

impl fmt::Debug for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Currency").field(&self.code).finish()
    }
}

/// Formats the alphabetic code, e.g. `EUR`.
impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code)
    }
}

/// Same as [`Currency::from_code`].
impl FromStr for Currency {
    type Err = MoneyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Currency::from_code(s)
    }
}

/// Serializes as the code string, e.g. `"EUR"`.
impl Serialize for Currency {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.code)
    }
}

/// Deserializes from the code string, validated by [`Currency::from_code`].
impl<'de> Deserialize<'de> for Currency {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        crate::serde_util::from_str_via_parse(deserializer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_sorted_unique_and_well_formed() {
        for pair in ACTIVE.windows(2) {
            assert!(
                pair[0].code < pair[1].code,
                "{:?} before {:?}",
                pair[0],
                pair[1]
            );
        }
        for c in ACTIVE {
            assert_eq!(c.code.len(), 3);
            assert!(c.code.bytes().all(|b| b.is_ascii_uppercase()));
            assert!(c.exponent <= 4);
        }
        // ISO 4217 List One (2026-01-01) has 178 distinct codes; 13 of them have no minor unit.
        assert_eq!(ACTIVE.len(), 165);
    }

    #[test]
    fn every_entry_round_trips_through_from_code() {
        for c in Currency::all() {
            assert_eq!(Currency::from_code(c.code()), Ok(*c));
            assert_eq!(c.code().parse::<Currency>(), Ok(*c));
        }
        // Every three upper-case letters: found exactly when the table holds them.
        for a in b'A'..=b'Z' {
            for b in b'A'..=b'Z' {
                for c in b'A'..=b'Z' {
                    let code = String::from_utf8(vec![a, b, c]).unwrap();
                    let listed = ACTIVE.iter().find(|entry| entry.code == code);
                    assert_eq!(Currency::from_code(&code).ok(), listed.copied(), "{code}");
                }
            }
        }
    }

    #[test]
    fn named_constants_match_the_table() {
        for c in [
            Currency::EUR,
            Currency::USD,
            Currency::GBP,
            Currency::JPY,
            Currency::KWD,
            Currency::BRL,
        ] {
            assert_eq!(Currency::from_code(c.code()), Ok(c));
        }
    }

    #[test]
    fn exponents_follow_iso_4217() {
        let expect = |code: &str, exponent: u8| {
            let c = Currency::from_code(code).unwrap_or_else(|e| panic!("{code}: {e}"));
            assert_eq!(c.exponent(), exponent, "{code}");
        };
        for code in [
            "JPY", "KRW", "ISK", "CLP", "VND", "XAF", "XOF", "UGX", "PYG", "BIF", "DJF", "GNF",
            "KMF", "RWF", "VUV", "XPF", "UYI",
        ] {
            expect(code, 0);
        }
        for code in ["KWD", "BHD", "IQD", "JOD", "LYD", "OMR", "TND"] {
            expect(code, 3);
        }
        for code in ["CLF", "UYW"] {
            expect(code, 4);
        }
        for code in [
            "EUR", "USD", "GBP", "BRL", "CHF", "CNY", "INR", "HUF", "IDR", "XCG", "ZWG", "SLE",
            "VES", "VED", "STN", "MRU", "BOV", "CHE", "CHW", "COU", "MXV", "USN",
        ] {
            expect(code, 2);
        }
        let zero: Vec<_> = ACTIVE.iter().filter(|c| c.exponent == 0).collect();
        assert_eq!(zero.len(), 17);
        let three: Vec<_> = ACTIVE.iter().filter(|c| c.exponent == 3).collect();
        assert_eq!(three.len(), 7);
        let four: Vec<_> = ACTIVE.iter().filter(|c| c.exponent == 4).collect();
        assert_eq!(four.len(), 2);
    }

    #[test]
    fn minor_units_per_major() {
        assert_eq!(Currency::EUR.minor_units_per_major(), 100);
        assert_eq!(Currency::JPY.minor_units_per_major(), 1);
        assert_eq!(Currency::KWD.minor_units_per_major(), 1000);
        assert_eq!(
            Currency::from_code("CLF").map(|c| c.minor_units_per_major()),
            Ok(10_000)
        );
    }

    #[test]
    fn rejects_codes_without_minor_unit_withdrawn_and_malformed() {
        for code in [
            "XAU", "XAG", "XPT", "XPD", "XTS", "XXX", "XDR", "XBA", "XBB", "XBC", "XBD", "XSU",
            "XUA", "ANG", "HRK", "SLL", "ZWL", "CUC", "DEM", "eur", "Eur", "EU", "EURO", " EUR",
            "EUR ", "978", "", "ÉUR", "E\u{0}R",
        ] {
            assert_eq!(
                Currency::from_code(code),
                Err(MoneyError::UnknownCurrency {
                    code: code.to_owned()
                }),
                "{code:?}"
            );
        }
    }

    #[test]
    fn unknown_currency_message_says_what_to_send() {
        let message = Currency::from_code("eur")
            .map(|c| c.to_string())
            .unwrap_or_else(|e| e.to_string());
        assert!(message.contains("\"eur\""), "{message}");
        assert!(message.contains("ISO 4217"), "{message}");
        assert!(message.contains("did you mean \"EUR\""), "{message}");
        let message = Currency::from_code("XAU")
            .map(|c| c.to_string())
            .unwrap_or_else(|e| e.to_string());
        assert!(!message.contains("did you mean"), "{message}");
    }

    #[test]
    fn display_debug_and_serde() {
        assert_eq!(Currency::EUR.to_string(), "EUR");
        assert_eq!(format!("{:?}", Currency::KWD), "Currency(\"KWD\")");
        assert_eq!(
            serde_json::to_string(&Currency::JPY).ok().as_deref(),
            Some("\"JPY\"")
        );
        let back: Result<Currency, _> = serde_json::from_str("\"BRL\"");
        assert_eq!(back.ok(), Some(Currency::BRL));
        let bad: Result<Currency, _> = serde_json::from_str("\"brl\"");
        let message = bad.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(message.contains("unknown currency"), "{message}");
        let not_a_string: Result<Currency, _> = serde_json::from_str("978");
        assert!(not_a_string.is_err());
    }
}
