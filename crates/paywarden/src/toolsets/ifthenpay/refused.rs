//! Bounding what unauthenticated callback attempts write.
//!
//! `GET /ifthenpay/callback` is public (ifthenpay calls it), so anyone can send attempts with a
//! wrong anti-phishing key. Each used to append an audit row and a callback record: a flood
//! filled the hash-chained audit log. Now the first refused-for-its-key attempt of each
//! [`WINDOW`] is recorded and audited as before, carrying how many attempts the previous
//! window left unrecorded; the others are only counted ([`RefusedCallbacks::total`], and a
//! warning in the log once per window). Callbacks that carry the right key (genuine ones,
//! accepted or refused for their amount or status) are all recorded and audited.
//!
//! No rate-limiting crate is used: the bound is per window for the whole endpoint, not per
//! source (a per-source limiter needs the peer address, which a proxy in front hides anyway),
//! and it only decides what is written, never what is answered: every attempt still gets its
//! 403.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long one window lasts: one audited unauthenticated attempt per minute at most.
pub(super) const WINDOW: Duration = Duration::from_secs(60);

/// The counter of unauthenticated callback attempts and the current window.
#[derive(Debug, Default)]
pub(crate) struct RefusedCallbacks {
    total: AtomicU64,
    window: Mutex<Window>,
}

#[derive(Debug, Default)]
struct Window {
    started: Option<Instant>,
    /// Attempts of this window that were counted, not recorded.
    unrecorded: u64,
}

impl RefusedCallbacks {
    /// Counts one unauthenticated attempt at `now`. `Some(n)` when it is the first of a new
    /// window, to be recorded and audited (`n`: attempts the previous window left
    /// unrecorded); `None` when it is only counted.
    pub(super) fn admit(&self, now: Instant) -> Option<u64> {
        self.total.fetch_add(1, Ordering::Relaxed);
        let mut window = self
            .window
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match window.started {
            Some(started) if now.duration_since(started) < WINDOW => {
                window.unrecorded += 1;
                None
            }
            _ => {
                let previous = std::mem::take(&mut window.unrecorded);
                window.started = Some(now);
                if previous > 0 {
                    tracing::warn!(
                        unrecorded = previous,
                        "ifthenpay callbacks with a wrong anti-phishing key in the last window were refused and counted, not recorded one by one"
                    );
                }
                Some(previous)
            }
        }
    }

    /// Unauthenticated callback attempts since the server started, recorded or not.
    pub(crate) fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_attempt_per_window_is_recorded_and_the_rest_counted() {
        let refused = RefusedCallbacks::default();
        let start = Instant::now();
        assert_eq!(refused.admit(start), Some(0));
        for i in 1..=10 {
            assert_eq!(refused.admit(start + Duration::from_secs(i)), None);
        }
        assert_eq!(refused.admit(start + WINDOW), Some(10));
        assert_eq!(refused.admit(start + WINDOW * 3), Some(0));
        assert_eq!(refused.total(), 13);
    }
}
