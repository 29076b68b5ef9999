/* ss_backoff -- bounded exponential backoff with jitter (see ss_backoff.h). */
#include "ss_backoff.h"

#include <time.h>
#include <unistd.h>

void ss_backoff_init(ss_backoff *b, uint32_t min_ms, uint32_t max_ms, uint64_t seed)
{
    if (min_ms < 1)
        min_ms = 1;
    if (max_ms < min_ms)
        max_ms = min_ms;
    b->min_ms = min_ms;
    b->max_ms = max_ms;
    b->cur_ms = min_ms;
    if (seed == 0) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        seed = ((uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec) ^
               ((uint64_t)getpid() << 32);
    }
    b->rng = seed ? seed : 0x9E3779B97F4A7C15ull;
}

static uint64_t xorshift64(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *s = x;
    return x;
}

uint32_t ss_backoff_next(ss_backoff *b)
{
    uint32_t nominal = b->cur_ms;
    uint32_t span = (uint32_t)((uint64_t)nominal * SS_BACKOFF_JITTER_PCT / 100u);
    uint32_t wait = nominal - span;
    if (span > 0)
        wait += (uint32_t)(xorshift64(&b->rng) % ((uint64_t)span + 1));
    b->cur_ms = nominal > b->max_ms / 2 ? b->max_ms : nominal * 2;
    return wait;
}

uint32_t ss_backoff_current(const ss_backoff *b)
{
    return b->cur_ms;
}

void ss_backoff_reset(ss_backoff *b)
{
    b->cur_ms = b->min_ms;
}
