//! Stress of the syscall protocol: 1 or 2 Ps and 10,000 goroutines mixing blocking pipe reads
//! (with their writers), sleeps, yields and compute. Every goroutine must finish, and the
//! counters must agree: every syscall entered was exited, by the fast or the slow path.

mod common;

use std::io::{Read, Write};
use std::os::fd::FromRawFd;
use std::time::Duration;

use common::{LIMIT, watchdog};
use goro::Runtime;

const GOROUTINES: usize = 10_000;
/// Goroutines are spawned in waves, so that blocked readers (each holding an M) stay a few
/// hundred at most.
const WAVE: usize = 500;

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

/// xorshift64: a small deterministic generator, so a failure can be replayed.
fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

fn compute(rounds: u64) -> u64 {
    (0..rounds).fold(0u64, |acc, i| acc.wrapping_mul(31).wrapping_add(i))
}

#[test]
fn ten_thousand_goroutines_mix_syscalls_fifo() {
    stress(Runtime::builder().procs(2).build().unwrap());
}

/// With one P, `Fifo` keeps the P holder's queue without a lock, and every goroutine that
/// leaves a blocking call after losing its P comes back through the locked queue.
#[test]
fn ten_thousand_goroutines_mix_syscalls_fifo_one_p() {
    stress(Runtime::builder().procs(1).build().unwrap());
}

#[test]
fn ten_thousand_goroutines_mix_syscalls_steal() {
    stress(
        Runtime::builder()
            .procs(2)
            .scheduler(goro_sched::WorkStealing::new())
            .build()
            .unwrap(),
    );
}

fn stress(rt: Runtime) {
    let (finished, stats) = watchdog(LIMIT * 3, move || {
        let finished = rt
            .block_on(|| {
                let mut seed = 0x9e37_79b9_7f4a_7c15u64;
                let mut finished = 0usize;
                while finished < GOROUTINES {
                    let mut handles = Vec::with_capacity(WAVE);
                    while handles.len() < WAVE {
                        match next(&mut seed) % 4 {
                            0 => {
                                // A reader blocks in a pipe read until its writer runs.
                                let (mut reader, mut writer) = pipe();
                                handles.push(
                                    goro::spawn(move || {
                                        let mut byte = [0u8];
                                        goro::blocking_known(|| reader.read_exact(&mut byte))
                                            .unwrap();
                                        assert_eq!(byte, [42]);
                                    })
                                    .unwrap(),
                                );
                                handles.push(
                                    goro::spawn(move || {
                                        goro::yield_now();
                                        goro::blocking(|| writer.write_all(&[42])).unwrap();
                                    })
                                    .unwrap(),
                                );
                            }
                            1 => {
                                let micros = next(&mut seed) % 200;
                                handles.push(
                                    goro::spawn(move || {
                                        goro::blocking_known(|| {
                                            std::thread::sleep(Duration::from_micros(micros))
                                        });
                                    })
                                    .unwrap(),
                                );
                            }
                            2 => {
                                let yields = next(&mut seed) % 8;
                                handles.push(
                                    goro::spawn(move || {
                                        for _ in 0..yields {
                                            goro::yield_now();
                                        }
                                    })
                                    .unwrap(),
                                );
                            }
                            _ => {
                                let rounds = next(&mut seed) % 10_000;
                                handles.push(
                                    goro::spawn(move || {
                                        std::hint::black_box(compute(rounds));
                                        // SAFETY: getppid has no preconditions.
                                        goro::blocking(|| unsafe { libc::getppid() });
                                    })
                                    .unwrap(),
                                );
                            }
                        }
                    }
                    for handle in handles {
                        handle.join().unwrap();
                        finished += 1;
                    }
                }
                finished
            })
            .unwrap();
        (finished, rt.stats())
    });
    // A reader and its writer are spawned together, so a wave may hold one goroutine more.
    assert!(finished >= GOROUTINES, "{finished}");
    assert_eq!(stats.goroutines_run as usize, finished + 1, "{stats:?}");
    assert_eq!(stats.live_goroutines, 0, "{stats:?}");
    assert_eq!(
        stats.syscalls_entered,
        stats.fast_exits + stats.slow_exits,
        "{stats:?}"
    );
    assert!(
        stats.slow_exits > 0,
        "no syscall ever lost its P: {stats:?}"
    );
    assert!(stats.fast_exits > 0, "{stats:?}");
}
