/* serve_int -- what the files of `statesaver-worker serve` share: the
 * parsed options, the worker's long-lived state, one lease's results and
 * timings. serve.c runs the lease loop; serve_opts.c parses the flags;
 * serve_compute.c unrolls a lease; serve_stats.c keeps --stats-json.
 * Internal to worker/ (not installed).
 */
#ifndef SS_SERVE_INT_H
#define SS_SERVE_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "model.h"
#include "serve_metrics.h"
#include "ss_backoff.h"
#include "statesaver_jobs.h"
#include "model_run.h"
#include "unroll.h"

/* Bytes of an error message buffer. */
#define SERVE_ERRSZ 1024
/* Longest error text sent with a failed item. */
#define SERVE_REASON_MAX 512
/* Most leases whose timings --stats-json keeps (later ones are counted,
 * not timed): 4 doubles each, 32 MiB at most. */
#define SERVE_STATS_SAMPLES_MAX 1000000u

/* Parsed command line. */
typedef struct serve_opts {
    const char *server;     /* --server HOST:PORT */
    const char *model;      /* --model */
    const char *saver;      /* --saver */
    const char *token_file; /* --token-file, or NULL */
    uint32_t batch;         /* --batch */
    uint32_t lease_ms;      /* --lease-ms, 0 = server default */
    uint32_t wait_ms;       /* --wait-ms */
    uint32_t min_batch;     /* --min-batch: wait to form a lease of this many */
    uint32_t max_delay_ms;  /* --max-delay-ms: ... for at most this long */
    uint32_t timeout_ms;    /* --timeout-ms */
    uint64_t ttl_ms;        /* --ttl-ms: idle_ttl of the declared saver */
    int threads;            /* --threads, 0 = default */
    ss_precision precision; /* --precision */
    uint64_t max_batches;   /* --max-batches, 0 = no limit */
    uint64_t log_every;     /* --log-every */
    const char *stats_json; /* --stats-json FILE, or NULL */
    const char *metrics_listen;    /* --metrics-listen HOST:PORT, or NULL */
    const char *metrics_port_file; /* --metrics-port-file FILE, or NULL */
    int metrics_port_fd;    /* --metrics-port-fd FD (a cluster worker's child
                               reports its port to the parent), -1 = none */
    const char *cluster;    /* --cluster ADDR,...: every shard (serve_cluster.c) */
    bool no_cluster;        /* --no-cluster: this --server only */
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
    ss_mrun *mr;            /* model workspace: embedding, unroll, head (reused) */
    char *token;            /* auth token (owned) or NULL */
    size_t token_len;       /* bytes of token */
    char name[128];         /* worker name for the server's logs */
    ss_client *c;           /* connection, NULL while disconnected */
    ss_backoff backoff;     /* waits between reconnects and refused leases */
    uint64_t lease_refusals; /* failed Lease calls since the last good one */
    uint64_t connect_failures; /* failed connects/declares since the last good one */
    uint64_t batches;       /* non-empty leases served */
    uint64_t segments;      /* segments completed (incl. failed items) */
    uint64_t failed_items;  /* items completed with an error */
    uint64_t log_segments;  /* segments at the last log line */
    int64_t log_t;          /* time of the last log line (ms) */
    lease_times lt;         /* --stats-json samples */
    int64_t t_start_us;     /* start of the lease loop (us) */
    ss_serve_metrics *metrics; /* --metrics-listen endpoint, or NULL */
} worker;

/* Per-item results of one lease. */
typedef struct results {
    ss_complete_item *items;  /* one per leased item */
    float **outputs;          /* per item [rows, output_size] (owned) */
    float **states;           /* per item: all new states back to back (owned) */
    const float ***sptr;      /* per item: pointers into states (owned arrays) */
    char (*why)[SERVE_REASON_MAX]; /* per item: error text, "" if none */
    size_t n;                 /* items */
} results;

/* One lease's timings (us, monotonic) for --stats-json. */
typedef struct lease_clock {
    int64_t lease;     /* Lease request sent */
    int64_t leased;    /* Lease reply in hand */
    int64_t computed;  /* unroll done, Complete about to be sent */
    int64_t sent;      /* Complete sent */
    int64_t blocked;   /* loop time spent blocked on the Complete's reply */
} lease_clock;

/* Parse the command line into o (defaults already set). Returns 0 to go
 * on, or sets *exit_now to the exit status (help, version, bad flags; the
 * message is printed) and returns SS_ERR_INVALID on a usage error. */
int ss_serve_parse_args(serve_opts *o, int argc, char **argv, int *exit_now);

/* serve_cluster.c: with --cluster, or a --server whose topology has
 * several shards, run one worker process per shard and return the exit
 * status (>= 0); -1 when there is one server to serve here. */
int ss_serve_cluster_main(const serve_opts *o, int argc, char **argv);

/* Compute every item of lease l into r (per-item errors in r->why).
 * Returns 0 or SS_ERR_NOMEM; r is released by ss_serve_results_free in
 * either case. */
int ss_serve_compute(worker *w, const ss_lease *l, results *r);
/* Free what r holds and zero it. */
void ss_serve_results_free(results *r);

/* Keep one lease's timings for --stats-json; done = reply in hand (us). */
void ss_serve_times_add(lease_times *t, const lease_clock *k, int64_t done, size_t items);
/* Free the samples. */
void ss_serve_times_free(lease_times *t);
/* Write --stats-json (w->o.stats_json) for a run of `seconds`; 0 or a
 * negative code (message logged). */
int ss_serve_write_stats(worker *w, double seconds);
/* Write o as JSON text to path atomically (--stats-json files); 0 or a
 * negative code (message logged). */
struct cJSON;
int ss_serve_write_json(const char *path, const struct cJSON *o);

#endif
