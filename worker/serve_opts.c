/* serve_opts -- the command line of `statesaver-worker serve`: usage
 * text and flag parsing (numbers through common/ss_parse).
 */
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "serve.h"
#include "serve_int.h"
#include "ss_error.h"
#include "ss_log.h"
#include "unroll.h"
#include "unroll_cmd.h"
#include "ss_parse.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: statesaver-worker serve --model M.safetensors --saver NAME\n"
            "         [--server HOST:PORT] [--batch N] [--lease-ms MS] [--wait-ms MS]\n"
            "         [--ttl-ms MS] [--threads N] [--precision P] [--token-file F]\n"
            "         [--min-batch N --max-delay-ms MS]\n"
            "         [--timeout-ms MS]\n"
            "         [--max-batches N] [--log-every N] [--log-level LEVEL]\n"
            "         [--stats-json FILE] [--metrics-listen HOST:PORT]\n"
            "         [--metrics-port-file FILE]\n"
            "\n"
            "Serve the job queue of saver NAME: declare its schema from the model\n"
            "(idempotent), then lease ready segments, unroll them and complete them.\n"
            "  --server HOST:PORT   server (default $STATESAVER_SERVER, else %s); when\n"
            "                       its topology has several shards, every shard is served\n"
            "  --cluster A,B,...    serve every shard of the cluster of these addresses (a\n"
            "                       worker process per shard, completing to the shard the\n"
            "                       lease came from); --no-cluster: only --server\n"
            "  --model PATH         safetensors model (see docs/worker.md)\n"
            "  --saver NAME         saver whose queue to serve\n"
            "  --batch N            segments per lease, 1..%u (default %u)\n"
            "  --lease-ms MS        lease duration (default: the server's)\n"
            "  --wait-ms MS         how long a lease waits for work on the server\n"
            "                       (default %u)\n"
            "  --min-batch N        form batches: wait up to --max-delay-ms for at least N\n"
            "  --max-delay-ms MS    ready segments before leasing what is ready (Triton's\n"
            "                       sequence batcher; default: lease what is ready)\n"
            "  --ttl-ms MS          idle_ttl when declaring the saver (default 0: never)\n"
            "  --threads N          unroll threads, splitting the batch rows or the\n"
            "                       units (default: OPENBLAS_NUM_THREADS or\n"
            "                       OMP_NUM_THREADS if set, else %d)\n"
            "  --precision P        fp32 (default) or bf16: bfloat16 weights and\n"
            "                       products, fp32 accumulation, states and outputs;\n"
            "                       needs AVX512_BF16 (exit 2 without); self-checked\n"
            "                       against fp32 at load (see docs/worker.md)\n"
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
            "  --metrics-port-fd FD write it to this inherited descriptor instead (how a\n"
            "                       cluster worker's per-shard processes report theirs)\n"
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

/* Parse an unsigned decimal in [lo, hi] (strict: common/ss_parse). */
static int parse_u64(const char *flag, const char *s, uint64_t lo, uint64_t hi,
                     uint64_t *out)
{
    uint64_t v;
    if (ss_parse_u64(s, lo, hi, &v) < 0) {
        fprintf(stderr, "serve: %s must be an integer in [%" PRIu64 ", %" PRIu64 "], got '%s'\n",
                flag, lo, hi, s);
        return SS_ERR_INVALID;
    }
    *out = v;
    return 0;
}

/* Returns 0 to go on, or sets *exit_now to the status to exit with. */
int ss_serve_parse_args(serve_opts *o, int argc, char **argv, int *exit_now)
{
    enum { OPT_LEASE = 1000, OPT_WAIT, OPT_TTL, OPT_THREADS, OPT_TOKEN, OPT_TIMEOUT,
           OPT_MAXB, OPT_LOGEVERY, OPT_LOG, OPT_STATS, OPT_MLISTEN, OPT_MPORT, OPT_HELP,
           OPT_VERSION, OPT_PRECISION, OPT_CLUSTER, OPT_NOCLUSTER, OPT_MPORTFD, OPT_MINB,
           OPT_MAXDELAY };
    static const struct option longopts[] = {
        {"server", required_argument, NULL, 's'},
        {"model", required_argument, NULL, 'm'},
        {"saver", required_argument, NULL, 'n'},
        {"batch", required_argument, NULL, 'b'},
        {"lease-ms", required_argument, NULL, OPT_LEASE},
        {"wait-ms", required_argument, NULL, OPT_WAIT},
        {"min-batch", required_argument, NULL, OPT_MINB},
        {"max-delay-ms", required_argument, NULL, OPT_MAXDELAY},
        {"ttl-ms", required_argument, NULL, OPT_TTL},
        {"threads", required_argument, NULL, OPT_THREADS},
        {"precision", required_argument, NULL, OPT_PRECISION},
        {"token-file", required_argument, NULL, OPT_TOKEN},
        {"timeout-ms", required_argument, NULL, OPT_TIMEOUT},
        {"max-batches", required_argument, NULL, OPT_MAXB},
        {"log-every", required_argument, NULL, OPT_LOGEVERY},
        {"log-level", required_argument, NULL, OPT_LOG},
        {"stats-json", required_argument, NULL, OPT_STATS},
        {"metrics-listen", required_argument, NULL, OPT_MLISTEN},
        {"metrics-port-file", required_argument, NULL, OPT_MPORT},
        {"metrics-port-fd", required_argument, NULL, OPT_MPORTFD},
        {"cluster", required_argument, NULL, OPT_CLUSTER},
        {"no-cluster", no_argument, NULL, OPT_NOCLUSTER},
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
        case OPT_MINB:
            rc = parse_u64("--min-batch", optarg, 1, SS_SERVE_BATCH_MAX, &v);
            o->min_batch = (uint32_t)v;
            break;
        case OPT_MAXDELAY:
            rc = parse_u64("--max-delay-ms", optarg, 0, 600000u, &v);
            o->max_delay_ms = (uint32_t)v;
            break;
        case OPT_THREADS:
            rc = parse_u64("--threads", optarg, 1, SS_UNROLL_MAX_THREADS, &v);
            o->threads = (int)v;
            break;
        case OPT_PRECISION:
            if (ss_precision_parse(optarg, &o->precision) != 0) {
                fprintf(stderr, "serve: --precision must be fp32 or bf16, got '%s'\n", optarg);
                rc = SS_ERR_INVALID;
            }
            break;
        case OPT_TOKEN: o->token_file = optarg; break;
        case OPT_STATS: o->stats_json = optarg; break;
        case OPT_MLISTEN: o->metrics_listen = optarg; break;
        case OPT_MPORT: o->metrics_port_file = optarg; break;
        case OPT_MPORTFD:
            rc = parse_u64("--metrics-port-fd", optarg, 3, INT_MAX, &v);
            o->metrics_port_fd = (int)v;
            break;
        case OPT_CLUSTER: o->cluster = optarg; break;
        case OPT_NOCLUSTER: o->no_cluster = true; break;
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
    if (o->min_batch > o->batch) {
        fprintf(stderr, "serve: --min-batch %u exceeds --batch %u\n", o->min_batch, o->batch);
        goto usage_error;
    }
    if ((o->min_batch > 1) != (o->max_delay_ms > 0)) {
        fprintf(stderr, "serve: --min-batch (> 1) and --max-delay-ms (> 0) go together\n");
        goto usage_error;
    }
    const char *why = ss_precision_unsupported(o->precision);
    if (why) {
        fprintf(stderr, "serve: %s\n", why);
        *exit_now = SS_SERVE_EXIT_USAGE;
        return SS_ERR_INVALID;
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
