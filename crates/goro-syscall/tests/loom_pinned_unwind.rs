//! loom model of a goroutine pinned to its M while it unwinds (`m::pin_if_unwinding`,
//! `m::stop_pinned` and `m::hand_to_pinned_m` in the goro crate).
//!
//! M1 runs the goroutine, which parks in a destructor during its unwind. M1's g0 pins the g
//! (the g's pin word and the runtime's Relaxed count of pins), publishes it to a waker, gives
//! its P away through `handoffp` and waits on its note. The waker, M3, holds the other P: it
//! queues the g, runs `wakep` and then looks at the queue itself, as an M does after a
//! `ready`; in the second model the waker is a thread that runs no goroutine. M2, idle, runs P1 whenever `handoffp` or `wakep` hands it over, and looks at the
//! queue too. Whichever M takes the g must see the pin through the count and hand the g back
//! to M1 with its own P. The checks: no M runs the pinned g, M1 gets it back with a P it owns,
//! and nobody waits for ever (loom reports a deadlock).
//!
//! Run with `cargo xtask loom` (or `RUSTFLAGS="--cfg loom" cargo test --release -p
//! goro-syscall --test loom_pinned_unwind`).

#![cfg(loom)]

use loom::sync::atomic::{AtomicUsize, Ordering, fence};
use loom::sync::{Arc, Condvar, Mutex};
use loom::thread;

use goro_syscall::{MId, POwner, PState};

const M1: MId = MId(1);
const M2: MId = MId(2);
const M3: MId = MId(3);
/// The id of the unwinding goroutine.
const G: u32 = 7;

/// Why an M woke up.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Wake {
    /// A P (its index) for an idle M.
    P(usize),
    /// A P with the g pinned to the M.
    Pinned(usize, u32),
    /// The model is over (`Note::exit`).
    Exit,
}

/// The wakeup note of one M.
#[derive(Default)]
struct Note {
    slot: Mutex<NoteSlot>,
    wakeup: Condvar,
}

#[derive(Default)]
struct NoteSlot {
    wake: Option<Wake>,
    /// Set when the model is over; a pending wake comes first, as in `m::Note::wait`.
    exit: bool,
}

impl Note {
    fn wake(&self, wake: Wake) {
        let mut slot = self.slot.lock().unwrap();
        assert_eq!(slot.wake, None, "an M was woken twice: {wake:?}");
        slot.wake = Some(wake);
        self.wakeup.notify_one();
    }

    fn exit(&self) {
        self.slot.lock().unwrap().exit = true;
        self.wakeup.notify_one();
    }

    fn wait(&self) -> Wake {
        let mut slot = self.slot.lock().unwrap();
        loop {
            if let Some(wake) = slot.wake.take() {
                return wake;
            }
            if slot.exit {
                return Wake::Exit;
            }
            slot = self.wakeup.wait(slot).unwrap();
        }
    }
}

struct World {
    /// P1, run by M1 until it parks the g, and P2, run by M3.
    ps: [PState; 2],
    /// Whether P1 is on the idle list, and the list's length for lock-free checks.
    idle_p: Mutex<bool>,
    npidle: AtomicUsize,
    runq: Mutex<Vec<u32>>,
    /// Where the parked g waits for its waker.
    waiter: Mutex<Option<u32>>,
    /// The g's pin: the id of the M it is pinned to, or 0.
    pin: AtomicUsize,
    /// The runtime's count of pinned gs.
    pinned_gs: AtomicUsize,
    /// M2 waits on the idle list: the only M that `startm` can wake.
    idle_m: Note,
    pinned_m: Note,
    /// Whether the waker runs on M3, which then looks at the queue itself; otherwise it is a
    /// thread that runs no goroutine.
    waker_on_m: bool,
}

impl World {
    fn new(waker_on_m: bool) -> World {
        let ps = [PState::new_idle(), PState::new_idle()];
        ps[0].acquire(M1).unwrap();
        ps[1].acquire(M3).unwrap();
        World {
            ps,
            idle_p: Mutex::new(false),
            npidle: AtomicUsize::new(0),
            runq: Mutex::new(Vec::new()),
            waiter: Mutex::new(None),
            pin: AtomicUsize::new(0),
            pinned_gs: AtomicUsize::new(0),
            idle_m: Note::default(),
            pinned_m: Note::default(),
            waker_on_m,
        }
    }

    fn has_work(&self) -> bool {
        !self.runq.lock().unwrap().is_empty()
    }

    fn pidleput(&self) {
        *self.idle_p.lock().unwrap() = true;
        self.npidle.store(1, Ordering::SeqCst);
    }

    /// `Shared::handoffp` for P1 in transit.
    fn handoffp(&self) {
        if self.has_work() {
            self.idle_m.wake(Wake::P(0));
            return;
        }
        self.ps[0].transit_to_idle();
        self.pidleput();
        fence(Ordering::SeqCst);
        if self.has_work() {
            self.wakep();
        }
    }

    /// `Shared::wakep`: only P1 can be idle, and M2 is the idle M.
    fn wakep(&self) {
        fence(Ordering::SeqCst);
        if self.npidle.load(Ordering::Relaxed) == 0 {
            return;
        }
        {
            let mut idle = self.idle_p.lock().unwrap();
            if !*idle {
                return;
            }
            *idle = false;
            self.npidle.store(0, Ordering::SeqCst);
        }
        self.ps[0].reserve().unwrap();
        self.idle_m.wake(Wake::P(0));
    }

    /// `hand_to_pinned_m` on M `m`, which holds P `p` and took `g` from the queue.
    fn hand_to_pinned_m(&self, m: MId, p: usize, g: u32) {
        assert!(
            self.pinned_gs.load(Ordering::Relaxed) != 0,
            "{m:?} took the pinned g without seeing the count of pins"
        );
        let pinned = self.pin.load(Ordering::Relaxed);
        assert_eq!(
            pinned, M1.0 as usize,
            "{m:?} took the g without seeing its pin"
        );
        self.pin.store(0, Ordering::Relaxed);
        self.pinned_gs.fetch_sub(1, Ordering::Relaxed);
        self.ps[p].handoff(m);
        self.pinned_m.wake(Wake::Pinned(p, g));
    }

    /// M1's g0 after the g switched to it to park during its unwind: `pin_if_unwinding`, the
    /// park's commit, then `stop_pinned`. Returns the P and the g handed back.
    fn park_pinned(&self) -> (usize, u32) {
        self.pin.store(M1.0 as usize, Ordering::Relaxed);
        self.pinned_gs.fetch_add(1, Ordering::Relaxed);
        *self.waiter.lock().unwrap() = Some(G);
        self.ps[0].handoff(M1);
        self.handoffp();
        match self.pinned_m.wait() {
            Wake::Pinned(p, g) => {
                self.ps[p].accept(M1);
                (p, g)
            }
            other => panic!("the pinned M woke with {other:?}"),
        }
    }

    /// Wakes the parked g (`ready` and `wakep`). On M3, then takes a g from the queue itself.
    fn waker(&self) {
        let g = loop {
            if let Some(g) = self.waiter.lock().unwrap().take() {
                break g;
            }
            thread::yield_now();
        };
        self.runq.lock().unwrap().push(g);
        self.wakep();
        if !self.waker_on_m {
            return;
        }
        let popped = self.runq.lock().unwrap().pop();
        if let Some(g) = popped {
            self.hand_to_pinned_m(M3, 1, g);
        }
    }

    /// M2: runs P1 whenever it is handed over, until the model ends.
    fn idle_m(&self) {
        loop {
            match self.idle_m.wait() {
                Wake::P(p) => {
                    self.ps[p].accept(M2);
                    let popped = self.runq.lock().unwrap().pop();
                    match popped {
                        Some(g) => self.hand_to_pinned_m(M2, p, g),
                        // `go_idle`: nothing to run.
                        None => {
                            self.ps[p].release(M2);
                            self.pidleput();
                        }
                    }
                }
                Wake::Exit => return,
                other => panic!("the idle M woke with {other:?}"),
            }
        }
    }
}

fn pinned_unwind_comes_back_to_its_m(waker_on_m: bool) {
    loom::model(move || {
        let world = Arc::new(World::new(waker_on_m));
        let waker = {
            let world = Arc::clone(&world);
            thread::spawn(move || world.waker())
        };
        let idle_m = {
            let world = Arc::clone(&world);
            thread::spawn(move || world.idle_m())
        };
        let (p, g) = world.park_pinned();
        assert_eq!(g, G);
        assert_eq!(world.ps[p].owner(), POwner::Running(M1));
        waker.join().unwrap();
        world.idle_m.exit();
        idle_m.join().unwrap();
        assert_eq!(world.pin.load(Ordering::Relaxed), 0);
        assert_eq!(world.pinned_gs.load(Ordering::Relaxed), 0);
    });
}

#[test]
fn pinned_unwind_woken_by_an_m_comes_back() {
    pinned_unwind_comes_back_to_its_m(true);
}

#[test]
fn pinned_unwind_woken_by_a_thread_comes_back() {
    pinned_unwind_comes_back_to_its_m(false);
}

/// The race of `startm`'s fallback at the thread limit with the M that takes the pinned g.
///
/// M1 waits pinned, listed with its g as a pinned M. `startm`, which could start no M for P1,
/// unpins the g with a CAS under the list's lock and, if that wins, takes M1 off the list and
/// hands it P1. Meanwhile M2, holding P2, takes the g from the queue, unpins it with a swap,
/// takes M1 off the list (under the lock) and hands the g back with P2. Exactly one of them
/// wakes M1, and the g runs exactly once: on M1, or on M2 when `startm` unpinned it first.
#[test]
fn startm_fallback_races_the_handback() {
    loom::model(|| {
        let ps = Arc::new([PState::new_idle(), PState::new_idle()]);
        ps[1].acquire(M2).unwrap();
        ps[0].reserve().unwrap();
        let pin = Arc::new(AtomicUsize::new(M1.0 as usize));
        let listed = Arc::new(Mutex::new(true));
        let note = Arc::new(Note::default());
        let runs = Arc::new(AtomicUsize::new(0));

        let startm = {
            let (ps, pin, listed, note) = (
                Arc::clone(&ps),
                Arc::clone(&pin),
                Arc::clone(&listed),
                Arc::clone(&note),
            );
            thread::spawn(move || {
                let mut listed = listed.lock().unwrap();
                let unpinned = *listed
                    && pin
                        .compare_exchange(M1.0 as usize, 0, Ordering::Relaxed, Ordering::Relaxed)
                        .is_ok();
                if unpinned {
                    *listed = false;
                    drop(listed);
                    note.wake(Wake::P(0));
                } else {
                    // The failure path: P1 goes to the idle list.
                    drop(listed);
                    ps[0].transit_to_idle();
                }
            })
        };
        let taker = {
            let (ps, pin, listed, note, runs) = (
                Arc::clone(&ps),
                Arc::clone(&pin),
                Arc::clone(&listed),
                Arc::clone(&note),
                Arc::clone(&runs),
            );
            thread::spawn(move || {
                if pin.swap(0, Ordering::Relaxed) == 0 {
                    // `startm` unpinned the g first: this M runs it.
                    runs.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                *listed.lock().unwrap() = false;
                ps[1].handoff(M2);
                note.wake(Wake::Pinned(1, G));
            })
        };

        // M1 in `stop_pinned`: one wake, with a P in transit.
        match note.wait() {
            Wake::Pinned(p, g) => {
                assert_eq!(g, G);
                ps[p].accept(M1);
                runs.fetch_add(1, Ordering::Relaxed);
            }
            Wake::P(p) => ps[p].accept(M1),
            Wake::Exit => unreachable!("no shutdown in this model"),
        }
        startm.join().unwrap();
        taker.join().unwrap();
        assert_eq!(runs.load(Ordering::Relaxed), 1, "the g ran once");
        assert_eq!(pin.load(Ordering::Relaxed), 0);
        assert_eq!(note.slot.lock().unwrap().wake, None, "M1 was woken twice");
        let owned = ps
            .iter()
            .filter(|p| p.owner() == POwner::Running(M1))
            .count();
        assert_eq!(owned, 1, "M1 ends with exactly one P");
    });
}
