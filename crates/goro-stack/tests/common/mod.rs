//! Runs a scenario of the calling test binary in a child process, for tests that crash on
//! purpose or change process-wide state (signal handlers, resource limits).
//!
//! The parent re-executes its own test binary, filtered to the one test that dispatches
//! scenarios, with the scenario's name in `GORO_STACK_SCENARIO`. Under QEMU user mode there is
//! no binfmt_misc, so the command is prefixed with the words of `GORO_TEST_RUNNER` when set.
//!
//! The scenarios that overflow a stack on purpose run code on it with [`call_on_stack`], as a
//! goroutine whose g header [`run_as_goroutine_42`] sets.

#![allow(dead_code)]

use std::arch::asm;
use std::hint::black_box;
use std::io::Read;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use goro_abi::{GHeader, setg};
use goro_stack::Stack;

/// The environment variable that carries the scenario's name to the child.
pub const SCENARIO_VAR: &str = "GORO_STACK_SCENARIO";

/// Watchdog for a child, generous so that a slow emulated run is never killed. It turns a hang
/// into a failure and measures nothing.
const CHILD_TIMEOUT: Duration = Duration::from_secs(600);

/// Returns the scenario this process should run, or `None` in a normal test run.
pub fn scenario() -> Option<String> {
    std::env::var(SCENARIO_VAR).ok()
}

/// Exit status and output of a child process.
#[derive(Debug)]
pub struct ChildOutput {
    pub scenario: String,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl ChildOutput {
    /// Returns the signal that killed the child, if one did.
    pub fn signal(&self) -> Option<i32> {
        self.status.signal()
    }

    /// Panics unless the child died by `signal`.
    pub fn assert_killed_by(&self, signal: i32, name: &str) {
        assert_eq!(
            self.signal(),
            Some(signal),
            "scenario {} should die by {name}, but exited with {:?}\n{}",
            self.scenario,
            self.status,
            self.transcript()
        );
    }

    /// Panics unless the child exited with status 0.
    pub fn assert_success(&self) {
        assert!(
            self.status.success(),
            "scenario {} failed with {:?}\n{}",
            self.scenario,
            self.status,
            self.transcript()
        );
    }

    /// Returns the value that the child passed to [`report`] for `key`.
    pub fn reported(&self, key: &str) -> &str {
        // libtest prints "test NAME ... " without a newline before the test runs, so the
        // marker is searched anywhere in a line.
        let marker = format!("{REPORT_MARKER}{key}=");
        self.stdout
            .lines()
            .find_map(|line| line.split_once(marker.as_str()).map(|(_, value)| value))
            .unwrap_or_else(|| panic!("the child did not report {key}\n{}", self.transcript()))
    }

    /// Both output streams, for failure messages.
    pub fn transcript(&self) -> String {
        format!("--- stdout\n{}--- stderr\n{}---", self.stdout, self.stderr)
    }
}

/// Runs `scenario` in a child process of this test binary through the test named `entry`.
///
/// Core dumps are disabled in the child, so that crashing scenarios leave no files behind.
pub fn run_child(entry: &str, scenario: &str) -> ChildOutput {
    run(entry, scenario, None)
}

/// Runs `scenario` as [`run_child`] does, with the address-space limit (`RLIMIT_AS`) set to
/// `limit_bytes`.
///
/// The limit is set by `sh -c 'ulimit -v ...'` rather than by `setrlimit` before exec, because
/// under QEMU user mode this test binary is emulated and QEMU ignores a guest's `RLIMIT_AS`. The
/// host's shell runs natively, so its limit binds the emulator of the child as well.
pub fn run_child_limited(entry: &str, scenario: &str, limit_bytes: u64) -> ChildOutput {
    run(entry, scenario, Some(limit_bytes))
}

fn run(entry: &str, scenario: &str, address_space_limit: Option<u64>) -> ChildOutput {
    let exe = std::env::current_exe().expect("current_exe");
    let mut words: Vec<String> = std::env::var("GORO_TEST_RUNNER")
        .map(|runner| runner.split_whitespace().map(String::from).collect())
        .unwrap_or_default();
    words.push(exe.display().to_string());
    words.extend([entry, "--exact", "--nocapture", "--test-threads=1"].map(String::from));
    if let Some(limit) = address_space_limit {
        let kibibytes = limit / 1024;
        let script = format!("ulimit -v {kibibytes} && exec \"$@\"");
        let wrapper = ["/bin/sh", "-c", &script, "sh"].map(String::from);
        words.splice(0..0, wrapper);
    }

    let mut command = Command::new(&words[0]);
    command
        .args(&words[1..])
        .env(SCENARIO_VAR, scenario)
        .env("RUST_BACKTRACE", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: the hook only calls setrlimit, which is async-signal-safe.
    unsafe {
        command.pre_exec(|| {
            let no_core = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            if libc::setrlimit(libc::RLIMIT_CORE, &no_core) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }

    let mut child = command.spawn().unwrap_or_else(|error| {
        panic!(
            "could not start {words:?}: {error}; a test binary of a foreign arch needs \
             GORO_TEST_RUNNER set to its emulator command, e.g. \
             `qemu-aarch64 -L /usr/aarch64-linux-gnu`"
        )
    });
    let mut stdout = child.stdout.take().expect("piped stdout");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let stdout_reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        text
    });
    let stderr_reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });

    let deadline = Instant::now() + CHILD_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for the child") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("scenario {scenario} did not finish within {CHILD_TIMEOUT:?}; killed");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    ChildOutput {
        scenario: scenario.to_string(),
        status,
        stdout: stdout_reader.join().expect("stdout reader"),
        stderr: stderr_reader.join().expect("stderr reader"),
    }
}

/// Prefix of the lines that [`report`] prints.
const REPORT_MARKER: &str = "goro-stack-report:";

/// Prints `key=value` on stdout and flushes, for the parent's [`ChildOutput::reported`].
pub fn report(key: &str, value: impl std::fmt::Display) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{REPORT_MARKER}{key}={value}").expect("writing to stdout");
    stdout.flush().expect("flushing stdout");
}

/// Reads one byte at `address` with a volatile load.
///
/// # Safety
///
/// Reading an unmapped or protected address raises SIGSEGV; the caller wants that.
pub unsafe fn read_byte(address: usize) -> u8 {
    // SAFETY: the caller accepts the fault.
    unsafe { std::ptr::read_volatile(address as *const u8) }
}

/// Calls `function` with the stack pointer set to `top`.
///
/// The tests need only a plain call on another stack: the real context switch comes from
/// goro-context. The old stack pointer is kept in a callee-saved register, which `function`
/// preserves, and restored after the call.
///
/// # Safety
///
/// `top` must be the 16-byte-aligned top of a writable stack that nothing else uses.
pub unsafe fn call_on_stack(top: usize, function: extern "C" fn()) {
    assert_eq!(
        top % 16,
        0,
        "call_on_stack: the stack top {top:#x} is not 16-byte aligned"
    );

    // SAFETY: the caller provides a valid stack, and r12, declared clobbered, restores rsp.
    // `call` pushes the return address, so `function` starts with rsp = 8 mod 16 as the SysV
    // ABI requires.
    #[cfg(target_arch = "x86_64")]
    unsafe {
        asm!(
            "mov r12, rsp",
            "mov rsp, {top}",
            "call {function}",
            "mov rsp, r12",
            top = in(reg) top,
            function = in(reg) function,
            out("r12") _,
            clobber_abi("C"),
        );
    }

    // SAFETY: the caller provides a valid stack, and x20, declared clobbered, restores sp. The
    // AAPCS64 requires sp to be 16-byte aligned at the call, and `top` is.
    #[cfg(target_arch = "aarch64")]
    unsafe {
        asm!(
            "mov x20, sp",
            "mov sp, {top}",
            "blr {function}",
            "mov sp, x20",
            top = in(reg) top,
            function = in(reg) function,
            out("x20") _,
            clobber_abi("C"),
        );
    }

    // SAFETY: the caller provides a valid stack, and s2, declared clobbered, restores sp. The
    // RISC-V psABI requires sp to be 16-byte aligned at the call, and `top` is.
    #[cfg(target_arch = "riscv64")]
    unsafe {
        asm!(
            "mv s2, sp",
            "mv sp, {top}",
            "jalr {function}",
            "mv sp, s2",
            top = in(reg) top,
            function = in(reg) function,
            out("s2") _,
            clobber_abi("C"),
        );
    }
}

/// Recurses until the stack runs out, with a 512-byte array in each frame.
#[inline(never)]
pub fn recurse(depth: u64) -> u64 {
    let frame = [depth as u8; 512];
    black_box(&frame);
    if black_box(true) {
        // The addition after the call keeps it from becoming a loop.
        recurse(depth + 1) + u64::from(frame[7])
    } else {
        depth
    }
}

pub extern "C" fn recurse_forever() {
    black_box(recurse(0));
}

/// Makes a leaked g header with goid 42 that records `stack`, and sets the g register to it.
pub fn run_as_goroutine_42(stack: &Stack) {
    let g: &'static GHeader = Box::leak(Box::new(GHeader::new()));
    // SAFETY: the header is new and no runtime has it. `stack` is the stack that the code
    // runs on once the g register points to this header.
    unsafe {
        g.set_goid(42);
        g.set_stack(stack.lo(), stack.hi(), stack.lo());
    }
    // SAFETY: the header is leaked, so it stays live; it describes the stack the code will run on.
    unsafe { setg(std::ptr::from_ref(g).cast_mut()) };
}
