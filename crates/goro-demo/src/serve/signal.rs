//! SIGINT and SIGTERM, received by one thread with `sigwait`.
//!
//! The signals are blocked before the first other thread starts, so that every thread inherits
//! the mask and the kernel leaves them pending until the waiting thread takes them. No signal
//! handler runs, so the code that reacts to a signal may lock, allocate and write as any
//! other code.

use std::io;
use std::mem::MaybeUninit;

/// The signals that stop the server.
const STOP_SIGNALS: [libc::c_int; 2] = [libc::SIGINT, libc::SIGTERM];

/// SIGINT and SIGTERM, blocked in the calling thread and every thread it starts afterwards.
#[derive(Clone, Copy)]
pub struct StopSignals {
    set: libc::sigset_t,
}

impl StopSignals {
    /// Blocks SIGINT and SIGTERM in the calling thread. Call it before starting any thread, so
    /// that no thread is left to take the signals with their default action (exit).
    pub fn block() -> io::Result<StopSignals> {
        let mut set = MaybeUninit::<libc::sigset_t>::uninit();
        // SAFETY: sigemptyset initializes the set that the pointer refers to.
        if unsafe { libc::sigemptyset(set.as_mut_ptr()) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: sigemptyset above initialized the set.
        let mut set = unsafe { set.assume_init() };
        for signal in STOP_SIGNALS {
            // SAFETY: the set is initialized and the signal number is valid.
            if unsafe { libc::sigaddset(&mut set, signal) } != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        // SAFETY: the set is initialized; a null old set is allowed.
        let result = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
        if result != 0 {
            return Err(io::Error::from_raw_os_error(result));
        }
        Ok(StopSignals { set })
    }

    /// Waits until SIGINT or SIGTERM is pending and takes it. Returns its name.
    pub fn wait(&self) -> io::Result<&'static str> {
        let mut signal: libc::c_int = 0;
        // SAFETY: the set is initialized and `signal` is a valid place for the result.
        let result = unsafe { libc::sigwait(&self.set, &mut signal) };
        if result != 0 {
            return Err(io::Error::from_raw_os_error(result));
        }
        Ok(match signal {
            libc::SIGINT => "SIGINT",
            libc::SIGTERM => "SIGTERM",
            _ => "an unexpected signal",
        })
    }
}
