//! Stack overflow reports: a process-wide SIGSEGV/SIGBUS handler that recognizes faults in
//! guard pages, and per-thread alternate signal stacks to run it on.
//!
//! A thread that overflows its stack cannot run a signal handler on that stack, so the kernel
//! delivers SIGSEGV on the thread's alternate signal stack (`sigaltstack`), which the handler
//! requests with `SA_ONSTACK`. Without one the kernel kills the process with a bare SIGSEGV.
//! Rust's standard library gives the main thread and every `std::thread` an alternate stack of
//! its own; [`AltStack`] gives one to any other thread, and lets a runtime own the stack of
//! each M explicitly.
//!
//! Everything the handler does is async-signal-safe: atomic loads, a lock-free registry scan,
//! formatting into a fixed buffer on its own stack, `write(2)`, `sigaction`, `raise` and
//! `abort`. It takes no lock and allocates nothing.

use std::cell::{Cell, UnsafeCell};
use std::fmt::{self, Write as _};
use std::marker::PhantomData;
use std::mem::MaybeUninit;
use std::ops::Range;
use std::ptr;
use std::sync::Once;
use std::sync::atomic::{AtomicBool, Ordering};

use libc::{c_int, c_void, siginfo_t};

use crate::DEFAULT_GUARD_SIZE;
use crate::error::StackError;
use crate::registry;
use crate::slab::CanaryOverflow;
use crate::sys::{self, page_size, round_up_to_pages};

/// A signal's disposition before [`install_overflow_handler`] replaced it.
struct PreviousAction {
    /// Set with Release once `action` is written; the handler loads it with Acquire.
    saved: AtomicBool,
    action: UnsafeCell<MaybeUninit<libc::sigaction>>,
}

// SAFETY: `action` is written once, inside `INSTALL`, before `saved` is set, and only read after
// an Acquire load of `saved` has returned true.
unsafe impl Sync for PreviousAction {}

impl PreviousAction {
    const fn new() -> PreviousAction {
        PreviousAction {
            saved: AtomicBool::new(false),
            action: UnsafeCell::new(MaybeUninit::uninit()),
        }
    }

    fn get(&self) -> Option<libc::sigaction> {
        // Acquire pairs with the Release store in `install_for`, so `action` is initialized.
        if !self.saved.load(Ordering::Acquire) {
            return None;
        }
        // SAFETY: `saved` is true, so `action` was initialized and is never written again.
        Some(unsafe { (*self.action.get()).assume_init() })
    }
}

static PREVIOUS_SEGV: PreviousAction = PreviousAction::new();
static PREVIOUS_BUS: PreviousAction = PreviousAction::new();
static INSTALL: Once = Once::new();

/// Installs the process-wide SIGSEGV and SIGBUS handler that reports stack overflows.
///
/// Idempotent: only the first call installs; later calls return at once. On a fault in the
/// guard of a live [`Stack`](crate::Stack) or of a slab of a slab-mode pool, the handler writes
/// one line to stderr and aborts (SIGABRT):
///
/// ```text
/// goroutine 42 stack overflow: stack size 65536 bytes, fault address 0x7f3a5c0fdff8, guard 0x7f3a5c0fa000-0x7f3a5c0fe000
/// ```
///
/// The goroutine is the running g ([`goro_abi::getg`]). When its stack lies higher in the slab
/// than the lowest stack, the line says `stack overflow through its slab`, because its frames
/// ran over the stacks below. A fault within [`DEFAULT_GUARD_SIZE`] below the running g's
/// `stack_lo` counts as an overflow too, for stacks this crate did not map. Every other fault
/// goes to the disposition the signal had before. A previous handler is called, such as the
/// one Rust's standard library installs at startup to report overflows of threads' own stacks.
/// A previous default disposition is restored, so that the fault kills the process with SIGSEGV
/// or SIGBUS as it would without goro.
///
/// A thread reports an overflow only when it has an alternate signal stack; see [`AltStack`].
///
/// # Panics
///
/// When `sigaction` fails, which it does only for invalid arguments.
pub fn install_overflow_handler() {
    INSTALL.call_once(|| {
        // Cache the page size now: the handler needs it and must not call sysconf.
        page_size();
        install_for(libc::SIGSEGV, &PREVIOUS_SEGV);
        install_for(libc::SIGBUS, &PREVIOUS_BUS);
    });
}

fn install_for(signal: c_int, previous: &PreviousAction) {
    // The previous action is read first and saved before the new handler goes in, so the handler
    // always finds it. A handler that another thread installs between the two calls is lost.
    let mut old = MaybeUninit::<libc::sigaction>::zeroed();
    // SAFETY: a null new action only reads the current one into `old`, which is valid for writes.
    let rc = unsafe { libc::sigaction(signal, ptr::null(), old.as_mut_ptr()) };
    assert_eq!(
        rc,
        0,
        "install_overflow_handler: sigaction({signal}) failed: errno {}",
        sys::last_errno()
    );
    // SAFETY: only this call, run once inside INSTALL, writes `action`; readers wait for `saved`.
    unsafe { previous.action.get().write(old) };
    // Release pairs with the Acquire load in `PreviousAction::get`.
    previous.saved.store(true, Ordering::Release);

    // SAFETY: all-zero bytes are a valid `sigaction` (no handler, no flags, empty mask).
    let mut action: libc::sigaction = unsafe { MaybeUninit::zeroed().assume_init() };
    action.sa_sigaction =
        handle_fault as extern "C" fn(c_int, *mut siginfo_t, *mut c_void) as usize;
    action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
    // SAFETY: `action.sa_mask` is a valid sigset_t to initialize.
    unsafe { libc::sigemptyset(&mut action.sa_mask) };
    // SAFETY: `action` is fully initialized and its handler has the SA_SIGINFO signature.
    let rc = unsafe { libc::sigaction(signal, &action, ptr::null_mut()) };
    assert_eq!(
        rc,
        0,
        "install_overflow_handler: sigaction({signal}) failed: errno {}",
        sys::last_errno()
    );
}

/// Goroutine id and stack bounds of the running g, read from its header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct RunningG {
    goid: u64,
    lo: usize,
    hi: usize,
}

/// A fault recognized as a stack overflow.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Overflow {
    /// The running g overflowed the stack its header records.
    Goroutine {
        g: RunningG,
        address: usize,
        guard: Range<usize>,
    },
    /// A g runs, but the guard hit belongs to a stack other than the one in its header: the
    /// header is stale, or the code runs on a stack switched to without updating it.
    UnrecordedStack {
        g: RunningG,
        address: usize,
        guard: Range<usize>,
    },
    /// The running g's stack lies in a slab above the lowest stack, and the fault hit the
    /// slab's guard: the g's frames ran over the stacks below its own.
    ThroughSlab {
        g: RunningG,
        address: usize,
        guard: Range<usize>,
    },
    /// No g runs on this thread, and the guard belongs to a goro stack.
    NoGoroutine { address: usize, guard: Range<usize> },
}

impl fmt::Display for Overflow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Overflow::Goroutine { g, address, guard } => write!(
                f,
                "goroutine {} stack overflow: stack size {} bytes, fault address {address:#x}, \
                 guard {:#x}-{:#x}",
                g.goid,
                g.hi - g.lo,
                guard.start,
                guard.end
            ),
            Overflow::UnrecordedStack { g, address, guard } => write!(
                f,
                "goroutine {} stack overflow on a stack its g header does not record (header \
                 stack {:#x}-{:#x}): fault address {address:#x}, guard {:#x}-{:#x}",
                g.goid, g.lo, g.hi, guard.start, guard.end
            ),
            Overflow::ThroughSlab { g, address, guard } => write!(
                f,
                "goroutine {} stack overflow through its slab: fault address {address:#x} in the \
                 slab's guard {:#x}-{:#x}, below its stack {:#x}-{:#x}, so its frames overwrote \
                 the stacks between",
                g.goid, guard.start, guard.end, g.lo, g.hi
            ),
            Overflow::NoGoroutine { address, guard } => write!(
                f,
                "stack overflow on a goro stack with no goroutine running: fault address \
                 {address:#x}, guard {:#x}-{:#x}",
                guard.start, guard.end
            ),
        }
    }
}

/// Classifies a fault at `address`, given the running g and the registered guard containing the
/// address. Pure, so that tests can drive it.
fn classify(
    address: usize,
    g: Option<RunningG>,
    registered: Option<registry::GuardEntry>,
) -> Option<Overflow> {
    if let Some(entry) = registered {
        let guard = entry.lo - entry.guard_size..entry.lo;
        // The lowest stack of a slab starts with its canary at the top of the padding page
        // above the slab's guard, less than a page above the guard's end.
        let lowest_of_slab =
            |g: &RunningG| entry.slab && (entry.lo..entry.lo + page_size()).contains(&g.lo);
        return Some(match g {
            Some(g) if g.lo == entry.lo || lowest_of_slab(&g) => {
                Overflow::Goroutine { g, address, guard }
            }
            Some(g) if entry.slab && g.lo > entry.lo => Overflow::ThroughSlab { g, address, guard },
            Some(g) => Overflow::UnrecordedStack { g, address, guard },
            None => Overflow::NoGoroutine { address, guard },
        });
    }
    // A stack from elsewhere: assume a default guard directly below the g's stack.
    let g = g.filter(|g| g.lo != 0)?;
    let guard_size = DEFAULT_GUARD_SIZE.next_multiple_of(page_size());
    let guard = g.lo.saturating_sub(guard_size)..g.lo;
    guard
        .contains(&address)
        .then_some(Overflow::Goroutine { g, address, guard })
}

fn running_g() -> Option<RunningG> {
    let g = goro_abi::getg();
    if g.is_null() {
        return None;
    }
    // SAFETY: by the contract of `setg`, a non-null g register points to the live header of the
    // g running on this thread. A fault on the thread does not end the g.
    let header = unsafe { &*g };
    Some(RunningG {
        goid: header.goid(),
        lo: header.stack_lo(),
        hi: header.stack_hi(),
    })
}

/// The SA_SIGINFO handler for SIGSEGV and SIGBUS.
extern "C" fn handle_fault(signal: c_int, info: *mut siginfo_t, context: *mut c_void) {
    // SAFETY: __errno_location returns this thread's errno, valid for the thread's lifetime.
    let errno = unsafe { libc::__errno_location() };
    // SAFETY: as above.
    let saved_errno = unsafe { *errno };

    // SAFETY: the kernel passes a valid siginfo_t to an SA_SIGINFO handler.
    let (code, address) = unsafe { ((*info).si_code, (*info).si_addr() as usize) };
    // Only a fault raised by the kernel (si_code > 0) has a fault address; a signal sent with
    // kill or raise is never an overflow.
    if code > 0 {
        let registered = registry::find_guard(address);
        if let Some(overflow) = classify(address, running_g(), registered) {
            report_and_abort(&overflow);
        }
    }

    // SAFETY: the arguments are the ones this handler received for `signal`.
    unsafe { chain(signal, code, info, context) };
    // SAFETY: as above.
    unsafe { *errno = saved_errno };
}

/// A fixed buffer that `write!` fills without allocating; text beyond its end is dropped.
struct MessageBuffer {
    bytes: [u8; 512],
    len: usize,
}

impl fmt::Write for MessageBuffer {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        let room = self.bytes.len() - self.len;
        let taken = text.len().min(room);
        self.bytes[self.len..self.len + taken].copy_from_slice(&text.as_bytes()[..taken]);
        self.len += taken;
        Ok(())
    }
}

fn report_and_abort(overflow: &Overflow) -> ! {
    write_line_and_abort(format_args!("{overflow}"))
}

/// Writes the report of a canary overflow on goroutine `goid` and aborts; see
/// [`CanaryOverflow::report_and_abort`].
pub(crate) fn report_canary_and_abort(goid: u64, overflow: &CanaryOverflow) -> ! {
    write_line_and_abort(format_args!(
        "goroutine {goid} overflowed its stack, detected by the canary at switch: {}",
        overflow.details()
    ))
}

/// Writes `line` and a newline to stderr without allocating, then aborts.
fn write_line_and_abort(line: fmt::Arguments<'_>) -> ! {
    let mut message = MessageBuffer {
        bytes: [0; 512],
        len: 0,
    };
    // MessageBuffer::write_str never returns an error. core::fmt formats integers and strings
    // into the buffer without allocating or locking.
    let _ = writeln!(message, "{line}");
    write_stderr(&message.bytes[..message.len]);
    // SAFETY: abort is async-signal-safe; it raises SIGABRT and does not return.
    unsafe { libc::abort() }
}

fn write_stderr(mut bytes: &[u8]) {
    while !bytes.is_empty() {
        // SAFETY: the pointer and length describe the live slice `bytes`.
        let written =
            unsafe { libc::write(libc::STDERR_FILENO, bytes.as_ptr().cast(), bytes.len()) };
        if written > 0 {
            bytes = &bytes[written as usize..];
        } else if written < 0 && sys::last_errno() == libc::EINTR {
            continue;
        } else {
            return;
        }
    }
}

/// Hands a fault that is no overflow to the signal's previous disposition.
///
/// # Safety
///
/// The arguments must be those that `handle_fault` received.
unsafe fn chain(signal: c_int, code: c_int, info: *mut siginfo_t, context: *mut c_void) {
    let previous = if signal == libc::SIGBUS {
        &PREVIOUS_BUS
    } else {
        &PREVIOUS_SEGV
    };
    // SAFETY: all-zero bytes are a valid `sigaction`: SIG_DFL, no flags, empty mask.
    let default: libc::sigaction = unsafe { MaybeUninit::zeroed().assume_init() };
    let action = previous.get().unwrap_or(default);
    let handler = action.sa_sigaction;

    if handler == libc::SIG_DFL || handler == libc::SIG_IGN {
        // Put the previous disposition back and return. A fault re-executes the faulting
        // instruction, which faults again under that disposition: the default kills the
        // process, and the kernel does not let a synchronous fault be ignored. A signal sent
        // with kill or raise does not recur, so under the default disposition it is sent again.
        // It stays blocked until this handler returns and is delivered then.
        // SAFETY: `action` is a disposition the kernel returned for this signal.
        unsafe { libc::sigaction(signal, &action, ptr::null_mut()) };
        if handler == libc::SIG_DFL && code <= 0 {
            // SAFETY: raise is async-signal-safe.
            unsafe { libc::raise(signal) };
        }
        return;
    }

    if action.sa_flags & libc::SA_RESETHAND != 0 {
        // A one-shot handler resets the disposition before it runs.
        // SAFETY: `default` is a valid disposition.
        unsafe { libc::sigaction(signal, &default, ptr::null_mut()) };
    }
    // NOTE: the previous handler runs with this handler's signal mask, not its own sa_mask.
    if action.sa_flags & libc::SA_SIGINFO != 0 {
        // SAFETY: with SA_SIGINFO, the kernel would call `handler` with this signature.
        let handler: extern "C" fn(c_int, *mut siginfo_t, *mut c_void) =
            unsafe { std::mem::transmute(handler) };
        handler(signal, info, context);
    } else {
        // SAFETY: without SA_SIGINFO, the kernel would call `handler` with this signature.
        let handler: extern "C" fn(c_int) = unsafe { std::mem::transmute(handler) };
        handler(signal);
    }
}

/// Minimum usable size of an [`AltStack`]: enough for the handler, which needs a few hundred
/// bytes, and for a chained handler such as Rust's, which formats the thread's name.
pub const MIN_ALT_STACK_SIZE: usize = 64 * 1024;

thread_local! {
    /// Whether this thread has a live `AltStack`.
    static HAS_ALT_STACK: Cell<bool> = const { Cell::new(false) };
}

/// A thread's alternate signal stack, on which the overflow handler runs.
///
/// [`AltStack::install`] maps a stack with a guard page and makes it the calling thread's
/// alternate signal stack. Dropping the `AltStack` restores the previous one and unmaps the
/// stack. The runtime keeps one per M. An `AltStack` is neither `Send` nor `Sync`: it belongs to the
/// thread that installed it.
pub struct AltStack {
    base: usize,
    guard_size: usize,
    size: usize,
    previous: libc::stack_t,
    _thread_bound: PhantomData<*mut ()>,
}

impl AltStack {
    /// Installs an alternate signal stack of [`AltStack::default_size`] bytes for the calling
    /// thread.
    ///
    /// # Errors
    ///
    /// [`StackError::AltStackFailed`] when mapping the stack or `sigaltstack` fails; for
    /// example, `sigaltstack` fails with `EPERM` inside a signal handler running on the current
    /// alternate stack.
    ///
    /// # Panics
    ///
    /// When the calling thread already has a live `AltStack`.
    pub fn install() -> Result<AltStack, StackError> {
        assert!(
            !HAS_ALT_STACK.get(),
            "AltStack::install: this thread already has a goro alternate signal stack; keep the \
             first AltStack for as long as the thread runs goroutines"
        );
        let size = AltStack::default_size();
        let guard_size = page_size();
        let failed = |call, errno| StackError::AltStackFailed {
            call,
            size,
            errno,
            map_count: (errno == libc::ENOMEM)
                .then(sys::map_count_near_limit)
                .flatten(),
        };
        let base =
            sys::map_guarded(guard_size, size).map_err(|error| failed(error.call, error.errno))?;

        let stack = libc::stack_t {
            ss_sp: (base + guard_size) as *mut c_void,
            ss_flags: 0,
            ss_size: size,
        };
        // SAFETY: all-zero bytes are a valid stack_t for the kernel to overwrite.
        let mut previous: libc::stack_t = unsafe { MaybeUninit::zeroed().assume_init() };
        // SAFETY: `stack` describes a readable and writable mapping that lives until drop.
        let rc = unsafe { libc::sigaltstack(&stack, &mut previous) };
        if rc != 0 {
            let errno = sys::last_errno();
            // SAFETY: the mapping was created above and the kernel did not take it.
            unsafe { sys::unmap(base, guard_size + size) };
            return Err(failed("sigaltstack", errno));
        }
        HAS_ALT_STACK.set(true);
        Ok(AltStack {
            base,
            guard_size,
            size,
            previous,
            _thread_bound: PhantomData,
        })
    }

    /// Returns the usable size of the stacks that [`AltStack::install`] maps, rounded up to pages.
    /// It is [`MIN_ALT_STACK_SIZE`], or four times the kernel's minimum signal frame
    /// (`AT_MINSIGSTKSZ`) where that is larger, as on CPUs with wide vector registers.
    pub fn default_size() -> usize {
        // SAFETY: getauxval has no preconditions; it returns 0 for an absent entry.
        let kernel_minimum = unsafe { libc::getauxval(libc::AT_MINSIGSTKSZ) } as usize;
        let size = MIN_ALT_STACK_SIZE.max(kernel_minimum.saturating_mul(4));
        round_up_to_pages(size).expect("an alternate stack size rounds without overflow")
    }

    /// Returns the usable range of the alternate stack.
    pub fn range(&self) -> Range<usize> {
        let lo = self.base + self.guard_size;
        lo..lo + self.size
    }
}

impl Drop for AltStack {
    fn drop(&mut self) {
        HAS_ALT_STACK.set(false);
        // SAFETY: all-zero bytes are a valid stack_t for the kernel to overwrite.
        let mut current: libc::stack_t = unsafe { MaybeUninit::zeroed().assume_init() };
        // SAFETY: a null new stack only reads the current one into `current`.
        let rc = unsafe { libc::sigaltstack(ptr::null(), &mut current) };
        let ours = rc == 0 && current.ss_sp as usize == self.range().start;
        // NOTE: when another alternate stack replaced this one, the mapping is leaked rather
        // than unmapped, because the code that replaced it may restore it later.
        if !ours {
            return;
        }
        let mut restore = self.previous;
        // Only SS_DISABLE may be passed back; the kernel reports SS_ONSTACK but rejects it.
        restore.ss_flags &= libc::SS_DISABLE;
        // SAFETY: `restore` is the stack the kernel reported before `install`, which its owner
        // has not freed while it was saved here.
        let rc = unsafe { libc::sigaltstack(&restore, ptr::null_mut()) };
        if rc != 0 {
            // The kernel still uses our stack, so it must stay mapped.
            return;
        }
        // SAFETY: the kernel no longer uses the mapping, and nothing else references it.
        unsafe { sys::unmap(self.base, self.guard_size + self.size) };
    }
}

impl fmt::Debug for AltStack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let range = self.range();
        f.debug_struct("AltStack")
            .field("lo", &format_args!("{:#x}", range.start))
            .field("hi", &format_args!("{:#x}", range.end))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::GuardEntry;

    const G: RunningG = RunningG {
        goid: 42,
        lo: 0x10_0000,
        hi: 0x11_0000,
    };

    #[test]
    fn classify_registered_guard_of_running_g() {
        let entry = GuardEntry {
            lo: G.lo,
            guard_size: 0x4000,
            slab: false,
        };
        let overflow = classify(G.lo - 8, Some(G), Some(entry)).expect("an overflow");
        assert_eq!(
            overflow.to_string(),
            "goroutine 42 stack overflow: stack size 65536 bytes, fault address 0xffff8, guard \
             0xfc000-0x100000"
        );
    }

    #[test]
    fn classify_guard_of_other_stack() {
        let entry = GuardEntry {
            lo: 0x20_0000,
            guard_size: 0x1000,
            slab: false,
        };
        let overflow = classify(0x1f_fff0, Some(G), Some(entry)).expect("an overflow");
        let message = overflow.to_string();
        assert!(
            message.starts_with("goroutine 42 stack overflow on a stack its g header"),
            "{message}"
        );
        assert!(
            message.contains("header stack 0x100000-0x110000"),
            "{message}"
        );
        assert!(message.contains("guard 0x1ff000-0x200000"), "{message}");
    }

    #[test]
    fn classify_guard_without_g() {
        let entry = GuardEntry {
            lo: 0x20_0000,
            guard_size: 0x1000,
            slab: false,
        };
        let overflow = classify(0x1f_f000, None, Some(entry)).expect("an overflow");
        assert_eq!(
            overflow.to_string(),
            "stack overflow on a goro stack with no goroutine running: fault address 0x1ff000, \
             guard 0x1ff000-0x200000"
        );
    }

    #[test]
    fn classify_slab_guard() {
        let page = page_size();
        let entry = GuardEntry {
            lo: 0x40_0000,
            guard_size: 0x4000,
            slab: true,
        };
        // The lowest stack of the slab: its lo is the canary at the top of the padding page.
        let lowest = RunningG {
            goid: 7,
            lo: entry.lo + page - crate::CANARY_SIZE,
            hi: entry.lo + page - crate::CANARY_SIZE + 0x5000,
        };
        let overflow = classify(entry.lo - 8, Some(lowest), Some(entry)).expect("an overflow");
        assert_eq!(
            overflow.to_string(),
            "goroutine 7 stack overflow: stack size 20480 bytes, fault address 0x3ffff8, guard \
             0x3fc000-0x400000"
        );

        let higher = RunningG {
            lo: lowest.hi,
            hi: lowest.hi + 0x5000,
            ..lowest
        };
        let overflow = classify(entry.lo - 8, Some(higher), Some(entry)).expect("an overflow");
        assert!(
            matches!(overflow, Overflow::ThroughSlab { .. }),
            "{overflow:?}"
        );
        let message = overflow.to_string();
        assert!(
            message.starts_with("goroutine 7 stack overflow through its slab: fault address"),
            "{message}"
        );
        assert!(message.contains("guard 0x3fc000-0x400000"), "{message}");

        let below = RunningG {
            lo: 0x10_0000,
            hi: 0x10_5000,
            ..lowest
        };
        let overflow = classify(entry.lo - 8, Some(below), Some(entry)).expect("an overflow");
        assert!(
            matches!(overflow, Overflow::UnrecordedStack { .. }),
            "{overflow:?}"
        );
    }

    #[test]
    fn classify_unregistered_stack_of_g() {
        let guard_size = DEFAULT_GUARD_SIZE.next_multiple_of(page_size());
        let overflow = classify(G.lo - guard_size, Some(G), None).expect("an overflow");
        assert!(
            matches!(overflow, Overflow::Goroutine { .. }),
            "{overflow:?}"
        );
        assert_eq!(
            classify(G.lo - guard_size - 1, Some(G), None),
            None,
            "below the guard"
        );
        assert_eq!(classify(G.lo, Some(G), None), None, "inside the stack");
    }

    #[test]
    fn classify_ignores_unrelated_faults() {
        assert_eq!(classify(0x10, None, None), None);
        assert_eq!(classify(0x10, Some(G), None), None);
        let no_stack = RunningG { lo: 0, hi: 0, ..G };
        assert_eq!(
            classify(0, Some(no_stack), None),
            None,
            "a g without a stack"
        );
    }

    #[test]
    fn message_buffer_truncates() {
        let mut buffer = MessageBuffer {
            bytes: [0; 512],
            len: 0,
        };
        for _ in 0..100 {
            write!(buffer, "0123456789").expect("never fails");
        }
        assert_eq!(buffer.len, 512);
        assert_eq!(&buffer.bytes[..10], b"0123456789");
    }

    #[test]
    fn alt_stack_installs_and_restores() {
        // A fresh thread, so that no other test's AltStack is involved.
        std::thread::spawn(|| {
            let read_current = || {
                // SAFETY: all-zero bytes are a valid stack_t for the kernel to overwrite.
                let mut current: libc::stack_t = unsafe { MaybeUninit::zeroed().assume_init() };
                // SAFETY: a null new stack only reads the current one.
                let rc = unsafe { libc::sigaltstack(ptr::null(), &mut current) };
                assert_eq!(rc, 0);
                (current.ss_sp as usize, current.ss_size, current.ss_flags)
            };
            let before = read_current();
            let alt = AltStack::install().expect("sigaltstack succeeds");
            let range = alt.range();
            assert!(range.len() >= MIN_ALT_STACK_SIZE);
            assert_eq!(read_current(), (range.start, range.len(), 0));
            drop(alt);
            assert_eq!(
                read_current(),
                before,
                "the previous alternate stack was not restored"
            );
        })
        .join()
        .expect("the test thread panicked");
    }

    #[test]
    fn alt_stack_twice_panics() {
        let outcome = std::thread::spawn(|| {
            let _first = AltStack::install().expect("sigaltstack succeeds");
            let _second = AltStack::install();
        })
        .join();
        let payload = outcome.expect_err("a second AltStack on one thread was accepted");
        let message = payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        assert!(
            message.starts_with("AltStack::install: this thread already has"),
            "{message}"
        );
    }
}
