/* server_internal -- state shared by the server core's own files
 * (server.c, server_metrics.c). Everything else uses server.h.
 */
#ifndef SS_SERVER_INTERNAL_H
#define SS_SERVER_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "commit_events.h"
#include "conn.h"
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
    ss_conn_events conn_events;    /* the request layer's, plus ours */
    ss_commit_events *commits;     /* "keys committed" event (owned) */
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

#endif
