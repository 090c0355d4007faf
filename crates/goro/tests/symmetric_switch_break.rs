//! Attacks on the direct switch of a yield, which resumes the next goroutine with
//! `goro_context::switch_symmetric` (`ret` on x86_64) although that goroutine may have been
//! suspended elsewhere: parked through g0, never started (its trampoline), or unwinding a
//! panic whose destructors yield. Each goroutine checks after every yield that `getg()` still
//! names it, that its locals survived, and that its own FP control state came back.

mod common;

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use common::{LIMIT, build_with_scheduler, watchdog};

/// Reads MXCSR and the x87 control word (on x86_64), packed as in the switch's FP slot.
#[cfg(target_arch = "x86_64")]
fn fp_control() -> u64 {
    let mut mxcsr = 0u32;
    let mut control_word = 0u16;
    // SAFETY: both instructions only store the current state into the locals.
    unsafe {
        core::arch::asm!(
            "stmxcsr [{m}]",
            "fnstcw [{c}]",
            m = in(reg) &raw mut mxcsr,
            c = in(reg) &raw mut control_word,
            options(nostack),
        )
    };
    mxcsr as u64 | (control_word as u64) << 32
}

/// Installs a rounding mode chosen by `seed` in MXCSR and the x87 control word.
#[cfg(target_arch = "x86_64")]
fn install_fp_control(seed: u64) -> u64 {
    let mxcsr: u32 = 0x1F80 | (((seed & 3) as u32) << 13);
    let control_word: u16 = 0x037F | (((seed >> 2 & 3) as u16) << 10);
    // SAFETY: every exception stays masked and no reserved bit is set.
    unsafe {
        core::arch::asm!(
            "ldmxcsr [{m}]",
            "fldcw [{c}]",
            m = in(reg) &raw const mxcsr,
            c = in(reg) &raw const control_word,
            options(nostack),
        )
    };
    fp_control()
}

#[cfg(not(target_arch = "x86_64"))]
fn fp_control() -> u64 {
    0
}

#[cfg(not(target_arch = "x86_64"))]
fn install_fp_control(_seed: u64) -> u64 {
    0
}

/// Yields `yields` times and checks the goroutine's identity, locals and FP state after each.
fn checked_yields(seed: u64, yields: u64) {
    let me = goro::getg() as usize;
    let state = install_fp_control(seed);
    let frame = [seed; 16];
    let mut sum = 0u64;
    for round in 0..yields {
        sum = black_box(sum.wrapping_add(seed ^ round));
        goro::yield_now();
        assert_eq!(goro::getg() as usize, me, "goroutine {seed}: getg changed");
        assert_eq!(
            fp_control(),
            state,
            "goroutine {seed}: FP control state changed"
        );
        assert!(
            black_box(&frame).iter().all(|&v| v == seed),
            "goroutine {seed}: stack changed"
        );
        let expected = (0..=round).fold(0u64, |acc, r| acc.wrapping_add(seed ^ r));
        assert_eq!(sum, expected, "goroutine {seed}: a local changed");
    }
    install_fp_control(0);
}

/// Destructor that yields while its goroutine unwinds.
struct YieldOnDrop(u64);

impl Drop for YieldOnDrop {
    fn drop(&mut self) {
        checked_yields(self.0, 50);
    }
}

/// Yielders take turns with goroutines that park on a channel, goroutines spawned right
/// before a yield (which a yield may start through their trampoline), and goroutines whose
/// destructors yield during a panic.
fn mixed_storm(procs: usize, scheduler: &'static str) {
    let done = Arc::new(AtomicU64::new(0));
    let counted = Arc::clone(&done);
    watchdog(LIMIT, move || {
        let builder = goro::Runtime::builder().procs(procs);
        let rt = build_with_scheduler(builder, scheduler);
        rt.block_on(move || {
            let (sender, receiver) = goro::sync::channel::<u64>(0);
            let mut handles = Vec::new();
            for index in 0..8u64 {
                let counted = Arc::clone(&counted);
                let receiver = receiver.clone();
                handles.push(
                    goro::spawn(move || {
                        let me = goro::getg() as usize;
                        let state = install_fp_control(index + 5);
                        for _ in 0..200 {
                            let value = receiver.recv().unwrap();
                            assert_eq!(goro::getg() as usize, me, "parker {index}: getg changed");
                            assert_eq!(fp_control(), state, "parker {index}: FP state changed");
                            black_box(value);
                        }
                        install_fp_control(0);
                        counted.fetch_add(1, Ordering::Relaxed);
                    })
                    .unwrap(),
                );
            }
            for index in 0..8u64 {
                let counted = Arc::clone(&counted);
                let sender = sender.clone();
                handles.push(
                    goro::spawn(move || {
                        for round in 0..200u64 {
                            // A fresh goroutine that the next yield may start directly.
                            let fresh =
                                goro::spawn(move || checked_yields(index * 7 + round, 3)).unwrap();
                            checked_yields(100 + index, 2);
                            sender.send(round).unwrap();
                            fresh.join().unwrap();
                        }
                        counted.fetch_add(1, Ordering::Relaxed);
                    })
                    .unwrap(),
                );
            }
            for index in 0..4u64 {
                let counted = Arc::clone(&counted);
                handles.push(
                    goro::spawn(move || {
                        for _ in 0..20 {
                            let unwound = std::panic::catch_unwind(|| {
                                let _guard = YieldOnDrop(200 + index);
                                panic!("deliberate panic of the yield-in-drop goroutine");
                            });
                            assert!(unwound.is_err());
                            checked_yields(300 + index, 5);
                        }
                        counted.fetch_add(1, Ordering::Relaxed);
                    })
                    .unwrap(),
                );
            }
            drop(sender);
            for handle in handles {
                handle.join().unwrap();
            }
        })
        .unwrap();
    });
    assert_eq!(done.load(Ordering::Relaxed), 20);
}

#[test]
fn mixed_storm_one_p_fifo() {
    mixed_storm(1, "fifo");
}

#[test]
fn mixed_storm_one_p_steal() {
    mixed_storm(1, "steal");
}

#[test]
fn mixed_storm_two_ps_fifo() {
    mixed_storm(2, "fifo");
}

#[test]
fn mixed_storm_two_ps_steal() {
    mixed_storm(2, "steal");
}
