//! `getg()` stays right when goroutines move between Ms. The xtask also runs this file with
//! the `release-lto` profile (fat LTO, one codegen unit), where a cached thread-local address
//! would show.

mod common;

use common::{LIMIT, gettid, watchdog};
use goro::Runtime;

#[test]
fn getg_and_thread_id_follow_the_goroutine() {
    let rt = Runtime::builder().procs(4).build().unwrap();
    let (reads, _moved) = watchdog(LIMIT, move || {
        rt.block_on(|| {
            let handles: Vec<_> = (0..1000)
                .map(|_| {
                    goro::spawn(|| {
                        let me = goro::getg();
                        // SAFETY: the running g's header is alive while it runs.
                        let goid = unsafe { &*me }.goid();
                        let first_thread = gettid();
                        let mut moved = false;
                        for _ in 0..20 {
                            let g = goro::getg();
                            assert_eq!(g, me, "getg returned another g's header");
                            // SAFETY: as above.
                            assert_eq!(unsafe { &*g }.goid(), goid);
                            // The M the header names is the thread that actually runs us.
                            assert_eq!(goro::debug::m_thread_id(), Some(gettid()));
                            moved |= gettid() != first_thread;
                            std::hint::black_box((0..100u64).sum::<u64>());
                            goro::yield_now();
                        }
                        (20, moved)
                    })
                    .unwrap()
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap())
                .fold((0, 0), |(reads, moved), (r, m)| {
                    (reads + r, moved + m as usize)
                })
        })
        .unwrap()
    });
    assert_eq!(reads, 20_000);
    // Whether the goroutines above changed threads depends on the machine's load, so a probe
    // that changes threads for certain makes the checks cover a resumed goroutine too.
    common::check_forced_migration();
}
