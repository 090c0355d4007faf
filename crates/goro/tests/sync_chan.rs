//! Channels: delivery of every value exactly once and in order per sender (proptest over
//! capacities, producers, consumers and their modes), rendezvous, close, disconnection, plain
//! threads, and the permit and wait reason of a blocked goroutine.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

// Goroutines here wait for plain threads, which deadlock detection cannot see.
use common::{LIMIT, runtime_without_deadlock_detection as runtime, watchdog};
use goro::sync::{
    Receiver, RecvError, Select, SendError, Sender, TryRecvError, TrySendError, channel, unbounded,
};
use goro::{GHeader, Runtime, WaitReason};
use proptest::prelude::*;

/// One runtime with 2 Ps for all proptest cases, so that a case costs no thread start-up.
fn shared_runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| runtime(2))
}

fn make_channel<T>(capacity: Option<usize>) -> (Sender<T>, Receiver<T>) {
    match capacity {
        Some(capacity) => channel(capacity),
        None => unbounded(),
    }
}

/// Yields a few times, so that goroutines on the other P (or this one) make progress.
fn yield_some() {
    for _ in 0..5 {
        goro::yield_now();
    }
}

// ---------------------------------------------------------------------------------------------
// Properties.
// ---------------------------------------------------------------------------------------------

/// How a producer sends.
#[derive(Clone, Copy, Debug)]
enum SendMode {
    Blocking,
    /// `try_send`, yielding while the channel is full, then `send`. Two pollers alone never
    /// meet on a rendezvous channel, since a non-blocking operation pairs only with a blocked
    /// one.
    Polling,
    /// A one-case `Select::wait`.
    Select,
}

/// How a consumer receives.
#[derive(Clone, Copy, Debug)]
enum RecvMode {
    Blocking,
    /// `try_recv`, yielding while the channel is empty, then `recv`.
    Polling,
    /// A one-case `Select::wait`.
    Select,
    /// `recv` on a plain thread instead of a goroutine.
    Thread,
}

fn send_mode() -> impl Strategy<Value = SendMode> {
    prop_oneof![
        Just(SendMode::Blocking),
        Just(SendMode::Polling),
        Just(SendMode::Select)
    ]
}

fn recv_mode() -> impl Strategy<Value = RecvMode> {
    prop_oneof![
        3 => Just(RecvMode::Blocking),
        1 => Just(RecvMode::Polling),
        2 => Just(RecvMode::Select),
        1 => Just(RecvMode::Thread),
    ]
}

fn capacity() -> impl Strategy<Value = Option<usize>> {
    prop_oneof![
        Just(Some(0)),
        Just(Some(1)),
        Just(Some(2)),
        Just(Some(7)),
        Just(None)
    ]
}

fn send_one(tx: &Sender<(usize, usize)>, value: (usize, usize), mode: SendMode) {
    match mode {
        SendMode::Blocking => tx.send(value).expect("the channel is open"),
        SendMode::Polling => {
            let mut value = value;
            for _ in 0..POLLS {
                match tx.try_send(value) {
                    Ok(()) => return,
                    Err(TrySendError::Full(back)) => value = back,
                    Err(TrySendError::Closed(_)) => panic!("try_send: the channel closed early"),
                }
                goro::yield_now();
            }
            tx.send(value).expect("the channel is open");
        }
        SendMode::Select => Select::new()
            .send(tx, value, |sent| sent.expect("the channel is open"))
            .wait(),
    }
}

/// How many times a polling sender or receiver tries before it blocks.
const POLLS: usize = 4;

fn poll_recv(rx: &Receiver<(usize, usize)>) -> Option<(usize, usize)> {
    for _ in 0..POLLS {
        match rx.try_recv() {
            Ok(value) => return Some(value),
            Err(TryRecvError::Closed) => return None,
            Err(TryRecvError::Empty) => goro::yield_now(),
        }
    }
    rx.recv().ok()
}

/// Receives until the channel is closed and drained; returns the values in receive order.
fn drain(rx: &Receiver<(usize, usize)>, mode: RecvMode) -> Vec<(usize, usize)> {
    let mut got = Vec::new();
    loop {
        let next = match mode {
            RecvMode::Blocking | RecvMode::Thread => rx.recv().ok(),
            RecvMode::Polling => poll_recv(rx),
            RecvMode::Select => Select::new().recv(rx, Result::ok).wait(),
        };
        match next {
            Some(value) => got.push(value),
            None => return got,
        }
    }
}

/// Runs the producers and consumers, and returns what each consumer received.
fn exchange(
    capacity: Option<usize>,
    producers: Vec<(usize, SendMode)>,
    consumers: Vec<RecvMode>,
) -> Vec<Vec<(usize, usize)>> {
    let rt = shared_runtime();
    watchdog(LIMIT, move || {
        let (tx, rx) = make_channel::<(usize, usize)>(capacity);
        let threads: Vec<_> = consumers
            .iter()
            .filter(|mode| matches!(mode, RecvMode::Thread))
            .map(|&mode| {
                let rx = rx.clone();
                std::thread::spawn(move || drain(&rx, mode))
            })
            .collect();
        let mut received = rt
            .block_on(move || {
                let goroutines: Vec<_> = consumers
                    .into_iter()
                    .filter(|mode| !matches!(mode, RecvMode::Thread))
                    .map(|mode| {
                        let rx = rx.clone();
                        goro::spawn(move || drain(&rx, mode)).unwrap()
                    })
                    .collect();
                drop(rx);
                let senders: Vec<_> = producers
                    .into_iter()
                    .enumerate()
                    .map(|(id, (count, mode))| {
                        let tx = tx.clone();
                        goro::spawn(move || {
                            for seq in 0..count {
                                send_one(&tx, (id, seq), mode);
                            }
                        })
                        .unwrap()
                    })
                    .collect();
                // The channel closes when the last producer's sender is dropped.
                drop(tx);
                senders.into_iter().for_each(|h| h.join().unwrap());
                goroutines
                    .into_iter()
                    .map(|h| h.join().unwrap())
                    .collect::<Vec<_>>()
            })
            .unwrap();
        received.extend(threads.into_iter().map(|t| t.join().unwrap()));
        received
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn every_value_arrives_once_in_order(
        capacity in capacity(),
        producers in proptest::collection::vec((0usize..60, send_mode()), 1..4),
        consumers in proptest::collection::vec(recv_mode(), 1..4),
    ) {
        let counts: Vec<usize> = producers.iter().map(|&(count, _)| count).collect();
        let received = exchange(capacity, producers, consumers);

        let mut seen: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        for (consumer, values) in received.iter().enumerate() {
            // Each consumer sees the values of one producer in the order they were sent.
            let mut last: BTreeMap<usize, usize> = BTreeMap::new();
            for &(producer, seq) in values {
                if let Some(&previous) = last.get(&producer) {
                    prop_assert!(
                        seq > previous,
                        "consumer {} got value {} of producer {} after value {}",
                        consumer, seq, producer, previous
                    );
                }
                last.insert(producer, seq);
                seen.entry(producer).or_default().push(seq);
            }
        }
        for (producer, &count) in counts.iter().enumerate() {
            let mut got = seen.remove(&producer).unwrap_or_default();
            got.sort_unstable();
            let expected: Vec<usize> = (0..count).collect();
            prop_assert_eq!(got, expected, "values of producer {}", producer);
        }
        prop_assert!(seen.is_empty(), "values of unknown producers: {:?}", seen);
    }

    #[test]
    fn close_wakes_every_blocked_operation(
        capacity in capacity(),
        receivers in 1usize..5,
        senders in 1usize..5,
    ) {
        let rt = shared_runtime();
        let (recv_results, send_results) = watchdog(LIMIT, move || {
            rt.block_on(move || {
                // Receivers wait on an empty channel, senders on a full one.
                let (_empty_tx, empty_rx) = make_channel::<u32>(capacity);
                let (full_tx, _full_rx) = make_channel::<u32>(capacity);
                let fill = capacity.unwrap_or(0);
                for i in 0..fill {
                    full_tx.try_send(1000 + i as u32).expect("the buffer has room");
                }
                let started = Arc::new(AtomicUsize::new(0));
                let recv_handles: Vec<_> = (0..receivers)
                    .map(|_| {
                        let (rx, started) = (empty_rx.clone(), started.clone());
                        goro::spawn(move || {
                            started.fetch_add(1, Ordering::SeqCst);
                            rx.recv()
                        })
                        .unwrap()
                    })
                    .collect();
                // An unbounded channel never blocks a sender; those senders just succeed.
                let send_handles: Vec<_> = (0..senders as u32)
                    .map(|i| {
                        let (tx, started) = (full_tx.clone(), started.clone());
                        goro::spawn(move || {
                            started.fetch_add(1, Ordering::SeqCst);
                            tx.send(i)
                        })
                        .unwrap()
                    })
                    .collect();
                while started.load(Ordering::SeqCst) < receivers + senders {
                    goro::yield_now();
                }
                yield_some();
                assert!(empty_rx.close(), "the first close reports that it closed");
                assert!(!empty_rx.close(), "a second close reports that it did nothing");
                full_tx.close();
                let recv_results: Vec<_> =
                    recv_handles.into_iter().map(|h| h.join().unwrap()).collect();
                let send_results: Vec<_> =
                    send_handles.into_iter().map(|h| h.join().unwrap()).collect();
                (recv_results, send_results)
            })
            .unwrap()
        });
        for result in &recv_results {
            prop_assert_eq!(result, &Err(RecvError));
        }
        for (i, result) in send_results.into_iter().enumerate() {
            match (capacity, result) {
                // An unbounded send never waits: it fails only when it ran after the close.
                (None, Ok(())) => {}
                (_, Err(SendError(value))) => prop_assert_eq!(value, i as u32),
                // The bounded channel was full from the start, so no send can succeed.
                (Some(_), Ok(())) => prop_assert!(false, "send {} succeeded on a full channel", i),
            }
        }
    }

    #[test]
    fn receivers_drain_then_see_closed(
        capacity in prop_oneof![(1usize..10).prop_map(Some), Just(None)],
        count in 0usize..10,
    ) {
        let count = capacity.map_or(count, |capacity| count.min(capacity));
        let (tx, rx) = make_channel::<usize>(capacity);
        for i in 0..count {
            tx.try_send(i).expect("the buffer has room");
        }
        prop_assert!(tx.close());
        prop_assert!(tx.is_closed());
        prop_assert_eq!(rx.len(), count);
        prop_assert_eq!(tx.send(99), Err(SendError(99)));
        prop_assert_eq!(tx.try_send(98), Err(TrySendError::Closed(98)));
        for i in 0..count {
            prop_assert_eq!(rx.recv(), Ok(i));
        }
        prop_assert_eq!(rx.recv(), Err(RecvError));
        prop_assert_eq!(rx.try_recv(), Err(TryRecvError::Closed));
    }
}

// ---------------------------------------------------------------------------------------------
// Rendezvous, close and disconnection.
// ---------------------------------------------------------------------------------------------

#[test]
fn rendezvous_send_waits_for_a_receiver() {
    // One P: a goroutine runs only when the others park or yield, so the order is fixed.
    let rt = runtime(1);
    watchdog(LIMIT, move || {
        rt.block_on(|| {
            let (tx, rx) = channel::<u32>(0);
            assert_eq!(tx.try_send(1), Err(TrySendError::Full(1)));
            let sent = Arc::new(AtomicUsize::new(0));
            let sender = {
                let sent = sent.clone();
                goro::spawn(move || {
                    tx.send(7).unwrap();
                    sent.store(1, Ordering::SeqCst);
                })
                .unwrap()
            };
            yield_some();
            assert_eq!(
                sent.load(Ordering::SeqCst),
                0,
                "send returned before a receive"
            );
            assert_eq!(rx.len(), 0, "a rendezvous channel buffers nothing");
            assert_eq!(rx.recv(), Ok(7));
            sender.join().unwrap();
            assert_eq!(sent.load(Ordering::SeqCst), 1);
        })
        .unwrap();
    });
}

#[test]
fn try_send_hands_to_a_waiting_receiver() {
    let rt = runtime(1);
    watchdog(LIMIT, move || {
        rt.block_on(|| {
            let (tx, rx) = channel::<u32>(0);
            let receiver = goro::spawn(move || rx.recv()).unwrap();
            yield_some();
            assert_eq!(tx.try_send(5), Ok(()), "the receiver is waiting");
            assert_eq!(receiver.join().unwrap(), Ok(5));
        })
        .unwrap();
    });
}

#[test]
fn full_buffer_refills_from_a_blocked_sender() {
    let rt = runtime(1);
    watchdog(LIMIT, move || {
        rt.block_on(|| {
            let (tx, rx) = channel::<u32>(2);
            tx.send(1).unwrap();
            tx.send(2).unwrap();
            let sender = goro::spawn(move || tx.send(3)).unwrap();
            yield_some();
            assert_eq!(rx.len(), 2);
            // Taking one value lets the blocked sender's value into the buffer, behind the
            // others.
            assert_eq!(rx.recv(), Ok(1));
            assert_eq!(sender.join().unwrap(), Ok(()));
            assert_eq!(rx.len(), 2);
            assert_eq!(rx.recv(), Ok(2));
            assert_eq!(rx.recv(), Ok(3));
            assert_eq!(rx.try_recv(), Err(TryRecvError::Closed));
        })
        .unwrap();
    });
}

#[test]
fn last_sender_drop_closes_the_channel() {
    let rt = runtime(2);
    watchdog(LIMIT, move || {
        rt.block_on(|| {
            let (tx, rx) = channel::<u32>(1);
            let second = tx.clone();
            let receiver = goro::spawn(move || (rx.recv(), rx.recv())).unwrap();
            drop(tx);
            yield_some();
            second.send(1).unwrap();
            drop(second);
            assert_eq!(receiver.join().unwrap(), (Ok(1), Err(RecvError)));
        })
        .unwrap();
    });
}

/// A value that counts its drops.
struct Counted(Arc<AtomicUsize>);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn last_receiver_drop_fails_sends_and_drops_values() {
    let drops = Arc::new(AtomicUsize::new(0));
    let (tx, rx) = channel::<Counted>(3);
    let second = rx.clone();
    tx.send(Counted(drops.clone())).unwrap();
    tx.send(Counted(drops.clone())).unwrap();
    drop(rx);
    assert!(!tx.is_closed(), "one receiver is left");
    drop(second);
    assert!(tx.is_closed(), "no receiver is left");
    assert_eq!(drops.load(Ordering::SeqCst), 2, "buffered values dropped");
    let error = tx.send(Counted(drops.clone())).unwrap_err();
    assert_eq!(
        drops.load(Ordering::SeqCst),
        2,
        "the value comes back in the error"
    );
    drop(error);
    assert_eq!(drops.load(Ordering::SeqCst), 3);
}

#[test]
fn receiver_close_fails_a_blocked_sender() {
    let rt = runtime(1);
    watchdog(LIMIT, move || {
        rt.block_on(|| {
            let (tx, rx) = channel::<String>(0);
            let sender = goro::spawn(move || tx.send("kept".to_string())).unwrap();
            yield_some();
            assert!(rx.close());
            let error = sender.join().unwrap().unwrap_err();
            assert_eq!(error.into_inner(), "kept");
            assert_eq!(rx.recv(), Err(RecvError));
        })
        .unwrap();
    });
}

#[test]
fn error_messages_name_the_failure() {
    assert_eq!(
        SendError(1).to_string(),
        "send failed: the channel is closed"
    );
    assert_eq!(
        TrySendError::Full(1).to_string(),
        "send failed: the channel is full"
    );
    assert_eq!(
        RecvError.to_string(),
        "receive failed: the channel is closed and empty"
    );
    assert_eq!(
        TryRecvError::Empty.to_string(),
        "receive failed: the channel is empty"
    );
}

#[test]
#[should_panic(expected = "goro::sync::channel: a buffer of capacity")]
fn channel_rejects_an_impossible_capacity() {
    let _ = channel::<u64>(usize::MAX / 4);
}

// ---------------------------------------------------------------------------------------------
// Threads, permits and wait reasons.
// ---------------------------------------------------------------------------------------------

#[test]
fn plain_threads_ping_pong() {
    watchdog(LIMIT, || {
        let (ping_tx, ping_rx) = channel::<u32>(0);
        let (pong_tx, pong_rx) = channel::<u32>(0);
        let echo = std::thread::spawn(move || {
            for value in &ping_rx {
                pong_tx.send(value + 1).unwrap();
            }
        });
        for i in 0..1000 {
            ping_tx.send(i).unwrap();
            assert_eq!(pong_rx.recv(), Ok(i + 1));
        }
        drop(ping_tx);
        echo.join().unwrap();
        assert_eq!(pong_rx.recv(), Err(RecvError));
    });
}

#[test]
fn goroutine_and_thread_ping_pong() {
    let rt = runtime(2);
    watchdog(LIMIT, move || {
        let (ping_tx, ping_rx) = channel::<u32>(0);
        let (pong_tx, pong_rx) = channel::<u32>(0);
        let echo = rt
            .spawn(move || {
                let mut count = 0;
                for value in ping_rx {
                    pong_tx.send(value * 2).unwrap();
                    count += 1;
                }
                count
            })
            .unwrap();
        for i in 0..1000 {
            ping_tx.send(i).unwrap();
            assert_eq!(pong_rx.recv(), Ok(i * 2));
        }
        drop(ping_tx);
        assert_eq!(echo.join().unwrap(), 1000);
    });
}

#[test]
fn blocking_keeps_the_user_park_permit() {
    let rt = runtime(2);
    watchdog(LIMIT, move || {
        rt.block_on(|| {
            let (tx, rx) = channel::<u32>(0);
            let sender = goro::spawn(move || {
                yield_some();
                tx.send(1).unwrap();
            })
            .unwrap();
            // Store a user permit, then block in recv: the wakeup from the send must come on
            // the internal permit, leaving the user's for the park below (which would
            // otherwise hang).
            goro::current().unpark();
            assert_eq!(rx.recv(), Ok(1));
            goro::park();
            sender.join().unwrap();
        })
        .unwrap();
    });
}

/// A goroutine's header address, to read its wait reason from another goroutine.
#[derive(Clone, Copy)]
struct HeaderAddress(usize);

impl HeaderAddress {
    fn current() -> HeaderAddress {
        HeaderAddress(goro::getg() as usize)
    }

    fn wait_reason(self) -> WaitReason {
        // SAFETY: the goroutine's join handle is held by the reader, which keeps its block
        // (and header) alive.
        unsafe { &*(self.0 as *const GHeader) }.wait_reason()
    }
}

#[test]
fn blocked_goroutines_report_their_wait_reason() {
    let rt = runtime(1);
    watchdog(LIMIT, move || {
        rt.block_on(|| {
            let (tx, rx) = channel::<u32>(0);
            let (address_tx, address_rx) = unbounded::<HeaderAddress>();
            let receiver = {
                let address_tx = address_tx.clone();
                let rx = rx.clone();
                goro::spawn(move || {
                    address_tx.send(HeaderAddress::current()).unwrap();
                    rx.recv()
                })
                .unwrap()
            };
            let recv_address = address_rx.recv().unwrap();
            yield_some();
            assert_eq!(recv_address.wait_reason(), WaitReason::ChanRecv);
            tx.send(3).unwrap();
            assert_eq!(receiver.join().unwrap(), Ok(3));

            let sender = {
                let tx = tx.clone();
                goro::spawn(move || {
                    address_tx.send(HeaderAddress::current()).unwrap();
                    tx.send(4)
                })
                .unwrap()
            };
            let send_address = address_rx.recv().unwrap();
            yield_some();
            assert_eq!(send_address.wait_reason(), WaitReason::ChanSend);
            assert_eq!(rx.recv(), Ok(4));
            assert_eq!(sender.join().unwrap(), Ok(()));
        })
        .unwrap();
    });
}

#[test]
fn many_goroutines_fan_in_on_two_ps() {
    let rt = runtime(2);
    let total = watchdog(LIMIT, move || {
        rt.block_on(|| {
            let (tx, rx) = channel::<u64>(4);
            for i in 0..200u64 {
                let tx = tx.clone();
                goro::spawn(move || {
                    for j in 0..50 {
                        tx.send(i * 50 + j).unwrap();
                    }
                })
                .unwrap();
            }
            drop(tx);
            rx.iter().sum::<u64>()
        })
        .unwrap()
    });
    assert_eq!(total, (0..10_000u64).sum::<u64>());
}
