//! The g's scheduler decides at syscall exit, several runtimes share a process, and the M
//! limit is reported instead of a silent hang.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use common::{LIMIT, watchdog};
use goro::{Runtime, SchedHandle, Scheduler};
use goro_sched::{GQueue, GRef, PId, ReadyCause, SyscallExit};

/// A FIFO scheduler that answers `on_exitsyscall` with a fixed decision and counts calls.
#[derive(Default)]
struct Decider {
    queue: Mutex<GQueue>,
    requeue: bool,
    exits: AtomicUsize,
    syscall_readies: AtomicUsize,
}

// SAFETY: `next` pops what `ready` pushed.
unsafe impl Scheduler for Decider {
    fn name(&self) -> &'static str {
        "decider"
    }
    fn ready(&self, g: GRef, cause: ReadyCause, _p: Option<PId>) {
        if cause == ReadyCause::SyscallExit {
            self.syscall_readies.fetch_add(1, Ordering::SeqCst);
        }
        self.queue.lock().unwrap().push_back(g);
    }
    fn next(&self, _p: PId) -> Option<GRef> {
        self.queue.lock().unwrap().pop_front()
    }
    fn has_work(&self) -> bool {
        !self.queue.lock().unwrap().is_empty()
    }
    fn on_exitsyscall(&self, _g: GRef, _p: PId) -> SyscallExit {
        self.exits.fetch_add(1, Ordering::SeqCst);
        if self.requeue {
            SyscallExit::Requeue
        } else {
            SyscallExit::Continue
        }
    }
}

fn run_syscalls(requeue: bool) -> (usize, usize, u64) {
    let decider = Arc::new(Decider {
        requeue,
        ..Decider::default()
    });
    let rt = Runtime::builder()
        .procs(1)
        // SAFETY: the test only reads what the scheduler records, through `decider`.
        .scheduler_handle(unsafe { SchedHandle::from_arc(decider.clone()) })
        .build()
        .unwrap();
    let switches = watchdog(LIMIT, move || {
        rt.block_on(|| {
            for _ in 0..100 {
                // SAFETY: getppid has no preconditions.
                goro::blocking(|| unsafe { libc::getppid() });
            }
        })
        .unwrap();
        rt.stats().context_switches
    });
    (
        decider.exits.load(Ordering::SeqCst),
        decider.syscall_readies.load(Ordering::SeqCst),
        switches,
    )
}

#[test]
fn scheduler_lets_the_g_continue_after_a_syscall() {
    let (exits, requeues, switches) = run_syscalls(false);
    assert_eq!(exits, 100);
    assert_eq!(requeues, 0);
    assert!(switches < 50, "continuing gs should not switch: {switches}");
}

#[test]
fn scheduler_requeues_the_g_after_a_syscall() {
    let (exits, requeues, switches) = run_syscalls(true);
    assert_eq!(exits, 100);
    assert_eq!(requeues, 100);
    assert!(
        switches >= 101,
        "every requeue resumes the g again: {switches}"
    );
}

/// A `Decider` that opts out of the syscall hooks while still overriding one.
#[derive(Default)]
struct NoHooks(Decider);

// SAFETY: forwards to `Decider`, which pops what `ready` pushed.
unsafe impl Scheduler for NoHooks {
    const SYSCALL_HOOKS: bool = false;

    fn name(&self) -> &'static str {
        "no-hooks"
    }
    fn ready(&self, g: GRef, cause: ReadyCause, p: Option<PId>) {
        self.0.ready(g, cause, p)
    }
    fn next(&self, p: PId) -> Option<GRef> {
        self.0.next(p)
    }
    fn has_work(&self) -> bool {
        self.0.has_work()
    }
    fn on_entersyscall(&self, _g: GRef, _p: PId) {
        panic!("on_entersyscall called although SYSCALL_HOOKS is false");
    }
    fn on_exitsyscall(&self, g: GRef, p: PId) -> SyscallExit {
        self.0.on_exitsyscall(g, p)
    }
}

#[test]
fn scheduler_without_syscall_hooks_is_not_called_at_syscalls() {
    let sched = Arc::new(NoHooks(Decider {
        requeue: true,
        ..Decider::default()
    }));
    let rt = Runtime::builder()
        .procs(1)
        // SAFETY: the test only reads what the scheduler records, through `sched`.
        .scheduler_handle(unsafe { SchedHandle::from_arc(sched.clone()) })
        .build()
        .unwrap();
    watchdog(LIMIT, move || {
        rt.block_on(|| {
            for _ in 0..100 {
                // SAFETY: getppid has no preconditions.
                goro::blocking(|| unsafe { libc::getppid() });
            }
        })
        .unwrap();
    });
    assert_eq!(sched.0.exits.load(Ordering::SeqCst), 0);
    assert_eq!(sched.0.syscall_readies.load(Ordering::SeqCst), 0);
}

#[test]
fn several_runtimes_live_in_one_process() {
    let runtimes: Vec<_> = (1..=3)
        .map(|procs| Runtime::builder().procs(procs).build().unwrap())
        .collect();
    let totals = watchdog(LIMIT, move || {
        std::thread::scope(|scope| {
            let workers: Vec<_> = runtimes
                .iter()
                .map(|rt| {
                    scope.spawn(move || {
                        rt.block_on(|| {
                            let hs: Vec<_> = (0..200u64)
                                .map(|i| {
                                    goro::spawn(move || {
                                        goro::yield_now();
                                        i
                                    })
                                    .unwrap()
                                })
                                .collect();
                            hs.into_iter().map(|h| h.join().unwrap()).sum::<u64>()
                        })
                        .unwrap()
                    })
                })
                .collect();
            workers
                .into_iter()
                .map(|w| w.join().unwrap())
                .collect::<Vec<_>>()
        })
    });
    assert_eq!(totals, vec![19_900; 3]);
}

#[test]
fn thread_limit_is_reported() {
    // The report goes to stderr: run a child process that hits the limit and read it.
    if std::env::var("GORO_THREAD_LIMIT_CHILD").is_ok() {
        let rt = Runtime::builder()
            .procs(1)
            .max_threads(2)
            .deadlock_detection(false)
            .build()
            .unwrap();
        let _ = rt.spawn(|| {
            // Blocks two Ms in reads that never complete; the third goroutine finds no M.
            for _ in 0..2 {
                let mut fds = [0; 2];
                // SAFETY: `fds` has room for two descriptors.
                unsafe { libc::pipe(fds.as_mut_ptr()) };
                goro::spawn(move || {
                    let mut byte = 0u8;
                    // SAFETY: reads one byte into a local from a pipe nobody writes.
                    goro::blocking_known(|| unsafe {
                        libc::read(fds[0], (&mut byte as *mut u8).cast(), 1)
                    });
                })
                .unwrap();
            }
        });
        std::thread::sleep(std::time::Duration::from_millis(500));
        let _ = rt.spawn(|| ());
        std::thread::sleep(std::time::Duration::from_millis(500));
        std::process::exit(0);
    }
    let output = common::self_command("thread_limit_is_reported")
        .env("GORO_THREAD_LIMIT_CHILD", "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("max_threads = 2"), "{stderr}");
    assert!(stderr.contains("Builder::max_threads"), "{stderr}");
}
