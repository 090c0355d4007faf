//! Parsing the output of `cargo test`: libtest's `test result:` lines and cargo's reports of
//! failed test binaries.

use std::ops::AddAssign;

/// Test counts summed over `test result:` lines.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TestCounts {
    pub passed: u64,
    pub failed: u64,
}

impl AddAssign for TestCounts {
    fn add_assign(&mut self, other: TestCounts) {
        self.passed += other.passed;
        self.failed += other.failed;
    }
}

impl std::fmt::Display for TestCounts {
    /// Formats as `N passed, M failed`, the closing-line form that CI reads.
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "{} passed, {} failed", self.passed, self.failed)
    }
}

/// Parses one libtest summary line, such as
/// `test result: FAILED. 3 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out; ...`.
/// Returns `None` for any other line.
pub fn parse_result_line(line: &str) -> Option<TestCounts> {
    let rest = strip_ansi(line);
    let rest = rest.trim_end().strip_prefix("test result: ")?;
    let (_, fields) = rest.split_once(". ")?;
    let mut counts = TestCounts::default();
    let mut seen = (false, false);
    for field in fields.split(';') {
        let mut words = field.split_whitespace();
        let (Some(number), Some(label)) = (words.next(), words.next()) else {
            continue;
        };
        let Ok(number) = number.parse::<u64>() else {
            continue;
        };
        match label {
            "passed" => (counts.passed, seen.0) = (number, true),
            "failed" => (counts.failed, seen.1) = (number, true),
            _ => {}
        }
    }
    (seen == (true, true)).then_some(counts)
}

/// Returns whether a line of cargo's stderr reports a failed test binary. With `--no-fail-fast`, cargo
/// prints one such line per failed binary, such as
/// ``error: test failed, to rerun pass `-p goro --test syscall` `` or
/// ``error: doctest failed, to rerun pass `-p goro --doc` ``.
pub fn is_binary_failure(line: &str) -> bool {
    let line = strip_ansi(line);
    line.starts_with("error: ") && line.contains(" failed, to rerun pass ")
}

/// Removes ANSI escape sequences (`ESC [ ... letter`), which cargo and libtest emit when
/// `CARGO_TERM_COLOR=always` or `--color=always` is in effect.
fn strip_ansi(line: &str) -> String {
    let mut plain = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c != '\u{1b}' {
            plain.push(c);
            continue;
        }
        if chars.next() == Some('[') {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        }
    }
    plain
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_line_ok() {
        let line = "test result: ok. 12 passed; 0 failed; 3 ignored; 0 measured; \
                    0 filtered out; finished in 0.10s";
        assert_eq!(
            parse_result_line(line),
            Some(TestCounts {
                passed: 12,
                failed: 0
            })
        );
    }

    #[test]
    fn result_line_failed() {
        let line = "test result: FAILED. 3 passed; 2 failed; 0 ignored; 0 measured; \
                    0 filtered out; finished in 1.00s\n";
        assert_eq!(
            parse_result_line(line),
            Some(TestCounts {
                passed: 3,
                failed: 2
            })
        );
    }

    #[test]
    fn result_line_colored() {
        let line = "test result: \u{1b}[32mok\u{1b}[0m. 1 passed; 0 failed; 0 ignored; \
                    0 measured; 0 filtered out; finished in 0.00s";
        assert_eq!(
            parse_result_line(line),
            Some(TestCounts {
                passed: 1,
                failed: 0
            })
        );
    }

    #[test]
    fn other_lines_are_not_results() {
        for line in [
            "running 3 tests",
            "test status::tests::lifecycle ... ok",
            "    test result: ok. 1 passed; 0 failed",
            "test result: ok.",
            "all doctests ran in 0.53s; merged doctests compilation took 0.46s",
        ] {
            assert_eq!(parse_result_line(line), None, "{line}");
        }
    }

    #[test]
    fn binary_failures() {
        assert!(is_binary_failure(
            "error: test failed, to rerun pass `-p goro --test syscall`"
        ));
        assert!(is_binary_failure(
            "error: doctest failed, to rerun pass `-p goro --doc`"
        ));
        assert!(is_binary_failure(
            "\u{1b}[1m\u{1b}[31merror\u{1b}[0m: test failed, to rerun pass `--lib`\n"
        ));
        assert!(!is_binary_failure("error: 3 targets failed:"));
        assert!(!is_binary_failure(
            "     Running tests/syscall.rs (target/debug/deps/syscall-825d4c214a51b9be)"
        ));
    }

    #[test]
    fn counts_display_and_sum() {
        let mut total = TestCounts {
            passed: 2,
            failed: 1,
        };
        total += TestCounts {
            passed: 5,
            failed: 0,
        };
        assert_eq!(total.to_string(), "7 passed, 1 failed");
    }
}
