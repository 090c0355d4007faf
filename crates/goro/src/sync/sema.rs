//! A counting semaphore whose waiters park: the wait queue behind [`super::Mutex`],
//! [`super::RwLock`] and [`super::WaitGroup`], as Go's runtime semaphore (`sema.go`) is behind
//! its `sync` package.
//!
//! A release hands its unit straight to the first waiter, if there is one, so a woken waiter
//! never has to compete for it again.
//!
//! A waiting goroutine can unwind out of `acquire` when its runtime is dropped. The primitive
//! above has already counted it as a waiter, so its units must still arrive: the semaphore
//! keeps an abandoned waiter in its place, and the release that reaches that place returns
//! [`Released::Abandoned`] so that the caller performs the waiter's part (unlocking what the
//! waiter would have locked, for instance).

use std::any::Any;
use std::cell::UnsafeCell;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::ptr::NonNull;
use std::sync::Mutex as StdMutex;
use std::sync::atomic::{AtomicBool, Ordering};

use goro_abi::WaitReason;

use super::waitlist::{Linked, Links, WaitList};
use crate::waiter::{Waiter, wait_until};

/// A blocked `acquire`, in the frame of its caller.
struct SemaNode {
    links: Links<SemaNode>,
    /// The caller, to wake; taken by the release that grants the unit.
    waiter: UnsafeCell<Option<Waiter>>,
    /// Set by the release that grants this node a unit, as the last touch of the node.
    granted: AtomicBool,
}

// SAFETY: `links` is the node's one link field.
unsafe impl Linked for SemaNode {
    fn links(&self) -> &Links<SemaNode> {
        &self.links
    }
}

struct SemaState {
    /// Units released while no waiter was queued.
    count: u32,
    waiters: WaitList<SemaNode>,
    /// Waiters that unwound out of `acquire` before a unit reached them; each takes one of
    /// the units released after the queue is empty.
    abandoned: u32,
}

/// What a [`Sema::release`] did with its unit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use = "an abandoned waiter's part must be performed by the releaser"]
pub(crate) enum Released {
    /// Granted to a queued waiter, which was woken.
    Granted,
    /// Stored in the count, since nobody waited.
    Stored,
    /// Taken on behalf of an abandoned waiter: the caller must do what that waiter would
    /// have done with the unit.
    Abandoned,
}

/// A wait that unwound (its runtime is being dropped). The caller undoes its part of the
/// primitive's state, then resumes the unwind with `payload`.
pub(crate) struct Interrupted {
    /// Whether a release had granted the unit already: the waiter then owns what the unit
    /// stands for. Otherwise the semaphore keeps the waiter as abandoned.
    pub(crate) granted: bool,
    pub(crate) payload: Box<dyn Any + Send + 'static>,
}

/// A counting semaphore, starting at zero.
pub(crate) struct Sema {
    state: StdMutex<SemaState>,
}

impl Sema {
    pub(crate) const fn new() -> Sema {
        Sema {
            state: StdMutex::new(SemaState {
                count: 0,
                waiters: WaitList::new(),
                abandoned: 0,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SemaState> {
        // No user code runs under this lock, so poisoning cannot leave it inconsistent.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes a unit, waiting for one when there is none. A `lifo` waiter queues at the front,
    /// so it is the next one served (Go's `queueLifo`, for a waiter that already waited).
    ///
    /// # Errors
    ///
    /// Returns [`Interrupted`] when the wait unwinds.
    pub(crate) fn acquire(&self, lifo: bool, reason: WaitReason) -> Result<(), Interrupted> {
        let mut state = self.lock();
        if state.count > 0 {
            state.count -= 1;
            return Ok(());
        }
        let node = SemaNode {
            links: Links::new(),
            waiter: UnsafeCell::new(Some(Waiter::current())),
            granted: AtomicBool::new(false),
        };
        // SAFETY: the node is unlinked before this frame ends: by the release that grants it
        // a unit, or below when the wait unwinds.
        unsafe {
            if lifo {
                state.waiters.push_front(NonNull::from(&node));
            } else {
                state.waiters.push_back(NonNull::from(&node));
            }
        }
        drop(state);
        // Acquire: pairs with the Release in `release`; what the releaser did before it
        // happens before the caller goes on.
        let waited = catch_unwind(AssertUnwindSafe(|| {
            wait_until(|| node.granted.load(Ordering::Acquire), reason, None)
        }));
        let Err(payload) = waited else {
            return Ok(());
        };
        let mut state = self.lock();
        // SAFETY: the node is alive and only ever queued in this semaphore.
        let queued = unsafe { state.waiters.remove(NonNull::from(&node)) };
        if queued {
            state.abandoned = state
                .abandoned
                .checked_add(1)
                .expect("Sema::acquire: more than u32::MAX abandoned waiters");
        }
        Err(Interrupted {
            granted: !queued,
            payload,
        })
    }

    /// Gives a unit to the first waiter (or abandoned waiter), or keeps it when nobody waits.
    pub(crate) fn release(&self) -> Released {
        let granted = {
            let mut state = self.lock();
            match state.waiters.pop_front() {
                Some(node) => {
                    // SAFETY: a linked node is alive until its owner sees `granted`, which is
                    // the last thing set here.
                    let node = unsafe { node.as_ref() };
                    // SAFETY: only the releaser that unlinked the node touches its waiter.
                    let waiter = unsafe { (*node.waiter.get()).take() };
                    // Release: pairs with the Acquire in `acquire`.
                    node.granted.store(true, Ordering::Release);
                    waiter
                }
                None if state.abandoned > 0 => {
                    state.abandoned -= 1;
                    return Released::Abandoned;
                }
                None => {
                    state.count = state
                        .count
                        .checked_add(1)
                        .expect("Sema::release: more than u32::MAX units released");
                    return Released::Stored;
                }
            }
        };
        if let Some(waiter) = granted {
            waiter.wake();
        }
        Released::Granted
    }
}
