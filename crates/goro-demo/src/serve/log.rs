//! The server's log: timestamped lines on standard error.
//!
//! Error lines are rate-limited, so that a flood of bad clients cannot make the log the
//! bottleneck. The number of lines left out is logged once the limit allows again, and at
//! stop.

use std::fmt;
use std::io::{self, Write};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use super::time::log_timestamp;

/// Maximum number of error lines written per [`RATE_WINDOW`].
const MAX_ERRORS_PER_WINDOW: u32 = 20;

/// The window over which error lines are counted.
const RATE_WINDOW: Duration = Duration::from_secs(1);

/// The log of one server.
#[derive(Debug)]
pub struct Log {
    verbose: bool,
    window: Mutex<Window>,
    /// Errors reported, logged or not. Relaxed: a counter that orders nothing.
    errors: AtomicU64,
}

/// The error lines of the current rate window.
#[derive(Debug)]
struct Window {
    start: Instant,
    written: u32,
    /// Error lines left out since the last line that reported them.
    suppressed: u64,
}

impl Window {
    /// Counts an error line at `now`. Returns `None` if the line must be left out, otherwise
    /// the number of lines left out before it, which the caller reports first.
    fn admit(&mut self, now: Instant) -> Option<u64> {
        if now.duration_since(self.start) >= RATE_WINDOW {
            self.start = now;
            self.written = 0;
        }
        if self.written >= MAX_ERRORS_PER_WINDOW {
            self.suppressed += 1;
            return None;
        }
        self.written += 1;
        Some(std::mem::take(&mut self.suppressed))
    }
}

impl Log {
    /// Returns a log that also writes [`Log::verbose`] lines if `verbose` is set.
    pub fn new(verbose: bool) -> Log {
        Log {
            verbose,
            window: Mutex::new(Window {
                start: Instant::now(),
                written: 0,
                suppressed: 0,
            }),
            errors: AtomicU64::new(0),
        }
    }

    /// Writes a line about the server as a whole: start, stop, configuration.
    pub fn info(&self, message: fmt::Arguments<'_>) {
        write_line(message);
    }

    /// Writes a line about an error the server handled, unless more than
    /// `MAX_ERRORS_PER_WINDOW` error lines were written in the current second.
    pub fn error(&self, message: fmt::Arguments<'_>) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let admitted = self
            .window
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .admit(Instant::now());
        let Some(suppressed_before) = admitted else {
            return;
        };
        if suppressed_before > 0 {
            write_suppressed(suppressed_before);
        }
        write_line(message);
    }

    /// Writes a line about one connection or request, if the log is verbose.
    pub fn verbose(&self, message: fmt::Arguments<'_>) {
        if self.verbose {
            write_line(message);
        }
    }

    /// Returns whether [`Log::verbose`] writes anything, so that callers can skip building
    /// the message.
    pub fn is_verbose(&self) -> bool {
        self.verbose
    }

    /// Returns the number of errors reported so far, including those left out of the log.
    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    /// Writes how many error lines were left out, if any, and resets that count.
    pub fn flush_suppressed(&self) {
        let suppressed = {
            let mut window = self.window.lock().unwrap_or_else(|e| e.into_inner());
            std::mem::take(&mut window.suppressed)
        };
        if suppressed > 0 {
            write_suppressed(suppressed);
        }
    }
}

fn write_suppressed(count: u64) {
    write_line(format_args!(
        "{count} more error lines were left out, because at most {MAX_ERRORS_PER_WINDOW} are \
         logged per second"
    ));
}

/// Writes `TIMESTAMP goro-demo serve: MESSAGE` to standard error in one write.
fn write_line(message: fmt::Arguments<'_>) {
    let line = format!(
        "{} goro-demo serve: {message}\n",
        log_timestamp(SystemTime::now())
    );
    // Through the syscall protocol, so that a stalled stderr pipe stalls only this goroutine.
    // A log line that cannot be written is lost: there is nowhere else to report it.
    goro::blocking(|| {
        let _ = io::stderr().lock().write_all(line.as_bytes());
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_limits_error_lines() {
        let start = Instant::now();
        let mut window = Window {
            start,
            written: 0,
            suppressed: 0,
        };
        for line in 0..MAX_ERRORS_PER_WINDOW {
            assert_eq!(window.admit(start), Some(0), "line {line}");
        }
        assert_eq!(window.admit(start), None);
        assert_eq!(window.admit(start + RATE_WINDOW / 2), None);

        // The first line of the next window reports the two left out.
        let next = start + RATE_WINDOW;
        assert_eq!(window.admit(next), Some(2));
        assert_eq!(window.admit(next), Some(0));
    }
}
