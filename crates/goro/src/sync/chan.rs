//! Channels: bounded (including rendezvous) and unbounded multi-producer multi-consumer queues
//! whose blocking operations park the calling goroutine.
//!
//! A channel is a buffer and two wait queues under one lock, as Go's `hchan` is:
//!
//! ```text
//!  Chan<T>
//!  ┌───────────────────────────────────────────────┐
//!  │ lock ─┬─ buffer: VecDeque<T>  (≤ capacity)     │
//!  │       ├─ closed: bool                          │
//!  │       ├─ recvq: Node ⇄ Node ⇄ …  blocked recvs  │ each Node lives in the frame of its
//!  │       └─ sendq: Node ⇄ Node ⇄ …  blocked sends  │ blocked operation, slot and all
//!  │ senders, receivers: handle counts             │
//!  └───────────────────────────────────────────────┘
//! ```
//!
//! At most one of the queues is non-empty, except for nodes of selects that wait on both
//! sides of the same channel. A send that finds a waiting receiver writes the value straight
//! into the receiver's slot. A receive that finds a waiting sender takes the value from the
//! sender's slot, or, when the buffer was full, moves it into the buffer's freed place. Only
//! when neither the buffer nor a partner can serve it does an operation enqueue a node and
//! wait.
//!
//! Every node points to a [`Selector`], the state of one blocked operation. A plain send or
//! receive has one node; a select has one node per case, all pointing to the same selector.
//! Whoever completes a node first claims its selector with a CAS (Go's `selectDone`), so a
//! select enqueued on several channels fires exactly once; nodes whose selector was claimed
//! elsewhere are dropped from the queue when they are met.

use std::cell::{Cell, UnsafeCell};
use std::collections::VecDeque;
use std::fmt;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex as StdMutex, MutexGuard as StdMutexGuard};

use goro_abi::WaitReason;

use super::waitlist::{Linked, Links, WaitList};
use crate::waiter::{Waiter, wait_until};

// ---------------------------------------------------------------------------------------------
// The selector: the state that every node of one blocked operation shares.
// ---------------------------------------------------------------------------------------------

/// Nobody has completed the operation yet.
const WAITING: usize = 0;
/// A waker (a partner or a close) won the CAS and is completing the operation.
const CLAIMED: usize = 1;
/// The owner withdrew: a select found a case ready while it was enqueueing its nodes.
const ABORTED: usize = 2;
/// `FIRED + case`: the operation's case `case` completed, and its slot contains the outcome.
const FIRED: usize = 3;

/// The state of one blocked channel operation (a send, a receive, or a whole select).
///
/// `WAITING -> CLAIMED -> FIRED + case` by the one party that completes a node of it, under
/// that node's channel lock; `WAITING -> ABORTED -> WAITING` by the owner while it enqueues.
pub(crate) struct Selector {
    state: AtomicUsize,
    /// The owner, to wake after firing. Set by the owner before any node is enqueued; taken
    /// by the party that claimed the selector.
    waiter: UnsafeCell<Option<Waiter>>,
}

impl Selector {
    pub(crate) fn new(waiter: Waiter) -> Selector {
        Selector {
            state: AtomicUsize::new(WAITING),
            waiter: UnsafeCell::new(Some(waiter)),
        }
    }

    /// Wins the right to complete the operation. Returns `false` when another party already
    /// has it.
    fn try_claim(&self) -> bool {
        // Relaxed: the CAS only picks one winner. The node data the winner touches next was
        // written by the owner before it released the lock under which the winner found the
        // node, so the channel lock orders it.
        self.state
            .compare_exchange(WAITING, CLAIMED, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    }

    /// Withdraws the owner's enqueued nodes from being completed. Returns `false` when a waker
    /// already claimed the selector, whose firing the owner must then wait for.
    pub(crate) fn try_abort(&self) -> bool {
        // Relaxed: as in `try_claim`; the owner touches no node data of a waker afterwards.
        self.state
            .compare_exchange(WAITING, ABORTED, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    }

    /// Makes an aborted selector usable again. Call only when none of its nodes is linked.
    pub(crate) fn reset(&self) {
        // Relaxed: the nodes are enqueued again under their channel locks, which publish this
        // store to any waker that finds them.
        self.state.store(WAITING, Ordering::Relaxed);
    }

    /// The case that fired, once the party that claimed the selector has finished.
    pub(crate) fn fired(&self) -> Option<usize> {
        // Acquire: pairs with the Release in `fire`, so the owner sees the slot's outcome.
        self.state.load(Ordering::Acquire).checked_sub(FIRED)
    }

    /// Publishes that `case` fired. Nothing of the selector or its nodes may be touched after
    /// this: the owner may return and free them at once.
    fn fire(&self, case: usize) {
        // Release: pairs with the Acquire in `fired`; publishes the slot's outcome.
        self.state.store(FIRED + case, Ordering::Release);
    }

    /// Takes the owner's waiter out.
    ///
    /// # Safety
    ///
    /// The caller must have claimed the selector (or be its owner after an abort).
    unsafe fn take_waiter(&self) -> Option<Waiter> {
        // SAFETY: the claim gives the caller exclusive use of the waiter field.
        unsafe { (*self.waiter.get()).take() }
    }
}

// ---------------------------------------------------------------------------------------------
// Nodes.
// ---------------------------------------------------------------------------------------------

/// One blocked send or receive on one channel: Go's sudog.
pub(crate) struct Node<T> {
    links: Links<Node<T>>,
    /// The operation this node belongs to; set by the owner while the node is unlinked.
    selector: Cell<Option<NonNull<Selector>>>,
    /// The case index reported when this node fires.
    case: Cell<usize>,
    /// A sender's value until a receiver takes it; a receiver's value once a sender gives it.
    /// Written by the owner while the node is unlinked or after its selector fired, and by
    /// the claiming party in between.
    slot: UnsafeCell<Option<T>>,
}

// SAFETY: `links` is the node's one link field.
unsafe impl<T> Linked for Node<T> {
    fn links(&self) -> &Links<Node<T>> {
        &self.links
    }
}

impl<T> Node<T> {
    pub(crate) fn new(value: Option<T>) -> Node<T> {
        Node {
            links: Links::new(),
            selector: Cell::new(None),
            case: Cell::new(0),
            slot: UnsafeCell::new(value),
        }
    }

    /// Ties the node to `selector` as its case `case`. Call only while the node is unlinked.
    pub(crate) fn bind(&self, selector: &Selector, case: usize) {
        self.selector.set(Some(NonNull::from(selector)));
        self.case.set(case);
    }

    fn belongs_to(&self, selector: &Selector) -> bool {
        self.selector.get() == Some(NonNull::from(selector))
    }

    /// Takes the slot's value.
    ///
    /// # Safety
    ///
    /// The caller must be the owner, with the node unlinked and no claim in progress: before
    /// enqueueing it, or after its selector fired or was aborted.
    pub(crate) unsafe fn take_slot(&self) -> Option<T> {
        // SAFETY: the caller's contract excludes every other access to the slot.
        unsafe { (*self.slot.get()).take() }
    }

    /// Puts a value back into the slot.
    ///
    /// # Safety
    ///
    /// As for [`Node::take_slot`].
    pub(crate) unsafe fn put_slot(&self, value: T) {
        // SAFETY: as in `take_slot`.
        unsafe { *self.slot.get() = Some(value) };
    }
}

/// Claims the first node of `queue` whose selector is still waiting and unlinks it. Nodes of
/// selectors that fired or aborted elsewhere are unlinked and skipped; their owners no longer
/// wait for them.
fn claim_first<T>(queue: &mut WaitList<Node<T>>) -> Option<NonNull<Node<T>>> {
    while let Some(node) = queue.pop_front() {
        // SAFETY: a node that was linked is alive until its owner, which waits for its
        // selector, unlinks it or sees it fire; neither can happen while we hold the lock.
        let selector = unsafe { node.as_ref() }.selector.get();
        let selector = selector.expect("claim_first: enqueued node without a selector");
        // SAFETY: the selector lives in the owner's frame for as long as the node does.
        if unsafe { selector.as_ref() }.try_claim() {
            return Some(node);
        }
    }
    None
}

/// Completes a claimed node: `transfer` moves the value into or out of its slot, then its
/// selector fires. Returns the owner's waiter, to be woken once the channel lock is released.
///
/// # Safety
///
/// `node` must come from `claim_first` under the channel lock, which is still held.
unsafe fn complete<T>(
    node: NonNull<Node<T>>,
    transfer: impl FnOnce(&mut Option<T>),
) -> Option<Waiter> {
    // SAFETY: the claim makes us the only party to touch the node until `fire`, and the owner
    // keeps it alive until then.
    let node = unsafe { node.as_ref() };
    // SAFETY: as above.
    transfer(unsafe { &mut *node.slot.get() });
    let case = node.case.get();
    let selector = node
        .selector
        .get()
        .expect("complete: claimed node without a selector");
    // SAFETY: as above; the selector outlives its nodes.
    let selector = unsafe { selector.as_ref() };
    // SAFETY: we claimed the selector.
    let waiter = unsafe { selector.take_waiter() };
    selector.fire(case);
    waiter
}

fn wake(waiter: Option<Waiter>) {
    if let Some(waiter) = waiter {
        waiter.wake();
    }
}

// ---------------------------------------------------------------------------------------------
// The channel.
// ---------------------------------------------------------------------------------------------

/// The state under a channel's lock.
struct State<T> {
    buffer: VecDeque<T>,
    closed: bool,
    recvq: WaitList<Node<T>>,
    sendq: WaitList<Node<T>>,
}

/// Which queue a node waits in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Side {
    Send,
    Recv,
}

/// A channel, shared by its senders and receivers.
pub(crate) struct Chan<T> {
    state: StdMutex<State<T>>,
    /// The buffer's capacity; `None` for an unbounded channel.
    capacity: Option<usize>,
    /// The number of `Sender` handles; the last one to go closes the channel.
    senders: AtomicUsize,
    /// The number of `Receiver` handles; the last one to go closes the channel and drops the
    /// buffered values.
    receivers: AtomicUsize,
}

impl<T> Chan<T> {
    fn new(capacity: Option<usize>) -> Chan<T> {
        let buffer = match capacity {
            Some(capacity) => VecDeque::with_capacity(capacity),
            None => VecDeque::new(),
        };
        Chan {
            state: StdMutex::new(State {
                buffer,
                closed: false,
                recvq: WaitList::new(),
                sendq: WaitList::new(),
            }),
            capacity,
            senders: AtomicUsize::new(1),
            receivers: AtomicUsize::new(1),
        }
    }

    fn lock(&self) -> StdMutexGuard<'_, State<T>> {
        // No user code runs under the lock (values are only moved), so a poisoned lock can
        // only come from a bug in this module, and its state is still consistent.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn has_room(&self, state: &State<T>) -> bool {
        self.capacity
            .is_none_or(|capacity| state.buffer.len() < capacity)
    }

    /// Sends without blocking. On success, returns the receiver to wake.
    fn try_send_locked(
        &self,
        state: &mut State<T>,
        value: T,
    ) -> Result<Option<Waiter>, TrySendError<T>> {
        if state.closed {
            return Err(TrySendError::Closed(value));
        }
        if let Some(node) = claim_first(&mut state.recvq) {
            // SAFETY: claimed under the lock we hold.
            return Ok(unsafe { complete(node, |slot| *slot = Some(value)) });
        }
        if self.has_room(state) {
            state.buffer.push_back(value);
            return Ok(None);
        }
        Err(TrySendError::Full(value))
    }

    /// Receives without blocking. On success, returns the value and the sender to wake.
    fn try_recv_locked(&self, state: &mut State<T>) -> Result<(T, Option<Waiter>), TryRecvError> {
        if let Some(value) = state.buffer.pop_front() {
            // The buffer was full if a sender waits: its value takes the freed place, at the
            // back, so that values keep their order.
            let buffer = &mut state.buffer;
            let waiter = claim_first(&mut state.sendq).and_then(|node| {
                let refill = |slot: &mut Option<T>| {
                    buffer.push_back(slot.take().expect("Chan::try_recv: sender without a value"))
                };
                // SAFETY: claimed under the lock we hold.
                unsafe { complete(node, refill) }
            });
            return Ok((value, waiter));
        }
        if let Some(node) = claim_first(&mut state.sendq) {
            let mut value = None;
            // SAFETY: claimed under the lock we hold.
            let waiter = unsafe { complete(node, |slot| value = slot.take()) };
            let value = value.expect("Chan::try_recv: sender without a value");
            return Ok((value, waiter));
        }
        if state.closed {
            Err(TryRecvError::Closed)
        } else {
            Err(TryRecvError::Empty)
        }
    }

    pub(crate) fn try_send(&self, value: T) -> Result<(), TrySendError<T>> {
        let waiter = self.try_send_locked(&mut self.lock(), value)?;
        wake(waiter);
        Ok(())
    }

    pub(crate) fn try_recv(&self) -> Result<T, TryRecvError> {
        let (value, waiter) = self.try_recv_locked(&mut self.lock())?;
        wake(waiter);
        Ok(value)
    }

    fn send(&self, value: T) -> Result<(), SendError<T>> {
        let mut state = self.lock();
        let value = match self.try_send_locked(&mut state, value) {
            Ok(waiter) => {
                drop(state);
                wake(waiter);
                return Ok(());
            }
            Err(TrySendError::Closed(value)) => return Err(SendError(value)),
            Err(TrySendError::Full(value)) => value,
        };
        let selector = Selector::new(Waiter::current());
        let node = Node::new(Some(value));
        node.bind(&selector, 0);
        let enqueued = Enqueued::new(self, &node, Side::Send, &mut state);
        drop(state);
        wait_until(|| selector.fired().is_some(), WaitReason::ChanSend, None);
        enqueued.finished();
        // SAFETY: the selector fired, so the node is unlinked and the claimer is done.
        match unsafe { node.take_slot() } {
            None => Ok(()),
            // Still ours: the channel closed while we waited.
            Some(value) => Err(SendError(value)),
        }
    }

    fn recv(&self) -> Result<T, RecvError> {
        let mut state = self.lock();
        match self.try_recv_locked(&mut state) {
            Ok((value, waiter)) => {
                drop(state);
                wake(waiter);
                return Ok(value);
            }
            Err(TryRecvError::Closed) => return Err(RecvError),
            Err(TryRecvError::Empty) => {}
        }
        let selector = Selector::new(Waiter::current());
        let node = Node::new(None);
        node.bind(&selector, 0);
        let enqueued = Enqueued::new(self, &node, Side::Recv, &mut state);
        drop(state);
        wait_until(|| selector.fired().is_some(), WaitReason::ChanRecv, None);
        enqueued.finished();
        // SAFETY: the selector fired, so the node is unlinked and the claimer is done.
        unsafe { node.take_slot() }.ok_or(RecvError)
    }

    /// Enqueues a select's node unless its operation can proceed now. Returns `false` (and
    /// enqueues nothing) when it can: the buffer or a partner of another operation can serve
    /// it, or the channel is closed.
    ///
    /// # Safety
    ///
    /// `node` must be bound to its selector, unlinked, and stay alive until it is unlinked
    /// again ([`Chan::unregister`]) or its selector fires.
    pub(crate) unsafe fn register(&self, node: &Node<T>, side: Side) -> bool {
        let mut state = self.lock();
        // SAFETY: bound by the caller's contract.
        let selector = unsafe {
            node.selector
                .get()
                .expect("Chan::register: unbound node")
                .as_ref()
        };
        let foreign = |other: &Node<T>| !other.belongs_to(selector);
        let ready = state.closed
            || match side {
                Side::Send => self.has_room(&state) || state.recvq.any(foreign),
                Side::Recv => !state.buffer.is_empty() || state.sendq.any(foreign),
            };
        if ready {
            return false;
        }
        let queue = match side {
            Side::Send => &mut state.sendq,
            Side::Recv => &mut state.recvq,
        };
        // SAFETY: the caller keeps the node alive while it is linked.
        unsafe { queue.push_back(NonNull::from(node)) };
        true
    }

    /// Unlinks `node` if it is still enqueued. Once this returns, no other party touches the
    /// node: a claimer completes a node under the lock taken here.
    pub(crate) fn unregister(&self, node: &Node<T>, side: Side) {
        let mut state = self.lock();
        let queue = match side {
            Side::Send => &mut state.sendq,
            Side::Recv => &mut state.recvq,
        };
        // SAFETY: `node` is alive (we hold a reference) and only ever enqueued on this side
        // of this channel.
        unsafe { queue.remove(NonNull::from(node)) };
    }

    /// Closes the channel and wakes every blocked operation. Returns `false` when it was
    /// already closed.
    fn close(&self) -> bool {
        let mut waiters = Vec::new();
        {
            let mut state = self.lock();
            if state.closed {
                return false;
            }
            state.closed = true;
            // A receiver's slot stays empty and a sender's keeps its value: both tell their
            // owners that the channel closed.
            while let Some(node) = claim_first(&mut state.recvq) {
                // SAFETY: claimed under the lock we hold.
                waiters.extend(unsafe { complete(node, |_| {}) });
            }
            while let Some(node) = claim_first(&mut state.sendq) {
                // SAFETY: as above.
                waiters.extend(unsafe { complete(node, |_| {}) });
            }
        }
        waiters.into_iter().for_each(Waiter::wake);
        true
    }

    /// Closes the channel for good after its last receiver went, and returns the values
    /// nobody can receive any more, to be dropped outside the lock.
    fn disconnect_receivers(&self) -> VecDeque<T> {
        self.close();
        std::mem::take(&mut self.lock().buffer)
    }

    fn is_closed(&self) -> bool {
        self.lock().closed
    }

    fn len(&self) -> usize {
        self.lock().buffer.len()
    }
}

/// A node in a channel's queue, unlinked on drop so that the node never outlives its link
/// (also when the wait unwinds).
struct Enqueued<'a, T> {
    chan: &'a Chan<T>,
    node: &'a Node<T>,
    side: Side,
}

impl<'a, T> Enqueued<'a, T> {
    /// Enqueues `node`, bound to its selector, on `side` of `chan`, whose lock `state` is.
    fn new(
        chan: &'a Chan<T>,
        node: &'a Node<T>,
        side: Side,
        state: &mut State<T>,
    ) -> Enqueued<'a, T> {
        let queue = match side {
            Side::Send => &mut state.sendq,
            Side::Recv => &mut state.recvq,
        };
        // SAFETY: the returned guard unlinks the node before the borrow of `node` ends,
        // unless its selector fired, which unlinks it.
        unsafe { queue.push_back(NonNull::from(node)) };
        Enqueued { chan, node, side }
    }

    /// Ends the guard after the node's selector fired: the claimer has unlinked the node.
    fn finished(self) {
        std::mem::forget(self);
    }
}

impl<T> Drop for Enqueued<'_, T> {
    fn drop(&mut self) {
        self.chan.unregister(self.node, self.side);
    }
}

// ---------------------------------------------------------------------------------------------
// The handles.
// ---------------------------------------------------------------------------------------------

/// Creates a channel whose buffer holds up to `capacity` values.
///
/// With `capacity` 0 the channel is a rendezvous: a send completes only when a receiver takes
/// the value. The buffer is allocated here, in full, as Go's `make(chan T, n)` does.
///
/// # Panics
///
/// Panics when `capacity` values of `T` do not fit in the address space. A buffer that fits
/// but cannot be allocated aborts the process, as `Vec::with_capacity` does.
pub fn channel<T>(capacity: usize) -> (Sender<T>, Receiver<T>) {
    let fits = capacity
        .checked_mul(size_of::<T>())
        .is_some_and(|bytes| bytes <= isize::MAX as usize);
    assert!(
        fits,
        "goro::sync::channel: a buffer of capacity {capacity} for {}-byte values exceeds the \
         address space; use a smaller capacity or goro::sync::unbounded",
        size_of::<T>()
    );
    from_chan(Chan::new(Some(capacity)))
}

/// Creates a channel with an unbounded buffer: sends never block, and the buffer grows as
/// needed (and never shrinks).
pub fn unbounded<T>() -> (Sender<T>, Receiver<T>) {
    from_chan(Chan::new(None))
}

fn from_chan<T>(chan: Chan<T>) -> (Sender<T>, Receiver<T>) {
    let chan = Arc::new(chan);
    (Sender { chan: chan.clone() }, Receiver { chan })
}

/// Adds one to a handle count, aborting on overflow as `Arc::clone` does: the count can only
/// overflow when handles are leaked in a loop.
fn count_handle(count: &AtomicUsize) {
    // Relaxed: a new handle is made from an existing one, which keeps the channel alive.
    if count.fetch_add(1, Ordering::Relaxed) > isize::MAX as usize {
        std::process::abort();
    }
}

/// Drops a handle from a count. Returns `true` for the last handle.
fn uncount_handle(count: &AtomicUsize) -> bool {
    // AcqRel: every operation through the other handles of this side happens before the
    // close that the last handle performs.
    count.fetch_sub(1, Ordering::AcqRel) == 1
}

/// The sending side of a channel. Cloning makes another sender; the channel closes when the
/// last sender is dropped.
pub struct Sender<T> {
    chan: Arc<Chan<T>>,
}

impl<T> Sender<T> {
    /// Sends `value`, blocking while the buffer is full (or, for a rendezvous channel, until
    /// a receiver takes it). Called from a goroutine, it parks the goroutine; from any other
    /// thread, it blocks the thread.
    ///
    /// # Errors
    ///
    /// Returns the value in a [`SendError`] when the channel is closed, also when it closes
    /// while the send waits.
    pub fn send(&self, value: T) -> Result<(), SendError<T>> {
        self.chan.send(value)
    }

    /// Sends `value` if that needs no waiting: a receiver waits or the buffer has room.
    ///
    /// # Errors
    ///
    /// Returns the value in [`TrySendError::Full`] when the send would block, and in
    /// [`TrySendError::Closed`] when the channel is closed.
    pub fn try_send(&self, value: T) -> Result<(), TrySendError<T>> {
        self.chan.try_send(value)
    }

    /// Closes the channel: sends fail from now on, receivers take the buffered values and
    /// then see it closed, and every blocked send and receive returns. Returns `false` when
    /// the channel was already closed (closing twice is not an error).
    pub fn close(&self) -> bool {
        self.chan.close()
    }

    /// Returns whether the channel is closed.
    pub fn is_closed(&self) -> bool {
        self.chan.is_closed()
    }

    /// Returns the number of values in the buffer.
    pub fn len(&self) -> usize {
        self.chan.len()
    }

    /// Returns whether the buffer is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Returns the buffer's capacity, or `None` for an unbounded channel.
    pub fn capacity(&self) -> Option<usize> {
        self.chan.capacity
    }

    pub(crate) fn chan(&self) -> &Chan<T> {
        &self.chan
    }
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Sender<T> {
        count_handle(&self.chan.senders);
        Sender {
            chan: self.chan.clone(),
        }
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        if uncount_handle(&self.chan.senders) {
            self.chan.close();
        }
    }
}

impl<T> fmt::Debug for Sender<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sender")
            .field("capacity", &self.chan.capacity)
            .finish_non_exhaustive()
    }
}

/// The receiving side of a channel. Cloning makes another receiver, and each value goes to
/// one of them. When the last receiver is dropped, the channel closes and its buffered values
/// are dropped.
pub struct Receiver<T> {
    chan: Arc<Chan<T>>,
}

impl<T> Receiver<T> {
    /// Receives a value, blocking while the channel is empty. Called from a goroutine, it
    /// parks the goroutine; from any other thread, it blocks the thread.
    ///
    /// # Errors
    ///
    /// Returns [`RecvError`] once the channel is closed and its buffer drained.
    pub fn recv(&self) -> Result<T, RecvError> {
        self.chan.recv()
    }

    /// Receives a value, waiting at most `timeout` for one.
    ///
    /// # Errors
    ///
    /// Returns [`RecvTimeoutError::Timeout`] when no value came in time, and
    /// [`RecvTimeoutError::Closed`] once the channel is closed and its buffer drained.
    pub fn recv_timeout(&self, timeout: std::time::Duration) -> Result<T, RecvTimeoutError> {
        crate::sync::Select::new()
            .recv(self, |result| {
                result.map_err(|RecvError| RecvTimeoutError::Closed)
            })
            .wait_timeout(timeout, || Err(RecvTimeoutError::Timeout))
    }

    /// Receives a value if one is ready: buffered, or offered by a blocked sender.
    ///
    /// # Errors
    ///
    /// Returns [`TryRecvError::Empty`] when the receive would block, and
    /// [`TryRecvError::Closed`] when the channel is closed and drained.
    pub fn try_recv(&self) -> Result<T, TryRecvError> {
        self.chan.try_recv()
    }

    /// Closes the channel, as [`Sender::close`] does.
    pub fn close(&self) -> bool {
        self.chan.close()
    }

    /// Returns whether the channel is closed (values may still be buffered).
    pub fn is_closed(&self) -> bool {
        self.chan.is_closed()
    }

    /// Returns the number of values in the buffer.
    pub fn len(&self) -> usize {
        self.chan.len()
    }

    /// Returns whether the buffer is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Returns the buffer's capacity, or `None` for an unbounded channel.
    pub fn capacity(&self) -> Option<usize> {
        self.chan.capacity
    }

    /// Returns an iterator that receives values until the channel is closed and drained.
    pub fn iter(&self) -> Iter<'_, T> {
        Iter { receiver: self }
    }

    pub(crate) fn chan(&self) -> &Chan<T> {
        &self.chan
    }
}

impl<T> Clone for Receiver<T> {
    fn clone(&self) -> Receiver<T> {
        count_handle(&self.chan.receivers);
        Receiver {
            chan: self.chan.clone(),
        }
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        if uncount_handle(&self.chan.receivers) {
            drop(self.chan.disconnect_receivers());
        }
    }
}

impl<T> fmt::Debug for Receiver<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Receiver")
            .field("capacity", &self.chan.capacity)
            .finish_non_exhaustive()
    }
}

/// An iterator over the values received by [`Receiver::recv`], from [`Receiver::iter`].
#[derive(Debug)]
pub struct Iter<'a, T> {
    receiver: &'a Receiver<T>,
}

impl<T> Iterator for Iter<'_, T> {
    type Item = T;

    fn next(&mut self) -> Option<T> {
        self.receiver.recv().ok()
    }
}

/// An owning iterator over the values received by [`Receiver::recv`].
#[derive(Debug)]
pub struct IntoIter<T> {
    receiver: Receiver<T>,
}

impl<T> Iterator for IntoIter<T> {
    type Item = T;

    fn next(&mut self) -> Option<T> {
        self.receiver.recv().ok()
    }
}

impl<T> IntoIterator for Receiver<T> {
    type Item = T;
    type IntoIter = IntoIter<T>;

    fn into_iter(self) -> IntoIter<T> {
        IntoIter { receiver: self }
    }
}

impl<'a, T> IntoIterator for &'a Receiver<T> {
    type Item = T;
    type IntoIter = Iter<'a, T>;

    fn into_iter(self) -> Iter<'a, T> {
        self.iter()
    }
}

// ---------------------------------------------------------------------------------------------
// Errors.
// ---------------------------------------------------------------------------------------------

/// The error of [`Sender::send`]: the channel is closed. Holds the value that was not sent.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct SendError<T>(pub T);

impl<T> SendError<T> {
    /// Returns the value that was not sent.
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> fmt::Debug for SendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SendError { .. }")
    }
}

impl<T> fmt::Display for SendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("send failed: the channel is closed")
    }
}

impl<T> std::error::Error for SendError<T> {}

/// The error of [`Sender::try_send`]. Holds the value that was not sent.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum TrySendError<T> {
    /// The buffer is full (for a rendezvous channel: no receiver waits).
    Full(T),
    /// The channel is closed.
    Closed(T),
}

impl<T> TrySendError<T> {
    /// Returns the value that was not sent.
    pub fn into_inner(self) -> T {
        match self {
            TrySendError::Full(value) | TrySendError::Closed(value) => value,
        }
    }

    /// Returns whether the send failed because it would have blocked.
    pub fn is_full(&self) -> bool {
        matches!(self, TrySendError::Full(_))
    }

    /// Returns whether the send failed because the channel is closed.
    pub fn is_closed(&self) -> bool {
        matches!(self, TrySendError::Closed(_))
    }
}

impl<T> fmt::Debug for TrySendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TrySendError::Full(_) => f.write_str("Full(..)"),
            TrySendError::Closed(_) => f.write_str("Closed(..)"),
        }
    }
}

impl<T> fmt::Display for TrySendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TrySendError::Full(_) => f.write_str("send failed: the channel is full"),
            TrySendError::Closed(_) => f.write_str("send failed: the channel is closed"),
        }
    }
}

impl<T> std::error::Error for TrySendError<T> {}

impl<T> From<SendError<T>> for TrySendError<T> {
    fn from(error: SendError<T>) -> TrySendError<T> {
        TrySendError::Closed(error.0)
    }
}

/// The error of [`Receiver::recv`]: the channel is closed and its buffer drained.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecvError;

impl fmt::Display for RecvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("receive failed: the channel is closed and empty")
    }
}

impl std::error::Error for RecvError {}

/// The error of [`Receiver::recv_timeout`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecvTimeoutError {
    /// No value came before the timeout, and the channel is open.
    Timeout,
    /// The channel is closed and its buffer drained.
    Closed,
}

impl fmt::Display for RecvTimeoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecvTimeoutError::Timeout => f.write_str("receive timed out: no value arrived in time"),
            RecvTimeoutError::Closed => {
                f.write_str("receive failed: the channel is closed and empty")
            }
        }
    }
}

impl std::error::Error for RecvTimeoutError {}

/// The error of [`Receiver::try_recv`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TryRecvError {
    /// No value is ready, and the channel is open.
    Empty,
    /// The channel is closed and its buffer drained.
    Closed,
}

impl fmt::Display for TryRecvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TryRecvError::Empty => f.write_str("receive failed: the channel is empty"),
            TryRecvError::Closed => f.write_str("receive failed: the channel is closed and empty"),
        }
    }
}

impl std::error::Error for TryRecvError {}

impl From<RecvError> for TryRecvError {
    fn from(_: RecvError) -> TryRecvError {
        TryRecvError::Closed
    }
}
