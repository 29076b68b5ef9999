/* commit_events -- the "keys committed" event: a small subscription list. */
#include "commit_events.h"

#include <stdlib.h>

#include "ss_error.h"

typedef struct sub {
    ss_commit_fn fn; /* NULL = free slot */
    void *arg;       /* passed to fn */
} sub;

struct ss_commit_events {
    sub subs[SS_COMMIT_SUBSCRIBERS_MAX]; /* by subscription id */
};

int ss_commit_events_new(ss_commit_events **out)
{
    *out = calloc(1, sizeof **out);
    return *out ? 0 : SS_ERR_NOMEM;
}

void ss_commit_events_free(ss_commit_events *e)
{
    free(e);
}

int ss_commit_events_subscribe(ss_commit_events *e, ss_commit_fn fn,
                               void *arg)
{
    for (int i = 0; i < SS_COMMIT_SUBSCRIBERS_MAX; i++)
        if (!e->subs[i].fn) {
            e->subs[i].fn = fn;
            e->subs[i].arg = arg;
            return i;
        }
    return SS_ERR_FULL;
}

void ss_commit_events_unsubscribe(ss_commit_events *e, int id)
{
    if (e && id >= 0 && id < SS_COMMIT_SUBSCRIBERS_MAX)
        e->subs[id].fn = NULL;
}

void ss_commit_events_publish(ss_commit_events *e, int skip,
                              const char *saver, size_t n,
                              const ss_bytes *keys)
{
    for (int i = 0; i < SS_COMMIT_SUBSCRIBERS_MAX; i++)
        if (e->subs[i].fn && i != skip)
            e->subs[i].fn(e->subs[i].arg, saver, n, keys);
}
