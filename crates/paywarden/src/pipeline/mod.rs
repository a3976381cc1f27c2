//! The one sequence every tool call runs, whichever toolset asked for it. A toolset
//! ([`crate::toolsets`]) admits a call (step 1) and provides its reads and its operations; it
//! does not run a flow of its own. Each money-moving call is an [`operation::Operation`]: the
//! toolset supplies its key derivation, the reconciliation of an unknown outcome (a
//! [`reconcile::Reconciler`]), the check on fresh provider state, the preview and policy facts,
//! the lease and the check again under it, the intent, the connector call and what a connector
//! error settles; [`Pipeline::run`] runs steps 3 to 13 around them, in this order, for every
//! toolset (`tests/layering.rs` fails if a toolset calls a step itself). The steps, top to
//! bottom:
//!
//! ```text
//!  1. admit         caller authenticated (crate::auth), arguments parsed into a typed request
//!                   (malformed: invalid params, audited), read-only mode (crate::catalog); a
//!                   money-moving call is then an Operation (operation.rs) handed to
//!                   Pipeline::run, which runs steps 3 to 13 for every toolset
//!  2. read?         Pipeline::read: the policy for reads too, run, audit. A read ends here.
//!  3. unknown?      late arrivals of this entity's watched keys noted; an earlier call of this
//!                   key whose answer never came is looked up at the provider first
//!                   (reconcile.rs, Pipeline::reconcile with Operation::reconciler), when
//!                   step 4's claim finds the key taken by it; then the key is claimed again
//!  4. idempotency   Pipeline::write (idempotency.rs): the key (Operation::key: the caller's, or
//!                   derived from the confirmation token or approval: gate::derived_key) is
//!                   claimed; a retry replays the first outcome, other arguments under the key
//!                   are refused
//!  5. key lease     the key is held under a lease (lease.rs), renewed while the call runs; a
//!                   crash leaves it to expire into an unknown outcome, never "nothing sent"
//!  6. pre-check     Operation::check reads provider state and refuses what the provider would
//!                   refuse; Operation::assess works out what would move (the preview) and the
//!                   policy facts
//!  7. gate          Pipeline::gate (gate.rs): the policy verdict (fails closed), then deny, a
//!                   claimed approval (staleness checked), confirm (preview + single-use token,
//!                   or the token spent) or human (an approval only an operator decides)
//!  8. limits        in the same step as the verdict, under the entity's limit lock: the
//!                   cumulative-limit reservation; it and the approval are recorded on the key
//!  9. fresh state   the lease on the referenced transaction or order (Operation::lease,
//!                   lease.rs) is taken and Operation::recheck checks again on fresh provider
//!                   state, on exactly what was agreed; a call that carries a confirmation
//!                   token or an approval id, of an operation whose arguments name its lease
//!                   (Operation::lease_before_check), takes the lease before step 6 instead,
//!                   and its one check, made under the lease, is this one
//! 10. execute       Operation::intent recorded on the key, then Operation::send, the connector
//!                   call; a connector error becomes an outcome that says whether anything was
//!                   sent (Operation::failure: final, nothing sent, or unknown)
//! 11. record        the movement recorded (by Operation::send); Pipeline::attach_receipt
//!                   (receipt.rs) drafts its signed receipt
//! 12. settle        Pipeline::finish_gated: the approval executed (or given back when nothing
//!                   was sent), the reservation released unless the outcome is unknown
//! 13. audit, key    (idempotency.rs, audit.rs) a final outcome's audit row is written (the
//!                   receipt sealed with it), then the key completes; an unknown outcome blocks
//!                   the key; nothing sent releases it
//! ```
//!
//! Why this order:
//! - Idempotency and the key lease (4, 5) come before the gate so that a retry of a call that
//!   executed replays its outcome instead of previewing again or asking for a second approval,
//!   and so that concurrent calls with one key run the check, the gate and the execution once.
//! - The pre-check (6) comes before the gate so that the policy judges, and the person confirms
//!   or approves, what would move on the provider's current state (the remainder, the card),
//!   not the model's claim; the gate's staleness check compares an approval with it. The checks
//!   run again under the transaction's lease (9) because a confirmation or an approval can come
//!   minutes later, and concurrent calls on one payment must not both pass.
//! - Limits (8) are evaluated and reserved in one step with the verdict, so concurrent calls
//!   cannot race past a cumulative rule; a call that does not execute releases its reservation.
//! - The intent is recorded before the connector call (10), so that after a crash or a timeout
//!   reconciliation (3) knows what may have been sent; the approval and the reservation settle
//!   (12) before the key, and the audit row (13) is written before a final outcome is stored,
//!   so a replay never returns an outcome without its audit row.
//!
//! Creations (ifthenpay's references and requests, the ops toolset's payment links) are
//! operations whose check and check again read nothing (there is no provider state before a
//! creation; paywarden's own records refuse a reused ifthenpay `order_id`), with no lease and
//! no receipt; their unknown outcomes are not reconciled but wait for an operator
//! (`reconcile.rs`).
//!
//! Files: [`operation`] (the trait and `Pipeline::run`), [`outcome`](ToolOutcome) (typed
//! outcomes), `idempotency.rs`, `lease.rs`, [`gate`], `receipt.rs`, `audit.rs`, [`reconcile`],
//! [`safety`] (tokens, previews, bindings).

mod approvals;
mod audit;
pub mod gate;
mod gates;
mod idempotency;
mod lease;
mod limits;
pub mod operation;
mod outcome;
mod receipt;
pub mod reconcile;
pub mod safety;

pub use outcome::*;

use std::time::Instant;

use secrecy::SecretString;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::store::{AuditEntry, Begin, IdempotencyError, Store};

/// The pipeline's shared parts.
#[derive(Debug, Clone)]
pub struct Pipeline {
    store: Store,
    sandbox: bool,
    safety: std::sync::Arc<safety::Safety>,
    banner: std::sync::Arc<str>,
    receipts: Option<crate::receipts::ReceiptSigner>,
    provider: std::sync::Arc<str>,
    settle_window: std::time::Duration,
    /// In-process gates of cumulative-limit decisions (PostgreSQL), by entity and currency,
    /// shared by every toolset's pipeline.
    limit_gates: std::sync::Arc<gates::Gates>,
    /// In-process gates of the leases on provider objects, by entity and object, shared by
    /// every toolset's pipeline ([`Pipeline::under_transaction_lease`]).
    lease_gates: std::sync::Arc<gates::Gates>,
}

/// The first line of every result's text when the offline emulator answered.
pub const SANDBOX_BANNER: &str =
    "[SANDBOX: paywarden's offline OPP emulator answered; no real money moved]";

/// Removes secret values from tool arguments before they are stored or echoed (by name, at
/// any depth, whatever their JSON type): [`crate::mask::secrets`]. The audit log masks personal
/// data as well ([`crate::mask::arguments`], applied to every row by the store).
pub fn redact(value: &serde_json::Value) -> serde_json::Value {
    crate::mask::secrets(value)
}

/// SHA-256 (hex) of canonical JSON (object keys sorted), used to bind an idempotency key to
/// one request.
pub fn request_hash(tool: &str, arguments: &serde_json::Value) -> String {
    let mut hasher = Sha256::new();
    hasher.update(tool.as_bytes());
    hasher.update(b"\n");
    hasher.update(crate::canonical::canonical_json(arguments).as_bytes());
    hex::encode(hasher.finalize())
}

impl Pipeline {
    /// A pipeline over `store` applying `safety`; `sandbox` marks every result as coming from
    /// the emulator.
    pub fn new(store: Store, sandbox: bool, safety: safety::Safety) -> Self {
        Self {
            store,
            sandbox,
            safety: std::sync::Arc::new(safety),
            banner: SANDBOX_BANNER.into(),
            receipts: None,
            provider: "OPP".into(),
            settle_window: crate::config::Config::settle_window(10_000, None),
            limit_gates: std::sync::Arc::default(),
            lease_gates: std::sync::Arc::default(),
        }
    }

    /// The same pipeline with `window` as its provider's settle window: how long after a
    /// request could last have been sent the provider's silence about it is final.
    pub fn with_settle_window(mut self, window: std::time::Duration) -> Self {
        self.settle_window = window;
        self
    }

    /// The provider's settle window (see [`Pipeline::with_settle_window`]).
    pub fn settle_window(&self) -> std::time::Duration {
        self.settle_window
    }

    /// The provider's name, e.g. `OPP` or `Stripe`.
    pub fn provider(&self) -> &str {
        &self.provider
    }

    /// How long a call holds its idempotency key between renewals (`safety.key_lease_secs`).
    pub fn key_lease(&self) -> chrono::Duration {
        chrono::Duration::seconds(
            i64::try_from(self.safety.config.key_lease_secs.max(1)).unwrap_or(60),
        )
    }

    /// A store failure after the request may have reached the provider.
    pub fn unrecorded(&self, source: crate::store::StoreError) -> ServiceError {
        ServiceError::Unrecorded {
            provider: self.provider.to_string(),
            source,
        }
    }

    /// The same pipeline, signing a receipt of every executed money movement with `signer`
    /// ([`crate::receipts`]). Without one, no receipts are issued.
    pub fn with_receipts(mut self, signer: crate::receipts::ReceiptSigner) -> Self {
        self.receipts = Some(signer);
        self
    }

    /// The same pipeline (store, safety) for a toolset whose provider is `provider` (e.g.
    /// "Stripe"): `sandbox` says whether that provider is the offline emulator, and the banner
    /// names it.
    pub fn for_provider(&self, provider: &str, sandbox: bool) -> Self {
        Self {
            store: self.store.clone(),
            sandbox,
            safety: self.safety.clone(),
            banner: format!(
                "[SANDBOX: paywarden's offline {provider} emulator answered; no real money moved]"
            )
            .into(),
            receipts: self.receipts.clone(),
            provider: provider.into(),
            settle_window: self.settle_window,
            limit_gates: self.limit_gates.clone(),
            lease_gates: self.lease_gates.clone(),
        }
    }

    /// The safety settings and policy.
    pub fn safety(&self) -> &safety::Safety {
        &self.safety
    }

    /// Whether results come from the offline emulator.
    pub fn sandbox(&self) -> bool {
        self.sandbox
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Runs a read-only call: `run` produces the outcome, which is audited.
    ///
    /// # Errors
    /// [`ServiceError`] when the arguments are malformed (audited too) or the store fails.
    pub async fn read<F, Fut>(
        &self,
        caller: &Caller,
        toolset: &str,
        tool: &str,
        arguments: &serde_json::Value,
        run: F,
    ) -> Result<ToolOutcome, ServiceError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<ToolOutcome, ServiceError>>,
    {
        let started = Instant::now();
        let result = run().await;
        self.audit(caller, toolset, tool, arguments, &result, started, false)
            .await?;
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_results_text_is_its_banner_text_and_json_as_formatting_them_gives() {
        let structured = serde_json::json!({
            "days": [{"currency": "EUR", "net": "1.50", "note": "quote \" and \u{e9}"}],
            "sandbox": true,
            "total": 150
        });
        let text = "Revenue 2026-01-01 to 2026-12-31";
        assert_eq!(
            audit::text_with_json(Some(SANDBOX_BANNER), text, &structured),
            format!("{SANDBOX_BANNER}\n{text}\n{structured}")
        );
        assert_eq!(
            audit::text_with_json(None, text, &structured),
            format!("{text}\n{structured}")
        );
    }

    #[test]
    fn redaction_removes_secrets_at_any_depth() {
        let v = serde_json::json!({
            "referenceId": "abc", "token": "t", "X-Token": "x",
            "card": {"number": "4200000000000000", "cvv": "123", "holder": "J"},
            "list": [{"apiKey": "k"}]
        });
        let r = redact(&v);
        let s = r.to_string();
        for secret in ["\"t\"", "\"x\"", "4200000000000000", "123", "\"k\""] {
            assert!(!s.contains(secret), "{secret} leaked in {s}");
        }
        assert_eq!(r["referenceId"], "abc");
        assert_eq!(r["card"]["holder"], "J");
    }

    #[test]
    fn redaction_removes_ifthenpay_keys() {
        let v = serde_json::json!({
            "mb_key": "K1", "mbway_key": "K2", "payshop_key": "K3", "ccard_key": "K4",
            "gateway_key": "K5", "cofidis_key": "K6", "pix_key": "K7", "bo_key": "K8",
            "sub_entity": "K9", "anti_phishing_key": "K10", "accounts": "CCARD|K11",
            "customer_cpf": "74026594025", "order_id": "1001", "amount": 25.0
        });
        let s = redact(&v).to_string();
        for secret in [
            "K1",
            "K2",
            "K3",
            "K4",
            "K5",
            "K6",
            "K7",
            "K8",
            "K9",
            "K10",
            "K11",
            "74026594025",
        ] {
            assert!(!s.contains(secret), "{secret} leaked in {s}");
        }
        assert!(s.contains("1001"), "{s}");
    }

    #[test]
    fn request_hash_depends_on_arguments_and_tool() {
        let a = serde_json::json!({"amount": "1.00", "referenceId": "x"});
        let b = serde_json::json!({"amount": "2.00", "referenceId": "x"});
        assert_ne!(request_hash("t", &a), request_hash("t", &b));
        assert_ne!(request_hash("t", &a), request_hash("u", &a));
        assert_eq!(request_hash("t", &a), request_hash("t", &a.clone()));
    }
}
