//! Callee-saved registers and the FP control state survive a switch, on both sides.
//!
//! Two kinds of test:
//!
//! - `junk_*` fill every callee-saved register and the FP control registers with distinct junk
//!   in assembly (`common::switch_with_junk`) and check them after the switch. They do not
//!   depend on the compiler's register allocation, so they behave the same at every opt-level.
//! - `live_values_*` keep many integer and float locals live across `switch` calls in Rust.
//!   At opt-level 0 the compiler keeps them on the stack. At opt-level 3 it keeps them in
//!   callee-saved registers, so a register that `switch` fails to restore changes the result.
//!   `cargo test` covers opt-level 0 and `cargo test --release` covers opt-level 3; `cargo
//!   xtask test-all-arches` runs both profiles on every architecture.

mod common;

use std::hint::black_box;

use common::{FpControl, JunkCheck, RawSwitch, switch_with_junk};
use goro_context::{EntryFn, init_stack, init_stack_without_fp, switch, switch_without_fp};

const ROUNDS: u64 = 200;
const STACK_SIZE: usize = 256 * 1024;

/// The contexts of a ring: main resumes member 0, member 0 resumes member 1, and the last
/// member resumes main, each through `switch_with_junk`.
struct Ring {
    mode: RingMode,
    main_sp: usize,
    member_sps: [usize; 2],
    member_mismatches: [u64; 2],
    member_rounds: [u64; 2],
}

/// Per-context `data`: which ring, and the member's index in it.
struct Member {
    ring: *mut Ring,
    index: usize,
}

/// The switches of a ring and the FP control state that each side installs.
#[derive(Clone, Copy)]
struct RingMode {
    /// The function that lays out each member's fresh context.
    init_stack: unsafe fn(usize, usize, EntryFn, usize) -> usize,
    /// The switch from main to member 0.
    main_switch: RawSwitch,
    /// The switch from each member to the next, and from the last member to main.
    member_switch: RawSwitch,
    main_fp_control: FpControl,
    member_fp_controls: [FpControl; 2],
}

impl RingMode {
    /// `switch` everywhere, and a different FP control state on each side.
    const FULL: RingMode = RingMode {
        init_stack,
        main_switch: goro_context::raw::switch,
        member_switch: goro_context::raw::switch,
        main_fp_control: FpControl::ROUND_DOWN,
        member_fp_controls: [FpControl::ROUND_TO_ZERO_FLUSH, FpControl::DEFAULT],
    };

    /// Main is a g0: it runs with the defaults and enters the ring with `switch_from_g0`, and
    /// the last member returns with `switch_to_g0` while it runs with another state.
    const G0: RingMode = RingMode {
        init_stack,
        main_switch: goro_context::raw::switch_load_fp,
        member_switch: goro_context::raw::switch,
        main_fp_control: FpControl::DEFAULT,
        member_fp_controls: [FpControl::ROUND_TO_ZERO_FLUSH, FpControl::ROUND_DOWN],
    };

    /// `switch_always_load_fp` everywhere, which `switch` runs on CPUs other than Intel's.
    #[cfg(target_arch = "x86_64")]
    const ALWAYS_LOAD_FP: RingMode = RingMode {
        main_switch: goro_context::raw::switch_always_load_fp,
        member_switch: goro_context::raw::switch_always_load_fp,
        ..RingMode::FULL
    };

    /// `switch_compare_fp` everywhere, with the same state on main and member 0, so that the
    /// switch between them skips the FP loads while the others make them.
    #[cfg(target_arch = "x86_64")]
    const COMPARE_FP: RingMode = RingMode {
        init_stack,
        main_switch: goro_context::raw::switch_compare_fp,
        member_switch: goro_context::raw::switch_compare_fp,
        main_fp_control: FpControl::ROUND_DOWN,
        member_fp_controls: [FpControl::ROUND_DOWN, FpControl::ROUND_TO_ZERO_FLUSH],
    };

    /// Main is a g0 that enters the ring with `switch_from_g0` and a member with the defaults,
    /// so that switch skips the FP loads. The members switch with `switch_compare_fp`.
    #[cfg(target_arch = "x86_64")]
    const G0_COMPARE_FP: RingMode = RingMode {
        init_stack,
        main_switch: goro_context::raw::switch_load_fp,
        member_switch: goro_context::raw::switch_compare_fp,
        main_fp_control: FpControl::DEFAULT,
        member_fp_controls: [FpControl::DEFAULT, FpControl::ROUND_TO_ZERO_FLUSH],
    };

    /// `switch_symmetric` everywhere: every side switches from the one call site in
    /// `switch_with_junk`, the case that the function is for.
    const SYMMETRIC: RingMode = RingMode {
        main_switch: goro_context::raw::switch_symmetric,
        member_switch: goro_context::raw::switch_symmetric,
        ..RingMode::FULL
    };

    /// `switch_without_fp` everywhere, on light contexts, and the defaults on every side.
    const WITHOUT_FP: RingMode = RingMode {
        init_stack: init_stack_without_fp,
        main_switch: switch_without_fp_outlined,
        member_switch: switch_without_fp_outlined,
        main_fp_control: FpControl::DEFAULT,
        member_fp_controls: [FpControl::DEFAULT, FpControl::DEFAULT],
    };
}

/// `switch_without_fp` in a function of its own, which `switch_with_junk` can call. The
/// compiler saves the registers that the inline asm declares clobbered in this function's
/// prologue, so a clobber missing from the asm shows as a changed register.
///
/// # Safety
///
/// That of `switch_without_fp`.
#[inline(never)]
unsafe extern "C" fn switch_without_fp_outlined(
    save_sp: *mut usize,
    resume_sp: usize,
    arg: usize,
) -> usize {
    // SAFETY: the caller upholds switch_without_fp's contract.
    unsafe { switch_without_fp(save_sp, resume_sp, arg) }
}

unsafe extern "C" fn ring_member(mut arg: usize, data: usize) -> ! {
    // SAFETY: `data` is a Member that outlives the ring's contexts.
    let member = unsafe { &*(data as *const Member) };
    let ring = member.ring;
    let index = member.index;
    loop {
        // SAFETY: the ring outlives its contexts, and only the running context touches it.
        let next_sp = unsafe {
            if index + 1 < (*ring).member_sps.len() {
                (*ring).member_sps[index + 1]
            } else {
                (*ring).main_sp
            }
        };
        // SAFETY: as above.
        let mode = unsafe { (*ring).mode };
        let mut check = JunkCheck {
            seed: 0x1000_0000_0000_0000 * (index as u64 + 2) + (arg as u64) * 0x100,
            fp_control: mode.member_fp_controls[index].to_raw(),
            mismatches: 0,
            switch: mode.member_switch,
        };
        // SAFETY: `next_sp` is the saved stack pointer of the next suspended ring member (or
        // main), and this member's slot is valid for writes.
        arg = unsafe {
            switch_with_junk(
                &raw mut (*ring).member_sps[index],
                next_sp,
                arg + 1,
                &mut check,
            )
        };
        // SAFETY: as above.
        unsafe {
            (*ring).member_mismatches[index] |= check.mismatches;
            (*ring).member_rounds[index] += 1;
        }
    }
}

#[test]
fn junk_survives_ring_of_contexts() {
    check_ring(RingMode::FULL);
}

#[test]
fn junk_survives_g0_ring() {
    check_ring(RingMode::G0);
}

#[test]
#[cfg(target_arch = "x86_64")]
fn junk_survives_ring_of_always_loading_switches() {
    check_ring(RingMode::ALWAYS_LOAD_FP);
}

#[test]
#[cfg(target_arch = "x86_64")]
fn junk_survives_ring_of_comparing_switches() {
    check_ring(RingMode::COMPARE_FP);
}

#[test]
#[cfg(target_arch = "x86_64")]
fn junk_survives_g0_ring_of_comparing_switches() {
    check_ring(RingMode::G0_COMPARE_FP);
}

#[test]
fn junk_survives_ring_of_symmetric_switches() {
    check_ring(RingMode::SYMMETRIC);
}

#[test]
fn junk_survives_ring_without_fp() {
    check_ring(RingMode::WITHOUT_FP);
}

/// Runs `ROUNDS` rounds of a ring of two members in `mode`, checking every side's registers.
fn check_ring(mode: RingMode) {
    let stacks = [
        common::TestStack::new(STACK_SIZE),
        common::TestStack::new(STACK_SIZE),
    ];
    let mut ring = Ring {
        mode,
        main_sp: 0,
        member_sps: [0; 2],
        member_mismatches: [0; 2],
        member_rounds: [0; 2],
    };
    let ring_ptr = &raw mut ring;
    let members = [0, 1].map(|index| Member {
        ring: ring_ptr,
        index,
    });
    for (index, stack) in stacks.iter().enumerate() {
        // SAFETY: each stack is owned by its context and outlives it.
        let sp = unsafe {
            (mode.init_stack)(
                stack.lo(),
                stack.hi(),
                ring_member,
                &raw const members[index] as usize,
            )
        };
        // SAFETY: nothing else accesses the ring yet.
        unsafe { (*ring_ptr).member_sps[index] = sp };
    }

    for round in 0..ROUNDS {
        let mut check = JunkCheck {
            seed: 0x0100_0000_0000_0000 + round * 0x100,
            fp_control: mode.main_fp_control.to_raw(),
            mismatches: 0,
            switch: mode.main_switch,
        };
        let sent = round as usize * 10;
        // SAFETY: member 0 is suspended (fresh or in its own switch_with_junk), and its stack
        // is alive.
        let received = unsafe {
            switch_with_junk(
                &raw mut (*ring_ptr).main_sp,
                (*ring_ptr).member_sps[0],
                sent,
                &mut check,
            )
        };
        assert_eq!(
            check.changed_registers(),
            Vec::<&str>::new(),
            "main's registers changed across round {round}"
        );
        assert_eq!(received, sent + 2, "each ring member adds 1 to the value");
    }

    // SAFETY: the contexts are suspended and never resumed again.
    let ring = unsafe { &*ring_ptr };
    for index in 0..2 {
        let changed = JunkCheck {
            mismatches: ring.member_mismatches[index],
            ..JunkCheck::default()
        }
        .changed_registers();
        assert_eq!(
            changed,
            Vec::<&str>::new(),
            "registers of ring member {index} changed"
        );
    }
    // The last switch of each member has not returned yet.
    assert_eq!(ring.member_rounds, [ROUNDS - 1, ROUNDS - 1]);
    assert_eq!(FpControl::read().control_bits(), FpControl::DEFAULT);
}

/// Saved stack pointers of a main side and one context, and the context's result.
struct Pair {
    main_sp: usize,
    context_sp: usize,
    context_checksum: u64,
}

/// Runs `rounds` switches from `save_sp` to the stack pointer stored at `resume_sp`, while
/// twelve integers and eight floats are live, and returns a checksum of their final values.
/// With `save_sp` null it does the same arithmetic without switching. `LIGHT` selects
/// `switch_without_fp` between light contexts instead of `switch`.
#[inline(always)]
fn juggle<const LIGHT: bool>(
    save_sp: *mut usize,
    resume_sp: *const usize,
    seed: u64,
    rounds: u64,
) -> u64 {
    let mut i0 = black_box(seed);
    let mut i1 = black_box(seed ^ 0x1111);
    let mut i2 = black_box(seed ^ 0x2222);
    let mut i3 = black_box(seed ^ 0x3333);
    let mut i4 = black_box(seed ^ 0x4444);
    let mut i5 = black_box(seed ^ 0x5555);
    let mut i6 = black_box(seed ^ 0x6666);
    let mut i7 = black_box(seed ^ 0x7777);
    let mut i8 = black_box(seed ^ 0x8888);
    let mut i9 = black_box(seed ^ 0x9999);
    let mut i10 = black_box(seed ^ 0xAAAA);
    let mut i11 = black_box(seed ^ 0xBBBB);
    let mut f0 = black_box(seed as f64 * 0.25);
    let mut f1 = black_box(seed as f64 * 0.5);
    let mut f2 = black_box(1.0 + (seed % 7) as f64);
    let mut f3 = black_box(2.0 + (seed % 11) as f64);
    let mut f4 = black_box(3.0 + (seed % 13) as f64);
    let mut f5 = black_box(4.0 + (seed % 17) as f64);
    let mut f6 = black_box(5.0 + (seed % 19) as f64);
    let mut f7 = black_box(6.0 + (seed % 23) as f64);

    for round in 0..rounds {
        if !save_sp.is_null() {
            // SAFETY: the caller passes the slots of a live pair of contexts.
            unsafe { switch_pair::<LIGHT>(save_sp, *resume_sp) };
        }
        i0 = i0.wrapping_mul(3).wrapping_add(round);
        i1 = i1.rotate_left(5) ^ i0;
        i2 = i2.wrapping_add(i1);
        i3 = i3.wrapping_mul(5) ^ i2;
        i4 = i4.rotate_right(7).wrapping_add(i3);
        i5 ^= i4.wrapping_mul(9);
        i6 = i6.wrapping_add(i5 >> 3);
        i7 = i7.wrapping_mul(11) ^ i6;
        i8 = i8.rotate_left(13).wrapping_add(i7);
        i9 ^= i8 >> 5;
        i10 = i10.wrapping_add(i9.wrapping_mul(17));
        i11 = i11.rotate_right(3) ^ i10;
        f0 = f0 * 0.75 + f7;
        f1 = f1 * 0.5 + f0;
        f2 = f2 * 0.25 + f1;
        f3 = f3 * 0.125 + f2;
        f4 = f4 * 0.625 + f3;
        f5 = f5 * 0.375 + f4;
        f6 = f6 * 0.875 + f5;
        f7 = f7 * 0.0625 + f6 + 1.0;
    }

    let integers = [i0, i1, i2, i3, i4, i5, i6, i7, i8, i9, i10, i11];
    let floats = [f0, f1, f2, f3, f4, f5, f6, f7];
    integers
        .into_iter()
        .chain(floats.into_iter().map(f64::to_bits))
        .fold(0xcbf2_9ce4_8422_2325, |hash, word| {
            (hash ^ word).wrapping_mul(0x0000_0100_0000_01b3)
        })
}

/// Switches with `switch_without_fp` when `LIGHT` is set, and with `switch` otherwise.
///
/// # Safety
///
/// That of the switch it uses.
#[inline(always)]
unsafe fn switch_pair<const LIGHT: bool>(save_sp: *mut usize, resume_sp: usize) {
    if LIGHT {
        // SAFETY: the caller upholds switch_without_fp's contract.
        unsafe { switch_without_fp(save_sp, resume_sp, 0) };
    } else {
        // SAFETY: the caller upholds switch's contract.
        unsafe { switch(save_sp, resume_sp, 0) };
    }
}

#[inline(never)]
fn juggle_not_inlined<const LIGHT: bool>(
    save_sp: *mut usize,
    resume_sp: *const usize,
    seed: u64,
    rounds: u64,
) -> u64 {
    juggle::<LIGHT>(save_sp, resume_sp, seed, rounds)
}

const CONTEXT_SEED: u64 = 0xFEED_F00D;
const MAIN_SEED: u64 = 0xC0FF_EE00;

unsafe extern "C" fn live_values_context<const LIGHT: bool>(_arg: usize, data: usize) -> ! {
    let pair = data as *mut Pair;
    // SAFETY: `data` points to the Pair, which outlives this context.
    let (save_sp, resume_sp) = unsafe { (&raw mut (*pair).context_sp, &raw const (*pair).main_sp) };
    let checksum = juggle::<LIGHT>(save_sp, resume_sp, CONTEXT_SEED, ROUNDS);
    // SAFETY: as above; main is suspended waiting for the checksum.
    unsafe {
        (*pair).context_checksum = checksum;
        loop {
            switch_pair::<LIGHT>(save_sp, *resume_sp);
        }
    }
}

unsafe extern "C" fn live_values_context_not_inlined<const LIGHT: bool>(
    _arg: usize,
    data: usize,
) -> ! {
    let pair = data as *mut Pair;
    // SAFETY: `data` points to the Pair, which outlives this context.
    let (save_sp, resume_sp) = unsafe { (&raw mut (*pair).context_sp, &raw const (*pair).main_sp) };
    let checksum = juggle_not_inlined::<LIGHT>(save_sp, resume_sp, CONTEXT_SEED, ROUNDS);
    // SAFETY: as above; main is suspended waiting for the checksum.
    unsafe {
        (*pair).context_checksum = checksum;
        loop {
            switch_pair::<LIGHT>(save_sp, *resume_sp);
        }
    }
}

/// Runs `juggle` on main and in a context, switching between them, and compares both
/// checksums with the same arithmetic run without switches. `LIGHT` must match the switch
/// that `entry` and `main_side` use.
fn check_live_values<const LIGHT: bool>(
    entry: EntryFn,
    main_side: fn(*mut usize, *const usize) -> u64,
) {
    let stack = common::TestStack::new(STACK_SIZE);
    let mut pair = Pair {
        main_sp: 0,
        context_sp: 0,
        context_checksum: 0,
    };
    let pair_ptr = &raw mut pair;
    // SAFETY: the stack is owned by the context and outlives it.
    unsafe {
        (*pair_ptr).context_sp = if LIGHT {
            init_stack_without_fp(stack.lo(), stack.hi(), entry, pair_ptr as usize)
        } else {
            init_stack(stack.lo(), stack.hi(), entry, pair_ptr as usize)
        }
    };

    // SAFETY: the slots belong to the pair, which outlives the context.
    let (save_sp, resume_sp) = unsafe {
        (
            &raw mut (*pair_ptr).main_sp,
            &raw const (*pair_ptr).context_sp,
        )
    };
    let main_checksum = main_side(save_sp, resume_sp);
    // One more switch lets the context finish its last round and store its checksum.
    // SAFETY: the context is suspended in its last switch.
    unsafe { switch_pair::<LIGHT>(save_sp, *resume_sp) };

    let expected_main = juggle::<false>(std::ptr::null_mut(), std::ptr::null(), MAIN_SEED, ROUNDS);
    let expected_context =
        juggle::<false>(std::ptr::null_mut(), std::ptr::null(), CONTEXT_SEED, ROUNDS);
    assert_eq!(main_checksum, expected_main, "main's live values changed");
    // SAFETY: the context is suspended for good.
    let context_checksum = unsafe { (*pair_ptr).context_checksum };
    assert_eq!(
        context_checksum, expected_context,
        "the context's live values changed"
    );
}

#[test]
fn live_values_survive_inlined_switches() {
    check_live_values::<false>(live_values_context::<false>, |save_sp, resume_sp| {
        juggle::<false>(save_sp, resume_sp, MAIN_SEED, ROUNDS)
    });
}

#[test]
fn live_values_survive_outlined_switches() {
    check_live_values::<false>(
        live_values_context_not_inlined::<false>,
        |save_sp, resume_sp| juggle_not_inlined::<false>(save_sp, resume_sp, MAIN_SEED, ROUNDS),
    );
}

#[test]
fn live_values_survive_inlined_light_switches() {
    check_live_values::<true>(live_values_context::<true>, |save_sp, resume_sp| {
        juggle::<true>(save_sp, resume_sp, MAIN_SEED, ROUNDS)
    });
}

#[test]
fn live_values_survive_outlined_light_switches() {
    check_live_values::<true>(
        live_values_context_not_inlined::<true>,
        |save_sp, resume_sp| juggle_not_inlined::<true>(save_sp, resume_sp, MAIN_SEED, ROUNDS),
    );
}
