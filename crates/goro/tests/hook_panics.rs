//! A scheduler hook that panics, or that tries to switch goroutines, aborts the process with a
//! message naming the hook, instead of losing a goroutine or a P and hanging.
//!
//! Each case runs in a child process: the test binary re-executes itself with
//! `GORO_HOOK_CASE` set (prefixed by `GORO_TEST_RUNNER` under QEMU).

mod common;

use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::LIMIT;
use goro::{Runtime, SchedHandle, Scheduler};
use goro_sched::{GQueue, GRef, PId, ReadyCause};

const CASE: &str = "GORO_HOOK_CASE";

/// The misbehaviour that a [`Faulty`] scheduler shows once its goroutine arms it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// `ready` panics for a wakeup.
    PanicInWakeReady,
    /// `on_release_p` panics.
    PanicInReleaseP,
    /// `has_work` panics.
    PanicInHasWork,
    /// `next` calls `goro::yield_now` when it runs for a yield.
    YieldInNext,
    /// `on_yield` parks the yielding goroutine.
    ParkInOnYield,
}

/// A FIFO scheduler that shows `fault` once, after `armed` is set.
struct Faulty {
    queue: Mutex<GQueue>,
    fault: Fault,
    armed: AtomicBool,
}

impl Faulty {
    /// Returns whether the hook that calls it shows `fault` now. Only the first call after
    /// arming returns `true`, so one thread panics and the abort message stays in one piece.
    fn fires(&self, fault: Fault) -> bool {
        // Relaxed: the flag orders nothing; a late read only delays the fault.
        self.fault == fault && self.armed.swap(false, Ordering::Relaxed)
    }
}

// SAFETY: `next` pops what `ready` and `on_yield` pushed.
unsafe impl Scheduler for Faulty {
    fn name(&self) -> &'static str {
        "faulty"
    }

    fn ready(&self, g: GRef, cause: ReadyCause, _p: Option<PId>) {
        if cause == ReadyCause::Wake && self.fires(Fault::PanicInWakeReady) {
            panic!("ready failed");
        }
        self.queue.lock().unwrap().push_back(g);
    }

    fn next(&self, _p: PId) -> Option<GRef> {
        if goro::debug::m_thread_id().is_none() && self.fires(Fault::YieldInNext) {
            // Only on the yielding goroutine's stack, whose M field the switch has cleared.
            // g0's M field is always set.
            goro::yield_now();
        }
        self.queue.lock().unwrap().pop_front()
    }

    fn has_work(&self) -> bool {
        if self.fires(Fault::PanicInHasWork) {
            panic!("has_work failed");
        }
        !self.queue.lock().unwrap().is_empty()
    }

    fn on_yield(&self, g: GRef, _p: PId) {
        if self.fires(Fault::ParkInOnYield) {
            goro::park();
        }
        self.queue.lock().unwrap().push_back(g);
    }

    fn on_release_p(&self, _p: PId) {
        if self.fires(Fault::PanicInReleaseP) {
            panic!("on_release_p failed");
        }
    }
}

/// Runs in the child: arms `fault` on a goroutine, then does what reaches the faulty hook.
fn child(fault: Fault) {
    let scheduler = Arc::new(Faulty {
        queue: Mutex::new(GQueue::new()),
        fault,
        armed: AtomicBool::new(false),
    });
    let rt = Runtime::builder()
        .procs(2)
        // SAFETY: the test only sets the scheduler's flag through `scheduler`.
        .scheduler_handle(unsafe { SchedHandle::from_arc(scheduler.clone()) })
        .build()
        .unwrap();
    let result = rt.block_on(move || {
        let (sender, receiver) = goro::sync::channel::<u32>(0);
        let receiving = goro::spawn(move || receiver.recv()).unwrap();
        // Relaxed: see `Faulty::fires`.
        scheduler.armed.store(true, Ordering::Relaxed);
        match fault {
            Fault::PanicInWakeReady => {
                // Let the receiver park first, so that the send wakes it.
                goro::sleep(Duration::from_millis(20));
                let _ = sender.send(1);
            }
            Fault::PanicInReleaseP => {
                goro::blocking_known(|| std::thread::sleep(Duration::from_millis(20)));
                let _ = sender.send(1);
            }
            Fault::PanicInHasWork => {
                goro::sleep(Duration::from_millis(20));
                let _ = sender.send(1);
            }
            Fault::YieldInNext | Fault::ParkInOnYield => {
                goro::yield_now();
                let _ = sender.send(1);
            }
        }
        receiving.join()
    });
    eprintln!("the child finished without an abort: {result:?}");
}

/// Runs `case` in a child process and returns its exit signal and standard error. Kills the
/// child after [`LIMIT`], which fails the test as a hang.
fn run_child(case: &str) -> (Option<i32>, String) {
    let mut child = common::self_command("hook_faults_abort_with_the_hook_named")
        .env(CASE, case)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("case {case}: the child did not exit within {LIMIT:?}, so it hung");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    (status.signal(), reader.join().unwrap())
}

#[test]
fn hook_faults_abort_with_the_hook_named() {
    let cases = [
        ("wake-ready", Fault::PanicInWakeReady, "hook ready panicked"),
        (
            "release-p",
            Fault::PanicInReleaseP,
            "hook on_release_p panicked",
        ),
        ("has-work", Fault::PanicInHasWork, "hook has_work panicked"),
        (
            "yield-in-next",
            Fault::YieldInNext,
            "goro::yield_now inside a scheduler hook",
        ),
        (
            "park-in-on-yield",
            Fault::ParkInOnYield,
            "parking inside a scheduler hook",
        ),
    ];
    if let Ok(name) = std::env::var(CASE) {
        let (_, fault, _) = cases
            .iter()
            .find(|(case, ..)| *case == name)
            .unwrap_or_else(|| panic!("unknown {CASE} {name}"));
        child(*fault);
        return;
    }
    for (case, _, message) in cases {
        let (signal, stderr) = run_child(case);
        assert_eq!(
            signal,
            Some(libc::SIGABRT),
            "case {case}: expected an abort; stderr:\n{stderr}"
        );
        assert!(
            stderr.contains(message),
            "case {case}: expected {message:?}; stderr:\n{stderr}"
        );
    }
}
