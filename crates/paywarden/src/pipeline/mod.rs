//! The one pipeline every tool call goes through, whichever toolset asked for it:
//!
//! ```text
//! authenticate (caller) → validate (typed request) → unknown outcome of the key? ([`reconcile`])
//!   → idempotency (key leased) → provider pre-check → gate → intent recorded → connector call
//!   → outcome → audit → key settled
//! ```
//!
//! A toolset module (in [`crate::mcp`]) only translates its tool's parameters into a typed
//! request and the [`ToolOutcome`] back into its seed's output shape.

pub mod gate;
pub mod reconcile;
pub mod safety;

use std::time::Instant;

use secrecy::SecretString;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::store::{AuditEntry, Begin, IdempotencyError, Store};

/// Who is calling: the entity (tenant) and the credentials it presented.
#[derive(Clone)]
pub struct Caller {
    /// The entity id (OPP `entityId`).
    pub entity_id: String,
    /// The caller's token, passed on to the provider; never logged.
    pub token: SecretString,
    /// The MCP client's declared name, when known.
    pub client_name: Option<String>,
}

impl std::fmt::Debug for Caller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Caller")
            .field("entity_id", &self.entity_id)
            .field("token", &"[redacted]")
            .field("client_name", &self.client_name)
            .finish()
    }
}

/// What a tool call produced, ready for any toolset to render.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolOutcome {
    /// Structured result (the tool's output schema) for successes; for tool errors a JSON
    /// object describing the error.
    pub structured: serde_json::Value,
    /// Whether this is a tool error (`isError: true`).
    pub is_error: bool,
    /// Text for `content[0]`: what happened, and for errors what to do.
    pub text: String,
    /// Facts for the audit log.
    pub audit: AuditFacts,
}

/// The audit-relevant facts of an outcome.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct AuditFacts {
    /// `ok`, `rejected`, `error`.
    pub outcome: String,
    /// Provider result code.
    pub result_code: Option<String>,
    /// Provider request id.
    pub provider_request_id: Option<String>,
    /// Transaction created or read.
    pub transaction_id: Option<String>,
    /// For an executed money movement: the receipt to sign once its audit row exists
    /// ([`Pipeline::write`]; set by [`Pipeline::attach_receipt`]).
    #[serde(skip)]
    pub receipt: Option<Box<crate::receipts::ReceiptDraft>>,
}

/// Why a call could not run at all (as opposed to a [`ToolOutcome`] with `is_error`).
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// Arguments are malformed: a JSON-RPC invalid-params error for the client.
    #[error("{0}")]
    InvalidArguments(String),
    /// paywarden's own storage failed before anything was sent to the provider.
    #[error("paywarden's database failed before anything was sent to the provider; nothing was sent ({0})")]
    Store(#[from] crate::store::StoreError),
    /// paywarden's own storage failed after the request may have reached the provider: the
    /// operation may have happened, and paywarden could not record what the provider did.
    #[error("paywarden's database failed after the request may have reached {provider}: the operation may have happened. Do not start a new operation: retry this exact call later with the same idempotency key (paywarden asks {provider} first and never sends it twice), or look it up with the toolset's lookup tool")]
    Unrecorded {
        /// The provider (`OPP`, `Stripe`).
        provider: String,
        /// What failed.
        source: crate::store::StoreError,
    },
}

impl ServiceError {
    /// Whether the request may have reached the provider.
    pub fn may_have_reached_provider(&self) -> bool {
        matches!(self, ServiceError::Unrecorded { .. })
    }
}

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

    /// Runs a money-moving call under an optional idempotency key: a new key proceeds, a retry
    /// returns the first outcome (marked as a replay) without calling `run`, the same key with
    /// other arguments is a tool error. `run` returns the outcome and whether the provider's
    /// answer is unknown (a timeout), in which case the key is kept blocked.
    ///
    /// # Errors
    /// [`ServiceError`] when the store fails.
    pub async fn write<F, Fut>(
        &self,
        caller: &Caller,
        toolset: &str,
        tool: &str,
        arguments: &serde_json::Value,
        idempotency_key: Option<&str>,
        run: F,
    ) -> Result<ToolOutcome, ServiceError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<(ToolOutcome, Settlement), ServiceError>>,
    {
        let started = Instant::now();
        let Some(key) = idempotency_key else {
            let ran = run().await;
            let sent = matches!(ran, Ok((_, Settlement::Final | Settlement::Unknown)));
            let mut result = ran.map(|(outcome, _)| outcome);
            let sealed = match &mut result {
                Ok(outcome) => {
                    self.seal_receipt(caller, toolset, tool, arguments, outcome, started)
                        .await
                }
                Err(_) => false,
            };
            if sealed {
                return result;
            }
            if let Err(e) = self
                .audit(caller, toolset, tool, arguments, &result, started, false)
                .await
            {
                // Without a key there is no intent to tell whether anything was sent.
                return Err(match e {
                    ServiceError::Store(source) if sent => self.unrecorded(source),
                    other => other,
                });
            }
            return result;
        };
        let hash = safety::binding_hash(tool, arguments);
        let holder = uuid::Uuid::new_v4().to_string();
        let begin = self
            .store
            .begin_idempotent(
                &caller.entity_id,
                key,
                (toolset, tool),
                &hash,
                &holder,
                self.key_lease(),
            )
            .await;
        let result = match begin {
            Ok(Begin::Proceed) => {
                let ran = self
                    .with_lease(&caller.entity_id, key, &holder, run())
                    .await;
                return self
                    .settle_key(
                        caller,
                        (toolset, tool, arguments),
                        key,
                        &holder,
                        ran,
                        started,
                    )
                    .await;
            }
            Ok(Begin::Replay { response, is_error }) => {
                let mut structured = response
                    .get("structured")
                    .cloned()
                    .unwrap_or(serde_json::Value::Null);
                if let serde_json::Value::Object(map) = &mut structured {
                    map.insert("idempotentReplay".into(), serde_json::Value::Bool(true));
                }
                let text = response
                    .get("text")
                    .and_then(|t| t.as_str())
                    .unwrap_or_default();
                let mut audit: AuditFacts = AuditFacts {
                    outcome: "replay".into(),
                    ..AuditFacts::default()
                };
                if let Some(a) = response.get("audit") {
                    audit.result_code = a
                        .get("result_code")
                        .and_then(|v| v.as_str())
                        .map(String::from);
                    audit.provider_request_id = a
                        .get("provider_request_id")
                        .and_then(|v| v.as_str())
                        .map(String::from);
                    audit.transaction_id = a
                        .get("transaction_id")
                        .and_then(|v| v.as_str())
                        .map(String::from);
                }
                let text = text
                    .strip_prefix(&*self.banner)
                    .map(|t| t.trim_start_matches('\n'))
                    .unwrap_or(text);
                Ok(ToolOutcome {
                    structured,
                    is_error,
                    text: self.decorate(&format!(
                        "Idempotent replay of key {key:?}: this is the first call's outcome; no money moved again.\n{text}"
                    )),
                    audit,
                })
            }
            Err(IdempotencyError::Store(e)) => Err(ServiceError::Store(e)),
            Err(e) => Ok(self.error_outcome("idempotency_key_conflict", &e.to_string(), None)),
        };
        self.audit(caller, toolset, tool, arguments, &result, started, true)
            .await?;
        result
    }

    /// Marks an executed movement for a receipt: when the gate's `claims` let it run and it
    /// settled as a success (`Final`, not an error), the outcome carries a
    /// [`crate::receipts::ReceiptDraft`] that [`Pipeline::write`] signs once the execution's
    /// audit row exists. `provider` names the provider (`opp`, `stripe`).
    pub fn attach_receipt(
        &self,
        claims: &gate::Claims,
        outcome: &mut ToolOutcome,
        settlement: Settlement,
        provider: &str,
    ) {
        let Some(basis) = &claims.receipt else {
            return;
        };
        if settlement == Settlement::Final && !outcome.is_error {
            outcome.audit.receipt = Some(Box::new(crate::receipts::ReceiptDraft {
                basis: basis.clone(),
                approval_id: claims.approval_id.clone(),
                confirmation: claims.confirmation.clone(),
                provider: provider.into(),
            }));
        }
    }

    /// When `outcome` carries a receipt draft: appends the execution's audit row, signs the
    /// receipt naming that row's `seq` and `hash`, stores it and adds it to the structured
    /// result (`receipt`) and the text. Returns whether the audit row was appended (then the
    /// caller must not append it again). A receipt that cannot be made is logged, never turned
    /// into a failure: the money has moved.
    async fn seal_receipt(
        &self,
        caller: &Caller,
        toolset: &str,
        tool: &str,
        arguments: &serde_json::Value,
        outcome: &mut ToolOutcome,
        started: Instant,
    ) -> bool {
        let Some(draft) = outcome.audit.receipt.take() else {
            return false;
        };
        let Some(signer) = &self.receipts else {
            return false;
        };
        let seq = match self
            .audit(
                caller,
                toolset,
                tool,
                arguments,
                &Ok(outcome.clone()),
                started,
                true,
            )
            .await
        {
            Ok(seq) => seq,
            Err(error) => {
                tracing::error!(%error, "could not append the audit row of an executed movement; no receipt");
                return false;
            }
        };
        match self
            .issue_receipt(
                signer, caller, toolset, tool, arguments, outcome, *draft, seq,
            )
            .await
        {
            Ok(receipt) => {
                let id = receipt.id.clone();
                match serde_json::to_value(&receipt) {
                    Ok(value) => {
                        if let serde_json::Value::Object(map) = &mut outcome.structured {
                            map.insert("receipt".into(), value);
                        }
                        // The text keeps its shape (summary lines, then the structured result
                        // as one JSON line, last), now with the receipt in that JSON too.
                        let note = format!(
                            "Signed receipt {id} (audit entry {seq}): in the result's `receipt`; check it offline with `paywarden receipt verify FILE`."
                        );
                        let summary = outcome
                            .text
                            .find("\n{")
                            .map_or(outcome.text.as_str(), |at| &outcome.text[..at]);
                        outcome.text = format!("{summary}\n{note}\n{}", outcome.structured);
                    }
                    Err(error) => tracing::error!(%error, "could not serialise a receipt"),
                }
            }
            Err(error) => {
                tracing::error!(%error, seq, "could not issue the receipt of an executed movement")
            }
        }
        true
    }

    #[allow(clippy::too_many_arguments)]
    async fn issue_receipt(
        &self,
        signer: &crate::receipts::ReceiptSigner,
        caller: &Caller,
        toolset: &str,
        tool: &str,
        arguments: &serde_json::Value,
        outcome: &ToolOutcome,
        draft: crate::receipts::ReceiptDraft,
        seq: i64,
    ) -> Result<crate::receipts::Receipt, crate::store::StoreError> {
        let hash = self.store.audit_hash(seq).await?.unwrap_or_default();
        let approval = match &draft.approval_id {
            Some(id) => self.store.approval(id).await?,
            None => None,
        };
        let receipt = draft.into_receipt(
            caller,
            toolset,
            tool,
            self.sandbox,
            crate::mask::arguments(&redact(arguments)),
            &outcome.audit,
            crate::receipts::ReceiptAudit { seq, hash },
            approval.as_ref(),
        );
        let receipt = signer.sign(receipt)?;
        self.store
            .insert_receipt(&crate::store::StoredReceipt {
                id: receipt.id.clone(),
                entity_id: receipt.entity.clone(),
                issued_at: receipt.issued_at.clone(),
                tool: receipt.tool.clone(),
                transaction_id: receipt.provider.transaction_id.clone(),
                audit_seq: seq,
                body: serde_json::to_value(&receipt)?,
            })
            .await?;
        Ok(receipt)
    }

    /// Runs a keyed call while renewing its key's lease every third of the lease, so the key
    /// stays held while the call runs and lapses soon after its process dies.
    async fn with_lease<F: std::future::Future>(
        &self,
        entity_id: &str,
        key: &str,
        holder: &str,
        call: F,
    ) -> F::Output {
        let lease = self.key_lease();
        let every = (lease / 3)
            .to_std()
            .unwrap_or(std::time::Duration::from_secs(1))
            .max(std::time::Duration::from_millis(100));
        tokio::pin!(call);
        let mut renew = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                out = &mut call => return out,
                _ = renew.tick() => {
                    match self.store.renew_idempotent_lease(entity_id, key, holder, lease).await {
                        Ok(true) => {}
                        Ok(false) => tracing::error!(key, "this call no longer holds its idempotency key (its lease ran out and it was reconciled)"),
                        Err(e) => tracing::warn!(error = %e, key, "could not renew the idempotency key's lease"),
                    }
                }
            }
        }
    }

    /// Settles a keyed call's key with what its run produced: a final outcome is audited, then
    /// stored (a process dying in between leaves the key to reconciliation, which writes the
    /// audit row only if it is missing); an unknown outcome blocks the key for the settle
    /// window; nothing sent releases it. A run that failed after the request may have reached
    /// the provider keeps the key blocked too.
    async fn settle_key(
        &self,
        caller: &Caller,
        call: (&str, &str, &serde_json::Value),
        key: &str,
        holder: &str,
        ran: Result<(ToolOutcome, Settlement), ServiceError>,
        started: Instant,
    ) -> Result<ToolOutcome, ServiceError> {
        let (toolset, tool, arguments) = call;
        let entity = caller.entity_id.as_str();
        // Only a toolset that reconciles unknown outcomes gets a settle window; another's
        // unknown outcome waits for an operator.
        let settle_after = reconcile::RECONCILED_TOOLSETS.contains(&toolset).then(|| {
            chrono::Utc::now()
                + chrono::Duration::from_std(self.settle_window)
                    .unwrap_or(chrono::Duration::minutes(1))
        });
        let (mut outcome, settlement) = match ran {
            Ok(ran) => ran,
            Err(e) => {
                let kept = if e.may_have_reached_provider() {
                    self.store
                        .mark_idempotent_unknown(entity, key, settle_after)
                        .await
                } else {
                    self.store.abandon_idempotent(entity, key, holder).await
                };
                if let Err(store) = kept {
                    tracing::error!(error = %store, key, "could not settle the idempotency key after a failed call; its lease will run out and it will be reconciled");
                }
                let result = Err(e);
                if let Err(audit) = self
                    .audit(caller, toolset, tool, arguments, &result, started, true)
                    .await
                {
                    tracing::error!(error = %audit, "could not audit a failed call");
                }
                return result;
            }
        };
        // An executed movement's receipt names its audit row: sealing appends that row, signs
        // and stores the receipt, before the key completes (so a replay returns the receipt).
        let sealed = settlement == Settlement::Final
            && self
                .seal_receipt(caller, toolset, tool, arguments, &mut outcome, started)
                .await;
        let result = Ok(outcome);
        let stored = match (settlement, &result) {
            (Settlement::Final, Ok(outcome)) => {
                let audited = if sealed {
                    Ok(())
                } else {
                    self.audit(caller, toolset, tool, arguments, &result, started, true)
                        .await
                        .map(|_| ())
                };
                match audited {
                    Ok(()) => self
                        .store
                        .complete_idempotent(
                            entity,
                            key,
                            holder,
                            &serde_json::json!({
                                "structured": outcome.structured,
                                "text": outcome.text,
                                "audit": outcome.audit,
                            }),
                            outcome.is_error,
                            outcome.audit.transaction_id.as_deref(),
                        )
                        .await
                        .map_err(ServiceError::from),
                    Err(e) => Err(e),
                }
            }
            (Settlement::Unknown, _) => match self
                .store
                .mark_idempotent_unknown(entity, key, settle_after)
                .await
            {
                Ok(()) => self
                    .audit(caller, toolset, tool, arguments, &result, started, true)
                    .await
                    .map(|_| ()),
                Err(e) => Err(e.into()),
            },
            _ => match self.store.abandon_idempotent(entity, key, holder).await {
                Ok(()) => self
                    .audit(caller, toolset, tool, arguments, &result, started, true)
                    .await
                    .map(|_| ()),
                Err(e) => Err(e.into()),
            },
        };
        match stored {
            Ok(()) => result,
            Err(ServiceError::Store(source)) if settlement != Settlement::NotSent => {
                // Whether the request may have left: the call records its intent before sending.
                let sent = match self.store.idempotency_key(entity, key).await {
                    Ok(Some(record)) => record.intent.is_some(),
                    Ok(None) => false,
                    Err(_) => true,
                };
                Err(if sent {
                    self.unrecorded(source)
                } else {
                    ServiceError::Store(source)
                })
            }
            Err(e) => Err(e),
        }
    }

    /// A tool-error outcome with a machine-readable `kind` and a message.
    pub fn error_outcome(
        &self,
        kind: &str,
        message: &str,
        result_code: Option<&str>,
    ) -> ToolOutcome {
        ToolOutcome {
            structured: serde_json::json!({
                "error": { "kind": kind, "message": message, "resultCode": result_code },
                "sandbox": self.sandbox,
            }),
            is_error: true,
            text: self.decorate(message),
            audit: AuditFacts {
                outcome: "error".into(),
                result_code: result_code.map(String::from),
                ..AuditFacts::default()
            },
        }
    }

    /// Prefixes text with the sandbox banner when the provider is the emulator.
    pub fn decorate(&self, text: &str) -> String {
        if self.sandbox {
            format!("{}\n{text}", self.banner)
        } else {
            text.to_string()
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn audit(
        &self,
        caller: &Caller,
        toolset: &str,
        tool: &str,
        arguments: &serde_json::Value,
        result: &Result<ToolOutcome, ServiceError>,
        started: Instant,
        _money_moving: bool,
    ) -> Result<i64, ServiceError> {
        let (facts, message) = match result {
            Ok(outcome) => (
                outcome.audit.clone(),
                outcome.is_error.then(|| first_line(&outcome.text)),
            ),
            Err(e) => (
                AuditFacts {
                    outcome: "error".into(),
                    ..AuditFacts::default()
                },
                Some(e.to_string()),
            ),
        };
        let entry = AuditEntry {
            entity_id: caller.entity_id.clone(),
            client_name: caller.client_name.clone(),
            toolset: toolset.to_string(),
            tool: tool.to_string(),
            arguments: redact(arguments),
            outcome: facts.outcome,
            result_code: facts.result_code,
            provider_request_id: facts.provider_request_id,
            transaction_id: facts.transaction_id,
            message,
            duration_ms: i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX),
            sandbox: self.sandbox,
        };
        Ok(self.store.append_audit(&entry).await?)
    }
}

fn first_line(text: &str) -> String {
    text.lines()
        .find(|l| !l.starts_with("[SANDBOX"))
        .unwrap_or_default()
        .chars()
        .take(500)
        .collect()
}

/// Whether a money-moving call's outcome is final (and may be replayed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settlement {
    /// The provider answered (success or rejection), or paywarden refused before sending:
    /// replay this outcome on retry.
    Final,
    /// Nothing was sent to the provider (it could not be reached, or paywarden refused before
    /// sending), or a creation the provider deduplicates by its own idempotency key: a retry may
    /// run.
    NotSent,
    /// The provider may or may not have acted (a timeout, a connection lost after connecting, an
    /// answer paywarden could not record): block the key until it is reconciled
    /// ([`reconcile`]).
    Unknown,
}

#[cfg(test)]
mod tests {
    use super::*;

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
