//! Introspection: the running goroutine's M, goroutine dumps (on request or on SIGQUIT), and
//! the `GORO_DEBUG` settings read when a runtime is built.
//!
//! `GORO_DEBUG` is a comma-separated list of `name=value` settings, as Go's `GODEBUG`:
//!
//! * `schedtrace=MS` prints one line per runtime to standard error every `MS` milliseconds
//!   (see [`crate::Runtime`]'s schedtrace format in `docs/debugging.md`);
//! * `scheddetail=1` adds one line per P, M and goroutine to each schedtrace line;
//! * `sigquitdump=1` does what [`crate::Builder::dump_on_sigquit`] does.
//!
//! Unknown settings and invalid values are reported on standard error and ignored.

use std::io::{self, Write};
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

pub use crate::dump::{
    Backtrace, Dump, Frame, GoroutineDump, MDump, PDump, RuntimeDump, StackUsage,
};

use crate::m::current_m;
use crate::runtime::Shared;
use crate::schedtrace::SchedTrace;
use crate::trace::EnvTraceGuard;

/// The OS thread id (`gettid`) of the M that runs the calling goroutine, as the runtime
/// recorded it when the M started; `None` on a thread that is no M. It comes from the running
/// g's header (`GHeader::m`), so it shows which M the runtime believes runs the goroutine.
pub fn m_thread_id() -> Option<i64> {
    current_m().map(|m| m.thread_id.load(Ordering::Relaxed))
}

/// The id of the M that runs the calling goroutine; `None` on a thread that is no M.
pub fn m_id() -> Option<u32> {
    current_m().map(|m| m.id.0)
}

/// Takes a snapshot of every goroutine of every live runtime in the process, with the
/// backtraces of suspended goroutines.
///
/// Goroutines keep running while the dump reads them, so each entry is a snapshot of that
/// goroutine at a slightly different moment.
pub fn dump() -> Dump {
    let runtimes: Vec<(u64, Instant, Arc<Shared>)> = RUNTIMES
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .filter_map(|r| Some((r.id, r.started, r.shared.upgrade()?)))
        .collect();
    Dump {
        runtimes: runtimes
            .iter()
            .map(|(id, started, shared)| crate::dump::collect(shared, *id, started.elapsed(), true))
            .collect(),
    }
}

/// A live runtime, for process-wide dumps.
struct Registered {
    id: u64,
    started: Instant,
    shared: Weak<Shared>,
}

static RUNTIMES: Mutex<Vec<Registered>> = Mutex::new(Vec::new());

/// Numbers runtimes from 1 in the order they are built. Relaxed: only uniqueness matters.
static NEXT_RUNTIME_ID: AtomicU64 = AtomicU64::new(1);

/// What a runtime runs for observation: its registration for dumps, its schedtrace thread and
/// its part in the `GORO_TRACE` trace. Dropping it (after the runtime's Ms have stopped)
/// stops them all.
pub(crate) struct Observers {
    id: u64,
    started: Instant,
    schedtrace: Option<SchedTrace>,
    trace: Option<EnvTraceGuard>,
}

impl Observers {
    /// Starts what `GORO_DEBUG` and `GORO_TRACE` ask for, and SIGQUIT dumps when
    /// `dump_on_sigquit` is set.
    pub(crate) fn start(shared: &Arc<Shared>, dump_on_sigquit: bool) -> Observers {
        let settings = match std::env::var_os("GORO_DEBUG") {
            Some(text) => {
                // Bytes that are not UTF-8 become U+FFFD, so the items that contain them are
                // reported as invalid and the other items still apply.
                let (settings, problems) = Settings::parse(&text.to_string_lossy());
                for problem in problems {
                    eprintln!("goro: ignoring GORO_DEBUG setting {problem}");
                }
                settings
            }
            None => Settings::default(),
        };
        let id = NEXT_RUNTIME_ID.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        RUNTIMES
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Registered {
                id,
                started,
                shared: Arc::downgrade(shared),
            });
        if (dump_on_sigquit || settings.sigquit_dump)
            && let Err(error) = self::dump_on_sigquit()
        {
            eprintln!("goro: failed to install the SIGQUIT dump handler: {error}");
        }
        let schedtrace = settings.schedtrace.and_then(|period| {
            SchedTrace::start(shared.clone(), id, started, period, settings.scheddetail)
                .map_err(|error| eprintln!("goro: failed to start the schedtrace thread: {error}"))
                .ok()
        });
        Observers {
            id,
            started,
            schedtrace,
            trace: crate::trace::start_from_env(),
        }
    }

    /// Takes a snapshot of the runtime these observers belong to.
    pub(crate) fn dump(&self, shared: &Shared) -> RuntimeDump {
        crate::dump::collect(shared, self.id, self.started.elapsed(), true)
    }
}

impl Drop for Observers {
    fn drop(&mut self) {
        drop(self.schedtrace.take());
        drop(self.trace.take());
        RUNTIMES
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|r| r.id != self.id);
    }
}

/// The parsed `GORO_DEBUG` settings.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Settings {
    schedtrace: Option<Duration>,
    scheddetail: bool,
    sigquit_dump: bool,
}

/// The longest schedtrace period accepted: one hour.
const MAX_SCHEDTRACE_MS: u64 = 3_600_000;

impl Settings {
    /// Parses `text`; returns the settings and a description of each ignored item.
    fn parse(text: &str) -> (Settings, Vec<String>) {
        let mut settings = Settings::default();
        let mut problems = Vec::new();
        for item in text
            .split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
        {
            let Some((name, value)) = item.split_once('=') else {
                problems.push(format!("{item:?}: expected name=value"));
                continue;
            };
            // Spaces around `=` are accepted, as around the commas.
            let (name, value) = (name.trim(), value.trim());
            let flag = || match value {
                "0" => Some(false),
                "1" => Some(true),
                _ => None,
            };
            match name {
                "schedtrace" => match value.parse::<u64>() {
                    Ok(ms @ 1..=MAX_SCHEDTRACE_MS) => {
                        settings.schedtrace = Some(Duration::from_millis(ms));
                    }
                    _ => problems.push(format!(
                        "{item:?}: the period must be a number of milliseconds from 1 to \
                         {MAX_SCHEDTRACE_MS}"
                    )),
                },
                "scheddetail" | "sigquitdump" => match flag() {
                    Some(on) if name == "scheddetail" => settings.scheddetail = on,
                    Some(on) => settings.sigquit_dump = on,
                    None => problems.push(format!("{item:?}: the value must be 0 or 1")),
                },
                _ => problems.push(format!(
                    "{item:?}: unknown name; known are schedtrace, scheddetail and sigquitdump"
                )),
            }
        }
        (settings, problems)
    }
}

/// The write end of the self-pipe through which the SIGQUIT handler wakes the dump thread;
/// -1 until the handler is installed. Written once before the handler is installed (the
/// `sigaction` call orders it for the handler), read by the handler.
static SIGQUIT_PIPE: AtomicI32 = AtomicI32::new(-1);

/// Installs a process-wide SIGQUIT handler that prints [`dump`] (every goroutine of every
/// runtime) to standard error, instead of the default of dumping core. Installing it again
/// does nothing; it stays installed for the process's lifetime.
///
/// The signal handler only writes one byte to a pipe, which is async-signal-safe; a thread
/// named `goro-sigquit` reads the pipe and prints the dump.
///
/// # Errors
///
/// Returns the OS error when the pipe, the thread or the handler cannot be set up.
pub fn dump_on_sigquit() -> io::Result<()> {
    static INSTALLED: Mutex<bool> = Mutex::new(false);
    let mut installed = INSTALLED.lock().unwrap_or_else(|e| e.into_inner());
    if *installed {
        return Ok(());
    }
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let [read_end, write_end] = fds;
    // The reader blocks; only the writer, in the signal handler, must never block.
    // SAFETY: `read_end` is a descriptor this function owns.
    unsafe { libc::fcntl(read_end, libc::F_SETFL, 0) };
    std::thread::Builder::new()
        .name("goro-sigquit".into())
        .spawn(move || print_dumps(read_end))?;
    SIGQUIT_PIPE.store(write_end, Ordering::Relaxed);
    // SAFETY: an all-zero sigaction is valid; the fields that matter are set below.
    let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
    action.sa_sigaction = on_sigquit as *const () as usize;
    action.sa_flags = libc::SA_RESTART;
    // SAFETY: `action.sa_mask` is a valid sigset to initialize.
    unsafe { libc::sigemptyset(&mut action.sa_mask) };
    // SAFETY: installs a handler that only calls async-signal-safe functions.
    if unsafe { libc::sigaction(libc::SIGQUIT, &action, std::ptr::null_mut()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    *installed = true;
    Ok(())
}

/// The SIGQUIT handler: wakes the dump thread. Async-signal-safe: one atomic load and one
/// `write`, with `errno` preserved for the interrupted code.
extern "C" fn on_sigquit(_signal: libc::c_int) {
    // SAFETY: errno is thread-local; reading and restoring it is what a handler must do.
    let errno = unsafe { *libc::__errno_location() };
    let fd = SIGQUIT_PIPE.load(Ordering::Relaxed);
    // SAFETY: `fd` is the pipe's non-blocking write end; a full pipe already has a dump
    // pending, so a failed write loses nothing.
    unsafe { libc::write(fd, b"q".as_ptr().cast(), 1) };
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = errno };
}

/// The body of the `goro-sigquit` thread: one dump per byte read from the pipe.
fn print_dumps(read_end: libc::c_int) {
    let mut byte = 0u8;
    loop {
        // SAFETY: reads one byte into `byte` from a descriptor this thread owns.
        let read = unsafe { libc::read(read_end, (&mut byte as *mut u8).cast(), 1) };
        if read < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
            continue;
        }
        if read <= 0 {
            return;
        }
        let text = format!(
            "goro: SIGQUIT: dump of every goroutine\n{}goro: end of the dump\n",
            dump()
        );
        // Printing is best effort: there is no one to report a failure to.
        let _ = io::stderr().lock().write_all(text.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_parse_all_names() {
        let (settings, problems) = Settings::parse("schedtrace=250, scheddetail=1,sigquitdump=1");
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(settings.schedtrace, Some(Duration::from_millis(250)));
        assert!(settings.scheddetail);
        assert!(settings.sigquit_dump);
    }

    #[test]
    fn settings_reject_bad_items() {
        let (settings, problems) =
            Settings::parse("schedtrace=0,schedtrace=soon,scheddetail=yes,gctrace=1,oops");
        assert_eq!(settings, Settings::default());
        assert_eq!(problems.len(), 5, "{problems:?}");
        assert!(problems[0].contains("from 1 to 3600000"), "{}", problems[0]);
        assert!(problems[2].contains("must be 0 or 1"), "{}", problems[2]);
        assert!(problems[3].contains("unknown name"), "{}", problems[3]);
        assert!(
            problems[4].contains("expected name=value"),
            "{}",
            problems[4]
        );
    }

    #[test]
    fn settings_accept_spaces_around_equals() {
        let (settings, problems) = Settings::parse(" schedtrace = 5 , scheddetail =1");
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(settings.schedtrace, Some(Duration::from_millis(5)));
        assert!(settings.scheddetail);
    }

    #[test]
    fn settings_empty_is_default() {
        assert_eq!(Settings::parse(""), (Settings::default(), Vec::new()));
    }
}
