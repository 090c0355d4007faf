//! Dropping a runtime unwinds its suspended goroutines exactly once, so their destructors run.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{LIMIT, watchdog};
use goro::{JoinError, Runtime};

/// Counts its drops.
struct Guard(Arc<AtomicUsize>);

impl Drop for Guard {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn drop_unwinds_parked_goroutines_once() {
    let drops = Arc::new(AtomicUsize::new(0));
    let (handles, drops) = watchdog(LIMIT, move || {
        let rt = Runtime::builder()
            .procs(2)
            .deadlock_detection(false)
            .build()
            .unwrap();
        let mut handles = Vec::new();
        for i in 0..20 {
            let guard = Guard(drops.clone());
            handles.push(
                rt.spawn(move || {
                    let _guard = guard;
                    match i % 3 {
                        0 => loop {
                            goro::park();
                        },
                        1 => goro::sleep(Duration::from_secs(3600)),
                        _ => loop {
                            goro::yield_now();
                        },
                    }
                })
                .unwrap(),
            );
        }
        // Let every goroutine reach its wait.
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(
            drops.load(Ordering::SeqCst),
            0,
            "nothing unwinds before the drop"
        );
        drop(rt);
        (handles, drops)
    });
    assert_eq!(
        drops.load(Ordering::SeqCst),
        20,
        "each guard dropped exactly once"
    );
    for handle in handles {
        let error = handle.join().unwrap_err();
        assert!(matches!(error, JoinError::Shutdown { .. }), "{error}");
    }
}
