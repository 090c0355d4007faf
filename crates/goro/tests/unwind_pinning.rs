//! Goroutines that park or yield while they unwind stay on the OS thread where the unwind
//! began, because std counts panics per thread: the goroutines that run elsewhere, or on that
//! thread afterwards, must not see `std::thread::panicking()`.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{LIMIT, build_with_scheduler, gettid, watchdog};
use goro::Runtime;
use goro::sync::{Receiver, channel};

/// What the destructor of a panicking goroutine saw.
#[derive(Debug, Default, Clone, Copy)]
struct Seen {
    thread_before: i64,
    thread_after: i64,
    panicking_after: bool,
}

/// Waits in its destructor: receives one message, then yields `yields` times.
struct WaitInDrop {
    wake: Receiver<()>,
    yields: usize,
    seen: Arc<Mutex<Option<Seen>>>,
}

impl Drop for WaitInDrop {
    fn drop(&mut self) {
        let thread_before = gettid();
        self.wake
            .recv()
            .expect("the waker keeps its sender until it has sent");
        for _ in 0..self.yields {
            goro::yield_now();
        }
        *self.seen.lock().unwrap() = Some(Seen {
            thread_before,
            thread_after: gettid(),
            panicking_after: std::thread::panicking(),
        });
    }
}

/// Spawns `bystanders` goroutines that yield until the case ends and report whether they ever
/// saw `thread::panicking()`, a goroutine that panics and then waits in `WaitInDrop`, and a
/// goroutine that wakes it after some yields. Returns what the destructor saw, and the panic
/// message that join reported.
fn panic_then_wait(rt: &Runtime, bystanders: usize, yields: usize) -> (Seen, String) {
    let (seen, message, bystander_saw) = rt
        .block_on(move || {
            let stop = Arc::new(AtomicBool::new(false));
            let spinners = spawn_bystanders(bystanders, &stop);
            let (wake, wait) = channel(0);
            let seen = Arc::new(Mutex::new(None));
            let panicker = {
                let seen = seen.clone();
                goro::spawn(move || {
                    let _waits = WaitInDrop {
                        wake: wait,
                        yields,
                        seen,
                    };
                    panic!("panicked before the wait");
                })
                .unwrap()
            };
            let waker = goro::spawn(move || {
                for _ in 0..20 {
                    goro::yield_now();
                }
                wake.send(()).unwrap();
            })
            .unwrap();
            let error = panicker.join().unwrap_err();
            waker.join().unwrap();
            // Release: see the spinners' Acquire.
            stop.store(true, Ordering::Release);
            let bystander_saw: Vec<bool> =
                spinners.into_iter().map(|s| s.join().unwrap()).collect();
            let seen = seen.lock().unwrap().expect("the destructor ran to its end");
            let message = error.panic_message().unwrap_or_default().to_owned();
            (seen, message, bystander_saw)
        })
        .unwrap();
    assert!(
        bystander_saw.iter().all(|&saw| !saw),
        "a bystander goroutine saw thread::panicking(): {bystander_saw:?}"
    );
    // Goroutines started afterwards, on any M, are not panicking either.
    for _ in 0..8 {
        assert!(!rt.block_on(std::thread::panicking).unwrap());
    }
    (seen, message)
}

/// Spawns `count` goroutines that yield until `stop` is set, and return whether they ever
/// saw `thread::panicking()`.
fn spawn_bystanders(count: usize, stop: &Arc<AtomicBool>) -> Vec<goro::JoinHandle<bool>> {
    (0..count)
        .map(|_| {
            let stop = stop.clone();
            goro::spawn(move || {
                let mut saw = false;
                // Acquire: only the flag matters.
                while !stop.load(Ordering::Acquire) {
                    saw |= std::thread::panicking();
                    goro::yield_now();
                }
                saw
            })
            .unwrap()
        })
        .collect()
}

fn runtime(procs: usize, scheduler: &str) -> Runtime {
    build_with_scheduler(Runtime::builder().procs(procs), scheduler)
}

#[test]
fn park_and_yield_keep_thread() {
    watchdog(LIMIT, || {
        for scheduler in ["fifo", "steal"] {
            for procs in [1, 2] {
                let rt = runtime(procs, scheduler);
                for (bystanders, yields) in [(0, 0), (1, 0), (2, 10), (3, 50)] {
                    let (seen, message) = panic_then_wait(&rt, bystanders, yields);
                    let case = format!(
                        "{scheduler}, procs {procs}, {bystanders} bystanders, {yields} yields"
                    );
                    assert_eq!(
                        seen.thread_before, seen.thread_after,
                        "{case}: the unwinding goroutine changed thread"
                    );
                    assert!(
                        seen.panicking_after,
                        "{case}: the destructor resumed on a thread that is not panicking"
                    );
                    assert_eq!(message, "panicked before the wait", "{case}");
                }
            }
        }
    });
}

/// With the thread limit reached, no other M can take the P of the unwinding goroutine's M,
/// so the goroutine is not pinned and the waker still runs: no hang.
#[test]
fn unwind_at_thread_limit_finishes() {
    watchdog(LIMIT, || {
        for scheduler in ["fifo", "steal"] {
            let rt = build_with_scheduler(Runtime::builder().procs(1).max_threads(1), scheduler);
            let seen = Arc::new(Mutex::new(None));
            let outcome = rt
                .block_on({
                    let seen = seen.clone();
                    move || {
                        let (wake, wait) = channel(0);
                        let panicker = goro::spawn(move || {
                            let _waits = WaitInDrop {
                                wake: wait,
                                yields: 5,
                                seen,
                            };
                            panic!("panicked at the limit");
                        })
                        .unwrap();
                        goro::spawn(move || wake.send(()).unwrap()).unwrap();
                        panicker.join().unwrap_err().to_string()
                    }
                })
                .unwrap();
            assert!(outcome.contains("panicked at the limit"), "{outcome}");
            assert!(seen.lock().unwrap().is_some(), "{scheduler}");
        }
    });
}

/// A goroutine that parks for good in a destructor during its unwind keeps its M waiting.
/// Dropping the runtime still stops that M, and does not wait for it for ever.
#[test]
fn drop_stops_pinned_m() {
    watchdog(LIMIT, || {
        for procs in [1, 2] {
            let rt = Runtime::builder()
                .procs(procs)
                .deadlock_detection(false)
                .build()
                .unwrap();
            let (wake, wait) = channel::<()>(0);
            let seen = Arc::new(Mutex::new(None));
            let parked = Arc::new(AtomicBool::new(false));
            let handle = rt
                .spawn({
                    let (seen, parked) = (seen.clone(), parked.clone());
                    move || {
                        struct Flag(Arc<AtomicBool>);
                        impl Drop for Flag {
                            fn drop(&mut self) {
                                // Release: read by the test thread before the drop.
                                self.0.store(true, Ordering::Release);
                            }
                        }
                        // Dropped after `_flag`: the flag is set just before the wait.
                        let _waits = WaitInDrop {
                            wake: wait,
                            yields: 0,
                            seen,
                        };
                        let _flag = Flag(parked);
                        panic!("panicked before waiting for good");
                    }
                })
                .unwrap();
            // Acquire: pairs with the flag's Release.
            while !parked.load(Ordering::Acquire) {
                std::thread::sleep(Duration::from_millis(1));
            }
            std::thread::sleep(Duration::from_millis(20));
            drop(rt);
            drop(wake);
            assert!(
                seen.lock().unwrap().is_none(),
                "procs {procs}: the wait ended"
            );
            drop(handle);
        }
    });
}

/// Several goroutines unwind at once, each parking and yielding in its destructor, next to
/// goroutines that keep yielding. Every unwind ends on its own thread, and
/// `thread::panicking()` returns false in every other goroutine.
#[test]
fn concurrent_unwinds_keep_threads() {
    const PANICKERS: usize = 8;
    watchdog(LIMIT, || {
        for scheduler in ["fifo", "steal"] {
            let rt = runtime(2, scheduler);
            for round in 0..10 {
                let (seen, bystander_saw) = rt
                    .block_on(move || {
                        let stop = Arc::new(AtomicBool::new(false));
                        let spinners = spawn_bystanders(3, &stop);
                        let mut wakers = Vec::new();
                        let mut panickers = Vec::new();
                        for i in 0..PANICKERS {
                            let (wake, wait) = channel(0);
                            let seen = Arc::new(Mutex::new(None));
                            let yields = (i + round) % 4 * 5;
                            panickers.push((
                                seen.clone(),
                                goro::spawn(move || {
                                    let _waits = WaitInDrop {
                                        wake: wait,
                                        yields,
                                        seen,
                                    };
                                    panic!("unwind {i}");
                                })
                                .unwrap(),
                            ));
                            wakers.push(
                                goro::spawn(move || {
                                    for _ in 0..i {
                                        goro::yield_now();
                                    }
                                    wake.send(()).unwrap();
                                })
                                .unwrap(),
                            );
                        }
                        let seen: Vec<Seen> = panickers
                            .into_iter()
                            .enumerate()
                            .map(|(i, (seen, handle))| {
                                let error = handle.join().unwrap_err();
                                assert_eq!(error.panic_message(), Some(&*format!("unwind {i}")));
                                let seen = *seen.lock().unwrap();
                                seen.expect("the destructor ran to its end")
                            })
                            .collect();
                        wakers.into_iter().for_each(|w| w.join().unwrap());
                        // Release: see the spinners' Acquire.
                        stop.store(true, Ordering::Release);
                        let saw: Vec<bool> =
                            spinners.into_iter().map(|s| s.join().unwrap()).collect();
                        (seen, saw)
                    })
                    .unwrap();
                let case = format!("{scheduler}, round {round}");
                assert!(
                    bystander_saw.iter().all(|&saw| !saw),
                    "{case}: a bystander saw thread::panicking(): {bystander_saw:?}"
                );
                for seen in seen {
                    assert_eq!(seen.thread_before, seen.thread_after, "{case}: {seen:?}");
                    assert!(seen.panicking_after, "{case}: {seen:?}");
                }
            }
        }
    });
}
