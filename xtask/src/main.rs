//! goro's task runner, invoked as `cargo xtask <command>` through the alias in
//! `.cargo/config.toml`.
//!
//! It installs the cross toolchains (`setup`), runs the workspace tests natively and under QEMU
//! user mode (`test-all-arches`), runs the loom models (`loom`) and chains everything CI checks
//! (`ci`). It depends on std only, so it builds before anything else in the workspace does.
//! `docs/testing.md` describes each stage and how to run it alone.

mod arch;
mod bench;
mod ci;
mod libtest;
mod loom;
mod process;
mod setup;
mod test_all;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use arch::Arch;
use test_all::ProfileChoice;

/// Errors of the xtask are messages for a person: what failed and what to do next.
type Error = Box<dyn std::error::Error>;
type Result<T> = std::result::Result<T, Error>;

const HELP: &str = "\
Usage: cargo xtask <command> [options]

Commands:
  setup            Install the Debian packages and Rust targets that builds and tests need
  test-all-arches  Run the workspace tests natively on x86_64 and under QEMU on aarch64 and riscv64
  loom             Run every loom model (crates/*/tests/loom_*.rs) in release mode
  ci               Run fmt, clippy, doc, test-all-arches and loom, then print the total
  bench            Benchmark goro against Go, may, tokio, corosensei and threads; write
                   docs/benchmarks.md

Run `cargo xtask <command> --help` for the options of one command.

Environment:
  GORO_XTASK_TIMEOUT_MINS    Minutes after which one cargo test or loom run is killed as hung
                             (default 30)
  GORO_XTASK_CI_BUDGET_MINS  Minutes after which `ci` kills the running test and skips the rest,
                             then prints its summary (default 80)
";

const SETUP_HELP: &str = "\
Usage: cargo xtask setup [--bench]

Installs what is missing of: the Debian packages qemu-user, gcc-aarch64-linux-gnu,
libc6-dev-arm64-cross, gcc-riscv64-linux-gnu, libc6-dev-riscv64-cross, gdb, curl and wrk; the
Rust targets aarch64-unknown-linux-gnu and riscv64gc-unknown-linux-gnu; the rustup components
rustfmt and clippy. Without root or without apt-get it prints the commands to run and fails.

Options:
  --bench  Also install golang-go, the Go toolchain that the benchmarks compare against
";

const TEST_ALL_ARCHES_HELP: &str = "\
Usage: cargo xtask test-all-arches [--arch x86_64|aarch64|riscv64]... [--release | --debug]

Runs `cargo test --workspace` for each arch: natively on the host's arch, under
`qemu-<arch> -L /usr/<arch>-linux-gnu` on the others. By default each arch runs twice: the dev
profile (opt-level 0, with doc tests) and the release profile (opt-level 3, without doc tests).
Prints one line per arch, `TARGET: N passed, M failed`, and fails if any arch failed or ran no
test.

Options:
  --arch ARCH  Test only this arch (repeatable; default: all three)
  --release    Run only the release profile
  --debug      Run only the dev profile
";

const LOOM_HELP: &str = "\
Usage: cargo xtask loom

Builds each crates/*/tests/loom_*.rs in release mode with RUSTFLAGS=--cfg loom (target dir
target/loom) and runs each model in it as its own process, printing its time.
LOOM_MAX_PREEMPTIONS defaults to 2; set it in the environment to override.
";

const CI_HELP: &str = "\
Usage: cargo xtask ci [--stage STAGE[,STAGE...]]...

Runs the stages setup, fmt, clippy, doc, test (test-all-arches) and loom in that order, keeps
going after a failed stage, prints each stage's time and ends with the line
`N passed, M failed` summed over every arch and loom. Setup installs only what the selected
stages need.

Options:
  --stage STAGE  Run only these stages (fmt, clippy, doc, test, loom; repeatable)
";

/// One parsed command line.
#[derive(Debug, PartialEq)]
enum Command {
    Help(&'static str),
    Setup {
        bench: bool,
    },
    TestAllArches {
        arches: Vec<Arch>,
        profiles: ProfileChoice,
    },
    Loom,
    Ci {
        stages: Vec<ci::Stage>,
    },
    Bench(bench::Plan),
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let command = match parse_args(&args) {
        Ok(command) => command,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(2);
        }
    };
    match run(command) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Runs `command` and returns whether everything it checked passed.
fn run(command: Command) -> Result<bool> {
    let root = workspace_root();
    match command {
        Command::Help(text) => {
            print!("{text}");
            Ok(true)
        }
        Command::Setup { bench } => {
            setup::ensure(&setup::all_requirements(bench), setup::Report::Everything)?;
            Ok(true)
        }
        Command::TestAllArches { arches, profiles } => {
            setup::ensure(
                &setup::test_requirements(&arches),
                setup::Report::MissingOnly,
            )?;
            let reports = test_all::run(&root, &arches, profiles);
            Ok(test_all::print_summary(&reports))
        }
        Command::Loom => Ok(loom::run(&root)?.passed()),
        Command::Ci { stages } => ci::run(&root, &stages),
        Command::Bench(plan) => bench::run(&root, plan),
    }
}

/// Parses the arguments after `cargo xtask`.
fn parse_args(args: &[String]) -> Result<Command> {
    let Some((name, options)) = args.split_first() else {
        return Ok(Command::Help(HELP));
    };
    let wants_help = options
        .iter()
        .any(|option| option == "-h" || option == "--help");
    match name.as_str() {
        "-h" | "--help" | "help" => Ok(Command::Help(HELP)),
        "setup" if wants_help => Ok(Command::Help(SETUP_HELP)),
        "test-all-arches" if wants_help => Ok(Command::Help(TEST_ALL_ARCHES_HELP)),
        "loom" if wants_help => Ok(Command::Help(LOOM_HELP)),
        "ci" if wants_help => Ok(Command::Help(CI_HELP)),
        "bench" if wants_help => Ok(Command::Help(bench::HELP)),
        "setup" => parse_setup(options),
        "test-all-arches" => parse_test_all_arches(options),
        "loom" => match options.first() {
            None => Ok(Command::Loom),
            Some(option) => Err(unknown_option("loom", option, "no options")),
        },
        "ci" => parse_ci(options),
        "bench" => Ok(Command::Bench(bench::parse(options)?)),
        other => Err(format!(
            "unknown subcommand `{other}`; known: setup, test-all-arches, loom, ci, bench \
             (run `cargo xtask --help`)"
        )
        .into()),
    }
}

fn parse_setup(options: &[String]) -> Result<Command> {
    let mut bench = false;
    for option in options {
        match option.as_str() {
            "--bench" => bench = true,
            other => return Err(unknown_option("setup", other, "--bench")),
        }
    }
    Ok(Command::Setup { bench })
}

fn parse_test_all_arches(options: &[String]) -> Result<Command> {
    let mut arches = Vec::new();
    let mut release_only = false;
    let mut debug_only = false;
    let mut options = options.iter();
    while let Some(option) = options.next() {
        match option.as_str() {
            "--arch" => {
                let Some(value) = options.next() else {
                    return Err("`--arch` needs a value: x86_64, aarch64 or riscv64".into());
                };
                let arch = Arch::parse(value)?;
                if !arches.contains(&arch) {
                    arches.push(arch);
                }
            }
            "--release" => release_only = true,
            "--debug" => debug_only = true,
            other => {
                return Err(unknown_option(
                    "test-all-arches",
                    other,
                    "--arch ARCH, --release or --debug",
                ));
            }
        }
    }
    let profiles = match (debug_only, release_only) {
        (true, true) => {
            return Err("`--debug` and `--release` exclude each other; \
                        give neither to run both profiles"
                .into());
        }
        (true, false) => ProfileChoice::DebugOnly,
        (false, true) => ProfileChoice::ReleaseOnly,
        (false, false) => ProfileChoice::Both,
    };
    if arches.is_empty() {
        arches = Arch::ALL.to_vec();
    }
    Ok(Command::TestAllArches { arches, profiles })
}

fn parse_ci(options: &[String]) -> Result<Command> {
    let mut stages = Vec::new();
    let mut options = options.iter();
    while let Some(option) = options.next() {
        match option.as_str() {
            "--stage" => {
                let Some(value) = options.next() else {
                    return Err("`--stage` needs a value: fmt, clippy, doc, test or loom".into());
                };
                for name in value.split(',') {
                    let stage = ci::Stage::parse(name)?;
                    if !stages.contains(&stage) {
                        stages.push(stage);
                    }
                }
            }
            other => return Err(unknown_option("ci", other, "--stage STAGE")),
        }
    }
    if stages.is_empty() {
        stages = ci::Stage::ALL.to_vec();
    }
    // Stages always run in pipeline order, whatever order they were given in.
    stages.sort();
    Ok(Command::Ci { stages })
}

fn unknown_option(command: &str, option: &str, expected: &str) -> Error {
    format!("unknown option `{option}` for `{command}`; expected {expected}").into()
}

/// Returns the workspace root: the parent of this crate's directory.
fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one directory below the workspace root")
        .to_path_buf()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> Result<Command> {
        let args: Vec<String> = line.split_whitespace().map(String::from).collect();
        parse_args(&args)
    }

    #[test]
    fn no_arguments_print_help() {
        assert_eq!(parse("").unwrap(), Command::Help(HELP));
        assert_eq!(parse("--help").unwrap(), Command::Help(HELP));
    }

    #[test]
    fn help_lists_every_command() {
        for name in ["setup", "test-all-arches", "loom", "ci", "bench"] {
            assert!(
                HELP.contains(&format!("\n  {name} ")),
                "{name} missing from help"
            );
            assert!(matches!(
                parse(&format!("{name} --help")).unwrap(),
                Command::Help(_)
            ));
        }
    }

    #[test]
    fn unknown_subcommand_lists_known_ones() {
        let message = parse("benchmark").unwrap_err().to_string();
        assert!(
            message.contains("unknown subcommand `benchmark`"),
            "{message}"
        );
        assert!(
            message.contains("setup, test-all-arches, loom, ci, bench"),
            "{message}"
        );
    }

    #[test]
    fn test_all_arches_defaults_to_everything() {
        assert_eq!(
            parse("test-all-arches").unwrap(),
            Command::TestAllArches {
                arches: Arch::ALL.to_vec(),
                profiles: ProfileChoice::Both
            }
        );
    }

    #[test]
    fn test_all_arches_selects_arch_and_profile() {
        assert_eq!(
            parse("test-all-arches --arch riscv64 --release --arch aarch64 --arch riscv64")
                .unwrap(),
            Command::TestAllArches {
                arches: vec![Arch::Riscv64, Arch::Aarch64],
                profiles: ProfileChoice::ReleaseOnly,
            }
        );
        assert_eq!(
            parse("test-all-arches --debug").unwrap(),
            Command::TestAllArches {
                arches: Arch::ALL.to_vec(),
                profiles: ProfileChoice::DebugOnly,
            }
        );
    }

    #[test]
    fn test_all_arches_rejects_bad_options() {
        let message = parse("test-all-arches --arch arm").unwrap_err().to_string();
        assert!(message.contains("`arm`"), "{message}");
        assert!(message.contains("x86_64, aarch64 or riscv64"), "{message}");
        assert!(parse("test-all-arches --arch").is_err());
        assert!(parse("test-all-arches --release --debug").is_err());
        let message = parse("test-all-arches --fast").unwrap_err().to_string();
        assert!(message.contains("`--fast`"), "{message}");
    }

    #[test]
    fn ci_stages_run_in_pipeline_order() {
        assert_eq!(
            parse("ci --stage doc,fmt --stage clippy,fmt").unwrap(),
            Command::Ci {
                stages: vec![ci::Stage::Fmt, ci::Stage::Clippy, ci::Stage::Doc]
            }
        );
        assert_eq!(
            parse("ci").unwrap(),
            Command::Ci {
                stages: ci::Stage::ALL.to_vec()
            }
        );
        assert!(parse("ci --stage lint").is_err());
    }

    #[test]
    fn setup_accepts_bench() {
        assert_eq!(parse("setup").unwrap(), Command::Setup { bench: false });
        assert_eq!(
            parse("setup --bench").unwrap(),
            Command::Setup { bench: true }
        );
        assert!(parse("setup --go").is_err());
    }
}
