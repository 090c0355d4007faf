//! Command-line syntax of goro-demo.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};

/// Runs demo jobs on the goro goroutine runtime.
#[derive(Debug, Parser)]
#[command(name = "goro-demo", version)]
pub struct Cli {
    /// The job to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The jobs that goro-demo runs.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Count lines, words and bytes of files, with one goroutine per file.
    Wc(WcArgs),
    /// Serve the files of a directory over HTTP/1.1, with one goroutine per connection.
    Serve(ServeArgs),
}

/// Arguments of `goro-demo wc`.
#[derive(Debug, Args)]
#[command(after_help = WC_AFTER_HELP)]
pub struct WcArgs {
    /// Files and directories to count, walking directories recursively
    /// [default: /usr/share/doc]
    #[arg(value_name = "PATH")]
    pub paths: Vec<PathBuf>,

    /// Scheduler of the goroutines
    #[arg(long, value_enum, default_value_t = SchedulerKind::Fifo)]
    pub scheduler: SchedulerKind,

    /// Number of processors (Ps) that run goroutines at once, from 1 to the runtime's maximum
    /// [default: the number of CPUs]
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub procs: Option<usize>,

    /// Print one line per file, sorted by path, before the total
    #[arg(long)]
    pub per_file: bool,

    /// Record goro's execution trace while counting and write it to FILE as Chrome trace
    /// event JSON (open it in speedscope, or in Perfetto at ui.perfetto.dev)
    #[arg(long, value_name = "FILE")]
    pub trace: Option<PathBuf>,
}

const WC_AFTER_HELP: &str = "\
Counts as GNU `LC_ALL=C wc -lwc` does. Lines are newline bytes. A word starts at a printable
byte (0x21 to 0x7e) after whitespace or at the start of a file, and ends at whitespace. Other
bytes, such as control bytes and bytes of 0x80 and above, neither start nor end a word.

Only regular files are counted, as `find PATH -type f` selects them: symbolic links are never
followed, also when given as PATH, and are skipped like FIFOs, sockets and devices.

Output: with --per-file, one line `LINES WORDS BYTES PATH` per file, sorted by path, then
always `LINES WORDS BYTES total`. Numbers are separated by single spaces, unlike GNU wc, which
pads them into columns. A run report of the runtime follows on standard error.

A file or directory that cannot be read is reported on standard error and the rest are still
counted. Exit status: 0 if every file was counted, 1 if one could not be or the --trace file
could not be written (the counts are printed all the same), 2 for invalid options.";

/// Arguments of `goro-demo serve`.
#[derive(Debug, Args)]
#[command(after_help = SERVE_AFTER_HELP)]
pub struct ServeArgs {
    /// Directory whose files to serve [default: the current directory]
    #[arg(value_name = "DIR")]
    pub dir: Option<PathBuf>,

    /// Address and port to listen on; port 0 picks a free port, which the log names
    #[arg(long, value_name = "IP:PORT", default_value = "127.0.0.1:8080")]
    pub addr: SocketAddr,

    /// Scheduler of the goroutines
    #[arg(long, value_enum, default_value_t = SchedulerKind::Fifo)]
    pub scheduler: SchedulerKind,

    /// Number of processors (Ps) that run goroutines at once, from 1 to the runtime's maximum
    /// [default: the number of CPUs]
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub procs: Option<usize>,

    /// Also log every connection and every request
    #[arg(long)]
    pub verbose: bool,

    /// Serve with one OS thread per connection over std::net instead of goroutines, as a
    /// baseline for benchmarks
    #[arg(long, hide = true, conflicts_with_all = ["scheduler", "procs"])]
    pub threads: bool,

    /// Record goro's execution trace while serving and write it to FILE as Chrome trace
    /// event JSON when the server stops
    #[arg(long, value_name = "FILE", conflicts_with = "threads")]
    pub trace: Option<PathBuf>,
}

const SERVE_AFTER_HELP: &str = "\
Answers GET and HEAD with the file that the path names, and 405 to other methods. A directory
is served through its index.html; without one, the answer is 403, because directories are not
listed. A path that leads out of DIR, through `..` or a symbolic link, is refused with 400 or
403. HTTP/1.1 connections stay open for further requests unless the client sends
`Connection: close`; HTTP/1.0 ones close unless it sends `Connection: keep-alive`.

Logs go to standard error: the start with the address, each error the server handles, and the
stop. SIGINT or SIGTERM stops the server: open connections finish their current response and
close, then it prints its counters and the runtime's report. A second signal exits at once.";

/// The schedulers that `--scheduler` selects from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum SchedulerKind {
    /// First in, first out: one run queue shared by all processors
    Fifo,
    /// Work stealing: a run queue per processor, and idle processors take goroutines from busy
    /// ones
    Steal,
}

/// Returns an error for `goro-demo wc` with `message` and its usage, which exits with status 2
/// like the errors that clap finds itself.
pub fn wc_usage_error(message: String) -> clap::Error {
    subcommand_usage_error("wc", message)
}

/// Returns an error for the subcommand `name` with `message` and its usage, which exits with
/// status 2 like the errors that clap finds itself.
///
/// # Panics
///
/// Panics if `name` is not a subcommand of [`Cli`].
pub fn subcommand_usage_error(name: &str, message: String) -> clap::Error {
    let mut command = Cli::command();
    command.build();
    let subcommand = command
        .find_subcommand_mut(name)
        .unwrap_or_else(|| panic!("subcommand_usage_error: Cli has no subcommand {name:?}"));
    subcommand.error(clap::error::ErrorKind::InvalidValue, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<WcArgs, clap::Error> {
        let args = ["goro-demo", "wc"].iter().chain(args);
        Cli::try_parse_from(args).map(|cli| match cli.command {
            Command::Wc(wc) => wc,
            other => panic!("parsed as {other:?}"),
        })
    }

    fn parse_serve(args: &[&str]) -> Result<ServeArgs, clap::Error> {
        let args = ["goro-demo", "serve"].iter().chain(args);
        Cli::try_parse_from(args).map(|cli| match cli.command {
            Command::Serve(serve) => serve,
            other => panic!("parsed as {other:?}"),
        })
    }

    #[test]
    fn command_definition_valid() {
        Cli::command().debug_assert();
    }

    #[test]
    fn defaults() {
        let args = parse(&[]).unwrap();
        assert!(args.paths.is_empty());
        assert_eq!(args.scheduler, SchedulerKind::Fifo);
        assert_eq!(args.procs, None);
        assert!(!args.per_file);
        assert_eq!(args.trace, None);
    }

    #[test]
    fn all_options() {
        let args = parse(&[
            "a",
            "--procs",
            "3",
            "b",
            "--scheduler",
            "fifo",
            "--per-file",
            "--trace",
            "t.json",
        ])
        .unwrap();
        assert_eq!(args.paths, [PathBuf::from("a"), PathBuf::from("b")]);
        assert_eq!(args.procs, Some(3));
        assert!(args.per_file);
        assert_eq!(args.trace, Some(PathBuf::from("t.json")));
    }

    #[test]
    fn usage_error_names_wc() {
        let err = wc_usage_error("invalid value for '--procs <N>': out of range".into());
        let message = err.render().to_string();
        assert_eq!(err.exit_code(), 2);
        assert!(message.contains("out of range"), "{message}");
        assert!(message.contains("Usage: goro-demo wc"), "{message}");
    }

    #[test]
    fn non_numeric_procs_rejected() {
        let err = parse(&["--procs", "many"]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("many"), "{err}");
    }

    /// A negative count is a value of `--procs`, which it rejects by name, not an unknown
    /// flag.
    #[test]
    fn negative_procs_rejected_by_name() {
        let err = parse(&["--procs", "-1"]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("--procs"), "{err}");
        assert!(err.to_string().contains("-1"), "{err}");
    }

    #[test]
    fn unknown_scheduler_rejected() {
        let err = parse(&["--scheduler", "lifo"]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("fifo"), "{err}");
    }

    #[test]
    fn serve_defaults() {
        let args = parse_serve(&[]).unwrap();
        assert_eq!(args.dir, None);
        assert_eq!(args.addr, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(args.scheduler, SchedulerKind::Fifo);
        assert_eq!(args.procs, None);
        assert!(!args.verbose);
        assert!(!args.threads);
    }

    #[test]
    fn serve_all_options() {
        let args = parse_serve(&[
            "www",
            "--addr",
            "[::1]:0",
            "--scheduler",
            "steal",
            "--procs",
            "2",
            "--verbose",
        ])
        .unwrap();
        assert_eq!(args.dir, Some(PathBuf::from("www")));
        assert_eq!(args.addr, "[::1]:0".parse().unwrap());
        assert_eq!(args.scheduler, SchedulerKind::Steal);
        assert_eq!(args.procs, Some(2));
        assert!(args.verbose);

        let args = parse_serve(&["--threads"]).unwrap();
        assert!(args.threads);
    }

    #[test]
    fn serve_threads_conflicts_with_runtime_options() {
        for option in [["--scheduler", "steal"], ["--procs", "2"]] {
            let err = parse_serve(&["--threads", option[0], option[1]]).unwrap_err();
            assert_eq!(
                err.kind(),
                clap::error::ErrorKind::ArgumentConflict,
                "{err}"
            );
        }
    }

    #[test]
    fn serve_invalid_address_rejected() {
        for addr in ["localhost:80", "127.0.0.1", "127.0.0.1:99999"] {
            let err = parse_serve(&["--addr", addr]).unwrap_err();
            assert_eq!(err.exit_code(), 2);
            assert!(err.to_string().contains(addr), "{err}");
        }
    }

    #[test]
    fn serve_usage_error_names_serve() {
        let err = subcommand_usage_error("serve", "invalid value for '--procs <N>'".into());
        let message = err.render().to_string();
        assert!(message.contains("Usage: goro-demo serve"), "{message}");
    }
}
