/* serve -- `statesaver-worker serve`: lease, unroll, complete, repeat.
 *
 * The lease loop: connect and declare the saver, lease, compute the lease
 * (serve_compute.c), complete it; flags are parsed in serve_opts.c and
 * --stats-json kept in serve_stats.c.
 *
 * The Complete of lease n is sent without waiting for its reply; the
 * worker then leases and computes batch n+1 while the server commits n,
 * and takes n's reply before it sends the Complete of n+1 (at most one
 * Complete in flight; replies are matched by id, so the Lease reply and
 * the Complete reply may come in either order). A Complete whose reply is
 * lost with the connection is retried on a new one until the lease's
 * deadline, as before.
 *
 * A Lease refused with RESOURCE_EXHAUSTED or UNAVAILABLE, or lost with the
 * connection, is transient: jittered exponential backoff (ss_backoff),
 * logged once per streak; the worker never exits for it.
 */
#include "serve.h"
#include "serve_int.h"

#include <cblas.h>
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ss_error.h"
#include "ss_log.h"
#include "ss_limits.h"
#include "ss_token.h"
#include "statesaver.pb-c.h" /* status codes (STATESAVER__V1__CODE__*) */
#include "statesaver_jobs.h"
#include "unroll_cmd.h"

/* Set by SIGTERM/SIGINT: finish the current batch, then exit. */
static volatile sig_atomic_t stop_requested;

static void on_signal(int sig)
{
    (void)sig;
    stop_requested = 1;
}

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static uint64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* Read --token-file (common/ss_token: one rule for every program). */
static int read_token(worker *w)
{
    char err[SERVE_ERRSZ];
    int rc = ss_token_read(w->o.token_file, &w->token, &w->token_len, err, sizeof err);
    if (rc < 0)
        fprintf(stderr, "serve: %s\n", err);
    return rc;
}

/* Sleep ms, waking early when a stop is requested. */
static void nap(uint32_t ms)
{
    int64_t until = mono_ms() + ms;
    while (!stop_requested) {
        int64_t left = until - mono_ms();
        if (left <= 0)
            break;
        struct timespec ts = {.tv_sec = 0, .tv_nsec = (long)(left > 50 ? 50 : left) * 1000000L};
        nanosleep(&ts, NULL);
    }
}

static void disconnect(worker *w)
{
    ss_client_close(w->c);
    w->c = NULL;
    ss_serve_metrics_connected(w->metrics, false);
}

/* The server went away (or answered UNAVAILABLE): worth reconnecting. */
static bool transient(const worker *w, int rc)
{
    return ss_client_broken(w->c) || rc == SS_ERR_CONNECT || rc == SS_ERR_TIMEOUT ||
           rc == SS_ERR_CLOSED || rc == SS_ERR_IO ||
           rc == SS_ERR_STATUS(STATESAVER__V1__CODE__UNAVAILABLE);
}

/* Wait the current (jittered) backoff, then double it up to the maximum. */
static void backoff(worker *w)
{
    nap(ss_backoff_next(&w->backoff));
}

/* The saver exists with a schema other than the one this worker declares
 * (initial values, keep_final or a TTL of its own). It is fine to serve
 * when its state names, dtypes and shapes are the model's: compare them
 * (from a List of the savers). 1 = they match, 0 = they differ (why says
 * how), negative = the list failed. */
static int saver_matches(worker *w, char *why, size_t whysz)
{
    ss_list_result *lr = NULL;
    char after[SS_SAVER_NAME_MAX + 1] = "";
    int found = -1;
    snprintf(why, whysz, "saver %s not found in the list of savers", w->o.saver);
    for (int page = 0; page < 100000 && found < 0; page++) {
        ss_key k = {.data = after, .len = strlen(after)};
        int rc = ss_client_list(w->c, NULL, NULL, after[0] ? &k : NULL, 0, &lr);
        if (rc < 0)
            return rc;
        size_t n = ss_list_result_savers(lr);
        for (size_t i = 0; i < n && found < 0; i++) {
            ss_saver_info si;
            if (ss_list_result_saver(lr, i, &si) < 0)
                continue;
            if (strcmp(si.name, w->o.saver) != 0) {
                snprintf(after, sizeof after, "%s", si.name); /* the next page starts after it */
                continue;
            }
            found = 1;
            if (si.n_states != w->m->n_states) {
                snprintf(why, whysz, "it has %zu states, model %s has %zu", si.n_states,
                         w->o.model, w->m->n_states);
                found = 0;
                break;
            }
            for (size_t j = 0; j < si.n_states; j++) {
                int dt = 0;
                const int64_t *shape = NULL;
                size_t rank = 0;
                const char *nm = ss_list_result_saver_state(lr, i, j, &dt, &shape, &rank);
                if (!nm || strcmp(nm, w->m->state_names[j]) != 0 || dt != SS_DTYPE_FLOAT32 ||
                    rank != 1 || !shape || shape[0] != w->m->state_sizes[j]) {
                    snprintf(why, whysz,
                             "its state %zu is '%s' (dtype %d, rank %zu, first dim %lld), "
                             "model %s has '%s' float32 [%d]",
                             j, nm ? nm : "?", dt, rank,
                             shape && rank ? (long long)shape[0] : -1LL, w->o.model,
                             w->m->state_names[j], w->m->state_sizes[j]);
                    found = 0;
                    break;
                }
            }
        }
        bool more = ss_list_result_more(lr);
        ss_list_result_free(lr);
        lr = NULL;
        if (!more || n == 0)
            break;
    }
    return found < 0 ? 0 : found;
}

/* Connect and declare the schema. 0 when connected; SS_ERR_CONFLICT for a
 * schema conflict (fatal); another negative code for a failure worth
 * retrying after a backoff. */
static int connect_declare(worker *w)
{
    ss_client_options opt;
    ss_state_def defs[SS_MODEL_MAX_LAYERS * 2];
    int64_t shapes[SS_MODEL_MAX_LAYERS * 2];
    char err[SERVE_ERRSZ];
    bool created = false;
    int rc;

    ss_client_options_init(&opt);
    opt.server = w->o.server;
    opt.timeout_ms = (int)w->o.timeout_ms;
    opt.connect_timeout_ms = (int)(w->o.timeout_ms < 5000 ? w->o.timeout_ms : 5000);
    opt.token = w->token;
    opt.token_len = w->token_len;
    opt.client_name = w->name;
    rc = ss_client_open(&w->c, &opt, err, sizeof err);
    if (rc < 0) {
        /* The server away for a while is one line, not one per attempt. */
        bool first = w->connect_failures++ == 0;
        SS_LOG(first ? SS_LOG_WARN : SS_LOG_DEBUG, "serve: connecting to %s: %s%s",
               w->o.server, err,
               first ? " (retrying with backoff; logged once until connected)" : "");
        w->c = NULL;
        return rc;
    }
    for (size_t i = 0; i < w->m->n_states; i++) {
        shapes[i] = w->m->state_sizes[i];
        defs[i] = (ss_state_def){.name = w->m->state_names[i], .dtype = SS_DTYPE_FLOAT32,
                                 .shape = &shapes[i], .rank = 1};
    }
    rc = ss_client_declare(w->c, w->o.saver, defs, w->m->n_states, w->o.ttl_ms, false,
                           &created);
    if (rc == SS_ERR_STATUS(STATESAVER__V1__CODE__ALREADY_EXISTS)) {
        char why[SERVE_ERRSZ], declared[SERVE_ERRSZ];
        snprintf(declared, sizeof declared, "%s", ss_client_last_error(w->c));
        int mrc = saver_matches(w, why, sizeof why);
        if (mrc == 1) {
            SS_LOG(SS_LOG_INFO, "serve: saver %s exists with its own initial values, keep_final "
                   "or TTL; its state names, dtypes and shapes are model %s's: serving it",
                   w->o.saver, w->o.model);
            rc = 0;
        } else if (mrc == 0) {
            SS_LOG(SS_LOG_ERROR, "serve: saver %s exists with a schema that differs from model "
                   "%s: %s (%s)", w->o.saver, w->o.model, why, declared);
            disconnect(w);
            return SS_ERR_CONFLICT;
        } else {
            rc = mrc;
        }
    }
    if (rc < 0) {
        bool first = w->connect_failures++ == 0;
        SS_LOG(first ? SS_LOG_WARN : SS_LOG_DEBUG, "serve: declaring saver %s on %s: %s",
               w->o.saver, w->o.server, ss_client_last_error(w->c));
        if (!transient(w, rc) && SS_IS_STATUS_ERR(rc) &&
            rc != SS_ERR_STATUS(STATESAVER__V1__CODE__RESOURCE_EXHAUSTED)) {
            disconnect(w);
            return SS_ERR_INVALID; /* e.g. a bad saver name or token: fatal */
        }
        disconnect(w);
        return rc;
    }
    /* In a streak of refused leases every reconnect would say this again. */
    SS_LOG(w->lease_refusals ? SS_LOG_DEBUG : SS_LOG_INFO,
           "serve: connected to %s, saver %s %s (%zu states), worker %s%s",
           w->o.server, w->o.saver, created ? "declared" : "already declared",
           w->m->n_states, w->name, w->connect_failures ? " (after failed attempts)" : "");
    w->connect_failures = 0;
    /* The backoff is reset by a Lease that works, not by the connect: a
     * server that accepts connections but refuses every Lease must still
     * see the waits grow. */
    ss_serve_metrics_connected(w->metrics, true);
    return 0;
}

/* Complete the lease; after a transport failure reconnect and retry while
 * the lease can still be alive. */
static void complete(worker *w, const ss_lease *l, results *r)
{
    for (;;) {
        int rc = w->c ? ss_client_complete(w->c, l, r->items, r->n, NULL) : SS_ERR_CLOSED;
        if (rc == 0) {
            w->segments += r->n;
            for (size_t i = 0; i < r->n; i++)
                w->failed_items += r->items[i].error != NULL;
            return;
        }
        if (w->c && !transient(w, rc)) {
            /* Expired lease (FAILED_PRECONDITION) or a refusal: the
             * segments go back to the queue on the server's side. */
            SS_LOG(SS_LOG_WARN, "serve: completing lease %" PRIu64 " (%zu items): %s",
                   ss_lease_id(l), r->n, ss_client_last_error(w->c));
            return;
        }
        if (w->c) {
            SS_LOG(SS_LOG_WARN, "serve: completing lease %" PRIu64 ": %s; reconnecting",
                   ss_lease_id(l), ss_client_last_error(w->c));
            disconnect(w);
        }
        if (wall_ms() >= ss_lease_deadline_ms(l)) {
            SS_LOG(SS_LOG_WARN, "serve: lease %" PRIu64 " passed its deadline before it could "
                   "be completed; its segments return to the queue", ss_lease_id(l));
            return;
        }
        /* Keep the wait within the lease; a stop request does not cut it
         * short, the batch is to be completed first. */
        uint64_t left = ss_lease_deadline_ms(l) - wall_ms();
        struct timespec ts = {.tv_sec = 0, .tv_nsec = 0};
        uint32_t next = ss_backoff_next(&w->backoff);
        uint32_t wait = next < left ? next : (uint32_t)left;
        ts.tv_sec = wait / 1000;
        ts.tv_nsec = (long)(wait % 1000) * 1000000L;
        nanosleep(&ts, NULL);
        int crc = connect_declare(w);
        if (crc == SS_ERR_CONFLICT || crc == SS_ERR_INVALID)
            return;
    }
}

static void log_progress(worker *w, bool force)
{
    if (!force && (w->o.log_every == 0 || w->batches % w->o.log_every != 0))
        return;
    int64_t now = mono_ms();
    double secs = (double)(now - w->log_t) / 1000.0;
    double rate = secs > 0 ? (double)(w->segments - w->log_segments) / secs : 0;
    SS_LOG(SS_LOG_INFO, "serve: %" PRIu64 " batches, %" PRIu64 " segments (%" PRIu64
           " failed), %.1f segments/s since the last report", w->batches, w->segments,
           w->failed_items, rate);
    w->log_t = now;
    w->log_segments = w->segments;
}

/* A computed lease whose Complete is in flight (at most one). */
typedef struct pending {
    ss_lease *l;      /* the lease (owned), NULL when nothing is pending */
    results r;        /* its results, kept for a retry of the Complete */
    uint64_t id;      /* request id of the Complete on w->c */
    bool sent;        /* the Complete went out on the current connection */
    lease_clock k;    /* timings */
} pending;

/* Send the Complete of p without waiting for the reply. A send that fails
 * on the wire leaves p unsent: pending_finish retries it synchronously. */
static void pending_send(worker *w, pending *p)
{
    p->k.computed = mono_us();
    p->sent = false;
    if (w->c) {
        int rc = ss_client_complete_send(w->c, p->l, p->r.items, p->r.n, &p->id);
        if (rc == 0)
            p->sent = true;
        else
            SS_LOG(SS_LOG_DEBUG, "serve: sending the complete of lease %" PRIu64 ": %s",
                   ss_lease_id(p->l), ss_client_last_error(w->c));
    }
    p->k.sent = mono_us();
}

/* Take the reply of p's Complete (or complete it again on a new connection
 * after a transport failure), account for it and release p. */
static void pending_finish(worker *w, pending *p)
{
    if (!p->l)
        return;
    uint64_t done_before = w->segments;
    int64_t t = mono_us();
    int rc = SS_ERR_CLOSED;
    if (p->sent && w->c)
        rc = ss_client_complete_recv(w->c, p->id, p->r.n, NULL);
    if (rc == 0) {
        w->segments += p->r.n;
        for (size_t i = 0; i < p->r.n; i++)
            w->failed_items += p->r.items[i].error != NULL;
    } else if (w->c && p->sent && !transient(w, rc)) {
        /* Expired lease (FAILED_PRECONDITION) or a refusal: the segments
         * go back to the queue on the server's side. */
        SS_LOG(SS_LOG_WARN, "serve: completing lease %" PRIu64 " (%zu items): %s",
               ss_lease_id(p->l), p->r.n, ss_client_last_error(w->c));
    } else {
        if (w->c) {
            SS_LOG(SS_LOG_WARN, "serve: completing lease %" PRIu64 ": %s; reconnecting",
                   ss_lease_id(p->l), ss_client_last_error(w->c));
            disconnect(w);
        }
        complete(w, p->l, &p->r); /* retries on a new connection within the deadline */
    }
    int64_t now = mono_us();
    p->k.blocked = now - t;
    if (w->o.stats_json)
        ss_serve_times_add(&w->lt, &p->k, now, p->r.n);
    ss_serve_metrics_lease(w->metrics, p->l, p->r.items, p->r.n, w->segments > done_before,
                           (double)(p->k.computed - p->k.leased) / 1e6,
                           (double)(now - p->k.lease) / 1e6);
    SS_LOG(SS_LOG_DEBUG, "serve: lease %" PRIu64 ": %zu segments", ss_lease_id(p->l), p->r.n);
    ss_serve_results_free(&p->r);
    ss_lease_free(p->l);
    memset(p, 0, sizeof *p);
    log_progress(w, false);
}

/* What a failed Lease means for the loop. */
typedef enum lease_failure {
    LEASE_FATAL = 0,  /* a refusal that will not change: exit */
    LEASE_RECONNECT,  /* connection lost, server unavailable, saver gone */
    LEASE_BUSY,       /* RESOURCE_EXHAUSTED: the connection is fine */
} lease_failure;

static lease_failure classify_lease_failure(const worker *w, int rc)
{
    if (rc == SS_ERR_STATUS(STATESAVER__V1__CODE__RESOURCE_EXHAUSTED) &&
        !ss_client_broken(w->c))
        return LEASE_BUSY;
    if (transient(w, rc) || rc == SS_ERR_STATUS(STATESAVER__V1__CODE__NOT_FOUND) ||
        rc == SS_ERR_STATUS(STATESAVER__V1__CODE__RESOURCE_EXHAUSTED))
        return LEASE_RECONNECT;
    return LEASE_FATAL;
}

/* A Lease failed with rc: log it (once per streak of failures), finish
 * the Complete in flight, and back off. RESOURCE_EXHAUSTED and UNAVAILABLE
 * are transient: the worker waits and tries again, however long the
 * streak. Returns 0 to go on, or SS_ERR_INVALID when the refusal is fatal. */
static int lease_refused(worker *w, int rc, pending *p)
{
    lease_failure f = classify_lease_failure(w, rc);
    const char *what = f == LEASE_BUSY        ? "; backing off"
                       : f == LEASE_RECONNECT ? "; reconnecting"
                                              : "";
    if (f == LEASE_FATAL)
        SS_LOG(SS_LOG_ERROR, "serve: lease from %s: %s", w->o.server, ss_client_last_error(w->c));
    else if (w->lease_refusals == 0)
        SS_LOG(SS_LOG_WARN, "serve: lease from %s: %s%s (retrying with backoff up to %u ms; "
               "logged once until a lease succeeds)", w->o.server, ss_client_last_error(w->c),
               what, SS_SERVE_BACKOFF_MAX_MS);
    else
        SS_LOG(SS_LOG_DEBUG, "serve: lease from %s: %s%s (%" PRIu64 " in a row)", w->o.server,
               ss_client_last_error(w->c), what, w->lease_refusals + 1);
    w->lease_refusals++;
    ss_serve_metrics_error(w->metrics, SS_SERVE_ERR_LEASE);
    /* The reply of the Complete in flight may have arrived before the
     * failure (kept by the library); else it is retried. */
    pending_finish(w, p);
    if (f != LEASE_BUSY)
        disconnect(w);
    if (f == LEASE_FATAL)
        return SS_ERR_INVALID;
    backoff(w);
    return 0;
}

/* A Lease call succeeded: end a streak of failures. */
static void lease_works(worker *w)
{
    if (w->lease_refusals > 0)
        SS_LOG(SS_LOG_INFO, "serve: leasing from %s again after %" PRIu64 " failed lease%s",
               w->o.server, w->lease_refusals, w->lease_refusals == 1 ? "" : "s");
    w->lease_refusals = 0;
    ss_backoff_reset(&w->backoff);
}

/* The lease loop. Returns the exit status. */
static int loop(worker *w)
{
    pending p = {0};
    int status = SS_SERVE_EXIT_OK;
    while (!stop_requested && (w->o.max_batches == 0 || w->batches < w->o.max_batches)) {
        ss_serve_metrics_beat(w->metrics);
        if (!w->c) {
            /* Nothing can be in flight on a closed connection. */
            pending_finish(w, &p);
            if (w->c)
                continue;
            int rc = connect_declare(w);
            if (rc < 0)
                ss_serve_metrics_error(w->metrics, SS_SERVE_ERR_CONNECT);
            if (rc == SS_ERR_CONFLICT || rc == SS_ERR_INVALID) {
                status = SS_SERVE_EXIT_FAIL;
                break;
            }
            if (rc < 0) {
                backoff(w);
                continue;
            }
        }
        ss_lease *l = NULL;
        /* A Lease that waits to form a batch (--min-batch) would hold back
         * the reply of a Complete in flight: take that reply first. */
        if (w->o.min_batch > 1 && w->o.max_delay_ms > 0)
            pending_finish(w, &p);
        lease_clock k = {.lease = mono_us()};
        /* With a Complete in flight, only take work that is ready now: a
         * parked Lease would hold back that Complete's reply (and the
         * worker's counters) until new work arrives or the wait ends. */
        ss_lease_opts lo = {.max_batch = w->o.batch, .wait_ms = p.l ? 0 : w->o.wait_ms,
                            .lease_ms = w->o.lease_ms, .worker = w->name};
        if (!p.l) {
            lo.min_batch = w->o.min_batch;
            lo.max_delay_ms = w->o.max_delay_ms;
        }
        int rc = ss_client_lease_opts(w->c, w->o.saver, &lo, &l);
        k.leased = mono_us();
        if (rc < 0) {
            if (lease_refused(w, rc, &p) < 0) {
                status = SS_SERVE_EXIT_FAIL;
                break;
            }
            continue;
        }
        lease_works(w);
        if (ss_lease_items(l) == 0) {
            ss_lease_free(l);
            pending_finish(w, &p); /* idle: its reply is long in */
            continue;
        }
        results r = {0};
        rc = ss_serve_compute(w, l, &r);
        /* Batch n+1 is computed: now take n's reply before sending n+1's. */
        pending_finish(w, &p);
        w->batches++;
        if (rc < 0) {
            /* Out of memory: let the lease expire so another worker runs it. */
            SS_LOG(SS_LOG_ERROR, "serve: lease %" PRIu64 ": %s", ss_lease_id(l), ss_strerror(rc));
            ss_serve_results_free(&r);
            ss_lease_free(l);
            log_progress(w, false);
            continue;
        }
        p.l = l;
        p.r = r;
        p.k = k;
        pending_send(w, &p);
    }
    /* Stopping (signal, --max-batches or a fatal error): the batch in
     * flight is completed first. */
    pending_finish(w, &p);
    return status;
}

int ss_serve_main(int argc, char **argv)
{
    worker w = {.o = {.batch = SS_SERVE_BATCH_DEFAULT, .wait_ms = SS_SERVE_WAIT_MS_DEFAULT,
                      .timeout_ms = SS_SERVE_TIMEOUT_MS_DEFAULT,
                      .log_every = SS_SERVE_LOG_EVERY_DEFAULT, .metrics_port_fd = -1}};
    char err[SERVE_ERRSZ], host[64] = "";
    int exit_now, status = SS_SERVE_EXIT_USAGE;

    if (ss_serve_parse_args(&w.o, argc, argv, &exit_now) < 0 || exit_now >= 0)
        return exit_now;
    if ((exit_now = ss_serve_cluster_main(&w.o, argc, argv)) >= 0)
        return exit_now; /* a cluster: one worker process per shard */
    ss_backoff_init(&w.backoff, SS_SERVE_BACKOFF_MIN_MS, SS_SERVE_BACKOFF_MAX_MS, 0);
    if (w.o.token_file && read_token(&w) < 0)
        goto out;
    int rc = ss_model_load(w.o.model, &w.m, err, sizeof err);
    if (rc < 0) {
        fprintf(stderr, "serve: %s\n", err);
        goto out;
    }
    if (w.m->n_states > SS_MODEL_MAX_LAYERS * 2) {
        fprintf(stderr, "serve: model %s has too many states\n", w.o.model);
        goto out;
    }
    status = SS_SERVE_EXIT_FAIL;
    double check_err = 0.0;
    if ((rc = ss_mrun_new(&w.mr, w.m, w.o.precision, &check_err)) < 0) {
        if (rc == SS_ERR_INTERNAL)
            fprintf(stderr, "serve: %s: bf16 self-check failed: worst difference from fp32 %g "
                    "exceeds the bound %g; refusing to serve in bf16\n", w.o.model, check_err,
                    SS_UNROLL_BF16_TOL);
        else
            fprintf(stderr, "serve: %s\n", ss_strerror(rc));
        goto out;
    }
    if (w.o.precision == SS_PRECISION_BF16)
        SS_LOG(SS_LOG_INFO, "serve: precision bf16 (%s kernel), self-check worst difference %.3g "
               "(bound %g)", ss_unroll_kernel(ss_mrun_unroll(w.mr)), check_err, SS_UNROLL_BF16_TOL);
    if (w.o.threads > 0) {
        openblas_set_num_threads(w.o.threads);
    } else if (!getenv("OPENBLAS_NUM_THREADS") && !getenv("OMP_NUM_THREADS")) {
        openblas_set_num_threads(SS_UNROLL_DEFAULT_THREADS);
    }
    /* The unroll runs on its own threads (not OpenBLAS's): the same count. */
    if ((rc = ss_unroll_set_threads(ss_mrun_unroll(w.mr), w.o.threads > 0 ? w.o.threads
                                                           : openblas_get_num_threads())) < 0) {
        fprintf(stderr, "serve: %s\n", ss_strerror(rc));
        goto out;
    }
    gethostname(host, sizeof host - 1);
    snprintf(w.name, sizeof w.name, "statesaver-worker/%s %s:%ld", SS_VERSION,
             host[0] ? host : "?", (long)getpid());

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    char io[96] = "";
    if (w.m->embedding)
        snprintf(io, sizeof io, ", token ids of vocab %d", w.m->vocab);
    if (w.m->head_out)
        snprintf(io + strlen(io), sizeof io - strlen(io), ", head %s",
                 ss_head_act_name(w.m->head_act));
    SS_LOG(SS_LOG_INFO, "serve: model %s (%s, input_size %d, output_size %d, %zu states%s), "
           "saver %s, server %s, batch %u", w.o.model,
           w.m->cell == SS_CELL_LSTM ? "lstm" : w.m->cell == SS_CELL_GRU ? "gru" : "basic_rnn",
           w.m->input_size, ss_model_out_width(w.m), w.m->n_states, io, w.o.saver, w.o.server,
           w.o.batch);
    if (w.o.metrics_listen) {
        uint64_t stall = 2ull * w.o.timeout_ms + w.o.wait_ms +
                         (w.o.lease_ms ? w.o.lease_ms : 60000u) + SS_SERVE_STALL_SLACK_MS;
        rc = ss_serve_metrics_start(&w.metrics, w.o.metrics_listen, w.o.metrics_port_file,
                                    stall);
        if (rc < 0) {
            status = rc == SS_ERR_INVALID ? SS_SERVE_EXIT_USAGE : SS_SERVE_EXIT_FAIL;
            goto out;
        }
        if (w.o.metrics_port_fd >= 0) {
            /* The cluster parent reads "PORT\n" and then EOF. */
            if (dprintf(w.o.metrics_port_fd, "%d\n", ss_serve_metrics_port(w.metrics)) < 0)
                SS_LOG(SS_LOG_WARN, "serve: --metrics-port-fd %d: %s", w.o.metrics_port_fd,
                       strerror(errno));
            close(w.o.metrics_port_fd);
        }
    } else if (w.o.metrics_port_file || w.o.metrics_port_fd >= 0) {
        fprintf(stderr, "serve: --metrics-port-file/--metrics-port-fd need --metrics-listen\n");
        status = SS_SERVE_EXIT_USAGE;
        goto out;
    }
    w.log_t = mono_ms();
    w.t_start_us = mono_us();
    status = loop(&w);
    log_progress(&w, true);
    SS_LOG(SS_LOG_INFO, "serve: stopping (%s)",
           stop_requested ? "signal" : status == SS_SERVE_EXIT_OK ? "--max-batches" : "error");
    if (w.o.stats_json && ss_serve_write_stats(&w, (double)(mono_us() - w.t_start_us) / 1e6) < 0 && status == SS_SERVE_EXIT_OK)
        status = SS_SERVE_EXIT_FAIL;
out:
    ss_serve_times_free(&w.lt);
    disconnect(&w);
    ss_serve_metrics_stop(w.metrics);
    ss_mrun_free(w.mr);
    ss_model_free(w.m);
    ss_token_free(w.token, w.token_len);
    return status;
}
