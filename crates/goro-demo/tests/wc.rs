//! End-to-end tests of `goro-demo wc` against the host's GNU `wc` (coreutils 9).
//!
//! Each test generates its tree under `std::env::temp_dir()`, runs the built binary (through
//! the words of `GORO_TEST_RUNNER` when set, for QEMU user mode) and compares its output with
//! `LC_ALL=C wc -lwc` run on the files that `find -type f` selects.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

/// Time after which a run of goro-demo counts as hung. Far above any expected run time, also
/// under QEMU; it only turns a hang (say, on a FIFO) into a failure.
const WATCHDOG: Duration = Duration::from_secs(600);

/// Size of the reads of goro-demo, whose boundaries the tree puts words across.
const CHUNK: usize = 64 * 1024;

/// Line, word and byte counts.
type Counts = [u64; 3];

/// A directory under the system temp directory, removed with everything in it on drop.
struct TempTree {
    root: PathBuf,
}

impl TempTree {
    fn new(test: &str) -> TempTree {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        // Relaxed: the counter only makes names unique and orders nothing else.
        let serial = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("goro-demo-wc-{}-{serial}-{test}", std::process::id());
        let root = std::env::temp_dir().join(name);
        fs::create_dir(&root).unwrap_or_else(|err| panic!("mkdir {}: {err}", root.display()));
        TempTree { root }
    }

    fn path(&self, relative: &str) -> PathBuf {
        self.root.join(relative)
    }

    fn write(&self, relative: &str, contents: &[u8]) -> PathBuf {
        let path = self.path(relative);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).unwrap();
        }
        fs::write(&path, contents).unwrap();
        path
    }
}

impl Drop for TempTree {
    fn drop(&mut self) {
        // std's remove_dir_all works relative to directory descriptors, so it also removes
        // entries whose full path is longer than PATH_MAX.
        if let Err(err) = fs::remove_dir_all(&self.root) {
            eprintln!("failed to remove {}: {err}", self.root.display());
        }
    }
}

/// Returns a command that runs goro-demo with `args`, through `GORO_TEST_RUNNER` if set.
fn goro_demo<I, S>(args: I) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let binary = env!("CARGO_BIN_EXE_goro-demo");
    let runner = std::env::var("GORO_TEST_RUNNER").unwrap_or_default();
    let mut words = runner.split_whitespace();
    let mut command = match words.next() {
        Some(program) => {
            let mut command = Command::new(program);
            command.args(words).arg(binary);
            command
        }
        None => Command::new(binary),
    };
    command.args(args);
    command
}

/// Runs `command` with empty stdin and returns its output, failing the test if it hangs.
fn run(mut command: Command) -> Output {
    let description = format!("{command:?}");
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|err| panic!("failed to start {description}: {err}"));

    // Read both pipes on threads so that a full pipe cannot stall the child.
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let stdout = thread::spawn(move || read_all(&mut stdout));
    let stderr = thread::spawn(move || read_all(&mut stderr));

    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > WATCHDOG {
            let _ = child.kill();
            let _ = child.wait();
            panic!("killed {description}: still running after {WATCHDOG:?}");
        }
        thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    }
}

fn read_all(reader: &mut impl std::io::Read) -> Vec<u8> {
    let mut bytes = Vec::new();
    reader.read_to_end(&mut bytes).unwrap();
    bytes
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Parses `L W B NAME` with any spacing, as both goro-demo and GNU wc print it.
fn parse_line(line: &str) -> (Counts, String) {
    let mut fields = line.split_whitespace();
    let mut counts = [0; 3];
    for count in &mut counts {
        let field = fields
            .next()
            .unwrap_or_else(|| panic!("short line {line:?}"));
        *count = field
            .parse()
            .unwrap_or_else(|_| panic!("bad count in {line:?}"));
    }
    let name: Vec<&str> = fields.collect();
    (counts, name.join(" "))
}

/// Returns what `find ROOTS -type f | LC_ALL=C wc -lwc` prints: the counts of every file wc
/// could read, and the total.
fn host_wc(roots: &[&Path]) -> (BTreeMap<String, Counts>, Counts) {
    let find = Command::new("find")
        .args(roots)
        .args(["-type", "f", "-print0"])
        .output()
        .expect("failed to run find");
    assert!(find.status.success(), "find failed: {}", text(&find.stderr));

    let mut wc = Command::new("wc")
        .env("LC_ALL", "C")
        .args(["-lwc", "--files0-from=-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("failed to run wc");
    wc.stdin.take().unwrap().write_all(&find.stdout).unwrap();
    let wc = wc.wait_with_output().unwrap();

    let mut per_file = BTreeMap::new();
    let mut total = None;
    for line in text(&wc.stdout).lines() {
        let (counts, name) = parse_line(line);
        if name == "total" {
            total = Some(counts);
        } else {
            per_file.insert(name, counts);
        }
    }
    // With a single file wc prints no total line.
    let total = total.unwrap_or_else(|| per_file.values().copied().next().unwrap_or_default());
    (per_file, total)
}

/// Returns goro-demo's total, which must be its last stdout line.
fn demo_total(output: &Output) -> Counts {
    let stdout = text(&output.stdout);
    let last = stdout
        .lines()
        .last()
        .unwrap_or_else(|| panic!("no output: {output:?}"));
    let (counts, name) = parse_line(last);
    assert_eq!(name, "total", "last line is not the total: {stdout}");
    counts
}

/// Returns `len` bytes of text and binary from a fixed pseudo-random sequence (xorshift).
fn mixed_bytes(len: usize, mut seed: u64) -> Vec<u8> {
    const ALPHABET: &[u8] = b"aZ~!  \t\n\x0b\x0c\r\x00\x01\x1f\x7f\x80\xa0\xff";
    (0..len)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            ALPHABET[(seed % ALPHABET.len() as u64) as usize]
        })
        .collect()
}

/// Creates `relative/file` under a chain of directories whose full path is longer than
/// PATH_MAX (4096 on Linux), which no process can open by path, root included.
///
/// The chain is made with short names and then renamed from the bottom up, so that no path
/// used to build it is itself too long. Returns the top directory of the chain.
fn too_long_path(tree: &TempTree, relative: &str) -> PathBuf {
    const LEVELS: usize = 18;
    let top = tree.path(relative);
    let mut short = top.clone();
    for _ in 0..LEVELS {
        short.push("d");
    }
    fs::create_dir_all(&short).unwrap();
    fs::write(short.join("file"), b"never counted\n").unwrap();

    let long_name = "d".repeat(250);
    for level in (1..=LEVELS).rev() {
        let mut from = top.clone();
        for _ in 0..level {
            from.push("d");
        }
        let to = from.with_file_name(&long_name);
        fs::rename(&from, &to).unwrap();
    }
    assert!(
        fs::File::open(top.join(&long_name).join(&long_name)).is_ok(),
        "the start of the chain must stay reachable"
    );
    top
}

/// Builds the tree that the comparisons with GNU wc count.
fn build_tree(tree: &TempTree) {
    tree.write("empty", b"");
    tree.write("nested/also-empty", b"");
    tree.write(
        "no-final-newline",
        b"first line\nlast words without newline",
    );
    tree.write("only-newlines", b"\n\n\n");
    tree.write(
        "binary",
        b"a\x01b \x80c\n\x00\x00word\x7f\xff \x01 \x0bx\x0cy\rz\t",
    );

    let all_bytes: Vec<u8> = (0..=255u8).cycle().take(256 * 7 + 3).collect();
    tree.write("nested/all-bytes", &all_bytes);

    // Words across the 64 KiB read boundary: one straddles it, one starts right at it, and one
    // is split by a control byte that sits on it.
    let mut across = vec![b' '; CHUNK - 3];
    across.extend_from_slice(b"straddle\n");
    tree.write("nested/deeper/across-boundary", &across);
    let mut at = vec![b'\n'; CHUNK];
    at.extend_from_slice(b"starts-at-boundary");
    tree.write("nested/deeper/at-boundary", &at);
    let mut control = vec![b'x'; CHUNK - 1];
    control.extend_from_slice(b"\x01still-one-word \x80");
    tree.write("nested/deeper/control-on-boundary", &control);

    tree.write(
        "nested/deeper/several-mib",
        &mixed_bytes(5 * 1024 * 1024 + 17, 0x9e37),
    );
    tree.write("nested/deeper/deepest/small", b"one two three\n");

    std::os::unix::fs::symlink(tree.path("no-final-newline"), tree.path("link-to-file")).unwrap();
    std::os::unix::fs::symlink(tree.path("nested"), tree.path("link-to-dir")).unwrap();
    std::os::unix::fs::symlink(tree.path("gone"), tree.path("dangling-link")).unwrap();
    let fifo = Command::new("mkfifo")
        .arg(tree.path("nested/fifo"))
        .status();
    assert!(fifo.expect("failed to run mkfifo").success());
}

#[test]
fn totals_match_gnu_wc() {
    let tree = TempTree::new("totals");
    build_tree(&tree);

    let output = run(goro_demo([OsStr::new("wc"), tree.root.as_os_str()]));

    let (_, expected) = host_wc(&[&tree.root]);
    assert!(output.status.success(), "{output:?}");
    assert_eq!(demo_total(&output), expected);
    assert!(
        output.stderr.starts_with(b"goro-demo: run report"),
        "{output:?}"
    );
}

#[test]
fn per_file_lines_match_gnu_wc() {
    let tree = TempTree::new("per-file");
    build_tree(&tree);
    let extra = tree.write("extra-root", b"given as its own PATH\n");

    let mut command = goro_demo(["wc", "--per-file"]);
    command.arg(&tree.root).arg(&extra);
    let output = run(command);

    let (expected, expected_total) = host_wc(&[&tree.root, &extra]);
    assert!(output.status.success(), "{output:?}");
    let stdout = text(&output.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    let (total_line, file_lines) = lines.split_last().expect("no output");

    let mut seen = BTreeMap::new();
    let mut paths = Vec::new();
    for line in file_lines {
        let (counts, path) = parse_line(line);
        assert_eq!(
            line,
            &format!("{} {} {} {path}", counts[0], counts[1], counts[2])
        );
        paths.push(PathBuf::from(&path));
        seen.insert(path, counts);
    }
    assert_eq!(seen, expected);
    let mut sorted = paths.clone();
    sorted.sort();
    assert_eq!(paths, sorted, "per-file lines are not sorted by path");
    let expected_total_line = format!(
        "{} {} {} total",
        expected_total[0], expected_total[1], expected_total[2]
    );
    assert_eq!(*total_line, expected_total_line);
}

#[test]
fn path_too_long_reported_and_rest_counted() {
    let tree = TempTree::new("too-long");
    tree.write("readable", b"still counted\n");
    let chain = too_long_path(&tree, "chain");

    let output = run(goro_demo([OsStr::new("wc"), tree.root.as_os_str()]));

    let (_, expected) = host_wc(&[&tree.root]);
    assert_eq!(expected, [1, 2, 14]);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert_eq!(demo_total(&output), expected);
    let stderr = text(&output.stderr);
    let prefix = format!("goro-demo: {}/", chain.display());
    let error = stderr.lines().find(|line| line.starts_with(&prefix));
    let error = error.unwrap_or_else(|| panic!("no error for the chain in {stderr}"));
    assert!(error.contains("File name too long"), "{error}");
}

#[test]
fn missing_path_reported_and_rest_counted() {
    let tree = TempTree::new("missing");
    let file = tree.write("present", b"a b c\n");
    let missing = tree.path("vanished");

    let mut command = goro_demo(["wc"]);
    command.arg(&missing).arg(&file);
    let output = run(command);

    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert_eq!(demo_total(&output), [1, 3, 6]);
    let expected_error = format!(
        "goro-demo: {}: No such file or directory",
        missing.display()
    );
    let stderr = text(&output.stderr);
    assert!(stderr.contains(&expected_error), "{stderr}");
}

#[test]
fn unreadable_file_reported_unless_root() {
    let tree = TempTree::new("chmod");
    tree.write("readable", b"counted\n");
    let locked = tree.write("locked", b"secret words\n");
    fs::set_permissions(&locked, fs::Permissions::from_mode(0o000)).unwrap();
    if fs::File::open(&locked).is_ok() {
        // Root (CAP_DAC_OVERRIDE) reads the file anyway, so there is no error to check.
        // path_too_long_reported_and_rest_counted covers a failure that root gets too.
        eprintln!("skipped: this process can read a file with mode 000");
        return;
    }

    let output = run(goro_demo([OsStr::new("wc"), tree.root.as_os_str()]));

    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert_eq!(demo_total(&output), [1, 1, 8]);
    let expected_error = format!("goro-demo: {}: Permission denied", locked.display());
    let stderr = text(&output.stderr);
    assert!(stderr.contains(&expected_error), "{stderr}");
}

#[test]
fn symlink_argument_skipped() {
    let tree = TempTree::new("symlink-arg");
    let file = tree.write("file", b"three words here\n");
    let link = tree.path("link");
    std::os::unix::fs::symlink(&file, &link).unwrap();

    let mut command = goro_demo(["wc", "--per-file"]);
    command.arg(&link);
    let output = run(command);

    assert!(output.status.success(), "{output:?}");
    assert_eq!(text(&output.stdout), "0 0 0 total\n");
}

#[test]
fn non_utf8_name_printed_as_bytes() {
    let tree = TempTree::new("non-utf8");
    let name = OsStr::from_bytes(b"caf\xe9");
    fs::write(tree.root.join(name), b"x\n").unwrap();

    let mut command = goro_demo(["wc", "--per-file"]);
    command.arg(&tree.root);
    let output = run(command);

    assert!(output.status.success(), "{output:?}");
    let mut expected = b"1 1 2 ".to_vec();
    expected.extend_from_slice(tree.root.join(name).as_os_str().as_bytes());
    expected.extend_from_slice(b"\n1 1 2 total\n");
    assert_eq!(output.stdout, expected);
}

#[test]
fn run_report_lists_runtime_counters() {
    let tree = TempTree::new("report");
    for i in 0..20 {
        tree.write(&format!("f{i}"), b"w\n");
    }

    let output = run(goro_demo([OsStr::new("wc"), tree.root.as_os_str()]));

    assert!(output.status.success(), "{output:?}");
    let stderr = text(&output.stderr);
    let mut lines = stderr.lines();
    let header = lines.next().unwrap_or_default();
    assert!(header.starts_with("goro-demo: run report"), "{stderr}");
    let mut report = BTreeMap::new();
    for line in lines {
        // Rows are `  NAME  VALUE`, and the wall time ends with its unit, ` s`.
        let row = line.trim();
        let row = row.strip_suffix(" s").unwrap_or(row);
        let (name, value) = row.rsplit_once(' ').expect("report row without value");
        report.insert(name.trim().to_string(), value.to_string());
    }

    for name in [
        "goroutines run",
        "context switches",
        "syscalls entered",
        "fast exits",
        "slow exits",
        "retakes",
        "handoffs",
        "Ms started",
        "peak live goroutines",
    ] {
        let value = report
            .get(name)
            .unwrap_or_else(|| panic!("no {name:?} in {stderr}"));
        assert!(value.parse::<u64>().is_ok(), "{name}: {value}");
    }
    let goroutines: u64 = report["goroutines run"].parse().unwrap();
    assert!(
        goroutines > 20,
        "one goroutine per file and main expected: {stderr}"
    );
    let syscalls: u64 = report["syscalls entered"].parse().unwrap();
    assert!(
        syscalls >= 3 * 20,
        "open and two reads per file expected: {stderr}"
    );
    let wall_time = report.get("wall time").map(|value| value.parse::<f64>());
    assert!(matches!(wall_time, Some(Ok(_))), "{stderr}");
}

#[test]
fn procs_one_gives_same_total() {
    let tree = TempTree::new("procs");
    tree.write("a", b"one\ntwo three\n");
    tree.write("b/c", b"four");

    let mut command = goro_demo(["wc", "--procs", "1", "--scheduler", "fifo"]);
    command.arg(&tree.root);
    let output = run(command);

    assert!(output.status.success(), "{output:?}");
    assert_eq!(demo_total(&output), [2, 4, 18]);
}

#[test]
fn invalid_option_exits_2_with_usage() {
    let output = run(goro_demo(["wc", "--no-such-option"]));

    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let stderr = text(&output.stderr);
    assert!(stderr.contains("--no-such-option"), "{stderr}");
    assert!(stderr.contains("Usage: goro-demo wc"), "{stderr}");
    assert!(output.stdout.is_empty());
}

#[test]
fn zero_procs_exits_2_naming_range() {
    let output = run(goro_demo(["wc", "--procs", "0", "/nonexistent"]));

    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let stderr = text(&output.stderr);
    assert!(stderr.contains("--procs"), "{stderr}");
    assert!(stderr.contains("procs 0"), "{stderr}");
    assert!(stderr.contains("1..="), "{stderr}");
    assert!(stderr.contains("Usage: goro-demo wc"), "{stderr}");
    assert!(output.stdout.is_empty());
}

#[test]
fn non_numeric_procs_exits_2() {
    let output = run(goro_demo(["wc", "--procs", "many"]));

    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let stderr = text(&output.stderr);
    assert!(stderr.contains("'many'"), "{stderr}");
    assert!(stderr.contains("--procs"), "{stderr}");
}

#[test]
fn unknown_scheduler_exits_2() {
    let output = run(goro_demo(["wc", "--scheduler", "lottery"]));

    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let stderr = text(&output.stderr);
    assert!(stderr.contains("lottery"), "{stderr}");
    assert!(stderr.contains("fifo"), "{stderr}");
}

#[test]
fn unwritable_trace_keeps_counts() {
    let tree = TempTree::new("trace-full");
    let file = tree.write("file", b"two words\n");

    // /dev/full opens, so the trace file is created up front, but every write to it fails.
    let mut command = goro_demo(["wc", "--trace", "/dev/full"]);
    command.arg(&file);
    let output = run(command);

    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert_eq!(demo_total(&output), [1, 2, 10]);
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("goro-demo: failed to write the trace to /dev/full: "),
        "{stderr}"
    );
}

#[test]
fn trace_with_goro_trace_rejected() {
    let tree = TempTree::new("trace-both");
    let file = tree.write("file", b"two words\n");
    let env_trace = tree.path("env-trace.json");
    let option_trace = tree.path("option-trace.json");

    let mut command = goro_demo(["wc", "--trace"]);
    command.arg(&option_trace).arg(&file);
    command.env("GORO_TRACE", &env_trace);
    let output = run(command);

    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let stderr = text(&output.stderr);
    let expected = format!(
        "goro-demo: cannot record the trace to {}: GORO_TRACE also requests a trace",
        option_trace.display()
    );
    assert!(stderr.contains(&expected), "{stderr}");
    assert!(
        stderr.contains("Unset GORO_TRACE or drop --trace"),
        "{stderr}"
    );
    assert!(!option_trace.exists(), "--trace created its file anyway");
}
