//! A bounded pool of same-sized stacks with a global cache and per-M local caches.
//!
//! ```text
//!   M 1: LocalCache ─┐                          ┌─▶ get: mmap a new stack when both are empty
//!   M 2: LocalCache ─┼─ batches ─▶ global cache ┤
//!   M n: LocalCache ─┘  (mutex)    ≤ max_cached └─▶ put: munmap the stacks beyond the bound
//! ```
//!
//! The hot path is [`LocalCache::get`] and [`LocalCache::put`]: a push or pop on a vector owned
//! by one M, with no system call and no shared lock. A local cache moves half its capacity at
//! a time to or from the global cache, so the mutex is taken once per batch.
//!
//! The global cache has two tiers. The first [`PoolConfig::max_resident_cached`] stacks that
//! enter it keep their memory, so stacks that only pass through (one M's goroutines exit,
//! another M spawns) cost no system call at all. A stack beyond that tier gives its memory
//! back to the kernel except for the top [`PoolConfig::keep_resident`] bytes, where a new
//! goroutine's first frames land. `get` takes resident stacks first. [`StackPool::get`] and
//! [`StackPool::put`] use the global cache directly, for callers that have no M. They take
//! the lock at every call, and a put that finds the resident tier full costs a `madvise`.
//!
//! The pool hands out stacks of one [`StackMode`]. Guarded stacks are mapped and unmapped one
//! by one. Slab stacks come from the pool's slabs, and a stack that leaves the pool (beyond the
//! cache's bound, or dropped anywhere) goes back to its slab instead of being unmapped.
//!
//! The explicit `LocalCache` object was chosen over a hidden thread-local cache because the
//! runtime already keeps per-M state, and an object's lifetime is visible: dropping it returns
//! its stacks, where a thread-local cache would keep them until its thread exits.

use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crossbeam_utils::CachePadded;

use crate::DEFAULT_GUARD_SIZE;
use crate::error::StackError;
use crate::slab::{self, Arena, DEFAULT_SLAB_SIZE, MAX_SLAB_SIZE, MIN_SLAB_SIZE};
use crate::stack::{Stack, StackMode, validate_guard_size, validate_stack_size};
use crate::sys::round_up_to_pages;

/// Stacks that a new [`LocalCache`] reserves room for up front. A cache with a larger
/// [`PoolConfig::local_capacity`] grows its vectors as it fills, so that a capacity such as
/// `usize::MAX`, meant as unbounded, does not try to allocate room for that many stacks.
const LOCAL_RESERVE_LIMIT: usize = 1024;

/// Settings of a [`StackPool`] other than its stack size.
///
/// ```
/// use goro_stack::PoolConfig;
///
/// let config = PoolConfig::new().max_cached(256).local_capacity(8);
/// assert_eq!(config.max_cached_stacks(), 256);
///
/// // For hundreds of thousands of goroutines: stacks carved from 64 MiB slabs.
/// let many = PoolConfig::slab();
/// assert_eq!(many.stack_mode(), goro_stack::StackMode::Slab);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolConfig {
    mode: StackMode,
    guard_size: usize,
    max_cached: usize,
    max_resident_cached: usize,
    local_capacity: usize,
    keep_resident: usize,
    slab_size: usize,
}

impl PoolConfig {
    /// Default of [`PoolConfig::max_cached`]: stacks kept in the global cache. A burst of exits
    /// (goroutines spawned faster than they ran) lands here, and every stack beyond the bound
    /// costs an `munmap` now and an `mmap` and `mprotect` at a later spawn. The cached stacks
    /// take two entries each of the kernel's mapping table, 2,048 in all.
    pub const DEFAULT_MAX_CACHED: usize = 1024;
    /// Default of [`PoolConfig::max_resident_cached`]: stacks of the global cache that keep
    /// their memory. Up to `128 * stack size` bytes (32 MiB with 256 KiB stacks) if every
    /// goroutine used its whole stack, a few pages per stack for typical ones. The other
    /// `DEFAULT_MAX_CACHED - 128` stacks keep [`PoolConfig::DEFAULT_KEEP_RESIDENT`] bytes each
    /// at most, 14 MiB in all.
    pub const DEFAULT_MAX_RESIDENT_CACHED: usize = 128;
    /// Default of [`PoolConfig::local_capacity`]: stacks kept per [`LocalCache`]. A refill or
    /// spill moves half of it under one lock.
    pub const DEFAULT_LOCAL_CAPACITY: usize = 16;
    /// Default of [`PoolConfig::keep_resident`]: bytes at the top of a cached stack that stay
    /// resident.
    pub const DEFAULT_KEEP_RESIDENT: usize = 16 * 1024;

    /// Returns the default configuration: guarded stacks ([`StackMode::Guarded`]) with a
    /// [`DEFAULT_GUARD_SIZE`] guard, and the `DEFAULT_*` constants above.
    pub const fn new() -> PoolConfig {
        PoolConfig {
            mode: StackMode::Guarded,
            guard_size: DEFAULT_GUARD_SIZE,
            max_cached: PoolConfig::DEFAULT_MAX_CACHED,
            max_resident_cached: PoolConfig::DEFAULT_MAX_RESIDENT_CACHED,
            local_capacity: PoolConfig::DEFAULT_LOCAL_CAPACITY,
            keep_resident: PoolConfig::DEFAULT_KEEP_RESIDENT,
            slab_size: DEFAULT_SLAB_SIZE,
        }
    }

    /// Returns the default configuration in slab mode: `PoolConfig::new().mode(StackMode::Slab)`.
    pub const fn slab() -> PoolConfig {
        PoolConfig::new().mode(StackMode::Slab)
    }

    /// Sets the kind of stacks the pool hands out.
    pub const fn mode(mut self, mode: StackMode) -> PoolConfig {
        self.mode = mode;
        self
    }

    /// Sets the guard size in bytes (rounded up to pages): of each stack in guarded mode (see
    /// [`Stack::with_guard`]), of each slab in slab mode.
    pub const fn guard_size(mut self, bytes: usize) -> PoolConfig {
        self.guard_size = bytes;
        self
    }

    /// Sets the size of each slab in slab mode, in bytes, guard included. A slab contains as many
    /// stacks as fit, and at least one. Ignored in guarded mode.
    ///
    /// Each slab takes two entries of the mapping table. With the default of
    /// [`DEFAULT_SLAB_SIZE`](crate::DEFAULT_SLAB_SIZE) (64 MiB), a million stacks of
    /// [`DEFAULT_STACK_SIZE`](crate::DEFAULT_STACK_SIZE) (256 KiB) fill about 4,000 slabs and
    /// 8,000 entries. Larger slabs take fewer entries. An empty slab is unmapped, except for
    /// one kept as a spare.
    pub const fn slab_size(mut self, bytes: usize) -> PoolConfig {
        self.slab_size = bytes;
        self
    }

    /// Sets how many stacks the global cache keeps at most; a stack put beyond that is unmapped.
    /// Zero caches nothing globally.
    pub const fn max_cached(mut self, stacks: usize) -> PoolConfig {
        self.max_cached = stacks;
        self
    }

    /// Sets how many stacks of the global cache keep their memory resident; the others keep
    /// only their top [`PoolConfig::keep_resident`] bytes. The tier is part of
    /// [`PoolConfig::max_cached`], never beyond it. Zero releases the memory of every stack
    /// that enters the global cache.
    ///
    /// A resident stack keeps every page its last goroutine touched, up to the whole stack, so
    /// the tier can cost up to `stacks * stack size` bytes of memory.
    pub const fn max_resident_cached(mut self, stacks: usize) -> PoolConfig {
        self.max_resident_cached = stacks;
        self
    }

    /// Sets how many stacks each [`LocalCache`] keeps at most. Zero makes local caches pass every
    /// call through to the global cache.
    ///
    /// A new cache reserves room for up to 1,024 stacks. Beyond that, `put` allocates as the
    /// cache grows, and a large allocation can make a system call.
    pub const fn local_capacity(mut self, stacks: usize) -> PoolConfig {
        self.local_capacity = stacks;
        self
    }

    /// Sets how many bytes at the top of a stack stay resident when it enters the global cache.
    /// The value is rounded up to pages, and more than the stack size keeps the whole stack.
    pub const fn keep_resident(mut self, bytes: usize) -> PoolConfig {
        self.keep_resident = bytes;
        self
    }

    /// Returns the configured maximum of the global cache, in stacks.
    pub const fn max_cached_stacks(&self) -> usize {
        self.max_cached
    }

    /// Returns the configured size of the global cache's resident tier, in stacks.
    pub const fn max_resident_cached_stacks(&self) -> usize {
        self.max_resident_cached
    }

    /// Returns the configured kind of stacks.
    pub const fn stack_mode(&self) -> StackMode {
        self.mode
    }
}

impl Default for PoolConfig {
    fn default() -> PoolConfig {
        PoolConfig::new()
    }
}

/// A snapshot of a pool's counters.
///
/// Byte counts are usable stack bytes (`stacks * stack_size`). In guarded mode each stack also
/// reserves its guard in address space. In slab mode the slabs reserve `slab_bytes`, which
/// includes the stacks not handed out. While other threads use the pool, a stack moving
/// between a local and the global cache may be missing from `cached_stacks` for a moment. With
/// no concurrent use the counts are exact.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Usable bytes of each stack.
    pub stack_size: usize,
    /// Stacks mapped by the pool and not yet unmapped (in slab mode: handed out by the slabs
    /// and not returned to them): in use plus cached.
    pub mapped_stacks: usize,
    /// Stacks in the global cache and in all local caches.
    pub cached_stacks: usize,
    /// The part of `cached_stacks` held by local caches.
    pub local_cached_stacks: usize,
    /// Stacks handed out and not yet put back or dropped.
    pub in_use_stacks: usize,
    /// Live [`LocalCache`] objects of the pool.
    pub local_caches: usize,
    /// Maximum number of stacks the pool may cache now: the global bound plus each local cache's
    /// capacity.
    pub max_cached_stacks: usize,
    /// `mapped_stacks * stack_size`.
    pub mapped_bytes: usize,
    /// `cached_stacks * stack_size`.
    pub cached_bytes: usize,
    /// `in_use_stacks * stack_size`.
    pub in_use_bytes: usize,
    /// Slabs mapped now; 0 in guarded mode.
    pub slabs: usize,
    /// Bytes of address space the slabs reserve, guards included; 0 in guarded mode.
    pub slab_bytes: usize,
    /// Times the pool gave a stack's memory back to the kernel (one `madvise` each) since it
    /// was created, for stacks entering the global cache beyond its resident tier. Such a
    /// stack is still unmapped afterwards when other threads filled the cache meanwhile.
    pub memory_releases: u64,
}

/// The state shared by a pool, its local caches and the stacks it mapped.
pub(crate) struct PoolShared {
    size: usize,
    guard_size: usize,
    /// The slabs in slab mode; `None` in guarded mode.
    arena: Option<Arc<Arena>>,
    max_cached: usize,
    /// `max_resident_cached`, capped at `max_cached`.
    max_resident: usize,
    local_capacity: usize,
    keep_resident: usize,
    /// The global cache.
    cache: Mutex<GlobalCache>,
    /// Stacks of this pool that are mapped. A statistic: Relaxed, it orders nothing.
    mapped: AtomicUsize,
    /// Stacks whose memory was released, for `PoolStats::memory_releases`. A statistic:
    /// Relaxed, it orders nothing.
    releases: AtomicU64,
    /// Each live local cache's published length, summed by `stats`.
    locals: Mutex<Vec<Arc<CachePadded<AtomicUsize>>>>,
}

/// The global cache's two tiers. In each, the last element is the most recently cached stack.
#[derive(Default)]
struct GlobalCache {
    /// Stacks whose memory stayed as their last goroutine left it; at most
    /// `PoolShared::max_resident`.
    resident: Vec<Stack>,
    /// Stacks whose memory below the top `keep_resident` bytes was given back.
    released: Vec<Stack>,
}

impl GlobalCache {
    fn len(&self) -> usize {
        self.resident.len() + self.released.len()
    }

    /// Takes the most recently cached resident stack, or else the most recently released one.
    fn pop(&mut self) -> Option<Stack> {
        self.resident.pop().or_else(|| self.released.pop())
    }
}

impl PoolShared {
    fn lock_cache(&self) -> MutexGuard<'_, GlobalCache> {
        // The lock guards only pushes and pops, which leave the vector valid even on a panic.
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn lock_locals(&self) -> MutexGuard<'_, Vec<Arc<CachePadded<AtomicUsize>>>> {
        self.locals.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Maps a new stack owned by this pool, or in slab mode takes one from the slabs.
    fn map_stack(self: &Arc<Self>) -> Result<Stack, StackError> {
        let mut stack = match &self.arena {
            None => Stack::map(self.size, self.guard_size)?,
            Some(arena) => arena.allocate()?,
        };
        stack.owner = Some(Arc::downgrade(self));
        // Relaxed: a statistic (see `mapped`).
        self.mapped.fetch_add(1, Ordering::Relaxed);
        Ok(stack)
    }

    /// Called by `Stack::drop` for a stack of this pool, before it is unmapped or returned to
    /// its slab.
    pub(crate) fn note_unmapped(&self) {
        // Relaxed: a statistic (see `mapped`).
        self.mapped.fetch_sub(1, Ordering::Relaxed);
    }

    /// Panics unless `stack` was mapped by this pool; `function` names the caller.
    fn check_owner(&self, stack: &Stack, function: &str) {
        let ours = stack
            .owner
            .as_ref()
            .is_some_and(|owner| std::ptr::eq(owner.as_ptr(), self));
        assert!(
            ours,
            "{function}: {stack:?} was not taken from this pool of {}-byte stacks; drop it or \
             put it into the pool it came from",
            self.size
        );
    }

    /// Gives the memory of `stack` below its top `keep_resident` bytes back to the kernel.
    fn release_memory(&self, stack: &mut Stack) {
        stack.release_memory(self.keep_resident);
        // Relaxed: a statistic (see `releases`).
        self.releases.fetch_add(1, Ordering::Relaxed);
    }

    /// Puts one stack into the global cache, or unmaps it (returns it to its slab) when the
    /// cache is full.
    fn cache_one(&self, mut stack: Stack) {
        {
            let mut cache = self.lock_cache();
            if cache.len() >= self.max_cached {
                drop(cache);
                // Unmapped as it is, outside the lock: releasing its memory first would be a
                // wasted system call.
                drop(stack);
                return;
            }
            if cache.resident.len() < self.max_resident {
                cache.resident.push(stack);
                return;
            }
        }
        // madvise outside the lock, as in `cache_batch`.
        self.release_memory(&mut stack);
        let mut cache = self.lock_cache();
        if cache.len() < self.max_cached {
            cache.released.push(stack);
            return;
        }
        drop(cache);
        // Unmapped here, outside the lock.
        drop(stack);
    }

    /// Moves all of `stacks` into the global cache: into the resident tier while it has room,
    /// then with their memory released into the other tier. Those beyond `max_cached` are
    /// unmapped.
    fn cache_batch(&self, stacks: &mut Vec<Stack>) {
        let released_room = {
            let mut cache = self.lock_cache();
            let total_room = self.max_cached.saturating_sub(cache.len());
            let resident_room = self.max_resident.saturating_sub(cache.resident.len());
            let moved = resident_room.min(total_room).min(stacks.len());
            let keep = stacks.len() - moved;
            move_tail(stacks, keep, &mut cache.resident);
            total_room - moved
        };
        // The oldest stacks that find no room in either tier are unmapped now, outside the
        // lock, with no madvise first: a burst of exits into a full cache would otherwise pay
        // two system calls per stack instead of one.
        let excess = stacks.len().saturating_sub(released_room);
        stacks.drain(..excess);
        if stacks.is_empty() {
            return;
        }
        // madvise outside the lock, so that other Ms wait for no system call. Another thread
        // may fill the cache meanwhile; the bound is checked again below.
        for stack in stacks.iter_mut() {
            self.release_memory(stack);
        }
        {
            let mut cache = self.lock_cache();
            let room = self.max_cached.saturating_sub(cache.len());
            let moved = room.min(stacks.len());
            cache.released.extend(stacks.drain(..moved));
        }
        // The rest is unmapped here, outside the lock.
        stacks.clear();
    }

    /// Moves up to `count` stacks from the global cache to `into`, resident ones first and the
    /// most recently cached first within a tier.
    fn take_batch(&self, count: usize, into: &mut Vec<Stack>) {
        let mut cache = self.lock_cache();
        let from_resident = count.min(cache.resident.len());
        let from_released = (count - from_resident).min(cache.released.len());
        let start = cache.released.len() - from_released;
        // `into` is used from its end, so the resident stacks go in last.
        move_tail(&mut cache.released, start, into);
        let start = cache.resident.len() - from_resident;
        move_tail(&mut cache.resident, start, into);
    }
}

/// Moves `from[start..]` to the end of `into`, keeping their order, with one memory copy.
/// `into.extend(from.drain(start..))` moves the elements one at a time, which took 8% of a
/// spawn's profile (goro-bench spawnwg, one P) when stacks moved between caches in batches.
fn move_tail<T>(from: &mut Vec<T>, start: usize, into: &mut Vec<T>) {
    let count = from.len() - start;
    into.reserve(count);
    // SAFETY: `reserve` made room for `count` more elements in `into`, and the two vectors do
    // not overlap. After the two `set_len`s, `into` owns the moved elements and `from` no
    // longer does, so each element is dropped once.
    unsafe {
        std::ptr::copy_nonoverlapping(
            from.as_ptr().add(start),
            into.as_mut_ptr().add(into.len()),
            count,
        );
        from.set_len(start);
        into.set_len(into.len() + count);
    }
}

/// Moves the first `count` elements of `from` to the end of `into`, keeping their order, and
/// shifts the rest of `from` down, each part with one copy of the block.
fn move_front<T>(from: &mut Vec<T>, count: usize, into: &mut Vec<T>) {
    let rest = from.len() - count;
    into.reserve(count);
    // SAFETY: `reserve` made room for `count` more elements in `into`, which does not overlap
    // `from`. The first copy moves `from[..count]` out and the second moves `from[count..]`
    // down over them (`copy` allows the overlap). Each element is owned by one vector after
    // the `set_len`s.
    unsafe {
        std::ptr::copy_nonoverlapping(from.as_ptr(), into.as_mut_ptr().add(into.len()), count);
        std::ptr::copy(from.as_ptr().add(count), from.as_mut_ptr(), rest);
        from.set_len(rest);
        into.set_len(into.len() + count);
    }
}

/// Checks a requested slab size against [`MIN_SLAB_SIZE`]`..=`[`MAX_SLAB_SIZE`].
fn validate_slab_size(size: usize) -> Result<usize, StackError> {
    if !(MIN_SLAB_SIZE..=MAX_SLAB_SIZE).contains(&size) {
        return Err(StackError::InvalidSlabSize {
            size,
            min: MIN_SLAB_SIZE,
            max: MAX_SLAB_SIZE,
        });
    }
    Ok(size)
}

/// A pool of stacks of one size.
///
/// The pool is `Sync`: share it between threads by reference or in an `Arc`. Each M should
/// keep a [`LocalCache`] from [`StackPool::local_cache`] for its hot path. Stacks stay valid
/// after the pool is dropped; they are then unmapped when dropped or put into a local cache
/// that is dropped.
pub struct StackPool {
    shared: Arc<PoolShared>,
}

impl StackPool {
    /// Creates an empty pool of stacks with `size` usable bytes (rounded up to pages).
    ///
    /// In slab mode each stack has room for its canary besides: [`StackPool::stack_size`] is
    /// `size` plus [`CANARY_SIZE`](crate::CANARY_SIZE), rounded up to pages. No slab is mapped
    /// before the first stack is needed.
    ///
    /// # Errors
    ///
    /// [`StackError::InvalidSize`] for a size outside
    /// [`MIN_STACK_SIZE`](crate::MIN_STACK_SIZE)`..=`[`MAX_STACK_SIZE`](crate::MAX_STACK_SIZE),
    /// [`StackError::InvalidGuardSize`] for an invalid [`PoolConfig::guard_size`], and in slab
    /// mode [`StackError::InvalidSlabSize`] for a [`PoolConfig::slab_size`] outside
    /// [`MIN_SLAB_SIZE`](crate::MIN_SLAB_SIZE)`..=`[`MAX_SLAB_SIZE`](crate::MAX_SLAB_SIZE).
    pub fn new(size: usize, config: PoolConfig) -> Result<StackPool, StackError> {
        let requested = size;
        let size = validate_stack_size(requested)?;
        let guard_size = validate_guard_size(config.guard_size)?;
        let (size, arena) = match config.mode {
            StackMode::Guarded => (size, None),
            StackMode::Slab => {
                let slab_size = validate_slab_size(config.slab_size)?;
                let span = slab::span_for(requested);
                (
                    span,
                    Some(Arc::new(Arena::new(span, guard_size, slab_size))),
                )
            }
        };
        let keep_resident = round_up_to_pages(config.keep_resident)
            .unwrap_or(usize::MAX)
            .min(size);
        Ok(StackPool {
            shared: Arc::new(PoolShared {
                size,
                guard_size,
                arena,
                max_cached: config.max_cached,
                max_resident: config.max_resident_cached.min(config.max_cached),
                local_capacity: config.local_capacity,
                keep_resident,
                cache: Mutex::new(GlobalCache::default()),
                mapped: AtomicUsize::new(0),
                releases: AtomicU64::new(0),
                locals: Mutex::new(Vec::new()),
            }),
        })
    }

    /// Usable bytes of each stack, [`Stack::size`].
    pub fn stack_size(&self) -> usize {
        self.shared.size
    }

    /// Guard bytes of each stack in guarded mode, of each slab in slab mode.
    pub fn guard_size(&self) -> usize {
        self.shared.guard_size
    }

    /// Returns the kind of stacks the pool hands out.
    pub fn stack_mode(&self) -> StackMode {
        match self.shared.arena {
            None => StackMode::Guarded,
            Some(_) => StackMode::Slab,
        }
    }

    /// Number of stacks in each slab; 0 in guarded mode.
    pub fn stacks_per_slab(&self) -> usize {
        self.shared
            .arena
            .as_ref()
            .map_or(0, |arena| arena.stacks_per_slab())
    }

    /// Returns a stack from the global cache, or maps a new one when the cache is empty (in slab
    /// mode: takes one from the slabs, mapping a slab when all are full).
    ///
    /// # Errors
    ///
    /// [`StackError::MapFailed`] (in slab mode [`StackError::SlabMapFailed`]) when a new stack
    /// is needed and the kernel refuses the mapping.
    pub fn get(&self) -> Result<Stack, StackError> {
        let cached = self.shared.lock_cache().pop();
        match cached {
            Some(stack) => Ok(stack),
            None => self.shared.map_stack(),
        }
    }

    /// Puts a stack back: into the global cache, with its memory released below the top
    /// [`PoolConfig::keep_resident`] bytes, or unmapped (returned to its slab) when the cache is
    /// full.
    ///
    /// # Panics
    ///
    /// When `stack` was not taken from this pool.
    pub fn put(&self, stack: Stack) {
        self.shared.check_owner(&stack, "StackPool::put");
        self.shared.cache_one(stack);
    }

    /// Creates a cache for one M (or any single thread of use).
    pub fn local_cache(&self) -> LocalCache {
        let published = Arc::new(CachePadded::new(AtomicUsize::new(0)));
        self.shared.lock_locals().push(Arc::clone(&published));
        let reserved = self.shared.local_capacity.min(LOCAL_RESERVE_LIMIT);
        LocalCache {
            shared: Arc::clone(&self.shared),
            stacks: Vec::with_capacity(reserved),
            spill: Vec::with_capacity(reserved),
            published,
        }
    }

    /// Reads the pool's counters.
    pub fn stats(&self) -> PoolStats {
        let shared = &self.shared;
        // Relaxed: a statistic (see `PoolShared::mapped`).
        let mapped = shared.mapped.load(Ordering::Relaxed);
        let global = shared.lock_cache().len();
        let (local_caches, local) = {
            let locals = shared.lock_locals();
            // Relaxed: each length is a statistic published by its cache's owner.
            let sum = locals.iter().map(|len| len.load(Ordering::Relaxed)).sum();
            (locals.len(), sum)
        };
        let cached = global + local;
        let in_use = mapped.saturating_sub(cached);
        let slabs = shared
            .arena
            .as_ref()
            .map(|arena| arena.stats())
            .unwrap_or_default();
        PoolStats {
            stack_size: shared.size,
            mapped_stacks: mapped,
            cached_stacks: cached,
            local_cached_stacks: local,
            in_use_stacks: in_use,
            local_caches,
            // Saturating, because `usize::MAX` is a valid setting for an unbounded cache.
            max_cached_stacks: shared
                .max_cached
                .saturating_add(local_caches.saturating_mul(shared.local_capacity)),
            mapped_bytes: mapped * shared.size,
            cached_bytes: cached * shared.size,
            in_use_bytes: in_use * shared.size,
            slabs: slabs.slabs,
            slab_bytes: slabs.slab_bytes,
            // Relaxed: a statistic (see `PoolShared::releases`).
            memory_releases: shared.releases.load(Ordering::Relaxed),
        }
    }
}

impl fmt::Debug for StackPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StackPool")
            .field("stack_mode", &self.stack_mode())
            .field("stack_size", &self.shared.size)
            .field("guard_size", &self.shared.guard_size)
            .field("max_cached", &self.shared.max_cached)
            .field("max_resident_cached", &self.shared.max_resident)
            .field("local_capacity", &self.shared.local_capacity)
            .field("keep_resident", &self.shared.keep_resident)
            .finish_non_exhaustive()
    }
}

/// A per-M cache of a pool's stacks: the pool's hot path.
///
/// `get` and `put` make no system call and take no lock while the cache has a stack to give or
/// room to take one. Otherwise they move half the capacity from or to the global cache in one
/// locked step. Stacks cached here keep their memory resident, so an M keeps at most
/// [`PoolConfig::local_capacity`] stacks' worth of touched pages. Dropping the cache returns
/// its stacks to the pool.
pub struct LocalCache {
    shared: Arc<PoolShared>,
    /// The cached stacks; the last is the most recently put and the first to be reused.
    stacks: Vec<Stack>,
    /// An empty buffer reused to move stacks to the global cache without allocating.
    spill: Vec<Stack>,
    /// `stacks.len()`, published for `StackPool::stats`.
    published: Arc<CachePadded<AtomicUsize>>,
}

impl LocalCache {
    /// Returns a cached stack, refills from the global cache, or maps a new stack (in slab mode:
    /// takes one from the slabs).
    ///
    /// # Errors
    ///
    /// As [`StackPool::get`].
    pub fn get(&mut self) -> Result<Stack, StackError> {
        if self.stacks.is_empty() {
            let batch = self.batch_size();
            self.shared.take_batch(batch, &mut self.stacks);
        }
        match self.stacks.pop() {
            Some(stack) => {
                self.publish_len();
                Ok(stack)
            }
            None => self.shared.map_stack(),
        }
    }

    /// Caches a stack; when the cache is full, first moves its older half to the global cache.
    ///
    /// # Panics
    ///
    /// When `stack` was not taken from this cache's pool.
    pub fn put(&mut self, stack: Stack) {
        self.shared.check_owner(&stack, "LocalCache::put");
        if self.shared.local_capacity == 0 {
            self.shared.cache_one(stack);
            return;
        }
        if self.stacks.len() == self.shared.local_capacity {
            self.spill(self.batch_size());
        }
        self.stacks.push(stack);
        self.publish_len();
    }

    /// Moves every cached stack to the global cache, for an M that goes idle.
    pub fn flush(&mut self) {
        self.spill(self.stacks.len());
    }

    /// Number of stacks cached here.
    pub fn len(&self) -> usize {
        self.stacks.len()
    }

    /// Reports whether no stack is cached here.
    pub fn is_empty(&self) -> bool {
        self.stacks.is_empty()
    }

    /// Stacks moved per refill or spill: half the capacity, rounded up.
    fn batch_size(&self) -> usize {
        self.shared.local_capacity.div_ceil(2).max(1)
    }

    /// Moves the `count` oldest cached stacks to the global cache.
    fn spill(&mut self, count: usize) {
        move_front(&mut self.stacks, count, &mut self.spill);
        self.publish_len();
        self.shared.cache_batch(&mut self.spill);
    }

    fn publish_len(&self) {
        // Relaxed: a statistic read by `StackPool::stats`; it orders nothing.
        self.published.store(self.stacks.len(), Ordering::Relaxed);
    }
}

impl Drop for LocalCache {
    fn drop(&mut self) {
        self.flush();
        let mut locals = self.shared.lock_locals();
        locals.retain(|published| !Arc::ptr_eq(published, &self.published));
    }
}

impl fmt::Debug for LocalCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalCache")
            .field("stack_size", &self.shared.size)
            .field("len", &self.stacks.len())
            .field("capacity", &self.shared.local_capacity)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MIN_STACK_SIZE;
    use crate::sys::page_size;

    #[test]
    fn move_tail_and_front_keep_elements() {
        for len in 0..6 {
            for split in 0..=len {
                let from: Vec<String> = (0..len).map(|i| format!("from{i}")).collect();
                let into: Vec<String> = vec!["into".to_string()];

                let (mut tail_from, mut tail_into) = (from.clone(), into.clone());
                move_tail(&mut tail_from, split, &mut tail_into);
                assert_eq!(tail_from, from[..split]);
                assert_eq!(tail_into[1..], from[split..]);
                assert_eq!(tail_into[0], "into");

                let (mut front_from, mut front_into) = (from.clone(), into.clone());
                move_front(&mut front_from, split, &mut front_into);
                assert_eq!(front_from, from[split..]);
                assert_eq!(front_into[1..], from[..split]);
                assert_eq!(front_into[0], "into");
            }
        }
    }

    fn small_pool(max_cached: usize, local_capacity: usize) -> StackPool {
        let config = PoolConfig::new()
            .max_cached(max_cached)
            .local_capacity(local_capacity);
        StackPool::new(MIN_STACK_SIZE, config).expect("valid pool")
    }

    #[test]
    fn new_validates_sizes() {
        assert!(matches!(
            StackPool::new(MIN_STACK_SIZE - 1, PoolConfig::new()),
            Err(StackError::InvalidSize { .. })
        ));
        assert!(matches!(
            StackPool::new(MIN_STACK_SIZE, PoolConfig::new().guard_size(0)),
            Err(StackError::InvalidGuardSize { size: 0, .. })
        ));
        let pool = StackPool::new(MIN_STACK_SIZE + 1, PoolConfig::new()).expect("valid pool");
        assert_eq!(pool.stack_size() % page_size(), 0);
        assert!(pool.stack_size() > MIN_STACK_SIZE);
    }

    #[test]
    fn huge_local_capacity_cache_works() {
        for capacity in [usize::MAX, 1 << 40] {
            let pool = small_pool(4, capacity);
            let mut cache = pool.local_cache();
            let stack = cache.get().expect("mapping");
            cache.put(stack);
            assert_eq!(cache.len(), 1, "capacity {capacity}");
        }
    }

    #[test]
    fn stats_saturate_with_unbounded_caches() {
        let pool = small_pool(usize::MAX, 4);
        let _first = pool.local_cache();
        let _second = pool.local_cache();
        assert_eq!(pool.stats().max_cached_stacks, usize::MAX);

        let pool = small_pool(4, usize::MAX);
        let _first = pool.local_cache();
        let _second = pool.local_cache();
        assert_eq!(pool.stats().max_cached_stacks, usize::MAX);
    }

    #[test]
    fn put_then_get_reuses_stack() {
        let pool = small_pool(4, 0);
        let stack = pool.get().expect("mapping succeeds");
        let lo = stack.lo();
        pool.put(stack);
        let again = pool.get().expect("cached stack");
        assert_eq!(again.lo(), lo, "the cached stack was not reused");
        assert_eq!(pool.stats().mapped_stacks, 1);
    }

    #[test]
    fn global_cache_is_bounded() {
        let pool = small_pool(2, 0);
        let stacks: Vec<Stack> = (0..5).map(|_| pool.get().expect("mapping")).collect();
        assert_eq!(pool.stats().in_use_stacks, 5);
        for stack in stacks {
            pool.put(stack);
        }
        let stats = pool.stats();
        assert_eq!(stats.cached_stacks, 2);
        assert_eq!(
            stats.mapped_stacks, 2,
            "stacks beyond the bound were not unmapped"
        );
        assert_eq!(stats.in_use_stacks, 0);
        assert_eq!(stats.cached_bytes, 2 * pool.stack_size());
    }

    #[test]
    fn dropped_stack_leaves_counters() {
        let pool = small_pool(2, 0);
        let stack = pool.get().expect("mapping");
        assert_eq!(pool.stats().mapped_stacks, 1);
        drop(stack);
        assert_eq!(pool.stats().mapped_stacks, 0);
        assert_eq!(pool.stats().in_use_stacks, 0);
    }

    #[test]
    fn local_cache_spills_and_refills() {
        let pool = small_pool(8, 4);
        let mut local = pool.local_cache();
        let stacks: Vec<Stack> = (0..6).map(|_| local.get().expect("mapping")).collect();
        for stack in stacks {
            local.put(stack);
        }
        // 4 fit; the fifth put spilled 2, the sixth fit again.
        assert_eq!(local.len(), 4);
        let stats = pool.stats();
        assert_eq!(stats.local_cached_stacks, 4);
        assert_eq!(stats.cached_stacks, 6);
        assert_eq!(stats.local_caches, 1);
        assert_eq!(stats.max_cached_stacks, 12);

        for _ in 0..4 {
            drop(local.get().expect("cached"));
        }
        assert!(local.is_empty());
        let refilled = local.get().expect("refill from the global cache");
        assert_eq!(local.len(), 1, "a refill takes half the capacity");
        assert_eq!(pool.stats().cached_stacks, 1);
        assert_eq!(pool.stats().mapped_stacks, 2);
        drop(refilled);
    }

    #[test]
    fn local_cache_drop_returns_stacks() {
        let pool = small_pool(8, 4);
        let mut local = pool.local_cache();
        let stack = local.get().expect("mapping");
        local.put(stack);
        drop(local);
        let stats = pool.stats();
        assert_eq!(stats.local_caches, 0);
        assert_eq!(stats.local_cached_stacks, 0);
        assert_eq!(stats.cached_stacks, 1);
    }

    #[test]
    #[should_panic(expected = "StackPool::put: Stack")]
    fn put_foreign_stack_panics() {
        let pool = small_pool(2, 0);
        pool.put(Stack::new(MIN_STACK_SIZE).expect("mapping"));
    }

    #[test]
    #[should_panic(expected = "LocalCache::put: Stack")]
    fn put_other_pools_stack_panics() {
        let first = small_pool(2, 2);
        let second = small_pool(2, 2);
        let mut local = first.local_cache();
        local.put(second.get().expect("mapping"));
    }

    #[test]
    fn stacks_outlive_pool() {
        let pool = small_pool(2, 2);
        let mut local = pool.local_cache();
        let stack = local.get().expect("mapping");
        drop(pool);
        // SAFETY: the byte lies in the stack's usable range.
        unsafe { std::ptr::write_volatile((stack.hi() - 1) as *mut u8, 1) };
        local.put(stack);
        drop(local);
    }

    #[test]
    fn new_validates_slab_size() {
        for size in [0, MIN_SLAB_SIZE - 1, MAX_SLAB_SIZE + 1] {
            let config = PoolConfig::slab().slab_size(size);
            match StackPool::new(MIN_STACK_SIZE, config) {
                Err(StackError::InvalidSlabSize {
                    size: reported,
                    min,
                    max,
                }) => {
                    assert_eq!((reported, min, max), (size, MIN_SLAB_SIZE, MAX_SLAB_SIZE));
                }
                other => panic!("slab size {size}: {other:?}"),
            }
        }
        let guarded = PoolConfig::new().slab_size(0);
        assert!(
            StackPool::new(MIN_STACK_SIZE, guarded).is_ok(),
            "a guarded pool rejected a slab size it does not use"
        );
    }

    #[test]
    fn slab_pool_counts_stacks_and_slabs() {
        let config = PoolConfig::slab().max_cached(1).local_capacity(0);
        let pool = StackPool::new(MIN_STACK_SIZE, config).expect("valid pool");
        assert_eq!(pool.stack_mode(), StackMode::Slab);
        assert_eq!(pool.stack_size(), slab::span_for(MIN_STACK_SIZE));
        assert_eq!(
            pool.stats().slabs,
            0,
            "a slab was mapped before the first get"
        );

        let stacks: Vec<Stack> = (0..3).map(|_| pool.get().expect("slab stack")).collect();
        let stats = pool.stats();
        assert_eq!(
            (stats.mapped_stacks, stats.in_use_stacks),
            (3, 3),
            "{stats:?}"
        );
        assert_eq!(stats.slabs, 1, "{stats:?}");
        assert!(stats.slab_bytes <= DEFAULT_SLAB_SIZE, "{stats:?}");
        assert_eq!(stats.in_use_bytes, 3 * pool.stack_size());

        for stack in stacks {
            pool.put(stack);
        }
        let stats = pool.stats();
        assert_eq!(stats.cached_stacks, 1, "{stats:?}");
        assert_eq!(
            stats.mapped_stacks, 1,
            "stacks beyond the bound stayed out: {stats:?}"
        );
        assert_eq!(stats.slabs, 1, "{stats:?}");
    }

    #[test]
    fn slab_stack_outlives_pool() {
        let pool = StackPool::new(MIN_STACK_SIZE, PoolConfig::slab()).expect("valid pool");
        let stack = pool.get().expect("slab stack");
        drop(pool);
        // SAFETY: the byte lies in the stack's usable range, above its canary.
        unsafe { std::ptr::write_volatile((stack.hi() - 1) as *mut u8, 1) };
        assert_eq!(stack.check_canary(), Ok(()));
        drop(stack);
    }

    #[test]
    fn global_cache_releases_memory() {
        let pool = StackPool::new(
            16 * page_size(),
            PoolConfig::new()
                .keep_resident(page_size())
                .max_resident_cached(0),
        )
        .expect("valid pool");
        let stack = pool.get().expect("mapping");
        // SAFETY: the whole usable range belongs to the stack and nothing runs on it.
        unsafe { std::ptr::write_bytes(stack.lo() as *mut u8, 0xa5, stack.size()) };
        pool.put(stack);
        let stack = pool.get().expect("cached stack");
        // SAFETY: both bytes lie in the stack's usable range.
        let (low, top) = unsafe {
            (
                std::ptr::read_volatile(stack.lo() as *const u8),
                std::ptr::read_volatile((stack.hi() - 1) as *const u8),
            )
        };
        assert_eq!(low, 0, "memory below the kept top was not released");
        assert_eq!(top, 0xa5, "the kept top was released");
    }

    /// Fills every usable byte of `stack` with `byte`.
    fn fill(stack: &Stack, byte: u8) {
        // SAFETY: the whole usable range belongs to the stack and nothing runs on it.
        unsafe { std::ptr::write_bytes(stack.lo() as *mut u8, byte, stack.size()) };
    }

    /// Reads the lowest usable byte of `stack`.
    fn lowest_byte(stack: &Stack) -> u8 {
        // SAFETY: the byte lies in the stack's usable range.
        unsafe { std::ptr::read_volatile(stack.lo() as *const u8) }
    }

    #[test]
    fn resident_tier_keeps_memory_up_to_its_bound() {
        let config = PoolConfig::new()
            .keep_resident(page_size())
            .max_resident_cached(2)
            .max_cached(8)
            .local_capacity(0);
        let pool = StackPool::new(16 * page_size(), config).expect("valid pool");
        let stacks: Vec<Stack> = (0..3).map(|_| pool.get().expect("mapping")).collect();
        let order: Vec<usize> = stacks.iter().map(Stack::lo).collect();
        for stack in stacks {
            fill(&stack, 0xa5);
            pool.put(stack);
        }
        assert_eq!(pool.stats().cached_stacks, 3);

        // The first two entered the resident tier and come out first, newest first.
        let second = pool.get().expect("cached stack");
        assert_eq!(second.lo(), order[1]);
        assert_eq!(lowest_byte(&second), 0xa5, "a resident stack was released");
        let first = pool.get().expect("cached stack");
        assert_eq!(first.lo(), order[0]);
        assert_eq!(lowest_byte(&first), 0xa5, "a resident stack was released");
        // The third found the tier full and was released.
        let third = pool.get().expect("cached stack");
        assert_eq!(third.lo(), order[2]);
        assert_eq!(
            lowest_byte(&third),
            0,
            "a stack beyond the tier kept its memory"
        );
    }

    #[test]
    fn full_cache_unmaps_without_release() {
        let config = PoolConfig::new()
            .max_resident_cached(1)
            .max_cached(2)
            .local_capacity(8);
        let pool = StackPool::new(16 * page_size(), config).expect("valid pool");
        let mut local = pool.local_cache();
        let stacks: Vec<Stack> = (0..6).map(|_| local.get().expect("mapping")).collect();
        for stack in stacks {
            local.put(stack);
        }
        local.flush();
        let stats = pool.stats();
        assert_eq!(stats.cached_stacks, 2, "{stats:?}");
        assert_eq!(
            stats.mapped_stacks, 2,
            "stacks beyond the bound stayed mapped"
        );
        // One stack entered the resident tier and one the released tier; the other four
        // were unmapped as they were.
        assert_eq!(stats.memory_releases, 1, "{stats:?}");

        // With no local cache, a put into a full cache unmaps the stack without releasing it.
        let resident = pool.get().expect("cached stack");
        let released = pool.get().expect("cached stack");
        let mapped = pool.get().expect("mapping");
        pool.put(resident);
        pool.put(released);
        pool.put(mapped);
        let stats = pool.stats();
        assert_eq!(stats.cached_stacks, 2, "{stats:?}");
        assert_eq!(stats.mapped_stacks, 2, "{stats:?}");
        assert_eq!(stats.memory_releases, 2, "{stats:?}");
    }

    #[test]
    fn local_spill_fills_resident_tier_first() {
        let config = PoolConfig::new()
            .keep_resident(page_size())
            .max_resident_cached(1)
            .max_cached(8)
            .local_capacity(2);
        let pool = StackPool::new(16 * page_size(), config).expect("valid pool");
        let mut local = pool.local_cache();
        let stacks: Vec<Stack> = (0..3).map(|_| local.get().expect("mapping")).collect();
        for stack in stacks {
            fill(&stack, 0xa5);
            local.put(stack);
        }
        local.flush();
        assert_eq!(pool.stats().cached_stacks, 3);

        let mut resident = 0;
        for _ in 0..3 {
            let stack = pool.get().expect("cached stack");
            if lowest_byte(&stack) == 0xa5 {
                resident += 1;
            }
        }
        assert_eq!(resident, 1, "the resident tier held other than one stack");
    }
}
