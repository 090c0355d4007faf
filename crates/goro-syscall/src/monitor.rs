//! The monitor's decisions: which Ps to retake from Ms stuck in syscalls, and how long to sleep
//! between scans. Pure logic over observations, driven by the runtime's monitor thread.

use std::time::Duration;

use crate::pstate::{MId, POwner};

/// Tuning of the monitor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MonitorConfig {
    /// Shortest sleep between scans, used while Ps are busy (Go's sysmon: 20 us).
    pub min_period: Duration,
    /// Longest sleep between scans, reached after many scans with nothing to do (Go: 10 ms).
    pub max_period: Duration,
    /// A syscall shorter than this is never retaken by the monitor (`entersyscall_block`
    /// still hands its P off at once).
    pub grace: Duration,
    /// A syscall longer than this loses its P even when no goroutine waits for one, so that
    /// work arriving later finds a P at once.
    pub force_retake_after: Duration,
}

impl Default for MonitorConfig {
    fn default() -> Self {
        MonitorConfig {
            min_period: Duration::from_micros(20),
            max_period: Duration::from_millis(10),
            grace: Duration::from_micros(20),
            force_retake_after: Duration::from_millis(10),
        }
    }
}

/// What the monitor reads of one P in a scan.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PObservation {
    /// The P's owner.
    pub owner: POwner,
    /// The P's syscall counter, bumped by its M at every entersyscall; the same value in two
    /// scans means the same syscall is still going.
    pub syscalltick: u32,
}

/// The monitor's verdict for one P.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RetakeDecision {
    /// Leave the P with its owner.
    Leave,
    /// Retake the P from M `MId`, blocked in a syscall (with `PState::retake`).
    Retake(MId),
}

/// Scans to wait, with nothing retaken, before the period starts doubling (Go: 50).
const IDLE_SCANS_BEFORE_BACKOFF: u32 = 50;

#[derive(Clone, Copy, Debug, Default)]
struct SyscallSeen {
    tick: u32,
    since_ns: u64,
    valid: bool,
}

/// The monitor's memory between scans.
#[derive(Debug)]
pub struct Monitor {
    config: MonitorConfig,
    seen: Vec<SyscallSeen>,
    idle_scans: u32,
    period: Duration,
    /// Whether this scan saw a syscall that was already going at the previous scan.
    long_syscall_seen: bool,
}

impl Monitor {
    /// A monitor for `procs` Ps.
    pub fn new(config: MonitorConfig, procs: usize) -> Monitor {
        Monitor {
            config,
            seen: vec![SyscallSeen::default(); procs],
            idle_scans: 0,
            period: config.min_period,
            long_syscall_seen: false,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &MonitorConfig {
        &self.config
    }

    /// Decides about P `p`, observed at `now_ns` (nanoseconds on any monotonic clock).
    /// `work_waiting` tells whether any goroutine waits for a P.
    pub fn observe(
        &mut self,
        p: usize,
        observation: PObservation,
        now_ns: u64,
        work_waiting: bool,
    ) -> RetakeDecision {
        let seen = &mut self.seen[p];
        let POwner::Syscall(m) = observation.owner else {
            seen.valid = false;
            return RetakeDecision::Leave;
        };
        if !seen.valid || seen.tick != observation.syscalltick {
            // A syscall this scan has not seen before: start its clock.
            *seen = SyscallSeen {
                tick: observation.syscalltick,
                since_ns: now_ns,
                valid: true,
            };
            return RetakeDecision::Leave;
        }
        // The same syscall as at the previous scan: it may need retaking soon, so the monitor
        // keeps its short period.
        self.long_syscall_seen = true;
        let elapsed = Duration::from_nanos(now_ns.saturating_sub(seen.since_ns));
        let long_enough = elapsed >= self.config.grace;
        if long_enough && (work_waiting || elapsed >= self.config.force_retake_after) {
            seen.valid = false;
            RetakeDecision::Retake(m)
        } else {
            RetakeDecision::Leave
        }
    }

    /// Starts the clock of P `p`'s syscall number `syscalltick` at `since_ns`, a time at
    /// which the caller knows that syscall was already going (its M woke the monitor after
    /// entering it). The next `observe` of the same syscall counts its length from there. A
    /// retake then need not wait for a second scan.
    pub fn note_syscall_since(&mut self, p: usize, syscalltick: u32, since_ns: u64) {
        self.seen[p] = SyscallSeen {
            tick: syscalltick,
            since_ns,
            valid: true,
        };
    }

    /// Returns whether the monitor already times syscall number `syscalltick` of P `p`: it saw
    /// it at an earlier scan, or a kick named it.
    pub fn is_timing(&self, p: usize, syscalltick: u32) -> bool {
        let seen = &self.seen[p];
        seen.valid && seen.tick == syscalltick
    }

    /// Returns how long until the first syscall seen in progress reaches the grace period,
    /// or `None` when no syscall is being timed. A monitor with work waiting sleeps no longer
    /// than this, so that it scans again just as a retake becomes due instead of up to one
    /// period later.
    pub fn until_grace_ends(&self, now_ns: u64) -> Option<Duration> {
        let grace = self.config.grace.as_nanos() as u64;
        self.seen
            .iter()
            .filter(|seen| seen.valid)
            .map(|seen| Duration::from_nanos((seen.since_ns + grace).saturating_sub(now_ns)))
            .min()
    }

    /// Brings the short period back at once: something (a syscall entered while goroutines
    /// wait for a P) asked for prompt scans.
    pub fn reset_period(&mut self) {
        self.idle_scans = 0;
        self.period = self.config.min_period;
    }

    /// Returns whether the current period is longer than the minimum, so that a syscall that
    /// blocks now would wait for more than one short period before the monitor looks.
    pub fn is_backed_off(&self) -> bool {
        self.period > self.config.min_period
    }

    /// Returns how long to sleep before the next scan, and starts a new scan. `retook` tells
    /// whether this scan retook any P; `all_idle` whether every P is idle.
    ///
    /// The period is short while a syscall lasts across scans (a retake may be due) or a P
    /// was just retaken, and doubles after many quiet scans, as Go's sysmon does. Short
    /// syscalls that come and go between scans count as quiet: a monitor that woke every 20 us
    /// whenever some P happened to be in a syscall would slow every syscall of a busy
    /// program down.
    pub fn next_period(&mut self, retook: bool, all_idle: bool) -> Duration {
        let long_syscall = std::mem::take(&mut self.long_syscall_seen);
        if retook || long_syscall {
            self.idle_scans = 0;
            self.period = self.config.min_period;
        } else if all_idle {
            self.period = self.config.max_period;
        } else {
            self.idle_scans = self.idle_scans.saturating_add(1);
            if self.idle_scans > IDLE_SCANS_BEFORE_BACKOFF {
                self.period = (self.period * 2).min(self.config.max_period);
            }
        }
        self.period
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn syscall(m: u32, tick: u32) -> PObservation {
        PObservation {
            owner: POwner::Syscall(MId(m)),
            syscalltick: tick,
        }
    }

    #[test]
    fn retakes_only_after_grace_with_waiting_work() {
        let mut monitor = Monitor::new(MonitorConfig::default(), 1);
        assert_eq!(
            monitor.observe(0, syscall(1, 7), 0, true),
            RetakeDecision::Leave
        );
        assert_eq!(
            monitor.observe(0, syscall(1, 7), 10_000, true),
            RetakeDecision::Leave
        );
        assert_eq!(
            monitor.observe(0, syscall(1, 7), 25_000, false),
            RetakeDecision::Leave
        );
        assert_eq!(
            monitor.observe(0, syscall(1, 7), 25_000, true),
            RetakeDecision::Retake(MId(1))
        );
    }

    #[test]
    fn grace_end_of_the_oldest_syscall_bounds_the_sleep() {
        let mut monitor = Monitor::new(MonitorConfig::default(), 3);
        assert_eq!(monitor.until_grace_ends(0), None);
        monitor.note_syscall_since(0, 1, 5_000);
        let _ = monitor.observe(1, syscall(2, 9), 12_000, true);
        assert_eq!(
            monitor.until_grace_ends(13_000),
            Some(Duration::from_micros(12))
        );
        // A syscall past its grace period (work stopped waiting) is due now.
        assert_eq!(monitor.until_grace_ends(40_000), Some(Duration::ZERO));
        // A P that left its syscall is no longer timed.
        let _ = monitor.observe(
            0,
            PObservation {
                owner: POwner::Idle,
                syscalltick: 1,
            },
            14_000,
            true,
        );
        assert_eq!(
            monitor.until_grace_ends(14_000),
            Some(Duration::from_micros(18))
        );
    }

    #[test]
    fn a_new_syscall_restarts_the_clock() {
        let mut monitor = Monitor::new(MonitorConfig::default(), 1);
        let _ = monitor.observe(0, syscall(1, 7), 0, true);
        assert_eq!(
            monitor.observe(0, syscall(1, 8), 50_000, true),
            RetakeDecision::Leave
        );
        assert_eq!(
            monitor.observe(0, syscall(1, 8), 80_000, true),
            RetakeDecision::Retake(MId(1))
        );
    }

    #[test]
    fn noted_syscall_is_retaken_at_first_scan() {
        let mut monitor = Monitor::new(MonitorConfig::default(), 2);
        monitor.note_syscall_since(1, 4, 1_000);
        assert_eq!(
            monitor.observe(1, syscall(2, 4), 10_000, true),
            RetakeDecision::Leave,
            "retaken before the grace period"
        );
        assert_eq!(
            monitor.observe(1, syscall(2, 4), 21_000, true),
            RetakeDecision::Retake(MId(2))
        );
    }

    #[test]
    fn noted_syscall_that_ended_restarts_clock() {
        let mut monitor = Monitor::new(MonitorConfig::default(), 1);
        monitor.note_syscall_since(0, 4, 0);
        assert_eq!(
            monitor.observe(0, syscall(2, 5), 50_000, true),
            RetakeDecision::Leave
        );
        assert_eq!(
            monitor.observe(0, syscall(2, 5), 60_000, true),
            RetakeDecision::Leave
        );
    }

    #[test]
    fn long_syscall_is_retaken_without_waiting_work() {
        let mut monitor = Monitor::new(MonitorConfig::default(), 1);
        let _ = monitor.observe(0, syscall(3, 1), 0, false);
        assert_eq!(
            monitor.observe(0, syscall(3, 1), 9_000_000, false),
            RetakeDecision::Leave
        );
        assert_eq!(
            monitor.observe(0, syscall(3, 1), 10_000_000, false),
            RetakeDecision::Retake(MId(3))
        );
    }

    #[test]
    fn period_backs_off_when_quiet_and_resets_on_long_syscalls() {
        let config = MonitorConfig::default();
        let mut monitor = Monitor::new(config, 2);
        for _ in 0..IDLE_SCANS_BEFORE_BACKOFF {
            assert_eq!(monitor.next_period(false, false), config.min_period);
        }
        assert_eq!(monitor.next_period(false, false), config.min_period * 2);
        assert_eq!(monitor.next_period(false, true), config.max_period);
        // A new syscall at each scan is quiet...
        let _ = monitor.observe(0, syscall(1, 1), 0, false);
        assert_eq!(monitor.next_period(false, false), config.max_period);
        let _ = monitor.observe(0, syscall(1, 2), 1_000, false);
        assert_eq!(monitor.next_period(false, false), config.max_period);
        // ...but one that lasts across two scans brings the short period back.
        let _ = monitor.observe(0, syscall(1, 2), 2_000, false);
        assert_eq!(monitor.next_period(false, false), config.min_period);
        assert_eq!(monitor.next_period(true, false), config.min_period);
    }
}
