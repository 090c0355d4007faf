//! The block of a spawned goroutine: the user's g, the runtime's record and the body.
//!
//! ```text
//!  Task<G, F, T> (one allocation, #[repr(C)])
//!  ┌──────────────────────────┐ ◀── GHeader* == Task* (the g's header is at offset 0)
//!  │ g: G   (GHeader first)   │     header.runtime ──┐
//!  ├──────────────────────────┤                      │
//!  │ record: Record           │ ◀────────────────────┘ refcount, stack, permits, join state
//!  ├──────────────────────────┤
//!  │ body: Pending(F) | Done(Result<T>) | Taken
//!  └──────────────────────────┘
//! ```
//!
//! The record is the same type for every task; what depends on `G`, `F` and `T` is reached
//! through its `TaskVTable`. References are counted: one for the goroutine until it exits, one
//! for its [`JoinHandle`](crate::JoinHandle), and one for each [`Goroutine`](crate::Goroutine)
//! handle.

use std::any::Any;
use std::cell::UnsafeCell;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use goro_abi::{CustomG, GHeader, GRef, custom_g};
use goro_stack::Stack;

use crate::park::Permit;
use crate::runtime::Shared;
use crate::waiter::Waiter;

custom_g! {
    /// The g type of goroutines spawned without a custom g: the header alone.
    pub struct DefaultG {
        /// The header.
        pub header: GHeader,
    }
}

impl DefaultG {
    /// A fresh default g.
    pub const fn new() -> DefaultG {
        DefaultG {
            header: GHeader::new(),
        }
    }
}

impl Default for DefaultG {
    fn default() -> Self {
        DefaultG::new()
    }
}

/// A panic payload, as `std::thread::Result` carries it.
pub(crate) type Panic = Box<dyn Any + Send + 'static>;

/// The operations on a task that depend on its concrete types.
pub(crate) struct TaskVTable {
    /// Runs the body on the g's own stack, catching a panic, and stores the outcome.
    run: unsafe fn(NonNull<Record>),
    /// Moves the outcome into `out`, a `*mut Option<Result<T, Panic>>`.
    take_output: unsafe fn(NonNull<Record>, out: *mut ()),
    /// Frees the whole block.
    dealloc: unsafe fn(NonNull<Record>),
}

/// Join state of a task, under the record's lock.
#[derive(Default)]
pub(crate) struct JoinState {
    pub(crate) complete: bool,
    pub(crate) waiter: Option<Waiter>,
}

/// The runtime's part of a goroutine's block, the same for every g type.
pub(crate) struct Record {
    vtable: &'static TaskVTable,
    header: NonNull<GHeader>,
    refs: AtomicUsize,
    /// The stack; taken back by the M that runs the g's exit, on its g0.
    pub(crate) stack: UnsafeCell<Option<Stack>>,
    /// The runtime that runs the g.
    shared: Arc<Shared>,
    /// The user's permit, for `park` and `Goroutine::unpark`.
    pub(crate) permit: Permit,
    /// The runtime's own permit, for its blocking waits (join), so that they never consume a
    /// user's wakeup.
    pub(crate) internal_permit: Permit,
    pub(crate) join: Mutex<JoinState>,
    /// Registry links and status times for dumps and debuggers.
    pub(crate) debug: crate::dump::GDebug,
}

#[repr(C)]
struct Task<G, F, T> {
    g: G,
    record: Record,
    body: UnsafeCell<Body<F, T>>,
}

enum Body<F, T> {
    Pending(F),
    Done(Result<T, Panic>),
    Taken,
}

impl Record {
    /// Allocates the block of a new goroutine and returns its record, with two references:
    /// the goroutine's and the join handle's.
    pub(crate) fn allocate<G, F, T>(g: G, body: F, shared: Arc<Shared>) -> NonNull<Record>
    where
        G: CustomG,
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        struct VTableOf<G, F, T>(std::marker::PhantomData<(G, F, T)>);
        impl<G: CustomG, F: FnOnce() -> T + Send + 'static, T: Send + 'static> VTableOf<G, F, T> {
            const VTABLE: TaskVTable = TaskVTable {
                run: run::<G, F, T>,
                take_output: take_output::<G, F, T>,
                dealloc: dealloc::<G, F, T>,
            };
        }

        let task = Box::new(Task {
            g,
            record: Record {
                vtable: &VTableOf::<G, F, T>::VTABLE,
                header: NonNull::dangling(),
                refs: AtomicUsize::new(2),
                stack: UnsafeCell::new(None),
                shared,
                permit: Permit::new(),
                internal_permit: Permit::new(),
                join: Mutex::new(JoinState::default()),
                debug: crate::dump::GDebug::new(),
            },
            body: UnsafeCell::new(Body::<F, T>::Pending(body)),
        });
        let task = NonNull::from(Box::leak(task));
        // SAFETY: `task` was just leaked from a Box; nobody else sees it yet.
        let task_ref = unsafe { task.as_ref() };
        let header = NonNull::from(task_ref.g.header());
        let record = NonNull::from(&task_ref.record);
        // SAFETY: as above; the record is written once here, before the g is published.
        unsafe { (*task.as_ptr()).record.header = header };
        header_of_new(task_ref.g.header(), G::gtype(), record);
        record
    }

    /// The record of a g spawned by this runtime.
    ///
    /// # Safety
    ///
    /// `g` must have been allocated by [`Record::allocate`] and still be alive.
    #[inline]
    pub(crate) unsafe fn of(g: GRef) -> NonNull<Record> {
        let record = g.header().runtime() as *mut Record;
        debug_assert!(
            !record.is_null(),
            "Record::of: g{} has no runtime record",
            g.header().goid()
        );
        // SAFETY: `allocate` set the header's runtime field to the record of the same block.
        unsafe { NonNull::new_unchecked(record) }
    }

    /// The runtime that runs the g.
    #[inline]
    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// The g this record belongs to.
    pub(crate) fn g(&self) -> GRef {
        // SAFETY: the header lives in the same block as the record.
        unsafe { GRef::from_raw(self.header) }
    }

    /// Runs the body; called once, on the g's own stack, by the entry trampoline.
    ///
    /// # Safety
    ///
    /// `record` must be alive and its body not run yet.
    pub(crate) unsafe fn run(record: NonNull<Record>) {
        // SAFETY: the caller's contract.
        unsafe { (record.as_ref().vtable.run)(record) }
    }

    /// Moves the outcome into `out`, a `*mut Option<Result<T, Panic>>` for the task's `T`.
    ///
    /// # Safety
    ///
    /// `record` must be alive, complete, and `out` of the task's output type.
    pub(crate) unsafe fn take_output(record: NonNull<Record>, out: *mut ()) {
        // SAFETY: the caller's contract.
        unsafe { (record.as_ref().vtable.take_output)(record, out) }
    }

    /// Adds a reference.
    pub(crate) fn retain(&self) {
        // Relaxed: a new reference is made from an existing one, which keeps the block alive
        // (the same argument as `Arc::clone`).
        self.refs.fetch_add(1, Ordering::Relaxed);
    }

    /// Drops a reference and frees the block with the last one.
    ///
    /// # Safety
    ///
    /// The caller must own one reference, and use neither it nor `record` afterwards.
    pub(crate) unsafe fn release(record: NonNull<Record>) {
        // SAFETY: the caller owns a reference, so the record is alive.
        let this = unsafe { record.as_ref() };
        // Release: every use of the block by this owner happens before the free; the last
        // owner's Acquire fence below pairs with it (the argument of `Arc::drop`).
        if this.refs.fetch_sub(1, Ordering::Release) != 1 {
            return;
        }
        std::sync::atomic::fence(Ordering::Acquire);
        // SAFETY: that was the last reference.
        unsafe { (this.vtable.dealloc)(record) }
    }
}

fn header_of_new(header: &GHeader, gtype: &'static goro_abi::GType, record: NonNull<Record>) {
    header.set_gtype(gtype);
    header.set_runtime(record.as_ptr().cast());
}

/// # Safety
///
/// `record` is the record of a live `Task<G, F, T>`.
unsafe fn task<'a, G, F, T>(record: NonNull<Record>) -> &'a Task<G, F, T> {
    // SAFETY: the record field sits at a fixed offset in the repr(C) task; walk back to the
    // block's start through the header, which is at offset 0.
    unsafe { &*(record.as_ref().header.as_ptr() as *const Task<G, F, T>) }
}

unsafe fn run<G: CustomG, F: FnOnce() -> T + Send + 'static, T: Send + 'static>(
    record: NonNull<Record>,
) {
    // SAFETY: the vtable is only reached through a record of this task type.
    let task = unsafe { task::<G, F, T>(record) };
    // SAFETY: only the goroutine itself touches the body while it runs; joiners wait for
    // completion, which is published after this function returns.
    let body = unsafe { &mut *task.body.get() };
    let Body::Pending(f) = std::mem::replace(body, Body::Taken) else {
        panic!(
            "Record::run: goroutine g{} started twice",
            task.g.header().goid()
        );
    };
    *body = Body::Done(catch_unwind(AssertUnwindSafe(f)));
}

unsafe fn take_output<G: CustomG, F: FnOnce() -> T + Send + 'static, T: Send + 'static>(
    record: NonNull<Record>,
    out: *mut (),
) {
    // SAFETY: the vtable is only reached through a record of this task type.
    let task = unsafe { task::<G, F, T>(record) };
    // SAFETY: the task is complete, so the goroutine no longer touches the body, and only the
    // one join handle takes the output.
    let body = unsafe { &mut *task.body.get() };
    let out = out as *mut Option<Result<T, Panic>>;
    if let Body::Done(result) = std::mem::replace(body, Body::Taken) {
        // SAFETY: the caller passes an output slot of this task's type.
        unsafe { *out = Some(result) };
    }
}

unsafe fn dealloc<G: CustomG, F: FnOnce() -> T + Send + 'static, T: Send + 'static>(
    record: NonNull<Record>,
) {
    // SAFETY: the block came from `Box::leak` in `allocate` and this is its last reference.
    let header = unsafe { record.as_ref() }.header;
    // SAFETY: as above.
    drop(unsafe { Box::from_raw(header.as_ptr() as *mut Task<G, F, T>) });
}
