//! loom model of the block cache: other threads give blocks back while the owner allocates
//! and frees.
//!
//! Run with `RUSTFLAGS="--cfg loom" cargo test --release -p goro-stack --test loom_blocks`.

#![cfg(loom)]

use std::collections::HashSet;
use std::ptr::NonNull;

use loom::thread;

use goro_stack::{BlockCache, BlockHome};

/// Sends a block to another thread as its address; loom threads need `Send` closures.
fn address(block: NonNull<u8>) -> usize {
    block.as_ptr() as usize
}

fn block_at(address: usize) -> NonNull<u8> {
    NonNull::new(address as *mut u8).expect("a block address is not null")
}

/// Starts one thread per block that gives the block back through `home`.
fn give_back(home: BlockHome, blocks: &[NonNull<u8>]) -> Vec<thread::JoinHandle<()>> {
    blocks
        .iter()
        .map(|&block| {
            let block = address(block);
            thread::spawn(move || {
                // SAFETY: the block came from the cache with this home, and the owner no
                // longer uses it.
                unsafe { home.free(block_at(block)) }
            })
        })
        .collect()
}

/// Two threads give a block back each while the owner frees a third one locally and
/// allocates. No block is handed out twice while it is in use, and none is lost: after the
/// threads finish, every freed block comes out of the cache again.
#[test]
fn remote_frees_race_the_owner() {
    loom::model(|| {
        let mut cache = BlockCache::new();
        let freed = [cache.allocate(), cache.allocate(), cache.allocate()];
        let home = cache.home();
        let pushers = give_back(home, &freed[..2]);

        // SAFETY: the third block came from this cache and is used no more.
        unsafe { cache.free(freed[2]) };
        // loom runs a spawned thread only once the running one yields or blocks.
        thread::yield_now();
        let mut handed_out = vec![cache.allocate(), cache.allocate()];
        for pusher in pushers {
            pusher.join().expect("a pushing thread panicked");
        }
        handed_out.extend((0..3).map(|_| cache.allocate()));

        let distinct: HashSet<NonNull<u8>> = handed_out.iter().copied().collect();
        assert_eq!(
            distinct.len(),
            handed_out.len(),
            "a block was handed out twice"
        );
        for block in freed {
            assert!(distinct.contains(&block), "freed block {block:?} was lost");
        }
        for block in handed_out {
            // SAFETY: every block came from this cache and is used no more.
            unsafe { cache.free(block) };
        }
    });
}

/// The owner takes the remote list while two threads push onto it.
#[test]
fn take_races_two_pushes() {
    loom::model(|| {
        let mut cache = BlockCache::new();
        let freed = [cache.allocate(), cache.allocate()];
        let home = cache.home();
        let pushers = give_back(home, &freed);

        // loom runs a spawned thread only once the running one yields or blocks.
        thread::yield_now();
        let first = cache.allocate();
        for pusher in pushers {
            pusher.join().expect("a pushing thread panicked");
        }
        let rest = [cache.allocate(), cache.allocate()];

        let handed_out = [first, rest[0], rest[1]];
        let distinct: HashSet<NonNull<u8>> = handed_out.iter().copied().collect();
        assert_eq!(distinct.len(), 3, "a block was handed out twice");
        for block in freed {
            assert!(distinct.contains(&block), "freed block {block:?} was lost");
        }
        for block in handed_out {
            // SAFETY: every block came from this cache and is used no more.
            unsafe { cache.free(block) };
        }
    });
}
