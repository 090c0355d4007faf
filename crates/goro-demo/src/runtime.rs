//! The wc job's connection to the goro runtime: building it, spawning one goroutine per file,
//! routing file system calls through `goro::fs`, and the run report.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::cli::SchedulerKind;
use crate::count::{Counts, count_reader};
use crate::walk::{FileSystem, Kind, Node};
use crate::wc::Spawner;

/// Builds the runtime with the selected scheduler and, if given, number of processors.
///
/// The runtime rejects a number of processors outside its valid range with
/// [`goro::BuildError::Procs`].
pub fn build(
    scheduler: SchedulerKind,
    procs: Option<usize>,
) -> Result<goro::Runtime, goro::BuildError> {
    let mut builder = goro::Runtime::builder();
    if let Some(procs) = procs {
        builder = builder.procs(procs);
    }
    let builder = match scheduler {
        SchedulerKind::Fifo => builder.scheduler(goro_sched::Fifo::new()),
        SchedulerKind::Steal => builder.scheduler(goro_sched::WorkStealing::new()),
    };
    builder.build()
}

/// [`FileSystem`] on `goro::fs`, whose calls run as blocking syscalls so that the processor
/// runs other goroutines meanwhile.
#[derive(Clone, Copy, Debug, Default)]
pub struct GoroFileSystem;

impl FileSystem for GoroFileSystem {
    fn symlink_metadata(&self, path: &Path) -> io::Result<Node> {
        goro::fs::symlink_metadata(path).map(|metadata| Node::from(&metadata))
    }

    fn read_dir(&self, path: &Path) -> io::Result<Vec<(PathBuf, io::Result<Kind>)>> {
        // NOTE: file_type() takes the type from the directory entry without a syscall on
        // file systems that fill in d_type (ext4, xfs, btrfs, tmpfs, overlayfs). On others it
        // calls lstat itself, outside goro::blocking, and holds the processor meanwhile.
        let entries = goro::fs::read_dir(path)?;
        Ok(entries
            .into_iter()
            .map(|entry| (entry.path(), entry.file_type().map(Kind::from)))
            .collect())
    }
}

/// [`Spawner`] that counts each file on a goroutine of its own.
///
/// Must be used on a goroutine, because `goro::spawn` panics elsewhere.
#[derive(Clone, Copy, Debug, Default)]
pub struct GoroutineSpawner;

impl Spawner for GoroutineSpawner {
    type Handle = goro::JoinHandle<io::Result<Counts>>;

    fn spawn_count(&mut self, path: &Path) -> io::Result<Self::Handle> {
        let path = path.to_path_buf();
        goro::spawn(move || count_reader(goro::fs::File::open(path)?)).map_err(|err| {
            io::Error::other(format!("failed to spawn a goroutine to count it: {err}"))
        })
    }

    fn join_count(&mut self, handle: Self::Handle) -> io::Result<Counts> {
        handle
            .join()
            .map_err(|err| io::Error::other(format!("the goroutine counting it failed: {err}")))?
    }
}

/// Writes the runtime's counters and the wall time of the job to `out`, one per line.
pub fn write_report(
    out: &mut impl Write,
    runtime: &goro::Runtime,
    wall_time: Duration,
) -> io::Result<()> {
    let stats = runtime.stats();
    let rows = [
        ("goroutines run", stats.goroutines_run),
        ("context switches", stats.context_switches),
        ("syscalls entered", stats.syscalls_entered),
        ("fast exits", stats.fast_exits),
        ("slow exits", stats.slow_exits),
        ("retakes", stats.retakes),
        ("handoffs", stats.handoffs),
        ("Ms started", stats.ms_started),
        ("peak live goroutines", stats.peak_live_goroutines),
    ];
    writeln!(out, "goro-demo: run report ({} procs)", runtime.procs())?;
    for (name, value) in rows {
        writeln!(out, "  {name:<22}{value:>12}")?;
    }
    writeln!(
        out,
        "  {:<22}{:>10.3} s",
        "wall time",
        wall_time.as_secs_f64()
    )
}
