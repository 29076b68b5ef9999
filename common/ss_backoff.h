/* ss_backoff -- bounded exponential backoff with jitter, for the retry
 * loops of the programs that talk to a server (reconnects, refusals such
 * as RESOURCE_EXHAUSTED or UNAVAILABLE).
 *
 * The nominal wait starts at min_ms and doubles after each wait up to
 * max_ms. The wait handed out is jittered into [nominal / 2, nominal]
 * ("equal jitter"), so many clients refused at the same moment do not
 * come back in lockstep, and it is never below min_ms / 2 nor above max_ms.
 * Not thread-safe: one ss_backoff per loop.
 */
#ifndef SS_BACKOFF_H
#define SS_BACKOFF_H

#include <stdint.h>

/* Percentage of the nominal wait that is randomised (the rest is fixed). */
#define SS_BACKOFF_JITTER_PCT 50u

typedef struct ss_backoff {
    uint32_t min_ms;  /* first nominal wait (>= 1) */
    uint32_t max_ms;  /* longest nominal wait (>= min_ms) */
    uint32_t cur_ms;  /* nominal wait of the next ss_backoff_next */
    uint64_t rng;     /* xorshift64 state for the jitter (never 0) */
} ss_backoff;

/* Start at min_ms (raised to 1) with a ceiling of max_ms (raised to
 * min_ms); seed 0 picks one from the clock and the process id. */
void ss_backoff_init(ss_backoff *b, uint32_t min_ms, uint32_t max_ms, uint64_t seed);

/* The wait to do now (ms, jittered), and double the nominal wait for the
 * next call (up to max_ms). */
uint32_t ss_backoff_next(ss_backoff *b);

/* The nominal wait the next ss_backoff_next starts from (ms). */
uint32_t ss_backoff_current(const ss_backoff *b);

/* Back to min_ms (after a success). */
void ss_backoff_reset(ss_backoff *b);

#endif
