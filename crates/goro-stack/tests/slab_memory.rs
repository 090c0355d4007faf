//! 100,000 slab stacks alive at once, each with its top page touched, add few entries to the
//! mapping table and little more than one page of resident memory per stack. Returning them
//! gives the memory and the mappings back.
//!
//! This is the only test of its binary, so no other test maps memory while it measures.
//! `GORO_STACK_SLAB_STACKS` overrides the number of stacks.

use goro_stack::{CANARY_SIZE, DEFAULT_STACK_SIZE, PoolConfig, Stack, StackPool, page_size};

const DEFAULT_STACKS: usize = 100_000;

/// Resident bytes allowed per stack: its top page (which also contains the canary of the stack
/// above), plus about 200 bytes for the slabs' bookkeeping. The `Stack` handles live in memory
/// touched before the baseline.
const MAX_RESIDENT_PER_STACK: usize = 4300;

/// Counts the lines of `/proc/self/maps`: one per mapping-table entry.
fn count_mappings() -> usize {
    std::fs::read_to_string("/proc/self/maps")
        .expect("/proc/self/maps is readable")
        .lines()
        .count()
}

/// Returns the resident set size in bytes, from the second field of `/proc/self/statm`.
fn resident_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("/proc/self/statm");
    let pages: usize = statm
        .split_whitespace()
        .nth(1)
        .and_then(|field| field.parse().ok())
        .unwrap_or_else(|| panic!("unexpected /proc/self/statm: {statm:?}"));
    pages * page_size()
}

fn max_map_count() -> usize {
    let text = std::fs::read_to_string("/proc/sys/vm/max_map_count").expect("vm.max_map_count");
    text.trim().parse().expect("a number")
}

/// Returns the resident bytes that mapping `len` bytes of untouched memory costs.
///
/// Natively that is nothing. QEMU user mode, though, keeps a descriptor per guest page of every
/// mapping in its own memory, which counts in the RSS that `/proc/self/statm` shows an emulated
/// process. QEMU 7.2 allocates about 24 bytes per 4 KiB page when the guest maps it and keeps
/// them after `munmap`. The test subtracts that cost, measured last, on a fresh mapping as
/// large as the slabs.
fn untouched_mapping_cost(len: usize) -> usize {
    let before = resident_bytes();
    let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE;
    // SAFETY: a new anonymous mapping at an address the kernel chooses replaces nothing.
    let base = unsafe { libc::mmap(std::ptr::null_mut(), len, libc::PROT_NONE, flags, -1, 0) };
    assert_ne!(base, libc::MAP_FAILED, "mmap of {len} bytes failed");
    let cost = resident_bytes().saturating_sub(before);
    // SAFETY: the mapping was created above and is not used.
    let rc = unsafe { libc::munmap(base, len) };
    assert_eq!(rc, 0);
    cost
}

/// Writes the whole top page of the stack above its canary neighbour: the frames a parked
/// goroutine would leave there.
fn touch_top_page(stack: &Stack) {
    let frames_in_top_page = page_size() - CANARY_SIZE;
    let start = stack.hi() - frames_in_top_page;
    // SAFETY: the range lies in the stack's usable range, which the test owns.
    unsafe { std::ptr::write_bytes(start as *mut u8, 0x5a, frames_in_top_page) };
}

fn stack_count() -> usize {
    match std::env::var("GORO_STACK_SLAB_STACKS") {
        Ok(text) => text
            .parse()
            .unwrap_or_else(|_| panic!("GORO_STACK_SLAB_STACKS={text:?} is not a count")),
        Err(_) => DEFAULT_STACKS,
    }
}

#[test]
fn many_slab_stacks_cost_one_page_each() {
    let stacks = stack_count();
    let pool = StackPool::new(DEFAULT_STACK_SIZE, PoolConfig::slab()).expect("StackPool::new");
    // Allocated and touched before the baseline, so that the vector costs nothing later.
    let mut live: Vec<Stack> = Vec::with_capacity(stacks);
    // SAFETY: writing zeros to the spare capacity touches its pages without creating values.
    unsafe { std::ptr::write_bytes(live.as_mut_ptr(), 0, stacks) };
    // A first stack maps the first slab and leaves the spare behind when returned, so that the
    // measurement starts in the steady state.
    drop(pool.get().expect("StackPool::get"));

    let mappings_before = count_mappings();
    let resident_before = resident_bytes();
    for _ in 0..stacks {
        let stack = pool.get().expect("StackPool::get");
        touch_top_page(&stack);
        live.push(stack);
    }
    let mappings_with_stacks = count_mappings();
    let resident_with_stacks = resident_bytes();
    let stats = pool.stats();
    assert_eq!(stats.in_use_stacks, stacks, "{stats:?}");

    let limit = max_map_count();
    let added = mappings_with_stacks.saturating_sub(mappings_before);
    eprintln!(
        "{stacks} stacks of {} bytes in {} slabs of {} stacks: mappings {mappings_before} -> \
         {mappings_with_stacks} (vm.max_map_count {limit})",
        stats.stack_size,
        stats.slabs,
        pool.stacks_per_slab()
    );
    assert!(
        added <= 2 * stats.slabs,
        "{added} mapping-table entries added for {} slabs",
        stats.slabs
    );
    assert!(
        mappings_with_stacks < limit / 8,
        "{mappings_with_stacks} mapping-table entries with {stacks} stacks, near the limit {limit}"
    );

    let slab_bytes = stats.slab_bytes;

    // Returning every stack gives back its pages and every slab but the spare.
    live.clear();
    let resident_after = resident_bytes();
    let mappings_after = count_mappings();
    let stats = pool.stats();
    assert_eq!(stats.mapped_stacks, 0, "{stats:?}");
    assert_eq!(stats.slabs, 1, "empty slabs stayed mapped: {stats:?}");
    assert!(
        mappings_after <= mappings_before + 2,
        "mapping-table entries: {mappings_before} before, {mappings_after} after returning"
    );

    let emulator_cost = untouched_mapping_cost(slab_bytes);
    let grown = resident_with_stacks.saturating_sub(resident_before);
    let per_stack = grown.saturating_sub(emulator_cost) / stacks;
    eprintln!(
        "resident set grew by {grown} bytes ({per_stack} per stack after subtracting \
         {emulator_cost} bytes of emulator bookkeeping)"
    );
    assert!(
        per_stack <= MAX_RESIDENT_PER_STACK,
        "{per_stack} resident bytes per stack, more than {MAX_RESIDENT_PER_STACK}"
    );
    let kept = resident_after
        .saturating_sub(resident_before)
        .saturating_sub(emulator_cost);
    assert!(
        kept <= grown / 20,
        "{kept} of {grown} resident bytes stayed after returning every stack"
    );
}
