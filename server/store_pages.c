/* store_pages -- reads LMDB's freelist straight from data.mdb (pread, never
 * through the map), to tell a data file whose last pages were simply never
 * written from a truncated one.
 *
 * LMDB does not write pages that a transaction allocated and freed again
 * (loose pages), so after a crash data.mdb can end before LMDB's last page
 * (seen after SIGKILL: 52 pages short). Such missing pages are all free.
 * A file is safe to map when every page past its end is on the freelist;
 * anything else past the end is a truncation (reading it through the map
 * would raise SIGBUS).
 *
 * On-disk layout of LMDB 0.9 (lmdb/mdb.c), native byte order:
 *   page   u64 pgno, u16 pad, u16 flags, u16 lower, u16 upper (overflow
 *          pages: u32 page count instead), then u16 node offsets
 *   node   u16 lo, u16 hi, u16 flags, u16 ksize, key, data; a branch
 *          node's child is lo | hi << 16 | flags << 32, a leaf's data size
 *          lo | hi << 16; F_BIGDATA: data is the u64 first overflow page
 *   meta   page 0 and 1: after the page header u32 magic, u32 version,
 *          u64 address, u64 mapsize, MDB_db free, MDB_db main (48 bytes
 *          each, root at +40), u64 last_pgno, u64 txnid
 *   freelist values: u64 count, then count page numbers
 */
#include "store.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ss_error.h"
#include "store_internal.h"

#define PAGEHDR 16u
#define P_BRANCH 0x01u
#define P_LEAF 0x02u
#define P_OVERFLOW 0x04u
#define F_BIGDATA 0x01u
#define WALK_DEPTH 32      /* deeper than any real tree */
#define WALK_PAGES 1000000 /* pages read at most (bounds a corrupt walk) */
#define P_INVALID UINT64_MAX

typedef struct walk {
    int fd;              /* data.mdb, read only */
    uint64_t psize;      /* page size */
    uint64_t file_pages; /* whole pages in the file */
    uint64_t lo;         /* first missing page */
    uint64_t hi;         /* last page LMDB uses */
    uint8_t *seen;       /* one flag per missing page: on the freelist */
    size_t reads;        /* pages read so far */
} walk;

static uint16_t get16(const uint8_t *p)
{
    uint16_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

static uint64_t get64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

/* Read n pages from pgno into buf; -1 when any lies past the file. */
static int read_pages(walk *w, uint64_t pgno, uint64_t n, uint8_t *buf)
{
    if (pgno >= w->file_pages || n > w->file_pages - pgno ||
        (w->reads += (size_t)n) > WALK_PAGES)
        return -1;
    size_t len = (size_t)(n * w->psize);
    off_t off = (off_t)(pgno * w->psize);
    size_t done = 0;
    while (done < len) {
        ssize_t r = pread(w->fd, buf + done, len - done, off + (off_t)done);
        if (r <= 0) {
            if (r < 0 && errno == EINTR)
                continue;
            return -1;
        }
        done += (size_t)r;
    }
    return 0;
}

static void mark_ids(walk *w, const uint8_t *ids, size_t bytes)
{
    if (bytes < 8)
        return;
    uint64_t n = get64(ids);
    if (n > bytes / 8 - 1)
        n = bytes / 8 - 1;
    for (uint64_t i = 1; i <= n; i++) {
        uint64_t pg = get64(ids + 8 * i);
        if (pg >= w->lo && pg <= w->hi)
            w->seen[pg - w->lo] = 1;
    }
}

/* Walk the freelist tree below pgno, marking the free missing pages. */
static int walk_tree(walk *w, uint64_t pgno, int depth)
{
    if (depth > WALK_DEPTH)
        return -1;
    uint8_t *p = malloc((size_t)w->psize);
    int ret = 0;
    if (!p)
        return -1;
    if (read_pages(w, pgno, 1, p) < 0 || get64(p) != pgno) {
        ret = -1;
        goto out;
    }
    uint16_t flags = get16(p + 10), lower = get16(p + 12);
    if (!(flags & (P_BRANCH | P_LEAF)) || lower < PAGEHDR ||
        lower > w->psize) {
        ret = -1;
        goto out;
    }
    size_t nkeys = (lower - PAGEHDR) / 2;
    for (size_t i = 0; i < nkeys && ret == 0; i++) {
        uint16_t off = get16(p + PAGEHDR + 2 * i);
        if (off < PAGEHDR || (uint64_t)off + 8 > w->psize) {
            ret = -1;
            break;
        }
        const uint8_t *node = p + off;
        uint64_t lo = get16(node), hi = get16(node + 2);
        uint16_t nflags = get16(node + 4), ksize = get16(node + 6);
        if (flags & P_BRANCH) {
            ret = walk_tree(w, lo | hi << 16 | (uint64_t)nflags << 32,
                            depth + 1);
            continue;
        }
        uint64_t dsize = lo | hi << 16;
        const uint8_t *data = node + 8 + ksize;
        if (nflags & F_BIGDATA) {
            if ((uint64_t)(data - p) + 8 > w->psize) {
                ret = -1;
                break;
            }
            uint64_t ov = get64(data);
            uint64_t npages = (PAGEHDR + dsize + w->psize - 1) / w->psize;
            uint8_t *buf = npages <= w->file_pages
                               ? malloc((size_t)(npages * w->psize)) : NULL;
            if (!buf || read_pages(w, ov, npages, buf) < 0 ||
                !(get16(buf + 10) & P_OVERFLOW)) {
                free(buf);
                ret = -1;
                break;
            }
            mark_ids(w, buf + PAGEHDR, (size_t)dsize);
            free(buf);
        } else {
            if ((uint64_t)(data - p) + dsize > w->psize) {
                ret = -1;
                break;
            }
            mark_ids(w, data, (size_t)dsize);
        }
    }
out:
    free(p);
    return ret;
}

int store_tail_free(const char *path, uint64_t psize, uint64_t file_bytes,
                    bool *free_tail)
{
    walk w = {.fd = -1, .psize = psize, .file_pages = file_bytes / psize};
    uint8_t *meta = NULL;
    int ret = 0;
    *free_tail = false;
    if (w.file_pages < 2)
        return 0; /* not even both meta pages */
    w.fd = open(path, O_RDONLY | O_CLOEXEC);
    meta = malloc((size_t)(2 * psize));
    if (w.fd < 0 || !meta) {
        ret = SS_ERR_IO;
        goto out;
    }
    if (read_pages(&w, 0, 2, meta) < 0) {
        ret = SS_ERR_IO;
        goto out;
    }
    /* The meta LMDB uses is the one with the larger txnid. */
    const uint8_t *m0 = meta + PAGEHDR, *m1 = meta + psize + PAGEHDR;
    const uint8_t *m = get64(m1 + 128) > get64(m0 + 128) ? m1 : m0;
    uint64_t free_root = get64(m + 24 + 40);
    w.hi = get64(m + 120);
    w.lo = w.file_pages;
    if (w.hi < w.lo) {
        *free_tail = true; /* nothing missing */
        goto out;
    }
    if (free_root == P_INVALID || w.hi - w.lo >= WALK_PAGES)
        goto out; /* no freelist, or far too much missing */
    w.seen = calloc((size_t)(w.hi - w.lo + 1), 1);
    if (!w.seen) {
        ret = SS_ERR_NOMEM;
        goto out;
    }
    if (walk_tree(&w, free_root, 0) < 0)
        goto out; /* the freelist itself reaches past the end */
    bool all = true;
    for (uint64_t i = 0; i <= w.hi - w.lo && all; i++)
        all = w.seen[i] != 0;
    *free_tail = all;
out:
    if (w.fd >= 0)
        close(w.fd);
    free(meta);
    free(w.seen);
    return ret;
}
