//! Resident memory per parked goroutine: park `count` goroutines, then compare the process's
//! RSS with the RSS before spawning them.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// Stack size of goro's many-goroutines mode here. It is virtual size: only touched pages
/// count towards RSS.
#[cfg(goro_many_goroutines)]
const MANY_STACK_SIZE: usize = 16 * 1024;

/// Goroutines that have reached their park.
static PARKED: AtomicUsize = AtomicUsize::new(0);

pub fn run(implementation: &str, count: usize) -> bool {
    let before = rss_bytes();
    match implementation {
        "goro-many" => park_goro(count, true),
        "goro-default" => park_goro(count, false),
        "may" => park_may(count),
        _ => return false,
    }
    wait_until_parked(count);
    let added = rss_bytes().saturating_sub(before);
    crate::metric("per_goroutine", added as f64 / count as f64 / 1024.0, "KiB");
    crate::metric("alive", count as f64, "goroutines");
    // Exits without unwinding the parked goroutines: their teardown is not measured.
    std::process::exit(0);
}

fn park_goro(count: usize, many: bool) {
    let builder = goro::Runtime::builder().procs(2).deadlock_detection(false);
    let builder = if many {
        many_goroutines(builder)
    } else {
        builder
    };
    let runtime = builder
        .build()
        .unwrap_or_else(|error| crate::fail_run(&format!("goro runtime: {error}")));
    let (sender, receiver) = goro::sync::channel::<()>(0);
    for spawned in 0..count {
        let receiver = receiver.clone();
        let spawn = runtime.spawn(move || {
            // Relaxed: the count only tells the main thread when to measure.
            PARKED.fetch_add(1, Ordering::Relaxed);
            let _ = receiver.recv();
        });
        if let Err(error) = spawn {
            crate::fail_run(&format!("goro spawn after {spawned} goroutines: {error}"));
        }
    }
    // The runtime and the sender stay alive until the process exits.
    std::mem::forget(sender);
    std::mem::forget(runtime);
}

#[cfg(goro_many_goroutines)]
fn many_goroutines(builder: goro::Builder) -> goro::Builder {
    builder.many_goroutines(true).stack_size(MANY_STACK_SIZE)
}

#[cfg(not(goro_many_goroutines))]
fn many_goroutines(_builder: goro::Builder) -> goro::Builder {
    crate::fail_run("goro::Builder::many_goroutines does not exist in this goro")
}

fn park_may(count: usize) {
    // may maps every coroutine stack on its own and protects a guard page in it, which makes
    // two mappings per coroutine. Past vm.max_map_count its worker threads stop making
    // progress instead of failing, so a run that cannot fit is reported before it starts.
    let needed = 2 * count + map_count();
    let limit = max_map_count();
    if needed > limit {
        crate::fail_run(&format!(
            "may needs two mappings per coroutine stack, {needed} in all, and \
             vm.max_map_count is {limit}"
        ));
    }
    may::config().set_workers(2);
    for spawned in 0..count {
        // SAFETY: the body touches no thread-local storage, as may's spawn requires.
        let spawn = unsafe {
            may::coroutine::Builder::new().spawn(|| {
                // Relaxed: the count only tells the main thread when to measure.
                PARKED.fetch_add(1, Ordering::Relaxed);
                may::coroutine::park();
            })
        };
        match spawn {
            Ok(handle) => std::mem::forget(handle),
            Err(error) => {
                crate::fail_run(&format!("may spawn after {spawned} coroutines: {error}"))
            }
        }
    }
}

/// How long the parked count may stay unchanged before the run is reported as stalled.
const STALL_LIMIT: Duration = Duration::from_secs(10);

/// Waits until `count` goroutines have started, then a little longer for the last ones to
/// reach their park. Fails the run if the count stops growing for [`STALL_LIMIT`]: a peer
/// whose stack allocation fails inside a worker thread (may does, once the map count runs
/// out) stops making progress instead of exiting.
fn wait_until_parked(count: usize) {
    let mut last = 0;
    let mut last_change = std::time::Instant::now();
    loop {
        // Relaxed: see the increments; the sleep below covers the last few parks.
        let parked = PARKED.load(Ordering::Relaxed);
        if parked >= count {
            break;
        }
        if parked != last {
            last = parked;
            last_change = std::time::Instant::now();
        } else if last_change.elapsed() > STALL_LIMIT {
            crate::fail_run(&format!(
                "stalled with {parked} of {count} goroutines parked for {} s",
                STALL_LIMIT.as_secs()
            ));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(100));
}

/// Counts this process's mappings in /proc/self/maps.
fn map_count() -> usize {
    std::fs::read_to_string("/proc/self/maps")
        .map(|maps| maps.lines().count())
        .unwrap_or_else(|error| crate::fail_run(&format!("reading /proc/self/maps: {error}")))
}

/// Reads the kernel's limit on mappings per process from /proc/sys/vm/max_map_count.
fn max_map_count() -> usize {
    let text = std::fs::read_to_string("/proc/sys/vm/max_map_count").unwrap_or_else(|error| {
        crate::fail_run(&format!("reading /proc/sys/vm/max_map_count: {error}"))
    });
    text.trim().parse().unwrap_or_else(|_| {
        crate::fail_run(&format!(
            "vm.max_map_count `{}` is not a number",
            text.trim()
        ))
    })
}

/// Resident set size in bytes, from /proc/self/statm.
fn rss_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm")
        .unwrap_or_else(|error| crate::fail_run(&format!("reading /proc/self/statm: {error}")));
    let pages: usize = statm
        .split_whitespace()
        .nth(1)
        .and_then(|field| field.parse().ok())
        .unwrap_or_else(|| crate::fail_run(&format!("unexpected /proc/self/statm: {statm}")));
    // SAFETY: sysconf has no preconditions.
    let page_size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
    pages * page_size
}
