//! The g header and its frozen layout.

use core::cell::UnsafeCell;
use core::fmt;
use core::ptr::{self, NonNull};
use core::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering};

use crate::custom::{CustomG, GType};
use crate::sched_link::{SchedLink, SchedVTable};
use crate::status::{GStatus, WaitReason};

#[cfg(not(target_pointer_width = "64"))]
compile_error!("goro-abi supports 64-bit targets only: the g header's offsets assume 8-byte words");

/// Version of the header layout. It changes whenever a field moves, changes size or changes
/// meaning, so that code built against another layout (a C scheduler, a gdb script) can refuse
/// to run.
pub const ABI_VERSION: u32 = 1;

/// Size of [`GHeader`] in bytes on every supported target.
pub const G_HEADER_SIZE: usize = 128;

/// Byte offsets of the header's fields, for asm, C and debuggers.
///
/// Each constant is checked against the struct at compile time, so the layout cannot drift.
pub mod offsets {
    /// [`GHeader::sched_sp_ptr`](super::GHeader::sched_sp_ptr): saved stack pointer.
    pub const SCHED_SP: usize = 0;
    /// [`GHeader::stack_lo`](super::GHeader::stack_lo): lowest usable stack address.
    pub const STACK_LO: usize = 8;
    /// [`GHeader::stack_hi`](super::GHeader::stack_hi): one past the highest stack address.
    pub const STACK_HI: usize = 16;
    /// [`GHeader::stack_guard`](super::GHeader::stack_guard): overflow threshold.
    pub const STACK_GUARD: usize = 24;
    /// [`GHeader::status`](super::GHeader::status): the g status word (`u32`).
    pub const STATUS: usize = 32;
    /// [`GHeader::wait_reason`](super::GHeader::wait_reason): why a waiting g waits (`u32`).
    pub const WAIT_REASON: usize = 36;
    /// [`GHeader::goid`](super::GHeader::goid): goroutine id (`u64`).
    pub const GOID: usize = 40;
    /// Scheduler link, data pointer.
    pub const SCHED_DATA: usize = 48;
    /// Scheduler link, vtable pointer.
    pub const SCHED_VTABLE: usize = 56;
    /// Stack pointer saved at syscall entry.
    pub const SYSCALL_SP: usize = 64;
    /// Program counter saved at syscall entry.
    pub const SYSCALL_PC: usize = 72;
    /// Pointer to the [`GType`](crate::GType) of the concrete g.
    pub const GTYPE: usize = 80;
    /// The M currently running the g (runtime-defined type).
    pub const M: usize = 88;
    /// Intrusive queue link owned by the g's scheduler.
    pub const SCHED_NEXT: usize = 96;
    /// The runtime's private per-g record.
    pub const RUNTIME: usize = 104;
    /// A word reserved for the g's scheduler.
    pub const SCHED_WORD: usize = 112;
    /// Reserved for future use; zero.
    pub const RESERVED: usize = 120;
}

/// The fixed header at the start of every goroutine's control block.
///
/// The layout is `#[repr(C)]`, 128 bytes, with the offsets in [`offsets`]; `docs/abi.md`
/// documents every field. Fields are private so that each one is written only through a method
/// whose documentation says who may call it and when; readers on other threads (monitors,
/// dumps, debuggers) see atomics and never tear a word.
///
/// The setters of the fields that the runtime trusts are `unsafe`, so a goroutine that reaches
/// its own header cannot relink itself to another scheduler:
///
/// ```compile_fail,E0133
/// let header = goro_abi::GHeader::new();
/// header.set_sched(goro_abi::SchedLink::UNSET);
/// ```
#[repr(C)]
pub struct GHeader {
    /// Stack pointer of the suspended g. Written by the context switch on the g's own M, read
    /// by the switch that resumes it. Plain memory: the scheduler's queue hand-off orders it.
    sched_sp: UnsafeCell<usize>,
    stack_lo: AtomicUsize,
    stack_hi: AtomicUsize,
    stack_guard: AtomicUsize,
    status: AtomicU32,
    wait_reason: AtomicU32,
    goid: AtomicU64,
    sched_data: AtomicPtr<()>,
    sched_vtable: AtomicPtr<SchedVTable>,
    syscall_sp: AtomicUsize,
    syscall_pc: AtomicUsize,
    gtype: AtomicPtr<GType>,
    m: AtomicPtr<()>,
    sched_next: AtomicPtr<GHeader>,
    runtime: AtomicPtr<()>,
    sched_word: AtomicU64,
    reserved: AtomicU64,
}

// SAFETY: every field but `sched_sp` is atomic. `sched_sp` is written by the context switch with
// a release store and by the M that owns the g, and the M that resumes the g reads it with
// acquire loads (see `sched_sp_ptr`).
unsafe impl Sync for GHeader {}
// SAFETY: the header holds no thread-bound state.
unsafe impl Send for GHeader {}

const _: () = {
    use memoffset::offset_of;
    assert!(core::mem::size_of::<GHeader>() == G_HEADER_SIZE);
    assert!(core::mem::align_of::<GHeader>() == 8);
    assert!(offset_of!(GHeader, sched_sp) == offsets::SCHED_SP);
    assert!(offset_of!(GHeader, stack_lo) == offsets::STACK_LO);
    assert!(offset_of!(GHeader, stack_hi) == offsets::STACK_HI);
    assert!(offset_of!(GHeader, stack_guard) == offsets::STACK_GUARD);
    assert!(offset_of!(GHeader, status) == offsets::STATUS);
    assert!(offset_of!(GHeader, wait_reason) == offsets::WAIT_REASON);
    assert!(offset_of!(GHeader, goid) == offsets::GOID);
    assert!(offset_of!(GHeader, sched_data) == offsets::SCHED_DATA);
    assert!(offset_of!(GHeader, sched_vtable) == offsets::SCHED_VTABLE);
    assert!(offset_of!(GHeader, syscall_sp) == offsets::SYSCALL_SP);
    assert!(offset_of!(GHeader, syscall_pc) == offsets::SYSCALL_PC);
    assert!(offset_of!(GHeader, gtype) == offsets::GTYPE);
    assert!(offset_of!(GHeader, m) == offsets::M);
    assert!(offset_of!(GHeader, sched_next) == offsets::SCHED_NEXT);
    assert!(offset_of!(GHeader, runtime) == offsets::RUNTIME);
    assert!(offset_of!(GHeader, sched_word) == offsets::SCHED_WORD);
    assert!(offset_of!(GHeader, reserved) == offsets::RESERVED);
};

impl GHeader {
    /// Returns a header in status [`GStatus::Idle`] with no stack, no scheduler and goid 0.
    #[inline]
    pub const fn new() -> Self {
        GHeader::with_goid(0)
    }

    /// Returns a header like [`GHeader::new`] with goroutine id `goid`, for schedulers' tests
    /// and tools that build gs by hand. It is safe where `set_goid` is not, because no runtime
    /// or registry can have filed the new header by its id yet.
    #[inline]
    pub const fn with_goid(goid: u64) -> Self {
        GHeader {
            sched_sp: UnsafeCell::new(0),
            stack_lo: AtomicUsize::new(0),
            stack_hi: AtomicUsize::new(0),
            stack_guard: AtomicUsize::new(0),
            status: AtomicU32::new(GStatus::Idle as u32),
            wait_reason: AtomicU32::new(WaitReason::None as u32),
            goid: AtomicU64::new(goid),
            sched_data: AtomicPtr::new(ptr::null_mut()),
            sched_vtable: AtomicPtr::new(ptr::null_mut()),
            syscall_sp: AtomicUsize::new(0),
            syscall_pc: AtomicUsize::new(0),
            gtype: AtomicPtr::new(ptr::null_mut()),
            m: AtomicPtr::new(ptr::null_mut()),
            sched_next: AtomicPtr::new(ptr::null_mut()),
            runtime: AtomicPtr::new(ptr::null_mut()),
            sched_word: AtomicU64::new(0),
            reserved: AtomicU64::new(0),
        }
    }

    /// Pointer to the saved stack pointer, for the context switch.
    ///
    /// The switch that suspends the g stores its stack pointer here with a release store. The
    /// M that resumes the g loads it with acquire loads, waiting while it is 0, and sets it to 0
    /// before the switch: a yielding g goes back to its scheduler before its switch has saved
    /// it, so the slot, not the queue, tells when the frame is complete. Access it through
    /// `AtomicUsize::from_ptr` when another thread may write it.
    #[inline]
    pub fn sched_sp_ptr(&self) -> *mut usize {
        self.sched_sp.get()
    }

    /// Lowest usable address of the g's stack (the guard page, if any, lies below it).
    #[inline]
    pub fn stack_lo(&self) -> usize {
        self.stack_lo.load(Ordering::Relaxed)
    }

    /// One past the highest address of the g's stack; the stack grows down from here.
    #[inline]
    pub fn stack_hi(&self) -> usize {
        self.stack_hi.load(Ordering::Relaxed)
    }

    /// Stack address below which the g is considered to overflow (Go's `stackguard0`).
    #[inline]
    pub fn stack_guard(&self) -> usize {
        self.stack_guard.load(Ordering::Relaxed)
    }

    /// Records the stack the g runs on.
    ///
    /// # Safety
    ///
    /// The caller must own the g, as the runtime does before it publishes the g: the g is
    /// [`GStatus::Idle`] or [`GStatus::Dead`] and no other thread can see it. `lo..hi` must be
    /// the stack that the g runs on, with `lo <= guard <= hi`: the runtime builds the g's first
    /// frame below `hi`, and the overflow handler and dumps treat the range as the g's stack.
    #[inline]
    pub unsafe fn set_stack(&self, lo: usize, hi: usize, guard: usize) {
        debug_assert!(lo <= guard && guard <= hi, "stack bounds out of order");
        self.stack_lo.store(lo, Ordering::Relaxed);
        self.stack_hi.store(hi, Ordering::Relaxed);
        self.stack_guard.store(guard, Ordering::Relaxed);
    }

    // The accessors that the syscall fast path calls are `#[inline]`: without LTO, a call
    // into another crate is never inlined otherwise, and each would cost a call per syscall.

    /// Current status of the g.
    #[inline]
    pub fn status(&self) -> GStatus {
        GStatus::from_u32(self.status.load(Ordering::Acquire))
    }

    #[inline]
    pub(crate) fn status_word(&self) -> &AtomicU32 {
        &self.status
    }

    /// Why the g waits; meaningful while its status is [`GStatus::Waiting`].
    #[inline]
    pub fn wait_reason(&self) -> WaitReason {
        WaitReason::from_u32(self.wait_reason.load(Ordering::Relaxed))
    }

    /// Records why the g is about to wait. The runtime writes it on the g itself, right before
    /// the g parks.
    ///
    /// Safe because the field is diagnostic only: goro's dumps, traces and deadlock reports
    /// print it, no scheduling decision in goro reads it, and [`WaitReason::from_u32`] decodes
    /// any value. A stray call can only mislabel the g in those reports.
    #[inline]
    pub fn set_wait_reason(&self, reason: WaitReason) {
        self.wait_reason.store(reason as u32, Ordering::Relaxed);
    }

    /// Goroutine id; unique within a process, never 0 for a spawned g.
    #[inline]
    pub fn goid(&self) -> u64 {
        self.goid.load(Ordering::Relaxed)
    }

    /// Assigns the goroutine id.
    ///
    /// # Safety
    ///
    /// The caller must own the g, as the runtime does before it publishes the g: the g is
    /// [`GStatus::Idle`], no other thread can see it, and nothing has filed it by its id yet.
    /// The id must then stay the same until the g's block is freed, because the runtime's
    /// goroutine registry picks a g's list and lock from its id both when it adds the g and
    /// when it removes it. A runtime also gives each g an id that is unique in the process, as
    /// [`goid`](Self::goid) promises.
    #[inline]
    pub unsafe fn set_goid(&self, goid: u64) {
        self.goid.store(goid, Ordering::Relaxed);
    }

    /// The scheduler that makes every decision for this g.
    #[inline]
    pub fn sched(&self) -> SchedLink {
        let data = self.sched_data.load(Ordering::Relaxed) as *const ();
        let vtable = self.sched_vtable.load(Ordering::Relaxed) as *const SchedVTable;
        // SAFETY: both words are null from `new`, or were stored together by `set_sched` from
        // a `SchedLink`, whose contract they keep. `set_sched`'s contract rules out a reader
        // that sees one word from each.
        unsafe { SchedLink::from_raw_parts(data, vtable) }
    }

    /// Links the g to its scheduler. The queue that first publishes the g orders the link for
    /// other threads.
    ///
    /// # Safety
    ///
    /// The caller must own the g, as the runtime does before it publishes the g: the g is
    /// [`GStatus::Idle`] and no other thread can see it, because the link's two words are
    /// stored one after the other. The runtime that runs the g must keep the scheduler behind
    /// `link` alive until the g's block is freed, because it calls that scheduler through the
    /// link at every decision point of the g.
    #[inline]
    pub unsafe fn set_sched(&self, link: SchedLink) {
        let (data, vtable) = link.into_raw_parts();
        self.sched_data.store(data as *mut (), Ordering::Relaxed);
        self.sched_vtable
            .store(vtable as *mut SchedVTable, Ordering::Relaxed);
    }

    /// Stack pointer saved at syscall entry, or 0 outside a syscall.
    #[inline]
    pub fn syscall_sp(&self) -> usize {
        // Acquire pairs with the Release store in `set_syscall_frame`, so a monitor or dump
        // that sees a non-zero sp also sees the matching pc.
        self.syscall_sp.load(Ordering::Acquire)
    }

    /// Program counter saved at syscall entry, or 0 outside a syscall.
    #[inline]
    pub fn syscall_pc(&self) -> usize {
        self.syscall_pc.load(Ordering::Relaxed)
    }

    /// Records (or, with zeros, clears) the frame of the syscall the g is entering. The runtime
    /// writes it on the g itself at entersyscall and exitsyscall, and other threads read it
    /// while the g's status is [`GStatus::Syscall`].
    ///
    /// Safe because the frame is diagnostic only: goro's dumps compute how much stack the g
    /// uses from `sp` after checking that it lies within the g's stack, and nothing
    /// dereferences either value. A stray call can only make that report wrong, so other
    /// readers (debuggers, C code) must also treat the frame as a hint.
    #[inline]
    pub fn set_syscall_frame(&self, sp: usize, pc: usize) {
        self.syscall_pc.store(pc, Ordering::Relaxed);
        // Release: publishes the pc above to readers that acquire the sp.
        self.syscall_sp.store(sp, Ordering::Release);
    }

    /// The concrete type of the block this header starts, or null when not stamped.
    #[inline]
    pub fn gtype(&self) -> *const GType {
        self.gtype.load(Ordering::Relaxed)
    }

    /// Stamps the concrete type of the block.
    ///
    /// # Safety
    ///
    /// The header must be the first field of a live block of the type whose
    /// [`CustomG::gtype`] returns `gtype`, because [`CustomG::from_header`] casts a header
    /// stamped with a type's tag to that type. The runtime stamps a g at spawn, while the g is
    /// [`GStatus::Idle`] and no other thread can see it.
    #[inline]
    pub unsafe fn set_gtype(&self, gtype: &'static GType) {
        self.gtype
            .store(gtype as *const GType as *mut GType, Ordering::Relaxed);
    }

    /// The M running the g, as the runtime's own type; null while the g does not run.
    #[inline]
    pub fn m(&self) -> *mut () {
        self.m.load(Ordering::Relaxed)
    }

    /// Records the M that is about to run the g, or null when the g stops.
    ///
    /// # Safety
    ///
    /// Only the runtime may call it, on the M that is about to run the g (or that has just
    /// stopped it), with a pointer to that M or null. The runtime reads the field back as a
    /// pointer to its own M type, for example to find the M of the running g, and
    /// dereferences it.
    #[inline]
    pub unsafe fn set_m(&self, m: *mut ()) {
        self.m.store(m, Ordering::Relaxed);
    }

    /// Returns the intrusive link for the queues of the g's scheduler.
    ///
    /// # Safety
    ///
    /// The caller is the g's scheduler, and it uses the link only while it owns the g: from
    /// the hook that handed it the g until it returns the g from `next`. Whatever it stores
    /// must be null or the header of a g that its queue holds, because the queue follows the
    /// link to the next g.
    #[inline]
    pub unsafe fn sched_next(&self) -> &AtomicPtr<GHeader> {
        &self.sched_next
    }

    /// A word the g's scheduler may use freely (a priority, a P affinity, a deadline).
    ///
    /// A scheduler that prefers a P for a g must still let any P take the g. A g that only one
    /// P can reach does not run while that P has no M, and the runtime can livelock waiting
    /// for it.
    #[inline]
    pub fn sched_word(&self) -> &AtomicU64 {
        &self.sched_word
    }

    /// The runtime's private per-g record.
    #[inline]
    pub fn runtime(&self) -> *mut () {
        self.runtime.load(Ordering::Relaxed)
    }

    /// Points the header at the runtime's private record.
    ///
    /// # Safety
    ///
    /// Only the runtime that allocated the g may call it, while the g is [`GStatus::Idle`] and
    /// no other thread can see it, with a pointer to its record for this g. The record must
    /// stay alive until the g's block is freed: the runtime casts the field back to its record
    /// type and dereferences it whenever it handles the g.
    #[inline]
    pub unsafe fn set_runtime(&self, record: *mut ()) {
        self.runtime.store(record, Ordering::Relaxed);
    }

    /// Returns this header as the custom type `G`, or `None` when the block is of another type.
    #[inline]
    pub fn downcast<G: CustomG>(&self) -> Option<&G> {
        G::from_header(self)
    }
}

impl Default for GHeader {
    fn default() -> Self {
        GHeader::new()
    }
}

impl fmt::Debug for GHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GHeader")
            .field("goid", &self.goid())
            .field("status", &self.status())
            .field("wait_reason", &self.wait_reason())
            .field(
                "stack",
                &format_args!("{:#x}..{:#x}", self.stack_lo(), self.stack_hi()),
            )
            .finish_non_exhaustive()
    }
}

/// A reference to a live g, as schedulers and queues hold it.
///
/// A `GRef` is a pointer that the runtime vouches for: the g's block stays allocated until the
/// runtime's call to its scheduler's `on_exit` for that g returns, and the runtime frees it
/// after that. A scheduler must not keep or use a `GRef` to the g, or any copy of it, once its
/// `on_exit` has returned.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
#[repr(transparent)]
pub struct GRef(NonNull<GHeader>);

// SAFETY: a GRef only gives shared access to a `Sync` header.
unsafe impl Send for GRef {}
// SAFETY: as above.
unsafe impl Sync for GRef {}

impl GRef {
    /// Wraps a pointer to a g header.
    ///
    /// # Safety
    ///
    /// `g` must point to a live [`GHeader`] that stays allocated for as long as this `GRef` or
    /// any copy of it is used.
    #[inline]
    pub unsafe fn from_raw(g: NonNull<GHeader>) -> GRef {
        GRef(g)
    }

    /// The raw pointer to the header.
    #[inline]
    pub fn as_ptr(self) -> *mut GHeader {
        self.0.as_ptr()
    }

    /// The header this reference points to.
    #[inline]
    pub fn header(&self) -> &GHeader {
        // SAFETY: `from_raw`'s contract keeps the header alive while the GRef is used.
        unsafe { self.0.as_ref() }
    }

    /// The g as the custom type `G`, or `None` when it is of another type.
    #[inline]
    pub fn downcast<G: CustomG>(&self) -> Option<&G> {
        G::from_header(self.header())
    }
}

impl fmt::Debug for GRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "g{}", self.header().goid())
    }
}
