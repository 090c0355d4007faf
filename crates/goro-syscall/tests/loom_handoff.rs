//! loom models of the syscall handoff: an M in a syscall races the monitor's retake.
//!
//! Each model plays the runtime's steps on a `PState` with loom threads: the M leaving its
//! syscall (fast path, or slow path through the idle list and the run queue), and the monitor
//! retaking the P and handing it off. A shared counter checks that no two parties use the P at
//! once, and another that the goroutine runs exactly once.
//!
//! Run with `cargo xtask loom` (or `RUSTFLAGS="--cfg loom" cargo test --release -p
//! goro-syscall --test loom_handoff`).

#![cfg(loom)]

use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::sync::{Arc, Mutex};
use loom::thread;

use goro_syscall::{MId, POwner, PState};

const M1: MId = MId(1);
const M2: MId = MId(2);
const M3: MId = MId(3);

/// One P, its idle list, one run queue of goroutine ids, and the checks.
struct World {
    p: PState,
    /// Whether the P is on the idle list.
    idle: Mutex<bool>,
    runq: Mutex<Vec<u32>>,
    /// Parties using the P right now; must never exceed one.
    users: AtomicUsize,
    /// How many times the goroutine ran after its syscall.
    g_runs: AtomicUsize,
}

impl World {
    fn new() -> World {
        World {
            p: PState::new_idle(),
            idle: Mutex::new(false),
            runq: Mutex::new(Vec::new()),
            users: AtomicUsize::new(0),
            g_runs: AtomicUsize::new(0),
        }
    }

    /// Runs goroutine `g` on the P, checking that nobody else uses the P meanwhile.
    fn run_on_p(&self, _g: u32) {
        assert_eq!(
            self.users.fetch_add(1, Ordering::SeqCst),
            0,
            "two owners used the P"
        );
        self.g_runs.fetch_add(1, Ordering::SeqCst);
        thread::yield_now();
        self.users.fetch_sub(1, Ordering::SeqCst);
    }

    /// Puts the P, in transit, on the idle list.
    fn transit_to_idle(&self) {
        let mut idle = self.idle.lock().unwrap();
        self.p.transit_to_idle();
        *idle = true;
    }

    /// Takes the P off the idle list for `m`, if it is there.
    fn acquire_idle(&self, m: MId) -> bool {
        let mut idle = self.idle.lock().unwrap();
        if !*idle {
            return false;
        }
        *idle = false;
        self.p.acquire(m).expect("an idle-listed P is acquirable");
        true
    }

    /// M `m`, holding the P, runs everything queued, then gives the P to the idle list.
    fn drain_and_release(&self, m: MId) {
        loop {
            let next = self.runq.lock().unwrap().pop();
            match next {
                Some(g) => self.run_on_p(g),
                None => break,
            }
        }
        let mut idle = self.idle.lock().unwrap();
        self.p.release(m);
        *idle = true;
        drop(idle);
        // Recheck after publishing the idle P (the idle/enqueue handshake): work queued
        // meanwhile must not be stranded.
        if !self.runq.lock().unwrap().is_empty() && self.acquire_idle(m) {
            self.drain_and_release(m);
        }
    }

    /// Queues goroutine `g` and, like `wakep`, starts the idle P if there is one.
    fn ready_and_wake(&self, g: u32, helper: MId) {
        self.runq.lock().unwrap().push(g);
        if self.acquire_idle(helper) {
            self.drain_and_release(helper);
        }
    }

    /// The monitor's retake and handoff of the P from M1.
    fn monitor(&self) {
        if self.p.retake(M1) {
            if self.runq.lock().unwrap().is_empty() {
                self.transit_to_idle();
                if !self.runq.lock().unwrap().is_empty() && self.acquire_idle(M2) {
                    self.drain_and_release(M2);
                }
            } else {
                self.p.accept(M2);
                self.drain_and_release(M2);
            }
        }
    }

    /// Plays an idle M (M3) woken at M1's syscall entry to stand by: after the grace period it
    /// retakes the P itself if work waits, and runs it.
    fn standby(&self) {
        if self.runq.lock().unwrap().is_empty() {
            return;
        }
        if self.p.retake(M1) {
            self.p.accept(M3);
            self.drain_and_release(M3);
        }
    }

    /// M1 returns from its syscall with goroutine 1.
    fn exitsyscall(&self) {
        if self.p.exitsyscall(M1) {
            self.run_on_p(1);
            self.drain_and_release(M1);
        } else if self.acquire_idle(M1) {
            self.run_on_p(1);
            self.drain_and_release(M1);
        } else {
            // No P: requeue the g; whoever holds or frees the P runs it.
            self.ready_and_wake(1, M1);
        }
    }

    /// Builds a world whose P M1 holds in a syscall, with goroutine 2 queued for a P when
    /// `waiting`.
    fn in_syscall(waiting: bool) -> Arc<World> {
        let world = Arc::new(World::new());
        world.p.acquire(M1).unwrap();
        world.p.entersyscall(M1);
        if waiting {
            world.runq.lock().unwrap().push(2);
        }
        world
    }

    /// Checks the end state: the goroutines ran `runs` times in all, none is left queued, and
    /// the P is idle and on the idle list.
    fn check_end(&self, runs: usize) {
        assert_eq!(
            self.g_runs.load(Ordering::SeqCst),
            runs,
            "a goroutine ran zero or two times"
        );
        assert!(
            self.runq.lock().unwrap().is_empty(),
            "a goroutine was left in the run queue"
        );
        let idle = *self.idle.lock().unwrap();
        assert_eq!(self.p.owner(), POwner::Idle, "the P ended without an owner");
        assert!(idle, "an idle P is missing from the idle list");
    }
}

/// Runs `party` (the monitor or a stand-by M) on a loom thread of its own.
fn spawn(world: &Arc<World>, party: fn(&World)) -> thread::JoinHandle<()> {
    let world = world.clone();
    thread::spawn(move || party(&world))
}

#[test]
fn exitsyscall_races_retake() {
    loom::model(|| {
        let world = World::in_syscall(false);
        let monitor = spawn(&world, World::monitor);
        world.exitsyscall();
        monitor.join().unwrap();
        world.check_end(1);
    });
}

#[test]
fn retake_with_waiting_work_hands_the_p_to_another_m() {
    loom::model(|| {
        // Another goroutine (2) waits for a P while M1 blocks.
        let world = World::in_syscall(true);
        let monitor = spawn(&world, World::monitor);
        world.exitsyscall();
        monitor.join().unwrap();
        // Goroutine 1 ran once and goroutine 2 once.
        world.check_end(2);
    });
}

#[test]
fn standby_m_and_monitor_race_exitsyscall() {
    loom::model(|| {
        let world = World::in_syscall(true);
        let monitor = spawn(&world, World::monitor);
        let standby = spawn(&world, World::standby);
        world.exitsyscall();
        monitor.join().unwrap();
        standby.join().unwrap();
        // Whichever party got the P, goroutines 1 and 2 each ran once, with one user of the P
        // at a time, and the P ended on the idle list.
        world.check_end(2);
    });
}

#[test]
fn p_in_transit_is_never_retaken() {
    loom::model(|| {
        let p = Arc::new(PState::new_idle());
        p.acquire(M1).unwrap();
        p.entersyscall(M1);
        assert!(p.exitsyscall(M1));
        let monitor = {
            let p = p.clone();
            thread::spawn(move || p.retake(M1))
        };
        // entersyscall_block: hand the P off at once, then give it to M2.
        p.handoff(M1);
        p.accept(M2);
        let retook = monitor.join().unwrap();
        assert!(
            !retook,
            "the monitor retook a P that was running or in transit"
        );
        assert_eq!(p.owner(), POwner::Running(M2));
    });
}
