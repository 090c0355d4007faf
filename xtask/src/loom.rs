//! `cargo xtask loom`: every loom model of the workspace, each in its own process, with its
//! time.
//!
//! Models live in `crates/<crate>/tests/loom_*.rs`, each file gated by `#![cfg(loom)]`. Each
//! file is built as `cargo test --release -p <package> --test loom_<name>` with
//! `RUSTFLAGS=--cfg loom` in the separate target dir `target/loom` (or `$CARGO_TARGET_DIR/loom`),
//! so that the changed flags do not invalidate the normal build. The test binary is then run once per test function, to
//! time each model and to keep one model's failure from hiding the others.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::libtest::TestCounts;
use crate::process;

/// The default preemption bound. Two preemptions find most ordering bugs while keeping the
/// state space small enough for a 2-core machine; callers may set their own.
const DEFAULT_MAX_PREEMPTIONS: &str = "2";

/// One `tests/loom_*.rs` file.
#[derive(Debug, PartialEq, Eq)]
pub struct LoomFile {
    /// The package name from the crate's Cargo.toml.
    pub package: String,
    pub crate_dir: PathBuf,
    /// The test target's name: the file stem, such as `loom_handoff`.
    pub test: String,
}

/// The outcome of all models.
#[derive(Debug, Default)]
pub struct LoomSummary {
    pub counts: TestCounts,
    /// Reasons for failed files and models, empty when all passed.
    pub problems: Vec<String>,
}

impl LoomSummary {
    /// Returns whether every model passed. A workspace without models passes.
    pub fn passed(&self) -> bool {
        self.problems.is_empty() && self.counts.failed == 0
    }
}

/// Finds every `crates/*/tests/loom_*.rs` below `root`, sorted by path.
pub fn discover(root: &Path) -> crate::Result<Vec<LoomFile>> {
    let mut files = Vec::new();
    let crates = root.join("crates");
    let mut crate_dirs: Vec<PathBuf> = std::fs::read_dir(&crates)
        .map_err(|error| format!("cannot list {}: {error}", crates.display()))?
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| path.join("Cargo.toml").is_file())
        .collect();
    crate_dirs.sort();
    for crate_dir in crate_dirs {
        let Ok(entries) = std::fs::read_dir(crate_dir.join("tests")) else {
            continue;
        };
        let mut tests: Vec<String> = entries
            .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
            .filter_map(|name| {
                let stem = name.strip_suffix(".rs")?;
                stem.starts_with("loom_").then(|| stem.to_string())
            })
            .collect();
        if tests.is_empty() {
            continue;
        }
        tests.sort();
        let package = package_name(&crate_dir.join("Cargo.toml"))?;
        for test in tests {
            files.push(LoomFile {
                package: package.clone(),
                crate_dir: crate_dir.clone(),
                test,
            });
        }
    }
    Ok(files)
}

/// Reads `name = "..."` from the `[package]` table of a Cargo.toml.
fn package_name(manifest: &Path) -> crate::Result<String> {
    let text = std::fs::read_to_string(manifest)
        .map_err(|error| format!("cannot read {}: {error}", manifest.display()))?;
    let mut in_package = false;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_package = line == "[package]";
        } else if in_package
            && let Some(value) = line.strip_prefix("name").map(str::trim_start)
            && let Some(value) = value.strip_prefix('=')
        {
            return Ok(value.trim().trim_matches('"').to_string());
        }
    }
    Err(format!("no `name` in the [package] table of {}", manifest.display()).into())
}

/// Builds and runs every model, printing one line per model with its time, then
/// `loom: N passed, M failed`.
pub fn run(root: &Path) -> crate::Result<LoomSummary> {
    let files = discover(root)?;
    let mut summary = LoomSummary::default();
    if files.is_empty() {
        println!("loom: no models found (no crates/*/tests/loom_*.rs files)");
        println!("loom: {}", summary.counts);
        return Ok(summary);
    }
    let mut lines = Vec::new();
    for file in &files {
        let label = format!("{}/{}", file.package, file.test);
        println!("==> loom {label}");
        if let Err(error) = run_file(root, file, &mut summary, &mut lines) {
            summary.problems.push(format!("{label}: {error}"));
        }
    }
    println!();
    for line in &lines {
        println!("{line}");
    }
    for problem in &summary.problems {
        println!("FAILED loom {problem}");
    }
    println!("loom: {}", summary.counts);
    Ok(summary)
}

/// Builds one loom file and runs each of its test functions.
fn run_file(
    root: &Path,
    file: &LoomFile,
    summary: &mut LoomSummary,
    lines: &mut Vec<String>,
) -> crate::Result<()> {
    let mut build = Command::new("cargo");
    build
        .current_dir(root)
        .args([
            "test",
            "--release",
            "-p",
            &file.package,
            "--test",
            &file.test,
            "--no-run",
        ])
        .args(["--message-format=json-render-diagnostics", "--target-dir"])
        .arg(loom_target_dir(root));
    build.env("RUSTFLAGS", loom_rustflags());
    // Only the model runs read LOOM_MAX_PREEMPTIONS; it is printed with the build so that the
    // printed command line runs every model of the file as the xtask does.
    set_max_preemptions(&mut build);
    println!("$ {}", process::describe(&build));
    let messages = process::capture_stdout(&mut build)?;
    let executable = test_executable(&messages).ok_or("cargo reported no test executable")?;

    let listing = process::capture_stdout(Command::new(&executable).arg("--list"))?;
    let models = list_tests(&listing);
    if models.is_empty() {
        println!(
            "loom {}/{}: no test functions (is every model gated off?)",
            file.package, file.test
        );
    }
    for model in models {
        let mut command = Command::new(&executable);
        command
            .current_dir(&file.crate_dir)
            .env("CARGO_MANIFEST_DIR", &file.crate_dir)
            .args(["--exact", &model, "--test-threads=1"]);
        set_max_preemptions(&mut command);
        let run = process::run_tests(&mut command)?;
        let mut counts = run.counts;
        let verdict = if run.status.is_none() {
            counts.failed = counts.failed.max(1);
            "KILLED by the watchdog"
        } else if run.exited_ok() && counts.passed == 1 {
            "ok"
        } else {
            counts.failed = counts.failed.max(1);
            "FAILED"
        };
        summary.counts += counts;
        let line = format!(
            "loom {}/{}::{model}: {verdict} in {:.1}s",
            file.package,
            file.test,
            run.elapsed.as_secs_f64()
        );
        println!("<== {line}");
        lines.push(line);
    }
    Ok(())
}

/// Returns the loom build's own target dir: `loom` below the workspace's target dir.
fn loom_target_dir(root: &Path) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    // A relative CARGO_TARGET_DIR is relative to the directory cargo runs in, the root.
    root.join(target).join("loom")
}

/// Returns the caller's RUSTFLAGS with `--cfg loom` added.
fn loom_rustflags() -> String {
    match std::env::var("RUSTFLAGS") {
        Ok(flags) if !flags.trim().is_empty() => format!("{flags} --cfg loom"),
        _ => "--cfg loom".to_string(),
    }
}

/// Sets LOOM_MAX_PREEMPTIONS to the default unless the caller set it.
fn set_max_preemptions(command: &mut Command) {
    if std::env::var_os("LOOM_MAX_PREEMPTIONS").is_none() {
        command.env("LOOM_MAX_PREEMPTIONS", DEFAULT_MAX_PREEMPTIONS);
    }
}

/// Finds the test executable in cargo's JSON messages: the `compiler-artifact` of a target of
/// kind `test` with a non-null `executable`.
fn test_executable(messages: &str) -> Option<PathBuf> {
    messages
        .lines()
        .filter(|line| line.contains(r#""reason":"compiler-artifact""#))
        .filter(|line| line.contains(r#""kind":["test"]"#))
        .find_map(|line| {
            let start = line.find(r#""executable":""#)? + r#""executable":""#.len();
            let end = start + line[start..].find('"')?;
            Some(PathBuf::from(line[start..end].replace(r"\\", r"\")))
        })
}

/// Returns the test names from the output of a libtest binary's `--list`, whose lines read
/// `path::to::test: test`.
fn list_tests(listing: &str) -> Vec<String> {
    listing
        .lines()
        .filter_map(|line| line.strip_suffix(": test"))
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn executable_found_in_cargo_messages() {
        let messages = concat!(
            r#"{"reason":"compiler-artifact","target":{"kind":["lib"],"name":"goro_syscall"},"executable":null}"#,
            "\n",
            r#"{"reason":"compiler-artifact","target":{"kind":["custom-build"]},"executable":"/t/build/build-script-build"}"#,
            "\n",
            r#"{"reason":"compiler-artifact","target":{"kind":["test"],"name":"loom_p"},"profile":{"test":true},"executable":"/t/loom/release/deps/loom_p-0a1b"}"#,
            "\n",
            r#"{"reason":"build-finished","success":true}"#,
        );
        assert_eq!(
            test_executable(messages),
            Some(PathBuf::from("/t/loom/release/deps/loom_p-0a1b"))
        );
        assert_eq!(
            test_executable(r#"{"reason":"build-finished","success":true}"#),
            None
        );
    }

    #[test]
    fn list_output_parsed() {
        let listing =
            "handoff::retake_races_exit: test\nidle_then_steal: test\n\n2 tests, 0 benchmarks\n";
        assert_eq!(
            list_tests(listing),
            ["handoff::retake_races_exit", "idle_then_steal"]
        );
    }

    #[test]
    fn package_name_read_from_package_table() {
        let dir = std::env::temp_dir().join(format!("xtask-loom-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let manifest = dir.join("Cargo.toml");
        std::fs::write(
            &manifest,
            "[workspace]\nname = \"no\"\n\n[package]\nname = \"goro-syscall\"\nversion = \"0.1.0\"\n",
        )
        .unwrap();
        let name = package_name(&manifest);
        std::fs::write(&manifest, "[dependencies]\nname = \"no\"\n").unwrap();
        let missing = package_name(&manifest);
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(name.unwrap(), "goro-syscall");
        assert!(missing.unwrap_err().to_string().contains("no `name`"));
    }

    #[test]
    fn discover_finds_loom_files_only() {
        // goro-x has two models and two other files; goro-y has an empty tests/ directory.
        let root = std::env::temp_dir().join(format!("xtask-discover-{}", std::process::id()));
        let tests = root.join("crates/goro-x/tests");
        std::fs::create_dir_all(&tests).unwrap();
        std::fs::create_dir_all(root.join("crates/goro-y/tests")).unwrap();
        std::fs::write(
            root.join("crates/goro-x/Cargo.toml"),
            "[package]\nname = \"goro-x\"\n",
        )
        .unwrap();
        std::fs::write(
            root.join("crates/goro-y/Cargo.toml"),
            "[package]\nname = \"goro-y\"\n",
        )
        .unwrap();
        for name in ["loom_b.rs", "loom_a.rs", "smoke.rs", "loom_notes.md"] {
            std::fs::write(tests.join(name), "").unwrap();
        }

        let found = discover(&root);
        std::fs::remove_dir_all(&root).unwrap();

        let found: Vec<(String, String)> = found
            .unwrap()
            .into_iter()
            .map(|file| (file.package, file.test))
            .collect();
        assert_eq!(
            found,
            [
                ("goro-x".to_string(), "loom_a".to_string()),
                ("goro-x".into(), "loom_b".into())
            ]
        );
    }
}
