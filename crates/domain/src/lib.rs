//! paywarden's payments domain: money, ISO 4217 currencies, OPP payment types and ids, OPP
//! result-code families, and the OPP transaction state machine.
//!
//! This crate is the vocabulary the rest of paywarden speaks. The emulator
//! (`paywarden-emulator`) uses it to decide what an offline OPP would answer; the server
//! (`paywarden`) uses it to validate requests, pre-check back-office operations and explain
//! results to its callers. Both get the same answer because both call the same functions here.
//!
//! # Why there is no I/O here
//!
//! Everything in this crate is a pure function or a value type: no tokio, no database, no HTTP,
//! no MCP, no clock, no randomness. That keeps the payment rules small enough to test
//! exhaustively (unit tests for every rule, property tests over random inputs and random
//! operation sequences) and lets both the emulator and the server depend on it without pulling
//! each other's stacks in. Storage, transport and protocol live in the other crates.
//!
//! # A map of the crate
//!
//! - [`currency`]: [`Currency`], every active ISO 4217 currency with its minor-unit exponent
//!   (EUR 2, JPY 0, KWD 3, CLF 4, ...). Only exact upper-case codes are accepted.
//! - [`money`]: [`Money`], a non-negative integer number of minor units that always carries its
//!   currency, with exact parsing of OPP's decimal strings (`"10.50"`) and formatting back to
//!   them; [`MoneyError`] says what was wrong with an amount and what to send instead. Amounts are
//!   never floats.
//! - [`payment`]: [`PaymentType`] (OPP's PA, DB, CP, RV, RF, RB, CB, CR) and [`TransactionId`]
//!   (validated OPP transaction ids); [`payment::IdError`].
//! - [`result_code`]: [`ResultCode`] (`ddd.ddd.ddd`), [`ResultFamily`] (OPP's documented
//!   result-code groups, matched with OPP's own regular expressions in OPP's order),
//!   [`ResultCategory`] (what a caller should do about a result, with
//!   [`ResultCategory::guidance`]) and [`result_code::codes`], the OPP codes paywarden emits.
//! - [`ledger`]: the state machine. [`ledger::evaluate`] decides whether a capture, reversal,
//!   refund, rebill, chargeback or chargeback reversal of a transaction is allowed and for which
//!   amount, or returns a [`Rejection`] with OPP's result code and a sentence with the numbers;
//!   [`ledger::balances`] gives a transaction's [`Balances`].
//!
//! # Example
//!
//! ```
//! use paywarden_domain::{Currency, Money, Operation, PaymentType, TxRecord};
//! use paywarden_domain::ledger::evaluate;
//!
//! let amount = Money::parse("100.00", Currency::EUR)?;
//! let pa = TxRecord {
//!     id: "8ac7a4c97d0a2b6f017d0b3b1c8a1234".into(),
//!     payment_type: PaymentType::Preauthorization,
//!     amount,
//!     referenced_id: None,
//!     succeeded: true,
//! };
//! let tree = [pa.clone()];
//! let capture = evaluate(Operation::Capture, &pa, &tree, None);
//! assert_eq!(capture.map(|m| m.to_decimal_string()), Ok("100.00".to_string()));
//!
//! let too_much = Money::parse("150", Currency::EUR)?;
//! let rejection = evaluate(Operation::Capture, &pa, &tree, Some(too_much));
//! assert_eq!(rejection.map_err(|r| r.code), Err("700.400.100"));
//! # Ok::<(), paywarden_domain::MoneyError>(())
//! ```

#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod currency;
pub mod ledger;
pub mod money;
pub mod payment;
pub mod result_code;

mod serde_util;

pub use currency::Currency;
pub use ledger::{Balances, Operation, Rejection, TxRecord};
pub use money::{Money, MoneyError};
pub use payment::{IdError, PaymentType, TransactionId};
pub use result_code::{ResultCategory, ResultCode, ResultFamily};
