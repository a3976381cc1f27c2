//! Provider connectors: real HTTP clients of each provider's public API. Provider wire types
//! stay inside `connectors/<provider>/`; what leaves a connector is paywarden's own model
//! ([`crate::model`]).

pub mod ifthenpay;
pub mod opp;
pub mod stripe;
