//! `cargo xtask ci`: every check CI runs, in order, with each stage's time and a closing
//! `N passed, M failed` line.
//!
//! A failed stage does not stop the later ones, so one run reports every problem. The exit
//! status is non-zero when any stage failed.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::arch::Arch;
use crate::libtest::TestCounts;
use crate::setup::{self, Requirement};
use crate::test_all::{self, ProfileChoice};
use crate::{loom, process};

/// Environment variable that sets the time budget of the whole run, in minutes.
const BUDGET_VARIABLE: &str = "GORO_XTASK_CI_BUDGET_MINS";

/// Budget default. CI stops a run after 90 minutes and then prints nothing of it, so the xtask
/// stops earlier and still prints its summary.
const DEFAULT_BUDGET_MINS: u64 = 80;

/// A stage of the pipeline, in the order it runs. Setup is implicit: it runs first whenever a
/// selected stage needs something installed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stage {
    Fmt,
    Clippy,
    Doc,
    Test,
    Loom,
}

impl Stage {
    pub const ALL: [Stage; 5] = [
        Stage::Fmt,
        Stage::Clippy,
        Stage::Doc,
        Stage::Test,
        Stage::Loom,
    ];

    pub fn parse(name: &str) -> crate::Result<Stage> {
        Stage::ALL
            .into_iter()
            .find(|stage| stage.name() == name)
            .ok_or_else(|| {
                format!("invalid stage `{name}`; expected fmt, clippy, doc, test or loom").into()
            })
    }

    pub fn name(self) -> &'static str {
        match self {
            Stage::Fmt => "fmt",
            Stage::Clippy => "clippy",
            Stage::Doc => "doc",
            Stage::Test => "test",
            Stage::Loom => "loom",
        }
    }

    /// Returns what the stage needs installed.
    fn requirements(self) -> Vec<Requirement> {
        match self {
            Stage::Fmt => vec![Requirement::RustComponent("rustfmt")],
            Stage::Clippy => {
                let mut requirements = setup::cross_requirements(&Arch::ALL);
                requirements.push(Requirement::RustComponent("clippy"));
                requirements
            }
            Stage::Doc | Stage::Loom => Vec::new(),
            Stage::Test => setup::test_requirements(&Arch::ALL),
        }
    }
}

/// One stage's outcome, for the closing table.
struct StageResult {
    name: &'static str,
    passed: bool,
    /// Whether the stage did not run because the time budget was used up. It counts as failed.
    skipped: bool,
    elapsed: Duration,
    counts: Option<TestCounts>,
}

/// Runs `stages` (sorted, without duplicates) and returns whether all passed. The last line
/// printed is `N passed, M failed`, summed over every arch and loom.
pub fn run(root: &Path, stages: &[Stage]) -> crate::Result<bool> {
    let budget = process::minutes_from_env(BUDGET_VARIABLE, DEFAULT_BUDGET_MINS)?;
    process::set_deadline(Instant::now() + budget);
    let mut results = Vec::new();
    let mut total = TestCounts::default();

    let mut requirements = Vec::new();
    for stage in stages {
        for requirement in stage.requirements() {
            setup::push_unique(&mut requirements, requirement);
        }
    }
    if !requirements.is_empty() {
        results.push(run_stage("setup", || {
            match setup::ensure(&requirements, setup::Report::MissingOnly) {
                Ok(()) => (true, None),
                Err(error) => {
                    println!("setup failed: {error}");
                    (false, None)
                }
            }
        }));
    }

    for &stage in stages {
        if process::past_deadline() {
            println!();
            println!(
                "==> stage {} skipped: the time budget of {} min is used up (set {BUDGET_VARIABLE} \
                 to change it)",
                stage.name(),
                budget.as_secs() / 60
            );
            results.push(StageResult {
                name: stage.name(),
                passed: false,
                skipped: true,
                elapsed: Duration::ZERO,
                counts: None,
            });
            continue;
        }
        let result = run_stage(stage.name(), || run_stage_body(root, stage));
        if let Some(counts) = result.counts {
            total += counts;
        }
        results.push(result);
    }

    print_table(&results, total);
    Ok(results.iter().all(|result| result.passed))
}

/// Runs one stage's commands and returns whether they passed, with the test counts of the
/// test and loom stages.
fn run_stage_body(root: &Path, stage: Stage) -> (bool, Option<TestCounts>) {
    match stage {
        Stage::Fmt => (run_checks(&mut [fmt_command(root)]), None),
        Stage::Clippy => (run_checks(&mut clippy_commands(root)), None),
        Stage::Doc => (run_checks(&mut [doc_command(root)]), None),
        Stage::Test => {
            let reports = test_all::run(root, &Arch::ALL, ProfileChoice::Both);
            let passed = test_all::print_summary(&reports);
            let mut counts = TestCounts::default();
            for report in &reports {
                counts += report.counts;
            }
            (passed, Some(counts))
        }
        Stage::Loom => match loom::run(root) {
            Ok(summary) => (summary.passed(), Some(summary.counts)),
            Err(error) => {
                println!("loom failed: {error}");
                (false, None)
            }
        },
    }
}

/// Prints each stage's verdict and time, then the closing line `N passed, M failed`.
fn print_table(results: &[StageResult], total: TestCounts) {
    println!();
    println!("ci stages:");
    for result in results {
        let verdict = match (result.passed, result.skipped) {
            (true, _) => "ok",
            (false, true) => "SKIPPED",
            (false, false) => "FAILED",
        };
        let counts = result
            .counts
            .map(|counts| format!("  ({counts})"))
            .unwrap_or_default();
        println!(
            "  {:<7} {verdict:<7} {:>8}{counts}",
            result.name,
            format_duration(result.elapsed)
        );
    }
    println!("{total}");
}

/// Runs one stage between a start line and an end line that give its name and time.
fn run_stage(name: &'static str, body: impl FnOnce() -> (bool, Option<TestCounts>)) -> StageResult {
    println!();
    println!("==> stage {name}");
    let start = Instant::now();
    let (passed, counts) = body();
    let elapsed = start.elapsed();
    let verdict = if passed { "ok" } else { "FAILED" };
    println!(
        "<== stage {name}: {verdict} in {}",
        format_duration(elapsed)
    );
    StageResult {
        name,
        passed,
        skipped: false,
        elapsed,
        counts,
    }
}

/// Runs each command, also after a failure, and returns whether all succeeded.
fn run_checks(commands: &mut [Command]) -> bool {
    let mut passed = true;
    for command in commands {
        match process::run(command) {
            Ok(status) if status.success() => {}
            Ok(status) => {
                println!("failed with {status}: {}", process::describe(command));
                passed = false;
            }
            Err(error) => {
                println!("{error}");
                passed = false;
            }
        }
    }
    passed
}

fn fmt_command(root: &Path) -> Command {
    let mut command = Command::new("cargo");
    command.current_dir(root).args(["fmt", "--all", "--check"]);
    command
}

/// Clippy on the host, then once per foreign arch: the per-arch files of goro-context (and any
/// other `cfg(target_arch)` code) are compiled, and so linted, only for their own target.
fn clippy_commands(root: &Path) -> Vec<Command> {
    let mut commands = Vec::new();
    for arch in Arch::ALL {
        let mut command = Command::new("cargo");
        command
            .current_dir(root)
            .args(["clippy", "--workspace", "--all-targets"]);
        if !arch.is_native() {
            command.args(["--target", arch.triple()]);
        }
        arch.configure(&mut command);
        command.args(["--", "-D", "warnings"]);
        commands.push(command);
    }
    commands
}

fn doc_command(root: &Path) -> Command {
    let rustdocflags = match std::env::var("RUSTDOCFLAGS") {
        Ok(flags) if !flags.trim().is_empty() => format!("{flags} -Dwarnings"),
        _ => "-Dwarnings".to_string(),
    };
    let mut command = Command::new("cargo");
    command
        .current_dir(root)
        .args(["doc", "--workspace", "--no-deps"])
        .env("RUSTDOCFLAGS", rustdocflags);
    command
}

/// Formats as `12.3s` below a minute and `4m05s` above.
fn format_duration(duration: Duration) -> String {
    let seconds = duration.as_secs_f64();
    if seconds < 60.0 {
        format!("{seconds:.1}s")
    } else {
        let whole = duration.as_secs();
        format!("{}m{:02}s", whole / 60, whole % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stage_names_round_trip() {
        for stage in Stage::ALL {
            assert_eq!(Stage::parse(stage.name()).unwrap(), stage);
        }
        let message = Stage::parse("lint").unwrap_err().to_string();
        assert!(
            message.contains("`lint`") && message.contains("fmt, clippy"),
            "{message}"
        );
    }

    #[test]
    fn stages_sort_in_pipeline_order() {
        let mut stages = vec![
            Stage::Loom,
            Stage::Doc,
            Stage::Fmt,
            Stage::Test,
            Stage::Clippy,
        ];
        stages.sort();
        assert_eq!(stages, Stage::ALL);
    }

    #[test]
    fn clippy_covers_every_arch() {
        let commands = clippy_commands(Path::new("/"));
        assert_eq!(commands.len(), Arch::ALL.len());
        for command in &commands {
            let args: Vec<_> = command
                .get_args()
                .map(|arg| arg.to_string_lossy())
                .collect();
            assert!(
                args.ends_with(&["--".into(), "-D".into(), "warnings".into()]),
                "{args:?}"
            );
        }
    }

    #[test]
    fn durations_format() {
        assert_eq!(format_duration(Duration::from_millis(1234)), "1.2s");
        assert_eq!(format_duration(Duration::from_secs(245)), "4m05s");
    }

    #[test]
    fn doc_and_loom_need_no_installs() {
        assert!(Stage::Doc.requirements().is_empty());
        assert!(Stage::Loom.requirements().is_empty());
        assert!(
            Stage::Test
                .requirements()
                .contains(&Requirement::DebianPackage("gdb"))
        );
    }
}
