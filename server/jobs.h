/* jobs -- the job queue: the networked SequenceQueueingStateSaver.
 *
 * Clients Submit segments of sequences; workers Lease ready segments (one
 * per sequence, segment == the sequence's next_segment, oldest sequence
 * first) together with the current state, and Complete them, which saves
 * the new state (compare-and-set) and stores the outputs in one writer
 * transaction; clients Await the outputs. Semantics: docs/jobs.md.
 *
 * Threads: everything here runs on the loop thread. Durable changes go to
 * the writer thread as ops (writer.h); a reply that reports a change is
 * delivered only after its commit. Lease state lives only in memory.
 *
 * Replies: every request function takes a reply callback. It is called
 * exactly once per request (maybe before the function returns, maybe much
 * later for parked requests) with a Response whose status and body are
 * set; the Response and everything it points to are valid only during the
 * call, so the callee must serialize it there (and set Response.id). The
 * callback returns 0 when the reply was handed to the client, or a
 * negative code when the client is gone: for a Lease the segments are then
 * returned to the queue at once, without counting an attempt. Callbacks
 * must not call ss_jobs_close.
 *
 * Request messages are borrowed only during the call and are not touched
 * after the reply callback ran (a server may free the request there);
 * jobs copies what it keeps.
 */
#ifndef SS_JOBS_H
#define SS_JOBS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "statesaver.pb-c.h"
#include "store.h"
#include "writer.h"

/* Defaults of the queue's limits (each has a server flag). */
#define SS_JOBS_QUEUE_CAPACITY_DEFAULT 100000u /* --queue-capacity: queued + leased segments */
#define SS_JOBS_MAX_ATTEMPTS_DEFAULT 3u        /* --max-attempts: the poison limit */
#define SS_JOBS_LEASE_MS_DEFAULT 30000u        /* --lease-ms: lease when LeaseRequest.lease_ms = 0 */
#define SS_JOBS_LEASE_MS_MAX 3600000u          /* cap on any lease_ms (fixed) */
#define SS_JOBS_MAX_BATCH_DEFAULT 4096u        /* cap on max_batch (the server passes --max-keys) */
#define SS_JOBS_REPLY_BYTES_DEFAULT (32u * 1024u * 1024u) /* payload budget of one Lease reply */
#define SS_JOBS_STEPS_MAX 1000000u             /* rows of a segment's inputs (fixed) */
#define SS_JOBS_NAMED_MAX 64u     /* named sequences (and context tensors) per Submit (fixed) */
#define SS_JOBS_NAME_MAX 255u     /* bytes of a sequence, context or state name (fixed) */
/* Bytes of a frame kept free beyond a reply's packed size (the frame
 * header and the server's own margin when it checks a reply). */
#define SS_JOBS_FRAME_MARGIN 64u
/* With max_frame_bytes = 0 the frame limit is taken as max_reply_bytes
 * plus this (how the server derives max_reply_bytes from the limit). */
#define SS_JOBS_FRAME_FROM_REPLY (64u * 1024u)

typedef struct ss_jobs ss_jobs; /* opaque: index, leases, timers */

/* Called after a Complete commits, with the keys of one saver whose state
 * was saved (so barrier waiters can be re-checked). Borrowed arguments. */
typedef void (*ss_jobs_saved_fn)(void *arg, const char *saver, size_t n,
                                 const ss_bytes *keys);

typedef struct ss_jobs_options {
    uint64_t queue_capacity;   /* queued + leased + being-submitted segments */
    uint32_t max_attempts;     /* failed/expired attempts before FAILED (>= 1) */
    uint32_t lease_ms;         /* default lease duration */
    uint32_t max_batch;        /* cap on LeaseRequest.max_batch */
    size_t max_key_bytes;      /* longest sequence key */
    size_t max_reply_bytes;    /* tensor bytes budget of one Lease reply */
    size_t max_frame_bytes;    /* frame limit (--max-frame-bytes) a Lease reply
                                  must fit: Submit refuses segments that could
                                  not, Lease fails those that cannot; 0 =
                                  max_reply_bytes + SS_JOBS_FRAME_FROM_REPLY */
    ss_jobs_saved_fn on_saved; /* may be NULL */
    void *on_saved_arg;        /* passed to on_saved */
} ss_jobs_options;

/* Fill opt with the defaults above. */
void ss_jobs_options_default(ss_jobs_options *opt);

/* Reply callback (see the top of this file). */
typedef int (*ss_jobs_reply_fn)(void *arg, Statesaver__V1__Response *resp);

/* Create the queue's `jobs` database in the store's environment. Call once
 * after ss_store_open and before ss_writer_start (store.h: a database is
 * created with a write transaction of its own only while no writer runs).
 * On error fills msg and returns a negative code. */
int ss_jobs_prepare(ss_store *st, char msg[SS_STORE_MSG]);

/* Open the queue on an open store and a started writer (both must outlive
 * jobs): opens the `jobs` database made by ss_jobs_prepare (with a read
 * transaction; if it is missing, it is created as before, with a warning:
 * that fallback goes once every caller prepares), rebuilds the index from it (every
 * persisted job is queued, done or failed; leases are not persisted), and
 * starts the lease timer on loop. Call before the server accepts
 * connections. On error fills msg and returns a negative code. */
int ss_jobs_open(ss_jobs **out, ss_store *st, ss_writer *w, uv_loop_t *loop,
                 const ss_jobs_options *opt, char msg[SS_STORE_MSG]);

void ss_jobs_submit(ss_jobs *j, const Statesaver__V1__SubmitRequest *req,
                    ss_jobs_reply_fn cb, void *arg);
void ss_jobs_lease(ss_jobs *j, const Statesaver__V1__LeaseRequest *req,
                   ss_jobs_reply_fn cb, void *arg);
void ss_jobs_complete(ss_jobs *j, const Statesaver__V1__CompleteRequest *req,
                      ss_jobs_reply_fn cb, void *arg);
void ss_jobs_await(ss_jobs *j, const Statesaver__V1__AwaitRequest *req,
                   ss_jobs_reply_fn cb, void *arg);

/* Cancel sequences (docs/training.md): one writer transaction deletes each
 * key's job records (queued, leased, done, failed), its context and its
 * state; queue slots are freed at the commit; a leased segment's later
 * Complete gets FAILED_PRECONDITION naming it. UNAVAILABLE (retry) while
 * another write of one of the keys' segments is in flight. */
void ss_jobs_cancel_seqs(ss_jobs *j, const Statesaver__V1__CancelRequest *req,
                         ss_jobs_reply_fn cb, void *arg);

/* The queue's side of a Drop: delete the job records (and contexts) of
 * these keys, or of every sequence of the saver with all. Queued as a
 * writer op before the Drop's own (call it just before submitting the
 * Drop); jobs with a write in flight are left alone. No reply. */
void ss_jobs_forget(ss_jobs *j, const char *saver, size_t n, const ss_bytes *keys, bool all);

/* The client of a parked Lease or Await (the one whose reply argument is
 * arg) went away: answer it now with CANCELLED (the reply is dropped by the
 * caller) instead of at its wait's end. Returns true if such a parked
 * request was found; false when none is parked with arg (answered already,
 * or never parked). */
bool ss_jobs_cancel(ss_jobs *j, void *arg);

/* Tell the queue that the state of these keys changed outside it (Save,
 * Drop, idle eviction), after the change committed: their cached
 * next_segment is re-read, which may make segments ready. */
void ss_jobs_notify_saved(ss_jobs *j, const char *saver, size_t n, const ss_bytes *keys);

typedef struct ss_jobs_stats {
    uint64_t queued;         /* segments waiting (incl. being submitted) */
    uint64_t leased;         /* segments under a live lease */
    uint64_t completed;      /* segments completed since start (counter) */
    uint64_t failed;         /* segments marked failed since start (counter) */
    uint64_t expired_leases; /* leases that passed their deadline (counter) */
    uint64_t saves_applied;  /* state saves applied by Complete (counter) */
    uint64_t done_stored;    /* done/failed records not yet collected */
    uint64_t waiting;        /* parked Lease and Await requests */
} ss_jobs_stats;

/* Counters of the whole queue (saver NULL or "") or of one saver. */
void ss_jobs_stats_get(ss_jobs *j, const char *saver, ss_jobs_stats *out);

/* Test seam (tests only; the server never calls it): make failures that
 * are hard to cause for real happen on demand, to test the error paths.
 * faults is a mask of SS_JOBS_FAULT_*; 0 turns them off. Checked once per
 * writer op (at its creation) and once per state read of a Lease. */
#define SS_JOBS_FAULT_WRITE 1u      /* writer ops fail with SS_ERR_FULL */
#define SS_JOBS_FAULT_STATE_READ 2u /* Lease's state reads fail (SS_ERR_STORE) */
void ss_jobs_test_fault(ss_jobs *j, unsigned faults);

/* Stop: parked requests get UNAVAILABLE, new requests get UNAVAILABLE,
 * timers stop. jobs frees itself once its timer is closed and every writer
 * op it submitted has come back, then calls closed(arg) (may be NULL) on
 * the loop thread. So stop the writer only after closed has run. Accepts
 * NULL (closed is then called at once). */
void ss_jobs_close(ss_jobs *j, void (*closed)(void *arg), void *arg);

#endif
