/* cli_submit -- what the files of `statesaver submit` share: the run and
 * its sequences (cli_submit.c: submit, await, outputs; cli_submit_inputs.c:
 * reading and checking the input files) and the cluster routing of it
 * (cli_submit_route.c: owners, reconnects, reroutes).
 */
#ifndef SS_CLI_SUBMIT_H
#define SS_CLI_SUBMIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cli.h"
#include "ss_npy.h"
#include "statesaver_jobs.h"

/* Backoff between reconnect attempts (ms; common/ss_backoff, jittered). */
#define SUBMIT_BACKOFF_MIN_MS 100u
#define SUBMIT_BACKOFF_MAX_MS 5000u
/* Most shards a cluster may have for this command (ss_topology's limit). */
#define SS_TOPO_SHARDS_CLI 1024u

/* One input sequence and its results as they arrive. */
typedef struct seq {
    char *key;            /* file name without .npy (owned) */
    char *path;           /* input file path (owned) */
    ss_npy *in;           /* float32 [length, input_size], or token ids int32/int64
                             [length] or [length, 1] (owned), NULL once queued */
    int64_t *ids;         /* token ids [length] as int64: in's data (int64), or a
                             widened copy (int32, owned: ids_owned), else NULL */
    bool ids_owned;       /* ids is an owned copy (freed with in) */
    uint64_t length;      /* steps */
    uint64_t n_segments;  /* segments it is cut into */
    uint64_t first_ref;   /* index of its segment 0 in run.queued */
    size_t first_await;   /* index of its first await ref in run.refs */
    size_t n_await;       /* await refs (segments queued before any refused) */
    size_t n_answered;    /* await refs answered (result or error) */
    uint64_t done;        /* segments received */
    float *out;           /* [length, out_cols] once the first output came */
    uint32_t out_cols;    /* output width */
    ss_await_result *fin; /* the last segment's result (final states) */
    bool failed;          /* a segment failed or could not be submitted */
    bool keep;            /* failed here (not on the server): leave its
                             results on the server, never collect them */
    bool settled;         /* all answered and written (or failed): collect */
    uint64_t fail_seg;    /* segment of the reason kept */
    char *reason;         /* why it failed (owned) */
} seq;

/* The whole run. */
typedef struct run {
    seq *seqs;            /* sequences, sorted by key */
    size_t n;             /* count */
    uint32_t input_size;  /* columns of every input (1 for token ids) */
    bool ids;             /* the inputs are token ids (ss_client_submit_*_ids) */
    uint64_t vocab;       /* --vocab: ids must be < vocab (0: only >= 0 checked) */
    uint32_t T;           /* --num-unroll */
    const char *out_dir;  /* --outputs */
    uint64_t total_steps; /* sum of lengths */
    uint64_t steps_done;  /* real steps received */
    uint64_t segs_total;  /* segments of all sequences */
    uint64_t segs_done;   /* segments accounted for (done, failed) */
    uint64_t segs_sent;   /* segments the server answered a submit for */
    ss_segment_ref *refs; /* segments to await, sequence by sequence */
    size_t *ref_seq;      /* per await ref: its sequence */
    bool *queued;         /* per segment of every sequence: submit succeeded */
    bool *refused;        /* per segment: the server refused it (status) */
    bool *answered;       /* per await ref: reported (done, failed, error) */
    bool *has_result;     /* per await ref: answered with a result (done or
                             failed), so there is a record to collect */
    bool *collected;      /* per await ref: gone from the server (collected
                             by us, or given up on with a warning) */
    uint64_t collect_errors; /* refs the server refused to collect */
    size_t *cur;          /* await refs of the current pass -> index in refs */
    ss_segment_ref *cur_refs; /* refs of the current await pass */
    ss_segment_pick *picks;   /* segments of the current submit pass */
    int status;           /* exit status so far */
    bool tty;             /* stderr is a terminal */
    int64_t t0;           /* start (ms) */
    int64_t last_draw;    /* last progress output (ms) */
    const char *phase;    /* "submit" or "await" */
    ss_cluster *cl;       /* the cluster (one connection per shard) */
    size_t *owner;        /* per sequence: shard index under the current topology */
    size_t *by_shard;     /* scratch: ref indices grouped by shard */
    size_t cur_off;       /* offset of the shard's refs in cur (callbacks) */
    bool moved;           /* a reply of this pass was MOVED */
    bool unavailable;     /* a reply of this pass was UNAVAILABLE */
    bool unavail_final;   /* UNAVAILABLE with no move in progress (or past
                             --unavailable-retry-ms): a refusal like others */
} run;

/* Milliseconds of the monotonic clock. */
int64_t cli_submit_now_ms(void);

/* Read and check every *.npy of dir into r (sorted by key; lengths,
 * segment counts and totals filled; cli_submit_inputs.c). CLI exit status
 * (CLI_EXIT_USAGE after a message naming the file). */
int cli_submit_load_inputs(run *r, const char *dir);

/* A MOVED status, or an UNAVAILABLE one while a move is in progress: ask
 * the owner again, not a failure. */
bool cli_submit_is_reroute(const run *r, int rc);
/* A transport error (the connection, not the server, failed). */
bool cli_submit_is_transport(int rc);
/* Replace the lost connection to shard `shard` (refresh, reconnect with
 * backoff for up to retry_ms): CLI_EXIT_OK or the exit status (printed). */
int cli_submit_reconnect(const cli_ctx *ctx, run *r, size_t shard, uint64_t retry_ms,
                         const char *why);
/* Every sequence's owner (r->owner) under the current topology. */
void cli_submit_route_seqs(run *r, const ss_sequence_in *ins);
/* After a pass with MOVED/UNAVAILABLE replies: bounded refresh and pause
 * (UNAVAILABLE with no shard frozen, or for longer than the window, turns
 * into a refusal on the next pass); CLI_EXIT_OK to try again. */
int cli_submit_reroute(const cli_ctx *ctx, run *r, unsigned *moved_passes,
                       int64_t *unavail_since);
/* Order the n refs of r->cur / r->cur_refs by owner shard; starts[sh] ..
 * starts[sh + 1] are shard sh's (ss_cluster_shards + 1 entries). */
void cli_submit_group_refs(run *r, size_t n, size_t *starts);

#endif
