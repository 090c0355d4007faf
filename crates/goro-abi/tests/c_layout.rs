//! The C header `include/goro/g.h` describes the same layout as `GHeader`: every `sizeof` and
//! `offsetof` that a C compiler computes for the target equals the Rust constant.

use goro_abi::{ABI_VERSION, G_HEADER_SIZE, offsets};

unsafe extern "C" {
    // From src/layout_check.c, compiled with the target's C compiler by build.rs.
    fn goro_abi_c_layout(out: *mut usize, capacity: usize) -> usize;
    fn goro_abi_c_version() -> u32;
}

#[test]
fn c_header_matches_rust_layout() {
    let mut c = [0usize; 32];
    // SAFETY: the function writes at most `capacity` entries into the buffer.
    let count = unsafe { goro_abi_c_layout(c.as_mut_ptr(), c.len()) };
    let rust = [
        ("sizeof", G_HEADER_SIZE),
        ("alignof", std::mem::align_of::<goro_abi::GHeader>()),
        ("sched_sp", offsets::SCHED_SP),
        ("stack_lo", offsets::STACK_LO),
        ("stack_hi", offsets::STACK_HI),
        ("stack_guard", offsets::STACK_GUARD),
        ("status", offsets::STATUS),
        ("wait_reason", offsets::WAIT_REASON),
        ("goid", offsets::GOID),
        ("sched_data", offsets::SCHED_DATA),
        ("sched_vtable", offsets::SCHED_VTABLE),
        ("syscall_sp", offsets::SYSCALL_SP),
        ("syscall_pc", offsets::SYSCALL_PC),
        ("gtype", offsets::GTYPE),
        ("m", offsets::M),
        ("sched_next", offsets::SCHED_NEXT),
        ("runtime", offsets::RUNTIME),
        ("sched_word", offsets::SCHED_WORD),
        ("reserved", offsets::RESERVED),
    ];
    assert_eq!(
        count,
        rust.len(),
        "the C check reports a different number of fields"
    );
    for (i, (field, expected)) in rust.iter().enumerate() {
        assert_eq!(c[i], *expected, "C and Rust disagree on {field}");
    }
}

#[test]
fn c_header_has_the_same_abi_version() {
    // SAFETY: a pure function without arguments.
    assert_eq!(unsafe { goro_abi_c_version() }, ABI_VERSION);
}
