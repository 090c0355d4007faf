//! The monitor thread (Go's sysmon): retakes Ps from Ms blocked in syscalls.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use goro_abi::PId;
use goro_syscall::{MId, Monitor, PObservation, POwner, RetakeDecision, WorkWaiting};

use crate::m::Standby;
use crate::runtime::Shared;

/// The runtime's handle on its monitor thread, started at the first syscall.
#[derive(Default)]
pub(crate) struct MonitorHandle {
    started: AtomicBool,
    /// Set by the first failed start, so that later failures print no warning.
    start_failed: AtomicBool,
    /// Whether the monitor sleeps longer than its minimum period, written by the monitor
    /// before each sleep and read (Relaxed: a hint) by `entersyscall`.
    backed_off: AtomicBool,
    /// Whether goroutines may be waiting for a P: raised by `wakep` when it finds no idle P,
    /// refreshed by the monitor at each scan, read by `entersyscall`.
    work_waiting: WorkWaiting,
    /// Set by the first syscall that kicks a backed-off monitor, so that a burst of syscalls
    /// sends one wakeup; cleared by the monitor when it wakes.
    kick_pending: AtomicBool,
    /// Number of nudges that woke a stand-by M or kicked the monitor. Relaxed: a statistic,
    /// read by tests.
    nudges: std::sync::atomic::AtomicU64,
    /// Set by the syscall that wakes an idle M to stand by for its P, cleared by that M when
    /// it has decided, so that only one M is on stand-by at a time.
    standby_pending: AtomicBool,
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
        // Held until the handle is stored. `stop` sets the stop flag before it takes this lock,
        // so it either finds the handle and joins the thread, or this call starts none. A
        // monitor started after the runtime stopped it would never be joined.
        let mut thread = self.thread.lock().unwrap_or_else(|e| e.into_inner());
        if self.control.lock().unwrap_or_else(|e| e.into_inner()).stop {
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
            Ok(spawned) => *thread = Some(spawned),
            Err(error) => {
                // Release: pairs with the AcqRel swap of the next `start`, which tries again.
                self.started.store(false, Ordering::Release);
                // Relaxed: only limits the warning to one per runtime.
                if !self.start_failed.swap(true, Ordering::Relaxed) {
                    // NOTE: until a later timer or syscall starts the monitor, timers that
                    // are already pending do not fire.
                    eprintln!(
                        "goro: failed to start the monitor thread: {error}; until it starts, \
                         timers do not fire and Ps of goroutines blocked in syscalls are not \
                         retaken. The next timer or syscall tries again; free memory or \
                         mappings (vm.max_map_count) so that a thread can start"
                    );
                }
            }
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
    /// sleeps long while goroutines may wait for a P, nudges (see `nudge`), so that a blocking
    /// syscall loses its P about when the grace period ends. Costs three relaxed loads unless
    /// the monitor is backed off while work may be waiting.
    #[inline]
    pub(crate) fn note_entersyscall(&self, shared: &Shared, m: MId, p: PId, syscalltick: u32) {
        self.ensure_started(shared);
        // Relaxed: `backed_off` is a hint; a stale value costs at most one needless
        // `has_work` or one wakeup that comes at the monitor's next scan instead.
        // NOTE: a monitor that backs off while this entry runs (its scan saw the P before the
        // syscall) is not woken, so the P waits for up to the long period. Closing that race
        // would take a SeqCst fence on every syscall entry.
        if self.backed_off.load(Ordering::Relaxed) && self.work_waiting.is_set() {
            self.nudge(shared, m, p, syscalltick);
        }
    }

    /// Acts for a syscall entered while work may wait and the monitor is backed off, if work
    /// does wait. The first such syscall wakes an idle M to stand by, and that M retakes the P
    /// itself if the call outlasts the grace period. Its wakeup overlaps the grace period,
    /// while a retake by the monitor would wake that M only after it. Any other syscall meanwhile, or
    /// one that finds no idle M, kicks the monitor unless a kick is already pending. The
    /// monitor learns which syscall kicked it and since when it runs, so that it can retake
    /// the P at its first scan after the grace period.
    #[cold]
    #[inline(never)]
    fn nudge(&self, shared: &Shared, m: MId, p: PId, syscalltick: u32) {
        if !shared.has_work() {
            return;
        }
        let since = Instant::now();
        let standby = Standby {
            p,
            m,
            syscalltick,
            since,
        };
        if self.stand_by(shared, standby) {
            self.nudges.fetch_add(1, Ordering::Relaxed);
            return;
        }
        // Relaxed: as in `stand_by`.
        if self.kick_pending.swap(true, Ordering::Relaxed) {
            return;
        }
        self.nudges.fetch_add(1, Ordering::Relaxed);
        let mut control = self.control.lock().unwrap_or_else(|e| e.into_inner());
        control.kicked = true;
        control.kicked_by_syscall = Some((p, syscalltick, since));
        self.wakeup.notify_all();
    }

    /// Wakes an idle M to stand by for `standby`, unless one already does or no M is idle.
    /// Returns whether it woke one.
    fn stand_by(&self, shared: &Shared, standby: Standby) -> bool {
        // Relaxed, here and for `kick_pending`: both flags only limit how many wakeups a burst
        // of syscalls sends; the wakeups themselves synchronize through their locks.
        if self.standby_pending.swap(true, Ordering::Relaxed) {
            return false;
        }
        if shared.stand_by_idle_m(standby) {
            return true;
        }
        self.standby_pending.store(false, Ordering::Relaxed);
        false
    }

    /// Called by an idle M that stood by for a syscall's P, once it has decided whether to
    /// retake it. After a retake, the next blocking call may get a stand-by M of its own.
    /// When the syscall returned first (`syscalls_go_on`), the syscalls are short, and the M
    /// kicks the monitor (unless a kick is pending), which then scans at its short period, so
    /// that further syscalls stop nudging until it backs off again. A P that the monitor
    /// retook, or a stand-by dropped for a P handed to the M, needs no kick. The kick costs
    /// the M a thread wakeup (about 25 us here), so it is kept off the paths where the M goes
    /// on to run a P.
    pub(crate) fn standby_finished(&self, syscalls_go_on: bool) {
        // The kick is claimed before the stand-by is released, so that a syscall in between
        // finds one of the two flags set and sends no wakeup of its own.
        let kick = syscalls_go_on && !self.kick_pending.swap(true, Ordering::Relaxed);
        self.standby_pending.store(false, Ordering::Relaxed);
        if kick {
            self.kick();
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
            // A syscall seen for the first time while work waits gets a stand-by M, as at a
            // nudge: the M wakes while the grace period runs, instead of after the retake.
            if work_waiting
                && let POwner::Syscall(m) = owner
                && !monitor.is_timing(index, observation.syscalltick)
            {
                handle.stand_by(
                    shared,
                    Standby {
                        p: PId(index as u32),
                        m,
                        syscalltick: observation.syscalltick,
                        since: Instant::now(),
                    },
                );
            }
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

    /// Runs `body` in the main goroutine of a new one-P runtime whose monitor is marked as
    /// started and backed off, with no thread behind it, so that only syscall entries and
    /// stand-by Ms act. `body` gets the runtime's shared state.
    fn with_fake_backed_off_monitor(body: impl FnOnce(&crate::runtime::Shared) + Send + 'static) {
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
                assert!(
                    !shared.monitor.started.swap(true, Ordering::Relaxed),
                    "the monitor started before the first syscall"
                );
                shared.monitor.backed_off.store(true, Ordering::Relaxed);
                body(&shared);
            })
            .unwrap();
    }

    #[test]
    fn stopped_monitor_never_starts() {
        let runtime = crate::Runtime::builder().procs(1).build().unwrap();
        let started = runtime
            .block_on(|| {
                let shared = &current_m().expect("a goroutine runs on an M").shared;
                shared.monitor.stop();
                shared.monitor.ensure_started(shared);
                let thread = shared.monitor.thread.lock().unwrap().take();
                thread.map(|thread| thread.join())
            })
            .unwrap();
        assert!(
            started.is_none(),
            "a monitor thread started after the stop, which nothing would join"
        );
    }

    /// Waits up to 5 s for `condition`.
    fn eventually(condition: impl Fn() -> bool) -> bool {
        let start = std::time::Instant::now();
        while !condition() {
            if start.elapsed() > std::time::Duration::from_secs(5) {
                return false;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        true
    }

    /// Plays the monitor's part by hand: the test checks whether a syscall entry nudges the
    /// backed-off monitor. A nudge kicks the monitor or wakes an idle M to stand by.
    #[test]
    fn backed_off_monitor_is_nudged_only_when_work_waits() {
        with_fake_backed_off_monitor(|shared| {
            let monitor = &shared.monitor;
            let nudges = || monitor.nudges.load(Ordering::Relaxed);

            // A scan with nothing queued clears the hint (raised, maybe, by the M that
            // started this goroutine).
            assert!(!monitor.work_waiting.refresh(|| shared.has_work()));
            crate::blocking(|| ());
            assert_eq!(nudges(), 0, "a syscall nudged with nothing waiting");
            assert!(!monitor.control.lock().unwrap().kicked);

            // The only P is this goroutine's: the new one waits in the run queue.
            let waiting = crate::spawn(|| 7).unwrap();
            assert!(
                monitor.work_waiting.is_set(),
                "wakep did not raise the hint"
            );
            crate::blocking(|| ());
            assert_eq!(nudges(), 1, "a syscall with work waiting did not nudge");
            let kicked_by = monitor.control.lock().unwrap().kicked_by_syscall;
            if let Some((p, _, _)) = kicked_by {
                assert_eq!(p, goro_abi::PId(0));
            }
            assert_eq!(waiting.join().unwrap(), 7);
        });
    }

    /// With no monitor thread at all, an idle M woken at the syscall's entry must retake the
    /// P for the goroutine that waits, while the syscall still blocks.
    #[test]
    fn stand_by_m_retakes_the_p_of_a_blocked_syscall() {
        use std::sync::Arc;
        use std::sync::atomic::AtomicBool;

        with_fake_backed_off_monitor(|shared| {
            // A call known to block hands the P to a second M, which runs the waiting
            // goroutine and then goes idle: the stand-by M below.
            let first = crate::spawn(|| ()).unwrap();
            crate::blocking_known(|| std::thread::sleep(std::time::Duration::from_millis(50)));
            first.join().unwrap();
            assert!(eventually(|| shared.idle_counts().2 > 0), "no M went idle");

            let retakes = shared.retakes.load(Ordering::Relaxed);
            let ran = Arc::new(AtomicBool::new(false));
            let waiting = {
                let ran = ran.clone();
                crate::spawn(move || ran.store(true, Ordering::SeqCst)).unwrap()
            };
            // Blocks until the waiting goroutine has run, which needs this P.
            let ran_during_call = crate::blocking(|| eventually(|| ran.load(Ordering::SeqCst)));
            assert!(
                ran_during_call,
                "the waiting goroutine did not run while the syscall blocked"
            );
            assert_eq!(shared.retakes.load(Ordering::Relaxed), retakes + 1);
            waiting.join().unwrap();
        });
    }
}
