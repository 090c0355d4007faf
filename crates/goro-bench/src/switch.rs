//! The raw switch round trip: resume a coroutine that suspends at once, `count` times.

use std::hint::black_box;
use std::time::Instant;

/// Stack size for the coroutines whose stacks this module allocates itself.
const STACK_SIZE: usize = 64 * 1024;

pub fn run(implementation: &str, count: usize) -> bool {
    let elapsed = match implementation {
        "goro-coroutine" => goro_coroutine(count, false),
        "goro-coroutine-nofp" => goro_coroutine(count, true),
        "goro-switch" => goro_switch::<{ kind::FULL }>(count),
        "goro-switch-g0" => goro_switch::<{ kind::G0 }>(count),
        "goro-switch-nofp" => goro_switch::<{ kind::WITHOUT_FP }>(count),
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
    use goro_context::{Coroutine, Yielder};
    let mut stack = vec![0u8; STACK_SIZE];
    let stack_lo = stack.as_mut_ptr() as usize;
    let stack_hi = stack_lo + STACK_SIZE;
    // SAFETY: `stack` outlives the coroutine, which time_coroutine drops, and nothing else
    // uses the buffer meanwhile. Neither side changes the FP control state, which runs with
    // the defaults, as new_without_fp_switch requires.
    let elapsed = unsafe {
        if without_fp {
            time_coroutine(
                Coroutine::new_without_fp_switch(
                    stack_lo,
                    stack_hi,
                    |yielder: &Yielder<_, _, _>, mut input| loop {
                        input = yielder.suspend(black_box(input));
                    },
                ),
                count,
            )
        } else {
            time_coroutine(
                Coroutine::new(stack_lo, stack_hi, |yielder: &Yielder<_, _>, mut input| {
                    loop {
                        input = yielder.suspend(black_box(input));
                    }
                }),
                count,
            )
        }
    };
    drop(stack);
    elapsed
}

/// Resumes `coroutine` `count` times, then drops it, and returns the time the resumes took.
fn time_coroutine<M: goro_context::FpMode>(
    mut coroutine: goro_context::Coroutine<usize, usize, (), M>,
    count: usize,
) -> std::time::Duration {
    use goro_context::CoroutineResult;
    let start = Instant::now();
    for i in 0..count {
        let result = coroutine.resume(i).expect("the coroutine never panics");
        debug_assert_eq!(result, CoroutineResult::Yield(i));
        black_box(result);
    }
    let elapsed = start.elapsed();
    drop(coroutine);
    elapsed
}

/// The two saved stack pointers of a raw `goro_context::switch` ping-pong.
struct PingPong {
    main_sp: usize,
    coroutine_sp: usize,
}

/// The kinds of `goro_context` switch that a raw ping-pong can use, as const generic values.
mod kind {
    /// `init_stack`, then `switch` in both directions.
    pub const FULL: usize = 0;
    /// `init_stack`, then `switch_from_g0` from main and `switch_to_g0` back, as the
    /// runtime's M and g do.
    pub const G0: usize = 1;
    /// `init_stack_without_fp`, then `switch_without_fp` in both directions.
    pub const WITHOUT_FP: usize = 2;
}

/// Switches from `save_sp` to `resume_sp` with the switch that `KIND` uses in the direction
/// `to_main`.
///
/// # Safety
///
/// That of the switch used. Both sides of the ping-pong run with the default FP control
/// state, as switch_from_g0 and switch_without_fp require.
#[inline(always)]
unsafe fn ping_pong_switch<const KIND: usize>(
    save_sp: *mut usize,
    resume_sp: usize,
    to_main: bool,
) {
    // SAFETY: the caller upholds the contract of the switch used.
    unsafe {
        match (KIND, to_main) {
            (kind::G0, false) => goro_context::switch_from_g0(save_sp, resume_sp, 0),
            (kind::G0, true) => goro_context::switch_to_g0(save_sp, resume_sp, 0),
            (kind::WITHOUT_FP, _) => goro_context::switch_without_fp(save_sp, resume_sp, 0),
            _ => goro_context::switch(save_sp, resume_sp, 0),
        };
    }
}

/// Entry of the raw coroutine: switches back to the main context forever.
unsafe extern "C" fn ping_pong_entry<const KIND: usize>(_arg: usize, data: usize) -> ! {
    let state = data as *mut PingPong;
    loop {
        // SAFETY: `state` points to the PingPong of `goro_switch`, alive while it resumes
        // this context; `main_sp` is the main context's latest saved stack pointer, saved by
        // the matching switch of the same kind.
        unsafe {
            let main_sp = (*state).main_sp;
            ping_pong_switch::<KIND>(&raw mut (*state).coroutine_sp, main_sp, true);
        }
    }
}

fn goro_switch<const KIND: usize>(count: usize) -> std::time::Duration {
    let mut stack = vec![0u8; STACK_SIZE];
    let stack_lo = stack.as_mut_ptr() as usize;
    let mut state = PingPong {
        main_sp: 0,
        coroutine_sp: 0,
    };
    let state_ptr = &raw mut state;
    let init = if KIND == kind::WITHOUT_FP {
        goro_context::init_stack_without_fp
    } else {
        goro_context::init_stack
    };
    // SAFETY: the buffer is writable, unused elsewhere and outlives every switch to it;
    // `state_ptr` points to `state`, alive until the end of this function.
    unsafe {
        (*state_ptr).coroutine_sp = init(
            stack_lo,
            stack_lo + STACK_SIZE,
            ping_pong_entry::<KIND>,
            state_ptr as usize,
        );
    }
    let start = Instant::now();
    for _ in 0..count {
        // SAFETY: `coroutine_sp` is the coroutine's latest saved stack pointer (or its fresh
        // one), resumed once; the coroutine switches straight back, writing a new one.
        unsafe {
            let coroutine_sp = (*state_ptr).coroutine_sp;
            ping_pong_switch::<KIND>(&raw mut (*state_ptr).main_sp, coroutine_sp, false);
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
