/* writer -- the single LMDB writer thread with group commit.
 *
 * The loop thread appends ops to `queue` (mutex + condvar). The thread
 * takes up to SS_WRITER_GROUP_MAX of them, runs each in a nested
 * transaction of one write transaction, commits once, moves the group to
 * `done` and wakes the loop with uv_async_send. The async callback runs the
 * done callbacks in submission order. Stop sets a flag; the thread drains
 * the queue and exits; the async callback then joins it and closes the
 * handle, whose close callback frees the writer and calls stopped().
 *
 * With a write-ahead log (ss_writer_start_wal) a group's ops are appended
 * to the log and made durable before its LMDB commit (unsynced), and the
 * thread also wakes for the periodic log sync (--sync off) and for
 * checkpoints (writer_wal.c would be its own module past ~1,000 lines).
 */
#include "writer.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ss_error.h"
#include "ss_log.h"
#include "ss_parse.h"
#include "wal_records.h"

/* Largest SS_WRITER_DELAY_MS accepted (a test hook, not a setting). */
#define SS_WRITER_DELAY_MS_MAX 10000u

struct ss_writer {
    ss_store *st;              /* the store written to */
    uv_loop_t *loop;           /* where done callbacks run */
    uv_async_t async;          /* wakes the loop when ops are done */
    pthread_t thread;          /* the writer thread */
    pthread_mutex_t mu;        /* guards everything below */
    pthread_cond_t cv;         /* signalled on submit and stop */
    ss_write_op *q_head;       /* submitted, not yet taken */
    ss_write_op *q_tail;       /* last submitted */
    ss_write_op *d_head;       /* finished, done not yet called */
    ss_write_op *d_tail;       /* last finished */
    bool stopping;             /* ss_writer_stop was called */
    bool exited;               /* the thread has returned */
    bool closing;              /* uv_close was called on async */
    ss_writer_stats stats;     /* counters */
    ss_writer_observer_fn observer; /* told about each commit, or NULL */
    void *observer_arg;        /* its argument */
    void (*stopped)(void *);   /* called once w is gone */
    void *stopped_arg;         /* its argument */
    ss_writer_wal wal;         /* log options; wal.wal NULL = no log */
    char wal_failed[SS_STORE_MSG]; /* why the log failed ("" = it has not);
                                      written by the thread under mu */
    bool unsynced;             /* --sync off: log bytes not yet synced */
    unsigned delay_ms;         /* test hook SS_WRITER_DELAY_MS: pause before
                                  each group (0 = none) */
    uint64_t last_sync_ns;     /* when the log was last synced */
    uint64_t last_ckpt_ns;     /* when the last checkpoint was made */
    bool ckpt_now;             /* a write found the map full: checkpoint at
                                  once, so the pinned snapshot no longer
                                  holds freed pages (store_ckpt.c) */
};

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* The log failed (or an LMDB commit failed after the log had the group):
 * remember why, for good. Writer thread. */
static void wal_fail(ss_writer *w, const char *why)
{
    pthread_mutex_lock(&w->mu);
    if (!w->wal_failed[0])
        snprintf(w->wal_failed, SS_STORE_MSG,
                 "write-ahead log failed: %.180s; restart required", why);
    w->stats.wal_failed = true;
    pthread_mutex_unlock(&w->mu);
    SS_LOG(SS_LOG_ERROR, "writer: write-ahead log failed: %s; every write is "
           "refused with UNAVAILABLE until the server is restarted", why);
}

static void group_fail(ss_write_op *group, int rc, const char *msg)
{
    for (ss_write_op *op = group; op; op = op->next) {
        op->rc = rc;
        snprintf(op->msg, SS_STORE_MSG, "%s", msg);
    }
}

/* Append the ops of txn to the log as OPS records (FIRST on the first,
 * LAST on the last); *last gets the LSN of the last one. */
static int wal_append_group(ss_writer *w, ss_store_txn *txn, uint64_t *last,
                            char *why, size_t whysz)
{
    const uint8_t *ops;
    size_t len, n_ops;
    ss_store_txn_log(txn, &ops, &len, &n_ops);
    size_t pos = 0;
    unsigned flags = SS_WALREC_FIRST;
    uint64_t recs = 0;
    while (pos < len) {
        size_t end = pos, n = 0;
        while (end < len) {
            size_t sz = ss_walrec_op_size(ops + end, len - end);
            if (sz == 0) {
                snprintf(why, whysz, "malformed op in the log buffer");
                return SS_ERR_INTERNAL;
            }
            if (n > 0 && end - pos + sz > SS_WRITER_RECORD_BYTES)
                break;
            end += sz;
            n++;
        }
        if (end == len)
            flags |= SS_WALREC_LAST;
        uint8_t hdr[SS_WALREC_HDR];
        ss_walrec_put_hdr(hdr, flags, (uint32_t)n);
        struct iovec iov[2] = {{hdr, sizeof hdr},
                               {(void *)(uintptr_t)(ops + pos), end - pos}};
        int rc = ss_wal_appendv(w->wal.wal, SS_WALREC_OPS, iov, 2, last);
        if (rc < 0) {
            const char *f = ss_wal_failed(w->wal.wal);
            snprintf(why, whysz, "append: %s", f ? f : ss_strerror(rc));
            return rc;
        }
        recs++;
        flags = 0;
        pos = end;
    }
    pthread_mutex_lock(&w->mu);
    w->stats.wal_records += recs;
    w->stats.wal_bytes += len + recs * SS_WALREC_HDR;
    pthread_mutex_unlock(&w->mu);
    return 0;
}

/* Make the log durable (sync on) or written (sync off). */
static int wal_make_durable(ss_writer *w, char *why, size_t whysz)
{
    int rc = w->wal.sync ? ss_wal_sync(w->wal.wal) : ss_wal_flush(w->wal.wal);
    if (rc < 0) {
        const char *f = ss_wal_failed(w->wal.wal);
        snprintf(why, whysz, "%s: %s", w->wal.sync ? "sync" : "write",
                 f ? f : ss_strerror(rc));
        return rc;
    }
    if (w->wal.sync)
        w->last_sync_ns = mono_ns();
    else
        w->unsynced = true;
    return 0;
}

/* Run one group: every op in its own nested transaction, one commit. */
static void run_group(ss_writer *w, ss_write_op *group, size_t n)
{
    ss_store_txn *txn = NULL;
    char msg[SS_STORE_MSG] = "";
    char failed[SS_STORE_MSG];
    if (w->wal.wal) {
        pthread_mutex_lock(&w->mu);
        memcpy(failed, w->wal_failed, SS_STORE_MSG);
        pthread_mutex_unlock(&w->mu);
        if (failed[0]) {
            group_fail(group, SS_WRITER_ERR_WAL, failed);
            return;
        }
    }
    uint64_t txnid = ss_store_last_txnid(w->st);
    int rc = ss_store_txn_begin(w->st, &txn, msg);
    if (rc < 0) {
        for (ss_write_op *op = group; op; op = op->next) {
            op->rc = rc;
            memcpy(op->msg, msg, SS_STORE_MSG);
        }
        SS_LOG(SS_LOG_ERROR, "writer: %s", msg);
        return;
    }
    for (ss_write_op *op = group; op; op = op->next) {
        op->msg[0] = '\0';
        op->rc = ss_store_txn_child_begin(txn, op->msg);
        if (op->rc < 0)
            continue;
        op->rc = op->run(op, txn, op->msg);
        if (op->rc > 0)
            op->rc = SS_ERR_INTERNAL; /* contract: 0 or negative */
        char m2[SS_STORE_MSG];
        int crc = ss_store_txn_child_end(txn, op->rc == 0, m2);
        if (op->rc == 0 && crc < 0) {
            op->rc = crc;
            memcpy(op->msg, m2, SS_STORE_MSG);
        }
        if (op->rc != 0 && !op->msg[0])
            snprintf(op->msg, SS_STORE_MSG, "%s", ss_strerror(op->rc));
    }
    for (ss_write_op *op = group; op; op = op->next)
        if (op->rc == SS_ERR_FULL)
            w->ckpt_now = true;
    uint64_t t0 = mono_ns();
    bool logged = false;
    if (w->wal.wal) {
        const uint8_t *ops;
        size_t len, n_ops;
        ss_store_txn_log(txn, &ops, &len, &n_ops);
        if (n_ops > 0) {
            /* Log first, then the applied LSN in the same LMDB
             * transaction, then durable, then commit (docs/wal.md). */
            char why[SS_STORE_MSG] = "";
            uint64_t lsn = 0;
            rc = wal_append_group(w, txn, &lsn, why, sizeof why);
            if (rc == 0) {
                rc = ss_store_txn_set_applied(txn, lsn, msg);
                if (rc < 0)
                    snprintf(why, sizeof why, "%s", msg);
            }
            if (rc == 0)
                rc = wal_make_durable(w, why, sizeof why);
            if (rc < 0) {
                ss_store_txn_abort(txn);
                wal_fail(w, why);
                pthread_mutex_lock(&w->mu);
                memcpy(failed, w->wal_failed, SS_STORE_MSG);
                pthread_mutex_unlock(&w->mu);
                /* Every op of the group: none of it is stored. */
                group_fail(group, SS_WRITER_ERR_WAL, failed);
                return;
            }
            logged = true;
            pthread_mutex_lock(&w->mu);
            w->stats.applied_lsn = lsn;
            pthread_mutex_unlock(&w->mu);
        }
    }
    rc = ss_store_txn_commit(txn, msg);
    uint64_t dt = mono_ns() - t0;
    if (rc < 0) {
        /* Nothing of the group is stored: every op that had succeeded
         * gets the commit's error (failed ones keep their own). */
        SS_LOG(SS_LOG_ERROR, "writer: commit of %zu ops failed: %s", n, msg);
        if (logged) {
            /* The log holds the group (replayed at the next start) but
             * LMDB does not: serving on would show reads without it. */
            char why[SS_STORE_MSG];
            snprintf(why, sizeof why, "LMDB commit after the log: %.200s", msg);
            wal_fail(w, why);
        }
        for (ss_write_op *op = group; op; op = op->next) {
            if (op->rc == 0) {
                if (logged) {
                    op->rc = SS_WRITER_ERR_WAL;
                    pthread_mutex_lock(&w->mu);
                    memcpy(op->msg, w->wal_failed, SS_STORE_MSG);
                    pthread_mutex_unlock(&w->mu);
                    continue;
                }
                op->rc = rc == SS_ERR_FULL ? SS_ERR_FULL : SS_ERR_STORE;
                if (rc == SS_ERR_FULL)
                    w->ckpt_now = true;
                memcpy(op->msg, msg, SS_STORE_MSG);
            }
        }
        return;
    }
    /* A group that changed nothing (an idle eviction sweep, failed ops)
     * commits as a no-op in LMDB: no page, no meta, no sync. */
    bool wrote = ss_store_last_txnid(w->st) != txnid;
    pthread_mutex_lock(&w->mu);
    w->stats.ops += n;
    if (!wrote) {
        w->stats.empty++;
        pthread_mutex_unlock(&w->mu);
        return;
    }
    w->stats.commits++;
    if (n > w->stats.max_batch)
        w->stats.max_batch = n;
    w->stats.commit_ns += dt;
    ss_writer_observer_fn observer = w->observer;
    void *observer_arg = w->observer_arg;
    pthread_mutex_unlock(&w->mu);
    if (observer)
        observer(observer_arg, n, dt);
}

/* --sync off: sync the log once the interval has passed (or force). */
static void wal_periodic_sync(ss_writer *w, bool force)
{
    if (!w->wal.wal || !w->unsynced || w->wal_failed[0])
        return;
    uint64_t now = mono_ns();
    if (!force && now - w->last_sync_ns < w->wal.sync_interval_ms * 1000000ull)
        return;
    int rc = ss_wal_sync(w->wal.wal);
    w->last_sync_ns = now;
    w->unsynced = false;
    if (rc < 0) {
        const char *f = ss_wal_failed(w->wal.wal);
        char why[SS_STORE_MSG];
        snprintf(why, sizeof why, "periodic sync: %s", f ? f : ss_strerror(rc));
        wal_fail(w, why);
    }
}

/* Checkpoint when due (or force): LMDB synced, then the log before the
 * applied LSN recycled; the first one sets the log's marker. */
static void wal_checkpoint(ss_writer *w, bool force)
{
    if (!w->wal.wal || w->wal_failed[0])
        return;
    pthread_mutex_lock(&w->mu);
    uint64_t applied = w->stats.applied_lsn;
    uint64_t ckpt = w->stats.checkpoint_lsn;
    pthread_mutex_unlock(&w->mu);
    uint64_t now = mono_ns();
    if (applied <= ckpt && (ss_wal_marker(w->wal.wal) != 0 || applied == 0)) {
        w->last_ckpt_ns = now; /* nothing new: the next one is due later */
        return;
    }
    bool due = ss_wal_bytes_since(w->wal.wal, ckpt) >= w->wal.checkpoint_bytes ||
               now - w->last_ckpt_ns >= w->wal.checkpoint_interval_ms * 1000000ull;
    if (!force && !due && !w->ckpt_now && !ss_store_checkpoint_wanted(w->st))
        return;
    w->ckpt_now = false;
    char msg[SS_STORE_MSG];
    int rc = ss_store_checkpoint(w->st, true, msg);
    if (rc < 0) {
        char why[SS_STORE_MSG];
        snprintf(why, sizeof why, "checkpoint: %.200s", msg);
        wal_fail(w, why);
        return;
    }
    rc = ss_wal_checkpoint(w->wal.wal, applied);
    if (rc == 0 && ss_wal_marker(w->wal.wal) == 0)
        rc = ss_wal_set_marker(w->wal.wal, applied);
    if (rc < 0) {
        const char *f = ss_wal_failed(w->wal.wal);
        char why[SS_STORE_MSG];
        snprintf(why, sizeof why, "checkpoint of the log: %s",
                 f ? f : ss_strerror(rc));
        wal_fail(w, why);
        return;
    }
    w->last_ckpt_ns = now;
    /* The next segment ready before the write path needs it. */
    if (ss_wal_preallocate(w->wal.wal) < 0)
        SS_LOG(SS_LOG_WARN, "writer: preallocating the next log segment failed");
    pthread_mutex_lock(&w->mu);
    w->stats.checkpoints++;
    w->stats.checkpoint_lsn = applied;
    pthread_mutex_unlock(&w->mu);
    SS_LOG(SS_LOG_DEBUG, "writer: checkpoint at LSN %llu",
           (unsigned long long)applied);
}

/* How long the thread may sleep before log work is due (ns; 0 = none). */
static uint64_t wal_wait_ns(ss_writer *w)
{
    if (!w->wal.wal || w->wal_failed[0])
        return 0;
    uint64_t now = mono_ns();
    uint64_t next = w->last_ckpt_ns + w->wal.checkpoint_interval_ms * 1000000ull;
    if (w->unsynced) {
        uint64_t s = w->last_sync_ns + w->wal.sync_interval_ms * 1000000ull;
        if (s < next)
            next = s;
    }
    /* At least 1 ms: work that came due is done before the next wait. */
    return next > now + 1000000ull ? next - now : 1000000ull;
}

static void *writer_main(void *arg)
{
    ss_writer *w = arg;
    pthread_mutex_lock(&w->mu);
    for (;;) {
        while (!w->q_head && !w->stopping) {
            uint64_t wait = wal_wait_ns(w);
            if (wait == 0) {
                pthread_cond_wait(&w->cv, &w->mu);
                continue;
            }
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            uint64_t at = (uint64_t)ts.tv_nsec + wait;
            ts.tv_sec += (time_t)(at / 1000000000ull);
            ts.tv_nsec = (long)(at % 1000000000ull);
            pthread_cond_timedwait(&w->cv, &w->mu, &ts);
            if (!w->q_head) {
                pthread_mutex_unlock(&w->mu);
                wal_periodic_sync(w, false);
                wal_checkpoint(w, false);
                pthread_mutex_lock(&w->mu);
            }
        }
        if (!w->q_head)
            break; /* stopping and drained */
        ss_write_op *group = w->q_head, *last = group;
        size_t n = 1;
        while (last->next && n < SS_WRITER_GROUP_MAX) {
            last = last->next;
            n++;
        }
        w->q_head = last->next;
        if (!w->q_head)
            w->q_tail = NULL;
        last->next = NULL;
        pthread_mutex_unlock(&w->mu);

        if (w->delay_ms) {
            /* Test hook: hold the group in flight (a Cancel racing a
             * Complete, tests/client/test_cli_cancel.py). */
            struct timespec d = {.tv_sec = w->delay_ms / 1000,
                                 .tv_nsec = (long)(w->delay_ms % 1000) * 1000000L};
            nanosleep(&d, NULL);
        }
        run_group(w, group, n);
        wal_periodic_sync(w, false);
        wal_checkpoint(w, false);

        pthread_mutex_lock(&w->mu);
        if (w->d_tail)
            w->d_tail->next = group;
        else
            w->d_head = group;
        w->d_tail = last;
        pthread_mutex_unlock(&w->mu);
        uv_async_send(&w->async);
        pthread_mutex_lock(&w->mu);
    }
    pthread_mutex_unlock(&w->mu);
    /* Stopping: the log synced and a last checkpoint, so the next start
     * has nothing to replay. */
    wal_periodic_sync(w, true);
    wal_checkpoint(w, true);
    ss_wal_free(w->wal.wal);
    w->wal.wal = NULL;
    pthread_mutex_lock(&w->mu);
    w->exited = true;
    pthread_mutex_unlock(&w->mu);
    uv_async_send(&w->async);
    return NULL;
}

static void on_closed(uv_handle_t *h)
{
    ss_writer *w = h->data;
    void (*stopped)(void *) = w->stopped;
    void *arg = w->stopped_arg;
    pthread_cond_destroy(&w->cv);
    pthread_mutex_destroy(&w->mu);
    free(w);
    if (stopped)
        stopped(arg);
}

static void deliver(ss_write_op *op)
{
    while (op) {
        ss_write_op *next = op->next;
        op->next = NULL;
        op->done(op, op->rc, op->msg);
        op = next;
    }
}

static void on_async(uv_async_t *a)
{
    ss_writer *w = a->data;
    for (;;) {
        pthread_mutex_lock(&w->mu);
        ss_write_op *done = w->d_head;
        w->d_head = w->d_tail = NULL;
        bool exited = w->exited;
        ss_write_op *late = exited ? w->q_head : NULL;
        if (late)
            w->q_head = w->q_tail = NULL;
        pthread_mutex_unlock(&w->mu);
        if (!done && !late)
            break;
        deliver(done);
        /* Submitted after the thread drained and left: refuse. */
        for (ss_write_op *op = late; op; op = op->next) {
            op->rc = SS_ERR_CLOSED;
            snprintf(op->msg, SS_STORE_MSG, "server is shutting down");
        }
        deliver(late);
    }
    pthread_mutex_lock(&w->mu);
    bool finish = w->exited && !w->closing;
    if (finish)
        w->closing = true;
    pthread_mutex_unlock(&w->mu);
    if (finish) {
        pthread_join(w->thread, NULL);
        uv_close((uv_handle_t *)&w->async, on_closed);
    }
}

int ss_writer_start(ss_writer **out, ss_store *st, uv_loop_t *loop)
{
    return ss_writer_start_wal(out, st, loop, NULL);
}

int ss_writer_start_wal(ss_writer **out, ss_store *st, uv_loop_t *loop,
                        const ss_writer_wal *o)
{
    *out = NULL;
    ss_writer *w = calloc(1, sizeof *w);
    if (!w) {
        ss_wal_free(o ? o->wal : NULL);
        return SS_ERR_NOMEM;
    }
    w->st = st;
    if (o && o->wal) {
        w->wal = *o;
        if (!w->wal.checkpoint_bytes)
            w->wal.checkpoint_bytes = SS_CHECKPOINT_BYTES_DEFAULT;
        if (!w->wal.checkpoint_interval_ms)
            w->wal.checkpoint_interval_ms = SS_CHECKPOINT_INTERVAL_MS_DEFAULT;
        if (!w->wal.sync_interval_ms)
            w->wal.sync_interval_ms = SS_SYNC_INTERVAL_MS_DEFAULT;
        w->stats.applied_lsn = o->applied_lsn;
        w->stats.checkpoint_lsn = o->checkpoint_lsn;
        w->last_sync_ns = w->last_ckpt_ns = mono_ns();
    }
    w->loop = loop;
    const char *hook = getenv("SS_WRITER_DELAY_MS");
    uint64_t hv = 0;
    if (hook && *hook && ss_parse_u64(hook, 1, SS_WRITER_DELAY_MS_MAX, &hv) == 0) {
        w->delay_ms = (unsigned)hv;
        SS_LOG(SS_LOG_WARN, "writer: test hook SS_WRITER_DELAY_MS=%u armed: every write "
               "group waits that long before it runs", w->delay_ms);
    }
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv, NULL);
    int rc = uv_async_init(loop, &w->async, on_async);
    if (rc != 0) {
        SS_LOG(SS_LOG_ERROR, "writer: uv_async_init: %s", uv_strerror(rc));
        ss_wal_free(w->wal.wal);
        pthread_cond_destroy(&w->cv);
        pthread_mutex_destroy(&w->mu);
        free(w);
        return SS_ERR_IO;
    }
    w->async.data = w;
    rc = pthread_create(&w->thread, NULL, writer_main, w);
    if (rc != 0) {
        SS_LOG(SS_LOG_ERROR, "writer: pthread_create: %s", strerror(rc));
        /* No thread: close the handle; on_closed frees w. */
        ss_wal_free(w->wal.wal);
        w->wal.wal = NULL;
        w->exited = w->closing = true;
        uv_close((uv_handle_t *)&w->async, on_closed);
        return SS_ERR_IO;
    }
    *out = w;
    return 0;
}

void ss_writer_submit(ss_writer *w, ss_write_op *op)
{
    op->next = NULL;
    op->rc = 0;
    op->msg[0] = '\0';
    pthread_mutex_lock(&w->mu);
    bool closed = w->closing;
    if (!closed) {
        if (w->q_tail)
            w->q_tail->next = op;
        else
            w->q_head = op;
        w->q_tail = op;
        pthread_cond_signal(&w->cv);
    }
    bool exited = w->exited;
    pthread_mutex_unlock(&w->mu);
    if (closed) {
        /* The handle is closing: nothing will deliver later. */
        op->rc = SS_ERR_CLOSED;
        snprintf(op->msg, SS_STORE_MSG, "server is shutting down");
        op->done(op, op->rc, op->msg);
    } else if (exited) {
        uv_async_send(&w->async); /* on_async refuses it */
    }
}

void ss_writer_stop(ss_writer *w, void (*stopped)(void *arg), void *arg)
{
    if (!w) {
        if (stopped)
            stopped(arg);
        return;
    }
    pthread_mutex_lock(&w->mu);
    w->stopped = stopped;
    w->stopped_arg = arg;
    w->stopping = true;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

void ss_writer_stats_get(ss_writer *w, ss_writer_stats *out)
{
    pthread_mutex_lock(&w->mu);
    *out = w->stats;
    pthread_mutex_unlock(&w->mu);
}

void ss_writer_set_observer(ss_writer *w, ss_writer_observer_fn fn, void *arg)
{
    pthread_mutex_lock(&w->mu);
    w->observer = fn;
    w->observer_arg = arg;
    pthread_mutex_unlock(&w->mu);
}

void ss_writer_wal_failed(ss_writer *w, char msg[SS_STORE_MSG])
{
    pthread_mutex_lock(&w->mu);
    memcpy(msg, w->wal_failed, SS_STORE_MSG);
    pthread_mutex_unlock(&w->mu);
}
