//! Waiting for a goroutine's result.

use std::any::Any;
use std::fmt;
use std::marker::PhantomData;
use std::ptr::NonNull;

use goro_abi::WaitReason;

use crate::runtime::SpawnError;
use crate::task::{Panic, Record};
use crate::waiter::{Waiter, wait_until};

/// An owned permission to wait for a goroutine and take its result. Dropping it detaches the
/// goroutine, which keeps running.
pub struct JoinHandle<T> {
    record: NonNull<Record>,
    _output: PhantomData<T>,
}

// SAFETY: the handle only moves the output `T` (which is Send) out of the shared block, under
// the record's join lock; the record is reference-counted with atomics.
unsafe impl<T: Send> Send for JoinHandle<T> {}
// SAFETY: `&JoinHandle` only reads the goid.
unsafe impl<T: Send> Sync for JoinHandle<T> {}

impl<T> JoinHandle<T> {
    /// Wraps the join handle's reference to a new task's record.
    pub(crate) fn new(record: NonNull<Record>) -> JoinHandle<T> {
        JoinHandle {
            record,
            _output: PhantomData,
        }
    }

    fn record(&self) -> &Record {
        // SAFETY: the handle owns a reference to the record.
        unsafe { self.record.as_ref() }
    }

    /// The goroutine's id.
    pub fn goid(&self) -> u64 {
        self.record().g().header().goid()
    }

    /// Returns whether the goroutine has finished.
    pub fn is_finished(&self) -> bool {
        self.record()
            .join
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .complete
    }

    /// Waits for the goroutine to finish and returns its value, or its panic as an error.
    ///
    /// Called from a goroutine, it parks the goroutine; from any other thread, it blocks the
    /// thread.
    pub fn join(self) -> Result<T, JoinError> {
        let goid = self.goid();
        let record = self.record();
        let shared = record.shared().clone();
        let on_thread = crate::m::current_record().is_none();
        if on_thread {
            // Registered before the first check, so a deadlock report or a shutdown after it
            // wakes this thread.
            shared.add_external_waiter();
        }
        {
            let mut join = record.join.lock().unwrap_or_else(|e| e.into_inner());
            if !join.complete {
                join.waiter = Some(Waiter::current());
            }
        }
        let mut failure = None;
        wait_until(
            || {
                if record
                    .join
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .complete
                {
                    return true;
                }
                if on_thread && shared.is_shutdown() {
                    failure = Some(JoinError::Shutdown { goid });
                } else if on_thread && shared.is_deadlocked() {
                    failure = Some(JoinError::Deadlock { goid });
                }
                failure.is_some()
            },
            WaitReason::Join,
            None,
        );
        if on_thread {
            shared.remove_external_waiter();
        }
        if let Some(error) = failure {
            return Err(error);
        }
        let mut output: Option<Result<T, Panic>> = None;
        // SAFETY: the task is complete, `output` has the task's output type, and this handle
        // is consumed, so the output is taken once.
        unsafe { Record::take_output(self.record, &mut output as *mut _ as *mut ()) };
        match output {
            Some(Ok(value)) => Ok(value),
            Some(Err(payload)) if payload.is::<crate::park::Cancelled>() => {
                Err(JoinError::Shutdown { goid })
            }
            Some(Err(payload)) => Err(JoinError::Panicked { goid, payload }),
            None => unreachable!("JoinHandle::join: g{goid} completed without an output"),
        }
    }
}

impl<T> Drop for JoinHandle<T> {
    fn drop(&mut self) {
        // SAFETY: the handle owns one reference and gives it up here.
        unsafe { Record::release(self.record) }
    }
}

impl<T> fmt::Debug for JoinHandle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "JoinHandle(g{})", self.goid())
    }
}

/// Why [`JoinHandle::join`] returned no value.
#[non_exhaustive]
pub enum JoinError {
    /// The goroutine panicked; the payload is what `panic!` was given.
    Panicked {
        /// The goroutine's id.
        goid: u64,
        /// The panic payload.
        payload: Box<dyn Any + Send + 'static>,
    },
    /// The runtime shut down before the goroutine finished.
    Shutdown {
        /// The goroutine's id.
        goid: u64,
    },
    /// Every goroutine of the runtime was parked with nothing left to wake them (the runtime
    /// printed the goroutines and their wait reasons on stderr).
    Deadlock {
        /// The goroutine's id.
        goid: u64,
    },
    /// The goroutine could not be spawned (from `Runtime::block_on`).
    Spawn(SpawnError),
}

impl JoinError {
    /// The panic message, when the goroutine panicked with a string.
    pub fn panic_message(&self) -> Option<&str> {
        match self {
            JoinError::Panicked { payload, .. } => payload
                .downcast_ref::<&'static str>()
                .copied()
                .or_else(|| payload.downcast_ref::<String>().map(String::as_str)),
            _ => None,
        }
    }

    /// Returns the panic payload, to resume the panic with `std::panic::resume_unwind`.
    pub fn into_panic(self) -> Option<Box<dyn Any + Send + 'static>> {
        match self {
            JoinError::Panicked { payload, .. } => Some(payload),
            _ => None,
        }
    }
}

impl fmt::Display for JoinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JoinError::Panicked { goid, .. } => match self.panic_message() {
                Some(message) => write!(f, "goroutine {goid} panicked: {message}"),
                None => write!(f, "goroutine {goid} panicked"),
            },
            JoinError::Shutdown { goid } => {
                write!(f, "goroutine {goid} did not finish: its runtime shut down")
            }
            JoinError::Deadlock { goid } => write!(
                f,
                "goroutine {goid} did not finish: all goroutines are asleep - deadlock"
            ),
            JoinError::Spawn(error) => write!(f, "failed to spawn the goroutine: {error}"),
        }
    }
}

impl fmt::Debug for JoinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::error::Error for JoinError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            JoinError::Spawn(error) => Some(error),
            _ => None,
        }
    }
}
