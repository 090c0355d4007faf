//! The link from a g to its scheduler: a data pointer plus a `#[repr(C)]` vtable.
//!
//! The runtime calls a g's scheduler only through this link, at every decision point. The
//! vtable is built from a Rust trait by `goro-sched`; a scheduler written in another language
//! can fill one in by hand.

use core::fmt;
use core::ptr;

use crate::header::GRef;

/// Index of a P (processor) within its runtime, `0..procs`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(transparent)]
pub struct PId(pub u32);

impl PId {
    /// The index as a `usize`, for indexing per-P arrays.
    #[inline]
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

impl fmt::Debug for PId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "p{}", self.0)
    }
}

/// Why a g is handed to [`SchedVTable::ready`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum ReadyCause {
    /// The g was just spawned.
    Spawn = 0,
    /// A parked g was woken.
    Wake = 1,
    /// The g yielded.
    Yield = 2,
    /// The g left a syscall without a P, or its scheduler asked to requeue it there.
    SyscallExit = 3,
}

/// What a scheduler decides when its g leaves a syscall on the fast path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum SyscallExit {
    /// Keep running the g on the P it got back.
    Continue = 0,
    /// Put the g back in the scheduler's queue and let the P pick again.
    Requeue = 1,
}

/// The scheduler's operations, called by the runtime at each decision point.
///
/// Every function takes the link's data pointer first. The contract of each entry (calling
/// thread and stack, what it may do) is the contract of the matching method of
/// `goro_sched::Scheduler`.
#[repr(C)]
pub struct SchedVTable {
    /// The [`ABI_VERSION`](crate::ABI_VERSION) the vtable was built for.
    pub abi_version: u32,
    /// Short name of the scheduler, for dumps and traces.
    pub name: unsafe fn(data: *const ()) -> &'static str,
    /// Called once when the runtime starts, with its number of Ps.
    pub start: unsafe fn(data: *const (), procs: usize),
    /// The g became runnable; queue it. `p` is the caller's P, if the caller holds one.
    pub ready: unsafe fn(data: *const (), g: GRef, cause: ReadyCause, p: Option<PId>),
    /// Returns the next g to run on P `p`, or `None` when the scheduler has no work for it.
    pub next: unsafe fn(data: *const (), p: PId) -> Option<GRef>,
    /// Returns whether any g is queued, for idle Ms rechecking before they sleep.
    pub has_work: unsafe fn(data: *const ()) -> bool,
    /// The running g yielded and is stopped, though its switch may not have saved it yet.
    /// Usually requeues it.
    pub on_yield: unsafe fn(data: *const (), g: GRef, p: PId),
    /// The running g parked; it has left its stack.
    pub on_park: unsafe fn(data: *const (), g: GRef, p: PId),
    /// The running g is entering a syscall on P `p`. A null pointer (`None`) means that the
    /// scheduler has no such hook, so the runtime skips the call.
    pub on_entersyscall: Option<unsafe fn(data: *const (), g: GRef, p: PId)>,
    /// The g left a syscall and got P `p` back, and the hook decides whether it keeps
    /// running. A null pointer (`None`) means that the g keeps running.
    pub on_exitsyscall: Option<unsafe fn(data: *const (), g: GRef, p: PId) -> SyscallExit>,
    /// P `p` is about to be handed to another M or to the idle list: publish any work kept
    /// privately for it (a runnext slot), so that nothing waits behind a blocked M.
    pub on_release_p: unsafe fn(data: *const (), p: PId),
    /// The g finished; it has left its stack.
    pub on_exit: unsafe fn(data: *const (), g: GRef, p: PId),
    /// The number of gs queued for P `p` alone, or `None` when the scheduler keeps no per-P
    /// queues. For diagnostics (schedtrace); never on a scheduling path.
    pub local_len: unsafe fn(data: *const (), p: PId) -> Option<usize>,
    /// `on_yield` followed by `next` for the same P, in one call: requeue the yielded g and
    /// return the next g for P `p`, which may be the yielded g itself.
    pub on_yield_next: unsafe fn(data: *const (), g: GRef, p: PId) -> Option<GRef>,
}

/// A g's scheduler: the data pointer and the vtable that operates on it.
///
/// The fields are private, so every link is either [`SchedLink::UNSET`] or was built by the
/// unsafe [`SchedLink::new`], whose contract makes [`vtable`](SchedLink::vtable) sound to
/// call from safe code. Calls that pass the data pointer to the scheduler stay `unsafe`,
/// because a copy of a link can outlive the scheduler it points to.
///
/// Safe code cannot forge a link:
///
/// ```compile_fail,E0451
/// let link = goro_abi::SchedLink { data: 8 as _, vtable: 16 as _ };
/// ```
#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub struct SchedLink {
    /// The scheduler's state; passed to every vtable function.
    data: *const (),
    /// The scheduler's operations; null when the g has no scheduler yet.
    vtable: *const SchedVTable,
}

// SAFETY: a link is a pair of pointers to a scheduler, which must be `Sync` to be shared by Ms
// (goro_sched::Scheduler requires `Send + Sync`); the link adds no thread-bound state.
unsafe impl Send for SchedLink {}
// SAFETY: as above.
unsafe impl Sync for SchedLink {}

impl SchedLink {
    /// The link of a g that has no scheduler yet: a null data pointer and a null vtable.
    pub const UNSET: SchedLink = SchedLink {
        data: ptr::null(),
        vtable: ptr::null(),
    };

    /// Links the scheduler state `data` to the vtable that operates on it.
    ///
    /// # Safety
    ///
    /// Every function in `vtable` must accept `data` as its first argument. The runtime that
    /// stores the link in a g's header (through [`GHeader::set_sched`]) must keep the
    /// scheduler behind `data` alive until the g's block is freed, because it calls the
    /// scheduler through the link at every decision point. A copy of the link kept
    /// elsewhere gives no such guarantee, so the methods that pass `data` to the scheduler
    /// are `unsafe`.
    ///
    /// [`GHeader::set_sched`]: crate::GHeader::set_sched
    #[inline]
    pub const unsafe fn new(data: *const (), vtable: &'static SchedVTable) -> SchedLink {
        SchedLink { data, vtable }
    }

    /// Rebuilds a link from the two words of a g header.
    ///
    /// # Safety
    ///
    /// `vtable` must be null, or the pair must satisfy the contract of [`SchedLink::new`].
    #[inline]
    pub(crate) const unsafe fn from_raw_parts(
        data: *const (),
        vtable: *const SchedVTable,
    ) -> SchedLink {
        SchedLink { data, vtable }
    }

    /// Splits the link into the two words that a g header stores.
    #[inline]
    pub(crate) fn into_raw_parts(self) -> (*const (), *const SchedVTable) {
        (self.data, self.vtable)
    }

    /// Returns the scheduler's state, as passed to every vtable function, or null when the
    /// link is unset.
    #[inline]
    pub fn data(&self) -> *const () {
        self.data
    }

    /// Returns whether the link points to a scheduler.
    #[inline]
    pub fn is_set(&self) -> bool {
        !self.vtable.is_null()
    }

    /// The vtable.
    ///
    /// # Panics
    ///
    /// Panics when the link is unset: a g without a scheduler reached a decision point.
    #[inline]
    pub fn vtable(&self) -> &'static SchedVTable {
        assert!(
            self.is_set(),
            "SchedLink::vtable: the g has no scheduler linked"
        );
        // SAFETY: a set link was built by `new` (or rebuilt from one by `from_raw_parts`),
        // which takes the vtable as a `&'static SchedVTable`.
        unsafe { &*self.vtable }
    }

    /// Returns the scheduler's name, through the vtable's `name`.
    ///
    /// # Safety
    ///
    /// As for the methods of the impl block below: the scheduler must be alive.
    ///
    /// # Panics
    ///
    /// Panics when the link is unset.
    #[inline]
    pub unsafe fn name(&self) -> &'static str {
        // SAFETY: the caller keeps the scheduler alive, and `new`'s contract makes the
        // vtable's functions accept this data pointer.
        unsafe { (self.vtable().name)(self.data) }
    }
}

/// Calls into the linked scheduler, one method per vtable entry.
///
/// # Safety
///
/// For every method: the scheduler behind the link must be alive, which the runtime
/// guarantees by holding an owner of it while any g links to it. `has_work` and `local_len`
/// ask nothing more. Every other method must be called only by the runtime that owns the
/// scheduler, on the terms of `Scheduler::start` in goro-sched: `start` once and first, and
/// each hook that takes a P on the thread that holds the P. A scheduler may keep per-P state
/// without locks on those terms, so a call from anywhere else can corrupt its queues.
impl SchedLink {
    /// Calls `start`.
    ///
    /// # Safety
    ///
    /// See the impl block: the scheduler must be alive, and the caller must be its runtime.
    #[inline]
    pub unsafe fn start(&self, procs: usize) {
        // SAFETY: the caller keeps the scheduler alive; the link pairs data and vtable.
        unsafe { (self.vtable().start)(self.data, procs) }
    }

    /// Calls `ready`.
    ///
    /// # Safety
    ///
    /// See the impl block: the scheduler must be alive, and the caller must be its runtime.
    #[inline]
    pub unsafe fn ready(&self, g: GRef, cause: ReadyCause, p: Option<PId>) {
        // SAFETY: as in `start`.
        unsafe { (self.vtable().ready)(self.data, g, cause, p) }
    }

    /// Calls `next`.
    ///
    /// # Safety
    ///
    /// See the impl block: the scheduler must be alive, and the caller must be its runtime.
    #[inline]
    pub unsafe fn next(&self, p: PId) -> Option<GRef> {
        // SAFETY: as in `start`.
        unsafe { (self.vtable().next)(self.data, p) }
    }

    /// Calls `has_work`.
    ///
    /// # Safety
    ///
    /// See the impl block: the scheduler must be alive.
    #[inline]
    pub unsafe fn has_work(&self) -> bool {
        // SAFETY: as in `start`.
        unsafe { (self.vtable().has_work)(self.data) }
    }

    /// Calls `on_yield`.
    ///
    /// # Safety
    ///
    /// See the impl block: the scheduler must be alive, and the caller must be its runtime.
    #[inline]
    pub unsafe fn on_yield(&self, g: GRef, p: PId) {
        // SAFETY: as in `start`.
        unsafe { (self.vtable().on_yield)(self.data, g, p) }
    }

    /// Calls `on_yield_next`.
    ///
    /// # Safety
    ///
    /// See the impl block: the scheduler must be alive, and the caller must be its runtime.
    #[inline]
    pub unsafe fn on_yield_next(&self, g: GRef, p: PId) -> Option<GRef> {
        // SAFETY: as in `start`.
        unsafe { (self.vtable().on_yield_next)(self.data, g, p) }
    }

    /// Calls `on_park`.
    ///
    /// # Safety
    ///
    /// See the impl block: the scheduler must be alive, and the caller must be its runtime.
    #[inline]
    pub unsafe fn on_park(&self, g: GRef, p: PId) {
        // SAFETY: as in `start`.
        unsafe { (self.vtable().on_park)(self.data, g, p) }
    }

    /// Calls `on_entersyscall`, if the scheduler has that hook.
    ///
    /// # Safety
    ///
    /// See the impl block: the scheduler must be alive, and the caller must be its runtime.
    #[inline]
    pub unsafe fn on_entersyscall(&self, g: GRef, p: PId) {
        if let Some(hook) = self.vtable().on_entersyscall {
            // SAFETY: as in `start`.
            unsafe { hook(self.data, g, p) }
        }
    }

    /// Calls `on_exitsyscall`, if the scheduler has that hook. Without one, the g keeps
    /// running.
    ///
    /// # Safety
    ///
    /// See the impl block: the scheduler must be alive, and the caller must be its runtime.
    #[inline]
    pub unsafe fn on_exitsyscall(&self, g: GRef, p: PId) -> SyscallExit {
        match self.vtable().on_exitsyscall {
            // SAFETY: as in `start`.
            Some(hook) => unsafe { hook(self.data, g, p) },
            None => SyscallExit::Continue,
        }
    }

    /// Calls `on_release_p`.
    ///
    /// # Safety
    ///
    /// See the impl block: the scheduler must be alive, and the caller must be its runtime.
    #[inline]
    pub unsafe fn on_release_p(&self, p: PId) {
        // SAFETY: as in `start`.
        unsafe { (self.vtable().on_release_p)(self.data, p) }
    }

    /// Calls `local_len`.
    ///
    /// # Safety
    ///
    /// See the impl block: the scheduler must be alive.
    #[inline]
    pub unsafe fn local_len(&self, p: PId) -> Option<usize> {
        // SAFETY: as in `start`.
        unsafe { (self.vtable().local_len)(self.data, p) }
    }

    /// Calls `on_exit`.
    ///
    /// # Safety
    ///
    /// See the impl block: the scheduler must be alive, and the caller must be its runtime.
    #[inline]
    pub unsafe fn on_exit(&self, g: GRef, p: PId) {
        // SAFETY: as in `start`.
        unsafe { (self.vtable().on_exit)(self.data, g, p) }
    }
}

impl fmt::Debug for SchedLink {
    /// Prints the two pointers. The scheduler's name is not printed, because the scheduler may
    /// be gone by the time a copy of the link is printed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_set() {
            write!(f, "SchedLink({:p}, {:p})", self.data, self.vtable)
        } else {
            f.write_str("SchedLink(unset)")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unset_link_has_no_scheduler() {
        assert!(!SchedLink::UNSET.is_set());
        assert!(SchedLink::UNSET.data().is_null());
    }

    #[test]
    #[should_panic(expected = "SchedLink::vtable: the g has no scheduler linked")]
    fn unset_link_vtable_panics() {
        let _ = SchedLink::UNSET.vtable();
    }
}
