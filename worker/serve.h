/* serve -- `statesaver-worker serve`: the lease loop. Declares the saver's
 * schema from the model, then leases ready segments, unrolls them in one
 * batch (grouped by segment length T) and completes them, until SIGTERM /
 * SIGINT (the current batch is finished and completed first) or
 * --max-batches. The worker keeps no state between leases: everything a
 * segment needs comes with its lease, so any number of workers on any
 * machines can share one queue. It reaches the server only through
 * libstatesaver.
 */
#ifndef SS_SERVE_H
#define SS_SERVE_H

/* Exit statuses of the command. */
#define SS_SERVE_EXIT_OK 0    /* stopped by a signal or --max-batches */
#define SS_SERVE_EXIT_FAIL 1  /* schema conflict, fatal server refusal */
#define SS_SERVE_EXIT_USAGE 2 /* bad flags or model file */

/* Defaults and limits of the flags. */
#define SS_SERVE_BATCH_DEFAULT 64u        /* --batch: segments per lease */
#define SS_SERVE_BATCH_MAX 4096u          /* the server's default --max-keys */
#define SS_SERVE_WAIT_MS_DEFAULT 1000u    /* --wait-ms: park on the server */
#define SS_SERVE_TIMEOUT_MS_DEFAULT 30000u /* --timeout-ms: per call */
#define SS_SERVE_LOG_EVERY_DEFAULT 100u   /* --log-every: batches per log line */
#define SS_SERVE_BACKOFF_MIN_MS 100u      /* reconnect backoff, first wait */
#define SS_SERVE_BACKOFF_MAX_MS 5000u     /* reconnect backoff, longest wait */
#define SS_SERVE_DEFAULT_SERVER "127.0.0.1:7450"

/* Entry point; argv[0] is "serve". Returns the process exit status. */
int ss_serve_main(int argc, char **argv);

#endif
