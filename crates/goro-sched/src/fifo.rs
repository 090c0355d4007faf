//! The FIFO scheduler: one global queue, gs run in the order they became ready.

use goro_abi::{GRef, PId, ReadyCause};

use crate::gqueue::GQueue;
use crate::scheduler::Scheduler;
use crate::spin::SpinLock;
use crate::sync::{AtomicBool, AtomicUsize, Ordering, UnsafeCell};

/// One global run queue shared by every P: gs run in the order they became ready, whichever P
/// picks them up.
///
/// Simple and fair, and the reference for what a scheduler must do. Every operation holds one
/// spin lock for a few instructions, so it scales to a few Ps. The work-stealing scheduler is
/// for more.
///
/// # One P
///
/// Started by a runtime with one P, the scheduler keeps the queue in two parts. The gs that
/// the P's holder readies, and every g it takes, go through a queue that only the holder
/// touches, with no lock (the terms of [`Scheduler::start`] make the holder the only thread
/// there). A thread that holds no P, such as a `block_on` caller or a syscall that returns
/// after its P was retaken, readies its g into the locked queue. The holder moves the whole
/// locked queue behind its own before each of its operations, so a g readied elsewhere
/// still runs after every g that became ready before it.
///
/// A yield then makes no locked instruction, which saved 3.6 ns per yield of `goro-bench
/// yield` on a 2-vCPU Intel Xeon VM (20.9 against 24.5 ns, medians of 7 interleaved runs).
pub struct Fifo {
    /// The queued gs. With one P, only those readied by threads that hold no P.
    queue: SpinLock<GQueue>,
    /// Copy of `queue`'s length, written under the lock, read without it.
    len: AtomicUsize,
    /// With one P, the P holder's queue: the front part of the FIFO. Only the thread that
    /// holds the P touches it.
    local: UnsafeCell<GQueue>,
    /// Copy of `local`'s length, written by the P's holder, read by anyone.
    local_len: AtomicUsize,
    /// Set by `start` when the runtime has one P: the holder then uses `local`.
    one_p: AtomicBool,
    /// Set by `start`, which a Fifo accepts once.
    started: AtomicBool,
    /// Set while a thread works on `local`, in debug builds, to catch two at once.
    #[cfg(debug_assertions)]
    local_busy: AtomicBool,
}

// SAFETY: `queue` is behind its lock and the lengths are atomics. `local` is touched only
// through `with_local`, whose callers hold the runtime's only P; the P moves between threads
// with a Release and an Acquire (the terms of `Scheduler::start`), so one thread at a time
// has it, and each sees the previous one's writes.
unsafe impl Sync for Fifo {}

impl Fifo {
    /// An empty FIFO scheduler.
    pub fn new() -> Fifo {
        Fifo {
            queue: SpinLock::new(GQueue::new()),
            len: AtomicUsize::new(0),
            local: UnsafeCell::new(GQueue::new()),
            local_len: AtomicUsize::new(0),
            one_p: AtomicBool::new(false),
            started: AtomicBool::new(false),
            #[cfg(debug_assertions)]
            local_busy: AtomicBool::new(false),
        }
    }

    /// Number of queued gs.
    pub fn len(&self) -> usize {
        // Acquire: pairs with the Release store in `take_shared`, so a reader that sees the
        // locked queue emptied into `local` also sees `local`'s new length. The counts are
        // otherwise a snapshot for the runtime, which orders its idle checks with its own
        // SeqCst fences after `ready` and before `has_work`.
        let shared = self.len.load(Ordering::Acquire);
        // Relaxed: see above.
        shared + self.local_len.load(Ordering::Relaxed)
    }

    /// Returns whether no g is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Returns whether the runtime that started the scheduler has one P.
    #[inline]
    fn one_p(&self) -> bool {
        // Relaxed: `start` stored it before the runtime made any other call, and the runtime
        // started its threads after that.
        self.one_p.load(Ordering::Relaxed)
    }

    /// Calls `f` with the P holder's queue, after moving the locked queue's gs behind it.
    ///
    /// # Safety
    ///
    /// The runtime that started the scheduler has one P, and the caller holds it.
    #[inline]
    unsafe fn with_local<R>(&self, f: impl FnOnce(&mut GQueue) -> R) -> R {
        #[cfg(debug_assertions)]
        if self.local_busy.swap(true, Ordering::Acquire) {
            two_holders();
        }
        let result = self.local.with_mut(|local| {
            // SAFETY: the caller holds the only P, so no other thread touches `local` (see
            // the `Sync` impl), and this function does not lend it twice.
            let local = unsafe { &mut *local };
            self.take_shared(local);
            f(local)
        });
        // Release: pairs with the Acquire swap above of the next holder.
        #[cfg(debug_assertions)]
        self.local_busy.store(false, Ordering::Release);
        result
    }

    /// Moves every g of the locked queue to the back of `local`, in order.
    #[inline]
    fn take_shared(&self, local: &mut GQueue) {
        // Relaxed: a g whose `ready` happened before this call is in the count that this load
        // reads (coherence), so the gs readied before anything the holder readies next are
        // moved first. A g readied at the same time may wait for the next call.
        if self.len.load(Ordering::Relaxed) == 0 {
            return;
        }
        let mut queue = self.queue.lock();
        queue.with(|queue| {
            local.append(queue);
            // Relaxed: ordered before the next store by the Release below.
            self.local_len.store(local.len(), Ordering::Relaxed);
            // Release: pairs with the Acquire load in `len`.
            self.len.store(0, Ordering::Release);
        });
    }

    /// Appends `g` to the locked queue.
    fn push_shared(&self, g: GRef) {
        let mut queue = self.queue.lock();
        queue.with(|queue| {
            queue.push_back(g);
            // Relaxed: see `len`; the lock orders the queue contents themselves.
            self.len.store(queue.len(), Ordering::Relaxed);
        });
    }
}

#[cold]
#[inline(never)]
#[cfg(debug_assertions)]
fn two_holders() -> ! {
    panic!(
        "Fifo: two threads used the one P's queue at once; with one P, call next, the yield \
         hooks and ready(.., Some(p)) only from the thread that holds the P"
    );
}

impl Default for Fifo {
    fn default() -> Fifo {
        Fifo::new()
    }
}

impl std::fmt::Debug for Fifo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fifo")
            .field("len", &self.len())
            .field("one_p", &self.one_p())
            .finish_non_exhaustive()
    }
}

// SAFETY: `next` pops what `ready` and the yield hooks pushed, from the locked queue or the
// P holder's, so each g comes out once per time it went in.
unsafe impl Scheduler for Fifo {
    // Neither syscall hook is overridden: skip both calls.
    const SYSCALL_HOOKS: bool = false;

    fn name(&self) -> &'static str {
        "fifo"
    }

    /// Chooses the queue's layout for `procs` Ps (see "One P" on the type).
    ///
    /// # Panics
    ///
    /// Panics when called a second time: a runtime's Ps may be using the layout already.
    unsafe fn start(&self, procs: usize) {
        // Relaxed: the swap alone decides which call is first; the runtime orders the hooks
        // after `start` (see `one_p`).
        if self.started.swap(true, Ordering::Relaxed) {
            panic!(
                "Fifo::start: called a second time (procs = {procs}); a Fifo serves one \
                 runtime, so create one per runtime"
            );
        }
        // Relaxed: see `one_p`.
        self.one_p.store(procs == 1, Ordering::Relaxed);
    }

    fn ready(&self, g: GRef, _cause: ReadyCause, p: Option<PId>) {
        if p.is_some() && self.one_p() {
            // SAFETY: the runtime has one P, and passes `Some` only from its holder (the terms
            // of `Scheduler::start`).
            unsafe {
                self.with_local(|local| {
                    local.push_back(g);
                    // Relaxed: see `len`.
                    self.local_len.store(local.len(), Ordering::Relaxed);
                })
            };
            return;
        }
        self.push_shared(g);
    }

    fn next(&self, _p: PId) -> Option<GRef> {
        if self.one_p() {
            // SAFETY: as in `ready`; `next` runs on the P's holder.
            return unsafe {
                self.with_local(|local| {
                    let g = local.pop_front();
                    // Relaxed: see `len`.
                    self.local_len.store(local.len(), Ordering::Relaxed);
                    g
                })
            };
        }
        // Relaxed: a snapshot; a g readied at the same time may wait for the next call.
        if self.len.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let mut queue = self.queue.lock();
        queue.with(|queue| {
            let g = queue.pop_front();
            // Relaxed: as in `push_shared`.
            self.len.store(queue.len(), Ordering::Relaxed);
            g
        })
    }

    /// Puts `g` at the back and takes the front in one step. With nothing else queued, `g`
    /// runs on without touching the queue.
    fn on_yield_next(&self, g: GRef, _p: PId) -> Option<GRef> {
        if self.one_p() {
            // SAFETY: as in `ready`; the yield hooks run on the P's holder.
            return unsafe {
                self.with_local(|local| {
                    // The length is unchanged: one g leaves and `g` joins. A queue that is
                    // empty after the move was empty before it, with a length of 0.
                    let Some(front) = local.pop_front() else {
                        return Some(g);
                    };
                    local.push_back(g);
                    Some(front)
                })
            };
        }
        // Relaxed: as in `next`.
        if self.len.load(Ordering::Relaxed) == 0 {
            return Some(g);
        }
        let mut queue = self.queue.lock();
        queue.with(|queue| {
            let Some(front) = queue.pop_front() else {
                return Some(g);
            };
            queue.push_back(g);
            // Relaxed: as in `push_shared`. The length is unchanged, but another thread may
            // have changed it between the check above and the lock.
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

    /// Takes every queued g on P `p` and returns their goids in the order `next` gave them.
    fn drain(fifo: &Fifo, p: PId) -> Vec<u64> {
        std::iter::from_fn(|| fifo.next(p))
            .map(|g| g.header().goid())
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
        let order = drain(&fifo, PId(0));
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
        let order = drain(&fifo, PId(1));
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
        let order = drain(&fifo, PId(0));
        assert_eq!(order, [3, 1]);
        // Alone, the yielder gets itself back and the queue stays empty.
        let again = fifo.on_yield_next(gref(&headers[0]), PId(0)).unwrap();
        assert_eq!(again.header().goid(), 1);
        assert!(!fifo.has_work());
    }

    /// Returns a Fifo started for one P, whose holder is the test's thread.
    fn one_p() -> Fifo {
        let fifo = Fifo::new();
        // SAFETY: each test is its scheduler's only user and holds its one P.
        unsafe { fifo.start(1) };
        fifo
    }

    #[test]
    fn one_p_keeps_ready_order_across_both_queues() {
        let headers = gs(4);
        let fifo = one_p();
        fifo.ready(gref(&headers[0]), ReadyCause::Spawn, Some(PId(0)));
        fifo.ready(gref(&headers[1]), ReadyCause::Wake, None);
        assert_eq!(fifo.len(), 2);
        // The holder's ready moves g 2 over first, so g 3 goes behind it.
        fifo.ready(gref(&headers[2]), ReadyCause::Spawn, Some(PId(0)));
        fifo.ready(gref(&headers[3]), ReadyCause::SyscallExit, None);
        assert_eq!(fifo.len(), 4);
        let order = drain(&fifo, PId(0));
        assert_eq!(order, [1, 2, 3, 4]);
        assert!(!fifo.has_work());
        assert_eq!(fifo.len(), 0);
    }

    #[test]
    fn one_p_yield_takes_outside_ready() {
        let headers = gs(3);
        let fifo = one_p();
        fifo.ready(gref(&headers[1]), ReadyCause::Wake, None);
        fifo.ready(gref(&headers[2]), ReadyCause::Wake, None);
        assert!(fifo.has_work());
        let next = fifo.on_yield_next(gref(&headers[0]), PId(0)).unwrap();
        assert_eq!(next.header().goid(), 2);
        assert_eq!(fifo.len(), 2);
        let order = drain(&fifo, PId(0));
        assert_eq!(order, [3, 1]);
        let again = fifo.on_yield_next(gref(&headers[0]), PId(0)).unwrap();
        assert_eq!(again.header().goid(), 1);
        assert!(!fifo.has_work());
    }

    #[test]
    fn more_ps_share_one_locked_queue() {
        let headers = gs(2);
        let fifo = Fifo::new();
        // SAFETY: the test is the scheduler's only user and acts as both Ps.
        unsafe { fifo.start(2) };
        fifo.ready(gref(&headers[0]), ReadyCause::Spawn, Some(PId(0)));
        fifo.ready(gref(&headers[1]), ReadyCause::Spawn, Some(PId(1)));
        assert_eq!(fifo.next(PId(1)).map(|g| g.header().goid()), Some(1));
        assert_eq!(fifo.next(PId(0)).map(|g| g.header().goid()), Some(2));
        assert!(fifo.is_empty());
    }

    #[test]
    #[should_panic(expected = "Fifo::start: called a second time (procs = 2)")]
    fn second_start_rejected() {
        let fifo = one_p();
        // SAFETY: none: the call breaks `start`'s terms on purpose, and `start` must reject it
        // before it changes anything.
        unsafe { fifo.start(2) };
    }

    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "Fifo: two threads used the one P's queue at once")]
    fn one_p_rejects_a_second_holder() {
        let fifo = one_p();
        // Stands for another thread in the middle of an operation on the P.
        fifo.local_busy.store(true, Ordering::Relaxed);
        let _ = fifo.next(PId(0));
    }
}
