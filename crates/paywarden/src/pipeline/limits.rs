//! Cumulative limits: the policy re-evaluated on what moved plus what is reserved today, and the call's amount reserved in the same step, under the entity's limit lease.

use chrono::Duration as ChronoDuration;

use super::gate::strength;
use super::{Caller, Pipeline, ServiceError, ToolOutcome};
use crate::policy::{Decision, PolicyInput, Verdict};

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

    /// Under the entity's limit lease for the call's currency: re-evaluates the policy on what
    /// moved today plus what is reserved, and reserves this call's amount when the verdict is
    /// no stricter than `verdict` (the one that lets it execute).
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
        let store = self.store();
        let lease_name = crate::store::limit_lease_name(&currency);
        let holder = uuid::Uuid::new_v4().to_string();
        let deadline = std::time::Instant::now() + LIMIT_LEASE_WAIT;
        while !store
            .try_lock_transaction(&caller.entity_id, &lease_name, &holder, LIMIT_LEASE)
            .await?
        {
            if std::time::Instant::now() > deadline {
                return Ok(Reserve::Stop(self.error_outcome(
                    "busy",
                    &format!("{tool}: the daily limits of this entity are being decided for other calls; nothing was sent. Retry with the same arguments (and idempotencyKey)."),
                    None,
                )));
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        let result = async {
            let moved = store.moved_today(&caller.entity_id, &currency).await?;
            let reserved = store.reserved_today(&caller.entity_id, &currency).await?;
            let mut fresh = policy.clone();
            fresh.moved_today_minor = moved.saturating_add(reserved);
            let now = match self.safety().policy.evaluate(&fresh) {
                Ok(v) => v,
                Err(e) => {
                    return Ok(Reserve::Stop(self.error_outcome(
                        "policy_error",
                        &format!("{tool} is refused: the policy could not be evaluated ({e}); nothing was sent."),
                        None,
                    )))
                }
            };
            if strength(now.decision) > strength(verdict.decision)
                && strength(now.decision) > strength(floor)
            {
                return Ok(Reserve::Stricter(now));
            }
            Ok(Reserve::Reserved(Some(
                store
                    .reserve_limit(&caller.entity_id, &currency, amount, key)
                    .await?,
            )))
        }
        .await;
        store
            .unlock_transaction(&caller.entity_id, &lease_name, &holder)
            .await?;
        result
    }
}

/// How long a limit lease is held at most (a crashed holder's lease is taken over after it).
pub(super) const LIMIT_LEASE: ChronoDuration = ChronoDuration::seconds(10);

/// How long a call waits for its entity's limit lease before answering `busy`.
pub(super) const LIMIT_LEASE_WAIT: std::time::Duration = std::time::Duration::from_secs(20);

/// What re-evaluating the cumulative limits under the lease gave.
pub(super) enum Reserve {
    /// The verdict stands; the reservation (none for a call without an amount).
    Reserved(Option<String>),
    /// What moved and is reserved today makes the verdict stricter (e.g. `human`).
    Stricter(Verdict),
    /// The policy failed or the lease could not be taken: nothing is sent.
    Stop(ToolOutcome),
}
