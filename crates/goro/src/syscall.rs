//! Syscalls from goroutines: `entersyscall`, `exitsyscall` and the wrappers around them.
//!
//! While a goroutine blocks in a syscall, its M cannot run anything else, but its P can. The
//! goroutine marks the P as in a syscall on the way in (`entersyscall`), and the monitor
//! retakes the P if the call lasts longer than the grace period while other goroutines wait.
//! On the way out (`exitsyscall`) the fast path finds the P still its own; the slow path takes
//! an idle P, or hands the goroutine to its scheduler and stops the M. `docs/syscall.md`
//! describes the protocol in full.

use std::ptr;
use std::sync::atomic::Ordering;

use goro_abi::{GHeader, GRef, GStatus, PId, SyscallExit, getg};

use crate::m::{M, MCounters, Request, current_m, mcall};
use crate::trace::{self, Event};

/// Returns the running goroutine and its M, or `None` on g0 or a thread that runs no g.
fn running_g(function: &'static str) -> Option<(&'static GHeader, &'static M)> {
    let m = current_m()?;
    let g = getg();
    // SAFETY: the g register points to the live header of what runs on this thread.
    let header = unsafe { &*g };
    if header.runtime().is_null() {
        // g0: the scheduler itself is running, as in a scheduler hook.
        let _ = function;
        return None;
    }
    Some((header, m))
}

fn gref(header: &GHeader) -> GRef {
    // SAFETY: the header is the running g's, alive while it runs.
    unsafe { GRef::from_raw(ptr::NonNull::from(header)) }
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
    let Some((header, m)) = running_g("entersyscall") else {
        panic!("goro::entersyscall called from a thread that runs no goroutine");
    };
    let p = enter(header, m, "entersyscall");
    let shared = &m.shared;
    let ps = &shared.ps[p.index()];
    // Only the P's owner writes the tick; Relaxed, see `P::syscalltick`.
    ps.syscalltick.store(
        ps.syscalltick.load(Ordering::Relaxed).wrapping_add(1),
        Ordering::Relaxed,
    );
    ps.state.entersyscall(m.id);
    shared.monitor.ensure_started(shared);
    shared.monitor.nudge_for_syscall(shared);
}

/// Marks the running goroutine as entering a syscall known to block (a pipe or socket read, a
/// sleep, a wait): its P is handed to another M at once rather than when the monitor notices.
/// Must be paired with [`exitsyscall`]; prefer [`blocking_known`].
///
/// # Panics
///
/// As [`entersyscall`].
pub fn entersyscall_block() {
    let Some((header, m)) = running_g("entersyscall_block") else {
        panic!("goro::entersyscall_block called from a thread that runs no goroutine");
    };
    let p = enter(header, m, "entersyscall_block");
    trace::emit(|| Event::PStop { p: p.0 });
    let shared = &m.shared;
    shared.ps[p.index()].state.handoff(m.id);
    shared.handoffs.fetch_add(1, Ordering::Relaxed);
    shared.handoffp(p);
}

/// The part of both entries that runs before the P is released.
///
/// The M's P is cleared for the duration of the syscall: while it is `Syscall(m)` the monitor
/// may give it to another M, so code running in the syscall (a `ready` from inside a
/// `blocking` closure) must not treat it as its own.
fn enter(header: &GHeader, m: &M, function: &'static str) -> PId {
    let status = header.status();
    if status != GStatus::Running {
        panic!(
            "goro::{function}: goroutine {} is {status}, not running: entered twice without exitsyscall",
            header.goid()
        );
    }
    let p = m
        .p()
        .unwrap_or_else(|| panic!("goro::{function}: the goroutine's M holds no P"));
    let _ = header.entersyscall();
    // The frame is approximate: the address of a local stands for the stack pointer, this
    // function for the program counter. Dumps only need to know where the stack was in use.
    let marker = 0u8;
    header.set_syscall_frame(&marker as *const u8 as usize, enter as *const () as usize);
    // SAFETY: the runtime keeps every linked scheduler alive.
    unsafe { header.sched().on_entersyscall(gref(header), p) };
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

/// Marks the running goroutine as back from its syscall. Returns with the goroutine running
/// on a P: its own when the monitor did not retake it, otherwise any idle one, otherwise after
/// its scheduler has run it again, possibly on another M.
///
/// # Panics
///
/// Panics when called from a thread that runs no goroutine, or without a matching
/// `entersyscall`.
pub fn exitsyscall() {
    let Some((header, m)) = running_g("exitsyscall") else {
        panic!("goro::exitsyscall called from a thread that runs no goroutine");
    };
    if header.status() != GStatus::Syscall {
        panic!(
            "goro::exitsyscall: goroutine {} is {}, not in a syscall: exitsyscall without \
             entersyscall",
            header.goid(),
            header.status()
        );
    }
    let old_p = m
        .take_syscall_p()
        .expect("goro::exitsyscall: no P recorded at entersyscall");
    let shared = &m.shared;
    header.set_syscall_frame(0, 0);
    if shared.ps[old_p.index()].state.exitsyscall(m.id) {
        m.set_p(Some(old_p));
        MCounters::bump(&m.counters.fast_exits);
        trace::emit(|| Event::SyscallExit {
            goid: header.goid(),
            fast: true,
        });
        m.in_syscall.store(false, Ordering::Release);
        let _ = header.exitsyscall();
        after_exit(header, old_p);
        return;
    }
    MCounters::bump(&m.counters.slow_exits);
    m.set_p(None);
    if let Some(p) = shared.acquire_idle_p(m, Some(old_p)) {
        m.set_p(Some(p));
        // Emitted with the new P: the g runs on it from here on.
        trace::emit(|| Event::SyscallExit {
            goid: header.goid(),
            fast: false,
        });
        m.in_syscall.store(false, Ordering::Release);
        let _ = header.exitsyscall();
        after_exit(header, p);
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
fn after_exit(header: &GHeader, p: PId) {
    // SAFETY: the runtime keeps every linked scheduler alive.
    let decision = unsafe { header.sched().on_exitsyscall(gref(header), p) };
    if decision == SyscallExit::Requeue {
        mcall(Request::RequeueRunning);
    }
}

/// Calls `exitsyscall` when dropped, so that a panic inside the call still restores the
/// protocol.
struct ExitOnDrop;

impl Drop for ExitOnDrop {
    fn drop(&mut self) {
        exitsyscall();
    }
}

/// Runs `call` as a syscall that usually returns quickly, between [`entersyscall`] and
/// [`exitsyscall`]; `exitsyscall` runs also when `call` panics. Outside a goroutine (or on
/// g0) it just runs `call`.
pub fn blocking<F: FnOnce() -> R, R>(call: F) -> R {
    if running_g("blocking").is_none() {
        return call();
    }
    entersyscall();
    let _exit = ExitOnDrop;
    call()
}

/// Runs `call` as a syscall known to block, between [`entersyscall_block`] and
/// [`exitsyscall`]: the P is handed off before the call. Outside a goroutine it just runs
/// `call`.
pub fn blocking_known<F: FnOnce() -> R, R>(call: F) -> R {
    if running_g("blocking_known").is_none() {
        return call();
    }
    entersyscall_block();
    let _exit = ExitOnDrop;
    call()
}
