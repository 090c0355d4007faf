//! Small fixed-size memory blocks, recycled by the thread that allocates them.
//!
//! A runtime allocates a small object per goroutine on the spawning M, and when the object
//! outlives the goroutine's exit only by a moment, another M frees it. The system allocator
//! serves that pattern through its slow path: the spawning thread's free lists are always
//! empty and the freeing thread's always full. A [`BlockCache`] keeps its owner's free
//! blocks in a list of its own, and other threads give blocks back to the cache that
//! allocated them through its [`BlockHome`]:
//!
//! ```text
//!   owner: allocate ◀─ pop ─ local list ◀─ take all, one swap ─ remote list ◀─ push ─ others
//! ```
//!
//! The remote list is a stack that other threads push onto with a CAS and that the owner
//! empties with a swap. Taking the whole list at once avoids the ABA problem of popping one
//! block at a time. The owner reaches its local list without atomics.
//!
//! A block's home must outlive every block it handed out, and blocks may be freed long after
//! their cache is gone. So a home is never freed: a dropped cache leaves its home in a
//! process-wide list, and the next cache created adopts it with the blocks that came back
//! meanwhile. The number of homes is the peak number of caches that existed at once.
//!
//! ```
//! use std::ptr::NonNull;
//! use goro_stack::BlockCache;
//!
//! let mut cache = BlockCache::new();
//! let block = cache.allocate();
//! let home = cache.home();
//! // Another thread gives the block back to the cache that allocated it.
//! let address = block.as_ptr() as usize;
//! std::thread::spawn(move || {
//!     let block = NonNull::new(address as *mut u8).unwrap();
//!     // SAFETY: the block came from a cache with this home and is used no more.
//!     unsafe { home.free(block) }
//! })
//! .join()
//! .unwrap();
//! assert_eq!(cache.allocate(), block, "the block came back to its cache");
//! ```

use std::alloc::Layout;
use std::fmt;
use std::ptr::{self, NonNull};

use crossbeam_utils::CachePadded;

use crate::sync::{AtomicPtr, AtomicUsize, Ordering, UnsafeCell};

/// Bytes of every block.
pub const BLOCK_SIZE: usize = 96;

/// Alignment of every block.
pub const BLOCK_ALIGN: usize = 16;

const BLOCK_LAYOUT: Layout = match Layout::from_size_align(BLOCK_SIZE, BLOCK_ALIGN) {
    Ok(layout) => layout,
    Err(_) => panic!("BLOCK_SIZE and BLOCK_ALIGN form an invalid layout"),
};

/// Blocks a cache keeps in its local list at most: 24 KiB of 96-byte blocks. A block freed
/// beyond that goes back to the system allocator.
pub const LOCAL_LIMIT: usize = 256;

/// Blocks that other threads queue for one cache at most, as counted by `RemoteList::len`.
/// A block freed beyond that goes back to the system allocator.
pub const REMOTE_LIMIT: usize = 256;

/// Returns whether a value of layout `layout` fits in a block.
pub const fn fits(layout: Layout) -> bool {
    layout.size() <= BLOCK_SIZE && layout.align() <= BLOCK_ALIGN
}

/// A free block. Its first bytes link it to the next free block.
struct FreeBlock {
    next: UnsafeCell<*mut FreeBlock>,
}

const _: () = assert!(size_of::<FreeBlock>() <= BLOCK_SIZE || cfg!(loom));

/// Writes a free block's link. The block is free and owned by the caller.
///
/// # Safety
///
/// `block` points to a free block of [`BLOCK_LAYOUT`] that no other thread uses.
unsafe fn link(block: *mut FreeBlock, next: *mut FreeBlock) {
    // SAFETY: the caller's contract; blocks are large and aligned enough for a FreeBlock.
    let free = unsafe {
        block.write(FreeBlock {
            next: UnsafeCell::new(ptr::null_mut()),
        });
        &*block
    };
    // Written through the cell, not by the initializer above, so that loom tracks the write
    // against the owner's read in `next_of`.
    // SAFETY: the block is the caller's alone.
    free.next.with_mut(|link| unsafe { *link = next });
}

/// Reads a free block's link.
///
/// # Safety
///
/// `block` points to a free block that [`link`] wrote, owned by the caller.
unsafe fn next_of(block: *mut FreeBlock) -> *mut FreeBlock {
    // SAFETY: the caller's contract.
    unsafe { (*block).next.with(|next| *next) }
}

/// The part of a cache that other threads reach.
struct RemoteList {
    /// The blocks other threads gave back, most recent first; null when empty.
    head: AtomicPtr<FreeBlock>,
    /// About the number of blocks in `head`'s list: incremented after each push and reset
    /// when the owner takes the list, so a push that races with a take may be counted in the
    /// wrong round. It only bounds the list. Relaxed, it orders nothing.
    len: AtomicUsize,
}

/// Homes of dropped caches, for the next cache to adopt. Under loom every cache gets a new
/// home, because a static cannot hold loom objects across model runs.
#[cfg(not(loom))]
static ORPHANS: std::sync::Mutex<Vec<BlockHome>> = std::sync::Mutex::new(Vec::new());

/// The destination of the blocks of one [`BlockCache`] that other threads free. Any thread may
/// give a block back through it, before or after the cache is dropped.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct BlockHome {
    /// Never freed (see the module documentation).
    remote: NonNull<CachePadded<RemoteList>>,
}

// SAFETY: a home is a pointer to a list of atomics that is never freed.
unsafe impl Send for BlockHome {}
// SAFETY: as above.
unsafe impl Sync for BlockHome {}

impl BlockHome {
    fn new() -> BlockHome {
        let remote = Box::new(CachePadded::new(RemoteList {
            head: AtomicPtr::new(ptr::null_mut()),
            len: AtomicUsize::new(0),
        }));
        BlockHome {
            remote: NonNull::from(Box::leak(remote)),
        }
    }

    fn list(&self) -> &RemoteList {
        // SAFETY: homes are never freed.
        unsafe { self.remote.as_ref() }
    }

    /// Gives `block` back to the cache that allocated it, or to the system allocator when
    /// [`REMOTE_LIMIT`] blocks already wait there. The cache may have been dropped.
    ///
    /// # Safety
    ///
    /// `block` was returned by [`BlockCache::allocate`] of a cache with this home, and is
    /// used no more.
    pub unsafe fn free(self, block: NonNull<u8>) {
        let list = self.list();
        // Relaxed: a bound only (see `RemoteList::len`).
        if list.len.load(Ordering::Relaxed) >= REMOTE_LIMIT {
            // SAFETY: the caller's contract; every block has this layout.
            unsafe { std::alloc::dealloc(block.as_ptr(), BLOCK_LAYOUT) };
            return;
        }
        let block = block.cast::<FreeBlock>().as_ptr();
        let mut head = list.head.load(Ordering::Relaxed);
        loop {
            // SAFETY: the block is free and this thread's until the CAS below publishes it.
            unsafe { link(block, head) };
            // Release: publishes the link to the owner's Acquire swap in `BlockCache::take_remote`.
            // Relaxed on failure: the loop writes the link again with the value read.
            match list
                .head
                .compare_exchange_weak(head, block, Ordering::Release, Ordering::Relaxed)
            {
                Ok(_) => break,
                Err(actual) => head = actual,
            }
        }
        // Relaxed: a bound only.
        list.len.fetch_add(1, Ordering::Relaxed);
    }
}

impl fmt::Debug for BlockHome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("BlockHome").field(&self.remote).finish()
    }
}

/// A cache of [`BLOCK_SIZE`]-byte blocks aligned to [`BLOCK_ALIGN`], owned by one thread at a
/// time (it is `Send`, not `Sync`). Its owner allocates and frees through it; other threads
/// free through its [`BlockHome`].
pub struct BlockCache {
    home: BlockHome,
    /// The owner's free blocks; null when empty.
    local: *mut FreeBlock,
    /// Number of blocks in `local`.
    local_len: usize,
}

// SAFETY: the local list is plain memory owned by the cache, and the home is Send.
unsafe impl Send for BlockCache {}

impl BlockCache {
    /// Returns an empty cache, with the home of a dropped cache when there is one.
    pub fn new() -> BlockCache {
        #[cfg(not(loom))]
        let adopted = ORPHANS.lock().unwrap_or_else(|e| e.into_inner()).pop();
        #[cfg(loom)]
        let adopted = None;
        BlockCache {
            home: adopted.unwrap_or_else(BlockHome::new),
            local: ptr::null_mut(),
            local_len: 0,
        }
    }

    /// Returns the home that this cache's blocks go back to.
    pub fn home(&self) -> BlockHome {
        self.home
    }

    /// Number of free blocks in the local list, for tests and statistics.
    pub fn local_len(&self) -> usize {
        self.local_len
    }

    /// Returns a block: from the local list, from the blocks other threads gave back, or from
    /// the system allocator.
    pub fn allocate(&mut self) -> NonNull<u8> {
        if self.local.is_null() {
            self.take_remote();
        }
        match NonNull::new(self.local) {
            Some(block) => {
                // SAFETY: a block in the local list is free, owned by the list, and linked.
                self.local = unsafe { next_of(block.as_ptr()) };
                self.local_len = self.local_len.saturating_sub(1);
                block.cast()
            }
            None => {
                // SAFETY: the layout has a non-zero size.
                let block = unsafe { std::alloc::alloc(BLOCK_LAYOUT) };
                NonNull::new(block).unwrap_or_else(|| std::alloc::handle_alloc_error(BLOCK_LAYOUT))
            }
        }
    }

    /// Moves the blocks that other threads gave back to the empty local list.
    fn take_remote(&mut self) {
        let list = self.home.list();
        // Relaxed: a hint that spares the two swaps below when no block came back. A block
        // pushed right after it waits for the next call.
        if list.head.load(Ordering::Relaxed).is_null() {
            return;
        }
        // Acquire: pairs with the Release CAS in `BlockHome::free`, so the links that the
        // pushing threads wrote are visible before the owner follows them.
        self.local = list.head.swap(ptr::null_mut(), Ordering::Acquire);
        // Relaxed: a bound only.
        self.local_len = list.len.swap(0, Ordering::Relaxed);
    }

    /// Puts `block` in the local list, or gives it back to the system allocator when the list
    /// holds [`LOCAL_LIMIT`] blocks.
    ///
    /// # Safety
    ///
    /// `block` was returned by [`BlockCache::allocate`] of a cache with this cache's home, and
    /// is used no more.
    pub unsafe fn free(&mut self, block: NonNull<u8>) {
        if self.local_len >= LOCAL_LIMIT {
            // SAFETY: the caller's contract; every block has this layout.
            unsafe { std::alloc::dealloc(block.as_ptr(), BLOCK_LAYOUT) };
            return;
        }
        let block = block.cast::<FreeBlock>().as_ptr();
        // SAFETY: the block is free and now owned by the local list.
        unsafe { link(block, self.local) };
        self.local = block;
        self.local_len += 1;
    }
}

impl Default for BlockCache {
    fn default() -> BlockCache {
        BlockCache::new()
    }
}

impl Drop for BlockCache {
    fn drop(&mut self) {
        let mut block = std::mem::replace(&mut self.local, ptr::null_mut());
        while !block.is_null() {
            // SAFETY: the local list contains free, linked blocks owned by this list.
            let next = unsafe { next_of(block) };
            // SAFETY: as above; every block has this layout.
            unsafe { std::alloc::dealloc(block.cast(), BLOCK_LAYOUT) };
            block = next;
        }
        #[cfg(not(loom))]
        ORPHANS
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(self.home);
    }
}

impl fmt::Debug for BlockCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlockCache")
            .field("home", &self.home)
            .field("local_len", &self.local_len)
            .finish()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use std::sync::{Mutex, MutexGuard};

    use super::*;

    /// Runs the tests of this module one at a time. A cache that one test drops leaves its
    /// home in the process-wide orphan list, and a cache that another test creates meanwhile
    /// would adopt it, with the blocks the first test still expects back.
    fn one_at_a_time() -> MutexGuard<'static, ()> {
        static CACHES: Mutex<()> = Mutex::new(());
        CACHES.lock().unwrap_or_else(|e| e.into_inner())
    }

    #[test]
    fn freed_blocks_come_back_to_the_owner() {
        let _serial = one_at_a_time();
        let mut cache = BlockCache::new();
        let first = cache.allocate();
        let second = cache.allocate();
        assert_ne!(first, second);
        // SAFETY: both came from this cache and are used no more.
        unsafe { cache.free(first) };
        assert_eq!(cache.local_len(), 1);
        let home = cache.home();
        let address = second.as_ptr() as usize;
        std::thread::spawn(move || {
            let block = NonNull::new(address as *mut u8).expect("a block address");
            // SAFETY: as above.
            unsafe { home.free(block) }
        })
        .join()
        .expect("the freeing thread");
        // The local list first, then the remote list.
        assert_eq!(cache.allocate(), first);
        assert_eq!(cache.allocate(), second);
        assert_eq!(cache.local_len(), 0);
    }

    #[test]
    fn blocks_are_aligned_and_writable() {
        let _serial = one_at_a_time();
        let mut cache = BlockCache::new();
        let blocks: Vec<NonNull<u8>> = (0..8).map(|_| cache.allocate()).collect();
        for (index, block) in blocks.iter().enumerate() {
            assert_eq!(block.as_ptr() as usize % BLOCK_ALIGN, 0, "{block:?}");
            // SAFETY: the block is ours and BLOCK_SIZE bytes long.
            unsafe { ptr::write_bytes(block.as_ptr(), index as u8, BLOCK_SIZE) };
        }
        for (index, block) in blocks.into_iter().enumerate() {
            // SAFETY: as above.
            let last = unsafe { *block.as_ptr().add(BLOCK_SIZE - 1) };
            assert_eq!(last, index as u8);
            // SAFETY: the block came from this cache and is used no more.
            unsafe { cache.free(block) };
        }
    }

    #[test]
    fn local_list_is_bounded() {
        let _serial = one_at_a_time();
        let mut cache = BlockCache::new();
        let blocks: Vec<NonNull<u8>> = (0..LOCAL_LIMIT + 10).map(|_| cache.allocate()).collect();
        for block in blocks {
            // SAFETY: each came from this cache and is used no more.
            unsafe { cache.free(block) };
        }
        assert_eq!(cache.local_len(), LOCAL_LIMIT);
    }

    #[test]
    fn remote_list_is_bounded() {
        let _serial = one_at_a_time();
        let mut cache = BlockCache::new();
        let home = cache.home();
        let blocks: Vec<NonNull<u8>> = (0..REMOTE_LIMIT + 10).map(|_| cache.allocate()).collect();
        for block in blocks {
            // SAFETY: each came from this cache and is used no more.
            unsafe { home.free(block) };
        }
        cache.take_remote();
        assert_eq!(cache.local_len(), REMOTE_LIMIT);
    }

    #[test]
    fn dropped_cache_home_is_adopted() {
        let _serial = one_at_a_time();
        let mut cache = BlockCache::new();
        let home = cache.home();
        let block = cache.allocate();
        drop(cache);
        // SAFETY: the block came from a cache with this home and is used no more.
        unsafe { home.free(block) };
        // Earlier tests left orphans too, so the adopter is found by its home.
        let caches: Vec<BlockCache> = (0..64).map(|_| BlockCache::new()).collect();
        let mut adopter = caches
            .into_iter()
            .find(|cache| cache.home() == home)
            .expect("a new cache adopts the dropped cache's home");
        assert_eq!(
            adopter.allocate(),
            block,
            "the block freed after the drop came back"
        );
    }
}
