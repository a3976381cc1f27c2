//! Unknown outcomes: what paywarden does when it cannot know whether a provider acted.
//!
//! A keyed money-moving call records its [`Intent`] on the key *before* sending (operation,
//! referenced object, amount, currency, and paywarden's own derived reference of the key, which
//! travels with the request). When the outcome is unknown (the provider timed out, the
//! connection broke, paywarden's database failed after sending, or the call's process died and
//! its key's lease ran out), the next call under that key (or, for the ops toolset, the sweep
//! after a restart) runs [`Pipeline::reconcile`] before anything is sent:
//!
//! - the provider shows an operation matching the intent exactly, not bound to another key: that
//!   is the key's outcome. Its movement and its audit row are recorded (once), the key settles
//!   on it, the cumulative-limit reservation is released and the approval finished;
//! - the provider shows nothing and the key's settle window has not passed: the key stays
//!   blocked. A request can still be in flight, and sending again could execute twice;
//! - the provider shows nothing after the settle window: the operation never happened. The key
//!   is released (with its reservation and approval) and a retry sends it again; the key is
//!   watched for [`crate::store::LATE_WATCH`] in case the first request still arrives;
//! - the provider cannot be asked: the key stays blocked.
//!
//! A call whose process died before recording an intent sent nothing: its key is released at
//! once. [`Pipeline::check_late`] looks at the watched keys on the entity's next call: a late
//! arrival is recorded (movement, audit row `late_duplicate` or `late_arrival`) and reported
//! (`/readyz`, `paywarden reconcile`) until an operator acknowledges it.

use std::future::Future;

use chrono::Utc;
use serde::{Deserialize, Serialize};

use super::{gate, redact, AuditFacts, Caller, Pipeline, ServiceError, Settlement, ToolOutcome};
use crate::store::{AuditEntry, KeyRecord, KeyState, LateKind, StoreError};

/// The toolsets whose keyed calls record an [`Intent`] before sending and reconcile unknown
/// outcomes (a dead call of theirs without an intent sent nothing). Another toolset's unknown
/// outcome has no settle window: it waits for an operator (`paywarden reconcile`).
pub const RECONCILED_TOOLSETS: &[&str] = &["opp", "ops"];

/// Whether `record`'s call records an intent before sending (so without one, nothing was sent).
fn records_intents(record: &KeyRecord) -> bool {
    record
        .toolset
        .as_deref()
        .is_some_and(|t| RECONCILED_TOOLSETS.contains(&t))
}

/// What a keyed call sends (or is about to send), recorded on its key before sending: enough
/// to recognise the operation at the provider without the call's arguments.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Intent {
    /// Toolset (`opp`, `ops`).
    pub toolset: String,
    /// Tool.
    pub tool: String,
    /// The provider object the operation acts on: OPP's referenced transaction id, Stripe's
    /// PaymentIntent id.
    pub reference_id: String,
    /// The operation: an OPP payment type code (`RF`, `CP`, ...), `refund` at Stripe.
    pub operation: String,
    /// Amount in minor units of `currency`; `None` when the provider decides it (an OPP
    /// reversal voids the whole authorisation).
    pub amount_minor: Option<i64>,
    /// ISO 4217 code.
    pub currency: String,
    /// paywarden's own derived reference of the key, sent with the operation (OPP
    /// `customParameters[PAYWARDEN_REF]`, Stripe metadata `paywarden_key`).
    pub marker: String,
    /// The provider's settle window when it was sent, in milliseconds.
    pub settle_window_ms: u64,
    /// Toolset-specific facts (the ops toolset: the order and the customer's email).
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub extra: serde_json::Value,
}

impl Intent {
    fn window(&self) -> chrono::Duration {
        chrono::Duration::milliseconds(i64::try_from(self.settle_window_ms).unwrap_or(i64::MAX / 2))
    }
}

/// The facts reconciliation needs about one operation found at the provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// The provider's transaction (or refund) id.
    pub transaction_id: String,
    /// Whether it succeeded (moved money).
    pub succeeded: bool,
}

/// How a toolset recognises and records its operations at its provider.
pub trait Reconciler {
    /// A provider operation, as the toolset reads it.
    type Op: Send + Sync;

    /// What reconciliation needs to know about `op`.
    fn found(op: &Self::Op) -> Found;

    /// The operations at the provider that match `intent` exactly (operation, referenced
    /// object, amount, currency and marker), oldest first; `Err` with a reason when the
    /// provider cannot be asked.
    fn find(
        &self,
        caller: &Caller,
        intent: &Intent,
    ) -> impl Future<Output = Result<Vec<Self::Op>, String>> + Send;

    /// Records `op` in paywarden (its movement, once; the toolset's own records) and returns
    /// the outcome the key settles on, as the call would have answered.
    fn record(
        &self,
        caller: &Caller,
        intent: &Intent,
        op: &Self::Op,
    ) -> impl Future<Output = Result<ToolOutcome, ServiceError>> + Send;
}

impl Pipeline {
    /// Resolves key `key` of `caller` (request `binding`) when its outcome is unknown or its
    /// call died, before a call under it runs (see the module docs). A key in any other state,
    /// or bound to another request, is left alone for [`Pipeline::write`] to answer.
    ///
    /// # Errors
    /// [`ServiceError::Unrecorded`] when paywarden's database fails while recording what the
    /// provider did (nothing is sent; the key stays blocked).
    pub async fn reconcile<R: Reconciler + Sync>(
        &self,
        reconciler: &R,
        caller: &Caller,
        key: &str,
        binding: &str,
    ) -> Result<(), ServiceError> {
        self.reconcile_inner(reconciler, caller, key, binding)
            .await
            .map_err(|e| match e {
                ServiceError::Store(source) => self.unrecorded(source),
                other => other,
            })
    }

    async fn reconcile_inner<R: Reconciler + Sync>(
        &self,
        reconciler: &R,
        caller: &Caller,
        key: &str,
        binding: &str,
    ) -> Result<(), ServiceError> {
        let store = self.store();
        let Some(mut record) = store.idempotency_key(&caller.entity_id, key).await? else {
            return Ok(());
        };
        if record.request_hash != binding {
            return Ok(());
        }
        let now = Utc::now();
        match record.state {
            KeyState::Completed => return Ok(()),
            KeyState::InProgress if !record.lease_expired(now) => return Ok(()),
            KeyState::InProgress => {
                let Some(intent) = intent_of(&record) else {
                    if records_intents(&record) {
                        // The call died before it recorded what it would send: nothing was sent.
                        self.release(
                            caller,
                            &record,
                            None,
                            "its call stopped before sending anything",
                        )
                        .await?;
                    } else {
                        // A key from before intents: whether it was sent is not known.
                        store.expire_idempotent_lease(&record, None).await?;
                    }
                    return Ok(());
                };
                let settle_after = record.held_until() + intent.window();
                if !store
                    .expire_idempotent_lease(&record, Some(settle_after))
                    .await?
                {
                    return Ok(());
                }
                record.state = KeyState::Unknown;
                record.settle_after = Some(settle_after);
                tracing::warn!(key, "a call died holding its key; reconciling its outcome");
            }
            KeyState::Unknown => {}
        }
        let Some(intent) = intent_of(&record) else {
            // Unknown without an intent (marked before intents were recorded): paywarden cannot
            // recognise the operation; it stays blocked for an operator (`paywarden reconcile`).
            return Ok(());
        };
        let ops = match reconciler.find(caller, &intent).await {
            Ok(ops) => ops,
            Err(reason) => {
                tracing::warn!(key, %reason, "could not ask the provider about an unknown outcome yet");
                return Ok(());
            }
        };
        let mut mine = None;
        for op in &ops {
            let found = R::found(op);
            if !store
                .transaction_claimed(&caller.entity_id, &found.transaction_id, Some(key))
                .await?
            {
                mine = Some((op, found));
                break;
            }
        }
        match mine {
            Some((op, found)) => {
                let outcome = reconciler.record(caller, &intent, op).await?;
                self.audit_once(caller, &record, &intent, &found, &outcome, "reconciled: the call's outcome had been unknown; the provider shows this operation")
                    .await?;
                store
                    .settle_unknown_idempotent(
                        &caller.entity_id,
                        key,
                        &outcome.key_record(),
                        outcome.is_error,
                        Some(&found.transaction_id),
                    )
                    .await?;
                if let Some(r) = &record.reservation_id {
                    store.release_reservation(r).await?;
                }
                if let Some(id) = &record.approval_id {
                    let claims = gate::Claims {
                        approval_id: Some(id.clone()),
                        ..gate::Claims::default()
                    };
                    let _ = self
                        .finish_gated(&claims, &outcome, Settlement::Final)
                        .await;
                }
            }
            None if record.settle_after.is_some_and(|t| now < t) => {}
            None => {
                self.release(
                    caller,
                    &record,
                    Some(&intent),
                    "the provider shows nothing after the settle window: it never happened",
                )
                .await?
            }
        }
        Ok(())
    }

    /// Releases a key whose call moved nothing, with its approval and, without an intent, its
    /// reservation; with an intent (something may have been sent), the key is watched for a
    /// late arrival and its reservation is kept until it expires at the end of its UTC day.
    async fn release(
        &self,
        caller: &Caller,
        record: &KeyRecord,
        intent: Option<&Intent>,
        why: &str,
    ) -> Result<(), ServiceError> {
        let store = self.store();
        if !store.release_idempotent(record).await? {
            return Ok(());
        }
        if let Some(intent) = intent {
            store
                .watch_late(
                    record,
                    &intent.toolset,
                    &serde_json::to_value(intent).map_err(StoreError::from)?,
                )
                .await?;
        }
        // With an intent the request may still land (a late arrival): its amount stays
        // reserved until the reservation's end of UTC day, so the day's limits are never
        // decided as if it could not. A late arrival found then counts twice until midnight
        // (moved and reserved): the cap errs towards asking a person. Without an intent
        // nothing was sent (the call records its intent, holding its key, before it sends).
        if let (Some(r), None) = (&record.reservation_id, intent) {
            store.release_reservation(r).await?;
        }
        if let Some(id) = &record.approval_id {
            store.release_approval(id).await?;
        }
        store
            .append_audit(&AuditEntry {
                entity_id: caller.entity_id.clone(),
                client_name: caller.client_name.clone(),
                toolset: intent.map_or_else(|| "unknown".into(), |i| i.toolset.clone()),
                tool: record.tool.clone(),
                arguments: serde_json::json!({ "idempotencyKey": record.key }),
                outcome: "released".into(),
                result_code: None,
                provider_request_id: None,
                transaction_id: None,
                message: Some(format!(
                    "idempotency key {:?} released: {why}; a retry sends it again",
                    record.key
                )),
                duration_ms: 0,
                sandbox: self.sandbox(),
            })
            .await?;
        Ok(())
    }

    /// Appends the audit row of an operation found at the provider unless it is there already
    /// (the call that sent it may have written it before dying).
    async fn audit_once(
        &self,
        caller: &Caller,
        record: &KeyRecord,
        intent: &Intent,
        found: &Found,
        outcome: &ToolOutcome,
        message: &str,
    ) -> Result<(), ServiceError> {
        let facts: &AuditFacts = &outcome.audit;
        if self
            .store()
            .audited(&caller.entity_id, &found.transaction_id, &facts.outcome)
            .await?
        {
            return Ok(());
        }
        self.store()
            .append_audit(&AuditEntry {
                entity_id: caller.entity_id.clone(),
                client_name: caller.client_name.clone(),
                toolset: intent.toolset.clone(),
                tool: record.tool.clone(),
                arguments: redact(&serde_json::json!({
                    "idempotencyKey": record.key,
                    "intent": intent,
                })),
                outcome: facts.outcome.clone(),
                result_code: facts.result_code.clone(),
                provider_request_id: facts.provider_request_id.clone(),
                transaction_id: Some(found.transaction_id.clone()),
                message: Some(message.to_string()),
                duration_ms: 0,
                sandbox: self.sandbox(),
            })
            .await?;
        Ok(())
    }

    /// Looks at the keys of `caller` in `toolset` that were released after their settle window
    /// and are still watched: an operation that arrived late for one is recorded (movement,
    /// audit row `late_duplicate` or `late_arrival`), bound to its key when the key is free
    /// (so a retry replays it), and reported until an operator acknowledges it. Failures are
    /// logged, never the caller's problem.
    pub async fn check_late<R: Reconciler + Sync>(
        &self,
        reconciler: &R,
        caller: &Caller,
        toolset: &str,
    ) {
        if let Err(e) = self.check_late_inner(reconciler, caller, toolset).await {
            tracing::warn!(error = %e, "could not look for late arrivals");
        }
    }

    async fn check_late_inner<R: Reconciler + Sync>(
        &self,
        reconciler: &R,
        caller: &Caller,
        toolset: &str,
    ) -> Result<(), ServiceError> {
        let store = self.store();
        for watched in store.late_to_check(&caller.entity_id, toolset).await? {
            let Ok(intent) = serde_json::from_value::<Intent>(watched.intent.clone()) else {
                continue;
            };
            let ops = match reconciler.find(caller, &intent).await {
                Ok(ops) => ops,
                Err(_) => continue,
            };
            for op in &ops {
                let found = R::found(op);
                // A rejection that arrived late moved nothing.
                if !found.succeeded
                    || store
                        .transaction_claimed(&caller.entity_id, &found.transaction_id, None)
                        .await?
                {
                    continue;
                }
                let key = store
                    .idempotency_key(&caller.entity_id, &watched.key)
                    .await?;
                let kind = match &key {
                    Some(k) if k.state == KeyState::Completed || k.intent.is_some() => {
                        LateKind::Duplicate
                    }
                    _ => LateKind::Arrival,
                };
                let mut outcome = reconciler.record(caller, &intent, op).await?;
                if key.is_none() {
                    store
                        .insert_completed_idempotent(
                            &caller.entity_id,
                            &watched.key,
                            &watched.tool,
                            &watched.request_hash,
                            &outcome.key_record(),
                            outcome.is_error,
                            &found.transaction_id,
                        )
                        .await?;
                }
                outcome.audit.outcome = kind.as_str().into();
                let record = KeyRecord {
                    entity_id: caller.entity_id.clone(),
                    key: watched.key.clone(),
                    tool: watched.tool.clone(),
                    toolset: Some(watched.toolset.clone()),
                    request_hash: String::new(),
                    state: KeyState::Completed,
                    created_at: watched.released_at,
                    lease_until: None,
                    settle_after: None,
                    intent: None,
                    reservation_id: None,
                    approval_id: None,
                    transaction_id: None,
                    response: None,
                };
                let message = match kind {
                    LateKind::Duplicate => format!(
                        "LATE DUPLICATE: the request under idempotency key {:?} reached the provider after its settle window, after the key had been released and sent again; the provider executed it twice. Recorded; an operator must review it (paywarden reconcile)",
                        watched.key
                    ),
                    LateKind::Arrival => format!(
                        "LATE ARRIVAL: the request under idempotency key {:?} reached the provider after its settle window, after the key had been released. Recorded, and bound to the key; an operator should review it (paywarden reconcile)",
                        watched.key
                    ),
                };
                self.audit_once(caller, &record, &intent, &found, &outcome, &message)
                    .await?;
                store
                    .record_late_found(&watched.id, kind, &found.transaction_id)
                    .await?;
                tracing::error!(key = %watched.key, transaction = %found.transaction_id, kind = kind.as_str(), "an operation arrived at the provider after its settle window");
                break;
            }
        }
        Ok(())
    }
}

impl Pipeline {
    /// What every process does on start and then every key lease, without credentials: keys
    /// whose call died before recording an intent are released (nothing was sent); keys whose
    /// call died after it become unknown outcomes, settling a settle window after their lease
    /// ran out (reconciled against the provider on the next call under them); approvals left
    /// `executing` by a dead process are recovered. Returns the keys still unknown, for
    /// toolsets that can reconcile without the caller's credentials.
    ///
    /// # Errors
    /// [`ServiceError::Store`].
    pub async fn sweep(&self) -> Result<Vec<KeyRecord>, ServiceError> {
        let store = self.store();
        let now = Utc::now();
        let mut unknown = Vec::new();
        for record in store.open_idempotency_keys().await? {
            match (record.state, intent_of(&record)) {
                (KeyState::InProgress, None) if record.lease_expired(now) => {
                    if records_intents(&record) {
                        let caller = system_caller(&record.entity_id);
                        self.release(
                            &caller,
                            &record,
                            None,
                            "its call stopped before sending anything",
                        )
                        .await?;
                    } else {
                        // A toolset that records no intent (or a key from before intents):
                        // whether it was sent is not known; an operator resolves it.
                        store.expire_idempotent_lease(&record, None).await?;
                    }
                }
                (KeyState::InProgress, Some(intent)) if record.lease_expired(now) => {
                    let settle_after = record.held_until() + intent.window();
                    if store
                        .expire_idempotent_lease(&record, Some(settle_after))
                        .await?
                    {
                        unknown.push(record);
                    }
                }
                (KeyState::Unknown, _) => unknown.push(record),
                _ => {}
            }
        }
        store.recover_approvals().await?;
        Ok(unknown)
    }
}

/// The caller recorded for what paywarden does on its own (recovery after a restart): the
/// entity, no token, no client.
pub fn system_caller(entity_id: &str) -> Caller {
    Caller {
        entity_id: entity_id.to_string(),
        token: secrecy::SecretString::from(String::new()),
        client_name: Some("paywarden-recovery".into()),
    }
}

/// The intent recorded on a key, if any (and readable).
pub fn intent_of(record: &KeyRecord) -> Option<Intent> {
    record
        .intent
        .clone()
        .and_then(|i| serde_json::from_value(i).ok())
}
