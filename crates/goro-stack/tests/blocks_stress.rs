//! Stress test of the block cache with real threads: the owner allocates blocks and hands
//! them to three freeing threads, which give them back through the cache's home while the
//! owner keeps allocating, 200,000 blocks in all.
//!
//! The owner writes a serial number into each block it hands out and checks that no block
//! it allocates is still out, so a block handed out twice fails the test. At the end, every
//! block has come back.
//!
//! The test thread is the watchdog: it fails the test if the run takes over 120 s.

// Under `--cfg loom` the cache's atomics work only inside a loom model, so this file is left
// out of loom builds. The model is in tests/loom_blocks.rs.
#![cfg(not(loom))]

use std::collections::HashSet;
use std::ptr::NonNull;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use goro_stack::BlockCache;
use goro_stack::blocks::BLOCK_SIZE;

const BLOCKS: u64 = 200_000;
const FREEING_THREADS: usize = 3;
const WATCHDOG: Duration = Duration::from_secs(120);

/// Runs the owner and the freeing threads; returns the number of blocks that came back.
fn run() -> u64 {
    let mut cache = BlockCache::new();
    let home = cache.home();
    let (returned_tx, returned_rx) = mpsc::channel::<usize>();
    let mut senders = Vec::new();
    let mut freeing = Vec::new();
    for _ in 0..FREEING_THREADS {
        let (tx, rx) = mpsc::sync_channel::<(usize, u64)>(64);
        senders.push(tx);
        let returned = returned_tx.clone();
        freeing.push(thread::spawn(move || {
            for (address, serial) in rx {
                let block = NonNull::new(address as *mut u8).expect("a block address");
                // SAFETY: the owner wrote the serial into the block before sending it.
                let written = unsafe { block.cast::<u64>().read() };
                assert_eq!(written, serial, "block {address:#x} was reused while out");
                // Told before the free, so the owner has the message by the time it can
                // allocate the block again.
                returned.send(address).expect("the owner waits for returns");
                // SAFETY: the block came from the cache with this home, and this thread is
                // done with it.
                unsafe { home.free(block) };
            }
        }));
    }
    drop(returned_tx);

    let mut out: HashSet<usize> = HashSet::new();
    let drain = |out: &mut HashSet<usize>| {
        while let Ok(address) = returned_rx.try_recv() {
            assert!(out.remove(&address), "block {address:#x} came back twice");
        }
    };
    for serial in 0..BLOCKS {
        let block = cache.allocate();
        let address = block.as_ptr() as usize;
        if out.contains(&address) {
            // The free of a block follows its message, and the free happens before this
            // allocation, so the message is in the channel by now.
            drain(&mut out);
        }
        assert!(
            out.insert(address),
            "block {address:#x} was handed out twice"
        );
        // SAFETY: the block is ours, BLOCK_SIZE bytes long and aligned for a u64.
        unsafe {
            block.cast::<u64>().write(serial);
            block.as_ptr().add(BLOCK_SIZE - 1).write(serial as u8);
        }
        senders[serial as usize % FREEING_THREADS]
            .send((address, serial))
            .expect("a freeing thread stopped");
    }
    drop(senders);
    for thread in freeing {
        thread.join().expect("a freeing thread panicked");
    }
    drain(&mut out);
    let mut came_back = BLOCKS - out.len() as u64;
    for address in returned_rx {
        assert!(out.remove(&address), "block {address:#x} came back twice");
        came_back += 1;
    }
    assert!(out.is_empty(), "{} blocks never came back", out.len());
    came_back
}

#[test]
fn blocks_freed_by_other_threads_return_once() {
    let (done, watchdog) = mpsc::channel();
    let worker = thread::spawn(move || {
        let came_back = run();
        let _ = done.send(());
        came_back
    });
    match watchdog.recv_timeout(WATCHDOG) {
        Ok(()) => {}
        Err(mpsc::RecvTimeoutError::Disconnected) => {}
        Err(mpsc::RecvTimeoutError::Timeout) => {
            panic!("the block stress test did not finish within {WATCHDOG:?}")
        }
    }
    let came_back = worker.join().expect("the owner thread panicked");
    assert_eq!(came_back, BLOCKS);
}
