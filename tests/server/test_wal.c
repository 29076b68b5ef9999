/* test_wal -- Check suite for the write-ahead log (server/wal.h): round
 * trips across segments with recycling, replay filtering, torn tails at
 * every offset, mid-log corruption, truncate_corrupt, the sticky failure,
 * the marker, size limits and both sync methods. Real files in temp dirs.
 */
#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ss_error.h"
#include "wal.h"

#define SEG (64u << 10) /* test segment size */

/* ---- fixture ---------------------------------------------------------- */

static char g_tmp[64];
static char g_dir[128];

static int rm_cb(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(p);
}

static void setup(void)
{
    strcpy(g_tmp, "/tmp/ss-wal-test-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(g_tmp));
    snprintf(g_dir, sizeof g_dir, "%s/wal", g_tmp);
    unsetenv("SS_WAL_FAIL_SYNC_AFTER");
}

static void teardown(void)
{
    nftw(g_tmp, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
}

/* Record i: type (i % 7) + 1, payload = u64 i then bytes derived from i. */
static size_t rec_len(uint64_t i) { return 8 + (size_t)((i * 977u) % 1500u); }

static void rec_fill(uint64_t i, uint8_t *p, size_t len)
{
    memcpy(p, &i, 8);
    for (size_t k = 8; k < len; k++)
        p[k] = (uint8_t)(i * 31u + k * 7u);
}

/* What replay handed over. */
typedef struct got {
    uint64_t idx[4096];  /* record numbers in order */
    uint64_t lsn[4096];  /* their LSNs */
    size_t n;            /* count */
    int stop_at;         /* return an error at this count (-1: never) */
} got;

static int collect(void *arg, uint64_t lsn, uint16_t type, const uint8_t *payload,
                   size_t len)
{
    got *g = arg;
    if ((int)g->n == g->stop_at)
        return SS_ERR_INTERNAL;
    ck_assert_uint_ge(len, 8);
    uint64_t i;
    memcpy(&i, payload, 8);
    ck_assert_uint_eq(len, rec_len(i));
    ck_assert_uint_eq(type, (uint16_t)(i % 7 + 1));
    uint8_t *want = malloc(len);
    rec_fill(i, want, len);
    ck_assert_msg(memcmp(want, payload, len) == 0, "record %" PRIu64 " content", i);
    free(want);
    ck_assert_uint_lt(g->n, 4096);
    if (g->n > 0)
        ck_assert_uint_gt(lsn, g->lsn[g->n - 1]);
    g->idx[g->n] = i;
    g->lsn[g->n] = lsn;
    g->n++;
    return 0;
}

static ss_wal_options opts(ss_wal_sync_method m)
{
    ss_wal_options o = {.dir = g_dir, .segment_bytes = SEG, .sync = m,
                        .truncate_corrupt = false};
    return o;
}

static ss_wal *open_ok(ss_wal_sync_method m, uint64_t after, got *g,
                       ss_wal_replay_stats *st)
{
    ss_wal_options o = opts(m);
    ss_wal *w = NULL;
    char msg[512];
    if (g) {
        g->n = 0;
        g->stop_at = -1;
    }
    int rc = ss_wal_open(&w, &o, after, g ? collect : NULL, g, st, msg, sizeof msg);
    ck_assert_msg(rc == 0, "open: %s (%s)", ss_strerror(rc), msg);
    ck_assert_ptr_nonnull(w);
    return w;
}

static uint64_t append_rec(ss_wal *w, uint64_t i)
{
    size_t len = rec_len(i);
    uint8_t *p = malloc(len);
    rec_fill(i, p, len);
    uint64_t lsn = 0;
    /* Gathered from two pieces, as the server does. */
    struct iovec v[2] = {{p, 5}, {p + 5, len - 5}};
    int rc = ss_wal_appendv(w, (uint16_t)(i % 7 + 1), v, 2, &lsn);
    ck_assert_int_eq(rc, 0);
    free(p);
    return lsn;
}

/* Append records [from, to) in groups of g, syncing each group. */
static void append_groups(ss_wal *w, uint64_t from, uint64_t to, uint64_t gsz,
                          uint64_t *lsns)
{
    for (uint64_t i = from; i < to; i++) {
        uint64_t lsn = append_rec(w, i);
        ck_assert_uint_eq(ss_wal_last_lsn(w), lsn);
        if (lsns)
            lsns[i] = lsn;
        if ((i - from + 1) % gsz == 0 || i + 1 == to)
            ck_assert_int_eq(ss_wal_sync(w), 0);
    }
    ck_assert_uint_eq(ss_wal_durable_lsn(w), ss_wal_last_lsn(w));
}

/* Segment files in the log directory, sorted by name. */
typedef struct seglist {
    char name[64][32]; /* file names */
    size_t n;          /* count */
} seglist;

static int cmp_name(const void *a, const void *b) { return strcmp(a, b); }

static void list_segs(seglist *l)
{
    DIR *d = opendir(g_dir);
    ck_assert_ptr_nonnull(d);
    struct dirent *e;
    l->n = 0;
    while ((e = readdir(d)) != NULL) {
        size_t L = strlen(e->d_name);
        if (L == 20 && strcmp(e->d_name + 16, ".wal") == 0) {
            ck_assert_uint_lt(l->n, 64);
            strcpy(l->name[l->n++], e->d_name);
        }
    }
    closedir(d);
    qsort(l->name, l->n, sizeof l->name[0], cmp_name);
}

static void seg_path(char *out, size_t n, const char *name)
{
    snprintf(out, n, "%s/%s", g_dir, name);
}

/* The documented segment header: u64 seq at 16, u64 start LSN at 24;
 * valid (magic "SSWL" at 4) or not. */
static bool seg_header(const char *name, uint64_t *seq, uint64_t *start)
{
    char p[256];
    seg_path(p, sizeof p, name);
    int fd = open(p, O_RDONLY);
    ck_assert_int_ge(fd, 0);
    uint8_t h[64];
    ssize_t k = pread(fd, h, 64, 0);
    close(fd);
    if (k != 64 || memcmp(h + 4, "SSWL", 4) != 0)
        return false;
    memcpy(seq, h + 16, 8);
    memcpy(start, h + 24, 8);
    return true;
}

/* The newest segment with a valid header whose sequence matches its name. */
static int last_live_seg(const seglist *l, uint64_t *start)
{
    int best = -1;
    for (size_t i = 0; i < l->n; i++) {
        uint64_t seq, st;
        if (seg_header(l->name[i], &seq, &st) &&
            seq == strtoull(l->name[i], NULL, 16)) {
            best = (int)i;
            *start = st;
        }
    }
    ck_assert_int_ge(best, 0);
    return best;
}

/* Whole-directory snapshot, to restore between damage experiments. */
typedef struct snap {
    seglist l;           /* files */
    uint8_t *data[64];   /* contents */
    size_t size[64];     /* sizes */
} snap;

static void snap_take(snap *s)
{
    list_segs(&s->l);
    for (size_t i = 0; i < s->l.n; i++) {
        char p[256];
        seg_path(p, sizeof p, s->l.name[i]);
        FILE *f = fopen(p, "rb");
        ck_assert_ptr_nonnull(f);
        fseek(f, 0, SEEK_END);
        s->size[i] = (size_t)ftell(f);
        fseek(f, 0, SEEK_SET);
        s->data[i] = malloc(s->size[i] ? s->size[i] : 1);
        ck_assert_uint_eq(fread(s->data[i], 1, s->size[i], f), s->size[i]);
        fclose(f);
    }
}

static void snap_restore(const snap *s)
{
    seglist now;
    list_segs(&now);
    char p[256];
    for (size_t i = 0; i < now.n; i++) {
        seg_path(p, sizeof p, now.name[i]);
        ck_assert_int_eq(unlink(p), 0);
    }
    for (size_t i = 0; i < s->l.n; i++) {
        seg_path(p, sizeof p, s->l.name[i]);
        FILE *f = fopen(p, "wb");
        ck_assert_ptr_nonnull(f);
        ck_assert_uint_eq(fwrite(s->data[i], 1, s->size[i], f), s->size[i]);
        ck_assert_int_eq(fclose(f), 0);
    }
}

static void snap_free(snap *s)
{
    for (size_t i = 0; i < s->l.n; i++)
        free(s->data[i]);
}

/* ---- round trip ------------------------------------------------------- */

static void roundtrip(ss_wal_sync_method m)
{
    static uint64_t lsns[600];
    got *g = calloc(1, sizeof *g);
    ss_wal_replay_stats st;
    ss_wal *w = open_ok(m, 0, g, &st);
    ck_assert_uint_eq(g->n, 0);
    ck_assert_uint_eq(st.records, 0);
    ck_assert_uint_eq(ss_wal_last_lsn(w), 0);
    ck_assert_ptr_null(ss_wal_failed(w));
    append_groups(w, 0, 300, 7, lsns);
    ck_assert_uint_eq(ss_wal_bytes_since(w, lsns[99]), lsns[299] - lsns[99]);
    ss_wal_free(w);

    seglist l;
    list_segs(&l);
    ck_assert_uint_ge(l.n, 4); /* ~240 KiB of records in 64 KiB segments */
    for (size_t k = 0; k < l.n; k++) {
        /* Preallocated: writing never changed a segment's size. */
        char p[256];
        struct stat sb;
        seg_path(p, sizeof p, l.name[k]);
        ck_assert_int_eq(stat(p, &sb), 0);
        ck_assert_int_eq(sb.st_size, SEG);
        ck_assert_int_ge(sb.st_blocks * 512, SEG);
    }

    w = open_ok(m, 0, g, &st);
    ck_assert_uint_eq(g->n, 300);
    for (uint64_t i = 0; i < 300; i++) {
        ck_assert_uint_eq(g->idx[i], i);
        ck_assert_uint_eq(g->lsn[i], lsns[i]);
    }
    ck_assert_uint_eq(st.records, 300);
    ck_assert_uint_eq(st.first_lsn, lsns[0]);
    ck_assert_uint_eq(st.last_lsn, lsns[299]);
    ck_assert(!st.torn_tail);
    ck_assert_uint_eq(ss_wal_last_lsn(w), lsns[299]);
    ck_assert_uint_eq(ss_wal_durable_lsn(w), lsns[299]);

    /* Checkpoint: segments wholly <= lsns[250] are recycled (2 spares kept,
     * the rest deleted); the current segment stays. */
    ck_assert_int_eq(ss_wal_checkpoint(w, lsns[250]), 0);
    seglist l2;
    list_segs(&l2);
    ck_assert_uint_lt(l2.n, l.n);
    /* Appending continues (LSNs after the last), reusing the spares. */
    append_groups(w, 300, 600, 64, lsns);
    ck_assert_uint_gt(lsns[300], lsns[299]);
    ck_assert_int_eq(ss_wal_checkpoint(w, lsns[590]), 0);
    ss_wal_free(w);
    seglist l3;
    list_segs(&l3);
    ck_assert_uint_le(l3.n, 1 + 1 + SS_WAL_SPARES);

    w = open_ok(m, lsns[590], g, &st);
    ck_assert_uint_eq(g->n, 9);
    for (uint64_t i = 0; i < 9; i++)
        ck_assert_uint_eq(g->idx[i], 591 + i);
    ck_assert_uint_eq(ss_wal_last_lsn(w), lsns[599]);
    ss_wal_free(w);
    free(g);
}

START_TEST(test_roundtrip)
{
    roundtrip(_i == 0 ? SS_WAL_SYNC_FDATASYNC : SS_WAL_SYNC_ODSYNC);
}
END_TEST

/* Spares are reused by rename: the file count stays bounded. */
START_TEST(test_recycle_reuses_files)
{
    static uint64_t lsns[800];
    ss_wal *w = open_ok(SS_WAL_SYNC_FDATASYNC, 0, NULL, NULL);
    uint64_t i = 0, ckpt = 0;
    for (int round = 0; round < 12; round++) {
        append_groups(w, i, i + 60, 10, lsns);
        i += 60;
        ckpt = lsns[i - 20];
        ck_assert_int_eq(ss_wal_checkpoint(w, ckpt), 0);
        seglist l;
        list_segs(&l);
        ck_assert_uint_le(l.n, 2 + SS_WAL_SPARES);
    }
    ss_wal_free(w);
    got *g = calloc(1, sizeof *g);
    ss_wal_replay_stats st;
    w = open_ok(SS_WAL_SYNC_FDATASYNC, ckpt, g, &st);
    ck_assert_uint_eq(g->n, 19);
    for (size_t k = 0; k < g->n; k++)
        ck_assert_uint_eq(g->idx[k], i - 19 + k);
    ss_wal_free(w);
    /* Opening at LSN 0 needs records that were recycled: refused. */
    ss_wal_options o = opts(SS_WAL_SYNC_FDATASYNC);
    char msg[512];
    ck_assert_int_eq(ss_wal_open(&w, &o, 0, NULL, NULL, NULL, msg, sizeof msg),
                     SS_ERR_FORMAT);
    ck_assert_ptr_nonnull(strstr(msg, "missing"));
    free(g);
}
END_TEST

/* ---- after_lsn ---------------------------------------------------------- */

START_TEST(test_after_lsn)
{
    static uint64_t lsns[200];
    ss_wal *w = open_ok(SS_WAL_SYNC_FDATASYNC, 0, NULL, NULL);
    append_groups(w, 0, 200, 13, lsns);
    ss_wal_free(w);
    got *g = calloc(1, sizeof *g);
    uint64_t afters[] = {0, lsns[0] - 1, lsns[0], lsns[0] + 1, lsns[77],
                         lsns[150] - 3, lsns[198], lsns[199]};
    for (size_t k = 0; k < sizeof afters / sizeof afters[0]; k++) {
        ss_wal_replay_stats st;
        w = open_ok(SS_WAL_SYNC_FDATASYNC, afters[k], g, &st);
        size_t want = 0;
        for (size_t i = 0; i < 200; i++)
            want += lsns[i] > afters[k];
        ck_assert_uint_eq(g->n, want);
        ck_assert_uint_eq(st.records, want);
        ck_assert_uint_eq(st.scanned_records, 200);
        for (size_t i = 0; i < g->n; i++)
            ck_assert_uint_gt(g->lsn[i], afters[k]);
        if (want)
            ck_assert_uint_eq(g->idx[0], 200 - want);
        ss_wal_free(w);
    }
    /* A callback error stops the replay and fails the open. */
    ss_wal_options o = opts(SS_WAL_SYNC_FDATASYNC);
    char msg[512];
    g->n = 0;
    g->stop_at = 5;
    ck_assert_int_eq(ss_wal_open(&w, &o, 0, collect, g, NULL, msg, sizeof msg),
                     SS_ERR_INTERNAL);
    ck_assert_ptr_null(w);
    ck_assert_ptr_nonnull(strstr(msg, "replay stopped"));
    /* A checkpoint past the end of the log: appends continue after it. */
    w = open_ok(SS_WAL_SYNC_FDATASYNC, lsns[199] + 1000, g, NULL);
    ck_assert_uint_eq(g->n, 0);
    ck_assert_uint_eq(ss_wal_last_lsn(w), lsns[199] + 1000);
    uint64_t l = append_rec(w, 500);
    ck_assert_uint_gt(l, lsns[199] + 1000);
    ck_assert_int_eq(ss_wal_sync(w), 0);
    ss_wal_free(w);
    w = open_ok(SS_WAL_SYNC_FDATASYNC, lsns[199] + 1000, g, NULL);
    ck_assert_uint_eq(g->n, 1);
    ck_assert_uint_eq(g->idx[0], 500);
    ck_assert_uint_eq(g->lsn[0], l);
    ss_wal_free(w);
    free(g);
}
END_TEST

/* ---- torn tails ----------------------------------------------------------- */

/* Expected outcome after damage starting at offset t of the last live
 * segment (start LSN `start`): every record ending at or before t. */
static size_t records_before(const uint64_t *lsns, size_t n, uint64_t start,
                             uint64_t t)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        bool in_earlier = lsns[i] <= start;
        uint64_t end_off = in_earlier ? 0 : 64 + (lsns[i] - start);
        if (in_earlier || (t >= 64 && end_off <= t))
            k = i + 1;
    }
    return k;
}

static void damage_truncate(const char *name, uint64_t t)
{
    char p[256];
    seg_path(p, sizeof p, name);
    ck_assert_int_eq(truncate(p, (off_t)t), 0);
}

static void damage_garbage(const char *name, uint64_t t, unsigned seed)
{
    char p[256];
    seg_path(p, sizeof p, name);
    int fd = open(p, O_WRONLY);
    ck_assert_int_ge(fd, 0);
    uint8_t junk[SEG];
    for (size_t k = 0; k < sizeof junk; k++) {
        seed = seed * 1103515245u + 12345u;
        junk[k] = (uint8_t)(seed >> 16);
    }
    junk[0] ^= 0x5a; /* surely differs from whatever was there */
    ck_assert_int_eq(pwrite(fd, junk, SEG - t, (off_t)t), (ssize_t)(SEG - t));
    close(fd);
}

/* Open after damage; replay must give exactly records [0, want); then an
 * append continues the log and survives a reopen (every `check_append`). */
static void expect_prefix(size_t want, const uint64_t *lsns, bool check_append,
                          got *g)
{
    ss_wal_replay_stats st;
    ss_wal *w = open_ok(SS_WAL_SYNC_FDATASYNC, 0, g, &st);
    ck_assert_uint_eq(g->n, want);
    for (size_t i = 0; i < want; i++) {
        ck_assert_uint_eq(g->idx[i], i);
        ck_assert_uint_eq(g->lsn[i], lsns[i]);
    }
    ck_assert_uint_eq(ss_wal_last_lsn(w), want ? lsns[want - 1] : 0);
    if (check_append) {
        uint64_t l = append_rec(w, 9000);
        ck_assert_int_eq(ss_wal_sync(w), 0);
        ss_wal_free(w);
        w = open_ok(SS_WAL_SYNC_FDATASYNC, 0, g, &st);
        ck_assert_uint_eq(g->n, want + 1);
        ck_assert_uint_eq(g->idx[want], 9000);
        ck_assert_uint_eq(g->lsn[want], l);
    }
    ss_wal_free(w);
}

/* Build a log whose last group of `last_n` records starts near `lead`
 * records in; return the record count. */
static size_t build_log(uint64_t *lsns, size_t body, size_t last_n)
{
    ss_wal *w = open_ok(SS_WAL_SYNC_FDATASYNC, 0, NULL, NULL);
    append_groups(w, 0, body, 9, lsns);
    append_groups(w, body, body + last_n, last_n, lsns);
    ss_wal_free(w);
    return body + last_n;
}

static void torn_every_offset(size_t body, size_t last_n)
{
    static uint64_t lsns[400];
    got *g = calloc(1, sizeof *g);
    size_t n = build_log(lsns, body, last_n);
    snap s;
    snap_take(&s);
    uint64_t start = 0;
    int li = last_live_seg(&s.l, &start);
    const char *last = s.l.name[li];
    uint64_t group_lsn = lsns[body - 1]; /* stream position before the group */
    uint64_t from = group_lsn > start ? 64 + (group_lsn - start) : 0;
    uint64_t to = 64 + (lsns[n - 1] - start);
    ck_assert_uint_le(to, SEG);
    size_t iter = 0;
    for (uint64_t t = from; t <= to; t++, iter++) {
        snap_restore(&s);
        damage_truncate(last, t);
        expect_prefix(records_before(lsns, n, start, t), lsns, iter % 61 == 0, g);
    }
    /* Random offsets anywhere in the last segment, and garbage tails. */
    unsigned seed = 12345;
    for (int k = 0; k < 40; k++) {
        seed = seed * 1103515245u + 12345u;
        uint64_t t = (seed >> 8) % SEG;
        snap_restore(&s);
        if (k % 2 == 0) {
            damage_truncate(last, t);
        } else {
            t = from + t % (to - from);
            damage_garbage(last, t, seed);
        }
        expect_prefix(records_before(lsns, n, start, t), lsns, k % 5 == 0, g);
    }
    snap_free(&s);
    free(g);
}

/* The last group lies inside one segment. */
START_TEST(test_torn_tail_in_segment)
{
    torn_every_offset(40, 6);
}
END_TEST

/* Simulated placement: does record i start a new segment, given the
 * records before it? (SEG - 64 usable bytes per segment.) */
static bool starts_segment(uint64_t i)
{
    uint64_t pos = 0, use = SEG - 64;
    bool fresh = true;
    for (uint64_t k = 0; k <= i; k++) {
        uint64_t z = 32 + ((rec_len(k) + 7) & ~(uint64_t)7);
        fresh = k == 0;
        if (pos % use + z > use) {
            pos += use - pos % use;
            fresh = true;
        }
        pos += z;
    }
    return fresh;
}

/* The last group starts a new segment (its header is part of the group). */
START_TEST(test_torn_tail_new_segment)
{
    size_t body = 0;
    for (size_t b = 30; b < 300 && body == 0; b++)
        if (starts_segment(b))
            body = b;
    ck_assert_uint_gt(body, 0);
    torn_every_offset(body, 4);
}
END_TEST

/* The last group begins in one segment and ends in the next. */
START_TEST(test_torn_tail_across_segments)
{
    size_t body = 0;
    for (size_t b = 30; b < 300 && body == 0; b++)
        if (!starts_segment(b) && (starts_segment(b + 1) || starts_segment(b + 2)))
            body = b;
    ck_assert_uint_gt(body, 0);
    torn_every_offset(body, 4);
}
END_TEST

/* ---- mid-log corruption ---------------------------------------------------- */

/* Flip one byte of record `victim`; return its segment and offset. */
static void flip_record(const uint64_t *lsns, size_t victim, bool zero_page,
                        char *seg_out, uint64_t *off_out)
{
    seglist l;
    list_segs(&l);
    for (size_t i = 0; i < l.n; i++) {
        uint64_t seq, start;
        if (!seg_header(l.name[i], &seq, &start) ||
            seq != strtoull(l.name[i], NULL, 16))
            continue;
        uint64_t rec_start = victim ? lsns[victim - 1] : 0;
        /* The record is in this segment when it ends after start and its
         * end offset fits. */
        if (lsns[victim] <= start || 64 + (lsns[victim] - start) > SEG)
            continue;
        uint64_t off = rec_start >= start ? 64 + (rec_start - start) : 64;
        char p[256];
        seg_path(p, sizeof p, l.name[i]);
        int fd = open(p, O_RDWR);
        ck_assert_int_ge(fd, 0);
        if (zero_page) {
            /* A lost page: 512 zero bytes from the record's start. */
            static const uint8_t zeros[512];
            ck_assert_int_eq(pwrite(fd, zeros, sizeof zeros, (off_t)off),
                             (ssize_t)sizeof zeros);
        } else {
            uint8_t b;
            ck_assert_int_eq(pread(fd, &b, 1, (off_t)(off + 40)), 1);
            b ^= 0x01;
            ck_assert_int_eq(pwrite(fd, &b, 1, (off_t)(off + 40)), 1);
        }
        close(fd);
        strcpy(seg_out, l.name[i]);
        *off_out = off;
        return;
    }
    ck_abort_msg("record %zu not found", victim);
}

static void corrupt_middle(size_t victim, bool zero_page)
{
    static uint64_t lsns[300];
    got *g = calloc(1, sizeof *g);
    ss_wal *w = open_ok(SS_WAL_SYNC_FDATASYNC, 0, NULL, NULL);
    append_groups(w, 0, 300, 5, lsns);
    ss_wal_free(w);
    char seg[32];
    uint64_t off;
    flip_record(lsns, victim, zero_page, seg, &off);

    ss_wal_options o = opts(SS_WAL_SYNC_FDATASYNC);
    char msg[512], want[256];
    g->n = 0;
    g->stop_at = -1;
    w = NULL;
    ck_assert_int_eq(ss_wal_open(&w, &o, 0, collect, g, NULL, msg, sizeof msg),
                     SS_ERR_FORMAT);
    ck_assert_ptr_null(w);
    snprintf(want, sizeof want, "corrupt record in %s/%s at offset %" PRIu64 " ",
             g_dir, seg, off);
    ck_assert_msg(strstr(msg, want) != NULL, "message '%s' lacks '%s'", msg, want);
    /* Still refused the second time (nothing was changed). */
    ck_assert_int_eq(ss_wal_open(&w, &o, 0, NULL, NULL, NULL, msg, sizeof msg),
                     SS_ERR_FORMAT);

    /* The operator flag cuts the log there. */
    o.truncate_corrupt = true;
    ss_wal_replay_stats st;
    g->n = 0;
    ck_assert_int_eq(ss_wal_open(&w, &o, 0, collect, g, &st, msg, sizeof msg), 0);
    ck_assert(st.truncated);
    ck_assert_uint_eq(g->n, victim);
    ck_assert_uint_eq(ss_wal_last_lsn(w), victim ? lsns[victim - 1] : 0);
    uint64_t l = append_rec(w, 7777);
    ck_assert_int_eq(ss_wal_sync(w), 0);
    ss_wal_free(w);
    /* Without the flag it now opens: the cut log plus the new record. */
    w = open_ok(SS_WAL_SYNC_FDATASYNC, 0, g, &st);
    ck_assert_uint_eq(g->n, victim + 1);
    for (size_t i = 0; i < victim; i++)
        ck_assert_uint_eq(g->idx[i], i);
    ck_assert_uint_eq(g->idx[victim], 7777);
    ck_assert_uint_eq(g->lsn[victim], l);
    ss_wal_free(w);
    free(g);
}

/* A record in an early segment (later segments follow). */
START_TEST(test_corrupt_middle_segment)
{
    corrupt_middle(20, _i == 1);
}
END_TEST

/* A record in the last segment with synced groups after it. */
START_TEST(test_corrupt_last_segment)
{
    corrupt_middle(280, _i == 1);
}
END_TEST

/* A missing middle segment file is corruption, not the end of the log. */
START_TEST(test_missing_segment)
{
    ss_wal *w = open_ok(SS_WAL_SYNC_FDATASYNC, 0, NULL, NULL);
    append_groups(w, 0, 300, 5, NULL);
    ss_wal_free(w);
    seglist l;
    list_segs(&l);
    ck_assert_uint_ge(l.n, 3);
    char p[256];
    seg_path(p, sizeof p, l.name[1]);
    ck_assert_int_eq(unlink(p), 0);
    ss_wal_options o = opts(SS_WAL_SYNC_FDATASYNC);
    char msg[512];
    ck_assert_int_eq(ss_wal_open(&w, &o, 0, NULL, NULL, NULL, msg, sizeof msg),
                     SS_ERR_FORMAT);
    ck_assert_ptr_nonnull(strstr(msg, "is missing"));
    ck_assert_ptr_nonnull(strstr(msg, l.name[0]));
    ck_assert_ptr_nonnull(strstr(msg, l.name[1]));
    ck_assert_ptr_nonnull(strstr(msg, l.name[2]));
    /* A checkpoint past the hole does not need the first segment, but the
     * log still has a hole after it: refused as well. */
    ck_assert_int_eq(ss_wal_open(&w, &o, 1, NULL, NULL, NULL, msg, sizeof msg),
                     SS_ERR_FORMAT);
}
END_TEST

/* A damaged header of a middle segment: refused, naming that segment. */
START_TEST(test_corrupt_segment_header)
{
    ss_wal *w = open_ok(SS_WAL_SYNC_FDATASYNC, 0, NULL, NULL);
    append_groups(w, 0, 300, 5, NULL);
    ss_wal_free(w);
    seglist l;
    list_segs(&l);
    ck_assert_uint_ge(l.n, 3);
    char p[256], want[300];
    seg_path(p, sizeof p, l.name[1]);
    int fd = open(p, O_RDWR);
    ck_assert_int_ge(fd, 0);
    uint8_t b = 0xee;
    ck_assert_int_eq(pwrite(fd, &b, 1, 27), 1); /* inside the start LSN */
    close(fd);
    ss_wal_options o = opts(SS_WAL_SYNC_FDATASYNC);
    char msg[512];
    ck_assert_int_eq(ss_wal_open(&w, &o, 0, NULL, NULL, NULL, msg, sizeof msg),
                     SS_ERR_FORMAT);
    snprintf(want, sizeof want, "corrupt segment header in %s at offset 0", p);
    ck_assert_msg(strstr(msg, want) != NULL, "message '%s' lacks '%s'", msg, want);
}
END_TEST

/* A hole in the last (unacknowledged) group is a torn tail even with
 * valid records of that group after it; once the log continues over the
 * hole with a record of the same size, those leftovers (whose LSNs now
 * fit) are not replayed: the previous-CRC chain stops them. */
START_TEST(test_torn_leftovers_not_replayed)
{
    static uint64_t lsns[100];
    ss_wal *w = open_ok(SS_WAL_SYNC_FDATASYNC, 0, NULL, NULL);
    append_groups(w, 0, 30, 10, lsns);
    append_groups(w, 30, 38, 8, lsns); /* the last group */
    ss_wal_free(w);
    char seg[32];
    uint64_t off;
    flip_record(lsns, 33, false, seg, &off);
    got *g = calloc(1, sizeof *g);
    ss_wal_replay_stats st;
    w = open_ok(SS_WAL_SYNC_FDATASYNC, 0, g, &st);
    ck_assert_uint_eq(g->n, 33);
    ck_assert(st.torn_tail);
    ck_assert_uint_eq(rec_len(33 + 1500), rec_len(33));
    uint64_t l = append_rec(w, 33 + 1500);
    ck_assert_uint_eq(l, lsns[33]); /* same size, same place */
    ck_assert_int_eq(ss_wal_sync(w), 0);
    ss_wal_free(w);
    w = open_ok(SS_WAL_SYNC_FDATASYNC, 0, g, &st);
    ck_assert_uint_eq(g->n, 34);
    ck_assert_uint_eq(g->idx[33], 33 + 1500);
    ss_wal_free(w);
    free(g);
}
END_TEST

/* Another --wal-segment-bytes: old segments keep their size until they
 * are recycled, which deletes them (spares all have the new size). */
START_TEST(test_segment_size_change)
{
    static uint64_t lsns[400];
    ss_wal *w = open_ok(SS_WAL_SYNC_FDATASYNC, 0, NULL, NULL);
    append_groups(w, 0, 200, 10, lsns);
    ss_wal_free(w);
    ss_wal_options o = opts(SS_WAL_SYNC_FDATASYNC);
    o.segment_bytes = 2 * SEG;
    char msg[512];
    got *g = calloc(1, sizeof *g);
    g->stop_at = -1;
    ck_assert_int_eq(ss_wal_open(&w, &o, 0, collect, g, NULL, msg, sizeof msg), 0);
    ck_assert_uint_eq(g->n, 200);
    append_groups(w, 200, 400, 10, lsns);
    ck_assert_int_eq(ss_wal_checkpoint(w, lsns[390]), 0);
    ss_wal_free(w);
    seglist l;
    list_segs(&l);
    for (size_t k = 0; k < l.n; k++) {
        char p[256];
        struct stat sb;
        seg_path(p, sizeof p, l.name[k]);
        ck_assert_int_eq(stat(p, &sb), 0);
        ck_assert_int_eq(sb.st_size, 2 * SEG);
    }
    g->n = 0;
    ck_assert_int_eq(ss_wal_open(&w, &o, lsns[390], collect, g, NULL, msg,
                                 sizeof msg), 0);
    ck_assert_uint_eq(g->n, 9);
    ck_assert_uint_eq(g->idx[8], 399);
    ss_wal_free(w);
    free(g);
}
END_TEST

/* ---- sticky failure ------------------------------------------------------- */

START_TEST(test_sticky_failure)
{
    setenv("SS_WAL_FAIL_SYNC_AFTER", "3", 1);
    static uint64_t lsns[100];
    ss_wal *w = open_ok(_i == 0 ? SS_WAL_SYNC_FDATASYNC : SS_WAL_SYNC_ODSYNC, 0,
                        NULL, NULL);
    unsetenv("SS_WAL_FAIL_SYNC_AFTER");
    append_groups(w, 0, 30, 10, lsns); /* 3 syncs */
    ck_assert_int_eq(ss_wal_sync(w), 0); /* nothing to sync: not counted */
    ck_assert_uint_eq(ss_wal_syncs(w), 3);
    uint64_t durable = ss_wal_durable_lsn(w);
    ck_assert_uint_eq(durable, lsns[29]);
    append_rec(w, 30);
    ck_assert_int_eq(ss_wal_sync(w), SS_ERR_IO);
    const char *why = ss_wal_failed(w);
    ck_assert_ptr_nonnull(why);
    ck_assert_ptr_nonnull(strstr(why, "fdatasync"));
    ck_assert_ptr_nonnull(strstr(why, "Input/output error"));
    ck_assert_uint_eq(ss_wal_durable_lsn(w), durable);
    /* Forever: every later call refuses, nothing is retried. */
    for (int k = 0; k < 3; k++) {
        uint64_t l = 0;
        ck_assert_int_eq(ss_wal_append(w, 1, "x", 1, &l), SS_ERR_IO);
        ck_assert_int_eq(ss_wal_sync(w), SS_ERR_IO);
        ck_assert_int_eq(ss_wal_flush(w), SS_ERR_IO);
        ck_assert_int_eq(ss_wal_checkpoint(w, durable), SS_ERR_IO);
        ck_assert_str_eq(ss_wal_failed(w), why);
    }
    ck_assert_uint_eq(ss_wal_durable_lsn(w), durable);
    ss_wal_free(w);
    /* After a restart the durable records are all there. */
    got *g = calloc(1, sizeof *g);
    w = open_ok(SS_WAL_SYNC_FDATASYNC, 0, g, NULL);
    ck_assert_uint_ge(g->n, 30);
    for (size_t i = 0; i < 30; i++)
        ck_assert_uint_eq(g->idx[i], i);
    ck_assert_ptr_null(ss_wal_failed(w));
    ss_wal_free(w);
    free(g);
}
END_TEST

/* ---- marker ----------------------------------------------------------------- */

START_TEST(test_marker)
{
    ss_wal *w = open_ok(SS_WAL_SYNC_FDATASYNC, 0, NULL, NULL);
    ck_assert_uint_eq(ss_wal_marker(w), 0);
    ck_assert_int_eq(ss_wal_set_marker(w, 0), SS_ERR_INVALID);
    ck_assert_uint_eq(ss_wal_marker(w), 0);
    ck_assert_int_eq(ss_wal_set_marker(w, 4242), 0);
    ck_assert_uint_eq(ss_wal_marker(w), 4242);
    ck_assert_int_eq(ss_wal_set_marker(w, 99), 0); /* set once */
    ck_assert_uint_eq(ss_wal_marker(w), 4242);
    ss_wal_free(w);
    w = open_ok(SS_WAL_SYNC_FDATASYNC, 0, NULL, NULL);
    ck_assert_uint_eq(ss_wal_marker(w), 4242);
    ss_wal_free(w);
    /* A damaged marker refuses to open (it guards against silent loss). */
    char p[256];
    snprintf(p, sizeof p, "%s/marker", g_dir);
    int fd = open(p, O_RDWR);
    ck_assert_int_ge(fd, 0);
    uint8_t b = 0x77;
    ck_assert_int_eq(pwrite(fd, &b, 1, 9), 1);
    close(fd);
    ss_wal_options o = opts(SS_WAL_SYNC_FDATASYNC);
    char msg[512];
    ck_assert_int_eq(ss_wal_open(&w, &o, 0, NULL, NULL, NULL, msg, sizeof msg),
                     SS_ERR_FORMAT);
    ck_assert_ptr_nonnull(strstr(msg, "marker"));
}
END_TEST

/* ---- limits ----------------------------------------------------------------- */

START_TEST(test_too_big)
{
    ss_wal *w = open_ok(SS_WAL_SYNC_FDATASYNC, 0, NULL, NULL);
    static const uint8_t one[1] = {1};
    uint64_t l = 0;
    struct iovec v[2] = {{(void *)(uintptr_t)one, SS_WAL_RECORD_MAX},
                         {(void *)(uintptr_t)one, 1}};
    ck_assert_int_eq(ss_wal_appendv(w, 1, v, 2, &l), SS_ERR_TOO_BIG);
    ck_assert_int_eq(ss_wal_append(w, 1, one, (size_t)SS_WAL_RECORD_MAX + 1, &l),
                     SS_ERR_TOO_BIG);
    ck_assert_uint_eq(ss_wal_last_lsn(w), 0);
    ck_assert_ptr_null(ss_wal_failed(w));
    /* A record larger than a segment gets a segment of its own. */
    size_t big = 3 * SEG + 123;
    uint8_t *p = malloc(big);
    for (size_t k = 0; k < big; k++)
        p[k] = (uint8_t)(k * 13u);
    uint64_t a = append_rec(w, 1);
    ck_assert_int_eq(ss_wal_append(w, 42, p, big, &l), 0);
    uint64_t c = append_rec(w, 2);
    ck_assert_int_eq(ss_wal_sync(w), 0);
    ck_assert_uint_gt(l, a);
    ck_assert_uint_gt(c, l);
    ss_wal_free(w);
    w = open_ok(SS_WAL_SYNC_FDATASYNC, l, NULL, NULL); /* scan only */
    ck_assert_uint_eq(ss_wal_last_lsn(w), c);
    ss_wal_free(w);
    free(p);
    /* Bad options. */
    ss_wal_options o = opts(SS_WAL_SYNC_FDATASYNC);
    o.segment_bytes = 1000;
    char msg[256];
    ck_assert_int_eq(ss_wal_open(&w, &o, 0, NULL, NULL, NULL, msg, sizeof msg),
                     SS_ERR_INVALID);
    ss_wal_free(NULL);
}
END_TEST

/* Flush writes without syncing; the next sync makes it durable. */
START_TEST(test_flush_then_sync)
{
    static uint64_t lsns[50];
    ss_wal *w = open_ok(SS_WAL_SYNC_FDATASYNC, 0, NULL, NULL);
    for (uint64_t i = 0; i < 50; i++) {
        lsns[i] = append_rec(w, i);
        ck_assert_int_eq(ss_wal_flush(w), 0);
    }
    ck_assert_uint_eq(ss_wal_durable_lsn(w), 0);
    ck_assert_int_eq(ss_wal_sync(w), 0);
    ck_assert_uint_eq(ss_wal_durable_lsn(w), lsns[49]);
    ck_assert_uint_eq(ss_wal_syncs(w), 1);
    ck_assert_int_eq(ss_wal_preallocate(w), 0);
    ss_wal_free(w);
    got *g = calloc(1, sizeof *g);
    w = open_ok(SS_WAL_SYNC_FDATASYNC, 0, g, NULL);
    ck_assert_uint_eq(g->n, 50);
    ss_wal_free(w);
    free(g);
}
END_TEST

static Suite *wal_suite(void)
{
    Suite *s = suite_create("wal");
    TCase *tc = tcase_create("wal");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_loop_test(tc, test_roundtrip, 0, 2);
    tcase_add_test(tc, test_recycle_reuses_files);
    tcase_add_test(tc, test_after_lsn);
    tcase_add_test(tc, test_torn_tail_in_segment);
    tcase_add_test(tc, test_torn_tail_new_segment);
    tcase_add_test(tc, test_torn_tail_across_segments);
    tcase_add_loop_test(tc, test_corrupt_middle_segment, 0, 2);
    tcase_add_loop_test(tc, test_corrupt_last_segment, 0, 2);
    tcase_add_test(tc, test_missing_segment);
    tcase_add_test(tc, test_corrupt_segment_header);
    tcase_add_test(tc, test_torn_leftovers_not_replayed);
    tcase_add_test(tc, test_segment_size_change);
    tcase_add_loop_test(tc, test_sticky_failure, 0, 2);
    tcase_add_test(tc, test_marker);
    tcase_add_test(tc, test_too_big);
    tcase_add_test(tc, test_flush_then_sync);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(wal_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
