//! loom models of a yield's direct switch: the yielding M hands its g to the scheduler
//! (`on_yield_next`) before its switch has saved the g, and another P may take the g at once.
//!
//! The runtime's protocol (`take_saved_sp` in `goro/src/m.rs`, and the switch asm, whose store
//! of the saved stack pointer is a release store) is modelled here with loom types: the saved
//! frame is an `UnsafeCell` and the saved stack pointer an atomic that is 0 while the g runs.
//! A g taken by another P must be resumed from the frame its yield saved, with no data race on
//! the frame, and every g must come out of the scheduler once.
//!
//! Run with `RUSTFLAGS="--cfg loom" cargo test --release -p goro-sched --test loom_yield`.

#![cfg(loom)]

use std::ptr::NonNull;

use loom::cell::UnsafeCell;
use loom::sync::Arc;
use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::thread;

use goro_abi::{GHeader, GRef, PId, ReadyCause};
use goro_sched::{Fifo, Scheduler, WorkStealing};

/// The saved state of one g: what the switch writes when it suspends the g.
struct Saved {
    /// The saved stack pointer; 0 while the g runs or is being switched out.
    sp: AtomicUsize,
    /// Stands for the registers that the switch pushes on the g's stack.
    frame: UnsafeCell<usize>,
}

/// Two gs with goids 1 and 2, and their saved states: g 2 is suspended with frame 20, g 1
/// runs (its slot is empty).
struct World {
    headers: Vec<GHeader>,
    saved: Vec<Saved>,
}

impl World {
    fn new() -> World {
        let headers: Vec<GHeader> = (1..=2).map(GHeader::with_goid).collect();
        let saved = vec![
            Saved {
                sp: AtomicUsize::new(0),
                frame: UnsafeCell::new(0),
            },
            Saved {
                sp: AtomicUsize::new(0x2000),
                frame: UnsafeCell::new(20),
            },
        ];
        World { headers, saved }
    }

    fn g(&self, goid: u64) -> GRef {
        // SAFETY: the world outlives every thread of the model.
        unsafe { GRef::from_raw(NonNull::from(&self.headers[goid as usize - 1])) }
    }

    fn saved(&self, g: GRef) -> &Saved {
        &self.saved[g.header().goid() as usize - 1]
    }

    /// The switch that suspends `g`: stores its frame, then publishes the stack pointer with
    /// a release store, as the asm does.
    fn save(&self, g: GRef, frame: usize) {
        let saved = self.saved(g);
        saved.frame.with_mut(|slot| {
            // SAFETY: the g's M is the only writer while the slot is empty, and no reader
            // looks at the frame before the release store below.
            unsafe { *slot = frame }
        });
        saved
            .sp
            .store(0x1000 * g.header().goid() as usize, Ordering::Release);
    }

    /// The resuming side: `take_saved_sp` waits for the stack pointer with acquire loads and
    /// empties the slot, then the switch reads the frame. Returns the frame.
    fn resume(&self, g: GRef) -> usize {
        let saved = self.saved(g);
        while saved.sp.load(Ordering::Acquire) == 0 {
            thread::yield_now();
        }
        self.take(g)
    }

    /// `try_take_saved_sp`: returns the frame of `g` if its switch has saved it, without
    /// waiting.
    fn try_resume(&self, g: GRef) -> Option<usize> {
        (self.saved(g).sp.load(Ordering::Acquire) != 0).then(|| self.take(g))
    }

    fn take(&self, g: GRef) -> usize {
        let saved = self.saved(g);
        saved.sp.store(0, Ordering::Relaxed);
        saved.frame.with(|slot| {
            // SAFETY: the caller's acquire load saw the release store that followed the write.
            unsafe { *slot }
        })
    }

    /// A yield of the running g `this` on an M, as `gosched` does it when the scheduler's
    /// `on_yield` and `next` are separate calls: switch straight to the next g if it is
    /// saved, and otherwise save `this` first (the switch to g0) and then wait for the next
    /// g. Returns the goid and frame of the g it resumed, if it switched.
    fn yield_g<S: Scheduler>(&self, scheduler: &S, this: GRef, p: PId) -> Option<(u64, usize)> {
        let frame = 10 + this.header().goid() as usize;
        scheduler.on_yield(this, p);
        match scheduler.next(p) {
            Some(next) if next == this => None,
            Some(next) => {
                if let Some(resumed) = self.try_resume(next) {
                    self.save(this, frame);
                    return Some((next.header().goid(), resumed));
                }
                self.save(this, frame);
                Some((next.header().goid(), self.resume(next)))
            }
            None => {
                self.save(this, frame);
                None
            }
        }
    }
}

/// Runs the model with `scheduler`: M 1 runs g 1 on P 0, where g 2 was readied with `cause`,
/// and yields, while a thread for P 1 calls `next` at the same time. Panics on a wrong frame,
/// a lost g or a g that came out twice.
fn yield_races_other_p<S: Scheduler>(scheduler: S, cause: ReadyCause) {
    let world = Arc::new(World::new());
    let scheduler = Arc::new(scheduler);
    // SAFETY: the model is the scheduler's only user: P 0's hooks run on this thread, P 1's
    // on the spawned one, and the drain after the join.
    unsafe { scheduler.start(2) };
    scheduler.ready(world.g(2), cause, Some(PId(0)));

    let other_p = {
        let (world, scheduler) = (Arc::clone(&world), Arc::clone(&scheduler));
        thread::spawn(move || {
            let g = scheduler.next(PId(1))?;
            let frame = world.resume(g);
            Some((g.header().goid(), frame))
        })
    };

    // M 1: hand g 1 back, then save it and resume what the scheduler gave instead.
    let mut resumed = Vec::new();
    let next = scheduler.on_yield_next(world.g(1), PId(0));
    match next {
        Some(g) if g == world.g(1) => {
            // g 1 runs on; nothing was switched, so g 1 stays unsaved and unqueued.
        }
        Some(g) => {
            world.save(world.g(1), 11);
            resumed.push((g.header().goid(), world.resume(g)));
        }
        None => world.save(world.g(1), 11),
    }
    let taken_by_other = other_p.join().unwrap();
    resumed.extend(taken_by_other);
    // Drain what is left, resuming each g as an M would.
    while let Some(g) = scheduler.next(PId(0)) {
        resumed.push((g.header().goid(), world.resume(g)));
    }
    if next == Some(world.g(1)) {
        resumed.push((1, 11));
    }
    resumed.sort_unstable();
    assert_eq!(
        resumed,
        [(1, 11), (2, 20)],
        "a g was lost, resumed twice or resumed from a stale frame"
    );
}

/// Two Ms yield their running gs at once through separate `on_yield` and `next` calls, so
/// each may take the other's g before it is saved. Neither may wait for the other while its
/// own g is unsaved: the model would never end. Every g runs again exactly once, from the
/// frame its yield saved.
#[test]
fn two_yields_take_each_others_g() {
    loom::model(|| {
        let world = Arc::new(World::new());
        world.saved[1].sp.store(0, Ordering::Relaxed);
        let fifo = Arc::new(Fifo::new());
        let other = {
            let (world, fifo) = (Arc::clone(&world), Arc::clone(&fifo));
            thread::spawn(move || world.yield_g(&*fifo, world.g(2), PId(1)))
        };
        let mine = world.yield_g(&*fifo, world.g(1), PId(0));
        let theirs = other.join().unwrap();
        let mut resumed: Vec<(u64, usize)> = mine.into_iter().chain(theirs).collect();
        while let Some(g) = fifo.next(PId(0)) {
            resumed.push((g.header().goid(), world.resume(g)));
        }
        resumed.sort_unstable();
        // A yield that got its own g back keeps running it: that g was never saved or queued.
        for (goid, frame) in &resumed {
            assert_eq!(
                *frame,
                10 + *goid as usize,
                "g {goid} resumed from a wrong frame"
            );
        }
        let mut goids: Vec<u64> = resumed.iter().map(|(goid, _)| *goid).collect();
        goids.dedup();
        assert_eq!(
            goids.len(),
            resumed.len(),
            "a g was resumed twice: {resumed:?}"
        );
    });
}

/// FIFO: P 1 may pop g 1 as soon as the yield has queued it.
#[test]
fn fifo_yield_races_other_p() {
    loom::model(|| yield_races_other_p(Fifo::new(), ReadyCause::Spawn));
}

/// Work stealing: P 1 may steal g 1 from P 0's run queue as soon as the yield has queued it.
/// g 2 waits in P 0's runnext slot.
#[test]
fn steal_yield_races_other_p() {
    loom::model(|| yield_races_other_p(WorkStealing::new(), ReadyCause::Spawn));
}

/// Work stealing, with g 2 in P 0's run queue instead: the yield's fast path pops g 2 and
/// then queues g 1, while P 1 may steal g 2 before the pop or g 1 right after the push.
#[test]
fn steal_fast_yield_races_other_p() {
    loom::model(|| yield_races_other_p(WorkStealing::new(), ReadyCause::Yield));
}
