//! Goroutines parked in four ways, for trying goroutine dumps and the gdb extension.
//!
//! `cargo run -p goro --example parked` prints the dump of the runtime once the goroutines
//! have parked. Under gdb, stop at `goro_example_breakpoint` to inspect them:
//!
//! ```text
//! gdb -q -x crates/goro/gdb/goro.py -ex 'break goro_example_breakpoint' -ex run \
//!     -ex 'goro goroutines' -ex 'goro bt 2' target/debug/examples/parked
//! ```

use std::sync::Arc;
use std::time::Duration;

use goro::{GStatus, Runtime};

/// Waits for a message that `main` sends once the dump is printed.
#[inline(never)]
fn wait_for_message(receiver: goro::sync::Receiver<&'static str>) -> &'static str {
    receiver.recv().unwrap()
}

/// Waits for the mutex that `main`'s goroutine holds.
#[inline(never)]
fn wait_for_lock(lock: Arc<goro::sync::Mutex<u32>>) -> u32 {
    *lock.lock()
}

/// Sleeps for longer than the example runs.
#[inline(never)]
fn nap() {
    goro::sleep(Duration::from_secs(3600));
}

/// The place where a debugger stops while every goroutine above is parked.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn goro_example_breakpoint() {
    std::hint::black_box(());
}

fn main() {
    // The goroutines wait for this thread, which the deadlock detector cannot see.
    let rt = Runtime::builder()
        .procs(2)
        .deadlock_detection(false)
        .build()
        .unwrap();
    let (sender, receiver) = goro::sync::channel(0);
    let message = rt.spawn(move || wait_for_message(receiver)).unwrap();

    let lock = Arc::new(goro::sync::Mutex::new(0));
    let (locked_sender, locked) = goro::sync::channel(0);
    let (unlock_sender, unlock) = goro::sync::channel::<()>(0);
    let holder_lock = lock.clone();
    let holder = rt
        .spawn(move || {
            let guard = holder_lock.lock();
            locked_sender.send(()).unwrap();
            unlock.recv().unwrap();
            drop(guard);
        })
        .unwrap();
    rt.block_on(move || locked.recv().unwrap()).unwrap();
    let waiter = rt.spawn(move || wait_for_lock(lock)).unwrap();
    let _sleeper = rt.spawn(nap).unwrap();

    // Wait until every goroutine has parked.
    let dump = loop {
        let dump = rt.dump();
        if dump.goroutines.iter().all(|g| g.status == GStatus::Waiting) {
            break dump;
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    if !std::env::args().any(|arg| arg == "--quiet") {
        print!("{dump}");
    }
    goro_example_breakpoint();

    sender.send("done").unwrap();
    unlock_sender.send(()).unwrap();
    assert_eq!(message.join().unwrap(), "done");
    holder.join().unwrap();
    assert_eq!(waiter.join().unwrap(), 0);
}
