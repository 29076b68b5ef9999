/* test_jobs_client -- Check suite for libstatesaver's job calls
 * (statesaver_jobs.h) against the real server, with the test playing the
 * worker: exact inputs, lengths, padding and states through lease and
 * complete; pipelined await with outputs and final states; failed
 * attempts up to the poison limit; expired leases; bad arguments refused
 * before anything is sent; Complete split into send and receive with a
 * Lease in between; await without collect, then collect (acknowledge),
 * repeated collects and collects of unknown or unfinished segments;
 * parked Awaits answered when the Complete commits, and Awaits and
 * collects without tensors (AwaitRequest.without_tensors).
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "jobs_fixture.h"
#include "ss_testserver.h"
#include "statesaver.pb-c.h"
#include "statesaver_jobs.h"

#define ST_DEADLINE_EXCEEDED 4
#define ST_NOT_FOUND 5
#define ST_FAILED_PRECONDITION 9
#define SERVER_MAX_ATTEMPTS 3 /* the server's default --max-attempts */


#define KEY(s) ((ss_key){(s), sizeof(s) - 1})

static const int64_t shape_a[] = {3};
static const int64_t shape_b[] = {2};

/* Declare saver with states a[3], b[2]. */
static void declare(const char *saver)
{
    ss_state_def defs[] = {
        {.name = "a", .dtype = SS_DTYPE_FLOAT32, .shape = shape_a, .rank = 1},
        {.name = "b", .dtype = SS_DTYPE_FLOAT32, .shape = shape_b, .rank = 1},
    };
    ck_assert_int_eq(ss_client_declare(c, saver, defs, 2, 0, false, NULL), 0);
}

static ss_lease *lease_one(const char *saver, uint32_t lease_ms)
{
    ss_lease *l = NULL;
    int rc = ss_client_lease(c, saver, 8, 2000, lease_ms, "test", &l);
    ck_assert_msg(rc == 0, "lease: %s", ss_client_last_error(c));
    ck_assert_uint_eq(ss_lease_items(l), 1);
    return l;
}

/* Three segments through lease and complete, state carried between them;
 * then every output and the final states through ss_client_await_many. */
typedef struct collected {
    ss_await_result *r[3]; /* results by ref index */
    int rc[3];             /* their codes */
    int calls;             /* callback invocations */
} collected;

static int collect_cb(void *arg, size_t i, int rc, ss_await_result *r, const char *m)
{
    collected *col = arg;
    (void)m;
    ck_assert_uint_lt(i, 3);
    col->rc[i] = rc;
    col->r[i] = r;
    col->calls++;
    return 0;
}

START_TEST(test_roundtrip)
{
    enum { LEN = 10, IN = 2, T = 4 };
    float x[LEN * IN];
    for (int i = 0; i < LEN * IN; i++)
        x[i] = (float)i + 0.5f;
    ss_key k = KEY("seq-1");
    uint64_t nseg = 0;
    declare("rt");
    ck_assert_int_eq(ss_client_submit_sequence(c, "rt", &k, x, LEN, IN, T, &nseg), 0);
    ck_assert_uint_eq(nseg, 3);
    ck_assert_uint_eq(ss_jobs_segments(LEN, T), 3);

    float sa[3] = {0}, sb[2] = {0};
    for (uint64_t s = 0; s < 3; s++) {
        ss_lease *l = lease_one("rt", 0);
        ss_lease_item it;
        ck_assert_int_eq(ss_lease_item_get(l, 0, &it), 0);
        ck_assert_uint_eq(it.segment, s);
        ck_assert_uint_eq(it.rows, T);
        ck_assert_uint_eq(it.cols, IN);
        ck_assert_uint_eq(it.length, s < 2 ? T : LEN - 2 * T);
        ck_assert(it.last == (s == 2));
        ck_assert_uint_eq(it.attempts, 0);
        ck_assert_uint_eq(it.key.len, 5);
        ck_assert(memcmp(it.key.data, "seq-1", 5) == 0);
        ck_assert_str_eq(ss_lease_saver(l), "rt");
        ck_assert_uint_eq(ss_lease_states(l), 2);
        ck_assert_str_eq(ss_lease_state_name(l, 0), "a");
        ck_assert_str_eq(ss_lease_state_name(l, 1), "b");
        ck_assert_ptr_null(ss_lease_state_name(l, 2));
        ck_assert(ss_lease_id(l) > 0 && ss_lease_deadline_ms(l) > 0);
        for (uint32_t r = 0; r < T; r++)
            for (uint32_t j = 0; j < IN; j++) {
                uint64_t row = s * T + r;
                float want = row < LEN ? x[row * IN + j] : 0.0f; /* zero padding */
                ck_assert_float_eq(it.inputs[r * IN + j], want);
            }
        size_t na = 0, nb = 0;
        const float *ga = ss_lease_item_state(l, 0, 0, &na);
        const float *gb = ss_lease_item_state(l, 0, 1, &nb);
        ck_assert_uint_eq(na, 3);
        ck_assert_uint_eq(nb, 2);
        ck_assert(memcmp(ga, sa, sizeof sa) == 0); /* the state saved last time */
        ck_assert(memcmp(gb, sb, sizeof sb) == 0);
        ck_assert_ptr_null(ss_lease_item_state(l, 1, 0, NULL));
        /* The "model": outputs = 2 * inputs, states count segments. */
        float out[T * IN];
        for (int i = 0; i < T * IN; i++)
            out[i] = 2.0f * it.inputs[i];
        for (int i = 0; i < 3; i++)
            sa[i] = (float)(s + 1) * 10.0f + (float)i;
        sb[0] = -(float)s;
        sb[1] = 100.0f + (float)s;
        const float *states[] = {sa, sb};
        ss_complete_item ci = {.item = 0, .outputs = out, .out_cols = IN, .states = states};
        bool already = true;
        ck_assert_msg(ss_client_complete(c, l, &ci, 1, &already) == 0, "complete: %s",
                      ss_client_last_error(c));
        ck_assert(!already);
        ss_lease_free(l);
    }

    ss_segment_ref refs[3] = {{k, 0}, {k, 1}, {k, 2}};
    collected col = {.calls = 0};
    ck_assert_int_eq(ss_client_await_many(c, "rt", refs, 3, 1000, 5000, true, NULL, collect_cb,
                                          &col), 0);
    ck_assert_int_eq(col.calls, 3);
    for (int s = 0; s < 3; s++) {
        ss_await_result *r = col.r[s];
        ck_assert_int_eq(col.rc[s], 0);
        ck_assert_int_eq(ss_await_result_state(r), SS_SEG_DONE);
        uint32_t rows, cols;
        const float *o = ss_await_result_outputs(r, &rows, &cols);
        ck_assert_uint_eq(rows, T);
        ck_assert_uint_eq(cols, IN);
        ck_assert_uint_eq(ss_await_result_length(r), s < 2 ? T : 2);
        ck_assert(ss_await_result_last(r) == (s == 2));
        ck_assert_str_eq(ss_await_result_reason(r), "");
        for (uint32_t i = 0; i < ss_await_result_length(r) * IN; i++)
            ck_assert_float_eq(o[i], 2.0f * x[(size_t)s * T * IN + i]);
        ck_assert_uint_eq(ss_await_result_finals(r), s == 2 ? 2 : 0);
    }
    ss_await_result *last = col.r[2];
    int dtype;
    const int64_t *shape;
    size_t rank, nbytes;
    const float *fa = ss_await_result_final(last, 0, &dtype, &shape, &rank, &nbytes);
    ck_assert_str_eq(ss_await_result_final_name(last, 0), "a");
    ck_assert_str_eq(ss_await_result_final_name(last, 1), "b");
    ck_assert_int_eq(dtype, SS_DTYPE_FLOAT32);
    ck_assert_uint_eq(rank, 1);
    ck_assert_int_eq(shape[0], 3);
    ck_assert_uint_eq(nbytes, sizeof sa);
    ck_assert(memcmp(fa, sa, sizeof sa) == 0);
    const float *fb = ss_await_result_final(last, 1, NULL, NULL, NULL, NULL);
    ck_assert(memcmp(fb, sb, sizeof sb) == 0);
    ck_assert_ptr_null(ss_await_result_final(last, 2, NULL, NULL, NULL, NULL));
    for (int s = 0; s < 3; s++)
        ss_await_result_free(col.r[s]);

    /* Collected: gone. */
    ss_await_result *r = NULL;
    ck_assert_int_eq(ss_client_await(c, "rt", &k, 0, 0, false, &r),
                     SS_ERR_STATUS(ST_NOT_FOUND));
    ck_assert_ptr_null(r);
}
END_TEST

/* Complete sent, the next Lease (which parks until that Complete commits
 * and makes the next segment ready) run in between, then the Complete's
 * reply taken by id: the worker's overlap. Then the results awaited without
 * collecting (twice: still there), collected, collected again. */
typedef struct acks {
    int rc[4];  /* codes by ref index */
    int calls;  /* callback invocations */
} acks;

static void ack_cb(void *arg, size_t i, int rc, const char *m)
{
    acks *a = arg;
    (void)m;
    ck_assert_uint_lt(i, 4);
    a->rc[i] = rc;
    a->calls++;
}

START_TEST(test_complete_split_and_collect)
{
    enum { LEN = 10, IN = 2, T = 4 };
    float x[LEN * IN];
    for (int i = 0; i < LEN * IN; i++)
        x[i] = (float)i;
    ss_key k = KEY("ack-1");
    declare("ack");
    ck_assert_int_eq(ss_client_submit_sequence(c, "ack", &k, x, LEN, IN, T, NULL), 0);
    ss_lease *l = lease_one("ack", 0);
    for (uint64_t s = 0; s < 3; s++) {
        ss_lease_item it;
        ck_assert_int_eq(ss_lease_item_get(l, 0, &it), 0);
        ck_assert_uint_eq(it.segment, s);
        float out[T * IN], sa[3] = {(float)s, 1, 2}, sb[2] = {3, (float)s};
        for (int i = 0; i < T * IN; i++)
            out[i] = it.inputs[i] + 1.0f;
        const float *states[] = {sa, sb};
        ss_complete_item ci = {.item = 0, .outputs = out, .out_cols = IN, .states = states};
        uint64_t id = 0;
        ck_assert_msg(ss_client_complete_send(c, l, &ci, 1, &id) == 0, "send: %s",
                      ss_client_last_error(c));
        ck_assert(id > 0);
        ss_lease *next = NULL;
        if (s < 2) {
            /* Segment s+1 is ready only once the Complete commits. */
            ck_assert_int_eq(ss_client_lease(c, "ack", 8, 5000, 0, "test", &next), 0);
            ck_assert_uint_eq(ss_lease_items(next), 1);
        }
        bool already = true;
        ck_assert_msg(ss_client_complete_recv(c, id, 1, &already) == 0, "recv: %s",
                      ss_client_last_error(c));
        ck_assert(!already);
        ck_assert_int_eq(ss_client_complete_recv(c, id, 1, NULL), SS_ERR_INVALID); /* taken */
        ss_lease_free(l);
        l = next;
    }
    ck_assert_ptr_null(l);
    ss_segment_ref refs[4] = {{k, 0}, {k, 1}, {k, 2}, {KEY("never"), 0}};
    for (int pass = 0; pass < 2; pass++) {
        collected col = {.calls = 0};
        ck_assert_int_eq(ss_client_await_many(c, "ack", refs, 3, 1000, 5000, false, NULL,
                                              collect_cb, &col), 0);
        ck_assert_int_eq(col.calls, 3);
        for (int s = 0; s < 3; s++) {
            ck_assert_int_eq(col.rc[s], 0);
            ck_assert_int_eq(ss_await_result_state(col.r[s]), SS_SEG_DONE);
            const float *o = ss_await_result_outputs(col.r[s], NULL, NULL);
            ck_assert_float_eq(o[0], x[(size_t)s * T * IN] + 1.0f);
            ss_await_result_free(col.r[s]);
        }
    }
    ss_jobs_pipeline pipe = {.window = 2};
    for (int pass = 0; pass < 2; pass++) {
        /* The second pass finds them all gone: still a success. */
        acks a = {.calls = 0};
        ck_assert_int_eq(ss_client_collect_many(c, "ack", refs, 4, &pipe, ack_cb, &a), 0);
        ck_assert_int_eq(a.calls, 4);
        for (int i = 0; i < 4; i++)
            ck_assert_int_eq(a.rc[i], 0);
    }
    ss_await_result *r = NULL;
    ck_assert_int_eq(ss_client_await(c, "ack", &k, 2, 0, false, &r),
                     SS_ERR_STATUS(ST_NOT_FOUND));
    ck_assert_int_eq(ss_client_collect_many(c, "ack", refs, 4, NULL, NULL, NULL), 0);

    /* A segment not done yet is reported, and stays queued. */
    ss_key k2 = KEY("ack-2");
    ck_assert_int_eq(ss_client_submit_sequence(c, "ack", &k2, x, LEN, IN, T, NULL), 0);
    ss_segment_ref q = {k2, 0};
    acks a = {.calls = 0};
    ck_assert_int_eq(ss_client_collect_many(c, "ack", &q, 1, NULL, ack_cb, &a), 0);
    ck_assert_int_eq(a.calls, 1);
    ck_assert_int_eq(a.rc[0], SS_ERR_STATUS(ST_DEADLINE_EXCEEDED));
    ck_assert_int_eq(ss_client_await(c, "ack", &k2, 0, 0, false, &r),
                     SS_ERR_STATUS(ST_DEADLINE_EXCEEDED));
    ck_assert_int_eq(ss_client_complete_send(c, NULL, NULL, 0, NULL), SS_ERR_INVALID);
}
END_TEST

/* Several sequences in one pipelined call, window smaller than the number
 * of segments; an identical resubmission is already queued. */
static int n_reports;
static void count_cb(void *arg, size_t i, uint64_t s, int rc, const char *m)
{
    (void)arg;
    (void)i;
    (void)s;
    ck_assert_msg(rc == 0, "segment refused: %s", m);
    n_reports++;
}

START_TEST(test_submit_many)
{
    enum { N = 5, IN = 3 };
    float data[40 * IN] = {0};
    ss_sequence_in seqs[N];
    char keys[N][8];
    uint64_t total = 0;
    declare("many");
    for (int i = 0; i < N; i++) {
        snprintf(keys[i], sizeof keys[i], "k%d", i);
        seqs[i] = (ss_sequence_in){{keys[i], strlen(keys[i])}, data, (uint64_t)(1 + 9 * i)};
        total += ss_jobs_segments(seqs[i].length, 4);
    }
    ss_jobs_pipeline pipe = {.window = 2};
    n_reports = 0;
    ck_assert_int_eq(ss_client_submit_sequences(c, "many", seqs, N, IN, 4, &pipe, count_cb,
                                                NULL), 0);
    ck_assert_int_eq(n_reports, (int)total);
    ss_server_stats st;
    ck_assert_int_eq(ss_client_stats(c, "many", &st), 0);
    ck_assert_uint_eq(st.queued, total);
    bool already = false;
    ss_key k0 = KEY("k0");
    ck_assert_int_eq(ss_client_submit(c, "many", &k0, 0, data, 4, IN, 1, true, &already), 0);
    ck_assert(already);
    /* Await of a queued segment with a short wait: not done yet. */
    ss_await_result *r = NULL;
    ck_assert_int_eq(ss_client_await(c, "many", &k0, 0, 50, false, &r),
                     SS_ERR_STATUS(ST_DEADLINE_EXCEEDED));
    ss_key nope = KEY("nope");
    ck_assert_int_eq(ss_client_await(c, "many", &nope, 0, 0, false, &r),
                     SS_ERR_STATUS(ST_NOT_FOUND));
}
END_TEST

/* Failed attempts are retried up to the poison limit, then the segment is
 * failed with the reason, and later segments of the sequence with it. */
START_TEST(test_poison)
{
    float x[8] = {0};
    ss_key k = KEY("bad");
    declare("poison");
    ck_assert_int_eq(ss_client_submit_sequence(c, "poison", &k, x, 4, 1, 2, NULL), 0);
    for (int a = 0; a < SERVER_MAX_ATTEMPTS; a++) {
        ss_lease *l = lease_one("poison", 0);
        ss_lease_item it;
        ss_lease_item_get(l, 0, &it);
        ck_assert_uint_eq(it.segment, 0);
        ck_assert_uint_eq(it.attempts, (uint32_t)a);
        ss_complete_item ci = {.item = 0, .error = "model cannot run this"};
        ck_assert_int_eq(ss_client_complete(c, l, &ci, 1, NULL), 0);
        ss_lease_free(l);
    }
    ss_await_result *r = NULL;
    ck_assert_int_eq(ss_client_await(c, "poison", &k, 0, 2000, true, &r), 0);
    ck_assert_int_eq(ss_await_result_state(r), SS_SEG_FAILED);
    ck_assert_ptr_nonnull(strstr(ss_await_result_reason(r), "model cannot run this"));
    ck_assert_uint_eq(ss_await_result_attempts(r), SERVER_MAX_ATTEMPTS);
    ck_assert_ptr_null(ss_await_result_outputs(r, NULL, NULL));
    ss_await_result_free(r);
    ck_assert_int_eq(ss_client_await(c, "poison", &k, 1, 2000, true, &r), 0);
    ck_assert_int_eq(ss_await_result_state(r), SS_SEG_FAILED);
    ck_assert_ptr_nonnull(strstr(ss_await_result_reason(r), "segment 0 failed"));
    ss_await_result_free(r);
}
END_TEST

/* A lease not completed by its deadline is gone: complete says so. */
START_TEST(test_lease_expired)
{
    float x[2] = {1, 2};
    ss_key k = KEY("slow");
    declare("expire");
    ck_assert_int_eq(ss_client_submit(c, "expire", &k, 0, x, 2, 1, 2, true, NULL), 0);
    ss_lease *l = lease_one("expire", 100);
    usleep(400 * 1000);
    float out[2] = {0}, sa[3] = {0}, sb[2] = {0};
    const float *states[] = {sa, sb};
    ss_complete_item ci = {.item = 0, .outputs = out, .out_cols = 1, .states = states};
    ck_assert_int_eq(ss_client_complete(c, l, &ci, 1, NULL),
                     SS_ERR_STATUS(ST_FAILED_PRECONDITION));
    ck_assert_ptr_nonnull(strstr(ss_client_last_error(c), "expired"));
    /* Item index outside the lease: refused locally. */
    ci.item = 1;
    ck_assert_int_eq(ss_client_complete(c, l, &ci, 1, NULL), SS_ERR_INVALID);
    ss_lease_free(l);
    /* The segment is back in the queue with one attempt counted. */
    l = lease_one("expire", 0);
    ss_lease_item it;
    ss_lease_item_get(l, 0, &it);
    ck_assert_uint_eq(it.attempts, 1);
    ss_lease_free(l);
}
END_TEST

/* Bad arguments: refused before anything is sent. */
static const float some[16];
static const struct bad_submit {
    const char *what;     /* case name */
    const char *saver;    /* saver argument */
    const char *key;      /* key ("" = empty) */
    const float *data;    /* data */
    uint64_t length;      /* sequence length */
    uint32_t input_size;  /* columns */
    uint32_t num_unroll;  /* T */
    uint32_t window;      /* pipeline window */
} bad_submits[] = {
    {"num_unroll 0", "args", "k", some, 4, 2, 0, 0},
    {"num_unroll too big", "args", "k", some, 4, 2, SS_JOBS_NUM_UNROLL_MAX + 1, 0},
    {"input_size 0", "args", "k", some, 4, 0, 2, 0},
    {"length 0", "args", "k", some, 0, 2, 2, 0},
    {"no data", "args", "k", NULL, 4, 2, 2, 0},
    {"empty key", "args", "", some, 4, 2, 2, 0},
    {"no saver", NULL, "k", some, 4, 2, 2, 0},
    {"window too big", "args", "k", some, 4, 2, 2, SS_JOBS_WINDOW_MAX + 1},
};

START_TEST(test_submit_bad)
{
    const struct bad_submit *b = &bad_submits[_i];
    ss_sequence_in q = {{b->key, strlen(b->key)}, b->data, b->length};
    ss_jobs_pipeline pipe = {.window = b->window};
    declare("args");
    int rc = ss_client_submit_sequences(c, b->saver, &q, 1, b->input_size, b->num_unroll,
                                        &pipe, NULL, NULL);
    ck_assert_msg(rc == SS_ERR_INVALID, "%s: got %d", b->what, rc);
    ck_assert_msg(ss_client_last_error(c)[0] != '\0', "%s: no message", b->what);
    ss_server_stats st;
    ck_assert_int_eq(ss_client_stats(c, "args", &st), 0);
    ck_assert_msg(st.queued == 0, "%s: something was queued", b->what);
    ck_assert(!ss_client_broken(c));
}
END_TEST

/* The server refuses: a saver that was never declared. */
static int refused;
static void refused_cb(void *arg, size_t i, uint64_t s, int rc, const char *m)
{
    (void)arg;
    (void)i;
    (void)s;
    if (rc == SS_ERR_STATUS(ST_NOT_FOUND) && strstr(m, "not declared"))
        refused++;
}

START_TEST(test_submit_undeclared)
{
    float x[6] = {0};
    ss_sequence_in q = {KEY("k"), x, 6};
    refused = 0;
    int rc = ss_client_submit_sequences(c, "never-declared", &q, 1, 1, 2, NULL, refused_cb,
                                        NULL);
    ck_assert_int_eq(rc, SS_ERR_STATUS(ST_NOT_FOUND));
    ck_assert_int_eq(refused, 3);
    ck_assert(!ss_client_broken(c));
    ck_assert_int_eq(ss_client_ping(c, NULL), 0);
}
END_TEST

/* A raw Await (the library's typed calls do not expose without_tensors
 * except through ss_client_collect_many): send it, or send and receive. */
static int await_send(const char *saver, const ss_key *k, uint64_t segment, uint32_t wait_ms,
                      bool collect, bool without_tensors, uint64_t *id)
{
    Statesaver__V1__AwaitRequest a = STATESAVER__V1__AWAIT_REQUEST__INIT;
    Statesaver__V1__Request req = STATESAVER__V1__REQUEST__INIT;
    a.saver = (char *)(uintptr_t)saver;
    a.key.data = (uint8_t *)(uintptr_t)k->data;
    a.key.len = k->len;
    a.segment = segment;
    a.wait_ms = wait_ms;
    a.collect = collect;
    a.without_tensors = without_tensors;
    req.body_case = STATESAVER__V1__REQUEST__BODY_AWAIT_SEGMENT;
    req.await_segment = &a;
    return ss_client_send(c, &req, id);
}

static int await_raw(const char *saver, const ss_key *k, uint64_t segment, bool collect,
                     bool without_tensors, Statesaver__V1__Response **resp)
{
    uint64_t id = 0;
    *resp = NULL;
    int rc = await_send(saver, k, segment, 0, collect, without_tensors, &id);
    return rc < 0 ? rc : ss_client_recv(c, id, TEST_TIMEOUT_MS, resp);
}

/* Lease the one ready segment of saver and complete it with outputs
 * 3 * inputs + segment and states derived from the segment. */
static void work_one(const char *saver, uint64_t segment, float *sa, float *sb)
{
    enum { T = 4, IN = 2 };
    ss_lease *l = lease_one(saver, 0);
    ss_lease_item it;
    ck_assert_int_eq(ss_lease_item_get(l, 0, &it), 0);
    ck_assert_uint_eq(it.segment, segment);
    float out[T * IN];
    for (int i = 0; i < T * IN; i++)
        out[i] = 3.0f * it.inputs[i] + (float)segment;
    for (int i = 0; i < 3; i++)
        sa[i] = (float)segment * 7.0f + (float)i;
    sb[0] = -1.0f - (float)segment;
    sb[1] = 0.25f;
    const float *states[] = {sa, sb};
    ss_complete_item ci = {.item = 0, .outputs = out, .out_cols = IN, .states = states};
    ck_assert_msg(ss_client_complete(c, l, &ci, 1, NULL) == 0, "complete: %s",
                  ss_client_last_error(c));
    ss_lease_free(l);
}

/* Issue 9 item 4. Awaits parked before the Complete arrives are answered
 * from its outputs in memory: exact outputs and final states, and one
 * asked without tensors has none. Then AwaitRequest.without_tensors:
 * without collect the outputs stay (a normal Await still gets them); with
 * collect they are retired (a second Await: NOT_FOUND) and the reply has
 * state, length and last but no tensors. */
START_TEST(test_parked_and_without_tensors)
{
    enum { LEN = 6, IN = 2, T = 4 };
    float x[LEN * IN];
    for (int i = 0; i < LEN * IN; i++)
        x[i] = (float)i * 0.5f - 1.0f;
    ss_key k = KEY("wt-1");
    declare("wt");
    ck_assert_int_eq(ss_client_submit_sequence(c, "wt", &k, x, LEN, IN, T, NULL), 0);
    uint64_t id_full[2], id_bare = 0;
    for (uint64_t s = 0; s < 2; s++)
        ck_assert_int_eq(await_send("wt", &k, s, 5000, false, false, &id_full[s]), 0);
    ck_assert_int_eq(await_send("wt", &k, 1, 5000, false, true, &id_bare), 0);
    float sa[3], sb[2];
    work_one("wt", 0, sa, sb);
    work_one("wt", 1, sa, sb);
    for (uint64_t s = 0; s < 2; s++) {
        Statesaver__V1__Response *r = NULL;
        ck_assert_int_eq(ss_client_recv(c, id_full[s], TEST_TIMEOUT_MS, &r), 0);
        const Statesaver__V1__AwaitResponse *a = r->await_segment;
        ck_assert_ptr_nonnull(a);
        ck_assert_int_eq(a->state, STATESAVER__V1__SEGMENT_STATE__SEG_DONE);
        ck_assert_uint_eq(a->length, s == 0 ? T : LEN - T);
        ck_assert(a->last == (s == 1));
        ck_assert_ptr_nonnull(a->outputs);
        ck_assert_uint_eq(a->outputs->n_shape, 2);
        ck_assert_int_eq(a->outputs->shape[0], T);
        ck_assert_int_eq(a->outputs->shape[1], IN);
        ck_assert_uint_eq(a->outputs->data.len, T * IN * sizeof(float));
        float o[T * IN];
        memcpy(o, a->outputs->data.data, sizeof o);
        for (int i = 0; i < T * IN; i++) {
            size_t row = (size_t)s * T + (size_t)i / IN;
            float in = row < LEN ? x[(size_t)s * T * IN + (size_t)i] : 0.0f;
            ck_assert_float_eq(o[i], 3.0f * in + (float)s);
        }
        ck_assert_uint_eq(a->n_final_states, s == 1 ? 2 : 0);
        if (s == 1) {
            ck_assert_str_eq(a->names[0], "a");
            ck_assert_str_eq(a->names[1], "b");
            ck_assert_uint_eq(a->final_states[0]->data.len, sizeof sa);
            ck_assert(memcmp(a->final_states[0]->data.data, sa, sizeof sa) == 0);
            ck_assert(memcmp(a->final_states[1]->data.data, sb, sizeof sb) == 0);
        }
        ss_client_response_free(r);
    }
    Statesaver__V1__Response *r = NULL;
    ck_assert_int_eq(ss_client_recv(c, id_bare, TEST_TIMEOUT_MS, &r), 0);
    ck_assert_int_eq(r->await_segment->state, STATESAVER__V1__SEGMENT_STATE__SEG_DONE);
    ck_assert_ptr_null(r->await_segment->outputs);
    ck_assert_uint_eq(r->await_segment->n_final_states, 0);
    ck_assert_uint_eq(r->await_segment->n_names, 0);
    ck_assert_uint_eq(r->await_segment->length, LEN - T);
    ck_assert(r->await_segment->last);
    ss_client_response_free(r);

    /* Without tensors, without collect: the outputs stay. */
    ck_assert_int_eq(await_raw("wt", &k, 1, false, true, &r), 0);
    ck_assert_ptr_null(r->await_segment->outputs);
    ss_client_response_free(r);
    ss_await_result *res = NULL;
    ck_assert_int_eq(ss_client_await(c, "wt", &k, 1, 0, false, &res), 0);
    ck_assert_uint_eq(ss_await_result_finals(res), 2);
    ck_assert(memcmp(ss_await_result_final(res, 0, NULL, NULL, NULL, NULL), sa,
                     sizeof sa) == 0);
    ck_assert_ptr_nonnull(ss_await_result_outputs(res, NULL, NULL));
    ss_await_result_free(res);

    /* Collect without tensors: retired, and the reply carries none. */
    for (uint64_t s = 0; s < 2; s++) {
        ck_assert_int_eq(await_raw("wt", &k, s, true, true, &r), 0);
        const Statesaver__V1__AwaitResponse *a = r->await_segment;
        ck_assert_int_eq(a->state, STATESAVER__V1__SEGMENT_STATE__SEG_DONE);
        ck_assert_ptr_null(a->outputs);
        ck_assert_uint_eq(a->n_final_states, 0);
        ck_assert_uint_eq(a->length, s == 0 ? T : LEN - T);
        ck_assert(a->last == (s == 1));
        ss_client_response_free(r);
        ck_assert_int_eq(await_raw("wt", &k, s, false, false, &r),
                         SS_ERR_STATUS(ST_NOT_FOUND));
        ck_assert_int_eq(await_raw("wt", &k, s, true, true, &r),
                         SS_ERR_STATUS(ST_NOT_FOUND));
    }
}
END_TEST

/* A failed segment collected without tensors still says why. */
START_TEST(test_without_tensors_failed)
{
    float x[8] = {0};
    ss_key k = KEY("wt-bad");
    declare("wtbad");
    ck_assert_int_eq(ss_client_submit_sequence(c, "wtbad", &k, x, 4, 1, 4, NULL), 0);
    for (int a = 0; a < SERVER_MAX_ATTEMPTS; a++) {
        ss_lease *l = lease_one("wtbad", 0);
        ss_complete_item ci = {.item = 0, .error = "model blew up"};
        ck_assert_int_eq(ss_client_complete(c, l, &ci, 1, NULL), 0);
        ss_lease_free(l);
    }
    Statesaver__V1__Response *r = NULL;
    ck_assert_int_eq(await_raw("wtbad", &k, 0, true, true, &r), 0);
    const Statesaver__V1__AwaitResponse *a = r->await_segment;
    ck_assert_int_eq(a->state, STATESAVER__V1__SEGMENT_STATE__SEG_FAILED);
    ck_assert_ptr_nonnull(strstr(a->reason, "model blew up"));
    ck_assert_uint_eq(a->attempts, SERVER_MAX_ATTEMPTS);
    ck_assert_ptr_null(a->outputs);
    ss_client_response_free(r);
    ck_assert_int_eq(await_raw("wtbad", &k, 0, false, false, &r), SS_ERR_STATUS(ST_NOT_FOUND));
}
END_TEST

/* A trainer's Complete: final states only, no outputs (issue 10); Await
 * reports the segment done without outputs, and the state was saved. */
START_TEST(test_complete_states_only)
{
    float x[6 * 2] = {0};
    ss_key k = KEY("tr");
    declare("so");
    uint64_t nseg = 0;
    ck_assert_int_eq(ss_client_submit_sequence(c, "so", &k, x, 6, 2, 4, &nseg), 0);
    ck_assert_uint_eq(nseg, 2);
    ss_lease *l = lease_one("so", 0);
    float sa[3] = {1, 2, 3}, sb[2] = {4, 5};
    const float *st[2] = {sa, sb};
    ss_complete_item ci = {.item = 0, .states = st};
    ck_assert_msg(ss_client_complete(c, l, &ci, 1, NULL) == 0, "complete: %s",
                  ss_client_last_error(c));
    ss_lease_free(l);
    ss_await_result *r = NULL;
    ck_assert_int_eq(ss_client_await(c, "so", &k, 0, 2000, false, &r), 0);
    ck_assert_int_eq(ss_await_result_state(r), SS_SEG_DONE);
    ck_assert_ptr_null(ss_await_result_outputs(r, NULL, NULL));
    ss_await_result_free(r);
    l = lease_one("so", 0);
    ck_assert_mem_eq(ss_lease_item_state(l, 0, 0, NULL), sa, sizeof sa);
    ss_complete_item none = {.item = 0};
    ck_assert_int_eq(ss_client_complete(c, l, &none, 1, NULL), SS_ERR_INVALID);
    ss_lease_free(l);
}
END_TEST

static Suite *jobs_client_suite(void)
{
    Suite *s = suite_create("jobs_client");
    TCase *tc = tcase_create("jobs");
    tcase_add_unchecked_fixture(tc, jobs_fx_start_srv, jobs_fx_stop_srv);
    tcase_add_checked_fixture(tc, jobs_fx_open_client, jobs_fx_close_client);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_roundtrip);
    tcase_add_test(tc, test_complete_split_and_collect);
    tcase_add_test(tc, test_submit_many);
    tcase_add_test(tc, test_poison);
    tcase_add_test(tc, test_lease_expired);
    tcase_add_test(tc, test_submit_undeclared);
    tcase_add_test(tc, test_parked_and_without_tensors);
    tcase_add_test(tc, test_without_tensors_failed);
    tcase_add_test(tc, test_complete_states_only);
    tcase_add_loop_test(tc, test_submit_bad, 0, sizeof bad_submits / sizeof bad_submits[0]);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(jobs_client_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
