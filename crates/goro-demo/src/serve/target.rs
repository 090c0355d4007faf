//! From a request target to a path relative to the served directory.
//!
//! This is the lexical half of keeping requests inside the directory: the path is
//! percent-decoded, split at `/`, and rejected if any segment is `..`, so neither `/../x` nor
//! `/%2e%2e/x` nor `/a%2f..%2fx` climbs out. Absolute paths cannot escape either, because the
//! segments are appended to the directory one by one. Symbolic links are the other half, which
//! [`super::files`] checks after resolving them.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

/// A request target that names a path under the served directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// The path of the target as sent, still percent-encoded, without the query.
    pub raw_path: Vec<u8>,
    /// The decoded path relative to the served directory. Empty for `/`. It has only normal
    /// components: no root, no `.` and no `..`.
    pub relative: PathBuf,
    /// Whether the path ends in `/`, which a directory's URL must for relative links in its
    /// index to work.
    pub trailing_slash: bool,
}

/// Parses a request target in origin form (`/path?query`) or absolute form
/// (`http://host/path?query`, which RFC 9112 section 3.2.2 requires servers to accept). The
/// query is ignored.
///
/// The error message names what is invalid and quotes nothing of the target.
pub fn parse_target(target: &[u8]) -> Result<Target, &'static str> {
    let path_and_query = if target.starts_with(b"/") {
        target
    } else if let Some(after_scheme) = strip_http_scheme(target) {
        // The authority runs up to the path, the query or the end.
        let path_start = after_scheme
            .iter()
            .position(|&byte| byte == b'/' || byte == b'?')
            .unwrap_or(after_scheme.len());
        &after_scheme[path_start..]
    } else {
        return Err("the request target must be a path starting with '/' or an http:// URL");
    };
    if path_and_query.contains(&b'#') {
        return Err("the request target contains a fragment ('#')");
    }
    let raw_path = match path_and_query.iter().position(|&byte| byte == b'?') {
        Some(query) => &path_and_query[..query],
        None => path_and_query,
    };
    // An absolute-form URL with an empty path means `/`.
    let raw_path = if raw_path.is_empty() { b"/" } else { raw_path };

    let decoded = percent_decode(raw_path)?;
    if decoded.contains(&0) {
        return Err("the path contains a NUL byte");
    }
    let mut relative = PathBuf::new();
    for segment in decoded.split(|&byte| byte == b'/') {
        match segment {
            b"" | b"." => {}
            b".." => return Err("the path contains a '..' segment"),
            name => relative.push(OsStr::from_bytes(name)),
        }
    }
    Ok(Target {
        raw_path: raw_path.to_vec(),
        relative,
        // A last `.` segment stands for the directory it is in, so `/dir/.` ends in a slash
        // once dot segments are removed (RFC 3986 section 5.2.4).
        trailing_slash: decoded.ends_with(b"/") || decoded.ends_with(b"/."),
    })
}

/// Returns what follows `http://` or `https://` (ASCII case-insensitive) in `target`.
fn strip_http_scheme(target: &[u8]) -> Option<&[u8]> {
    [b"http://".as_slice(), b"https://"]
        .into_iter()
        .find(|scheme| {
            target.len() >= scheme.len() && target[..scheme.len()].eq_ignore_ascii_case(scheme)
        })
        .map(|scheme| &target[scheme.len()..])
}

/// Decodes `%XX` escapes (RFC 3986 section 2.1). A `%` without two hex digits after it is
/// invalid.
fn percent_decode(encoded: &[u8]) -> Result<Vec<u8>, &'static str> {
    let mut decoded = Vec::with_capacity(encoded.len());
    let mut index = 0;
    while index < encoded.len() {
        if encoded[index] != b'%' {
            decoded.push(encoded[index]);
            index += 1;
            continue;
        }
        let (Some(high), Some(low)) = (
            encoded.get(index + 1).and_then(hex_value),
            encoded.get(index + 2).and_then(hex_value),
        ) else {
            return Err("the path has a '%' that is not followed by two hex digits");
        };
        decoded.push(high << 4 | low);
        index += 3;
    }
    Ok(decoded)
}

fn hex_value(digit: &u8) -> Option<u8> {
    (*digit as char).to_digit(16).map(|value| value as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn relative(target: &str) -> PathBuf {
        parse_target(target.as_bytes()).unwrap().relative
    }

    #[test]
    fn origin_form_paths() {
        assert_eq!(relative("/"), PathBuf::new());
        assert_eq!(relative("/a/b.txt"), PathBuf::from("a/b.txt"));
        assert_eq!(relative("/a//b/./c"), PathBuf::from("a/b/c"));
        assert_eq!(relative("/a.b/..c/c.."), PathBuf::from("a.b/..c/c.."));
    }

    #[test]
    fn query_ignored() {
        let target = parse_target(b"/dir/?x=../../etc/passwd").unwrap();
        assert_eq!(target.relative, PathBuf::from("dir"));
        assert_eq!(target.raw_path, b"/dir/");
        assert!(target.trailing_slash);
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(relative("/a%20b%25.txt"), PathBuf::from("a b%.txt"));
        assert_eq!(relative("/caf%C3%A9"), PathBuf::from("café"));
        assert_eq!(relative("/x%2Fy"), PathBuf::from("x/y"));
        let raw = parse_target(b"/bin%FF").unwrap().relative;
        assert_eq!(raw.as_os_str().as_bytes(), b"bin\xff");
    }

    #[test]
    fn absolute_form() {
        assert_eq!(relative("http://example.com/a/b"), PathBuf::from("a/b"));
        assert_eq!(relative("HTTPS://example.com:8443/a"), PathBuf::from("a"));
        let target = parse_target(b"http://example.com").unwrap();
        assert_eq!(target.relative, PathBuf::new());
        assert_eq!(target.raw_path, b"/");
        assert!(target.trailing_slash);
        assert_eq!(relative("http://example.com?q"), PathBuf::new());
    }

    #[test]
    fn trailing_slash() {
        assert!(parse_target(b"/dir/").unwrap().trailing_slash);
        assert!(!parse_target(b"/dir").unwrap().trailing_slash);
        assert!(parse_target(b"/dir%2F").unwrap().trailing_slash);
        assert!(parse_target(b"/dir/.").unwrap().trailing_slash);
        assert!(parse_target(b"/dir/%2E").unwrap().trailing_slash);
        assert!(!parse_target(b"/dir/.x").unwrap().trailing_slash);
    }

    #[test]
    fn escapes_rejected() {
        let cases = [
            "/..",
            "/../secret",
            "/a/../../secret",
            "/a/..",
            "/%2e%2e/secret",
            "/%2E%2E/secret",
            "/.%2e/secret",
            "/a%2f..%2fsecret",
            "/a%2F%2E%2E",
            "http://example.com/../secret",
        ];
        for target in cases {
            let error = parse_target(target.as_bytes()).unwrap_err();
            assert_eq!(error, "the path contains a '..' segment", "{target}");
        }
    }

    #[test]
    fn absolute_paths_stay_inside() {
        assert_eq!(relative("//etc/passwd"), PathBuf::from("etc/passwd"));
        assert_eq!(relative("/%2Fetc/passwd"), PathBuf::from("etc/passwd"));
        assert!(relative("//etc/passwd").is_relative());
    }

    #[test]
    fn malformed_targets_rejected() {
        let cases = [
            ("*", "the request target must be a path"),
            ("example.com:443", "the request target must be a path"),
            ("ftp://example.com/a", "the request target must be a path"),
            ("a/b", "the request target must be a path"),
            ("/a#b", "the request target contains a fragment"),
            ("/a%", "the path has a '%'"),
            ("/a%2", "the path has a '%'"),
            ("/a%zz", "the path has a '%'"),
            ("/a%00b", "the path contains a NUL byte"),
        ];
        for (target, reason) in cases {
            let error = parse_target(target.as_bytes()).unwrap_err();
            assert!(error.starts_with(reason), "{target}: {error}");
        }
    }
}
