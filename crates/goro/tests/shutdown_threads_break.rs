//! Break test for leaked runtime threads: after `Runtime::drop` returns, no M or monitor
//! thread of the runtime is left. The test counts the threads of the whole process, so it is
//! the only test of its binary.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use common::{LIMIT, build_with_scheduler, watchdog};
use goro::Runtime;

/// Names of the process's threads that start with "goro-m": the Ms ("goro-m<id>") and the
/// monitor ("goro-monitor").
fn runtime_threads() -> Vec<String> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir("/proc/self/task").expect("failed to list /proc/self/task") {
        let path = entry.expect("failed to read /proc/self/task").path();
        // A thread that exits between the listing and this read has no comm any more.
        if let Ok(comm) = std::fs::read_to_string(path.join("comm"))
            && comm.starts_with("goro-m")
        {
            names.push(comm.trim_end().to_string());
        }
    }
    names
}

/// Returns the runtime threads still listed after `grace`, polled every millisecond. A joined
/// thread can stay listed for a moment after its join returns, until the kernel reaps it.
fn threads_left_after(grace: Duration) -> Vec<String> {
    let deadline = Instant::now() + grace;
    loop {
        let names = runtime_threads();
        if names.is_empty() || Instant::now() >= deadline {
            return names;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Drops `rt` 400 ms after a goroutine entered a syscall (four times the 100 ms without
/// progress after which the drop gives up), and ends the syscall after that. The goroutine
/// then makes 20 blocking calls while a second goroutine, released with it, waits for the P.
fn late_syscalls(rt: Runtime) {
    let (ready_tx, ready_rx) = mpsc::channel();
    let mut releases = Vec::new();
    for _ in 0..2 {
        let (release_tx, release_rx) = mpsc::channel::<()>();
        releases.push(release_tx);
        let ready = ready_tx.clone();
        drop(rt.spawn(move || {
            ready.send(()).unwrap();
            goro::blocking_known(|| release_rx.recv().unwrap());
            for _ in 0..20 {
                goro::blocking_known(|| ());
            }
        }));
    }
    ready_rx.recv().unwrap();
    ready_rx.recv().unwrap();
    let helper = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(400));
        for release in releases {
            release.send(()).unwrap();
        }
    });
    drop(rt);
    helper.join().unwrap();
}

/// Drops `rt` while its only goroutine runs without switching, and has it make its first
/// syscall, which starts the monitor, after the drop has stopped the monitor.
fn first_syscall_after_shutdown(rt: Runtime) {
    let running = Arc::new(AtomicBool::new(false));
    let release = Arc::new(AtomicBool::new(false));
    {
        let running = running.clone();
        let release = release.clone();
        drop(rt.spawn(move || {
            running.store(true, Ordering::Release);
            // Acquire: pairs with the helper's Release store; only the flag matters.
            while !release.load(Ordering::Acquire) {
                std::hint::spin_loop();
            }
            goro::blocking_known(|| ());
        }));
    }
    while !running.load(Ordering::Acquire) {
        std::thread::sleep(Duration::from_millis(1));
    }
    let helper = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(400));
        release.store(true, Ordering::Release);
    });
    drop(rt);
    helper.join().unwrap();
}

/// Drops `rt` while goroutines park for good, yield in a loop, and unwind through a
/// destructor that parks for good.
fn parked_and_unwinding(rt: Runtime) {
    struct ParkInDrop;
    impl Drop for ParkInDrop {
        fn drop(&mut self) {
            loop {
                goro::park();
            }
        }
    }
    let (ready_tx, ready_rx) = mpsc::channel();
    for _ in 0..4 {
        let ready = ready_tx.clone();
        drop(rt.spawn(move || {
            let _guard = ParkInDrop;
            ready.send(()).unwrap();
            loop {
                goro::yield_now();
            }
        }));
    }
    for _ in 0..4 {
        ready_rx.recv().unwrap();
    }
    drop(rt);
}

/// No M or monitor thread ("goro-m" prefix) outlives the drop in any of three scenarios.
#[test]
fn drop_leaves_no_runtime_threads() {
    type Scenario = fn(Runtime);
    let scenarios: [(&str, Scenario); 3] = [
        ("late syscalls", late_syscalls),
        ("first syscall after shutdown", first_syscall_after_shutdown),
        ("parked and unwinding", parked_and_unwinding),
    ];
    for scheduler in ["fifo", "worksteal"] {
        for procs in [1, 2] {
            for (name, scenario) in scenarios {
                let case = format!("{name}, {scheduler}, procs {procs}");
                let rt = build_with_scheduler(
                    Runtime::builder().procs(procs).deadlock_detection(false),
                    scheduler,
                );
                watchdog(LIMIT, move || scenario(rt));
                let left = threads_left_after(Duration::from_millis(500));
                assert!(
                    left.is_empty(),
                    "{case}: runtime threads left 500 ms after the drop: {left:?}"
                );
            }
        }
    }
}
