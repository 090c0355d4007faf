//! Ms (the OS threads of a runtime), their g0 scheduling loop, and the switch between a g and
//! its M's g0.
//!
//! An M runs goroutines while it holds a P. Its loop runs on g0, the thread's native stack:
//! pick a g from the schedulers ([`find_runnable`]), switch to it ([`execute`]), and when the g
//! switches back with a [`Request`], act on it ([`handle`]) now that the g's stack is left. When
//! no scheduler has work, the M gives its P to the idle list and sleeps on its note until
//! another M hands it a P ([`stopm`]).

use std::cell::{Cell, UnsafeCell};
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

use goro_abi::{GHeader, GRef, PId, ReadyCause, WaitReason, getg, setg};
use goro_syscall::MId;

use crate::runtime::{IdleRecheck, Shared, StandbyOutcome};
use crate::task::Record;
use crate::trace::{self, Event, StopReason};

/// What a g asks of its M's g0 when it switches there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(usize)]
pub(crate) enum Request {
    /// Requeue the g through its scheduler's `on_yield`.
    Yield = 1,
    /// Park the g, then run the commit function the g left in `M::park_commit`.
    Park = 2,
    /// The g's body returned: finish the g and free its stack.
    Exit = 3,
    /// The g left a syscall and found no P: hand it to its scheduler, then stop the M.
    SyscallRequeue = 4,
    /// The g's scheduler chose to requeue it after a syscall although it got its P back.
    RequeueRunning = 5,
    /// The g yielded and is back with its scheduler, which had nothing else for the P (see
    /// [`gosched`]): g0 only looks for the next g. Another M may already run the g.
    Switched = 6,
}

impl Request {
    fn from_usize(raw: usize) -> Request {
        match raw {
            1 => Request::Yield,
            2 => Request::Park,
            3 => Request::Exit,
            4 => Request::SyscallRequeue,
            5 => Request::RequeueRunning,
            6 => Request::Switched,
            other => panic!("M::handle: invalid request {other} from a g"),
        }
    }
}

/// Sentinel for "no P" in `M::p`.
const NO_P: u32 = u32::MAX;

/// A goroutine yields after every this many spawns made on one M, so that a spawning loop
/// lets its own P run the children it queued. It is half the work-stealing run queue's
/// capacity, so the queue does not overflow between two yields.
pub(crate) const SPAWN_YIELD_INTERVAL: u32 = 128;

/// Function run on g0 after a g parked: returns `false` to cancel the park (the g runs on).
pub(crate) type ParkCommit = unsafe fn(data: *const (), g: GRef) -> bool;

/// Counters of one M, written only by the M's own thread (plain load and store, no RMW) and
/// summed by [`crate::Runtime::stats`].
#[derive(Debug, Default)]
pub(crate) struct MCounters {
    pub(crate) context_switches: AtomicU64,
    pub(crate) goroutines_run: AtomicU64,
    pub(crate) syscalls_entered: AtomicU64,
    pub(crate) fast_exits: AtomicU64,
    pub(crate) slow_exits: AtomicU64,
}

impl MCounters {
    /// Adds one to a counter that only the calling thread writes.
    pub(crate) fn bump(counter: &AtomicU64) {
        // Relaxed: the counters are statistics; a reader may see a slightly old value.
        counter.store(counter.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    }
}

/// The hand-off slot through which an idle M receives a P (or the order to exit), or the
/// order to stand by for a P that a syscall may soon lose, and through which a pinned M gets
/// its goroutine back.
#[derive(Debug, Default)]
struct Note {
    slot: Mutex<NoteSlot>,
    wakeup: Condvar,
}

#[derive(Debug, Default)]
struct NoteSlot {
    woken: bool,
    p: Option<PId>,
    spinning: bool,
    standby: Option<Standby>,
    /// The g pinned to this M, handed back by the M that took it from its scheduler, with
    /// that M's P (see `hand_to_pinned_m`).
    pinned: Option<(PId, GRef)>,
    /// Set at shutdown for every M: a pinned M waits off the idle list, so the idle list's
    /// exit orders do not reach it.
    exit: bool,
}

/// A syscall that may block while goroutines wait for its P: P `p`, its syscall tick when the
/// call was entered, and a time at which the call was already going. An idle M woken with it
/// retakes the P itself once the grace period has passed (see `Shared::retake_on_standby`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Standby {
    pub(crate) p: PId,
    /// The M in the syscall.
    pub(crate) m: MId,
    pub(crate) syscalltick: u32,
    pub(crate) since: Instant,
}

/// The reason an idle M woke up.
enum NoteWake {
    /// A P to run, whether the M starts as a spinning M, and whether an order to stand by
    /// came before the P and is dropped.
    P(PId, bool, bool),
    /// The runtime is shutting down: the M exits.
    Exit,
    /// A syscall may soon have to give up its P.
    Standby(Standby),
    /// The g pinned to this M, to run on the P that comes with it.
    Pinned(PId, GRef),
}

impl Note {
    fn wake(&self, p: Option<PId>, spinning: bool) {
        let mut slot = self.slot.lock().unwrap_or_else(|e| e.into_inner());
        slot.woken = true;
        slot.p = p;
        slot.spinning = spinning;
        self.wakeup.notify_one();
    }

    /// Wakes the M with `standby`, unless it was already woken. Returns whether it was.
    fn stand_by(&self, standby: Standby) -> bool {
        let mut slot = self.slot.lock().unwrap_or_else(|e| e.into_inner());
        if slot.woken || slot.standby.is_some() {
            return false;
        }
        slot.standby = Some(standby);
        self.wakeup.notify_one();
        true
    }

    /// Hands the pinned M its g back, with P `p` in transit.
    fn hand_pinned(&self, p: PId, g: GRef) {
        let mut slot = self.slot.lock().unwrap_or_else(|e| e.into_inner());
        slot.pinned = Some((p, g));
        self.wakeup.notify_one();
    }

    /// Orders the M to exit when it next waits without a P or a g to run.
    fn order_exit(&self) {
        let mut slot = self.slot.lock().unwrap_or_else(|e| e.into_inner());
        slot.exit = true;
        self.wakeup.notify_one();
    }

    /// Takes the order to stand by that the M has not acted on, if any.
    fn take_standby(&self) -> Option<Standby> {
        self.slot
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .standby
            .take()
    }

    /// Waits until the M is woken or `timeout` has passed, leaving the wakeup for `wait`.
    /// Returns whether the M was woken.
    fn woken_within(&self, timeout: std::time::Duration) -> bool {
        let slot = self.slot.lock().unwrap_or_else(|e| e.into_inner());
        let (slot, _) = self
            .wakeup
            .wait_timeout_while(slot, timeout, |slot| !slot.woken)
            .unwrap_or_else(|e| e.into_inner());
        slot.woken
    }

    /// Waits until the M is woken.
    fn wait(&self) -> NoteWake {
        let mut slot = self.slot.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some((p, g)) = slot.pinned.take() {
                return NoteWake::Pinned(p, g);
            }
            if slot.woken {
                slot.woken = false;
                // NOTE: the exit order (no P) drops a stand-by order without releasing the
                // monitor's stand-by flag; only `Runtime::drop` sends it, so nothing is lost.
                let dropped_standby = slot.standby.take().is_some();
                return match slot.p.take() {
                    Some(p) => NoteWake::P(p, slot.spinning, dropped_standby),
                    None => NoteWake::Exit,
                };
            }
            if let Some(standby) = slot.standby.take() {
                return NoteWake::Standby(standby);
            }
            if slot.exit {
                return NoteWake::Exit;
            }
            slot = self.wakeup.wait(slot).unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// An M: one OS thread of a runtime.
pub(crate) struct M {
    pub(crate) id: MId,
    pub(crate) shared: Arc<Shared>,
    /// The header of g0, the M's native stack. Its `sched_sp` holds g0's stack pointer while a
    /// g runs; its `m` field points back to this M.
    g0: GHeader,
    /// The P this M holds, or `NO_P`. Written only by the M's own thread (on g0 or by the g
    /// it runs); Relaxed, since only that thread reads it for decisions.
    p: AtomicU32,
    /// The P held when the running g entered its syscall.
    pub(crate) syscall_p: AtomicU32,
    /// The commit function of a pending park, set by the g right before it switches to g0.
    park_commit: UnsafeCell<Option<(ParkCommit, *const ())>>,
    /// A g that a yield took from its scheduler but could not switch to, because its switch
    /// had not saved it yet: set by the yielding g right before it switches to g0, which runs
    /// it (see `gosched`).
    handover: UnsafeCell<Option<GRef>>,
    /// Whether the M is counted in `Shared::nmspinning`. Only the M's own thread reads or
    /// writes it.
    spinning: std::sync::atomic::AtomicBool,
    /// The index of the scheduler that the M polls first for work next time. It moves on at
    /// every poll so that no scheduler starves the others. Only the M's own thread touches it.
    schedtick: AtomicU32,
    /// Spawns made by the goroutines this M ran, wrapping; see `M::count_spawn`. Only the M's
    /// own thread touches it.
    spawns: AtomicU32,
    note: Note,
    pub(crate) counters: MCounters,
    /// The M's own stack cache, used without locks. Only the M's thread touches it: its g0
    /// when a g exits, and the g it runs when that g spawns (goroutines are not preempted,
    /// so the two never overlap).
    stack_cache: UnsafeCell<Option<goro_stack::LocalCache>>,
    /// The M's cache of join cell blocks. Only the M's thread touches it, through
    /// `with_blocks`; other threads give blocks back through `blocks_home`.
    blocks: UnsafeCell<goro_stack::BlockCache>,
    /// The home of `blocks`, for threads that give a block back.
    blocks_home: goro_stack::BlockHome,
    /// Whether the goroutine this M runs is inside a syscall. Written only by the M's own
    /// thread; read by deadlock detection (see `Shared::check_deadlock` for the ordering).
    pub(crate) in_syscall: std::sync::atomic::AtomicBool,
    /// The OS thread id (`gettid`) of the M's thread, set when the thread starts.
    pub(crate) thread_id: std::sync::atomic::AtomicI64,
}

// SAFETY: `park_commit` and `handover` are only touched by the M's own thread (set by the g it
// runs, read by its g0 right after), and so are `stack_cache` and `blocks`; everything else is
// atomic or Sync.
unsafe impl Sync for M {}
// SAFETY: as above; the raw pointer in `park_commit` is only meaningful on the M's thread.
unsafe impl Send for M {}

impl M {
    pub(crate) fn new(id: MId, shared: Arc<Shared>) -> M {
        let blocks = goro_stack::BlockCache::new();
        let blocks_home = blocks.home();
        M {
            id,
            shared,
            g0: GHeader::new(),
            p: AtomicU32::new(NO_P),
            syscall_p: AtomicU32::new(NO_P),
            park_commit: UnsafeCell::new(None),
            handover: UnsafeCell::new(None),
            schedtick: AtomicU32::new(0),
            spawns: AtomicU32::new(0),
            spinning: std::sync::atomic::AtomicBool::new(false),
            note: Note::default(),
            counters: MCounters::default(),
            thread_id: std::sync::atomic::AtomicI64::new(0),
            in_syscall: std::sync::atomic::AtomicBool::new(false),
            stack_cache: UnsafeCell::new(None),
            blocks: UnsafeCell::new(blocks),
            blocks_home,
        }
    }

    /// The P this M holds.
    pub(crate) fn p(&self) -> Option<PId> {
        match self.p.load(Ordering::Relaxed) {
            NO_P => None,
            p => Some(PId(p)),
        }
    }

    pub(crate) fn set_p(&self, p: Option<PId>) {
        self.p.store(p.map_or(NO_P, |p| p.0), Ordering::Relaxed);
    }

    pub(crate) fn take_syscall_p(&self) -> Option<PId> {
        // Only the M's own thread touches `syscall_p`: a load and a store, no swap.
        let p = self.syscall_p.load(Ordering::Relaxed);
        self.syscall_p.store(NO_P, Ordering::Relaxed);
        match p {
            NO_P => None,
            p => Some(PId(p)),
        }
    }

    pub(crate) fn set_syscall_p(&self, p: PId) {
        self.syscall_p.store(p.0, Ordering::Relaxed);
    }

    /// Hands this idle M a P (or `None`: exit) and wakes it, as a spinning M if `spinning`.
    pub(crate) fn wake(&self, p: Option<PId>, spinning: bool) {
        self.note.wake(p, spinning);
    }

    /// Orders this M to exit at shutdown when it next waits on its note; see `Note::exit`.
    pub(crate) fn order_exit(&self) {
        self.note.order_exit();
    }

    /// Wakes this idle M to retake the P of a syscall that may block; see
    /// `Shared::retake_on_standby`. Returns `false` when the M was already woken.
    pub(crate) fn stand_by(&self, standby: Standby) -> bool {
        self.note.stand_by(standby)
    }

    /// Sleeps for up to `timeout` while this M stands by, and returns early with `true` when
    /// a `startm` or a shutdown wakes it meanwhile.
    pub(crate) fn standby_sleep_interrupted(&self, timeout: std::time::Duration) -> bool {
        self.note.woken_within(timeout)
    }

    /// Runs `f` with this M's stack cache.
    ///
    /// # Safety
    ///
    /// Must be called on this M's own thread, and not from inside another `with_stack_cache`.
    pub(crate) unsafe fn with_stack_cache<R>(
        &self,
        f: impl FnOnce(&mut goro_stack::LocalCache) -> R,
    ) -> R {
        // SAFETY: the caller is this M's thread, the cache's only user, and calls do not nest.
        let cache = unsafe { &mut *self.stack_cache.get() };
        f(cache.get_or_insert_with(|| self.shared.pool.local_cache()))
    }

    /// Moves the stacks cached by this M to the pool's global cache.
    ///
    /// # Safety
    ///
    /// As for [`M::with_stack_cache`].
    unsafe fn flush_stack_cache(&self) {
        // SAFETY: the caller's contract: this M's thread, outside `with_stack_cache`.
        if let Some(cache) = unsafe { &mut *self.stack_cache.get() } {
            cache.flush();
        }
    }

    /// Counts a spawn by the goroutine running on this M, and returns whether it is one of
    /// every [`SPAWN_YIELD_INTERVAL`].
    pub(crate) fn count_spawn(&self) -> bool {
        // Relaxed: only this M's thread reads and writes the count.
        let spawns = self.spawns.load(Ordering::Relaxed).wrapping_add(1);
        self.spawns.store(spawns, Ordering::Relaxed);
        spawns.is_multiple_of(SPAWN_YIELD_INTERVAL)
    }

    /// Calls `f` with the M's block cache for join cells.
    ///
    /// # Safety
    ///
    /// Only the M's own thread may call it, and calls must not nest.
    pub(crate) unsafe fn with_blocks<R>(
        &self,
        f: impl FnOnce(&mut goro_stack::BlockCache) -> R,
    ) -> R {
        // SAFETY: the caller is this M's thread, the cache's only user, and calls do not nest.
        f(unsafe { &mut *self.blocks.get() })
    }

    /// Returns the home of this M's block cache, where other threads give its blocks back.
    pub(crate) fn blocks_home(&self) -> goro_stack::BlockHome {
        self.blocks_home
    }

    pub(crate) fn is_spinning(&self) -> bool {
        self.spinning.load(Ordering::Relaxed)
    }

    pub(crate) fn set_spinning(&self, spinning: bool) {
        self.spinning.store(spinning, Ordering::Relaxed);
    }
}

/// Returns the M running the calling code, when the calling thread is an M (on g0 or in a g).
#[inline]
pub(crate) fn current_m() -> Option<&'static M> {
    let g = getg();
    if g.is_null() {
        return None;
    }
    // SAFETY: the g register points to a live header on this thread (setg's contract), and
    // its `m` field, set by the M before it ran the g, points to the M that runs this thread.
    // An M outlives every g it runs and its own g0.
    let m = unsafe { &*g }.m() as *const M;
    // SAFETY: as above.
    (!m.is_null()).then(|| unsafe { &*m })
}

/// Returns the record of the running goroutine, or `None` on g0 or on a thread that runs no
/// goroutine.
#[inline]
pub(crate) fn current_record() -> Option<NonNull<Record>> {
    let g = getg();
    if g.is_null() {
        return None;
    }
    // SAFETY: as in `current_m`; g0's header has no runtime record, gs spawned by a runtime
    // always have one.
    NonNull::new(unsafe { &*g }.runtime() as *mut Record)
}

/// Switches from the running g to its M's g0 with `request`, and returns when the g is
/// resumed, possibly on another M.
pub(crate) fn mcall(request: Request) {
    let g = getg();
    let m = current_m().expect("mcall: called from a thread that runs no goroutine");
    assert!(
        !ptr::eq(g, &m.g0),
        "mcall: called on g0; only a goroutine can switch to g0"
    );
    // SAFETY: `g` is the running g (it is not g0) and `m` its M.
    unsafe { switch_to_g0(m, g, request) };
}

/// Saves the running g `g` in its header and resumes `m`'s g0 with `request`. Returns when
/// something resumes `g`.
///
/// # Safety
///
/// `g` must be the g running on this thread and `m` the M of this thread.
unsafe fn switch_to_g0(m: &M, g: *mut GHeader, request: Request) {
    // SAFETY: g0 is suspended in `execute`, with its stack pointer saved in its header by the
    // switch_from_g0 that started the first g of this run (a g that a direct switch started
    // runs on the same thread, so on the same M), as switch_to_g0 requires. Nothing resumes g0
    // but this M's own gs.
    unsafe {
        let g0_sp = *m.g0.sched_sp_ptr();
        goro_context::switch_to_g0((*g).sched_sp_ptr(), g0_sp, request as usize);
    }
}

/// Takes the saved stack pointer of `g`, which the caller is about to resume, and marks the
/// slot empty until `g` is saved again. Returns `None`, leaving the slot alone, while the
/// switch that suspends `g` has not saved it yet.
///
/// A yielding g goes back to its scheduler before its switch has saved it (see [`gosched`]),
/// so the M that takes it from a queue may find the slot still empty.
#[inline]
fn try_take_saved_sp(g: GRef) -> Option<usize> {
    let slot = saved_sp_slot(g);
    // Acquire: pairs with the release store of the stack pointer in the switch that saved
    // the g (the switch asm publishes it with release semantics), so the saved frame below it
    // is visible to this thread before it resumes the g.
    let sp = slot.load(Ordering::Acquire);
    if sp == 0 {
        return None;
    }
    // Relaxed: the caller owns the g now. The store reaches the next M to take the g
    // through the queue that publishes the g, whose release follows this store.
    slot.store(0, Ordering::Relaxed);
    Some(sp)
}

/// Like [`try_take_saved_sp`], but waits while the slot is empty: the switch is a few
/// instructions away on the M that suspends `g`.
///
/// Only g0 may wait. A yielding g that waited here while its own switch had not saved it
/// could wait for an M that waits for it in turn (each took the other's g), so [`gosched`]
/// hands a g that is not saved yet to g0 instead. g0 holds no unsaved g, so no M waits for
/// it, and the waits cannot form a cycle.
fn take_saved_sp(g: GRef) -> usize {
    match try_take_saved_sp(g) {
        Some(sp) => sp,
        None => {
            let sp = wait_until_saved(saved_sp_slot(g));
            // Relaxed: as in `try_take_saved_sp`.
            saved_sp_slot(g).store(0, Ordering::Relaxed);
            sp
        }
    }
}

/// The saved stack pointer of `g`, as an atomic.
#[inline]
fn saved_sp_slot(g: GRef) -> &'static AtomicUsize {
    // SAFETY: the slot is a live, aligned usize in the g's header, which outlives every
    // resume of the g, and only atomics and the context switch touch it while the g can be
    // resumed.
    unsafe { AtomicUsize::from_ptr(g.header().sched_sp_ptr()) }
}

/// Waits for the switch that saves a g whose slot `slot` is still empty.
#[cold]
fn wait_until_saved(slot: &AtomicUsize) -> usize {
    let mut spins = 0u32;
    loop {
        // Acquire: as in `try_take_saved_sp`.
        let sp = slot.load(Ordering::Acquire);
        if sp != 0 {
            return sp;
        }
        // The yielding M is a few instructions from its switch, unless the OS preempted its
        // thread there. Then give the CPU away rather than burn it.
        if spins < 128 {
            spins += 1;
            std::hint::spin_loop();
        } else {
            std::thread::yield_now();
        }
    }
}

/// Yields the running goroutine: hands it back to its scheduler and switches straight to
/// the next g that the schedulers give its P, without a pass through g0.
///
/// The scheduler gets the g before the switch has saved it, on the g's own stack, so another
/// M may take it from a queue at once. That M's g0 waits in [`take_saved_sp`] until the
/// switch has saved the g. After the g is back with its scheduler, this function touches only
/// its own stack frame, its M and the next g: the g's header belongs to whoever took it.
///
/// Falls back to the path through g0 when the M holds no P or the runtime shuts down. Switches
/// to g0 when the schedulers have no g for the P (g0 then spins or idles the P), and when the
/// next g is not saved yet (g0 then waits for it and runs it).
///
/// # Safety
///
/// `this` must be the running g of this thread, spawned by a runtime (so not a g0).
pub(crate) unsafe fn gosched(this: GRef) {
    let g = this.as_ptr();
    let header = this.header();
    let m = header.m() as *const M;
    if m.is_null() {
        switch_in_hook("goro::yield_now", header.goid());
    }
    // SAFETY: the M that runs a g stores itself in the g's header before the switch, and
    // outlives every g it runs.
    let m = unsafe { &*m };
    let shared = &*m.shared;
    if header.status() == goro_abi::GStatus::Syscall {
        yield_in_syscall(header.goid());
    }
    // An unwinding g takes the path through g0, which pins it to this M (see
    // `pin_if_unwinding`).
    let Some(p) = m
        .p()
        .filter(|_| !shared.is_shutdown() && !std::thread::panicking())
    else {
        mcall(Request::Yield);
        return;
    };
    trace::emit(|| Event::GoStop {
        goid: header.goid(),
        reason: StopReason::Yield,
    });
    if shared.slab_stacks {
        check_canary(this);
    }
    // SAFETY: the running g stops itself, on its own M.
    let _ = unsafe { header.stop_running() };
    crate::dump::note_status(this, goro_abi::GStatus::Runnable, false);
    // SAFETY: this M ran the g until now and stops it here.
    unsafe { header.set_m(ptr::null_mut()) };
    // A panic from here to the switch would unwind the stack of a g that another M may be
    // about to resume. A scheduler hook that panics is fatal anyway (it would be on g0).
    let abort = AbortOnUnwind;
    let next = if shared.schedulers.len() == 1 {
        // SAFETY: the runtime keeps every linked scheduler alive, and this M holds P `p`. The
        // g's scheduler is the only one, so `next` of the pair would ask it too.
        unsafe { header.sched().on_yield_next(this, p) }
    } else {
        // SAFETY: as above.
        unsafe { header.sched().on_yield(this, p) };
        poll_schedulers(m, p)
    };
    std::mem::forget(abort);
    match next {
        Some(next) if next == this => {
            // The scheduler gave the g straight back: no switch.
            // SAFETY: `m` is this thread's M and keeps running the g, which the scheduler
            // handed back to this M.
            unsafe {
                header.set_m(m as *const M as *mut ());
                let _ = header.start_running();
            }
            crate::dump::note_running(this, false);
            trace::emit(|| Event::GoStart {
                goid: header.goid(),
            });
        }
        // `next` may be pinned to another M: g0 checks (see `hand_to_pinned_m`). Relaxed: see
        // `Shared::pinned_gs`.
        // SAFETY: as below.
        Some(next) if shared.pinned_gs.load(Ordering::Relaxed) != 0 => unsafe {
            *m.handover.get() = Some(next);
            switch_to_g0(m, g, Request::Switched);
        },
        Some(next) => match try_take_saved_sp(next) {
            // SAFETY: `next` came from its scheduler, which hands each g out once, and its
            // switch has saved it. This is still `g`'s thread.
            Some(resume_sp) => unsafe {
                start_g(m, next, false);
                // Saving `g` publishes its stack pointer to the M that may wait for it. The
                // symmetric form suits a `next` that yielded from this same call site, the
                // common case of goroutines that take turns.
                goro_context::switch_symmetric(header.sched_sp_ptr(), resume_sp, 0);
            },
            // `next`'s M is still switching it out, and it may be waiting for `g` (see
            // `take_saved_sp`): save `g` first, and let g0 wait for `next` and run it.
            // SAFETY: only this M's thread touches `handover`, and g0 reads it right after the
            // switch. This is still `g`'s thread, and the g register still names `g`.
            None => unsafe {
                *m.handover.get() = Some(next);
                switch_to_g0(m, g, Request::Switched);
            },
        },
        // SAFETY: as above.
        None => unsafe { switch_to_g0(m, g, Request::Switched) },
    }
}

/// A guard that aborts the process when an unwind drops it. The normal path forgets it.
struct AbortOnUnwind;

impl Drop for AbortOnUnwind {
    fn drop(&mut self) {
        eprintln!(
            "fatal error: goro: a scheduler hook panicked while a goroutine was yielding; \
             a hook must not panic"
        );
        std::process::abort();
    }
}

#[cold]
#[inline(never)]
fn yield_in_syscall(goid: u64) -> ! {
    panic!(
        "goro::yield_now: goroutine {goid} yielded between entersyscall and exitsyscall, \
         where it holds no P; call exitsyscall first"
    );
}

/// Aborts the process when a scheduler hook unwinds through it, naming the hook.
///
/// The runtime cannot recover from a panic in most hooks: a g passed to a `ready` that
/// panicked is in no queue, and a P that `on_release_p` was handling has no M, so the program
/// would hang. Calls on g0 and for a yield have guards of their own, and a panic in
/// `on_entersyscall` or `on_exitsyscall` unwinds the goroutine, which holds its P.
///
/// The guard also counts the thread's hooks in progress, so that a spawn inside one does not
/// yield (see [`in_hook`]).
pub(crate) struct HookGuard {
    hook: &'static str,
}

thread_local! {
    /// Number of guarded scheduler hooks running on this thread. A hook never switches, so
    /// the count stays with the thread that the hook runs on.
    static HOOKS_RUNNING: Cell<u32> = const { Cell::new(0) };
}

impl HookGuard {
    #[inline(always)]
    pub(crate) fn new(hook: &'static str) -> HookGuard {
        HOOKS_RUNNING.with(|running| running.set(running.get() + 1));
        HookGuard { hook }
    }

    /// Ends the guard on the normal path.
    #[inline(always)]
    pub(crate) fn disarm(self) {
        HOOKS_RUNNING.with(|running| running.set(running.get() - 1));
        std::mem::forget(self);
    }
}

/// Returns whether a guarded scheduler hook (`ready`, `has_work`, `on_release_p`) is running
/// on this thread, where a goroutine must not switch: the hook may hold its scheduler's lock.
pub(crate) fn in_hook() -> bool {
    HOOKS_RUNNING.with(|running| running.get() != 0)
}

impl Drop for HookGuard {
    #[cold]
    fn drop(&mut self) {
        eprintln!(
            "fatal error: goro: the scheduler hook {} panicked; only on_entersyscall and \
             on_exitsyscall may panic, so fix the scheduler so that its other hooks return",
            self.hook
        );
        std::process::abort();
    }
}

/// Aborts because a scheduler hook tried to switch away from the g that the runtime is
/// switching out, whose M field is already cleared. Unwinding is no option: the hook runs
/// inside the runtime's switch protocol, and the g may already be in a queue.
#[cold]
#[inline(never)]
fn switch_in_hook(operation: &str, goid: u64) -> ! {
    eprintln!(
        "fatal error: goro: {operation} inside a scheduler hook, while goroutine {goid} is being \
         switched out; a hook must not yield, park or wait for goroutines"
    );
    std::process::abort();
}

/// Aborts with a message that names the fix: a parked g in a syscall would stay in both
/// states at once. Parking callers may hold locks that only the switch releases, so a panic
/// could leave them held.
#[cold]
#[inline(never)]
fn park_in_syscall(goid: u64, reason: &str) -> ! {
    eprintln!(
        "fatal error: goro: goroutine {goid} blocked ({reason}) between entersyscall and \
         exitsyscall; code inside a blocking section must not wait for goroutines: call \
         exitsyscall first"
    );
    std::process::abort();
}

/// Parks the running g: switches to g0, which marks the g waiting and then runs
/// `commit(data, g)`. The g stays parked unless `commit` returns `false`. Whoever wakes it
/// later calls [`ready`].
pub(crate) fn gopark(reason: WaitReason, commit: ParkCommit, data: *const ()) {
    let g = getg();
    assert!(
        !g.is_null(),
        "gopark: called from a thread that runs no goroutine"
    );
    // SAFETY: the g register is the running g of this thread.
    let header = unsafe { &*g };
    let Some(m) = current_m() else {
        switch_in_hook("parking", header.goid());
    };
    if header.status() == goro_abi::GStatus::Syscall {
        park_in_syscall(header.goid(), reason.name());
    }
    header.set_wait_reason(reason);
    // SAFETY: only this thread touches `park_commit`; g0 reads it right after the switch.
    unsafe { *m.park_commit.get() = Some((commit, data)) };
    mcall(Request::Park);
}

/// Hands a g that has become runnable to its scheduler and wakes an idle M if the g's
/// runtime has an idle P. Callable from any thread and stack.
pub(crate) fn ready(g: GRef, cause: ReadyCause) {
    // SAFETY: every g readied here was spawned by a runtime, so it has a record, and the
    // record's runtime outlives it.
    let shared = unsafe { Record::of(g).as_ref().shared() };
    let p = current_m()
        .filter(|m| ptr::eq(&*m.shared, shared))
        .and_then(M::p);
    if cause == ReadyCause::Wake {
        trace::emit(|| Event::GoUnblock {
            goid: g.header().goid(),
        });
        // SeqCst: see `handle`'s park; the g is counted as waiting until it is queued.
        shared.nwaiting.fetch_sub(1, Ordering::SeqCst);
        // Before the g is queued: once queued, its new M may stamp it Running.
        crate::dump::note_status(g, goro_abi::GStatus::Runnable, true);
    }
    let guard = HookGuard::new("ready");
    // SAFETY: the runtime holds the handle of every scheduler its gs link to, and `p` is
    // this thread's P of the g's runtime, if any.
    unsafe { g.header().sched().ready(g, cause, p) };
    guard.disarm();
    shared.note_progress();
    shared.wakep();
}

/// The body of an M's thread.
pub(crate) fn mstart(m: Arc<M>, p: Option<PId>, spinning: bool) {
    let shared = m.shared.clone();
    // SAFETY: gettid has no preconditions.
    let tid = unsafe { libc::syscall(libc::SYS_gettid) };
    // Relaxed: read by the thread itself and by diagnostics.
    m.thread_id.store(tid, Ordering::Relaxed);
    // SAFETY: g0 runs only on this M's thread, and `m` outlives it.
    unsafe { m.g0.set_m(Arc::as_ptr(&m) as *mut ()) };
    // The thread copied the FP control state of its creator, which may be a goroutine that
    // changed it, and g0 must run with the defaults (see goro_context::switch_from_g0).
    goro_context::install_default_fp_control();
    // SAFETY: g0's header lives in `m`, which this thread keeps alive until it returns.
    unsafe { setg(&m.g0 as *const GHeader as *mut GHeader) };
    let _altstack = goro_stack::AltStack::install().ok();
    if let Some(p) = p {
        shared.ps[p.index()].state.accept(m.id);
        m.set_p(Some(p));
        m.set_spinning(spinning);
        trace::emit(|| Event::PStart { p: p.0 });
    }
    // A panic on g0 is a bug in the runtime or in a scheduler hook. Unwinding would leave Ps
    // and gs owned by a dead thread and hang the program, so it is fatal, as Go's `throw` is.
    if let Err(panic) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| schedule(&m))) {
        let message = panic
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
            .unwrap_or("(non-string panic payload)");
        eprintln!(
            "fatal error: goro: panic on the g0 of M {:?}: {message}",
            m.id
        );
        std::process::abort();
    }
    // SAFETY: the M's thread is the cache's only user, and it is done with it.
    drop(unsafe { (*m.stack_cache.get()).take() });
    // SAFETY: clearing the g register is always sound.
    unsafe { setg(ptr::null_mut()) };
}

/// The scheduling loop of an M, on g0. Returns when the runtime shuts down.
fn schedule(m: &Arc<M>) {
    let shared = &*m.shared;
    loop {
        if shared.is_shutdown() {
            shared.release_p_at_exit(m);
            return;
        }
        let Some(p) = m.p() else {
            match stopm(m) {
                Some(p) => m.set_p(Some(p)),
                None => return,
            }
            continue;
        };
        match find_runnable(m, p) {
            Some(g) => {
                if m.is_spinning() {
                    shared.found_work_while_spinning(m);
                }
                execute(m, g)
            }
            None => shared.go_idle(m, p),
        }
    }
}

/// Asks every scheduler of the runtime for a g for P `p`, starting with a different one each
/// time so that no scheduler starves the others. When there is none, the M spins for a short
/// while (if Go's spinning rule allows it) before giving up, since new work often arrives
/// within microseconds and parking and waking an M costs more.
fn find_runnable(m: &M, p: PId) -> Option<GRef> {
    if let Some(g) = poll_schedulers(m, p) {
        return Some(g);
    }
    let shared = &*m.shared;
    if !m.is_spinning() {
        if !shared.may_spin() {
            return None;
        }
        shared.start_spinning(m);
    }
    for _ in 0..SPIN_ROUNDS {
        for _ in 0..SPIN_PAUSES {
            std::hint::spin_loop();
        }
        if let Some(g) = poll_schedulers(m, p) {
            return Some(g);
        }
        if shared.is_shutdown() {
            break;
        }
    }
    None
}

/// Rounds of polling a spinning M makes before it parks. That is about 24 us on the 2-vCPU AMD
/// EPYC VM where it was tuned, where a pause hint took 23.5 ns, and about twice that on Intel
/// cores whose pause takes some 140 cycles. With 4 rounds, an M that ran out of work between
/// two bursts of spawns parked, and the spawner then paid a futex call to wake it. Per
/// 1,000,000 spawned and joined goroutines, 4 rounds made 11,600 context switches and 16 made
/// 82, and a goroutine cost 314 ns against 273 ns (goro-bench spawn goro-fifo, 2 Ps, medians
/// of 9 interleaved runs). Only an M that may spin (`Shared::may_spin`) spins, so an idle runtime
/// does not.
const SPIN_ROUNDS: usize = 16;
/// CPU pause hints between two rounds.
const SPIN_PAUSES: usize = 64;

fn poll_schedulers(m: &M, p: PId) -> Option<GRef> {
    let schedulers = &m.shared.schedulers;
    if let [only] = &schedulers[..] {
        // SAFETY: `m` runs this thread and holds P `p`, and the caller runs the g it gets.
        return unsafe { only.next(p) };
    }
    // `schedtick` stays below the number of schedulers, so no division is needed: a 64-bit
    // division costs tens of cycles on this path, which runs at every switch.
    let start = m.schedtick.load(Ordering::Relaxed) as usize;
    let following = if start + 1 == schedulers.len() {
        0
    } else {
        start + 1
    };
    m.schedtick.store(following as u32, Ordering::Relaxed);
    let (from_start, before_start) = (&schedulers[start..], &schedulers[..start]);
    from_start.iter().chain(before_start).find_map(|scheduler| {
        // SAFETY: as above.
        unsafe { scheduler.next(p) }
    })
}

/// Parks the M until another M hands it a P, or until it retakes one from a syscall it stood
/// by for. Returns `None` when the runtime shuts down.
fn stopm(m: &Arc<M>) -> Option<PId> {
    // The stacks of the gs that exited here go back to the pool. Left in the M's cache while
    // it sleeps, they would be out of reach of the Ms that run the Ps, and a spawn there could
    // fail to map a stack with the mapping table full.
    // SAFETY: `stopm` runs on the M's g0, outside `with_stack_cache`.
    unsafe { m.flush_stack_cache() };
    loop {
        if !m.shared.push_idle_m(m) {
            return None;
        }
        match m.shared.recheck_after_idling(m) {
            IdleRecheck::Run(p) => {
                // The monitor may have ordered the M to stand by while it was on the list.
                // The M runs a P instead, so the order is dropped, as `Note::wait` drops one
                // that comes with a P.
                if m.note.take_standby().is_some() {
                    m.shared.monitor.standby_finished(false);
                }
                m.set_p(Some(p));
                return Some(p);
            }
            IdleRecheck::Sleep => break,
            IdleRecheck::Retry => {}
        }
    }
    let (p, spinning) = loop {
        match m.note.wait() {
            NoteWake::P(p, spinning, dropped_standby) => {
                if dropped_standby {
                    // The P comes from the monitor's retake of that syscall, or it runs the
                    // work that waited: either way no kick is needed.
                    m.shared.monitor.standby_finished(false);
                }
                break (p, spinning);
            }
            NoteWake::Exit => return None,
            NoteWake::Pinned(..) => unreachable!("stopm: an idle M was handed a pinned g"),
            NoteWake::Standby(standby) => match m.shared.retake_on_standby(m, standby) {
                StandbyOutcome::Retook(p) => break (p, false),
                StandbyOutcome::Idle => {}
                StandbyOutcome::Shutdown => return None,
            },
        }
    };
    m.shared.ps[p.index()].state.accept(m.id);
    m.set_spinning(spinning);
    m.set_p(Some(p));
    trace::emit(|| Event::PStart { p: p.0 });
    Some(p)
}

/// Runs `g` on this M until it switches back, then acts on its request.
fn execute(m: &M, g: GRef) {
    let mut next = Some(g);
    while let Some(g) = next.take() {
        if hand_to_pinned_m(m, g) {
            return;
        }
        // SAFETY: g0 runs only runtime code, which keeps the default FP control state that
        // switch_from_g0 requires. `g` came from its scheduler (see `start_g`).
        let (request, current) = unsafe {
            let resume_sp = take_saved_sp(g);
            start_g(m, g, true);
            let request = goro_context::switch_from_g0(m.g0.sched_sp_ptr(), resume_sp, 0);
            // `g` may have switched straight to other gs (see `gosched`): the g that
            // switched back here is the one in the g register.
            let current = GRef::from_raw(NonNull::new_unchecked(getg()));
            setg(&m.g0 as *const GHeader as *mut GHeader);
            (Request::from_usize(request), current)
        };
        if request == Request::Switched {
            // The g is back with its scheduler and checked its canary itself. It may have
            // taken the next g already.
            // SAFETY: only this M's thread touches `handover`; the g set it before the switch.
            next = unsafe { (*m.handover.get()).take() }.or_else(|| next_in_place(m));
            continue;
        }
        if m.shared.slab_stacks {
            check_canary(current);
        }
        next = handle(m, current, request);
    }
}

/// Makes `g` the running g of `m`, for the caller to switch to at once, with the stack pointer
/// it took from the g's slot. `timed` says whether dumps get the time at which `g` started.
///
/// # Safety
///
/// `g` must come from its scheduler, which hands each g out once, so that no other M runs
/// it. Its header and stack are alive (the record holds them until exit). The caller must
/// be on `m`'s thread and switch to the returned stack pointer before anything else runs.
#[inline]
unsafe fn start_g(m: &M, g: GRef, timed: bool) {
    let header = g.header();
    // SAFETY: the caller took `g` from its scheduler for this M (the caller's contract).
    let _ = unsafe { header.start_running() };
    crate::dump::note_running(g, timed);
    // SAFETY: `m` is about to run `g` on this thread (the caller's contract), and outlives it.
    unsafe { header.set_m(m as *const M as *mut ()) };
    MCounters::bump(&m.counters.context_switches);
    // SAFETY: `g` runs on this thread from now on (the caller's contract).
    unsafe { setg(g.as_ptr()) };
    trace::emit(|| Event::GoStart {
        goid: header.goid(),
    });
}

/// Checks the canary at the bottom of a slab stack after its g switched away, and aborts with
/// a report naming the goroutine when the g overflowed into it.
fn check_canary(g: GRef) {
    // SAFETY: every g an M runs was spawned by its runtime and has a record; its stack stays
    // in the record until the g's exit is handled, after this check.
    let stack = unsafe { &*Record::of(g).as_ref().stack.get() };
    if let Some(Err(overflow)) = stack.as_ref().map(goro_stack::Stack::check_canary) {
        overflow.report_and_abort(g.header().goid());
    }
}

/// Acts on the request of a g that has just switched to g0. Returns a g to run at once: the
/// same g when a park was cancelled, or else the next g of the M's P (see [`next_in_place`]).
///
/// The M's P is read again here: a g that lost its P in a syscall may have come back on
/// another one, and after `SyscallRequeue` the M holds none.
fn handle(m: &M, g: GRef, request: Request) -> Option<GRef> {
    let header = g.header();
    let sched = header.sched();
    // SAFETY: `m` ran the g, which has just switched to this M's g0 and stopped.
    unsafe { header.set_m(ptr::null_mut()) };
    let held_p = m.p();
    trace::emit(|| Event::GoStop {
        goid: header.goid(),
        reason: match request {
            Request::Yield => StopReason::Yield,
            Request::Park => StopReason::Block(header.wait_reason()),
            Request::Exit => StopReason::Exit,
            Request::SyscallRequeue => StopReason::SyscallNoP,
            Request::RequeueRunning => StopReason::Requeue,
            Request::Switched => unreachable!("M::handle: `execute` acts on Switched itself"),
        },
    });
    let pinned = !matches!(request, Request::Exit | Request::Switched) && pin_if_unwinding(m, g);
    let p = || {
        held_p.unwrap_or_else(|| {
            panic!(
                "M::handle: {request:?} from g{} on an M without a P",
                header.goid()
            )
        })
    };
    match request {
        Request::Switched => {}
        Request::Yield => {
            // SAFETY: this M ran the g, which has switched to its g0.
            let _ = unsafe { header.stop_running() };
            crate::dump::note_status(g, goro_abi::GStatus::Runnable, false);
            // SAFETY: the runtime keeps every linked scheduler alive, and this M holds the P.
            unsafe { sched.on_yield(g, p()) };
        }
        Request::Park => {
            // SAFETY: this M ran the g, which has switched to its g0 to park.
            let _ = unsafe { header.park() };
            // Before the commit: it may publish the g to a waker, who stamps it Runnable.
            crate::dump::note_status(g, goro_abi::GStatus::Waiting, true);
            // SAFETY: set by the g right before it switched here, on this thread.
            let (commit, data) = unsafe { (*m.park_commit.get()).take() }
                .expect("M::handle: park request without a commit function");
            // SAFETY: the commit function's data lives in the suspended g's record or stack,
            // which nobody can free while the g is parked and not yet published.
            if !unsafe { commit(data, g) } {
                // No other thread has seen the g, so the pin is still this M's.
                if pinned && clear_pin(NonNull::from(m), g) {
                    m.shared.remove_pinned_m(NonNull::from(m));
                }
                header.set_wait_reason(WaitReason::None);
                // SAFETY: the commit kept the g, so no waker has it: this M still owns it.
                let _ = unsafe { header.wake() };
                return Some(g);
            }
            // SeqCst: deadlock detection compares this count with the live count.
            m.shared.nwaiting.fetch_add(1, Ordering::SeqCst);
            // SAFETY: as for on_yield.
            unsafe { sched.on_park(g, p()) };
        }
        Request::Exit => {
            // SAFETY: this M ran the g, whose body has returned or panicked.
            let _ = unsafe { header.exit() };
            // SAFETY: as for on_yield.
            unsafe { sched.on_exit(g, p()) };
            MCounters::bump(&m.counters.goroutines_run);
            m.shared.finish(m, g);
        }
        Request::SyscallRequeue => {
            // SAFETY: this M ran the g, which left its syscall without a P.
            let _ = unsafe { header.requeue_from_syscall() };
            crate::dump::note_status(g, goro_abi::GStatus::Runnable, true);
            // The M has no P: any P may run the g.
            // SAFETY: as for on_yield.
            unsafe { sched.ready(g, ReadyCause::SyscallExit, None) };
            // Release: the g is queued before the M stops counting as in a syscall.
            m.in_syscall.store(false, Ordering::Release);
            m.shared.wakep();
        }
        Request::RequeueRunning => {
            // SAFETY: this M ran the g, which its scheduler requeues.
            let _ = unsafe { header.stop_running() };
            crate::dump::note_status(g, goro_abi::GStatus::Runnable, false);
            // SAFETY: as for on_yield.
            unsafe { sched.ready(g, ReadyCause::SyscallExit, Some(p())) };
        }
    }
    if pinned {
        return stop_pinned(m);
    }
    next_in_place(m)
}

/// Pins `g`, which has just switched to the g0 of `m`, to `m` when it is unwinding, before
/// `handle` queues it or parks it. Returns whether it did; the caller then stops the M with
/// [`stop_pinned`] instead of running other gs.
///
/// std counts panics per OS thread: the panic raised the count of this thread, and the catch
/// lowers the count of the thread it runs on. A g that resumed its unwind on another M would
/// leave this thread's count at 1, so that the goroutines running here see
/// `thread::panicking()` (which poisons the std mutexes they unlock), and take the other
/// thread's count below 0. g0 runs on the g's thread, so `thread::panicking()` here is the
/// g's. This is Go's `LockOSThread`, held for as long as the unwind lasts.
///
/// The pin costs a thread, which counts against `Builder::max_threads`. When `startm` can
/// start no M, it takes a pinned M off the runtime's list instead, and that M gives up its
/// pin (see [`stop_pinned`]).
fn pin_if_unwinding(m: &M, g: GRef) -> bool {
    if !std::thread::panicking() {
        return false;
    }
    let shared = &*m.shared;
    // SAFETY: every g an M runs was spawned by its runtime, and its record lives until the g
    // exits.
    let record = unsafe { Record::of(g).as_ref() };
    // Listed before the g is published, so that the M that takes the g finds the M listed
    // unless `startm` took it off.
    shared.add_pinned_m(m, g);
    // Relaxed: see `Record::pinned_m` and `Shared::pinned_gs`.
    record
        .pinned_m
        .store(m as *const M as *mut M, Ordering::Relaxed);
    shared.pinned_gs.fetch_add(1, Ordering::Relaxed);
    true
}

/// Unpins `g` from M `m`, unless the M that took `g` from its scheduler has unpinned it first
/// (see [`hand_to_pinned_m`]). Returns whether this call unpinned it. Called by `m` itself for
/// a park that its commit cancelled, and by `startm` at the thread limit, under the lock of
/// the list of pinned Ms.
pub(crate) fn clear_pin(m: NonNull<M>, g: GRef) -> bool {
    // SAFETY: as in `pin_if_unwinding`; the g cannot exit while it is pinned.
    let record = unsafe { Record::of(g).as_ref() };
    // Relaxed: the race with the swap in `hand_to_pinned_m_slow` is decided by the order of
    // the two read-modify-writes on the word, which carries no other data.
    let cleared = record
        .pinned_m
        .compare_exchange(
            m.as_ptr(),
            ptr::null_mut(),
            Ordering::Relaxed,
            Ordering::Relaxed,
        )
        .is_ok();
    if cleared {
        // SAFETY: a pinned M is an M of the g's runtime, alive while the runtime is.
        let shared = unsafe { &m.as_ref().shared };
        shared.pinned_gs.fetch_sub(1, Ordering::Relaxed);
    }
    cleared
}

/// Stops M `m` after `handle` queued or parked its unwinding g `g` pinned to it: gives the
/// M's P, if any, to another M, and waits until the M that takes `g` from its scheduler hands
/// it back (see [`hand_to_pinned_m`]). Meanwhile the M runs no other g, since it would see
/// `thread::panicking()`. Returns `g`, to run on the P that came with it.
///
/// Returns `None`, for the M's loop to go on, when the runtime shuts down, and when a `startm`
/// at the thread limit unpinned `g` and handed the M a P to run (see `Shared::startm`). `g`
/// may then finish its unwind on another M, with wrong panic counts on both threads. Exactly
/// one of the two wakes the M, because the unpinning (a CAS or a swap on the g's pin word)
/// decides.
fn stop_pinned(m: &M) -> Option<GRef> {
    let shared = &*m.shared;
    give_p_away(m);
    let (p, g, spinning) = match m.note.wait() {
        NoteWake::Pinned(p, g) => (p, Some(g), false),
        NoteWake::P(p, spinning, _) => (p, None, spinning),
        NoteWake::Exit => return None,
        NoteWake::Standby(_) => {
            unreachable!("stop_pinned: only an M on the idle list gets a stand-by order")
        }
    };
    shared.ps[p.index()].state.accept(m.id);
    m.set_p(Some(p));
    m.set_spinning(spinning);
    trace::emit(|| Event::PStart { p: p.0 });
    g
}

/// Gives the P of M `m`, if any, to another M, or to the idle list if no work waits.
fn give_p_away(m: &M) {
    let Some(p) = m.p() else {
        return;
    };
    let shared = &*m.shared;
    if m.is_spinning() {
        shared.stop_spinning(m);
    }
    trace::emit(|| Event::PStop { p: p.0 });
    shared.ps[p.index()].state.handoff(m.id);
    m.set_p(None);
    shared.handoffp(p);
}

/// Hands `g`, which M `m` has just taken from its scheduler, to the M that it is pinned to,
/// together with `m`'s P, when that is another M (Go's `startlockedm`). Returns whether it
/// did: `m` then holds no P, and stops at the top of its loop.
#[inline]
fn hand_to_pinned_m(m: &M, g: GRef) -> bool {
    // Relaxed: see `Shared::pinned_gs`.
    m.shared.pinned_gs.load(Ordering::Relaxed) != 0 && hand_to_pinned_m_slow(m, g)
}

#[cold]
#[inline(never)]
fn hand_to_pinned_m_slow(m: &M, g: GRef) -> bool {
    // SAFETY: as in `pin_if_unwinding`.
    let record = unsafe { Record::of(g).as_ref() };
    // Relaxed: see `clear_pin`.
    let Some(pinned) = NonNull::new(record.pinned_m.swap(ptr::null_mut(), Ordering::Relaxed))
    else {
        return false;
    };
    m.shared.pinned_gs.fetch_sub(1, Ordering::Relaxed);
    m.shared.remove_pinned_m(pinned);
    // A pinned M runs no scheduler until it has unpinned its g, so it never takes the g.
    debug_assert!(!ptr::eq(pinned.as_ptr(), m), "an M took the g pinned to it");
    let p = m
        .p()
        .expect("hand_to_pinned_m: an M took a g from its scheduler without a P");
    trace::emit(|| Event::PStop { p: p.0 });
    m.shared.ps[p.index()].state.handoff(m.id);
    m.set_p(None);
    // SAFETY: the pinned M is an M of this runtime, which keeps every M it started in
    // `all_ms` until its threads are joined, and it waits in `stop_pinned` for this g.
    unsafe { pinned.as_ref() }.note.hand_pinned(p, g);
    true
}

/// Returns the next g for the M's P without a pass through the scheduling loop, or `None` when
/// the loop has to decide: the runtime shuts down, the M holds no P, or no scheduler has a g
/// (the loop then spins or idles the P).
///
/// A g that yields in a loop is the common case: its scheduler hands back the other runnable g
/// at once. The loop would only repeat the checks made here, because an M that runs gs never
/// spins (it stopped before its first g).
fn next_in_place(m: &M) -> Option<GRef> {
    if m.shared.is_shutdown() {
        return None;
    }
    poll_schedulers(m, m.p()?)
}

/// The first frame of every goroutine, on its own stack: runs the body, then switches to g0
/// for good.
///
/// # Safety
///
/// Called only by the context switch, as the entry of a stack prepared by `Shared::spawn_g`
/// with `data` the g's record.
pub(crate) unsafe extern "C" fn g_entry(_arg: usize, data: usize) -> ! {
    let record = NonNull::new(data as *mut Record).expect("g_entry: null record");
    // SAFETY: the record is alive while its g runs, and this is its first and only run; the
    // body catches its own panics, so nothing unwinds into the switch.
    unsafe { Record::run(record) };
    // A body that panicked between a bare entersyscall and its exitsyscall left the g in a
    // syscall; finish the protocol so that the M gets a P back before the g exits.
    // SAFETY: the running g's header.
    if unsafe { &*getg() }.status() == goro_abi::GStatus::Syscall {
        crate::syscall::exitsyscall();
    }
    mcall(Request::Exit);
    unreachable!("g_entry: a dead goroutine was resumed");
}
