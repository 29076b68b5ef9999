/* dispatch_jobs -- Submit, Lease, Complete and Await handlers: glue between
 * the server's requests and the job queue (jobs.h).
 *
 * The queue answers through a reply callback; here that callback is
 * ss_request_reply / ss_request_error on the request itself, so a request
 * stays parked inside the queue (wait_ms) holding its connection
 * reference, exactly like a barrier wait. The queue is also a server
 * module: its shutdown hook answers parked requests, its stats hook fills
 * the queue fields of Stats. It subscribes to the commit events (Save/Drop
 * commits move next_segment) and publishes its own Complete commits there
 * (skipping its own subscription). The handlers reach the queue through
 * their registration context, so there is no global.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "commit_events.h"
#include "dispatch.h"
#include "dispatch_internal.h"
#include "jobs.h"
#include "server_metrics.h"
#include "ss_error.h"
#include "ss_log.h"

/* Bytes of a Lease reply kept free for the envelope and per-item fields
 * when the tensor budget is derived from --max-frame-bytes. */
#define SS_JOBS_REPLY_SLACK (64u * 1024u)

/* The queue as a server module. */
typedef struct jobs_mod {
    ss_server *srv;     /* owner */
    ss_jobs *jobs;      /* the queue; NULL once closed */
    bool closing;       /* ss_jobs_close called */
    bool free_pending;  /* the free hook ran before the queue finished closing */
    int sub;            /* commit-events subscription, or -1 */
    ss_handler_fn drop_fn; /* the state API's Drop handler (wrapped) */
    void *drop_ctx;     /* its context */
} jobs_mod;

static int reply_fn(void *arg, Statesaver__V1__Response *resp)
{
    ss_request *req = arg;
    bool gone = ss_request_closed(req);
    if (resp->status && resp->status->code != STATESAVER__V1__CODE__OK) {
        ss_request_error(req, (int)resp->status->code, "%s",
                         resp->status->message ? resp->status->message : "");
        return gone ? SS_ERR_CLOSED : 0;
    }
    if (resp->body_case == STATESAVER__V1__RESPONSE__BODY_LEASE && !gone) {
        /* An oversized reply would turn into RESOURCE_EXHAUSTED and lose
         * the lease: refuse it here so the queue takes the segments back. */
        uint32_t max = ss_server_config(ss_request_server(req))->max_frame_bytes;
        size_t n = statesaver__v1__response__get_packed_size(resp);
        if (n + 64 > max) {
            ss_request_error(req, STATESAVER__V1__CODE__RESOURCE_EXHAUSTED,
                             "lease reply of %zu bytes exceeds the frame limit (%" PRIu32
                             "); the segment's inputs and state are too large", n, max);
            return SS_ERR_TOO_BIG;
        }
    }
    if (resp->body_case == STATESAVER__V1__RESPONSE__BODY_LEASE && !gone &&
        resp->lease)
        ss_server_metrics_leased(ss_request_server(req), resp->lease->n_items);
    ss_request_reply(req, resp);
    return gone ? SS_ERR_CLOSED : 0;
}

static ss_jobs *jobs_of(ss_request *req, jobs_mod *m)
{
    if (!m->jobs) {
        ss_request_error(req, STATESAVER__V1__CODE__UNAVAILABLE,
                         "the job queue is not running");
        return NULL;
    }
    return m->jobs;
}

static void h_submit(ss_request *req, void *ctx)
{
    ss_jobs *j = jobs_of(req, ctx);
    if (j)
        ss_jobs_submit(j, ss_request_message(req)->submit, reply_fn, req);
}

/* The connection of a parked Lease/Await closed: stop waiting now. A
 * request that is not parked is answered by its own path. */
static void on_request_closed(ss_request *req, void *arg)
{
    jobs_mod *m = arg;
    if (m->jobs)
        ss_jobs_cancel(m->jobs, req);
}

static void h_lease(ss_request *req, void *ctx)
{
    ss_jobs *j = jobs_of(req, ctx);
    if (!j)
        return;
    /* Registered first: the request may be gone once ss_jobs_lease returns. */
    ss_request_on_close(req, on_request_closed, ctx);
    ss_jobs_lease(j, ss_request_message(req)->lease, reply_fn, req);
}

static void h_complete(ss_request *req, void *ctx)
{
    ss_jobs *j = jobs_of(req, ctx);
    if (j)
        ss_jobs_complete(j, ss_request_message(req)->complete, reply_fn, req);
}

static void h_cancel(ss_request *req, void *ctx)
{
    ss_jobs *j = jobs_of(req, ctx);
    if (j)
        ss_jobs_cancel_seqs(j, ss_request_message(req)->cancel, reply_fn, req);
}

/* Drop: the job records of the dropped keys (or the whole saver) go too,
 * in a writer op queued right before the Drop's own. Only a Drop the
 * state API will accept (the same checks) touches the queue. */
static void h_drop(ss_request *req, void *ctx)
{
    jobs_mod *m = ctx;
    const Statesaver__V1__DropRequest *b = ss_request_message(req)->drop;
    const ss_config *cfg = ss_server_config(ss_request_server(req));
    bool ok = m->jobs && b->saver && b->saver[0] && !(b->all && b->n_keys) &&
              (b->all || (b->n_keys >= 1 && b->n_keys <= cfg->max_keys));
    for (size_t k = 0; ok && k < b->n_keys; k++)
        ok = b->keys[k].len >= SS_KEY_MIN && b->keys[k].len <= cfg->max_key_bytes;
    ss_bytes kb[64];
    ss_bytes *keys = b->n_keys <= 64 ? kb : (ok ? calloc(b->n_keys, sizeof *keys) : NULL);
    if (ok && b->n_keys && keys) {
        for (size_t k = 0; k < b->n_keys; k++) {
            keys[k].data = b->keys[k].data;
            keys[k].len = b->keys[k].len;
        }
        ss_jobs_forget(m->jobs, b->saver, b->n_keys, keys, false);
    } else if (ok && b->all) {
        ss_jobs_forget(m->jobs, b->saver, 0, NULL, true);
    }
    if (keys != kb)
        free(keys);
    m->drop_fn(req, m->drop_ctx);
}

static void h_await(ss_request *req, void *ctx)
{
    ss_jobs *j = jobs_of(req, ctx);
    if (!j)
        return;
    ss_request_on_close(req, on_request_closed, ctx);
    ss_jobs_await(j, ss_request_message(req)->await_segment, reply_fn, req);
}

/* A Complete committed state saves: publish them (Fetch barriers wake);
 * the queue knows already, so its own subscription is skipped. */
static void on_saved(void *arg, const char *saver, size_t n, const ss_bytes *keys)
{
    jobs_mod *m = arg;
    ss_commit_events_publish(ss_server_commits(m->srv), m->sub, saver, n, keys);
}

/* Someone else's commit (Save, Drop): re-read those keys' next_segment. */
static void on_commit(void *arg, const char *saver, size_t n, const ss_bytes *keys)
{
    jobs_mod *m = arg;
    if (m->jobs)
        ss_jobs_notify_saved(m->jobs, saver, n, keys);
}

static void mod_stats(void *arg, const char *saver, Statesaver__V1__StatsResponse *out)
{
    jobs_mod *m = arg;
    if (!m->jobs)
        return;
    ss_jobs_stats st;
    ss_jobs_stats_get(m->jobs, saver, &st);
    out->queued = st.queued;
    out->leased = st.leased;
    out->completed = st.completed;
    out->failed = st.failed;
    out->expired_leases = st.expired_leases;
    out->saves_applied += st.saves_applied; /* plus direct Saves */
}

static void on_closed(void *arg)
{
    jobs_mod *m = arg;
    m->jobs = NULL;
    if (m->free_pending)
        free(m);
}

static void mod_shutdown(void *arg)
{
    jobs_mod *m = arg;
    if (m->jobs && !m->closing) {
        m->closing = true;
        ss_jobs_close(m->jobs, on_closed, m);
    }
}

/* Runs after the writer stopped (normal shutdown: the queue has closed
 * already) or after a failed start (close it now; the loop still runs). */
static void mod_free(void *arg)
{
    jobs_mod *m = arg;
    mod_shutdown(m);
    ss_commit_events_unsubscribe(ss_server_commits(m->srv), m->sub);
    m->sub = -1;
    if (m->jobs) {
        m->free_pending = true;
        return;
    }
    free(m);
}

int ss_dispatch_jobs_init(ss_dispatch *d)
{
    ss_server *srv = d->srv;
    const ss_config *cfg = ss_server_config(srv);
    jobs_mod *m = calloc(1, sizeof *m);
    if (!m)
        return SS_ERR_NOMEM;
    m->srv = srv;
    m->sub = -1;
    ss_jobs_options opt;
    ss_jobs_options_default(&opt);
    opt.queue_capacity = cfg->queue_capacity;
    opt.max_attempts = cfg->max_attempts;
    opt.lease_ms = cfg->lease_ms;
    opt.max_batch = cfg->max_keys;
    opt.max_key_bytes = cfg->max_key_bytes;
    opt.max_reply_bytes = cfg->max_frame_bytes > 2 * SS_JOBS_REPLY_SLACK
                              ? cfg->max_frame_bytes - SS_JOBS_REPLY_SLACK
                              : cfg->max_frame_bytes / 2;
    opt.max_frame_bytes = cfg->max_frame_bytes;
    opt.on_saved = on_saved;
    opt.on_saved_arg = m;
    char msg[SS_STORE_MSG];
    int rc = ss_jobs_open(&m->jobs, ss_server_store(srv), ss_server_writer(srv),
                          ss_server_loop(srv), &opt, msg);
    if (rc < 0) {
        SS_LOG(SS_LOG_ERROR, "%s", msg);
        free(m);
        return rc;
    }
    ss_module mod = {
        .name = "jobs",
        .arg = m,
        .shutdown = mod_shutdown,
        .stats = mod_stats,
        .free = mod_free,
    };
    rc = ss_server_add_module(srv, &mod);
    if (rc < 0) {
        m->free_pending = true;
        m->closing = true;
        ss_jobs_close(m->jobs, on_closed, m);
        return rc;
    }
    /* Subscribed after the barrier, so a Save wakes Fetches first, as
     * before. The module's free hook unsubscribes. */
    m->sub = ss_commit_events_subscribe(ss_server_commits(srv), on_commit, m);
    if (m->sub < 0) {
        SS_LOG(SS_LOG_ERROR, "job queue: cannot subscribe to commits: %s",
               ss_strerror(m->sub));
        return m->sub; /* the module's free hook closes the queue */
    }
    ss_dispatch_register(d, STATESAVER__V1__REQUEST__BODY_SUBMIT, h_submit, m);
    ss_dispatch_register(d, STATESAVER__V1__REQUEST__BODY_LEASE, h_lease, m);
    ss_dispatch_register(d, STATESAVER__V1__REQUEST__BODY_COMPLETE, h_complete, m);
    ss_dispatch_register(d, STATESAVER__V1__REQUEST__BODY_AWAIT_SEGMENT, h_await, m);
    ss_dispatch_register(d, STATESAVER__V1__REQUEST__BODY_CANCEL, h_cancel, m);
    /* Wrap the state API's Drop (registered before the queue starts). */
    m->drop_fn = d->slots[STATESAVER__V1__REQUEST__BODY_DROP].fn;
    m->drop_ctx = d->slots[STATESAVER__V1__REQUEST__BODY_DROP].ctx;
    if (m->drop_fn)
        ss_dispatch_register(d, STATESAVER__V1__REQUEST__BODY_DROP, h_drop, m);
    return 0;
}

/* The queue behind the Submit handler, for the slot RPCs
 * (dispatch_cluster.c, jobs_slots.h); NULL once closed. */
ss_jobs *ss_dispatch_jobs(ss_dispatch *d)
{
    const ss_dispatch_slot *s = &d->slots[STATESAVER__V1__REQUEST__BODY_SUBMIT];
    if (s->fn != h_submit || !s->ctx)
        return NULL;
    return ((jobs_mod *)s->ctx)->jobs;
}
