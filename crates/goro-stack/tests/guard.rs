//! Guard pages fault, and usable ranges are fully writable.

mod common;

use std::hint::black_box;

use common::{report, run_child, scenario};
use goro_stack::{AltStack, PoolConfig, Stack, StackPool, install_overflow_handler, page_size};

/// Dispatches the child scenarios; in a normal test run it does nothing.
#[test]
fn child_scenario() {
    let Some(scenario) = scenario() else {
        return;
    };
    let stack = Stack::with_guard(64 * 1024, 4 * page_size()).expect("Stack::with_guard");
    let guard = stack.guard();
    report("guard", format_args!("{:#x}-{:#x}", guard.start, guard.end));
    let address = match scenario.as_str() {
        "touch-lowest-guard-byte" => guard.start,
        "touch-highest-guard-byte" => guard.end - 1,
        "touch-guard-with-handler" => {
            install_overflow_handler();
            let _alt_stack = AltStack::install().expect("AltStack::install");
            // SAFETY: the fault is the point of the scenario.
            black_box(unsafe { common::read_byte(guard.end - 1) });
            unreachable!("reading the guard did not fault");
        }
        other => panic!("unknown scenario {other}"),
    };
    // SAFETY: the fault is the point of the scenario.
    black_box(unsafe { common::read_byte(address) });
    report("survived", format_args!("{address:#x}"));
}

#[test]
fn lowest_guard_byte_faults() {
    let output = run_child("child_scenario", "touch-lowest-guard-byte");
    output.assert_killed_by(libc::SIGSEGV, "SIGSEGV");
}

#[test]
fn highest_guard_byte_faults() {
    let output = run_child("child_scenario", "touch-highest-guard-byte");
    output.assert_killed_by(libc::SIGSEGV, "SIGSEGV");
}

#[test]
fn guard_fault_with_handler_aborts() {
    let output = run_child("child_scenario", "touch-guard-with-handler");
    output.assert_killed_by(libc::SIGABRT, "SIGABRT");
    let guard = output.reported("guard");
    let end = guard.split_once('-').expect("start-end").1;
    let expected = format!(
        "stack overflow on a goro stack with no goroutine running: fault address {:#x}, guard {guard}",
        usize::from_str_radix(end.trim_start_matches("0x"), 16).expect("hex") - 1
    );
    assert!(
        output.stderr.contains(&expected),
        "expected {expected:?}\n{}",
        output.transcript()
    );
}

/// Writes a pattern over the whole usable range and reads it back.
fn assert_fully_writable(stack: &Stack) {
    let words = stack.size() / size_of::<u64>();
    let base = stack.lo() as *mut u64;
    for index in 0..words {
        // SAFETY: the word lies in the stack's usable range, which nothing else uses.
        unsafe { base.add(index).write_volatile((stack.lo() + index) as u64) };
    }
    for index in 0..words {
        // SAFETY: as above.
        let value = unsafe { base.add(index).read_volatile() };
        assert_eq!(
            value,
            (stack.lo() + index) as u64,
            "word {index} of {stack:?}"
        );
    }
}

#[test]
fn usable_range_fully_writable() {
    for size in [
        goro_stack::MIN_STACK_SIZE,
        goro_stack::DEFAULT_STACK_SIZE,
        1 << 20,
    ] {
        let stack = Stack::new(size).expect("Stack::new");
        assert_eq!(stack.size(), size);
        assert_fully_writable(&stack);
    }
    let pool = StackPool::new(goro_stack::DEFAULT_STACK_SIZE, PoolConfig::new()).expect("pool");
    let mut cache = pool.local_cache();
    for _ in 0..3 {
        let stack = cache.get().expect("LocalCache::get");
        assert_fully_writable(&stack);
        cache.put(stack);
    }
}
