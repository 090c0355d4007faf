/*
 * The g register: one thread-local slot per OS thread holding the running g.
 *
 * Rust has no way to reserve a machine register, and LLVM treats the thread
 * pointer as constant for the duration of a function, so a TLS address read
 * before a context switch may be reused after the goroutine has resumed on
 * another OS thread. Keeping the slot behind these out-of-line C functions
 * makes every getg() a real call that recomputes the address from the current
 * thread pointer. Rust's LTO does not inline across the language boundary.
 */
#include <goro/g.h>

static __thread goro_g_header *goro_current_g;

__attribute__((noinline)) goro_g_header *goro_getg(void) {
    return goro_current_g;
}

__attribute__((noinline)) void goro_setg(goro_g_header *g) {
    goro_current_g = g;
}
