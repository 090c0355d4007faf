//! A Rust backtrace taken inside a context ends at the context's trampoline instead of running
//! into whatever lies above the stack, and one taken inside `on_stack` reaches its caller.

mod common;

use std::backtrace::Backtrace;
use std::cell::RefCell;

use goro_context::{Coroutine, CoroutineResult, WithoutFp, Yielder, init_stack, on_stack, switch};

/// Room for symbolization, which runs on the context's stack.
const STACK_SIZE: usize = 1024 * 1024;

/// Names of the frames in a captured backtrace, innermost first.
fn frame_names(backtrace: &Backtrace) -> Vec<String> {
    backtrace
        .to_string()
        .lines()
        .filter_map(|line| {
            let (index, name) = line.trim_start().split_once(": ")?;
            index.parse::<usize>().ok()?;
            Some(name.to_string())
        })
        .collect()
}

#[inline(never)]
fn capture_here() -> Backtrace {
    Backtrace::force_capture()
}

/// Checks that the outermost frame is the trampoline and that `expected` appears below it.
fn check_frames(names: &[String], expected: &str) {
    let listing = names.join("\n");
    assert!(
        names.iter().any(|name| name.contains(expected)),
        "no frame of {expected}, or the backtrace was not symbolized:\n{listing}"
    );
    let last = names.last().map(String::as_str).unwrap_or_default();
    assert!(
        last.contains("goro_context::arch") && last.contains("trampoline"),
        "the outermost frame is {last:?}, not the trampoline:\n{listing}"
    );
    assert!(names.len() < 64, "{} frames:\n{listing}", names.len());
}

thread_local! {
    static CAPTURED: RefCell<Option<Backtrace>> = const { RefCell::new(None) };
}

unsafe extern "C" fn capturing_entry(_arg: usize, data: usize) -> ! {
    let slots = data as *mut (usize, usize);
    CAPTURED.with(|captured| *captured.borrow_mut() = Some(capture_here()));
    loop {
        // SAFETY: `data` points to the slots, which outlive the context.
        unsafe { switch(&raw mut (*slots).1, (*slots).0, 0) };
    }
}

#[test]
fn raw_context_backtrace_ends_at_trampoline() {
    let stack = common::TestStack::new(STACK_SIZE);
    let mut slots = (0usize, 0usize);
    let slots_ptr = &raw mut slots;
    // SAFETY: the stack is owned by the context and outlives it.
    unsafe {
        (*slots_ptr).1 = init_stack(stack.lo(), stack.hi(), capturing_entry, slots_ptr as usize);
        switch(&raw mut (*slots_ptr).0, (*slots_ptr).1, 0);
    }
    let backtrace = CAPTURED
        .with(|captured| captured.borrow_mut().take())
        .unwrap();
    check_frames(&frame_names(&backtrace), "capturing_entry");
}

#[test]
fn coroutine_backtrace_ends_at_trampoline() {
    let stack = common::TestStack::new(STACK_SIZE);
    // SAFETY: the stack outlives the coroutine and nothing else uses it.
    let mut capturing = unsafe {
        Coroutine::new(stack.lo(), stack.hi(), |_: &Yielder<(), ()>, ()| {
            frame_names(&capture_here())
        })
    };
    let CoroutineResult::Return(names) = capturing.resume(()).unwrap() else {
        panic!("the coroutine yielded");
    };
    check_frames(&names, "coroutine_entry");
}

#[test]
fn light_coroutine_backtrace_ends_at_trampoline() {
    let stack = common::TestStack::new(STACK_SIZE);
    // SAFETY: the stack outlives the coroutine and nothing else uses it. Neither side changes
    // the FP control state.
    let mut capturing = unsafe {
        Coroutine::new_without_fp_switch(
            stack.lo(),
            stack.hi(),
            |_: &Yielder<(), (), WithoutFp>, ()| frame_names(&capture_here()),
        )
    };
    let CoroutineResult::Return(names) = capturing.resume(()).unwrap() else {
        panic!("the coroutine yielded");
    };
    check_frames(&names, "coroutine_entry");
}

unsafe extern "C" fn capture_on_other_stack(_arg: usize) -> usize {
    CAPTURED.with(|captured| *captured.borrow_mut() = Some(capture_here()));
    0
}

#[test]
fn on_stack_backtrace_reaches_caller() {
    // Both orders of the two stacks: the other stack above and below the caller's.
    let stacks = [
        common::TestStack::new(STACK_SIZE),
        common::TestStack::new(STACK_SIZE),
    ];
    for (caller_stack, other_stack) in [(&stacks[0], &stacks[1]), (&stacks[1], &stacks[0])] {
        let other_top = other_stack.hi();
        // SAFETY: both stacks are unused and outlive the calls.
        let backtrace = unsafe {
            on_stack(caller_stack.hi(), call_on_stack_and_collect, other_top);
            CAPTURED
                .with(|captured| captured.borrow_mut().take())
                .unwrap()
        };
        let names = frame_names(&backtrace);
        let listing = names.join("\n");
        assert!(
            names
                .iter()
                .any(|name| name.contains("capture_on_other_stack")),
            "no frame of the function on the other stack:\n{listing}"
        );
        assert!(
            names
                .iter()
                .any(|name| name.contains("call_on_stack_and_collect")),
            "the backtrace did not continue on the caller's stack:\n{listing}"
        );
        assert!(
            names
                .iter()
                .any(|name| name.contains("on_stack_backtrace_reaches_caller")),
            "the backtrace did not reach the test function:\n{listing}"
        );
    }
}

/// Calls `capture_on_other_stack` on the stack whose top is `other_top`.
#[inline(never)]
unsafe extern "C" fn call_on_stack_and_collect(other_top: usize) -> usize {
    // SAFETY: the caller passes the top of an unused stack.
    let result = unsafe { on_stack(other_top, capture_on_other_stack, 0) };
    std::hint::black_box(result)
}
