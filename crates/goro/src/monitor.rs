//! The monitor thread (Go's sysmon): retakes Ps from Ms blocked in syscalls.

use std::sync::atomic::{AtomicBool, Ordering, fence};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use goro_abi::PId;
use goro_syscall::{Monitor, PObservation, POwner, RetakeDecision};

use crate::runtime::Shared;

/// The runtime's handle on its monitor thread, started at the first syscall.
#[derive(Default)]
pub(crate) struct MonitorHandle {
    started: AtomicBool,
    /// Whether the monitor sleeps longer than its minimum period, written by the monitor
    /// before each sleep and read (Relaxed: a hint) by `entersyscall`.
    backed_off: AtomicBool,
    /// Whether a goroutine may be waiting for a P: set by `wakep` when it finds no idle P,
    /// cleared and set again by the monitor at each scan from the schedulers' `has_work`.
    /// Read (Relaxed: a hint) by `entersyscall`, so that the common syscall, made while
    /// nothing waits, needs no `has_work` call.
    work_waiting: AtomicBool,
    /// Set by the first syscall that kicks a backed-off monitor, so that a burst of syscalls
    /// sends one wakeup; cleared by the monitor when it wakes.
    kick_pending: AtomicBool,
    control: Mutex<Control>,
    wakeup: Condvar,
    thread: Mutex<Option<JoinHandle<()>>>,
}

#[derive(Default)]
struct Control {
    stop: bool,
    /// Set by `kick`: a timer earlier than the monitor's current sleep was added.
    kicked: bool,
}

impl MonitorHandle {
    /// Starts the monitor if it is not running yet.
    #[inline]
    pub(crate) fn ensure_started(&self, shared: &Shared) {
        // Relaxed: a hint; `start` decides with a swap who starts the thread.
        if !self.started.load(Ordering::Relaxed) {
            self.start(shared);
        }
    }

    #[cold]
    #[inline(never)]
    fn start(&self, shared: &Shared) {
        if self.started.swap(true, Ordering::AcqRel) {
            return;
        }
        let shared = shared.arc();
        let spawned = std::thread::Builder::new()
            .name("goro-monitor".into())
            .spawn(move || run(&shared));
        match spawned {
            Ok(thread) => *self.thread.lock().unwrap_or_else(|e| e.into_inner()) = Some(thread),
            Err(error) => eprintln!(
                "goro: failed to start the monitor thread: {error}; Ps of goroutines blocked \
                 in syscalls will not be retaken"
            ),
        }
    }

    /// Wakes the monitor early, to recompute its sleep after an earlier timer was added.
    pub(crate) fn kick(&self) {
        self.control
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .kicked = true;
        self.wakeup.notify_all();
    }

    /// Called at every `entersyscall`: starts the monitor the first time, and if the monitor
    /// sleeps long while goroutines wait for a P, wakes it and has it scan at its short
    /// period, so that a blocking syscall loses its P within about the grace period instead
    /// of the monitor's long period. Costs three relaxed loads unless the monitor is backed
    /// off while work may be waiting.
    #[inline]
    pub(crate) fn note_entersyscall(&self, shared: &Shared) {
        self.ensure_started(shared);
        // Relaxed: hints. A stale value costs at most one needless `has_work` or one early
        // wakeup that comes late, at the monitor's next scan.
        if self.backed_off.load(Ordering::Relaxed) && self.work_waiting.load(Ordering::Relaxed) {
            self.nudge(shared);
        }
    }

    /// The part of `note_entersyscall` that runs while the monitor is backed off and work may
    /// be waiting.
    #[cold]
    #[inline(never)]
    fn nudge(&self, shared: &Shared) {
        if shared.has_work() && !self.kick_pending.swap(true, Ordering::Relaxed) {
            self.kick();
        }
    }

    /// Called by `wakep` after it queued work and found no idle P to run it: the work waits
    /// for a running P, or for one that the monitor retakes from a syscall.
    #[inline]
    pub(crate) fn note_work_waiting(&self) {
        // Relaxed: a hint. Loaded first so that a runtime whose Ps are all busy does not write
        // the shared line at every ready.
        if !self.work_waiting.load(Ordering::Relaxed) {
            self.work_waiting.store(true, Ordering::Relaxed);
        }
    }

    /// Recomputes `work_waiting` at a scan and returns whether work waits.
    fn refresh_work_waiting(&self, shared: &Shared) -> bool {
        // Cleared before the check, with a SeqCst fence between, which pairs with the fence
        // in `wakep`: either this `has_work` sees the g that `wakep` queued, or `wakep` reads
        // the cleared flag and sets it again. Either way the flag ends up set.
        if self.work_waiting.load(Ordering::Relaxed) {
            self.work_waiting.store(false, Ordering::Relaxed);
        }
        fence(Ordering::SeqCst);
        let waiting = shared.has_work();
        if waiting {
            self.work_waiting.store(true, Ordering::Relaxed);
        }
        waiting
    }

    /// Stops the monitor and waits for it.
    pub(crate) fn stop(&self) {
        self.control.lock().unwrap_or_else(|e| e.into_inner()).stop = true;
        self.wakeup.notify_all();
        if let Some(thread) = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = thread.join();
        }
    }
}

fn run(shared: &Arc<Shared>) {
    // A 1 us timer slack keeps the 20 us period near 20 us; the default 50 us slack would make
    // every short sleep last at least 50 us longer.
    // SAFETY: PR_SET_TIMERSLACK only changes this thread's timer slack.
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1000 as libc::c_ulong) };
    let handle = &shared.monitor;
    let mut monitor = Monitor::new(shared.monitor_config, shared.ps.len());
    let epoch = Instant::now();
    let mut period = shared.monitor_config.min_period;
    loop {
        // Sleep for the scan period, or until the next timer if that comes first.
        let sleep = match shared.timers.next_deadline() {
            Some(deadline) => period.min(deadline.saturating_duration_since(Instant::now())),
            None => period,
        };
        {
            let control = handle.control.lock().unwrap_or_else(|e| e.into_inner());
            let (mut control, _) = handle
                .wakeup
                .wait_timeout_while(control, sleep, |c| !c.stop && !c.kicked)
                .unwrap_or_else(|e| e.into_inner());
            if control.stop {
                return;
            }
            if std::mem::take(&mut control.kicked) {
                // `next_period` below starts from the short period again.
                monitor.reset_period();
            }
        }
        handle.kick_pending.store(false, Ordering::Relaxed);
        shared.timers.fire(Instant::now());
        let now = epoch.elapsed().as_nanos() as u64;
        let work_waiting = handle.refresh_work_waiting(shared);
        let (mut retook, mut all_idle) = (false, true);
        for (index, p) in shared.ps.iter().enumerate() {
            let owner = p.state.owner();
            if owner != POwner::Idle {
                all_idle = false;
            }
            let observation = PObservation {
                owner,
                syscalltick: p.syscalltick.load(Ordering::Relaxed),
            };
            if let RetakeDecision::Retake(m) =
                monitor.observe(index, observation, now, work_waiting)
                && p.state.retake(m)
            {
                retook = true;
                crate::trace::emit(|| crate::trace::Event::PStop { p: index as u32 });
                shared.retakes.fetch_add(1, Ordering::Relaxed);
                shared.handoffp(PId(index as u32));
            }
        }
        period = monitor.next_period(retook, all_idle);
        handle
            .backed_off
            .store(monitor.is_backed_off(), Ordering::Relaxed);
    }
}
