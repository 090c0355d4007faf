//! A runtime's shared state lives as long as something can still reach it: its `Runtime`, its
//! live goroutines (one count for all of them) and each `Goroutine` handle. The scheduler
//! below records when the runtime drops it, which happens when that state is freed. Too early
//! is a use after free, and never is a leak.

mod common;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{LIMIT, watchdog};
use goro::sync::channel;
use goro::{DefaultG, Runtime, SchedHandle, Scheduler};
use goro_sched::{GQueue, GRef, PId, ReadyCause};

/// A FIFO scheduler that sets its flag when it is dropped.
struct DropFlag {
    queue: Mutex<GQueue>,
    dropped: Arc<AtomicBool>,
}

impl DropFlag {
    fn new() -> (DropFlag, Arc<AtomicBool>) {
        let dropped = Arc::new(AtomicBool::new(false));
        let scheduler = DropFlag {
            queue: Mutex::new(GQueue::new()),
            dropped: dropped.clone(),
        };
        (scheduler, dropped)
    }
}

impl Drop for DropFlag {
    fn drop(&mut self) {
        // SeqCst: read by the test thread after the drop that should have run this.
        self.dropped.store(true, Ordering::SeqCst);
    }
}

// SAFETY: every g handed to `ready` or `on_yield` is queued once and returned once by `next`.
unsafe impl Scheduler for DropFlag {
    fn name(&self) -> &'static str {
        "drop-flag"
    }
    fn ready(&self, g: GRef, _cause: ReadyCause, _p: Option<PId>) {
        self.queue.lock().unwrap().push_back(g);
    }
    fn next(&self, _p: PId) -> Option<GRef> {
        self.queue.lock().unwrap().pop_front()
    }
    fn has_work(&self) -> bool {
        !self.queue.lock().unwrap().is_empty()
    }
}

fn runtime_with_flag(procs: usize) -> (Runtime, Arc<AtomicBool>) {
    let (scheduler, dropped) = DropFlag::new();
    let rt = Runtime::builder()
        .procs(procs)
        .deadlock_detection(false)
        .scheduler(scheduler)
        .build()
        .unwrap();
    (rt, dropped)
}

#[test]
fn finished_goroutines_release_runtime() {
    let dropped = watchdog(LIMIT, || {
        let (rt, dropped) = runtime_with_flag(2);
        let handles: Vec<_> = (0..1000u64)
            .map(|i| rt.spawn(move || i * 2).unwrap())
            .collect();
        let sum: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
        assert_eq!(sum, 999 * 1000);
        assert!(
            !dropped.load(Ordering::SeqCst),
            "dropped while the Runtime lives"
        );
        drop(rt);
        dropped
    });
    assert!(
        dropped.load(Ordering::SeqCst),
        "the runtime outlived its Runtime and all of its goroutines: leaked"
    );
}

#[test]
fn failed_spawn_releases_runtime() {
    let dropped = watchdog(LIMIT, || {
        let (rt, dropped) = runtime_with_flag(1);
        // Not one of the runtime's schedulers: the spawn fails with no goroutine live, after
        // counting its goroutine as live for a moment.
        let (stranger, _) = DropFlag::new();
        let stranger = SchedHandle::new(stranger);
        for _ in 0..3 {
            let error = rt.spawn_g(DefaultG::new(), &stranger, || ()).unwrap_err();
            assert!(
                matches!(error, goro::SpawnError::UnknownScheduler { .. }),
                "{error:?}"
            );
        }
        drop(rt);
        dropped
    });
    assert!(
        dropped.load(Ordering::SeqCst),
        "failed spawns kept the runtime alive: leaked"
    );
}

#[test]
fn handle_keeps_runtime_alive() {
    let (handle, dropped) = watchdog(LIMIT, || {
        let (rt, dropped) = runtime_with_flag(2);
        let handle = rt.spawn(goro::current).unwrap().join().unwrap();
        drop(rt);
        (handle, dropped)
    });
    assert!(
        !dropped.load(Ordering::SeqCst),
        "the runtime was freed while a Goroutine handle of one of its goroutines lived"
    );
    // Unparking a goroutine that exited only sets its permit.
    handle.unpark();
    let clone = handle.clone();
    drop(handle);
    assert!(!dropped.load(Ordering::SeqCst), "freed while a clone lived");
    drop(clone);
    assert!(
        dropped.load(Ordering::SeqCst),
        "the last Goroutine handle did not release the runtime: leaked"
    );
}

#[test]
fn parked_goroutine_keeps_runtime_alive() {
    let (wake, dropped) = watchdog(LIMIT, || {
        let (rt, dropped) = runtime_with_flag(1);
        let (wake, woken) = channel::<u32>(0);
        let (started, on_start) = std::sync::mpsc::channel();
        // Catches the drop's cancellation unwind and parks again, which the drop leaves as
        // it is (see `Runtime`'s drop).
        let _ = rt.spawn(move || {
            started.send(()).unwrap();
            let _ = catch_unwind(AssertUnwindSafe(|| woken.recv()));
            let _ = woken.recv();
        });
        on_start.recv().unwrap();
        // Let the goroutine park in its first receive.
        std::thread::sleep(Duration::from_millis(20));
        drop(rt);
        (wake, dropped)
    });
    assert!(
        !dropped.load(Ordering::SeqCst),
        "the runtime was freed while one of its goroutines was still parked"
    );
    // Readies the parked goroutine from a thread that runs none, which reaches the runtime
    // through the goroutine's record. No M is left to run it, so it stays queued.
    watchdog(LIMIT, move || wake.send(7).unwrap());
    assert!(!dropped.load(Ordering::SeqCst), "freed after the wakeup");
}
