//! Benchmark workloads for `cargo xtask bench`: goro and its Rust peers, one workload per
//! process so that each RSS figure covers that workload alone.
//!
//! Usage: `goro-bench WORKLOAD IMPLEMENTATION COUNT`. Each run prints one line per metric,
//! `metric NAME VALUE UNIT`, on standard output. A run that cannot complete (for example a
//! peer that fails to allocate its stacks) prints `failed: REASON` on standard error and
//! exits with status 3, so the xtask records the failure as a result.
//!
//! The timing harness (repeats, median, min and max, ratios) lives in the xtask; each process
//! here measures one run.

mod rss;
mod sched;
mod switch;
mod syscall;

use std::time::Duration;

const USAGE: &str = "\
Usage: goro-bench WORKLOAD IMPLEMENTATION COUNT

Workloads and their implementations:
  switch   goro-coroutine goro-coroutine-nofp goro-switch goro-switch-g0 goro-switch-nofp
           corosensei generator context
  yield    goro-fifo goro-steal may tokio threads
  spawn    goro-fifo goro-steal may tokio
  spawnwg  goro-fifo goro-steal
  chan     goro-fifo goro-steal goro-fifo-cap1 may tokio
  syscall  goro-fifo goro-steal
  handoff  goro-fifo-known goro-steal-known goro-fifo-retake goro-steal-retake
  rss      goro-many goro-default may

spawn joins each goroutine's handle; spawnwg drops the handles and waits on a WaitGroup.

COUNT is the number of operations (switches, yields per goroutine, goroutines, round trips,
calls, handoffs or parked goroutines).";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [workload, implementation, count] = args.as_slice() else {
        fail_usage(&format!("expected 3 arguments, got {}", args.len()));
    };
    let Ok(count) = count.replace('_', "").parse::<usize>() else {
        fail_usage(&format!("COUNT `{count}` is not a whole number"));
    };
    if count == 0 {
        fail_usage("COUNT must be at least 1");
    }
    let known = match workload.as_str() {
        "switch" => switch::run(implementation, count),
        "yield" => sched::run_yield(implementation, count),
        "spawn" => sched::run_spawn(implementation, count),
        "spawnwg" => sched::run_spawn_wg(implementation, count),
        "chan" => sched::run_chan(implementation, count),
        "syscall" => syscall::run_pair(implementation, count),
        "handoff" => syscall::run_handoff(implementation, count),
        "rss" => rss::run(implementation, count),
        other => fail_usage(&format!("unknown workload `{other}`")),
    };
    if !known {
        fail_usage(&format!(
            "unknown implementation `{implementation}` for workload `{workload}`"
        ));
    }
}

fn fail_usage(message: &str) -> ! {
    eprintln!("goro-bench: {message}\n\n{USAGE}");
    std::process::exit(2);
}

/// Reports a run that could not complete as a result, not a crash: the xtask shows `reason`
/// in the table.
pub fn fail_run(reason: &str) -> ! {
    eprintln!("failed: {reason}");
    std::process::exit(3);
}

/// Prints one metric line for the xtask to parse.
pub fn metric(name: &str, value: f64, unit: &str) {
    println!("metric {name} {value} {unit}");
}

/// Prints the time per operation in nanoseconds.
pub fn nanos_per(name: &str, elapsed: Duration, operations: usize) {
    metric(name, elapsed.as_nanos() as f64 / operations as f64, "ns");
}

/// Returns a goro runtime with `procs` Ps and the scheduler that `implementation` names
/// (`goro-fifo...` or `goro-steal...`), or `None` for another implementation.
pub fn goro_runtime(implementation: &str, procs: usize) -> Option<goro::Runtime> {
    let builder = goro::Runtime::builder().procs(procs);
    let builder = if implementation.starts_with("goro-fifo") {
        builder.scheduler(goro::Fifo::new())
    } else if implementation.starts_with("goro-steal") {
        builder.scheduler(goro_sched::WorkStealing::new())
    } else {
        return None;
    };
    match builder.build() {
        Ok(runtime) => Some(runtime),
        Err(error) => fail_run(&format!("goro runtime with {procs} Ps: {error}")),
    }
}
