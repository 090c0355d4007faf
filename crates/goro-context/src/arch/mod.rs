//! The per-architecture switch code. Each file draws the stack of a suspended and of a fresh
//! context and lists the registers it saves.

#[cfg(target_arch = "x86_64")]
mod x86_64;
#[cfg(target_arch = "x86_64")]
pub use self::x86_64::*;

#[cfg(target_arch = "aarch64")]
mod aarch64;
#[cfg(target_arch = "aarch64")]
pub use self::aarch64::*;

#[cfg(target_arch = "riscv64")]
mod riscv64;
#[cfg(target_arch = "riscv64")]
pub use self::riscv64::*;

#[cfg(not(any(
    target_arch = "x86_64",
    target_arch = "aarch64",
    target_arch = "riscv64"
)))]
compile_error!(
    "goro-context supports x86_64 (System V), aarch64 (AAPCS64) and riscv64 (LP64D) only; \
     add a file under src/arch/ for this target"
);
