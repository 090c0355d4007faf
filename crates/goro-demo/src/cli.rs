//! Command-line syntax of goro-demo.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

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
    /// Files and directories to count; directories are walked recursively
    /// [default: /usr/share/doc]
    #[arg(value_name = "PATH")]
    pub paths: Vec<PathBuf>,

    /// Scheduler of the goroutines
    #[arg(long, value_enum, default_value_t = SchedulerKind::Fifo)]
    pub scheduler: SchedulerKind,

    /// Number of processors (Ps) that run goroutines at once, 1 or more
    /// [default: the number of CPUs]
    #[arg(long, value_name = "N", value_parser = parse_procs)]
    pub procs: Option<usize>,

    /// Print one line per file, sorted by path, before the total
    #[arg(long)]
    pub per_file: bool,
}

const WC_AFTER_HELP: &str = "\
Counts as GNU `LC_ALL=C wc -lwc` does: lines are newline bytes, and a word is a run of
printable bytes (0x21 to 0x7e) between whitespace; other bytes, such as control bytes and
bytes of 0x80 and above, neither start nor end a word.

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

/// Parses the value of `--procs`, which must be 1 or more.
fn parse_procs(value: &str) -> Result<usize, String> {
    let procs: usize = value
        .parse()
        .map_err(|err| format!("{value} is not a number of processors ({err})"))?;
    if procs == 0 {
        return Err("0 processors cannot run goroutines; the valid range is 1 or more".into());
    }
    Ok(procs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

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
        ])
        .unwrap();
        assert_eq!(args.paths, [PathBuf::from("a"), PathBuf::from("b")]);
        assert_eq!(args.procs, Some(3));
        assert!(args.per_file);
    }

    #[test]
    fn zero_procs_rejected_with_range() {
        let err = parse(&["--procs", "0"]).unwrap_err();
        let message = err.to_string();
        assert_eq!(err.exit_code(), 2);
        assert!(message.contains("'0'"), "{message}");
        assert!(message.contains("--procs"), "{message}");
        assert!(message.contains("1 or more"), "{message}");
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
