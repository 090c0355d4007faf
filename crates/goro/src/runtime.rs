//! The runtime: its Ps, idle lists, M start-up and shutdown, and spawning.

use std::fmt;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering, fence};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle as ThreadHandle;

use crossbeam_utils::CachePadded;
use goro_abi::{CustomG, GRef, PId, ReadyCause};
use goro_sched::SchedHandle;
use goro_stack::{PoolConfig, StackError, StackPool};
use goro_syscall::{MId, MonitorConfig, POwner, PState};

use crate::builder::{BuildError, Builder};
use crate::join::{JoinCell, JoinError, JoinHandle};
use crate::m::{self, HookGuard, M, Standby, current_m};
use crate::stats::Stats;
use crate::task::{DefaultG, Record};
use crate::trace::{self, Event};

/// Process-wide goroutine ids, so that ids stay unique across runtimes.
static NEXT_GOID: AtomicU64 = AtomicU64::new(1);

/// A P: the token an M must hold to run goroutines.
pub(crate) struct P {
    /// Who owns the P; see `goro_syscall::PState`.
    pub(crate) state: PState,
    /// Bumped by the owning M at every entersyscall; the monitor compares two readings to see
    /// whether the same syscall is still going. Relaxed: a heuristic, validated by the CAS on
    /// `state` that actually retakes the P.
    pub(crate) syscalltick: AtomicU32,
}

/// State shared by the Ms, the monitor and the handles of one runtime.
pub(crate) struct Shared {
    pub(crate) ps: Box<[P]>,
    /// The default scheduler first, then the added ones.
    pub(crate) schedulers: Box<[SchedHandle]>,
    pub(crate) pool: StackPool,
    /// Whether stacks come from slabs and need their canary checked at every switch.
    pub(crate) slab_stacks: bool,
    pub(crate) max_threads: usize,
    pub(crate) monitor_config: MonitorConfig,
    /// Idle Ps. `npidle` mirrors its length for lock-free checks.
    idle_ps: Mutex<Vec<PId>>,
    // The counters that several Ms write sit on cache lines of their own, so that their writes
    // do not evict the read-mostly fields that every spawn and switch reads. Padding also
    // aligns `Shared` to a line, which keeps the `Arc`'s reference count (changed at every
    // spawn and exit) off the fields' lines.
    npidle: CachePadded<AtomicUsize>,
    /// Ms looking for work while holding a P (Go's `nmspinning`).
    nmspinning: CachePadded<AtomicUsize>,
    /// Idle Ms, parked on their notes; `None` once the runtime has shut down.
    idle_ms: Mutex<Option<Vec<Arc<M>>>>,
    /// Every M ever started, for statistics.
    all_ms: Mutex<Vec<Arc<M>>>,
    threads: Mutex<Vec<ThreadHandle<()>>>,
    next_mid: AtomicU32,
    shutdown: AtomicBool,
    pub(crate) monitor: crate::monitor::MonitorHandle,
    live_goroutines: CachePadded<AtomicU64>,
    peak_live_goroutines: CachePadded<AtomicU64>,
    pub(crate) retakes: AtomicU64,
    pub(crate) handoffs: AtomicU64,
    thread_limit_reported: AtomicBool,
    /// Pending timers, fired by the monitor.
    pub(crate) timers: crate::timer::Timers,
    /// Goroutines parked (status Waiting), for deadlock detection.
    pub(crate) nwaiting: CachePadded<AtomicU64>,
    /// Goroutines pinned to an M (see `Record::pinned_m`) that no M has taken back from their
    /// schedulers yet. While it is 0, an M that takes a g skips reading the g's pin.
    /// Relaxed: a pin is counted before its g is queued, and the queue orders the increment
    /// before the load of the M that takes the g.
    pub(crate) pinned_gs: AtomicUsize,
    /// Ms pinned to an unwinding g that no M has handed back yet. `startm` wakes one with a P
    /// when it cannot start an M.
    pinned_ms: Mutex<Vec<PinnedM>>,
    /// Goroutines in `join` on a goroutine of another runtime. That runtime wakes them, so
    /// this one reports no deadlock while any wait.
    foreign_joins: AtomicU64,
    deadlock_detection: bool,
    /// Whether spawns yield now and then (`Builder::spawn_yields`).
    spawn_yields: bool,
    /// Set when the runtime starts dropping: goroutines that park or yield unwind.
    cancelling: AtomicBool,
    /// Set when a deadlock was reported and nothing has run since, so that it is reported once.
    deadlock_reported: AtomicBool,
    /// The goids of the last deadlock report printed, sorted.
    last_deadlock_report: Mutex<Vec<u64>>,
    /// Threads that run no goroutine, and goroutines of other runtimes, that wait in `join`
    /// for a goroutine of this runtime. They are woken at a deadlock or shutdown.
    external_waiters: Mutex<Vec<crate::waiter::Waiter>>,
}

/// An M on the list of pinned Ms, with the g pinned to it.
struct PinnedM {
    m: NonNull<M>,
    g: GRef,
}

// SAFETY: an M is Sync, and the list only hands the pointers to threads of the M's runtime,
// which touch the g only through its atomic pin word while the M is listed.
unsafe impl Send for PinnedM {}

/// The maximum part of the grace period that a stand-by M polls instead of sleeping.
const STANDBY_POLL: std::time::Duration = std::time::Duration::from_micros(100);

/// The next step of an M that has just put itself on the idle list (see
/// `Shared::recheck_after_idling`).
pub(crate) enum IdleRecheck {
    /// Run the P, acquired for the M, which is off the idle list.
    Run(PId),
    /// Sleep until another thread wakes it: the M is on the idle list, or that thread took
    /// it off to wake it.
    Sleep,
    /// Go back on the idle list and recheck: the M is off the list, and another thread took
    /// the idle P first.
    Retry,
}

/// The result of a stand-by M's attempt to retake a P.
pub(crate) enum StandbyOutcome {
    /// The M retook the P, now in `Transit`, and runs it.
    Retook(PId),
    /// The M is idle again: on the idle list, or taken off it by an M that has woken it or is
    /// about to.
    Idle,
    /// The runtime is shutting down: the M exits.
    Shutdown,
}

impl Shared {
    #[inline]
    pub(crate) fn is_shutdown(&self) -> bool {
        // Acquire: pairs with the Release store in `Runtime::drop`.
        self.shutdown.load(Ordering::Acquire)
    }

    /// Returns whether any scheduler of the runtime has a queued g.
    pub(crate) fn has_work(&self) -> bool {
        let guard = HookGuard::new("has_work");
        let has_work = self.schedulers.iter().any(SchedHandle::has_work);
        guard.disarm();
        has_work
    }

    /// Calls every scheduler's `on_release_p` before P `p` leaves its M.
    pub(crate) fn release_p_hooks(&self, p: PId) {
        let guard = HookGuard::new("on_release_p");
        for scheduler in self.schedulers.iter() {
            // SAFETY: the caller is this runtime's M that gives P `p` away.
            unsafe { scheduler.on_release_p(p) };
        }
        guard.disarm();
    }

    fn pidleput(&self, p: PId) {
        let mut idle = self.idle_ps.lock().unwrap_or_else(|e| e.into_inner());
        idle.push(p);
        // SeqCst: the store side of the idle/enqueue handshake. An M going idle publishes
        // its P here and then rechecks the queues; an enqueuer publishes its g and then reads
        // `npidle` (in `wakep`). The SeqCst fences on both sides order each store before the
        // other side's load, so at least one of them sees the other.
        self.npidle.store(idle.len(), Ordering::SeqCst);
    }

    /// Takes an idle P, preferring `preferred`.
    fn pidleget(&self, preferred: Option<PId>) -> Option<PId> {
        let mut idle = self.idle_ps.lock().unwrap_or_else(|e| e.into_inner());
        let index = match preferred.and_then(|p| idle.iter().position(|&q| q == p)) {
            Some(index) => index,
            None => idle.len().checked_sub(1)?,
        };
        let p = idle.swap_remove(index);
        self.npidle.store(idle.len(), Ordering::SeqCst);
        Some(p)
    }

    /// Takes an idle P for M `m` itself (exitsyscall's slow path, or an M that found work
    /// after going idle).
    pub(crate) fn acquire_idle_p(&self, m: &M, preferred: Option<PId>) -> Option<PId> {
        let p = self.pidleget(preferred)?;
        if let Err(owner) = self.ps[p.index()].state.acquire(m.id) {
            panic!("acquire_idle_p: P {p:?} on the idle list is owned by {owner:?}");
        }
        trace::emit(|| Event::PStart { p: p.0 });
        Some(p)
    }

    /// Wakes an idle M with an idle P to look for work, unless an M is already spinning (it
    /// will find the work) or no P is idle (every P is busy and will get to it). Called after
    /// every ready, and by a spinning M that found work, so that wakeups chain while work is
    /// left (Go's `wakep`).
    pub(crate) fn wakep(&self) {
        // SeqCst fence: the load side of the handshake described in `pidleput`; the g just
        // queued is ordered before these reads of `npidle` and `nmspinning`.
        fence(Ordering::SeqCst);
        if self.npidle.load(Ordering::Relaxed) == 0 {
            // The g waits for a busy P, or for one the monitor retakes from a syscall. The
            // fence above orders its queueing before the hint, as the hint requires.
            self.monitor.note_work_waiting();
            return;
        }
        if self.nmspinning.load(Ordering::Relaxed) != 0 {
            return;
        }
        // Only one waker starts a spinning M; the CAS also orders this against an M that
        // stops spinning (its decrement is SeqCst).
        if self
            .nmspinning
            .compare_exchange(0, 1, Ordering::SeqCst, Ordering::Relaxed)
            .is_err()
        {
            return;
        }
        let Some(p) = self.pidleget(None) else {
            self.nmspinning.fetch_sub(1, Ordering::SeqCst);
            return;
        };
        if let Err(owner) = self.ps[p.index()].state.reserve() {
            panic!("wakep: P {p:?} on the idle list is owned by {owner:?}");
        }
        self.startm(p, true);
    }

    /// Returns whether another M may start spinning: Go's rule keeps spinning Ms at most half
    /// of the busy Ps, so that idle Ms do not burn more CPU than the work they look for.
    pub(crate) fn may_spin(&self) -> bool {
        let busy = self.ps.len() - self.npidle.load(Ordering::Relaxed).min(self.ps.len());
        2 * self.nmspinning.load(Ordering::Relaxed) < busy
    }

    /// Counts M `m` as spinning.
    pub(crate) fn start_spinning(&self, m: &M) {
        m.set_spinning(true);
        self.nmspinning.fetch_add(1, Ordering::SeqCst);
    }

    /// M `m` stops spinning without work. Returns the number of Ms still spinning.
    pub(crate) fn stop_spinning(&self, m: &M) -> usize {
        m.set_spinning(false);
        // SeqCst: pairs with the SeqCst fence in `wakep`; a waker that read a non-zero count
        // before this decrement left the work for us, and we recheck the queues after it.
        self.nmspinning.fetch_sub(1, Ordering::SeqCst) - 1
    }

    /// A spinning M found work: it stops spinning and, if it was the last spinner, wakes
    /// another M in case more work is queued (the chain that gets every P busy).
    pub(crate) fn found_work_while_spinning(&self, m: &M) {
        if self.stop_spinning(m) == 0 {
            self.wakep();
        }
    }

    /// Runs P `p`, in transit, on an idle M or a new one; `spinning` when the M was counted
    /// in `nmspinning` by the caller.
    pub(crate) fn startm(&self, p: PId, spinning: bool) {
        let idle_m = self
            .idle_ms
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_mut()
            .and_then(Vec::pop);
        if let Some(m) = idle_m {
            m.wake(Some(p), spinning);
            return;
        }
        if let Err(error) = self.spawn_m(Some(p), spinning) {
            // An M pinned to an unwinding g gives up its pin to run the P (see
            // `m::stop_pinned`): the g may then finish its unwind on another thread, but no
            // work waits for a thread that the limit forbids. After the shutdown no M runs
            // goroutines any more, so none is unpinned.
            if !matches!(error, SpawnError::Shutdown)
                && let Some(pinned) = self.unpin_a_pinned_m()
            {
                pinned.wake(Some(p), spinning);
                return;
            }
            // No M for the P: it goes back to the idle list, and the Ms already running pick
            // up the work when they next look. At the thread limit with no M in a syscall,
            // which is common with `max_threads` equal to `procs`, that is all that happens,
            // so only a limit reached through syscalls is reported.
            let report = match error {
                SpawnError::Shutdown => false,
                SpawnError::ThreadLimit { .. } => self.any_m_in_syscall(),
                _ => true,
            };
            if report && !self.thread_limit_reported.swap(true, Ordering::Relaxed) {
                eprintln!("goro: could not start an M: {error}; continuing with the running Ms");
            }
            if spinning {
                self.nmspinning.fetch_sub(1, Ordering::SeqCst);
            }
            self.ps[p.index()].state.transit_to_idle();
            self.pidleput(p);
            // An M that went idle after the idle list was read above has already looked
            // for work, so it would sleep next to the idle P. Recheck after publishing the
            // P: `stopm` rechecks after publishing the M, and the SeqCst fences on both
            // sides make at least one of the two see the other.
            fence(Ordering::SeqCst);
            if self.has_idle_m() && self.has_work() {
                self.wakep();
            }
        }
    }

    /// Returns whether an M is on the idle list.
    fn has_idle_m(&self) -> bool {
        let idle = self.idle_ms.lock().unwrap_or_else(|e| e.into_inner());
        idle.as_ref().is_some_and(|list| !list.is_empty())
    }

    /// Lists M `m` as pinned to the unwinding g `g` (see `m::pin_if_unwinding`).
    pub(crate) fn add_pinned_m(&self, m: &M, g: GRef) {
        self.pinned_ms
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(PinnedM {
                m: NonNull::from(m),
                g,
            });
    }

    /// Takes M `m` off the list of pinned Ms, if it is on it.
    pub(crate) fn remove_pinned_m(&self, m: NonNull<M>) {
        let mut pinned = self.pinned_ms.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(index) = pinned.iter().position(|listed| listed.m == m) {
            pinned.swap_remove(index);
        }
    }

    /// Takes a pinned M off the list and unpins its g, for `startm` to run a P on the M when
    /// it cannot start one. Skips an M whose g was unpinned by the M that took the g from its
    /// scheduler: that M is handing the g back.
    fn unpin_a_pinned_m(&self) -> Option<&M> {
        let mut pinned = self.pinned_ms.lock().unwrap_or_else(|e| e.into_inner());
        // The g stays alive while its M is listed: the M that unpins it with its swap takes
        // this lock, to take the M off the list, before it hands the g back.
        let index = pinned
            .iter()
            .rposition(|listed| crate::m::clear_pin(listed.m, listed.g))?;
        let listed = pinned.swap_remove(index);
        // SAFETY: every M of the runtime stays in `all_ms` until the runtime's threads are
        // joined, and this runtime is alive.
        Some(unsafe { listed.m.as_ref() })
    }

    /// Gives P `p`, in transit from a syscall, to an M if work waits, or to the idle list.
    pub(crate) fn handoffp(&self, p: PId) {
        self.release_p_hooks(p);
        if self.has_work() {
            self.startm(p, false);
            return;
        }
        self.ps[p.index()].state.transit_to_idle();
        self.pidleput(p);
        // Recheck after publishing the idle P, as an idle M does (see `pidleput`).
        fence(Ordering::SeqCst);
        if self.has_work() {
            self.wakep();
        }
    }

    /// Puts the P of an M that found no work on the idle list, rechecks the queues, and takes
    /// a P back if work arrived meanwhile. Otherwise the M stops at the top of its loop.
    pub(crate) fn go_idle(&self, m: &M, p: PId) {
        let was_spinning = m.is_spinning();
        if was_spinning {
            self.stop_spinning(m);
        }
        self.release_p_hooks(p);
        trace::emit(|| Event::PStop { p: p.0 });
        self.ps[p.index()].state.release(m.id);
        m.set_p(None);
        self.pidleput(p);
        fence(Ordering::SeqCst);
        if self.has_work() {
            m.set_p(self.acquire_idle_p(m, Some(p)));
            if was_spinning && m.p().is_some() {
                self.start_spinning(m);
            }
            return;
        }
        self.check_deadlock();
    }

    /// Returns a handle to every live goroutine, sorted by goid, for dumps, deadlock reports
    /// and shutdown. Each handle keeps its g's block alive; the gs may change status meanwhile.
    pub(crate) fn all_goroutines(&self) -> Vec<crate::park::Goroutine> {
        let mut all = Vec::new();
        // Retained inside the walk, which holds the g's shard lock (see `for_each_goroutine`).
        self.for_each_goroutine(|g| {
            // SAFETY: every g the walk visits was spawned by this runtime and has a record.
            let record = unsafe { Record::of(g) };
            all.push(crate::park::Goroutine::from_record(record));
        });
        all.sort_by_key(crate::park::Goroutine::goid);
        all
    }

    /// Unwinds every goroutine that parks or yields from now on, and wakes the parked ones, so
    /// that their destructors run before the runtime stops. Waits while the number of live
    /// goroutines keeps falling; goroutines blocked in a syscall or running without ever
    /// parking are left as they are after 100 ms without progress.
    fn cancel_all(&self) {
        // SeqCst: a goroutine that parks after this store sees it in `is_cancelling`.
        self.cancelling.store(true, Ordering::SeqCst);
        let mut last_live = u64::MAX;
        let mut progress_at = std::time::Instant::now();
        loop {
            let live = self.live_goroutines.load(Ordering::SeqCst);
            if live == 0 {
                return;
            }
            // Only a falling count is progress. Spawns are rejected from now on, but a count
            // that merely changes could come from goroutines that never end.
            if live < last_live {
                last_live = live;
                progress_at = std::time::Instant::now();
            } else if progress_at.elapsed() > std::time::Duration::from_millis(100) {
                return;
            }
            // Cancelled inside the registry walk, which keeps each record alive, and not
            // through `Goroutine` handles. A handle could outlive its goroutine's exit, and the
            // last one would then free the goroutine's block on this thread, which runs no
            // goroutine, and run user drops there.
            self.for_each_goroutine(|g| {
                // SAFETY: every g the walk visits was spawned by this runtime, and its record
                // stays alive while the walk holds the g's shard lock.
                let record = unsafe { Record::of(g).as_ref() };
                crate::park::cancel(record);
            });
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }

    /// Returns whether the runtime is unwinding its goroutines before it stops.
    #[inline]
    pub(crate) fn is_cancelling(&self) -> bool {
        self.cancelling.load(Ordering::SeqCst)
    }

    /// Reports a deadlock when every goroutine is parked and nothing can wake one: all Ps are
    /// idle, no goroutine is in a syscall, no timer is pending (Go's `checkdead`). Wakeups from
    /// threads that run no goroutine are not seen; runtimes that rely on them turn detection off
    /// with `Builder::deadlock_detection(false)`.
    fn check_deadlock(&self) {
        // While the runtime is dropped, it wakes its parked goroutines one by one to unwind
        // them; the ones not woken yet are no deadlock.
        if !self.deadlock_detection || self.is_shutdown() || self.is_cancelling() {
            return;
        }
        if !self.looks_deadlocked() || self.deadlock_reported.swap(true, Ordering::SeqCst) {
            return;
        }
        // The loads above are not one snapshot: a spawn or a wakeup from a thread that runs
        // no goroutine may have come between them and the swap, and its `note_progress` may
        // have run before the swap set the flag again. Checking once more after the swap
        // catches it: such a spawn's SeqCst update of the live count or of the queue either
        // precedes this second check, which then sees it, or follows the swap, and then its
        // `note_progress` clears the flag before its spawner can wait on the flag.
        if !self.looks_deadlocked() {
            self.deadlock_reported.store(false, Ordering::SeqCst);
            return;
        }
        let goroutines = self.all_goroutines();
        // A spawn from a thread that runs no goroutine registers its g before it counts it
        // as live, so the list may hold a g that neither check saw. Every g of a
        // real deadlock is parked, and any other g means that work arrived. Its spawner's
        // `note_progress` may already have run, so the flag is cleared here.
        if goroutines
            .iter()
            .any(|g| g.gref().header().status() != goro_abi::GStatus::Waiting)
        {
            self.deadlock_reported.store(false, Ordering::SeqCst);
            return;
        }
        let goids: Vec<u64> = goroutines
            .iter()
            .map(|g| g.gref().header().goid())
            .collect();
        // The stuck goroutines stay after a report, so every later deadlock includes them.
        // Print only when the set differs from the last one printed; the joiners waiting from
        // threads are woken either way.
        let mut last = self
            .last_deadlock_report
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        // Checked again: a drop that began after the check above may have unwound some of
        // the goroutines before the list was taken.
        if *last != goids && !self.is_cancelling() {
            let mut report = String::from("goro: all goroutines are asleep - deadlock!\n");
            for g in &goroutines {
                let g = g.gref();
                let header = g.header();
                // SAFETY: the list keeps the g alive, and the g's runtime, this one, owns the
                // scheduler that the g links to.
                let scheduler = unsafe { header.sched().name() };
                report.push_str(&format!(
                    "\ngoroutine {} [{}, scheduler {}]",
                    header.goid(),
                    header.wait_reason().name(),
                    scheduler
                ));
            }
            eprintln!("{report}\n");
            *last = goids;
        }
        drop(last);
        self.wake_external_waiters();
    }

    /// Returns whether every goroutine looked parked with nothing to wake it, at the moment
    /// of each load.
    fn looks_deadlocked(&self) -> bool {
        // SeqCst loads, after the SeqCst fence in `go_idle`: each counter is updated with a
        // SeqCst operation before the state it describes can change again.
        // The timers come first: a timer being fired counts as pending until its wakeup has
        // lowered the waiting count, which is read after it.
        if !self.timers.is_empty() {
            return false;
        }
        let live = self.live_goroutines.load(Ordering::SeqCst);
        live != 0
            && self.npidle.load(Ordering::SeqCst) == self.ps.len()
            && !self.any_m_in_syscall()
            && self.nwaiting.load(Ordering::SeqCst) == live
            && self.foreign_joins.load(Ordering::SeqCst) == 0
            && !self.has_work()
    }

    /// Counts a goroutine of this runtime that starts to join a goroutine of another runtime.
    /// Called before the goroutine parks, and paired with [`Shared::end_foreign_join`].
    pub(crate) fn begin_foreign_join(&self) {
        // SeqCst: the increment precedes the park's SeqCst increment of `nwaiting`, so a
        // deadlock check that counts the goroutine as waiting also reads this one.
        self.foreign_joins.fetch_add(1, Ordering::SeqCst);
    }

    /// Ends a wait counted by [`Shared::begin_foreign_join`].
    pub(crate) fn end_foreign_join(&self) {
        self.foreign_joins.fetch_sub(1, Ordering::SeqCst);
    }

    /// Returns whether a goroutine is inside a syscall on any M. Called only with every P idle:
    /// an M sets its flag before its P can be retaken or handed off, and the P's way to the
    /// idle list (Release and Acquire on the P's word, then the SeqCst idle count read by the
    /// caller) orders the flag before this load.
    fn any_m_in_syscall(&self) -> bool {
        let all = self.all_ms.lock().unwrap_or_else(|e| e.into_inner());
        all.iter().any(|m| m.in_syscall.load(Ordering::Acquire))
    }

    /// Notes that a goroutine was readied, so that a later deadlock is reported again.
    pub(crate) fn note_progress(&self) {
        // SeqCst, after the caller's SeqCst update of the live count or of a queue: with the
        // swap and the second check in `check_deadlock` (the other order), either that check
        // sees the caller's work or this load sees the flag. On x86_64 the load is a plain
        // one; the store happens only around deadlock reports.
        if self.deadlock_reported.load(Ordering::SeqCst) {
            self.deadlock_reported.store(false, Ordering::SeqCst);
        }
    }

    /// Returns whether a deadlock was reported and no goroutine was readied since.
    pub(crate) fn is_deadlocked(&self) -> bool {
        // SeqCst: pairs with the store in `check_deadlock`, made before the external waiters
        // are woken; a waiter registered after that wakeup sees the flag at its first check.
        self.deadlock_reported.load(Ordering::SeqCst)
    }

    /// Registers the caller, a thread that runs no goroutine or a goroutine of another
    /// runtime, as waiting in `join` for a goroutine of this runtime.
    pub(crate) fn add_external_waiter(&self) {
        self.external_waiters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(crate::waiter::Waiter::current());
    }

    /// Removes the caller from the waiters of `join`.
    pub(crate) fn remove_external_waiter(&self) {
        let mut waiters = self
            .external_waiters
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(index) = waiters.iter().position(crate::waiter::Waiter::is_current) {
            waiters.swap_remove(index);
        }
    }

    fn wake_external_waiters(&self) {
        // Woken outside the lock: waking a goroutine of another runtime runs that runtime's
        // scheduler hooks.
        let waiters = self
            .external_waiters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for waiter in waiters {
            waiter.wake();
        }
    }

    /// Registers a timer that wakes `waiter` at `deadline`.
    pub(crate) fn add_timer(&self, deadline: std::time::Instant, waiter: crate::waiter::Waiter) {
        let earliest = self.timers.add(deadline, waiter);
        self.monitor.ensure_started(self);
        if earliest {
            self.monitor.kick();
        }
    }

    /// Wakes the idle M that `startm` would pick next to retake P `standby.p` if its
    /// syscall outlasts the grace period (see `retake_on_standby`). Returns `false` when no
    /// idle M could be woken for it.
    pub(crate) fn stand_by_idle_m(&self, standby: Standby) -> bool {
        let idle = self.idle_ms.lock().unwrap_or_else(|e| e.into_inner());
        // `startm` pops from the back.
        idle.as_ref()
            .and_then(|list| list.last())
            .is_some_and(|m| m.stand_by(standby))
    }

    /// Runs on idle M `m`, woken for a syscall made while goroutines wait for a P (at its
    /// entry, or when the monitor first sees it). Once the grace period has passed since `standby.since`, the M retakes the P if the
    /// same syscall still owns it and work still waits, as the monitor would. The M's wakeup
    /// then overlaps the grace period instead of following the retake.
    ///
    /// The retake is the monitor's transition (`Syscall(m) -> Transit` by CAS, which an
    /// `exitsyscall` of the same M may beat), made by another thread. The M leaves the idle
    /// list before it, so that no `startm` hands it a second P.
    pub(crate) fn retake_on_standby(&self, m: &Arc<M>, standby: Standby) -> StandbyOutcome {
        let grace = self.monitor_config.grace;
        // The M was woken at the syscall's entry, so what is left of the grace period (20 us
        // by default) is short: the wakeup itself takes about as long here. It is polled
        // rather than slept, since a sleep would add a timer wakeup. A longer grace period set
        // with `Builder::syscall_grace` is slept, all but its last `STANDBY_POLL`. The sleep
        // ends early when a `startm` hands the M a P (or the runtime shuts down): that P must
        // not wait out the grace period of another P's syscall.
        let left = grace.saturating_sub(standby.since.elapsed());
        if left > STANDBY_POLL && m.standby_sleep_interrupted(left - STANDBY_POLL) {
            // Handed a P, which runs the work that waited: no kick is needed.
            self.monitor.standby_finished(false);
            return StandbyOutcome::Idle;
        }
        // NOTE: this poll does not watch the M's note, so a P that a `startm` hands the M
        // during it waits up to `STANDBY_POLL`.
        while standby.since.elapsed() < grace {
            std::hint::spin_loop();
        }
        let (outcome, syscalls_go_on) = self.try_retake_on_standby(m, standby);
        self.monitor.standby_finished(syscalls_go_on);
        outcome
    }

    /// Runs the part of `retake_on_standby` after the grace period. Also returns whether the
    /// monitor should watch the P's syscalls: the one stood by for returned, or another has
    /// begun.
    fn try_retake_on_standby(&self, m: &Arc<M>, standby: Standby) -> (StandbyOutcome, bool) {
        let ps = &self.ps[standby.p.index()];
        let in_syscall = match ps.state.owner() {
            POwner::Syscall(in_syscall) => in_syscall,
            // The syscall returned, and its M runs the P again.
            POwner::Running(owner) if owner == standby.m => return (StandbyOutcome::Idle, true),
            // The monitor retook the P, or it moved on since.
            _ => return (StandbyOutcome::Idle, false),
        };

        // Relaxed, as the monitor reads it: a stale tick at worst retakes a P from the next
        // syscall of the same M, which the CAS below still makes safe.
        if ps.syscalltick.load(Ordering::Relaxed) != standby.syscalltick {
            return (StandbyOutcome::Idle, true);
        }
        if !self.has_work() {
            return (StandbyOutcome::Idle, false);
        }

        if !self.remove_idle_m(m) {
            // A `startm` took the M off the list and is handing it a P, or the runtime is
            // shutting down and will wake it to exit.
            return (StandbyOutcome::Idle, false);
        }
        if !ps.state.retake(in_syscall) {
            // The syscall returned first.
            let outcome = if self.push_idle_m(m) {
                StandbyOutcome::Idle
            } else {
                StandbyOutcome::Shutdown
            };
            return (outcome, true);
        }

        trace::emit(|| Event::PStop { p: standby.p.0 });
        self.retakes.fetch_add(1, Ordering::Relaxed);
        // As in `handoffp`: work kept privately for the P becomes visible to every M.
        self.release_p_hooks(standby.p);
        (StandbyOutcome::Retook(standby.p), false)
    }

    /// Rechecks for work after M `m` has put itself on the idle list. When work waits next
    /// to an idle P, which a `startm` that could not start an M left there, the M takes
    /// itself off the list and runs the P. When another thread took the M off the list
    /// first, that thread wakes it.
    pub(crate) fn recheck_after_idling(&self, m: &Arc<M>) -> IdleRecheck {
        // SeqCst fence: pairs with the fence in `startm`'s failure path (see there).
        fence(Ordering::SeqCst);
        if self.npidle.load(Ordering::Relaxed) == 0 || !self.has_work() {
            return IdleRecheck::Sleep;
        }
        if !self.remove_idle_m(m) {
            return IdleRecheck::Sleep;
        }
        match self.acquire_idle_p(m, None) {
            Some(p) => IdleRecheck::Run(p),
            None => IdleRecheck::Retry,
        }
    }

    /// Takes M `m` off the idle list. Returns `false` when it is not on it.
    fn remove_idle_m(&self, m: &Arc<M>) -> bool {
        let mut idle = self.idle_ms.lock().unwrap_or_else(|e| e.into_inner());
        let Some(list) = idle.as_mut() else {
            return false;
        };
        match list.iter().position(|idle_m| Arc::ptr_eq(idle_m, m)) {
            Some(index) => {
                list.remove(index);
                true
            }
            None => false,
        }
    }

    /// Parks M `m` on the idle list. Returns `false` when the runtime has shut down.
    pub(crate) fn push_idle_m(&self, m: &Arc<M>) -> bool {
        let mut idle = self.idle_ms.lock().unwrap_or_else(|e| e.into_inner());
        let Some(list) = idle.as_mut() else {
            return false;
        };
        list.push(m.clone());
        true
    }

    /// Gives up the P of an M leaving at shutdown.
    pub(crate) fn release_p_at_exit(&self, m: &M) {
        if let Some(p) = m.p() {
            trace::emit(|| Event::PStop { p: p.0 });
            self.ps[p.index()].state.release(m.id);
            m.set_p(None);
            self.pidleput(p);
        }
    }

    /// Starts a new M, optionally with P `p` in transit.
    fn spawn_m(&self, p: Option<PId>, spinning: bool) -> Result<(), SpawnError> {
        let mut threads = self.threads.lock().unwrap_or_else(|e| e.into_inner());
        // `Runtime::drop` sets the flag before it takes the thread list to join it, under this
        // lock. Checked under the lock, the flag keeps every thread that this function starts
        // in the list that the drop joins. A thread started after the shutdown would only
        // exit again.
        if self.is_shutdown() {
            return Err(SpawnError::Shutdown);
        }
        if threads.len() >= self.max_threads {
            return Err(SpawnError::ThreadLimit {
                max_threads: self.max_threads,
            });
        }
        // A thread started with the mapping table nearly full can fail to map std's signal
        // stack, which aborts the process, so Ms take their entries from the stacks' budget.
        let Some(entries) = goro_stack::ThreadEntries::reserve() else {
            return Err(SpawnError::Thread(std::io::Error::new(
                std::io::ErrorKind::OutOfMemory,
                "the memory mapping table (vm.max_map_count) is nearly full",
            )));
        };
        let id = MId(self.next_mid.fetch_add(1, Ordering::Relaxed));
        let shared = self.arc();
        let m = Arc::new(M::new(id, shared));
        self.all_ms
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(m.clone());
        let thread = std::thread::Builder::new()
            .name(format!("goro-m{}", id.0))
            .spawn(move || {
                m::mstart(m, p, spinning);
                drop(entries);
            });
        match thread {
            Ok(thread) => {
                threads.push(thread);
                Ok(())
            }
            Err(error) => {
                // The M never ran: forget it, or stats would count it as started.
                self.all_ms
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .retain(|m| m.id != id);
                Err(SpawnError::Thread(error))
            }
        }
    }

    /// Returns a new owning reference to this runtime's shared state.
    pub(crate) fn arc(&self) -> Arc<Shared> {
        // SAFETY: every Shared is created in an Arc (`Runtime::start`). A counted reference
        // keeps `self` alive while the caller borrows it: the caller's own (a spawn holds the
        // Runtime it was called on or its M's), or the one of the live goroutines or of a
        // `Goroutine` handle (see `Record::shared`). So the count is at least one as we add
        // one.
        unsafe {
            let ptr = self as *const Shared;
            Arc::increment_strong_count(ptr);
            Arc::from_raw(ptr)
        }
    }

    /// Spawns a goroutine whose block is `g`, linked to `scheduler`.
    pub(crate) fn spawn_g<G, F, T>(
        &self,
        g: G,
        scheduler: &SchedHandle,
        body: F,
    ) -> Result<JoinHandle<T>, SpawnError>
    where
        G: CustomG,
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        // Counted before the cancellation check below. SeqCst: either `cancel_all` reads the
        // count with this spawn in it and waits for the new goroutine, or its store of
        // `cancelling` comes first and the check reads it. Deadlock detection also compares
        // this count with the number of waiting goroutines.
        let live = self.live_goroutines.fetch_add(1, Ordering::SeqCst) + 1;
        if live == 1 {
            self.retain_for_goroutines();
        }
        // Counts the goroutine out again if the spawn returns an error or unwinds before it
        // publishes the goroutine: a spawn that waits for a stack yields, and the yield
        // unwinds when the runtime starts dropping.
        let count = SpawnCount { shared: self };
        // A dropping runtime takes no new goroutines: it is waiting for its goroutines to end.
        // A goroutine that unwinds may still spawn, from its destructors, because they cannot
        // propagate the error and make only a bounded number of spawns.
        if self.is_shutdown() || (self.is_cancelling() && !std::thread::panicking()) {
            return Err(SpawnError::Shutdown);
        }
        if !self.schedulers.iter().any(|s| s.is(scheduler.link())) {
            return Err(SpawnError::UnknownScheduler {
                name: scheduler.name(),
            });
        }
        let (m, stack) = self.stack_for_spawn()?;
        let goid = NEXT_GOID.fetch_add(1, Ordering::Relaxed);
        // SAFETY: `m`, if any, runs this thread (`stack_for_spawn` read it after its last
        // yield), and no `with_blocks` call is running on it.
        let (record, join) = unsafe { Record::allocate(g, body, self, stack, goid, m) };
        // SAFETY: the record was just allocated and is not shared yet.
        let rec = unsafe { record.as_ref() };
        let g = rec.g();
        let header = g.header();
        // SAFETY: the g is Idle and no other thread can reach it yet. The runtime holds
        // `scheduler` (checked above) for as long as it lives, and it outlives every
        // reference to its records (see `Record::shared`), so the scheduler outlives the g's
        // block.
        unsafe { header.set_sched(scheduler.link()) };
        // SAFETY: the stack below the block is ours and unused; g_entry is the runtime's entry
        // trampoline and gets the record, alive until the g exits.
        let sp = unsafe {
            goro_context::init_stack(
                header.stack_lo(),
                header.stack_hi(),
                m::g_entry,
                record.as_ptr() as usize,
            )
        };
        // SAFETY: nobody else sees the g yet.
        unsafe { *header.sched_sp_ptr() = sp };
        crate::dump::register(rec);
        trace::emit(|| Event::GoCreate {
            goid: header.goid(),
        });
        // Relaxed: a statistic. The load spares the read-modify-write below unless the peak
        // grows.
        if live > self.peak_live_goroutines.load(Ordering::Relaxed) {
            self.peak_live_goroutines.fetch_max(live, Ordering::Relaxed);
        }
        // SAFETY: the g is new and unpublished, so this spawn owns it.
        let _ = unsafe { header.ready_new() };
        let guard = HookGuard::new("ready");
        // SAFETY: the g is new, stopped, linked to `scheduler` (a scheduler of this runtime,
        // checked above) and in no queue.
        unsafe { scheduler.ready(g, ReadyCause::Spawn, m.and_then(M::p)) };
        guard.disarm();
        // Published: from here the goroutine's exit counts it out.
        std::mem::forget(count);
        // A spawn is progress: a deadlock reported earlier no longer holds.
        self.note_progress();
        self.wakep();
        // Made before the yield below, which may unwind when the runtime starts dropping, so
        // that the handle's reference is released then.
        let handle = JoinHandle::new(join);
        // A goroutine that spawns in a loop lets its children run every
        // SPAWN_YIELD_INTERVAL spawns. Otherwise only other Ps run them, and when those fall
        // behind, the queued children pile up, each holding a stack that is cold in the cache
        // by the time it runs. Inside a blocking section the goroutine holds no P and cannot
        // yield. Nor does a spawn on g0 (from a drop that the M runs there), in a scheduler
        // hook (during a yield the goroutine is not Running, and `ready` may run on a running
        // waker while it holds its scheduler's lock), or during a panic, whose unwinding must
        // stay on one thread.
        if self.spawn_yields
            && let Some(m) = m
            && m.count_spawn()
            && m.p().is_some()
            && !std::thread::panicking()
            && !m::in_hook()
            && m::current_record().is_some_and(|record| {
                // SAFETY: the running goroutine's record is alive while it runs.
                let record = unsafe { record.as_ref() };
                record.g().header().status() == goro_abi::GStatus::Running
            })
        {
            crate::park::yield_now();
        }
        Ok(handle)
    }

    /// Takes a stack for a new goroutine, and returns it with the calling M when the caller
    /// is a goroutine of this runtime.
    ///
    /// A goroutine that spawns faster than the Ps run its children can fill the kernel's
    /// mapping table (each guarded stack takes two entries of `vm.max_map_count`), most
    /// likely when other processes take the CPUs. Failing that spawn would lose work that
    /// would fit a moment later, so the spawning goroutine yields and tries again while
    /// goroutines finish. It gives up, with the error, after `MAX_STALLS` yields in a row
    /// during which no goroutine finished.
    fn stack_for_spawn(&self) -> Result<(Option<&'static M>, goro_stack::Stack), SpawnError> {
        const MAX_STALLS: u32 = 16;
        let mut stalls = 0;
        // Relaxed: a progress hint; a stale count only costs or saves a retry.
        let mut live_before = self.live_goroutines.load(Ordering::Relaxed);
        loop {
            // Read again after each yield: the goroutine may resume on another M.
            let m = current_m().filter(|m| std::ptr::eq(&*m.shared, self));
            let stack = match m {
                // SAFETY: `m` runs this thread; spawning never happens inside the cache
                // closure.
                Some(m) => unsafe { m.with_stack_cache(|cache| cache.get()) },
                // NOTE: this reaches the shared pool only, not the stacks that Ms keep in
                // their caches, so a spawn from outside can fail while some are free.
                None => self.pool.get(),
            };
            match stack {
                Ok(stack) => return Ok((m, stack)),
                // Only a goroutine that holds a P can yield: one inside a bare
                // entersyscall/exitsyscall pair gets the error.
                Err(error)
                    if m.is_some_and(|m| m.p().is_some())
                        && stalls < MAX_STALLS
                        && error.errno() == Some(libc::ENOMEM) =>
                {
                    // Relaxed: as above.
                    let live = self.live_goroutines.load(Ordering::Relaxed);
                    stalls = if live < live_before { 0 } else { stalls + 1 };
                    live_before = live;
                    crate::park::yield_now();
                }
                Err(error) => return Err(SpawnError::Stack(error)),
            }
        }
    }

    /// Finishes a g that exited, on the g0 of the M that ran it: completes its join, and drops
    /// the g's own reference, which frees its block and stack unless a handle keeps them.
    pub(crate) fn finish(&self, m: &M, g: GRef) {
        // SAFETY: the g was spawned by this runtime and holds its own reference until the end
        // of this function.
        let record = unsafe { Record::of(g) };
        // SAFETY: as above.
        let rec = unsafe { record.as_ref() };
        // Unregistered before the g's own reference is dropped below: registry walks retain
        // the gs they find under the shard lock that `unregister` takes.
        crate::dump::unregister(rec);
        self.count_exit();
        // SAFETY: the g is not finished yet, so its reference keeps the cell alive.
        let join = unsafe { rec.join_cell() };
        // SAFETY: as above.
        let waiter = unsafe { join.as_ref() }.complete();
        if let Some(waiter) = waiter {
            waiter.wake();
        }
        // SAFETY: this is the g's reference to its cell, used no more.
        unsafe { JoinCell::release(join) };
        // SAFETY: this is the g's own reference, used no more; `finish` runs on the g0 of
        // `m`, outside its `with_stack_cache`.
        unsafe { Record::release_at_exit(record, m) };
    }

    /// Takes the counted reference that the live goroutines share, for the first of them.
    /// Called after the count went from 0 to 1, before that goroutine is published. Records
    /// point to their runtime without a count (see `Record::shared`). This reference keeps the
    /// runtime alive while any of its goroutines lives, also after the `Runtime` and its Ms
    /// are gone, as for a goroutine left parked at the shutdown.
    fn retain_for_goroutines(&self) {
        // Given back by `count_exit`.
        std::mem::forget(self.arc());
    }

    /// Counts one goroutine fewer: one that exited, or one whose spawn failed. The last one
    /// drops the reference that `retain_for_goroutines` took.
    ///
    /// The increments and decrements of the shared reference pair up, because the count's
    /// 0-to-1 and 1-to-0 changes alternate. The increment happens before the goroutine that
    /// made the count 1 is published, so before any exit that makes the count 0 again. A spawn
    /// that fails or unwinds after making the count 1 takes the reference, then drops it
    /// itself.
    fn count_exit(&self) {
        // SeqCst: as in `spawn_g`, for `cancel_all` and `check_deadlock`, which read the count.
        if self.live_goroutines.fetch_sub(1, Ordering::SeqCst) == 1 {
            // SAFETY: the reference taken by `retain_for_goroutines` for the goroutines that
            // were live. The caller holds another counted reference (a spawn's, as above, or
            // the exiting goroutine's M), so this never drops the runtime under it.
            unsafe { Arc::decrement_strong_count(self as *const Shared) };
        }
    }

    pub(crate) fn stats(&self) -> Stats {
        let mut stats = Stats {
            retakes: self.retakes.load(Ordering::Relaxed),
            handoffs: self.handoffs.load(Ordering::Relaxed),
            peak_live_goroutines: self.peak_live_goroutines.load(Ordering::Relaxed),
            live_goroutines: self.live_goroutines.load(Ordering::Relaxed),
            ..Stats::default()
        };
        let all = self.all_ms.lock().unwrap_or_else(|e| e.into_inner());
        stats.ms_started = all.len() as u64;
        for m in all.iter() {
            let c = &m.counters;
            stats.context_switches += c.context_switches.load(Ordering::Relaxed);
            stats.goroutines_run += c.goroutines_run.load(Ordering::Relaxed);
            stats.syscalls_entered += c.syscalls_entered.load(Ordering::Relaxed);
            stats.fast_exits += c.fast_exits.load(Ordering::Relaxed);
            stats.slow_exits += c.slow_exits.load(Ordering::Relaxed);
        }
        stats
    }

    /// Every M started so far, for dumps and schedtrace.
    pub(crate) fn all_ms(&self) -> Vec<Arc<M>> {
        self.all_ms
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Calls `f` with every live goroutine of this runtime, while holding the lock of its
    /// registry shard, so `f` may take a reference that keeps the g alive after it returns
    /// (see [`crate::dump::for_each_registered`]). `f` must not spawn or finish gs.
    pub(crate) fn for_each_goroutine(&self, f: impl FnMut(GRef)) {
        crate::dump::for_each_registered(self, f);
    }

    /// The numbers of idle Ps, spinning Ms and idle Ms, for schedtrace. Relaxed: a snapshot.
    pub(crate) fn idle_counts(&self) -> (usize, usize, usize) {
        let idle_ms = self
            .idle_ms
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map_or(0, Vec::len);
        (
            self.npidle.load(Ordering::Relaxed),
            self.nmspinning.load(Ordering::Relaxed),
            idle_ms,
        )
    }
}

/// A goroutine runtime: `procs` Ps, Ms started on demand, and their schedulers.
///
/// Dropping the runtime stops it: idle Ms exit at once, busy Ms when their goroutine next
/// yields, parks or exits, and the drop waits for all of them.
///
/// An M whose goroutine is blocked in a syscall exits only when the call returns, so the drop
/// waits for it. A call that never returns makes the drop wait for ever, such as `goro::net`
/// accepting on a listener that no client connects to. Make such goroutines return before the
/// drop: for example, connect to the listener once, or end a blocked read with
/// `TcpStream::shutdown`.
pub struct Runtime {
    shared: Arc<Shared>,
    /// Schedtrace, the `GORO_TRACE` trace and the registration for dumps; dropped after the
    /// Ms have stopped.
    observers: crate::debug::Observers,
}

impl fmt::Debug for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Runtime")
            .field("procs", &self.procs())
            .finish_non_exhaustive()
    }
}

impl Runtime {
    /// A builder with the default configuration.
    pub fn builder() -> Builder {
        Builder::new()
    }

    /// A runtime with the default configuration (one P per CPU, FIFO scheduler).
    pub fn new() -> Result<Runtime, BuildError> {
        Builder::new().build()
    }

    pub(crate) fn start(builder: Builder) -> Result<Runtime, BuildError> {
        goro_stack::install_overflow_handler();
        let pool_config = if builder.many_goroutines {
            PoolConfig::slab()
        } else {
            PoolConfig::default()
        };
        let pool = StackPool::new(builder.stack_size, pool_config).map_err(BuildError::Stack)?;
        let mut schedulers = vec![builder.default_scheduler];
        schedulers.extend(builder.extra_schedulers);
        for (index, scheduler) in schedulers.iter().enumerate() {
            if !scheduler.claim_for_runtime() {
                for claimed in &schedulers[..index] {
                    // SAFETY: this loop made the claim, and no hook has run yet.
                    unsafe { claimed.release_claim() };
                }
                return Err(BuildError::SchedulerInUse {
                    name: scheduler.name(),
                });
            }
        }
        for scheduler in &schedulers {
            // SAFETY: the claim above makes this runtime the scheduler's only one, and this
            // is its first hook call.
            unsafe { scheduler.start(builder.procs) };
        }
        let ps = (0..builder.procs)
            .map(|_| P {
                state: PState::new_idle(),
                syscalltick: AtomicU32::new(0),
            })
            .collect();
        let shared = Arc::new(Shared {
            ps,
            schedulers: schedulers.into_boxed_slice(),
            pool,
            slab_stacks: builder.many_goroutines,
            max_threads: builder.max_threads,
            monitor_config: builder.monitor,
            idle_ps: Mutex::new((0..builder.procs as u32).rev().map(PId).collect()),
            npidle: CachePadded::new(AtomicUsize::new(builder.procs)),
            nmspinning: CachePadded::new(AtomicUsize::new(0)),
            idle_ms: Mutex::new(Some(Vec::new())),
            all_ms: Mutex::new(Vec::new()),
            threads: Mutex::new(Vec::new()),
            next_mid: AtomicU32::new(1),
            shutdown: AtomicBool::new(false),
            monitor: crate::monitor::MonitorHandle::default(),
            live_goroutines: CachePadded::new(AtomicU64::new(0)),
            peak_live_goroutines: CachePadded::new(AtomicU64::new(0)),
            retakes: AtomicU64::new(0),
            handoffs: AtomicU64::new(0),
            thread_limit_reported: AtomicBool::new(false),
            timers: crate::timer::Timers::default(),
            nwaiting: CachePadded::new(AtomicU64::new(0)),
            foreign_joins: AtomicU64::new(0),
            pinned_gs: AtomicUsize::new(0),
            pinned_ms: Mutex::new(Vec::new()),
            deadlock_detection: builder.deadlock_detection,
            spawn_yields: builder.spawn_yields,
            cancelling: AtomicBool::new(false),
            deadlock_reported: AtomicBool::new(false),
            last_deadlock_report: Mutex::new(Vec::new()),
            external_waiters: Mutex::new(Vec::new()),
        });
        // One M from the start, so that a runtime that cannot start a thread fails here and
        // not at its first spawn.
        shared.spawn_m(None, false).map_err(|error| match error {
            SpawnError::Thread(error) => BuildError::Thread(error),
            other => BuildError::Thread(std::io::Error::other(other.to_string())),
        })?;
        let observers = crate::debug::Observers::start(&shared, builder.dump_on_sigquit);
        Ok(Runtime { shared, observers })
    }

    /// The number of Ps.
    pub fn procs(&self) -> usize {
        self.shared.ps.len()
    }

    /// Spawns a goroutine on the default scheduler. Called from one of the runtime's
    /// goroutines, it may yield as [`crate::spawn`] does.
    pub fn spawn<F, T>(&self, body: F) -> Result<JoinHandle<T>, SpawnError>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let scheduler = self.shared.schedulers[0].clone();
        self.shared.spawn_g(DefaultG::new(), &scheduler, body)
    }

    /// Spawns a goroutine whose control block is the custom g `g`, scheduled by `scheduler`,
    /// which must be the runtime's default scheduler or one added with
    /// [`Builder::add_scheduler`]. Called from one of the runtime's goroutines, it may yield
    /// as [`crate::spawn`] does.
    ///
    /// `g` is dropped after the goroutine exits, often on the g0 of the M that ran it. Like a
    /// scheduler hook there, its `Drop` must leave the FP control state as it found it (see
    /// `goro_sched::Scheduler`).
    pub fn spawn_g<G, F, T>(
        &self,
        g: G,
        scheduler: &SchedHandle,
        body: F,
    ) -> Result<JoinHandle<T>, SpawnError>
    where
        G: CustomG,
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        self.shared.spawn_g(g, scheduler, body)
    }

    /// Runs `body` as a goroutine and waits for it, from any thread. Returns its value, or its
    /// panic as an error.
    pub fn block_on<F, T>(&self, body: F) -> Result<T, JoinError>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        self.spawn(body).map_err(JoinError::Spawn)?.join()
    }

    /// The runtime's counters.
    pub fn stats(&self) -> Stats {
        self.shared.stats()
    }

    /// Counters of the runtime's stack pool: mapped, cached and in-use stacks and bytes.
    pub fn stack_stats(&self) -> goro_stack::PoolStats {
        self.shared.pool.stats()
    }

    /// The default scheduler's handle.
    pub fn default_scheduler(&self) -> &SchedHandle {
        &self.shared.schedulers[0]
    }

    /// Takes a snapshot of every goroutine of this runtime, with the backtraces of suspended
    /// ones; see [`crate::debug::dump`] for all runtimes of the process.
    pub fn dump(&self) -> crate::debug::RuntimeDump {
        self.observers.dump(&self.shared)
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        if let Some(m) = current_m() {
            assert!(
                !Arc::ptr_eq(&m.shared, &self.shared),
                "Runtime::drop: a runtime was dropped by one of its own goroutines, which would \
                 wait for itself; drop it from the thread that built it"
            );
        }
        self.shared.cancel_all();
        // Release: pairs with the Acquire in `is_shutdown`.
        self.shared.shutdown.store(true, Ordering::Release);
        let idle = self
            .shared
            .idle_ms
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        for m in idle.into_iter().flatten() {
            m.wake(None, false);
        }
        // An M pinned to an unwinding goroutine waits off the idle list for its goroutine,
        // which no M takes from the schedulers any more.
        for m in self.shared.all_ms() {
            m.order_exit();
        }
        self.shared.monitor.stop();
        self.shared.wake_external_waiters();
        let threads = std::mem::take(
            &mut *self
                .shared
                .threads
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        );
        for thread in threads {
            // A panic on an M is a runtime bug; it was already printed by the panic hook.
            let _ = thread.join();
        }
        // Each M holds the shared state, and `all_ms` holds each M: with every M thread
        // joined, breaking that cycle lets both drop, and the stack pool unmap its stacks.
        self.shared
            .all_ms
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        // NOTE: a goroutine blocked in a syscall keeps its M, so the join above waits until the
        // syscall returns, forever for one that never does. Goroutines that stay queued behind
        // one that runs without switching for over 100 ms, or that caught the cancellation
        // unwind and parked again, are not resumed: their blocks and stacks stay allocated,
        // and their joiners get `JoinError::Shutdown`. The same holds for a goroutine that
        // yields or parks after the shutdown, or leaves a syscall then and finds no idle P.
        // A destructor that runs after the shutdown gets `SpawnError::Shutdown` from a spawn,
        // which one that runs during the cancellation does not.
    }
}

/// A spawn's goroutine in `Shared::live_goroutines` until the spawn publishes it. Dropped on
/// an error return or an unwind, it counts the goroutine out again.
struct SpawnCount<'a> {
    shared: &'a Shared,
}

impl Drop for SpawnCount<'_> {
    fn drop(&mut self) {
        self.shared.count_exit();
    }
}

/// Spawns a goroutine on the runtime of the calling goroutine, with its default scheduler.
///
/// Every 128th spawn made on one M yields the calling goroutine, so that a goroutine spawning
/// in a loop lets its own P run the goroutines it queued. [`Builder::spawn_yields`] describes
/// the exceptions and turns it off.
///
/// [`Builder::spawn_yields`]: crate::Builder::spawn_yields
///
/// # Panics
///
/// Panics when called from a thread that runs no goroutine; use [`Runtime::spawn`] there.
pub fn spawn<F, T>(body: F) -> Result<JoinHandle<T>, SpawnError>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let Some(shared) = calling_runtime() else {
        panic!("goro::spawn called from a thread that runs no goroutine; use Runtime::spawn");
    };
    shared.spawn_g(DefaultG::new(), &shared.schedulers[0], body)
}

/// Returns the runtime of the calling goroutine, or `None` on a thread that runs none.
///
/// Usually that is the runtime of the goroutine's M. A yield calls its scheduler hook on the
/// goroutine's stack after detaching the goroutine from its M, so a spawn from that hook
/// finds the runtime through the goroutine's record instead.
#[inline]
fn calling_runtime() -> Option<&'static Shared> {
    // The M keeps its runtime alive, and the runtime its schedulers: no reference counts are
    // touched here, since each is an atomic read-modify-write on a line that Ms share.
    if let Some(m) = current_m() {
        return Some(&*m.shared);
    }
    let record = m::current_record()?;
    // SAFETY: the running goroutine's record is alive while the goroutine runs its hook, and
    // the runtime outlives its live goroutines. The reference does not outlive the caller's
    // spawn.
    Some(unsafe { record.as_ref() }.shared())
}

/// Spawns a goroutine whose control block is the custom g `g`, scheduled by `scheduler`, on
/// the runtime of the calling goroutine (see [`Runtime::spawn_g`]).
///
/// # Panics
///
/// Panics when called from a thread that runs no goroutine; use [`Runtime::spawn_g`] there.
pub fn spawn_g<G, F, T>(g: G, scheduler: &SchedHandle, body: F) -> Result<JoinHandle<T>, SpawnError>
where
    G: CustomG,
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let Some(shared) = calling_runtime() else {
        panic!("goro::spawn_g called from a thread that runs no goroutine; use Runtime::spawn_g");
    };
    shared.spawn_g(g, scheduler, body)
}

/// Why a goroutine could not be spawned.
#[derive(Debug)]
#[non_exhaustive]
pub enum SpawnError {
    /// No stack could be allocated (see the inner error for the cause and what to do).
    Stack(StackError),
    /// The runtime has shut down.
    Shutdown,
    /// The scheduler is not one of the runtime's.
    UnknownScheduler {
        /// Its name.
        name: &'static str,
    },
    /// Starting an M failed because the runtime already runs `max_threads` Ms.
    ThreadLimit {
        /// The limit.
        max_threads: usize,
    },
    /// The OS refused a new thread.
    Thread(std::io::Error),
}

impl fmt::Display for SpawnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SpawnError::Stack(error) => {
                write!(f, "failed to allocate a goroutine stack: {error}")?;
                // The stack crate's advice names its own PoolConfig, which a runtime's user
                // reaches through the builder. Slab mode reports `SlabMapFailed` instead.
                if let goro_stack::StackError::MapFailed {
                    map_count: Some(_), ..
                } = error
                {
                    f.write_str(" (Builder::many_goroutines(true) turns slab stacks on)")?;
                }
                Ok(())
            }
            SpawnError::Shutdown => f.write_str("the runtime has shut down"),
            SpawnError::UnknownScheduler { name } => write!(
                f,
                "scheduler {name:?} is not part of this runtime; add it with \
                 Builder::add_scheduler"
            ),
            SpawnError::ThreadLimit { max_threads } => write!(
                f,
                "the runtime already runs max_threads = {max_threads} Ms (most of them blocked \
                 in syscalls); raise it with Builder::max_threads"
            ),
            SpawnError::Thread(error) => write!(f, "failed to start an M thread: {error}"),
        }
    }
}

impl std::error::Error for SpawnError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SpawnError::Stack(error) => Some(error),
            SpawnError::Thread(error) => Some(error),
            _ => None,
        }
    }
}
