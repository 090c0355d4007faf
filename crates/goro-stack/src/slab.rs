//! Slab mode: stacks carved from large mappings, with a canary below each stack instead of a
//! guard page.
//!
//! A guarded stack takes two entries of the kernel's mapping table, which caps a process at
//! about 32,000 of them under the default `vm.max_map_count`. A slab is one mapping of many
//! stacks (two entries: its guard and the rest), so a million stacks need a few thousand
//! entries.
//!
//! # Layout of a slab
//!
//! ```text
//!  base         base+guard       P0                    P1                    P2
//!   │ guard      │ padding  │ c0 │ frames of stack 0 │ c1 │ frames of stack 1 │ c2 │  ...
//!   └────────────┴──────────┴────┴───────────────────┴────┴───────────────────┴────┴──
//!    PROT_NONE    ◀─── page ───▶  ◀──── stack 0 = P0-C .. P1-C ────▶
//! ```
//!
//! The `Pi` are page boundaries, `span` apart. Stack `i` occupies `Pi - C .. Pi+1 - C`, where
//! `C` is [`CANARY_SIZE`]: its canary `ci` at `lo = Pi - C`, then its frames up to
//! `hi = Pi+1 - C`. The canary of stack `i` thus lies in the top page of stack `i - 1`, which
//! that stack touches anyway. A parked goroutine so commits one page for its frames and its
//! neighbour's canary, rather than a second page for its own canary. Stack 0 keeps its canary
//! in a padding page above the slab's guard. The last `C` bytes of the slab are unused.
//!
//! # Giving memory back
//!
//! A stack returned to its slab gives back every page it alone uses. Its top page also contains
//! the canary of the stack above, and the page below its frames contains its own canary and the
//! top of the stack below. Each of those two pages is given back only when the other stack
//! sharing it is free as well. The decisions and the `madvise` calls for those pages happen
//! under the arena's lock, so that a stack handed out at the same time never loses its fresh
//! canary. A slab whose stacks are all free is unmapped, except one, kept to absorb the next
//! burst.

use std::fmt;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Once, PoisonError};

use crate::error::StackError;
use crate::registry::{self, Slot};
use crate::stack::Stack;
use crate::sys::{self, page_size};

/// Bytes of the canary at the lowest address of a slab stack: eight 64-bit words, one cache
/// line on most CPUs.
pub const CANARY_SIZE: usize = 64;

const CANARY_WORDS: usize = CANARY_SIZE / size_of::<u64>();

/// Default of [`PoolConfig::slab_size`](crate::PoolConfig::slab_size): 64 MiB.
pub const DEFAULT_SLAB_SIZE: usize = 64 * 1024 * 1024;

/// Smallest slab size accepted, in bytes: 1 MiB.
pub const MIN_SLAB_SIZE: usize = 1024 * 1024;

/// Largest slab size accepted, in bytes: 16 GiB.
pub const MAX_SLAB_SIZE: usize = 16 * 1024 * 1024 * 1024;

/// The process's random canary secret. Each canary word is the secret XOR the word's address.
/// Stored once inside `SECRET_INIT`, before the first slab stack exists.
static SECRET: AtomicU64 = AtomicU64::new(0);
static SECRET_INIT: Once = Once::new();

/// Draws the canary secret unless that has happened.
fn init_secret() {
    SECRET_INIT.call_once(|| {
        // Relaxed: `call_once` orders this store before every return from `call_once`, and
        // every user of the secret got its slab stack from an arena that called it.
        SECRET.store(random_secret(), Ordering::Relaxed);
    });
}

/// Returns 64 random bits from `getrandom(2)`, or, where that fails, bits mixed from the clock
/// and from addresses that ASLR randomizes. Never zero.
fn random_secret() -> u64 {
    let mut bytes = [0u8; 8];
    loop {
        // SAFETY: the buffer is valid for writes of its length.
        let read = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
        if read == bytes.len() as isize {
            let secret = u64::from_ne_bytes(bytes);
            if secret != 0 {
                return secret;
            }
        } else if read < 0 && sys::last_errno() == libc::EINTR {
            continue;
        }
        break;
    }
    // getrandom exists since Linux 3.17; this fallback serves older kernels and sandboxes that
    // forbid it. The canary detects accidents, so it needs no cryptographic strength.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_nanos() as u64);
    let local = 0u8;
    let stack_address = std::ptr::from_ref(&local) as u64;
    let code_address = random_secret as fn() -> u64 as usize as u64;
    let mixed = nanos.rotate_left(17) ^ stack_address.rotate_left(41) ^ code_address;
    mixed | 1
}

/// Returns the value that the canary word at `address` contains while intact.
fn canary_word(secret: u64, address: usize) -> u64 {
    secret ^ address as u64
}

/// Writes the canary at `lo`.
///
/// # Safety
///
/// `lo..lo + CANARY_SIZE` must be writable memory of a slab stack that no code runs on.
unsafe fn write_canary(lo: usize) {
    // Relaxed: see `init_secret`; the arena called it before handing out this stack.
    let secret = SECRET.load(Ordering::Relaxed);
    for word in 0..CANARY_WORDS {
        let address = lo + word * size_of::<u64>();
        // SAFETY: the caller vouches for the range; `lo` is 64-byte aligned.
        unsafe { (address as *mut u64).write_volatile(canary_word(secret, address)) };
    }
}

/// Checks the canary of the slab stack `lo..hi`.
///
/// The canary words are read with volatile loads and compared all at once; only on a mismatch
/// does a second pass find the overwritten words.
///
/// # Safety
///
/// `lo..hi` must be a live slab stack, whose canary is readable.
pub(crate) unsafe fn check_canary(lo: usize, hi: usize) -> Result<(), CanaryOverflow> {
    // Relaxed: see `init_secret`; the stack came from an arena that called it.
    let secret = SECRET.load(Ordering::Relaxed);
    let read = |word: usize| {
        let address = lo + word * size_of::<u64>();
        // SAFETY: the caller vouches that the canary is readable.
        let value = unsafe { (address as *const u64).read_volatile() };
        (address, value)
    };
    let mut difference = 0;
    for word in 0..CANARY_WORDS {
        let (address, value) = read(word);
        difference |= value ^ canary_word(secret, address);
    }
    if difference == 0 {
        return Ok(());
    }
    Err(describe_overflow(lo, hi, secret, read))
}

#[cold]
fn describe_overflow(
    lo: usize,
    hi: usize,
    secret: u64,
    read: impl Fn(usize) -> (usize, u64),
) -> CanaryOverflow {
    let mut lowest = None;
    let mut overwritten_words = 0;
    for word in 0..CANARY_WORDS {
        let (address, value) = read(word);
        if value != canary_word(secret, address) {
            overwritten_words += 1;
            lowest.get_or_insert((address, value));
        }
    }
    let (lowest_address, lowest_value) = lowest.expect("a canary that differs has a bad word");
    CanaryOverflow {
        stack: lo..hi,
        overwritten_words,
        lowest_address,
        lowest_value,
    }
}

/// A slab stack's canary found overwritten: its goroutine overflowed the stack.
///
/// Returned by [`Stack::check_canary`](crate::Stack::check_canary). The frames that overflowed
/// ran into the top of the stack below, which another goroutine may be suspended on, so the
/// process cannot safely go on: [`CanaryOverflow::report_and_abort`] writes the report and
/// aborts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CanaryOverflow {
    stack: Range<usize>,
    overwritten_words: usize,
    lowest_address: usize,
    lowest_value: u64,
}

impl CanaryOverflow {
    /// Returns the overflowed stack, `lo..hi`.
    pub fn stack(&self) -> Range<usize> {
        self.stack.clone()
    }

    /// Returns the number of canary words that differ from their expected value, out of
    /// `CANARY_SIZE / 8`.
    pub fn overwritten_words(&self) -> usize {
        self.overwritten_words
    }

    /// Returns the address of the lowest overwritten canary word.
    pub fn lowest_address(&self) -> usize {
        self.lowest_address
    }

    /// Returns the value found in the lowest overwritten canary word.
    pub fn lowest_value(&self) -> u64 {
        self.lowest_value
    }

    /// Writes `goroutine <goid> overflowed its stack ...` to stderr and aborts the process
    /// (SIGABRT).
    ///
    /// The runtime calls it when [`Stack::check_canary`](crate::Stack::check_canary) fails at a
    /// switch back to g0, naming the goroutine that ran on the stack. It allocates nothing,
    /// since the overflow may have corrupted memory that the allocator uses.
    pub fn report_and_abort(&self, goid: u64) -> ! {
        crate::overflow::report_canary_and_abort(goid, self)
    }
}

impl CanaryOverflow {
    /// Returns the description that follows the report's opening words.
    pub(crate) fn details(&self) -> Details<'_> {
        Details(self)
    }
}

/// The body of a [`CanaryOverflow`]'s message, shared by its `Display` and the runtime's report.
pub(crate) struct Details<'a>(&'a CanaryOverflow);

impl fmt::Display for Details<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let overflow = self.0;
        write!(
            f,
            "stack {:#x}-{:#x} ({} bytes), {} of {} canary words overwritten, the lowest at {:#x} \
             with {:#x}; the top of the stack below {:#x} may be corrupt",
            overflow.stack.start,
            overflow.stack.end,
            overflow.stack.len(),
            overflow.overwritten_words,
            CANARY_WORDS,
            overflow.lowest_address,
            overflow.lowest_value,
            overflow.stack.start
        )
    }
}

impl fmt::Display for CanaryOverflow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "stack overflow detected by the canary: {}",
            self.details()
        )
    }
}

impl std::error::Error for CanaryOverflow {}

/// Returns the span of a slab stack for a validated request of `size` usable bytes: the size
/// plus the canary, rounded up to pages.
pub(crate) fn span_for(size: usize) -> usize {
    (size + CANARY_SIZE).next_multiple_of(page_size())
}

/// The slabs of one pool, shared by the pool and every stack carved from them.
///
/// Each stack owns an `Arc` of its arena, so the slabs outlive the pool while any stack is alive,
/// and a stack dropped anywhere goes back to its slab.
pub(crate) struct Arena {
    /// Bytes from one stack's `lo` to the next's; a multiple of the page size.
    span: usize,
    guard_size: usize,
    stacks_per_slab: u32,
    /// Bytes of one slab mapping: guard, padding page and stacks.
    slab_len: usize,
    state: Mutex<ArenaState>,
}

struct ArenaState {
    /// Slabs by id; `None` marks an id whose slab was unmapped.
    slabs: Vec<Option<Slab>>,
    /// Ids of `None` entries of `slabs`, for reuse.
    unused_ids: Vec<u32>,
    /// Ids of slabs with a stack to hand out; the last is used first.
    available: Vec<u32>,
    /// The one slab kept mapped while all its stacks are free.
    spare: Option<u32>,
    /// Number of `Some` entries of `slabs`.
    mapped_slabs: usize,
}

struct Slab {
    /// Start of the mapping, which is the start of the guard.
    base: usize,
    /// The guard's entry in the fault handler's registry; `None` when the registry was full.
    slot: Option<Slot>,
    /// One bit per stack, set while the stack is handed out (in use or in a pool's cache).
    out: Vec<u64>,
    out_count: u32,
    /// Stacks returned to the slab; the last is handed out first.
    free: Vec<u32>,
    /// Stacks `0..carved` have been handed out at least once; the rest were never touched.
    carved: u32,
    /// Whether the slab's id is in `ArenaState::available`.
    listed: bool,
}

impl Slab {
    fn is_out(&self, index: u32) -> bool {
        self.out[index as usize / 64] & (1 << (index % 64)) != 0
    }

    fn set_out(&mut self, index: u32, out: bool) {
        let bit = 1 << (index % 64);
        let word = &mut self.out[index as usize / 64];
        if out {
            *word |= bit;
        } else {
            *word &= !bit;
        }
    }

    fn has_free_stack(&self, stacks_per_slab: u32) -> bool {
        !self.free.is_empty() || self.carved < stacks_per_slab
    }
}

/// Address-space counters of an arena.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct ArenaStats {
    pub(crate) slabs: usize,
    pub(crate) slab_bytes: usize,
}

impl Arena {
    /// Creates an arena of stacks of `span` bytes (from [`span_for`]) in slabs of about
    /// `slab_size` bytes, each with a guard of `guard_size` bytes. All sizes are validated.
    pub(crate) fn new(span: usize, guard_size: usize, slab_size: usize) -> Arena {
        let page = page_size();
        let overhead = guard_size + page;
        let fitting = slab_size.saturating_sub(overhead) / span;
        let stacks_per_slab = fitting.clamp(1, u32::MAX as usize) as u32;
        Arena {
            span,
            guard_size,
            stacks_per_slab,
            slab_len: overhead + stacks_per_slab as usize * span,
            state: Mutex::new(ArenaState {
                slabs: Vec::new(),
                unused_ids: Vec::new(),
                available: Vec::new(),
                spare: None,
                mapped_slabs: 0,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, ArenaState> {
        // Each update of the state completes before anything that can panic, other than the
        // `expect`s that flag a broken invariant. The state therefore stays usable.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Number of stacks in each slab.
    pub(crate) fn stacks_per_slab(&self) -> usize {
        self.stacks_per_slab as usize
    }

    pub(crate) fn stats(&self) -> ArenaStats {
        let slabs = self.lock().mapped_slabs;
        ArenaStats {
            slabs,
            slab_bytes: slabs * self.slab_len,
        }
    }

    /// Returns the `lo` of stack `index` of a slab mapped at `base`.
    fn stack_lo(&self, base: usize, index: u32) -> usize {
        base + self.guard_size + page_size() + index as usize * self.span - CANARY_SIZE
    }

    /// Hands out a stack with a fresh canary, mapping a new slab when every slab is full.
    ///
    /// # Errors
    ///
    /// [`StackError::SlabMapFailed`] when the new slab cannot be mapped.
    pub(crate) fn allocate(self: &Arc<Self>) -> Result<Stack, StackError> {
        init_secret();
        let (lo, slab_id, index) = {
            let mut state = self.lock();
            let slab_id = match state.available.last() {
                Some(&id) => id,
                None => self.map_slab(&mut state)?,
            };
            if state.spare == Some(slab_id) {
                state.spare = None;
            }
            let stacks_per_slab = self.stacks_per_slab;
            let slab = state.slabs[slab_id as usize]
                .as_mut()
                .expect("an available slab is mapped");
            let index = match slab.free.pop() {
                Some(index) => index,
                None => {
                    slab.carved += 1;
                    slab.carved - 1
                }
            };
            slab.set_out(index, true);
            slab.out_count += 1;
            let base = slab.base;
            if !slab.has_free_stack(stacks_per_slab) {
                slab.listed = false;
                let popped = state.available.pop();
                debug_assert_eq!(popped, Some(slab_id));
            }
            (self.stack_lo(base, index), slab_id, index)
        };
        // Outside the lock: the stack is marked out, so no other thread discards the page that
        // contains its canary from now on, and every earlier discard of it has completed under
        // the lock.
        // SAFETY: the canary lies in the slab's read-write part, on a stack no code runs on.
        unsafe { write_canary(lo) };
        let size = self.span;
        Ok(Stack::from_slab(lo, size, Arc::clone(self), slab_id, index))
    }

    /// Maps a new slab, lists it as available and returns its id.
    fn map_slab(&self, state: &mut ArenaState) -> Result<u32, StackError> {
        let usable = self.slab_len - self.guard_size;
        let base = sys::map_stack_memory(self.guard_size, usable).map_err(|error| {
            StackError::SlabMapFailed {
                call: error.call,
                slab_size: self.slab_len,
                stacks: self.stacks_per_slab as usize,
                stack_size: self.span,
                errno: error.errno,
                map_count: error.map_count(),
            }
        })?;
        // SAFETY: the range is the read-write part of the mapping created above.
        unsafe { sys::disable_huge_pages(base + self.guard_size, usable) };
        let slot = registry::register_slab(base + self.guard_size, self.guard_size);
        let slab = Slab {
            base,
            slot,
            out: vec![0; (self.stacks_per_slab as usize).div_ceil(64)],
            out_count: 0,
            free: Vec::new(),
            carved: 0,
            listed: true,
        };
        let id = match state.unused_ids.pop() {
            Some(id) => {
                state.slabs[id as usize] = Some(slab);
                id
            }
            None => {
                state.slabs.push(Some(slab));
                u32::try_from(state.slabs.len() - 1).expect("fewer than 2^32 slabs")
            }
        };
        state.available.push(id);
        state.mapped_slabs += 1;
        Ok(id)
    }

    /// Takes back stack `index` of slab `slab_id`, whose `lo` is `lo`, and gives its memory
    /// back to the kernel. Called by `Stack::drop`.
    pub(crate) fn release(&self, slab_id: u32, index: u32, lo: usize) {
        let page = page_size();
        let frames_start = lo + CANARY_SIZE;
        let top_page = frames_start + self.span - page;
        // The pages between the canary's page and the top page belong to this stack alone, and
        // it stays marked out until the lock below, so nothing else touches them meanwhile.
        // SAFETY: the range is this stack's own memory, and the dropped stack runs no code.
        unsafe { sys::discard(frames_start, top_page - frames_start) };

        let mut state = self.lock();
        let stacks_per_slab = self.stacks_per_slab;
        let slab = state.slabs[slab_id as usize]
            .as_mut()
            .expect("a slab with a live stack is mapped");
        debug_assert!(
            slab.is_out(index),
            "stack {index} of slab {slab_id} returned twice"
        );

        let above_out = index + 1 < stacks_per_slab && slab.is_out(index + 1);
        if !above_out {
            // SAFETY: the top page contains this stack's dead frames and no live canary.
            unsafe { sys::discard(top_page, page) };
        }
        let below_out = index > 0 && slab.is_out(index - 1);
        if !below_out {
            // SAFETY: the page below the frames contains this stack's canary and the dead top
            // of a free stack below, or the slab's padding.
            unsafe { sys::discard(frames_start - page, page) };
        }

        slab.set_out(index, false);
        slab.out_count -= 1;
        slab.free.push(index);
        let newly_available = !slab.listed;
        slab.listed = true;
        let empty = slab.out_count == 0;
        if newly_available {
            state.available.push(slab_id);
        }
        if empty {
            self.retire_empty_slab(&mut state, slab_id);
        }
    }

    /// Keeps an empty slab as the spare, or unmaps it when there is a spare already.
    fn retire_empty_slab(&self, state: &mut ArenaState, slab_id: u32) {
        if state.spare.is_none() {
            state.spare = Some(slab_id);
            return;
        }
        let slab = state.slabs[slab_id as usize]
            .take()
            .expect("an empty slab is mapped");
        state.available.retain(|&id| id != slab_id);
        state.unused_ids.push(slab_id);
        state.mapped_slabs -= 1;
        self.unmap_slab(slab);
    }

    fn unmap_slab(&self, slab: Slab) {
        if let Some(slot) = slab.slot {
            registry::unregister(slot);
        }
        // SAFETY: no stack of the slab is out, so nothing uses the mapping any more.
        unsafe { sys::unmap_stack_memory(slab.base, self.slab_len) };
    }
}

impl Drop for Arena {
    fn drop(&mut self) {
        // Every stack owns an Arc of the arena, so none is out now.
        let state = self.state.get_mut().unwrap_or_else(PoisonError::into_inner);
        let slabs = std::mem::take(&mut state.slabs);
        for slab in slabs.into_iter().flatten() {
            self.unmap_slab(slab);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arena(stack_size: usize, slab_size: usize) -> Arc<Arena> {
        Arc::new(Arena::new(span_for(stack_size), page_size(), slab_size))
    }

    fn read(address: usize) -> u64 {
        // SAFETY: the tests read only addresses inside slab stacks they hold.
        unsafe { (address as *const u64).read_volatile() }
    }

    #[test]
    fn span_adds_canary_and_rounds() {
        let page = page_size();
        assert_eq!(
            span_for(16 * 1024),
            (16 * 1024 + CANARY_SIZE).next_multiple_of(page)
        );
        assert!(span_for(16 * 1024) - CANARY_SIZE >= 16 * 1024);
        assert_eq!(span_for(page * 3) % page, 0);
    }

    #[test]
    fn slab_fits_requested_size() {
        let page = page_size();
        let arena = arena(16 * 1024, MIN_SLAB_SIZE);
        let expected = (MIN_SLAB_SIZE - 2 * page) / span_for(16 * 1024);
        assert_eq!(arena.stacks_per_slab(), expected);
        assert!(arena.slab_len <= MIN_SLAB_SIZE);

        let huge = Arena::new(span_for(64 * 1024 * 1024), page, MIN_SLAB_SIZE);
        assert_eq!(huge.stacks_per_slab(), 1, "a slab holds at least one stack");
    }

    #[test]
    fn stacks_are_adjacent_and_aligned() {
        let arena = arena(16 * 1024, MIN_SLAB_SIZE);
        let first = arena.allocate().expect("allocate");
        let second = arena.allocate().expect("allocate");
        assert_eq!(
            first.hi(),
            second.lo(),
            "stacks of a fresh slab are adjacent"
        );
        assert_eq!(first.lo() % CANARY_SIZE, 0);
        assert_eq!(first.hi() % 16, 0, "hi meets the ABIs' 16-byte alignment");
        assert_eq!((first.lo() + CANARY_SIZE) % page_size(), 0);
        assert_eq!(arena.stats().slabs, 1);
    }

    #[test]
    fn canary_holds_secret_xor_address() {
        let arena = arena(16 * 1024, MIN_SLAB_SIZE);
        let stack = arena.allocate().expect("allocate");
        let secret = SECRET.load(Ordering::Relaxed);
        assert_ne!(secret, 0);
        for word in 0..CANARY_WORDS {
            let address = stack.lo() + 8 * word;
            assert_eq!(read(address), secret ^ address as u64, "word {word}");
        }
        assert_eq!(stack.check_canary(), Ok(()));
    }

    #[test]
    fn overwritten_canary_is_described() {
        let arena = arena(16 * 1024, MIN_SLAB_SIZE);
        let stack = arena.allocate().expect("allocate");
        for word in [5, 2] {
            let address = stack.lo() + 8 * word;
            // SAFETY: the word is part of the canary of a stack the test holds.
            unsafe { (address as *mut u64).write_volatile(0) };
        }
        let overflow = stack
            .check_canary()
            .expect_err("the canary was overwritten");
        assert_eq!(overflow.stack(), stack.lo()..stack.hi());
        assert_eq!(overflow.overwritten_words(), 2);
        assert_eq!(overflow.lowest_address(), stack.lo() + 16);
        assert_eq!(overflow.lowest_value(), 0);
        let message = overflow.to_string();
        assert!(message.contains("2 of 8 canary words"), "{message}");
        assert!(
            message.contains(&format!("the lowest at {:#x} with 0x0", stack.lo() + 16)),
            "{message}"
        );
    }

    #[test]
    fn full_slab_maps_another() {
        let arena = arena(512 * 1024, MIN_SLAB_SIZE);
        let per_slab = arena.stacks_per_slab();
        let stacks: Vec<Stack> = (0..per_slab + 1)
            .map(|_| arena.allocate().expect("allocate"))
            .collect();
        assert_eq!(arena.stats().slabs, 2);
        assert_eq!(arena.stats().slab_bytes, 2 * arena.slab_len);
        drop(stacks);
        // One empty slab stays as the spare; the other is unmapped.
        assert_eq!(arena.stats().slabs, 1);
    }

    #[test]
    fn released_stack_is_reused_with_fresh_canary() {
        let arena = arena(16 * 1024, MIN_SLAB_SIZE);
        let keep = arena.allocate().expect("allocate");
        let stack = arena.allocate().expect("allocate");
        let lo = stack.lo();
        // SAFETY: the canary belongs to a stack the test holds.
        unsafe { (lo as *mut u64).write_volatile(7) };
        drop(stack);
        let again = arena.allocate().expect("allocate");
        assert_eq!(again.lo(), lo, "the freed stack was not reused first");
        assert_eq!(again.check_canary(), Ok(()));
        drop(keep);
    }

    #[test]
    fn release_keeps_neighbours_canaries() {
        let page = page_size();
        let arena = arena(16 * 1024, MIN_SLAB_SIZE);
        let below = arena.allocate().expect("allocate");
        let middle = arena.allocate().expect("allocate");
        let above = arena.allocate().expect("allocate");
        let fill = |stack: &Stack| {
            // SAFETY: the frames belong to a stack the test holds and no code runs on.
            unsafe {
                std::ptr::write_bytes(
                    (stack.lo() + CANARY_SIZE) as *mut u8,
                    0xa5,
                    stack.size() - CANARY_SIZE,
                )
            };
        };
        fill(&below);
        fill(&middle);
        let frames_start = middle.lo() + CANARY_SIZE;
        let top_page = middle.hi() + CANARY_SIZE - page;
        let pattern = u64::from_ne_bytes([0xa5; 8]);

        drop(middle);
        assert_eq!(
            above.check_canary(),
            Ok(()),
            "the stack above lost its canary"
        );
        assert_eq!(below.check_canary(), Ok(()));
        assert_eq!(
            read(below.hi() - 8),
            pattern,
            "the stack below lost its top"
        );
        assert_eq!(read(frames_start), 0, "the lowest own page was kept");
        assert_eq!(
            read(top_page - 8),
            0,
            "the page below the top page was kept"
        );
        assert_eq!(
            read(top_page),
            pattern,
            "the top page, holding the canary above, was given back"
        );

        drop(above);
        assert_eq!(
            read(top_page),
            0,
            "the top page was kept after the stack above left"
        );
        drop(below);
    }
}
