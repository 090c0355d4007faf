//! goro: a Go-style M:N goroutine runtime.
//!
//! A [`Runtime`] owns `procs` Ps (processor tokens, Go's `GOMAXPROCS`) and starts Ms (OS
//! threads) on demand. Each M holds a P while it runs goroutines, switching between them on its
//! g0 (its own native stack). Goroutines are stackful: each runs on an mmap'ed stack with a
//! guard page, and suspends itself by switching to its M's g0.
//!
//! ```
//! let rt = goro::Runtime::builder().procs(2).build().unwrap();
//! let total = rt
//!     .block_on(|| {
//!         let handles: Vec<_> =
//!             (1..=10u64).map(|i| goro::spawn(move || i * i).unwrap()).collect();
//!         handles.into_iter().map(|h| h.join().unwrap()).sum::<u64>()
//!     })
//!     .unwrap();
//! assert_eq!(total, 385);
//! ```
//!
//! What sets goro apart:
//!
//! * **Custom gs.** [`Runtime::spawn_g`] runs a goroutine whose control block is the caller's
//!   own `#[repr(C)]` struct starting with a [`GHeader`] (see [`goro_abi::custom_g!`]); its
//!   scheduler can read the extra fields.
//! * **A scheduler per g.** Every decision (ready, yield, park, syscall entry and exit, exit)
//!   goes through the g's own [`goro_sched::Scheduler`]; one runtime can run several.
//! * **Syscalls release the P.** [`blocking`] wraps a call in [`entersyscall`] and
//!   [`exitsyscall`]: while the call blocks, a monitor thread retakes the P and hands it to
//!   another M, as Go's sysmon does; [`blocking_known`] hands the P off at once.
//!
//! **Architecture Invariant:** a g is published (to a queue, a waiter list or a joiner) only
//! after its M has switched away from the g's stack to g0; otherwise another M could resume
//! the g while its stack is still in use.

#![deny(unsafe_op_in_unsafe_fn)]

mod builder;
pub mod debug;
mod dump;
pub mod fs;
mod join;
mod m;
mod monitor;
pub mod net;
mod park;
pub mod process;
mod runtime;
mod schedtrace;
mod stats;
pub mod sync;
mod syscall;
mod task;
mod timer;
pub mod trace;
mod waiter;

pub use builder::{BuildError, Builder};
pub use join::{JoinError, JoinHandle};
pub use park::{Goroutine, current, park, yield_now};
pub use runtime::{Runtime, SpawnError, spawn, spawn_g};
pub use stats::Stats;
pub use syscall::{blocking, blocking_known, entersyscall, entersyscall_block, exitsyscall};
pub use task::DefaultG;
pub use timer::sleep;

pub use goro_abi::{CustomG, GHeader, GStatus, WaitReason, custom_g, getg, with_g};
pub use goro_sched::{Fifo, SchedHandle, Scheduler};
/// The stack crate, for the limits and types that `Builder` and `Runtime` name
/// (`MIN_STACK_SIZE`, `MAX_STACK_SIZE`, `PoolStats`).
pub use goro_stack;
