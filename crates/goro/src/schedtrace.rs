//! `GORO_DEBUG=schedtrace=MS`: a thread per runtime that prints the scheduler's state to
//! standard error every `MS` milliseconds, in the spirit of Go's `schedtrace`:
//!
//! ```text
//! SCHED 1003ms: runtime=1 procs=2 idleprocs=1 threads=3 spinningthreads=0 idlethreads=1 goroutines=57 runqueue=12 [- -]
//! ```
//!
//! `runqueue` counts the goroutines whose status is Runnable, which are those in their
//! schedulers' queues (plus any that are between a status change and their `ready` call).
//! The count comes from the runtime's list of goroutines, so it covers every scheduler. With more than one scheduler, a
//! `queued:` suffix splits it by scheduler name. The bracket has one entry per P for its local
//! run queue, from `Scheduler::local_len`, or `-` where no scheduler keeps per-P queues.
//!
//! Nothing of this runs on the scheduling path: the thread reads counters and the goroutine
//! list under their own locks, and exists only while the setting is on.

use std::fmt::Write as _;
use std::io::{self, Write as _};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use goro_abi::{GStatus, PId};

use crate::dump::OrDash;
use crate::runtime::Shared;

/// A runtime's schedtrace thread; dropping it stops the thread and waits for it.
pub(crate) struct SchedTrace {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: Option<JoinHandle<()>>,
}

impl SchedTrace {
    /// Starts the thread for runtime `runtime_id`, built at `started`, printing every
    /// `period`, with a line per P, M and goroutine when `detail` is set.
    pub(crate) fn start(
        shared: Arc<Shared>,
        runtime_id: u64,
        started: Instant,
        period: Duration,
        detail: bool,
    ) -> io::Result<SchedTrace> {
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let thread_stop = stop.clone();
        let thread = std::thread::Builder::new()
            .name(format!("goro-schedtrace{runtime_id}"))
            .spawn(move || {
                let (stopped, wakeup) = &*thread_stop;
                let mut next = Instant::now() + period;
                let mut stopped = stopped.lock().unwrap_or_else(|e| e.into_inner());
                loop {
                    let timeout = next.saturating_duration_since(Instant::now());
                    stopped = wakeup
                        .wait_timeout_while(stopped, timeout, |stopped| !*stopped)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                    if *stopped {
                        return;
                    }
                    next += period;
                    let text = report(&shared, runtime_id, started.elapsed(), detail);
                    // Best effort: a closed stderr has no one to report to.
                    let _ = io::stderr().lock().write_all(text.as_bytes());
                }
            })?;
        Ok(SchedTrace {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for SchedTrace {
    fn drop(&mut self) {
        let (stopped, wakeup) = &*self.stop;
        *stopped.lock().unwrap_or_else(|e| e.into_inner()) = true;
        wakeup.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Returns the schedtrace line of `shared`, followed by its P, M and goroutine lines when
/// `detail` is set.
pub(crate) fn report(shared: &Shared, runtime_id: u64, uptime: Duration, detail: bool) -> String {
    let mut text = summary_line(shared, runtime_id, uptime);
    if detail {
        detail_lines(shared, runtime_id, uptime, &mut text);
    }
    text
}

/// Returns the `SCHED` line, ending with a newline.
fn summary_line(shared: &Shared, runtime_id: u64, uptime: Duration) -> String {
    let (idle_ps, spinning, idle_ms) = shared.idle_counts();
    let threads = shared.all_ms().len();
    let schedulers: Vec<&'static str> = shared.schedulers.iter().map(|s| s.name()).collect();

    let mut queued = vec![0usize; schedulers.len()];
    let mut goroutines = 0;
    shared.for_each_goroutine(|g| {
        goroutines += 1;
        let header = g.header();
        if header.status() == GStatus::Runnable {
            let link = header.sched();
            if let Some(index) = shared.schedulers.iter().position(|s| s.is(link)) {
                queued[index] += 1;
            }
        }
    });

    let procs = shared.ps.len();
    let mut text = format!(
        "SCHED {}ms: runtime={runtime_id} procs={procs} idleprocs={idle_ps} threads={threads} \
         spinningthreads={spinning} idlethreads={idle_ms} goroutines={goroutines} runqueue={} [",
        uptime.as_millis(),
        queued.iter().sum::<usize>(),
    );
    // Each P's local queue, summed over the schedulers that keep per-P queues; `-` when
    // none does (the FIFO scheduler has one global queue).
    let per_p: Vec<String> = (0..procs)
        .map(|p| {
            let lens = shared
                .schedulers
                .iter()
                .filter_map(|s| s.local_len(PId(p as u32)));
            lens.reduce(|a, b| a + b)
                .map_or_else(|| "-".to_owned(), |len| len.to_string())
        })
        .collect();
    text.push_str(&per_p.join(" "));
    text.push(']');
    if schedulers.len() > 1 {
        text.push_str(" queued:");
        for (name, count) in schedulers.iter().zip(&queued) {
            let _ = write!(text, " {name}={count}");
        }
    }
    text.push('\n');
    text
}

/// Appends one line per P, M and goroutine to `text`.
fn detail_lines(shared: &Shared, runtime_id: u64, uptime: Duration, text: &mut String) {
    let dump = crate::dump::collect(shared, runtime_id, uptime, false);
    for p in &dump.ps {
        let _ = writeln!(text, "  {p}");
    }
    for m in &dump.ms {
        let _ = writeln!(text, "  {m}");
    }
    for g in &dump.goroutines {
        let _ = write!(text, "  G{}: status={}", g.goid, g.status);
        if g.status == GStatus::Waiting {
            let _ = write!(text, "({})", g.wait_reason.name());
        }
        let _ = writeln!(text, " m={} scheduler={}", OrDash(g.m), g.scheduler);
    }
}
