//! Goroutine stacks for goro: mmap'ed stacks with guard pages or carved from slabs, a bounded
//! pool with per-M caches, and stack overflow reports that name the goroutine. The
//! [`blocks`] module recycles the small per-goroutine blocks that a runtime allocates on one M
//! and frees on another.
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
//!   pages, between [`Stack::lo`] and [`Stack::hi`], all readable and writable. A guarded
//!   stack's guard, at least one page of `PROT_NONE` memory, lies directly below `lo`, so
//!   running off the bottom faults. No two live stacks overlap, guards included.
//! - Sizes outside [`MIN_STACK_SIZE`]`..=`[`MAX_STACK_SIZE`] are rejected with an error naming
//!   the size and the range. A failed `mmap` or `mprotect` returns [`StackError::MapFailed`]
//!   or [`StackError::SlabMapFailed`] with the errno, never an abort. The error names
//!   `vm.max_map_count` when the mapping table is nearly full.
//! - A [`StackPool`] caches at most [`PoolConfig::max_cached`] stacks globally plus
//!   [`PoolConfig::local_capacity`] per [`LocalCache`], unmaps the rest (or returns them to
//!   their slabs), and never hands out a stack twice. Stacks in the global cache beyond
//!   [`PoolConfig::max_resident_cached`] keep only their top [`PoolConfig::keep_resident`]
//!   bytes resident. [`LocalCache::get`] and
//!   [`LocalCache::put`] make no system call while the cache has a stack to give or room to
//!   take one.
//! - The overflow handler needs [`install_overflow_handler`] and an alternate signal stack on
//!   the thread ([`AltStack`], or the one Rust's standard library installs for its threads).
//!   Then a fault in the guard of a live stack or slab writes `goroutine N stack overflow: ...`
//!   to stderr and aborts with SIGABRT. Other faults reach the previous SIGSEGV or SIGBUS
//!   disposition, so they crash as they would without goro.
//!
//! # Slab mode
//!
//! Each guarded stack is its own mapping and takes two entries of the kernel's mapping table
//! (guard and usable range have different protections), so a process holds at most about
//! `vm.max_map_count / 2` guarded stacks. Stacks and slabs also leave 1,024 entries to threads
//! and the rest of the process, so under the Linux default of 65,530 that is about 32,200
//! stacks, fewer the more mappings the process had when it mapped its first stack.
//! [`PoolConfig::slab`] makes a pool carve its stacks from slabs, large mappings of
//! [`PoolConfig::slab_size`] bytes (64 MiB by default) with one guard each, so a million stacks
//! take a few thousand entries. A slab stack:
//!
//! - has no guard of its own. Its lowest [`CANARY_SIZE`] bytes hold a canary, eight words
//!   derived from a random per-process secret, and [`Stack::size`] includes them: it is the
//!   requested size plus `CANARY_SIZE`, rounded up to pages.
//! - shares a page with each neighbour: its canary lies in the top page of the stack below, and
//!   its top page contains the canary of the stack above. A goroutine whose frames fit in its top
//!   page (`4096 - CANARY_SIZE` bytes with 4 KiB pages) therefore commits one page of memory,
//!   canary included.
//! - goes back to its slab when dropped, also after the pool is gone, and gives back every page
//!   that no neighbour's canary or frames use. Empty slabs are unmapped, except one spare.
//!
//! The runtime calls [`Stack::check_canary`] at every switch from a goroutine back to g0 and
//! reports a failure with [`CanaryOverflow::report_and_abort`]: `goroutine N overflowed its
//! stack, detected by the canary at switch: ...`, then SIGABRT. The slab's guard catches a
//! run-away recursion off the bottom of its lowest stack at once, as a guard page does.
//!
//! What slab mode misses, unlike a guard page per stack:
//!
//! - A frame that jumps over the canary (a large frame, or code that skips stack probes) and
//!   writes only below it lands in the top of the stack below, where another goroutine may be
//!   suspended. No check notices, and that goroutine resumes on corrupt frames.
//! - Between an overflow and the next switch the goroutine keeps running, so the stack below is
//!   corrupt for that long. A run-away recursion that never switches runs through every stack
//!   below its own until it reaches the slab's guard, which then reports it.
//! - A canary overwritten with its exact expected values goes unnoticed; this needs the secret.
//!
//! **Architecture Invariant:** this crate knows nothing of schedulers. It reads the g register
//! of `goro-abi` only in the fault handler, to name the goroutine.

#![deny(unsafe_op_in_unsafe_fn)]

pub mod blocks;
mod error;
mod overflow;
mod pool;
mod registry;
mod slab;
mod stack;
mod sync;
mod sys;

pub use blocks::{BlockCache, BlockHome};
pub use error::{MapCount, StackError};
pub use overflow::{AltStack, MIN_ALT_STACK_SIZE, install_overflow_handler};
pub use pool::{LocalCache, PoolConfig, PoolStats, StackPool};
pub use slab::{CANARY_SIZE, CanaryOverflow, DEFAULT_SLAB_SIZE, MAX_SLAB_SIZE, MIN_SLAB_SIZE};
pub use stack::{Stack, StackMode, validate_guard_size, validate_stack_size};
pub use sys::{ThreadEntries, page_size};

/// Smallest usable stack size accepted, in bytes: 16 KiB.
///
/// It fits small goroutines, not every panic: with `RUST_BACKTRACE` set, std's panic hook
/// needs more than 16 KiB to print a backtrace, so a panic on such a stack overflows it and
/// the process aborts with an overflow report. A 64 KiB stack held the hook in tests on x86_64.
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
