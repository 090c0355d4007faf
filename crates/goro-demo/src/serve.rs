//! The serve job: an HTTP/1.1 server for the files of a directory, with one goroutine per
//! connection.
//!
//! One goroutine accepts connections and starts a goroutine for each. Every socket call goes
//! through `goro::net` and every file call through `goro::fs` (or `goro::blocking`), so a
//! goroutine that waits for a client or the disk hands its processor (P) to other goroutines.
//! `--threads` runs the same connection code on one OS thread per connection over `std::net`
//! and `std::fs` instead, so that benchmarks can compare the two.
//!
//! Stopping: SIGINT or SIGTERM sets a flag and connects to the listener, so that the accept
//! returns and the loop reads the flag. Connections finish the request they are answering and close;
//! idle ones notice the flag within [`connection::READ_POLL_INTERVAL`], because their reads
//! time out that often. The server waits [`SHUTDOWN_GRACE`] for them, then prints its counters
//! and the runtime's report. A second signal exits at once.
//!
//! NOTE: a goroutine blocked in a socket read holds an OS thread (an M) for as long as it
//! waits, because goro has no network poller. Open connections are therefore limited by the
//! runtime's thread limit (`goro::Builder::max_threads`, 10,000 by default), not only by file
//! descriptors.

mod connection;
mod files;
mod http;
mod log;
mod signal;
mod target;
mod time;

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use clap::ValueEnum;

use crate::cli::{self, ServeArgs};
use crate::runtime;
use connection::READ_POLL_INTERVAL;
use files::{GoroFiles, StdFiles};
use log::Log;
use signal::StopSignals;

/// Time the server waits after a stop signal for open connections to close before it exits
/// anyway. Idle connections close within `READ_POLL_INTERVAL`; this leaves time for responses
/// in progress, such as a large file on a slow link.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Shortest and longest pause after a failed accept, such as one for too many open files. The
/// pause doubles with each failure in a row, as in Go's `net/http` server.
const ACCEPT_BACKOFF: (Duration, Duration) = (Duration::from_millis(5), Duration::from_secs(1));

/// Exit status for a server that could not start, or that stopped without waiting for every
/// connection.
const EXIT_FAILURE: u8 = 1;

/// State shared by the accept loop, the connections and the signal thread.
#[derive(Debug)]
pub struct Server {
    /// The served directory, canonical: absolute and without symbolic links.
    root: PathBuf,
    log: Log,
    /// Set once when a stop signal arrives. Release on the store, Acquire on the loads: the
    /// signal thread stores it before its wake-up connection, for which the accept returns.
    stop: AtomicBool,
    /// Relaxed counters that order nothing.
    connections: AtomicU64,
    requests: AtomicU64,
    /// Number of connections accepted and not yet closed.
    open: Mutex<usize>,
    /// Notified when `open` drops to zero.
    all_closed: Condvar,
}

impl Server {
    fn new(root: PathBuf, log: Log) -> Server {
        Server {
            root,
            log,
            stop: AtomicBool::new(false),
            connections: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            open: Mutex::new(0),
            all_closed: Condvar::new(),
        }
    }

    /// Returns whether a stop signal has arrived.
    fn is_stopping(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    /// Sets the stop flag. Returns whether it was clear before.
    fn begin_stop(&self) -> bool {
        !self.stop.swap(true, Ordering::Release)
    }

    fn count_request(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a newly accepted connection as open until the returned guard drops.
    fn open_connection(self: &Arc<Server>) -> OpenConnection {
        self.connections.fetch_add(1, Ordering::Relaxed);
        *self.open.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        OpenConnection {
            server: Arc::clone(self),
        }
    }

    /// Waits up to `timeout` for every open connection to close. Returns how many are still
    /// open.
    fn wait_closed(&self, timeout: Duration) -> usize {
        let open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let (open, _) = self
            .all_closed
            .wait_timeout_while(open, timeout, |open| *open > 0)
            .unwrap_or_else(|e| e.into_inner());
        *open
    }

    /// Logs the stop line with the server's counters.
    fn log_stop(&self, uptime: Duration, still_open: usize) {
        self.log.flush_suppressed();
        if still_open > 0 {
            self.log.error(format_args!(
                "{still_open} connections were still open {SHUTDOWN_GRACE:?} after the stop \
                 signal; exiting without waiting for them"
            ));
        }
        self.log.info(format_args!(
            "stopped after {:.3} s; connections: {}, requests: {}, errors: {}",
            uptime.as_secs_f64(),
            self.connections.load(Ordering::Relaxed),
            self.requests.load(Ordering::Relaxed),
            self.log.errors()
        ));
    }
}

/// An accepted connection, counted as open until this guard drops.
struct OpenConnection {
    server: Arc<Server>,
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        let mut open = self.server.open.lock().unwrap_or_else(|e| e.into_inner());
        *open -= 1;
        if *open == 0 {
            self.server.all_closed.notify_all();
        }
    }
}

/// Runs `goro-demo serve` until a stop signal and returns its exit status.
pub fn run(args: ServeArgs) -> ExitCode {
    // Before any other thread starts, so that every thread inherits the blocked signals.
    let signals = match StopSignals::block() {
        Ok(signals) => signals,
        Err(error) => {
            eprintln!("goro-demo serve: failed to block SIGINT and SIGTERM: {error}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    let root = match canonical_root(args.dir.as_deref()) {
        Ok(root) => root,
        Err(message) => {
            eprintln!("goro-demo serve: {message}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    let server = Arc::new(Server::new(root, Log::new(args.verbose)));
    if args.threads {
        run_threads(&args, server, signals)
    } else {
        run_goroutines(&args, server, signals)
    }
}

/// Returns the canonical form of the directory to serve (default: the current directory).
fn canonical_root(dir: Option<&Path>) -> Result<PathBuf, String> {
    let dir = dir.unwrap_or(Path::new("."));
    let root = std::fs::canonicalize(dir).map_err(|error| {
        format!(
            "{}: {error}; pass an existing directory to serve",
            dir.display()
        )
    })?;
    if !root.is_dir() {
        return Err(format!(
            "{}: not a directory; pass the directory whose files to serve",
            dir.display()
        ));
    }
    Ok(root)
}

/// Serves with one goroutine per connection on the goro runtime.
fn run_goroutines(args: &ServeArgs, server: Arc<Server>, signals: StopSignals) -> ExitCode {
    // The runtime owns the valid range of --procs, so it checks the value.
    let runtime = match runtime::build(args.scheduler, args.procs) {
        Ok(runtime) => runtime,
        Err(error @ goro::BuildError::Procs { .. }) => cli::subcommand_usage_error(
            "serve",
            format!("invalid value for '--procs <N>': {error}"),
        )
        .exit(),
        Err(error) => {
            eprintln!("goro-demo serve: failed to build the runtime: {error}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    // Outside a goroutine, goro::net calls run as plain std::net calls.
    let listener = match goro::net::TcpListener::bind(args.addr) {
        Ok(listener) => listener,
        Err(error) => return bind_failed(args.addr, &error),
    };
    let Some(address) = local_address(&server, listener.local_addr()) else {
        return ExitCode::from(EXIT_FAILURE);
    };
    let scheduler = args
        .scheduler
        .to_possible_value()
        .map_or_else(String::new, |value| value.get_name().to_owned());
    server.log.info(format_args!(
        "listening on http://{address}/ and serving {} with one goroutine per connection \
         (scheduler {scheduler}, {} procs)",
        server.root.display(),
        runtime.procs()
    ));
    if !start_signal_thread(signals, &server, address) {
        return ExitCode::from(EXIT_FAILURE);
    }

    let started = Instant::now();
    let accept_server = Arc::clone(&server);
    let accepted = runtime.block_on(move || accept_goroutines(&listener, &accept_server));
    if let Err(error) = accepted {
        server
            .log
            .error(format_args!("the accept goroutine failed: {error}"));
    }
    let still_open = server.wait_closed(SHUTDOWN_GRACE);
    server.log_stop(started.elapsed(), still_open);
    // The report is informational, so a failure to write it does not fail the run.
    let _ = runtime::write_report(&mut io::stderr().lock(), &runtime, started.elapsed());
    if still_open > 0 {
        // Dropping the runtime would wait for the goroutines of the open connections.
        std::process::exit(EXIT_FAILURE.into());
    }
    drop(runtime);
    ExitCode::SUCCESS
}

/// Accepts connections on a goroutine until the server stops, and serves each on a
/// goroutine of its own.
fn accept_goroutines(listener: &goro::net::TcpListener, server: &Arc<Server>) {
    accept_loop(
        server,
        || listener.accept(),
        |stream, peer, open| {
            configure(&stream)?;
            let spawned = goro::spawn(move || {
                connection::serve(&open.server, &GoroFiles, stream, peer);
                drop(open);
            });
            // Dropping the handle detaches the goroutine.
            spawned
                .map(drop)
                .map_err(|error| format!("failed to spawn a goroutine for it: {error}"))
        },
        goro::sleep,
    );
}

/// Applies the socket options of every connection of the goroutine server.
fn configure(stream: &goro::net::TcpStream) -> Result<(), String> {
    // Each response goes out in as few writes as it needs, so Nagle's algorithm would only
    // delay the last segment of each.
    stream
        .set_nodelay(true)
        .and_then(|()| stream.set_read_timeout(Some(READ_POLL_INTERVAL)))
        .map_err(|error| format!("failed to set its socket options: {error}"))
}

/// Serves with one OS thread per connection over `std::net` and `std::fs`.
fn run_threads(args: &ServeArgs, server: Arc<Server>, signals: StopSignals) -> ExitCode {
    let listener = match std::net::TcpListener::bind(args.addr) {
        Ok(listener) => listener,
        Err(error) => return bind_failed(args.addr, &error),
    };
    let Some(address) = local_address(&server, listener.local_addr()) else {
        return ExitCode::from(EXIT_FAILURE);
    };
    server.log.info(format_args!(
        "listening on http://{address}/ and serving {} with one OS thread per connection",
        server.root.display()
    ));
    if !start_signal_thread(signals, &server, address) {
        return ExitCode::from(EXIT_FAILURE);
    }

    let started = Instant::now();
    accept_loop(
        &server,
        || listener.accept(),
        |stream, peer, open| {
            stream
                .set_nodelay(true)
                .and_then(|()| stream.set_read_timeout(Some(READ_POLL_INTERVAL)))
                .map_err(|error| format!("failed to set its socket options: {error}"))?;
            let spawned = thread::Builder::new()
                .name("goro-demo-connection".into())
                .spawn(move || {
                    connection::serve(&open.server, &StdFiles, stream, peer);
                    drop(open);
                });
            spawned
                .map(drop)
                .map_err(|error| format!("failed to start a thread for it: {error}"))
        },
        thread::sleep,
    );
    let still_open = server.wait_closed(SHUTDOWN_GRACE);
    server.log_stop(started.elapsed(), still_open);
    if still_open > 0 {
        // Exit with the failure status at once, since returning from main would not wait
        // for the connection threads either.
        std::process::exit(EXIT_FAILURE.into());
    }
    ExitCode::SUCCESS
}

/// Accepts connections until the server stops, and hands each to `start` with its guard.
///
/// `start` returns an error message if the connection could not be started; the connection
/// and its guard are then dropped. After a failed accept the loop pauses through `sleep`,
/// longer after each failure in a row.
fn accept_loop<S>(
    server: &Arc<Server>,
    mut accept: impl FnMut() -> io::Result<(S, SocketAddr)>,
    mut start: impl FnMut(S, SocketAddr, OpenConnection) -> Result<(), String>,
    sleep: impl Fn(Duration),
) {
    let (min_backoff, max_backoff) = ACCEPT_BACKOFF;
    let mut backoff = Duration::ZERO;
    loop {
        let accepted = accept();
        // Checked after the accept returns, because the signal thread's wake-up connection is
        // what makes it return. That connection, or a client that came at the same moment, is
        // closed when `accepted` drops.
        if server.is_stopping() {
            return;
        }
        match accepted {
            Ok((stream, peer)) => {
                backoff = Duration::ZERO;
                server
                    .log
                    .verbose(format_args!("{peer}: connection accepted"));
                let open = server.open_connection();
                if let Err(message) = start(stream, peer, open) {
                    server
                        .log
                        .error(format_args!("{peer}: {message}; closing the connection"));
                }
            }
            Err(error) => {
                backoff = (backoff * 2).clamp(min_backoff, max_backoff);
                server.log.error(format_args!(
                    "failed to accept a connection: {error}; retrying in {backoff:?}"
                ));
                sleep(backoff);
            }
        }
    }
}

/// Logs a failed bind and returns the exit status for it.
fn bind_failed(address: SocketAddr, error: &io::Error) -> ExitCode {
    eprintln!(
        "goro-demo serve: failed to listen on {address}: {error}; pass another --addr, or port \
         0 for a free one"
    );
    ExitCode::from(EXIT_FAILURE)
}

/// Returns the listener's address, or logs why it is unknown.
fn local_address(server: &Server, address: io::Result<SocketAddr>) -> Option<SocketAddr> {
    address
        .inspect_err(|error| {
            server.log.error(format_args!(
                "failed to read the address of the listening socket: {error}"
            ));
        })
        .ok()
}

/// Starts the thread that waits for SIGINT and SIGTERM. Returns false, after logging why, if
/// it could not be started.
///
/// The first signal sets the stop flag and wakes the accept loop with a connection to
/// `address`; the second exits the process at once.
fn start_signal_thread(signals: StopSignals, server: &Arc<Server>, address: SocketAddr) -> bool {
    let signal_server = Arc::clone(server);
    let wake_address = wake_address(address);
    let started = thread::Builder::new()
        .name("goro-demo-signals".into())
        .spawn(move || {
            loop {
                let signal = match signals.wait() {
                    Ok(signal) => signal,
                    Err(error) => {
                        signal_server
                            .log
                            .error(format_args!("failed to wait for a stop signal: {error}"));
                        return;
                    }
                };
                if !signal_server.begin_stop() {
                    signal_server.log.info(format_args!(
                        "received {signal} again; exiting without waiting for open connections"
                    ));
                    std::process::exit(EXIT_FAILURE.into());
                }
                signal_server.log.info(format_args!(
                    "received {signal}; stopping: no new connections, and open ones close after \
                     their current response"
                ));
                // The accept loop reads the flag when this connection makes its accept return.
                if let Err(error) = goro::net::TcpStream::connect(wake_address) {
                    signal_server.log.error(format_args!(
                        "failed to connect to {wake_address} to wake the accept loop: {error}; \
                         exiting without waiting for open connections"
                    ));
                    std::process::exit(EXIT_FAILURE.into());
                }
            }
        });
    match started {
        Ok(_) => true,
        Err(error) => {
            server
                .log
                .error(format_args!("failed to start the signal thread: {error}"));
            false
        }
    }
}

/// Returns the address to connect to to reach a listener bound to `address`: the loopback
/// address of the same family for a wildcard address, `address` itself otherwise.
fn wake_address(address: SocketAddr) -> SocketAddr {
    let ip = match address.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, address.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wake_address_of_wildcards_is_loopback() {
        let cases = [
            ("0.0.0.0:80", "127.0.0.1:80"),
            ("[::]:8080", "[::1]:8080"),
            ("127.0.0.2:1", "127.0.0.2:1"),
            ("[::1]:2", "[::1]:2"),
        ];
        for (bound, expected) in cases {
            let bound: SocketAddr = bound.parse().unwrap();
            assert_eq!(wake_address(bound), expected.parse().unwrap(), "{bound}");
        }
    }

    #[test]
    fn canonical_root_errors_name_directory() {
        let missing = canonical_root(Some(Path::new("/nonexistent/www"))).unwrap_err();
        assert!(missing.starts_with("/nonexistent/www: "), "{missing}");
        assert!(missing.contains("pass an existing directory"), "{missing}");

        let path =
            std::env::temp_dir().join(format!("goro-demo-serve-root-{}", std::process::id()));
        std::fs::write(&path, b"not a directory").unwrap();
        let file = canonical_root(Some(&path)).unwrap_err();
        std::fs::remove_file(&path).unwrap();
        assert!(file.contains("not a directory"), "{file}");
    }

    #[test]
    fn open_connections_counted_until_dropped() {
        let server = Arc::new(Server::new(PathBuf::from("/"), Log::new(false)));
        let first = server.open_connection();
        let second = server.open_connection();
        assert_eq!(server.wait_closed(Duration::ZERO), 2);
        drop(first);
        assert_eq!(server.wait_closed(Duration::ZERO), 1);

        let closer = thread::spawn(move || drop(second));
        assert_eq!(server.wait_closed(Duration::from_secs(600)), 0);
        closer.join().unwrap();
        assert_eq!(server.connections.load(Ordering::Relaxed), 2);
    }
}
