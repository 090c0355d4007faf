//! An owned, type-erased scheduler and its link.

use std::any::Any;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use goro_abi::{GRef, PId, ReadyCause, SchedLink};

use crate::scheduler::{Scheduler, vtable_of};

/// Owns a scheduler and the [`SchedLink`] that g headers store to reach it.
///
/// The runtime keeps one handle per scheduler for as long as any g links to it, which is what
/// makes calls through a g's raw link sound. Clones share the scheduler.
///
/// The hooks that hand gs in and out are unsafe to call through a handle: a handle reaches
/// a runtime's live queues (`Runtime::default_scheduler` lends one), and a g readied twice
/// would run on two threads at once.
///
/// ```compile_fail,E0133
/// let handle = goro_sched::SchedHandle::new(goro_sched::Fifo::new());
/// let _ = handle.next(goro_abi::PId(0));
/// ```
#[derive(Clone)]
pub struct SchedHandle {
    link: SchedLink,
    _owner: Arc<dyn Any + Send + Sync>,
    /// Set by the first runtime that uses the scheduler (see `claim_for_runtime`).
    claimed: Arc<AtomicBool>,
}

impl SchedHandle {
    /// Wraps a scheduler, which the handle and its clones then own alone. Nothing outside
    /// them can call its hooks, so a runtime that uses the handle is the only caller of
    /// `ready` and `next`.
    pub fn new<S: Scheduler>(scheduler: S) -> SchedHandle {
        // SAFETY: the scheduler was just moved into this Arc, so no other reference exists.
        unsafe { SchedHandle::from_arc(Arc::new(scheduler)) }
    }

    /// Wraps a scheduler that the caller keeps other references to, for example to read
    /// statistics that the scheduler collects.
    ///
    /// # Safety
    ///
    /// Through those other references, the caller must never call the scheduler's `start` or
    /// any other hook but `name`, `has_work` and `local_len`: the runtime that starts the
    /// scheduler becomes its only user (see [`Scheduler::start`]). A g passed to `ready`
    /// twice, or taken by `next` from outside the runtime, would run on two threads at once or
    /// never run at all.
    pub unsafe fn from_arc<S: Scheduler>(scheduler: Arc<S>) -> SchedHandle {
        let data = Arc::as_ptr(&scheduler) as *const ();
        // SAFETY: `vtable_of::<S>()` calls `S`'s methods on a `*const S`, which `data` is. The
        // handle owns the scheduler, and the runtime keeps a handle for as long as any g links
        // to it.
        let link = unsafe { SchedLink::new(data, vtable_of::<S>()) };
        SchedHandle {
            link,
            _owner: scheduler,
            claimed: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Marks the scheduler as serving a runtime. Returns `false` when a runtime already
    /// claimed it, through this handle or a clone.
    ///
    /// A scheduler serves one runtime for its whole life, because gs of a runtime that is
    /// gone may still reach it: a g that was blocked in a syscall calls `ready` when the call
    /// returns.
    pub fn claim_for_runtime(&self) -> bool {
        // Relaxed: the flag guards no other data; the swap alone makes one claim win.
        !self.claimed.swap(true, Ordering::Relaxed)
    }

    /// Undoes a successful [`claim_for_runtime`](SchedHandle::claim_for_runtime), for a
    /// runtime whose start failed after the claim, so that another runtime may use the
    /// scheduler.
    ///
    /// # Safety
    ///
    /// The caller made the claim, and no hook of the scheduler has been called since: no g has
    /// reached it, so no g of the failed runtime can call it later.
    pub unsafe fn release_claim(&self) {
        // Relaxed: as in `claim_for_runtime`.
        self.claimed.store(false, Ordering::Relaxed);
    }

    /// The link to store in the headers of this scheduler's gs.
    #[inline]
    pub fn link(&self) -> SchedLink {
        self.link
    }

    /// The scheduler's name.
    pub fn name(&self) -> &'static str {
        // SAFETY: the handle owns the scheduler behind the link, so it is alive.
        unsafe { self.link.name() }
    }

    /// Returns whether `link` points to this handle's scheduler.
    pub fn is(&self, link: SchedLink) -> bool {
        self.link == link
    }
}

// Every call below goes through the link, which the handle keeps valid because it owns the
// scheduler. The unsafe ones hand gs in and out of the scheduler, which only the runtime that
// uses the handle may do.
impl SchedHandle {
    /// Calls [`Scheduler::start`].
    ///
    /// # Safety
    ///
    /// Only the runtime that uses the handle may call it, once, before any other hook, and
    /// that runtime must then keep the terms of [`Scheduler::start`]: it calls every hook
    /// that takes a P on the thread that holds the P.
    #[inline]
    pub unsafe fn start(&self, procs: usize) {
        // SAFETY: the handle owns the scheduler behind the link, and the caller keeps the
        // terms of `Scheduler::start`.
        unsafe { self.link.start(procs) }
    }

    /// Calls [`Scheduler::ready`].
    ///
    /// # Safety
    ///
    /// `g` must be a stopped g of the runtime that uses this handle, linked to this
    /// scheduler and in no scheduler's queue. Only that runtime can know this. With
    /// `Some(p)`, the caller holds P `p` (see [`Scheduler::start`]).
    #[inline]
    pub unsafe fn ready(&self, g: GRef, cause: ReadyCause, p: Option<PId>) {
        // SAFETY: as in `start`.
        unsafe { self.link.ready(g, cause, p) }
    }

    /// Calls [`Scheduler::next`].
    ///
    /// # Safety
    ///
    /// The caller must be the runtime that uses this handle, on the M that holds P `p`, and
    /// must run the g it gets: a g taken by anyone else would never run.
    #[inline]
    pub unsafe fn next(&self, p: PId) -> Option<GRef> {
        // SAFETY: as in `start`.
        unsafe { self.link.next(p) }
    }

    /// Calls [`Scheduler::has_work`].
    #[inline]
    pub fn has_work(&self) -> bool {
        // SAFETY: as in `start`.
        unsafe { self.link.has_work() }
    }

    /// Calls [`Scheduler::on_release_p`].
    ///
    /// # Safety
    ///
    /// The caller must be the runtime that uses this handle, giving P `p` away.
    #[inline]
    pub unsafe fn on_release_p(&self, p: PId) {
        // SAFETY: as in `start`.
        unsafe { self.link.on_release_p(p) }
    }

    /// Calls [`Scheduler::local_len`].
    #[inline]
    pub fn local_len(&self, p: PId) -> Option<usize> {
        // SAFETY: as in `start`.
        unsafe { self.link.local_len(p) }
    }
}

impl fmt::Debug for SchedHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SchedHandle({})", self.name())
    }
}
