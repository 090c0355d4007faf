//! The `Scheduler` trait and its vtable.

use goro_abi::{ABI_VERSION, GRef, PId, ReadyCause, SchedVTable, SyscallExit};

/// A goroutine scheduler: decides which g runs next and what happens to a g at each decision
/// point.
///
/// # Where each hook runs
///
/// * [`ready`](Scheduler::ready) runs on any thread and any stack: on a g's own stack when a g
///   spawns or wakes another, on an M's g0 when a g yields or leaves a syscall without a P, and
///   on threads that run no g at all (a `block_on` caller, the monitor thread that fires
///   timers). `p` is the caller's P when it holds one (see [`start`](Scheduler::start)), and
///   `None` otherwise.
/// * [`next`](Scheduler::next) runs on the M that holds P `p`, between goroutines: on its g0,
///   or on the stack of a g that yields.
/// * [`has_work`](Scheduler::has_work) runs on any thread: on g0s, on the stack of a g that
///   enters a syscall, and on the runtime's monitor thread.
/// * [`on_yield`](Scheduler::on_yield) and [`on_yield_next`](Scheduler::on_yield_next) run on
///   the yielding g's own stack, on the M that holds P `p`, or on that M's g0. The g is
///   stopped (`Runnable`) but its switch may not have saved it yet. The runtime makes any M
///   that takes it from the scheduler wait until the switch has saved it, so the scheduler may
///   publish it at once.
/// * [`on_park`](Scheduler::on_park) and [`on_exit`](Scheduler::on_exit) run on the g0 of the
///   M that ran the g, after the g has left its stack.
/// * [`on_entersyscall`](Scheduler::on_entersyscall) and
///   [`on_exitsyscall`](Scheduler::on_exitsyscall) run on the g's own stack, on the fast path of
///   every syscall wrapper: keep them cheap.
/// * [`on_release_p`](Scheduler::on_release_p) runs before P `p` goes to the idle list or,
///   after a syscall, to another M. It runs on the M that gives the P away, or on the monitor
///   thread or a stand-by M that takes the P back from an M stuck in a syscall. A P that an M
///   hands straight to the M of a pinned goroutine keeps its work and skips the hook, as does
///   a P that its M drops at shutdown.
///
/// No hook may switch goroutines, park or block the thread on something a goroutine must do:
/// they run inside the runtime's own protocol. Short critical sections on a lock are fine.
/// A spawn inside `on_exitsyscall`, or inside `start` on a goroutine that builds a runtime,
/// yields when goro's spawns do (`Builder::spawn_yields` in the `goro` crate), so a scheduler
/// that spawns there needs a runtime that has them off. A spawn inside any other hook does not
/// yield.
///
/// A panic in `ready`, `next`, `has_work`, the yield hooks, `on_park`, `on_release_p` or
/// `on_exit` aborts the process with a fatal error message: the runtime cannot put back a g or
/// a P that the hook was handling. `on_entersyscall` and `on_exitsyscall` run on the g's stack
/// while it holds its P, so a panic there unwinds the goroutine as any panic of its body does.
/// A panic in `name`, `start` or `local_len` reaches their caller: for `start`, the thread that
/// builds the runtime.
///
/// Hooks that run on g0 must also leave the FP control state (MXCSR and the x87 control word,
/// FPCR, `frm`) as they found it. g0 runs with the defaults, and the switch into a g does not
/// read them back (see `goro_context::switch_from_g0`). On x86_64 the MXCSR status flags that
/// a hook's floating-point arithmetic raises may reach the g that runs next. The psABI makes
/// those flags caller-saved, so no code relies on them across a call.
///
/// # What a scheduler must guarantee
///
/// * Every g passed to `ready` is eventually returned by `next` on some P, as long as Ps keep
///   asking. A scheduler never drops a g: the runtime counts it as runnable until it runs, so
///   a dropped g hangs the goroutine or thread that joins it, and no deadlock report names it.
/// * Any P can take any g. A scheduler may prefer a P for a g, but `next` on another P must
///   return the g when the preferred P does not ask. An M that finds no g for its P takes a
///   P back while `has_work` is true, its own P first, so a g that only another P may take
///   can stay queued for ever while that M spins.
/// * No lost wakeup: once `ready` has returned, a `has_work` or `next` call that starts after it
///   on any thread sees the g (the queue is linearizable). The runtime does the rest: after
///   `ready` it wakes an idle M if there is one, and an M going idle publishes that before it
///   rechecks `has_work`.
///
/// # Safety
///
/// The runtime runs whatever `next` returns. An implementation must return each g at most
/// once for each time it was passed to `ready`, `on_yield` or `on_yield_next`, and never a g it
/// was not given: returning a g twice would run one stack on two threads. It must not keep or
/// use a g's [`GRef`] after its [`on_exit`](Scheduler::on_exit) call returns: the runtime
/// frees the g's control block then, and may reuse its memory for another g.
pub unsafe trait Scheduler: Send + Sync + 'static {
    /// A short name for dumps and traces, such as `"fifo"`.
    fn name(&self) -> &'static str;

    /// Called once when a runtime starts using this scheduler, with its number of Ps. A
    /// scheduler with per-P queues sizes them here.
    ///
    /// The call hands the scheduler to one runtime, so a started scheduler may keep state
    /// for each P that only the P's holder touches, with no lock or atomic read-modify-write
    /// around it. `WorkStealing` keeps its run queues' producer side so, and `Fifo` the P
    /// holder's part of its queue when the runtime has one P.
    ///
    /// # Safety
    ///
    /// The caller is the runtime that owns the scheduler (through a
    /// [`SchedHandle`](crate::SchedHandle)), or code that acts as one (as tests do), and calls
    /// `start` before any other hook. From then on:
    ///
    /// * the caller is the scheduler's only user: nothing else calls its hooks, except
    ///   `name`, `has_work` and `local_len`, which any thread may call;
    /// * each hook that takes a P `p` runs on the thread that holds P `p`. Those hooks are
    ///   `next`, `on_yield`, `on_yield_next`, `on_park`, `on_entersyscall`,
    ///   `on_exitsyscall`, `on_release_p`, `on_exit`, and `ready` with `Some(p)`;
    /// * a P moves between threads only through a Release by its last holder that the next
    ///   holder's Acquire reads. So two threads never run such hooks for the same P at once,
    ///   and each holder sees what the previous one wrote.
    unsafe fn start(&self, procs: usize) {
        let _ = procs;
    }

    /// Queues `g`, which has become runnable for the reason `cause`.
    fn ready(&self, g: GRef, cause: ReadyCause, p: Option<PId>);

    /// Returns the next g to run on P `p`, or `None` when no g is queued. A g that prefers
    /// another P still counts (see "What a scheduler must guarantee").
    fn next(&self, p: PId) -> Option<GRef>;

    /// Returns whether any g is queued anywhere in this scheduler.
    fn has_work(&self) -> bool;

    /// The running g yielded on P `p`. The default requeues it at the back.
    fn on_yield(&self, g: GRef, p: PId) {
        self.ready(g, ReadyCause::Yield, Some(p));
    }

    /// The running g yielded on P `p`: requeue it as [`on_yield`](Scheduler::on_yield) does
    /// and return the next g for P `p` as [`next`](Scheduler::next) does. The result may be
    /// `g` itself, which then keeps running without a switch.
    ///
    /// The runtime calls this instead of the pair when the g's scheduler is the runtime's only
    /// one. The default is the pair, and a scheduler overrides it to do both under one lock.
    fn on_yield_next(&self, g: GRef, p: PId) -> Option<GRef> {
        self.on_yield(g, p);
        self.next(p)
    }

    /// The running g parked on P `p`; a later wakeup will pass it to `ready`.
    fn on_park(&self, g: GRef, p: PId) {
        let _ = (g, p);
    }

    /// Whether the runtime calls [`on_entersyscall`](Scheduler::on_entersyscall) and
    /// [`on_exitsyscall`](Scheduler::on_exitsyscall). A scheduler that keeps both defaults
    /// sets it to `false`, and every syscall then skips two indirect calls. Both reference
    /// schedulers do. With `false`, neither hook is called, even when it is overridden.
    const SYSCALL_HOOKS: bool = true;

    /// The running g is entering a syscall on P `p`.
    fn on_entersyscall(&self, g: GRef, p: PId) {
        let _ = (g, p);
    }

    /// The g left a syscall and got P `p` back. Return [`SyscallExit::Requeue`] to put it back
    /// in the queue (the runtime then calls `ready` with [`ReadyCause::SyscallExit`] from g0).
    fn on_exitsyscall(&self, g: GRef, p: PId) -> SyscallExit {
        let _ = (g, p);
        SyscallExit::Continue
    }

    /// P `p` is leaving its M; move any g kept privately for it where other Ps can take it.
    fn on_release_p(&self, p: PId) {
        let _ = p;
    }

    /// The g finished on P `p`.
    fn on_exit(&self, g: GRef, p: PId) {
        let _ = (g, p);
    }

    /// Returns how many gs are queued for P `p` alone (its local run queue and runnext), or
    /// `None` for a scheduler without per-P queues. Diagnostics only (`GORO_DEBUG=schedtrace`);
    /// it may be approximate and may take locks.
    fn local_len(&self, p: PId) -> Option<usize> {
        let _ = p;
        None
    }
}

struct VTableOf<S>(core::marker::PhantomData<S>);

impl<S: Scheduler> VTableOf<S> {
    const VTABLE: SchedVTable = SchedVTable {
        abi_version: ABI_VERSION,
        name: name::<S>,
        start: start::<S>,
        ready: ready::<S>,
        next: next::<S>,
        has_work: has_work::<S>,
        on_yield: on_yield::<S>,
        on_park: on_park::<S>,
        on_entersyscall: if S::SYSCALL_HOOKS {
            Some(on_entersyscall::<S>)
        } else {
            None
        },
        on_exitsyscall: if S::SYSCALL_HOOKS {
            Some(on_exitsyscall::<S>)
        } else {
            None
        },
        on_release_p: on_release_p::<S>,
        on_exit: on_exit::<S>,
        local_len: local_len::<S>,
        on_yield_next: on_yield_next::<S>,
    };
}

/// The vtable that calls `S`'s methods, for a [`SchedLink`](goro_abi::SchedLink) whose data
/// pointer is a `*const S`.
pub fn vtable_of<S: Scheduler>() -> &'static SchedVTable {
    &VTableOf::<S>::VTABLE
}

/// # Safety
///
/// `data` must point to a live `S`.
unsafe fn this<'a, S>(data: *const ()) -> &'a S {
    // SAFETY: the caller passes the data pointer the vtable was paired with.
    unsafe { &*(data as *const S) }
}

// Each shim below has the contract of `this`: the runtime calls a vtable only with the data
// pointer of the link it came from, and keeps the scheduler alive while its gs exist.

unsafe fn name<S: Scheduler>(data: *const ()) -> &'static str {
    // SAFETY: see the comment above the shims.
    unsafe { this::<S>(data) }.name()
}
unsafe fn start<S: Scheduler>(data: *const (), procs: usize) {
    // SAFETY: see the comment above the shims. The runtime calls `start` through the link on
    // the terms of `Scheduler::start` (see `SchedHandle::start`).
    unsafe { this::<S>(data).start(procs) }
}
unsafe fn ready<S: Scheduler>(data: *const (), g: GRef, cause: ReadyCause, p: Option<PId>) {
    // SAFETY: see the comment above the shims.
    unsafe { this::<S>(data) }.ready(g, cause, p)
}
unsafe fn next<S: Scheduler>(data: *const (), p: PId) -> Option<GRef> {
    // SAFETY: see the comment above the shims.
    unsafe { this::<S>(data) }.next(p)
}
unsafe fn has_work<S: Scheduler>(data: *const ()) -> bool {
    // SAFETY: see the comment above the shims.
    unsafe { this::<S>(data) }.has_work()
}
unsafe fn on_yield<S: Scheduler>(data: *const (), g: GRef, p: PId) {
    // SAFETY: see the comment above the shims.
    unsafe { this::<S>(data) }.on_yield(g, p)
}
unsafe fn on_yield_next<S: Scheduler>(data: *const (), g: GRef, p: PId) -> Option<GRef> {
    // SAFETY: see the comment above the shims.
    unsafe { this::<S>(data) }.on_yield_next(g, p)
}
unsafe fn on_park<S: Scheduler>(data: *const (), g: GRef, p: PId) {
    // SAFETY: see the comment above the shims.
    unsafe { this::<S>(data) }.on_park(g, p)
}
unsafe fn on_entersyscall<S: Scheduler>(data: *const (), g: GRef, p: PId) {
    // SAFETY: see the comment above the shims.
    unsafe { this::<S>(data) }.on_entersyscall(g, p)
}
unsafe fn on_exitsyscall<S: Scheduler>(data: *const (), g: GRef, p: PId) -> SyscallExit {
    // SAFETY: see the comment above the shims.
    unsafe { this::<S>(data) }.on_exitsyscall(g, p)
}
unsafe fn on_release_p<S: Scheduler>(data: *const (), p: PId) {
    // SAFETY: see the comment above the shims.
    unsafe { this::<S>(data) }.on_release_p(p)
}
unsafe fn local_len<S: Scheduler>(data: *const (), p: PId) -> Option<usize> {
    // SAFETY: see the comment above the shims.
    unsafe { this::<S>(data) }.local_len(p)
}
unsafe fn on_exit<S: Scheduler>(data: *const (), g: GRef, p: PId) {
    // SAFETY: see the comment above the shims.
    unsafe { this::<S>(data) }.on_exit(g, p)
}
