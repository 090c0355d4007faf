//! `GORO_DEBUG=schedtrace`: periodic lines while the runtime lives, detail lines, none after
//! the runtime drops, and a clear message for an invalid setting.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::process::{Command, Output};
use std::time::Duration;

use goro::Runtime;

/// Runs this test binary's test `name` in a child process with `GORO_DEBUG=debug`, under the
/// runner of `GORO_TEST_RUNNER` (QEMU for cross targets) when it is set.
fn run_child(name: &str, debug: impl AsRef<OsStr>) -> Output {
    let runner = std::env::var("GORO_TEST_RUNNER").unwrap_or_default();
    let mut words: Vec<String> = runner.split_whitespace().map(String::from).collect();
    words.push(std::env::current_exe().unwrap().display().to_string());
    Command::new(&words[0])
        .args(&words[1..])
        .args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env("GORO_DEBUG", debug)
        .env("GORO_SCHEDTRACE_CHILD", "1")
        .output()
        .unwrap()
}

/// Marks the moment the child's runtime has dropped.
const DROPPED: &str = "schedtrace child: runtime dropped";

/// The child: sleeps in goroutines for a few schedtrace periods, drops the runtime, then
/// waits as long again. Does nothing unless `GORO_SCHEDTRACE_CHILD` is set.
#[test]
fn schedtrace_child() {
    if std::env::var_os("GORO_SCHEDTRACE_CHILD").is_none() {
        return;
    }
    let rt = Runtime::builder()
        .procs(2)
        .deadlock_detection(false)
        .build()
        .unwrap();
    rt.block_on(|| {
        let sleepers: Vec<_> = (0..3)
            .map(|_| goro::spawn(|| goro::sleep(Duration::from_millis(300))).unwrap())
            .collect();
        for sleeper in sleepers {
            sleeper.join().unwrap();
        }
    })
    .unwrap();
    drop(rt);
    eprintln!("{DROPPED}");
    std::thread::sleep(Duration::from_millis(200));
}

#[test]
fn schedtrace_prints_until_drop() {
    let output = run_child("schedtrace_child", "schedtrace=20,scheddetail=1");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "child failed:\n{stderr}");
    let (before, after) = stderr
        .split_once(DROPPED)
        .unwrap_or_else(|| panic!("the child did not finish:\n{stderr}"));
    let lines: Vec<&str> = before.lines().filter(|l| l.starts_with("SCHED ")).collect();
    assert!(
        lines.len() >= 2,
        "a line every 20 ms over 300 ms:\n{stderr}"
    );
    let line = lines[lines.len() / 2];
    for field in [
        "runtime=",
        " procs=2 ",
        " idleprocs=",
        " threads=",
        " spinningthreads=",
        " idlethreads=",
        " goroutines=",
        " runqueue=",
        "[- -]",
    ] {
        assert!(line.contains(field), "{field:?} missing in {line:?}");
    }
    assert!(
        before.contains("\n  P0: status="),
        "a detail line per P:\n{before}"
    );
    assert!(
        before.contains("\n  M1: tid="),
        "a detail line per M:\n{before}"
    );
    assert!(
        before.contains("status=waiting(sleep) m=- scheduler=fifo"),
        "a detail line per goroutine with its wait reason:\n{before}"
    );
    assert!(
        !after.contains("SCHED "),
        "the schedtrace thread stops with its runtime:\n{after}"
    );
}

#[test]
fn schedtrace_off_prints_nothing() {
    let output = run_child("schedtrace_child", "");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "child failed:\n{stderr}");
    assert!(!stderr.contains("SCHED "), "{stderr}");
}

#[test]
fn invalid_setting_is_reported() {
    let output = run_child("schedtrace_child", "schedtrace=soon");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "child failed:\n{stderr}");
    assert!(
        stderr.contains(
            "goro: ignoring GORO_DEBUG setting \"schedtrace=soon\": the period must be a number \
             of milliseconds from 1 to 3600000"
        ),
        "{stderr}"
    );
    assert!(!stderr.contains("SCHED "), "{stderr}");
}

#[test]
fn non_utf8_setting_is_reported() {
    let debug = OsStr::from_bytes(b"schedtrace=20,scheddetail=\xff");
    let output = run_child("schedtrace_child", debug);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "child failed:\n{stderr}");
    assert!(
        stderr.contains(
            "goro: ignoring GORO_DEBUG setting \"scheddetail=\u{fffd}\": the value must be 0 or 1"
        ),
        "{stderr}"
    );
    assert!(
        stderr.contains("SCHED "),
        "the valid schedtrace item still applies:\n{stderr}"
    );
}
