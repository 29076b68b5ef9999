/* store_fixture -- helpers shared by the store and writer Check suites:
 * a temporary LMDB dir, schema declarations and one-shot transactions. */
#ifndef SS_STORE_FIXTURE_H
#define SS_STORE_FIXTURE_H

#include <check.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ss_error.h"
#include "store.h"

/* A spec for fx_schema: name, float32 shape [dim], optional initial. */
typedef struct fx_state {
    const char *name;      /* state name */
    int64_t dim;           /* one dimension */
    const float *initial;  /* dim floats or NULL */
} fx_state;

static inline int fx_rm_cb(const char *p, const struct stat *sb, int flag,
                           struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(p);
}

/* Make a fresh dir under /tmp into buf (size >= 64). */
static inline void fx_mkdtemp(char *buf)
{
    strcpy(buf, "/tmp/ss-store-test-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(buf));
}

static inline void fx_rmtree(const char *dir)
{
    nftw(dir, fx_rm_cb, 16, FTW_DEPTH | FTW_PHYS);
}

static inline ss_store *fx_open(const char *dir, uint64_t map_size)
{
    ss_store_options o = {.dir = dir, .map_size = map_size, .sync = false,
                          .max_readers = 0};
    ss_store *st = NULL;
    int rc = ss_store_open(&st, &o);
    ck_assert_msg(rc == 0, "open %s: %s", dir, ss_strerror(rc));
    return st;
}

/* Build a schema (validated by ss_schema_from_declare). */
static inline int fx_schema_rc(const char *saver, const fx_state *states,
                               size_t n, uint64_t ttl, bool keep_final,
                               ss_schema **out, char msg[SS_STORE_MSG])
{
    Statesaver__V1__DeclareRequest req = STATESAVER__V1__DECLARE_REQUEST__INIT;
    Statesaver__V1__StateSpec specs[8], *ptrs[8];
    Statesaver__V1__Tensor init[8];
    int64_t dims[8];
    ck_assert_uint_le(n, 8);
    for (size_t i = 0; i < n; i++) {
        Statesaver__V1__StateSpec s = STATESAVER__V1__STATE_SPEC__INIT;
        Statesaver__V1__Tensor t = STATESAVER__V1__TENSOR__INIT;
        specs[i] = s;
        init[i] = t;
        dims[i] = states[i].dim;
        specs[i].name = (char *)(uintptr_t)states[i].name;
        specs[i].dtype = STATESAVER__V1__DTYPE__DT_FLOAT32;
        specs[i].shape = &dims[i];
        specs[i].n_shape = 1;
        if (states[i].initial) {
            ss_tensor_borrow(&init[i], STATESAVER__V1__DTYPE__DT_FLOAT32,
                             &dims[i], 1, states[i].initial,
                             (size_t)states[i].dim * 4);
            specs[i].initial = &init[i];
        }
        ptrs[i] = &specs[i];
    }
    req.saver = (char *)(uintptr_t)saver;
    req.states = ptrs;
    req.n_states = n;
    req.idle_ttl_ms = ttl;
    req.keep_final = keep_final;
    return ss_schema_from_declare(&req, out, msg);
}

static inline ss_schema *fx_schema(const char *saver, const fx_state *states,
                                   size_t n, uint64_t ttl, bool keep_final)
{
    char msg[SS_STORE_MSG];
    ss_schema *s = NULL;
    int rc = fx_schema_rc(saver, states, n, ttl, keep_final, &s, msg);
    ck_assert_msg(rc == 0, "schema: %s", msg);
    return s;
}

/* Declare in its own committed transaction; returns the rc. */
static inline int fx_declare(ss_store *st, const ss_schema *s, bool *created,
                             char msg[SS_STORE_MSG])
{
    ss_store_txn *t = NULL;
    int rc = ss_store_txn_begin(st, &t, msg);
    ck_assert_int_eq(rc, 0);
    rc = ss_store_declare(t, s, created, msg);
    if (rc < 0) {
        ss_store_txn_abort(t);
        return rc;
    }
    char m2[SS_STORE_MSG];
    int crc = ss_store_txn_commit(t, m2);
    ck_assert_msg(crc == 0, "commit: %s", m2);
    return 0;
}

/* Declare and return the cached (stored) schema. */
static inline ss_schema *fx_declared(ss_store *st, const char *saver,
                                     const fx_state *states, size_t n,
                                     uint64_t ttl, bool keep_final)
{
    char msg[SS_STORE_MSG];
    bool created;
    ss_schema *s = fx_schema(saver, states, n, ttl, keep_final);
    int rc = fx_declare(st, s, &created, msg);
    ck_assert_msg(rc == 0, "declare: %s", msg);
    ss_schema_unref(s);
    ss_schema *c = NULL;
    ck_assert_int_eq(ss_store_schema(st, saver, &c), 0);
    return c;
}

static inline ss_bytes fx_key(const char *k)
{
    ss_bytes b = {(const uint8_t *)k, strlen(k)};
    return b;
}

#endif
