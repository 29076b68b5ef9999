/* bench_store -- micro-benchmark of the store: fetch latency/throughput
 * (1 and T threads) and save throughput through the group-commit writer.
 *
 * Not a test (no timing assertions). Usage:
 *   bench-store [--keys N] [--dim D] [--threads T] [--sync on|off]
 *               [--fetches N] [--saves N]
 * Prints one line per measurement: name, operations, seconds, ops/s. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <uv.h>

#include "ss_error.h"
#include "ss_log.h"
#include "store_fixture.h"
#include "writer.h"

typedef struct bench_cfg {
    int keys;     /* sequences stored */
    int dim;      /* elements of each of the two float32 states */
    int threads;  /* fetching threads in the parallel run */
    bool sync;    /* --sync */
    long fetches; /* fetches per thread */
    long saves;   /* saves through the writer */
} bench_cfg;

typedef struct fetch_arg {
    ss_store *st;      /* store */
    ss_schema *schema; /* saver schema */
    const bench_cfg *cfg; /* configuration */
    unsigned seed;     /* rand_r seed */
    long failures;     /* fetches that did not return 0 */
} fetch_arg;

typedef struct save_op {
    ss_write_op op;    /* writer op (first member) */
    ss_schema *schema; /* saver schema */
    char key[24];      /* sequence key */
    uint64_t segment;  /* segment saved */
    const float *data; /* state data for both states */
    long *pending;     /* ops not done yet */
    long *errors;      /* ops that failed */
} save_op;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void *fetch_loop(void *p)
{
    fetch_arg *a = p;
    char msg[SS_STORE_MSG], key[24];
    size_t nb = (size_t)a->cfg->dim * 4;
    float *c = malloc(nb), *h = malloc(nb);
    void *const out[2] = {c, h};
    for (long i = 0; i < a->cfg->fetches; i++) {
        snprintf(key, sizeof key, "seq-%08d", (int)(rand_r(&a->seed) % (unsigned)a->cfg->keys));
        ss_bytes k = fx_key(key);
        uint64_t next, upd;
        if (ss_store_fetch(a->st, a->schema, 1, &k, out, &next, &upd, msg) != 0 || next == 0)
            a->failures++;
    }
    free(c);
    free(h);
    return NULL;
}

static int save_run(ss_write_op *op, ss_store_txn *txn, char msg[SS_STORE_MSG])
{
    save_op *s = (save_op *)op;
    const void *states[2] = {s->data, s->data};
    ss_save_item it = {fx_key(s->key), s->segment, false, states};
    bool applied;
    return ss_store_save(txn, s->schema, 1, &it, &applied, 1, msg);
}

static void save_done(ss_write_op *op, int rc, const char *msg)
{
    save_op *s = (save_op *)op;
    if (rc != 0 && (*s->errors)++ == 0)
        fprintf(stderr, "save failed: %s\n", msg);
    (*s->pending)--;
}

static void stopped(void *arg)
{
    *(int *)arg = 1;
}

int main(int argc, char **argv)
{
    bench_cfg cfg = {.keys = 10000, .dim = 512, .threads = 2, .sync = true,
                     .fetches = 200000, .saves = 20000};
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--keys")) cfg.keys = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--dim")) cfg.dim = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--threads")) cfg.threads = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--sync")) cfg.sync = !strcmp(argv[i + 1], "on");
        else if (!strcmp(argv[i], "--fetches")) cfg.fetches = atol(argv[i + 1]);
        else if (!strcmp(argv[i], "--saves")) cfg.saves = atol(argv[i + 1]);
        else {
            fprintf(stderr, "unknown option %s\n", argv[i]);
            return 2;
        }
    }
    if (cfg.keys < 1 || cfg.dim < 1 || cfg.threads < 1 || cfg.threads > 64) {
        fprintf(stderr, "bad arguments\n");
        return 2;
    }
    ss_log_threshold = SS_LOG_WARN;
    char dir[64];
    strcpy(dir, "/tmp/ss-store-bench-XXXXXX");
    if (!mkdtemp(dir))
        return 1;
    ss_store_options o = {.dir = dir, .map_size = 4ull << 30, .sync = cfg.sync};
    ss_store *st = NULL;
    if (ss_store_open(&st, &o) != 0)
        return 1;
    /* (the fixture's helpers use ck_assert, which needs a running test) */
    Statesaver__V1__DeclareRequest req = STATESAVER__V1__DECLARE_REQUEST__INIT;
    Statesaver__V1__StateSpec specs[2] = {STATESAVER__V1__STATE_SPEC__INIT,
                                          STATESAVER__V1__STATE_SPEC__INIT};
    Statesaver__V1__StateSpec *ptrs[2] = {&specs[0], &specs[1]};
    int64_t dim = cfg.dim;
    specs[0].name = "c";
    specs[1].name = "h";
    for (int i = 0; i < 2; i++) {
        specs[i].dtype = STATESAVER__V1__DTYPE__DT_FLOAT32;
        specs[i].shape = &dim;
        specs[i].n_shape = 1;
    }
    req.saver = "bench";
    req.states = ptrs;
    req.n_states = 2;
    char msg[SS_STORE_MSG];
    ss_schema *decl = NULL, *schema = NULL;
    bool created;
    if (ss_schema_from_declare(&req, &decl, msg) != 0) {
        fprintf(stderr, "%s\n", msg);
        return 1;
    }
    ss_store_txn *t = NULL;
    ss_store_txn_begin(st, &t, msg);
    ss_store_declare(t, decl, &created, msg);
    ss_store_txn_commit(t, msg);
    ss_store_schema(st, "bench", &schema);

    float *data = calloc((size_t)cfg.dim, 4);
    uv_loop_t loop;
    uv_loop_init(&loop);
    ss_writer *w = NULL;
    ss_writer_start(&w, st, &loop);
    long n = cfg.saves > cfg.keys ? cfg.saves : cfg.keys;
    save_op *ops = calloc((size_t)n, sizeof *ops);
    long pending = 0, errors = 0;
    /* Saves: keys first at segment 0 (creates every sequence), then the
     * rest continue at segment 1, 2, ... spread over the keys. */
    double t0 = now_s();
    for (long i = 0; i < n; i++) {
        save_op *s = &ops[i];
        s->op.run = save_run;
        s->op.done = save_done;
        s->schema = schema;
        snprintf(s->key, sizeof s->key, "seq-%08d", (int)(i % cfg.keys));
        s->segment = (uint64_t)(i / cfg.keys);
        s->data = data;
        s->pending = &pending;
        s->errors = &errors;
        pending++;
        ss_writer_submit(w, &s->op);
        /* Keep at most 256 in flight, like 256 pipelined clients. */
        while (pending >= 256)
            uv_run(&loop, UV_RUN_ONCE);
    }
    while (pending > 0)
        uv_run(&loop, UV_RUN_ONCE);
    double dt = now_s() - t0;
    ss_writer_stats ws;
    ss_writer_stats_get(w, &ws);
    printf("save(writer,sync=%s,256 in flight) ops=%ld s=%.3f ops/s=%.0f commits=%llu "
           "ops/commit=%.1f errors=%ld\n", cfg.sync ? "on" : "off", n, dt, (double)n / dt,
           (unsigned long long)ws.commits, (double)ws.ops / (double)(ws.commits ? ws.commits : 1),
           errors);
    int done = 0;
    ss_writer_stop(w, stopped, &done);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);

    for (int threads = 1; threads <= cfg.threads; threads = threads == 1 ? cfg.threads : threads + 1) {
        fetch_arg args[64];
        pthread_t th[64];
        t0 = now_s();
        for (int i = 0; i < threads; i++) {
            args[i] = (fetch_arg){st, schema, &cfg, (unsigned)(i + 1) * 7919u, 0};
            pthread_create(&th[i], NULL, fetch_loop, &args[i]);
        }
        long fails = 0;
        for (int i = 0; i < threads; i++) {
            pthread_join(th[i], NULL);
            fails += args[i].failures;
        }
        dt = now_s() - t0;
        long total = cfg.fetches * threads;
        printf("fetch(1 key, %d B state, %d threads) ops=%ld s=%.3f ops/s=%.0f "
               "us/op/thread=%.2f failures=%ld\n", cfg.dim * 8, threads, total, dt,
               (double)total / dt, dt * 1e6 * threads / (double)total, fails);
        if (threads == cfg.threads)
            break;
    }
    free(ops);
    free(data);
    ss_schema_unref(schema);
    ss_schema_unref(decl);
    ss_store_close(st);
    fx_rmtree(dir);
    return errors ? 1 : 0;
}
