//! One goroutine stack: its own mapping with a guard, or a slice of a slab with a canary.

use std::fmt;
use std::ops::Range;
use std::sync::{Arc, Weak};

use crate::error::StackError;
use crate::pool::PoolShared;
use crate::registry::{self, Slot};
use crate::slab::{self, Arena, CANARY_SIZE, CanaryOverflow};
use crate::sys::{self, page_size, round_up_to_pages};
use crate::{DEFAULT_GUARD_SIZE, MAX_GUARD_SIZE, MAX_STACK_SIZE, MIN_STACK_SIZE};

/// Checks a requested usable stack size and rounds it up to whole pages.
///
/// Sizes outside [`MIN_STACK_SIZE`]`..=`[`MAX_STACK_SIZE`] are rejected with
/// [`StackError::InvalidSize`]. A runtime can call this when it validates its configuration, so
/// that a bad size fails at build time rather than at the first spawn.
pub fn validate_stack_size(size: usize) -> Result<usize, StackError> {
    if !(MIN_STACK_SIZE..=MAX_STACK_SIZE).contains(&size) {
        return Err(StackError::InvalidSize {
            size,
            min: MIN_STACK_SIZE,
            max: MAX_STACK_SIZE,
        });
    }
    // MAX_STACK_SIZE is a multiple of every page size Linux supports, so this cannot overflow.
    Ok(round_up_to_pages(size).expect("a size up to MAX_STACK_SIZE rounds without overflow"))
}

/// Checks a requested guard size and rounds it up to whole pages.
///
/// Sizes of zero or above [`MAX_GUARD_SIZE`] are rejected with [`StackError::InvalidGuardSize`];
/// anything else becomes at least one page.
pub fn validate_guard_size(size: usize) -> Result<usize, StackError> {
    if size == 0 || size > MAX_GUARD_SIZE {
        return Err(StackError::InvalidGuardSize {
            size,
            min: page_size(),
            max: MAX_GUARD_SIZE,
        });
    }
    Ok(round_up_to_pages(size).expect("a size up to MAX_GUARD_SIZE rounds without overflow"))
}

/// The kind of stacks that a [`StackPool`](crate::StackPool) hands out.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum StackMode {
    /// Each stack is its own mapping with guard pages below it: an overflow faults at once,
    /// but every stack takes two entries of the kernel's mapping table.
    #[default]
    Guarded,
    /// Stacks are carved from large mappings (slabs) and carry a canary at their lowest
    /// address, which [`Stack::check_canary`] inspects. Only each slab has a guard. Suits
    /// hundreds of thousands of stacks; see the crate docs for what the canary misses.
    Slab,
}

/// A goroutine stack: either its own mapping with a guard below it, or a slice of a slab with a
/// canary at its lowest address ([`StackMode`]).
///
/// A guarded stack:
///
/// ```text
///   mapping start            lo                                     hi
///        │ guard (PROT_NONE)  │ usable (read/write), grows down  ◀── │
///        └────────────────────┴──────────────────────────────────────┘
/// ```
///
/// A slab stack:
///
/// ```text
///                             lo                                     hi
///   ... top of stack below    │ canary │ frames, grow down      ◀──  │ canary of stack above ...
///                             └────────┴─────────────────────────────┘
/// ```
///
/// The range `lo..hi` is readable and writable from its first to its last byte. Below a guarded
/// stack lies its guard, so a write that runs off its bottom faults, and the handler of
/// [`install_overflow_handler`](crate::install_overflow_handler) reports it. A slab stack's
/// lowest [`CANARY_SIZE`](crate::CANARY_SIZE) bytes hold its canary, and below it lies the top of
/// another stack of the slab. Dropping a guarded stack unmaps it; dropping a slab stack returns
/// it to its slab. A `Stack` is `Send` (a suspended goroutine may resume on another thread), but
/// not `Clone`: it is the only owner of its memory.
pub struct Stack {
    /// Lowest usable address: above the guard, or the canary's address.
    lo: usize,
    /// `hi - lo`.
    size: usize,
    memory: Memory,
    /// The pool that handed out this stack, whose counter drops when the stack is unmapped or
    /// returned to its slab. Weak, so that a pool's cache of stacks does not keep the pool
    /// alive.
    pub(crate) owner: Option<Weak<PoolShared>>,
}

/// The source of a stack's memory, which decides how the memory is given back.
enum Memory {
    /// A mapping of its own: `lo - guard_size..lo + size`.
    Mapping {
        guard_size: usize,
        /// The guard's entry in the fault handler's registry; `None` when the registry was
        /// full.
        slot: Option<Slot>,
    },
    /// Stack `index` of slab `slab` of `arena`.
    Slab {
        arena: Arc<Arena>,
        slab: u32,
        index: u32,
    },
}

impl Stack {
    /// Maps a stack with `size` usable bytes (rounded up to pages) and a guard of
    /// [`DEFAULT_GUARD_SIZE`].
    ///
    /// # Errors
    ///
    /// [`StackError::InvalidSize`] for a size outside [`MIN_STACK_SIZE`]`..=`[`MAX_STACK_SIZE`];
    /// [`StackError::MapFailed`] when the kernel refuses the mapping, naming
    /// `vm.max_map_count` when the mapping table is nearly full.
    pub fn new(size: usize) -> Result<Stack, StackError> {
        Stack::with_guard(size, DEFAULT_GUARD_SIZE)
    }

    /// Maps a stack with `size` usable bytes and a guard of `guard_size` bytes, both rounded up
    /// to pages.
    ///
    /// A larger guard catches code that moves the stack pointer by more than a page at once
    /// without probing each page (C compiled without `-fstack-clash-protection`, for example).
    /// It costs address space only.
    ///
    /// # Errors
    ///
    /// As [`Stack::new`], plus [`StackError::InvalidGuardSize`] for a guard of zero bytes or
    /// above [`MAX_GUARD_SIZE`].
    pub fn with_guard(size: usize, guard_size: usize) -> Result<Stack, StackError> {
        let size = validate_stack_size(size)?;
        let guard_size = validate_guard_size(guard_size)?;
        Stack::map(size, guard_size)
    }

    /// Maps a stack of already validated sizes.
    pub(crate) fn map(size: usize, guard_size: usize) -> Result<Stack, StackError> {
        let base =
            sys::map_stack_memory(guard_size, size).map_err(|error| StackError::MapFailed {
                call: error.call,
                size,
                guard_size,
                errno: error.errno,
                map_count: error.map_count(),
            })?;
        let lo = base + guard_size;
        let slot = registry::register(lo, guard_size);
        Ok(Stack {
            lo,
            size,
            memory: Memory::Mapping { guard_size, slot },
            owner: None,
        })
    }

    /// Wraps stack `index` of slab `slab`, whose canary the arena has written.
    pub(crate) fn from_slab(
        lo: usize,
        size: usize,
        arena: Arc<Arena>,
        slab: u32,
        index: u32,
    ) -> Stack {
        Stack {
            lo,
            size,
            memory: Memory::Slab { arena, slab, index },
            owner: None,
        }
    }

    /// Lowest usable address. It lies just above the guard of a guarded stack, and it is the
    /// address of the canary of a slab stack.
    pub fn lo(&self) -> usize {
        self.lo
    }

    /// One past the highest usable address, which is the initial stack pointer of a stack that
    /// grows down. It is page-aligned for a guarded stack and
    /// [`CANARY_SIZE`](crate::CANARY_SIZE) bytes below a page boundary for a slab stack, so it
    /// meets the 16-byte alignment of every supported ABI.
    pub fn hi(&self) -> usize {
        self.lo + self.size
    }

    /// Usable bytes, `hi() - lo()`; a multiple of the page size. The usable bytes of a slab
    /// stack include its canary and are at least the requested size plus
    /// [`CANARY_SIZE`](crate::CANARY_SIZE).
    pub fn size(&self) -> usize {
        self.size
    }

    /// Returns the kind of this stack.
    pub fn mode(&self) -> StackMode {
        match self.memory {
            Memory::Mapping { .. } => StackMode::Guarded,
            Memory::Slab { .. } => StackMode::Slab,
        }
    }

    /// The guard pages below the usable range; any access to them faults. Empty, at `lo`, for a
    /// slab stack, which has no guard of its own.
    pub fn guard(&self) -> Range<usize> {
        self.lo - self.guard_size()..self.lo
    }

    /// Guard size in bytes; a multiple of the page size, and 0 for a slab stack.
    pub fn guard_size(&self) -> usize {
        match self.memory {
            Memory::Mapping { guard_size, .. } => guard_size,
            Memory::Slab { .. } => 0,
        }
    }

    /// The memory the stack occupies: its whole mapping, guard included, or a slab stack's
    /// slice `lo..hi` of its slab.
    pub fn mapping(&self) -> Range<usize> {
        self.guard().start..self.hi()
    }

    /// Returns the canary of a slab stack, `lo..lo + CANARY_SIZE`, or `None` for a guarded
    /// stack.
    pub fn canary(&self) -> Option<Range<usize>> {
        match self.memory {
            Memory::Mapping { .. } => None,
            Memory::Slab { .. } => Some(self.lo..self.lo + CANARY_SIZE),
        }
    }

    /// Checks that the stack's canary is intact; always `Ok` for a guarded stack.
    ///
    /// The runtime calls it at every switch from a goroutine back to g0, on the stack the
    /// goroutine ran on, and on an error calls [`CanaryOverflow::report_and_abort`] with the
    /// goroutine's id. A check reads one cache line (eight words) at `lo` and compares it with
    /// values derived from the process's secret. That line lies in the top page of the stack
    /// below, so the read may miss the cache and the TLB.
    ///
    /// NOTE: the canary catches only frames that write into it. A frame that jumps over it and
    /// writes into the stack below without touching it goes unnoticed, and so does damage done
    /// between two checks: until the goroutine switches, it may corrupt the stack below, and
    /// code that runs meanwhile on that memory may misbehave first.
    ///
    /// # Errors
    ///
    /// [`CanaryOverflow`] when any canary word differs from its expected value.
    #[inline]
    pub fn check_canary(&self) -> Result<(), CanaryOverflow> {
        match self.memory {
            Memory::Mapping { .. } => Ok(()),
            // SAFETY: the stack is live, and its canary lies in its slab's read-write part.
            Memory::Slab { .. } => unsafe { slab::check_canary(self.lo, self.hi()) },
        }
    }

    /// Gives the memory of the stack back to the kernel, except for the pages that hold the top
    /// `keep_top` bytes, which stay resident for the next user.
    ///
    /// The discarded pages read as zeros afterwards and cost no memory until touched again.
    /// `keep_top` larger than the stack keeps all of it. A slab stack always keeps its top page,
    /// which also contains the canary of the stack above. It also keeps the page of its own
    /// canary, which contains the top of the stack below. Call it only on a stack that no code is
    /// running on or suspended on: its frames below the kept part are lost.
    pub fn release_memory(&mut self, keep_top: usize) {
        let page = page_size();
        let (frames_start, keep_start) = match self.memory {
            Memory::Mapping { .. } => (self.lo, self.hi().saturating_sub(keep_top)),
            Memory::Slab { .. } => {
                let top_page = self.hi() + CANARY_SIZE - page;
                let keep_start = self.hi().saturating_sub(keep_top).min(top_page);
                (self.lo + CANARY_SIZE, keep_start)
            }
        };
        let keep_start = (keep_start & !(page - 1)).max(frames_start);
        // SAFETY: frames_start..keep_start lies in this stack's own pages (for a slab stack,
        // between the page of its canary and its top page), and `&mut self` with the
        // documented condition that nothing runs on it means the contents are dead.
        unsafe { sys::discard(frames_start, keep_start - frames_start) };
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        if let Some(pool) = self.owner.as_ref().and_then(Weak::upgrade) {
            pool.note_unmapped();
        }
        match &mut self.memory {
            Memory::Mapping { guard_size, slot } => {
                if let Some(slot) = slot.take() {
                    registry::unregister(slot);
                }
                let base = self.lo - *guard_size;
                // SAFETY: the mapping is this stack's own, and dropping the stack ends every
                // use of it.
                unsafe { sys::unmap_stack_memory(base, *guard_size + self.size) };
            }
            Memory::Slab { arena, slab, index } => arena.release(*slab, *index, self.lo),
        }
    }
}

impl fmt::Debug for Stack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Stack")
            .field("mode", &self.mode())
            .field("lo", &format_args!("{:#x}", self.lo()))
            .field("hi", &format_args!("{:#x}", self.hi()))
            .field("size", &self.size)
            .field("guard_size", &self.guard_size())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_invalid_size(size: usize) {
        match Stack::new(size) {
            Err(StackError::InvalidSize {
                size: reported,
                min,
                max,
            }) => {
                assert_eq!(reported, size);
                assert_eq!(min, MIN_STACK_SIZE);
                assert_eq!(max, MAX_STACK_SIZE);
            }
            other => panic!("Stack::new({size}) returned {other:?}, expected InvalidSize"),
        }
    }

    #[test]
    fn new_rejects_out_of_range() {
        assert_invalid_size(0);
        assert_invalid_size(1);
        assert_invalid_size(MIN_STACK_SIZE - 1);
        assert_invalid_size(MAX_STACK_SIZE + 1);
        assert_invalid_size(usize::MAX);
    }

    #[test]
    fn invalid_size_message_names_range() {
        let message = Stack::new(MIN_STACK_SIZE - 1).unwrap_err().to_string();
        assert!(
            message.contains(&(MIN_STACK_SIZE - 1).to_string()),
            "{message}"
        );
        assert!(message.contains(&MIN_STACK_SIZE.to_string()), "{message}");
        assert!(message.contains(&MAX_STACK_SIZE.to_string()), "{message}");
    }

    #[test]
    fn size_rounds_up_to_pages() {
        let page = page_size();
        for requested in [
            MIN_STACK_SIZE,
            MIN_STACK_SIZE + 1,
            MIN_STACK_SIZE + page - 1,
        ] {
            let stack = Stack::new(requested).expect("valid size");
            assert_eq!(stack.size() % page, 0, "size of a {requested}-byte request");
            assert!(stack.size() >= requested, "{} < {requested}", stack.size());
            assert!(
                stack.size() < requested + page,
                "{} rounded too far",
                stack.size()
            );
            assert_eq!(stack.hi() - stack.lo(), stack.size());
        }
    }

    #[test]
    fn bounds_are_page_aligned() {
        let page = page_size();
        let stack = Stack::with_guard(MIN_STACK_SIZE, 1).expect("valid sizes");
        assert_eq!(stack.lo() % page, 0);
        assert_eq!(stack.hi() % page, 0);
        assert_eq!(
            stack.guard_size(),
            page,
            "a 1-byte guard rounds to one page"
        );
        assert_eq!(stack.guard(), stack.lo() - page..stack.lo());
        assert_eq!(stack.mapping(), stack.guard().start..stack.hi());
    }

    #[test]
    fn guard_size_is_validated() {
        let Err(StackError::InvalidGuardSize { size, max, .. }) =
            Stack::with_guard(MIN_STACK_SIZE, 0)
        else {
            panic!("a zero guard was accepted");
        };
        assert_eq!((size, max), (0, MAX_GUARD_SIZE));
        let too_big = MAX_GUARD_SIZE + 1;
        assert!(matches!(
            Stack::with_guard(MIN_STACK_SIZE, too_big),
            Err(StackError::InvalidGuardSize { size, .. }) if size == too_big
        ));
    }

    #[test]
    fn usable_range_is_writable() {
        let page = page_size();
        let stack = Stack::new(64 * 1024).expect("valid size");
        // Write the first and last byte of every page, then read them all back.
        for page_start in (stack.lo()..stack.hi()).step_by(page) {
            for address in [page_start, page_start + page - 1] {
                // SAFETY: the address lies in the stack's usable range.
                unsafe { std::ptr::write_volatile(address as *mut u8, (address >> 12) as u8) };
            }
        }
        for page_start in (stack.lo()..stack.hi()).step_by(page) {
            for address in [page_start, page_start + page - 1] {
                // SAFETY: as above.
                let value = unsafe { std::ptr::read_volatile(address as *const u8) };
                assert_eq!(value, (address >> 12) as u8, "byte at {address:#x}");
            }
        }
    }

    #[test]
    fn release_memory_keeps_top() {
        let page = page_size();
        let mut stack = Stack::new(16 * page.max(4096)).expect("valid size");
        let fill = |stack: &Stack| {
            // SAFETY: the whole usable range belongs to the stack and nothing runs on it.
            unsafe { std::ptr::write_bytes(stack.lo() as *mut u8, 0xa5, stack.size()) };
        };
        fill(&stack);
        stack.release_memory(2 * page - 1);
        let read = |address: usize| {
            // SAFETY: the address lies in the stack's usable range.
            unsafe { std::ptr::read_volatile(address as *const u8) }
        };
        assert_eq!(read(stack.lo()), 0, "lowest byte was kept");
        assert_eq!(
            read(stack.hi() - 2 * page - 1),
            0,
            "byte below the kept pages was kept"
        );
        assert_eq!(
            read(stack.hi() - 2 * page),
            0xa5,
            "lowest kept byte was discarded"
        );
        assert_eq!(read(stack.hi() - 1), 0xa5, "highest byte was discarded");

        fill(&stack);
        stack.release_memory(usize::MAX);
        assert_eq!(
            read(stack.lo()),
            0xa5,
            "keeping more than the stack discarded memory"
        );
    }
}
