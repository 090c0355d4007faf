//! The syscall protocol of goro: who owns each P, and how a goroutine lets its P go while it
//! blocks in a syscall and gets one back afterwards.
//!
//! A P (processor) is a token: an M (OS thread) must hold one to run goroutines. Each P has a
//! [`PState`] word that names its single owner at every moment:
//!
//! | state          | owner                                   | who may change it           |
//! |----------------|-----------------------------------------|-----------------------------|
//! | `Idle`         | the runtime's idle list                 | any M, by CAS (`acquire`)   |
//! | `Running(m)`   | M `m`, running goroutines               | `m` only                    |
//! | `Syscall(m)`   | M `m`, blocked in a syscall             | `m` (exit, CAS) or the monitor (retake, CAS) |
//! | `Transit`      | whoever is handing it to another owner  | that one party              |
//!
//! The fast path of a syscall is one store and one CAS on this word: `entersyscall` stores
//! `Syscall(m)`, `exitsyscall` swaps it back to `Running(m)`. If the CAS fails, the monitor
//! retook the P while the syscall blocked, and the M takes the slow path. `docs/syscall.md`
//! explains the protocol and why goro keeps Go's older P-state CAS design.
//!
//! [`Monitor`] holds the monitor's decisions (when to retake, how long to sleep) as pure logic,
//! and [`WorkWaiting`] the hint that lets a syscall entry skip asking the schedulers for work,
//! so that the loom models in `tests/` check the same code the runtime runs.
//!
//! **Architecture Invariant:** no asm and no thread-bound state here; every atomic comes from
//! the `sync` facade, so the whole crate runs under loom (`--cfg loom`).

#![deny(unsafe_op_in_unsafe_fn)]

mod monitor;
mod pstate;
pub mod sync;
mod work_waiting;

pub use monitor::{Monitor, MonitorConfig, PObservation, RetakeDecision};
pub use pstate::{MId, POwner, PState};
pub use work_waiting::WorkWaiting;
