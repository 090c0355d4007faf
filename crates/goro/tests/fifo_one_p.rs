//! The FIFO scheduler in a runtime with one P, where the P's holder keeps its queue without a
//! lock and threads that hold no P ready their gs into a locked queue (see `Fifo`'s "One P").
//!
//! Outside threads wake parked goroutines while others yield in a loop and enter blocking
//! calls, so the P keeps moving between Ms and the two queues keep meeting. Every wakeup must
//! reach its goroutine, and every goroutine must finish.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use common::{LIMIT, watchdog};

/// Goroutines that park and are woken from outside.
const SLEEPERS: usize = 8;
/// Parks per sleeper.
const ROUNDS: usize = 300;
/// Goroutines that yield in a loop while the sleepers are woken.
const YIELDERS: usize = 2;
/// Outside threads that wake the sleepers.
const WAKERS: usize = 2;

/// Receives `count` goroutine handles, yielding between tries: a blocking receive would hold
/// the only P that the senders need.
fn receive_handles(
    handles: &mpsc::Receiver<goro::Goroutine>,
    count: usize,
) -> Vec<goro::Goroutine> {
    let mut received = Vec::with_capacity(count);
    while received.len() < count {
        match handles.try_recv() {
            Ok(handle) => received.push(handle),
            Err(mpsc::TryRecvError::Empty) => goro::yield_now(),
            Err(mpsc::TryRecvError::Disconnected) => panic!("a goroutine ended before sending"),
        }
    }
    received
}

fn one_p_fifo() -> goro::Runtime {
    goro::Runtime::builder()
        .procs(1)
        .scheduler(goro::Fifo::new())
        // Sleepers wait for plain threads, which deadlock detection cannot see.
        .deadlock_detection(false)
        .build()
        .expect("runtime builds")
}

#[test]
fn outside_wakeups_reach_goroutines_on_one_p() {
    let rt = one_p_fifo();
    let (rounds, yields) = watchdog(LIMIT, move || {
        rt.block_on(|| {
            let done = Arc::new(AtomicBool::new(false));
            let rounds = Arc::new(AtomicUsize::new(0));
            let yields = Arc::new(AtomicUsize::new(0));
            let (handles_tx, handles_rx) = mpsc::channel();
            let sleepers: Vec<_> = (0..SLEEPERS)
                .map(|index| {
                    let (rounds, handles_tx) = (Arc::clone(&rounds), handles_tx.clone());
                    goro::spawn(move || {
                        handles_tx.send(goro::current()).unwrap();
                        for round in 0..ROUNDS {
                            goro::park();
                            rounds.fetch_add(1, Ordering::Relaxed);
                            if (index + round) % 16 == 0 {
                                // A blocking call that the monitor may outlast: the P moves
                                // to another M, and the sleeper comes back through exitsyscall.
                                goro::blocking(|| std::thread::sleep(Duration::from_micros(50)));
                            }
                        }
                    })
                    .unwrap()
                })
                .collect();
            let handles = Arc::new(receive_handles(&handles_rx, SLEEPERS));
            let wakers: Vec<_> = (0..WAKERS)
                .map(|_| {
                    let (handles, done) = (Arc::clone(&handles), Arc::clone(&done));
                    std::thread::spawn(move || {
                        // Acquire: pairs with the Release store below, after every sleeper
                        // finished; the wakers only need to see it eventually.
                        while !done.load(Ordering::Acquire) {
                            for handle in handles.iter() {
                                handle.unpark();
                            }
                            std::thread::yield_now();
                        }
                    })
                })
                .collect();
            let yielders: Vec<_> = (0..YIELDERS)
                .map(|_| {
                    let (done, yields) = (Arc::clone(&done), Arc::clone(&yields));
                    goro::spawn(move || {
                        while !done.load(Ordering::Acquire) {
                            goro::yield_now();
                            yields.fetch_add(1, Ordering::Relaxed);
                        }
                    })
                    .unwrap()
                })
                .collect();
            for sleeper in sleepers {
                sleeper.join().unwrap();
            }
            // Release: see the wakers' load.
            done.store(true, Ordering::Release);
            for yielder in yielders {
                yielder.join().unwrap();
            }
            for waker in wakers {
                waker.join().unwrap();
            }
            (
                rounds.load(Ordering::Relaxed),
                yields.load(Ordering::Relaxed),
            )
        })
        .unwrap()
    });
    assert_eq!(rounds, SLEEPERS * ROUNDS);
    // The yielders ran while the sleepers were woken, so the P's own queue was busy.
    assert!(yields > 0, "the yielders never ran");
}

/// Goroutines readied from outside and by the P's holder run in one order: the order in which
/// they became ready.
#[test]
fn outside_and_inside_readies_keep_one_order() {
    let rt = one_p_fifo();
    let order = watchdog(LIMIT, move || {
        rt.block_on(|| {
            let order = Arc::new(std::sync::Mutex::new(Vec::new()));
            let (handles_tx, handles_rx) = mpsc::channel();
            let parked: Vec<_> = (0..4)
                .map(|index| {
                    let (order, handles_tx) = (Arc::clone(&order), handles_tx.clone());
                    goro::spawn(move || {
                        handles_tx.send(goro::current()).unwrap();
                        goro::park();
                        order.lock().unwrap().push(index);
                    })
                    .unwrap()
                })
                .collect();
            let handles = receive_handles(&handles_rx, 4);
            // Let every goroutine park: each yield runs the others once.
            for _ in 0..8 {
                goro::yield_now();
            }
            // From outside, in the order 2, 0; then from this goroutine, which holds the P,
            // 3 and 1. `block_on`'s goroutine keeps the P throughout, so none runs before the
            // join below.
            std::thread::scope(|scope| {
                scope.spawn(|| {
                    handles[2].unpark();
                    handles[0].unpark();
                });
            });
            handles[3].unpark();
            handles[1].unpark();
            for goroutine in parked {
                goroutine.join().unwrap();
            }
            Arc::try_unwrap(order).unwrap().into_inner().unwrap()
        })
        .unwrap()
    });
    assert_eq!(order, [2, 0, 3, 1]);
}

/// Checks that a running runtime's Fifo rejects a second `start` before it changes the queue's
/// layout, which the runtime's Ps may be using. Only a call that breaks `SchedLink::start`'s
/// terms can make that second `start`.
#[test]
#[should_panic(expected = "Fifo::start: called a second time (procs = 1)")]
fn second_start_through_link_rejected() {
    let rt = goro::Runtime::builder()
        .procs(2)
        .build()
        .expect("runtime builds");
    let link = rt.default_scheduler().link();
    // SAFETY: none: the call breaks the terms on purpose, and the Fifo must reject it before
    // it changes anything.
    unsafe { link.start(1) };
}
