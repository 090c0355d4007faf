//! After 10,000 stacks are created and dropped, or taken from a pool and put back, the
//! process's mapping table returns to its size before, plus two entries per stack the pool
//! keeps.
//!
//! This is the only test of its binary, so no other test maps memory while it counts.

use goro_stack::{MIN_STACK_SIZE, PoolConfig, Stack, StackPool};

const STACKS: usize = 10_000;
const MAX_CACHED: usize = 100;
const LOCAL_CAPACITY: usize = 8;

/// Counts the lines of `/proc/self/maps`: one per mapping-table entry.
fn count_mappings() -> usize {
    std::fs::read_to_string("/proc/self/maps")
        .expect("/proc/self/maps is readable")
        .lines()
        .count()
}

/// Runs both halves of the test once. The first round only warms up: it allocates what the
/// process keeps for good (the guard registry's chunks, malloc's arenas), so `check` is false.
fn round(live: &mut Vec<Stack>, check: bool) {
    let assert_mappings = |expected: usize, what: &str| {
        let count = count_mappings();
        if check {
            assert_eq!(count, expected, "mapping-table entries {what}");
        }
    };

    let baseline = count_mappings();
    for _ in 0..STACKS {
        live.push(Stack::new(MIN_STACK_SIZE).expect("Stack::new"));
    }
    assert_mappings(baseline + 2 * STACKS, "with 10,000 live stacks");
    live.clear();
    assert_mappings(baseline, "after dropping 10,000 stacks");

    let config = PoolConfig::new()
        .max_cached(MAX_CACHED)
        .local_capacity(LOCAL_CAPACITY);
    let pool = StackPool::new(MIN_STACK_SIZE, config).expect("StackPool::new");
    let mut cache = pool.local_cache();
    for index in 0..STACKS {
        let stack = if index % 2 == 0 {
            pool.get()
        } else {
            cache.get()
        };
        live.push(stack.expect("a stack from the pool"));
    }
    for (index, stack) in live.drain(..).enumerate() {
        if index % 2 == 0 {
            pool.put(stack);
        } else {
            cache.put(stack);
        }
    }
    let stats = pool.stats();
    if check {
        assert_eq!(stats.in_use_stacks, 0, "{stats:?}");
        assert_eq!(
            stats.cached_stacks,
            MAX_CACHED + LOCAL_CAPACITY,
            "{stats:?}"
        );
        assert_eq!(stats.mapped_stacks, stats.cached_stacks, "{stats:?}");
    }
    assert_mappings(
        baseline + 2 * stats.mapped_stacks,
        "with the pool's cached stacks",
    );

    drop(cache);
    drop(pool);
    assert_mappings(baseline, "after dropping the pool");
}

#[test]
fn mappings_return_to_baseline() {
    // Allocated once, before any count, so that its own mapping never changes the count.
    let mut live = Vec::with_capacity(STACKS);
    round(&mut live, false);
    round(&mut live, true);
}
