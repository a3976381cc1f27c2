//! What a toolset supplies for one money-moving call ([`Operation`]), and [`Pipeline::run`],
//! which runs steps 3 to 13 of the sequence ([`super`]) for any operation. A toolset admits the
//! call (step 1: authentication, a typed request, read-only mode) and then hands it here; it
//! never calls the steps (`write`, `gate`, `finish_gated`, `reconcile`) itself
//! (`tests/layering.rs` checks that).

use std::future::Future;

use super::{
    gate::{derived_key, Gate, GateRequest},
    reconcile::{Found, Intent, Reconciler},
    safety::PreviewView,
    Caller, Pipeline, ServiceError, Settlement, ToolOutcome,
};
use crate::{
    policy::{Decision, PolicyInput},
    store::StoreError,
};

/// An outcome a step answers with instead of going on (a refusal, a preview, an approval
/// request, or what the provider did), and whether it is final, sent nothing, or unknown.
pub type Stop = (ToolOutcome, Settlement);

/// What a check on provider state came to: `Ok(Ok(checked))` goes on; `Ok(Err(stop))` is a
/// refusal to answer as is; `Err` when paywarden's database failed (nothing was sent).
pub type Checked<T> = Result<Result<T, Stop>, ServiceError>;

/// What the provider call came to: `Ok(Ok(stop))` the outcome, the toolset having recorded what
/// the provider did; `Ok(Err(e))` the connector's error, which [`Operation::failure`] turns into
/// an outcome; `Err` when paywarden failed after the request may have left (reported as
/// [`ServiceError::Unrecorded`], never as "nothing was sent").
pub type Sent<E> = Result<Result<Stop, E>, ServiceError>;

/// The fixed facts of one money-moving call, known once it is admitted.
#[derive(Debug, Clone)]
pub struct Call<'a> {
    /// Toolset (`opp`, `ops`, `ifthenpay`).
    pub toolset: &'a str,
    /// Tool name (the catalogue's, [`crate::catalog`]).
    pub tool: &'a str,
    /// The call's arguments as sent (audited, masked).
    pub arguments: &'a serde_json::Value,
    /// [`super::safety::binding_hash`] of the arguments (an approval's stored one when an
    /// approval is run for `get_approval`).
    pub binding: String,
    /// The caller's own idempotency key, if any.
    pub idempotency_key: Option<&'a str>,
    /// The caller's confirmation token, if any.
    pub confirmation_token: Option<&'a str>,
    /// The caller's approval id, if any.
    pub approval_id: Option<&'a str>,
    /// How the toolset names the control arguments (see [`GateRequest::argument_names`]).
    pub argument_names: (&'a str, &'a str),
    /// The least the tool demands of the gate (see [`GateRequest::floor`]).
    pub floor: Decision,
    /// Fields every stop output carries (see [`GateRequest::output_defaults`]).
    pub output_defaults: serde_json::Value,
}

/// What an operation would move on the state its check read: the preview a person sees, and
/// the policy facts beyond it. The policy judges the preview's amount (minor units) and
/// currency (ISO 4217), so it never judges anything but what is shown.
#[derive(Debug, Clone)]
pub struct Assessment {
    /// What would move.
    pub preview: PreviewView,
    /// Age in days of the referenced payment, when there is one (the policy's
    /// `transaction_age_days`).
    pub transaction_age_days: Option<i64>,
}

/// The lease an operation holds on the provider object it acts on while it checks again and
/// executes (step 9), so concurrent operations on one payment run one after another, across
/// processes sharing the database.
#[derive(Debug, Clone)]
pub struct TransactionLease {
    /// The leased resource (OPP's referenced transaction id, `order:<id>` for an ops order).
    pub resource: String,
    /// How long the lease holds before it runs out on its own (longer than the provider
    /// call can take, so a crashed holder cannot block forever).
    pub duration: chrono::Duration,
    /// The tool error's message when another holder keeps the lease for 30 s (nothing sent).
    pub busy: String,
}

/// A money-moving call as a toolset supplies it: how its key is derived, how a lost answer is
/// found at the provider, the check on fresh provider state, the preview and policy facts, the
/// lease and the check under it, the intent recorded before sending, the connector call, and
/// what a connector error settles. [`Pipeline::run`] runs the steps around them.
pub trait Operation: Sync {
    /// What the check read from provider state and carries on to execution.
    type Checked: Send + Sync;
    /// The connector's error from [`Operation::send`].
    type Error: Send;
    /// How the toolset finds an operation whose answer was lost ([`NotReconciled`] when its
    /// unknown outcomes wait for an operator).
    type Reconciler: Reconciler + Sync;

    /// The call's idempotency key: by default the caller's own, else one derived from its
    /// confirmation token or approval ([`derived_key`]); `None` for a first call without one.
    fn key(&self, _caller: &Caller, call: &Call<'_>) -> Option<String> {
        derived_key(
            call.idempotency_key,
            call.confirmation_token,
            call.approval_id,
            call.tool,
            &call.binding,
        )
    }

    /// The toolset's reconciler of unknown outcomes (step 3); `None` when it has none.
    fn reconciler(&self) -> Option<&Self::Reconciler>;

    /// Step 6: reads provider state and refuses what the provider would refuse.
    fn check(&self, caller: &Caller) -> impl Future<Output = Checked<Self::Checked>> + Send;

    /// The preview and policy facts of what the check found (for step 7).
    fn assess(&self, caller: &Caller, checked: &Self::Checked) -> Assessment;

    /// The lease held during step 9 and 10; `None` when the operation acts on no existing
    /// provider object (a creation).
    fn lease(&self, caller: &Caller, checked: &Self::Checked) -> Option<TransactionLease>;

    /// The lease of [`Operation::lease`] when the call's arguments alone name the provider
    /// object, for an operation whose [`Operation::recheck`] is nothing but
    /// [`Operation::check`] run again (it adds no check of its own). A call that expects to
    /// execute (it carries a confirmation token or an approval id) then takes this lease
    /// before step 6, and step 6's check, run under the lease, is also step 9's: one read of
    /// provider state instead of two, and still the execution relies only on a check made
    /// under the lease. Taken this early, the lease is held 30 s longer than its `duration`,
    /// the longest the gate can wait. `None` (the default) checks outside the lease and again
    /// under it.
    fn lease_before_check(&self, _caller: &Caller) -> Option<TransactionLease> {
        None
    }

    /// Step 9: under the lease, checks again on fresh provider state, on exactly what was
    /// agreed (`checked`), and returns what will be sent.
    fn recheck(
        &self,
        caller: &Caller,
        checked: Self::Checked,
        key: Option<&str>,
    ) -> impl Future<Output = Checked<Self::Checked>> + Send;

    /// What is about to be sent under `key`, recorded on the key before the connector call
    /// (step 10) so that a lost answer can be found later; `None` when the toolset does not
    /// reconcile. The pipeline sets `settle_window_ms`.
    fn intent(&self, caller: &Caller, checked: &Self::Checked, key: &str) -> Option<Intent>;

    /// Step 10 and 11: the connector call, and on success the toolset's records (the
    /// movement, its own tables) and the outcome.
    fn send(
        &self,
        caller: &Caller,
        checked: Self::Checked,
        key: Option<&str>,
    ) -> impl Future<Output = Sent<Self::Error>> + Send;

    /// The outcome of a connector error from [`Operation::send`], and what it settles: nothing
    /// sent (the key, approval and token are given back), final, or unknown (the key stays
    /// blocked until reconciled).
    fn failure(&self, error: Self::Error) -> Stop;

    /// The provider named in the signed receipt of an executed movement (`opp`, `stripe`);
    /// `None` when the operation issues no receipt.
    fn receipt_provider(&self) -> Option<&'static str> {
        None
    }
}

/// The [`Operation::Reconciler`] of an operation whose unknown outcomes are not looked up at
/// the provider (they wait for an operator, `paywarden reconcile`). It has no values.
#[derive(Debug, Clone, Copy)]
pub enum NotReconciled {}

impl Reconciler for NotReconciled {
    type Op = NotReconciled;

    fn found(op: &NotReconciled) -> Found {
        match *op {}
    }

    async fn find(&self, _: &Caller, _: &Intent) -> Result<Vec<NotReconciled>, String> {
        match *self {}
    }

    async fn record(
        &self,
        _: &Caller,
        _: &Intent,
        op: &NotReconciled,
    ) -> Result<ToolOutcome, ServiceError> {
        match *op {}
    }
}

/// When a money-moving call takes its operation's lease (step 9's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Leased {
    /// Before the check ([`Operation::lease_before_check`]): everything from step 6 on runs
    /// under it.
    BeforeCheck,
    /// At step 9, after the gate, when the operation has one ([`Operation::lease`]).
    AtExecution,
}

/// What step 9 does with the state step 6 checked.
enum Checking<T> {
    /// Checked under the lease already: sent as is.
    Done(T),
    /// Checked before the lease: checked again under it ([`Operation::recheck`]).
    Again(T),
}

impl Pipeline {
    /// Runs one admitted money-moving call through steps 3 to 13 (see the module docs of
    /// [`crate::pipeline`]): late arrivals and an unknown outcome of its key first, then the
    /// key claimed and leased, `op`'s check, the gate and the limits, `op`'s check again under
    /// its lease, the intent and the provider call, the receipt, the approval and reservation
    /// settled, the audit row and the key.
    ///
    /// # Errors
    /// [`ServiceError::Store`] when paywarden's database fails before anything was sent;
    /// [`ServiceError::Unrecorded`] when it fails after the request may have reached the
    /// provider. Refusals, previews, approval requests and provider rejections are outcomes.
    pub async fn run<O: Operation>(
        &self,
        caller: &Caller,
        call: Call<'_>,
        op: &O,
    ) -> Result<ToolOutcome, ServiceError> {
        let key = op.key(caller, &call);
        // 3. Operations that reached the provider after their key was released are recorded
        // and reported first; an unknown outcome of this key is resolved at the provider
        // before anything is sent (when the claim below finds the key taken by one).
        let reconciler = op.reconciler();
        let binding = call.binding.as_str();
        if let Some(reconciler) = reconciler {
            self.check_late(reconciler, caller, call.toolset).await;
        }
        // 4, 5 and 13: the key claimed, held and settled around the call.
        self.write(
            caller,
            call.toolset,
            call.tool,
            call.arguments,
            key.as_deref(),
            |key| async move {
                match reconciler {
                    Some(reconciler) => self.reconcile(reconciler, caller, &key, binding).await,
                    None => Ok(()),
                }
            },
            |holder| self.decide(caller, &call, key.as_deref(), holder, op),
        )
        .await
    }

    /// Steps 6 to 12 under the claimed key (held by `holder`). A call that expects to execute
    /// (a confirmation token or an approval id) of an operation with
    /// [`Operation::lease_before_check`] runs them all under that lease, its one check standing
    /// for step 9's as well; any other call takes the lease at step 9.
    async fn decide<O: Operation>(
        &self,
        caller: &Caller,
        call: &Call<'_>,
        key: Option<&str>,
        holder: Option<String>,
        op: &O,
    ) -> Result<Stop, ServiceError> {
        let expects_execution = call.confirmation_token.is_some() || call.approval_id.is_some();
        match op.lease_before_check(caller).filter(|_| expects_execution) {
            Some(lease) => {
                // Held from the check on, the lease must also outlast the gate: its limit
                // decision may queue for up to `LIMIT_WAIT` and then for the database's write
                // lock. A lease that ran out while its holder still waited would let another
                // call check and send on the same payment beside it.
                let lease = TransactionLease {
                    duration: lease.duration + super::limits::GATE_WAIT,
                    ..lease
                };
                self.under_transaction_lease(
                    caller,
                    &lease,
                    Box::pin(self.decide_under(caller, call, key, holder, op, Leased::BeforeCheck)),
                )
                .await
            }
            None => {
                self.decide_under(caller, call, key, holder, op, Leased::AtExecution)
                    .await
            }
        }
    }

    /// Steps 6 to 12; `leased` says whether the operation's lease is already held (taken
    /// before the check) or is taken at step 9.
    async fn decide_under<O: Operation>(
        &self,
        caller: &Caller,
        call: &Call<'_>,
        key: Option<&str>,
        holder: Option<String>,
        op: &O,
        leased: Leased,
    ) -> Result<Stop, ServiceError> {
        // 6. The check on fresh provider state, and what would move.
        let checked = match op.check(caller).await? {
            Ok(checked) => checked,
            Err(stop) => return Ok(stop),
        };
        let Assessment {
            preview,
            transaction_age_days,
        } = op.assess(caller, &checked);
        let moved_today = self
            .store()
            .moved_today(&caller.entity_id, &preview.currency)
            .await?;
        let policy = PolicyInput {
            toolset: call.toolset.into(),
            tool: call.tool.into(),
            entity: caller.entity_id.clone(),
            moves_money: crate::catalog::moves_money(call.tool),
            amount_minor: Some(preview.amount_minor),
            currency: Some(preview.currency.clone()),
            transaction_age_days,
            moved_today_minor: moved_today,
            client: caller.client_name.clone(),
        };
        // 7 and 8: the gate, and the cumulative-limit reservation with its verdict.
        let gate = self
            .gate(GateRequest {
                caller,
                toolset: call.toolset,
                tool: call.tool,
                arguments: call.arguments,
                binding: &call.binding,
                preview,
                policy,
                floor: call.floor,
                confirmation_token: call.confirmation_token,
                approval_id: call.approval_id,
                argument_names: call.argument_names,
                output_defaults: call.output_defaults.clone(),
                key,
            })
            .await?;
        let claims = match gate {
            Gate::Stop(outcome, settlement) => return Ok((outcome, settlement)),
            Gate::Execute(claims) => claims,
        };
        // 9, 10 and 11: under the lease, the check again, the intent, the provider call and
        // the toolset's records.
        let (mut outcome, settlement) = match (leased, op.lease(caller, &checked)) {
            // The check above ran under the lease: it is the check again.
            (Leased::BeforeCheck, _) => {
                self.execute(caller, key, holder.as_deref(), op, Checking::Done(checked))
                    .await?
            }
            (Leased::AtExecution, Some(lease)) => {
                self.under_transaction_lease(
                    caller,
                    &lease,
                    Box::pin(self.execute(
                        caller,
                        key,
                        holder.as_deref(),
                        op,
                        Checking::Again(checked),
                    )),
                )
                .await?
            }
            (Leased::AtExecution, None) => {
                self.execute(caller, key, holder.as_deref(), op, Checking::Again(checked))
                    .await?
            }
        };
        if let Some(provider) = op.receipt_provider() {
            self.attach_receipt(&claims, &mut outcome, settlement, provider);
        }
        // 12. The approval and the reservation settled; past a send, a database failure says
        // the operation may have happened.
        self.finish_gated(&claims, &outcome, settlement)
            .await
            .map_err(|e| match (e, settlement) {
                (ServiceError::Store(source), Settlement::Final | Settlement::Unknown) => {
                    self.unrecorded(source)
                }
                (e, _) => e,
            })?;
        Ok((outcome, settlement))
    }

    /// Steps 9 to 11 (the caller holds the lease, if any): the check again (unless `checked`
    /// was already made under the lease), the intent
    /// recorded on the key, the provider call and its records. The intent is recorded only
    /// while this call still holds its key (`holder`), renewing the key's lease in the same
    /// statement: a call that stalled past its lease (a frozen process) and whose key recovery
    /// released, with its reservation, answers that nothing was sent instead of sending.
    async fn execute<O: Operation>(
        &self,
        caller: &Caller,
        key: Option<&str>,
        holder: Option<&str>,
        op: &O,
        checked: Checking<O::Checked>,
    ) -> Result<Stop, ServiceError> {
        let checked = match checked {
            Checking::Done(checked) => checked,
            Checking::Again(agreed) => match op.recheck(caller, agreed, key).await? {
                Ok(checked) => checked,
                Err(stop) => return Ok(stop),
            },
        };
        if let (Some(key), Some(holder)) = (key, holder) {
            let store = self.store();
            let held = match op.intent(caller, &checked, key) {
                Some(mut intent) => {
                    intent.settle_window_ms =
                        u64::try_from(self.settle_window().as_millis()).unwrap_or(u64::MAX);
                    store
                        .record_idempotent_intent(
                            &caller.entity_id,
                            key,
                            holder,
                            &serde_json::to_value(&intent).map_err(StoreError::from)?,
                            self.key_lease(),
                        )
                        .await?
                }
                None => {
                    store
                        .renew_idempotent_lease(&caller.entity_id, key, holder, self.key_lease())
                        .await?
                }
            };
            if !held {
                tracing::error!(key, "this call lost its idempotency key before sending (it stalled past the key's lease); not sending");
                return Ok((
                    self.error_outcome(
                        "key_lost",
                        &format!("This call stalled past its idempotency key's lease and the key was released; nothing was sent. Retry with the same arguments and idempotencyKey {key:?}: the retry sees what happened under it."),
                        None,
                    ),
                    Settlement::NotSent,
                ));
            }
        }
        // From here on the request may have left: no failure says that nothing was sent.
        match op.send(caller, checked, key).await {
            Ok(Ok(stop)) => Ok(stop),
            Ok(Err(error)) => Ok(op.failure(error)),
            Err(ServiceError::Store(source)) => Err(self.unrecorded(source)),
            Err(e) => Err(e),
        }
    }
}
