/* server_internal -- state shared by the server's own modules.
 *
 * Not a public header: only server.c, conn.c, dispatch*.c and barrier.c
 * include it. Other modules use server.h and dispatch.h.
 */
#ifndef SS_SERVER_INTERNAL_H
#define SS_SERVER_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "barrier.h"
#include "conn.h"
#include "dispatch.h"
#include "server.h"

struct ss_server {
    ss_config cfg;                 /* copy of the configuration (owned) */
    uv_loop_t loop;                /* the one event loop */
    bool loop_ready;               /* loop initialised (needs uv_loop_close) */
    uv_tcp_t listener;             /* listening socket */
    bool listening;                /* listener open (needs uv_close) */
    uv_signal_t sigint;            /* SIGINT: graceful shutdown */
    uv_signal_t sigterm;           /* SIGTERM: graceful shutdown */
    uv_timer_t ttl_timer;          /* idle sequence eviction */
    bool evicting;                 /* an eviction op is in the writer */
    uv_timer_t sweep_timer;        /* idle connection sweep */
    uv_timer_t drain_timer;        /* shutdown steps, off the callback stack */
    uv_timer_t grace_timer;        /* force-close at shutdown after a grace */
    bool handles_ready;            /* the handles above are initialised */
    ss_store *store;               /* LMDB store (owned) */
    ss_writer *writer;             /* writer thread (owned until stopped) */
    bool writer_stopping;          /* ss_writer_stop called */
    ss_conn_set *conns;            /* client connections (owned) */
    ss_barrier *barrier;           /* parked Fetch waits */
    uint64_t parked;               /* parkable requests unanswered
                                      (--max-parked-total; dispatch.c) */
    struct ss_pending_decl *pending_decls; /* Declares not yet committed */
    ss_handler_fn handlers[SS_DISPATCH_SLOTS]; /* by Request body case */
    ss_module modules[SS_SERVER_MODULES_MAX];  /* plugged-in modules */
    size_t n_modules;              /* modules in use */
    ss_server_counters counters;   /* Stats counters */
    int port;                      /* bound port */
    bool shutting_down;            /* graceful shutdown began */
    bool draining_done;            /* connections were told to close */
    bool finished;                 /* store closed, handles closing */
    int exit_rc;                   /* result of ss_server_run */
    struct ss_srv_metrics *metrics; /* --metrics-listen state, or NULL
                                       (server_metrics.c) */
};

/* ---- dispatch.c ---- */

/* Decode one frame's payload and dispatch it. Returns 0, or SS_ERR_PROTO
 * when the frame was malformed (an error reply is queued and the
 * connection will close after it). */
int ss_dispatch_frame(ss_server *srv, ss_conn *c, const uint8_t *payload,
                      size_t len);

/* Fill the frame, error and closed events of the connection set (arg =
 * srv); the caller adds `refused`. */
void ss_dispatch_conn_events(ss_server *srv, ss_conn_events *ev);

/* Send a standalone error response (no request context) on c, e.g. for
 * an oversized frame or a refused connection, then close after flush. */
void ss_dispatch_send_error_close(ss_server *srv, ss_conn *c, uint64_t id,
                                  int code, const char *msg);

/* The connection is closing: run the close callbacks of its requests. */
void ss_dispatch_conn_closed(ss_conn *c);

/* The connection a request arrived on. */
ss_conn *ss_request_conn(const ss_request *req);

/* Register the built-in handlers (dispatch_admin.c, dispatch_state.c). */
void ss_dispatch_admin_register(ss_server *srv);
void ss_dispatch_state_register(ss_server *srv);

/* ---- server.c ---- */

/* A request was answered; during shutdown the last one starts draining. */
void ss_server_request_done(ss_server *srv);

#endif
