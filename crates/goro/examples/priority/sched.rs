//! A priority scheduler whose goroutines carry their priority in a custom g.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use goro::{GHeader, Scheduler, custom_g};
use goro_sched::{GRef, PId, ReadyCause};

custom_g! {
    /// A goroutine with a priority: higher runs first.
    pub struct PrioG {
        /// The header every g starts with.
        pub header: GHeader,
        /// Scheduling priority, read by [`PriorityScheduler`].
        pub priority: u8,
    }
}

impl PrioG {
    /// A g with priority `priority`.
    pub fn new(priority: u8) -> PrioG {
        PrioG {
            header: GHeader::new(),
            priority,
        }
    }
}

/// One queued g: ordered by priority, then by ready order (earlier first).
struct Entry {
    priority: u8,
    order: Reverse<u64>,
    g: GRef,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        (self.priority, self.order) == (other.priority, other.order)
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Entry {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.priority, self.order).cmp(&(other.priority, other.order))
    }
}

/// Runs the runnable g with the highest [`PrioG::priority`] first; equal priorities run in
/// ready order. Gs of other types get priority 0.
#[derive(Default)]
pub struct PriorityScheduler {
    heap: Mutex<(BinaryHeap<Entry>, u64)>,
    len: AtomicUsize,
}

// SAFETY: `next` pops what `ready` pushed, once each.
unsafe impl Scheduler for PriorityScheduler {
    fn name(&self) -> &'static str {
        "priority"
    }

    fn ready(&self, g: GRef, _cause: ReadyCause, _p: Option<PId>) {
        // The custom g is read through its header: the type tag makes the downcast safe.
        let priority = g.downcast::<PrioG>().map_or(0, |g| g.priority);
        let mut heap = self.heap.lock().unwrap();
        let (entries, counter) = &mut *heap;
        *counter += 1;
        entries.push(Entry {
            priority,
            order: Reverse(*counter),
            g,
        });
        // Relaxed: the runtime orders `has_work` with its own fences; the mutex orders the heap.
        self.len.store(entries.len(), Ordering::Relaxed);
    }

    fn next(&self, _p: PId) -> Option<GRef> {
        let mut heap = self.heap.lock().unwrap();
        let entry = heap.0.pop();
        self.len.store(heap.0.len(), Ordering::Relaxed);
        entry.map(|entry| entry.g)
    }

    fn has_work(&self) -> bool {
        self.len.load(Ordering::Relaxed) > 0
    }
}
