//! Syscalls from goroutines: `entersyscall`, `exitsyscall` and the wrappers around them.
//!
//! While a goroutine blocks in a syscall, its M cannot run anything else, but its P can. The
//! goroutine marks the P as in a syscall on the way in (`entersyscall`), and the monitor
//! retakes the P if the call lasts longer than the grace period while other goroutines wait.
//! On the way out (`exitsyscall`) the fast path finds the P still its own; the slow path takes
//! an idle P, or hands the goroutine to its scheduler and stops the M. `docs/syscall.md`
//! describes the protocol in full.
//!
//! The fast path of [`blocking`] runs on every syscall a goroutine makes. It looks the g and
//! its M up once (one `getg`) and carries them to the exit in its drop guard. The rare cases
//! (panics, the slow exit, the first start of the monitor) stay out of line. A yield or park
//! inside the syscall reaches g0 with the g still in `Syscall`, whose status check is a fatal
//! error there, so the g is never queued. The g changes M inside the call only when the call
//! itself runs `exitsyscall`, switches and runs `entersyscall` again. The exit then finds the
//! new M through the g's `m` field.

use std::mem;
use std::ptr;
use std::sync::atomic::Ordering;

use goro_abi::{GHeader, GRef, GStatus, PId, SyscallExit, getg};

use crate::m::{M, MCounters, Request, mcall};
use crate::trace::{self, Event};

/// The running goroutine and the M that runs it.
#[derive(Clone, Copy)]
struct Current {
    header: &'static GHeader,
    m: &'static M,
}

impl Current {
    /// Returns the running goroutine and its M, or `None` on g0 or a thread that runs no g.
    #[inline]
    fn get() -> Option<Current> {
        let g = getg();
        if g.is_null() {
            return None;
        }
        // SAFETY: a non-null g register points to the live header of what runs on this thread
        // (setg's contract). A goroutine outlives every call made on its own stack.
        let header: &'static GHeader = unsafe { &*g };
        // g0 has no runtime record: the scheduler itself is running, as in a scheduler hook.
        if header.runtime().is_null() {
            return None;
        }
        // SAFETY: the M that runs a g sets the g's `m` field before it switches to the g, and
        // an M outlives every g it runs.
        let m = unsafe { header.m().cast::<M>().as_ref() }?;
        Some(Current { header, m })
    }

    fn gref(self) -> GRef {
        // SAFETY: the header is the running g's, alive while it runs.
        unsafe { GRef::from_raw(ptr::NonNull::from(self.header)) }
    }
}

/// Marks the running goroutine as entering a syscall that usually returns quickly (a file
/// read, a stat). Its P stays attached, and the monitor retakes it only if the call lasts
/// past the grace period. Must be paired with [`exitsyscall`]; prefer [`blocking`].
///
/// # Panics
///
/// Panics when called from a thread that runs no goroutine, or twice without
/// `exitsyscall` in between.
pub fn entersyscall() {
    let Some(current) = Current::get() else {
        panic!("goro::entersyscall called from a thread that runs no goroutine");
    };
    enter_keeping_p(current);
}

/// Marks the running goroutine as entering a syscall known to block (a pipe or socket read, a
/// sleep, a wait): its P is handed to another M at once rather than when the monitor notices.
/// Must be paired with [`exitsyscall`]; prefer [`blocking_known`].
///
/// # Panics
///
/// As [`entersyscall`].
pub fn entersyscall_block() {
    let Some(current) = Current::get() else {
        panic!("goro::entersyscall_block called from a thread that runs no goroutine");
    };
    enter_handing_off_p(current);
}

/// Enters a syscall as [`entersyscall`] does: the P stays with the M, in `Syscall(m)`.
#[inline(always)]
fn enter_keeping_p(current: Current) {
    let p = enter(current, "entersyscall");
    let m = current.m;
    let shared = &*m.shared;
    let ps = &shared.ps[p.index()];
    // Only the P's owner writes the tick; Relaxed, see `P::syscalltick`.
    let syscalltick = ps.syscalltick.load(Ordering::Relaxed).wrapping_add(1);
    ps.syscalltick.store(syscalltick, Ordering::Relaxed);
    ps.state.entersyscall(m.id);
    shared
        .monitor
        .note_entersyscall(shared, m.id, p, syscalltick);
}

/// Enters a syscall as [`entersyscall_block`] does: the P leaves the M at once.
fn enter_handing_off_p(current: Current) {
    let p = enter(current, "entersyscall_block");
    trace::emit(|| Event::PStop { p: p.0 });
    let m = current.m;
    let shared = &*m.shared;
    shared.ps[p.index()].state.handoff(m.id);
    shared.handoffs.fetch_add(1, Ordering::Relaxed);
    shared.handoffp(p);
}

/// The part of both entries that runs before the P is released.
///
/// The M's P is cleared for the duration of the syscall: while it is `Syscall(m)` the monitor
/// may give it to another M, so code running in the syscall (a `ready` from inside a
/// `blocking` closure) must not treat it as its own.
#[inline(always)]
fn enter(current: Current, function: &'static str) -> PId {
    let Current { header, m } = current;
    if header.status() != GStatus::Running {
        not_running_at_entry(header, function);
    }
    let Some(p) = m.p() else {
        no_p_at_entry(function);
    };
    // SAFETY: `header` is the running g's, and the g enters its own syscall.
    let _ = unsafe { header.entersyscall() };
    // The frame is approximate: the address of a local stands for the stack pointer, this
    // function for the program counter. Dumps only need to know where the stack was in use.
    let marker = 0u8;
    header.set_syscall_frame(&marker as *const u8 as usize, enter as *const () as usize);
    // A panicking hook leaves the call before `blocking` arms its exit guard, so the g must
    // be back in `Running` for the unwind, or the g's exit would find it in a syscall that
    // has no P recorded. Forgotten below, so the fast path pays nothing for it.
    let undo = UndoEntryOnUnwind(header);
    // SAFETY: the runtime keeps every linked scheduler alive, and this M still holds P `p`.
    unsafe { header.sched().on_entersyscall(current.gref(), p) };
    mem::forget(undo);
    m.set_syscall_p(p);
    // Emitted while the M still names its P, so the trace shows where the syscall began.
    trace::emit(|| Event::SyscallEnter {
        goid: header.goid(),
        handoff: function == "entersyscall_block",
    });
    m.set_p(None);
    MCounters::bump(&m.counters.syscalls_entered);
    // Stored before the P becomes retakable (the Release store of `PState::entersyscall` or
    // `handoff` follows), so whoever sees the P idle later also sees this flag.
    m.in_syscall.store(true, Ordering::Relaxed);
    p
}

/// Puts a g whose `on_entersyscall` hook panicked back in `Running`, with no syscall frame.
struct UndoEntryOnUnwind<'a>(&'a GHeader);

impl Drop for UndoEntryOnUnwind<'_> {
    #[cold]
    fn drop(&mut self) {
        self.0.set_syscall_frame(0, 0);
        // SAFETY: the running g undoes its own entry, still holding its P.
        let _ = unsafe { self.0.exitsyscall() };
    }
}

#[cold]
#[inline(never)]
fn not_running_at_entry(header: &GHeader, function: &'static str) -> ! {
    panic!(
        "goro::{function}: goroutine {} is {}, not running: entered twice without exitsyscall",
        header.goid(),
        header.status()
    );
}

#[cold]
#[inline(never)]
fn no_p_at_entry(function: &'static str) -> ! {
    panic!("goro::{function}: the goroutine's M holds no P");
}

/// Marks the running goroutine as back from its syscall. Returns with the goroutine running
/// on a P: its own when the monitor did not retake it, otherwise any idle one, otherwise after
/// its scheduler has run it again, possibly on another M.
///
/// # Panics
///
/// Panics when called from a thread that runs no goroutine, or without a matching
/// `entersyscall`.
pub fn exitsyscall() {
    let Some(current) = Current::get() else {
        panic!("goro::exitsyscall called from a thread that runs no goroutine");
    };
    exit(current);
}

/// Leaves a syscall as [`exitsyscall`] does, with the fast path inline and the rest out of
/// line.
#[inline(always)]
fn exit(current: Current) {
    let Current { header, m } = current;
    if header.status() != GStatus::Syscall {
        not_in_syscall_at_exit(header);
    }
    let Some(old_p) = m.take_syscall_p() else {
        panic!("goro::exitsyscall: no P recorded at entersyscall");
    };
    header.set_syscall_frame(0, 0);
    if !m.shared.ps[old_p.index()].state.exitsyscall(m.id) {
        exit_without_own_p(current, old_p);
        return;
    }
    m.set_p(Some(old_p));
    MCounters::bump(&m.counters.fast_exits);
    trace::emit(|| Event::SyscallExit {
        goid: header.goid(),
        fast: true,
    });
    m.in_syscall.store(false, Ordering::Release);
    // SAFETY: the running g leaves its own syscall with its P back.
    let _ = unsafe { header.exitsyscall() };
    after_exit(current, old_p);
}

#[cold]
#[inline(never)]
fn not_in_syscall_at_exit(header: &GHeader) -> ! {
    panic!(
        "goro::exitsyscall: goroutine {} is {}, not in a syscall: exitsyscall without \
         entersyscall",
        header.goid(),
        header.status()
    );
}

/// Runs the slow path of `exitsyscall`, taken when the monitor retook `old_p` during the call.
#[cold]
#[inline(never)]
fn exit_without_own_p(current: Current, old_p: PId) {
    let Current { header, m } = current;
    MCounters::bump(&m.counters.slow_exits);
    m.set_p(None);
    if let Some(p) = m.shared.acquire_idle_p(m, Some(old_p)) {
        m.set_p(Some(p));
        // Emitted with the new P: the g runs on it from here on.
        trace::emit(|| Event::SyscallExit {
            goid: header.goid(),
            fast: false,
        });
        m.in_syscall.store(false, Ordering::Release);
        // SAFETY: the running g leaves its own syscall with an idle P.
        let _ = unsafe { header.exitsyscall() };
        after_exit(current, p);
        return;
    }
    // No P: the g goes back to its scheduler from g0 and this M stops.
    trace::emit(|| Event::SyscallExit {
        goid: header.goid(),
        fast: false,
    });
    mcall(Request::SyscallRequeue);
}

/// Asks the g's scheduler whether the g keeps running after its syscall.
#[inline]
fn after_exit(current: Current, p: PId) {
    // SAFETY: the runtime keeps every linked scheduler alive, and this M holds P `p` again.
    let decision = unsafe { current.header.sched().on_exitsyscall(current.gref(), p) };
    if decision == SyscallExit::Requeue {
        mcall(Request::RequeueRunning);
    }
}

/// Calls `exitsyscall` for the goroutine that entered the syscall when dropped, so that a
/// panic inside the call still restores the protocol.
struct ExitOnDrop(Current);

impl Drop for ExitOnDrop {
    #[inline]
    fn drop(&mut self) {
        exit_blocking(self.0);
    }
}

/// Runs `call` as a syscall that usually returns quickly, between [`entersyscall`] and
/// [`exitsyscall`]; `exitsyscall` runs also when `call` panics. Outside a goroutine (or on
/// g0) it just runs `call`.
#[inline]
pub fn blocking<F: FnOnce() -> R, R>(call: F) -> R {
    let Some(current) = enter_blocking() else {
        return call();
    };
    let _exit = ExitOnDrop(current);
    call()
}

/// The entry of [`blocking`], kept out of the generic function so that the whole fast path
/// is compiled (and inlined) in this crate. Returns `None` outside a goroutine.
#[inline(never)]
fn enter_blocking() -> Option<Current> {
    let current = Current::get()?;
    enter_keeping_p(current);
    Some(current)
}

/// Leaves the syscall of [`blocking`] and [`blocking_known`], which `enter_blocking` entered.
#[inline(never)]
fn exit_blocking(current: Current) {
    debug_assert!(
        ptr::eq(getg(), current.header),
        "exit_blocking: the g register changed inside a syscall"
    );
    // A call that ran `exitsyscall`, switched and ran `entersyscall` again may now be on
    // another M, whose syscall this exit must end. A g's `m` field names the M running it.
    if !ptr::eq(current.header.m().cast::<M>(), current.m) {
        exit_blocking_on_new_m();
        return;
    }
    exit(current);
}

/// Leaves the syscall of a `blocking` call whose g changed M inside the call.
#[cold]
#[inline(never)]
fn exit_blocking_on_new_m() {
    let Some(current) = Current::get() else {
        panic!("goro::blocking: the call ended on a thread that runs no goroutine");
    };
    exit(current);
}

/// Runs `call` as a syscall known to block, between [`entersyscall_block`] and
/// [`exitsyscall`]: the P is handed off before the call. Outside a goroutine it just runs
/// `call`.
pub fn blocking_known<F: FnOnce() -> R, R>(call: F) -> R {
    let Some(current) = Current::get() else {
        return call();
    };
    enter_handing_off_p(current);
    let _exit = ExitOnDrop(current);
    call()
}
