//! Break tests for the FP control compare in the x86_64 switch. Goroutines that install
//! different MXCSR and x87 control words keep their own across every kind of switch and move
//! between Ms, with both reference schedulers and with a coroutine inside. Fresh goroutines
//! start with the defaults, and g0 never runs with a goroutine's state or status flags.
//!
//! Only x86_64 has the compare-and-skip switch, so the file is empty on other targets.

#![cfg(target_arch = "x86_64")]

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{LIMIT, build_with_scheduler, gettid, watchdog};
use goro::{Runtime, SchedHandle, Scheduler};
use goro_context::{Coroutine, CoroutineResult, Yielder};
use goro_sched::{GQueue, GRef, PId, ReadyCause};

/// The whole MXCSR, status flags included, and the x87 control word.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct FpState {
    mxcsr: u32,
    x87_control_word: u16,
}

/// MXCSR status flags (bits 0-5): invalid, denormal, divide by zero, overflow, underflow,
/// precision.
const MXCSR_FLAGS: u32 = 0x3F;
/// MXCSR precision (inexact) flag.
const MXCSR_PRECISION_FLAG: u32 = 0x20;

impl FpState {
    const DEFAULT: FpState = FpState::new(0x1F80, 0x037F);

    const fn new(mxcsr: u32, x87_control_word: u16) -> FpState {
        FpState {
            mxcsr,
            x87_control_word,
        }
    }

    /// Reads the calling thread's state.
    fn read() -> FpState {
        let mut mxcsr = 0u32;
        let mut x87_control_word = 0u16;
        // SAFETY: both instructions only store to the given locals.
        unsafe {
            std::arch::asm!(
                "stmxcsr [{mxcsr}]",
                "fnstcw [{control_word}]",
                mxcsr = in(reg) &raw mut mxcsr,
                control_word = in(reg) &raw mut x87_control_word,
                options(nostack, preserves_flags),
            )
        };
        FpState {
            mxcsr,
            x87_control_word,
        }
    }

    /// Installs the state on the calling thread.
    ///
    /// # Safety
    ///
    /// The state must keep every FP exception masked.
    unsafe fn install(self) {
        // SAFETY: the caller keeps the exceptions masked; both loads read locals.
        unsafe {
            std::arch::asm!(
                "ldmxcsr [{mxcsr}]",
                "fldcw [{control_word}]",
                mxcsr = in(reg) &raw const self.mxcsr,
                control_word = in(reg) &raw const self.x87_control_word,
                options(nostack, preserves_flags),
            )
        };
    }

    /// Returns the state without the MXCSR status flags.
    fn control(self) -> FpState {
        FpState::new(self.mxcsr & !MXCSR_FLAGS, self.x87_control_word)
    }
}

/// Control states that differ from the defaults in one part each, and one that differs in all
/// of them. Every FP exception stays masked.
const STATES: [(&str, FpState); 11] = [
    ("defaults", FpState::DEFAULT),
    ("SSE round down", FpState::new(0x3F80, 0x037F)),
    ("SSE round up", FpState::new(0x5F80, 0x037F)),
    ("SSE round toward zero", FpState::new(0x7F80, 0x037F)),
    ("flush to zero", FpState::new(0x9F80, 0x037F)),
    ("denormals are zero", FpState::new(0x1FC0, 0x037F)),
    ("x87 single precision", FpState::new(0x1F80, 0x007F)),
    ("x87 double precision", FpState::new(0x1F80, 0x027F)),
    ("x87 round up", FpState::new(0x1F80, 0x0B7F)),
    ("x87 round toward zero", FpState::new(0x1F80, 0x0F7F)),
    ("everything changed", FpState::new(0xFFC0, 0x0C7F)),
];

/// Restores the defaults when dropped, so that a failed check leaves no strange state on an M.
struct RestoreDefaults;

impl Drop for RestoreDefaults {
    fn drop(&mut self) {
        // SAFETY: the defaults are what the rest of the process expects.
        unsafe { FpState::DEFAULT.install() };
    }
}

/// One way for a goroutine to leave its M and come back.
#[derive(Clone, Copy, Debug)]
enum Step {
    Yield,
    /// A rendezvous with an echo goroutine on an unbuffered channel, which parks.
    ChannelPark,
    BlockingKnown,
    /// `goro::blocking` around a sleep long enough for the monitor to retake the P.
    BlockingRetaken,
    Sleep,
    SpawnJoin,
}

const STEPS: [Step; 6] = [
    Step::Yield,
    Step::ChannelPark,
    Step::BlockingKnown,
    Step::BlockingRetaken,
    Step::Sleep,
    Step::SpawnJoin,
];

/// What one worker goroutine saw.
#[derive(Debug, Default)]
struct WorkerReport {
    /// Steps after which the worker's control state was not the one it installed.
    lost: Vec<(Step, FpState)>,
    /// Control states of the children it spawned that were not the defaults.
    children_without_defaults: Vec<FpState>,
    /// Control states other than the defaults seen by its echo goroutine.
    echo_without_defaults: Vec<FpState>,
    threads: HashSet<i64>,
}

/// Installs `state`, takes `rounds` steps and checks its state after each.
fn worker(state: FpState, rounds: usize) -> WorkerReport {
    let _restore = RestoreDefaults;
    let (to_echo, echo_in) = goro::sync::channel::<()>(0);
    let (echo_out, from_echo) = goro::sync::channel::<()>(0);
    let echo = goro::spawn(move || {
        let mut seen = Vec::new();
        while echo_in.recv().is_ok() {
            let now = FpState::read().control();
            if now != FpState::DEFAULT {
                seen.push(now);
            }
            echo_out.send(()).unwrap();
        }
        seen
    })
    .unwrap();

    // SAFETY: every state in STATES keeps the exceptions masked.
    unsafe { state.install() };
    let mut report = WorkerReport::default();
    for round in 0..rounds {
        let step = STEPS[round % STEPS.len()];
        report.threads.insert(gettid());
        match step {
            Step::Yield => goro::yield_now(),
            Step::ChannelPark => {
                to_echo.send(()).unwrap();
                from_echo.recv().unwrap();
            }
            Step::BlockingKnown => {
                goro::blocking_known(|| std::thread::sleep(Duration::from_micros(200)))
            }
            Step::BlockingRetaken => {
                goro::blocking(|| std::thread::sleep(Duration::from_millis(2)))
            }
            Step::Sleep => goro::sleep(Duration::from_micros(500)),
            Step::SpawnJoin => {
                let child = goro::spawn(|| FpState::read().control()).unwrap();
                let child_state = child.join().unwrap();
                if child_state != FpState::DEFAULT {
                    report.children_without_defaults.push(child_state);
                }
            }
        }
        let now = FpState::read().control();
        if now != state {
            report.lost.push((step, now));
        }
    }
    report.threads.insert(gettid());
    drop(to_echo);
    report.echo_without_defaults = echo.join().unwrap();
    report
}

/// Runs two workers for every state in STATES, and returns their reports with the state's
/// name.
fn run_workers(rt: Runtime, rounds: usize) -> Vec<(&'static str, WorkerReport)> {
    watchdog(LIMIT, move || {
        rt.block_on(move || {
            let handles: Vec<_> = STATES
                .iter()
                .chain(STATES.iter())
                .map(|&(name, state)| (name, goro::spawn(move || worker(state, rounds)).unwrap()))
                .collect();
            handles
                .into_iter()
                .map(|(name, handle)| (name, handle.join().unwrap()))
                .collect()
        })
        .unwrap()
    })
}

/// Goroutines in 11 FP states keep them across every kind of switch and leak them nowhere.
#[test]
fn goroutines_keep_distinct_fp_states() {
    for scheduler in ["fifo", "worksteal"] {
        for procs in [1, 2, 4] {
            let rt = build_with_scheduler(Runtime::builder().procs(procs), scheduler);
            let reports = run_workers(rt, 60);
            let case = format!("{scheduler}, procs {procs}");
            let mut threads = HashSet::new();
            for (name, report) in &reports {
                assert!(
                    report.lost.is_empty(),
                    "{case}: the worker in state {name:?} lost it: {:?}",
                    report.lost
                );
                assert!(
                    report.children_without_defaults.is_empty(),
                    "{case}: children of the worker in state {name:?} did not start with the \
                     defaults: {:?}",
                    report.children_without_defaults
                );
                assert!(
                    report.echo_without_defaults.is_empty(),
                    "{case}: the echo goroutine of the worker in state {name:?} ran without \
                     the defaults: {:?}",
                    report.echo_without_defaults
                );
                threads.extend(report.threads.iter().copied());
            }
            assert!(
                threads.len() > 1,
                "{case}: every worker ran on one thread, so none moved between Ms"
            );
        }
    }
}

/// Goroutines spawned by a goroutine or a thread in another FP state start with the defaults.
#[test]
fn fresh_goroutines_start_with_defaults() {
    // The goroutine spawns past the spawn-yield interval, so some spawns yield straight to the
    // child. The thread's spawns start the M threads, which inherit the thread's state.
    for scheduler in ["fifo", "worksteal"] {
        let (from_goroutine, from_thread) = watchdog(LIMIT, move || {
            let everything = STATES[10].1;
            let _restore = RestoreDefaults;
            // SAFETY: the state keeps the exceptions masked; `_restore` reinstates the
            // defaults on this thread.
            unsafe { everything.install() };
            // Built after the install, so that every M thread it starts here inherits the
            // state.
            let rt = build_with_scheduler(Runtime::builder().procs(2), scheduler);
            let from_thread: Vec<FpState> = (0..20)
                .map(|_| rt.spawn(|| FpState::read().control()).unwrap())
                .collect::<Vec<_>>()
                .into_iter()
                .map(|handle| handle.join().unwrap())
                .collect();
            let from_goroutine = rt
                .block_on(move || {
                    let _restore = RestoreDefaults;
                    // SAFETY: as above, on this goroutine.
                    unsafe { everything.install() };
                    let children: Vec<_> = (0..300)
                        .map(|_| goro::spawn(|| FpState::read().control()).unwrap())
                        .collect();
                    children
                        .into_iter()
                        .map(|child| child.join().unwrap())
                        .collect::<Vec<_>>()
                })
                .unwrap();
            (from_goroutine, from_thread)
        });
        let odd: Vec<_> = from_goroutine
            .iter()
            .filter(|&&state| state != FpState::DEFAULT)
            .collect();
        assert!(
            odd.is_empty(),
            "{scheduler}: {} of 300 children of a goroutine in another state started without \
             the defaults: {odd:?}",
            odd.len()
        );
        let odd: Vec<_> = from_thread
            .iter()
            .filter(|&&state| state != FpState::DEFAULT)
            .collect();
        assert!(
            odd.is_empty(),
            "{scheduler}: {} of 20 goroutines spawned by a thread in another state started \
             without the defaults: {odd:?}",
            odd.len()
        );
    }
}

/// A FIFO scheduler for several Ps that records every state other than the defaults that its
/// hooks on g0 (`next`, `on_park`, `on_exit`) run with, status flags included.
#[derive(Default)]
struct G0Recorder {
    queue: Mutex<GQueue>,
    calls: AtomicUsize,
    odd_states: Mutex<Vec<(&'static str, FpState)>>,
}

impl G0Recorder {
    fn record(&self, hook: &'static str) {
        // Relaxed: a plain counter, read after the runtime's threads have been joined.
        self.calls.fetch_add(1, Ordering::Relaxed);
        let now = FpState::read();
        if now != FpState::DEFAULT {
            self.odd_states.lock().unwrap().push((hook, now));
        }
    }
}

// SAFETY: `next` and `on_yield_next` pop what `ready` and `on_yield_next` pushed.
unsafe impl Scheduler for G0Recorder {
    fn name(&self) -> &'static str {
        "g0-recorder"
    }
    fn ready(&self, g: GRef, _cause: ReadyCause, _p: Option<PId>) {
        self.queue.lock().unwrap().push_back(g);
    }
    fn next(&self, _p: PId) -> Option<GRef> {
        self.record("next");
        self.queue.lock().unwrap().pop_front()
    }
    fn has_work(&self) -> bool {
        !self.queue.lock().unwrap().is_empty()
    }
    /// Runs on the yielding g's stack, with the g's state, so it records nothing.
    fn on_yield_next(&self, g: GRef, _p: PId) -> Option<GRef> {
        let mut queue = self.queue.lock().unwrap();
        queue.push_back(g);
        queue.pop_front()
    }
    fn on_park(&self, _g: GRef, _p: PId) {
        self.record("on_park");
    }
    fn on_exit(&self, _g: GRef, _p: PId) {
        self.record("on_exit");
    }
}

/// Scheduler hooks on g0 see the default FP state and no status flag, whatever the gs install.
#[test]
fn g0_hooks_run_with_defaults() {
    // Workers in every state of STATES yield, park, make syscalls and exit with a flag raised
    // on 3 Ps, whose M threads were started by a thread in another state.
    let recorder = Arc::new(G0Recorder::default());
    let scheduler = recorder.clone();
    let reports = watchdog(LIMIT, move || {
        let _restore = RestoreDefaults;
        // SAFETY: the state keeps the exceptions masked; `_restore` reinstates the defaults.
        unsafe { STATES[10].1.install() };
        // Built after the install, so that every M thread it starts here inherits the state.
        let rt = Runtime::builder()
            .procs(3)
            // SAFETY: the test only reads what the scheduler records, through `recorder`.
            .scheduler_handle(unsafe { SchedHandle::from_arc(scheduler) })
            .build()
            .unwrap();
        let handles: Vec<_> = STATES
            .iter()
            .map(|&(name, state)| {
                let handle = rt
                    .spawn(move || {
                        let report = worker(state, 36);
                        // Leaves with the precision flag raised, so that g0 runs `on_exit`
                        // right after a switch from a g whose flags differ from g0's.
                        // SAFETY: only status flags change.
                        unsafe {
                            FpState::new(state.mxcsr | MXCSR_PRECISION_FLAG, 0x037F).install()
                        };
                        report
                    })
                    .unwrap();
                (name, handle)
            })
            .collect();
        handles
            .into_iter()
            .map(|(name, handle)| (name, handle.join().unwrap()))
            .collect::<Vec<_>>()
    });
    drop(reports);
    // Relaxed: the workers were joined, which orders the hooks' writes before this read.
    let calls = recorder.calls.load(Ordering::Relaxed);
    assert!(calls > 100, "the g0 hooks ran only {calls} times");
    let odd = recorder.odd_states.lock().unwrap();
    assert!(
        odd.is_empty(),
        "{} of {calls} g0 hook calls ran without the default state: {:?}",
        odd.len(),
        &odd[..odd.len().min(10)]
    );
}

/// On x86_64 each goroutine keeps its own MXCSR status flags across switches.
#[test]
fn status_flags_stay_with_their_goroutine() {
    for scheduler in ["fifo", "worksteal"] {
        let rt = build_with_scheduler(Runtime::builder().procs(1), scheduler);
        let (raised, clear) = watchdog(LIMIT, move || {
            rt.block_on(|| {
                let stop = Arc::new(AtomicBool::new(false));
                let clear = {
                    let stop = stop.clone();
                    goro::spawn(move || {
                        let mut seen = Vec::new();
                        // SAFETY: the defaults, with no flag raised.
                        unsafe { FpState::DEFAULT.install() };
                        // Acquire: pairs with the Release store below; only the flag matters.
                        while !stop.load(Ordering::Acquire) {
                            goro::yield_now();
                            let now = FpState::read();
                            if now.mxcsr & MXCSR_FLAGS != 0 {
                                seen.push(now);
                            }
                        }
                        seen
                    })
                    .unwrap()
                };
                let raised = goro::spawn(|| {
                    let _restore = RestoreDefaults;
                    let raised = FpState::new(0x1F80 | MXCSR_PRECISION_FLAG, 0x037F);
                    let toward_zero = FpState::new(0x7F80 | MXCSR_PRECISION_FLAG, 0x037F);
                    let mut lost = Vec::new();
                    for round in 0..120 {
                        // Alternates between the defaults with a flag raised and a changed
                        // rounding mode with a flag raised.
                        let state = if round % 2 == 0 { raised } else { toward_zero };
                        // SAFETY: every exception stays masked.
                        unsafe { state.install() };
                        match round % 3 {
                            0 => goro::yield_now(),
                            1 => goro::blocking_known(|| ()),
                            _ => goro::sleep(Duration::from_micros(100)),
                        }
                        let now = FpState::read();
                        if now != state {
                            lost.push((round, now));
                        }
                    }
                    lost
                })
                .unwrap()
                .join()
                .unwrap();
                // Release: see the Acquire above.
                stop.store(true, Ordering::Release);
                (raised, clear.join().unwrap())
            })
            .unwrap()
        });
        assert!(
            raised.is_empty(),
            "{scheduler}: the goroutine with a raised flag lost its state: {raised:?}"
        );
        assert!(
            clear.is_empty(),
            "{scheduler}: the goroutine with clear flags saw flags raised: {clear:?}"
        );
    }
}

/// A coroutine and the goroutine that resumes it keep their FP states as it moves between Ms.
#[test]
fn coroutine_in_moving_goroutine_keeps_state() {
    const STACK_WORDS: usize = 64 * 1024;
    let rt = Runtime::builder().procs(1).build().unwrap();
    let (coroutine_seen, goroutine_lost, threads) = watchdog(LIMIT, move || {
        rt.block_on(|| {
            let stop = Arc::new(AtomicBool::new(false));
            // Holds the only P, so the goroutine below resumes on another M after each
            // blocking call (see common::forced_migration).
            let spinner = {
                let stop = stop.clone();
                goro::spawn(move || {
                    // Acquire: pairs with the Release store below; only the flag matters.
                    while !stop.load(Ordering::Acquire) {
                        goro::yield_now();
                    }
                })
                .unwrap()
            };
            let outer = goro::spawn(|| {
                let _restore = RestoreDefaults;
                let goroutine_state = STATES[3].1;
                let coroutine_state = STATES[8].1;
                // u128 words keep the stack 16-byte aligned.
                let mut stack = vec![0u128; STACK_WORDS];
                let range = stack.as_mut_ptr_range();
                let body = move |yielder: &Yielder<(), FpState>, ()| {
                    let _restore = RestoreDefaults;
                    let at_start = FpState::read().control();
                    // SAFETY: every exception stays masked.
                    unsafe { coroutine_state.install() };
                    let mut seen = vec![at_start];
                    for _ in 0..10 {
                        yielder.suspend(FpState::read().control());
                        seen.push(FpState::read().control());
                    }
                    seen
                };
                // SAFETY: the stack outlives the coroutine, which is finished before the
                // goroutine returns, and nothing else uses it.
                let mut coroutine =
                    unsafe { Coroutine::new(range.start as usize, range.end as usize, body) };
                // SAFETY: every exception stays masked.
                unsafe { goroutine_state.install() };
                let mut lost = Vec::new();
                let mut threads = HashSet::new();
                let mut yielded = Vec::new();
                loop {
                    threads.insert(gettid());
                    match coroutine.resume(()).unwrap() {
                        CoroutineResult::Yield(state) => yielded.push(state),
                        CoroutineResult::Return(mut seen) => {
                            seen.extend(yielded);
                            let now = FpState::read().control();
                            if now != goroutine_state {
                                lost.push(now);
                            }
                            return (seen, lost, threads);
                        }
                    }
                    let now = FpState::read().control();
                    if now != goroutine_state {
                        lost.push(now);
                    }
                    goro::blocking_known(|| std::thread::sleep(Duration::from_millis(1)));
                    goro::yield_now();
                    let now = FpState::read().control();
                    if now != goroutine_state {
                        lost.push(now);
                    }
                }
            })
            .unwrap()
            .join()
            .unwrap();
            // Release: see the spinner's Acquire.
            stop.store(true, Ordering::Release);
            spinner.join().unwrap();
            outer
        })
        .unwrap()
    });
    assert_eq!(
        coroutine_seen[0],
        FpState::DEFAULT,
        "the coroutine did not start with the defaults"
    );
    assert!(
        coroutine_seen[1..]
            .iter()
            .all(|&state| state == STATES[8].1),
        "the coroutine lost its state: {coroutine_seen:?}"
    );
    assert!(
        goroutine_lost.is_empty(),
        "the goroutine around the coroutine lost its state: {goroutine_lost:?}"
    );
    assert!(
        threads.len() > 1,
        "the goroutine resumed the coroutine on one thread only"
    );
}
