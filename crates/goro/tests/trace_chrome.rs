//! The Chrome trace JSON parses, every track is well nested, each goroutine's runs are
//! disjoint, and no goroutine runs on two Ps at once. `GORO_TRACE` writes it at drop.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::process::Command;
use std::time::Duration;

use common::{LIMIT, watchdog};
use goro::Runtime;

/// A JSON value, with numbers kept as their text so that times convert to nanoseconds
/// exactly.
#[derive(Clone, Debug, PartialEq)]
enum Json {
    Null,
    Bool(bool),
    Number(String),
    String(String),
    Array(Vec<Json>),
    Object(BTreeMap<String, Json>),
}

impl Json {
    fn get(&self, key: &str) -> Option<&Json> {
        match self {
            Json::Object(map) => map.get(key),
            _ => None,
        }
    }

    fn str(&self, key: &str) -> Option<&str> {
        match self.get(key)? {
            Json::String(text) => Some(text),
            _ => None,
        }
    }

    fn number(&self, key: &str) -> Option<&str> {
        match self.get(key)? {
            Json::Number(text) => Some(text),
            _ => None,
        }
    }

    /// Returns the time at `key`, in microseconds with up to three decimals, as nanoseconds.
    fn nanos(&self, key: &str) -> u64 {
        let text = self
            .number(key)
            .unwrap_or_else(|| panic!("{key} missing in {self:?}"));
        let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
        assert!(
            fraction.len() <= 3,
            "more than nanosecond precision: {text}"
        );
        let fraction = format!("{fraction:0<3}");
        whole.parse::<u64>().unwrap() * 1000 + fraction.parse::<u64>().unwrap()
    }
}

/// A small recursive-descent JSON parser: enough for the trace, strict about syntax.
struct Parser<'a> {
    text: &'a [u8],
    at: usize,
}

impl Parser<'_> {
    fn parse(text: &str) -> Json {
        let mut parser = Parser {
            text: text.as_bytes(),
            at: 0,
        };
        let value = parser.value();
        parser.skip_space();
        assert_eq!(
            parser.at,
            parser.text.len(),
            "trailing bytes after the JSON value"
        );
        value
    }

    fn skip_space(&mut self) {
        while self.at < self.text.len() && self.text[self.at].is_ascii_whitespace() {
            self.at += 1;
        }
    }

    fn expect(&mut self, byte: u8) {
        self.skip_space();
        assert_eq!(
            self.text.get(self.at),
            Some(&byte),
            "expected {:?} at byte {}",
            byte as char,
            self.at
        );
        self.at += 1;
    }

    fn peek(&mut self) -> u8 {
        self.skip_space();
        *self.text.get(self.at).expect("unexpected end of JSON")
    }

    fn value(&mut self) -> Json {
        match self.peek() {
            b'{' => {
                self.expect(b'{');
                let mut map = BTreeMap::new();
                if self.peek() == b'}' {
                    self.at += 1;
                    return Json::Object(map);
                }
                loop {
                    let key = self.string();
                    self.expect(b':');
                    let value = self.value();
                    assert!(
                        map.insert(key.clone(), value).is_none(),
                        "duplicate key {key}"
                    );
                    match self.peek() {
                        b',' => self.at += 1,
                        _ => break,
                    }
                }
                self.expect(b'}');
                Json::Object(map)
            }
            b'[' => {
                self.expect(b'[');
                let mut items = Vec::new();
                if self.peek() == b']' {
                    self.at += 1;
                    return Json::Array(items);
                }
                loop {
                    items.push(self.value());
                    match self.peek() {
                        b',' => self.at += 1,
                        _ => break,
                    }
                }
                self.expect(b']');
                Json::Array(items)
            }
            b'"' => Json::String(self.string()),
            b't' => self.word("true", Json::Bool(true)),
            b'f' => self.word("false", Json::Bool(false)),
            b'n' => self.word("null", Json::Null),
            _ => {
                let start = self.at;
                while self.at < self.text.len()
                    && matches!(
                        self.text[self.at],
                        b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9'
                    )
                {
                    self.at += 1;
                }
                let number = std::str::from_utf8(&self.text[start..self.at]).unwrap();
                assert!(
                    number.parse::<f64>().is_ok(),
                    "invalid number {number:?} at {start}"
                );
                Json::Number(number.to_string())
            }
        }
    }

    fn word(&mut self, word: &str, value: Json) -> Json {
        assert!(
            self.text[self.at..].starts_with(word.as_bytes()),
            "invalid literal at {}",
            self.at
        );
        self.at += word.len();
        value
    }

    fn string(&mut self) -> String {
        self.expect(b'"');
        let mut out = String::new();
        loop {
            let byte = self.text[self.at];
            self.at += 1;
            match byte {
                b'"' => return out,
                b'\\' => {
                    let escape = self.text[self.at];
                    self.at += 1;
                    match escape {
                        b'"' => out.push('"'),
                        b'\\' => out.push('\\'),
                        b'/' => out.push('/'),
                        b'n' => out.push('\n'),
                        b't' => out.push('\t'),
                        b'u' => {
                            let hex =
                                std::str::from_utf8(&self.text[self.at..self.at + 4]).unwrap();
                            out.push(
                                char::from_u32(u32::from_str_radix(hex, 16).unwrap()).unwrap(),
                            );
                            self.at += 4;
                        }
                        other => panic!("invalid escape \\{}", other as char),
                    }
                }
                byte if byte < 0x20 => panic!("control byte in a JSON string"),
                _ => {
                    // Copy the whole UTF-8 sequence that starts here.
                    let start = self.at - 1;
                    let length = match byte {
                        0xf0.. => 4,
                        0xe0.. => 3,
                        0xc0.. => 2,
                        _ => 1,
                    };
                    self.at = start + length;
                    out.push_str(std::str::from_utf8(&self.text[start..self.at]).unwrap());
                }
            }
        }
    }
}

/// A complete ("X") event.
#[derive(Debug)]
struct Slice {
    name: String,
    category: String,
    track: (u64, u64),
    start: u64,
    end: u64,
    goid: u64,
}

fn slices(trace: &Json) -> Vec<Slice> {
    let Some(Json::Array(events)) = trace.get("traceEvents") else {
        panic!("no traceEvents array");
    };
    events
        .iter()
        .filter(|event| event.str("ph") == Some("X"))
        .map(|event| {
            let start = event.nanos("ts");
            let args = event.get("args").expect("every slice has args");
            Slice {
                name: event.str("name").unwrap().to_string(),
                category: event.str("cat").unwrap().to_string(),
                track: (
                    event.number("pid").unwrap().parse().unwrap(),
                    event.number("tid").unwrap().parse().unwrap(),
                ),
                start,
                end: start + event.nanos("dur"),
                goid: args.number("goid").unwrap().parse().unwrap(),
            }
        })
        .collect()
}

/// Runs a workload of yields, sleeps and syscalls under the trace and returns its JSON.
fn traced_workload() -> String {
    let rt = Runtime::builder().procs(2).build().unwrap();
    let records = watchdog(LIMIT, move || {
        goro::trace::start().unwrap();
        rt.block_on(|| {
            let handles: Vec<_> = (0..100u64)
                .map(|i| {
                    goro::spawn(move || {
                        goro::yield_now();
                        if i % 3 == 0 {
                            goro::sleep(Duration::from_micros(200));
                        }
                        // SAFETY: getppid has no preconditions.
                        goro::blocking(|| unsafe { libc::getppid() });
                        if i % 5 == 0 {
                            goro::blocking_known(|| std::thread::sleep(Duration::from_micros(100)));
                        }
                        i
                    })
                    .unwrap()
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).sum::<u64>()
        })
        .unwrap();
        goro::trace::stop()
    });
    let mut out = Vec::new();
    goro::trace::write_chrome_json(&records, &mut out).unwrap();
    String::from_utf8(out).unwrap()
}

/// Checks that `slices` on one track nest: each either contains the next or ends before it.
fn assert_well_nested(track: (u64, u64), slices: &mut [&Slice]) {
    slices.sort_by_key(|s| (s.start, std::cmp::Reverse(s.end)));
    let mut open: Vec<&Slice> = Vec::new();
    for slice in slices.iter() {
        while open.last().is_some_and(|outer| outer.end <= slice.start) {
            open.pop();
        }
        if let Some(outer) = open.last() {
            assert!(
                slice.end <= outer.end,
                "track {track:?}: {} [{}, {}] overlaps {} [{}, {}] without nesting",
                slice.name,
                slice.start,
                slice.end,
                outer.name,
                outer.start,
                outer.end
            );
        }
        open.push(slice);
    }
}

#[test]
fn chrome_trace_is_consistent() {
    let json = traced_workload();
    let trace = Parser::parse(&json);
    let slices = slices(&trace);

    let mut by_track: HashMap<(u64, u64), Vec<&Slice>> = HashMap::new();
    for slice in &slices {
        by_track.entry(slice.track).or_default().push(slice);
    }
    for (track, track_slices) in &mut by_track {
        assert_well_nested(*track, track_slices);
    }

    // A P runs one goroutine at a time, and a goroutine runs on one P at a time.
    let runs: Vec<&Slice> = slices
        .iter()
        .filter(|s| s.category == "goroutine")
        .collect();
    for (track, track_slices) in &by_track {
        let mut on_p: Vec<&&Slice> = track_slices
            .iter()
            .filter(|s| s.category == "goroutine")
            .collect();
        on_p.sort_by_key(|s| s.start);
        for pair in on_p.windows(2) {
            assert!(
                pair[0].end <= pair[1].start,
                "P track {track:?} runs {} and {} at once",
                pair[0].name,
                pair[1].name
            );
        }
    }
    let mut by_goroutine: HashMap<u64, Vec<&Slice>> = HashMap::new();
    for run in &runs {
        assert_eq!(run.name, format!("g{}", run.goid));
        by_goroutine.entry(run.goid).or_default().push(run);
    }
    for (goid, goroutine_runs) in &mut by_goroutine {
        goroutine_runs.sort_by_key(|s| s.start);
        for pair in goroutine_runs.windows(2) {
            assert!(
                pair[0].end <= pair[1].start,
                "g{goid} runs on tracks {:?} and {:?} at once",
                pair[0].track,
                pair[1].track
            );
        }
    }
    assert_eq!(
        by_goroutine.len(),
        101,
        "every goroutine has at least one run"
    );
    assert!(
        slices.iter().any(|s| s.category == "syscall"),
        "syscalls have slices on the M tracks"
    );
    assert!(json.contains("\"name\":\"P0\""), "the P tracks are named");
    assert!(json.contains("\"P start\""), "P hand-overs are marked");
}

/// Runs `goro_trace_env_child` of this test binary in a child process with `GORO_TRACE`
/// set to `path`, under `GORO_TEST_RUNNER` when one is set.
fn run_trace_child(path: &std::path::Path) -> std::process::Output {
    let runner = std::env::var("GORO_TEST_RUNNER").unwrap_or_default();
    let mut words: Vec<String> = runner.split_whitespace().map(String::from).collect();
    words.push(std::env::current_exe().unwrap().display().to_string());
    Command::new(&words[0])
        .args(&words[1..])
        .args([
            "--exact",
            "goro_trace_env_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("GORO_TRACE", path)
        .env("GORO_TRACE_CHILD", "1")
        .output()
        .unwrap()
}

#[test]
fn goro_trace_env_writes_file_at_drop() {
    let path = std::env::temp_dir().join(format!("goro-trace-{}.json", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let output = run_trace_child(&path);
    assert!(
        output.status.success(),
        "child failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let json = std::fs::read_to_string(&path).expect("GORO_TRACE names the file written at drop");
    let _ = std::fs::remove_file(&path);
    let trace = Parser::parse(&json);
    let goroutines: Vec<u64> = slices(&trace)
        .iter()
        .filter(|s| s.category == "goroutine")
        .map(|s| s.goid)
        .collect();
    assert!(
        goroutines.len() >= 11,
        "the child's 11 goroutines ran: {goroutines:?}"
    );
}

#[test]
fn goro_trace_env_bad_path_reported_at_build() {
    let path = std::env::temp_dir()
        .join(format!("goro-trace-missing-dir-{}", std::process::id()))
        .join("trace.json");
    let output = run_trace_child(&path);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "child failed: {stderr}");

    let expected = format!(
        "goro: failed to create the trace file {} named by GORO_TRACE, so nothing is traced: ",
        path.display()
    );
    let error = stderr.find(&expected);
    let built = stderr.find(CHILD_BUILT);
    assert!(error.is_some(), "no error naming the path: {stderr}");
    assert!(built.is_some(), "the child built no runtime: {stderr}");
    assert!(
        error < built,
        "the error came after the runtime was built, not at build: {stderr}"
    );
    assert!(
        stderr.contains("Set GORO_TRACE to a writable file path"),
        "{stderr}"
    );
}

/// The line that `goro_trace_env_child` writes to standard error once its runtime is built.
const CHILD_BUILT: &str = "goro_trace_env_child: runtime built";

/// The child of the `goro_trace_env_*` tests: runs goroutines on a runtime built with
/// `GORO_TRACE` set. Does nothing unless `GORO_TRACE_CHILD` is set.
#[test]
fn goro_trace_env_child() {
    if std::env::var_os("GORO_TRACE_CHILD").is_none() {
        return;
    }
    let rt = Runtime::builder().procs(2).build().unwrap();
    eprintln!("{CHILD_BUILT}");
    rt.block_on(|| {
        let handles: Vec<_> = (0..10).map(|i| goro::spawn(move || i).unwrap()).collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum::<i32>()
    })
    .unwrap();
    drop(rt);
}
