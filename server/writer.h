/* writer -- the single LMDB writer thread with group commit.
 *
 * The event loop never waits on fsync. It queues write operations here;
 * the writer thread takes everything queued since its last commit, runs
 * each op in a nested transaction of one LMDB write transaction (an op that
 * fails is rolled back alone), commits once (durable when the store was
 * opened with sync), and only then hands each op's result back to the loop
 * thread, where its done callback runs. So a reply sent from `done` is sent
 * after the data is durable.
 */
#ifndef SS_WRITER_H
#define SS_WRITER_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "store.h"
#include "wal.h"

typedef struct ss_writer ss_writer; /* opaque: thread, queues, uv_async */

/* Most ops in one group commit (bounds a transaction's size and the
 * latency of the first op in it); the rest go into the next commit. */
#define SS_WRITER_GROUP_MAX 1024

typedef struct ss_write_op ss_write_op;
/* Runs on the writer thread inside txn. Return 0 or a negative code; on
 * error write a message into msg. Must not touch loop-owned data. */
typedef int (*ss_write_run_fn)(ss_write_op *op, ss_store_txn *txn,
                               char msg[SS_STORE_MSG]);
/* Runs on the loop thread after the commit (or its failure). rc is the
 * op's result, or the commit's error if the commit failed. The op is owned
 * by the caller again: free it here if it was allocated. */
typedef void (*ss_write_done_fn)(ss_write_op *op, int rc, const char *msg);

/* Embed this in a larger struct carrying the op's arguments and results. */
struct ss_write_op {
    ss_write_run_fn run;     /* writer-thread work */
    ss_write_done_fn done;   /* loop-thread completion */
    ss_write_op *next;       /* queue link, owned by the writer */
    int rc;                  /* result, set by the writer */
    char msg[SS_STORE_MSG];  /* error text, set by the writer */
};

typedef struct ss_writer_stats {
    uint64_t commits;       /* write transactions committed that wrote
                               something (each one synced, or with the log
                               each one's log records synced) */
    uint64_t ops;           /* ops run in groups that committed (written
                               or not) */
    uint64_t max_batch;     /* largest group so far */
    uint64_t commit_ns;     /* total time making groups durable: the log's
                               append and sync plus mdb_txn_commit */
    uint64_t empty;         /* groups that changed nothing: LMDB wrote and
                               synced nothing, not counted in commits */
    uint64_t wal_records;   /* log records appended */
    uint64_t wal_bytes;     /* log payload bytes appended */
    uint64_t checkpoints;   /* checkpoints made (LMDB synced, log recycled) */
    uint64_t applied_lsn;   /* LSN of the last group committed to LMDB */
    uint64_t checkpoint_lsn;/* LSN of the last checkpoint */
    bool wal_failed;        /* the log failed: writes refused until restart */
} ss_writer_stats;

/* Defaults of the log-related flags (server/config.c). */
#define SS_CHECKPOINT_BYTES_DEFAULT (256ull << 20) /* --checkpoint-bytes */
#define SS_CHECKPOINT_INTERVAL_MS_DEFAULT 30000u   /* --checkpoint-interval-ms */
#define SS_SYNC_INTERVAL_MS_DEFAULT 1000u          /* --sync-interval-ms */
/* Ops of one log record at most this many bytes (a larger op is one
 * record alone); a group is one or more records (wal_records.h). */
#define SS_WRITER_RECORD_BYTES (4u << 20)

/* The write-ahead log path (docs/wal.md). With a log, each group runs in
 * one LMDB transaction (env opened without sync), its ops are appended to
 * the log, the applied LSN is written in the same transaction, the log is
 * synced (sync) or flushed (sync off: synced every sync_interval_ms), the
 * transaction committed, and only then are the ops answered. A failed log
 * write or sync refuses every later write with UNAVAILABLE until restart
 * (never retried); reads are unaffected. Checkpoints (LMDB synced, older
 * log segments recycled) happen on the writer thread by log size and time,
 * and once at stop. */
typedef struct ss_writer_wal {
    ss_wal *wal;                 /* the opened (replayed) log; owned by the
                                    writer from ss_writer_start_wal on (also
                                    when it fails), freed when it stops */
    bool sync;                   /* --sync on: sync the log per group */
    uint64_t sync_interval_ms;   /* --sync off: sync the log this often */
    uint64_t checkpoint_bytes;   /* checkpoint after this much log */
    uint64_t checkpoint_interval_ms; /* ... or this long after the last one */
    uint64_t applied_lsn;        /* applied LSN of the store at start */
    uint64_t checkpoint_lsn;     /* LSN of the last checkpoint at start */
} ss_writer_wal;

/* The UNAVAILABLE status for writes after a log failure. */
#define SS_WRITER_ERR_WAL SS_ERR_STATUS(14)

/* Start the thread. Completions are delivered on loop. The store must
 * stay open until stopped has been called. */
int ss_writer_start(ss_writer **out, ss_store *st, uv_loop_t *loop);
/* The same with the write-ahead log (o NULL or o->wal NULL: without). */
int ss_writer_start_wal(ss_writer **out, ss_store *st, uv_loop_t *loop,
                        const ss_writer_wal *o);
/* Why the log failed ("" when it has not), copied into msg. Any thread. */
void ss_writer_wal_failed(ss_writer *w, char msg[SS_STORE_MSG]);
/* Queue op (loop thread). The op must stay alive until done runs. Ops are
 * run and their done callbacks called in submission order. An op submitted
 * after the thread has stopped gets done(op, SS_ERR_CLOSED, ...) -- called
 * directly from submit once the writer's handle is closing. */
void ss_writer_submit(ss_writer *w, ss_write_op *op);
/* Finish every queued op (their done callbacks run on the loop), stop the
 * thread, close the async handle; frees w from the close callback. Calls
 * stopped(arg) on the loop thread once w is gone. Does not block: the loop
 * must keep running until stopped is called. Accepts NULL (then stopped,
 * if any, is called at once). Call once. */
void ss_writer_stop(ss_writer *w, void (*stopped)(void *arg), void *arg);
void ss_writer_stats_get(ss_writer *w, ss_writer_stats *out);

/* Called on the writer thread after each successful group commit that
 * wrote something (not after an empty group, e.g. an idle sweep) with the
 * number of ops in it and the time spent in the commit (fsync), e.g. for
 * metrics. Must be quick and thread-safe. A call may still be running
 * when a replacement (NULL removes it) returns, so arg must stay valid
 * until the writer has stopped. */
typedef void (*ss_writer_observer_fn)(void *arg, size_t ops, uint64_t commit_ns);
void ss_writer_set_observer(ss_writer *w, ss_writer_observer_fn fn, void *arg);

#endif
