/* cli_submit_route -- the cluster side of `statesaver submit`: each
 * sequence's owner shard, the reconnect of a lost shard, and the bounded
 * refresh-and-retry after MOVED / UNAVAILABLE replies.
 */
#include "cli_submit.h"

#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ss_backoff.h"

/* Status codes that mean "ask the owner again" rather than failure. */
bool cli_submit_is_reroute(const run *r, int rc)
{
    return rc == SS_ERR_STATUS(SS_CODE_MOVED) ||
           (rc == SS_ERR_STATUS(SS_CODE_UNAVAILABLE) && !r->unavail_final);
}

/* Replace the lost connection to shard `shard`: refresh the topology and
 * reconnect with backoff until retry_ms has passed since the loss.
 * Returns 0 once that shard (or, if the topology no longer has it, the
 * cluster) answers, else the CLI exit status (the error printed). */
int cli_submit_reconnect(const cli_ctx *ctx, run *r, size_t shard, uint64_t retry_ms,
                         const char *why)
{
    char err[1024] = "", addr[SS_REDIRECT_ADDR_MAX + 1];
    ss_backoff backoff;
    int64_t give_up = cli_submit_now_ms() + (int64_t)retry_ms;
    unsigned attempts = 0;

    (void)ctx;
    snprintf(addr, sizeof addr, "%s", ss_cluster_shard_address(r->cl, shard));
    if (r->tty)
        fputc('\n', stderr);
    if (retry_ms == 0) {
        cli_error("%s: connection to %s lost: %s", r->phase, addr, why);
        return CLI_EXIT_FAIL;
    }
    cli_error("%s: connection to %s lost (%s); reconnecting for up to %llu ms", r->phase,
              addr, why, (unsigned long long)retry_ms);
    ss_backoff_init(&backoff, SUBMIT_BACKOFF_MIN_MS, SUBMIT_BACKOFF_MAX_MS, 0);
    for (;;) {
        int64_t left = give_up - cli_submit_now_ms();
        if (left <= 0)
            break;
        struct timespec ts;
        uint32_t wait = ss_backoff_next(&backoff); /* jittered, doubling */
        uint32_t nap = (int64_t)wait < left ? wait : (uint32_t)left;
        ts.tv_sec = nap / 1000;
        ts.tv_nsec = (long)(nap % 1000) * 1000000L;
        nanosleep(&ts, NULL);
        attempts++;
        (void)ss_cluster_refresh(r->cl); /* the shard may have moved or come back */
        size_t i = 0;
        while (i < ss_cluster_shards(r->cl) &&
               strcmp(ss_cluster_shard_address(r->cl, i), addr) != 0)
            i++;
        ss_client *sc = NULL;
        if (i == ss_cluster_shards(r->cl) ||
            (ss_cluster_client(r->cl, i, &sc) == 0 && ss_client_ping(sc, NULL) == 0)) {
            cli_error("%s: reconnected to %s after %u attempt%s; resuming", r->phase, addr,
                      attempts, attempts == 1 ? "" : "s");
            r->last_draw = 0;
            return CLI_EXIT_OK;
        }
        snprintf(err, sizeof err, "%s",
                 sc ? ss_client_last_error(sc) : ss_cluster_last_error(r->cl));
    }
    cli_error("%s: could not reconnect to %s within %llu ms (%u attempts): %s", r->phase,
              addr, (unsigned long long)retry_ms, attempts, err);
    return CLI_EXIT_FAIL;
}

/* A transport error (the connection, not the server, failed). */
bool cli_submit_is_transport(int rc)
{
    return rc == SS_ERR_CLOSED || rc == SS_ERR_IO || rc == SS_ERR_TIMEOUT ||
           rc == SS_ERR_CONNECT;
}

/* Every sequence's owner under the current topology. */
void cli_submit_route_seqs(run *r, const ss_sequence_in *ins)
{
    for (size_t i = 0; i < r->n; i++) {
        int o = ss_cluster_shard_of(r->cl, &ins[i].key);
        r->owner[i] = o < 0 ? 0 : (size_t)o;
    }
}

/* After a pass some replies asked to go elsewhere: refresh and pause
 * (bounded: --max-redirects passes with redirects, --unavailable-retry-ms
 * for frozen slots). CLI_EXIT_OK to try again. */
int cli_submit_reroute(const cli_ctx *ctx, run *r, unsigned *moved_passes,
                       int64_t *unavail_since)
{
    uint32_t max_moved = ctx->max_redirects ? ctx->max_redirects : SS_CLUSTER_REDIRECTS_DEFAULT;
    uint32_t max_unavail = ctx->unavailable_ms ? ctx->unavailable_ms
                                               : SS_CLUSTER_UNAVAILABLE_RETRY_MS_DEFAULT;
    if (r->moved && ++*moved_passes > max_moved) {
        cli_error("%s: redirect loop: segments were redirected in %u passes in a row "
                  "(the shards disagree about the topology)", r->phase, *moved_passes);
        return CLI_EXIT_FAIL;
    }
    if (!r->moved)
        *moved_passes = 0;
    if (r->unavailable) {
        if (*unavail_since == 0)
            *unavail_since = cli_submit_now_ms();
        if (cli_submit_now_ms() - *unavail_since > (int64_t)max_unavail ||
            !ss_cluster_moving(r->cl))
            r->unavail_final = true; /* sent once more, refused for good then */
    } else {
        *unavail_since = 0;
    }
    struct timespec ts = {.tv_sec = 0, .tv_nsec = (r->unavailable ? 50 : 5) * 1000000L};
    nanosleep(&ts, NULL);
    r->moved = r->unavailable = false;
    if (ss_cluster_refresh(r->cl) < 0)
        cli_error("%s: refreshing the topology: %s (retrying)", r->phase,
                  ss_cluster_last_error(r->cl));
    return CLI_EXIT_OK;
}

/* Order the n refs of r->cur / r->cur_refs by owner shard; starts[sh]..
 * starts[sh+1] are shard sh's. */
void cli_submit_group_refs(run *r, size_t n, size_t *starts)
{
    size_t ns = ss_cluster_shards(r->cl);
    memset(starts, 0, (ns + 1) * sizeof *starts);
    for (size_t j = 0; j < n; j++)
        starts[r->owner[r->ref_seq[r->cur[j]]] + 1]++;
    for (size_t sh = 0; sh < ns; sh++)
        starts[sh + 1] += starts[sh];
    size_t *fill = r->by_shard; /* ns entries of scratch, then n */
    memcpy(fill, starts, ns * sizeof *fill);
    size_t *tmp = r->by_shard + ns;
    for (size_t j = 0; j < n; j++)
        tmp[fill[r->owner[r->ref_seq[r->cur[j]]]]++] = r->cur[j];
    for (size_t j = 0; j < n; j++) {
        r->cur[j] = tmp[j];
        r->cur_refs[j] = r->refs[tmp[j]];
    }
}

