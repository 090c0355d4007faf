//! A mutual exclusion lock whose waiters park, with Go's starvation mode.
//!
//! The algorithm is the one of Go's `sync.Mutex` (`src/sync/mutex.go`, since Go 1.9). The
//! state is one atomic word:
//!
//! ```text
//!  31                               3   2        1       0
//!  ┌────────────────────────────────┬──────────┬───────┬────────┐
//!  │ waiters (blocked or about to)  │ STARVING │ WOKEN │ LOCKED │
//!  └────────────────────────────────┴──────────┴───────┴────────┘
//! ```
//!
//! In **normal mode** a woken waiter competes with goroutines that just arrived, which
//! usually win since they are already running; this keeps the lock's throughput high. A
//! waiter that loses goes back to the front of the queue. Once a waiter has waited more than
//! [`STARVATION_THRESHOLD`], it switches the mutex to **starvation mode**: an unlock then
//! hands the lock directly to the first waiter, and arriving goroutines queue at the back
//! without trying. A waiter that gets the lock leaves starvation mode when it waited less than
//! the threshold or was the last waiter.
//!
//! Unlike Go's, this mutex does not spin before it parks.

use std::cell::UnsafeCell;
use std::fmt;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use goro_abi::WaitReason;

use super::sema::{Released, Sema};

const LOCKED: u32 = 1;
/// A waiter has been woken (or is running in `lock_slow`), so unlock need not wake another.
const WOKEN: u32 = 1 << 1;
const STARVING: u32 = 1 << 2;
const WAITER_SHIFT: u32 = 3;
/// One waiter, in the count.
const WAITER: u32 = 1 << WAITER_SHIFT;

/// How long a waiter waits before it switches the mutex to starvation mode (Go's value).
pub const STARVATION_THRESHOLD: Duration = Duration::from_millis(1);

/// The lock without data: the state word, the waiters' semaphore and a counter.
pub(crate) struct RawMutex {
    state: AtomicU32,
    sema: Sema,
    /// Unlocks that handed the lock to a waiter in starvation mode.
    handoffs: AtomicU64,
}

impl RawMutex {
    pub(crate) const fn new() -> RawMutex {
        RawMutex {
            state: AtomicU32::new(0),
            sema: Sema::new(),
            handoffs: AtomicU64::new(0),
        }
    }

    pub(crate) fn lock(&self) {
        // Acquire: pairs with the Release in `unlock`, so the previous holder's writes are
        // visible to us.
        if self
            .state
            .compare_exchange(0, LOCKED, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
        {
            return;
        }
        self.lock_slow();
    }

    pub(crate) fn try_lock(&self) -> bool {
        let old = self.state.load(Ordering::Relaxed);
        // A starving mutex belongs to its first waiter even while LOCKED is clear.
        if old & (LOCKED | STARVING) != 0 {
            return false;
        }
        // Acquire: as in `lock`.
        self.state
            .compare_exchange(old, old | LOCKED, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
    }

    #[cold]
    fn lock_slow(&self) {
        let mut wait_start: Option<Instant> = None;
        let mut starving = false;
        let mut awoke = false;
        let mut old = self.state.load(Ordering::Relaxed);
        loop {
            let mut new = old;
            // Arrivals do not take a starving mutex: they queue.
            if old & STARVING == 0 {
                new |= LOCKED;
            }
            if old & (LOCKED | STARVING) != 0 {
                new = new.checked_add(WAITER).unwrap_or_else(|| {
                    panic!(
                        "Mutex::lock: more than {} waiters",
                        u32::MAX >> WAITER_SHIFT
                    )
                });
            }
            // Only a locked mutex switches to starvation mode: unlock expects a starving
            // mutex to have waiters, which an unlocked one need not have.
            if starving && old & LOCKED != 0 {
                new |= STARVING;
            }
            if awoke {
                assert!(
                    new & WOKEN != 0,
                    "Mutex::lock: inconsistent state {new:#x}: a woken waiter finds WOKEN clear"
                );
                new &= !WOKEN;
            }
            // AcqRel: Acquire when this takes the lock (pairs with `unlock`); Release keeps
            // the waiter count ordered with the unlockers that read it.
            if let Err(actual) =
                self.state
                    .compare_exchange_weak(old, new, Ordering::AcqRel, Ordering::Relaxed)
            {
                old = actual;
                continue;
            }
            if old & (LOCKED | STARVING) == 0 {
                return;
            }
            // A waiter that waited before goes back to the front of the queue.
            let lifo = wait_start.is_some();
            let start = *wait_start.get_or_insert_with(Instant::now);
            if let Err(interrupted) = self.sema.acquire(lifo, WaitReason::Lock) {
                // Unwinding (the runtime is being dropped): a waiter that was already woken
                // passes the wakeup on. One still queued stays with the semaphore as
                // abandoned, and the unlock that reaches it does the same.
                if interrupted.granted {
                    self.leave_woken();
                }
                std::panic::resume_unwind(interrupted.payload);
            }
            starving = starving || start.elapsed() > STARVATION_THRESHOLD;
            // Relaxed: the semaphore's hand-over already ordered the unlocker's writes before
            // this load.
            old = self.state.load(Ordering::Relaxed);
            if old & STARVING != 0 {
                self.take_handoff(old, starving);
                return;
            }
            awoke = true;
        }
    }

    /// Takes the lock that an unlock in starvation mode handed to this waiter: LOCKED is still
    /// clear and this waiter is still counted, so set one and drop the other.
    fn take_handoff(&self, old: u32, starving: bool) {
        assert!(
            old & (LOCKED | WOKEN) == 0 && old >> WAITER_SHIFT != 0,
            "Mutex::lock: inconsistent state {old:#x} after a starvation-mode hand-off"
        );
        let mut delta = LOCKED.wrapping_sub(WAITER);
        // Leave starvation mode when this waiter did not starve or nobody else waits:
        // otherwise two goroutines could keep handing the lock to each other forever, which
        // is much slower than normal mode.
        if !starving || old >> WAITER_SHIFT == 1 {
            delta = delta.wrapping_sub(STARVING);
        }
        // AcqRel: Acquire pairs with the unlocker's Release; wrapping addition of `delta`
        // adds LOCKED and subtracts the rest.
        self.state.fetch_add(delta, Ordering::AcqRel);
    }

    pub(crate) fn unlock(&self) {
        // Release: pairs with the Acquire of the next `lock`.
        let new = self
            .state
            .fetch_sub(LOCKED, Ordering::Release)
            .wrapping_sub(LOCKED);
        if new != 0 && self.unlock_slow(new) == Some(Released::Abandoned) {
            self.leave_woken();
        }
    }

    /// Wakes a waiter or hands the lock off after an unlock left the state `new`. Returns
    /// what the semaphore did with the wakeup, or `None` when nobody was woken.
    #[cold]
    fn unlock_slow(&self, new: u32) -> Option<Released> {
        assert!(
            new.wrapping_add(LOCKED) & LOCKED != 0,
            "Mutex::unlock: the mutex was not locked"
        );
        if new & STARVING != 0 {
            // Hand the lock to the first waiter. LOCKED stays clear until the waiter sets it,
            // but STARVING keeps arriving goroutines from taking it meanwhile.
            // Relaxed: a statistic.
            self.handoffs.fetch_add(1, Ordering::Relaxed);
            return Some(self.sema.release());
        }
        self.wake_next(new)
    }

    /// Wakes one waiter in normal mode, unless none waits or one is already awake.
    fn wake_next(&self, state: u32) -> Option<Released> {
        let mut old = state;
        loop {
            // Nobody to wake, or someone already woke, took the lock, or turned the mutex
            // starving (then the lock is handed off by a later unlock).
            if old >> WAITER_SHIFT == 0 || old & (LOCKED | WOKEN | STARVING) != 0 {
                return None;
            }
            let new = (old - WAITER) | WOKEN;
            // Relaxed: the semaphore orders this unlock before the woken waiter's retry.
            match self
                .state
                .compare_exchange_weak(old, new, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return Some(self.sema.release()),
                Err(actual) => old = actual,
            }
        }
    }

    /// Does the part of a woken waiter that unwound instead of taking the lock. In starvation
    /// mode the waiter was handed the lock, so it unlocks it (leaving starvation mode).
    /// Otherwise it clears WOKEN and lets the next waiter be woken. Runs in a loop for as long
    /// as the wakeups go to abandoned waiters, since there may be many of them.
    #[cold]
    fn leave_woken(&self) {
        loop {
            let old = self.state.load(Ordering::Relaxed);
            let released = if old & STARVING != 0 {
                self.take_handoff(old, false);
                // Release: as in `unlock`.
                let new = self
                    .state
                    .fetch_sub(LOCKED, Ordering::Release)
                    .wrapping_sub(LOCKED);
                if new == 0 {
                    return;
                }
                self.unlock_slow(new)
            } else {
                // Relaxed: only the flag changes hands, no data.
                let previous = self.state.fetch_and(!WOKEN, Ordering::Relaxed);
                assert!(
                    previous & WOKEN != 0,
                    "Mutex: inconsistent state {previous:#x}: a woken waiter finds WOKEN clear"
                );
                self.wake_next(previous & !WOKEN)
            };
            if released != Some(Released::Abandoned) {
                return;
            }
        }
    }

    pub(crate) fn handoffs(&self) -> u64 {
        self.handoffs.load(Ordering::Relaxed)
    }
}

/// A mutual exclusion lock for goroutines and threads. A goroutine that waits for it parks
/// (its M runs other goroutines); a plain thread blocks.
///
/// As Go's `sync.Mutex`, it is unfair in normal mode for throughput, and switches to
/// first-come first-served hand-off once a waiter has waited more than
/// [`STARVATION_THRESHOLD`] (see [`Mutex::handoffs`]). It does not poison: a panic while the
/// lock is held unlocks it as the guard drops.
///
/// ```
/// use std::sync::Arc;
///
/// let rt = goro::Runtime::builder().procs(2).build().unwrap();
/// let total = rt
///     .block_on(|| {
///         let counter = Arc::new(goro::sync::Mutex::new(0u64));
///         let handles: Vec<_> = (0..8)
///             .map(|_| {
///                 let counter = counter.clone();
///                 goro::spawn(move || {
///                     for _ in 0..100 {
///                         *counter.lock() += 1;
///                     }
///                 })
///                 .unwrap()
///             })
///             .collect();
///         handles.into_iter().for_each(|h| h.join().unwrap());
///         let total = *counter.lock();
///         total
///     })
///     .unwrap();
/// assert_eq!(total, 800);
/// ```
pub struct Mutex<T: ?Sized> {
    raw: RawMutex,
    data: UnsafeCell<T>,
}

// SAFETY: the lock gives one thread at a time access to the value, so the value moves
// between threads (T: Send) but no `&T` is ever shared between them.
unsafe impl<T: ?Sized + Send> Sync for Mutex<T> {}

impl<T> Mutex<T> {
    /// An unlocked mutex holding `value`.
    pub const fn new(value: T) -> Mutex<T> {
        Mutex {
            raw: RawMutex::new(),
            data: UnsafeCell::new(value),
        }
    }

    /// Returns the value, consuming the mutex.
    pub fn into_inner(self) -> T {
        self.data.into_inner()
    }
}

impl<T: ?Sized> Mutex<T> {
    /// Locks the mutex, waiting while another holder has it, and returns a guard that
    /// unlocks it on drop.
    pub fn lock(&self) -> MutexGuard<'_, T> {
        self.raw.lock();
        MutexGuard::new(self)
    }

    /// Locks the mutex if nobody holds it (and, in starvation mode, nobody waits for it).
    pub fn try_lock(&self) -> Option<MutexGuard<'_, T>> {
        self.raw.try_lock().then(|| MutexGuard::new(self))
    }

    /// Returns a mutable reference to the value; the `&mut self` proves nobody holds the lock.
    pub fn get_mut(&mut self) -> &mut T {
        self.data.get_mut()
    }

    /// Returns the number of unlocks that handed the lock directly to a waiter because the
    /// mutex was in starvation mode. It stays 0 while no waiter waits longer than
    /// [`STARVATION_THRESHOLD`].
    pub fn handoffs(&self) -> u64 {
        self.raw.handoffs()
    }
}

impl<T: Default> Default for Mutex<T> {
    fn default() -> Mutex<T> {
        Mutex::new(T::default())
    }
}

impl<T> From<T> for Mutex<T> {
    fn from(value: T) -> Mutex<T> {
        Mutex::new(value)
    }
}

impl<T: ?Sized + fmt::Debug> fmt::Debug for Mutex<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut debug = f.debug_struct("Mutex");
        match self.try_lock() {
            Some(guard) => debug.field("data", &&*guard),
            None => debug.field("data", &format_args!("<locked>")),
        };
        debug.finish_non_exhaustive()
    }
}

/// Proof that a [`Mutex`] is locked, giving access to its value; unlocks it on drop.
///
/// The guard may be dropped on another thread than the one that locked (a goroutine that
/// holds it may move between Ms anyway).
#[must_use = "the mutex unlocks as soon as the guard is dropped"]
pub struct MutexGuard<'a, T: ?Sized> {
    mutex: &'a Mutex<T>,
    /// Makes the guard Send and Sync exactly as `&mut T` is.
    _value: PhantomData<&'a mut T>,
}

impl<'a, T: ?Sized> MutexGuard<'a, T> {
    fn new(mutex: &'a Mutex<T>) -> MutexGuard<'a, T> {
        MutexGuard {
            mutex,
            _value: PhantomData,
        }
    }
}

impl<T: ?Sized> Deref for MutexGuard<'_, T> {
    type Target = T;

    fn deref(&self) -> &T {
        // SAFETY: the guard proves the lock is held, so no `&mut T` exists elsewhere.
        unsafe { &*self.mutex.data.get() }
    }
}

impl<T: ?Sized> DerefMut for MutexGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the guard proves the lock is held, and `&mut self` that this is the only
        // borrow through it.
        unsafe { &mut *self.mutex.data.get() }
    }
}

impl<T: ?Sized> Drop for MutexGuard<'_, T> {
    fn drop(&mut self) {
        self.mutex.raw.unlock();
    }
}

impl<T: ?Sized + fmt::Debug> fmt::Debug for MutexGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

impl<T: ?Sized + fmt::Display> fmt::Display for MutexGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&**self, f)
    }
}
