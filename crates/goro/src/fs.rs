//! File system calls that go through the syscall protocol.
//!
//! Each function runs the `std::fs` call inside [`blocking`], so a goroutine
//! that waits for the disk lets its P run other goroutines if the call is slow. Outside a
//! goroutine they behave like their `std::fs` counterparts.

use std::fs::{DirEntry, Metadata};
use std::io::{self, Read};
use std::path::Path;

use crate::blocking;

/// A file whose reads go through the syscall protocol.
#[derive(Debug)]
pub struct File {
    inner: std::fs::File,
}

impl File {
    /// Opens a file for reading.
    pub fn open(path: impl AsRef<Path>) -> io::Result<File> {
        let path = path.as_ref();
        blocking(|| std::fs::File::open(path)).map(|inner| File { inner })
    }

    /// The file's metadata.
    pub fn metadata(&self) -> io::Result<Metadata> {
        blocking(|| self.inner.metadata())
    }

    /// The `std::fs::File` inside.
    pub fn into_std(self) -> std::fs::File {
        self.inner
    }
}

impl Read for File {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        blocking(|| self.inner.read(buf))
    }
}

/// The metadata of `path` without following a final symlink.
pub fn symlink_metadata(path: impl AsRef<Path>) -> io::Result<Metadata> {
    let path = path.as_ref();
    blocking(|| std::fs::symlink_metadata(path))
}

/// The metadata of `path`, following symlinks.
pub fn metadata(path: impl AsRef<Path>) -> io::Result<Metadata> {
    let path = path.as_ref();
    blocking(|| std::fs::metadata(path))
}

/// Reads a whole directory listing in one blocking call.
pub fn read_dir(path: impl AsRef<Path>) -> io::Result<Vec<DirEntry>> {
    let path = path.as_ref();
    blocking(|| std::fs::read_dir(path)?.collect())
}

/// Creates (or truncates) a file for writing.
pub fn create(path: impl AsRef<Path>) -> io::Result<std::fs::File> {
    let path = path.as_ref();
    blocking(|| std::fs::File::create(path))
}

/// Writes a whole file.
pub fn write(path: impl AsRef<Path>, contents: impl AsRef<[u8]>) -> io::Result<()> {
    let (path, contents) = (path.as_ref(), contents.as_ref());
    blocking(|| std::fs::write(path, contents))
}

/// Reads a whole file.
pub fn read(path: impl AsRef<Path>) -> io::Result<Vec<u8>> {
    let path = path.as_ref();
    blocking(|| std::fs::read(path))
}
