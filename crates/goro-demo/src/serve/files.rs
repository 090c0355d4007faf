//! Finding the file that a request names, without leaving the served directory.
//!
//! [`resolve`] canonicalizes the requested path, which resolves every symbolic link in it, and
//! serves it only if the result still lies under the canonical served directory. Directories
//! are served through their `index.html`, which passes the same check.

use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::http::content_type;
use super::target::Target;

/// Name of the file served for a directory.
const INDEX_FILE: &str = "index.html";

/// The file system calls of the server, so that the goroutine server makes them through
/// `goro::fs` and the thread-per-connection server through `std::fs`.
pub trait Files {
    /// An open file.
    type File: Read;

    /// Returns the canonical, absolute form of `path`, with every symbolic link resolved.
    fn canonicalize(&self, path: &Path) -> io::Result<PathBuf>;

    /// Returns the type of the file at `path`, following symbolic links.
    fn file_type(&self, path: &Path) -> io::Result<FileType>;

    /// Opens `path` for reading and returns the file with its length in bytes, taken from the
    /// open file so that it describes the file that will be read.
    fn open(&self, path: &Path) -> io::Result<(Self::File, u64)>;
}

/// [`Files`] on `goro::fs`, whose calls let the goroutine's processor run other goroutines
/// while the disk is slow.
#[derive(Clone, Copy, Debug, Default)]
pub struct GoroFiles;

impl Files for GoroFiles {
    type File = goro::fs::File;

    fn canonicalize(&self, path: &Path) -> io::Result<PathBuf> {
        // goro::fs has no canonicalize, so the std call runs inside the same protocol.
        goro::blocking(|| std::fs::canonicalize(path))
    }

    fn file_type(&self, path: &Path) -> io::Result<FileType> {
        goro::fs::metadata(path).map(|metadata| FileType::from(&metadata))
    }

    fn open(&self, path: &Path) -> io::Result<(goro::fs::File, u64)> {
        let file = goro::fs::File::open(path)?;
        let length = file.metadata()?.len();
        Ok((file, length))
    }
}

/// [`Files`] on `std::fs`, for the thread-per-connection server.
#[derive(Clone, Copy, Debug, Default)]
pub struct StdFiles;

impl Files for StdFiles {
    type File = std::fs::File;

    fn canonicalize(&self, path: &Path) -> io::Result<PathBuf> {
        std::fs::canonicalize(path)
    }

    fn file_type(&self, path: &Path) -> io::Result<FileType> {
        std::fs::metadata(path).map(|metadata| FileType::from(&metadata))
    }

    fn open(&self, path: &Path) -> io::Result<(std::fs::File, u64)> {
        let file = std::fs::File::open(path)?;
        let length = file.metadata()?.len();
        Ok((file, length))
    }
}

/// The kinds of file that the server distinguishes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileType {
    /// A regular file, which is served.
    Regular,
    /// A directory, which is served through its index.html.
    Directory,
    /// Anything else (FIFO, socket, device), which is not served: opening a FIFO would block
    /// until a writer came.
    Other,
}

impl From<&std::fs::Metadata> for FileType {
    fn from(metadata: &std::fs::Metadata) -> FileType {
        if metadata.is_file() {
            FileType::Regular
        } else if metadata.is_dir() {
            FileType::Directory
        } else {
            FileType::Other
        }
    }
}

/// A file ready to be sent.
#[derive(Debug)]
pub struct Found<F> {
    /// The open file.
    pub file: F,
    /// Its length in bytes when it was opened.
    pub length: u64,
    /// Its `Content-Type`, from the extension of the requested name (or of `index.html`).
    pub content_type: &'static str,
}

/// The reason a target is not served as a file.
#[derive(Debug)]
pub enum Rejection {
    /// Nothing exists at the path (or a part of it is not a directory): 404.
    NotFound,
    /// A directory was requested without its trailing slash: 301 to the same path with one.
    AddSlash,
    /// The path exists but is not served: 403. The reason is for the log and the response.
    Forbidden(&'static str),
    /// A file system call failed for another reason: 500.
    Failed(io::Error),
}

/// Finds and opens the file for `target` under `root`, which must be canonical.
///
/// The canonical path of the target must lie under `root`, so a symbolic link that points out
/// of it is refused, while one that points elsewhere inside it is followed.
///
/// NOTE: the check and the open are separate calls. Someone who can write to the served
/// directory can swap a checked path for a symbolic link in between, so that a file outside
/// it is served. Opening with `openat2` and `RESOLVE_BENEATH` would close that gap.
pub fn resolve<F: Files>(
    files: &F,
    root: &Path,
    target: &Target,
) -> Result<Found<F::File>, Rejection> {
    let requested = root.join(&target.relative);
    let mut path = canonicalize_inside(files, root, &requested)?;
    let mut file_type = files.file_type(&path).map_err(rejection_from_io)?;
    let mut name = requested
        .file_name()
        .map_or(&[][..], |name| name.as_bytes());

    if file_type == FileType::Directory {
        if !target.trailing_slash {
            return Err(Rejection::AddSlash);
        }
        path = match canonicalize_inside(files, root, &path.join(INDEX_FILE)) {
            Err(Rejection::NotFound) => {
                return Err(Rejection::Forbidden(
                    "the path is a directory without an index.html, and directories are not \
                     listed",
                ));
            }
            other => other?,
        };
        file_type = files.file_type(&path).map_err(rejection_from_io)?;
        name = INDEX_FILE.as_bytes();
    } else if target.trailing_slash {
        // A path that ends in `/` names a directory, so `a.txt/` is not found, as open(2)
        // fails on it with ENOTDIR. Served, the file would resolve relative links too deep.
        return Err(Rejection::NotFound);
    }
    if file_type != FileType::Regular {
        return Err(Rejection::Forbidden("the path is not a regular file"));
    }

    let (file, length) = files.open(&path).map_err(rejection_from_io)?;
    Ok(Found {
        file,
        length,
        content_type: content_type(name),
    })
}

/// Canonicalizes `path` and checks that the result lies under `root`.
fn canonicalize_inside<F: Files>(
    files: &F,
    root: &Path,
    path: &Path,
) -> Result<PathBuf, Rejection> {
    let canonical = files.canonicalize(path).map_err(rejection_from_io)?;
    // Path::starts_with compares whole components, so /srv/www2 is not under /srv/www.
    if !canonical.starts_with(root) {
        return Err(Rejection::Forbidden(
            "the path leads out of the served directory through a symbolic link",
        ));
    }
    Ok(canonical)
}

fn rejection_from_io(error: io::Error) -> Rejection {
    match error.kind() {
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory | io::ErrorKind::InvalidFilename => {
            Rejection::NotFound
        }
        // A symbolic link cycle, or a chain longer than the kernel follows.
        _ if error.raw_os_error() == Some(libc::ELOOP) => Rejection::NotFound,
        io::ErrorKind::PermissionDenied => {
            Rejection::Forbidden("the server has no permission to read the path")
        }
        _ => Rejection::Failed(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serve::target::parse_target;
    use std::fs;
    use std::os::unix::fs::symlink;

    /// A served directory `www` and a sibling `outside`, under a fresh temporary directory.
    struct Tree {
        base: PathBuf,
        root: PathBuf,
    }

    impl Tree {
        fn new(name: &str) -> Tree {
            let base = std::env::temp_dir().join(format!(
                "goro-demo-serve-files-{name}-{}",
                std::process::id()
            ));
            let _ = fs::remove_dir_all(&base);
            fs::create_dir_all(base.join("www/sub")).unwrap();
            fs::create_dir_all(base.join("www/empty")).unwrap();
            fs::create_dir_all(base.join("outside")).unwrap();
            fs::write(base.join("www/a.txt"), b"inside").unwrap();
            fs::write(base.join("www/sub/index.html"), b"<p>index</p>").unwrap();
            fs::write(base.join("outside/secret.txt"), b"secret").unwrap();
            let root = fs::canonicalize(base.join("www")).unwrap();
            Tree { base, root }
        }

        fn resolve(&self, target: &str) -> Result<Found<fs::File>, Rejection> {
            let target = parse_target(target.as_bytes()).unwrap();
            resolve(&StdFiles, &self.root, &target)
        }

        fn read(&self, target: &str) -> (Vec<u8>, &'static str) {
            let mut found = self
                .resolve(target)
                .unwrap_or_else(|refusal| panic!("{target}: {refusal:?}"));
            let mut contents = Vec::new();
            found.file.read_to_end(&mut contents).unwrap();
            assert_eq!(found.length, contents.len() as u64);
            (contents, found.content_type)
        }
    }

    impl Drop for Tree {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.base);
        }
    }

    #[test]
    fn regular_file_served() {
        let tree = Tree::new("regular");
        assert_eq!(
            tree.read("/a.txt"),
            (b"inside".to_vec(), "text/plain; charset=utf-8")
        );
    }

    #[test]
    fn directory_index_served() {
        let tree = Tree::new("index");
        assert_eq!(
            tree.read("/sub/"),
            (b"<p>index</p>".to_vec(), "text/html; charset=utf-8")
        );
        assert!(matches!(tree.resolve("/sub"), Err(Rejection::AddSlash)));
    }

    #[test]
    fn directory_without_index_forbidden() {
        let tree = Tree::new("no-index");
        assert!(matches!(
            tree.resolve("/empty/"),
            Err(Rejection::Forbidden(_))
        ));
        assert!(matches!(tree.resolve("/"), Err(Rejection::Forbidden(_))));
    }

    #[test]
    fn missing_paths_not_found() {
        let tree = Tree::new("missing");
        for target in [
            "/nope",
            "/sub/nope",
            "/a.txt/below",
            "/a.txt/",
            "/a.txt%2F",
            "/a.txt/.",
        ] {
            assert!(
                matches!(tree.resolve(target), Err(Rejection::NotFound)),
                "{target}"
            );
        }
    }

    #[test]
    fn symlinks_outside_forbidden() {
        let tree = Tree::new("escape");
        let secret = tree.base.join("outside/secret.txt");
        symlink(&secret, tree.root.join("absolute-link")).unwrap();
        symlink("../outside/secret.txt", tree.root.join("relative-link")).unwrap();
        symlink("../outside", tree.root.join("dir-link")).unwrap();
        symlink("/", tree.root.join("root-link")).unwrap();
        for target in [
            "/absolute-link",
            "/relative-link",
            "/dir-link/secret.txt",
            "/root-link/etc/passwd",
        ] {
            assert!(
                matches!(tree.resolve(target), Err(Rejection::Forbidden(_))),
                "{target}"
            );
        }
    }

    #[test]
    fn index_symlink_outside_forbidden() {
        let tree = Tree::new("index-escape");
        symlink(
            tree.base.join("outside/secret.txt"),
            tree.root.join("empty/index.html"),
        )
        .unwrap();
        assert!(matches!(
            tree.resolve("/empty/"),
            Err(Rejection::Forbidden(_))
        ));
    }

    #[test]
    fn sibling_with_common_prefix_forbidden() {
        let tree = Tree::new("prefix");
        fs::create_dir(tree.base.join("www2")).unwrap();
        fs::write(tree.base.join("www2/x"), b"x").unwrap();
        symlink("../www2/x", tree.root.join("x")).unwrap();
        assert!(matches!(tree.resolve("/x"), Err(Rejection::Forbidden(_))));
    }

    #[test]
    fn symlinks_inside_followed() {
        let tree = Tree::new("inside");
        symlink("sub/index.html", tree.root.join("page.html")).unwrap();
        symlink("sub", tree.root.join("sub-link")).unwrap();
        assert_eq!(tree.read("/page.html").0, b"<p>index</p>");
        assert_eq!(tree.read("/sub-link/").0, b"<p>index</p>");
    }

    #[test]
    fn symlink_loop_not_found() {
        let tree = Tree::new("loop");
        symlink("loop-b", tree.root.join("loop-a")).unwrap();
        symlink("loop-a", tree.root.join("loop-b")).unwrap();
        assert!(matches!(tree.resolve("/loop-a"), Err(Rejection::NotFound)));
    }

    #[test]
    fn fifo_forbidden() {
        let tree = Tree::new("fifo");
        let status = std::process::Command::new("mkfifo")
            .arg(tree.root.join("pipe"))
            .status()
            .expect("failed to run mkfifo");
        assert!(status.success());
        assert!(matches!(
            tree.resolve("/pipe"),
            Err(Rejection::Forbidden(_))
        ));
    }
}
