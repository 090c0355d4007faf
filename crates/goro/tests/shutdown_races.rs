//! A runtime's drop racing the code it runs: destructors that spawn, join or free custom gs
//! while the runtime unwinds its goroutines, and a spawn on g0 right after the last goroutine
//! exits.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{LIMIT, runtime_without_deadlock_detection as runtime, watchdog};
use goro::{GHeader, Runtime, custom_g};

/// Spawns `goroutines` goroutines that each make `guard` and park for good, and waits until
/// all of them have parked.
fn park_forever<G: Send + 'static>(
    rt: &Runtime,
    goroutines: usize,
    guard: impl Fn() -> G + Send + Sync + 'static,
) {
    let parked = Arc::new(AtomicUsize::new(0));
    let guard = Arc::new(guard);
    for _ in 0..goroutines {
        let parked = Arc::clone(&parked);
        let guard = Arc::clone(&guard);
        drop(rt.spawn(move || {
            let _guard = guard();
            parked.fetch_add(1, Ordering::SeqCst);
            loop {
                goro::park();
            }
        }));
    }
    while parked.load(Ordering::SeqCst) < goroutines {
        std::thread::sleep(Duration::from_millis(1));
    }
}

static CLEANUPS_SPAWNED: AtomicUsize = AtomicUsize::new(0);
static CLEANUPS_RAN: AtomicUsize = AtomicUsize::new(0);

/// Spawns a cleanup goroutine when dropped, and unwraps the spawn as most code does.
struct SpawnOnDrop;

impl Drop for SpawnOnDrop {
    fn drop(&mut self) {
        goro::spawn(|| {
            CLEANUPS_RAN.fetch_add(1, Ordering::SeqCst);
        })
        .expect("a destructor that unwinds may spawn");
        CLEANUPS_SPAWNED.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn destructors_spawn_while_the_runtime_unwinds() {
    for procs in [1, 2] {
        let rt = runtime(procs);
        park_forever(&rt, 100, || SpawnOnDrop);
        // Before spawns from unwinding goroutines were accepted, the refused spawn's unwrap
        // panicked inside the destructor and aborted the process.
        watchdog(LIMIT, move || drop(rt));
    }
    assert_eq!(CLEANUPS_SPAWNED.load(Ordering::SeqCst), 200);
    // A cleanup goroutine runs unless the drop gave up on it; it is never run twice.
    assert!(CLEANUPS_RAN.load(Ordering::SeqCst) <= 200);
}

/// Joins a goroutine that parks for good when dropped, which parks the dropping goroutine.
struct JoinOnDrop(Option<goro::JoinHandle<()>>);

impl Drop for JoinOnDrop {
    fn drop(&mut self) {
        if let Some(child) = self.0.take() {
            let _ = child.join();
        }
    }
}

#[test]
fn destructors_join_while_the_runtime_unwinds() {
    for _ in 0..5 {
        let rt = runtime(2);
        park_forever(&rt, 50, || {
            let child = goro::spawn(|| {
                loop {
                    goro::park();
                }
            })
            .expect("spawn");
            JoinOnDrop(Some(child))
        });
        // The join parks inside the unwind, and the goroutine may resume on another M, where
        // the thread's panic count is zero. Before the goroutine's own flag, the runtime
        // started a second unwind there, inside the destructor, which aborted the process.
        watchdog(LIMIT, move || drop(rt));
    }
}

static BLOCK_DROPS: AtomicUsize = AtomicUsize::new(0);
static BLOCK_DROPS_OFF_M: AtomicUsize = AtomicUsize::new(0);

/// Records whether the custom g's block was dropped on a thread that runs no goroutine.
pub struct NoteDropThread;

impl Drop for NoteDropThread {
    fn drop(&mut self) {
        BLOCK_DROPS.fetch_add(1, Ordering::SeqCst);
        if goro::debug::m_id().is_none() {
            BLOCK_DROPS_OFF_M.fetch_add(1, Ordering::SeqCst);
        }
    }
}

custom_g! {
    /// A g whose block notes the thread it is dropped on.
    pub struct NotingG {
        /// The header.
        pub header: GHeader,
        /// Notes the thread of the block's drop.
        pub field: NoteDropThread,
    }
}

#[test]
fn custom_g_blocks_drop_on_ms_during_shutdown() {
    for _ in 0..2 {
        let rt = runtime(2);
        let scheduler = rt.default_scheduler().clone();
        let parked = Arc::new(AtomicUsize::new(0));
        for _ in 0..2000 {
            let parked = Arc::clone(&parked);
            let g = NotingG {
                header: GHeader::new(),
                field: NoteDropThread,
            };
            drop(rt.spawn_g(g, &scheduler, move || {
                parked.fetch_add(1, Ordering::SeqCst);
                loop {
                    goro::park();
                }
            }));
        }
        while parked.load(Ordering::SeqCst) < 2000 {
            std::thread::sleep(Duration::from_millis(1));
        }
        watchdog(LIMIT, move || drop(rt));
    }
    assert_eq!(BLOCK_DROPS.load(Ordering::SeqCst), 4000);
    // Before the drop cancelled goroutines inside the registry walk, it held handles to them,
    // and releasing the last one ran the block's drop on the dropping thread.
    assert_eq!(
        BLOCK_DROPS_OFF_M.load(Ordering::SeqCst),
        0,
        "custom g blocks were dropped on a thread that runs no goroutine"
    );
}

static RACE_SPAWNED: AtomicUsize = AtomicUsize::new(0);
static RACE_RAN: AtomicUsize = AtomicUsize::new(0);

/// Spawns a goroutine when dropped, after a pause of `pause` nanoseconds.
struct SpawnOnG0 {
    dropping: Arc<AtomicBool>,
    pause: u64,
}

impl Drop for SpawnOnG0 {
    fn drop(&mut self) {
        self.dropping.store(true, Ordering::SeqCst);
        let start = Instant::now();
        while start.elapsed() < Duration::from_nanos(self.pause) {}
        let spawned = goro::spawn(|| {
            RACE_RAN.fetch_add(1, Ordering::SeqCst);
        });
        if spawned.is_ok() {
            RACE_SPAWNED.fetch_add(1, Ordering::SeqCst);
        }
    }
}

#[test]
fn g0_spawn_during_drop_runs_or_fails() {
    for round in 0..1000u64 {
        let rt = Runtime::builder().procs(1).build().expect("runtime builds");
        let dropping = Arc::new(AtomicBool::new(false));
        let go = Arc::new(AtomicBool::new(false));
        let output = SpawnOnG0 {
            dropping: Arc::clone(&dropping),
            pause: (round % 40) * 500,
        };
        let started = Arc::clone(&go);
        let handle = rt
            .spawn(move || {
                while !started.load(Ordering::SeqCst) {
                    std::hint::spin_loop();
                }
                output
            })
            .expect("spawn");
        // Detached before the goroutine returns, so that its output drops on its M's g0,
        // after the goroutine has left the live count.
        drop(handle);
        go.store(true, Ordering::SeqCst);
        while !dropping.load(Ordering::SeqCst) {
            std::hint::spin_loop();
        }
        drop(rt);
        // Every M has been joined: the spawn on g0 is over, and its child ran or never will.
        assert_eq!(
            RACE_SPAWNED.load(Ordering::SeqCst),
            RACE_RAN.load(Ordering::SeqCst),
            "round {round}: a goroutine spawned during the drop never ran"
        );
    }
}

/// Returns a dump of the runtime of the calling goroutine, found by its goroutine id, which
/// is unique in the process.
fn own_runtime_dump() -> goro::debug::RuntimeDump {
    let own = goro::current().goid();
    goro::debug::dump()
        .runtimes
        .into_iter()
        .find(|runtime| runtime.goroutines.iter().any(|g| g.goid == own))
        .expect("no runtime lists the calling goroutine")
}

#[test]
fn blocking_calls_start_no_ms_after_shutdown() {
    watchdog(LIMIT, || {
        let rt = runtime(1);
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let (counts_tx, counts_rx) = std::sync::mpsc::channel();
        // Blocked in a syscall, so the drop's cancellation does not reach it. Released after
        // the shutdown while the other goroutine holds the only P, it ends up queued. No M
        // runs that work any more, so each P handoff below requests an M to run it.
        let ready = ready_tx.clone();
        drop(rt.spawn(move || {
            ready.send(()).unwrap();
            goro::blocking_known(|| release_rx.recv().unwrap());
        }));
        drop(rt.spawn(move || {
            ready_tx.send(()).unwrap();
            // Ten times as long as the drop waits for its goroutines to finish (100 ms without
            // one finishing), so the runtime is shut down when this returns.
            goro::blocking_known(|| std::thread::sleep(Duration::from_secs(1)));
            let own = goro::current().goid();
            release_tx.send(()).unwrap();
            // Waits, holding the P, until the released goroutine is queued. It would take the
            // P while this one is in a blocking call below, and this one would then be queued
            // behind it, with no M left to run either.
            let before = loop {
                let dump = own_runtime_dump();
                let blocked = dump
                    .goroutines
                    .iter()
                    .any(|g| g.goid != own && g.status == goro::GStatus::Syscall);
                if !blocked {
                    break dump.ms.len();
                }
                std::hint::spin_loop();
            };
            for _ in 0..20 {
                goro::blocking_known(|| ());
            }
            counts_tx
                .send((before, own_runtime_dump().ms.len()))
                .unwrap();
        }));
        ready_rx.recv().unwrap();
        ready_rx.recv().unwrap();
        drop(rt);
        let (before, after) = counts_rx.recv_timeout(Duration::from_secs(10)).expect(
            "the goroutine that made blocking calls after the shutdown never reported: an M \
             started for its P took the P, and the goroutine was queued with no M to run it",
        );
        assert_eq!(
            after, before,
            "Ms started by 20 blocking calls after the runtime shut down"
        );
    });
}
