//! The scheduler contract of goro and its reference schedulers.
//!
//! Every goroutine (g) links to one scheduler, and the runtime asks that scheduler at every
//! decision point: a g becomes ready, an M needs the next g for its P, the running g yields,
//! parks, enters or leaves a syscall, or exits. A process may run goroutines of several
//! schedulers side by side on one runtime; each P asks every scheduler of its runtime in turn.
//!
//! This crate holds the [`Scheduler`] trait, the glue that turns an implementation into the
//! `#[repr(C)]` vtable stored in each g's header ([`SchedHandle`]), and the reference
//! schedulers: [`Fifo`], one global queue in ready order, and [`WorkStealing`], per-P run
//! queues with stealing between Ps, after Go's scheduler. The work-stealing scheduler's
//! queues are public for other runtimes: [`RunQueue`], a bounded ring with one producer and
//! many stealers, and [`Injector`], the global queue.
//!
//! # Writing a scheduler
//!
//! ```
//! use std::collections::VecDeque;
//! use std::sync::Mutex;
//! use goro_abi::{GRef, PId, ReadyCause};
//! use goro_sched::Scheduler;
//!
//! /// Runs the most recently readied g first.
//! #[derive(Default)]
//! struct Lifo(Mutex<Vec<GRef>>);
//!
//! // SAFETY: `next` returns each g at most once per `ready`, because it pops what `ready`
//! // pushed.
//! unsafe impl Scheduler for Lifo {
//!     fn name(&self) -> &'static str { "lifo" }
//!     fn ready(&self, g: GRef, _cause: ReadyCause, _p: Option<PId>) {
//!         self.0.lock().unwrap().push(g);
//!     }
//!     fn next(&self, _p: PId) -> Option<GRef> { self.0.lock().unwrap().pop() }
//!     fn has_work(&self) -> bool { !self.0.lock().unwrap().is_empty() }
//! }
//! let handle = goro_sched::SchedHandle::new(Lifo::default());
//! assert_eq!(handle.name(), "lifo");
//! ```
//!
//! **Architecture Invariant:** this crate knows the g header and nothing of a concrete runtime:
//! no Ms, no stacks, no threads.

#![deny(unsafe_op_in_unsafe_fn)]

mod fifo;
mod gqueue;
mod handle;
mod scheduler;
mod spin;
mod steal;
mod sync;

pub use fifo::Fifo;
pub use gqueue::GQueue;
pub use handle::SchedHandle;
pub use scheduler::{Scheduler, vtable_of};
pub use steal::{Injector, RunQueue, WorkStealing};

pub use goro_abi::{GRef, PId, ReadyCause, SchedLink, SchedVTable, SyscallExit};
