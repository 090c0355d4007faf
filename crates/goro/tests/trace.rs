//! The execution trace: every goroutine's events are well nested, and no goroutine runs on
//! two Ps at once.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{LIMIT, watchdog};
use goro::Runtime;
use goro::trace::{Event, StopReason};

#[test]
fn goroutine_events_are_well_nested() {
    let rt = Runtime::builder().procs(2).build().unwrap();
    let records = watchdog(LIMIT, move || {
        goro::trace::start().unwrap();
        rt.block_on(|| {
            let handles: Vec<_> = (0..200u64)
                .map(|i| {
                    goro::spawn(move || {
                        goro::yield_now();
                        if i % 3 == 0 {
                            goro::sleep(Duration::from_micros(200));
                        }
                        // SAFETY: getppid has no preconditions.
                        goro::blocking(|| unsafe { libc::getppid() });
                        if i % 5 == 0 {
                            goro::blocking_known(|| std::thread::sleep(Duration::from_micros(100)));
                        }
                        i
                    })
                    .unwrap()
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).sum::<u64>()
        })
        .unwrap();
        goro::trace::stop()
    });
    // Per goroutine: created once, then Start/Stop strictly alternate, ending with an Exit.
    let mut running: HashMap<u64, Option<u32>> = HashMap::new();
    let mut created = 0;
    let mut exits = 0;
    for record in &records {
        match record.event {
            Event::GoCreate { goid } => {
                created += 1;
                assert!(
                    running.insert(goid, None).is_none(),
                    "g{goid} created twice"
                );
            }
            Event::GoStart { goid } => {
                let state = running.entry(goid).or_insert(None);
                assert!(
                    state.is_none(),
                    "g{goid} started on {:?} while running on {state:?}",
                    record.p
                );
                assert!(record.p.is_some(), "g{goid} started without a P");
                *state = record.p;
            }
            Event::GoStop { goid, reason } => {
                let state = running
                    .get_mut(&goid)
                    .expect("stop of an unknown goroutine");
                assert!(state.is_some(), "g{goid} stopped while not running");
                *state = None;
                if reason == StopReason::Exit {
                    exits += 1;
                }
            }
            _ => {}
        }
    }
    // At any moment each P runs at most one goroutine. A goroutine in a syscall leaves its P
    // (which the monitor may give to another goroutine) and takes one again at exit.
    let mut on_p: HashMap<u32, u64> = HashMap::new();
    for record in &records {
        match record.event {
            Event::GoStart { goid } | Event::SyscallExit { goid, .. } => {
                if let Some(p) = record.p {
                    let previous = on_p.insert(p, goid);
                    assert!(
                        previous.is_none(),
                        "P{p} took g{goid} while running g{previous:?}"
                    );
                }
            }
            Event::GoStop { goid, .. } | Event::SyscallEnter { goid, .. } => {
                on_p.retain(|_, running| *running != goid);
            }
            _ => {}
        }
    }
    assert_eq!(created, 201, "every goroutine's creation is traced");
    assert_eq!(exits, 201, "every goroutine's exit is traced");
    assert!(
        records
            .iter()
            .any(|r| matches!(r.event, Event::SyscallEnter { .. }))
    );
    assert!(
        records
            .iter()
            .any(|r| matches!(r.event, Event::SyscallExit { .. }))
    );
    assert!(
        records
            .iter()
            .any(|r| matches!(r.event, Event::PStart { .. }))
    );
    assert!(
        records
            .iter()
            .any(|r| matches!(r.event, Event::PStop { .. }))
    );
}
