//! loom model of the work-waiting hint: a goroutine queued on one thread while the monitor
//! refreshes the hint on another must never leave the hint clear.
//!
//! Run with `cargo xtask loom` (or `RUSTFLAGS="--cfg loom" cargo test --release -p
//! goro-syscall --test loom_work_waiting`).

#![cfg(loom)]

use loom::sync::Arc;
use loom::sync::atomic::{AtomicBool, Ordering, fence};
use loom::thread;

use goro_syscall::WorkWaiting;

/// Plays one ready (queue a goroutine, fence, raise) against one monitor scan (refresh), from
/// a hint that starts set or clear, and checks that the hint ends set.
fn ready_races_refresh(initially_set: bool) {
    loom::model(move || {
        let hint = Arc::new(WorkWaiting::new());
        if initially_set {
            hint.raise();
        }
        // The run queue, reduced to whether it contains a goroutine.
        let queued = Arc::new(AtomicBool::new(false));

        let ready = {
            let (hint, queued) = (hint.clone(), queued.clone());
            thread::spawn(move || {
                queued.store(true, Ordering::Relaxed);
                // The fence of `Shared::wakep`, between queueing and reading the idle count.
                fence(Ordering::SeqCst);
                hint.raise();
            })
        };
        let saw_work = hint.refresh(|| queued.load(Ordering::Relaxed));
        ready.join().unwrap();

        assert!(
            hint.is_set(),
            "the hint is clear with a goroutine queued (refresh saw work: {saw_work})"
        );
    });
}

#[test]
fn ready_races_refresh_from_a_clear_hint() {
    ready_races_refresh(false);
}

#[test]
fn ready_races_refresh_from_a_set_hint() {
    ready_races_refresh(true);
}
