/* cli_info -- the `statesaver` commands that read what the server holds:
 * ls (savers, or one saver's sequences; merged over a cluster's shards or
 * per shard) and stats (counters, summed or per shard).
 */
#include "cli.h"

#include <cjson/cJSON.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ss_parse.h"
#include "ss_limits.h"
#include "ss_tensor.h"

/* Page size when `ls` pages through a listing. */
#define CLI_LS_PAGE SS_LIST_LIMIT_DEFAULT

/* ---- ls ----------------------------------------------------------------- */

static const char ls_usage[] =
    "usage: statesaver ls [SAVER] [--prefix P] [--limit N] [--per-shard]\n"
    "Without SAVER, list savers with their schema and sequence count; with\n"
    "SAVER, list its sequences (key, next_segment, last update), pages of\n"
    "up to 1000 fetched as needed. --limit N stops after N rows (per shard\n"
    "with --per-shard). On a cluster the shards' rows are merged in key\n"
    "order (counts summed); --per-shard lists each shard on its own.\n";

static void print_saver(const ss_list_result *r, size_t i)
{
    ss_saver_info info;
    ss_list_result_saver(r, i, &info);
    printf("%s  sequences=%llu  ttl_ms=%llu%s", info.name,
           (unsigned long long)info.sequences, (unsigned long long)info.idle_ttl_ms,
           info.keep_final ? "  keep_final" : "");
    if (info.max_in_flight)
        printf("  max_in_flight=%u", info.max_in_flight);
    fputs("  states=", stdout);
    for (size_t j = 0; j < info.n_states; j++) {
        int dtype;
        const int64_t *shape;
        size_t rank;
        const char *sn = ss_list_result_saver_state(r, i, j, &dtype, &shape, &rank);
        printf("%s%s:%s:", j ? "," : "", sn, ss_dtype_name(dtype));
        for (size_t d = 0; d < rank; d++)
            printf("%s%lld", d ? "x" : "", (long long)shape[d]);
    }
    printf("\n");
}

/* Page through a listing of the whole cluster (one == NULL) or of one
 * shard, printing up to *shown < limit rows. */
static int ls_run(ss_cluster *c, ss_client *one, const char *saver, const char *prefix,
                  uint64_t limit, unsigned long long *shown, bool *more_out)
{
    ss_list_result *page = NULL;
    uint8_t *last = NULL;
    ss_key pfx = {prefix, prefix ? strlen(prefix) : 0};
    ss_key after = {NULL, 0};
    bool more = true;
    int status = CLI_EXIT_OK;
    while (more && *shown < limit) {
        uint32_t page_size = limit - *shown < CLI_LS_PAGE ? (uint32_t)(limit - *shown)
                                                          : CLI_LS_PAGE;
        int rc = one ? ss_client_list(one, saver, prefix ? &pfx : NULL,
                                      after.len ? &after : NULL, page_size, &page)
                     : ss_cluster_list(c, saver, prefix ? &pfx : NULL,
                                       after.len ? &after : NULL, page_size, &page);
        if (rc < 0) {
            status = one ? cli_fail(one, "ls", rc) : cli_cfail(c, "ls", rc);
            break;
        }
        size_t n = saver ? ss_list_result_sequences(page) : ss_list_result_savers(page);
        const void *lk = NULL;
        size_t lk_len = 0;
        for (size_t i = 0; i < n && *shown < limit; i++, (*shown)++) {
            if (!saver) {
                print_saver(page, i);
                ss_saver_info info;
                ss_list_result_saver(page, i, &info);
                lk = info.name;
                lk_len = strlen(info.name);
                continue;
            }
            size_t len;
            const void *key = ss_list_result_key(page, i, &len);
            cli_print_key(stdout, key, len);
            printf("  next_segment=%llu  updated_ms=%llu\n",
                   (unsigned long long)ss_list_result_next_segment(page, i),
                   (unsigned long long)ss_list_result_updated_ms(page, i));
            lk = key;
            lk_len = len;
        }
        more = ss_list_result_more(page) && n > 0;
        if (more && *shown < limit) {
            uint8_t *nl = realloc(last, lk_len ? lk_len : 1);
            if (!nl) {
                cli_error("out of memory");
                status = CLI_EXIT_FAIL;
                break;
            }
            last = nl;
            memcpy(last, lk, lk_len);
            after.data = last;
            after.len = lk_len;
        }
        ss_list_result_free(page);
        page = NULL;
    }
    ss_list_result_free(page);
    free(last);
    *more_out = more;
    return status;
}

int cli_cmd_ls(const cli_ctx *ctx, int argc, char **argv)
{
    static const struct option opts[] = {
        {"prefix", required_argument, NULL, 'p'},
        {"limit", required_argument, NULL, 'l'},
        {"per-shard", no_argument, NULL, 'P'},
        CLI_HELP_OPT,
        {NULL, 0, NULL, 0}};
    const char *prefix = NULL;
    uint64_t limit = UINT64_MAX;
    bool per_shard = false, more = false;
    ss_cluster *c = NULL;
    int o, status;

    while ((o = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (o) {
        case 'h': return cli_help(ls_usage);
        case 'p': prefix = optarg; break;
        case 'P': per_shard = true; break;
        case 'l':
            if (ss_parse_u64(optarg, 0, UINT64_MAX, &limit) < 0 || limit == 0)
                return cli_usage("ls", "bad --limit '%s'", optarg);
            break;
        default: return cli_usage("ls", "bad option '%s'", argv[optind - 1]);
        }
    }
    if (argc - optind > 1)
        return cli_usage("ls", "want at most one SAVER");
    const char *saver = optind < argc ? argv[optind] : NULL;
    if (!saver && prefix)
        return cli_usage("ls", "--prefix needs a SAVER");
    if ((status = cli_cluster(ctx, &c)) != CLI_EXIT_OK)
        return status;
    unsigned long long shown = 0;
    if (!per_shard) {
        status = ls_run(c, NULL, saver, prefix, limit, &shown, &more);
    } else {
        for (size_t sh = 0; sh < ss_cluster_shards(c) && status == CLI_EXIT_OK; sh++) {
            ss_client *sc = NULL;
            unsigned long long mine = 0;
            if (ss_cluster_client(c, sh, &sc) < 0) {
                status = cli_cfail(c, "ls", SS_ERR_CONNECT);
                break;
            }
            printf("# shard %s (%s)\n", ss_cluster_shard_id(c, sh),
                   ss_cluster_shard_address(c, sh));
            status = ls_run(c, sc, saver, prefix, limit, &mine, &more);
            shown += mine;
            if (more)
                break;
        }
    }
    if (status == CLI_EXIT_OK && more)
        fprintf(stderr, "statesaver: more rows follow (raise --limit)\n");
    ss_cluster_close(c);
    return status;
}

/* ---- stats -------------------------------------------------------------- */

static const char stats_usage[] =
    "usage: statesaver stats [SAVER] [--json] [--per-shard]\n"
    "Print the server's counters (of one saver where it applies). On a\n"
    "cluster, the sums over every shard (uptime and log positions: the\n"
    "largest); --per-shard adds each shard's own figures.\n";

/* Add the counters of s to obj (JSON) or print them (name value rows,
 * each prefixed by prefix). */
static int stats_emit(const ss_server_stats *s, cJSON *obj, const char *prefix)
{
    const struct {
        const char *name; /* counter name (JSON key) */
        uint64_t value;   /* its value */
    } rows[] = {
        {"uptime_ms", s->uptime_ms}, {"savers", s->savers},
        {"sequences", s->sequences}, {"connections", s->connections},
        {"requests", s->requests}, {"commits", s->commits},
        {"committed_ops", s->committed_ops}, {"evicted", s->evicted},
        {"map_size", s->map_size}, {"map_used", s->map_used},
        {"rejected", s->rejected}, {"queued", s->queued},
        {"leased", s->leased}, {"completed", s->completed},
        {"failed", s->failed}, {"expired_leases", s->expired_leases},
        {"saves_applied", s->saves_applied}, {"wal_records", s->wal_records},
        {"wal_bytes", s->wal_bytes}, {"checkpoints", s->checkpoints},
        {"applied_lsn", s->applied_lsn}, {"checkpoint_lsn", s->checkpoint_lsn},
        {"wal_failed", s->wal_failed},
    };
    size_t nrows = sizeof rows / sizeof rows[0];
    if (!obj) {
        for (size_t i = 0; i < nrows; i++)
            printf("%s%-16s %llu\n", prefix, rows[i].name,
                   (unsigned long long)rows[i].value);
        if (s->wal_failure[0])
            printf("%s%-16s %s\n", prefix, "wal_failure", s->wal_failure);
        return 0;
    }
    for (size_t i = 0; i < nrows; i++)
        if (!cJSON_AddNumberToObject(obj, rows[i].name, (double)rows[i].value))
            return SS_ERR_NOMEM;
    if (s->wal_failure[0] && !cJSON_AddStringToObject(obj, "wal_failure", s->wal_failure))
        return SS_ERR_NOMEM;
    return 0;
}

int cli_cmd_stats(const cli_ctx *ctx, int argc, char **argv)
{
    static const struct option opts[] = {
        {"json", no_argument, NULL, 'j'},
        {"per-shard", no_argument, NULL, 'P'},
        CLI_HELP_OPT, {NULL, 0, NULL, 0}};
    bool json = false, per_shard = false;
    ss_cluster *c = NULL;
    ss_server_stats s;
    cJSON *obj = NULL, *arr = NULL;
    int o, status;

    while ((o = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (o) {
        case 'h': return cli_help(stats_usage);
        case 'j': json = true; break;
        case 'P': per_shard = true; break;
        default: return cli_usage("stats", "bad option '%s'", argv[optind - 1]);
        }
    }
    if (argc - optind > 1)
        return cli_usage("stats", "want at most one SAVER");
    const char *saver = optind < argc ? argv[optind] : NULL;
    if ((status = cli_cluster(ctx, &c)) != CLI_EXIT_OK)
        return status;
    int rc = ss_cluster_stats(c, saver, &s);
    if (rc < 0) {
        status = cli_cfail(c, "stats", rc);
        goto out;
    }
    status = CLI_EXIT_FAIL;
    if (json && !(obj = cJSON_CreateObject()))
        goto nomem;
    if (obj && saver && !cJSON_AddStringToObject(obj, "saver", saver))
        goto nomem;
    if (stats_emit(&s, obj, "") < 0)
        goto nomem;
    if (per_shard) {
        if (obj && (!cJSON_AddNumberToObject(obj, "epoch", (double)ss_cluster_epoch(c)) ||
                    !(arr = cJSON_AddArrayToObject(obj, "shards"))))
            goto nomem;
        for (size_t sh = 0; sh < ss_cluster_shards(c); sh++) {
            ss_client *sc = NULL;
            ss_server_stats one;
            rc = ss_cluster_client(c, sh, &sc);
            if (rc == 0)
                rc = ss_client_stats(sc, saver, &one);
            if (rc < 0) {
                cli_error("shard %s (%s)", ss_cluster_shard_id(c, sh),
                          ss_cluster_shard_address(c, sh));
                status = sc ? cli_fail(sc, "stats", rc) : cli_cfail(c, "stats", rc);
                goto out;
            }
            if (!obj) {
                char prefix[SS_REDIRECT_ID_MAX + 16];
                snprintf(prefix, sizeof prefix, "%s.", ss_cluster_shard_id(c, sh));
                printf("# shard %s (%s) slots=%u\n", ss_cluster_shard_id(c, sh),
                       ss_cluster_shard_address(c, sh), ss_cluster_shard_slots(c, sh));
                stats_emit(&one, NULL, prefix);
                continue;
            }
            cJSON *so = cJSON_CreateObject();
            if (!so || !cJSON_AddItemToArray(arr, so))
                goto nomem;
            if (!cJSON_AddStringToObject(so, "shard", ss_cluster_shard_id(c, sh)) ||
                !cJSON_AddStringToObject(so, "address", ss_cluster_shard_address(c, sh)) ||
                !cJSON_AddNumberToObject(so, "slots", ss_cluster_shard_slots(c, sh)) ||
                stats_emit(&one, so, "") < 0)
                goto nomem;
        }
    }
    if (obj) {
        char *text = cJSON_PrintUnformatted(obj);
        if (!text)
            goto nomem;
        printf("%s\n", text);
        free(text);
    }
    status = CLI_EXIT_OK;
    goto out;
nomem:
    cli_error("out of memory");
    status = CLI_EXIT_FAIL;
out:
    cJSON_Delete(obj);
    ss_cluster_close(c);
    return status;
}
