/* test_store_damage -- damaged data files (issue 8 item 6): a truncated or
 * 0-byte data.mdb is refused with a message, flipped bytes in stored
 * records give an error naming the key and never wrong data, and a
 * format-1 store (no checksums) is migrated on open. Real LMDB in a temp
 * dir. */
#include <check.h>
#include <lmdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ss_log.h"
#include "store_fixture.h"
#include "store_internal.h"

#define NKEYS 300    /* sequences stored */
#define FLIPS 200    /* bytes flipped */
#define BIGDIM 1500  /* floats: 6000-byte states live in overflow pages */

static char dir[64];
static char path[128];

static void setup(void)
{
    ss_log_threshold = -1; /* damage is logged on purpose: keep quiet */
    fx_mkdtemp(dir);
    snprintf(path, sizeof path, "%s/data.mdb", dir);
}

static void teardown(void)
{
    fx_rmtree(dir);
}

static float state_val(int k, int d)
{
    return (float)k * 4096.0f + (float)d + 0.5f;
}

/* Store NKEYS sequences with dim-float states in one transaction. */
static void populate(int dim)
{
    char msg[SS_STORE_MSG], key[16];
    const fx_state sp[] = {{"s", dim, NULL}};
    ss_store *st = fx_open(dir, 64ull << 20);
    ss_schema *s = fx_declared(st, "d", sp, 1, 0, false);
    float *v = malloc(sizeof(float) * (size_t)dim);
    ss_store_txn *t = NULL;
    ck_assert_int_eq(ss_store_txn_begin(st, &t, msg), 0);
    for (int k = 0; k < NKEYS; k++) {
        for (int d = 0; d < dim; d++)
            v[d] = state_val(k, d);
        const void *ptrs[1] = {v};
        bool applied;
        snprintf(key, sizeof key, "key%04d", k);
        ss_save_item it = {fx_key(key), 0, false, ptrs};
        ck_assert_int_eq(ss_store_save(t, s, 1, &it, &applied, 1000, msg), 0);
    }
    ck_assert_int_eq(ss_store_txn_commit(t, msg), 0);
    free(v);
    ss_schema_unref(s);
    ss_store_close(st);
}

static long file_size(void)
{
    struct stat sb;
    ck_assert_int_eq(stat(path, &sb), 0);
    return (long)sb.st_size;
}

START_TEST(test_truncated_refused)
{
    char msg[SS_STORE_MSG], num[32];
    populate(BIGDIM);
    long half = file_size() / 2;
    ck_assert_int_eq(truncate(path, half), 0);
    ss_store_options o = {.dir = dir, .map_size = 64ull << 20, .sync = false,
                          .max_readers = 0};
    ss_store *st = NULL;
    int rc = ss_store_open_msg(&st, &o, msg);
    ck_assert_int_lt(rc, 0);
    ck_assert_ptr_null(st);
    snprintf(num, sizeof num, "%ld bytes", half);
    ck_assert_msg(strstr(msg, "data.mdb") && strstr(msg, "truncated") &&
                      strstr(msg, num) && strstr(msg, "needs"),
                  "msg: %s", msg);
}
END_TEST

START_TEST(test_empty_refused)
{
    char msg[SS_STORE_MSG];
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fclose(f);
    ss_store_options o = {.dir = dir, .map_size = 64ull << 20, .sync = false,
                          .max_readers = 0};
    ss_store *st = NULL;
    int rc = ss_store_open_msg(&st, &o, msg);
    ck_assert_int_lt(rc, 0);
    ck_assert_ptr_null(st);
    ck_assert_msg(strstr(msg, "data.mdb") && strstr(msg, "0 bytes"), "msg: %s",
                  msg);
    /* A brand-new directory still creates a fresh store. */
    ck_assert_int_eq(unlink(path), 0);
    st = fx_open(dir, 64ull << 20);
    ss_store_close(st);
    ck_assert_int_gt(file_size(), 0);
}
END_TEST

/* Flip FLIPS bytes inside stored records (headers, states, checksums),
 * then fetch every key alone: the exact stored state, or an error naming
 * the key. Keys themselves are left alone: a damaged DB key is not found
 * by a lookup at all (see docs/store-format.md). */
static void flip_and_check(int dim)
{
    char msg[SS_STORE_MSG], key[16];
    size_t sbytes = sizeof(float) * (size_t)dim;
    populate(dim);
    long size = file_size();
    uint8_t *img = malloc((size_t)size);
    FILE *f = fopen(path, "r+b");
    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(fread(img, 1, (size_t)size, f), (size_t)size);
    /* Where each record's state starts: its first 16 bytes are unique to
     * the key. The file may also hold stale copies (pages LMDB split or
     * freed inside the transaction); each flip goes to every copy, so the
     * live one is surely hit. */
    enum { COPIES = 4 };
    size_t (*start)[COPIES] = calloc(NKEYS, sizeof *start);
    int *copies = calloc(NKEYS, sizeof *copies);
    for (int k = 0; k < NKEYS; k++) {
        float head[4];
        for (int d = 0; d < 4; d++)
            head[d] = state_val(k, d);
        uint8_t *p = img;
        while ((p = memmem(p, (size_t)(img + size - p), head, sizeof head))) {
            ck_assert_int_lt(copies[k], COPIES);
            start[k][copies[k]++] = (size_t)(p - img);
            p++;
        }
        ck_assert_msg(copies[k] > 0, "state of key %d not in the file", k);
    }
    srand(8);
    for (int i = 0; i < FLIPS; i++) {
        int k = rand() % NKEYS;
        /* A value is contiguous (in the leaf, or on its overflow pages):
         * the 24-byte header, the state, the 4-byte checksum. */
        size_t off = (size_t)rand() % (REC_HDR + sbytes + CRC_BYTES);
        uint8_t x = (uint8_t)(1 + rand() % 255);
        for (int c = 0; c < copies[k]; c++)
            img[start[k][c] - REC_HDR + off] ^= x;
    }
    ck_assert_int_eq(fseek(f, 0, SEEK_SET), 0);
    ck_assert_uint_eq(fwrite(img, 1, (size_t)size, f), (size_t)size);
    fclose(f);
    free(img);
    free(start);
    free(copies);

    ss_store *st = fx_open(dir, 64ull << 20);
    ss_schema *s = NULL;
    ck_assert_int_eq(ss_store_schema(st, "d", &s), 0);
    float *out = malloc(sbytes);
    int errors = 0;
    for (int k = 0; k < NKEYS; k++) {
        snprintf(key, sizeof key, "key%04d", k);
        ss_bytes kb = fx_key(key);
        void *const outs[1] = {out};
        uint64_t next = 0, upd = 0;
        int rc = ss_store_fetch(st, s, 1, &kb, outs, &next, &upd, msg);
        if (rc == 0) {
            ck_assert_msg(next == 1 && upd == 1000, "%s: next %llu upd %llu",
                          key, (unsigned long long)next,
                          (unsigned long long)upd);
            for (int d = 0; d < dim; d++)
                ck_assert_msg(out[d] == state_val(k, d),
                              "%s: wrong state at %d: %g", key, d,
                              (double)out[d]);
        } else {
            ck_assert_msg(rc == SS_ERR_STORE && strstr(msg, key),
                          "%s: rc %d msg %s", key, rc, msg);
            errors++;
        }
        /* The barrier path reads the record too. */
        uint64_t seg = 7;
        rc = ss_store_segments(st, "d", 1, &kb, &seg);
        ck_assert(rc == 0 ? seg == 1 : rc == SS_ERR_STORE);
    }
    ck_assert_int_gt(errors, 0);
    ck_assert_uint_ge(ss_store_corrupt_records(st), (uint64_t)errors);
    free(out);
    ss_schema_unref(s);
    ss_store_close(st);
}

START_TEST(test_flipped_small)
{
    flip_and_check(64);
}
END_TEST

START_TEST(test_flipped_overflow)
{
    flip_and_check(BIGDIM);
}
END_TEST

/* Format 1's hash of long keys (a copy, to build a format-1 fixture). */
static uint64_t v1_mix64(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    x ^= x >> 31;
    return x;
}

static void v1_key_hash(const uint8_t *p, size_t n, uint8_t out[16])
{
    uint64_t a = 0x9e3779b97f4a7c15ull ^ n, b = 0x6a09e667f3bcc909ull + n;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w = ss_le64_get(p + i);
        a = v1_mix64(a ^ w) + 0x9e3779b97f4a7c15ull;
        b = v1_mix64(b + (w * 0xff51afd7ed558ccdull)) ^ a;
    }
    uint8_t tail[8] = {0};
    memcpy(tail, p + i, n - i);
    uint64_t w = ss_le64_get(tail);
    a = v1_mix64(a ^ w ^ 0x243f6a8885a308d3ull);
    b = v1_mix64(b + w + a);
    ss_le64_put(out, a);
    ss_le64_put(out + 8, b);
}

static int count_cb(void *arg, const ss_bytes *key, uint64_t next,
                    uint64_t upd)
{
    (void)key;
    (void)next;
    (void)upd;
    (*(int *)arg)++;
    return 0;
}

/* A store written by format 1 (values without checksums) opens, is
 * migrated, and reads back exactly; a damaged record found afterwards is
 * still reported. */
START_TEST(test_migrate_v1)
{
    char msg[SS_STORE_MSG];
    const fx_state sp[] = {{"s", 4, NULL}};
    ss_schema *s = fx_schema("m", sp, 1, 0, false);
    MDB_env *env = NULL;
    MDB_txn *t = NULL;
    MDB_dbi savers, seqs, evicted, counts, finished;
    ck_assert_int_eq(mdb_env_create(&env), 0);
    ck_assert_int_eq(mdb_env_set_maxdbs(env, SS_STORE_MAX_DBS), 0);
    ck_assert_int_eq(mdb_env_open(env, dir, 0, 0644), 0);
    ck_assert_int_eq(mdb_txn_begin(env, NULL, 0, &t), 0);
    ck_assert_int_eq(mdb_dbi_open(t, "savers", MDB_CREATE, &savers), 0);
    ck_assert_int_eq(mdb_dbi_open(t, "seqs", MDB_CREATE, &seqs), 0);
    ck_assert_int_eq(mdb_dbi_open(t, "evicted", MDB_CREATE, &evicted), 0);
    ck_assert_int_eq(mdb_dbi_open(t, "counts", MDB_CREATE, &counts), 0);
    ck_assert_int_eq(mdb_dbi_open(t, "finished", MDB_CREATE, &finished), 0);
    uint8_t *buf = NULL;
    size_t len = 0;
    ck_assert_int_eq(ss_schema_pack(s, 1, &buf, &len), 0);
    MDB_val k = {1, "m"}, v = {len, buf};
    ck_assert_int_eq(mdb_put(t, savers, &k, &v, 0), 0);
    free(buf);
    uint8_t cnt[16] = {0};
    ss_le64_put(cnt, 1);
    v.mv_size = sizeof cnt;
    v.mv_data = cnt;
    ck_assert_int_eq(mdb_put(t, counts, &k, &v, 0), 0);
    uint8_t rec[24 + 16] = {1};
    ss_le64_put(rec + 8, 3);    /* next_segment */
    ss_le64_put(rec + 16, 500); /* updated_ms */
    float val[4] = {1.5f, 2.5f, 3.5f, 4.5f};
    memcpy(rec + 24, val, sizeof val);
    MDB_val dk = {4, "m\0k1"};
    v.mv_size = sizeof rec;
    v.mv_data = rec;
    ck_assert_int_eq(mdb_put(t, seqs, &dk, &v, 0), 0);
    uint8_t ev[32] = {1};
    ss_le64_put(ev + 8, 2);
    ss_le64_put(ev + 24, 700);
    MDB_val ek = {4, "m\0k3"};
    v.mv_size = sizeof ev;
    v.mv_data = ev;
    ck_assert_int_eq(mdb_put(t, evicted, &ek, &v, 0), 0);
    uint8_t fin[24] = {1};
    ss_le64_put(fin + 8, 5);
    ss_le64_put(fin + 16, 900);
    MDB_val fk = {4, "m\0k2"};
    v.mv_size = sizeof fin;
    v.mv_data = fin;
    ck_assert_int_eq(mdb_put(t, finished, &fk, &v, 0), 0);
    /* A long key (600 bytes): DB key = saver, NUL, first P bytes, hash. */
    static uint8_t lkey[600];
    memset(lkey, 'L', sizeof lkey);
    size_t maxkey = (size_t)mdb_env_get_maxkeysize(env);
    size_t pvis = maxkey - 16 - 1 - 1;
    uint8_t ldk[512];
    ldk[0] = 'm';
    ldk[1] = 0;
    memcpy(ldk + 2, lkey, pvis);
    v1_key_hash(lkey, sizeof lkey, ldk + 2 + pvis);
    static uint8_t lrec[24 + sizeof lkey + 16];
    lrec[0] = 1;
    ss_le32_put(lrec + 4, sizeof lkey);
    ss_le64_put(lrec + 8, 9);
    ss_le64_put(lrec + 16, 600);
    memcpy(lrec + 24, lkey, sizeof lkey);
    memcpy(lrec + 24 + sizeof lkey, val, sizeof val);
    MDB_val lk = {maxkey, ldk};
    v.mv_size = sizeof lrec;
    v.mv_data = lrec;
    ck_assert_int_eq(mdb_put(t, seqs, &lk, &v, 0), 0);
    cnt[0] = 2;
    v.mv_size = sizeof cnt;
    v.mv_data = cnt;
    ck_assert_int_eq(mdb_put(t, counts, &k, &v, 0), 0);
    ck_assert_int_eq(mdb_txn_commit(t), 0);
    mdb_env_close(env);
    ss_schema_unref(s);

    for (int round = 0; round < 2; round++) { /* migrate, then reopen */
        ss_store *st = fx_open(dir, 64ull << 20);
        ss_schema *c = NULL;
        ck_assert_int_eq(ss_store_schema(st, "m", &c), 0);
        float out[4];
        void *const outs[1] = {out};
        uint64_t next = 0, upd = 0;
        ss_bytes k1 = fx_key("k1"), k2 = fx_key("k2"), k3 = fx_key("k3");
        ck_assert_int_eq(ss_store_fetch(st, c, 1, &k1, outs, &next, &upd, msg), 0);
        ck_assert_uint_eq(next, 3);
        ck_assert_uint_eq(upd, 500);
        ck_assert(memcmp(out, val, sizeof val) == 0);
        ck_assert_int_eq(ss_store_fetch(st, c, 1, &k3, outs, &next, &upd, msg),
                         SS_ERR_NOT_FOUND);
        ck_assert_msg(strstr(msg, "evicted"), "msg: %s", msg);
        ss_bytes lb = {lkey, sizeof lkey};
        memset(out, 0, sizeof out);
        ck_assert_int_eq(ss_store_fetch(st, c, 1, &lb, outs, &next, &upd, msg), 0);
        ck_assert_uint_eq(next, 9);
        ck_assert(memcmp(out, val, sizeof val) == 0);
        int listed = 0;
        bool more = false;
        ck_assert_int_eq(ss_store_list(st, "m", (ss_bytes){NULL, 0},
                                       (ss_bytes){NULL, 0}, 0, count_cb,
                                       &listed, &more), 0);
        ck_assert_int_eq(listed, 2);
        ss_store_stats stats;
        ck_assert_int_eq(ss_store_stats_get(st, "m", &stats), 0);
        ck_assert_uint_eq(stats.sequences, 2);
        /* The finished marker still makes a retried final save applied. */
        ss_store_txn *tx = NULL;
        ck_assert_int_eq(ss_store_txn_begin(st, &tx, msg), 0);
        const void *ptrs[1] = {val};
        ss_save_item it = {k2, 4, true, ptrs};
        bool applied = false;
        ck_assert_int_eq(ss_store_save(tx, c, 1, &it, &applied, 1000, msg), 0);
        ck_assert(applied);
        ss_store_txn_abort(tx);
        ck_assert_uint_eq(ss_store_corrupt_records(st), 0);
        ss_schema_unref(c);
        ss_store_close(st);
    }
}
END_TEST

static Suite *damage_suite(void)
{
    Suite *s = suite_create("store_damage");
    TCase *tc = tcase_create("damage");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_truncated_refused);
    tcase_add_test(tc, test_empty_refused);
    tcase_add_test(tc, test_flipped_small);
    tcase_add_test(tc, test_flipped_overflow);
    tcase_add_test(tc, test_migrate_v1);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(damage_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
