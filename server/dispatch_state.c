/* dispatch_state -- handlers for Declare, Fetch (with barrier waits), Save,
 * Drop and List: the saver/state API over the store and the writer. */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "commit_events.h"
#include "dispatch.h"
#include "dispatch_internal.h"
#include "ss_error.h"
#include "ss_keyfmt.h"
#include "ss_log.h"
#include "ss_tensor.h"

/* ---- schema -> StateSpec messages (borrowing the schema's memory) ---- */

typedef struct spec_msgs {
    Statesaver__V1__StateSpec *specs;  /* n_states */
    Statesaver__V1__StateSpec **ptrs;  /* n_states pointers into specs */
    Statesaver__V1__Tensor *initial;   /* n_states initial tensors */
} spec_msgs;

static void specs_free(spec_msgs *m)
{
    free(m->specs);
    free(m->ptrs);
    free(m->initial);
    memset(m, 0, sizeof *m);
}

/* The messages borrow s (names, shapes, initial data): keep s alive. */
static int specs_build(const ss_schema *s, spec_msgs *m)
{
    size_t n = s->n_states ? s->n_states : 1;
    m->specs = calloc(n, sizeof *m->specs);
    m->ptrs = calloc(n, sizeof *m->ptrs);
    m->initial = calloc(n, sizeof *m->initial);
    if (!m->specs || !m->ptrs || !m->initial) {
        specs_free(m);
        return SS_ERR_NOMEM;
    }
    for (size_t i = 0; i < s->n_states; i++) {
        const ss_state_spec *sp = &s->states[i];
        Statesaver__V1__StateSpec *o = &m->specs[i];
        statesaver__v1__state_spec__init(o);
        o->name = sp->name;
        o->dtype = sp->dtype;
        o->n_shape = sp->rank;
        o->shape = (int64_t *)sp->shape;
        if (sp->initial) {
            statesaver__v1__tensor__init(&m->initial[i]);
            ss_tensor_borrow(&m->initial[i], sp->dtype, sp->shape, sp->rank,
                             sp->initial, sp->nbytes);
            o->initial = &m->initial[i];
        }
        m->ptrs[i] = o;
    }
    return 0;
}

/* A Declare queued in the writer but not committed yet. Writes that
 * follow it (pipelined Save/Drop) validate against its schema: the writer
 * runs them after the Declare, and the store re-checks the saver inside
 * the transaction, so they fail cleanly if the Declare failed. Reads keep
 * seeing committed data only. */
typedef struct ss_pending_decl {
    struct ss_pending_decl *next; /* server list */
    ss_schema *schema;            /* one reference */
} ss_pending_decl;

static ss_pending_decl *pending_add(ss_dispatch *dp, ss_schema *schema)
{
    ss_pending_decl *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->schema = ss_schema_ref(schema);
    p->next = dp->pending_decls;
    dp->pending_decls = p;
    return p;
}

static void pending_remove(ss_dispatch *dp, ss_pending_decl *p)
{
    for (ss_pending_decl **pp = &dp->pending_decls; *pp; pp = &(*pp)->next)
        if (*pp == p) {
            *pp = p->next;
            break;
        }
    ss_schema_unref(p->schema);
    free(p);
}

static ss_schema *pending_find(ss_dispatch *dp, const char *saver)
{
    for (ss_pending_decl *p = dp->pending_decls; p; p = p->next)
        if (strcmp(p->schema->saver, saver) == 0)
            return ss_schema_ref(p->schema);
    return NULL;
}

/* Look up a saver (for a write: also one whose Declare is still queued);
 * answers req and returns NULL when it fails. */
static ss_schema *lookup_saver_for(ss_request *req, const char *saver,
                                   bool for_write)
{
    ss_server *srv = ss_request_server(req);
    if (!ss_request_check_saver_name(req, saver))
        return NULL;
    ss_schema *schema = NULL;
    int rc = ss_store_schema(ss_server_store(srv), saver, &schema);
    if (rc == SS_ERR_NOT_FOUND && for_write &&
        (schema = pending_find(ss_request_dispatch(req), saver)) != NULL)
        return schema;
    if (rc == SS_ERR_NOT_FOUND) {
        ss_request_error(req, STATESAVER__V1__CODE__NOT_FOUND,
                         "saver '%s' is not declared", saver);
        return NULL;
    }
    if (rc < 0) {
        ss_request_fail(req, rc, NULL);
        return NULL;
    }
    return schema;
}

static ss_schema *lookup_saver(ss_request *req, const char *saver)
{
    return lookup_saver_for(req, saver, false);
}

/* Validate a key list; fills keys (n entries). Answers req on failure. */
static bool check_keys(ss_request *req, size_t n, const ProtobufCBinaryData *in,
                       ss_bytes *keys)
{
    char what[32];
    for (size_t i = 0; i < n; i++) {
        snprintf(what, sizeof what, "keys[%zu]", i);
        if (!ss_request_check_key(req, what, in[i].data, in[i].len))
            return false;
        keys[i].data = in[i].data;
        keys[i].len = in[i].len;
    }
    return true;
}

/* ---- Declare ---- */

typedef struct declare_op {
    ss_write_op op;     /* writer op (first member) */
    ss_request *req;    /* answered in done */
    ss_schema *schema;  /* the declared schema (one reference) */
    ss_pending_decl *pending; /* visible to pipelined writes until done */
    bool created;       /* result */
} declare_op;

static int declare_run(ss_write_op *op, ss_store_txn *txn,
                       char msg[SS_STORE_MSG])
{
    declare_op *d = (declare_op *)op;
    return ss_store_declare(txn, d->schema, &d->created, msg);
}

static void declare_done(ss_write_op *op, int rc, const char *msg)
{
    declare_op *d = (declare_op *)op;
    ss_request *req = d->req;
    const ss_schema *s = d->schema;
    if (d->pending)
        pending_remove(ss_request_dispatch(req), d->pending);
    if (rc == SS_ERR_CONFLICT) {
        ss_request_error(req, STATESAVER__V1__CODE__ALREADY_EXISTS, "%s",
                         msg && *msg ? msg : "saver exists with another schema");
    } else if (rc < 0) {
        ss_request_fail(req, rc, msg);
    } else {
        spec_msgs m;
        memset(&m, 0, sizeof m);
        if (specs_build(s, &m) < 0) {
            ss_request_fail(req, SS_ERR_NOMEM, NULL);
        } else {
            if (d->created)
                SS_LOG(SS_LOG_INFO, "declared saver '%s' (%zu states, "
                       "%zu bytes per sequence)", s->saver, s->n_states,
                       s->state_bytes);
            Statesaver__V1__DeclareResponse dr =
                STATESAVER__V1__DECLARE_RESPONSE__INIT;
            dr.created = d->created;
            dr.n_states = s->n_states;
            dr.states = m.ptrs;
            dr.idle_ttl_ms = s->idle_ttl_ms;
            dr.keep_final = s->keep_final;
            dr.max_in_flight = s->max_in_flight;
            ss_response_msg resp = STATESAVER__V1__RESPONSE__INIT;
            resp.body_case = STATESAVER__V1__RESPONSE__BODY_DECLARE;
            resp.declare = &dr;
            ss_request_reply(req, &resp);
            specs_free(&m);
        }
    }
    ss_schema_unref(d->schema);
    free(d);
}

static void h_declare(ss_request *req, void *ctx)
{
    ss_server *srv = ss_request_server(req);
    const Statesaver__V1__DeclareRequest *body = ss_request_message(req)->declare;
    if (!ss_request_check_saver_name(req, body->saver))
        return;
    char msg[SS_STORE_MSG] = "";
    ss_schema *schema = NULL;
    int rc = ss_schema_from_declare(body, &schema, msg);
    if (rc < 0) {
        ss_request_fail(req, rc == SS_ERR_NOMEM ? rc : SS_ERR_INVALID, msg);
        return;
    }
    declare_op *d = calloc(1, sizeof *d);
    if (!d) {
        ss_schema_unref(schema);
        ss_request_fail(req, SS_ERR_NOMEM, NULL);
        return;
    }
    d->op.run = declare_run;
    d->op.done = declare_done;
    d->req = req;
    d->schema = schema;
    d->pending = pending_add(ss_request_dispatch(req), schema); /* NULL (no memory): just slower */
    ss_writer_submit(ss_server_writer(srv), &d->op);
}

/* ---- Fetch ---- */

typedef struct fetch_ctx {
    ss_schema *schema;     /* one reference */
    size_t n;              /* keys */
    ss_bytes *keys;        /* borrowed from the request message */
    uint64_t min_segment;  /* barrier target */
    uint64_t wait_ms;      /* capped wait */
    uint64_t *segs;        /* scratch for barrier checks (n) */
    ss_barrier_waiter *waiter; /* while parked */
} fetch_ctx;

static void fetch_ctx_free(fetch_ctx *f)
{
    if (!f)
        return;
    ss_schema_unref(f->schema);
    free(f->keys);
    free(f->segs);
    free(f);
}

/* Read the states and answer; frees f. */
static void fetch_reply(ss_request *req, fetch_ctx *f)
{
    ss_server *srv = ss_request_server(req);
    const ss_schema *s = f->schema;
    size_t n = f->n;
    size_t ns = s->n_states;
    char msg[SS_STORE_MSG] = "";
    void **bufs = calloc(ns ? ns : 1, sizeof *bufs);
    uint64_t *next = calloc(n, sizeof *next);
    uint64_t *updated = calloc(n, sizeof *updated);
    Statesaver__V1__Tensor *tens = calloc(ns ? ns : 1, sizeof *tens);
    Statesaver__V1__Tensor **tptr = calloc(ns ? ns : 1, sizeof *tptr);
    char **names = calloc(ns ? ns : 1, sizeof *names);
    int64_t (*dims)[SS_TENSOR_MAX_RANK + 1] = calloc(ns ? ns : 1, sizeof *dims);
    int rc = 0;
    if (!bufs || !next || !updated || !tens || !tptr || !names || !dims) {
        rc = SS_ERR_NOMEM;
        goto out;
    }
    for (size_t i = 0; i < ns; i++) {
        /* n * nbytes was checked against the frame limit by the caller. */
        bufs[i] = malloc(n * s->states[i].nbytes + 1);
        if (!bufs[i]) {
            rc = SS_ERR_NOMEM;
            goto out;
        }
    }
    rc = ss_store_fetch(ss_server_store(srv), s, n, f->keys, (void *const *)bufs, next,
                        updated, msg);
    if (rc < 0)
        goto out;
    for (size_t i = 0; i < ns; i++) {
        const ss_state_spec *sp = &s->states[i];
        dims[i][0] = (int64_t)n;
        memcpy(&dims[i][1], sp->shape, sp->rank * sizeof(int64_t));
        statesaver__v1__tensor__init(&tens[i]);
        ss_tensor_borrow(&tens[i], sp->dtype, dims[i], sp->rank + 1, bufs[i],
                         n * sp->nbytes);
        tptr[i] = &tens[i];
        names[i] = sp->name;
    }
    Statesaver__V1__FetchResponse fr = STATESAVER__V1__FETCH_RESPONSE__INIT;
    fr.n_names = ns;
    fr.names = names;
    fr.n_states = ns;
    fr.states = tptr;
    fr.n_next_segment = n;
    fr.next_segment = next;
    fr.n_updated_ms = n;
    fr.updated_ms = updated;
    ss_response_msg resp = STATESAVER__V1__RESPONSE__INIT;
    resp.body_case = STATESAVER__V1__RESPONSE__BODY_FETCH;
    resp.fetch = &fr;
    ss_request_reply(req, &resp);
out:
    if (rc < 0)
        ss_request_fail(req, rc, msg);
    if (bufs)
        for (size_t i = 0; i < ns; i++)
            free(bufs[i]);
    free(bufs);
    free(next);
    free(updated);
    free(tens);
    free(tptr);
    free(names);
    free(dims);
    fetch_ctx_free(f);
}

/* Index of the first key below the target, n if none; <0 on error. */
static long fetch_lagging(ss_server *srv, const char *saver, fetch_ctx *f)
{
    int rc = ss_store_segments(ss_server_store(srv), saver, f->n, f->keys, f->segs);
    if (rc < 0)
        return rc;
    for (size_t i = 0; i < f->n; i++)
        if (f->segs[i] < f->min_segment)
            return (long)i;
    return (long)f->n;
}

static bool fetch_ready(ss_request *req, void *arg)
{
    fetch_ctx *f = arg;
    long lag = fetch_lagging(ss_request_server(req),
                             ss_request_message(req)->fetch->saver, f);
    /* On a read error proceed, so the fetch itself reports it. */
    return lag < 0 || (size_t)lag == f->n;
}

static void fetch_wake(ss_request *req, ss_barrier_event ev, void *arg)
{
    fetch_ctx *f = arg;
    ss_request_on_close(req, NULL, NULL);
    switch (ev) {
    case SS_BARRIER_READY:
        fetch_reply(req, f);
        return;
    case SS_BARRIER_TIMEOUT: {
        long lag = fetch_lagging(ss_request_server(req),
                                 ss_request_message(req)->fetch->saver, f);
        if (lag >= 0 && (size_t)lag == f->n) {
            /* Reached in the same instant the timer fired. */
            fetch_reply(req, f);
            return;
        }
        if (lag < 0) {
            ss_request_fail(req, (int)lag, NULL);
        } else {
            char key[4 * SS_DISPATCH_KEY_SHOW + 8];
            ss_keyfmt(key, sizeof key, f->keys[lag].data, f->keys[lag].len);
            ss_request_error(req, STATESAVER__V1__CODE__DEADLINE_EXCEEDED,
                             "waited %" PRIu64 " ms: key %s is at segment %"
                             PRIu64 ", waiting for %" PRIu64, f->wait_ms, key,
                             f->segs[lag], f->min_segment);
        }
        break;
    }
    case SS_BARRIER_SHUTDOWN:
        ss_request_error(req, STATESAVER__V1__CODE__UNAVAILABLE,
                         "server is shutting down");
        break;
    case SS_BARRIER_CLOSED:
        ss_request_error(req, STATESAVER__V1__CODE__CANCELLED,
                         "connection closed");
        break;
    }
    fetch_ctx_free(f);
}

/* The connection of a parked Fetch closed: stop waiting now. */
static void fetch_on_close(ss_request *req, void *arg)
{
    (void)req;
    ss_barrier_cancel(((fetch_ctx *)arg)->waiter);
}

static void h_fetch(ss_request *req, void *ctx)
{
    ss_server *srv = ss_request_server(req);
    const Statesaver__V1__FetchRequest *body = ss_request_message(req)->fetch;
    size_t n = body->n_keys;
    if (!ss_request_check_saver_name(req, body->saver) ||
        !ss_request_check_key_count(req, n))
        return;
    fetch_ctx *f = calloc(1, sizeof *f);
    if (!f || !(f->keys = calloc(n, sizeof *f->keys)) ||
        !(f->segs = calloc(n, sizeof *f->segs))) {
        fetch_ctx_free(f);
        ss_request_fail(req, SS_ERR_NOMEM, NULL);
        return;
    }
    f->n = n;
    f->min_segment = body->min_segment;
    f->wait_ms = body->wait_ms > SS_WAIT_MS_MAX ? SS_WAIT_MS_MAX : body->wait_ms;
    if (!check_keys(req, n, body->keys, f->keys)) {
        fetch_ctx_free(f);
        return;
    }
    f->schema = lookup_saver(req, body->saver);
    if (!f->schema) {
        fetch_ctx_free(f);
        return;
    }
    size_t total;
    if (__builtin_mul_overflow(n, f->schema->state_bytes, &total) ||
        total > ss_server_config(srv)->max_frame_bytes) {
        ss_request_error(req, STATESAVER__V1__CODE__RESOURCE_EXHAUSTED,
                         "fetching %zu keys of %zu bytes each exceeds the "
                         "frame limit of %" PRIu32 " bytes (--max-frame-bytes)",
                         n, f->schema->state_bytes, ss_server_config(srv)->max_frame_bytes);
        fetch_ctx_free(f);
        return;
    }
    if (f->wait_ms > 0 && f->min_segment > 0) {
        long lag = fetch_lagging(srv, body->saver, f);
        if (lag >= 0 && (size_t)lag < n) {
            int rc = ss_barrier_park(ss_request_dispatch(req)->barrier, req,
                                     body->saver, n, f->keys, f->wait_ms,
                                     fetch_ready, fetch_wake, f, &f->waiter);
            if (rc < 0) {
                fetch_ctx_free(f);
                ss_request_fail(req, rc, NULL);
            } else {
                ss_request_on_close(req, fetch_on_close, f);
            }
            return;
        }
    }
    fetch_reply(req, f);
}

/* ---- Save ---- */

typedef struct save_op {
    ss_write_op op;          /* writer op (first member) */
    ss_request *req;         /* answered in done */
    ss_schema *schema;       /* one reference */
    size_t n;                /* keys */
    ss_bytes *keys;          /* borrowed from the request */
    ss_save_item *items;     /* n */
    const void **ptrs;       /* n * n_states state row pointers */
    bool *applied;           /* n results */
    uint64_t now_ms;         /* update time */
} save_op;

static void save_op_free(save_op *s)
{
    if (!s)
        return;
    ss_schema_unref(s->schema);
    free(s->keys);
    free(s->items);
    free(s->ptrs);
    free(s->applied);
    free(s);
}

static int save_run(ss_write_op *op, ss_store_txn *txn, char msg[SS_STORE_MSG])
{
    save_op *s = (save_op *)op;
    return ss_store_save(txn, s->schema, s->n, s->items, s->applied, s->now_ms,
                         msg);
}

static void save_done(ss_write_op *op, int rc, const char *msg)
{
    save_op *s = (save_op *)op;
    ss_request *req = s->req;
    ss_server *srv = ss_request_server(req);
    if (rc < 0) {
        ss_request_fail(req, rc, msg);
    } else {
        ss_commit_events_publish(ss_server_commits(srv), -1, s->schema->saver,
                                 s->n, s->keys);
        for (size_t k = 0; k < s->n; k++)
            ss_server_counters_get(srv)->saves_applied += !s->applied[k];
        /* protobuf_c_boolean is an int, not a bool: convert. */
        protobuf_c_boolean *flags = calloc(s->n, sizeof *flags);
        if (!flags) {
            ss_request_fail(req, SS_ERR_NOMEM, "saved, but out of memory "
                            "for the reply");
        } else {
            for (size_t k = 0; k < s->n; k++)
                flags[k] = s->applied[k];
            Statesaver__V1__SaveResponse sr =
                STATESAVER__V1__SAVE_RESPONSE__INIT;
            sr.n_already_applied = s->n;
            sr.already_applied = flags;
            ss_response_msg resp = STATESAVER__V1__RESPONSE__INIT;
            resp.body_case = STATESAVER__V1__RESPONSE__BODY_SAVE;
            resp.save = &sr;
            ss_request_reply(req, &resp);
            free(flags);
        }
    }
    save_op_free(s);
}

/* Check states[i] against spec i for n keys; answers req on failure. */
static bool check_state_tensor(ss_request *req, size_t i,
                               const ss_state_spec *sp,
                               const Statesaver__V1__Tensor *t, size_t n)
{
    char want[128], got[128];
    if (!t) {
        ss_request_error(req, STATESAVER__V1__CODE__INVALID_ARGUMENT,
                         "states[%zu] ('%s') is missing", i, sp->name);
        return false;
    }
    if ((int)t->dtype != sp->dtype) {
        ss_request_error(req, STATESAVER__V1__CODE__INVALID_ARGUMENT,
                         "states[%zu] ('%s'): dtype %s, expected %s", i,
                         sp->name, ss_dtype_name(t->dtype),
                         ss_dtype_name(sp->dtype));
        return false;
    }
    int64_t dims[SS_TENSOR_MAX_RANK + 1];
    dims[0] = (int64_t)n;
    memcpy(&dims[1], sp->shape, sp->rank * sizeof(int64_t));
    bool same = t->n_shape == sp->rank + 1;
    for (size_t d = 0; same && d < t->n_shape; d++)
        same = t->shape[d] == dims[d];
    if (!same) {
        ss_shape_format(dims, sp->rank + 1, want, sizeof want);
        if (t->n_shape <= SS_TENSOR_MAX_RANK + 1)
            ss_shape_format(t->shape, t->n_shape, got, sizeof got);
        else
            snprintf(got, sizeof got, "rank %zu", t->n_shape);
        ss_request_error(req, STATESAVER__V1__CODE__INVALID_ARGUMENT,
                         "states[%zu] ('%s'): shape %s, expected %s "
                         "([keys, ...state shape])", i, sp->name, got, want);
        return false;
    }
    size_t need = n * sp->nbytes; /* n <= max keys; fits: checked by caller */
    if (t->data.len != need) {
        ss_request_error(req, STATESAVER__V1__CODE__INVALID_ARGUMENT,
                         "states[%zu] ('%s'): %zu data bytes, shape and dtype "
                         "need %zu", i, sp->name, t->data.len, need);
        return false;
    }
    return true;
}

static void h_save(ss_request *req, void *ctx)
{
    ss_server *srv = ss_request_server(req);
    const Statesaver__V1__SaveRequest *body = ss_request_message(req)->save;
    size_t n = body->n_keys;
    if (!ss_request_check_saver_name(req, body->saver) ||
        !ss_request_check_key_count(req, n))
        return;
    save_op *s = calloc(1, sizeof *s);
    if (!s || !(s->keys = calloc(n, sizeof *s->keys))) {
        save_op_free(s);
        ss_request_fail(req, SS_ERR_NOMEM, NULL);
        return;
    }
    s->n = n;
    if (!check_keys(req, n, body->keys, s->keys))
        goto fail;
    s->schema = lookup_saver_for(req, body->saver, true);
    if (!s->schema)
        goto fail;
    const ss_schema *sc = s->schema;
    if (body->n_states != sc->n_states) {
        ss_request_error(req, STATESAVER__V1__CODE__INVALID_ARGUMENT,
                         "%zu state tensors given, saver '%s' declares %zu "
                         "(one per state, in schema order)", body->n_states,
                         sc->saver, sc->n_states);
        goto fail;
    }
    size_t total;
    if (__builtin_mul_overflow(n, sc->state_bytes, &total) ||
        total > ss_server_config(srv)->max_frame_bytes) {
        ss_request_error(req, STATESAVER__V1__CODE__RESOURCE_EXHAUSTED,
                         "%zu keys of %zu bytes each exceed the frame limit",
                         n, sc->state_bytes);
        goto fail;
    }
    for (size_t i = 0; i < sc->n_states; i++)
        if (!check_state_tensor(req, i, &sc->states[i], body->states[i], n))
            goto fail;
    if (body->n_segment != n) {
        ss_request_error(req, STATESAVER__V1__CODE__INVALID_ARGUMENT,
                         "%zu segments for %zu keys (one per key)",
                         body->n_segment, n);
        goto fail;
    }
    if (body->n_final != 0 && body->n_final != n) {
        ss_request_error(req, STATESAVER__V1__CODE__INVALID_ARGUMENT,
                         "%zu final flags for %zu keys (none or one per key)",
                         body->n_final, n);
        goto fail;
    }
    size_t ns = sc->n_states;
    s->items = calloc(n, sizeof *s->items);
    s->ptrs = calloc(n * (ns ? ns : 1), sizeof *s->ptrs);
    s->applied = calloc(n, sizeof *s->applied);
    if (!s->items || !s->ptrs || !s->applied) {
        ss_request_fail(req, SS_ERR_NOMEM, NULL);
        goto fail;
    }
    for (size_t k = 0; k < n; k++) {
        ss_save_item *it = &s->items[k];
        it->key = s->keys[k];
        it->segment = body->segment[k];
        it->final = body->n_final ? body->final[k] : false;
        for (size_t i = 0; i < ns; i++)
            s->ptrs[k * ns + i] =
                body->states[i]->data.data + k * sc->states[i].nbytes;
        it->states = &s->ptrs[k * ns];
    }
    s->op.run = save_run;
    s->op.done = save_done;
    s->req = req;
    s->now_ms = ss_server_now_ms();
    ss_writer_submit(ss_server_writer(srv), &s->op);
    return;
fail:
    save_op_free(s);
}

/* ---- Drop ---- */

typedef struct drop_op {
    ss_write_op op;     /* writer op (first member) */
    ss_request *req;    /* answered in done */
    const char *saver;  /* borrowed from the request */
    size_t n;           /* keys */
    ss_bytes *keys;     /* borrowed data */
    bool all;           /* drop the saver */
    uint64_t dropped;   /* result */
} drop_op;

static int drop_run(ss_write_op *op, ss_store_txn *txn, char msg[SS_STORE_MSG])
{
    drop_op *d = (drop_op *)op;
    return ss_store_drop(txn, d->saver, d->n, d->keys, d->all, &d->dropped,
                         msg);
}

static void drop_done(ss_write_op *op, int rc, const char *msg)
{
    drop_op *d = (drop_op *)op;
    if (rc < 0) {
        ss_request_fail(d->req, rc, msg);
    } else {
        if (d->all)
            SS_LOG(SS_LOG_INFO, "dropped saver '%s' (%" PRIu64 " sequences)",
                   d->saver, d->dropped);
        else if (d->dropped > 0)
            /* next_segment went back to 0: the job queue may have
             * segment 0 of these keys ready again. */
            ss_commit_events_publish(ss_server_commits(ss_request_server(d->req)),
                                     -1, d->saver, d->n, d->keys);
        Statesaver__V1__DropResponse dr = STATESAVER__V1__DROP_RESPONSE__INIT;
        dr.dropped = d->dropped;
        ss_response_msg resp = STATESAVER__V1__RESPONSE__INIT;
        resp.body_case = STATESAVER__V1__RESPONSE__BODY_DROP;
        resp.drop = &dr;
        ss_request_reply(d->req, &resp);
    }
    free(d->keys);
    free(d);
}

static void h_drop(ss_request *req, void *ctx)
{
    ss_server *srv = ss_request_server(req);
    const Statesaver__V1__DropRequest *body = ss_request_message(req)->drop;
    size_t n = body->n_keys;
    if (!ss_request_check_saver_name(req, body->saver))
        return;
    if (body->all && n > 0) {
        ss_request_error(req, STATESAVER__V1__CODE__INVALID_ARGUMENT,
                         "give keys or all, not both");
        return;
    }
    if (!body->all && !ss_request_check_key_count(req, n))
        return;
    ss_schema *schema = lookup_saver_for(req, body->saver, true);
    if (!schema)
        return;
    ss_schema_unref(schema);
    drop_op *d = calloc(1, sizeof *d);
    if (!d || (n && !(d->keys = calloc(n, sizeof *d->keys)))) {
        free(d);
        ss_request_fail(req, SS_ERR_NOMEM, NULL);
        return;
    }
    if (!check_keys(req, n, body->keys, d->keys)) {
        free(d->keys);
        free(d);
        return;
    }
    d->op.run = drop_run;
    d->op.done = drop_done;
    d->req = req;
    d->saver = body->saver;
    d->n = n;
    d->all = body->all;
    ss_writer_submit(ss_server_writer(srv), &d->op);
}

/* ---- List ---- */

typedef struct list_ctx {
    size_t limit;                        /* page size */
    size_t n;                            /* entries collected */
    Statesaver__V1__SequenceInfo *seqs;  /* limit entries */
    Statesaver__V1__SequenceInfo **seq_ptrs; /* limit pointers */
    Statesaver__V1__SaverInfo *savers;   /* limit entries */
    Statesaver__V1__SaverInfo **saver_ptrs; /* limit pointers */
    ss_schema **schemas;                 /* limit references */
    spec_msgs *specs;                    /* limit spec arrays */
    ProtobufCBinaryData prefix;          /* saver-name filter */
    ProtobufCBinaryData start_after;     /* saver-name cursor */
    bool more;                           /* entries beyond the page */
    int err;                             /* first error in a callback */
} list_ctx;

static void list_ctx_clear(list_ctx *l)
{
    for (size_t i = 0; i < l->n; i++) {
        if (l->seqs)
            free(l->seqs[i].key.data);
        if (l->schemas) {
            specs_free(&l->specs[i]);
            ss_schema_unref(l->schemas[i]);
        }
    }
    free(l->seqs);
    free(l->seq_ptrs);
    free(l->savers);
    free(l->saver_ptrs);
    free(l->schemas);
    free(l->specs);
}

static int list_seq_cb(void *arg, const ss_bytes *key, uint64_t next_segment,
                       uint64_t updated_ms)
{
    list_ctx *l = arg;
    if (l->n >= l->limit) {
        l->more = true;
        return 0;
    }
    Statesaver__V1__SequenceInfo *si = &l->seqs[l->n];
    statesaver__v1__sequence_info__init(si);
    /* The key is borrowed from a read transaction: copy it. */
    si->key.data = malloc(key->len ? key->len : 1);
    if (!si->key.data) {
        l->err = SS_ERR_NOMEM;
        return SS_ERR_NOMEM;
    }
    memcpy(si->key.data, key->data, key->len);
    si->key.len = key->len;
    si->next_segment = next_segment;
    si->updated_ms = updated_ms;
    l->seq_ptrs[l->n] = si;
    l->n++;
    return 0;
}

static int list_saver_cb(void *arg, const ss_schema *schema, uint64_t sequences)
{
    list_ctx *l = arg;
    const char *name = schema->saver;
    size_t len = strlen(name);
    if (l->prefix.len > 0 &&
        (len < l->prefix.len || memcmp(name, l->prefix.data, l->prefix.len)))
        return 0;
    if (l->start_after.len > 0) {
        size_t m = len < l->start_after.len ? len : l->start_after.len;
        int c = memcmp(name, l->start_after.data, m);
        if (c < 0 || (c == 0 && len <= l->start_after.len))
            return 0;
    }
    if (l->n >= l->limit) {
        l->more = true;
        return 0;
    }
    size_t i = l->n;
    if (specs_build(schema, &l->specs[i]) < 0) {
        l->err = SS_ERR_NOMEM;
        return SS_ERR_NOMEM;
    }
    l->schemas[i] = ss_schema_ref((ss_schema *)schema);
    Statesaver__V1__SaverInfo *si = &l->savers[i];
    statesaver__v1__saver_info__init(si);
    si->name = l->schemas[i]->saver;
    si->n_states = schema->n_states;
    si->states = l->specs[i].ptrs;
    si->idle_ttl_ms = schema->idle_ttl_ms;
    si->keep_final = schema->keep_final;
    si->max_in_flight = schema->max_in_flight;
    si->sequences = sequences;
    l->saver_ptrs[i] = si;
    l->n++;
    return 0;
}

static void h_list(ss_request *req, void *ctx)
{
    ss_server *srv = ss_request_server(req);
    const Statesaver__V1__ListRequest *body = ss_request_message(req)->list;
    list_ctx l;
    memset(&l, 0, sizeof l);
    l.limit = body->limit ? body->limit : SS_LIST_LIMIT_DEFAULT;
    /* A page never holds more entries than a request may carry keys. */
    if (l.limit > ss_server_config(srv)->max_keys)
        l.limit = ss_server_config(srv)->max_keys;
    Statesaver__V1__ListResponse lr = STATESAVER__V1__LIST_RESPONSE__INIT;
    int rc;
    if (body->saver && *body->saver) {
        ss_schema *schema = lookup_saver(req, body->saver);
        if (!schema)
            return;
        ss_schema_unref(schema);
        if (body->prefix.len > ss_server_config(srv)->max_key_bytes ||
            body->start_after.len > ss_server_config(srv)->max_key_bytes) {
            ss_request_error(req, STATESAVER__V1__CODE__INVALID_ARGUMENT,
                             "prefix or start_after longer than a key may be "
                             "(--max-key-bytes %" PRIu32 ")",
                             ss_server_config(srv)->max_key_bytes);
            return;
        }
        l.seqs = calloc(l.limit, sizeof *l.seqs);
        l.seq_ptrs = calloc(l.limit, sizeof *l.seq_ptrs);
        if (!l.seqs || !l.seq_ptrs) {
            rc = SS_ERR_NOMEM;
            goto out;
        }
        ss_bytes prefix = {body->prefix.data, body->prefix.len};
        ss_bytes after = {body->start_after.data, body->start_after.len};
        bool more = false;
        rc = ss_store_list(ss_server_store(srv), body->saver, prefix, after, l.limit,
                           list_seq_cb, &l, &more);
        if (rc == 0 && l.err)
            rc = l.err;
        if (rc < 0)
            goto out;
        lr.n_sequences = l.n;
        lr.sequences = l.seq_ptrs;
        lr.more = more || l.more;
    } else {
        l.savers = calloc(l.limit, sizeof *l.savers);
        l.saver_ptrs = calloc(l.limit, sizeof *l.saver_ptrs);
        l.schemas = calloc(l.limit, sizeof *l.schemas);
        l.specs = calloc(l.limit, sizeof *l.specs);
        if (!l.savers || !l.saver_ptrs || !l.schemas || !l.specs) {
            rc = SS_ERR_NOMEM;
            goto out;
        }
        l.prefix = body->prefix;
        l.start_after = body->start_after;
        rc = ss_store_list_savers(ss_server_store(srv), list_saver_cb, &l);
        if (rc == 0 && l.err)
            rc = l.err;
        if (rc < 0)
            goto out;
        lr.n_savers = l.n;
        lr.savers = l.saver_ptrs;
        lr.more = l.more;
    }
    ss_response_msg resp = STATESAVER__V1__RESPONSE__INIT;
    resp.body_case = STATESAVER__V1__RESPONSE__BODY_LIST;
    resp.list = &lr;
    ss_request_reply(req, &resp);
out:
    if (rc < 0)
        ss_request_fail(req, rc, NULL);
    list_ctx_clear(&l);
}

void ss_dispatch_state_register(ss_dispatch *d)
{
    ss_dispatch_register(d, STATESAVER__V1__REQUEST__BODY_DECLARE, h_declare, NULL);
    ss_dispatch_register(d, STATESAVER__V1__REQUEST__BODY_FETCH, h_fetch, NULL);
    ss_dispatch_register(d, STATESAVER__V1__REQUEST__BODY_SAVE, h_save, NULL);
    ss_dispatch_register(d, STATESAVER__V1__REQUEST__BODY_DROP, h_drop, NULL);
    ss_dispatch_register(d, STATESAVER__V1__REQUEST__BODY_LIST, h_list, NULL);
}
