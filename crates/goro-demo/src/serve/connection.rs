//! One client connection: reading request heads, responding to them, and closing.
//!
//! The connection serves requests one after the other (pipelined requests wait in the input
//! buffer) until the client or the server requests a close, the client sends nothing for
//! [`REQUEST_TIMEOUT`], or the server stops. The stream must have a read timeout of
//! [`READ_POLL_INTERVAL`], so that a read waiting for a quiet client returns in time to notice
//! that the server stops.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::time::{Duration, Instant, SystemTime};

use super::Server;
use super::files::{self, Files, Found, Rejection};
use super::http::{
    self, BadRequest, Body, MAX_HEAD, Method, Request, ResponseHead, Status, TEXT_PLAIN, Version,
};
use super::target::parse_target;
use super::time::http_date;

/// Time a client has to send a complete request head, counted from the accept or from the end
/// of the previous response. It is also how long an idle keep-alive connection stays open.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Read timeout of every connection: how often a read that waits for the client returns to
/// check whether the server stops and whether [`REQUEST_TIMEOUT`] has passed.
pub const READ_POLL_INTERVAL: Duration = Duration::from_millis(250);

/// Size of the chunks in which a file is read and sent, so that no file needs to fit in
/// memory. The response head goes out in the first chunk.
pub const CHUNK_SIZE: usize = 64 * 1024;

/// Largest request body (of a GET, or of a rejected POST) that is read and dropped to keep the
/// connection open. The connection closes after a response to a larger body.
const MAX_DISCARDED_BODY: u64 = 1024 * 1024;

/// Time the server waits for the client to close after the server has closed its sending
/// half, reading and dropping what the client still sends. Closing a socket with unread input
/// makes the kernel send a reset, which can destroy the response before the client reads it.
const LINGER_TIMEOUT: Duration = Duration::from_secs(2);

/// Largest number of bytes read and dropped while lingering.
const LINGER_MAX_BYTES: usize = 1024 * 1024;

/// A connected socket of either server.
pub trait Stream: Read + Write {
    /// Shuts down the sending half, so that the client reads the end of the stream.
    fn shutdown_write(&self) -> io::Result<()>;
}

impl Stream for goro::net::TcpStream {
    fn shutdown_write(&self) -> io::Result<()> {
        self.shutdown(Shutdown::Write)
    }
}

impl Stream for std::net::TcpStream {
    fn shutdown_write(&self) -> io::Result<()> {
        self.shutdown(Shutdown::Write)
    }
}

/// Serves the requests that arrive on `stream` from `peer` until the connection closes.
pub fn serve<S: Stream, F: Files>(server: &Server, files: &F, stream: S, peer: SocketAddr) {
    let mut connection = Connection {
        server,
        files,
        stream,
        peer,
        input: vec![0; MAX_HEAD].into_boxed_slice(),
        filled: 0,
        output: Vec::new(),
        requests: 0,
    };
    connection.run();
    server.log.verbose(format_args!(
        "{peer}: connection closed; requests: {}",
        connection.requests
    ));
}

struct Connection<'a, S, F> {
    server: &'a Server,
    files: &'a F,
    stream: S,
    peer: SocketAddr,
    /// Bytes received and not yet consumed: the next request heads.
    input: Box<[u8]>,
    filled: usize,
    /// The response head and a chunk of the body, allocated at the first response.
    output: Vec<u8>,
    requests: u64,
}

/// The outcome of a read that waits for the client.
enum Received {
    /// This many bytes.
    Data(usize),
    /// The end of the stream: the client closed its sending half.
    End,
    /// Nothing before the deadline.
    TimedOut,
    /// Nothing before the server began to stop.
    Stopped,
}

/// The reason no request head could be read.
enum HeadError {
    Malformed(BadRequest),
    TimedOut,
    /// The client closed the connection in the middle of a head.
    Truncated,
    Io(io::Error),
}

/// An error that ends a connection early. Each is logged.
enum Failure {
    /// Sending to the client failed.
    Write(io::Error),
    /// Reading the file failed after the response head promised its length.
    FileRead { path: Vec<u8>, error: io::Error },
    /// The file ended before the length that the response head promised.
    FileShrank {
        path: Vec<u8>,
        expected: u64,
        sent: u64,
    },
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Write(error) => write!(f, "failed to send the response: {error}"),
            Failure::FileRead { path, error } => write!(
                f,
                "failed to read {} while sending it, so the response is cut short: {error}",
                String::from_utf8_lossy(path)
            ),
            Failure::FileShrank {
                path,
                expected,
                sent,
            } => write!(
                f,
                "{} shrank while it was sent: the response promised {expected} bytes but the \
                 file ended after {sent}, so the response is cut short",
                String::from_utf8_lossy(path)
            ),
        }
    }
}

/// A response whose body the server writes itself.
struct TextResponse<'a> {
    status: Status,
    /// Why, for a client error; appended to the status line in the body.
    detail: Option<&'static str>,
    location: Option<&'a [u8]>,
}

impl<S: Stream, F: Files> Connection<'_, S, F> {
    fn run(&mut self) {
        loop {
            let deadline = Instant::now() + REQUEST_TIMEOUT;
            let (request, head_len) = match self.read_head(deadline) {
                Ok(Some(head)) => head,
                Ok(None) => return,
                Err(error) => {
                    self.reject_head(error);
                    return;
                }
            };
            self.consume(head_len);
            self.requests += 1;
            self.server.count_request();

            let keep_alive = match self.respond(&request) {
                Ok(keep_alive) => keep_alive,
                Err(failure) => {
                    self.server
                        .log
                        .error(format_args!("{}: {failure}", self.peer));
                    self.linger_close();
                    return;
                }
            };
            if !keep_alive {
                self.linger_close();
                return;
            }
            if let Body::Length(length) = request.body {
                let deadline = Instant::now() + REQUEST_TIMEOUT;
                if !self.discard_body(length, deadline) {
                    return;
                }
            }
        }
    }

    /// Reads until a complete request head is buffered. Returns `None` when the connection
    /// ends quietly: the client closes or resets it, stays silent past `deadline`, or the
    /// server stops, all before the first byte of a request.
    fn read_head(&mut self, deadline: Instant) -> Result<Option<(Request, usize)>, HeadError> {
        let mut searched = 0;
        loop {
            if let Some(end) = http::find_head_end(&self.input[..self.filled], searched) {
                let request =
                    http::parse_request(&self.input[..end]).map_err(HeadError::Malformed)?;
                return Ok(Some((request, end)));
            }
            if self.filled == self.input.len() {
                return Err(HeadError::Malformed(http::HEAD_TOO_LARGE));
            }
            searched = self.filled.saturating_sub(2);

            // Empty lines before a request line are allowed, so they do not start a request.
            let started = self.input[..self.filled]
                .iter()
                .any(|&byte| byte != b'\r' && byte != b'\n');
            let unfilled = &mut self.input[self.filled..];
            match read_polling(&mut self.stream, self.server, unfilled, deadline, true) {
                Ok(Received::Data(count)) => self.filled += count,
                Ok(Received::End) if started => return Err(HeadError::Truncated),
                Ok(Received::TimedOut) if started => return Err(HeadError::TimedOut),
                Ok(Received::End | Received::TimedOut | Received::Stopped) => return Ok(None),
                Err(error) if !started && is_reset(&error) => return Ok(None),
                Err(error) => return Err(HeadError::Io(error)),
            }
        }
    }

    /// Logs why no request head could be read and, where the client may still listen,
    /// responds with 400 or 408 and closes.
    fn reject_head(&mut self, error: HeadError) {
        let peer = self.peer;
        let server = self.server;
        let log = &server.log;
        let (status, detail) = match error {
            HeadError::Malformed(BadRequest(reason)) => {
                log.error(format_args!("{peer}: bad request: {reason}"));
                (Status::BAD_REQUEST, Some(reason))
            }
            HeadError::TimedOut => {
                log.error(format_args!(
                    "{peer}: the request head did not arrive within {REQUEST_TIMEOUT:?}"
                ));
                (Status::REQUEST_TIMEOUT, None)
            }
            HeadError::Truncated => {
                log.error(format_args!(
                    "{peer}: the client closed the connection in the middle of a request head"
                ));
                return;
            }
            HeadError::Io(error) => {
                log.error(format_args!("{peer}: failed to read a request: {error}"));
                return;
            }
        };
        let response = TextResponse {
            status,
            detail,
            location: None,
        };
        if let Err(failure) = self.send_text(&response, false, Version::Http11, false) {
            log.error(format_args!("{peer}: {failure}"));
        }
        self.linger_close();
    }

    /// Drops the first `count` buffered bytes.
    fn consume(&mut self, count: usize) {
        self.input.copy_within(count..self.filled, 0);
        self.filled -= count;
    }

    /// Sends the response to `request`. Returns whether the connection stays open.
    fn respond(&mut self, request: &Request) -> Result<bool, Failure> {
        let body_known = match request.body {
            Body::Empty => true,
            Body::Length(length) => length <= MAX_DISCARDED_BODY,
            Body::Unframed => false,
        };
        let keep_alive = request.keep_alive && body_known && !self.server.is_stopping();
        let version = request.version;
        let head_only = match &request.method {
            Method::Get => false,
            Method::Head => true,
            Method::Other(_) => {
                let response = TextResponse {
                    status: Status::METHOD_NOT_ALLOWED,
                    detail: Some("this server only answers GET and HEAD"),
                    location: None,
                };
                self.log_request(request, response.status);
                return self.send_text(&response, keep_alive, version, false);
            }
        };

        let target = match parse_target(&request.target) {
            Ok(target) => target,
            Err(reason) => {
                self.server
                    .log
                    .error(format_args!("{}: bad request target: {reason}", self.peer));
                let response = TextResponse {
                    status: Status::BAD_REQUEST,
                    detail: Some(reason),
                    location: None,
                };
                return self.send_text(&response, keep_alive, version, head_only);
            }
        };

        let found = files::resolve(self.files, &self.server.root, &target);
        let (status, detail) = match found {
            Ok(found) => {
                self.log_request(request, Status::OK);
                return self.send_file(found, &target.raw_path, keep_alive, version, head_only);
            }
            Err(Rejection::NotFound) => (Status::NOT_FOUND, None),
            Err(Rejection::AddSlash) => {
                let mut location = target.raw_path.clone();
                location.push(b'/');
                let response = TextResponse {
                    status: Status::MOVED_PERMANENTLY,
                    detail: None,
                    location: Some(&location),
                };
                self.log_request(request, response.status);
                return self.send_text(&response, keep_alive, version, head_only);
            }
            Err(Rejection::Forbidden(reason)) => {
                self.server.log.error(format_args!(
                    "{}: rejected {}: {reason}",
                    self.peer,
                    String::from_utf8_lossy(&request.target)
                ));
                (Status::FORBIDDEN, Some(reason))
            }
            Err(Rejection::Failed(error)) => {
                self.server.log.error(format_args!(
                    "{}: failed to open {}: {error}",
                    self.peer,
                    target.relative.display()
                ));
                (Status::INTERNAL_SERVER_ERROR, None)
            }
        };
        self.log_request(request, status);
        let response = TextResponse {
            status,
            detail,
            location: None,
        };
        self.send_text(&response, keep_alive, version, head_only)
    }

    fn log_request(&self, request: &Request, status: Status) {
        if self.server.log.is_verbose() {
            self.server.log.verbose(format_args!(
                "{}: {} {} {}",
                self.peer,
                request.method.as_str(),
                String::from_utf8_lossy(&request.target),
                status.code
            ));
        }
    }

    /// Sends a response with a short text body: the status line, and the detail if any.
    fn send_text(
        &mut self,
        response: &TextResponse<'_>,
        keep_alive: bool,
        version: Version,
        head_only: bool,
    ) -> Result<bool, Failure> {
        let status = response.status;
        let body = match response.detail {
            Some(detail) => format!("{} {}: {detail}\n", status.code, status.reason),
            None => format!("{} {}\n", status.code, status.reason),
        };
        let head = ResponseHead {
            status,
            content_type: TEXT_PLAIN,
            content_length: body.len() as u64,
            keep_alive,
            version,
            location: response.location,
            allow: status == Status::METHOD_NOT_ALLOWED,
        };
        self.output.clear();
        head.write_to(&mut self.output, &http_date(SystemTime::now()));
        if !head_only {
            self.output.extend_from_slice(body.as_bytes());
        }
        self.stream
            .write_all(&self.output)
            .map_err(Failure::Write)?;
        Ok(keep_alive)
    }

    /// Sends a 200 response with the file's contents, or only its head for HEAD.
    ///
    /// The body goes out in chunks of `CHUNK_SIZE` bytes, the first one with the response
    /// head. If the file turns out shorter than its length at open, or a read fails, the
    /// response cannot be completed and the connection must close.
    fn send_file(
        &mut self,
        mut found: Found<F::File>,
        raw_path: &[u8],
        keep_alive: bool,
        version: Version,
        head_only: bool,
    ) -> Result<bool, Failure> {
        let head = ResponseHead {
            status: Status::OK,
            content_type: found.content_type,
            content_length: found.length,
            keep_alive,
            version,
            location: None,
            allow: false,
        };
        self.output.clear();
        head.write_to(&mut self.output, &http_date(SystemTime::now()));
        if head_only || found.length == 0 {
            self.stream
                .write_all(&self.output)
                .map_err(Failure::Write)?;
            return Ok(keep_alive);
        }

        // The head of a 200 response is a few hundred bytes, so it leaves room for the body.
        let mut used = self.output.len();
        self.output.resize(CHUNK_SIZE, 0);
        let mut remaining = found.length;
        loop {
            let mut failure = None;
            while failure.is_none() && used < CHUNK_SIZE && remaining > 0 {
                let room =
                    (CHUNK_SIZE - used).min(usize::try_from(remaining).unwrap_or(usize::MAX));
                match found.file.read(&mut self.output[used..used + room]) {
                    Ok(0) => {
                        failure = Some(Failure::FileShrank {
                            path: raw_path.to_vec(),
                            expected: found.length,
                            sent: found.length - remaining,
                        });
                    }
                    Ok(count) => {
                        used += count;
                        remaining -= count as u64;
                    }
                    Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                    Err(error) => {
                        failure = Some(Failure::FileRead {
                            path: raw_path.to_vec(),
                            error,
                        });
                    }
                }
            }
            // What was read goes out also when the file failed, so that the client receives
            // a body cut short rather than no response.
            self.stream
                .write_all(&self.output[..used])
                .map_err(Failure::Write)?;
            if let Some(failure) = failure {
                return Err(failure);
            }
            used = 0;
            if remaining == 0 {
                return Ok(keep_alive);
            }
        }
    }

    /// Reads and drops a request body of `length` bytes. Returns whether the connection can
    /// carry on; a client that closes, stays silent past `deadline`, or a server that stops,
    /// ends it quietly.
    fn discard_body(&mut self, length: u64, deadline: Instant) -> bool {
        let buffered = (self.filled as u64).min(length) as usize;
        self.consume(buffered);
        let mut remaining = length - buffered as u64;
        while remaining > 0 {
            let room = self.input.len().min(remaining as usize);
            let buffer = &mut self.input[..room];
            match read_polling(&mut self.stream, self.server, buffer, deadline, true) {
                Ok(Received::Data(count)) => remaining -= count as u64,
                Ok(_) => return false,
                Err(error) => {
                    self.server.log.error(format_args!(
                        "{}: failed to read a request body: {error}",
                        self.peer
                    ));
                    return false;
                }
            }
        }
        true
    }

    /// Closes the sending half, then reads and drops what the client still sends until it
    /// closes too, for at most `LINGER_TIMEOUT` and `LINGER_MAX_BYTES`.
    fn linger_close(&mut self) {
        if self.stream.shutdown_write().is_err() {
            // The connection is already gone.
            return;
        }
        let deadline = Instant::now() + LINGER_TIMEOUT;
        let mut dropped = 0;
        while dropped < LINGER_MAX_BYTES {
            match read_polling(
                &mut self.stream,
                self.server,
                &mut self.input,
                deadline,
                false,
            ) {
                Ok(Received::Data(count)) => dropped += count,
                _ => return,
            }
        }
    }
}

/// Reads into `buffer`, retrying each time the read timeout passes until data arrives,
/// `deadline` passes or, with `stop_aware`, the server begins to stop.
fn read_polling(
    stream: &mut impl Read,
    server: &Server,
    buffer: &mut [u8],
    deadline: Instant,
    stop_aware: bool,
) -> io::Result<Received> {
    loop {
        match stream.read(buffer) {
            Ok(0) => return Ok(Received::End),
            Ok(count) => return Ok(Received::Data(count)),
            // SO_RCVTIMEO passed: the read returns EAGAIN.
            Err(error)
                if matches!(
                    error.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                if stop_aware && server.is_stopping() {
                    return Ok(Received::Stopped);
                }
                if Instant::now() >= deadline {
                    return Ok(Received::TimedOut);
                }
            }
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
}

/// Returns whether `error` is the client resetting the connection, which a client may do to
/// an idle keep-alive connection instead of closing it.
fn is_reset(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serve::files::FileType;
    use crate::serve::log::Log;
    use std::cell::Cell;
    use std::io::Cursor;
    use std::path::{Path, PathBuf};

    /// A client that sends `input`, then closes its sending half. With `quiet_at_end` it
    /// waits instead, which the connection reads as timeouts, until the server shuts down its
    /// sending half.
    #[derive(Default)]
    struct ScriptedClient {
        input: Vec<u8>,
        position: usize,
        quiet_at_end: bool,
        received: Vec<u8>,
        write_sizes: Vec<usize>,
        shut_down: Cell<bool>,
    }

    impl Read for ScriptedClient {
        fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
            let rest = &self.input[self.position..];
            if rest.is_empty() && self.quiet_at_end && !self.shut_down.get() {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let count = rest.len().min(buffer.len());
            buffer[..count].copy_from_slice(&rest[..count]);
            self.position += count;
            Ok(count)
        }
    }

    impl Write for ScriptedClient {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            self.received.extend_from_slice(bytes);
            self.write_sizes.push(bytes.len());
            Ok(bytes.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Stream for ScriptedClient {
        fn shutdown_write(&self) -> io::Result<()> {
            self.shut_down.set(true);
            Ok(())
        }
    }

    /// A served directory `/site` with one file, `/site/file.bin`, whose reads return
    /// `contents` and whose length at open is `length`.
    struct OneFile {
        contents: Vec<u8>,
        length: u64,
    }

    impl Files for OneFile {
        type File = Cursor<Vec<u8>>;

        fn canonicalize(&self, path: &Path) -> io::Result<PathBuf> {
            match path.to_str() {
                Some("/site" | "/site/file.bin") => Ok(path.to_path_buf()),
                _ => Err(io::ErrorKind::NotFound.into()),
            }
        }

        fn file_type(&self, path: &Path) -> io::Result<FileType> {
            Ok(match path.to_str() {
                Some("/site") => FileType::Directory,
                _ => FileType::Regular,
            })
        }

        fn open(&self, _: &Path) -> io::Result<(Self::File, u64)> {
            Ok((Cursor::new(self.contents.clone()), self.length))
        }
    }

    fn new_server() -> Server {
        Server::new(PathBuf::from("/site"), Log::new(false))
    }

    /// Serves `client` until the connection ends and returns the client.
    fn serve_client(server: &Server, files: &OneFile, client: ScriptedClient) -> ScriptedClient {
        let mut connection = Connection {
            server,
            files,
            stream: client,
            peer: "127.0.0.1:1".parse().unwrap(),
            input: vec![0; MAX_HEAD].into_boxed_slice(),
            filled: 0,
            output: Vec::new(),
            requests: 0,
        };
        connection.run();
        connection.stream
    }

    fn client(input: &str, quiet_at_end: bool) -> ScriptedClient {
        ScriptedClient {
            input: input.as_bytes().to_vec(),
            quiet_at_end,
            ..ScriptedClient::default()
        }
    }

    /// Splits a response into its head and what follows.
    fn split_head(bytes: &[u8]) -> (String, &[u8]) {
        let end = bytes
            .windows(4)
            .position(|window| window == b"\r\n\r\n")
            .expect("a complete response head")
            + 4;
        (
            String::from_utf8(bytes[..end].to_vec()).unwrap(),
            &bytes[end..],
        )
    }

    fn pattern(length: usize) -> Vec<u8> {
        (0..length).map(|i| (i % 251) as u8).collect()
    }

    #[test]
    fn file_sent_in_chunks() {
        let contents = pattern(200_000);
        let files = OneFile {
            contents: contents.clone(),
            length: 200_000,
        };
        let request = "GET /file.bin HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
        let client = serve_client(&new_server(), &files, client(request, false));

        let (head, body) = split_head(&client.received);
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        assert!(head.contains("\r\nContent-Length: 200000\r\n"), "{head}");
        assert!(body == contents, "the body differs from the file");
        assert!(client.shut_down.get());
        assert_eq!(client.write_sizes.len(), 4, "{:?}", client.write_sizes);
        assert!(client.write_sizes.iter().all(|&size| size <= CHUNK_SIZE));
    }

    #[test]
    fn shrunk_file_cuts_response_short() {
        let contents = pattern(1000);
        let files = OneFile {
            contents: contents.clone(),
            length: 100_000,
        };
        // A second request waits in the buffer; the connection must close before it.
        let requests =
            "GET /file.bin HTTP/1.1\r\nHost: t\r\n\r\nGET /file.bin HTTP/1.1\r\nHost: t\r\n\r\n";
        let server = new_server();
        let client = serve_client(&server, &files, client(requests, false));

        let (head, body) = split_head(&client.received);
        assert!(head.contains("\r\nContent-Length: 100000\r\n"), "{head}");
        assert_eq!(body, contents);
        assert!(client.shut_down.get());
        assert_eq!(server.log.errors(), 1);
    }

    #[test]
    fn pipelined_requests_answered_in_order() {
        let files = OneFile {
            contents: b"abc".to_vec(),
            length: 3,
        };
        let requests = "GET /file.bin HTTP/1.1\r\nHost: t\r\n\r\n\
                        HEAD /missing HTTP/1.1\r\nHost: t\r\n\r\n\
                        \r\nGET /file.bin HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
        let client = serve_client(&new_server(), &files, client(requests, false));

        let (first, rest) = split_head(&client.received);
        assert!(first.starts_with("HTTP/1.1 200 OK\r\n"), "{first}");
        assert_eq!(&rest[..3], b"abc");
        let (second, rest) = split_head(&rest[3..]);
        assert!(second.starts_with("HTTP/1.1 404 Not Found\r\n"), "{second}");
        let (third, rest) = split_head(rest);
        assert!(third.starts_with("HTTP/1.1 200 OK\r\n"), "{third}");
        assert!(third.contains("\r\nConnection: close\r\n"), "{third}");
        assert_eq!(rest, b"abc");
    }

    #[test]
    fn stop_closes_after_current_response() {
        let files = OneFile {
            contents: b"abc".to_vec(),
            length: 3,
        };
        let server = new_server();
        assert!(server.begin_stop());
        let request = "GET /file.bin HTTP/1.1\r\nHost: t\r\n\r\n";
        // Without the stop, this client would keep the connection open for REQUEST_TIMEOUT.
        let client = serve_client(&server, &files, client(request, true));

        let (head, body) = split_head(&client.received);
        assert!(head.contains("\r\nConnection: close\r\n"), "{head}");
        assert_eq!(body, b"abc");
        assert!(client.shut_down.get());
    }

    #[test]
    fn stop_ends_idle_connection() {
        let files = OneFile {
            contents: Vec::new(),
            length: 0,
        };
        let server = new_server();
        assert!(server.begin_stop());
        let client = serve_client(&server, &files, client("\r\n", true));
        assert!(client.received.is_empty());
        assert_eq!(server.log.errors(), 0);
    }

    #[test]
    fn truncated_head_logged() {
        let files = OneFile {
            contents: Vec::new(),
            length: 0,
        };
        let server = new_server();
        let client = serve_client(&server, &files, client("GET /file.bin HTTP/1.1\r\n", false));
        assert!(client.received.is_empty());
        assert_eq!(server.log.errors(), 1);
    }
}
