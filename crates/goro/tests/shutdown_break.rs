//! Break tests for `Runtime::drop` after Ms stopped starting at shutdown: goroutines whose
//! syscalls outlive the drop's cancellation finish their bodies, also when they panic and
//! their destructors make blocking calls.

mod common;

use std::sync::mpsc;
use std::time::Duration;

use common::{LIMIT, build_with_scheduler, watchdog};
use goro::{Runtime, SpawnError};

/// How long the helper thread waits after the drop began before it ends the blocking calls.
/// Ten times the 100 ms without progress after which the drop gives up on its goroutines, so
/// the runtime has shut down when the calls return, also on a loaded machine.
const RELEASE_AFTER: Duration = Duration::from_secs(1);

/// What a goroutine that left its syscall after the shutdown did next.
#[derive(Debug)]
struct LateReport {
    /// Whether a spawn failed with `SpawnError::Shutdown`, which shows that the runtime had
    /// shut down.
    saw_shutdown: bool,
    /// Blocking calls it made and finished after the shutdown.
    blocking_calls: usize,
}

/// Makes 10 calls each of `goro::blocking_known` and `goro::blocking`, then checks with a
/// spawn that the runtime has shut down.
fn blocking_calls_after_shutdown() -> LateReport {
    let mut blocking_calls = 0;
    for _ in 0..10 {
        goro::blocking_known(|| ());
        blocking_calls += 1;
        goro::blocking(|| std::thread::sleep(Duration::from_millis(1)));
        blocking_calls += 1;
    }
    let saw_shutdown = matches!(goro::spawn(|| ()), Err(SpawnError::Shutdown));
    LateReport {
        saw_shutdown,
        blocking_calls,
    }
}

/// Spawns one goroutine per P that blocks in a syscall, which a helper thread ends after the
/// drop has shut the runtime down. Drops the runtime and returns the reports that the
/// goroutines sent within 10 s.
fn drop_with_late_syscalls(rt: Runtime, procs: usize) -> Vec<LateReport> {
    let (ready_tx, ready_rx) = mpsc::channel();
    let (report_tx, report_rx) = mpsc::channel();
    let mut releases = Vec::new();
    for _ in 0..procs {
        let (release_tx, release_rx) = mpsc::channel::<()>();
        releases.push(release_tx);
        let ready = ready_tx.clone();
        let report = report_tx.clone();
        drop(rt.spawn(move || {
            ready.send(()).unwrap();
            goro::blocking_known(|| release_rx.recv().unwrap());
            report.send(blocking_calls_after_shutdown()).unwrap();
        }));
    }
    drop(report_tx);

    for _ in 0..procs {
        ready_rx.recv().unwrap();
    }
    let helper = std::thread::spawn(move || {
        std::thread::sleep(RELEASE_AFTER);
        for release in releases {
            release.send(()).unwrap();
        }
    });
    drop(rt);
    helper.join().unwrap();

    let mut reports = Vec::new();
    while reports.len() < procs {
        match report_rx.recv_timeout(Duration::from_secs(10)) {
            Ok(report) => reports.push(report),
            Err(_) => break,
        }
    }
    reports
}

/// Goroutines whose syscalls return after the shutdown make 20 blocking calls and finish.
#[test]
fn late_syscalls_finish_after_shutdown() {
    for scheduler in ["fifo", "worksteal"] {
        for procs in [1, 2] {
            for max_threads in [None, Some(procs + 1)] {
                let case = format!("{scheduler}, procs {procs}, max_threads {max_threads:?}");
                let mut builder = Runtime::builder().procs(procs);
                if let Some(max_threads) = max_threads {
                    builder = builder.max_threads(max_threads);
                }
                let rt = build_with_scheduler(builder, scheduler);
                let reports = watchdog(LIMIT, move || drop_with_late_syscalls(rt, procs));
                assert_eq!(
                    reports.len(),
                    procs,
                    "{case}: a goroutine that left its syscall after the shutdown never \
                     finished: {reports:?}"
                );
                for report in &reports {
                    assert!(
                        report.saw_shutdown,
                        "{case}: the runtime had not shut down when the syscall returned"
                    );
                    assert_eq!(report.blocking_calls, 20, "{case}: blocking calls lost");
                }
            }
        }
    }
}

/// Makes blocking calls and tries a spawn when dropped, then reports what it saw.
struct BlockInDrop {
    report: mpsc::Sender<(usize, bool)>,
}

impl Drop for BlockInDrop {
    fn drop(&mut self) {
        let mut calls = 0;
        for _ in 0..5 {
            goro::blocking_known(|| ());
            calls += 1;
        }
        let rejected = matches!(goro::spawn(|| ()), Err(SpawnError::Shutdown));
        let _ = self.report.send((calls, rejected));
    }
}

/// A goroutine that panics after the shutdown finishes a destructor that makes blocking calls.
#[test]
fn panic_after_shutdown_finishes_unwind() {
    for scheduler in ["fifo", "worksteal"] {
        for procs in [1, 2] {
            let rt = build_with_scheduler(Runtime::builder().procs(procs), scheduler);
            let report = watchdog(LIMIT, move || {
                let (ready_tx, ready_rx) = mpsc::channel();
                let (release_tx, release_rx) = mpsc::channel::<()>();
                let (report_tx, report_rx) = mpsc::channel();
                let handle = rt
                    .spawn(move || {
                        let _guard = BlockInDrop { report: report_tx };
                        ready_tx.send(()).unwrap();
                        goro::blocking_known(|| release_rx.recv().unwrap());
                        panic!("planned panic after the shutdown");
                    })
                    .unwrap();
                ready_rx.recv().unwrap();
                let helper = std::thread::spawn(move || {
                    std::thread::sleep(RELEASE_AFTER);
                    release_tx.send(()).unwrap();
                });
                drop(rt);
                helper.join().unwrap();
                let report = report_rx.recv_timeout(Duration::from_secs(10));
                let joined = handle.join();
                (report, joined.is_err())
            });
            let case = format!("{scheduler}, procs {procs}");
            let (destructor, join_failed) = report;
            assert_eq!(
                destructor.ok(),
                Some((5, true)),
                "{case}: the destructor of the panicking goroutine did not finish after the \
                 shutdown"
            );
            assert!(
                join_failed,
                "{case}: join of the panicked goroutine succeeded"
            );
        }
    }
}
