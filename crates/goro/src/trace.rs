//! Execution trace: the runtime's events, recorded only while tracing is on, and their export
//! as Chrome trace event JSON.
//!
//! Every hook in the runtime is `trace::emit(|| Event::...)`. While tracing is off, that is one
//! relaxed load of a global flag and a predictable branch; the closure that builds the event
//! never runs.
//!
//! While tracing is on, each thread appends to a buffer of its own, so that Ms do not contend
//! on one lock. Records are ordered by a process-wide sequence number taken with one
//! `fetch_add` per event: read-modify-write operations on one atomic are totally ordered, and
//! that order agrees with happens-before. So when a goroutine stops on one M and starts on
//! another, its stop is ordered first, whichever buffer contains it. [`stop`] merges the buffers
//! in that order.
//!
//! [`write_chrome_json`] turns the records into the JSON that `chrome://tracing` and Perfetto
//! open: one track per P with a slice `g<id>` for each run of a goroutine, one track per M with
//! its syscalls, and instants for spawns, wakeups and P hand-overs. Setting the environment
//! variable `GORO_TRACE=FILE` traces from the moment a runtime is built and writes the JSON to
//! `FILE` when the last runtime built with it drops.

use std::cell::OnceCell;
use std::collections::HashMap;
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use goro_abi::WaitReason;

use crate::m::current_m;

/// The reason a goroutine stopped running on its M.
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

impl StopReason {
    /// Returns a short description for trace viewers.
    pub fn name(self) -> &'static str {
        match self {
            StopReason::Yield => "yield",
            StopReason::Block(_) => "block",
            StopReason::Exit => "exit",
            StopReason::SyscallNoP => "syscall exit without a P",
            StopReason::Requeue => "requeued after a syscall",
        }
    }
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

/// Whether events are recorded. Relaxed everywhere: the flag only gates recording, and the
/// buffers are published through `SESSION`'s lock.
static ENABLED: AtomicBool = AtomicBool::new(false);

/// The process-wide order of records; see the module documentation.
static SEQUENCE: AtomicU64 = AtomicU64::new(0);

/// The number of the current tracing session. Written under `SESSION`'s lock by [`start`] and
/// [`stop`], and read Relaxed by recording threads, which compare it with their buffer's and
/// join the session under the same lock when it differs.
static GENERATION: AtomicU64 = AtomicU64::new(0);

/// Nanoseconds from [`epoch`] to the start of the current session, written by [`start`] before
/// it sets `ENABLED`. A record made right at a start may read the previous session's origin,
/// and its time then saturates at 0 or comes out early.
static START_NS: AtomicU64 = AtomicU64::new(0);

/// The buffers that joined the current session.
struct Session {
    generation: u64,
    buffers: Vec<Arc<ThreadBuffer>>,
}

static SESSION: Mutex<Session> = Mutex::new(Session {
    generation: 0,
    buffers: Vec::new(),
});

/// One thread's records. Its lock is taken by the owning thread for every record and by
/// [`stop`] once, so it is almost never contended.
#[derive(Default)]
struct ThreadBuffer {
    inner: Mutex<BufferInner>,
}

#[derive(Default)]
struct BufferInner {
    /// The session these records belong to.
    generation: u64,
    records: Vec<(u64, TraceRecord)>,
}

thread_local! {
    static LOCAL: OnceCell<Arc<ThreadBuffer>> = const { OnceCell::new() };
}

/// Returns the process's monotonic time origin for trace timestamps.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn now_ns() -> u64 {
    epoch().elapsed().as_nanos() as u64
}

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
    let record = TraceRecord {
        time_ns: now_ns().saturating_sub(START_NS.load(Ordering::Relaxed)),
        m: m.map(|m| m.id.0),
        p: m.and_then(|m| m.p()).map(|p| p.0),
        event,
    };
    // Relaxed: only the modification order of this one counter matters (module docs).
    let sequence = SEQUENCE.fetch_add(1, Ordering::Relaxed);
    let generation = GENERATION.load(Ordering::Relaxed);
    // The closure runs within this call, which never switches goroutines, so the thread-local
    // address cannot go stale on another thread.
    let _ = LOCAL.try_with(|local| {
        let buffer = local.get_or_init(Arc::default);
        {
            let mut inner = buffer.inner.lock().unwrap_or_else(|e| e.into_inner());
            if inner.generation == generation {
                inner.records.push((sequence, record));
                return;
            }
        }
        // Join the session: the session lock first, then the buffer's, the order `stop` uses.
        let mut session = SESSION.lock().unwrap_or_else(|e| e.into_inner());
        if session.generation != generation {
            // A session started or stopped since the generation was read: drop the event.
            return;
        }
        let mut inner = buffer.inner.lock().unwrap_or_else(|e| e.into_inner());
        if inner.generation != generation {
            // Any records left are from an earlier session, which `stop` has already collected
            // under the session lock, or events that arrived after it.
            inner.records.clear();
            inner.generation = generation;
            session.buffers.push(buffer.clone());
        }
        inner.records.push((sequence, record));
    });
}

/// The error of [`start`] while a trace is being recorded already.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AlreadyTracing;

impl std::fmt::Display for AlreadyTracing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(
            "a trace is already being recorded, and the process records one at a time; call \
             goro::trace::stop first",
        )
    }
}

impl std::error::Error for AlreadyTracing {}

/// Starts recording events of every runtime in the process. Fails while a trace is being
/// recorded already (started by this function or by `GORO_TRACE`), as Go's `trace.Start`
/// does, rather than discard that trace's events.
pub fn start() -> Result<(), AlreadyTracing> {
    let mut session = SESSION.lock().unwrap_or_else(|e| e.into_inner());
    // Relaxed: `stop` clears the flag before it takes the session lock, so a start that
    // takes the lock after a stop's sees it clear.
    if ENABLED.load(Ordering::Relaxed) {
        return Err(AlreadyTracing);
    }
    session.generation += 1;
    session.buffers.clear();
    GENERATION.store(session.generation, Ordering::Relaxed);
    START_NS.store(now_ns(), Ordering::Relaxed);
    ENABLED.store(true, Ordering::Relaxed);
    Ok(())
}

/// Stops recording and returns the events in the order they happened (see the module
/// documentation for what that order guarantees).
pub fn stop() -> Vec<TraceRecord> {
    ENABLED.store(false, Ordering::Relaxed);
    let mut all = Vec::new();
    {
        let mut session = SESSION.lock().unwrap_or_else(|e| e.into_inner());
        let generation = session.generation;
        // A new generation makes threads that still hold an event drop it, instead of adding
        // it to the next session.
        session.generation += 1;
        GENERATION.store(session.generation, Ordering::Relaxed);
        // The buffers are drained under the session lock, so that no thread can join a later
        // session, which clears its buffer, before its records are collected here.
        for buffer in std::mem::take(&mut session.buffers) {
            let mut inner = buffer.inner.lock().unwrap_or_else(|e| e.into_inner());
            if inner.generation == generation {
                all.append(&mut inner.records);
            }
        }
    }
    all.sort_unstable_by_key(|(sequence, _)| *sequence);
    all.into_iter().map(|(_, record)| record).collect()
}

/// Returns whether a trace is being recorded.
pub fn is_enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Runtimes built while `GORO_TRACE` was set and not dropped yet, and the file to write.
struct EnvTrace {
    runtimes: usize,
    /// The file named by `GORO_TRACE` and its path, created when the first runtime is built.
    file: Option<(PathBuf, std::fs::File)>,
}

static ENV_TRACE: Mutex<EnvTrace> = Mutex::new(EnvTrace {
    runtimes: 0,
    file: None,
});

/// A runtime's part in the trace requested with `GORO_TRACE`; the last one dropped writes it.
pub(crate) struct EnvTraceGuard(());

/// Starts the trace requested by the environment variable `GORO_TRACE=FILE`, when it is set
/// and non-empty. Called once per runtime as it is built.
///
/// FILE is created here, before anything is recorded, so that a path that cannot be written
/// is reported when the runtime is built and not after the whole run. Tracing then stays off.
pub(crate) fn start_from_env() -> Option<EnvTraceGuard> {
    let path = std::env::var_os("GORO_TRACE").filter(|path| !path.is_empty())?;
    let mut env_trace = ENV_TRACE.lock().unwrap_or_else(|e| e.into_inner());
    if env_trace.runtimes == 0 {
        let path = PathBuf::from(path);
        if let Err(error) = start() {
            eprintln!("goro: GORO_TRACE={} is ignored: {error}", path.display());
            return None;
        }
        match std::fs::File::create(&path) {
            Ok(file) => env_trace.file = Some((path, file)),
            Err(error) => {
                drop(stop());
                eprintln!(
                    "goro: failed to create the trace file {} named by GORO_TRACE, so nothing \
                     is traced: {error}. Set GORO_TRACE to a writable file path",
                    path.display()
                );
                return None;
            }
        }
    }
    env_trace.runtimes += 1;
    Some(EnvTraceGuard(()))
}

impl Drop for EnvTraceGuard {
    fn drop(&mut self) {
        let mut env_trace = ENV_TRACE.lock().unwrap_or_else(|e| e.into_inner());
        env_trace.runtimes -= 1;
        if env_trace.runtimes > 0 {
            return;
        }
        let records = stop();
        let Some((path, file)) = env_trace.file.take() else {
            return;
        };
        let mut out = io::BufWriter::new(file);
        let written = write_chrome_json(&records, &mut out).and_then(|()| out.flush());
        if let Err(error) = written {
            eprintln!(
                "goro: failed to write the trace requested by GORO_TRACE to {}: {error}",
                path.display()
            );
        }
    }
}

/// Process ids of the two groups of tracks in the JSON.
const PID_PS: u32 = 1;
const PID_MS: u32 = 2;
/// The track of the monitor and of threads that are no M.
const TID_OTHER: u32 = u32::MAX;

/// Writes `records` (as returned by [`stop`]) as Chrome trace event JSON, the format that
/// `chrome://tracing`, Perfetto and speedscope open.
///
/// The JSON has one track per P (process "goro Ps"), with a complete event named `g<id>` for
/// each uninterrupted run of a goroutine on that P, and one track per M (process "goro Ms")
/// with a complete event for each syscall. A goroutine's run ends when it yields, parks, exits
/// or enters a syscall. After a syscall it starts a new run on the P it got back. Spawns
/// (`create g<id>`), wakeups (`unblock g<id>`) and P hand-overs (`P start`, `P stop`) are
/// instant events. Every event has the recording M in its `args`. Times are microseconds
/// since the trace started, with nanosecond decimals. Runs and syscalls that were still open
/// when the trace stopped end at the last record and have `"unfinished": true`.
pub fn write_chrome_json(records: &[TraceRecord], out: &mut impl Write) -> io::Result<()> {
    let mut json = ChromeJson::new(out);
    json.write_raw("{\"displayTimeUnit\":\"ns\",\"traceEvents\":[\n")?;
    json.metadata(PID_PS, None, "process_name", "goro Ps")?;
    json.metadata(PID_MS, None, "process_name", "goro Ms")?;
    json.metadata(PID_PS, None, "process_sort_index", "0")?;
    json.metadata(PID_MS, None, "process_sort_index", "1")?;

    let mut ps_seen = std::collections::BTreeSet::new();
    let mut ms_seen = std::collections::BTreeSet::new();
    let mut converter = Converter::default();
    for record in records {
        if let Some(p) = record.p {
            ps_seen.insert(p);
        }
        if let Event::PStart { p } | Event::PStop { p } = record.event {
            ps_seen.insert(p);
        }
        ms_seen.insert(record.m.unwrap_or(TID_OTHER));
        converter.convert(record, &mut json)?;
    }
    let end = records.last().map_or(0, |r| r.time_ns);
    converter.finish(end, &mut json)?;

    for p in ps_seen {
        json.metadata(PID_PS, Some(p), "thread_name", &format!("P{p}"))?;
        json.metadata(PID_PS, Some(p), "thread_sort_index", &p.to_string())?;
    }
    for m in ms_seen {
        let name = if m == TID_OTHER {
            "monitor and other threads".to_string()
        } else {
            format!("M{m}")
        };
        json.metadata(PID_MS, Some(m), "thread_name", &name)?;
    }
    json.write_raw("\n]}\n")
}

/// A goroutine's open run on a P.
struct Run {
    p: u32,
    m: Option<u32>,
    start_ns: u64,
}

/// A goroutine's open syscall.
struct Syscall {
    m: Option<u32>,
    start_ns: u64,
    handoff: bool,
}

/// Pairs start and stop records into complete events.
#[derive(Default)]
struct Converter {
    runs: HashMap<u64, Run>,
    syscalls: HashMap<u64, Syscall>,
}

impl Converter {
    fn convert<W: Write>(
        &mut self,
        record: &TraceRecord,
        json: &mut ChromeJson<W>,
    ) -> io::Result<()> {
        let now = record.time_ns;
        let m = record.m;
        match record.event {
            Event::GoCreate { goid } => {
                json.instant(
                    record,
                    &format!("create g{goid}"),
                    &[("goid", goid.to_string())],
                )?;
            }
            Event::GoUnblock { goid } => {
                json.instant(
                    record,
                    &format!("unblock g{goid}"),
                    &[("goid", goid.to_string())],
                )?;
            }
            Event::GoStart { goid } => {
                if let Some(run) = self.runs.remove(&goid) {
                    // A start without a stop: the stop was lost at a session boundary.
                    json.run(goid, &run, now, "lost stop", false)?;
                }
                if let Some(p) = record.p {
                    self.runs.insert(
                        goid,
                        Run {
                            p,
                            m,
                            start_ns: now,
                        },
                    );
                }
            }
            Event::GoStop { goid, reason } => {
                if let Some(run) = self.runs.remove(&goid) {
                    let reason = match reason {
                        StopReason::Block(wait) => format!("block: {}", wait.name()),
                        other => other.name().to_string(),
                    };
                    json.run(goid, &run, now, &reason, false)?;
                }
            }
            Event::SyscallEnter { goid, handoff } => {
                if let Some(run) = self.runs.remove(&goid) {
                    json.run(goid, &run, now, "syscall", false)?;
                }
                self.syscalls.insert(
                    goid,
                    Syscall {
                        m,
                        start_ns: now,
                        handoff,
                    },
                );
            }
            Event::SyscallExit { goid, fast } => {
                if let Some(syscall) = self.syscalls.remove(&goid) {
                    json.syscall(goid, &syscall, now, Some(fast))?;
                }
                if let Some(p) = record.p {
                    self.runs.insert(
                        goid,
                        Run {
                            p,
                            m,
                            start_ns: now,
                        },
                    );
                }
            }
            Event::PStart { p } | Event::PStop { p } => {
                let name = if matches!(record.event, Event::PStart { .. }) {
                    "P start"
                } else {
                    "P stop"
                };
                // On the P's own track, also when the monitor (which owns no P) retook it.
                let on_p = TraceRecord {
                    p: Some(p),
                    ..*record
                };
                json.instant(&on_p, name, &[("p", p.to_string())])?;
            }
        }
        Ok(())
    }

    /// Ends every run and syscall still open at `end_ns`.
    fn finish<W: Write>(&mut self, end_ns: u64, json: &mut ChromeJson<W>) -> io::Result<()> {
        let mut runs: Vec<_> = self.runs.drain().collect();
        runs.sort_by_key(|(goid, _)| *goid);
        for (goid, run) in runs {
            json.run(goid, &run, end_ns, "trace stopped", true)?;
        }
        let mut syscalls: Vec<_> = self.syscalls.drain().collect();
        syscalls.sort_by_key(|(goid, _)| *goid);
        for (goid, syscall) in syscalls {
            json.syscall(goid, &syscall, end_ns, None)?;
        }
        Ok(())
    }
}

/// Writes trace events, separated by commas.
struct ChromeJson<'a, W: Write> {
    out: &'a mut W,
    first: bool,
}

impl<'a, W: Write> ChromeJson<'a, W> {
    fn new(out: &'a mut W) -> Self {
        ChromeJson { out, first: true }
    }

    fn write_raw(&mut self, text: &str) -> io::Result<()> {
        self.out.write_all(text.as_bytes())
    }

    fn separator(&mut self) -> io::Result<()> {
        if self.first {
            self.first = false;
            Ok(())
        } else {
            self.write_raw(",\n")
        }
    }

    fn metadata(&mut self, pid: u32, tid: Option<u32>, name: &str, value: &str) -> io::Result<()> {
        self.separator()?;
        let tid = tid.unwrap_or(0);
        let key = if name.ends_with("sort_index") {
            format!("\"sort_index\":{value}")
        } else {
            format!("\"name\":{}", quote(value))
        };
        write!(
            self.out,
            "{{\"ph\":\"M\",\"pid\":{pid},\"tid\":{tid},\"name\":\"{name}\",\"args\":{{{key}}}}}"
        )
    }

    fn run(
        &mut self,
        goid: u64,
        run: &Run,
        end_ns: u64,
        reason: &str,
        open: bool,
    ) -> io::Result<()> {
        self.separator()?;
        write!(
            self.out,
            "{{\"ph\":\"X\",\"cat\":\"goroutine\",\"name\":\"g{goid}\",\"pid\":{PID_PS},\
             \"tid\":{},\"ts\":{},\"dur\":{},\"args\":{{\"goid\":{goid},\"m\":{},\
             \"end\":{}{}}}}}",
            run.p,
            micros(run.start_ns),
            micros(end_ns.saturating_sub(run.start_ns)),
            optional(run.m),
            quote(reason),
            if open { ",\"unfinished\":true" } else { "" },
        )
    }

    fn syscall(
        &mut self,
        goid: u64,
        syscall: &Syscall,
        end_ns: u64,
        fast: Option<bool>,
    ) -> io::Result<()> {
        self.separator()?;
        let exit = match fast {
            Some(true) => ",\"exit\":\"kept its P\"",
            Some(false) => ",\"exit\":\"lost its P\"",
            None => ",\"unfinished\":true",
        };
        write!(
            self.out,
            "{{\"ph\":\"X\",\"cat\":\"syscall\",\"name\":\"syscall g{goid}\",\"pid\":{PID_MS},\
             \"tid\":{},\"ts\":{},\"dur\":{},\"args\":{{\"goid\":{goid},\"m\":{},\
             \"handoff\":{}{exit}}}}}",
            syscall.m.unwrap_or(TID_OTHER),
            micros(syscall.start_ns),
            micros(end_ns.saturating_sub(syscall.start_ns)),
            optional(syscall.m),
            syscall.handoff,
        )
    }

    fn instant(
        &mut self,
        record: &TraceRecord,
        name: &str,
        args: &[(&str, String)],
    ) -> io::Result<()> {
        self.separator()?;
        let (pid, tid) = match record.p {
            Some(p) => (PID_PS, p),
            None => (PID_MS, record.m.unwrap_or(TID_OTHER)),
        };
        write!(
            self.out,
            "{{\"ph\":\"i\",\"s\":\"t\",\"cat\":\"runtime\",\"name\":{},\"pid\":{pid},\
             \"tid\":{tid},\"ts\":{},\"args\":{{\"m\":{}",
            quote(name),
            micros(record.time_ns),
            optional(record.m),
        )?;
        for (key, value) in args {
            write!(self.out, ",\"{key}\":{value}")?;
        }
        self.write_raw("}}")
    }
}

/// Formats nanoseconds as microseconds with three decimals, exactly.
fn micros(ns: u64) -> String {
    format!("{}.{:03}", ns / 1000, ns % 1000)
}

fn optional(value: Option<u32>) -> String {
    value.map_or_else(|| "null".to_string(), |v| v.to_string())
}

/// Quotes `text` as a JSON string.
fn quote(text: &str) -> String {
    let mut quoted = String::with_capacity(text.len() + 2);
    quoted.push('"');
    for c in text.chars() {
        match c {
            '"' => quoted.push_str("\\\""),
            '\\' => quoted.push_str("\\\\"),
            c if (c as u32) < 0x20 => quoted.push_str(&format!("\\u{:04x}", c as u32)),
            c => quoted.push(c),
        }
    }
    quoted.push('"');
    quoted
}

/// Serializes the lib tests that run a runtime, which emits events, with the test that counts
/// every event of a trace session: sessions are process-wide.
#[cfg(test)]
pub(crate) static SESSION_TEST_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[cfg(test)]
mod tests {
    use super::*;

    fn record(time_ns: u64, m: Option<u32>, p: Option<u32>, event: Event) -> TraceRecord {
        TraceRecord {
            time_ns,
            m,
            p,
            event,
        }
    }

    #[test]
    fn start_fails_while_tracing() {
        let _serial = SESSION_TEST_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        start().unwrap();
        assert_eq!(start(), Err(AlreadyTracing));
        drop(stop());
        assert_eq!(start(), Ok(()));
        drop(stop());
    }

    #[test]
    fn sessions_keep_every_finished_event() {
        let _serial = SESSION_TEST_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let threads = 4;
        let per_thread = 10_000u64;
        for _session in 0..2 {
            start().unwrap();
            let workers: Vec<_> = (0..threads)
                .map(|thread| {
                    std::thread::spawn(move || {
                        for i in 0..per_thread {
                            // The goid encodes the thread and the event's index.
                            emit(|| Event::GoCreate {
                                goid: thread * per_thread + i,
                            });
                        }
                    })
                })
                .collect();
            for worker in workers {
                worker.join().unwrap();
            }
            let records = stop();
            assert_eq!(records.len() as u64, threads * per_thread);
            let mut next = vec![0; threads as usize];
            for record in &records {
                let Event::GoCreate { goid } = record.event else {
                    panic!("unexpected event {record:?}");
                };
                let thread = (goid / per_thread) as usize;
                assert_eq!(
                    goid % per_thread,
                    next[thread],
                    "thread {thread} out of order"
                );
                next[thread] += 1;
            }
        }
    }

    #[test]
    fn micros_keeps_nanoseconds() {
        assert_eq!(micros(0), "0.000");
        assert_eq!(micros(1_234_567), "1234.567");
        assert_eq!(micros(999), "0.999");
    }

    #[test]
    fn quote_escapes_json() {
        assert_eq!(quote("a\"b\\c\n"), "\"a\\\"b\\\\c\\u000a\"");
    }

    #[test]
    fn syscall_splits_run() {
        let records = [
            record(1000, Some(1), Some(0), Event::GoStart { goid: 7 }),
            record(
                2000,
                Some(1),
                Some(0),
                Event::SyscallEnter {
                    goid: 7,
                    handoff: false,
                },
            ),
            record(
                5000,
                Some(1),
                Some(0),
                Event::SyscallExit {
                    goid: 7,
                    fast: true,
                },
            ),
            record(
                6000,
                Some(1),
                Some(0),
                Event::GoStop {
                    goid: 7,
                    reason: StopReason::Exit,
                },
            ),
        ];
        let mut out = Vec::new();
        write_chrome_json(&records, &mut out).unwrap();
        let json = String::from_utf8(out).unwrap();
        assert!(
            json.contains("\"name\":\"g7\",\"pid\":1,\"tid\":0,\"ts\":1.000,\"dur\":1.000"),
            "{json}"
        );
        assert!(
            json.contains("\"name\":\"syscall g7\",\"pid\":2,\"tid\":1,\"ts\":2.000,\"dur\":3.000"),
            "{json}"
        );
        assert!(
            json.contains("\"name\":\"g7\",\"pid\":1,\"tid\":0,\"ts\":5.000,\"dur\":1.000"),
            "{json}"
        );
        assert!(json.contains("\"end\":\"exit\""), "{json}");
    }

    #[test]
    fn open_run_marked_unfinished() {
        let records = [
            record(1000, Some(1), Some(0), Event::GoStart { goid: 3 }),
            record(4000, Some(2), Some(1), Event::GoCreate { goid: 4 }),
        ];
        let mut out = Vec::new();
        write_chrome_json(&records, &mut out).unwrap();
        let json = String::from_utf8(out).unwrap();
        assert!(
            json.contains("\"name\":\"g3\",\"pid\":1,\"tid\":0,\"ts\":1.000,\"dur\":3.000"),
            "{json}"
        );
        assert!(json.contains("\"unfinished\":true"), "{json}");
    }
}
