//! The former home of the pipeline and the toolsets, kept as re-exports so that
//! `crate::service::...` paths stay valid: the sequence is [`crate::pipeline`], the toolsets
//! are [`crate::toolsets`].

pub use crate::pipeline::*;
pub use crate::toolsets::{ifthenpay, opp, ops};
