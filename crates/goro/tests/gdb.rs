//! The gdb extension `crates/goro/gdb/goro.py`: gdb stops the `parked` example while its
//! goroutines are parked, lists them with their wait reasons and prints the backtrace of one
//! down to its entry. x86_64 only; skipped, with the reason printed, elsewhere or without gdb.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Returns the `parked` example built beside this test binary, building it when it is missing
/// (`cargo test -p goro` builds examples; `cargo test --test gdb` alone does not).
fn parked_example() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/gdb-<hash> -> target/<profile>/examples/parked
    let profile_dir = exe.parent().and_then(Path::parent).unwrap();
    let example = profile_dir.join("examples").join("parked");
    if !example.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut build = Command::new(cargo);
        build.args(["build", "-p", "goro", "--example", "parked"]);
        if profile_dir.ends_with("release") {
            build.arg("--release");
        }
        let status = build
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .unwrap();
        assert!(status.success(), "building the parked example failed");
    }
    assert!(
        example.exists(),
        "{} missing; build it with `cargo build -p goro --example parked`",
        example.display()
    );
    example
}

/// A bare `goro` lists its subcommands, and `goro` followed by an unknown word names it.
#[test]
fn gdb_bare_goro_lists_commands() {
    if std::env::var_os("GORO_TEST_RUNNER").is_some() {
        println!("skipped: the gdb test runs natively only");
        return;
    }
    if Command::new("gdb").arg("--version").output().is_err() {
        println!("skipped: gdb is not installed (apt-get install gdb)");
        return;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("gdb/goro.py");
    let output = Command::new("gdb")
        .args(["-batch", "-nx", "-x"])
        .arg(&script)
        .args(["-ex", "goro", "-ex", "goro frobnicate"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    for command in ["goro goroutines", "goro bt"] {
        assert!(
            stdout.contains(command),
            "bare goro lists {command}:\n{stdout}"
        );
    }
    assert!(
        stderr.contains("unknown command `goro frobnicate`"),
        "an unknown subcommand is named:\n{stderr}"
    );
}

#[test]
fn gdb_lists_goroutines_and_backtrace() {
    if !cfg!(target_arch = "x86_64") || std::env::var_os("GORO_TEST_RUNNER").is_some() {
        println!("skipped: the gdb test runs natively on x86_64 only");
        return;
    }
    if Command::new("gdb").arg("--version").output().is_err() {
        println!("skipped: gdb is not installed (apt-get install gdb)");
        return;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("gdb/goro.py");
    let output = Command::new("gdb")
        .args(["-batch", "-nx", "-x"])
        .arg(&script)
        .args([
            "-ex",
            "break goro_example_breakpoint",
            "-ex",
            "run",
            "-ex",
            "goro goroutines",
            "-ex",
            "goro bt 1",
            "-ex",
            "bt 1",
            "-ex",
            "kill",
            "--args",
        ])
        .arg(parked_example())
        .arg("--quiet")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let all = format!("{stdout}\n--- stderr ---\n{stderr}");
    assert!(
        stdout.contains("hit Breakpoint 1"),
        "gdb stopped at the breakpoint:\n{all}"
    );

    // goid, status and wait reason of each goroutine of the example.
    for (goid, reason) in [
        (1, "chan receive"),
        (2, "chan receive"),
        (4, "lock"),
        (5, "sleep"),
    ] {
        let listed = stdout.lines().any(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            words.first() == Some(&goid.to_string().as_str())
                && words.get(1) == Some(&"waiting")
                && line.contains(reason)
        });
        assert!(listed, "goroutine {goid} [{reason}] is listed:\n{all}");
    }

    // The frames of `goro bt 1`, up to the `#0` of the `bt 1` that follows it.
    let frames: Vec<&str> = stdout
        .lines()
        .skip_while(|line| !line.starts_with("goroutine 1 [chan receive]:"))
        .skip(1)
        .take_while(|line| line.starts_with('#'))
        .collect();
    let restored_at = frames
        .iter()
        .skip(1)
        .position(|line| line.starts_with("#0 "));
    let (backtrace, after) = frames.split_at(restored_at.map_or(frames.len(), |i| i + 1));
    assert!(!backtrace.is_empty(), "goro bt 1 printed frames:\n{all}");
    // The innermost frame is where the switch to g0 returns: `mcall` in a debug build; in an
    // optimized one, whatever code of the park path the call was inlined into.
    let park_path = ["goro::m::", "goro::park::", "goro_abi::gregister::"];
    assert!(
        park_path.iter().any(|module| backtrace[0].contains(module)),
        "the innermost frame is on the runtime's park path:\n{all}"
    );
    assert!(
        backtrace
            .iter()
            .take(6)
            .any(|f| f.contains("goro::park::park_on")),
        "the goroutine parked through park_on:\n{all}"
    );
    assert!(
        backtrace
            .iter()
            .any(|f| f.contains("parked::wait_for_message")),
        "the goroutine's own function is on its stack:\n{all}"
    );
    assert!(
        backtrace.iter().any(|f| f.contains("goro::m::g_entry")),
        "{all}"
    );
    assert!(
        backtrace.last().unwrap().contains("trampoline"),
        "the backtrace ends at the goroutine's entry trampoline:\n{all}"
    );

    // The registers are restored: the thread's own backtrace is the breakpoint's again.
    assert!(
        after
            .first()
            .is_some_and(|f| f.contains("goro_example_breakpoint")),
        "goro bt restores the selected thread's registers:\n{all}"
    );
}
