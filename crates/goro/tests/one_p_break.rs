//! Attacks on the runtime's side of `Scheduler::start`'s terms: every hook that takes a P runs
//! on the thread that holds the P. With one P the `Fifo` keeps the holder's queue without a
//! lock, and `WorkStealing` takes no claim on a P in release builds, so a hook called for a P
//! from another thread would corrupt their queues.
//!
//! The tests drive the paths that ready gs or move the P between threads: timers fired by the
//! monitor thread, wakeups from plain threads, from inside blocking calls and from another
//! runtime's goroutines, spawns from plain threads and from another runtime, blocking calls
//! whose P is retaken, unwinding goroutines pinned to their M at a thread limit, a custom
//! scheduler that spawns from its hooks, and drops of a runtime whose goroutines are parked,
//! yielding, sleeping or blocked. Debug builds panic when two threads use one P's queue at
//! once. The tests also check that no more goroutines run at once than the runtime has Ps,
//! that every goroutine finishes, and that with one P the gs run in the order they became
//! ready.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use common::{LIMIT, watchdog};
use goro::{Runtime, SchedHandle, Scheduler};
use goro_sched::{GQueue, GRef, PId, ReadyCause};

/// Counts the goroutines of one runtime that run their bodies at once. A goroutine counts
/// itself from its start or resumption until right before it may switch away, so the count
/// exceeds the number of Ps only when two Ms run goroutines on one P.
struct Occupancy {
    procs: usize,
    running: AtomicUsize,
    peak: AtomicUsize,
}

impl Occupancy {
    fn new(procs: usize) -> Arc<Occupancy> {
        Arc::new(Occupancy {
            procs,
            running: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
        })
    }

    fn enter(&self) {
        // SeqCst: the count is a single total order of entries and exits.
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(now, Ordering::SeqCst);
    }

    fn leave(&self) {
        self.running.fetch_sub(1, Ordering::SeqCst);
    }

    /// Counts the calling goroutine until the returned guard drops, also when it unwinds.
    fn count(self: &Arc<Occupancy>) -> Counted {
        self.enter();
        Counted(Arc::clone(self))
    }

    /// Runs `call`, which may switch the goroutine away, without counting the goroutine. The
    /// goroutine counts again when `call` returns or unwinds, since it runs again then.
    fn switch<R>(&self, call: impl FnOnce() -> R) -> R {
        self.leave();
        let _enter_again = EnterOnDrop(self);
        call()
    }

    fn assert_within_procs(&self) {
        let peak = self.peak.load(Ordering::SeqCst);
        assert!(
            peak <= self.procs,
            "{peak} goroutines ran at once on {} Ps: two Ms ran one P",
            self.procs
        );
        assert_eq!(
            self.running.load(Ordering::SeqCst),
            0,
            "a goroutine was still counted as running after every goroutine finished"
        );
    }
}

/// The count of one goroutine in an `Occupancy`, ended when dropped.
struct Counted(Arc<Occupancy>);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.leave();
    }
}

/// Counts the goroutine in an `Occupancy` again when dropped.
struct EnterOnDrop<'a>(&'a Occupancy);

impl Drop for EnterOnDrop<'_> {
    fn drop(&mut self) {
        self.0.enter();
    }
}

/// Receives `count` goroutine handles without blocking the P that their senders need.
fn receive_handles(
    handles: &mpsc::Receiver<goro::Goroutine>,
    count: usize,
    occupancy: &Occupancy,
) -> Vec<goro::Goroutine> {
    let mut received = Vec::with_capacity(count);
    while received.len() < count {
        match handles.try_recv() {
            Ok(handle) => received.push(handle),
            Err(mpsc::TryRecvError::Empty) => occupancy.switch(goro::yield_now),
            Err(mpsc::TryRecvError::Disconnected) => panic!("a goroutine ended before sending"),
        }
    }
    received
}

/// Returns a builder for a runtime whose monitor retakes the P of a blocking call after 5 us
/// and scans often, so that Ps move between Ms all the time.
fn eager_retake_builder(procs: usize) -> goro::Builder {
    Runtime::builder()
        .procs(procs)
        .syscall_grace(Duration::from_micros(5))
        .monitor_period(Duration::from_micros(10), Duration::from_millis(1))
        // Goroutines wait for plain threads and for another runtime.
        .deadlock_detection(false)
}

fn build(procs: usize, scheduler: &str) -> Runtime {
    let builder = eager_retake_builder(procs);
    match scheduler {
        "fifo" => builder.scheduler(goro::Fifo::new()),
        _ => builder.scheduler(goro_sched::WorkStealing::new()),
    }
    .build()
    .expect("runtime builds")
}

/// Goroutines that park and are woken from everywhere at once.
const PARKERS: usize = 6;
/// Parks per parker.
const PARKS: usize = 400;
/// Goroutines that sleep on timers, and sleeps per sleeper.
const SLEEPERS: usize = 4;
const SLEEPS: usize = 100;
/// Goroutines in blocking calls that outlast the grace period, and calls per blocker.
const BLOCKERS: usize = 3;
const BLOCKING_CALLS: usize = 60;
/// Goroutines that yield in a loop and spawn now and then.
const YIELDERS: usize = 2;

/// What `mixed_wakeups` counted.
#[derive(Debug, PartialEq, Eq)]
struct Counts {
    parks: usize,
    sleeps: usize,
    blocking_calls: usize,
    children: usize,
    outside_spawns: usize,
    foreign_spawns: usize,
}

/// Runs parkers, sleepers, blockers and yielders on `rt` while plain threads, goroutines of
/// `rt` (some inside blocking calls) and goroutines of `other` wake the parkers and spawn
/// into `rt`. Returns what ran.
fn mixed_wakeups(rt: Arc<Runtime>, other: Arc<Runtime>) -> (Counts, Arc<Occupancy>) {
    let occupancy = Occupancy::new(rt.procs());
    let other_occupancy = Occupancy::new(other.procs());
    let parks = Arc::new(AtomicUsize::new(0));
    let sleeps = Arc::new(AtomicUsize::new(0));
    let blocking_calls = Arc::new(AtomicUsize::new(0));
    let children = Arc::new(AtomicUsize::new(0));
    let outside_spawns = Arc::new(AtomicUsize::new(0));
    let foreign_spawns = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicBool::new(false));

    let body = {
        let (occupancy, parks, sleeps) = (occupancy.clone(), parks.clone(), sleeps.clone());
        let (blocking_calls, children) = (blocking_calls.clone(), children.clone());
        let (outside_spawns, foreign_spawns) = (outside_spawns.clone(), foreign_spawns.clone());
        let (rt, other, other_occupancy) = (rt.clone(), other.clone(), other_occupancy.clone());
        let done = done.clone();
        move || {
            let _counted = occupancy.count();
            let spawn = |body: Box<dyn FnOnce() + Send>| {
                occupancy
                    .switch(|| goro::spawn(body))
                    .expect("spawn succeeds")
            };

            let (handles_tx, handles_rx) = mpsc::channel();
            let parkers: Vec<_> = (0..PARKERS)
                .map(|_| {
                    let (occupancy, parks, handles_tx) =
                        (occupancy.clone(), parks.clone(), handles_tx.clone());
                    spawn(Box::new(move || {
                        let _counted = occupancy.count();
                        handles_tx.send(goro::current()).unwrap();
                        for _ in 0..PARKS {
                            occupancy.switch(goro::park);
                            parks.fetch_add(1, Ordering::Relaxed);
                        }
                    }))
                })
                .collect();
            let handles = Arc::new(receive_handles(&handles_rx, PARKERS, &occupancy));

            // Wakers: a plain thread, a goroutine of `other`, a goroutine of this runtime,
            // and one of this runtime that wakes from inside blocking calls, without its P.
            let thread_waker = {
                let (handles, done) = (handles.clone(), done.clone());
                std::thread::spawn(move || {
                    while !done.load(Ordering::Acquire) {
                        handles.iter().for_each(goro::Goroutine::unpark);
                        std::thread::yield_now();
                    }
                })
            };
            let foreign_waker = {
                let (handles, done) = (handles.clone(), done.clone());
                let other_occupancy = other_occupancy.clone();
                other
                    .spawn(move || {
                        let _counted = other_occupancy.count();
                        while !done.load(Ordering::Acquire) {
                            handles.iter().for_each(goro::Goroutine::unpark);
                            other_occupancy.switch(|| goro::sleep(Duration::from_micros(20)));
                        }
                    })
                    .expect("spawn on the other runtime succeeds")
            };
            let own_waker = {
                let (handles, done, occupancy) = (handles.clone(), done.clone(), occupancy.clone());
                spawn(Box::new(move || {
                    let _counted = occupancy.count();
                    while !done.load(Ordering::Acquire) {
                        handles.iter().for_each(goro::Goroutine::unpark);
                        occupancy.switch(goro::yield_now);
                    }
                }))
            };
            let syscall_waker = {
                let (handles, done, occupancy) = (handles.clone(), done.clone(), occupancy.clone());
                spawn(Box::new(move || {
                    let _counted = occupancy.count();
                    while !done.load(Ordering::Acquire) {
                        occupancy.switch(|| {
                            goro::blocking(|| {
                                handles.iter().for_each(goro::Goroutine::unpark);
                                std::thread::sleep(Duration::from_micros(30));
                                handles.iter().for_each(goro::Goroutine::unpark);
                            })
                        });
                    }
                }))
            };

            let sleepers: Vec<_> = (0..SLEEPERS)
                .map(|index| {
                    let (occupancy, sleeps) = (occupancy.clone(), sleeps.clone());
                    spawn(Box::new(move || {
                        let _counted = occupancy.count();
                        for round in 0..SLEEPS {
                            let micros = ((index * 7 + round * 13) % 50 + 1) as u64;
                            occupancy.switch(|| goro::sleep(Duration::from_micros(micros)));
                            sleeps.fetch_add(1, Ordering::Relaxed);
                        }
                    }))
                })
                .collect();
            let blockers: Vec<_> = (0..BLOCKERS)
                .map(|_| {
                    let (occupancy, blocking_calls) = (occupancy.clone(), blocking_calls.clone());
                    spawn(Box::new(move || {
                        let _counted = occupancy.count();
                        for round in 0..BLOCKING_CALLS {
                            if round % 2 == 0 {
                                occupancy.switch(|| {
                                    goro::blocking(|| {
                                        std::thread::sleep(Duration::from_micros(100))
                                    })
                                });
                            } else {
                                occupancy.switch(|| {
                                    goro::blocking_known(|| {
                                        std::thread::sleep(Duration::from_micros(20))
                                    })
                                });
                            }
                            blocking_calls.fetch_add(1, Ordering::Relaxed);
                        }
                    }))
                })
                .collect();
            let yielders: Vec<_> = (0..YIELDERS)
                .map(|_| {
                    let (occupancy, children, done) =
                        (occupancy.clone(), children.clone(), done.clone());
                    let spawner = occupancy.clone();
                    let body = move || {
                        let _counted = occupancy.count();
                        let mut spawned = Vec::new();
                        let mut round = 0usize;
                        while !done.load(Ordering::Acquire) {
                            round += 1;
                            if round.is_multiple_of(64) {
                                let (occupancy, children) = (occupancy.clone(), children.clone());
                                let child = occupancy.clone().switch(|| {
                                    goro::spawn(move || {
                                        let _counted = occupancy.count();
                                        children.fetch_add(1, Ordering::Relaxed);
                                    })
                                });
                                spawned.push(child.expect("spawn succeeds"));
                            }
                            occupancy.switch(goro::yield_now);
                        }
                        let count = spawned.len();
                        for child in spawned {
                            occupancy.switch(|| child.join()).expect("child finishes");
                        }
                        count
                    };
                    spawner
                        .switch(|| goro::spawn(body))
                        .expect("spawn succeeds")
                })
                .collect();

            // Spawns into this runtime from a plain thread and from a goroutine of `other`,
            // each joined by its spawner.
            let outside_spawner = {
                let (rt, occupancy, done) = (rt.clone(), occupancy.clone(), done.clone());
                let outside_spawns = outside_spawns.clone();
                std::thread::spawn(move || {
                    while !done.load(Ordering::Acquire) {
                        let occupancy = occupancy.clone();
                        rt.spawn(move || {
                            let _counted = occupancy.count();
                        })
                        .expect("spawn from a thread succeeds")
                        .join()
                        .expect("a goroutine spawned from a thread finishes");
                        outside_spawns.fetch_add(1, Ordering::Relaxed);
                    }
                })
            };
            let foreign_spawner = {
                let (rt, occupancy, done) = (rt.clone(), occupancy.clone(), done.clone());
                let (foreign_spawns, other_occupancy) =
                    (foreign_spawns.clone(), other_occupancy.clone());
                other
                    .spawn(move || {
                        let _counted = other_occupancy.count();
                        while !done.load(Ordering::Acquire) {
                            let occupancy = occupancy.clone();
                            let child = rt
                                .spawn(move || {
                                    let _counted = occupancy.count();
                                })
                                .expect("spawn from another runtime succeeds");
                            other_occupancy
                                .switch(|| child.join())
                                .expect("a goroutine spawned from another runtime finishes");
                            foreign_spawns.fetch_add(1, Ordering::Relaxed);
                        }
                        drop(rt);
                    })
                    .expect("spawn on the other runtime succeeds")
            };

            for parker in parkers {
                occupancy.switch(|| parker.join()).expect("parker finishes");
            }
            for sleeper in sleepers {
                occupancy
                    .switch(|| sleeper.join())
                    .expect("sleeper finishes");
            }
            for blocker in blockers {
                occupancy
                    .switch(|| blocker.join())
                    .expect("blocker finishes");
            }
            done.store(true, Ordering::Release);
            for waker in [own_waker, syscall_waker] {
                occupancy.switch(|| waker.join()).expect("waker finishes");
            }
            let children_spawned: usize = yielders
                .into_iter()
                .map(|yielder| {
                    occupancy
                        .switch(|| yielder.join())
                        .expect("yielder finishes")
                })
                .sum();
            occupancy.switch(|| {
                goro::blocking(|| {
                    thread_waker.join().unwrap();
                    outside_spawner.join().unwrap();
                })
            });
            occupancy
                .switch(|| foreign_waker.join())
                .expect("waker of the other runtime finishes");
            occupancy
                .switch(|| foreign_spawner.join())
                .expect("spawner of the other runtime finishes");
            children_spawned
        }
    };

    let children_spawned = rt.block_on(body).expect("the test body finishes");
    other_occupancy.assert_within_procs();
    let counts = Counts {
        parks: parks.load(Ordering::Relaxed),
        sleeps: sleeps.load(Ordering::Relaxed),
        blocking_calls: blocking_calls.load(Ordering::Relaxed),
        children: children.load(Ordering::Relaxed),
        outside_spawns: outside_spawns.load(Ordering::Relaxed),
        foreign_spawns: foreign_spawns.load(Ordering::Relaxed),
    };
    assert_eq!(
        counts.children, children_spawned,
        "a spawned child never ran"
    );
    (counts, occupancy)
}

fn check_mixed_wakeups(procs: usize, scheduler: &'static str) {
    let rt = Arc::new(build(procs, scheduler));
    let other = Arc::new(build(1, "fifo"));
    let (counts, occupancy) = watchdog(LIMIT, move || {
        let result = mixed_wakeups(rt.clone(), other.clone());
        // The runtimes drop here, on a thread that runs no goroutine.
        drop((rt, other));
        result
    });
    occupancy.assert_within_procs();
    assert_eq!(counts.parks, PARKERS * PARKS);
    assert_eq!(counts.sleeps, SLEEPERS * SLEEPS);
    assert_eq!(counts.blocking_calls, BLOCKERS * BLOCKING_CALLS);
}

#[test]
fn mixed_wakeups_on_one_p_fifo() {
    check_mixed_wakeups(1, "fifo");
}

#[test]
fn mixed_wakeups_on_one_p_steal() {
    check_mixed_wakeups(1, "steal");
}

#[test]
fn mixed_wakeups_on_two_ps_steal() {
    check_mixed_wakeups(2, "steal");
}

#[test]
fn mixed_wakeups_on_two_ps_fifo() {
    check_mixed_wakeups(2, "fifo");
}

/// Returns the run order of one P's gs that became ready by five paths, one after the other.
/// The paths are a wakeup by the P's holder, a blocking call that returns after its P was
/// retaken, a wakeup from a plain thread, a timer fired by the monitor thread, and a second
/// wakeup by the holder. The holder waits 50 ms after each outside path so that the g is
/// queued before the next one.
fn order_across_paths() -> Vec<&'static str> {
    let rt = eager_retake_builder(1).build().expect("runtime builds");
    watchdog(LIMIT, move || {
        rt.block_on(|| {
            let order = Arc::new(Mutex::new(Vec::new()));
            let (handles_tx, handles_rx) = mpsc::channel();
            let spawn_parker = |name: &'static str| {
                let (order, handles_tx) = (order.clone(), handles_tx.clone());
                goro::spawn(move || {
                    handles_tx.send(goro::current()).unwrap();
                    goro::park();
                    order.lock().unwrap().push(name);
                })
                .unwrap()
            };
            let local_first = spawn_parker("holder wake 1");
            let from_thread = spawn_parker("thread wake");
            let local_last = spawn_parker("holder wake 2");
            let handles = {
                let mut received = Vec::new();
                while received.len() < 3 {
                    match handles_rx.try_recv() {
                        Ok(handle) => received.push(handle),
                        Err(_) => goro::yield_now(),
                    }
                }
                received
            };
            let started = Instant::now();
            let timer_deadline = Duration::from_millis(400);
            let sleeper = {
                let order = order.clone();
                goro::spawn(move || {
                    goro::sleep(timer_deadline);
                    order.lock().unwrap().push("timer");
                })
                .unwrap()
            };
            let (release_tx, release_rx) = mpsc::channel::<()>();
            let in_syscall = Arc::new(AtomicBool::new(false));
            let syscaller = {
                let (order, in_syscall) = (order.clone(), in_syscall.clone());
                goro::spawn(move || {
                    in_syscall.store(true, Ordering::SeqCst);
                    goro::blocking(|| release_rx.recv().unwrap());
                    order.lock().unwrap().push("syscall return");
                })
                .unwrap()
            };
            // Let the parkers park and the syscaller block. The monitor then retakes the P
            // from the syscaller's M and runs this goroutine on another M.
            while !in_syscall.load(Ordering::SeqCst) {
                goro::yield_now();
            }
            for _ in 0..8 {
                goro::yield_now();
            }
            std::thread::sleep(Duration::from_millis(50));

            // From here on this goroutine keeps the P: none of the others runs before the joins.
            handles[0].unpark();
            release_tx.send(()).unwrap();
            std::thread::sleep(Duration::from_millis(50));
            std::thread::scope(|scope| {
                scope.spawn(|| handles[1].unpark());
            });
            std::thread::sleep(Duration::from_millis(50));
            let until_timer =
                (timer_deadline + Duration::from_millis(100)).saturating_sub(started.elapsed());
            std::thread::sleep(until_timer);
            handles[2].unpark();
            for goroutine in [local_first, from_thread, local_last, sleeper, syscaller] {
                goroutine.join().unwrap();
            }
            Arc::try_unwrap(order).unwrap().into_inner().unwrap()
        })
        .unwrap()
    })
}

#[test]
fn ready_order_across_paths_on_one_p() {
    let order = order_across_paths();
    assert_eq!(
        order,
        [
            "holder wake 1",
            "syscall return",
            "thread wake",
            "timer",
            "holder wake 2"
        ]
    );
}

/// A destructor that switches in every way a goroutine can while its goroutine unwinds.
struct SwitchInDrop {
    occupancy: Arc<Occupancy>,
    woken: mpsc::Receiver<()>,
}

impl Drop for SwitchInDrop {
    fn drop(&mut self) {
        let occupancy = &self.occupancy;
        for _ in 0..3 {
            occupancy.switch(goro::yield_now);
        }
        // Parked until a plain thread's wakeup arrives; `park` may return early.
        while self.woken.try_recv().is_err() {
            occupancy.switch(goro::park);
        }
        occupancy.switch(|| goro::sleep(Duration::from_micros(50)));
        occupancy.switch(|| goro::blocking(|| std::thread::sleep(Duration::from_micros(200))));
        occupancy.switch(goro::yield_now);
    }
}

/// Panicking goroutines on one P whose destructors yield, park, sleep and block, pinning their
/// Ms, while bystanders yield, with at most `max_threads` Ms.
fn unwind_at_thread_limit(max_threads: usize) {
    const PANICKERS: usize = 4;
    let rt = eager_retake_builder(1)
        .max_threads(max_threads)
        .build()
        .expect("runtime builds");
    let occupancy = Occupancy::new(1);
    let panics = {
        let occupancy = occupancy.clone();
        watchdog(LIMIT, move || {
            rt.block_on(move || {
                let _counted = occupancy.count();
                let done = Arc::new(AtomicBool::new(false));
                let bystanders: Vec<_> = (0..2)
                    .map(|_| {
                        let (occupancy, done) = (occupancy.clone(), done.clone());
                        occupancy
                            .clone()
                            .switch(|| {
                                goro::spawn(move || {
                                    let _counted = occupancy.count();
                                    while !done.load(Ordering::Acquire) {
                                        occupancy.switch(goro::yield_now);
                                    }
                                })
                            })
                            .unwrap()
                    })
                    .collect();
                let (handles_tx, handles_rx) = mpsc::channel();
                let mut wake_senders = Vec::new();
                let panickers: Vec<_> = (0..PANICKERS)
                    .map(|index| {
                        let (wake_tx, woken) = mpsc::channel();
                        wake_senders.push(wake_tx);
                        let (occupancy, handles_tx) = (occupancy.clone(), handles_tx.clone());
                        occupancy
                            .clone()
                            .switch(|| {
                                goro::spawn(move || {
                                    let _counted = occupancy.count();
                                    handles_tx.send(goro::current()).unwrap();
                                    let _guard = SwitchInDrop {
                                        occupancy: occupancy.clone(),
                                        woken,
                                    };
                                    panic!("panicker {index} unwinds on purpose");
                                })
                            })
                            .unwrap()
                    })
                    .collect();
                let handles = receive_handles(&handles_rx, PANICKERS, &occupancy);
                let waker = std::thread::spawn(move || {
                    for (handle, wake_tx) in handles.iter().zip(wake_senders) {
                        std::thread::sleep(Duration::from_millis(2));
                        wake_tx.send(()).unwrap();
                        handle.unpark();
                    }
                });
                let panics = panickers
                    .into_iter()
                    .map(|panicker| occupancy.switch(|| panicker.join()))
                    .filter(Result::is_err)
                    .count();
                done.store(true, Ordering::Release);
                for bystander in bystanders {
                    occupancy.switch(|| bystander.join()).unwrap();
                }
                occupancy.switch(|| goro::blocking(|| waker.join().unwrap()));
                panics
            })
            .unwrap()
        })
    };
    assert_eq!(
        panics, PANICKERS,
        "a panicking goroutine did not report its panic"
    );
    occupancy.assert_within_procs();
}

// NOTE: under qemu-aarch64 (dev profile) this test hung in 6 of 12 standalone runs, also at
// commits that predate the uncounted record pointer; natively 20 of 20 passed. The hang is
// not explained yet. The thread-limit unwind gap in docs/architecture.md is the first
// suspect.
#[test]
fn unwinding_goroutines_at_one_thread() {
    unwind_at_thread_limit(1);
}

#[test]
fn unwinding_goroutines_at_two_threads() {
    unwind_at_thread_limit(2);
}

#[test]
fn unwinding_goroutines_at_four_threads() {
    unwind_at_thread_limit(4);
}

/// The hooks of `SpawningScheduler` that spawn, in the order of its `budgets`.
const SPAWNING_HOOKS: [&str; 6] = [
    "ready",
    "next",
    "on_park",
    "on_entersyscall",
    "on_release_p",
    "on_exit",
];

/// A scheduler with one locked queue, beside the default `Fifo`, whose hooks spawn goroutines
/// onto the `Fifo` when they run on an M (on g0, or on a goroutine's stack), each hook until
/// its budget runs out.
struct SpawningScheduler {
    queue: Mutex<GQueue>,
    /// Spawns left for each hook of `SPAWNING_HOOKS`.
    budgets: [AtomicUsize; SPAWNING_HOOKS.len()],
    /// Spawns made by each hook of `SPAWNING_HOOKS`.
    spawned: [AtomicUsize; SPAWNING_HOOKS.len()],
    ran: Arc<AtomicUsize>,
    occupancy: Arc<Occupancy>,
}

impl SpawningScheduler {
    fn new(budget: usize, ran: Arc<AtomicUsize>, occupancy: Arc<Occupancy>) -> Self {
        SpawningScheduler {
            queue: Mutex::new(GQueue::new()),
            budgets: std::array::from_fn(|_| AtomicUsize::new(budget)),
            spawned: std::array::from_fn(|_| AtomicUsize::new(0)),
            ran,
            occupancy,
        }
    }

    /// Spawns one goroutine on the runtime's default scheduler, if the budget of `hook` allows
    /// and the hook runs on an M of the runtime.
    fn spawn_from(&self, hook: &'static str) {
        if goro::debug::m_id().is_none() {
            return;
        }
        let index = SPAWNING_HOOKS
            .iter()
            .position(|&name| name == hook)
            .expect("a hook of SPAWNING_HOOKS");
        let taken =
            self.budgets[index].fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
                left.checked_sub(1)
            });
        if taken.is_err() {
            return;
        }
        let (ran, occupancy) = (self.ran.clone(), self.occupancy.clone());
        let spawned = goro::spawn(move || {
            let _counted = occupancy.count();
            ran.fetch_add(1, Ordering::Relaxed);
        });
        // Dropping the handle detaches the goroutine; the test counts it through `ran`.
        if spawned.is_ok() {
            self.spawned[index].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Returns the total number of goroutines that the hooks spawned.
    fn total_spawned(&self) -> usize {
        self.spawned
            .iter()
            .map(|count| count.load(Ordering::Relaxed))
            .sum()
    }

    /// Returns the hooks that spawned at least once.
    fn hooks_that_spawned(&self) -> Vec<&'static str> {
        SPAWNING_HOOKS
            .iter()
            .zip(&self.spawned)
            .filter(|(_, count)| count.load(Ordering::Relaxed) > 0)
            .map(|(&hook, _)| hook)
            .collect()
    }
}

// SAFETY: `next` pops what `ready` and `on_yield` pushed, under the queue's lock.
unsafe impl Scheduler for SpawningScheduler {
    fn name(&self) -> &'static str {
        "spawning"
    }
    fn ready(&self, g: GRef, _cause: ReadyCause, _p: Option<PId>) {
        self.queue.lock().unwrap().push_back(g);
        self.spawn_from("ready");
    }
    fn next(&self, _p: PId) -> Option<GRef> {
        let g = self.queue.lock().unwrap().pop_front();
        self.spawn_from("next");
        g
    }
    fn has_work(&self) -> bool {
        !self.queue.lock().unwrap().is_empty()
    }
    fn on_park(&self, _g: GRef, _p: PId) {
        self.spawn_from("on_park");
    }
    fn on_entersyscall(&self, _g: GRef, _p: PId) {
        self.spawn_from("on_entersyscall");
    }
    fn on_release_p(&self, _p: PId) {
        self.spawn_from("on_release_p");
    }
    fn on_exit(&self, _g: GRef, _p: PId) {
        self.spawn_from("on_exit");
    }
}

/// Yields, sleeps and makes both kinds of blocking call, 50 times in all, starting with the
/// kind that `index` selects. The sleeps last 2 ms, so that they park even under QEMU: a
/// sleep whose deadline passed before it could park returns without parking.
fn switch_in_four_ways(occupancy: &Arc<Occupancy>, index: usize) {
    let _counted = occupancy.count();
    for round in 0..50 {
        match (index + round) % 4 {
            0 => occupancy.switch(goro::yield_now),
            1 => occupancy.switch(|| goro::sleep(Duration::from_millis(2))),
            2 => occupancy
                .switch(|| goro::blocking(|| std::thread::sleep(Duration::from_micros(40)))),
            _ => occupancy
                .switch(|| goro::blocking_known(|| std::thread::sleep(Duration::from_micros(5)))),
        }
    }
}

#[test]
fn custom_scheduler_hooks_spawn_beside_one_p_fifo() {
    const BUDGET: usize = 200;
    const CUSTOM_GS: usize = 8;
    let occupancy = Occupancy::new(1);
    let ran = Arc::new(AtomicUsize::new(0));
    let scheduler = Arc::new(SpawningScheduler::new(
        BUDGET,
        ran.clone(),
        occupancy.clone(),
    ));
    // SAFETY: the test reads only the scheduler's counters through `scheduler`.
    let handle = unsafe { SchedHandle::from_arc(scheduler.clone()) };
    let rt = eager_retake_builder(1)
        .add_scheduler(handle.clone())
        .build()
        .expect("runtime builds");

    {
        let (occupancy, scheduler) = (occupancy.clone(), scheduler.clone());
        watchdog(LIMIT, move || {
            rt.block_on(move || {
                let _counted = occupancy.count();
                let custom: Vec<_> = (0..CUSTOM_GS)
                    .map(|index| {
                        let counted = occupancy.clone();
                        let body = move || switch_in_four_ways(&counted, index);
                        occupancy
                            .switch(|| goro::spawn_g(goro::DefaultG::new(), &handle, body))
                            .unwrap()
                    })
                    .collect();
                for g in custom {
                    occupancy.switch(|| g.join()).unwrap();
                }

                // Let the detached goroutines that the hooks spawned finish.
                while ran.load(Ordering::Relaxed) < scheduler.total_spawned() {
                    occupancy.switch(|| goro::sleep(Duration::from_millis(1)));
                }
            })
            .unwrap();
        });
    }

    let hooks = scheduler.hooks_that_spawned();
    for hook in ["ready", "next", "on_park", "on_entersyscall", "on_exit"] {
        assert!(
            hooks.contains(&hook),
            "{hook} never spawned; spawned: {hooks:?}"
        );
    }
    occupancy.assert_within_procs();
}

/// Drops a one-P runtime while its goroutines are parked, yielding, sleeping, in blocking
/// calls and being woken from a plain thread, `ROUNDS` times.
#[test]
fn drop_in_every_state_on_one_p() {
    const ROUNDS: usize = 40;
    watchdog(LIMIT, || {
        for round in 0..ROUNDS {
            let rt = eager_retake_builder(1).build().expect("runtime builds");
            let occupancy = Occupancy::new(1);
            let (handles_tx, handles_rx) = mpsc::channel();
            let mut joins = Vec::new();
            for index in 0..12 {
                let (occupancy, handles_tx) = (occupancy.clone(), handles_tx.clone());
                let join = rt
                    .spawn(move || {
                        let _counted = occupancy.count();
                        handles_tx.send(goro::current()).unwrap();
                        loop {
                            match index % 4 {
                                0 => occupancy.switch(goro::park),
                                1 => occupancy.switch(goro::yield_now),
                                2 => occupancy.switch(|| goro::sleep(Duration::from_micros(30))),
                                _ => occupancy.switch(|| {
                                    goro::blocking(|| {
                                        std::thread::sleep(Duration::from_micros(50))
                                    });
                                    goro::yield_now();
                                }),
                            }
                        }
                    })
                    .expect("spawn succeeds");
                joins.push(join);
            }
            let handles: Vec<_> = (0..12).map(|_| handles_rx.recv().unwrap()).collect();
            let stop = Arc::new(AtomicBool::new(false));
            let waker = {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Acquire) {
                        handles.iter().for_each(goro::Goroutine::unpark);
                        std::thread::yield_now();
                    }
                    handles
                })
            };
            std::thread::sleep(Duration::from_millis((round % 5) as u64));
            drop(rt);
            stop.store(true, Ordering::Release);
            let handles = waker.join().unwrap();
            drop(handles);
            for join in joins {
                assert!(
                    join.join().is_err(),
                    "a goroutine that never returns returned"
                );
            }
            occupancy.assert_within_procs();
        }
    });
}
