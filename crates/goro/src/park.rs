//! Parking and unparking goroutines, and yielding.

use std::fmt;
use std::ptr::NonNull;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use goro_abi::{GRef, ReadyCause, WaitReason};

use crate::m::{self, current_record};
use crate::runtime::Shared;
use crate::task::Record;

const EMPTY: u32 = 0;
const NOTIFIED: u32 = 1;
const PARKED: u32 = 2;

/// A one-token wakeup permit, as `std::thread::park` keeps per thread.
///
/// `EMPTY -> NOTIFIED` by an unpark that finds the g running; `NOTIFIED -> EMPTY` by the park
/// that consumes it; `EMPTY -> PARKED` by the g's M on g0, after the g has left its stack;
/// `PARKED -> EMPTY` by the unpark that readies it.
#[derive(Debug)]
pub(crate) struct Permit {
    state: AtomicU32,
}

impl Permit {
    pub(crate) const fn new() -> Permit {
        Permit {
            state: AtomicU32::new(EMPTY),
        }
    }

    /// Consumes a stored wakeup, if there is one.
    fn try_consume(&self) -> bool {
        // Acquire: pairs with the unparker's Release, so the parker sees what was written
        // before the unpark.
        self.state
            .compare_exchange(NOTIFIED, EMPTY, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
    }

    /// Commits a park on g0. Returns `false` when a wakeup arrived since `try_consume`, which
    /// is consumed: the g must then keep running.
    fn commit_park(&self) -> bool {
        // AcqRel: Release publishes the g's parked state to the unparker that will ready it;
        // on failure, the Acquire load sees the unparker's NOTIFIED.
        match self
            .state
            .compare_exchange(EMPTY, PARKED, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => true,
            Err(NOTIFIED) => {
                self.state.store(EMPTY, Ordering::Relaxed);
                false
            }
            Err(other) => panic!("Permit::commit_park: permit in state {other}, expected empty"),
        }
    }

    /// Stores a wakeup; returns `true` when the g was parked and must now be readied.
    fn unpark(&self) -> bool {
        let mut state = self.state.load(Ordering::Relaxed);
        loop {
            let next = match state {
                NOTIFIED => return false,
                EMPTY => NOTIFIED,
                PARKED => EMPTY,
                other => panic!("Permit::unpark: corrupt permit state {other}"),
            };
            // AcqRel: Release publishes the unparker's writes to the g; Acquire (on PARKED)
            // takes the parked state that commit_park released.
            match self
                .state
                .compare_exchange_weak(state, next, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => return state == PARKED,
                Err(actual) => state = actual,
            }
        }
    }
}

/// Parks the running goroutine on `permit` until an unpark of the same permit, unless a
/// wakeup is already stored.
pub(crate) fn park_on(permit: &Permit, reason: WaitReason) {
    unwind_if_cancelled();
    if permit.try_consume() {
        return;
    }
    unsafe fn commit(data: *const (), _g: GRef) -> bool {
        // SAFETY: `data` is the permit passed below, alive in the suspended g's record.
        unsafe { &*(data as *const Permit) }.commit_park()
    }
    m::gopark(reason, commit, permit as *const Permit as *const ());
    unwind_if_cancelled();
}

/// The panic payload with which a goroutine unwinds when its runtime is dropped while the
/// goroutine is parked or yielding. `join` reports it as `JoinError::Shutdown`.
pub(crate) struct Cancelled;

/// Unwinds the running goroutine if its runtime is being dropped. `resume_unwind` skips the
/// panic hook, so nothing is printed.
fn unwind_if_cancelled() {
    if let Some(record) = current_record() {
        // SAFETY: the running goroutine's record is alive while it runs.
        unwind_if_runtime_cancelling(unsafe { record.as_ref() });
    }
}

/// Unwinds the running goroutine, whose record is `record`, if its runtime is being dropped,
/// unless it is unwinding already.
///
/// A goroutine that parks in a destructor while it unwinds resumes on its own M, but at the
/// thread limit it may resume on another one (see `m::pin_if_unwinding`), where
/// `std::thread::panicking()` is false (std counts panics per thread). So the goroutine's own
/// flag, not only the thread's count, records that the cancellation unwind has started.
fn unwind_if_runtime_cancelling(record: &Record) {
    if record.shared().is_cancelling()
        && !std::thread::panicking()
        && !record.cancel_unwinding.swap(true, Ordering::Relaxed)
    {
        std::panic::resume_unwind(Box::new(Cancelled));
    }
}

/// Wakes the goroutine of `record` if it is parked, so that it unwinds (its runtime is
/// cancelling). The caller keeps the record alive for the duration of the call.
pub(crate) fn cancel(record: &Record) {
    if record.g().header().status() == goro_abi::GStatus::Waiting {
        unpark_permit(record, &record.internal_permit);
        unpark_permit(record, &record.permit);
    }
}

/// Makes `permit`, one of the two permits of `record`, available, and readies the goroutine
/// when that woke it.
fn unpark_permit(record: &Record, permit: &Permit) {
    if permit.unpark() {
        let g = record.g();
        // SAFETY: the permit's unpark made this caller the g's only waker.
        let _ = unsafe { g.header().wake() };
        m::ready(g, ReadyCause::Wake);
    }
}

/// A handle to a goroutine, for waking it with [`Goroutine::unpark`]. Keeps the goroutine's
/// block alive, not the goroutine running.
pub struct Goroutine {
    // The handle also owns a counted reference to the goroutine's runtime, reached through
    // the record. The record alone does not keep the runtime alive after the goroutine exits,
    // and the last reference to the record returns the stack to the runtime's pool. Without
    // a second field, a join cell that holds a `Goroutine` still fits a block of the M's
    // block cache.
    record: NonNull<Record>,
}

// SAFETY: the record is reference-counted with atomics and its permits are atomics.
unsafe impl Send for Goroutine {}
// SAFETY: as above.
unsafe impl Sync for Goroutine {}

impl Goroutine {
    pub(crate) fn from_record(record: NonNull<Record>) -> Goroutine {
        // SAFETY: the caller holds the record alive (the running g, or another handle).
        let rec = unsafe { record.as_ref() };
        rec.retain();
        // This handle's reference to the runtime, which `drop` gives back.
        std::mem::forget(rec.shared().arc());
        Goroutine { record }
    }

    /// Returns the goroutine's record, to compare handles.
    pub(crate) fn record_ptr(&self) -> NonNull<Record> {
        self.record
    }

    fn record(&self) -> &Record {
        // SAFETY: this handle owns a reference.
        unsafe { self.record.as_ref() }
    }

    /// The goroutine's id.
    pub fn goid(&self) -> u64 {
        self.record().g().header().goid()
    }

    /// Returns the runtime of the goroutine.
    pub(crate) fn shared(&self) -> &crate::runtime::Shared {
        self.record().shared()
    }

    pub(crate) fn gref(&self) -> GRef {
        self.record().g()
    }

    /// Makes the goroutine's permit available: a parked goroutine wakes, and a running one
    /// returns at once from its next [`park`].
    pub fn unpark(&self) {
        unpark_permit(self.record(), &self.record().permit);
    }

    pub(crate) fn unpark_internal(&self) {
        unpark_permit(self.record(), &self.record().internal_permit);
    }
}

impl Clone for Goroutine {
    fn clone(&self) -> Goroutine {
        Goroutine::from_record(self.record)
    }
}

impl Drop for Goroutine {
    fn drop(&mut self) {
        // SAFETY: the reference that `from_record` took for this handle. Dropped after the
        // release below, also when a custom g's drop panics in it.
        let _runtime = unsafe { Arc::from_raw(self.shared() as *const Shared) };
        // SAFETY: this handle owns one reference and gives it up here. `_runtime` keeps the
        // runtime alive until after this call.
        unsafe { Record::release(self.record) };
    }
}

impl fmt::Debug for Goroutine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Goroutine(g{})", self.goid())
    }
}

/// Returns a handle to the running goroutine.
///
/// # Panics
///
/// Panics when called from a thread that runs no goroutine.
pub fn current() -> Goroutine {
    match current_record() {
        Some(record) => Goroutine::from_record(record),
        None => panic!("goro::current called from a thread that runs no goroutine"),
    }
}

/// Blocks the running goroutine until its permit is made available by
/// [`Goroutine::unpark`], and consumes it. Returns at once when the permit is already there.
/// As with `std::thread::park`, callers recheck their condition in a loop.
///
/// # Panics
///
/// Panics when called from a thread that runs no goroutine.
pub fn park() {
    let Some(record) = current_record() else {
        panic!("goro::park called from a thread that runs no goroutine");
    };
    // SAFETY: the running goroutine's record is alive while it runs.
    let permit = unsafe { &record.as_ref().permit };
    park_on(permit, WaitReason::Park);
}

/// Lets other goroutines run: the running goroutine goes back to its scheduler, which decides
/// when it runs again (the FIFO scheduler puts it at the back of its queue).
///
/// # Panics
///
/// Panics when called from a thread that runs no goroutine.
pub fn yield_now() {
    let Some(record) = current_record() else {
        panic!("goro::yield_now called from a thread that runs no goroutine");
    };
    // SAFETY: the running goroutine's record is alive while it runs, and it runs again after
    // the yield (the record is the g's, whichever M resumes it).
    let record = unsafe { record.as_ref() };
    unwind_if_runtime_cancelling(record);
    // SAFETY: the record's g is the running g (`current_record` read the g register).
    unsafe { m::gosched(record.g()) };
    unwind_if_runtime_cancelling(record);
}
