//! Who waits for an event: a goroutine (parked on its internal permit) or a plain thread.

use std::thread::Thread;

use crate::m::current_record;
use crate::park::Goroutine;

/// A party blocked until an event happens, and the way to wake it.
#[derive(Clone)]
pub(crate) enum Waiter {
    /// A goroutine, parked on its runtime-internal permit.
    G(Goroutine),
    /// A thread that runs no goroutine, parked with `std::thread::park`.
    Thread(Thread),
}

impl Waiter {
    /// The calling goroutine, or the calling thread when it runs none.
    pub(crate) fn current() -> Waiter {
        match current_record() {
            Some(record) => Waiter::G(Goroutine::from_record(record)),
            None => Waiter::Thread(std::thread::current()),
        }
    }

    /// Returns whether the waiter is the calling goroutine, or the calling thread when it runs
    /// no goroutine.
    pub(crate) fn is_current(&self) -> bool {
        match (self, current_record()) {
            (Waiter::G(g), Some(record)) => g.record_ptr() == record,
            (Waiter::Thread(thread), None) => thread.id() == std::thread::current().id(),
            _ => false,
        }
    }

    /// Wakes the waiter. Safe to call before it blocks: the wakeup is kept as a permit.
    pub(crate) fn wake(self) {
        match self {
            Waiter::G(g) => g.unpark_internal(),
            Waiter::Thread(thread) => thread.unpark(),
        }
    }
}

/// Blocks the caller until `done()` holds, parking the goroutine (on its internal permit) or
/// the thread between checks. The caller must have registered a [`Waiter`] that the event's
/// producer wakes after making `done()` true. A thread also rechecks every `thread_recheck`.
pub(crate) fn wait_until(
    mut done: impl FnMut() -> bool,
    reason: goro_abi::WaitReason,
    thread_recheck: Option<std::time::Duration>,
) {
    while !done() {
        match current_record() {
            Some(record) => {
                // SAFETY: the record of the running goroutine is alive while it runs.
                let permit = unsafe { &record.as_ref().internal_permit };
                crate::park::park_on(permit, reason);
            }
            None => match thread_recheck {
                Some(timeout) => std::thread::park_timeout(timeout),
                None => std::thread::park(),
            },
        }
    }
}
