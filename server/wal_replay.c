/* wal_replay -- opening the write-ahead log: list the segment files, scan
 * the live ones in order verifying headers, every record's CRC, LSN and
 * chain, hand records after the checkpoint to the caller, tell a torn tail
 * (the end of the log) from mid-log corruption, and set up appending after
 * the last good record.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "ss_error.h"
#include "ss_log.h"
#include "wal_internal.h"

/* One *.wal file found in the directory. */
typedef struct seg_file {
    uint64_t seq;     /* from the file name */
    int hdr;          /* wal_seg_hdr_decode result */
    wal_seg_hdr h;    /* header, when hdr == 1 */
    uint64_t fsize;   /* file size */
    bool gone;        /* deleted while opening */
} seg_file;

/* A read-only mapping of one segment file. */
typedef struct seg_map {
    const uint8_t *p; /* mapping, NULL when empty */
    size_t size;      /* bytes mapped (the file's size, capped) */
} seg_map;

static int cmp_seq(const void *a, const void *b)
{
    uint64_t x = ((const seg_file *)a)->seq, y = ((const seg_file *)b)->seq;
    return x < y ? -1 : x > y;
}

static bool parse_seg_name(const char *name, uint64_t *seq)
{
    if (strlen(name) != 20 || strcmp(name + 16, ".wal") != 0)
        return false;
    uint64_t v = 0;
    for (int i = 0; i < 16; i++) {
        char c = name[i];
        int d;
        if (c >= '0' && c <= '9')
            d = c - '0';
        else if (c >= 'a' && c <= 'f')
            d = c - 'a' + 10;
        else
            return false;
        v = (v << 4) | (uint64_t)d;
    }
    *seq = v;
    return true;
}

static int list_segments(ss_wal *w, seg_file **out, size_t *nout, char *msg,
                         size_t msgsz)
{
    seg_file *v = NULL;
    size_t n = 0, cap = 0;
    int rc = 0;
    int dfd = dup(w->dirfd);
    DIR *d = dfd >= 0 ? fdopendir(dfd) : NULL;
    if (!d) {
        if (dfd >= 0)
            close(dfd);
        snprintf(msg, msgsz, "wal: cannot list %s: %s", w->dir, strerror(errno));
        return SS_ERR_IO;
    }
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        size_t L = strlen(e->d_name);
        if ((L > 8 && strcmp(e->d_name + L - 8, ".wal.tmp") == 0) ||
            strncmp(e->d_name, "marker.tmp-", 11) == 0) {
            unlinkat(w->dirfd, e->d_name, 0); /* a crash while creating */
            continue;
        }
        uint64_t seq;
        if (!parse_seg_name(e->d_name, &seq))
            continue;
        if (n == cap) {
            size_t nc = cap ? cap * 2 : 16;
            seg_file *p = realloc(v, nc * sizeof *p);
            if (!p) {
                rc = SS_ERR_NOMEM;
                goto done;
            }
            v = p;
            cap = nc;
        }
        seg_file *f = &v[n];
        memset(f, 0, sizeof *f);
        f->seq = seq;
        int fd = openat(w->dirfd, e->d_name, O_RDONLY | O_CLOEXEC);
        struct stat sb;
        uint8_t hb[WAL_SEG_HDR];
        if (fd < 0 || fstat(fd, &sb) != 0) {
            snprintf(msg, msgsz, "wal: cannot open %s/%s: %s", w->dir,
                     e->d_name, strerror(errno));
            if (fd >= 0)
                close(fd);
            rc = SS_ERR_IO;
            goto done;
        }
        ssize_t k = pread(fd, hb, sizeof hb, 0);
        close(fd);
        f->fsize = (uint64_t)sb.st_size;
        f->hdr = wal_seg_hdr_decode(hb, k > 0 ? (size_t)k : 0, &f->h);
        if (f->hdr < 0) {
            snprintf(msg, msgsz, "wal: %s/%s: unsupported log format version %u",
                     w->dir, e->d_name, (unsigned)f->h.version);
            rc = SS_ERR_FORMAT;
            goto done;
        }
        if (f->hdr == 1 && f->h.seq != seq)
            f->hdr = 0; /* a recycled spare: stale header */
        n++;
    }
    if (n > 1)
        qsort(v, n, sizeof *v, cmp_seq);
done:
    closedir(d);
    if (rc != 0) {
        free(v);
        return rc;
    }
    *out = v;
    *nout = n;
    return 0;
}

static int map_seg(ss_wal *w, const seg_file *f, seg_map *m, char *msg,
                   size_t msgsz)
{
    char name[WAL_NAME_MAX];
    wal_seg_name(name, f->seq);
    m->p = NULL;
    m->size = (size_t)f->fsize;
    if (f->hdr == 1 && f->h.segment_bytes < m->size)
        m->size = (size_t)f->h.segment_bytes;
    if (m->size == 0)
        return 0;
    int fd = openat(w->dirfd, name, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        snprintf(msg, msgsz, "wal: cannot open %s/%s: %s", w->dir, name,
                 strerror(errno));
        return SS_ERR_IO;
    }
    void *p = mmap(NULL, m->size, PROT_READ, MAP_PRIVATE, fd, 0);
    int e = errno;
    close(fd);
    if (p == MAP_FAILED) {
        snprintf(msg, msgsz, "wal: cannot map %s/%s: %s", w->dir, name,
                 strerror(e));
        return SS_ERR_IO;
    }
    madvise(p, m->size, MADV_SEQUENTIAL);
    m->p = p;
    return 0;
}

static void unmap_seg(seg_map *m)
{
    if (m->p)
        munmap((void *)(uintptr_t)m->p, m->size);
    m->p = NULL;
}

/* A record of this segment incarnation at pos: magic, length in bounds,
 * LSN matching its position (start + pos - header + size), CRC. */
static bool rec_valid(const seg_map *m, uint64_t pos, uint64_t start_lsn,
                      wal_rec *r)
{
    if (pos + WAL_REC_HDR > m->size)
        return false;
    const uint8_t *p = m->p + pos;
    if (wal_get16(p + 30) != WAL_REC_MAGIC)
        return false;
    wal_rec_decode(p, r);
    if (r->len > SS_WAL_RECORD_MAX)
        return false;
    uint64_t z = wal_rec_size(r->len);
    if (z > m->size - pos || r->lsn != start_lsn + (pos - WAL_SEG_HDR) + z)
        return false;
    return wal_rec_crc(p, r->len) == r->crc;
}

/* Look from `from` on (8-byte steps) for a valid record that was appended
 * after the log was durable beyond end_lsn: proof that the record at the
 * end was once durable, so its damage is corruption, not a torn write.
 * Returns the offset or -1. */
static int64_t find_evidence(const seg_map *m, uint64_t from, uint64_t start_lsn,
                             uint64_t end_lsn)
{
    for (uint64_t pos = (from + 7u) & ~(uint64_t)7u;
         pos + WAL_REC_HDR <= m->size; pos += 8) {
        const uint8_t *p = m->p + pos;
        if (wal_get16(p + 30) != WAL_REC_MAGIC || wal_get64(p + 16) <= end_lsn)
            continue;
        wal_rec r;
        if (rec_valid(m, pos, start_lsn, &r))
            return (int64_t)pos;
    }
    return -1;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void read_env_hook(ss_wal *w)
{
    w->fail_after = -1;
    const char *v = getenv("SS_WAL_FAIL_SYNC_AFTER");
    if (!v || !*v)
        return;
    char *end = NULL;
    errno = 0;
    long n = strtol(v, &end, 10);
    if (errno == 0 && end && *end == '\0' && n >= 0) {
        w->fail_after = n;
        SS_LOG(SS_LOG_WARN, "wal: test hook SS_WAL_FAIL_SYNC_AFTER=%ld armed", n);
    }
}

/* Cut the log at (file f, pos): erase the rest of that segment and delete
 * every later segment file. */
static int cut_log(ss_wal *w, seg_file *files, size_t nfiles, size_t fi,
                   uint64_t pos, char *msg, size_t msgsz)
{
    char name[WAL_NAME_MAX];
    wal_seg_name(name, files[fi].seq);
    int fd = openat(w->dirfd, name, O_RDWR | O_CLOEXEC);
    int rc = fd < 0 ? -errno : 0;
    if (rc == 0)
        rc = wal_zero_range(fd, pos, files[fi].fsize > pos ? files[fi].fsize : pos);
    if (rc == 0 && fdatasync(fd) != 0)
        rc = -errno;
    if (fd >= 0)
        close(fd);
    for (size_t j = fi + 1; rc == 0 && j < nfiles; j++) {
        wal_seg_name(name, files[j].seq);
        if (unlinkat(w->dirfd, name, 0) != 0)
            rc = -errno;
        files[j].gone = true;
    }
    if (rc == 0 && fsync(w->dirfd) != 0)
        rc = -errno;
    if (rc != 0) {
        snprintf(msg, msgsz, "wal: cannot truncate the log at %s: %s", name,
                 strerror(-rc));
        return SS_ERR_IO;
    }
    return 0;
}

int ss_wal_open(ss_wal **out, const ss_wal_options *o, uint64_t after_lsn,
                ss_wal_record_fn fn, void *arg, ss_wal_replay_stats *st,
                char *msg, size_t msgsz)
{
    char scratch[8];
    if (!msg || msgsz == 0) {
        msg = scratch;
        msgsz = sizeof scratch;
    }
    msg[0] = '\0';
    if (!out || !o || !o->dir) {
        snprintf(msg, msgsz, "wal: bad arguments");
        return SS_ERR_INVALID;
    }
    *out = NULL;
    ss_wal_replay_stats stats = {0};
    uint64_t seg_bytes = o->segment_bytes ? o->segment_bytes
                                          : SS_WAL_SEGMENT_BYTES_DEFAULT;
    if (seg_bytes < SS_WAL_SEGMENT_BYTES_MIN || seg_bytes > SS_WAL_SEGMENT_BYTES_MAX ||
        seg_bytes % 4096u != 0) {
        snprintf(msg, msgsz, "wal: segment size %" PRIu64 " is not a multiple of "
                 "4096 in [%u, %u]", seg_bytes, SS_WAL_SEGMENT_BYTES_MIN,
                 SS_WAL_SEGMENT_BYTES_MAX);
        return SS_ERR_INVALID;
    }
    if (o->sync != SS_WAL_SYNC_FDATASYNC && o->sync != SS_WAL_SYNC_ODSYNC) {
        snprintf(msg, msgsz, "wal: unknown sync method %d", (int)o->sync);
        return SS_ERR_INVALID;
    }
    int rc = 0;
    seg_file *files = NULL;
    size_t nfiles = 0;
    seg_map m = {0}, m2 = {0};
    double t0 = now_s();
    ss_wal *w = calloc(1, sizeof *w);
    if (!w || !(w->dir = strdup(o->dir))) {
        free(w);
        snprintf(msg, msgsz, "wal: out of memory");
        return SS_ERR_NOMEM;
    }
    w->fd = -1;
    w->dirfd = -1;
    w->seg_bytes = seg_bytes;
    w->sync = o->sync;
    read_env_hook(w);
    if (mkdir(o->dir, 0755) != 0 && errno != EEXIST) {
        snprintf(msg, msgsz, "wal: cannot create %s: %s", o->dir, strerror(errno));
        rc = SS_ERR_IO;
        goto fail;
    }
    w->dirfd = open(o->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (w->dirfd < 0) {
        snprintf(msg, msgsz, "wal: cannot open %s: %s", o->dir, strerror(errno));
        rc = SS_ERR_IO;
        goto fail;
    }
    if ((rc = wal_marker_load(w, msg, msgsz)) != 0)
        goto fail;
    if ((rc = list_segments(w, &files, &nfiles, msg, msgsz)) != 0)
        goto fail;
    for (size_t i = 0; i < nfiles; i++)
        if (files[i].seq > w->max_seq)
            w->max_seq = files[i].seq;

    /* The live run: the first file with a valid header, then each next
     * sequence number whose header continues the stream exactly. */
    size_t first = 0;
    while (first < nfiles && files[first].hdr != 1)
        first++;
    uint64_t s = 0, end_pos = 0;
    uint32_t last_crc = 0;
    size_t fi = first;
    bool have_live = first < nfiles;
    if (have_live) {
        s = files[first].h.start_lsn;
        bool first_rec = true;
        for (;;) {
            seg_file *f = &files[fi];
            if ((rc = map_seg(w, f, &m, msg, msgsz)) != 0)
                goto fail;
            uint64_t pos = WAL_SEG_HDR;
            wal_rec r;
            while (rec_valid(&m, pos, f->h.start_lsn, &r) &&
                   (first_rec || r.prev_crc == last_crc)) {
                first_rec = false;
                if (r.lsn > after_lsn) {
                    if (fn) {
                        rc = fn(arg, r.lsn, r.type, m.p + pos + WAL_REC_HDR, r.len);
                        if (rc != 0) {
                            snprintf(msg, msgsz, "wal: replay stopped at LSN "
                                     "%" PRIu64 ": %s", r.lsn, ss_strerror(rc));
                            goto fail;
                        }
                    }
                    if (stats.records == 0)
                        stats.first_lsn = r.lsn;
                    stats.records++;
                    stats.bytes += wal_rec_size(r.len);
                    stats.last_lsn = r.lsn;
                }
                stats.scanned_records++;
                s = r.lsn;
                last_crc = r.crc;
                pos += wal_rec_size(r.len);
            }
            end_pos = pos;
            wal_seg seg = {.seq = f->seq, .start_lsn = f->h.start_lsn,
                           .end_lsn = s, .size = f->h.segment_bytes};
            if ((rc = wal_seg_push(w, &seg)) != 0)
                goto fail;
            if (fi + 1 < nfiles && files[fi + 1].seq == f->seq + 1 &&
                files[fi + 1].hdr == 1 && files[fi + 1].h.start_lsn == s) {
                unmap_seg(&m);
                fi++;
                continue;
            }
            break;
        }

        /* The log ends in files[fi] at end_pos. Torn tail or corruption? */
        seg_file *f = &files[fi];
        char name[WAL_NAME_MAX], ename[WAL_NAME_MAX];
        wal_seg_name(name, f->seq);
        if (f->fsize < f->h.segment_bytes)
            stats.torn_tail = true;
        else if (end_pos + WAL_REC_HDR <= m.size) {
            const uint8_t *p = m.p + end_pos;
            bool zero = true;
            for (unsigned k = 0; k < WAL_REC_HDR; k++)
                zero = zero && p[k] == 0;
            bool stale = wal_get16(p + 30) == WAL_REC_MAGIC && wal_get64(p + 8) <= s;
            stats.torn_tail = !zero && !stale;
        }
        int64_t ev = find_evidence(&m, end_pos + 8, f->h.start_lsn, s);
        size_t evf = fi;
        for (size_t j = fi + 1; ev < 0 && j < nfiles; j++) {
            if (files[j].hdr == 1 && files[j].h.start_lsn > s) {
                ev = 0;
                evf = j;
            } else if (j == fi + 1 && files[j].seq == f->seq + 1 &&
                       files[j].hdr != 1) {
                if ((rc = map_seg(w, &files[j], &m2, msg, msgsz)) != 0)
                    goto fail;
                ev = find_evidence(&m2, WAL_SEG_HDR, s, s);
                unmap_seg(&m2);
                if (ev >= 0)
                    evf = j;
            }
        }
        unmap_seg(&m);
        if (ev >= 0) {
            wal_seg_name(ename, files[evf].seq);
            bool next_here = fi + 1 < nfiles && files[fi + 1].seq == f->seq + 1;
            char nname[WAL_NAME_MAX];
            wal_seg_name(nname, f->seq + 1);
            if (evf == fi || (next_here && files[fi + 1].hdr == 1))
                snprintf(msg, msgsz, "wal: corrupt record in %s/%s at offset "
                         "%" PRIu64 " (after LSN %" PRIu64 "; valid records "
                         "written later follow in %s at offset %" PRId64 ")",
                         w->dir, name, end_pos, s, ename, ev);
            else if (next_here)
                snprintf(msg, msgsz, "wal: corrupt segment header in %s/%s at "
                         "offset 0 (the log ends in %s at offset %" PRIu64
                         ", after LSN %" PRIu64 "; valid records written later "
                         "follow in %s at offset %" PRId64 ")", w->dir, nname,
                         name, end_pos, s, ename, ev);
            else
                snprintf(msg, msgsz, "wal: segment %s/%s is missing (the log "
                         "ends in %s at offset %" PRIu64 ", after LSN %" PRIu64
                         ", and continues in %s)", w->dir, nname, name, end_pos,
                         s, ename);
            if (!o->truncate_corrupt) {
                rc = SS_ERR_FORMAT;
                goto fail;
            }
            SS_LOG(SS_LOG_ERROR, "%s: TRUNCATING THE LOG THERE (operator flag): "
                   "every record after LSN %" PRIu64 " is DISCARDED", msg, s);
            if ((rc = cut_log(w, files, nfiles, fi, end_pos, msg, msgsz)) != 0)
                goto fail;
            stats.truncated = true;
            stats.torn_tail = false;
            msg[0] = '\0';
        }
        if (w->segs[0].start_lsn > after_lsn) {
            wal_seg_name(name, w->segs[0].seq);
            snprintf(msg, msgsz, "wal: records after LSN %" PRIu64 " are needed "
                     "but the log in %s starts at LSN %" PRIu64 " (%s): a segment "
                     "is missing or damaged", after_lsn, w->dir,
                     w->segs[0].start_lsn, name);
            if (!o->truncate_corrupt) {
                rc = SS_ERR_FORMAT;
                goto fail;
            }
            SS_LOG(SS_LOG_ERROR, "%s: STARTING ANYWAY (operator flag)", msg);
            msg[0] = '\0';
        }
    }
    for (size_t i = 0; i < nfiles; i++) {
        bool live = have_live && i >= first && i <= fi;
        if (live || files[i].gone)
            continue;
        if (files[i].fsize != seg_bytes) {
            /* Not reusable as it is (another size, or shortened). */
            char name[WAL_NAME_MAX];
            wal_seg_name(name, files[i].seq);
            if (unlinkat(w->dirfd, name, 0) != 0) {
                snprintf(msg, msgsz, "wal: cannot delete %s/%s: %s", w->dir,
                         name, strerror(errno));
                rc = SS_ERR_IO;
                goto fail;
            }
            continue;
        }
        if ((rc = wal_spare_add(w, files[i].seq)) != 0)
            goto fail;
    }
    if (s < after_lsn) {
        /* The checkpoint is past the log's end (the log lost an unsynced
         * tail LMDB had): everything here is covered; start after it. */
        if (w->nsegs > 0)
            SS_LOG(SS_LOG_WARN, "wal: checkpoint LSN %" PRIu64 " is past the end "
                   "of the log (%" PRIu64 "); continuing from the checkpoint",
                   after_lsn, s);
        if ((rc = wal_recycle(w, UINT64_MAX, true)) != 0) {
            snprintf(msg, msgsz, "wal: cannot recycle the log: %s",
                     w->failed[0] ? w->failed : "rename failed");
            goto fail;
        }
        s = after_lsn;
        last_crc = 0;
    }
    w->last_lsn = w->written_lsn = w->durable_lsn = s;
    w->last_crc = last_crc;
    if (w->nsegs > 0) {
        wal_seg *cur = &w->segs[w->nsegs - 1];
        int fd = wal_seg_open_write(w, cur->seq);
        char name[WAL_NAME_MAX];
        wal_seg_name(name, cur->seq);
        if (fd < 0) {
            snprintf(msg, msgsz, "wal: cannot open %s/%s: %s", w->dir, name,
                     strerror(-fd));
            rc = SS_ERR_IO;
            goto fail;
        }
        w->fd = fd;
        w->off = end_pos;
        w->hdr_pending = false;
        uint64_t fsize = files[fi].fsize;
        if (fsize < cur->size) {
            /* A shortened last segment: restore its full, written size
             * (made durable by the next sync; until then a crash leaves it
             * as short as it was). */
            int e = wal_zero_range(fd, fsize, cur->size);
            w->fd_dirty = true;
            if (e != 0) {
                snprintf(msg, msgsz, "wal: cannot extend %s/%s: %s", w->dir,
                         name, strerror(-e));
                rc = SS_ERR_IO;
                goto fail;
            }
        }
    }
    stats.seconds = now_s() - t0;
    if (st)
        *st = stats;
    free(files);
    *out = w;
    return 0;
fail:
    unmap_seg(&m);
    unmap_seg(&m2);
    free(files);
    ss_wal_free(w);
    if (msg[0] == '\0')
        snprintf(msg, msgsz, "wal: open %s: %s", o->dir, ss_strerror(rc));
    return rc;
}
