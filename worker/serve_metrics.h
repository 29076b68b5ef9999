/* serve_metrics -- Prometheus metrics and health endpoints of
 * `statesaver-worker serve` (--metrics-listen HOST:PORT).
 *
 * /metrics: segments and steps done (rate() gives per second), leases,
 * unroll time and lease round trip (Lease request to Complete reply)
 * histograms, errors by kind, whether the worker is connected.
 * /healthz: 200 while the lease loop keeps beating (it calls
 * ss_serve_metrics_beat at least once per lease, backoff or reconnect; a
 * loop silent for stall_ms is reported unhealthy). /readyz: 200 while the
 * worker is connected to its server with the saver declared.
 *
 * Threads: the lease loop calls every function here; the HTTP endpoint
 * reads on its own thread (atomics only). Every function accepts a NULL
 * handle (metrics off) and then does nothing.
 */
#ifndef SS_SERVE_METRICS_H
#define SS_SERVE_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "statesaver_jobs.h"

typedef struct ss_serve_metrics ss_serve_metrics; /* opaque */

/* Slack added to the longest legitimate pause of the lease loop before
 * /healthz reports it stalled. */
#define SS_SERVE_STALL_SLACK_MS 300000u

/* Kinds of errors counted (label `kind`). */
typedef enum ss_serve_error {
    SS_SERVE_ERR_CONNECT = 0, /* connect or declare failed */
    SS_SERVE_ERR_LEASE,       /* a Lease call failed */
    SS_SERVE_ERR_COMPLETE,    /* a lease could not be completed */
    SS_SERVE_ERR_ITEM,        /* an item was completed with an error */
    SS_SERVE_ERR_KINDS        /* number of kinds */
} ss_serve_error;

/* Serve metrics on listen (HOST:PORT, [V6]:PORT, :PORT; port 0 = any) and
 * write the bound port to port_file when not NULL. stall_ms: see above.
 * Returns 0 or a negative code after printing a message to stderr. */
int ss_serve_metrics_start(ss_serve_metrics **out, const char *listen,
                           const char *port_file, uint64_t stall_ms);
/* Stop serving and free. Accepts NULL. */
void ss_serve_metrics_stop(ss_serve_metrics *m);
/* The bound metrics port (0 for NULL). */
int ss_serve_metrics_port(const ss_serve_metrics *m);

/* The lease loop is alive (call once per iteration). */
void ss_serve_metrics_beat(ss_serve_metrics *m);
/* Connected (saver declared) or disconnected. */
void ss_serve_metrics_connected(ss_serve_metrics *m, bool connected);
void ss_serve_metrics_error(ss_serve_metrics *m, ss_serve_error kind);
/* A non-empty lease l was computed into items[0..n) and its Complete was
 * accepted (completed) or not; unroll_s is the compute time, round_trip_s
 * from the Lease request to the Complete reply. */
void ss_serve_metrics_lease(ss_serve_metrics *m, const ss_lease *l,
                            const ss_complete_item *items, size_t n,
                            bool completed, double unroll_s,
                            double round_trip_s);

#endif
