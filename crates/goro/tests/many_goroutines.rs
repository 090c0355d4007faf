//! The mode for very many goroutines: slab stacks keep the kernel's mapping count low, and
//! a million parked goroutines fit in one process.

mod common;

use std::time::Duration;

use common::{LIMIT, watchdog};
use goro::Runtime;

/// Lines of /proc/self/maps: the process's mapping count.
fn mappings() -> usize {
    std::fs::read_to_string("/proc/self/maps")
        .unwrap()
        .lines()
        .count()
}

/// Resident set size in bytes, from /proc/self/statm.
fn rss_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: usize = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * goro_stack::page_size()
}

/// Parks `count` goroutines on a channel, measures, then closes the channel so they all
/// finish. Returns (mappings added, RSS bytes added per goroutine).
fn park_many(count: usize, stack_size: usize) -> (usize, usize) {
    let rt = Runtime::builder()
        .procs(2)
        .many_goroutines(true)
        .stack_size(stack_size)
        .deadlock_detection(false)
        .build()
        .unwrap();
    let maps_before = mappings();
    let rss_before = rss_bytes();
    let (sender, receiver) = goro::sync::channel::<()>(0);
    let mut handles = Vec::with_capacity(count);
    for _ in 0..count {
        let receiver = receiver.clone();
        handles.push(
            rt.spawn(move || {
                // Blocks until the channel closes.
                assert!(receiver.recv().is_err());
            })
            .unwrap(),
        );
    }
    drop(receiver);
    // Wait until every goroutine has parked in its receive.
    while rt.stats().context_switches < count as u64 {
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(100));
    let maps_added = mappings().saturating_sub(maps_before);
    let rss_per_goroutine = rss_bytes().saturating_sub(rss_before) / count;
    eprintln!(
        "{count} parked goroutines: {maps_added} mappings added, {rss_per_goroutine} bytes of RSS each"
    );
    drop(sender);
    for handle in handles {
        handle.join().unwrap();
    }
    (maps_added, rss_per_goroutine)
}

#[test]
fn slab_stacks_keep_mappings_low() {
    let (maps_added, _) = watchdog(LIMIT, || park_many(20_000, 16 * 1024));
    // Guard-paged stacks would add two mappings per goroutine (40,000).
    assert!(
        maps_added < 2_000,
        "{maps_added} mappings for 20,000 goroutines"
    );
}

/// The full case, run in release by `cargo xtask ci` (it needs a few GiB of address space and
/// takes seconds natively, much longer under QEMU).
#[test]
#[ignore = "a million goroutines: run in release by cargo xtask ci, natively"]
fn million_parked_goroutines_fit() {
    let (maps_added, rss_per_goroutine) = watchdog(LIMIT * 5, || park_many(1_000_000, 16 * 1024));
    assert!(
        maps_added < 65_530 / 2,
        "{maps_added} mappings for 1,000,000 goroutines"
    );
    assert!(
        rss_per_goroutine <= 4_608,
        "{rss_per_goroutine} bytes of RSS per parked goroutine"
    );
}

#[test]
fn canary_catches_an_overflow_in_slab_mode() {
    if std::env::var("GORO_SLAB_OVERFLOW_CHILD").is_ok() {
        let rt = Runtime::builder()
            .procs(1)
            .many_goroutines(true)
            .stack_size(16 * 1024)
            .build()
            .unwrap();
        let _ = rt.block_on(|| {
            // Keep a neighbour below so the overflow runs into a live stack, not a guard.
            let neighbour = goro::spawn(goro::yield_now).unwrap();
            // Overflow by a few KiB and come back: only the canary can tell.
            #[inline(never)]
            fn deep(depth: usize) -> usize {
                let buffer = std::hint::black_box([depth as u8; 1024]);
                if depth == 0 {
                    buffer[3] as usize
                } else {
                    deep(depth - 1) + buffer[1] as usize
                }
            }
            std::hint::black_box(deep(20));
            goro::yield_now();
            neighbour.join().unwrap();
        });
        return;
    }
    let output = common::self_command("canary_catches_an_overflow_in_slab_mode")
        .env("GORO_SLAB_OVERFLOW_CHILD", "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        output.status.signal(),
        Some(libc::SIGABRT),
        "{:?}: {stderr}",
        output.status
    );
    assert!(stderr.contains("goroutine "), "{stderr}");
    assert!(stderr.contains("overflow"), "{stderr}");
}
