//! Running child processes: plain commands with inherited output, and test runs whose output
//! is echoed and counted, under a watchdog that turns a hang into a failure.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use crate::libtest::{self, TestCounts};

/// Environment variable that sets the watchdog of one test run, in minutes.
const TIMEOUT_VARIABLE: &str = "GORO_XTASK_TIMEOUT_MINS";

/// Watchdog default. A run includes its build, and a cross release build of the workspace
/// plus its tests under QEMU stays well below this on a 2-core machine, so only a hang
/// reaches it.
const DEFAULT_TIMEOUT_MINS: u64 = 30;

/// The end of the whole run's time budget, if one is set (`cargo xtask ci` sets it).
static DEADLINE: OnceLock<Instant> = OnceLock::new();

/// Sets the time after which [`run_tests`] starts nothing new and kills what still runs. Only
/// the first call has an effect.
pub fn set_deadline(deadline: Instant) {
    let _ = DEADLINE.set(deadline);
}

/// Returns whether the deadline set by [`set_deadline`] has passed.
pub fn past_deadline() -> bool {
    DEADLINE
        .get()
        .is_some_and(|deadline| Instant::now() >= *deadline)
}

/// How long to wait for the output pipes to close after the child exited. A grandchild that
/// outlives the child (a leaked test subprocess) keeps them open; its output is dropped after
/// this.
const PIPE_DRAIN_GRACE: Duration = Duration::from_secs(10);

/// Returns the command line as a shell would read it, with the environment variables that
/// `command` sets in front.
pub fn describe(command: &Command) -> String {
    let mut words = Vec::new();
    for (key, value) in command.get_envs() {
        if let Some(value) = value {
            words.push(format!("{}={}", key.to_string_lossy(), shell_quote(value)));
        }
    }
    words.push(shell_quote(command.get_program()));
    words.extend(command.get_args().map(shell_quote));
    words.join(" ")
}

fn shell_quote(word: &OsStr) -> String {
    let word = word.to_string_lossy();
    let plain = |c: char| c.is_ascii_alphanumeric() || "-_=./,:+@%".contains(c);
    if !word.is_empty() && word.chars().all(plain) {
        word.into_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// Prints `command`, runs it with inherited stdin, stdout and stderr, and returns its exit
/// status.
pub fn run(command: &mut Command) -> crate::Result<ExitStatus> {
    println!("$ {}", describe(command));
    flush_stdout();
    command
        .status()
        .map_err(|error| spawn_error(command, &error))
}

/// Runs `command` and returns its stdout, with stderr inherited; fails if it exits non-zero.
pub fn capture_stdout(command: &mut Command) -> crate::Result<String> {
    let output = command
        .stderr(Stdio::inherit())
        .output()
        .map_err(|error| spawn_error(command, &error))?;
    if !output.status.success() {
        return Err(format!("`{}` failed with {}", describe(command), output.status).into());
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

fn spawn_error(command: &Command, error: &std::io::Error) -> crate::Error {
    format!(
        "failed to start `{}`: {error}",
        command.get_program().to_string_lossy()
    )
    .into()
}

/// The results of a `cargo test` run or of one test binary's run.
#[derive(Debug, Default)]
pub struct TestRun {
    /// Sum of the `test result:` lines.
    pub counts: TestCounts,
    /// Test binaries that cargo reported as failed (`error: test failed, to rerun pass ...`).
    pub failed_binaries: u64,
    /// `test result:` lines that count at least one failed test.
    pub results_with_failures: u64,
    /// The exit status, or `None` if the watchdog killed the run.
    pub status: Option<ExitStatus>,
    /// The time from start to exit.
    pub elapsed: Duration,
}

impl TestRun {
    /// Failed test binaries that printed no failed test: they crashed, were killed, could not
    /// be executed (a missing QEMU, for one) or, with `harness = false`, exited non-zero.
    /// A binary that passes without printing a result (`harness = false`) is not counted.
    pub fn crashed_binaries(&self) -> u64 {
        self.failed_binaries
            .saturating_sub(self.results_with_failures)
    }

    /// Returns whether the process exited with status 0.
    pub fn exited_ok(&self) -> bool {
        self.status.is_some_and(|status| status.success())
    }
}

/// The destination to which [`run_tests_with`] copies the child's output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Echo {
    /// To this process's stdout and stderr.
    Terminal,
    /// Nowhere. The xtask's own tests use this, so that the fake libtest lines they produce
    /// never reach the output of the `cargo test` run that counts the real ones.
    #[cfg(test)]
    Discard,
}

/// Prints `command`, runs it while echoing its stdout and stderr line by line, and counts the
/// libtest results in them. After the watchdog time (`GORO_XTASK_TIMEOUT_MINS`, default 30)
/// or at the deadline, whichever comes first, the run and every process it started are
/// killed, and `status` is `None`. Past the deadline it fails without starting the command.
pub fn run_tests(command: &mut Command) -> crate::Result<TestRun> {
    run_tests_with(command, Echo::Terminal)
}

/// [`run_tests`] with a choice of where the output goes.
pub fn run_tests_with(command: &mut Command, echo: Echo) -> crate::Result<TestRun> {
    let mut timeout = minutes_from_env(TIMEOUT_VARIABLE, DEFAULT_TIMEOUT_MINS)?;
    if let Some(deadline) = DEADLINE.get() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err("skipped because the time budget of `cargo xtask ci` is used up".into());
        }
        timeout = timeout.min(left);
    }
    println!("$ {}", describe(command));
    flush_stdout();
    let start = Instant::now();
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|error| spawn_error(command, &error))?;

    let run = Arc::new(Mutex::new(TestRun::default()));
    let (done_sender, done_receiver) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().expect("stdout is piped");
    let stderr = child.stderr.take().expect("stderr is piped");
    for (stream, is_stdout) in [
        (Box::new(stdout) as Box<dyn Read + Send>, true),
        (Box::new(stderr), false),
    ] {
        let run = Arc::clone(&run);
        let done_sender = done_sender.clone();
        thread::spawn(move || {
            echo_and_count(stream, is_stdout, echo, &run);
            // The receiver stops waiting after PIPE_DRAIN_GRACE, and then this send has no reader.
            let _ = done_sender.send(());
        });
    }

    let status = wait_with_watchdog(&mut child, timeout)?;
    let drain_deadline = Instant::now() + PIPE_DRAIN_GRACE;
    for _ in 0..2 {
        let left = drain_deadline.saturating_duration_since(Instant::now());
        if done_receiver.recv_timeout(left).is_err() {
            println!(
                "xtask: output still open {}s after the run exited (a leaked subprocess?); \
                 counting what arrived",
                PIPE_DRAIN_GRACE.as_secs()
            );
            break;
        }
    }

    let mut run = std::mem::take(&mut *run.lock().expect("reader threads do not panic"));
    run.status = status;
    run.elapsed = start.elapsed();
    if status.is_none() {
        println!(
            "\nxtask: killed `{}` after {} s without exiting; set {TIMEOUT_VARIABLE} (one \
             run) or GORO_XTASK_CI_BUDGET_MINS (all of `cargo xtask ci`) to allow longer",
            command.get_program().to_string_lossy(),
            timeout.as_secs()
        );
    }
    Ok(run)
}

/// Copies `stream` line by line to this process's stdout or stderr (unless `echo` discards it)
/// and records libtest results (on stdout) and test binary starts (on cargo's stderr) in `run`.
fn echo_and_count(stream: Box<dyn Read + Send>, is_stdout: bool, echo: Echo, run: &Mutex<TestRun>) {
    let mut reader = BufReader::new(stream);
    let mut bytes = Vec::new();
    loop {
        bytes.clear();
        match reader.read_until(b'\n', &mut bytes) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let line = String::from_utf8_lossy(&bytes);
        if is_stdout {
            if let Some(counts) = libtest::parse_result_line(&line) {
                let mut run = run.lock().expect("reader threads do not panic");
                run.counts += counts;
                if counts.failed > 0 {
                    run.results_with_failures += 1;
                }
            }
            if echo == Echo::Terminal {
                let mut out = std::io::stdout().lock();
                let _ = out.write_all(&bytes);
                let _ = out.flush();
            }
        } else {
            if libtest::is_binary_failure(&line) {
                run.lock()
                    .expect("reader threads do not panic")
                    .failed_binaries += 1;
            }
            if echo == Echo::Terminal {
                let _ = std::io::stderr().lock().write_all(&bytes);
            }
        }
    }
}

/// Reads a duration in whole minutes from the environment variable `variable`, or returns
/// `default` minutes when it is unset.
pub fn minutes_from_env(variable: &str, default: u64) -> crate::Result<Duration> {
    parse_minutes(variable, std::env::var(variable).ok(), default)
}

fn parse_minutes(variable: &str, value: Option<String>, default: u64) -> crate::Result<Duration> {
    let minutes = match value {
        None => default,
        Some(value) => match value.trim().parse::<u64>() {
            Ok(minutes) if minutes > 0 => minutes,
            _ => {
                return Err(format!(
                    "invalid {variable}=`{value}`; expected a whole number of minutes, at \
                     least 1"
                )
                .into());
            }
        },
    };
    Ok(Duration::from_secs(minutes * 60))
}

/// Waits for `child` to exit. After `timeout` it kills the child and all its descendants and
/// returns `None`.
fn wait_with_watchdog(child: &mut Child, timeout: Duration) -> crate::Result<Option<ExitStatus>> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            kill_tree(child.id());
            // kill_tree already sent SIGKILL; this covers a system without /proc or `kill`.
            let _ = child.kill();
            child.wait()?;
            return Ok(None);
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// Sends SIGKILL to `root` and every process descended from it, found through `/proc`.
/// Descendants are collected before anything is killed, because a killed parent's children
/// are re-parented and could no longer be found.
fn kill_tree(root: u32) {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return;
    };
    let mut parents = Vec::new();
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|name| name.parse::<u32>().ok())
        else {
            continue;
        };
        if let Ok(stat) = std::fs::read_to_string(entry.path().join("stat"))
            && let Some(parent) = parent_pid(&stat)
        {
            parents.push((pid, parent));
        }
    }
    let mut tree = vec![root];
    let mut index = 0;
    while index < tree.len() {
        let parent = tree[index];
        tree.extend(
            parents
                .iter()
                .filter(|&&(_, p)| p == parent)
                .map(|&(pid, _)| pid),
        );
        index += 1;
    }
    let pids: Vec<String> = tree.iter().map(u32::to_string).collect();
    let _ = Command::new("kill")
        .arg("-KILL")
        .args(&pids)
        .stderr(Stdio::null())
        .status();
}

/// Extracts the parent pid from the text of `/proc/PID/stat`: `pid (comm) state ppid ...`,
/// where `comm` may itself contain spaces and parentheses.
fn parent_pid(stat: &str) -> Option<u32> {
    let after_comm = &stat[stat.rfind(')')? + 1..];
    after_comm.split_whitespace().nth(1)?.parse().ok()
}

fn flush_stdout() {
    let _ = std::io::stdout().flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describe_quotes_words_with_spaces() {
        let mut command = Command::new("cargo");
        command
            .args(["test", "--target", "riscv64gc-unknown-linux-gnu"])
            .env("RUNNER", "qemu-riscv64 -L /usr/riscv64-linux-gnu")
            .env_remove("GORO_TEST_RUNNER");
        assert_eq!(
            describe(&command),
            "RUNNER='qemu-riscv64 -L /usr/riscv64-linux-gnu' cargo test --target \
             riscv64gc-unknown-linux-gnu"
        );
    }

    #[test]
    fn minutes_parsed_or_defaulted() {
        let parse = |value: Option<&str>| parse_minutes("LIMIT", value.map(String::from), 30);
        assert_eq!(parse(None).unwrap(), Duration::from_secs(30 * 60));
        assert_eq!(parse(Some(" 5 ")).unwrap(), Duration::from_secs(5 * 60));
        for invalid in ["0", "-1", "1.5", "ten", ""] {
            let message = parse(Some(invalid)).unwrap_err().to_string();
            assert!(message.contains(&format!("LIMIT=`{invalid}`")), "{message}");
        }
    }

    #[test]
    fn parent_pid_survives_odd_command_names() {
        assert_eq!(parent_pid("4242 (cargo) S 17 4242 17 0 -1"), Some(17));
        assert_eq!(parent_pid("4243 (a) b (c) R 4242 4243 17 0"), Some(4242));
        assert_eq!(parent_pid("garbage"), None);
    }

    #[test]
    fn kill_tree_reaches_grandchildren() {
        let mut child = Command::new("sh")
            .args(["-c", "sleep 600 & echo $!; wait"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let grandchild: u32 = line.trim().parse().unwrap();

        kill_tree(child.id());
        let status = child.wait().unwrap();
        assert!(!status.success(), "sh exited by itself: {status}");

        // The killed grandchild may stay a zombie until its new parent reaps it; either way it
        // no longer runs. The watchdog only turns a failure to kill into a failed test.
        let watchdog = Instant::now() + Duration::from_secs(60);
        loop {
            let stat = std::fs::read_to_string(format!("/proc/{grandchild}/stat"));
            let state = stat.as_deref().ok().and_then(|stat| {
                let after_comm = &stat[stat.rfind(')')? + 1..];
                after_comm.split_whitespace().next().map(str::to_string)
            });
            match state.as_deref() {
                None | Some("Z") | Some("X") => break,
                Some(state) if Instant::now() >= watchdog => {
                    // A surviving sleep would keep the test's output pipe open for minutes.
                    let _ = Command::new("kill")
                        .args(["-KILL", &grandchild.to_string()])
                        .status();
                    panic!("grandchild {grandchild} still in state {state} after kill_tree");
                }
                Some(_) => {}
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    #[test]
    fn run_tests_counts_results_and_crashes() {
        // A stand-in for cargo: one binary fails a test, one passes without libtest
        // (harness = false), one crashes.
        let script = "echo 'test result: FAILED. 4 passed; 1 failed; 0 ignored; 0 measured; \
                      0 filtered out; finished in 0.01s'; \
                      echo 'error: test failed, to rerun pass `--lib`' >&2; \
                      echo '     Running tests/gdb.rs (target/debug/deps/gdb-3)' >&2; \
                      echo '     Running tests/crash.rs (target/debug/deps/crash-2)' >&2; \
                      echo 'error: test failed, to rerun pass `--test crash`' >&2; \
                      echo 'error: 2 targets failed:' >&2; \
                      exit 101";
        let run = run_tests_with(Command::new("sh").args(["-c", script]), Echo::Discard).unwrap();
        assert_eq!(
            run.counts,
            TestCounts {
                passed: 4,
                failed: 1
            }
        );
        assert_eq!(run.failed_binaries, 2);
        assert_eq!(run.crashed_binaries(), 1);
        assert_eq!(run.status.and_then(|status| status.code()), Some(101));
        assert!(!run.exited_ok());
    }
}
