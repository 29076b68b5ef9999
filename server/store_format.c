/* store_format -- checks of the data file before it is served, and the
 * on-disk format version (migration of format 1 to format 2).
 *
 * Format 2 (SS_STORE_FORMAT_VERSION) ends every value with a CRC32C of
 * its DB key and other bytes (store_codec.c); the version lives under the
 * store-private key "\0format" in `counts` (u32). A store without that key
 * is format 1 when it holds data, and is migrated on open: seqs, evicted
 * and finished values (version byte 1 -> 2, trailer added) in commits of
 * MIGRATE_CHUNK values, which a crash may interrupt (the version byte
 * tells done values apart), then savers, counts and the format key in one
 * last commit. Format 1 hashed long keys with a hand-written function;
 * their values carry the full key, so they are moved to the DB key of
 * format 2's XXH3-128 hash (store_dbkey_make).
 */
#include "store.h"

#include <errno.h>
#include <lmdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "ss_error.h"
#include "ss_log.h"
#include "store_internal.h"

#define MIGRATE_CHUNK 1000 /* values rewritten per commit */

static const char format_key[] = "\0format";

int store_file_check(const char *dir, bool *fresh, char *msg)
{
    char path[4200];
    struct stat sb;
    snprintf(path, sizeof path, "%s/data.mdb", dir);
    *fresh = false;
    if (stat(path, &sb) != 0) {
        if (errno == ENOENT) {
            *fresh = true;
            return 0;
        }
        snprintf(msg, SS_STORE_MSG, "cannot stat %.100s: %.100s", path,
                 strerror(errno));
        return SS_ERR_IO;
    }
    if (sb.st_size == 0) {
        snprintf(msg, SS_STORE_MSG,
                 "%.100s is empty (0 bytes): the store's data is lost, not "
                 "new; restore a backup, or delete it to start empty", path);
        return SS_ERR_STORE;
    }
    return 0;
}

int store_size_check(ss_store *st, const char *dir, char *msg)
{
    char path[4200];
    struct stat sb;
    MDB_envinfo ei;
    snprintf(path, sizeof path, "%s/data.mdb", dir);
    if (stat(path, &sb) != 0) {
        snprintf(msg, SS_STORE_MSG, "cannot stat %.100s: %.100s", path,
                 strerror(errno));
        return SS_ERR_IO;
    }
    mdb_env_info(st->env, &ei);
    uint64_t need = ((uint64_t)ei.me_last_pgno + 1) * st->psize;
    if ((uint64_t)sb.st_size < need) {
        /* LMDB leaves pages it allocated and freed again unwritten, so a
         * file may legitimately end early when every missing page is
         * free (store_pages.c). */
        bool free_tail = false;
        int rc = store_tail_free(path, st->psize, (uint64_t)sb.st_size,
                                 &free_tail);
        if (rc == 0 && free_tail) {
            SS_LOG(SS_LOG_WARN, "store: %s ends %llu pages before LMDB's "
                   "last page; all of them are free (never written)", path,
                   (unsigned long long)((need - (uint64_t)sb.st_size +
                                         st->psize - 1) / st->psize));
            return 0;
        }
        snprintf(msg, SS_STORE_MSG,
                 "%.100s is truncated: %llu bytes, LMDB's last used page "
                 "needs %llu (page %llu of %llu); restore a backup", path, (unsigned long long)sb.st_size,
                 (unsigned long long)need, (unsigned long long)ei.me_last_pgno,
                 (unsigned long long)st->psize);
        return SS_ERR_STORE;
    }
    return 0;
}

/* Move the version-1 value under long DB key ok (copied: the cursor is
 * closed) to the DB key of format 2's hash, sealed. */
static int move_long(MDB_txn *t, ss_store *st, MDB_dbi dbi, const MDB_val *ok,
                     size_t hdr, char *msg)
{
    uint8_t nk[DBKEY_MAX];
    MDB_val k = *ok, v;
    int rc = mdb_get(t, dbi, &k, &v);
    if (rc != 0)
        return store_mdb_fail(rc, "migrate long key", msg);
    const uint8_t *p = v.mv_data;
    size_t kl = ss_le32_get(p + 4);
    const uint8_t *nul = memchr(ok->mv_data, 0, ok->mv_size);
    if (!nul || kl == 0 || v.mv_size < hdr + kl) {
        snprintf(msg, SS_STORE_MSG, "migration: malformed long-key value");
        return SS_ERR_STORE;
    }
    size_t slen = (size_t)(nul - (const uint8_t *)ok->mv_data);
    char saver[SS_SAVER_NAME_MAX + 1];
    if (slen > SS_SAVER_NAME_MAX) {
        snprintf(msg, SS_STORE_MSG, "migration: saver name of %zu bytes", slen);
        return SS_ERR_STORE;
    }
    memcpy(saver, ok->mv_data, slen);
    saver[slen] = '\0';
    size_t nlen;
    bool is_long;
    store_dbkey_make(st, saver, slen, p + hdr, kl, nk, &nlen, &is_long);
    uint8_t *buf = malloc(v.mv_size + CRC_BYTES);
    if (!buf) {
        snprintf(msg, SS_STORE_MSG, "out of memory");
        return SS_ERR_NOMEM;
    }
    memcpy(buf, p, v.mv_size);
    buf[0] = REC_VERSION;
    MDB_val newk = {nlen, nk}, nv = {v.mv_size + CRC_BYTES, buf};
    store_seal(&newk, buf, v.mv_size);
    k = *ok;
    rc = mdb_del(t, dbi, &k, NULL);
    if (rc == 0)
        rc = mdb_put(t, dbi, &newk, &nv, 0);
    free(buf);
    return rc ? store_mdb_fail(rc, "migrate long key", msg) : 0;
}

/* Rewrite up to MIGRATE_CHUNK version-1 values of dbi (values with a
 * hdr-byte header) from *pos on (0 = start). Returns 1 when dbi is done,
 * 0 when more remain, or < 0. */
static int migrate_chunk(ss_store *st, MDB_dbi dbi, size_t hdr, uint8_t *pos,
                         size_t *pos_len, char *msg)
{
    MDB_txn *t = NULL;
    MDB_cursor *c = NULL;
    uint8_t *buf = NULL;
    uint8_t (*longs)[DBKEY_MAX] = NULL; /* long DB keys to move */
    size_t cap = 0, done = 0, n_long = 0;
    int ret = 0;
    int rc = mdb_txn_begin(st->env, NULL, 0, &t);
    if (rc != 0)
        return store_mdb_fail(rc, "begin migration", msg);
    rc = mdb_cursor_open(t, dbi, &c);
    if (rc != 0) {
        ret = store_mdb_fail(rc, "migration cursor", msg);
        goto out;
    }
    MDB_val k = {*pos_len, pos}, v;
    rc = *pos_len ? mdb_cursor_get(c, &k, &v, MDB_SET_RANGE)
                  : mdb_cursor_get(c, &k, &v, MDB_FIRST);
    for (; rc == 0 && done < MIGRATE_CHUNK;
         rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
        const uint8_t *p = v.mv_data;
        if (v.mv_size < hdr || p[0] != REC_VERSION_V1)
            continue; /* migrated by an interrupted run (or not ours) */
        if (ss_le32_get(p + 4) != 0 && k.mv_size == st->maxkey) {
            /* A long key: its DB key changes with the hash; moved after
             * the scan (a cursor must not see its own inserts). */
            if (!longs && !(longs = malloc(MIGRATE_CHUNK * sizeof *longs))) {
                ret = SS_ERR_NOMEM;
                snprintf(msg, SS_STORE_MSG, "out of memory");
                goto out;
            }
            memcpy(longs[n_long++], k.mv_data, k.mv_size);
            done++;
            continue;
        }
        if (v.mv_size + CRC_BYTES > cap) {
            size_t nc = v.mv_size + CRC_BYTES;
            uint8_t *nb = realloc(buf, nc);
            if (!nb) {
                ret = SS_ERR_NOMEM;
                snprintf(msg, SS_STORE_MSG, "out of memory");
                goto out;
            }
            buf = nb;
            cap = nc;
        }
        memcpy(buf, p, v.mv_size);
        buf[0] = REC_VERSION;
        store_seal(&k, buf, v.mv_size);
        MDB_val nv = {v.mv_size + CRC_BYTES, buf};
        rc = mdb_cursor_put(c, &k, &nv, MDB_CURRENT);
        if (rc != 0)
            break;
        done++;
    }
    bool more = rc == 0;
    if (rc == 0) {
        if (k.mv_size > DBKEY_MAX) {
            ret = SS_ERR_STORE;
            snprintf(msg, SS_STORE_MSG, "migration: key of %zu bytes",
                     k.mv_size);
            goto out;
        }
        memcpy(pos, k.mv_data, k.mv_size);
        *pos_len = k.mv_size;
    } else if (rc != MDB_NOTFOUND) {
        ret = store_mdb_fail(rc, "migrate", msg);
        goto out;
    }
    mdb_cursor_close(c);
    c = NULL;
    for (size_t i = 0; i < n_long; i++) {
        MDB_val ok = {st->maxkey, longs[i]};
        ret = move_long(t, st, dbi, &ok, hdr, msg);
        if (ret < 0)
            goto out;
    }
    rc = mdb_txn_commit(t);
    t = NULL;
    if (rc != 0)
        ret = store_mdb_fail(rc, "commit migration", msg);
    else
        ret = more ? 0 : 1;
    if (ret == 1)
        *pos_len = 0;
out:
    if (c)
        mdb_cursor_close(c);
    if (t)
        mdb_txn_abort(t);
    free(buf);
    free(longs);
    return ret;
}

/* Seal every value of dbi of exactly `size` bytes (savers: any size)
 * whose key does not start with NUL, inside t. */
static int migrate_small(MDB_txn *t, MDB_dbi dbi, size_t size, char *msg)
{
    MDB_cursor *c = NULL;
    MDB_val k, v;
    int rc = mdb_cursor_open(t, dbi, &c);
    if (rc != 0)
        return store_mdb_fail(rc, "migration cursor", msg);
    int ret = 0;
    for (rc = mdb_cursor_get(c, &k, &v, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
        if (k.mv_size == 0 || ((const uint8_t *)k.mv_data)[0] == 0 ||
            (size && v.mv_size != size))
            continue;
        uint8_t *buf = malloc(v.mv_size + CRC_BYTES);
        if (!buf) {
            snprintf(msg, SS_STORE_MSG, "out of memory");
            ret = SS_ERR_NOMEM;
            break;
        }
        memcpy(buf, v.mv_data, v.mv_size);
        store_seal(&k, buf, v.mv_size);
        MDB_val nv = {v.mv_size + CRC_BYTES, buf};
        rc = mdb_cursor_put(c, &k, &nv, MDB_CURRENT);
        free(buf);
        if (rc != 0)
            break;
    }
    if (ret == 0 && rc != MDB_NOTFOUND)
        ret = store_mdb_fail(rc, "migrate", msg);
    mdb_cursor_close(c);
    return ret;
}

static int put_format(MDB_txn *t, ss_store *st, char *msg)
{
    uint8_t b[4];
    ss_le32_put(b, SS_STORE_FORMAT_VERSION);
    MDB_val k = {sizeof format_key - 1, (void *)(uintptr_t)format_key};
    MDB_val v = {sizeof b, b};
    int rc = mdb_put(t, st->counts, &k, &v, 0);
    return rc ? store_mdb_fail(rc, "write format version", msg) : 0;
}

static int migrate_v1(ss_store *st, const char *dir, char *msg)
{
    uint8_t pos[DBKEY_MAX];
    MDB_dbi dbis[3] = {st->seqs, st->evicted, st->finished};
    size_t hdrs[3] = {REC_HDR, EVICT_HDR, FIN_HDR};
    SS_LOG(SS_LOG_INFO, "store: migrating '%s' from format 1 to format %u "
           "(checksums)", dir, SS_STORE_FORMAT_VERSION);
    for (int i = 0; i < 3; i++) {
        size_t pos_len = 0;
        int rc;
        while ((rc = migrate_chunk(st, dbis[i], hdrs[i], pos, &pos_len,
                                   msg)) == 0)
            ;
        if (rc < 0)
            return rc;
    }
    MDB_txn *t = NULL;
    int rc = mdb_txn_begin(st->env, NULL, 0, &t);
    if (rc != 0)
        return store_mdb_fail(rc, "begin migration", msg);
    int ret = migrate_small(t, st->savers, 0, msg);
    if (ret == 0)
        ret = migrate_small(t, st->counts, COUNTS_BYTES, msg);
    if (ret == 0)
        ret = put_format(t, st, msg);
    if (ret < 0) {
        mdb_txn_abort(t);
        return ret;
    }
    rc = mdb_txn_commit(t);
    if (rc != 0)
        return store_mdb_fail(rc, "commit migration", msg);
    SS_LOG(SS_LOG_INFO, "store: '%s' is now format %u", dir,
           SS_STORE_FORMAT_VERSION);
    return 0;
}

int store_format_check(ss_store *st, const char *dir, char *msg)
{
    MDB_txn *t = NULL;
    MDB_stat ms;
    int rc = mdb_txn_begin(st->env, NULL, 0, &t);
    if (rc != 0)
        return store_mdb_fail(rc, "begin", msg);
    MDB_val k = {sizeof format_key - 1, (void *)(uintptr_t)format_key}, v;
    rc = mdb_get(t, st->counts, &k, &v);
    if (rc == 0) {
        uint32_t ver = v.mv_size == 4 ? ss_le32_get(v.mv_data) : 0;
        mdb_txn_abort(t);
        if (ver == SS_STORE_FORMAT_VERSION)
            return 0;
        snprintf(msg, SS_STORE_MSG,
                 "%.100s/data.mdb has store format %u; this server reads "
                 "format %u (and migrates 1)", dir, ver,
                 SS_STORE_FORMAT_VERSION);
        return SS_ERR_STORE;
    }
    if (rc != MDB_NOTFOUND) {
        mdb_txn_abort(t);
        return store_mdb_fail(rc, "read format version", msg);
    }
    rc = mdb_stat(t, st->savers, &ms);
    size_t n = rc == 0 ? ms.ms_entries : 1;
    if (rc == 0 && (rc = mdb_stat(t, st->seqs, &ms)) == 0)
        n += ms.ms_entries;
    if (n == 0) { /* a new store: format 2 from the start */
        int ret = put_format(t, st, msg);
        if (ret < 0) {
            mdb_txn_abort(t);
            return ret;
        }
        rc = mdb_txn_commit(t);
        return rc ? store_mdb_fail(rc, "commit", msg) : 0;
    }
    mdb_txn_abort(t);
    return migrate_v1(st, dir, msg);
}
