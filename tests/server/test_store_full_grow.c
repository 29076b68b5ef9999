/* test_store_full_grow -- the LMDB map grows at run time (issue 9 item 3):
 * a store opened at 1 MiB that may grow to 8 MiB (ss_store_open_growing,
 * what --map-size 1M --max-map-size 8M does) accepts saves well past 1 MiB;
 * at 8 MiB saves get SS_ERR_FULL naming --max-map-size while fetches and
 * drops work, and a save after a drop succeeds without a reopen. Real store
 * and writer thread in a temp dir. Also the server flag --max-map-size. */
#include <check.h>
#include <lmdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "config.h"
#include "ss_log.h"
#include "store_fixture.h"
#include "writer.h"

#define DIM 256             /* floats per state: 1 KiB per sequence */
#define MAP (1u << 20)      /* --map-size 1M */
#define MAX_MAP (8u << 20)  /* --max-map-size 8M */
#define BATCH 16            /* keys per save op */
#define MAXKEYS 16384       /* more than an 8 MiB map can hold */
#define DROPS 50            /* keys dropped to make room */

enum op_kind { OP_SAVE, OP_DROP };

typedef struct test_op {
    ss_write_op op;         /* embedded writer op */
    enum op_kind kind;      /* what run does */
    int idx;                /* first key index */
    int n;                  /* keys */
    int rc;                 /* result seen by done */
    char msg[SS_STORE_MSG]; /* message seen by done */
    bool done;              /* done ran */
} test_op;

static char dir[64];
static ss_store *st;
static ss_schema *schema;
static uv_loop_t loop;
static ss_writer *w;
static const fx_state states[] = {{"s", DIM, NULL}};

static void open_all(uint64_t max_map)
{
    char msg[SS_STORE_MSG];
    ss_store_options o = {.dir = dir, .map_size = MAP, .sync = false,
                          .max_readers = 0};
    int rc = ss_store_open_growing(&st, &o, max_map, msg);
    ck_assert_msg(rc == 0, "open %s: %s", dir, msg);
    ss_schema *c = NULL;
    if (ss_store_schema(st, "grow", &c) == 0)
        schema = c;
    else
        schema = fx_declared(st, "grow", states, 1, 0, false);
    ck_assert_int_eq(uv_loop_init(&loop), 0);
    ck_assert_int_eq(ss_writer_start(&w, st, &loop), 0);
}

static void on_stopped(void *arg)
{
    (void)arg;
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
    fx_mkdtemp(dir);
    open_all(MAX_MAP);
}

static void teardown(void)
{
    close_all();
    fx_rmtree(dir);
}

static void key_of(int i, char *buf, size_t size)
{
    snprintf(buf, size, "k%05d", i);
}

/* Content derived from the key index, so a fetch can check it. */
static void fill_state(int i, float *v)
{
    for (int d = 0; d < DIM; d++)
        v[d] = (float)i + (float)d / 1024.0f;
}

static int op_run(ss_write_op *op, ss_store_txn *txn, char msg[SS_STORE_MSG])
{
    test_op *t = (test_op *)op;
    static char names[BATCH > DROPS ? BATCH : DROPS][16];
    static float v[BATCH][DIM];
    ss_bytes keys[BATCH > DROPS ? BATCH : DROPS];
    for (int i = 0; i < t->n; i++) {
        key_of(t->idx + i, names[i], sizeof names[i]);
        keys[i] = fx_key(names[i]);
    }
    if (t->kind == OP_SAVE) {
        ss_save_item items[BATCH];
        const void *sp[BATCH][1];
        bool applied[BATCH];
        for (int i = 0; i < t->n; i++) {
            fill_state(t->idx + i, v[i]);
            sp[i][0] = v[i];
            items[i] = (ss_save_item){keys[i], 0, false, sp[i]};
        }
        return ss_store_save(txn, schema, (size_t)t->n, items, applied, 1000, msg);
    }
    uint64_t dropped = 0;
    int rc = ss_store_drop(txn, "grow", (size_t)t->n, keys, false, &dropped, msg);
    if (rc == 0 && dropped != (uint64_t)t->n) {
        snprintf(msg, SS_STORE_MSG, "dropped %llu", (unsigned long long)dropped);
        return SS_ERR_INTERNAL;
    }
    return rc;
}

static void op_done(ss_write_op *op, int rc, const char *msg)
{
    test_op *t = (test_op *)op;
    t->rc = rc;
    snprintf(t->msg, SS_STORE_MSG, "%s", msg);
    t->done = true;
}

static int run_op(enum op_kind kind, int idx, int n, char msg[SS_STORE_MSG])
{
    test_op t;
    memset(&t, 0, sizeof t);
    t.op.run = op_run;
    t.op.done = op_done;
    t.kind = kind;
    t.idx = idx;
    t.n = n;
    ss_writer_submit(w, &t.op);
    while (!t.done)
        uv_run(&loop, UV_RUN_ONCE);
    memcpy(msg, t.msg, SS_STORE_MSG);
    return t.rc;
}

static uint64_t map_size_now(void)
{
    ss_store_stats s;
    ck_assert_int_eq(ss_store_stats_get(st, NULL, &s), 0);
    return s.map_size;
}

/* Fetch key i and check its content. */
static void check_key(int i)
{
    char name[16];
    float got[DIM], want[DIM];
    void *const out[1] = {got};
    uint64_t next = 0, upd = 0;
    char msg[SS_STORE_MSG];
    key_of(i, name, sizeof name);
    ss_bytes k = fx_key(name);
    int rc = ss_store_fetch(st, schema, 1, &k, out, &next, &upd, msg);
    ck_assert_msg(rc == 0, "fetch %s: %s", name, msg);
    ck_assert_uint_eq(next, 1);
    fill_state(i, want);
    ck_assert_msg(memcmp(got, want, sizeof want) == 0, "content of %s", name);
}

/* Save batches of keys from 0 until a save is refused; returns how many
 * keys were saved (a multiple of BATCH). */
static int fill(void)
{
    char msg[SS_STORE_MSG];
    for (int i = 0; i < MAXKEYS; i += BATCH) {
        int rc = run_op(OP_SAVE, i, BATCH, msg);
        if (rc == SS_ERR_FULL) {
            ck_assert_msg(strstr(msg, "map is full") &&
                          strstr(msg, "--max-map-size") && strstr(msg, "Drop"),
                          "msg: %s", msg);
            return i;
        }
        ck_assert_msg(rc == 0, "save %d: %s", i, msg);
    }
    ck_abort_msg("map of at most %u bytes never filled", MAX_MAP);
    return 0;
}

/* 3 MiB of states (3x --map-size) fit; the reported map size grew past
 * 1 MiB in steps and stays within 8 MiB. */
START_TEST(test_grows_past_initial)
{
    char msg[SS_STORE_MSG];
    ck_assert_uint_eq(map_size_now(), MAP);
    int n = 3 * 1024;
    for (int i = 0; i < n; i += BATCH) {
        int rc = run_op(OP_SAVE, i, BATCH, msg);
        ck_assert_msg(rc == 0, "save %d (%d KiB of states): %s", i, i, msg);
    }
    uint64_t now = map_size_now();
    ck_assert_uint_gt(now, 3u << 20);
    ck_assert_uint_le(now, MAX_MAP);
    ss_store_stats s;
    ck_assert_int_eq(ss_store_stats_get(st, NULL, &s), 0);
    ck_assert_uint_gt(s.map_used, 3u << 20);
    ck_assert_uint_eq(s.sequences, (uint64_t)n);
    for (int i = 0; i < n; i += 97)
        check_key(i);
    /* A restart keeps the grown size (the file already uses it). */
    close_all();
    open_all(MAX_MAP);
    ck_assert_uint_ge(map_size_now(), now);
    check_key(n - 1);
    ck_assert_int_eq(run_op(OP_SAVE, n, BATCH, msg), 0);
}
END_TEST

/* At --max-map-size: saves are refused, fetches and drops work, and the
 * next save after a drop succeeds (no reopen). */
START_TEST(test_full_at_max)
{
    char msg[SS_STORE_MSG];
    int n = fill();
    /* A 1 KiB state takes about 2 KiB of pages (3 values per 4 KiB leaf,
     * leaves split half full): 8 MiB hold about 4000, 1 MiB about 450. */
    ck_assert_int_gt(n, 3 * 1024);
    ck_assert_uint_eq(map_size_now(), MAX_MAP);
    /* A batch was refused; single saves fill the last pages. */
    int rc;
    while ((rc = run_op(OP_SAVE, n, 1, msg)) == 0)
        n++;
    ck_assert_int_eq(rc, SS_ERR_FULL);
    ck_assert_int_eq(run_op(OP_SAVE, n, 1, msg), SS_ERR_FULL);
    /* Raw writers (the job queue) get the same answer. */
    ss_store_txn *t = NULL;
    ck_assert_int_eq(ss_store_txn_begin(st, &t, msg), 0);
    ck_assert_int_eq(ss_store_reserve_check(t, 64 * 1024, msg), SS_ERR_FULL);
    ss_store_txn_abort(t);
    for (int i = 0; i < n; i += 211)
        check_key(i);
    rc = run_op(OP_DROP, 0, DROPS, msg);
    ck_assert_msg(rc == 0, "drop at max: %d %s", rc, msg);
    for (int i = 0; i < DROPS / 2; i++) {
        rc = run_op(OP_SAVE, n + i, 1, msg);
        ck_assert_msg(rc == 0, "save %d after drop: %s", i, msg);
    }
    check_key(n);
    check_key(DROPS);
}
END_TEST

/* Without growth (max 0: what ss_store_open does) the map stays at its
 * size: the old --map-size behaviour. */
START_TEST(test_no_growth)
{
    char msg[SS_STORE_MSG];
    close_all();
    open_all(0);
    int i;
    int rc = 0;
    for (i = 0; i < MAXKEYS && rc == 0; i += BATCH)
        rc = run_op(OP_SAVE, i, BATCH, msg);
    ck_assert_int_eq(rc, SS_ERR_FULL);
    ck_assert_int_lt(i, 1024); /* under 1 MiB of states */
    ck_assert_uint_eq(map_size_now(), MAP);
}
END_TEST

/* --max-map-size: default 4 x --map-size, explicit, at least --map-size. */
static int parse(const char *a1, const char *v1, const char *a2, const char *v2,
                 ss_config *cfg)
{
    char *argv[8];
    int argc = 0;
    argv[argc++] = (char *)"statesaver-server";
    argv[argc++] = (char *)"--data";
    argv[argc++] = (char *)"d";
    if (a1) {
        argv[argc++] = (char *)(uintptr_t)a1;
        argv[argc++] = (char *)(uintptr_t)v1;
    }
    if (a2) {
        argv[argc++] = (char *)(uintptr_t)a2;
        argv[argc++] = (char *)(uintptr_t)v2;
    }
    argv[argc] = NULL;
    ss_config_init(cfg);
    FILE *null = fopen("/dev/null", "w");
    int rc = ss_config_parse(cfg, argc, argv, null, null);
    fclose(null);
    return rc;
}

START_TEST(test_flag)
{
    ss_config cfg;
    ck_assert_int_eq(parse(NULL, NULL, NULL, NULL, &cfg), 0);
    ck_assert_uint_eq(cfg.max_map_size, SS_STORE_MAP_GROWTH_DEFAULT * cfg.map_size);
    ck_assert_uint_eq(cfg.max_map_size, 16ull << 30);
    ss_config_clear(&cfg);
    ck_assert_int_eq(parse("--map-size", "1M", NULL, NULL, &cfg), 0);
    ck_assert_uint_eq(cfg.max_map_size, 4u << 20);
    ss_config_clear(&cfg);
    ck_assert_int_eq(parse("--map-size", "1M", "--max-map-size", "8M", &cfg), 0);
    ck_assert_uint_eq(cfg.map_size, 1u << 20);
    ck_assert_uint_eq(cfg.max_map_size, 8u << 20);
    ss_config_clear(&cfg);
    ck_assert_int_eq(parse("--map-size", "2M", "--max-map-size", "2M", &cfg), 0);
    ck_assert_uint_eq(cfg.max_map_size, 2u << 20); /* no growth */
    ss_config_clear(&cfg);
    ck_assert_int_eq(parse("--map-size", "2M", "--max-map-size", "1M", &cfg),
                     SS_ERR_INVALID);
    ss_config_clear(&cfg);
    ck_assert_int_eq(parse("--max-map-size", "512k", NULL, NULL, &cfg), SS_ERR_INVALID);
    ss_config_clear(&cfg);
    ck_assert_int_eq(parse("--max-map-size", "-1", NULL, NULL, &cfg), SS_ERR_INVALID);
    ss_config_clear(&cfg);
}
END_TEST

static Suite *grow_suite(void)
{
    Suite *s = suite_create("store_full_grow");
    TCase *tc = tcase_create("grow");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_grows_past_initial);
    tcase_add_test(tc, test_full_at_max);
    tcase_add_test(tc, test_no_growth);
    suite_add_tcase(s, tc);
    TCase *flag = tcase_create("flag");
    tcase_add_test(flag, test_flag);
    suite_add_tcase(s, flag);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(grow_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
