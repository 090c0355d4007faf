//! Overflow reports and fault chaining, each in a child process that crashes on purpose.

mod common;

use std::hint::black_box;

use common::{
    ChildOutput, call_on_stack, recurse, recurse_forever, report, run_as_goroutine_42, run_child,
    scenario,
};
use goro_stack::{AltStack, PoolConfig, Stack, StackPool, install_overflow_handler};

fn report_guard(stack: &Stack) {
    report(
        "guard",
        format_args!("{:#x}-{:#x}", stack.guard().start, stack.guard().end),
    );
    report("size", stack.size());
}

/// Installs a handler for `signal` that exits with status 7 when the fault address is 0x10 and
/// 8 otherwise, writing a line first.
fn install_exiting_handler(signal: libc::c_int) {
    extern "C" fn exit_on_fault(_: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
        let line = b"previous handler ran\n";
        // SAFETY: write and _exit are async-signal-safe; `info` comes from the kernel.
        unsafe {
            libc::write(libc::STDERR_FILENO, line.as_ptr().cast(), line.len());
            let address = (*info).si_addr() as usize;
            libc::_exit(if address == 0x10 { 7 } else { 8 });
        }
    }
    // SAFETY: all-zero bytes are a valid sigaction.
    let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
    action.sa_sigaction = exit_on_fault as extern "C" fn(_, _, _) as usize;
    action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
    // SAFETY: `action` is initialized and its handler has the SA_SIGINFO signature.
    let rc = unsafe { libc::sigaction(signal, &action, std::ptr::null_mut()) };
    assert_eq!(rc, 0);
}

fn reset_to_default(signal: libc::c_int) {
    // SAFETY: SIG_DFL is a valid disposition for any signal.
    let previous = unsafe { libc::signal(signal, libc::SIG_DFL) };
    assert_ne!(previous, libc::SIG_ERR);
}

/// Dispatches the child scenarios; in a normal test run it does nothing.
#[test]
fn child_scenario() {
    let Some(scenario) = scenario() else {
        return;
    };
    match scenario.as_str() {
        "goroutine-overflow" => {
            install_overflow_handler();
            let _alt_stack = AltStack::install().expect("AltStack::install");
            let stack = Stack::new(64 * 1024).expect("Stack::new");
            report_guard(&stack);
            run_as_goroutine_42(&stack);
            // SAFETY: the stack is writable, unused, and its top is page-aligned.
            unsafe { call_on_stack(stack.hi(), recurse_forever) };
        }
        "pool-overflow-on-std-alt-stack" => {
            // No AltStack: the handler runs on the alternate stack Rust gives its threads.
            install_overflow_handler();
            let pool = StackPool::new(256 * 1024, PoolConfig::new().guard_size(64 * 1024))
                .expect("StackPool::new");
            let mut cache = pool.local_cache();
            let stack = cache.get().expect("LocalCache::get");
            report_guard(&stack);
            run_as_goroutine_42(&stack);
            // SAFETY: the stack is writable, unused, and its top is page-aligned.
            unsafe { call_on_stack(stack.hi(), recurse_forever) };
        }
        "overflow-without-g" => {
            install_overflow_handler();
            let _alt_stack = AltStack::install().expect("AltStack::install");
            let stack = Stack::new(64 * 1024).expect("Stack::new");
            report_guard(&stack);
            // SAFETY: the stack is writable, unused, and its top is page-aligned.
            unsafe { call_on_stack(stack.hi(), recurse_forever) };
        }
        "thread-overflow" => {
            install_overflow_handler();
            black_box(recurse(0));
        }
        "wild-read" => {
            install_overflow_handler();
            install_overflow_handler();
            let _alt_stack = AltStack::install().expect("AltStack::install");
            let stack = Stack::new(64 * 1024).expect("Stack::new");
            run_as_goroutine_42(&stack);
            // SAFETY: the fault is the point of the scenario.
            black_box(unsafe { common::read_byte(0x10) });
        }
        "wild-read-default-disposition" => {
            reset_to_default(libc::SIGSEGV);
            install_overflow_handler();
            // SAFETY: the fault is the point of the scenario.
            black_box(unsafe { common::read_byte(0x10) });
        }
        "raised-sigsegv" => {
            reset_to_default(libc::SIGSEGV);
            install_overflow_handler();
            // SAFETY: raise has no preconditions.
            unsafe { libc::raise(libc::SIGSEGV) };
            // The signal is delivered before raise returns, so this line never runs.
            report("survived", "raise");
        }
        "wild-read-previous-handler" => {
            install_exiting_handler(libc::SIGSEGV);
            install_overflow_handler();
            // SAFETY: the fault is the point of the scenario.
            black_box(unsafe { common::read_byte(0x10) });
        }
        "sigbus" => {
            install_overflow_handler();
            // A shared mapping of an empty file: reading its first page raises SIGBUS.
            // SAFETY: the name is a NUL-terminated string; the flags are valid.
            let fd = unsafe { libc::memfd_create(c"goro-stack-sigbus".as_ptr(), 0) };
            assert!(fd >= 0, "memfd_create failed");
            // SAFETY: a new shared mapping of our own file, at an address the kernel chooses.
            let page = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    4096,
                    libc::PROT_READ,
                    libc::MAP_SHARED,
                    fd,
                    0,
                )
            };
            assert_ne!(page, libc::MAP_FAILED);
            // SAFETY: the fault is the point of the scenario.
            black_box(unsafe { common::read_byte(page as usize) });
        }
        other => panic!("unknown scenario {other}"),
    }
    report("survived", "end of scenario");
}

fn child(scenario: &str) -> ChildOutput {
    run_child("child_scenario", scenario)
}

/// Checks the report line of an overflow on a stack whose guard the child reported.
fn assert_overflow_report(output: &ChildOutput, prefix: &str) {
    output.assert_killed_by(libc::SIGABRT, "SIGABRT");
    let line = output
        .stderr
        .lines()
        .find(|line| line.contains("stack overflow"))
        .unwrap_or_else(|| panic!("no overflow report\n{}", output.transcript()));
    assert!(
        line.starts_with(prefix),
        "report {line:?} does not start with {prefix:?}"
    );
    let guard = output.reported("guard");
    assert!(
        line.ends_with(&format!("guard {guard}")),
        "report {line:?} names another guard than {guard}"
    );

    let address = line
        .split("fault address 0x")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .and_then(|hex| usize::from_str_radix(hex, 16).ok())
        .unwrap_or_else(|| panic!("no fault address in {line:?}"));
    let (start, end) = guard.split_once('-').expect("guard is start-end");
    let start = usize::from_str_radix(start.trim_start_matches("0x"), 16).expect("hex start");
    let end = usize::from_str_radix(end.trim_start_matches("0x"), 16).expect("hex end");
    assert!(
        (start..end).contains(&address),
        "fault address {address:#x} outside guard {guard}"
    );
}

#[test]
fn goroutine_overflow_names_goid() {
    let output = child("goroutine-overflow");
    let size = output.reported("size");
    assert_eq!(size, "65536");
    let prefix = format!("goroutine 42 stack overflow: stack size {size} bytes, fault address 0x");
    assert_overflow_report(&output, &prefix);
}

#[test]
fn pool_stack_overflow_on_std_alt_stack() {
    let output = child("pool-overflow-on-std-alt-stack");
    let size = output.reported("size");
    let prefix = format!("goroutine 42 stack overflow: stack size {size} bytes, fault address 0x");
    assert_overflow_report(&output, &prefix);
}

#[test]
fn overflow_without_g_is_reported() {
    let output = child("overflow-without-g");
    assert_overflow_report(
        &output,
        "stack overflow on a goro stack with no goroutine running: fault address 0x",
    );
}

#[test]
fn thread_overflow_keeps_rust_report() {
    let output = child("thread-overflow");
    output.assert_killed_by(libc::SIGABRT, "SIGABRT");
    assert!(
        output.stderr.contains("has overflowed its stack"),
        "Rust's own overflow message is missing\n{}",
        output.transcript()
    );
    assert!(
        !output.stderr.contains("goroutine"),
        "{}",
        output.transcript()
    );
}

#[test]
fn wild_read_dies_by_sigsegv() {
    let output = child("wild-read");
    output.assert_killed_by(libc::SIGSEGV, "SIGSEGV");
    assert!(
        !output.stderr.contains("stack overflow"),
        "{}",
        output.transcript()
    );
}

#[test]
fn wild_read_under_default_disposition() {
    let output = child("wild-read-default-disposition");
    output.assert_killed_by(libc::SIGSEGV, "SIGSEGV");
    assert!(
        !output.stderr.contains("stack overflow"),
        "{}",
        output.transcript()
    );
}

#[test]
fn raised_sigsegv_still_kills() {
    let output = child("raised-sigsegv");
    output.assert_killed_by(libc::SIGSEGV, "SIGSEGV");
}

#[test]
fn previous_handler_gets_fault() {
    let output = child("wild-read-previous-handler");
    assert_eq!(
        output.status.code(),
        Some(7),
        "the previous handler did not run with the fault address 0x10\n{}",
        output.transcript()
    );
    assert!(
        output.stderr.contains("previous handler ran"),
        "{}",
        output.transcript()
    );
}

#[test]
fn sigbus_dies_by_sigbus() {
    let output = child("sigbus");
    output.assert_killed_by(libc::SIGBUS, "SIGBUS");
    assert!(
        !output.stderr.contains("stack overflow"),
        "{}",
        output.transcript()
    );
}
