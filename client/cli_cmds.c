/* cli_cmds -- the `statesaver` commands that make one or a few calls:
 * ping, declare, fetch, save, drop (ls and stats: cli_info.c).
 */
#include "cli.h"

#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "ss_parse.h"
#include "ss_keyfmt.h"
#include "ss_npy.h"
#include "ss_limits.h"
#include "ss_tensor.h"

/* Most --state / --initial options one command accepts. */
#define CLI_STATES_MAX SS_STATES_PER_SAVER_MAX
/* Values of a state printed by `fetch` before "...". */
#define CLI_FETCH_SHOW 4

void cli_print_key(FILE *fp, const void *data, size_t len)
{
    char small[256];
    size_t need = ss_keyfmt_size(len);
    char *buf = need <= sizeof small ? small : malloc(need);
    if (!buf) { /* out of memory: the truncated form still says which key */
        fputs(ss_keyfmt(small, sizeof small, data, len), fp);
        return;
    }
    fputs(ss_keyfmt(buf, need, data, len), fp);
    if (buf != small)
        free(buf);
}

int cli_help(const char *text)
{
    fputs(text, stdout);
    return CLI_EXIT_OK;
}

/* ---- ping --------------------------------------------------------------- */

static const char ping_usage[] =
    "usage: statesaver ping [--count N]\n"
    "Send N pings (default 1) and print each round-trip time.\n";

int cli_cmd_ping(const cli_ctx *ctx, int argc, char **argv)
{
    static const struct option opts[] = {
        {"count", required_argument, NULL, 'c'}, CLI_HELP_OPT, {NULL, 0, NULL, 0}};
    uint64_t count = 1;
    ss_cluster *c = NULL;
    int o, status;
    while ((o = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        if (o == 'h')
            return cli_help(ping_usage);
        if (o == 'c' && ss_parse_u64(optarg, 0, 1000000, &count) == 0 && count > 0)
            continue;
        return cli_usage("ping", "bad option '%s'", argv[optind - 1]);
    }
    if (optind < argc)
        return cli_usage("ping", "unexpected argument '%s'", argv[optind]);
    if ((status = cli_cluster(ctx, &c)) != CLI_EXIT_OK)
        return status;
    /* Every shard answers (one line per shard and round). */
    for (uint64_t i = 0; i < count && status == CLI_EXIT_OK; i++) {
        for (size_t sh = 0; sh < ss_cluster_shards(c); sh++) {
            struct timespec a, b;
            uint64_t server_ms = 0;
            ss_client *sc = NULL;
            clock_gettime(CLOCK_MONOTONIC, &a);
            int rc = ss_cluster_client(c, sh, &sc);
            if (rc < 0) {
                status = cli_cfail(c, "ping", rc);
                break;
            }
            rc = ss_client_ping(sc, &server_ms);
            clock_gettime(CLOCK_MONOTONIC, &b);
            if (rc < 0) {
                cli_error("shard %s (%s)", ss_cluster_shard_id(c, sh),
                          ss_cluster_shard_address(c, sh));
                status = cli_fail(sc, "ping", rc);
                break;
            }
            double ms = (double)(b.tv_sec - a.tv_sec) * 1e3 +
                        (double)(b.tv_nsec - a.tv_nsec) / 1e6;
            printf("PONG from %s: time=%.3f ms\n", ss_cluster_shard_address(c, sh), ms);
        }
    }
    ss_cluster_close(c);
    return status;
}

/* ---- declare ------------------------------------------------------------ */

static const char declare_usage[] =
    "usage: statesaver declare SAVER --state NAME:DTYPE:DIM[xDIM...] [--state ...]\n"
    "                          [--initial NAME=FILE.npy] [--ttl-ms N] [--keep-final]\n"
    "                          [--max-in-flight N]\n"
    "Declare a saver with its schema. DTYPE is float32, int32, int64 or float64;\n"
    "the dims are the per-sequence shape (e.g. h:float32:512, c:float32:2x256).\n"
    "  --initial NAME=F.npy  initial value of a state (default zeros)\n"
    "  --ttl-ms N            evict sequences idle for N ms (default 0 = never)\n"
    "  --keep-final          keep the record after a final save\n"
    "  --max-in-flight N     job queue: lease segments of at most N sequences at\n"
    "                        once (0 = no cap; on a cluster, per shard)\n"
    "Declaring the same schema again is a no-op; a different one is an error.\n";

/* One parsed --state. */
typedef struct cli_state {
    char name[SS_STATE_NAME_MAX + 1];  /* state name */
    int dtype;                         /* enum ss_dtype */
    int64_t shape[SS_TENSOR_MAX_RANK]; /* per-sequence shape */
    size_t rank;                       /* dims used */
    ss_npy *initial;                   /* --initial value (owned), NULL if none */
} cli_state;

/* Parse "NAME:DTYPE:DIMxDIM"; NAME may itself contain ':'. */
static int parse_state_spec(const char *arg, cli_state *s)
{
    const char *dims = strrchr(arg, ':');
    if (!dims || dims == arg)
        return SS_ERR_INVALID;
    const char *dt = dims - 1;
    while (dt > arg && *dt != ':')
        dt--;
    if (dt == arg)
        return SS_ERR_INVALID;
    size_t nlen = (size_t)(dt - arg);
    char dtype[16];
    size_t dlen = (size_t)(dims - dt - 1);
    if (nlen == 0 || nlen > SS_STATE_NAME_MAX || dlen == 0 || dlen >= sizeof dtype)
        return SS_ERR_INVALID;
    memcpy(s->name, arg, nlen);
    s->name[nlen] = '\0';
    memcpy(dtype, dt + 1, dlen);
    dtype[dlen] = '\0';
    s->dtype = ss_dtype_parse(dtype);
    if (s->dtype < 0)
        return SS_ERR_INVALID;
    s->rank = 0;
    const char *p = dims + 1;
    for (;;) {
        char dim[24];
        size_t dl = strcspn(p, "x");
        uint64_t v;
        if (dl == 0 || dl >= sizeof dim || s->rank == SS_TENSOR_MAX_RANK - 1)
            return SS_ERR_INVALID;
        memcpy(dim, p, dl);
        dim[dl] = '\0';
        if (ss_parse_u64(dim, 1, 1ull << 31, &v) < 0)
            return SS_ERR_INVALID;
        s->shape[s->rank++] = (int64_t)v;
        if (p[dl] == '\0')
            return 0;
        p += dl + 1; /* past the 'x' */
    }
}

/* Does an npy array have exactly shape, or [1] + shape? */
static int shape_fits(const ss_npy *a, const int64_t *shape, size_t rank)
{
    size_t ar = (size_t)a->ndim;
    if (ar == rank && memcmp(a->shape, shape, rank * sizeof *shape) == 0)
        return 1;
    return ar == rank + 1 && a->shape[0] == 1 &&
           memcmp(a->shape + 1, shape, rank * sizeof *shape) == 0;
}

int cli_cmd_declare(const cli_ctx *ctx, int argc, char **argv)
{
    static const struct option opts[] = {
        {"state", required_argument, NULL, 's'},
        {"initial", required_argument, NULL, 'i'},
        {"ttl-ms", required_argument, NULL, 't'},
        {"keep-final", no_argument, NULL, 'k'},
        {"max-in-flight", required_argument, NULL, 'm'},
        CLI_HELP_OPT,
        {NULL, 0, NULL, 0}};
    cli_state *st = calloc(CLI_STATES_MAX, sizeof *st);
    const char *initial[CLI_STATES_MAX];
    size_t n = 0, n_init = 0;
    uint64_t ttl = 0, max_in_flight = 0;
    bool keep_final = false, created = false;
    ss_state_def defs[CLI_STATES_MAX];
    ss_cluster *c = NULL;
    char err[1024];
    int o, status = CLI_EXIT_USAGE;

    if (!st) {
        cli_error("out of memory");
        return CLI_EXIT_FAIL;
    }
    while ((o = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (o) {
        case 'h':
            status = cli_help(declare_usage);
            goto out;
        case 's':
            if (n == CLI_STATES_MAX) {
                status = cli_usage("declare", "more than %u states", CLI_STATES_MAX);
                goto out;
            }
            if (parse_state_spec(optarg, &st[n]) < 0) {
                status = cli_usage("declare",
                                   "bad --state '%s' (want NAME:DTYPE:DIM[xDIM...])",
                                   optarg);
                goto out;
            }
            n++;
            break;
        case 'i':
            if (n_init == CLI_STATES_MAX || !strchr(optarg, '=')) {
                status = cli_usage("declare", "bad --initial '%s' (want NAME=FILE.npy)",
                                   optarg);
                goto out;
            }
            initial[n_init++] = optarg;
            break;
        case 't':
            if (ss_parse_u64(optarg, 0, UINT64_MAX, &ttl) < 0) {
                status = cli_usage("declare", "bad --ttl-ms '%s'", optarg);
                goto out;
            }
            break;
        case 'k':
            keep_final = true;
            break;
        case 'm':
            if (ss_parse_u64(optarg, 0, UINT32_MAX, &max_in_flight) < 0) {
                status = cli_usage("declare", "bad --max-in-flight '%s'", optarg);
                goto out;
            }
            break;
        default:
            status = cli_usage("declare", "bad option '%s'", argv[optind - 1]);
            goto out;
        }
    }
    if (argc - optind != 1) {
        status = cli_usage("declare", "want exactly one SAVER name");
        goto out;
    }
    if (n == 0) {
        status = cli_usage("declare", "at least one --state is required");
        goto out;
    }
    const char *saver = argv[optind];
    for (size_t i = 0; i < n_init; i++) {
        const char *eq = strchr(initial[i], '=');
        size_t j;
        for (j = 0; j < n; j++)
            if (strlen(st[j].name) == (size_t)(eq - initial[i]) &&
                strncmp(st[j].name, initial[i], (size_t)(eq - initial[i])) == 0)
                break;
        if (j == n) {
            status = cli_usage("declare", "--initial '%s' names no --state", initial[i]);
            goto out;
        }
        ss_npy_free(st[j].initial); /* the last --initial for a state wins */
        st[j].initial = NULL;
        if (cli_npy_read(eq + 1, &st[j].initial, err, sizeof err) < 0) {
            cli_error("%s", err);
            status = CLI_EXIT_FAIL;
            goto out;
        }
        if (cli_npy_dtype(st[j].initial) != st[j].dtype ||
            !shape_fits(st[j].initial, st[j].shape, st[j].rank)) {
            char want[128], got[128];
            ss_shape_format(st[j].shape, st[j].rank, want, sizeof want);
            ss_shape_format(st[j].initial->shape, (size_t)st[j].initial->ndim, got, sizeof got);
            cli_error("%s: state '%s' wants %s %s, file has %s %s", eq + 1, st[j].name,
                      ss_dtype_name(st[j].dtype), want,
                      ss_npy_dtype_name(st[j].initial->dtype), got);
            status = CLI_EXIT_FAIL;
            goto out;
        }
    }
    for (size_t i = 0; i < n; i++) {
        defs[i].name = st[i].name;
        defs[i].dtype = st[i].dtype;
        defs[i].shape = st[i].shape;
        defs[i].rank = st[i].rank;
        defs[i].initial = st[i].initial ? st[i].initial->data : NULL;
        defs[i].initial_bytes = st[i].initial ? st[i].initial->nbytes : 0;
    }
    if ((status = cli_cluster(ctx, &c)) != CLI_EXIT_OK)
        goto out;
    ss_declare_opts dopt = {.idle_ttl_ms = ttl, .keep_final = keep_final,
                            .max_in_flight = (uint32_t)max_in_flight};
    int rc = ss_cluster_declare_opts(c, saver, defs, n, &dopt, &created);
    if (rc < 0) {
        status = cli_cfail(c, "declare", rc);
        goto out;
    }
    printf("%s: %s\n", saver, created ? "created" : "exists with the same schema");
    status = CLI_EXIT_OK;
out:
    ss_cluster_close(c);
    for (size_t i = 0; i < CLI_STATES_MAX; i++)
        ss_npy_free(st[i].initial);
    free(st);
    return status;
}

/* ---- fetch -------------------------------------------------------------- */

static const char fetch_usage[] =
    "usage: statesaver fetch SAVER KEY... [--out DIR] [--min-segment S --wait-ms N]\n"
    "Print each key's next_segment and a summary of every state (shape, first\n"
    "values, L2 norm), or with --out write DIR/<key>.<state>.npy ('/' in names\n"
    "becomes '_'). --min-segment/--wait-ms wait until every key has reached S.\n";

static double element(const void *row, int dtype, size_t i)
{
    switch (dtype) {
    case SS_DTYPE_FLOAT32: return ((const float *)row)[i];
    case SS_DTYPE_FLOAT64: return ((const double *)row)[i];
    case SS_DTYPE_INT32: return ((const int32_t *)row)[i];
    case SS_DTYPE_INT64: return (double)((const int64_t *)row)[i];
    default: return 0;
    }
}

/* "dir/<key>.<state>.npy" with '/' replaced in key and state. */
static void out_path(char *buf, size_t size, const char *dir, const char *key,
                     const char *state)
{
    size_t off = (size_t)snprintf(buf, size, "%s/", dir);
    for (const char *parts[2] = {key, state}, **p = parts; p < parts + 2; p++) {
        for (const char *s = *p; *s && off + 1 < size; s++)
            buf[off++] = *s == '/' ? '_' : *s;
        if (off + 1 < size)
            buf[off++] = '.';
    }
    buf[off < size ? off : size - 1] = '\0';
    if (off + 4 < size)
        snprintf(buf + off, size - off, "npy");
}

int cli_cmd_fetch(const cli_ctx *ctx, int argc, char **argv)
{
    static const struct option opts[] = {
        {"out", required_argument, NULL, 'o'},
        {"min-segment", required_argument, NULL, 'm'},
        {"wait-ms", required_argument, NULL, 'w'},
        CLI_HELP_OPT,
        {NULL, 0, NULL, 0}};
    const char *out_dir = NULL;
    uint64_t min_seg = 0, wait_ms = 0;
    ss_fetch_result *r = NULL;
    ss_cluster *c = NULL;
    ss_key *keys = NULL;
    int o, status;

    while ((o = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (o) {
        case 'h': return cli_help(fetch_usage);
        case 'o': out_dir = optarg; break;
        case 'm':
            if (ss_parse_u64(optarg, 0, UINT64_MAX, &min_seg) < 0)
                return cli_usage("fetch", "bad --min-segment '%s'", optarg);
            break;
        case 'w':
            if (ss_parse_u64(optarg, 0, SS_WAIT_MS_MAX, &wait_ms) < 0)
                return cli_usage("fetch", "bad --wait-ms '%s' (0..%u)", optarg,
                                 SS_WAIT_MS_MAX);
            break;
        default: return cli_usage("fetch", "bad option '%s'", argv[optind - 1]);
        }
    }
    if (argc - optind < 2)
        return cli_usage("fetch", "want SAVER and at least one KEY");
    const char *saver = argv[optind];
    size_t n = (size_t)(argc - optind - 1);
    char **names = argv + optind + 1;
    if (out_dir) {
        struct stat sb;
        if (stat(out_dir, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
            cli_error("--out %s: not a directory", out_dir);
            return CLI_EXIT_FAIL;
        }
    }
    keys = calloc(n, sizeof *keys);
    if (!keys) {
        cli_error("out of memory");
        return CLI_EXIT_FAIL;
    }
    for (size_t k = 0; k < n; k++) {
        keys[k].data = names[k];
        keys[k].len = strlen(names[k]);
    }
    if ((status = cli_cluster(ctx, &c)) != CLI_EXIT_OK)
        goto out;
    int rc = ss_cluster_fetch(c, saver, keys, n, min_seg, (uint32_t)wait_ms, &r);
    if (rc < 0) {
        status = cli_cfail(c, "fetch", rc);
        goto out;
    }
    for (size_t k = 0; k < n; k++) {
        printf("%s  next_segment=%llu  updated_ms=%llu\n", names[k],
               (unsigned long long)ss_fetch_result_next_segment(r, k),
               (unsigned long long)ss_fetch_result_updated_ms(r, k));
        for (size_t i = 0; i < ss_fetch_result_states(r); i++) {
            size_t rank, nbytes;
            const int64_t *shape = ss_fetch_result_shape(r, i, &rank);
            const void *row = ss_fetch_result_state(r, i, k, &nbytes);
            int dtype = ss_fetch_result_dtype(r, i);
            const char *sname = ss_fetch_result_name(r, i);
            if (out_dir) {
                char path[4096], err[1024];
                out_path(path, sizeof path, out_dir, names[k], sname);
                if (cli_npy_write(path, dtype, shape, rank, row, nbytes, err,
                                  sizeof err) < 0) {
                    cli_error("%s", err);
                    status = CLI_EXIT_FAIL;
                    goto out;
                }
                printf("  %s -> %s\n", sname, path);
                continue;
            }
            char sh[128];
            size_t count = nbytes / ss_dtype_size(dtype);
            double norm = 0;
            for (size_t e = 0; e < count; e++) {
                double v = element(row, dtype, e);
                norm += v * v;
            }
            ss_shape_format(shape, rank, sh, sizeof sh);
            printf("  %s  %s%s  [", sname, ss_dtype_name(dtype), sh);
            for (size_t e = 0; e < count && e < CLI_FETCH_SHOW; e++)
                printf("%s%.6g", e ? ", " : "", element(row, dtype, e));
            if (count > CLI_FETCH_SHOW)
                printf(", ... (%zu values)", count);
            printf("]  norm=%.6g\n", sqrt(norm));
        }
    }
    status = CLI_EXIT_OK;
out:
    ss_fetch_result_free(r);
    ss_cluster_close(c);
    free(keys);
    return status;
}

/* ---- save --------------------------------------------------------------- */

static const char save_usage[] =
    "usage: statesaver save SAVER KEY --segment S --state NAME=FILE.npy... [--final]\n"
    "Save the state at the end of segment S (compare-and-set: the key's\n"
    "next_segment must be S). Every state of the saver's schema must be given,\n"
    "as a .npy of its per-sequence shape (or [1, ...]). --final ends the sequence.\n";

/* Find saver's schema by paging through the list of savers. */
static int find_saver(ss_cluster *c, const char *saver, ss_list_result **out,
                      size_t *row)
{
    ss_list_result *page = NULL;
    ss_key after = {NULL, 0};
    char last[SS_SAVER_NAME_MAX + 1] = "";
    for (;;) {
        int rc = ss_cluster_list(c, NULL, NULL, after.len ? &after : NULL, 0, &page);
        if (rc < 0)
            return cli_cfail(c, "list savers", rc);
        size_t n = ss_list_result_savers(page);
        for (size_t i = 0; i < n; i++) {
            ss_saver_info info;
            ss_list_result_saver(page, i, &info);
            if (strcmp(info.name, saver) == 0) {
                *out = page;
                *row = i;
                return CLI_EXIT_OK;
            }
            snprintf(last, sizeof last, "%s", info.name);
        }
        bool more = ss_list_result_more(page) && n > 0;
        ss_list_result_free(page);
        page = NULL;
        if (!more)
            break;
        after.data = last;
        after.len = strlen(last);
    }
    cli_error("saver '%s' is not declared", saver);
    return CLI_EXIT_FAIL;
}

int cli_cmd_save(const cli_ctx *ctx, int argc, char **argv)
{
    static const struct option opts[] = {
        {"segment", required_argument, NULL, 's'},
        {"state", required_argument, NULL, 'S'},
        {"final", no_argument, NULL, 'f'},
        CLI_HELP_OPT,
        {NULL, 0, NULL, 0}};
    const char *files[CLI_STATES_MAX];
    size_t n_files = 0;
    uint64_t segment = 0;
    bool have_segment = false, final = false, applied = false;
    ss_npy **arrays = NULL;        /* per schema state: the file read (owned) */
    ss_state_data data[CLI_STATES_MAX];
    ss_list_result *schema = NULL;
    ss_cluster *c = NULL;
    size_t row = 0;
    char err[1024];
    int o, status;

    while ((o = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (o) {
        case 'h': return cli_help(save_usage);
        case 's':
            if (ss_parse_u64(optarg, 0, UINT64_MAX - 1, &segment) < 0)
                return cli_usage("save", "bad --segment '%s'", optarg);
            have_segment = true;
            break;
        case 'S':
            if (n_files == CLI_STATES_MAX || !strchr(optarg, '=') || optarg[0] == '=')
                return cli_usage("save", "bad --state '%s' (want NAME=FILE.npy)", optarg);
            files[n_files++] = optarg;
            break;
        case 'f': final = true; break;
        default: return cli_usage("save", "bad option '%s'", argv[optind - 1]);
        }
    }
    if (argc - optind != 2)
        return cli_usage("save", "want SAVER and KEY");
    if (!have_segment)
        return cli_usage("save", "--segment is required");
    if (n_files == 0)
        return cli_usage("save", "at least one --state NAME=FILE.npy is required");
    const char *saver = argv[optind], *key = argv[optind + 1];
    arrays = calloc(CLI_STATES_MAX, sizeof *arrays);
    if (!arrays) {
        cli_error("out of memory");
        return CLI_EXIT_FAIL;
    }
    if ((status = cli_cluster(ctx, &c)) != CLI_EXIT_OK)
        goto out;
    if ((status = find_saver(c, saver, &schema, &row)) != CLI_EXIT_OK)
        goto out;
    ss_saver_info info;
    ss_list_result_saver(schema, row, &info);
    status = CLI_EXIT_FAIL;
    for (size_t f = 0; f < n_files; f++) {
        size_t nlen = (size_t)(strchr(files[f], '=') - files[f]);
        size_t j;
        for (j = 0; j < info.n_states; j++) {
            const char *sn = ss_list_result_saver_state(schema, row, j, NULL, NULL, NULL);
            if (strlen(sn) == nlen && strncmp(sn, files[f], nlen) == 0)
                break;
        }
        if (j == info.n_states) {
            cli_error("saver '%s' has no state '%.*s'", saver, (int)nlen, files[f]);
            goto out;
        }
        if (arrays[j]) {
            cli_error("state '%.*s' given twice", (int)nlen, files[f]);
            goto out;
        }
        if (cli_npy_read(files[f] + nlen + 1, &arrays[j], err, sizeof err) < 0) {
            cli_error("%s", err);
            goto out;
        }
    }
    for (size_t j = 0; j < info.n_states; j++) {
        int dtype;
        const int64_t *shape;
        size_t rank;
        const char *sn = ss_list_result_saver_state(schema, row, j, &dtype, &shape, &rank);
        if (!arrays[j]) {
            cli_error("missing --state %s=FILE.npy (every state of '%s' is saved together)",
                      sn, saver);
            goto out;
        }
        if (cli_npy_dtype(arrays[j]) != dtype || !shape_fits(arrays[j], shape, rank)) {
            char want[128], got[128];
            ss_shape_format(shape, rank, want, sizeof want);
            ss_shape_format(arrays[j]->shape, (size_t)arrays[j]->ndim, got, sizeof got);
            cli_error("state '%s' wants %s %s, file has %s %s", sn, ss_dtype_name(dtype),
                      want, ss_npy_dtype_name(arrays[j]->dtype), got);
            goto out;
        }
        data[j].dtype = dtype;
        data[j].shape = shape;
        data[j].rank = rank;
        data[j].data = arrays[j]->data;
    }
    ss_key k = {key, strlen(key)};
    uint64_t seg = segment;
    int rc = ss_cluster_save(c, saver, &k, 1, &seg, &final, data, info.n_states, &applied);
    if (rc < 0) {
        status = cli_cfail(c, "save", rc);
        goto out;
    }
    if (applied)
        printf("%s: segment %llu was already applied\n", key, (unsigned long long)segment);
    else
        printf("%s: saved segment %llu%s\n", key, (unsigned long long)segment,
               final ? " (final)" : "");
    status = CLI_EXIT_OK;
out:
    ss_list_result_free(schema);
    ss_cluster_close(c);
    for (size_t j = 0; arrays && j < CLI_STATES_MAX; j++)
        ss_npy_free(arrays[j]);
    free(arrays);
    return status;
}

/* ---- drop --------------------------------------------------------------- */

static const char drop_usage[] =
    "usage: statesaver drop SAVER (KEY... | --all)\n"
    "Drop the given sequences, or with --all the saver with all its data.\n";

int cli_cmd_drop(const cli_ctx *ctx, int argc, char **argv)
{
    static const struct option opts[] = {
        {"all", no_argument, NULL, 'a'}, CLI_HELP_OPT, {NULL, 0, NULL, 0}};
    bool all = false;
    ss_cluster *c = NULL;
    ss_key *keys = NULL;
    uint64_t dropped = 0;
    int o, status;

    while ((o = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (o) {
        case 'h': return cli_help(drop_usage);
        case 'a': all = true; break;
        default: return cli_usage("drop", "bad option '%s'", argv[optind - 1]);
        }
    }
    if (argc - optind < 1)
        return cli_usage("drop", "want SAVER");
    size_t n = (size_t)(argc - optind - 1);
    if (all == (n > 0))
        return cli_usage("drop", "give either KEY... or --all");
    const char *saver = argv[optind];
    if (n && (status = cli_keys_argv(argv + optind + 1, n, &keys)) != CLI_EXIT_OK)
        return status;
    if ((status = cli_cluster(ctx, &c)) == CLI_EXIT_OK) {
        int rc = ss_cluster_drop(c, saver, keys, n, all, &dropped);
        if (rc < 0)
            status = cli_cfail(c, "drop", rc);
        else if (all)
            printf("%s: dropped the saver (%llu sequences)\n", saver,
                   (unsigned long long)dropped);
        else
            printf("%s: dropped %llu sequences\n", saver, (unsigned long long)dropped);
    }
    ss_cluster_close(c);
    free(keys);
    return status;
}
