//! Two schedulers in one runtime: goroutines of a priority scheduler, whose custom g carries
//! a priority, run beside goroutines of the default FIFO scheduler.
//!
//! Run with `cargo run --release -p goro --example priority`.

mod sched;

use std::sync::{Arc, Mutex};

use goro::{Runtime, SchedHandle};
use sched::{PrioG, PriorityScheduler};

fn main() {
    let priority = SchedHandle::new(PriorityScheduler::default());
    let rt = Runtime::builder()
        .procs(1)
        .add_scheduler(priority.clone())
        .build()
        .unwrap();
    let finished = Arc::new(Mutex::new(Vec::new()));

    let mut handles = Vec::new();
    for (name, level) in [("low", 1), ("high", 9), ("low", 1), ("high", 9)] {
        let finished = finished.clone();
        let handle = rt
            .spawn_g(PrioG::new(level), &priority, move || {
                for _ in 0..3 {
                    goro::yield_now();
                }
                // Inside a goroutine, `with_g` lends the running custom g.
                let priority =
                    goro::with_g::<PrioG, _>(|me| me.priority).expect("a PrioG goroutine");
                finished
                    .lock()
                    .unwrap()
                    .push(format!("{name} (priority {priority})"));
            })
            .unwrap();
        handles.push(handle);
    }
    let fifo = {
        let finished = finished.clone();
        rt.spawn(move || {
            assert!(
                goro::with_g::<PrioG, _>(|_| ()).is_none(),
                "a FIFO goroutine is no PrioG"
            );
            finished.lock().unwrap().push("fifo".to_owned());
        })
        .unwrap()
    };
    for handle in handles {
        handle.join().unwrap();
    }
    fifo.join().unwrap();
    for line in finished.lock().unwrap().iter() {
        println!("finished: {line}");
    }
}
