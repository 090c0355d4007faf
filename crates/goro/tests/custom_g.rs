//! Custom gs and several schedulers in one runtime.

mod common;
#[path = "../examples/priority/sched.rs"]
mod sched;

use std::sync::{Arc, Mutex};

use common::{LIMIT, watchdog};
use goro::{Runtime, SchedHandle};
use sched::{PrioG, PriorityScheduler};

#[test]
fn high_priority_goroutines_finish_first() {
    let priority = SchedHandle::new(PriorityScheduler::default());
    let rt = Runtime::builder()
        .procs(1)
        .add_scheduler(priority.clone())
        .build()
        .unwrap();
    let order = watchdog(LIMIT, move || {
        rt.block_on(move || {
            // The spawner holds the only P, so every goroutine below is queued before any of
            // them runs: they all compete for the P at once.
            let finished = Arc::new(Mutex::new(Vec::new()));
            let mut handles = Vec::new();
            for i in 0..40u8 {
                let level = if i % 2 == 0 { 1 } else { 9 };
                let finished = finished.clone();
                let handle = goro::spawn_g(PrioG::new(level), &priority, move || {
                    for _ in 0..5 {
                        goro::yield_now();
                    }
                    let priority =
                        goro::with_g::<PrioG, _>(|me| me.priority).expect("running as a PrioG");
                    finished.lock().unwrap().push(priority);
                })
                .unwrap();
                handles.push(handle);
            }
            // FIFO goroutines run beside them.
            let fifo: Vec<_> = (0..10)
                .map(|_| {
                    goro::spawn(|| {
                        goro::yield_now();
                        goro::with_g::<PrioG, _>(|_| ()).is_none()
                    })
                    .unwrap()
                })
                .collect();
            for handle in handles {
                handle.join().unwrap();
            }
            for handle in fifo {
                assert!(
                    handle.join().unwrap(),
                    "with_g::<PrioG> matched a default g"
                );
            }
            Arc::try_unwrap(finished).unwrap().into_inner().unwrap()
        })
        .unwrap()
    });
    assert_eq!(order.len(), 40);
    let first_low = order.iter().position(|&p| p == 1).unwrap();
    let last_high = order.iter().rposition(|&p| p == 9).unwrap();
    assert!(
        last_high < first_low,
        "a low-priority goroutine finished before a high one: {order:?}"
    );
}

#[test]
fn spawn_on_a_foreign_scheduler_is_an_error() {
    let rt = Runtime::builder().procs(1).build().unwrap();
    let stranger = SchedHandle::new(PriorityScheduler::default());
    let error = rt.spawn_g(PrioG::new(1), &stranger, || ()).unwrap_err();
    assert!(
        error
            .to_string()
            .contains("add it with Builder::add_scheduler"),
        "{error}"
    );
}
