//! Stack switching for goro's goroutines on x86_64, aarch64 and riscv64 Linux.
//!
//! A *context* is a suspended computation: a stack plus the callee-saved registers that
//! [`switch`] pushed on it. Its only handle is its saved stack pointer. The crate has three
//! primitives, which the goro runtime uses to switch between goroutines and their M's g0:
//!
//! - [`init_stack`] lays out a fresh context at the top of a stack;
//! - [`switch`] suspends the running context and resumes another one, passing a `usize`;
//!   [`switch_to_g0`] and [`switch_from_g0`] do the same with less FP control work, for the
//!   runtime's switches between a goroutine and g0;
//! - [`init_stack_without_fp`] and [`switch_without_fp`] are a lighter pair for contexts that
//!   never change the FP control state: inline asm that saves only the live registers;
//! - [`on_stack`] runs a function on another stack and comes back (Go's `systemstack`).
//!
//! On top of them, [`Coroutine`] is a small stackful coroutine for users of this crate alone.
//! It catches panics at its entry and hands them to the resumer.
//!
//! The crate allocates no stacks. `goro-stack` provides mmap stacks with guard pages; any
//! writable memory works, such as the heap buffer below.
//!
//! # Example
//!
//! ```
//! use goro_context::{Coroutine, CoroutineResult};
//!
//! // A heap buffer works as a stack. It has no guard page, so an overflow corrupts the heap:
//! // use goro-stack or mmap with a guard page for real work.
//! let mut stack = vec![0u8; 64 * 1024];
//! let stack_lo = stack.as_mut_ptr() as usize;
//! let stack_hi = stack_lo + stack.len();
//!
//! // SAFETY: `stack` outlives the coroutine and nothing else touches it meanwhile.
//! let mut running_sum = unsafe {
//!     Coroutine::new(stack_lo, stack_hi, |yielder, mut next: u64| {
//!         let mut sum = 0;
//!         while next != 0 {
//!             sum += next;
//!             next = yielder.suspend(sum);
//!         }
//!         format!("done at {sum}")
//!     })
//! };
//!
//! assert_eq!(running_sum.resume(5).unwrap(), CoroutineResult::Yield(5));
//! assert_eq!(running_sum.resume(7).unwrap(), CoroutineResult::Yield(12));
//! assert_eq!(running_sum.resume(0).unwrap(), CoroutineResult::Return("done at 12".to_string()));
//! assert!(running_sum.is_finished());
//! drop(running_sum);
//! drop(stack);
//! ```
//!
//! # Guarantees
//!
//! - **Callee-saved state survives a switch**: every register that the platform's calling
//!   convention makes callee-saved, and the FP control state. That is rbx, rbp, r12-r15,
//!   MXCSR and the x87 control word on x86_64; x19-x29, x30, d8-d15 and FPCR on aarch64;
//!   s0-s11, ra, fs0-fs11 and `frm` on riscv64. Each file under `src/arch/` states what it
//!   leaves out and why. In short: x18 on aarch64 is not saved, and the FP status flags stay
//!   with the OS thread, except the MXCSR flags, which each x86_64 context keeps as its own.
//! - **The cheaper switches keep these guarantees within their contracts**. The runtime's
//!   pair [`switch_from_g0`]/[`switch_to_g0`] reads the FP control registers on the
//!   goroutine's side only and gives g0 the defaults. [`switch_without_fp`] skips the FP
//!   control state between contexts that never leave the defaults, and the first switch
//!   into a fresh light context installs them.
//! - **A fresh context starts with the default FP control state** (MXCSR 0x1F80 and x87
//!   control word 0x037F; FPCR 0; `frm` 0), never the creator's state and never zeros.
//! - **Stack alignment follows the ABI** at the entry of a fresh context, after every resume
//!   and inside [`on_stack`], for any `stack_hi` and `stack_top`: they are rounded down.
//! - **Backtraces end cleanly**: the bottom frame of every fresh context is a trampoline
//!   whose unwind info marks the return address as undefined, with a zero frame pointer, so
//!   gdb and Rust's backtraces stop there.
//! - **[`switch`] is a real call**, to a function the compiler cannot see into, so it is a
//!   full compiler barrier for all memory that other code can reach. It is *not* a barrier for
//!   thread-local addresses: LLVM may keep a thread-local address in a register across any
//!   call, and rustc 1.95 does so at opt-level 3. A context resumed on another OS thread must
//!   read thread-locals through an out-of-line accessor, such as `goro_abi::getg`.
//! - **No panic unwinds through a switch** in [`Coroutine`]. The raw primitives take
//!   `extern "C"` functions, so a panic that reaches them aborts the process.
//!
//! # Not supported
//!
//! Hardware shadow stacks (x86 CET, aarch64 GCS) and the shadow-call-stack sanitizer keep a
//! second stack per thread that a switch would have to swap as well. Linux enables none of
//! them for Rust programs by default.

#![deny(unsafe_op_in_unsafe_fn)]

mod arch;
mod coroutine;

pub use coroutine::{Coroutine, CoroutineResult, FpMode, WithFp, WithoutFp, Yielder};

/// Alignment in bytes of every stack pointer that this crate produces or expects: the ABI's
/// stack alignment at a call on all three architectures.
pub const STACK_ALIGN: usize = 16;

/// Bytes that [`init_stack`] writes below the top of a stack (after rounding `stack_hi` down
/// to [`STACK_ALIGN`]). The entry function needs more than this to run.
pub const INIT_FRAME_SIZE: usize = arch::INIT_FRAME_SIZE;

// init_stack_without_fp checks the stack against INIT_FRAME_SIZE.
const _: () = assert!(arch::LIGHT_INIT_FRAME_SIZE <= INIT_FRAME_SIZE);

/// Type of a context's entry function.
///
/// It gets the `arg` of the first [`switch`] into the context and the `data` given to
/// [`init_stack`]. It must never return: it ends by switching away for good. A panic that
/// reaches it aborts the process, because it is `extern "C"`.
pub type EntryFn = unsafe extern "C" fn(arg: usize, data: usize) -> !;

/// Suspends the running context and resumes another one.
///
/// Saves the callee-saved state of the current context on its own stack, stores the stack
/// pointer into `*save_sp`, switches to the context whose saved stack pointer is `resume_sp`,
/// and restores its state. The resumed side's own `switch` call returns `arg` (or, for a fresh
/// context, its entry function receives `arg`). Returns the `arg` of the later switch that
/// resumes this context. Acts as a full compiler barrier, because it is a real call.
///
/// Debug builds check that `save_sp` is non-null and `resume_sp` is a non-zero multiple of
/// [`STACK_ALIGN`]; release builds skip the checks to keep the switch short.
///
/// # Safety
///
/// - `save_sp` must be valid for a write of a `usize`. Nothing may resume the suspended
///   context before this call has written it. The write is a release store, made after the
///   frame is saved and after this thread has moved onto the resumed side's stack, so that not
///   even a signal handler touches the suspended stack once the value is visible: another
///   thread may resume the context once it has loaded the new value with acquire ordering.
///   (Or publish the context only after the switch, from the resumed side.)
/// - `resume_sp` must be the saved stack pointer of a suspended context, from an earlier
///   `switch` or from [`init_stack`], and each saved stack pointer may be resumed only once.
/// - The resumed context's stack must still be alive and not in use by anything else.
#[inline(always)]
pub unsafe fn switch(save_sp: *mut usize, resume_sp: usize, arg: usize) -> usize {
    debug_check_switch("switch", save_sp, resume_sp);
    // SAFETY: the caller upholds switch's contract, which is the raw function's.
    unsafe { arch::switch(save_sp, resume_sp, arg) }
}

/// Switches between two contexts that suspended themselves from the same call site, such as
/// goroutines that yield to each other through one function: [`switch`], tuned for that case.
///
/// On x86_64, [`switch`] resumes the other side with an indirect jump, which the branch
/// predictor learns from history whatever the two call sites are. That leaves the
/// return-address predictor one entry out of step with the stack, so the resumed side's next
/// `ret` misses. This form resumes the other side with `ret` instead: predicted when the
/// resumed side suspended itself from the call site that calls this function, after which
/// the resumed side's returns are predicted too. Between different call sites, as in a
/// coroutine's round trip, every such `ret` misses, so use [`switch`] there. On aarch64 and
/// riscv64 [`switch`] already resumes with `ret`, and this is the same function.
///
/// # Safety
///
/// The same as [`switch`].
#[inline(always)]
pub unsafe fn switch_symmetric(save_sp: *mut usize, resume_sp: usize, arg: usize) -> usize {
    debug_check_switch("switch_symmetric", save_sp, resume_sp);
    // SAFETY: the caller upholds switch's contract, which is the raw function's.
    unsafe { arch::switch_symmetric(save_sp, resume_sp, arg) }
}

/// Switches from a goroutine to its M's g0: [`switch`] under the name of its use.
///
/// It stores the goroutine's FP control state and installs the one in g0's frame, which
/// contains the defaults because g0 suspends itself only with [`switch_from_g0`]. So g0 runs
/// with the defaults whatever the goroutine installed. Together with [`switch_from_g0`], a
/// round trip reads the FP control registers once, on the goroutine's side: g0 has nothing
/// worth reading, and on AMD x86_64 cores that read (`stmxcsr`) is the costliest step.
///
/// # Safety
///
/// The same as [`switch`], and the resumed context must have suspended itself with
/// [`switch_from_g0`] (or be fresh from [`init_stack`]).
#[inline(always)]
pub unsafe fn switch_to_g0(save_sp: *mut usize, resume_sp: usize, arg: usize) -> usize {
    debug_check_switch("switch_to_g0", save_sp, resume_sp);
    // SAFETY: the caller upholds switch's contract, which is the raw function's.
    unsafe { arch::switch(save_sp, resume_sp, arg) }
}

/// Switches from an M's g0 to a goroutine: like [`switch`], but the suspended side does not
/// read its own FP control state. Its frame records the defaults instead.
///
/// The resumed context gets the FP control state that its frame records, as with [`switch`],
/// but the switch compares that state with the defaults, which the caller runs with, instead
/// of reading the registers. So on x86_64, when the frame records the defaults, the resumed
/// context keeps whatever MXCSR status flags the caller raised; the psABI makes them
/// caller-saved. When something resumes the suspended g0 with [`switch_to_g0`] or [`switch`],
/// g0 runs with the defaults again.
///
/// # Safety
///
/// The same as [`switch`], and the calling context must run with the default FP control state
/// (MXCSR 0x1F80 and x87 control word 0x037F on x86_64; FPCR 0 on aarch64; `frm` 0 on
/// riscv64) and must not change it. An M's g0 runs only runtime code, which leaves it alone.
#[inline(always)]
pub unsafe fn switch_from_g0(save_sp: *mut usize, resume_sp: usize, arg: usize) -> usize {
    debug_check_switch("switch_from_g0", save_sp, resume_sp);
    // SAFETY: the caller upholds switch_from_g0's contract, which is the raw function's.
    unsafe { arch::switch_load_fp(save_sp, resume_sp, arg) }
}

/// Suspends the running context in a *light frame* and resumes another light frame,
/// passing a `usize`, without touching the FP control state.
///
/// This is the opt-in for contexts that never change the FP control state, such as a
/// [`Coroutine`] made by [`Coroutine::new_without_fp_switch`]. It is inline asm rather than
/// a call. It saves only the two or three registers that inline asm cannot declare
/// clobbered, plus the resume address, and declares every other register clobbered, so the
/// compiler saves just the callee-saved registers that are live, once per function. The
/// resumed side gets the suspended side's FP control state.
///
/// A light frame has its own layout, so contexts that use this switch form a closed set. A
/// light context starts from [`init_stack_without_fp`] and is only ever resumed by this
/// function. Every context that resumes one suspends itself with this function too. It
/// is still a full compiler barrier for memory that other code can reach (the asm has no
/// `nomem`), and the thread-local caveat of [`switch`] applies.
///
/// Debug builds check that `save_sp` is non-null and `resume_sp` a non-zero multiple of 8.
///
/// # Safety
///
/// - The contract of [`switch`], except that `resume_sp` must come from an earlier
///   `switch_without_fp` or from [`init_stack_without_fp`], never from the other switches
///   or [`init_stack`].
/// - Both sides must run with the default FP control state (the values listed at
///   [`switch_from_g0`]) whenever they switch, because nothing restores a side's own state.
///   A fresh light context gets the defaults from its first frame.
/// - Unlike [`switch`], it writes `*save_sp` with a plain store *before* it leaves the
///   suspended stack. A signal handler may therefore still run on that stack after the value
///   is visible, and on aarch64 and riscv64 another core may see the value before the frame.
///   Resume the suspended context on another thread only after the resumed side has
///   published it with a release store of its own, never by loading `*save_sp` directly.
#[inline(always)]
pub unsafe fn switch_without_fp(save_sp: *mut usize, resume_sp: usize, arg: usize) -> usize {
    debug_assert!(
        !save_sp.is_null(),
        "goro_context::switch_without_fp: save_sp is null; pass the address of the slot that \
         keeps the suspended context's stack pointer"
    );
    debug_assert!(
        resume_sp != 0 && resume_sp.is_multiple_of(8),
        "goro_context::switch_without_fp: resume_sp {resume_sp:#x} is not a saved stack \
         pointer (those are non-zero multiples of 8); pass a value from init_stack_without_fp \
         or from save_sp"
    );
    // SAFETY: the caller upholds switch_without_fp's contract, which is the arch function's.
    unsafe { arch::switch_light(save_sp, resume_sp, arg) }
}

/// Checks the arguments of a switch in debug builds, naming the switch `function`.
#[inline(always)]
fn debug_check_switch(function: &str, save_sp: *mut usize, resume_sp: usize) {
    debug_assert!(
        !save_sp.is_null(),
        "goro_context::{function}: save_sp is null; pass the address of the slot that keeps the \
         suspended context's stack pointer"
    );
    debug_assert!(
        resume_sp != 0 && resume_sp.is_multiple_of(STACK_ALIGN),
        "goro_context::{function}: resume_sp {resume_sp:#x} is not a saved stack pointer (those \
         are non-zero multiples of {STACK_ALIGN}); pass a value from init_stack or from save_sp"
    );
}

/// Installs the default FP control state on the calling thread: the values listed at
/// [`switch_from_g0`]. On x86_64 it also clears the MXCSR status flags.
///
/// A new thread starts with a copy of its creator's FP control state on Linux, so a thread
/// started by code that runs with another state needs this before it serves as an M's g0 or
/// calls [`switch_from_g0`] or [`switch_without_fp`].
#[inline]
pub fn install_default_fp_control() {
    arch::install_default_fp_control();
}

/// Lays out a fresh context at the top of the stack `[stack_lo, stack_hi)` and returns its
/// saved stack pointer.
///
/// The first [`switch`] to the returned stack pointer calls `entry(arg, data)` with the ABI's
/// stack alignment and the default FP control state. `stack_hi` need not be aligned: it is
/// rounded down to [`STACK_ALIGN`]. The bottom frame of the context is a trampoline that
/// debuggers and unwinders treat as the outermost frame.
///
/// # Panics
///
/// If `stack_lo >= stack_hi`, or if fewer than [`INIT_FRAME_SIZE`] bytes remain between
/// `stack_lo` and the rounded-down `stack_hi`.
///
/// # Safety
///
/// `[stack_lo, stack_hi)` must be writable memory that nothing else uses until the context
/// has finished, and large enough for everything that `entry` runs: nothing detects an
/// overflow unless the stack has a guard page below `stack_lo`.
pub unsafe fn init_stack(stack_lo: usize, stack_hi: usize, entry: EntryFn, data: usize) -> usize {
    let top = checked_stack_top("init_stack", stack_lo, stack_hi);
    // SAFETY: `top` is aligned, [top - INIT_FRAME_SIZE, top) lies inside the stack (checked
    // above), and the caller gives the stack to the new context.
    unsafe { arch::init_frame(top, entry, data) }
}

/// Lays out a fresh light context at the top of the stack `[stack_lo, stack_hi)` and returns
/// its saved stack pointer, for [`switch_without_fp`].
///
/// The first [`switch_without_fp`] to the returned stack pointer installs the default FP
/// control state and calls `entry(arg, data)` with the ABI's stack alignment. Everything else
/// is as for [`init_stack`], including the panics and the bottom frame that ends backtraces.
///
/// # Panics
///
/// As [`init_stack`]: the light frame is smaller, but the same [`INIT_FRAME_SIZE`] minimum
/// applies.
///
/// # Safety
///
/// That of [`init_stack`].
pub unsafe fn init_stack_without_fp(
    stack_lo: usize,
    stack_hi: usize,
    entry: EntryFn,
    data: usize,
) -> usize {
    let top = checked_stack_top("init_stack_without_fp", stack_lo, stack_hi);
    // SAFETY: `top` is aligned, [top - INIT_FRAME_SIZE, top) lies inside the stack, and the
    // light frame is smaller. The caller gives the stack to the new context.
    unsafe { arch::init_light_frame(top, entry, data) }
}

/// Returns `stack_hi` rounded down to [`STACK_ALIGN`], after checking that at least
/// [`INIT_FRAME_SIZE`] bytes of the stack lie below it.
fn checked_stack_top(function: &str, stack_lo: usize, stack_hi: usize) -> usize {
    assert!(
        stack_lo < stack_hi,
        "goro_context::{function}: stack_lo {stack_lo:#x} is not below stack_hi {stack_hi:#x}; \
         pass the lowest address and one past the highest address of the stack"
    );
    let top = stack_hi & !(STACK_ALIGN - 1);
    let usable = top.saturating_sub(stack_lo);
    assert!(
        usable >= INIT_FRAME_SIZE,
        "goro_context::{function}: the stack [{stack_lo:#x}, {stack_hi:#x}) has {usable} usable \
         bytes after aligning stack_hi down to {STACK_ALIGN}, but the initial frame alone needs \
         {INIT_FRAME_SIZE}; pass a larger stack"
    );
    top
}

/// Runs `f(arg)` on another stack whose top is `stack_top` and returns its result on the
/// original stack.
///
/// This is Go's `systemstack`: the runtime uses it to run a function on the M's g0 stack.
/// `stack_top` is rounded down to [`STACK_ALIGN`]. The frame of `on_stack` links the two
/// stacks, so a backtrace taken inside `f` continues on the original stack. Its unwind info
/// marks it as a signal frame, which gdb requires when the other stack lies above the
/// original one, so gdb shows it as `<signal handler called>`.
///
/// # Panics
///
/// If `stack_top` is 0, which is the value of a stack that was never set up.
///
/// # Safety
///
/// - The memory below `stack_top` must be writable, not in use by anything else while `f`
///   runs, and large enough for `f`.
/// - `f` may switch to other contexts, but it must be running on this stack again when it
///   returns.
#[inline]
pub unsafe fn on_stack(
    stack_top: usize,
    f: unsafe extern "C" fn(usize) -> usize,
    arg: usize,
) -> usize {
    assert!(
        stack_top != 0,
        "goro_context::on_stack: stack_top is 0; pass one past the highest address of a stack"
    );
    // SAFETY: the caller upholds on_stack's contract, which is the raw function's.
    unsafe { arch::on_stack(stack_top, f, arg) }
}

/// The `extern "C"` functions behind the switches and [`on_stack`], without the checks of the
/// Rust wrappers, for callers in assembly or C and for tests that must call them directly.
/// Their safety contracts are those of the wrappers: `switch` is behind [`switch`] and
/// [`switch_to_g0`], `switch_symmetric` behind [`switch_symmetric`], and `switch_load_fp`
/// behind [`switch_from_g0`]. [`switch_without_fp`] is inline asm and has no function here.
pub mod raw {
    pub use crate::arch::{on_stack, switch, switch_load_fp, switch_symmetric};
    /// On x86_64, `switch` with each of the two ways of installing the resumed side's FP
    /// control state fixed, rather than chosen by CPU vendor: for tests and measurements.
    #[cfg(target_arch = "x86_64")]
    pub use crate::arch::{switch_always_load_fp, switch_compare_fp};
}
