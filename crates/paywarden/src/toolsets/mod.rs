//! The toolsets: each provides its operations and reads over the [`crate::pipeline`]; none
//! runs a flow of its own.
//!
//! - [`opp`]: OPP's back-office operations and reporting queries.
//! - [`ops`]: the ops tools over Stripe and the orders database.
//! - [`ifthenpay`]: the ifthenpay seed's payment requests and lists.

pub mod ifthenpay;
pub mod opp;
pub mod ops;
