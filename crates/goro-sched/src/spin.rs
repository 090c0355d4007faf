//! A spin lock for critical sections of a few instructions, such as the FIFO scheduler's
//! queue operations.
//!
//! Unlocking is a plain Release store. A `std::sync::Mutex` unlocks with an atomic swap,
//! because it must learn whether a thread sleeps on it. On the yield path, which locks twice
//! (requeue, then pick the next g), that saves two read-modify-write instructions.
//!
//! A waiter spins briefly with CPU pause hints, then yields its thread to the OS between
//! checks. So a holder that the OS preempted gets the CPU back, which matters most when
//! there are fewer CPUs than threads.

#[cfg(not(loom))]
use crate::sync::spin_loop;
use crate::sync::{AtomicBool, Ordering, UnsafeCell, yield_now};

/// Polls with pause hints before a waiter starts yielding its thread.
#[cfg(not(loom))]
const SPINS_BEFORE_YIELD: u32 = 64;

/// A mutual-exclusion lock that never sleeps in the kernel (see the module documentation).
pub(crate) struct SpinLock<T> {
    locked: AtomicBool,
    value: UnsafeCell<T>,
}

// SAFETY: the lock hands out access to the value to one thread at a time (`lock`), so sharing
// the lock between threads only moves the value between them, which `T: Send` allows.
unsafe impl<T: Send> Sync for SpinLock<T> {}

impl<T> SpinLock<T> {
    pub(crate) fn new(value: T) -> SpinLock<T> {
        SpinLock {
            locked: AtomicBool::new(false),
            value: UnsafeCell::new(value),
        }
    }

    /// Takes the lock, waiting while another thread holds it.
    pub(crate) fn lock(&self) -> SpinGuard<'_, T> {
        // Acquire: pairs with the Release store in `SpinGuard::drop`, so the previous
        // holder's writes to the value happen before this holder's accesses. Relaxed on
        // failure: a failed attempt reads nothing the waiter relies on.
        while self
            .locked
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            self.wait_until_unlocked();
        }
        SpinGuard { lock: self }
    }

    /// Waits until the lock looks free, reading it without writing so that the waiter does
    /// not take the cache line away from the holder.
    #[cold]
    #[cfg(not(loom))]
    fn wait_until_unlocked(&self) {
        let mut spins = 0;
        // Relaxed: only a hint; the compare-exchange in `lock` decides who gets the lock.
        while self.locked.load(Ordering::Relaxed) {
            if spins < SPINS_BEFORE_YIELD {
                spins += 1;
                spin_loop();
            } else {
                yield_now();
            }
        }
    }

    /// Under loom a waiter only yields and lets `lock` retry its compare-exchange: loom
    /// explores too many interleavings of a polling loop to finish the model. The polling is
    /// only a hint, so the model still checks the protocol, which is the compare-exchange and
    /// the Release store.
    #[cfg(loom)]
    fn wait_until_unlocked(&self) {
        yield_now();
    }
}

impl<T> std::fmt::Debug for SpinLock<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpinLock").finish_non_exhaustive()
    }
}

/// Proof that the current thread holds a [`SpinLock`]; dropping it unlocks.
pub(crate) struct SpinGuard<'a, T> {
    lock: &'a SpinLock<T>,
}

impl<T> SpinGuard<'_, T> {
    /// Calls `f` with the locked value.
    pub(crate) fn with<R>(&mut self, f: impl FnOnce(&mut T) -> R) -> R {
        // SAFETY: the guard proves that this thread holds the lock, so no other thread
        // accesses the value, and `&mut self` keeps this thread from lending it twice.
        self.lock.value.with_mut(|value| f(unsafe { &mut *value }))
    }
}

impl<T> Drop for SpinGuard<'_, T> {
    fn drop(&mut self) {
        // Release: pairs with the Acquire compare-exchange in `SpinLock::lock` of the next
        // holder.
        self.lock.locked.store(false, Ordering::Release);
    }
}
