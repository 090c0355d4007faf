//! Synchronization facade: `std` normally, `loom` under `--cfg loom`, so that the loom model
//! in `tests/loom_blocks.rs` checks the code the runtime runs.
//!
//! [`UnsafeCell`] has loom's closure-based API in both builds, so that loom can see every
//! access to a free block's link and report a data race.

#[cfg(loom)]
pub(crate) use loom::cell::UnsafeCell;
#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicPtr, AtomicUsize};

#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicPtr, AtomicUsize};

pub(crate) use std::sync::atomic::Ordering;

/// A `core::cell::UnsafeCell` with loom's API: every access goes through a closure that
/// receives a raw pointer.
#[cfg(not(loom))]
#[derive(Debug)]
pub(crate) struct UnsafeCell<T>(core::cell::UnsafeCell<T>);

#[cfg(not(loom))]
impl<T> UnsafeCell<T> {
    pub(crate) const fn new(value: T) -> UnsafeCell<T> {
        UnsafeCell(core::cell::UnsafeCell::new(value))
    }

    /// Calls `f` with a pointer for reading. The caller guarantees that no write overlaps.
    pub(crate) fn with<R>(&self, f: impl FnOnce(*const T) -> R) -> R {
        f(self.0.get())
    }

    /// Calls `f` with a pointer for writing. The caller guarantees exclusive access.
    pub(crate) fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
        f(self.0.get())
    }
}
