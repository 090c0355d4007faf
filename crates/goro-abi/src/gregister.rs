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
/// thread; everything that reads [`getg`] (the runtime, schedulers, [`with_g`]) trusts it.
#[inline]
pub unsafe fn setg(g: *mut GHeader) {
    // SAFETY: the slot is thread-local; the caller vouches for the pointer's validity.
    unsafe { goro_setg(g.cast()) }
}

/// Calls `f` with the running g as the custom type `G` and returns its result. Returns `None`
/// without calling `f` when no g runs on this thread or the running g is of another type.
///
/// The reference lives only for the call: a g's block is freed after its body returns, so a
/// reference kept past that would dangle. Copy out the fields you need instead.
///
/// ```compile_fail
/// goro_abi::custom_g! {
///     pub struct MyG {
///         pub header: goro_abi::GHeader,
///         pub level: u8,
///     }
/// }
/// // A copy of a field may leave the closure; the reference may not.
/// let level: Option<u8> = goro_abi::with_g::<MyG, _>(|g| g.level);
/// let escaped: Option<&MyG> = goro_abi::with_g::<MyG, _>(|g| g);
/// ```
pub fn with_g<G: CustomG, R>(f: impl FnOnce(&G) -> R) -> Option<R> {
    let g = getg();
    if g.is_null() {
        return None;
    }
    // SAFETY: a non-null g register points to the live header of the running g (setg's
    // contract). The running g is this call's caller, so its block outlives the call, and
    // `f` cannot keep the reference past it because `f` accepts every lifetime.
    let header: &GHeader = unsafe { &*g };
    G::from_header(header).map(f)
}
