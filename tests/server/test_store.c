/* test_store -- Check suite for the LMDB store: schemas, CAS saves, fetch,
 * final/keep_final, finished markers (retry of a final save), idle
 * eviction, drop, list, stats, persistence. */
#include <check.h>
#include <lmdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ss_log.h"
#include "store_fixture.h"

#define DIM 4
#define MAXN 64

static char dir[64];
static ss_store *st;
static const fx_state rnn_states[] = {{"c", DIM, NULL}, {"h", DIM, NULL}};

static void setup(void)
{
    ss_log_threshold = SS_LOG_WARN;
    fx_mkdtemp(dir);
    st = fx_open(dir, 64ull << 20);
}

static void teardown(void)
{
    ss_store_close(st);
    st = NULL;
    fx_rmtree(dir);
}

/* Save n items in one committed transaction (aborted on error). State of
 * item i: c = val + i, h = -(val + i) in every element. */
static int save_n(const ss_schema *s, size_t n, const ss_bytes *keys,
                  const uint64_t *segs, const bool *finals, float val,
                  bool *applied, uint64_t now, char msg[SS_STORE_MSG])
{
    static float c[MAXN][DIM], h[MAXN][DIM];
    const void *ptrs[MAXN][2];
    ss_save_item items[MAXN];
    ck_assert_uint_le(n, MAXN);
    for (size_t i = 0; i < n; i++) {
        for (int d = 0; d < DIM; d++) {
            c[i][d] = val + (float)i;
            h[i][d] = -(val + (float)i);
        }
        ptrs[i][0] = c[i];
        ptrs[i][1] = h[i];
        items[i].key = keys[i];
        items[i].segment = segs[i];
        items[i].final = finals ? finals[i] : false;
        items[i].states = ptrs[i];
    }
    ss_store_txn *t = NULL;
    ck_assert_int_eq(ss_store_txn_begin(st, &t, msg), 0);
    int rc = ss_store_save(t, s, n, items, applied, now, msg);
    if (rc < 0) {
        ss_store_txn_abort(t);
        return rc;
    }
    char m2[SS_STORE_MSG];
    ck_assert_int_eq(ss_store_txn_commit(t, m2), 0);
    return 0;
}

static int save1(const ss_schema *s, const char *key, uint64_t seg, bool final,
                 float val, bool *applied, uint64_t now, char msg[SS_STORE_MSG])
{
    ss_bytes k = fx_key(key);
    return save_n(s, 1, &k, &seg, &final, val, applied, now, msg);
}

/* Fetch one key of the rnn schema; c0/h0 get the first elements. */
static int fetch1(const ss_schema *s, ss_bytes key, uint64_t *next,
                  uint64_t *updated, float *c0, float *h0, char msg[SS_STORE_MSG])
{
    float c[DIM], h[DIM];
    void *const out[2] = {c, h};
    int rc = ss_store_fetch(st, s, 1, &key, out, next, updated, msg);
    if (rc == 0) {
        *c0 = c[0];
        *h0 = h[0];
        for (int d = 1; d < DIM; d++) {
            ck_assert(c[d] == c[0]);
            ck_assert(h[d] == h[0]);
        }
    }
    return rc;
}

static int write_txn_drop(const char *saver, size_t n, const ss_bytes *keys,
                          bool all, uint64_t *dropped, char msg[SS_STORE_MSG])
{
    ss_store_txn *t = NULL;
    ck_assert_int_eq(ss_store_txn_begin(st, &t, msg), 0);
    int rc = ss_store_drop(t, saver, n, keys, all, dropped, msg);
    if (rc < 0) {
        ss_store_txn_abort(t);
        return rc;
    }
    char m2[SS_STORE_MSG];
    ck_assert_int_eq(ss_store_txn_commit(t, m2), 0);
    return 0;
}

static uint64_t evict(uint64_t now, size_t max)
{
    char msg[SS_STORE_MSG];
    ss_store_txn *t = NULL;
    uint64_t n = 0;
    ck_assert_int_eq(ss_store_txn_begin(st, &t, msg), 0);
    ck_assert_int_eq(ss_store_evict_idle(t, now, max, &n), 0);
    ck_assert_int_eq(ss_store_txn_commit(t, msg), 0);
    return n;
}

/* ---- declare ---- */

START_TEST(test_declare_new_same_different)
{
    char msg[SS_STORE_MSG];
    bool created = false;
    ss_schema *a = fx_schema("m", rnn_states, 2, 0, false);
    ck_assert_int_eq(fx_declare(st, a, &created, msg), 0);
    ck_assert(created);
    ss_schema *again = fx_schema("m", rnn_states, 2, 0, false);
    ck_assert_int_eq(fx_declare(st, again, &created, msg), 0);
    ck_assert(!created);

    fx_state other[] = {{"c", DIM, NULL}, {"h", DIM * 2, NULL}};
    ss_schema *b = fx_schema("m", other, 2, 0, false);
    int rc = fx_declare(st, b, &created, msg);
    ck_assert_int_eq(rc, SS_ERR_CONFLICT);
    ck_assert_msg(strstr(msg, "different schema") && strstr(msg, "'h'") &&
                      strstr(msg, "[4] vs [8]"), "msg: %s", msg);
    ss_schema *c = fx_schema("m", rnn_states, 2, 5000, false);
    ck_assert_int_eq(fx_declare(st, c, &created, msg), SS_ERR_CONFLICT);
    ck_assert_msg(strstr(msg, "idle_ttl_ms"), "msg: %s", msg);

    ss_schema *got = NULL;
    ck_assert_int_eq(ss_store_schema(st, "m", &got), 0);
    ck_assert(ss_schema_equal(got, a));
    ck_assert_uint_ne(got->generation, 0);
    ck_assert_uint_eq(got->state_bytes, 2 * DIM * 4);
    ss_schema_unref(got);
    ck_assert_int_eq(ss_store_schema(st, "nope", &got), SS_ERR_NOT_FOUND);
    ck_assert_ptr_null(got);
    ss_schema_unref(a);
    ss_schema_unref(again);
    ss_schema_unref(b);
    ss_schema_unref(c);
}
END_TEST

START_TEST(test_declare_visible_after_commit_only)
{
    char msg[SS_STORE_MSG];
    bool created;
    ss_schema *a = fx_schema("late", rnn_states, 2, 0, false), *got = NULL;
    ss_store_txn *t = NULL;
    ck_assert_int_eq(ss_store_txn_begin(st, &t, msg), 0);
    ck_assert_int_eq(ss_store_declare(t, a, &created, msg), 0);
    ck_assert(created);
    ck_assert_int_eq(ss_store_schema(st, "late", &got), SS_ERR_NOT_FOUND);
    ss_store_txn_abort(t);
    ck_assert_int_eq(ss_store_schema(st, "late", &got), SS_ERR_NOT_FOUND);

    /* A declare rolled back in a child leaves nothing in the cache. */
    ck_assert_int_eq(ss_store_txn_begin(st, &t, msg), 0);
    ck_assert_int_eq(ss_store_txn_child_begin(t, msg), 0);
    ck_assert_int_eq(ss_store_declare(t, a, &created, msg), 0);
    ck_assert_int_eq(ss_store_txn_child_end(t, false, msg), 0);
    ck_assert_int_eq(ss_store_txn_commit(t, msg), 0);
    ck_assert_int_eq(ss_store_schema(st, "late", &got), SS_ERR_NOT_FOUND);

    ck_assert_int_eq(fx_declare(st, a, &created, msg), 0);
    ck_assert(created);
    ck_assert_int_eq(ss_store_schema(st, "late", &got), 0);
    ss_schema_unref(got);
    ss_schema_unref(a);
}
END_TEST

/* ---- schema validation table ---- */

struct bad_decl {
    const char *why;       /* what the case exercises */
    const char *saver;     /* saver name (NULL = 129 x 'a') */
    int n_states;          /* states to generate (-1: 0 states) */
    const char *name0;     /* name of state 0 (NULL = 257 x 'n') */
    const char *name1;     /* name of state 1 when n_states >= 2 */
    int dtype;             /* dtype of state 0 */
    int rank;              /* rank of state 0 */
    int64_t dim;           /* every dim of state 0 */
    int init;              /* 0 none, 1 wrong dtype, 2 wrong shape, 3 short data */
    const char *want;      /* substring of the message */
};

#define F32 STATESAVER__V1__DTYPE__DT_FLOAT32
static const struct bad_decl bad_decls[] = {
    {"empty saver", "", 1, "c", NULL, F32, 1, 4, 0, "saver name is empty"},
    {"saver too long", NULL, 1, "c", NULL, F32, 1, 4, 0, "limit 128"},
    {"no states", "m", -1, "c", NULL, F32, 1, 4, 0, "declares no states"},
    {"too many states", "m", 65, "s", NULL, F32, 1, 4, 0, "limit 64"},
    {"empty state name", "m", 1, "", NULL, F32, 1, 4, 0, "empty name"},
    {"state name too long", "m", 1, NULL, NULL, F32, 1, 4, 0, "limit 256"},
    {"duplicate names", "m", 2, "h", "h", F32, 1, 4, 0, "duplicate state name 'h'"},
    {"dtype invalid", "m", 1, "c", NULL, 0, 1, 4, 0, "unknown dtype 0"},
    {"dtype unknown", "m", 1, "c", NULL, 99, 1, 4, 0, "unknown dtype 99"},
    {"rank too high", "m", 1, "c", NULL, F32, 9, 2, 0, "rank 9 exceeds 8"},
    {"zero dim", "m", 1, "c", NULL, F32, 2, 0, 0, "must be > 0"},
    {"negative dim", "m", 1, "c", NULL, F32, 1, -3, 0, "is -3, must be > 0"},
    {"state too big", "m", 1, "c", NULL, F32, 2, 1 << 20, 0, "exceeds"},
    {"initial dtype", "m", 1, "c", NULL, F32, 1, 4, 1, "initial tensor is int32"},
    {"initial shape", "m", 1, "c", NULL, F32, 1, 4, 2, "shape [5], expected [4]"},
    {"initial data", "m", 1, "c", NULL, F32, 1, 4, 3, "12 data bytes, expected 16"},
};

START_TEST(test_schema_validation)
{
    const struct bad_decl *c = &bad_decls[_i];
    char longname[300], msg[SS_STORE_MSG];
    static char names[80][16];
    Statesaver__V1__DeclareRequest req = STATESAVER__V1__DECLARE_REQUEST__INIT;
    Statesaver__V1__StateSpec specs[80], *ptrs[80];
    Statesaver__V1__Tensor init = STATESAVER__V1__TENSOR__INIT;
    int64_t dims[SS_TENSOR_MAX_RANK + 2], idims[1] = {c->init == 2 ? 5 : 4};
    float data[5] = {1, 2, 3, 4, 5};
    memset(longname, 0, sizeof longname);
    int n = c->n_states < 0 ? 0 : c->n_states;
    for (int d = 0; d < c->rank; d++)
        dims[d] = c->dim;
    for (int i = 0; i < n; i++) {
        Statesaver__V1__StateSpec s = STATESAVER__V1__STATE_SPEC__INIT;
        specs[i] = s;
        snprintf(names[i], sizeof names[i], "s%d", i);
        specs[i].name = names[i];
        specs[i].dtype = F32;
        specs[i].shape = dims;
        specs[i].n_shape = 1;
        ptrs[i] = &specs[i];
    }
    if (n > 0) {
        if (c->name0) {
            specs[0].name = (char *)(uintptr_t)c->name0;
        } else {
            memset(longname, 'n', 257);
            specs[0].name = longname;
        }
        specs[0].dtype = c->dtype;
        specs[0].n_shape = (size_t)c->rank;
        if (n >= 2 && c->name1)
            specs[1].name = (char *)(uintptr_t)c->name1;
        if (c->init) {
            init.dtype = c->init == 1 ? STATESAVER__V1__DTYPE__DT_INT32 : F32;
            init.shape = idims;
            init.n_shape = 1;
            init.data.data = (uint8_t *)data;
            init.data.len = c->init == 2 ? 20 : c->init == 3 ? 12 : 16;
            specs[0].initial = &init;
        }
    }
    char saver[200];
    if (c->saver) {
        snprintf(saver, sizeof saver, "%s", c->saver);
    } else {
        memset(saver, 'a', 129);
        saver[129] = '\0';
    }
    req.saver = saver;
    req.states = ptrs;
    req.n_states = (size_t)n;
    ss_schema *s = (ss_schema *)1;
    int rc = ss_schema_from_declare(&req, &s, msg);
    ck_assert_msg(rc == SS_ERR_INVALID, "%s: rc %d", c->why, rc);
    ck_assert_ptr_null(s);
    ck_assert_msg(strstr(msg, c->want) != NULL, "%s: message '%s' lacks '%s'",
                  c->why, msg, c->want);
    /* Nothing was declared. */
    ss_store_stats stats;
    ck_assert_int_eq(ss_store_stats_get(st, NULL, &stats), 0);
    ck_assert_uint_eq(stats.savers, 0);
}
END_TEST

START_TEST(test_schema_limits_ok)
{
    /* The largest legal names and a rank-8 state are accepted. */
    char saver[SS_SAVER_NAME_MAX + 1], name[SS_STATE_NAME_MAX + 1], msg[SS_STORE_MSG];
    memset(saver, 's', SS_SAVER_NAME_MAX);
    saver[SS_SAVER_NAME_MAX] = '\0';
    memset(name, 'n', SS_STATE_NAME_MAX);
    name[SS_STATE_NAME_MAX] = '\0';
    fx_state one[] = {{name, 3, NULL}};
    ss_schema *s = NULL;
    ck_assert_int_eq(fx_schema_rc(saver, one, 1, 0, false, &s, msg), 0);
    bool created;
    ck_assert_int_eq(fx_declare(st, s, &created, msg), 0);
    ck_assert(created);
    ss_schema_unref(s);
    ss_schema *got = NULL;
    ck_assert_int_eq(ss_store_schema(st, saver, &got), 0);
    ck_assert_str_eq(got->states[0].name, name);
    ss_schema_unref(got);
}
END_TEST

/* ---- initial states, fetch ---- */

START_TEST(test_initial_states)
{
    char msg[SS_STORE_MSG];
    static const float init_h[DIM] = {0.5f, 0.5f, 0.5f, 0.5f};
    static const float zeros[DIM] = {0};
    fx_state st_init[] = {{"c", DIM, NULL}, {"h", DIM, init_h}};
    ss_schema *s = fx_declared(st, "init", st_init, 2, 0, false);
    ck_assert_ptr_null(s->states[0].initial);
    ck_assert_ptr_nonnull(s->states[1].initial);
    uint64_t next = 99, upd = 99;
    float c0 = -1, h0 = -1;
    ck_assert_int_eq(fetch1(s, fx_key("missing"), &next, &upd, &c0, &h0, msg), 0);
    ck_assert_uint_eq(next, 0);
    ck_assert_uint_eq(upd, 0);
    ck_assert(c0 == 0.0f);
    ck_assert(h0 == 0.5f);

    /* An explicit all-zero initial is the same schema as none. */
    fx_state z[] = {{"c", DIM, zeros}, {"h", DIM, init_h}};
    ss_schema *sz = fx_schema("init", z, 2, 0, false);
    bool created = true;
    ck_assert_int_eq(fx_declare(st, sz, &created, msg), 0);
    ck_assert(!created);
    ss_schema_unref(sz);

    /* Fetch of several keys fills rows in order. */
    bool applied;
    ck_assert_int_eq(save1(s, "k1", 0, false, 7.0f, &applied, 1000, msg), 0);
    ss_bytes keys[3] = {fx_key("k0"), fx_key("k1"), fx_key("k2")};
    float c[3 * DIM], h[3 * DIM];
    void *const out[2] = {c, h};
    uint64_t nexts[3], upds[3];
    ck_assert_int_eq(ss_store_fetch(st, s, 3, keys, out, nexts, upds, msg), 0);
    ck_assert(c[0] == 0.0f && h[0] == 0.5f);
    ck_assert(c[DIM] == 7.0f && h[DIM] == -7.0f);
    ck_assert(c[2 * DIM] == 0.0f && h[2 * DIM + 3] == 0.5f);
    ck_assert_uint_eq(nexts[0], 0);
    ck_assert_uint_eq(nexts[1], 1);
    ck_assert_uint_eq(upds[1], 1000);
    uint64_t segs[3];
    ck_assert_int_eq(ss_store_segments(st, "init", 3, keys, segs), 0);
    ck_assert_uint_eq(segs[0], 0);
    ck_assert_uint_eq(segs[1], 1);
    ck_assert_uint_eq(segs[2], 0);

    ss_bytes empty = {(const uint8_t *)"", 0};
    ck_assert_int_eq(fetch1(s, empty, &next, &upd, &c0, &h0, msg), SS_ERR_INVALID);
    ss_schema_unref(s);
}
END_TEST

/* ---- compare-and-set ---- */

START_TEST(test_cas_success_and_retry)
{
    char msg[SS_STORE_MSG];
    ss_schema *s = fx_declared(st, "m", rnn_states, 2, 0, false);
    bool applied = true;
    uint64_t next, upd;
    float c0, h0;
    ck_assert_int_eq(save1(s, "seq", 0, false, 1.0f, &applied, 100, msg), 0);
    ck_assert(!applied);
    ck_assert_int_eq(save1(s, "seq", 1, false, 2.0f, &applied, 200, msg), 0);
    ck_assert(!applied);
    ck_assert_int_eq(fetch1(s, fx_key("seq"), &next, &upd, &c0, &h0, msg), 0);
    ck_assert_uint_eq(next, 2);
    ck_assert_uint_eq(upd, 200);
    ck_assert(c0 == 2.0f && h0 == -2.0f);

    /* Retrying the last save: already applied, record unchanged. */
    ck_assert_int_eq(save1(s, "seq", 1, false, 9.0f, &applied, 300, msg), 0);
    ck_assert(applied);
    ck_assert_int_eq(fetch1(s, fx_key("seq"), &next, &upd, &c0, &h0, msg), 0);
    ck_assert_uint_eq(next, 2);
    ck_assert_uint_eq(upd, 200);
    ck_assert(c0 == 2.0f);
    ss_schema_unref(s);
}
END_TEST

START_TEST(test_cas_conflict_message)
{
    char msg[SS_STORE_MSG];
    ss_schema *s = fx_declared(st, "m", rnn_states, 2, 0, false);
    bool applied;
    ck_assert_int_eq(save1(s, "seq", 0, false, 1.0f, &applied, 100, msg), 0);
    int rc = save1(s, "seq", 5, false, 1.0f, &applied, 100, msg);
    ck_assert_int_eq(rc, SS_ERR_CONFLICT);
    ck_assert_msg(strstr(msg, "'seq'") && strstr(msg, "segment 5") &&
                      strstr(msg, "expected next_segment 5") &&
                      strstr(msg, "found 1"), "msg: %s", msg);
    /* An older segment (not the last one) is a conflict too. */
    ck_assert_int_eq(save1(s, "seq", 1, false, 1.0f, &applied, 100, msg), 0);
    ck_assert_int_eq(save1(s, "seq", 0, false, 1.0f, &applied, 100, msg),
                     SS_ERR_CONFLICT);
    ck_assert_msg(strstr(msg, "found 2"), "msg: %s", msg);
    /* Missing key at segment 3; non-printable bytes are escaped. */
    const char raw[] = {'a', 0x01, 'b', '\'', (char)0xff};
    ss_bytes k = {(const uint8_t *)raw, sizeof raw};
    uint64_t seg = 3;
    rc = save_n(s, 1, &k, &seg, NULL, 1.0f, &applied, 100, msg);
    ck_assert_int_eq(rc, SS_ERR_CONFLICT);
    ck_assert_msg(strstr(msg, "'a\\x01b\\x27\\xff'") && strstr(msg, "found 0"),
                  "msg: %s", msg);
    ss_schema_unref(s);
}
END_TEST

START_TEST(test_batch_atomic)
{
    char msg[SS_STORE_MSG];
    ss_schema *s = fx_declared(st, "m", rnn_states, 2, 0, false);
    bool applied[4];
    uint64_t next, upd;
    float c0, h0;
    ss_bytes keys[3] = {fx_key("a"), fx_key("b"), fx_key("c")};
    uint64_t segs[3] = {0, 0, 7};
    int rc = save_n(s, 3, keys, segs, NULL, 1.0f, applied, 100, msg);
    ck_assert_int_eq(rc, SS_ERR_CONFLICT);
    ck_assert_msg(strstr(msg, "'c'"), "msg: %s", msg);
    for (int i = 0; i < 3; i++) {
        ck_assert_int_eq(fetch1(s, keys[i], &next, &upd, &c0, &h0, msg), 0);
        ck_assert_uint_eq(next, 0);
    }
    /* Failing inside a caller's transaction leaves its earlier work. */
    ss_store_txn *t = NULL;
    float cv[DIM] = {3, 3, 3, 3}, hv[DIM] = {4, 4, 4, 4};
    const void *ptrs[2] = {cv, hv};
    ss_save_item items[2] = {{keys[0], 0, false, ptrs}, {keys[1], 4, false, ptrs}};
    ck_assert_int_eq(ss_store_txn_begin(st, &t, msg), 0);
    ck_assert_int_eq(ss_store_save(t, s, 1, &items[0], applied, 5, msg), 0);
    ck_assert_int_eq(ss_store_save(t, s, 2, items, applied, 5, msg),
                     SS_ERR_CONFLICT);
    ck_assert_int_eq(ss_store_txn_commit(t, msg), 0);
    ck_assert_int_eq(fetch1(s, keys[0], &next, &upd, &c0, &h0, msg), 0);
    ck_assert_uint_eq(next, 1);
    ck_assert(c0 == 3.0f);
    ss_store_stats stats;
    ck_assert_int_eq(ss_store_stats_get(st, "m", &stats), 0);
    ck_assert_uint_eq(stats.sequences, 1);
    ss_schema_unref(s);
}
END_TEST

START_TEST(test_batch_same_key_sequential)
{
    char msg[SS_STORE_MSG];
    ss_schema *s = fx_declared(st, "m", rnn_states, 2, 0, false);
    bool applied[3];
    uint64_t next, upd;
    float c0, h0;
    ss_bytes keys[3] = {fx_key("k"), fx_key("k"), fx_key("k")};
    uint64_t segs[3] = {0, 1, 1};
    ck_assert_int_eq(save_n(s, 3, keys, segs, NULL, 10.0f, applied, 100, msg), 0);
    ck_assert(!applied[0] && !applied[1] && applied[2]);
    ck_assert_int_eq(fetch1(s, keys[0], &next, &upd, &c0, &h0, msg), 0);
    ck_assert_uint_eq(next, 2);
    ck_assert(c0 == 11.0f); /* item 1's state; item 2 changed nothing */
    ck_assert_int_eq(ss_store_stats_get(st, "m", &(ss_store_stats){0}), 0);
    ss_store_stats stats;
    ck_assert_int_eq(ss_store_stats_get(st, "m", &stats), 0);
    ck_assert_uint_eq(stats.sequences, 1);
    ss_schema_unref(s);
}
END_TEST

/* ---- final ---- */

START_TEST(test_final_deletes)
{
    char msg[SS_STORE_MSG];
    ss_schema *s = fx_declared(st, "m", rnn_states, 2, 0, false);
    bool applied;
    uint64_t next, upd;
    float c0, h0;
    ck_assert_int_eq(save1(s, "f", 0, false, 1.0f, &applied, 100, msg), 0);
    ck_assert_int_eq(save1(s, "f", 1, true, 2.0f, &applied, 200, msg), 0);
    ck_assert(!applied);
    ck_assert_int_eq(fetch1(s, fx_key("f"), &next, &upd, &c0, &h0, msg), 0);
    ck_assert_uint_eq(next, 0);
    ck_assert(c0 == 0.0f);
    ss_store_stats stats;
    ck_assert_int_eq(ss_store_stats_get(st, "m", &stats), 0);
    ck_assert_uint_eq(stats.sequences, 0);
    /* The key starts afresh at segment 0. */
    ck_assert_int_eq(save1(s, "f", 0, false, 5.0f, &applied, 300, msg), 0);
    ck_assert_int_eq(fetch1(s, fx_key("f"), &next, &upd, &c0, &h0, msg), 0);
    ck_assert_uint_eq(next, 1);
    ck_assert(c0 == 5.0f);
    /* A one-segment sequence that is final at once stores nothing. */
    ck_assert_int_eq(save1(s, "once", 0, true, 5.0f, &applied, 300, msg), 0);
    ck_assert_int_eq(ss_store_stats_get(st, "m", &stats), 0);
    ck_assert_uint_eq(stats.sequences, 1);
    ss_schema_unref(s);
}
END_TEST

START_TEST(test_keep_final)
{
    char msg[SS_STORE_MSG];
    ss_schema *s = fx_declared(st, "keep", rnn_states, 2, 0, true);
    bool applied;
    uint64_t next, upd;
    float c0, h0;
    ck_assert_int_eq(save1(s, "f", 0, false, 1.0f, &applied, 100, msg), 0);
    ck_assert_int_eq(save1(s, "f", 1, true, 2.0f, &applied, 200, msg), 0);
    ck_assert_int_eq(fetch1(s, fx_key("f"), &next, &upd, &c0, &h0, msg), 0);
    ck_assert_uint_eq(next, 2);
    ck_assert(c0 == 2.0f);
    /* Retrying the final save is safe when the record is kept. */
    ck_assert_int_eq(save1(s, "f", 1, true, 2.0f, &applied, 200, msg), 0);
    ck_assert(applied);
    ss_schema_unref(s);
}
END_TEST

/* ---- idle TTL ---- */

START_TEST(test_ttl_eviction)
{
    char msg[SS_STORE_MSG];
    ss_schema *s = fx_declared(st, "ttl", rnn_states, 2, 1000, false);
    ss_schema *n = fx_declared(st, "forever", rnn_states, 2, 0, false);
    bool applied;
    uint64_t next, upd;
    float c0, h0;
    ck_assert_int_eq(save1(s, "old", 0, false, 1.0f, &applied, 1000, msg), 0);
    ck_assert_int_eq(save1(s, "old", 1, false, 1.0f, &applied, 1000, msg), 0);
    ck_assert_int_eq(save1(s, "new", 0, false, 1.0f, &applied, 1600, msg), 0);
    ck_assert_int_eq(save1(n, "old", 0, false, 1.0f, &applied, 0, msg), 0);

    ck_assert_uint_eq(evict(1999, 100), 0);
    ck_assert_uint_eq(evict(2000, 100), 1);
    ck_assert_int_eq(fetch1(s, fx_key("old"), &next, &upd, &c0, &h0, msg),
                     SS_ERR_NOT_FOUND);
    ck_assert_msg(strstr(msg, "key 'old' evicted after idle ttl at "
                              "1970-01-01T00:00:02.000Z"), "msg: %s", msg);
    ck_assert_int_eq(fetch1(s, fx_key("new"), &next, &upd, &c0, &h0, msg), 0);
    ck_assert_int_eq(fetch1(n, fx_key("old"), &next, &upd, &c0, &h0, msg), 0);
    ck_assert_uint_eq(next, 1);
    ss_store_stats stats;
    ck_assert_int_eq(ss_store_stats_get(st, "ttl", &stats), 0);
    ck_assert_uint_eq(stats.sequences, 1);
    ck_assert_uint_eq(stats.evicted, 1);
    ck_assert_int_eq(ss_store_stats_get(st, NULL, &stats), 0);
    ck_assert_uint_eq(stats.evicted, 1);
    ck_assert_uint_eq(stats.sequences, 2);

    /* Continuing an evicted sequence is refused with the reason. */
    ck_assert_int_eq(save1(s, "old", 2, false, 1.0f, &applied, 3000, msg),
                     SS_ERR_CONFLICT);
    ck_assert_msg(strstr(msg, "evicted") && strstr(msg, "found 0"), "msg: %s", msg);
    /* Restarting at segment 0 clears the marker. */
    ck_assert_int_eq(save1(s, "old", 0, false, 4.0f, &applied, 3000, msg), 0);
    ck_assert_int_eq(fetch1(s, fx_key("old"), &next, &upd, &c0, &h0, msg), 0);
    ck_assert_uint_eq(next, 1);
    ck_assert(c0 == 4.0f);
    ss_schema_unref(s);
    ss_schema_unref(n);
}
END_TEST

START_TEST(test_ttl_eviction_bounded)
{
    char msg[SS_STORE_MSG];
    ss_schema *s = fx_declared(st, "ttl", rnn_states, 2, 10, false);
    bool applied;
    char name[16];
    for (int i = 0; i < 10; i++) {
        snprintf(name, sizeof name, "k%02d", i);
        ck_assert_int_eq(save1(s, name, 0, false, 1.0f, &applied, 0, msg), 0);
    }
    ck_assert_uint_eq(evict(100, 3), 3);
    ck_assert_uint_eq(evict(100, 3), 3);
    ck_assert_uint_eq(evict(100, 100), 4);
    ck_assert_uint_eq(evict(100, 100), 0);
    ss_store_stats stats;
    ck_assert_int_eq(ss_store_stats_get(st, "ttl", &stats), 0);
    ck_assert_uint_eq(stats.sequences, 0);
    ck_assert_uint_eq(stats.evicted, 10);
    ss_schema_unref(s);
}
END_TEST

/* ---- drop ---- */

START_TEST(test_drop_keys_and_all)
{
    char msg[SS_STORE_MSG];
    ss_schema *s = fx_declared(st, "m", rnn_states, 2, 0, false);
    bool applied;
    uint64_t next, upd, dropped = 0;
    float c0, h0;
    ck_assert_int_eq(save1(s, "a", 0, false, 1.0f, &applied, 0, msg), 0);
    ck_assert_int_eq(save1(s, "b", 0, false, 1.0f, &applied, 0, msg), 0);
    ck_assert_int_eq(save1(s, "c", 0, false, 1.0f, &applied, 0, msg), 0);
    ss_bytes dk[2] = {fx_key("a"), fx_key("zz")};
    ck_assert_int_eq(write_txn_drop("m", 2, dk, false, &dropped, msg), 0);
    ck_assert_uint_eq(dropped, 1);
    ck_assert_int_eq(fetch1(s, fx_key("a"), &next, &upd, &c0, &h0, msg), 0);
    ck_assert_uint_eq(next, 0);
    ss_store_stats stats;
    ck_assert_int_eq(ss_store_stats_get(st, "m", &stats), 0);
    ck_assert_uint_eq(stats.sequences, 2);

    ck_assert_int_eq(write_txn_drop("nope", 0, NULL, true, &dropped, msg),
                     SS_ERR_NOT_FOUND);
    ck_assert_msg(strstr(msg, "'nope' is not declared"), "msg: %s", msg);

    ck_assert_int_eq(write_txn_drop("m", 0, NULL, true, &dropped, msg), 0);
    ck_assert_uint_eq(dropped, 2);
    ss_schema *got = NULL;
    ck_assert_int_eq(ss_store_schema(st, "m", &got), SS_ERR_NOT_FOUND);
    ck_assert_int_eq(ss_store_stats_get(st, NULL, &stats), 0);
    ck_assert_uint_eq(stats.savers, 0);
    ck_assert_uint_eq(stats.sequences, 0);
    /* The old schema handle is refused now. */
    ck_assert_int_eq(fetch1(s, fx_key("b"), &next, &upd, &c0, &h0, msg),
                     SS_ERR_NOT_FOUND);
    ck_assert_int_eq(save1(s, "b", 1, false, 1.0f, &applied, 0, msg),
                     SS_ERR_NOT_FOUND);

    /* Redeclare with another schema: fresh, and the stale handle conflicts. */
    fx_state other[] = {{"x", 2, NULL}};
    ss_schema *s2 = fx_declared(st, "m", other, 1, 0, false);
    ck_assert_int_eq(save1(s, "b", 0, false, 1.0f, &applied, 0, msg),
                     SS_ERR_CONFLICT);
    ck_assert_msg(strstr(msg, "redeclared"), "msg: %s", msg);
    float x[2];
    void *const out[1] = {x};
    ss_bytes kb = fx_key("b");
    ck_assert_int_eq(ss_store_fetch(st, s2, 1, &kb, out, &next, &upd, msg), 0);
    ck_assert_uint_eq(next, 0);
    ss_schema_unref(s2);
    ss_schema_unref(s);
}
END_TEST

START_TEST(test_drop_clears_eviction_marker)
{
    char msg[SS_STORE_MSG];
    ss_schema *s = fx_declared(st, "ttl", rnn_states, 2, 10, false);
    bool applied;
    uint64_t next, upd, dropped;
    float c0, h0;
    ck_assert_int_eq(save1(s, "k", 0, false, 1.0f, &applied, 0, msg), 0);
    ck_assert_uint_eq(evict(50, 10), 1);
    ss_bytes k = fx_key("k");
    ck_assert_int_eq(write_txn_drop("ttl", 1, &k, false, &dropped, msg), 0);
    ck_assert_uint_eq(dropped, 1);
    ck_assert_int_eq(fetch1(s, k, &next, &upd, &c0, &h0, msg), 0);
    ck_assert_uint_eq(next, 0);
    ss_schema_unref(s);
}
END_TEST

/* ---- list ---- */

typedef struct listed {
    char keys[32][1100]; /* keys seen (NUL-terminated copies) */
    size_t lens[32];     /* their lengths */
    uint64_t next[32];   /* their next_segment */
    size_t n;            /* entries */
} listed;

static int list_cb(void *arg, const ss_bytes *key, uint64_t next, uint64_t upd)
{
    (void)upd;
    listed *l = arg;
    ck_assert_uint_lt(l->n, 32);
    ck_assert_uint_lt(key->len, 1100);
    memcpy(l->keys[l->n], key->data, key->len);
    l->keys[l->n][key->len] = '\0';
    l->lens[l->n] = key->len;
    l->next[l->n] = next;
    l->n++;
    return 0;
}

START_TEST(test_list_prefix_paging)
{
    char msg[SS_STORE_MSG];
    ss_schema *s = fx_declared(st, "m", rnn_states, 2, 0, false);
    ss_schema *o = fx_declared(st, "m2", rnn_states, 2, 0, false);
    bool applied;
    static char long1[1025], long2[1025];
    memset(long1, 'a', 1024);
    memset(long2, 'a', 1024);
    long2[1023] = 'b'; /* differs only past the LMDB key limit */
    const char *names[] = {"a1", "a2", "a3", "b1", long1, long2};
    for (int i = 0; i < 6; i++)
        ck_assert_int_eq(save1(s, names[i], 0, false, (float)i, &applied, 0, msg), 0);
    ck_assert_int_eq(save1(s, "a2", 1, false, 1.0f, &applied, 0, msg), 0);
    ck_assert_int_eq(save1(o, "a9", 0, false, 1.0f, &applied, 0, msg), 0);

    /* Long keys are distinct sequences. */
    uint64_t next, upd;
    float c0, h0;
    ck_assert_int_eq(fetch1(s, fx_key(long1), &next, &upd, &c0, &h0, msg), 0);
    ck_assert(c0 == 4.0f);
    ck_assert_int_eq(fetch1(s, fx_key(long2), &next, &upd, &c0, &h0, msg), 0);
    ck_assert(c0 == 5.0f);

    /* Page through prefix "a" two at a time. */
    static listed all;
    memset(&all, 0, sizeof all);
    ss_bytes prefix = fx_key("a"), after = {NULL, 0};
    static char last[1100];
    for (int page = 0; page < 10; page++) {
        static listed l;
        memset(&l, 0, sizeof l);
        bool more = false;
        ck_assert_int_eq(ss_store_list(st, "m", prefix, after, 2, list_cb, &l,
                                       &more), 0);
        ck_assert_uint_le(l.n, 2);
        for (size_t i = 0; i < l.n; i++) {
            memcpy(all.keys[all.n], l.keys[i], l.lens[i] + 1);
            all.lens[all.n] = l.lens[i];
            all.next[all.n++] = l.next[i];
        }
        if (!more)
            break;
        ck_assert_uint_eq(l.n, 2);
        memcpy(last, l.keys[1], l.lens[1]);
        after.data = (const uint8_t *)last;
        after.len = l.lens[1];
    }
    ck_assert_uint_eq(all.n, 5); /* a1 a2 a3 long1 long2 */
    ck_assert_str_eq(all.keys[0], "a1");
    ck_assert_str_eq(all.keys[1], "a2");
    ck_assert_uint_eq(all.next[1], 2);
    ck_assert_str_eq(all.keys[2], "a3");
    int seen1 = 0, seen2 = 0;
    for (size_t i = 3; i < 5; i++) {
        ck_assert_uint_eq(all.lens[i], 1024);
        seen1 += strcmp(all.keys[i], long1) == 0;
        seen2 += strcmp(all.keys[i], long2) == 0;
    }
    ck_assert(seen1 == 1 && seen2 == 1);

    /* A prefix longer than the LMDB key limit matches the full key. */
    static listed l2;
    memset(&l2, 0, sizeof l2);
    bool more;
    ss_bytes lp = {(const uint8_t *)long2, 1024};
    ck_assert_int_eq(ss_store_list(st, "m", lp, (ss_bytes){NULL, 0}, 10,
                                   list_cb, &l2, &more), 0);
    ck_assert_uint_eq(l2.n, 1);
    ck_assert(!more);
    ck_assert_str_eq(l2.keys[0], long2);

    /* Everything, default limit; an undeclared saver is NOT_FOUND. */
    memset(&l2, 0, sizeof l2);
    ck_assert_int_eq(ss_store_list(st, "m", (ss_bytes){NULL, 0},
                                   (ss_bytes){NULL, 0}, 0, list_cb, &l2, &more), 0);
    ck_assert_uint_eq(l2.n, 6);
    ck_assert(!more);
    ck_assert_int_eq(ss_store_list(st, "zz", (ss_bytes){NULL, 0},
                                   (ss_bytes){NULL, 0}, 0, list_cb, &l2, &more),
                     SS_ERR_NOT_FOUND);
    ss_schema_unref(s);
    ss_schema_unref(o);
}
END_TEST

typedef struct savers_seen {
    char names[8][32];  /* saver names in callback order */
    uint64_t seqs[8];   /* their sequence counts */
    size_t n;           /* entries */
} savers_seen;

static int saver_cb(void *arg, const ss_schema *s, uint64_t seqs)
{
    savers_seen *v = arg;
    ck_assert_uint_lt(v->n, 8);
    snprintf(v->names[v->n], 32, "%s", s->saver);
    v->seqs[v->n++] = seqs;
    ck_assert_uint_eq(s->n_states, 2);
    return 0;
}

START_TEST(test_list_savers_and_stats)
{
    char msg[SS_STORE_MSG];
    ss_schema *b = fx_declared(st, "beta", rnn_states, 2, 0, false);
    ss_schema *a = fx_declared(st, "alpha", rnn_states, 2, 0, false);
    bool applied;
    ck_assert_int_eq(save1(b, "x", 0, false, 1.0f, &applied, 0, msg), 0);
    ck_assert_int_eq(save1(b, "y", 0, false, 1.0f, &applied, 0, msg), 0);
    ck_assert_int_eq(save1(a, "x", 0, false, 1.0f, &applied, 0, msg), 0);
    savers_seen v;
    memset(&v, 0, sizeof v);
    ck_assert_int_eq(ss_store_list_savers(st, saver_cb, &v), 0);
    ck_assert_uint_eq(v.n, 2);
    ck_assert_str_eq(v.names[0], "alpha");
    ck_assert_uint_eq(v.seqs[0], 1);
    ck_assert_str_eq(v.names[1], "beta");
    ck_assert_uint_eq(v.seqs[1], 2);

    ss_store_stats stats;
    ck_assert_int_eq(ss_store_stats_get(st, NULL, &stats), 0);
    ck_assert_uint_eq(stats.savers, 2);
    ck_assert_uint_eq(stats.sequences, 3);
    ck_assert_uint_eq(stats.map_size, 64ull << 20);
    ck_assert_uint_gt(stats.map_used, 0);
    ck_assert_uint_le(stats.map_used, stats.map_size);
    ck_assert_int_eq(ss_store_stats_get(st, "beta", &stats), 0);
    ck_assert_uint_eq(stats.sequences, 2);
    ck_assert_int_eq(ss_store_stats_get(st, "gamma", &stats), SS_ERR_NOT_FOUND);

    /* Specs for a reply borrow from the schema. */
    Statesaver__V1__StateSpec specs[2];
    Statesaver__V1__Tensor tens[2];
    ss_schema_to_specs(a, specs, tens);
    ck_assert_str_eq(specs[1].name, "h");
    ck_assert_uint_eq(specs[1].n_shape, 1);
    ck_assert_int_eq(specs[1].shape[0], DIM);
    ck_assert_ptr_null(specs[1].initial);
    ss_schema_unref(a);
    ss_schema_unref(b);
}
END_TEST

/* ---- persistence ---- */

START_TEST(test_persistence_reopen)
{
    char msg[SS_STORE_MSG];
    static const float init_c[DIM] = {1, 2, 3, 4};
    fx_state sts[] = {{"c", DIM, init_c}, {"h", DIM, NULL}};
    ss_schema *s = fx_declared(st, "p", sts, 2, 777, true);
    uint64_t gen = s->generation;
    bool applied;
    ck_assert_int_eq(save1(s, "k", 0, false, 3.0f, &applied, 42, msg), 0);
    ss_schema_unref(s);

    /* A second open of the same dir is refused while the first holds it. */
    ss_store_options o = {.dir = dir, .map_size = 64ull << 20, .sync = true};
    ss_store *second = NULL;
    ck_assert_int_eq(ss_store_open(&second, &o), SS_ERR_IO);
    ck_assert_ptr_null(second);

    ss_store_close(st);
    ck_assert_int_eq(ss_store_open(&st, &o), 0);
    s = NULL;
    ck_assert_int_eq(ss_store_schema(st, "p", &s), 0);
    ck_assert_uint_eq(s->generation, gen);
    ck_assert_uint_eq(s->idle_ttl_ms, 777);
    ck_assert(s->keep_final);
    ck_assert_ptr_nonnull(s->states[0].initial);
    uint64_t next, upd;
    float c0, h0;
    ck_assert_int_eq(fetch1(s, fx_key("k"), &next, &upd, &c0, &h0, msg), 0);
    ck_assert_uint_eq(next, 1);
    ck_assert_uint_eq(upd, 42);
    ck_assert(c0 == 3.0f && h0 == -3.0f);
    /* Saves continue with the reloaded schema (generation matches). */
    ck_assert_int_eq(save1(s, "k", 1, false, 4.0f, &applied, 43, msg), 0);
    ss_store_stats stats;
    ck_assert_int_eq(ss_store_stats_get(st, "p", &stats), 0);
    ck_assert_uint_eq(stats.sequences, 1);
    /* A new declare after reopen gets a fresh generation. */
    ss_schema *q = fx_declared(st, "q", rnn_states, 2, 0, false);
    ck_assert_uint_gt(q->generation, gen);
    ss_schema_unref(q);
    ss_schema_unref(s);
}
END_TEST

START_TEST(test_map_full)
{
    /* A tiny map: saving big states fails with SS_ERR_FULL, the rest of
     * the transaction stays usable (the save ran in a child). */
    char msg[SS_STORE_MSG];
    ss_store_close(st);
    st = fx_open(dir, 256u << 10);
    fx_state big[] = {{"c", 16384, NULL}};
    ss_schema *s = fx_declared(st, "big", big, 1, 0, false);
    static float data[16384];
    const void *ptrs[1] = {data};
    int rc = 0;
    char key[16];
    ss_store_txn *t = NULL;
    ck_assert_int_eq(ss_store_txn_begin(st, &t, msg), 0);
    for (int i = 0; i < 64 && rc == 0; i++) {
        snprintf(key, sizeof key, "k%d", i);
        ss_save_item it = {fx_key(key), 0, false, ptrs};
        bool applied;
        ck_assert_int_eq(ss_store_txn_child_begin(t, msg), 0);
        rc = ss_store_save(t, s, 1, &it, &applied, 0, msg);
        ck_assert_int_eq(ss_store_txn_child_end(t, rc == 0, msg + 0), 0);
    }
    ck_assert_int_eq(rc, SS_ERR_FULL);
    ck_assert_msg(strstr(msg, "map is full") && strstr(msg, "--map-size"),
                  "msg: %s", msg);
    ck_assert_int_eq(ss_store_txn_commit(t, msg), 0);
    ss_schema_unref(s);
}
END_TEST

/* ---- finished markers (retry of a final save) ---- */

/* Entries in the store's `finished` database (read straight from LMDB). */
static size_t count_finished(void)
{
    MDB_txn *t = NULL;
    MDB_dbi dbi;
    MDB_stat ms;
    ck_assert_int_eq(mdb_txn_begin(ss_store_env(st), NULL, MDB_RDONLY, &t), 0);
    ck_assert_int_eq(mdb_dbi_open(t, "finished", 0, &dbi), 0);
    ck_assert_int_eq(mdb_stat(t, dbi, &ms), 0);
    mdb_txn_abort(t);
    return ms.ms_entries;
}

/* Save segments 0..last of key at time now, the last one final. */
static void run_sequence(const ss_schema *s, ss_bytes key, uint64_t last,
                         uint64_t now)
{
    char msg[SS_STORE_MSG];
    bool applied = true;
    for (uint64_t seg = 0; seg <= last; seg++) {
        bool final = seg == last;
        int rc = save_n(s, 1, &key, &seg, &final, (float)seg, &applied, now,
                        msg);
        ck_assert_msg(rc == 0, "seg %llu: %s", (unsigned long long)seg, msg);
        ck_assert(!applied);
    }
}

START_TEST(test_final_retry_already_applied)
{
    char msg[SS_STORE_MSG];
    ss_schema *s = fx_declared(st, "m", rnn_states, 2, 0, false);
    bool applied = false;
    uint64_t next, upd;
    float c0, h0;
    run_sequence(s, fx_key("f"), 1, 200);
    ck_assert_uint_eq(count_finished(), 1);
    /* The reply was lost: the same final save again is already applied,
     * as often as it is repeated, and changes nothing. */
    for (int i = 0; i < 2; i++) {
        applied = false;
        ck_assert_int_eq(save1(s, "f", 1, true, 9.0f, &applied, 300, msg), 0);
        ck_assert(applied);
    }
    ck_assert_int_eq(fetch1(s, fx_key("f"), &next, &upd, &c0, &h0, msg), 0);
    ck_assert_uint_eq(next, 0); /* SQSS: the key can be reused */
    ck_assert(c0 == 0.0f);
    ss_store_stats stats;
    ck_assert_int_eq(ss_store_stats_get(st, "m", &stats), 0);
    ck_assert_uint_eq(stats.sequences, 0);
    ck_assert_uint_eq(count_finished(), 1);
    uint64_t seg;
    ss_bytes k = fx_key("f");
    ck_assert_int_eq(ss_store_segments(st, "m", 1, &k, &seg), 0);
    ck_assert_uint_eq(seg, 0);

    /* Long keys: the marker holds the full key, so a key sharing the
     * DB key's visible prefix (differs past the LMDB limit) is not taken
     * for the finished one. */
    static char long1[1025], long2[1025];
    memset(long1, 'q', 1024);
    memset(long2, 'q', 1024);
    long2[1023] = 'r';
    run_sequence(s, fx_key(long1), 2, 400);
    ck_assert_int_eq(save1(s, long1, 2, true, 1.0f, &applied, 500, msg), 0);
    ck_assert(applied);
    int rc = save1(s, long2, 2, true, 1.0f, &applied, 500, msg);
    ck_assert_int_eq(rc, SS_ERR_CONFLICT);
    ck_assert_msg(strstr(msg, "found 0") && !strstr(msg, "finished"),
                  "msg: %s", msg);
    ss_schema_unref(s);
}
END_TEST

START_TEST(test_final_retry_batch)
{
    char msg[SS_STORE_MSG];
    ss_schema *s = fx_declared(st, "m", rnn_states, 2, 0, false);
    bool applied[3];
    uint64_t next, upd;
    float c0, h0;
    ss_bytes keys[2] = {fx_key("a"), fx_key("b")};
    uint64_t segs0[2] = {0, 0}, segs1[2] = {1, 1};
    bool finals[2] = {true, false};
    ck_assert_int_eq(save_n(s, 2, keys, segs0, NULL, 1.0f, applied, 100, msg), 0);
    ck_assert_int_eq(save_n(s, 2, keys, segs1, finals, 2.0f, applied, 200, msg), 0);
    ck_assert(!applied[0] && !applied[1]);
    /* The whole batch again (a client retrying after a lost reply): the
     * final item and the ordinary one are both already applied. */
    ck_assert_int_eq(save_n(s, 2, keys, segs1, finals, 7.0f, applied, 300, msg), 0);
    ck_assert(applied[0] && applied[1]);
    ck_assert_int_eq(fetch1(s, keys[0], &next, &upd, &c0, &h0, msg), 0);
    ck_assert_uint_eq(next, 0);
    ck_assert_int_eq(fetch1(s, keys[1], &next, &upd, &c0, &h0, msg), 0);
    ck_assert_uint_eq(next, 2);
    ck_assert_uint_eq(upd, 200);
    ck_assert(c0 == 3.0f); /* row 1 of the second batch (2.0 + 1) */

    /* Same key twice in one batch: the second final save sees the first
     * one's marker. */
    ss_bytes kk[2] = {fx_key("b"), fx_key("b")};
    uint64_t s22[2] = {2, 2};
    bool ff[2] = {true, true};
    ck_assert_int_eq(save_n(s, 2, kk, s22, ff, 1.0f, applied, 400, msg), 0);
    ck_assert(!applied[0] && applied[1]);
    ck_assert_uint_eq(count_finished(), 2);

    /* A retried batch with one wrong item applies nothing and keeps the
     * markers. */
    ss_bytes k3[3] = {fx_key("new"), fx_key("a"), fx_key("b")};
    uint64_t s3[3] = {0, 1, 1};
    bool f3[3] = {false, true, true};
    ck_assert_int_eq(save_n(s, 3, k3, s3, f3, 1.0f, applied, 500, msg),
                     SS_ERR_CONFLICT);
    ck_assert_msg(strstr(msg, "'b'") && strstr(msg, "finished at next_segment 3"),
                  "msg: %s", msg);
    ck_assert_int_eq(fetch1(s, fx_key("new"), &next, &upd, &c0, &h0, msg), 0);
    ck_assert_uint_eq(next, 0);
    ss_store_stats stats;
    ck_assert_int_eq(ss_store_stats_get(st, "m", &stats), 0);
    ck_assert_uint_eq(stats.sequences, 0);
    ck_assert_uint_eq(count_finished(), 2);
    ss_schema_unref(s);
}
END_TEST

/* Saves of a sequence that finished with final segment 4 at 2000 ms. */
struct after_finish {
    uint64_t segment; /* segment saved */
    bool final;       /* its final flag */
    int rc;           /* expected result */
    bool applied;     /* expected already_applied (rc 0) */
    const char *want; /* substring of the message (conflicts) */
};

static const struct after_finish after_finish_cases[] = {
    {4, true, 0, true, NULL},
    {3, false, SS_ERR_CONFLICT, false,
     "key 'k': save of segment 3 expected next_segment 3, found 0 (finished "
     "at next_segment 5 at 1970-01-01T00:00:02.000Z; save segment 0 to start "
     "again)"},
    {4, false, SS_ERR_CONFLICT, false, "finished at next_segment 5"},
    {3, true, SS_ERR_CONFLICT, false, "finished at next_segment 5"},
    {5, true, SS_ERR_CONFLICT, false, "found 0 (finished"},
    {5, false, SS_ERR_CONFLICT, false, "expected next_segment 5, found 0 (fin"},
    {UINT64_MAX, true, SS_ERR_CONFLICT, false, "finished at next_segment 5"},
    {0, false, 0, false, NULL},
    {0, true, 0, false, NULL},
};

START_TEST(test_after_finish_table)
{
    const struct after_finish *c = &after_finish_cases[_i];
    char msg[SS_STORE_MSG] = "";
    ss_schema *s = fx_declared(st, "m", rnn_states, 2, 0, false);
    run_sequence(s, fx_key("k"), 4, 2000);
    bool applied = !c->applied;
    int rc = save1(s, "k", c->segment, c->final, 6.0f, &applied, 2500, msg);
    ck_assert_msg(rc == c->rc, "case %d: rc %d (%s)", _i, rc, msg);
    if (rc == 0)
        ck_assert_msg(applied == c->applied, "case %d", _i);
    else
        ck_assert_msg(strstr(msg, c->want), "case %d: '%s' lacks '%s'", _i,
                      msg, c->want);
    /* Fetch is unchanged by the marker: initial state, next_segment 0,
     * unless segment 0 started a new (non-final) sequence. */
    uint64_t next, upd;
    float c0, h0;
    ck_assert_int_eq(fetch1(s, fx_key("k"), &next, &upd, &c0, &h0, msg), 0);
    bool restarted = c->segment == 0 && !c->final;
    ck_assert_uint_eq(next, restarted ? 1 : 0);
    ck_assert(c0 == (restarted ? 6.0f : 0.0f));
    /* Segment 0 clears the marker (a new sequence); anything else leaves
     * it for a later retry. */
    ck_assert_uint_eq(count_finished(), c->segment == 0 ? 0 : 1);
    ss_schema_unref(s);
}
END_TEST

START_TEST(test_finished_restart_clears)
{
    char msg[SS_STORE_MSG];
    ss_schema *s = fx_declared(st, "m", rnn_states, 2, 0, false);
    bool applied;
    run_sequence(s, fx_key("k"), 4, 1000);
    ck_assert_int_eq(save1(s, "k", 0, false, 1.0f, &applied, 1100, msg), 0);
    ck_assert(!applied);
    ck_assert_uint_eq(count_finished(), 0);
    /* The old final save is no longer a retry: the new sequence is at 1. */
    ck_assert_int_eq(save1(s, "k", 4, true, 1.0f, &applied, 1200, msg),
                     SS_ERR_CONFLICT);
    ck_assert_msg(strstr(msg, "found 1") && !strstr(msg, "finished"),
                  "msg: %s", msg);
    /* The new sequence finishes; its own final save is retryable. */
    ck_assert_int_eq(save1(s, "k", 1, true, 1.0f, &applied, 1300, msg), 0);
    ck_assert(!applied);
    ck_assert_int_eq(save1(s, "k", 1, true, 1.0f, &applied, 1400, msg), 0);
    ck_assert(applied);
    ck_assert_int_eq(save1(s, "k", 4, true, 1.0f, &applied, 1400, msg),
                     SS_ERR_CONFLICT);
    ck_assert_msg(strstr(msg, "finished at next_segment 2"), "msg: %s", msg);
    /* keep_final savers keep the record instead and write no marker. */
    ss_schema *kf = fx_declared(st, "keep", rnn_states, 2, 0, true);
    run_sequence(kf, fx_key("k"), 2, 1500);
    ck_assert_uint_eq(count_finished(), 1);
    ck_assert_int_eq(save1(kf, "k", 2, true, 1.0f, &applied, 1600, msg), 0);
    ck_assert(applied);
    ss_schema_unref(kf);
    ss_schema_unref(s);
}
END_TEST

START_TEST(test_finished_retention)
{
    char msg[SS_STORE_MSG];
    ss_schema *s = fx_declared(st, "m", rnn_states, 2, 0, false);
    bool applied;
    char name[16];
    ss_store_set_finished_retention(st, 1000);
    /* Ten sequences finish at t=0, one more at t=5000. */
    for (int i = 0; i < 10; i++) {
        snprintf(name, sizeof name, "k%02d", i);
        run_sequence(s, fx_key(name), 1, 0);
    }
    run_sequence(s, fx_key("late"), 1, 5000);
    ck_assert_uint_eq(count_finished(), 11);
    /* Within the retention the final save is a retry... */
    ck_assert_int_eq(save1(s, "k00", 1, true, 1.0f, &applied, 999, msg), 0);
    ck_assert(applied);
    /* ...after it the marker no longer counts, even before cleanup ran. */
    ck_assert_int_eq(save1(s, "k00", 1, true, 1.0f, &applied, 1000, msg),
                     SS_ERR_CONFLICT);
    ck_assert_msg(strstr(msg, "found 0") && !strstr(msg, "finished"),
                  "msg: %s", msg);
    /* The periodic call deletes expired markers, at most max per call,
     * and does not count them as idle evictions. */
    ck_assert_uint_eq(evict(999, 100), 0);
    ck_assert_uint_eq(count_finished(), 11);
    ck_assert_uint_eq(evict(1000, 3), 0);
    ck_assert_uint_eq(count_finished(), 8);
    ck_assert_uint_eq(evict(1000, 3), 0);
    ck_assert_uint_eq(count_finished(), 5);
    ck_assert_uint_eq(evict(5999, 100), 0);
    ck_assert_uint_eq(count_finished(), 1); /* "late" is still young */
    ck_assert_int_eq(save1(s, "late", 1, true, 1.0f, &applied, 5999, msg), 0);
    ck_assert(applied);
    ck_assert_uint_eq(evict(6000, 100), 0);
    ck_assert_uint_eq(count_finished(), 0);
    ss_store_stats stats;
    ck_assert_int_eq(ss_store_stats_get(st, "m", &stats), 0);
    ck_assert_uint_eq(stats.evicted, 0);

    /* 0 restores the default of one hour. */
    ss_store_set_finished_retention(st, 0);
    run_sequence(s, fx_key("d"), 1, 10000);
    ck_assert_int_eq(save1(s, "d", 1, true, 1.0f, &applied,
                           10000 + SS_STORE_FINISHED_RETENTION_MS_DEFAULT - 1,
                           msg), 0);
    ck_assert(applied);
    ck_assert_int_eq(save1(s, "d", 1, true, 1.0f, &applied,
                           10000 + SS_STORE_FINISHED_RETENTION_MS_DEFAULT, msg),
                     SS_ERR_CONFLICT);
    ck_assert_uint_eq(evict(10000 + SS_STORE_FINISHED_RETENTION_MS_DEFAULT - 1,
                            100), 0);
    ck_assert_uint_eq(count_finished(), 1);
    ck_assert_uint_eq(evict(10000 + SS_STORE_FINISHED_RETENTION_MS_DEFAULT,
                            100), 0);
    ck_assert_uint_eq(count_finished(), 0);
    ss_schema_unref(s);
}
END_TEST

START_TEST(test_drop_clears_finished)
{
    char msg[SS_STORE_MSG];
    ss_schema *s = fx_declared(st, "m", rnn_states, 2, 0, false);
    bool applied;
    uint64_t dropped = 99;
    static char longk[1025];
    memset(longk, 'z', 1024);
    run_sequence(s, fx_key("k"), 2, 100);
    run_sequence(s, fx_key("live"), 0, 100); /* final at once: no marker */
    run_sequence(s, fx_key(longk), 1, 100);
    ck_assert_uint_eq(count_finished(), 2);
    /* Dropping a finished key removes the marker; it had no data, so it
     * is not counted as dropped. */
    ss_bytes dk[2] = {fx_key("k"), fx_key(longk)};
    ck_assert_int_eq(write_txn_drop("m", 2, dk, false, &dropped, msg), 0);
    ck_assert_uint_eq(dropped, 0);
    ck_assert_uint_eq(count_finished(), 0);
    ck_assert_int_eq(save1(s, "k", 2, true, 1.0f, &applied, 200, msg),
                     SS_ERR_CONFLICT);
    ck_assert_msg(!strstr(msg, "finished"), "msg: %s", msg);

    /* Dropping the saver removes its markers and no other saver's. */
    ss_schema *o = fx_declared(st, "other", rnn_states, 2, 0, false);
    run_sequence(s, fx_key("k"), 2, 300);
    run_sequence(o, fx_key("k"), 2, 300);
    ck_assert_uint_eq(count_finished(), 2);
    ck_assert_int_eq(write_txn_drop("m", 0, NULL, true, &dropped, msg), 0);
    ck_assert_uint_eq(count_finished(), 1);
    ss_schema *s2 = fx_declared(st, "m", rnn_states, 2, 0, false);
    ck_assert_int_eq(save1(s2, "k", 2, true, 1.0f, &applied, 400, msg),
                     SS_ERR_CONFLICT);
    ck_assert_msg(!strstr(msg, "finished"), "msg: %s", msg);
    ck_assert_int_eq(save1(o, "k", 2, true, 1.0f, &applied, 400, msg), 0);
    ck_assert(applied);
    ss_schema_unref(s2);
    ss_schema_unref(o);
    ss_schema_unref(s);
}
END_TEST

START_TEST(test_finished_nested_and_persistent)
{
    char msg[SS_STORE_MSG];
    ss_schema *s = fx_declared(st, "m", rnn_states, 2, 0, false);
    bool applied;
    uint64_t next, upd;
    float c0, h0;
    ck_assert_int_eq(save1(s, "k", 0, false, 1.0f, &applied, 100, msg), 0);
    /* A final save rolled back with its child transaction leaves the
     * record and no marker. */
    float cv[DIM] = {0}, hv[DIM] = {0};
    const void *ptrs[2] = {cv, hv};
    ss_save_item it = {fx_key("k"), 1, true, ptrs};
    ss_store_txn *t = NULL;
    ck_assert_int_eq(ss_store_txn_begin(st, &t, msg), 0);
    ck_assert_int_eq(ss_store_txn_child_begin(t, msg), 0);
    ck_assert_int_eq(ss_store_save(t, s, 1, &it, &applied, 200, msg), 0);
    ck_assert_int_eq(ss_store_txn_child_end(t, false, msg), 0);
    ck_assert_int_eq(ss_store_txn_commit(t, msg), 0);
    ck_assert_uint_eq(count_finished(), 0);
    ck_assert_int_eq(fetch1(s, fx_key("k"), &next, &upd, &c0, &h0, msg), 0);
    ck_assert_uint_eq(next, 1);

    /* A single final save that conflicts inside a caller's transaction
     * leaves the caller's earlier work. */
    ck_assert_int_eq(ss_store_txn_begin(st, &t, msg), 0);
    ss_save_item first = {fx_key("x"), 0, false, ptrs};
    ck_assert_int_eq(ss_store_save(t, s, 1, &first, &applied, 200, msg), 0);
    ss_save_item bad = {fx_key("k"), 7, true, ptrs};
    ck_assert_int_eq(ss_store_save(t, s, 1, &bad, &applied, 200, msg),
                     SS_ERR_CONFLICT);
    ck_assert_int_eq(ss_store_save(t, s, 1, &it, &applied, 200, msg), 0);
    ck_assert_int_eq(ss_store_txn_commit(t, msg), 0);
    ck_assert_int_eq(fetch1(s, fx_key("x"), &next, &upd, &c0, &h0, msg), 0);
    ck_assert_uint_eq(next, 1);
    ck_assert_uint_eq(count_finished(), 1);

    /* Markers are durable: a retry after a server restart still works. */
    ss_store_close(st);
    st = fx_open(dir, 64ull << 20);
    ck_assert_int_eq(save1(s, "k", 1, true, 1.0f, &applied, 300, msg), 0);
    ck_assert(applied);
    ss_schema_unref(s);
}
END_TEST

/* One save of the one-state "big" schema in its own transaction;
 * commits on success, aborts otherwise. */
static int big_save(const ss_schema *s, const char *key, uint64_t seg,
                    bool final, const void *const *ptrs, bool *applied,
                    uint64_t now, char msg[SS_STORE_MSG])
{
    ss_save_item it = {fx_key(key), seg, final, ptrs};
    ss_store_txn *t = NULL;
    ck_assert_int_eq(ss_store_txn_begin(st, &t, msg), 0);
    int rc = ss_store_save(t, s, 1, &it, applied, now, msg);
    if (rc < 0) {
        ss_store_txn_abort(t);
        return rc;
    }
    return ss_store_txn_commit(t, msg);
}

START_TEST(test_finished_map_full)
{
    /* Fill a tiny map, then end sequences: each final save either fits
     * (record gone, marker written, retry already applied) or fails with
     * SS_ERR_FULL and changes nothing -- never a deleted record without
     * its marker. */
    char msg[SS_STORE_MSG];
    ss_store_close(st);
    st = fx_open(dir, 256u << 10);
    fx_state big[] = {{"c", 4096, NULL}};
    ss_schema *s = fx_declared(st, "big", big, 1, 0, false);
    static float data[4096];
    const void *ptrs[1] = {data};
    void *const out[1] = {data};
    bool applied;
    char key[16];
    int rc = 0, filled = 0;
    for (; filled < 256; filled++) {
        snprintf(key, sizeof key, "k%d", filled);
        rc = big_save(s, key, 0, false, ptrs, &applied, 0, msg);
        if (rc != 0)
            break;
    }
    ck_assert_int_eq(rc, SS_ERR_FULL);
    ck_assert_int_ge(filled, 2);
    int oks = 0, fails = 0;
    for (int i = 0; i < filled; i++) {
        snprintf(key, sizeof key, "k%d", i);
        rc = big_save(s, key, 1, true, ptrs, &applied, 10, msg);
        uint64_t next, upd;
        ss_bytes k = fx_key(key);
        char m2[SS_STORE_MSG];
        ck_assert_int_eq(ss_store_fetch(st, s, 1, &k, out, &next, &upd, m2), 0);
        if (rc == 0) {
            oks++;
            ck_assert_uint_eq(next, 0);
            ck_assert_int_eq(big_save(s, key, 1, true, ptrs, &applied, 20, msg),
                             0);
            ck_assert(applied);
        } else {
            fails++;
            ck_assert_msg(rc == SS_ERR_FULL, "rc %d: %s", rc, msg);
            ck_assert_uint_eq(next, 1); /* the record is intact */
        }
    }
    ck_assert_int_eq(oks + fails, filled);
    ss_schema_unref(s);
}
END_TEST

START_TEST(test_finished_map_full_in_txn)
{
    /* In one transaction, small records fill the map; then the final
     * save of one of them can delete it in place (its page is already
     * dirty) but finds no page for the marker: it must fail as a whole and
     * leave the record. */
    char msg[SS_STORE_MSG];
    ss_store_close(st);
    st = fx_open(dir, 256u << 10);
    ss_schema *s = fx_declared(st, "m", rnn_states, 2, 0, false);
    float cv[DIM] = {1, 1, 1, 1}, hv[DIM] = {2, 2, 2, 2};
    const void *ptrs[2] = {cv, hv};
    char key[32];
    bool applied;
    int rc = 0, filled = 0;
    ss_store_txn *t = NULL;
    ck_assert_int_eq(ss_store_txn_begin(st, &t, msg), 0);
    for (; filled < 100000 && rc == 0; filled++) {
        snprintf(key, sizeof key, "key-%06d", filled);
        ss_save_item it = {fx_key(key), 0, false, ptrs};
        char m2[SS_STORE_MSG];
        ck_assert_int_eq(ss_store_txn_child_begin(t, m2), 0);
        rc = ss_store_save(t, s, 1, &it, &applied, 0, msg);
        ck_assert_int_eq(ss_store_txn_child_end(t, rc == 0, m2), 0);
    }
    filled--;
    ck_assert_int_eq(rc, SS_ERR_FULL);
    MDB_dbi seqs;
    ck_assert_int_eq(mdb_dbi_open(ss_store_txn_mdb(t), "seqs", 0, &seqs), 0);
    int fails = 0;
    for (int i = filled - 1; i >= 0 && i >= filled - 20; i--) {
        snprintf(key, sizeof key, "key-%06d", i);
        ss_save_item fin = {fx_key(key), 1, true, ptrs};
        rc = ss_store_save(t, s, 1, &fin, &applied, 5, msg);
        /* The record as this transaction sees it (DB key saver\0key). */
        char dbk[64];
        int dl = snprintf(dbk, sizeof dbk, "m%c%s", 0, key);
        MDB_val k = {(size_t)dl, dbk}, v;
        int grc = mdb_get(ss_store_txn_mdb(t), seqs, &k, &v);
        if (rc == 0) {
            ck_assert_int_eq(grc, MDB_NOTFOUND);
        } else {
            ck_assert_msg(rc == SS_ERR_FULL, "rc %d: %s", rc, msg);
            ck_assert_msg(grc == 0, "%s: record deleted by a failed save", key);
            fails++;
        }
    }
    /* With no page left, at least the first marker cannot be written. */
    ck_assert_int_gt(fails, 0);
    ss_store_txn_abort(t);
    ss_schema_unref(s);
}
END_TEST


static Suite *store_suite(void)
{
    Suite *s = suite_create("store");
    TCase *tc = tcase_create("store");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_declare_new_same_different);
    tcase_add_test(tc, test_declare_visible_after_commit_only);
    tcase_add_loop_test(tc, test_schema_validation, 0,
                        (int)(sizeof bad_decls / sizeof bad_decls[0]));
    tcase_add_test(tc, test_schema_limits_ok);
    tcase_add_test(tc, test_initial_states);
    tcase_add_test(tc, test_cas_success_and_retry);
    tcase_add_test(tc, test_cas_conflict_message);
    tcase_add_test(tc, test_batch_atomic);
    tcase_add_test(tc, test_batch_same_key_sequential);
    tcase_add_test(tc, test_final_deletes);
    tcase_add_test(tc, test_keep_final);
    tcase_add_test(tc, test_ttl_eviction);
    tcase_add_test(tc, test_ttl_eviction_bounded);
    tcase_add_test(tc, test_drop_keys_and_all);
    tcase_add_test(tc, test_drop_clears_eviction_marker);
    tcase_add_test(tc, test_list_prefix_paging);
    tcase_add_test(tc, test_list_savers_and_stats);
    tcase_add_test(tc, test_persistence_reopen);
    tcase_add_test(tc, test_map_full);
    tcase_add_test(tc, test_final_retry_already_applied);
    tcase_add_test(tc, test_final_retry_batch);
    tcase_add_loop_test(tc, test_after_finish_table, 0,
                        (int)(sizeof after_finish_cases /
                              sizeof after_finish_cases[0]));
    tcase_add_test(tc, test_finished_restart_clears);
    tcase_add_test(tc, test_finished_retention);
    tcase_add_test(tc, test_drop_clears_finished);
    tcase_add_test(tc, test_finished_nested_and_persistent);
    tcase_add_test(tc, test_finished_map_full);
    tcase_add_test(tc, test_finished_map_full_in_txn);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(store_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
