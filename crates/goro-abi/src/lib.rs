//! The goroutine ABI of goro: the frozen g header, the g status word, the scheduler link and
//! the g register.
//!
//! Every goroutine's control block (its "g") starts with a [`GHeader`]. The header's layout is
//! fixed: the context-switch code, the runtime on other threads, debuggers and users' own
//! schedulers all read it at the offsets exported by [`offsets`]. A user-defined `#[repr(C)]`
//! struct whose first field is a `GHeader` is a valid g; the [`custom_g!`] macro declares one and
//! checks the contract at compile time.
//!
//! ```
//! use goro_abi::{custom_g, CustomG, GHeader};
//!
//! custom_g! {
//!     /// A goroutine that carries a priority for its scheduler.
//!     pub struct PrioG {
//!         pub header: GHeader,
//!         pub priority: u8,
//!     }
//! }
//!
//! let g = PrioG { header: GHeader::new(), priority: 7 };
//! let header: &GHeader = g.header();
//! // The runtime stamps the type tag at spawn; until then the way back is refused.
//! assert!(PrioG::from_header(header).is_none());
//! // SAFETY: the header is the first field of a live `PrioG`, the type that `PrioG::gtype()`
//! // describes, and no other thread can see it.
//! unsafe { header.set_gtype(PrioG::gtype()) };
//! assert_eq!(PrioG::from_header(header).map(|g| g.priority), Some(7));
//! ```
//!
//! **Architecture Invariant:** this crate is `no_std`, never allocates and depends on no other
//! goro crate. The only foreign code is the g register (`src/g_register.c`), a C thread-local
//! slot behind out-of-line accessors.

#![no_std]
#![deny(unsafe_op_in_unsafe_fn)]

mod custom;
mod gregister;
mod header;
mod sched_link;
mod status;

pub use custom::{CustomG, GType};
pub use gregister::{getg, setg, with_g};
pub use header::{ABI_VERSION, G_HEADER_SIZE, GHeader, GRef, offsets};
pub use sched_link::{PId, ReadyCause, SchedLink, SchedVTable, SyscallExit};
pub use status::{GStatus, Transition, WaitReason};

#[doc(hidden)]
pub use memoffset as __memoffset;
