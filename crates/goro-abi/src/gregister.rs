//! The g register: the running g of the current OS thread.

use core::ffi::c_void;

use crate::custom::CustomG;
use crate::header::GHeader;

unsafe extern "C" {
    // Defined in src/g_register.c. Both are plain loads and stores of a thread-local pointer,
    // declared with `c_void` because C sees the header as an opaque pointer here.
    fn goro_getg() -> *mut c_void;
    fn goro_setg(g: *mut c_void);
}

/// Returns the g running on this OS thread, or null on a thread that runs no g.
///
/// On a thread that runs goroutines this is the goroutine itself, or the M's g0 while the
/// scheduler loop runs. The value is recomputed from the thread pointer at every call, so it is
/// correct after the calling goroutine has been suspended and resumed on another OS thread, even
/// under LTO: the slot lives behind a non-inlined C function that Rust cannot see into.
#[inline]
pub fn getg() -> *mut GHeader {
    // SAFETY: goro_getg only reads this thread's slot; it has no preconditions.
    unsafe { goro_getg().cast() }
}

/// Sets the g register of this OS thread.
///
/// # Safety
///
/// `g` must be null or point to a live [`GHeader`] that is about to run, or is running, on this
/// thread; everything that reads [`getg`] (the runtime, schedulers, [`getg_as`]) trusts it.
#[inline]
pub unsafe fn setg(g: *mut GHeader) {
    // SAFETY: the slot is thread-local; the caller vouches for the pointer's validity.
    unsafe { goro_setg(g.cast()) }
}

/// Returns the running g as the custom type `G`, or `None` when no g runs on this thread or
/// the running g is of another type.
///
/// The returned reference is valid for as long as the calling goroutine runs: a g's block lives
/// at least until its body returns.
pub fn getg_as<G: CustomG>() -> Option<&'static G> {
    let g = getg();
    if g.is_null() {
        return None;
    }
    // SAFETY: a non-null g register points to the live header of the running g (setg's
    // contract), and the running g outlives every call made on its own stack.
    let header: &'static GHeader = unsafe { &*g };
    G::from_header(header)
}
