//! Context switching for x86_64 under the System V AMD64 psABI.
//!
//! # Saved state
//!
//! The psABI (section 3.2.1, "Registers") makes rbx, rbp, r12-r15 and rsp callee-saved, and
//! states: "The control bits of the MXCSR register are callee-saved (preserved across calls),
//! while the status bits are caller-saved (not preserved). The x87 status word register is
//! caller-saved, whereas the x87 control word is callee-saved." A switch therefore saves:
//!
//! - rbx, rbp, r12, r13, r14 and r15, pushed on the suspended side's own stack;
//! - rip, as the return address of the `call` to [`switch`];
//! - MXCSR, whole, and the x87 control word.
//!
//! All xmm registers are caller-saved, so none is saved. The x87 status word stays with the OS
//! thread, and so does the fs base, the thread pointer, when a context resumes on another
//! thread. The direction flag is clear at every call boundary, so it needs no saving either.
//!
//! The MXCSR status flags (bits 0-5) are caller-saved, so the ABI allows any value after a
//! switch. [`switch`] gives each context its own flags: the slot contains the whole MXCSR, and
//! the switch installs the resumed side's, or skips the load only when the whole value is
//! the one just stored. [`switch_load_fp`] compares with the defaults instead (see below), so
//! flags that g0 raised reach a resumed side whose slot contains the defaults.
//!
//! # Switch variants and their FP contract
//!
//! The naked functions below share the frame drawn further down, so any of them may resume a
//! context that another suspended. Apart from [`switch_symmetric`], which is [`switch`] with
//! a `ret` in place of the final indirect jump, they differ only in the FP control slot:
//!
//! | function | suspended side's slot | resumed side's slot |
//! |---|---|---|
//! | [`switch_always_load_fp`] | `stmxcsr`, `fnstcw` | `ldmxcsr`, `fldcw` |
//! | [`switch_compare_fp`] | `stmxcsr`, `fnstcw` | loaded only when it differs from the stored one |
//! | [`switch`] | `stmxcsr`, `fnstcw` | as one of the two above, by [`FP_POLICY`] |
//! | [`switch_load_fp`] | the defaults, by one `push` | loaded only when it differs from the defaults |
//!
//! Which of the first two is faster depends on the core. On the AMD EPYC of a shared 2-vCPU
//! VM, `stmxcsr` is microcoded and costs more than the rest of the switch. It took 4.2 ns
//! alone in a throwaway loop of 20 million runs, and `ldmxcsr`, `fnstcw` and `fldcw` about
//! 0.55 ns each. There, reading back the value that `stmxcsr` has just stored stalls. In ping-pong
//! loops of 10 million round trips (best of 5 runs) the compare-and-skip form was 15-35%
//! slower than loading unconditionally. On the Intel Xeon of another shared 2-vCPU VM the
//! stores are cheap and the loads are not. In throwaway loops of 20 million runs, storing
//! both values took 0.75 ns, loading both 1.5 ns, storing then loading both 4.0 ns, and
//! storing, reading back and comparing them 1.0 ns. [`switch`] therefore reads a policy that
//! the first [`init_frame`] of the process sets from the CPUID vendor string: compare on
//! Intel cores, load on all others. The choice sits inside the naked function rather than
//! in a Rust wrapper because a wrapper with two call sites made the compiler stop inlining
//! `Coroutine::send`, and the extra return, after the stacks had changed, missed in the
//! return-address predictor on every round trip: `goro-bench switch goro-coroutine` went
//! from 8.5 ns to 17 ns. With the choice here, on the Intel Xeon (medians of 5 interleaved
//! runs), `goro-bench switch` went from 7.6 ns to 5.5 ns per round trip for `goro-switch`,
//! from 7.0 ns to 3.9 ns for the g0 pair and from 8.5 ns to 6.3 ns for `goro-coroutine`.
//!
//! The runtime reads the FP control registers on one side only. A g suspends itself with
//! [`crate::switch_to_g0`], which stores its state and installs g0's slot. g0 suspends itself
//! with [`switch_load_fp`] (as `switch_from_g0`), which writes the defaults into g0's slot
//! instead of reading the registers. That is sound because g0 runs only runtime code and
//! scheduler hooks, which leave the FP control state alone, and each M thread installs the
//! defaults when it starts. The same contract lets [`switch_load_fp`] compare the resumed
//! side's slot with the defaults instead of with the registers, so it never reads them back.
//! The runtime does no floating-point arithmetic on g0, so its status flags stay clear unless
//! a scheduler hook raises one. The crate's wrappers state each contract.
//!
//! # Light frames
//!
//! Contexts that promise never to leave the default FP control state can use
//! [`switch_light`] instead, inline asm that follows the technique of corosensei 0.3.4. It
//! saves only rbx, rbp and a resume address (the *light frame*). It declares every other
//! register clobbered, so the compiler saves just the live ones, once per function. Light
//! frames and the frames above are not interchangeable. A fresh light context starts in
//! [`light_trampoline`], which installs the defaults. In `goro-bench switch` (10 million
//! round trips, medians of 5 runs, same 2-vCPU AMD EPYC VM) the light ping-pong takes about
//! 2.2 ns, against 3.6 ns for corosensei and 10.5 ns for [`switch`].
//!
//! # Stack of a suspended context
//!
//! The saved stack pointer points at the FP control slot. It is 16-byte aligned, because the
//! caller's rsp was aligned before its `call` and the call plus the seven words below make 64
//! bytes.
//!
//! ```text
//!          |  caller's frame          |
//!          +--------------------------+  <- rsp of the caller before `call switch`
//!  sp + 56 |  return address (rip)    |
//!  sp + 48 |  rbp                     |
//!  sp + 40 |  rbx                     |
//!  sp + 32 |  r12                     |
//!  sp + 24 |  r13                     |
//!  sp + 16 |  r14                     |
//!  sp +  8 |  r15                     |
//!  sp +  0 |  MXCSR (u32) | x87 CW (u16) | unused (u16)
//!          +--------------------------+  <- saved stack pointer (16-byte aligned)
//! ```
//!
//! # Stack of a fresh context
//!
//! [`init_frame`] writes the same layout, so the first [`switch`] to a fresh context is an
//! ordinary switch. Its final jump lands in [`trampoline`], with the entry function and its
//! `data` in rbx and r12 and `arg` in rax.
//!
//! ```text
//!          +--------------------------+  <- top: stack_hi rounded down to 16
//!  sp + 72 |  0                       |  \ padding, so the trampoline's frame ends exactly
//!  sp + 64 |  0                       |  / at `top` and rsp is 16-byte aligned at its `call`
//!  sp + 56 |  address of trampoline   |
//!  sp + 48 |  rbp = 0                 |  ends the frame-pointer chain
//!  sp + 40 |  rbx = entry             |
//!  sp + 32 |  r12 = data              |
//!  sp + 24 |  r13 = 0                 |
//!  sp + 16 |  r14 = 0                 |
//!  sp +  8 |  r15 = 0                 |
//!  sp +  0 |  0x1F80 | 0x037F | 0     |  default MXCSR and x87 control word
//!          +--------------------------+  <- returned stack pointer = top - 80
//! ```

use core::arch::{asm, naked_asm};
use core::sync::atomic::{AtomicU8, Ordering};

use crate::EntryFn;

/// Bytes that [`init_frame`] writes below the aligned top of a stack.
pub(crate) const INIT_FRAME_SIZE: usize = 80;

/// MXCSR at process start on Linux: every exception masked, round to nearest, no flush to
/// zero, no denormals-are-zero, and no status flag set.
pub(crate) const DEFAULT_MXCSR: u32 = 0x1F80;

/// x87 control word after `fninit`: every exception masked, 64-bit precision, round to nearest.
pub(crate) const DEFAULT_X87_CONTROL_WORD: u16 = 0x037F;

/// The FP control slot of a frame that contains the defaults: MXCSR in the low 32 bits and the
/// x87 control word above it.
const DEFAULT_FP_SLOT: u64 = DEFAULT_MXCSR as u64 | (DEFAULT_X87_CONTROL_WORD as u64) << 32;

/// Defines a naked switch function. Every variant writes and reads the frame drawn at the top
/// of this file, so any variant may resume a context that any other variant suspended. They
/// differ only in what they do with the FP control slot. `save` pushes the suspended side's
/// slot and adjusts the CFA right after the push, and `load` installs the resumed side's with
/// rsp at that slot.
///
/// The resumed side continues with an indirect `jmp` to its return address. An invocation may
/// name a second function after the first, marked `with ret`: it has the same body but
/// resumes with `ret` (see `switch_symmetric`).
macro_rules! define_switch {
    (
        $(#[$attr:meta])*
        fn $name:ident;
        $(
            $(#[$ret_attr:meta])*
            fn $ret_name:ident with ret;
        )?
        save: $save:tt;
        check: $check:tt;
        load: $load:tt;
        slow: $slow:tt;
        operands: $operands:tt
    ) => {
        define_switch! {
            @naked
            $(#[$attr])*
            fn $name;
            // `arg` becomes the resumed side's result, or reaches the trampoline of a fresh
            // context in rax. A `ret` here would miss in the return-address predictor unless
            // the resumed side suspended itself from the call site that called us. An
            // indirect jump is predicted from the branch history instead: in the ping-pong
            // loop described at the top of this file, it cut the round trip without FP state
            // from 16-30 ns to 5-7 ns.
            resume: [
                "mov rax, rdx",
                "pop rcx",
                ".cfi_adjust_cfa_offset -8",
                ".cfi_register rip, rcx",
                "jmp rcx"
            ];
            save: $save; check: $check; load: $load; slow: $slow; operands: $operands
        }
        $(
            define_switch! {
                @naked
                $(#[$ret_attr])*
                fn $ret_name;
                resume: ["mov rax, rdx", "ret"];
                save: $save; check: $check; load: $load; slow: $slow; operands: $operands
            }
        )?
    };
    (
        @naked
        $(#[$attr:meta])*
        fn $name:ident;
        resume: [$($resume:literal),*];
        save: [$($save:literal),*];
        check: [$($check:literal),*];
        load: [$($load:literal),*];
        slow: [$($slow:literal),*];
        operands: { $($operand:tt)* }
    ) => {
        $(#[$attr])*
        #[unsafe(naked)]
        pub unsafe extern "C" fn $name(save_sp: *mut usize, resume_sp: usize, arg: usize) -> usize {
            // rdi = save_sp, rsi = resume_sp, rdx = arg.
            naked_asm!(
                ".cfi_startproc",
                // Push the callee-saved integer registers below the return address. The CFI
                // lets a debugger or profiler that stops inside this function unwind out of it.
                "push rbp",
                ".cfi_adjust_cfa_offset 8",
                ".cfi_rel_offset rbp, 0",
                "push rbx",
                ".cfi_adjust_cfa_offset 8",
                ".cfi_rel_offset rbx, 0",
                "push r12",
                ".cfi_adjust_cfa_offset 8",
                ".cfi_rel_offset r12, 0",
                "push r13",
                ".cfi_adjust_cfa_offset 8",
                ".cfi_rel_offset r13, 0",
                "push r14",
                ".cfi_adjust_cfa_offset 8",
                ".cfi_rel_offset r14, 0",
                "push r15",
                ".cfi_adjust_cfa_offset 8",
                ".cfi_rel_offset r15, 0",
                // Push the FP control slot, the lowest word of the frame. Each `save` list
                // adjusts the CFA right after the instruction that moves rsp, so that an
                // unwinder stopped at any later instruction finds the return address.
                $($save,)*
                ".cfi_remember_state",
                $($check,)*
                // Move onto the resumed side's stack, then publish our saved stack pointer.
                // From the moment it is visible another thread may resume us, so this thread,
                // a signal handler included, must already be off our stack. The resumed side's
                // frame has the same layout as ours, so the CFI above stays correct across the
                // move. Every x86 store is a release store, so a thread that loads the pointer
                // with acquire sees the frame pushed above (see `crate::switch`).
                "mov rax, rsp",
                "mov rsp, rsi",
                "mov [rdi], rax",
                $($load,)*
                "add rsp, 8",
                ".cfi_adjust_cfa_offset -8",
                // Pop the resumed side's registers.
                "pop r15",
                ".cfi_adjust_cfa_offset -8",
                ".cfi_restore r15",
                "pop r14",
                ".cfi_adjust_cfa_offset -8",
                ".cfi_restore r14",
                "pop r13",
                ".cfi_adjust_cfa_offset -8",
                ".cfi_restore r13",
                "pop r12",
                ".cfi_adjust_cfa_offset -8",
                ".cfi_restore r12",
                "pop rbx",
                ".cfi_adjust_cfa_offset -8",
                ".cfi_restore rbx",
                "pop rbp",
                ".cfi_adjust_cfa_offset -8",
                ".cfi_restore rbp",
                // Continue the resumed side with `arg` as the result of its own switch call, or
                // in rax for the trampoline of a fresh context.
                $($resume,)*
                // Out-of-line code of the variant, which `check` jumps to with the frame pushed.
                ".cfi_restore_state",
                $($slow,)*
                ".cfi_endproc",
                $($operand)*
            )
        }
    };
}

define_switch! {
    /// Saves the current context on its stack, stores its stack pointer into `*save_sp` and
    /// resumes the context whose saved stack pointer is `resume_sp`, which receives `arg`.
    /// Stores this context's MXCSR and x87 control word and installs the resumed side's: on
    /// Intel cores only when they differ, on others always (see the file's documentation).
    ///
    /// # Safety
    ///
    /// The same as [`crate::switch`].
    fn switch;
    /// [`switch`], but the resumed side continues through `ret`. The return-address
    /// predictor expects this function's caller, so the `ret` is predicted when the resumed
    /// side suspended itself from the same call site, as goroutines that yield to each other
    /// through one function do. Then the return addresses in the predictor stay in step with
    /// the stack: after the indirect jump of [`switch`], the resumed side's next
    /// `ret` misses instead. On a 2-vCPU Intel Xeon VM (medians of 7 interleaved runs), a
    /// yield of `goro-bench yield` went from 23.4 to 10.0 ns with Fifo and from 31.8 to 17.9
    /// ns with WorkStealing. Between different call sites every such `ret` misses: with `ret`
    /// in [`switch`], the `goro-switch` round trip of `goro-bench switch` took 20.5 ns
    /// instead of 5.6 ns.
    ///
    /// # Safety
    ///
    /// The same as [`crate::switch`].
    fn switch_symmetric with ret;
    // `fnstcw` is the form that does not wait for pending x87 exceptions.
    save: ["sub rsp, 8", ".cfi_adjust_cfa_offset 8", "stmxcsr [rsp]", "fnstcw [rsp + 4]"];
    // The resumed side's slot is at [rsi], on a stack that this thread owns until it resumes
    // that side, so it can be read before the move. A plain load of the policy suffices: the
    // byte changes once, from 0 to its final value, and 0 takes the path that is correct
    // everywhere.
    check: [
        "cmp byte ptr [rip + {policy}], {compare}",
        "jne 3f",
        "mov ecx, [rsp]",
        "cmp ecx, [rsi]",
        "jne 3f",
        "movzx ecx, word ptr [rsp + 4]",
        "cmp cx, [rsi + 4]",
        "jne 3f",
        "2:"
    ];
    load: [];
    slow: ["3:", "ldmxcsr [rsi]", "fldcw [rsi + 4]", "jmp 2b"];
    operands: { policy = sym FP_POLICY, compare = const FP_COMPARE, }
}

define_switch! {
    /// [`switch`] with the policy of CPUs other than Intel's: always loads the resumed side's
    /// MXCSR and x87 control word.
    ///
    /// # Safety
    ///
    /// The same as [`crate::switch`].
    fn switch_always_load_fp;
    save: ["sub rsp, 8", ".cfi_adjust_cfa_offset 8", "stmxcsr [rsp]", "fnstcw [rsp + 4]"];
    check: [];
    load: ["ldmxcsr [rsp]", "fldcw [rsp + 4]"];
    slow: [];
    operands: {}
}

define_switch! {
    /// [`switch`] with the policy of Intel CPUs: skips the loads when the resumed side's
    /// MXCSR and x87 control word equal the ones just stored.
    ///
    /// # Safety
    ///
    /// The same as [`crate::switch`].
    fn switch_compare_fp;
    save: ["sub rsp, 8", ".cfi_adjust_cfa_offset 8", "stmxcsr [rsp]", "fnstcw [rsp + 4]"];
    // As in `switch`.
    check: [
        "mov ecx, [rsp]",
        "cmp ecx, [rsi]",
        "jne 3f",
        "movzx ecx, word ptr [rsp + 4]",
        "cmp cx, [rsi + 4]",
        "jne 3f",
        "2:"
    ];
    load: [];
    slow: ["3:", "ldmxcsr [rsi]", "fldcw [rsi + 4]", "jmp 2b"];
    operands: {}
}

define_switch! {
    /// Like [`switch`], but writes the default MXCSR and x87 control word into this context's
    /// slot instead of reading the registers, which skips the microcoded `stmxcsr`.
    ///
    /// # Safety
    ///
    /// The same as [`crate::switch_from_g0`].
    fn switch_load_fp;
    save: ["mov rcx, {default_slot}", "push rcx", ".cfi_adjust_cfa_offset 8"];
    // This side runs with the defaults, so the resumed side needs no load when its slot
    // records them too. Bytes 6 and 7 of a slot are not compared, because the forms that
    // store with `stmxcsr` leave them undefined.
    check: [
        "cmp dword ptr [rsi], {default_mxcsr}",
        "jne 3f",
        "cmp word ptr [rsi + 4], {default_control_word}",
        "jne 3f",
        "2:"
    ];
    load: [];
    slow: ["3:", "ldmxcsr [rsi]", "fldcw [rsi + 4]", "jmp 2b"];
    operands: {
        default_slot = const DEFAULT_FP_SLOT,
        default_mxcsr = const DEFAULT_MXCSR,
        default_control_word = const DEFAULT_X87_CONTROL_WORD,
    }
}

/// Bottom frame of every fresh context: calls `entry(arg, data)` and never returns.
///
/// The first [`switch`] into a fresh context returns here with rax = `arg`, rbx = `entry`,
/// r12 = `data`, rbp = 0 and rsp 16-byte aligned. The CFI marks rip as undefined, so debuggers
/// and unwinders (gdb, libgcc's `_Unwind_Backtrace`) treat this frame as the outermost one,
/// and rbp = 0 ends the frame-pointer chain for profilers that walk it.
///
/// # Safety
///
/// Only a naked switch of this file may enter this function, through a frame written by
/// [`init_frame`].
#[unsafe(naked)]
pub unsafe extern "C" fn trampoline() -> ! {
    naked_asm!(
        ".cfi_startproc",
        // rsp is 16 bytes below the aligned top of the stack, above which nothing lives.
        ".cfi_def_cfa rsp, 16",
        ".cfi_undefined rip",
        // entry(arg, data). The `call` pushes a return address that points into this
        // function, so an unwinder walking out of `entry` finds the CFI above.
        "mov rdi, rax",
        "mov rsi, r12",
        "call rbx",
        // `entry` never returns. The trap keeps the return address inside this function.
        "ud2",
        ".cfi_endproc",
    )
}

/// Bytes that [`init_light_frame`] writes below the aligned top of a stack.
pub(crate) const LIGHT_INIT_FRAME_SIZE: usize = 24;

/// Suspends the current context in a light frame, stores its stack pointer into `*save_sp`
/// and resumes the light frame at `resume_sp`, which receives `arg`.
///
/// The asm saves only rbx and rbp, which inline asm cannot name as clobbers, and the resume
/// address. It declares every other register clobbered, so the compiler saves the
/// callee-saved ones that are live, once per function rather than once per switch. Both
/// sides resume the other with an indirect `jmp`, which the branch predictor learns, while a
/// `ret` would miss in the return-address predictor. The asm leaves the FP control state
/// alone. The saved stack pointer is 8 modulo 16, because rsp is 16-byte aligned at an asm
/// block that may push, unlike the 16-byte-aligned full frames of [`switch`].
///
/// # Safety
///
/// The same as [`crate::switch_without_fp`].
#[inline(always)]
pub(crate) unsafe fn switch_light(save_sp: *mut usize, resume_sp: usize, arg: usize) -> usize {
    let result: usize;
    // SAFETY: the caller passes a writable `save_sp` and the saved stack pointer of a light
    // frame, whose resume address restores that side's rbx and rbp and continues it.
    unsafe {
        asm!(
            "push rbp",
            "push rbx",
            "lea rax, [rip + 2f]",
            "push rax",
            // Publish the saved stack pointer, then move onto the resumed side's stack.
            "mov [rdi], rsp",
            "mov rsp, rsi",
            "pop rax",
            "jmp rax",
            // Resumed here by the other side's `jmp`, with its `arg` in rdx.
            "2:",
            "pop rbx",
            "pop rbp",
            in("rdi") save_sp,
            in("rsi") resume_sp,
            inout("rdx") arg => result,
            out("r12") _,
            out("r13") _,
            out("r14") _,
            out("r15") _,
            clobber_abi("C"),
        )
    };
    result
}

/// Bottom frame of every fresh light context: installs the default FP control state and
/// calls `entry(arg, data)`, and never returns.
///
/// [`switch_light`] jumps here with rdx = `arg` and rsp pointing at `entry` and `data`, 16
/// bytes below the aligned top of the stack. The CFI and rbp end backtraces as in
/// [`trampoline`].
///
/// # Safety
///
/// Only [`switch_light`] may enter this function, through a frame written by
/// [`init_light_frame`].
#[unsafe(naked)]
pub unsafe extern "C" fn light_trampoline() -> ! {
    naked_asm!(
        ".cfi_startproc",
        ".cfi_def_cfa rsp, 16",
        ".cfi_undefined rip",
        "mov rax, [rsp]",
        "mov rsi, [rsp + 8]",
        // Install the defaults through the entry slot, which is no longer needed.
        "mov rcx, {default_slot}",
        "mov [rsp], rcx",
        "ldmxcsr [rsp]",
        "fldcw [rsp + 4]",
        "xor ebp, ebp",
        "mov rdi, rdx",
        "call rax",
        "ud2",
        ".cfi_endproc",
        default_slot = const DEFAULT_FP_SLOT,
    )
}

/// Writes the light frame of a fresh context below `top` and returns its saved stack
/// pointer:
///
/// ```text
///          +--------------------------+  <- top: stack_hi rounded down to 16
///  sp + 16 |  data                    |
///  sp +  8 |  entry                   |
///  sp +  0 |  address of the light trampoline
///          +--------------------------+  <- returned stack pointer = top - 24
/// ```
///
/// # Safety
///
/// `top` must be 16-byte aligned, and the [`LIGHT_INIT_FRAME_SIZE`] bytes below it must be
/// valid for writes and owned by the new context.
pub(crate) unsafe fn init_light_frame(top: usize, entry: EntryFn, data: usize) -> usize {
    let sp = top - LIGHT_INIT_FRAME_SIZE;
    let words: [usize; 3] = [light_trampoline as *const () as usize, entry as usize, data];
    // SAFETY: the caller guarantees that [sp, top) is writable, and `sp` is 8-byte aligned.
    unsafe { (sp as *mut [usize; 3]).write(words) };
    sp
}

/// Calls `f(arg)` with rsp set to `stack_top` rounded down to 16 bytes and returns its result
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
    // rdi = stack_top, rsi = f, rdx = arg.
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
        // Build a frame record on the original stack, so that both the CFI (through rbp) and
        // frame-pointer walkers find the way back from the other stack.
        "push rbp",
        ".cfi_adjust_cfa_offset 8",
        ".cfi_rel_offset rbp, 0",
        "mov rbp, rsp",
        ".cfi_def_cfa_register rbp",
        // Move to the other stack, aligned as the psABI requires at a `call`.
        "and rdi, -16",
        "mov rsp, rdi",
        "mov rdi, rdx",
        "call rsi",
        // Return to the original stack. rax contains f's result.
        "mov rsp, rbp",
        ".cfi_def_cfa_register rsp",
        "pop rbp",
        ".cfi_adjust_cfa_offset -8",
        ".cfi_restore rbp",
        "ret",
        ".cfi_endproc",
    )
}

/// Installs the default MXCSR and x87 control word.
pub(crate) fn install_default_fp_control() {
    let defaults: (u32, u16) = (DEFAULT_MXCSR, DEFAULT_X87_CONTROL_WORD);
    // SAFETY: the loads read the local above, and the defaults are the state that Rust code
    // assumes, with every FP exception masked.
    unsafe {
        core::arch::asm!(
            "ldmxcsr [{mxcsr}]",
            "fldcw [{control_word}]",
            mxcsr = in(reg) &raw const defaults.0,
            control_word = in(reg) &raw const defaults.1,
            options(nostack, preserves_flags, readonly),
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
    choose_fp_policy();
    let sp = top - INIT_FRAME_SIZE;
    let words: [usize; INIT_FRAME_SIZE / 8] = [
        DEFAULT_FP_SLOT as usize,
        0,                                // r15
        0,                                // r14
        0,                                // r13
        data,                             // r12
        entry as usize,                   // rbx
        0,                                // rbp
        trampoline as *const () as usize, // return address
        0,
        0,
    ];
    // SAFETY: the caller guarantees that [sp, top) is writable, and `sp` is 16-byte aligned
    // because `top` is and INIT_FRAME_SIZE is a multiple of 16.
    unsafe { (sp as *mut [usize; INIT_FRAME_SIZE / 8]).write(words) };
    sp
}

/// The way [`switch`] installs the resumed side's FP control state on this CPU: 0 until the
/// first [`init_frame`] of the process, then [`FP_LOAD`] or [`FP_COMPARE`]. 0 and [`FP_LOAD`]
/// take the same path, which is correct on every CPU, so a switch that reads a stale 0 is only
/// slower.
static FP_POLICY: AtomicU8 = AtomicU8::new(0);
/// Load the resumed side's state unconditionally: the faster policy on AMD cores.
const FP_LOAD: u8 = 1;
/// Compare it with the state just stored, and load it only when it differs: the faster policy
/// on Intel cores.
const FP_COMPARE: u8 = 2;

/// Sets [`FP_POLICY`] from the CPUID vendor string, once per process.
fn choose_fp_policy() {
    // Relaxed: the value is a pure function of the CPU, so every thread that computes it
    // stores the same one, and `switch` is correct whichever value it reads.
    if FP_POLICY.load(Ordering::Relaxed) != 0 {
        return;
    }
    // SAFETY: every x86_64 CPU has `cpuid`, and leaf 0 only reads the vendor string. Newer
    // compilers declare the intrinsic safe, older ones within `rust-version` do not.
    #[allow(unused_unsafe)]
    let vendor = unsafe { core::arch::x86_64::__cpuid(0) };
    let intel = (vendor.ebx, vendor.edx, vendor.ecx) == (0x756e_6547, 0x4965_6e69, 0x6c65_746e);
    let policy = if intel { FP_COMPARE } else { FP_LOAD };
    FP_POLICY.store(policy, Ordering::Relaxed);
}
