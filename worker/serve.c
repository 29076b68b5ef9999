/* serve -- `statesaver-worker serve`: lease, unroll, complete, repeat.
 *
 * Per lease: items are grouped by their segment length T (clients may use
 * different num_unroll), each group is assembled time-major [T, B, I] with
 * its lengths and states [B, size], unrolled once, and scattered back to
 * per-item outputs [T, O] and states; then one Complete carries the whole
 * lease. An item the model cannot run (wrong input width, wrong state
 * sizes) is completed with an error, so the server counts the attempt and
 * its poison limit applies; the other items are unaffected.
 *
 * The Complete of lease n is sent without waiting for its reply; the
 * worker then leases and computes batch n+1 while the server commits n,
 * and takes n's reply before it sends the Complete of n+1 (at most one
 * Complete in flight; replies are matched by id, so the Lease reply and
 * the Complete reply may come in either order). A Complete whose reply is
 * lost with the connection is retried on a new one until the lease's
 * deadline, as before.
 *
 * --stats-json FILE records, per non-empty lease, the time of the Lease
 * call, of the unroll, the time the loop was blocked on the Complete, and
 * from its send to its reply, and writes their percentiles at exit.
 */
#include "serve.h"

#include <cblas.h>
#include <cjson/cJSON.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "atomic_file.h"
#include "ss_backoff.h"
#include "model.h"
#include "serve_metrics.h"
#include "ss_error.h"
#include "ss_log.h"
#include "statesaver.pb-c.h" /* status codes (STATESAVER__V1__CODE__*) */
#include "statesaver_jobs.h"
#include "unroll.h"
#include "unroll_cmd.h"

#define ERRSZ 1024
/* Longest error text sent with a failed item. */
#define SERVE_REASON_MAX 512
/* Most leases whose timings --stats-json keeps (later ones are counted,
 * not timed): 4 doubles each, 32 MiB at most. */
#define SERVE_STATS_SAMPLES_MAX 1000000u

/* Set by SIGTERM/SIGINT: finish the current batch, then exit. */
static volatile sig_atomic_t stop_requested;

static void on_signal(int sig)
{
    (void)sig;
    stop_requested = 1;
}

/* Parsed command line. */
typedef struct serve_opts {
    const char *server;     /* --server HOST:PORT */
    const char *model;      /* --model */
    const char *saver;      /* --saver */
    const char *token_file; /* --token-file, or NULL */
    uint32_t batch;         /* --batch */
    uint32_t lease_ms;      /* --lease-ms, 0 = server default */
    uint32_t wait_ms;       /* --wait-ms */
    uint32_t timeout_ms;    /* --timeout-ms */
    uint64_t ttl_ms;        /* --ttl-ms: idle_ttl of the declared saver */
    int threads;            /* --threads, 0 = default */
    uint64_t max_batches;   /* --max-batches, 0 = no limit */
    uint64_t log_every;     /* --log-every */
    const char *stats_json; /* --stats-json FILE, or NULL */
    const char *metrics_listen;    /* --metrics-listen HOST:PORT, or NULL */
    const char *metrics_port_file; /* --metrics-port-file FILE, or NULL */
} serve_opts;

/* Timings of non-empty leases for --stats-json (ms). */
typedef struct lease_times {
    double *lease;          /* Lease call: request to reply */
    double *compute;        /* unroll of the whole lease */
    double *complete;       /* loop blocked on the Complete: sending it, and
                               waiting for its reply after the next batch */
    double *reply;          /* Complete sent to its reply in hand (includes
                               the next Lease and unroll it overlaps) */
    double *total;          /* Lease request to Complete reply in hand */
    uint64_t *items;        /* segments in the lease */
    size_t n;               /* samples kept */
    size_t cap;             /* allocated samples */
    uint64_t dropped;       /* leases beyond SERVE_STATS_SAMPLES_MAX */
} lease_times;

/* The worker's long-lived pieces; nothing here describes a sequence. */
typedef struct worker {
    serve_opts o;           /* options */
    ss_model *m;            /* loaded model */
    ss_unroll *u;           /* unroll workspace (reused) */
    char *token;            /* auth token (owned) or NULL */
    size_t token_len;       /* bytes of token */
    char name[128];         /* worker name for the server's logs */
    ss_client *c;           /* connection, NULL while disconnected */
    ss_backoff backoff;     /* waits between reconnects and refused leases */
    uint64_t lease_refusals; /* failed Lease calls since the last good one */
    uint64_t batches;       /* non-empty leases served */
    uint64_t segments;      /* segments completed (incl. failed items) */
    uint64_t failed_items;  /* items completed with an error */
    uint64_t log_segments;  /* segments at the last log line */
    int64_t log_t;          /* time of the last log line (ms) */
    lease_times lt;         /* --stats-json samples */
    int64_t t_start_us;     /* start of the lease loop (us) */
    ss_serve_metrics *metrics; /* --metrics-listen endpoint, or NULL */
} worker;

static void usage(FILE *f)
{
    fprintf(f,
            "usage: statesaver-worker serve --model M.safetensors --saver NAME\n"
            "         [--server HOST:PORT] [--batch N] [--lease-ms MS] [--wait-ms MS]\n"
            "         [--ttl-ms MS] [--threads N] [--token-file F] [--timeout-ms MS]\n"
            "         [--max-batches N] [--log-every N] [--log-level LEVEL]\n"
            "         [--stats-json FILE] [--metrics-listen HOST:PORT]\n"
            "         [--metrics-port-file FILE]\n"
            "\n"
            "Serve the job queue of saver NAME: declare its schema from the model\n"
            "(idempotent), then lease ready segments, unroll them and complete them.\n"
            "  --server HOST:PORT   server (default $STATESAVER_SERVER, else %s)\n"
            "  --model PATH         safetensors model (see docs/worker.md)\n"
            "  --saver NAME         saver whose queue to serve\n"
            "  --batch N            segments per lease, 1..%u (default %u)\n"
            "  --lease-ms MS        lease duration (default: the server's)\n"
            "  --wait-ms MS         how long a lease waits for work on the server\n"
            "                       (default %u)\n"
            "  --ttl-ms MS          idle_ttl when declaring the saver (default 0: never)\n"
            "  --threads N          unroll threads, splitting the batch rows (default:\n"
            "                       OPENBLAS_NUM_THREADS or\n"
            "                       OMP_NUM_THREADS if set, else %d)\n"
            "  --token-file F       file holding the server's auth token\n"
            "  --timeout-ms MS      per-call timeout (default %u)\n"
            "  --max-batches N      exit after N non-empty leases (default: never)\n"
            "  --log-every N        log throughput every N batches (default %u)\n"
            "  --log-level LEVEL    error, warn, info (default) or debug\n"
            "  --stats-json FILE    at exit, write per-lease timings (p50/p99/mean of the\n"
            "                       Lease call, the unroll, the time blocked on the\n"
            "                       Complete, its send-to-reply time and the round trip,\n"
            "                       in ms) as JSON to FILE\n"
            "  --metrics-listen HOST:PORT  serve Prometheus /metrics, /healthz and /readyz\n"
            "                       over HTTP (off by default; port 0 = ephemeral)\n"
            "  --metrics-port-file FILE  write the bound metrics port here\n"
            "  --help, --version\n"
            "The server going away is not an error, nor a Lease refused with\n"
            "RESOURCE_EXHAUSTED or UNAVAILABLE: the worker retries with jittered\n"
            "exponential backoff (%u ms .. %u ms), logging once per streak. SIGTERM/SIGINT: finish and complete the current\n"
            "batch, then exit 0. Exit status: 1 schema conflict or fatal refusal,\n"
            "2 bad arguments or model file.\n",
            SS_SERVE_DEFAULT_SERVER, SS_SERVE_BATCH_MAX, SS_SERVE_BATCH_DEFAULT,
            SS_SERVE_WAIT_MS_DEFAULT, SS_UNROLL_DEFAULT_THREADS, SS_SERVE_TIMEOUT_MS_DEFAULT,
            SS_SERVE_LOG_EVERY_DEFAULT, SS_SERVE_BACKOFF_MIN_MS, SS_SERVE_BACKOFF_MAX_MS);
}

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static uint64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* Parse an unsigned decimal in [lo, hi]. */
static int parse_u64(const char *flag, const char *s, uint64_t lo, uint64_t hi,
                     uint64_t *out)
{
    char *end = NULL;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (!*s || *s == '-' || *end || errno || v < lo || v > hi) {
        fprintf(stderr, "serve: %s must be an integer in [%" PRIu64 ", %" PRIu64 "], got '%s'\n",
                flag, lo, hi, s);
        return SS_ERR_INVALID;
    }
    *out = v;
    return 0;
}

/* Returns 0 to go on, or sets *exit_now to the status to exit with. */
static int parse_args(serve_opts *o, int argc, char **argv, int *exit_now)
{
    enum { OPT_LEASE = 1000, OPT_WAIT, OPT_TTL, OPT_THREADS, OPT_TOKEN, OPT_TIMEOUT,
           OPT_MAXB, OPT_LOGEVERY, OPT_LOG, OPT_STATS, OPT_MLISTEN, OPT_MPORT, OPT_HELP,
           OPT_VERSION };
    static const struct option longopts[] = {
        {"server", required_argument, NULL, 's'},
        {"model", required_argument, NULL, 'm'},
        {"saver", required_argument, NULL, 'n'},
        {"batch", required_argument, NULL, 'b'},
        {"lease-ms", required_argument, NULL, OPT_LEASE},
        {"wait-ms", required_argument, NULL, OPT_WAIT},
        {"ttl-ms", required_argument, NULL, OPT_TTL},
        {"threads", required_argument, NULL, OPT_THREADS},
        {"token-file", required_argument, NULL, OPT_TOKEN},
        {"timeout-ms", required_argument, NULL, OPT_TIMEOUT},
        {"max-batches", required_argument, NULL, OPT_MAXB},
        {"log-every", required_argument, NULL, OPT_LOGEVERY},
        {"log-level", required_argument, NULL, OPT_LOG},
        {"stats-json", required_argument, NULL, OPT_STATS},
        {"metrics-listen", required_argument, NULL, OPT_MLISTEN},
        {"metrics-port-file", required_argument, NULL, OPT_MPORT},
        {"help", no_argument, NULL, OPT_HELP},
        {"version", no_argument, NULL, OPT_VERSION},
        {NULL, 0, NULL, 0},
    };
    uint64_t v = 0;
    int c;
    *exit_now = -1;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":", longopts, NULL)) != -1) {
        int rc = 0;
        switch (c) {
        case 's': o->server = optarg; break;
        case 'm': o->model = optarg; break;
        case 'n': o->saver = optarg; break;
        case 'b':
            rc = parse_u64("--batch", optarg, 1, SS_SERVE_BATCH_MAX, &v);
            o->batch = (uint32_t)v;
            break;
        case OPT_LEASE:
            rc = parse_u64("--lease-ms", optarg, 1, 3600000u, &v);
            o->lease_ms = (uint32_t)v;
            break;
        case OPT_WAIT:
            rc = parse_u64("--wait-ms", optarg, 0, 600000u, &v);
            o->wait_ms = (uint32_t)v;
            break;
        case OPT_TTL: rc = parse_u64("--ttl-ms", optarg, 0, UINT64_MAX, &o->ttl_ms); break;
        case OPT_THREADS:
            rc = parse_u64("--threads", optarg, 1, SS_UNROLL_MAX_THREADS, &v);
            o->threads = (int)v;
            break;
        case OPT_TOKEN: o->token_file = optarg; break;
        case OPT_STATS: o->stats_json = optarg; break;
        case OPT_MLISTEN: o->metrics_listen = optarg; break;
        case OPT_MPORT: o->metrics_port_file = optarg; break;
        case OPT_TIMEOUT:
            rc = parse_u64("--timeout-ms", optarg, 1, 86400000u, &v);
            o->timeout_ms = (uint32_t)v;
            break;
        case OPT_MAXB: rc = parse_u64("--max-batches", optarg, 1, UINT64_MAX, &o->max_batches); break;
        case OPT_LOGEVERY: rc = parse_u64("--log-every", optarg, 1, UINT64_MAX, &o->log_every); break;
        case OPT_LOG: {
            int lvl = ss_log_parse_level(optarg);
            if (lvl < 0) {
                fprintf(stderr, "serve: --log-level must be error, warn, info or debug\n");
                rc = SS_ERR_INVALID;
            } else {
                ss_log_threshold = lvl;
            }
            break;
        }
        case OPT_HELP: usage(stdout); *exit_now = SS_SERVE_EXIT_OK; return 0;
        case OPT_VERSION:
            printf("statesaver-worker serve %s\n", SS_VERSION);
            *exit_now = SS_SERVE_EXIT_OK;
            return 0;
        case ':':
            fprintf(stderr, "serve: option %s needs an argument\n", argv[optind - 1]);
            rc = SS_ERR_INVALID;
            break;
        default:
            fprintf(stderr, "serve: unknown option '%s'\n", argv[optind - 1]);
            rc = SS_ERR_INVALID;
            break;
        }
        if (rc != 0)
            goto usage_error;
    }
    if (optind < argc) {
        fprintf(stderr, "serve: unexpected argument '%s'\n", argv[optind]);
        goto usage_error;
    }
    if (!o->model || !o->saver || !o->saver[0]) {
        fprintf(stderr, "serve: --model and --saver are required\n");
        goto usage_error;
    }
    if (!o->server || !o->server[0])
        o->server = getenv("STATESAVER_SERVER");
    if (!o->server || !o->server[0])
        o->server = SS_SERVE_DEFAULT_SERVER;
    return 0;
usage_error:
    fprintf(stderr, "Try 'statesaver-worker serve --help'.\n");
    *exit_now = SS_SERVE_EXIT_USAGE;
    return SS_ERR_INVALID;
}

/* Read the token file; trailing CR/LF are not part of the token (same rule
 * as the server's and the CLI's). */
static int read_token(worker *w)
{
    FILE *fp = fopen(w->o.token_file, "rb");
    if (!fp) {
        fprintf(stderr, "serve: %s: %s\n", w->o.token_file, strerror(errno));
        return SS_ERR_IO;
    }
    char *buf = malloc(SS_SERVE_TOKEN_MAX + 1);
    size_t n = buf ? fread(buf, 1, SS_SERVE_TOKEN_MAX + 1, fp) : 0;
    fclose(fp);
    if (!buf) {
        fprintf(stderr, "serve: out of memory\n");
        return SS_ERR_NOMEM;
    }
    if (n > SS_SERVE_TOKEN_MAX) {
        free(buf);
        fprintf(stderr, "serve: %s: token longer than %u bytes\n", w->o.token_file,
                SS_SERVE_TOKEN_MAX);
        return SS_ERR_TOO_BIG;
    }
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
        n--;
    w->token = buf;
    w->token_len = n;
    return 0;
}

/* Sleep ms, waking early when a stop is requested. */
static void nap(uint32_t ms)
{
    int64_t until = mono_ms() + ms;
    while (!stop_requested) {
        int64_t left = until - mono_ms();
        if (left <= 0)
            break;
        struct timespec ts = {.tv_sec = 0, .tv_nsec = (long)(left > 50 ? 50 : left) * 1000000L};
        nanosleep(&ts, NULL);
    }
}

static void disconnect(worker *w)
{
    ss_client_close(w->c);
    w->c = NULL;
    ss_serve_metrics_connected(w->metrics, false);
}

/* The server went away (or answered UNAVAILABLE): worth reconnecting. */
static bool transient(const worker *w, int rc)
{
    return ss_client_broken(w->c) || rc == SS_ERR_CONNECT || rc == SS_ERR_TIMEOUT ||
           rc == SS_ERR_CLOSED || rc == SS_ERR_IO ||
           rc == SS_ERR_STATUS(STATESAVER__V1__CODE__UNAVAILABLE);
}

/* Wait the current (jittered) backoff, then double it up to the maximum. */
static void backoff(worker *w)
{
    nap(ss_backoff_next(&w->backoff));
}

/* Connect and declare the schema. 0 when connected; SS_ERR_CONFLICT for a
 * schema conflict (fatal); another negative code for a failure worth
 * retrying after a backoff. */
static int connect_declare(worker *w)
{
    ss_client_options opt;
    ss_state_def defs[SS_MODEL_MAX_LAYERS * 2];
    int64_t shapes[SS_MODEL_MAX_LAYERS * 2];
    char err[ERRSZ];
    bool created = false;
    int rc;

    ss_client_options_init(&opt);
    opt.server = w->o.server;
    opt.timeout_ms = (int)w->o.timeout_ms;
    opt.connect_timeout_ms = (int)(w->o.timeout_ms < 5000 ? w->o.timeout_ms : 5000);
    opt.token = w->token;
    opt.token_len = w->token_len;
    opt.client_name = w->name;
    rc = ss_client_open(&w->c, &opt, err, sizeof err);
    if (rc < 0) {
        SS_LOG(SS_LOG_WARN, "serve: connecting to %s: %s", w->o.server, err);
        w->c = NULL;
        return rc;
    }
    for (size_t i = 0; i < w->m->n_states; i++) {
        shapes[i] = w->m->state_sizes[i];
        defs[i] = (ss_state_def){.name = w->m->state_names[i], .dtype = SS_DTYPE_FLOAT32,
                                 .shape = &shapes[i], .rank = 1};
    }
    rc = ss_client_declare(w->c, w->o.saver, defs, w->m->n_states, w->o.ttl_ms, false,
                           &created);
    if (rc == SS_ERR_STATUS(STATESAVER__V1__CODE__ALREADY_EXISTS)) {
        SS_LOG(SS_LOG_ERROR, "serve: saver %s exists with a schema that differs from model %s: %s",
               w->o.saver, w->o.model, ss_client_last_error(w->c));
        disconnect(w);
        return SS_ERR_CONFLICT;
    }
    if (rc < 0) {
        SS_LOG(SS_LOG_WARN, "serve: declaring saver %s on %s: %s", w->o.saver, w->o.server,
               ss_client_last_error(w->c));
        if (!transient(w, rc) && SS_IS_STATUS_ERR(rc) &&
            rc != SS_ERR_STATUS(STATESAVER__V1__CODE__RESOURCE_EXHAUSTED)) {
            disconnect(w);
            return SS_ERR_INVALID; /* e.g. a bad saver name or token: fatal */
        }
        disconnect(w);
        return rc;
    }
    /* In a streak of refused leases every reconnect would say this again. */
    SS_LOG(w->lease_refusals ? SS_LOG_DEBUG : SS_LOG_INFO,
           "serve: connected to %s, saver %s %s (%zu states), worker %s",
           w->o.server, w->o.saver, created ? "declared" : "already declared",
           w->m->n_states, w->name);
    /* The backoff is reset by a Lease that works, not by the connect: a
     * server that accepts connections but refuses every Lease must still
     * see the waits grow. */
    ss_serve_metrics_connected(w->metrics, true);
    return 0;
}

/* Per-item results of one lease. */
typedef struct results {
    ss_complete_item *items;  /* one per leased item */
    float **outputs;          /* per item [rows, output_size] (owned) */
    float **states;           /* per item: all new states back to back (owned) */
    const float ***sptr;      /* per item: pointers into states (owned arrays) */
    char (*why)[SERVE_REASON_MAX]; /* per item: error text, "" if none */
    size_t n;                 /* items */
} results;

static void results_free(results *r)
{
    for (size_t i = 0; i < r->n; i++) {
        if (r->outputs)
            free(r->outputs[i]);
        if (r->states)
            free(r->states[i]);
        if (r->sptr)
            free(r->sptr[i]);
    }
    free(r->items);
    free(r->outputs);
    free(r->states);
    free(r->sptr);
    free(r->why);
    memset(r, 0, sizeof *r);
}

/* Why item i cannot run on this model ("" if it can). */
static void check_item(const worker *w, const ss_lease *l, size_t i, char *why, size_t size)
{
    ss_lease_item it;
    why[0] = '\0';
    ss_lease_item_get(l, i, &it);
    if (it.cols != (uint32_t)w->m->input_size) {
        snprintf(why, size, "inputs have %u columns, model %s expects input_size %d", it.cols,
                 w->o.model, w->m->input_size);
        return;
    }
    if (ss_lease_states(l) != w->m->n_states) {
        snprintf(why, size, "the saver has %zu states, model %s has %zu", ss_lease_states(l),
                 w->o.model, w->m->n_states);
        return;
    }
    for (size_t s = 0; s < w->m->n_states; s++) {
        size_t count = 0;
        ss_lease_item_state(l, i, s, &count);
        if (count != (size_t)w->m->state_sizes[s] ||
            strcmp(ss_lease_state_name(l, s), w->m->state_names[s]) != 0) {
            snprintf(why, size, "state %s has %zu values, model %s expects %s with %d",
                     ss_lease_state_name(l, s), count, w->o.model, w->m->state_names[s],
                     w->m->state_sizes[s]);
            return;
        }
    }
}

/* Unroll the items idx[0..B) (all with T rows) in one batch. */
static int run_group(worker *w, const ss_lease *l, results *r, const size_t *idx, size_t B,
                     uint32_t T)
{
    const ss_model *m = w->m;
    size_t in_w = (size_t)m->input_size, out_w = (size_t)m->output_size, ns = m->n_states;
    float *x = NULL, *y = NULL, *st[SS_MODEL_MAX_LAYERS * 2] = {0};
    int32_t *len = NULL;
    int rc = SS_ERR_NOMEM;

    x = malloc((size_t)T * B * in_w * sizeof *x);
    y = malloc((size_t)T * B * out_w * sizeof *y);
    len = malloc(B * sizeof *len);
    if (!x || !y || !len)
        goto out;
    for (size_t s = 0; s < ns; s++)
        if (!(st[s] = malloc(B * (size_t)m->state_sizes[s] * sizeof(float))))
            goto out;
    for (size_t b = 0; b < B; b++) {
        ss_lease_item it;
        ss_lease_item_get(l, idx[b], &it);
        len[b] = (int32_t)it.length;
        for (uint32_t t = 0; t < T; t++)
            memcpy(x + ((size_t)t * B + b) * in_w, it.inputs + (size_t)t * in_w, in_w * sizeof *x);
        for (size_t s = 0; s < ns; s++)
            memcpy(st[s] + b * (size_t)m->state_sizes[s], ss_lease_item_state(l, idx[b], s, NULL),
                   (size_t)m->state_sizes[s] * sizeof(float));
    }
    rc = ss_unroll_run(w->u, (int)T, (int)B, x, len, (const float *const *)st, y, st);
    if (rc < 0)
        goto out;
    for (size_t b = 0; b < B; b++) {
        size_t i = idx[b];
        size_t total = 0;
        for (size_t s = 0; s < ns; s++)
            total += (size_t)m->state_sizes[s];
        r->outputs[i] = malloc((size_t)T * out_w * sizeof(float));
        r->states[i] = malloc((total ? total : 1) * sizeof(float));
        r->sptr[i] = calloc(ns ? ns : 1, sizeof *r->sptr[i]);
        if (!r->outputs[i] || !r->states[i] || !r->sptr[i]) {
            rc = SS_ERR_NOMEM;
            goto out;
        }
        for (uint32_t t = 0; t < T; t++)
            memcpy(r->outputs[i] + (size_t)t * out_w, y + ((size_t)t * B + b) * out_w, out_w * sizeof(float));
        float *p = r->states[i];
        for (size_t s = 0; s < ns; s++) {
            size_t sz = (size_t)m->state_sizes[s];
            memcpy(p, st[s] + b * sz, sz * sizeof(float));
            r->sptr[i][s] = p;
            p += sz;
        }
        r->items[i].outputs = r->outputs[i];
        r->items[i].out_cols = (uint32_t)out_w;
        r->items[i].states = r->sptr[i];
    }
    rc = 0;
out:
    for (size_t s = 0; s < ns; s++)
        free(st[s]);
    free(len);
    free(y);
    free(x);
    return rc;
}

/* Compute every item of the lease into r (errors per item in r->why). */
static int compute(worker *w, const ss_lease *l, results *r)
{
    size_t n = ss_lease_items(l);
    size_t *idx = NULL;
    bool *done = NULL;
    int rc = SS_ERR_NOMEM;

    r->n = n;
    r->items = calloc(n, sizeof *r->items);
    r->outputs = calloc(n, sizeof *r->outputs);
    r->states = calloc(n, sizeof *r->states);
    r->sptr = calloc(n, sizeof *r->sptr);
    r->why = calloc(n, sizeof *r->why);
    idx = malloc(n * sizeof *idx);
    done = calloc(n, sizeof *done);
    if (!r->items || !r->outputs || !r->states || !r->sptr || !r->why || !idx || !done)
        goto out;
    for (size_t i = 0; i < n; i++) {
        r->items[i].item = i;
        check_item(w, l, i, r->why[i], sizeof r->why[i]);
        if (r->why[i][0]) {
            r->items[i].error = r->why[i];
            done[i] = true;
            SS_LOG(SS_LOG_WARN, "serve: lease %" PRIu64 " item %zu: %s", ss_lease_id(l), i,
                   r->why[i]);
        }
    }
    /* One unroll per distinct T, in order of first appearance. */
    for (size_t i = 0; i < n; i++) {
        if (done[i])
            continue;
        ss_lease_item first;
        ss_lease_item_get(l, i, &first);
        size_t B = 0;
        for (size_t k = i; k < n; k++) {
            ss_lease_item it;
            ss_lease_item_get(l, k, &it);
            if (!done[k] && it.rows == first.rows) {
                idx[B++] = k;
                done[k] = true;
            }
        }
        int grc = run_group(w, l, r, idx, B, first.rows);
        if (grc == SS_ERR_NOMEM) {
            rc = grc;
            goto out;
        }
        if (grc < 0) {
            for (size_t b = 0; b < B; b++) {
                snprintf(r->why[idx[b]], sizeof r->why[idx[b]],
                         "unroll of T=%u B=%zu failed: %s", first.rows, B, ss_strerror(grc));
                r->items[idx[b]].error = r->why[idx[b]];
            }
            SS_LOG(SS_LOG_WARN, "serve: lease %" PRIu64 ": unroll of T=%u B=%zu failed: %s",
                   ss_lease_id(l), first.rows, B, ss_strerror(grc));
        }
    }
    rc = 0;
out:
    free(done);
    free(idx);
    return rc;
}

/* Complete the lease; after a transport failure reconnect and retry while
 * the lease can still be alive. */
static void complete(worker *w, const ss_lease *l, results *r)
{
    for (;;) {
        int rc = w->c ? ss_client_complete(w->c, l, r->items, r->n, NULL) : SS_ERR_CLOSED;
        if (rc == 0) {
            w->segments += r->n;
            for (size_t i = 0; i < r->n; i++)
                w->failed_items += r->items[i].error != NULL;
            return;
        }
        if (w->c && !transient(w, rc)) {
            /* Expired lease (FAILED_PRECONDITION) or a refusal: the
             * segments go back to the queue on the server's side. */
            SS_LOG(SS_LOG_WARN, "serve: completing lease %" PRIu64 " (%zu items): %s",
                   ss_lease_id(l), r->n, ss_client_last_error(w->c));
            return;
        }
        if (w->c) {
            SS_LOG(SS_LOG_WARN, "serve: completing lease %" PRIu64 ": %s; reconnecting",
                   ss_lease_id(l), ss_client_last_error(w->c));
            disconnect(w);
        }
        if (wall_ms() >= ss_lease_deadline_ms(l)) {
            SS_LOG(SS_LOG_WARN, "serve: lease %" PRIu64 " passed its deadline before it could "
                   "be completed; its segments return to the queue", ss_lease_id(l));
            return;
        }
        /* Keep the wait within the lease; a stop request does not cut it
         * short, the batch is to be completed first. */
        uint64_t left = ss_lease_deadline_ms(l) - wall_ms();
        struct timespec ts = {.tv_sec = 0, .tv_nsec = 0};
        uint32_t next = ss_backoff_next(&w->backoff);
        uint32_t wait = next < left ? next : (uint32_t)left;
        ts.tv_sec = wait / 1000;
        ts.tv_nsec = (long)(wait % 1000) * 1000000L;
        nanosleep(&ts, NULL);
        int crc = connect_declare(w);
        if (crc == SS_ERR_CONFLICT || crc == SS_ERR_INVALID)
            return;
    }
}

/* One lease's timings (us, monotonic) for --stats-json. */
typedef struct lease_clock {
    int64_t lease;     /* Lease request sent */
    int64_t leased;    /* Lease reply in hand */
    int64_t computed;  /* unroll done, Complete about to be sent */
    int64_t sent;      /* Complete sent */
    int64_t blocked;   /* loop time spent blocked on the Complete's reply */
} lease_clock;

/* Keep one lease's timings for --stats-json; done = reply in hand (us). */
static void times_add(lease_times *t, const lease_clock *k, int64_t done, size_t items)
{
    if (t->n == t->cap) {
        size_t nc = t->cap ? t->cap * 2 : 1024;
        if (nc > SERVE_STATS_SAMPLES_MAX)
            nc = SERVE_STATS_SAMPLES_MAX;
        if (nc <= t->n) {
            t->dropped++;
            return;
        }
        /* Each array keeps its own result, so a failure leaves them valid. */
        double **a[5] = {&t->lease, &t->compute, &t->complete, &t->reply, &t->total};
        for (int i = 0; i < 5; i++) {
            double *na = realloc(*a[i], nc * sizeof *na);
            if (!na) {
                t->dropped++;
                return;
            }
            *a[i] = na;
        }
        uint64_t *ni = realloc(t->items, nc * sizeof *ni);
        if (!ni) {
            t->dropped++;
            return;
        }
        t->items = ni;
        t->cap = nc;
    }
    t->lease[t->n] = (double)(k->leased - k->lease) / 1000.0;
    t->compute[t->n] = (double)(k->computed - k->leased) / 1000.0;
    t->complete[t->n] = (double)(k->sent - k->computed + k->blocked) / 1000.0;
    t->reply[t->n] = (double)(done - k->computed) / 1000.0;
    t->total[t->n] = (double)(done - k->lease) / 1000.0;
    t->items[t->n] = items;
    t->n++;
}

static void times_free(lease_times *t)
{
    free(t->lease);
    free(t->compute);
    free(t->complete);
    free(t->reply);
    free(t->total);
    free(t->items);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* {"p50", "p99", "mean", "max"} of v[0..n) (sorted in place), in ms. */
static cJSON *percentiles(double *v, size_t n)
{
    cJSON *o = cJSON_CreateObject();
    if (!o || n == 0)
        return o;
    double sum = 0;
    for (size_t i = 0; i < n; i++)
        sum += v[i];
    qsort(v, n, sizeof *v, cmp_double);
    /* Nearest rank: the smallest value with at least p% of samples <= it. */
    size_t i50 = (n * 50 + 99) / 100, i99 = (n * 99 + 99) / 100;
    cJSON_AddNumberToObject(o, "p50", v[i50 ? i50 - 1 : 0]);
    cJSON_AddNumberToObject(o, "p99", v[i99 ? i99 - 1 : 0]);
    cJSON_AddNumberToObject(o, "mean", sum / (double)n);
    cJSON_AddNumberToObject(o, "max", v[n - 1]);
    return o;
}

/* Write --stats-json; 0 or a negative code (message logged). */
static int write_stats(worker *w)
{
    lease_times *t = &w->lt;
    char err[ERRSZ];
    uint64_t items = 0;
    int rc = SS_ERR_NOMEM;
    ss_afile *af = NULL;
    char *text = NULL;
    cJSON *o = cJSON_CreateObject();

    for (size_t i = 0; i < t->n; i++)
        items += t->items[i];
    if (!o)
        goto out;
    cJSON_AddNumberToObject(o, "batches", (double)w->batches);
    cJSON_AddNumberToObject(o, "segments", (double)w->segments);
    cJSON_AddNumberToObject(o, "failed_items", (double)w->failed_items);
    cJSON_AddNumberToObject(o, "seconds", (double)(mono_us() - w->t_start_us) / 1e6);
    cJSON_AddNumberToObject(o, "batch", w->o.batch);
    cJSON_AddNumberToObject(o, "samples", (double)t->n);
    cJSON_AddNumberToObject(o, "samples_dropped", (double)t->dropped);
    cJSON_AddNumberToObject(o, "items_per_lease", t->n ? (double)items / (double)t->n : 0);
    cJSON_AddItemToObject(o, "lease_ms", percentiles(t->lease, t->n));
    cJSON_AddItemToObject(o, "compute_ms", percentiles(t->compute, t->n));
    cJSON_AddItemToObject(o, "complete_ms", percentiles(t->complete, t->n));
    cJSON_AddItemToObject(o, "complete_reply_ms", percentiles(t->reply, t->n));
    cJSON_AddItemToObject(o, "round_trip_ms", percentiles(t->total, t->n));
    text = cJSON_Print(o);
    if (!text)
        goto out;
    if ((rc = ss_afile_open(w->o.stats_json, &af, err, sizeof err)) < 0) {
        SS_LOG(SS_LOG_ERROR, "serve: --stats-json: %s", err);
        goto out;
    }
    fputs(text, ss_afile_stream(af));
    fputc('\n', ss_afile_stream(af));
    rc = ss_afile_commit(af, err, sizeof err);
    af = NULL;
    if (rc < 0)
        SS_LOG(SS_LOG_ERROR, "serve: --stats-json: %s", err);
out:
    if (rc == SS_ERR_NOMEM)
        SS_LOG(SS_LOG_ERROR, "serve: --stats-json: out of memory");
    ss_afile_abort(af);
    free(text);
    cJSON_Delete(o);
    return rc;
}

static void log_progress(worker *w, bool force)
{
    if (!force && (w->o.log_every == 0 || w->batches % w->o.log_every != 0))
        return;
    int64_t now = mono_ms();
    double secs = (double)(now - w->log_t) / 1000.0;
    double rate = secs > 0 ? (double)(w->segments - w->log_segments) / secs : 0;
    SS_LOG(SS_LOG_INFO, "serve: %" PRIu64 " batches, %" PRIu64 " segments (%" PRIu64
           " failed), %.1f segments/s since the last report", w->batches, w->segments,
           w->failed_items, rate);
    w->log_t = now;
    w->log_segments = w->segments;
}

/* A computed lease whose Complete is in flight (at most one). */
typedef struct pending {
    ss_lease *l;      /* the lease (owned), NULL when nothing is pending */
    results r;        /* its results, kept for a retry of the Complete */
    uint64_t id;      /* request id of the Complete on w->c */
    bool sent;        /* the Complete went out on the current connection */
    lease_clock k;    /* timings */
} pending;

/* Send the Complete of p without waiting for the reply. A send that fails
 * on the wire leaves p unsent: pending_finish retries it synchronously. */
static void pending_send(worker *w, pending *p)
{
    p->k.computed = mono_us();
    p->sent = false;
    if (w->c) {
        int rc = ss_client_complete_send(w->c, p->l, p->r.items, p->r.n, &p->id);
        if (rc == 0)
            p->sent = true;
        else
            SS_LOG(SS_LOG_DEBUG, "serve: sending the complete of lease %" PRIu64 ": %s",
                   ss_lease_id(p->l), ss_client_last_error(w->c));
    }
    p->k.sent = mono_us();
}

/* Take the reply of p's Complete (or complete it again on a new connection
 * after a transport failure), account for it and release p. */
static void pending_finish(worker *w, pending *p)
{
    if (!p->l)
        return;
    uint64_t done_before = w->segments;
    int64_t t = mono_us();
    int rc = SS_ERR_CLOSED;
    if (p->sent && w->c)
        rc = ss_client_complete_recv(w->c, p->id, p->r.n, NULL);
    if (rc == 0) {
        w->segments += p->r.n;
        for (size_t i = 0; i < p->r.n; i++)
            w->failed_items += p->r.items[i].error != NULL;
    } else if (w->c && p->sent && !transient(w, rc)) {
        /* Expired lease (FAILED_PRECONDITION) or a refusal: the segments
         * go back to the queue on the server's side. */
        SS_LOG(SS_LOG_WARN, "serve: completing lease %" PRIu64 " (%zu items): %s",
               ss_lease_id(p->l), p->r.n, ss_client_last_error(w->c));
    } else {
        if (w->c) {
            SS_LOG(SS_LOG_WARN, "serve: completing lease %" PRIu64 ": %s; reconnecting",
                   ss_lease_id(p->l), ss_client_last_error(w->c));
            disconnect(w);
        }
        complete(w, p->l, &p->r); /* retries on a new connection within the deadline */
    }
    int64_t now = mono_us();
    p->k.blocked = now - t;
    if (w->o.stats_json)
        times_add(&w->lt, &p->k, now, p->r.n);
    ss_serve_metrics_lease(w->metrics, p->l, p->r.items, p->r.n, w->segments > done_before,
                           (double)(p->k.computed - p->k.leased) / 1e6,
                           (double)(now - p->k.lease) / 1e6);
    SS_LOG(SS_LOG_DEBUG, "serve: lease %" PRIu64 ": %zu segments", ss_lease_id(p->l), p->r.n);
    results_free(&p->r);
    ss_lease_free(p->l);
    memset(p, 0, sizeof *p);
    log_progress(w, false);
}

/* What a failed Lease means for the loop. */
typedef enum lease_failure {
    LEASE_FATAL = 0,  /* a refusal that will not change: exit */
    LEASE_RECONNECT,  /* connection lost, server unavailable, saver gone */
    LEASE_BUSY,       /* RESOURCE_EXHAUSTED: the connection is fine */
} lease_failure;

static lease_failure classify_lease_failure(const worker *w, int rc)
{
    if (rc == SS_ERR_STATUS(STATESAVER__V1__CODE__RESOURCE_EXHAUSTED) && !ss_client_broken(w->c))
        return LEASE_BUSY;
    if (transient(w, rc) || rc == SS_ERR_STATUS(STATESAVER__V1__CODE__NOT_FOUND) ||
        rc == SS_ERR_STATUS(STATESAVER__V1__CODE__RESOURCE_EXHAUSTED))
        return LEASE_RECONNECT;
    return LEASE_FATAL;
}

/* A Lease failed with rc: log it (once per streak of failures), finish
 * the Complete in flight, and back off. RESOURCE_EXHAUSTED and UNAVAILABLE
 * are transient: the worker waits and tries again, however long the
 * streak. Returns 0 to go on, or SS_ERR_INVALID when the refusal is fatal. */
static int lease_refused(worker *w, int rc, pending *p)
{
    lease_failure f = classify_lease_failure(w, rc);
    const char *what = f == LEASE_BUSY ? "; backing off" : f == LEASE_RECONNECT ? "; reconnecting" : "";
    if (f == LEASE_FATAL)
        SS_LOG(SS_LOG_ERROR, "serve: lease from %s: %s", w->o.server, ss_client_last_error(w->c));
    else if (w->lease_refusals == 0)
        SS_LOG(SS_LOG_WARN, "serve: lease from %s: %s%s (retrying with backoff up to %u ms; "
               "logged once until a lease succeeds)", w->o.server, ss_client_last_error(w->c),
               what, SS_SERVE_BACKOFF_MAX_MS);
    else
        SS_LOG(SS_LOG_DEBUG, "serve: lease from %s: %s%s (%" PRIu64 " in a row)", w->o.server,
               ss_client_last_error(w->c), what, w->lease_refusals + 1);
    w->lease_refusals++;
    ss_serve_metrics_error(w->metrics, SS_SERVE_ERR_LEASE);
    /* The reply of the Complete in flight may have arrived before the
     * failure (kept by the library); else it is retried. */
    pending_finish(w, p);
    if (f != LEASE_BUSY)
        disconnect(w);
    if (f == LEASE_FATAL)
        return SS_ERR_INVALID;
    backoff(w);
    return 0;
}

/* A Lease call succeeded: end a streak of failures. */
static void lease_works(worker *w)
{
    if (w->lease_refusals > 0)
        SS_LOG(SS_LOG_INFO, "serve: leasing from %s again after %" PRIu64 " failed lease%s",
               w->o.server, w->lease_refusals, w->lease_refusals == 1 ? "" : "s");
    w->lease_refusals = 0;
    ss_backoff_reset(&w->backoff);
}

/* The lease loop. Returns the exit status. */
static int loop(worker *w)
{
    pending p = {0};
    int status = SS_SERVE_EXIT_OK;
    while (!stop_requested && (w->o.max_batches == 0 || w->batches < w->o.max_batches)) {
        ss_serve_metrics_beat(w->metrics);
        if (!w->c) {
            /* Nothing can be in flight on a closed connection. */
            pending_finish(w, &p);
            if (w->c)
                continue;
            int rc = connect_declare(w);
            if (rc < 0)
                ss_serve_metrics_error(w->metrics, SS_SERVE_ERR_CONNECT);
            if (rc == SS_ERR_CONFLICT || rc == SS_ERR_INVALID) {
                status = SS_SERVE_EXIT_FAIL;
                break;
            }
            if (rc < 0) {
                backoff(w);
                continue;
            }
        }
        ss_lease *l = NULL;
        lease_clock k = {.lease = mono_us()};
        /* With a Complete in flight, only take work that is ready now: a
         * parked Lease would hold back that Complete's reply (and the
         * worker's counters) until new work arrives or the wait ends. */
        uint32_t wait_ms = p.l ? 0 : w->o.wait_ms;
        int rc = ss_client_lease(w->c, w->o.saver, w->o.batch, wait_ms, w->o.lease_ms,
                                 w->name, &l);
        k.leased = mono_us();
        if (rc < 0) {
            if (lease_refused(w, rc, &p) < 0) {
                status = SS_SERVE_EXIT_FAIL;
                break;
            }
            continue;
        }
        lease_works(w);
        if (ss_lease_items(l) == 0) {
            ss_lease_free(l);
            pending_finish(w, &p); /* idle: its reply is long in */
            continue;
        }
        results r = {0};
        rc = compute(w, l, &r);
        /* Batch n+1 is computed: now take n's reply before sending n+1's. */
        pending_finish(w, &p);
        w->batches++;
        if (rc < 0) {
            /* Out of memory: let the lease expire so another worker runs it. */
            SS_LOG(SS_LOG_ERROR, "serve: lease %" PRIu64 ": %s", ss_lease_id(l), ss_strerror(rc));
            results_free(&r);
            ss_lease_free(l);
            log_progress(w, false);
            continue;
        }
        p.l = l;
        p.r = r;
        p.k = k;
        pending_send(w, &p);
    }
    /* Stopping (signal, --max-batches or a fatal error): the batch in
     * flight is completed first. */
    pending_finish(w, &p);
    return status;
}

int ss_serve_main(int argc, char **argv)
{
    worker w = {.o = {.batch = SS_SERVE_BATCH_DEFAULT, .wait_ms = SS_SERVE_WAIT_MS_DEFAULT,
                      .timeout_ms = SS_SERVE_TIMEOUT_MS_DEFAULT,
                      .log_every = SS_SERVE_LOG_EVERY_DEFAULT}};
    char err[ERRSZ], host[64] = "";
    int exit_now, status = SS_SERVE_EXIT_USAGE;

    if (parse_args(&w.o, argc, argv, &exit_now) < 0 || exit_now >= 0)
        return exit_now;
    ss_backoff_init(&w.backoff, SS_SERVE_BACKOFF_MIN_MS, SS_SERVE_BACKOFF_MAX_MS, 0);
    if (w.o.token_file && read_token(&w) < 0)
        goto out;
    int rc = ss_model_load(w.o.model, &w.m, err, sizeof err);
    if (rc < 0) {
        fprintf(stderr, "serve: %s\n", err);
        goto out;
    }
    if (w.m->n_states > SS_MODEL_MAX_LAYERS * 2) {
        fprintf(stderr, "serve: model %s has too many states\n", w.o.model);
        goto out;
    }
    status = SS_SERVE_EXIT_FAIL;
    if ((rc = ss_unroll_new(&w.u, w.m)) < 0) {
        fprintf(stderr, "serve: %s\n", ss_strerror(rc));
        goto out;
    }
    if (w.o.threads > 0) {
        openblas_set_num_threads(w.o.threads);
    } else if (!getenv("OPENBLAS_NUM_THREADS") && !getenv("OMP_NUM_THREADS")) {
        openblas_set_num_threads(SS_UNROLL_DEFAULT_THREADS);
    }
    /* The unroll runs on its own threads (not OpenBLAS's): the same count. */
    if ((rc = ss_unroll_set_threads(w.u, w.o.threads > 0 ? w.o.threads
                                                           : openblas_get_num_threads())) < 0) {
        fprintf(stderr, "serve: %s\n", ss_strerror(rc));
        goto out;
    }
    gethostname(host, sizeof host - 1);
    snprintf(w.name, sizeof w.name, "statesaver-worker/%s %s:%ld", SS_VERSION,
             host[0] ? host : "?", (long)getpid());

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    SS_LOG(SS_LOG_INFO, "serve: model %s (%s, input_size %d, output_size %d, %zu states), "
           "saver %s, server %s, batch %u", w.o.model,
           w.m->cell == SS_CELL_LSTM ? "lstm" : w.m->cell == SS_CELL_GRU ? "gru" : "basic_rnn",
           w.m->input_size, w.m->output_size, w.m->n_states, w.o.saver, w.o.server, w.o.batch);
    if (w.o.metrics_listen) {
        uint64_t stall = 2ull * w.o.timeout_ms + w.o.wait_ms +
                         (w.o.lease_ms ? w.o.lease_ms : 60000u) + SS_SERVE_STALL_SLACK_MS;
        rc = ss_serve_metrics_start(&w.metrics, w.o.metrics_listen, w.o.metrics_port_file,
                                    stall);
        if (rc < 0) {
            status = rc == SS_ERR_INVALID ? SS_SERVE_EXIT_USAGE : SS_SERVE_EXIT_FAIL;
            goto out;
        }
    } else if (w.o.metrics_port_file) {
        fprintf(stderr, "serve: --metrics-port-file needs --metrics-listen\n");
        status = SS_SERVE_EXIT_USAGE;
        goto out;
    }
    w.log_t = mono_ms();
    w.t_start_us = mono_us();
    status = loop(&w);
    log_progress(&w, true);
    SS_LOG(SS_LOG_INFO, "serve: stopping (%s)",
           stop_requested ? "signal" : status == SS_SERVE_EXIT_OK ? "--max-batches" : "error");
    if (w.o.stats_json && write_stats(&w) < 0 && status == SS_SERVE_EXIT_OK)
        status = SS_SERVE_EXIT_FAIL;
out:
    times_free(&w.lt);
    disconnect(&w);
    ss_serve_metrics_stop(w.metrics);
    ss_unroll_free(w.u);
    ss_model_free(w.m);
    free(w.token);
    return status;
}
