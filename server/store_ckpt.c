/* store_ckpt -- checkpoints of a store whose commits are not synced (the
 * write-ahead log makes writes durable; docs/wal.md, "Power loss").
 *
 * LMDB without sync may lose any commit since the last sync on a power
 * loss, and worse: its newest meta page may reach the disk before the data
 * pages it points to, and a later commit may overwrite pages of the last
 * synced snapshot (LMDB has no page checksums). So at each checkpoint:
 *   1. mdb_env_sync: everything committed, meta pages included, is on disk;
 *   2. LMDB's two meta pages are copied to DATA/checkpoint.meta (CRC32C,
 *      written to a temporary file, fsynced, renamed, directory fsynced);
 *   3. a read transaction is kept open on that snapshot (the "pin"), so no
 *      later commit reuses a page the snapshot references.
 * At open, a data.mdb whose meta pages differ from DATA/checkpoint.meta gets
 * them back (and lock.mdb is removed, holding no process): LMDB then opens
 * the checkpoint's snapshot, intact by the pin, and the log replays every
 * group after its applied LSN. After a kill -9 that is the same state the
 * newest meta had (replay redoes it); after a power loss it is the only
 * consistent one.
 *
 * File: "SSCKPT01" u32 page size u32 CRC32C (of everything after it)
 *       u64 txnid, then 2 * page size bytes (pages 0 and 1 of data.mdb).
 */
#include "store.h"

#include <errno.h>
#include <fcntl.h>
#include <lmdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "atomic_file.h"
#include "ss_crc32c.h"
#include "ss_error.h"
#include "ss_log.h"
#include "store_internal.h"

#define CKPT_MAGIC "SSCKPT01"
#define CKPT_HDR 24u
#define CKPT_PSIZE_MAX 65536u

static int read_full(int fd, void *buf, size_t n, off_t off)
{
    uint8_t *p = buf;
    while (n > 0) {
        ssize_t r = pread(fd, p, n, off);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        p += r;
        n -= (size_t)r;
        off += r;
    }
    return 0;
}

int store_ckpt_restore(const char *dir, char *msg)
{
    char path[4096], db[4096];
    uint8_t *buf = NULL, *cur = NULL;
    int fd = -1, dfd = -1, ret = 0;
    snprintf(path, sizeof path, "%s/checkpoint.meta", dir);
    snprintf(db, sizeof db, "%s/data.mdb", dir);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0; /* no checkpoint of an unsynced store */
    struct stat sb;
    char wal[4096];
    snprintf(wal, sizeof wal, "%s/wal", dir);
    if (stat(wal, &sb) != 0) {
        /* Without the log that replays what followed, going back would
         * lose it: keep LMDB's newest state. */
        SS_LOG(SS_LOG_WARN, "store: %s exists but %s does not: not going "
               "back to the checkpoint", path, wal);
        goto out;
    }
    uint8_t hdr[CKPT_HDR];
    if (fstat(fd, &sb) != 0 || read_full(fd, hdr, CKPT_HDR, 0) != 0 ||
        memcmp(hdr, CKPT_MAGIC, 8) != 0)
        goto bad;
    uint32_t psize = ss_le32_get(hdr + 8);
    if (psize < 512 || psize > CKPT_PSIZE_MAX ||
        (uint64_t)sb.st_size != CKPT_HDR + 2ull * psize)
        goto bad;
    buf = malloc(2u * psize);
    cur = malloc(2u * psize);
    if (!buf || !cur) {
        ret = SS_ERR_NOMEM;
        snprintf(msg, SS_STORE_MSG, "out of memory");
        goto out;
    }
    if (read_full(fd, buf, 2u * psize, CKPT_HDR) != 0)
        goto bad;
    uint32_t crc = ss_crc32c(0, hdr + 16, 8);
    crc = ss_crc32c(crc, buf, 2u * psize);
    if (crc != ss_le32_get(hdr + 12))
        goto bad;
    dfd = open(db, O_RDWR | O_CLOEXEC);
    if (dfd < 0 || fstat(dfd, &sb) != 0 || (uint64_t)sb.st_size < 2ull * psize)
        goto out; /* missing or empty: the log's marker check refuses it */
    if (read_full(dfd, cur, 2u * psize, 0) != 0) {
        ret = SS_ERR_IO;
        snprintf(msg, SS_STORE_MSG, "read %.200s: %s", db, strerror(errno));
        goto out;
    }
    if (memcmp(cur, buf, 2u * psize) == 0)
        goto out; /* stopped at its checkpoint */
    if (pwrite(dfd, buf, 2u * psize, 0) != (ssize_t)(2u * psize) ||
        fdatasync(dfd) != 0) {
        ret = SS_ERR_IO;
        snprintf(msg, SS_STORE_MSG, "restore the checkpoint's meta pages of "
                 "%.150s: %s", db, strerror(errno));
        goto out;
    }
    snprintf(path, sizeof path, "%s/lock.mdb", dir);
    unlink(path);
    SS_LOG(SS_LOG_INFO, "store: '%s' back at its last checkpoint (LMDB "
           "transaction %llu); the write-ahead log replays what followed", dir,
           (unsigned long long)ss_le64_get(hdr + 16));
    goto out;
bad:
    ret = SS_ERR_STORE;
    snprintf(msg, SS_STORE_MSG, "%.200s is damaged", path);
out:
    if (dfd >= 0)
        close(dfd);
    if (fd >= 0)
        close(fd);
    free(buf);
    free(cur);
    return ret;
}

/* Copy the (synced) meta pages into DATA/checkpoint.meta. */
static int save_meta(ss_store *st, char *msg)
{
    char db[4096], path[4096], err[256];
    snprintf(db, sizeof db, "%s/data.mdb", st->dir);
    snprintf(path, sizeof path, "%s/checkpoint.meta", st->dir);
    size_t n = 2u * (size_t)st->psize;
    uint8_t *pages = malloc(n);
    if (!pages) {
        snprintf(msg, SS_STORE_MSG, "out of memory");
        return SS_ERR_NOMEM;
    }
    int ret = 0;
    int fd = open(db, O_RDONLY | O_CLOEXEC);
    if (fd < 0 || read_full(fd, pages, n, 0) != 0) {
        snprintf(msg, SS_STORE_MSG, "read meta pages of %.200s: %s", db,
                 strerror(errno));
        ret = SS_ERR_IO;
        goto out;
    }
    uint8_t hdr[CKPT_HDR];
    memcpy(hdr, CKPT_MAGIC, 8);
    ss_le32_put(hdr + 8, (uint32_t)st->psize);
    ss_le64_put(hdr + 16, ss_store_last_txnid(st));
    uint32_t crc = ss_crc32c(0, hdr + 16, 8);
    ss_le32_put(hdr + 12, ss_crc32c(crc, pages, n));
    ss_afile *af = NULL;
    if (ss_afile_open(path, &af, err, sizeof err) < 0) {
        snprintf(msg, SS_STORE_MSG, "%s", err);
        ret = SS_ERR_IO;
        goto out;
    }
    FILE *f = ss_afile_stream(af);
    if (fwrite(hdr, 1, sizeof hdr, f) != sizeof hdr ||
        fwrite(pages, 1, n, f) != n) {
        ss_afile_abort(af);
        snprintf(msg, SS_STORE_MSG, "write %.200s", path);
        ret = SS_ERR_IO;
        goto out;
    }
    if (ss_afile_commit(af, err, sizeof err) < 0) {
        snprintf(msg, SS_STORE_MSG, "%s", err);
        ret = SS_ERR_IO;
    }
out:
    if (fd >= 0)
        close(fd);
    free(pages);
    return ret;
}

int ss_store_pin(ss_store *st, char msg[SS_STORE_MSG])
{
    if (st->pin)
        return 0;
    int rc = mdb_txn_begin(st->env, NULL, MDB_RDONLY, &st->pin);
    if (rc != 0) {
        st->pin = NULL;
        return store_mdb_fail(rc, "pin the checkpoint's snapshot", msg);
    }
    return 0;
}

int ss_store_checkpoint(ss_store *st, bool pin, char msg[SS_STORE_MSG])
{
    int rc = mdb_env_sync(st->env, 1);
    if (rc != 0)
        return store_mdb_fail(rc, "sync", msg);
    if (!pin) {
        /* Synced commits from now on: an old copy must not come back. */
        char path[4096];
        snprintf(path, sizeof path, "%s/checkpoint.meta", st->dir);
        if (unlink(path) != 0 && errno != ENOENT) {
            snprintf(msg, SS_STORE_MSG, "remove %.200s: %s", path,
                     strerror(errno));
            return SS_ERR_IO;
        }
        if (st->pin) {
            mdb_txn_abort(st->pin);
            st->pin = NULL;
        }
        return 0;
    }
    int ret = save_meta(st, msg);
    if (ret < 0)
        return ret;
    MDB_txn *t = NULL;
    rc = mdb_txn_begin(st->env, NULL, MDB_RDONLY, &t);
    if (rc != 0)
        return store_mdb_fail(rc, "pin the checkpoint's snapshot", msg);
    if (st->pin)
        mdb_txn_abort(st->pin);
    st->pin = t;
    st->ckpt_wanted = false;
    return 0;
}

bool ss_store_checkpoint_wanted(const ss_store *st)
{
    return st->ckpt_wanted;
}
