/* test_store_full -- a full LMDB map recovers (issue 8 item 5), and an idle
 * eviction sweep commits nothing (item 8): real store and writer thread in
 * a temp dir, 1 MiB map; keys over SS_STORE_KEY_MAX are refused. */
#include <check.h>
#include <lmdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "ss_log.h"
#include "store_fixture.h"
#include "writer.h"

#define DIM 256            /* floats per state: 1 KiB per sequence */
#define MAP (1u << 20)     /* the issue's --map-size 1M */
#define MAXKEYS 4096       /* more than a 1 MiB map can hold */
#define DROPS 50           /* keys dropped to make room */

enum op_kind { OP_SAVE, OP_DROP, OP_EVICT };

typedef struct test_op {
    ss_write_op op;        /* embedded writer op */
    enum op_kind kind;     /* what run does */
    int idx;               /* key index (save) / first key (drop) */
    int stride;            /* drop: keys idx, idx+stride, ... */
    int rc;                /* result seen by done */
    char msg[SS_STORE_MSG];/* message seen by done */
    bool done;             /* done ran */
} test_op;

static char dir[64];
static ss_store *st;
static ss_schema *schema;
static uv_loop_t loop;
static ss_writer *w;
static int stopped_calls;
static const fx_state states[] = {{"s", DIM, NULL}};

static void open_all(void)
{
    st = fx_open(dir, MAP);
    ss_schema *c = NULL;
    if (ss_store_schema(st, "full", &c) == 0)
        schema = c;
    else
        schema = fx_declared(st, "full", states, 1, 0, false);
    ck_assert_int_eq(uv_loop_init(&loop), 0);
    ck_assert_int_eq(ss_writer_start(&w, st, &loop), 0);
}

static void on_stopped(void *arg)
{
    (void)arg;
    stopped_calls++;
}

static void close_all(void)
{
    ss_writer_stop(w, on_stopped, NULL);
    w = NULL;
    uv_run(&loop, UV_RUN_DEFAULT);
    ck_assert_int_eq(uv_loop_close(&loop), 0);
    ss_schema_unref(schema);
    schema = NULL;
    ss_store_close(st);
    st = NULL;
}

static void setup(void)
{
    ss_log_threshold = SS_LOG_ERROR + 1;
    stopped_calls = 0;
    fx_mkdtemp(dir);
    open_all();
}

static void teardown(void)
{
    close_all();
    fx_rmtree(dir);
}

static int op_run(ss_write_op *op, ss_store_txn *txn, char msg[SS_STORE_MSG])
{
    test_op *t = (test_op *)op;
    char key[16];
    if (t->kind == OP_SAVE) {
        static float v[DIM];
        for (int d = 0; d < DIM; d++)
            v[d] = (float)t->idx + (float)d / 1024.0f;
        const void *sp[1] = {v};
        snprintf(key, sizeof key, "k%05d", t->idx);
        ss_save_item it = {fx_key(key), 0, false, sp};
        bool applied;
        return ss_store_save(txn, schema, 1, &it, &applied, 1000, msg);
    }
    if (t->kind == OP_DROP) {
        static char names[DROPS][16];
        ss_bytes keys[DROPS];
        for (int i = 0; i < DROPS; i++) {
            snprintf(names[i], sizeof names[i], "k%05d",
                     t->idx + i * t->stride);
            keys[i] = fx_key(names[i]);
        }
        uint64_t dropped = 0;
        int rc = ss_store_drop(txn, "full", DROPS, keys, false, &dropped, msg);
        if (rc == 0 && dropped != DROPS) {
            snprintf(msg, SS_STORE_MSG, "dropped %llu", (unsigned long long)dropped);
            return SS_ERR_INTERNAL;
        }
        return rc;
    }
    uint64_t evicted = 0;
    return ss_store_evict_idle(txn, 1000, 256, &evicted);
}

static void op_done(ss_write_op *op, int rc, const char *msg)
{
    test_op *t = (test_op *)op;
    t->rc = rc;
    snprintf(t->msg, SS_STORE_MSG, "%s", msg);
    t->done = true;
}

/* Run one op through the writer and wait for its done callback. */
static int run_op_stride(enum op_kind kind, int idx, int stride,
                         char msg[SS_STORE_MSG])
{
    test_op t;
    memset(&t, 0, sizeof t);
    t.op.run = op_run;
    t.op.done = op_done;
    t.kind = kind;
    t.idx = idx;
    t.stride = stride;
    ss_writer_submit(w, &t.op);
    while (!t.done)
        uv_run(&loop, UV_RUN_ONCE);
    if (msg)
        memcpy(msg, t.msg, SS_STORE_MSG);
    return t.rc;
}

static int run_op(enum op_kind kind, int idx, char msg[SS_STORE_MSG])
{
    return run_op_stride(kind, idx, 1, msg);
}

/* Save k00000, k00001, ... until the map is full; returns how many fit. */
static int fill(void)
{
    char msg[SS_STORE_MSG];
    for (int i = 0; i < MAXKEYS; i++) {
        int rc = run_op(OP_SAVE, i, msg);
        if (rc == SS_ERR_FULL) {
            ck_assert_msg(strstr(msg, "map is full"), "msg: %s", msg);
            ck_assert_int_gt(i, 2 * DROPS);
            return i;
        }
        ck_assert_msg(rc == 0, "save %d: %s", i, msg);
    }
    ck_abort_msg("map of %u bytes never filled", MAP);
    return 0;
}

/* The message of a MAP_FULL save must give advice that works: it names
 * Drop (which frees space usable at once) and --map-size. */
static void check_advice(const char *msg)
{
    ck_assert_msg(strstr(msg, "--map-size") && strstr(msg, "Drop"),
                  "advice: %s", msg);
}

START_TEST(test_drop_frees_at_once)
{
    char msg[SS_STORE_MSG];
    int n = fill();
    ck_assert_int_eq(run_op(OP_SAVE, n, msg), SS_ERR_FULL);
    check_advice(msg);
    /* Raw writers (the job queue) get the same answer. */
    ss_store_txn *t = NULL;
    ck_assert_int_eq(ss_store_txn_begin(st, &t, msg), 0);
    ck_assert_int_eq(ss_store_reserve_check(t, 4096, msg), SS_ERR_FULL);
    check_advice(msg);
    ss_store_txn_abort(t);
    int rc = run_op(OP_DROP, 0, msg);
    ck_assert_msg(rc == 0, "drop: %d %s", rc, msg);
    /* The very next save succeeds, and so do saves filling most of the
     * room the 50 dropped keys left. */
    for (int i = 0; i < DROPS / 2; i++) {
        rc = run_op(OP_SAVE, n + i, msg);
        ck_assert_msg(rc == 0, "save %d of %d after drop: %s", i, DROPS / 2, msg);
    }
}
END_TEST

START_TEST(test_drop_frees_after_reopen)
{
    char msg[SS_STORE_MSG];
    int n = fill();
    int rc = run_op(OP_DROP, 0, msg);
    ck_assert_msg(rc == 0, "drop: %d %s", rc, msg);
    close_all();
    open_all();
    rc = run_op(OP_SAVE, n, msg);
    ck_assert_msg(rc == 0, "save after drop and reopen: %s", msg);
}
END_TEST

/* A full map reopened (restart) without any drop: reads work, a drop then
 * frees room at once. */
START_TEST(test_reopen_full_then_drop)
{
    char msg[SS_STORE_MSG];
    int n = fill();
    close_all();
    open_all();
    ck_assert_int_eq(run_op(OP_SAVE, n, msg), SS_ERR_FULL);
    ck_assert_int_eq(run_op(OP_DROP, DROPS, msg), 0);
    int rc = run_op(OP_SAVE, n, msg);
    ck_assert_msg(rc == 0, "save after reopen and drop: %s", msg);
}
END_TEST

/* Item 8: an eviction sweep with nothing to evict commits nothing -- no
 * LMDB write (so no fsync) and no commit counted -- with no saver
 * holding records, with savers without a TTL and with a TTL saver whose
 * records are all young. A save still counts one commit. */
START_TEST(test_idle_sweep_commits_nothing)
{
    char msg[SS_STORE_MSG];
    ss_writer_stats a, b;
    for (int round = 0; round < 3; round++) {
        if (round == 1)
            ck_assert_int_eq(run_op(OP_SAVE, 1, msg), 0); /* saver, no TTL */
        if (round == 2) {
            ss_schema *ttl = fx_declared(st, "ttl", states, 1, 1000000, false);
            ss_schema_unref(ttl);
        }
        ss_writer_stats_get(w, &a);
        uint64_t txnid = ss_store_last_txnid(st);
        for (int i = 0; i < 5; i++)
            ck_assert_int_eq(run_op(OP_EVICT, 0, msg), 0);
        ss_writer_stats_get(w, &b);
        ck_assert_uint_eq(b.commits, a.commits);
        ck_assert_uint_eq(b.empty, a.empty + 5);
        ck_assert_uint_eq(ss_store_last_txnid(st), txnid);
    }
    ck_assert(ss_store_has_ttl_savers(st));
    ss_writer_stats_get(w, &a);
    ck_assert_int_eq(run_op(OP_SAVE, 2, msg), 0);
    ss_writer_stats_get(w, &b);
    ck_assert_uint_eq(b.commits, a.commits + 1);
}
END_TEST

/* Item 8: the store refuses keys over SS_STORE_KEY_MAX bytes. */
START_TEST(test_key_max)
{
    char msg[SS_STORE_MSG];
    static uint8_t big[SS_STORE_KEY_MAX + 1];
    static float v[DIM];
    memset(big, 'k', sizeof big);
    const void *sp[1] = {v};
    ss_store_txn *t = NULL;
    bool applied;
    ck_assert_int_eq(ss_store_txn_begin(st, &t, msg), 0);
    ss_save_item it = {{big, SS_STORE_KEY_MAX}, 0, false, sp};
    ck_assert_int_eq(ss_store_save(t, schema, 1, &it, &applied, 1, msg), 0);
    it.key.len = SS_STORE_KEY_MAX + 1;
    ck_assert_int_eq(ss_store_save(t, schema, 1, &it, &applied, 1, msg),
                     SS_ERR_INVALID);
    ck_assert_msg(strstr(msg, "65535"), "msg: %s", msg);
    ss_store_txn_abort(t);
    ck_assert_uint_eq(SS_STORE_KEY_MAX, 65535u);
}
END_TEST

/* 50 keys spread over the whole map: the Drop copies about 50 leaf pages
 * (more than 50 neighbours would) and still fits in the reserve. It frees
 * room inside those leaves rather than whole pages, so saves of keys
 * sorting into them -- here the dropped keys again -- succeed. */
START_TEST(test_scattered_drop)
{
    char msg[SS_STORE_MSG];
    int n = fill();
    int stride = n / DROPS;
    int rc = run_op_stride(OP_DROP, 0, stride, msg);
    ck_assert_msg(rc == 0, "scattered drop: %d %s", rc, msg);
    for (int i = 0; i < DROPS; i++) {
        rc = run_op(OP_SAVE, i * stride, msg);
        ck_assert_msg(rc == 0, "save of dropped key %d: %s", i * stride, msg);
    }
}
END_TEST

static Suite *full_suite(void)
{
    Suite *s = suite_create("store_full");
    TCase *tc = tcase_create("map_full");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_drop_frees_at_once);
    tcase_add_test(tc, test_drop_frees_after_reopen);
    tcase_add_test(tc, test_reopen_full_then_drop);
    tcase_add_test(tc, test_scattered_drop);
    suite_add_tcase(s, tc);
    TCase *idle = tcase_create("idle");
    tcase_add_checked_fixture(idle, setup, teardown);
    tcase_set_timeout(idle, 60);
    tcase_add_test(idle, test_idle_sweep_commits_nothing);
    tcase_add_test(idle, test_key_max);
    suite_add_tcase(s, idle);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(full_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
