/* store_write -- the write path: declare, compare-and-set save, drop
 * (writer thread only). */
#include "store.h"

#include <lmdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ss_error.h"
#include "ss_log.h"
#include "store_internal.h"

/* ---- writes ---- */

int ss_store_declare(ss_store_txn *txn, const ss_schema *schema, bool *created,
                     char msg[SS_STORE_MSG])
{
    ss_store *st = txn->st;
    MDB_txn *t = store_cur_txn(txn);
    ss_schema *copy = NULL;
    int ret = 0;
    msg[0] = '\0';
    *created = false;
    MDB_val k = {strlen(schema->saver), schema->saver}, v;
    int rc = mdb_get(t, st->savers, &k, &v);
    if (rc == 0) {
        ss_schema *old = NULL;
        ret = store_schema_get(st, &k, &v, &old, msg);
        if (ret < 0)
            return ret;
        if (!ss_schema_equal(old, schema)) {
            char diff[160];
            ss_schema_diff(old, schema, diff, sizeof diff);
            snprintf(msg, SS_STORE_MSG,
                     "saver '%.64s' already declared with a different schema "
                     "(stored vs requested: %.100s)", schema->saver, diff);
            ret = SS_ERR_CONFLICT;
        }
        ss_schema_unref(old);
        return ret;
    }
    if (rc != MDB_NOTFOUND)
        return store_mdb_fail(rc, "read saver", msg);
    uint64_t gen = st->next_gen++;
    ret = store_schema_put(t, st, schema, gen, &copy, msg);
    if (ret < 0)
        goto out;
    /* A stale counts entry cannot exist (drop removes it); start at 0. */
    uint8_t zero[COUNTS_BYTES + CRC_BYTES] = {0};
    MDB_val cv = {sizeof zero, zero};
    store_seal(&k, zero, COUNTS_BYTES);
    rc = mdb_put(t, st->counts, &k, &cv, 0);
    if (rc != 0) {
        ret = store_mdb_fail(rc, "store counts", msg);
        goto out;
    }
    ret = store_pend_push(txn, copy, NULL);
    if (ret < 0)
        goto out;
    copy = NULL;
    *created = true;
out:
    if (ret == SS_ERR_NOMEM && !msg[0])
        snprintf(msg, SS_STORE_MSG, "out of memory");
    ss_schema_unref(copy);
    return ret;
}

static int conflict(const ss_save_item *it, uint64_t found, const MDB_val *ev,
                    const store_fin_mark *fin, char *msg)
{
    char ek[96], when[40];
    ss_keyfmt(ek, sizeof ek, it->key.data, it->key.len);
    if (fin) {
        store_fmt_time(fin->finished_ms, when, sizeof when);
        snprintf(msg, SS_STORE_MSG,
                 "key '%s': save of segment %llu expected next_segment %llu, "
                 "found 0 (finished at next_segment %llu at %.29s; save segment "
                 "0 to start again)", ek,
                 (unsigned long long)it->segment,
                 (unsigned long long)it->segment,
                 (unsigned long long)fin->next_segment, when);
    } else if (ev) {
        store_fmt_time(ev->mv_size >= EVICT_HDR
                     ? ss_le64_get((const uint8_t *)ev->mv_data + 24) : 0,
                 when, sizeof when);
        snprintf(msg, SS_STORE_MSG,
                 "key '%s': save of segment %llu expected next_segment %llu, "
                 "found 0 (evicted after idle ttl at %s; save segment 0 to "
                 "restart)", ek, (unsigned long long)it->segment,
                 (unsigned long long)it->segment, when);
    } else {
        snprintf(msg, SS_STORE_MSG,
                 "key '%s': save of segment %llu expected next_segment %llu, "
                 "found %llu", ek, (unsigned long long)it->segment,
                 (unsigned long long)it->segment, (unsigned long long)found);
    }
    return SS_ERR_CONFLICT;
}

/* One CAS step. *dseqs tracks records created (+1) and deleted (-1). */
static int save_one(ss_store_txn *txn, MDB_txn *t, const ss_schema *schema,
                    size_t slen, const ss_save_item *it, bool *applied,
                    uint64_t now_ms, int64_t *dseqs, char *msg)
{
    ss_store *st = txn->st;
    uint8_t dkb[DBKEY_MAX];
    size_t dlen;
    bool is_long;
    int ret = store_key_check(&it->key, msg);
    if (ret < 0)
        return ret;
    store_dbkey_make(st, schema->saver, slen, it->key.data, it->key.len, dkb, &dlen,
               &is_long);
    MDB_val dk = {dlen, dkb}, v;
    int rc = mdb_get(t, st->seqs, &dk, &v);
    bool found = rc == 0;
    uint64_t cur = 0;
    if (rc != 0 && rc != MDB_NOTFOUND)
        return store_mdb_fail(rc, "read record", msg);
    if (found) {
        store_rec r;
        ret = store_rec_parse(st, &dk, &v, &r, msg);
        if (ret < 0)
            return ret;
        if (r.states_len != schema->state_bytes) {
            snprintf(msg, SS_STORE_MSG, "corrupt record (%zu bytes)", v.mv_size);
            return SS_ERR_STORE;
        }
        if (!store_rec_key_matches(&r, is_long, it->key.data, it->key.len)) {
            char ek[96];
            ss_keyfmt(ek, sizeof ek, it->key.data, it->key.len);
            snprintf(msg, SS_STORE_MSG,
                     "key '%s' collides with another long key's hash", ek);
            return SS_ERR_CONFLICT;
        }
        cur = r.next_segment;
    }
    *applied = false;
    if (found && it->segment != UINT64_MAX && cur == it->segment + 1) {
        *applied = true;
        return 0;
    }
    store_fin_mark fin;
    int has_fin = 1;
    if (!found && it->segment != 0) {
        has_fin = store_finished_get(t, st, &dk, is_long, it->key.data, it->key.len,
                               now_ms, &fin, msg);
        if (has_fin < 0)
            return has_fin;
        if (has_fin == 0 && it->final && it->segment != UINT64_MAX &&
            fin.next_segment == it->segment + 1) {
            *applied = true; /* retry of the final save that ended it */
            return 0;
        }
    }
    if (cur != it->segment || it->segment == UINT64_MAX) {
        MDB_val ev;
        if (!found) {
            if (has_fin == 0)
                return conflict(it, cur, NULL, &fin, msg);
            rc = store_evicted_get(t, st, &dk, is_long, it->key.data, it->key.len,
                             &ev, msg);
            if (rc < 0)
                return rc;
            return conflict(it, cur, rc == 0 ? &ev : NULL, NULL, msg);
        }
        return conflict(it, cur, NULL, NULL, msg);
    }
    if (!found) {
        /* Segment 0 of a key without a record: (re)start. Clear any
         * eviction marker so fetch no longer reports NOT_FOUND, and any
         * finished marker so the new sequence's saves are judged alone. */
        rc = mdb_del(t, st->evicted, &dk, NULL);
        if (rc != 0 && rc != MDB_NOTFOUND)
            return store_mdb_fail(rc, "clear eviction marker", msg);
        rc = mdb_del(t, st->finished, &dk, NULL);
        if (rc != 0 && rc != MDB_NOTFOUND)
            return store_mdb_fail(rc, "clear finished marker", msg);
    }
    if (it->final && !schema->keep_final) {
        if (found) {
            rc = mdb_del(t, st->seqs, &dk, NULL);
            if (rc != 0)
                return store_mdb_fail(rc, "delete final record", msg);
            (*dseqs)--;
            /* Remember the end so a retry of this very save (reply lost)
             * reports already_applied instead of a conflict. */
            size_t fkl = is_long ? it->key.len : 0;
            MDB_val fv = {FIN_HDR + fkl + CRC_BYTES, NULL};
            rc = mdb_put(t, st->finished, &dk, &fv, MDB_RESERVE);
            if (rc != 0)
                return store_mdb_fail(rc, "write finished marker", msg);
            uint8_t *fp = fv.mv_data;
            fp[0] = REC_VERSION;
            fp[1] = fp[2] = fp[3] = 0;
            ss_le32_put(fp + 4, (uint32_t)fkl);
            ss_le64_put(fp + 8, it->segment + 1);
            ss_le64_put(fp + 16, now_ms);
            if (fkl)
                memcpy(fp + FIN_HDR, it->key.data, fkl);
            store_seal(&dk, fp, FIN_HDR + fkl);
            /* A marker is a save's data: it may not use the reserve
             * (ss_store_save runs final items nested, so this rolls back). */
            store_space_note(txn, fv.mv_size);
            ret = store_space_check(txn, 0, msg);
            if (ret < 0)
                return ret;
        }
        return 0;
    }
    size_t kl = is_long ? it->key.len : 0;
    v.mv_size = REC_HDR + kl + schema->state_bytes + CRC_BYTES;
    v.mv_data = NULL;
    rc = mdb_put(t, st->seqs, &dk, &v, MDB_RESERVE);
    if (rc != 0)
        return store_mdb_fail(rc, "write record", msg);
    uint8_t *p = v.mv_data;
    p[0] = REC_VERSION;
    p[1] = 0;
    p[2] = p[3] = 0;
    ss_le32_put(p + 4, (uint32_t)kl);
    ss_le64_put(p + 8, it->segment + 1);
    ss_le64_put(p + 16, now_ms);
    p += REC_HDR;
    if (kl) {
        memcpy(p, it->key.data, kl);
        p += kl;
    }
    for (size_t i = 0; i < schema->n_states; i++) {
        size_t nb = schema->states[i].nbytes;
        memcpy(p, it->states[i], nb);
        p += nb;
    }
    store_seal(&dk, v.mv_data, v.mv_size - CRC_BYTES);
    /* ss_store_save nests whenever the map is near full, so a refusal
     * here rolls the put back. */
    store_space_note(txn, v.mv_size);
    ret = store_space_check(txn, 0, msg);
    if (ret < 0)
        return ret;
    if (!found)
        (*dseqs)++;
    return 0;
}

int ss_store_save(ss_store_txn *txn, const ss_schema *schema, size_t n,
                  const ss_save_item *items, bool *already_applied,
                  uint64_t now_ms, char msg[SS_STORE_MSG])
{
    ss_store *st = txn->st;
    size_t slen = strlen(schema->saver);
    int64_t dseqs = 0;
    bool nested = false;
    msg[0] = '\0';
    if (n == 0)
        return 0;
    int ret = store_saver_check(store_cur_txn(txn), st, schema, msg);
    if (ret < 0)
        return ret;
    /* A failure after some items were written must leave nothing behind.
     * A single item that is neither final nor segment 0 writes only its
     * record (after every check), so it needs no child transaction; the
     * others may write twice (clear a marker and write the record; delete
     * the record and write a finished marker) and the second can fail.
     * Near a full map the space check after the put may refuse it. */
    if (n > 1 || items[0].final || items[0].segment == 0 ||
        store_space_near(st)) {
        ret = ss_store_txn_child_begin(txn, msg);
        if (ret < 0)
            return ret;
        nested = true;
    }
    MDB_txn *t = store_cur_txn(txn);
    for (size_t i = 0; i < n && ret == 0; i++)
        ret = save_one(txn, t, schema, slen, &items[i], &already_applied[i],
                       now_ms, &dseqs, msg);
    if (ret == 0 && dseqs != 0)
        ret = store_counts_add(t, st, schema->saver, dseqs, 0, msg);
    if (nested) {
        char m2[SS_STORE_MSG];
        int rc = ss_store_txn_child_end(txn, ret == 0, m2);
        if (ret == 0 && rc < 0) {
            memcpy(msg, m2, SS_STORE_MSG);
            ret = rc;
        }
    }
    return ret;
}

/* Delete every entry of dbi whose key starts with pfx; count them. */
static int del_prefix(MDB_txn *t, MDB_dbi dbi, const uint8_t *pfx, size_t plen,
                      uint64_t *count, char *msg)
{
    MDB_cursor *c = NULL;
    int rc = mdb_cursor_open(t, dbi, &c);
    if (rc != 0)
        return store_mdb_fail(rc, "cursor", msg);
    MDB_val k = {plen, (void *)(uintptr_t)pfx}, v;
    int ret = 0;
    *count = 0;
    for (rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE); rc == 0;
         rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
        if (k.mv_size < plen || memcmp(k.mv_data, pfx, plen) != 0)
            break;
        rc = mdb_cursor_del(c, 0);
        if (rc != 0)
            break;
        (*count)++;
    }
    if (rc != 0 && rc != MDB_NOTFOUND)
        ret = store_mdb_fail(rc, "delete", msg);
    mdb_cursor_close(c);
    return ret;
}

static int drop_impl(ss_store_txn *txn, const char *saver, size_t n,
                     const ss_bytes *keys, bool all, uint64_t *dropped,
                     char msg[SS_STORE_MSG])
{
    ss_store *st = txn->st;
    MDB_txn *t = store_cur_txn(txn);
    uint8_t dkb[DBKEY_MAX];
    size_t slen = strlen(saver);
    int ret = 0;
    msg[0] = '\0';
    *dropped = 0;
    if (slen == 0 || slen > SS_SAVER_NAME_MAX) {
        snprintf(msg, SS_STORE_MSG, "saver name of %zu bytes (must be 1..%u)",
                 slen, SS_SAVER_NAME_MAX);
        return SS_ERR_INVALID;
    }
    if (!store_saver_declared(t, st, saver, &ret, msg))
        return ret ? ret : SS_ERR_NOT_FOUND;
    if (all) {
        uint64_t recs = 0, marks = 0, fins = 0;
        memcpy(dkb, saver, slen);
        dkb[slen] = 0;
        ret = del_prefix(t, st->seqs, dkb, slen + 1, &recs, msg);
        if (ret == 0)
            ret = del_prefix(t, st->evicted, dkb, slen + 1, &marks, msg);
        if (ret == 0)
            ret = del_prefix(t, st->finished, dkb, slen + 1, &fins, msg);
        if (ret < 0)
            return ret;
        MDB_val k = {slen, (void *)(uintptr_t)saver};
        int rc = mdb_del(t, st->savers, &k, NULL);
        if (rc == 0)
            rc = mdb_del(t, st->counts, &k, NULL);
        if (rc != 0 && rc != MDB_NOTFOUND)
            return store_mdb_fail(rc, "drop saver", msg);
        ret = store_pend_push(txn, NULL, saver);
        if (ret < 0) {
            snprintf(msg, SS_STORE_MSG, "out of memory");
            return ret;
        }
        *dropped = recs;
        SS_LOG(SS_LOG_INFO, "store: dropped saver '%s' (%llu sequences)", saver,
               (unsigned long long)recs);
        return 0;
    }
    int64_t dseqs = 0;
    for (size_t i = 0; i < n; i++) {
        ret = store_key_check(&keys[i], msg);
        if (ret < 0)
            return ret;
        size_t dlen;
        bool is_long, hit = false;
        store_dbkey_make(st, saver, slen, keys[i].data, keys[i].len, dkb, &dlen,
                   &is_long);
        MDB_val dk = {dlen, dkb}, v;
        int rc = mdb_get(t, st->seqs, &dk, &v);
        store_rec r;
        /* A damaged record under this DB key is dropped too: for a long
         * key its stored key cannot be trusted, and the DB key (prefix and
         * 128-bit hash) matched. */
        if (rc == 0 && (!is_long || !store_sealed(&dk, &v) ||
                        (store_rec_parse_raw(&v, &r) == 0 &&
                         store_rec_key_matches(&r, true, keys[i].data,
                                               keys[i].len)))) {
            rc = mdb_del(t, st->seqs, &dk, NULL);
            if (rc != 0)
                return store_mdb_fail(rc, "delete record", msg);
            dseqs--;
            hit = true;
        } else if (rc != 0 && rc != MDB_NOTFOUND) {
            return store_mdb_fail(rc, "read record", msg);
        }
        rc = store_evicted_get(t, st, &dk, is_long, keys[i].data, keys[i].len, &v,
                         msg);
        if (rc == SS_STORE_ERR_CORRUPT)
            rc = 0; /* damaged marker: delete it */
        if (rc < 0)
            return rc;
        if (rc == 0) {
            rc = mdb_del(t, st->evicted, &dk, NULL);
            if (rc != 0)
                return store_mdb_fail(rc, "delete eviction marker", msg);
            hit = true;
        }
        /* A finished key has no data left to drop, so it is not counted;
         * its marker goes so a later save is judged afresh. */
        rc = store_marker_get(t, st, st->finished, FIN_HDR, &dk, is_long,
                              keys[i].data, keys[i].len, &v, msg);
        if (rc == SS_STORE_ERR_CORRUPT)
            rc = 0; /* damaged marker: delete it */
        if (rc < 0)
            return rc;
        if (rc == 0) {
            rc = mdb_del(t, st->finished, &dk, NULL);
            if (rc != 0)
                return store_mdb_fail(rc, "delete finished marker", msg);
        }
        if (hit)
            (*dropped)++;
    }
    if (dseqs)
        ret = store_counts_add(t, st, saver, dseqs, 0, msg);
    return ret;
}

int ss_store_drop(ss_store_txn *txn, const char *saver, size_t n,
                  const ss_bytes *keys, bool all, uint64_t *dropped,
                  char msg[SS_STORE_MSG])
{
    int ret = drop_impl(txn, saver, n, keys, all, dropped, msg);
    if (ret == SS_ERR_FULL && !all)
        snprintf(msg, SS_STORE_MSG,
                 "drop of %zu keys: LMDB map is full even with its reserve "
                 "for Drop; drop fewer keys per request, or restart the "
                 "server with a larger --max-map-size", n);
    return ret;
}
