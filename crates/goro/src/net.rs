//! TCP sockets whose calls go through the syscall protocol.
//!
//! Accepting, connecting and reading usually wait for a peer, so they run as calls known to
//! block (`blocking_known`): the goroutine's P goes to another M at once. Writing usually
//! completes at once, so it runs as an ordinary syscall (`blocking`) and keeps the P unless it
//! stalls. Outside a goroutine they behave like `std::net`.
//!
//! A call blocked in the kernel holds its M until it returns, and dropping the runtime waits
//! for every M (see [`Runtime`](crate::Runtime)). So a goroutine blocked in `accept` or `read`
//! must be made to return before its runtime is dropped.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, ToSocketAddrs};

use crate::{blocking, blocking_known};

/// A TCP listener whose `accept` parks only the calling goroutine's M, never its P.
#[derive(Debug)]
pub struct TcpListener {
    inner: std::net::TcpListener,
}

impl TcpListener {
    /// Binds a listener to `addr`.
    pub fn bind(addr: impl ToSocketAddrs) -> io::Result<TcpListener> {
        blocking(|| std::net::TcpListener::bind(addr)).map(|inner| TcpListener { inner })
    }

    /// Waits for a connection.
    pub fn accept(&self) -> io::Result<(TcpStream, SocketAddr)> {
        blocking_known(|| self.inner.accept()).map(|(inner, addr)| (TcpStream { inner }, addr))
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    /// The `std::net::TcpListener` inside.
    pub fn into_std(self) -> std::net::TcpListener {
        self.inner
    }
}

/// A TCP stream whose reads and writes go through the syscall protocol.
#[derive(Debug)]
pub struct TcpStream {
    inner: std::net::TcpStream,
}

impl TcpStream {
    /// Connects to `addr`.
    pub fn connect(addr: impl ToSocketAddrs) -> io::Result<TcpStream> {
        blocking_known(|| std::net::TcpStream::connect(addr)).map(|inner| TcpStream { inner })
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.inner.peer_addr()
    }

    /// Shuts down the read, write or both halves.
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        blocking(|| self.inner.shutdown(how))
    }

    /// Sets `TCP_NODELAY`.
    pub fn set_nodelay(&self, nodelay: bool) -> io::Result<()> {
        self.inner.set_nodelay(nodelay)
    }

    /// Sets the read timeout (`SO_RCVTIMEO`); `None` waits forever.
    pub fn set_read_timeout(&self, timeout: Option<std::time::Duration>) -> io::Result<()> {
        self.inner.set_read_timeout(timeout)
    }

    /// The `std::net::TcpStream` inside.
    pub fn into_std(self) -> std::net::TcpStream {
        self.inner
    }
}

impl Read for TcpStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        blocking_known(|| self.inner.read(buf))
    }
}

impl Write for TcpStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        blocking(|| self.inner.write(buf))
    }

    fn flush(&mut self) -> io::Result<()> {
        blocking(|| self.inner.flush())
    }
}
