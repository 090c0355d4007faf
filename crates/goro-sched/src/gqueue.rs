//! An intrusive FIFO of gs, linked through the headers' `sched_next` field.

use core::ptr::{self, NonNull};
use core::sync::atomic::Ordering;

use goro_abi::{GHeader, GRef};

/// A singly linked FIFO of gs (Go's `gQueue`). Pushing and popping never allocate: the link is
/// the `sched_next` word of each g's header, which the header reserves for its scheduler.
///
/// Not synchronized: the owner wraps it in a lock. A g may be in at most one queue at a time.
#[derive(Debug)]
pub struct GQueue {
    head: *mut GHeader,
    tail: *mut GHeader,
    len: usize,
}

// SAFETY: the queue only holds GRefs, which are Send; the owner provides mutual exclusion.
unsafe impl Send for GQueue {}

impl GQueue {
    /// An empty queue.
    pub const fn new() -> GQueue {
        GQueue {
            head: ptr::null_mut(),
            tail: ptr::null_mut(),
            len: 0,
        }
    }

    /// Number of queued gs.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Returns whether the queue is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends `g` at the back.
    pub fn push_back(&mut self, g: GRef) {
        let header = g.header();
        // SAFETY: the queue belongs to the g's scheduler, which owns the g from now until a
        // pop returns it, and the link ends the queue.
        let link = unsafe { header.sched_next() };
        // Relaxed: the link is only read under the owner's lock, which orders it.
        link.store(ptr::null_mut(), Ordering::Relaxed);
        if self.tail.is_null() {
            self.head = g.as_ptr();
        } else {
            // SAFETY: `tail` is a queued g, alive while queued (GRef's contract), and `g`
            // is queued behind it.
            let tail_link = unsafe { (*self.tail).sched_next() };
            tail_link.store(g.as_ptr(), Ordering::Relaxed);
        }
        self.tail = g.as_ptr();
        self.len += 1;
    }

    /// Moves every g of `other` to the back of this queue, in their order, and leaves `other`
    /// empty. Takes constant time.
    pub fn append(&mut self, other: &mut GQueue) {
        if other.head.is_null() {
            return;
        }
        if self.tail.is_null() {
            self.head = other.head;
        } else {
            // SAFETY: `tail` is a queued g, alive while queued (GRef's contract), and the gs
            // of `other` are queued behind it from now on.
            let tail_link = unsafe { (*self.tail).sched_next() };
            // Relaxed: as in `push_back`.
            tail_link.store(other.head, Ordering::Relaxed);
        }
        self.tail = other.tail;
        self.len += other.len;
        *other = GQueue::new();
    }

    /// Removes and returns the g at the front.
    pub fn pop_front(&mut self) -> Option<GRef> {
        let head = NonNull::new(self.head)?;
        // SAFETY: `head` was pushed as a GRef and stays alive while queued.
        let g = unsafe { GRef::from_raw(head) };
        // SAFETY: the g is still this queue's until the pop returns it.
        let next = unsafe { g.header().sched_next() }.load(Ordering::Relaxed);
        self.head = next;
        if next.is_null() {
            self.tail = ptr::null_mut();
        }
        self.len -= 1;
        Some(g)
    }
}

impl Default for GQueue {
    fn default() -> Self {
        GQueue::new()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use std::ptr::NonNull;

    use super::*;

    fn goids(queue: &mut GQueue) -> Vec<u64> {
        std::iter::from_fn(|| queue.pop_front())
            .map(|g| g.header().goid())
            .collect()
    }

    #[test]
    fn append_keeps_both_orders() {
        let headers: Vec<GHeader> = (1..=5).map(GHeader::with_goid).collect();
        // SAFETY: the headers outlive every use of the refs.
        let g = |i: usize| unsafe { GRef::from_raw(NonNull::from(&headers[i])) };
        let (mut front, mut back) = (GQueue::new(), GQueue::new());
        front.append(&mut back);
        assert!(front.is_empty());
        for i in 0..2 {
            front.push_back(g(i));
        }
        for i in 2..5 {
            back.push_back(g(i));
        }
        front.append(&mut back);
        assert_eq!((front.len(), back.len()), (5, 0));
        assert_eq!(goids(&mut front), [1, 2, 3, 4, 5]);
        // The queue left empty takes pushes again, and appending onto an empty queue moves
        // everything.
        back.push_back(g(0));
        back.append(&mut GQueue::new());
        let mut empty = GQueue::new();
        empty.append(&mut back);
        empty.push_back(g(1));
        assert_eq!(goids(&mut empty), [1, 2]);
        assert!(back.is_empty());
    }
}
