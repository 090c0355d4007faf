//! Runtime configuration and its validation.

use std::fmt;
use std::time::Duration;

use goro_sched::{Fifo, SchedHandle, Scheduler};
use goro_syscall::MonitorConfig;

use crate::runtime::Runtime;

/// Largest number of Ps a runtime accepts.
pub const MAX_PROCS: usize = 1024;

/// Go's default limit on OS threads per program.
pub const DEFAULT_MAX_THREADS: usize = 10_000;

/// Configures and builds a [`Runtime`].
///
/// ```
/// let rt = goro::Runtime::builder()
///     .procs(4)
///     .stack_size(128 * 1024)
///     .build()
///     .unwrap();
/// assert_eq!(rt.procs(), 4);
/// ```
#[derive(Debug)]
pub struct Builder {
    pub(crate) procs: usize,
    pub(crate) max_threads: usize,
    pub(crate) stack_size: usize,
    pub(crate) default_scheduler: SchedHandle,
    pub(crate) extra_schedulers: Vec<SchedHandle>,
    pub(crate) monitor: MonitorConfig,
    pub(crate) deadlock_detection: bool,
    pub(crate) dump_on_sigquit: bool,
    pub(crate) many_goroutines: bool,
    pub(crate) spawn_yields: bool,
}

impl Default for Builder {
    fn default() -> Self {
        Builder::new()
    }
}

impl Builder {
    /// A builder with the defaults: one P per CPU, the FIFO scheduler, stacks of
    /// [`goro_stack::DEFAULT_STACK_SIZE`] and at most 10,000 Ms.
    pub fn new() -> Builder {
        Builder {
            procs: std::thread::available_parallelism().map_or(1, |n| n.get()),
            max_threads: DEFAULT_MAX_THREADS,
            stack_size: goro_stack::DEFAULT_STACK_SIZE,
            default_scheduler: SchedHandle::new(Fifo::new()),
            extra_schedulers: Vec::new(),
            monitor: MonitorConfig::default(),
            deadlock_detection: true,
            many_goroutines: false,
            dump_on_sigquit: false,
            spawn_yields: true,
        }
    }

    /// Sets the number of Ps: how many goroutines run in parallel (Go's `GOMAXPROCS`).
    /// Valid: `1..=1024`.
    pub fn procs(mut self, procs: usize) -> Builder {
        self.procs = procs;
        self
    }

    /// Sets the most Ms (OS threads) the runtime may start, counting Ms blocked in syscalls.
    /// Must be at least `procs`.
    pub fn max_threads(mut self, max_threads: usize) -> Builder {
        self.max_threads = max_threads;
        self
    }

    /// Sets the usable size of each goroutine's stack in bytes, rounded up to pages. Valid:
    /// `goro_stack::MIN_STACK_SIZE..=goro_stack::MAX_STACK_SIZE`.
    ///
    /// The goroutine's control block (its g, the body's closure and the runtime's record)
    /// takes the top of the stack when it fits in an eighth of it. The goroutine's own frames
    /// then get that much less, a few hundred bytes for a default g and a small closure.
    pub fn stack_size(mut self, bytes: usize) -> Builder {
        self.stack_size = bytes;
        self
    }

    /// Sets the default scheduler, used by [`Runtime::spawn`] and [`crate::spawn`].
    pub fn scheduler<S: Scheduler>(mut self, scheduler: S) -> Builder {
        self.default_scheduler = SchedHandle::new(scheduler);
        self
    }

    /// Sets the default scheduler from a handle, keeping access to the scheduler (for
    /// counters or custom calls) through the caller's own `Arc`.
    pub fn scheduler_handle(mut self, scheduler: SchedHandle) -> Builder {
        self.default_scheduler = scheduler;
        self
    }

    /// Adds a further scheduler to the runtime. Its goroutines are spawned with
    /// [`Runtime::spawn_g`]; every P asks each scheduler for work in turn.
    pub fn add_scheduler(mut self, scheduler: SchedHandle) -> Builder {
        self.extra_schedulers.push(scheduler);
        self
    }

    /// Sets the grace period after which the monitor may retake the P of an M blocked in a
    /// syscall. Valid: 1 us to 1 s.
    pub fn syscall_grace(mut self, grace: Duration) -> Builder {
        self.monitor.grace = grace;
        self
    }

    /// Sets the shortest and longest sleep of the monitor between scans. Valid: 1 us to 1 s,
    /// `min <= max`.
    pub fn monitor_period(mut self, min: Duration, max: Duration) -> Builder {
        self.monitor.min_period = min;
        self.monitor.max_period = max;
        self
    }

    /// Turns deadlock detection on or off (on by default). When every goroutine is parked, no
    /// goroutine is in a syscall and no timer is pending, the runtime prints
    /// `all goroutines are asleep - deadlock!` with each goroutine's wait reason, and threads
    /// blocked in `join` or `block_on` get `JoinError::Deadlock`. A thread blocked on a
    /// `goro::sync` channel, lock or `WaitGroup` is not woken by the report. Turn detection off
    /// when goroutines wait for wakeups from threads that run no goroutine, which the runtime
    /// cannot see. A goroutine of another runtime counts as such a thread, for example when it
    /// sends on a channel, except when this runtime's goroutine waits for it in
    /// `JoinHandle::join` or `Runtime::block_on`.
    pub fn deadlock_detection(mut self, enabled: bool) -> Builder {
        self.deadlock_detection = enabled;
        self
    }

    /// Prints a dump of every goroutine of every runtime to standard error when the process
    /// receives SIGQUIT, instead of the default of dumping core (off by default). The handler
    /// is process-wide and stays installed; see [`crate::debug::dump_on_sigquit`].
    pub fn dump_on_sigquit(mut self, enabled: bool) -> Builder {
        self.dump_on_sigquit = enabled;
        self
    }

    /// Chooses the stack mode for very many goroutines (off by default).
    ///
    /// By default every stack is its own mapping with a guard page below it, which costs two
    /// of the kernel's memory mappings per goroutine; Linux's default `vm.max_map_count` of
    /// 65530 then caps a process at about 32,000 goroutines. In this mode, stacks are carved
    /// from large slabs with one guard page per slab, so a million parked goroutines fit.
    /// Overflow is detected by a canary at the bottom of each stack, checked at every switch
    /// back to the scheduler: an overflow that skips the canary, or that corrupts memory before
    /// the goroutine next switches, can go unnoticed (see `goro_stack`'s docs on slab mode).
    pub fn many_goroutines(mut self, enabled: bool) -> Builder {
        self.many_goroutines = enabled;
        self
    }

    /// Turns the yield of spawning goroutines on or off (on by default).
    ///
    /// When on, every 128th spawn made on an M yields the calling goroutine, as
    /// [`yield_now`](crate::yield_now) does, so that a goroutine spawning in a loop lets its
    /// own P run the goroutines it queued. Without it, only the other Ps run them, and a loop
    /// that outpaces them piles up queued goroutines, each holding a stack. A spawn never
    /// yields between [`entersyscall`](crate::entersyscall) and
    /// [`exitsyscall`](crate::exitsyscall), on an M's g0, in a scheduler hook other than
    /// `start` and `on_exitsyscall`, or while a panic unwinds. The rule holds for every spawn
    /// function called from one of the runtime's goroutines. A spawn from another thread never
    /// yields.
    ///
    /// Turn it off when goroutines spawn while holding something that must not be held across
    /// a switch. One is a `std::sync::Mutex` that the children lock too: with one P, a child
    /// would block the only M while the spawner waits to run. Another is a borrow of a
    /// thread-local, because the goroutine may resume on another thread. Children that spin,
    /// without switching, until the spawner does something after its loop also hang with one
    /// P.
    pub fn spawn_yields(mut self, enabled: bool) -> Builder {
        self.spawn_yields = enabled;
        self
    }

    /// Validates the configuration and starts the runtime.
    pub fn build(self) -> Result<Runtime, BuildError> {
        self.validate()?;
        Runtime::start(self)
    }

    fn validate(&self) -> Result<(), BuildError> {
        if !(1..=MAX_PROCS).contains(&self.procs) {
            return Err(BuildError::Procs { procs: self.procs });
        }
        if self.max_threads < self.procs {
            return Err(BuildError::MaxThreads {
                max_threads: self.max_threads,
                procs: self.procs,
            });
        }
        goro_stack::validate_stack_size(self.stack_size).map_err(BuildError::StackSize)?;
        let range = Duration::from_micros(1)..=Duration::from_secs(1);
        for (name, value) in [
            ("syscall grace", self.monitor.grace),
            ("minimum monitor period", self.monitor.min_period),
            ("maximum monitor period", self.monitor.max_period),
        ] {
            if !range.contains(&value) {
                return Err(BuildError::Duration { name, value });
            }
        }
        if self.monitor.min_period > self.monitor.max_period {
            return Err(BuildError::MonitorPeriods {
                min: self.monitor.min_period,
                max: self.monitor.max_period,
            });
        }
        let mut seen = vec![self.default_scheduler.link()];
        for extra in &self.extra_schedulers {
            if seen.contains(&extra.link()) {
                return Err(BuildError::DuplicateScheduler { name: extra.name() });
            }
            seen.push(extra.link());
        }
        Ok(())
    }
}

/// Why a runtime could not be built.
#[derive(Debug)]
#[non_exhaustive]
pub enum BuildError {
    /// `procs` is outside `1..=1024`.
    Procs {
        /// The rejected value.
        procs: usize,
    },
    /// `max_threads` is below `procs`.
    MaxThreads {
        /// The rejected value.
        max_threads: usize,
        /// The number of Ps.
        procs: usize,
    },
    /// The stack size is outside the valid range.
    StackSize(goro_stack::StackError),
    /// A duration setting is outside 1 us to 1 s.
    Duration {
        /// Which setting.
        name: &'static str,
        /// The rejected value.
        value: Duration,
    },
    /// The minimum monitor period is above the maximum.
    MonitorPeriods {
        /// The minimum period.
        min: Duration,
        /// The maximum period.
        max: Duration,
    },
    /// The same scheduler was added twice.
    DuplicateScheduler {
        /// Its name.
        name: &'static str,
    },
    /// The scheduler already serves another runtime: a scheduler serves one runtime for its
    /// whole life.
    SchedulerInUse {
        /// Its name.
        name: &'static str,
    },
    /// The first M could not be started.
    Thread(std::io::Error),
    /// The stack pool could not be created.
    Stack(goro_stack::StackError),
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BuildError::Procs { procs } => {
                write!(
                    f,
                    "invalid procs {procs}: the number of Ps must be in 1..={MAX_PROCS}"
                )
            }
            BuildError::MaxThreads { max_threads, procs } => write!(
                f,
                "invalid max_threads {max_threads}: it must be at least procs ({procs}), since \
                 every P needs an M"
            ),
            // The stack crate's message names the size, the valid range and the constants.
            BuildError::StackSize(error) => write!(f, "{error}"),
            BuildError::Duration { name, value } => {
                write!(f, "invalid {name} {value:?}: it must be between 1us and 1s")
            }
            BuildError::MonitorPeriods { min, max } => write!(
                f,
                "invalid monitor periods: the minimum {min:?} is above the maximum {max:?}; \
                 pass a minimum no larger than the maximum"
            ),
            BuildError::DuplicateScheduler { name } => {
                write!(f, "scheduler {name:?} was added to the runtime twice")
            }
            BuildError::SchedulerInUse { name } => write!(
                f,
                "scheduler {name:?} already serves another runtime; create a new scheduler \
                 for each runtime"
            ),
            BuildError::Thread(error) => {
                write!(f, "failed to start the runtime's first M: {error}")
            }
            BuildError::Stack(error) => write!(f, "failed to create the stack pool: {error}"),
        }
    }
}

impl std::error::Error for BuildError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BuildError::StackSize(error) | BuildError::Stack(error) => Some(error),
            BuildError::Thread(error) => Some(error),
            _ => None,
        }
    }
}
