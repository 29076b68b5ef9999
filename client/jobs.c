/* jobs -- libstatesaver's job calls of the submitting side: Submit (single
 * and pipelined whole sequences, float32 inputs or token ids), Await
 * (single and pipelined), Collect (pipelined acknowledgements). Lease and
 * Complete, the worker's side, are in jobs_lease.c.
 *
 * Requests borrow the caller's memory (the frame is packed during the
 * send, so borrowed data need only live until ss_client_send returns).
 * Results own their Response; replies are checked for consistency before
 * any accessor hands out a pointer, so callers can trust shapes.
 */
#include "client_int.h"
#include "jobs_int.h"
#include "statesaver_jobs.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ss_limits.h"
#include "ss_tensor.h"

/* Backoff between retries of a segment refused with RESOURCE_EXHAUSTED. */
#define JOBS_FULL_BACKOFF_MIN_MS 20u
#define JOBS_FULL_BACKOFF_MAX_MS 1000u

struct ss_await_result {
    ss_resp *resp;                          /* owned response */
    const Statesaver__V1__AwaitResponse *a; /* its await body */
    const float *outputs;                   /* aligned outputs or NULL */
    float *outputs_copy;                    /* owned copy if the wire data was misaligned */
    uint32_t rows;                          /* outputs rows */
    uint32_t cols;                          /* outputs columns */
};

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(uint32_t ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Timeout for a reply the server may hold for wait_ms. */
static int held_timeout(const ss_client *c, uint32_t wait_ms)
{
    int64_t t = (int64_t)c->timeout_ms + wait_ms;
    return t > INT_MAX ? INT_MAX : (int)t;
}

uint64_t ss_jobs_segments(uint64_t length, uint32_t num_unroll)
{
    if (num_unroll == 0)
        return 0;
    return length / num_unroll + (length % num_unroll != 0);
}

/* ---- submit --------------------------------------------------------------- */

/* Fill sub/req for one segment; data borrowed (dims must outlive req).
 * inputs is float32 [T, input_size], or with ids (input_size ignored) the
 * token ids int64 [T]. */
static void build_submit(Statesaver__V1__SubmitRequest *sub, tensor_t *t, ss_req *req,
                         int64_t dims[2], const char *saver, const ss_key *key,
                         uint64_t segment, const void *inputs, bool ids, uint32_t T,
                         uint32_t input_size, uint32_t length, bool last,
                         uint64_t total_length, uint64_t sequence_count)
{
    Statesaver__V1__SubmitRequest s0 = STATESAVER__V1__SUBMIT_REQUEST__INIT;
    tensor_t t0 = STATESAVER__V1__TENSOR__INIT;
    ss_req r0 = STATESAVER__V1__REQUEST__INIT;
    *sub = s0;
    *t = t0;
    *req = r0;
    dims[0] = T;
    dims[1] = input_size;
    if (ids)
        ss_tensor_borrow(t, STATESAVER__V1__DTYPE__DT_INT64, dims, 1, inputs,
                         (size_t)T * sizeof(int64_t));
    else
        ss_tensor_borrow(t, STATESAVER__V1__DTYPE__DT_FLOAT32, dims, 2, inputs,
                         (size_t)T * input_size * sizeof(float));
    sub->saver = ss_client_unconst(saver);
    ss_client_borrow_bytes(&sub->key, key->data, key->len);
    sub->segment = segment;
    sub->inputs = t;
    sub->length = length;
    sub->last = last;
    sub->total_length = total_length;     /* 0 = not told (one segment at a time) */
    sub->sequence_count = sequence_count; /* 0 = not told */
    req->body_case = STATESAVER__V1__REQUEST__BODY_SUBMIT;
    req->submit = sub;
}

/* Check the body of a Submit reply; *already (may be NULL) set. */
static int submit_reply(ss_client *c, ss_resp *r, bool *already)
{
    int rc = want_body(c, r, STATESAVER__V1__RESPONSE__BODY_SUBMIT, "a submit");
    if (rc < 0)
        return rc;
    if (already)
        *already = r->submit->already_queued;
    return 0;
}

/* One segment's Submit call (arguments checked by the caller). */
static int submit_one(ss_client *c, const char *saver, const ss_key *key, uint64_t segment,
                      const void *inputs, bool ids, uint32_t T, uint32_t input_size,
                      uint32_t length, bool last, bool *already_queued)
{
    Statesaver__V1__SubmitRequest sub;
    tensor_t t;
    ss_req req;
    int64_t dims[2];
    ss_resp *r = NULL;
    build_submit(&sub, &t, &req, dims, saver, key, segment, inputs, ids, T, input_size,
                 length, last, 0, 0);
    int rc = ss_client_call(c, &req, 0, &r);
    if (rc < 0)
        return rc;
    rc = submit_reply(c, r, already_queued);
    ss_client_response_free(r);
    return rc;
}

int ss_client_submit(ss_client *c, const char *saver, const ss_key *key,
                     uint64_t segment, const float *inputs, uint32_t T,
                     uint32_t input_size, uint32_t length, bool last,
                     bool *already_queued)
{
    int rc = ss_client_begin(c, !saver || !key || !key->data || key->len == 0 || !inputs,
                             "submit: saver, key or inputs missing");
    if (rc < 0)
        return rc;
    if (T == 0 || input_size == 0 || length > T)
        return ss_client_fail(c, SS_ERR_INVALID,
                              "submit: need T >= 1, input_size >= 1, length <= T "
                              "(T %u, input_size %u, length %u)", T, input_size, length);
    if ((uint64_t)T * input_size > SIZE_MAX / sizeof(float))
        return ss_client_fail(c, SS_ERR_TOO_BIG, "submit: inputs too big");
    return submit_one(c, saver, key, segment, inputs, false, T, input_size, length, last,
                      already_queued);
}

int ss_client_submit_ids(ss_client *c, const char *saver, const ss_key *key,
                         uint64_t segment, const int64_t *ids, uint32_t T, uint32_t length,
                         bool last, bool *already_queued)
{
    int rc = ss_client_begin(c, !saver || !key || !key->data || key->len == 0 || !ids,
                             "submit: saver, key or ids missing");
    if (rc < 0)
        return rc;
    if (T == 0 || T > SS_JOBS_NUM_UNROLL_MAX || length > T)
        return ss_client_fail(c, SS_ERR_INVALID,
                              "submit: need 1 <= T <= %u and length <= T (T %u, length %u)",
                              SS_JOBS_NUM_UNROLL_MAX, T, length);
    return submit_one(c, saver, key, segment, ids, true, T, 1, length, last, already_queued);
}

/* One submit request in flight. */
typedef struct inflight {
    uint64_t id;       /* request id */
    size_t index;      /* sequence index or ref index */
    uint64_t segment;  /* segment number (submit) */
} inflight;

/* Shared state of one pipelined submit call. */
typedef struct submit_ctx {
    ss_client *c;                 /* connection */
    const char *saver;            /* saver name */
    const ss_sequence_in *seqs;   /* the float32 sequences, or NULL */
    const ss_sequence_ids *ids;   /* the token-id sequences, or NULL */
    uint32_t input_size;          /* columns (1 for ids) */
    uint32_t T;                   /* num_unroll */
    uint32_t full_retry_ms;       /* retry budget on RESOURCE_EXHAUSTED */
    void *pad;                    /* [T, input_size] floats or [T] ids: scratch for
                                     last segments */
    ss_submit_fn cb;              /* per-segment report, may be NULL */
    void *arg;                    /* cb's argument */
    int first_err;                /* first error seen (0 if none) */
} submit_ctx;

/* Sequence i's key and length, of whichever kind the call submits. */
static const ss_key *seq_key(const submit_ctx *x, size_t i)
{
    return x->ids ? &x->ids[i].key : &x->seqs[i].key;
}

static uint64_t seq_length(const submit_ctx *x, size_t i)
{
    return x->ids ? x->ids[i].length : x->seqs[i].length;
}

/* Build and send (or, with sync, call) the request for one segment. */
static int submit_segment(submit_ctx *x, size_t i, uint64_t s, bool sync, uint64_t *id,
                          ss_resp **resp)
{
    uint64_t length = seq_length(x, i);
    uint64_t first = s * x->T;
    uint64_t left = length - first;
    uint32_t len = left < x->T ? (uint32_t)left : x->T;
    bool last = first + len == length;
    size_t esize = x->ids ? sizeof(int64_t) : sizeof(float); /* bytes per element */
    const void *in = x->ids ? (const void *)(x->ids[i].ids + first)
                            : (const void *)(x->seqs[i].data + first * x->input_size);
    if (len < x->T) {
        /* SQSS pad=True: the padding rows are zeros. */
        size_t real = (size_t)len * x->input_size * esize;
        memcpy(x->pad, in, real);
        memset((char *)x->pad + real, 0, (size_t)x->T * x->input_size * esize - real);
        in = x->pad;
    }
    Statesaver__V1__SubmitRequest sub;
    tensor_t t;
    ss_req req;
    int64_t dims[2];
    /* The split knows the whole sequence: SQSS's length and sequence_count. */
    build_submit(&sub, &t, &req, dims, x->saver, seq_key(x, i), s, in, x->ids != NULL, x->T,
                 x->input_size, len, last, length, ss_jobs_segments(length, x->T));
    if (sync)
        return ss_client_call(x->c, &req, 0, resp);
    return ss_client_send(x->c, &req, id);
}

/* Handle the outcome rc/r of segment s of sequence i (r freed here).
 * Returns a transport error to stop, else 0. */
static int submit_outcome(submit_ctx *x, size_t i, uint64_t s, int rc, ss_resp *r)
{
    ss_client *c = x->c;
    if (rc == SS_ERR_STATUS(STATESAVER__V1__CODE__RESOURCE_EXHAUSTED)) {
        /* The queue is full: workers drain it, so wait and resend. */
        int64_t give_up = mono_ms() + x->full_retry_ms;
        uint32_t backoff = JOBS_FULL_BACKOFF_MIN_MS;
        while (rc == SS_ERR_STATUS(STATESAVER__V1__CODE__RESOURCE_EXHAUSTED) &&
               mono_ms() + backoff < give_up) {
            sleep_ms(backoff);
            backoff = backoff * 2 > JOBS_FULL_BACKOFF_MAX_MS ? JOBS_FULL_BACKOFF_MAX_MS
                                                             : backoff * 2;
            rc = submit_segment(x, i, s, true, NULL, &r);
        }
    }
    if (rc == 0)
        rc = submit_reply(c, r, NULL);
    ss_client_response_free(r);
    if (rc < 0 && x->first_err == 0)
        x->first_err = rc;
    if (x->cb)
        x->cb(x->arg, i, s, rc, rc < 0 ? ss_client_last_error(c) : "");
    if (rc < 0 && !SS_IS_STATUS_ERR(rc))
        return rc;
    return 0;
}

/* The segments to send: all segments of all sequences, or a list. */
typedef struct submit_plan {
    const ss_segment_pick *picks; /* NULL: every segment of every sequence */
    size_t n_picks;               /* entries of picks */
    size_t i;                     /* next sequence (all) or pick (list) */
    uint64_t s;                   /* next segment of sequence i (all) */
} submit_plan;

/* Next segment to send; false when the plan is exhausted. */
static bool plan_next(submit_plan *p, const submit_ctx *x, size_t n, size_t *i,
                      uint64_t *s)
{
    if (p->picks) {
        if (p->i >= p->n_picks)
            return false;
        *i = p->picks[p->i].seq;
        *s = p->picks[p->i].segment;
        p->i++;
        return true;
    }
    while (p->i < n && p->s >= ss_jobs_segments(seq_length(x, p->i), x->T)) {
        p->i++;
        p->s = 0;
    }
    if (p->i >= n)
        return false;
    *i = p->i;
    *s = p->s++;
    return true;
}

/* After a transport error: report the replies that had already arrived
 * (kept by the connection) for requests still in the ring, so the caller
 * knows which segments the server has acknowledged. */
static void submit_drain(submit_ctx *x, inflight *ring, size_t window, size_t head,
                         size_t count)
{
    for (size_t k = 0; k < count; k++) {
        inflight *f = &ring[(head + k) % window];
        ss_resp *r = NULL;
        int got = ss_client_recv(x->c, f->id, 0, &r);
        if (got == 0 || SS_IS_STATUS_ERR(got))
            submit_outcome(x, f->index, f->segment, got, r);
        else
            ss_client_response_free(r);
    }
}

/* Receive the reply of the oldest request in the ring and handle it (the
 * ring shrinks by one). Returns submit_outcome's result. */
static int submit_collect(submit_ctx *x, const inflight *ring, size_t window,
                          size_t *head, size_t *count)
{
    const inflight *f = &ring[*head];
    ss_resp *r = NULL;
    int got = ss_client_recv(x->c, f->id, 0, &r);
    *head = (*head + 1) % window;
    (*count)--;
    return submit_outcome(x, f->index, f->segment, got, r);
}

/* The pipelined submit of seqs (float32) or, when ids is non-NULL, of ids
 * (token ids; seqs and input_size unused). */
static int submit_run(ss_client *c, const char *saver, const ss_sequence_in *seqs,
                      const ss_sequence_ids *ids, size_t n, uint32_t input_size,
                      uint32_t num_unroll, const ss_segment_pick *picks, size_t n_picks,
                      const ss_jobs_pipeline *pipe, ss_submit_fn cb, void *arg)
{
    submit_ctx x = {.c = c, .saver = saver, .seqs = ids ? NULL : seqs, .ids = ids,
                    .input_size = ids ? 1 : input_size, .T = num_unroll, .cb = cb,
                    .arg = arg};
    size_t esize = ids ? sizeof(int64_t) : sizeof(float); /* bytes per element */
    submit_plan plan = {.picks = picks, .n_picks = n_picks};
    inflight *ring = NULL;
    uint32_t window = pipe && pipe->window ? pipe->window : SS_JOBS_WINDOW_DEFAULT;
    size_t head = 0, count = 0, i;
    uint64_t s;
    int rc = 0;

    rc = ss_client_begin(c, !saver || (n > 0 && !seqs && !ids) || (n_picks > 0 && !picks),
                         "submit: saver or sequences missing");
    if (rc < 0)
        return rc;
    x.full_retry_ms = pipe && pipe->full_retry_ms ? pipe->full_retry_ms
                                                  : SS_JOBS_FULL_RETRY_MS_DEFAULT;
    if (window > SS_JOBS_WINDOW_MAX)
        return ss_client_fail(c, SS_ERR_INVALID, "submit: window %u exceeds %u", window,
                              SS_JOBS_WINDOW_MAX);
    if (num_unroll == 0 || num_unroll > SS_JOBS_NUM_UNROLL_MAX || x.input_size == 0)
        return ss_client_fail(c, SS_ERR_INVALID,
                              "submit: num_unroll must be 1..%u and input_size >= 1 "
                              "(got %u and %u)", SS_JOBS_NUM_UNROLL_MAX, num_unroll,
                              x.input_size);
    if ((uint64_t)num_unroll * x.input_size > SIZE_MAX / esize / 2)
        return ss_client_fail(c, SS_ERR_TOO_BIG, "submit: segment too big");
    for (size_t k = 0; k < n; k++) {
        const void *data = ids ? (const void *)ids[k].ids : (const void *)seqs[k].data;
        if (!seq_key(&x, k)->data || seq_key(&x, k)->len == 0 || !data ||
            seq_length(&x, k) == 0)
            return ss_client_fail(c, SS_ERR_INVALID,
                                  "submit: sequence %zu has no key, no data or length 0", k);
        if (seq_length(&x, k) > SIZE_MAX / esize / x.input_size)
            return ss_client_fail(c, SS_ERR_TOO_BIG, "submit: sequence %zu too long", k);
    }
    for (size_t k = 0; k < n_picks; k++)
        if (picks[k].seq >= n ||
            picks[k].segment >= ss_jobs_segments(seq_length(&x, picks[k].seq), num_unroll))
            return ss_client_fail(c, SS_ERR_INVALID,
                                  "submit: pick %zu (sequence %zu, segment %llu) is out of "
                                  "range", k, picks[k].seq,
                                  (unsigned long long)picks[k].segment);
    x.pad = malloc((size_t)num_unroll * x.input_size * esize);
    ring = calloc(window, sizeof *ring);
    if (!x.pad || !ring) {
        rc = ss_client_fail(c, SS_ERR_NOMEM, "out of memory");
        goto out;
    }
    while (plan_next(&plan, &x, n, &i, &s)) {
        if (count == window) {
            rc = submit_collect(&x, ring, window, &head, &count);
            if (rc < 0)
                goto broken;
        }
        inflight *f = &ring[(head + count) % window];
        f->index = i;
        f->segment = s;
        rc = submit_segment(&x, i, s, false, &f->id, NULL);
        if (rc < 0) {
            if (x.cb)
                x.cb(x.arg, i, s, rc, ss_client_last_error(c));
            goto broken;
        }
        count++;
    }
    while (count > 0) {
        rc = submit_collect(&x, ring, window, &head, &count);
        if (rc < 0)
            goto broken;
    }
    rc = x.first_err;
    goto out;
broken:
    {
        /* Keep the transport error's message for the caller. */
        char msg[SS_CLIENT_ERRMSG_MAX];
        ss_client_copy_str(msg, sizeof msg, ss_client_last_error(c));
        if (ss_client_broken(c))
            submit_drain(&x, ring, window, head, count);
        ss_client_fail(c, rc, "%s", msg);
    }
out:
    free(ring);
    free(x.pad);
    return rc;
}

int ss_client_submit_sequences(ss_client *c, const char *saver,
                               const ss_sequence_in *seqs, size_t n,
                               uint32_t input_size, uint32_t num_unroll,
                               const ss_jobs_pipeline *pipe, ss_submit_fn cb,
                               void *arg)
{
    return submit_run(c, saver, seqs, NULL, n, input_size, num_unroll, NULL, 0, pipe, cb,
                      arg);
}

int ss_client_submit_sequences_ids(ss_client *c, const char *saver,
                                   const ss_sequence_ids *seqs, size_t n,
                                   uint32_t num_unroll, const ss_jobs_pipeline *pipe,
                                   ss_submit_fn cb, void *arg)
{
    return submit_run(c, saver, NULL, seqs, n, 1, num_unroll, NULL, 0, pipe, cb, arg);
}

int ss_client_submit_segments(ss_client *c, const char *saver,
                              const ss_sequence_in *seqs, size_t n,
                              uint32_t input_size, uint32_t num_unroll,
                              const ss_segment_pick *picks, size_t n_picks,
                              const ss_jobs_pipeline *pipe, ss_submit_fn cb, void *arg)
{
    if (c && n_picks == 0) {
        ss_client_clear_error(c);
        return 0;
    }
    return submit_run(c, saver, seqs, NULL, n, input_size, num_unroll, picks, n_picks, pipe,
                      cb, arg);
}

int ss_client_submit_segments_ids(ss_client *c, const char *saver,
                                  const ss_sequence_ids *seqs, size_t n, uint32_t num_unroll,
                                  const ss_segment_pick *picks, size_t n_picks,
                                  const ss_jobs_pipeline *pipe, ss_submit_fn cb, void *arg)
{
    if (c && n_picks == 0) {
        ss_client_clear_error(c);
        return 0;
    }
    return submit_run(c, saver, NULL, seqs, n, 1, num_unroll, picks, n_picks, pipe, cb,
                      arg);
}

/* Keeps the message of the first failed segment for ss_client_last_error. */
typedef struct first_msg {
    char text[SS_CLIENT_ERRMSG_MAX]; /* message of the first failure */
    bool set;                        /* text holds it */
} first_msg;

static void keep_first(void *arg, size_t i, uint64_t s, int rc, const char *m)
{
    first_msg *f = arg;
    (void)i;
    if (rc < 0 && !f->set) {
        snprintf(f->text, sizeof f->text, "segment %llu: %s", (unsigned long long)s, m);
        f->set = true;
    }
}

int ss_client_submit_sequence(ss_client *c, const char *saver, const ss_key *key,
                              const float *data, uint64_t length,
                              uint32_t input_size, uint32_t num_unroll,
                              uint64_t *n_segments)
{
    if (!c)
        return SS_ERR_INVALID;
    if (!key)
        return ss_client_fail(c, SS_ERR_INVALID, "submit: key missing");
    ss_sequence_in q = {.key = *key, .data = data, .length = length};
    first_msg f = {.set = false};
    int rc = ss_client_submit_sequences(c, saver, &q, 1, input_size, num_unroll, NULL,
                                        keep_first, &f);
    if (rc < 0 && f.set)
        ss_client_fail(c, rc, "%s", f.text);
    if (n_segments)
        *n_segments = rc == 0 ? ss_jobs_segments(length, num_unroll) : 0;
    return rc;
}

/* ---- await --------------------------------------------------------------- */

void ss_await_result_free(ss_await_result *r)
{
    if (!r)
        return;
    ss_client_response_free(r->resp);
    free(r->outputs_copy);
    free(r);
}

/* Take ownership of a response with an await body and check it;
 * without_tensors: it was asked for without them, so a done segment may
 * come without outputs (a server older than the flag sends them). */
static int await_wrap(ss_client *c, ss_resp *resp, bool without_tensors,
                      ss_await_result **out)
{
    ss_await_result *res = NULL;
    int rc;
    *out = NULL;
    rc = want_body(c, resp, STATESAVER__V1__RESPONSE__BODY_AWAIT_SEGMENT, "an await");
    if (rc < 0)
        goto out;
    const Statesaver__V1__AwaitResponse *a = resp->await_segment;
    if (a->state != STATESAVER__V1__SEGMENT_STATE__SEG_DONE &&
        a->state != STATESAVER__V1__SEGMENT_STATE__SEG_FAILED) {
        rc = ss_client_fail(c, SS_ERR_PROTO, "await reply: segment state %d is not final",
                            (int)a->state);
        goto out;
    }
    if (a->n_names != a->n_final_states) {
        rc = ss_client_fail(c, SS_ERR_PROTO, "await reply: %zu names, %zu final states",
                            a->n_names, a->n_final_states);
        goto out;
    }
    for (size_t i = 0; i < a->n_final_states; i++) {
        const tensor_t *t = a->final_states[i];
        if (!t || ss_tensor_check(t) < 0 ||
            ((uintptr_t)t->data.data % ss_dtype_size(t->dtype)) != 0) {
            rc = ss_client_fail(c, SS_ERR_PROTO, "await reply: final state %zu is malformed",
                                i);
            goto out;
        }
    }
    res = calloc(1, sizeof *res);
    if (!res) {
        rc = ss_client_fail(c, SS_ERR_NOMEM, "out of memory");
        goto out;
    }
    /* A done segment may have no outputs: asked without tensors, or a
     * trainer completed it with states only. */
    if (a->state == STATESAVER__V1__SEGMENT_STATE__SEG_DONE && a->outputs) {
        const tensor_t *o = a->outputs;
        if (!is_f32_matrix(o) || a->length > o->shape[0]) {
            rc = ss_client_fail(c, SS_ERR_PROTO, "await reply: outputs are malformed");
            goto out;
        }
        res->rows = (uint32_t)o->shape[0];
        res->cols = (uint32_t)o->shape[1];
        res->outputs = aligned_floats(o->data.data, o->data.len, &res->outputs_copy);
        if (!res->outputs) {
            rc = ss_client_fail(c, SS_ERR_NOMEM, "out of memory");
            goto out;
        }
    }
    res->resp = resp;
    res->a = a;
    resp = NULL;
    *out = res;
    res = NULL;
    rc = 0;
out:
    ss_await_result_free(res);
    ss_client_response_free(resp);
    return rc;
}

static void build_await(Statesaver__V1__AwaitRequest *a, ss_req *req, const char *saver,
                        const ss_key *key, uint64_t segment, uint32_t wait_ms, bool collect,
                        bool without_tensors)
{
    Statesaver__V1__AwaitRequest a0 = STATESAVER__V1__AWAIT_REQUEST__INIT;
    ss_req r0 = STATESAVER__V1__REQUEST__INIT;
    *a = a0;
    *req = r0;
    a->saver = ss_client_unconst(saver);
    ss_client_borrow_bytes(&a->key, key->data, key->len);
    a->segment = segment;
    a->wait_ms = wait_ms;
    a->collect = collect;
    a->without_tensors = without_tensors;
    req->body_case = STATESAVER__V1__REQUEST__BODY_AWAIT_SEGMENT;
    req->await_segment = a;
}

int ss_client_await(ss_client *c, const char *saver, const ss_key *key,
                    uint64_t segment, uint32_t wait_ms, bool collect,
                    ss_await_result **out)
{
    Statesaver__V1__AwaitRequest a;
    ss_req req;
    ss_resp *r = NULL;
    *out = NULL;
    int rc = ss_client_begin(c, !saver || !key || !key->data || key->len == 0,
                             "await: saver or key missing");
    if (rc < 0)
        return rc;
    build_await(&a, &req, saver, key, segment, wait_ms, collect, false);
    rc = ss_client_call(c, &req, wait_ms, &r);
    if (rc < 0)
        return rc;
    return await_wrap(c, r, false, out);
}

int ss_await_result_state(const ss_await_result *r)
{
    return r ? (int)r->a->state : SS_SEG_UNKNOWN;
}

uint32_t ss_await_result_length(const ss_await_result *r)
{
    return r ? r->a->length : 0;
}

bool ss_await_result_last(const ss_await_result *r)
{
    return r && r->a->last;
}

uint32_t ss_await_result_attempts(const ss_await_result *r)
{
    return r ? r->a->attempts : 0;
}

const char *ss_await_result_reason(const ss_await_result *r)
{
    return r && r->a->reason ? r->a->reason : "";
}

const float *ss_await_result_outputs(const ss_await_result *r, uint32_t *rows,
                                     uint32_t *cols)
{
    if (rows)
        *rows = r ? r->rows : 0;
    if (cols)
        *cols = r ? r->cols : 0;
    return r ? r->outputs : NULL;
}

size_t ss_await_result_finals(const ss_await_result *r)
{
    return r ? r->a->n_final_states : 0;
}

const char *ss_await_result_final_name(const ss_await_result *r, size_t i)
{
    return r && i < r->a->n_names ? r->a->names[i] : NULL;
}

const void *ss_await_result_final(const ss_await_result *r, size_t i, int *dtype,
                                  const int64_t **shape, size_t *rank, size_t *nbytes)
{
    if (!r || i >= r->a->n_final_states)
        return NULL;
    const tensor_t *t = r->a->final_states[i];
    if (dtype)
        *dtype = (int)t->dtype;
    if (shape)
        *shape = t->shape;
    if (rank)
        *rank = t->n_shape;
    if (nbytes)
        *nbytes = t->data.len;
    return t->data.data;
}

/* ss_client_await_many; without_tensors asks for replies without the
 * outputs and final states. */
static int await_many(ss_client *c, const char *saver, const ss_segment_ref *refs,
                      size_t n, uint32_t wait_ms, uint64_t total_ms, bool collect,
                      bool without_tensors, const ss_jobs_pipeline *pipe, ss_await_fn cb,
                      void *arg)
{
    uint32_t window = pipe && pipe->window ? pipe->window : SS_JOBS_WINDOW_DEFAULT;
    inflight *ring = NULL;
    size_t *todo = NULL; /* ring of ref indices still to send */
    size_t t_head = 0, t_count = 0, head = 0, count = 0;
    int64_t give_up = total_ms ? mono_ms() + (int64_t)total_ms : INT64_MAX;
    int rc = 0;

    rc = ss_client_begin(c, !saver || !cb || (n > 0 && !refs),
                         "await: saver, refs or callback missing");
    if (rc < 0)
        return rc;
    if (window > SS_JOBS_WINDOW_MAX)
        return ss_client_fail(c, SS_ERR_INVALID, "await: window %u exceeds %u", window,
                              SS_JOBS_WINDOW_MAX);
    for (size_t i = 0; i < n; i++)
        if (!refs[i].key.data || refs[i].key.len == 0)
            return ss_client_fail(c, SS_ERR_INVALID, "await: ref %zu has no key", i);
    ring = calloc(window, sizeof *ring);
    todo = calloc(n ? n : 1, sizeof *todo);
    if (!ring || !todo) {
        rc = ss_client_fail(c, SS_ERR_NOMEM, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < n; i++)
        todo[i] = i;
    t_count = n;
    while (t_count > 0 || count > 0) {
        /* Fill the window, then take the oldest reply. */
        while (t_count > 0 && count < window) {
            size_t i = todo[t_head];
            t_head = (t_head + 1) % (n ? n : 1);
            t_count--;
            Statesaver__V1__AwaitRequest a;
            ss_req req;
            build_await(&a, &req, saver, &refs[i].key, refs[i].segment, wait_ms, collect,
                        without_tensors);
            inflight *f = &ring[(head + count) % window];
            f->index = i;
            rc = ss_client_send(c, &req, &f->id);
            if (rc < 0)
                goto out;
            count++;
        }
        inflight *f = &ring[head];
        size_t i = f->index;
        ss_resp *r = NULL;
        ss_await_result *res = NULL;
        int got = ss_client_recv(c, f->id, held_timeout(c, wait_ms), &r);
        head = (head + 1) % window;
        count--;
        if (got == 0)
            got = await_wrap(c, r, without_tensors, &res);
        if (got == SS_ERR_STATUS(STATESAVER__V1__CODE__DEADLINE_EXCEEDED) &&
            mono_ms() < give_up) {
            todo[(t_head + t_count) % n] = i; /* not done yet: ask again */
            t_count++;
            continue;
        }
        if (got < 0 && ss_client_broken(c)) {
            /* Transport: the connection is unusable. Replies that had
             * already arrived are still reported (with collect, the server
             * may have deleted those results already). */
            char msg[SS_CLIENT_ERRMSG_MAX];
            ss_client_copy_str(msg, sizeof msg, ss_client_last_error(c));
            rc = got;
            for (size_t k = 0; k < count; k++) {
                inflight *g = &ring[(head + k) % window];
                ss_resp *gr = NULL;
                ss_await_result *gres = NULL;
                int gg = ss_client_recv(c, g->id, 0, &gr);
                if (gg < 0 && !SS_IS_STATUS_ERR(gg))
                    continue; /* never received: stays unreported */
                if (gg == 0)
                    gg = await_wrap(c, gr, without_tensors, &gres);
                if (gg == SS_ERR_STATUS(STATESAVER__V1__CODE__DEADLINE_EXCEEDED))
                    continue; /* not done yet: the caller asks again */
                if (cb(arg, g->index, gg, gres, gg < 0 ? ss_client_last_error(c) : "") != 0)
                    break;
            }
            ss_client_fail(c, rc, "%s", msg);
            goto out;
        }
        if (cb(arg, i, got, res, got < 0 ? ss_client_last_error(c) : "") != 0) {
            rc = ss_client_fail(c, SS_ERR_INVALID, "await: stopped by the callback");
            goto out;
        }
    }
    rc = 0;
out:
    free(todo);
    free(ring);
    return rc;
}

int ss_client_await_many(ss_client *c, const char *saver, const ss_segment_ref *refs,
                         size_t n, uint32_t wait_ms, uint64_t total_ms, bool collect,
                         const ss_jobs_pipeline *pipe, ss_await_fn cb, void *arg)
{
    return await_many(c, saver, refs, n, wait_ms, total_ms, collect, false, pipe, cb, arg);
}

/* ---- collect -------------------------------------------------------------- */

/* Adapter from ss_client_await_many's callback to ss_collect_fn. */
typedef struct collect_ctx {
    ss_collect_fn cb; /* caller's callback, may be NULL */
    void *arg;        /* its argument */
} collect_ctx;

static int collect_one(void *arg, size_t index, int rc, ss_await_result *r, const char *msg)
{
    collect_ctx *x = arg;
    ss_await_result_free(r); /* the caller has this result already */
    if (rc == SS_ERR_STATUS(STATESAVER__V1__CODE__NOT_FOUND))
        rc = 0; /* collected earlier (e.g. on a connection lost before its reply) */
    if (x->cb)
        x->cb(x->arg, index, rc, rc < 0 ? msg : "");
    return 0;
}

int ss_client_collect_many(ss_client *c, const char *saver, const ss_segment_ref *refs,
                           size_t n, const ss_jobs_pipeline *pipe, ss_collect_fn cb,
                           void *arg)
{
    collect_ctx x = {.cb = cb, .arg = arg};
    /* wait_ms 0 and total_ms 1: a segment that is not done is reported at
     * once (DEADLINE_EXCEEDED), never waited for. Without tensors: the
     * caller has the outputs already, the server does not send them again. */
    return await_many(c, saver, refs, n, 0, 1, true, true, pipe, collect_one, &x);
}
