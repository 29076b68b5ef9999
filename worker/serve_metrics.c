/* serve_metrics -- Prometheus metrics and health endpoints of
 * `statesaver-worker serve`.
 *
 * The heartbeat and the connected flag are relaxed atomics written by the
 * lease loop and read by the HTTP thread; everything else lives in the
 * registry (ss_metrics.h), which is safe to update and read concurrently.
 */
#include "serve_metrics.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ss_error.h"
#include "ss_http.h"
#include "ss_log.h"
#include "ss_metrics.h"

static const char *const error_names[SS_SERVE_ERR_KINDS] = {
    "connect", "lease", "complete", "item",
};

struct ss_serve_metrics {
    ss_metrics *reg;          /* registry (owned) */
    ss_http *http;            /* endpoint (owned) */
    uint64_t stall_ns;        /* /healthz: longest silence of the loop */
    uint64_t beat_ns;         /* last heartbeat (atomic, monotonic ns) */
    int connected;            /* 1 while connected (atomic) */
    ss_metric *segments;      /* segments_total */
    ss_metric *steps;         /* steps_total */
    ss_metric *leases;        /* leases_total */
    ss_metric *lease_size;    /* lease_segments histogram */
    ss_metric *unroll;        /* unroll_duration_seconds histogram */
    ss_metric *round_trip;    /* lease_roundtrip_seconds histogram */
    ss_metric *errors;        /* errors_total{kind} */
    ss_metric *up;            /* connected gauge */
    ss_metric *start_time;    /* start_time_seconds gauge */
    ss_metric *build_info;    /* build_info{version} gauge */
};

static bool h_healthy(void *arg)
{
    ss_serve_metrics *m = arg;
    uint64_t beat = __atomic_load_n(&m->beat_ns, __ATOMIC_RELAXED);
    uint64_t now = ss_metrics_now();
    return now < beat || now - beat <= m->stall_ns;
}

static bool h_ready(void *arg, char *reason, size_t size)
{
    ss_serve_metrics *m = arg;
    if (!h_healthy(m)) {
        snprintf(reason, size, "the lease loop has stalled");
        return false;
    }
    if (!__atomic_load_n(&m->connected, __ATOMIC_RELAXED)) {
        snprintf(reason, size, "not connected to the server");
        return false;
    }
    return true;
}

static int add(ss_serve_metrics *m, ss_metric **slot, ss_metric_type type,
               const char *name, const char *help, const ss_metric_label *label,
               const double *buckets, size_t n_buckets)
{
    ss_metric_def d = {.type = type, .name = name, .help = help,
                       .labels = label, .n_labels = label ? 1 : 0,
                       .buckets = buckets, .n_buckets = n_buckets};
    return ss_metrics_add(m->reg, &d, slot);
}

static int register_all(ss_serve_metrics *m)
{
    static const char *const version[] = {SS_VERSION};
    ss_metric_label kinds = {"kind", error_names, SS_SERVE_ERR_KINDS};
    ss_metric_label ver = {"version", version, 1};
    int rc = 0;
    if (rc == 0)
        rc = add(m, &m->segments, SS_METRIC_COUNTER, "statesaver_worker_segments_total",
                 "Segments completed by this worker (items completed with an error included).",
                 NULL, NULL, 0);
    if (rc == 0)
        rc = add(m, &m->steps, SS_METRIC_COUNTER, "statesaver_worker_steps_total",
                 "RNN steps computed in completed segments (each item's length).",
                 NULL, NULL, 0);
    if (rc == 0)
        rc = add(m, &m->leases, SS_METRIC_COUNTER, "statesaver_worker_leases_total",
                 "Non-empty leases served.", NULL, NULL, 0);
    if (rc == 0)
        rc = add(m, &m->lease_size, SS_METRIC_HISTOGRAM, "statesaver_worker_lease_segments",
                 "Segments per non-empty lease.", NULL, ss_metrics_size_buckets,
                 ss_metrics_size_buckets_n);
    if (rc == 0)
        rc = add(m, &m->unroll, SS_METRIC_HISTOGRAM, "statesaver_worker_unroll_duration_seconds",
                 "Time to unroll one lease (all its segments).", NULL,
                 ss_metrics_latency_buckets, ss_metrics_latency_buckets_n);
    if (rc == 0)
        rc = add(m, &m->round_trip, SS_METRIC_HISTOGRAM,
                 "statesaver_worker_lease_roundtrip_seconds",
                 "Time from the Lease request to the Complete reply of a non-empty lease.",
                 NULL, ss_metrics_latency_buckets, ss_metrics_latency_buckets_n);
    if (rc == 0)
        rc = add(m, &m->errors, SS_METRIC_COUNTER, "statesaver_worker_errors_total",
                 "Errors by kind: connect, lease, complete (lease lost), item (failed segment).",
                 &kinds, NULL, 0);
    if (rc == 0)
        rc = add(m, &m->up, SS_METRIC_GAUGE, "statesaver_worker_connected",
                 "1 while connected to the server with the saver declared, else 0.",
                 NULL, NULL, 0);
    if (rc == 0)
        rc = add(m, &m->start_time, SS_METRIC_GAUGE, "statesaver_worker_start_time_seconds",
                 "Start time of the worker, seconds since the epoch.", NULL, NULL, 0);
    if (rc == 0)
        rc = add(m, &m->build_info, SS_METRIC_GAUGE, "statesaver_build_info",
                 "Always 1; the version label names the build.", &ver, NULL, 0);
    return rc;
}

int ss_serve_metrics_port(const ss_serve_metrics *m)
{
    return m ? ss_http_port(m->http) : 0;
}

int ss_serve_metrics_start(ss_serve_metrics **out, const char *listen,
                           const char *port_file, uint64_t stall_ms)
{
    char err[256];
    *out = NULL;
    ss_serve_metrics *m = calloc(1, sizeof *m);
    int rc = SS_ERR_NOMEM;
    if (!m)
        goto fail;
    m->stall_ns = stall_ms * 1000000ull;
    m->beat_ns = ss_metrics_now();
    if ((rc = ss_metrics_new(&m->reg)) < 0)
        goto fail;
    if ((rc = register_all(m)) < 0) {
        fprintf(stderr, "serve: metrics: %s\n", ss_strerror(rc));
        goto fail;
    }
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ss_metric_set(m->start_time, 0, (double)ts.tv_sec + (double)ts.tv_nsec / 1e9);
    ss_metric_set(m->build_info, 0, 1);
    ss_http_handlers h = {.healthy = h_healthy, .ready = h_ready, .arg = m};
    if ((rc = ss_http_start(&m->http, listen, m->reg, &h, err, sizeof err)) < 0) {
        fprintf(stderr, "serve: --metrics-listen: %s\n", err);
        goto fail;
    }
    if (port_file && (rc = ss_http_write_port_file(port_file, ss_http_port(m->http))) < 0) {
        fprintf(stderr, "serve: cannot write --metrics-port-file %s\n", port_file);
        goto fail;
    }
    SS_LOG(SS_LOG_INFO, "serve: metrics on %s (port %d): /metrics, /healthz, /readyz",
           listen, ss_http_port(m->http));
    *out = m;
    return 0;
fail:
    if (rc == SS_ERR_NOMEM)
        fprintf(stderr, "serve: metrics: out of memory\n");
    ss_serve_metrics_stop(m);
    return rc;
}

void ss_serve_metrics_stop(ss_serve_metrics *m)
{
    if (!m)
        return;
    ss_http_stop(m->http);
    ss_metrics_free(m->reg);
    free(m);
}

void ss_serve_metrics_beat(ss_serve_metrics *m)
{
    if (m)
        __atomic_store_n(&m->beat_ns, ss_metrics_now(), __ATOMIC_RELAXED);
}

void ss_serve_metrics_connected(ss_serve_metrics *m, bool connected)
{
    if (!m)
        return;
    __atomic_store_n(&m->connected, connected ? 1 : 0, __ATOMIC_RELAXED);
    ss_metric_set(m->up, 0, connected ? 1 : 0);
}

void ss_serve_metrics_error(ss_serve_metrics *m, ss_serve_error kind)
{
    if (m)
        ss_metric_inc(m->errors, (size_t)kind, 1);
}

void ss_serve_metrics_lease(ss_serve_metrics *m, const ss_lease *l,
                            const ss_complete_item *items, size_t n,
                            bool completed, double unroll_s,
                            double round_trip_s)
{
    if (!m)
        return;
    ss_serve_metrics_beat(m);
    ss_metric_inc(m->leases, 0, 1);
    ss_metric_observe(m->lease_size, 0, (double)n);
    ss_metric_observe(m->unroll, 0, unroll_s);
    if (!completed) {
        ss_serve_metrics_error(m, SS_SERVE_ERR_COMPLETE);
        return;
    }
    ss_metric_observe(m->round_trip, 0, round_trip_s);
    uint64_t steps = 0, failed = 0;
    for (size_t i = 0; i < n; i++) {
        if (items && items[i].error && items[i].error[0]) {
            failed++;
            continue;
        }
        ss_lease_item it;
        ss_lease_item_get(l, i, &it);
        steps += it.length;
    }
    ss_metric_inc(m->segments, 0, n);
    ss_metric_inc(m->steps, 0, steps);
    if (failed)
        ss_metric_inc(m->errors, SS_SERVE_ERR_ITEM, failed);
}
