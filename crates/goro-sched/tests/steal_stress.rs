//! Stress test of the work-stealing scheduler with real threads: 2 to 4 threads act as Ps and
//! one thread without a P readies gs into the injector, 100,000 gs in all.
//!
//! P 0 readies most gs into its run queue a few at a time, so that the other Ps keep
//! stealing from it while it pops. A g that runs is readied again up to `MAX_RUNS - 1` times,
//! into runnext or the run queue of the P that ran it. The Ps other than P 0 finish most gs
//! at their first run, so that they soon steal again. Per-g flags catch a g that
//! `next` returns without a matching `ready`, and the end checks that every g finished once.
//!
//! The test thread is the watchdog: it fails the test if the run takes over 120 s.

// Under `--cfg loom` the scheduler's atomics work only inside a loom model, so this file is
// left out of loom builds. The models are in tests/loom_*.rs.
#![cfg(not(loom))]

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, mpsc};
use std::thread;
use std::time::Duration;

use goro_abi::{GHeader, GRef, PId, ReadyCause};
use goro_sched::{Scheduler, WorkStealing};

const GS: usize = 100_000;
/// Maximum number of times one g runs.
const MAX_RUNS: u8 = 3;
/// Number of gs that P 0 readies at a time, once its run queue is down to as many.
const BURST: usize = 4;
const WATCHDOG: Duration = Duration::from_secs(120);

/// The gs and the test's records of each of them.
struct World {
    scheduler: WorkStealing,
    headers: Vec<GHeader>,
    /// Whether g i is in the scheduler: set before `ready`, cleared when `next` returns it.
    queued: Vec<AtomicBool>,
    runs: Vec<AtomicU8>,
    /// Whether g i ran for the last time.
    finished: Vec<AtomicBool>,
    finished_count: AtomicUsize,
    /// Set when a thread panicked or the watchdog fired, so that the others stop.
    failed: AtomicBool,
}

impl World {
    fn new(procs: usize) -> World {
        let scheduler = WorkStealing::new();
        // SAFETY: the world is the scheduler's only user. Each P's hooks run on that P's
        // thread alone; the producer thread passes `None`; the final checks run after the
        // joins.
        unsafe { scheduler.start(procs) };
        World {
            scheduler,
            headers: (1..=GS as u64).map(GHeader::with_goid).collect(),
            queued: (0..GS).map(|_| AtomicBool::new(false)).collect(),
            runs: (0..GS).map(|_| AtomicU8::new(0)).collect(),
            finished: (0..GS).map(|_| AtomicBool::new(false)).collect(),
            finished_count: AtomicUsize::new(0),
            failed: AtomicBool::new(false),
        }
    }

    fn g(&self, index: usize) -> GRef {
        // SAFETY: the headers live in `self`, which outlives every thread of the test.
        unsafe { GRef::from_raw(NonNull::from(&self.headers[index])) }
    }

    /// Marks g `index` as queued and returns its ref, for `ready` or `on_yield`.
    fn mark_queued(&self, index: usize) -> GRef {
        let was_queued = self.queued[index].swap(true, Ordering::Relaxed);
        assert!(!was_queued, "g{} readied while queued", index + 1);
        self.g(index)
    }

    fn ready(&self, index: usize, cause: ReadyCause, p: Option<PId>) {
        self.scheduler.ready(self.mark_queued(index), cause, p);
    }

    fn is_done(&self) -> bool {
        self.finished_count.load(Ordering::Relaxed) == GS || self.failed.load(Ordering::Relaxed)
    }

    /// Records that `next(p)` returned `g`, and readies it again on P `p` unless it finishes.
    fn run(&self, g: GRef, p: PId) {
        let index = g.header().goid() as usize - 1;
        let was_queued = self.queued[index].swap(false, Ordering::Relaxed);
        assert!(
            was_queued,
            "next({p:?}) returned g{}, which was not queued",
            index + 1
        );
        let runs = self.runs[index].fetch_add(1, Ordering::Relaxed) + 1;
        let pattern = index + usize::from(runs);
        let finishes_on_thief = p != PId(0) && !pattern.is_multiple_of(4);
        if runs == MAX_RUNS || finishes_on_thief {
            let was_finished = self.finished[index].swap(true, Ordering::Relaxed);
            assert!(!was_finished, "g{} finished twice", index + 1);
            self.finished_count.fetch_add(1, Ordering::Relaxed);
            return;
        }
        match pattern % 3 {
            0 => self.ready(index, ReadyCause::Wake, Some(p)),
            1 => self.ready(index, ReadyCause::Spawn, Some(p)),
            _ => self.scheduler.on_yield(self.mark_queued(index), p),
        }
    }
}

/// Returns whether the thread without a P readies g `index` (one g in eight). P 0 readies
/// the rest.
fn is_producers(index: usize) -> bool {
    index.is_multiple_of(8)
}

/// Runs the loop of the thread that holds P `p`: runs whatever `next` returns, and releases
/// the P now and then. P 0 also readies its gs into its run queue, `BURST` at a time.
fn p_loop(world: &World, p: PId) {
    let mut own = (0..GS).filter(|&index| p == PId(0) && !is_producers(index));
    let mut iterations: u64 = 0;
    while !world.is_done() {
        iterations += 1;
        if world.scheduler.run_queue_len(p) <= BURST {
            for index in own.by_ref().take(BURST) {
                world.ready(index, ReadyCause::Yield, Some(p));
            }
        }
        match world.scheduler.next(p) {
            Some(g) => world.run(g, p),
            None => thread::yield_now(),
        }
        if iterations.is_multiple_of(1024) {
            world.scheduler.on_release_p(p);
        }
    }
}

/// Runs the loop of the thread without a P, which readies its gs into the injector.
fn producer_loop(world: &World) {
    for index in (0..GS).filter(|&index| is_producers(index)) {
        if world.failed.load(Ordering::Relaxed) {
            return;
        }
        world.ready(index, ReadyCause::Spawn, None);
        if index % 64 == 0 {
            thread::yield_now();
        }
    }
}

/// Runs `body` and sets `failed` if it panics, then lets the panic continue.
fn guarded(world: &World, body: impl FnOnce()) {
    if let Err(panic) = catch_unwind(AssertUnwindSafe(body)) {
        world.failed.store(true, Ordering::Relaxed);
        std::panic::resume_unwind(panic);
    }
}

fn stress(procs: usize) {
    let world = Arc::new(World::new(procs));
    // Every thread waits for the others, so that none finishes its share before the last
    // one starts.
    let start = Arc::new(Barrier::new(procs + 1));
    let mut threads = Vec::new();
    for p in 0..procs {
        let world = world.clone();
        let start = start.clone();
        threads.push(thread::spawn(move || {
            start.wait();
            guarded(&world, || p_loop(&world, PId(p as u32)))
        }));
    }
    {
        let world = world.clone();
        threads.push(thread::spawn(move || {
            start.wait();
            guarded(&world, || producer_loop(&world))
        }));
    }

    let (done, watchdog) = mpsc::channel();
    thread::spawn(move || {
        let panicked = threads.into_iter().any(|thread| thread.join().is_err());
        let _ = done.send(panicked);
    });
    match watchdog.recv_timeout(WATCHDOG) {
        Ok(false) => {}
        Ok(true) => panic!("a thread panicked; its message is above"),
        Err(_) => {
            world.failed.store(true, Ordering::Relaxed);
            panic!(
                "timed out after {WATCHDOG:?}: {} of {GS} gs finished, has_work = {}, {:?}",
                world.finished_count.load(Ordering::Relaxed),
                world.scheduler.has_work(),
                world.scheduler
            );
        }
    }

    for index in 0..GS {
        assert!(
            world.finished[index].load(Ordering::Relaxed),
            "g{} never finished",
            index + 1
        );
        assert!(
            !world.queued[index].load(Ordering::Relaxed),
            "g{} is still queued",
            index + 1
        );
    }
    assert!(!world.scheduler.has_work());
    for p in 0..procs {
        assert!(world.scheduler.next(PId(p as u32)).is_none());
    }
}

#[test]
fn stress_two_ps() {
    stress(2);
}

#[test]
fn stress_three_ps() {
    stress(3);
}

#[test]
fn stress_four_ps() {
    stress(4);
}
