//! Execution trace: the runtime's events, recorded only while tracing is on.
//!
//! Every hook in the runtime is `trace::emit(|| Event::...)`. While tracing is off, that is one
//! relaxed load of a global flag and a predictable branch; the closure that builds the event
//! never runs.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use goro_abi::WaitReason;

use crate::m::current_m;

/// Why a goroutine stopped running on its M.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// It yielded.
    Yield,
    /// It parked, waiting for the given reason.
    Block(WaitReason),
    /// Its body returned or panicked.
    Exit,
    /// It left a syscall and found no P; it waits in its scheduler's queue.
    SyscallNoP,
    /// Its scheduler requeued it after a syscall.
    Requeue,
}

/// One runtime event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// A goroutine was spawned.
    GoCreate {
        /// The new goroutine.
        goid: u64,
    },
    /// An M started running a goroutine.
    GoStart {
        /// The goroutine.
        goid: u64,
    },
    /// A goroutine stopped running.
    GoStop {
        /// The goroutine.
        goid: u64,
        /// Why.
        reason: StopReason,
    },
    /// A parked goroutine was made runnable.
    GoUnblock {
        /// The goroutine.
        goid: u64,
    },
    /// A goroutine entered a syscall.
    SyscallEnter {
        /// The goroutine.
        goid: u64,
        /// Whether the P was handed off at once (`entersyscall_block`).
        handoff: bool,
    },
    /// A goroutine left a syscall.
    SyscallExit {
        /// The goroutine.
        goid: u64,
        /// Whether it kept its P (the fast path).
        fast: bool,
    },
    /// An M took a P.
    PStart {
        /// The P.
        p: u32,
    },
    /// An M gave a P up (or the monitor retook it).
    PStop {
        /// The P.
        p: u32,
    },
}

/// An event with when and where it happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceRecord {
    /// Nanoseconds since tracing started.
    pub time_ns: u64,
    /// The M that recorded it; `None` for the monitor thread or a thread that is no M.
    pub m: Option<u32>,
    /// The P that M held; `None` when it held none.
    pub p: Option<u32>,
    /// The event.
    pub event: Event,
}

static ENABLED: AtomicBool = AtomicBool::new(false);

struct Buffer {
    start: Instant,
    records: Vec<TraceRecord>,
}

static BUFFER: Mutex<Option<Buffer>> = Mutex::new(None);

/// Records the event built by `event` when tracing is on.
#[inline(always)]
pub(crate) fn emit(event: impl FnOnce() -> Event) {
    // Relaxed: a trace started concurrently may miss events from the next few instructions.
    if ENABLED.load(Ordering::Relaxed) {
        record(event());
    }
}

#[cold]
#[inline(never)]
fn record(event: Event) {
    let m = current_m();
    let mut buffer = BUFFER.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(buffer) = buffer.as_mut() {
        buffer.records.push(TraceRecord {
            time_ns: buffer.start.elapsed().as_nanos() as u64,
            m: m.map(|m| m.id.0),
            p: m.and_then(|m| m.p()).map(|p| p.0),
            event,
        });
    }
}

/// Starts recording events of every runtime in the process, discarding any earlier trace.
pub fn start() {
    *BUFFER.lock().unwrap_or_else(|e| e.into_inner()) = Some(Buffer {
        start: Instant::now(),
        records: Vec::new(),
    });
    ENABLED.store(true, Ordering::Relaxed);
}

/// Stops recording and returns the events, in the order they were recorded.
pub fn stop() -> Vec<TraceRecord> {
    ENABLED.store(false, Ordering::Relaxed);
    BUFFER
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take()
        .map(|b| b.records)
        .unwrap_or_default()
}
