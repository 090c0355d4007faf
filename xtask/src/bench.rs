//! `cargo xtask bench`: runs goro's benchmark workloads against its peers and writes
//! `docs/benchmarks.md` and `docs/benchmarks.svg`.
//!
//! Each run of a workload is its own process: the `goro-bench` binary of `crates/goro-bench`
//! (goro, corosensei, generator, context, may, tokio and OS threads), the Go program in
//! `crates/goro-bench/go`, `goro-demo`, GNU `wc` or `wrk`. A process prints one line per
//! metric, `metric NAME VALUE UNIT`; this module repeats each run, keeps the median, min and
//! max of every metric, and divides goro's median by each peer's median from the same run of
//! the xtask.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use crate::process;

pub const HELP: &str = "\
Usage: cargo xtask bench [--quick]

Builds crates/goro-bench (its own workspace, target dir target/bench), its Go program with
`go build` and goro-demo in release mode, runs every workload against its peers and writes
docs/benchmarks.md and docs/benchmarks.svg. Each figure is the median of 5 runs, each run a
process of its own, with min and max; ratios divide goro's median by the peer's. Takes about
5 minutes on 2 cores once the builds are cached. Needs wrk and Go, which
`cargo xtask setup --bench` installs; without them, the page lists those workloads as not run.

Options:
  --quick  3 runs per figure, smaller counts, wrk for 5 s, and no 1,000,000-goroutine cases;
           about 3 minutes
";

/// The tree that `goro-demo wc` and GNU wc count and `goro-demo serve` serves.
const DOC_TREE: &str = "/usr/share/doc";

/// Stands in for the Go rows when `go` is not on the PATH.
const GO_MISSING: &str = "Go: not installed, run cargo xtask setup --bench";

/// Kills one run of a workload that takes longer than this; the row then shows the timeout.
const RUN_TIMEOUT: Duration = Duration::from_secs(300);

/// Sizes of one bench run.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Plan {
    quick: bool,
    runs: usize,
    switches: usize,
    yields: usize,
    round_trips: usize,
    syscalls: usize,
    wrk_seconds: u32,
}

impl Plan {
    pub fn new(quick: bool) -> Plan {
        if quick {
            Plan {
                quick,
                runs: 3,
                switches: 2_000_000,
                yields: 200_000,
                round_trips: 100_000,
                syscalls: 500_000,
                wrk_seconds: 5,
            }
        } else {
            Plan {
                quick,
                runs: 5,
                switches: 10_000_000,
                yields: 1_000_000,
                round_trips: 500_000,
                syscalls: 2_000_000,
                wrk_seconds: 10,
            }
        }
    }
}

/// Parses the options after `cargo xtask bench`.
pub fn parse(options: &[String]) -> crate::Result<Plan> {
    let mut quick = false;
    for option in options {
        match option.as_str() {
            "--quick" => quick = true,
            other => {
                return Err(
                    format!("unknown option `{other}` for `bench`; expected --quick").into(),
                );
            }
        }
    }
    Ok(Plan::new(quick))
}

/// A bound that goro's figure should stay within.
#[derive(Clone, Debug)]
enum Target {
    /// The metric's median is at most this value, in the metric's unit.
    AtMost { metric: &'static str, limit: f64 },
    /// goro's median is at most `limit` times the named peer's.
    RatioAtMost { peer: &'static str, limit: f64 },
}

/// One program that produces a row of a table.
#[derive(Clone, Debug)]
enum Runner {
    /// `target/bench/release/goro-bench ARGS`.
    Bench(Vec<String>),
    /// `target/bench/goro-bench-go WORKLOAD COUNT` with GOMAXPROCS set.
    Go { args: Vec<String>, procs: usize },
    /// A whole command, timed from spawn to exit as the metric `time` in ms.
    Timed(Vec<String>),
    /// `goro-demo serve` with these extra options, loaded by wrk.
    Serve(Vec<String>),
}

#[derive(Clone, Debug)]
struct Row {
    label: String,
    is_goro: bool,
    runner: Runner,
}

/// One table of the page: one workload at one size.
struct Section {
    title: String,
    about: String,
    /// The metric that ratios and the chart compare.
    primary: &'static str,
    higher_is_better: bool,
    targets: Vec<Target>,
    /// The target in words for the page, or empty when the workload has none.
    target_text: &'static str,
    rows: Vec<Row>,
}

/// Median, min and max of one metric over the runs.
#[derive(Clone, Debug)]
struct Summary {
    median: f64,
    min: f64,
    max: f64,
    unit: String,
}

#[derive(Clone, Debug)]
enum Outcome {
    Measured(BTreeMap<String, Summary>),
    Failed(String),
    Skipped(String),
}

/// Paths and tools found before the runs.
struct Tools {
    root: PathBuf,
    bench: PathBuf,
    go_bench: Option<PathBuf>,
    demo: PathBuf,
    wrk: bool,
}

/// Builds everything, runs every section and writes the page; returns false if a build
/// failed.
pub fn run(root: &Path, plan: Plan) -> crate::Result<bool> {
    let Some(tools) = build(root)? else {
        return Ok(false);
    };
    let machine = describe_machine(root, tools.go_bench.is_some());
    let started = Instant::now();
    let sections = sections(plan);
    let mut results = Vec::new();
    for section in &sections {
        println!("== {}", section.title);
        let outcomes: Vec<Outcome> = section
            .rows
            .iter()
            .map(|row| {
                let outcome = measure(&tools, plan, row);
                println!(
                    "  {:<28} {}",
                    row.label,
                    outcome_line(&outcome, section.primary)
                );
                outcome
            })
            .collect();
        results.push(outcomes);
    }
    let elapsed = started.elapsed();
    let svg = render_svg(&sections, &results);
    let page = render_page(&machine, plan, elapsed, &tools, &sections, &results);
    std::fs::write(root.join("docs/benchmarks.svg"), svg)?;
    std::fs::write(root.join("docs/benchmarks.md"), page)?;
    println!(
        "wrote docs/benchmarks.md and docs/benchmarks.svg after {:.0} s of runs",
        elapsed.as_secs_f64()
    );
    Ok(true)
}

/// Builds goro-bench, its Go program and goro-demo; returns `None` if a build failed.
fn build(root: &Path) -> crate::Result<Option<Tools>> {
    let target_dir = root.join("target/bench");
    let manifest = root.join("crates/goro-bench/Cargo.toml");
    let status = process::run(
        Command::new(cargo())
            .args(["build", "--release", "--manifest-path"])
            .arg(&manifest)
            .arg("--target-dir")
            .arg(&target_dir),
    )?;
    if !status.success() {
        eprintln!("error: building goro-bench failed ({status})");
        return Ok(None);
    }
    let status = process::run(
        Command::new(cargo())
            .args(["build", "--release", "-p", "goro-demo"])
            .current_dir(root),
    )?;
    if !status.success() {
        eprintln!("error: building goro-demo failed ({status})");
        return Ok(None);
    }
    let go_bench = if which("go") {
        let output = target_dir.join("goro-bench-go");
        let status = process::run(
            Command::new("go")
                .args(["build", "-o"])
                .arg(&output)
                .arg(".")
                .current_dir(root.join("crates/goro-bench/go")),
        )?;
        if !status.success() {
            eprintln!("error: building the Go benchmarks failed ({status})");
            return Ok(None);
        }
        Some(output)
    } else {
        println!("{GO_MISSING}");
        None
    };
    let wrk = which("wrk");
    if !wrk {
        println!("wrk: not installed, run cargo xtask setup");
    }
    Ok(Some(Tools {
        root: root.to_path_buf(),
        bench: target_dir.join("release/goro-bench"),
        go_bench,
        demo: root.join("target/release/goro-demo"),
        wrk,
    }))
}

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string())
}

/// Returns whether `program` is an executable file in a directory of PATH.
fn which(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|directory| directory.join(program).is_file())
    })
}

fn words(line: &str) -> Vec<String> {
    line.split_whitespace().map(String::from).collect()
}

fn bench_row(label: &str, args: &str) -> Row {
    Row {
        label: label.to_string(),
        is_goro: label.starts_with("goro"),
        runner: Runner::Bench(words(args)),
    }
}

fn go_row(procs: usize, args: &str) -> Row {
    Row {
        label: format!("Go (GOMAXPROCS={procs})"),
        is_goro: false,
        runner: Runner::Go {
            args: words(args),
            procs,
        },
    }
}

/// Every table of the page, in order.
fn sections(plan: Plan) -> Vec<Section> {
    let mut sections = vec![switch_section(plan), yield_section(plan)];
    sections.push(spawn_section(100_000));
    if !plan.quick {
        sections.push(spawn_section(1_000_000));
        sections.push(spawn_wait_group_section(1_000_000));
    }
    sections.push(chan_section(plan));
    sections.push(syscall_section(plan));
    sections.push(handoff_section());
    sections.push(rss_section(30_000, true));
    if !plan.quick {
        sections.push(rss_section(1_000_000, false));
    }
    sections.push(wc_section());
    sections.push(serve_section());
    sections
}

fn switch_section(plan: Plan) -> Section {
    let count = plan.switches;
    let count_text = group_digits(count as f64);
    let row = |label: &str, implementation: &str| {
        bench_row(label, &format!("switch {implementation} {count}"))
    };
    Section {
        title: "Raw switch round trip".into(),
        about: format!(
            "{count_text} resumes of a coroutine that suspends at once; time per resume plus \
             suspend. `goro_context::Coroutine` catches panics and passes values; the raw \
             `goro_context::switch` ping-pong is the bare primitive. The g0 pair is the \
             runtime's `switch_from_g0`/`switch_to_g0`, which reads the FP control state on one \
             side only; the no-FP rows leave it alone, as corosensei 0.3.4 always does, so \
             only they compare like with like."
        ),
        primary: "round_trip",
        higher_is_better: false,
        targets: vec![Target::RatioAtMost {
            peer: "corosensei",
            limit: 1.2,
        }],
        target_text: "at most 1.2x corosensei",
        rows: vec![
            row("goro (Coroutine)", "goro-coroutine"),
            row("goro (Coroutine, no FP switch)", "goro-coroutine-nofp"),
            row("goro (raw switch)", "goro-switch"),
            row("goro (raw switch, g0 pair)", "goro-switch-g0"),
            row("goro (raw switch, no FP)", "goro-switch-nofp"),
            row("corosensei", "corosensei"),
            row("generator", "generator"),
            row("context", "context"),
        ],
    }
}

fn yield_section(plan: Plan) -> Section {
    let count = plan.yields;
    // sched_yield between two threads costs microseconds; fewer yields keep the run short.
    let thread_count = count / 10;
    let (count_text, thread_count_text) = (
        group_digits(count as f64),
        group_digits(thread_count as f64),
    );
    Section {
        title: "Yield ping-pong on one processor".into(),
        about: format!(
            "Two goroutines on one P (procs 1) each yield {count_text} times; time per yield. may \
             runs 1 worker, tokio a current-thread runtime with `yield_now`, Go GOMAXPROCS=1 \
             with `runtime.Gosched`. OS threads: two threads pinned to one CPU with \
             `sched_setaffinity`, each calling `std::thread::yield_now` {thread_count_text} times."
        ),
        primary: "yield",
        higher_is_better: false,
        targets: vec![Target::AtMost {
            metric: "yield",
            limit: 20.0,
        }],
        target_text: "at most 20 ns per yield",
        rows: vec![
            bench_row("goro (Fifo)", &format!("yield goro-fifo {count}")),
            bench_row("goro (WorkStealing)", &format!("yield goro-steal {count}")),
            bench_row("may (1 worker)", &format!("yield may {count}")),
            bench_row("tokio (current thread)", &format!("yield tokio {count}")),
            go_row(1, &format!("yield {count}")),
            bench_row(
                "OS threads (pinned)",
                &format!("yield threads {thread_count}"),
            ),
        ],
    }
}

fn spawn_section(count: usize) -> Section {
    Section {
        title: format!(
            "Spawn and join {} empty goroutines",
            group_digits(count as f64)
        ),
        about: format!(
            "One goroutine spawns {} empty goroutines with 2 processors, then joins each; \
             time per goroutine. may runs 2 workers, tokio a multi-thread runtime with 2 \
             workers, Go GOMAXPROCS=2 and joins through a `sync.WaitGroup`. goro runs in its \
             default stack mode.",
            group_digits(count as f64)
        ),
        primary: "spawn_join",
        higher_is_better: false,
        targets: vec![Target::AtMost {
            metric: "spawn_join",
            limit: 200.0,
        }],
        target_text: "at most 200 ns per goroutine",
        rows: vec![
            bench_row("goro (Fifo)", &format!("spawn goro-fifo {count}")),
            bench_row("goro (WorkStealing)", &format!("spawn goro-steal {count}")),
            bench_row("may (2 workers)", &format!("spawn may {count}")),
            bench_row("tokio (2 workers)", &format!("spawn tokio {count}")),
            go_row(2, &format!("spawn {count}")),
        ],
    }
}

fn spawn_wait_group_section(count: usize) -> Section {
    Section {
        title: format!(
            "Spawn {} empty goroutines and wait on a WaitGroup",
            group_digits(count as f64)
        ),
        about: format!(
            "The spawn benchmark as Go's is written: one goroutine spawns {} empty goroutines \
             with 2 processors, drops each join handle and waits until all have called `done` \
             on one `goro::sync::WaitGroup`; time per goroutine. Without handles, finished \
             goroutines' join cells and stacks are reused at once, as Go reuses its gs, where \
             the join-handle table above keeps every cell alive until its join. The Go row is \
             the same program as above. may and tokio appear in the join-handle table only.",
            group_digits(count as f64)
        ),
        primary: "spawn_join",
        higher_is_better: false,
        targets: vec![Target::AtMost {
            metric: "spawn_join",
            limit: 200.0,
        }],
        target_text: "at most 200 ns per goroutine",
        rows: vec![
            bench_row("goro (Fifo)", &format!("spawnwg goro-fifo {count}")),
            bench_row(
                "goro (WorkStealing)",
                &format!("spawnwg goro-steal {count}"),
            ),
            go_row(2, &format!("spawn {count}")),
        ],
    }
}

fn chan_section(plan: Plan) -> Section {
    let count = plan.round_trips;
    let count_text = group_digits(count as f64);
    Section {
        title: "Channel ping-pong on one processor".into(),
        about: format!(
            "{count_text} round trips of a value over two channels between two goroutines on one \
             processor; time per round trip. goro's `goro::sync::channel` with capacity 0 (a \
             rendezvous) or 1, Go's unbuffered channels, may's `sync::mpsc` (unbounded) with \
             1 worker, tokio's `sync::mpsc` with capacity 1 (its smallest) on a \
             current-thread runtime."
        ),
        primary: "round_trip",
        higher_is_better: false,
        targets: Vec::new(),
        target_text: "",
        rows: vec![
            bench_row(
                "goro (Fifo, capacity 0)",
                &format!("chan goro-fifo {count}"),
            ),
            bench_row(
                "goro (WorkStealing, capacity 0)",
                &format!("chan goro-steal {count}"),
            ),
            bench_row(
                "goro (Fifo, capacity 1)",
                &format!("chan goro-fifo-cap1 {count}"),
            ),
            bench_row("may (1 worker)", &format!("chan may {count}")),
            bench_row("tokio (current thread)", &format!("chan tokio {count}")),
            go_row(1, &format!("chan {count}")),
        ],
    }
}

fn syscall_section(plan: Plan) -> Section {
    let count = plan.syscalls;
    let count_text = group_digits(count as f64);
    Section {
        title: "Syscall fast path".into(),
        about: format!(
            "{count_text} getppid calls through `goro::blocking` minus {count_text} raw getppid calls, \
             per call, on one processor; against Go's `syscall.Syscall` minus \
             `syscall.RawSyscall` of getppid with GOMAXPROCS=1. `raw` and `wrapped` are the two \
             halves."
        ),
        primary: "overhead",
        higher_is_better: false,
        targets: vec![Target::AtMost {
            metric: "overhead",
            limit: 10.0,
        }],
        target_text: "at most 10 ns per call",
        rows: vec![
            bench_row("goro (Fifo)", &format!("syscall goro-fifo {count}")),
            bench_row(
                "goro (WorkStealing)",
                &format!("syscall goro-steal {count}"),
            ),
            go_row(1, &format!("syscall {count}")),
        ],
    }
}

fn handoff_section() -> Section {
    Section {
        title: "Handoff latency on one processor".into(),
        about: "60 rounds with one processor: goroutine A starts goroutine B, which waits to \
                run, then enters a blocking call; the latency runs from just before the call to \
                B's first statement; `median` and `worst` are of the 60. One more round runs \
                before them and is shown as `first`: it starts the threads that later rounds \
                reuse (goro's monitor and a second M, Go's new M). `known`: A reads an \
                empty pipe through `goro::blocking_known`, which hands the P off at once, and B \
                writes the byte that ends the read. `retake`: A sleeps 20 ms through \
                `goro::blocking`, so B runs once the monitor retakes the P. Go: A reads an \
                empty pipe made by `syscall.Pipe` (blocking, outside the netpoller) with \
                `syscall.Read`, GOMAXPROCS=1, so sysmon retakes the P."
            .into(),
        primary: "median",
        higher_is_better: false,
        targets: vec![
            Target::AtMost {
                metric: "median",
                limit: 30.0,
            },
            Target::AtMost {
                metric: "worst",
                limit: 100.0,
            },
        ],
        target_text: "median at most 30 us, worst at most 100 us",
        rows: vec![
            bench_row("goro (Fifo, known)", "handoff goro-fifo-known 60"),
            bench_row("goro (WorkStealing, known)", "handoff goro-steal-known 60"),
            bench_row("goro (Fifo, retake)", "handoff goro-fifo-retake 60"),
            bench_row(
                "goro (WorkStealing, retake)",
                "handoff goro-steal-retake 60",
            ),
            go_row(1, "handoff 60"),
        ],
    }
}

fn rss_section(count: usize, with_default_mode: bool) -> Section {
    let mut rows = vec![bench_row(
        "goro (many goroutines)",
        &format!("rss goro-many {count}"),
    )];
    if with_default_mode {
        rows.push(bench_row(
            "goro (default)",
            &format!("rss goro-default {count}"),
        ));
    }
    rows.push(bench_row("may", &format!("rss may {count}")));
    rows.push(go_row(2, &format!("rss {count}")));
    Section {
        title: format!("RSS per parked goroutine, {}", group_digits(count as f64)),
        about: format!(
            "{} goroutines parked in a channel receive (may: in `coroutine::park`), 2 \
             processors; resident memory added per goroutine, from /proc/self/statm before \
             spawning and after all have parked. goro's many-goroutines mode \
             (`Builder::many_goroutines(true)`) runs with 16 KiB stacks carved from slabs, the \
             default mode with one 256 KiB mapping and a guard page per stack. may runs its \
             default stacks.",
            group_digits(count as f64)
        ),
        primary: "per_goroutine",
        higher_is_better: false,
        targets: vec![Target::AtMost {
            metric: "per_goroutine",
            limit: 4.5,
        }],
        target_text: "at most 4.5 KiB each, with 1,000,000 alive",
        rows,
    }
}

fn wc_section() -> Section {
    let demo_wc = |label: &str, scheduler: &str| Row {
        label: label.to_string(),
        is_goro: true,
        runner: Runner::Timed(words(&format!(
            "{{demo}} wc --scheduler {scheduler} {DOC_TREE}"
        ))),
    };
    Section {
        title: format!("goro-demo wc against GNU wc on {DOC_TREE}"),
        about: format!(
            "Whole-process time of `goro-demo wc {DOC_TREE}` (one goroutine per file, one \
             processor per CPU) against `find {DOC_TREE} -type f -print0 | LC_ALL=C wc -lwc \
             --files0-from=-`. The page cache is warm after the first run."
        ),
        primary: "time",
        higher_is_better: false,
        targets: Vec::new(),
        target_text: "",
        rows: vec![
            demo_wc("goro-demo wc (Fifo)", "fifo"),
            demo_wc("goro-demo wc (WorkStealing)", "steal"),
            Row {
                label: "GNU find | wc".into(),
                is_goro: false,
                runner: Runner::Timed(vec![
                    "sh".into(),
                    "-c".into(),
                    format!(
                        "find {DOC_TREE} -type f -print0 | LC_ALL=C wc -lwc --files0-from=- \
                         | tail -n 1"
                    ),
                ]),
            },
        ],
    }
}

fn serve_section() -> Section {
    Section {
        title: "goro-demo serve under wrk".into(),
        about: format!(
            "`wrk -t2 -c100 --latency` on loopback against `goro-demo serve {DOC_TREE}` (one \
             goroutine per connection, one processor per CPU) and against its \
             thread-per-connection mode `--threads`, fetching one small file. `--threads` is \
             a baseline for this comparison, so `serve --help` does not list it. wrk runs on \
             the same 2 CPUs as the server."
        ),
        primary: "requests",
        higher_is_better: true,
        targets: Vec::new(),
        target_text: "",
        rows: vec![
            Row {
                label: "goro-demo serve (Fifo)".into(),
                is_goro: true,
                runner: Runner::Serve(words("--scheduler fifo")),
            },
            Row {
                label: "goro-demo serve (WorkStealing)".into(),
                is_goro: true,
                runner: Runner::Serve(words("--scheduler steal")),
            },
            Row {
                label: "serve --threads".into(),
                is_goro: false,
                runner: Runner::Serve(words("--threads")),
            },
        ],
    }
}

/// Runs `row` `plan.runs` times and summarizes each metric.
fn measure(tools: &Tools, plan: Plan, row: &Row) -> Outcome {
    if matches!(row.runner, Runner::Go { .. }) && tools.go_bench.is_none() {
        return Outcome::Skipped(GO_MISSING.into());
    }
    if matches!(row.runner, Runner::Serve(_)) && !tools.wrk {
        return Outcome::Skipped("wrk: not installed, run cargo xtask setup".into());
    }
    let mut samples: BTreeMap<String, (Vec<f64>, String)> = BTreeMap::new();
    for _ in 0..plan.runs {
        let metrics = match run_once(tools, plan, &row.runner) {
            Ok(metrics) => metrics,
            Err(reason) => return Outcome::Failed(reason),
        };
        if metrics.is_empty() {
            return Outcome::Failed("the run printed no metric".into());
        }
        for (name, value, unit) in metrics {
            let entry = samples.entry(name).or_insert_with(|| (Vec::new(), unit));
            entry.0.push(value);
        }
    }
    let summaries = samples
        .into_iter()
        .map(|(name, (mut values, unit))| {
            values.sort_by(f64::total_cmp);
            let summary = Summary {
                median: median(&values),
                min: values[0],
                max: values[values.len() - 1],
                unit,
            };
            (name, summary)
        })
        .collect();
    Outcome::Measured(summaries)
}

/// Returns the median of sorted `values`: the middle one, or the mean of the middle two.
fn median(values: &[f64]) -> f64 {
    let middle = values.len() / 2;
    if values.len() % 2 == 1 {
        values[middle]
    } else {
        (values[middle - 1] + values[middle]) / 2.0
    }
}

type Metrics = Vec<(String, f64, String)>;

/// Runs one process of `runner`; returns its metrics or why it failed.
fn run_once(tools: &Tools, plan: Plan, runner: &Runner) -> Result<Metrics, String> {
    match runner {
        Runner::Bench(args) => {
            let mut command = Command::new(&tools.bench);
            command.args(args);
            run_metrics(&mut command)
        }
        Runner::Go { args, procs } => {
            let go_bench = tools
                .go_bench
                .as_ref()
                .expect("measure skips Go rows without Go");
            let mut command = Command::new(go_bench);
            command.args(args).env("GOMAXPROCS", procs.to_string());
            run_metrics(&mut command)
        }
        Runner::Timed(line) => {
            let demo = tools.demo.to_string_lossy();
            let line: Vec<String> = line
                .iter()
                .map(|word| word.replace("{demo}", &demo))
                .collect();
            let mut command = Command::new(&line[0]);
            command.args(&line[1..]).current_dir(&tools.root);
            let started = Instant::now();
            let output = run_captured(&mut command, RUN_TIMEOUT)?;
            let elapsed = started.elapsed();
            if !output.success {
                return Err(format!(
                    "exit {}: {}",
                    output.status,
                    last_line(&output.stderr)
                ));
            }
            Ok(vec![(
                "time".into(),
                elapsed.as_secs_f64() * 1000.0,
                "ms".into(),
            )])
        }
        Runner::Serve(options) => run_serve(tools, plan, options),
    }
}

/// Output of one finished process.
struct Captured {
    success: bool,
    status: String,
    stdout: String,
    stderr: String,
}

/// Runs `command` with captured output, killing it after `timeout`.
fn run_captured(command: &mut Command, timeout: Duration) -> Result<Captured, String> {
    let described = process::describe(command);
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|error| format!("failed to start `{described}`: {error}"))?;
    let stdout = read_in_background(child.stdout.take());
    let stderr = read_in_background(child.stderr.take());
    let status = wait_with_timeout(&mut child, timeout)
        .ok_or_else(|| format!("timed out after {} s: `{described}`", timeout.as_secs()))?;
    Ok(Captured {
        success: status.success(),
        status: status.to_string(),
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    })
}

fn read_in_background(pipe: Option<impl Read + Send + 'static>) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut text = String::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_string(&mut text);
        }
        text
    })
}

/// Waits for `child` to exit; kills it and returns `None` after `timeout`.
fn wait_with_timeout(child: &mut Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(5)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
}

fn last_line(text: &str) -> &str {
    text.lines()
        .rfind(|line| !line.trim().is_empty())
        .unwrap_or("no output")
        .trim()
}

/// Runs a goro-bench or goro-bench-go process and parses its `metric` lines.
fn run_metrics(command: &mut Command) -> Result<Metrics, String> {
    let output = run_captured(command, RUN_TIMEOUT)?;
    if !output.success {
        let reason = output
            .stderr
            .lines()
            .find_map(|line| line.strip_prefix("failed: "))
            .map(str::to_string)
            .unwrap_or_else(|| format!("exit {}: {}", output.status, last_line(&output.stderr)));
        return Err(reason);
    }
    Ok(parse_metrics(&output.stdout))
}

/// Parses the lines `metric NAME VALUE UNIT` of `stdout`, ignoring any other line.
fn parse_metrics(stdout: &str) -> Metrics {
    stdout
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            if fields.next() != Some("metric") {
                return None;
            }
            let name = fields.next()?.to_string();
            let value = fields.next()?.parse().ok()?;
            let unit = fields.next().unwrap_or("").to_string();
            Some((name, value, unit))
        })
        .collect()
}

/// Starts `goro-demo serve` on a free loopback port, loads it with wrk, stops it with
/// SIGTERM and returns wrk's requests/s and latency percentiles.
fn run_serve(tools: &Tools, plan: Plan, options: &[String]) -> Result<Metrics, String> {
    let mut server = Command::new(&tools.demo)
        .args(["serve", DOC_TREE, "--addr", "127.0.0.1:0"])
        .args(options)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|error| format!("failed to start goro-demo serve: {error}"))?;
    let address = read_listen_address(&mut server);
    let result = address.and_then(|address| {
        let url = format!("http://{address}/{}", served_file()?);
        let mut wrk = Command::new("wrk");
        wrk.args(["-t2", "-c100", "--latency"])
            .arg(format!("-d{}s", plan.wrk_seconds))
            .arg(&url);
        let timeout = Duration::from_secs(u64::from(plan.wrk_seconds) + 60);
        let output = run_captured(&mut wrk, timeout)?;
        if !output.success {
            return Err(format!(
                "wrk exit {}: {}",
                output.status,
                last_line(&output.stderr)
            ));
        }
        parse_wrk(&output.stdout)
    });
    stop_server(&mut server);
    result
}

/// Reads the server's log until it names its address, then drains the rest in the
/// background.
fn read_listen_address(server: &mut Child) -> Result<String, String> {
    let stderr = server
        .stderr
        .take()
        .ok_or("goro-demo serve has no stderr pipe")?;
    let (sender, receiver) = mpsc::channel();
    thread::spawn(move || {
        let mut lines = BufReader::new(stderr).lines();
        let mut sent = false;
        for line in lines.by_ref().map_while(Result::ok) {
            if !sent && let Some(rest) = line.split("listening on http://").nth(1) {
                let address = rest.split('/').next().unwrap_or_default().to_string();
                let _ = sender.send(address);
                sent = true;
            }
        }
    });
    receiver
        .recv_timeout(Duration::from_secs(30))
        .map_err(|_| "goro-demo serve named no address within 30 s".to_string())
}

/// The URL path of a small file under the served tree: the first `copyright` file.
fn served_file() -> Result<String, String> {
    let mut packages: Vec<_> = std::fs::read_dir(DOC_TREE)
        .map_err(|error| format!("failed to list {DOC_TREE}: {error}"))?
        .filter_map(Result::ok)
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect();
    packages.sort();
    packages
        .into_iter()
        .find(|package| {
            let path = Path::new(DOC_TREE).join(package).join("copyright");
            path.symlink_metadata()
                .is_ok_and(|metadata| metadata.is_file())
        })
        .map(|package| format!("{package}/copyright"))
        .ok_or_else(|| format!("no regular file {DOC_TREE}/*/copyright to serve"))
}

fn stop_server(server: &mut Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status();
    if wait_with_timeout(server, Duration::from_secs(10)).is_none() {
        eprintln!("goro-demo serve did not stop within 10 s of SIGTERM; killed it");
    }
}

/// Parses wrk's `Requests/sec:` line and its `--latency` percentiles.
fn parse_wrk(stdout: &str) -> Result<Metrics, String> {
    let mut metrics = Vec::new();
    for line in stdout.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields.as_slice() {
            ["Requests/sec:", value] => {
                let value = value
                    .parse()
                    .map_err(|_| format!("wrk: bad line {line:?}"))?;
                metrics.push(("requests".into(), value, "req/s".into()));
            }
            [percentile @ ("50%" | "99%"), value] => {
                let name = format!("latency_p{}", percentile.trim_end_matches('%'));
                metrics.push((name, wrk_duration_ms(value)?, "ms".into()));
            }
            _ => {}
        }
    }
    if !stdout.contains("Non-2xx") && metrics.iter().any(|(name, ..)| name == "requests") {
        Ok(metrics)
    } else {
        Err(format!(
            "wrk: no requests/s or non-2xx answers in: {}",
            stdout.trim()
        ))
    }
}

/// Converts a wrk duration such as `1.23ms`, `456.00us` or `1.02s` to milliseconds.
fn wrk_duration_ms(text: &str) -> Result<f64, String> {
    let (number, scale) = if let Some(number) = text.strip_suffix("us") {
        (number, 0.001)
    } else if let Some(number) = text.strip_suffix("ms") {
        (number, 1.0)
    } else if let Some(number) = text.strip_suffix('m') {
        (number, 60_000.0)
    } else if let Some(number) = text.strip_suffix('s') {
        (number, 1000.0)
    } else {
        return Err(format!("wrk: unknown duration {text:?}"));
    };
    number
        .parse::<f64>()
        .map(|value| value * scale)
        .map_err(|_| format!("wrk: unknown duration {text:?}"))
}

/// One line of console output for a row's outcome.
fn outcome_line(outcome: &Outcome, primary: &str) -> String {
    match outcome {
        Outcome::Measured(summaries) => summaries
            .iter()
            .map(|(name, summary)| {
                let marker = if name == primary { "*" } else { "" };
                format!(
                    "{marker}{name} {} {}",
                    format_value(summary.median),
                    summary.unit
                )
            })
            .collect::<Vec<_>>()
            .join(", "),
        Outcome::Failed(reason) => format!("failed: {reason}"),
        Outcome::Skipped(reason) => format!("not run: {reason}"),
    }
}

/// The machine and toolchain facts at the top of the page.
struct Machine {
    cpu: String,
    cpus: usize,
    kernel: String,
    rustc: String,
    go: String,
    peers: String,
    date: String,
}

fn describe_machine(root: &Path, go_found: bool) -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|line| line.strip_prefix("model name")?.split(':').nth(1))
        .map_or_else(
            || "unknown (no model name in /proc/cpuinfo)".into(),
            |model| model.trim().to_string(),
        );
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").map_or_else(
        |_| "unknown".into(),
        |release| format!("Linux {}", release.trim()),
    );
    let version_of = |program: &str, argument: &str| {
        process::capture_stdout(Command::new(program).arg(argument))
            .map_or_else(|_| "unknown".into(), |text| text.trim().to_string())
    };
    let lock =
        std::fs::read_to_string(root.join("crates/goro-bench/Cargo.lock")).unwrap_or_default();
    let peers = ["corosensei", "generator", "context", "may", "tokio"]
        .iter()
        .map(|name| format!("{name} {}", locked_version(&lock, name)))
        .collect::<Vec<_>>()
        .join(", ");
    Machine {
        cpu,
        cpus: thread::available_parallelism().map_or(1, |count| count.get()),
        kernel,
        rustc: version_of("rustc", "--version"),
        go: if go_found {
            version_of("go", "version")
        } else {
            GO_MISSING.into()
        },
        peers,
        date: version_of("date", "-u").replace("  ", " "),
    }
}

/// Returns the version of package `name` in the text of a Cargo.lock.
fn locked_version(lock: &str, name: &str) -> String {
    let header = format!("name = \"{name}\"");
    let mut lines = lock.lines();
    while let Some(line) = lines.next() {
        if line == header
            && let Some(version) = lines
                .next()
                .and_then(|line| line.strip_prefix("version = "))
        {
            return version.trim_matches('"').to_string();
        }
    }
    "unknown".into()
}

/// Formats a figure with 3 significant digits, or as a whole number from 1000 up.
fn format_value(value: f64) -> String {
    let magnitude = value.abs();
    if magnitude >= 1000.0 {
        group_digits(value)
    } else if magnitude >= 100.0 {
        format!("{value:.0}")
    } else if magnitude >= 10.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.2}")
    }
}

/// Formats `value` rounded to a whole number with commas between groups of 3 digits.
fn group_digits(value: f64) -> String {
    let digits = format!("{:.0}", value.abs());
    let mut grouped = String::new();
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    if value < 0.0 && digits != "0" {
        grouped.insert(0, '-');
    }
    grouped
}

/// goro's cost divided by the peer's for the section's primary metric: above 1 means goro
/// is slower or larger. For a throughput (higher is better) it is the peer's figure over
/// goro's, so the direction stays the same.
fn cost_ratio(section: &Section, goro: &Outcome, peer: &Outcome) -> Option<f64> {
    let value = |outcome: &Outcome| match outcome {
        Outcome::Measured(summaries) => summaries.get(section.primary).map(|s| s.median),
        _ => None,
    };
    let (goro, peer) = (value(goro)?, value(peer)?);
    let ratio = if section.higher_is_better {
        peer / goro
    } else {
        goro / peer
    };
    (ratio.is_finite() && ratio > 0.0).then_some(ratio)
}

/// Checks one goro row against the section's targets; returns one sentence per target.
fn check_targets(section: &Section, rows: &[(&Row, &Outcome)], goro: &Outcome) -> Vec<String> {
    let mut verdicts = Vec::new();
    for target in &section.targets {
        let verdict = match (target, goro) {
            (_, Outcome::Failed(reason)) => format!("missed: the run failed ({reason})"),
            (_, Outcome::Skipped(reason)) => format!("not run ({reason})"),
            (Target::AtMost { metric, limit }, Outcome::Measured(summaries)) => {
                match summaries.get(*metric) {
                    Some(summary) => {
                        let unit = &summary.unit;
                        if summary.median <= *limit {
                            format!(
                                "{metric} {} {unit}: met (target at most {} {unit})",
                                format_value(summary.median),
                                format_value(*limit)
                            )
                        } else {
                            format!(
                                "{metric} {} {unit}: **missed** by {} {unit}, {:.1}x the \
                                 target of {} {unit}",
                                format_value(summary.median),
                                format_value(summary.median - limit),
                                summary.median / limit,
                                format_value(*limit)
                            )
                        }
                    }
                    None => format!("{metric}: not measured"),
                }
            }
            (Target::RatioAtMost { peer, limit }, Outcome::Measured(_)) => {
                let peer_outcome = rows
                    .iter()
                    .find(|(row, _)| row.label == *peer)
                    .map(|(_, outcome)| *outcome);
                match peer_outcome.and_then(|outcome| cost_ratio(section, goro, outcome)) {
                    Some(ratio) if ratio <= *limit => {
                        format!("{ratio:.2}x {peer}: met (target at most {limit}x)")
                    }
                    Some(ratio) => format!(
                        "{ratio:.2}x {peer}: **missed**, {:.1}x the target of at most {limit}x",
                        ratio / limit
                    ),
                    None => format!("no ratio to {peer}: it was not measured"),
                }
            }
        };
        verdicts.push(verdict);
    }
    verdicts
}

fn render_page(
    machine: &Machine,
    plan: Plan,
    elapsed: Duration,
    tools: &Tools,
    sections: &[Section],
    results: &[Vec<Outcome>],
) -> String {
    let mut page = String::new();
    let mode = if plan.quick {
        "cargo xtask bench --quick"
    } else {
        "cargo xtask bench"
    };
    let _ = writeln!(page, "# Benchmarks\n");
    let _ = writeln!(
        page,
        "Written by `{mode}` on {}, after {:.0} s of runs. Do not edit by hand: run it \
         again.\n",
        machine.date,
        elapsed.as_secs_f64()
    );
    let _ = writeln!(
        page,
        "**The machine is shared and noisy**: other jobs run on it at the same time, so a \
         figure can move by tens of percent between runs. Compare the ratios, which divide \
         figures measured minutes apart in the same run, more than the absolute figures.\n"
    );
    let _ = writeln!(page, "| | |\n|---|---|");
    let _ = writeln!(page, "| CPU | {} |", machine.cpu);
    let _ = writeln!(page, "| CPUs | {} |", machine.cpus);
    let _ = writeln!(page, "| kernel | {} |", machine.kernel);
    let _ = writeln!(page, "| rustc | {} |", machine.rustc);
    let _ = writeln!(page, "| Go | {} |", machine.go);
    let _ = writeln!(page, "| peer crates | {} |", machine.peers);
    let _ = writeln!(
        page,
        "| wrk | {} |\n",
        if tools.wrk {
            "installed"
        } else {
            "not installed"
        }
    );
    let _ = writeln!(
        page,
        "Each figure is the median of {} runs, each run a process of its own, with the min \
         and max of those runs. A ratio divides goro's median by the peer's: above 1 goro is \
         slower or uses more memory; for requests/s it divides the peer's figure by goro's, \
         so the direction is the same. {}\n",
        plan.runs,
        if plan.quick {
            "This is a `--quick` run: counts are smaller, wrk runs 5 s, and the \
             1,000,000-goroutine cases (spawn and RSS) are left out."
        } else {
            "This is a full run."
        }
    );
    let _ = writeln!(
        page,
        "![goro's cost relative to each peer](benchmarks.svg)\n"
    );
    for (section, outcomes) in sections.iter().zip(results) {
        render_section(&mut page, section, outcomes);
    }
    page
}

fn render_section(page: &mut String, section: &Section, outcomes: &[Outcome]) {
    let _ = writeln!(page, "## {}\n", section.title);
    let _ = writeln!(page, "{}\n", section.about);
    if !section.target_text.is_empty() {
        let _ = writeln!(page, "Target for goro: {}.\n", section.target_text);
    }
    let mut metric_names: Vec<(String, String)> = Vec::new();
    for outcome in outcomes {
        if let Outcome::Measured(summaries) = outcome {
            for (name, summary) in summaries {
                if !metric_names.iter().any(|(known, _)| known == name) {
                    metric_names.push((name.clone(), summary.unit.clone()));
                }
            }
        }
    }
    // The primary metric comes first.
    metric_names.sort_by_key(|(name, _)| name != section.primary);
    let mut header = String::from("| implementation |");
    let mut rule = String::from("|---|");
    for (name, unit) in &metric_names {
        let _ = write!(header, " {name} ({unit}), median | min | max |");
        rule.push_str("---:|---:|---:|");
    }
    let _ = writeln!(page, "{header}\n{rule}");
    for (row, outcome) in section.rows.iter().zip(outcomes) {
        let mut line = format!("| {} |", row.label);
        match outcome {
            Outcome::Measured(summaries) => {
                for (name, _) in &metric_names {
                    match summaries.get(name) {
                        Some(s) => {
                            let _ = write!(
                                line,
                                " {} | {} | {} |",
                                format_value(s.median),
                                format_value(s.min),
                                format_value(s.max)
                            );
                        }
                        None => line.push_str(" | | |"),
                    }
                }
            }
            Outcome::Failed(reason) => {
                let _ = write!(line, " failed: {} |", escape_cell(reason));
                line.push_str(&" |".repeat(metric_names.len().max(1) * 3 - 1));
            }
            Outcome::Skipped(reason) => {
                let _ = write!(line, " not run: {} |", escape_cell(reason));
                line.push_str(&" |".repeat(metric_names.len().max(1) * 3 - 1));
            }
        }
        let _ = writeln!(page, "{line}");
    }
    let _ = writeln!(page);

    let rows: Vec<(&Row, &Outcome)> = section.rows.iter().zip(outcomes).collect();
    let peers: Vec<&(&Row, &Outcome)> = rows.iter().filter(|(row, _)| !row.is_goro).collect();
    let goros: Vec<&(&Row, &Outcome)> = rows.iter().filter(|(row, _)| row.is_goro).collect();
    if !peers.is_empty() {
        let mut header = format!("| goro ÷ peer, {} |", section.primary);
        let mut rule = String::from("|---|");
        for (peer, _) in &peers {
            let _ = write!(header, " {} |", peer.label);
            rule.push_str("---:|");
        }
        let _ = writeln!(page, "{header}\n{rule}");
        for (goro, goro_outcome) in &goros {
            let mut line = format!("| {} |", goro.label);
            for (_, peer_outcome) in &peers {
                match cost_ratio(section, goro_outcome, peer_outcome) {
                    Some(ratio) => {
                        let _ = write!(line, " {ratio:.2}x |");
                    }
                    None => line.push_str(" n/a |"),
                }
            }
            let _ = writeln!(page, "{line}");
        }
        let _ = writeln!(page);
    }
    if !section.targets.is_empty() {
        for (goro, goro_outcome) in &goros {
            let verdicts = check_targets(section, &rows, goro_outcome).join("; ");
            let _ = writeln!(page, "- {}: {verdicts}", goro.label);
        }
        let _ = writeln!(page);
    }
}

fn escape_cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

/// Draws every goro ÷ peer ratio as a bar on a log scale around 1.
fn render_svg(sections: &[Section], results: &[Vec<Outcome>]) -> String {
    const LABEL_WIDTH: f64 = 430.0;
    const PIXELS_PER_DOUBLING: f64 = 36.0;
    const DOUBLINGS: f64 = 6.0;
    const ROW_HEIGHT: f64 = 18.0;
    let mut bars = Vec::new();
    for (section, outcomes) in sections.iter().zip(results) {
        let rows: Vec<(&Row, &Outcome)> = section.rows.iter().zip(outcomes).collect();
        for (goro, goro_outcome) in rows.iter().filter(|(row, _)| row.is_goro) {
            for (peer, peer_outcome) in rows.iter().filter(|(row, _)| !row.is_goro) {
                if let Some(ratio) = cost_ratio(section, goro_outcome, peer_outcome) {
                    let label = format!("{}: {} ÷ {}", section.title, goro.label, peer.label);
                    bars.push((label, ratio));
                }
            }
        }
    }
    let center = LABEL_WIDTH + DOUBLINGS * PIXELS_PER_DOUBLING;
    let width = center + DOUBLINGS * PIXELS_PER_DOUBLING + 70.0;
    let top = 40.0;
    let height = top + ROW_HEIGHT * bars.len() as f64 + 30.0;
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width:.0}\" height=\"{height:.0}\" \
         font-family=\"sans-serif\" font-size=\"11\">"
    );
    let _ = writeln!(svg, "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>");
    let _ = writeln!(
        svg,
        "<text x=\"8\" y=\"16\" font-size=\"13\" font-weight=\"bold\">goro's cost ÷ peer's \
         (log scale; left of 1x goro is faster or smaller, right of it slower or larger)</text>"
    );
    for doubling in -(DOUBLINGS as i32)..=(DOUBLINGS as i32) {
        let x = center + f64::from(doubling) * PIXELS_PER_DOUBLING;
        let label = if doubling >= 0 {
            format!("{}x", 1u64 << doubling)
        } else {
            format!("1/{}", 1u64 << -doubling)
        };
        let stroke = if doubling == 0 { "#000" } else { "#ddd" };
        let _ = writeln!(
            svg,
            "<line x1=\"{x:.1}\" y1=\"{:.0}\" x2=\"{x:.1}\" y2=\"{:.0}\" stroke=\"{stroke}\"/>\
             <text x=\"{x:.1}\" y=\"{:.0}\" text-anchor=\"middle\" fill=\"#555\">{label}</text>",
            top - 8.0,
            height - 24.0,
            top - 12.0
        );
    }
    for (index, (label, ratio)) in bars.iter().enumerate() {
        let y = top + ROW_HEIGHT * index as f64;
        let length = ratio.log2().clamp(-DOUBLINGS, DOUBLINGS) * PIXELS_PER_DOUBLING;
        let (x, bar_width, color) = if length >= 0.0 {
            (center, length, "#d9534f")
        } else {
            (center + length, -length, "#5cb85c")
        };
        let _ = writeln!(
            svg,
            "<text x=\"{:.0}\" y=\"{:.0}\" text-anchor=\"end\">{}</text>\
             <rect x=\"{x:.1}\" y=\"{:.0}\" width=\"{:.1}\" height=\"{:.0}\" fill=\"{color}\"/>\
             <text x=\"{:.0}\" y=\"{:.0}\">{ratio:.2}x</text>",
            LABEL_WIDTH - 6.0,
            y + 12.0,
            xml_escape(label),
            y + 3.0,
            bar_width.max(1.0),
            ROW_HEIGHT - 6.0,
            center + DOUBLINGS * PIXELS_PER_DOUBLING + 6.0,
            y + 12.0
        );
    }
    svg.push_str("</svg>\n");
    svg
}

fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_accepts_quick_only() {
        assert!(parse(&[]).unwrap() == Plan::new(false));
        assert!(parse(&["--quick".into()]).unwrap() == Plan::new(true));
        let message = parse(&["--fast".into()]).unwrap_err().to_string();
        assert!(message.contains("`--fast`"), "{message}");
    }

    #[test]
    fn metrics_parse_from_mixed_output() {
        let metrics = parse_metrics("hello\nmetric yield 12.5 ns\nmetric bad x ns\nmetric n 3\n");
        assert_eq!(
            metrics,
            vec![
                ("yield".to_string(), 12.5, "ns".to_string()),
                ("n".to_string(), 3.0, String::new())
            ]
        );
    }

    #[test]
    fn wrk_output_parses() {
        let stdout = "\
Running 5s test @ http://127.0.0.1:1/x
  Latency Distribution
     50%  610.00us
     99%    1.50ms
Requests/sec:  81234.56
Transfer/sec:     10.00MB
";
        let metrics = parse_wrk(stdout).unwrap();
        assert_eq!(
            metrics[0],
            ("latency_p50".to_string(), 0.61, "ms".to_string())
        );
        assert_eq!(
            metrics[1],
            ("latency_p99".to_string(), 1.5, "ms".to_string())
        );
        assert_eq!(
            metrics[2],
            ("requests".to_string(), 81234.56, "req/s".to_string())
        );
        assert!(parse_wrk("Requests/sec: 5\nNon-2xx or 3xx responses: 7\n").is_err());
        assert!(parse_wrk("nothing").is_err());
    }

    #[test]
    fn median_of_even_and_odd_counts() {
        assert_eq!(median(&[1.0, 2.0, 10.0]), 2.0);
        assert_eq!(median(&[1.0, 2.0, 4.0, 10.0]), 3.0);
    }

    #[test]
    fn values_format_with_groups() {
        assert_eq!(group_digits(1_234_567.4), "1,234,567");
        assert_eq!(group_digits(-1000.0), "-1,000");
        assert_eq!(format_value(12.345), "12.3");
        assert_eq!(format_value(0.5), "0.50");
    }

    #[test]
    fn locked_version_reads_cargo_lock() {
        let lock = "[[package]]\nname = \"may\"\nversion = \"0.3.51\"\n";
        assert_eq!(locked_version(lock, "may"), "0.3.51");
        assert_eq!(locked_version(lock, "tokio"), "unknown");
    }

    #[test]
    fn targets_report_misses_with_margin() {
        let section = yield_section(Plan::new(true));
        let mut summaries = BTreeMap::new();
        summaries.insert(
            "yield".to_string(),
            Summary {
                median: 50.0,
                min: 40.0,
                max: 60.0,
                unit: "ns".into(),
            },
        );
        let verdicts = check_targets(&section, &[], &Outcome::Measured(summaries));
        assert_eq!(verdicts.len(), 1);
        assert!(
            verdicts[0].contains("**missed** by 30.0 ns, 2.5x"),
            "{}",
            verdicts[0]
        );
    }

    #[test]
    fn ratio_targets_report_misses_as_a_factor_of_the_target() {
        let section = switch_section(Plan::new(true));
        let measured = |median: f64| {
            let mut summaries = BTreeMap::new();
            summaries.insert(
                "round_trip".to_string(),
                Summary {
                    median,
                    min: median,
                    max: median,
                    unit: "ns".into(),
                },
            );
            Outcome::Measured(summaries)
        };
        let peer_row = section
            .rows
            .iter()
            .find(|row| row.label == "corosensei")
            .expect("the switch section has a corosensei row");
        let peer = measured(4.0);
        let verdicts = check_targets(&section, &[(peer_row, &peer)], &measured(12.0));
        assert_eq!(verdicts.len(), 1);
        assert!(
            verdicts[0].contains("3.00x corosensei: **missed**, 2.5x the target of at most 1.2x"),
            "{}",
            verdicts[0]
        );
    }
}
