/* store_evict -- idle expiry of sequences and expiry of finished markers
 * (writer thread only). */
#include "store.h"

#include <lmdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ss_error.h"
#include "ss_log.h"
#include "store_internal.h"

/* Write the eviction marker of the record the cursor is on. */
static int mark_evicted(MDB_txn *t, ss_store *st, const MDB_val *k,
                        const store_rec *r, uint64_t now_ms, char *msg)
{
    MDB_val v = {EVICT_HDR + r->key_len + CRC_BYTES, NULL};
    MDB_val kk = *k;
    int rc = mdb_put(t, st->evicted, &kk, &v, MDB_RESERVE);
    if (rc != 0)
        return store_mdb_fail(rc, "write eviction marker", msg);
    uint8_t *p = v.mv_data;
    p[0] = REC_VERSION;
    p[1] = p[2] = p[3] = 0;
    ss_le32_put(p + 4, (uint32_t)r->key_len);
    ss_le64_put(p + 8, r->next_segment);
    ss_le64_put(p + 16, r->updated_ms);
    ss_le64_put(p + 24, now_ms);
    if (r->key_len)
        memcpy(p + EVICT_HDR, r->key, r->key_len);
    store_seal(k, p, EVICT_HDR + r->key_len);
    return 0;
}

/* Per-saver progress of one eviction pass. */
typedef struct evict_cur {
    char saver[SS_SAVER_NAME_MAX + 1]; /* saver of the last record seen */
    size_t slen;                        /* its length */
    uint64_t ttl;                       /* its idle_ttl_ms (0 = none) */
    uint64_t count;                     /* evicted, not yet in counts */
} evict_cur;

static int evict_flush(MDB_txn *t, ss_store *st, evict_cur *e, char *msg)
{
    if (e->count == 0)
        return 0;
    int rc = store_counts_add(t, st, e->saver, -(int64_t)e->count, e->count, msg);
    if (rc == 0)
        SS_LOG(SS_LOG_INFO, "store: evicted %llu idle sequences of saver '%s'",
               (unsigned long long)e->count, e->saver);
    e->count = 0;
    return rc;
}

/* Delete up to max finished markers older than the retention, examining
 * at most budget of them from where the last call stopped (wrapping
 * around). *expired gets the count. */
static int expire_finished(MDB_txn *t, ss_store *st, uint64_t now_ms,
                           size_t max, size_t budget, uint64_t *expired,
                           char *msg)
{
    MDB_cursor *c = NULL;
    int ret = 0;
    *expired = 0;
    int rc = mdb_cursor_open(t, st->finished, &c);
    if (rc != 0)
        return store_mdb_fail(rc, "cursor", msg);
    MDB_val k = {st->fin_pos_len, st->fin_pos}, v;
    rc = st->fin_pos_len ? mdb_cursor_get(c, &k, &v, MDB_SET_RANGE)
                         : mdb_cursor_get(c, &k, &v, MDB_FIRST);
    size_t examined = 0;
    while (rc == 0 && examined < budget && *expired < max) {
        examined++;
        const uint8_t *p = v.mv_data;
        /* A malformed marker is useless to saves (store_finished_get ignores
         * it): drop it like an expired one. */
        if (v.mv_size < FIN_HDR + CRC_BYTES || p[0] != REC_VERSION ||
            !store_sealed(&k, &v) ||
            store_fin_expired(st, ss_le64_get(p + 16), now_ms)) {
            rc = mdb_cursor_del(c, 0);
            if (rc != 0)
                break;
            (*expired)++;
        }
        rc = mdb_cursor_get(c, &k, &v, MDB_NEXT);
    }
    if (rc == 0) {
        st->fin_pos_len = k.mv_size <= DBKEY_MAX ? k.mv_size : 0;
        if (st->fin_pos_len)
            memcpy(st->fin_pos, k.mv_data, k.mv_size);
    } else if (rc == MDB_NOTFOUND) {
        st->fin_pos_len = 0;
    } else {
        ret = store_mdb_fail(rc, "expire finished markers", msg);
    }
    mdb_cursor_close(c);
    return ret;
}

int ss_store_evict_idle(ss_store_txn *txn, uint64_t now_ms, size_t max,
                        uint64_t *evicted)
{
    ss_store *st = txn->st;
    MDB_txn *t = store_cur_txn(txn);
    MDB_cursor *c = NULL;
    char msg[SS_STORE_MSG] = "";
    evict_cur e = {.slen = 0};
    uint8_t skip[SS_SAVER_NAME_MAX + 2];
    bool have_saver = false;
    int ret = 0;
    *evicted = 0;
    if (max == 0)
        return 0;
    size_t budget = max > SIZE_MAX / SS_STORE_EVICT_SCAN_FACTOR
                        ? SIZE_MAX : max * SS_STORE_EVICT_SCAN_FACTOR;
    int rc = mdb_cursor_open(t, st->seqs, &c);
    if (rc != 0) {
        ret = store_mdb_fail(rc, "cursor", msg);
        goto out;
    }
    MDB_val k = {st->evict_pos_len, st->evict_pos}, v;
    rc = st->evict_pos_len ? mdb_cursor_get(c, &k, &v, MDB_SET_RANGE)
                           : mdb_cursor_get(c, &k, &v, MDB_FIRST);
    size_t examined = 0;
    while (rc == 0 && examined < budget && *evicted < max) {
        examined++;
        const uint8_t *kp = k.mv_data;
        const uint8_t *nul = memchr(kp, 0, k.mv_size);
        size_t slen = nul ? (size_t)(nul - kp) : 0;
        if (!nul || slen == 0 || slen > SS_SAVER_NAME_MAX) {
            rc = mdb_cursor_get(c, &k, &v, MDB_NEXT); /* not ours: skip */
            continue;
        }
        if (!have_saver || slen != e.slen || memcmp(kp, e.saver, slen) != 0) {
            ret = evict_flush(t, st, &e, msg);
            if (ret < 0)
                goto out;
            memcpy(e.saver, kp, slen);
            e.saver[slen] = '\0';
            e.slen = slen;
            ss_schema *s = NULL;
            e.ttl = 0;
            if (ss_store_schema(st, e.saver, &s) == 0) {
                e.ttl = s->idle_ttl_ms;
                ss_schema_unref(s);
            }
            have_saver = true;
        }
        if (e.ttl == 0) {
            /* Jump past every key of this saver: "saver\x01" follows
             * all "saver\0..." keys. */
            memcpy(skip, e.saver, slen);
            skip[slen] = 1;
            k.mv_data = skip;
            k.mv_size = slen + 1;
            rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
            continue;
        }
        /* A damaged record is skipped quietly: it is reported (logged and
         * counted) when a client reads it, not once per sweep. */
        store_rec r;
        if (store_sealed(&k, &v) && store_rec_parse_raw(&v, &r) == 0 &&
            r.updated_ms <= UINT64_MAX - e.ttl &&
            r.updated_ms + e.ttl <= now_ms) {
            ret = mark_evicted(t, st, &k, &r, now_ms, msg);
            if (ret < 0)
                goto out;
            rc = mdb_cursor_del(c, 0);
            if (rc != 0)
                break;
            e.count++;
            (*evicted)++;
        }
        rc = mdb_cursor_get(c, &k, &v, MDB_NEXT);
    }
    if (rc == 0) {
        /* Resume here next time (this record was not examined yet). */
        st->evict_pos_len = k.mv_size <= DBKEY_MAX ? k.mv_size : 0;
        if (st->evict_pos_len)
            memcpy(st->evict_pos, k.mv_data, k.mv_size);
    } else if (rc == MDB_NOTFOUND) {
        st->evict_pos_len = 0; /* reached the end: wrap around */
    } else {
        ret = store_mdb_fail(rc, "evict", msg);
        goto out;
    }
    ret = evict_flush(t, st, &e, msg);
    if (ret < 0)
        goto out;
    uint64_t expired = 0;
    ret = expire_finished(t, st, now_ms, max, budget, &expired, msg);
    if (ret == 0 && expired > 0)
        SS_LOG(SS_LOG_DEBUG, "store: deleted %llu expired finished markers",
               (unsigned long long)expired);
out:
    if (ret < 0)
        SS_LOG(SS_LOG_ERROR, "store: idle eviction failed: %s", msg);
    if (c)
        mdb_cursor_close(c);
    return ret;
}
