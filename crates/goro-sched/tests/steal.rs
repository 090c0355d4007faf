//! Behaviour of the work-stealing scheduler on one thread: where each g goes, the order in
//! which `next` looks, fairness, and the panics for misuse.

// Under `--cfg loom` the scheduler's atomics work only inside a loom model, so this file is
// left out of loom builds. The models are in tests/loom_*.rs.
#![cfg(not(loom))]

use std::ptr::NonNull;

use goro_abi::{GHeader, GRef, PId, ReadyCause};
use goro_sched::{RunQueue, SchedHandle, Scheduler, WorkStealing};

const P0: PId = PId(0);
const P1: PId = PId(1);

/// Headers with goids 1..=count. The vector is never resized, so the refs stay valid while it
/// lives.
fn headers(count: u64) -> Vec<GHeader> {
    (1..=count).map(GHeader::with_goid).collect()
}

fn gref(header: &GHeader) -> GRef {
    // SAFETY: each test keeps its headers alive while the scheduler stores their refs.
    unsafe { GRef::from_raw(NonNull::from(header)) }
}

fn goid(g: Option<GRef>) -> Option<u64> {
    g.map(|g| g.header().goid())
}

/// Takes gs for P `p` until it finds none.
fn take_all(scheduler: &WorkStealing, p: PId) -> Vec<u64> {
    std::iter::from_fn(|| goid(scheduler.next(p))).collect()
}

/// Takes `count` gs for P `p`, or fewer if it runs out.
fn take(scheduler: &WorkStealing, p: PId, count: usize) -> Vec<u64> {
    std::iter::from_fn(|| goid(scheduler.next(p)))
        .take(count)
        .collect()
}

/// A scheduler started with `procs` Ps, whose hooks the calling test runs on one thread (or
/// hands between threads through joins).
fn started(procs: usize) -> WorkStealing {
    let scheduler = WorkStealing::new();
    start(&scheduler, procs);
    scheduler
}

fn start(scheduler: &WorkStealing, procs: usize) {
    // SAFETY: each test is its scheduler's only user, and runs the hooks of each P on one
    // thread at a time, with a join between threads.
    unsafe { scheduler.start(procs) };
}

#[test]
fn name_and_procs() {
    let scheduler = WorkStealing::new();
    assert_eq!(scheduler.name(), "steal");
    assert_eq!(scheduler.procs(), 0);
    start(&scheduler, 3);
    assert_eq!(scheduler.procs(), 3);
    start(&scheduler, 3);
    assert_eq!(
        scheduler.procs(),
        3,
        "a second start with the same count is a no-op"
    );
}

#[test]
fn works_through_a_sched_handle() {
    let headers = headers(2);
    let handle = SchedHandle::new(WorkStealing::new());
    assert_eq!(handle.name(), "steal");
    // SAFETY: no runtime uses the handle, so this thread plays the runtime's part: it
    // starts the scheduler once, readies each test g once, and takes each back once.
    unsafe {
        handle.start(2);
        handle.ready(gref(&headers[0]), ReadyCause::Spawn, Some(P0));
        handle.ready(gref(&headers[1]), ReadyCause::Spawn, None);
        assert!(handle.has_work());
        handle.on_release_p(P0);
        assert_eq!(goid(handle.next(P1)), Some(2));
        assert_eq!(goid(handle.next(P1)), Some(1));
    }
    assert!(!handle.has_work());
}

#[test]
fn wake_and_spawn_use_runnext() {
    let headers = headers(4);
    let scheduler = started(1);
    scheduler.ready(gref(&headers[0]), ReadyCause::Yield, Some(P0));
    scheduler.ready(gref(&headers[1]), ReadyCause::Wake, Some(P0));
    scheduler.ready(gref(&headers[2]), ReadyCause::Yield, Some(P0));
    // g4 takes the runnext slot from g2, which moves to the tail of the run queue.
    scheduler.ready(gref(&headers[3]), ReadyCause::Spawn, Some(P0));
    assert_eq!(take_all(&scheduler, P0), [4, 1, 3, 2]);
}

#[test]
fn yield_and_syscall_exit_go_to_the_tail() {
    let headers = headers(3);
    let scheduler = started(1);
    scheduler.ready(gref(&headers[0]), ReadyCause::Yield, Some(P0));
    scheduler.ready(gref(&headers[1]), ReadyCause::SyscallExit, Some(P0));
    let first = scheduler.next(P0).expect("g1 is queued");
    scheduler.ready(gref(&headers[2]), ReadyCause::Yield, Some(P0));
    scheduler.on_yield(first, P0);
    assert_eq!(take_all(&scheduler, P0), [2, 3, 1]);
}

#[test]
fn ready_without_p_uses_the_injector() {
    let headers = headers(2);
    let scheduler = started(2);
    for header in &headers {
        scheduler.ready(gref(header), ReadyCause::Wake, None);
    }
    assert!(scheduler.has_work());
    assert_eq!(take_all(&scheduler, P1), [1, 2]);
    assert!(!scheduler.has_work());
}

#[test]
fn injector_batch_goes_to_the_local_queue() {
    // 10 gs in the injector and 2 Ps: a P takes 10 / 2 + 1 = 6, runs the first and queues
    // the other five locally. A g yielded afterwards lands behind those five, and the
    // injector's remaining four come last.
    let headers = headers(11);
    let scheduler = started(2);
    for header in &headers[..10] {
        scheduler.ready(gref(header), ReadyCause::Spawn, None);
    }
    assert_eq!(goid(scheduler.next(P0)), Some(1));
    scheduler.ready(gref(&headers[10]), ReadyCause::Yield, Some(P0));
    assert_eq!(take_all(&scheduler, P0), [2, 3, 4, 5, 6, 11, 7, 8, 9, 10]);
}

#[test]
fn injector_batch_is_capped() {
    let count = RunQueue::CAPACITY * 2;
    let headers = headers(count as u64);
    let scheduler = started(1);
    for header in &headers {
        scheduler.ready(gref(header), ReadyCause::Spawn, None);
    }
    assert_eq!(goid(scheduler.next(P0)), Some(1));
    let batch = RunQueue::CAPACITY / 2;
    assert_eq!(scheduler.run_queue_len(P0), batch - 1);
    assert_eq!(scheduler.injector_len(), count - batch);
}

#[test]
fn steal_takes_the_older_half() {
    let headers = headers(10);
    let scheduler = started(2);
    for header in &headers {
        scheduler.ready(gref(header), ReadyCause::Yield, Some(P0));
    }
    // P 1 claims g1..=g5, runs g5 and queues g1..=g4.
    assert_eq!(goid(scheduler.next(P1)), Some(5));
    assert_eq!(take(&scheduler, P0, 5), [6, 7, 8, 9, 10]);
    assert_eq!(scheduler.run_queue_len(P0), 0);
    assert_eq!(take_all(&scheduler, P1), [1, 2, 3, 4]);
}

#[test]
fn steal_prefers_run_queues_to_runnext() {
    let headers = headers(3);
    let scheduler = started(3);
    scheduler.ready(gref(&headers[0]), ReadyCause::Wake, Some(PId(0)));
    scheduler.ready(gref(&headers[1]), ReadyCause::Yield, Some(PId(1)));
    scheduler.ready(gref(&headers[2]), ReadyCause::Wake, Some(PId(1)));
    // P 2 finds the run queue of P 1 before any runnext slot, whichever P it starts at.
    assert_eq!(goid(scheduler.next(PId(2))), Some(2));
    let mut rest = vec![
        goid(scheduler.next(PId(2))).unwrap(),
        goid(scheduler.next(PId(2))).unwrap(),
    ];
    rest.sort_unstable();
    assert_eq!(rest, [1, 3], "then it steals the runnext gs");
    assert_eq!(goid(scheduler.next(PId(2))), None);
}

#[test]
fn single_p_finds_its_runnext() {
    let headers = headers(1);
    let scheduler = started(1);
    scheduler.ready(gref(&headers[0]), ReadyCause::Wake, Some(P0));
    assert!(scheduler.has_work());
    assert_eq!(take_all(&scheduler, P0), [1]);
    assert!(!scheduler.has_work());
}

#[test]
fn release_p_moves_runnext_behind_the_queue() {
    let headers = headers(3);
    let scheduler = started(2);
    scheduler.ready(gref(&headers[0]), ReadyCause::Yield, Some(P0));
    scheduler.ready(gref(&headers[1]), ReadyCause::Yield, Some(P0));
    scheduler.ready(gref(&headers[2]), ReadyCause::Wake, Some(P0));
    scheduler.on_release_p(P0);
    scheduler.on_release_p(P0);
    assert!(scheduler.has_work());
    // The run queue now contains g1, g2, g3, and another P steals the older half (g1, g2).
    assert_eq!(goid(scheduler.next(P1)), Some(2));
    assert_eq!(take(&scheduler, P0, 1), [3]);
    assert_eq!(take_all(&scheduler, P1), [1]);
}

#[test]
fn overflow_moves_the_older_half_to_the_injector() {
    let capacity = RunQueue::CAPACITY;
    let headers = headers(capacity as u64 + 1);
    let scheduler = started(2);
    for header in &headers[..capacity] {
        scheduler.ready(gref(header), ReadyCause::Yield, Some(P0));
    }
    assert_eq!(scheduler.run_queue_len(P0), capacity);
    assert_eq!(scheduler.injector_len(), 0);

    scheduler.ready(gref(&headers[capacity]), ReadyCause::Yield, Some(P0));
    assert_eq!(scheduler.run_queue_len(P0), capacity / 2);
    assert_eq!(scheduler.injector_len(), capacity / 2 + 1);
    // The injector got the oldest gs, in order.
    assert_eq!(goid(scheduler.next(P1)), Some(1));

    let mut all = vec![1];
    all.extend(take_all(&scheduler, P0));
    all.extend(take_all(&scheduler, P1));
    all.sort_unstable();
    assert_eq!(all, (1..=capacity as u64 + 1).collect::<Vec<_>>());
}

/// Counts the `next` calls on P 0 until a g readied into the injector comes out, while P 0
/// keeps busy with three local gs: a and b either yield, or wake each other through runnext
/// (`wake_each_other`), and c yields.
fn calls_until_injected_g_runs(wake_each_other: bool) -> usize {
    let headers = headers(4);
    let gs: Vec<GRef> = headers.iter().map(gref).collect();
    let (a, b, c, injected) = (gs[0], gs[1], gs[2], gs[3]);
    let scheduler = started(1);
    scheduler.ready(a, ReadyCause::Wake, Some(P0));
    scheduler.ready(c, ReadyCause::Yield, Some(P0));
    if !wake_each_other {
        scheduler.ready(b, ReadyCause::Yield, Some(P0));
    }
    let run = |g: GRef| {
        if wake_each_other && (g == a || g == b) {
            // g wakes its partner, which is parked, and parks itself.
            let partner = if g == a { b } else { a };
            scheduler.ready(partner, ReadyCause::Wake, Some(P0));
        } else {
            scheduler.on_yield(g, P0);
        }
    };

    // Let the P run a while first, so that the injector check is not the next call.
    for _ in 0..17 {
        run(scheduler.next(P0).expect("the local gs keep the P busy"));
    }
    scheduler.ready(injected, ReadyCause::Wake, None);
    let limit = 10 * WorkStealing::INJECTOR_CHECK_INTERVAL as usize;
    for calls in 1..=limit {
        let g = scheduler.next(P0).expect("the local gs keep the P busy");
        if g == injected {
            return calls;
        }
        run(g);
    }
    panic!("the injected g did not run within {limit} next calls");
}

#[test]
fn injector_is_checked_while_gs_yield() {
    let calls = calls_until_injected_g_runs(false);
    assert!(
        calls <= WorkStealing::INJECTOR_CHECK_INTERVAL as usize,
        "{calls} next calls"
    );
}

#[test]
fn injector_is_checked_while_gs_wake_each_other() {
    let calls = calls_until_injected_g_runs(true);
    assert!(
        calls <= WorkStealing::INJECTOR_CHECK_INTERVAL as usize,
        "{calls} next calls"
    );
}

#[test]
fn runnext_streak_lets_the_queue_run() {
    // g1 and g2 wake each other through runnext forever; g3 waits in the run queue.
    let headers = headers(3);
    let gs: Vec<GRef> = headers.iter().map(gref).collect();
    let scheduler = started(1);
    scheduler.ready(gs[2], ReadyCause::Yield, Some(P0));
    scheduler.ready(gs[0], ReadyCause::Wake, Some(P0));
    let limit = WorkStealing::MAX_RUNNEXT_STREAK as usize + 1;
    let mut order = Vec::new();
    for _ in 0..limit {
        let g = scheduler
            .next(P0)
            .expect("the ping-pong pair is always runnable");
        order.push(g.header().goid());
        if g == gs[2] {
            break;
        }
        let partner = if g == gs[0] { gs[1] } else { gs[0] };
        scheduler.ready(partner, ReadyCause::Wake, Some(P0));
    }
    let mut expected: Vec<u64> = [1, 2]
        .into_iter()
        .cycle()
        .take(WorkStealing::MAX_RUNNEXT_STREAK as usize)
        .collect();
    expected.push(3);
    assert_eq!(order, expected);
}

#[test]
fn has_work_sees_every_place() {
    let headers = headers(3);
    let scheduler = started(2);
    assert!(!scheduler.has_work());
    scheduler.ready(gref(&headers[0]), ReadyCause::Wake, Some(P1));
    assert!(scheduler.has_work(), "runnext");
    assert_eq!(take_all(&scheduler, P1), [1]);
    assert!(!scheduler.has_work());
    scheduler.ready(gref(&headers[1]), ReadyCause::Yield, Some(P1));
    assert!(scheduler.has_work(), "run queue");
    assert_eq!(take_all(&scheduler, P0), [2]);
    assert!(!scheduler.has_work());
    scheduler.ready(gref(&headers[2]), ReadyCause::Spawn, None);
    assert!(scheduler.has_work(), "injector");
    assert_eq!(take_all(&scheduler, P0), [3]);
    assert!(!scheduler.has_work());
}

#[test]
#[should_panic(expected = "WorkStealing::start: procs is 0")]
fn start_rejects_zero_procs() {
    start(&WorkStealing::new(), 0);
}

#[test]
#[should_panic(expected = "WorkStealing::start: called with 3 Ps after 2 Ps")]
fn start_rejects_another_count() {
    let scheduler = started(2);
    start(&scheduler, 3);
}

#[test]
#[should_panic(expected = "WorkStealing::next: the scheduler has no Ps yet")]
fn next_before_start_panics() {
    WorkStealing::new().next(P0);
}

#[test]
#[should_panic(expected = "WorkStealing::next: P p2 is out of range; start was called with 2 Ps")]
fn next_rejects_an_unknown_p() {
    started(2).next(PId(2));
}

#[test]
#[should_panic(expected = "WorkStealing::ready: P p5 is out of range")]
fn ready_rejects_an_unknown_p() {
    let headers = headers(1);
    started(2).ready(gref(&headers[0]), ReadyCause::Wake, Some(PId(5)));
}

#[test]
#[should_panic(expected = "WorkStealing::ready: the scheduler has no Ps yet")]
fn ready_on_a_p_before_start_panics() {
    let headers = headers(1);
    WorkStealing::new().ready(gref(&headers[0]), ReadyCause::Wake, Some(P0));
}

#[test]
#[should_panic(expected = "WorkStealing::on_release_p: P p1 is out of range")]
fn release_p_rejects_an_unknown_p() {
    started(1).on_release_p(P1);
}
