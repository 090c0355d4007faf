//! Waiting for a goroutine's result.

use std::alloc::Layout;
use std::any::Any;
use std::cell::UnsafeCell;
use std::fmt;
use std::marker::PhantomData;
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use goro_abi::WaitReason;

use goro_stack::BlockHome;

use crate::m::M;
use crate::runtime::SpawnError;
use crate::task::{Panic, Record};
use crate::waiter::{Waiter, wait_until};

/// The state a [`JoinHandle`] waits on: the completion of a g, the party waiting for it, and
/// the g's output. It is allocated apart from the g's block, which the g's exit frees, so a
/// handle held for long keeps only this cell. References are counted: one for the g until
/// `Shared::finish` completes the cell, one for the join handle.
#[repr(C)]
pub(crate) struct JoinCell {
    refs: AtomicUsize,
    goid: u64,
    state: Mutex<JoinState>,
    /// Frees the whole `JoinCellOf<T>`.
    dealloc: unsafe fn(NonNull<JoinCell>),
    /// The home of the cell's block, or `None` for a cell on the heap.
    home: Option<BlockHome>,
}

/// The cell with the output of a g whose body returns `T`.
#[repr(C)]
struct JoinCellOf<T> {
    cell: JoinCell,
    /// Written by the g before it exits, taken by `join` after the completion.
    output: UnsafeCell<Option<Result<T, Panic>>>,
}

// The cell of a goroutine that returns `()` fits a block, so spawns take no heap allocation
// for it (see `JoinCell::allocate`). A field that grows `JoinCell` fails the build here.
const _: () = assert!(goro_stack::blocks::fits(Layout::new::<JoinCellOf<()>>()));

/// Join state of a g, under the cell's lock.
struct JoinState {
    complete: bool,
    waiter: Option<Waiter>,
    /// The g's record until the g completes; a thread that joins reaches the g's runtime
    /// through it.
    record: Option<NonNull<Record>>,
}

impl JoinCell {
    /// Allocates the cell of the g `goid` with the record `record`, with two references: the
    /// g's and the join handle's. The cell takes a block from the block cache of `m` when
    /// given an M and the cell fits, and a heap allocation otherwise.
    ///
    /// # Safety
    ///
    /// `m`, if any, is the M that runs the calling thread, outside its `with_blocks`.
    pub(crate) unsafe fn allocate<T>(
        goid: u64,
        record: NonNull<Record>,
        m: Option<&M>,
    ) -> NonNull<JoinCell> {
        unsafe fn dealloc_boxed<T>(cell: NonNull<JoinCell>) {
            // SAFETY: `allocate::<T>` leaked this box; the caller holds the last reference.
            drop(unsafe { Box::from_raw(cell.as_ptr() as *mut JoinCellOf<T>) });
        }
        unsafe fn dealloc_block<T>(cell: NonNull<JoinCell>) {
            /// Gives the block back when dropped, also when the output's drop panics.
            struct FreeOnDrop(NonNull<u8>, BlockHome);
            impl Drop for FreeOnDrop {
                fn drop(&mut self) {
                    // SAFETY: the cell in the block was dropped (or its drop unwound), and
                    // nothing uses the block afterwards.
                    unsafe { free_block(self.0, self.1) };
                }
            }
            // SAFETY: `allocate::<T>` wrote a `JoinCellOf<T>` into a block whose home the
            // cell records; the caller holds the last reference.
            unsafe {
                let home = cell.as_ref().home.expect("a block cell records its home");
                let _free = FreeOnDrop(cell.cast(), home);
                ptr::drop_in_place(cell.as_ptr() as *mut JoinCellOf<T>);
            }
        }
        let in_block = m.filter(|_| goro_stack::blocks::fits(Layout::new::<JoinCellOf<T>>()));
        let cell = JoinCellOf::<T> {
            cell: JoinCell {
                refs: AtomicUsize::new(2),
                goid,
                state: Mutex::new(JoinState {
                    complete: false,
                    waiter: None,
                    record: Some(record),
                }),
                dealloc: if in_block.is_some() {
                    dealloc_block::<T>
                } else {
                    dealloc_boxed::<T>
                },
                home: in_block.map(M::blocks_home),
            },
            output: UnsafeCell::new(None),
        };
        match in_block {
            Some(m) => {
                // SAFETY: the caller's contract: `m` runs this thread, outside `with_blocks`.
                let block = unsafe { m.with_blocks(|blocks| blocks.allocate()) };
                let block = block.cast::<JoinCellOf<T>>();
                // SAFETY: the block is free, and `fits` checked its size and alignment.
                unsafe { block.write(cell) };
                block.cast()
            }
            None => NonNull::from(Box::leak(Box::new(cell))).cast(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, JoinState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stores the g's outcome.
    ///
    /// # Safety
    ///
    /// `cell` was allocated for this `T` and is alive; only its g calls this, once, before
    /// [`JoinCell::complete`].
    pub(crate) unsafe fn store_output<T>(cell: NonNull<JoinCell>, result: Result<T, Panic>) {
        let cell = cell.as_ptr() as *mut JoinCellOf<T>;
        // SAFETY: the caller's contract: nobody reads the output before the completion.
        unsafe { *(*cell).output.get() = Some(result) };
    }

    /// Marks the g complete and returns the waiter to wake. Called by `Shared::finish`, after
    /// the g stored its output; the lock publishes the output to the joiner.
    pub(crate) fn complete(&self) -> Option<Waiter> {
        let mut state = self.lock();
        state.complete = true;
        state.record = None;
        state.waiter.take()
    }

    /// Drops a reference and frees the cell with the last one.
    ///
    /// # Safety
    ///
    /// The caller must own one reference, and use neither it nor `cell` afterwards.
    pub(crate) unsafe fn release(cell: NonNull<JoinCell>) {
        // SAFETY: the caller owns a reference, so the cell is alive.
        let this = unsafe { cell.as_ref() };
        // The count starts at 2 (the g and its handle) and never grows. So a count of 1 means
        // that the other owner is gone, and the cell is freed with no read-modify-write.
        // Acquire: pairs with the other owner's Release decrement.
        if this.refs.load(Ordering::Acquire) == 1 {
            // SAFETY: the caller holds the last reference.
            unsafe { (this.dealloc)(cell) };
            return;
        }
        // Release: every use of the cell by this owner happens before the free. The last
        // owner's Acquire fence below pairs with it, as in `Arc::drop`.
        if this.refs.fetch_sub(1, Ordering::Release) != 1 {
            return;
        }
        std::sync::atomic::fence(Ordering::Acquire);
        // SAFETY: that was the last reference.
        unsafe { (this.dealloc)(cell) }
    }
}

/// Gives a join cell's block back: to the block cache of the calling thread's M when the
/// block came from it, to the block's home otherwise.
///
/// # Safety
///
/// `block` came from a block cache with the home `home`, and is used no more.
unsafe fn free_block(block: NonNull<u8>, home: BlockHome) {
    if let Some(m) = crate::m::current_m()
        && m.blocks_home() == home
    {
        // SAFETY: `m` runs this thread, and no `with_blocks` call is running: the cell's
        // output was dropped before this call, and allocations do not free.
        unsafe { m.with_blocks(|blocks| blocks.free(block)) };
        return;
    }
    // SAFETY: the caller's contract.
    unsafe { home.free(block) };
}

/// An owned permission to wait for a goroutine and take its result. Dropping it detaches the
/// goroutine, which keeps running.
pub struct JoinHandle<T> {
    cell: NonNull<JoinCell>,
    _output: PhantomData<T>,
}

// SAFETY: the handle only moves the output `T` (which is Send) out of the shared cell, after
// the completion that the cell's lock publishes. The cell is reference-counted with atomics.
unsafe impl<T: Send> Send for JoinHandle<T> {}
// SAFETY: `&JoinHandle` only reads the goid and the completion flag.
unsafe impl<T: Send> Sync for JoinHandle<T> {}

impl<T> JoinHandle<T> {
    /// Wraps the join handle's reference to a new g's join cell.
    pub(crate) fn new(cell: NonNull<JoinCell>) -> JoinHandle<T> {
        JoinHandle {
            cell,
            _output: PhantomData,
        }
    }

    fn cell(&self) -> &JoinCell {
        // SAFETY: the handle owns a reference to the cell.
        unsafe { self.cell.as_ref() }
    }

    /// The goroutine's id.
    pub fn goid(&self) -> u64 {
        self.cell().goid
    }

    /// Returns whether the goroutine has finished.
    pub fn is_finished(&self) -> bool {
        self.cell().lock().complete
    }

    /// Waits for the goroutine to finish and returns its value, or its panic as an error.
    ///
    /// Called from a goroutine, it parks the goroutine; from any other thread, it blocks the
    /// thread. A goroutine may also join a goroutine of another runtime, and its own runtime
    /// then reports no deadlock until the join returns.
    ///
    /// # Panics
    ///
    /// Panics when a goroutine joins itself, which would wait for ever.
    pub fn join(self) -> Result<T, JoinError> {
        let goid = self.goid();
        let cell = self.cell();
        let me = crate::m::current_record();
        // A thread, or a goroutine of another runtime, waits for the target runtime's
        // shutdown or deadlock report too, and reaches that runtime through the g's record,
        // kept alive by `target` until the wait ends. A goroutine of the same runtime needs
        // neither: its runtime unwinds it on shutdown, and reports a deadlock of both.
        let (pending, target, foreign_join) = {
            let mut state = cell.lock();
            if state.complete {
                (false, None, None)
            } else {
                if me.is_some() && state.record == me {
                    drop(state);
                    panic!(
                        "JoinHandle::join: goroutine {goid} joins itself, which would wait for \
                         ever; join it from another goroutine or thread"
                    );
                }
                state.waiter = Some(Waiter::current());
                let foreign_join = me.zip(state.record).and_then(|(me, record)| {
                    // SAFETY: the running goroutine's record is alive while it runs, and the
                    // target's record until its completion, which the cell's lock excludes.
                    let (mine, theirs) =
                        unsafe { (me.as_ref().shared(), record.as_ref().shared()) };
                    (!std::ptr::eq(mine, theirs)).then(|| ForeignJoin::begin(mine.arc()))
                });
                let target = if me.is_none() || foreign_join.is_some() {
                    state.record.map(crate::park::Goroutine::from_record)
                } else {
                    None
                };
                (true, target, foreign_join)
            }
        };
        let mut failure = None;
        if pending {
            let shared = target.as_ref().map(crate::park::Goroutine::shared);
            // Registered before the next check, so a deadlock report or a shutdown after it
            // wakes this waiter. The guard also removes a goroutine that unwinds.
            let _registration = shared.map(ExternalWaiter::register);
            wait_until(
                || {
                    // The runtime's state is read before the completion. A deadlock reported
                    // after the goroutine completed (the goroutines left are stuck) was set
                    // after the completion, which the check below then reads.
                    let stopped = shared.and_then(|shared| {
                        if shared.is_shutdown() {
                            Some(JoinError::Shutdown { goid })
                        } else if shared.is_deadlocked() {
                            Some(JoinError::Deadlock { goid })
                        } else {
                            None
                        }
                    });
                    if cell.lock().complete {
                        return true;
                    }
                    failure = stopped;
                    failure.is_some()
                },
                WaitReason::Join,
                None,
            );
        }
        drop(foreign_join);
        drop(target);
        if let Some(error) = failure {
            return Err(error);
        }
        let cell = self.cell.as_ptr() as *mut JoinCellOf<T>;
        // SAFETY: the g is complete, so it no longer touches the output, whose type is this
        // handle's `T`. The handle is consumed, so the output is taken once.
        let output = unsafe { (*(*cell).output.get()).take() };
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

/// The caller's registration as an external waiter of a runtime, removed on drop.
struct ExternalWaiter<'a>(&'a crate::runtime::Shared);

impl ExternalWaiter<'_> {
    fn register(shared: &crate::runtime::Shared) -> ExternalWaiter<'_> {
        shared.add_external_waiter();
        ExternalWaiter(shared)
    }
}

impl Drop for ExternalWaiter<'_> {
    fn drop(&mut self) {
        self.0.remove_external_waiter();
    }
}

/// A join of a goroutine of another runtime, counted by the joining goroutine's runtime while
/// the guard lives. The guard also ends the count when the joiner unwinds.
struct ForeignJoin(Arc<crate::runtime::Shared>);

impl ForeignJoin {
    fn begin(shared: Arc<crate::runtime::Shared>) -> ForeignJoin {
        shared.begin_foreign_join();
        ForeignJoin(shared)
    }
}

impl Drop for ForeignJoin {
    fn drop(&mut self) {
        self.0.end_foreign_join();
    }
}

impl<T> Drop for JoinHandle<T> {
    fn drop(&mut self) {
        // SAFETY: the handle owns one reference and gives it up here.
        unsafe { JoinCell::release(self.cell) }
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
