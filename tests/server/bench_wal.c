/* bench_wal -- micro-benchmark of the write-ahead log (not a test): group
 * sync throughput with fdatasync vs O_DSYNC (4 KiB records, groups of 1
 * and 64), and replay speed of a large log with a no-op callback.
 *
 *   build/tests/server/bench-wal [--dir D] [--syncs N] [--replay-mib M]
 *
 * D defaults to a fresh directory under /tmp (removed at the end); it
 * should be on the disk the server's data lives on.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <ftw.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "ss_error.h"
#include "ss_parse.h"
#include "wal.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int rm_cb(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(p);
}

static ss_wal *open_or_die(const char *dir, ss_wal_sync_method m, uint64_t after,
                           ss_wal_record_fn fn, ss_wal_replay_stats *st)
{
    ss_wal_options o = {.dir = dir, .segment_bytes = 0, .sync = m,
                        .truncate_corrupt = false};
    ss_wal *w = NULL;
    char msg[512];
    int rc = ss_wal_open(&w, &o, after, fn, NULL, st, msg, sizeof msg);
    if (rc != 0) {
        fprintf(stderr, "bench-wal: open %s: %s\n", dir, msg);
        exit(1);
    }
    return w;
}

static void die_rc(int rc, const char *what, ss_wal *w)
{
    if (rc != 0) {
        fprintf(stderr, "bench-wal: %s: %s (%s)\n", what, ss_strerror(rc),
                ss_wal_failed(w) ? ss_wal_failed(w) : "");
        exit(1);
    }
}

static void bench_sync(const char *base, ss_wal_sync_method m, unsigned group,
                       unsigned syncs)
{
    char dir[512];
    snprintf(dir, sizeof dir, "%s/sync-%d-%u", base, (int)m, group);
    ss_wal *w = open_or_die(dir, m, 0, NULL, NULL);
    die_rc(ss_wal_preallocate(w), "preallocate", w);
    static uint8_t rec[4096];
    memset(rec, 0xab, sizeof rec);
    /* Warm up: the first segment is created by the first write. */
    die_rc(ss_wal_append(w, 1, rec, sizeof rec, NULL), "append", w);
    die_rc(ss_wal_sync(w), "sync", w);
    double t0 = now_s();
    for (unsigned s = 0; s < syncs; s++) {
        for (unsigned i = 0; i < group; i++)
            die_rc(ss_wal_append(w, 1, rec, sizeof rec, NULL), "append", w);
        die_rc(ss_wal_sync(w), "sync", w);
    }
    double dt = now_s() - t0;
    double mb = (double)syncs * group * sizeof rec / 1e6;
    printf("%-9s group %2u: %6u syncs in %6.3f s: %8.0f syncs/s, %8.0f records/s, "
           "%7.1f MB/s\n",
           m == SS_WAL_SYNC_FDATASYNC ? "fdatasync" : "O_DSYNC", group, syncs, dt,
           syncs / dt, syncs * (double)group / dt, mb / dt);
    ss_wal_free(w);
    nftw(dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
}

static int noop(void *arg, uint64_t lsn, uint16_t type, const uint8_t *payload,
                size_t len)
{
    (void)arg;
    (void)lsn;
    (void)type;
    (void)payload;
    (void)len;
    return 0;
}

/* Drop the page cache of the log's files (only these files), so the next
 * replay reads from the device. */
static void evict_cache(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        char p[1024];
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        int fd = open(p, O_RDONLY);
        if (fd < 0)
            continue;
        fdatasync(fd);
        posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
        close(fd);
    }
    closedir(d);
}

static void bench_replay(const char *base, uint64_t mib)
{
    char dir[512];
    snprintf(dir, sizeof dir, "%s/replay", base);
    ss_wal *w = open_or_die(dir, SS_WAL_SYNC_FDATASYNC, 0, NULL, NULL);
    size_t len = 64u << 10;
    uint8_t *rec = malloc(len);
    for (size_t k = 0; k < len; k++)
        rec[k] = (uint8_t)(k * 7u);
    uint64_t n = mib * (1u << 20) / len;
    double t0 = now_s();
    for (uint64_t i = 0; i < n; i++) {
        memcpy(rec, &i, sizeof i);
        die_rc(ss_wal_append(w, 2, rec, len, NULL), "append", w);
        if (i % 64 == 63)
            die_rc(ss_wal_sync(w), "sync", w);
    }
    die_rc(ss_wal_sync(w), "sync", w);
    double wt = now_s() - t0;
    ss_wal_free(w);
    free(rec);
    printf("wrote %" PRIu64 " MiB (64 KiB records, sync per 64) in %.2f s: %.0f MiB/s\n",
           mib, wt, (double)mib / wt);
    for (int pass = 0; pass < 2; pass++) {
        if (pass == 0)
            evict_cache(dir);
        ss_wal_replay_stats st;
        w = open_or_die(dir, SS_WAL_SYNC_FDATASYNC, 0, noop, &st);
        printf("replayed %" PRIu64 " records, %.0f MiB in %.3f s: %.0f MiB/s (%s)\n",
               st.records, (double)st.bytes / (1 << 20), st.seconds,
               (double)st.bytes / (1 << 20) / st.seconds,
               pass == 0 ? "cold: page cache of the log dropped" : "page cache warm");
        if (pass == 0)
            ss_wal_free(w);
    }
    ss_wal_free(w);
    nftw(dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
}

int main(int argc, char **argv)
{
    const char *dir = NULL;
    uint64_t syncs = 500, mib = 1024;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--dir") == 0 && i + 1 < argc) {
            dir = argv[++i];
        } else if (strcmp(argv[i], "--syncs") == 0 && i + 1 < argc) {
            if (ss_parse_u64(argv[++i], 1, 1000000, &syncs) != 0)
                return fprintf(stderr, "bench-wal: bad --syncs\n"), 2;
        } else if (strcmp(argv[i], "--replay-mib") == 0 && i + 1 < argc) {
            if (ss_parse_u64(argv[++i], 0, 1u << 20, &mib) != 0)
                return fprintf(stderr, "bench-wal: bad --replay-mib\n"), 2;
        } else {
            fprintf(stderr, "usage: bench-wal [--dir D] [--syncs N] "
                            "[--replay-mib M]\n");
            return 2;
        }
    }
    char tmp[64] = "/tmp/ss-bench-wal-XXXXXX";
    bool own = false;
    if (!dir) {
        if (!mkdtemp(tmp))
            return perror("mkdtemp"), 1;
        dir = tmp;
        own = true;
    }
    ss_wal_sync_method ms[2] = {SS_WAL_SYNC_FDATASYNC, SS_WAL_SYNC_ODSYNC};
    unsigned groups[2] = {1, 64};
    for (int g = 0; g < 2; g++)
        for (int k = 0; k < 2; k++)
            bench_sync(dir, ms[k], groups[g],
                       (unsigned)(groups[g] == 1 ? syncs : (syncs + 3) / 4));
    if (mib > 0)
        bench_replay(dir, mib);
    if (own)
        nftw(dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
    return 0;
}
