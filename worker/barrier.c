/* barrier -- spin-then-futex barrier (see barrier.h). */
#include "barrier.h"

#include <immintrin.h>
#include <limits.h>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

void ss_barrier_init(ss_barrier *b, int n)
{
    b->n = n;
    atomic_init(&b->count, 0);
    atomic_init(&b->gen, 0);
    atomic_init(&b->sleepers, 0);
}

void ss_barrier_wait(ss_barrier *b)
{
    ss_barrier_wait_as(b, 1);
}

void ss_barrier_wait_as(ss_barrier *b, int k)
{
    if (b->n <= 1)
        return;
    unsigned g = atomic_load(&b->gen);
    if (atomic_fetch_add(&b->count, k) == b->n - k) {
        /* Last one in: reset for the next generation, then release. */
        atomic_store(&b->count, 0);
        atomic_fetch_add(&b->gen, 1);
        if (atomic_load(&b->sleepers) > 0)
            syscall(SYS_futex, (unsigned *)&b->gen, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
        return;
    }
    for (int i = 0; i < SS_BARRIER_SPIN; i++) {
        if (atomic_load_explicit(&b->gen, memory_order_acquire) != g)
            return;
        _mm_pause();
    }
    /* seq_cst: either the releaser sees sleepers > 0, or FUTEX_WAIT sees
     * the new generation and returns at once. */
    atomic_fetch_add(&b->sleepers, 1);
    while (atomic_load(&b->gen) == g)
        syscall(SYS_futex, (unsigned *)&b->gen, FUTEX_WAIT_PRIVATE, g, NULL, NULL, 0);
    atomic_fetch_sub(&b->sleepers, 1);
}
