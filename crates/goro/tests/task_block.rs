//! Where a goroutine's block lives: at the top of its stack when it fits, on the heap when it
//! does not, and for how long its stack stays in use after the goroutine exits.

mod common;

use common::{LIMIT, watchdog};
use goro::{GHeader, Runtime, custom_g};

custom_g! {
    /// A g small enough for its block to sit at the top of its stack.
    struct SmallG {
        header: GHeader,
        tag: u64,
    }
}

custom_g! {
    /// A g too large for a 16 KiB stack, whose block goes to the heap.
    struct LargeG {
        header: GHeader,
        payload: [u64; 1024],
    }
}

fn small_g(tag: u64) -> SmallG {
    SmallG {
        header: GHeader::new(),
        tag,
    }
}

/// Where the running g's block and one of its frames lie, as addresses.
#[derive(Debug)]
struct Layout {
    block: usize,
    frame: usize,
    stack_lo: usize,
    stack_hi: usize,
}

fn layout_of(header: &GHeader) -> Layout {
    let local = 0u8;
    Layout {
        block: header as *const GHeader as usize,
        frame: std::hint::black_box(&local) as *const u8 as usize,
        stack_lo: header.stack_lo(),
        stack_hi: header.stack_hi(),
    }
}

#[test]
fn small_block_sits_above_stack_bounds() {
    let rt = Runtime::builder().procs(1).build().unwrap();
    let scheduler = rt.default_scheduler().clone();
    let (tag, layout) = watchdog(LIMIT, move || {
        let handle = rt
            .spawn_g(small_g(7), &scheduler, || {
                goro::with_g::<SmallG, _>(|me| (me.tag, layout_of(&me.header))).unwrap()
            })
            .unwrap();
        handle.join().unwrap()
    });
    assert_eq!(tag, 7);
    assert!(
        layout.stack_lo < layout.frame && layout.frame < layout.stack_hi,
        "a frame lies outside the g's stack bounds: {layout:?}"
    );
    assert!(
        layout.block >= layout.stack_hi,
        "the block overlaps the g's stack bounds: {layout:?}"
    );
    assert!(
        layout.block - layout.stack_hi < 4096,
        "the block is not at the top of the stack: {layout:?}"
    );
}

#[test]
fn large_block_goes_to_heap() {
    let rt = Runtime::builder()
        .procs(1)
        .stack_size(16 * 1024)
        .build()
        .unwrap();
    let scheduler = rt.default_scheduler().clone();
    let (sum, layout) = watchdog(LIMIT, move || {
        let mut g = LargeG {
            header: GHeader::new(),
            payload: [0; 1024],
        };
        g.payload
            .iter_mut()
            .enumerate()
            .for_each(|(i, x)| *x = i as u64);
        let handle = rt
            .spawn_g(g, &scheduler, || {
                goro::with_g::<LargeG, _>(|me| {
                    (me.payload.iter().sum::<u64>(), layout_of(&me.header))
                })
                .unwrap()
            })
            .unwrap();
        handle.join().unwrap()
    });
    assert_eq!(sum, (0..1024).sum::<u64>());
    assert!(
        layout.stack_lo < layout.frame && layout.frame < layout.stack_hi,
        "a frame lies outside the g's stack bounds: {layout:?}"
    );
    assert!(
        !(layout.stack_lo..layout.stack_hi + 4096).contains(&layout.block),
        "a block of 8 KiB was placed on a 16 KiB stack: {layout:?}"
    );
}

#[test]
fn join_handle_does_not_keep_stack() {
    let rt = Runtime::builder().procs(1).build().unwrap();
    watchdog(LIMIT, move || {
        let handle = rt.spawn(|| 42u32).unwrap();
        // The handle stays unjoined while the g exits and its stack goes back to the pool.
        while rt.stack_stats().in_use_stacks != 0 {
            std::thread::yield_now();
        }
        assert!(handle.is_finished());
        assert_eq!(handle.join().unwrap(), 42);
    });
}

#[test]
fn goroutine_handle_keeps_stack_until_dropped() {
    let rt = Runtime::builder().procs(1).build().unwrap();
    watchdog(LIMIT, move || {
        let handle = rt.spawn(goro::current).unwrap();
        let me = handle.join().unwrap();
        assert_eq!(
            rt.stack_stats().in_use_stacks,
            1,
            "the exited g's block lives on its stack while a Goroutine handle refers to it"
        );
        // Unparking an exited g only stores a permit.
        me.unpark();
        drop(me);
        // The last reference may be the g's own, dropped by its M right after the join.
        while rt.stack_stats().in_use_stacks != 0 {
            std::thread::yield_now();
        }
        let stats = rt.stack_stats();
        assert!(
            stats.cached_stacks >= 1,
            "the stack was not cached: {stats:?}"
        );
    });
}

#[test]
fn detached_goroutines_free_their_stacks() {
    let rt = Runtime::builder().procs(2).build().unwrap();
    watchdog(LIMIT, move || {
        let (done, finished) = std::sync::mpsc::channel();
        for i in 0..2_000u32 {
            let done = done.clone();
            // Dropping the handle detaches the g; its join cell goes with the g's exit.
            drop(rt.spawn(move || done.send(i).unwrap()).unwrap());
        }
        drop(done);
        assert_eq!(finished.iter().count(), 2_000);
        while rt.stack_stats().in_use_stacks != 0 {
            std::thread::yield_now();
        }
        assert_eq!(rt.stats().live_goroutines, 0);
    });
}
