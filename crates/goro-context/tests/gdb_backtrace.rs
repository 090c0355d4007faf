//! gdb's backtrace inside a context ends at the context's trampoline, and a backtrace inside
//! `on_stack` leads back to the original stack, whether the other stack lies above or below it.
//!
//! The test runs gdb in batch mode on its own binary. Started with `GORO_CONTEXT_GDB_CHILD`
//! set, the binary runs the scenario instead and stops three times at
//! `goro_context_gdb_breakpoint`: inside a fresh context, inside `on_stack` called from that
//! context onto a stack above the context's, and inside `on_stack` called from main onto a
//! stack below main's. It has its own `main` (`harness = false` in Cargo.toml) because gdb
//! must start it without the test harness's threads and output capture.
//!
//! Only x86_64 is checked: under QEMU user mode gdb would have to attach through QEMU's gdb
//! stub. The test prints why it skips when gdb is missing or the target is not x86_64.

mod common;

use std::fs::File;
use std::hint::black_box;
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use goro_context::{init_stack, on_stack, switch};

const CHILD_ENV: &str = "GORO_CONTEXT_GDB_CHILD";
const STACK_SIZE: usize = 256 * 1024;

/// Returns `marker + 1`. gdb stops here, and `marker` distinguishes the three stops.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn goro_context_gdb_breakpoint(marker: usize) -> usize {
    black_box(marker) + 1
}

#[inline(never)]
fn call_breakpoint_from_context() -> usize {
    black_box(goro_context_gdb_breakpoint(1))
}

unsafe extern "C" fn on_other_stack(marker: usize) -> usize {
    black_box(goro_context_gdb_breakpoint(marker))
}

/// State shared between main and the context.
struct Scenario {
    main_sp: usize,
    context_sp: usize,
    /// Top of a stack that lies above the context's stack.
    upper_stack_top: usize,
}

unsafe extern "C" fn context_entry(_arg: usize, data: usize) -> ! {
    let scenario = data as *mut Scenario;
    let from_context = call_breakpoint_from_context();
    // SAFETY: `data` points to the Scenario, which outlives the context, and the upper stack
    // is unused.
    let from_upper_stack = unsafe { on_stack((*scenario).upper_stack_top, on_other_stack, 2) };
    let both = from_context * 10 + from_upper_stack;
    loop {
        // SAFETY: as above; main is suspended in its switch to this context.
        unsafe { switch(&raw mut (*scenario).context_sp, (*scenario).main_sp, both) };
    }
}

/// Runs the scenario that gdb debugs.
fn run_child() -> ExitCode {
    // mmap usually places later mappings lower, but sort the two stacks to be sure.
    let mut stacks = [
        common::TestStack::new(STACK_SIZE),
        common::TestStack::new(STACK_SIZE),
    ];
    stacks.sort_by_key(common::TestStack::lo);
    let [context_stack, upper_stack] = &stacks;

    let mut scenario = Scenario {
        main_sp: 0,
        context_sp: 0,
        upper_stack_top: upper_stack.hi(),
    };
    let scenario_ptr = &raw mut scenario;
    // SAFETY: the context stack is owned by the context and outlives it.
    let from_context = unsafe {
        (*scenario_ptr).context_sp = init_stack(
            context_stack.lo(),
            context_stack.hi(),
            context_entry,
            scenario_ptr as usize,
        );
        switch(
            &raw mut (*scenario_ptr).main_sp,
            (*scenario_ptr).context_sp,
            0,
        )
    };

    // An mmap stack lies below the main thread's stack.
    let lower_stack = common::TestStack::new(STACK_SIZE);
    // SAFETY: the stack is unused and outlives the call.
    let from_lower_stack = unsafe { on_stack(lower_stack.hi(), on_other_stack, 3) };

    if from_context == 23 && from_lower_stack == 4 {
        ExitCode::SUCCESS
    } else {
        eprintln!("unexpected results {from_context} and {from_lower_stack}");
        ExitCode::FAILURE
    }
}

/// Frame lines (`#0 ...`) of each backtrace that gdb printed, in order.
fn backtraces(output: &str) -> Vec<Vec<String>> {
    let mut traces: Vec<Vec<String>> = Vec::new();
    let mut in_trace = false;
    for line in output.lines() {
        if line.starts_with("#0 ") {
            traces.push(Vec::new());
            in_trace = true;
        }
        if in_trace && line.starts_with('#') {
            traces.last_mut().unwrap().push(line.to_string());
        } else if in_trace && !line.starts_with(' ') {
            in_trace = false;
        }
    }
    traces
}

/// Records `message` in `failures` unless `condition` holds.
fn check(condition: bool, message: &str, failures: &mut Vec<String>) {
    if !condition {
        failures.push(message.to_string());
    }
}

/// Time after which a gdb run counts as hung. A normal run takes about a second.
const GDB_WATCHDOG: Duration = Duration::from_secs(300);

/// Runs `command` with stdout and stderr in a temporary file and returns the file's text,
/// or an error if it cannot start or runs longer than [`GDB_WATCHDOG`].
fn run_with_watchdog(mut command: Command) -> Result<String, String> {
    let path = std::env::temp_dir().join(format!("goro-context-gdb-{}.txt", std::process::id()));
    let file = File::create(&path).map_err(|error| format!("cannot create {path:?}: {error}"))?;
    let stderr = file
        .try_clone()
        .map_err(|error| format!("cannot duplicate the handle of {path:?}: {error}"))?;
    let mut child = command
        .stdout(Stdio::from(file))
        .stderr(Stdio::from(stderr))
        .spawn()
        .map_err(|error| format!("gdb could not be started: {error}"))?;

    let started = Instant::now();
    while child
        .try_wait()
        .map_err(|error| error.to_string())?
        .is_none()
    {
        if started.elapsed() > GDB_WATCHDOG {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "gdb ran longer than {GDB_WATCHDOG:?} and was killed"
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }

    let text = std::fs::read_to_string(&path)
        .map_err(|error| format!("cannot read gdb's output from {path:?}: {error}"));
    let _ = std::fs::remove_file(&path);
    text
}

/// Checks that `trace` ends at the trampoline after the context's entry function.
fn check_context_trace(trace: &[String], place: &str, failures: &mut Vec<String>) {
    let last = trace.last().map(String::as_str).unwrap_or_default();
    check(
        last.contains("goro_context::arch::x86_64::trampoline"),
        &format!("the backtrace {place} does not end at the trampoline"),
        failures,
    );
    check(
        trace.iter().any(|frame| frame.contains("context_entry")),
        &format!("the backtrace {place} lacks the context's entry function"),
        failures,
    );
}

/// Checks that `trace` passes through on_stack's frame, which gdb shows as a signal frame.
fn check_on_stack_frame(trace: &[String], place: &str, failures: &mut Vec<String>) {
    check(
        trace
            .iter()
            .any(|frame| frame.contains("<signal handler called>")),
        &format!("the backtrace {place} lacks on_stack's frame"),
        failures,
    );
}

fn run_parent() -> ExitCode {
    if !cfg!(target_arch = "x86_64") {
        println!("gdb_backtrace: skipped, the gdb check runs on x86_64 only");
        return ExitCode::SUCCESS;
    }
    if std::env::var_os("GORO_TEST_RUNNER").is_some_and(|runner| !runner.is_empty()) {
        println!("gdb_backtrace: skipped, GORO_TEST_RUNNER is set and gdb cannot run through it");
        return ExitCode::SUCCESS;
    }
    if Command::new("gdb").arg("--version").output().is_err() {
        println!("gdb_backtrace: skipped, gdb was not found on PATH");
        return ExitCode::SUCCESS;
    }

    let binary = std::env::current_exe().expect("the test binary's path");
    let mut gdb = Command::new("gdb");
    gdb.env(CHILD_ENV, "1")
        .args(["-nx", "-batch"])
        .args(["-ex", "set debuginfod enabled off"])
        .args(["-ex", "set pagination off"])
        .args(["-ex", "break goro_context_gdb_breakpoint"])
        .args(["-ex", "run"])
        .args(["-ex", "bt"])
        .args(["-ex", "continue"])
        .args(["-ex", "bt"])
        .args(["-ex", "continue"])
        .args(["-ex", "bt"])
        .args(["-ex", "continue"])
        .arg(&binary);
    let text = match run_with_watchdog(gdb) {
        Ok(text) => text,
        Err(message) => {
            println!("gdb_backtrace: FAILED: {message}");
            return ExitCode::FAILURE;
        }
    };

    let traces = backtraces(&text);
    let mut failures = Vec::new();
    check(
        traces.len() == 3,
        "expected three backtraces",
        &mut failures,
    );
    check(
        text.contains("exited normally"),
        "the scenario did not exit normally under gdb",
        &mut failures,
    );
    for marker in ["Backtrace stopped", "corrupt stack", "?? ("] {
        check(
            !text.contains(marker),
            &format!("gdb printed {marker:?}"),
            &mut failures,
        );
    }
    if let [in_context, upward, downward] = traces.as_slice() {
        check_context_trace(in_context, "in the context", &mut failures);
        check(
            in_context.len() <= 6,
            "the context's backtrace has frames beyond its entry",
            &mut failures,
        );
        check_context_trace(upward, "on the upper stack", &mut failures);
        check_on_stack_frame(upward, "on the upper stack", &mut failures);
        check_on_stack_frame(downward, "on the lower stack", &mut failures);
        check(
            downward.iter().any(|frame| frame.contains("run_child")),
            "the backtrace on the lower stack does not reach main's stack",
            &mut failures,
        );
    }

    if failures.is_empty() {
        println!("gdb_backtrace: ok, all three backtraces end cleanly");
        ExitCode::SUCCESS
    } else {
        println!(
            "gdb_backtrace: FAILED: {}\n--- gdb output ---\n{text}",
            failures.join("; ")
        );
        ExitCode::FAILURE
    }
}

fn main() -> ExitCode {
    if std::env::var_os(CHILD_ENV).is_some() {
        run_child()
    } else {
        run_parent()
    }
}
