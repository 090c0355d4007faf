//! Scheduler workloads: yield ping-pong and channel ping-pong on one processor, and spawn
//! plus join on two.

use std::time::{Duration, Instant};

/// Two goroutines on one P yield to each other `count` times each; reports time per yield.
pub fn run_yield(implementation: &str, count: usize) -> bool {
    let elapsed = if let Some(runtime) = crate::goro_runtime(implementation, 1) {
        block_on_goro(&runtime, move || {
            let start = Instant::now();
            let yielders: Vec<_> = (0..2)
                .map(|_| spawn_goro(move || (0..count).for_each(|_| goro::yield_now())))
                .collect();
            yielders.into_iter().for_each(join_goro);
            start.elapsed()
        })
    } else {
        match implementation {
            "may" => may_yield(count),
            "tokio" => tokio_yield(count),
            "threads" => threads_yield(count),
            _ => return false,
        }
    };
    crate::nanos_per("yield", elapsed, 2 * count);
    true
}

fn may_yield(count: usize) -> Duration {
    may::config().set_workers(1);
    let start = Instant::now();
    let yielders: Vec<_> = (0..2)
        .map(|_| spawn_may(move || (0..count).for_each(|_| may::coroutine::yield_now())))
        .collect();
    for yielder in yielders {
        yielder.join().expect("may: a yielder panicked");
    }
    start.elapsed()
}

fn tokio_yield(count: usize) -> Duration {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("tokio: building a current-thread runtime");
    runtime.block_on(async move {
        let start = Instant::now();
        let yielders: Vec<_> = (0..2)
            .map(|_| {
                tokio::spawn(async move {
                    for _ in 0..count {
                        tokio::task::yield_now().await;
                    }
                })
            })
            .collect();
        for yielder in yielders {
            yielder.await.expect("tokio: a yielder panicked");
        }
        start.elapsed()
    })
}

/// Two OS threads pinned to the first CPU this process may use, each calling
/// `std::thread::yield_now` (sched_yield) `count` times.
fn threads_yield(count: usize) -> Duration {
    let cpu = first_allowed_cpu();
    let start = Instant::now();
    let yielders: Vec<_> = (0..2)
        .map(|_| {
            std::thread::spawn(move || {
                pin_to_cpu(cpu);
                (0..count).for_each(|_| std::thread::yield_now());
            })
        })
        .collect();
    for yielder in yielders {
        yielder.join().expect("a yielder thread panicked");
    }
    start.elapsed()
}

fn first_allowed_cpu() -> usize {
    // SAFETY: cpu_set_t is plain data for which all zeros is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid cpu_set_t of the size passed.
    let result = unsafe { libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &mut set) };
    if result != 0 {
        crate::fail_run(&format!(
            "sched_getaffinity: {}",
            std::io::Error::last_os_error()
        ));
    }
    (0..libc::CPU_SETSIZE as usize)
        // SAFETY: `cpu` is below CPU_SETSIZE, the size of the set.
        .find(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
        .unwrap_or_else(|| crate::fail_run("sched_getaffinity returned an empty CPU set"))
}

fn pin_to_cpu(cpu: usize) {
    // SAFETY: cpu_set_t is plain data for which all zeros is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `cpu` came from the process's own CPU set, so it is below CPU_SETSIZE.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: `set` is a valid cpu_set_t of the size passed; 0 names the calling thread.
    let result = unsafe { libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) };
    if result != 0 {
        crate::fail_run(&format!(
            "sched_setaffinity to CPU {cpu}: {}",
            std::io::Error::last_os_error()
        ));
    }
}

/// One goroutine spawns `count` empty goroutines with 2 Ps, drops their join handles and
/// waits for them on a `goro::sync::WaitGroup`, as Go's spawn benchmark does; reports time
/// per goroutine. Without handles, the goroutines' join cells and stacks are reused as they
/// finish, as Go reuses its gs.
pub fn run_spawn_wg(implementation: &str, count: usize) -> bool {
    let Some(runtime) = crate::goro_runtime(implementation, 2) else {
        return false;
    };
    let Ok(delta) = i32::try_from(count) else {
        crate::fail_run(&format!("spawnwg: COUNT {count} is above i32::MAX"));
    };
    let elapsed = block_on_goro(&runtime, move || {
        let start = Instant::now();
        let group = std::sync::Arc::new(goro::sync::WaitGroup::new());
        group.add(delta);
        for _ in 0..count {
            let group = group.clone();
            drop(spawn_goro(move || group.done()));
        }
        group.wait();
        start.elapsed()
    });
    // The metric has the name of Go's, whose spawn benchmark waits on a WaitGroup as well.
    crate::nanos_per("spawn_join", elapsed, count);
    true
}

/// Spawns `count` empty goroutines or tasks with 2 processors and joins them all; reports
/// time per goroutine.
pub fn run_spawn(implementation: &str, count: usize) -> bool {
    let elapsed = if let Some(runtime) = crate::goro_runtime(implementation, 2) {
        block_on_goro(&runtime, move || {
            let start = Instant::now();
            let handles: Vec<_> = (0..count).map(|_| spawn_goro(|| ())).collect();
            handles.into_iter().for_each(join_goro);
            start.elapsed()
        })
    } else {
        match implementation {
            "may" => {
                may::config().set_workers(2);
                let start = Instant::now();
                let handles: Vec<_> = (0..count).map(|_| spawn_may(|| ())).collect();
                for handle in handles {
                    handle.join().expect("may: an empty coroutine panicked");
                }
                start.elapsed()
            }
            "tokio" => {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .build()
                    .expect("tokio: building a multi-thread runtime");
                runtime.block_on(async move {
                    let start = Instant::now();
                    let handles: Vec<_> = (0..count).map(|_| tokio::spawn(async {})).collect();
                    for handle in handles {
                        handle.await.expect("tokio: an empty task panicked");
                    }
                    start.elapsed()
                })
            }
            _ => return false,
        }
    };
    crate::nanos_per("spawn_join", elapsed, count);
    true
}

/// Two goroutines on one P pass a value back and forth over two channels `count` times;
/// reports time per round trip (two sends and two receives).
pub fn run_chan(implementation: &str, count: usize) -> bool {
    let elapsed = if let Some(runtime) = crate::goro_runtime(implementation, 1) {
        let capacity = if implementation.ends_with("-cap1") {
            1
        } else {
            0
        };
        block_on_goro(&runtime, move || goro_chan(capacity, count))
    } else {
        match implementation {
            "may" => {
                may::config().set_workers(1);
                may_chan(count)
            }
            "tokio" => tokio_chan(count),
            _ => return false,
        }
    };
    crate::nanos_per("round_trip", elapsed, count);
    true
}

fn goro_chan(capacity: usize, count: usize) -> Duration {
    let (ping_sender, ping_receiver) = goro::sync::channel::<usize>(capacity);
    let (pong_sender, pong_receiver) = goro::sync::channel::<usize>(capacity);
    let start = Instant::now();
    let echo = spawn_goro(move || {
        while let Ok(value) = ping_receiver.recv() {
            pong_sender.send(value).expect("goro: pong receiver gone");
        }
    });
    let pinger = spawn_goro(move || {
        for i in 0..count {
            ping_sender.send(i).expect("goro: ping receiver gone");
            assert_eq!(pong_receiver.recv(), Ok(i));
        }
    });
    join_goro(pinger);
    join_goro(echo);
    start.elapsed()
}

fn may_chan(count: usize) -> Duration {
    let (ping_sender, ping_receiver) = may::sync::mpsc::channel::<usize>();
    let (pong_sender, pong_receiver) = may::sync::mpsc::channel::<usize>();
    let start = Instant::now();
    let echo = spawn_may(move || {
        while let Ok(value) = ping_receiver.recv() {
            pong_sender.send(value).expect("may: pong receiver gone");
        }
    });
    let pinger = spawn_may(move || {
        for i in 0..count {
            ping_sender.send(i).expect("may: ping receiver gone");
            assert_eq!(pong_receiver.recv(), Ok(i));
        }
    });
    pinger.join().expect("may: the pinger panicked");
    echo.join().expect("may: the echo panicked");
    start.elapsed()
}

fn tokio_chan(count: usize) -> Duration {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("tokio: building a current-thread runtime");
    runtime.block_on(async move {
        // Capacity 1: tokio's bounded channel has no rendezvous mode.
        let (ping_sender, mut ping_receiver) = tokio::sync::mpsc::channel::<usize>(1);
        let (pong_sender, mut pong_receiver) = tokio::sync::mpsc::channel::<usize>(1);
        let start = Instant::now();
        let echo = tokio::spawn(async move {
            while let Some(value) = ping_receiver.recv().await {
                pong_sender
                    .send(value)
                    .await
                    .expect("tokio: pong receiver gone");
            }
        });
        let pinger = tokio::spawn(async move {
            for i in 0..count {
                ping_sender
                    .send(i)
                    .await
                    .expect("tokio: ping receiver gone");
                assert_eq!(pong_receiver.recv().await, Some(i));
            }
        });
        pinger.await.expect("tokio: the pinger panicked");
        echo.await.expect("tokio: the echo panicked");
        start.elapsed()
    })
}

/// Runs `body` as the main goroutine of `runtime`, failing the run on a runtime error.
pub fn block_on_goro<T: Send + 'static>(
    runtime: &goro::Runtime,
    body: impl FnOnce() -> T + Send + 'static,
) -> T {
    runtime
        .block_on(body)
        .unwrap_or_else(|error| crate::fail_run(&format!("goro block_on: {error}")))
}

/// Spawns a goroutine on the current runtime, failing the run if goro cannot.
pub fn spawn_goro<T: Send + 'static>(
    body: impl FnOnce() -> T + Send + 'static,
) -> goro::JoinHandle<T> {
    goro::spawn(body).unwrap_or_else(|error| crate::fail_run(&format!("goro spawn: {error}")))
}

fn join_goro<T>(handle: goro::JoinHandle<T>) {
    if let Err(error) = handle.join() {
        crate::fail_run(&format!("goro join: {error}"));
    }
}

/// Spawns a may coroutine with may's default stack, failing the run if may cannot.
pub fn spawn_may<T: Send + 'static>(
    body: impl FnOnce() -> T + Send + 'static,
) -> may::coroutine::JoinHandle<T> {
    // SAFETY: the bodies in this crate touch no thread-local storage, which is what may's
    // spawn requires of them.
    unsafe { may::coroutine::Builder::new().spawn(body) }
        .unwrap_or_else(|error| crate::fail_run(&format!("may spawn: {error}")))
}
