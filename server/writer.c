/* writer -- the single LMDB writer thread with group commit.
 *
 * The loop thread appends ops to `queue` (mutex + condvar). The thread
 * takes up to SS_WRITER_GROUP_MAX of them, runs each in a nested
 * transaction of one write transaction, commits once, moves the group to
 * `done` and wakes the loop with uv_async_send. The async callback runs the
 * done callbacks in submission order. Stop sets a flag; the thread drains
 * the queue and exits; the async callback then joins it and closes the
 * handle, whose close callback frees the writer and calls stopped().
 */
#include "writer.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ss_error.h"
#include "ss_log.h"

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
};

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* Run one group: every op in its own nested transaction, one commit. */
static void run_group(ss_writer *w, ss_write_op *group, size_t n)
{
    ss_store_txn *txn = NULL;
    char msg[SS_STORE_MSG] = "";
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
    uint64_t t0 = mono_ns();
    rc = ss_store_txn_commit(txn, msg);
    uint64_t dt = mono_ns() - t0;
    if (rc < 0) {
        /* Nothing of the group is stored: every op that had succeeded
         * gets the commit's error (failed ones keep their own). */
        SS_LOG(SS_LOG_ERROR, "writer: commit of %zu ops failed: %s", n, msg);
        for (ss_write_op *op = group; op; op = op->next) {
            if (op->rc == 0) {
                op->rc = rc == SS_ERR_FULL ? SS_ERR_FULL : SS_ERR_STORE;
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

static void *writer_main(void *arg)
{
    ss_writer *w = arg;
    pthread_mutex_lock(&w->mu);
    for (;;) {
        while (!w->q_head && !w->stopping)
            pthread_cond_wait(&w->cv, &w->mu);
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

        run_group(w, group, n);

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
    *out = NULL;
    ss_writer *w = calloc(1, sizeof *w);
    if (!w)
        return SS_ERR_NOMEM;
    w->st = st;
    w->loop = loop;
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv, NULL);
    int rc = uv_async_init(loop, &w->async, on_async);
    if (rc != 0) {
        SS_LOG(SS_LOG_ERROR, "writer: uv_async_init: %s", uv_strerror(rc));
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
