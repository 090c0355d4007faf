/*
 * Reports the C compiler's view of the header layout in include/goro/g.h, so
 * that a Rust test can compare every sizeof and offsetof with the constants of
 * goro_abi::offsets on each target.
 */
#include <goro/g.h>

#define GORO_LAYOUT_FIELDS 19

size_t goro_abi_c_layout(size_t *out, size_t capacity) {
    const size_t values[GORO_LAYOUT_FIELDS] = {
        sizeof(goro_g_header),
        _Alignof(goro_g_header),
        offsetof(goro_g_header, sched_sp),
        offsetof(goro_g_header, stack_lo),
        offsetof(goro_g_header, stack_hi),
        offsetof(goro_g_header, stack_guard),
        offsetof(goro_g_header, status),
        offsetof(goro_g_header, wait_reason),
        offsetof(goro_g_header, goid),
        offsetof(goro_g_header, sched_data),
        offsetof(goro_g_header, sched_vtable),
        offsetof(goro_g_header, syscall_sp),
        offsetof(goro_g_header, syscall_pc),
        offsetof(goro_g_header, gtype),
        offsetof(goro_g_header, m),
        offsetof(goro_g_header, sched_next),
        offsetof(goro_g_header, runtime),
        offsetof(goro_g_header, sched_word),
        offsetof(goro_g_header, reserved),
    };
    size_t n = capacity < GORO_LAYOUT_FIELDS ? capacity : GORO_LAYOUT_FIELDS;
    for (size_t i = 0; i < n; i++) {
        out[i] = values[i];
    }
    return GORO_LAYOUT_FIELDS;
}

unsigned goro_abi_c_version(void) { return GORO_ABI_VERSION; }
