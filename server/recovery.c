/* recovery -- open and replay the write-ahead log at startup. */
#include "recovery.h"

#include <errno.h>
#include <inttypes.h>
#include <lmdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "ss_error.h"
#include "ss_log.h"
#include "wal_records.h"

/* Replay state (one per ss_recovery). */
typedef struct replay_ctx {
    ss_store *st;            /* store replayed into */
    ss_store_txn *txn;       /* open batch transaction, or NULL */
    bool in_group;           /* a group's nested transaction is open */
    uint64_t applied;        /* LSN of the last whole group applied */
    uint64_t committed;      /* applied LSN of the last batch commit */
    uint64_t batch_bytes;    /* log bytes in the open batch */
    uint64_t groups;         /* groups applied */
    uint64_t orphans;        /* records of groups without their last record */
    char msg[SS_STORE_MSG];  /* error of a failed callback */
} replay_ctx;

static int batch_commit(replay_ctx *c)
{
    if (!c->txn)
        return 0;
    int rc = 0;
    if (c->applied > c->committed)
        rc = ss_store_txn_set_applied(c->txn, c->applied, c->msg);
    if (rc < 0) {
        ss_store_txn_abort(c->txn);
        c->txn = NULL;
        return rc;
    }
    rc = ss_store_txn_commit(c->txn, c->msg);
    c->txn = NULL;
    c->batch_bytes = 0;
    if (rc == 0)
        c->committed = c->applied;
    return rc;
}

static int on_record(void *arg, uint64_t lsn, uint16_t type,
                     const uint8_t *payload, size_t len)
{
    replay_ctx *c = arg;
    unsigned flags;
    uint32_t n_ops;
    int rc;
    if (type != SS_WALREC_OPS) {
        snprintf(c->msg, SS_STORE_MSG, "log record at LSN %" PRIu64 " has type "
                 "%u, unknown to this server (written by a newer one?)", lsn,
                 (unsigned)type);
        return SS_ERR_FORMAT;
    }
    if (ss_walrec_parse_hdr(payload, len, &flags, &n_ops) < 0) {
        snprintf(c->msg, SS_STORE_MSG, "log record at LSN %" PRIu64
                 " has a malformed header", lsn);
        return SS_ERR_FORMAT;
    }
    if ((flags & SS_WALREC_FIRST) && c->in_group) {
        /* The previous group's last record never made it (a torn write
         * before a restart): that group was never acknowledged. */
        ss_store_txn_child_end(c->txn, false, c->msg);
        c->in_group = false;
        c->orphans++;
    }
    if (!c->in_group && !(flags & SS_WALREC_FIRST)) {
        c->orphans++;
        return 0;
    }
    if (!c->txn && (rc = ss_store_txn_begin(c->st, &c->txn, c->msg)) < 0)
        return rc;
    if (flags & SS_WALREC_FIRST) {
        if ((rc = ss_store_txn_child_begin(c->txn, c->msg)) < 0)
            return rc;
        c->in_group = true;
    }
    rc = ss_store_replay_ops(c->txn, payload + SS_WALREC_HDR,
                             len - SS_WALREC_HDR, c->msg);
    if (rc < 0) {
        char m[SS_STORE_MSG];
        snprintf(m, sizeof m, "%s", c->msg);
        snprintf(c->msg, SS_STORE_MSG, "replaying LSN %" PRIu64 ": %.200s",
                 lsn, m);
        return rc;
    }
    c->batch_bytes += len;
    if (flags & SS_WALREC_LAST) {
        if ((rc = ss_store_txn_child_end(c->txn, true, c->msg)) < 0)
            return rc;
        c->in_group = false;
        c->applied = lsn;
        c->groups++;
        if (c->batch_bytes >= SS_RECOVERY_TXN_BYTES)
            return batch_commit(c);
    }
    return 0;
}

/* Create the other modules' databases so replay can open them in a nested
 * transaction. */
static int module_dbs(ss_store *st, char msg[SS_STORE_MSG])
{
    static const char *names[] = SS_RECOVERY_MODULE_DBS;
    MDB_txn *t = NULL;
    MDB_env *env = ss_store_env(st);
    int rc = mdb_txn_begin(env, NULL, 0, &t);
    for (size_t i = 0; rc == 0 && i < sizeof names / sizeof names[0]; i++) {
        MDB_dbi dbi;
        rc = mdb_dbi_open(t, names[i], MDB_CREATE, &dbi);
    }
    if (rc == 0)
        rc = mdb_txn_commit(t);
    else if (t)
        mdb_txn_abort(t);
    if (rc != 0) {
        snprintf(msg, SS_STORE_MSG, "create module databases: %s",
                 mdb_strerror(rc));
        return SS_ERR_STORE;
    }
    return 0;
}

int ss_recovery_run(ss_store **stp, const ss_store_options *so,
                   const ss_wal_options *wo, bool keep, ss_recovery *out,
                   char msg[SS_STORE_MSG])
{
    char dir[4096];
    ss_wal *w = NULL;
    ss_wal_replay_stats rs;
    replay_ctx c;
    int ret = 0;
    memset(out, 0, sizeof *out);
    memset(&c, 0, sizeof c);
    msg[0] = '\0';
    snprintf(dir, sizeof dir, "%s/wal", so->dir);
    struct stat sb;
    if (!keep && stat(dir, &sb) != 0)
        return 0; /* --wal off and never on: today's store */
    ss_wal_options o = *wo;
    o.dir = dir;
    uint64_t applied = 0;
    ret = ss_store_applied_lsn(*stp, &applied, msg);
    if (ret < 0)
        goto fail;
    /* First only scan (no replay): the marker must be checked before
     * anything is written into a store that came back empty. */
    memset(&rs, 0, sizeof rs);
    ret = ss_wal_open(&w, &o, applied, NULL, NULL, &rs, msg, SS_STORE_MSG);
    if (ret < 0)
        goto fail;
    uint64_t marker = ss_wal_marker(w);
    ss_wal_free(w);
    w = NULL;
    if (marker > applied) {
        snprintf(msg, SS_STORE_MSG,
                 "data.mdb is missing, empty or older than the log (first "
                 "checkpoint at LSN %" PRIu64 ", store at LSN %" PRIu64 "): "
                 "refusing to start with lost data; restore data.mdb or move "
                 "the data directory aside", marker, applied);
        ret = SS_ERR_FORMAT;
        goto fail;
    }
    ret = module_dbs(*stp, msg);
    if (ret < 0)
        goto fail;
    /* The checkpoint's snapshot must stay intact while replay commits
     * (unsynced): a crash now goes back to it again (store_ckpt.c). */
    ret = ss_store_pin(*stp, msg);
    if (ret < 0)
        goto fail;
    c.st = *stp;
    c.applied = c.committed = applied;
    memset(&rs, 0, sizeof rs);
    ret = ss_wal_open(&w, &o, applied, on_record, &c, &rs, msg, SS_STORE_MSG);
    if (ret < 0) {
        if (c.msg[0] && !msg[0])
            snprintf(msg, SS_STORE_MSG, "%s", c.msg);
        else if (c.msg[0]) {
            char m[SS_STORE_MSG];
            snprintf(m, sizeof m, "%s", msg);
            snprintf(msg, SS_STORE_MSG, "%.120s (%.120s)", m, c.msg);
        }
        goto fail;
    }
    if (c.in_group) { /* the log ends inside a group: never acknowledged */
        ss_store_txn_child_end(c.txn, false, c.msg);
        c.in_group = false;
        c.orphans++;
    }
    ret = batch_commit(&c);
    if (ret < 0) {
        snprintf(msg, SS_STORE_MSG, "%s", c.msg);
        goto fail;
    }
    uint64_t last = ss_wal_last_lsn(w);
    if (c.applied > last) {
        /* LMDB got ahead of the log (its pages reached the disk, the log's
         * tail did not: --sync off and a power loss). LMDB holds a
         * consistent later state; the log continues from its own end, so
         * the applied LSN must not skip the records written next. */
        SS_LOG(SS_LOG_WARN, "wal: the store is at LSN %" PRIu64 " but the log "
               "ends at %" PRIu64 "; keeping the store's state and continuing "
               "the log from its end", c.applied, last);
        ss_store_txn *t = NULL;
        ret = ss_store_txn_begin(*stp, &t, msg);
        if (ret == 0 && (ret = ss_store_txn_set_applied(t, last, msg)) == 0)
            ret = ss_store_txn_commit(t, msg);
        else
            ss_store_txn_abort(t);
        if (ret < 0)
            goto fail;
        c.applied = last;
    }
    /* Checkpoint: what was replayed is synced, older segments recycled. */
    ret = ss_store_checkpoint(*stp, keep, msg);
    if (ret < 0)
        goto fail;
    ret = ss_wal_checkpoint(w, c.applied);
    if (ret == 0 && c.applied > 0 && ss_wal_marker(w) == 0)
        ret = ss_wal_set_marker(w, c.applied);
    if (ret < 0) {
        const char *f = ss_wal_failed(w);
        snprintf(msg, SS_STORE_MSG, "checkpoint of the log: %s",
                 f ? f : ss_strerror(ret));
        goto fail;
    }
    double mib = (double)rs.bytes / (1024.0 * 1024.0);
    SS_LOG(SS_LOG_INFO, "wal: replayed %" PRIu64 " records, %.1f MiB in %.3f s "
           "(%.1f MiB/s)%s%s; store at LSN %" PRIu64, rs.records, mib,
           rs.seconds, rs.seconds > 0 ? mib / rs.seconds : 0.0,
           rs.torn_tail ? "; the log ended in a torn record (cut off)" : "",
           c.orphans ? "; an unfinished group was dropped" : "", c.applied);
    if (rs.records > 0) {
        /* Reload the schema cache and generations from the replayed data. */
        uint64_t max_map = ss_store_max_map_size(*stp);
        ss_store_close(*stp);
        *stp = NULL;
        ret = ss_store_open_growing(stp, so, max_map, msg);
        if (ret == 0)
            ret = ss_store_checkpoint(*stp, keep, msg); /* pin again */
        if (ret < 0)
            goto fail;
    }
    out->applied_lsn = c.applied;
    out->records = rs.records;
    out->bytes = rs.bytes;
    out->seconds = rs.seconds;
    if (keep)
        out->wal = w;
    else
        ss_wal_free(w);
    return 0;
fail:
    if (c.txn)
        ss_store_txn_abort(c.txn);
    ss_wal_free(w);
    ss_store_close(*stp);
    *stp = NULL;
    return ret < 0 ? ret : SS_ERR_INTERNAL;
}
