//! `cargo xtask test-all-arches`: the workspace test suite on every arch, in the dev profile
//! (opt-level 0) and the release profile (opt-level 3).
//!
//! Both profiles run because the context switch and the g register must hold at every
//! optimization level. A switch that clobbers a callee-saved register often shows only at
//! opt-level 3, and so does a TLS address that LLVM keeps in a register across a switch.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::arch::Arch;
use crate::libtest::TestCounts;
use crate::process::{self, TestRun};

/// Which profiles to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProfileChoice {
    Both,
    DebugOnly,
    ReleaseOnly,
}

impl ProfileChoice {
    fn profiles(self) -> &'static [Profile] {
        match self {
            ProfileChoice::Both => &[Profile::Dev, Profile::Release],
            ProfileChoice::DebugOnly => &[Profile::Dev],
            ProfileChoice::ReleaseOnly => &[Profile::Release],
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Profile {
    /// `cargo test`: opt-level 0, with doc tests.
    Dev,
    /// `cargo test --release --tests`: opt-level 3, without doc tests. Cargo (1.95) passes no
    /// opt-level to rustdoc, so the examples would build unoptimized and only repeat the dev
    /// run, while the library code they call is covered by the release unit tests.
    Release,
}

impl Profile {
    fn name(self) -> &'static str {
        match self {
            Profile::Dev => "dev",
            Profile::Release => "release",
        }
    }
}

/// The outcome of one arch.
#[derive(Debug)]
pub struct ArchReport {
    pub arch: Arch,
    /// Results summed over the profiles, with each crashed test binary counted as one failed
    /// test.
    pub counts: TestCounts,
    /// Why the arch failed, one entry per failed run; empty when it passed.
    pub problems: Vec<String>,
    pub elapsed: Duration,
}

impl ArchReport {
    /// Returns whether every run passed and at least one test ran.
    pub fn passed(&self) -> bool {
        self.problems.is_empty() && self.counts.failed == 0 && self.counts.passed > 0
    }
}

/// Runs the workspace tests for each of `arches` in the chosen profiles. The prerequisites
/// must be installed already (`setup::ensure`).
pub fn run(root: &Path, arches: &[Arch], profiles: ProfileChoice) -> Vec<ArchReport> {
    let mut reports = Vec::new();
    for &arch in arches {
        let mut report = ArchReport {
            arch,
            counts: TestCounts::default(),
            problems: Vec::new(),
            elapsed: Duration::ZERO,
        };
        for &profile in profiles.profiles() {
            let label = format!("{} ({})", arch.triple(), profile.name());
            println!("==> test {label}");
            match process::run_tests(&mut test_command(root, arch, profile)) {
                Ok(run) => record(&mut report, &label, &run),
                Err(error) => report.problems.push(format!("{label}: {error}")),
            }
        }
        if arch.is_native() && profiles != ProfileChoice::DebugOnly {
            for (label, extra) in native_extras(root) {
                let label = format!("{} ({label})", arch.triple());
                println!("==> test {label}");
                let mut command = extra;
                arch.configure(&mut command);
                match process::run_tests(&mut command) {
                    Ok(run) => record(&mut report, &label, &run),
                    Err(error) => report.problems.push(format!("{label}: {error}")),
                }
            }
        }
        reports.push(report);
    }
    reports
}

/// The native-only runs beyond the two profiles:
///
/// * `getg_migration` under fat LTO with one codegen unit (the `release-lto` profile), where a
///   thread-local address cached across a switch would show;
/// * the million parked goroutines of `many_goroutines`, ignored in the normal runs because it
///   needs a few GiB of address space and takes minutes under QEMU.
fn native_extras(root: &Path) -> Vec<(&'static str, Command)> {
    let mut lto = Command::new("cargo");
    lto.current_dir(root).args([
        "test",
        "--profile",
        "release-lto",
        "-p",
        "goro",
        "--test",
        "getg_migration",
    ]);
    let mut million = Command::new("cargo");
    million.current_dir(root).args([
        "test",
        "--release",
        "-p",
        "goro",
        "--test",
        "many_goroutines",
        "--",
        "--ignored",
    ]);
    vec![
        ("release-lto getg", lto),
        ("release, a million goroutines", million),
    ]
}

/// Builds the `cargo test` command for one arch and profile.
fn test_command(root: &Path, arch: Arch, profile: Profile) -> Command {
    let mut command = Command::new("cargo");
    command.current_dir(root);
    command.args(["test", "--workspace", "--no-fail-fast"]);
    if profile == Profile::Release {
        command.args(["--release", "--tests"]);
    }
    if !arch.is_native() {
        command.args(["--target", arch.triple()]);
    }
    arch.configure(&mut command);
    command
}

/// Adds one run's results to the arch's report and prints them.
fn record(report: &mut ArchReport, label: &str, run: &TestRun) {
    let crashed = run.crashed_binaries();
    report.counts += run.counts;
    report.counts.failed += crashed;
    report.elapsed += run.elapsed;
    println!(
        "<== test {label}: {} passed, {} failed, {crashed} test binaries failed without a \
         result, {:.1}s",
        run.counts.passed,
        run.counts.failed,
        run.elapsed.as_secs_f64()
    );
    let Some(status) = run.status else {
        report
            .problems
            .push(format!("{label}: killed by the watchdog"));
        return;
    };
    if !status.success() {
        let mut problem = format!("{label}: cargo test exited with {status}");
        if crashed > 0 {
            problem += &format!(
                "; {crashed} test binaries crashed or could not run, each counted as one \
                 failed test"
            );
        } else if run.counts.failed == 0 {
            problem += " without a failed test (a build error? see the output above)";
        }
        report.problems.push(problem);
    }
}

/// Prints one line per arch, `TARGET: N passed, M failed`, then the reason for each failure.
/// Returns whether every arch passed and ran at least one test.
pub fn print_summary(reports: &[ArchReport]) -> bool {
    println!();
    for report in reports {
        println!("{}: {}", report.arch.triple(), report.counts);
    }
    let mut all_passed = true;
    for report in reports {
        let triple = report.arch.triple();
        for problem in &report.problems {
            println!("FAILED {problem}");
        }
        if report.counts.passed + report.counts.failed == 0 {
            println!("FAILED {triple}: ran no test");
        }
        all_passed &= report.passed();
    }
    all_passed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::Echo;

    fn args(command: &Command) -> Vec<String> {
        command
            .get_args()
            .map(|arg| arg.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn release_run_skips_doc_tests() {
        let command = test_command(Path::new("/"), Arch::Riscv64, Profile::Release);
        let args = args(&command);
        assert!(args.contains(&"--release".to_string()), "{args:?}");
        assert!(args.contains(&"--tests".to_string()), "{args:?}");
        if !Arch::Riscv64.is_native() {
            assert!(args.ends_with(&["--target".into(), "riscv64gc-unknown-linux-gnu".into()]));
        }
    }

    #[test]
    fn dev_run_is_plain_workspace_test() {
        let native = Arch::ALL
            .into_iter()
            .find(|arch| arch.is_native())
            .unwrap_or(Arch::X86_64);
        let command = test_command(Path::new("/"), native, Profile::Dev);
        if native.is_native() {
            assert_eq!(args(&command), ["test", "--workspace", "--no-fail-fast"]);
        }
    }

    #[test]
    fn report_without_tests_fails() {
        let report = ArchReport {
            arch: Arch::Aarch64,
            counts: TestCounts::default(),
            problems: Vec::new(),
            elapsed: Duration::ZERO,
        };
        assert!(!report.passed());
        assert!(!print_summary(&[report]));
    }

    #[test]
    fn crashed_binary_counts_as_failure() {
        let mut report = ArchReport {
            arch: Arch::Aarch64,
            counts: TestCounts::default(),
            problems: Vec::new(),
            elapsed: Duration::ZERO,
        };
        let script = "echo '     Running tests/crash.rs (target/debug/deps/crash-2)' >&2; \
                      echo 'error: test failed, to rerun pass `--test crash`' >&2; exit 101";
        let run = process::run_tests_with(Command::new("sh").args(["-c", script]), Echo::Discard)
            .unwrap();
        record(&mut report, "fake", &run);
        assert_eq!(
            report.counts,
            TestCounts {
                passed: 0,
                failed: 1
            }
        );
        assert_eq!(report.problems.len(), 1);
        assert!(
            report.problems[0].contains("crashed"),
            "{:?}",
            report.problems
        );
    }
}
