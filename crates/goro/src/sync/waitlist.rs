//! An intrusive doubly linked list of waiter nodes that live on their waiters' stacks.
//!
//! A blocked goroutine keeps its node in the frame of the blocking call, so blocking
//! allocates nothing. Go keeps its sudogs on the heap, but a goroutine stack here never moves,
//! so the frame is a stable home.
//!
//! A list is always owned by one lock, and every link field is read and written only under
//! that lock. A node stays alive while it is linked, because its owner does not leave the
//! blocking call before the node is unlinked (also when the call unwinds).

use std::cell::Cell;
use std::marker::PhantomPinned;
use std::ptr::NonNull;

/// The link fields of a node, written only under the lock of the list that holds the node.
pub(crate) struct Links<N> {
    prev: Cell<Option<NonNull<N>>>,
    next: Cell<Option<NonNull<N>>>,
    linked: Cell<bool>,
    /// Other threads reach the node through raw pointers while its owner holds references to
    /// it, so the node must not be treated as uniquely borrowed.
    _pinned: PhantomPinned,
}

impl<N> Links<N> {
    pub(crate) const fn new() -> Links<N> {
        Links {
            prev: Cell::new(None),
            next: Cell::new(None),
            linked: Cell::new(false),
            _pinned: PhantomPinned,
        }
    }
}

/// A node type that embeds [`Links`].
///
/// # Safety
///
/// `links` must return the same field of `self` on every call.
pub(crate) unsafe trait Linked: Sized {
    /// The node's link fields.
    fn links(&self) -> &Links<Self>;
}

/// A FIFO of nodes, with O(1) removal from the middle.
pub(crate) struct WaitList<N: Linked> {
    head: Option<NonNull<N>>,
    tail: Option<NonNull<N>>,
}

// SAFETY: the list points to nodes of waiters on any thread. It is only used under its
// owner's lock, which orders every access to the nodes' link fields.
unsafe impl<N: Linked> Send for WaitList<N> {}

impl<N: Linked> WaitList<N> {
    pub(crate) const fn new() -> WaitList<N> {
        WaitList {
            head: None,
            tail: None,
        }
    }

    /// Appends `node` at the back.
    ///
    /// # Safety
    ///
    /// `node` must be alive and in no list, and stay alive until it is removed from this one.
    pub(crate) unsafe fn push_back(&mut self, node: NonNull<N>) {
        // SAFETY: the caller keeps `node` alive; linked nodes are alive by the contract of the
        // push functions.
        let links = unsafe { node.as_ref() }.links();
        debug_assert!(
            !links.linked.get(),
            "WaitList::push_back: node already linked"
        );
        links.prev.set(self.tail);
        links.next.set(None);
        links.linked.set(true);
        match self.tail {
            // SAFETY: as above.
            Some(tail) => unsafe { tail.as_ref() }.links().next.set(Some(node)),
            None => self.head = Some(node),
        }
        self.tail = Some(node);
    }

    /// Inserts `node` at the front.
    ///
    /// # Safety
    ///
    /// As for [`WaitList::push_back`].
    pub(crate) unsafe fn push_front(&mut self, node: NonNull<N>) {
        // SAFETY: the caller keeps `node` alive; linked nodes are alive by the push contract.
        let links = unsafe { node.as_ref() }.links();
        debug_assert!(
            !links.linked.get(),
            "WaitList::push_front: node already linked"
        );
        links.prev.set(None);
        links.next.set(self.head);
        links.linked.set(true);
        match self.head {
            // SAFETY: as above.
            Some(head) => unsafe { head.as_ref() }.links().prev.set(Some(node)),
            None => self.tail = Some(node),
        }
        self.head = Some(node);
    }

    /// Removes and returns the front node.
    pub(crate) fn pop_front(&mut self) -> Option<NonNull<N>> {
        let node = self.head?;
        // SAFETY: `node` is linked, so alive (push contract), and in this list.
        unsafe { self.unlink(node) };
        Some(node)
    }

    /// Removes `node` if it is linked. Returns whether it was.
    ///
    /// # Safety
    ///
    /// `node` must be alive, and linked in this list or in none.
    pub(crate) unsafe fn remove(&mut self, node: NonNull<N>) -> bool {
        // SAFETY: the caller keeps `node` alive.
        if !unsafe { node.as_ref() }.links().linked.get() {
            return false;
        }
        // SAFETY: linked, and by the caller's contract in this list.
        unsafe { self.unlink(node) };
        true
    }

    /// Returns whether any node satisfies `predicate`, scanning from the front.
    pub(crate) fn any(&self, mut predicate: impl FnMut(&N) -> bool) -> bool {
        let mut cursor = self.head;
        while let Some(node) = cursor {
            // SAFETY: linked nodes are alive (push contract).
            let node = unsafe { node.as_ref() };
            if predicate(node) {
                return true;
            }
            cursor = node.links().next.get();
        }
        false
    }

    /// # Safety
    ///
    /// `node` must be alive and linked in this list.
    unsafe fn unlink(&mut self, node: NonNull<N>) {
        // SAFETY: the caller's contract; its neighbours are linked, so alive.
        let links = unsafe { node.as_ref() }.links();
        let (prev, next) = (links.prev.get(), links.next.get());
        match prev {
            // SAFETY: as above.
            Some(prev) => unsafe { prev.as_ref() }.links().next.set(next),
            None => self.head = next,
        }
        match next {
            // SAFETY: as above.
            Some(next) => unsafe { next.as_ref() }.links().prev.set(prev),
            None => self.tail = prev,
        }
        links.prev.set(None);
        links.next.set(None);
        links.linked.set(false);
    }
}
