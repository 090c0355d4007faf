//! Syscall workloads: the cost that `goro::blocking` adds to a fast syscall, and the latency
//! from a goroutine entering a blocking syscall to the next goroutine on its P running.

use std::hint::black_box;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::sched::{block_on_goro, spawn_goro};

/// How many calls each timed block makes. The raw and wrapped blocks alternate, so that a
/// change of clock speed or of load on the host during the run shifts both alike.
const SYSCALL_BLOCK: usize = 10_000;

/// Times `count` raw getppid calls and `count` wrapped in `goro::blocking`, on one P, in
/// alternating blocks of `SYSCALL_BLOCK` calls. Reports the median over block pairs of the
/// difference per call, and the medians of both figures.
pub fn run_pair(implementation: &str, count: usize) -> bool {
    let Some(runtime) = crate::goro_runtime(implementation, 1) else {
        return false;
    };
    let blocks = count.div_ceil(SYSCALL_BLOCK);
    let pairs = block_on_goro(&runtime, move || {
        (0..blocks)
            .map(|_| {
                let start = Instant::now();
                for _ in 0..SYSCALL_BLOCK {
                    // SAFETY: getppid has no preconditions.
                    black_box(unsafe { libc::getppid() });
                }
                let raw = start.elapsed();
                let start = Instant::now();
                for _ in 0..SYSCALL_BLOCK {
                    // SAFETY: getppid has no preconditions.
                    black_box(goro::blocking(|| unsafe { libc::getppid() }));
                }
                (raw, start.elapsed())
            })
            .collect::<Vec<_>>()
    });
    let per_call = |elapsed: Duration| elapsed.as_nanos() as f64 / SYSCALL_BLOCK as f64;
    crate::metric(
        "overhead",
        median(
            pairs
                .iter()
                .map(|&(raw, wrapped)| per_call(wrapped) - per_call(raw))
                .collect(),
        ),
        "ns",
    );
    crate::metric(
        "raw",
        median(pairs.iter().map(|p| per_call(p.0)).collect()),
        "ns",
    );
    crate::metric(
        "wrapped",
        median(pairs.iter().map(|p| per_call(p.1)).collect()),
        "ns",
    );
    true
}

/// Returns the middle value of `values` (the upper one of the two middle values for an even
/// count).
fn median(mut values: Vec<f64>) -> f64 {
    values.sort_unstable_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Nanoseconds since the first call, on the monotonic clock, comparable across threads.
fn now_nanos() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// How long the `-retake` variant's goroutine sleeps in `goro::blocking`: long enough that the
/// monitor, not the sleep's end, must free the P for the waiting goroutine to run first.
const RETAKE_SLEEP: Duration = Duration::from_millis(20);

/// Measures `count` handoffs on one P and reports their median and worst latency.
///
/// Each round, goroutine A spawns B, which waits in the run queue, and then enters a blocking
/// call: `-known` reads an empty pipe through `goro::blocking_known`, which hands the P off
/// at once, and B writes the byte that ends the read; `-retake` sleeps through
/// `goro::blocking`, so B runs only once the monitor retakes the P. The latency is from just
/// before the call to `blocking_known` or `blocking` to the first instruction of B.
///
/// One more round runs first and is reported on its own as `first`: it starts the threads
/// (the monitor, a second M) that later rounds reuse.
pub fn run_handoff(implementation: &str, count: usize) -> bool {
    let known = if implementation.ends_with("-known") {
        true
    } else if implementation.ends_with("-retake") {
        false
    } else {
        return false;
    };
    let Some(runtime) = crate::goro_runtime(implementation, 1) else {
        return false;
    };
    let mut latencies = block_on_goro(&runtime, move || {
        (0..=count)
            .map(|_| {
                if known {
                    handoff_pipe_round()
                } else {
                    handoff_sleep_round()
                }
            })
            .collect::<Vec<u64>>()
    });
    let first = latencies.remove(0);
    latencies.sort_unstable();
    crate::metric(
        "median",
        latencies[latencies.len() / 2] as f64 / 1000.0,
        "us",
    );
    crate::metric(
        "worst",
        latencies[latencies.len() - 1] as f64 / 1000.0,
        "us",
    );
    crate::metric("first", first as f64 / 1000.0, "us");
    true
}

/// One `-known` round; returns the latency in nanoseconds.
fn handoff_pipe_round() -> u64 {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe writes.
    if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
        crate::fail_run(&format!("pipe: {}", std::io::Error::last_os_error()));
    }
    let [read_fd, write_fd] = fds;
    let waiter = spawn_goro(move || {
        let ran = now_nanos();
        let byte = 1u8;
        // SAFETY: `write_fd` is the open write end of the pipe and `byte` is one valid byte.
        let written = unsafe { libc::write(write_fd, (&raw const byte).cast(), 1) };
        assert_eq!(written, 1, "write to the handoff pipe failed");
        ran
    });
    let mut byte = 0u8;
    let enter = now_nanos();
    // SAFETY: `read_fd` is the open read end of the pipe and `byte` has room for one byte.
    let read = goro::blocking_known(|| unsafe { libc::read(read_fd, (&raw mut byte).cast(), 1) });
    assert_eq!(read, 1, "read from the handoff pipe failed");
    let ran = waiter
        .join()
        .unwrap_or_else(|error| crate::fail_run(&error.to_string()));
    // SAFETY: both descriptors are open and owned here.
    unsafe {
        libc::close(read_fd);
        libc::close(write_fd);
    }
    ran.saturating_sub(enter)
}

/// One `-retake` round; returns the latency in nanoseconds.
fn handoff_sleep_round() -> u64 {
    let waiter = spawn_goro(now_nanos);
    let enter = now_nanos();
    goro::blocking(|| std::thread::sleep(RETAKE_SLEEP));
    let ran = waiter
        .join()
        .unwrap_or_else(|error| crate::fail_run(&error.to_string()));
    ran.saturating_sub(enter)
}
