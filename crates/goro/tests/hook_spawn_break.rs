//! Spawns from inside a custom scheduler's `on_yield` with `goro::spawn`. The `Scheduler`
//! docs place `on_yield` on the yielding goroutine's own stack, and state that a spawn inside
//! a hook other than `start` and `on_exitsyscall` does not yield, so the spawn must work
//! there. The fast yield path (`m::gosched`) detaches the g from its M before it calls the
//! hook, so `goro::spawn` finds the runtime through the g's record.
//!
//! The case runs in a child process, because a panic inside a yield's hook aborts it.

mod common;

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::watchdog;
use goro::{Runtime, Scheduler};
use goro_sched::{GQueue, GRef, PId, ReadyCause};

/// Set in the child process, which runs the case itself.
const CHILD_ENV: &str = "GORO_HOOK_SPAWN_CHILD";

/// The hang limit of the child.
const CHILD_LIMIT: Duration = Duration::from_secs(30);

/// One locked FIFO queue whose `on_yield` spawns a goroutine, `budget` times in all.
struct SpawnOnYield {
    queue: Mutex<GQueue>,
    budget: AtomicUsize,
    children_ran: Arc<AtomicUsize>,
}

// SAFETY: `next` pops what `ready` and `on_yield` pushed, under the queue's lock.
unsafe impl Scheduler for SpawnOnYield {
    fn name(&self) -> &'static str {
        "spawn-on-yield"
    }
    fn ready(&self, g: GRef, _cause: ReadyCause, _p: Option<PId>) {
        self.queue.lock().unwrap().push_back(g);
    }
    fn next(&self, _p: PId) -> Option<GRef> {
        self.queue.lock().unwrap().pop_front()
    }
    fn has_work(&self) -> bool {
        !self.queue.lock().unwrap().is_empty()
    }
    fn on_yield(&self, g: GRef, _p: PId) {
        self.queue.lock().unwrap().push_back(g);
        let taken = self
            .budget
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
                left.checked_sub(1)
            });
        if taken.is_ok() {
            let children_ran = self.children_ran.clone();
            // Detached: the yielding goroutine waits for the count instead.
            let _ = goro::spawn(move || {
                children_ran.fetch_add(1, Ordering::SeqCst);
            });
        }
    }
}

/// Yields on a one-P runtime whose only scheduler spawns in `on_yield`, and waits until the
/// spawned goroutines have run.
fn yield_with_spawning_hook() {
    const SPAWNS: usize = 3;
    let children_ran = Arc::new(AtomicUsize::new(0));
    let rt = Runtime::builder()
        .procs(1)
        .scheduler(SpawnOnYield {
            queue: Mutex::new(GQueue::new()),
            budget: AtomicUsize::new(SPAWNS),
            children_ran: children_ran.clone(),
        })
        .build()
        .expect("runtime builds");
    watchdog(CHILD_LIMIT, move || {
        rt.block_on(move || {
            while children_ran.load(Ordering::SeqCst) < SPAWNS {
                goro::yield_now();
            }
        })
        .expect("the yielding goroutine finishes");
    });
}

#[test]
fn goroutine_spawn_inside_on_yield() {
    if std::env::var_os(CHILD_ENV).is_some() {
        yield_with_spawning_hook();
        return;
    }
    let output = common::self_command("goroutine_spawn_inside_on_yield")
        .env(CHILD_ENV, "1")
        .output()
        .expect("the child process starts");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "goro::spawn inside on_yield failed ({}):\n{stderr}",
        output.status
    );
}
