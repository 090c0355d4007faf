//! Stress tests of the direct switch of a yield: a yielding goroutine goes back to its
//! scheduler before its switch has saved it, so another M may take it at once and must wait
//! for the switch (see `gosched` in `src/m.rs`).
//!
//! Each goroutine keeps values on its stack and in callee-saved registers across its yields
//! and checks them after every yield. A goroutine resumed from a half-saved frame, or resumed
//! twice, would read a wrong value or corrupt another goroutine's stack.

mod common;

use std::collections::HashSet;
use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use goro::{Fifo, Runtime};
use goro_sched::WorkStealing;

use common::{LIMIT, gettid, watchdog};

/// Builds a runtime with `procs` Ps and the scheduler named `scheduler`.
fn runtime(procs: usize, scheduler: &str) -> Runtime {
    let builder = Runtime::builder().procs(procs);
    let builder = match scheduler {
        "fifo" => builder.scheduler(Fifo::new()),
        "steal" => builder.scheduler(WorkStealing::new()),
        other => panic!("unknown scheduler {other}"),
    };
    builder.build().unwrap()
}

/// Yields `yields` times, checking after each yield that a stack array and a running sum
/// kept across the yield still hold what this goroutine wrote. Returns the threads it ran
/// on.
fn yielder(seed: u64, yields: u64) -> HashSet<i64> {
    let mut threads = HashSet::new();
    let mut frame = [0u64; 32];
    for (slot, value) in frame.iter_mut().zip(seed..) {
        *slot = value;
    }
    let mut sum = 0u64;
    for round in 0..yields {
        // black_box keeps `sum` and `frame` live across the yield, in registers or on the
        // stack, so a bad resume shows in them.
        sum = black_box(sum.wrapping_add(seed ^ round));
        goro::yield_now();
        threads.insert(gettid());
        let expected = (0..=round).fold(0u64, |acc, r| acc.wrapping_add(seed ^ r));
        assert_eq!(
            sum, expected,
            "goroutine {seed}: a register or local changed"
        );
        for (index, value) in black_box(&frame).iter().enumerate() {
            assert_eq!(
                *value,
                seed + index as u64,
                "goroutine {seed}: its stack changed while it yielded"
            );
        }
    }
    threads
}

/// Runs `goroutines` yielders of `yields` yields each and checks they all finished and that
/// some of them moved between threads.
fn yield_storm(procs: usize, scheduler: &'static str, goroutines: u64, yields: u64) {
    let finished = Arc::new(AtomicU64::new(0));
    let counted = Arc::clone(&finished);
    let moved = watchdog(LIMIT, move || {
        let rt = runtime(procs, scheduler);
        rt.block_on(move || {
            let handles: Vec<_> = (0..goroutines)
                .map(|index| {
                    let counted = Arc::clone(&counted);
                    goro::spawn(move || {
                        let threads = yielder(index * 1_000, yields);
                        // Relaxed: read after every goroutine was joined.
                        counted.fetch_add(1, Ordering::Relaxed);
                        threads.len() > 1
                    })
                    .unwrap()
                })
                .collect();
            handles
                .into_iter()
                .map(|handle| handle.join().unwrap())
                .filter(|&moved| moved)
                .count()
        })
        .unwrap()
    });
    // Relaxed: the runtime's threads are done; `join` ordered their writes.
    assert_eq!(finished.load(Ordering::Relaxed), goroutines);
    if procs > 1 {
        assert!(
            moved > 0,
            "no goroutine ran on two threads, so no yield was taken over by another M"
        );
    }
}

#[test]
fn yields_on_one_p_fifo() {
    yield_storm(1, "fifo", 8, 2_000);
}

#[test]
fn yields_on_one_p_steal() {
    yield_storm(1, "steal", 8, 2_000);
}

#[test]
fn yields_across_two_ps_fifo() {
    yield_storm(2, "fifo", 16, 10_000);
}

#[test]
fn yields_across_two_ps_steal() {
    yield_storm(2, "steal", 16, 10_000);
}

#[test]
fn yields_across_four_ps_fifo() {
    yield_storm(4, "fifo", 32, 5_000);
}

#[test]
fn yields_across_four_ps_steal() {
    yield_storm(4, "steal", 32, 5_000);
}

/// A lone goroutine that yields gets itself back from its scheduler and runs on without a
/// switch, while the runtime's other P idles.
#[test]
fn lone_yielder_keeps_running() {
    for scheduler in ["fifo", "steal"] {
        let threads = watchdog(LIMIT, move || {
            let rt = runtime(2, scheduler);
            rt.block_on(|| goro::spawn(|| yielder(7, 10_000)).unwrap().join().unwrap())
                .unwrap()
        });
        assert!(!threads.is_empty(), "{scheduler}: the yielder never ran");
    }
}
