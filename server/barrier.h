/* barrier -- requests parked until sequences reach a segment.
 *
 * A parked request waits on a set of (saver, key) pairs. When a save of
 * any of those keys commits, ss_barrier_notify() asks the request's
 * `ready` callback whether it can proceed; if so (or when its timer
 * expires, the caller cancels it because its connection closed, or the
 * server shuts down) the waiter is removed and `wake` answers the request.
 * Waiters are indexed by saver+key in a hash table, so a commit only looks
 * at the waiters of its own keys.
 *
 * The barrier knows nothing of requests or connections: `req` is only
 * handed back to the callbacks. The caller feeds it commits (it subscribes
 * ss_barrier_notify to the commit events) and cancels a waiter whose
 * client went away.
 *
 * Loop thread only.
 */
#ifndef SS_BARRIER_H
#define SS_BARRIER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "store.h"

typedef struct ss_barrier ss_barrier; /* opaque */
typedef struct ss_barrier_waiter ss_barrier_waiter; /* one parked request */
typedef struct ss_request ss_request; /* opaque here (dispatch.h) */

typedef enum ss_barrier_event {
    SS_BARRIER_READY = 0,    /* ready() said yes after a commit */
    SS_BARRIER_TIMEOUT = 1,  /* the wait expired */
    SS_BARRIER_CLOSED = 2,   /* cancelled: the connection closed */
    SS_BARRIER_SHUTDOWN = 3, /* the server is shutting down */
} ss_barrier_event;

/* May the request proceed now? Must not answer req. */
typedef bool (*ss_barrier_ready_fn)(ss_request *req, void *arg);
/* The waiter is gone; answer req now (it is no longer parked). */
typedef void (*ss_barrier_wake_fn)(ss_request *req, ss_barrier_event ev,
                                   void *arg);

/* Waiters' timers run on loop. */
int ss_barrier_new(ss_barrier **out, uv_loop_t *loop);
/* All waiters must be gone (ss_barrier_shutdown) and their timers closed
 * (the loop ran once more). Accepts NULL. */
void ss_barrier_free(ss_barrier *b);

/* Park req on n keys of saver for at most timeout_ms. saver and keys must
 * stay valid while parked (they normally point into req's message).
 * Returns 0 with the waiter in *out (valid until wake is called), or a
 * negative code (nothing parked; req not answered). */
int ss_barrier_park(ss_barrier *b, ss_request *req, const char *saver,
                    size_t n, const ss_bytes *keys, uint64_t timeout_ms,
                    ss_barrier_ready_fn ready, ss_barrier_wake_fn wake,
                    void *arg, ss_barrier_waiter **out);

/* Wake w now with SS_BARRIER_CLOSED (its client went away). */
void ss_barrier_cancel(ss_barrier_waiter *w);

/* Keys of saver committed: re-check their waiters. */
void ss_barrier_notify(ss_barrier *b, const char *saver, size_t n,
                       const ss_bytes *keys);

/* Wake every waiter with SS_BARRIER_SHUTDOWN. */
void ss_barrier_shutdown(ss_barrier *b);

/* Waiters parked now. */
size_t ss_barrier_count(const ss_barrier *b);

#endif
