/* server_metrics -- Prometheus metrics and health endpoints of the server.
 *
 * With --metrics-listen HOST:PORT the server serves /metrics, /healthz and
 * /readyz (ss_http.h) from libmicrohttpd's own thread. Values come from
 * three places:
 *   - hot paths update lock-free counters and histograms directly: request
 *     count by op and status code, request latency (frame decoded to reply
 *     queued), bytes in and out, rejections by reason, leases granted;
 *   - the writer thread reports every group commit (ops in it, time in
 *     mdb_txn_commit, i.e. fsync) through ss_writer_set_observer;
 *   - numbers owned by the loop thread (connections, queue depth, job
 *     counters, store counts) are copied into gauges on the loop thread
 *     when a scrape asks for them: the HTTP thread wakes the loop with a
 *     uv_async and waits (at most SS_METRICS_LOOP_WAIT_MS) for it. The
 *     same round trip is the /healthz check: the loop must answer.
 * Without the flag nothing is registered and every hook is a no-op.
 *
 * Threads: ss_server_metrics_start/stop/free run on the loop thread (stop
 * also from ss_server_free); the other hooks on the thread named at each.
 */
#ifndef SS_SERVER_METRICS_H
#define SS_SERVER_METRICS_H

#include <stdint.h>

#include "server.h"

/* How long a scrape or a health check waits for the loop thread. */
#define SS_METRICS_LOOP_WAIT_MS 2000u

/* Why a request or connection was refused (label `reason`). */
typedef enum ss_reject_reason {
    SS_REJECT_FRAME_TOO_BIG = 0,  /* frame above --max-frame-bytes */
    SS_REJECT_BAD_FRAME,          /* payload is not a Request */
    SS_REJECT_AUTH,               /* missing or wrong token */
    SS_REJECT_MAX_CONNECTIONS,    /* over --max-connections */
    SS_REJECT_LIMIT,              /* RESOURCE_EXHAUSTED: keys, queue, ... */
    SS_REJECT_RESPONSE_TOO_BIG,   /* reply above the frame limit */
    SS_REJECT_UNAUTH_FRAME,       /* frame above --max-unauth-frame-bytes
                                     before Hello */
    SS_REJECT_DECODE_BUDGET,      /* Request needs more memory to decode
                                     than its --unpack-budget-* allows */
    SS_REJECT_FRAME_TIMEOUT,      /* frame not complete in --frame-timeout-ms */
    SS_REJECT_EVICTED,            /* not-yet-useful connection closed for a
                                     newcomer (--max-unauth-connections) */
    SS_REJECT_OUTPUT_TOTAL,       /* closed: over --max-output-bytes-total */
    SS_REJECT_REASONS             /* number of reasons */
} ss_reject_reason;

/* Start the registry and the HTTP endpoint on cfg.metrics_listen (loop
 * thread, after the server listens). Writes cfg.metrics_port_file.
 * Returns 0 (also when the flag is off) or a negative code, logged. */
int ss_server_metrics_start(ss_server *srv);
/* Stop serving and close the loop handle (loop thread, before the loop's
 * last run). Idempotent; accepts a server without metrics. */
void ss_server_metrics_stop(ss_server *srv);
/* Free what is left once the loop is closed. Accepts NULL state. */
void ss_server_metrics_free(ss_server *srv);

/* ---- hooks (loop thread unless noted) ---- */

/* Monotonic ns for a request's start, or 0 when metrics are off. */
uint64_t ss_server_metrics_clock(ss_server *srv);
/* A request of Request body case body_case was answered with status code
 * (STATESAVER__V1__CODE__*); start_ns from ss_server_metrics_clock. */
void ss_server_metrics_request(ss_server *srv, int body_case, int code,
                               uint64_t start_ns);
/* Count a refusal: the Stats `rejected` counter and the metric. */
void ss_server_reject(ss_server *srv, ss_reject_reason why);
/* Bytes of a frame received (header included) / queued for sending. */
void ss_server_metrics_bytes(ss_server *srv, uint64_t in, uint64_t out);
/* A Lease reply carrying n segments was handed to a worker. */
void ss_server_metrics_leased(ss_server *srv, uint64_t n);

#endif
