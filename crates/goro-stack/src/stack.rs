//! One mmap'ed stack with a guard below it.

use std::fmt;
use std::ops::Range;
use std::sync::Weak;

use crate::error::StackError;
use crate::pool::PoolShared;
use crate::registry::{self, Slot};
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

/// A stack: one private anonymous mapping whose lowest pages are an inaccessible guard.
///
/// ```text
///   mapping start            lo                                     hi
///        │ guard (PROT_NONE)  │ usable (read/write), grows down  ◀── │
///        └────────────────────┴──────────────────────────────────────┘
/// ```
///
/// The usable range `lo..hi` is page-aligned and readable and writable from its first to its
/// last byte. A write that runs off its bottom hits the guard and faults, and the handler of
/// [`install_overflow_handler`](crate::install_overflow_handler) reports it. Dropping the stack
/// unmaps it. A `Stack` is `Send` (a suspended goroutine may resume on another thread), but not
/// `Clone`: it is the only owner of its memory.
pub struct Stack {
    /// Start of the mapping, which is the start of the guard.
    base: usize,
    guard_size: usize,
    size: usize,
    /// The guard's entry in the fault handler's registry; `None` when the registry was full.
    slot: Option<Slot>,
    /// The pool that mapped this stack, whose counter drops when the stack is unmapped. Weak, so
    /// that a pool's cache of stacks does not keep the pool alive.
    pub(crate) owner: Option<Weak<PoolShared>>,
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
        let base = sys::map_guarded(guard_size, size).map_err(|error| StackError::MapFailed {
            call: error.call,
            size,
            guard_size,
            errno: error.errno,
            map_count: sys::map_count_near_limit().filter(|_| error.errno == libc::ENOMEM),
        })?;
        let slot = registry::register(base + guard_size, guard_size);
        Ok(Stack {
            base,
            guard_size,
            size,
            slot,
            owner: None,
        })
    }

    /// Lowest usable address, just above the guard.
    pub fn lo(&self) -> usize {
        self.base + self.guard_size
    }

    /// One past the highest usable address, which is the initial stack pointer of a stack that
    /// grows down. It is page-aligned, so it meets the 16-byte alignment of every supported ABI.
    pub fn hi(&self) -> usize {
        self.lo() + self.size
    }

    /// Usable bytes, `hi() - lo()`; a multiple of the page size.
    pub fn size(&self) -> usize {
        self.size
    }

    /// The guard pages below the usable range; any access to them faults.
    pub fn guard(&self) -> Range<usize> {
        self.base..self.lo()
    }

    /// Guard size in bytes; a multiple of the page size.
    pub fn guard_size(&self) -> usize {
        self.guard_size
    }

    /// The whole mapping, guard included.
    pub fn mapping(&self) -> Range<usize> {
        self.base..self.hi()
    }

    /// Gives the memory of the stack back to the kernel, except for the top `keep_top` bytes
    /// (rounded up to pages), which stay resident for the next user.
    ///
    /// The discarded pages read as zeros afterwards and cost no memory until touched again.
    /// `keep_top` larger than the stack keeps all of it. Call it only on a stack that no code is
    /// running on or suspended on: its frames below the kept part are lost.
    pub fn release_memory(&mut self, keep_top: usize) {
        let keep = round_up_to_pages(keep_top)
            .unwrap_or(usize::MAX)
            .min(self.size);
        // SAFETY: lo..hi-keep is this stack's own usable memory, and `&mut self` (with the
        // documented condition that nothing runs on it) means its contents are dead.
        unsafe { sys::discard(self.lo(), self.size - keep) };
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            registry::unregister(slot);
        }
        if let Some(pool) = self.owner.as_ref().and_then(Weak::upgrade) {
            pool.note_unmapped();
        }
        // SAFETY: the mapping is this stack's own, and dropping the stack ends every use of it.
        unsafe { sys::unmap(self.base, self.guard_size + self.size) };
    }
}

impl fmt::Debug for Stack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Stack")
            .field("lo", &format_args!("{:#x}", self.lo()))
            .field("hi", &format_args!("{:#x}", self.hi()))
            .field("size", &self.size)
            .field("guard_size", &self.guard_size)
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
