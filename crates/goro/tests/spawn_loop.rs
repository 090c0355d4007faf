//! A goroutine that spawns in a loop: its children run while it spawns, and their join cells
//! work whichever thread frees them.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::{LIMIT, watchdog};
use goro::Runtime;
use goro_sched::{Fifo, WorkStealing};

/// Returns a runtime with one P for each scheduler, so that only the spawning goroutine's own
/// P can run its children.
fn one_p_runtimes() -> [(&'static str, Runtime); 2] {
    let fifo = Runtime::builder().procs(1).scheduler(Fifo::new()).build();
    let steal = Runtime::builder()
        .procs(1)
        .scheduler(WorkStealing::new())
        .build();
    [
        ("Fifo", fifo.expect("runtime builds")),
        ("WorkStealing", steal.expect("runtime builds")),
    ]
}

#[test]
fn spawn_loop_runs_children_while_it_spawns() {
    const CHILDREN: usize = 10_000;
    for (name, rt) in one_p_runtimes() {
        let (ran, peak) = watchdog(LIMIT, move || {
            let ran = rt
                .block_on(|| {
                    let ran = Arc::new(AtomicUsize::new(0));
                    for _ in 0..CHILDREN {
                        let ran = Arc::clone(&ran);
                        drop(goro::spawn(move || ran.fetch_add(1, Ordering::Relaxed)));
                    }
                    // Read before this goroutine yields or parks on its own.
                    ran.load(Ordering::Relaxed)
                })
                .expect("the spawning goroutine finishes");
            (ran, rt.stats().peak_live_goroutines)
        });
        // The loop yields every 128 spawns, so at most the last 128 children have not run.
        assert!(
            ran >= CHILDREN - 256,
            "{name}: only {ran} of {CHILDREN} children ran during the loop"
        );
        assert!(
            peak <= 512,
            "{name}: {peak} goroutines were alive at once; the loop did not let its children run"
        );
    }
}

#[test]
fn join_cells_outlive_their_runtime() {
    let rt = Runtime::builder().procs(2).build().expect("runtime builds");
    // Spawned by a goroutine, so the cells come from its M's block cache; the large output
    // does not fit a block and takes the heap.
    let (small, large) = watchdog(LIMIT, move || {
        let handles = rt
            .block_on(|| {
                let small: Vec<_> = (0..300u64)
                    .map(|index| goro::spawn(move || index * 3).expect("spawn"))
                    .collect();
                let large: Vec<_> = (0..20u8)
                    .map(|index| goro::spawn(move || [index; 512]).expect("spawn"))
                    .collect();
                (small, large)
            })
            .expect("the spawning goroutine finishes");
        // Wait for every child while the runtime lives, then drop it, with its Ms and their
        // block caches, before the handles.
        let results = rt.block_on(move || {
            let (small, large) = handles;
            for handle in &small {
                while !handle.is_finished() {
                    goro::yield_now();
                }
            }
            for handle in &large {
                while !handle.is_finished() {
                    goro::yield_now();
                }
            }
            (small, large)
        });
        drop(rt);
        results.expect("the waiting goroutine finishes")
    });
    for (index, handle) in (0..).zip(small) {
        assert_eq!(handle.join().expect("the child finished"), index * 3);
    }
    for (index, handle) in (0..).zip(large) {
        assert_eq!(handle.join().expect("the child finished"), [index; 512]);
    }

    // A new runtime's Ms adopt the homes of the dropped caches and reuse the blocks.
    let rt = Runtime::builder().procs(2).build().expect("runtime builds");
    let sum = watchdog(LIMIT, move || {
        rt.block_on(|| {
            let handles: Vec<_> = (0..1000u64)
                .map(|index| goro::spawn(move || index).expect("spawn"))
                .collect();
            handles
                .into_iter()
                .map(|handle| handle.join().expect("the child finished"))
                .sum::<u64>()
        })
        .expect("the spawning goroutine finishes")
    });
    assert_eq!(sum, 999 * 1000 / 2);
}

#[test]
fn spawn_loop_in_blocking_section_does_not_yield() {
    for (name, rt) in one_p_runtimes() {
        let sum = watchdog(LIMIT, move || {
            rt.block_on(|| {
                // A goroutine inside a blocking section holds no P and cannot yield, so the
                // loop runs to its end there.
                let handles: Vec<_> = goro::blocking(|| {
                    (0..300u64)
                        .map(|index| goro::spawn(move || index).expect("spawn"))
                        .collect()
                });
                handles
                    .into_iter()
                    .map(|handle| handle.join().expect("the child finished"))
                    .sum::<u64>()
            })
            .expect("the spawning goroutine finishes")
        });
        assert_eq!(sum, 299 * 300 / 2, "{name}");
    }
}
