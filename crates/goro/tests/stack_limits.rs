//! Stack mappings come back after goroutines exit, and running out of mappings is a typed
//! error from `spawn` that names `vm.max_map_count`, not an abort.
//!
//! This file holds only these tests: exhausting the process's mappings would make thread
//! creation fail for any other test running in the same process.

mod common;

use std::sync::Arc;

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

/// Builds a runtime with `procs` Ps and 16 KiB stacks, small enough to fill the process's
/// mapping table quickly, and returns it with `vm.max_map_count`. Returns `None`, after
/// saying so, when the limit is so large that filling the table would take too long.
fn exhaustible_runtime(procs: usize) -> Option<(Runtime, usize)> {
    let limit: usize = std::fs::read_to_string("/proc/sys/vm/max_map_count")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(65_530);
    if limit > 262_144 {
        eprintln!("skipped: vm.max_map_count is {limit}, too many stacks to exhaust it quickly");
        return None;
    }
    let rt = Runtime::builder()
        .procs(procs)
        .stack_size(16 * 1024)
        .deadlock_detection(false)
        .build()
        .unwrap();
    Some((rt, limit))
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
    let Some((rt, limit)) = exhaustible_runtime(1) else {
        return;
    };
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
    assert!(
        message.contains("Builder::many_goroutines(true)"),
        "{message}"
    );
}

#[test]
fn dropped_runtimes_unmap_their_stacks() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let cycle = || {
        let rt = Runtime::builder().procs(2).build().unwrap();
        rt.block_on(|| {
            let hs: Vec<_> = (0..50)
                .map(|_| goro::spawn(goro::yield_now).unwrap())
                .collect();
            hs.into_iter().for_each(|h| h.join().unwrap());
        })
        .unwrap();
    };
    // The first cycle leaves behind what lives as long as the process: the monitor's and
    // the test harness's allocations, thread stacks kept by the allocator, and so on.
    cycle();
    let baseline = mappings();
    watchdog(LIMIT, move || (0..20).for_each(|_| cycle()));
    let after = mappings();
    // Each runtime maps dozens of stacks, each with a guard; 20 leaked runtimes would add
    // more than a thousand entries.
    assert!(
        after <= baseline + 40,
        "mappings went from {baseline} to {after} over 20 runtimes that were dropped"
    );
}

/// Maps single pages until the mapping table is full, alternating the protection so that no
/// two neighbours merge into one entry. Returns the pages, for `unmap_pages`.
fn fill_mapping_table() -> Vec<usize> {
    let page = goro_stack::page_size();
    let mut pages = Vec::with_capacity(4096);
    loop {
        let protection = if pages.len() % 2 == 0 {
            libc::PROT_READ
        } else {
            libc::PROT_NONE
        };
        let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS;
        // SAFETY: an anonymous mapping at an address the kernel chooses replaces nothing.
        let base = unsafe { libc::mmap(std::ptr::null_mut(), page, protection, flags, -1, 0) };
        if base == libc::MAP_FAILED {
            return pages;
        }
        if pages.len() == pages.capacity() {
            // Growing the vector could need a mapping of its own: give one page back first.
            // SAFETY: the page was mapped just above and nothing uses it.
            unsafe { libc::munmap(base, page) };
            return pages;
        }
        pages.push(base as usize);
    }
}

fn unmap_pages(pages: Vec<usize>) {
    for base in pages {
        // SAFETY: `fill_mapping_table` mapped the page, and nothing uses it.
        unsafe { libc::munmap(base as *mut libc::c_void, goro_stack::page_size()) };
    }
}

/// The monitor thread starts with the runtime's first timer, and fires the timers. When that
/// thread cannot start, a later timer must try again and fire the pending ones too.
///
/// The scenario fills the whole mapping table, so it runs in a child process that has never
/// ended a thread. There glibc has no cached thread stack to hand out, so a new thread fails
/// cleanly at its stack, instead of starting and then aborting the process when std fails to
/// map its signal stack.
#[test]
fn timers_fire_after_monitor_start_fails() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let output = common::self_command("monitor_start_failure_child")
        .env(CHILD_VAR, "1")
        .output()
        .expect("the test binary runs again as a child");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the child failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    if stdout.contains("skipped:") || stderr.contains("skipped:") {
        return;
    }
    assert!(
        stderr.contains("failed to start the monitor thread"),
        "the monitor thread started although the mapping table was full:\n{stderr}"
    );
}

/// Set in the child process of `timers_fire_after_monitor_start_fails`.
const CHILD_VAR: &str = "GORO_TEST_MONITOR_START_CHILD";

#[test]
fn monitor_start_failure_child() {
    if std::env::var_os(CHILD_VAR).is_none() {
        return;
    }
    let Some((rt, _)) = exhaustible_runtime(1) else {
        return;
    };
    let (early, late) = watchdog(LIMIT * 3, move || {
        let (start_sleep, sleep_started) = goro::sync::channel::<()>(0);
        let (about_to_sleep, sleeping) = std::sync::mpsc::channel::<()>();
        let sleeper = rt
            .spawn(move || {
                sleep_started.recv().unwrap();
                about_to_sleep.send(()).unwrap();
                goro::sleep(std::time::Duration::from_millis(10));
            })
            .unwrap();
        // Goroutine stacks stop short of the limit, leaving entries for threads: fill those
        // too, so that the monitor thread cannot get a stack.
        let (release, released) = goro::sync::channel::<()>(0);
        let mut parked = Vec::new();
        while let Ok(handle) = rt.spawn({
            let released = released.clone();
            move || {
                let _ = released.recv();
            }
        }) {
            parked.push(handle);
        }
        let pages = fill_mapping_table();
        start_sleep.send(()).unwrap();
        sleeping.recv().unwrap();
        // The sleep adds its timer right after the message.
        std::thread::sleep(std::time::Duration::from_millis(100));
        unmap_pages(pages);
        drop(release);
        parked.into_iter().for_each(|handle| handle.join().unwrap());
        let late = rt
            .spawn(|| goro::sleep(std::time::Duration::from_millis(10)))
            .unwrap();
        (sleeper.join(), late.join())
    });
    assert!(
        early.is_ok(),
        "the sleep added while the table was full: {early:?}"
    );
    assert!(late.is_ok(), "the sleep added afterwards: {late:?}");
}

/// Goroutines blocked in syscalls make the runtime start Ms, and each thread takes mapping
/// entries of its own. With goroutine stacks filling the table, new Ms must fail cleanly and
/// leave the work to the running ones, instead of filling the rest of the table with threads
/// until std aborts the process for want of a signal stack.
#[test]
fn blocked_goroutines_leave_room_for_threads() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some((rt, _)) = exhaustible_runtime(2) else {
        return;
    };
    let (blocked, rest) = watchdog(LIMIT * 3, move || {
        // 1,000 calls blocked at once would want 1,000 Ms: several thousand entries, far more
        // than the 1,024 that goroutine stacks leave free. The calls wait for a read lock
        // that the test thread holds until the runtime has started every M it could.
        const BLOCKERS: usize = 1_000;
        let gate = Arc::new(std::sync::RwLock::new(()));
        let closed = gate.write().unwrap();
        // Closing `open` wakes all blockers at once, so that they block in their calls
        // together.
        let (open, opened) = goro::sync::channel::<()>(0);
        let blockers: Vec<_> = (0..BLOCKERS)
            .map(|_| {
                let opened = opened.clone();
                let gate = gate.clone();
                rt.spawn(move || {
                    let _ = opened.recv();
                    goro::blocking(|| drop(gate.read().unwrap()));
                })
                .unwrap()
            })
            .collect();
        let (release, released) = goro::sync::channel::<()>(0);
        let mut parked = Vec::new();
        while let Ok(handle) = rt.spawn({
            let released = released.clone();
            move || {
                let _ = released.recv();
            }
        }) {
            parked.push(handle);
        }
        drop(open);
        std::thread::sleep(std::time::Duration::from_millis(1_500));
        drop(closed);
        let blocked = blockers.into_iter().filter_map(|h| h.join().ok()).count();
        drop(release);
        let rest = parked.into_iter().filter_map(|h| h.join().ok()).count();
        (blocked, rest)
    });
    assert_eq!(blocked, 1_000, "every blocked goroutine finishes");
    assert!(rest > 0, "the parked goroutines finish");
}

/// An M that goes idle returns the stacks it cached to the pool. A spawn on another M finds
/// them there, and would otherwise map new stacks, or fail to with the mapping table full,
/// while they sit with a sleeping M.
#[test]
fn idle_ms_return_cached_stacks() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let rt = Runtime::builder().procs(2).build().unwrap();
    rt.block_on(|| {
        let handles: Vec<_> = (0..200)
            .map(|_| goro::spawn(goro::yield_now).unwrap())
            .collect();
        handles.into_iter().for_each(|h| h.join().unwrap());
    })
    .unwrap();
    // Nothing runs any more, so both Ms go idle once they have spun for a moment.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let stats = rt.stack_stats();
        if stats.local_cached_stacks == 0 {
            assert!(stats.cached_stacks > 0, "{stats:?}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "idle Ms still cache {} stacks: {stats:?}",
            stats.local_cached_stacks
        );
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}
