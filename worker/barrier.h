/* barrier -- a reusable thread barrier for the unroll's step loop.
 *
 * Arriving threads spin on a generation counter for a bounded number of
 * iterations (a step of a small RNN takes microseconds, so the partner
 * usually arrives while we spin), then sleep on a Linux futex, so a thread
 * whose partner was descheduled by another process does not burn its core.
 * No mutex is taken. The last thread to arrive releases the others and
 * wakes sleepers only if some went to sleep.
 *
 * Not a cancellation point; every one of the n threads must call
 * ss_barrier_wait the same number of times. The struct is owned by the
 * caller (embedded, no allocation).
 */
#ifndef SS_BARRIER_H
#define SS_BARRIER_H

#include <stdatomic.h>

/* Spin iterations (each one pause instruction) before sleeping. */
#define SS_BARRIER_SPIN 20000

typedef struct ss_barrier {
    int n;                  /* threads that meet at the barrier */
    atomic_int count;       /* threads arrived in the current generation */
    atomic_uint gen;        /* generation; the futex word */
    atomic_int sleepers;    /* threads sleeping (or about to) on gen */
} ss_barrier;

/* Set up for n >= 1 threads (no resources to release). */
void ss_barrier_init(ss_barrier *b, int n);
/* Block until all n threads have called it for this generation. */
void ss_barrier_wait(ss_barrier *b);
/* The same, arriving on behalf of k threads at once (1 <= k <= n): lets
 * a thread stand in for threads that never started. */
void ss_barrier_wait_as(ss_barrier *b, int k);

#endif
