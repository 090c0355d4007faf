//! `Mutex` (mutual exclusion, starvation mode and its hand-off), `RwLock` (writer preference,
//! consistency) and `WaitGroup` (waiting, reuse, misuse), from goroutines and plain threads.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

// Goroutines here wait for plain threads, which deadlock detection cannot see.
use common::{LIMIT, runtime_without_deadlock_detection as runtime, watchdog};
use goro::sync::{Mutex, RwLock, STARVATION_THRESHOLD, WaitGroup};

fn yield_some() {
    for _ in 0..5 {
        goro::yield_now();
    }
}

// ---------------------------------------------------------------------------------------------
// Mutex.
// ---------------------------------------------------------------------------------------------

#[test]
fn mutex_counter_is_exact_under_contention() {
    const GOROUTINES: usize = 50;
    const THREADS: usize = 2;
    const ROUNDS: usize = 400;
    let rt = runtime(2);
    let counter = Arc::new(Mutex::new(0usize));
    watchdog(LIMIT, {
        let counter = counter.clone();
        move || {
            // Plain threads contend with the goroutines for the same lock.
            let threads: Vec<_> = (0..THREADS)
                .map(|_| {
                    let counter = counter.clone();
                    std::thread::spawn(move || {
                        for _ in 0..ROUNDS {
                            let mut guard = counter.lock();
                            let seen = *guard;
                            std::thread::yield_now();
                            *guard = seen + 1;
                        }
                    })
                })
                .collect();
            rt.block_on(move || {
                let handles: Vec<_> = (0..GOROUTINES)
                    .map(|g| {
                        let counter = counter.clone();
                        goro::spawn(move || {
                            for round in 0..ROUNDS {
                                let mut guard = counter.lock();
                                // A read-modify-write that spans a yield: a second holder
                                // would make an increment disappear.
                                let seen = *guard;
                                if (g + round) % 8 == 0 {
                                    goro::yield_now();
                                }
                                *guard = seen + 1;
                            }
                        })
                        .unwrap()
                    })
                    .collect();
                handles.into_iter().for_each(|h| h.join().unwrap());
            })
            .unwrap();
            threads.into_iter().for_each(|t| t.join().unwrap());
        }
    });
    assert_eq!(*counter.lock(), (GOROUTINES + THREADS) * ROUNDS);
}

#[test]
fn mutex_try_lock_fails_while_held() {
    let mutex = Mutex::new(1);
    let guard = mutex.lock();
    assert!(mutex.try_lock().is_none());
    drop(guard);
    let guard = mutex.try_lock().expect("the mutex is free");
    assert_eq!(*guard, 1);
    assert_eq!(format!("{mutex:?}"), "Mutex { data: <locked>, .. }");
    drop(guard);
    assert_eq!(format!("{mutex:?}"), "Mutex { data: 1, .. }");
    assert_eq!(mutex.into_inner(), 1);
}

#[test]
fn mutex_waiter_parks_and_keeps_the_user_permit() {
    let rt = runtime(1);
    watchdog(LIMIT, move || {
        rt.block_on(|| {
            let mutex = Arc::new(Mutex::new(()));
            let guard = mutex.lock();
            let waiter = {
                let mutex = mutex.clone();
                goro::spawn(move || {
                    // A stored user permit must survive the wait for the lock.
                    goro::current().unpark();
                    drop(mutex.lock());
                    goro::park();
                })
                .unwrap()
            };
            // On one P, the waiter runs only if it parked instead of blocking the M.
            yield_some();
            assert!(!waiter.is_finished());
            drop(guard);
            waiter.join().unwrap();
        })
        .unwrap();
    });
}

#[test]
fn mutex_starvation_hands_the_lock_to_the_waiter() {
    // One P makes the interleaving fixed: a goroutine runs only when the other parks or
    // yields.
    let rt = runtime(1);
    let (order, handoffs) = watchdog(LIMIT, move || {
        rt.block_on(|| {
            let mutex = Arc::new(Mutex::new(()));
            let order = Arc::new(StdMutex::new(Vec::new()));
            let mut guard = mutex.lock();
            let waiter = {
                let (mutex, order) = (mutex.clone(), order.clone());
                goro::spawn(move || {
                    let _guard = mutex.lock();
                    order.lock().unwrap().push("waiter");
                })
                .unwrap()
            };
            // The waiter blocks on the lock; hold it past the threshold.
            goro::yield_now();
            std::thread::sleep(2 * STARVATION_THRESHOLD);
            // Unlock (waking the waiter) and barge back in before it runs, as a running
            // goroutine does in normal mode.
            drop(guard);
            guard = mutex.lock();
            assert_eq!(mutex.handoffs(), 0, "normal mode hands nothing off");
            // The waiter runs, loses, finds it waited too long and switches to starvation
            // mode: the next unlock must hand the lock to it, not to us.
            goro::yield_now();
            drop(guard);
            let handoffs = mutex.handoffs();
            drop(mutex.lock());
            order.lock().unwrap().push("barger");
            waiter.join().unwrap();
            // The mode is normal again: an uncontended lock and unlock hand nothing off.
            drop(mutex.lock());
            assert!(mutex.try_lock().is_some(), "the mutex stayed starving");
            assert_eq!(
                mutex.handoffs(),
                handoffs + 1,
                "only the waiter's unlock handed off"
            );
            let order = order.lock().unwrap().clone();
            (order, handoffs)
        })
        .unwrap()
    });
    assert_eq!(
        handoffs, 1,
        "the unlock after the waiter starved handed off"
    );
    assert_eq!(
        order,
        ["waiter", "barger"],
        "the starving waiter got the lock first"
    );
}

#[test]
fn mutex_starving_waiters_get_the_lock_in_order() {
    const WAITERS: usize = 4;
    /// The id under which the barging goroutine records its turn.
    const BARGER: usize = WAITERS;
    let rt = runtime(1);
    let (order, handoffs) = watchdog(LIMIT, move || {
        rt.block_on(|| {
            let mutex = Arc::new(Mutex::new(Vec::new()));
            let guard = mutex.lock();
            // On one P each waiter runs until it parks on the lock, so they queue in order.
            let waiters: Vec<_> = (0..WAITERS)
                .map(|id| {
                    let mutex = mutex.clone();
                    let handle = goro::spawn(move || mutex.lock().push(id)).unwrap();
                    goro::yield_now();
                    handle
                })
                .collect();
            std::thread::sleep(2 * STARVATION_THRESHOLD);
            // Unlock and barge back in before the woken waiter runs. The waiter then finds
            // that it starved, so from now on the lock goes to the waiters in their order.
            drop(guard);
            let guard = mutex.lock();
            goro::yield_now();
            drop(guard);
            // In starvation mode this lock queues behind the waiters.
            mutex.lock().push(BARGER);
            waiters.into_iter().for_each(|h| h.join().unwrap());
            let order = mutex.lock().clone();
            (order, mutex.handoffs())
        })
        .unwrap()
    });
    assert_eq!(
        order,
        [0, 1, 2, 3, BARGER],
        "the lock was not handed off in order"
    );
    // The barger's unlock and each waiter's unlock handed the lock to the next in line. The
    // last hand-off went to the barger, which was the last waiter and so ended starvation
    // mode.
    assert_eq!(handoffs, 1 + WAITERS as u64);
}

#[test]
fn thread_waits_for_a_goroutine_held_mutex() {
    let rt = runtime(2);
    watchdog(LIMIT, move || {
        let mutex = Arc::new(Mutex::new(0));
        let locked = Arc::new(AtomicBool::new(false));
        let holder = {
            let (mutex, locked) = (mutex.clone(), locked.clone());
            rt.spawn(move || {
                let mut guard = mutex.lock();
                locked.store(true, Ordering::SeqCst);
                for _ in 0..100 {
                    goro::yield_now();
                }
                *guard = 1;
            })
            .unwrap()
        };
        while !locked.load(Ordering::SeqCst) {
            std::thread::yield_now();
        }
        // The thread blocks until the goroutine's guard drops, and sees its write.
        assert_eq!(*mutex.lock(), 1);
        holder.join().unwrap();
    });
}

// ---------------------------------------------------------------------------------------------
// RwLock.
// ---------------------------------------------------------------------------------------------

#[test]
fn rwlock_waiting_writer_blocks_new_readers() {
    let rt = runtime(1);
    let order = watchdog(LIMIT, move || {
        rt.block_on(|| {
            let lock = Arc::new(RwLock::new(0));
            let order = Arc::new(StdMutex::new(Vec::new()));
            let read = lock.read();
            let writer = {
                let (lock, order) = (lock.clone(), order.clone());
                goro::spawn(move || {
                    *lock.write() += 1;
                    order.lock().unwrap().push("writer");
                })
                .unwrap()
            };
            yield_some();
            assert!(!writer.is_finished(), "the writer got in past a reader");
            // The writer waits, so new readers wait behind it.
            assert!(
                lock.try_read().is_none(),
                "a reader got in past a waiting writer"
            );
            let reader = {
                let (lock, order) = (lock.clone(), order.clone());
                goro::spawn(move || {
                    let value = *lock.read();
                    order.lock().unwrap().push("reader");
                    value
                })
                .unwrap()
            };
            yield_some();
            assert!(
                !reader.is_finished(),
                "a reader got in past a waiting writer"
            );
            drop(read);
            writer.join().unwrap();
            assert_eq!(
                reader.join().unwrap(),
                1,
                "the reader saw the writer's change"
            );
            order.lock().unwrap().clone()
        })
        .unwrap()
    });
    assert_eq!(order, ["writer", "reader"]);
}

#[test]
fn rwlock_readers_share_and_exclude_writers() {
    let lock = RwLock::new(5);
    let first = lock.read();
    let second = lock.try_read().expect("readers share the lock");
    assert_eq!(*first + *second, 10);
    assert!(lock.try_write().is_none(), "a writer got in past readers");
    drop((first, second));
    let mut write = lock.try_write().expect("the lock is free");
    *write = 6;
    assert!(lock.try_read().is_none(), "a reader got in past a writer");
    assert!(lock.try_write().is_none(), "two writers got in");
    drop(write);
    assert_eq!(*lock.read(), 6);
    assert_eq!(lock.into_inner(), 6);
}

#[test]
fn rwlock_readers_never_see_a_half_write() {
    let rt = runtime(2);
    let writes = watchdog(LIMIT, move || {
        rt.block_on(|| {
            let lock = Arc::new(RwLock::new((0u64, 0u64)));
            let writers: Vec<_> = (0..4)
                .map(|_| {
                    let lock = lock.clone();
                    goro::spawn(move || {
                        for _ in 0..200 {
                            let mut pair = lock.write();
                            pair.0 += 1;
                            // A reader that got in here would see the halves differ.
                            goro::yield_now();
                            pair.1 += 1;
                        }
                    })
                    .unwrap()
                })
                .collect();
            let readers: Vec<_> = (0..8)
                .map(|_| {
                    let lock = lock.clone();
                    goro::spawn(move || {
                        for _ in 0..200 {
                            let pair = lock.read();
                            assert_eq!(pair.0, pair.1, "a reader saw a half-done write");
                            goro::yield_now();
                        }
                    })
                    .unwrap()
                })
                .collect();
            writers.into_iter().for_each(|h| h.join().unwrap());
            readers.into_iter().for_each(|h| h.join().unwrap());
            let pair = *lock.read();
            pair.0
        })
        .unwrap()
    });
    assert_eq!(writes, 800);
}

// ---------------------------------------------------------------------------------------------
// WaitGroup.
// ---------------------------------------------------------------------------------------------

#[test]
fn waitgroup_waits_for_every_goroutine() {
    let rt = runtime(2);
    watchdog(LIMIT, move || {
        rt.block_on(|| {
            let group = Arc::new(WaitGroup::new());
            let finished = Arc::new(AtomicUsize::new(0));
            for round in 0..3 {
                group.add(20);
                for _ in 0..20 {
                    let (group, finished) = (group.clone(), finished.clone());
                    goro::spawn(move || {
                        yield_some();
                        finished.fetch_add(1, Ordering::SeqCst);
                        group.done();
                    })
                    .unwrap();
                }
                // Several waiters of one round, goroutines and a plain thread.
                let waiters: Vec<_> = (0..3)
                    .map(|_| {
                        let group = group.clone();
                        goro::spawn(move || group.wait()).unwrap()
                    })
                    .collect();
                let thread = {
                    let group = group.clone();
                    std::thread::spawn(move || group.wait())
                };
                group.wait();
                assert_eq!(finished.load(Ordering::SeqCst), 20 * (round + 1));
                assert_eq!(group.count(), 0);
                waiters.into_iter().for_each(|h| h.join().unwrap());
                goro::blocking(|| thread.join().unwrap());
            }
        })
        .unwrap();
    });
}

#[test]
fn waitgroup_wait_at_zero_returns_at_once() {
    let group = WaitGroup::new();
    group.wait();
    group.add(2);
    group.add(-2);
    group.wait();
    assert_eq!(format!("{group:?}"), "WaitGroup { counter: 0, waiters: 0 }");
}

#[test]
fn waitgroup_negative_counter_panics() {
    let group = WaitGroup::new();
    let panic = std::panic::catch_unwind(|| group.done()).unwrap_err();
    let message = panic.downcast_ref::<String>().expect("a formatted message");
    assert!(
        message.starts_with("WaitGroup::done: the counter would go negative"),
        "{message}"
    );
    assert_eq!(group.count(), 0, "the failed done left the counter alone");

    group.add(1);
    let panic = std::panic::catch_unwind(|| group.add(-2)).unwrap_err();
    let message = panic.downcast_ref::<String>().expect("a formatted message");
    assert!(
        message.starts_with("WaitGroup::add: the counter would go negative"),
        "{message}"
    );
    assert_eq!(group.count(), 1);
}

#[test]
fn waitgroup_thread_waits_for_goroutines() {
    let rt = runtime(2);
    watchdog(LIMIT, move || {
        let group = Arc::new(WaitGroup::new());
        let finished = Arc::new(AtomicUsize::new(0));
        group.add(10);
        for _ in 0..10 {
            let (group, finished) = (group.clone(), finished.clone());
            rt.spawn(move || {
                std::thread::sleep(Duration::from_millis(1));
                finished.fetch_add(1, Ordering::SeqCst);
                group.done();
            })
            .unwrap();
        }
        group.wait();
        assert_eq!(finished.load(Ordering::SeqCst), 10);
    });
}
