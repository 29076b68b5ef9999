/* server_metrics -- Prometheus metrics and health endpoints of the server.
 *
 * The scrape/loop handshake: the HTTP thread bumps `asked` under mu,
 * wakes the loop (uv_async_send) and waits on cv until `answered` catches
 * up, the wait times out, or `stopping` is set. The loop's async callback
 * copies its numbers into gauges, records readiness, sets answered = asked
 * and broadcasts. ss_server_metrics_stop sets stopping first, so a scrape
 * in progress returns at once and MHD_stop_daemon (joining the HTTP
 * thread) cannot wait on the loop that calls it; the async handle is
 * closed only after that join, so no uv_async_send can race its close.
 */
#include "server_metrics.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "server_internal.h"
#include "ss_error.h"
#include "ss_http.h"
#include "ss_log.h"
#include "ss_metrics.h"

/* Op label values; op_index maps a Request body case to one. */
static const char *const op_names[] = {
    "unknown", "hello", "declare", "fetch", "save", "drop", "list", "stats",
    "ping", "submit", "lease", "complete", "await", "cancel", "topology",
    "slot_freeze", "slot_export", "slot_import", "slot_delete",
};
#define N_OPS (sizeof op_names / sizeof op_names[0])

static size_t op_index(int body_case)
{
    switch (body_case) {
    case STATESAVER__V1__REQUEST__BODY_HELLO: return 1;
    case STATESAVER__V1__REQUEST__BODY_DECLARE: return 2;
    case STATESAVER__V1__REQUEST__BODY_FETCH: return 3;
    case STATESAVER__V1__REQUEST__BODY_SAVE: return 4;
    case STATESAVER__V1__REQUEST__BODY_DROP: return 5;
    case STATESAVER__V1__REQUEST__BODY_LIST: return 6;
    case STATESAVER__V1__REQUEST__BODY_STATS: return 7;
    case STATESAVER__V1__REQUEST__BODY_PING: return 8;
    case STATESAVER__V1__REQUEST__BODY_SUBMIT: return 9;
    case STATESAVER__V1__REQUEST__BODY_LEASE: return 10;
    case STATESAVER__V1__REQUEST__BODY_COMPLETE: return 11;
    case STATESAVER__V1__REQUEST__BODY_AWAIT_SEGMENT: return 12;
    case STATESAVER__V1__REQUEST__BODY_CANCEL: return 13;
    case STATESAVER__V1__REQUEST__BODY_TOPOLOGY: return 14;
    case STATESAVER__V1__REQUEST__BODY_SLOT_FREEZE: return 15;
    case STATESAVER__V1__REQUEST__BODY_SLOT_EXPORT: return 16;
    case STATESAVER__V1__REQUEST__BODY_SLOT_IMPORT: return 17;
    case STATESAVER__V1__REQUEST__BODY_SLOT_DELETE: return 18;
    default: return 0;
    }
}

/* Code label: index = status code (0..16), then MOVED (code 32) at
 * CODE_MOVED_INDEX; gaps are never used. */
static const char *const code_names[] = {
    "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED",
    "NOT_FOUND", "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED",
    "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED", "MOVED",
};
#define CODE_MOVED_INDEX 17u
#define N_CODES (sizeof code_names / sizeof code_names[0])

static const char *const reject_names[SS_REJECT_REASONS] = {
    "frame_too_big", "bad_frame", "auth", "max_connections", "limit",
    "response_too_big", "unauth_frame", "decode_budget", "frame_timeout",
    "evicted", "output_total",
};

static const char *const via_names[] = {"save", "complete"};

typedef struct ss_srv_metrics {
    ss_server *srv;              /* owner */
    ss_metrics *reg;             /* registry (owned) */
    ss_http *http;               /* endpoint (owned) */
    uv_async_t async;            /* wakes the loop for a collect */
    bool async_open;             /* async initialised and not closed */
    pthread_mutex_t mu;          /* guards the fields below */
    pthread_cond_t cv;           /* answered moved or stopping set */
    uint64_t asked;              /* collects requested by the HTTP thread */
    uint64_t answered;           /* collects done by the loop */
    bool stopping;               /* no more waiting on the loop */
    bool ready;                  /* readiness seen by the last collect */
    char why[SS_HTTP_REASON_MAX]; /* why not ready */
    /* hot-path families */
    ss_metric *requests;         /* requests_total{op,code} */
    ss_metric *duration;         /* request_duration_seconds{op} */
    ss_metric *rejected;         /* rejected_total{reason} */
    ss_metric *bytes_in;         /* received_bytes_total */
    ss_metric *bytes_out;        /* sent_bytes_total */
    ss_metric *leases;           /* leases_total */
    ss_metric *leased_segments;  /* leased_segments_total */
    ss_metric *commit_ops;       /* commit_batch_ops histogram */
    ss_metric *commit_seconds;   /* commit_duration_seconds histogram */
    /* copied from the loop at scrape time */
    ss_metric *connections;      /* gauge */
    ss_metric *connections_total; /* counter */
    ss_metric *inflight;         /* gauge */
    ss_metric *evicted;          /* counter */
    ss_metric *saves_applied;    /* counter {via} */
    ss_metric *savers;           /* gauge */
    ss_metric *sequences;        /* gauge */
    ss_metric *map_size;         /* gauge */
    ss_metric *map_used;         /* gauge */
    ss_metric *corrupt;          /* counter: records failing their CRC32C */
    ss_metric *wal_failed;       /* gauge: 1 once the log failed */
    ss_metric *wal_bytes;        /* counter: log payload bytes appended */
    ss_metric *wal_records;      /* counter: log records appended */
    ss_metric *checkpoints;      /* counter: checkpoints made */
    ss_metric *queued;           /* gauge */
    ss_metric *leased;           /* gauge */
    ss_metric *completed;        /* counter */
    ss_metric *failed;           /* counter */
    ss_metric *expired;          /* counter */
    ss_metric *start_time;       /* gauge */
    ss_metric *build_info;       /* gauge {version} */
    /* cluster (docs/cluster.md) */
    ss_metric *topo_stale;       /* gauge: 1 while etcd is unreachable */
    ss_metric *topo_epoch;       /* gauge: epoch served */
    ss_metric *etcd_errors;      /* counter: failed etcd calls / watches */
    ss_metric *owned_slots;      /* gauge */
    ss_metric *frozen_slots;     /* gauge */
} ss_srv_metrics;

/* ---- registration ---- */

typedef struct fam_spec {
    ss_metric **slot;            /* where the family goes */
    ss_metric_type type;         /* kind */
    const char *name;            /* metric name */
    const char *help;            /* HELP text */
    const char *label1;          /* first label name or NULL */
    const char *const *values1;  /* its values */
    size_t n1;                   /* how many */
    const char *label2;          /* second label or NULL */
    const char *const *values2;  /* its values */
    size_t n2;                   /* how many */
    const double *buckets;       /* histogram bounds */
    size_t n_buckets;            /* how many */
    unsigned flags;              /* SS_METRIC_* */
} fam_spec;

static int register_all(ss_srv_metrics *m)
{
    static const char *const version[] = {SS_VERSION};
    const fam_spec specs[] = {
        {&m->requests, SS_METRIC_COUNTER, "statesaver_requests_total",
         "Requests answered, by request type and status code.",
         "op", op_names, N_OPS, "code", code_names, N_CODES, NULL, 0,
         SS_METRIC_SKIP_ZERO},
        {&m->duration, SS_METRIC_HISTOGRAM, "statesaver_request_duration_seconds",
         "Time from a request decoded to its reply queued (includes commits and waits).",
         "op", op_names, N_OPS, NULL, NULL, 0, ss_metrics_latency_buckets,
         ss_metrics_latency_buckets_n, 0},
        {&m->rejected, SS_METRIC_COUNTER, "statesaver_rejected_total",
         "Requests and connections refused, by reason.",
         "reason", reject_names, SS_REJECT_REASONS, NULL, NULL, 0, NULL, 0, 0},
        {&m->bytes_in, SS_METRIC_COUNTER, "statesaver_received_bytes_total",
         "Bytes of request frames received (headers included).",
         NULL, NULL, 0, NULL, NULL, 0, NULL, 0, 0},
        {&m->bytes_out, SS_METRIC_COUNTER, "statesaver_sent_bytes_total",
         "Bytes of response frames queued for sending (headers included).",
         NULL, NULL, 0, NULL, NULL, 0, NULL, 0, 0},
        {&m->connections, SS_METRIC_GAUGE, "statesaver_connections",
         "Client connections open now.", NULL, NULL, 0, NULL, NULL, 0, NULL, 0, 0},
        {&m->connections_total, SS_METRIC_COUNTER, "statesaver_connections_total",
         "Client connections accepted since start.",
         NULL, NULL, 0, NULL, NULL, 0, NULL, 0, 0},
        {&m->inflight, SS_METRIC_GAUGE, "statesaver_requests_in_flight",
         "Requests received and not answered yet (parked waits included).",
         NULL, NULL, 0, NULL, NULL, 0, NULL, 0, 0},
        {&m->savers, SS_METRIC_GAUGE, "statesaver_savers",
         "Declared savers.", NULL, NULL, 0, NULL, NULL, 0, NULL, 0, 0},
        {&m->sequences, SS_METRIC_GAUGE, "statesaver_sequences",
         "Sequences with a stored state (all savers).",
         NULL, NULL, 0, NULL, NULL, 0, NULL, 0, 0},
        {&m->saves_applied, SS_METRIC_COUNTER, "statesaver_saves_applied_total",
         "Per-key state saves applied (compare-and-set successes), by the request that saved.",
         "via", via_names, 2, NULL, NULL, 0, NULL, 0, 0},
        {&m->evicted, SS_METRIC_COUNTER, "statesaver_evicted_total",
         "Sequences evicted by idle TTL since start.",
         NULL, NULL, 0, NULL, NULL, 0, NULL, 0, 0},
        {&m->map_size, SS_METRIC_GAUGE, "statesaver_lmdb_map_size_bytes",
         "Current LMDB map size: starts at --map-size, grows up to --max-map-size.",
         NULL, NULL, 0, NULL, NULL, 0, NULL, 0, 0},
        {&m->map_used, SS_METRIC_GAUGE, "statesaver_lmdb_map_used_bytes",
         "Bytes of the LMDB map in use (last page times page size).",
         NULL, NULL, 0, NULL, NULL, 0, NULL, 0, 0},
        {&m->corrupt, SS_METRIC_COUNTER, "statesaver_store_corrupt_records_total",
         "Stored records whose checksum did not match when read (each read "
         "answered with an error naming the key, never with the data).",
         NULL, NULL, 0, NULL, NULL, 0, NULL, 0, 0},
        {&m->wal_failed, SS_METRIC_GAUGE, "statesaver_wal_failed",
         "1 once a write or fsync of the write-ahead log failed: writes are "
         "refused (UNAVAILABLE) until a restart, reads keep working.",
         NULL, NULL, 0, NULL, NULL, 0, NULL, 0, 0},
        {&m->wal_bytes, SS_METRIC_COUNTER, "statesaver_wal_bytes_total",
         "Payload bytes appended to the write-ahead log since start.",
         NULL, NULL, 0, NULL, NULL, 0, NULL, 0, 0},
        {&m->wal_records, SS_METRIC_COUNTER, "statesaver_wal_records_total",
         "Records appended to the write-ahead log since start.",
         NULL, NULL, 0, NULL, NULL, 0, NULL, 0, 0},
        {&m->checkpoints, SS_METRIC_COUNTER, "statesaver_checkpoints_total",
         "Checkpoints since start (LMDB synced, older log segments recycled).",
         NULL, NULL, 0, NULL, NULL, 0, NULL, 0, 0},
        {&m->commit_ops, SS_METRIC_HISTOGRAM, "statesaver_commit_batch_ops",
         "Write operations per LMDB group commit.",
         NULL, NULL, 0, NULL, NULL, 0, ss_metrics_size_buckets,
         ss_metrics_size_buckets_n, 0},
        {&m->commit_seconds, SS_METRIC_HISTOGRAM, "statesaver_commit_duration_seconds",
         "Time in mdb_txn_commit per group commit (the fsync with --sync on).",
         NULL, NULL, 0, NULL, NULL, 0, ss_metrics_latency_buckets,
         ss_metrics_latency_buckets_n, 0},
        {&m->queued, SS_METRIC_GAUGE, "statesaver_queue_queued",
         "Job queue: segments waiting for a worker.",
         NULL, NULL, 0, NULL, NULL, 0, NULL, 0, 0},
        {&m->leased, SS_METRIC_GAUGE, "statesaver_queue_leased",
         "Job queue: segments under a live lease.",
         NULL, NULL, 0, NULL, NULL, 0, NULL, 0, 0},
        {&m->leases, SS_METRIC_COUNTER, "statesaver_leases_total",
         "Job queue: non-empty leases handed to workers.",
         NULL, NULL, 0, NULL, NULL, 0, NULL, 0, 0},
        {&m->leased_segments, SS_METRIC_COUNTER, "statesaver_leased_segments_total",
         "Job queue: segments handed to workers in leases.",
         NULL, NULL, 0, NULL, NULL, 0, NULL, 0, 0},
        {&m->completed, SS_METRIC_COUNTER, "statesaver_segments_completed_total",
         "Job queue: segments completed since start.",
         NULL, NULL, 0, NULL, NULL, 0, NULL, 0, 0},
        {&m->failed, SS_METRIC_COUNTER, "statesaver_segments_failed_total",
         "Job queue: segments marked failed (poisoned: --max-attempts reached).",
         NULL, NULL, 0, NULL, NULL, 0, NULL, 0, 0},
        {&m->expired, SS_METRIC_COUNTER, "statesaver_leases_expired_total",
         "Job queue: leases that passed their deadline uncompleted.",
         NULL, NULL, 0, NULL, NULL, 0, NULL, 0, 0},
        {&m->topo_stale, SS_METRIC_GAUGE, "statesaver_topology_stale",
         "1 while etcd cannot be reached: the server serves the slots of the "
         "last topology it read (and /readyz says not ready).",
         NULL, NULL, 0, NULL, NULL, 0, NULL, 0, 0},
        {&m->topo_epoch, SS_METRIC_GAUGE, "statesaver_topology_epoch",
         "Epoch of the cluster topology this server serves (0 without a cluster).",
         NULL, NULL, 0, NULL, NULL, 0, NULL, 0, 0},
        {&m->etcd_errors, SS_METRIC_COUNTER, "statesaver_etcd_errors_total",
         "Failed etcd calls and broken topology watches since start.",
         NULL, NULL, 0, NULL, NULL, 0, NULL, 0, 0},
        {&m->owned_slots, SS_METRIC_GAUGE, "statesaver_owned_slots",
         "Hash slots this shard owns in the topology it serves.",
         NULL, NULL, 0, NULL, NULL, 0, NULL, 0, 0},
        {&m->frozen_slots, SS_METRIC_GAUGE, "statesaver_frozen_slots",
         "Hash slots frozen for a move (writes to them refused, retryable).",
         NULL, NULL, 0, NULL, NULL, 0, NULL, 0, 0},
        {&m->start_time, SS_METRIC_GAUGE, "statesaver_start_time_seconds",
         "Start time of the server, seconds since the epoch.",
         NULL, NULL, 0, NULL, NULL, 0, NULL, 0, 0},
        {&m->build_info, SS_METRIC_GAUGE, "statesaver_build_info",
         "Always 1; the version label names the build.",
         "version", version, 1, NULL, NULL, 0, NULL, 0, 0},
    };
    for (size_t i = 0; i < sizeof specs / sizeof specs[0]; i++) {
        const fam_spec *s = &specs[i];
        ss_metric_label labels[2] = {{s->label1, s->values1, s->n1},
                                     {s->label2, s->values2, s->n2}};
        ss_metric_def d = {
            .type = s->type, .name = s->name, .help = s->help,
            .labels = labels, .n_labels = s->label2 ? 2 : s->label1 ? 1 : 0,
            .buckets = s->buckets, .n_buckets = s->n_buckets, .flags = s->flags,
        };
        int rc = ss_metrics_add(m->reg, &d, s->slot);
        if (rc < 0) {
            SS_LOG(SS_LOG_ERROR, "metrics: cannot register %s: %s", s->name,
                   ss_strerror(rc));
            return rc;
        }
    }
    return 0;
}

/* ---- loop side ---- */

/* Copy the loop's numbers into the registry (loop thread). */
static void collect_on_loop(ss_srv_metrics *m)
{
    ss_server *srv = m->srv;
    const ss_server_counters *c = &srv->counters;
    ss_metric_set_u64(m->connections, 0, ss_server_connections(srv));
    ss_metric_set_u64(m->connections_total, 0, ss_server_accepted(srv));
    ss_metric_set_u64(m->inflight, 0, c->inflight);
    ss_metric_set_u64(m->evicted, 0, c->evicted);
    ss_metric_set_u64(m->saves_applied, 0, c->saves_applied);
    if (srv->store) {
        ss_store_stats st;
        memset(&st, 0, sizeof st);
        if (ss_store_stats_get(srv->store, NULL, &st) == 0) {
            ss_metric_set_u64(m->savers, 0, st.savers);
            ss_metric_set_u64(m->sequences, 0, st.sequences);
            ss_metric_set_u64(m->map_size, 0, st.map_size);
            ss_metric_set_u64(m->map_used, 0, st.map_used);
        }
        ss_metric_set_u64(m->corrupt, 0, ss_store_corrupt_records(srv->store));
    }
    if (srv->writer) {
        ss_writer_stats ws;
        memset(&ws, 0, sizeof ws);
        ss_writer_stats_get(srv->writer, &ws);
        ss_metric_set_u64(m->wal_failed, 0, ws.wal_failed ? 1 : 0);
        ss_metric_set_u64(m->wal_bytes, 0, ws.wal_bytes);
        ss_metric_set_u64(m->wal_records, 0, ws.wal_records);
        ss_metric_set_u64(m->checkpoints, 0, ws.checkpoints);
    }
    /* The job queue reports through its module stats hook, the same
     * numbers as the Stats request. */
    Statesaver__V1__StatsResponse sr = STATESAVER__V1__STATS_RESPONSE__INIT;
    for (size_t i = 0; i < srv->n_modules; i++)
        if (srv->modules[i].stats)
            srv->modules[i].stats(srv->modules[i].arg, "", &sr);
    ss_metric_set_u64(m->queued, 0, sr.queued);
    ss_metric_set_u64(m->leased, 0, sr.leased);
    ss_metric_set_u64(m->completed, 0, sr.completed);
    ss_metric_set_u64(m->failed, 0, sr.failed);
    ss_metric_set_u64(m->expired, 0, sr.expired_leases);
    ss_metric_set_u64(m->saves_applied, 1, sr.saves_applied);
    ss_metric_set_u64(m->topo_stale, 0, sr.topology_stale ? 1 : 0);
    ss_metric_set_u64(m->topo_epoch, 0, sr.topology_epoch);
    ss_metric_set_u64(m->etcd_errors, 0, sr.etcd_errors);
    ss_metric_set_u64(m->owned_slots, 0, sr.owned_slots);
    ss_metric_set_u64(m->frozen_slots, 0, sr.frozen_slots);
}

/* Not ready while the cluster topology is stale (etcd unreachable): the
 * server still serves the slots it owns, but a move or a new shard would
 * go unnoticed. Fills why. */
static bool cluster_ready(ss_server *srv, char *why, size_t n)
{
    Statesaver__V1__StatsResponse sr = STATESAVER__V1__STATS_RESPONSE__INIT;
    for (size_t i = 0; i < srv->n_modules; i++)
        if (srv->modules[i].stats)
            srv->modules[i].stats(srv->modules[i].arg, "", &sr);
    if (!sr.topology_stale)
        return true;
    snprintf(why, n, "topology stale (serving epoch %" PRIu64 " for the slots it owns): %s",
             sr.topology_epoch, sr.topology_error ? sr.topology_error : "etcd unreachable");
    return false;
}

static void on_async(uv_async_t *a)
{
    ss_srv_metrics *m = a->data;
    ss_server *srv = m->srv;
    collect_on_loop(m);
    bool ready = !srv->shutting_down && srv->listening && srv->store;
    char cwhy[SS_HTTP_REASON_MAX] = "";
    bool cready = !ready || cluster_ready(srv, cwhy, sizeof cwhy);
    pthread_mutex_lock(&m->mu);
    m->ready = ready && cready;
    snprintf(m->why, sizeof m->why, "%s",
             !ready ? (srv->shutting_down ? "shutting down" : "starting") : cwhy);
    m->answered = m->asked;
    pthread_cond_broadcast(&m->cv);
    pthread_mutex_unlock(&m->mu);
}

/* ---- HTTP side ---- */

/* Ask the loop to collect; true when it answered in time. */
static bool loop_round_trip(ss_srv_metrics *m)
{
    struct timespec until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_sec += SS_METRICS_LOOP_WAIT_MS / 1000;
    until.tv_nsec += (long)(SS_METRICS_LOOP_WAIT_MS % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&m->mu);
    if (m->stopping) {
        pthread_mutex_unlock(&m->mu);
        return false;
    }
    uint64_t gen = ++m->asked;
    pthread_mutex_unlock(&m->mu);
    uv_async_send(&m->async);
    pthread_mutex_lock(&m->mu);
    int rc = 0;
    while (m->answered < gen && !m->stopping && rc != ETIMEDOUT)
        rc = pthread_cond_timedwait(&m->cv, &m->mu, &until);
    bool ok = m->answered >= gen;
    pthread_mutex_unlock(&m->mu);
    return ok;
}

static void h_collect(void *arg)
{
    if (!loop_round_trip(arg))
        SS_LOG(SS_LOG_WARN, "metrics: the event loop did not answer within %u ms; "
               "serving the last values", SS_METRICS_LOOP_WAIT_MS);
}

static bool h_healthy(void *arg)
{
    return loop_round_trip(arg);
}

static bool h_ready(void *arg, char *reason, size_t size)
{
    ss_srv_metrics *m = arg;
    if (!loop_round_trip(m)) {
        snprintf(reason, size, "the event loop does not answer");
        return false;
    }
    pthread_mutex_lock(&m->mu);
    bool ready = m->ready;
    snprintf(reason, size, "%s", m->why);
    pthread_mutex_unlock(&m->mu);
    return ready;
}

/* Writer thread: one group commit. */
static void on_commit(void *arg, size_t ops, uint64_t commit_ns)
{
    ss_srv_metrics *m = arg;
    ss_metric_observe(m->commit_ops, 0, (double)ops);
    ss_metric_observe(m->commit_seconds, 0, (double)commit_ns / 1e9);
}

/* ---- lifecycle ---- */

int ss_server_metrics_start(ss_server *srv)
{
    const ss_config *cfg = &srv->cfg;
    if (!cfg->metrics_listen)
        return 0;
    int rc = SS_ERR_NOMEM;
    ss_srv_metrics *m = calloc(1, sizeof *m);
    if (!m)
        return rc;
    m->srv = srv;
    srv->metrics = m;
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&m->cv, &ca);
    pthread_condattr_destroy(&ca);
    pthread_mutex_init(&m->mu, NULL);
    if ((rc = ss_metrics_new(&m->reg)) < 0 || (rc = register_all(m)) < 0)
        return rc;
    ss_metric_set(m->start_time, 0, (double)srv->counters.start_ms / 1000.0);
    ss_metric_set(m->build_info, 0, 1);
    rc = uv_async_init(&srv->loop, &m->async, on_async);
    if (rc < 0) {
        SS_LOG(SS_LOG_ERROR, "metrics: uv_async_init: %s", uv_strerror(rc));
        return SS_ERR_IO;
    }
    m->async.data = m;
    m->async_open = true;
    /* The async handle must not keep the loop alive on its own. */
    uv_unref((uv_handle_t *)&m->async);
    ss_writer_set_observer(srv->writer, on_commit, m);
    ss_http_handlers h = {.collect = h_collect, .healthy = h_healthy,
                          .ready = h_ready, .arg = m};
    char err[256];
    rc = ss_http_start(&m->http, cfg->metrics_listen, m->reg, &h, err, sizeof err);
    if (rc < 0) {
        SS_LOG(SS_LOG_ERROR, "--metrics-listen: %s", err);
        return rc;
    }
    SS_LOG(SS_LOG_INFO, "metrics on http://%s/metrics (port %d), /healthz, /readyz",
           cfg->metrics_listen, ss_http_port(m->http));
    if (cfg->metrics_port_file &&
        ss_http_write_port_file(cfg->metrics_port_file, ss_http_port(m->http)) < 0) {
        SS_LOG(SS_LOG_ERROR, "cannot write --metrics-port-file %s: %s",
               cfg->metrics_port_file, strerror(errno));
        return SS_ERR_IO;
    }
    return 0;
}

void ss_server_metrics_stop(ss_server *srv)
{
    ss_srv_metrics *m = srv->metrics;
    if (!m)
        return;
    pthread_mutex_lock(&m->mu);
    m->stopping = true;
    pthread_cond_broadcast(&m->cv);
    pthread_mutex_unlock(&m->mu);
    ss_http_stop(m->http);
    m->http = NULL;
    if (srv->writer)
        ss_writer_set_observer(srv->writer, NULL, NULL);
    if (m->async_open) {
        m->async_open = false;
        uv_close((uv_handle_t *)&m->async, NULL);
    }
}

void ss_server_metrics_free(ss_server *srv)
{
    ss_srv_metrics *m = srv->metrics;
    if (!m)
        return;
    ss_http_stop(m->http);
    ss_metrics_free(m->reg);
    pthread_cond_destroy(&m->cv);
    pthread_mutex_destroy(&m->mu);
    free(m);
    srv->metrics = NULL;
}

/* ---- hooks ---- */

uint64_t ss_server_metrics_clock(ss_server *srv)
{
    return srv->metrics ? ss_metrics_now() : 0;
}

void ss_server_metrics_request(ss_server *srv, int body_case, int code,
                               uint64_t start_ns)
{
    ss_srv_metrics *m = srv->metrics;
    if (!m)
        return;
    size_t op = op_index(body_case);
    size_t cd = code == STATESAVER__V1__CODE__MOVED           ? CODE_MOVED_INDEX
                : code >= 0 && (size_t)code < CODE_MOVED_INDEX ? (size_t)code
                                                               : 2; /* UNKNOWN */
    ss_metric_inc(m->requests, ss_metric_series(m->requests, op, cd), 1);
    if (start_ns)
        ss_metric_observe(m->duration, op, ss_metrics_since(start_ns));
}

void ss_server_reject(ss_server *srv, ss_reject_reason why)
{
    srv->counters.rejected++;
    if (srv->metrics)
        ss_metric_inc(srv->metrics->rejected, (size_t)why, 1);
}

void ss_server_metrics_bytes(ss_server *srv, uint64_t in, uint64_t out)
{
    ss_srv_metrics *m = srv->metrics;
    if (!m)
        return;
    if (in)
        ss_metric_inc(m->bytes_in, 0, in);
    if (out)
        ss_metric_inc(m->bytes_out, 0, out);
}

void ss_server_metrics_leased(ss_server *srv, uint64_t n)
{
    ss_srv_metrics *m = srv->metrics;
    if (!m || n == 0)
        return;
    ss_metric_inc(m->leases, 0, 1);
    ss_metric_inc(m->leased_segments, 0, n);
}
