//! OPP payment types and transaction ids.
//!
//! Source: OPP's server-to-server API reference, parameter `paymentType`: PA (preauthorization),
//! DB (debit), CP (capture), RV (reversal), RF (refund), RB (rebill), CB (chargeback) and
//! CR (chargeback reversal); and the transaction `id` OPP returns for every transaction (a
//! 32-character hexadecimal string in practice), which back-office operations reference.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// What was wrong with an id or a payment-type code, and what to send instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// The transaction id was empty.
    #[error(
        "transaction id is empty; send the id OPP returned for the transaction: 1 to {max} \
         characters of A-Z, a-z, 0-9, '.', '_' and '-', e.g. \"8ac7a4c97d0a2b6f017d0b3b1c8a1234\"",
        max = TransactionId::MAX_LEN
    )]
    Empty,

    /// The transaction id is longer than [`TransactionId::MAX_LEN`] characters.
    #[error(
        "transaction id is {length} characters long; send the id OPP returned for the \
         transaction, at most {max} characters",
        max = TransactionId::MAX_LEN
    )]
    TooLong {
        /// The length of the rejected id, in characters.
        length: usize,
    },

    /// The transaction id contains a character outside `[A-Za-z0-9._-]`.
    #[error(
        "transaction id {input:?} contains {character:?} at position {position}; send only \
         A-Z, a-z, 0-9, '.', '_' and '-' (the id exactly as OPP returned it)"
    )]
    InvalidCharacter {
        /// The rejected id, verbatim.
        input: String,
        /// The first offending character.
        character: char,
        /// Its 1-based position, counted in characters.
        position: usize,
    },

    /// The payment type is not one of OPP's codes PA, DB, CP, RV, RF, RB, CB, CR.
    #[error(
        "unknown payment type {code:?}; send one of PA, DB, CP, RV, RF, RB, CB, CR (OPP's \
         upper-case paymentType codes){}",
        did_you_mean(.code)
    )]
    UnknownPaymentType {
        /// The rejected code, verbatim.
        code: String,
    },
}

fn did_you_mean(code: &str) -> String {
    let upper = code.trim().to_ascii_uppercase();
    match upper.parse::<PaymentType>() {
        Ok(found) if upper != code => format!(" (did you mean \"{}\"?)", found.code()),
        _ => String::new(),
    }
}

/// An OPP payment type (`paymentType`), serialized as its two-letter code.
///
/// Source: OPP API reference, `paymentType`. Initial types: [`Preauthorization`] (PA) and
/// [`Debit`] (DB). Back-office types, which reference an earlier transaction: [`Capture`] (CP, of
/// a PA), [`Reversal`] (RV, of a PA), [`Refund`] (RF, of a DB/CP/RB), [`Rebill`] (RB, of a DB),
/// [`Chargeback`] (CB, of a DB/CP/RB) and [`ChargebackReversal`] (CR, of a CB). See
/// [`crate::ledger`] for the rules.
///
/// [`Preauthorization`]: PaymentType::Preauthorization
/// [`Debit`]: PaymentType::Debit
/// [`Capture`]: PaymentType::Capture
/// [`Reversal`]: PaymentType::Reversal
/// [`Refund`]: PaymentType::Refund
/// [`Rebill`]: PaymentType::Rebill
/// [`Chargeback`]: PaymentType::Chargeback
/// [`ChargebackReversal`]: PaymentType::ChargebackReversal
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PaymentType {
    /// `PA`: reserves an amount on the customer's account without moving it.
    Preauthorization,
    /// `DB`: charges the customer's account immediately.
    Debit,
    /// `CP`: moves (part of) a preauthorized amount.
    Capture,
    /// `RV`: releases a preauthorization in full before anything was captured.
    Reversal,
    /// `RF`: pays (part of) a debit, capture or rebill back to the customer.
    Refund,
    /// `RB`: charges the customer again on the strength of an earlier debit.
    Rebill,
    /// `CB`: the customer's bank took the money of a debit, capture or rebill back.
    Chargeback,
    /// `CR`: a chargeback was reversed in the merchant's favour.
    ChargebackReversal,
}

impl PaymentType {
    /// Every payment type, in OPP's documentation order.
    pub const ALL: [PaymentType; 8] = [
        PaymentType::Preauthorization,
        PaymentType::Debit,
        PaymentType::Capture,
        PaymentType::Reversal,
        PaymentType::Refund,
        PaymentType::Rebill,
        PaymentType::Chargeback,
        PaymentType::ChargebackReversal,
    ];

    /// OPP's two-letter code: `"PA"`, `"DB"`, `"CP"`, `"RV"`, `"RF"`, `"RB"`, `"CB"` or `"CR"`.
    pub fn code(&self) -> &'static str {
        match self {
            PaymentType::Preauthorization => "PA",
            PaymentType::Debit => "DB",
            PaymentType::Capture => "CP",
            PaymentType::Reversal => "RV",
            PaymentType::Refund => "RF",
            PaymentType::Rebill => "RB",
            PaymentType::Chargeback => "CB",
            PaymentType::ChargebackReversal => "CR",
        }
    }

    /// OPP's lower-case name of the type: `"preauthorization"`, `"debit"`, `"capture"`,
    /// `"reversal"`, `"refund"`, `"rebill"`, `"chargeback"` or `"chargeback reversal"`.
    pub fn description(&self) -> &'static str {
        match self {
            PaymentType::Preauthorization => "preauthorization",
            PaymentType::Debit => "debit",
            PaymentType::Capture => "capture",
            PaymentType::Reversal => "reversal",
            PaymentType::Refund => "refund",
            PaymentType::Rebill => "rebill",
            PaymentType::Chargeback => "chargeback",
            PaymentType::ChargebackReversal => "chargeback reversal",
        }
    }

    /// Whether the type starts a payment (PA, DB) rather than referencing an earlier transaction.
    pub fn is_initial(&self) -> bool {
        matches!(self, PaymentType::Preauthorization | PaymentType::Debit)
    }
}

/// Formats the two-letter code, e.g. `PA`.
impl fmt::Display for PaymentType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// Parses the exact upper-case two-letter code.
///
/// # Errors
/// [`IdError::UnknownPaymentType`] for anything else (`"pa"`, `" PA"`, `"XX"`).
impl FromStr for PaymentType {
    type Err = IdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        PaymentType::ALL
            .into_iter()
            .find(|t| t.code() == s)
            .ok_or_else(|| IdError::UnknownPaymentType { code: s.to_owned() })
    }
}

/// Serializes as the two-letter code, e.g. `"PA"`.
impl Serialize for PaymentType {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.code())
    }
}

/// Deserializes from the exact two-letter code.
impl<'de> Deserialize<'de> for PaymentType {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        crate::serde_util::from_str_via_parse(deserializer)
    }
}

/// An OPP transaction id: 1 to 64 characters of `[A-Za-z0-9._-]`.
///
/// OPP's own ids are 32 lower-case hexadecimal characters (e.g.
/// `8ac7a4c97d0a2b6f017d0b3b1c8a1234`); the wider alphabet leaves room for emulator and test ids.
/// Serialized (serde) as the plain string; deserialization validates it like
/// [`TransactionId::parse`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TransactionId(String);

impl TransactionId {
    /// The longest accepted id, in characters.
    pub const MAX_LEN: usize = 64;

    /// Validates an id.
    ///
    /// # Errors
    /// [`IdError::Empty`], [`IdError::TooLong`] (more than [`TransactionId::MAX_LEN`]
    /// characters) or [`IdError::InvalidCharacter`] (anything outside `[A-Za-z0-9._-]`,
    /// including whitespace).
    pub fn parse(input: &str) -> Result<TransactionId, IdError> {
        if input.is_empty() {
            return Err(IdError::Empty);
        }
        let length = input.chars().count();
        if length > Self::MAX_LEN {
            return Err(IdError::TooLong { length });
        }
        let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
        if let Some((index, character)) = input.chars().enumerate().find(|(_, c)| !allowed(*c)) {
            return Err(IdError::InvalidCharacter {
                input: input.to_owned(),
                character,
                position: index + 1,
            });
        }
        Ok(TransactionId(input.to_owned()))
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The id as an owned string.
    pub fn into_string(self) -> String {
        self.0
    }
}

/// Formats the id verbatim.
impl fmt::Display for TransactionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for TransactionId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// Same as [`TransactionId::parse`].
impl FromStr for TransactionId {
    type Err = IdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TransactionId::parse(s)
    }
}

/// Serializes as the plain id string.
impl Serialize for TransactionId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

/// Deserializes from a string validated by [`TransactionId::parse`].
impl<'de> Deserialize<'de> for TransactionId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        crate::serde_util::from_str_via_parse(deserializer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_descriptions() {
        let expected = [
            ("PA", "preauthorization"),
            ("DB", "debit"),
            ("CP", "capture"),
            ("RV", "reversal"),
            ("RF", "refund"),
            ("RB", "rebill"),
            ("CB", "chargeback"),
            ("CR", "chargeback reversal"),
        ];
        for (t, (code, description)) in PaymentType::ALL.iter().zip(expected) {
            assert_eq!(t.code(), code);
            assert_eq!(t.description(), description);
            assert_eq!(t.to_string(), code);
            assert_eq!(code.parse::<PaymentType>(), Ok(*t));
        }
        assert!(PaymentType::Preauthorization.is_initial());
        assert!(PaymentType::Debit.is_initial());
        assert!(!PaymentType::Capture.is_initial());
    }

    #[test]
    fn parse_is_exact() {
        for bad in [
            "pa",
            "Pa",
            " PA",
            "PA ",
            "XX",
            "",
            "PAX",
            "preauthorization",
        ] {
            assert_eq!(
                bad.parse::<PaymentType>(),
                Err(IdError::UnknownPaymentType { code: bad.into() }),
                "{bad:?}"
            );
        }
        let message = "db"
            .parse::<PaymentType>()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(message.contains("send one of PA, DB"), "{message}");
        assert!(message.contains("did you mean \"DB\""), "{message}");
    }

    #[test]
    fn payment_type_serde() {
        assert_eq!(
            serde_json::to_string(&PaymentType::ChargebackReversal).ok(),
            Some("\"CR\"".to_owned())
        );
        let parsed: Result<PaymentType, _> = serde_json::from_str("\"RB\"");
        assert_eq!(parsed.ok(), Some(PaymentType::Rebill));
        let bad: Result<PaymentType, _> = serde_json::from_str("\"rb\"");
        assert!(bad.is_err());
    }

    #[test]
    fn transaction_id_accepts_opp_ids() {
        for ok in [
            "8ac7a4c97d0a2b6f017d0b3b1c8a1234",
            "a",
            "A.b_c-9",
            &"x".repeat(TransactionId::MAX_LEN),
        ] {
            let id = TransactionId::parse(ok);
            assert_eq!(id.as_ref().map(TransactionId::as_str), Ok(ok));
            assert_eq!(id.map(|i| i.to_string()), Ok(ok.to_owned()));
        }
    }

    #[test]
    fn transaction_id_rejections() {
        assert_eq!(TransactionId::parse(""), Err(IdError::Empty));
        assert_eq!(
            TransactionId::parse(&"x".repeat(65)),
            Err(IdError::TooLong { length: 65 })
        );
        assert_eq!(
            TransactionId::parse("ab cd"),
            Err(IdError::InvalidCharacter {
                input: "ab cd".into(),
                character: ' ',
                position: 3
            })
        );
        assert_eq!(
            TransactionId::parse("é1"),
            Err(IdError::InvalidCharacter {
                input: "é1".into(),
                character: 'é',
                position: 1
            })
        );
        for bad in ["a/b", "a?b", "../x", "a\nb", "a%2F"] {
            assert!(
                matches!(
                    TransactionId::parse(bad),
                    Err(IdError::InvalidCharacter { .. })
                ),
                "{bad:?}"
            );
        }
        for e in [
            IdError::Empty,
            IdError::TooLong { length: 70 },
            IdError::InvalidCharacter {
                input: "a b".into(),
                character: ' ',
                position: 2,
            },
        ] {
            assert!(e.to_string().contains("send"), "{e}");
        }
    }

    #[test]
    fn transaction_id_serde_is_transparent_and_validated() {
        let id = TransactionId::parse("abc123");
        assert_eq!(
            id.as_ref().ok().and_then(|i| serde_json::to_string(i).ok()),
            Some("\"abc123\"".to_owned())
        );
        let back: Result<TransactionId, _> = serde_json::from_str("\"abc123\"");
        assert_eq!(back.ok(), id.ok());
        let bad: Result<TransactionId, _> = serde_json::from_str("\"a b\"");
        assert!(bad.is_err());
        assert_eq!(
            TransactionId::parse("x1").map(TransactionId::into_string),
            Ok("x1".to_owned())
        );
    }
}
