//! loom models of the work-stealing scheduler: owners push and pop, other Ps steal, run queues
//! overflow into the injector, and `has_work` runs alongside.
//!
//! Under `--cfg loom` a run queue has room for 4 gs, so a few pushes reach the overflow path. Every
//! model ends by draining the scheduler on one thread and checking that each g came out
//! exactly once.
//!
//! Run with `cargo xtask loom` (or `RUSTFLAGS="--cfg loom" cargo test --release -p
//! goro-sched --test loom_steal`).

#![cfg(loom)]

use std::ptr::NonNull;

use loom::sync::Arc;
use loom::thread;

use goro_abi::{GHeader, GRef, PId, ReadyCause};
use goro_sched::{RunQueue, Scheduler, WorkStealing};

const P0: PId = PId(0);
const P1: PId = PId(1);
const P2: PId = PId(2);

/// Headers with goids 1..=count. The vector is never resized, so the refs stay valid while it
/// lives.
fn headers(count: u64) -> Vec<GHeader> {
    (1..=count).map(GHeader::with_goid).collect()
}

fn gref(header: &GHeader) -> GRef {
    // SAFETY: every model keeps its headers alive until all threads have joined and the
    // scheduler is drained.
    unsafe { GRef::from_raw(NonNull::from(header)) }
}

fn goid(g: GRef) -> u64 {
    g.header().goid()
}

fn start(scheduler: &WorkStealing, procs: usize) {
    // SAFETY: each model is its scheduler's only user, and runs each P's hooks on one thread,
    // or on the main thread after a join.
    unsafe { scheduler.start(procs) };
}

/// Takes everything left in the scheduler, asking each P in turn until none returns a g.
fn drain(scheduler: &WorkStealing, procs: u32) -> Vec<u64> {
    let mut taken = Vec::new();
    loop {
        let before = taken.len();
        for p in 0..procs {
            taken.extend(scheduler.next(PId(p)).map(goid));
        }
        if taken.len() == before {
            return taken;
        }
    }
}

/// Checks that the goids taken are exactly 1..=count, each once.
fn assert_each_once(mut taken: Vec<u64>, count: u64) {
    taken.sort_unstable();
    let expected: Vec<u64> = (1..=count).collect();
    assert_eq!(taken, expected, "a g was lost or returned twice");
}

#[test]
fn run_queue_capacity_is_small() {
    // The models below rely on it to reach the overflow path.
    assert_eq!(RunQueue::CAPACITY, 4);
}

/// P 0's owner pushes past the capacity (overflowing into the injector) and pops, while P 1
/// steals from P 0 or takes from the injector.
#[test]
fn steal_races_pop_and_overflow() {
    loom::model(|| {
        let headers = headers(5);
        let gs: Vec<GRef> = headers.iter().map(gref).collect();
        let scheduler = Arc::new(WorkStealing::new());
        start(&scheduler, 2);
        for &g in &gs[..3] {
            scheduler.ready(g, ReadyCause::Yield, Some(P0));
        }

        let thief = {
            let scheduler = scheduler.clone();
            thread::spawn(move || scheduler.next(P1).map(goid))
        };
        let (g4, g5) = (gs[3], gs[4]);
        let owner = {
            let scheduler = scheduler.clone();
            thread::spawn(move || {
                scheduler.ready(g4, ReadyCause::Yield, Some(P0));
                scheduler.ready(g5, ReadyCause::Yield, Some(P0));
                scheduler.next(P0).map(goid)
            })
        };

        let mut taken: Vec<u64> = Vec::new();
        taken.extend(thief.join().unwrap());
        taken.extend(owner.join().unwrap());
        assert_eq!(taken.len(), 2, "each P had work, so each next returns a g");
        taken.extend(drain(&scheduler, 2));
        assert_each_once(taken, 5);
        assert!(!scheduler.has_work());
    });
}

/// Two Ps steal from a full run queue while its owner pops and pushes again.
#[test]
fn two_stealers_and_owner() {
    loom::model(|| {
        let headers = headers(5);
        let gs: Vec<GRef> = headers.iter().map(gref).collect();
        let scheduler = Arc::new(WorkStealing::new());
        start(&scheduler, 3);
        for &g in &gs[..4] {
            scheduler.ready(g, ReadyCause::Yield, Some(P0));
        }

        let thieves: Vec<_> = [P1, P2]
            .into_iter()
            .map(|p| {
                let scheduler = scheduler.clone();
                thread::spawn(move || scheduler.next(p).map(goid))
            })
            .collect();
        let g5 = gs[4];
        let mut taken: Vec<u64> = Vec::new();
        taken.extend(scheduler.next(P0).map(goid));
        scheduler.ready(g5, ReadyCause::Yield, Some(P0));
        for thief in thieves {
            taken.extend(thief.join().unwrap());
        }
        taken.extend(drain(&scheduler, 3));
        assert_each_once(taken, 5);
    });
}

/// One P takes a batch from the injector (returning one g and keeping one in its run queue)
/// while another thread calls `has_work`. One g is in the scheduler at every moment, so
/// `has_work` must say so however the two interleave.
#[test]
fn injector_batch_is_visible_to_has_work() {
    loom::model(|| {
        let headers = headers(2);
        let gs: Vec<GRef> = headers.iter().map(gref).collect();
        let scheduler = Arc::new(WorkStealing::new());
        start(&scheduler, 1);
        for &g in &gs {
            scheduler.ready(g, ReadyCause::Spawn, None);
        }

        let owner = {
            let scheduler = scheduler.clone();
            thread::spawn(move || scheduler.next(P0).map(goid))
        };
        assert!(
            scheduler.has_work(),
            "has_work missed a g moving to a run queue"
        );

        let mut taken: Vec<u64> = owner.join().unwrap().into_iter().collect();
        taken.extend(drain(&scheduler, 1));
        assert_each_once(taken, 2);
    });
}

/// P 0's owner pops while P 1 steals the rest, and the main thread calls `has_work`. Three
/// gs and two `next` calls leave one g in the scheduler at every moment, possibly in flight
/// from P 0's run queue to P 1's.
#[test]
fn steal_is_visible_to_has_work() {
    loom::model(|| {
        let headers = headers(3);
        let gs: Vec<GRef> = headers.iter().map(gref).collect();
        let scheduler = Arc::new(WorkStealing::new());
        start(&scheduler, 2);
        for &g in &gs {
            scheduler.ready(g, ReadyCause::Yield, Some(P0));
        }

        let handles: Vec<_> = [P0, P1]
            .into_iter()
            .map(|p| {
                let scheduler = scheduler.clone();
                thread::spawn(move || scheduler.next(p).map(goid))
            })
            .collect();
        assert!(
            scheduler.has_work(),
            "has_work missed a g moving between Ps"
        );

        let mut taken: Vec<u64> = Vec::new();
        for handle in handles {
            taken.extend(handle.join().unwrap());
        }
        assert_eq!(taken.len(), 2, "both Ps had work in reach");
        taken.extend(drain(&scheduler, 2));
        assert_each_once(taken, 3);
    });
}

/// P 0's owner overflows its full run queue into the injector while two Ps steal the half it
/// keeps, and the main thread calls `has_work`. Five gs and two `next` calls leave three in the
/// scheduler at every moment, possibly all on their way to the injector.
#[test]
fn overflow_is_visible_to_has_work() {
    loom::model(|| {
        let headers = headers(5);
        let gs: Vec<GRef> = headers.iter().map(gref).collect();
        let scheduler = Arc::new(WorkStealing::new());
        start(&scheduler, 3);
        for &g in &gs[..4] {
            scheduler.ready(g, ReadyCause::Yield, Some(P0));
        }

        let g5 = gs[4];
        let owner = {
            let scheduler = scheduler.clone();
            thread::spawn(move || scheduler.ready(g5, ReadyCause::Yield, Some(P0)))
        };
        let thieves: Vec<_> = [P1, P2]
            .into_iter()
            .map(|p| {
                let scheduler = scheduler.clone();
                thread::spawn(move || scheduler.next(p).map(goid))
            })
            .collect();
        assert!(
            scheduler.has_work(),
            "has_work missed gs moving to the injector"
        );

        owner.join().unwrap();
        let mut taken: Vec<u64> = Vec::new();
        for thief in thieves {
            taken.extend(thief.join().unwrap());
        }
        taken.extend(drain(&scheduler, 3));
        assert_each_once(taken, 5);
    });
}

/// P 0's owner readies a g into its runnext slot, which moves the old runnext g to its run
/// queue, and then releases the P, while P 1 steals from the run queue or the runnext slot.
#[test]
fn runnext_moves_race_a_stealer() {
    loom::model(|| {
        let headers = headers(2);
        let gs: Vec<GRef> = headers.iter().map(gref).collect();
        let scheduler = Arc::new(WorkStealing::new());
        start(&scheduler, 2);
        scheduler.ready(gs[0], ReadyCause::Wake, Some(P0));

        let thief = {
            let scheduler = scheduler.clone();
            thread::spawn(move || scheduler.next(P1).map(goid))
        };
        let g2 = gs[1];
        let owner = {
            let scheduler = scheduler.clone();
            thread::spawn(move || {
                scheduler.ready(g2, ReadyCause::Spawn, Some(P0));
                scheduler.on_release_p(P0);
            })
        };

        let mut taken: Vec<u64> = thief.join().unwrap().into_iter().collect();
        owner.join().unwrap();
        taken.extend(drain(&scheduler, 2));
        assert_each_once(taken, 2);
    });
}

/// A thread without a P readies gs into the injector while P 0 takes from it.
#[test]
fn injector_push_races_next() {
    loom::model(|| {
        let headers = headers(3);
        let gs: Vec<GRef> = headers.iter().map(gref).collect();
        let scheduler = Arc::new(WorkStealing::new());
        start(&scheduler, 1);
        scheduler.ready(gs[0], ReadyCause::Spawn, None);

        let (g2, g3) = (gs[1], gs[2]);
        let producer = {
            let scheduler = scheduler.clone();
            thread::spawn(move || {
                scheduler.ready(g2, ReadyCause::Wake, None);
                scheduler.ready(g3, ReadyCause::SyscallExit, None);
            })
        };
        let mut taken: Vec<u64> = Vec::new();
        taken.extend(scheduler.next(P0).map(goid));
        taken.extend(scheduler.next(P0).map(goid));
        producer.join().unwrap();
        assert!(!taken.is_empty(), "g1 was in the injector before next");
        taken.extend(drain(&scheduler, 1));
        assert_each_once(taken, 3);
    });
}
