//! The block of a spawned goroutine: the user's g, the runtime's record and the body.
//!
//! ```text
//!  the g's stack (higher addresses up)
//!  ┌──────────────────────────┐ ◀── Stack::hi
//!  │ body: Option<F>          │
//!  │ record: Record           │ ◀── header.runtime: refcount, stack, permits, join cell
//!  │ g: G   (GHeader first)   │ ◀── GHeader* == Task* (Task<G, F, T> is #[repr(C)])
//!  ├──────────────────────────┤ ◀── header.stack_hi: the g's frames start below its block
//!  │ frames ...               │
//!  │           ...            │
//!  └──────────────────────────┘ ◀── Stack::lo, above the guard
//! ```
//!
//! The block sits at the top of the g's own stack, so a spawn allocates no heap memory for it,
//! and its memory is recycled with the stack through the pool's caches. A block too large for
//! that (a custom g of more than an eighth of the stack) is allocated on the heap instead. The
//! value that a [`JoinHandle`](crate::JoinHandle) waits for lives in a separate, small
//! [`JoinCell`], so that a handle kept after the g exits keeps neither the block nor the stack.
//!
//! The record is the same type for every task; what depends on `G`, `F` and `T` is reached
//! through its `TaskVTable`. References are counted: one for the goroutine until it exits, and
//! one for each [`Goroutine`](crate::Goroutine) handle. The last reference returns the stack
//! to the pool.

use std::any::Any;
use std::cell::UnsafeCell;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::ptr::NonNull;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use goro_abi::{CustomG, GHeader, GRef, custom_g};
use goro_stack::Stack;

use crate::join::JoinCell;
use crate::m::M;
use crate::park::Permit;
use crate::runtime::Shared;

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
    /// Runs the body on the g's own stack, catching a panic, and stores the outcome in the
    /// join cell.
    run: unsafe fn(NonNull<Record>),
    /// Drops the block in place, and frees its memory when it is on the heap. The stack must
    /// have been taken out of the record before.
    drop_block: unsafe fn(NonNull<Record>),
}

/// The runtime's part of a goroutine's block, the same for every g type.
pub(crate) struct Record {
    vtable: &'static TaskVTable,
    header: NonNull<GHeader>,
    refs: AtomicUsize,
    /// Whether the block lives at the top of `stack` rather than on the heap.
    on_stack: bool,
    /// The stack; taken out by the last reference, which returns it to the pool.
    pub(crate) stack: UnsafeCell<Option<Stack>>,
    /// The runtime that runs the g, without a count: the runtime outlives every reference to
    /// the record. Live goroutines share one counted reference (`Shared::count_exit`), and
    /// each [`Goroutine`](crate::Goroutine) handle owns one. A count per record would cost two
    /// read-modify-writes per goroutine on a line that every M writes.
    shared: NonNull<Shared>,
    /// The user's permit, for `park` and `Goroutine::unpark`.
    pub(crate) permit: Permit,
    /// The runtime's own permit, for its blocking waits (join), so that they never consume a
    /// user's wakeup.
    pub(crate) internal_permit: Permit,
    /// Set when the goroutine starts to unwind because its runtime is dropping, so that a
    /// park in a destructor during that unwind does not start a second one. Only the
    /// goroutine itself reads and writes it; Relaxed.
    pub(crate) cancel_unwinding: std::sync::atomic::AtomicBool,
    /// The M that the g is pinned to, or null. std counts panics per OS thread, so a g that
    /// switches away while it unwinds must resume on the thread where the unwind began (see
    /// `m::pin_if_unwinding`). Set by that M's g0 before the g is queued or published to a
    /// waker, and cleared by the M that takes the g from its scheduler. Both are Relaxed,
    /// because the queue or the waker's lock that hands the g over orders them.
    pub(crate) pinned_m: std::sync::atomic::AtomicPtr<M>,
    /// The join cell of the g's [`JoinHandle`](crate::JoinHandle). The g holds one reference
    /// to it until `Shared::finish` completes it.
    join: NonNull<JoinCell>,
    /// Registry links and status times for dumps and debuggers.
    pub(crate) debug: crate::dump::GDebug,
}

#[repr(C)]
struct Task<G, F> {
    g: G,
    record: Record,
    body: UnsafeCell<Option<F>>,
}

/// Returns whether a block of `size` bytes aligned to `align` goes at the top of a stack of
/// `stack_size` usable bytes. It does when it takes at most an eighth of the stack, so at
/// least 14 KiB of the smallest stack (`goro_stack::MIN_STACK_SIZE`) stay for the g's frames.
fn fits_on_stack(size: usize, align: usize, stack_size: usize) -> bool {
    size <= stack_size / 8 && align <= 4096
}

impl Record {
    /// Allocates the block of a new goroutine on `stack`, or on the heap when it does not fit
    /// there, with its join cell. Sets the g's goid and stack bounds, which exclude the block.
    /// Returns the record, with the goroutine's reference, and the join cell, with the
    /// goroutine's and the join handle's references. The join cell comes from the block cache
    /// of `m` when it fits a block.
    ///
    /// # Safety
    ///
    /// `m`, if any, is the M that runs the calling thread, outside its `with_blocks`.
    pub(crate) unsafe fn allocate<G, F, T>(
        g: G,
        body: F,
        shared: &Shared,
        stack: Stack,
        goid: u64,
        m: Option<&M>,
    ) -> (NonNull<Record>, NonNull<JoinCell>)
    where
        G: CustomG,
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        struct VTableOf<G, F, T>(std::marker::PhantomData<(G, F, T)>);
        impl<G: CustomG, F: FnOnce() -> T + Send + 'static, T: Send + 'static> VTableOf<G, F, T> {
            const VTABLE: TaskVTable = TaskVTable {
                run: run::<G, F, T>,
                drop_block: drop_block::<G, F>,
            };
        }

        let layout = std::alloc::Layout::new::<Task<G, F>>();
        let on_stack = fits_on_stack(layout.size(), layout.align(), stack.size());
        let (lo, stack_top) = (stack.lo(), stack.hi());
        let task = Task {
            g,
            record: Record {
                vtable: &VTableOf::<G, F, T>::VTABLE,
                header: NonNull::dangling(),
                refs: AtomicUsize::new(1),
                on_stack,
                stack: UnsafeCell::new(Some(stack)),
                shared: NonNull::from(shared),
                permit: Permit::new(),
                internal_permit: Permit::new(),
                cancel_unwinding: std::sync::atomic::AtomicBool::new(false),
                pinned_m: std::sync::atomic::AtomicPtr::new(std::ptr::null_mut()),
                join: NonNull::dangling(),
                debug: crate::dump::GDebug::new(),
            },
            body: UnsafeCell::new(Some(body)),
        };
        let (task, frames_hi) = if on_stack {
            // Aligned to at least 16 bytes, the stack alignment of every supported ABI.
            let address = (stack_top - layout.size()) & !(layout.align().max(16) - 1);
            let slot = address as *mut Task<G, F>;
            // SAFETY: [address, address + size) lies in the top eighth of the stack, which is
            // mapped, writable and used by nobody before the g starts; `address` is aligned.
            unsafe { slot.write(task) };
            // SAFETY: just written; not null.
            (unsafe { NonNull::new_unchecked(slot) }, address)
        } else {
            (NonNull::from(Box::leak(Box::new(task))), stack_top)
        };
        // SAFETY: the block was just placed; nobody else sees it yet.
        let task_ref = unsafe { task.as_ref() };
        let header = task_ref.g.header();
        let record = NonNull::from(&task_ref.record);
        // SAFETY: the caller's contract.
        let join = unsafe { JoinCell::allocate::<T>(goid, record, m) };
        // SAFETY: as above; these fields are written once here, before the g is published.
        unsafe {
            (*task.as_ptr()).record.header = NonNull::from(header);
            (*task.as_ptr()).record.join = join;
        }
        // SAFETY: the g is Idle and no other thread can reach it yet. The header is the first
        // field of the `G` placed above, `record` lives in the same block, `goid` is the
        // caller's fresh id, and `lo..frames_hi` is the part of the g's stack below the block.
        unsafe {
            header.set_gtype(G::gtype());
            header.set_runtime(record.as_ptr().cast());
            header.set_goid(goid);
            header.set_stack(lo, frames_hi, lo);
        }
        (record, join)
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
    pub(crate) fn shared(&self) -> &Shared {
        // SAFETY: the runtime outlives every reference to the record (see the field), and the
        // caller holds one for as long as it borrows `self`.
        unsafe { self.shared.as_ref() }
    }

    /// The g this record belongs to.
    pub(crate) fn g(&self) -> GRef {
        // SAFETY: the header lives in the same block as the record.
        unsafe { GRef::from_raw(self.header) }
    }

    /// The g's join cell.
    ///
    /// # Safety
    ///
    /// The g must not have been finished yet: its reference keeps the cell alive until then.
    pub(crate) unsafe fn join_cell(&self) -> NonNull<JoinCell> {
        self.join
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

    /// Adds a reference.
    pub(crate) fn retain(&self) {
        // Relaxed: a new reference is made from an existing one, which keeps the block alive
        // (the same argument as `Arc::clone`).
        self.refs.fetch_add(1, Ordering::Relaxed);
    }

    /// Drops a reference; the last one drops the block and returns its stack to the pool.
    ///
    /// # Safety
    ///
    /// The caller must own one reference, and use neither it nor `record` afterwards. It must
    /// keep the record's runtime alive until the call returns, because the last reference
    /// returns the stack to that runtime's pool.
    pub(crate) unsafe fn release(record: NonNull<Record>) {
        // SAFETY: the caller's contract.
        if unsafe { Record::drop_reference(record) } {
            let m = crate::m::current_m();
            // SAFETY: that was the last reference, `m` is the calling thread's M (if any), and
            // the caller keeps the runtime alive.
            unsafe { Record::free(record, m) };
        }
    }

    /// Drops the reference of a g that exited, on the g0 of `m`, the M that ran it. The last
    /// reference puts the stack into `m`'s own cache.
    ///
    /// # Safety
    ///
    /// As for [`Record::release`]; the caller is `m`'s thread.
    pub(crate) unsafe fn release_at_exit(record: NonNull<Record>, m: &M) {
        // SAFETY: the caller's contract.
        if unsafe { Record::drop_reference(record) } {
            // SAFETY: that was the last reference, and the caller runs on `m`'s thread.
            unsafe { Record::free(record, Some(m)) };
        }
    }

    /// Drops one reference; returns `true` for the last one.
    ///
    /// # Safety
    ///
    /// As for [`Record::release`].
    unsafe fn drop_reference(record: NonNull<Record>) -> bool {
        // SAFETY: the caller owns a reference, so the record is alive.
        let this = unsafe { record.as_ref() };
        // A count of 1 is the caller's reference alone, and no other thread can add one. New
        // references come from existing ones, or from registry walks, which find only gs
        // that have not exited and so still count their own reference. So the common last
        // release, the g's exit, makes no read-modify-write. Acquire: pairs with the Release
        // decrements of the earlier owners, whose uses of the block happen before the free.
        if this.refs.load(Ordering::Acquire) == 1 {
            return true;
        }
        // Release: every use of the block by this owner happens before the free; the last
        // owner's Acquire fence below pairs with it (the argument of `Arc::drop`).
        if this.refs.fetch_sub(1, Ordering::Release) != 1 {
            return false;
        }
        std::sync::atomic::fence(Ordering::Acquire);
        true
    }

    /// Drops the block, then returns its stack to the pool: into the local cache of `m` when
    /// `m` is an M of the g's runtime, else into the pool's global cache.
    ///
    /// # Safety
    ///
    /// The last reference to `record` is gone, and the caller keeps the record's runtime
    /// alive until the call returns. `m` is the calling thread's M, and the call does not
    /// come from inside its `with_stack_cache`.
    unsafe fn free(record: NonNull<Record>, m: Option<&M>) {
        // SAFETY: no reference is left, so only this thread touches the block.
        let this = unsafe { record.as_ref() };
        // SAFETY: as above.
        let stack = unsafe { (*this.stack.get()).take() };
        let runtime = this.shared.as_ptr().cast_const();
        let on_runtime = m.is_some_and(|m| Arc::as_ptr(&m.shared) == runtime);
        // SAFETY: the stack was taken out above, as `drop_block` requires; `this` is used no
        // more. A block on the stack stays valid memory until the stack is put back below.
        unsafe { (this.vtable.drop_block)(record) };
        // The block's drop runs user code, which may switch goroutines (a Drop that spawns or
        // sends on a channel), and the goroutine may resume on another M of the runtime. So
        // the M is looked up again rather than `m` trusted.
        let m = if on_runtime {
            crate::m::current_m().filter(|m| Arc::as_ptr(&m.shared) == runtime)
        } else {
            None
        };
        match (stack, m) {
            // SAFETY: `m` runs this thread, and this call is not inside its
            // `with_stack_cache` (the caller's contract, and the drop above returned).
            (Some(stack), Some(m)) => unsafe { m.with_stack_cache(|cache| cache.put(stack)) },
            // SAFETY: the caller keeps the runtime alive until this call returns.
            (Some(stack), None) => unsafe { (*runtime).pool.put(stack) },
            (None, _) => {}
        }
    }
}

/// # Safety
///
/// `record` is the record of a live `Task<G, F>`.
unsafe fn task<'a, G, F>(record: NonNull<Record>) -> &'a Task<G, F> {
    // SAFETY: the record field sits at a fixed offset in the repr(C) task; walk back to the
    // block's start through the header, which is at offset 0.
    unsafe { &*(record.as_ref().header.as_ptr() as *const Task<G, F>) }
}

unsafe fn run<G: CustomG, F: FnOnce() -> T + Send + 'static, T: Send + 'static>(
    record: NonNull<Record>,
) {
    // SAFETY: the vtable is only reached through a record of this task type.
    let task = unsafe { task::<G, F>(record) };
    // SAFETY: only the goroutine itself touches the body, and it runs once.
    let body = unsafe { &mut *task.body.get() };
    let Some(f) = body.take() else {
        panic!(
            "Record::run: goroutine g{} started twice",
            task.g.header().goid()
        );
    };
    let result = catch_unwind(AssertUnwindSafe(f));
    // SAFETY: the g holds its reference to the join cell until `finish`, after this function
    // returns. The cell was allocated for this task's `T`, and only the g writes the output
    // before `finish` publishes the completion.
    unsafe { JoinCell::store_output::<T>(task.record.join, result) };
}

unsafe fn drop_block<G: CustomG, F>(record: NonNull<Record>) {
    // SAFETY: the vtable is only reached through a record of this task type, and the caller
    // holds the last reference.
    let (header, on_stack) = unsafe { (record.as_ref().header, record.as_ref().on_stack) };
    let task = header.as_ptr() as *mut Task<G, F>;
    if on_stack {
        // SAFETY: `allocate` wrote the block there and nothing uses it any more. Its memory
        // belongs to the stack, which the caller returns to the pool afterwards.
        unsafe { std::ptr::drop_in_place(task) };
    } else {
        // SAFETY: the block came from `Box::leak` in `allocate`.
        drop(unsafe { Box::from_raw(task) });
    }
}
