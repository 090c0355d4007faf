//! The monitor thread (Go's sysmon): retakes Ps from Ms blocked in syscalls.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use goro_abi::PId;
use goro_syscall::{Monitor, PObservation, POwner, RetakeDecision, WorkWaiting};

use crate::runtime::Shared;

/// The runtime's handle on its monitor thread, started at the first syscall.
#[derive(Default)]
pub(crate) struct MonitorHandle {
    started: AtomicBool,
    /// Whether the monitor sleeps longer than its minimum period, written by the monitor
    /// before each sleep and read (Relaxed: a hint) by `entersyscall`.
    backed_off: AtomicBool,
    /// Whether goroutines may be waiting for a P: raised by `wakep` when it finds no idle P,
    /// refreshed by the monitor at each scan, read by `entersyscall`.
    work_waiting: WorkWaiting,
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
    /// Set by `kick`: a timer earlier than the monitor's current sleep was added, or a syscall
    /// was entered while work waits.
    kicked: bool,
    /// The syscall whose entry kicked the monitor: its P, its syscall tick, and a time at
    /// which it was already going.
    kicked_by_syscall: Option<(PId, u32, Instant)>,
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
            .spawn(move || {
                // The thread copied the FP control state of the goroutine that started it;
                // runtime threads run with the defaults, as g0 does.
                goro_context::install_default_fp_control();
                run(&shared)
            });
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

    /// Called at every `entersyscall`: starts the monitor the first time. If the monitor
    /// sleeps long while goroutines may wait for a P, wakes it to scan at its short period,
    /// so that a blocking syscall loses its P within about the grace period. Costs three
    /// relaxed loads unless the monitor is backed off while work may be waiting.
    #[inline]
    pub(crate) fn note_entersyscall(&self, shared: &Shared, p: PId, syscalltick: u32) {
        self.ensure_started(shared);
        // Relaxed: `backed_off` is a hint; a stale value costs at most one needless
        // `has_work` or one wakeup that comes at the monitor's next scan instead.
        // NOTE: a monitor that backs off while this entry runs (its scan saw the P before the
        // syscall) is not woken, so the P waits for up to the long period. Closing that race
        // would take a SeqCst fence on every syscall entry.
        if self.backed_off.load(Ordering::Relaxed) && self.work_waiting.is_set() {
            self.nudge(shared, p, syscalltick);
        }
    }

    /// Kicks the backed-off monitor if work waits, unless a kick is already pending. The
    /// monitor learns which syscall kicked it and since when it runs, so that it can retake
    /// the P at its first scan after the grace period.
    #[cold]
    #[inline(never)]
    fn nudge(&self, shared: &Shared, p: PId, syscalltick: u32) {
        if shared.has_work() && !self.kick_pending.swap(true, Ordering::Relaxed) {
            let mut control = self.control.lock().unwrap_or_else(|e| e.into_inner());
            control.kicked = true;
            control.kicked_by_syscall = Some((p, syscalltick, Instant::now()));
            self.wakeup.notify_all();
        }
    }

    /// Called by `wakep` after it queued work and found no idle P to run it, with a SeqCst
    /// fence in between: the work waits for a running P, or for one that the monitor retakes
    /// from a syscall.
    #[inline]
    pub(crate) fn note_work_waiting(&self) {
        self.work_waiting.raise();
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
            // A kick from before `epoch` came while this thread was starting, so its time is
            // indistinguishable from the start. The syscall is then timed from its first scan,
            // as without a kick.
            if let Some((p, tick, since)) = control.kicked_by_syscall.take()
                && let Some(since) = since.checked_duration_since(epoch)
            {
                monitor.note_syscall_since(p.index(), tick, since.as_nanos() as u64);
            }
        }
        handle.kick_pending.store(false, Ordering::Relaxed);
        shared.timers.fire(Instant::now());
        let now = epoch.elapsed().as_nanos() as u64;
        let work_waiting = handle.work_waiting.refresh(|| shared.has_work());
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
        // A syscall that a kick started timing may reach the grace period before the next
        // scan, so the monitor wakes up for it then. The sleep lasts at least 1 us, so that
        // this loop cannot spin on a syscall past its grace period.
        if work_waiting && let Some(due) = monitor.until_grace_ends(now) {
            period = period.min(due.max(std::time::Duration::from_micros(1)));
        }
        handle
            .backed_off
            .store(monitor.is_backed_off(), Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use crate::m::current_m;

    /// Plays the monitor's part by hand (no monitor thread runs): the monitor is marked
    /// started and backed off, and the test checks whether a syscall entry kicks it.
    #[test]
    fn backed_off_monitor_is_kicked_only_when_work_waits() {
        let _serial = crate::trace::SESSION_TEST_LOCK
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let runtime = crate::Runtime::builder().procs(1).build().unwrap();
        runtime
            .block_on(|| {
                let shared = current_m()
                    .expect("a goroutine runs on an M")
                    .shared
                    .clone();
                let monitor = &shared.monitor;
                assert!(
                    !monitor.started.swap(true, Ordering::Relaxed),
                    "the monitor started before the first syscall"
                );
                monitor.backed_off.store(true, Ordering::Relaxed);
                let kicked = || monitor.control.lock().unwrap().kicked;

                // A scan with nothing queued clears the hint (raised, maybe, by the M that
                // started this goroutine).
                assert!(!monitor.work_waiting.refresh(|| shared.has_work()));
                crate::blocking(|| ());
                assert!(
                    !kicked(),
                    "a syscall kicked the monitor with nothing waiting"
                );

                // The only P is this goroutine's: the new one waits in the run queue.
                let waiting = crate::spawn(|| 7).unwrap();
                assert!(
                    monitor.work_waiting.is_set(),
                    "wakep did not raise the hint"
                );
                crate::blocking(|| ());
                assert!(
                    kicked(),
                    "a syscall with work waiting did not kick the monitor"
                );
                assert!(monitor.kick_pending.load(Ordering::Relaxed));
                let kicked_by = monitor.control.lock().unwrap().kicked_by_syscall;
                assert_eq!(kicked_by.map(|(p, _, _)| p), Some(goro_abi::PId(0)));
                assert_eq!(waiting.join().unwrap(), 7);
            })
            .unwrap();
    }
}
