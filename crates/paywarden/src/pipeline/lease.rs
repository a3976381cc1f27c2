//! Leases: one holder at a time for a key or an entity limit, expiring after a crash.

use super::*;

impl Pipeline {
    /// Runs a keyed call while renewing its key's lease every third of the lease, so the key
    /// stays held while the call runs and lapses soon after its process dies.
    pub(super) async fn with_lease<F: std::future::Future>(
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
}
