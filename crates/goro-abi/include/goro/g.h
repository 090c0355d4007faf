/*
 * goro/g.h: the goroutine header (GHeader) as C sees it.
 *
 * This layout is frozen at GORO_ABI_VERSION; docs/abi.md documents each field,
 * who may write it and when. A test in goro-abi checks every sizeof and
 * offsetof below against the Rust definition on each supported target.
 */
#ifndef GORO_G_H
#define GORO_G_H

#include <stddef.h>
#include <stdint.h>

#define GORO_ABI_VERSION 1
#define GORO_G_HEADER_SIZE 128

enum goro_gstatus {
    GORO_G_IDLE = 0,
    GORO_G_RUNNABLE = 1,
    GORO_G_RUNNING = 2,
    GORO_G_SYSCALL = 3,
    GORO_G_WAITING = 4,
    GORO_G_DEAD = 5,
};

struct goro_sched_vtable;
struct goro_gtype;

typedef struct goro_g_header {
    uintptr_t sched_sp;      /* saved stack pointer of a suspended g */
    uintptr_t stack_lo;      /* lowest usable stack address */
    uintptr_t stack_hi;      /* one past the highest stack address */
    uintptr_t stack_guard;   /* overflow threshold */
    uint32_t status;         /* enum goro_gstatus, atomic */
    uint32_t wait_reason;    /* why a waiting g waits */
    uint64_t goid;           /* goroutine id */
    const void *sched_data;  /* scheduler link: data pointer */
    const struct goro_sched_vtable *sched_vtable; /* scheduler link: vtable */
    uintptr_t syscall_sp;    /* stack pointer at syscall entry, 0 outside */
    uintptr_t syscall_pc;    /* program counter at syscall entry */
    const struct goro_gtype *gtype; /* concrete type tag */
    void *m;                 /* M running the g */
    struct goro_g_header *sched_next; /* scheduler's intrusive link */
    void *runtime;           /* runtime's private record */
    uint64_t sched_word;     /* free for the g's scheduler */
    uint64_t reserved;       /* zero */
} goro_g_header;

goro_g_header *goro_getg(void);
void goro_setg(goro_g_header *g);

#endif /* GORO_G_H */
