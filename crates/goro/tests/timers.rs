//! Sleeping goroutines and deadlock detection.

mod common;

use std::time::{Duration, Instant};

use common::{LIMIT, watchdog};
use goro::{JoinError, Runtime};

#[test]
fn sleep_never_wakes_early() {
    let rt = Runtime::builder().procs(2).build().unwrap();
    let elapsed = watchdog(LIMIT, move || {
        rt.block_on(|| {
            let start = Instant::now();
            goro::sleep(Duration::from_millis(10));
            start.elapsed()
        })
        .unwrap()
    });
    assert!(
        elapsed >= Duration::from_millis(10),
        "woke after {elapsed:?}"
    );
}

#[test]
fn sleeping_goroutine_leaves_its_p_to_others() {
    let rt = Runtime::builder().procs(1).build().unwrap();
    let order = watchdog(LIMIT, move || {
        rt.block_on(|| {
            let sleeper = goro::spawn(|| {
                goro::sleep(Duration::from_millis(50));
                "sleeper"
            })
            .unwrap();
            let runner = goro::spawn(|| "runner").unwrap();
            // The runner finishes while the sleeper sleeps, on the same single P.
            let first = runner.join().unwrap();
            (first, sleeper.join().unwrap())
        })
        .unwrap()
    });
    assert_eq!(order, ("runner", "sleeper"));
}

#[test]
fn ten_thousand_sleepers_all_wake() {
    let rt = Runtime::builder().procs(2).build().unwrap();
    let woken = watchdog(LIMIT, move || {
        rt.block_on(|| {
            let handles: Vec<_> = (0..10_000u64)
                .map(|i| {
                    goro::spawn(move || {
                        let duration = Duration::from_micros(100 * (i % 50));
                        let start = Instant::now();
                        goro::sleep(duration);
                        assert!(start.elapsed() >= duration, "sleeper {i} woke early");
                    })
                    .unwrap()
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).count()
        })
        .unwrap()
    });
    assert_eq!(woken, 10_000);
}

#[test]
fn goroutines_parked_forever_are_a_deadlock() {
    let rt = std::sync::Arc::new(Runtime::builder().procs(2).build().unwrap());
    // Several rounds: the second P's check for a deadlock may still be running when the
    // next goroutine is spawned, and must not report that goroutine's join as a deadlock.
    for round in 0..20 {
        let rt = rt.clone();
        let error = watchdog(LIMIT, move || {
            let result = rt.block_on(|| {
                // Two goroutines wait for each other; nothing else can wake them.
                let a = goro::spawn(goro::park).unwrap();
                let b = goro::spawn(goro::park).unwrap();
                a.join().unwrap();
                b.join().unwrap();
            });
            // The runtime keeps working after a deadlock report.
            assert_eq!(rt.block_on(|| 3).unwrap(), 3, "round {round}");
            result
        })
        .unwrap_err();
        assert!(matches!(error, JoinError::Deadlock { .. }), "{error}");
        assert!(
            error
                .to_string()
                .contains("all goroutines are asleep - deadlock"),
            "{error}"
        );
    }
}

#[test]
fn sleep_and_syscalls_are_no_deadlock() {
    let rt = Runtime::builder().procs(1).build().unwrap();
    watchdog(LIMIT, move || {
        rt.block_on(|| {
            let sleeper = goro::spawn(|| goro::sleep(Duration::from_millis(100))).unwrap();
            let in_syscall = goro::spawn(|| {
                goro::blocking(|| std::thread::sleep(Duration::from_millis(100)));
            })
            .unwrap();
            sleeper.join().unwrap();
            in_syscall.join().unwrap();
        })
        .unwrap();
    });
}

#[test]
fn deadlock_report_lists_each_goroutine() {
    // The report goes to stderr: run a child process that deadlocks and read it.
    if std::env::var("GORO_DEADLOCK_CHILD").is_ok() {
        let rt = Runtime::builder().procs(1).build().unwrap();
        let error = rt.block_on(goro::park).unwrap_err();
        println!("join error: {error}");
        // The stuck goroutine stays; idle periods after these runs find the same set and
        // print nothing more. Each spawn from this thread races the check that runs when
        // the previous goroutine exits. A report listing the new goroutine would be false,
        // and 200 rounds make that race likely to show.
        for _ in 0..200 {
            assert_eq!(rt.block_on(|| 3).unwrap(), 3);
        }
        // A second stuck goroutine changes the set, so it is reported.
        let error = rt.block_on(goro::park).unwrap_err();
        println!("join error: {error}");
        return;
    }
    let output = common::self_command("deadlock_report_lists_each_goroutine")
        .env("GORO_DEADLOCK_CHILD", "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains("all goroutines are asleep - deadlock!"),
        "{stderr}"
    );
    assert!(stderr.contains("[park, scheduler fifo]"), "{stderr}");
    assert_eq!(
        stderr.matches("all goroutines are asleep").count(),
        2,
        "one report per distinct set of stuck goroutines: {stderr}"
    );
    assert_eq!(
        stdout.matches("join error: goroutine").count(),
        2,
        "{stdout}"
    );
}

/// No `Instant` can represent `Duration::MAX` from now, so the deadline cannot be computed
/// with `+`. The goroutine must sleep (on a timer, as Go's `time.Sleep` does) until the
/// runtime is dropped, not panic.
#[test]
fn sleep_duration_max_until_shutdown() {
    let rt = Runtime::builder().procs(1).build().unwrap();
    let sleeper = watchdog(LIMIT, move || {
        let sleeper = rt
            .block_on(|| {
                let sleeper = goro::spawn(|| goro::sleep(Duration::MAX)).unwrap();
                goro::sleep(Duration::from_millis(50));
                assert!(
                    !sleeper.is_finished(),
                    "sleep(Duration::MAX) returned or panicked"
                );
                sleeper
            })
            .unwrap();
        drop(rt);
        sleeper
    });
    let error = sleeper.join().unwrap_err();
    assert!(
        matches!(error, JoinError::Shutdown { .. }),
        "the sleeper ended with {error:?}, not by the shutdown"
    );
}

/// A timeout too large for an `Instant` waits without a deadline, as Rust 1.95's
/// `std::sync::mpsc::Receiver::recv_timeout` does.
#[test]
fn recv_timeout_duration_max_waits() {
    let rt = Runtime::builder().procs(1).build().unwrap();
    let received = watchdog(LIMIT, move || {
        rt.block_on(|| {
            let (sender, receiver) = goro::sync::channel::<u32>(0);
            let sending = goro::spawn(move || {
                goro::sleep(Duration::from_millis(20));
                sender.send(5).unwrap();
            })
            .unwrap();
            let received = receiver.recv_timeout(Duration::MAX);
            sending.join().unwrap();
            received
        })
        .unwrap()
    });
    assert_eq!(received, Ok(5));
}

/// A select without cases can only time out, so it must wait out its timeout, as Go's
/// `select { case <-time.After(d): }` does, before it runs the handler.
#[test]
fn empty_select_waits_out_timeout() {
    let rt = Runtime::builder().procs(1).build().unwrap();
    let elapsed = watchdog(LIMIT, move || {
        rt.block_on(|| {
            let start = Instant::now();
            goro::sync::Select::new().wait_timeout(Duration::from_millis(50), || ());
            start.elapsed()
        })
        .unwrap()
    });
    assert!(
        elapsed >= Duration::from_millis(50),
        "the handler ran after {elapsed:?}"
    );
}
