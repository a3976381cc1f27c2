//! The OPP result codes the emulator answers with. Every pair comes from
//! [`paywarden_domain::result_code::codes`].

pub(crate) use paywarden_domain::result_code::codes::{
    CANNOT_FIND_TRANSACTION, DECLINED_INSUFFICIENT_FUNDS, DECLINED_INVALID_CARD,
    INSUFFICIENT_RIGHTS, INVALID_AUTHENTICATION, INVALID_CARD_NUMBER, INVALID_PARAMETER,
    REFERENCE_NOT_EXISTING, SUCCESSFUL_REQUEST, SYSTEM_ERROR, TEST_MODE_SUCCESS,
};
