/* store_slots -- store side of slot moves: scan a slot range's records, import
 * exact records, delete a range, persist the frozen-slot bitmap. */
#include "store_slots.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ss_error.h"
#include "ss_slot.h"
#include "store_internal.h"

#define FROZEN_KEY "\0frozen_slots"
#define FROZEN_KEY_LEN 13u /* bytes of FROZEN_KEY, the NUL included */

static const char *const db_names[SS_STORE_SLOTS_NDB] = {"seqs", "evicted", "finished", "jobs"};

const char *ss_store_slots_db_name(ss_store_slots_db db)
{
    return db < SS_STORE_SLOTS_NDB ? db_names[db] : "?";
}

int ss_store_slots_db_from_name(const char *name)
{
    for (int i = 0; i < (int)SS_STORE_SLOTS_NDB; i++)
        if (name && strcmp(name, db_names[i]) == 0)
            return i;
    return -1;
}

static MDB_dbi db_handle(const ss_store *st, MDB_dbi jobs_dbi, ss_store_slots_db db)
{
    switch (db) {
    case SS_STORE_SLOTS_SEQS: return st->seqs;
    case SS_STORE_SLOTS_EVICTED: return st->evicted;
    case SS_STORE_SLOTS_FINISHED: return st->finished;
    default: return jobs_dbi;
    }
}

/* Offset of the full key inside a value of a long DB key. */
static size_t full_key_off(ss_store_slots_db db)
{
    return db == SS_STORE_SLOTS_EVICTED ? EVICT_HDR : REC_HDR;
}

/* Find the saver and the full key of a record; 0, or 1 when it cannot be
 * told (a damaged record: skipped by scans). */
static int rec_identify(const ss_store *st, ss_store_slots_job_fn job_fn,
                        ss_store_slots_rec *r)
{
    if (r->db == SS_STORE_SLOTS_JOBS)
        return job_fn(r->val.mv_data, r->val.mv_size, &r->saver, &r->key) < 0 ? 1 : 0;
    const uint8_t *k = r->dk.mv_data;
    const uint8_t *nul = memchr(k, 0, r->dk.mv_size);
    if (!nul || nul == k)
        return 1; /* store-private or malformed */
    r->saver.data = k;
    r->saver.len = (size_t)(nul - k);
    bool is_long = r->dk.mv_size >= st->maxkey;
    if (!is_long) {
        r->key.data = nul + 1;
        r->key.len = r->dk.mv_size - r->saver.len - 1;
        return r->key.len ? 0 : 1;
    }
    const uint8_t *v = r->val.mv_data;
    size_t off = full_key_off(r->db);
    if (r->val.mv_size < 8)
        return 1;
    uint32_t klen = ss_le32_get(v + 4);
    if (klen == 0 || off + klen > r->val.mv_size)
        return 1;
    r->key.data = v + off;
    r->key.len = klen;
    return 0;
}

int ss_store_slots_scan(ss_store *st, MDB_dbi jobs_dbi, ss_store_slots_job_fn job_fn,
                  unsigned first, unsigned last,
                  const uint8_t *cursor, size_t cursor_len, ss_store_slots_scan_cb cb,
                  void *arg, uint8_t *next, size_t *next_len, bool *done,
                  char msg[SS_STORE_MSG])
{
    int rc = 0;
    MDB_txn *t = NULL;
    MDB_cursor *cur = NULL;
    unsigned db0 = 0;
    *done = false;
    *next_len = 0;
    msg[0] = '\0';
    if (cursor_len > 0) {
        if (cursor_len > SS_STORE_SLOTS_CURSOR_MAX || cursor[0] >= SS_STORE_SLOTS_NDB) {
            snprintf(msg, SS_STORE_MSG, "bad export cursor (%zu bytes)", cursor_len);
            return SS_ERR_INVALID;
        }
        db0 = cursor[0];
    }
    int mrc = mdb_txn_begin(st->env, NULL, MDB_RDONLY, &t);
    if (mrc != 0)
        return store_mdb_fail(mrc, "slot scan: begin", msg);
    size_t examined = 0;
    for (unsigned db = db0; db < SS_STORE_SLOTS_NDB; db++) {
        mrc = mdb_cursor_open(t, db_handle(st, jobs_dbi, (ss_store_slots_db)db), &cur);
        if (mrc != 0) {
            rc = store_mdb_fail(mrc, "slot scan: cursor", msg);
            goto out;
        }
        MDB_val k = {0, NULL}, v = {0, NULL};
        bool resume = db == db0 && cursor_len > 1;
        if (resume) {
            k.mv_size = cursor_len - 1;
            k.mv_data = (void *)(cursor + 1);
            mrc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
            /* the cursor names the last record consumed: skip it */
            if (mrc == 0 && k.mv_size == cursor_len - 1 &&
                memcmp(k.mv_data, cursor + 1, k.mv_size) == 0)
                mrc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
        } else {
            mrc = mdb_cursor_get(cur, &k, &v, MDB_FIRST);
        }
        for (; mrc == 0; mrc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
            if (examined++ >= SS_STORE_SLOTS_SCAN_MAX || k.mv_size + 1 > SS_STORE_SLOTS_CURSOR_MAX) {
                /* budget spent: resume before this record */
                goto pause;
            }
            ss_store_slots_rec r = {.db = (ss_store_slots_db)db, .dk = k, .val = v};
            if (rec_identify(st, job_fn, &r) != 0)
                goto consumed;
            r.slot = ss_slot_of(r.key.data, r.key.len);
            if (r.slot < first || r.slot > last)
                goto consumed;
            int c = cb(arg, &r);
            if (c < 0) {
                rc = c;
                goto out;
            }
            if (c > 0)
                goto pause;
        consumed:
            next[0] = (uint8_t)db;
            memcpy(next + 1, k.mv_data, k.mv_size);
            *next_len = k.mv_size + 1;
        }
        if (mrc != MDB_NOTFOUND) {
            rc = store_mdb_fail(mrc, "slot scan: next", msg);
            goto out;
        }
        mdb_cursor_close(cur);
        cur = NULL;
        /* the next database starts from its beginning */
        if (db + 1 < SS_STORE_SLOTS_NDB) {
            next[0] = (uint8_t)(db + 1);
            *next_len = 1;
        }
    }
    *done = true;
    *next_len = 0;
    goto out;
pause:
    if (*next_len == 0) {
        /* nothing consumed in this call: resume exactly where we started */
        if (cursor_len > 0)
            memcpy(next, cursor, cursor_len);
        *next_len = cursor_len;
        if (cursor_len == 0) {
            next[0] = (uint8_t)db0;
            *next_len = 1;
        }
    }
out:
    if (cur)
        mdb_cursor_close(cur);
    mdb_txn_abort(t);
    return rc;
}

/* ---- import ---- */

/* Is the saver of a record declared in this store? */
static int saver_declared(ss_store *st, ss_bytes saver, const char *what,
                          char msg[SS_STORE_MSG])
{
    char name[SS_SAVER_NAME_MAX + 1];
    if (saver.len == 0 || saver.len > SS_SAVER_NAME_MAX) {
        snprintf(msg, SS_STORE_MSG, "a %s record has a bad saver name", what);
        return SS_ERR_INVALID;
    }
    memcpy(name, saver.data, saver.len);
    name[saver.len] = '\0';
    ss_schema *s = NULL;
    if (ss_store_schema(st, name, &s) < 0) {
        snprintf(msg, SS_STORE_MSG, "saver '%s' is not declared on this shard "
                 "(declare it on every shard first)", name);
        return SS_ERR_NOT_FOUND;
    }
    ss_schema_unref(s);
    return 0;
}

int ss_store_slots_check_in(ss_store *st, ss_store_slots_job_fn job_fn,
                            const ss_store_slots_in *in, unsigned *slot,
                            char msg[SS_STORE_MSG])
{
    if (in->db == SS_STORE_SLOTS_JOBS) {
        ss_bytes saver, key;
        if (job_fn(in->val.data, in->val.len, &saver, &key) < 0) {
            snprintf(msg, SS_STORE_MSG, "a jobs record does not decode");
            return SS_ERR_INVALID;
        }
        *slot = ss_slot_of(key.data, key.len);
        return saver_declared(st, saver, "jobs", msg);
    }
    const char *what = ss_store_slots_db_name(in->db);
    if (in->db >= SS_STORE_SLOTS_NDB || in->dk.len == 0 || in->dk.len > st->maxkey ||
        in->val.len < CRC_BYTES) {
        snprintf(msg, SS_STORE_MSG, "a %s record has a bad key or value size", what);
        return SS_ERR_INVALID;
    }
    MDB_val dk = {in->dk.len, (void *)in->dk.data}, v = {in->val.len, (void *)in->val.data};
    if (!store_sealed(&dk, &v)) {
        snprintf(msg, SS_STORE_MSG, "a %s record fails its checksum", what);
        return SS_ERR_INVALID;
    }
    ss_store_slots_rec r = {.db = in->db, .dk = dk, .val = v};
    if (rec_identify(st, job_fn, &r) != 0) {
        snprintf(msg, SS_STORE_MSG, "a %s record has no saver or key", what);
        return SS_ERR_INVALID;
    }
    *slot = ss_slot_of(r.key.data, r.key.len);
    return saver_declared(st, r.saver, what, msg);
}

static void be64(uint64_t id, uint8_t out[8])
{
    for (int i = 7; i >= 0; i--) {
        out[i] = (uint8_t)id;
        id >>= 8;
    }
}

/* The saver of a store DB key, NUL-terminated into buf. */
static void dk_saver(const uint8_t *dk, size_t len, char buf[SS_SAVER_NAME_MAX + 1])
{
    size_t n = 0;
    while (n < len && n < SS_SAVER_NAME_MAX && dk[n])
        n++;
    memcpy(buf, dk, n);
    buf[n] = '\0';
}

int ss_store_slots_import_run(ss_store_txn *txn, ss_store *st, MDB_dbi jobs_dbi,
                        size_t n, const ss_store_slots_in *in, uint64_t *written,
                        char msg[SS_STORE_MSG])
{
    MDB_txn *t = ss_store_txn_mdb(txn);
    *written = 0;
    for (size_t i = 0; i < n; i++) {
        const ss_store_slots_in *x = &in[i];
        uint8_t idk[8];
        MDB_val k, v = {x->val.len, (void *)x->val.data}, old;
        if (x->db == SS_STORE_SLOTS_JOBS) {
            if (x->job_id == 0)
                continue;
            be64(x->job_id, idk);
            k.mv_size = sizeof idk;
            k.mv_data = idk;
        } else {
            k.mv_size = x->dk.len;
            k.mv_data = (void *)x->dk.data;
        }
        MDB_dbi dbi = db_handle(st, jobs_dbi, x->db);
        int rc = mdb_get(t, dbi, &k, &old);
        bool existed = rc == 0;
        if (rc != 0 && rc != MDB_NOTFOUND)
            return store_mdb_fail(rc, "slot import: get", msg);
        if (existed && old.mv_size == v.mv_size &&
            memcmp(old.mv_data, v.mv_data, v.mv_size) == 0)
            continue; /* the same bytes: importing twice changes nothing */
        rc = ss_store_reserve_check(txn, k.mv_size + v.mv_size, msg);
        if (rc < 0)
            return rc;
        rc = x->db == SS_STORE_SLOTS_JOBS ? mdb_put(t, dbi, &k, &v, 0) : store_put(t, dbi, &k, &v);
        if (rc != 0)
            return store_mdb_fail(rc, "slot import: put", msg);
        if (x->db == SS_STORE_SLOTS_JOBS && (rc = ss_store_log_put(t, "jobs", &k, &v)) < 0) {
            snprintf(msg, SS_STORE_MSG, "slot import: cannot log a job record");
            return rc;
        }
        if (x->db == SS_STORE_SLOTS_SEQS && !existed) {
            char saver[SS_SAVER_NAME_MAX + 1];
            dk_saver(x->dk.data, x->dk.len, saver);
            if ((rc = store_counts_add(t, st, saver, 1, 0, msg)) < 0)
                return rc;
        }
        (*written)++;
    }
    return 0;
}

int ss_store_slots_delete_run(ss_store_txn *txn, ss_store *st, MDB_dbi jobs_dbi,
                        size_t n, const ss_store_slots_del *del, uint64_t *deleted,
                        char msg[SS_STORE_MSG])
{
    MDB_txn *t = ss_store_txn_mdb(txn);
    *deleted = 0;
    for (size_t i = 0; i < n; i++) {
        MDB_val k = {del[i].dk_len, del[i].dk};
        MDB_dbi dbi = db_handle(st, jobs_dbi, del[i].db);
        int rc;
        if (del[i].db == SS_STORE_SLOTS_JOBS) {
            rc = mdb_del(t, dbi, &k, NULL);
            if (rc == 0 && ss_store_log_del(t, "jobs", &k) < 0) {
                snprintf(msg, SS_STORE_MSG, "slot delete: cannot log a job delete");
                return SS_ERR_NOMEM;
            }
        } else {
            rc = store_del(t, dbi, &k);
        }
        if (rc == MDB_NOTFOUND)
            continue;
        if (rc != 0)
            return store_mdb_fail(rc, "slot delete", msg);
        if (del[i].db == SS_STORE_SLOTS_SEQS) {
            char saver[SS_SAVER_NAME_MAX + 1];
            dk_saver(del[i].dk, del[i].dk_len, saver);
            if ((rc = store_counts_add(t, st, saver, -1, 0, msg)) < 0)
                return rc;
        }
        (*deleted)++;
    }
    return 0;
}

/* ---- frozen bitmap ---- */

int ss_store_slots_frozen_load(ss_store *st, uint8_t out[SS_STORE_SLOTS_BITMAP_BYTES],
                         char msg[SS_STORE_MSG])
{
    MDB_txn *t = NULL;
    memset(out, 0, SS_STORE_SLOTS_BITMAP_BYTES);
    int rc = mdb_txn_begin(st->env, NULL, MDB_RDONLY, &t);
    if (rc != 0)
        return store_mdb_fail(rc, "frozen slots: begin", msg);
    MDB_val k = {FROZEN_KEY_LEN, (void *)FROZEN_KEY}, v;
    rc = mdb_get(t, st->counts, &k, &v);
    int ret = 0;
    if (rc == 0) {
        if (v.mv_size != SS_STORE_SLOTS_BITMAP_BYTES + CRC_BYTES || !store_sealed(&k, &v)) {
            snprintf(msg, SS_STORE_MSG, "the frozen-slot record is damaged; "
                     "treating every slot as frozen until a thaw rewrites it");
            memset(out, 0xff, SS_STORE_SLOTS_BITMAP_BYTES);
            ret = SS_STORE_ERR_CORRUPT;
        } else {
            memcpy(out, v.mv_data, SS_STORE_SLOTS_BITMAP_BYTES);
        }
    } else if (rc != MDB_NOTFOUND) {
        ret = store_mdb_fail(rc, "frozen slots: get", msg);
    }
    mdb_txn_abort(t);
    return ret;
}

int ss_store_slots_frozen_put(ss_store_txn *txn, ss_store *st,
                        const uint8_t bits[SS_STORE_SLOTS_BITMAP_BYTES], char msg[SS_STORE_MSG])
{
    MDB_txn *t = ss_store_txn_mdb(txn);
    MDB_val k = {FROZEN_KEY_LEN, (void *)FROZEN_KEY};
    bool any = false;
    for (size_t i = 0; i < SS_STORE_SLOTS_BITMAP_BYTES && !any; i++)
        any = bits[i] != 0;
    int rc;
    if (!any) {
        rc = store_del(t, st->counts, &k);
        if (rc != 0 && rc != MDB_NOTFOUND)
            return store_mdb_fail(rc, "frozen slots: delete", msg);
        return 0;
    }
    uint8_t buf[SS_STORE_SLOTS_BITMAP_BYTES + CRC_BYTES];
    memcpy(buf, bits, SS_STORE_SLOTS_BITMAP_BYTES);
    store_seal(&k, buf, SS_STORE_SLOTS_BITMAP_BYTES);
    MDB_val v = {sizeof buf, buf};
    rc = store_put(t, st->counts, &k, &v);
    if (rc != 0)
        return store_mdb_fail(rc, "frozen slots: put", msg);
    return 0;
}
