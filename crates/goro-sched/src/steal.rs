//! The work-stealing scheduler: a run queue and a runnext slot per P, a global injector, and
//! stealing between Ps, after Go's scheduler (`runtime/proc.go`).
//!
//! The design is documented on [`WorkStealing`].

mod injector;
mod queue;

use core::fmt;
use core::ptr::{self, NonNull};
use std::sync::OnceLock;

use crossbeam_utils::CachePadded;
use goro_abi::{GHeader, GRef, PId, ReadyCause};

pub use injector::Injector;
pub use queue::RunQueue;

use crate::gqueue::GQueue;
use crate::scheduler::Scheduler;
#[cfg(debug_assertions)]
use crate::sync::AtomicBool;
use crate::sync::{AtomicPtr, AtomicUsize, Ordering};

/// Panics with the message for a broken internal invariant of this module.
#[cold]
#[track_caller]
pub(crate) fn invariant_failed(function: &str, reason: fmt::Arguments<'_>) -> ! {
    panic!("{function}: internal invariant violated: {reason}")
}

/// Checks an internal invariant. On failure, panics naming the function and the reason.
macro_rules! invariant {
    ($condition:expr, $function:literal, $($reason:tt)+) => {
        if !$condition {
            $crate::steal::invariant_failed($function, format_args!($($reason)+))
        }
    };
}
pub(crate) use invariant;

/// The work-stealing scheduler (name `"steal"`): per-P run queues with a runnext slot, a global
/// injector, and stealing between Ps, after Go's scheduler.
///
/// Its per-P state is created by [`Scheduler::start`], which the runtime calls once before any
/// other hook.
///
/// # Where a g goes
///
/// * A caller that holds P `p` (`p = Some(p)`):
///   * `Spawn` and `Wake` put the g in `p`'s runnext slot. The g that was there moves to the
///     tail of `p`'s run queue.
///   * `Yield` and `SyscallExit` put the g at the tail of `p`'s run queue.
/// * A caller that holds no P (`p = None`) puts the g in the injector, whatever the cause.
///
/// A full run queue moves its older half and the new g to the injector in one batch.
///
/// **Yield** goes to the tail of the local run queue, where Go's `Gosched` uses the global
/// queue. The local tail already puts the g behind every g queued on its P, and other Ps can
/// still steal it. It also keeps the g on the P whose caches hold its data, and keeps the
/// injector's lock off the path of a g that yields in a loop. The cost is that a P whose only
/// g yields in a loop looks at the injector only every 61st pick. goro's runtime makes up for
/// it by waking an idle P after every `ready`, so another P takes the injector's gs.
///
/// # Where `next` looks, in order
///
/// 1. Every [`INJECTOR_CHECK_INTERVAL`](WorkStealing::INJECTOR_CHECK_INTERVAL)th call on a P,
///    the injector first, one g. Without it, two gs that keep readying each other on a P
///    would starve the injector. The interval is Go's 61. Being prime, it is unlikely to fall
///    into step with a periodic workload.
/// 2. The runnext slot, unless the last
///    [`MAX_RUNNEXT_STREAK`](WorkStealing::MAX_RUNNEXT_STREAK) picks on this P all came from
///    it. In that case the head of the run queue goes first, if there is one. Go lets a
///    runnext g inherit the time slice of the g that readied it, so a chain of runnext gs
///    loses the P when the slice ends. This scheduler sees no time, so it counts picks, as
///    tokio does for its LIFO slot (tokio 1.x caps it at 3 polls in a row,
///    `MAX_LIFO_POLLS_PER_TICK` in `runtime/scheduler/multi_thread/worker.rs`).
/// 3. The head of the local run queue.
/// 4. The injector: a batch of `len / procs + 1` gs, at most half a run queue, like Go's
///    `globrunqget`. The first is returned and the rest go to the local run queue.
/// 5. Stealing: starting at a random P (xorshift, one state per P), half of each other P's run
///    queue is tried once. If all are empty, each other P's runnext slot is tried once, as
///    Go's `runqsteal` does on its last attempt.
///
/// # Releasing a P
///
/// [`on_release_p`](Scheduler::on_release_p) leaves the P's run queue in place (the next
/// M that acquires the P runs it, and other Ps can steal from it meanwhile) and moves the g
/// in its runnext slot to the tail of that queue. A runnext g is meant to run right after
/// the g that readied it, on the same M. Once the P leaves that M the point is lost, and in
/// the run queue the g can be stolen at once instead of only by the last-resort pass.
///
/// # No lost wakeup
///
/// `has_work` must see every g whose `ready` has returned (across threads, the runtime's
/// SeqCst fences order the `ready` before the `has_work`). It reads every runnext slot,
/// every run queue and the injector, but a g can move between these while the scan runs: a
/// steal, a batch from the injector, a runnext g pushed into a run queue. A scan that reads
/// the destination before the g arrives and the source after it left would miss it.
/// Every such move is counted. `has_work` reads the count of finished moves
/// before the scan and the count of started ones after it, and returns `true` when they
/// differ. A move that the scan could have missed started before the scan's last read and
/// either finished after its first read or is still running, so the counts differ. An
/// overflow into the injector needs no count: it announces its batch in the injector's
/// length before taking it from the run queue, and the scan reads the run queues first.
///
/// # Contract with the runtime
///
/// `ready(g, cause, Some(p))`, `next(p)`, `on_yield_next(g, p)` and `on_release_p(p)` run on
/// the thread that holds P `p`, as [`Scheduler::start`] requires of the caller. They take no
/// lock and make no atomic read-modify-write to own the P: the run queue has a single
/// producer, and the runtime's handoff of the P orders one holder's writes before the next
/// holder's reads. Debug builds check that two threads never use the same P at once, and
/// panic when they do.
///
/// # Example
///
/// ```
/// use std::ptr::NonNull;
/// use goro_abi::{GHeader, GRef, PId, ReadyCause};
/// use goro_sched::{Scheduler, WorkStealing};
///
/// let headers: Vec<Box<GHeader>> = (1..=3)
///     .map(|goid| Box::new(GHeader::with_goid(goid)))
///     .collect();
/// // SAFETY: the boxes outlive every use of the refs.
/// let gs: Vec<GRef> = headers
///     .iter()
///     .map(|header| unsafe { GRef::from_raw(NonNull::from(&**header)) })
///     .collect();
///
/// let scheduler = WorkStealing::new();
/// // SAFETY: this thread is the scheduler's only user and acts as both Ps.
/// unsafe { scheduler.start(2) };
/// scheduler.ready(gs[0], ReadyCause::Yield, Some(PId(0))); // P 0's run queue
/// scheduler.ready(gs[1], ReadyCause::Wake, Some(PId(0))); // P 0's runnext slot
/// scheduler.ready(gs[2], ReadyCause::Spawn, None); // the injector
///
/// let goid = |g: Option<GRef>| g.map(|g| g.header().goid());
/// assert_eq!(goid(scheduler.next(PId(0))), Some(2)); // runnext first
/// assert_eq!(goid(scheduler.next(PId(1))), Some(3)); // P 1 takes from the injector
/// assert_eq!(goid(scheduler.next(PId(1))), Some(1)); // then steals from P 0
/// assert!(!scheduler.has_work());
/// ```
pub struct WorkStealing {
    /// One entry per P, created by `start`.
    ps: OnceLock<Box<[CachePadded<Proc>]>>,
    injector: CachePadded<Injector>,
    transfers: CachePadded<Transfers>,
}

/// The scheduler's state for one P.
struct Proc {
    /// The g to run next on this P, or null. Only the owner stores a g here; the owner and
    /// stealers take it by swapping in null.
    runnext: AtomicPtr<GHeader>,
    queue: RunQueue,
    /// Set while a thread is in an owner operation on this P, in debug builds (see
    /// `Proc::claim`).
    #[cfg(debug_assertions)]
    busy: AtomicBool,
    /// Number of `next` calls on this P before the next one that looks at the injector first.
    ///
    /// This and the next two fields are read and written only by the P's owner, in Relaxed
    /// order: the runtime's handoff of the P orders one owner's accesses before the next
    /// owner's (see `Scheduler::start`). They are std atomics even under loom, because they
    /// take no part in the protocol between threads.
    ticks_to_injector: std::sync::atomic::AtomicU32,
    /// Number of picks in a row that came from the runnext slot.
    runnext_streak: std::sync::atomic::AtomicU32,
    /// xorshift32 state for choosing the first victim of a steal; never zero.
    random: std::sync::atomic::AtomicU32,
}

impl WorkStealing {
    /// Number of `next` calls on a P between two calls that look at the injector first.
    pub const INJECTOR_CHECK_INTERVAL: u32 = 61;

    /// Number of picks in a row that the runnext slot may win over a non-empty run queue.
    pub const MAX_RUNNEXT_STREAK: u32 = 3;

    /// Returns a scheduler with no Ps. [`Scheduler::start`] creates them.
    pub fn new() -> WorkStealing {
        WorkStealing {
            ps: OnceLock::new(),
            injector: CachePadded::new(Injector::new()),
            transfers: CachePadded::new(Transfers::new()),
        }
    }

    /// Number of Ps, or 0 before [`Scheduler::start`].
    pub fn procs(&self) -> usize {
        self.ps.get().map_or(0, |ps| ps.len())
    }

    /// Number of gs in the injector, for dumps and tests.
    pub fn injector_len(&self) -> usize {
        self.injector.len()
    }

    /// Number of gs in P `p`'s run queue, not counting its runnext slot, for dumps and tests.
    /// From a thread that does not hold P `p` the count is a snapshot.
    ///
    /// # Panics
    ///
    /// Panics before [`Scheduler::start`] and when `p` is out of range.
    pub fn run_queue_len(&self, p: PId) -> usize {
        self.proc(p, "WorkStealing::run_queue_len").queue.len()
    }

    /// The per-P state of `p`, for the hook named `hook`.
    fn proc(&self, p: PId, hook: &'static str) -> &Proc {
        let Some(ps) = self.ps.get() else {
            not_started(hook)
        };
        match ps.get(p.index()) {
            Some(proc) => proc,
            None => p_out_of_range(hook, p, ps.len()),
        }
    }

    /// Puts `g` in P `p`'s runnext slot and moves the g that was there to the tail of the run
    /// queue.
    fn put_runnext(&self, proc: &Proc, g: GRef) {
        // Relaxed: only an owner stores a g here (this thread, or an earlier owner ordered by
        // the P's handoff). So a null read is current, and the swap below copes with a stale g.
        if proc.runnext.load(Ordering::Relaxed).is_null() {
            // Release: pairs with the Acquire swap in `Proc::take_runnext`, which publishes
            // the g's header to the thread that takes it.
            proc.runnext.store(g.as_ptr(), Ordering::Release);
            return;
        }
        let _transfer = self.transfers.begin();
        // Release: as above, and it also orders the transfer count before the removal of
        // the old g for `has_work`. The old g was stored by an owner, so it needs no Acquire.
        let old = proc.runnext.swap(g.as_ptr(), Ordering::Release);
        if let Some(old) = runnext_ref(old) {
            // SAFETY: the caller holds the P's owner guard.
            unsafe { proc.queue.push_back(old, &self.injector) };
        }
    }

    /// Takes the next g from P `p`'s runnext slot or run queue, applying the streak rule.
    #[inline]
    fn next_local(&self, proc: &Proc) -> Option<GRef> {
        let streak = proc.runnext_streak.load(Ordering::Relaxed);
        if streak >= Self::MAX_RUNNEXT_STREAK {
            // SAFETY: the caller holds the P's owner guard.
            if let Some(g) = unsafe { proc.queue.pop() } {
                proc.runnext_streak.store(0, Ordering::Relaxed);
                return Some(g);
            }
        }
        if let Some(g) = proc.take_runnext() {
            proc.runnext_streak
                .store(streak.saturating_add(1), Ordering::Relaxed);
            return Some(g);
        }
        // SAFETY: the caller holds the P's owner guard.
        let g = unsafe { proc.queue.pop() };
        if g.is_some() {
            proc.runnext_streak.store(0, Ordering::Relaxed);
        }
        g
    }

    /// Takes a batch from the injector: returns its first g and pushes the rest to the tail of
    /// P `p`'s run queue, which the caller found empty.
    fn next_from_injector(&self, proc: &Proc, procs: usize) -> Option<GRef> {
        if self.injector.is_empty() {
            return None;
        }
        let _transfer = self.transfers.begin();
        let mut rest = GQueue::new();
        let first = {
            let mut injector = self.injector.lock();
            let len = injector.len();
            let count = len.min(len / procs + 1).min(RunQueue::CAPACITY / 2);
            let first = injector.pop_front()?;
            for _ in 1..count {
                match injector.pop_front() {
                    Some(g) => rest.push_back(g),
                    None => break,
                }
            }
            first
        };
        // The lock is released before pushing: a push that overflowed would take it again.
        while let Some(g) = rest.pop_front() {
            // SAFETY: the caller holds the P's owner guard.
            unsafe { proc.queue.push_back(g, &self.injector) };
        }
        Some(first)
    }

    /// The body of `next`, for the owner of P `p`: searches in the order that the type's
    /// documentation lists. The local picks are inlined into the hooks, and the rest of the
    /// search is out of line.
    #[inline]
    fn next_owned(&self, p: PId, owner: &OwnerGuard<'_>) -> Option<GRef> {
        let proc = owner.proc;
        let left = proc.ticks_to_injector.load(Ordering::Relaxed);
        let injector_first = left == 0;
        let left = if injector_first {
            Self::INJECTOR_CHECK_INTERVAL - 1
        } else {
            left - 1
        };
        proc.ticks_to_injector.store(left, Ordering::Relaxed);
        if !injector_first && let Some(g) = self.next_local(proc) {
            return Some(g);
        }
        self.next_elsewhere(p, proc, injector_first)
    }

    /// Continues the search of `next_owned` after the local picks, or starts it when
    /// `injector_first` is set.
    #[inline(never)]
    fn next_elsewhere(&self, p: PId, proc: &Proc, injector_first: bool) -> Option<GRef> {
        if injector_first {
            if let Some(g) = self.injector.pop() {
                return Some(g);
            }
            if let Some(g) = self.next_local(proc) {
                return Some(g);
            }
        }
        let ps = self.ps.get().expect("`proc` checked that start ran");
        if let Some(g) = self.next_from_injector(proc, ps.len()) {
            return Some(g);
        }
        self.steal(p, proc, ps)
    }

    /// Steals for P `p`: half of another P's run queue, or as a last resort a runnext g.
    fn steal(&self, p: PId, proc: &Proc, ps: &[CachePadded<Proc>]) -> Option<GRef> {
        if ps.len() < 2 {
            return None;
        }
        let start = proc.next_random() as usize % ps.len();
        for victim in victims(ps, p, start) {
            if victim.queue.is_empty() {
                continue;
            }
            let _transfer = self.transfers.begin();
            // SAFETY: the caller holds P `p`'s owner guard, and the victim is another P.
            if let Some(g) = unsafe { victim.queue.steal_into(&proc.queue) } {
                return Some(g);
            }
        }
        // NOTE: Go waits about 3 µs before it takes the runnext g of a running P, whose owner
        // is likely to run it soon. This scheduler cannot tell whether a victim's M is running
        // and takes the g at once.
        victims(ps, p, start).find_map(Proc::take_runnext)
    }
}

// The panics of the hooks' checks are out of line, so that the hot paths pass the hook name
// only on the failing branch.

#[cold]
#[inline(never)]
fn not_started(hook: &'static str) -> ! {
    panic!(
        "{hook}: the scheduler has no Ps yet; the runtime must call Scheduler::start(procs) \
         before any other hook"
    );
}

#[cold]
#[inline(never)]
fn p_out_of_range(hook: &'static str, p: PId, procs: usize) -> ! {
    panic!("{hook}: P {p:?} is out of range; start was called with {procs} Ps");
}

#[cold]
#[inline(never)]
#[cfg(debug_assertions)]
fn p_in_use(hook: &'static str, p: PId) -> ! {
    panic!(
        "{hook}: P {p:?} is in use by another thread; pass Some(p) to ready, and call next \
         and on_release_p, only from the thread that holds P {p:?}"
    );
}

/// Returns every P but `p` once, starting at index `start` and wrapping around.
fn victims(ps: &[CachePadded<Proc>], p: PId, start: usize) -> impl Iterator<Item = &Proc> {
    (0..ps.len())
        .map(move |offset| (start + offset) % ps.len())
        .filter(move |&index| index != p.index())
        .map(move |index| &*ps[index])
}

impl Default for WorkStealing {
    fn default() -> Self {
        WorkStealing::new()
    }
}

impl fmt::Debug for WorkStealing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let queued: Vec<usize> = self
            .ps
            .get()
            .map(|ps| ps.iter().map(|proc| proc.queue.len()).collect())
            .unwrap_or_default();
        f.debug_struct("WorkStealing")
            .field("procs", &self.procs())
            .field("injector", &self.injector.len())
            .field("run_queues", &queued)
            .finish_non_exhaustive()
    }
}

// SAFETY: `ready` puts a g in one place, and a move takes it out before it puts it elsewhere.
// `next` takes a g out of one place: a runnext slot by a swap, a run queue position by a CAS
// on the queue's head, or the injector under its lock. So `next` returns each g at most once
// per `ready`, and only gs that were passed to `ready`.
unsafe impl Scheduler for WorkStealing {
    // Neither syscall hook is overridden: skip both calls.
    const SYSCALL_HOOKS: bool = false;

    fn name(&self) -> &'static str {
        "steal"
    }

    /// Creates the per-P state.
    ///
    /// # Panics
    ///
    /// Panics when `procs` is 0, or when called again with a different number of Ps.
    unsafe fn start(&self, procs: usize) {
        assert!(
            procs > 0,
            "WorkStealing::start: procs is 0; a runtime needs at least one P"
        );
        let ps = self.ps.get_or_init(|| {
            (0..procs)
                .map(|index| CachePadded::new(Proc::new(index)))
                .collect()
        });
        assert!(
            ps.len() == procs,
            "WorkStealing::start: called with {procs} Ps after {} Ps; a WorkStealing \
             scheduler serves one runtime, so create one per runtime",
            ps.len()
        );
    }

    /// Queues `g` in the place that the type's documentation lists for `cause` and `p`.
    ///
    /// # Panics
    ///
    /// With `p = Some(p)`: panics before `start`, when `p` is out of range, and in debug
    /// builds when another thread is using P `p` at the same time.
    fn ready(&self, g: GRef, cause: ReadyCause, p: Option<PId>) {
        let Some(p) = p else {
            self.injector.push(g);
            return;
        };
        let proc = self.proc(p, "WorkStealing::ready");
        let _owner = proc.claim(p, "WorkStealing::ready");
        match cause {
            ReadyCause::Spawn | ReadyCause::Wake => self.put_runnext(proc, g),
            // SAFETY: `_owner` makes this thread the P's only owner.
            ReadyCause::Yield | ReadyCause::SyscallExit => unsafe {
                proc.queue.push_back(g, &self.injector)
            },
        }
    }

    /// Returns the next g for P `p`, searching in the order that the type's documentation
    /// lists.
    ///
    /// # Panics
    ///
    /// Panics before `start`, when `p` is out of range, and in debug builds when another
    /// thread is using P `p` at the same time.
    fn next(&self, p: PId) -> Option<GRef> {
        let proc = self.proc(p, "WorkStealing::next");
        let owner = proc.claim(p, "WorkStealing::next");
        self.next_owned(p, &owner)
    }

    /// Queues `g` at the tail of P `p`'s run queue, as `ready` does for a yield, and returns
    /// the next g for P `p`, in one owner operation on the P.
    ///
    /// When the pick is the head of the run queue, the head leaves before `g` joins, so a
    /// full run queue overflows nothing into the injector here.
    ///
    /// # Panics
    ///
    /// As `next`.
    fn on_yield_next(&self, g: GRef, p: PId) -> Option<GRef> {
        // NOTE: on a 2-vCPU Intel Xeon VM a yield costs about 18 ns with this scheduler and
        // 10 ns with Fifo (medians of 7 interleaved `goro-bench yield` runs). Skipping the P
        // claim's locked exchange in release builds saved about 4.5 ns of it. The remaining
        // locked instruction is the pop's CAS on the run queue's head, which a thief may race
        // for the same g.
        let proc = self.proc(p, "WorkStealing::on_yield_next");
        let owner = proc.claim(p, "WorkStealing::on_yield_next");
        // Fast path: no injector check is due and the runnext slot is empty, so the pick is the
        // head of the run queue once `g` is at its tail. Taking the head first gives the same
        // result, and when the queue is empty the pick is `g` itself.
        // Relaxed: only this owner writes the countdown.
        let left = proc.ticks_to_injector.load(Ordering::Relaxed);
        // Relaxed: as in `put_runnext`, a null read is current.
        if left != 0 && proc.runnext.load(Ordering::Relaxed).is_null() {
            proc.ticks_to_injector.store(left - 1, Ordering::Relaxed);
            // The pick comes from the run queue, which ends a runnext streak.
            proc.runnext_streak.store(0, Ordering::Relaxed);
            // SAFETY: `owner` makes this thread the P's only owner.
            let Some(next) = (unsafe { proc.queue.pop() }) else {
                return Some(g);
            };
            // SAFETY: as above.
            unsafe { proc.queue.push_back(g, &self.injector) };
            return Some(next);
        }
        // SAFETY: `owner` makes this thread the P's only owner.
        unsafe { proc.queue.push_back(g, &self.injector) };
        self.next_owned(p, &owner)
    }

    fn local_len(&self, p: PId) -> Option<usize> {
        let proc = self.ps.get()?.get(p.index())?;
        // Relaxed: a diagnostic snapshot; the slot may change right after.
        let runnext = !proc.runnext.load(Ordering::Relaxed).is_null();
        Some(proc.queue.len() + usize::from(runnext))
    }

    fn has_work(&self) -> bool {
        // Acquire: pairs with the Release increment that ends each transfer, so the gs of
        // every transfer counted here are in their destination for the scan below.
        let finished = self.transfers.finished.load(Ordering::Acquire);
        let ps: &[CachePadded<Proc>] = self.ps.get().map_or(&[], |ps| ps);
        for proc in ps {
            // Acquire: pairs with the Release store or swap that filled or emptied the slot
            // (see `Transfers` for why emptying matters).
            let runnext = proc.runnext.load(Ordering::Acquire);
            if !runnext.is_null() || !proc.queue.is_empty() {
                return true;
            }
        }
        if !self.injector.is_empty() {
            return true;
        }
        // Relaxed: if the scan saw a g leave its place, it did so with an Acquire load of a
        // Release write that follows the transfer's `begin`. So this load reads that begin's
        // increment or a later value.
        let started = self.transfers.started.load(Ordering::Relaxed);
        started != finished
    }

    /// Moves the g in P `p`'s runnext slot to the tail of its run queue, where other Ps can
    /// steal it. The run queue itself stays with the P.
    ///
    /// # Panics
    ///
    /// Panics before `start`, when `p` is out of range, and in debug builds when another
    /// thread is using P `p` at the same time.
    fn on_release_p(&self, p: PId) {
        let proc = self.proc(p, "WorkStealing::on_release_p");
        let _owner = proc.claim(p, "WorkStealing::on_release_p");
        // Relaxed: as in `put_runnext`, a null read is current.
        if proc.runnext.load(Ordering::Relaxed).is_null() {
            return;
        }
        let _transfer = self.transfers.begin();
        // Release: orders the transfer count before the removal, for `has_work`. The g was
        // stored by an owner, so it needs no Acquire.
        let g = proc.runnext.swap(ptr::null_mut(), Ordering::Release);
        if let Some(g) = runnext_ref(g) {
            // SAFETY: `_owner` makes this thread the P's only owner.
            unsafe { proc.queue.push_back(g, &self.injector) };
        }
        proc.runnext_streak.store(0, Ordering::Relaxed);
    }
}

impl Proc {
    fn new(index: usize) -> Proc {
        // Any non-zero seed works for xorshift. Spreading the indexes keeps the first victims
        // of neighbouring Ps apart.
        let seed = (index as u32).wrapping_add(1).wrapping_mul(0x9e37_79b9) | 1;
        Proc {
            runnext: AtomicPtr::new(ptr::null_mut()),
            queue: RunQueue::new(),
            #[cfg(debug_assertions)]
            busy: AtomicBool::new(false),
            ticks_to_injector: std::sync::atomic::AtomicU32::new(
                WorkStealing::INJECTOR_CHECK_INTERVAL - 1,
            ),
            runnext_streak: std::sync::atomic::AtomicU32::new(0),
            random: std::sync::atomic::AtomicU32::new(seed),
        }
    }

    /// Marks this thread as the P's owner until the guard drops.
    ///
    /// Ownership needs no synchronization here: the terms of `Scheduler::start` have the
    /// caller hold the P, and the runtime's handoff of a P orders one holder's writes before
    /// the next holder's reads. Debug builds check the first half with an exchange. Release
    /// builds skip it, because a locked exchange costs about 5 ns of a 35 ns yield on an
    /// Intel Xeon.
    ///
    /// # Panics
    ///
    /// In debug builds, panics when another thread is in an owner operation on the P: the
    /// runtime passed a P that the calling thread does not hold.
    #[inline(always)]
    fn claim(&self, p: PId, hook: &'static str) -> OwnerGuard<'_> {
        // Acquire: pairs with the Release store in `OwnerGuard::drop`, as a lock's would.
        #[cfg(debug_assertions)]
        if self.busy.swap(true, Ordering::Acquire) {
            p_in_use(hook, p);
        }
        #[cfg(not(debug_assertions))]
        let _ = (p, hook);
        OwnerGuard { proc: self }
    }

    /// Takes the g in the runnext slot, if any. Any thread may call it.
    fn take_runnext(&self) -> Option<GRef> {
        // Relaxed: a cheap check that saves the swap when the slot looks empty. A stale read
        // only makes a stealer skip a g that appeared just now, as if it came later.
        if self.runnext.load(Ordering::Relaxed).is_null() {
            return None;
        }
        // Acquire: pairs with the Release store or swap in `put_runnext`, so the g's header
        // writes made before it was readied are visible to the M that runs it.
        runnext_ref(self.runnext.swap(ptr::null_mut(), Ordering::Acquire))
    }

    /// Returns the next xorshift32 value.
    fn next_random(&self) -> u32 {
        let mut x = self.random.load(Ordering::Relaxed);
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.random.store(x, Ordering::Relaxed);
        x
    }
}

/// Proof that the current thread is the only owner of a P. Dropping it ends the ownership.
struct OwnerGuard<'a> {
    proc: &'a Proc,
}

impl Drop for OwnerGuard<'_> {
    #[inline(always)]
    fn drop(&mut self) {
        // Release: pairs with the Acquire swap in `Proc::claim` of the next owner.
        #[cfg(debug_assertions)]
        self.proc.busy.store(false, Ordering::Release);
    }
}

/// Counts of the moves of gs from one place to another, for `has_work` (see "No lost wakeup"
/// on [`WorkStealing`]). A move begins before the g leaves its source and ends after it is in
/// its destination.
struct Transfers {
    started: AtomicUsize,
    finished: AtomicUsize,
}

impl Transfers {
    fn new() -> Transfers {
        Transfers {
            started: AtomicUsize::new(0),
            finished: AtomicUsize::new(0),
        }
    }

    /// Counts a move as started; dropping the guard counts it as finished.
    #[must_use = "dropping the guard at once ends the transfer before it began"]
    fn begin(&self) -> TransferGuard<'_> {
        // Relaxed: the removal that follows is a Release write, and `has_work` reaches this
        // increment through it (see `has_work`).
        self.started.fetch_add(1, Ordering::Relaxed);
        TransferGuard { transfers: self }
    }
}

struct TransferGuard<'a> {
    transfers: &'a Transfers,
}

impl Drop for TransferGuard<'_> {
    fn drop(&mut self) {
        // Release: pairs with the Acquire load at the start of `has_work`, so a scan that
        // counts this transfer as finished finds its gs in their destination.
        self.transfers.finished.fetch_add(1, Ordering::Release);
    }
}

/// Turns a pointer taken from a runnext slot back into a GRef.
fn runnext_ref(g: *mut GHeader) -> Option<GRef> {
    // SAFETY: a runnext slot holds only null or the pointer of a GRef passed to `ready`, whose
    // header stays alive while the g is queued (GRef's contract).
    NonNull::new(g).map(|g| unsafe { GRef::from_raw(g) })
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[cfg(debug_assertions)]
    fn header(goid: u64) -> Box<GHeader> {
        Box::new(GHeader::with_goid(goid))
    }

    #[cfg(debug_assertions)]
    fn gref(header: &GHeader) -> GRef {
        // SAFETY: the boxes outlive every use of the refs in these tests.
        unsafe { GRef::from_raw(NonNull::from(header)) }
    }

    /// Starts `scheduler` with `procs` Ps.
    fn start(scheduler: &WorkStealing, procs: usize) {
        // SAFETY: each test is its scheduler's only user and calls the hooks of every P on
        // its own thread.
        unsafe { scheduler.start(procs) };
    }

    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "WorkStealing::ready: P p1 is in use by another thread")]
    fn ready_rejects_a_busy_p() {
        let scheduler = WorkStealing::new();
        start(&scheduler, 2);
        let g = header(1);
        let proc = scheduler.proc(PId(1), "test");
        let _other_thread = proc.claim(PId(1), "test");
        scheduler.ready(gref(&g), ReadyCause::Yield, Some(PId(1)));
    }

    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "WorkStealing::next: P p0 is in use by another thread")]
    fn next_rejects_a_busy_p() {
        let scheduler = WorkStealing::new();
        start(&scheduler, 1);
        let proc = scheduler.proc(PId(0), "test");
        let _other_thread = proc.claim(PId(0), "test");
        scheduler.next(PId(0));
    }

    #[test]
    #[cfg(debug_assertions)]
    fn owner_guard_releases_the_p() {
        let scheduler = WorkStealing::new();
        start(&scheduler, 1);
        let g = header(1);
        scheduler.ready(gref(&g), ReadyCause::Wake, Some(PId(0)));
        scheduler.on_release_p(PId(0));
        let taken = scheduler.next(PId(0)).map(|g| g.header().goid());
        assert_eq!(taken, Some(1));
        assert!(!scheduler.proc(PId(0), "test").busy.load(Ordering::Relaxed));
    }

    #[test]
    fn has_work_counts_a_running_transfer() {
        let scheduler = WorkStealing::new();
        start(&scheduler, 1);
        assert!(!scheduler.has_work());
        let transfer = scheduler.transfers.begin();
        assert!(scheduler.has_work());
        drop(transfer);
        assert!(!scheduler.has_work());
    }

    #[test]
    fn random_victims_cover_every_p() {
        let proc = Proc::new(3);
        let mut seen = [false; 5];
        for _ in 0..1000 {
            seen[proc.next_random() as usize % 5] = true;
        }
        assert_eq!(seen, [true; 5]);
    }
}
