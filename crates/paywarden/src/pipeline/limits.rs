//! Cumulative limits: the policy re-evaluated on what moved plus what is reserved today, and the call's amount reserved in the same step, under the entity's limit lock.

use super::gate::strength;
use super::{Caller, Pipeline, ServiceError, ToolOutcome};
use crate::policy::{Decision, PolicyInput, Verdict};
use crate::store::{Engine, LimitDecision, StoreError};

impl Pipeline {
    /// Reserves the call's amount without re-evaluating the policy (a person approved it).
    pub(super) async fn reserve_unchecked(
        &self,
        caller: &Caller,
        policy: &PolicyInput,
        key: Option<&str>,
    ) -> Result<Option<String>, ServiceError> {
        let (Some(amount), Some(currency)) = (policy.amount_minor, policy.currency.as_deref())
        else {
            return Ok(None);
        };
        Ok(Some(
            self.store()
                .reserve_limit(&caller.entity_id, currency, amount, key)
                .await?,
        ))
    }

    /// Under the entity's limit lock for the call's currency ([`crate::store::Store::decide_and_reserve`]):
    /// re-evaluates the policy on what moved today plus what is reserved, and reserves this
    /// call's amount when the verdict is no stricter than `verdict` (the one that lets it
    /// execute). Calls of one process queue for the lock in order: on PostgreSQL at an
    /// in-process gate per entity and currency, on SQLite at the store's write turn.
    pub(super) async fn reserve_checked(
        &self,
        caller: &Caller,
        policy: &PolicyInput,
        (floor, verdict): (Decision, &Verdict),
        tool: &str,
        key: Option<&str>,
    ) -> Result<Reserve, ServiceError> {
        let (Some(amount), Some(currency)) = (policy.amount_minor, policy.currency.clone()) else {
            return Ok(Reserve::Reserved(None));
        };
        let busy = || {
            Reserve::Stop(self.error_outcome(
                "busy",
                &format!("{tool}: the daily limits of this entity are being decided for other calls; nothing was sent. Retry with the same arguments (and idempotencyKey)."),
                None,
            ))
        };
        let deadline = tokio::time::Instant::now() + LIMIT_WAIT;
        let store = self.store();
        // PostgreSQL: this process's deciders queue at an in-process gate rather than at the
        // database's row lock. SQLite: none. The decision is a write transaction, and the
        // store's write turn already queues this process's writers in order; a decider that
        // held a gate while it waited for the turn made every other decider of the entity
        // wait for all the writes queued ahead of it (docs/performance.md, "The limit
        // decision on SQLite"). Either way the cap itself is kept by the transaction.
        let _queued = match store.engine() {
            Engine::Postgres => {
                let Some(queued) = self
                    .limit_gates
                    .pass(&caller.entity_id, &currency, deadline)
                    .await
                else {
                    return Ok(busy());
                };
                Some(queued)
            }
            Engine::Sqlite => None,
        };
        loop {
            let decided = store
                .decide_and_reserve(&caller.entity_id, &currency, amount, key, deadline, |total| {
                    let mut fresh = policy.clone();
                    fresh.moved_today_minor = total;
                    match self.safety().policy.evaluate(&fresh) {
                        Err(e) => Some(Reserve::Stop(self.error_outcome(
                            "policy_error",
                            &format!("{tool} is refused: the policy could not be evaluated ({e}); nothing was sent."),
                            None,
                        ))),
                        Ok(now)
                            if strength(now.decision) > strength(verdict.decision)
                                && strength(now.decision) > strength(floor) =>
                        {
                            Some(Reserve::Stricter(now))
                        }
                        Ok(_) => None,
                    }
                })
                .await;
            match decided {
                Ok(LimitDecision::Reserved(id)) => return Ok(Reserve::Reserved(Some(id))),
                Ok(LimitDecision::Refused(reserve)) => return Ok(reserve),
                // An earlier version's lease, or SQLite's write lock not taken within its busy
                // timeout: nothing was reserved; again until the deadline.
                Ok(LimitDecision::Held) => {}
                // SQLite: the write turn did not come by the deadline (checked below).
                Ok(LimitDecision::TimedOut) => {}
                Err(StoreError::Database(e)) if is_busy(&e) => {}
                Err(e) => return Err(e.into()),
            }
            if tokio::time::Instant::now() > deadline {
                return Ok(busy());
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }
}

/// Whether a database error is SQLite's "database is locked" (the write lock was not taken
/// within the busy timeout): primary result codes `SQLITE_BUSY` (5) and `SQLITE_LOCKED` (6),
/// extended codes included (the low byte is the primary code).
fn is_busy(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .filter(|d| d.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some())
        .and_then(|d| d.code())
        .and_then(|c| c.parse::<u32>().ok())
        .is_some_and(|n| matches!(n & 0xff, 5 | 6))
}

/// How long a call waits for its entity's limit decision before answering `busy`.
pub(super) const LIMIT_WAIT: std::time::Duration = std::time::Duration::from_secs(20);

/// The longest a call can wait in the gate (step 7 and 8): [`LIMIT_WAIT`] for its limit
/// decision, then the database's wait for the write lock (SQLite's `busy_timeout`, 10 s).
/// A lease held across the gate ([`super::operation::Operation::lease_before_check`]) is
/// this much longer.
pub(super) const GATE_WAIT: chrono::Duration =
    chrono::Duration::seconds(LIMIT_WAIT.as_secs() as i64 + SQLITE_BUSY_TIMEOUT_SECS);

/// SQLite's `busy_timeout` on paywarden's connections (`PRAGMA busy_timeout = 10000`,
/// `crate::store`), in seconds.
const SQLITE_BUSY_TIMEOUT_SECS: i64 = 10;

/// What re-evaluating the cumulative limits under the lease gave.
pub(super) enum Reserve {
    /// The verdict stands; the reservation (none for a call without an amount).
    Reserved(Option<String>),
    /// What moved and is reserved today makes the verdict stricter (e.g. `human`).
    Stricter(Verdict),
    /// The policy failed or the limits could not be decided in time: nothing is sent.
    Stop(ToolOutcome),
}
