//! The g status word and its named transitions.
//!
//! ```text
//!            ready_new            start_running
//!   Idle ─────────────▶ Runnable ──────────────▶ Running ──exit──▶ Dead
//!                          ▲  ▲  ◀──stop_running──┘ │  ▲
//!                   wake   │  │                park │  │ exitsyscall
//!                          │  └─requeue_from_syscall│  │
//!                       Waiting ◀───────────────────┘  │
//!                                        Syscall ◀─────┘ entersyscall
//! ```
//!
//! The status is one atomic word. Each transition checks that the word holds the one state it
//! accepts and then stores the new one; any other current state is a runtime bug and panics
//! naming both states.

use core::fmt;
use core::sync::atomic::Ordering;

use crate::header::GHeader;

/// The status of a g.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum GStatus {
    /// Allocated, never made runnable; the runtime may still set up the header.
    Idle = 0,
    /// In its scheduler's hands, waiting to run.
    Runnable = 1,
    /// Running on an M that holds a P.
    Running = 2,
    /// Running on an M inside a syscall; its P may be retaken.
    Syscall = 3,
    /// Parked; only a wakeup makes it runnable again.
    Waiting = 4,
    /// Its body returned or panicked; the stack is gone.
    Dead = 5,
}

impl GStatus {
    /// Decodes a raw status word. Unknown values decode as `Dead` never: they panic, because
    /// they can only come from memory that is not a g header.
    #[inline]
    pub fn from_u32(raw: u32) -> GStatus {
        match raw {
            0 => GStatus::Idle,
            1 => GStatus::Runnable,
            2 => GStatus::Running,
            3 => GStatus::Syscall,
            4 => GStatus::Waiting,
            5 => GStatus::Dead,
            other => panic!("invalid g status word {other}: the pointer is not a g header"),
        }
    }

    /// The status as Go's runtime names it in dumps.
    #[inline]
    pub fn name(self) -> &'static str {
        match self {
            GStatus::Idle => "idle",
            GStatus::Runnable => "runnable",
            GStatus::Running => "running",
            GStatus::Syscall => "syscall",
            GStatus::Waiting => "waiting",
            GStatus::Dead => "dead",
        }
    }
}

impl fmt::Display for GStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a waiting g waits, for dumps and deadlock reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum WaitReason {
    /// Not waiting.
    None = 0,
    /// Parked by user code through `park`.
    Park = 1,
    /// Waiting for another goroutine to finish.
    Join = 2,
    /// Sleeping until a deadline.
    Sleep = 3,
    /// Blocked sending on a channel.
    ChanSend = 4,
    /// Blocked receiving from a channel.
    ChanRecv = 5,
    /// Blocked in a select.
    Select = 6,
    /// Waiting for a mutex or a read-write lock.
    Lock = 7,
    /// Waiting on a wait group.
    WaitGroup = 8,
}

impl WaitReason {
    /// Decodes a raw wait reason; unknown values decode as `None`.
    #[inline]
    pub fn from_u32(raw: u32) -> WaitReason {
        match raw {
            1 => WaitReason::Park,
            2 => WaitReason::Join,
            3 => WaitReason::Sleep,
            4 => WaitReason::ChanSend,
            5 => WaitReason::ChanRecv,
            6 => WaitReason::Select,
            7 => WaitReason::Lock,
            8 => WaitReason::WaitGroup,
            _ => WaitReason::None,
        }
    }

    /// The reason as it appears in dumps.
    #[inline]
    pub fn name(self) -> &'static str {
        match self {
            WaitReason::None => "",
            WaitReason::Park => "park",
            WaitReason::Join => "join",
            WaitReason::Sleep => "sleep",
            WaitReason::ChanSend => "chan send",
            WaitReason::ChanRecv => "chan receive",
            WaitReason::Select => "select",
            WaitReason::Lock => "lock",
            WaitReason::WaitGroup => "wait group",
        }
    }
}

/// A completed status change, returned by every transition so the caller decides what it
/// implies (for example, whether a wakeup must follow).
#[must_use = "a status transition is a decision point; use or explicitly drop its result"]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transition {
    /// The status before the change.
    pub from: GStatus,
    /// The status after the change.
    pub to: GStatus,
}

impl GHeader {
    #[inline]
    fn transition(&self, from: GStatus, to: GStatus, function: &'static str) -> Transition {
        // Each transition is made by the one party that owns the g at that moment (the M that
        // took it from a queue, the g itself while it runs, the waker that won its permit), so
        // the word needs no compare-and-swap: a load to check the state and a store to change
        // it. Acquire and Release make dumps and assertions on other threads see the fields
        // written before the change. A second party changing the word at the same time would
        // be a runtime bug, which this check catches only when the race is lost visibly.
        let actual = self.status_word().load(Ordering::Acquire);
        if actual != from as u32 {
            self.illegal_transition(actual, from, to, function);
        }
        self.status_word().store(to as u32, Ordering::Release);
        Transition { from, to }
    }

    #[cold]
    #[inline(never)]
    fn illegal_transition(&self, actual: u32, from: GStatus, to: GStatus, function: &str) -> ! {
        panic!(
            "{function}: illegal g status transition for g {}: status is {}, expected {} to move \
             to {}",
            self.goid(),
            GStatus::from_u32(actual),
            from,
            to
        );
    }

    // The transitions below are unsafe fns because the runtime queues and runs gs by their
    // status. Only the party that owns the g at that moment may change it (docs/abi.md lists
    // each one), or the runtime could queue or run the g wrongly.

    /// `Idle -> Runnable`: a new g is handed to its scheduler for the first time.
    ///
    /// # Safety
    ///
    /// The caller is the runtime that spawns the g, before it publishes it.
    #[inline]
    pub unsafe fn ready_new(&self) -> Transition {
        self.transition(GStatus::Idle, GStatus::Runnable, "ready_new")
    }

    /// `Runnable -> Running`: an M takes the g from its scheduler and switches to it.
    ///
    /// # Safety
    ///
    /// The caller is the M that took the g from its scheduler, before it switches to it.
    #[inline]
    pub unsafe fn start_running(&self) -> Transition {
        self.transition(GStatus::Runnable, GStatus::Running, "start_running")
    }

    /// `Running -> Runnable`: the g yields or is requeued by its scheduler.
    ///
    /// # Safety
    ///
    /// The caller is the M that runs the g, as the g yields or is requeued.
    #[inline]
    pub unsafe fn stop_running(&self) -> Transition {
        self.transition(GStatus::Running, GStatus::Runnable, "stop_running")
    }

    /// `Running -> Waiting`: the g parks.
    ///
    /// # Safety
    ///
    /// The caller is the M that runs the g, as the g parks.
    #[inline]
    pub unsafe fn park(&self) -> Transition {
        self.transition(GStatus::Running, GStatus::Waiting, "park")
    }

    /// `Waiting -> Runnable`: a wakeup readies a parked g.
    ///
    /// # Safety
    ///
    /// The caller is the waker that won the g's wakeup (its permit), before it readies the g.
    #[inline]
    pub unsafe fn wake(&self) -> Transition {
        self.transition(GStatus::Waiting, GStatus::Runnable, "wake")
    }

    /// `Running -> Syscall`: the g enters a syscall.
    ///
    /// # Safety
    ///
    /// The caller is the g itself, running on its M.
    #[inline]
    pub unsafe fn entersyscall(&self) -> Transition {
        self.transition(GStatus::Running, GStatus::Syscall, "entersyscall")
    }

    /// `Syscall -> Running`: the g leaves a syscall and keeps running on a P.
    ///
    /// # Safety
    ///
    /// The caller is the g itself, leaving its syscall with a P.
    #[inline]
    pub unsafe fn exitsyscall(&self) -> Transition {
        self.transition(GStatus::Syscall, GStatus::Running, "exitsyscall")
    }

    /// `Syscall -> Runnable`: the g left a syscall without a P and goes back to its scheduler.
    ///
    /// # Safety
    ///
    /// The caller is the M of the g, which left its syscall without a P.
    #[inline]
    pub unsafe fn requeue_from_syscall(&self) -> Transition {
        self.transition(GStatus::Syscall, GStatus::Runnable, "requeue_from_syscall")
    }

    /// `Running -> Dead`: the g's body returned or panicked.
    ///
    /// # Safety
    ///
    /// The caller is the M that runs the g, after its body returned or panicked.
    #[inline]
    pub unsafe fn exit(&self) -> Transition {
        self.transition(GStatus::Running, GStatus::Dead, "exit")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifecycle_follows_named_transitions() {
        let g = GHeader::new();
        // SAFETY: the test owns the header, which no runtime or scheduler reaches.
        unsafe {
            assert_eq!(
                g.ready_new(),
                Transition {
                    from: GStatus::Idle,
                    to: GStatus::Runnable
                }
            );
            let _ = g.start_running();
            let _ = g.entersyscall();
            let _ = g.requeue_from_syscall();
            let _ = g.start_running();
            let _ = g.park();
            assert_eq!(g.status(), GStatus::Waiting);
            let _ = g.wake();
            let _ = g.start_running();
            let _ = g.exit();
        }
        assert_eq!(g.status(), GStatus::Dead);
    }

    #[test]
    #[should_panic(
        expected = "start_running: illegal g status transition for g 0: status is waiting"
    )]
    fn illegal_transition_names_both_states() {
        let g = GHeader::new();
        // SAFETY: the test owns the header, which no runtime or scheduler reaches.
        unsafe {
            let _ = g.ready_new();
            let _ = g.start_running();
            let _ = g.park();
            let _ = g.start_running();
        }
    }
}
