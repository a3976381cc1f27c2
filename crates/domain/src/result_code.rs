//! OPP result codes, their documented groups ([`ResultFamily`]) and what a caller should do about
//! them ([`ResultCategory`]).
//!
//! Source: OPP's API reference, "Result codes". Every OPP response carries
//! `result.code` (`ddd.ddd.ddd`) and `result.description`. OPP groups the codes with regular
//! expressions and says the order of evaluation matters; [`FAMILY_PATTERNS`] holds those
//! expressions verbatim, in OPP's order, and [`ResultFamily::classify`] returns the first group
//! that matches.
//!
//! Two consequences of OPP's order are kept as published rather than "fixed":
//! - the external-risk pattern `100\.38` comes before the 3-D Secure pattern `100\.380\.4` and the
//!   risk-management pattern `100\.380\.[23]|100\.380\.101`, so every `100.380.*` code classifies
//!   as [`ResultFamily::ExternalRisk`] and [`ResultFamily::RiskManagement`] is never returned by
//!   [`ResultFamily::classify`];
//! - the account-validation pattern `100.2[01]` has an unescaped `.`; on a validated code that
//!   position is always a `.`, so it behaves like `100\.2[01]`.

use std::fmt;
use std::str::FromStr;
use std::sync::LazyLock;

use regex::Regex;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// What was wrong with a result code, and what to send instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResultCodeError {
    /// The input is not three groups of three ASCII digits separated by `.`.
    #[error(
        "result code {input:?} is not of the form ddd.ddd.ddd; send three groups of three ASCII \
         digits separated by '.', exactly as OPP returned it, e.g. \"000.100.110\""
    )]
    Malformed {
        /// The rejected input, verbatim.
        input: String,
    },
}

/// An OPP result code, validated as `^\d{3}\.\d{3}\.\d{3}$` with ASCII digits only
/// (e.g. `000.100.110`, `700.400.100`).
///
/// Serialized (serde) as the plain string; deserialization validates it like
/// [`ResultCode::parse`]. Source: OPP API reference, "Result codes".
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ResultCode(String);

fn is_well_formed(code: &str) -> bool {
    let bytes = code.as_bytes();
    bytes.len() == 11
        && bytes.iter().enumerate().all(|(i, b)| {
            if i == 3 || i == 7 {
                *b == b'.'
            } else {
                b.is_ascii_digit()
            }
        })
}

impl ResultCode {
    /// Validates a result code.
    ///
    /// # Errors
    /// [`ResultCodeError::Malformed`] unless the input is exactly `ddd.ddd.ddd` with ASCII digits
    /// (no whitespace, no other separators, no Unicode digits).
    pub fn parse(input: &str) -> Result<ResultCode, ResultCodeError> {
        if is_well_formed(input) {
            Ok(ResultCode(input.to_owned()))
        } else {
            Err(ResultCodeError::Malformed {
                input: input.to_owned(),
            })
        }
    }

    /// The code as a string slice, e.g. `"000.100.110"`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The OPP group the code belongs to (first matching pattern of [`FAMILY_PATTERNS`]).
    pub fn family(&self) -> ResultFamily {
        ResultFamily::classify(&self.0)
    }

    /// What a caller should make of the code (`self.family().category()`).
    pub fn category(&self) -> ResultCategory {
        self.family().category()
    }

    /// Whether the transaction was processed: the category is [`ResultCategory::Success`] or
    /// [`ResultCategory::SuccessManualReview`].
    pub fn is_success(&self) -> bool {
        matches!(
            self.category(),
            ResultCategory::Success | ResultCategory::SuccessManualReview
        )
    }

    /// OPP's description of the code, if it is one of the constants in [`codes`].
    pub fn description(&self) -> Option<&'static str> {
        codes::description(&self.0)
    }
}

/// Formats the code verbatim.
impl fmt::Display for ResultCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for ResultCode {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// Same as [`ResultCode::parse`].
impl FromStr for ResultCode {
    type Err = ResultCodeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ResultCode::parse(s)
    }
}

/// Serializes as the plain code string.
impl Serialize for ResultCode {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

/// Deserializes from a string validated by [`ResultCode::parse`].
impl<'de> Deserialize<'de> for ResultCode {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        crate::serde_util::from_str_via_parse(deserializer)
    }
}

/// One group of OPP's documented result-code regular expressions.
///
/// The variants follow OPP's "Result codes" page, in its order; [`ResultFamily::description`]
/// gives OPP's title of the group and [`FAMILY_PATTERNS`] its pattern. Serialized (serde) in
/// snake_case, e.g. `"rejected_by_external_bank"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResultFamily {
    /// Successfully processed: `^(000\.000\.|000\.100\.1|000\.[36]|000\.400\.[1][12]0)`.
    Success,
    /// Successfully processed, should be manually reviewed: `^(000\.400\.0[^3]|000\.400\.100)`.
    SuccessManualReview,
    /// Pending, open session (changes within about half an hour): `^(000\.200)`.
    Pending,
    /// Pending, may change even after several days: `^(800\.400\.5|100\.400\.500)`.
    PendingExtended,
    /// Rejected by 3-D Secure and Intercard risk checks: `^(000\.400\.[1][0-9][1-9]|000\.400\.2)`.
    RejectedRisk3ds,
    /// Rejected by the external bank or similar payment system:
    /// `^(800\.[17]00|800\.800\.[123])`.
    RejectedByExternalBank,
    /// Communication error, outcome uncertain: `^(900\.[1234]00|000\.400\.030)`.
    CommunicationError,
    /// System error: `^(800\.[56]|999\.|600\.1|800\.800\.[84])`.
    SystemError,
    /// Error in an asynchronous workflow: `^(100\.39[765])`.
    AsyncWorkflowError,
    /// Soft decline (`^(300\.100\.100)`) or rejection by external risk systems
    /// (`^(100\.400\.[0-3]|100\.38|100\.370\.100|100\.370\.11)`).
    ExternalRisk,
    /// Rejected by address validation (AVS): `^(800\.400\.1)`.
    AddressValidation,
    /// Rejected by 3-D Secure: `^(800\.400\.2|100\.380\.4|100\.390)`.
    ThreeDSecure,
    /// Rejected by blacklist validation: `^(100\.100\.701|800\.[32])`.
    Blacklist,
    /// Rejected by risk validation: `^(800\.1[123456]0)`.
    RiskValidation,
    /// Rejected by configuration validation: `^(600\.[23]|500\.[12]|800\.121)`.
    ConfigurationValidation,
    /// Rejected by registration validation: `^(100\.[13]50)`.
    RegistrationValidation,
    /// Rejected by job validation: `^(100\.250|100\.360)`.
    JobValidation,
    /// Rejected by reference validation (the referenced transaction does not allow the
    /// operation): `^(700\.[1345][05]0)`.
    ReferenceValidation,
    /// Rejected by format validation (invalid or missing parameters):
    /// `^(200\.[123]|100\.[53][07]|800\.900|100\.[69]00\.500)`.
    FormatValidation,
    /// Rejected by address validation of the request's address data: `^(100\.800)`.
    AddressValidationFormat,
    /// Rejected by contact validation: `^(100\.[97]00)`.
    ContactValidation,
    /// Rejected by account validation: `^(100\.100|100.2[01])`.
    AccountValidation,
    /// Rejected by amount validation: `^(100\.55)`.
    AmountValidation,
    /// Rejected by risk management: `^(100\.380\.[23]|100\.380\.101)`. Shadowed by
    /// [`ResultFamily::ExternalRisk`] in OPP's order (see the [module docs](self)).
    RiskManagement,
    /// Chargeback related: `^(000\.100\.2)`.
    Chargeback,
    /// Matches none of OPP's documented patterns (or is not a well-formed code).
    Unknown,
}

/// OPP's documented result-code patterns, verbatim and in OPP's order of evaluation.
///
/// [`ResultFamily::classify`] returns the family of the first pattern that matches. The external
/// risk group is published as two patterns (soft decline, then external risk systems); both map to
/// [`ResultFamily::ExternalRisk`]. Source: OPP API reference, "Result codes".
pub const FAMILY_PATTERNS: &[(ResultFamily, &str)] = &[
    (
        ResultFamily::Success,
        r"^(000\.000\.|000\.100\.1|000\.[36]|000\.400\.[1][12]0)",
    ),
    (
        ResultFamily::SuccessManualReview,
        r"^(000\.400\.0[^3]|000\.400\.100)",
    ),
    (ResultFamily::Pending, r"^(000\.200)"),
    (
        ResultFamily::PendingExtended,
        r"^(800\.400\.5|100\.400\.500)",
    ),
    (
        ResultFamily::RejectedRisk3ds,
        r"^(000\.400\.[1][0-9][1-9]|000\.400\.2)",
    ),
    (
        ResultFamily::RejectedByExternalBank,
        r"^(800\.[17]00|800\.800\.[123])",
    ),
    (
        ResultFamily::CommunicationError,
        r"^(900\.[1234]00|000\.400\.030)",
    ),
    (
        ResultFamily::SystemError,
        r"^(800\.[56]|999\.|600\.1|800\.800\.[84])",
    ),
    (ResultFamily::AsyncWorkflowError, r"^(100\.39[765])"),
    (ResultFamily::ExternalRisk, r"^(300\.100\.100)"),
    (
        ResultFamily::ExternalRisk,
        r"^(100\.400\.[0-3]|100\.38|100\.370\.100|100\.370\.11)",
    ),
    (ResultFamily::AddressValidation, r"^(800\.400\.1)"),
    (
        ResultFamily::ThreeDSecure,
        r"^(800\.400\.2|100\.380\.4|100\.390)",
    ),
    (ResultFamily::Blacklist, r"^(100\.100\.701|800\.[32])"),
    (ResultFamily::RiskValidation, r"^(800\.1[123456]0)"),
    (
        ResultFamily::ConfigurationValidation,
        r"^(600\.[23]|500\.[12]|800\.121)",
    ),
    (ResultFamily::RegistrationValidation, r"^(100\.[13]50)"),
    (ResultFamily::JobValidation, r"^(100\.250|100\.360)"),
    (ResultFamily::ReferenceValidation, r"^(700\.[1345][05]0)"),
    (
        ResultFamily::FormatValidation,
        r"^(200\.[123]|100\.[53][07]|800\.900|100\.[69]00\.500)",
    ),
    (ResultFamily::AddressValidationFormat, r"^(100\.800)"),
    (ResultFamily::ContactValidation, r"^(100\.[97]00)"),
    (ResultFamily::AccountValidation, r"^(100\.100|100.2[01])"),
    (ResultFamily::AmountValidation, r"^(100\.55)"),
    (
        ResultFamily::RiskManagement,
        r"^(100\.380\.[23]|100\.380\.101)",
    ),
    (ResultFamily::Chargeback, r"^(000\.100\.2)"),
];

/// [`FAMILY_PATTERNS`] compiled once. A pattern that failed to compile is kept as `None` and
/// never matches (a unit test proves every pattern compiles).
static COMPILED: LazyLock<Vec<(ResultFamily, Option<Regex>)>> = LazyLock::new(|| {
    FAMILY_PATTERNS
        .iter()
        .map(|(family, pattern)| (*family, Regex::new(pattern).ok()))
        .collect()
});

impl ResultFamily {
    /// Every family, in OPP's order, [`ResultFamily::Unknown`] last.
    pub const ALL: [ResultFamily; 26] = [
        ResultFamily::Success,
        ResultFamily::SuccessManualReview,
        ResultFamily::Pending,
        ResultFamily::PendingExtended,
        ResultFamily::RejectedRisk3ds,
        ResultFamily::RejectedByExternalBank,
        ResultFamily::CommunicationError,
        ResultFamily::SystemError,
        ResultFamily::AsyncWorkflowError,
        ResultFamily::ExternalRisk,
        ResultFamily::AddressValidation,
        ResultFamily::ThreeDSecure,
        ResultFamily::Blacklist,
        ResultFamily::RiskValidation,
        ResultFamily::ConfigurationValidation,
        ResultFamily::RegistrationValidation,
        ResultFamily::JobValidation,
        ResultFamily::ReferenceValidation,
        ResultFamily::FormatValidation,
        ResultFamily::AddressValidationFormat,
        ResultFamily::ContactValidation,
        ResultFamily::AccountValidation,
        ResultFamily::AmountValidation,
        ResultFamily::RiskManagement,
        ResultFamily::Chargeback,
        ResultFamily::Unknown,
    ];

    /// Classifies a result code string with OPP's patterns, in OPP's order.
    ///
    /// Returns [`ResultFamily::Unknown`] when the string is not a well-formed `ddd.ddd.ddd` code
    /// or when no pattern matches.
    pub fn classify(code: &str) -> ResultFamily {
        if !is_well_formed(code) {
            return ResultFamily::Unknown;
        }
        COMPILED
            .iter()
            .find(|(_, regex)| regex.as_ref().is_some_and(|r| r.is_match(code)))
            .map_or(ResultFamily::Unknown, |(family, _)| *family)
    }

    /// OPP's title of the group, e.g. `"rejections due to reference validation"`.
    pub fn description(&self) -> &'static str {
        match self {
            ResultFamily::Success => "successfully processed transactions",
            ResultFamily::SuccessManualReview => {
                "successfully processed transactions that should be manually reviewed"
            }
            ResultFamily::Pending => "pending transactions",
            ResultFamily::PendingExtended => {
                "pending transactions whose status can change even after several days"
            }
            ResultFamily::RejectedRisk3ds => "rejections due to 3Dsecure and Intercard risk checks",
            ResultFamily::RejectedByExternalBank => {
                "rejections by the external bank or similar payment system"
            }
            ResultFamily::CommunicationError => "rejections due to communication errors",
            ResultFamily::SystemError => "rejections due to system errors",
            ResultFamily::AsyncWorkflowError => "rejections due to error in asynchronous workflow",
            ResultFamily::ExternalRisk => {
                "soft declines and rejections due to checks by external risk systems"
            }
            ResultFamily::AddressValidation => "rejections due to address validation",
            ResultFamily::ThreeDSecure => "rejections due to 3Dsecure",
            ResultFamily::Blacklist => "rejections due to blacklist validation",
            ResultFamily::RiskValidation => "rejections due to risk validation",
            ResultFamily::ConfigurationValidation => "rejections due to configuration validation",
            ResultFamily::RegistrationValidation => "rejections due to registration validation",
            ResultFamily::JobValidation => "rejections due to job validation",
            ResultFamily::ReferenceValidation => "rejections due to reference validation",
            ResultFamily::FormatValidation => "rejections due to format validation",
            ResultFamily::AddressValidationFormat => {
                "rejections due to address validation (address data of the request)"
            }
            ResultFamily::ContactValidation => "rejections due to contact validation",
            ResultFamily::AccountValidation => "rejections due to account validation",
            ResultFamily::AmountValidation => "rejections due to amount validation",
            ResultFamily::RiskManagement => "rejections due to risk management",
            ResultFamily::Chargeback => "chargeback related result codes",
            ResultFamily::Unknown => "not in any of OPP's documented result-code groups",
        }
    }

    /// The coarse category a caller acts on.
    ///
    /// - `Success` → [`ResultCategory::Success`]; `SuccessManualReview` →
    ///   [`ResultCategory::SuccessManualReview`];
    /// - `Pending`, `PendingExtended` → [`ResultCategory::Pending`];
    /// - `RejectedRisk3ds`, `RejectedByExternalBank`, `ExternalRisk`, `AddressValidation`,
    ///   `ThreeDSecure`, `Blacklist`, `RiskValidation`, `RiskManagement` →
    ///   [`ResultCategory::RejectedByBank`] (rejected by the bank or by a risk check);
    /// - `CommunicationError` → [`ResultCategory::CommunicationError`];
    /// - `SystemError`, `AsyncWorkflowError` → [`ResultCategory::SystemError`];
    /// - every validation/format group → [`ResultCategory::RejectedByValidation`];
    /// - `Chargeback` → [`ResultCategory::Unknown`]: these codes report that a chargeback
    ///   happened on the transaction, not whether the request that returned them succeeded or
    ///   failed, so no safe default action follows from them; look at the transaction;
    /// - `Unknown` → [`ResultCategory::Unknown`].
    pub fn category(&self) -> ResultCategory {
        match self {
            ResultFamily::Success => ResultCategory::Success,
            ResultFamily::SuccessManualReview => ResultCategory::SuccessManualReview,
            ResultFamily::Pending | ResultFamily::PendingExtended => ResultCategory::Pending,
            ResultFamily::RejectedRisk3ds
            | ResultFamily::RejectedByExternalBank
            | ResultFamily::ExternalRisk
            | ResultFamily::AddressValidation
            | ResultFamily::ThreeDSecure
            | ResultFamily::Blacklist
            | ResultFamily::RiskValidation
            | ResultFamily::RiskManagement => ResultCategory::RejectedByBank,
            ResultFamily::CommunicationError => ResultCategory::CommunicationError,
            ResultFamily::SystemError | ResultFamily::AsyncWorkflowError => {
                ResultCategory::SystemError
            }
            ResultFamily::ConfigurationValidation
            | ResultFamily::RegistrationValidation
            | ResultFamily::JobValidation
            | ResultFamily::ReferenceValidation
            | ResultFamily::FormatValidation
            | ResultFamily::AddressValidationFormat
            | ResultFamily::ContactValidation
            | ResultFamily::AccountValidation
            | ResultFamily::AmountValidation => ResultCategory::RejectedByValidation,
            ResultFamily::Chargeback | ResultFamily::Unknown => ResultCategory::Unknown,
        }
    }
}

/// What a caller should make of a result: the coarse grouping of [`ResultFamily`].
///
/// Serialized (serde) in snake_case, e.g. `"rejected_by_validation"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResultCategory {
    /// The request was processed successfully.
    Success,
    /// The request was processed, but OPP flags it for manual review.
    SuccessManualReview,
    /// Not final yet; the status changes later (minutes, or for some codes days).
    Pending,
    /// Rejected by the bank or by a risk check (3-D Secure, blacklist, AVS, external risk, ...).
    RejectedByBank,
    /// Refused before reaching the bank: a parameter, the configuration or the referenced
    /// transaction does not allow the request.
    RejectedByValidation,
    /// The connection to the bank or connector failed; the outcome is unknown.
    CommunicationError,
    /// The payment system failed while processing.
    SystemError,
    /// No documented group, or a chargeback notice; no safe default action.
    Unknown,
}

impl ResultCategory {
    /// Every category.
    pub const ALL: [ResultCategory; 8] = [
        ResultCategory::Success,
        ResultCategory::SuccessManualReview,
        ResultCategory::Pending,
        ResultCategory::RejectedByBank,
        ResultCategory::RejectedByValidation,
        ResultCategory::CommunicationError,
        ResultCategory::SystemError,
        ResultCategory::Unknown,
    ];

    /// One sentence on what a caller should do next.
    pub fn guidance(&self) -> &'static str {
        match self {
            ResultCategory::Success => {
                "the request was processed; record the result and do not send it again"
            }
            ResultCategory::SuccessManualReview => {
                "the request was processed but is flagged for manual review; hold fulfilment \
                 until the review clears and do not send it again"
            }
            ResultCategory::Pending => {
                "the transaction is not final yet; wait for the notification or query its status \
                 later, and do not send it again"
            }
            ResultCategory::RejectedByBank => {
                "the bank or a risk check declined the transaction; do not retry unchanged, ask \
                 the customer for another payment method or contact the issuer"
            }
            ResultCategory::RejectedByValidation => {
                "the request was refused before reaching the bank; fix the named parameter or \
                 the referenced transaction and do not retry unchanged"
            }
            ResultCategory::CommunicationError => {
                "the outcome is unknown; query the transaction before retrying"
            }
            ResultCategory::SystemError => {
                "the payment system failed to process the request; query the transaction and \
                 retry later only if it was not processed"
            }
            ResultCategory::Unknown => {
                "the code is not in a group with a known meaning; query the transaction and look \
                 the code up in OPP's result-code list before acting"
            }
        }
    }

    /// The snake_case name used by serde, e.g. `"rejected_by_bank"`.
    pub fn as_str(&self) -> &'static str {
        match self {
            ResultCategory::Success => "success",
            ResultCategory::SuccessManualReview => "success_manual_review",
            ResultCategory::Pending => "pending",
            ResultCategory::RejectedByBank => "rejected_by_bank",
            ResultCategory::RejectedByValidation => "rejected_by_validation",
            ResultCategory::CommunicationError => "communication_error",
            ResultCategory::SystemError => "system_error",
            ResultCategory::Unknown => "unknown",
        }
    }
}

/// Formats the snake_case name, e.g. `rejected_by_bank`.
impl fmt::Display for ResultCategory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The OPP result codes paywarden's emulator and server emit, as `(code, description)` pairs.
///
/// Codes and descriptions are OPP's own (OPP API reference, "Result codes" and the
/// `/v1/resultcodes` list), verbatim, including OPP's spelling.
pub mod codes {
    /// `000.000.000`: Transaction succeeded (family Success).
    pub const TRANSACTION_SUCCEEDED: (&str, &str) = ("000.000.000", "Transaction succeeded");
    /// `000.000.100`: successful request (family Success).
    pub const SUCCESSFUL_REQUEST: (&str, &str) = ("000.000.100", "successful request");
    /// `000.100.110`: success in integrator test mode, what OPP's test system returns for a
    /// successful transaction (family Success).
    pub const TEST_MODE_SUCCESS: (&str, &str) = (
        "000.100.110",
        "Request successfully processed in 'Merchant in Integrator Test Mode'",
    );
    /// `000.200.000`: transaction pending (family Pending: "an open session in the background",
    /// the status changes within about half an hour, OPP "Result codes", pending group
    /// `^(000\.200)`). The final result arrives as a webhook notification and on
    /// `GET /v1/query/{id}`.
    pub const TRANSACTION_PENDING: (&str, &str) = ("000.200.000", "transaction pending");
    /// `000.600.000`: a pending transaction that succeeded later (family Success).
    pub const SUCCEEDED_EXTERNAL_UPDATE: (&str, &str) = (
        "000.600.000",
        "transaction succeeded due to external update",
    );
    /// `800.100.100`: the bank declined without a reason (RejectedByExternalBank).
    pub const DECLINED_UNKNOWN_REASON: (&str, &str) =
        ("800.100.100", "transaction declined for unknown reason");
    /// `700.100.100`: the referenced transaction id does not exist (ReferenceValidation).
    pub const REFERENCE_NOT_EXISTING: (&str, &str) = ("700.100.100", "reference id not existing");
    /// `700.100.200`: the amount must equal the referenced amount (reversal, chargeback
    /// reversal) (ReferenceValidation).
    pub const NON_MATCHING_REFERENCE_AMOUNT: (&str, &str) =
        ("700.100.200", "non matching reference amount");
    /// `700.100.300`: the amount exceeds what the referenced transaction allows
    /// (ReferenceValidation).
    pub const INVALID_AMOUNT_TOO_LARGE: (&str, &str) =
        ("700.100.300", "invalid amount (probably too large)");
    /// `700.100.500`: the currency differs from the referenced transaction's
    /// (ReferenceValidation).
    pub const REFERENCE_CURRENCY_MISMATCH: (&str, &str) = (
        "700.100.500",
        "referenced payment currency does not match with requested payment currency",
    );
    /// `700.100.700`: the referenced transaction's payment type does not allow the operation
    /// (ReferenceValidation).
    pub const REFERENCE_INAPPROPRIATE_TYPE: (&str, &str) = (
        "700.100.700",
        "referenced transaction is of inappropriate type",
    );
    /// `700.300.200`: the referenced transaction was not successful (ReferenceValidation).
    pub const REFERENCE_REJECTED: (&str, &str) = ("700.300.200", "referenced tx was rejected");
    /// `700.300.300`: the referenced transaction was already refunded, captured or reversed
    /// (ReferenceValidation).
    pub const REFERENCE_ALREADY_PROCESSED: (&str, &str) = (
        "700.300.300",
        "referenced tx can not be refunded, captured or reversed (already refunded, captured or reversed)",
    );
    /// `700.300.600`: the referenced transaction has an un-reversed chargeback
    /// (ReferenceValidation).
    pub const REFERENCE_CHARGEBACKED: (&str, &str) = (
        "700.300.600",
        "referenced tx can not be refunded or reversed (was chargebacked)",
    );
    /// `700.400.100`: the capture exceeds the authorised remainder, or the PA was reversed
    /// (ReferenceValidation).
    pub const CANNOT_CAPTURE: (&str, &str) = (
        "700.400.100",
        "cannot capture (PA value exceeded, PA reverted or invalid workflow?)",
    );
    /// `700.400.200`: the refund exceeds the refundable remainder (ReferenceValidation).
    pub const CANNOT_REFUND: (&str, &str) = (
        "700.400.200",
        "cannot refund (refund volume exceeded or tx reversed or invalid workflow?)",
    );
    /// `700.400.300`: the PA was already reversed or captured (ReferenceValidation).
    pub const CANNOT_REVERSE: (&str, &str) = (
        "700.400.300",
        "cannot reverse (already refunded|reversed, invalid workflow or amount exceeded)",
    );
    /// `700.400.400`: the transaction was already charged back, or nothing is left to charge
    /// back (ReferenceValidation).
    pub const CANNOT_CHARGEBACK: (&str, &str) = (
        "700.400.400",
        "cannot chargeback (already chargebacked or invalid workflow?)",
    );
    /// `700.400.410`: the chargeback was already reversed (ReferenceValidation). OPP's own
    /// wording ("reversal chargeback", "reversaled").
    pub const CHARGEBACK_ALREADY_REVERSED: (&str, &str) = (
        "700.400.410",
        "cannot reversal chargeback (chargeback is already reversaled or invalid workflow?)",
    );
    /// `700.400.420`: the referenced transaction is not a chargeback (ReferenceValidation).
    /// OPP's own wording.
    pub const NO_CHARGEBACK_TO_REVERSE: (&str, &str) = (
        "700.400.420",
        "cannot reversal chargeback (no chargeback existing or invalid workflow?)",
    );
    /// `700.400.510`: a capture must reference a PA (ReferenceValidation).
    pub const CAPTURE_NEEDS_PA: (&str, &str) = (
        "700.400.510",
        "capture needs at least one successful transaction of type (PA)",
    );
    /// `700.400.520`: a refund must reference a DB, CP or RB (ReferenceValidation).
    pub const REFUND_NEEDS_DEBIT: (&str, &str) = (
        "700.400.520",
        "refund needs at least one successful transaction of type (CP or DB or RB or RC)",
    );
    /// `700.400.550`: a chargeback must reference a DB, CP or RB (ReferenceValidation).
    pub const CHARGEBACK_NEEDS_DEBIT: (&str, &str) = (
        "700.400.550",
        "chargeback needs at least one successful transaction of type (CP or DB or RB)",
    );
    /// `700.400.580`: the transaction was not found (ReferenceValidation).
    pub const CANNOT_FIND_TRANSACTION: (&str, &str) = ("700.400.580", "cannot find transaction");
    /// `100.550.300`: the amount is missing or zero (AmountValidation).
    pub const NO_AMOUNT: (&str, &str) = (
        "100.550.300",
        "request contains no amount or too low amount",
    );
    /// `200.300.404`: a parameter is invalid or missing (FormatValidation).
    pub const INVALID_PARAMETER: (&str, &str) = ("200.300.404", "invalid or missing parameter");
    /// `800.900.300`: the access token is wrong (FormatValidation).
    pub const INVALID_AUTHENTICATION: (&str, &str) =
        ("800.900.300", "invalid authentication information");
    /// `800.900.301`: the token is not allowed to use the entity (FormatValidation).
    pub const INSUFFICIENT_RIGHTS: (&str, &str) = (
        "800.900.301",
        "user authorization failed, user has no sufficient rights to process transaction",
    );
    /// `800.100.151`: the bank declined the card (RejectedByExternalBank).
    pub const DECLINED_INVALID_CARD: (&str, &str) =
        ("800.100.151", "transaction declined (invalid card)");
    /// `800.100.155`: the bank declined for lack of funds (RejectedByExternalBank).
    pub const DECLINED_INSUFFICIENT_FUNDS: (&str, &str) = (
        "800.100.155",
        "transaction declined (amount exceeds credit)",
    );
    /// `100.100.101`: the card number fails the Luhn check (AccountValidation).
    pub const INVALID_CARD_NUMBER: (&str, &str) = (
        "100.100.101",
        "invalid creditcard, bank account number or bank name",
    );
    /// `999.999.999`: undefined connector or acquirer error (SystemError).
    pub const SYSTEM_ERROR: (&str, &str) = ("999.999.999", "UNDEFINED CONNECTOR/ACQUIRER ERROR");
    /// `900.100.300`: timeout, the outcome is uncertain (CommunicationError).
    pub const COMMUNICATION_TIMEOUT: (&str, &str) = ("900.100.300", "timeout, uncertain result");

    /// Every constant of this module, sorted by code.
    pub const ALL: &[(&str, &str)] = &[
        TRANSACTION_SUCCEEDED,
        SUCCESSFUL_REQUEST,
        TEST_MODE_SUCCESS,
        TRANSACTION_PENDING,
        SUCCEEDED_EXTERNAL_UPDATE,
        INVALID_CARD_NUMBER,
        NO_AMOUNT,
        INVALID_PARAMETER,
        REFERENCE_NOT_EXISTING,
        NON_MATCHING_REFERENCE_AMOUNT,
        INVALID_AMOUNT_TOO_LARGE,
        REFERENCE_CURRENCY_MISMATCH,
        REFERENCE_INAPPROPRIATE_TYPE,
        REFERENCE_REJECTED,
        REFERENCE_ALREADY_PROCESSED,
        REFERENCE_CHARGEBACKED,
        CANNOT_CAPTURE,
        CANNOT_REFUND,
        CANNOT_REVERSE,
        CANNOT_CHARGEBACK,
        CHARGEBACK_ALREADY_REVERSED,
        NO_CHARGEBACK_TO_REVERSE,
        CAPTURE_NEEDS_PA,
        REFUND_NEEDS_DEBIT,
        CHARGEBACK_NEEDS_DEBIT,
        CANNOT_FIND_TRANSACTION,
        DECLINED_UNKNOWN_REASON,
        DECLINED_INVALID_CARD,
        DECLINED_INSUFFICIENT_FUNDS,
        INVALID_AUTHENTICATION,
        INSUFFICIENT_RIGHTS,
        COMMUNICATION_TIMEOUT,
        SYSTEM_ERROR,
    ];

    /// OPP's description of `code`, if it is one of the constants of this module.
    pub fn description(code: &str) -> Option<&'static str> {
        ALL.iter().find(|(c, _)| *c == code).map(|(_, d)| *d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn every_pattern_compiles() {
        for (family, pattern) in FAMILY_PATTERNS {
            assert!(
                Regex::new(pattern).is_ok(),
                "{family:?}: {pattern} does not compile"
            );
        }
        assert_eq!(COMPILED.len(), FAMILY_PATTERNS.len());
        assert!(COMPILED.iter().all(|(_, r)| r.is_some()));
    }

    #[test]
    fn patterns_are_in_opp_order_and_cover_every_family_but_unknown() {
        let order: Vec<ResultFamily> = FAMILY_PATTERNS.iter().map(|(f, _)| *f).collect();
        let mut dedup = order.clone();
        dedup.dedup();
        let expected: Vec<ResultFamily> = ResultFamily::ALL
            .into_iter()
            .filter(|f| *f != ResultFamily::Unknown)
            .collect();
        assert_eq!(dedup, expected);
    }

    #[test]
    fn parse_validates_shape() {
        for ok in ["000.100.110", "999.999.999", "000.000.000"] {
            assert_eq!(ResultCode::parse(ok).map(|c| c.to_string()), Ok(ok.into()));
        }
        for bad in [
            "",
            "000.100.11",
            "000.100.1100",
            "000,100,110",
            " 000.100.110",
            "000.100.110 ",
            "0001001100",
            "a00.100.110",
            "٠٠٠.١٠٠.١١٠",
            "000.100.11\n",
        ] {
            assert_eq!(
                ResultCode::parse(bad),
                Err(ResultCodeError::Malformed { input: bad.into() }),
                "{bad:?}"
            );
        }
        let message = ResultCode::parse("1.2.3")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(message.contains("send three groups"), "{message}");
    }

    fn family(code: &str) -> ResultFamily {
        ResultCode::parse(code)
            .map(|c| c.family())
            .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn classification_follows_opp_patterns_in_order() {
        use ResultFamily::*;
        let cases = [
            ("000.000.000", Success),
            ("000.000.100", Success),
            ("000.100.110", Success),
            ("000.100.112", Success),
            ("000.300.000", Success),
            ("000.310.100", Success),
            ("000.600.000", Success),
            ("000.400.110", Success),
            ("000.400.120", Success),
            ("000.400.000", SuccessManualReview),
            ("000.400.010", SuccessManualReview),
            ("000.400.020", SuccessManualReview),
            ("000.400.040", SuccessManualReview),
            ("000.400.100", SuccessManualReview),
            ("000.200.000", Pending),
            ("000.200.100", Pending),
            ("800.400.500", PendingExtended),
            ("100.400.500", PendingExtended),
            ("000.400.101", RejectedRisk3ds),
            ("000.400.108", RejectedRisk3ds),
            ("000.400.200", RejectedRisk3ds),
            ("800.100.100", RejectedByExternalBank),
            ("800.100.151", RejectedByExternalBank),
            ("800.100.155", RejectedByExternalBank),
            ("800.700.100", RejectedByExternalBank),
            ("800.800.102", RejectedByExternalBank),
            ("800.800.302", RejectedByExternalBank),
            ("900.100.100", CommunicationError),
            ("900.100.300", CommunicationError),
            ("900.400.100", CommunicationError),
            ("000.400.030", CommunicationError),
            ("800.500.100", SystemError),
            ("800.600.100", SystemError),
            ("999.999.888", SystemError),
            ("999.999.999", SystemError),
            ("600.100.100", SystemError),
            ("800.800.800", SystemError),
            ("800.800.400", SystemError),
            ("100.395.101", AsyncWorkflowError),
            ("100.396.101", AsyncWorkflowError),
            ("100.397.101", AsyncWorkflowError),
            ("300.100.100", ExternalRisk),
            ("100.400.000", ExternalRisk),
            ("100.400.311", ExternalRisk),
            ("100.380.100", ExternalRisk),
            ("100.370.100", ExternalRisk),
            ("100.370.110", ExternalRisk),
            ("100.370.111", ExternalRisk),
            // Shadowed by ExternalRisk's `100\.38` in OPP's order:
            ("100.380.401", ExternalRisk),
            ("100.380.201", ExternalRisk),
            ("100.380.305", ExternalRisk),
            ("100.380.101", ExternalRisk),
            ("800.400.100", AddressValidation),
            ("800.400.110", AddressValidation),
            ("800.400.200", ThreeDSecure),
            ("100.390.112", ThreeDSecure),
            ("100.100.701", Blacklist),
            ("800.200.159", Blacklist),
            ("800.300.101", Blacklist),
            ("800.110.100", RiskValidation),
            ("800.120.100", RiskValidation),
            ("800.160.100", RiskValidation),
            ("600.200.100", ConfigurationValidation),
            ("600.300.101", ConfigurationValidation),
            ("500.100.201", ConfigurationValidation),
            ("500.200.101", ConfigurationValidation),
            ("800.121.100", ConfigurationValidation),
            ("100.150.100", RegistrationValidation),
            ("100.350.100", RegistrationValidation),
            ("100.250.100", JobValidation),
            ("100.360.201", JobValidation),
            ("700.100.100", ReferenceValidation),
            ("700.100.200", ReferenceValidation),
            ("700.150.000", ReferenceValidation),
            ("700.300.500", ReferenceValidation),
            ("700.400.100", ReferenceValidation),
            ("700.400.520", ReferenceValidation),
            ("700.500.003", ReferenceValidation),
            ("200.100.101", FormatValidation),
            ("200.300.404", FormatValidation),
            ("100.500.101", FormatValidation),
            ("100.300.101", FormatValidation),
            ("100.370.200", FormatValidation),
            ("800.900.300", FormatValidation),
            ("100.600.500", FormatValidation),
            ("100.900.500", FormatValidation),
            ("100.800.100", AddressValidationFormat),
            ("100.700.100", ContactValidation),
            ("100.900.100", ContactValidation),
            ("100.100.100", AccountValidation),
            ("100.100.303", AccountValidation),
            ("100.200.100", AccountValidation),
            ("100.210.101", AccountValidation),
            ("100.550.300", AmountValidation),
            ("100.550.401", AmountValidation),
            ("000.100.201", Chargeback),
            ("000.100.299", Chargeback),
            ("123.456.789", Unknown),
            ("700.200.100", Unknown),
            ("700.600.000", Unknown),
            ("000.500.000", Unknown),
            ("100.000.000", Unknown),
        ];
        for (code, expected) in cases {
            assert_eq!(family(code), expected, "{code}");
        }
    }

    #[test]
    fn risk_management_pattern_matches_but_is_shadowed() {
        let risk_management = FAMILY_PATTERNS
            .iter()
            .find(|(f, _)| *f == ResultFamily::RiskManagement)
            .and_then(|(_, p)| Regex::new(p).ok());
        assert!(risk_management.is_some_and(|r| r.is_match("100.380.101")));
        assert_eq!(family("100.380.101"), ResultFamily::ExternalRisk);
    }

    #[test]
    fn classify_rejects_malformed_strings() {
        assert_eq!(ResultFamily::classify("000.000.00x"), ResultFamily::Unknown);
        assert_eq!(
            ResultFamily::classify("000.000.000 "),
            ResultFamily::Unknown
        );
        assert_eq!(ResultFamily::classify(""), ResultFamily::Unknown);
        assert_eq!(ResultFamily::classify("000.000.000"), ResultFamily::Success);
    }

    #[test]
    fn constants_have_the_families_opp_patterns_give_them() {
        use codes::*;
        use ResultFamily::*;
        let expected = [
            (TRANSACTION_SUCCEEDED, Success),
            (SUCCESSFUL_REQUEST, Success),
            (TEST_MODE_SUCCESS, Success),
            (TRANSACTION_PENDING, Pending),
            (SUCCEEDED_EXTERNAL_UPDATE, Success),
            (DECLINED_UNKNOWN_REASON, RejectedByExternalBank),
            (REFERENCE_NOT_EXISTING, ReferenceValidation),
            (NON_MATCHING_REFERENCE_AMOUNT, ReferenceValidation),
            (INVALID_AMOUNT_TOO_LARGE, ReferenceValidation),
            (REFERENCE_CURRENCY_MISMATCH, ReferenceValidation),
            (REFERENCE_INAPPROPRIATE_TYPE, ReferenceValidation),
            (REFERENCE_REJECTED, ReferenceValidation),
            (REFERENCE_ALREADY_PROCESSED, ReferenceValidation),
            (REFERENCE_CHARGEBACKED, ReferenceValidation),
            (CANNOT_CAPTURE, ReferenceValidation),
            (CANNOT_REFUND, ReferenceValidation),
            (CANNOT_REVERSE, ReferenceValidation),
            (CANNOT_CHARGEBACK, ReferenceValidation),
            (CHARGEBACK_ALREADY_REVERSED, ReferenceValidation),
            (NO_CHARGEBACK_TO_REVERSE, ReferenceValidation),
            (CAPTURE_NEEDS_PA, ReferenceValidation),
            (REFUND_NEEDS_DEBIT, ReferenceValidation),
            (CHARGEBACK_NEEDS_DEBIT, ReferenceValidation),
            (CANNOT_FIND_TRANSACTION, ReferenceValidation),
            (NO_AMOUNT, AmountValidation),
            (INVALID_PARAMETER, FormatValidation),
            (INVALID_AUTHENTICATION, FormatValidation),
            (INSUFFICIENT_RIGHTS, FormatValidation),
            (DECLINED_INVALID_CARD, RejectedByExternalBank),
            (DECLINED_INSUFFICIENT_FUNDS, RejectedByExternalBank),
            (INVALID_CARD_NUMBER, AccountValidation),
            (SYSTEM_ERROR, SystemError),
            (COMMUNICATION_TIMEOUT, CommunicationError),
        ];
        assert_eq!(expected.len(), ALL.len());
        for ((code, description), family_expected) in expected {
            let parsed = ResultCode::parse(code).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(parsed.family(), family_expected, "{code}");
            assert_eq!(parsed.description(), Some(description));
            assert!(
                ALL.contains(&(code, description)),
                "{code} missing from ALL"
            );
        }
        // Every 700.* constant is a validation rejection.
        for (code, _) in ALL.iter().filter(|(c, _)| c.starts_with("700.")) {
            assert_eq!(
                ResultFamily::classify(code).category(),
                ResultCategory::RejectedByValidation
            );
        }
        let sorted = ALL.windows(2).all(|w| w[0].0 < w[1].0);
        assert!(sorted, "codes::ALL is not sorted by code");
        assert_eq!(codes::description("123.456.789"), None);
    }

    #[test]
    fn categories() {
        use ResultCategory as C;
        use ResultFamily as F;
        let expected = [
            (F::Success, C::Success),
            (F::SuccessManualReview, C::SuccessManualReview),
            (F::Pending, C::Pending),
            (F::PendingExtended, C::Pending),
            (F::RejectedRisk3ds, C::RejectedByBank),
            (F::RejectedByExternalBank, C::RejectedByBank),
            (F::CommunicationError, C::CommunicationError),
            (F::SystemError, C::SystemError),
            (F::AsyncWorkflowError, C::SystemError),
            (F::ExternalRisk, C::RejectedByBank),
            (F::AddressValidation, C::RejectedByBank),
            (F::ThreeDSecure, C::RejectedByBank),
            (F::Blacklist, C::RejectedByBank),
            (F::RiskValidation, C::RejectedByBank),
            (F::ConfigurationValidation, C::RejectedByValidation),
            (F::RegistrationValidation, C::RejectedByValidation),
            (F::JobValidation, C::RejectedByValidation),
            (F::ReferenceValidation, C::RejectedByValidation),
            (F::FormatValidation, C::RejectedByValidation),
            (F::AddressValidationFormat, C::RejectedByValidation),
            (F::ContactValidation, C::RejectedByValidation),
            (F::AccountValidation, C::RejectedByValidation),
            (F::AmountValidation, C::RejectedByValidation),
            (F::RiskManagement, C::RejectedByBank),
            (F::Chargeback, C::Unknown),
            (F::Unknown, C::Unknown),
        ];
        assert_eq!(expected.len(), F::ALL.len());
        for (family, category) in expected {
            assert_eq!(family.category(), category, "{family:?}");
            assert!(!family.description().is_empty());
        }
        for category in C::ALL {
            let guidance = category.guidance();
            assert!(guidance.ends_with(|c: char| c.is_ascii_alphabetic()));
            assert_eq!(
                guidance.matches(". ").count(),
                0,
                "one sentence: {guidance}"
            );
        }
    }

    #[test]
    fn is_success() {
        let ok = |c: &str| ResultCode::parse(c).map(|c| c.is_success());
        assert_eq!(ok("000.100.110"), Ok(true));
        assert_eq!(ok("000.400.000"), Ok(true));
        assert_eq!(ok("000.200.000"), Ok(false));
        assert_eq!(ok("700.400.100"), Ok(false));
        assert_eq!(ok("000.100.201"), Ok(false));
    }

    #[test]
    fn serde_shapes() {
        let code = ResultCode::parse("000.100.110").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            serde_json::to_string(&code).ok().as_deref(),
            Some("\"000.100.110\"")
        );
        let back: Result<ResultCode, _> = serde_json::from_str("\"000.100.110\"");
        assert_eq!(back.ok(), Some(code));
        let bad: Result<ResultCode, _> = serde_json::from_str("\"000.100\"");
        assert!(bad.is_err());
        assert_eq!(
            json(&ResultFamily::RejectedByExternalBank),
            "\"rejected_by_external_bank\""
        );
        assert_eq!(json(&ResultFamily::ThreeDSecure), "\"three_d_secure\"");
        assert_eq!(json(&ResultFamily::RejectedRisk3ds), "\"rejected_risk3ds\"");
        for category in ResultCategory::ALL {
            assert_eq!(json(&category), format!("\"{}\"", category.as_str()));
            assert_eq!(category.to_string(), category.as_str());
            let back: Result<ResultCategory, _> = serde_json::from_str(&json(&category));
            assert_eq!(back.ok(), Some(category));
        }
        for family in ResultFamily::ALL {
            let back: Result<ResultFamily, _> = serde_json::from_str(&json(&family));
            assert_eq!(back.ok(), Some(family));
        }
    }

    fn json<T: Serialize>(value: &T) -> String {
        serde_json::to_string(value).unwrap_or_default()
    }

    proptest! {
        #[test]
        fn classify_never_panics(input in any::<String>()) {
            let _ = ResultFamily::classify(&input);
            let _ = ResultCode::parse(&input);
        }

        #[test]
        fn every_well_formed_code_parses_and_classifies(a in 0_u32..1000, b in 0_u32..1000, c in 0_u32..1000) {
            let text = format!("{a:03}.{b:03}.{c:03}");
            let code = ResultCode::parse(&text);
            prop_assert!(code.is_ok());
            let code = code.unwrap_or_else(|_| ResultCode(String::new()));
            // The family is the first matching pattern, or Unknown when none matches.
            let first = FAMILY_PATTERNS
                .iter()
                .find(|(_, p)| Regex::new(p).is_ok_and(|r| r.is_match(&text)))
                .map_or(ResultFamily::Unknown, |(f, _)| *f);
            prop_assert_eq!(code.family(), first);
        }
    }
}
