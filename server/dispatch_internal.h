/* dispatch_internal -- state shared by the dispatch modules (dispatch.c,
 * dispatch_admin.c, dispatch_state.c, dispatch_jobs.c). Not a public
 * header: everything else uses dispatch.h. */
#ifndef SS_DISPATCH_INTERNAL_H
#define SS_DISPATCH_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>

#include "barrier.h"
#include "conn.h"
#include "dispatch.h"

/* One slot of the handler table. */
typedef struct ss_dispatch_slot {
    ss_handler_fn fn; /* NULL = UNIMPLEMENTED */
    void *ctx;        /* handed to fn */
} ss_dispatch_slot;

struct ss_dispatch {
    ss_server *srv;                        /* the server core (borrowed) */
    ss_dispatch_slot slots[SS_DISPATCH_SLOTS]; /* by Request body case */
    uint64_t parked;                       /* parkable requests unanswered
                                              (--max-parked-total) */
    ss_barrier *barrier;                   /* parked Fetch waits (owned) */
    int barrier_sub;                       /* its commit subscription, or -1 */
    struct ss_pending_decl *pending_decls; /* Declares not yet committed
                                              (dispatch_state.c) */
    struct ss_shard *cluster;            /* topology and frozen slots
                                              (borrowed; dispatch_cluster.c) */
    struct ss_dispatch_cluster *cl;        /* slot RPC state (owned;
                                              dispatch_cluster.c) */
};

/* The dispatcher a request belongs to / the connection it arrived on. */
ss_dispatch *ss_request_dispatch(const ss_request *req);
ss_conn *ss_request_conn(const ss_request *req);

/* Register the built-in handlers (dispatch_admin.c, dispatch_state.c) and
 * the job queue's (dispatch_jobs.c: also its server module). */
void ss_dispatch_admin_register(ss_dispatch *d);
/* Topology and the slot RPCs (dispatch_cluster.c). */
void ss_dispatch_cluster_register(ss_dispatch *d);
/* Before a handler runs: answer req with MOVED (a key of a slot another
 * shard owns) or UNAVAILABLE (a write to a frozen slot) and return true;
 * false = go on. Only called when d->cluster is set. */
bool ss_dispatch_cluster_check(ss_dispatch *d, ss_request *req);
/* Free the slot RPC state (ss_dispatch_free). */
void ss_dispatch_cluster_free(ss_dispatch *d);
/* The job queue, for the slot RPCs (dispatch_jobs.c); NULL once closed. */
struct ss_jobs *ss_dispatch_jobs(ss_dispatch *d);
/* Answer with code MOVED carrying redirect (borrowed). Releases req. */
void ss_request_moved(ss_request *req, Statesaver__V1__Redirect *redirect,
                      const char *fmt, ...) __attribute__((format(printf, 3, 4)));
void ss_dispatch_state_register(ss_dispatch *d);
int ss_dispatch_jobs_init(ss_dispatch *d);

#endif
