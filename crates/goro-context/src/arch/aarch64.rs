//! Context switching for aarch64 under the AAPCS64 procedure call standard.
//!
//! # Saved state
//!
//! AAPCS64 (section "General-purpose Registers" and "SIMD and Floating-Point Registers") makes
//! x19-x29 and sp callee-saved, and the low 64 bits of v8-v15 (that is, d8-d15). A switch
//! saves:
//!
//! - x19-x28, the frame pointer x29 and the link register x30 (the resume address);
//! - d8-d15;
//! - FPCR, whole. AAPCS64 calls FPCR a "global register" whose rounding-mode, flush-to-zero
//!   and exception-control bits are changed only by support functions. goro gives each context
//!   its own FPCR instead, so that a context that sets a rounding mode does not leak it into
//!   the next context that runs on the thread.
//!
//! Not saved, by choice:
//!
//! - x18, the platform register. AAPCS64 leaves its role to the platform. Compilers for
//!   aarch64 Linux (GCC, and LLVM as rustc's `aarch64-unknown-linux-gnu` target uses it)
//!   treat it as an ordinary temporary (caller-saved) register unless told to reserve it. The
//!   shadow-call-stack sanitizer reserves it for a per-thread pointer, which must not be
//!   switched either.
//! - FPSR, the cumulative exception flags. AAPCS64 states that they "are not preserved across
//!   a public interface", so they stay with the OS thread.
//! - TPIDR_EL0, the thread pointer, which belongs to the OS thread that runs the switch.
//! - The upper halves of v8-v15, v0-v7, v16-v31, and SVE/SME state, all caller-saved for a
//!   call to a function with the base procedure call standard.
//!
//! Writing FPCR can stall the pipeline on some cores, so [`switch`] only writes it when the
//! resumed side's value differs from the thread's current one. Reading it is a plain register
//! read, so the compare costs no memory round trip.
//!
//! Two naked functions share the frame below, so either may resume a context that the other
//! suspended. [`switch`] stores the suspended side's FPCR and installs the resumed side's.
//! [`switch_load_fp`] (behind `switch_from_g0`) stores the default FPCR instead of reading the
//! register, for a g0 that always runs with the defaults, and installs the resumed side's.
//! Reading FPCR is cheap here, unlike x86_64's `stmxcsr`, so the variant exists to keep the
//! contracts the same on every architecture. Contexts that never leave the default FPCR can
//! use [`switch_light`] and its own light frames instead (see there).
//!
//! [`switch`] resumes the other side with `ret`, which the return-address predictor always
//! gets wrong, because it expects our own caller. A `br` would avoid that, but with BTI
//! enforced its target must be a landing pad, and a resume address (just after a `bl`) is not.
//!
//! # Stack of a suspended context
//!
//! ```text
//!           |  caller's frame          |
//!           +--------------------------+  <- sp of the caller at `bl switch` (16-byte aligned)
//!  sp + 168 |  x30 (return address)    |
//!  sp + 160 |  x29                     |
//!  sp + 152 |  x28                     |
//!           ~  ...                     ~
//!  sp +  80 |  x19                     |
//!  sp +  72 |  d15                     |
//!           ~  ...                     ~
//!  sp +  16 |  d8                      |
//!  sp +   8 |  unused                  |
//!  sp +   0 |  FPCR                    |
//!           +--------------------------+  <- saved stack pointer (16-byte aligned)
//! ```
//!
//! # Stack of a fresh context
//!
//! [`init_frame`] writes the same layout, so the first [`switch`] to a fresh context is an
//! ordinary switch. Its `ret` lands in [`trampoline`] with sp at `top`, the entry function in
//! x19, its `data` in x20 and `arg` in x0.
//!
//! ```text
//!           +--------------------------+  <- top: stack_hi rounded down to 16
//!  sp + 168 |  x30 = trampoline        |
//!  sp + 160 |  x29 = 0                 |  ends the frame-record chain
//!  sp + 152 |  x28 = 0                 |
//!           ~  ...     = 0             ~
//!  sp +  88 |  x20 = data              |
//!  sp +  80 |  x19 = entry             |
//!  sp +  72 |  d15 = 0                 |
//!           ~  ...     = 0             ~
//!  sp +  16 |  d8  = 0                 |
//!  sp +   8 |  0                       |
//!  sp +   0 |  FPCR = 0                |  default: round to nearest, no flush to zero
//!           +--------------------------+  <- returned stack pointer = top - 176
//! ```

use core::arch::{asm, naked_asm};

use crate::EntryFn;

/// Bytes that [`init_frame`] writes below the aligned top of a stack.
pub(crate) const INIT_FRAME_SIZE: usize = 176;

/// FPCR at process start on Linux: round to nearest, no flush to zero, no default NaN, no
/// exception traps.
pub(crate) const DEFAULT_FPCR: u64 = 0;

/// Defines a naked switch function. Every variant writes and reads the frame drawn at the top
/// of this file, so any variant may resume a context that any other variant suspended. They
/// differ only in what they do with FPCR. `fp` fills the suspended side's slot at `[sp]`. It
/// may then compare the resumed side's slot at `[x1]` with the current FPCR and branch to `3f`
/// when they differ, with the value to install in x10. `fp_slow` contains the code at `3:`.
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
            // x0 = save_sp, x1 = resume_sp, x2 = arg.
            naked_asm!(
                ".cfi_startproc",
                // Allocate the frame and save the callee-saved registers. The CFI lets a
                // debugger or profiler that stops inside this function unwind out of it.
                "sub sp, sp, #176",
                ".cfi_def_cfa_offset 176",
                "stp x29, x30, [sp, #160]",
                ".cfi_offset x29, -16",
                ".cfi_offset x30, -8",
                "stp x27, x28, [sp, #144]",
                ".cfi_offset x27, -32",
                ".cfi_offset x28, -24",
                "stp x25, x26, [sp, #128]",
                ".cfi_offset x25, -48",
                ".cfi_offset x26, -40",
                "stp x23, x24, [sp, #112]",
                ".cfi_offset x23, -64",
                ".cfi_offset x24, -56",
                "stp x21, x22, [sp, #96]",
                ".cfi_offset x21, -80",
                ".cfi_offset x22, -72",
                "stp x19, x20, [sp, #80]",
                ".cfi_offset x19, -96",
                ".cfi_offset x20, -88",
                "stp d14, d15, [sp, #64]",
                ".cfi_offset d14, -112",
                ".cfi_offset d15, -104",
                "stp d12, d13, [sp, #48]",
                ".cfi_offset d12, -128",
                ".cfi_offset d13, -120",
                "stp d10, d11, [sp, #32]",
                ".cfi_offset d10, -144",
                ".cfi_offset d11, -136",
                "stp d8, d9, [sp, #16]",
                ".cfi_offset d8, -160",
                ".cfi_offset d9, -152",
                $($fp,)*
                // Move onto the resumed side's stack, then publish our saved stack pointer.
                // From the moment it is visible another thread may resume us, so this thread,
                // a signal handler included, must already be off our stack. The resumed side's
                // frame has the same layout as ours, so the CFI above stays correct across the
                // move. `stlr` is a release store: a thread that loads the pointer with
                // acquire sees the frame stored above (see `crate::switch`).
                "2:",
                "mov x9, sp",
                "mov sp, x1",
                "stlr x9, [x0]",
                // Restore the resumed side's registers and return to its x30 with `arg` in x0:
                // the result of its own switch call, or the first argument for the trampoline.
                "ldp d8, d9, [sp, #16]",
                "ldp d10, d11, [sp, #32]",
                "ldp d12, d13, [sp, #48]",
                "ldp d14, d15, [sp, #64]",
                "ldp x19, x20, [sp, #80]",
                "ldp x21, x22, [sp, #96]",
                "ldp x23, x24, [sp, #112]",
                "ldp x25, x26, [sp, #128]",
                "ldp x27, x28, [sp, #144]",
                "ldp x29, x30, [sp, #160]",
                "add sp, sp, #176",
                ".cfi_remember_state",
                ".cfi_def_cfa_offset 0",
                ".cfi_restore x19",
                ".cfi_restore x20",
                ".cfi_restore x21",
                ".cfi_restore x22",
                ".cfi_restore x23",
                ".cfi_restore x24",
                ".cfi_restore x25",
                ".cfi_restore x26",
                ".cfi_restore x27",
                ".cfi_restore x28",
                ".cfi_restore x29",
                ".cfi_restore x30",
                ".cfi_restore d8",
                ".cfi_restore d9",
                ".cfi_restore d10",
                ".cfi_restore d11",
                ".cfi_restore d12",
                ".cfi_restore d13",
                ".cfi_restore d14",
                ".cfi_restore d15",
                "mov x0, x2",
                "ret",
                ".cfi_restore_state",
                $($fp_slow,)*
                ".cfi_endproc",
            )
        }
    };
}

define_switch! {
    /// Saves the current context on its stack, stores its stack pointer into `*save_sp` and
    /// resumes the context whose saved stack pointer is `resume_sp`, which receives `arg`.
    /// Stores this context's FPCR and installs the resumed side's.
    ///
    /// # Safety
    ///
    /// The same as [`crate::switch`].
    fn switch;
    // Save FPCR, and compare it with the resumed side's, whose slot is at [x1] because both
    // sides use the same layout.
    fp: ["mrs x9, fpcr", "str x9, [sp]", "ldr x10, [x1]", "cmp x9, x10", "b.ne 3f"];
    // Slow path: the FPCR values differ.
    fp_slow: ["3:", "msr fpcr, x10", "b 2b"];
}

/// [`switch`] itself, which already resumes the other side with `ret` (see
/// `crate::switch_symmetric`).
pub use self::switch as switch_symmetric;

define_switch! {
    /// Like [`switch`], but writes the default FPCR into this context's slot instead of
    /// reading the register.
    ///
    /// # Safety
    ///
    /// The same as [`crate::switch_from_g0`].
    fn switch_load_fp;
    // DEFAULT_FPCR is 0, so xzr stores it.
    fp: ["str xzr, [sp]", "ldr x10, [x1]", "mrs x9, fpcr", "cmp x9, x10", "b.ne 3f"];
    fp_slow: ["3:", "msr fpcr, x10", "b 2b"];
}

/// Bottom frame of every fresh context: calls `entry(arg, data)` and never returns.
///
/// The first [`switch`] into a fresh context returns here with x0 = `arg`, x19 = `entry`,
/// x20 = `data`, x29 = 0 and sp 16-byte aligned at the top of the stack. The CFI marks x30 as
/// undefined, so debuggers and unwinders (gdb, libgcc's `_Unwind_Backtrace`) treat this frame
/// as the outermost one, and x29 = 0 ends the frame-record chain.
///
/// # Safety
///
/// Only [`switch`] may enter this function, through a frame written by [`init_frame`].
#[unsafe(naked)]
pub unsafe extern "C" fn trampoline() -> ! {
    naked_asm!(
        ".cfi_startproc",
        ".cfi_undefined x30",
        // entry(arg, data). The `blr` sets x30 to an address inside this function, so an
        // unwinder walking out of `entry` finds the CFI above.
        "mov x1, x20",
        "blr x19",
        // `entry` never returns. The trap keeps the return address inside this function.
        "brk #0x1",
        ".cfi_endproc",
    )
}

/// Bytes that [`init_light_frame`] writes below the aligned top of a stack.
pub(crate) const LIGHT_INIT_FRAME_SIZE: usize = 32;

/// Suspends the current context in a light frame, stores its stack pointer into `*save_sp`
/// and resumes the light frame at `resume_sp`, which receives `arg`.
///
/// The asm saves only x19 and x29, which inline asm cannot name as clobbers, and the resume
/// address. It declares every other register clobbered, so the compiler saves the
/// callee-saved ones that are live (x20-x28, x30, d8-d15), once per function rather than
/// once per switch. Both sides resume the other with `br`, which the branch predictor
/// learns, while a `ret` would miss in the return-address predictor. Its target starts with
/// `bti j` (`hint #36`, a no-op without BTI), so it also works with BTI enforced. The asm
/// leaves FPCR alone.
///
/// # Safety
///
/// The same as [`crate::switch_without_fp`].
#[inline(always)]
pub(crate) unsafe fn switch_light(save_sp: *mut usize, resume_sp: usize, arg: usize) -> usize {
    let result: usize;
    // SAFETY: the caller passes a writable `save_sp` and the saved stack pointer of a light
    // frame, whose resume address restores that side's x19 and x29 and continues it.
    unsafe {
        asm!(
            // The frame: [sp] resume address, [sp + 8] x19, [sp + 16] x29, [sp + 24] unused.
            "adr x9, 2f",
            "stp x9, x19, [sp, #-32]!",
            "str x29, [sp, #16]",
            // Publish the saved stack pointer, then move onto the resumed side's stack.
            "mov x10, sp",
            "str x10, [x0]",
            "ldr x9, [x1]",
            "mov sp, x1",
            "br x9",
            // Resumed here by the other side's `br`, with its `arg` in x2.
            "2:",
            "hint #36",
            "ldr x19, [sp, #8]",
            "ldr x29, [sp, #16]",
            "add sp, sp, #32",
            in("x0") save_sp,
            in("x1") resume_sp,
            inout("x2") arg => result,
            out("x20") _,
            out("x21") _,
            out("x22") _,
            out("x23") _,
            out("x24") _,
            out("x25") _,
            out("x26") _,
            out("x27") _,
            out("x28") _,
            out("x30") _,
            out("v8") _,
            out("v9") _,
            out("v10") _,
            out("v11") _,
            out("v12") _,
            out("v13") _,
            out("v14") _,
            out("v15") _,
            clobber_abi("C"),
        )
    };
    result
}

/// Bottom frame of every fresh light context: installs the default FPCR and calls
/// `entry(arg, data)`, and never returns.
///
/// [`switch_light`] jumps here with x2 = `arg` and sp pointing at the frame that
/// [`init_light_frame`] wrote. The CFI and x29 end backtraces as in [`trampoline`].
///
/// # Safety
///
/// Only [`switch_light`] may enter this function, through a frame written by
/// [`init_light_frame`].
#[unsafe(naked)]
pub unsafe extern "C" fn light_trampoline() -> ! {
    naked_asm!(
        ".cfi_startproc",
        ".cfi_undefined x30",
        // `bti j`, the landing pad for the `br` of switch_light.
        "hint #36",
        "ldp x9, x1, [sp, #8]",
        "add sp, sp, #32",
        "msr fpcr, xzr",
        "mov x29, #0",
        "mov x0, x2",
        "blr x9",
        "brk #0x1",
        ".cfi_endproc",
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
    // x0 = stack_top, x1 = f, x2 = arg.
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
        // Build a frame record on the original stack, so that both the CFI (through x29) and
        // frame-record walkers find the way back from the other stack.
        "stp x29, x30, [sp, #-16]!",
        ".cfi_def_cfa_offset 16",
        ".cfi_offset x29, -16",
        ".cfi_offset x30, -8",
        "mov x29, sp",
        ".cfi_def_cfa x29, 16",
        // Move to the other stack, aligned as AAPCS64 requires.
        "and x9, x0, #-16",
        "mov sp, x9",
        "mov x0, x2",
        "blr x1",
        // Return to the original stack. x0 contains f's result.
        "mov sp, x29",
        ".cfi_def_cfa sp, 16",
        "ldp x29, x30, [sp], #16",
        ".cfi_def_cfa_offset 0",
        ".cfi_restore x29",
        ".cfi_restore x30",
        "ret",
        ".cfi_endproc",
    )
}

/// Installs the default FPCR.
pub(crate) fn install_default_fp_control() {
    // SAFETY: the default FPCR is the state that Rust code assumes, with no exception trap.
    unsafe {
        core::arch::asm!(
            "msr fpcr, {}",
            in(reg) DEFAULT_FPCR,
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
    words[0] = DEFAULT_FPCR as usize;
    words[10] = entry as usize; // x19
    words[11] = data; // x20
    words[20] = 0; // x29
    words[21] = trampoline as *const () as usize; // x30
    // SAFETY: the caller guarantees that [sp, top) is writable, and `sp` is 16-byte aligned
    // because `top` is and INIT_FRAME_SIZE is a multiple of 16.
    unsafe { (sp as *mut [usize; INIT_FRAME_SIZE / 8]).write(words) };
    sp
}
