//! Walking of directory trees without following symbolic links.
//!
//! The walk selects the entries that `find PATH... -type f` prints: regular files. Symbolic
//! links are never followed, also when one is given as a starting path, so a link to a file or
//! a directory is skipped like a FIFO, socket or device. A directory that is its own ancestor
//! (possible with bind mounts) is reported as a file system loop and not entered again.
//!
//! The walk reaches the file system only through [`FileSystem`], so the runtime can route each
//! call through a blocking-syscall wrapper and the tests can feed it a made-up tree.

use std::collections::HashSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// File type of a path, as `lstat` or a directory entry's `d_type` reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// Anything else: a symbolic link, FIFO, socket or device.
    Other,
}

impl From<fs::FileType> for Kind {
    fn from(file_type: fs::FileType) -> Kind {
        if file_type.is_file() {
            Kind::File
        } else if file_type.is_dir() {
            Kind::Dir
        } else {
            Kind::Other
        }
    }
}

/// The `lstat` result of a path, as far as the walk needs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Node {
    /// File type of the path itself, not of a symbolic link's target.
    pub kind: Kind,
    /// Device number and inode number, which identify a directory for loop detection.
    pub id: (u64, u64),
}

impl From<&fs::Metadata> for Node {
    fn from(metadata: &fs::Metadata) -> Node {
        use std::os::unix::fs::MetadataExt;
        Node {
            kind: Kind::from(metadata.file_type()),
            id: (metadata.dev(), metadata.ino()),
        }
    }
}

/// The file system calls that the walk makes.
pub trait FileSystem {
    /// Returns what `path` names, without following a symbolic link (`lstat`).
    fn symlink_metadata(&self, path: &Path) -> io::Result<Node>;

    /// Returns the full path and kind of every entry of the directory `path`, without `.`
    /// and `..`. An entry whose kind cannot be read carries the error instead.
    fn read_dir(&self, path: &Path) -> io::Result<Vec<(PathBuf, io::Result<Kind>)>>;
}

/// [`FileSystem`] on `std::fs`, which blocks the calling thread; the tests walk real trees
/// with it outside a runtime.
#[cfg(test)]
#[derive(Clone, Copy, Debug, Default)]
pub struct StdFileSystem;

#[cfg(test)]
impl FileSystem for StdFileSystem {
    fn symlink_metadata(&self, path: &Path) -> io::Result<Node> {
        fs::symlink_metadata(path).map(|metadata| Node::from(&metadata))
    }

    fn read_dir(&self, path: &Path) -> io::Result<Vec<(PathBuf, io::Result<Kind>)>> {
        fs::read_dir(path)?
            .map(|entry| {
                let entry = entry?;
                Ok((entry.path(), entry.file_type().map(Kind::from)))
            })
            .collect()
    }
}

/// Result of the walk at one path.
#[derive(Debug)]
pub enum Found {
    /// A regular file to count.
    File(PathBuf),
    /// A path that could not be read, with the reason.
    Error(PathBuf, io::Error),
}

/// A step of the depth-first walk, kept on an explicit stack so that a deep tree cannot
/// overflow a goroutine's stack.
enum Step {
    /// Reads a directory and schedules its entries.
    Enter(PathBuf),
    /// Removes the most recently entered directory from the ancestors.
    Leave,
}

/// Walks `roots` depth first and passes every regular file and every error to `found`.
///
/// A root that is a regular file is passed on as is. A root that is a symbolic link or another
/// non-regular file is skipped, and so is any such entry inside a directory. The entries of one
/// directory are visited in the order that `read_dir` returns them.
pub fn walk<F: FileSystem>(file_system: &F, roots: &[PathBuf], mut found: impl FnMut(Found)) {
    for root in roots {
        match file_system.symlink_metadata(root) {
            Ok(node) => match node.kind {
                Kind::File => found(Found::File(root.clone())),
                Kind::Dir => walk_dir(file_system, root, &mut found),
                Kind::Other => {}
            },
            Err(err) => found(Found::Error(root.clone(), err)),
        }
    }
}

/// Walks the directory `root` and everything below it.
fn walk_dir<F: FileSystem>(file_system: &F, root: &Path, found: &mut impl FnMut(Found)) {
    // The directories from `root` down to the one being read, as path and (dev, ino).
    let mut ancestors: Vec<(PathBuf, (u64, u64))> = Vec::new();
    let mut ancestor_ids: HashSet<(u64, u64)> = HashSet::new();
    let mut steps = vec![Step::Enter(root.to_path_buf())];

    while let Some(step) = steps.pop() {
        let dir = match step {
            Step::Enter(dir) => dir,
            Step::Leave => {
                let (_, id) = ancestors.pop().expect("every Leave follows its Enter");
                ancestor_ids.remove(&id);
                continue;
            }
        };

        let node = match file_system.symlink_metadata(&dir) {
            Ok(node) => node,
            Err(err) => {
                found(Found::Error(dir, err));
                continue;
            }
        };
        if node.kind != Kind::Dir {
            // Replaced by something else since its parent was read.
            if node.kind == Kind::File {
                found(Found::File(dir));
            }
            continue;
        }
        if ancestor_ids.contains(&node.id) {
            let (ancestor, _) = ancestors
                .iter()
                .find(|(_, id)| *id == node.id)
                .expect("ancestor_ids contains only ids of ancestors");
            let message = format!(
                "file system loop detected: same directory as {}",
                ancestor.display()
            );
            found(Found::Error(dir, io::Error::other(message)));
            continue;
        }

        let entries = match file_system.read_dir(&dir) {
            Ok(entries) => entries,
            Err(err) => {
                found(Found::Error(dir, err));
                continue;
            }
        };
        ancestors.push((dir, node.id));
        ancestor_ids.insert(node.id);
        steps.push(Step::Leave);

        // Subdirectories go on the stack in reverse so that they are entered in listing order.
        let first_subdir = steps.len();
        for (path, kind) in entries {
            match kind {
                Ok(Kind::File) => found(Found::File(path)),
                Ok(Kind::Dir) => steps.push(Step::Enter(path)),
                Ok(Kind::Other) => {}
                Err(err) => found(Found::Error(path, err)),
            }
        }
        steps[first_subdir..].reverse();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// A made-up tree: each path maps to its node, and each directory to its entry names.
    #[derive(Default)]
    struct FakeFileSystem {
        nodes: HashMap<PathBuf, Node>,
        entries: HashMap<PathBuf, Vec<&'static str>>,
        unreadable: HashSet<PathBuf>,
    }

    impl FakeFileSystem {
        fn add(&mut self, path: &str, kind: Kind, inode: u64) {
            let node = Node {
                kind,
                id: (1, inode),
            };
            self.nodes.insert(PathBuf::from(path), node);
        }

        fn add_dir(&mut self, path: &str, inode: u64, names: &[&'static str]) {
            self.add(path, Kind::Dir, inode);
            self.entries.insert(PathBuf::from(path), names.to_vec());
        }
    }

    impl FileSystem for FakeFileSystem {
        fn symlink_metadata(&self, path: &Path) -> io::Result<Node> {
            self.nodes
                .get(path)
                .copied()
                .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
        }

        fn read_dir(&self, path: &Path) -> io::Result<Vec<(PathBuf, io::Result<Kind>)>> {
            if self.unreadable.contains(path) {
                return Err(io::Error::from(io::ErrorKind::PermissionDenied));
            }
            let names = self.entries.get(path).ok_or(io::ErrorKind::NotADirectory)?;
            Ok(names
                .iter()
                .map(|name| {
                    let child = path.join(name);
                    let kind = self.symlink_metadata(&child).map(|node| node.kind);
                    (child, kind)
                })
                .collect())
        }
    }

    /// Walks `roots` and returns the files found and the errors as "path: kind or message".
    fn run(file_system: &FakeFileSystem, roots: &[&str]) -> (Vec<String>, Vec<String>) {
        let roots: Vec<PathBuf> = roots.iter().map(PathBuf::from).collect();
        let mut files = Vec::new();
        let mut errors = Vec::new();
        walk(file_system, &roots, |found| match found {
            Found::File(path) => files.push(path.display().to_string()),
            Found::Error(path, err) => errors.push(format!("{}: {err}", path.display())),
        });
        (files, errors)
    }

    #[test]
    fn nested_tree_in_listing_order() {
        let mut tree = FakeFileSystem::default();
        tree.add_dir("/r", 1, &["a", "sub", "b", "sub2"]);
        tree.add("/r/a", Kind::File, 2);
        tree.add_dir("/r/sub", 3, &["c", "deep"]);
        tree.add("/r/sub/c", Kind::File, 4);
        tree.add_dir("/r/sub/deep", 5, &["d"]);
        tree.add("/r/sub/deep/d", Kind::File, 6);
        tree.add("/r/b", Kind::File, 7);
        tree.add_dir("/r/sub2", 8, &["e"]);
        tree.add("/r/sub2/e", Kind::File, 9);

        let (files, errors) = run(&tree, &["/r"]);
        assert_eq!(
            files,
            ["/r/a", "/r/b", "/r/sub/c", "/r/sub/deep/d", "/r/sub2/e"]
        );
        assert!(errors.is_empty(), "{errors:?}");
    }

    #[test]
    fn symlinks_and_special_files_skipped() {
        let mut tree = FakeFileSystem::default();
        tree.add_dir("/r", 1, &["link", "fifo", "f"]);
        tree.add("/r/link", Kind::Other, 2);
        tree.add("/r/fifo", Kind::Other, 3);
        tree.add("/r/f", Kind::File, 4);
        tree.add("/link-root", Kind::Other, 5);

        let (files, errors) = run(&tree, &["/link-root", "/r"]);
        assert_eq!(files, ["/r/f"]);
        assert!(errors.is_empty(), "{errors:?}");
    }

    #[test]
    fn file_roots_kept_in_order() {
        let mut tree = FakeFileSystem::default();
        tree.add("/x", Kind::File, 1);
        tree.add("/y", Kind::File, 2);

        let (files, _) = run(&tree, &["/y", "/x", "/y"]);
        assert_eq!(files, ["/y", "/x", "/y"]);
    }

    #[test]
    fn missing_root_reported() {
        let mut tree = FakeFileSystem::default();
        tree.add("/x", Kind::File, 1);

        let (files, errors) = run(&tree, &["/gone", "/x"]);
        assert_eq!(files, ["/x"]);
        assert_eq!(errors.len(), 1);
        assert!(errors[0].starts_with("/gone: "), "{errors:?}");
    }

    #[test]
    fn unreadable_dir_reported_and_siblings_walked() {
        let mut tree = FakeFileSystem::default();
        tree.add_dir("/r", 1, &["locked", "f"]);
        tree.add_dir("/r/locked", 2, &["hidden"]);
        tree.add("/r/locked/hidden", Kind::File, 3);
        tree.add("/r/f", Kind::File, 4);
        tree.unreadable.insert(PathBuf::from("/r/locked"));

        let (files, errors) = run(&tree, &["/r"]);
        assert_eq!(files, ["/r/f"]);
        assert_eq!(errors.len(), 1);
        assert!(errors[0].starts_with("/r/locked: "), "{errors:?}");
    }

    #[test]
    fn vanished_entry_reported() {
        let mut tree = FakeFileSystem::default();
        // "gone" is listed, but has no node: it vanished between readdir and lstat.
        tree.add_dir("/r", 1, &["gone", "f"]);
        tree.add("/r/f", Kind::File, 2);

        let (files, errors) = run(&tree, &["/r"]);
        assert_eq!(files, ["/r/f"]);
        assert_eq!(errors.len(), 1);
        assert!(errors[0].starts_with("/r/gone: "), "{errors:?}");
    }

    #[test]
    fn directory_loop_reported_once() {
        let mut tree = FakeFileSystem::default();
        // /r/a/back is a bind mount of /r: it has the same (dev, ino) as /r.
        tree.add_dir("/r", 1, &["a", "f"]);
        tree.add_dir("/r/a", 2, &["back", "g"]);
        tree.add_dir("/r/a/back", 1, &["a", "f"]);
        tree.add("/r/f", Kind::File, 3);
        tree.add("/r/a/g", Kind::File, 4);

        let (files, errors) = run(&tree, &["/r"]);
        assert_eq!(files, ["/r/f", "/r/a/g"]);
        assert_eq!(
            errors,
            ["/r/a/back: file system loop detected: same directory as /r"]
        );
    }

    #[test]
    fn same_directory_twice_not_a_loop() {
        // Two roots naming one directory, and two sibling bind mounts of one directory, are
        // walked twice each, as `find` does: neither is its own ancestor.
        let mut tree = FakeFileSystem::default();
        tree.add_dir("/r", 1, &["m1", "m2"]);
        tree.add_dir("/r/m1", 2, &["f"]);
        tree.add_dir("/r/m2", 2, &["f"]);
        tree.add("/r/m1/f", Kind::File, 3);
        tree.add("/r/m2/f", Kind::File, 3);

        let (files, errors) = run(&tree, &["/r", "/r/m1"]);
        assert_eq!(files, ["/r/m1/f", "/r/m2/f", "/r/m1/f"]);
        assert!(errors.is_empty(), "{errors:?}");
    }

    #[test]
    fn deep_tree_walked_in_small_stack() {
        // Recursing once per level would need far more than 64 KiB for 2000 levels.
        const DEPTH: u64 = 2000;
        let mut tree = FakeFileSystem::default();
        let mut path = String::from("/d");
        for depth in 0..DEPTH {
            tree.add_dir(&path, depth + 1, &["d"]);
            path.push_str("/d");
        }
        tree.add(&path, Kind::File, DEPTH + 1);

        let walker = std::thread::Builder::new()
            .stack_size(64 * 1024)
            .spawn(move || run(&tree, &["/d"]))
            .unwrap();
        let (files, errors) = walker.join().expect("the walk overflowed a 64 KiB stack");
        assert_eq!(files, [path]);
        assert!(errors.is_empty(), "{errors:?}");
    }

    #[test]
    fn std_file_system_on_real_tree() {
        let root = std::env::temp_dir().join(format!("goro-demo-walk-{}", std::process::id()));
        fs::create_dir_all(root.join("sub")).unwrap();
        fs::write(root.join("f"), b"x").unwrap();
        fs::write(root.join("sub/g"), b"y").unwrap();
        std::os::unix::fs::symlink(root.join("f"), root.join("link")).unwrap();
        std::os::unix::fs::symlink(root.join("sub"), root.join("dirlink")).unwrap();

        let mut files = Vec::new();
        let mut errors = Vec::new();
        walk(
            &StdFileSystem,
            std::slice::from_ref(&root),
            |found| match found {
                Found::File(path) => files.push(path),
                Found::Error(path, err) => errors.push(format!("{}: {err}", path.display())),
            },
        );
        fs::remove_dir_all(&root).unwrap();

        files.sort();
        assert_eq!(files, [root.join("f"), root.join("sub/g")]);
        assert!(errors.is_empty(), "{errors:?}");
    }
}
