//! Command-line syntax of goro-demo.

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
    #[arg(long, value_name = "N")]
    pub procs: Option<usize>,

    /// Print one line per file, sorted by path, before the total
    #[arg(long)]
    pub per_file: bool,

    /// Record goro's execution trace while counting and write it to FILE as Chrome trace
    /// event JSON (open it in chrome://tracing or ui.perfetto.dev)
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
counted. Exit status: 0 if every file was counted, 1 if one could not be, 2 for invalid
options.";

/// The schedulers that `--scheduler` selects from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum SchedulerKind {
    /// First in, first out: one run queue shared by all processors
    Fifo,
}

/// Returns an error for `goro-demo wc` with `message` and its usage, which exits with status 2
/// like the errors that clap finds itself.
pub fn wc_usage_error(message: String) -> clap::Error {
    let mut command = Cli::command();
    command.build();
    let wc = command
        .find_subcommand_mut("wc")
        .expect("Cli has a wc subcommand");
    wc.error(clap::error::ErrorKind::InvalidValue, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<WcArgs, clap::Error> {
        let args = ["goro-demo", "wc"].iter().chain(args);
        Cli::try_parse_from(args).map(|cli| match cli.command {
            Command::Wc(wc) => wc,
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

    #[test]
    fn unknown_scheduler_rejected() {
        let err = parse(&["--scheduler", "lifo"]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("fifo"), "{err}");
    }
}
