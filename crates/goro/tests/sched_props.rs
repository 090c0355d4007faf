//! Both reference schedulers under random programs: every goroutine runs to completion exactly
//! once, FIFO order holds for the FIFO scheduler, and a runnable goroutine is not starved by
//! goroutines that keep yielding.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{LIMIT, watchdog};
use goro::{Goroutine, Runtime};
use goro_sched::{Fifo, WorkStealing};
use proptest::prelude::*;

#[derive(Clone, Copy, Debug)]
enum Op {
    Yield,
    /// Park until the unparker goroutine wakes this one.
    Park,
    /// A short syscall that keeps its P.
    Syscall,
    /// A syscall known to block, which hands the P off.
    BlockingSleep,
    /// Spawn a child that yields once, and join it.
    SpawnJoin,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        Just(Op::Yield),
        Just(Op::Park),
        Just(Op::Syscall),
        Just(Op::BlockingSleep),
        Just(Op::SpawnJoin),
    ]
}

fn runtime(steal: bool, procs: usize) -> Runtime {
    let builder = Runtime::builder().procs(procs);
    if steal {
        builder.scheduler(WorkStealing::new())
    } else {
        builder.scheduler(Fifo::new())
    }
    .build()
    .unwrap()
}

/// Runs one goroutine per script; returns how many times each script's goroutine finished.
fn run_program(steal: bool, procs: usize, scripts: Vec<Vec<Op>>) -> Vec<usize> {
    let rt = runtime(steal, procs);
    let count = scripts.len();
    watchdog(LIMIT, move || {
        rt.block_on(move || {
            let finished: Arc<Vec<AtomicUsize>> =
                Arc::new((0..count).map(|_| AtomicUsize::new(0)).collect());
            let (wake_tx, wake_rx) = goro::sync::unbounded::<(Goroutine, Arc<AtomicBool>)>();
            let unparker = goro::spawn(move || {
                while let Ok((g, flag)) = wake_rx.recv() {
                    goro::yield_now();
                    flag.store(true, Ordering::Release);
                    g.unpark();
                }
            })
            .unwrap();
            let handles: Vec<_> = scripts
                .into_iter()
                .enumerate()
                .map(|(index, script)| {
                    let finished = finished.clone();
                    let wake_tx = wake_tx.clone();
                    goro::spawn(move || {
                        for op in script {
                            match op {
                                Op::Yield => goro::yield_now(),
                                Op::Park => {
                                    let flag = Arc::new(AtomicBool::new(false));
                                    wake_tx.send((goro::current(), flag.clone())).unwrap();
                                    while !flag.load(Ordering::Acquire) {
                                        goro::park();
                                    }
                                }
                                Op::Syscall => {
                                    // SAFETY: getppid has no preconditions.
                                    goro::blocking(|| unsafe { libc::getppid() });
                                }
                                Op::BlockingSleep => {
                                    goro::blocking_known(|| {
                                        std::thread::sleep(Duration::from_micros(50))
                                    });
                                }
                                Op::SpawnJoin => {
                                    goro::spawn(goro::yield_now).unwrap().join().unwrap()
                                }
                            }
                        }
                        finished[index].fetch_add(1, Ordering::SeqCst);
                    })
                    .unwrap()
                })
                .collect();
            for handle in handles {
                handle.join().unwrap();
            }
            drop(wake_tx);
            unparker.join().unwrap();
            finished.iter().map(|n| n.load(Ordering::SeqCst)).collect()
        })
        .unwrap()
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn every_goroutine_finishes_once(
        steal in any::<bool>(),
        procs in 1usize..=4,
        scripts in prop::collection::vec(prop::collection::vec(op(), 0..8), 1..24),
    ) {
        let count = scripts.len();
        let finished = run_program(steal, procs, scripts);
        prop_assert_eq!(finished, vec![1; count]);
    }
}

#[test]
fn fifo_runs_goroutines_in_ready_order() {
    let rt = runtime(false, 1);
    let order = watchdog(LIMIT, move || {
        rt.block_on(|| {
            let order = Arc::new(Mutex::new(Vec::new()));
            let handles: Vec<_> = (0..100)
                .map(|i| {
                    let order = order.clone();
                    goro::spawn(move || order.lock().unwrap().push(i)).unwrap()
                })
                .collect();
            for handle in handles {
                handle.join().unwrap();
            }
            Arc::try_unwrap(order).unwrap().into_inner().unwrap()
        })
        .unwrap()
    });
    assert_eq!(order, (0..100).collect::<Vec<_>>());
}

/// With 2 Ps kept busy by goroutines that yield in a loop, a newly runnable goroutine starts
/// within 100 ms, whether it was readied from inside the runtime or from outside.
fn runnable_goroutine_is_not_starved(steal: bool) {
    let rt = runtime(steal, 2);
    watchdog(LIMIT, move || {
        let stop = Arc::new(AtomicBool::new(false));
        let spinners: Vec<_> = (0..4)
            .map(|_| {
                let stop = stop.clone();
                rt.spawn(move || {
                    while !stop.load(Ordering::Acquire) {
                        goro::yield_now();
                    }
                })
                .unwrap()
            })
            .collect();
        std::thread::sleep(Duration::from_millis(20));
        // Readied from outside the runtime (the injector or the global queue).
        let spawned = Instant::now();
        let delay = rt.spawn(move || spawned.elapsed()).unwrap().join().unwrap();
        assert!(
            delay < Duration::from_millis(100),
            "outside spawn waited {delay:?}"
        );
        // Readied from inside, by a goroutine that then keeps yielding.
        let delay = rt
            .spawn(move || {
                let spawned = Instant::now();
                let child = goro::spawn(move || spawned.elapsed()).unwrap();
                for _ in 0..1000 {
                    goro::yield_now();
                }
                child.join().unwrap()
            })
            .unwrap()
            .join()
            .unwrap();
        assert!(
            delay < Duration::from_millis(100),
            "inside spawn waited {delay:?}"
        );
        stop.store(true, Ordering::Release);
        for spinner in spinners {
            spinner.join().unwrap();
        }
    });
}

#[test]
fn fifo_does_not_starve_a_runnable_goroutine() {
    runnable_goroutine_is_not_starved(false);
}

#[test]
fn steal_does_not_starve_a_runnable_goroutine() {
    runnable_goroutine_is_not_starved(true);
}
