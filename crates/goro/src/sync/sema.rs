//! A counting semaphore whose waiters park: the wait queue behind [`super::Mutex`],
//! [`super::RwLock`] and [`super::WaitGroup`], as Go's runtime semaphore (`sema.go`) is behind
//! its `sync` package.
//!
//! A release hands its unit straight to the first waiter, if there is one, so a woken waiter
//! never has to compete for it again.

use std::cell::UnsafeCell;
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
    /// Units released while nobody waited.
    count: u32,
    waiters: WaitList<SemaNode>,
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
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SemaState> {
        // No user code runs under this lock, so poisoning cannot leave it inconsistent.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes a unit, waiting for one when there is none. A `lifo` waiter queues at the front,
    /// so it is the next one served (Go's `queueLifo`, for a waiter that already waited).
    pub(crate) fn acquire(&self, lifo: bool, reason: WaitReason) {
        let mut state = self.lock();
        if state.count > 0 {
            state.count -= 1;
            return;
        }
        let node = SemaNode {
            links: Links::new(),
            waiter: UnsafeCell::new(Some(Waiter::current())),
            granted: AtomicBool::new(false),
        };
        // SAFETY: `queued` unlinks the node before this frame ends, unless a release granted
        // it a unit, which unlinks it.
        unsafe {
            if lifo {
                state.waiters.push_front(NonNull::from(&node));
            } else {
                state.waiters.push_back(NonNull::from(&node));
            }
        }
        let queued = Queued {
            sema: self,
            node: &node,
        };
        drop(state);
        // Acquire: pairs with the Release in `release`; what the releaser did before it
        // happens before the caller goes on.
        wait_until(|| node.granted.load(Ordering::Acquire), reason, None);
        std::mem::forget(queued);
    }

    /// Gives a unit to the first waiter, or keeps it when nobody waits.
    pub(crate) fn release(&self) {
        let waiter = {
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
                None => {
                    state.count = state
                        .count
                        .checked_add(1)
                        .expect("Sema::release: more than u32::MAX units released");
                    None
                }
            }
        };
        if let Some(waiter) = waiter {
            waiter.wake();
        }
    }
}

/// A node in the queue; unlinks it on drop, so that it never outlives its link when the wait
/// unwinds.
struct Queued<'a> {
    sema: &'a Sema,
    node: &'a SemaNode,
}

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        let mut state = self.sema.lock();
        // SAFETY: the node is alive (borrowed) and only ever queued in this semaphore.
        let removed = unsafe { state.waiters.remove(NonNull::from(self.node)) };
        drop(state);
        if !removed {
            // A release granted us a unit that we will not use: pass it on.
            self.sema.release();
        }
    }
}
