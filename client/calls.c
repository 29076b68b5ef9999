/* calls -- libstatesaver's typed calls: hello, ping, declare, fetch, save,
 * drop, cancel (declared with the job calls in statesaver_jobs.h; here for
 * the shared key borrowing of drop), list, stats. Each builds a Request that borrows the caller's memory
 * (no copies of keys or tensors), runs it through ss_client_call and
 * checks the response's shape before handing anything to the caller.
 */
#include "client_int.h"
#include "statesaver_jobs.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ss_limits.h"
#include "ss_tensor.h"

typedef Statesaver__V1__Tensor tensor_t;

struct ss_fetch_result {
    ss_resp *resp;       /* owned response; every pointer handed out is inside
                            (NULL in a merged result) */
    size_t n_keys;       /* keys fetched */
    size_t n_states;     /* states per key */
    size_t *row_bytes;   /* per state: bytes of one key's row */
    ss_fetch_result **parts; /* merged result: the per-shard results (owned) */
    size_t n_parts;      /* entries of parts (0: not merged) */
    uint32_t *kpart;     /* merged: key k's part */
    size_t *krow;        /* merged: key k's row within its part */
};

struct ss_list_result {
    ss_resp *resp;                  /* owned response (NULL when merged) */
    const Statesaver__V1__ListResponse *list; /* resp's list body, or merged */
    ss_list_result **parts;         /* merged: per-shard results (owned) */
    size_t n_parts;                 /* entries of parts */
    Statesaver__V1__ListResponse merged; /* merged: arrays owned, rows borrowed
                                            from parts */
};

int ss_client_begin(ss_client *c, bool bad, const char *msg)
{
    if (!c)
        return SS_ERR_INVALID;
    ss_client_clear_error(c);
    if (bad)
        return ss_client_fail(c, SS_ERR_INVALID, "%s", msg);
    return 0;
}

int ss_client_run(ss_client *c, ss_req *req, uint32_t wait_ms, int want_case,
                  ss_resp **out)
{
    ss_resp *r = NULL;
    if (!c)
        return SS_ERR_INVALID;
    int rc = ss_client_call(c, req, wait_ms, &r);
    if (rc < 0)
        return rc;
    int got_case = (int)r->body_case;
    if (got_case != want_case) {
        ss_client_response_free(r);
        return ss_client_fail(c, SS_ERR_PROTO,
                              "server answered with body %d, expected %d", got_case,
                              want_case);
    }
    *out = r;
    return 0;
}

/* Borrow keys into a new ProtobufCBinaryData array (n may be 0). */
static int borrow_keys(ss_client *c, const ss_key *keys, size_t n,
                       ProtobufCBinaryData **out)
{
    *out = NULL;
    if (n == 0)
        return 0;
    if (!keys)
        return ss_client_fail(c, SS_ERR_INVALID, "keys is NULL");
    ProtobufCBinaryData *b = calloc(n, sizeof *b);
    if (!b)
        return ss_client_fail(c, SS_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < n; i++)
        ss_client_borrow_bytes(&b[i], keys[i].data, keys[i].len);
    *out = b;
    return 0;
}

int ss_client_hello(ss_client *c, const void *token, size_t token_len,
                    ss_server_info *info)
{
    Statesaver__V1__HelloRequest h = STATESAVER__V1__HELLO_REQUEST__INIT;
    ss_req req = STATESAVER__V1__REQUEST__INIT;
    ss_resp *r = NULL;
    ss_client_borrow_bytes(&h.token, token, token ? token_len : 0);
    h.client = ss_client_unconst("libstatesaver/" SS_VERSION);
    req.body_case = STATESAVER__V1__REQUEST__BODY_HELLO;
    req.hello = &h;
    int rc = ss_client_run(c, &req, 0, STATESAVER__V1__RESPONSE__BODY_HELLO, &r);
    if (rc < 0)
        return rc;
    if (info) {
        ss_client_copy_str(info->server_version, sizeof info->server_version,
                           r->hello->server_version);
        info->protocol_version = r->hello->protocol_version;
        info->max_frame_bytes = r->hello->max_frame_bytes;
        info->max_keys = r->hello->max_keys;
    }
    ss_client_response_free(r);
    return 0;
}

int ss_client_ping(ss_client *c, uint64_t *server_time_ms)
{
    Statesaver__V1__PingRequest p = STATESAVER__V1__PING_REQUEST__INIT;
    ss_req req = STATESAVER__V1__REQUEST__INIT;
    ss_resp *r = NULL;
    req.body_case = STATESAVER__V1__REQUEST__BODY_PING;
    req.ping = &p;
    int rc = ss_client_run(c, &req, 0, STATESAVER__V1__RESPONSE__BODY_PING, &r);
    if (rc < 0)
        return rc;
    if (server_time_ms)
        *server_time_ms = r->ping->server_time_ms;
    ss_client_response_free(r);
    return 0;
}

int ss_client_declare(ss_client *c, const char *saver, const ss_state_def *states,
                      size_t n_states, uint64_t idle_ttl_ms, bool keep_final,
                      bool *created)
{
    ss_declare_opts o = {.idle_ttl_ms = idle_ttl_ms, .keep_final = keep_final};
    return ss_client_declare_opts(c, saver, states, n_states, &o, created);
}

int ss_client_declare_opts(ss_client *c, const char *saver, const ss_state_def *states,
                           size_t n_states, const ss_declare_opts *o, bool *created)
{
    Statesaver__V1__DeclareRequest d = STATESAVER__V1__DECLARE_REQUEST__INIT;
    ss_req req = STATESAVER__V1__REQUEST__INIT;
    Statesaver__V1__StateSpec *specs = NULL, **spec_ptrs = NULL;
    tensor_t *inits = NULL;
    ss_resp *r = NULL;
    int rc;

    rc = ss_client_begin(c, !saver || !o || (n_states > 0 && !states),
                         "saver, options or states is NULL");
    if (rc < 0)
        return rc;
    if (n_states > SS_STATES_PER_SAVER_MAX)
        return ss_client_fail(c, SS_ERR_TOO_BIG, "%zu states (limit %u)", n_states,
                              SS_STATES_PER_SAVER_MAX);
    specs = calloc(n_states ? n_states : 1, sizeof *specs);
    spec_ptrs = calloc(n_states ? n_states : 1, sizeof *spec_ptrs);
    inits = calloc(n_states ? n_states : 1, sizeof *inits);
    if (!specs || !spec_ptrs || !inits) {
        rc = ss_client_fail(c, SS_ERR_NOMEM, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < n_states; i++) {
        const ss_state_def *s = &states[i];
        Statesaver__V1__StateSpec init = STATESAVER__V1__STATE_SPEC__INIT;
        specs[i] = init;
        specs[i].name = ss_client_unconst(s->name);
        specs[i].dtype = (Statesaver__V1__DType)s->dtype;
        specs[i].shape = (int64_t *)(uintptr_t)s->shape;
        specs[i].n_shape = s->rank;
        if (s->initial) {
            tensor_t tinit = STATESAVER__V1__TENSOR__INIT;
            inits[i] = tinit;
            ss_tensor_borrow(&inits[i], s->dtype, s->shape, s->rank, s->initial,
                             s->initial_bytes);
            specs[i].initial = &inits[i];
        }
        spec_ptrs[i] = &specs[i];
    }
    d.saver = ss_client_unconst(saver);
    d.n_states = n_states;
    d.states = spec_ptrs;
    d.idle_ttl_ms = o->idle_ttl_ms;
    d.keep_final = o->keep_final;
    d.max_in_flight = o->max_in_flight;
    req.body_case = STATESAVER__V1__REQUEST__BODY_DECLARE;
    req.declare = &d;
    rc = ss_client_run(c, &req, 0, STATESAVER__V1__RESPONSE__BODY_DECLARE, &r);
    if (rc < 0)
        goto out;
    if (created)
        *created = r->declare->created;
    rc = 0;
out:
    ss_client_response_free(r);
    free(inits);
    free(spec_ptrs);
    free(specs);
    return rc;
}

/* ---- fetch ------------------------------------------------------------- */

void ss_fetch_result_free(ss_fetch_result *r)
{
    if (!r)
        return;
    for (size_t i = 0; i < r->n_parts; i++)
        ss_fetch_result_free(r->parts[i]);
    free(r->parts);
    free(r->kpart);
    free(r->krow);
    ss_client_response_free(r->resp);
    free(r->row_bytes);
    free(r);
}

/* Check that a FetchResponse agrees with itself and with n keys. */
static int check_fetch(ss_client *c, const Statesaver__V1__FetchResponse *f,
                       size_t n, size_t *row_bytes)
{
    if (f->n_names != f->n_states)
        return ss_client_fail(c, SS_ERR_PROTO, "fetch reply: %zu names, %zu states",
                              f->n_names, f->n_states);
    if (f->n_next_segment != n ||
        (f->n_updated_ms != 0 && f->n_updated_ms != n))
        return ss_client_fail(c, SS_ERR_PROTO,
                              "fetch reply: %zu segments for %zu keys",
                              f->n_next_segment, n);
    for (size_t i = 0; i < f->n_states; i++) {
        const tensor_t *t = f->states[i];
        if (!t || ss_tensor_check(t) < 0 || t->n_shape < 1 ||
            t->shape[0] != (int64_t)n)
            return ss_client_fail(c, SS_ERR_PROTO,
                                  "fetch reply: state '%s' is malformed",
                                  f->names[i]);
        row_bytes[i] = n ? t->data.len / n : 0;
    }
    return 0;
}

int ss_client_fetch_send(ss_client *c, const char *saver, const ss_key *keys,
                         size_t n_keys, uint64_t min_segment, uint32_t wait_ms,
                         uint64_t *id)
{
    Statesaver__V1__FetchRequest f = STATESAVER__V1__FETCH_REQUEST__INIT;
    ss_req req = STATESAVER__V1__REQUEST__INIT;
    ProtobufCBinaryData *bk = NULL;
    int rc;

    rc = ss_client_begin(c, !saver, "saver is NULL");
    if (rc < 0)
        return rc;
    rc = borrow_keys(c, keys, n_keys, &bk);
    if (rc < 0)
        return rc;
    f.saver = ss_client_unconst(saver);
    f.n_keys = n_keys;
    f.keys = bk;
    f.min_segment = min_segment;
    f.wait_ms = wait_ms;
    req.body_case = STATESAVER__V1__REQUEST__BODY_FETCH;
    req.fetch = &f;
    rc = ss_client_send(c, &req, id);
    free(bk);
    return rc;
}

/* Wait for the reply to id with the client's timeout plus wait_ms, and
 * require a body of want_case. */
static int recv_body(ss_client *c, uint64_t id, uint32_t wait_ms, int want_case,
                     ss_resp **out)
{
    ss_resp *r = NULL;
    int64_t t = (int64_t)c->timeout_ms + wait_ms;
    int rc = ss_client_recv(c, id, t > INT32_MAX ? INT32_MAX : (int)t, &r);
    if (rc < 0)
        return rc;
    if ((int)r->body_case != want_case) {
        int got = (int)r->body_case;
        ss_client_response_free(r);
        return ss_client_fail(c, SS_ERR_PROTO,
                              "server answered with body %d, expected %d", got,
                              want_case);
    }
    *out = r;
    return 0;
}

int ss_client_fetch_recv(ss_client *c, uint64_t id, size_t n_keys, uint32_t wait_ms,
                         ss_fetch_result **out)
{
    ss_fetch_result *res = NULL;
    ss_resp *r = NULL;
    int rc;

    *out = NULL;
    rc = recv_body(c, id, wait_ms, STATESAVER__V1__RESPONSE__BODY_FETCH, &r);
    if (rc < 0)
        goto out;
    res = calloc(1, sizeof *res);
    if (res)
        res->row_bytes = calloc(r->fetch->n_states ? r->fetch->n_states : 1,
                                sizeof *res->row_bytes);
    if (!res || !res->row_bytes) {
        rc = ss_client_fail(c, SS_ERR_NOMEM, "out of memory");
        goto out;
    }
    rc = check_fetch(c, r->fetch, n_keys, res->row_bytes);
    if (rc < 0)
        goto out;
    res->resp = r;
    r = NULL;
    res->n_keys = n_keys;
    res->n_states = res->resp->fetch->n_states;
    *out = res;
    res = NULL;
    rc = 0;
out:
    ss_fetch_result_free(res);
    ss_client_response_free(r);
    return rc;
}

int ss_client_fetch(ss_client *c, const char *saver, const ss_key *keys,
                    size_t n_keys, uint64_t min_segment, uint32_t wait_ms,
                    ss_fetch_result **out)
{
    uint64_t id;
    *out = NULL;
    int rc = ss_client_fetch_send(c, saver, keys, n_keys, min_segment, wait_ms, &id);
    if (rc < 0)
        return rc;
    return ss_client_fetch_recv(c, id, n_keys, wait_ms, out);
}

/* Part p of a merged result agrees with part 0 on the schema. */
static bool same_schema(const ss_fetch_result *a, const ss_fetch_result *b)
{
    const Statesaver__V1__FetchResponse *fa = a->resp->fetch, *fb = b->resp->fetch;
    if (fa->n_states != fb->n_states)
        return false;
    for (size_t i = 0; i < fa->n_states; i++) {
        const tensor_t *ta = fa->states[i], *tb = fb->states[i];
        if (strcmp(fa->names[i], fb->names[i]) != 0 || ta->dtype != tb->dtype ||
            ta->n_shape != tb->n_shape ||
            (ta->n_shape > 1 &&
             memcmp(ta->shape + 1, tb->shape + 1, (ta->n_shape - 1) * sizeof *ta->shape)))
            return false;
    }
    return true;
}

int ss_fetch_result_merge(ss_fetch_result **parts, size_t n_parts, uint32_t *kpart,
                          size_t *krow, size_t n_keys, ss_fetch_result **out,
                          char *err, size_t errsz)
{
    ss_fetch_result *res = calloc(1, sizeof *res);
    *out = NULL;
    if (!res) {
        for (size_t i = 0; i < n_parts; i++)
            ss_fetch_result_free(parts[i]);
        free(parts);
        free(kpart);
        free(krow);
        snprintf(err, errsz, "out of memory");
        return SS_ERR_NOMEM;
    }
    res->parts = parts;
    res->n_parts = n_parts;
    res->kpart = kpart;
    res->krow = krow;
    res->n_keys = n_keys;
    res->n_states = n_parts ? parts[0]->n_states : 0;
    for (size_t p = 1; p < n_parts; p++) {
        if (!same_schema(parts[0], parts[p])) {
            snprintf(err, errsz, "fetch: the shards disagree about the saver's schema");
            ss_fetch_result_free(res);
            return SS_ERR_PROTO;
        }
    }
    *out = res;
    return 0;
}

/* The part holding the schema (a merged result's first part, or r). */
static const ss_fetch_result *schema_part(const ss_fetch_result *r)
{
    return r->n_parts ? r->parts[0] : r;
}

size_t ss_fetch_result_keys(const ss_fetch_result *r)
{
    return r ? r->n_keys : 0;
}

size_t ss_fetch_result_states(const ss_fetch_result *r)
{
    return r ? r->n_states : 0;
}

const char *ss_fetch_result_name(const ss_fetch_result *r, size_t i)
{
    return r && i < r->n_states ? schema_part(r)->resp->fetch->names[i] : NULL;
}

int ss_fetch_result_find(const ss_fetch_result *r, const char *name)
{
    for (size_t i = 0; r && name && i < r->n_states; i++)
        if (strcmp(schema_part(r)->resp->fetch->names[i], name) == 0)
            return (int)i;
    return SS_ERR_NOT_FOUND;
}

int ss_fetch_result_dtype(const ss_fetch_result *r, size_t i)
{
    return r && i < r->n_states ? (int)schema_part(r)->resp->fetch->states[i]->dtype : 0;
}

const int64_t *ss_fetch_result_shape(const ss_fetch_result *r, size_t i,
                                     size_t *rank)
{
    if (!r || i >= r->n_states) {
        if (rank)
            *rank = 0;
        return NULL;
    }
    const tensor_t *t = schema_part(r)->resp->fetch->states[i];
    if (rank)
        *rank = t->n_shape - 1;
    return t->shape + 1;
}

const void *ss_fetch_result_state(const ss_fetch_result *r, size_t i, size_t k,
                                  size_t *nbytes)
{
    if (!r || i >= r->n_states || k >= r->n_keys)
        return NULL;
    if (r->n_parts)
        return ss_fetch_result_state(r->parts[r->kpart[k]], i, r->krow[k], nbytes);
    if (nbytes)
        *nbytes = r->row_bytes[i];
    return r->resp->fetch->states[i]->data.data + k * r->row_bytes[i];
}

uint64_t ss_fetch_result_next_segment(const ss_fetch_result *r, size_t k)
{
    if (!r || k >= r->n_keys)
        return 0;
    if (r->n_parts)
        return ss_fetch_result_next_segment(r->parts[r->kpart[k]], r->krow[k]);
    return r->resp->fetch->next_segment[k];
}

uint64_t ss_fetch_result_updated_ms(const ss_fetch_result *r, size_t k)
{
    if (!r || k >= r->n_keys)
        return 0;
    if (r->n_parts)
        return ss_fetch_result_updated_ms(r->parts[r->kpart[k]], r->krow[k]);
    if (r->resp->fetch->n_updated_ms == 0)
        return 0;
    return r->resp->fetch->updated_ms[k];
}

/* ---- save -------------------------------------------------------------- */

int ss_client_save_send(ss_client *c, const char *saver, const ss_key *keys,
                        size_t n_keys, const uint64_t *segments, const bool *final,
                        const ss_state_data *states, size_t n_states, uint64_t *id)
{
    Statesaver__V1__SaveRequest s = STATESAVER__V1__SAVE_REQUEST__INIT;
    ss_req req = STATESAVER__V1__REQUEST__INIT;
    ProtobufCBinaryData *bk = NULL;
    protobuf_c_boolean *fin = NULL;
    tensor_t *ts = NULL, **tps = NULL;
    int64_t *dims = NULL;
    int rc;

    rc = ss_client_begin(c, !saver || (n_keys > 0 && !segments) || (n_states > 0 && !states),
                         "saver, segments or states is NULL");
    if (rc < 0)
        return rc;
    if (n_states > SS_STATES_PER_SAVER_MAX)
        return ss_client_fail(c, SS_ERR_TOO_BIG, "%zu states (limit %u)", n_states,
                              SS_STATES_PER_SAVER_MAX);
    rc = borrow_keys(c, keys, n_keys, &bk);
    if (rc < 0)
        goto out;
    size_t ns = n_states ? n_states : 1;
    ts = calloc(ns, sizeof *ts);
    tps = calloc(ns, sizeof *tps);
    dims = calloc(ns * SS_TENSOR_MAX_RANK, sizeof *dims);
    if (final)
        fin = calloc(n_keys ? n_keys : 1, sizeof *fin);
    if (!ts || !tps || !dims || (final && !fin)) {
        rc = ss_client_fail(c, SS_ERR_NOMEM, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < n_states; i++) {
        const ss_state_data *sd = &states[i];
        int64_t *d = dims + i * SS_TENSOR_MAX_RANK;
        uint64_t count;
        size_t es = ss_dtype_size(sd->dtype);
        if (es == 0 || sd->rank + 1 > SS_TENSOR_MAX_RANK ||
            (sd->rank > 0 && !sd->shape) || !sd->data) {
            rc = ss_client_fail(c, SS_ERR_INVALID,
                                "state %zu: bad dtype, rank or data", i);
            goto out;
        }
        d[0] = (int64_t)n_keys;
        if (sd->rank)
            memcpy(d + 1, sd->shape, sd->rank * sizeof *d);
        if (ss_shape_count(d, sd->rank + 1, SIZE_MAX / es, &count) < 0) {
            rc = ss_client_fail(c, SS_ERR_TOO_BIG, "state %zu: shape too big", i);
            goto out;
        }
        tensor_t tinit = STATESAVER__V1__TENSOR__INIT;
        ts[i] = tinit;
        ss_tensor_borrow(&ts[i], sd->dtype, d, sd->rank + 1, sd->data,
                         (size_t)count * es);
        tps[i] = &ts[i];
    }
    for (size_t k = 0; fin && k < n_keys; k++)
        fin[k] = final[k];
    s.saver = ss_client_unconst(saver);
    s.n_keys = n_keys;
    s.keys = bk;
    s.n_segment = n_keys;
    s.segment = (uint64_t *)(uintptr_t)segments;
    s.n_final = fin ? n_keys : 0;
    s.final = fin;
    s.n_states = n_states;
    s.states = tps;
    req.body_case = STATESAVER__V1__REQUEST__BODY_SAVE;
    req.save = &s;
    rc = ss_client_send(c, &req, id);
out:
    free(fin);
    free(dims);
    free(tps);
    free(ts);
    free(bk);
    return rc;
}

int ss_client_save_recv(ss_client *c, uint64_t id, size_t n_keys, bool *already_applied)
{
    ss_resp *r = NULL;
    int rc = recv_body(c, id, 0, STATESAVER__V1__RESPONSE__BODY_SAVE, &r);
    if (rc < 0)
        return rc;
    if (already_applied) {
        if (r->save->n_already_applied != n_keys &&
            r->save->n_already_applied != 0) {
            rc = ss_client_fail(c, SS_ERR_PROTO,
                                "save reply: %zu flags for %zu keys",
                                r->save->n_already_applied, n_keys);
            goto out;
        }
        for (size_t k = 0; k < n_keys; k++)
            already_applied[k] = r->save->n_already_applied &&
                                 r->save->already_applied[k];
    }
    rc = 0;
out:
    ss_client_response_free(r);
    return rc;
}

int ss_client_save(ss_client *c, const char *saver, const ss_key *keys,
                   size_t n_keys, const uint64_t *segments, const bool *final,
                   const ss_state_data *states, size_t n_states,
                   bool *already_applied)
{
    uint64_t id;
    int rc = ss_client_save_send(c, saver, keys, n_keys, segments, final, states,
                                 n_states, &id);
    if (rc < 0)
        return rc;
    return ss_client_save_recv(c, id, n_keys, already_applied);
}

/* ---- drop, cancel, list, stats --------------------------------------------------- */

int ss_client_drop(ss_client *c, const char *saver, const ss_key *keys,
                   size_t n_keys, bool all, uint64_t *dropped)
{
    Statesaver__V1__DropRequest d = STATESAVER__V1__DROP_REQUEST__INIT;
    ss_req req = STATESAVER__V1__REQUEST__INIT;
    ProtobufCBinaryData *bk = NULL;
    ss_resp *r = NULL;
    int rc;

    rc = ss_client_begin(c, !saver, "saver is NULL");
    if (rc < 0)
        return rc;
    if (!all) {
        rc = borrow_keys(c, keys, n_keys, &bk);
        if (rc < 0)
            goto out;
        d.n_keys = n_keys;
        d.keys = bk;
    }
    d.saver = ss_client_unconst(saver);
    d.all = all;
    req.body_case = STATESAVER__V1__REQUEST__BODY_DROP;
    req.drop = &d;
    rc = ss_client_run(c, &req, 0, STATESAVER__V1__RESPONSE__BODY_DROP, &r);
    if (rc < 0)
        goto out;
    if (dropped)
        *dropped = r->drop->dropped;
    rc = 0;
out:
    ss_client_response_free(r);
    free(bk);
    return rc;
}

int ss_client_cancel(ss_client *c, const char *saver, const ss_key *keys, size_t n_keys,
                     uint64_t *cancelled, uint64_t *segments)
{
    Statesaver__V1__CancelRequest x = STATESAVER__V1__CANCEL_REQUEST__INIT;
    ss_req req = STATESAVER__V1__REQUEST__INIT;
    ProtobufCBinaryData *bk = NULL;
    ss_resp *r = NULL;
    int rc;

    if (cancelled)
        *cancelled = 0;
    if (segments)
        *segments = 0;
    rc = ss_client_begin(c, !saver || n_keys == 0 || !keys,
                         "cancel: saver or keys missing (need 1 key or more)");
    if (rc < 0)
        return rc;
    for (size_t k = 0; k < n_keys; k++)
        if (!keys[k].data || keys[k].len < SS_KEY_MIN)
            return ss_client_fail(c, SS_ERR_INVALID, "cancel: keys[%zu] is empty", k);
    rc = borrow_keys(c, keys, n_keys, &bk);
    if (rc < 0)
        return rc;
    x.saver = ss_client_unconst(saver);
    x.n_keys = n_keys;
    x.keys = bk;
    req.body_case = STATESAVER__V1__REQUEST__BODY_CANCEL;
    req.cancel = &x;
    rc = ss_client_run(c, &req, 0, STATESAVER__V1__RESPONSE__BODY_CANCEL, &r);
    if (rc < 0)
        goto out;
    if (cancelled)
        *cancelled = r->cancel->cancelled;
    if (segments)
        *segments = r->cancel->segments;
    rc = 0;
out:
    ss_client_response_free(r);
    free(bk);
    return rc;
}

int ss_client_list(ss_client *c, const char *saver, const ss_key *prefix,
                   const ss_key *start_after, uint32_t limit,
                   ss_list_result **out)
{
    Statesaver__V1__ListRequest l = STATESAVER__V1__LIST_REQUEST__INIT;
    ss_req req = STATESAVER__V1__REQUEST__INIT;
    ss_list_result *res = NULL;
    ss_resp *r = NULL;
    int rc;

    *out = NULL;
    rc = ss_client_begin(c, false, NULL);
    if (rc < 0)
        return rc;
    l.saver = ss_client_unconst(saver);
    if (prefix)
        ss_client_borrow_bytes(&l.prefix, prefix->data, prefix->len);
    if (start_after)
        ss_client_borrow_bytes(&l.start_after, start_after->data, start_after->len);
    l.limit = limit;
    req.body_case = STATESAVER__V1__REQUEST__BODY_LIST;
    req.list = &l;
    rc = ss_client_run(c, &req, 0, STATESAVER__V1__RESPONSE__BODY_LIST, &r);
    if (rc < 0)
        goto out;
    for (size_t i = 0; i < r->list->n_savers; i++)
        for (size_t j = 0; j < r->list->savers[i]->n_states; j++)
            if (!r->list->savers[i]->states[j]) {
                rc = ss_client_fail(c, SS_ERR_PROTO, "list reply: empty state spec");
                goto out;
            }
    res = calloc(1, sizeof *res);
    if (!res) {
        rc = ss_client_fail(c, SS_ERR_NOMEM, "out of memory");
        goto out;
    }
    res->resp = r;
    res->list = r->list;
    r = NULL;
    *out = res;
    rc = 0;
out:
    ss_client_response_free(r);
    return rc;
}

void ss_list_result_free(ss_list_result *r)
{
    if (!r)
        return;
    for (size_t i = 0; i < r->n_parts; i++)
        ss_list_result_free(r->parts[i]);
    free(r->parts);
    free(r->merged.sequences);
    free(r->merged.savers);
    ss_client_response_free(r->resp);
    free(r);
}

const Statesaver__V1__ListResponse *ss_list_result_pb(const ss_list_result *r)
{
    return r->list;
}

int ss_list_result_merge(ss_list_result **parts, size_t n_parts,
                         Statesaver__V1__SequenceInfo **seqs, size_t n_seqs,
                         Statesaver__V1__SaverInfo **savers, size_t n_savers,
                         bool more, ss_list_result **out)
{
    Statesaver__V1__ListResponse init = STATESAVER__V1__LIST_RESPONSE__INIT;
    ss_list_result *res = calloc(1, sizeof *res);
    *out = NULL;
    if (!res) {
        for (size_t i = 0; i < n_parts; i++)
            ss_list_result_free(parts[i]);
        free(parts);
        free(seqs);
        free(savers);
        return SS_ERR_NOMEM;
    }
    res->parts = parts;
    res->n_parts = n_parts;
    res->merged = init;
    res->merged.sequences = seqs;
    res->merged.n_sequences = n_seqs;
    res->merged.savers = savers;
    res->merged.n_savers = n_savers;
    res->merged.more = more;
    res->list = &res->merged;
    *out = res;
    return 0;
}

bool ss_list_result_more(const ss_list_result *r)
{
    return r && r->list->more;
}

size_t ss_list_result_sequences(const ss_list_result *r)
{
    return r ? r->list->n_sequences : 0;
}

const void *ss_list_result_key(const ss_list_result *r, size_t i, size_t *len)
{
    if (!r || i >= r->list->n_sequences)
        return NULL;
    if (len)
        *len = r->list->sequences[i]->key.len;
    return r->list->sequences[i]->key.data;
}

uint64_t ss_list_result_next_segment(const ss_list_result *r, size_t i)
{
    return r && i < r->list->n_sequences ? r->list->sequences[i]->next_segment : 0;
}

uint64_t ss_list_result_updated_ms(const ss_list_result *r, size_t i)
{
    return r && i < r->list->n_sequences ? r->list->sequences[i]->updated_ms : 0;
}

size_t ss_list_result_savers(const ss_list_result *r)
{
    return r ? r->list->n_savers : 0;
}

int ss_list_result_saver(const ss_list_result *r, size_t i, ss_saver_info *out)
{
    if (!r || i >= r->list->n_savers)
        return SS_ERR_INVALID;
    const Statesaver__V1__SaverInfo *s = r->list->savers[i];
    out->name = s->name;
    out->n_states = s->n_states;
    out->idle_ttl_ms = s->idle_ttl_ms;
    out->keep_final = s->keep_final;
    out->sequences = s->sequences;
    out->max_in_flight = s->max_in_flight;
    return 0;
}

const char *ss_list_result_saver_state(const ss_list_result *r, size_t i,
                                       size_t j, int *dtype,
                                       const int64_t **shape, size_t *rank)
{
    if (!r || i >= r->list->n_savers || j >= r->list->savers[i]->n_states)
        return NULL;
    const Statesaver__V1__StateSpec *s = r->list->savers[i]->states[j];
    if (dtype)
        *dtype = (int)s->dtype;
    if (shape)
        *shape = s->shape;
    if (rank)
        *rank = s->n_shape;
    return s->name;
}

int ss_client_stats(ss_client *c, const char *saver, ss_server_stats *out)
{
    Statesaver__V1__StatsRequest s = STATESAVER__V1__STATS_REQUEST__INIT;
    ss_req req = STATESAVER__V1__REQUEST__INIT;
    ss_resp *r = NULL;
    s.saver = ss_client_unconst(saver);
    req.body_case = STATESAVER__V1__REQUEST__BODY_STATS;
    req.stats = &s;
    int rc = ss_client_run(c, &req, 0, STATESAVER__V1__RESPONSE__BODY_STATS, &r);
    if (rc < 0)
        return rc;
    const Statesaver__V1__StatsResponse *st = r->stats;
    out->uptime_ms = st->uptime_ms;
    out->savers = st->savers;
    out->sequences = st->sequences;
    out->connections = st->connections;
    out->requests = st->requests;
    out->commits = st->commits;
    out->committed_ops = st->committed_ops;
    out->evicted = st->evicted;
    out->map_size = st->map_size;
    out->map_used = st->map_used;
    out->rejected = st->rejected;
    out->queued = st->queued;
    out->leased = st->leased;
    out->completed = st->completed;
    out->failed = st->failed;
    out->expired_leases = st->expired_leases;
    out->saves_applied = st->saves_applied;
    out->wal_records = st->wal_records;
    out->wal_bytes = st->wal_bytes;
    out->checkpoints = st->checkpoints;
    out->applied_lsn = st->applied_lsn;
    out->checkpoint_lsn = st->checkpoint_lsn;
    out->wal_failed = st->wal_failed ? 1 : 0;
    snprintf(out->wal_failure, sizeof out->wal_failure, "%s",
             st->wal_failure ? st->wal_failure : "");
    ss_client_response_free(r);
    return 0;
}
