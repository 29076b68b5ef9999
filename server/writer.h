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
                               something (each one synced) */
    uint64_t ops;           /* ops run in groups that committed (written
                               or not) */
    uint64_t max_batch;     /* largest group so far */
    uint64_t commit_ns;     /* total time in mdb_txn_commit (fsync) */
    uint64_t empty;         /* groups that changed nothing: LMDB wrote and
                               synced nothing, not counted in commits */
} ss_writer_stats;

/* Start the thread. Completions are delivered on loop. The store must
 * stay open until stopped has been called. */
int ss_writer_start(ss_writer **out, ss_store *st, uv_loop_t *loop);
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
