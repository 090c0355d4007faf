//! The syscall protocol seen from goroutines: blocked calls release their P, the monitor
//! retakes Ps, exits take the fast or the slow path, and misuse panics clearly.

mod common;

use std::io::{Read, Write};
use std::os::fd::FromRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{LIMIT, watchdog};
use goro::Runtime;

fn pipe() -> (std::fs::File, std::fs::File) {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe writes.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0, "pipe failed");
    // SAFETY: pipe returned two fresh descriptors that nothing else owns.
    unsafe {
        (
            std::fs::File::from_raw_fd(fds[0]),
            std::fs::File::from_raw_fd(fds[1]),
        )
    }
}

/// With one P, a goroutine blocked in a pipe read must not stop the goroutine that will write
/// the pipe: the monitor retakes the P (plain `entersyscall`) or the entry hands it off
/// (`entersyscall_block`).
fn blocked_reader_does_not_stall_writer(known_to_block: bool) -> goro::Stats {
    let rt = Runtime::builder().procs(1).build().unwrap();
    watchdog(LIMIT, move || {
        rt.block_on(move || {
            let (mut reader, mut writer) = pipe();
            let reader = goro::spawn(move || {
                let mut byte = [0u8; 1];
                let mut read = || reader.read(&mut byte);
                let n = if known_to_block {
                    goro::blocking_known(read)
                } else {
                    goro::entersyscall();
                    let n = read();
                    goro::exitsyscall();
                    n
                };
                (n.unwrap(), byte[0])
            })
            .unwrap();
            // Let the reader block first.
            for _ in 0..10 {
                goro::yield_now();
            }
            let writer = goro::spawn(move || {
                goro::blocking(|| writer.write_all(b"x")).unwrap();
            })
            .unwrap();
            writer.join().unwrap();
            assert_eq!(reader.join().unwrap(), (1, b'x'));
        })
        .unwrap();
        rt.stats()
    })
}

#[test]
fn blocked_pipe_read_is_retaken_by_the_monitor() {
    let stats = blocked_reader_does_not_stall_writer(false);
    assert!(
        stats.retakes >= 1,
        "the monitor never retook the P: {stats:?}"
    );
    assert!(stats.slow_exits >= 1, "{stats:?}");
}

#[test]
fn known_blocking_read_hands_its_p_off() {
    let stats = blocked_reader_does_not_stall_writer(true);
    assert!(stats.handoffs >= 1, "{stats:?}");
    assert!(stats.slow_exits >= 1, "{stats:?}");
}

#[test]
fn short_syscalls_take_the_fast_path() {
    let rt = Runtime::builder().procs(1).build().unwrap();
    let stats = watchdog(LIMIT, move || {
        rt.block_on(|| {
            for _ in 0..1000 {
                // SAFETY: getppid has no preconditions.
                goro::blocking(|| unsafe { libc::getppid() });
            }
        })
        .unwrap();
        rt.stats()
    });
    assert_eq!(stats.syscalls_entered, 1000, "{stats:?}");
    assert_eq!(stats.fast_exits + stats.slow_exits, 1000, "{stats:?}");
    assert!(stats.fast_exits > 0, "{stats:?}");
}

#[test]
fn exitsyscall_runs_when_the_call_panics() {
    let rt = Runtime::builder().procs(1).build().unwrap();
    watchdog(LIMIT, move || {
        let error = rt
            .block_on(|| {
                goro::blocking(|| panic!("inside the syscall"));
            })
            .unwrap_err();
        assert_eq!(error.panic_message(), Some("inside the syscall"));
        let stats = rt.stats();
        assert_eq!(
            stats.syscalls_entered,
            stats.fast_exits + stats.slow_exits,
            "{stats:?}"
        );
        // The P came back: the runtime runs further goroutines.
        assert_eq!(rt.block_on(|| 1).unwrap(), 1);
    });
}

#[test]
fn exitsyscall_without_entersyscall_panics_by_name() {
    let rt = Runtime::builder().procs(1).build().unwrap();
    let error = watchdog(LIMIT, move || rt.block_on(goro::exitsyscall).unwrap_err());
    let message = error.panic_message().unwrap_or_default().to_owned();
    assert!(
        message.contains("exitsyscall without entersyscall"),
        "{message}"
    );
}

#[test]
fn entering_twice_panics_by_name() {
    let rt = Runtime::builder().procs(1).build().unwrap();
    let error = watchdog(LIMIT, move || {
        rt.block_on(|| {
            goro::entersyscall();
            goro::entersyscall();
        })
        .unwrap_err()
    });
    let message = error.panic_message().unwrap_or_default().to_owned();
    assert!(message.contains("goro::entersyscall"), "{message}");
    assert!(message.contains("entered twice"), "{message}");
}

#[test]
fn yield_inside_syscall_panics_by_name() {
    let rt = Runtime::builder().procs(1).build().unwrap();
    let error = watchdog(LIMIT, move || {
        rt.block_on(|| {
            goro::entersyscall();
            goro::yield_now();
        })
        .unwrap_err()
    });
    let message = error.panic_message().unwrap_or_default().to_owned();
    assert!(message.contains("goro::yield_now"), "{message}");
    assert!(
        message.contains("between entersyscall and exitsyscall"),
        "{message}"
    );
}

/// Set in the child process of `park_inside_syscall_aborts_by_name`.
const PARK_CHILD_VAR: &str = "GORO_TEST_PARK_IN_SYSCALL_CHILD";

/// Blocking on a channel inside a blocking section aborts, because the parking code may hold
/// locks that a panic would leave held. The message must name the mistake and the fix.
#[test]
fn park_inside_syscall_aborts_by_name() {
    let output = common::self_command("park_inside_syscall_child")
        .env(PARK_CHILD_VAR, "1")
        .output()
        .expect("the test binary runs again as a child");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success(),
        "the child did not abort:\n{stderr}"
    );
    assert!(
        stderr.contains("blocked (chan receive) between entersyscall and exitsyscall"),
        "{stderr}"
    );
    assert!(stderr.contains("call exitsyscall first"), "{stderr}");
}

#[test]
fn park_inside_syscall_child() {
    if std::env::var_os(PARK_CHILD_VAR).is_none() {
        return;
    }
    let rt = Runtime::builder().procs(1).build().unwrap();
    let _ = rt.block_on(|| {
        let (_sender, receiver) = goro::sync::channel::<()>(0);
        goro::entersyscall();
        let _ = receiver.recv();
    });
}

#[test]
fn long_syscall_does_not_keep_its_p_from_spinning_goroutines() {
    // One P: a goroutine sleeps in a plain (not known-blocking) syscall while another must run.
    let rt = Runtime::builder().procs(1).build().unwrap();
    let stats = watchdog(LIMIT, move || {
        rt.block_on(|| {
            let ran = Arc::new(AtomicBool::new(false));
            let sleeper = {
                let ran = ran.clone();
                goro::spawn(move || {
                    goro::blocking(|| std::thread::sleep(Duration::from_millis(300)));
                    ran.load(Ordering::Acquire)
                })
                .unwrap()
            };
            goro::yield_now();
            let other = {
                let ran = ran.clone();
                goro::spawn(move || ran.store(true, Ordering::Release)).unwrap()
            };
            other.join().unwrap();
            assert!(
                sleeper.join().unwrap(),
                "the other goroutine waited for the syscall"
            );
        })
        .unwrap();
        rt.stats()
    });
    assert!(stats.retakes >= 1, "{stats:?}");
}

#[test]
fn blocking_outside_a_goroutine_just_runs_the_call() {
    assert_eq!(goro::blocking(|| 5), 5);
    assert_eq!(goro::blocking_known(|| 6), 6);
}

#[test]
fn short_calls_exit_fast_unless_retaken() {
    // Nothing else runs, so the monitor retakes a P only after force_retake_after (10 ms):
    // calls this short leave it with its M unless the thread is descheduled that long, which
    // the retake count below makes visible.
    let rt = Runtime::builder().procs(1).build().unwrap();
    let stats = watchdog(LIMIT, move || {
        let values = rt
            .block_on(|| (0..1000).map(|i| goro::blocking(|| i * 2)).sum::<i32>())
            .unwrap();
        assert_eq!(values, 999_000);
        rt.stats()
    });
    assert_eq!(stats.syscalls_entered, 1000, "{stats:?}");
    assert_eq!(stats.fast_exits + stats.retakes, 1000, "{stats:?}");
    assert_eq!(stats.slow_exits, stats.retakes, "{stats:?}");
}

#[test]
fn nested_blocking_panics_and_restores_the_protocol() {
    let rt = Runtime::builder().procs(1).build().unwrap();
    watchdog(LIMIT, move || {
        let error = rt
            .block_on(|| goro::blocking(|| goro::blocking(|| 1)))
            .unwrap_err();
        let message = error.panic_message().unwrap_or_default().to_owned();
        assert!(message.contains("entered twice"), "{message}");
        let stats = rt.stats();
        assert_eq!(stats.syscalls_entered, 1, "{stats:?}");
        assert_eq!(stats.fast_exits + stats.slow_exits, 1, "{stats:?}");
        // The outer call's exit gave the P back: the runtime runs further goroutines.
        assert_eq!(rt.block_on(|| 2).unwrap(), 2);
    });
}

/// Returns the address of the M running the calling goroutine, from the g header's `m` field.
fn current_m_address() -> usize {
    goro::with_g::<goro::DefaultG, _>(|g| g.header.m() as usize).expect("called from a goroutine")
}

/// A `blocking` call may leave its syscall, switch, and enter one again, which can move the
/// goroutine to another M. The exit at the end of the call must then end the syscall of the
/// new M, not of the M that entered first.
#[test]
fn blocking_call_reentered_on_another_m() {
    let rt = Runtime::builder().procs(2).build().unwrap();
    let (moves, stats) = watchdog(LIMIT, move || {
        let moves = rt
            .block_on(|| {
                // Spinners keep both Ps busy, so that a yield can resume on either M.
                let stop = Arc::new(AtomicBool::new(false));
                let spinners: Vec<_> = (0..4)
                    .map(|_| {
                        let stop = stop.clone();
                        goro::spawn(move || {
                            while !stop.load(Ordering::Relaxed) {
                                goro::yield_now();
                            }
                        })
                        .unwrap()
                    })
                    .collect();
                let mut moves = 0;
                for _ in 0..100_000 {
                    goro::blocking(|| {
                        let before = current_m_address();
                        goro::exitsyscall();
                        goro::yield_now();
                        goro::entersyscall();
                        if current_m_address() != before {
                            moves += 1;
                        }
                    });
                    if moves >= 10 {
                        break;
                    }
                }
                stop.store(true, Ordering::Relaxed);
                for spinner in spinners {
                    spinner.join().unwrap();
                }
                moves
            })
            .unwrap();
        (moves, rt.stats())
    });
    assert!(moves > 0, "the goroutine never changed M inside the call");
    assert_eq!(
        stats.syscalls_entered,
        stats.fast_exits + stats.slow_exits,
        "{stats:?}"
    );
}
