//! Leases: one holder at a time for a key or an entity limit, expiring after a crash.

use super::*;

impl Pipeline {
    /// Runs a keyed call while renewing its key's lease every third of the lease, so the key
    /// stays held while the call runs and lapses soon after its process dies.
    ///
    /// The renewals run beside the call, both polled together: the call may hold the store's
    /// write turn (SQLite, [`crate::store::Store::begin_write`]) while a renewal waits for it,
    /// so a renewal must never stop the call from being polled. When the call ends, a renewal
    /// still waiting or in flight is dropped (an `UPDATE` that only extends a lease this call no
    /// longer needs).
    ///
    /// `call` comes boxed: an `async fn`'s future keeps its arguments apart from its locals, so
    /// a future passed inline would be held twice, and each wrapper around a money-moving
    /// call's pipeline doubled its state (a refund's tool future was 114,776 bytes in a release
    /// build; docs/performance.md, "Spawned futures boxed").
    pub(super) async fn with_lease<F: std::future::Future>(
        &self,
        entity_id: &str,
        key: &str,
        holder: &str,
        call: std::pin::Pin<Box<F>>,
    ) -> F::Output {
        let lease = self.key_lease();
        let every = (lease / 3)
            .to_std()
            .unwrap_or(std::time::Duration::from_secs(1))
            .max(std::time::Duration::from_millis(100));
        let renewals = async {
            let mut renew = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                renew.tick().await;
                match self.store.renew_idempotent_lease(entity_id, key, holder, lease).await {
                    Ok(true) => {}
                    Ok(false) => tracing::error!(key, "this call no longer holds its idempotency key (its lease ran out and it was reconciled)"),
                    Err(e) => tracing::warn!(error = %e, key, "could not renew the idempotency key's lease"),
                }
            }
        };
        tokio::pin!(call, renewals);
        tokio::select! {
            out = &mut call => out,
            never = &mut renewals => never,
        }
    }
}

impl Pipeline {
    /// Runs `call` holding `lease` on the provider object an operation acts on (step 9):
    /// waits up to 30 s for another holder, then answers with the lease's `busy` tool error
    /// (nothing sent). The lease is given back afterwards; past the send, a failure to give it
    /// back only lets it run out on its own.
    ///
    /// The lease is a row in the database (`transaction_locks`), so it holds across
    /// processes and runs out after a crash. This process's calls on one object first wait at
    /// an in-process gate, in the order they came, and only the call at the front polls the
    /// database (every 15 ms, while another process holds the lease); before the gate, every
    /// waiting call polled, as a write, and the lease went to whichever call polled first
    /// (docs/performance.md, "Waiting for a payment's lease"). A call of this process that
    /// holds the lease past its `duration` (a provider answering slowly) keeps the ones behind
    /// it waiting until it ends or their 30 s pass; another process may take the run-out lease.
    ///
    /// # Errors
    /// [`ServiceError::Store`] when the lease cannot be taken (nothing was sent), or `call`'s.
    ///
    /// `call` comes boxed, for the reason [`Pipeline::with_lease`] gives.
    pub(super) async fn under_transaction_lease<F>(
        &self,
        caller: &Caller,
        lease: &super::operation::TransactionLease,
        call: std::pin::Pin<Box<F>>,
    ) -> Result<super::operation::Stop, ServiceError>
    where
        F: std::future::Future<Output = Result<super::operation::Stop, ServiceError>>,
    {
        let store = self.store();
        let holder = uuid::Uuid::new_v4().to_string();
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
        let busy = || {
            Ok((
                self.error_outcome("busy", &lease.busy, None),
                Settlement::NotSent,
            ))
        };
        // This process's calls on the object wait here in the order they came, so that only
        // the first of them asks the database (where the lease of another process, or of one
        // that crashed, keeps it waiting); held until the lease is given back below.
        let Some(_turn) = self
            .lease_gates
            .pass(&caller.entity_id, &lease.resource, deadline)
            .await
        else {
            return busy();
        };
        while !store
            .try_lock_transaction(&caller.entity_id, &lease.resource, &holder, lease.duration)
            .await?
        {
            if tokio::time::Instant::now() > deadline {
                return busy();
            }
            tokio::time::sleep(std::time::Duration::from_millis(15)).await;
        }
        let result = call.await;
        if let Err(e) = store
            .unlock_transaction(&caller.entity_id, &lease.resource, &holder)
            .await
        {
            tracing::warn!(error = %e, "could not release a transaction lease; it runs out on its own");
        }
        result
    }
}
