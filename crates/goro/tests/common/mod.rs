//! Shared helpers of the runtime's integration tests.

#![allow(dead_code)]

use std::sync::mpsc;
use std::time::Duration;

/// Runs `body` on its own thread and fails the test if it has not finished within `limit`,
/// so that a lost wakeup or a deadlock shows up as a failure instead of a hung suite. The
/// limit is a hang detector, not a speed check: it is far above any normal run, also under
/// QEMU.
pub fn watchdog<T: Send + 'static>(
    limit: Duration,
    body: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (done, result) = mpsc::channel();
    let thread = std::thread::spawn(move || {
        let value = body();
        let _ = done.send(());
        value
    });
    match result.recv_timeout(limit) {
        Ok(()) => thread.join().expect("watchdog: the test body panicked"),
        Err(mpsc::RecvTimeoutError::Disconnected) => match thread.join() {
            Ok(_) => unreachable!("watchdog: the body finished without reporting"),
            Err(panic) => std::panic::resume_unwind(panic),
        },
        Err(mpsc::RecvTimeoutError::Timeout) => {
            panic!("watchdog: the test did not finish within {limit:?}: hang or lost wakeup")
        }
    }
}

/// Builds a runtime with `procs` Ps and deadlock detection off, for tests whose goroutines
/// wait for plain threads or park for good, which deadlock detection would report.
pub fn runtime_without_deadlock_detection(procs: usize) -> goro::Runtime {
    goro::Runtime::builder()
        .procs(procs)
        .deadlock_detection(false)
        .build()
        .expect("runtime builds")
}

/// Builds a runtime from `builder` with a reference scheduler: `"fifo"` for `Fifo`, any other
/// name for `WorkStealing`.
pub fn build_with_scheduler(builder: goro::Builder, scheduler: &str) -> goro::Runtime {
    match scheduler {
        "fifo" => builder.scheduler(goro_sched::Fifo::new()),
        _ => builder.scheduler(goro_sched::WorkStealing::new()),
    }
    .build()
    .expect("runtime builds")
}

/// The hang limit used by most tests.
pub const LIMIT: Duration = Duration::from_secs(120);

/// The OS thread id of the calling thread.
pub fn gettid() -> i64 {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::syscall(libc::SYS_gettid) }
}

/// A command that runs one test of the current test binary, `test_name`, in a child process,
/// prefixed with the words of `GORO_TEST_RUNNER` when it is set (QEMU for cross targets: there
/// is no binfmt_misc to run a foreign binary directly).
pub fn self_command(test_name: &str) -> std::process::Command {
    let exe = std::env::current_exe().unwrap();
    let runner = std::env::var("GORO_TEST_RUNNER").unwrap_or_default();
    let mut words = runner.split_whitespace();
    let mut command = match words.next() {
        Some(program) => {
            let mut command = std::process::Command::new(program);
            command.args(words).arg(&exe);
            command
        }
        None => std::process::Command::new(&exe),
    };
    command.args(["--exact", test_name, "--nocapture", "--test-threads=1"]);
    command
}

/// Makes one goroutine resume on another M, whatever the machine's load, and returns the
/// thread ids it ran on before and after, read with `gettid` and with the runtime's own record
/// of the M (`goro::debug::m_thread_id`). Call it from a goroutine of a runtime with `procs`
/// Ps.
///
/// `procs` goroutines keep every P busy by yielding, and the probe blocks in a call known to
/// block, which hands its P to another M. When the call returns no P is idle, so the probe's
/// M parks and the probe goes back to its scheduler; it resumes on an M that holds a P, which
/// cannot be the parked one. With `procs` = 1 this is certain: the one P stays with the M
/// that runs the yielding goroutine. With more Ps, a P left idle by the wakeup policy would
/// let the probe's own M take it back.
pub fn forced_migration(procs: usize) -> ((i64, Option<i64>), (i64, Option<i64>)) {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    let stop = Arc::new(AtomicBool::new(false));
    let spinners: Vec<_> = (0..procs)
        .map(|_| {
            let stop = stop.clone();
            goro::spawn(move || {
                while !stop.load(Ordering::Acquire) {
                    goro::yield_now();
                }
            })
            .unwrap()
        })
        .collect();
    let probe = goro::spawn(|| {
        let before = (gettid(), goro::debug::m_thread_id());
        goro::blocking_known(|| std::thread::sleep(std::time::Duration::from_millis(5)));
        let after = (gettid(), goro::debug::m_thread_id());
        (before, after)
    })
    .unwrap();
    let result = probe.join().unwrap();
    stop.store(true, Ordering::Release);
    for spinner in spinners {
        spinner.join().unwrap();
    }
    result
}

/// Runs [`forced_migration`] on a fresh one-P runtime and checks that the probe goroutine
/// changed threads and that the runtime's record of its M followed it. Tests whose own
/// goroutines change threads only under load call it, so that they always cover a resumed
/// goroutine.
pub fn check_forced_migration() {
    let rt = goro::Runtime::builder().procs(1).build().unwrap();
    let ((tid_before, m_before), (tid_after, m_after)) =
        watchdog(LIMIT, move || rt.block_on(|| forced_migration(1)).unwrap());
    assert_eq!(
        m_before,
        Some(tid_before),
        "before the move, the M is the running thread"
    );
    assert_eq!(
        m_after,
        Some(tid_after),
        "after the move, the M is the running thread"
    );
    assert_ne!(
        tid_before, tid_after,
        "the probe goroutine resumed on the same thread"
    );
}
