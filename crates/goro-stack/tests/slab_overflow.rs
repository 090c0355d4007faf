//! Overflows of slab stacks, each in a child process that aborts on purpose: a canary found
//! overwritten at the check produces the report and SIGABRT, and a run-away recursion reaches
//! the slab's guard and is reported by the fault handler.

mod common;

use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::{
    ChildOutput, call_on_stack, recurse_forever, report, run_as_goroutine_42, run_child, scenario,
};
use goro_stack::{AltStack, PoolConfig, Stack, StackPool, install_overflow_handler, page_size};

/// The address below which `descend` stops recursing.
static STOP_BELOW: AtomicUsize = AtomicUsize::new(0);

/// Recurses, filling a 1 KiB array in each frame, until a frame lies below `STOP_BELOW`, then
/// returns: an overflow that stops short of any fault.
#[inline(never)]
fn descend(depth: u64) -> u64 {
    let frame = [depth as u8; 1024];
    black_box(&frame);
    // Relaxed: written by the same thread before the call.
    if (frame.as_ptr() as usize) > STOP_BELOW.load(Ordering::Relaxed) {
        // The addition after the call keeps it from becoming a loop.
        descend(depth + 1) + u64::from(frame[7])
    } else {
        depth
    }
}

extern "C" fn overflow_by_two_kib() {
    black_box(descend(0));
}

/// A slab pool with small slabs, so that its first stacks are the lowest of the first slab.
fn slab_pool() -> StackPool {
    let config = PoolConfig::slab().slab_size(goro_stack::MIN_SLAB_SIZE);
    StackPool::new(64 * 1024, config).expect("StackPool::new")
}

fn report_stack(stack: &Stack) {
    report("stack", format_args!("{:#x}-{:#x}", stack.lo(), stack.hi()));
    report("size", stack.size());
}

/// What the runtime does at a switch back to g0.
fn check_at_switch(stack: &Stack) {
    if let Err(overflow) = stack.check_canary() {
        overflow.report_and_abort(42);
    }
}

/// Dispatches the child scenarios; in a normal test run it does nothing.
#[test]
fn child_scenario() {
    let Some(scenario) = scenario() else {
        return;
    };
    install_overflow_handler();
    let _alt_stack = AltStack::install().expect("AltStack::install");
    let pool = slab_pool();
    let lowest = pool.get().expect("StackPool::get");
    let second = pool.get().expect("StackPool::get");
    assert_eq!(
        lowest.hi(),
        second.lo(),
        "the first two stacks are adjacent"
    );
    match scenario.as_str() {
        "canary-overwritten" => {
            report_stack(&second);
            // SAFETY: the word is the lowest of the canary of a stack this process holds.
            unsafe { (second.lo() as *mut u64).write_volatile(0) };
            check_at_switch(&second);
        }
        "bounded-overflow" => {
            report_stack(&second);
            // Relaxed: read by this thread only.
            STOP_BELOW.store(second.lo() - 2048, Ordering::Relaxed);
            run_as_goroutine_42(&second);
            // SAFETY: the stack is writable and unused, and its top is 16-byte aligned. The
            // recursion runs 2 KiB into the top of `lowest`, which nothing uses.
            unsafe { call_on_stack(second.hi(), overflow_by_two_kib) };
            check_at_switch(&second);
        }
        "intact-canary" => {
            run_as_goroutine_42(&second);
            // Relaxed: read by this thread only.
            STOP_BELOW.store(second.lo() + 8 * 1024, Ordering::Relaxed);
            // SAFETY: as above; this recursion stays 8 KiB above the canary.
            unsafe { call_on_stack(second.hi(), overflow_by_two_kib) };
            check_at_switch(&second);
        }
        "run-away-lowest" => {
            report_stack(&lowest);
            run_as_goroutine_42(&lowest);
            // SAFETY: the stack is writable and unused, and its top is 16-byte aligned.
            unsafe { call_on_stack(lowest.hi(), recurse_forever) };
        }
        "run-away-through-slab" => {
            report_stack(&second);
            run_as_goroutine_42(&second);
            // SAFETY: as above; the recursion runs through `lowest`, which nothing uses.
            unsafe { call_on_stack(second.hi(), recurse_forever) };
        }
        other => panic!("unknown scenario {other}"),
    }
    report("survived", "end of scenario");
}

fn child(scenario: &str) -> ChildOutput {
    run_child("child_scenario", scenario)
}

/// Returns the stderr line that contains `needle`, or fails with the child's transcript.
fn line_with<'a>(output: &'a ChildOutput, needle: &str) -> &'a str {
    output
        .stderr
        .lines()
        .find(|line| line.contains(needle))
        .unwrap_or_else(|| panic!("no line with {needle:?}\n{}", output.transcript()))
}

fn assert_canary_report(output: &ChildOutput) {
    output.assert_killed_by(libc::SIGABRT, "SIGABRT");
    let line = line_with(output, "overflowed its stack");
    let stack = output.reported("stack");
    let size = output.reported("size");
    let expected = format!(
        "goroutine 42 overflowed its stack, detected by the canary at switch: stack {stack} \
         ({size} bytes), "
    );
    assert!(
        line.starts_with(&expected),
        "report {line:?} does not start with {expected:?}"
    );
    assert!(line.contains(" of 8 canary words overwritten"), "{line}");
    let lo = stack.split('-').next().expect("lo-hi");
    assert!(
        line.ends_with(&format!("the top of the stack below {lo} may be corrupt")),
        "{line}"
    );
}

#[test]
fn overwritten_canary_aborts_with_report() {
    let output = child("canary-overwritten");
    assert_canary_report(&output);
    let line = line_with(&output, "overflowed its stack");
    let lo = output
        .reported("stack")
        .split('-')
        .next()
        .unwrap()
        .to_string();
    assert!(
        line.contains(&format!(
            "1 of 8 canary words overwritten, the lowest at {lo} with 0x0;"
        )),
        "{line}"
    );
}

#[test]
fn bounded_overflow_caught_at_switch() {
    let output = child("bounded-overflow");
    assert_canary_report(&output);
}

#[test]
fn deep_frames_above_canary_pass() {
    let output = child("intact-canary");
    output.assert_success();
    assert_eq!(output.reported("survived"), "end of scenario");
}

/// Parses `0xSTART-0xEND`.
fn parse_range(text: &str) -> (usize, usize) {
    let (start, end) = text.split_once('-').expect("start-end");
    let parse = |hex: &str| usize::from_str_radix(hex.trim_start_matches("0x"), 16).expect("hex");
    (parse(start), parse(end))
}

/// Returns the guard range that a fault report names at its end or before a comma.
fn reported_guard(line: &str) -> (usize, usize) {
    let after = line
        .split("guard ")
        .nth(1)
        .unwrap_or_else(|| panic!("no guard in {line:?}"));
    parse_range(after.split(',').next().expect("a range"))
}

#[test]
fn run_away_lowest_stack_hits_slab_guard() {
    let output = child("run-away-lowest");
    output.assert_killed_by(libc::SIGABRT, "SIGABRT");
    let size = output.reported("size");
    let line = line_with(&output, "stack overflow");
    let prefix = format!("goroutine 42 stack overflow: stack size {size} bytes, fault address 0x");
    assert!(line.starts_with(&prefix), "{line:?} lacks {prefix:?}");
    let (lo, _) = parse_range(output.reported("stack"));
    let (guard_start, guard_end) = reported_guard(line);
    assert_eq!(
        guard_end,
        lo + goro_stack::CANARY_SIZE - page_size(),
        "the guard does not end at the padding page below the lowest stack"
    );
    assert!(guard_start < guard_end, "{line}");
}

#[test]
fn run_away_through_slab_is_reported() {
    let output = child("run-away-through-slab");
    output.assert_killed_by(libc::SIGABRT, "SIGABRT");
    let line = line_with(&output, "stack overflow");
    assert!(
        line.starts_with("goroutine 42 stack overflow through its slab: fault address 0x"),
        "{line}"
    );
    let stack = output.reported("stack");
    assert!(
        line.contains(&format!("below its stack {stack}, so its frames overwrote")),
        "{line}"
    );
}
