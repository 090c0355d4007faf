//! `select` over the send and receive operations of several channels.
//!
//! [`Select`] collects cases with [`Select::recv`] and [`Select::send`], each with a handler
//! that gets the operation's outcome, then runs exactly one of them with [`Select::wait`]
//! (blocking) or [`Select::default`] (not blocking). The cases live in a type-level list on
//! the caller's stack, so a select allocates nothing.
//!
//! The algorithm, as Go's `selectgo` but with one channel lock held at a time:
//!
//! 1. Poll every case, in an order rotated by a random start. The first case that can
//!    proceed (a partner waits, the buffer serves it, or the channel is closed) fires.
//! 2. Otherwise return the default, or enqueue one node per case, all sharing one
//!    selector. If a case became ready meanwhile, withdraw (abort the selector, unlink
//!    every node) and start over at 1.
//! 3. Wait until a partner or a close claims the selector (a CAS, so exactly one case fires)
//!    and completes that case's node, then unlink the nodes of the other cases.
//!
//! Nodes of the same select never pair with each other: a select that sends and receives on
//! one channel waits for another party.

use std::cell::{Cell, UnsafeCell};
use std::marker::PhantomData;
use std::time::{Duration, Instant};

use goro_abi::WaitReason;

use super::chan::{
    Node, Receiver, RecvError, Selector, SendError, Sender, Side, TryRecvError, TrySendError,
};
use crate::waiter::{Waiter, wait_until};

/// A select under construction: the cases so far, in the list `L`, whose handlers all
/// return `R`.
///
/// ```
/// use goro::sync::{Select, channel};
///
/// let rt = goro::Runtime::builder().procs(2).build().unwrap();
/// let got = rt
///     .block_on(|| {
///         let (numbers_tx, numbers) = channel::<u32>(1);
///         let (_words_tx, words) = channel::<String>(1);
///         numbers_tx.send(7).unwrap();
///         Select::new()
///             .recv(&numbers, |n| format!("number {}", n.unwrap()))
///             .recv(&words, |w| format!("word {}", w.unwrap()))
///             .wait()
///     })
///     .unwrap();
/// assert_eq!(got, "number 7");
/// ```
#[must_use = "a select does nothing until `wait` or `default` runs it"]
pub struct Select<R, L = Nil> {
    cases: L,
    _result: PhantomData<fn() -> R>,
}

impl<R> Select<R, Nil> {
    /// A select without cases.
    #[allow(
        clippy::new_without_default,
        reason = "`Select::default` is the terminal method that runs Go's default case"
    )]
    pub fn new() -> Select<R, Nil> {
        Select {
            cases: Nil,
            _result: PhantomData,
        }
    }
}

impl<R, L: CaseList<R>> Select<R, L> {
    /// Adds a case that receives from `receiver`. When it fires, `handler` gets the value, or
    /// [`RecvError`] when the channel is closed and drained.
    pub fn recv<'a, T, F>(
        self,
        receiver: &'a Receiver<T>,
        handler: F,
    ) -> Select<R, Cons<L, RecvCase<'a, T, F>>>
    where
        F: FnOnce(Result<T, RecvError>) -> R,
    {
        let case = RecvCase {
            receiver,
            node: Node::new(None),
            outcome: UnsafeCell::new(None),
            handler,
        };
        self.push(case)
    }

    /// Adds a case that sends `value` on `sender`. When it fires, `handler` gets `Ok(())`, or
    /// the value back in a [`SendError`] when the channel is closed. When another case fires,
    /// `value` is dropped with the select.
    pub fn send<'a, T, F>(
        self,
        sender: &'a Sender<T>,
        value: T,
        handler: F,
    ) -> Select<R, Cons<L, SendCase<'a, T, F>>>
    where
        F: FnOnce(Result<(), SendError<T>>) -> R,
    {
        let case = SendCase {
            sender,
            node: Node::new(Some(value)),
            outcome: UnsafeCell::new(None),
            handler,
        };
        self.push(case)
    }

    fn push<C>(self, case: C) -> Select<R, Cons<L, C>> {
        Select {
            cases: Cons(self.cases, case),
            _result: PhantomData,
        }
    }

    /// Blocks until one case can proceed, performs it, and returns its handler's result.
    /// When several can proceed, the first found by polling from a random case fires, so no
    /// ready case starves (the choice is not uniform, unlike Go's). Called from a goroutine,
    /// it parks the goroutine; from any other thread, it blocks the thread.
    ///
    /// # Panics
    ///
    /// Panics when there are no cases, since the select would block forever.
    pub fn wait(self) -> R {
        assert!(
            L::LEN > 0,
            "Select::wait: no cases, so the select would block forever; add a recv or send case"
        );
        let fired = run(&self.cases, true, None).expect("Select::wait: returned without a case");
        self.cases.finish(fired)
    }

    /// As [`wait`](Select::wait), but gives up after `timeout` and returns `handler()` (Go's
    /// `case <-time.After(timeout)`). A case that fires while the timeout expires wins: the
    /// timeout takes effect only if it claims the select before any channel does.
    ///
    /// A goroutine sleeps on the runtime's timers; a plain thread rechecks the clock at least
    /// every millisecond. A timeout too large for an `Instant` (such as `Duration::MAX`)
    /// never expires, so the select then waits like [`wait`](Select::wait), which is also what
    /// `std::sync::mpsc::Receiver::recv_timeout` does. Without cases, it sleeps for `timeout`
    /// and returns `handler()`.
    pub fn wait_timeout(self, timeout: Duration, handler: impl FnOnce() -> R) -> R {
        // `run` returns at once without cases, but the timeout must still pass first.
        if L::LEN == 0 {
            crate::sleep(timeout);
            return handler();
        }
        let deadline = Instant::now().checked_add(timeout);
        match run(&self.cases, true, deadline) {
            Some(fired) => self.cases.finish(fired),
            None => handler(),
        }
    }

    /// Performs one case that can proceed without blocking and returns its handler's result,
    /// or returns `handler()` when none can (Go's `default` case).
    pub fn default(self, handler: impl FnOnce() -> R) -> R {
        match run(&self.cases, false, None) {
            Some(fired) => self.cases.finish(fired),
            None => handler(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The cases.
// ---------------------------------------------------------------------------------------------

/// One case of a select, as the select algorithm drives it.
pub(crate) trait Case {
    /// Performs the operation if it can proceed now, keeping its outcome. Returns whether it
    /// did.
    fn try_fire(&self) -> bool;

    /// Enqueues the case's node, bound to `selector` as case `index`, unless the operation
    /// can proceed now. Returns `false` when it can (nothing is enqueued then).
    ///
    /// # Safety
    ///
    /// The case must stay in place, and `selector` alive, until the node is unlinked by
    /// [`Case::unregister`] or the selector fires this case.
    unsafe fn register(&self, selector: &Selector, index: usize) -> bool;

    /// Unlinks the case's node if it is still enqueued.
    fn unregister(&self);

    /// Takes the outcome out of the node after the selector fired this case.
    ///
    /// # Safety
    ///
    /// The selector must have fired this case.
    unsafe fn take_fired(&self);
}

/// A receive case of a [`Select`], made by [`Select::recv`].
pub struct RecvCase<'a, T, F> {
    receiver: &'a Receiver<T>,
    node: Node<T>,
    outcome: UnsafeCell<Option<Result<T, RecvError>>>,
    handler: F,
}

impl<T, F> RecvCase<'_, T, F> {
    fn set_outcome(&self, outcome: Result<T, RecvError>) {
        // SAFETY: only the select's owner touches `outcome`, and never through two borrows.
        unsafe { *self.outcome.get() = Some(outcome) };
    }
}

impl<T, F> Case for RecvCase<'_, T, F> {
    fn try_fire(&self) -> bool {
        match self.receiver.chan().try_recv() {
            Ok(value) => self.set_outcome(Ok(value)),
            Err(TryRecvError::Closed) => self.set_outcome(Err(RecvError)),
            Err(TryRecvError::Empty) => return false,
        }
        true
    }

    unsafe fn register(&self, selector: &Selector, index: usize) -> bool {
        self.node.bind(selector, index);
        // SAFETY: the caller keeps the case (and so the node) in place until it is unlinked
        // or fires.
        unsafe { self.receiver.chan().register(&self.node, Side::Recv) }
    }

    fn unregister(&self) {
        self.receiver.chan().unregister(&self.node, Side::Recv);
    }

    unsafe fn take_fired(&self) {
        // SAFETY: the selector fired this case: the node is unlinked and its claimer done.
        let value = unsafe { self.node.take_slot() };
        // A closed channel leaves the slot empty.
        self.set_outcome(value.ok_or(RecvError));
    }
}

/// A send case of a [`Select`], made by [`Select::send`].
pub struct SendCase<'a, T, F> {
    sender: &'a Sender<T>,
    /// Holds the value until a receiver takes it.
    node: Node<T>,
    outcome: UnsafeCell<Option<Result<(), SendError<T>>>>,
    handler: F,
}

impl<T, F> SendCase<'_, T, F> {
    fn set_outcome(&self, outcome: Result<(), SendError<T>>) {
        // SAFETY: only the select's owner touches `outcome`, and never through two borrows.
        unsafe { *self.outcome.get() = Some(outcome) };
    }
}

impl<T, F> Case for SendCase<'_, T, F> {
    fn try_fire(&self) -> bool {
        // SAFETY: `try_fire` runs only while the node is unlinked with no claim pending.
        let value = unsafe { self.node.take_slot() }.expect("SendCase::try_fire: no value to send");
        match self.sender.chan().try_send(value) {
            Ok(()) => self.set_outcome(Ok(())),
            Err(TrySendError::Closed(value)) => self.set_outcome(Err(SendError(value))),
            Err(TrySendError::Full(value)) => {
                // SAFETY: as above.
                unsafe { self.node.put_slot(value) };
                return false;
            }
        }
        true
    }

    unsafe fn register(&self, selector: &Selector, index: usize) -> bool {
        self.node.bind(selector, index);
        // SAFETY: the caller keeps the case (and so the node) in place until it is unlinked
        // or fires.
        unsafe { self.sender.chan().register(&self.node, Side::Send) }
    }

    fn unregister(&self) {
        self.sender.chan().unregister(&self.node, Side::Send);
    }

    unsafe fn take_fired(&self) {
        // SAFETY: the selector fired this case: the node is unlinked and its claimer done.
        match unsafe { self.node.take_slot() } {
            None => self.set_outcome(Ok(())),
            // Still ours: the channel closed.
            Some(value) => self.set_outcome(Err(SendError(value))),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The type-level case list.
// ---------------------------------------------------------------------------------------------

/// The empty case list.
#[derive(Debug, Default)]
pub struct Nil;

/// A case list: the earlier cases `L`, then the case `C`.
#[derive(Debug)]
pub struct Cons<L, C>(L, C);

/// A borrowed case of a case list, opaque outside goro.
#[doc(hidden)]
pub struct CaseRef<'a>(&'a dyn Case);

mod sealed {
    pub trait Sealed {}
    impl Sealed for super::Nil {}
    impl<L: Sealed, C> Sealed for super::Cons<L, C> {}
}

/// The case lists that [`Select`] builds, whose handlers return `R`. Implemented only by
/// [`Nil`] and [`Cons`].
pub trait CaseList<R>: sealed::Sealed {
    /// The number of cases.
    #[doc(hidden)]
    const LEN: usize;

    /// The case at `index`, counted from the first one added.
    #[doc(hidden)]
    fn case(&self, index: usize) -> CaseRef<'_>;

    /// Runs the handler of the case at `index`, which fired, with its outcome.
    #[doc(hidden)]
    fn finish(self, index: usize) -> R;
}

impl<R> CaseList<R> for Nil {
    const LEN: usize = 0;

    fn case(&self, index: usize) -> CaseRef<'_> {
        panic!("Select: case {index} does not exist")
    }

    fn finish(self, index: usize) -> R {
        panic!("Select: case {index} does not exist")
    }
}

impl<'a, R, L, T, F> CaseList<R> for Cons<L, RecvCase<'a, T, F>>
where
    L: CaseList<R>,
    F: FnOnce(Result<T, RecvError>) -> R,
{
    const LEN: usize = L::LEN + 1;

    fn case(&self, index: usize) -> CaseRef<'_> {
        if index == L::LEN {
            CaseRef(&self.1)
        } else {
            self.0.case(index)
        }
    }

    fn finish(self, index: usize) -> R {
        if index != L::LEN {
            return self.0.finish(index);
        }
        let RecvCase {
            outcome, handler, ..
        } = self.1;
        let outcome = outcome
            .into_inner()
            .expect("Select: the fired receive has no outcome");
        handler(outcome)
    }
}

impl<'a, R, L, T, F> CaseList<R> for Cons<L, SendCase<'a, T, F>>
where
    L: CaseList<R>,
    F: FnOnce(Result<(), SendError<T>>) -> R,
{
    const LEN: usize = L::LEN + 1;

    fn case(&self, index: usize) -> CaseRef<'_> {
        if index == L::LEN {
            CaseRef(&self.1)
        } else {
            self.0.case(index)
        }
    }

    fn finish(self, index: usize) -> R {
        if index != L::LEN {
            return self.0.finish(index);
        }
        let SendCase {
            outcome, handler, ..
        } = self.1;
        let outcome = outcome
            .into_inner()
            .expect("Select: the fired send has no outcome");
        handler(outcome)
    }
}

// ---------------------------------------------------------------------------------------------
// The algorithm.
// ---------------------------------------------------------------------------------------------

/// Runs the select over `cases`: returns the index of the case that fired, with its outcome
/// stored in the case, or `None` when `blocking` is false and no case could proceed.
fn run<R, L: CaseList<R>>(cases: &L, blocking: bool, deadline: Option<Instant>) -> Option<usize> {
    let len = L::LEN;
    if len == 0 {
        return None;
    }
    // Polling from a random start keeps one always-ready case from starving the others.
    let start = random_below(len);
    let order = move || (0..len).map(move |k| (start + k) % len);

    let mut selector = None;
    loop {
        for index in order() {
            if cases.case(index).0.try_fire() {
                return Some(index);
            }
        }
        if !blocking {
            return None;
        }
        let selector = selector.get_or_insert_with(|| Selector::new(Waiter::current()));
        let mut enqueued = Enqueued {
            cases,
            order: order(),
            count: 0,
            _result: PhantomData,
        };
        let mut ready = false;
        for index in order() {
            // SAFETY: the cases stay in place in the caller's list, and `selector` in this
            // frame, until `enqueued` unlinks the nodes on drop or the selector fires.
            if unsafe { cases.case(index).0.register(selector, index) } {
                enqueued.count += 1;
            } else {
                ready = true;
                break;
            }
        }
        if ready && selector.try_abort() {
            // No node can fire now: unlink them all and poll again.
            drop(enqueued);
            selector.reset();
            continue;
        }
        let mut timed_out = false;
        if let Some(deadline) = deadline {
            crate::timer::wake_at(deadline);
        }
        wait_until(
            || {
                if selector.fired().is_some() {
                    return true;
                }
                // The timeout claims the selector like a channel partner would; if a partner
                // claimed it first, its case fires and wakes this waiter.
                if deadline.is_some_and(|d| Instant::now() >= d) && selector.try_abort() {
                    timed_out = true;
                    return true;
                }
                false
            },
            WaitReason::Select,
            deadline.map(|_| Duration::from_millis(1)),
        );
        // Unlinks the other cases' nodes; the fired one was unlinked by its claimer.
        drop(enqueued);
        if timed_out {
            return None;
        }
        let fired = selector.fired().expect("Select: woken before a case fired");
        // SAFETY: the selector fired this case.
        unsafe { cases.case(fired).0.take_fired() };
        return Some(fired);
    }
}

/// The cases whose nodes are enqueued: the first `count` in `order`. Unlinks them on drop,
/// also when the wait unwinds, so that no node outlives its link.
struct Enqueued<'a, R, L: CaseList<R>, I: Iterator<Item = usize> + Clone> {
    cases: &'a L,
    order: I,
    count: usize,
    _result: PhantomData<fn() -> R>,
}

impl<R, L: CaseList<R>, I: Iterator<Item = usize> + Clone> Drop for Enqueued<'_, R, L, I> {
    fn drop(&mut self) {
        for index in self.order.clone().take(self.count) {
            self.cases.case(index).0.unregister();
        }
    }
}

/// Returns a pseudo-random number below `bound` (which must be positive), from a per-thread
/// xorshift generator: cheap, and good enough to spread the choice among ready cases.
fn random_below(bound: usize) -> usize {
    thread_local! {
        static STATE: Cell<u64> = const { Cell::new(0) };
    }
    STATE.with(|state| {
        let mut x = state.get();
        if x == 0 {
            // Seed from the address of the thread's slot, which differs between threads.
            x = (state as *const Cell<u64> as u64) | 1;
        }
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        state.set(x);
        ((x >> 32) as usize) % bound
    })
}
