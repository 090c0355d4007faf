//! A writer-preferring reader-writer lock whose waiters park.
//!
//! The algorithm is the one of Go's `sync.RWMutex` (`src/sync/rwmutex.go`). Writers take an
//! inner [`RawMutex`] first, so at most one writer is pending at a time. A pending writer
//! subtracts [`MAX_READERS`] from `reader_count`, which turns it negative: readers that come
//! later see that and wait on `reader_sem`, so a waiting writer blocks new readers. The
//! writer itself waits on `writer_sem` until the readers that were inside when it arrived
//! (counted down in `reader_wait`) have left.

use std::cell::UnsafeCell;
use std::fmt;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicI32, Ordering};

use goro_abi::WaitReason;

use super::mutex::RawMutex;
use super::sema::{Released, Sema};

/// The bias a pending writer subtracts from `reader_count`; also one more than the number of
/// read guards that may exist at once.
const MAX_READERS: i32 = 1 << 30;

/// A reader-writer lock for goroutines and threads: any number of readers or one writer.
///
/// A writer that waits blocks readers that arrive after it, so writers do not starve. A
/// consequence, as in Go: a holder of a read guard that asks for another read guard while a
/// writer waits deadlocks. Waiting goroutines park; waiting plain threads block. The lock
/// does not poison.
pub struct RwLock<T: ?Sized> {
    /// Serializes writers.
    writer: RawMutex,
    /// The semaphore on which the pending writer waits for the departing readers.
    writer_sem: Sema,
    /// The semaphore on which readers wait for the pending or active writer.
    reader_sem: Sema,
    /// Readers inside or waiting, minus `MAX_READERS` while a writer is pending or active.
    reader_count: AtomicI32,
    /// Readers that must leave before the pending writer may go on.
    reader_wait: AtomicI32,
    data: UnsafeCell<T>,
}

// SAFETY: readers share `&T` across threads (T: Sync), and a writer gets `&mut T` on any
// thread (T: Send); the lock keeps the two apart.
unsafe impl<T: ?Sized + Send + Sync> Sync for RwLock<T> {}

impl<T> RwLock<T> {
    /// An unlocked lock holding `value`.
    pub const fn new(value: T) -> RwLock<T> {
        RwLock {
            writer: RawMutex::new(),
            writer_sem: Sema::new(),
            reader_sem: Sema::new(),
            reader_count: AtomicI32::new(0),
            reader_wait: AtomicI32::new(0),
            data: UnsafeCell::new(value),
        }
    }

    /// Returns the value, consuming the lock.
    pub fn into_inner(self) -> T {
        self.data.into_inner()
    }
}

impl<T: ?Sized> RwLock<T> {
    /// Locks for reading, waiting while a writer holds the lock or waits for it.
    pub fn read(&self) -> RwLockReadGuard<'_, T> {
        // Acquire: pairs with the Release in `write_unlock`, so the last writer's changes are
        // visible.
        let old = self.reader_count.fetch_add(1, Ordering::Acquire);
        let readers = if old < 0 { old + MAX_READERS } else { old };
        if readers >= MAX_READERS - 1 {
            // One more would run into the writer bias; only leaked guards get here.
            eprintln!(
                "fatal error: goro: RwLock::read: {readers} read guards exist already, the \
                 maximum is {}",
                MAX_READERS - 1
            );
            std::process::abort();
        }
        if old < 0 {
            // A writer is pending or active: wait until its unlock lets us in.
            if let Err(interrupted) = self.reader_sem.acquire(false, WaitReason::Lock) {
                // Unwinding (the runtime is being dropped): a reader let in leaves again. One
                // still waiting stays with the semaphore as abandoned, and the writer's unlock
                // lets it in and out (`write_unlock`).
                if interrupted.granted {
                    self.read_unlock();
                }
                std::panic::resume_unwind(interrupted.payload);
            }
        }
        RwLockReadGuard {
            lock: self,
            _value: PhantomData,
        }
    }

    /// Locks for reading if no writer holds the lock or waits for it.
    pub fn try_read(&self) -> Option<RwLockReadGuard<'_, T>> {
        let mut count = self.reader_count.load(Ordering::Relaxed);
        loop {
            if !(0..MAX_READERS - 1).contains(&count) {
                return None;
            }
            // Acquire: as in `read`.
            match self.reader_count.compare_exchange_weak(
                count,
                count + 1,
                Ordering::Acquire,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    return Some(RwLockReadGuard {
                        lock: self,
                        _value: PhantomData,
                    });
                }
                Err(actual) => count = actual,
            }
        }
    }

    fn read_unlock(&self) {
        // Release: pairs with the Acquire of the writer that reads the count (in `write` or
        // through `reader_wait`).
        let count = self.reader_count.fetch_sub(1, Ordering::Release) - 1;
        if count < 0 {
            self.read_unlock_slow(count);
        }
    }

    #[cold]
    fn read_unlock_slow(&self, count: i32) {
        assert!(
            count + 1 != 0 && count + 1 != -MAX_READERS,
            "RwLock: read unlock of a lock that has no readers"
        );
        // A writer is pending. AcqRel: every departing reader's Release reaches the last one,
        // whose semaphore release then wakes the writer.
        if self.reader_wait.fetch_sub(1, Ordering::AcqRel) == 1
            && self.writer_sem.release() == Released::Abandoned
        {
            // The writer unwound while it waited: it got the lock now, and gives it back.
            self.write_unlock();
        }
    }

    /// Locks for writing, waiting for the current holders. Readers that arrive while this
    /// waits wait behind it.
    pub fn write(&self) -> RwLockWriteGuard<'_, T> {
        self.writer.lock();
        // Announce the pending writer to readers. AcqRel: Acquire pairs with the readers'
        // Release in `read_unlock`; Release orders the announcement for them.
        let readers = self.reader_count.fetch_sub(MAX_READERS, Ordering::AcqRel);
        // Wait for the readers inside. Each of them counts `reader_wait` down on its way
        // out, and the one that brings it to zero (the last reader, or this add) ends the
        // wait. AcqRel: pairs with the readers' AcqRel in `read_unlock_slow`.
        if readers != 0
            && self.reader_wait.fetch_add(readers, Ordering::AcqRel) + readers != 0
            && let Err(interrupted) = self.writer_sem.acquire(false, WaitReason::Lock)
        {
            // Unwinding (the runtime is being dropped): a writer that got the lock gives it
            // back. One still waiting stays with the semaphore as abandoned, and the last
            // reader's unlock does that for it (`read_unlock_slow`).
            if interrupted.granted {
                self.write_unlock();
            }
            std::panic::resume_unwind(interrupted.payload);
        }
        RwLockWriteGuard {
            lock: self,
            _value: PhantomData,
        }
    }

    /// Locks for writing if nobody holds the lock.
    pub fn try_write(&self) -> Option<RwLockWriteGuard<'_, T>> {
        if !self.writer.try_lock() {
            return None;
        }
        // Acquire: pairs with the readers' Release in `read_unlock`.
        if self
            .reader_count
            .compare_exchange(0, -MAX_READERS, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            self.writer.unlock();
            return None;
        }
        Some(RwLockWriteGuard {
            lock: self,
            _value: PhantomData,
        })
    }

    fn write_unlock(&self) {
        // Let readers in again. Release: pairs with the readers' Acquire in `read`.
        let readers = self.reader_count.fetch_add(MAX_READERS, Ordering::Release) + MAX_READERS;
        assert!(
            readers < MAX_READERS,
            "RwLock: write unlock of a lock that no writer holds"
        );
        // Wake the readers that arrived while the writer was pending or active. A reader that
        // unwound while it waited is let in and out at once.
        for _ in 0..readers {
            if self.reader_sem.release() == Released::Abandoned {
                self.read_unlock();
            }
        }
        self.writer.unlock();
    }

    /// Returns a mutable reference to the value; the `&mut self` proves nobody holds the lock.
    pub fn get_mut(&mut self) -> &mut T {
        self.data.get_mut()
    }
}

impl<T: Default> Default for RwLock<T> {
    fn default() -> RwLock<T> {
        RwLock::new(T::default())
    }
}

impl<T> From<T> for RwLock<T> {
    fn from(value: T) -> RwLock<T> {
        RwLock::new(value)
    }
}

impl<T: ?Sized + fmt::Debug> fmt::Debug for RwLock<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut debug = f.debug_struct("RwLock");
        match self.try_read() {
            Some(guard) => debug.field("data", &&*guard),
            None => debug.field("data", &format_args!("<locked>")),
        };
        debug.finish_non_exhaustive()
    }
}

/// Proof of shared access to an [`RwLock`]'s value; unlocks on drop.
#[must_use = "the read lock is released as soon as the guard is dropped"]
pub struct RwLockReadGuard<'a, T: ?Sized> {
    lock: &'a RwLock<T>,
    /// Makes the guard Send and Sync exactly as `&T` (and the lock) are.
    _value: PhantomData<&'a T>,
}

impl<T: ?Sized> Deref for RwLockReadGuard<'_, T> {
    type Target = T;

    fn deref(&self) -> &T {
        // SAFETY: the guard proves a read lock is held, so no `&mut T` exists.
        unsafe { &*self.lock.data.get() }
    }
}

impl<T: ?Sized> Drop for RwLockReadGuard<'_, T> {
    fn drop(&mut self) {
        self.lock.read_unlock();
    }
}

impl<T: ?Sized + fmt::Debug> fmt::Debug for RwLockReadGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

/// Proof of exclusive access to an [`RwLock`]'s value; unlocks on drop.
#[must_use = "the write lock is released as soon as the guard is dropped"]
pub struct RwLockWriteGuard<'a, T: ?Sized> {
    lock: &'a RwLock<T>,
    /// Makes the guard Send and Sync exactly as `&mut T` (and the lock) are.
    _value: PhantomData<&'a mut T>,
}

impl<T: ?Sized> Deref for RwLockWriteGuard<'_, T> {
    type Target = T;

    fn deref(&self) -> &T {
        // SAFETY: the guard proves the write lock is held: no other borrow exists.
        unsafe { &*self.lock.data.get() }
    }
}

impl<T: ?Sized> DerefMut for RwLockWriteGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in `deref`, and `&mut self` makes this the only borrow through the guard.
        unsafe { &mut *self.lock.data.get() }
    }
}

impl<T: ?Sized> Drop for RwLockWriteGuard<'_, T> {
    fn drop(&mut self) {
        self.lock.write_unlock();
    }
}

impl<T: ?Sized + fmt::Debug> fmt::Debug for RwLockWriteGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}
