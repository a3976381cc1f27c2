//! # paywarden
//!
//! A payments MCP (Model Context Protocol) server. AI agents connect to it to capture, reverse,
//! refund, rebill, charge back and search payments at real providers, and the server, not the
//! model, guarantees that no money moves wrongly.
//!
//! ## Map of the crate
//!
//! - [`catalog`]: every tool once, with what it does to money (read-only mode, policy facts).
//! - [`config`]: defaults, TOML file, `PAYWARDEN_*` environment, flags.
//! - [`app`]: assembles a running server; the caller binds the listener.
//! - [`ifthenpay_http`]: the ifthenpay seed's `/mcp/payments/` JSON-RPC endpoint and the
//!   ifthenpay payment callback.
//! - [`http_sse`]: the 2024-11-05 HTTP+SSE transport (`/sse`, `/agentic/v1/sse`) for Cursor
//!   and older SDK clients, on the same handler and middleware as the Streamable HTTP endpoints.
//! - [`http`]: the HTTP surface (`/mcp`, `/agentic/v1/mcp`, `/healthz`), body bounds;
//!   Host/Origin validation comes from rmcp's Streamable HTTP service.
//! - [`auth`]: every HTTP caller authenticated (configured entities, or OPP asked and the
//!   verdict cached) before anything is served or stored.
//! - [`sessions`]: Streamable HTTP sessions capped per entity and in total.
//! - [`mask`]: the one masking mechanism for error texts and audit rows (secrets, personal
//!   data, values in parse errors).
//! - [`mcp`]: rmcp adapters, one module per toolset; thin: parameters in, outcome out.
//! - [`pipeline`]: the one sequence every tool call goes through (gate, limits, idempotency,
//!   lease, pre-check, connector call, settlement, audit), whichever toolset asked for it.
//! - [`toolsets`]: each toolset's operations and reads (`opp`, `ops`, `ifthenpay`), split by
//!   job; none runs a flow of its own.
//! - [`service`]: the former paths of the two above, re-exported.
//! - [`connectors`]: real HTTP clients of each provider; provider wire types stay inside.
//! - [`audit_anchor`]: signed checkpoints anchoring the audit chain outside the database, and
//!   the keyed ids of provider keys.
//! - [`receipts`]: signed receipts of executed money movements, and their verification.
//! - [`store`]: paywarden's own records (audit log, idempotency keys) in SQLite via sqlx.
//! - [`model`]: the payment model connectors return and tools answer with.
//! - [`seed`], [`seed_ops`]: demo data, created through the connectors against the emulator.
//!
//! The payments domain (money, currencies, payment types, result codes, the state machine) is
//! the I/O-free crate [`paywarden_domain`]; the offline OPP stand-in is
//! [`paywarden_emulator`].

#![warn(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

// jemalloc, built unprefixed, defines C's malloc/free: linked into every binary that links this
// library (the server, its tests, the benchmark), so all of them run SQLite and the other C code
// on the heap the server runs them on (docs/performance.md, "The allocator: jemalloc"). The
// server also makes it the Rust allocator (src/main.rs).
extern crate tikv_jemalloc_sys as _;

pub mod app;
pub mod approvals_http;
pub mod audit_anchor;
pub mod auth;
pub mod canonical;
pub mod catalog;
pub mod cli_approvals;
pub mod cli_audit;
pub mod cli_faults;
pub mod cli_ifthenpay;
pub mod cli_receipts;
pub mod cli_reconcile;
pub mod config;
pub mod connectors;
pub mod console;
pub mod events;
pub mod http;
pub mod http_sse;
pub mod ifthenpay_http;
pub mod mask;
pub mod mcp;
pub mod model;
pub mod pipeline;
pub mod policy;
pub mod receipts;
pub mod seed;
pub mod seed_ops;
pub mod service;
pub mod sessions;
pub mod store;
pub mod toolsets;
