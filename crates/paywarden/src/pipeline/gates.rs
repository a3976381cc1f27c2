//! In-process gates by key: the calls of this process that need the same thing (an entity's
//! limit decision in one currency, the lease on one provider object) pass one at a time, in
//! the order they came, instead of each retrying the database.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

type Gate = Arc<tokio::sync::Mutex<()>>;

/// Gates keyed by (entity id, name): a FIFO `tokio::sync::Mutex` each. A gate exists while a
/// call waits for it or holds it, so gates for per-object names (a payment id) do not pile up.
/// Shared by every toolset's pipeline of the process; it orders this process's calls only, and
/// whatever it guards is still kept by the database (another process has gates of its own).
#[derive(Debug, Default)]
pub(super) struct Gates {
    gates: Mutex<HashMap<(String, String), Gate>>,
}

/// A call's place at one gate, held from [`Gates::pass`] until it is dropped; dropping it lets
/// the next waiting call through.
pub(super) struct Passed<'a> {
    gates: &'a Gates,
    key: (String, String),
    gate: Gate,
    held: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl Gates {
    /// Waits behind the calls that came before for the gate of (`entity_id`, `name`) and holds
    /// it; `None` (holding nothing) when `deadline` comes first.
    pub(super) async fn pass(
        &self,
        entity_id: &str,
        name: &str,
        deadline: tokio::time::Instant,
    ) -> Option<Passed<'_>> {
        let key = (entity_id.to_string(), name.to_string());
        let gate = self.map().entry(key.clone()).or_default().clone();
        let mut passed = Passed {
            gates: self,
            key,
            gate,
            held: None,
        };
        let held = tokio::time::timeout_at(deadline, passed.gate.clone().lock_owned())
            .await
            .ok()?;
        passed.held = Some(held);
        Some(passed)
    }

    fn map(&self) -> MutexGuard<'_, HashMap<(String, String), Gate>> {
        self.gates.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// How many gates exist (tests: none is left behind).
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.map().len()
    }
}

impl Drop for Passed<'_> {
    fn drop(&mut self) {
        self.held = None;
        let mut gates = self.gates.map();
        // Clones are made and dropped under the map's lock: two references (the map's and
        // this one) mean no other call waits for or holds the gate.
        if Arc::strong_count(&self.gate) == 2 {
            gates.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Calls pass one at a time in the order they came, a call that gives up at its deadline
    /// holds nothing and does not block the others, and no gate outlives its last call.
    #[tokio::test]
    async fn calls_pass_one_at_a_time_in_the_order_they_came_and_no_gate_is_left() {
        let gates = Arc::new(Gates::default());
        let far = || tokio::time::Instant::now() + Duration::from_secs(10);
        let first = gates.pass("e", "pay-1", far()).await.unwrap();
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut waiting = Vec::new();
        for n in 0..8 {
            let (gates, order) = (gates.clone(), order.clone());
            waiting.push(tokio::spawn(async move {
                let _passed = gates.pass("e", "pay-1", far()).await.unwrap();
                order.lock().unwrap().push(n);
                tokio::time::sleep(Duration::from_millis(2)).await;
            }));
            // Each waiter queues before the next is spawned.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // Another key passes at once; a waiter with a near deadline gives up.
        assert!(gates.pass("e", "pay-2", far()).await.is_some());
        let soon = tokio::time::Instant::now() + Duration::from_millis(20);
        assert!(gates.pass("e", "pay-1", soon).await.is_none());
        assert!(
            order.lock().unwrap().is_empty(),
            "nobody passed the held gate"
        );
        drop(first);
        for w in waiting {
            w.await.unwrap();
        }
        assert_eq!(*order.lock().unwrap(), (0..8).collect::<Vec<_>>());
        assert_eq!(gates.len(), 0, "no gate is left once its calls are gone");
    }
}
