//! goro-demo runs demo jobs on the goro goroutine runtime.
//!
//! `goro-demo wc [PATH...]` counts lines, words and bytes of every regular file under the
//! paths, as `LC_ALL=C wc -lwc` would, with one goroutine per file. `goro-demo wc --help`
//! describes the options and output.
//!
//! `goro-demo serve [DIR]` serves the files of DIR over HTTP/1.1 with one goroutine per
//! connection, until SIGINT or SIGTERM. `goro-demo serve --help` describes its options.

mod cli;
mod count;
mod runtime;
mod serve;
mod trace;
mod walk;
mod wc;

use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;

use crate::cli::{Cli, Command, WcArgs};
use crate::runtime::{GoroFileSystem, GoroutineSpawner};

/// The tree that `wc` counts when no PATH is given. Debian policy puts each package's copyright
/// file there, so Debian and Ubuntu systems have it.
const DEFAULT_ROOT: &str = "/usr/share/doc";

/// Exit status when a path could not be read or the job failed, as GNU wc uses it.
const EXIT_FAILURE: u8 = 1;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Wc(args) => run_wc(args),
        Command::Serve(mut args) => {
            let trace = match args
                .trace
                .take()
                .as_deref()
                .map(trace::TraceFile::start)
                .transpose()
            {
                Ok(trace) => trace,
                Err(message) => {
                    eprintln!("goro-demo: {message}");
                    return ExitCode::from(EXIT_FAILURE);
                }
            };
            let code = serve::run(args);
            if let Some(trace) = trace
                && let Err(message) = trace.finish()
            {
                eprintln!("goro-demo: {message}");
                return ExitCode::from(EXIT_FAILURE);
            }
            code
        }
    }
}

/// Runs `goro-demo wc` and returns its exit status.
fn run_wc(args: WcArgs) -> ExitCode {
    // The runtime owns the valid range of --procs, so it checks the value.
    let runtime = match runtime::build(args.scheduler, args.procs) {
        Ok(runtime) => runtime,
        Err(err @ goro::BuildError::Procs { .. }) => {
            cli::wc_usage_error(format!("invalid value for '--procs <N>': {err}")).exit()
        }
        Err(err) => {
            eprintln!("goro-demo: failed to build the runtime: {err}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    let roots = match resolve_roots(args.paths, Path::new(DEFAULT_ROOT)) {
        Ok(roots) => roots,
        Err(message) => {
            eprintln!("goro-demo: {message}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };

    let trace = match args
        .trace
        .as_deref()
        .map(trace::TraceFile::start)
        .transpose()
    {
        Ok(trace) => trace,
        Err(message) => {
            eprintln!("goro-demo: {message}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    let start = Instant::now();
    let joined =
        runtime.block_on(move || wc::count_paths(&GoroFileSystem, &mut GoroutineSpawner, &roots));
    let wall_time = start.elapsed();
    // A trace that cannot be written fails the run, but the counts are still printed,
    // because they are the result of the job and the trace only describes how it ran.
    let mut trace_failed = false;
    if let Some(trace) = trace
        && let Err(message) = trace.finish()
    {
        eprintln!("goro-demo: {message}");
        trace_failed = true;
    }
    let results = match joined {
        Ok(results) => results,
        Err(err) => {
            eprintln!("goro-demo: the main goroutine failed: {err}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };

    let mut out = BufWriter::new(io::stdout().lock());
    let mut err = io::stderr().lock();
    let written = wc::write_results(&results, args.per_file, &mut out, &mut err)
        .and_then(|summary| out.flush().map(|()| summary));
    let summary = match written {
        Ok(summary) => summary,
        // The reader went away, as with `goro-demo wc --per-file | head`: nothing to report.
        Err(error) if error.kind() == io::ErrorKind::BrokenPipe => {
            return ExitCode::from(EXIT_FAILURE);
        }
        Err(error) => {
            eprintln!("goro-demo: failed to write the output: {error}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    // The report is informational, so a failure to write it to stderr does not fail the run.
    let _ = runtime::write_report(&mut err, &runtime, wall_time);

    if summary.failed || trace_failed {
        ExitCode::from(EXIT_FAILURE)
    } else {
        ExitCode::SUCCESS
    }
}

/// Returns `paths`, or `default_root` when there are none and it exists.
fn resolve_roots(paths: Vec<PathBuf>, default_root: &Path) -> Result<Vec<PathBuf>, String> {
    if !paths.is_empty() {
        return Ok(paths);
    }
    match default_root.symlink_metadata() {
        Ok(_) => Ok(vec![default_root.to_path_buf()]),
        Err(err) => Err(format!(
            "{}: {err}. This default tree is missing, so pass a PATH to count",
            default_root.display()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_paths_kept() {
        let paths = vec![PathBuf::from("b"), PathBuf::from("a")];
        let roots = resolve_roots(paths.clone(), Path::new("/nonexistent")).unwrap();
        assert_eq!(roots, paths);
    }

    #[test]
    fn default_root_used_when_present() {
        let default = std::env::temp_dir();
        let roots = resolve_roots(Vec::new(), &default).unwrap();
        assert_eq!(roots, [default]);
    }

    #[test]
    fn missing_default_root_names_it_and_fix() {
        let message = resolve_roots(Vec::new(), Path::new("/nonexistent/doc")).unwrap_err();
        assert!(message.starts_with("/nonexistent/doc: "), "{message}");
        assert!(message.contains("pass a PATH"), "{message}");
    }
}
