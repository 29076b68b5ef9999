/* cli -- `statesaver`: command-line client for the statesaver server.
 *
 * Global options come before the command (like git); each command parses
 * its own options. See `statesaver --help` and docs/client.md.
 */
#include "cli.h"

#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ss_parse.h"
#include "ss_tensor.h"
#include "ss_token.h"

static const char usage_text[] =
    "usage: statesaver [--server HOST:PORT | --cluster ADDR,ADDR,...] [--token-file F]\n"
    "                  [--timeout-ms N] [--max-redirects N] COMMAND [ARGS...]\n"
    "\n"
    "Commands:\n"
    "  ping                         round trip to the server\n"
    "  declare SAVER --state NAME:DTYPE:DIM[xDIM...]... [--initial NAME=F.npy]\n"
    "          [--ttl-ms N] [--keep-final]   declare a saver and its schema\n"
    "  fetch SAVER KEY... [--out DIR] [--min-segment S --wait-ms N]\n"
    "                               show (or write .npy) the states of keys\n"
    "  save SAVER KEY --segment S --state NAME=F.npy... [--final]\n"
    "                               save the state at the end of segment S\n"
    "  ls [SAVER] [--prefix P] [--limit N]   list savers or sequences\n"
    "  drop SAVER (KEY... | --all)  drop sequences or the whole saver\n"
    "  cancel SAVER KEY... [--json] cancel sequences: their queued and leased\n"
    "                               job segments, outputs and state\n"
    "  stats [SAVER] [--json]       server counters\n"
    "  bench [--op fetch|save] ...  load generator (see `statesaver bench --help`)\n"
    "  submit SAVER --inputs DIR --num-unroll T --outputs DIR\n"
    "                               run sequences through the job queue\n"
    "  cluster (init|status|move-slots) ...   topology and resharding\n"
    "\n"
    "Options:\n"
    "  --server HOST:PORT   server address (default $STATESAVER_SERVER, else "
    CLI_DEFAULT_SERVER ")\n"
    "  --cluster A,B,...    addresses of any shards of a cluster: every command routes\n"
    "                       each key to its shard (default: the cluster --server is in)\n"
    "  --max-redirects N    redirects one call follows before it fails (default 8)\n"
    "  --unavailable-retry-ms N  how long a call retries a slot frozen by a move\n"
    "                       (default 30000)\n"
    "  --token-file F       file holding the server's auth token\n"
    "  --timeout-ms N       per-call timeout in ms (default 30000)\n"
    "  -h, --help           this help; `statesaver COMMAND --help` for a command\n"
    "  -V, --version        print the version\n"
    "\n"
    "Exit status: 0 success, 1 failure, 2 usage error.\n";

void cli_error(const char *fmt, ...)
{
    va_list ap;
    fputs("statesaver: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

int cli_usage(const char *cmd, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "statesaver%s%s: ", cmd ? " " : "", cmd ? cmd : "");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\nTry 'statesaver %s%s--help'.\n", cmd ? cmd : "", cmd ? " " : "");
    return CLI_EXIT_USAGE;
}

int cli_fail(ss_client *c, const char *what, int rc)
{
    const char *m = ss_client_last_error(c);
    if (m[0])
        cli_error("%s: %s", what, m);
    else
        cli_error("%s: %s", what, ss_strerror(rc));
    return CLI_EXIT_FAIL;
}

int cli_keys_argv(char **argv, size_t n, ss_key **out)
{
    ss_key *keys = calloc(n ? n : 1, sizeof *keys);
    *out = NULL;
    if (!keys) {
        cli_error("out of memory");
        return CLI_EXIT_FAIL;
    }
    for (size_t k = 0; k < n; k++) {
        keys[k].data = argv[k];
        keys[k].len = strlen(argv[k]);
    }
    *out = keys;
    return CLI_EXIT_OK;
}

/* .npy element types and the wire's, side by side. */
static const struct {
    ss_npy_dtype npy; /* common/ss_npy */
    int wire;         /* enum ss_dtype */
} npy_dtypes[] = {
    {SS_NPY_F32, SS_DTYPE_FLOAT32},
    {SS_NPY_F64, SS_DTYPE_FLOAT64},
    {SS_NPY_I32, SS_DTYPE_INT32},
    {SS_NPY_I64, SS_DTYPE_INT64},
};

int cli_npy_dtype(const ss_npy *a)
{
    for (size_t i = 0; a && i < sizeof npy_dtypes / sizeof npy_dtypes[0]; i++)
        if (npy_dtypes[i].npy == a->dtype)
            return npy_dtypes[i].wire;
    return 0;
}

int cli_npy_read(const char *path, ss_npy **out, char *err, size_t errsz)
{
    *out = NULL;
    return ss_npy_read_max(path, CLI_NPY_MAX_BYTES, out, err, errsz);
}

int cli_npy_write(const char *path, int dtype, const int64_t *shape, size_t rank,
                  const void *data, size_t nbytes, char *err, size_t errsz)
{
    size_t i = 0;
    while (i < sizeof npy_dtypes / sizeof npy_dtypes[0] && npy_dtypes[i].wire != dtype)
        i++;
    uint64_t count = 0;
    size_t es = ss_dtype_size(dtype);
    if (i == sizeof npy_dtypes / sizeof npy_dtypes[0] || rank > SS_NPY_MAX_DIMS ||
        ss_shape_count(shape, rank, SIZE_MAX / (es ? es : 1), &count) < 0 ||
        count * es != nbytes) {
        snprintf(err, errsz, "%s: bad dtype or shape for %zu bytes", path, nbytes);
        return SS_ERR_INVALID;
    }
    return ss_npy_write(path, npy_dtypes[i].npy, (int)rank, shape, data, err, errsz);
}

int cli_cfail(ss_cluster *c, const char *what, int rc)
{
    const char *m = ss_cluster_last_error(c);
    if (m[0])
        cli_error("%s: %s", what, m);
    else
        cli_error("%s: %s", what, ss_strerror(rc));
    return CLI_EXIT_FAIL;
}

void cli_cluster_options(const cli_ctx *ctx, ss_cluster_options *o)
{
    ss_cluster_options_init(o);
    o->conn.timeout_ms = ctx->timeout_ms;
    o->conn.connect_timeout_ms = ctx->timeout_ms;
    o->conn.token = ctx->token;
    o->conn.token_len = ctx->token_len;
    o->max_redirects = ctx->max_redirects;
    o->unavailable_retry_ms = ctx->unavailable_ms;
}

int cli_cluster(const cli_ctx *ctx, ss_cluster **out)
{
    ss_cluster_options o;
    char err[1024];
    const char *seeds[SS_CLUSTER_SEEDS_MAX];
    char *list = NULL;
    size_t n = 0;
    int rc;

    *out = NULL;
    cli_cluster_options(ctx, &o);
    if (ctx->cluster) {
        list = strdup(ctx->cluster);
        if (!list) {
            cli_error("out of memory");
            return CLI_EXIT_FAIL;
        }
        for (char *save = NULL, *t = strtok_r(list, ",", &save); t;
             t = strtok_r(NULL, ",", &save)) {
            if (n == SS_CLUSTER_SEEDS_MAX) {
                free(list);
                return cli_usage(NULL, "--cluster: more than %u addresses",
                                 SS_CLUSTER_SEEDS_MAX);
            }
            seeds[n++] = t;
        }
        if (n == 0) {
            free(list);
            return cli_usage(NULL, "--cluster wants ADDR,ADDR,...");
        }
    } else {
        seeds[n++] = ctx->server;
    }
    o.seeds = seeds;
    o.n_seeds = n;
    rc = ss_cluster_open(out, &o, err, sizeof err);
    free(list);
    if (rc < 0) {
        cli_error("%s", err);
        return CLI_EXIT_FAIL;
    }
    return CLI_EXIT_OK;
}

int cli_connect(const cli_ctx *ctx, ss_client **out)
{
    ss_client_options o;
    char err[1024];
    ss_client_options_init(&o);
    o.server = ctx->server;
    o.timeout_ms = ctx->timeout_ms;
    o.connect_timeout_ms = ctx->timeout_ms;
    o.token = ctx->token;
    o.token_len = ctx->token_len;
    o.client_name = "statesaver-cli/" SS_VERSION;
    int rc = ss_client_open(out, &o, err, sizeof err);
    if (rc < 0) {
        cli_error("%s", err);
        return CLI_EXIT_FAIL;
    }
    return CLI_EXIT_OK;
}

/* Read --token-file (common/ss_token: one rule for every program). */
static int read_token(const char *path, cli_ctx *ctx)
{
    char err[1024];
    if (ss_token_read(path, &ctx->token, &ctx->token_len, err, sizeof err) < 0) {
        cli_error("%s", err);
        return CLI_EXIT_FAIL;
    }
    return CLI_EXIT_OK;
}

static const struct {
    const char *name;                                /* command word */
    int (*fn)(const cli_ctx *ctx, int argc, char **argv); /* handler */
} commands[] = {
    {"ping", cli_cmd_ping},   {"declare", cli_cmd_declare},
    {"fetch", cli_cmd_fetch}, {"save", cli_cmd_save},
    {"ls", cli_cmd_ls},       {"drop", cli_cmd_drop},
    {"stats", cli_cmd_stats}, {"bench", cli_cmd_bench},
    {"submit", cli_cmd_submit}, {"cluster", cli_cmd_cluster},
    {"cancel", cli_cmd_cancel},
};

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"server", required_argument, NULL, 's'},
        {"token-file", required_argument, NULL, 't'},
        {"cluster", required_argument, NULL, 'C'},
        {"max-redirects", required_argument, NULL, 'R'},
        {"unavailable-retry-ms", required_argument, NULL, 'U'},
        {"timeout-ms", required_argument, NULL, 'T'},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0},
    };
    cli_ctx ctx = {.server = NULL, .timeout_ms = SS_CLIENT_TIMEOUT_MS_DEFAULT};
    const char *token_file = NULL;
    uint64_t v;
    int c, status;

    opterr = 0;
    /* '+': stop at the command word; its options belong to it. */
    while ((c = getopt_long(argc, argv, "+hV", opts, NULL)) != -1) {
        switch (c) {
        case 's': ctx.server = optarg; break;
        case 't': token_file = optarg; break;
        case 'C': ctx.cluster = optarg; break;
        case 'R':
            if (ss_parse_u64(optarg, 0, SS_CLUSTER_REDIRECTS_MAX, &v) < 0 || v == 0)
                return cli_usage(NULL, "--max-redirects wants 1..%u", SS_CLUSTER_REDIRECTS_MAX);
            ctx.max_redirects = (uint32_t)v;
            break;
        case 'U':
            if (ss_parse_u64(optarg, 0, 86400000ull, &v) < 0 || v == 0)
                return cli_usage(NULL, "--unavailable-retry-ms wants a positive number of ms");
            ctx.unavailable_ms = (uint32_t)v;
            break;
        case 'T':
            if (ss_parse_u64(optarg, 0, 86400000ull, &v) < 0 || v == 0)
                return cli_usage(NULL, "--timeout-ms wants a positive number of ms");
            ctx.timeout_ms = (int)v;
            break;
        case 'h': fputs(usage_text, stdout); return CLI_EXIT_OK;
        case 'V': printf("statesaver %s\n", ss_client_version()); return CLI_EXIT_OK;
        default:
            return cli_usage(NULL, "unknown or incomplete option '%s'",
                             argv[optind - 1]);
        }
    }
    if (optind >= argc)
        return cli_usage(NULL, "no command given");
    if (!ctx.server)
        ctx.server = getenv("STATESAVER_SERVER");
    if (!ctx.server || !ctx.server[0])
        ctx.server = CLI_DEFAULT_SERVER;
    const char *cmd = argv[optind];
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++) {
        if (strcmp(cmd, commands[i].name) != 0)
            continue;
        if (token_file && (status = read_token(token_file, &ctx)) != CLI_EXIT_OK)
            return status;
        int sub_argc = argc - optind;
        char **sub_argv = argv + optind;
        optind = 0; /* re-initialise getopt for the command's own options */
        status = commands[i].fn(&ctx, sub_argc, sub_argv);
        ss_token_free(ctx.token, ctx.token_len);
        return status;
    }
    return cli_usage(NULL, "unknown command '%s'", cmd);
}
