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
        // SAFETY: the test only reads what the scheduler records, through `sched`.
        .scheduler_handle(unsafe { SchedHandle::from_arc(sched.clone()) })
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
        // SAFETY: the test only reads what the scheduler records, through `sched`.
        .scheduler_handle(unsafe { SchedHandle::from_arc(sched.clone()) })
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

/// Unmasks the divide-by-zero exception in MXCSR on a goroutine that then yields, blocks and
/// moves between Ms, while other goroutines divide by zero: only the unmasking goroutine may
/// trap, so SIGFPE anywhere else kills the test.
#[cfg(target_arch = "x86_64")]
#[test]
fn unmasked_fp_exception_stays_with_its_goroutine() {
    use std::arch::asm;
    use std::hint::black_box;

    fn mxcsr() -> u32 {
        let mut value = 0u32;
        // SAFETY: stmxcsr only stores to the local.
        unsafe { asm!("stmxcsr [{}]", in(reg) &raw mut value, options(nostack)) };
        value & 0xFFC0
    }

    /// # Safety
    ///
    /// With an exception unmasked, the caller must not raise it.
    unsafe fn set_mxcsr(value: u32) {
        // SAFETY: the caller keeps unmasked exceptions from being raised.
        unsafe { asm!("ldmxcsr [{}]", in(reg) &raw const value, options(nostack)) };
    }

    const DEFAULT: u32 = 0x1F80;
    // Bit 9 is the divide-by-zero mask.
    const DIVIDE_BY_ZERO_UNMASKED: u32 = DEFAULT & !(1 << 9);

    let rt = Runtime::builder().procs(3).build().unwrap();
    let (seen, dividers) = watchdog(LIMIT, move || {
        rt.block_on(|| {
            let stop = Arc::new(AtomicBool::new(false));
            let dividers: Vec<_> = (0..4)
                .map(|_| {
                    let stop = stop.clone();
                    goro::spawn(move || {
                        let mut rounds = 0u64;
                        // Acquire pairs with the Release store below; only the flag matters.
                        while !stop.load(Ordering::Acquire) {
                            let quotient = black_box(1.0f64) / black_box(0.0f64);
                            assert!(quotient.is_infinite());
                            assert_eq!(mxcsr(), DEFAULT);
                            rounds += 1;
                            if rounds.is_multiple_of(3) {
                                goro::blocking(|| black_box(rounds));
                            } else {
                                goro::yield_now();
                            }
                        }
                        rounds
                    })
                    .unwrap()
                })
                .collect();
            let unmasking = goro::spawn(|| {
                // SAFETY: this goroutine never divides by zero.
                unsafe { set_mxcsr(DIVIDE_BY_ZERO_UNMASKED) };
                let mut seen = Vec::new();
                for round in 0..300u64 {
                    match round % 3 {
                        0 => goro::yield_now(),
                        1 => {
                            goro::blocking(|| black_box(round));
                        }
                        _ => goro::blocking_known(|| {
                            std::thread::sleep(std::time::Duration::from_micros(50))
                        }),
                    }
                    seen.push(mxcsr());
                }
                // SAFETY: the defaults mask every exception.
                unsafe { set_mxcsr(DEFAULT) };
                seen
            })
            .unwrap();
            let seen = unmasking.join().unwrap();
            // Release: see the dividers' Acquire.
            stop.store(true, Ordering::Release);
            let rounds: Vec<u64> = dividers.into_iter().map(|h| h.join().unwrap()).collect();
            (seen, rounds)
        })
        .unwrap()
    });
    assert!(
        seen.iter().all(|&value| value == DIVIDE_BY_ZERO_UNMASKED),
        "the unmasking goroutine lost its MXCSR: {seen:x?}"
    );
    assert!(dividers.iter().all(|&rounds| rounds > 0), "{dividers:?}");
}

/// A goroutine whose blocking call panics, with its P retaken and none idle, requeues during
/// its unwind. It resumes on the M where the unwind began (std counts panics per OS thread),
/// so join gets the panic, and `thread::panicking()` returns false in every other goroutine.
#[test]
fn panic_inside_blocking_call_survives_requeue() {
    let rt = Runtime::builder().procs(1).build().unwrap();
    watchdog(LIMIT, move || {
        for _ in 0..20 {
            let (error, spinner_panicking) = rt
                .block_on(|| {
                    let stop = Arc::new(AtomicBool::new(false));
                    let spinner = {
                        let stop = stop.clone();
                        goro::spawn(move || {
                            let mut panicking = false;
                            // Acquire: only the flag matters.
                            while !stop.load(Ordering::Acquire) {
                                panicking |= std::thread::panicking();
                                goro::yield_now();
                            }
                            panicking
                        })
                        .unwrap()
                    };
                    let error = goro::spawn(|| {
                        goro::blocking_known(|| {
                            std::thread::sleep(std::time::Duration::from_millis(2));
                            panic!("call failed");
                        })
                    })
                    .unwrap()
                    .join()
                    .unwrap_err();
                    // Release: see the spinner's Acquire.
                    stop.store(true, Ordering::Release);
                    (error, spinner.join().unwrap())
                })
                .unwrap();
            let message = error.panic_message().unwrap_or_default().to_owned();
            assert!(message.contains("call failed"), "{message}");
            assert!(
                !spinner_panicking,
                "a bystander goroutine saw thread::panicking()"
            );
        }
        assert!(!rt.block_on(std::thread::panicking).unwrap());
    });
}

/// A FIFO scheduler whose `ready` spawns `SPAWNS` goroutines once, for the first wakeup after
/// `armed` is set, and records how many of them had run when the spawns returned.
#[derive(Default)]
struct SpawningReady {
    queue: Mutex<GQueue>,
    armed: AtomicBool,
    children_run: Arc<AtomicUsize>,
    /// Children that had run when the last spawn inside `ready` returned; `usize::MAX` until
    /// then.
    run_during_hook: AtomicUsize,
}

impl SpawningReady {
    /// More than one spawn-yield interval, so that a yielding spawn would switch.
    const SPAWNS: usize = 300;
}

// SAFETY: `next` pops what `ready` pushed.
unsafe impl Scheduler for SpawningReady {
    fn name(&self) -> &'static str {
        "spawning-ready"
    }

    fn ready(&self, g: GRef, cause: ReadyCause, _p: Option<PId>) {
        // Relaxed: the flag orders nothing; the test reads the results after a join.
        if cause == ReadyCause::Wake && self.armed.swap(false, Ordering::Relaxed) {
            for _ in 0..Self::SPAWNS {
                let run = self.children_run.clone();
                drop(goro::spawn(move || run.fetch_add(1, Ordering::Relaxed)).unwrap());
            }
            let run = self.children_run.load(Ordering::Relaxed);
            self.run_during_hook.store(run, Ordering::Relaxed);
        }
        self.queue.lock().unwrap().push_back(g);
    }

    fn next(&self, _p: PId) -> Option<GRef> {
        self.queue.lock().unwrap().pop_front()
    }

    fn has_work(&self) -> bool {
        !self.queue.lock().unwrap().is_empty()
    }
}

#[test]
fn spawns_inside_ready_do_not_yield() {
    let sched = Arc::new(SpawningReady {
        run_during_hook: AtomicUsize::new(usize::MAX),
        ..SpawningReady::default()
    });
    // One P: only a yield of the goroutine inside `ready` could run the children before the
    // hook returns. Spawn yields are on by default.
    let rt = Runtime::builder()
        .procs(1)
        // SAFETY: the test only reads what the scheduler records, through `sched`.
        .scheduler_handle(unsafe { SchedHandle::from_arc(sched.clone()) })
        .build()
        .unwrap();
    let arm = sched.clone();
    watchdog(LIMIT, move || {
        rt.block_on(move || {
            let (sender, receiver) = goro::sync::channel::<()>(0);
            let receiving = goro::spawn(move || receiver.recv().unwrap()).unwrap();
            // Lets the receiver park, so that the send below wakes it through `ready`.
            goro::yield_now();
            arm.armed.store(true, Ordering::Relaxed);
            sender.send(()).unwrap();
            receiving.join().unwrap();
        })
        .unwrap();
    });
    // Relaxed: block_on's return ordered the runtime's writes.
    assert_eq!(sched.run_during_hook.load(Ordering::Relaxed), 0);
    assert_eq!(
        sched.children_run.load(Ordering::Relaxed),
        SpawningReady::SPAWNS
    );
}
