//! Stack alignment at the entry of a fresh context and after every resume, for stack sizes and
//! stack tops that are not multiples of 16 or of the page size.

mod common;

use std::hint::black_box;

use common::{ProbeTarget, caller_sp, entry_sp_probe};
use goro_context::{
    INIT_FRAME_SIZE, STACK_ALIGN, init_stack, init_stack_without_fp, switch, switch_without_fp,
};

const SIZES: [usize; 3] = [4096, 4096 + 8, 64 * 1024 + 1];
const RESUMES: usize = 4;

#[repr(align(16))]
struct Aligned16([u8; 16]);

#[repr(align(32))]
struct Aligned32([u8; 32]);

/// What the context observed, written on its own stack's side and checked on main's.
#[repr(C)]
struct Observations {
    target: ProbeTarget,
    main_sp: usize,
    context_sp: usize,
    entry_sp: usize,
    /// `caller_sp()` after each resume.
    resumed_sps: [usize; RESUMES],
    /// Addresses of a 16-byte and a 32-byte aligned local, at entry and after each resume.
    local16: [usize; RESUMES + 1],
    local32: [usize; RESUMES + 1],
}

/// Records the addresses of over-aligned locals. Not inlined, so that its frame depends on
/// the caller's stack alignment: a 16-byte aligned local is placed without realigning.
#[inline(never)]
fn record_locals(observations: *mut Observations, index: usize) {
    let local16 = Aligned16([index as u8; 16]);
    let local32 = Aligned32([index as u8; 32]);
    // SAFETY: the Observations outlive the context, and only the running side touches them.
    unsafe {
        (*observations).local16[index] = black_box(&raw const local16) as usize;
        (*observations).local32[index] = black_box(&raw const local32) as usize;
    }
    black_box(local16.0);
    black_box(local32.0);
}

/// Switches with `switch_without_fp` when `LIGHT` is set, and with `switch` otherwise.
///
/// # Safety
///
/// That of the switch it uses.
#[inline(always)]
unsafe fn switch_to<const LIGHT: bool>(save_sp: *mut usize, resume_sp: usize) {
    if LIGHT {
        // SAFETY: the caller upholds switch_without_fp's contract.
        unsafe { switch_without_fp(save_sp, resume_sp, 0) };
    } else {
        // SAFETY: the caller upholds switch's contract.
        unsafe { switch(save_sp, resume_sp, 0) };
    }
}

unsafe extern "C" fn observe<const LIGHT: bool>(_arg: usize, data: usize, entry_sp: usize) -> ! {
    let observations = data as *mut Observations;
    // SAFETY: `data` points to the Observations, which outlive the context.
    unsafe { (*observations).entry_sp = entry_sp };
    record_locals(observations, 0);
    for resume in 0..RESUMES {
        // SAFETY: main is suspended in its switch to us, and its slot is in the Observations.
        unsafe {
            switch_to::<LIGHT>(&raw mut (*observations).context_sp, (*observations).main_sp);
            (*observations).resumed_sps[resume] = caller_sp();
        }
        record_locals(observations, resume + 1);
    }
    loop {
        // SAFETY: as above.
        unsafe { switch_to::<LIGHT>(&raw mut (*observations).context_sp, (*observations).main_sp) };
    }
}

/// Runs a context on `[stack_lo, stack_hi)` and checks every stack pointer it saw. With
/// `LIGHT` the context is a light one, from `init_stack_without_fp`.
fn check_context<const LIGHT: bool>(stack_lo: usize, stack_hi: usize) {
    let case = format!(
        "stack [{stack_lo:#x}, {stack_hi:#x}) of {} bytes",
        stack_hi - stack_lo
    );
    let mut observations = Observations {
        target: ProbeTarget {
            entry: observe::<LIGHT>,
        },
        main_sp: 0,
        context_sp: 0,
        entry_sp: 0,
        resumed_sps: [0; RESUMES],
        local16: [0; RESUMES + 1],
        local32: [0; RESUMES + 1],
    };
    let observations_ptr = &raw mut observations;

    // SAFETY: the caller's stack is unused and outlives the context.
    let initial_sp = unsafe {
        let init = if LIGHT {
            init_stack_without_fp
        } else {
            init_stack
        };
        init(
            stack_lo,
            stack_hi,
            entry_sp_probe,
            observations_ptr as usize,
        )
    };
    // A light frame's stack pointer is only word-aligned on x86_64 (see switch_without_fp).
    let frame_align = if LIGHT { 8 } else { STACK_ALIGN };
    assert_eq!(
        initial_sp % frame_align,
        0,
        "{case}: init_stack's stack pointer"
    );
    // Both frames lie within the INIT_FRAME_SIZE bytes below the aligned top. The light one
    // is smaller.
    let top = stack_hi & !(STACK_ALIGN - 1);
    assert!(
        initial_sp >= stack_lo && initial_sp < top && top - initial_sp <= INIT_FRAME_SIZE,
        "{case}: init_stack's frame at {initial_sp:#x} is outside the stack"
    );
    if !LIGHT {
        assert_eq!(
            top - initial_sp,
            INIT_FRAME_SIZE,
            "{case}: init_stack's frame size"
        );
    }

    let main_sp_before = caller_sp();
    // SAFETY: the context is fresh or suspended in its own switch, and its stack is alive.
    unsafe { (*observations_ptr).context_sp = initial_sp };
    for _ in 0..=RESUMES {
        // SAFETY: as above.
        unsafe {
            switch_to::<LIGHT>(
                &raw mut (*observations_ptr).main_sp,
                (*observations_ptr).context_sp,
            )
        };
        assert_eq!(
            caller_sp(),
            main_sp_before,
            "{case}: main's stack pointer moved"
        );
    }

    // SAFETY: the context is suspended for good.
    let observations = unsafe { &*observations_ptr };
    assert_eq!(
        observations.entry_sp % 16,
        0,
        "{case}: stack pointer at entry"
    );
    assert!(
        observations.entry_sp <= top && observations.entry_sp > stack_lo,
        "{case}: stack pointer at entry {:#x} is outside the stack",
        observations.entry_sp
    );
    for (resume, sp) in observations.resumed_sps.iter().enumerate() {
        assert_eq!(sp % 16, 0, "{case}: stack pointer after resume {resume}");
        assert_eq!(
            *sp, observations.resumed_sps[0],
            "{case}: stack pointer after resume {resume} differs from the first"
        );
    }
    for index in 0..=RESUMES {
        assert_eq!(
            observations.local16[index] % 16,
            0,
            "{case}: 16-byte local, step {index}"
        );
        assert_eq!(
            observations.local32[index] % 32,
            0,
            "{case}: 32-byte local, step {index}"
        );
    }
}

#[test]
fn aligned_at_entry_and_after_resume() {
    for size in SIZES {
        // Every residue of stack_hi modulo 16, so that the rounding in init_stack is exercised
        // for each size whether or not it is a multiple of 16.
        for misalignment in 0..16 {
            let stack = common::TestStack::new(size + 16);
            let stack_hi = stack.hi() - misalignment;
            check_context::<false>(stack_hi - size, stack_hi);
        }
    }
}

#[test]
fn light_context_aligned_at_entry_and_after_resume() {
    for size in SIZES {
        // As above, for light contexts.
        for misalignment in 0..16 {
            let stack = common::TestStack::new(size + 16);
            let stack_hi = stack.hi() - misalignment;
            check_context::<true>(stack_hi - size, stack_hi);
        }
    }
}

#[test]
fn smallest_stack_holds_initial_frame() {
    let stack = common::TestStack::new(4096);
    let stack_hi = stack.hi();
    // SAFETY: nothing runs on the context; init_stack only writes its frame.
    let sp = unsafe { init_stack(stack_hi - INIT_FRAME_SIZE, stack_hi, entry_sp_probe, 0) };
    assert_eq!(sp, stack_hi - INIT_FRAME_SIZE);
}

#[test]
#[should_panic(expected = "goro_context::init_stack: the stack")]
fn init_stack_rejects_too_small_stack() {
    let stack = common::TestStack::new(4096);
    // Rounding stack_hi down to 16 leaves INIT_FRAME_SIZE - 1 bytes.
    let stack_hi = stack.hi() - 15;
    let stack_lo = stack.hi() - 16 - INIT_FRAME_SIZE + 1;
    // SAFETY: init_stack panics before it writes anything.
    unsafe { init_stack(stack_lo, stack_hi, entry_sp_probe, 0) };
}

#[test]
#[should_panic(expected = "goro_context::init_stack: stack_lo")]
fn init_stack_rejects_inverted_bounds() {
    let stack = common::TestStack::new(4096);
    // SAFETY: init_stack panics before it writes anything.
    unsafe { init_stack(stack.hi(), stack.lo(), entry_sp_probe, 0) };
}
