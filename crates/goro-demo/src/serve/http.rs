//! HTTP/1.1 request heads and response heads, with the message syntax of RFC 9112.
//!
//! The parser reads only what a file server needs: the request line, `Host`, `Connection`,
//! `Content-Length`, `Transfer-Encoding` and `Expect`. It rejects what RFC 9112 requires
//! servers to reject (obsolete line folding, whitespace before a colon, a bare CR, an
//! HTTP/1.1 request without exactly one `Host`) and treats every other header field as opaque.

use std::fmt::Write as _;

/// Maximum size of a request head (request line, header fields and the blank line), in bytes.
pub const MAX_HEAD: usize = 16 * 1024;

/// The rejection of a request head longer than [`MAX_HEAD`].
pub const HEAD_TOO_LARGE: BadRequest = BadRequest("the request head is larger than 16384 bytes");

/// A request method. Methods are case-sensitive, so `get` is not [`Method::Get`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Method {
    /// `GET`
    Get,
    /// `HEAD`
    Head,
    /// Any other syntactically valid method, to which the server responds with 405.
    Other(String),
}

impl Method {
    /// Returns the method's name as sent.
    pub fn as_str(&self) -> &str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Other(name) => name,
        }
    }
}

/// The HTTP version of a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    /// `HTTP/1.0`: the connection closes after the response unless the client asks to keep
    /// it alive.
    Http10,
    /// `HTTP/1.1`, and `HTTP/1.x` with a higher minor version, which a recipient processes
    /// as the highest minor version it implements (RFC 9110 section 2.5).
    Http11,
}

/// The framing of a request body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Body {
    /// No body.
    Empty,
    /// `Content-Length` bytes.
    Length(u64),
    /// A `Transfer-Encoding` body. The server decodes no transfer codings, so it cannot find
    /// where the body ends and must close the connection after the response.
    Unframed,
}

/// A parsed request head.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// The method.
    pub method: Method,
    /// The request target as sent, in origin form (`/path?query`) or absolute form.
    pub target: Vec<u8>,
    /// The version.
    pub version: Version,
    /// Whether the client accepts more requests on the connection after this one.
    pub keep_alive: bool,
    /// The framing of the request body.
    pub body: Body,
}

/// The reason a request head is malformed. The message names the part that is invalid and is safe to
/// send back, because it quotes no bytes of the request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadRequest(pub &'static str);

/// Returns the length of the request head at the start of `buf`, up to and including the
/// blank line that ends it, or `None` while it is incomplete.
///
/// Empty lines before the request line belong to the head, as RFC 9112 section 2.2 lets a
/// server ignore them. Lines end in LF with an optional CR before it. The search starts at
/// `from`, so a caller that appends bytes can pass the length it searched before minus 2 and
/// scan each byte a bounded number of times.
pub fn find_head_end(buf: &[u8], from: usize) -> Option<usize> {
    let start = skip_empty_lines(buf).max(from).min(buf.len());
    let mut index = start;
    while let Some(offset) = buf[index..].iter().position(|&byte| byte == b'\n') {
        let newline = index + offset;
        match &buf[newline + 1..] {
            [b'\n', ..] => return Some(newline + 2),
            [b'\r', b'\n', ..] => return Some(newline + 3),
            _ => index = newline + 1,
        }
    }
    None
}

/// Returns the length of the empty lines (CRLF or LF) at the start of `buf`.
fn skip_empty_lines(buf: &[u8]) -> usize {
    let mut index = 0;
    loop {
        match &buf[index..] {
            [b'\n', ..] => index += 1,
            [b'\r', b'\n', ..] => index += 2,
            _ => return index,
        }
    }
}

/// Parses a complete request head, as [`find_head_end`] delimits it.
pub fn parse_request(head: &[u8]) -> Result<Request, BadRequest> {
    let head = &head[skip_empty_lines(head)..];
    let mut lines = head.split(|&byte| byte == b'\n').map(strip_cr);
    // `split` yields at least one element, even for an empty head.
    let request_line = lines.next().unwrap_or(Ok(&[]))?;
    let (method, target, version) = parse_request_line(request_line)?;

    let mut fields = Fields::default();
    for line in lines {
        let line = line?;
        if line.is_empty() {
            break;
        }
        fields.add(line)?;
    }

    if version == Version::Http11 {
        match fields.hosts {
            0 => {
                return Err(BadRequest(
                    "an HTTP/1.1 request must have a Host header field",
                ));
            }
            1 => {}
            _ => return Err(BadRequest("more than one Host header field")),
        }
    }
    let body = match (fields.transfer_encoding, fields.content_length) {
        (true, _) => Body::Unframed,
        (false, Some(0) | None) => Body::Empty,
        (false, Some(length)) => Body::Length(length),
    };
    // The server never sends 100 (Continue), so a client that waits for it before sending
    // the body would leave the connection stuck between the response and the body. The
    // connection closes after the response instead, as RFC 9110 section 10.1.1 allows.
    let awaits_continue = fields.expects_continue && matches!(body, Body::Length(_));
    let keep_alive = !awaits_continue
        && match version {
            Version::Http11 => !fields.close,
            Version::Http10 => fields.keep_alive && !fields.close,
        };
    Ok(Request {
        method,
        target: target.to_vec(),
        version,
        keep_alive,
        body,
    })
}

/// Removes the CR before a line's LF. A CR anywhere else is invalid (RFC 9112 section 2.2).
fn strip_cr(line: &[u8]) -> Result<&[u8], BadRequest> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.contains(&b'\r') {
        return Err(BadRequest("a CR byte that does not end a line"));
    }
    Ok(line)
}

fn parse_request_line(line: &[u8]) -> Result<(Method, &[u8], Version), BadRequest> {
    let mut parts = line.split(|&byte| byte == b' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(BadRequest(
            "the request line must be METHOD, a request target and HTTP/1.1, separated by \
             single spaces",
        ));
    };
    if !is_token(method) {
        return Err(BadRequest("the method is not a token"));
    }
    if target.is_empty() || !target.iter().all(|&byte| is_visible(byte)) {
        return Err(BadRequest(
            "the request target is empty or has a byte that is not visible ASCII",
        ));
    }
    let version = match version {
        [b'H', b'T', b'T', b'P', b'/', b'1', b'.', b'0'] => Version::Http10,
        [b'H', b'T', b'T', b'P', b'/', b'1', b'.', minor] if minor.is_ascii_digit() => {
            Version::Http11
        }
        _ => {
            return Err(BadRequest(
                "unsupported HTTP version: this server speaks HTTP/1.0 and HTTP/1.1",
            ));
        }
    };
    let method = match method {
        b"GET" => Method::Get,
        b"HEAD" => Method::Head,
        other => Method::Other(String::from_utf8_lossy(other).into_owned()),
    };
    Ok((method, target, version))
}

/// The header fields that framing and connection handling depend on.
#[derive(Default)]
struct Fields {
    hosts: usize,
    close: bool,
    keep_alive: bool,
    content_length: Option<u64>,
    transfer_encoding: bool,
    /// `Expect: 100-continue`: the client may wait for a 100 response before it sends the
    /// body.
    expects_continue: bool,
}

impl Fields {
    fn add(&mut self, line: &[u8]) -> Result<(), BadRequest> {
        if line.starts_with(b" ") || line.starts_with(b"\t") {
            return Err(BadRequest("obsolete line folding in a header field"));
        }
        let Some(colon) = line.iter().position(|&byte| byte == b':') else {
            return Err(BadRequest("a header field line has no colon"));
        };
        let name = &line[..colon];
        if !is_token(name) {
            return Err(BadRequest(
                "a header field name is empty or not a token, or has whitespace before its colon",
            ));
        }
        let value = line[colon + 1..].trim_ascii();
        if !value
            .iter()
            .all(|&byte| byte == b' ' || byte == b'\t' || is_visible(byte) || byte >= 0x80)
        {
            return Err(BadRequest("a header field value has a control byte"));
        }

        if name.eq_ignore_ascii_case(b"host") {
            self.hosts += 1;
        } else if name.eq_ignore_ascii_case(b"connection") {
            for option in list_elements(value) {
                self.close |= option.eq_ignore_ascii_case(b"close");
                self.keep_alive |= option.eq_ignore_ascii_case(b"keep-alive");
            }
        } else if name.eq_ignore_ascii_case(b"content-length") {
            self.add_content_length(value)?;
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            self.transfer_encoding = true;
        } else if name.eq_ignore_ascii_case(b"expect") {
            self.expects_continue |= value.eq_ignore_ascii_case(b"100-continue");
        }
        Ok(())
    }

    /// Takes a `Content-Length` value. A list of equal values, or equal values on several
    /// lines, count as one, as RFC 9110 section 8.6 allows; differing values are invalid.
    fn add_content_length(&mut self, value: &[u8]) -> Result<(), BadRequest> {
        const INVALID: BadRequest =
            BadRequest("Content-Length is not a decimal number of at most 19 digits");
        for element in value.split(|&byte| byte == b',').map(<[u8]>::trim_ascii) {
            if element.is_empty() || element.len() > 19 || !element.iter().all(u8::is_ascii_digit) {
                return Err(INVALID);
            }
            let length = std::str::from_utf8(element)
                .ok()
                .and_then(|digits| digits.parse::<u64>().ok())
                .ok_or(INVALID)?;
            if self
                .content_length
                .is_some_and(|previous| previous != length)
            {
                return Err(BadRequest("Content-Length has two different values"));
            }
            self.content_length = Some(length);
        }
        Ok(())
    }
}

/// Returns the non-empty elements of a comma-separated header field value.
fn list_elements(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&byte| byte == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|element| !element.is_empty())
}

/// Returns whether `bytes` is a token: one or more of the characters RFC 9110 section 5.6.2
/// allows in methods and field names.
fn is_token(bytes: &[u8]) -> bool {
    !bytes.is_empty()
        && bytes
            .iter()
            .all(|&byte| byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte))
}

/// Returns whether `byte` is visible ASCII (VCHAR): 0x21 to 0x7e.
fn is_visible(byte: u8) -> bool {
    (0x21..=0x7e).contains(&byte)
}

/// A response status code with its reason phrase.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Status {
    /// The three-digit code.
    pub code: u16,
    /// The reason phrase of RFC 9110.
    pub reason: &'static str,
}

impl Status {
    /// 200: the file follows.
    pub const OK: Status = Status::new(200, "OK");
    /// 301: a directory was requested without its trailing slash.
    pub const MOVED_PERMANENTLY: Status = Status::new(301, "Moved Permanently");
    /// 400: the request is malformed.
    pub const BAD_REQUEST: Status = Status::new(400, "Bad Request");
    /// 403: the path exists but is not served.
    pub const FORBIDDEN: Status = Status::new(403, "Forbidden");
    /// 404: no such file.
    pub const NOT_FOUND: Status = Status::new(404, "Not Found");
    /// 405: a method other than GET and HEAD.
    pub const METHOD_NOT_ALLOWED: Status = Status::new(405, "Method Not Allowed");
    /// 408: the request head did not arrive in time.
    pub const REQUEST_TIMEOUT: Status = Status::new(408, "Request Timeout");
    /// 500: reading the file failed.
    pub const INTERNAL_SERVER_ERROR: Status = Status::new(500, "Internal Server Error");

    const fn new(code: u16, reason: &'static str) -> Status {
        Status { code, reason }
    }
}

/// The header fields of a response, written by [`ResponseHead::write_to`].
#[derive(Clone, Debug)]
pub struct ResponseHead<'a> {
    /// The status.
    pub status: Status,
    /// The `Content-Type` value.
    pub content_type: &'static str,
    /// The `Content-Length` value: the size of the body that a GET response carries, also in
    /// the response to HEAD, which carries none.
    pub content_length: u64,
    /// Whether the connection stays open after the response.
    pub keep_alive: bool,
    /// The version of the request, which decides whether `Connection: keep-alive` is needed.
    pub version: Version,
    /// The `Location` value of a redirect, already in request-target syntax.
    pub location: Option<&'a [u8]>,
    /// Whether to send `Allow: GET, HEAD`, as a 405 response must.
    pub allow: bool,
}

impl ResponseHead<'_> {
    /// Appends the status line and header fields, and the blank line after them, to `out`.
    /// `date` is the `Date` value, as [`super::time::http_date`] formats it.
    pub fn write_to(&self, out: &mut Vec<u8>, date: &str) {
        let mut text = String::with_capacity(256);
        // Writing to a String cannot fail.
        let _ = write!(
            text,
            "HTTP/1.1 {} {}\r\nServer: goro-demo\r\nDate: {date}\r\nContent-Type: {}\r\n\
             Content-Length: {}\r\n",
            self.status.code, self.status.reason, self.content_type, self.content_length
        );
        if self.allow {
            text.push_str("Allow: GET, HEAD\r\n");
        }
        match (self.keep_alive, self.version) {
            (false, _) => text.push_str("Connection: close\r\n"),
            (true, Version::Http10) => text.push_str("Connection: keep-alive\r\n"),
            (true, Version::Http11) => {}
        }
        out.extend_from_slice(text.as_bytes());
        if let Some(location) = self.location {
            out.extend_from_slice(b"Location: ");
            out.extend_from_slice(location);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
    }
}

/// Content type of text bodies that the server writes itself.
pub const TEXT_PLAIN: &str = "text/plain; charset=utf-8";

/// Returns the `Content-Type` for a file name, from its extension (ASCII case-insensitive).
/// Text types name UTF-8 as the charset. Unknown extensions get `application/octet-stream`.
pub fn content_type(file_name: &[u8]) -> &'static str {
    const TYPES: &[(&str, &str)] = &[
        ("html", "text/html; charset=utf-8"),
        ("htm", "text/html; charset=utf-8"),
        ("css", "text/css; charset=utf-8"),
        ("js", "text/javascript; charset=utf-8"),
        ("mjs", "text/javascript; charset=utf-8"),
        ("json", "application/json"),
        ("txt", TEXT_PLAIN),
        ("md", "text/markdown; charset=utf-8"),
        ("csv", "text/csv; charset=utf-8"),
        ("xml", "application/xml"),
        ("svg", "image/svg+xml"),
        ("png", "image/png"),
        ("jpg", "image/jpeg"),
        ("jpeg", "image/jpeg"),
        ("gif", "image/gif"),
        ("webp", "image/webp"),
        ("ico", "image/vnd.microsoft.icon"),
        ("pdf", "application/pdf"),
        ("wasm", "application/wasm"),
        ("woff2", "font/woff2"),
        ("zip", "application/zip"),
        ("gz", "application/gzip"),
        ("tar", "application/x-tar"),
        ("mp4", "video/mp4"),
    ];
    const DEFAULT: &str = "application/octet-stream";

    let Some(dot) = file_name.iter().rposition(|&byte| byte == b'.') else {
        return DEFAULT;
    };
    let extension = &file_name[dot + 1..];
    TYPES
        .iter()
        .find(|(known, _)| extension.eq_ignore_ascii_case(known.as_bytes()))
        .map_or(DEFAULT, |&(_, content_type)| content_type)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(head: &str) -> Result<Request, BadRequest> {
        let bytes = head.as_bytes();
        let end = find_head_end(bytes, 0).expect("the head is complete");
        assert_eq!(end, bytes.len(), "the head ends at the blank line");
        parse_request(bytes)
    }

    fn rejection(head: &str) -> &'static str {
        parse(head).expect_err("the request is invalid").0
    }

    #[test]
    fn head_too_large_names_limit() {
        assert!(HEAD_TOO_LARGE.0.contains(&MAX_HEAD.to_string()));
    }

    #[test]
    fn head_end_crlf_and_lf() {
        assert_eq!(
            find_head_end(b"GET / HTTP/1.1\r\nHost: a\r\n\r\nrest", 0),
            Some(27)
        );
        assert_eq!(
            find_head_end(b"GET / HTTP/1.1\nHost: a\n\nrest", 0),
            Some(24)
        );
        assert_eq!(find_head_end(b"GET / HTTP/1.1\r\nHost: a\r\n", 0), None);
        assert_eq!(find_head_end(b"GET / HTTP/1.1\r\nHost: a\r\n\r", 0), None);
        assert_eq!(find_head_end(b"", 0), None);
    }

    #[test]
    fn head_end_after_leading_empty_lines() {
        let head = b"\r\n\r\n\nGET / HTTP/1.1\r\nHost: a\r\n\r\n";
        assert_eq!(find_head_end(head, 0), Some(head.len()));
        assert_eq!(find_head_end(b"\r\n\r\n", 0), None);
    }

    #[test]
    fn head_end_resumed_search() {
        let head = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
        for filled in 0..head.len() {
            // A search over the first `filled` bytes found nothing, so the caller resumes 2
            // bytes before where it stopped.
            assert_eq!(find_head_end(&head[..filled], 0), None);
            let from = filled.saturating_sub(2);
            assert_eq!(find_head_end(head, from), Some(head.len()), "from {from}");
        }
    }

    #[test]
    fn get_http11_keeps_alive() {
        let request =
            parse("GET /a/b?q=1 HTTP/1.1\r\nHost: example\r\nAccept: */*\r\n\r\n").unwrap();
        assert_eq!(request.method, Method::Get);
        assert_eq!(request.target, b"/a/b?q=1");
        assert_eq!(request.version, Version::Http11);
        assert!(request.keep_alive);
        assert_eq!(request.body, Body::Empty);
    }

    #[test]
    fn connection_options() {
        let cases = [
            ("HTTP/1.1", "", true),
            ("HTTP/1.1", "Connection: close\r\n", false),
            ("HTTP/1.1", "Connection: Keep-Alive, CLOSE\r\n", false),
            (
                "HTTP/1.1",
                "Connection: upgrade\r\nConnection: close\r\n",
                false,
            ),
            ("HTTP/1.0", "", false),
            ("HTTP/1.0", "Connection: keep-alive\r\n", true),
            ("HTTP/1.0", "Connection: foo, Keep-Alive\r\n", true),
            ("HTTP/1.0", "Connection: keep-alive, close\r\n", false),
            ("HTTP/1.9", "", true),
        ];
        for (version, fields, keep_alive) in cases {
            let head = format!("GET / {version}\r\nHost: a\r\n{fields}\r\n");
            let request = parse(&head).unwrap();
            assert_eq!(request.keep_alive, keep_alive, "{head:?}");
        }
    }

    #[test]
    fn http10_without_host_accepted() {
        let request = parse("HEAD /x HTTP/1.0\r\n\r\n").unwrap();
        assert_eq!(request.method, Method::Head);
        assert_eq!(request.version, Version::Http10);
        assert!(!request.keep_alive);
    }

    #[test]
    fn other_methods_parsed() {
        let request = parse("POST / HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
        assert_eq!(request.method, Method::Other("POST".into()));
        let request = parse("get / HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
        assert_eq!(request.method, Method::Other("get".into()));
    }

    #[test]
    fn body_framing() {
        let cases = [
            ("Content-Length: 0\r\n", Body::Empty),
            ("Content-Length: 12\r\n", Body::Length(12)),
            ("Content-Length: 12, 12\r\n", Body::Length(12)),
            (
                "Content-Length: 7\r\nContent-Length: 7\r\n",
                Body::Length(7),
            ),
            ("Transfer-Encoding: chunked\r\n", Body::Unframed),
            (
                "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
                Body::Unframed,
            ),
        ];
        for (fields, body) in cases {
            let head = format!("POST / HTTP/1.1\r\nHost: a\r\n{fields}\r\n");
            assert_eq!(parse(&head).unwrap().body, body, "{fields:?}");
        }
    }

    #[test]
    fn bad_content_length_rejected() {
        for value in [
            "",
            "-1",
            "+5",
            "0x10",
            "1 2",
            "5, 6",
            "99999999999999999999",
            "1,",
        ] {
            let head = format!("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: {value}\r\n\r\n");
            assert!(parse(&head).is_err(), "Content-Length {value:?} accepted");
        }
        let head = "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n";
        assert_eq!(rejection(head), "Content-Length has two different values");
    }

    #[test]
    fn bad_request_lines_rejected() {
        let cases = [
            "garbage\r\n\r\n",
            "GET /\r\n\r\n",
            "GET  / HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET / HTTP/1.1 \r\nHost: a\r\n\r\n",
            "GET / HTTP/1.1 extra\r\nHost: a\r\n\r\n",
            "G(T / HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET /\x01 HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET /\x7f HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET /caf\u{e9} HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET\t/ HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET / HTTP/1.1\rX\r\nHost: a\r\n\r\n",
        ];
        for head in cases {
            assert!(parse(head).is_err(), "{head:?} accepted");
        }
    }

    #[test]
    fn unsupported_versions_rejected() {
        for version in [
            "HTTP/2.0",
            "HTTP/0.9",
            "HTTP/3",
            "http/1.1",
            "HTTP/1.",
            "HTTP/1.10",
        ] {
            let head = format!("GET / {version}\r\nHost: a\r\n\r\n");
            assert!(
                rejection(&head).starts_with("unsupported HTTP version"),
                "{version}"
            );
        }
    }

    #[test]
    fn bad_header_fields_rejected() {
        let cases = [
            (
                "Host: a\r\nNo colon here\r\n",
                "a header field line has no colon",
            ),
            ("Host : a\r\n", "a header field name is empty"),
            (
                "Host: a\r\n: empty name\r\n",
                "a header field name is empty",
            ),
            (
                "Host: a\r\nX-A: 1\r\n continued\r\n",
                "obsolete line folding",
            ),
            (
                "Host: a\r\nX-A: 1\x002\r\n",
                "a header field value has a control byte",
            ),
            (
                "Host: a\r\nX-A: 1\x1b2\r\n",
                "a header field value has a control byte",
            ),
            ("", "an HTTP/1.1 request must have a Host"),
            ("Host: a\r\nhost: b\r\n", "more than one Host"),
        ];
        for (fields, reason) in cases {
            let head = format!("GET / HTTP/1.1\r\n{fields}\r\n");
            let rejected = rejection(&head);
            assert!(rejected.starts_with(reason), "{fields:?}: {rejected}");
        }
    }

    #[test]
    fn expect_continue_with_body_closes() {
        let with_body = b"PUT /a HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\
                          Content-Length: 5\r\n\r\n";
        assert!(!parse_request(with_body).unwrap().keep_alive);
        let without_body = b"GET /a HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n";
        assert!(parse_request(without_body).unwrap().keep_alive);
        let without_expect = b"PUT /a HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n";
        assert!(parse_request(without_expect).unwrap().keep_alive);
    }

    #[test]
    fn field_values_with_tabs_and_high_bytes_accepted() {
        let head = b"GET / HTTP/1.1\r\nHost: a\r\nX-A:\t1 \t2\xff\r\n\r\n";
        assert!(parse_request(head).is_ok());
    }

    #[test]
    fn response_head_format() {
        let head = ResponseHead {
            status: Status::METHOD_NOT_ALLOWED,
            content_type: TEXT_PLAIN,
            content_length: 23,
            keep_alive: false,
            version: Version::Http11,
            location: None,
            allow: true,
        };
        let mut out = Vec::new();
        head.write_to(&mut out, "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 405 Method Not Allowed\r\nServer: goro-demo\r\n\
             Date: Sun, 06 Nov 1994 08:49:37 GMT\r\nContent-Type: text/plain; charset=utf-8\r\n\
             Content-Length: 23\r\nAllow: GET, HEAD\r\nConnection: close\r\n\r\n"
        );
    }

    #[test]
    fn response_head_connection_fields() {
        let mut head = ResponseHead {
            status: Status::MOVED_PERMANENTLY,
            content_type: TEXT_PLAIN,
            content_length: 0,
            keep_alive: true,
            version: Version::Http10,
            location: Some(b"/dir/"),
            allow: false,
        };
        let mut out = Vec::new();
        head.write_to(&mut out, "D");
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("\r\nConnection: keep-alive\r\n"), "{text}");
        assert!(text.ends_with("\r\nLocation: /dir/\r\n\r\n"), "{text}");

        head.version = Version::Http11;
        let mut out = Vec::new();
        head.write_to(&mut out, "D");
        let text = String::from_utf8(out).unwrap();
        assert!(!text.contains("Connection"), "{text}");
    }

    #[test]
    fn content_types() {
        assert_eq!(content_type(b"index.html"), "text/html; charset=utf-8");
        assert_eq!(content_type(b"PHOTO.JPG"), "image/jpeg");
        assert_eq!(content_type(b"archive.tar.gz"), "application/gzip");
        assert_eq!(content_type(b"README"), "application/octet-stream");
        assert_eq!(content_type(b"notes."), "application/octet-stream");
        assert_eq!(content_type(b".txt"), TEXT_PLAIN);
    }
}
