//! Page size, the memory-mapping system calls, and the diagnosis of a full mapping table.

use std::fs::File;
use std::io::Read;
use std::ptr;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::error::MapCount;

/// Cached `sysconf(_SC_PAGESIZE)`; 0 until the first call of [`page_size`].
static PAGE_SIZE: AtomicUsize = AtomicUsize::new(0);

/// Returns the size of a virtual memory page in bytes.
///
/// Stack sizes, guard sizes and stack addresses are multiples of it. The value comes from
/// `sysconf(_SC_PAGESIZE)` once and is cached, so later calls are a single load and are safe
/// inside a signal handler.
pub fn page_size() -> usize {
    // Relaxed: every thread computes the same value, so a race only repeats the sysconf call.
    let cached = PAGE_SIZE.load(Ordering::Relaxed);
    if cached != 0 {
        return cached;
    }
    // SAFETY: sysconf has no preconditions.
    let raw = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    let size = usize::try_from(raw).unwrap_or(0);
    assert!(
        size.is_power_of_two(),
        "page_size: sysconf(_SC_PAGESIZE) returned {raw}, which is not a power of two"
    );
    PAGE_SIZE.store(size, Ordering::Relaxed);
    size
}

/// Rounds `bytes` up to a multiple of the page size, or returns `None` on overflow.
pub(crate) fn round_up_to_pages(bytes: usize) -> Option<usize> {
    bytes.checked_next_multiple_of(page_size())
}

/// Returns the calling thread's `errno`.
pub(crate) fn last_errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// A failed system call: its name and the `errno` it set.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SysError {
    pub(crate) call: &'static str,
    pub(crate) errno: i32,
    /// Set when [`map_stack_memory`] rejected the mapping without calling the kernel, because
    /// the stack entry budget was spent.
    pub(crate) over_budget: bool,
}

impl SysError {
    /// Returns the error of a call that the kernel failed.
    fn kernel(call: &'static str, errno: i32) -> SysError {
        SysError {
            call,
            errno,
            over_budget: false,
        }
    }

    /// Returns the process's mapping count when it is the likely cause of this error, which
    /// only `ENOMEM` can be. A rejection by the budget is counted from the budget's own numbers.
    /// So a caller that retries, such as a runtime that waits for goroutines to exit, does not
    /// read `/proc/self/maps` at every attempt.
    pub(crate) fn map_count(&self) -> Option<MapCount> {
        if self.errno != libc::ENOMEM {
            return None;
        }
        if self.over_budget
            && let Some(budget) = budget()
        {
            // Relaxed: as in `map_stack_memory`; an estimate for the message.
            let stack_entries = STACK_ENTRIES.load(Ordering::Relaxed);
            return Some(MapCount {
                current: budget.baseline + stack_entries,
                max: budget.max,
            });
        }
        map_count_near_limit()
    }
}

/// Maps `guard_size + usable_size` bytes of private anonymous memory whose lowest `guard_size`
/// bytes stay `PROT_NONE` and whose rest is readable and writable. Returns the base address
/// (the start of the guard).
///
/// Both sizes must be non-zero multiples of the page size. The mapping takes two entries of the
/// process's mapping table (the guard and the usable range), because their protections differ.
pub(crate) fn map_guarded(guard_size: usize, usable_size: usize) -> Result<usize, SysError> {
    debug_assert!(guard_size > 0 && guard_size.is_multiple_of(page_size()));
    debug_assert!(usable_size > 0 && usable_size.is_multiple_of(page_size()));
    let len = guard_size + usable_size;

    // MAP_NORESERVE: a stack is touched sparsely, so the kernel's overcommit heuristic should not
    // charge the whole range up front. Since Linux 6.7, MAP_STACK also keeps transparent huge
    // pages off the range, so a stack of 2 MiB or more is not backed 2 MiB at a time.
    let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE | libc::MAP_STACK;
    // SAFETY: an anonymous mapping at an address the kernel chooses replaces no existing memory.
    let base = unsafe { libc::mmap(ptr::null_mut(), len, libc::PROT_NONE, flags, -1, 0) };
    if base == libc::MAP_FAILED {
        return Err(SysError::kernel("mmap", last_errno()));
    }

    let usable = base as usize + guard_size;
    let protection = libc::PROT_READ | libc::PROT_WRITE;
    // SAFETY: the range lies inside the mapping created above, which nothing else references.
    let rc = unsafe { libc::mprotect(usable as *mut libc::c_void, usable_size, protection) };
    if rc != 0 {
        let errno = last_errno();
        // SAFETY: the whole mapping was created above and nothing else references it.
        unsafe { unmap(base as usize, len) };
        return Err(SysError::kernel("mprotect", errno));
    }
    Ok(base as usize)
}

/// Mapping-table entries that goroutine stacks and slabs leave to the rest of the process.
///
/// A thread that starts when the table is nearly full can get its stack mapped and then fail
/// to map std's signal stack, which aborts the process. Stopping stack mappings this far below
/// `vm.max_map_count` leaves room for threads that claim no [`ThreadEntries`] (about 4 entries
/// each), malloc arenas and, under QEMU user mode, the emulator's own mappings, which
/// `/proc/self/maps` does not list.
const RESERVED_ENTRIES: usize = 1024;

/// Mapping-table entries held by mappings of [`map_stack_memory`], 2 each, and by
/// [`ThreadEntries`].
static STACK_ENTRIES: AtomicUsize = AtomicUsize::new(0);

/// The mapping-table counts behind the stack entry budget, read once.
struct Budget {
    /// `vm.max_map_count`.
    max: usize,
    /// Entries the process had at the first call.
    baseline: usize,
    /// Entries that [`map_stack_memory`] and [`ThreadEntries`] may hold together.
    entries: usize,
}

/// Returns the budget, or `None` when the counts cannot be read.
fn budget() -> Option<&'static Budget> {
    static BUDGET: OnceLock<Option<Budget>> = OnceLock::new();
    BUDGET
        .get_or_init(|| {
            let (max, baseline) = (read_max_map_count()?, count_own_mappings()?);
            Some(Budget {
                max,
                baseline,
                entries: max
                    .saturating_sub(baseline)
                    .saturating_sub(RESERVED_ENTRIES),
            })
        })
        .as_ref()
}

/// Returns how many entries [`map_stack_memory`] may hold: what the process had free at the
/// first call, minus [`RESERVED_ENTRIES`], or `usize::MAX` when the counts cannot be read.
fn stack_entry_budget() -> usize {
    budget().map_or(usize::MAX, |budget| budget.entries)
}

/// A claim on the mapping-table entries of one thread, counted against the budget that
/// goroutine stacks and slabs use. Dropping it gives the entries back.
///
/// A runtime that starts threads on demand (one per goroutine blocked in a syscall) could
/// otherwise fill the table with threads alone, past any fixed reserve. A thread holds
/// [`ThreadEntries::PER_THREAD`] entries: its stack and guard page, and the alternate signal
/// stacks and guard pages that std and a runtime's overflow handler each map.
#[derive(Debug)]
pub struct ThreadEntries(());

impl ThreadEntries {
    /// Mapping-table entries counted for one thread.
    pub const PER_THREAD: usize = 6;

    /// Claims the entries of one new thread, or returns `None` when the thread would eat
    /// into the entries reserved for the rest of the process.
    pub fn reserve() -> Option<ThreadEntries> {
        // Relaxed: as in `map_stack_memory`.
        let entries = STACK_ENTRIES.fetch_add(Self::PER_THREAD, Ordering::Relaxed);
        if entries + Self::PER_THREAD > stack_entry_budget() {
            STACK_ENTRIES.fetch_sub(Self::PER_THREAD, Ordering::Relaxed);
            return None;
        }
        Some(ThreadEntries(()))
    }
}

impl Drop for ThreadEntries {
    fn drop(&mut self) {
        // Relaxed: as in `map_stack_memory`.
        STACK_ENTRIES.fetch_sub(Self::PER_THREAD, Ordering::Relaxed);
    }
}

/// [`map_guarded`] for goroutine stacks and slabs: fails with `ENOMEM` when the mapping
/// would eat into the entries reserved for threads (see [`RESERVED_ENTRIES`]). Free the
/// mapping with [`unmap_stack_memory`].
pub(crate) fn map_stack_memory(guard_size: usize, usable_size: usize) -> Result<usize, SysError> {
    // Relaxed: the count is its own synchronization. Taking the entries before the check
    // means concurrent callers cannot pass the check together and overshoot the budget.
    let entries_with_this = STACK_ENTRIES.fetch_add(2, Ordering::Relaxed) + 2;
    let mapped = if entries_with_this > stack_entry_budget() {
        Err(SysError {
            call: "mmap",
            errno: libc::ENOMEM,
            over_budget: true,
        })
    } else {
        map_guarded(guard_size, usable_size)
    };
    if mapped.is_err() {
        // Relaxed: as above.
        STACK_ENTRIES.fetch_sub(2, Ordering::Relaxed);
    }
    mapped
}

/// Unmaps a whole mapping of [`map_stack_memory`] and gives its entries back.
///
/// # Safety
///
/// As [`unmap`], and `base` and `len` cover the whole mapping.
pub(crate) unsafe fn unmap_stack_memory(base: usize, len: usize) {
    // SAFETY: the caller's contract.
    unsafe { unmap(base, len) };
    // Relaxed: as in `map_stack_memory`.
    STACK_ENTRIES.fetch_sub(2, Ordering::Relaxed);
}

/// Unmaps `len` bytes at `base`.
///
/// # Safety
///
/// The range must be a mapping (or whole pages of one) that this crate created and that nothing
/// will access again.
pub(crate) unsafe fn unmap(base: usize, len: usize) {
    // SAFETY: the caller hands over a range of our own mapping that is no longer used.
    let rc = unsafe { libc::munmap(base as *mut libc::c_void, len) };
    // munmap fails on invalid arguments, which would be a bug here, or with ENOMEM when the
    // kernel merged the range with a neighbour and splitting it needs an entry of a full mapping
    // table. Then the range stays mapped, so the memory leaks but is never handed out again.
    debug_assert!(
        rc == 0 || last_errno() == libc::ENOMEM,
        "munmap({base:#x}, {len}) failed: errno {}",
        last_errno()
    );
}

/// Gives the pages of `[start, start + len)` back to the kernel; they read as zeros afterwards.
///
/// MADV_DONTNEED rather than MADV_FREE: the memory leaves the process's resident set at once,
/// so RSS shows the release, and the discarded pages read as zeros rather than as whatever the
/// kernel has not reclaimed yet.
///
/// # Safety
///
/// The range must lie in a readable and writable mapping of this crate, and its contents must
/// be dead.
pub(crate) unsafe fn discard(start: usize, len: usize) {
    if len == 0 {
        return;
    }
    // madvise fails on pages locked by mlock or mlockall (EINVAL). The pages then stay
    // resident, which costs memory but is otherwise harmless, so the result is ignored.
    // SAFETY: the caller vouches that the range is ours and its contents are dead.
    let _ = unsafe { libc::madvise(start as *mut libc::c_void, len, libc::MADV_DONTNEED) };
}

/// Asks the kernel not to back `[start, start + len)` with transparent huge pages.
///
/// A slab spans many stacks, and where `/sys/kernel/mm/transparent_hugepage/enabled` is
/// `always`, touching one page of a stack could commit 2 MiB. `MAP_STACK` has the same effect
/// since Linux 6.7; this call covers older kernels.
///
/// # Safety
///
/// The range must be a whole mapping of this crate, or whole pages of one.
pub(crate) unsafe fn disable_huge_pages(start: usize, len: usize) {
    // madvise fails with EINVAL on a kernel built without transparent huge pages, which then
    // cannot back the range with them anyway, so the result is ignored.
    // SAFETY: the caller vouches that the range is ours; the advice changes no contents.
    let _ = unsafe { libc::madvise(start as *mut libc::c_void, len, libc::MADV_NOHUGEPAGE) };
}

/// Returns the process's mapping count and `vm.max_map_count` when the count is close enough
/// to the limit that the limit is the likely cause of an `ENOMEM` from `mmap` or `mprotect`.
///
/// "Close enough" means within 1/16 of the limit (4,095 entries at the default of 65,530). The
/// slack covers mappings that `/proc/self/maps` does not show, such as those of an emulator
/// like QEMU user mode, which lists only the guest's mappings.
pub(crate) fn map_count_near_limit() -> Option<MapCount> {
    let max = read_max_map_count()?;
    let current = count_own_mappings()?;
    if current.saturating_add(max / 16) >= max {
        Some(MapCount { current, max })
    } else {
        None
    }
}

fn read_max_map_count() -> Option<usize> {
    let text = std::fs::read_to_string("/proc/sys/vm/max_map_count").ok()?;
    text.trim().parse().ok()
}

/// Counts the lines of `/proc/self/maps`: one per mapping table entry.
pub(crate) fn count_own_mappings() -> Option<usize> {
    let mut file = File::open("/proc/self/maps").ok()?;
    // On the heap: this runs on a goroutine's stack when a spawn fails, and goroutine stacks
    // may be as small as 16 KiB.
    let mut buffer = vec![0u8; 64 * 1024];
    let mut lines = 0;
    loop {
        match file.read(&mut buffer) {
            Ok(0) => return Some(lines),
            Ok(read) => lines += buffer[..read].iter().filter(|&&b| b == b'\n').count(),
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_rejection_counts_without_kernel() {
        let rejection = SysError {
            call: "mmap",
            errno: libc::ENOMEM,
            over_budget: true,
        };
        let Some(budget) = budget() else {
            eprintln!("skipped: the mapping counts are unreadable here");
            return;
        };
        let count = rejection
            .map_count()
            .expect("a budget rejection names the mapping count");
        assert_eq!(count.max, budget.max);
        assert!(count.current >= budget.baseline, "{count:?}");

        let other = SysError::kernel("mprotect", libc::EACCES);
        assert_eq!(other.map_count(), None);
    }

    #[test]
    fn page_size_is_power_of_two() {
        let size = page_size();
        assert!(size.is_power_of_two(), "{size}");
        assert!(size >= 4096, "{size}");
        assert_eq!(page_size(), size, "cached value differs");
    }

    #[test]
    fn round_up_to_pages_rounds() {
        let page = page_size();
        assert_eq!(round_up_to_pages(0), Some(0));
        assert_eq!(round_up_to_pages(1), Some(page));
        assert_eq!(round_up_to_pages(page), Some(page));
        assert_eq!(round_up_to_pages(page + 1), Some(2 * page));
        assert_eq!(round_up_to_pages(usize::MAX), None);
    }

    #[test]
    fn map_guarded_protects_guard() {
        let page = page_size();
        let base = map_guarded(page, 4 * page).expect("map_guarded failed");
        // The usable range is writable from its first to its last byte.
        for offset in [page, 5 * page - 1] {
            // SAFETY: the byte lies in the readable and writable part of the mapping.
            unsafe { ptr::write_volatile((base + offset) as *mut u8, 0xa5) };
        }
        // The guard's entry may start lower: the kernel merges it with a PROT_NONE mapping
        // that another test thread (or a new malloc arena) placed right below it.
        let (guard_start, guard_end, guard_perms) =
            protection_at(base).expect("the guard has no /proc/self/maps entry");
        assert!(
            guard_start <= base,
            "guard starts at {guard_start:#x}, above {base:#x}"
        );
        assert_eq!(guard_end, base + page, "guard end");
        assert_eq!(guard_perms, "---p", "guard permissions");
        // Likewise, the usable range's entry may end higher.
        let (usable_start, usable_end, usable_perms) =
            protection_at(base + page).expect("the usable range has no /proc/self/maps entry");
        assert_eq!(usable_start, base + page, "usable range start");
        assert!(
            usable_end >= base + 5 * page,
            "usable range ends at {usable_end:#x}"
        );
        assert_eq!(usable_perms, "rw-p", "usable range permissions");
        // SAFETY: the mapping was created above and is not used afterwards.
        unsafe { unmap(base, 5 * page) };
    }

    #[test]
    fn own_mappings_are_counted() {
        let count = count_own_mappings().expect("/proc/self/maps is unreadable");
        assert!(count > 0);
    }

    /// Returns the bounds and permissions of the `/proc/self/maps` entry containing `address`.
    fn protection_at(address: usize) -> Option<(usize, usize, String)> {
        let maps = std::fs::read_to_string("/proc/self/maps").expect("/proc/self/maps");
        maps.lines().find_map(|line| {
            let mut fields = line.split_whitespace();
            let (start, end) = fields.next()?.split_once('-')?;
            let start = usize::from_str_radix(start, 16).ok()?;
            let end = usize::from_str_radix(end, 16).ok()?;
            let permissions = fields.next()?.to_string();
            (start..end)
                .contains(&address)
                .then_some((start, end, permissions))
        })
    }
}
