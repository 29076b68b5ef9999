/* wal -- the write-ahead log's write side: buffered append, writing the
 * buffer to segments (one pwritev per contiguous run), fdatasync or
 * O_DSYNC durability, the sticky failure, checkpoint/recycle, the "store
 * holds data" marker and the accessors. Open and replay: wal_replay.c.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include "atomic_file.h"
#include "ss_crc32c.h"
#include "ss_error.h"
#include "ss_log.h"
#include "wal_internal.h"

static int buf_reserve(ss_wal *w, size_t need)
{
    if (need <= w->cap)
        return 0;
    size_t nc = w->cap ? w->cap : (64u << 10);
    while (nc < need)
        nc = nc > SIZE_MAX / 2 ? need : nc * 2;
    uint8_t *p = realloc(w->buf, nc);
    if (!p)
        return SS_ERR_NOMEM;
    w->buf = p;
    w->cap = nc;
    return 0;
}

/* Write iov[0..n) at off, retrying short writes. 0 or -errno. */
static int write_full(int fd, struct iovec *iov, int n, uint64_t off)
{
    while (n > 0) {
        ssize_t k = pwritev(fd, iov, n, (off_t)off);
        if (k < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (k == 0)
            return -EIO;
        off += (uint64_t)k;
        size_t left = (size_t)k;
        while (n > 0 && left >= iov[0].iov_len) {
            left -= iov[0].iov_len;
            iov++;
            n--;
        }
        if (n > 0) {
            iov[0].iov_base = (uint8_t *)iov[0].iov_base + left;
            iov[0].iov_len -= left;
        }
    }
    return 0;
}

/* Write the buffered records to segments (no sync except when a full
 * segment is left). */
static int wal_write_buffer(ss_wal *w)
{
    size_t pos = 0;
    int rc;
    while (pos < w->len) {
        /* Gather the run of records that fits in the current segment. */
        size_t run = 0;
        uint64_t room = 0;
        if (w->fd >= 0) {
            uint64_t at = w->hdr_pending ? WAL_SEG_HDR : w->off;
            uint64_t size = w->segs[w->nsegs - 1].size;
            room = size > at ? size - at : 0;
        }
        while (pos + run < w->len) {
            uint64_t z = wal_rec_size(wal_get32(w->buf + pos + run + 4));
            if (run + z > room)
                break;
            run += (size_t)z;
        }
        if (run == 0) {
            if (w->fd >= 0 && w->hdr_pending)
                return wal_fail(w, "wal: internal error: a record does not fit "
                                "in a new segment");
            uint64_t z = wal_rec_size(wal_get32(w->buf + pos + 4));
            uint64_t size = w->seg_bytes;
            if (WAL_SEG_HDR + z > size)
                size = (WAL_SEG_HDR + z + 4095u) & ~(uint64_t)4095u;
            if ((rc = wal_activate(w, w->written_lsn, size)) != 0)
                return rc;
            continue;
        }
        wal_seg *cur = &w->segs[w->nsegs - 1];
        uint8_t hdr[WAL_SEG_HDR];
        struct iovec iov[2];
        int n = 0;
        uint64_t off = w->off;
        if (w->hdr_pending) {
            wal_seg_hdr_encode(hdr, cur->seq, cur->start_lsn, cur->size);
            iov[n].iov_base = hdr;
            iov[n++].iov_len = WAL_SEG_HDR;
            off = 0;
        }
        iov[n].iov_base = w->buf + pos;
        iov[n++].iov_len = run;
        rc = write_full(w->fd, iov, n, off);
        if (rc != 0) {
            char name[WAL_NAME_MAX];
            wal_seg_name(name, cur->seq);
            return wal_fail(w, "wal: write %s: %s", name, strerror(-rc));
        }
        if (w->hdr_pending) {
            w->hdr_pending = false;
            w->off = WAL_SEG_HDR;
        }
        w->off += run;
        w->fd_dirty = true;
        w->written_lsn += run;
        cur->end_lsn = w->written_lsn;
        pos += run;
    }
    w->len = 0;
    if (w->cap > 2 * (size_t)SS_WAL_GROUP_BYTES) {
        free(w->buf);
        w->buf = NULL;
        w->cap = 0;
    }
    return 0;
}

int ss_wal_appendv(ss_wal *w, uint16_t type, const struct iovec *iov, int n,
                   uint64_t *lsn)
{
    if (!w || n < 0 || (n > 0 && !iov))
        return SS_ERR_INVALID;
    if (w->failed[0])
        return SS_ERR_IO;
    size_t len = 0;
    for (int i = 0; i < n; i++) {
        if (iov[i].iov_len > SS_WAL_RECORD_MAX - len)
            return SS_ERR_TOO_BIG;
        len += iov[i].iov_len;
    }
    uint64_t z = wal_rec_size(len);
    int rc;
    if (w->len > 0 && w->len + z > SS_WAL_GROUP_BYTES &&
        (rc = wal_write_buffer(w)) != 0)
        return rc;
    if ((rc = buf_reserve(w, w->len + (size_t)z)) != 0)
        return rc;
    uint8_t *p = w->buf + w->len;
    uint64_t rec_lsn = w->last_lsn + z;
    memset(p, 0, WAL_REC_HDR);
    wal_put32(p + 4, (uint32_t)len);
    wal_put64(p + 8, rec_lsn);
    wal_put64(p + 16, w->durable_lsn);
    wal_put32(p + 24, w->last_crc);
    wal_put16(p + 28, type);
    wal_put16(p + 30, WAL_REC_MAGIC);
    size_t at = WAL_REC_HDR;
    for (int i = 0; i < n; i++) {
        if (iov[i].iov_len)
            memcpy(p + at, iov[i].iov_base, iov[i].iov_len);
        at += iov[i].iov_len;
    }
    memset(p + at, 0, (size_t)z - at);
    uint32_t crc = wal_rec_crc(p, (uint32_t)len);
    wal_put32(p, crc);
    w->len += (size_t)z;
    w->last_lsn = rec_lsn;
    w->last_crc = crc;
    if (lsn)
        *lsn = rec_lsn;
    return 0;
}

int ss_wal_append(ss_wal *w, uint16_t type, const void *payload, size_t len,
                  uint64_t *lsn)
{
    if (len > 0 && !payload)
        return SS_ERR_INVALID;
    struct iovec v = {.iov_base = (void *)(uintptr_t)payload, .iov_len = len};
    return ss_wal_appendv(w, type, &v, len > 0 ? 1 : 0, lsn);
}

int ss_wal_flush(ss_wal *w)
{
    if (!w)
        return SS_ERR_INVALID;
    if (w->failed[0])
        return SS_ERR_IO;
    return wal_write_buffer(w);
}

int ss_wal_sync(ss_wal *w)
{
    if (!w)
        return SS_ERR_INVALID;
    if (w->failed[0])
        return SS_ERR_IO;
    if (w->len == 0 && w->written_lsn == w->durable_lsn && !w->fd_dirty)
        return 0;
    int rc = wal_write_buffer(w);
    if (rc != 0)
        return rc;
    w->syncs++;
    char name[WAL_NAME_MAX];
    wal_seg_name(name, w->nsegs ? w->segs[w->nsegs - 1].seq : 0);
    if (w->fail_after >= 0 && w->syncs > (uint64_t)w->fail_after)
        return wal_fail(w, "wal: fdatasync %s: %s (injected by "
                        "SS_WAL_FAIL_SYNC_AFTER=%ld)", name, strerror(EIO),
                        w->fail_after);
    if (w->fd_dirty && w->sync == SS_WAL_SYNC_FDATASYNC && fdatasync(w->fd) != 0)
        return wal_fail(w, "wal: fdatasync %s: %s", name, strerror(errno));
    w->fd_dirty = false;
    w->durable_lsn = w->written_lsn;
    return 0;
}

int ss_wal_checkpoint(ss_wal *w, uint64_t lsn)
{
    if (!w)
        return SS_ERR_INVALID;
    if (w->failed[0])
        return SS_ERR_IO;
    return wal_recycle(w, lsn, false);
}

int ss_wal_preallocate(ss_wal *w)
{
    if (!w)
        return SS_ERR_INVALID;
    if (w->failed[0])
        return SS_ERR_IO;
    while (w->nspares < SS_WAL_SPARES) {
        uint64_t seq = w->max_seq + 1;
        int rc = wal_seg_create(w, seq, w->seg_bytes);
        if (rc != 0) {
            SS_LOG(SS_LOG_WARN, "wal: cannot preallocate a segment in %s: %s",
                   w->dir, strerror(-rc));
            return SS_ERR_IO;
        }
        if ((rc = wal_spare_add(w, seq)) != 0)
            return rc;
    }
    return 0;
}

/* Marker file: u32 magic, u32 version, u64 lsn, u32 crc32c of bytes 0..15,
 * u32 zero. */
int wal_marker_load(ss_wal *w, char *msg, size_t msgsz)
{
    uint8_t b[WAL_MARKER_BYTES + 1];
    int fd = openat(w->dirfd, "marker", O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT) {
            w->marker = 0;
            return 0;
        }
        snprintf(msg, msgsz, "wal: cannot open %s/marker: %s", w->dir,
                 strerror(errno));
        return SS_ERR_IO;
    }
    ssize_t n = pread(fd, b, sizeof b, 0);
    int e = errno;
    close(fd);
    if (n < 0) {
        snprintf(msg, msgsz, "wal: cannot read %s/marker: %s", w->dir,
                 strerror(e));
        return SS_ERR_IO;
    }
    if (n != WAL_MARKER_BYTES || wal_get32(b) != WAL_MARKER_MAGIC ||
        wal_get32(b + 4) != WAL_SEG_VERSION ||
        wal_get32(b + 16) != ss_crc32c(0, b, 16) || wal_get64(b + 8) == 0) {
        snprintf(msg, msgsz, "wal: marker file %s/marker is damaged (%zd bytes, "
                 "bad magic, version or CRC)", w->dir, n);
        return SS_ERR_FORMAT;
    }
    w->marker = wal_get64(b + 8);
    return 0;
}

int ss_wal_set_marker(ss_wal *w, uint64_t first_checkpoint_lsn)
{
    if (!w || first_checkpoint_lsn == 0)
        return SS_ERR_INVALID;
    if (w->marker != 0)
        return 0;
    char path[PATH_MAX], err[256];
    snprintf(path, sizeof path, "%s/marker", w->dir);
    uint8_t b[WAL_MARKER_BYTES] = {0};
    wal_put32(b, WAL_MARKER_MAGIC);
    wal_put32(b + 4, WAL_SEG_VERSION);
    wal_put64(b + 8, first_checkpoint_lsn);
    wal_put32(b + 16, ss_crc32c(0, b, 16));
    ss_afile *af = NULL;
    int rc = ss_afile_open(path, &af, err, sizeof err);
    if (rc != 0) {
        SS_LOG(SS_LOG_ERROR, "wal: marker: %s", err);
        return rc;
    }
    if (fwrite(b, 1, sizeof b, ss_afile_stream(af)) != sizeof b) {
        SS_LOG(SS_LOG_ERROR, "wal: marker: write %s: %s", path, strerror(errno));
        ss_afile_abort(af);
        return SS_ERR_IO;
    }
    rc = ss_afile_commit(af, err, sizeof err);
    if (rc != 0) {
        SS_LOG(SS_LOG_ERROR, "wal: marker: %s", err);
        return rc;
    }
    w->marker = first_checkpoint_lsn;
    return 0;
}

uint64_t ss_wal_marker(const ss_wal *w) { return w ? w->marker : 0; }
uint64_t ss_wal_last_lsn(const ss_wal *w) { return w ? w->last_lsn : 0; }
uint64_t ss_wal_durable_lsn(const ss_wal *w) { return w ? w->durable_lsn : 0; }
uint64_t ss_wal_syncs(const ss_wal *w) { return w ? w->syncs : 0; }

uint64_t ss_wal_bytes_since(const ss_wal *w, uint64_t lsn)
{
    if (!w || lsn >= w->last_lsn)
        return 0;
    return w->last_lsn - lsn;
}

const char *ss_wal_failed(const ss_wal *w)
{
    return (w && w->failed[0]) ? w->failed : NULL;
}

void ss_wal_free(ss_wal *w)
{
    if (!w)
        return;
    if (w->fd >= 0)
        close(w->fd);
    if (w->dirfd >= 0)
        close(w->dirfd);
    free(w->buf);
    free(w->segs);
    free(w->spares);
    free(w->dir);
    free(w);
}
