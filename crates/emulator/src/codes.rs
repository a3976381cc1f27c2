//! The OPP result codes the emulator answers with. Every pair comes from
//! [`paywarden_domain::result_code::codes`] except [`INVALID_CARD_NUMBER`], which the domain
//! module does not define (yet).

pub(crate) use paywarden_domain::result_code::codes::{
    CANNOT_FIND_TRANSACTION, DECLINED_INSUFFICIENT_FUNDS, DECLINED_INVALID_CARD,
    INSUFFICIENT_RIGHTS, INVALID_AUTHENTICATION, INVALID_PARAMETER, REFERENCE_NOT_EXISTING,
    SUCCESSFUL_REQUEST, SYSTEM_ERROR, TEST_MODE_SUCCESS,
};

/// `100.100.101`: the card number fails the Luhn check (OPP family "format validation",
/// `100.100.*`). OPP's own description. Not (yet) in `paywarden_domain::result_code::codes`.
pub(crate) const INVALID_CARD_NUMBER: (&str, &str) = (
    "100.100.101",
    "invalid creditcard, bank account number or bank name",
);
