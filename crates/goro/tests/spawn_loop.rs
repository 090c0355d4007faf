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

static CREATED: AtomicUsize = AtomicUsize::new(0);
static DROPPED: AtomicUsize = AtomicUsize::new(0);

/// A goroutine output that counts its creations and drops.
struct Counted;

impl Counted {
    fn new() -> Counted {
        CREATED.fetch_add(1, Ordering::SeqCst);
        Counted
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        DROPPED.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn runtime_drop_during_spawn_loop_drops_every_output() {
    for round in 0..5 {
        let rt = Runtime::builder().procs(1).build().expect("runtime builds");
        let spawner = rt
            .spawn(|| {
                let mut handles = Vec::new();
                while let Ok(handle) = goro::spawn(|| {
                    let start = std::time::Instant::now();
                    while start.elapsed() < std::time::Duration::from_micros(20) {}
                    Counted::new()
                }) {
                    handles.push(handle);
                }
                handles.len()
            })
            .expect("spawn");
        std::thread::sleep(std::time::Duration::from_millis(20 + round));
        watchdog(LIMIT, move || drop(rt));
        // The spawner either unwound in a yield or saw the refusal of a dropping runtime.
        let _ = spawner.join();
        assert_eq!(
            CREATED.load(Ordering::SeqCst),
            DROPPED.load(Ordering::SeqCst),
            "round {round}: an output of a goroutine spawned before the drop was never dropped"
        );
    }
}

#[test]
fn spawn_loop_ends_when_its_runtime_drops() {
    let rt = Runtime::builder().procs(2).build().expect("runtime builds");
    let spawner = rt
        .spawn(|| {
            let mut spawned = 0u64;
            loop {
                match goro::spawn(|| ()) {
                    Ok(handle) => drop(handle),
                    Err(error) => return (spawned, error),
                }
                spawned += 1;
            }
        })
        .expect("spawn");
    std::thread::sleep(std::time::Duration::from_millis(5));
    // Before the refusal, this drop waited for the live count to stop changing, which a
    // spawning loop never let happen.
    watchdog(LIMIT, move || drop(rt));
    match spawner.join() {
        Ok((_, error)) => assert!(
            matches!(error, goro::SpawnError::Shutdown),
            "unexpected error: {error}"
        ),
        Err(error) => assert!(
            matches!(error, goro::JoinError::Shutdown { .. }),
            "unexpected error: {error}"
        ),
    }
}

/// Spawns goroutines when dropped and records whether the drop ended on another thread.
struct SpawnOnDrop {
    moved: Arc<AtomicUsize>,
}

impl Drop for SpawnOnDrop {
    fn drop(&mut self) {
        let before = common::gettid();
        for _ in 0..300 {
            drop(goro::spawn(|| ()));
        }
        if common::gettid() != before {
            self.moved.fetch_add(1, Ordering::SeqCst);
        }
    }
}

#[test]
fn spawns_during_a_panic_stay_on_the_thread() {
    let rt = Runtime::builder().procs(2).build().expect("runtime builds");
    let moved = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&moved);
    watchdog(LIMIT, move || {
        rt.block_on(move || {
            let handles: Vec<_> = (0..20)
                .map(|_| {
                    let moved = Arc::clone(&counted);
                    goro::spawn(move || {
                        let _guard = SpawnOnDrop { moved };
                        panic!("unwinds through a drop that spawns");
                    })
                    .expect("spawn")
                })
                .collect();
            for handle in handles {
                assert!(handle.join().is_err(), "the goroutine panicked");
            }
        })
        .expect("the spawning goroutine finishes");
    });
    // Unwinding must stay on one thread: the panic count is per thread.
    assert_eq!(
        moved.load(Ordering::SeqCst),
        0,
        "a panicking goroutine moved"
    );
}

goro::custom_g! {
    /// A g with a field that spawns when the g's block is dropped.
    struct DropSpawningG {
        header: goro::GHeader,
        spawner: SpawnOnDrop,
    }
}

#[test]
fn custom_g_drop_that_spawns_returns_its_stack() {
    let rt = Runtime::builder().procs(2).build().expect("runtime builds");
    let scheduler = rt.default_scheduler().clone();
    let moved = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&moved);
    watchdog(LIMIT, move || {
        rt.block_on(move || {
            // Churn keeps both Ms taking stacks from and returning them to their caches, so
            // that a stack returned to the wrong M's cache races with that M.
            let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let churn = {
                let stop = Arc::clone(&stop);
                goro::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        let batch: Vec<_> = (0..64)
                            .map(|_| goro::spawn(|| ()).expect("spawn"))
                            .collect();
                        for handle in batch {
                            handle.join().expect("a churn goroutine finished");
                        }
                    }
                })
                .expect("spawn")
            };
            for _ in 0..200 {
                let slot = Arc::new(std::sync::Mutex::new(None));
                let filled = Arc::clone(&slot);
                let g = DropSpawningG {
                    header: goro::GHeader::new(),
                    spawner: SpawnOnDrop {
                        moved: Arc::clone(&counted),
                    },
                };
                let handle = goro::spawn_g(g, &scheduler, move || {
                    *filled.lock().expect("slot") = Some(goro::current());
                })
                .expect("spawn");
                handle.join().expect("the custom g finished");
                let last = slot
                    .lock()
                    .expect("slot")
                    .take()
                    .expect("the g filled the slot");
                // The last reference: the block drops here, on this goroutine, and its
                // drop yields while spawning.
                drop(last);
            }
            stop.store(true, Ordering::Relaxed);
            churn.join().expect("the churn goroutine finished");
        })
        .expect("the spawning goroutine finishes");
    });
    eprintln!(
        "{} of 200 block drops ended on another thread",
        moved.load(Ordering::SeqCst)
    );
}

#[test]
fn spawn_yields_off_allows_std_mutex_across_spawns() {
    let rt = Runtime::builder()
        .procs(1)
        .spawn_yields(false)
        .build()
        .expect("runtime builds");
    let total = watchdog(LIMIT, move || {
        rt.block_on(|| {
            let shared = Arc::new(std::sync::Mutex::new(0u64));
            let handles: Vec<_> = {
                let _locked = shared.lock().expect("lock");
                (0..300)
                    .map(|_| {
                        let shared = Arc::clone(&shared);
                        goro::spawn(move || *shared.lock().expect("lock") += 1).expect("spawn")
                    })
                    .collect()
            };
            for handle in handles {
                handle.join().expect("the child finished");
            }
            *shared.lock().expect("lock")
        })
        .expect("the spawning goroutine finishes")
    });
    assert_eq!(total, 300);
}
