//! An owned, type-erased scheduler and its link.

use std::any::Any;
use std::fmt;
use std::sync::Arc;

use goro_abi::{GRef, PId, ReadyCause, SchedLink};

use crate::scheduler::{Scheduler, vtable_of};

/// Owns a scheduler and the [`SchedLink`] that g headers store to reach it.
///
/// The runtime keeps one handle per scheduler for as long as any g links to it, which is what
/// makes calls through a g's raw link sound. Clones share the scheduler.
#[derive(Clone)]
pub struct SchedHandle {
    link: SchedLink,
    _owner: Arc<dyn Any + Send + Sync>,
}

impl SchedHandle {
    /// Wraps a scheduler.
    pub fn new<S: Scheduler>(scheduler: Arc<S>) -> SchedHandle {
        let link = SchedLink {
            data: Arc::as_ptr(&scheduler) as *const (),
            vtable: vtable_of::<S>(),
        };
        SchedHandle {
            link,
            _owner: scheduler,
        }
    }

    /// The link to store in the headers of this scheduler's gs.
    #[inline]
    pub fn link(&self) -> SchedLink {
        self.link
    }

    /// The scheduler's name.
    pub fn name(&self) -> &'static str {
        self.link.name()
    }

    /// Returns whether `link` points to this handle's scheduler.
    pub fn is(&self, link: SchedLink) -> bool {
        self.link == link
    }
}

/// The handle's scheduler, reached through its link. Every call is sound because the handle
/// keeps the scheduler alive.
macro_rules! forward {
    ($($(#[$doc:meta])* fn $name:ident($($arg:ident: $ty:ty),*) $(-> $ret:ty)?;)*) => {
        impl SchedHandle {
            $(
                $(#[$doc])*
                #[inline]
                pub fn $name(&self, $($arg: $ty),*) $(-> $ret)? {
                    // SAFETY: the handle owns the scheduler behind the link.
                    unsafe { self.link.$name($($arg),*) }
                }
            )*
        }
    };
}

forward! {
    /// Calls [`Scheduler::start`].
    fn start(procs: usize);
    /// Calls [`Scheduler::ready`].
    fn ready(g: GRef, cause: ReadyCause, p: Option<PId>);
    /// Calls [`Scheduler::next`].
    fn next(p: PId) -> Option<GRef>;
    /// Calls [`Scheduler::has_work`].
    fn has_work() -> bool;
    /// Calls [`Scheduler::on_release_p`].
    fn on_release_p(p: PId);
    /// Calls [`Scheduler::local_len`].
    fn local_len(p: PId) -> Option<usize>;
}

impl fmt::Debug for SchedHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SchedHandle({})", self.name())
    }
}
