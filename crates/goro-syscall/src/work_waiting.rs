//! The hint that goroutines may be waiting for a P, so that a syscall entry need not ask the
//! schedulers.

use crate::sync::{AtomicBool, Ordering, fence};

/// A hint that goroutines may be waiting for a P while no P is idle.
///
/// A thread that queues a goroutine and finds no idle P to run it raises the hint
/// ([`raise`](WorkWaiting::raise)), and the monitor recomputes it at each scan
/// ([`refresh`](WorkWaiting::refresh)). `entersyscall` reads it ([`is_set`](WorkWaiting::is_set))
/// and asks the schedulers whether work waits only when it is set, which keeps that call off
/// the common syscall.
///
/// What the protocol guarantees: a goroutine queued before a `raise` (with a SeqCst fence
/// between) leaves the hint set, even when a concurrent `refresh` clears it and its scheduler
/// check misses the goroutine. The hint may stay set after the work is gone, until the next
/// scan; a reader then makes one needless scheduler check. Readers on other threads may see
/// the hint late, since `is_set` is a relaxed load: the hint speeds a decision up and never
/// decides alone.
#[derive(Debug, Default)]
pub struct WorkWaiting {
    flag: AtomicBool,
}

impl WorkWaiting {
    /// Creates a hint that is not set.
    pub fn new() -> WorkWaiting {
        WorkWaiting::default()
    }

    /// Returns whether work may be waiting.
    #[inline]
    pub fn is_set(&self) -> bool {
        // Relaxed: a hint; see the type's documentation.
        self.flag.load(Ordering::Relaxed)
    }

    /// Raises the hint after the caller queued a goroutine and found no idle P.
    ///
    /// The caller must issue a SeqCst fence between queueing the goroutine and this call: it
    /// pairs with the fence in `refresh`.
    #[inline]
    pub fn raise(&self) {
        // Relaxed: the caller's fence orders the queueing before this load. Loaded first so
        // that a runtime whose Ps are all busy does not write the shared line at every ready.
        if !self.flag.load(Ordering::Relaxed) {
            self.flag.store(true, Ordering::Relaxed);
        }
    }

    /// Recomputes the hint from `has_work`, which queries the schedulers for a queued
    /// goroutine, and returns the result of `has_work`.
    pub fn refresh(&self, has_work: impl FnOnce() -> bool) -> bool {
        // The hint is cleared before the check, with a SeqCst fence between that pairs with the
        // fence before `raise`. So either `has_work` observes the goroutine queued before the
        // raise, or the raise's load observes the cleared hint and sets it again.
        if self.flag.load(Ordering::Relaxed) {
            self.flag.store(false, Ordering::Relaxed);
        }
        fence(Ordering::SeqCst);
        let waiting = has_work();
        if waiting {
            self.flag.store(true, Ordering::Relaxed);
        }
        waiting
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn refresh_clears_the_hint_without_work() {
        let hint = WorkWaiting::new();
        hint.raise();
        assert!(hint.is_set());
        assert!(!hint.refresh(|| false));
        assert!(!hint.is_set());
    }

    #[test]
    fn refresh_sets_the_hint_with_work() {
        let hint = WorkWaiting::new();
        assert!(hint.refresh(|| true));
        assert!(hint.is_set());
    }
}
