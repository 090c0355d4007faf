//! A join cell's block goes back to its cache even when the goroutine's output panics in its
//! drop. The test binary counts the live allocations of the block cache's layout with its
//! own global allocator.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

use common::{LIMIT, watchdog};
use goro::Runtime;
use goro_stack::blocks::{BLOCK_ALIGN, BLOCK_SIZE};

/// The system allocator, counting the live allocations of exactly the blocks' layout.
struct CountBlocks;

static LIVE_BLOCKS: AtomicIsize = AtomicIsize::new(0);

fn is_block(layout: Layout) -> bool {
    layout.size() == BLOCK_SIZE && layout.align() == BLOCK_ALIGN
}

// SAFETY: every call is passed on to the system allocator unchanged.
unsafe impl GlobalAlloc for CountBlocks {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if is_block(layout) {
            LIVE_BLOCKS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: the caller's contract, passed on.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if is_block(layout) {
            LIVE_BLOCKS.fetch_sub(1, Ordering::Relaxed);
        }
        // SAFETY: the caller's contract, passed on.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: CountBlocks = CountBlocks;

/// An output that panics when dropped.
struct PanicsOnDrop;

impl Drop for PanicsOnDrop {
    fn drop(&mut self) {
        panic!("the output's drop panics");
    }
}

#[test]
fn panicking_output_drop_returns_its_block() {
    const ROUNDS: usize = 2000;
    let rt = Runtime::builder().procs(1).build().expect("runtime builds");
    // The panics are expected; keep them out of the test's output.
    std::panic::set_hook(Box::new(|_| {}));
    let (before, after) = watchdog(LIMIT, move || {
        rt.block_on(|| {
            let before = LIVE_BLOCKS.load(Ordering::Relaxed);
            for _ in 0..ROUNDS {
                let handle = goro::spawn(|| PanicsOnDrop).expect("spawn");
                while !handle.is_finished() {
                    goro::yield_now();
                }
                // The handle holds the last reference, so its drop frees the cell.
                let dropped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    drop(handle);
                }));
                assert!(dropped.is_err(), "the output's drop panicked");
            }
            (before, LIVE_BLOCKS.load(Ordering::Relaxed))
        })
        .expect("the spawning goroutine finishes")
    });
    let _ = std::panic::take_hook();
    // Freed blocks wait in the caches, a few hundred at most; a leak keeps one per round.
    assert!(
        after - before < (ROUNDS / 2) as isize,
        "{} blocks stayed allocated over {ROUNDS} rounds",
        after - before
    );
}
