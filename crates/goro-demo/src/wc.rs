//! The wc job: walks the paths, counts each regular file concurrently, and prints the result.
//!
//! The job runs on one goroutine, which walks the tree and starts one count per file through a
//! [`Spawner`]. With the goro runtime, each count is a goroutine of its own. The results are joined
//! in the order the files were found, then sorted by path for output.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::count::Counts;
use crate::walk::{self, FileSystem, Found};

/// Maximum number of file counts started and not yet joined.
///
/// When this many are in flight the oldest is joined before the next one starts, so a tree of
/// a million files does not need a million goroutine stacks at once, and the read buffers
/// take at most 1024 × 64 KiB = 64 MiB. The figure leaves many blocking reads in flight per
/// processor, and stays far below Linux's default `vm.max_map_count` of 65530 mappings for
/// stacks with guard pages.
pub const MAX_IN_FLIGHT: usize = 1024;

/// Starts counts of single files and joins them.
pub trait Spawner {
    /// A count started and not yet joined.
    type Handle;

    /// Starts counting the regular file at `path` concurrently.
    fn spawn_count(&mut self, path: &Path) -> io::Result<Self::Handle>;

    /// Waits for a count started by [`Spawner::spawn_count`] and returns its result.
    fn join_count(&mut self, handle: Self::Handle) -> io::Result<Counts>;
}

/// The outcome for one path: its counts, or why it could not be read.
#[derive(Debug)]
pub struct FileResult {
    /// The path as the walk found it: a PATH argument, or one joined onto it.
    pub path: PathBuf,
    /// The counts of the file, or the error of the walk, spawn, open, read or join.
    pub outcome: io::Result<Counts>,
}

/// Counts every regular file under `roots` and returns the results sorted by path.
///
/// Paths are compared component by component, as bytes. A path found twice (for example,
/// given twice) is counted twice, as `wc` counts it.
pub fn count_paths<F, S>(file_system: &F, spawner: &mut S, roots: &[PathBuf]) -> Vec<FileResult>
where
    F: FileSystem,
    S: Spawner,
{
    let mut results = Vec::new();
    let mut in_flight: VecDeque<(PathBuf, S::Handle)> = VecDeque::new();

    walk::walk(file_system, roots, |found| match found {
        Found::File(path) => {
            if in_flight.len() >= MAX_IN_FLIGHT {
                let (oldest, handle) = in_flight.pop_front().expect("in_flight is full");
                let outcome = spawner.join_count(handle);
                results.push(FileResult {
                    path: oldest,
                    outcome,
                });
            }
            match spawner.spawn_count(&path) {
                Ok(handle) => in_flight.push_back((path, handle)),
                Err(err) => results.push(FileResult {
                    path,
                    outcome: Err(err),
                }),
            }
        }
        Found::Error(path, err) => results.push(FileResult {
            path,
            outcome: Err(err),
        }),
    });

    for (path, handle) in in_flight {
        let outcome = spawner.join_count(handle);
        results.push(FileResult { path, outcome });
    }

    // Stable, so that a path found twice keeps its two results in walk order.
    results.sort_by(|a, b| a.path.cmp(&b.path));
    results
}

/// The sum of the counted files, and whether any path failed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Sum of the counts of every file that was read completely.
    pub total: Counts,
    /// Whether any path could not be read, so that the exit status must be 1.
    pub failed: bool,
}

/// Writes the per-file lines (with `per_file`) and the total to `out`, and one line per
/// failed path to `err`, in the order of `results`.
///
/// Paths are written as their raw bytes, as GNU wc writes them. The error of `out` or `err` is
/// returned; the counts are in the summary.
pub fn write_results(
    results: &[FileResult],
    per_file: bool,
    out: &mut impl Write,
    err: &mut impl Write,
) -> io::Result<Summary> {
    let mut summary = Summary::default();
    for result in results {
        match &result.outcome {
            Ok(counts) => {
                summary.total += *counts;
                if per_file {
                    write_counts(out, counts, result.path.as_os_str().as_bytes())?;
                }
            }
            Err(error) => {
                summary.failed = true;
                err.write_all(b"goro-demo: ")?;
                err.write_all(result.path.as_os_str().as_bytes())?;
                writeln!(err, ": {error}")?;
            }
        }
    }
    write_counts(out, &summary.total, b"total")?;
    Ok(summary)
}

fn write_counts(out: &mut impl Write, counts: &Counts, name: &[u8]) -> io::Result<()> {
    write!(out, "{} {} {} ", counts.lines, counts.words, counts.bytes)?;
    out.write_all(name)?;
    out.write_all(b"\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::count::count_reader;
    use crate::walk::StdFileSystem;
    use std::fs;
    use std::thread::JoinHandle;

    /// Counts each file on its own OS thread, and records how many ran at once.
    #[derive(Default)]
    struct ThreadSpawner {
        in_flight: usize,
        max_in_flight: usize,
        spawned: usize,
        /// Paths whose spawn fails, to check that the error lands on the right path.
        failing: Vec<PathBuf>,
    }

    impl Spawner for ThreadSpawner {
        type Handle = JoinHandle<io::Result<Counts>>;

        fn spawn_count(&mut self, path: &Path) -> io::Result<Self::Handle> {
            if self.failing.iter().any(|failing| failing == path) {
                return Err(io::Error::other("spawn failed"));
            }
            let path = path.to_path_buf();
            let handle = std::thread::spawn(move || count_reader(fs::File::open(path)?));
            self.spawned += 1;
            self.in_flight += 1;
            self.max_in_flight = self.max_in_flight.max(self.in_flight);
            Ok(handle)
        }

        fn join_count(&mut self, handle: Self::Handle) -> io::Result<Counts> {
            self.in_flight -= 1;
            handle.join().expect("count thread panicked")
        }
    }

    struct TempTree(PathBuf);

    impl TempTree {
        fn new(name: &str) -> TempTree {
            let unique = format!("goro-demo-{name}-{}", std::process::id());
            let root = std::env::temp_dir().join(unique);
            let _ = fs::remove_dir_all(&root);
            fs::create_dir_all(&root).unwrap();
            TempTree(root)
        }
    }

    impl Drop for TempTree {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn counts(lines: u64, words: u64, bytes: u64) -> Counts {
        Counts {
            lines,
            words,
            bytes,
        }
    }

    #[test]
    fn results_sorted_by_path_with_errors() {
        let tree = TempTree::new("sorted");
        let root = &tree.0;
        fs::create_dir(root.join("b")).unwrap();
        fs::write(root.join("b/x"), b"one two\n").unwrap();
        fs::write(root.join("a"), b"three").unwrap();
        fs::write(root.join("c"), b"\n\n").unwrap();
        let missing = root.join("missing");

        let mut spawner = ThreadSpawner {
            failing: vec![root.join("c")],
            ..ThreadSpawner::default()
        };
        let roots = [root.clone(), missing.clone()];
        let results = count_paths(&StdFileSystem, &mut spawner, &roots);

        let paths: Vec<&Path> = results.iter().map(|r| r.path.as_path()).collect();
        let expected = [root.join("a"), root.join("b/x"), root.join("c"), missing];
        assert_eq!(
            paths,
            expected.iter().map(PathBuf::as_path).collect::<Vec<_>>()
        );
        assert_eq!(results[0].outcome.as_ref().unwrap(), &counts(0, 1, 5));
        assert_eq!(results[1].outcome.as_ref().unwrap(), &counts(1, 2, 8));
        let spawn_error = results[2].outcome.as_ref().unwrap_err();
        assert_eq!(spawn_error.to_string(), "spawn failed");
        let missing_error = results[3].outcome.as_ref().unwrap_err();
        assert_eq!(missing_error.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn in_flight_counts_bounded() {
        let tree = TempTree::new("bounded");
        let files = MAX_IN_FLIGHT + 10;
        for i in 0..files {
            fs::write(tree.0.join(format!("f{i:05}")), b"w\n").unwrap();
        }

        let mut spawner = ThreadSpawner::default();
        let results = count_paths(&StdFileSystem, &mut spawner, std::slice::from_ref(&tree.0));

        assert_eq!(results.len(), files);
        assert_eq!(spawner.spawned, files);
        assert_eq!(spawner.max_in_flight, MAX_IN_FLIGHT);
        assert_eq!(spawner.in_flight, 0);
        for result in &results {
            assert_eq!(result.outcome.as_ref().unwrap(), &counts(1, 1, 2));
        }
    }

    #[test]
    fn output_format() {
        let results = vec![
            FileResult {
                path: PathBuf::from("dir/a b"),
                outcome: Ok(counts(1, 2, 3)),
            },
            FileResult {
                path: PathBuf::from("dir/bad"),
                outcome: Err(io::Error::from_raw_os_error(13)),
            },
            FileResult {
                path: PathBuf::from("dir/c"),
                outcome: Ok(counts(10, 20, 300)),
            },
        ];

        let mut out = Vec::new();
        let mut err = Vec::new();
        let summary = write_results(&results, true, &mut out, &mut err).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "1 2 3 dir/a b\n10 20 300 dir/c\n11 22 303 total\n"
        );
        let err = String::from_utf8(err).unwrap();
        assert!(
            err.starts_with("goro-demo: dir/bad: Permission denied"),
            "{err}"
        );
        assert_eq!(
            summary,
            Summary {
                total: counts(11, 22, 303),
                failed: true,
            }
        );

        let mut out = Vec::new();
        let summary = write_results(&results[..1], false, &mut out, &mut io::sink()).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "1 2 3 total\n");
        assert!(!summary.failed);
    }

    #[test]
    fn non_utf8_path_written_as_bytes() {
        use std::ffi::OsStr;
        let path = PathBuf::from(OsStr::from_bytes(b"caf\xe9"));
        let results = vec![FileResult {
            path,
            outcome: Ok(counts(0, 0, 0)),
        }];
        let mut out = Vec::new();
        write_results(&results, true, &mut out, &mut io::sink()).unwrap();
        assert_eq!(out, b"0 0 0 caf\xe9\n0 0 0 total\n");
    }
}
