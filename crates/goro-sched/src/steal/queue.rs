//! The per-P run queue: a bounded ring of gs with one producer and many stealers.
//!
//! The design follows tokio's multi-threaded run queue (tokio 1.x,
//! `runtime/scheduler/multi_thread/queue.rs`), which in turn follows Go's `p.runq`: positions
//! are `u32` counters that only grow (wrapping), and a slot's index is its position modulo
//! the capacity. The head word packs two positions:
//!
//! ```text
//!   head: AtomicU64 = steal << 32 | real          tail: AtomicU32
//!
//!   position:   steal ........ real ................. tail ......... steal + CAPACITY
//!               |  being stolen |  queued, poppable    |  free slots  |
//! ```
//!
//! * `real` is the first queued g. The owner pops by advancing it; a stealer claims a batch
//!   by advancing it past the batch.
//! * `steal` lags behind `real` while a stealer copies its batch out, and equals `real`
//!   otherwise. The owner must not reuse those slots yet, so it measures free space from
//!   `steal`, and only one stealer works at a time.
//! * `tail` is written only by the owner: it writes a slot, then publishes it by storing
//!   `tail + 1`.
//!
//! Positions are 32 bits wide so that a CAS on the head cannot succeed on a stale value
//! unless 2^32 operations happened in between (the ABA problem).

use goro_abi::GRef;

use super::injector::Injector;
use super::{invariant, invariant_failed};
use crate::sync::{AtomicU32, AtomicU64, Ordering, UnsafeCell};

/// Number of slots. Under loom it is 4, so that the models reach the overflow path in a few
/// steps.
#[cfg(not(loom))]
const CAPACITY: u32 = 256;
#[cfg(loom)]
const CAPACITY: u32 = 4;

const MASK: u32 = CAPACITY - 1;

const _: () = assert!(CAPACITY.is_power_of_two() && CAPACITY >= 2);

/// The bounded run queue of one P (Go's `p.runq`): a ring of [`RunQueue::CAPACITY`] gs that
/// its owner pushes to and pops from in FIFO order, and that other Ps steal half of at a time.
///
/// # Owner operations
///
/// [`push_back`](RunQueue::push_back), [`pop`](RunQueue::pop), and
/// [`steal_into`](RunQueue::steal_into) with this queue as the destination, may be called by
/// one thread at a time: the owner, which is the thread that holds the P. They are `unsafe`
/// because the queue cannot check that itself. [`WorkStealing`](crate::WorkStealing) relies on
/// the terms of [`Scheduler::start`](crate::Scheduler::start), and its debug builds panic when
/// two threads use one P at once.
pub struct RunQueue {
    /// The steal position in the high 32 bits, the real head in the low 32 bits.
    head: AtomicU64,
    /// One past the last queued g. Written only by the owner.
    tail: AtomicU32,
    /// The ring. A slot contains `None` until its first push. After a pop it keeps a stale g,
    /// which nobody reads until the owner overwrites it.
    /// An array, not a slice, so that indexing with a masked position needs no bounds check.
    slots: Box<[UnsafeCell<Option<GRef>>; CAPACITY as usize]>,
}

// SAFETY: the slots contain GRefs, which are Send and Sync. The head and tail protocol gives
// each slot one writer at a time: the owner, while the slot is free. It also orders every read
// of a slot after the write that filled it and before the next write (see the module docs).
unsafe impl Sync for RunQueue {}
// SAFETY: the queue contains GRefs and atomics only.
unsafe impl Send for RunQueue {}

fn pack(steal: u32, real: u32) -> u64 {
    (u64::from(steal) << 32) | u64::from(real)
}

fn unpack(head: u64) -> (u32, u32) {
    ((head >> 32) as u32, head as u32)
}

impl RunQueue {
    /// Number of slots: 256, or 4 when built with `--cfg loom`.
    pub const CAPACITY: usize = CAPACITY as usize;

    /// Returns an empty queue.
    pub fn new() -> RunQueue {
        RunQueue {
            head: AtomicU64::new(0),
            tail: AtomicU32::new(0),
            slots: Box::new(core::array::from_fn(|_| UnsafeCell::new(None))),
        }
    }

    /// Number of gs that `pop` or a stealer could take now. From a thread other than the
    /// owner this is a snapshot.
    pub fn len(&self) -> usize {
        // Acquire: pairs with the Release CASes that move the real head (pop, claim,
        // overflow). Reading the head first keeps the tail read below at least as new as
        // the tail those operations saw, so `tail - real` never wraps below zero.
        let (_, real) = unpack(self.head.load(Ordering::Acquire));
        // Acquire: pairs with the owner's Release store in `push_back`.
        let tail = self.tail.load(Ordering::Acquire);
        tail.wrapping_sub(real) as usize
    }

    /// Returns whether the queue contains no g that could be taken now.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends `g` at the tail. When the queue is full, moves its older half and `g` to
    /// `overflow` in one batch, keeping their order.
    ///
    /// # Safety
    ///
    /// The caller is the queue's owner (see the type's docs): no other owner operation on
    /// this queue runs at the same time, and the previous one happens before this call.
    #[inline]
    pub unsafe fn push_back(&self, g: GRef, overflow: &Injector) {
        // Acquire: as in `push_back_slow`.
        let (steal, _) = unpack(self.head.load(Ordering::Acquire));
        // Relaxed: only the owner writes the tail.
        let tail = self.tail.load(Ordering::Relaxed);
        if tail.wrapping_sub(steal) < CAPACITY {
            // SAFETY: as in `push_back_slow`.
            unsafe { self.write_slot(tail, g) };
            // Release: as in `push_back_slow`.
            self.tail.store(tail.wrapping_add(1), Ordering::Release);
            return;
        }
        // SAFETY: the caller's contract.
        unsafe { self.push_back_slow(g, overflow) }
    }

    /// Pushes `g` onto a queue that looked full. It is out of line so that the fast path of
    /// `push_back` stays small enough to inline.
    ///
    /// # Safety
    ///
    /// As `push_back`.
    #[cold]
    #[inline(never)]
    unsafe fn push_back_slow(&self, g: GRef, overflow: &Injector) {
        let mut g = g;
        loop {
            // Acquire: pairs with the Release CAS that ends a steal (`finish_steal`), so the
            // stealer's reads of the slots it took happen before this push reuses them.
            let (steal, real) = unpack(self.head.load(Ordering::Acquire));
            // Relaxed: only the owner writes the tail.
            let tail = self.tail.load(Ordering::Relaxed);

            if tail.wrapping_sub(steal) < CAPACITY {
                // SAFETY: position `tail` is free: it is at most CAPACITY - 1 past `steal`,
                // so no stealer reads its slot, and the caller is the only writer.
                unsafe { self.write_slot(tail, g) };
                // Release: publishes the slot to the Acquire tail loads of `len` and `claim`.
                self.tail.store(tail.wrapping_add(1), Ordering::Release);
                return;
            }
            if steal != real {
                // A stealer is copying a batch out and will free its slots soon. Waiting
                // for it is not an option (it may be preempted), so only `g` goes to the
                // injector.
                overflow.push(g);
                return;
            }
            // SAFETY: the caller is the owner; the queue was full with no steal running.
            match unsafe { self.overflow(g, real, tail, overflow) } {
                Ok(()) => return,
                // A stealer claimed a batch first, so there may be room now.
                Err(rejected) => g = rejected,
            }
        }
    }

    /// Moves the older half of a full queue and then `g` to the injector.
    ///
    /// # Safety
    ///
    /// The caller is the owner, and it saw the queue full with `steal == real == head`.
    unsafe fn overflow(
        &self,
        g: GRef,
        head: u32,
        tail: u32,
        overflow: &Injector,
    ) -> Result<(), GRef> {
        invariant!(
            tail.wrapping_sub(head) == CAPACITY,
            "RunQueue::overflow",
            "the queue is not full (head {head}, tail {tail})"
        );
        let half = CAPACITY / 2;
        let mut injector = overflow.lock();
        // Count the batch in the injector before it leaves this queue. `has_work` reads the
        // run queues before the injector, so it finds the batch in one place or the other.
        injector.announce(half as usize + 1);

        let moved = head.wrapping_add(half);
        // Release: publishes the announcement to any thread that reads the new head with an
        // Acquire load (`len`). Relaxed on failure: `push_back` loads the head again.
        let claim = self.head.compare_exchange(
            pack(head, head),
            pack(moved, moved),
            Ordering::Release,
            Ordering::Relaxed,
        );
        if claim.is_err() {
            // Dropping the guard withdraws the announcement.
            return Err(g);
        }
        for position in 0..half {
            // SAFETY: the CAS above took these positions out of the queue, so no stealer
            // can claim them, and only the owner writes slots.
            let taken = unsafe { self.read_slot(head.wrapping_add(position)) };
            injector.push_back(taken);
        }
        injector.push_back(g);
        Ok(())
    }

    /// Removes and returns the g at the head.
    ///
    /// # Safety
    ///
    /// As for [`push_back`](RunQueue::push_back): the caller is the queue's owner.
    #[inline]
    pub unsafe fn pop(&self) -> Option<GRef> {
        // Relaxed: the CAS below checks the value. The slot that a pop reads was written by
        // the owner, which the caller's contract orders before this call.
        let mut head = self.head.load(Ordering::Relaxed);
        loop {
            let (steal, real) = unpack(head);
            // Relaxed: only the owner writes the tail.
            let tail = self.tail.load(Ordering::Relaxed);
            if real == tail {
                return None;
            }
            let next_real = real.wrapping_add(1);
            // A running steal keeps its steal position; otherwise both move together.
            let next = if steal == real {
                pack(next_real, next_real)
            } else {
                pack(steal, next_real)
            };
            // Release: pairs with the Acquire head loads of stealers and `len`, so that they
            // read a tail at least as new as this one and `tail - real` cannot wrap.
            // Relaxed on failure: the loop retries with the value read.
            match self
                .head
                .compare_exchange_weak(head, next, Ordering::Release, Ordering::Relaxed)
            {
                // SAFETY: the CAS took position `real` out of the queue for this caller,
                // and the owner wrote its slot before publishing it.
                Ok(_) => return Some(unsafe { self.read_slot(real) }),
                Err(actual) => head = actual,
            }
        }
    }

    /// Steals about half of this queue's gs into `dst`. Returns one of them for the caller
    /// to run, and leaves the others at the back of `dst`, oldest first.
    ///
    /// Returns `None` when this queue is empty, when another stealer is already working on
    /// it, or when `dst` is more than half full (`dst` is usually empty: a P steals only when
    /// it has nothing left).
    ///
    /// # Safety
    ///
    /// The caller is `dst`'s owner (see [`push_back`](RunQueue::push_back)). Any thread may
    /// steal from `self`, but `self` and `dst` must be different queues.
    pub unsafe fn steal_into(&self, dst: &RunQueue) -> Option<GRef> {
        assert!(
            !core::ptr::eq(self, dst),
            "RunQueue::steal_into: a queue cannot steal from itself; pass another P's queue"
        );
        // Relaxed: the caller owns `dst`, so it is the only writer of its tail.
        let dst_tail = dst.tail.load(Ordering::Relaxed);
        // Acquire: pairs with the Release CAS that ends a steal from `dst`, so that stealer's
        // reads of `dst`'s slots happen before this call writes them.
        let (dst_steal, _) = unpack(dst.head.load(Ordering::Acquire));
        if dst_tail.wrapping_sub(dst_steal) > CAPACITY / 2 {
            return None;
        }

        let (first, count) = self.claim()?;
        for offset in 0..count - 1 {
            // SAFETY: `claim` gave this caller positions first..first + count of `self`. The
            // destination position lies between `dst`'s tail and its steal position plus
            // CAPACITY, because `dst` had room for CAPACITY / 2 >= count gs, so no stealer of
            // `dst` reads that slot. The caller is `dst`'s only writer.
            unsafe {
                let g = self.read_slot(first.wrapping_add(offset));
                dst.write_slot(dst_tail.wrapping_add(offset), g);
            }
        }
        // SAFETY: as above, the last claimed position.
        let returned = unsafe { self.read_slot(first.wrapping_add(count - 1)) };
        self.finish_steal(first);
        if count > 1 {
            // Release: publishes the copied slots to `dst`'s stealers and its `len`.
            dst.tail
                .store(dst_tail.wrapping_add(count - 1), Ordering::Release);
        }
        Some(returned)
    }

    /// Claims the older half (rounded up) of the queued gs for a stealer: advances the real
    /// head past them and leaves the steal position at the first. Returns the first claimed
    /// position and the count.
    fn claim(&self) -> Option<(u32, u32)> {
        // Acquire: pairs with the Release CASes that move the head, so the tail read below is
        // at least as new as the tail their authors saw (see `len`).
        let mut head = self.head.load(Ordering::Acquire);
        loop {
            let (steal, real) = unpack(head);
            if steal != real {
                // Another stealer is copying a batch out; it leaves enough for the owner.
                return None;
            }
            // Acquire: pairs with the owner's Release store in `push_back`, so the slots up
            // to the tail are filled before this stealer reads them.
            let tail = self.tail.load(Ordering::Acquire);
            let queued = tail.wrapping_sub(real);
            let count = queued - queued / 2;
            if count == 0 {
                return None;
            }
            // Release: a later claimer or `len` that acquires this head then reads a tail at
            // least as new as `tail`. `WorkStealing::has_work` also relies on it to find the
            // transfer that was counted before this claim. Acquire on failure: the loop reads
            // the tail again and needs the same guarantee for the new head.
            match self.head.compare_exchange(
                head,
                pack(real, real.wrapping_add(count)),
                Ordering::Release,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    invariant!(
                        count <= CAPACITY / 2,
                        "RunQueue::claim",
                        "claimed {count} of a queue of capacity {CAPACITY}"
                    );
                    return Some((real, count));
                }
                Err(actual) => head = actual,
            }
        }
    }

    /// Ends the steal that claimed from position `first`: moves the steal position up to the
    /// real head, which hands the stolen slots back to the owner.
    fn finish_steal(&self, first: u32) {
        // Relaxed: the CAS below checks the value.
        let mut head = self.head.load(Ordering::Relaxed);
        loop {
            let (steal, real) = unpack(head);
            invariant!(
                steal == first && real != steal,
                "RunQueue::finish_steal",
                "the steal position moved during a steal (expected {first}, found {steal} \
                 with real head {real})"
            );
            // Release: pairs with the Acquire head load in `push_back` (and in `steal_into`
            // for a destination), so this stealer's slot reads happen before the owner
            // overwrites the slots. Relaxed on failure: the owner popped meanwhile, retry.
            match self.head.compare_exchange_weak(
                head,
                pack(real, real),
                Ordering::Release,
                Ordering::Relaxed,
            ) {
                Ok(_) => return,
                Err(actual) => head = actual,
            }
        }
    }

    /// # Safety
    ///
    /// The caller holds position `position` exclusively: it claimed it, or it is the owner
    /// and the position lies between the real head and the tail.
    unsafe fn read_slot(&self, position: u32) -> GRef {
        let slot = &self.slots[(position & MASK) as usize];
        // SAFETY: the caller's claim keeps writers away from the slot.
        let g = slot.with(|slot| unsafe { *slot });
        match g {
            Some(g) => g,
            None => invariant_failed(
                "RunQueue::read_slot",
                format_args!("position {position} was never written"),
            ),
        }
    }

    /// # Safety
    ///
    /// The caller is the owner and position `position` is free: no stealer reads its slot.
    unsafe fn write_slot(&self, position: u32, g: GRef) {
        let slot = &self.slots[(position & MASK) as usize];
        // SAFETY: the caller is the only writer and no reader holds the slot.
        slot.with_mut(|slot| unsafe { *slot = Some(g) });
    }
}

impl Default for RunQueue {
    fn default() -> Self {
        RunQueue::new()
    }
}

impl core::fmt::Debug for RunQueue {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let (steal, real) = unpack(self.head.load(Ordering::Acquire));
        f.debug_struct("RunQueue")
            .field("steal", &steal)
            .field("real", &real)
            .field("tail", &self.tail.load(Ordering::Acquire))
            .finish()
    }
}
