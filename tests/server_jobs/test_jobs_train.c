/* test_jobs_train -- the training side of the job API (issue 10) through the
 * real statesaver-server binary, raw frames: named sequences, token-id
 * inputs, context, total_length/sequence_count and per-sequence initial
 * states round-trip through Lease and a restart; every bad input is a
 * clear INVALID_ARGUMENT naming its field with nothing stored; Complete
 * with states only; Cancel; Drop deleting job records; Lease
 * min_batch/max_delay_ms; Declare max_in_flight. */
#include <check.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "net_helper.h"

#define T_WAIT 10000 /* ms: bound on any single reply */
#define CODE(x) STATESAVER__V1__CODE__##x
#define DT(x) STATESAVER__V1__DTYPE__DT_##x
#define SAVER "tr"
#define T 4 /* steps per segment */

static tsrv g_srv;
static uint64_t g_id = 100; /* request ids */

static tresp *call(int fd, treq *q)
{
    q->id = ++g_id;
    tresp *r = tc_call(fd, q, T_WAIT);
    if (!r)
        tsrv_dump_log(&g_srv);
    ck_assert_msg(r != NULL, "no reply to request %llu", (unsigned long long)q->id);
    ck_assert_uint_eq(r->id, q->id);
    return r;
}

static const char *msg_of(const tresp *r)
{
    return r->status && r->status->message ? r->status->message : "";
}

static void expect_code(const tresp *r, int code, const char *what)
{
    ck_assert_msg(tresp_code(r) == code, "%s: status %d (%s), want %d", what, tresp_code(r),
                  msg_of(r), code);
}

/* Expect INVALID_ARGUMENT whose message names field. */
static void expect_invalid(tresp *r, const char *field)
{
    expect_code(r, CODE(INVALID_ARGUMENT), field);
    ck_assert_msg(strstr(msg_of(r), field) != NULL, "message does not name %s: %s", field,
                  msg_of(r));
    tresp_free(r);
}

/* ---- tensors and requests ------------------------------------------------ */

typedef Statesaver__V1__Tensor tensor;

static tensor tens(int dtype, size_t rank, int64_t *dims, void *data, size_t len)
{
    tensor t = STATESAVER__V1__TENSOR__INIT;
    t.dtype = dtype;
    t.n_shape = rank;
    t.shape = dims;
    t.data.data = data;
    t.data.len = len;
    return t;
}

typedef Statesaver__V1__SubmitRequest__SequencesEntry seq_entry;
typedef Statesaver__V1__SubmitRequest__ContextEntry ctx_entry;
typedef Statesaver__V1__SubmitRequest__InitialStatesEntry init_entry;

/* Everything a training Submit of key/segment carries (pointers borrowed). */
typedef struct sub_spec {
    const char *saver;   /* default SAVER */
    const char *key;     /* sequence key */
    uint64_t segment;    /* segment number */
    bool last;           /* last segment */
    uint32_t length;     /* real steps */
    tensor *inputs;      /* or NULL */
    size_t n_seq;        /* named sequences */
    const char *seq_names[4];
    tensor *seq[4];
    size_t n_ctx;        /* context tensors */
    const char *ctx_names[2];
    tensor *ctx[2];
    tensor *init_h;      /* initial state "h", or NULL */
    uint64_t total_length, sequence_count;
} sub_spec;

static tresp *submit(int fd, const sub_spec *sp)
{
    seq_entry se[4], *sep[4];
    ctx_entry ce[2], *cep[2];
    init_entry ie, *iep = &ie;
    Statesaver__V1__SubmitRequest s = STATESAVER__V1__SUBMIT_REQUEST__INIT;
    s.saver = (char *)(sp->saver ? sp->saver : SAVER);
    s.key.data = (uint8_t *)sp->key;
    s.key.len = strlen(sp->key);
    s.segment = sp->segment;
    s.last = sp->last;
    s.length = sp->length;
    s.inputs = sp->inputs;
    for (size_t i = 0; i < sp->n_seq; i++) {
        statesaver__v1__submit_request__sequences_entry__init(&se[i]);
        se[i].key = (char *)sp->seq_names[i];
        se[i].value = sp->seq[i];
        sep[i] = &se[i];
    }
    s.n_sequences = sp->n_seq;
    s.sequences = sep;
    for (size_t i = 0; i < sp->n_ctx; i++) {
        statesaver__v1__submit_request__context_entry__init(&ce[i]);
        ce[i].key = (char *)sp->ctx_names[i];
        ce[i].value = sp->ctx[i];
        cep[i] = &ce[i];
    }
    s.n_context = sp->n_ctx;
    s.context = cep;
    if (sp->init_h) {
        statesaver__v1__submit_request__initial_states_entry__init(&ie);
        ie.key = (char *)"h";
        ie.value = sp->init_h;
        s.n_initial_states = 1;
        s.initial_states = &iep;
    }
    s.total_length = sp->total_length;
    s.sequence_count = sp->sequence_count;
    treq q = STATESAVER__V1__REQUEST__INIT;
    q.body_case = STATESAVER__V1__REQUEST__BODY_SUBMIT;
    q.submit = &s;
    return call(fd, &q);
}

/* A plain token-id segment: int64 inputs [T] = seg*10 + i. */
static int submit_ids(int fd, const char *saver, const char *key, uint64_t seg, bool last)
{
    int64_t ids[T], dims[1] = {T};
    for (int i = 0; i < T; i++)
        ids[i] = (int64_t)seg * 10 + i;
    tensor in = tens(DT(INT64), 1, dims, ids, sizeof ids);
    sub_spec sp = {.saver = saver, .key = key, .segment = seg, .last = last, .length = T,
                   .inputs = &in};
    tresp *r = submit(fd, &sp);
    int code = tresp_code(r);
    tresp_free(r);
    return code;
}

static tresp *declare(int fd, const char *saver, uint32_t max_in_flight)
{
    Statesaver__V1__StateSpec spec = STATESAVER__V1__STATE_SPEC__INIT;
    int64_t shape[1] = {2};
    spec.name = (char *)"h";
    spec.dtype = DT(FLOAT32);
    spec.n_shape = 1;
    spec.shape = shape;
    Statesaver__V1__StateSpec *specs[1] = {&spec};
    Statesaver__V1__DeclareRequest d = STATESAVER__V1__DECLARE_REQUEST__INIT;
    d.saver = (char *)saver;
    d.n_states = 1;
    d.states = specs;
    d.max_in_flight = max_in_flight;
    treq q = STATESAVER__V1__REQUEST__INIT;
    q.body_case = STATESAVER__V1__REQUEST__BODY_DECLARE;
    q.declare = &d;
    return call(fd, &q);
}

static void declare_ok(int fd, const char *saver, uint32_t max_in_flight)
{
    tresp *r = declare(fd, saver, max_in_flight);
    expect_code(r, 0, "declare");
    tresp_free(r);
}

typedef struct lease_args {
    const char *saver;
    uint32_t max_batch, min_batch, max_delay_ms, wait_ms, lease_ms;
} lease_args;

static void send_lease(int fd, uint64_t id, const lease_args *a)
{
    Statesaver__V1__LeaseRequest l = STATESAVER__V1__LEASE_REQUEST__INIT;
    l.saver = (char *)(a->saver ? a->saver : SAVER);
    l.max_batch = a->max_batch;
    l.min_batch = a->min_batch;
    l.max_delay_ms = a->max_delay_ms;
    l.wait_ms = a->wait_ms;
    l.lease_ms = a->lease_ms;
    l.worker = (char *)"train-test";
    treq q = STATESAVER__V1__REQUEST__INIT;
    q.id = id;
    q.body_case = STATESAVER__V1__REQUEST__BODY_LEASE;
    q.lease = &l;
    ck_assert_int_eq(tc_send(fd, &q), 0);
}

static tresp *lease(int fd, const lease_args *a)
{
    uint64_t id = ++g_id;
    send_lease(fd, id, a);
    tresp *r = tc_recv(fd, T_WAIT, NULL);
    ck_assert_ptr_nonnull(r);
    ck_assert_uint_eq(r->id, id);
    return r;
}

static tresp *lease_ok(int fd, const lease_args *a)
{
    tresp *r = lease(fd, a);
    expect_code(r, 0, "lease");
    ck_assert_int_eq(r->body_case, STATESAVER__V1__RESPONSE__BODY_LEASE);
    return r;
}

static const Statesaver__V1__LeasedSegment *item_of(const tresp *r, const char *key)
{
    for (size_t i = 0; i < r->lease->n_items; i++) {
        const Statesaver__V1__LeasedSegment *it = r->lease->items[i];
        if (it->key.len == strlen(key) && memcmp(it->key.data, key, it->key.len) == 0)
            return it;
    }
    return NULL;
}

/* Complete items of a lease with state h = {a, b}; outputs only when
 * with_outputs; states_n = 0 sends none (a bad item). */
static tresp *complete(int fd, uint64_t lease_id, const char *key, uint64_t seg, float a,
                       float b, size_t states_n, bool with_outputs)
{
    float st[2] = {a, b}, out[T] = {1, 2, 3, 4};
    int64_t sdims[1] = {2}, odims[2] = {T, 1};
    tensor s = tens(DT(FLOAT32), 1, sdims, st, sizeof st);
    tensor o = tens(DT(FLOAT32), 2, odims, out, sizeof out);
    tensor *sp[1] = {&s};
    Statesaver__V1__CompletedSegment c = STATESAVER__V1__COMPLETED_SEGMENT__INIT;
    c.key.data = (uint8_t *)key;
    c.key.len = strlen(key);
    c.segment = seg;
    c.n_states = states_n;
    c.states = sp;
    if (with_outputs)
        c.outputs = &o;
    Statesaver__V1__CompletedSegment *cp[1] = {&c};
    Statesaver__V1__CompleteRequest req = STATESAVER__V1__COMPLETE_REQUEST__INIT;
    req.saver = (char *)SAVER;
    req.lease_id = lease_id;
    req.n_items = 1;
    req.items = cp;
    treq q = STATESAVER__V1__REQUEST__INIT;
    q.body_case = STATESAVER__V1__REQUEST__BODY_COMPLETE;
    q.complete = &req;
    return call(fd, &q);
}

static tresp *await_seg(int fd, const char *key, uint64_t seg)
{
    Statesaver__V1__AwaitRequest a = STATESAVER__V1__AWAIT_REQUEST__INIT;
    a.saver = (char *)SAVER;
    a.key.data = (uint8_t *)key;
    a.key.len = strlen(key);
    a.segment = seg;
    treq q = STATESAVER__V1__REQUEST__INIT;
    q.body_case = STATESAVER__V1__REQUEST__BODY_AWAIT_SEGMENT;
    q.await_segment = &a;
    return call(fd, &q);
}

static tresp *cancel(int fd, const char *saver, size_t n, const char *const *keys)
{
    ProtobufCBinaryData kb[8];
    for (size_t i = 0; i < n; i++) {
        kb[i].data = (uint8_t *)keys[i];
        kb[i].len = strlen(keys[i]);
    }
    Statesaver__V1__CancelRequest c = STATESAVER__V1__CANCEL_REQUEST__INIT;
    c.saver = (char *)saver;
    c.n_keys = n;
    c.keys = kb;
    treq q = STATESAVER__V1__REQUEST__INIT;
    q.body_case = STATESAVER__V1__REQUEST__BODY_CANCEL;
    q.cancel = &c;
    return call(fd, &q);
}

static tresp *drop(int fd, const char *saver, size_t n, const char *const *keys, bool all)
{
    ProtobufCBinaryData kb[8];
    for (size_t i = 0; i < n; i++) {
        kb[i].data = (uint8_t *)keys[i];
        kb[i].len = strlen(keys[i]);
    }
    Statesaver__V1__DropRequest d = STATESAVER__V1__DROP_REQUEST__INIT;
    d.saver = (char *)saver;
    d.n_keys = n;
    d.keys = kb;
    d.all = all;
    treq q = STATESAVER__V1__REQUEST__INIT;
    q.body_case = STATESAVER__V1__REQUEST__BODY_DROP;
    q.drop = &d;
    return call(fd, &q);
}

/* Stats of the whole server: queued and leased. */
static void queue_counts(int fd, uint64_t *queued, uint64_t *leased)
{
    Statesaver__V1__StatsRequest s = STATESAVER__V1__STATS_REQUEST__INIT;
    treq q = STATESAVER__V1__REQUEST__INIT;
    q.body_case = STATESAVER__V1__REQUEST__BODY_STATS;
    q.stats = &s;
    tresp *r = call(fd, &q);
    expect_code(r, 0, "stats");
    *queued = r->stats->queued;
    *leased = r->stats->leased;
    tresp_free(r);
}

static uint64_t next_segment(int fd, const char *key)
{
    const char *keys[1] = {key};
    treq *q = treq_fetch(0, SAVER, 1, keys, 0, 0);
    tresp *r = call(fd, q);
    expect_code(r, 0, "fetch");
    uint64_t n = r->fetch->next_segment[0];
    tresp_free(r);
    treq_free(q);
    return n;
}

static void start(const char *const *extra)
{
    tsrv_start(&g_srv, extra);
}

static const char *const k_base_args[] = {"--sync", "off", NULL};

/* ---- the fields round-trip ----------------------------------------------- */

/* Data of the training submit of "a" (segment 0 and 1). */
static int64_t g_ids[2][T];
static int32_t g_tgt[2][T];
static double g_feat[2][T * 2];
static float g_spk[2] = {3.5f, -1.0f};
static float g_init[2] = {5.0f, 6.0f};

static tresp *submit_a(int fd, uint64_t seg, bool with_init)
{
    for (int i = 0; i < T; i++) {
        g_ids[seg][i] = (int64_t)seg * 100 + i;
        g_tgt[seg][i] = (int32_t)(seg * 100 + i + 1);
        g_feat[seg][2 * i] = 0.5 * i;
        g_feat[seg][2 * i + 1] = -0.25 * (double)seg;
    }
    static int64_t d1[1] = {T}, d2[2] = {T, 2}, dc[1] = {2}, dh[1] = {2};
    tensor in = tens(DT(INT64), 1, d1, g_ids[seg], sizeof g_ids[seg]);
    tensor tg = tens(DT(INT32), 1, d1, g_tgt[seg], sizeof g_tgt[seg]);
    tensor ft = tens(DT(FLOAT64), 2, d2, g_feat[seg], sizeof g_feat[seg]);
    tensor sk = tens(DT(FLOAT32), 1, dc, g_spk, sizeof g_spk);
    tensor ih = tens(DT(FLOAT32), 1, dh, g_init, sizeof g_init);
    sub_spec sp = {.key = "a", .segment = seg, .last = seg == 1, .length = seg == 1 ? 3 : T,
                   .inputs = &in, .n_seq = 2, .seq_names = {"targets", "feat"},
                   .seq = {&tg, &ft}, .n_ctx = 1, .ctx_names = {"speaker"}, .ctx = {&sk},
                   .init_h = with_init ? &ih : NULL, .total_length = 7, .sequence_count = 2};
    return submit(fd, &sp);
}

static const tensor *seq_of(const Statesaver__V1__LeasedSegment *it, const char *name)
{
    for (size_t i = 0; i < it->n_sequences; i++)
        if (strcmp(it->sequences[i]->key, name) == 0)
            return it->sequences[i]->value;
    return NULL;
}

static const tensor *ctx_of(const Statesaver__V1__LeasedSegment *it, const char *name)
{
    for (size_t i = 0; i < it->n_context; i++)
        if (strcmp(it->context[i]->key, name) == 0)
            return it->context[i]->value;
    return NULL;
}

static void check_item_a(const Statesaver__V1__LeasedSegment *it, uint64_t seg,
                         const float *state)
{
    ck_assert_ptr_nonnull(it);
    ck_assert_uint_eq(it->segment, seg);
    ck_assert_uint_eq(it->total_length, 7);
    ck_assert_uint_eq(it->sequence_count, 2);
    ck_assert_uint_eq(it->length, seg == 1 ? 3 : T);
    ck_assert_ptr_nonnull(it->inputs);
    ck_assert_int_eq(it->inputs->dtype, DT(INT64));
    ck_assert_uint_eq(it->inputs->n_shape, 1);
    ck_assert_int_eq(it->inputs->shape[0], T);
    ck_assert_mem_eq(it->inputs->data.data, g_ids[seg], sizeof g_ids[seg]);
    ck_assert_uint_eq(it->n_sequences, 2);
    const tensor *tg = seq_of(it, "targets"), *ft = seq_of(it, "feat");
    ck_assert_ptr_nonnull(tg);
    ck_assert_ptr_nonnull(ft);
    ck_assert_int_eq(tg->dtype, DT(INT32));
    ck_assert_mem_eq(tg->data.data, g_tgt[seg], sizeof g_tgt[seg]);
    ck_assert_int_eq(ft->dtype, DT(FLOAT64));
    ck_assert_uint_eq(ft->n_shape, 2);
    ck_assert_int_eq(ft->shape[1], 2);
    ck_assert_mem_eq(ft->data.data, g_feat[seg], sizeof g_feat[seg]);
    const tensor *sk = ctx_of(it, "speaker");
    ck_assert_ptr_nonnull(sk);
    ck_assert_uint_eq(it->n_context, 1);
    ck_assert_int_eq(sk->dtype, DT(FLOAT32));
    ck_assert_mem_eq(sk->data.data, g_spk, sizeof g_spk);
    ck_assert_uint_eq(it->n_states, 1);
    ck_assert_mem_eq(it->states[0]->data.data, state, 2 * sizeof(float));
}

START_TEST(test_train_fields_restart)
{
    tsrv_init(&g_srv);
    start(k_base_args);
    int fd = tc_connect(g_srv.port);
    ck_assert_int_ge(fd, 0);
    declare_ok(fd, SAVER, 0);
    tresp *r = submit_a(fd, 0, true);
    expect_code(r, 0, "submit a/0");
    tresp_free(r);
    r = submit_a(fd, 1, false); /* the same context again: accepted */
    expect_code(r, 0, "submit a/1");
    tresp_free(r);
    r = submit_a(fd, 0, true); /* identical resubmission */
    expect_code(r, 0, "resubmit a/0");
    ck_assert(r->submit->already_queued);
    tresp_free(r);
    lease_args la = {.max_batch = 4};
    r = lease_ok(fd, &la);
    ck_assert_uint_eq(r->lease->n_items, 1);
    check_item_a(item_of(r, "a"), 0, g_init); /* the per-sequence initial state */
    tresp_free(r);
    /* Restart: everything was stored; the lease was not. */
    close(fd);
    ck_assert_int_eq(tsrv_stop(&g_srv, SIGTERM, T_WAIT), 0);
    start(k_base_args);
    fd = tc_connect(g_srv.port);
    ck_assert_int_ge(fd, 0);
    r = lease_ok(fd, &la);
    ck_assert_uint_eq(r->lease->n_items, 1);
    check_item_a(item_of(r, "a"), 0, g_init);
    uint64_t lid = r->lease->lease_id;
    tresp_free(r);
    /* Complete with states only; Await says done, without outputs. */
    r = complete(fd, lid, "a", 0, 7.0f, 8.0f, 1, false);
    expect_code(r, 0, "complete states only");
    tresp_free(r);
    r = await_seg(fd, "a", 0);
    expect_code(r, 0, "await a/0");
    ck_assert_int_eq(r->await_segment->state, STATESAVER__V1__SEGMENT_STATE__SEG_DONE);
    ck_assert_ptr_null(r->await_segment->outputs);
    tresp_free(r);
    r = lease_ok(fd, &la);
    ck_assert_uint_eq(r->lease->n_items, 1);
    float carried[2] = {7.0f, 8.0f};
    check_item_a(item_of(r, "a"), 1, carried); /* context with every segment */
    tresp_free(r);
    close(fd);
    ck_assert_int_eq(tsrv_stop(&g_srv, SIGTERM, T_WAIT), 0);
    tsrv_cleanup(&g_srv);
}
END_TEST

/* ---- bad input ------------------------------------------------------------- */

START_TEST(test_train_bad_input)
{
    tsrv_init(&g_srv);
    start(k_base_args);
    int fd = tc_connect(g_srv.port);
    ck_assert_int_ge(fd, 0);
    declare_ok(fd, SAVER, 0);
    tresp *r = submit_a(fd, 0, true);
    expect_code(r, 0, "submit a/0");
    tresp_free(r);
    uint64_t q0, l0, q, l;
    queue_counts(fd, &q0, &l0);
    int64_t d1[1] = {T}, d5[1] = {T + 1}, dT2[2] = {T, 2}, dc[1] = {2}, d3[1] = {3};
    int64_t ids[T] = {1, 2, 3, 4}, ids5[T + 1] = {0};
    float f2[2] = {1, 2}, fT2[T * 2] = {0}, f3[3] = {0};
    tensor in = tens(DT(INT64), 1, d1, ids, sizeof ids);
    tensor in5 = tens(DT(INT64), 1, d5, ids5, sizeof ids5);
    tensor bad_dt = tens(9, 1, d1, ids, sizeof ids);
    tensor ctx_time = tens(DT(FLOAT32), 2, dT2, fT2, sizeof fT2);
    tensor ctx_other = tens(DT(FLOAT32), 1, dc, f2, sizeof f2);
    tensor h3 = tens(DT(FLOAT32), 1, d3, f3, sizeof f3);
    tensor h2 = tens(DT(FLOAT32), 1, dc, f2, sizeof f2);
    /* Mismatched T across named sequences. */
    sub_spec sp = {.key = "b", .length = T, .inputs = &in, .n_seq = 1,
                   .seq_names = {"targets"}, .seq = {&in5}};
    expect_invalid(submit(fd, &sp), "sequences.targets");
    /* Unknown dtype. */
    sp = (sub_spec){.key = "b", .length = T, .inputs = &in, .n_seq = 1, .seq_names = {"x"},
                    .seq = {&bad_dt}};
    expect_invalid(submit(fd, &sp), "unknown dtype");
    sp = (sub_spec){.key = "b", .length = T, .inputs = &bad_dt};
    expect_invalid(submit(fd, &sp), "inputs");
    /* A context with a time axis ([T, 2]). */
    sp = (sub_spec){.key = "b", .length = T, .inputs = &in, .n_ctx = 1, .ctx_names = {"c"},
                    .ctx = {&ctx_time}};
    expect_invalid(submit(fd, &sp), "context.c");
    /* A context other than the sequence's. */
    sp = (sub_spec){.key = "a", .segment = 1, .length = T, .inputs = &in, .n_ctx = 1,
                    .ctx_names = {"speaker"}, .ctx = {&ctx_other}};
    expect_invalid(submit(fd, &sp), "context");
    /* Initial states past segment 0, or of the wrong shape. */
    sp = (sub_spec){.key = "a", .segment = 1, .length = T, .inputs = &in, .init_h = &h2};
    expect_invalid(submit(fd, &sp), "initial_states");
    sp = (sub_spec){.key = "b", .length = T, .inputs = &in, .init_h = &h3};
    expect_invalid(submit(fd, &sp), "initial_states.h");
    /* The inputs twice, no inputs at all, length past T, bad sequence_count. */
    sp = (sub_spec){.key = "b", .length = T, .inputs = &in, .n_seq = 1,
                    .seq_names = {"inputs"}, .seq = {&in}};
    expect_invalid(submit(fd, &sp), "sequences.inputs");
    sp = (sub_spec){.key = "b", .length = T};
    expect_invalid(submit(fd, &sp), "inputs");
    sp = (sub_spec){.key = "b", .length = T + 1, .inputs = &in};
    expect_invalid(submit(fd, &sp), "length");
    sp = (sub_spec){.key = "b", .segment = 2, .length = T, .inputs = &in, .sequence_count = 2};
    expect_invalid(submit(fd, &sp), "sequence_count");
    /* min_batch larger than max_batch. */
    lease_args la = {.max_batch = 2, .min_batch = 3};
    r = lease(fd, &la);
    expect_invalid(r, "min_batch");
    /* Nothing stored changed, and the server serves. */
    queue_counts(fd, &q, &l);
    ck_assert_uint_eq(q, q0);
    ck_assert_uint_eq(l, l0);
    la = (lease_args){.max_batch = 4};
    r = lease_ok(fd, &la);
    ck_assert_uint_eq(r->lease->n_items, 1);
    check_item_a(item_of(r, "a"), 0, g_init);
    uint64_t lid = r->lease->lease_id;
    tresp_free(r);
    /* A Complete item without states; the lease stays live. */
    r = complete(fd, lid, "a", 0, 0, 0, 0, true);
    expect_invalid(r, "states");
    r = complete(fd, lid, "a", 0, 1.0f, 2.0f, 1, false);
    expect_code(r, 0, "complete after a bad one");
    tresp_free(r);
    ck_assert_uint_eq(next_segment(fd, "a"), 1);
    close(fd);
    ck_assert_int_eq(tsrv_stop(&g_srv, SIGTERM, T_WAIT), 0);
    tsrv_cleanup(&g_srv);
}
END_TEST

/* ---- Cancel and Drop -------------------------------------------------------- */

START_TEST(test_cancel)
{
    static const char *const args[] = {"--sync", "off", "--queue-capacity", "3", NULL};
    tsrv_init(&g_srv);
    start(args);
    int fd = tc_connect(g_srv.port);
    ck_assert_int_ge(fd, 0);
    declare_ok(fd, SAVER, 0);
    ck_assert_int_eq(submit_ids(fd, NULL, "a", 0, false), 0);
    ck_assert_int_eq(submit_ids(fd, NULL, "b", 0, false), 0);
    ck_assert_int_eq(submit_ids(fd, NULL, "c", 0, false), 0);
    ck_assert_int_eq(submit_ids(fd, NULL, "d", 0, false), CODE(RESOURCE_EXHAUSTED));
    lease_args la = {.max_batch = 2};
    tresp *r = lease_ok(fd, &la);
    ck_assert_uint_eq(r->lease->n_items, 2);
    ck_assert_ptr_nonnull(item_of(r, "a"));
    ck_assert_ptr_nonnull(item_of(r, "b"));
    uint64_t lid = r->lease->lease_id;
    tresp_free(r);
    r = complete(fd, lid, "b", 0, 1.0f, 2.0f, 1, true); /* b: a state and outputs */
    expect_code(r, 0, "complete b");
    tresp_free(r);
    ck_assert_uint_eq(next_segment(fd, "b"), 1);
    /* Cancel a (leased) and b (done, with a state). */
    const char *ab[2] = {"a", "b"};
    r = cancel(fd, SAVER, 2, ab);
    expect_code(r, 0, "cancel");
    ck_assert_uint_eq(r->cancel->cancelled, 2);
    ck_assert_uint_eq(r->cancel->segments, 2);
    tresp_free(r);
    uint64_t q, l;
    queue_counts(fd, &q, &l);
    ck_assert_uint_eq(q, 1); /* c */
    ck_assert_uint_eq(l, 0);
    /* The freed slots take new work. */
    ck_assert_int_eq(submit_ids(fd, NULL, "d", 0, false), 0);
    /* The cancelled leased segment's Complete: a clear error naming it. */
    r = complete(fd, lid, "a", 0, 1.0f, 2.0f, 1, false);
    expect_code(r, CODE(FAILED_PRECONDITION), "complete of a cancelled segment");
    ck_assert_msg(strstr(msg_of(r), "key a segment 0") && strstr(msg_of(r), "cancelled"),
                  "%s", msg_of(r));
    tresp_free(r);
    /* State and outputs are gone. */
    ck_assert_uint_eq(next_segment(fd, "b"), 0);
    r = await_seg(fd, "b", 0);
    expect_code(r, CODE(NOT_FOUND), "await of a cancelled segment");
    tresp_free(r);
    /* A key with nothing: OK, nothing cancelled; bad requests. */
    const char *zz[1] = {"zz"};
    r = cancel(fd, SAVER, 1, zz);
    expect_code(r, 0, "cancel of nothing");
    ck_assert_uint_eq(r->cancel->cancelled, 0);
    tresp_free(r);
    r = cancel(fd, "nosuch", 1, zz);
    expect_code(r, CODE(NOT_FOUND), "cancel of an undeclared saver");
    tresp_free(r);
    expect_invalid(cancel(fd, SAVER, 0, NULL), "keys");
    const char *dup[2] = {"c", "c"};
    expect_invalid(cancel(fd, SAVER, 2, dup), "keys");
    queue_counts(fd, &q, &l);
    ck_assert_uint_eq(q, 2); /* c, d */
    /* a starts again from segment 0 */
    ck_assert_int_eq(submit_ids(fd, NULL, "a", 0, false), 0);
    close(fd);
    ck_assert_int_eq(tsrv_stop(&g_srv, SIGTERM, T_WAIT), 0);
    tsrv_cleanup(&g_srv);
}
END_TEST

START_TEST(test_drop_removes_jobs)
{
    static const char *const args[] = {"--sync", "off", "--queue-capacity", "2", NULL};
    tsrv_init(&g_srv);
    start(args);
    int fd = tc_connect(g_srv.port);
    ck_assert_int_ge(fd, 0);
    declare_ok(fd, SAVER, 0);
    ck_assert_int_eq(submit_ids(fd, NULL, "a", 0, false), 0);
    ck_assert_int_eq(submit_ids(fd, NULL, "a", 1, true), 0);
    ck_assert_int_eq(submit_ids(fd, NULL, "b", 0, false), CODE(RESOURCE_EXHAUSTED));
    const char *a[1] = {"a"};
    tresp *r = drop(fd, SAVER, 1, a, false);
    expect_code(r, 0, "drop a");
    tresp_free(r);
    uint64_t q, l;
    queue_counts(fd, &q, &l);
    ck_assert_uint_eq(q, 0);
    ck_assert_int_eq(submit_ids(fd, NULL, "b", 0, false), 0);
    ck_assert_int_eq(submit_ids(fd, NULL, "c", 0, false), 0);
    r = drop(fd, SAVER, 0, NULL, true);
    expect_code(r, 0, "drop all");
    tresp_free(r);
    queue_counts(fd, &q, &l);
    ck_assert_uint_eq(q, 0);
    declare_ok(fd, SAVER, 0);
    ck_assert_int_eq(submit_ids(fd, NULL, "b", 0, false), 0);
    ck_assert_int_eq(submit_ids(fd, NULL, "c", 0, false), 0);
    /* After a restart the dropped records are gone too. */
    close(fd);
    ck_assert_int_eq(tsrv_stop(&g_srv, SIGTERM, T_WAIT), 0);
    start(args);
    fd = tc_connect(g_srv.port);
    ck_assert_int_ge(fd, 0);
    queue_counts(fd, &q, &l);
    ck_assert_uint_eq(q, 2);
    close(fd);
    ck_assert_int_eq(tsrv_stop(&g_srv, SIGTERM, T_WAIT), 0);
    tsrv_cleanup(&g_srv);
}
END_TEST

/* ---- batch formation ------------------------------------------------------- */

START_TEST(test_min_batch)
{
    tsrv_init(&g_srv);
    start(k_base_args);
    int fd = tc_connect(g_srv.port), fd2 = tc_connect(g_srv.port);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_ge(fd2, 0);
    declare_ok(fd, SAVER, 0);
    /* Parked for a batch of 3 (up to 5 s). */
    lease_args big = {.max_batch = 4, .min_batch = 3, .max_delay_ms = 5000, .wait_ms = 6000};
    uint64_t t0 = tnow_ms();
    send_lease(fd, 900, &big);
    /* It does not hold up another trainer's Lease. */
    ck_assert_int_eq(submit_ids(fd2, NULL, "x", 0, false), 0);
    lease_args one = {.max_batch = 1, .wait_ms = 2000};
    tresp *r = lease_ok(fd2, &one);
    ck_assert_uint_eq(r->lease->n_items, 1);
    ck_assert_ptr_nonnull(item_of(r, "x"));
    tresp_free(r);
    ck_assert_int_eq(submit_ids(fd2, NULL, "y", 0, false), 0);
    ck_assert_int_eq(submit_ids(fd2, NULL, "z", 0, false), 0);
    ck_assert_int_eq(submit_ids(fd2, NULL, "w", 0, false), 0);
    r = tc_recv(fd, T_WAIT, NULL);
    ck_assert_ptr_nonnull(r);
    ck_assert_uint_eq(r->id, 900);
    expect_code(r, 0, "min_batch lease");
    ck_assert_uint_eq(r->lease->n_items, 3);
    ck_assert_uint_lt(tnow_ms() - t0, 4000); /* served on the third, not at the delay */
    tresp_free(r);
    /* Fewer than min_batch ready: after max_delay_ms, what is ready. */
    ck_assert_int_eq(submit_ids(fd2, NULL, "v", 0, false), 0);
    lease_args delay = {.max_batch = 4, .min_batch = 3, .max_delay_ms = 300, .wait_ms = 5000};
    t0 = tnow_ms();
    r = lease_ok(fd, &delay);
    ck_assert_uint_ge(tnow_ms() - t0, 250);
    ck_assert_uint_eq(r->lease->n_items, 1);
    ck_assert_ptr_nonnull(item_of(r, "v"));
    tresp_free(r);
    /* Nothing at all: wait_ms, then an empty lease. */
    lease_args none = {.max_batch = 4, .min_batch = 2, .max_delay_ms = 100, .wait_ms = 400};
    t0 = tnow_ms();
    r = lease_ok(fd, &none);
    ck_assert_uint_ge(tnow_ms() - t0, 350);
    ck_assert_uint_eq(r->lease->n_items, 0);
    ck_assert_uint_eq(r->lease->lease_id, 0);
    tresp_free(r);
    close(fd);
    close(fd2);
    ck_assert_int_eq(tsrv_stop(&g_srv, SIGTERM, T_WAIT), 0);
    tsrv_cleanup(&g_srv);
}
END_TEST

START_TEST(test_max_in_flight)
{
    tsrv_init(&g_srv);
    start(k_base_args);
    int fd = tc_connect(g_srv.port), fd2 = tc_connect(g_srv.port);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_ge(fd2, 0);
    declare_ok(fd, SAVER, 2);
    tresp *r = declare(fd, SAVER, 3); /* a different cap is a different schema */
    expect_code(r, CODE(ALREADY_EXISTS), "redeclare with another max_in_flight");
    tresp_free(r);
    const char *keys[4] = {"k0", "k1", "k2", "k3"};
    for (int i = 0; i < 4; i++)
        ck_assert_int_eq(submit_ids(fd, NULL, keys[i], 0, true), 0);
    lease_args la = {.max_batch = 4};
    r = lease_ok(fd, &la);
    ck_assert_uint_eq(r->lease->n_items, 2);
    uint64_t lid = r->lease->lease_id;
    char first[8];
    snprintf(first, sizeof first, "%.*s", (int)r->lease->items[0]->key.len,
             (const char *)r->lease->items[0]->key.data);
    tresp_free(r);
    r = lease_ok(fd, &la);
    ck_assert_uint_eq(r->lease->n_items, 0); /* the cap is reached */
    tresp_free(r);
    /* A parked Lease gets a sequence as soon as one is completed. */
    lease_args wait = {.max_batch = 4, .wait_ms = 5000};
    send_lease(fd2, 901, &wait);
    r = complete(fd, lid, first, 0, 1.0f, 1.0f, 1, false);
    expect_code(r, 0, "complete");
    tresp_free(r);
    r = tc_recv(fd2, T_WAIT, NULL);
    ck_assert_ptr_nonnull(r);
    ck_assert_uint_eq(r->id, 901);
    expect_code(r, 0, "parked lease");
    ck_assert_uint_eq(r->lease->n_items, 1);
    tresp_free(r);
    uint64_t q, l;
    queue_counts(fd, &q, &l);
    ck_assert_uint_eq(l, 2);
    ck_assert_uint_eq(q, 1);
    close(fd);
    close(fd2);
    ck_assert_int_eq(tsrv_stop(&g_srv, SIGTERM, T_WAIT), 0);
    tsrv_cleanup(&g_srv);
}
END_TEST

static Suite *jobs_train_suite(void)
{
    Suite *s = suite_create("jobs_train");
    TCase *tc = tcase_create("server");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_train_fields_restart);
    tcase_add_test(tc, test_train_bad_input);
    tcase_add_test(tc, test_cancel);
    tcase_add_test(tc, test_drop_removes_jobs);
    tcase_add_test(tc, test_min_batch);
    tcase_add_test(tc, test_max_in_flight);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(jobs_train_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
