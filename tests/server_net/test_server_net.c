/* test_server_net -- the real statesaver-server over raw TCP frames:
 * bad input, pipelining, barrier waits, restart and kill -9 durability,
 * connection limits, idle timeout and backpressure. */
#include <check.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "net_helper.h"

#define T_WAIT 10000 /* ms: bound on any single reply */
#define TOKEN "s3cret-token"
#define CODE(x) STATESAVER__V1__CODE__##x

static const char *const state_names[] = {"c", "h"};
static const int64_t state_dims[] = {4, 2};

/* ---- shared helpers ---- */

static void expect_ok(tresp *r, uint64_t id, const char *what)
{
    ck_assert_msg(r != NULL, "%s: no reply", what);
    ck_assert_msg(tresp_code(r) == 0, "%s: status %d: %s", what,
                  tresp_code(r), r->status ? r->status->message : "");
    ck_assert_uint_eq(r->id, id);
}

static void hello(int fd, const char *token)
{
    treq *q = treq_hello(900, token);
    tresp *r = tc_call(fd, q, T_WAIT);
    expect_ok(r, 900, "hello");
    ck_assert_int_eq(r->body_case, STATESAVER__V1__RESPONSE__BODY_HELLO);
    ck_assert_uint_eq(r->hello->protocol_version, 1);
    ck_assert_uint_gt(r->hello->max_frame_bytes, 0);
    tresp_free(r);
    treq_free(q);
}

static void ping_ok(int fd, uint64_t id)
{
    treq *q = treq_ping(id, "abc", 3);
    tresp *r = tc_call(fd, q, T_WAIT);
    expect_ok(r, id, "ping");
    ck_assert_int_eq(r->body_case, STATESAVER__V1__RESPONSE__BODY_PING);
    ck_assert_uint_eq(r->ping->payload.len, 3);
    ck_assert(memcmp(r->ping->payload.data, "abc", 3) == 0);
    tresp_free(r);
    treq_free(q);
}

static void declare_ok(int fd, const char *saver)
{
    treq *q = treq_declare(901, saver, 2, state_names, state_dims);
    tresp *r = tc_call(fd, q, T_WAIT);
    expect_ok(r, 901, "declare");
    tresp_free(r);
    treq_free(q);
}

static void save_ok(int fd, const char *saver, const char *key, uint64_t seg,
                    float base)
{
    treq *q = treq_save(902, saver, 1, &key, &seg, 2, state_dims, base);
    tresp *r = tc_call(fd, q, T_WAIT);
    expect_ok(r, 902, "save");
    ck_assert_uint_eq(r->save->n_already_applied, 1);
    tresp_free(r);
    treq_free(q);
}

static tresp *fetch(int fd, const char *saver, const char *key)
{
    treq *q = treq_fetch(903, saver, 1, &key, 0, 0);
    tresp *r = tc_call(fd, q, T_WAIT);
    treq_free(q);
    return r;
}

/* The packed FetchResponse of one key: compared before/after bad input. */
static uint8_t *snapshot(int fd, const char *saver, const char *key,
                         size_t *len)
{
    tresp *r = fetch(fd, saver, key);
    expect_ok(r, 903, "fetch");
    *len = statesaver__v1__fetch_response__get_packed_size(r->fetch);
    uint8_t *buf = malloc(*len + 1);
    statesaver__v1__fetch_response__pack(r->fetch, buf);
    tresp_free(r);
    return buf;
}

/* Check that key holds the values treq_save(base) wrote at next_segment. */
static void expect_state(tresp *r, uint64_t next_segment, float base)
{
    ck_assert_int_eq(r->body_case, STATESAVER__V1__RESPONSE__BODY_FETCH);
    const Statesaver__V1__FetchResponse *f = r->fetch;
    ck_assert_uint_eq(f->n_next_segment, 1);
    ck_assert_uint_eq(f->next_segment[0], next_segment);
    ck_assert_uint_eq(f->n_states, 2);
    for (size_t i = 0; i < 2; i++) {
        const Statesaver__V1__Tensor *t = f->states[i];
        ck_assert_uint_eq(t->n_shape, 2);
        ck_assert_int_eq(t->shape[0], 1);
        ck_assert_int_eq(t->shape[1], state_dims[i]);
        ck_assert_uint_eq(t->data.len, (size_t)state_dims[i] * 4);
        const float *v = (const float *)t->data.data;
        for (int64_t j = 0; j < state_dims[i]; j++)
            ck_assert_float_eq(v[j], base + (float)i * 10.0f + (float)j);
    }
}

/* ---- (a) bad input, table-driven ---- */

static tsrv g_auth; /* server with an auth token */

static void auth_setup(void)
{
    static const char *const extra[] = {"--auth-token-file", NULL,
                                        "--max-frame-bytes", "1048576",
                                        "--max-keys", "100", NULL};
    char tokfile[400];
    tsrv_init(&g_auth);
    snprintf(tokfile, sizeof tokfile, "%s/token", g_auth.root);
    FILE *f = fopen(tokfile, "w");
    ck_assert_ptr_nonnull(f);
    fputs(TOKEN "\n", f);
    fclose(f);
    const char *args[8];
    memcpy(args, extra, sizeof extra);
    args[1] = tokfile;
    tsrv_start(&g_auth, args);
    int fd = tc_connect(g_auth.port);
    ck_assert_int_ge(fd, 0);
    hello(fd, TOKEN);
    declare_ok(fd, "s");
    save_ok(fd, "s", "k1", 0, 1.0f);
    close(fd);
}

static void auth_teardown(void)
{
    int st = tsrv_stop(&g_auth, SIGTERM, 15000);
    if (st != 0)
        tsrv_dump_log(&g_auth);
    tsrv_cleanup(&g_auth);
    ck_assert_int_eq(st, 0);
}

typedef void (*bad_build_fn)(tbuf *b);

typedef struct bad_case {
    const char *name;     /* for failure messages */
    bad_build_fn build;   /* the bytes to send */
    bool authenticate;    /* send a good Hello first */
    bool half_close;      /* shut our write side after sending */
    int code;             /* expected status, -1 = no reply at all */
    bool closes;          /* the server closes the connection after it */
} bad_case;

static void append_req(tbuf *b, treq *q)
{
    tc_frame_append(b, q);
    treq_free(q);
}

static void save_with(tbuf *b, const char *saver,
                      const char *key, uint64_t seg, int variant)
{
    /* variant: 0 good tensors, 1 int32 dtype, 2 wrong shape, 3 one state */
    treq *q = treq_save(7, saver, 1, &key, &seg, variant == 0 ? 2 : 0,
                        state_dims, 5.0f);
    if (variant != 0) {
        float c[5] = {0}, h[2] = {0};
        int64_t sc[2] = {1, variant == 2 ? 5 : 4}, sh[2] = {1, 2};
        int dt = variant == 1 ? STATESAVER__V1__DTYPE__DT_INT32
                              : STATESAVER__V1__DTYPE__DT_FLOAT32;
        treq_save_add_tensor(q, dt, 2, sc, c, (size_t)sc[1] * 4);
        if (variant != 3)
            treq_save_add_tensor(q, STATESAVER__V1__DTYPE__DT_FLOAT32, 2, sh,
                                 h, sizeof h);
    }
    append_req(b, q);
}

static void b_oversized(tbuf *b)
{
    static const uint8_t hdr[4] = {0xff, 0xff, 0xff, 0xf0};
    tbuf_append(b, hdr, 4);
}

static void b_truncated(tbuf *b)
{
    /* Declares 100 bytes, sends 10, then the client closes. */
    static const uint8_t part[14] = {0, 0, 0, 100, 8, 8, 8, 8, 8,
                                     8, 8, 8, 8, 8};
    tbuf_append(b, part, sizeof part);
}

static void b_garbage(tbuf *b)
{
    static const uint8_t junk[] = {0, 0, 0, 9, 0xff, 0xff, 0xff, 0xff, 0xff,
                                   0x0f, 0x7f, 0x01, 0x02};
    tbuf_append(b, junk, sizeof junk);
}

static void b_unknown_saver(tbuf *b) { save_with(b, "nope", "k1", 1, 0); }
static void b_wrong_dtype(tbuf *b) { save_with(b, "s", "k1", 1, 1); }
static void b_wrong_shape(tbuf *b) { save_with(b, "s", "k1", 1, 2); }
static void b_states_count(tbuf *b) { save_with(b, "s", "k1", 1, 3); }
static void b_huge_segment(tbuf *b) { save_with(b, "s", "k1", UINT64_MAX - 1, 0); }
static void b_skipped_segment(tbuf *b) { save_with(b, "s", "k1", 5, 0); }
static void b_empty_key(tbuf *b) { save_with(b, "s", "", 1, 0); }

static void b_oversized_key(tbuf *b)
{
    char key[2000];
    memset(key, 'x', sizeof key - 1);
    key[sizeof key - 1] = '\0';
    save_with(b, "s", key, 0, 0);
}

static void b_too_many_keys(tbuf *b)
{
    const char *keys[101];
    for (int i = 0; i < 101; i++)
        keys[i] = "k1";
    append_req(b, treq_fetch(7, "s", 101, keys, 0, 0));
}

static void b_segment_count(tbuf *b)
{
    const char *key = "k1";
    uint64_t seg = 1;
    treq *q = treq_save(7, "s", 1, &key, &seg, 2, state_dims, 5.0f);
    q->save->n_segment = 0;
    append_req(b, q);
}

static void b_no_keys_fetch(tbuf *b)
{
    append_req(b, treq_fetch(7, "s", 0, NULL, 0, 0));
}

static void b_no_body(tbuf *b)
{
    append_req(b, treq_new(7));
}

static void b_before_auth(tbuf *b)
{
    append_req(b, treq_ping(7, NULL, 0));
}

static void b_wrong_token(tbuf *b)
{
    append_req(b, treq_hello(7, "wrong-token"));
}

static void b_empty_token(tbuf *b)
{
    append_req(b, treq_hello(7, NULL));
}

static void b_long_token(tbuf *b)
{
    append_req(b, treq_hello(7, TOKEN "x"));
}

static const bad_case bad_cases[] = {
    {"oversized length prefix", b_oversized, true, false,
     CODE(RESOURCE_EXHAUSTED), true},
    {"truncated frame then close", b_truncated, true, true, -1, true},
    {"garbage protobuf", b_garbage, true, false, CODE(INVALID_ARGUMENT), true},
    {"unknown saver", b_unknown_saver, true, false, CODE(NOT_FOUND), false},
    {"wrong dtype", b_wrong_dtype, true, false, CODE(INVALID_ARGUMENT), false},
    {"wrong shape", b_wrong_shape, true, false, CODE(INVALID_ARGUMENT), false},
    {"states count mismatch", b_states_count, true, false,
     CODE(INVALID_ARGUMENT), false},
    {"huge segment", b_huge_segment, true, false, CODE(FAILED_PRECONDITION),
     false},
    {"skipped segment", b_skipped_segment, true, false,
     CODE(FAILED_PRECONDITION), false},
    {"empty key", b_empty_key, true, false, CODE(INVALID_ARGUMENT), false},
    {"oversized key", b_oversized_key, true, false, CODE(INVALID_ARGUMENT),
     false},
    {"too many keys", b_too_many_keys, true, false, CODE(RESOURCE_EXHAUSTED),
     false},
    {"segment count mismatch", b_segment_count, true, false,
     CODE(INVALID_ARGUMENT), false},
    {"fetch without keys", b_no_keys_fetch, true, false,
     CODE(INVALID_ARGUMENT), false},
    {"request without body", b_no_body, true, false, CODE(INVALID_ARGUMENT),
     false},
    {"request before auth", b_before_auth, false, false,
     CODE(UNAUTHENTICATED), true},
    {"wrong token", b_wrong_token, false, false, CODE(UNAUTHENTICATED), true},
    {"empty token", b_empty_token, false, false, CODE(UNAUTHENTICATED), true},
    {"token with extra byte", b_long_token, false, false,
     CODE(UNAUTHENTICATED), true},
};
#define N_BAD (int)(sizeof bad_cases / sizeof bad_cases[0])

START_TEST(test_bad_input)
{
    const bad_case *bc = &bad_cases[_i];
    int ctl = tc_connect(g_auth.port);
    ck_assert_int_ge(ctl, 0);
    hello(ctl, TOKEN);
    size_t before_len, after_len;
    uint8_t *before = snapshot(ctl, "s", "k1", &before_len);

    int fd = tc_connect(g_auth.port);
    ck_assert_int_ge(fd, 0);
    if (bc->authenticate)
        hello(fd, TOKEN);
    tbuf buf = {NULL, 0, 0};
    bc->build(&buf);
    ck_assert_msg(tc_write_all(fd, buf.data, buf.len, T_WAIT) == 0,
                  "%s: send", bc->name);
    tbuf_free(&buf);
    if (bc->half_close)
        shutdown(fd, SHUT_WR);
    if (bc->code >= 0) {
        bool eof = false;
        tresp *r = tc_recv(fd, T_WAIT, &eof);
        ck_assert_msg(r != NULL, "%s: no error reply (eof %d)", bc->name, eof);
        ck_assert_msg(tresp_code(r) == bc->code, "%s: code %d (%s), want %d",
                      bc->name, tresp_code(r),
                      r->status ? r->status->message : "", bc->code);
        ck_assert_msg(r->status->message && *r->status->message,
                      "%s: empty error message", bc->name);
        /* Frame-level errors cannot know the request id. */
        ck_assert_uint_eq(r->id, bc->closes && bc->authenticate ? 0 : 7);
        tresp_free(r);
    }
    if (bc->closes)
        ck_assert_msg(tc_wait_closed(fd, T_WAIT), "%s: connection not closed",
                      bc->name);
    else
        ping_ok(fd, 11);
    close(fd);

    /* The server keeps serving others, and nothing stored changed. */
    int other = tc_connect(g_auth.port);
    ck_assert_int_ge(other, 0);
    hello(other, TOKEN);
    ping_ok(other, 12);
    close(other);
    uint8_t *after = snapshot(ctl, "s", "k1", &after_len);
    ck_assert_msg(before_len == after_len &&
                  memcmp(before, after, before_len) == 0,
                  "%s: stored state changed", bc->name);
    free(before);
    free(after);
    close(ctl);
}
END_TEST

/* ---- shared plain server for (b), (c), API checks, backpressure ---- */

static tsrv g_plain;

static void plain_setup(void)
{
    static const char *const extra[] = {"--max-output-bytes", "65536", NULL};
    tsrv_init(&g_plain);
    tsrv_start(&g_plain, extra);
    int fd = tc_connect(g_plain.port);
    ck_assert_int_ge(fd, 0);
    declare_ok(fd, "s");
    close(fd);
}

static void plain_teardown(void)
{
    int st = tsrv_stop(&g_plain, SIGTERM, 15000);
    if (st != 0)
        tsrv_dump_log(&g_plain);
    tsrv_cleanup(&g_plain);
    ck_assert_int_eq(st, 0);
}

/* (b) 100 pings and saves in one write, all answered. */
START_TEST(test_pipelined)
{
    int fd = tc_connect(g_plain.port);
    ck_assert_int_ge(fd, 0);
    tbuf buf = {NULL, 0, 0};
    char keys[100][16];
    for (int i = 0; i < 100; i++) {
        snprintf(keys[i], sizeof keys[i], "p%d", i);
        if (i % 2) {
            append_req(&buf, treq_ping((uint64_t)i + 1, "x", 1));
        } else {
            const char *k = keys[i];
            uint64_t seg = 0;
            append_req(&buf, treq_save((uint64_t)i + 1, "s", 1, &k, &seg,
                                             2, state_dims, (float)i));
        }
    }
    ck_assert_int_eq(tc_write_all(fd, buf.data, buf.len, T_WAIT), 0);
    tbuf_free(&buf);
    bool seen[101] = {false};
    for (int i = 0; i < 100; i++) {
        tresp *r = tc_recv(fd, T_WAIT, NULL);
        ck_assert_msg(r != NULL, "reply %d missing", i);
        ck_assert_msg(tresp_code(r) == 0, "id %llu: %s",
                      (unsigned long long)r->id, r->status->message);
        ck_assert_uint_ge(r->id, 1);
        ck_assert_uint_le(r->id, 100);
        ck_assert(!seen[r->id]);
        seen[r->id] = true;
        ck_assert_int_eq(r->body_case, r->id % 2 == 0
                                           ? STATESAVER__V1__RESPONSE__BODY_PING
                                           : STATESAVER__V1__RESPONSE__BODY_SAVE);
        tresp_free(r);
    }
    for (int i = 0; i < 100; i += 2) {
        tresp *r = fetch(fd, "s", keys[i]);
        expect_ok(r, 903, "fetch");
        expect_state(r, 1, (float)i);
        tresp_free(r);
    }
    close(fd);
}
END_TEST

/* (c) a parked Fetch is overtaken by a Ping and released by a Save on
 * another connection; an expired wait is DEADLINE_EXCEEDED. */
START_TEST(test_barrier)
{
    int a = tc_connect(g_plain.port), b = tc_connect(g_plain.port);
    ck_assert_int_ge(a, 0);
    ck_assert_int_ge(b, 0);
    const char *k = "b1";
    treq *q = treq_fetch(1, "s", 1, &k, 1, 20000);
    ck_assert_int_eq(tc_send(a, q), 0);
    treq_free(q);
    q = treq_ping(2, NULL, 0);
    ck_assert_int_eq(tc_send(a, q), 0);
    treq_free(q);
    tresp *r = tc_recv(a, T_WAIT, NULL);
    expect_ok(r, 2, "ping overtaking the parked fetch");
    tresp_free(r);

    save_ok(b, "s", "b1", 0, 3.0f);
    r = tc_recv(a, T_WAIT, NULL);
    expect_ok(r, 1, "released fetch");
    expect_state(r, 1, 3.0f);
    tresp_free(r);

    /* Two keys: one save is not enough. */
    const char *two[2] = {"b3", "b4"};
    q = treq_fetch(3, "s", 2, two, 1, 20000);
    ck_assert_int_eq(tc_send(a, q), 0);
    treq_free(q);
    save_ok(b, "s", "b3", 0, 4.0f);
    ping_ok(a, 4); /* the fetch is still parked: the ping comes first */
    save_ok(b, "s", "b4", 0, 5.0f);
    r = tc_recv(a, T_WAIT, NULL);
    expect_ok(r, 3, "two-key fetch");
    ck_assert_uint_eq(r->fetch->next_segment[0], 1);
    ck_assert_uint_eq(r->fetch->next_segment[1], 1);
    tresp_free(r);

    /* Expiry. */
    k = "b2";
    uint64_t t0 = tnow_ms();
    q = treq_fetch(5, "s", 1, &k, 1, 200);
    r = tc_call(a, q, T_WAIT);
    treq_free(q);
    ck_assert_ptr_nonnull(r);
    ck_assert_uint_eq(r->id, 5);
    ck_assert_int_eq(tresp_code(r), CODE(DEADLINE_EXCEEDED));
    ck_assert_uint_ge(tnow_ms() - t0, 150);
    tresp_free(r);

    /* A parked fetch on a connection that goes away is dropped cleanly. */
    q = treq_fetch(6, "s", 1, &k, 1, 20000);
    ck_assert_int_eq(tc_send(a, q), 0);
    treq_free(q);
    ping_ok(a, 7);
    close(a);
    save_ok(b, "s", "b2", 0, 6.0f);
    ping_ok(b, 8);
    close(b);
}
END_TEST

/* Declare/List/Drop/Stats/Hello replies on a server without a token. */
START_TEST(test_api)
{
    int fd = tc_connect(g_plain.port);
    ck_assert_int_ge(fd, 0);
    hello(fd, NULL); /* no token configured: any Hello is fine */

    /* Same schema again: no-op; another schema: ALREADY_EXISTS. */
    treq *q = treq_declare(1, "s", 2, state_names, state_dims);
    tresp *r = tc_call(fd, q, T_WAIT);
    expect_ok(r, 1, "redeclare");
    ck_assert(!r->declare->created);
    ck_assert_uint_eq(r->declare->n_states, 2);
    tresp_free(r);
    treq_free(q);
    int64_t other[2] = {4, 3};
    q = treq_declare(2, "s", 2, state_names, other);
    r = tc_call(fd, q, T_WAIT);
    ck_assert_int_eq(tresp_code(r), CODE(ALREADY_EXISTS));
    tresp_free(r);
    treq_free(q);

    declare_ok(fd, "api");
    save_ok(fd, "api", "a1", 0, 1.0f);
    save_ok(fd, "api", "a2", 0, 1.0f);
    save_ok(fd, "api", "a2", 1, 2.0f);

    /* A repeated save reports already_applied and changes nothing. */
    const char *k = "a2";
    uint64_t seg = 1;
    q = treq_save(3, "api", 1, &k, &seg, 2, state_dims, 9.0f);
    r = tc_call(fd, q, T_WAIT);
    expect_ok(r, 3, "repeated save");
    ck_assert(r->save->already_applied[0]);
    tresp_free(r);
    treq_free(q);
    r = fetch(fd, "api", "a2");
    expect_state(r, 2, 2.0f);
    tresp_free(r);

    /* A batch: per-key already_applied flags, state rows in key order. */
    const char *bk[8] = {"q0", "q1", "q2", "q3", "q4", "q5", "q6", "q7"};
    uint64_t bs[8] = {0};
    q = treq_save(10, "api", 8, bk, bs, 2, state_dims, 20.0f);
    r = tc_call(fd, q, T_WAIT);
    expect_ok(r, 10, "batch save");
    ck_assert_uint_eq(r->save->n_already_applied, 8);
    for (int i = 0; i < 8; i++)
        ck_assert(!r->save->already_applied[i]);
    tresp_free(r);
    treq_free(q);
    for (int i = 4; i < 8; i++)
        bs[i] = 1;
    q = treq_save(11, "api", 8, bk, bs, 2, state_dims, 30.0f);
    r = tc_call(fd, q, T_WAIT);
    expect_ok(r, 11, "mixed batch save");
    ck_assert_uint_eq(r->save->n_already_applied, 8);
    for (int i = 0; i < 8; i++)
        ck_assert_msg(!r->save->already_applied[i] == (i >= 4),
                      "already_applied[%d] = %d", i,
                      r->save->already_applied[i]);
    tresp_free(r);
    treq_free(q);
    q = treq_fetch(12, "api", 8, bk, 0, 0);
    r = tc_call(fd, q, T_WAIT);
    expect_ok(r, 12, "batch fetch");
    ck_assert_int_eq(r->fetch->states[0]->shape[0], 8);
    for (int i = 0; i < 8; i++) {
        const float *c = (const float *)r->fetch->states[0]->data.data;
        /* rows 0..3 kept the first batch (base 20 + k*100), rows 4..7
         * took the second (base 30 + k*100). */
        float want = (i < 4 ? 20.0f : 30.0f) + (float)i * 100.0f;
        ck_assert_float_eq(c[i * 4], want);
        ck_assert_uint_eq(r->fetch->next_segment[i], i < 4 ? 1 : 2);
    }
    tresp_free(r);
    treq_free(q);

    /* Unsaved key: initial zeros, next_segment 0. */
    r = fetch(fd, "api", "never");
    expect_ok(r, 903, "fetch unsaved");
    ck_assert_uint_eq(r->fetch->next_segment[0], 0);
    ck_assert_float_eq(((float *)r->fetch->states[0]->data.data)[0], 0.0f);
    tresp_free(r);

    /* List sequences, paged by one. */
    q = treq_new(4);
    Statesaver__V1__ListRequest lreq = STATESAVER__V1__LIST_REQUEST__INIT;
    lreq.saver = "api";
    lreq.limit = 1;
    q->body_case = STATESAVER__V1__REQUEST__BODY_LIST;
    q->list = &lreq;
    r = tc_call(fd, q, T_WAIT);
    expect_ok(r, 4, "list");
    ck_assert_uint_eq(r->list->n_sequences, 1);
    ck_assert(r->list->more);
    ck_assert_uint_eq(r->list->sequences[0]->key.len, 2);
    ck_assert(memcmp(r->list->sequences[0]->key.data, "a1", 2) == 0);
    tresp_free(r);
    lreq.start_after.data = (uint8_t *)"a1";
    lreq.start_after.len = 2;
    r = tc_call(fd, q, T_WAIT);
    expect_ok(r, 4, "list page 2");
    ck_assert_uint_eq(r->list->n_sequences, 1);
    ck_assert(memcmp(r->list->sequences[0]->key.data, "a2", 2) == 0);
    ck_assert_uint_eq(r->list->sequences[0]->next_segment, 2);
    tresp_free(r);
    /* Savers. */
    lreq.saver = "";
    lreq.start_after.len = 0;
    lreq.limit = 0;
    r = tc_call(fd, q, T_WAIT);
    expect_ok(r, 4, "list savers");
    bool found = false;
    for (size_t i = 0; i < r->list->n_savers; i++)
        if (strcmp(r->list->savers[i]->name, "api") == 0) {
            found = true;
            ck_assert_uint_eq(r->list->savers[i]->sequences, 10);
            ck_assert_uint_eq(r->list->savers[i]->n_states, 2);
        }
    ck_assert(found);
    tresp_free(r);
    q->body_case = STATESAVER__V1__REQUEST__BODY__NOT_SET;
    treq_free(q);

    /* Drop one key. */
    q = treq_new(5);
    Statesaver__V1__DropRequest dreq = STATESAVER__V1__DROP_REQUEST__INIT;
    ProtobufCBinaryData dk = {2, (uint8_t *)"a1"};
    dreq.saver = "api";
    dreq.n_keys = 1;
    dreq.keys = &dk;
    q->body_case = STATESAVER__V1__REQUEST__BODY_DROP;
    q->drop = &dreq;
    r = tc_call(fd, q, T_WAIT);
    expect_ok(r, 5, "drop");
    ck_assert_uint_eq(r->drop->dropped, 1);
    tresp_free(r);
    q->body_case = STATESAVER__V1__REQUEST__BODY__NOT_SET;
    treq_free(q);
    r = fetch(fd, "api", "a1");
    expect_ok(r, 903, "fetch dropped");
    ck_assert_uint_eq(r->fetch->next_segment[0], 0);
    tresp_free(r);

    /* Stats. */
    q = treq_new(6);
    Statesaver__V1__StatsRequest sreq = STATESAVER__V1__STATS_REQUEST__INIT;
    q->body_case = STATESAVER__V1__REQUEST__BODY_STATS;
    q->stats = &sreq;
    r = tc_call(fd, q, T_WAIT);
    expect_ok(r, 6, "stats");
    ck_assert_uint_ge(r->stats->savers, 2);
    ck_assert_uint_ge(r->stats->connections, 1);
    ck_assert_uint_ge(r->stats->requests, 10);
    ck_assert_uint_ge(r->stats->commits, 1);
    ck_assert_uint_gt(r->stats->map_size, 0);
    /* Direct Saves count as applied CAS saves (10 keys were saved). */
    ck_assert_uint_ge(r->stats->saves_applied, 10);
    tresp_free(r);
    sreq.saver = "missing";
    r = tc_call(fd, q, T_WAIT);
    ck_assert_int_eq(tresp_code(r), CODE(NOT_FOUND));
    tresp_free(r);
    q->body_case = STATESAVER__V1__REQUEST__BODY__NOT_SET;
    treq_free(q);
    close(fd);
}
END_TEST

/* Replies are not read for a while: the server stops reading (the client's
 * writes stall) instead of buffering without bound; then all arrive. */
START_TEST(test_backpressure)
{
    enum { N = 8000, PAYLOAD = 8192 };
    int fd = tc_connect(g_plain.port);
    ck_assert_int_ge(fd, 0);
    static uint8_t payload[PAYLOAD];
    memset(payload, 0xab, sizeof payload);
    tbuf buf = {NULL, 0, 0};
    for (int i = 0; i < N; i++)
        append_req(&buf, treq_ping((uint64_t)i + 1, payload, PAYLOAD));
    /* Write without reading until the socket stalls for 1 s. */
    size_t off = 0;
    uint64_t last_progress = tnow_ms();
    while (off < buf.len && tnow_ms() - last_progress < 1000) {
        ssize_t n = send(fd, buf.data + off, buf.len - off, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n > 0) {
            off += (size_t)n;
            last_progress = tnow_ms();
        } else {
            usleep(10000);
        }
    }
    ck_assert_msg(off < buf.len, "all %zu bytes accepted without reading replies",
                  buf.len);
    /* Now read replies and finish writing. */
    int got = 0;
    uint64_t deadline = tnow_ms() + 60000;
    while (got < N && tnow_ms() < deadline) {
        if (off < buf.len) {
            ssize_t n = send(fd, buf.data + off, buf.len - off,
                             MSG_NOSIGNAL | MSG_DONTWAIT);
            if (n > 0)
                off += (size_t)n;
        }
        tresp *r = tc_recv(fd, 50, NULL);
        if (!r)
            continue;
        ck_assert_int_eq(tresp_code(r), 0);
        ck_assert_uint_eq(r->id, (uint64_t)got + 1); /* pings stay in order */
        ck_assert_uint_eq(r->ping->payload.len, PAYLOAD);
        got++;
        tresp_free(r);
    }
    ck_assert_int_eq(got, N);
    tbuf_free(&buf);
    ping_ok(fd, N + 1);
    close(fd);
}
END_TEST

/* ---- (d) restart persistence and graceful shutdown ---- */

START_TEST(test_restart)
{
    tsrv s;
    tsrv_init(&s);
    tsrv_start(&s, NULL);
    int fd = tc_connect(s.port);
    ck_assert_int_ge(fd, 0);
    declare_ok(fd, "r");
    save_ok(fd, "r", "seq", 0, 7.0f);
    save_ok(fd, "r", "seq", 1, 8.0f);
    /* A parked fetch is answered UNAVAILABLE at shutdown. */
    int w = tc_connect(s.port);
    const char *k = "other";
    treq *q = treq_fetch(1, "r", 1, &k, 1, 20000);
    ck_assert_int_eq(tc_send(w, q), 0);
    treq_free(q);
    ping_ok(w, 2);
    int st = tsrv_stop(&s, SIGTERM, 15000);
    if (st != 0)
        tsrv_dump_log(&s);
    ck_assert_int_eq(st, 0);
    tresp *r = tc_recv(w, T_WAIT, NULL);
    ck_assert_ptr_nonnull(r);
    ck_assert_uint_eq(r->id, 1);
    ck_assert_int_eq(tresp_code(r), CODE(UNAVAILABLE));
    tresp_free(r);
    ck_assert(tc_wait_closed(fd, T_WAIT));
    close(fd);
    close(w);

    tsrv_start(&s, NULL);
    fd = tc_connect(s.port);
    ck_assert_int_ge(fd, 0);
    r = fetch(fd, "r", "seq");
    expect_ok(r, 903, "fetch after restart");
    expect_state(r, 2, 8.0f);
    tresp_free(r);
    close(fd);
    st = tsrv_stop(&s, SIGINT, 15000);
    if (st != 0)
        tsrv_dump_log(&s);
    ck_assert_int_eq(st, 0);
    tsrv_cleanup(&s);
}
END_TEST

/* SIGTERM with many writes in flight: every request the server took is
 * committed and answered OK before it exits 0; every ack survives. */
START_TEST(test_shutdown_inflight)
{
    enum { N = 1000 };
    tsrv s;
    tsrv_init(&s);
    tsrv_start(&s, NULL);
    int fd = tc_connect(s.port);
    ck_assert_int_ge(fd, 0);
    declare_ok(fd, "g");
    char keys[N][16];
    tbuf buf = {NULL, 0, 0};
    for (int i = 0; i < N; i++) {
        snprintf(keys[i], sizeof keys[i], "g%d", i);
        const char *k = keys[i];
        uint64_t seg = 0;
        append_req(&buf, treq_save((uint64_t)i + 1, "g", 1, &k, &seg, 2,
                                   state_dims, (float)i));
    }
    ck_assert_int_eq(tc_write_all(fd, buf.data, buf.len, T_WAIT), 0);
    tbuf_free(&buf);
    bool acked[N + 1] = {false};
    tresp *r = tc_recv(fd, T_WAIT, NULL);
    ck_assert_ptr_nonnull(r);
    ck_assert_int_eq(tresp_code(r), 0);
    acked[r->id] = true;
    tresp_free(r);
    kill(s.pid, SIGTERM);
    int n_acked = 1;
    bool eof = false;
    while ((r = tc_recv(fd, T_WAIT, &eof)) != NULL) {
        ck_assert_msg(tresp_code(r) == 0, "id %llu: %s",
                      (unsigned long long)r->id, r->status->message);
        acked[r->id] = true;
        n_acked++;
        tresp_free(r);
    }
    ck_assert_msg(eof, "connection not closed at shutdown");
    close(fd);
    int st = tsrv_stop(&s, 0, 15000); /* already signalled: just wait */
    if (st != 0)
        tsrv_dump_log(&s);
    ck_assert_int_eq(st, 0);

    tsrv_start(&s, NULL);
    fd = tc_connect(s.port);
    ck_assert_int_ge(fd, 0);
    for (int i = 0; i < N; i++) {
        if (!acked[i + 1])
            continue;
        r = fetch(fd, "g", keys[i]);
        expect_ok(r, 903, "fetch after shutdown");
        expect_state(r, 1, (float)i);
        tresp_free(r);
    }
    close(fd);
    ck_assert_int_eq(tsrv_stop(&s, SIGTERM, 15000), 0);
    tsrv_cleanup(&s);
}
END_TEST

/* ---- (e) kill -9 durability with --sync on ---- */

START_TEST(test_kill9)
{
    enum { N = 300 };
    static const char *const extra[] = {"--sync", "on", NULL};
    tsrv s;
    tsrv_init(&s);
    tsrv_start(&s, extra);
    int fd = tc_connect(s.port);
    ck_assert_int_ge(fd, 0);
    declare_ok(fd, "d");
    char keys[N][16];
    tbuf buf = {NULL, 0, 0};
    for (int i = 0; i < N; i++) {
        snprintf(keys[i], sizeof keys[i], "d%d", i);
        const char *k = keys[i];
        uint64_t seg = 0;
        append_req(&buf, treq_save((uint64_t)i + 1, "d", 1, &k, &seg, 2,
                                         state_dims, (float)i));
    }
    ck_assert_int_eq(tc_write_all(fd, buf.data, buf.len, T_WAIT), 0);
    tbuf_free(&buf);
    /* Collect about half the acks, then kill -9 with the rest in flight. */
    bool acked[N + 1] = {false};
    int n_acked = 0;
    while (n_acked < N / 2) {
        tresp *r = tc_recv(fd, T_WAIT, NULL);
        ck_assert_ptr_nonnull(r);
        ck_assert_int_eq(tresp_code(r), 0);
        acked[r->id] = true;
        n_acked++;
        tresp_free(r);
    }
    int st = tsrv_stop(&s, SIGKILL, 15000);
    ck_assert_int_eq(st, 128 + SIGKILL);
    /* Acks that were already on the wire count too. */
    for (;;) {
        tresp *r = tc_recv(fd, 200, NULL);
        if (!r)
            break;
        if (tresp_code(r) == 0) {
            acked[r->id] = true;
            n_acked++;
        }
        tresp_free(r);
    }
    close(fd);

    tsrv_start(&s, extra);
    fd = tc_connect(s.port);
    ck_assert_int_ge(fd, 0);
    int present = 0;
    for (int i = 0; i < N; i++) {
        tresp *r = fetch(fd, "d", keys[i]);
        expect_ok(r, 903, "fetch after kill -9");
        uint64_t seg = r->fetch->next_segment[0];
        if (acked[i + 1])
            ck_assert_msg(seg == 1, "acknowledged save %d lost", i);
        if (seg == 1) {
            expect_state(r, 1, (float)i); /* never torn */
            present++;
        } else {
            ck_assert_uint_eq(seg, 0);
        }
        tresp_free(r);
    }
    ck_assert_int_ge(present, n_acked);
    close(fd);
    ck_assert_int_eq(tsrv_stop(&s, SIGTERM, 15000), 0);
    tsrv_cleanup(&s);
}
END_TEST

/* ---- (f) max connections and idle timeout ---- */

START_TEST(test_limits)
{
    static const char *const extra[] = {"--max-connections", "2",
                                        "--idle-timeout-ms", "400", NULL};
    tsrv s;
    tsrv_init(&s);
    tsrv_start(&s, extra);
    int a = tc_connect(s.port), b = tc_connect(s.port);
    ck_assert_int_ge(a, 0);
    ck_assert_int_ge(b, 0);
    ping_ok(a, 1);
    ping_ok(b, 2);
    int c = tc_connect(s.port);
    ck_assert_int_ge(c, 0);
    bool eof = false;
    tresp *r = tc_recv(c, T_WAIT, &eof);
    ck_assert_ptr_nonnull(r);
    ck_assert_int_eq(tresp_code(r), CODE(UNAVAILABLE));
    ck_assert_uint_eq(r->id, 0);
    tresp_free(r);
    ck_assert(tc_wait_closed(c, T_WAIT));
    close(c);

    /* A slot frees once a client leaves. */
    close(b);
    int d = -1;
    uint64_t deadline = tnow_ms() + T_WAIT;
    while (tnow_ms() < deadline) {
        d = tc_connect(s.port);
        ck_assert_int_ge(d, 0);
        treq *q = treq_ping(3, NULL, 0);
        r = tc_call(d, q, T_WAIT);
        treq_free(q);
        int code = tresp_code(r);
        tresp_free(r);
        if (code == 0)
            break;
        close(d);
        d = -1;
        usleep(20000);
    }
    ck_assert_int_ge(d, 0);

    /* Idle connections are closed; an active one is not. */
    uint64_t t0 = tnow_ms();
    ck_assert(tc_wait_closed(a, T_WAIT));
    ck_assert_uint_ge(tnow_ms() - t0, 200);
    close(a);
    int e = -1;
    deadline = tnow_ms() + T_WAIT;
    while (e < 0 && tnow_ms() < deadline) {
        e = tc_connect(s.port);
        treq *q = treq_ping(4, NULL, 0);
        r = tc_call(e, q, T_WAIT);
        treq_free(q);
        if (tresp_code(r) != 0) {
            close(e);
            e = -1;
            usleep(20000);
        }
        tresp_free(r);
    }
    ck_assert_int_ge(e, 0);
    for (int i = 0; i < 10; i++) {
        usleep(100000);
        ping_ok(e, 10 + (uint64_t)i); /* 1 s of activity, 400 ms timeout */
    }
    close(e);
    close(d);
    ck_assert_int_eq(tsrv_stop(&s, SIGTERM, 15000), 0);
    tsrv_cleanup(&s);
}
END_TEST

/* A Fetch parked on a key is released by a job Complete (not only by a
 * Save): Submit -> Lease -> Complete through the job API. */
START_TEST(test_barrier_complete)
{
    int a = tc_connect(g_plain.port), w = tc_connect(g_plain.port);
    ck_assert_int_ge(a, 0);
    ck_assert_int_ge(w, 0);
    const char *k = "jobkey";
    treq *q = treq_fetch(1, "s", 1, &k, 1, 20000);
    ck_assert_int_eq(tc_send(a, q), 0);
    treq_free(q);
    ping_ok(a, 2); /* parked */

    /* Submit segment 0 with inputs [2, 3]. */
    float in[6] = {1, 2, 3, 4, 5, 6};
    int64_t in_shape[2] = {2, 3};
    Statesaver__V1__Tensor inputs = STATESAVER__V1__TENSOR__INIT;
    inputs.dtype = STATESAVER__V1__DTYPE__DT_FLOAT32;
    inputs.n_shape = 2;
    inputs.shape = in_shape;
    inputs.data.data = (uint8_t *)in;
    inputs.data.len = sizeof in;
    Statesaver__V1__SubmitRequest sub = STATESAVER__V1__SUBMIT_REQUEST__INIT;
    sub.saver = "s";
    sub.key.data = (uint8_t *)"jobkey";
    sub.key.len = 6;
    sub.segment = 0;
    sub.inputs = &inputs;
    sub.length = 2;
    treq *r0 = treq_new(3);
    r0->body_case = STATESAVER__V1__REQUEST__BODY_SUBMIT;
    r0->submit = &sub;
    tresp *r = tc_call(w, r0, T_WAIT);
    expect_ok(r, 3, "submit");
    tresp_free(r);
    treq_free(r0);

    Statesaver__V1__LeaseRequest lease = STATESAVER__V1__LEASE_REQUEST__INIT;
    lease.saver = "s";
    lease.max_batch = 1;
    lease.wait_ms = 5000;
    r0 = treq_new(4);
    r0->body_case = STATESAVER__V1__REQUEST__BODY_LEASE;
    r0->lease = &lease;
    r = tc_call(w, r0, T_WAIT);
    expect_ok(r, 4, "lease");
    ck_assert_uint_eq(r->lease->n_items, 1);
    ck_assert_uint_eq(r->lease->items[0]->segment, 0);
    uint64_t lease_id = r->lease->lease_id;
    tresp_free(r);
    treq_free(r0);

    /* Complete with outputs [2, 1] and states c [4] = 7, h [2] = 8. */
    float out[2] = {0.5f, 0.25f}, c[4] = {7, 7, 7, 7}, h[2] = {8, 8};
    int64_t out_shape[2] = {2, 1}, c_shape[1] = {4}, h_shape[1] = {2};
    Statesaver__V1__Tensor outputs = STATESAVER__V1__TENSOR__INIT;
    outputs.dtype = STATESAVER__V1__DTYPE__DT_FLOAT32;
    outputs.n_shape = 2;
    outputs.shape = out_shape;
    outputs.data.data = (uint8_t *)out;
    outputs.data.len = sizeof out;
    Statesaver__V1__Tensor st[2] = {STATESAVER__V1__TENSOR__INIT,
                                    STATESAVER__V1__TENSOR__INIT};
    st[0].dtype = st[1].dtype = STATESAVER__V1__DTYPE__DT_FLOAT32;
    st[0].n_shape = st[1].n_shape = 1;
    st[0].shape = c_shape;
    st[1].shape = h_shape;
    st[0].data.data = (uint8_t *)c;
    st[0].data.len = sizeof c;
    st[1].data.data = (uint8_t *)h;
    st[1].data.len = sizeof h;
    Statesaver__V1__Tensor *stp[2] = {&st[0], &st[1]};
    Statesaver__V1__CompletedSegment item =
        STATESAVER__V1__COMPLETED_SEGMENT__INIT;
    item.key.data = (uint8_t *)"jobkey";
    item.key.len = 6;
    item.segment = 0;
    item.outputs = &outputs;
    item.n_states = 2;
    item.states = stp;
    Statesaver__V1__CompletedSegment *itemp = &item;
    Statesaver__V1__CompleteRequest comp = STATESAVER__V1__COMPLETE_REQUEST__INIT;
    comp.saver = "s";
    comp.lease_id = lease_id;
    comp.n_items = 1;
    comp.items = &itemp;
    r0 = treq_new(5);
    r0->body_case = STATESAVER__V1__REQUEST__BODY_COMPLETE;
    r0->complete = &comp;
    r = tc_call(w, r0, T_WAIT);
    expect_ok(r, 5, "complete");
    tresp_free(r);
    treq_free(r0);

    r = tc_recv(a, T_WAIT, NULL);
    expect_ok(r, 1, "fetch released by complete");
    ck_assert_uint_eq(r->fetch->next_segment[0], 1);
    ck_assert_float_eq(((float *)r->fetch->states[0]->data.data)[3], 7.0f);
    ck_assert_float_eq(((float *)r->fetch->states[1]->data.data)[1], 8.0f);
    tresp_free(r);
    close(a);
    close(w);
}
END_TEST

/* IPv6 literal listen address, and a client that half-closes after
 * pipelining still gets every reply before the server closes. */
START_TEST(test_ipv6_halfclose)
{
    static const char *const extra[] = {"--listen", "[::1]:0", NULL};
    int probe = socket(AF_INET6, SOCK_STREAM, 0);
    if (probe < 0)
        return; /* no IPv6 in this environment */
    close(probe);
    tsrv s;
    tsrv_init(&s);
    tsrv_start(&s, extra);
    int fd = tc_connect_host("::1", s.port);
    ck_assert_int_ge(fd, 0);
    tbuf buf = {NULL, 0, 0};
    append_req(&buf, treq_declare(1, "v6", 2, state_names, state_dims));
    const char *k = "x";
    uint64_t seg = 0;
    append_req(&buf, treq_save(2, "v6", 1, &k, &seg, 2, state_dims, 1.0f));
    append_req(&buf, treq_ping(3, NULL, 0));
    ck_assert_int_eq(tc_write_all(fd, buf.data, buf.len, T_WAIT), 0);
    tbuf_free(&buf);
    shutdown(fd, SHUT_WR);
    bool seen[4] = {false};
    for (int i = 0; i < 3; i++) {
        tresp *r = tc_recv(fd, T_WAIT, NULL);
        ck_assert_msg(r != NULL, "reply %d missing after half-close", i);
        ck_assert_int_eq(tresp_code(r), 0);
        ck_assert_uint_le(r->id, 3);
        seen[r->id] = true;
        tresp_free(r);
    }
    ck_assert(seen[1] && seen[2] && seen[3]);
    ck_assert(tc_wait_closed(fd, T_WAIT));
    close(fd);
    ck_assert_int_eq(tsrv_stop(&s, SIGTERM, 15000), 0);
    tsrv_cleanup(&s);
}
END_TEST

/* Idle TTL: the periodic eviction removes an idle sequence; Fetch then
 * says NOT_FOUND, and a save of segment 0 restarts it. */
START_TEST(test_ttl_eviction)
{
    static const char *const extra[] = {"--ttl-interval-ms", "50", NULL};
    tsrv s;
    tsrv_init(&s);
    tsrv_start(&s, extra);
    int fd = tc_connect(s.port);
    ck_assert_int_ge(fd, 0);
    treq *q = treq_declare(1, "ttl", 2, state_names, state_dims);
    q->declare->idle_ttl_ms = 100;
    tresp *r = tc_call(fd, q, T_WAIT);
    expect_ok(r, 1, "declare with ttl");
    ck_assert_uint_eq(r->declare->idle_ttl_ms, 100);
    tresp_free(r);
    treq_free(q);
    save_ok(fd, "ttl", "old", 0, 1.0f);
    int code = 0;
    uint64_t deadline = tnow_ms() + T_WAIT;
    while (tnow_ms() < deadline) {
        r = fetch(fd, "ttl", "old");
        code = tresp_code(r);
        tresp_free(r);
        if (code != 0)
            break;
        usleep(50000);
    }
    ck_assert_int_eq(code, CODE(NOT_FOUND));
    save_ok(fd, "ttl", "old", 0, 2.0f);
    r = fetch(fd, "ttl", "old");
    expect_ok(r, 903, "fetch after restart of the sequence");
    expect_state(r, 1, 2.0f);
    tresp_free(r);
    q = treq_new(2);
    Statesaver__V1__StatsRequest sreq = STATESAVER__V1__STATS_REQUEST__INIT;
    q->body_case = STATESAVER__V1__REQUEST__BODY_STATS;
    q->stats = &sreq;
    r = tc_call(fd, q, T_WAIT);
    expect_ok(r, 2, "stats");
    ck_assert_uint_ge(r->stats->evicted, 1);
    tresp_free(r);
    treq_free(q);
    close(fd);
    ck_assert_int_eq(tsrv_stop(&s, SIGTERM, 15000), 0);
    tsrv_cleanup(&s);
}
END_TEST

/* Bad command lines exit non-zero with a message; --help/--version work. */
START_TEST(test_cli)
{
    const char *root = getenv("SS_BUILD_ROOT");
    char cmd[1200];
    static const char *const bad[] = {
        "",                                   /* no --data */
        "--data /tmp/x --listen nope",        /* bad address */
        "--data /tmp/x --sync maybe",
        "--data /tmp/x --max-keys 0",
        "--data /tmp/x --max-frame-bytes abc",
        "--data /tmp/x --log-level loud",
        "--data /tmp/x --auth-token-file /nonexistent/token",
        "--data /tmp/x --bogus",
        "--data /proc/no/such/dir",           /* store cannot open */
        "--data DIR --listen nosuchhost.invalid:0", /* cannot resolve */
        "--data DIR --listen 127.0.0.1:PORT", /* port in use */
    };
    /* A start that fails after the store opened must still exit. */
    tsrv busy;
    tsrv_init(&busy);
    tsrv_start(&busy, NULL);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char args[600];
        const char *a = bad[i];
        const char *dir = strstr(a, "DIR");
        const char *port = strstr(a, "PORT");
        if (dir && port)
            snprintf(args, sizeof args, "--data %s/second --listen "
                     "127.0.0.1:%d", busy.root, busy.port);
        else if (dir)
            snprintf(args, sizeof args, "--data %s/second%s", busy.root,
                     dir + 3);
        else
            snprintf(args, sizeof args, "%s", a);
        snprintf(cmd, sizeof cmd, "timeout 30 %s/server/statesaver-server %s "
                 ">/dev/null 2>&1", root ? root : ".", args);
        int st = system(cmd);
        ck_assert_msg(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) != 0 &&
                      WEXITSTATUS(st) != 124,
                      "'%s' exited %d", args, st);
    }
    ck_assert_int_eq(tsrv_stop(&busy, SIGTERM, 15000), 0);
    tsrv_cleanup(&busy);
    snprintf(cmd, sizeof cmd, "%s/server/statesaver-server --help "
             "| grep -q -- --max-output-bytes", root ? root : ".");
    ck_assert_int_eq(system(cmd), 0);
    snprintf(cmd, sizeof cmd, "%s/server/statesaver-server --version "
             "| grep -q statesaver-server", root ? root : ".");
    ck_assert_int_eq(system(cmd), 0);
}
END_TEST

static Suite *server_net_suite(void)
{
    Suite *s = suite_create("server_net");
    TCase *tc = tcase_create("bad_input");
    tcase_add_unchecked_fixture(tc, auth_setup, auth_teardown);
    tcase_add_loop_test(tc, test_bad_input, 0, N_BAD);
    tcase_set_timeout(tc, 120);
    suite_add_tcase(s, tc);

    tc = tcase_create("plain");
    tcase_add_unchecked_fixture(tc, plain_setup, plain_teardown);
    tcase_add_test(tc, test_pipelined);
    tcase_add_test(tc, test_barrier);
    tcase_add_test(tc, test_api);
    tcase_add_test(tc, test_backpressure);
    tcase_add_test(tc, test_barrier_complete);
    tcase_set_timeout(tc, 120);
    suite_add_tcase(s, tc);

    tc = tcase_create("process");
    tcase_add_test(tc, test_restart);
    tcase_add_test(tc, test_shutdown_inflight);
    tcase_add_test(tc, test_kill9);
    tcase_add_test(tc, test_limits);
    tcase_add_test(tc, test_ipv6_halfclose);
    tcase_add_test(tc, test_ttl_eviction);
    tcase_add_test(tc, test_cli);
    tcase_set_timeout(tc, 120);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(server_net_suite());
    srunner_run_all(sr, CK_ENV);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
