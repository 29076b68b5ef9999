/* cli_cancel -- `statesaver cancel SAVER KEY...`: cancel sequences (the
 * Cancel RPC: their queued and leased job segments, stored outputs,
 * context and state removed, queue slots freed), each key on its shard.
 *
 * The server refuses a Cancel with UNAVAILABLE ("cancel again") while a
 * write of one of the keys' segments is in flight, a window of
 * milliseconds; the command retries that refusal (and only that one) up
 * to --retries times with a short backoff. On a cluster the shards that had answered before a refusal have
 * cancelled their keys; their counts are kept and added to the repeat's.
 */
#include "cli.h"

#include <cjson/cJSON.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ss_backoff.h"
#include "ss_parse.h"

/* Repeats of a Cancel refused with UNAVAILABLE (--retries). */
#define CLI_CANCEL_RETRIES_DEFAULT 5u
#define CLI_CANCEL_RETRIES_MAX 100u
/* Backoff between them (ms, doubling, jittered). */
#define CLI_CANCEL_BACKOFF_MIN_MS 10u
#define CLI_CANCEL_BACKOFF_MAX_MS 200u

static const char cancel_usage[] =
    "usage: statesaver cancel SAVER KEY... [--retries N] [--json]\n"
    "Cancel sequences: each key's queued and leased job segments, its stored\n"
    "outputs, its context and its state are removed in one transaction (on a\n"
    "cluster, one per shard), and their queue slots freed; a worker's later\n"
    "Complete of a cancelled segment is refused. Keys that have nothing to\n"
    "remove count 0. Prints how many sequences had something to remove and\n"
    "how many job records went.\n"
    "  --retries N  repeat a cancel the server refused because a write of one\n"
    "               of the keys was in flight (UNAVAILABLE), up to N times with\n"
    "               a short backoff (default 5, at most 100)\n"
    "  --json       print {\"saver\", \"cancelled\", \"segments\"} as JSON\n";

static void pause_ms(uint32_t ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* The refusal worth repeating at once: UNAVAILABLE "... cancel again" (a
 * write in flight; docs/protocol.md). A slot frozen by a move is also
 * UNAVAILABLE, but the library has retried that already for
 * --unavailable-retry-ms. */
static bool cancel_again(ss_cluster *c, int rc)
{
    return rc == SS_ERR_STATUS(SS_CODE_UNAVAILABLE) &&
           strstr(ss_cluster_last_error(c), "cancel again") != NULL;
}

static int print_json(const char *saver, uint64_t cancelled, uint64_t segments)
{
    cJSON *obj = cJSON_CreateObject();
    char *text = NULL;
    int status = CLI_EXIT_FAIL;
    if (obj && cJSON_AddStringToObject(obj, "saver", saver) &&
        cJSON_AddNumberToObject(obj, "cancelled", (double)cancelled) &&
        cJSON_AddNumberToObject(obj, "segments", (double)segments) &&
        (text = cJSON_PrintUnformatted(obj))) {
        printf("%s\n", text);
        status = CLI_EXIT_OK;
    } else {
        cli_error("out of memory");
    }
    free(text);
    cJSON_Delete(obj);
    return status;
}

int cli_cmd_cancel(const cli_ctx *ctx, int argc, char **argv)
{
    static const struct option opts[] = {
        {"retries", required_argument, NULL, 'r'},
        {"json", no_argument, NULL, 'j'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0}};
    uint64_t retries = CLI_CANCEL_RETRIES_DEFAULT, cancelled = 0, segments = 0;
    bool json = false;
    ss_cluster *c = NULL;
    ss_key *keys = NULL;
    ss_backoff backoff;
    int o, status;

    while ((o = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (o) {
        case 'h': fputs(cancel_usage, stdout); return CLI_EXIT_OK;
        case 'j': json = true; break;
        case 'r':
            if (ss_parse_u64(optarg, 0, CLI_CANCEL_RETRIES_MAX, &retries) < 0)
                return cli_usage("cancel", "--retries wants 0..%u", CLI_CANCEL_RETRIES_MAX);
            break;
        default: return cli_usage("cancel", "bad option '%s'", argv[optind - 1]);
        }
    }
    if (argc - optind < 2)
        return cli_usage("cancel", "want SAVER KEY...");
    const char *saver = argv[optind];
    size_t n = (size_t)(argc - optind - 1);
    for (size_t k = 0; k < n; k++)
        if (!argv[optind + 1 + k][0])
            return cli_usage("cancel", "KEY %zu is empty", k + 1);
    if ((status = cli_keys_argv(argv + optind + 1, n, &keys)) != CLI_EXIT_OK)
        return status;
    if ((status = cli_cluster(ctx, &c)) != CLI_EXIT_OK)
        goto out;
    ss_backoff_init(&backoff, CLI_CANCEL_BACKOFF_MIN_MS, CLI_CANCEL_BACKOFF_MAX_MS, 0);
    for (uint64_t attempt = 0;; attempt++) {
        uint64_t cn = 0, sg = 0;
        int rc = ss_cluster_cancel(c, saver, keys, n, &cn, &sg);
        cancelled += cn; /* on a cluster, shards that answered before a refusal */
        segments += sg;
        if (rc == 0)
            break;
        if (!cancel_again(c, rc) || attempt >= retries) {
            status = cli_cfail(c, "cancel", rc);
            goto out;
        }
        pause_ms(ss_backoff_next(&backoff));
    }
    if (json)
        status = print_json(saver, cancelled, segments);
    else
        printf("%s: cancelled %llu sequences, %llu job records\n", saver,
               (unsigned long long)cancelled, (unsigned long long)segments);
out:
    ss_cluster_close(c);
    free(keys);
    return status;
}
