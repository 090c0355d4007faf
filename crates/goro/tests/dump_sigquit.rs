//! `Builder::dump_on_sigquit`: SIGQUIT prints the dump of every goroutine to standard error
//! and the process keeps running.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use goro::{GStatus, Runtime};

/// Waits on a channel that no goroutine sends to. The dump's backtrace must show this name.
#[inline(never)]
fn sigquit_test_waits(receiver: goro::sync::Receiver<()>) {
    let _ = receiver.recv();
}

/// The child: parks a goroutine, raises SIGQUIT and waits to be killed. Does nothing unless
/// `GORO_SIGQUIT_CHILD` is set.
#[test]
fn sigquit_child() {
    if std::env::var_os("GORO_SIGQUIT_CHILD").is_none() {
        return;
    }
    let rt = Runtime::builder()
        .procs(1)
        .deadlock_detection(false)
        .dump_on_sigquit(true)
        .build()
        .unwrap();
    let (_sender, receiver) = goro::sync::channel(0);
    let _waiting = rt.spawn(move || sigquit_test_waits(receiver)).unwrap();
    while !rt
        .dump()
        .goroutines
        .iter()
        .all(|g| g.status == GStatus::Waiting)
    {
        std::thread::sleep(Duration::from_millis(1));
    }
    // SAFETY: raise has no preconditions; the handler installed above catches the signal.
    unsafe { libc::raise(libc::SIGQUIT) };
    eprintln!("sigquit child: still running after the signal");
    // The parent kills this process once it has read the dump.
    std::thread::sleep(Duration::from_secs(300));
}

#[test]
fn sigquit_prints_dump() {
    let runner = std::env::var("GORO_TEST_RUNNER").unwrap_or_default();
    let mut words: Vec<String> = runner.split_whitespace().map(String::from).collect();
    words.push(std::env::current_exe().unwrap().display().to_string());
    let mut child = Command::new(&words[0])
        .args(&words[1..])
        .args([
            "--exact",
            "sigquit_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("GORO_SIGQUIT_CHILD", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (lines, received) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    let mut text = String::new();
    // A hang detector, far above a normal run, also under QEMU.
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    // The child prints its own line and the dump thread the dump, in either order.
    while !(text.contains("goro: end of the dump") && text.contains("still running")) {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match received.recv_timeout(left) {
            Ok(line) => {
                text.push_str(&line);
                text.push('\n');
            }
            Err(_) => break,
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        text.contains("goro: SIGQUIT: dump of every goroutine"),
        "{text}"
    );
    assert!(text.contains("goro: end of the dump"), "{text}");
    assert!(text.contains("goroutine 1 [chan receive"), "{text}");
    assert!(
        text.contains("sigquit_test_waits"),
        "the backtrace names the function:\n{text}"
    );
    assert!(
        text.contains("sigquit child: still running after the signal"),
        "the process survives SIGQUIT:\n{text}"
    );
}
