/* store_read -- the read path: pooled read transactions, fetch, segments,
 * stats, list of sequences and of savers (any thread). */
#include "store.h"

#include <lmdb.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ss_error.h"
#include "ss_log.h"
#include "store_internal.h"

/* ---- read transactions (pooled, MDB_NOTLS) ---- */

static int rd_begin(ss_store *st, MDB_txn **out, char *msg)
{
    MDB_txn *t = NULL;
    pthread_mutex_lock(&st->pool_mu);
    if (st->n_pool)
        t = st->pool[--st->n_pool];
    pthread_mutex_unlock(&st->pool_mu);
    if (t) {
        int rc = mdb_txn_renew(t);
        if (rc == 0) {
            *out = t;
            return 0;
        }
        mdb_txn_abort(t);
    }
    int rc = mdb_txn_begin(st->env, NULL, MDB_RDONLY, &t);
    if (rc != 0)
        return store_mdb_fail(rc, "begin read transaction", msg);
    *out = t;
    return 0;
}

static void rd_end(ss_store *st, MDB_txn *t)
{
    if (!t)
        return;
    mdb_txn_reset(t);
    pthread_mutex_lock(&st->pool_mu);
    if (st->n_pool < st->pool_max) {
        st->pool[st->n_pool++] = t;
        t = NULL;
    }
    pthread_mutex_unlock(&st->pool_mu);
    if (t)
        mdb_txn_abort(t);
}

/* ---- reads ---- */

/* Fill msg for an evicted key from its marker value. */
static void evicted_msg(const MDB_val *v, const uint8_t *key, size_t klen,
                        char *msg)
{
    char ek[96], when[40] = "unknown time";
    ss_keyfmt(ek, sizeof ek, key, klen);
    if (v->mv_size >= EVICT_HDR)
        store_fmt_time(ss_le64_get((const uint8_t *)v->mv_data + 24), when,
                 sizeof when);
    snprintf(msg, SS_STORE_MSG, "key '%s' evicted after idle ttl at %s", ek,
             when);
}

int ss_store_fetch(ss_store *st, const ss_schema *schema, size_t n,
                   const ss_bytes *keys, void *const *out,
                   uint64_t *next_segment, uint64_t *updated_ms,
                   char msg[SS_STORE_MSG])
{
    MDB_txn *t = NULL;
    uint8_t dkb[DBKEY_MAX];
    size_t slen = strlen(schema->saver);
    msg[0] = '\0';
    int ret = rd_begin(st, &t, msg);
    if (ret < 0)
        return ret;
    ret = store_saver_check(t, st, schema, msg);
    if (ret < 0)
        goto out;
    for (size_t k = 0; k < n; k++) {
        ret = store_key_check(&keys[k], msg);
        if (ret < 0)
            goto out;
        size_t dlen;
        bool is_long;
        store_dbkey_make(st, schema->saver, slen, keys[k].data, keys[k].len, dkb,
                   &dlen, &is_long);
        MDB_val dk = {dlen, dkb}, v;
        int rc = mdb_get(t, st->seqs, &dk, &v);
        store_rec r;
        if (rc == 0) {
            ret = store_rec_parse(st, &dk, &v, &r, msg);
            if (ret < 0)
                goto out;
            if (r.states_len != schema->state_bytes) {
                char ek[96];
                ss_keyfmt(ek, sizeof ek, keys[k].data, keys[k].len);
                snprintf(msg, SS_STORE_MSG,
                         "corrupt record for key '%s' (%zu state bytes, schema "
                         "has %zu)", ek, v.mv_size, schema->state_bytes);
                ret = SS_ERR_STORE;
                goto out;
            }
            if (!store_rec_key_matches(&r, is_long, keys[k].data, keys[k].len))
                rc = MDB_NOTFOUND; /* a different long key: not ours */
        }
        if (rc == 0) {
            size_t off = 0;
            for (size_t i = 0; i < schema->n_states; i++) {
                size_t nb = schema->states[i].nbytes;
                memcpy((uint8_t *)out[i] + k * nb, r.states + off, nb);
                off += nb;
            }
            next_segment[k] = r.next_segment;
            updated_ms[k] = r.updated_ms;
            continue;
        }
        if (rc != MDB_NOTFOUND) {
            ret = store_mdb_fail(rc, "read record", msg);
            goto out;
        }
        rc = store_evicted_get(t, st, &dk, is_long, keys[k].data, keys[k].len, &v,
                         msg);
        if (rc < 0) {
            ret = rc;
            goto out;
        }
        if (rc == 0) {
            evicted_msg(&v, keys[k].data, keys[k].len, msg);
            ret = SS_ERR_NOT_FOUND;
            goto out;
        }
        for (size_t i = 0; i < schema->n_states; i++) {
            const ss_state_spec *sp = &schema->states[i];
            uint8_t *dst = (uint8_t *)out[i] + k * sp->nbytes;
            if (sp->initial)
                memcpy(dst, sp->initial, sp->nbytes);
            else
                memset(dst, 0, sp->nbytes);
        }
        next_segment[k] = 0;
        updated_ms[k] = 0;
    }
out:
    rd_end(st, t);
    return ret;
}

int ss_store_segments(ss_store *st, const char *saver, size_t n,
                      const ss_bytes *keys, uint64_t *next_segment)
{
    char msg[SS_STORE_MSG];
    MDB_txn *t = NULL;
    uint8_t dkb[DBKEY_MAX];
    size_t slen = strlen(saver);
    if (slen == 0 || slen > SS_SAVER_NAME_MAX)
        return SS_ERR_INVALID;
    int ret = rd_begin(st, &t, msg);
    if (ret < 0)
        return ret;
    for (size_t k = 0; k < n; k++) {
        next_segment[k] = 0;
        if (keys[k].len == 0 || keys[k].len > SS_STORE_KEY_MAX)
            continue;
        size_t dlen;
        bool is_long;
        store_dbkey_make(st, saver, slen, keys[k].data, keys[k].len, dkb, &dlen,
                   &is_long);
        MDB_val dk = {dlen, dkb}, v;
        int rc = mdb_get(t, st->seqs, &dk, &v);
        store_rec r;
        if (rc == 0) {
            ret = store_rec_parse(st, &dk, &v, &r, msg);
            if (ret < 0)
                break;
            if (store_rec_key_matches(&r, is_long, keys[k].data, keys[k].len))
                next_segment[k] = r.next_segment;
        } else if (rc != MDB_NOTFOUND) {
            ret = store_mdb_fail(rc, "read record", msg);
            break;
        }
    }
    rd_end(st, t);
    return ret;
}

int ss_store_stats_get(ss_store *st, const char *saver, ss_store_stats *out)
{
    char msg[SS_STORE_MSG];
    MDB_txn *t = NULL;
    MDB_stat ms;
    MDB_envinfo ei;
    memset(out, 0, sizeof *out);
    int ret = rd_begin(st, &t, msg);
    if (ret < 0)
        return ret;
    int rc = mdb_stat(t, st->savers, &ms);
    if (rc != 0) {
        ret = store_mdb_fail(rc, "stat", msg);
        goto out;
    }
    out->savers = ms.ms_entries;
    mdb_env_info(st->env, &ei);
    /* Current (grows up to --max-map-size); LMDB's adds the reserve. */
    out->map_size = __atomic_load_n(&st->map_size, __ATOMIC_RELAXED);
    out->map_used = ((uint64_t)ei.me_last_pgno + 1) * ms.ms_psize;
    if (saver && saver[0]) {
        if (!store_saver_declared(t, st, saver, &ret, msg)) {
            if (ret == 0)
                ret = SS_ERR_NOT_FOUND;
            goto out;
        }
        ret = store_counts_get(t, st, saver, &out->sequences, &out->evicted, msg);
        goto out;
    }
    rc = mdb_stat(t, st->seqs, &ms);
    if (rc != 0) {
        ret = store_mdb_fail(rc, "stat", msg);
        goto out;
    }
    out->sequences = ms.ms_entries;
    MDB_cursor *c = NULL;
    rc = mdb_cursor_open(t, st->counts, &c);
    if (rc != 0) {
        ret = store_mdb_fail(rc, "cursor", msg);
        goto out;
    }
    MDB_val k, v;
    for (rc = mdb_cursor_get(c, &k, &v, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(c, &k, &v, MDB_NEXT))
        if (k.mv_size && ((const uint8_t *)k.mv_data)[0] != 0 &&
            v.mv_size == COUNTS_BYTES + CRC_BYTES && store_sealed(&k, &v))
            out->evicted += ss_le64_get((const uint8_t *)v.mv_data + 8);
    mdb_cursor_close(c);
out:
    rd_end(st, t);
    return ret;
}

static int cmp_bytes(const uint8_t *a, size_t al, const uint8_t *b, size_t bl)
{
    int c = memcmp(a, b, al < bl ? al : bl);
    if (c)
        return c;
    return al < bl ? -1 : al > bl;
}

int ss_store_list(ss_store *st, const char *saver, ss_bytes prefix,
                  ss_bytes start_after, size_t limit, ss_store_list_cb cb,
                  void *arg, bool *more)
{
    char msg[SS_STORE_MSG];
    MDB_txn *t = NULL;
    MDB_cursor *c = NULL;
    uint8_t lo[DBKEY_MAX], sa[DBKEY_MAX];
    size_t slen = strlen(saver);
    *more = false;
    if (slen == 0 || slen > SS_SAVER_NAME_MAX || prefix.len > SS_STORE_KEY_MAX ||
        start_after.len > SS_STORE_KEY_MAX)
        return SS_ERR_INVALID;
    if (limit == 0)
        limit = SS_LIST_LIMIT_DEFAULT;
    int ret = rd_begin(st, &t, msg);
    if (ret < 0)
        return ret;
    if (!store_saver_declared(t, st, saver, &ret, msg)) {
        if (ret == 0)
            ret = SS_ERR_NOT_FOUND;
        goto out;
    }
    /* Every DB key of a key starting with prefix starts with base+dprefix:
     * long keys keep their first P bytes visible. */
    size_t pvis = st->maxkey - HASH_BYTES - slen - 1;
    size_t dplen = prefix.len < pvis ? prefix.len : pvis;
    memcpy(lo, saver, slen);
    lo[slen] = 0;
    if (dplen)
        memcpy(lo + slen + 1, prefix.data, dplen);
    size_t lolen = slen + 1 + dplen;
    MDB_val k = {lolen, lo}, v;
    size_t salen = 0;
    if (start_after.len) {
        bool is_long;
        store_dbkey_make(st, saver, slen, start_after.data, start_after.len, sa,
                   &salen, &is_long);
        if (cmp_bytes(sa, salen, lo, lolen) > 0) {
            k.mv_data = sa;
            k.mv_size = salen;
        } else {
            salen = 0; /* start_after sorts before the prefix: ignore */
        }
    }
    int rc = mdb_cursor_open(t, st->seqs, &c);
    if (rc != 0) {
        ret = store_mdb_fail(rc, "cursor", msg);
        goto out;
    }
    size_t emitted = 0;
    for (rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE); rc == 0;
         rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
        if (k.mv_size < lolen || memcmp(k.mv_data, lo, lolen) != 0)
            break;
        if (salen && cmp_bytes(k.mv_data, k.mv_size, sa, salen) == 0)
            continue;
        store_rec r;
        if (store_rec_parse(st, &k, &v, &r, NULL) < 0)
            continue; /* damaged (counted, logged): skip, not fail a listing */
        ss_bytes key;
        if (r.key_len) {
            key.data = r.key;
            key.len = r.key_len;
        } else {
            key.data = (const uint8_t *)k.mv_data + slen + 1;
            key.len = k.mv_size - slen - 1;
        }
        if (key.len < prefix.len ||
            (prefix.len && memcmp(key.data, prefix.data, prefix.len) != 0))
            continue;
        if (emitted == limit) {
            *more = true;
            break;
        }
        ret = cb(arg, &key, r.next_segment, r.updated_ms);
        if (ret != 0)
            goto out;
        emitted++;
    }
    if (rc != 0 && rc != MDB_NOTFOUND)
        ret = store_mdb_fail(rc, "list", msg);
out:
    if (c)
        mdb_cursor_close(c);
    rd_end(st, t);
    return ret;
}

int ss_store_list_savers(ss_store *st, ss_store_saver_cb cb, void *arg)
{
    char msg[SS_STORE_MSG];
    MDB_txn *t = NULL;
    MDB_cursor *c = NULL;
    int ret = rd_begin(st, &t, msg);
    if (ret < 0)
        return ret;
    int rc = mdb_cursor_open(t, st->savers, &c);
    if (rc != 0) {
        ret = store_mdb_fail(rc, "cursor", msg);
        goto out;
    }
    MDB_val k, v;
    for (rc = mdb_cursor_get(c, &k, &v, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
        ss_schema *s = NULL;
        uint64_t seqs = 0, ev = 0;
        if (store_schema_get(st, &k, &v, &s, msg) < 0)
            continue; /* damaged (counted, logged): skip, not fail a listing */
        ret = store_counts_get(t, st, s->saver, &seqs, &ev, msg);
        if (ret == 0)
            ret = cb(arg, s, seqs);
        ss_schema_unref(s);
        if (ret != 0)
            goto out;
    }
    if (rc != MDB_NOTFOUND)
        ret = store_mdb_fail(rc, "list savers", msg);
out:
    if (ret == SS_ERR_STORE)
        SS_LOG(SS_LOG_ERROR, "store: %s", msg);
    if (c)
        mdb_cursor_close(c);
    rd_end(st, t);
    return ret;
}
