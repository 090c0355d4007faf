//! `--trace FILE`: records goro's execution trace while a job runs and writes it as Chrome
//! trace event JSON, which `chrome://tracing`, Perfetto (ui.perfetto.dev) and speedscope open.

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
    pub fn start(path: &Path) -> Result<TraceFile, String> {
        let file = File::create(path)
            .map_err(|err| format!("cannot create the trace file {}: {err}", path.display()))?;
        goro::trace::start();
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
    use super::*;

    #[test]
    fn unwritable_path_rejected_up_front() {
        let message = TraceFile::start(Path::new("/nonexistent/dir/trace.json")).unwrap_err();
        assert!(
            message.starts_with("cannot create the trace file /nonexistent/dir/trace.json: "),
            "{message}"
        );
    }

    #[test]
    fn writes_json_of_a_runtime() {
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
