/* server -- the statesaver-server process: loop, listener, lifecycle.
 *
 * One libuv loop thread does all network I/O, decoding, dispatch and
 * replies; LMDB writes go through the writer thread (writer.h), reads run
 * on the loop thread in short read transactions.
 *
 * Lifecycle: ss_server_create() opens the store and starts the writer; the
 * request layer (dispatch.h) then installs its handlers, connection
 * events and modules; ss_server_start() binds and listens;
 * ss_server_run() runs the loop until a graceful shutdown
 * (SIGINT/SIGTERM or ss_server_shutdown()) has finished: stop accepting,
 * answer parked requests (modules' shutdown hooks), wait for requests in
 * flight (writes committed and replied), flush and close connections, stop
 * the writer, close the store. ss_server_free() then releases the rest.
 *
 * Other modules (the request layer, the job queue) plug in through
 * ss_module hooks, the connection events and the commit events; the core
 * never calls them by name.
 */
#ifndef SS_SERVER_H
#define SS_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "commit_events.h"
#include "config.h"
#include "conn.h"
#include "statesaver.pb-c.h"
#include "store.h"
#include "writer.h"

typedef struct ss_server ss_server; /* opaque */

/* Hooks of a module living inside the server. Every hook is optional
 * (NULL) and runs on the loop thread. */
typedef struct ss_module {
    const char *name; /* for logs; static string */
    void *arg;        /* passed to every hook */
    /* Graceful shutdown began: stop timers and answer every parked
     * request (e.g. UNAVAILABLE) so the server can drain. Called once. */
    void (*shutdown)(void *arg);
    /* Fill this module's counters in a Stats reply (saver may be ""). */
    void (*stats)(void *arg, const char *saver,
                  Statesaver__V1__StatsResponse *out);
    /* The loop has ended and the store is about to close: free. */
    void (*free)(void *arg);
} ss_module;

/* Maximum number of modules. */
#define SS_SERVER_MODULES_MAX 8

/* Open the store and start the writer. cfg is copied (strings included).
 * Returns 0 or a negative code with a logged reason (then ss_server_free). */
int ss_server_create(ss_server **out, const ss_config *cfg);
/* Bind and listen, start signals, timers and metrics. Returns 0 or a
 * negative code with a logged reason. */
int ss_server_start(ss_server *srv);
/* Run the loop until the server has shut down. Returns 0 or a negative
 * code. */
int ss_server_run(ss_server *srv);
/* Begin a graceful shutdown (loop thread). Idempotent. */
void ss_server_shutdown(ss_server *srv);
/* Free after ss_server_run returned, or after a failed start. Accepts NULL. */
void ss_server_free(ss_server *srv);

/* The port actually bound (after ss_server_create). */
int ss_server_port(const ss_server *srv);

/* ---- for handlers and modules ---- */

uv_loop_t *ss_server_loop(ss_server *srv);
ss_store *ss_server_store(ss_server *srv);
ss_writer *ss_server_writer(ss_server *srv);
const ss_config *ss_server_config(const ss_server *srv);
bool ss_server_shutting_down(const ss_server *srv);
/* Wall clock in ms since the epoch. */
uint64_t ss_server_now_ms(void);

/* Add a module (copied). Returns SS_ERR_FULL past SS_SERVER_MODULES_MAX. */
int ss_server_add_module(ss_server *srv, const ss_module *m);
/* Run every module's stats hook on out (saver may be ""). */
void ss_server_module_stats(ss_server *srv, const char *saver,
                            Statesaver__V1__StatsResponse *out);

/* The "keys committed" event (commit_events.h): writers' completion code
 * publishes, the barrier and the job queue subscribe. */
ss_commit_events *ss_server_commits(ss_server *srv);

/* Install the request layer's connection events (frame, error, closed);
 * the server keeps its own `refused` hook. Before ss_server_start. */
void ss_server_set_conn_events(ss_server *srv, const ss_conn_events *ev);

/* A request was answered; during shutdown the last one starts draining. */
void ss_server_request_done(ss_server *srv);

/* Counters (loop thread). */
typedef struct ss_server_counters {
    uint64_t requests;    /* requests decoded */
    uint64_t rejected;    /* refused for limits, auth or protocol */
    uint64_t inflight;    /* requests not answered yet */
    uint64_t start_ms;    /* wall clock at start */
    uint64_t evicted;     /* sequences evicted by idle TTL since start */
    uint64_t saves_applied; /* per-key CAS saves applied by Save since start */
} ss_server_counters;
ss_server_counters *ss_server_counters_get(ss_server *srv);
/* Client connections open now / admitted since start. */
uint64_t ss_server_connections(const ss_server *srv);
uint64_t ss_server_accepted(const ss_server *srv);

#endif
