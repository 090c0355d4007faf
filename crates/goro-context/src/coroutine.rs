//! A stackful coroutine on a caller-provided stack, built on [`init_stack`] and [`switch`].
//!
//! The coroutine's stack starts with a `Start` block at its top: the stack pointers of both
//! sides (`Links`) and the closure. Keeping the links there, rather than in the `Coroutine`
//! value, gives them a fixed address while the `Coroutine` moves. Every value crosses a switch
//! by address: the sender puts it in an `Option` on its own stack and passes the address as
//! the switch argument, and the receiver takes it out before the sender runs again.

use std::any::Any;
use std::cell::Cell;
use std::fmt;
use std::marker::PhantomData;
use std::mem::{self, ManuallyDrop};
use std::panic::{self, AssertUnwindSafe};
use std::process;
use std::thread;

use crate::{
    INIT_FRAME_SIZE, STACK_ALIGN, init_stack, init_stack_without_fp, switch, switch_without_fp,
};

/// Value produced by [`Coroutine::resume`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CoroutineResult<Y, R> {
    /// The coroutine suspended itself with [`Yielder::suspend`] and may be resumed again.
    Yield(Y),
    /// The closure returned, so the coroutine has finished.
    Return(R),
}

/// Saved stack pointers of both sides of a coroutine.
struct Links {
    /// Stack pointer of the resumer, saved while the coroutine runs.
    resumer_sp: usize,
    /// Stack pointer of the coroutine, saved while it is suspended.
    coroutine_sp: usize,
    /// Set by the coroutine's entry just before its last switch. From then on the switch
    /// argument points to an `Option<Finish<R>>` instead of an `Option<Y>`.
    finished: bool,
}

mod sealed {
    /// Keeps [`FpMode`](super::FpMode) implemented by this crate's two modes only.
    pub trait Sealed {}
}

/// The treatment of the FP control state by a [`Coroutine`]'s switches, chosen by its
/// constructor.
///
/// A type parameter rather than a field, so that each coroutine's code contains only its own
/// switch: a runtime choice between the two made the default coroutine's round trip about
/// 6 ns slower in `goro-bench switch goro-coroutine` on a 2-vCPU AMD EPYC VM, because the
/// compiler saved every register that the light switch clobbers on each resume.
pub trait FpMode: sealed::Sealed + 'static {
    /// Whether the coroutine runs on a light context and switches with
    /// [`switch_without_fp`].
    const WITHOUT_FP: bool;
}

/// The default [`FpMode`]: [`Coroutine::new`] switches the FP control state with [`switch`].
#[derive(Debug)]
pub enum WithFp {}

/// The [`FpMode`] of [`Coroutine::new_without_fp_switch`], which leaves the FP control state
/// alone and switches with [`switch_without_fp`].
#[derive(Debug)]
pub enum WithoutFp {}

impl sealed::Sealed for WithFp {}
impl sealed::Sealed for WithoutFp {}

impl FpMode for WithFp {
    const WITHOUT_FP: bool = false;
}

impl FpMode for WithoutFp {
    const WITHOUT_FP: bool = true;
}

impl Links {
    /// Switches from the side whose stack pointer goes to `save_sp` to the side whose saved
    /// stack pointer is `resume_sp`, with the switch of mode `M`.
    ///
    /// # Safety
    ///
    /// That of [`switch`], or of [`switch_without_fp`] for [`WithoutFp`].
    #[inline(always)]
    unsafe fn switch<M: FpMode>(save_sp: *mut usize, resume_sp: usize, arg: usize) -> usize {
        if M::WITHOUT_FP {
            // SAFETY: the caller upholds switch_without_fp's contract.
            unsafe { switch_without_fp(save_sp, resume_sp, arg) }
        } else {
            // SAFETY: the caller upholds switch's contract.
            unsafe { switch(save_sp, resume_sp, arg) }
        }
    }
}

/// Block that [`Coroutine::new`] writes at the top of the coroutine's stack.
struct Start<F> {
    links: Links,
    /// Moved out by the entry function on the first switch into the coroutine.
    closure: ManuallyDrop<F>,
}

/// Message from the resumer to the coroutine.
enum Command<I> {
    Resume(I),
    /// Unwind the coroutine's stack, or drop the closure if it never ran.
    Cancel,
}

/// Last message of a coroutine: how its closure ended.
enum Finish<R> {
    Returned(R),
    /// The closure panicked, or it was cancelled (the payload is then a [`CancelUnwind`]).
    Unwound(Box<dyn Any + Send>),
}

/// Message from the coroutine to the resumer.
enum Message<Y, R> {
    Yield(Y),
    Finish(Finish<R>),
}

/// Payload of the unwind that cancels a coroutine when it is dropped before finishing.
struct CancelUnwind;

/// Lifecycle of a [`Coroutine`], as its owner sees it between resumes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Created, and its closure has not run yet.
    Unstarted,
    /// Suspended in [`Yielder::suspend`].
    Suspended,
    /// The closure returned, panicked or was cancelled, so nothing on the stack is live.
    Finished,
}

/// A stackful coroutine that runs a closure on a stack given by the caller.
///
/// [`resume`](Self::resume) runs the closure until it calls [`Yielder::suspend`] or returns.
/// Values pass in both directions: the resumer sends an `I`, the coroutine yields a `Y` and
/// finally returns an `R`. A panic in the closure is caught on the coroutine's own stack and
/// returned by `resume` as an `Err`, so it never unwinds through a switch.
///
/// Dropping a coroutine that has not finished cancels it. A suspended coroutine is unwound:
/// `suspend` starts an unwind that drops every value on the coroutine's stack exactly once,
/// and the entry function catches it. A coroutine that never started drops its closure.
/// If the closure catches the cancellation unwind, every later `suspend` starts it again.
/// The unwind is a panic unwind, so destructors on the coroutine's stack see
/// [`std::thread::panicking`] return true, and a `MutexGuard` held across the `suspend`
/// poisons its mutex. Under `panic = "abort"` nothing can unwind the stack, so dropping a
/// suspended coroutine leaks the values on it.
///
/// A coroutine is neither `Send` nor `Sync`, because its stack may hold values that belong
/// to the thread that runs it.
///
/// `M` is the coroutine's [`FpMode`]: [`WithFp`] for [`new`](Self::new) and [`WithoutFp`] for
/// [`new_without_fp_switch`](Coroutine::new_without_fp_switch).
pub struct Coroutine<I, Y, R, M: FpMode = WithFp> {
    /// The `Links` inside the `Start` block at the top of the coroutine's stack.
    links: *mut Links,
    state: State,
    /// The stack contains values of all three types while the coroutine is suspended.
    marker: PhantomData<(*mut (I, Y, R), M)>,
}

/// Handle that a coroutine's closure uses to suspend itself.
///
/// The closure gets a reference to it, which cannot leave the closure. `M` is the
/// coroutine's [`FpMode`].
pub struct Yielder<I, Y, M: FpMode = WithFp> {
    links: *mut Links,
    /// Set once the resumer has asked to cancel the coroutine.
    cancelling: Cell<bool>,
    marker: PhantomData<(*mut (I, Y), M)>,
}

impl<I, Y, R> Coroutine<I, Y, R> {
    /// Creates a coroutine that runs `closure` on the stack `[stack_lo, stack_hi)`.
    ///
    /// The closure starts on the first [`resume`](Self::resume) and gets that call's input.
    /// It is stored at the top of the stack, and the coroutine runs on the rest.
    ///
    /// # Panics
    ///
    /// If `stack_lo` is not below `stack_hi`, or if the stack cannot hold the closure and the
    /// initial frame of the context.
    ///
    /// # Safety
    ///
    /// - `[stack_lo, stack_hi)` must be writable memory that nothing else uses until the
    ///   coroutine is dropped. Dropping a suspended coroutine runs destructors on that
    ///   stack. After `mem::forget` the memory may be reused, and the values on it are leaked.
    /// - The stack must be large enough for the closure and everything it calls, including the
    ///   panic hook if it panics. Nothing detects an overflow unless the stack has a guard page
    ///   below `stack_lo` (goro-stack's stacks do).
    pub unsafe fn new<F>(stack_lo: usize, stack_hi: usize, closure: F) -> Self
    where
        F: FnOnce(&Yielder<I, Y>, I) -> R + 'static,
    {
        // SAFETY: the caller upholds new's contract, which is that of with_mode for WithFp.
        unsafe { Self::with_mode(stack_lo, stack_hi, closure) }
    }
}

impl<I, Y, R> Coroutine<I, Y, R, WithoutFp> {
    /// Creates a coroutine like [`new`](Self::new) whose resumes and suspends leave the FP
    /// control state alone, which makes them faster.
    ///
    /// It runs on a light context ([`init_stack_without_fp`]) and every switch in either
    /// direction uses [`switch_without_fp`], so each side runs with the FP control state that
    /// the other side left. The first resume still installs the defaults, so the closure
    /// starts with them like that of any coroutine.
    ///
    /// # Safety
    ///
    /// The contract of [`new`](Self::new), and:
    ///
    /// - the closure and everything it calls must leave the FP control state at its defaults
    ///   whenever the coroutine suspends itself or finishes, so must not change it in between
    ///   unless it restores the defaults before that;
    /// - every [`resume`](Self::resume) of the coroutine, and its drop while it is suspended,
    ///   must run with the default FP control state. Rust code does unless something installed
    ///   another state (a rounding mode, flush to zero) on the thread.
    ///
    /// The defaults are listed at [`switch_from_g0`](crate::switch_from_g0).
    pub unsafe fn new_without_fp_switch<F>(stack_lo: usize, stack_hi: usize, closure: F) -> Self
    where
        F: FnOnce(&Yielder<I, Y, WithoutFp>, I) -> R + 'static,
    {
        // SAFETY: the caller upholds the contract of new_without_fp_switch, which is that of
        // with_mode for WithoutFp.
        unsafe { Self::with_mode(stack_lo, stack_hi, closure) }
    }
}

impl<I, Y, R, M: FpMode> Coroutine<I, Y, R, M> {
    /// Creates a coroutine of mode `M`.
    ///
    /// # Safety
    ///
    /// That of [`new`](Coroutine::new) for [`WithFp`] and that of
    /// [`new_without_fp_switch`](Coroutine::new_without_fp_switch) for [`WithoutFp`].
    unsafe fn with_mode<F>(stack_lo: usize, stack_hi: usize, closure: F) -> Self
    where
        F: FnOnce(&Yielder<I, Y, M>, I) -> R + 'static,
    {
        assert!(
            stack_lo < stack_hi,
            "Coroutine::new: stack_lo {stack_lo:#x} is not below stack_hi {stack_hi:#x}; pass \
             the lowest address of the stack first and the end of the stack second"
        );
        let align = mem::align_of::<Start<F>>().max(STACK_ALIGN);
        let size = mem::size_of::<Start<F>>();
        let start_addr = stack_hi
            .checked_sub(size)
            .map(|addr| addr & !(align - 1))
            .filter(|&addr| addr >= stack_lo && addr - stack_lo >= INIT_FRAME_SIZE);
        let Some(start_addr) = start_addr else {
            panic!(
                "Coroutine::new: the stack [{stack_lo:#x}, {stack_hi:#x}) cannot hold the \
                 {size}-byte closure block and the {INIT_FRAME_SIZE}-byte initial frame; pass a \
                 larger stack"
            );
        };

        let start = start_addr as *mut Start<F>;
        let block = Start {
            links: Links {
                resumer_sp: 0,
                coroutine_sp: 0,
                finished: false,
            },
            closure: ManuallyDrop::new(closure),
        };
        // SAFETY: `start` is aligned for Start<F> and [start, start + size) lies inside the
        // stack (checked above), which the caller gives to this coroutine.
        unsafe { start.write(block) };

        // SAFETY: [stack_lo, start_addr) is the rest of the caller's stack, and the check above
        // leaves room for the initial frame. `start_addr` is the `data` that the entry expects.
        let sp = unsafe {
            let entry = coroutine_entry::<I, Y, R, F, M>;
            if M::WITHOUT_FP {
                init_stack_without_fp(stack_lo, start_addr, entry, start_addr)
            } else {
                init_stack(stack_lo, start_addr, entry, start_addr)
            }
        };
        // SAFETY: `start` was written above and nothing else refers to it yet.
        unsafe { (*start).links.coroutine_sp = sp };

        Coroutine {
            // SAFETY: `start` is valid, so the field projection stays inside its allocation.
            links: unsafe { &raw mut (*start).links },
            state: State::Unstarted,
            marker: PhantomData,
        }
    }

    /// Runs the coroutine until it suspends itself or finishes, sending it `input`.
    ///
    /// `input` is the closure's argument on the first call and the return value of
    /// [`Yielder::suspend`] afterwards. Returns `Ok(Yield(y))` when the coroutine suspended
    /// itself, `Ok(Return(r))` when the closure returned and `Err(payload)` when it panicked;
    /// the last two finish the coroutine. The calling thread keeps working after a panic.
    ///
    /// # Panics
    ///
    /// If the coroutine has already finished.
    pub fn resume(&mut self, input: I) -> thread::Result<CoroutineResult<Y, R>> {
        assert!(
            self.state != State::Finished,
            "Coroutine::resume: the coroutine has finished (its closure returned or panicked); \
             create a new Coroutine to run more work"
        );
        match self.send(Command::Resume(input)) {
            Message::Yield(value) => {
                self.state = State::Suspended;
                Ok(CoroutineResult::Yield(value))
            }
            Message::Finish(Finish::Returned(value)) => {
                self.state = State::Finished;
                Ok(CoroutineResult::Return(value))
            }
            Message::Finish(Finish::Unwound(payload)) => {
                self.state = State::Finished;
                Err(payload)
            }
        }
    }

    /// Returns whether the closure has returned, panicked or been cancelled.
    pub fn is_finished(&self) -> bool {
        self.state == State::Finished
    }

    /// Switches into the coroutine with `command` and returns the message it sends back.
    fn send(&mut self, command: Command<I>) -> Message<Y, R> {
        debug_assert!(self.state != State::Finished);
        let links = self.links;
        let mut command = Some(command);

        // SAFETY: `links` points into the Start block on the coroutine's stack, which lives as
        // long as `self` (new's contract). The coroutine has not finished, so `coroutine_sp` is
        // its saved stack pointer, and `&mut self` makes this the only resume of it. The
        // coroutine takes `command` before it switches back. A coroutine that opted out of FP
        // switches runs on a light context, and its contract covers both sides.
        let arg = unsafe {
            Links::switch::<M>(
                &raw mut (*links).resumer_sp,
                (*links).coroutine_sp,
                &raw mut command as usize,
            )
        };
        debug_assert!(command.is_none(), "the coroutine did not take its command");

        // SAFETY: the coroutine switched back to us, after setting `finished` if that was its
        // last switch. Either way `arg` is the address of a message on its stack, of the type
        // that `finished` names, and it stays valid until we resume the coroutine.
        unsafe {
            if (*links).finished {
                let slot = arg as *mut Option<Finish<R>>;
                Message::Finish(
                    (*slot)
                        .take()
                        .expect("Coroutine::send: the coroutine finished without a message"),
                )
            } else {
                let slot = arg as *mut Option<Y>;
                Message::Yield(
                    (*slot)
                        .take()
                        .expect("Coroutine::send: the coroutine yielded without a value"),
                )
            }
        }
    }
}

impl<I, Y, R, M: FpMode> Drop for Coroutine<I, Y, R, M> {
    fn drop(&mut self) {
        match self.state {
            State::Finished => return,
            State::Suspended if cfg!(panic = "abort") => {
                // NOTE: without unwinding there is no way to drop the values on the stack of a
                // suspended coroutine, so they are leaked.
                return;
            }
            State::Unstarted | State::Suspended => {}
        }

        let message = self.send(Command::Cancel);
        self.state = State::Finished;
        match message {
            Message::Finish(Finish::Returned(_)) => {}
            Message::Finish(Finish::Unwound(payload)) => {
                // Another payload means that the closure caught the cancellation and panicked,
                // or that dropping an unstarted closure panicked. Pass it on, unless this drop
                // already runs during an unwind, where a second panic would abort.
                if !payload.is::<CancelUnwind>() && !thread::panicking() {
                    panic::resume_unwind(payload);
                }
            }
            Message::Yield(_) => {
                unreachable!("Coroutine::drop: a cancelled coroutine yielded, but suspend unwinds")
            }
        }
    }
}

impl<I, Y, R, M: FpMode> fmt::Debug for Coroutine<I, Y, R, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Coroutine")
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl<I, Y, M: FpMode> Yielder<I, Y, M> {
    /// Suspends the coroutine, handing `value` to the resumer as `Ok(Yield(value))`, and
    /// returns the input of the next [`Coroutine::resume`].
    ///
    /// If the coroutine is dropped instead of resumed, this function does not return: it
    /// starts an unwind that drops the values on the coroutine's stack.
    pub fn suspend(&self, value: Y) -> I {
        if self.cancelling.get() {
            panic::resume_unwind(Box::new(CancelUnwind));
        }
        let links = self.links;
        let mut message = Some(value);

        // SAFETY: `links` points into the Start block on this coroutine's stack. The resumer
        // is suspended in `Coroutine::send`, so `resumer_sp` is its saved stack pointer, and it
        // takes `message` before it resumes us. A coroutine that opted out of FP switches runs
        // with the defaults here, as its contract requires.
        let arg = unsafe {
            Links::switch::<M>(
                &raw mut (*links).coroutine_sp,
                (*links).resumer_sp,
                &raw mut message as usize,
            )
        };

        // SAFETY: only `Coroutine::send` resumes a coroutine, and it passes the address of an
        // `Option<Command<I>>` on its stack, valid until we switch back.
        let command = unsafe { (*(arg as *mut Option<Command<I>>)).take() };
        match command.expect("goro_context: a coroutine was resumed without a command") {
            Command::Resume(input) => input,
            Command::Cancel => {
                self.cancelling.set(true);
                panic::resume_unwind(Box::new(CancelUnwind))
            }
        }
    }
}

impl<I, Y, M: FpMode> fmt::Debug for Yielder<I, Y, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Yielder")
            .field("cancelling", &self.cancelling.get())
            .finish_non_exhaustive()
    }
}

/// Entry function of every coroutine: runs the closure, catches its panic, and sends how it
/// finished to the resumer with the coroutine's last switch.
///
/// # Safety
///
/// Only the first switch from `Coroutine::send` may enter it, with `data` pointing to the
/// `Start<F>` block that `Coroutine::new` wrote.
unsafe extern "C" fn coroutine_entry<I, Y, R, F, M: FpMode>(arg: usize, data: usize) -> !
where
    F: FnOnce(&Yielder<I, Y, M>, I) -> R,
{
    let start = data as *mut Start<F>;
    // SAFETY: `start` is the block that new wrote. This is the only read of the closure, and
    // nothing drops the block's copy, so the closure is moved rather than duplicated.
    let closure = unsafe { ManuallyDrop::take(&mut (*start).closure) };
    // SAFETY: `start` is valid, so the field projection stays inside its allocation.
    let links = unsafe { &raw mut (*start).links };
    // SAFETY: `Coroutine::send` passes the address of an `Option<Command<I>>` on its stack.
    let command = unsafe { (*(arg as *mut Option<Command<I>>)).take() };

    let outcome = panic::catch_unwind(AssertUnwindSafe(|| {
        match command.expect("goro_context: a coroutine was resumed without a command") {
            Command::Resume(input) => {
                let yielder = Yielder {
                    links,
                    cancelling: Cell::new(false),
                    marker: PhantomData,
                };
                Finish::Returned(closure(&yielder, input))
            }
            Command::Cancel => {
                drop(closure);
                Finish::Unwound(Box::new(CancelUnwind))
            }
        }
    }));
    let mut message = Some(outcome.unwrap_or_else(Finish::Unwound));

    // SAFETY: the resumer is suspended in `Coroutine::send`. It reads `finished`, takes
    // `message` and marks the coroutine finished, so it never switches back here.
    unsafe {
        (*links).finished = true;
        Links::switch::<M>(
            &raw mut (*links).coroutine_sp,
            (*links).resumer_sp,
            &raw mut message as usize,
        );
    }
    eprintln!("goro_context: a finished coroutine was resumed; Coroutine::resume rules this out");
    process::abort()
}
