//! Context switching for riscv64 under the LP64D calling convention (RISC-V psABI).
//!
//! # Saved state
//!
//! The psABI's register convention makes s0-s11 (x8, x9, x18-x27) and sp callee-saved, and
//! with the hardware floating-point convention also fs0-fs11 (f8, f9, f18-f27). A switch
//! saves:
//!
//! - ra (the resume address), s0-s11 and fs0-fs11;
//! - the dynamic rounding mode `frm`, the control half of `fcsr`. The psABI does not make
//!   `fcsr` callee-saved but gives it "thread storage duration" (C11 section 7.6). goro gives
//!   each context its own rounding mode instead, so that a context that sets one does not leak
//!   it into the next context that runs on the thread.
//!
//! Not saved, by choice:
//!
//! - `fflags`, the accrued exception flags, the status half of `fcsr`: they stay with the OS
//!   thread, as the thread storage duration that the psABI gives `fcsr` requires.
//! - gp and tp: the psABI states that they "never change". tp is the thread pointer of the OS
//!   thread that runs the switch, so it stays as it is when a context resumes on another
//!   thread.
//! - the vector registers and `vxrm`/`vxsat`, which the psABI makes caller-saved.
//!
//! [`switch`] only writes `frm` when the resumed side's value differs from the thread's.
//!
//! Two naked functions share the frame below, so either may resume a context that the other
//! suspended. [`switch`] stores the suspended side's `frm` and installs the resumed side's.
//! [`switch_load_fp`] (behind `switch_from_g0`) stores the default `frm` instead of reading
//! it, for a g0 that always runs with the defaults, and installs the resumed side's. The
//! variant keeps the contracts the same on every architecture. Contexts that never leave the
//! default `frm` can use [`switch_light`] and its own light frames instead (see there).
//!
//! [`switch`] resumes the other side with `ret`, which the return-address stack always gets
//! wrong, because it expects our own caller. A jump through a register other than ra or t0
//! would avoid that, but with Zicfilp enforced its target must be a landing pad, and a resume
//! address (just after a `call`) is not.
//!
//! # Stack of a suspended context
//!
//! ```text
//!           |  caller's frame          |
//!           +--------------------------+  <- sp of the caller at `call switch` (16-byte aligned)
//!  sp + 200 |  fs11                    |
//!           ~  ...                     ~
//!  sp + 112 |  fs0                     |
//!  sp + 104 |  s11                     |
//!           ~  ...                     ~
//!  sp +  16 |  s0                      |
//!  sp +   8 |  ra (return address)     |
//!  sp +   0 |  frm                     |
//!           +--------------------------+  <- saved stack pointer (16-byte aligned)
//! ```
//!
//! # Stack of a fresh context
//!
//! [`init_frame`] writes the same layout, so the first [`switch`] to a fresh context is an
//! ordinary switch. Its `ret` lands in [`trampoline`] with sp at `top`, the entry function in
//! s1, its `data` in s2 and `arg` in a0.
//!
//! ```text
//!           +--------------------------+  <- top: stack_hi rounded down to 16
//!  sp + 200 |  fs11 = 0                |
//!           ~  ...      = 0            ~
//!  sp + 112 |  fs0  = 0                |
//!           ~  s3-s11   = 0            ~
//!  sp +  32 |  s2 = data               |
//!  sp +  24 |  s1 = entry              |
//!  sp +  16 |  s0 = 0                  |  ends the frame-pointer chain
//!  sp +   8 |  ra = trampoline         |
//!  sp +   0 |  frm = 0                 |  default: round to nearest, ties to even
//!           +--------------------------+  <- returned stack pointer = top - 208
//! ```

use core::arch::{asm, naked_asm};

use crate::EntryFn;

/// Bytes that [`init_frame`] writes below the aligned top of a stack.
pub(crate) const INIT_FRAME_SIZE: usize = 208;

/// `frm` at process start on Linux: round to nearest, ties to even.
pub(crate) const DEFAULT_FRM: u64 = 0;

/// Defines a naked switch function. Every variant writes and reads the frame drawn at the top
/// of this file, so any variant may resume a context that any other variant suspended. They
/// differ only in what they do with `frm`. `fp` fills the suspended side's slot at `0(sp)`. It
/// may then compare the resumed side's slot at `0(a1)` with the current `frm` and branch to `3f`
/// when they differ, with the value to install in t1. `fp_slow` contains the code at `3:`.
macro_rules! define_switch {
    (
        $(#[$attr:meta])*
        fn $name:ident;
        fp: [$($fp:literal),*];
        fp_slow: [$($fp_slow:literal),*];
    ) => {
        $(#[$attr])*
        #[unsafe(naked)]
        pub unsafe extern "C" fn $name(save_sp: *mut usize, resume_sp: usize, arg: usize) -> usize {
            // a0 = save_sp, a1 = resume_sp, a2 = arg.
            naked_asm!(
                // rustc emits naked functions as module-level assembly, which LLVM assembles
                // without the target's extensions in some codegen units (seen in release builds
                // with Rust 1.95), so the F and D instructions below need them enabled here.
                ".option push",
                ".option arch, +f, +d",
                ".cfi_startproc",
                // Allocate the frame and save the callee-saved registers. The CFI lets a
                // debugger or profiler that stops inside this function unwind out of it.
                "addi sp, sp, -208",
                ".cfi_def_cfa_offset 208",
                "sd ra, 8(sp)",
                ".cfi_offset ra, -200",
                "sd s0, 16(sp)",
                ".cfi_offset s0, -192",
                "sd s1, 24(sp)",
                ".cfi_offset s1, -184",
                "sd s2, 32(sp)",
                ".cfi_offset s2, -176",
                "sd s3, 40(sp)",
                ".cfi_offset s3, -168",
                "sd s4, 48(sp)",
                ".cfi_offset s4, -160",
                "sd s5, 56(sp)",
                ".cfi_offset s5, -152",
                "sd s6, 64(sp)",
                ".cfi_offset s6, -144",
                "sd s7, 72(sp)",
                ".cfi_offset s7, -136",
                "sd s8, 80(sp)",
                ".cfi_offset s8, -128",
                "sd s9, 88(sp)",
                ".cfi_offset s9, -120",
                "sd s10, 96(sp)",
                ".cfi_offset s10, -112",
                "sd s11, 104(sp)",
                ".cfi_offset s11, -104",
                "fsd fs0, 112(sp)",
                ".cfi_offset fs0, -96",
                "fsd fs1, 120(sp)",
                ".cfi_offset fs1, -88",
                "fsd fs2, 128(sp)",
                ".cfi_offset fs2, -80",
                "fsd fs3, 136(sp)",
                ".cfi_offset fs3, -72",
                "fsd fs4, 144(sp)",
                ".cfi_offset fs4, -64",
                "fsd fs5, 152(sp)",
                ".cfi_offset fs5, -56",
                "fsd fs6, 160(sp)",
                ".cfi_offset fs6, -48",
                "fsd fs7, 168(sp)",
                ".cfi_offset fs7, -40",
                "fsd fs8, 176(sp)",
                ".cfi_offset fs8, -32",
                "fsd fs9, 184(sp)",
                ".cfi_offset fs9, -24",
                "fsd fs10, 192(sp)",
                ".cfi_offset fs10, -16",
                "fsd fs11, 200(sp)",
                ".cfi_offset fs11, -8",
                $($fp,)*
                // Move onto the resumed side's stack, then publish our saved stack pointer.
                // From the moment it is visible another thread may resume us, so this thread,
                // a signal handler included, must already be off our stack. The resumed side's
                // frame has the same layout as ours, so the CFI above stays correct across the
                // move. The fence makes the store a release store: a thread that loads the
                // pointer with acquire sees the frame stored above (see `crate::switch`).
                "2:",
                "mv t2, sp",
                "mv sp, a1",
                "fence rw, w",
                "sd t2, 0(a0)",
                // Restore the resumed side's registers and return to its ra with `arg` in a0: the
                // result of its own `switch` call, or the first argument for the trampoline.
                "ld ra, 8(sp)",
                "ld s0, 16(sp)",
                "ld s1, 24(sp)",
                "ld s2, 32(sp)",
                "ld s3, 40(sp)",
                "ld s4, 48(sp)",
                "ld s5, 56(sp)",
                "ld s6, 64(sp)",
                "ld s7, 72(sp)",
                "ld s8, 80(sp)",
                "ld s9, 88(sp)",
                "ld s10, 96(sp)",
                "ld s11, 104(sp)",
                "fld fs0, 112(sp)",
                "fld fs1, 120(sp)",
                "fld fs2, 128(sp)",
                "fld fs3, 136(sp)",
                "fld fs4, 144(sp)",
                "fld fs5, 152(sp)",
                "fld fs6, 160(sp)",
                "fld fs7, 168(sp)",
                "fld fs8, 176(sp)",
                "fld fs9, 184(sp)",
                "fld fs10, 192(sp)",
                "fld fs11, 200(sp)",
                "addi sp, sp, 208",
                ".cfi_remember_state",
                ".cfi_def_cfa_offset 0",
                ".cfi_restore ra",
                ".cfi_restore s0",
                ".cfi_restore s1",
                ".cfi_restore s2",
                ".cfi_restore s3",
                ".cfi_restore s4",
                ".cfi_restore s5",
                ".cfi_restore s6",
                ".cfi_restore s7",
                ".cfi_restore s8",
                ".cfi_restore s9",
                ".cfi_restore s10",
                ".cfi_restore s11",
                ".cfi_restore fs0",
                ".cfi_restore fs1",
                ".cfi_restore fs2",
                ".cfi_restore fs3",
                ".cfi_restore fs4",
                ".cfi_restore fs5",
                ".cfi_restore fs6",
                ".cfi_restore fs7",
                ".cfi_restore fs8",
                ".cfi_restore fs9",
                ".cfi_restore fs10",
                ".cfi_restore fs11",
                "mv a0, a2",
                "ret",
                ".cfi_restore_state",
                $($fp_slow,)*
                ".cfi_endproc",
                ".option pop",
            )
        }
    };
}

define_switch! {
    /// Saves the current context on its stack, stores its stack pointer into `*save_sp` and
    /// resumes the context whose saved stack pointer is `resume_sp`, which receives `arg`.
    /// Stores this context's `frm` and installs the resumed side's.
    ///
    /// # Safety
    ///
    /// The same as [`crate::switch`].
    fn switch;
    // Save frm and compare it with the resumed side's, whose slot is at 0(a1) because both
    // sides use the same layout.
    fp: ["frrm t0", "sd t0, 0(sp)", "ld t1, 0(a1)", "bne t0, t1, 3f"];
    // Slow path: the rounding modes differ. `fsrm` writes frm and leaves fflags alone.
    fp_slow: ["3:", "fsrm t1", "j 2b"];
}

/// [`switch`] itself, which already resumes the other side with `ret` (see
/// `crate::switch_symmetric`).
pub use self::switch as switch_symmetric;

define_switch! {
    /// Like [`switch`], but writes the default `frm` into this context's slot instead of
    /// reading the register.
    ///
    /// # Safety
    ///
    /// The same as [`crate::switch_from_g0`].
    fn switch_load_fp;
    // DEFAULT_FRM is 0, so the zero register stores it.
    fp: ["sd zero, 0(sp)", "ld t1, 0(a1)", "frrm t0", "bne t0, t1, 3f"];
    fp_slow: ["3:", "fsrm t1", "j 2b"];
}

/// Bottom frame of every fresh context: calls `entry(arg, data)` and never returns.
///
/// The first [`switch`] into a fresh context returns here with a0 = `arg`, s1 = `entry`,
/// s2 = `data`, s0 = 0 and sp 16-byte aligned at the top of the stack. The CFI marks ra as
/// undefined, so debuggers and unwinders (gdb, libgcc's `_Unwind_Backtrace`) treat this frame
/// as the outermost one, and s0 = 0 ends the frame-pointer chain.
///
/// # Safety
///
/// Only [`switch`] may enter this function, through a frame written by [`init_frame`].
#[unsafe(naked)]
pub unsafe extern "C" fn trampoline() -> ! {
    naked_asm!(
        ".cfi_startproc",
        ".cfi_undefined ra",
        // entry(arg, data). The `jalr` sets ra to an address inside this function, so an
        // unwinder walking out of `entry` finds the CFI above.
        "mv a1, s2",
        "jalr s1",
        // `entry` never returns. The trap keeps the return address inside this function.
        "unimp",
        ".cfi_endproc",
    )
}

/// Bytes that [`init_light_frame`] writes below the aligned top of a stack.
pub(crate) const LIGHT_INIT_FRAME_SIZE: usize = 32;

/// Suspends the current context in a light frame, stores its stack pointer into `*save_sp`
/// and resumes the light frame at `resume_sp`, which receives `arg`.
///
/// The asm saves only s0 and s1, which inline asm cannot name as clobbers, and the resume
/// address. It declares every other register clobbered, so the compiler saves the
/// callee-saved ones that are live (s2-s11, ra, fs0-fs11), once per function rather than
/// once per switch. Both sides resume the other with `jr t1`. A jump through ra or t0 would
/// be taken as a return and miss in the return-address stack. The asm leaves `frm` alone.
///
/// # Safety
///
/// The same as [`crate::switch_without_fp`].
#[inline(always)]
pub(crate) unsafe fn switch_light(save_sp: *mut usize, resume_sp: usize, arg: usize) -> usize {
    let result: usize;
    // SAFETY: the caller passes a writable `save_sp` and the saved stack pointer of a light
    // frame, whose resume address restores that side's s0 and s1 and continues it.
    unsafe {
        asm!(
            // The frame: 0(sp) resume address, 8(sp) s0, 16(sp) s1, 24(sp) unused.
            "addi sp, sp, -32",
            "sd s0, 8(sp)",
            "sd s1, 16(sp)",
            "lla t1, 2f",
            "sd t1, 0(sp)",
            // Publish the saved stack pointer, then move onto the resumed side's stack.
            "sd sp, 0(a0)",
            "ld t1, 0(a1)",
            "mv sp, a1",
            "jr t1",
            // Resumed here by the other side's `jr`, with its `arg` in a2.
            "2:",
            "ld s0, 8(sp)",
            "ld s1, 16(sp)",
            "addi sp, sp, 32",
            in("a0") save_sp,
            in("a1") resume_sp,
            inout("a2") arg => result,
            out("s2") _,
            out("s3") _,
            out("s4") _,
            out("s5") _,
            out("s6") _,
            out("s7") _,
            out("s8") _,
            out("s9") _,
            out("s10") _,
            out("s11") _,
            out("ra") _,
            out("fs0") _,
            out("fs1") _,
            out("fs2") _,
            out("fs3") _,
            out("fs4") _,
            out("fs5") _,
            out("fs6") _,
            out("fs7") _,
            out("fs8") _,
            out("fs9") _,
            out("fs10") _,
            out("fs11") _,
            clobber_abi("C"),
        )
    };
    result
}

/// Bottom frame of every fresh light context: installs the default `frm` and calls
/// `entry(arg, data)`, and never returns.
///
/// [`switch_light`] jumps here with a2 = `arg` and sp pointing at the frame that
/// [`init_light_frame`] wrote. The CFI and s0 end backtraces as in [`trampoline`].
///
/// # Safety
///
/// Only [`switch_light`] may enter this function, through a frame written by
/// [`init_light_frame`].
#[unsafe(naked)]
pub unsafe extern "C" fn light_trampoline() -> ! {
    naked_asm!(
        // See `switch` for why the F extension is enabled here.
        ".option push",
        ".option arch, +f, +d",
        ".cfi_startproc",
        ".cfi_undefined ra",
        "ld t1, 8(sp)",
        "ld a1, 16(sp)",
        "addi sp, sp, 32",
        "fsrm zero",
        "li s0, 0",
        "mv a0, a2",
        "jalr t1",
        "unimp",
        ".cfi_endproc",
        ".option pop",
    )
}

/// Writes the light frame of a fresh context below `top` and returns its saved stack
/// pointer:
///
/// ```text
///           +--------------------------+  <- top: stack_hi rounded down to 16
///  sp +  24 |  0                       |
///  sp +  16 |  data                    |
///  sp +   8 |  entry                   |
///  sp +   0 |  address of the light trampoline
///           +--------------------------+  <- returned stack pointer = top - 32
/// ```
///
/// # Safety
///
/// `top` must be 16-byte aligned, and the [`LIGHT_INIT_FRAME_SIZE`] bytes below it must be
/// valid for writes and owned by the new context.
pub(crate) unsafe fn init_light_frame(top: usize, entry: EntryFn, data: usize) -> usize {
    let sp = top - LIGHT_INIT_FRAME_SIZE;
    let words: [usize; 4] = [
        light_trampoline as *const () as usize,
        entry as usize,
        data,
        0,
    ];
    // SAFETY: the caller guarantees that [sp, top) is writable, and `sp` is 16-byte aligned
    // because `top` is.
    unsafe { (sp as *mut [usize; 4]).write(words) };
    sp
}

/// Calls `f(arg)` with sp set to `stack_top` rounded down to 16 bytes and returns its result
/// on the original stack.
///
/// # Safety
///
/// The same as [`crate::on_stack`].
#[unsafe(naked)]
pub unsafe extern "C" fn on_stack(
    stack_top: usize,
    f: unsafe extern "C" fn(usize) -> usize,
    arg: usize,
) -> usize {
    // a0 = stack_top, a1 = f, a2 = arg.
    naked_asm!(
        ".cfi_startproc",
        // Mark the frame as a signal frame. gdb ends a backtrace with "previous frame inner
        // to this frame (corrupt stack?)" when a caller's frame lies below its callee's, as
        // it does here whenever the other stack lies above this one. gdb skips that check
        // around signal frames, which often switch stacks, and prints this frame as "<signal
        // handler called>". Unwinders then look up the caller's unwind info at the return
        // address itself instead of the byte before it. That works because more of the
        // caller's code always follows a call to a function that returns.
        ".cfi_signal_frame",
        // Build a frame record on the original stack and point s0 at its CFA, so that both
        // the CFI (through s0) and frame-pointer walkers find the way back from the other
        // stack.
        "addi sp, sp, -16",
        ".cfi_def_cfa_offset 16",
        "sd ra, 8(sp)",
        "sd s0, 0(sp)",
        ".cfi_offset ra, -8",
        ".cfi_offset s0, -16",
        "addi s0, sp, 16",
        ".cfi_def_cfa s0, 0",
        // Move to the other stack, aligned as the psABI requires.
        "andi t0, a0, -16",
        "mv sp, t0",
        "mv a0, a2",
        "jalr a1",
        // Return to the original stack. a0 contains f's result.
        "addi sp, s0, -16",
        ".cfi_def_cfa sp, 16",
        "ld ra, 8(sp)",
        "ld s0, 0(sp)",
        ".cfi_restore ra",
        ".cfi_restore s0",
        "addi sp, sp, 16",
        ".cfi_def_cfa_offset 0",
        "ret",
        ".cfi_endproc",
    )
}

/// Installs the default `frm`. `fsrm` leaves the accrued flags in `fflags` alone.
pub(crate) fn install_default_fp_control() {
    // SAFETY: the default rounding mode is the state that Rust code assumes.
    unsafe {
        core::arch::asm!(
            "fsrm {}",
            in(reg) DEFAULT_FRM,
            options(nomem, nostack, preserves_flags),
        )
    };
}

/// Writes the frame of a fresh context below `top` and returns its saved stack pointer.
///
/// # Safety
///
/// `top` must be 16-byte aligned, and the [`INIT_FRAME_SIZE`] bytes below it must be valid for
/// writes and owned by the new context.
pub(crate) unsafe fn init_frame(top: usize, entry: EntryFn, data: usize) -> usize {
    let sp = top - INIT_FRAME_SIZE;
    let mut words = [0usize; INIT_FRAME_SIZE / 8];
    words[0] = DEFAULT_FRM as usize;
    words[1] = trampoline as *const () as usize; // ra
    words[2] = 0; // s0
    words[3] = entry as usize; // s1
    words[4] = data; // s2
    // SAFETY: the caller guarantees that [sp, top) is writable, and `sp` is 16-byte aligned
    // because `top` is and INIT_FRAME_SIZE is a multiple of 16.
    unsafe { (sp as *mut [usize; INIT_FRAME_SIZE / 8]).write(words) };
    sp
}
