//! Misuse of the syscall fast path and of scheduler hooks, and FP exception masks that a
//! goroutine changes: each case either works or fails with a message, never hangs or crashes.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use common::{LIMIT, watchdog};
use goro::{Runtime, SchedHandle, Scheduler};
use goro_sched::{GQueue, GRef, PId, ReadyCause};

/// A FIFO scheduler whose hooks misbehave on request.
#[derive(Default)]
struct Hooked {
    queue: Mutex<GQueue>,
    /// Makes the next `on_entersyscall` panic.
    panic_on_enter: AtomicBool,
    /// Counts the `goro::blocking` calls that `next` makes on g0.
    blocking_on_g0: AtomicUsize,
}

// SAFETY: `next` pops what `ready` pushed.
unsafe impl Scheduler for Hooked {
    fn name(&self) -> &'static str {
        "hooked"
    }

    fn ready(&self, g: GRef, _cause: ReadyCause, _p: Option<PId>) {
        self.queue.lock().unwrap().push_back(g);
    }

    fn next(&self, _p: PId) -> Option<GRef> {
        // On g0, `blocking` must just run the call.
        let g = goro::blocking(|| self.queue.lock().unwrap().pop_front());
        // Relaxed: a counter read after the runtime stops.
        self.blocking_on_g0.fetch_add(1, Ordering::Relaxed);
        g
    }

    fn has_work(&self) -> bool {
        !self.queue.lock().unwrap().is_empty()
    }

    fn on_entersyscall(&self, _g: GRef, _p: PId) {
        // Relaxed: the flag is set and read on the same goroutine.
        if self.panic_on_enter.swap(false, Ordering::Relaxed) {
            panic!("on_entersyscall hook failed");
        }
    }
}

#[test]
fn blocking_in_g0_hook_just_runs_the_call() {
    let sched = Arc::new(Hooked::default());
    let rt = Runtime::builder()
        .procs(2)
        .scheduler_handle(SchedHandle::new(sched.clone()))
        .build()
        .unwrap();
    let sum = watchdog(LIMIT, move || {
        rt.block_on(|| {
            let handles: Vec<_> = (0..50u64)
                .map(|i| goro::spawn(move || goro::blocking(|| i)).unwrap())
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).sum::<u64>()
        })
        .unwrap()
    });
    assert_eq!(sum, 49 * 50 / 2);
    // Relaxed: block_on's return ordered the runtime's writes.
    assert!(sched.blocking_on_g0.load(Ordering::Relaxed) > 50);
}

#[test]
fn panicking_entersyscall_hook_reaches_join() {
    let sched = Arc::new(Hooked::default());
    let rt = Runtime::builder()
        .procs(1)
        .scheduler_handle(SchedHandle::new(sched.clone()))
        .build()
        .unwrap();
    let hook = sched.clone();
    watchdog(LIMIT, move || {
        let error = rt
            .block_on(move || {
                // Relaxed: read by the same goroutine in the hook.
                hook.panic_on_enter.store(true, Ordering::Relaxed);
                goro::blocking(|| 1)
            })
            .unwrap_err();
        let message = error.panic_message().unwrap_or_default().to_owned();
        assert!(message.contains("on_entersyscall hook failed"), "{message}");
        // The P came back: the runtime runs further goroutines and syscalls.
        assert_eq!(rt.block_on(|| goro::blocking(|| 2)).unwrap(), 2);
    });
}
