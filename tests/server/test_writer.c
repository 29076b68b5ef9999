/* test_writer -- Check suite for the group-commit writer thread: grouping,
 * per-op rollback, completion order, draining stop, map-full errors. */
#include <check.h>
#include <semaphore.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "ss_log.h"
#include "store_fixture.h"
#include "writer.h"

#define NOPS 200
#define DIM 4

enum op_kind {
    OP_SAVE,       /* save key k<idx> at segment 0 */
    OP_GATE_SAVE,  /* wait for the gate, then save */
    OP_FAIL,       /* save, then fail: the save must be rolled back */
    OP_BIG,        /* save a big state (map-full test) */
};

typedef struct test_op {
    ss_write_op op;   /* embedded writer op (first member) */
    int idx;          /* submission index */
    enum op_kind kind;/* what run does */
} test_op;

static char dir[64];
static ss_store *st;
static uv_loop_t loop;
static ss_writer *w;
static ss_writer *w_live;       /* w, kept after the test hands it to stop */
static ss_schema *schema;
static sem_t gate;
static test_op ops[NOPS + 1];
static int order[NOPS + 1];   /* done order: indices */
static int rcs[NOPS + 1];     /* rc per index */
static char msgs[NOPS + 1][SS_STORE_MSG]; /* message per index */
static int calls[NOPS + 1];   /* done calls per index */
static int n_done;            /* done callbacks so far */
static int stopped_calls;     /* stopped callbacks */
static bool submit_in_done;   /* last op's done submits one more */
static const fx_state states[] = {{"c", DIM, NULL}, {"h", DIM, NULL}};
static float big_state[16384];

static void setup_map(uint64_t map_size, const fx_state *sp, size_t n)
{
    fx_mkdtemp(dir);
    st = fx_open(dir, map_size);
    schema = fx_declared(st, "w", sp, n, 0, false);
    ck_assert_int_eq(uv_loop_init(&loop), 0);
    ck_assert_int_eq(ss_writer_start(&w, st, &loop), 0);
    w_live = w;
    ck_assert_int_eq(sem_init(&gate, 0, 0), 0);
    n_done = 0;
    stopped_calls = 0;
    submit_in_done = false;
    memset(calls, 0, sizeof calls);
}

static void setup(void)
{
    ss_log_threshold = SS_LOG_WARN;
    setup_map(64ull << 20, states, 2);
}

static void on_stopped(void *arg)
{
    ck_assert_ptr_eq(arg, &stopped_calls);
    stopped_calls++;
}

/* Stop the writer (if the test did not) and run the loop until closed. */
static void teardown(void)
{
    if (w) {
        ss_writer_stop(w, on_stopped, &stopped_calls);
        w = NULL;
        uv_run(&loop, UV_RUN_DEFAULT);
    }
    ck_assert_int_eq(stopped_calls, 1);
    ck_assert_int_eq(uv_loop_close(&loop), 0);
    ss_schema_unref(schema);
    ss_store_close(st);
    sem_destroy(&gate);
    fx_rmtree(dir);
}

static int save_key(ss_store_txn *txn, int idx, bool big, char msg[SS_STORE_MSG])
{
    char key[16];
    float c[DIM], h[DIM];
    for (int d = 0; d < DIM; d++)
        c[d] = h[d] = (float)idx;
    const void *small[2] = {c, h};
    const void *bigp[1] = {big_state};
    snprintf(key, sizeof key, "k%d", idx);
    ss_save_item it = {fx_key(key), 0, false, big ? bigp : small};
    bool applied;
    return ss_store_save(txn, schema, 1, &it, &applied, 1000, msg);
}

static int op_run(ss_write_op *op, ss_store_txn *txn, char msg[SS_STORE_MSG])
{
    test_op *t = (test_op *)op;
    int rc;
    switch (t->kind) {
    case OP_GATE_SAVE:
        sem_wait(&gate);
        return save_key(txn, t->idx, false, msg);
    case OP_FAIL:
        rc = save_key(txn, t->idx, false, msg);
        ck_assert_int_eq(rc, 0);
        snprintf(msg, SS_STORE_MSG, "op %d refuses after writing", t->idx);
        return SS_ERR_CONFLICT;
    case OP_BIG:
        return save_key(txn, t->idx, true, msg);
    default:
        return save_key(txn, t->idx, false, msg);
    }
}

static void submit(int idx, enum op_kind kind);

static void op_done(ss_write_op *op, int rc, const char *msg)
{
    test_op *t = (test_op *)op;
    ck_assert_int_le(n_done, NOPS);
    order[n_done++] = t->idx;
    rcs[t->idx] = rc;
    calls[t->idx]++;
    snprintf(msgs[t->idx], SS_STORE_MSG, "%s", msg);
    if (submit_in_done && t->idx == NOPS - 1) {
        submit_in_done = false;
        submit(NOPS, OP_SAVE);
    }
}

static void submit(int idx, enum op_kind kind)
{
    memset(&ops[idx], 0, sizeof ops[idx]);
    ops[idx].op.run = op_run;
    ops[idx].op.done = op_done;
    ops[idx].idx = idx;
    ops[idx].kind = kind;
    ss_writer_submit(w_live, &ops[idx].op);
}

static void run_until(int want)
{
    while (n_done < want)
        uv_run(&loop, UV_RUN_ONCE);
}

static uint64_t next_of(int idx)
{
    char key[16], msg[SS_STORE_MSG];
    float c[DIM], h[DIM];
    void *const out[2] = {c, h};
    uint64_t next = 99, upd;
    snprintf(key, sizeof key, "k%d", idx);
    ss_bytes k = fx_key(key);
    ck_assert_int_eq(ss_store_fetch(st, schema, 1, &k, out, &next, &upd, msg), 0);
    return next;
}

START_TEST(test_group_commit_order)
{
    /* op 0 holds the thread until every other op is queued, so the rest
     * must share one commit. */
    submit(0, OP_GATE_SAVE);
    for (int i = 1; i < NOPS; i++)
        submit(i, OP_SAVE);
    sem_post(&gate);
    run_until(NOPS);
    for (int i = 0; i < NOPS; i++) {
        ck_assert_int_eq(order[i], i);
        ck_assert_int_eq(calls[i], 1);
        ck_assert_int_eq(rcs[i], 0);
        ck_assert_uint_eq(next_of(i), 1);
    }
    ss_writer_stats ws;
    ss_writer_stats_get(w, &ws);
    ck_assert_uint_eq(ws.ops, NOPS);
    ck_assert_uint_le(ws.commits, 2);
    ck_assert_uint_lt(ws.commits, ws.ops);
    ck_assert_uint_ge(ws.max_batch, NOPS / 2);
    ss_store_stats ss;
    ck_assert_int_eq(ss_store_stats_get(st, "w", &ss), 0);
    ck_assert_uint_eq(ss.sequences, NOPS);
}
END_TEST

START_TEST(test_failing_op_rolled_back_alone)
{
    submit(0, OP_GATE_SAVE);
    submit(1, OP_SAVE);
    submit(2, OP_FAIL);
    submit(3, OP_SAVE);
    sem_post(&gate);
    run_until(4);
    ck_assert_int_eq(rcs[0], 0);
    ck_assert_int_eq(rcs[1], 0);
    ck_assert_int_eq(rcs[2], SS_ERR_CONFLICT);
    ck_assert_str_eq(msgs[2], "op 2 refuses after writing");
    ck_assert_int_eq(rcs[3], 0);
    ck_assert_uint_eq(next_of(1), 1);
    ck_assert_uint_eq(next_of(2), 0);
    ck_assert_uint_eq(next_of(3), 1);
    ss_writer_stats ws;
    ss_writer_stats_get(w, &ws);
    ck_assert_uint_le(ws.commits, 2);
    ss_store_stats ss;
    ck_assert_int_eq(ss_store_stats_get(st, "w", &ss), 0);
    ck_assert_uint_eq(ss.sequences, 3);
}
END_TEST

START_TEST(test_stop_drains)
{
    for (int i = 0; i < NOPS; i++)
        submit(i, OP_SAVE);
    submit_in_done = true; /* the last done submits one more op */
    ss_writer_stop(w, on_stopped, &stopped_calls);
    w = NULL;
    uv_run(&loop, UV_RUN_DEFAULT); /* returns once the writer is gone */
    ck_assert_int_eq(stopped_calls, 1);
    ck_assert_int_eq(n_done, NOPS + 1);
    for (int i = 0; i < NOPS; i++) {
        ck_assert_int_eq(order[i], i);
        ck_assert_int_eq(calls[i], 1);
        ck_assert_int_eq(rcs[i], 0);
        ck_assert_uint_eq(next_of(i), 1);
    }
    /* The late op either made it before the thread left or is refused. */
    ck_assert_int_eq(calls[NOPS], 1);
    ck_assert_msg(rcs[NOPS] == 0 || rcs[NOPS] == SS_ERR_CLOSED, "rc %d",
                  rcs[NOPS]);
    ck_assert_uint_eq(next_of(NOPS), rcs[NOPS] == 0 ? 1 : 0);
}
END_TEST

static void setup_small(void)
{
    static const fx_state big[] = {{"c", 16384, NULL}};
    ss_log_threshold = SS_LOG_WARN;
    setup_map(256u << 10, big, 1);
}

/* Holds the thread until every other op is queued; writes nothing. */
static int gate_only(ss_write_op *op, ss_store_txn *txn, char msg[SS_STORE_MSG])
{
    (void)op;
    (void)txn;
    (void)msg;
    sem_wait(&gate);
    return 0;
}

START_TEST(test_map_full)
{
    memset(&ops[0], 0, sizeof ops[0]);
    ops[0].op.run = gate_only;
    ops[0].op.done = op_done;
    ss_writer_submit(w_live, &ops[0].op);
    for (int i = 1; i < 12; i++)
        submit(i, OP_BIG);
    sem_post(&gate);
    run_until(12);
    ck_assert_int_eq(rcs[0], 0);
    int full = 0, ok = 0;
    for (int i = 1; i < 12; i++) {
        ck_assert_int_eq(calls[i], 1);
        if (rcs[i] == SS_ERR_FULL) {
            full++;
            ck_assert_msg(strstr(msgs[i], "map is full"), "msg: %s", msgs[i]);
        } else {
            ck_assert_int_eq(rcs[i], 0);
            ok++;
        }
    }
    ck_assert_int_gt(full, 0);
    ck_assert_int_gt(ok, 0);
}
END_TEST

static Suite *writer_suite(void)
{
    Suite *s = suite_create("writer");
    TCase *tc = tcase_create("writer");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_group_commit_order);
    tcase_add_test(tc, test_failing_op_rolled_back_alone);
    tcase_add_test(tc, test_stop_drains);
    suite_add_tcase(s, tc);
    TCase *full = tcase_create("map_full");
    tcase_add_checked_fixture(full, setup_small, teardown);
    tcase_set_timeout(full, 60);
    tcase_add_test(full, test_map_full);
    suite_add_tcase(s, full);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(writer_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
