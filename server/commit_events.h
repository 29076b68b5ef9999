/* commit_events -- the "keys committed" event: a small subscription list.
 *
 * Whatever completes a write that moved sequences (a Save, a Drop, a
 * job Complete) publishes one event per committed group of keys of one
 * saver, after the commit; whoever caches or waits on those keys (the
 * Fetch barrier, the job queue) subscribes. The publisher may name its own
 * subscription to be skipped, so a module that publishes what it already
 * knows does not hear it back.
 *
 * Loop thread only. Subscribers are called in subscription order, with
 * borrowed arguments, and must not subscribe or unsubscribe from inside
 * the call.
 */
#ifndef SS_COMMIT_EVENTS_H
#define SS_COMMIT_EVENTS_H

#include <stddef.h>

#include "store.h"

/* Most subscribers at once. */
#define SS_COMMIT_SUBSCRIBERS_MAX 8

typedef struct ss_commit_events ss_commit_events; /* opaque */

/* Keys of saver were committed (their next_segment may have moved). */
typedef void (*ss_commit_fn)(void *arg, const char *saver, size_t n,
                             const ss_bytes *keys);

int ss_commit_events_new(ss_commit_events **out);
void ss_commit_events_free(ss_commit_events *e); /* accepts NULL */

/* Returns a subscription id (>= 0), or SS_ERR_FULL. */
int ss_commit_events_subscribe(ss_commit_events *e, ss_commit_fn fn,
                               void *arg);
/* Forget subscription id (ignores an unknown one). */
void ss_commit_events_unsubscribe(ss_commit_events *e, int id);

/* Call every subscriber but skip (a subscription id, or -1 for none). */
void ss_commit_events_publish(ss_commit_events *e, int skip,
                              const char *saver, size_t n,
                              const ss_bytes *keys);

#endif
