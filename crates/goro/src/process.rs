//! Waiting for child processes through the syscall protocol.

use std::io;
use std::process::{Child, ExitStatus, Output};

use crate::blocking_known;

/// Waits for `child` to exit; the goroutine's P goes to another M meanwhile.
pub fn wait(child: &mut Child) -> io::Result<ExitStatus> {
    blocking_known(|| child.wait())
}

/// Waits for `child` to exit and collects its output.
pub fn wait_with_output(child: Child) -> io::Result<Output> {
    blocking_known(|| child.wait_with_output())
}
