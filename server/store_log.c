/* store_log -- the store's side of the write-ahead log: every put and
 * delete made in a writer transaction is also encoded (wal_records.h) into
 * the transaction's op buffer, truncated when a nested transaction rolls
 * back; replay applies decoded ops; the applied LSN lives in `counts`
 * under the store-private key "\0wal_lsn", written in the same LMDB
 * transaction as the group it covers.
 */
#include "store.h"

#include <errno.h>
#include <lmdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ss_error.h"
#include "ss_log.h"
#include "store_internal.h"
#include "wal_records.h"

static const char lsn_key[] = "\0wal_lsn";

void ss_store_log_enable(ss_store *st, bool on)
{
    st->log_on = on;
}

/* The store behind a transaction of its environment. */
static ss_store *txn_store(MDB_txn *t)
{
    return mdb_env_get_userctx(mdb_txn_env(t));
}

static const char *dbi_name(ss_store *st, MDB_dbi dbi)
{
    if (dbi == st->savers)
        return "savers";
    if (dbi == st->seqs)
        return "seqs";
    if (dbi == st->evicted)
        return "evicted";
    if (dbi == st->counts)
        return "counts";
    if (dbi == st->finished)
        return "finished";
    return NULL;
}

static int log_op(MDB_txn *t, int kind, const char *db, MDB_dbi dbi,
                  const MDB_val *k, const MDB_val *v)
{
    ss_store *st = txn_store(t);
    if (!st || !st->log_on || !st->log_active)
        return 0;
    if (!db)
        db = dbi_name(st, dbi);
    if (!db)
        return SS_ERR_INTERNAL; /* a database the log does not know */
    return ss_walrec_add(&st->log, kind, db, strlen(db), k->mv_data,
                         k->mv_size, v ? v->mv_data : NULL, v ? v->mv_size : 0);
}

int store_log_put(MDB_txn *t, MDB_dbi dbi, const MDB_val *k, const MDB_val *v)
{
    return log_op(t, SS_WALOP_PUT, NULL, dbi, k, v);
}

int store_put(MDB_txn *t, MDB_dbi dbi, MDB_val *k, MDB_val *v)
{
    int rc = mdb_put(t, dbi, k, v, 0);
    if (rc != 0)
        return rc;
    return store_log_put(t, dbi, k, v) < 0 ? ENOMEM : 0;
}

int store_del(MDB_txn *t, MDB_dbi dbi, MDB_val *k)
{
    int rc = mdb_del(t, dbi, k, NULL);
    if (rc != 0)
        return rc;
    return log_op(t, SS_WALOP_DEL, NULL, dbi, k, NULL) < 0 ? ENOMEM : 0;
}

int store_cursor_del(MDB_cursor *c)
{
    MDB_val k, v;
    MDB_txn *t = mdb_cursor_txn(c);
    ss_store *st = txn_store(t);
    if (st && st->log_on && st->log_active) {
        int rc = mdb_cursor_get(c, &k, &v, MDB_GET_CURRENT);
        if (rc != 0)
            return rc;
        /* Logged first: the key points into the page the delete changes. */
        if (log_op(t, SS_WALOP_DEL, NULL, mdb_cursor_dbi(c), &k, NULL) < 0)
            return ENOMEM;
    }
    return mdb_cursor_del(c, 0);
}

int ss_store_log_put(struct MDB_txn *t, const char *db, const struct MDB_val *k,
                     const struct MDB_val *v)
{
    return log_op(t, SS_WALOP_PUT, db, 0, k, v);
}

int ss_store_log_del(struct MDB_txn *t, const char *db, const struct MDB_val *k)
{
    return log_op(t, SS_WALOP_DEL, db, 0, k, NULL);
}

void ss_store_txn_log(ss_store_txn *t, const uint8_t **ops, size_t *len,
                      size_t *n_ops)
{
    *ops = t->st->log.data;
    *len = t->st->log.len;
    *n_ops = t->st->log.n_ops;
}

int ss_store_txn_set_applied(ss_store_txn *t, uint64_t lsn,
                             char msg[SS_STORE_MSG])
{
    ss_store *st = t->st;
    uint8_t buf[8];
    ss_le64_put(buf, lsn);
    MDB_val k = {sizeof lsn_key - 1, (void *)(uintptr_t)lsn_key};
    MDB_val v = {sizeof buf, buf};
    int rc = mdb_put(store_cur_txn(t), st->counts, &k, &v, 0);
    return rc ? store_mdb_fail(rc, "write the applied log position", msg) : 0;
}

int ss_store_applied_lsn(ss_store *st, uint64_t *lsn, char msg[SS_STORE_MSG])
{
    MDB_txn *t = NULL;
    *lsn = 0;
    int rc = mdb_txn_begin(st->env, NULL, MDB_RDONLY, &t);
    if (rc != 0)
        return store_mdb_fail(rc, "begin", msg);
    MDB_val k = {sizeof lsn_key - 1, (void *)(uintptr_t)lsn_key}, v;
    rc = mdb_get(t, st->counts, &k, &v);
    int ret = 0;
    if (rc == 0 && v.mv_size == 8)
        *lsn = ss_le64_get(v.mv_data);
    else if (rc == 0) {
        snprintf(msg, SS_STORE_MSG, "applied log position has %zu bytes",
                 v.mv_size);
        ret = SS_ERR_STORE;
    } else if (rc != MDB_NOTFOUND)
        ret = store_mdb_fail(rc, "read the applied log position", msg);
    mdb_txn_abort(t);
    return ret;
}

/* The dbi of a named database for replay, opened (created) in t. */
static int replay_dbi(ss_store_txn *t, const ss_walrec_op *op, MDB_dbi *dbi,
                      char *msg)
{
    ss_store *st = t->st;
    char name[256];
    memcpy(name, op->db, op->db_len);
    name[op->db_len] = '\0';
    const char *own[] = {"savers", "seqs", "evicted", "counts", "finished"};
    MDB_dbi ids[] = {st->savers, st->seqs, st->evicted, st->counts,
                     st->finished};
    for (size_t i = 0; i < sizeof own / sizeof own[0]; i++)
        if (strcmp(name, own[i]) == 0) {
            *dbi = ids[i];
            return 0;
        }
    /* Another module's database (jobs): opened on the replaying thread
     * before the writer starts, as store.h requires. */
    int rc = mdb_dbi_open(store_cur_txn(t), op->db_len ? name : NULL,
                          MDB_CREATE, dbi);
    if (rc != 0)
        return store_mdb_fail(rc, "open database for replay", msg);
    return 0;
}

int ss_store_replay_ops(ss_store_txn *t, const uint8_t *body, size_t len,
                        char msg[SS_STORE_MSG])
{
    size_t pos = 0;
    ss_walrec_op op;
    int r;
    MDB_txn *mt = store_cur_txn(t);
    while ((r = ss_walrec_next(body, len, &pos, &op)) == 1) {
        MDB_dbi dbi;
        int ret = replay_dbi(t, &op, &dbi, msg);
        if (ret < 0)
            return ret;
        MDB_val k = {op.klen, (void *)(uintptr_t)op.key};
        int rc;
        if (op.kind == SS_WALOP_PUT) {
            MDB_val v = {op.vlen, (void *)(uintptr_t)op.val};
            rc = mdb_put(mt, dbi, &k, &v, 0);
        } else {
            rc = mdb_del(mt, dbi, &k, NULL);
            if (rc == MDB_NOTFOUND)
                rc = 0;
        }
        if (rc != 0)
            return store_mdb_fail(rc, "replay", msg);
    }
    if (r < 0) {
        snprintf(msg, SS_STORE_MSG, "malformed op in a log record");
        return SS_ERR_FORMAT;
    }
    return 0;
}

