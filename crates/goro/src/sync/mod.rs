//! Goroutine-aware synchronization: channels, `select`, [`Mutex`], [`RwLock`] and
//! [`WaitGroup`].
//!
//! Every blocking operation here parks the calling goroutine, so its M runs other goroutines
//! meanwhile, and blocks the thread when called from a thread that runs no goroutine. Both
//! can wait on the same primitive. A goroutine waits on its runtime-internal permit, so these
//! waits never consume a wakeup meant for [`crate::park`].
//!
//! * [`channel`] and [`unbounded`] make multi-producer multi-consumer channels with Go's
//!   semantics: a send to a waiting receiver hands the value over directly, capacity 0 is a
//!   rendezvous, and a closed channel lets receivers drain what is buffered. The channel
//!   closes on [`Sender::close`] (or [`Receiver::close`]), when the last sender is dropped,
//!   and when the last receiver is dropped.
//! * [`Select`] waits for the first of several sends and receives, with an optional default.
//! * [`Mutex`] has Go's starvation mode; [`RwLock`] prefers writers; [`WaitGroup`] waits for a
//!   counter to reach zero.
//!
//! Blocked operations keep their wait-queue entries in their own frames, so neither a blocked
//! nor an immediate operation allocates (an unbounded channel's buffer grows, and a close
//! collects the waiters it wakes).
//!
//! ```
//! use goro::sync::channel;
//!
//! let rt = goro::Runtime::builder().procs(2).build().unwrap();
//! let sum = rt
//!     .block_on(|| {
//!         let (tx, rx) = channel::<u64>(0);
//!         let producer = goro::spawn(move || {
//!             for i in 1..=10 {
//!                 tx.send(i).unwrap();
//!             }
//!             // Dropping the last sender closes the channel and ends the loop below.
//!         })
//!         .unwrap();
//!         let sum: u64 = rx.iter().sum();
//!         producer.join().unwrap();
//!         sum
//!     })
//!     .unwrap();
//! assert_eq!(sum, 55);
//! ```

mod chan;
mod mutex;
mod rwlock;
pub mod select;
mod sema;
mod waitgroup;
mod waitlist;

pub use chan::{
    IntoIter, Iter, Receiver, RecvError, RecvTimeoutError, SendError, Sender, TryRecvError,
    TrySendError, channel, unbounded,
};
pub use mutex::{Mutex, MutexGuard, STARVATION_THRESHOLD};
pub use rwlock::{RwLock, RwLockReadGuard, RwLockWriteGuard};
pub use select::Select;
pub use waitgroup::WaitGroup;
