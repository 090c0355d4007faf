//! Goroutine stacks for goro: mmap'ed stacks with guard pages, a bounded pool with per-M
//! caches, and stack overflow reports that name the goroutine.
//!
//! ```
//! use goro_stack::{install_overflow_handler, AltStack, PoolConfig, StackPool, DEFAULT_STACK_SIZE};
//!
//! // Once per process, and once per thread that runs goroutines (each M).
//! install_overflow_handler();
//! let _alt_stack = AltStack::install()?;
//!
//! let pool = StackPool::new(DEFAULT_STACK_SIZE, PoolConfig::new())?;
//! let mut cache = pool.local_cache(); // one per M
//! let stack = cache.get()?;
//! assert_eq!(stack.size(), DEFAULT_STACK_SIZE);
//! assert_eq!(stack.guard().end, stack.lo());
//! // A context switch (goro-context) would now run a goroutine with its stack pointer starting
//! // at `stack.hi()`, recording `stack.lo()..stack.hi()` in its g header.
//! cache.put(stack);
//! assert_eq!(pool.stats().cached_stacks, 1);
//! assert_eq!(pool.stats().in_use_stacks, 0);
//! # Ok::<(), goro_stack::StackError>(())
//! ```
//!
//! # Guarantees
//!
//! - A [`Stack`] of a requested size has at least that many usable bytes, rounded up to whole
//!   pages, between [`Stack::lo`] and [`Stack::hi`], all readable and writable. Its guard, at
//!   least one page of `PROT_NONE` memory, lies directly below `lo`, so running off the bottom
//!   faults. No two live stacks overlap, guards included, because each is its own mapping.
//! - Sizes outside [`MIN_STACK_SIZE`]`..=`[`MAX_STACK_SIZE`] are rejected with an error naming
//!   the size and the range. A failed `mmap` or `mprotect` returns [`StackError::MapFailed`]
//!   with the errno, never an abort. The error names `vm.max_map_count` when the mapping table
//!   is nearly full.
//! - A [`StackPool`] caches at most [`PoolConfig::max_cached`] stacks globally plus
//!   [`PoolConfig::local_capacity`] per [`LocalCache`], unmaps the rest, and never hands out a
//!   stack twice. Stacks in the global cache keep only their top
//!   [`PoolConfig::keep_resident`] bytes resident. [`LocalCache::get`] and [`LocalCache::put`]
//!   make no system call while the cache has a stack to give or room to take one.
//! - With [`install_overflow_handler`] called and an alternate signal stack on the thread
//!   ([`AltStack`], or the one Rust's standard library installs for its threads), a fault in the
//!   guard of a live stack writes `goroutine N stack overflow: ...` to stderr and aborts with
//!   SIGABRT. Other faults reach the previous SIGSEGV or SIGBUS disposition, so they crash as
//!   they would without goro.
//!
//! # Limits
//!
//! Each stack is its own mapping and takes two entries of the kernel's mapping table (guard and
//! usable range have different protections), so a process holds at most about
//! `vm.max_map_count / 2` stacks: 32,765 under the Linux default of 65,530.
//!
//! NOTE: a mode for a million parked goroutines would carve guard-less stacks out of one large
//! mapping (a slab). `Stack` keeps its fields private and records its own guard size so that
//! such stacks can become another kind of `Stack` later.
//!
//! **Architecture Invariant:** this crate knows nothing of schedulers. It reads the g register
//! of `goro-abi` only in the fault handler, to name the goroutine.

#![deny(unsafe_op_in_unsafe_fn)]

mod error;
mod overflow;
mod pool;
mod registry;
mod stack;
mod sys;

pub use error::{MapCount, StackError};
pub use overflow::{AltStack, MIN_ALT_STACK_SIZE, install_overflow_handler};
pub use pool::{LocalCache, PoolConfig, PoolStats, StackPool};
pub use stack::{Stack, validate_guard_size, validate_stack_size};
pub use sys::page_size;

/// Smallest usable stack size accepted, in bytes: 16 KiB.
pub const MIN_STACK_SIZE: usize = 16 * 1024;

/// Largest usable stack size accepted, in bytes: 1 GiB.
pub const MAX_STACK_SIZE: usize = 1024 * 1024 * 1024;

/// Usable stack size a runtime should use when its user asks for none, in bytes: 256 KiB.
pub const DEFAULT_STACK_SIZE: usize = 256 * 1024;

/// Guard size of [`Stack::new`] and of [`PoolConfig::new`], in bytes (rounded up to pages):
/// 16 KiB. It is larger than one page so that a frame of up to 16 KiB that skips stack probes
/// still lands in the guard. The guard costs address space only.
pub const DEFAULT_GUARD_SIZE: usize = 16 * 1024;

/// Largest guard size accepted, in bytes: 64 MiB.
pub const MAX_GUARD_SIZE: usize = 64 * 1024 * 1024;
