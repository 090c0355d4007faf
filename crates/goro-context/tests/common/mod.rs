//! Helpers shared by the integration tests: stacks with a guard page, and per-architecture
//! probes of the stack pointer, the FP control state and the callee-saved registers.
//!
//! Each test file includes this module and uses a part of it.
#![allow(dead_code)]

use std::ptr;

/// An anonymous mapping used as a stack, with an inaccessible guard page below it so that an
/// overflow faults instead of corrupting memory.
pub struct TestStack {
    mapping: *mut libc::c_void,
    mapping_len: usize,
    page_size: usize,
}

impl TestStack {
    /// Maps a stack of at least `size` bytes (rounded up to whole pages) plus a guard page.
    pub fn new(size: usize) -> TestStack {
        // SAFETY: sysconf has no preconditions.
        let page_size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
        let usable = size.div_ceil(page_size) * page_size;
        let mapping_len = usable + page_size;

        // SAFETY: an anonymous private mapping at an address of the kernel's choosing touches
        // no existing memory.
        let mapping = unsafe {
            libc::mmap(
                ptr::null_mut(),
                mapping_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(
            mapping,
            libc::MAP_FAILED,
            "mmap of a {mapping_len}-byte test stack failed: {}",
            std::io::Error::last_os_error()
        );

        // SAFETY: the first page belongs to the mapping created above.
        let protected = unsafe { libc::mprotect(mapping, page_size, libc::PROT_NONE) };
        assert_eq!(
            protected,
            0,
            "mprotect of the guard page failed: {}",
            std::io::Error::last_os_error()
        );
        TestStack {
            mapping,
            mapping_len,
            page_size,
        }
    }

    /// Returns the lowest usable address, just above the guard page.
    pub fn lo(&self) -> usize {
        self.mapping as usize + self.page_size
    }

    /// Returns one past the highest usable address, which is page-aligned.
    pub fn hi(&self) -> usize {
        self.mapping as usize + self.mapping_len
    }
}

impl Drop for TestStack {
    fn drop(&mut self) {
        // SAFETY: the mapping was created in `new` and nothing uses it any more.
        unsafe { libc::munmap(self.mapping, self.mapping_len) };
    }
}

/// Type of the Rust function that [`entry_sp_probe`] jumps to: the entry arguments plus the
/// stack pointer that the probe found at its own entry.
pub type ProbedEntry = unsafe extern "C" fn(arg: usize, data: usize, entry_sp: usize) -> !;

/// Block that `data` must point to when a context's entry is [`entry_sp_probe`]. It may be the
/// first field of a larger `#[repr(C)]` struct.
#[repr(C)]
pub struct ProbeTarget {
    pub entry: ProbedEntry,
}

/// Registers that [`switch_with_junk`] checks, in the order of the bits of
/// [`JunkCheck::mismatches`]: bit 0 is the first name.
#[cfg(target_arch = "x86_64")]
pub const CHECKED_REGISTERS: &[&str] = &[
    "rbx",
    "rbp",
    "r12",
    "r13",
    "r14",
    "r15",
    "mxcsr",
    "x87 control word",
];
#[cfg(target_arch = "aarch64")]
pub const CHECKED_REGISTERS: &[&str] = &[
    "x19", "x20", "x21", "x22", "x23", "x24", "x25", "x26", "x27", "x28", "x29", "d8", "d9", "d10",
    "d11", "d12", "d13", "d14", "d15", "fpcr",
];
#[cfg(target_arch = "riscv64")]
pub const CHECKED_REGISTERS: &[&str] = &[
    "s0", "s1", "s2", "s3", "s4", "s5", "s6", "s7", "s8", "s9", "s10", "s11", "fs0", "fs1", "fs2",
    "fs3", "fs4", "fs5", "fs6", "fs7", "fs8", "fs9", "fs10", "fs11", "frm",
];

/// Type of the raw switch functions in `goro_context::raw`.
pub type RawSwitch =
    unsafe extern "C" fn(save_sp: *mut usize, resume_sp: usize, arg: usize) -> usize;

/// Input and output of [`switch_with_junk`].
#[repr(C)]
#[derive(Debug)]
pub struct JunkCheck {
    /// Base of the junk: the n-th checked integer or FP register gets `seed + n + 1`.
    pub seed: u64,
    /// Raw FP control value installed before the switch and expected after it, in the
    /// encoding of [`FpControl::to_raw`].
    pub fp_control: u64,
    /// Output: bit i is set when register `CHECKED_REGISTERS[i]` changed across the switch.
    pub mismatches: u64,
    /// The raw switch function to call, `goro_context::raw::switch` by default.
    pub switch: RawSwitch,
}

impl Default for JunkCheck {
    fn default() -> JunkCheck {
        JunkCheck {
            seed: 0,
            fp_control: 0,
            mismatches: 0,
            switch: goro_context::raw::switch,
        }
    }
}

const _: () = assert!(std::mem::offset_of!(JunkCheck, switch) == 24);

impl JunkCheck {
    /// Names of the registers that changed, for assertion messages.
    pub fn changed_registers(&self) -> Vec<&'static str> {
        CHECKED_REGISTERS
            .iter()
            .enumerate()
            .filter(|(bit, _)| self.mismatches & (1 << bit) != 0)
            .map(|(_, name)| *name)
            .collect()
    }
}

/// FP control state of the current thread, in the architecture's own registers.
#[cfg(target_arch = "x86_64")]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FpControl {
    pub mxcsr: u32,
    pub x87_control_word: u16,
}

#[cfg(target_arch = "x86_64")]
impl FpControl {
    /// MXCSR and x87 control word at process start.
    pub const DEFAULT: FpControl = FpControl {
        mxcsr: 0x1F80,
        x87_control_word: 0x037F,
    };
    /// Round toward zero with flush-to-zero and denormals-are-zero in MXCSR, and round toward
    /// zero with 53-bit precision in the x87 control word. All exceptions stay masked.
    pub const ROUND_TO_ZERO_FLUSH: FpControl = FpControl {
        mxcsr: 0x1F80 | 0x6000 | 0x8000 | 0x0040,
        x87_control_word: 0x027F | 0x0C00,
    };
    /// Round down in both units, with the MXCSR invalid-operation flag set and the x87 at
    /// 24-bit precision.
    pub const ROUND_DOWN: FpControl = FpControl {
        mxcsr: 0x1F80 | 0x2000 | 0x0001,
        x87_control_word: 0x007F | 0x0400,
    };
    /// Mask of the MXCSR control bits; the rest are status flags.
    pub const MXCSR_CONTROL_BITS: u32 = 0xFFC0;

    pub fn read() -> FpControl {
        let mut mxcsr = 0u32;
        let mut x87_control_word = 0u16;
        // SAFETY: both instructions only store the current state into the given locals.
        unsafe {
            core::arch::asm!(
                "stmxcsr [{mxcsr}]",
                "fnstcw [{cw}]",
                mxcsr = in(reg) &raw mut mxcsr,
                cw = in(reg) &raw mut x87_control_word,
                options(nostack),
            )
        };
        FpControl {
            mxcsr,
            x87_control_word,
        }
    }

    /// Installs this state on the current thread.
    ///
    /// # Safety
    ///
    /// Rust code compiled for the default FP environment may behave unexpectedly until the
    /// default is restored; callers restore it before returning to the test harness.
    pub unsafe fn install(self) {
        // SAFETY: the values keep every exception masked and no reserved bit set.
        unsafe {
            core::arch::asm!(
                "ldmxcsr [{mxcsr}]",
                "fldcw [{cw}]",
                mxcsr = in(reg) &raw const self.mxcsr,
                cw = in(reg) &raw const self.x87_control_word,
                options(nostack),
            )
        };
    }

    /// The state with only the control bits that a fresh context must get from the defaults.
    pub fn control_bits(self) -> FpControl {
        FpControl {
            mxcsr: self.mxcsr & Self::MXCSR_CONTROL_BITS,
            x87_control_word: self.x87_control_word,
        }
    }

    /// Returns whether this state flushes subnormal results to zero.
    pub fn flushes_to_zero(self) -> bool {
        self.mxcsr & 0x8000 != 0
    }

    pub fn to_raw(self) -> u64 {
        self.mxcsr as u64 | (self.x87_control_word as u64) << 32
    }
}

#[cfg(target_arch = "aarch64")]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FpControl {
    pub fpcr: u64,
}

#[cfg(target_arch = "aarch64")]
impl FpControl {
    pub const DEFAULT: FpControl = FpControl { fpcr: 0 };
    /// RMode = round toward zero (bits 22-23 = 0b11) and FZ (bit 24).
    pub const ROUND_TO_ZERO_FLUSH: FpControl = FpControl {
        fpcr: 0b11 << 22 | 1 << 24,
    };
    /// RMode = round toward minus infinity (0b10) and DN, default NaN (bit 25).
    pub const ROUND_DOWN: FpControl = FpControl {
        fpcr: 0b10 << 22 | 1 << 25,
    };

    pub fn read() -> FpControl {
        let fpcr: u64;
        // SAFETY: reading FPCR has no side effects.
        unsafe { core::arch::asm!("mrs {}, fpcr", out(reg) fpcr, options(nomem, nostack)) };
        FpControl { fpcr }
    }

    /// Installs this state on the current thread.
    ///
    /// # Safety
    ///
    /// Rust code compiled for the default FP environment may behave unexpectedly until the
    /// default is restored; callers restore it before returning to the test harness.
    pub unsafe fn install(self) {
        // SAFETY: the values enable no exception trap and set no reserved bit.
        unsafe { core::arch::asm!("msr fpcr, {}", in(reg) self.fpcr, options(nomem, nostack)) };
    }

    pub fn control_bits(self) -> FpControl {
        self
    }

    pub fn flushes_to_zero(self) -> bool {
        self.fpcr & 1 << 24 != 0
    }

    pub fn to_raw(self) -> u64 {
        self.fpcr
    }
}

#[cfg(target_arch = "riscv64")]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FpControl {
    pub frm: u64,
}

#[cfg(target_arch = "riscv64")]
impl FpControl {
    pub const DEFAULT: FpControl = FpControl { frm: 0 };
    /// Round toward zero. RISC-V has no flush-to-zero mode.
    pub const ROUND_TO_ZERO_FLUSH: FpControl = FpControl { frm: 1 };
    /// Round toward minus infinity.
    pub const ROUND_DOWN: FpControl = FpControl { frm: 2 };

    pub fn read() -> FpControl {
        let frm: u64;
        // SAFETY: reading frm has no side effects.
        unsafe { core::arch::asm!("frrm {}", out(reg) frm, options(nomem, nostack)) };
        FpControl { frm }
    }

    /// Installs this state on the current thread.
    ///
    /// # Safety
    ///
    /// Rust code compiled for the default FP environment may behave unexpectedly until the
    /// default is restored; callers restore it before returning to the test harness.
    pub unsafe fn install(self) {
        // SAFETY: the values are valid rounding modes.
        unsafe { core::arch::asm!("fsrm {}", in(reg) self.frm, options(nomem, nostack)) };
    }

    pub fn control_bits(self) -> FpControl {
        self
    }

    pub fn flushes_to_zero(self) -> bool {
        false
    }

    pub fn to_raw(self) -> u64 {
        self.frm
    }
}

/// Bits of `1.0 / 10.0` rounded to nearest, which rounds up; toward zero it is one ulp lower.
pub const ONE_TENTH_NEAREST: u64 = 0x3FB9_9999_9999_999A;
pub const ONE_TENTH_TOWARD_ZERO: u64 = 0x3FB9_9999_9999_9999;

/// Divides 1 by 10 with the thread's current rounding mode and returns the bits.
#[inline(never)]
pub fn one_tenth_bits() -> u64 {
    (std::hint::black_box(1.0f64) / std::hint::black_box(10.0f64)).to_bits()
}

/// Halves the smallest normal f64, whose exact result is subnormal, so flush-to-zero makes it
/// zero.
#[inline(never)]
pub fn halved_min_positive() -> f64 {
    std::hint::black_box(f64::MIN_POSITIVE) * std::hint::black_box(0.5f64)
}

#[cfg(target_arch = "x86_64")]
mod arch {
    use super::{JunkCheck, ProbeTarget};
    use core::arch::naked_asm;

    /// Returns the caller's stack pointer at its `call`, which the ABI keeps 16-byte aligned.
    #[unsafe(naked)]
    pub extern "C" fn caller_sp() -> usize {
        naked_asm!("lea rax, [rsp + 8]", "ret")
    }

    /// Context entry that passes the caller-side stack pointer (rsp + 8, the value before the
    /// `call`) to the `ProbeTarget` that `data` points to.
    ///
    /// # Safety
    ///
    /// `data` must point to a `ProbeTarget`.
    #[unsafe(naked)]
    pub unsafe extern "C" fn entry_sp_probe(arg: usize, data: usize) -> ! {
        naked_asm!("lea rdx, [rsp + 8]", "jmp [rsi]")
    }

    /// Fills every callee-saved register and the FP control state with junk from `check`,
    /// calls `check.switch(save_sp, resume_sp, arg)`, checks its own junk when
    /// the switch returns, writes the result into `check.mismatches`, restores the caller's
    /// registers and returns the switch's result.
    ///
    /// # Safety
    ///
    /// The contract of the raw switch in `check`, and `check` must be valid for reads and
    /// writes.
    #[unsafe(naked)]
    pub unsafe extern "C" fn switch_with_junk(
        save_sp: *mut usize,
        resume_sp: usize,
        arg: usize,
        check: *mut JunkCheck,
    ) -> usize {
        naked_asm!(
            // Save the caller's callee-saved state. Locals: [rsp] = check, [rsp + 8] = the
            // caller's MXCSR and x87 control word, [rsp + 16] = scratch, [rsp + 24] = result.
            "push rbp",
            "push rbx",
            "push r12",
            "push r13",
            "push r14",
            "push r15",
            "sub rsp, 40",
            "mov [rsp], rcx",
            "stmxcsr [rsp + 8]",
            "fnstcw [rsp + 12]",
            // Install the junk.
            "ldmxcsr [rcx + 8]",
            "fldcw [rcx + 12]",
            "mov rax, [rcx]",
            "lea rbx, [rax + 1]",
            "lea rbp, [rax + 2]",
            "lea r12, [rax + 3]",
            "lea r13, [rax + 4]",
            "lea r14, [rax + 5]",
            "lea r15, [rax + 6]",
            "call [rcx + 24]",
            "mov [rsp + 24], rax",
            // Compare each register with its junk; bit n of r8 is set on a mismatch.
            "mov rcx, [rsp]",
            "mov rdi, [rcx]",
            "xor r8d, r8d",
            "lea rsi, [rdi + 1]",
            "cmp rbx, rsi",
            "setne al",
            "movzx eax, al",
            "or r8, rax",
            "lea rsi, [rdi + 2]",
            "cmp rbp, rsi",
            "setne al",
            "movzx eax, al",
            "shl eax, 1",
            "or r8, rax",
            "lea rsi, [rdi + 3]",
            "cmp r12, rsi",
            "setne al",
            "movzx eax, al",
            "shl eax, 2",
            "or r8, rax",
            "lea rsi, [rdi + 4]",
            "cmp r13, rsi",
            "setne al",
            "movzx eax, al",
            "shl eax, 3",
            "or r8, rax",
            "lea rsi, [rdi + 5]",
            "cmp r14, rsi",
            "setne al",
            "movzx eax, al",
            "shl eax, 4",
            "or r8, rax",
            "lea rsi, [rdi + 6]",
            "cmp r15, rsi",
            "setne al",
            "movzx eax, al",
            "shl eax, 5",
            "or r8, rax",
            "stmxcsr [rsp + 16]",
            "mov eax, [rsp + 16]",
            "cmp eax, [rcx + 8]",
            "setne al",
            "movzx eax, al",
            "shl eax, 6",
            "or r8, rax",
            "fnstcw [rsp + 16]",
            "movzx eax, word ptr [rsp + 16]",
            "movzx esi, word ptr [rcx + 12]",
            "cmp eax, esi",
            "setne al",
            "movzx eax, al",
            "shl eax, 7",
            "or r8, rax",
            "mov [rcx + 16], r8",
            // Restore the caller's state and return the switch's result.
            "ldmxcsr [rsp + 8]",
            "fldcw [rsp + 12]",
            "mov rax, [rsp + 24]",
            "add rsp, 40",
            "pop r15",
            "pop r14",
            "pop r13",
            "pop r12",
            "pop rbx",
            "pop rbp",
            "ret",
        )
    }

    const _: () = assert!(std::mem::offset_of!(ProbeTarget, entry) == 0);
}

#[cfg(target_arch = "aarch64")]
mod arch {
    use super::{JunkCheck, ProbeTarget};
    use core::arch::naked_asm;

    /// Returns the caller's stack pointer at its `bl`, which the ABI keeps 16-byte aligned.
    #[unsafe(naked)]
    pub extern "C" fn caller_sp() -> usize {
        naked_asm!("mov x0, sp", "ret")
    }

    /// Context entry that passes its stack pointer at entry to the `ProbeTarget` that `data`
    /// points to.
    ///
    /// # Safety
    ///
    /// `data` must point to a `ProbeTarget`.
    #[unsafe(naked)]
    pub unsafe extern "C" fn entry_sp_probe(arg: usize, data: usize) -> ! {
        naked_asm!("mov x2, sp", "ldr x9, [x1]", "br x9")
    }

    /// Fills every callee-saved register and FPCR with junk from `check`, calls
    /// `check.switch(save_sp, resume_sp, arg)`, checks its own junk when the
    /// switch returns, writes the result into `check.mismatches`, restores the caller's
    /// registers and returns the switch's result.
    ///
    /// # Safety
    ///
    /// The contract of the raw switch in `check`, and `check` must be valid for reads and
    /// writes.
    #[unsafe(naked)]
    pub unsafe extern "C" fn switch_with_junk(
        save_sp: *mut usize,
        resume_sp: usize,
        arg: usize,
        check: *mut JunkCheck,
    ) -> usize {
        naked_asm!(
            // Save the caller's callee-saved state, `check` and the caller's FPCR.
            "stp x29, x30, [sp, #-176]!",
            "stp x19, x20, [sp, #16]",
            "stp x21, x22, [sp, #32]",
            "stp x23, x24, [sp, #48]",
            "stp x25, x26, [sp, #64]",
            "stp x27, x28, [sp, #80]",
            "stp d8, d9, [sp, #96]",
            "stp d10, d11, [sp, #112]",
            "stp d12, d13, [sp, #128]",
            "stp d14, d15, [sp, #144]",
            "mrs x9, fpcr",
            "stp x3, x9, [sp, #160]",
            // Install the junk.
            "ldr x9, [x3, #8]",
            "msr fpcr, x9",
            "ldr x9, [x3]",
            "add x19, x9, #1",
            "add x20, x9, #2",
            "add x21, x9, #3",
            "add x22, x9, #4",
            "add x23, x9, #5",
            "add x24, x9, #6",
            "add x25, x9, #7",
            "add x26, x9, #8",
            "add x27, x9, #9",
            "add x28, x9, #10",
            "add x29, x9, #11",
            "add x10, x9, #12",
            "fmov d8, x10",
            "add x10, x9, #13",
            "fmov d9, x10",
            "add x10, x9, #14",
            "fmov d10, x10",
            "add x10, x9, #15",
            "fmov d11, x10",
            "add x10, x9, #16",
            "fmov d12, x10",
            "add x10, x9, #17",
            "fmov d13, x10",
            "add x10, x9, #18",
            "fmov d14, x10",
            "add x10, x9, #19",
            "fmov d15, x10",
            "ldr x9, [x3, #24]",
            "blr x9",
            // Compare each register with its junk; bit n of x11 is set on a mismatch.
            "ldr x3, [sp, #160]",
            "ldr x9, [x3]",
            "mov x11, #0",
            "add x10, x9, #1",
            "cmp x19, x10",
            "cset x12, ne",
            "orr x11, x11, x12",
            "add x10, x9, #2",
            "cmp x20, x10",
            "cset x12, ne",
            "orr x11, x11, x12, lsl #1",
            "add x10, x9, #3",
            "cmp x21, x10",
            "cset x12, ne",
            "orr x11, x11, x12, lsl #2",
            "add x10, x9, #4",
            "cmp x22, x10",
            "cset x12, ne",
            "orr x11, x11, x12, lsl #3",
            "add x10, x9, #5",
            "cmp x23, x10",
            "cset x12, ne",
            "orr x11, x11, x12, lsl #4",
            "add x10, x9, #6",
            "cmp x24, x10",
            "cset x12, ne",
            "orr x11, x11, x12, lsl #5",
            "add x10, x9, #7",
            "cmp x25, x10",
            "cset x12, ne",
            "orr x11, x11, x12, lsl #6",
            "add x10, x9, #8",
            "cmp x26, x10",
            "cset x12, ne",
            "orr x11, x11, x12, lsl #7",
            "add x10, x9, #9",
            "cmp x27, x10",
            "cset x12, ne",
            "orr x11, x11, x12, lsl #8",
            "add x10, x9, #10",
            "cmp x28, x10",
            "cset x12, ne",
            "orr x11, x11, x12, lsl #9",
            "add x10, x9, #11",
            "cmp x29, x10",
            "cset x12, ne",
            "orr x11, x11, x12, lsl #10",
            "fmov x13, d8",
            "add x10, x9, #12",
            "cmp x13, x10",
            "cset x12, ne",
            "orr x11, x11, x12, lsl #11",
            "fmov x13, d9",
            "add x10, x9, #13",
            "cmp x13, x10",
            "cset x12, ne",
            "orr x11, x11, x12, lsl #12",
            "fmov x13, d10",
            "add x10, x9, #14",
            "cmp x13, x10",
            "cset x12, ne",
            "orr x11, x11, x12, lsl #13",
            "fmov x13, d11",
            "add x10, x9, #15",
            "cmp x13, x10",
            "cset x12, ne",
            "orr x11, x11, x12, lsl #14",
            "fmov x13, d12",
            "add x10, x9, #16",
            "cmp x13, x10",
            "cset x12, ne",
            "orr x11, x11, x12, lsl #15",
            "fmov x13, d13",
            "add x10, x9, #17",
            "cmp x13, x10",
            "cset x12, ne",
            "orr x11, x11, x12, lsl #16",
            "fmov x13, d14",
            "add x10, x9, #18",
            "cmp x13, x10",
            "cset x12, ne",
            "orr x11, x11, x12, lsl #17",
            "fmov x13, d15",
            "add x10, x9, #19",
            "cmp x13, x10",
            "cset x12, ne",
            "orr x11, x11, x12, lsl #18",
            "mrs x13, fpcr",
            "ldr x10, [x3, #8]",
            "cmp x13, x10",
            "cset x12, ne",
            "orr x11, x11, x12, lsl #19",
            "str x11, [x3, #16]",
            // Restore the caller's state. x0 still contains the switch's result.
            "ldr x9, [sp, #168]",
            "msr fpcr, x9",
            "ldp d14, d15, [sp, #144]",
            "ldp d12, d13, [sp, #128]",
            "ldp d10, d11, [sp, #112]",
            "ldp d8, d9, [sp, #96]",
            "ldp x27, x28, [sp, #80]",
            "ldp x25, x26, [sp, #64]",
            "ldp x23, x24, [sp, #48]",
            "ldp x21, x22, [sp, #32]",
            "ldp x19, x20, [sp, #16]",
            "ldp x29, x30, [sp], #176",
            "ret",
        )
    }

    const _: () = assert!(std::mem::offset_of!(ProbeTarget, entry) == 0);
}

#[cfg(target_arch = "riscv64")]
mod arch {
    use super::{JunkCheck, ProbeTarget};
    use core::arch::naked_asm;

    /// Returns the caller's stack pointer at its `call`, which the ABI keeps 16-byte aligned.
    #[unsafe(naked)]
    pub extern "C" fn caller_sp() -> usize {
        naked_asm!("mv a0, sp", "ret")
    }

    /// Context entry that passes its stack pointer at entry to the `ProbeTarget` that `data`
    /// points to.
    ///
    /// # Safety
    ///
    /// `data` must point to a `ProbeTarget`.
    #[unsafe(naked)]
    pub unsafe extern "C" fn entry_sp_probe(arg: usize, data: usize) -> ! {
        naked_asm!("mv a2, sp", "ld t0, 0(a1)", "jr t0")
    }

    /// Fills every callee-saved register and frm with junk from `check`, calls
    /// `check.switch(save_sp, resume_sp, arg)`, checks its own junk when the
    /// switch returns, writes the result into `check.mismatches`, restores the caller's
    /// registers and returns the switch's result.
    ///
    /// # Safety
    ///
    /// The contract of the raw switch in `check`, and `check` must be valid for reads and
    /// writes.
    #[unsafe(naked)]
    pub unsafe extern "C" fn switch_with_junk(
        save_sp: *mut usize,
        resume_sp: usize,
        arg: usize,
        check: *mut JunkCheck,
    ) -> usize {
        naked_asm!(
            // Module-level assembly may lack the F and D extensions; see src/arch/riscv64.rs.
            ".option push",
            ".option arch, +f, +d",
            // Save the caller's callee-saved state, its frm and `check`.
            "addi sp, sp, -224",
            "sd ra, 0(sp)",
            "sd s0, 8(sp)",
            "sd s1, 16(sp)",
            "sd s2, 24(sp)",
            "sd s3, 32(sp)",
            "sd s4, 40(sp)",
            "sd s5, 48(sp)",
            "sd s6, 56(sp)",
            "sd s7, 64(sp)",
            "sd s8, 72(sp)",
            "sd s9, 80(sp)",
            "sd s10, 88(sp)",
            "sd s11, 96(sp)",
            "fsd fs0, 104(sp)",
            "fsd fs1, 112(sp)",
            "fsd fs2, 120(sp)",
            "fsd fs3, 128(sp)",
            "fsd fs4, 136(sp)",
            "fsd fs5, 144(sp)",
            "fsd fs6, 152(sp)",
            "fsd fs7, 160(sp)",
            "fsd fs8, 168(sp)",
            "fsd fs9, 176(sp)",
            "fsd fs10, 184(sp)",
            "fsd fs11, 192(sp)",
            "frrm t0",
            "sd t0, 200(sp)",
            "sd a3, 208(sp)",
            // Install the junk.
            "ld t0, 8(a3)",
            "fsrm t0",
            "ld t0, 0(a3)",
            "addi s0, t0, 1",
            "addi s1, t0, 2",
            "addi s2, t0, 3",
            "addi s3, t0, 4",
            "addi s4, t0, 5",
            "addi s5, t0, 6",
            "addi s6, t0, 7",
            "addi s7, t0, 8",
            "addi s8, t0, 9",
            "addi s9, t0, 10",
            "addi s10, t0, 11",
            "addi s11, t0, 12",
            "addi t1, t0, 13",
            "fmv.d.x fs0, t1",
            "addi t1, t0, 14",
            "fmv.d.x fs1, t1",
            "addi t1, t0, 15",
            "fmv.d.x fs2, t1",
            "addi t1, t0, 16",
            "fmv.d.x fs3, t1",
            "addi t1, t0, 17",
            "fmv.d.x fs4, t1",
            "addi t1, t0, 18",
            "fmv.d.x fs5, t1",
            "addi t1, t0, 19",
            "fmv.d.x fs6, t1",
            "addi t1, t0, 20",
            "fmv.d.x fs7, t1",
            "addi t1, t0, 21",
            "fmv.d.x fs8, t1",
            "addi t1, t0, 22",
            "fmv.d.x fs9, t1",
            "addi t1, t0, 23",
            "fmv.d.x fs10, t1",
            "addi t1, t0, 24",
            "fmv.d.x fs11, t1",
            "ld t1, 24(a3)",
            "jalr t1",
            // Compare each register with its junk; bit n of t2 is set on a mismatch.
            "ld a3, 208(sp)",
            "ld t0, 0(a3)",
            "li t2, 0",
            "addi t1, t0, 1",
            "xor t1, t1, s0",
            "snez t1, t1",
            "or t2, t2, t1",
            "addi t1, t0, 2",
            "xor t1, t1, s1",
            "snez t1, t1",
            "slli t1, t1, 1",
            "or t2, t2, t1",
            "addi t1, t0, 3",
            "xor t1, t1, s2",
            "snez t1, t1",
            "slli t1, t1, 2",
            "or t2, t2, t1",
            "addi t1, t0, 4",
            "xor t1, t1, s3",
            "snez t1, t1",
            "slli t1, t1, 3",
            "or t2, t2, t1",
            "addi t1, t0, 5",
            "xor t1, t1, s4",
            "snez t1, t1",
            "slli t1, t1, 4",
            "or t2, t2, t1",
            "addi t1, t0, 6",
            "xor t1, t1, s5",
            "snez t1, t1",
            "slli t1, t1, 5",
            "or t2, t2, t1",
            "addi t1, t0, 7",
            "xor t1, t1, s6",
            "snez t1, t1",
            "slli t1, t1, 6",
            "or t2, t2, t1",
            "addi t1, t0, 8",
            "xor t1, t1, s7",
            "snez t1, t1",
            "slli t1, t1, 7",
            "or t2, t2, t1",
            "addi t1, t0, 9",
            "xor t1, t1, s8",
            "snez t1, t1",
            "slli t1, t1, 8",
            "or t2, t2, t1",
            "addi t1, t0, 10",
            "xor t1, t1, s9",
            "snez t1, t1",
            "slli t1, t1, 9",
            "or t2, t2, t1",
            "addi t1, t0, 11",
            "xor t1, t1, s10",
            "snez t1, t1",
            "slli t1, t1, 10",
            "or t2, t2, t1",
            "addi t1, t0, 12",
            "xor t1, t1, s11",
            "snez t1, t1",
            "slli t1, t1, 11",
            "or t2, t2, t1",
            "fmv.x.d t3, fs0",
            "addi t1, t0, 13",
            "xor t1, t1, t3",
            "snez t1, t1",
            "slli t1, t1, 12",
            "or t2, t2, t1",
            "fmv.x.d t3, fs1",
            "addi t1, t0, 14",
            "xor t1, t1, t3",
            "snez t1, t1",
            "slli t1, t1, 13",
            "or t2, t2, t1",
            "fmv.x.d t3, fs2",
            "addi t1, t0, 15",
            "xor t1, t1, t3",
            "snez t1, t1",
            "slli t1, t1, 14",
            "or t2, t2, t1",
            "fmv.x.d t3, fs3",
            "addi t1, t0, 16",
            "xor t1, t1, t3",
            "snez t1, t1",
            "slli t1, t1, 15",
            "or t2, t2, t1",
            "fmv.x.d t3, fs4",
            "addi t1, t0, 17",
            "xor t1, t1, t3",
            "snez t1, t1",
            "slli t1, t1, 16",
            "or t2, t2, t1",
            "fmv.x.d t3, fs5",
            "addi t1, t0, 18",
            "xor t1, t1, t3",
            "snez t1, t1",
            "slli t1, t1, 17",
            "or t2, t2, t1",
            "fmv.x.d t3, fs6",
            "addi t1, t0, 19",
            "xor t1, t1, t3",
            "snez t1, t1",
            "slli t1, t1, 18",
            "or t2, t2, t1",
            "fmv.x.d t3, fs7",
            "addi t1, t0, 20",
            "xor t1, t1, t3",
            "snez t1, t1",
            "slli t1, t1, 19",
            "or t2, t2, t1",
            "fmv.x.d t3, fs8",
            "addi t1, t0, 21",
            "xor t1, t1, t3",
            "snez t1, t1",
            "slli t1, t1, 20",
            "or t2, t2, t1",
            "fmv.x.d t3, fs9",
            "addi t1, t0, 22",
            "xor t1, t1, t3",
            "snez t1, t1",
            "slli t1, t1, 21",
            "or t2, t2, t1",
            "fmv.x.d t3, fs10",
            "addi t1, t0, 23",
            "xor t1, t1, t3",
            "snez t1, t1",
            "slli t1, t1, 22",
            "or t2, t2, t1",
            "fmv.x.d t3, fs11",
            "addi t1, t0, 24",
            "xor t1, t1, t3",
            "snez t1, t1",
            "slli t1, t1, 23",
            "or t2, t2, t1",
            "frrm t3",
            "ld t1, 8(a3)",
            "xor t1, t1, t3",
            "snez t1, t1",
            "slli t1, t1, 24",
            "or t2, t2, t1",
            "sd t2, 16(a3)",
            // Restore the caller's state. a0 still contains the switch's result.
            "ld t0, 200(sp)",
            "fsrm t0",
            "ld ra, 0(sp)",
            "ld s0, 8(sp)",
            "ld s1, 16(sp)",
            "ld s2, 24(sp)",
            "ld s3, 32(sp)",
            "ld s4, 40(sp)",
            "ld s5, 48(sp)",
            "ld s6, 56(sp)",
            "ld s7, 64(sp)",
            "ld s8, 72(sp)",
            "ld s9, 80(sp)",
            "ld s10, 88(sp)",
            "ld s11, 96(sp)",
            "fld fs0, 104(sp)",
            "fld fs1, 112(sp)",
            "fld fs2, 120(sp)",
            "fld fs3, 128(sp)",
            "fld fs4, 136(sp)",
            "fld fs5, 144(sp)",
            "fld fs6, 152(sp)",
            "fld fs7, 160(sp)",
            "fld fs8, 168(sp)",
            "fld fs9, 176(sp)",
            "fld fs10, 184(sp)",
            "fld fs11, 192(sp)",
            "addi sp, sp, 224",
            "ret",
            ".option pop",
        )
    }

    const _: () = assert!(std::mem::offset_of!(ProbeTarget, entry) == 0);
}

#[allow(unused_imports)]
pub use arch::{caller_sp, entry_sp_probe, switch_with_junk};
