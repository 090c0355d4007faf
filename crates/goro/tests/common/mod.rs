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
