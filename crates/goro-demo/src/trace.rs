//! `--trace FILE`: records goro's execution trace while a job runs and writes it as Chrome
//! trace event JSON, which speedscope and Perfetto (ui.perfetto.dev) open, as does
//! `chrome://tracing` in Chromium versions that still have it.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// A trace being recorded into a file created up front, so that an unwritable path fails
/// before the job runs.
#[derive(Debug)]
pub struct TraceFile {
    path: PathBuf,
    file: File,
}

impl TraceFile {
    /// Creates (or truncates) `path` and starts recording the trace of every runtime.
    ///
    /// The process records one trace at a time, and the runtime starts its own when
    /// `GORO_TRACE` is set. Whichever of the two starts later discards the events of the other,
    /// so one of the files would be written without events. Both together are an error.
    pub fn start(path: &Path) -> Result<TraceFile, String> {
        let goro_trace_set = std::env::var_os("GORO_TRACE").is_some_and(|value| !value.is_empty());
        if goro_trace_set {
            return Err(format!(
                "cannot record the trace to {}: GORO_TRACE also requests a trace, and the \
                 process records only one. Unset GORO_TRACE or drop --trace",
                path.display()
            ));
        }
        if goro::trace::is_enabled() {
            return Err(format!(
                "cannot record the trace to {}: this process is recording a trace already, \
                 and it records one at a time",
                path.display()
            ));
        }
        let file = File::create(path)
            .map_err(|err| format!("cannot create the trace file {}: {err}", path.display()))?;
        goro::trace::start()
            .map_err(|err| format!("cannot record the trace to {}: {err}", path.display()))?;
        Ok(TraceFile {
            path: path.to_path_buf(),
            file,
        })
    }

    /// Stops recording and writes the JSON; returns the number of events written.
    pub fn finish(self) -> Result<usize, String> {
        let records = goro::trace::stop();
        let mut out = BufWriter::new(self.file);
        goro::trace::write_chrome_json(&records, &mut out)
            .and_then(|()| out.flush())
            .map_err(|err| {
                format!(
                    "failed to write the trace to {}: {err}",
                    self.path.display()
                )
            })?;
        Ok(records.len())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// Lock that each test of this module holds: the trace is one per process, so a test that
    /// records one would make the others' starts fail.
    static TRACE_SESSION: Mutex<()> = Mutex::new(());

    #[test]
    fn unwritable_path_rejected_up_front() {
        let _session = TRACE_SESSION.lock().unwrap_or_else(|e| e.into_inner());
        let message = TraceFile::start(Path::new("/nonexistent/dir/trace.json")).unwrap_err();
        assert!(
            message.starts_with("cannot create the trace file /nonexistent/dir/trace.json: "),
            "{message}"
        );
    }

    #[test]
    fn second_trace_in_process_rejected() {
        let _session = TRACE_SESSION.lock().unwrap_or_else(|e| e.into_inner());
        let path =
            std::env::temp_dir().join(format!("goro-demo-second-{}.json", std::process::id()));
        goro::trace::start().unwrap();
        let result = TraceFile::start(&path);
        goro::trace::stop();
        let message = result.unwrap_err();
        assert!(message.contains("recording a trace already"), "{message}");
        assert!(
            !path.exists(),
            "the rejected start created {}",
            path.display()
        );
    }

    #[test]
    fn writes_json_of_a_runtime() {
        let _session = TRACE_SESSION.lock().unwrap_or_else(|e| e.into_inner());
        let path =
            std::env::temp_dir().join(format!("goro-demo-trace-{}.json", std::process::id()));
        let trace = TraceFile::start(&path).unwrap();
        let rt = goro::Runtime::builder().procs(1).build().unwrap();
        rt.block_on(|| 1 + 1).unwrap();
        let events = trace.finish().unwrap();
        let json = std::fs::read_to_string(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        assert!(events >= 2, "the goroutine's start and stop were recorded");
        assert!(json.starts_with("{\"displayTimeUnit\""), "{json}");
        assert!(json.contains("\"cat\":\"goroutine\""), "{json}");
    }
}
