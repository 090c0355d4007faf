//! gdb's backtrace inside a context ends at the context's trampoline, and a backtrace inside
//! `on_stack` leads back to the original stack.
//!
//! The test runs gdb in batch mode on its own binary. Started with `GORO_CONTEXT_GDB_CHILD`
//! set, the binary runs the scenario instead: it stops twice at
//! `goro_context_gdb_breakpoint`, first inside a fresh context and then inside `on_stack`.
//! It has its own `main` (`harness = false` in Cargo.toml) because gdb must start it without
//! the test harness's threads and output capture.
//!
//! Only x86_64 is checked: under QEMU user mode gdb would have to attach through QEMU's gdb
//! stub. The test prints why it skips when gdb is missing or the target is not x86_64.

mod common;

use std::hint::black_box;
use std::process::{Command, ExitCode};

use goro_context::{init_stack, on_stack, switch};

const CHILD_ENV: &str = "GORO_CONTEXT_GDB_CHILD";
const STACK_SIZE: usize = 256 * 1024;

/// The function that gdb breaks in. `marker` tells the two stops apart.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn goro_context_gdb_breakpoint(marker: usize) -> usize {
    black_box(marker) + 1
}

#[inline(never)]
fn call_breakpoint_from_context() -> usize {
    black_box(goro_context_gdb_breakpoint(1))
}

unsafe extern "C" fn context_entry(_arg: usize, data: usize) -> ! {
    let slots = data as *mut (usize, usize);
    let result = call_breakpoint_from_context();
    loop {
        // SAFETY: `data` points to the slots, which outlive the context.
        unsafe { switch(&raw mut (*slots).1, (*slots).0, result) };
    }
}

unsafe extern "C" fn on_other_stack(marker: usize) -> usize {
    black_box(goro_context_gdb_breakpoint(marker))
}

/// The scenario that gdb runs.
fn run_child() -> ExitCode {
    let context_stack = common::TestStack::new(STACK_SIZE);
    let mut slots = (0usize, 0usize);
    let slots_ptr = &raw mut slots;
    // SAFETY: the stack is owned by the context and outlives it.
    let from_context = unsafe {
        (*slots_ptr).1 = init_stack(
            context_stack.lo(),
            context_stack.hi(),
            context_entry,
            slots_ptr as usize,
        );
        switch(&raw mut (*slots_ptr).0, (*slots_ptr).1, 0)
    };

    let system_stack = common::TestStack::new(STACK_SIZE);
    // SAFETY: the stack is unused and outlives the call.
    let from_other_stack = unsafe { on_stack(system_stack.hi(), on_other_stack, 2) };

    if from_context == 2 && from_other_stack == 3 {
        ExitCode::SUCCESS
    } else {
        eprintln!("unexpected results {from_context} and {from_other_stack}");
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
    let output = Command::new("gdb")
        .env(CHILD_ENV, "1")
        .args(["-nx", "-batch"])
        .args(["-ex", "set debuginfod enabled off"])
        .args(["-ex", "set pagination off"])
        .args(["-ex", "break goro_context_gdb_breakpoint"])
        .args(["-ex", "run"])
        .args(["-ex", "bt"])
        .args(["-ex", "continue"])
        .args(["-ex", "bt"])
        .args(["-ex", "continue"])
        .arg(&binary)
        .output()
        .expect("gdb could not be started");
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );

    let traces = backtraces(&text);
    let mut failures = Vec::new();
    check(traces.len() == 2, "expected two backtraces", &mut failures);
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
    if let [in_context, in_on_stack] = traces.as_slice() {
        let last = in_context.last().map(String::as_str).unwrap_or_default();
        check(
            last.contains("goro_context::arch::x86_64::trampoline"),
            "the context's backtrace does not end at the trampoline",
            &mut failures,
        );
        check(
            in_context
                .iter()
                .any(|frame| frame.contains("context_entry")),
            "the context's backtrace lacks its entry function",
            &mut failures,
        );
        check(
            in_context.len() <= 6,
            "the context's backtrace has frames beyond its entry",
            &mut failures,
        );
        check(
            in_on_stack
                .iter()
                .any(|frame| frame.contains("goro_context::arch::x86_64::on_stack")),
            "the on_stack backtrace lacks on_stack's frame",
            &mut failures,
        );
        check(
            in_on_stack.iter().any(|frame| frame.contains("run_child")),
            "the on_stack backtrace does not continue on the original stack",
            &mut failures,
        );
    }

    if failures.is_empty() {
        println!("gdb_backtrace: ok, both backtraces end cleanly");
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
