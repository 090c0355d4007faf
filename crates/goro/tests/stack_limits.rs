//! Stack mappings come back after goroutines exit, and running out of mappings is a typed
//! error from `spawn` that names `vm.max_map_count`, not an abort.
//!
//! This file holds only these tests: exhausting the process's mappings would make thread
//! creation fail for any other test running in the same process.

mod common;

use common::{LIMIT, watchdog};
use goro::{Runtime, SpawnError};

/// Serializes the tests of this file: each one counts or exhausts the process's mappings.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn mappings() -> usize {
    std::fs::read_to_string("/proc/self/maps")
        .unwrap()
        .lines()
        .count()
}

#[test]
fn mappings_return_to_baseline_after_joins() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let rt = Runtime::builder().procs(2).build().unwrap();
    // Warm up: start the Ms so that their stacks are part of the baseline.
    rt.block_on(|| {
        let hs: Vec<_> = (0..100)
            .map(|_| goro::spawn(goro::yield_now).unwrap())
            .collect();
        hs.into_iter().for_each(|h| h.join().unwrap());
    })
    .unwrap();
    let baseline = mappings();
    let rt = watchdog(LIMIT, move || {
        rt.block_on(|| {
            let hs: Vec<_> = (0..10_000)
                .map(|_| goro::spawn(goro::yield_now).unwrap())
                .collect();
            hs.into_iter().for_each(|h| h.join().unwrap());
        })
        .unwrap();
        rt
    });
    let stats = rt.stack_stats();
    let after = mappings();
    assert!(
        stats.cached_stacks <= stats.max_cached_stacks,
        "the pool caches more stacks than its bound: {stats:?}"
    );
    // Each cached stack keeps its mapping and its guard; new Ms add a few mappings each.
    let allowance = 2 * stats.cached_stacks + 4 * rt.stats().ms_started as usize + 16;
    assert!(
        after <= baseline + allowance,
        "mappings went from {baseline} to {after}; the pool keeps {} stacks",
        stats.cached_stacks
    );
}

#[test]
fn exhausting_mappings_is_a_typed_error() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let limit: usize = std::fs::read_to_string("/proc/sys/vm/max_map_count")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(65_530);
    if limit > 262_144 {
        eprintln!("skipped: vm.max_map_count is {limit}, too many stacks to exhaust it quickly");
        return;
    }
    let rt = Runtime::builder()
        .procs(1)
        .stack_size(16 * 1024)
        .deadlock_detection(false)
        .build()
        .unwrap();
    let error = watchdog(LIMIT * 3, move || {
        let (sender, receiver) = goro::sync::channel::<()>(0);
        // Spawned before the table fills up, and started once it has (see below).
        let (start_burst, burst_started) = goro::sync::channel::<()>(0);
        let spawner = rt
            .spawn(move || {
                burst_started.recv().unwrap();
                // The error goes back to the test thread: a panic here would overflow the
                // goroutine's 16 KiB stack while it formats its message.
                let mut children = Vec::new();
                for index in 0..200 {
                    match goro::spawn(|| ()) {
                        Ok(child) => children.push(child),
                        Err(error) => return Err((index, error)),
                    }
                }
                children.into_iter().for_each(|child| child.join().unwrap());
                Ok(())
            })
            .unwrap();
        let mut handles = Vec::new();
        let error = loop {
            let receiver = receiver.clone();
            match rt.spawn(move || {
                let _ = receiver.recv();
            }) {
                Ok(handle) => handles.push(handle),
                Err(error) => break error,
            }
            assert!(
                handles.len() <= limit,
                "spawned {} goroutines without an error",
                handles.len()
            );
        };
        // Let 16 goroutines finish, so that a few stacks are free again. Then a goroutine
        // spawns far more children than fit without joining any: each spawn that finds the
        // table full yields, the children run and free their stacks, and the spawn succeeds.
        for _ in 0..16 {
            sender.send(()).unwrap();
        }
        start_burst.send(()).unwrap();
        if let Err((index, error)) = spawner.join().unwrap() {
            panic!("spawn {index} of a burst failed instead of waiting: {error}");
        }
        // Everything still works after the error: close the channel and join them all.
        drop(sender);
        for handle in handles {
            handle.join().unwrap();
        }
        error
    });
    assert!(matches!(error, SpawnError::Stack(_)), "{error}");
    let message = error.to_string();
    assert!(message.contains("vm.max_map_count"), "{message}");
}
