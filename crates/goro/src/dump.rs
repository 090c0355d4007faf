//! Goroutine dumps: a snapshot of every goroutine of a runtime (status, wait reason, time in
//! that status, stack use, and the backtrace of suspended ones), and the process-wide registry
//! of goroutines that debuggers read.
//!
//! # Cost on the scheduling path
//!
//! Each goroutine's record contains a [`GDebug`] node, written at the transitions of `m.rs`.
//! When the g starts running, its M bumps a run count, a plain increment without a clock.
//! When the g starts running, parks, is woken or is requeued from a syscall, the time of the
//! change is stored, read from `CLOCK_MONOTONIC_COARSE`. The coarse clock is a vDSO
//! read of the kernel's tick time: about 9 ns on the 2-vCPU x86_64 VM where this was written
//! (10 million calls, against 48 ns for `CLOCK_MONOTONIC` there), with a resolution of one
//! kernel tick (1 to 10 ms). A yield and a requeue after a syscall store "unknown" instead of
//! reading the clock, so a goroutine that yields in a loop pays one clock read per run.
//!
//! # The registry for debuggers
//!
//! [`GORO_ALLGS`] is an unmangled static that lists every live goroutine of every runtime in
//! the process as intrusive doubly linked lists of `GDebug` nodes, one list per shard. A
//! debugger reads it without knowing Rust types: the header documents its own layout, and
//! each node points to its g's `GHeader`, whose offsets are frozen in `goro_abi::offsets`.
//! Spawn and exit take one shard lock each to link and unlink the g.

mod symbols;
mod unwind;

use std::fmt;
use std::ptr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, Ordering, fence};
use std::time::Duration;

use crossbeam_utils::CachePadded;

use goro_abi::{GHeader, GRef, GStatus, WaitReason};
use goro_syscall::POwner;

use crate::m::M;
use crate::runtime::Shared;
use crate::task::Record;

/// Shards of [`GORO_ALLGS`], so that spawns and exits on different Ms rarely share a lock.
const SHARDS: usize = 16;

/// `"GOROALLG"` as a little-endian `u64`: lets a debugger check that it found the registry.
const MAGIC: u64 = u64::from_le_bytes(*b"GOROALLG");

/// Layout version of [`AllGs`] and [`GDebug`]; bumped whenever a field a debugger reads moves.
const REGISTRY_VERSION: u32 = 1;

/// The debug part of a goroutine's runtime record: its registry links, the time of its last
/// status change and its run count.
///
/// `#[repr(C)]` because debuggers follow `next` and `g` at the offsets that [`AllGs`] states.
#[repr(C)]
pub(crate) struct GDebug {
    /// The next node of the shard's list. Written under the shard's lock; read by debuggers
    /// while the process is stopped, so Relaxed is enough.
    next: AtomicPtr<GDebug>,
    /// The previous node, or null for the first. As `next`.
    prev: AtomicPtr<GDebug>,
    /// The g this node belongs to. Written once, before the node is linked.
    g: AtomicPtr<GHeader>,
    /// `(coarse monotonic ns << 3) | status`: when the g entered `status`, or 0 when unknown.
    /// Written by the thread that changes the status (the g's M, or its waker). Dumps trust it
    /// only while the status still matches. Relaxed: a dump is a snapshot.
    since: AtomicU64,
    /// Times the g has started running. Written only by the M that starts the g (at most one
    /// at a time), read by dumps to detect that a g ran while its stack was copied.
    runs: AtomicU64,
}

impl GDebug {
    /// Returns the node of a g spawned now, in status Runnable.
    pub(crate) fn new() -> GDebug {
        GDebug {
            next: AtomicPtr::new(ptr::null_mut()),
            prev: AtomicPtr::new(ptr::null_mut()),
            g: AtomicPtr::new(ptr::null_mut()),
            since: AtomicU64::new(pack_since(coarse_now_ns(), GStatus::Runnable)),
            runs: AtomicU64::new(0),
        }
    }
}

/// The registry header that debuggers find by its symbol name.
#[repr(C)]
pub struct AllGs {
    /// [`MAGIC`].
    magic: u64,
    /// [`REGISTRY_VERSION`].
    version: u32,
    /// `goro_abi::ABI_VERSION`, the layout of the `GHeader`s the nodes point to.
    abi_version: u32,
    /// Number of entries of `heads`.
    shards: u32,
    /// Offset of `GDebug::next` in a node.
    node_next_offset: u32,
    /// Offset of `GDebug::g` in a node.
    node_g_offset: u32,
    /// Offset of `GDebug::since` in a node.
    node_since_offset: u32,
    /// The first node of each shard's list, or null.
    heads: [AtomicPtr<GDebug>; SHARDS],
}

/// Every live goroutine of the process, for debuggers (see the module documentation and
/// `crates/goro/gdb/goro.py`).
#[unsafe(no_mangle)]
pub static GORO_ALLGS: AllGs = AllGs {
    magic: MAGIC,
    version: REGISTRY_VERSION,
    abi_version: goro_abi::ABI_VERSION,
    shards: SHARDS as u32,
    node_next_offset: std::mem::offset_of!(GDebug, next) as u32,
    node_g_offset: std::mem::offset_of!(GDebug, g) as u32,
    node_since_offset: std::mem::offset_of!(GDebug, since) as u32,
    heads: [const { AtomicPtr::new(ptr::null_mut()) }; SHARDS],
};

/// One lock per shard of [`GORO_ALLGS`], held while a node is linked or unlinked. Each lock
/// has its own cache line, because a spawner and the Ms that run its goroutines' exits take
/// the locks of different shards at the same time.
static SHARD_LOCKS: [CachePadded<ShardLock>; SHARDS] =
    [const { CachePadded::new(ShardLock::new()) }; SHARDS];

/// Polls of a held [`ShardLock`] with pause hints before a waiter starts yielding its thread.
const SPINS_BEFORE_YIELD: u32 = 64;

/// The lock of one registry shard.
///
/// Unlocking is a Release store, where a `std::sync::Mutex` unlocks with a swap to learn
/// whether a thread sleeps on it. Every spawn and every exit take a shard lock, so that saves
/// two read-modify-writes per goroutine, each on a line that the Ms share. Spawn and exit
/// hold the lock for a few stores, and only the rare walks (dumps, deadlock reports,
/// shutdown) hold it longer. A waiter polls with pause hints, then yields its thread between polls, so
/// that a holder that the OS preempted gets the CPU back.
struct ShardLock {
    locked: AtomicBool,
}

impl ShardLock {
    const fn new() -> ShardLock {
        ShardLock {
            locked: AtomicBool::new(false),
        }
    }

    fn lock(&self) -> ShardGuard<'_> {
        // Acquire: pairs with the Release store in `ShardGuard::drop`, so the previous
        // holder's list updates happen before this holder's reads. Relaxed on failure: a
        // failed attempt reads nothing.
        while self
            .locked
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            self.wait_until_unlocked();
        }
        ShardGuard { lock: self }
    }

    /// Waits until the lock looks free, reading without writing so that the waiter does not
    /// take the line away from the holder.
    #[cold]
    fn wait_until_unlocked(&self) {
        let mut spins = 0;
        // Relaxed: only a hint, because the compare-exchange in `lock` decides.
        while self.locked.load(Ordering::Relaxed) {
            if spins < SPINS_BEFORE_YIELD {
                spins += 1;
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
    }
}

/// Proof that this thread holds a [`ShardLock`]. Dropping it unlocks the lock, also when a
/// walk's callback panics.
struct ShardGuard<'a> {
    lock: &'a ShardLock,
}

impl Drop for ShardGuard<'_> {
    fn drop(&mut self) {
        // Release: pairs with the Acquire compare-exchange of the next holder.
        self.lock.locked.store(false, Ordering::Release);
    }
}

/// Adds the g of `record` to [`GORO_ALLGS`]. Called once by spawn, before the g is ready.
pub(crate) fn register(record: &Record) {
    let node = &record.debug;
    let g = record.g();
    node.g.store(g.as_ptr(), Ordering::Relaxed);
    let shard = g.header().goid() as usize % SHARDS;
    let _lock = SHARD_LOCKS[shard].lock();
    let head = &GORO_ALLGS.heads[shard];
    let first = head.load(Ordering::Relaxed);
    let node_ptr = node as *const GDebug as *mut GDebug;
    node.next.store(first, Ordering::Relaxed);
    node.prev.store(ptr::null_mut(), Ordering::Relaxed);
    if !first.is_null() {
        // SAFETY: linked nodes belong to live records; unlinking takes this shard's lock,
        // which we hold.
        unsafe { (*first).prev.store(node_ptr, Ordering::Relaxed) };
    }
    head.store(node_ptr, Ordering::Relaxed);
}

/// Removes the g of `record` from [`GORO_ALLGS`]. Called once when the g exits.
pub(crate) fn unregister(record: &Record) {
    let node = &record.debug;
    let shard = record.g().header().goid() as usize % SHARDS;
    let _lock = SHARD_LOCKS[shard].lock();
    let next = node.next.load(Ordering::Relaxed);
    let prev = node.prev.load(Ordering::Relaxed);
    if prev.is_null() {
        GORO_ALLGS.heads[shard].store(next, Ordering::Relaxed);
    } else {
        // SAFETY: as in `register`: linked neighbours are alive while we hold the lock.
        unsafe { (*prev).next.store(next, Ordering::Relaxed) };
    }
    if !next.is_null() {
        // SAFETY: as above.
        unsafe { (*next).prev.store(prev, Ordering::Relaxed) };
    }
    node.next.store(ptr::null_mut(), Ordering::Relaxed);
    node.prev.store(ptr::null_mut(), Ordering::Relaxed);
}

/// Calls `f` with every registered g of the runtime `shared`, while holding the lock of the
/// g's shard. [`unregister`] takes that lock before the g drops its own reference, so `f` may
/// take a reference that keeps the g alive after the lock is released. `f` must not spawn or
/// finish gs.
///
/// The walk visits the gs of every runtime of the process and skips the others' gs. It serves
/// dumps, deadlock reports and shutdown, which are rare, so that spawn and exit pay for one
/// registry instead of two.
pub(crate) fn for_each_registered(shared: &Shared, mut f: impl FnMut(GRef)) {
    for (lock, head) in SHARD_LOCKS.iter().zip(&GORO_ALLGS.heads) {
        let _lock = lock.lock();
        let mut node = head.load(Ordering::Relaxed);
        while !node.is_null() {
            // SAFETY: a linked node belongs to a live record, and unlinking it takes the lock
            // held here.
            let current = unsafe { &*node };
            let header = current.g.load(Ordering::Relaxed);
            // SAFETY: `register` stored the node's g, a live header, before linking the node.
            let g = unsafe { GRef::from_raw(ptr::NonNull::new_unchecked(header)) };
            // SAFETY: every registered g was spawned by a runtime and has a record, alive
            // while the node is linked.
            let owner = unsafe { Record::of(g).as_ref() }.shared();
            if ptr::eq(owner, shared) {
                f(g);
            }
            node = current.next.load(Ordering::Relaxed);
        }
    }
}

/// Reads the kernel's tick time, in nanoseconds of `CLOCK_MONOTONIC_COARSE`.
#[inline]
fn coarse_now_ns() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid timespec to write; the clock id is supported since Linux 2.6.32.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut now) };
    now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64
}

fn pack_since(ns: u64, status: GStatus) -> u64 {
    (ns << 3) | status as u64
}

/// Returns the g's debug node, or `None` for a g without a runtime record.
#[inline]
fn node_of(g: GRef) -> Option<&'static GDebug> {
    let record = g.header().runtime() as *const Record;
    // SAFETY: a g's record lives as long as the g, and callers pass gs they run or ready.
    (!record.is_null()).then(|| unsafe { &(*record).debug })
}

/// Notes that `g` starts running: bumps its run count and, if `timed`, stamps the time.
///
/// A yield that switches straight to the next g passes `timed = false`: the clock read would
/// be a tenth of the yield's cost, for a time that dumps show to the kernel's tick only.
#[inline]
pub(crate) fn note_running(g: GRef, timed: bool) {
    if let Some(node) = node_of(g) {
        // Only the M that starts the g writes the count; Relaxed, see `GDebug::runs`.
        node.runs
            .store(node.runs.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
        let since = if timed {
            pack_since(coarse_now_ns(), GStatus::Running)
        } else {
            0
        };
        node.since.store(since, Ordering::Relaxed);
    }
}

/// Notes that `g` entered `status` now (`timed`) or at an unknown time.
#[inline]
pub(crate) fn note_status(g: GRef, status: GStatus, timed: bool) {
    if let Some(node) = node_of(g) {
        let since = if timed {
            pack_since(coarse_now_ns(), status)
        } else {
            0
        };
        node.since.store(since, Ordering::Relaxed);
    }
}

/// A snapshot of every runtime in the process, from [`crate::debug::dump`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Dump {
    /// One entry per live runtime, in the order they were built.
    pub runtimes: Vec<RuntimeDump>,
}

/// A snapshot of one runtime, from [`crate::Runtime::dump`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct RuntimeDump {
    /// The runtime's number in this process, counted from 1 in the order runtimes are built.
    pub runtime_id: u64,
    /// Time since the runtime was built.
    pub uptime: Duration,
    /// The Ps.
    pub ps: Vec<PDump>,
    /// Every M started so far.
    pub ms: Vec<MDump>,
    /// Every live goroutine, by goid.
    pub goroutines: Vec<GoroutineDump>,
}

/// One P of a [`RuntimeDump`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct PDump {
    /// The P's number.
    pub id: u32,
    /// The owner state: `"idle"`, `"running"`, `"syscall"` or `"transit"`.
    pub state: &'static str,
    /// The M that owns it, if any.
    pub m: Option<u32>,
    /// Syscalls entered on it so far (wrapping).
    pub syscalltick: u32,
}

/// One M of a [`RuntimeDump`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct MDump {
    /// The M's number.
    pub id: u32,
    /// The OS thread id (`gettid`), 0 until the thread has started.
    pub thread_id: i64,
    /// The P it holds, from the P's owner word: running goroutines on it or blocked in a syscall.
    pub p: Option<u32>,
    /// Whether it is looking for work while holding a P.
    pub spinning: bool,
    /// Whether the goroutine it runs is in a syscall.
    pub in_syscall: bool,
    /// The goroutine it runs.
    pub curg: Option<u64>,
}

/// One goroutine of a [`RuntimeDump`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct GoroutineDump {
    /// The goroutine id.
    pub goid: u64,
    /// Its status when it was read.
    pub status: GStatus,
    /// Why it waits; [`WaitReason::None`] unless `status` is `Waiting`.
    pub wait_reason: WaitReason,
    /// The name of its scheduler.
    pub scheduler: &'static str,
    /// The time it has been in `status`, to the kernel's tick (1 to 10 ms). `None` when the
    /// runtime did not record it: for a g that yielded, a g that a yield switched to, and a g
    /// in a syscall.
    pub in_status: Option<Duration>,
    /// The M that runs it.
    pub m: Option<u32>,
    /// Its stack.
    pub stack: StackUsage,
    /// Its backtrace, innermost frame first.
    pub backtrace: Backtrace,
}

/// A goroutine's stack and how much of it is in use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct StackUsage {
    /// The lowest usable address.
    pub lo: usize,
    /// One past the highest address.
    pub hi: usize,
    /// Bytes between the stack pointer and `hi`: the saved stack pointer of a suspended g, the
    /// one recorded at syscall entry for a g in a syscall. `None` for a running g.
    pub used: Option<usize>,
}

impl StackUsage {
    /// Returns the usable size in bytes.
    pub fn size(&self) -> usize {
        self.hi - self.lo
    }
}

/// The backtrace of a goroutine, or why there is none.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Backtrace {
    /// The frames of a suspended goroutine, innermost first; the last is the entry
    /// trampoline of the goroutine's stack unless the walk stopped early.
    Frames(Vec<Frame>),
    /// No backtrace, and why (for example, the goroutine was running).
    Unavailable(&'static str),
}

/// One frame of a [`Backtrace`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Frame {
    /// The return address (or, for a trampoline, the resume address) in this frame.
    pub pc: usize,
    /// The demangled function name, when the object has symbols.
    pub function: Option<String>,
    /// `pc`'s offset from the start of `function` (or from the object's base without one).
    pub offset: usize,
    /// The executable or shared library that contains `pc`.
    pub object: Option<String>,
}

/// Takes a snapshot of the runtime `shared`, numbered `runtime_id`, with the backtraces of
/// suspended goroutines when `backtraces` is set.
pub(crate) fn collect(
    shared: &Shared,
    runtime_id: u64,
    uptime: Duration,
    backtraces: bool,
) -> RuntimeDump {
    let ms = shared.all_ms();
    let mut records = Vec::new();
    shared.for_each_goroutine(|g| {
        // SAFETY: `for_each_goroutine` runs this under the lock of the g's registry shard, and
        // `finish` unregisters a g before it drops the g's own reference. So the record is
        // alive here, and the reference taken here keeps it alive after the lock is released.
        let record = unsafe { Record::of(g) };
        // SAFETY: as above.
        unsafe { record.as_ref() }.retain();
        records.push(record);
    });
    let now = coarse_now_ns();
    let mut goroutines: Vec<GoroutineDump> = records
        .iter()
        .map(|record| {
            // SAFETY: the reference taken above keeps the record alive.
            let dump = goroutine(unsafe { record.as_ref() }, &ms, now, backtraces);
            // SAFETY: this drops exactly the reference taken above, and `shared`, the record's
            // runtime, is borrowed for the whole call.
            unsafe { Record::release(*record) };
            dump
        })
        .collect();
    goroutines.sort_by_key(|g| g.goid);
    let ps: Vec<PDump> = shared
        .ps
        .iter()
        .enumerate()
        .map(|(index, p)| {
            let (state, m) = match p.state.owner() {
                POwner::Idle => ("idle", None),
                POwner::Running(m) => ("running", Some(m.0)),
                POwner::Syscall(m) => ("syscall", Some(m.0)),
                POwner::Transit => ("transit", None),
            };
            PDump {
                id: index as u32,
                state,
                m,
                // Relaxed: a snapshot.
                syscalltick: p.syscalltick.load(Ordering::Relaxed),
            }
        })
        .collect();
    let running = goroutines_on(&ms, shared);
    let ms = ms.iter().map(|m| m_dump(m, &ps, &running)).collect();
    RuntimeDump {
        runtime_id,
        uptime,
        ps,
        ms,
        goroutines,
    }
}

/// Maps each M (by address) to the goid of the g it runs, from the gs' `m` fields.
fn goroutines_on(ms: &[Arc<M>], shared: &Shared) -> Vec<(usize, u64)> {
    let mut running = Vec::new();
    shared.for_each_goroutine(|g| {
        let m = g.header().m() as usize;
        if m != 0
            && ms
                .iter()
                .any(|candidate| Arc::as_ptr(candidate) as usize == m)
        {
            running.push((m, g.header().goid()));
        }
    });
    running
}

/// Describes M `m`. Its P comes from the Ps' owner words, because an M in a syscall keeps its
/// own note of the P that the monitor may have retaken meanwhile.
fn m_dump(m: &Arc<M>, ps: &[PDump], running: &[(usize, u64)]) -> MDump {
    let address = Arc::as_ptr(m) as usize;
    MDump {
        id: m.id.0,
        // Relaxed: written once by the M's thread when it starts.
        thread_id: m.thread_id.load(Ordering::Relaxed),
        p: ps.iter().find(|p| p.m == Some(m.id.0)).map(|p| p.id),
        spinning: m.is_spinning(),
        // Relaxed: a snapshot.
        in_syscall: m.syscall_p.load(Ordering::Relaxed) != u32::MAX,
        curg: running
            .iter()
            .find(|(candidate, _)| *candidate == address)
            .map(|(_, goid)| *goid),
    }
}

/// Takes the snapshot of one goroutine. `ms` maps its `m` field to an M id.
fn goroutine(record: &Record, ms: &[Arc<M>], now: u64, backtraces: bool) -> GoroutineDump {
    let g = record.g();
    let header = g.header();
    let node = &record.debug;
    let status = header.status();
    let since = node.since.load(Ordering::Relaxed);
    let in_status = (since != 0 && since & 7 == status as u64)
        .then(|| Duration::from_nanos(now.saturating_sub(since >> 3)));
    let m_address = header.m() as usize;
    let m = ms
        .iter()
        .find(|m| Arc::as_ptr(m) as usize == m_address)
        .map(|m| m.id.0);
    let (lo, hi) = (header.stack_lo(), header.stack_hi());
    let (used, backtrace) = match status {
        GStatus::Runnable | GStatus::Waiting | GStatus::Idle if backtraces => suspended(record, hi),
        GStatus::Runnable | GStatus::Waiting | GStatus::Idle => {
            (None, Backtrace::Unavailable("not requested"))
        }
        GStatus::Syscall => {
            let sp = header.syscall_sp();
            let used = (sp > lo && sp <= hi).then(|| hi - sp);
            (
                used,
                Backtrace::Unavailable("in a syscall, its stack is in use"),
            )
        }
        GStatus::Running => (None, Backtrace::Unavailable("running, its stack is in use")),
        GStatus::Dead => (None, Backtrace::Unavailable("exited")),
    };
    GoroutineDump {
        goid: header.goid(),
        status,
        wait_reason: if status == GStatus::Waiting {
            header.wait_reason()
        } else {
            WaitReason::None
        },
        // SAFETY: the caller holds a reference to the record, and the record's runtime holds
        // the g's scheduler.
        scheduler: unsafe { header.sched().name() },
        in_status,
        m,
        stack: StackUsage { lo, hi, used },
        backtrace,
    }
}

/// How long a dump waits for the switch of a g that is Runnable but not saved yet. The switch
/// is a few instructions away unless the OS has preempted the M's thread in between.
const SWITCH_WAIT: std::time::Duration = std::time::Duration::from_millis(20);

/// Reads the stack use and backtrace of a g that looked suspended.
///
/// Another M may resume the g at any moment. So the saved stack pointer and the stack are
/// copied by the kernel (see `unwind::read_memory`), which neither faults nor races. The copy
/// is kept only when the g's run count and status are the same after it as before.
fn suspended(record: &Record, hi: usize) -> (Option<usize>, Backtrace) {
    let g = record.g();
    let header = g.header();
    let node = &record.debug;
    let runs_before = node.runs.load(Ordering::Relaxed);
    let status_before = header.status();
    let ran =
        || node.runs.load(Ordering::Relaxed) != runs_before || header.status() != status_before;
    // A yielding g is Runnable before its switch has saved it, with an empty slot (0) until
    // then: wait a little for the switch.
    let mut sp = 0;
    let deadline = std::time::Instant::now() + SWITCH_WAIT;
    while std::time::Instant::now() < deadline {
        let mut sp_bytes = [0u8; 8];
        if !unwind::read_memory(header.sched_sp_ptr() as usize, &mut sp_bytes) {
            return (None, Backtrace::Unavailable("its header could not be read"));
        }
        sp = usize::from_ne_bytes(sp_bytes);
        if sp != 0 || ran() {
            break;
        }
        std::thread::yield_now();
    }
    if sp == 0 && !ran() {
        return (None, Backtrace::Unavailable("it was being switched out"));
    }
    let copy = unwind::StackCopy::read(sp, hi);
    // SeqCst fence: orders the copy's reads before the rereads below, so that a g resumed
    // during the copy shows a new run count or status here (its M bumps them first).
    fence(Ordering::SeqCst);
    if ran() {
        return (
            None,
            Backtrace::Unavailable("it ran while the dump read its stack"),
        );
    }
    let used = (sp != 0 && sp <= hi).then(|| hi - sp);
    let Some(copy) = copy else {
        return (used, Backtrace::Unavailable("its stack could not be read"));
    };
    let frames = unwind::backtrace(&copy)
        .into_iter()
        .enumerate()
        .map(|(index, pc)| {
            // The resume address of a g that never ran is the first instruction of its entry
            // trampoline, not a return address: one byte before it lies in another function.
            // No return address can be the first byte of a function here, because the switch
            // that saved a started g returns into the function that called it.
            let exact = (index == 0).then(|| symbols::resolve(pc));
            if let Some(symbol) =
                exact.filter(|symbol| symbol.function.is_some() && symbol.offset == 0)
            {
                return Frame {
                    pc,
                    function: symbol.function,
                    offset: 0,
                    object: symbol.object,
                };
            }
            // Symbolize the call instruction, one byte before the return address.
            let symbol = symbols::resolve(pc.saturating_sub(1));
            Frame {
                pc,
                function: symbol.function,
                offset: symbol.offset + 1,
                object: symbol.object,
            }
        })
        .collect();
    (used, Backtrace::Frames(frames))
}

impl fmt::Display for Dump {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.runtimes.is_empty() {
            return writeln!(f, "goro: no runtime is running");
        }
        for runtime in &self.runtimes {
            write!(f, "{runtime}")?;
        }
        Ok(())
    }
}

impl fmt::Display for RuntimeDump {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "goro runtime {}: up {}, {} Ps, {} Ms, {} goroutines",
            self.runtime_id,
            format_duration(self.uptime),
            self.ps.len(),
            self.ms.len(),
            self.goroutines.len()
        )?;
        for p in &self.ps {
            writeln!(f, "  {p}")?;
        }
        for m in &self.ms {
            writeln!(f, "  {m}")?;
        }
        for g in &self.goroutines {
            writeln!(f)?;
            write!(f, "{g}")?;
        }
        Ok(())
    }
}

impl fmt::Display for PDump {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "P{}: status={} m={} syscalltick={}",
            self.id,
            self.state,
            OrDash(self.m),
            self.syscalltick
        )
    }
}

impl fmt::Display for MDump {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "M{}: tid={} p={} curg={} spinning={} syscall={}",
            self.id,
            self.thread_id,
            OrDash(self.p),
            OrDash(self.curg),
            self.spinning,
            self.in_syscall
        )
    }
}

impl fmt::Display for GoroutineDump {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = if self.status == GStatus::Waiting {
            self.wait_reason.name()
        } else {
            self.status.name()
        };
        write!(f, "goroutine {} [{state}", self.goid)?;
        if let Some(time) = self.in_status {
            write!(f, ", {}", format_duration(time))?;
        }
        write!(f, "]: scheduler {}", self.scheduler)?;
        if let Some(m) = self.m {
            write!(f, ", M{m}")?;
        }
        write!(f, ", stack ")?;
        match self.stack.used {
            Some(used) => write!(f, "{used} of {} bytes used", self.stack.size())?,
            None => write!(f, "of {} bytes", self.stack.size())?,
        }
        writeln!(f)?;
        match &self.backtrace {
            Backtrace::Frames(frames) => {
                for (index, frame) in frames.iter().enumerate() {
                    writeln!(f, "  #{index:<2} {frame}")?;
                }
            }
            Backtrace::Unavailable(reason) => writeln!(f, "  (no backtrace: {reason})")?,
        }
        Ok(())
    }
}

impl fmt::Display for Frame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#018x} ", self.pc)?;
        match &self.function {
            Some(function) => write!(f, "{function}+{:#x}", self.offset)?,
            None => write!(f, "?")?,
        }
        if let Some(object) = &self.object {
            write!(f, " ({object})")?;
        }
        Ok(())
    }
}

/// Writes an optional number, or `-` for none.
pub(crate) struct OrDash<T>(pub(crate) Option<T>);

impl<T: fmt::Display> fmt::Display for OrDash<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Some(value) => write!(f, "{value}"),
            None => f.write_str("-"),
        }
    }
}

/// Formats a duration with a unit that suits it: `850ms`, `12.3s`, `4m05s`.
pub(crate) fn format_duration(duration: Duration) -> String {
    let ms = duration.as_millis();
    if ms < 10_000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        format!("{:.1}s", duration.as_secs_f64())
    } else {
        let secs = duration.as_secs();
        format!("{}m{:02}s", secs / 60, secs % 60)
    }
}

// The registry header has no padding, so the offsets in docs/debugging.md are the fields'.
const _: () = assert!(std::mem::size_of::<AllGs>() == 32 + 8 * SHARDS);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_pick_units() {
        assert_eq!(format_duration(Duration::from_millis(850)), "850ms");
        assert_eq!(format_duration(Duration::from_millis(12_345)), "12.3s");
        assert_eq!(format_duration(Duration::from_secs(245)), "4m05s");
    }

    #[test]
    fn registry_header_states_node_layout() {
        assert_eq!(GORO_ALLGS.magic.to_le_bytes(), *b"GOROALLG");
        assert_eq!(GORO_ALLGS.node_next_offset, 0);
        assert_eq!(GORO_ALLGS.node_g_offset, 16);
        assert_eq!(GORO_ALLGS.node_since_offset, 24);
    }
}
