//! Stress tests of the direct switch of a yield: a yielding goroutine goes back to its
//! scheduler before its switch has saved it, so another M may take it at once and must wait
//! for the switch (see `gosched` in `src/m.rs`).
//!
//! Each goroutine keeps values on its stack and in callee-saved registers across its yields
//! and checks them after every yield. A goroutine resumed from a half-saved frame, or resumed
//! twice, would read a wrong value or corrupt another goroutine's stack.
//!
//! The pair tests at the end check that two Ms that each take the other's not yet saved g
//! do not wait for each other (see `take_saved_sp`).

mod common;

use std::collections::HashSet;
use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use goro::{Fifo, Runtime, SchedHandle, Scheduler};
use goro_sched::{GQueue, GRef, PId, ReadyCause, WorkStealing};

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
    let mut expected = 0u64;
    for round in 0..yields {
        // black_box keeps `sum` and `frame` live across the yield, in registers or on the
        // stack, so a bad resume shows in them. `expected` is computed apart, after the yield.
        sum = black_box(sum.wrapping_add(seed ^ round));
        goro::yield_now();
        threads.insert(gettid());
        expected = expected.wrapping_add(seed ^ round);
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

/// Yields until both goroutines of a pair have started, then `YIELDS` more times.
fn pair_yielder(started: Arc<AtomicUsize>) -> impl FnOnce() -> u64 + Send + 'static {
    const YIELDS: u64 = 200_000;
    move || {
        // Relaxed: only the count matters.
        started.fetch_add(1, Ordering::Relaxed);
        while started.load(Ordering::Relaxed) < 2 {
            goro::yield_now();
        }
        for _ in 0..YIELDS {
            goro::yield_now();
        }
        YIELDS
    }
}

/// Two goroutines of two schedulers yield in a loop on two Ps. Each M hands its g to the g's
/// scheduler (`on_yield`) and then polls the schedulers, so it may take the other M's g before
/// that g is saved while the other M takes its own g the same way.
#[test]
fn yields_of_two_schedulers_on_two_ps() {
    let second = SchedHandle::new(Fifo::new());
    let rt = Runtime::builder()
        .procs(2)
        .add_scheduler(second.clone())
        .build()
        .unwrap();
    let total = watchdog(LIMIT, move || {
        rt.block_on(move || {
            let started = Arc::new(AtomicUsize::new(0));
            let first = goro::spawn(pair_yielder(started.clone())).unwrap();
            let other =
                goro::spawn_g(goro::DefaultG::new(), &second, pair_yielder(started)).unwrap();
            first.join().unwrap() + other.join().unwrap()
        })
        .unwrap()
    });
    assert_eq!(total, 400_000);
}

/// A FIFO scheduler that keeps the trait's default `on_yield_next`: `on_yield` and `next`
/// take the queue's lock one after the other.
#[derive(Default)]
struct PlainFifo {
    queue: std::sync::Mutex<GQueue>,
}

// SAFETY: `next` pops what `ready` pushed.
unsafe impl Scheduler for PlainFifo {
    fn name(&self) -> &'static str {
        "plain-fifo"
    }
    fn ready(&self, g: GRef, _cause: ReadyCause, _p: Option<PId>) {
        self.queue.lock().unwrap().push_back(g);
    }
    fn next(&self, _p: PId) -> Option<GRef> {
        self.queue.lock().unwrap().pop_front()
    }
    fn has_work(&self) -> bool {
        !self.queue.lock().unwrap().is_empty()
    }
}

/// Two goroutines yield in a loop on two Ps under a scheduler with the default
/// `on_yield_next`. Between one M's `on_yield` and its `next`, the other M may queue its g
/// and take this M's g, and this M then takes the other's.
#[test]
fn yields_with_default_yield_next_on_two_ps() {
    let rt = Runtime::builder()
        .procs(2)
        .scheduler_handle(SchedHandle::new(PlainFifo::default()))
        .build()
        .unwrap();
    let total = watchdog(LIMIT, move || {
        rt.block_on(|| {
            let started = Arc::new(AtomicUsize::new(0));
            let first = goro::spawn(pair_yielder(started.clone())).unwrap();
            let other = goro::spawn(pair_yielder(started)).unwrap();
            first.join().unwrap() + other.join().unwrap()
        })
        .unwrap()
    });
    assert_eq!(total, 400_000);
}

/// Dumps taken while goroutines yield on two Ps read every Runnable goroutine's stack: a
/// yielding goroutine is Runnable before its switch has saved it, and the dump waits for the
/// switch instead of reporting the stack as unreadable.
#[test]
fn dumps_read_the_stacks_of_yielding_goroutines() {
    use goro::debug::Backtrace;
    use std::sync::atomic::AtomicBool;

    let rt = Arc::new(runtime(2, "fifo"));
    let stop = Arc::new(AtomicBool::new(false));
    let yielders: Vec<_> = (0..6)
        .map(|_| {
            let stop = Arc::clone(&stop);
            rt.spawn(move || {
                // Acquire: pairs with the Release store below; only the flag matters.
                while !stop.load(Ordering::Acquire) {
                    goro::yield_now();
                }
            })
            .unwrap()
        })
        .collect();
    let dumper = Arc::clone(&rt);
    let (runnable, unreadable) = watchdog(LIMIT, move || {
        let (mut runnable, mut unreadable) = (0, Vec::new());
        for _ in 0..300 {
            for g in dumper.dump().goroutines {
                if g.status != goro::GStatus::Runnable {
                    continue;
                }
                runnable += 1;
                if let Backtrace::Unavailable(reason) = g.backtrace
                    && reason != "it ran while the dump read its stack"
                {
                    unreadable.push(reason);
                }
            }
        }
        (runnable, unreadable)
    });
    // Release: see the yielders' Acquire.
    stop.store(true, Ordering::Release);
    yielders.into_iter().for_each(|h| h.join().unwrap());
    assert!(runnable > 0, "no dump caught a Runnable goroutine");
    // A dump waits 20 ms for a switch, which an M that the OS preempts mid-switch can exceed
    // on a loaded machine (QEMU in CI). Without the wait, 15% of them had no backtrace.
    assert!(
        unreadable.len() * 100 <= runnable,
        "{} of {runnable} Runnable goroutines had no backtrace: {:?}",
        unreadable.len(),
        &unreadable[..unreadable.len().min(5)]
    );
}
