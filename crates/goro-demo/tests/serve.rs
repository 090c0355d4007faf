//! End-to-end tests of `goro-demo serve`, with curl, raw sockets and wrk, on loopback only.
//!
//! Each test builds a site under `std::env::temp_dir()` and starts the built binary on port 0,
//! through the words of `GORO_TEST_RUNNER` when set (for QEMU user mode). It reads the chosen
//! port from the start line, and kills the server when the test ends, also when it fails.
//! curl and wrk are Debian packages that `cargo xtask setup` installs.

use std::ffi::OsStr;
use std::fs;
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// Time after which a server start, a request or a stop counts as hung. Far above any expected
/// time, also under QEMU; it only turns a hang into a failure.
const WATCHDOG: Duration = Duration::from_secs(300);

/// Contents of the site's index.html.
const INDEX: &[u8] = b"<!doctype html>\n<title>goro</title>\n<p>served by goro-demo</p>\n";

/// Contents of the file outside the served directory, which no response may contain.
const SECRET: &[u8] = b"this file is outside the served directory\n";

/// A served directory `www` and a sibling `outside`, under a fresh temporary directory that is
/// removed on drop.
///
/// `www` contains `index.html`, `all-bytes.bin` (every byte value), `a b%.txt`, `sub/index.html`,
/// an empty directory `empty`, and symbolic links: `escape` to the file outside, `escape-dir`
/// to the outside directory, and `inside-link` to `index.html`.
struct Site {
    base: PathBuf,
    www: PathBuf,
}

impl Site {
    fn new(test: &str) -> Site {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        // Relaxed: the counter only makes names unique and orders nothing else.
        let serial = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("goro-demo-serve-{}-{serial}-{test}", std::process::id());
        let base = std::env::temp_dir().join(name);
        let www = base.join("www");
        fs::create_dir_all(www.join("sub")).unwrap();
        fs::create_dir_all(www.join("empty")).unwrap();
        fs::create_dir_all(base.join("outside")).unwrap();

        fs::write(www.join("index.html"), INDEX).unwrap();
        fs::write(www.join("all-bytes.bin"), all_bytes()).unwrap();
        fs::write(www.join("a b%.txt"), b"space and percent\n").unwrap();
        fs::write(www.join("sub/index.html"), b"<p>sub</p>\n").unwrap();
        fs::write(base.join("outside/secret.txt"), SECRET).unwrap();
        symlink(base.join("outside/secret.txt"), www.join("escape")).unwrap();
        symlink("../outside", www.join("escape-dir")).unwrap();
        symlink("index.html", www.join("inside-link")).unwrap();
        Site { base, www }
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        if let Err(err) = fs::remove_dir_all(&self.base) {
            eprintln!("failed to remove {}: {err}", self.base.display());
        }
    }
}

/// Returns every byte value, four times, in an unsorted order.
fn all_bytes() -> Vec<u8> {
    (0..1024u32).map(|i| (i * 97 % 256) as u8).collect()
}

/// Returns `len` bytes from a fixed pseudo-random sequence (xorshift).
fn random_bytes(len: usize, mut seed: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 24) as u8
        })
        .collect()
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

/// Returns whether the tests run under an emulator (QEMU user mode).
fn emulated() -> bool {
    std::env::var("GORO_TEST_RUNNER").is_ok_and(|runner| !runner.trim().is_empty())
}

/// A running `goro-demo serve`, killed on drop unless [`ServerProcess::stop`] stopped it.
struct ServerProcess {
    child: Option<Child>,
    port: u16,
    /// Standard error so far, appended to by a reader thread.
    log: Arc<Mutex<String>>,
    reader: Option<thread::JoinHandle<()>>,
}

impl ServerProcess {
    /// Starts the server on `dir` and a free loopback port, with `options`, and waits for its
    /// start line.
    fn start(dir: &Path, options: &[&str]) -> ServerProcess {
        let mut command = goro_demo(["serve".as_ref(), dir.as_os_str()]);
        command.args(["--addr", "127.0.0.1:0"]).args(options);
        let description = format!("{command:?}");
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|err| panic!("failed to start {description}: {err}"));

        let log = Arc::new(Mutex::new(String::new()));
        let (port_sender, port_receiver) = mpsc::channel();
        let stderr = BufReader::new(child.stderr.take().unwrap());
        let reader_log = Arc::clone(&log);
        let reader = thread::spawn(move || {
            for line in stderr.lines() {
                let Ok(line) = line else { break };
                if let Some(port) = listening_port(&line) {
                    let _ = port_sender.send(port);
                }
                let mut log = reader_log.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        let mut server = ServerProcess {
            child: Some(child),
            port: 0,
            log,
            reader: Some(reader),
        };
        // Under QEMU, a fork of the emulator that hangs before it can exec prints nothing. A
        // CI run caught one stuck in glib's slice allocator, which `G_SLICE=always-malloc`
        // prevents (see docs/testing.md). The process report below shows whether a hang is in
        // such a fork, before the server binary ran, or in the server, and on which threads.
        match port_receiver.recv_timeout(WATCHDOG) {
            Ok(port) => server.port = port,
            Err(_) => panic!(
                "{description} printed no start line within {WATCHDOG:?}; its log:\n{}\n{}",
                server.log(),
                process_report(server.child.as_ref().unwrap().id())
            ),
        }
        server
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn connect(&self) -> RawConnection {
        RawConnection::open(self.port)
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Sends `signal` (`TERM` or `INT`) and waits for the server to exit. Returns its exit
    /// status and whole log.
    fn stop(mut self, signal: &str) -> (ExitStatus, String) {
        let mut child = self.child.take().unwrap();
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(child.id().to_string())
            .status()
            .expect("failed to run kill");
        assert!(status.success(), "kill -{signal} failed");

        let start = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if start.elapsed() > WATCHDOG {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "the server still ran {WATCHDOG:?} after SIG{signal}; its log:\n{}",
                    self.log()
                );
            }
            thread::sleep(Duration::from_millis(20));
        };
        self.reader.take().unwrap().join().unwrap();
        (status, self.log())
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
        if thread::panicking() {
            eprintln!("server log:\n{}", self.log());
        }
    }
}

/// Describes process `pid` from /proc for a hang report: its command line, which shows
/// whether it got as far as executing the server, and each thread's name, state and kernel
/// wait channel.
fn process_report(pid: u32) -> String {
    let dir = PathBuf::from(format!("/proc/{pid}"));
    let cmdline = fs::read(dir.join("cmdline"))
        .map(|bytes| String::from_utf8_lossy(&bytes).replace('\0', " "))
        .unwrap_or_else(|error| format!("unreadable: {error}"));
    let mut report = format!("process {pid}: {cmdline}\n");
    let mut tasks: Vec<PathBuf> = match fs::read_dir(dir.join("task")) {
        Ok(entries) => entries
            .filter_map(|entry| Some(entry.ok()?.path()))
            .collect(),
        Err(error) => return report + &format!("its threads are unreadable: {error}\n"),
    };
    tasks.sort();
    for task in tasks {
        let read = |name: &str| fs::read_to_string(task.join(name)).unwrap_or_else(|_| "?".into());
        // The state is the field after the parenthesized name in `stat`.
        let stat = read("stat");
        let state = stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .split_whitespace()
            .next();
        report += &format!(
            "  thread {}: {} state {} waiting in {}\n",
            task.file_name().unwrap_or_default().to_string_lossy(),
            read("comm").trim(),
            state.unwrap_or("?"),
            read("wchan").trim()
        );
    }
    report
}

/// Returns the port of a `listening on http://127.0.0.1:PORT/` log line.
fn listening_port(line: &str) -> Option<u16> {
    let after = line.split("listening on http://127.0.0.1:").nth(1)?;
    after.split('/').next()?.parse().ok()
}

/// Runs curl with `args` and returns its output, failing with a clear message if curl is
/// missing.
fn curl(args: &[&str]) -> Output {
    let output = Command::new("curl")
        .args(["--silent", "--show-error", "--max-time", "300"])
        .args(args)
        .stdin(Stdio::null())
        .output();
    match output {
        Ok(output) => output,
        Err(err) if err.kind() == ErrorKind::NotFound => {
            panic!("curl is missing: install it with `cargo xtask setup` or `apt-get install curl`")
        }
        Err(err) => panic!("failed to run curl: {err}"),
    }
}

/// Returns the body of a GET of `url`, failing the test unless the status is 200.
fn get(url: &str) -> Vec<u8> {
    let output = curl(&["--fail", url]);
    assert!(
        output.status.success(),
        "curl {url} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

/// Returns the status code of a request to `url`, with the extra curl `args` before it.
fn status_of(args: &[&str], url: &str) -> String {
    let mut all = vec!["--output", "/dev/null", "--write-out", "%{http_code}"];
    all.extend_from_slice(args);
    all.push(url);
    let output = curl(&all);
    assert!(
        output.status.success(),
        "curl {all:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// Returns the response head of a request to `url`, with the extra curl `args` before it.
fn head_of(args: &[&str], url: &str) -> String {
    let mut all = vec!["--output", "/dev/null", "--dump-header", "-"];
    all.extend_from_slice(args);
    all.push(url);
    let output = curl(&all);
    assert!(output.status.success(), "curl {all:?} failed");
    String::from_utf8(output.stdout).unwrap()
}

/// A client connection that writes raw bytes and reads responses by their Content-Length.
struct RawConnection {
    stream: TcpStream,
    buffered: Vec<u8>,
}

/// A response read by [`RawConnection::read_response`].
struct Response {
    /// Status line and header fields, without the blank line.
    head: String,
    body: Vec<u8>,
}

impl Response {
    fn status_line(&self) -> &str {
        self.head.lines().next().unwrap_or_default()
    }

    /// Returns the value of header field `name` (case-insensitive), if present.
    fn field(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|line| {
            let (field, value) = line.split_once(':')?;
            field.eq_ignore_ascii_case(name).then(|| value.trim())
        })
    }
}

impl RawConnection {
    fn open(port: u16) -> RawConnection {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("failed to connect");
        stream.set_read_timeout(Some(WATCHDOG)).unwrap();
        stream.set_write_timeout(Some(WATCHDOG)).unwrap();
        RawConnection {
            stream,
            buffered: Vec::new(),
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("failed to send");
    }

    /// Reads more bytes into the buffer. Returns false at the end of the stream.
    fn fill(&mut self) -> bool {
        let mut chunk = [0; 64 * 1024];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => return false,
                Ok(count) => {
                    self.buffered.extend_from_slice(&chunk[..count]);
                    return true;
                }
                // A signal for another test's child (SIGCHLD, say) interrupted the read.
                Err(err) if err.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(err) => panic!("failed to read a response: {err}"),
            }
        }
    }

    /// Reads one response. `head_request` is whether the request was HEAD, whose response
    /// has no body.
    fn read_response(&mut self, head_request: bool) -> Response {
        let head_end = loop {
            if let Some(end) = self.buffered.windows(4).position(|w| w == b"\r\n\r\n") {
                break end;
            }
            assert!(
                self.fill(),
                "the connection closed before a complete response head: {:?}",
                String::from_utf8_lossy(&self.buffered)
            );
        };
        let head = String::from_utf8(self.buffered[..head_end].to_vec()).unwrap();
        self.buffered.drain(..head_end + 4);
        let mut response = Response {
            head,
            body: Vec::new(),
        };
        let length: usize = match (head_request, response.field("content-length")) {
            (true, _) => 0,
            (false, Some(length)) => length.parse().unwrap(),
            (false, None) => panic!("no Content-Length in {:?}", response.head),
        };
        while self.buffered.len() < length {
            assert!(self.fill(), "the connection closed in the middle of a body");
        }
        response.body = self.buffered.drain(..length).collect();
        response
    }

    /// Returns whether the server closed the connection with nothing more sent.
    fn closed_by_server(&mut self) -> bool {
        self.buffered.is_empty() && !self.fill()
    }
}

/// Checks that every file of the site comes back byte for byte with the server `options`.
fn check_files_served(options: &[&str]) {
    let site = Site::new("files");
    // Several MiB, and not a multiple of the server's 64 KiB chunks.
    let big = random_bytes(5 * 1024 * 1024 + 12_345, 0x9e37_79b9_7f4a_7c15);
    fs::write(site.www.join("big.bin"), &big).unwrap();
    let server = ServerProcess::start(&site.www, options);

    assert_eq!(get(&server.url("/index.html")), INDEX);
    assert_eq!(get(&server.url("/")), INDEX);
    assert_eq!(get(&server.url("/all-bytes.bin")), all_bytes());
    assert_eq!(get(&server.url("/a%20b%25.txt")), b"space and percent\n");
    assert_eq!(get(&server.url("/sub/")), b"<p>sub</p>\n");
    assert_eq!(get(&server.url("/index.html?query=ignored")), INDEX);
    let served_big = get(&server.url("/big.bin"));
    assert_eq!(served_big.len(), big.len());
    assert!(served_big == big, "big.bin differs");
}

#[test]
fn files_served_fifo() {
    check_files_served(&["--scheduler", "fifo", "--procs", "2"]);
}

#[test]
fn files_served_steal() {
    check_files_served(&["--scheduler", "steal", "--procs", "2"]);
}

#[test]
fn files_served_one_proc() {
    check_files_served(&["--procs", "1"]);
}

#[test]
fn files_served_threads() {
    check_files_served(&["--threads"]);
}

#[test]
fn status_codes() {
    let site = Site::new("status");
    let server = ServerProcess::start(&site.www, &[]);
    let cases: &[(&[&str], &str, &str)] = &[
        (&[], "/index.html", "200"),
        (&["--head"], "/index.html", "200"),
        (&[], "/missing.html", "404"),
        (&[], "/index.html/below", "404"),
        (&[], "/sub", "301"),
        (&[], "/empty/", "403"),
        (
            &["--request", "POST", "--data", "x=1"],
            "/index.html",
            "405",
        ),
        (&["--request", "DELETE"], "/index.html", "405"),
        (&["--request", "OPTIONS"], "/", "405"),
    ];
    for &(args, path, expected) in cases {
        let status = status_of(args, &server.url(path));
        assert_eq!(status, expected, "curl {args:?} {path}");
    }
}

#[test]
fn response_header_fields() {
    let site = Site::new("fields");
    let server = ServerProcess::start(&site.www, &[]);

    let head = head_of(&[], &server.url("/index.html"));
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(
        head.contains("\r\nContent-Type: text/html; charset=utf-8\r\n"),
        "{head}"
    );
    let length = format!("\r\nContent-Length: {}\r\n", INDEX.len());
    assert!(head.contains(&length), "{head}");
    assert!(head.contains("\r\nDate: "), "{head}");

    let head = head_of(&[], &server.url("/all-bytes.bin"));
    assert!(
        head.contains("\r\nContent-Type: application/octet-stream\r\n"),
        "{head}"
    );
    assert!(head.contains("\r\nContent-Length: 1024\r\n"), "{head}");

    let head = head_of(&["--request", "PUT"], &server.url("/index.html"));
    assert!(
        head.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"),
        "{head}"
    );
    assert!(head.contains("\r\nAllow: GET, HEAD\r\n"), "{head}");

    let head = head_of(&[], &server.url("/sub?x=1"));
    assert!(
        head.starts_with("HTTP/1.1 301 Moved Permanently\r\n"),
        "{head}"
    );
    assert!(head.contains("\r\nLocation: /sub/\r\n"), "{head}");
}

#[test]
fn malformed_requests_get_400() {
    let site = Site::new("malformed");
    let server = ServerProcess::start(&site.www, &[]);
    let long_field = format!("X-Long: {}\r\n", "a".repeat(20 * 1024));
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("garbage", b"garbage\r\n\r\n".to_vec()),
        ("binary", b"\x00\x01\x02\xff\xfe\r\n\r\n".to_vec()),
        ("no version", b"GET /\r\n\r\n".to_vec()),
        ("HTTP/2.0", b"GET / HTTP/2.0\r\nHost: t\r\n\r\n".to_vec()),
        ("HTTP/0.9 style", b"GET / HTTP/0.9\r\n\r\n".to_vec()),
        ("missing Host", b"GET / HTTP/1.1\r\n\r\n".to_vec()),
        (
            "no colon",
            b"GET / HTTP/1.1\r\nHost: t\r\nBroken\r\n\r\n".to_vec(),
        ),
        (
            "space before colon",
            b"GET / HTTP/1.1\r\nHost : t\r\n\r\n".to_vec(),
        ),
        (
            "line folding",
            b"GET / HTTP/1.1\r\nHost: t\r\n x\r\n\r\n".to_vec(),
        ),
        (
            "header over 16 KiB",
            format!("GET / HTTP/1.1\r\nHost: t\r\n{long_field}\r\n").into_bytes(),
        ),
        (
            "NUL in path",
            b"GET /index.html%00 HTTP/1.1\r\nHost: t\r\n\r\n".to_vec(),
        ),
        (
            "bad escape",
            b"GET /%zz HTTP/1.1\r\nHost: t\r\n\r\n".to_vec(),
        ),
    ];
    for (name, request) in cases {
        let mut connection = server.connect();
        connection.send(&request);
        let response = connection.read_response(false);
        assert_eq!(response.status_line(), "HTTP/1.1 400 Bad Request", "{name}");
        let body = String::from_utf8(response.body).unwrap();
        assert!(body.starts_with("400 Bad Request"), "{name}: {body}");
    }
}

#[test]
fn malformed_request_closes_connection() {
    let site = Site::new("malformed-close");
    let server = ServerProcess::start(&site.www, &[]);
    let mut connection = server.connect();
    connection.send(b"garbage\r\n\r\n");
    let response = connection.read_response(false);
    assert_eq!(response.field("connection"), Some("close"));
    assert!(connection.closed_by_server(), "the connection stayed open");
}

#[test]
fn head_sends_no_body() {
    let site = Site::new("head");
    let server = ServerProcess::start(&site.www, &[]);
    let mut connection = server.connect();
    // Pipelined: if the HEAD response carried a body, it would stand where the second
    // status line must be.
    connection.send(
        b"HEAD /all-bytes.bin HTTP/1.1\r\nHost: t\r\n\r\n\
          GET /index.html HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    let head = connection.read_response(true);
    assert_eq!(head.status_line(), "HTTP/1.1 200 OK");
    assert_eq!(head.field("content-length"), Some("1024"));
    let get = connection.read_response(false);
    assert_eq!(get.status_line(), "HTTP/1.1 200 OK");
    assert_eq!(get.body, INDEX);
    assert!(
        connection.closed_by_server(),
        "bytes after the last response"
    );
}

#[test]
fn keep_alive_reuses_connection() {
    let site = Site::new("keep-alive");
    let server = ServerProcess::start(&site.www, &[]);
    let first = server.url("/index.html");
    let second = server.url("/all-bytes.bin");
    let output = curl(&[
        "--verbose",
        "--output",
        "/dev/null",
        "--output",
        "/dev/null",
        "--write-out",
        "%{http_code} %{num_connects}\n",
        &first,
        &second,
    ]);
    assert!(output.status.success());
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert_eq!(
        stdout, "200 1\n200 0\n",
        "the second request opened a connection"
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("Re-using existing connection"), "{stderr}");

    let (status, log) = server.stop("TERM");
    assert!(status.success(), "{status}: {log}");
    assert!(
        log.contains("connections: 1, requests: 2, errors: 0"),
        "{log}"
    );
}

#[test]
fn http10_closes_unless_keep_alive() {
    let site = Site::new("http10");
    let server = ServerProcess::start(&site.www, &[]);

    let mut connection = server.connect();
    connection.send(b"GET /index.html HTTP/1.0\r\n\r\n");
    let response = connection.read_response(false);
    assert_eq!(response.status_line(), "HTTP/1.1 200 OK");
    assert_eq!(response.field("connection"), Some("close"));
    assert_eq!(response.body, INDEX);
    assert!(
        connection.closed_by_server(),
        "HTTP/1.0 connection stayed open"
    );

    let mut connection = server.connect();
    for _ in 0..2 {
        connection.send(b"GET /index.html HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
        let response = connection.read_response(false);
        assert_eq!(response.field("connection"), Some("keep-alive"));
        assert_eq!(response.body, INDEX);
    }
}

#[test]
fn connection_close_honoured() {
    let site = Site::new("close");
    let server = ServerProcess::start(&site.www, &[]);
    let mut connection = server.connect();
    connection.send(b"GET /index.html HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    let response = connection.read_response(false);
    assert_eq!(response.field("connection"), Some("close"));
    assert_eq!(response.body, INDEX);
    assert!(connection.closed_by_server(), "the connection stayed open");
}

#[test]
fn request_body_skipped_on_keep_alive() {
    let site = Site::new("body");
    let server = ServerProcess::start(&site.www, &[]);
    let mut connection = server.connect();
    // The body looks like a request, so a server that parsed it as one would respond twice.
    let body = "GET /all-bytes.bin HTTP/1.1\r\nHost: t\r\n\r\n";
    let requests = format!(
        "POST /index.html HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n{body}\
         GET /index.html HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        body.len()
    );
    connection.send(requests.as_bytes());
    let rejected = connection.read_response(false);
    assert_eq!(rejected.status_line(), "HTTP/1.1 405 Method Not Allowed");
    assert_eq!(rejected.field("connection"), None);
    let next = connection.read_response(false);
    assert_eq!(next.status_line(), "HTTP/1.1 200 OK");
    assert_eq!(next.body, INDEX);
    assert!(
        connection.closed_by_server(),
        "bytes after the last response"
    );
}

#[test]
fn dot_dot_paths_rejected() {
    let site = Site::new("dot-dot");
    let server = ServerProcess::start(&site.www, &[]);
    let paths = [
        "/../outside/secret.txt",
        "/sub/../../outside/secret.txt",
        "/%2e%2e/outside/secret.txt",
        "/%2E%2E%2Foutside%2Fsecret.txt",
        "/sub/%2e%2e/index.html",
        "/..",
    ];
    for path in paths {
        let url = server.url(path);
        let output = curl(&["--path-as-is", "--write-out", "\n%{http_code}", &url]);
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(stdout.ends_with("\n400"), "{path}: {stdout}");
        assert!(
            !stdout.contains("outside the served"),
            "{path} leaked the secret"
        );
    }

    // Absolute paths and absolute-form targets are resolved inside the served directory.
    let mut connection = server.connect();
    connection.send(b"GET //outside/secret.txt HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(
        connection.read_response(false).status_line(),
        "HTTP/1.1 404 Not Found"
    );
    connection.send(b"GET http://t/../outside/secret.txt HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(
        connection.read_response(false).status_line(),
        "HTTP/1.1 400 Bad Request"
    );
    connection.send(b"GET http://t/index.html HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(connection.read_response(false).body, INDEX);
}

#[test]
fn symlink_escape_rejected() {
    let site = Site::new("symlink");
    let server = ServerProcess::start(&site.www, &[]);
    for path in ["/escape", "/escape-dir/secret.txt", "/escape-dir/"] {
        let url = server.url(path);
        let output = curl(&["--write-out", "\n%{http_code}", &url]);
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(stdout.ends_with("\n403"), "{path}: {stdout}");
        assert!(
            !stdout.contains("outside the served"),
            "{path} leaked the secret"
        );
    }
    assert_eq!(get(&server.url("/inside-link")), INDEX);

    let (_, log) = server.stop("TERM");
    assert!(
        log.contains("rejected /escape: the path leads out of the served directory"),
        "{log}"
    );
}

#[test]
fn sigterm_stops_with_idle_connection() {
    let site = Site::new("sigterm");
    let server = ServerProcess::start(&site.www, &[]);
    // An idle keep-alive connection, which waits in a read when the signal comes.
    let mut connection = server.connect();
    connection.send(b"GET /index.html HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(connection.read_response(false).body, INDEX);

    let (status, log) = server.stop("TERM");
    assert!(status.success(), "{status}: {log}");
    assert!(log.contains("received SIGTERM; stopping"), "{log}");
    assert!(
        log.contains("connections: 1, requests: 1, errors: 0"),
        "{log}"
    );
    assert!(log.contains("goro-demo: run report"), "{log}");
    assert!(
        connection.closed_by_server(),
        "the idle connection stayed open"
    );
}

#[test]
fn sigint_stops_threads_server() {
    let site = Site::new("sigint");
    let server = ServerProcess::start(&site.www, &["--threads"]);
    let mut connection = server.connect();
    connection.send(b"GET /index.html HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(connection.read_response(false).body, INDEX);

    let (status, log) = server.stop("INT");
    assert!(status.success(), "{status}: {log}");
    assert!(log.contains("received SIGINT; stopping"), "{log}");
    assert!(
        log.contains("connections: 1, requests: 1, errors: 0"),
        "{log}"
    );
    assert!(connection.closed_by_server());
}

#[test]
fn verbose_logs_requests() {
    let site = Site::new("verbose");
    let server = ServerProcess::start(&site.www, &["--verbose"]);
    assert_eq!(get(&server.url("/index.html")), INDEX);
    assert_eq!(status_of(&[], &server.url("/missing")), "404");
    let (_, log) = server.stop("TERM");
    assert!(log.contains("GET /index.html 200"), "{log}");
    assert!(log.contains("GET /missing 404"), "{log}");
}

#[test]
fn quiet_log_omits_successful_requests() {
    let site = Site::new("quiet");
    let server = ServerProcess::start(&site.www, &[]);
    assert_eq!(get(&server.url("/index.html")), INDEX);
    let (_, log) = server.stop("TERM");
    assert!(!log.contains("/index.html"), "{log}");
}

/// Runs goro-demo with `args` to completion and returns its output, failing if it hangs.
fn run_to_exit(args: &[&str]) -> Output {
    let mut child = goro_demo(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("failed to start goro-demo");
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > WATCHDOG {
            let _ = child.kill();
            panic!("goro-demo {args:?} still ran after {WATCHDOG:?}");
        }
        thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn missing_directory_fails_to_start() {
    let output = run_to_exit(&["serve", "/nonexistent/www", "--addr", "127.0.0.1:0"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("/nonexistent/www: "), "{stderr}");
    assert!(stderr.contains("pass an existing directory"), "{stderr}");
}

#[test]
fn invalid_procs_is_usage_error() {
    let site = Site::new("procs");
    let www = site.www.to_str().unwrap();
    let output = run_to_exit(&["serve", www, "--addr", "127.0.0.1:0", "--procs", "0"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("invalid value for '--procs <N>'"),
        "{stderr}"
    );
    assert!(stderr.contains("Usage: goro-demo serve"), "{stderr}");
}

#[test]
fn port_in_use_fails_to_start() {
    let site = Site::new("in-use");
    let occupied = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = occupied.local_addr().unwrap().to_string();
    let www = site.www.to_str().unwrap();
    let output = run_to_exit(&["serve", www, "--addr", &addr]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("failed to listen on {addr}")),
        "{stderr}"
    );
    assert!(stderr.contains("port 0"), "{stderr}");
}

/// Figures of one wrk run.
#[derive(Debug)]
struct WrkResult {
    requests_per_second: f64,
    /// The average latency as wrk prints it, such as `1.25ms`.
    average_latency: String,
    /// The 99th percentile latency as wrk prints it.
    p99_latency: String,
    /// wrk's complete output.
    output: String,
}

/// Runs wrk against `url` with 100 connections on 2 threads for `seconds`, and fails the test
/// if any request failed: a socket error (connect, read, write, or no response within
/// `timeout_seconds`) or a status other than 2xx or 3xx.
fn run_wrk(url: &str, seconds: u32, timeout_seconds: u32) -> WrkResult {
    let output = Command::new("wrk")
        .args(["--threads", "2", "--connections", "100", "--latency"])
        .arg(format!("--duration={seconds}s"))
        .arg(format!("--timeout={timeout_seconds}s"))
        .arg(url)
        .stdin(Stdio::null())
        .output();
    let output = match output {
        Ok(output) => output,
        Err(err) if err.kind() == ErrorKind::NotFound => {
            panic!("wrk is missing: install it with `cargo xtask setup` or `apt-get install wrk`")
        }
        Err(err) => panic!("failed to run wrk: {err}"),
    };
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "wrk failed: {text}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // wrk prints these lines only when their counts are not zero.
    assert!(!text.contains("Socket errors"), "{text}");
    assert!(!text.contains("Non-2xx or 3xx responses"), "{text}");

    let field = |prefix: &str, index: usize| -> String {
        text.lines()
            .find_map(|line| line.trim().strip_prefix(prefix))
            .and_then(|rest| rest.split_whitespace().nth(index))
            .unwrap_or_else(|| panic!("no {prefix:?} line in wrk's output: {text}"))
            .to_owned()
    };
    let requests_per_second: f64 = field("Requests/sec:", 0).parse().unwrap();
    assert!(requests_per_second > 0.0, "{text}");
    WrkResult {
        requests_per_second,
        average_latency: field("Latency", 0),
        p99_latency: field("99%", 0),
        output: text,
    }
}

#[test]
fn wrk_load_no_errors() {
    if emulated() {
        println!(
            "skipped: under QEMU the server serves a few hundred requests per second and \
             accepts the 100 connections slowly, so this load test runs only natively"
        );
        return;
    }
    let site = Site::new("wrk");
    let server = ServerProcess::start(&site.www, &["--procs", "2"]);
    // A debug build that shares 2 cores with the other tests can take longer than wrk's
    // default timeout of 2 s for some requests. This test checks that every request gets a
    // good response, so its timeout is only a watchdog.
    let result = run_wrk(&server.url("/index.html"), 2, 60);
    println!("{}", result.output);
    let (status, log) = server.stop("TERM");
    assert!(status.success(), "{status}: {log}");
}

#[test]
#[ignore = "load test of 30 s; run it with the benchmarks (cargo test -- --ignored)"]
fn wrk_goroutines_versus_threads() {
    assert!(!emulated(), "the load comparison must run natively");
    let site = Site::new("bench");
    fs::write(site.www.join("4k.bin"), random_bytes(4096, 7)).unwrap();
    let configurations: [(&str, &[&str]); 3] = [
        ("goroutines, fifo", &["--scheduler", "fifo"]),
        ("goroutines, steal", &["--scheduler", "steal"]),
        ("threads", &["--threads"]),
    ];
    let mut rows = Vec::new();
    for (name, options) in configurations {
        let server = ServerProcess::start(&site.www, options);
        // wrk's default timeout: a response slower than 2 s counts as an error.
        let result = run_wrk(&server.url("/4k.bin"), 10, 2);
        let (status, log) = server.stop("TERM");
        assert!(status.success(), "{name}: {status}: {log}");
        rows.push((name, result));
    }
    println!("wrk, 2 threads, 100 connections, 10 s, GET of a 4 KiB file:");
    for (name, result) in &rows {
        println!(
            "  {name:<18} {:>10.0} requests/s  latency average {:>8}  p99 {:>8}",
            result.requests_per_second, result.average_latency, result.p99_latency
        );
    }
}

#[test]
fn trace_with_goro_trace_rejected() {
    let site = Site::new("trace-both");
    let env_trace = site.base.join("env-trace.json");
    let option_trace = site.base.join("option-trace.json");
    let mut command = goro_demo(["serve".as_ref(), site.www.as_os_str()]);
    command
        .args(["--addr", "127.0.0.1:0", "--trace"])
        .arg(&option_trace)
        .env("GORO_TRACE", &env_trace)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = command.spawn().unwrap();

    // The server must exit at once. Without the check it would serve until stopped.
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("goro-demo serve still running 30 s after it was started with both traces");
        }
        thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();

    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("GORO_TRACE also requests a trace"),
        "{stderr}"
    );
    assert!(!option_trace.exists(), "--trace created its file anyway");
}
