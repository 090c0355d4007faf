//! The ownership word of a P.

use std::fmt;

use crate::sync::{AtomicU64, Ordering};

/// Id of an M (an OS thread of a runtime), unique within the runtime.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MId(pub u32);

impl fmt::Debug for MId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "m{}", self.0)
    }
}

/// The owner of a P, decoded from its [`PState`] word.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum POwner {
    /// On the runtime's idle list.
    Idle,
    /// Held by an M that runs goroutines on it.
    Running(MId),
    /// Held by an M that is blocked in a syscall; the monitor may retake it.
    Syscall(MId),
    /// Being handed from one owner to the next (to an M being started or woken, or to the idle
    /// list). Nobody may retake it, and it does not count as idle.
    Transit,
}

const TAG_IDLE: u64 = 0;
const TAG_RUNNING: u64 = 1;
const TAG_SYSCALL: u64 = 2;
const TAG_TRANSIT: u64 = 3;

impl POwner {
    #[inline]
    fn encode(self) -> u64 {
        match self {
            POwner::Idle => TAG_IDLE,
            POwner::Running(m) => TAG_RUNNING | (m.0 as u64) << 32,
            POwner::Syscall(m) => TAG_SYSCALL | (m.0 as u64) << 32,
            POwner::Transit => TAG_TRANSIT,
        }
    }

    fn decode(word: u64) -> POwner {
        let m = MId((word >> 32) as u32);
        match word & 0xffff_ffff {
            TAG_IDLE => POwner::Idle,
            TAG_RUNNING => POwner::Running(m),
            TAG_SYSCALL => POwner::Syscall(m),
            TAG_TRANSIT => POwner::Transit,
            other => panic!("PState: corrupt P state word {word:#x} (tag {other})"),
        }
    }
}

/// The ownership word of one P: exactly one owner at every moment.
///
/// Every change goes through a named transition. A transition that only the current owner
/// may make checks that the caller is the owner and panics otherwise, naming the function and
/// both states; a transition that can lose a race (`acquire`, `exitsyscall`, `retake`) is a CAS
/// and returns whether it won, which the caller must use.
///
/// Ordering: the P carries per-P state (run queues, caches) that travels with ownership. Every
/// transition that gives the P up is a Release, and every transition that takes it is an
/// Acquire, so the next owner sees everything the previous one wrote.
#[derive(Debug)]
pub struct PState {
    word: AtomicU64,
}

impl PState {
    /// A P on the idle list.
    pub fn new_idle() -> PState {
        PState {
            word: AtomicU64::new(POwner::Idle.encode()),
        }
    }

    /// The current owner. A snapshot: it may change right after unless the caller is the owner.
    pub fn owner(&self) -> POwner {
        // Acquire: pairs with the Release of the transition that set this owner, for callers
        // (the monitor, dumps) that read per-P data after the owner.
        POwner::decode(self.word.load(Ordering::Acquire))
    }

    fn expect(&self, expected: POwner, function: &'static str) {
        let actual = self.owner();
        if actual != expected {
            panic!("PState::{function}: P is owned by {actual:?}, expected {expected:?}");
        }
    }

    #[inline]
    fn cas(&self, from: POwner, to: POwner) -> Result<(), POwner> {
        // AcqRel: the winner takes the P (Acquire of the previous owner's Release) and
        // publishes its own writes to the next one (Release).
        self.word
            .compare_exchange(
                from.encode(),
                to.encode(),
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .map(drop)
            .map_err(POwner::decode)
    }

    /// `Idle -> Running(m)`: M `m` takes the P off the idle list. Fails with the actual owner
    /// when another M was faster.
    #[must_use = "the P is only yours when acquire returns Ok"]
    pub fn acquire(&self, m: MId) -> Result<(), POwner> {
        self.cas(POwner::Idle, POwner::Running(m))
    }

    /// `Idle -> Transit`: the P leaves the idle list to be handed to another M, which then
    /// calls `accept`. Fails with the actual owner when another party was faster.
    #[must_use = "the P is only in transit when reserve returns Ok"]
    pub fn reserve(&self) -> Result<(), POwner> {
        self.cas(POwner::Idle, POwner::Transit)
    }

    /// `Running(m) -> Idle`: M `m` puts the P on the idle list (it pushes the P right after).
    pub fn release(&self, m: MId) {
        self.expect(POwner::Running(m), "release");
        // Release: publishes the P's data to whoever acquires it next.
        self.word.store(POwner::Idle.encode(), Ordering::Release);
    }

    /// `Running(m) -> Syscall(m)`: M `m` enters a syscall and leaves the P open to retake.
    ///
    /// A plain store, not a CAS: in `Running(m)` only `m` may change the word.
    #[inline]
    pub fn entersyscall(&self, m: MId) {
        debug_assert_eq!(
            self.owner(),
            POwner::Running(m),
            "PState::entersyscall: not the owner"
        );
        // Release: pairs with the monitor's AcqRel `retake`, which takes the P's data with it.
        self.word
            .store(POwner::Syscall(m).encode(), Ordering::Release);
    }

    /// `Syscall(m) -> Running(m)`: M `m` is back from its syscall and keeps its P (the fast
    /// path). Returns `false` when the monitor retook the P meanwhile.
    #[must_use = "a failed exitsyscall means the P is gone: take the slow path"]
    #[inline]
    pub fn exitsyscall(&self, m: MId) -> bool {
        self.cas(POwner::Syscall(m), POwner::Running(m)).is_ok()
    }

    /// `Syscall(m) -> Transit`: the monitor retakes the P from M `m`, blocked in a syscall.
    /// Returns `false` when `m` came back first (or the P moved on).
    #[must_use = "only a successful retake hands the P to the caller"]
    pub fn retake(&self, m: MId) -> bool {
        self.cas(POwner::Syscall(m), POwner::Transit).is_ok()
    }

    /// `Running(m) -> Transit`: M `m` hands its P off (before a call known to block, or to give
    /// it to another M).
    pub fn handoff(&self, m: MId) {
        self.expect(POwner::Running(m), "handoff");
        // Release: the receiver's `accept` acquires the P's data.
        self.word.store(POwner::Transit.encode(), Ordering::Release);
    }

    /// `Transit -> Running(m)`: M `m` receives a P in transit.
    pub fn accept(&self, m: MId) {
        if let Err(actual) = self.cas(POwner::Transit, POwner::Running(m)) {
            panic!("PState::accept: P is owned by {actual:?}, expected Transit");
        }
    }

    /// `Transit -> Idle`: the party handing the P off found no M for it and puts it on the idle
    /// list (it pushes the P right after).
    pub fn transit_to_idle(&self) {
        if let Err(actual) = self.cas(POwner::Transit, POwner::Idle) {
            panic!("PState::transit_to_idle: P is owned by {actual:?}, expected Transit");
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn fast_path_keeps_the_p() {
        let p = PState::new_idle();
        p.acquire(MId(1)).unwrap();
        p.entersyscall(MId(1));
        assert!(p.exitsyscall(MId(1)));
        assert_eq!(p.owner(), POwner::Running(MId(1)));
    }

    #[test]
    fn retake_wins_over_a_late_exit() {
        let p = PState::new_idle();
        p.acquire(MId(1)).unwrap();
        p.entersyscall(MId(1));
        assert!(p.retake(MId(1)));
        assert!(!p.exitsyscall(MId(1)));
        p.accept(MId(2));
        assert_eq!(p.owner(), POwner::Running(MId(2)));
        assert_eq!(p.acquire(MId(3)), Err(POwner::Running(MId(2))));
    }

    #[test]
    fn transit_is_never_retaken() {
        let p = PState::new_idle();
        p.acquire(MId(1)).unwrap();
        p.handoff(MId(1));
        assert!(!p.retake(MId(1)));
        p.transit_to_idle();
        assert_eq!(p.owner(), POwner::Idle);
    }

    #[test]
    #[should_panic(expected = "PState::release: P is owned by Running(m2), expected Running(m1)")]
    fn release_by_non_owner_panics() {
        let p = PState::new_idle();
        p.acquire(MId(2)).unwrap();
        p.release(MId(1));
    }
}
