//! The `Coroutine` type: values in both directions, panics handed to the resumer, and
//! cancellation of coroutines that are dropped before they finish.

mod common;

use std::cell::{Cell, RefCell};
use std::panic::{self, AssertUnwindSafe};
use std::rc::Rc;

use goro_context::{Coroutine, CoroutineResult, INIT_FRAME_SIZE, WithoutFp, Yielder};

/// Room for the panic hook, which may capture and print a backtrace when RUST_BACKTRACE is
/// set.
const STACK_SIZE: usize = 1024 * 1024;

/// Counts how often values of this type are dropped.
struct DropCounter(Rc<Cell<usize>>);

impl Drop for DropCounter {
    fn drop(&mut self) {
        self.0.set(self.0.get() + 1);
    }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(message) = payload.downcast_ref::<&str>() {
        message.to_string()
    } else if let Some(message) = payload.downcast_ref::<String>() {
        message.clone()
    } else {
        "<non-string payload>".to_string()
    }
}

#[test]
fn values_pass_in_both_directions() {
    let stack = common::TestStack::new(STACK_SIZE);
    // SAFETY: the stack outlives the coroutine and nothing else uses it.
    let mut echo = unsafe {
        Coroutine::new(
            stack.lo(),
            stack.hi(),
            |yielder: &Yielder<String, usize>, first: String| {
                let mut total = first.len();
                let mut word = first;
                for _ in 0..3 {
                    word = yielder.suspend(total);
                    total += word.len();
                }
                format!("last word {word}, total {total}")
            },
        )
    };

    assert_eq!(echo.resume("a".into()).unwrap(), CoroutineResult::Yield(1));
    assert_eq!(echo.resume("bb".into()).unwrap(), CoroutineResult::Yield(3));
    assert_eq!(
        echo.resume("ccc".into()).unwrap(),
        CoroutineResult::Yield(6)
    );
    assert!(!echo.is_finished());
    assert_eq!(
        echo.resume("dddd".into()).unwrap(),
        CoroutineResult::Return("last word dddd, total 10".to_string())
    );
    assert!(echo.is_finished());
}

#[test]
fn panic_returns_to_resumer_as_error() {
    let stack = common::TestStack::new(STACK_SIZE);
    let dropped = Rc::new(Cell::new(0));
    let guard = DropCounter(dropped.clone());
    // SAFETY: the stack outlives the coroutine and nothing else uses it.
    let mut failing = unsafe {
        Coroutine::new(
            stack.lo(),
            stack.hi(),
            move |yielder: &Yielder<u32, u32>, input| {
                let _guard = guard;
                let next = yielder.suspend(input + 1);
                if next == 13 {
                    panic!("unlucky input {next}");
                }
                next
            },
        )
    };

    assert_eq!(failing.resume(1).unwrap(), CoroutineResult::Yield(2));
    let payload = failing
        .resume(13)
        .expect_err("the coroutine should have panicked");
    assert_eq!(panic_message(&*payload), "unlucky input 13");
    assert!(failing.is_finished());
    assert_eq!(
        dropped.get(),
        1,
        "the panic unwound the coroutine's stack once"
    );
    assert!(!std::thread::panicking());

    // The thread keeps working: a new coroutine on the same stack runs to the end.
    drop(failing);
    // SAFETY: the previous coroutine is gone, so the stack is free again.
    let mut next = unsafe {
        Coroutine::new(
            stack.lo(),
            stack.hi(),
            |yielder: &Yielder<u32, u32>, input| input + yielder.suspend(input * 2),
        )
    };
    assert_eq!(next.resume(20).unwrap(), CoroutineResult::Yield(40));
    assert_eq!(next.resume(1).unwrap(), CoroutineResult::Return(21));
}

#[test]
fn panic_before_first_suspend_is_caught() {
    let stack = common::TestStack::new(STACK_SIZE);
    // SAFETY: the stack outlives the coroutine and nothing else uses it.
    let mut failing = unsafe {
        Coroutine::new(stack.lo(), stack.hi(), |_: &Yielder<(), ()>, ()| -> () {
            panic!("at once")
        })
    };
    let payload = failing
        .resume(())
        .expect_err("the coroutine should have panicked");
    assert_eq!(panic_message(&*payload), "at once");
}

#[test]
#[should_panic(expected = "Coroutine::resume: the coroutine has finished")]
fn resume_after_finish_panics() {
    let stack = common::TestStack::new(STACK_SIZE);
    // SAFETY: the stack outlives the coroutine and nothing else uses it.
    let mut once = unsafe { Coroutine::new(stack.lo(), stack.hi(), |_: &Yielder<(), ()>, ()| 7) };
    assert_eq!(once.resume(()).unwrap(), CoroutineResult::Return(7));
    let _ = once.resume(());
}

#[test]
fn dropping_suspended_coroutine_unwinds_once() {
    let stack = common::TestStack::new(STACK_SIZE);
    let dropped = Rc::new(Cell::new(0));
    let captured = DropCounter(dropped.clone());
    let on_stack_counter = dropped.clone();
    let after_suspend = Rc::new(Cell::new(false));
    let after_suspend_in = after_suspend.clone();
    // SAFETY: the stack outlives the coroutine and nothing else uses it.
    let mut suspended = unsafe {
        Coroutine::new(
            stack.lo(),
            stack.hi(),
            move |yielder: &Yielder<(), ()>, ()| {
                let _captured = captured;
                let _local = DropCounter(on_stack_counter);
                yielder.suspend(());
                after_suspend_in.set(true);
            },
        )
    };
    assert_eq!(suspended.resume(()).unwrap(), CoroutineResult::Yield(()));
    assert_eq!(dropped.get(), 0);

    drop(suspended);
    assert_eq!(
        dropped.get(),
        2,
        "both values on the coroutine's stack were dropped once"
    );
    assert!(
        !after_suspend.get(),
        "the coroutine ran past its suspend while cancelled"
    );
}

#[test]
fn dropping_unstarted_coroutine_drops_closure() {
    let stack = common::TestStack::new(STACK_SIZE);
    let dropped = Rc::new(Cell::new(0));
    let captured = DropCounter(dropped.clone());
    let ran = Rc::new(Cell::new(false));
    let ran_in = ran.clone();
    // SAFETY: the stack outlives the coroutine and nothing else uses it.
    let unstarted = unsafe {
        Coroutine::new(stack.lo(), stack.hi(), move |_: &Yielder<(), ()>, ()| {
            let _captured = captured;
            ran_in.set(true);
        })
    };
    drop(unstarted);
    assert_eq!(dropped.get(), 1);
    assert!(
        !ran.get(),
        "the closure ran although the coroutine was never resumed"
    );
}

#[test]
fn forgetting_suspended_coroutine_leaks() {
    let stack = common::TestStack::new(STACK_SIZE);
    let dropped = Rc::new(Cell::new(0));
    let captured = DropCounter(dropped.clone());
    // SAFETY: the stack outlives the coroutine and nothing else uses it.
    let mut suspended = unsafe {
        Coroutine::new(
            stack.lo(),
            stack.hi(),
            move |yielder: &Yielder<(), ()>, ()| {
                let _captured = captured;
                yielder.suspend(());
            },
        )
    };
    assert_eq!(suspended.resume(()).unwrap(), CoroutineResult::Yield(()));
    std::mem::forget(suspended);
    assert_eq!(dropped.get(), 0);
}

/// Drops a suspended coroutine while the resumer unwinds from a panic of its own.
#[test]
fn dropping_during_resumer_panic_unwinds_coroutine() {
    let stack = common::TestStack::new(STACK_SIZE);
    let dropped = Rc::new(Cell::new(0));
    let captured = DropCounter(dropped.clone());
    let outcome = panic::catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: the stack outlives the coroutine and nothing else uses it.
        let mut suspended = unsafe {
            Coroutine::new(
                stack.lo(),
                stack.hi(),
                move |yielder: &Yielder<(), ()>, ()| {
                    let _captured = captured;
                    yielder.suspend(());
                },
            )
        };
        suspended.resume(()).unwrap();
        panic!("resumer failed");
    }));
    let payload = outcome.expect_err("the resumer should have panicked");
    assert_eq!(panic_message(&*payload), "resumer failed");
    assert_eq!(dropped.get(), 1);
}

#[test]
fn panic_during_cancel_reaches_dropper() {
    let stack = common::TestStack::new(STACK_SIZE);
    // SAFETY: the stack outlives the coroutine and nothing else uses it.
    let mut suspended = unsafe {
        Coroutine::new(stack.lo(), stack.hi(), |yielder: &Yielder<(), ()>, ()| {
            let cancelled = panic::catch_unwind(AssertUnwindSafe(|| yielder.suspend(())));
            if cancelled.is_err() {
                panic!("cleanup after cancellation failed");
            }
        })
    };
    suspended.resume(()).unwrap();
    let outcome = panic::catch_unwind(AssertUnwindSafe(|| drop(suspended)));
    let payload = outcome.expect_err("dropping should pass the coroutine's panic on");
    assert_eq!(
        panic_message(&*payload),
        "cleanup after cancellation failed"
    );
}

#[test]
fn cancellation_caught_by_closure_restarts_at_next_suspend() {
    let stack = common::TestStack::new(STACK_SIZE);
    let dropped = Rc::new(Cell::new(0));
    let outer = DropCounter(dropped.clone());
    let inner_counter = dropped.clone();
    let caught = Rc::new(Cell::new(0));
    let caught_in = caught.clone();

    // SAFETY: the stack outlives the coroutine and nothing else uses it.
    let mut stubborn = unsafe {
        Coroutine::new(
            stack.lo(),
            stack.hi(),
            move |yielder: &Yielder<(), ()>, ()| {
                let _outer = outer;

                let result = panic::catch_unwind(AssertUnwindSafe(|| {
                    let _inner = DropCounter(inner_counter);
                    yielder.suspend(());
                }));
                if result.is_err() {
                    caught_in.set(caught_in.get() + 1);
                }

                // Suspending again restarts the cancellation instead of yielding.
                yielder.suspend(());
                unreachable!("suspend returned during cancellation");
            },
        )
    };
    stubborn.resume(()).unwrap();
    drop(stubborn);
    assert_eq!(caught.get(), 1);
    assert_eq!(dropped.get(), 2);
}

#[test]
fn nested_coroutines_resume_each_other() {
    let outer_stack = common::TestStack::new(STACK_SIZE);
    let inner_stack = common::TestStack::new(STACK_SIZE);
    let (inner_lo, inner_hi) = (inner_stack.lo(), inner_stack.hi());
    let log = Rc::new(RefCell::new(Vec::new()));
    let log_in = log.clone();
    // SAFETY: both stacks outlive their coroutines and nothing else uses them.
    let mut outer = unsafe {
        Coroutine::new(
            outer_stack.lo(),
            outer_stack.hi(),
            move |yielder: &Yielder<u32, u32>, input| {
                let inner_log = log_in.clone();
                let mut inner = Coroutine::new(
                    inner_lo,
                    inner_hi,
                    move |inner_yielder: &Yielder<u32, u32>, value| {
                        inner_log.borrow_mut().push(format!("inner got {value}"));
                        let next = inner_yielder.suspend(value * 10);
                        inner_log.borrow_mut().push(format!("inner got {next}"));
                        next * 10
                    },
                );
                let first = inner.resume(input).unwrap();
                log_in.borrow_mut().push(format!("outer saw {first:?}"));
                let again = yielder.suspend(100);
                let last = inner.resume(again).unwrap();
                log_in.borrow_mut().push(format!("outer saw {last:?}"));
                match last {
                    CoroutineResult::Return(value) => value,
                    CoroutineResult::Yield(_) => 0,
                }
            },
        )
    };
    assert_eq!(outer.resume(1).unwrap(), CoroutineResult::Yield(100));
    assert_eq!(outer.resume(2).unwrap(), CoroutineResult::Return(20));
    assert_eq!(
        *log.borrow(),
        [
            "inner got 1",
            "outer saw Yield(10)",
            "inner got 2",
            "outer saw Return(20)"
        ]
    );
}

#[test]
fn large_closure_fits_at_stack_top() {
    let stack = common::TestStack::new(STACK_SIZE);
    let table = [7u64; 4096];
    // SAFETY: the stack outlives the coroutine and nothing else uses it.
    let mut summing = unsafe {
        Coroutine::new(stack.lo(), stack.hi(), move |_: &Yielder<(), ()>, ()| {
            table.iter().sum::<u64>()
        })
    };
    assert_eq!(
        summing.resume(()).unwrap(),
        CoroutineResult::Return(7 * 4096)
    );
}

#[test]
#[should_panic(expected = "Coroutine::new: stack_lo")]
fn inverted_stack_bounds_are_rejected() {
    let stack = common::TestStack::new(4096);
    // SAFETY: Coroutine::new panics before it writes anything.
    let _ = unsafe { Coroutine::new(stack.hi(), stack.lo(), |_: &Yielder<(), ()>, ()| 7) };
}

#[test]
#[should_panic(expected = "Coroutine::new: the stack")]
fn too_small_stack_is_rejected() {
    let stack = common::TestStack::new(4096);
    let table = [1u8; 256];
    // Room for the initial frame but not for the closure as well.
    let stack_lo = stack.hi() - INIT_FRAME_SIZE - 128;
    // SAFETY: Coroutine::new panics before it writes anything.
    let _ = unsafe {
        Coroutine::new(stack_lo, stack.hi(), move |_: &Yielder<(), ()>, ()| {
            table[0]
        })
    };
}

#[test]
fn coroutine_without_fp_switch_passes_values_and_panics() {
    let stack = common::TestStack::new(STACK_SIZE);
    // SAFETY: the stack outlives the coroutine and nothing else uses it. Neither side changes
    // the FP control state.
    let mut doubler = unsafe {
        Coroutine::new_without_fp_switch(
            stack.lo(),
            stack.hi(),
            |yielder: &Yielder<u64, u64, WithoutFp>, mut input: u64| {
                while input != 0 {
                    input = yielder.suspend(input * 2);
                }
                panic!("doubler got zero");
            },
        )
    };
    assert_eq!(
        doubler.resume(1).unwrap(),
        CoroutineResult::<u64, ()>::Yield(2)
    );
    assert_eq!(doubler.resume(21).unwrap(), CoroutineResult::Yield(42));
    let payload = doubler.resume(0).expect_err("the closure panics on zero");
    assert_eq!(panic_message(&*payload), "doubler got zero");
    assert!(doubler.is_finished());
}

#[test]
fn dropping_suspended_coroutine_without_fp_switch_unwinds() {
    let stack = common::TestStack::new(STACK_SIZE);
    let dropped = Rc::new(Cell::new(0));
    let on_stack_counter = dropped.clone();
    // SAFETY: the stack outlives the coroutine and nothing else uses it. Neither side changes
    // the FP control state.
    let mut suspended = unsafe {
        Coroutine::new_without_fp_switch(
            stack.lo(),
            stack.hi(),
            move |yielder: &Yielder<(), (), WithoutFp>, ()| {
                let _local = DropCounter(on_stack_counter);
                loop {
                    yielder.suspend(());
                }
            },
        )
    };
    assert_eq!(
        suspended.resume(()).unwrap(),
        CoroutineResult::<(), ()>::Yield(())
    );
    assert_eq!(suspended.resume(()).unwrap(), CoroutineResult::Yield(()));
    drop(suspended);
    assert_eq!(
        dropped.get(),
        1,
        "the value on the coroutine's stack was dropped once"
    );
}

#[test]
fn cancel_unwind_counts_as_panicking() {
    let stack = common::TestStack::new(STACK_SIZE);
    let lock = std::sync::Arc::new(std::sync::Mutex::new(()));
    let lock_in = lock.clone();
    let panicking_in_drop = Rc::new(Cell::new(false));
    let observed = panicking_in_drop.clone();

    struct Observer(Rc<Cell<bool>>);
    impl Drop for Observer {
        fn drop(&mut self) {
            self.0.set(std::thread::panicking());
        }
    }

    // SAFETY: the stack outlives the coroutine and nothing else uses it.
    let mut holder = unsafe {
        Coroutine::new(
            stack.lo(),
            stack.hi(),
            move |yielder: &Yielder<(), ()>, ()| {
                let _observer = Observer(observed);
                let _guard = lock_in.lock().expect("the mutex is not poisoned yet");
                yielder.suspend(());
            },
        )
    };
    assert_eq!(holder.resume(()).unwrap(), CoroutineResult::Yield(()));
    drop(holder);

    assert!(
        panicking_in_drop.get(),
        "destructors run during a panic unwind"
    );
    assert!(
        lock.is_poisoned(),
        "the guard dropped by the unwind poisons"
    );
    assert!(
        !std::thread::panicking(),
        "the dropping thread is not panicking"
    );
}
