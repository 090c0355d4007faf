//! A goroutine that overflows its stack is reported by name, on every M, and the process
//! aborts; an unrelated fault still crashes as an ordinary SIGSEGV.
//!
//! Each case runs in a child process: the test binary re-executes itself with
//! `GORO_OVERFLOW_CASE` set (prefixed by `GORO_TEST_RUNNER` under QEMU).

mod common;

use std::os::unix::process::ExitStatusExt;

use goro::Runtime;

const CASE: &str = "GORO_OVERFLOW_CASE";

#[inline(never)]
fn recurse(depth: u64) -> u64 {
    let buffer = std::hint::black_box([depth as u8; 512]);
    if depth == u64::MAX {
        return 0;
    }
    recurse(depth + 1) + buffer[7] as u64
}

/// Runs in the child: overflows a goroutine on the M chosen by `round`.
fn overflow_child(round: usize) {
    let rt = Runtime::builder()
        .procs(4)
        .stack_size(64 * 1024)
        .build()
        .unwrap();
    rt.block_on(move || {
        // Keep the first `round` Ms busy so the overflowing goroutine lands on another one.
        let blockers: Vec<_> = (0..round)
            .map(|_| {
                goro::spawn(|| {
                    goro::blocking(|| std::thread::sleep(std::time::Duration::from_millis(200)))
                })
                .unwrap()
            })
            .collect();
        let g = goro::spawn(|| recurse(0)).unwrap();
        let _ = g.join();
        for b in blockers {
            let _ = b.join();
        }
    })
    .unwrap();
}

fn wild_access_child() {
    let rt = Runtime::builder().procs(2).build().unwrap();
    rt.block_on(|| {
        // SAFETY: none; this deliberately faults at an address that no stack covers.
        unsafe { std::ptr::read_volatile(0x10 as *const u64) }
    })
    .unwrap();
}

fn run_child(case: &str) -> std::process::Output {
    let test_name = if case == "wild" {
        "wild_access_still_segfaults"
    } else {
        "overflow_is_reported_on_each_m"
    };
    common::self_command(test_name)
        .env(CASE, case)
        .output()
        .unwrap()
}

#[test]
fn overflow_is_reported_on_each_m() {
    if let Ok(case) = std::env::var(CASE) {
        if let Ok(round) = case.parse() {
            overflow_child(round);
        }
        return;
    }
    for round in 0..4 {
        let output = run_child(&round.to_string());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(
            output.status.signal(),
            Some(libc::SIGABRT),
            "round {round}: expected an abort, got {:?}; stderr:\n{stderr}",
            output.status
        );
        assert!(
            stderr.contains("stack overflow"),
            "round {round}: stderr:\n{stderr}"
        );
        assert!(
            stderr.contains("goroutine "),
            "round {round}: stderr:\n{stderr}"
        );
    }
}

#[test]
fn wild_access_still_segfaults() {
    if std::env::var(CASE).as_deref() == Ok("wild") {
        wild_access_child();
        return;
    }
    if std::env::var(CASE).is_ok() {
        return;
    }
    let output = run_child("wild");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        output.status.signal(),
        Some(libc::SIGSEGV),
        "{:?}; stderr:\n{stderr}",
        output.status
    );
    assert!(!stderr.contains("stack overflow"), "stderr:\n{stderr}");
}
