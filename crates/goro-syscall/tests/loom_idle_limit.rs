//! loom model of an M going idle at the thread limit: a waker that takes the idle P finds no
//! idle M and cannot start one, while the only M puts itself on the idle list.
//!
//! The model plays the steps of `Shared::startm`'s failure path and `m::stopm` (with
//! `Shared::recheck_after_idling`) on plain loom types: an idle P flag with its SeqCst count,
//! the idle M list, a run queue and the M's wakeup note. Each side publishes itself, runs a
//! SeqCst fence and then looks at the other, so at least one of them must see the other. The
//! check at the end: the queued goroutine runs, on the M woken with the P or on the M that took
//! the P itself. A sleeping M next to an idle P and a queued goroutine is a lost wakeup.
//!
//! Run with `cargo xtask loom` (or `RUSTFLAGS="--cfg loom" cargo test --release -p
//! goro-syscall --test loom_idle_limit`).

#![cfg(loom)]

use loom::sync::atomic::{AtomicBool, AtomicUsize, Ordering, fence};
use loom::sync::{Arc, Mutex};
use loom::thread;

/// One P, one M (the thread limit is reached), a run queue and the M's note.
#[derive(Default)]
struct World {
    /// Whether the P is on the idle list. Its count, `npidle`, is read without the lock.
    idle_p: Mutex<bool>,
    npidle: AtomicUsize,
    /// Whether the M is on the idle list.
    idle_m: Mutex<bool>,
    runq: Mutex<usize>,
    /// Whether a waker handed the sleeping M a P, with which the M runs the queue when it
    /// wakes.
    note: Mutex<bool>,
    /// Whether the M ran the queue (with its own P or one handed to it).
    ran: AtomicBool,
}

impl World {
    fn pidleput(&self) {
        let mut idle = self.idle_p.lock().unwrap();
        *idle = true;
        self.npidle.store(1, Ordering::SeqCst);
    }

    fn pidleget(&self) -> bool {
        let mut idle = self.idle_p.lock().unwrap();
        if !*idle {
            return false;
        }
        *idle = false;
        self.npidle.store(0, Ordering::SeqCst);
        true
    }

    fn has_work(&self) -> bool {
        *self.runq.lock().unwrap() > 0
    }

    /// Runs the queue on the M, which holds a P, and gives the P back.
    fn run_queue(&self) {
        *self.runq.lock().unwrap() = 0;
        self.ran.store(true, Ordering::SeqCst);
        self.pidleput();
    }

    /// `ready` followed by `wakep` and `startm`, from a thread that runs no goroutine.
    fn ready_and_wakep(&self) {
        *self.runq.lock().unwrap() += 1;
        self.wakep();
    }

    fn wakep(&self) {
        fence(Ordering::SeqCst);
        if self.npidle.load(Ordering::Relaxed) == 0 || !self.pidleget() {
            return;
        }
        // startm: an idle M gets the P; there is none to start at the limit.
        let popped = std::mem::take(&mut *self.idle_m.lock().unwrap());
        if popped {
            *self.note.lock().unwrap() = true;
            return;
        }
        // The failure path: the P goes back, then a recheck for an M that went idle since.
        self.pidleput();
        fence(Ordering::SeqCst);
        if *self.idle_m.lock().unwrap() && self.has_work() {
            self.wakep();
        }
    }

    /// Plays the M that holds the P and found no work: `go_idle`, then `stopm`. Returns
    /// whether the M went to sleep on its note.
    fn go_idle_and_stop(&self) -> bool {
        self.pidleput();
        fence(Ordering::SeqCst);
        if self.has_work() && self.pidleget() {
            self.run_queue();
            return false;
        }
        loop {
            *self.idle_m.lock().unwrap() = true;
            // recheck_after_idling
            fence(Ordering::SeqCst);
            if self.npidle.load(Ordering::Relaxed) == 0 || !self.has_work() {
                return true;
            }
            let removed = std::mem::take(&mut *self.idle_m.lock().unwrap());
            if !removed {
                // A waker took the M off the list and hands it the P.
                return true;
            }
            if self.pidleget() {
                self.run_queue();
                return false;
            }
            // Another thread took the P first: back on the list, and look again.
        }
    }
}

#[test]
fn idle_m_at_thread_limit_runs_the_work() {
    // Both sides loop while the other keeps taking the P, so the preemptions are bounded. A
    // bound of 3, one more than `cargo xtask loom` sets, is the least that finds an M that
    // goes back on the idle list without looking again after losing the P.
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(3);
    builder.check(|| {
        let world = Arc::new(World::default());
        let waker = {
            let world = Arc::clone(&world);
            thread::spawn(move || world.ready_and_wakep())
        };
        let slept = world.go_idle_and_stop();
        waker.join().unwrap();

        if slept && std::mem::take(&mut *world.note.lock().unwrap()) {
            // The M wakes with the P that the waker handed it.
            world.run_queue();
        }
        assert!(
            !world.has_work(),
            "the M sleeps next to an idle P while a goroutine waits (slept: {slept})"
        );
        assert!(world.ran.load(Ordering::SeqCst));
    });
}
