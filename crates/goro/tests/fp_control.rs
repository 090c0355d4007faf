//! FP control state in the runtime: a goroutine keeps its own across yields and moves to other
//! Ms, while a fresh goroutine and every M's g0 run with the defaults.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use common::{LIMIT, gettid, watchdog};
use goro::{Runtime, SchedHandle, Scheduler};
use goro_sched::{GQueue, GRef, PId, ReadyCause};

/// Reads and installs the control part of the FP state: the rounding mode and, where the
/// architecture has them, the flush-to-zero and exception-mask bits.
#[cfg(target_arch = "x86_64")]
mod fp {
    use std::arch::asm;

    /// MXCSR control bits (status flags masked out) and the x87 control word.
    pub type Control = (u32, u16);

    pub const DEFAULT: Control = (0x1F80, 0x037F);
    /// Round toward zero in both MXCSR (bits 13-14) and the x87 control word (bits 10-11).
    pub const TOWARD_ZERO: Control = (0x7F80, 0x0F7F);

    pub fn read() -> Control {
        let mut mxcsr = 0u32;
        let mut control_word = 0u16;
        // SAFETY: both instructions only store to the given locals.
        unsafe {
            asm!(
                "stmxcsr [{mxcsr}]",
                "fnstcw [{control_word}]",
                mxcsr = in(reg) &raw mut mxcsr,
                control_word = in(reg) &raw mut control_word,
                options(nostack, preserves_flags),
            )
        };
        (mxcsr & 0xFFC0, control_word)
    }

    /// # Safety
    ///
    /// `control` must keep every FP exception masked.
    pub unsafe fn install(control: Control) {
        // SAFETY: the caller keeps the exceptions masked; both loads read the given locals.
        unsafe {
            asm!(
                "ldmxcsr [{mxcsr}]",
                "fldcw [{control_word}]",
                mxcsr = in(reg) &raw const control.0,
                control_word = in(reg) &raw const control.1,
                options(nostack, preserves_flags),
            )
        };
    }
}

#[cfg(target_arch = "aarch64")]
mod fp {
    use std::arch::asm;

    /// FPCR.
    pub type Control = u64;

    pub const DEFAULT: Control = 0;
    /// FPCR.RMode (bits 22-23) = 0b11, round toward zero.
    pub const TOWARD_ZERO: Control = 0x00C0_0000;

    pub fn read() -> Control {
        let fpcr: u64;
        // SAFETY: reading FPCR has no side effect.
        unsafe { asm!("mrs {}, fpcr", out(reg) fpcr, options(nomem, nostack, preserves_flags)) };
        fpcr
    }

    /// # Safety
    ///
    /// `control` must enable no FP exception trap.
    pub unsafe fn install(control: Control) {
        // SAFETY: the caller enables no trap.
        unsafe { asm!("msr fpcr, {}", in(reg) control, options(nomem, nostack, preserves_flags)) };
    }
}

#[cfg(target_arch = "riscv64")]
mod fp {
    use std::arch::asm;

    /// `frm`, the dynamic rounding mode.
    pub type Control = u64;

    pub const DEFAULT: Control = 0;
    /// RTZ, round toward zero.
    pub const TOWARD_ZERO: Control = 1;

    pub fn read() -> Control {
        let frm: u64;
        // SAFETY: reading frm has no side effect.
        unsafe { asm!("frrm {}", out(reg) frm, options(nomem, nostack, preserves_flags)) };
        frm
    }

    /// # Safety
    ///
    /// `control` must be a valid rounding mode (0-4).
    pub unsafe fn install(control: Control) {
        // SAFETY: the caller passes a valid rounding mode; fsrm leaves fflags alone.
        unsafe { asm!("fsrm {}", in(reg) control, options(nomem, nostack, preserves_flags)) };
    }
}

/// A FIFO scheduler that records the FP control state that g0 runs with: `next` is called
/// only from an M's scheduling loop on g0.
#[derive(Default)]
struct G0Observer {
    queue: Mutex<GQueue>,
    nexts: AtomicUsize,
    nexts_without_defaults: AtomicUsize,
    yield_nexts: AtomicUsize,
}

// SAFETY: `next` pops what `ready` pushed.
unsafe impl Scheduler for G0Observer {
    fn name(&self) -> &'static str {
        "g0-observer"
    }
    fn ready(&self, g: GRef, _cause: ReadyCause, _p: Option<PId>) {
        self.queue.lock().unwrap().push_back(g);
    }
    fn next(&self, _p: PId) -> Option<GRef> {
        // Relaxed: plain counters, read after the runtime's threads have been joined.
        self.nexts.fetch_add(1, Ordering::Relaxed);
        if fp::read() != fp::DEFAULT {
            self.nexts_without_defaults.fetch_add(1, Ordering::Relaxed);
        }
        self.queue.lock().unwrap().pop_front()
    }
    /// A yield asks for the next g on the yielding g's own stack, which runs with the g's
    /// state, so only `next` calls from g0 are checked.
    fn on_yield_next(&self, g: GRef, _p: PId) -> Option<GRef> {
        // Relaxed: as in `next`.
        self.yield_nexts.fetch_add(1, Ordering::Relaxed);
        let mut queue = self.queue.lock().unwrap();
        queue.push_back(g);
        queue.pop_front()
    }
    fn has_work(&self) -> bool {
        !self.queue.lock().unwrap().is_empty()
    }
}

/// What the probe goroutine observed.
#[derive(Debug)]
struct ProbeReport {
    after_yields: Vec<fp::Control>,
    fresh_child: fp::Control,
    thread_before_move: i64,
    thread_after_move: i64,
    after_move: fp::Control,
}

/// Installs round-toward-zero, then yields, spawns a child and moves to another M, recording
/// its own state after each step. Restores the defaults before it returns.
fn probe() -> ProbeReport {
    // SAFETY: round-toward-zero keeps exceptions masked; the probe restores the defaults.
    unsafe { fp::install(fp::TOWARD_ZERO) };
    let after_yields = (0..20)
        .map(|_| {
            goro::yield_now();
            fp::read()
        })
        .collect();
    let fresh_child = goro::spawn(fp::read).unwrap().join().unwrap();

    // The blocking call hands the only P to another M, so the probe resumes on another thread
    // (see common::forced_migration).
    let thread_before_move = gettid();
    goro::blocking_known(|| std::thread::sleep(std::time::Duration::from_millis(5)));
    let thread_after_move = gettid();
    let after_move = fp::read();

    // SAFETY: the defaults are what the rest of the process expects.
    unsafe { fp::install(fp::DEFAULT) };
    ProbeReport {
        after_yields,
        fresh_child,
        thread_before_move,
        thread_after_move,
        after_move,
    }
}

#[test]
fn goroutine_keeps_fp_control_and_g0_gets_defaults() {
    let observer = Arc::new(G0Observer::default());
    let rt = Runtime::builder()
        .procs(1)
        // SAFETY: the test only reads what the scheduler records, through `observer`.
        .scheduler_handle(unsafe { SchedHandle::from_arc(observer.clone()) })
        .build()
        .unwrap();
    let (report, spinner_states) = watchdog(LIMIT, move || {
        rt.block_on(|| {
            let stop = Arc::new(AtomicBool::new(false));
            // The spinner keeps the P busy, so the probe's M parks after the blocking call,
            // and it checks that the probe's state never leaks into another goroutine.
            let spinner = {
                let stop = stop.clone();
                goro::spawn(move || {
                    let mut states = Vec::new();
                    // Acquire pairs with the Release store below; only the flag matters.
                    while !stop.load(Ordering::Acquire) {
                        states.push(fp::read());
                        goro::yield_now();
                    }
                    states
                })
                .unwrap()
            };
            let report = goro::spawn(probe).unwrap().join().unwrap();
            // Release: see the spinner's Acquire.
            stop.store(true, Ordering::Release);
            (report, spinner.join().unwrap())
        })
        .unwrap()
    });

    assert!(
        report
            .after_yields
            .iter()
            .all(|&state| state == fp::TOWARD_ZERO),
        "the probe lost its state across a yield: {:?}",
        report.after_yields
    );
    assert_eq!(
        report.fresh_child,
        fp::DEFAULT,
        "a fresh goroutine inherited its spawner's state"
    );
    assert_ne!(
        report.thread_before_move, report.thread_after_move,
        "the probe did not move to another M"
    );
    assert_eq!(
        report.after_move,
        fp::TOWARD_ZERO,
        "the probe lost its state when it moved to another M"
    );
    assert!(!spinner_states.is_empty(), "the spinner never ran");
    assert!(
        spinner_states.iter().all(|&state| state == fp::DEFAULT),
        "another goroutine ran with the probe's state: {spinner_states:?}"
    );
    // Relaxed: the runtime's threads are done, and block_on's return ordered their writes.
    // g0 picks the next g after each start of a fresh g, park and exit; the yields switch
    // straight from g to g.
    let nexts = observer.nexts.load(Ordering::Relaxed);
    assert!(nexts > 5, "g0 scheduled only {nexts} times");
    let yield_nexts = observer.yield_nexts.load(Ordering::Relaxed);
    assert!(
        yield_nexts >= 20,
        "only {yield_nexts} yields reached on_yield_next"
    );
    assert_eq!(
        observer.nexts_without_defaults.load(Ordering::Relaxed),
        0,
        "g0 ran without the default FP control state"
    );
}
