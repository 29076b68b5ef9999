/* cli_submit -- `statesaver submit`: run whole sequences through the job
 * queue. Reads one .npy per sequence: float32 [length, input_size], or
 * token ids int32/int64 [length] (or [length, 1]) for a model with an
 * embedding, submitted as int64 [T] id tensors; submits every segment
 * (pipelined), awaits and collects the outputs, and writes <key>.npy
 * [length, output_size] and <key>.final.<state>.npy per state.
 *
 * Every input file is checked before anything is submitted (exit 2 naming
 * the file; cli_submit_inputs.c): dtype and shape, one kind (float32 or
 * ids) per run, ids >= 0 (and < --vocab when given). Sequences that fail are named with the
 * server's reason and make the exit status 1; the others are still written.
 *
 * A lost connection (the server restarting, a crash) is not fatal: the
 * command reconnects with backoff for up to --retry-ms, resends every
 * segment the server has not acknowledged (an identical resubmission is
 * acknowledged as already queued) and awaits every segment not yet
 * answered. Acknowledged submits and completed segments are durable on the
 * server, so nothing is recomputed beyond the segments in flight.
 *
 * Results are awaited WITHOUT collecting; a sequence's segments are
 * collected (deleted on the server) only after its files are written, so
 * a crash of the server between its delete and the reply cannot lose a
 * result. The collect asks for no tensors (ss_client_collect_many sets
 * AwaitRequest.without_tensors), so each segment's outputs cross the
 * network once. A segment this command collected is never awaited again
 * (its sequence is written), and collecting one already gone is fine.
 *
 * On a cluster every sequence's Submit, Await and collect go to the shard
 * owning its key (one connection per shard, pipelined per shard). A
 * segment answered MOVED (the slot moved) or UNAVAILABLE (frozen by a move
 * in progress) is not a failure: the topology is refreshed and the
 * segment sent again to its owner, at most --max-redirects passes for
 * redirects and --unavailable-retry-ms for frozen slots.
 */
#include "cli_submit.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "ss_backoff.h"
#include "ss_parse.h"
#include "ss_npy.h"
#include "ss_limits.h"
#include "ss_tensor.h"
#include "statesaver_jobs.h"

/* Default time one Await may park on the server (ms). */
#define SUBMIT_WAIT_MS_DEFAULT 5000u
/* Longest path built for an output file. */
#define SUBMIT_PATH_MAX 4096u
/* Progress refresh on a terminal, and line interval otherwise (ms). */
#define SUBMIT_TTY_REFRESH_MS 100
#define SUBMIT_LINE_MS 1000
/* Width of the bar when the terminal's width is unknown. */
#define SUBMIT_TTY_COLS 80
/* How long to keep reconnecting after the connection is lost (ms). */
#define SUBMIT_RETRY_MS_DEFAULT 60000u
/* Await refs per round: whole sequences are awaited in rounds of at least
 * this many segments (or the window, if larger), and the sequences written
 * in a round are collected before the next round starts. */
#define SUBMIT_ROUND_REFS 512u

static const char submit_usage[] =
    "usage: statesaver submit SAVER --inputs DIR --num-unroll T --outputs DIR\n"
    "         [--wait-ms N] [--max-wait-ms N] [--window N] [--retry-ms N] [--json]\n"
    "         [--vocab V]\n"
    "\n"
    "Run every sequence in DIR through the job queue of SAVER: each *.npy in\n"
    "DIR is one sequence, float32 [length, input_size], or for a model with an\n"
    "embedding int32/int64 token ids [length] (or [length, 1]), keyed by its\n"
    "file name without .npy; all files of a run are of one kind. Sequences\n"
    "are cut into segments of T steps (the last one padded); workers\n"
    "(`statesaver-worker serve`) compute them. Writes, per sequence,\n"
    "<key>.npy [length, output_size] and <key>.final.<state>.npy for each\n"
    "state of the saver ('/' in a state name becomes '_').\n"
    "\n"
    "  --inputs DIR       directory of input .npy files\n"
    "  --outputs DIR      directory for the results (created if missing)\n"
    "  --num-unroll T     steps per segment\n"
    "  --vocab V          token ids must be in [0, V), checked before submitting\n"
    "                     (default: only >= 0; the worker checks its vocab)\n"
    "  --wait-ms N        how long one await waits on the server (default 5000)\n"
    "  --max-wait-ms N    give up on segments not done after N ms (default 0:\n"
    "                     wait as long as it takes)\n"
    "  --window N         requests in flight (default 64)\n"
    "  --retry-ms N       when the connection to the server is lost, reconnect\n"
    "                     with backoff for up to N ms and resume (default 60000;\n"
    "                     0: fail at once)\n"
    "  --json             print the summary as JSON\n"
    "\n"
    "Progress goes to stderr: a bar with rate and ETA on a terminal, a line\n"
    "per second otherwise. Exit status: 0 all sequences done, 1 some failed\n"
    "(named on stderr with the reason) or the server failed, 2 bad usage or\n"
    "bad input files (nothing submitted).\n";

int64_t cli_submit_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void fmt_duration(char *buf, size_t size, double s)
{
    if (s < 0 || s > 359999)
        snprintf(buf, size, "--:--");
    else if (s >= 3600)
        snprintf(buf, size, "%d:%02d:%02d", (int)s / 3600, ((int)s / 60) % 60, (int)s % 60);
    else
        snprintf(buf, size, "%d:%02d", (int)s / 60, (int)s % 60);
}

/* Progress to stderr; force draws even if the interval has not passed. */
static void progress(run *r, bool force)
{
    int64_t now = cli_submit_now_ms();
    if (!force && now - r->last_draw < (r->tty ? SUBMIT_TTY_REFRESH_MS : SUBMIT_LINE_MS))
        return;
    r->last_draw = now;
    if (r->segs_sent < r->segs_total && strcmp(r->phase, "submit") == 0) {
        /* Submitting: steps only come back once awaiting starts. */
        double f = r->segs_total ? (double)r->segs_sent / (double)r->segs_total : 1;
        if (r->tty)
            fprintf(stderr, "\r%-6s %llu/%llu segments queued (%.0f%%)", r->phase,
                    (unsigned long long)r->segs_sent, (unsigned long long)r->segs_total,
                    f * 100.0);
        else
            fprintf(stderr, "[%s] %llu/%llu segments queued (%.1f%%)\n", r->phase,
                    (unsigned long long)r->segs_sent, (unsigned long long)r->segs_total,
                    f * 100.0);
        fflush(stderr);
        return;
    }
    double secs = (double)(now - r->t0) / 1000.0;
    double rate = secs > 0 ? (double)r->steps_done / secs : 0;
    double frac = r->total_steps ? (double)r->steps_done / (double)r->total_steps : 1;
    char eta[32];
    fmt_duration(eta, sizeof eta,
                 rate > 0 ? (double)(r->total_steps - r->steps_done) / rate : -1);
    if (!r->tty) {
        fprintf(stderr, "[%s] %llu/%llu steps (%.1f%%), %llu/%llu segments, "
                "%.0f steps/s, ETA %s\n", r->phase, (unsigned long long)r->steps_done,
                (unsigned long long)r->total_steps, frac * 100.0,
                (unsigned long long)r->segs_done, (unsigned long long)r->segs_total, rate,
                eta);
        return;
    }
    struct winsize ws;
    int cols = SUBMIT_TTY_COLS;
    if (ioctl(STDERR_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 40)
        cols = ws.ws_col;
    char tail[160];
    int tl = snprintf(tail, sizeof tail, " %3.0f%% %llu/%llu steps %.0f/s ETA %s",
                      frac * 100.0, (unsigned long long)r->steps_done,
                      (unsigned long long)r->total_steps, rate, eta);
    int width = cols - 1 - tl - 2 - 7;
    if (width < 10)
        width = 10;
    int fill = (int)(frac * width);
    fprintf(stderr, "\r%-6s [", r->phase);
    for (int i = 0; i < width; i++)
        fputc(i < fill ? '#' : '.', stderr);
    fprintf(stderr, "]%s", tail);
    fflush(stderr);
}

static void seq_fail(seq *q, uint64_t segment, const char *why)
{
    /* Keep the earliest segment's reason: later ones only echo it. */
    if (q->failed && q->reason && segment >= q->fail_seg)
        return;
    free(q->reason);
    q->reason = strdup(why && why[0] ? why : "unknown reason");
    q->failed = true;
    q->fail_seg = segment;
    free(q->out);
    q->out = NULL;
}

static void free_run(run *r)
{
    for (size_t i = 0; r->seqs && i < r->n; i++) {
        seq *q = &r->seqs[i];
        free(q->key);
        free(q->path);
        if (q->ids_owned)
            free(q->ids);
        ss_npy_free(q->in);
        free(q->out);
        ss_await_result_free(q->fin);
        free(q->reason);
    }
    free(r->seqs);
    free(r->refs);
    free(r->ref_seq);
    free(r->queued);
    free(r->refused);
    free(r->answered);
    free(r->has_result);
    free(r->collected);
    free(r->cur);
    free(r->cur_refs);
    free(r->picks);
}

/* Create the output directory if needed and check it is writable. */
static int prepare_outputs(const char *dir)
{
    struct stat st;
    if (mkdir(dir, 0777) < 0 && errno != EEXIST) {
        cli_error("--outputs %s: %s", dir, strerror(errno));
        return CLI_EXIT_USAGE;
    }
    if (stat(dir, &st) < 0 || !S_ISDIR(st.st_mode) || access(dir, W_OK | X_OK) < 0) {
        cli_error("--outputs %s: not a writable directory", dir);
        return CLI_EXIT_USAGE;
    }
    return CLI_EXIT_OK;
}

static void on_submitted(void *arg, size_t i, uint64_t segment, int rc, const char *msg)
{
    run *r = arg;
    seq *q = &r->seqs[i];
    if (rc < 0 && !SS_IS_STATUS_ERR(rc))
        return; /* lost with the connection: sent again after reconnecting */
    if (cli_submit_is_reroute(r, rc)) {
        /* Sent again to the owner after a topology refresh. */
        r->moved = r->moved || rc == SS_ERR_STATUS(SS_CODE_MOVED);
        r->unavailable = r->unavailable || rc == SS_ERR_STATUS(SS_CODE_UNAVAILABLE);
        return;
    }
    r->queued[q->first_ref + segment] = rc == 0;
    r->refused[q->first_ref + segment] = rc < 0;
    r->segs_sent++;
    if (rc < 0) {
        char why[SS_CLIENT_ERRMSG_MAX + 64];
        snprintf(why, sizeof why, "submitting segment %llu: %s",
                 (unsigned long long)segment, msg);
        seq_fail(q, segment, why);
    }
    progress(r, false);
}

/* Write <key>.npy and the final states of a finished sequence. */
static int write_sequence(run *r, seq *q)
{
    char path[SUBMIT_PATH_MAX], err[1024];
    int64_t shape[2] = {(int64_t)q->length, q->out_cols};
    if ((size_t)snprintf(path, sizeof path, "%s/%s.npy", r->out_dir, q->key) >= sizeof path) {
        cli_error("%s/%s.npy: path too long", r->out_dir, q->key);
        return CLI_EXIT_FAIL;
    }
    if (cli_npy_write(path, SS_DTYPE_FLOAT32, shape, 2, q->out,
                      (size_t)q->length * q->out_cols * sizeof(float), err, sizeof err) < 0) {
        cli_error("%s", err);
        return CLI_EXIT_FAIL;
    }
    for (size_t s = 0; s < ss_await_result_finals(q->fin); s++) {
        const char *name = ss_await_result_final_name(q->fin, s);
        const int64_t *fshape;
        size_t rank, nbytes;
        int dtype;
        const void *data = ss_await_result_final(q->fin, s, &dtype, &fshape, &rank, &nbytes);
        int n = snprintf(path, sizeof path, "%s/%s.final.%s.npy", r->out_dir, q->key, name);
        if (n < 0 || (size_t)n >= sizeof path) {
            cli_error("%s/%s.final.%s.npy: path too long", r->out_dir, q->key, name);
            return CLI_EXIT_FAIL;
        }
        /* State names are paths in TF ("cell_0/c"); keep the file flat. */
        for (char *p = path + strlen(r->out_dir) + 1 + strlen(q->key); *p; p++)
            if (*p == '/')
                *p = '_';
        if (cli_npy_write(path, dtype, fshape, rank, data, nbytes, err, sizeof err) < 0) {
            cli_error("%s", err);
            return CLI_EXIT_FAIL;
        }
    }
    return CLI_EXIT_OK;
}

static int on_awaited(void *arg, size_t cur_index, int rc, ss_await_result *res,
                      const char *msg)
{
    run *r = arg;
    size_t index = r->cur[r->cur_off + cur_index];
    seq *q = &r->seqs[r->ref_seq[index]];
    uint64_t segment = r->refs[index].segment;
    if (cli_submit_is_reroute(r, rc)) {
        /* Not answered: awaited again at its owner in the next round. */
        r->moved = r->moved || rc == SS_ERR_STATUS(SS_CODE_MOVED);
        r->unavailable = r->unavailable || rc == SS_ERR_STATUS(SS_CODE_UNAVAILABLE);
        ss_await_result_free(res);
        return 0;
    }
    uint64_t first = segment * r->T;
    uint32_t want = q->length - first < r->T ? (uint32_t)(q->length - first) : r->T;
    uint32_t rows = 0, cols = 0;
    const float *o;
    char why[256];

    r->segs_done++;
    r->answered[index] = true;
    r->has_result[index] = rc == 0;
    q->n_answered++;
    if (rc < 0) {
        char why_rc[SS_CLIENT_ERRMSG_MAX + 64];
        snprintf(why_rc, sizeof why_rc, "segment %llu: %s", (unsigned long long)segment, msg);
        seq_fail(q, segment, why_rc);
        q->keep = true;
        goto out;
    }
    if (ss_await_result_state(res) == SS_SEG_FAILED) {
        seq_fail(q, segment, ss_await_result_reason(res));
        goto out;
    }
    if (q->failed)
        goto out;
    o = ss_await_result_outputs(res, &rows, &cols);
    if (!o || rows != r->T || cols == 0 || ss_await_result_length(res) != want ||
        ss_await_result_last(res) != (segment + 1 == q->n_segments)) {
        snprintf(why, sizeof why, "segment %llu: the server returned outputs [%u, %u] "
                 "with length %u, expected [%u, *] with length %u",
                 (unsigned long long)segment, rows, cols, ss_await_result_length(res), r->T,
                 want);
        seq_fail(q, segment, why);
        q->keep = true;
        goto out;
    }
    if (!q->out) {
        if (q->length > SIZE_MAX / sizeof(float) / cols) {
            seq_fail(q, segment, "outputs are too big");
            q->keep = true;
            goto out;
        }
        q->out_cols = cols;
        q->out = calloc((size_t)q->length * cols, sizeof(float));
        if (!q->out) {
            seq_fail(q, segment, "out of memory for the outputs");
            q->keep = true;
            goto out;
        }
    }
    if (cols != q->out_cols) {
        seq_fail(q, segment, "segments disagree on the output width");
        q->keep = true;
        goto out;
    }
    /* Only the real rows: the padding of the last segment is dropped. */
    memcpy(q->out + first * cols, o, (size_t)want * cols * sizeof(float));
    q->done++;
    r->steps_done += want;
    if (segment + 1 == q->n_segments) {
        ss_await_result_free(q->fin);
        q->fin = res;
        res = NULL;
    }
    if (q->done == q->n_segments) {
        if (write_sequence(r, q) != CLI_EXIT_OK) {
            /* The results stay on the server: a rerun gets them again. */
            seq_fail(q, segment, "writing its outputs failed");
            q->keep = true;
        }
        free(q->out);
        q->out = NULL;
        ss_await_result_free(q->fin);
        q->fin = NULL;
    }
out:
    /* Every answer is in: the files are written (or the server failed the
     * sequence), so its records may go. */
    if (q->n_answered == q->n_await && !q->keep)
        q->settled = true;
    ss_await_result_free(res);
    progress(r, false);
    return 0;
}

/* Submit every segment not yet acknowledged, each to its owner shard,
 * reconnecting and rerouting as needed. Returns the CLI exit status. */
static int submit_all(const cli_ctx *ctx, run *r, const char *saver,
                      const ss_sequence_in *ins, const ss_sequence_ids *idins,
                      const ss_jobs_pipeline *pipe, uint64_t retry_ms)
{
    unsigned moved_passes = 0;
    int64_t unavail_since = 0;
    for (;;) {
        size_t total = 0;
        bool lost = false;
        cli_submit_route_seqs(r, ins);
        for (size_t sh = 0; sh < ss_cluster_shards(r->cl) && !lost; sh++) {
            size_t n = 0;
            for (size_t i = 0; i < r->n; i++) {
                if (r->owner[i] != sh)
                    continue;
                for (uint64_t s = 0; s < r->seqs[i].n_segments; s++) {
                    uint64_t k = r->seqs[i].first_ref + s;
                    if (!r->queued[k] && !r->refused[k])
                        r->picks[n++] = (ss_segment_pick){.seq = i, .segment = s};
                }
            }
            total += n;
            if (n == 0)
                continue;
            ss_client *c = NULL;
            int rc = ss_cluster_client(r->cl, sh, &c);
            if (rc == 0 && r->ids)
                rc = ss_client_submit_segments_ids(c, saver, idins, r->n, r->T, r->picks, n,
                                                   pipe, on_submitted, r);
            else if (rc == 0)
                rc = ss_client_submit_segments(c, saver, ins, r->n, r->input_size, r->T,
                                               r->picks, n, pipe, on_submitted, r);
            if (rc == 0 || SS_IS_STATUS_ERR(rc))
                continue; /* every segment answered */
            if (!cli_submit_is_transport(rc)) {
                if (r->tty)
                    fputc('\n', stderr);
                return c ? cli_fail(c, "submit", rc) : cli_cfail(r->cl, "submit", rc);
            }
            char why[SS_CLIENT_ERRMSG_MAX];
            snprintf(why, sizeof why, "%s",
                     c ? ss_client_last_error(c) : ss_cluster_last_error(r->cl));
            int st = cli_submit_reconnect(ctx, r, sh, retry_ms, why);
            if (st != CLI_EXIT_OK)
                return st;
            lost = true;
        }
        if (total == 0)
            return CLI_EXIT_OK;
        if (lost)
            continue;
        if (!r->moved && !r->unavailable)
            return CLI_EXIT_OK;
        int st = cli_submit_reroute(ctx, r, &moved_passes, &unavail_since);
        if (st != CLI_EXIT_OK)
            return st;
    }
}

static void on_collected(void *arg, size_t cur_index, int rc, const char *msg)
{
    run *r = arg;
    size_t index = r->cur[r->cur_off + cur_index];
    if (cli_submit_is_reroute(r, rc)) {
        r->moved = r->moved || rc == SS_ERR_STATUS(SS_CODE_MOVED);
        r->unavailable = r->unavailable || rc == SS_ERR_STATUS(SS_CODE_UNAVAILABLE);
        return; /* collected at its owner in the next round */
    }
    r->collected[index] = true;
    if (rc < 0 && r->collect_errors++ == 0) {
        /* Not fatal: the files are written; the record stays on the server. */
        if (r->tty)
            fputc('\n', stderr);
        cli_error("collecting %s segment %llu: %s (its result stays on the server)",
                  r->seqs[r->ref_seq[index]].key, (unsigned long long)r->refs[index].segment,
                  msg);
    }
}

/* Gather into r->cur / r->cur_refs the records to collect: results of
 * settled sequences (written, or failed on the server) not collected yet. */
static size_t pending_collects(run *r)
{
    size_t n = 0;
    for (size_t i = 0; i < r->n; i++) {
        const seq *q = &r->seqs[i];
        if (!q->settled)
            continue;
        for (size_t k = q->first_await; k < q->first_await + q->n_await; k++)
            if (r->has_result[k] && !r->collected[k]) {
                r->cur[n] = k;
                r->cur_refs[n] = r->refs[k];
                n++;
            }
    }
    return n;
}

/* Gather the next await round: unanswered refs of whole sequences, in
 * order, until at least `round` refs. */
static size_t next_round(run *r, size_t round)
{
    size_t n = 0;
    for (size_t i = 0; i < r->n && n < round; i++) {
        const seq *q = &r->seqs[i];
        for (size_t k = q->first_await; k < q->first_await + q->n_await; k++)
            if (!r->answered[k]) {
                r->cur[n] = k;
                r->cur_refs[n] = r->refs[k];
                n++;
            }
    }
    return n;
}

/* Await every ref not yet answered (without collecting), in rounds, each
 * shard's refs at that shard; after each round collect the sequences that
 * were written (or failed on the server). Reconnects as needed; a
 * connection lost during a collect only means collecting again (a record
 * already gone counts as collected). */
static int await_all(const cli_ctx *ctx, run *r, const char *saver, const ss_sequence_in *ins,
                     uint32_t wait_ms, uint64_t max_wait, const ss_jobs_pipeline *pipe,
                     uint64_t retry_ms)
{
    int64_t t0 = cli_submit_now_ms();
    uint32_t window = pipe->window ? pipe->window : SS_JOBS_WINDOW_DEFAULT;
    size_t round = (size_t)window * 4 > SUBMIT_ROUND_REFS ? (size_t)window * 4
                                                          : SUBMIT_ROUND_REFS;
    size_t starts[SS_TOPO_SHARDS_CLI + 1];
    unsigned moved_passes = 0;
    int64_t unavail_since = 0;
    for (;;) {
        const char *what = "collect";
        bool collect = true;
        cli_submit_route_seqs(r, ins);
        if (ss_cluster_shards(r->cl) > SS_TOPO_SHARDS_CLI) {
            cli_error("%s: more than %u shards", r->phase, SS_TOPO_SHARDS_CLI);
            return CLI_EXIT_FAIL;
        }
        size_t n = pending_collects(r);
        uint64_t total = 0;
        if (n == 0) {
            collect = false;
            what = "await";
            n = next_round(r, round);
            if (n == 0)
                return CLI_EXIT_OK;
            if (max_wait) {
                int64_t spent = cli_submit_now_ms() - t0;
                total = (uint64_t)spent >= max_wait ? 1 : max_wait - (uint64_t)spent;
            }
        }
        cli_submit_group_refs(r, n, starts);
        bool lost = false;
        for (size_t sh = 0; sh < ss_cluster_shards(r->cl) && !lost; sh++) {
            size_t m = starts[sh + 1] - starts[sh];
            if (m == 0)
                continue;
            ss_client *c = NULL;
            r->cur_off = starts[sh];
            int rc = ss_cluster_client(r->cl, sh, &c);
            if (rc == 0 && collect)
                rc = ss_client_collect_many(c, saver, r->cur_refs + starts[sh], m, pipe,
                                            on_collected, r);
            else if (rc == 0)
                rc = ss_client_await_many(c, saver, r->cur_refs + starts[sh], m, wait_ms,
                                          total, false, pipe, on_awaited, r);
            if (rc == 0)
                continue;
            if (c && !ss_client_broken(c))
                return cli_fail(c, what, rc);
            char why[SS_CLIENT_ERRMSG_MAX];
            snprintf(why, sizeof why, "%s",
                     c ? ss_client_last_error(c) : ss_cluster_last_error(r->cl));
            int st = cli_submit_reconnect(ctx, r, sh, retry_ms, why);
            if (st != CLI_EXIT_OK)
                return st;
            lost = true;
        }
        if (!lost && (r->moved || r->unavailable)) {
            int st = cli_submit_reroute(ctx, r, &moved_passes, &unavail_since);
            if (st != CLI_EXIT_OK)
                return st;
        }
    }
}

/* Print the summary (text or JSON) to stdout. */
static void summary(const run *r, bool json, size_t n_failed, double secs)
{
    double rate = secs > 0 ? (double)r->steps_done / secs : 0;
    if (!json) {
        printf("%zu sequences (%zu failed), %llu segments, %llu steps in %.3f s: "
               "%.0f steps/s\n", r->n, n_failed, (unsigned long long)r->segs_total,
               (unsigned long long)r->steps_done, secs, rate);
        return;
    }
    cJSON *obj = cJSON_CreateObject();
    if (!obj)
        return;
    cJSON_AddNumberToObject(obj, "sequences", (double)r->n);
    cJSON_AddNumberToObject(obj, "failed", (double)n_failed);
    cJSON_AddNumberToObject(obj, "segments", (double)r->segs_total);
    cJSON_AddNumberToObject(obj, "steps", (double)r->steps_done);
    cJSON_AddNumberToObject(obj, "num_unroll", r->T);
    cJSON_AddNumberToObject(obj, "seconds", secs);
    cJSON_AddNumberToObject(obj, "steps_per_sec", rate);
    char *text = cJSON_PrintUnformatted(obj);
    cJSON_Delete(obj);
    if (text)
        printf("%s\n", text);
    free(text);
}

int cli_cmd_submit(const cli_ctx *ctx, int argc, char **argv)
{
    static const struct option opts[] = {
        {"inputs", required_argument, NULL, 'i'},
        {"outputs", required_argument, NULL, 'o'},
        {"num-unroll", required_argument, NULL, 'T'},
        {"wait-ms", required_argument, NULL, 'w'},
        {"max-wait-ms", required_argument, NULL, 'm'},
        {"window", required_argument, NULL, 'W'},
        {"retry-ms", required_argument, NULL, 'R'},
        {"json", no_argument, NULL, 'j'},
        {"vocab", required_argument, NULL, 'V'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    run r = {.status = CLI_EXIT_OK, .phase = "submit"};
    const char *in_dir = NULL;
    uint64_t v, wait_ms = SUBMIT_WAIT_MS_DEFAULT, max_wait = 0, T = 0;
    uint64_t retry_ms = SUBMIT_RETRY_MS_DEFAULT;
    ss_jobs_pipeline pipe = {.window = 0};
    ss_sequence_in *ins = NULL;
    ss_sequence_ids *idins = NULL;
    bool json = false;
    int o, status;

    while ((o = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (o) {
        case 'h': fputs(submit_usage, stdout); return CLI_EXIT_OK;
        case 'i': in_dir = optarg; break;
        case 'o': r.out_dir = optarg; break;
        case 'T':
            if (ss_parse_u64(optarg, 0, SS_JOBS_NUM_UNROLL_MAX, &T) < 0 || T == 0)
                return cli_usage("submit", "--num-unroll wants 1..%u", SS_JOBS_NUM_UNROLL_MAX);
            break;
        case 'w':
            if (ss_parse_u64(optarg, 0, SS_WAIT_MS_MAX, &wait_ms) < 0)
                return cli_usage("submit", "--wait-ms wants 0..%u", SS_WAIT_MS_MAX);
            break;
        case 'm':
            if (ss_parse_u64(optarg, 0, 86400000ull * 365, &max_wait) < 0)
                return cli_usage("submit", "--max-wait-ms wants a number of ms");
            break;
        case 'W':
            if (ss_parse_u64(optarg, 0, SS_JOBS_WINDOW_MAX, &v) < 0 || v == 0)
                return cli_usage("submit", "--window wants 1..%u", SS_JOBS_WINDOW_MAX);
            pipe.window = (uint32_t)v;
            break;
        case 'R':
            if (ss_parse_u64(optarg, 0, 86400000ull, &retry_ms) < 0)
                return cli_usage("submit", "--retry-ms wants 0..86400000");
            break;
        case 'j': json = true; break;
        case 'V':
            if (ss_parse_u64(optarg, 0, INT64_MAX, &r.vocab) < 0 || r.vocab == 0)
                return cli_usage("submit", "--vocab wants a vocabulary size >= 1");
            break;
        default: return cli_usage("submit", "bad option '%s'", argv[optind - 1]);
        }
    }
    if (argc - optind != 1)
        return cli_usage("submit", "want exactly one SAVER");
    const char *saver = argv[optind];
    if (!in_dir || !r.out_dir || T == 0)
        return cli_usage("submit", "--inputs, --outputs and --num-unroll are required");
    r.T = (uint32_t)T;
    if ((status = cli_submit_load_inputs(&r, in_dir)) != CLI_EXIT_OK)
        goto out;
    if ((status = prepare_outputs(r.out_dir)) != CLI_EXIT_OK)
        goto out;
    ins = calloc(r.n, sizeof *ins);
    idins = calloc(r.n, sizeof *idins);
    r.refs = calloc(r.segs_total, sizeof *r.refs);
    r.ref_seq = calloc(r.segs_total, sizeof *r.ref_seq);
    r.queued = calloc(r.segs_total, sizeof *r.queued);
    r.refused = calloc(r.segs_total, sizeof *r.refused);
    r.answered = calloc(r.segs_total, sizeof *r.answered);
    r.has_result = calloc(r.segs_total, sizeof *r.has_result);
    r.collected = calloc(r.segs_total, sizeof *r.collected);
    r.cur = calloc(r.segs_total, sizeof *r.cur);
    r.cur_refs = calloc(r.segs_total, sizeof *r.cur_refs);
    r.picks = calloc(r.segs_total, sizeof *r.picks);
    r.owner = calloc(r.n ? r.n : 1, sizeof *r.owner);
    r.by_shard = calloc(r.segs_total + SS_TOPO_SHARDS_CLI + 1, sizeof *r.by_shard);
    if (!ins || !idins || !r.refs || !r.ref_seq || !r.queued || !r.refused || !r.answered ||
        !r.has_result || !r.collected || !r.cur || !r.cur_refs || !r.picks || !r.owner ||
        !r.by_shard) {
        cli_error("out of memory");
        status = CLI_EXIT_FAIL;
        goto out;
    }
    for (size_t i = 0; i < r.n; i++) {
        ins[i].key.data = r.seqs[i].key;
        ins[i].key.len = strlen(r.seqs[i].key);
        ins[i].data = r.ids ? NULL : r.seqs[i].in->data;
        ins[i].length = r.seqs[i].length;
        idins[i].key = ins[i].key;
        idins[i].ids = r.seqs[i].ids;
        idins[i].length = r.seqs[i].length;
    }
    if ((status = cli_cluster(ctx, &r.cl)) != CLI_EXIT_OK)
        goto out;
    r.tty = isatty(STDERR_FILENO) == 1;
    r.t0 = cli_submit_now_ms();
    if ((status = submit_all(ctx, &r, saver, ins, idins, &pipe, retry_ms)) != CLI_EXIT_OK)
        goto out;
    /* Input data is no longer needed once every segment is queued. */
    size_t n_refs = 0;
    for (size_t i = 0; i < r.n; i++) {
        if (r.seqs[i].ids_owned)
            free(r.seqs[i].ids);
        r.seqs[i].ids = NULL;
        r.seqs[i].ids_owned = false;
        ss_npy_free(r.seqs[i].in);
        r.seqs[i].in = NULL;
        r.seqs[i].first_await = n_refs;
        bool gap = false;
        for (uint64_t s = 0; s < r.seqs[i].n_segments; s++) {
            /* Segments queued before a refused one are still awaited, so
             * their results are collected from the server; those after it
             * can never become ready (nothing saves the refused segment). */
            gap = gap || !r.queued[r.seqs[i].first_ref + s];
            if (gap) {
                r.segs_done++;
                continue;
            }
            r.refs[n_refs].key = ins[i].key;
            r.refs[n_refs].segment = s;
            r.ref_seq[n_refs] = i;
            n_refs++;
        }
        r.seqs[i].n_await = n_refs - r.seqs[i].first_await;
    }
    r.phase = "await";
    progress(&r, true);
    status = await_all(ctx, &r, saver, ins, (uint32_t)wait_ms, max_wait, &pipe, retry_ms);
    progress(&r, true);
    if (r.tty)
        fputc('\n', stderr);
    if (status != CLI_EXIT_OK)
        goto out;
    double secs = (double)(cli_submit_now_ms() - r.t0) / 1000.0;
    size_t n_failed = 0;
    for (size_t i = 0; i < r.n; i++) {
        if (!r.seqs[i].failed)
            continue;
        n_failed++;
        cli_error("sequence %s failed: %s", r.seqs[i].key, r.seqs[i].reason);
    }
    summary(&r, json, n_failed, secs);
    status = n_failed ? CLI_EXIT_FAIL : CLI_EXIT_OK;
out:
    ss_cluster_close(r.cl);
    free(idins);
    free(ins);
    free(r.owner);
    free(r.by_shard);
    free_run(&r);
    return status;
}
