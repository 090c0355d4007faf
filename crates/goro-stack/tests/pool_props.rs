//! Random sequences of pool and stack operations, and concurrent use of one pool: no stack is
//! handed out twice, every stack has its requested size, the counters add up, and the pool
//! stays within its bound.

use std::collections::BTreeMap;
use std::sync::Mutex;

use goro_stack::{
    LocalCache, MAX_STACK_SIZE, MIN_STACK_SIZE, PoolConfig, Stack, StackError, StackPool, page_size,
};
use proptest::prelude::*;

const POOLS: usize = 2;
const CACHES_PER_POOL: usize = 2;

#[derive(Clone, Debug)]
enum Op {
    /// `StackPool::get` on a pool.
    PoolGet { pool: usize },
    /// `LocalCache::get` on a cache of a pool.
    CacheGet { pool: usize, cache: usize },
    /// Puts a held stack back: into its pool directly when `cache` is `None`, else into that
    /// cache of its pool. A stack from `Stack::new` is dropped instead.
    Put { held: usize, cache: Option<usize> },
    /// `LocalCache::flush`.
    Flush { pool: usize, cache: usize },
    /// `Stack::new` with any size, valid or not.
    New { size: usize },
    /// Drops a held stack.
    Drop { held: usize },
}

fn op_strategy() -> impl Strategy<Value = Op> {
    let size = prop_oneof![
        0..MIN_STACK_SIZE,
        MIN_STACK_SIZE..=512 * 1024,
        MAX_STACK_SIZE - 2 * page_size()..=MAX_STACK_SIZE + 2 * page_size(),
        Just(usize::MAX),
    ];
    prop_oneof![
        3 => (0..POOLS).prop_map(|pool| Op::PoolGet { pool }),
        4 => (0..POOLS, 0..CACHES_PER_POOL).prop_map(|(pool, cache)| Op::CacheGet { pool, cache }),
        6 => (any::<usize>(), proptest::option::of(0..CACHES_PER_POOL))
            .prop_map(|(held, cache)| Op::Put { held, cache }),
        1 => (0..POOLS, 0..CACHES_PER_POOL).prop_map(|(pool, cache)| Op::Flush { pool, cache }),
        1 => size.prop_map(|size| Op::New { size }),
        1 => any::<usize>().prop_map(|held| Op::Drop { held }),
    ]
}

/// Generates a pool's settings: requested stack size, global bound, local capacity.
fn pool_strategy() -> impl Strategy<Value = (usize, usize, usize)> {
    (MIN_STACK_SIZE..=256 * 1024, 0usize..6, 0usize..5)
}

/// A stack the test holds, with a stamp written at its top when it was handed out.
struct HeldStack {
    stack: Stack,
    /// The pool it came from; `None` for `Stack::new`.
    pool: Option<usize>,
    stamp: u64,
}

fn stamp_address(stack: &Stack) -> *mut u64 {
    (stack.hi() - size_of::<u64>()) as *mut u64
}

fn write_stamp(stack: &Stack, stamp: u64) {
    // SAFETY: the word lies at the top of the stack's usable range, which the test owns.
    unsafe { stamp_address(stack).write_volatile(stamp) };
}

fn read_stamp(stack: &Stack) -> u64 {
    // SAFETY: as in `write_stamp`.
    unsafe { stamp_address(stack).read_volatile() }
}

fn rounded(size: usize) -> usize {
    size.next_multiple_of(page_size())
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
    fn new(settings: &[(usize, usize, usize)]) -> Model {
        let mut pools = Vec::new();
        let mut caches = Vec::new();
        let mut sizes = Vec::new();
        for &(size, max_cached, local_capacity) in settings {
            let config = PoolConfig::new()
                .max_cached(max_cached)
                .local_capacity(local_capacity)
                .guard_size(page_size());
            let pool = StackPool::new(size, config).expect("a valid pool");
            caches.push((0..CACHES_PER_POOL).map(|_| pool.local_cache()).collect());
            pools.push(pool);
            sizes.push(size);
        }
        Model {
            pools,
            caches,
            sizes,
            held: Vec::new(),
            next_stamp: 1,
        }
    }

    fn hand_out(&mut self, stack: Stack, pool: Option<usize>, requested: usize) {
        assert_eq!(stack.size(), rounded(requested), "size of {stack:?}");
        assert_eq!(stack.guard().end, stack.lo());
        let stamp = self.next_stamp;
        self.next_stamp += 1;
        write_stamp(&stack, stamp);
        self.held.push(HeldStack { stack, pool, stamp });
    }

    fn take_held(&mut self, index: usize) -> Option<HeldStack> {
        if self.held.is_empty() {
            return None;
        }
        let held = self.held.swap_remove(index % self.held.len());
        assert_eq!(
            read_stamp(&held.stack),
            held.stamp,
            "{:?} was written by another holder",
            held.stack
        );
        Some(held)
    }

    fn apply(&mut self, op: &Op) {
        match *op {
            Op::PoolGet { pool } => {
                let stack = self.pools[pool].get().expect("StackPool::get");
                self.hand_out(stack, Some(pool), self.sizes[pool]);
            }
            Op::CacheGet { pool, cache } => {
                let stack = self.caches[pool][cache].get().expect("LocalCache::get");
                self.hand_out(stack, Some(pool), self.sizes[pool]);
            }
            Op::Put { held, cache } => {
                let Some(held) = self.take_held(held) else {
                    return;
                };
                match (held.pool, cache) {
                    (None, _) => drop(held.stack),
                    (Some(pool), None) => self.pools[pool].put(held.stack),
                    (Some(pool), Some(cache)) => self.caches[pool][cache].put(held.stack),
                }
            }
            Op::Flush { pool, cache } => {
                self.caches[pool][cache].flush();
                assert!(self.caches[pool][cache].is_empty());
            }
            Op::New { size } => match Stack::new(size) {
                Ok(stack) => {
                    assert!(
                        (MIN_STACK_SIZE..=MAX_STACK_SIZE).contains(&size),
                        "accepted {size}"
                    );
                    self.hand_out(stack, None, size);
                }
                Err(StackError::InvalidSize {
                    size: reported,
                    min,
                    max,
                }) => {
                    assert!(
                        !(MIN_STACK_SIZE..=MAX_STACK_SIZE).contains(&size),
                        "rejected {size}"
                    );
                    assert_eq!((reported, min, max), (size, MIN_STACK_SIZE, MAX_STACK_SIZE));
                }
                Err(other) => panic!("Stack::new({size}) failed: {other}"),
            },
            Op::Drop { held } => {
                if let Some(held) = self.take_held(held) {
                    drop(held.stack);
                }
            }
        }
    }

    fn check(&self) {
        // No two held stacks overlap, guards included.
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

        for (pool_index, pool) in self.pools.iter().enumerate() {
            let stats = pool.stats();
            let held = self
                .held
                .iter()
                .filter(|h| h.pool == Some(pool_index))
                .count();
            let local: usize = self.caches[pool_index].iter().map(LocalCache::len).sum();
            assert_eq!(stats.in_use_stacks, held, "pool {pool_index}: {stats:?}");
            assert_eq!(
                stats.mapped_stacks,
                held + stats.cached_stacks,
                "pool {pool_index}: {stats:?}"
            );
            assert_eq!(
                stats.local_cached_stacks, local,
                "pool {pool_index}: {stats:?}"
            );
            assert_eq!(
                stats.local_caches, CACHES_PER_POOL,
                "pool {pool_index}: {stats:?}"
            );
            assert!(
                stats.cached_stacks <= stats.max_cached_stacks,
                "pool {pool_index}: {stats:?}"
            );
            assert_eq!(stats.mapped_bytes, stats.mapped_stacks * stats.stack_size);
            assert_eq!(stats.cached_bytes, stats.cached_stacks * stats.stack_size);
            assert_eq!(stats.in_use_bytes, stats.in_use_stacks * stats.stack_size);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn pool_operations_keep_invariants(
        settings in proptest::collection::vec(pool_strategy(), POOLS),
        ops in proptest::collection::vec(op_strategy(), 1..80),
    ) {
        let mut model = Model::new(&settings);
        for op in &ops {
            model.apply(op);
            model.check();
        }

        // Dropping everything leaves each pool with its cached stacks only.
        model.held.clear();
        model.caches.clear();
        for pool in &model.pools {
            let stats = pool.stats();
            prop_assert_eq!(stats.in_use_stacks, 0);
            prop_assert_eq!(stats.local_caches, 0);
            prop_assert_eq!(stats.mapped_stacks, stats.cached_stacks);
            prop_assert!(stats.cached_stacks <= stats.max_cached_stacks, "{:?}", stats);
        }
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
fn concurrent_use_hands_out_each_stack_once() {
    const THREADS: u64 = 4;
    const STEPS: usize = 2_000;
    let pool = StackPool::new(
        MIN_STACK_SIZE,
        PoolConfig::new().max_cached(16).local_capacity(4),
    )
    .expect("a valid pool");
    // Live stacks of all threads, by lowest mapped address.
    let live: Mutex<BTreeMap<usize, usize>> = Mutex::new(BTreeMap::new());

    std::thread::scope(|scope| {
        for thread in 0..THREADS {
            let (pool, live) = (&pool, &live);
            scope.spawn(move || {
                let mut random = XorShift(0x9e37_79b9_7f4a_7c15 ^ (thread + 1));
                let mut cache = pool.local_cache();
                let mut held: Vec<(Stack, u64)> = Vec::new();
                for step in 0..STEPS {
                    let choice = random.next() % 8;
                    if held.len() < 12 && (choice < 4 || held.is_empty()) {
                        let stack = if choice == 0 { pool.get() } else { cache.get() };
                        let stack = stack.expect("a stack");
                        let range = stack.mapping();
                        {
                            let mut live = live.lock().unwrap();
                            let below = live.range(..range.end).next_back();
                            if let Some((&start, &end)) = below {
                                assert!(
                                    end <= range.start,
                                    "{range:x?} overlaps the live stack {start:#x}..{end:#x}"
                                );
                            }
                            live.insert(range.start, range.end);
                        }
                        let stamp = thread << 32 | step as u64;
                        write_stamp(&stack, stamp);
                        held.push((stack, stamp));
                    } else {
                        let index = random.next() as usize % held.len();
                        let (stack, stamp) = held.swap_remove(index);
                        assert_eq!(
                            read_stamp(&stack),
                            stamp,
                            "{stack:?} was written by another thread"
                        );
                        live.lock().unwrap().remove(&stack.mapping().start);
                        if choice == 7 {
                            pool.put(stack);
                        } else {
                            cache.put(stack);
                        }
                    }
                }
                for (stack, _) in held {
                    live.lock().unwrap().remove(&stack.mapping().start);
                    cache.put(stack);
                }
            });
        }
    });

    let stats = pool.stats();
    assert_eq!(stats.in_use_stacks, 0, "{stats:?}");
    assert_eq!(stats.local_caches, 0, "{stats:?}");
    assert_eq!(stats.mapped_stacks, stats.cached_stacks, "{stats:?}");
    assert!(stats.cached_stacks <= 16, "{stats:?}");
}
