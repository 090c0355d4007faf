//! The injector: the global run queue of the work-stealing scheduler.

use core::fmt;

use goro_abi::GRef;

use crate::gqueue::GQueue;
use crate::sync::{AtomicUsize, Mutex, MutexGuard, Ordering};

/// The global run queue (Go's `sched.runq`): an intrusive FIFO of gs behind a mutex.
///
/// It receives the gs readied by threads that hold no P, and half of a P's run queue when that
/// queue overflows. Every P takes from it when its own queue is empty, and every 61st time it
/// picks a g (see [`WorkStealing`](crate::WorkStealing)).
pub struct Injector {
    queue: Mutex<GQueue>,
    /// The queue's length, plus the gs of an overflow that has announced itself and not yet
    /// pushed them. Written under the lock, read without it.
    len: AtomicUsize,
}

impl Injector {
    /// Returns an empty injector.
    pub fn new() -> Injector {
        Injector {
            queue: Mutex::new(GQueue::new()),
            len: AtomicUsize::new(0),
        }
    }

    /// Number of queued gs, without taking the lock.
    ///
    /// While a run queue overflows into the injector, this count includes the gs it is about
    /// to push, so that a reader never misses them between the two queues.
    pub fn len(&self) -> usize {
        // Acquire: pairs with the Release store in `InjectorGuard::drop`. A reader that finds
        // gs taken out also observes what their taker did before (see `Transfers`).
        self.len.load(Ordering::Acquire)
    }

    /// Returns whether no g is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends `g` at the back.
    pub fn push(&self, g: GRef) {
        self.lock().push_back(g);
    }

    /// Removes and returns the g at the front.
    pub fn pop(&self) -> Option<GRef> {
        if self.is_empty() {
            return None;
        }
        self.lock().pop_front()
    }

    pub(crate) fn lock(&self) -> InjectorGuard<'_> {
        // A panic while holding this lock can only come from a broken g header. The queue
        // itself is still consistent, so poisoning is ignored.
        let queue = self
            .queue
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        InjectorGuard {
            queue,
            len: &self.len,
        }
    }
}

impl Default for Injector {
    fn default() -> Self {
        Injector::new()
    }
}

impl fmt::Debug for Injector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Injector")
            .field("len", &self.len())
            .finish()
    }
}

/// The locked injector. Dropping it stores the queue's length in `Injector::len`, before
/// the lock is released.
pub(crate) struct InjectorGuard<'a> {
    queue: MutexGuard<'a, GQueue>,
    len: &'a AtomicUsize,
}

impl InjectorGuard<'_> {
    /// Number of gs in the queue itself, not counting an announcement.
    pub(crate) fn len(&self) -> usize {
        self.queue.len()
    }

    /// Counts `extra` gs that the caller is about to push, before they leave the place they
    /// are in. The count is exact again when the guard drops.
    pub(crate) fn announce(&mut self, extra: usize) {
        // Relaxed: the caller publishes the announcement with the Release CAS that removes
        // the gs from their run queue (`RunQueue::overflow`).
        self.len.store(self.queue.len() + extra, Ordering::Relaxed);
    }

    pub(crate) fn push_back(&mut self, g: GRef) {
        self.queue.push_back(g);
    }

    pub(crate) fn pop_front(&mut self) -> Option<GRef> {
        self.queue.pop_front()
    }
}

impl Drop for InjectorGuard<'_> {
    fn drop(&mut self) {
        // Release: pairs with the Acquire load in `Injector::len`.
        self.len.store(self.queue.len(), Ordering::Release);
    }
}
