//! The registry of live guard ranges, read by the fault handler.
//!
//! Every [`Stack`](crate::Stack) records its guard here while it is mapped. The fault handler
//! can then tell a stack overflow from any other fault even when the faulting thread runs no g,
//! as in a plain coroutine or after a runtime bug that left the g register stale.
//!
//! Registering and unregistering happen next to `mmap` and `munmap` and take a mutex for the
//! free-slot list. The handler never takes it: it scans the slots with atomic loads only,
//! allocates nothing, and so is async-signal-safe. Each slot is one `AtomicU64` packing the
//! page number of the guard's end, the guard size in pages and whether the guard belongs to a
//! slab, so the handler never sees a half-written entry.
//!
//! The guard of a slab lies below its padding page and its lowest stack, not directly below a
//! stack, so the entry's `lo` is the end of the guard rather than a stack's `lo`.

use std::sync::atomic::{AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};

use crate::sys::page_size;

/// Slots per chunk; chunks are allocated on demand and never freed.
const CHUNK_SLOTS: usize = 4096;
/// Maximum number of chunks. The registry has room for 4,194,304 guards, far more than the
/// 32,765 stacks that the default `vm.max_map_count` of 65,530 allows.
const MAX_CHUNKS: usize = 1024;
/// Low bits of a slot that hold the guard size in pages and the slab flag; the rest holds the
/// page number of `lo`.
const GUARD_BITS: u32 = 20;
/// The bit of a slot that marks the guard of a slab. Guard sizes stay below it:
/// `MAX_GUARD_SIZE` is 16,384 pages of 4 KiB.
const SLAB_FLAG: u64 = 1 << (GUARD_BITS - 1);

/// Chunk pointers. A chunk is published (Release) before any slot index inside it is handed
/// out, and the handler loads it with Acquire, so it sees the chunk's zeroed slots.
static CHUNKS: [AtomicPtr<AtomicU64>; MAX_CHUNKS] =
    [const { AtomicPtr::new(std::ptr::null_mut()) }; MAX_CHUNKS];

/// Number of slots ever handed out: the handler scans `0..SLOTS_USED`. Stored with Release
/// after the chunk holding the new slot is published; the handler loads it with Acquire.
static SLOTS_USED: AtomicUsize = AtomicUsize::new(0);

/// Indices of free slots below `SLOTS_USED`. Only `register` and `unregister` take the lock.
static FREE_SLOTS: Mutex<Vec<u32>> = Mutex::new(Vec::new());

/// A registered guard; unregister it before unmapping the stack.
#[derive(Debug)]
pub(crate) struct Slot(u32);

/// A guard found by [`find_guard`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct GuardEntry {
    /// End of the guard: the lowest usable address of a guarded stack, or the start of a slab's
    /// padding page.
    pub(crate) lo: usize,
    /// Guard size in bytes; the guard is `lo - guard_size..lo`.
    pub(crate) guard_size: usize,
    /// Whether the guard lies at the bottom of a slab rather than below one stack.
    pub(crate) slab: bool,
}

fn pack(entry: GuardEntry) -> Option<u64> {
    let shift = page_size().trailing_zeros();
    let page_number = (entry.lo >> shift) as u64;
    let guard_pages = (entry.guard_size >> shift) as u64;
    if guard_pages == 0 || guard_pages >= SLAB_FLAG || page_number >= 1 << (64 - GUARD_BITS) {
        return None;
    }
    let flag = if entry.slab { SLAB_FLAG } else { 0 };
    Some(page_number << GUARD_BITS | flag | guard_pages)
}

fn unpack(word: u64) -> GuardEntry {
    let shift = page_size().trailing_zeros();
    GuardEntry {
        lo: ((word >> GUARD_BITS) as usize) << shift,
        guard_size: ((word & (SLAB_FLAG - 1)) as usize) << shift,
        slab: word & SLAB_FLAG != 0,
    }
}

fn slot_word(index: usize) -> Option<&'static AtomicU64> {
    // Acquire pairs with the Release store that published the chunk in `claim_slot`.
    let chunk = CHUNKS[index / CHUNK_SLOTS].load(Ordering::Acquire);
    if chunk.is_null() {
        return None;
    }
    // SAFETY: a published chunk has CHUNK_SLOTS atomics and is never freed.
    Some(unsafe { &*chunk.add(index % CHUNK_SLOTS) })
}

/// Records the guard below the stack at `lo`. Returns `None` when the registry is full or the
/// address does not fit a slot. The fault handler then recognizes an overflow on this stack
/// only through the running g's header.
pub(crate) fn register(lo: usize, guard_size: usize) -> Option<Slot> {
    register_entry(GuardEntry {
        lo,
        guard_size,
        slab: false,
    })
}

/// Records the guard at the bottom of a slab, which ends at `guard_end`. Returns `None` as
/// [`register`] does.
pub(crate) fn register_slab(guard_end: usize, guard_size: usize) -> Option<Slot> {
    register_entry(GuardEntry {
        lo: guard_end,
        guard_size,
        slab: true,
    })
}

fn register_entry(entry: GuardEntry) -> Option<Slot> {
    let word = pack(entry)?;
    let index = claim_slot()?;
    let slot = slot_word(index).expect("claim_slot publishes the chunk of every slot it returns");
    // Release pairs with the handler's Acquire load in `find_guard`. The fault happens after
    // this store on the faulting thread, or after the hand-off that gave it the stack.
    slot.store(word, Ordering::Release);
    Some(Slot(index as u32))
}

/// Removes a guard recorded by [`register`]. Call it before unmapping the stack, so that the
/// handler never attributes a fault to a range that may have been mapped again for other use.
pub(crate) fn unregister(slot: Slot) {
    let index = slot.0 as usize;
    let word = slot_word(index).expect("a registered slot lies in a published chunk");
    // Release: orders the clearing before the munmap that follows, for the handler's Acquire.
    word.store(0, Ordering::Release);
    FREE_SLOTS
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(slot.0);
}

fn claim_slot() -> Option<usize> {
    let mut free = FREE_SLOTS.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(index) = free.pop() {
        return Some(index as usize);
    }
    // The lock serializes all writers of SLOTS_USED, so a relaxed read sees the latest value.
    let index = SLOTS_USED.load(Ordering::Relaxed);
    if index == CHUNK_SLOTS * MAX_CHUNKS {
        return None;
    }
    let chunk = &CHUNKS[index / CHUNK_SLOTS];
    if chunk.load(Ordering::Relaxed).is_null() {
        let slots: Box<[AtomicU64]> = (0..CHUNK_SLOTS).map(|_| AtomicU64::new(0)).collect();
        // Release: publishes the zeroed slots to the handler's Acquire load in `slot_word`.
        chunk.store(Box::leak(slots).as_mut_ptr(), Ordering::Release);
    }
    // Release: the handler that reads the new count (Acquire) also sees the chunk pointer.
    SLOTS_USED.store(index + 1, Ordering::Release);
    Some(index)
}

/// Returns the registered guard that contains `address`.
///
/// Async-signal-safe: atomic loads only, no locks, no allocation.
pub(crate) fn find_guard(address: usize) -> Option<GuardEntry> {
    // Acquire pairs with the Release store in `claim_slot`.
    let used = SLOTS_USED.load(Ordering::Acquire);
    for index in 0..used {
        let Some(slot) = slot_word(index) else {
            continue;
        };
        // Acquire pairs with the Release store in `register`.
        let word = slot.load(Ordering::Acquire);
        if word == 0 {
            continue;
        }
        let entry = unpack(word);
        if entry.lo - entry.guard_size <= address && address < entry.lo {
            return Some(entry);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pack_round_trips() {
        let page = page_size();
        let lo = 0x7fff_1234_5000 & !(page - 1);
        for slab in [false, true] {
            let entry = GuardEntry {
                lo,
                guard_size: 4 * page,
                slab,
            };
            let word = pack(entry).expect("address fits");
            assert_eq!(unpack(word), entry);
        }
    }

    #[test]
    fn pack_rejects_unrepresentable() {
        let page = page_size();
        let entry = |lo, guard_size| GuardEntry {
            lo,
            guard_size,
            slab: false,
        };
        assert_eq!(pack(entry(0x1000_0000, 0)), None, "empty guard");
        assert_eq!(
            pack(entry(0x1000_0000, page * SLAB_FLAG as usize)),
            None,
            "guard too large"
        );
        assert_eq!(
            pack(entry(usize::MAX & !(page - 1), page)),
            None,
            "address too high"
        );
    }

    #[test]
    fn find_guard_sees_registered_range() {
        let page = page_size();
        // The registry only stores numbers and nothing is mapped here, so any page-aligned
        // address will do. Each test of this module uses its own, far from the others.
        let lo = (1usize << 46) - 64 * page;
        let slot = register(lo, 2 * page).expect("registry has room");
        let expected = GuardEntry {
            lo,
            guard_size: 2 * page,
            slab: false,
        };
        assert_eq!(
            find_guard(lo - 2 * page),
            Some(expected),
            "lowest guard byte"
        );
        assert_eq!(find_guard(lo - 1), Some(expected), "highest guard byte");
        assert_eq!(find_guard(lo), None, "lowest usable byte");
        assert_eq!(find_guard(lo - 2 * page - 1), None, "byte below the guard");
        unregister(slot);
        assert_eq!(find_guard(lo - 1), None, "after unregister");

        let slot = register_slab(lo, page).expect("registry has room");
        let found = find_guard(lo - 1).expect("the slab guard");
        assert!(found.slab, "{found:?}");
        unregister(slot);
    }

    #[test]
    fn freed_slots_are_reused() {
        let page = page_size();
        let lo = (1usize << 45) - 256 * page;
        let before = SLOTS_USED.load(Ordering::Relaxed);
        for _ in 0..10_000 {
            let slot = register(lo, page).expect("registry has room");
            unregister(slot);
        }
        // Tests running in parallel register their own stacks, but far fewer than 10,000.
        let grown = SLOTS_USED.load(Ordering::Relaxed) - before;
        assert!(
            grown < 1000,
            "registry grew by {grown} slots over 10,000 register/unregister"
        );
    }
}
