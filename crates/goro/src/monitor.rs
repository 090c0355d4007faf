//! The monitor thread (Go's sysmon): retakes Ps from Ms blocked in syscalls.

use std::sync::atomic::{AtomicBool, Ordering};
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
    pub(crate) fn ensure_started(&self, shared: &Shared) {
        // Relaxed fast check; the swap below decides who starts it.
        if self.started.load(Ordering::Relaxed) || self.started.swap(true, Ordering::AcqRel) {
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

    /// Called at syscall entry: if the monitor sleeps long while goroutines wait for a P, wake
    /// it and have it scan at its short period, so a blocking syscall loses its P within
    /// about the grace period instead of the monitor's long period. Costs one relaxed load
    /// when the monitor is not backed off.
    pub(crate) fn nudge_for_syscall(&self, shared: &Shared) {
        if self.backed_off.load(Ordering::Relaxed)
            && shared.has_work()
            && !self.kick_pending.swap(true, Ordering::Relaxed)
        {
            self.kick();
        }
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
        let work_waiting = shared.has_work();
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
