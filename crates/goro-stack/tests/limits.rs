//! Mapping failures come back as typed errors: under a small address-space limit, and when the
//! mapping table is full. Each runs in a child process, since it exhausts a process resource.

mod common;

use common::{report, run_child, run_child_limited, scenario};
use goro_stack::{MAX_STACK_SIZE, MIN_STACK_SIZE, PoolConfig, Stack, StackError, StackPool};

/// Address-space limit of the child, which also binds an emulator that runs the child. Large
/// enough for QEMU user mode to start; a few 1 GiB stacks exhaust it.
const ADDRESS_SPACE_LIMIT: u64 = 8 << 30;

/// Above this `vm.max_map_count`, filling the mapping table takes too long for a test.
const MAX_TESTED_MAP_COUNT: usize = 262_144;

/// Maps stacks of `size` bytes until mapping fails or `limit` stacks are live.
fn map_until_failure(size: usize, limit: usize) -> (Vec<Stack>, Option<StackError>) {
    let mut stacks = Vec::new();
    while stacks.len() < limit {
        match Stack::new(size) {
            Ok(stack) => stacks.push(stack),
            Err(error) => return (stacks, Some(error)),
        }
    }
    (stacks, None)
}

/// Dispatches the child scenarios; in a normal test run it does nothing.
#[test]
fn child_scenario() {
    let Some(scenario) = scenario() else {
        return;
    };
    match scenario.as_str() {
        "address-space-limit" => {
            let (stacks, error) = map_until_failure(MAX_STACK_SIZE, 64);
            let error = error.expect("64 stacks of 1 GiB were mapped under an 8 GiB limit");
            report("stacks", stacks.len());
            report("error", &error);
            report("errno", error.errno().unwrap_or(0));

            let pool = StackPool::new(MAX_STACK_SIZE, PoolConfig::new()).expect("StackPool::new");
            let pool_error = pool
                .get()
                .expect_err("StackPool::get mapped a stack past the limit");
            report("pool_error", &pool_error);
            report("pool_mapped", pool.stats().mapped_stacks);

            drop(stacks);
            let stack = Stack::new(MAX_STACK_SIZE).expect("mapping after unmapping failed");
            report("recovered", stack.size());
        }
        "map-count-limit" => {
            let max = max_map_count().expect("vm.max_map_count is readable");
            let (stacks, error) = map_until_failure(MIN_STACK_SIZE, max);
            let error = error.expect("more stacks than vm.max_map_count were mapped");
            report("stacks", stacks.len());
            report("error", &error);
            report("map_count", format_args!("{:?}", error.map_count()));
        }
        other => panic!("unknown scenario {other}"),
    }
}

fn max_map_count() -> Option<usize> {
    let text = std::fs::read_to_string("/proc/sys/vm/max_map_count").ok()?;
    text.trim().parse().ok()
}

#[test]
fn address_space_limit_gives_typed_error() {
    let output = run_child_limited("child_scenario", "address-space-limit", ADDRESS_SPACE_LIMIT);
    output.assert_success();
    assert_eq!(output.reported("errno"), libc::ENOMEM.to_string());
    let stacks: usize = output.reported("stacks").parse().expect("a count");
    assert!(
        stacks < 8,
        "{stacks} stacks of 1 GiB fit under an 8 GiB limit"
    );

    let error = output.reported("error");
    let expected = format!("failed for a stack of {MAX_STACK_SIZE} bytes with a");
    assert!(error.contains(&expected), "{error}");
    assert!(
        error.starts_with("mmap ") || error.starts_with("mprotect "),
        "{error}"
    );
    assert!(error.contains("os error 12"), "{error}");
    assert!(
        error.contains("ulimit -v"),
        "the advice is missing: {error}"
    );
    assert!(
        !error.contains("max_map_count"),
        "wrong cause named: {error}"
    );

    let pool_error = output.reported("pool_error");
    assert!(pool_error.contains(&expected), "{pool_error}");
    assert_eq!(output.reported("pool_mapped"), "0");
    assert_eq!(output.reported("recovered"), MAX_STACK_SIZE.to_string());
}

#[test]
fn map_count_limit_is_named() {
    let max = max_map_count().expect("vm.max_map_count is readable");
    if max > MAX_TESTED_MAP_COUNT {
        eprintln!("map_count_limit_is_named: skipped, vm.max_map_count is {max}");
        return;
    }
    let output = run_child("child_scenario", "map-count-limit");
    output.assert_success();
    let stacks: usize = output.reported("stacks").parse().expect("a count");
    // Each stack takes two mappings; the rest of the process takes some of the table too.
    assert!(
        stacks <= max / 2,
        "{stacks} stacks mapped under vm.max_map_count = {max}"
    );
    assert!(
        stacks > max / 4,
        "only {stacks} stacks mapped under vm.max_map_count = {max}"
    );

    let error = output.reported("error");
    assert!(error.contains("os error 12"), "{error}");
    assert!(
        error.contains(&format!("vm.max_map_count is {max}")),
        "{error}"
    );
    assert!(error.contains("sysctl -w vm.max_map_count="), "{error}");
    assert!(error.contains("use fewer stacks"), "{error}");
}
