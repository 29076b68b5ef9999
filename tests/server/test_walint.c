/* test_walint -- Check suite for the store's side of the write-ahead log:
 * the op codec (wal_records), and through the real writer with a real log
 * in a temporary directory: a failing op leaves no record, each group is
 * one FIRST..LAST run of records, and a data.mdb older than the log's
 * marker is refused. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "recovery.h"
#include "ss_log.h"
#include "store_fixture.h"
#include "wal_records.h"
#include "writer.h"

#define DIM 4

START_TEST(test_codec_roundtrip_and_truncate)
{
    ss_walrec_buf b = {0};
    ck_assert_int_eq(ss_walrec_add(&b, SS_WALOP_PUT, "seqs", 4, "k1", 2, "vvv", 3), 0);
    size_t len = b.len, n = b.n_ops;
    ck_assert_int_eq(ss_walrec_add(&b, SS_WALOP_DEL, "jobs", 4, "k2", 2, NULL, 0), 0);
    ck_assert_uint_eq(b.n_ops, 2);
    size_t pos = 0;
    ss_walrec_op op;
    ck_assert_int_eq(ss_walrec_next(b.data, b.len, &pos, &op), 1);
    ck_assert_int_eq(op.kind, SS_WALOP_PUT);
    ck_assert(op.db_len == 4 && memcmp(op.db, "seqs", 4) == 0);
    ck_assert(op.klen == 2 && memcmp(op.key, "k1", 2) == 0);
    ck_assert(op.vlen == 3 && memcmp(op.val, "vvv", 3) == 0);
    ck_assert_int_eq(ss_walrec_next(b.data, b.len, &pos, &op), 1);
    ck_assert_int_eq(op.kind, SS_WALOP_DEL);
    ck_assert_int_eq(ss_walrec_next(b.data, b.len, &pos, &op), 0);
    /* A rolled-back child: back to the first op. */
    ss_walrec_truncate(&b, len, n);
    ck_assert_uint_eq(b.n_ops, 1);
    ck_assert_uint_eq(b.len, len);
    /* Malformed: a length running past the end, an unknown kind. */
    pos = 0;
    ck_assert_int_eq(ss_walrec_next(b.data, b.len - 1, &pos, &op), SS_ERR_FORMAT);
    b.data[0] = 9;
    pos = 0;
    ck_assert_int_eq(ss_walrec_next(b.data, b.len, &pos, &op), SS_ERR_FORMAT);
    uint8_t hdr[SS_WALREC_HDR];
    unsigned flags;
    uint32_t nops;
    ss_walrec_put_hdr(hdr, SS_WALREC_FIRST | SS_WALREC_LAST, 7);
    ck_assert_int_eq(ss_walrec_parse_hdr(hdr, sizeof hdr, &flags, &nops), 0);
    ck_assert_uint_eq(flags, SS_WALREC_FIRST | SS_WALREC_LAST);
    ck_assert_uint_eq(nops, 7);
    hdr[1] = 0x80;
    ck_assert_int_eq(ss_walrec_parse_hdr(hdr, sizeof hdr, &flags, &nops), SS_ERR_FORMAT);
    ss_walrec_buf_free(&b);
    ss_walrec_buf_free(NULL);
}
END_TEST

/* ---- through the writer ---- */

typedef struct t_op {
    ss_write_op op;  /* first member */
    int idx;         /* key k<idx> */
    bool fail;       /* save, then fail */
    int rc;          /* result */
    bool done;       /* done called */
} t_op;

static ss_schema *schema;
static const fx_state states[] = {{"h", DIM, NULL}};

static int op_run(ss_write_op *op, ss_store_txn *txn, char msg[SS_STORE_MSG])
{
    t_op *t = (t_op *)op;
    char key[16];
    float h[DIM];
    for (int d = 0; d < DIM; d++)
        h[d] = (float)(t->idx * 10 + d);
    const void *sp[1] = {h};
    snprintf(key, sizeof key, "key-%d", t->idx);
    ss_save_item it = {fx_key(key), 0, false, sp};
    bool applied;
    int rc = ss_store_save(txn, schema, 1, &it, &applied, 1000, msg);
    if (rc == 0 && t->fail) {
        snprintf(msg, SS_STORE_MSG, "refused after writing");
        return SS_ERR_CONFLICT;
    }
    return rc;
}

static void op_done(ss_write_op *op, int rc, const char *msg)
{
    (void)msg;
    t_op *t = (t_op *)op;
    t->rc = rc;
    t->done = true;
}

/* What the log holds: keys of puts into seqs, groups and their flags. */
typedef struct scan {
    char keys[64][16]; /* keys put into seqs, in order */
    int n_keys;        /* entries */
    int records;       /* OPS records */
    int firsts, lasts; /* flags seen */
} scan;

static int scan_cb(void *arg, uint64_t lsn, uint16_t type, const uint8_t *p,
                   size_t len)
{
    (void)lsn;
    scan *s = arg;
    unsigned flags;
    uint32_t n;
    ck_assert_uint_eq(type, SS_WALREC_OPS);
    ck_assert_int_eq(ss_walrec_parse_hdr(p, len, &flags, &n), 0);
    s->records++;
    s->firsts += (flags & SS_WALREC_FIRST) != 0;
    s->lasts += (flags & SS_WALREC_LAST) != 0;
    size_t pos = 0;
    ss_walrec_op op;
    uint32_t seen = 0;
    while (ss_walrec_next(p + SS_WALREC_HDR, len - SS_WALREC_HDR, &pos, &op) == 1) {
        seen++;
        if (op.kind == SS_WALOP_PUT && op.db_len == 4 && memcmp(op.db, "seqs", 4) == 0 &&
            s->n_keys < 64) {
            /* DB key: saver '\0' key */
            const uint8_t *z = memchr(op.key, 0, op.klen);
            ck_assert_ptr_nonnull(z);
            size_t kl = op.klen - (size_t)(z + 1 - op.key);
            ck_assert_uint_lt(kl, 16);
            memcpy(s->keys[s->n_keys], z + 1, kl);
            s->keys[s->n_keys++][kl] = '\0';
        }
    }
    ck_assert_uint_eq(seen, n);
    return 0;
}

static void copy_file(const char *dir, const char *from, const char *to)
{
    char a[160], b[160];
    snprintf(a, sizeof a, "%s/%s", dir, from);
    snprintf(b, sizeof b, "%s/%s", dir, to);
    FILE *in = fopen(a, "rb"), *out = fopen(b, "wb");
    ck_assert(in && out);
    char buf[65536];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, in)) > 0)
        ck_assert_uint_eq(fwrite(buf, 1, n, out), n);
    fclose(in);
    ck_assert_int_eq(fclose(out), 0);
}

static void on_stopped(void *arg)
{
    *(bool *)arg = true;
}

START_TEST(test_failed_op_leaves_no_record)
{
    char dir[64], wdir[128];
    ss_log_threshold = SS_LOG_WARN;
    fx_mkdtemp(dir);
    ss_store *st = fx_open(dir, 64ull << 20);
    schema = fx_declared(st, "w", states, 1, 0, false);
    ss_store_options so = {.dir = dir, .map_size = 64ull << 20, .sync = false,
                           .max_readers = 0};
    ss_wal_options wo = {.dir = NULL, .segment_bytes = 0,
                         .sync = SS_WAL_SYNC_FDATASYNC, .truncate_corrupt = false};
    ss_recovery rec;
    char msg[SS_STORE_MSG];
    ck_assert_msg(ss_recovery_run(&st, &so, &wo, true, &rec, msg) == 0, "%s", msg);
    ck_assert_ptr_nonnull(rec.wal);
    copy_file(dir, "data.mdb", "data.mdb.old"); /* synced: a checkpoint */
    ss_store_log_enable(st, true);
    uv_loop_t loop;
    ck_assert_int_eq(uv_loop_init(&loop), 0);
    ss_writer *w = NULL;
    ss_writer_wal ww = {.wal = rec.wal, .sync = true, .sync_interval_ms = 0,
                        .checkpoint_bytes = 0, .checkpoint_interval_ms = 0,
                        .applied_lsn = rec.applied_lsn,
                        .checkpoint_lsn = rec.applied_lsn};
    ck_assert_int_eq(ss_writer_start_wal(&w, st, &loop, &ww), 0);
    t_op ops[3] = {{.idx = 1}, {.idx = 2, .fail = true}, {.idx = 3}};
    for (int i = 0; i < 3; i++) {
        ops[i].op.run = op_run;
        ops[i].op.done = op_done;
        ss_writer_submit(w, &ops[i].op);
    }
    while (!ops[0].done || !ops[1].done || !ops[2].done)
        uv_run(&loop, UV_RUN_ONCE);
    ck_assert_int_eq(ops[0].rc, 0);
    ck_assert_int_eq(ops[1].rc, SS_ERR_CONFLICT);
    ck_assert_int_eq(ops[2].rc, 0);
    ss_writer_stats ws;
    ss_writer_stats_get(w, &ws);
    ck_assert(!ws.wal_failed);
    ck_assert_uint_ge(ws.wal_records, 1);
    ck_assert_uint_gt(ws.applied_lsn, rec.applied_lsn);
    bool stopped = false;
    ss_writer_stop(w, on_stopped, &stopped);
    while (!stopped)
        uv_run(&loop, UV_RUN_ONCE);
    ck_assert_int_eq(uv_loop_close(&loop), 0);
    ss_store_close(st);

    /* The log: every record from the start, read by a second open. */
    snprintf(wdir, sizeof wdir, "%s/wal", dir);
    ss_wal_options ro = wo;
    ro.dir = wdir;
    scan s;
    memset(&s, 0, sizeof s);
    ss_wal *rw = NULL;
    ss_wal_replay_stats rs;
    ck_assert_msg(ss_wal_open(&rw, &ro, 0, scan_cb, &s, &rs, msg, sizeof msg) == 0, "%s", msg);
    ss_wal_free(rw);
    ck_assert_int_ge(s.records, 1);
    ck_assert_int_eq(s.firsts, s.lasts); /* whole groups only */
    bool k1 = false, k3 = false;
    for (int i = 0; i < s.n_keys; i++) {
        ck_assert_msg(strcmp(s.keys[i], "key-2") != 0, "the failed op was logged");
        k1 |= strcmp(s.keys[i], "key-1") == 0;
        k3 |= strcmp(s.keys[i], "key-3") == 0;
    }
    ck_assert(k1 && k3);

    /* The copy of data.mdb from before the writes (applied LSN 0) beside
     * this log, whose marker the stop's checkpoint set: refused. */
    char path[160], old[160];
    snprintf(path, sizeof path, "%s/data.mdb", dir);
    snprintf(old, sizeof old, "%s/data.mdb.old", dir);
    ck_assert_int_eq(rename(old, path), 0);
    snprintf(path, sizeof path, "%s/checkpoint.meta", dir);
    ck_assert_int_eq(unlink(path), 0);
    snprintf(path, sizeof path, "%s/lock.mdb", dir);
    unlink(path);
    st = fx_open(dir, 64ull << 20);
    msg[0] = '\0';
    ck_assert_int_eq(ss_recovery_run(&st, &so, &wo, true, &rec, msg), SS_ERR_FORMAT);
    ck_assert_ptr_null(st);
    ck_assert_msg(strstr(msg, "older than the log") != NULL, "%s", msg);
    fx_rmtree(dir);
    ss_schema_unref(schema);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("walint");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_codec_roundtrip_and_truncate);
    tcase_add_test(tc, test_failed_op_leaves_no_record);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
