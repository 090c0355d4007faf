//! Property tests of the work-stealing scheduler on one thread: random sequences of `ready`,
//! `next`, `on_release_p` and yields across 1 to 4 Ps, checked against a model of which gs are
//! queued, and yields through `on_yield_next` checked against `on_yield` followed by `next`.

// Under `--cfg loom` the scheduler's atomics work only inside a loom model, so this file is
// left out of loom builds. The models are in tests/loom_*.rs.
#![cfg(not(loom))]

use std::collections::HashSet;
use std::ptr::NonNull;

use proptest::prelude::*;

use goro_abi::{GHeader, GRef, PId, ReadyCause};
use goro_sched::{RunQueue, Scheduler, WorkStealing};

/// One step of a test run. P indexes are taken modulo the number of Ps.
#[derive(Clone, Debug)]
enum Op {
    /// Readies a new g, from P `p` or (with `None`) from a thread without a P.
    Ready { cause: ReadyCause, p: Option<u32> },
    /// Readies `count` new gs into P `p`'s run queue, enough to overflow it.
    Burst { p: u32, count: usize },
    /// Takes the next g for P `p`; it becomes the g running there.
    Next { p: u32 },
    /// The g running on P `p`, if any, yields.
    Yield { p: u32 },
    /// P `p` leaves its M.
    Release { p: u32 },
}

fn cause() -> impl Strategy<Value = ReadyCause> {
    prop_oneof![
        Just(ReadyCause::Spawn),
        Just(ReadyCause::Wake),
        Just(ReadyCause::Yield),
        Just(ReadyCause::SyscallExit),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (cause(), proptest::option::weighted(0.8, 0..4u32))
            .prop_map(|(cause, p)| Op::Ready { cause, p }),
        1 => (0..4u32, 1..RunQueue::CAPACITY + 64).prop_map(|(p, count)| Op::Burst { p, count }),
        5 => (0..4u32).prop_map(|p| Op::Next { p }),
        1 => (0..4u32).prop_map(|p| Op::Yield { p }),
        1 => (0..4u32).prop_map(|p| Op::Release { p }),
    ]
}

/// Headers with goids 1..=count, allocated up front so that the refs stay valid.
fn headers(count: usize) -> Vec<GHeader> {
    (1..=count as u64).map(GHeader::with_goid).collect()
}

fn gref(header: &GHeader) -> GRef {
    // SAFETY: each test keeps its headers alive until the scheduler is drained.
    unsafe { GRef::from_raw(NonNull::from(header)) }
}

/// Returns the number of gs that `ops` ready for the first time.
fn new_gs(ops: &[Op]) -> usize {
    ops.iter()
        .map(|op| match op {
            Op::Ready { .. } => 1,
            Op::Burst { count, .. } => *count,
            _ => 0,
        })
        .sum()
}

/// Runs `ops` against a fresh scheduler with `procs` Ps and checks, after every step, that
/// `next` returns only queued gs, each once, and that `has_work` matches the model. At the
/// end it drains every P and checks that nothing was lost.
fn check_ops(procs: u32, ops: &[Op]) -> Result<(), TestCaseError> {
    let new_gs = new_gs(ops);
    let headers = headers(new_gs);
    let mut fresh = headers.iter().map(gref);

    let scheduler = WorkStealing::new();
    // SAFETY: this thread is the scheduler's only user and acts as every P.
    unsafe { scheduler.start(procs as usize) };
    let mut queued: HashSet<u64> = HashSet::new();
    let mut running: Vec<Option<GRef>> = vec![None; procs as usize];

    for (step, op) in ops.iter().enumerate() {
        match *op {
            Op::Ready { cause, p } => {
                let g = fresh.next().expect("counted above");
                scheduler.ready(g, cause, p.map(|p| PId(p % procs)));
                queued.insert(g.header().goid());
            }
            Op::Burst { p, count } => {
                for g in fresh.by_ref().take(count) {
                    scheduler.ready(g, ReadyCause::Yield, Some(PId(p % procs)));
                    queued.insert(g.header().goid());
                }
            }
            Op::Next { p } => {
                let p = p % procs;
                let queued_before = queued.len();
                let g = scheduler.next(PId(p));
                if let Some(g) = g {
                    let goid = g.header().goid();
                    prop_assert!(
                        queued.remove(&goid),
                        "step {step}: next(p{p}) returned g{goid}, which was not queued"
                    );
                }
                prop_assert_eq!(
                    g.is_none(),
                    queued_before == 0,
                    "step {}: next(p{}) returned {:?} while {} gs were queued",
                    step,
                    p,
                    g,
                    queued_before
                );
                running[p as usize] = g;
            }
            Op::Yield { p } => {
                let p = p % procs;
                if let Some(g) = running[p as usize].take() {
                    scheduler.on_yield(g, PId(p));
                    queued.insert(g.header().goid());
                }
            }
            Op::Release { p } => scheduler.on_release_p(PId(p % procs)),
        }
        prop_assert_eq!(
            scheduler.has_work(),
            !queued.is_empty(),
            "step {}: has_work disagrees with the {} queued gs",
            step,
            queued.len()
        );
    }

    let mut idle_rounds = 0;
    while idle_rounds < 2 {
        idle_rounds += 1;
        for p in 0..procs {
            while let Some(g) = scheduler.next(PId(p)) {
                let goid = g.header().goid();
                prop_assert!(
                    queued.remove(&goid),
                    "drain: next(p{p}) returned g{goid}, which was not queued"
                );
                idle_rounds = 0;
            }
        }
    }
    let lowest_lost = queued.iter().min().copied().unwrap_or_default();
    prop_assert!(
        queued.is_empty(),
        "the scheduler lost {} gs, the lowest g{}",
        queued.len(),
        lowest_lost
    );
    prop_assert!(!scheduler.has_work());
    Ok(())
}

/// Runs `ops` against two schedulers with `procs` Ps in step: a yield is `on_yield_next` on
/// the first and `on_yield` followed by `next` on the second. Every pick and every queue
/// length must agree, so the fast path of `on_yield_next` changes nothing that `next` would
/// have decided. Yields on a full run queue are skipped (see below).
fn check_yield_next(procs: u32, ops: &[Op]) -> Result<(), TestCaseError> {
    let new_gs = new_gs(ops);
    // Each scheduler links its own headers: the injector chains gs through them.
    let (fast_headers, slow_headers) = (headers(new_gs), headers(new_gs));
    let mut fresh = fast_headers
        .iter()
        .map(gref)
        .zip(slow_headers.iter().map(gref));
    let (fast, slow) = (WorkStealing::new(), WorkStealing::new());
    // SAFETY: this thread is each scheduler's only user and acts as every P.
    unsafe {
        fast.start(procs as usize);
        slow.start(procs as usize);
    }
    let mut running: Vec<Option<(GRef, GRef)>> = vec![None; procs as usize];
    let goid = |g: Option<GRef>| g.map(|g| g.header().goid());

    for (step, op) in ops.iter().enumerate() {
        match *op {
            Op::Ready { cause, p } => {
                let (fast_g, slow_g) = fresh.next().expect("counted above");
                fast.ready(fast_g, cause, p.map(|p| PId(p % procs)));
                slow.ready(slow_g, cause, p.map(|p| PId(p % procs)));
            }
            Op::Burst { p, count } => {
                for (fast_g, slow_g) in fresh.by_ref().take(count) {
                    fast.ready(fast_g, ReadyCause::Yield, Some(PId(p % procs)));
                    slow.ready(slow_g, ReadyCause::Yield, Some(PId(p % procs)));
                }
            }
            Op::Next { p } => {
                let p = p % procs;
                let (fast_g, slow_g) = (fast.next(PId(p)), slow.next(PId(p)));
                prop_assert_eq!(goid(fast_g), goid(slow_g), "step {}: next(p{})", step, p);
                running[p as usize] = fast_g.zip(slow_g);
            }
            Op::Yield { p } => {
                let p = p % procs;
                // On a full run queue the two differ by design: `on_yield` overflows the
                // older half and `g` to the injector before `next` picks, while
                // `on_yield_next` takes the head first and then has room for `g`.
                if fast.run_queue_len(PId(p)) == RunQueue::CAPACITY {
                    continue;
                }
                if let Some((fast_g, slow_g)) = running[p as usize].take() {
                    let fast_g = fast.on_yield_next(fast_g, PId(p));
                    slow.on_yield(slow_g, PId(p));
                    let slow_g = slow.next(PId(p));
                    prop_assert_eq!(goid(fast_g), goid(slow_g), "step {}: yield on p{}", step, p);
                    running[p as usize] = fast_g.zip(slow_g);
                }
            }
            Op::Release { p } => {
                fast.on_release_p(PId(p % procs));
                slow.on_release_p(PId(p % procs));
            }
        }
        for p in (0..procs).map(PId) {
            prop_assert_eq!(
                fast.local_len(p),
                slow.local_len(p),
                "step {}: {:?}",
                step,
                p
            );
        }
        prop_assert_eq!(fast.injector_len(), slow.injector_len(), "step {}", step);
    }
    Ok(())
}

proptest! {
    // 64 cases keep the run short under QEMU; each case readies a few thousand gs.
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn every_g_comes_out_once(
        procs in 1..=4u32,
        ops in proptest::collection::vec(op(), 0..300),
    ) {
        check_ops(procs, &ops)?;
    }

    #[test]
    fn yield_next_matches_yield_then_next(
        procs in 1..=4u32,
        ops in proptest::collection::vec(op(), 0..300),
    ) {
        check_yield_next(procs, &ops)?;
    }

    /// Pushes to one P's run queue and pops from the same P come out in push order while the
    /// queue stays within its capacity and no other P steals.
    #[test]
    fn local_queue_is_fifo(
        procs in 1..=4u32,
        pushes in proptest::collection::vec(any::<bool>(), 0..1000),
    ) {
        let headers = headers(pushes.len());
        let mut fresh = headers.iter().map(gref);
        let scheduler = WorkStealing::new();
        // SAFETY: this thread is the scheduler's only user and acts as every P.
        unsafe { scheduler.start(procs as usize) };
        let mut expected = std::collections::VecDeque::new();
        for push in pushes {
            if push && expected.len() < RunQueue::CAPACITY {
                let g = fresh.next().expect("one header per step");
                scheduler.ready(g, ReadyCause::Yield, Some(PId(0)));
                expected.push_back(g.header().goid());
            } else {
                let taken = scheduler.next(PId(0)).map(|g| g.header().goid());
                prop_assert_eq!(taken, expected.pop_front());
            }
        }
        while let Some(goid) = expected.pop_front() {
            prop_assert_eq!(scheduler.next(PId(0)).map(|g| g.header().goid()), Some(goid));
        }
        prop_assert!(scheduler.next(PId(0)).is_none());
    }

    /// Any number of pushes to one P, far past its capacity, and a drain through the Ps in a
    /// random order return every g once.
    #[test]
    fn overflow_loses_nothing(
        procs in 1..=4u32,
        count in 0..RunQueue::CAPACITY * 6,
        order in proptest::collection::vec(0..4u32, 1..16),
    ) {
        let headers = headers(count);
        let scheduler = WorkStealing::new();
        // SAFETY: this thread is the scheduler's only user and acts as every P.
        unsafe { scheduler.start(procs as usize) };
        for g in headers.iter().map(gref) {
            scheduler.ready(g, ReadyCause::Yield, Some(PId(0)));
        }
        prop_assert!(scheduler.has_work() || count == 0);

        let mut seen = vec![false; count];
        let mut taken = 0;
        while taken < count {
            let before = taken;
            for &p in &order {
                if let Some(g) = scheduler.next(PId(p % procs)) {
                    let index = g.header().goid() as usize - 1;
                    prop_assert!(!seen[index], "g{} came out twice", index + 1);
                    seen[index] = true;
                    taken += 1;
                }
            }
            prop_assert!(taken > before, "{} gs are queued but no P finds them", count - taken);
        }
        prop_assert_eq!(taken, count);
        prop_assert!(!scheduler.has_work());
    }
}
