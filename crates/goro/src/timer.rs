//! Timers: one heap per runtime, fired by the monitor thread.
//!
//! A goroutine that sleeps registers its wakeup in the heap and parks on its internal permit.
//! The monitor sleeps until the earliest deadline (or its scan period, whichever comes first),
//! then wakes every waiter whose deadline has passed. New timers earlier than the monitor's
//! current sleep kick it awake.

use std::cmp::{Ordering as CmpOrdering, Reverse};
use std::collections::BinaryHeap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use goro_abi::WaitReason;

use crate::m::current_record;
use crate::waiter::{Waiter, wait_until};

struct Entry {
    deadline: Instant,
    seq: u64,
    waiter: Waiter,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        (self.deadline, self.seq) == (other.deadline, other.seq)
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}
impl Ord for Entry {
    fn cmp(&self, other: &Self) -> CmpOrdering {
        (self.deadline, self.seq).cmp(&(other.deadline, other.seq))
    }
}

/// The timer heap of one runtime.
#[derive(Default)]
pub(crate) struct Timers {
    heap: Mutex<(BinaryHeap<Reverse<Entry>>, u64)>,
    /// Number of pending timers, readable without the lock (deadlock detection).
    pending: AtomicUsize,
    /// Number of timers taken off the heap by `fire` whose waiters are not woken yet. Until
    /// their wakeups have readied the goroutines, those count as pending too.
    firing: AtomicUsize,
}

impl Timers {
    /// Registers `waiter` to be woken at `deadline`. Returns whether the new timer is now the
    /// earliest, in which case the monitor must be kicked to shorten its sleep.
    pub(crate) fn add(&self, deadline: Instant, waiter: Waiter) -> bool {
        let mut heap = self.heap.lock().unwrap_or_else(|e| e.into_inner());
        let (entries, seq) = &mut *heap;
        *seq += 1;
        let earliest = entries
            .peek()
            .is_none_or(|Reverse(first)| deadline < first.deadline);
        entries.push(Reverse(Entry {
            deadline,
            seq: *seq,
            waiter,
        }));
        // SeqCst: deadlock detection reads `pending` after its own SeqCst fence; a timer added
        // before a goroutine parks must be seen there.
        self.pending.store(entries.len(), Ordering::SeqCst);
        earliest
    }

    /// Wakes every waiter whose deadline is at or before `now`; returns the next deadline.
    pub(crate) fn fire(&self, now: Instant) -> Option<Instant> {
        let mut due = Vec::new();
        let next = {
            let mut heap = self.heap.lock().unwrap_or_else(|e| e.into_inner());
            let entries = &mut heap.0;
            while entries
                .peek()
                .is_some_and(|Reverse(first)| first.deadline <= now)
            {
                let Reverse(entry) = entries.pop().expect("peeked entry");
                due.push(entry.waiter);
            }
            // SeqCst, before `pending` drops: a deadlock check that sees the lower `pending`
            // then sees these timers in `firing` (see `is_empty`).
            self.firing.fetch_add(due.len(), Ordering::SeqCst);
            self.pending.store(entries.len(), Ordering::SeqCst);
            entries.peek().map(|Reverse(first)| first.deadline)
        };
        // Wake outside the lock: a wakeup readies a goroutine through its scheduler.
        let fired = due.len();
        for waiter in due {
            waiter.wake();
        }
        // SeqCst: after the wakeups' own SeqCst updates of the waiting count, so that a check
        // that sees this decrement also sees the goroutines as no longer waiting.
        self.firing.fetch_sub(fired, Ordering::SeqCst);
        next
    }

    /// The earliest deadline, if any timer is pending.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        let heap = self.heap.lock().unwrap_or_else(|e| e.into_inner());
        heap.0.peek().map(|Reverse(first)| first.deadline)
    }

    /// Returns whether no timer is pending, counting the ones being fired. Deadlock detection
    /// calls it before it reads the waiting count.
    pub(crate) fn is_empty(&self) -> bool {
        // SeqCst, in this order: see `fire`.
        self.pending.load(Ordering::SeqCst) == 0 && self.firing.load(Ordering::SeqCst) == 0
    }
}

/// Arms a timer that wakes the running goroutine (through its runtime-internal permit) at
/// `deadline`; does nothing on a thread that runs no goroutine. For waits with a timeout: a
/// wakeup that comes after the wait ended only costs the next internal wait one extra check.
pub(crate) fn wake_at(deadline: Instant) {
    if let Some(record) = current_record() {
        // SAFETY: the running goroutine's record is alive while it runs.
        let shared = unsafe { record.as_ref() }.shared();
        shared.add_timer(deadline, Waiter::current());
    }
}

/// Puts the running goroutine to sleep for at least `duration`, parking it (not its M): its
/// P runs other goroutines meanwhile. On a thread that runs no goroutine it calls
/// `std::thread::sleep`.
///
/// The goroutine wakes no earlier than `duration` from now; how much later depends on the
/// monitor thread's wakeup latency (tens of microseconds on an idle machine). Any duration is
/// accepted: one too large for an `Instant` (such as `Duration::MAX`) sleeps in steps of a
/// year, on a pending timer, so the goroutine does not count as deadlocked.
pub fn sleep(duration: Duration) {
    let Some(record) = current_record() else {
        std::thread::sleep(duration);
        return;
    };
    if duration.is_zero() {
        crate::yield_now();
        return;
    }
    // SAFETY: the running goroutine's record is alive while it runs.
    let shared = unsafe { record.as_ref() }.shared();
    let mut remaining = duration;
    loop {
        let start = Instant::now();
        if let Some(deadline) = start.checked_add(remaining) {
            sleep_until(shared, deadline);
            return;
        }
        sleep_until(shared, start + MAX_TIMER);
        remaining = remaining.saturating_sub(start.elapsed());
    }
}

/// The maximum duration of one timer that `sleep` arms. Far below the range of `Instant`, so that
/// adding it to the current time cannot overflow.
const MAX_TIMER: Duration = Duration::from_secs(365 * 24 * 60 * 60);

/// Parks the running goroutine, of the runtime `shared`, on a timer until `deadline`.
fn sleep_until(shared: &crate::runtime::Shared, deadline: Instant) {
    shared.add_timer(deadline, Waiter::current());
    wait_until(|| Instant::now() >= deadline, WaitReason::Sleep, None);
}
