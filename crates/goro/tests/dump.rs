//! Goroutine dumps: statuses, wait reasons, stack use and backtraces of parked goroutines.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{LIMIT, watchdog};
use goro::debug::{Backtrace, GoroutineDump, RuntimeDump};
use goro::{GStatus, Runtime, WaitReason};

/// Blocks on a channel receive until the test sends; a named function so that the backtrace
/// can be checked for it.
#[inline(never)]
fn dump_test_blocked_in_recv(receiver: goro::sync::Receiver<u32>) -> u32 {
    receiver.recv().unwrap()
}

/// Sends its handle, then parks until unparked with `release` set.
#[inline(never)]
fn dump_test_parked(release: Arc<AtomicBool>, handle: std::sync::mpsc::Sender<goro::Goroutine>) {
    handle.send(goro::current()).unwrap();
    while !release.load(Ordering::Acquire) {
        goro::park();
    }
}

/// Polls `rt.dump()` until `ready` accepts it.
fn dump_when(rt: &Runtime, ready: impl Fn(&RuntimeDump) -> bool) -> RuntimeDump {
    loop {
        let dump = rt.dump();
        if ready(&dump) {
            return dump;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn goroutine(dump: &RuntimeDump, goid: u64) -> &GoroutineDump {
    dump.goroutines
        .iter()
        .find(|g| g.goid == goid)
        .unwrap_or_else(|| panic!("g{goid} missing from the dump:\n{dump}"))
}

fn function_names(g: &GoroutineDump) -> Vec<String> {
    match &g.backtrace {
        Backtrace::Frames(frames) => frames
            .iter()
            .map(|f| f.function.clone().unwrap_or_else(|| "?".into()))
            .collect(),
        Backtrace::Unavailable(reason) => panic!("g{} has no backtrace: {reason}", g.goid),
    }
}

/// A goroutine that never ran resumes at the first instruction of its entry trampoline. Its
/// one frame names the trampoline, not the function that happens to lie before it.
#[test]
fn dump_names_trampoline_of_unstarted_goroutine() {
    let rt = Runtime::builder().procs(1).build().unwrap();
    watchdog(LIMIT, move || {
        let release = Arc::new(AtomicBool::new(false));
        let flag = release.clone();
        // Keeps the one P busy, so the goroutine spawned next stays runnable and unstarted.
        let busy = rt
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::hint::spin_loop();
                }
            })
            .unwrap();
        let dump = dump_when(&rt, |dump| {
            dump.goroutines
                .iter()
                .any(|g| g.goid == busy.goid() && g.status == GStatus::Running)
        });
        drop(dump);
        let unstarted = rt.spawn(|| ()).unwrap();
        let dump = rt.dump();
        let text = dump.to_string();
        let names = function_names(goroutine(&dump, unstarted.goid()));
        assert_eq!(
            names.len(),
            1,
            "an unstarted goroutine has one frame:\n{text}"
        );
        assert!(
            names[0].contains("trampoline"),
            "the frame names the entry trampoline:\n{text}"
        );
        // Relaxed: the flag carries no data.
        release.store(true, Ordering::Relaxed);
        busy.join().unwrap();
        unstarted.join().unwrap();
    });
}

#[test]
fn dump_shows_parked_goroutines() {
    let rt = Runtime::builder().procs(2).build().unwrap();
    watchdog(LIMIT, move || {
        let (sender, receiver) = goro::sync::channel::<u32>(0);
        let receiving = rt
            .spawn(move || dump_test_blocked_in_recv(receiver))
            .unwrap();
        let release = Arc::new(AtomicBool::new(false));
        let flag = release.clone();
        let (handle_sender, handle) = std::sync::mpsc::channel();
        let parked = rt
            .spawn(move || dump_test_parked(flag, handle_sender))
            .unwrap();
        let sleeping = rt.spawn(|| goro::sleep(Duration::from_secs(3600))).unwrap();
        let (recv_id, park_id) = (receiving.goid(), parked.goid());

        let dump = dump_when(&rt, |dump| {
            [recv_id, park_id].iter().all(|&id| {
                dump.goroutines
                    .iter()
                    .any(|g| g.goid == id && g.status == GStatus::Waiting)
            })
        });
        let text = dump.to_string();
        let in_recv = goroutine(&dump, recv_id);
        assert_eq!(in_recv.wait_reason, WaitReason::ChanRecv, "{text}");
        assert_eq!(in_recv.scheduler, "fifo", "{text}");
        assert!(in_recv.in_status.is_some(), "{text}");
        let used = in_recv.stack.used.expect("a parked g's stack use is known");
        assert!(used > 0 && used < in_recv.stack.size(), "{text}");

        let names = function_names(in_recv);
        assert!(
            names
                .iter()
                .any(|n| n.contains("dump_test_blocked_in_recv")),
            "the backtrace names the goroutine's function:\n{text}"
        );
        assert!(names.iter().any(|n| n.contains("g_entry")), "{text}");
        assert!(
            names.last().unwrap().contains("trampoline"),
            "the backtrace ends at the stack's entry trampoline:\n{text}"
        );
        assert!(text.contains("[chan receive"), "{text}");

        let in_park = goroutine(&dump, park_id);
        assert_eq!(in_park.wait_reason, WaitReason::Park, "{text}");
        assert!(
            function_names(in_park)
                .iter()
                .any(|n| n.contains("dump_test_parked")),
            "{text}"
        );

        sender.send(7).unwrap();
        release.store(true, Ordering::Release);
        handle.recv().unwrap().unpark();
        assert_eq!(receiving.join().unwrap(), 7);
        parked.join().unwrap();
        drop(sleeping);
    });
}

#[test]
fn dump_of_running_goroutine_has_no_backtrace() {
    // NOTE: under QEMU user mode this test once spun for minutes in a release build on
    // aarch64 (the spinning goroutine was never seen as Running by the dump); until that is
    // understood it runs natively only.
    if std::env::var_os("GORO_TEST_RUNNER").is_some() {
        eprintln!("skipped under QEMU: the running-goroutine dump is checked natively");
        return;
    }
    let rt = Runtime::builder().procs(2).build().unwrap();
    let rt = Arc::new(rt);
    let inner = rt.clone();
    watchdog(LIMIT, move || {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let spinning = inner
            .spawn(move || {
                while !flag.load(Ordering::Acquire) {
                    std::hint::spin_loop();
                }
            })
            .unwrap();
        let goid = spinning.goid();
        let dump = dump_when(&inner, |dump| {
            dump.goroutines
                .iter()
                .any(|g| g.goid == goid && g.status == GStatus::Running)
        });
        let g = goroutine(&dump, goid);
        assert!(matches!(g.backtrace, Backtrace::Unavailable(_)), "{dump}");
        assert!(g.m.is_some(), "a running g names its M:\n{dump}");
        assert!(
            dump.ms.iter().any(|m| m.curg == Some(goid)),
            "its M lists it as curg:\n{dump}"
        );
        stop.store(true, Ordering::Release);
        spinning.join().unwrap();
    });
    drop(rt);
}

#[test]
fn process_dump_lists_every_runtime() {
    let first = Runtime::builder().procs(1).build().unwrap();
    let second = Runtime::builder().procs(1).build().unwrap();
    let dump = goro::debug::dump();
    let ids: Vec<u64> = dump.runtimes.iter().map(|r| r.runtime_id).collect();
    assert!(
        ids.contains(&first.dump().runtime_id) && ids.contains(&second.dump().runtime_id),
        "{ids:?}"
    );
    let second_id = second.dump().runtime_id;
    drop(second);
    let ids: Vec<u64> = goro::debug::dump()
        .runtimes
        .iter()
        .map(|r| r.runtime_id)
        .collect();
    assert!(
        !ids.contains(&second_id),
        "a dropped runtime leaves the dump: {ids:?}"
    );
}

/// Each dump taken while two goroutines spawn goroutines in a loop lists every goroutine that
/// stays parked throughout, and no goroutine twice. Spawns and exits link and unlink registry
/// nodes beside the parked goroutines' nodes, under the shard locks that dumps take too.
#[test]
fn dump_during_spawn_churn() {
    const PARKED: usize = 16;
    const SPAWNS: usize = 20_000;
    watchdog(LIMIT, || {
        let rt = Runtime::builder()
            .procs(2)
            .deadlock_detection(false)
            .build()
            .unwrap();
        let (release, parked_on) = goro::sync::channel::<()>(0);
        let parked: Vec<_> = (0..PARKED)
            .map(|_| {
                let parked_on = parked_on.clone();
                rt.spawn(move || {
                    let goid = goro::current().goid();
                    let _ = parked_on.recv();
                    goid
                })
                .unwrap()
            })
            .collect();
        let parked_goids: Vec<u64> = parked.iter().map(|h| h.goid()).collect();
        dump_when(&rt, |dump| {
            parked_goids
                .iter()
                .all(|&goid| goroutine(dump, goid).status == GStatus::Waiting)
        });
        let spawners: Vec<_> = (0..2)
            .map(|_| {
                rt.spawn(|| {
                    for i in 0..SPAWNS {
                        drop(goro::spawn(move || std::hint::black_box(i)).unwrap());
                    }
                })
                .unwrap()
            })
            .collect();
        let mut dumps = 0;
        while dumps < 10 || !spawners.iter().all(|s| s.is_finished()) {
            let dump = rt.dump();
            let mut goids: Vec<u64> = dump.goroutines.iter().map(|g| g.goid).collect();
            for &goid in &parked_goids {
                assert_eq!(goroutine(&dump, goid).status, GStatus::Waiting);
            }
            let listed = goids.len();
            goids.sort_unstable();
            goids.dedup();
            assert_eq!(goids.len(), listed, "a goroutine listed twice:\n{dump}");
            dumps += 1;
        }
        for spawner in spawners {
            spawner.join().unwrap();
        }
        drop(release);
        for (handle, goid) in parked.into_iter().zip(parked_goids) {
            assert_eq!(handle.join().unwrap(), goid);
        }
    });
}
