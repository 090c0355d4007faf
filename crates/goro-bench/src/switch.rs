//! The raw switch round trip: resume a coroutine that suspends at once, `count` times.

use std::hint::black_box;
use std::time::Instant;

/// Stack size for the coroutines whose stacks this module allocates itself.
const STACK_SIZE: usize = 64 * 1024;

pub fn run(implementation: &str, count: usize) -> bool {
    let elapsed = match implementation {
        "goro-coroutine" => goro_coroutine(count, false),
        "goro-coroutine-nofp" => goro_coroutine(count, true),
        "goro-switch" => goro_switch(count, SwitchKind::Full),
        "goro-switch-g0" => goro_switch(count, SwitchKind::G0),
        "goro-switch-nofp" => goro_switch(count, SwitchKind::WithoutFp),
        "corosensei" => corosensei(count),
        "generator" => generator(count),
        "context" => context(count),
        _ => return false,
    };
    crate::nanos_per("round_trip", elapsed, count);
    true
}

/// Resumes a `goro_context::Coroutine`, made with `Coroutine::new_without_fp_switch` when
/// `without_fp` is set.
fn goro_coroutine(count: usize, without_fp: bool) -> std::time::Duration {
    use goro_context::{Coroutine, CoroutineResult};
    let mut stack = vec![0u8; STACK_SIZE];
    let stack_lo = stack.as_mut_ptr() as usize;
    let body = |yielder: &goro_context::Yielder<usize, usize>, mut input: usize| loop {
        input = yielder.suspend(black_box(input));
    };
    // SAFETY: `stack` outlives the coroutine, which is dropped first below, and nothing else
    // uses the buffer meanwhile. Neither side changes the FP control state, which runs with
    // the defaults, as new_without_fp_switch requires.
    let mut coroutine: Coroutine<usize, usize, ()> = unsafe {
        if without_fp {
            Coroutine::new_without_fp_switch(stack_lo, stack_lo + STACK_SIZE, body)
        } else {
            Coroutine::new(stack_lo, stack_lo + STACK_SIZE, body)
        }
    };
    let start = Instant::now();
    for i in 0..count {
        let result = coroutine.resume(i).expect("the coroutine never panics");
        debug_assert_eq!(result, CoroutineResult::<usize, ()>::Yield(i));
        black_box(result);
    }
    let elapsed = start.elapsed();
    drop(coroutine);
    drop(stack);
    elapsed
}

/// The two saved stack pointers of a raw `goro_context::switch` ping-pong.
struct PingPong {
    main_sp: usize,
    coroutine_sp: usize,
}

/// Which `goro_context` switches a raw ping-pong uses, passed to the coroutine as `arg`.
#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
enum SwitchKind {
    /// `switch` in both directions.
    Full,
    /// `switch_from_g0` from main and `switch_to_g0` back, as the runtime's M and g do.
    G0,
    /// `switch_without_fp` in both directions, after a first `switch` into the fresh context.
    WithoutFp,
}

/// Entry of the raw coroutine: switches back to the main context forever, with the switch
/// that `arg` names.
unsafe extern "C" fn ping_pong_entry(arg: usize, data: usize) -> ! {
    let state = data as *mut PingPong;
    let kind = if arg == SwitchKind::G0 as usize {
        SwitchKind::G0
    } else if arg == SwitchKind::WithoutFp as usize {
        SwitchKind::WithoutFp
    } else {
        SwitchKind::Full
    };
    loop {
        // SAFETY: `state` points to the PingPong of `goro_switch`, alive while it resumes
        // this context; `main_sp` is the main context's latest saved stack pointer. Main
        // suspends itself with the switch that each kind's resume side requires, and neither
        // side changes the FP control state.
        unsafe {
            let main_sp = (*state).main_sp;
            let save_sp = &raw mut (*state).coroutine_sp;
            match kind {
                SwitchKind::Full => goro_context::switch(save_sp, main_sp, 0),
                SwitchKind::G0 => goro_context::switch_to_g0(save_sp, main_sp, 0),
                SwitchKind::WithoutFp => goro_context::switch_without_fp(save_sp, main_sp, 0),
            };
        }
    }
}

fn goro_switch(count: usize, kind: SwitchKind) -> std::time::Duration {
    let mut stack = vec![0u8; STACK_SIZE];
    let stack_lo = stack.as_mut_ptr() as usize;
    let mut state = PingPong {
        main_sp: 0,
        coroutine_sp: 0,
    };
    let state_ptr = &raw mut state;
    // SAFETY: the buffer is writable, unused elsewhere and outlives every switch to it;
    // `state_ptr` points to `state`, alive until the end of this function.
    unsafe {
        (*state_ptr).coroutine_sp = goro_context::init_stack(
            stack_lo,
            stack_lo + STACK_SIZE,
            ping_pong_entry,
            state_ptr as usize,
        );
        // The first switch installs the fresh context's default FP control state, and tells
        // it which switch to use back.
        let coroutine_sp = (*state_ptr).coroutine_sp;
        goro_context::switch(&raw mut (*state_ptr).main_sp, coroutine_sp, kind as usize);
    }
    let start = Instant::now();
    for _ in 0..count {
        // SAFETY: `coroutine_sp` is the coroutine's latest saved stack pointer, resumed once;
        // the coroutine switches straight back, writing a fresh one. Both sides run with the
        // default FP control state, as switch_from_g0 and switch_without_fp require.
        unsafe {
            let coroutine_sp = (*state_ptr).coroutine_sp;
            let save_sp = &raw mut (*state_ptr).main_sp;
            match kind {
                SwitchKind::Full => goro_context::switch(save_sp, coroutine_sp, 0),
                SwitchKind::G0 => goro_context::switch_from_g0(save_sp, coroutine_sp, 0),
                SwitchKind::WithoutFp => goro_context::switch_without_fp(save_sp, coroutine_sp, 0),
            };
        }
    }
    let elapsed = start.elapsed();
    // The coroutine stays suspended for good; its frames own nothing, so freeing the stack
    // leaks nothing.
    drop(stack);
    elapsed
}

fn corosensei(count: usize) -> std::time::Duration {
    use corosensei::{Coroutine, CoroutineResult};
    let mut coroutine = Coroutine::new(|yielder, mut input: usize| {
        loop {
            input = yielder.suspend(black_box(input));
        }
    });
    let start = Instant::now();
    for i in 0..count {
        let result: CoroutineResult<usize, ()> = coroutine.resume(i);
        black_box(result);
    }
    let elapsed = start.elapsed();
    // SAFETY: the coroutine owns nothing on its stack, so skipping its unwind leaks nothing.
    unsafe { coroutine.force_reset() };
    elapsed
}

fn generator(count: usize) -> std::time::Duration {
    let mut generator = generator::Gn::<usize>::new_scoped(|mut scope| {
        let mut value = 0;
        loop {
            value = scope.yield_(black_box(value)).unwrap_or(0);
        }
    });
    let start = Instant::now();
    for i in 0..count {
        generator.set_para(i);
        black_box(generator.resume());
    }
    start.elapsed()
}

extern "C" fn context_entry(mut transfer: context::Transfer) -> ! {
    loop {
        // SAFETY: `transfer.context` is the main context that resumed this one, suspended
        // in its own `resume` call.
        transfer = unsafe { transfer.context.resume(black_box(transfer.data)) };
    }
}

fn context(count: usize) -> std::time::Duration {
    use context::stack::ProtectedFixedSizeStack;
    use context::{Context, Transfer};
    let stack = ProtectedFixedSizeStack::new(STACK_SIZE).expect("context: mmap of a stack");
    // SAFETY: `stack` outlives the context, which is never resumed after the loop.
    let mut transfer = Transfer::new(unsafe { Context::new(&stack, context_entry) }, 0);
    let start = Instant::now();
    for i in 0..count {
        // SAFETY: `transfer.context` is the coroutine's latest suspended context.
        transfer = unsafe { transfer.context.resume(i) };
    }
    let elapsed = start.elapsed();
    black_box(transfer.data);
    elapsed
}
