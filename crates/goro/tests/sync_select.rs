//! `Select`: exactly one case fires, the default runs only when nothing is ready, closed
//! channels fire their cases, a select enqueued on several channels is woken once, and no
//! value is lost when selects compete.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::{LIMIT, watchdog};
use goro::Runtime;
use goro::sync::{Receiver, RecvError, Select, SendError, TryRecvError, channel, unbounded};

fn runtime(procs: usize) -> Runtime {
    Runtime::builder()
        .procs(procs)
        .build()
        .expect("runtime builds")
}

fn yield_some() {
    for _ in 0..5 {
        goro::yield_now();
    }
}

/// Receives from `a` and `b` by select until both are closed and drained.
fn receive_all<T>(a: &Receiver<T>, b: &Receiver<T>) -> Vec<T> {
    let mut got = Vec::new();
    let (mut a_open, mut b_open) = (true, true);
    while a_open || b_open {
        // A closed channel's case is always ready, so select only over the open ones.
        let (from_a, value) = match (a_open, b_open) {
            (true, true) => Select::new()
                .recv(a, |r| (true, r))
                .recv(b, |r| (false, r))
                .wait(),
            (true, false) => Select::new().recv(a, |r| (true, r)).wait(),
            _ => Select::new().recv(b, |r| (false, r)).wait(),
        };
        match (from_a, value) {
            (_, Ok(value)) => got.push(value),
            (true, Err(RecvError)) => a_open = false,
            (false, Err(RecvError)) => b_open = false,
        }
    }
    got
}

/// Which case of a two-case select fired.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Fired {
    First,
    Second,
}

#[test]
fn two_ready_cases_fire_exactly_one() {
    let mut fired = BTreeSet::new();
    for _ in 0..200 {
        let (tx1, rx1) = channel::<u32>(1);
        let (tx2, rx2) = channel::<u32>(1);
        tx1.send(1).unwrap();
        tx2.send(2).unwrap();
        let which = Select::new()
            .recv(&rx1, |v| (Fired::First, v))
            .recv(&rx2, |v| (Fired::Second, v))
            .wait();
        match which {
            (Fired::First, value) => {
                assert_eq!(value, Ok(1));
                assert_eq!(rx2.len(), 1, "the other case must not have received");
            }
            (Fired::Second, value) => {
                assert_eq!(value, Ok(2));
                assert_eq!(rx1.len(), 1, "the other case must not have received");
            }
        }
        fired.insert(which.0);
    }
    // The start of the poll order is random: over 200 rounds both cases fire (the chance
    // that one never does is 2^-199).
    assert_eq!(fired.len(), 2, "only {fired:?} ever fired");
}

#[test]
fn ready_send_and_ready_receive_fire_one() {
    for _ in 0..100 {
        let (out_tx, out_rx) = channel::<u32>(1);
        let (in_tx, in_rx) = channel::<u32>(1);
        in_tx.send(5).unwrap();
        let which = Select::new()
            .send(&out_tx, 9, |sent| {
                sent.unwrap();
                Fired::First
            })
            .recv(&in_rx, |got| {
                assert_eq!(got, Ok(5));
                Fired::Second
            })
            .wait();
        match which {
            Fired::First => {
                assert_eq!(out_rx.try_recv(), Ok(9));
                assert_eq!(in_rx.len(), 1, "the receive case must not have fired");
            }
            Fired::Second => {
                assert!(out_rx.is_empty(), "the send case must not have fired");
            }
        }
    }
}

#[test]
fn default_runs_only_when_nothing_is_ready() {
    let (tx, rx) = channel::<u32>(1);
    let (full_tx, _full_rx) = channel::<u32>(0);
    let outcome = Select::new()
        .recv(&rx, |_| "received")
        .send(&full_tx, 1, |_| "sent")
        .default(|| "default");
    assert_eq!(outcome, "default");
    assert!(rx.is_empty());
    assert!(full_tx.is_empty());

    tx.send(4).unwrap();
    let outcome = Select::new()
        .recv(&rx, |got| {
            assert_eq!(got, Ok(4));
            "received"
        })
        .send(&full_tx, 1, |_| "sent")
        .default(|| "default");
    assert_eq!(outcome, "received");

    let empty: Select<&str> = Select::new();
    assert_eq!(empty.default(|| "default"), "default");
}

#[test]
fn closed_channels_fire_their_cases() {
    let (tx, rx) = channel::<u32>(0);
    tx.close();
    let got = Select::new().recv(&rx, |got| got).wait();
    assert_eq!(got, Err(RecvError));

    let (tx, _rx) = channel::<String>(0);
    tx.close();
    let sent = Select::new()
        .send(&tx, "back".to_string(), |sent| sent)
        .default(|| panic!("a send on a closed channel is ready: it fails"));
    assert_eq!(sent, Err(SendError("back".to_string())));
}

#[test]
fn close_wakes_a_blocked_select() {
    let rt = runtime(1);
    watchdog(LIMIT, move || {
        rt.block_on(|| {
            let (tx1, rx1) = channel::<u32>(0);
            let (_tx2, rx2) = channel::<u32>(0);
            let selector = goro::spawn(move || {
                Select::new()
                    .recv(&rx1, |got| (Fired::First, got))
                    .recv(&rx2, |got| (Fired::Second, got))
                    .wait()
            })
            .unwrap();
            yield_some();
            tx1.close();
            assert_eq!(selector.join().unwrap(), (Fired::First, Err(RecvError)));
        })
        .unwrap();
    });
}

#[test]
fn blocked_select_receives_from_a_later_send() {
    let rt = runtime(1);
    watchdog(LIMIT, move || {
        rt.block_on(|| {
            let (tx1, rx1) = channel::<u32>(0);
            let (tx2, rx2) = channel::<u32>(0);
            // Kept here, so that the channels stay open after the select's goroutine ends.
            let _receivers = (rx1.clone(), rx2.clone());
            let selector = goro::spawn(move || {
                Select::new()
                    .recv(&rx1, |got| (Fired::First, got))
                    .recv(&rx2, |got| (Fired::Second, got))
                    .wait()
            })
            .unwrap();
            yield_some();
            // The select waits as a receiver: a non-blocking send finds it.
            assert_eq!(tx2.try_send(8), Ok(()));
            assert_eq!(selector.join().unwrap(), (Fired::Second, Ok(8)));
            // Nobody receives on either channel any more; a node left behind by the select
            // would take these.
            assert!(tx1.try_send(1).unwrap_err().is_full());
            assert!(tx2.try_send(2).unwrap_err().is_full());
        })
        .unwrap();
    });
}

#[test]
fn blocked_select_sends_to_a_later_receiver() {
    let rt = runtime(1);
    watchdog(LIMIT, move || {
        rt.block_on(|| {
            let (tx1, rx1) = channel::<u32>(0);
            let (tx2, rx2) = channel::<u32>(0);
            // Kept here, so that the channels stay open after the select's goroutine ends.
            let _senders = (tx1.clone(), tx2.clone());
            let selector = goro::spawn(move || {
                Select::new()
                    .send(&tx1, 10, |sent| (Fired::First, sent))
                    .send(&tx2, 20, |sent| (Fired::Second, sent))
                    .wait()
            })
            .unwrap();
            yield_some();
            assert_eq!(rx1.try_recv(), Ok(10));
            assert_eq!(selector.join().unwrap(), (Fired::First, Ok(())));
            // A node left behind by the case that did not fire would be found here.
            assert_eq!(rx2.try_recv(), Err(TryRecvError::Empty));
            assert_eq!(rx1.try_recv(), Err(TryRecvError::Empty));
        })
        .unwrap();
    });
}

#[test]
fn select_does_not_pair_with_itself() {
    let rt = runtime(1);
    watchdog(LIMIT, move || {
        rt.block_on(|| {
            let (tx, rx) = channel::<u32>(0);
            let outcome = Select::new()
                .send(&tx, 1, |_| "sent")
                .recv(&rx, |_| "received")
                .default(|| "default");
            assert_eq!(outcome, "default");

            let (other_tx, other_rx) = (tx.clone(), rx.clone());
            let selector = goro::spawn(move || {
                Select::new()
                    .send(&tx, 1, |sent| {
                        sent.unwrap();
                        Fired::First
                    })
                    .recv(&rx, |_| Fired::Second)
                    .wait()
            })
            .unwrap();
            yield_some();
            assert!(!selector.is_finished(), "the select paired with itself");
            // Another party takes the send.
            assert_eq!(other_rx.recv(), Ok(1));
            assert_eq!(selector.join().unwrap(), Fired::First);
            drop(other_tx);
        })
        .unwrap();
    });
}

#[test]
fn select_pairs_with_another_select() {
    let rt = runtime(2);
    watchdog(LIMIT, move || {
        rt.block_on(|| {
            for round in 0..200u32 {
                let (tx, rx) = channel::<u32>(0);
                let receiver =
                    goro::spawn(move || Select::new().recv(&rx, |got| got).wait()).unwrap();
                Select::new().send(&tx, round, |sent| sent.unwrap()).wait();
                assert_eq!(receiver.join().unwrap(), Ok(round));
            }
        })
        .unwrap();
    });
}

#[test]
fn select_on_several_channels_is_woken_once() {
    let rt = runtime(2);
    watchdog(LIMIT, move || {
        rt.block_on(|| {
            for _ in 0..300 {
                let (tx1, rx1) = channel::<u32>(0);
                let (tx2, rx2) = channel::<u32>(0);
                let selector = goro::spawn(move || {
                    let got = Select::new()
                        .recv(&rx1, |got| (Fired::First, got.unwrap()))
                        .recv(&rx2, |got| (Fired::Second, got.unwrap()))
                        .wait();
                    (got, rx1, rx2)
                })
                .unwrap();
                // Two senders race for the one select; the loser must stay blocked until
                // its value is received below.
                let sender1 = goro::spawn(move || {
                    tx1.send(1).unwrap();
                })
                .unwrap();
                let sender2 = goro::spawn(move || {
                    tx2.send(2).unwrap();
                })
                .unwrap();
                let (got, rx1, rx2) = selector.join().unwrap();
                match got {
                    (Fired::First, value) => {
                        assert_eq!(value, 1);
                        assert_eq!(rx2.recv(), Ok(2), "the losing value was lost");
                    }
                    (Fired::Second, value) => {
                        assert_eq!(value, 2);
                        assert_eq!(rx1.recv(), Ok(1), "the losing value was lost");
                    }
                }
                sender1.join().unwrap();
                sender2.join().unwrap();
            }
        })
        .unwrap();
    });
}

#[test]
fn competing_selects_lose_no_value() {
    const PRODUCERS: u64 = 6;
    const VALUES: u64 = 300;
    let rt = runtime(2);
    let (sent, received) = watchdog(LIMIT, move || {
        rt.block_on(|| {
            let (a_tx, a_rx) = channel::<u64>(0);
            let (b_tx, b_rx) = channel::<u64>(1);
            let fired_a = Arc::new(AtomicUsize::new(0));
            // Producers offer each value to whichever channel takes it first.
            let producers: Vec<_> = (0..PRODUCERS)
                .map(|p| {
                    let (a_tx, b_tx, fired_a) = (a_tx.clone(), b_tx.clone(), fired_a.clone());
                    goro::spawn(move || {
                        let mut sent = Vec::new();
                        for i in 0..VALUES {
                            let value = p * VALUES + i;
                            Select::new()
                                .send(&a_tx, value, |r| {
                                    r.unwrap();
                                    fired_a.fetch_add(1, Ordering::Relaxed);
                                })
                                .send(&b_tx, value, |r| r.unwrap())
                                .wait();
                            sent.push(value);
                        }
                        sent
                    })
                    .unwrap()
                })
                .collect();
            drop((a_tx, b_tx));
            // Consumers take from either channel, by select or (one of them) by a plain
            // receive on `a` first.
            let consumers: Vec<_> = (0..4)
                .map(|c| {
                    let (a_rx, b_rx) = (a_rx.clone(), b_rx.clone());
                    goro::spawn(move || {
                        let mut got = Vec::new();
                        if c == 0 {
                            got.extend(a_rx.iter());
                            got.extend(b_rx.iter());
                        } else {
                            got.extend(receive_all(&a_rx, &b_rx));
                        }
                        got
                    })
                    .unwrap()
                })
                .collect();
            drop((a_rx, b_rx));
            let sent: Vec<u64> = producers
                .into_iter()
                .flat_map(|h| h.join().unwrap())
                .collect();
            let received: Vec<u64> = consumers
                .into_iter()
                .flat_map(|h| h.join().unwrap())
                .collect();
            (sent, received)
        })
        .unwrap()
    });
    let mut received = received;
    received.sort_unstable();
    let mut sent = sent;
    sent.sort_unstable();
    assert_eq!(sent.len() as u64, PRODUCERS * VALUES);
    assert_eq!(received, sent, "a value was lost or received twice");
}

#[test]
fn select_works_on_plain_threads() {
    watchdog(LIMIT, || {
        let (tx1, rx1) = unbounded::<u32>();
        let (tx2, rx2) = unbounded::<u32>();
        let sender = std::thread::spawn(move || {
            for i in 0..500 {
                if i % 2 == 0 {
                    tx1.send(i).unwrap();
                } else {
                    tx2.send(i).unwrap();
                }
            }
        });
        let sum: u32 = receive_all(&rx1, &rx2).into_iter().sum();
        sender.join().unwrap();
        assert_eq!(sum, (0..500).sum::<u32>());
    });
}

#[test]
#[should_panic(expected = "Select::wait: no cases")]
fn wait_without_cases_panics() {
    let select: Select<()> = Select::new();
    select.wait();
}

#[test]
fn select_times_out_when_nothing_is_ready() {
    let rt = goro::Runtime::builder().procs(2).build().unwrap();
    let (elapsed, outcome) = common::watchdog(common::LIMIT, move || {
        rt.block_on(|| {
            let (_tx, rx) = goro::sync::channel::<u32>(0);
            let start = std::time::Instant::now();
            let outcome = goro::sync::Select::new()
                .recv(&rx, |r| r.ok())
                .wait_timeout(std::time::Duration::from_millis(20), || None);
            (start.elapsed(), outcome)
        })
        .unwrap()
    });
    assert_eq!(outcome, None);
    assert!(
        elapsed >= std::time::Duration::from_millis(20),
        "gave up after {elapsed:?}"
    );
}

#[test]
fn recv_timeout_returns_a_value_that_comes_in_time() {
    let rt = goro::Runtime::builder().procs(2).build().unwrap();
    let (late, on_time) = common::watchdog(common::LIMIT, move || {
        rt.block_on(|| {
            let (tx, rx) = goro::sync::channel::<u32>(0);
            let late = rx.recv_timeout(std::time::Duration::from_millis(5));
            let sender = goro::spawn(move || {
                goro::sleep(std::time::Duration::from_millis(5));
                tx.send(7).unwrap();
            })
            .unwrap();
            let on_time = rx.recv_timeout(std::time::Duration::from_secs(60));
            sender.join().unwrap();
            (late, on_time)
        })
        .unwrap()
    });
    assert_eq!(late, Err(goro::sync::RecvTimeoutError::Timeout));
    assert_eq!(on_time, Ok(7));
}

#[test]
fn recv_timeout_works_on_a_plain_thread() {
    let (_tx, rx) = goro::sync::channel::<u32>(1);
    let start = std::time::Instant::now();
    let result = rx.recv_timeout(std::time::Duration::from_millis(10));
    assert_eq!(result, Err(goro::sync::RecvTimeoutError::Timeout));
    assert!(start.elapsed() >= std::time::Duration::from_millis(10));
}
