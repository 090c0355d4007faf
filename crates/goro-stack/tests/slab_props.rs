//! Random sequences of operations on slab-mode pools, and concurrent use of one. Stacks are
//! disjoint and have the requested size, a fresh stack has an intact canary, and an
//! overwritten canary word is detected. Returning a stack to its slab never takes memory that a
//! neighbouring live stack uses: its canary, its top or its lowest frames.

use std::collections::BTreeMap;
use std::sync::Mutex;

use goro_stack::{
    CANARY_SIZE, LocalCache, MIN_SLAB_SIZE, MIN_STACK_SIZE, PoolConfig, Stack, StackMode,
    StackPool, page_size,
};
use proptest::prelude::*;

const POOLS: usize = 2;
const CACHES_PER_POOL: usize = 2;
const CANARY_WORDS: usize = CANARY_SIZE / 8;

#[derive(Clone, Debug)]
enum Op {
    /// `StackPool::get` on a pool.
    PoolGet { pool: usize },
    /// `LocalCache::get` on a cache of a pool.
    CacheGet { pool: usize, cache: usize },
    /// Puts a held stack back: into its pool directly when `cache` is `None`, else into that
    /// cache of its pool.
    Put { held: usize, cache: Option<usize> },
    /// `LocalCache::flush`.
    Flush { pool: usize, cache: usize },
    /// Drops a held stack, which returns it to its slab.
    Drop { held: usize },
    /// Overwrites one canary word of a held stack, checks, and restores the word.
    Corrupt {
        held: usize,
        word: usize,
        value: u64,
    },
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..POOLS).prop_map(|pool| Op::PoolGet { pool }),
        5 => (0..POOLS, 0..CACHES_PER_POOL).prop_map(|(pool, cache)| Op::CacheGet { pool, cache }),
        4 => (any::<usize>(), proptest::option::of(0..CACHES_PER_POOL))
            .prop_map(|(held, cache)| Op::Put { held, cache }),
        1 => (0..POOLS, 0..CACHES_PER_POOL).prop_map(|(pool, cache)| Op::Flush { pool, cache }),
        3 => any::<usize>().prop_map(|held| Op::Drop { held }),
        1 => (any::<usize>(), 0..CANARY_WORDS, any::<u64>())
            .prop_map(|(held, word, value)| Op::Corrupt { held, word, value }),
    ]
}

/// Generates a pool's settings: requested stack size, global bound, local capacity, slab size.
/// Small slabs fill after a few stacks, so that sequences cross slab boundaries.
fn pool_strategy() -> impl Strategy<Value = (usize, usize, usize, usize)> {
    (
        MIN_STACK_SIZE..=256 * 1024,
        0usize..6,
        0usize..5,
        MIN_SLAB_SIZE..=2 * MIN_SLAB_SIZE,
    )
}

/// A stack the test holds, with stamps written at its top and in its lowest frame word.
struct HeldStack {
    stack: Stack,
    pool: usize,
    stamp: u64,
}

/// Returns the top word of the stack. It lies in the top page, next to the canary of the stack
/// above.
fn top_word(stack: &Stack) -> *mut u64 {
    (stack.hi() - 8) as *mut u64
}

/// Returns the lowest word above the canary. It lies in the page that contains the top of the
/// stack below.
fn lowest_word(stack: &Stack) -> *mut u64 {
    (stack.lo() + CANARY_SIZE) as *mut u64
}

fn write_stamps(stack: &Stack, stamp: u64) {
    // SAFETY: both words lie in the usable range above the canary of a stack the test owns.
    unsafe {
        top_word(stack).write_volatile(stamp);
        lowest_word(stack).write_volatile(!stamp);
    }
}

fn assert_stamps(stack: &Stack, stamp: u64) {
    // SAFETY: as in `write_stamps`.
    let (top, lowest) = unsafe {
        (
            top_word(stack).read_volatile(),
            lowest_word(stack).read_volatile(),
        )
    };
    assert_eq!(top, stamp, "top word of {stack:?}");
    assert_eq!(lowest, !stamp, "lowest frame word of {stack:?}");
}

/// Checks what every stack handed out by a slab pool must satisfy.
fn assert_fresh(stack: &Stack, requested: usize) {
    let page = page_size();
    assert_eq!(stack.mode(), StackMode::Slab);
    assert_eq!(
        stack.size(),
        (requested + CANARY_SIZE).next_multiple_of(page),
        "size of {stack:?} for a {requested}-byte request"
    );
    assert!(stack.size() - CANARY_SIZE >= requested, "{stack:?}");
    assert_eq!(stack.hi() % 16, 0, "{stack:?}");
    assert_eq!(stack.guard_size(), 0, "{stack:?}");
    assert_eq!(stack.guard(), stack.lo()..stack.lo());
    assert_eq!(stack.canary(), Some(stack.lo()..stack.lo() + CANARY_SIZE));
    assert_eq!(
        stack.check_canary(),
        Ok(()),
        "fresh {stack:?} has a bad canary"
    );
}

struct Model {
    pools: Vec<StackPool>,
    caches: Vec<Vec<LocalCache>>,
    /// Requested stack size of each pool.
    sizes: Vec<usize>,
    held: Vec<HeldStack>,
    next_stamp: u64,
}

impl Model {
    fn new(settings: &[(usize, usize, usize, usize)]) -> Model {
        let mut model = Model {
            pools: Vec::new(),
            caches: Vec::new(),
            sizes: Vec::new(),
            held: Vec::new(),
            next_stamp: 1,
        };
        for &(size, max_cached, local_capacity, slab_size) in settings {
            let config = PoolConfig::slab()
                .max_cached(max_cached)
                .local_capacity(local_capacity)
                .slab_size(slab_size)
                .guard_size(page_size());
            let pool = StackPool::new(size, config).expect("a valid slab pool");
            let caches = (0..CACHES_PER_POOL).map(|_| pool.local_cache()).collect();
            model.caches.push(caches);
            model.pools.push(pool);
            model.sizes.push(size);
        }
        model
    }

    fn hand_out(&mut self, stack: Stack, pool: usize) {
        assert_fresh(&stack, self.sizes[pool]);
        let stamp = self.next_stamp;
        self.next_stamp += 1;
        write_stamps(&stack, stamp);
        self.held.push(HeldStack { stack, pool, stamp });
    }

    fn take_held(&mut self, index: usize) -> Option<HeldStack> {
        if self.held.is_empty() {
            return None;
        }
        let held = self.held.swap_remove(index % self.held.len());
        assert_stamps(&held.stack, held.stamp);
        Some(held)
    }

    fn apply(&mut self, op: &Op) {
        match *op {
            Op::PoolGet { pool } => {
                let stack = self.pools[pool].get().expect("StackPool::get");
                self.hand_out(stack, pool);
            }
            Op::CacheGet { pool, cache } => {
                let stack = self.caches[pool][cache].get().expect("LocalCache::get");
                self.hand_out(stack, pool);
            }
            Op::Put { held, cache } => {
                let Some(held) = self.take_held(held) else {
                    return;
                };
                match cache {
                    None => self.pools[held.pool].put(held.stack),
                    Some(cache) => self.caches[held.pool][cache].put(held.stack),
                }
            }
            Op::Flush { pool, cache } => {
                self.caches[pool][cache].flush();
                assert!(self.caches[pool][cache].is_empty());
            }
            Op::Drop { held } => {
                if let Some(held) = self.take_held(held) {
                    drop(held.stack);
                }
            }
            Op::Corrupt { held, word, value } => {
                if self.held.is_empty() {
                    return;
                }
                let stack = &self.held[held % self.held.len()].stack;
                corrupt_and_detect(stack, word, value);
            }
        }
    }

    fn check(&self) {
        // No two held stacks overlap.
        let mut ranges: Vec<_> = self.held.iter().map(|held| held.stack.mapping()).collect();
        ranges.sort_by_key(|range| range.start);
        for pair in ranges.windows(2) {
            assert!(
                pair[0].end <= pair[1].start,
                "{:x?} overlaps {:x?}",
                pair[0],
                pair[1]
            );
        }

        // Returning or caching a neighbour took none of a held stack's memory.
        for held in &self.held {
            assert_eq!(held.stack.check_canary(), Ok(()), "{:?}", held.stack);
            assert_stamps(&held.stack, held.stamp);
        }

        for (pool_index, pool) in self.pools.iter().enumerate() {
            let stats = pool.stats();
            let held = self.held.iter().filter(|h| h.pool == pool_index).count();
            let local: usize = self.caches[pool_index].iter().map(LocalCache::len).sum();
            assert_eq!(stats.in_use_stacks, held, "pool {pool_index}: {stats:?}");
            assert_eq!(
                stats.mapped_stacks,
                held + stats.cached_stacks,
                "pool {pool_index}: {stats:?}"
            );
            assert_eq!(stats.local_cached_stacks, local, "pool {pool_index}");
            assert!(
                stats.cached_stacks <= stats.max_cached_stacks,
                "pool {pool_index}: {stats:?}"
            );
            assert_eq!(stats.in_use_bytes, stats.in_use_stacks * stats.stack_size);
            // Every stack out of the slabs needs room in one, and at most one empty slab stays.
            let per_slab = pool.stacks_per_slab();
            let needed = stats.mapped_stacks.div_ceil(per_slab);
            assert!(stats.slabs >= needed, "pool {pool_index}: {stats:?}");
            assert!(
                stats.slabs <= stats.mapped_stacks + 1,
                "pool {pool_index} keeps empty slabs: {stats:?}"
            );
        }
    }
}

/// Overwrites canary word `word` of `stack` with `value`, checks that the change is detected
/// exactly there, and restores the word.
fn corrupt_and_detect(stack: &Stack, word: usize, value: u64) {
    let address = stack.lo() + 8 * word;
    let pointer = address as *mut u64;
    // SAFETY: the word is part of the canary of a stack the test holds, with no code on it.
    let original = unsafe { pointer.read_volatile() };
    let value = if value == original { !value } else { value };
    // SAFETY: as above.
    unsafe { pointer.write_volatile(value) };

    let overflow = stack
        .check_canary()
        .expect_err("an overwritten canary word went unnoticed");
    assert_eq!(overflow.stack(), stack.lo()..stack.hi());
    assert_eq!(overflow.overwritten_words(), 1);
    assert_eq!(overflow.lowest_address(), address);
    assert_eq!(overflow.lowest_value(), value);
    let message = overflow.to_string();
    assert!(
        message.starts_with("stack overflow detected by the canary"),
        "{message}"
    );

    // SAFETY: as above.
    unsafe { pointer.write_volatile(original) };
    assert_eq!(stack.check_canary(), Ok(()), "restored canary of {stack:?}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn slab_pool_operations_keep_invariants(
        settings in proptest::collection::vec(pool_strategy(), POOLS),
        ops in proptest::collection::vec(op_strategy(), 1..120),
    ) {
        let mut model = Model::new(&settings);
        for op in &ops {
            model.apply(op);
            model.check();
        }

        // Stacks outlive their pool and caches, and keep their memory.
        model.caches.clear();
        model.pools.clear();
        for held in &model.held {
            prop_assert_eq!(held.stack.check_canary(), Ok(()));
            assert_stamps(&held.stack, held.stamp);
        }
        model.held.clear();
    }
}

/// A small xorshift generator, so that each thread draws its own reproducible sequence.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn concurrent_slab_use_keeps_neighbours_intact() {
    const THREADS: u64 = 4;
    const STEPS: usize = 2_000;
    let config = PoolConfig::slab()
        .max_cached(8)
        .local_capacity(4)
        .slab_size(MIN_SLAB_SIZE);
    let pool = StackPool::new(MIN_STACK_SIZE, config).expect("a valid pool");
    // Live stacks of all threads: lo to hi.
    let live: Mutex<BTreeMap<usize, usize>> = Mutex::new(BTreeMap::new());

    std::thread::scope(|scope| {
        for thread in 0..THREADS {
            let (pool, live) = (&pool, &live);
            scope.spawn(move || {
                let mut random = XorShift(0x2545_f491_4f6c_dd1d ^ (thread + 1));
                let mut cache = pool.local_cache();
                let mut held: Vec<(Stack, u64)> = Vec::new();
                for step in 0..STEPS {
                    let choice = random.next() % 8;
                    if held.len() < 16 && (choice < 4 || held.is_empty()) {
                        let stack = if choice == 0 { pool.get() } else { cache.get() };
                        let stack = stack.expect("a stack");
                        assert_fresh(&stack, MIN_STACK_SIZE);
                        {
                            let mut live = live.lock().unwrap();
                            let below = live.range(..stack.hi()).next_back();
                            if let Some((&lo, &hi)) = below {
                                assert!(
                                    hi <= stack.lo(),
                                    "{stack:?} overlaps the live stack {lo:#x}..{hi:#x}"
                                );
                            }
                            live.insert(stack.lo(), stack.hi());
                        }
                        let stamp = thread << 32 | step as u64;
                        write_stamps(&stack, stamp);
                        held.push((stack, stamp));
                    } else {
                        let index = random.next() as usize % held.len();
                        let (stack, stamp) = held.swap_remove(index);
                        assert_stamps(&stack, stamp);
                        assert_eq!(stack.check_canary(), Ok(()), "{stack:?}");
                        live.lock().unwrap().remove(&stack.lo());
                        match choice {
                            4 => drop(stack),
                            5 => pool.put(stack),
                            _ => cache.put(stack),
                        }
                    }
                }
                for (stack, stamp) in held {
                    assert_stamps(&stack, stamp);
                    assert_eq!(stack.check_canary(), Ok(()), "{stack:?}");
                    live.lock().unwrap().remove(&stack.lo());
                    cache.put(stack);
                }
            });
        }
    });

    let stats = pool.stats();
    assert_eq!(stats.in_use_stacks, 0, "{stats:?}");
    assert_eq!(stats.mapped_stacks, stats.cached_stacks, "{stats:?}");
    assert!(stats.cached_stacks <= 8, "{stats:?}");
    assert!(
        stats.slabs <= stats.mapped_stacks + 1,
        "empty slabs beyond the spare stay mapped: {stats:?}"
    );
}
