//! The crate's error type.

use std::fmt;

/// The process's mapping count against the kernel's limit `vm.max_map_count`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapCount {
    /// Entries in the process's mapping table (lines of `/proc/self/maps`) when the call failed.
    pub current: usize,
    /// The limit, from `/proc/sys/vm/max_map_count`.
    pub max: usize,
}

/// Error from creating a stack, a pool or an alternate signal stack.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StackError {
    /// The requested usable stack size lies outside `min..=max`.
    InvalidSize {
        /// The requested size in bytes.
        size: usize,
        /// [`MIN_STACK_SIZE`](crate::MIN_STACK_SIZE).
        min: usize,
        /// [`MAX_STACK_SIZE`](crate::MAX_STACK_SIZE).
        max: usize,
    },
    /// The requested guard size lies outside `min..=max`.
    InvalidGuardSize {
        /// The requested size in bytes.
        size: usize,
        /// One page.
        min: usize,
        /// [`MAX_GUARD_SIZE`](crate::MAX_GUARD_SIZE).
        max: usize,
    },
    /// The requested slab size lies outside `min..=max`.
    InvalidSlabSize {
        /// The requested size in bytes.
        size: usize,
        /// [`MIN_SLAB_SIZE`](crate::MIN_SLAB_SIZE).
        min: usize,
        /// [`MAX_SLAB_SIZE`](crate::MAX_SLAB_SIZE).
        max: usize,
    },
    /// `mmap` or `mprotect` failed while mapping a stack.
    MapFailed {
        /// The system call that failed: `"mmap"` or `"mprotect"`.
        call: &'static str,
        /// Usable size of the stack in bytes, rounded to pages.
        size: usize,
        /// Size of its guard in bytes.
        guard_size: usize,
        /// The `errno` the call set.
        errno: i32,
        /// Set when the mapping table is nearly full, so that `vm.max_map_count` is the likely
        /// cause.
        map_count: Option<MapCount>,
    },
    /// `mmap` or `mprotect` failed while mapping a slab of stacks.
    SlabMapFailed {
        /// The system call that failed: `"mmap"` or `"mprotect"`.
        call: &'static str,
        /// Size of the slab in bytes, guard included.
        slab_size: usize,
        /// Number of stacks the slab holds.
        stacks: usize,
        /// Size of each stack in bytes, canary included.
        stack_size: usize,
        /// The `errno` the call set.
        errno: i32,
        /// Set when the mapping table is nearly full, so that `vm.max_map_count` is the likely
        /// cause.
        map_count: Option<MapCount>,
    },
    /// `mmap`, `mprotect` or `sigaltstack` failed while installing an alternate signal stack.
    AltStackFailed {
        /// The system call that failed.
        call: &'static str,
        /// Usable size of the alternate signal stack in bytes.
        size: usize,
        /// The `errno` the call set.
        errno: i32,
        /// Set when the mapping table is nearly full, so that `vm.max_map_count` is the likely
        /// cause.
        map_count: Option<MapCount>,
    },
}

impl StackError {
    /// Returns the `errno` of a failed system call, or `None` for a validation error.
    pub fn errno(&self) -> Option<i32> {
        match *self {
            StackError::MapFailed { errno, .. }
            | StackError::SlabMapFailed { errno, .. }
            | StackError::AltStackFailed { errno, .. } => Some(errno),
            StackError::InvalidSize { .. }
            | StackError::InvalidGuardSize { .. }
            | StackError::InvalidSlabSize { .. } => None,
        }
    }

    /// Returns the mapping count when `vm.max_map_count` is the likely cause of the failure.
    pub fn map_count(&self) -> Option<MapCount> {
        match *self {
            StackError::MapFailed { map_count, .. }
            | StackError::SlabMapFailed { map_count, .. }
            | StackError::AltStackFailed { map_count, .. } => map_count,
            StackError::InvalidSize { .. }
            | StackError::InvalidGuardSize { .. }
            | StackError::InvalidSlabSize { .. } => None,
        }
    }
}

impl fmt::Display for StackError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            StackError::InvalidSize { size, min, max } => write!(
                f,
                "invalid stack size {size} bytes: request between {min} and {max} bytes \
                 (MIN_STACK_SIZE..=MAX_STACK_SIZE)"
            ),
            StackError::InvalidGuardSize { size, min, max } => write!(
                f,
                "invalid guard size {size} bytes: request between {min} bytes (one page) and \
                 {max} bytes (MAX_GUARD_SIZE)"
            ),
            StackError::InvalidSlabSize { size, min, max } => write!(
                f,
                "invalid slab size {size} bytes: request between {min} and {max} bytes \
                 (MIN_SLAB_SIZE..=MAX_SLAB_SIZE)"
            ),
            StackError::MapFailed {
                call,
                size,
                guard_size,
                errno,
                map_count,
            } => {
                write!(
                    f,
                    "{call} failed for a stack of {size} bytes with a {guard_size}-byte guard: {}",
                    std::io::Error::from_raw_os_error(errno)
                )?;
                write_advice(f, errno, map_count, Mapped::Stack)
            }
            StackError::SlabMapFailed {
                call,
                slab_size,
                stacks,
                stack_size,
                errno,
                map_count,
            } => {
                write!(
                    f,
                    "{call} failed for a slab of {slab_size} bytes ({stacks} stacks of \
                     {stack_size} bytes): {}",
                    std::io::Error::from_raw_os_error(errno)
                )?;
                write_advice(f, errno, map_count, Mapped::Slab)
            }
            StackError::AltStackFailed {
                call,
                size,
                errno,
                map_count,
            } => {
                write!(
                    f,
                    "{call} failed for an alternate signal stack of {size} bytes: {}",
                    std::io::Error::from_raw_os_error(errno)
                )?;
                write_advice(f, errno, map_count, Mapped::AltStack)
            }
        }
    }
}

/// The kind of memory whose mapping failed, which selects the advice on an `ENOMEM`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mapped {
    Stack,
    Slab,
    AltStack,
}

/// Appends what to do about an `ENOMEM`; other errno values get no advice.
fn write_advice(
    f: &mut fmt::Formatter<'_>,
    errno: i32,
    map_count: Option<MapCount>,
    mapped: Mapped,
) -> fmt::Result {
    if let Some(MapCount { current, max }) = map_count {
        let (unit, remedy) = match mapped {
            Mapped::Slab => (
                "slab",
                "use fewer stacks or larger slabs (PoolConfig::slab_size)",
            ),
            Mapped::Stack | Mapped::AltStack => (
                "stack",
                "use fewer stacks, or slab stacks (PoolConfig::slab), which share mappings",
            ),
        };
        return write!(
            f,
            "; the process has {current} memory mappings and vm.max_map_count is {max}, and each \
             {unit} takes 2: raise the limit (sysctl -w vm.max_map_count=N) or {remedy}"
        );
    }
    if errno == libc::ENOMEM {
        return write!(
            f,
            "; the address space or memory is exhausted: check the address-space limit \
             (ulimit -v) and vm.overcommit_memory, or use fewer or smaller stacks"
        );
    }
    Ok(())
}

impl std::error::Error for StackError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_size_names_size_and_range() {
        let error = StackError::InvalidSize {
            size: 100,
            min: 16384,
            max: 1 << 30,
        };
        let message = error.to_string();
        assert!(message.contains("100 bytes"), "{message}");
        assert!(message.contains("16384"), "{message}");
        assert!(message.contains("1073741824"), "{message}");
        assert_eq!(error.errno(), None);
    }

    #[test]
    fn map_failure_names_map_count_limit() {
        let error = StackError::MapFailed {
            call: "mprotect",
            size: 65536,
            guard_size: 4096,
            errno: libc::ENOMEM,
            map_count: Some(MapCount {
                current: 65529,
                max: 65530,
            }),
        };
        let message = error.to_string();
        assert!(
            message.starts_with("mprotect failed for a stack of 65536 bytes"),
            "{message}"
        );
        assert!(message.contains("os error 12"), "{message}");
        assert!(message.contains("65529 memory mappings"), "{message}");
        assert!(message.contains("vm.max_map_count is 65530"), "{message}");
        assert!(message.contains("sysctl -w vm.max_map_count="), "{message}");
        assert_eq!(error.errno(), Some(libc::ENOMEM));
    }

    #[test]
    fn map_failure_without_map_count() {
        let error = StackError::MapFailed {
            call: "mmap",
            size: 1 << 30,
            guard_size: 16384,
            errno: libc::ENOMEM,
            map_count: None,
        };
        let message = error.to_string();
        assert!(message.contains("ulimit -v"), "{message}");
        assert!(!message.contains("max_map_count"), "{message}");
    }

    #[test]
    fn slab_map_failure_names_slab_and_remedy() {
        let error = StackError::SlabMapFailed {
            call: "mmap",
            slab_size: 67_112_960,
            stacks: 3276,
            stack_size: 20480,
            errno: libc::ENOMEM,
            map_count: Some(MapCount {
                current: 65500,
                max: 65530,
            }),
        };
        let message = error.to_string();
        assert!(
            message.starts_with(
                "mmap failed for a slab of 67112960 bytes (3276 stacks of 20480 bytes)"
            ),
            "{message}"
        );
        assert!(message.contains("each slab takes 2"), "{message}");
        assert!(message.contains("PoolConfig::slab_size"), "{message}");
        assert_eq!(error.errno(), Some(libc::ENOMEM));
        assert!(error.map_count().is_some());
    }

    #[test]
    fn invalid_slab_size_names_range() {
        let error = StackError::InvalidSlabSize {
            size: 4096,
            min: 1 << 20,
            max: 1 << 34,
        };
        let message = error.to_string();
        assert!(
            message.starts_with("invalid slab size 4096 bytes"),
            "{message}"
        );
        assert!(message.contains("1048576"), "{message}");
        assert!(message.contains("17179869184"), "{message}");
        assert_eq!(error.errno(), None);
    }

    #[test]
    fn other_errno_gets_no_advice() {
        let error = StackError::AltStackFailed {
            call: "sigaltstack",
            size: 65536,
            errno: libc::EPERM,
            map_count: None,
        };
        let message = error.to_string();
        assert!(message.starts_with("sigaltstack failed"), "{message}");
        assert!(!message.contains(';'), "{message}");
    }
}
