//! loom models of the FIFO scheduler: producers ready gs while consumers take them, through the
//! scheduler's spin lock, and, with one P, while the P's holder works on its own queue
//! without the lock.
//!
//! Every model ends by draining the scheduler on one thread and checking that each g came out
//! exactly once, in the order it was readied.
//!
//! Run with `RUSTFLAGS="--cfg loom" cargo test --release -p goro-sched --test loom_fifo`.

#![cfg(loom)]

use std::ptr::NonNull;

use loom::sync::Arc;
use loom::thread;

use goro_abi::{GHeader, GRef, PId, ReadyCause};
use goro_sched::{Fifo, Scheduler};

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

/// A producer readies two gs while a consumer takes one; the main thread drains the rest.
#[test]
fn ready_races_next() {
    loom::model(|| {
        let headers = headers(2);
        let gs: Vec<GRef> = headers.iter().map(gref).collect();
        let fifo = Arc::new(Fifo::new());

        let producer = {
            let fifo = Arc::clone(&fifo);
            let (one, two) = (gs[0], gs[1]);
            thread::spawn(move || {
                fifo.ready(one, ReadyCause::Spawn, None);
                fifo.ready(two, ReadyCause::Yield, Some(PId(0)));
            })
        };
        let consumer = {
            let fifo = Arc::clone(&fifo);
            thread::spawn(move || fifo.next(PId(1)).map(goid))
        };
        producer.join().unwrap();
        let mut taken: Vec<u64> = consumer.join().unwrap().into_iter().collect();
        assert!(
            fifo.has_work(),
            "has_work missed a g after the producer finished"
        );
        taken.extend(std::iter::from_fn(|| fifo.next(PId(0))).map(goid));
        assert!(!fifo.has_work());
        assert_eq!(taken, [1, 2], "the gs were lost, repeated or reordered");
    });
}

/// Two consumers race for one g: exactly one of them gets it.
#[test]
fn next_races_next() {
    loom::model(|| {
        let headers = headers(1);
        let fifo = Arc::new(Fifo::new());
        fifo.ready(gref(&headers[0]), ReadyCause::Spawn, None);

        let consumers: Vec<_> = (0..2)
            .map(|p| {
                let fifo = Arc::clone(&fifo);
                thread::spawn(move || fifo.next(PId(p)).map(goid))
            })
            .collect();
        let taken: Vec<u64> = consumers
            .into_iter()
            .filter_map(|consumer| consumer.join().unwrap())
            .collect();
        assert_eq!(taken, [1], "the g was lost or returned twice");
        assert!(!fifo.has_work());
    });
}

/// Starts `fifo` for a runtime with one P, whose holder is the model's main thread.
fn start_one_p(fifo: &Fifo) {
    // SAFETY: the model is the scheduler's only user; the main thread holds the P, and other
    // threads only ready gs with `None` or call `has_work`.
    unsafe { fifo.start(1) };
}

/// With one P: a thread that holds no P readies two gs while the P's holder readies one and
/// takes one, without a lock on its own queue. Every g comes out once, and the two gs of the
/// outside thread in the order it readied them.
#[test]
fn one_p_holder_races_outside_ready() {
    loom::model(|| {
        let headers = headers(3);
        let gs: Vec<GRef> = headers.iter().map(gref).collect();
        let fifo = Arc::new(Fifo::new());
        start_one_p(&fifo);

        let outside = {
            let fifo = Arc::clone(&fifo);
            let (two, three) = (gs[1], gs[2]);
            thread::spawn(move || {
                fifo.ready(two, ReadyCause::Wake, None);
                fifo.ready(three, ReadyCause::SyscallExit, None);
            })
        };
        fifo.ready(gs[0], ReadyCause::Spawn, Some(PId(0)));
        let mut taken: Vec<u64> = fifo.next(PId(0)).map(goid).into_iter().collect();
        outside.join().unwrap();
        assert!(
            fifo.has_work(),
            "has_work missed a g after the outside thread finished"
        );
        taken.extend(std::iter::from_fn(|| fifo.next(PId(0))).map(goid));
        assert!(!fifo.has_work());
        let mut sorted = taken.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, [1, 2, 3], "the gs were lost or repeated: {taken:?}");
        let position = |goid| taken.iter().position(|&taken| taken == goid);
        assert!(
            position(2) < position(3),
            "the outside thread's gs were reordered: {taken:?}"
        );
    });
}

/// With one P: the holder moves two gs from the locked queue to its own and takes one, while
/// another thread calls `has_work`. The move must never hide both gs from `has_work`.
#[test]
fn one_p_move_stays_visible_to_has_work() {
    loom::model(|| {
        let headers = headers(2);
        let fifo = Arc::new(Fifo::new());
        start_one_p(&fifo);
        for header in &headers {
            fifo.ready(gref(header), ReadyCause::Wake, None);
        }

        let observer = {
            let fifo = Arc::clone(&fifo);
            thread::spawn(move || fifo.has_work())
        };
        assert_eq!(fifo.next(PId(0)).map(goid), Some(1));
        assert!(
            observer.join().unwrap(),
            "has_work missed a g moving to the holder's queue"
        );
        assert_eq!(fifo.next(PId(0)).map(goid), Some(2));
        assert!(!fifo.has_work());
    });
}
