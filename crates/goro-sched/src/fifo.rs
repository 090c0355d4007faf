//! The FIFO scheduler: one global queue, gs run in the order they became ready.

use goro_abi::{GRef, PId, ReadyCause};

use crate::gqueue::GQueue;
use crate::scheduler::Scheduler;
use crate::spin::SpinLock;
use crate::sync::{AtomicUsize, Ordering};

/// One global run queue shared by every P: gs run in the order they became ready, whichever P
/// picks them up.
///
/// Simple and fair, and the reference for what a scheduler must do. Every operation holds one
/// spin lock for a few instructions, so it scales to a few Ps. The work-stealing scheduler is
/// for more.
#[derive(Debug)]
pub struct Fifo {
    queue: SpinLock<GQueue>,
    /// Copy of the queue's length, written under the lock, read without it by `has_work`.
    len: AtomicUsize,
}

impl Fifo {
    /// An empty FIFO scheduler.
    pub fn new() -> Fifo {
        Fifo {
            queue: SpinLock::new(GQueue::new()),
            len: AtomicUsize::new(0),
        }
    }

    /// Number of queued gs.
    pub fn len(&self) -> usize {
        // Relaxed: a snapshot for the runtime, which orders its idle checks with its own
        // SeqCst fences after `ready` and before `has_work`.
        self.len.load(Ordering::Relaxed)
    }

    /// Returns whether no g is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Default for Fifo {
    fn default() -> Fifo {
        Fifo::new()
    }
}

// SAFETY: `next` pops what `ready` pushed, so each g comes out once per time it went in.
unsafe impl Scheduler for Fifo {
    // Neither syscall hook is overridden: skip both calls.
    const SYSCALL_HOOKS: bool = false;

    fn name(&self) -> &'static str {
        "fifo"
    }

    fn ready(&self, g: GRef, _cause: ReadyCause, _p: Option<PId>) {
        let mut queue = self.queue.lock();
        queue.with(|queue| {
            queue.push_back(g);
            // Relaxed: see `len`; the lock orders the queue contents themselves.
            self.len.store(queue.len(), Ordering::Relaxed);
        });
    }

    fn next(&self, _p: PId) -> Option<GRef> {
        if self.is_empty() {
            return None;
        }
        let mut queue = self.queue.lock();
        queue.with(|queue| {
            let g = queue.pop_front();
            // Relaxed: as in `ready`.
            self.len.store(queue.len(), Ordering::Relaxed);
            g
        })
    }

    /// Puts `g` at the back and takes the front in one critical section. With nothing else
    /// queued, `g` runs on without touching the queue.
    fn on_yield_next(&self, g: GRef, _p: PId) -> Option<GRef> {
        if self.is_empty() {
            return Some(g);
        }
        let mut queue = self.queue.lock();
        queue.with(|queue| {
            let Some(front) = queue.pop_front() else {
                return Some(g);
            };
            queue.push_back(g);
            // Relaxed: as in `ready`. The length is unchanged, but another thread may have
            // changed it between the check above and the lock.
            self.len.store(queue.len(), Ordering::Relaxed);
            Some(front)
        })
    }

    fn has_work(&self) -> bool {
        !self.is_empty()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use std::ptr::NonNull;

    use goro_abi::GHeader;

    use super::*;

    // Boxed so that each header keeps its address while the Vec grows.
    #[allow(clippy::vec_box)]
    fn gs(n: u64) -> Vec<Box<GHeader>> {
        (1..=n)
            .map(|goid| Box::new(GHeader::with_goid(goid)))
            .collect()
    }

    fn gref(g: &GHeader) -> GRef {
        // SAFETY: the boxes outlive every use of the refs in these tests.
        unsafe { GRef::from_raw(NonNull::from(g)) }
    }

    #[test]
    fn runs_in_ready_order() {
        let headers = gs(5);
        let fifo = Fifo::new();
        for g in &headers {
            fifo.ready(gref(g), ReadyCause::Spawn, None);
        }
        assert!(fifo.has_work());
        let order: Vec<u64> = std::iter::from_fn(|| fifo.next(PId(0)))
            .map(|g| g.header().goid())
            .collect();
        assert_eq!(order, [1, 2, 3, 4, 5]);
        assert!(!fifo.has_work());
    }

    #[test]
    fn yield_goes_to_the_back() {
        let headers = gs(3);
        let fifo = Fifo::new();
        for g in &headers {
            fifo.ready(gref(g), ReadyCause::Spawn, None);
        }
        let first = fifo.next(PId(0)).unwrap();
        fifo.on_yield(first, PId(0));
        let order: Vec<u64> = std::iter::from_fn(|| fifo.next(PId(1)))
            .map(|g| g.header().goid())
            .collect();
        assert_eq!(order, [2, 3, 1]);
    }

    #[test]
    fn yield_next_runs_the_front_and_queues_the_yielder_last() {
        let headers = gs(3);
        let fifo = Fifo::new();
        for g in &headers[1..] {
            fifo.ready(gref(g), ReadyCause::Spawn, None);
        }
        let next = fifo.on_yield_next(gref(&headers[0]), PId(0)).unwrap();
        assert_eq!(next.header().goid(), 2);
        let order: Vec<u64> = std::iter::from_fn(|| fifo.next(PId(0)))
            .map(|g| g.header().goid())
            .collect();
        assert_eq!(order, [3, 1]);
        // Alone, the yielder gets itself back and the queue stays empty.
        let again = fifo.on_yield_next(gref(&headers[0]), PId(0)).unwrap();
        assert_eq!(again.header().goid(), 1);
        assert!(!fifo.has_work());
    }
}
