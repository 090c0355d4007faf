//! A counter that goroutines and threads can wait on until it reaches zero.
//!
//! The algorithm is the one of Go's `sync.WaitGroup`: one 64-bit word contains the counter
//! (high half) and the number of waiters (low half), so that `add` reads in one step whether
//! it must wake waiters.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

use goro_abi::WaitReason;

use super::sema::Sema;

/// Waits for a collection of goroutines (or threads) to finish, as Go's `sync.WaitGroup`.
///
/// The coordinator calls [`add`](WaitGroup::add) with the number of tasks, each task calls
/// [`done`](WaitGroup::done) when it finishes, and [`wait`](WaitGroup::wait) blocks until the
/// counter is zero. An `add` with a positive delta while the counter is zero must happen
/// before the `wait` it is meant for. A wait group may be reused once every `wait` of the
/// previous round has returned. Share it through an `Arc` or a reference.
///
/// ```
/// use std::sync::Arc;
/// use std::sync::atomic::{AtomicU32, Ordering};
///
/// let rt = goro::Runtime::builder().procs(2).build().unwrap();
/// rt.block_on(|| {
///     let group = Arc::new(goro::sync::WaitGroup::new());
///     let finished = Arc::new(AtomicU32::new(0));
///     group.add(3);
///     for _ in 0..3 {
///         let (group, finished) = (group.clone(), finished.clone());
///         goro::spawn(move || {
///             finished.fetch_add(1, Ordering::Relaxed);
///             group.done();
///         })
///         .unwrap();
///     }
///     group.wait();
///     assert_eq!(finished.load(Ordering::Relaxed), 3);
/// })
/// .unwrap();
/// ```
pub struct WaitGroup {
    /// The counter in the high 32 bits (as an `i32`), the number of waiters in the low 32.
    state: AtomicU64,
    sema: Sema,
}

const WAITER: u64 = 1;

fn counter_of(state: u64) -> i32 {
    (state >> 32) as i32
}

fn waiters_of(state: u64) -> u32 {
    state as u32
}

impl WaitGroup {
    /// A wait group with the counter at zero.
    pub const fn new() -> WaitGroup {
        WaitGroup {
            state: AtomicU64::new(0),
            sema: Sema::new(),
        }
    }

    /// Adds `delta`, which may be negative, to the counter. When the counter reaches zero,
    /// every waiter is released.
    ///
    /// # Panics
    ///
    /// Panics when the counter would go negative or above `i32::MAX`, and when a positive
    /// `delta` races with a `wait` that is already releasing its waiters.
    pub fn add(&self, delta: i32) {
        self.add_as(delta, "WaitGroup::add");
    }

    /// Subtracts one from the counter: `add(-1)`.
    ///
    /// # Panics
    ///
    /// Panics when the counter would go negative: more `done` calls than added tasks.
    pub fn done(&self) {
        self.add_as(-1, "WaitGroup::done");
    }

    fn add_as(&self, delta: i32, function: &str) {
        let shifted = (i64::from(delta) as u64) << 32;
        // AcqRel: Release so that the work a task did before `done` happens before the
        // waiters' return (they Acquire in `wait`); Acquire to read the waiter count.
        let state = self
            .state
            .fetch_add(shifted, Ordering::AcqRel)
            .wrapping_add(shifted);
        let counter = counter_of(state);
        let waiters = waiters_of(state);

        if counter < 0 {
            // Undo, so that a caller that catches the panic finds the counter unchanged.
            self.state.fetch_sub(shifted, Ordering::Relaxed);
            if delta > 0 {
                panic!("{function}: the counter would exceed i32::MAX (adding {delta})");
            }
            panic!(
                "{function}: the counter would go negative ({counter}); call done once per \
                 task added"
            );
        }
        if waiters != 0 && delta > 0 && counter == delta {
            panic!(
                "{function}: called with a positive delta while wait() was releasing its \
                 waiters; add for a new round only after every wait of the last one returned"
            );
        }
        if counter > 0 || waiters == 0 {
            return;
        }

        // The counter is zero and goroutines wait, so only this call may change the state.
        // Acquire: as above.
        if self.state.load(Ordering::Acquire) != state {
            panic!("{function}: called concurrently with wait while the counter reached zero");
        }
        // Relaxed: the semaphore releases below order this reset before the waiters return.
        self.state.store(0, Ordering::Relaxed);
        for _ in 0..waiters {
            // A waiter that unwound (its runtime is being dropped) needs nothing more.
            let _ = self.sema.release();
        }
    }

    /// Blocks until the counter is zero. Returns at once when it already is. Called from a
    /// goroutine, it parks the goroutine; from any other thread, it blocks the thread.
    ///
    /// # Panics
    ///
    /// Panics when the wait group was reused (`add` called) before this wait returned.
    pub fn wait(&self) {
        // Acquire: pairs with the AcqRel of the `add` that brought the counter to zero.
        let mut state = self.state.load(Ordering::Acquire);
        loop {
            if counter_of(state) == 0 {
                return;
            }
            // AcqRel: registers this waiter before the last `done` reads the count.
            match self.state.compare_exchange_weak(
                state,
                state + WAITER,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => break,
                Err(actual) => state = actual,
            }
        }
        if let Err(interrupted) = self.sema.acquire(false, WaitReason::WaitGroup) {
            // Unwinding (the runtime is being dropped): the semaphore keeps this waiter's
            // unit, and nothing else is owed.
            std::panic::resume_unwind(interrupted.payload);
        }
        // Relaxed: only a misuse changes the state between the release and here.
        if self.state.load(Ordering::Relaxed) != 0 {
            panic!("WaitGroup::wait: the wait group was reused before a previous wait returned");
        }
    }

    /// The counter's current value.
    pub fn count(&self) -> i32 {
        counter_of(self.state.load(Ordering::Relaxed))
    }
}

impl Default for WaitGroup {
    fn default() -> WaitGroup {
        WaitGroup::new()
    }
}

impl fmt::Debug for WaitGroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.state.load(Ordering::Relaxed);
        f.debug_struct("WaitGroup")
            .field("counter", &counter_of(state))
            .field("waiters", &waiters_of(state))
            .finish()
    }
}
