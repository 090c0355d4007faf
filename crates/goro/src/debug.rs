//! Introspection of the running goroutine's M, for tests and diagnostics.

use std::sync::atomic::Ordering;

use crate::m::current_m;

/// The OS thread id (`gettid`) of the M that runs the calling goroutine, as the runtime
/// recorded it when the M started; `None` on a thread that is no M. It comes from the running
/// g's header (`GHeader::m`), so it shows which M the runtime believes runs the goroutine.
pub fn m_thread_id() -> Option<i64> {
    current_m().map(|m| m.thread_id.load(Ordering::Relaxed))
}

/// The id of the M that runs the calling goroutine; `None` on a thread that is no M.
pub fn m_id() -> Option<u32> {
    current_m().map(|m| m.id.0)
}
