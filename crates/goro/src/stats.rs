//! Runtime counters.

/// A snapshot of a runtime's counters, from [`crate::Runtime::stats`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Goroutines that ran to completion (returned or panicked).
    pub goroutines_run: u64,
    /// Switches from an M's g0 into a goroutine.
    pub context_switches: u64,
    /// Calls to `entersyscall` and `entersyscall_block`.
    pub syscalls_entered: u64,
    /// Syscall exits that found their P still theirs.
    pub fast_exits: u64,
    /// Syscall exits that had lost their P.
    pub slow_exits: u64,
    /// Ps retaken from Ms blocked in syscalls, by the monitor or by a stand-by idle M.
    pub retakes: u64,
    /// Ps handed off at once by `entersyscall_block`.
    pub handoffs: u64,
    /// Ms (OS threads) started.
    pub ms_started: u64,
    /// Goroutines spawned and not yet finished.
    pub live_goroutines: u64,
    /// The highest `live_goroutines` seen.
    pub peak_live_goroutines: u64,
}
