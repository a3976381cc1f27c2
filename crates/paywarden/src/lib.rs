//! # paywarden
//!
//! A payments MCP (Model Context Protocol) server. AI agents connect to it to capture, reverse,
//! refund, rebill, charge back and search payments at real providers, and the server, not the
//! model, guarantees that no money moves wrongly.
//!
//! ## Map of the crate
//!
//! - [`config`]: defaults, TOML file, `PAYWARDEN_*` environment, flags.
//! - [`app`]: assembles a running server; the caller binds the listener.
//! - [`ifthenpay_http`]: the ifthenpay seed's `/mcp/payments/` JSON-RPC endpoint and the
//!   ifthenpay payment callback.
//! - [`http`]: the HTTP surface (`/mcp`, `/agentic/v1/mcp`, `/healthz`), credential checks,
//!   body bounds; Host/Origin validation comes from rmcp's Streamable HTTP service.
//! - [`mcp`]: rmcp adapters, one module per toolset; thin: parameters in, outcome out.
//! - [`service`]: the one pipeline every tool call goes through (validate, idempotency,
//!   pre-check, connector call, audit).
//! - [`connectors`]: real HTTP clients of each provider; provider wire types stay inside.
//! - [`store`]: paywarden's own records (audit log, idempotency keys) in SQLite via sqlx.
//! - [`model`]: the payment model connectors return and tools answer with.
//! - [`seed`], [`seed_ops`]: demo data, created through the connectors against the emulator.
//!
//! The payments domain (money, currencies, payment types, result codes, the state machine) is
//! the I/O-free crate [`paywarden_domain`]; the offline OPP stand-in is
//! [`paywarden_emulator`].

pub mod app;
pub mod approvals_http;
pub mod canonical;
pub mod cli_approvals;
pub mod cli_ifthenpay;
pub mod cli_reconcile;
pub mod config;
pub mod connectors;
pub mod http;
pub mod ifthenpay_http;
pub mod mcp;
pub mod model;
pub mod policy;
pub mod seed;
pub mod seed_ops;
pub mod service;
pub mod store;
