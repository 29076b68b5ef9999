/* bench_route -- client CPU per state of libstatesaver's routed calls
 * (ss_cluster_fetch / ss_cluster_save) against the same calls on a direct
 * connection (ss_client_fetch / ss_client_save), same server, same keys,
 * interleaved rounds. Used by scripts/bench-cluster (docs/benchmarks.md,
 * "Cluster"); not a test.
 *
 * usage: bench-route --server ADDR --saver NAME [--requests N] [--batch B]
 *                    [--state-bytes S] [--keys K] [--rounds R]
 * ADDR is one server (a cluster of one, or a shard: then only the keys it
 * owns are used). Prints one JSON object: per mode (direct_fetch,
 * routed_fetch, direct_save, routed_save) the median client CPU (user +
 * system, getrusage) per state in microseconds and the median wall time,
 * the median of the per-round ratios routed / direct (rounds interleave the
 * modes, so a ratio compares neighbours in time), and the routing work
 * alone: nanoseconds per key of ss_cluster_shard_of (CRC16 of the key or
 * its {tag}, owner lookup), timed over BENCH_ROUTE_LOOKUPS keys.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "ss_parse.h"
#include "statesaver.h"

#define ROUNDS_MAX 64
/* Keys routed by the routing-only timing. */
#define BENCH_ROUTE_LOOKUPS 4000000u

static double cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

static double wall_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_d);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

typedef struct run {
    ss_client *direct;   /* connection to --server */
    ss_cluster *cl;      /* the same server as a cluster handle */
    const char *saver;   /* saver benchmarked */
    ss_key *keys;        /* keys owned by --server */
    char (*names)[32];   /* their bytes */
    size_t n_keys;       /* count */
    uint64_t *segs;      /* next segment of every key */
    float *rows;         /* batch rows of state data */
    size_t batch;        /* keys per request */
    int64_t dim;         /* floats per state */
    uint64_t requests;   /* requests per round */
} run;

/* One round of one mode; returns 0 or the failing call's code. */
static int round_once(run *r, int mode, double *cpu, double *wall)
{
    ss_key *k = calloc(r->batch, sizeof *k);
    uint64_t *s = calloc(r->batch, sizeof *s);
    size_t *idx = calloc(r->batch, sizeof *idx);
    int rc = 0;
    if (!k || !s || !idx) {
        free(k);
        free(s);
        free(idx);
        return SS_ERR_NOMEM;
    }
    ss_state_data sd = {.dtype = SS_DTYPE_FLOAT32, .shape = &r->dim, .rank = 1, .data = r->rows};
    double c0 = cpu_s(), w0 = wall_s();
    size_t cursor = 0;
    for (uint64_t q = 0; q < r->requests && rc == 0; q++) {
        for (size_t i = 0; i < r->batch; i++) {
            idx[i] = (cursor + i) % r->n_keys;
            k[i] = r->keys[idx[i]];
            s[i] = r->segs[idx[i]];
        }
        cursor = (cursor + r->batch) % r->n_keys;
        ss_fetch_result *f = NULL;
        switch (mode) {
        case 0: rc = ss_client_fetch(r->direct, r->saver, k, r->batch, 0, 0, &f); break;
        case 1: rc = ss_cluster_fetch(r->cl, r->saver, k, r->batch, 0, 0, &f); break;
        case 2: rc = ss_client_save(r->direct, r->saver, k, r->batch, s, NULL, &sd, 1, NULL); break;
        default: rc = ss_cluster_save(r->cl, r->saver, k, r->batch, s, NULL, &sd, 1, NULL); break;
        }
        ss_fetch_result_free(f);
        if (rc == 0 && mode >= 2)
            for (size_t i = 0; i < r->batch; i++)
                r->segs[idx[i]]++;
    }
    *cpu = cpu_s() - c0;
    *wall = wall_s() - w0;
    free(k);
    free(s);
    free(idx);
    return rc;
}

int main(int argc, char **argv)
{
    const char *server = NULL, *saver = NULL;
    uint64_t requests = 20000, batch = 1, state_bytes = 16384, keys = 1000, rounds = 5;
    run r;
    memset(&r, 0, sizeof r);
    for (int i = 1; i + 1 < argc; i += 2) {
        uint64_t *v = NULL;
        if (strcmp(argv[i], "--server") == 0)
            server = argv[i + 1];
        else if (strcmp(argv[i], "--saver") == 0)
            saver = argv[i + 1];
        else if (strcmp(argv[i], "--requests") == 0)
            v = &requests;
        else if (strcmp(argv[i], "--batch") == 0)
            v = &batch;
        else if (strcmp(argv[i], "--state-bytes") == 0)
            v = &state_bytes;
        else if (strcmp(argv[i], "--keys") == 0)
            v = &keys;
        else if (strcmp(argv[i], "--rounds") == 0)
            v = &rounds;
        else {
            fprintf(stderr, "bench-route: unknown option %s\n", argv[i]);
            return 2;
        }
        if (v && ss_parse_u64(argv[i + 1], 1, 100000000ull, v) < 0) {
            fprintf(stderr, "bench-route: bad %s\n", argv[i]);
            return 2;
        }
    }
    if (!server || !saver || rounds > ROUNDS_MAX || state_bytes % 4 || batch > keys) {
        fprintf(stderr, "usage: bench-route --server ADDR --saver NAME [--requests N] "
                        "[--batch B] [--state-bytes S] [--keys K] [--rounds R<=%d]\n",
                ROUNDS_MAX);
        return 2;
    }
    char err[1024];
    ss_cluster_options o;
    ss_cluster_options_init(&o);
    o.seeds = &server;
    o.n_seeds = 1;
    if (ss_client_connect(&r.direct, server, 30000) < 0 ||
        ss_cluster_open(&r.cl, &o, err, sizeof err) < 0) {
        fprintf(stderr, "bench-route: cannot reach %s\n", server);
        return 1;
    }
    r.saver = saver;
    r.batch = batch;
    r.requests = requests;
    r.dim = (int64_t)(state_bytes / 4);
    r.names = calloc(keys, sizeof *r.names);
    r.keys = calloc(keys, sizeof *r.keys);
    r.segs = calloc(keys, sizeof *r.segs);
    r.rows = calloc(batch, state_bytes);
    if (!r.names || !r.keys || !r.segs || !r.rows)
        return 1;
    /* Keys the server owns (its shard of the cluster: the handle's owner
     * of each key must be the shard at --server). */
    int me = -1;
    for (size_t i = 0; i < ss_cluster_shards(r.cl); i++)
        if (strcmp(ss_cluster_shard_address(r.cl, i), server) == 0)
            me = (int)i;
    for (uint64_t i = 0; r.n_keys < keys && i < keys * 1000; i++) {
        snprintf(r.names[r.n_keys], sizeof r.names[0], "route-%llu", (unsigned long long)i);
        ss_key k = {r.names[r.n_keys], strlen(r.names[r.n_keys])};
        if (ss_cluster_shard_of(r.cl, &k) == me)
            r.keys[r.n_keys++] = k;
    }
    ss_state_def def = {.name = "s", .dtype = SS_DTYPE_FLOAT32, .shape = &r.dim, .rank = 1};
    int rc = ss_cluster_declare(r.cl, saver, &def, 1, 0, false, NULL);
    ss_fetch_result *f = NULL;
    if (rc == 0 && r.n_keys == keys)
        rc = ss_cluster_fetch(r.cl, saver, r.keys, r.n_keys, 0, 0, &f);
    for (size_t i = 0; rc == 0 && i < r.n_keys; i++)
        r.segs[i] = ss_fetch_result_next_segment(f, i);
    ss_fetch_result_free(f);
    if (rc < 0 || r.n_keys != keys) {
        fprintf(stderr, "bench-route: setup: %s\n", rc < 0 ? ss_cluster_last_error(r.cl)
                                                          : "too few keys owned");
        return 1;
    }
    /* Prefill (fetches read stored states). */
    r.requests = (keys + batch - 1) / batch;
    double c, w;
    if ((rc = round_once(&r, 2, &c, &w)) < 0) {
        fprintf(stderr, "bench-route: prefill: %s\n", ss_client_last_error(r.direct));
        return 1;
    }
    r.requests = requests;
    static const char *names[4] = {"direct_fetch", "routed_fetch", "direct_save", "routed_save"};
    double cpu[4][ROUNDS_MAX], wall[4][ROUNDS_MAX];
    for (int q = 0; q < (int)rounds; q++) {
        for (int m = 0; m < 4; m++) {
            /* Alternate the order so neither mode always runs first. */
            int mode = q % 2 ? (m ^ 1) : m;
            rc = round_once(&r, mode, &cpu[mode][q], &wall[mode][q]);
            if (rc < 0) {
                fprintf(stderr, "bench-route: %s: %s / %s\n", names[mode],
                        ss_client_last_error(r.direct), ss_cluster_last_error(r.cl));
                return 1;
            }
        }
    }
    double states = (double)requests * (double)batch;
    /* The routing work alone. */
    volatile int sink = 0;
    double c0 = cpu_s();
    for (uint32_t i = 0; i < BENCH_ROUTE_LOOKUPS; i++)
        sink += ss_cluster_shard_of(r.cl, &r.keys[i % r.n_keys]);
    double route_ns = (cpu_s() - c0) * 1e9 / BENCH_ROUTE_LOOKUPS;
    (void)sink;
    double ratio_f[ROUNDS_MAX], ratio_s[ROUNDS_MAX];
    for (int q = 0; q < (int)rounds; q++) {
        ratio_f[q] = cpu[1][q] / cpu[0][q];
        ratio_s[q] = cpu[3][q] / cpu[2][q];
    }
    printf("{\"server\":\"%s\",\"shards\":%zu,\"requests\":%llu,\"batch\":%llu,"
           "\"state_bytes\":%llu,\"rounds\":%llu", server, ss_cluster_shards(r.cl),
           (unsigned long long)requests, (unsigned long long)batch,
           (unsigned long long)state_bytes, (unsigned long long)rounds);
    for (int m = 0; m < 4; m++)
        printf(",\"%s_cpu_us_per_state\":%.4f,\"%s_wall_s\":%.4f", names[m],
               median(cpu[m], (int)rounds) * 1e6 / states, names[m],
               median(wall[m], (int)rounds));
    printf(",\"fetch_ratio_routed_direct\":%.4f,\"save_ratio_routed_direct\":%.4f,"
           "\"route_ns_per_key\":%.1f}\n", median(ratio_f, (int)rounds),
           median(ratio_s, (int)rounds), route_ns);
    ss_cluster_drop(r.cl, saver, NULL, 0, true, NULL);
    ss_cluster_close(r.cl);
    ss_client_close(r.direct);
    free(r.names);
    free(r.keys);
    free(r.segs);
    free(r.rows);
    return 0;
}
