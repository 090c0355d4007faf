//! `on_stack` runs a function on another stack and returns its result on the original one.

mod common;

use std::cell::Cell;

use common::caller_sp;
use goro_context::{STACK_ALIGN, init_stack, on_stack, switch};

const STACK_SIZE: usize = 64 * 1024;

thread_local! {
    /// `caller_sp()` as seen inside the function that on_stack runs.
    static INNER_SP: Cell<usize> = const { Cell::new(0) };
}

unsafe extern "C" fn record_sp_and_triple(arg: usize) -> usize {
    INNER_SP.with(|sp| sp.set(caller_sp()));
    arg * 3 + 1
}

#[test]
fn runs_on_other_stack_and_returns_value() {
    let stack = common::TestStack::new(STACK_SIZE);
    let outer_sp = caller_sp();
    // SAFETY: the stack is unused and outlives the call.
    let result = unsafe { on_stack(stack.hi(), record_sp_and_triple, 14) };
    assert_eq!(result, 43);
    assert_eq!(
        caller_sp(),
        outer_sp,
        "the original stack pointer was not restored"
    );

    let inner_sp = INNER_SP.with(Cell::get);
    assert!(
        inner_sp >= stack.lo() && inner_sp < stack.hi(),
        "the function ran at sp {inner_sp:#x}, outside the stack [{:#x}, {:#x})",
        stack.lo(),
        stack.hi()
    );
    // The function and its callee use little stack, so they run near the top.
    assert!(
        stack.hi() - inner_sp < 4096,
        "sp {inner_sp:#x} is far from the top"
    );
}

#[test]
fn rounds_unaligned_top_down() {
    let stack = common::TestStack::new(STACK_SIZE);
    for misalignment in 0..16 {
        let stack_top = stack.hi() - 64 - misalignment;
        // SAFETY: the stack is unused and outlives the call.
        let result = unsafe { on_stack(stack_top, record_sp_and_triple, misalignment) };
        assert_eq!(result, misalignment * 3 + 1);
        let inner_sp = INNER_SP.with(Cell::get);
        assert_eq!(inner_sp % STACK_ALIGN, 0, "sp inside, top {stack_top:#x}");
        assert!(
            inner_sp < stack_top,
            "sp {inner_sp:#x} is above the top {stack_top:#x}"
        );
    }
}

thread_local! {
    static SECOND_STACK_TOP: Cell<usize> = const { Cell::new(0) };
}

unsafe extern "C" fn nest_once_more(arg: usize) -> usize {
    let top = SECOND_STACK_TOP.with(Cell::get);
    // SAFETY: the second stack is unused and outlives the call.
    let inner = unsafe { on_stack(top, record_sp_and_triple, arg) };
    inner + 1000
}

#[test]
fn nests_across_three_stacks() {
    let first = common::TestStack::new(STACK_SIZE);
    let second = common::TestStack::new(STACK_SIZE);
    SECOND_STACK_TOP.with(|top| top.set(second.hi()));
    // SAFETY: both stacks are unused and outlive the calls.
    let result = unsafe { on_stack(first.hi(), nest_once_more, 5) };
    assert_eq!(result, 1016);
    let inner_sp = INNER_SP.with(Cell::get);
    assert!(
        inner_sp >= second.lo(),
        "sp {inner_sp:#x} is below the second stack"
    );
    assert!(
        inner_sp < second.hi(),
        "sp {inner_sp:#x} is above the second stack"
    );
}

/// Saved stack pointers for `switches_away_while_on_other_stack`.
#[derive(Default)]
struct Pair {
    system_sp: usize,
    context_sp: usize,
}

thread_local! {
    static PAIR: Cell<*mut Pair> = const { Cell::new(std::ptr::null_mut()) };
}

unsafe extern "C" fn double_and_return(arg: usize, data: usize) -> ! {
    let pair = data as *mut Pair;
    let mut value = arg;
    loop {
        // SAFETY: the Pair outlives the context; the system stack side is suspended.
        value = unsafe { switch(&raw mut (*pair).context_sp, (*pair).system_sp, value * 2) };
    }
}

unsafe extern "C" fn resume_context_twice(arg: usize) -> usize {
    let pair = PAIR.with(Cell::get);
    // SAFETY: the Pair and the context's stack outlive this call.
    unsafe {
        let once = switch(&raw mut (*pair).system_sp, (*pair).context_sp, arg);
        switch(&raw mut (*pair).system_sp, (*pair).context_sp, once)
    }
}

#[test]
fn switches_away_while_on_other_stack() {
    let system_stack = common::TestStack::new(STACK_SIZE);
    let context_stack = common::TestStack::new(STACK_SIZE);
    let mut pair = Pair::default();
    let pair_ptr = &raw mut pair;
    // SAFETY: the context stack is owned by the context and outlives it.
    unsafe {
        (*pair_ptr).context_sp = init_stack(
            context_stack.lo(),
            context_stack.hi(),
            double_and_return,
            pair_ptr as usize,
        )
    };
    PAIR.with(|slot| slot.set(pair_ptr));
    let outer_sp = caller_sp();
    // SAFETY: the system stack is unused and outlives the call.
    let result = unsafe { on_stack(system_stack.hi(), resume_context_twice, 3) };
    assert_eq!(result, 12);
    assert_eq!(caller_sp(), outer_sp);
}

#[test]
#[should_panic(expected = "goro_context::on_stack: stack_top is 0")]
fn rejects_zero_top() {
    // SAFETY: on_stack panics before it switches stacks.
    unsafe { on_stack(0, record_sp_and_triple, 0) };
}
