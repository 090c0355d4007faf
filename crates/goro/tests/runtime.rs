//! End-to-end behaviour of the runtime: spawn, join, panics, yield, park and getg.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{LIMIT, gettid, watchdog};
use goro::{GStatus, Runtime, SchedHandle};

fn runtime(procs: usize) -> Runtime {
    Runtime::builder()
        .procs(procs)
        .build()
        .expect("runtime builds")
}

#[test]
fn join_returns_the_value() {
    let rt = runtime(2);
    let value = watchdog(LIMIT, move || rt.block_on(|| 6 * 7).unwrap());
    assert_eq!(value, 42);
}

#[test]
fn nested_spawns_sum_up() {
    let rt = runtime(4);
    let total = watchdog(LIMIT, move || {
        rt.block_on(|| {
            let handles: Vec<_> = (0..1000u64)
                .map(|i| {
                    goro::spawn(move || {
                        let inner = goro::spawn(move || i * 2).unwrap();
                        inner.join().unwrap() + 1
                    })
                    .unwrap()
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).sum::<u64>()
        })
        .unwrap()
    });
    assert_eq!(total, (0..1000u64).map(|i| i * 2 + 1).sum());
}

#[test]
fn panic_becomes_join_error_and_runtime_goes_on() {
    let rt = runtime(2);
    watchdog(LIMIT, move || {
        let error = rt
            .block_on(|| -> u32 { panic!("boom in a goroutine") })
            .expect_err("the panic is returned");
        assert_eq!(error.panic_message(), Some("boom in a goroutine"));
        assert!(
            error.to_string().contains("panicked: boom in a goroutine"),
            "{error}"
        );
        // The runtime still runs new goroutines, including ones that spawn more.
        let value = rt
            .block_on(|| {
                let h = goro::spawn(|| 5).unwrap();
                h.join().unwrap() * 2
            })
            .unwrap();
        assert_eq!(value, 10);
    });
}

#[test]
fn yield_interleaves_in_fifo_order() {
    let rt = runtime(1);
    let log = watchdog(LIMIT, move || {
        rt.block_on(|| {
            let log = Arc::new(Mutex::new(Vec::new()));
            let handles: Vec<_> = (0..3)
                .map(|id| {
                    let log = log.clone();
                    goro::spawn(move || {
                        for round in 0..3 {
                            log.lock().unwrap().push((round, id));
                            goro::yield_now();
                        }
                    })
                    .unwrap()
                })
                .collect();
            for h in handles {
                h.join().unwrap();
            }
            Arc::try_unwrap(log).unwrap().into_inner().unwrap()
        })
        .unwrap()
    });
    let expected: Vec<_> = (0..3)
        .flat_map(|round| (0..3).map(move |id| (round, id)))
        .collect();
    assert_eq!(log, expected);
}

/// A g that yields goes back to its scheduler and the M picks the next g without a pass
/// through its scheduling loop. The M must still rotate between the runtime's schedulers, so
/// two gs of two schedulers that yield in a loop on one P never run three times in a row.
#[test]
fn yield_rotates_between_schedulers() {
    let second = goro::SchedHandle::new(goro::Fifo::new());
    let rt = Runtime::builder()
        .procs(1)
        .add_scheduler(second.clone())
        .build()
        .expect("runtime builds");

    let log = watchdog(LIMIT, move || {
        rt.block_on(move || {
            let log = Arc::new(Mutex::new(Vec::new()));
            let yielder = |id: u32| {
                let log = log.clone();
                move || {
                    for _ in 0..50 {
                        log.lock().unwrap().push(id);
                        goro::yield_now();
                    }
                }
            };
            let first = goro::spawn(yielder(0)).unwrap();
            let other = goro::spawn_g(goro::DefaultG::new(), &second, yielder(1)).unwrap();
            first.join().unwrap();
            other.join().unwrap();
            Arc::try_unwrap(log).unwrap().into_inner().unwrap()
        })
        .unwrap()
    });

    assert_eq!(log.iter().filter(|&&id| id == 0).count(), 50);
    assert_eq!(log.iter().filter(|&&id| id == 1).count(), 50);

    // Only the runs while both gs are alive are checked: from the first run of the later one
    // to the last run of the one that finishes first.
    let first_run = |id: u32| log.iter().position(|&logged| logged == id).unwrap();
    let last_run = |id: u32| log.iter().rposition(|&logged| logged == id).unwrap();
    let both_running = first_run(0).max(first_run(1))..=last_run(0).min(last_run(1));
    let longest_streak = log[both_running]
        .chunk_by(|a, b| a == b)
        .map(<[u32]>::len)
        .max()
        .unwrap_or(0);
    assert!(
        longest_streak <= 2,
        "a g ran {longest_streak} times in a row while the other was runnable: {log:?}"
    );
}

#[test]
fn unpark_before_park_is_kept_as_one_permit() {
    let rt = runtime(1);
    let parks = watchdog(LIMIT, move || {
        rt.block_on(|| {
            let me = goro::current();
            // Two unparks store one permit: the first park returns at once...
            me.unpark();
            me.unpark();
            goro::park();
            // ...and the second would block, so another goroutine must wake it.
            let waker = {
                let me = me.clone();
                goro::spawn(move || me.unpark()).unwrap()
            };
            goro::park();
            waker.join().unwrap();
            2
        })
        .unwrap()
    });
    assert_eq!(parks, 2);
}

#[test]
fn unpark_from_another_goroutine_wakes_a_parked_one() {
    let rt = runtime(2);
    let woken = watchdog(LIMIT, move || {
        rt.block_on(|| {
            let (tx, rx) = std::sync::mpsc::channel();
            let ready = Arc::new(AtomicUsize::new(0));
            let sleeper = {
                let ready = ready.clone();
                goro::spawn(move || {
                    tx.send(goro::current()).unwrap();
                    while ready.load(Ordering::Acquire) == 0 {
                        goro::park();
                    }
                    true
                })
                .unwrap()
            };
            let handle = goro::blocking(|| rx.recv().unwrap());
            for _ in 0..100 {
                goro::yield_now();
            }
            ready.store(1, Ordering::Release);
            handle.unpark();
            sleeper.join().unwrap()
        })
        .unwrap()
    });
    assert!(woken);
}

#[test]
fn getg_follows_goroutines_across_ms() {
    let rt = runtime(4);
    let _moves = watchdog(LIMIT, move || {
        rt.block_on(|| {
            let handles: Vec<_> = (0..200)
                .map(|_| {
                    goro::spawn(|| {
                        let me = goro::getg();
                        // SAFETY: the running g's header is alive while it runs.
                        let goid = unsafe { &*me }.goid();
                        let mut threads = std::collections::HashSet::new();
                        for _ in 0..50 {
                            let g = goro::getg();
                            assert_eq!(g, me, "getg changed identity");
                            // SAFETY: the running g's header is alive.
                            let header = unsafe { &*g };
                            assert_eq!(header.goid(), goid);
                            assert_eq!(header.status(), GStatus::Running);
                            // The M recorded in the header is the one running this thread.
                            threads.insert(gettid());
                            // Burn a little time so that other Ms pick up the yielded g.
                            std::hint::black_box((0..200).sum::<u64>());
                            goro::yield_now();
                        }
                        threads.len()
                    })
                    .unwrap()
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap())
                .filter(|&n| n > 1)
                .count()
        })
        .unwrap()
    });
    // Whether the goroutines above changed threads depends on the machine's load, so a probe
    // that changes threads for certain makes the checks cover a resumed goroutine too.
    common::check_forced_migration();
}

#[test]
fn build_rejects_invalid_configuration() {
    let error = Runtime::builder().procs(0).build().unwrap_err();
    assert!(error.to_string().contains("invalid procs 0"), "{error}");
    let error = Runtime::builder()
        .procs(2)
        .max_threads(1)
        .build()
        .unwrap_err();
    assert!(
        error.to_string().contains("invalid max_threads 1"),
        "{error}"
    );
    let error = Runtime::builder().stack_size(10).build().unwrap_err();
    assert!(error.to_string().contains("10"), "{error}");
    let error = Runtime::builder()
        .monitor_period(Duration::from_millis(5), Duration::from_millis(1))
        .build()
        .unwrap_err();
    assert!(
        error
            .to_string()
            .contains("the minimum 5ms is above the maximum 1ms"),
        "{error}"
    );
}

/// A scheduler serves one runtime for its whole life: a second runtime given the same
/// scheduler, even after the first is gone, gets an error instead of sharing its queues.
#[test]
fn scheduler_serves_one_runtime() {
    let shared = goro::SchedHandle::new(goro::Fifo::new());
    let first = Runtime::builder()
        .procs(1)
        .add_scheduler(shared.clone())
        .build()
        .expect("the first runtime builds");
    let error = Runtime::builder()
        .procs(1)
        .scheduler_handle(shared.clone())
        .build()
        .unwrap_err();
    assert!(
        error
            .to_string()
            .contains("scheduler \"fifo\" already serves another runtime"),
        "{error}"
    );
    drop(first);
    let error = Runtime::builder()
        .procs(1)
        .add_scheduler(shared)
        .build()
        .unwrap_err();
    assert!(
        matches!(error, goro::BuildError::SchedulerInUse { .. }),
        "{error}"
    );
}

#[test]
fn failed_build_releases_its_claims() {
    let in_use = SchedHandle::new(goro_sched::Fifo::new());
    let _first = Runtime::builder()
        .procs(1)
        .scheduler_handle(in_use.clone())
        .build()
        .expect("the first runtime builds");
    let fresh = SchedHandle::new(goro_sched::WorkStealing::new());
    let error = Runtime::builder()
        .procs(1)
        .scheduler_handle(fresh.clone())
        .add_scheduler(in_use)
        .build()
        .unwrap_err();
    assert!(
        matches!(error, goro::BuildError::SchedulerInUse { name: "fifo" }),
        "{error}"
    );
    // The failed build claimed `fresh` before it found `in_use` taken, and gave it back.
    let second = Runtime::builder()
        .procs(1)
        .scheduler_handle(fresh)
        .build()
        .expect("a scheduler of a failed build serves the next runtime");
    assert_eq!(watchdog(LIMIT, move || second.block_on(|| 7)).unwrap(), 7);
}

#[test]
#[should_panic(expected = "goro::spawn called from a thread that runs no goroutine")]
fn spawn_outside_a_goroutine_panics() {
    let _ = goro::spawn(|| ());
}

#[test]
fn stats_count_goroutines_and_switches() {
    let rt = runtime(2);
    let rt = watchdog(LIMIT, move || {
        rt.block_on(|| {
            let hs: Vec<_> = (0..10)
                .map(|_| goro::spawn(goro::yield_now).unwrap())
                .collect();
            hs.into_iter().for_each(|h| h.join().unwrap());
        })
        .unwrap();
        rt
    });
    let stats = rt.stats();
    assert!(stats.goroutines_run >= 11, "{stats:?}");
    // Each goroutine is switched to at least once. A yield switches only when the scheduler
    // has another goroutine for the P, so the ten yields add between 0 and 10.
    assert!(stats.context_switches >= 11, "{stats:?}");
    assert!(stats.peak_live_goroutines >= 2, "{stats:?}");
    assert!(stats.ms_started >= 1, "{stats:?}");
}

/// With as many Ms allowed as Ps, the only M can go idle while a `block_on` from outside
/// queues its goroutine: the waker takes the idle P, finds no idle M yet and cannot start
/// one. The goroutine must still run, on the M that was going idle.
#[test]
fn thread_limit_does_not_strand_work() {
    watchdog(LIMIT, || {
        for _ in 0..2000 {
            let rt = Runtime::builder().procs(1).max_threads(1).build().unwrap();
            assert_eq!(rt.block_on(|| 1).unwrap(), 1);
        }
    });
}

/// The same limit with syscalls: each `blocking_known` call hands the only P off, and no
/// second M can take it, so the goroutines run one after another on the one M.
#[test]
fn thread_limit_with_syscalls_finishes() {
    watchdog(LIMIT, || {
        for _ in 0..5 {
            let rt = Runtime::builder().procs(1).max_threads(1).build().unwrap();
            let sum = rt
                .block_on(|| {
                    let handles: Vec<_> = (0..3u64)
                        .map(|i| {
                            goro::spawn(move || {
                                goro::blocking_known(|| {
                                    std::thread::sleep(Duration::from_millis(20))
                                });
                                i
                            })
                            .unwrap()
                        })
                        .collect();
                    handles.into_iter().map(|h| h.join().unwrap()).sum::<u64>()
                })
                .unwrap();
            assert_eq!(sum, 3);
        }
    });
}

#[test]
fn join_across_runtimes_is_no_deadlock() {
    let target_rt = runtime(1);
    let joiner_rt = runtime(1);
    let result = watchdog(LIMIT, move || {
        let sleeper = target_rt
            .spawn(|| {
                goro::sleep(Duration::from_millis(100));
                7u32
            })
            .unwrap();
        // The joiner is the only goroutine of its runtime, and the wakeup comes from the
        // other runtime, so its own runtime must not call the wait a deadlock.
        let result = joiner_rt.block_on(move || sleeper.join());
        drop(joiner_rt);
        drop(target_rt);
        result
    });
    assert_eq!(result.unwrap().unwrap(), 7);
}

#[test]
fn join_across_runtimes_sees_their_deadlock() {
    let target_rt = runtime(1);
    let joiner_rt = runtime(1);
    let result = watchdog(LIMIT, move || {
        // The goroutine owns the only sender of the channel that it receives from, so its
        // runtime reports a deadlock.
        let (tx, rx) = goro::sync::channel::<u32>(0);
        let stuck = target_rt
            .spawn(move || {
                let _sender = tx;
                rx.recv().unwrap()
            })
            .unwrap();
        let result = joiner_rt.block_on(move || stuck.join());
        drop(joiner_rt);
        drop(target_rt);
        result
    });
    assert!(
        matches!(result, Ok(Err(goro::JoinError::Deadlock { .. }))),
        "{result:?}"
    );
}

#[test]
fn goroutine_joining_itself_panics() {
    let rt = runtime(2);
    let (goid, message) = watchdog(LIMIT, move || {
        let (handle_tx, handle_rx) = goro::sync::channel::<goro::JoinHandle<()>>(1);
        let (message_tx, message_rx) = goro::sync::channel::<String>(1);
        let handle = rt
            .spawn(move || {
                let own = handle_rx.recv().unwrap();
                let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| own.join()));
                let message = match caught {
                    Ok(result) => format!("join returned {result:?}"),
                    Err(payload) => *payload.downcast::<String>().unwrap(),
                };
                message_tx.send(message).unwrap();
            })
            .unwrap();
        let goid = handle.goid();
        handle_tx.send(handle).unwrap();
        let message = message_rx.recv().unwrap();
        drop(rt);
        (goid, message)
    });
    assert!(
        message.contains(&format!("goroutine {goid} joins itself")),
        "{message}"
    );
}

/// A goroutine that calls `block_on` of another runtime joins that runtime's goroutine, so its
/// own runtime must not report a deadlock while the other runtime's goroutine sleeps.
#[test]
fn block_on_of_another_runtime_waits() {
    let outer = runtime(1);
    let inner = Arc::new(runtime(1));
    let result = watchdog(LIMIT, move || {
        outer.block_on(move || {
            inner.block_on(|| {
                goro::sleep(Duration::from_millis(100));
                7
            })
        })
    });
    assert_eq!(result.unwrap().unwrap(), 7);
}
