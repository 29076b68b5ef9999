/* wal_segment -- the log's segment files: names, headers, record header
 * decoding, creation (preallocated and zero-filled, so a later fdatasync
 * never changes size or extent metadata), activation of the next segment
 * from the spare pool, and recycling at checkpoint.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ss_crc32c.h"
#include "ss_error.h"
#include "ss_log.h"
#include "wal_internal.h"

void wal_seg_name(char *out, uint64_t seq)
{
    snprintf(out, WAL_NAME_MAX, "%016" PRIx64 ".wal", seq);
}

int wal_fail(ss_wal *w, const char *fmt, ...)
{
    if (w->failed[0] == '\0') {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(w->failed, sizeof w->failed, fmt, ap);
        va_end(ap);
        if (w->failed[0] == '\0')
            snprintf(w->failed, sizeof w->failed, "wal: failed");
        SS_LOG(SS_LOG_ERROR, "%s (the log refuses every write until restart)",
               w->failed);
    }
    return SS_ERR_IO;
}

void wal_seg_hdr_encode(uint8_t out[WAL_SEG_HDR], uint64_t seq,
                        uint64_t start_lsn, uint64_t segment_bytes)
{
    memset(out, 0, WAL_SEG_HDR);
    wal_put32(out + 4, WAL_SEG_MAGIC);
    wal_put16(out + 8, WAL_SEG_VERSION);
    wal_put16(out + 10, WAL_SEG_HDR);
    wal_put64(out + 16, seq);
    wal_put64(out + 24, start_lsn);
    wal_put64(out + 32, segment_bytes);
    wal_put32(out, ss_crc32c(0, out, WAL_SEG_HDR));
}

int wal_seg_hdr_decode(const uint8_t *p, size_t n, wal_seg_hdr *h)
{
    if (n < WAL_SEG_HDR)
        return 0;
    uint8_t tmp[WAL_SEG_HDR];
    memcpy(tmp, p, WAL_SEG_HDR);
    memset(tmp, 0, 4);
    h->crc = wal_get32(p);
    h->magic = wal_get32(p + 4);
    h->version = wal_get16(p + 8);
    h->hdr_bytes = wal_get16(p + 10);
    h->seq = wal_get64(p + 16);
    h->start_lsn = wal_get64(p + 24);
    h->segment_bytes = wal_get64(p + 32);
    if (h->magic != WAL_SEG_MAGIC || ss_crc32c(0, tmp, WAL_SEG_HDR) != h->crc)
        return 0;
    if (h->version != WAL_SEG_VERSION || h->hdr_bytes != WAL_SEG_HDR)
        return -1;
    if (h->segment_bytes < WAL_SEG_HDR + WAL_REC_HDR)
        return 0;
    return 1;
}

void wal_rec_decode(const uint8_t *p, wal_rec *r)
{
    r->crc = wal_get32(p);
    r->len = wal_get32(p + 4);
    r->lsn = wal_get64(p + 8);
    r->synced_lsn = wal_get64(p + 16);
    r->prev_crc = wal_get32(p + 24);
    r->type = wal_get16(p + 28);
    r->magic = wal_get16(p + 30);
}

uint32_t wal_rec_crc(const uint8_t *p, uint32_t len)
{
    static const uint8_t zero4[4] = {0, 0, 0, 0};
    uint32_t c = ss_crc32c(0, zero4, 4);
    c = ss_crc32c(c, p + 4, WAL_REC_HDR - 4);
    return ss_crc32c(c, p + WAL_REC_HDR, (size_t)(wal_rec_size(len) - WAL_REC_HDR));
}

int wal_dir_sync(ss_wal *w)
{
    if (fsync(w->dirfd) != 0)
        return wal_fail(w, "wal: fsync of directory %s: %s", w->dir,
                        strerror(errno));
    return 0;
}

int wal_zero_range(int fd, uint64_t from, uint64_t to)
{
    static const uint8_t zeros[4096];
    uint8_t *big = NULL;
    const uint8_t *src = zeros;
    size_t chunk = sizeof zeros;
    if (to - from > sizeof zeros) {
        big = calloc(1, WAL_ZERO_CHUNK);
        if (big) {
            src = big;
            chunk = WAL_ZERO_CHUNK;
        }
    }
    int rc = 0;
    while (from < to) {
        size_t n = (size_t)(to - from < chunk ? to - from : chunk);
        ssize_t k = pwrite(fd, src, n, (off_t)from);
        if (k < 0) {
            if (errno == EINTR)
                continue;
            rc = -errno;
            break;
        }
        if (k == 0) {
            rc = -EIO;
            break;
        }
        from += (uint64_t)k;
    }
    free(big);
    return rc;
}

int wal_seg_create(ss_wal *w, uint64_t seq, uint64_t size)
{
    char name[WAL_NAME_MAX], tmp[WAL_NAME_MAX + 8];
    wal_seg_name(name, seq);
    snprintf(tmp, sizeof tmp, "%s.tmp", name);
    int rc = 0;
    int fd = openat(w->dirfd, tmp, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return -errno;
    int e = posix_fallocate(fd, 0, (off_t)size);
    if (e != 0 && e != EOPNOTSUPP && e != EINVAL) {
        rc = -e;
        goto fail;
    }
    /* Write real zeros: fallocated extents are "unwritten" and the first
     * write into them would make fdatasync journal an extent change. */
    rc = wal_zero_range(fd, 0, size);
    if (rc != 0)
        goto fail;
    if (fdatasync(fd) != 0) {
        rc = -errno;
        goto fail;
    }
    if (close(fd) != 0) {
        fd = -1;
        rc = -errno;
        goto fail;
    }
    fd = -1;
    if (renameat(w->dirfd, tmp, w->dirfd, name) != 0) {
        rc = -errno;
        goto fail;
    }
    if (fsync(w->dirfd) != 0)
        return -errno;
    if (seq > w->max_seq)
        w->max_seq = seq;
    return 0;
fail:
    if (fd >= 0)
        close(fd);
    unlinkat(w->dirfd, tmp, 0);
    return rc;
}

int wal_seg_open_write(ss_wal *w, uint64_t seq)
{
    char name[WAL_NAME_MAX];
    wal_seg_name(name, seq);
    int flags = O_RDWR | O_CLOEXEC;
    if (w->sync == SS_WAL_SYNC_ODSYNC)
        flags |= O_DSYNC;
    int fd = openat(w->dirfd, name, flags);
    return fd < 0 ? -errno : fd;
}

int wal_spare_add(ss_wal *w, uint64_t seq)
{
    if (w->nspares == w->capspares) {
        size_t nc = w->capspares ? w->capspares * 2 : 8;
        uint64_t *p = realloc(w->spares, nc * sizeof *p);
        if (!p)
            return SS_ERR_NOMEM;
        w->spares = p;
        w->capspares = nc;
    }
    w->spares[w->nspares++] = seq;
    if (seq > w->max_seq)
        w->max_seq = seq;
    return 0;
}

int wal_seg_push(ss_wal *w, const wal_seg *s)
{
    if (w->nsegs == w->capsegs) {
        size_t nc = w->capsegs ? w->capsegs * 2 : 16;
        wal_seg *p = realloc(w->segs, nc * sizeof *p);
        if (!p)
            return SS_ERR_NOMEM;
        w->segs = p;
        w->capsegs = nc;
    }
    w->segs[w->nsegs++] = *s;
    if (s->seq > w->max_seq)
        w->max_seq = s->seq;
    return 0;
}

int wal_activate(ss_wal *w, uint64_t start_lsn, uint64_t size)
{
    char name[WAL_NAME_MAX], from[WAL_NAME_MAX];
    int rc;
    if (w->fd >= 0) {
        /* The full segment is durable before anything goes to the next,
         * so a valid next header proves the previous segment complete. */
        if (w->fd_dirty && w->sync == SS_WAL_SYNC_FDATASYNC &&
            fdatasync(w->fd) != 0) {
            wal_seg_name(name, w->segs[w->nsegs - 1].seq);
            return wal_fail(w, "wal: fdatasync %s: %s", name, strerror(errno));
        }
        w->fd_dirty = false;
        close(w->fd);
        w->fd = -1;
    }
    uint64_t seq = w->nsegs ? w->segs[w->nsegs - 1].seq + 1 : w->max_seq + 1;
    wal_seg_name(name, seq);
    size_t pick = w->nspares;
    if (size == w->seg_bytes) {
        for (size_t i = 0; i < w->nspares; i++)
            if (w->spares[i] == seq)
                pick = i;
        if (pick == w->nspares && w->nspares > 0)
            pick = 0;
    }
    if (pick < w->nspares) {
        uint64_t sseq = w->spares[pick];
        w->spares[pick] = w->spares[--w->nspares];
        if (sseq != seq) {
            wal_seg_name(from, sseq);
            if (renameat(w->dirfd, from, w->dirfd, name) != 0)
                return wal_fail(w, "wal: rename %s to %s: %s", from, name,
                                strerror(errno));
            if ((rc = wal_dir_sync(w)) != 0)
                return rc;
        }
    } else {
        rc = wal_seg_create(w, seq, size);
        if (rc != 0)
            return wal_fail(w, "wal: cannot create segment %s/%s: %s", w->dir,
                            name, strerror(-rc));
    }
    int fd = wal_seg_open_write(w, seq);
    if (fd < 0)
        return wal_fail(w, "wal: open %s: %s", name, strerror(-fd));
    wal_seg s = {.seq = seq, .start_lsn = start_lsn, .end_lsn = start_lsn,
                 .size = size};
    if ((rc = wal_seg_push(w, &s)) != 0) {
        close(fd);
        return rc;
    }
    w->fd = fd;
    w->off = 0;
    w->hdr_pending = true;
    w->fd_dirty = false;
    return 0;
}

int wal_recycle(ss_wal *w, uint64_t lsn, bool all)
{
    size_t keep_last = all ? 0 : 1;
    size_t n = 0;
    int rc = 0;
    bool changed = false;
    while (n + keep_last < w->nsegs && w->segs[n].end_lsn <= lsn) {
        const wal_seg *s = &w->segs[n];
        char name[WAL_NAME_MAX], to[WAL_NAME_MAX];
        wal_seg_name(name, s->seq);
        if (all && n + 1 == w->nsegs && w->fd >= 0) {
            close(w->fd);
            w->fd = -1;
        }
        if (w->nspares < SS_WAL_SPARES && s->size == w->seg_bytes) {
            uint64_t nseq = w->max_seq + 1;
            wal_seg_name(to, nseq);
            if (renameat(w->dirfd, name, w->dirfd, to) != 0) {
                SS_LOG(SS_LOG_ERROR, "wal: recycle %s as %s: %s", name, to,
                       strerror(errno));
                rc = SS_ERR_IO;
                break;
            }
            if ((rc = wal_spare_add(w, nseq)) != 0)
                break;
        } else if (unlinkat(w->dirfd, name, 0) != 0) {
            SS_LOG(SS_LOG_ERROR, "wal: delete %s: %s", name, strerror(errno));
            rc = SS_ERR_IO;
            break;
        }
        changed = true;
        n++;
    }
    if (n > 0) {
        memmove(w->segs, w->segs + n, (w->nsegs - n) * sizeof *w->segs);
        w->nsegs -= n;
    }
    if (changed) {
        int r2 = wal_dir_sync(w);
        if (rc == 0)
            rc = r2;
    }
    return rc;
}
