/* statesaver_jobs -- the job API of libstatesaver: Submit, Await (clients)
 * and Lease, Complete (workers). The networked SequenceQueueingStateSaver.
 *
 * Same rules as statesaver.h (included here): calls block until their
 * reply or the client's timeout (plus the call's wait_ms for calls the
 * server holds); errors are 0 or negative codes from ss_error.h, server
 * statuses come back as SS_ERR_STATUS(code) with the server's message in
 * ss_client_last_error(); one client per thread.
 *
 * Ownership: the library never keeps a caller pointer after a call
 * returns. Results (ss_await_result, ss_lease) belong to the caller, are
 * freed with their *_free() (which accepts NULL), and every pointer an
 * accessor returns stays valid until that result is freed. Results never
 * point into the client, so they may outlive it. float pointers returned
 * by accessors are suitably aligned.
 *
 * Semantics of the queue (readiness, attempts, the poison limit, lease
 * expiry) are the server's: see docs/jobs.md. Client-side use: docs/client.md.
 */
#ifndef STATESAVER_JOBS_H
#define STATESAVER_JOBS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "statesaver.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Requests kept in flight by the pipelined calls when the caller gives 0. */
#define SS_JOBS_WINDOW_DEFAULT 64u
/* Largest window accepted (requests in flight on one connection). */
#define SS_JOBS_WINDOW_MAX 4096u
/* Steps per segment accepted by ss_client_submit_sequence(s) (the server's
 * limit on a segment's rows). */
#define SS_JOBS_NUM_UNROLL_MAX 1000000u
/* How long the pipelined submit keeps retrying a segment the server
 * refused because its queue was full (RESOURCE_EXHAUSTED), in ms. */
#define SS_JOBS_FULL_RETRY_MS_DEFAULT 60000u

/* ---- submit ------------------------------------------------------------ */

/* Queue one segment: inputs is float32 [T, input_size], row-major; only the
 * first `length` rows are real (the rest padding, 0 <= length <= T); last
 * marks the final segment of the sequence. An identical resubmission is
 * not an error: *already_queued (may be NULL) is then true. */
int ss_client_submit(ss_client *c, const char *saver, const ss_key *key,
                     uint64_t segment, const float *inputs, uint32_t T,
                     uint32_t input_size, uint32_t length, bool last,
                     bool *already_queued);

/* A whole sequence to submit; all pointers borrowed for the call. */
typedef struct ss_sequence_in {
    ss_key key;          /* sequence key */
    const float *data;   /* float32 [length, input_size], row-major */
    uint64_t length;     /* steps, >= 1 */
} ss_sequence_in;

/* Segments a sequence of `length` steps is cut into: ceil(length / T). */
uint64_t ss_jobs_segments(uint64_t length, uint32_t num_unroll);

/* Called once per segment reply of ss_client_submit_sequences: rc is 0 or
 * the segment's error, message the server's (or a local) text, "" on
 * success; valid during the call only. May be NULL. */
typedef void (*ss_submit_fn)(void *arg, size_t seq_index, uint64_t segment,
                             int rc, const char *message);

/* Pipelining and retry knobs of the multi-request calls; zeroed = defaults. */
typedef struct ss_jobs_pipeline {
    uint32_t window;         /* requests in flight; 0 = SS_JOBS_WINDOW_DEFAULT */
    uint32_t full_retry_ms;  /* retry on RESOURCE_EXHAUSTED this long;
                                0 = SS_JOBS_FULL_RETRY_MS_DEFAULT */
} ss_jobs_pipeline;

/* Submit n whole sequences, each cut into segments of num_unroll steps
 * (segment s = rows [s*T, s*T+T)), the last one padded with zero rows to T
 * and sent with its real length and last = true (SQSS pad=True). Requests
 * are pipelined (up to pipe->window in flight, pipe may be NULL). A
 * segment refused because the queue is full is retried with backoff for
 * up to full_retry_ms. The arguments are checked before anything is sent.
 * Returns 0 when every segment was queued; else the first error (a
 * transport error stops the call; a refused segment does not stop the
 * others, and is reported through cb). After a transport error, replies
 * that had already arrived are still reported through cb before the call
 * returns; segments never reported may or may not be queued (resend them
 * with ss_client_submit_segments on a new connection). */
int ss_client_submit_sequences(ss_client *c, const char *saver,
                               const ss_sequence_in *seqs, size_t n,
                               uint32_t input_size, uint32_t num_unroll,
                               const ss_jobs_pipeline *pipe, ss_submit_fn cb,
                               void *arg);

/* One segment of ss_client_submit_segments: a sequence of the array and
 * one of its segment numbers. */
typedef struct ss_segment_pick {
    size_t seq;        /* index into the sequences array */
    uint64_t segment;  /* segment number, < ss_jobs_segments(length, T) */
} ss_segment_pick;

/* Like ss_client_submit_sequences, but only the n_picks segments listed
 * (cut, padded and flagged exactly as that call would), in list order.
 * Meant for resuming after a lost connection: a segment the server has
 * already queued is acknowledged again (already_queued), so a caller may
 * resend every segment it has no acknowledgement for. n_picks = 0 sends
 * nothing and returns 0. */
int ss_client_submit_segments(ss_client *c, const char *saver,
                              const ss_sequence_in *seqs, size_t n,
                              uint32_t input_size, uint32_t num_unroll,
                              const ss_segment_pick *picks, size_t n_picks,
                              const ss_jobs_pipeline *pipe, ss_submit_fn cb, void *arg);

/* One sequence (n = 1 of the call above, default pipeline, no callback;
 * the error message of a refused segment is in ss_client_last_error).
 * *n_segments (may be NULL) gets the number of segments submitted. */
int ss_client_submit_sequence(ss_client *c, const char *saver, const ss_key *key,
                              const float *data, uint64_t length,
                              uint32_t input_size, uint32_t num_unroll,
                              uint64_t *n_segments);

/* ---- submit: token ids ------------------------------------------------- */

/* The same calls for a model with an embedding, whose inputs are token ids
 * (docs/worker.md): each segment's inputs travel as an int64 tensor [T]
 * (the padding ids of the last segment are 0). The library does not check
 * the id values: the worker does (an id outside [0, vocab) fails that
 * segment naming the id). Everything else (segmentation, SQSS length and
 * sequence_count, pipelining, RESOURCE_EXHAUSTED retries, callbacks,
 * resuming with picks) is exactly that of the float32 calls above. */

/* Queue one segment of token ids [T]; only the first `length` are real. */
int ss_client_submit_ids(ss_client *c, const char *saver, const ss_key *key,
                         uint64_t segment, const int64_t *ids, uint32_t T, uint32_t length,
                         bool last, bool *already_queued);

/* A whole sequence of token ids to submit; all pointers borrowed for the
 * call (the library keeps none after it returns). */
typedef struct ss_sequence_ids {
    ss_key key;           /* sequence key */
    const int64_t *ids;   /* token ids [length] */
    uint64_t length;      /* steps, >= 1 */
} ss_sequence_ids;

/* ss_client_submit_sequences for token-id sequences. */
int ss_client_submit_sequences_ids(ss_client *c, const char *saver,
                                   const ss_sequence_ids *seqs, size_t n,
                                   uint32_t num_unroll, const ss_jobs_pipeline *pipe,
                                   ss_submit_fn cb, void *arg);

/* ss_client_submit_segments for token-id sequences. */
int ss_client_submit_segments_ids(ss_client *c, const char *saver,
                                  const ss_sequence_ids *seqs, size_t n, uint32_t num_unroll,
                                  const ss_segment_pick *picks, size_t n_picks,
                                  const ss_jobs_pipeline *pipe, ss_submit_fn cb, void *arg);

/* ---- await ------------------------------------------------------------- */

/* State of a segment as Await reports it (wire SegmentState values). */
enum ss_segment_state {
    SS_SEG_UNKNOWN = 0,
    SS_SEG_QUEUED = 1,
    SS_SEG_LEASED = 2,
    SS_SEG_DONE = 3,
    SS_SEG_FAILED = 4,
};

typedef struct ss_await_result ss_await_result; /* opaque: owns the reply */

/* Wait up to wait_ms for segment `segment` of key to be done or failed.
 * Returns 0 with *out set when it is (check ss_await_result_state: a
 * failed segment is a successful call); SS_ERR_STATUS(DEADLINE_EXCEEDED)
 * when it is still queued or leased after wait_ms;
 * SS_ERR_STATUS(NOT_FOUND) when no such job exists (never submitted, or
 * already collected). collect = true removes the stored result on the
 * server once it is returned. */
int ss_client_await(ss_client *c, const char *saver, const ss_key *key,
                    uint64_t segment, uint32_t wait_ms, bool collect,
                    ss_await_result **out);

int ss_await_result_state(const ss_await_result *r); /* enum ss_segment_state */
uint32_t ss_await_result_length(const ss_await_result *r); /* real rows */
bool ss_await_result_last(const ss_await_result *r);
uint32_t ss_await_result_attempts(const ss_await_result *r); /* failed tries */
/* Failure reason ("" unless failed). Never NULL. */
const char *ss_await_result_reason(const ss_await_result *r);
/* Outputs float32 [rows, cols] (rows = the segment's T; rows past
 * ss_await_result_length are padding, zeros); NULL unless done. */
const float *ss_await_result_outputs(const ss_await_result *r, uint32_t *rows,
                                     uint32_t *cols);
/* Final states (set for the last segment of a sequence; 0 otherwise). */
size_t ss_await_result_finals(const ss_await_result *r);
/* Name of final state i, NULL if out of range. */
const char *ss_await_result_final_name(const ss_await_result *r, size_t i);
/* Final state i: data (aligned for its dtype), dtype (enum ss_dtype),
 * per-sequence shape and byte count (each out pointer may be NULL). NULL
 * if out of range. */
const void *ss_await_result_final(const ss_await_result *r, size_t i, int *dtype,
                                  const int64_t **shape, size_t *rank,
                                  size_t *nbytes);
void ss_await_result_free(ss_await_result *r); /* accepts NULL */

/* One segment to await in ss_client_await_many (borrowed for the call). */
typedef struct ss_segment_ref {
    ss_key key;        /* sequence key */
    uint64_t segment;  /* segment number */
} ss_segment_ref;

/* Called once per ref of ss_client_await_many as its result arrives (in
 * any order): rc 0 with r the result (the callback takes ownership and
 * must ss_await_result_free it), or rc < 0 with r NULL and message the
 * reason. Return 0 to go on, non-zero to stop the call early. */
typedef int (*ss_await_fn)(void *arg, size_t index, int rc, ss_await_result *r,
                           const char *message);

/* Await n segments, pipelined (pipe->window requests in flight, parked on
 * the server up to wait_ms each). A segment still not done after wait_ms is
 * asked again, until it is done or failed or total_ms (0 = no limit) has
 * passed since the call began; then it is reported with
 * SS_ERR_STATUS(DEADLINE_EXCEEDED). Returns 0 when every ref was reported
 * (whatever its outcome), a transport error (the connection is then
 * unusable; replies that had already arrived are still reported before
 * the call returns, the other refs are not reported: await them again on
 * a new connection), or SS_ERR_INVALID if cb stopped the call. */
int ss_client_await_many(ss_client *c, const char *saver, const ss_segment_ref *refs,
                         size_t n, uint32_t wait_ms, uint64_t total_ms, bool collect,
                         const ss_jobs_pipeline *pipe, ss_await_fn cb, void *arg);

/* Called once per ref of ss_client_collect_many whose reply arrived: rc 0
 * when the segment is gone from the server (collected by this call, or
 * already collected before: NOT_FOUND), else its status error (e.g.
 * SS_ERR_STATUS(DEADLINE_EXCEEDED) for a segment not done yet, which is
 * left in place); message valid during the call only. */
typedef void (*ss_collect_fn)(void *arg, size_t index, int rc, const char *message);

/* Collect n done or failed segments whose results the caller already has
 * (awaited with collect = false and stored): Await with collect = true,
 * without_tensors = true (the server retires the outputs without sending
 * them again; a server older than that flag sends them and they are
 * dropped) and wait_ms 0, pipelined (pipe may be NULL). This is the
 * acknowledgement that makes the server delete a result only after the
 * client holds it, so a crash between the two loses nothing. A segment
 * already collected counts as collected, so the call may be repeated after
 * a lost connection. Returns 0 when every ref was reported through cb (may
 * be NULL), or a transport error (the refs whose replies had arrived are
 * still reported; repeat the others on a new connection). */
int ss_client_collect_many(ss_client *c, const char *saver, const ss_segment_ref *refs,
                           size_t n, const ss_jobs_pipeline *pipe, ss_collect_fn cb,
                           void *arg);

/* ---- cancel ------------------------------------------------------------ */

/* Cancel n_keys sequences of saver (n_keys >= 1, each key non-empty and
 * given once; keys and their bytes are borrowed for the call only): the
 * server removes each key's queued and leased segments, its stored
 * outputs (done or failed, not collected yet), its context and its state
 * in one transaction, and the queue slots are free when the call returns.
 * A later Complete of a cancelled lease item is refused with
 * SS_ERR_STATUS(FAILED_PRECONDITION). *cancelled (may be NULL) gets the
 * keys that had anything to remove (an unknown key counts 0, it is not an
 * error), *segments (may be NULL) the job records removed; both are 0 on
 * failure, when nothing was removed. Bad arguments are SS_ERR_INVALID
 * before anything is sent; an undeclared saver SS_ERR_STATUS(NOT_FOUND);
 * SS_ERR_STATUS(UNAVAILABLE) ("cancel again") while a write of one of the
 * keys' segments is in flight (a window of milliseconds: retry). On a
 * cluster: ss_cluster_cancel (statesaver.h). */
int ss_client_cancel(ss_client *c, const char *saver, const ss_key *keys, size_t n_keys,
                     uint64_t *cancelled, uint64_t *segments);

/* ---- lease and complete (workers) ----------------------------------------- */

typedef struct ss_lease ss_lease; /* opaque: owns the reply */

/* Lease up to max_batch ready segments of distinct sequences of saver,
 * parking on the server up to wait_ms when none is ready (an empty lease,
 * 0 items, is a normal outcome). lease_ms = 0 asks for the server's
 * default lease duration. worker (may be NULL) names the worker in the
 * server's logs and in failure reasons. */
int ss_client_lease(ss_client *c, const char *saver, uint32_t max_batch,
                    uint32_t wait_ms, uint32_t lease_ms, const char *worker,
                    ss_lease **out);

/* A Lease with batch formation (Triton's sequence batcher): with min_batch
 * > 1 and max_delay_ms > 0 the server waits up to max_delay_ms for at
 * least min_batch ready segments, then hands out what is ready (and with
 * nothing ready keeps waiting until wait_ms). min_batch > max_batch is
 * INVALID_ARGUMENT from the server. Fields as ss_client_lease's; worker is
 * borrowed for the call. */
typedef struct ss_lease_opts {
    uint32_t max_batch;    /* segments at most */
    uint32_t min_batch;    /* wait for this many (0 or 1: take what is ready) */
    uint32_t max_delay_ms; /* ... for at most this long */
    uint32_t wait_ms;      /* park this long when nothing is ready */
    uint32_t lease_ms;     /* lease duration, 0 = the server's default */
    const char *worker;    /* name in the server's logs, or NULL */
} ss_lease_opts;
int ss_client_lease_opts(ss_client *c, const char *saver, const ss_lease_opts *o,
                         ss_lease **out);

uint64_t ss_lease_id(const ss_lease *l);
uint64_t ss_lease_deadline_ms(const ss_lease *l); /* server clock, ms since epoch */
const char *ss_lease_saver(const ss_lease *l);    /* the saver leased from */
size_t ss_lease_items(const ss_lease *l);         /* segments leased */
size_t ss_lease_states(const ss_lease *l);        /* schema states */
/* Name of schema state s (schema order), NULL if out of range. */
const char *ss_lease_state_name(const ss_lease *l, size_t s);

/* One leased segment; pointers owned by the lease.
 *
 * A segment has float32 inputs (inputs set, ids NULL), token ids (ids
 * set, inputs NULL, cols 1), or no inputs at all: a trainer may submit
 * named sequences only (docs/training.md), which this API does not hand
 * out. Such an item has inputs and ids both NULL and cols 0; rows is still
 * its T (the named sequences' first dimension), length and the states are
 * as for any item. A worker that needs inputs completes it with an error
 * (statesaver-worker serve does); the other items of the lease are
 * unaffected. A lease whose item is inconsistent (inputs of another dtype
 * or shape, data not matching the shape, length > T, a state missing or
 * not float32) is refused whole with SS_ERR_PROTO. */
typedef struct ss_lease_item {
    ss_key key;            /* sequence key */
    uint64_t segment;      /* segment number (the sequence's next_segment) */
    uint32_t length;       /* real rows (rest padding) */
    bool last;             /* final segment of the sequence */
    uint32_t attempts;     /* earlier failed or expired attempts */
    const float *inputs;   /* float32 [rows, cols], or NULL (ids, or no inputs) */
    uint32_t rows;         /* T of this segment */
    uint32_t cols;         /* input_size the client sent (1 for ids, 0 for none) */
    const int64_t *ids;    /* token ids [rows] (sent as int32 or int64 [T], widened),
                            * or NULL (float32 inputs, or no inputs) */
} ss_lease_item;

/* Fill *out for item i; SS_ERR_INVALID if out of range. */
int ss_lease_item_get(const ss_lease *l, size_t i, ss_lease_item *out);
/* State s of item i (the sequence's current state): float32 data, element
 * count in *count (may be NULL). NULL if out of range. */
const float *ss_lease_item_state(const ss_lease *l, size_t i, size_t s,
                                 size_t *count);
void ss_lease_free(ss_lease *l); /* accepts NULL */

/* The result of one leased segment; pointers borrowed for the call. */
typedef struct ss_complete_item {
    size_t item;               /* index of the item in the lease */
    const float *outputs;      /* float32 [rows, out_cols] (rows = the item's) */
    uint32_t out_cols;         /* output width */
    const float *const *states; /* one per schema state, the new state, each
                                   with as many floats as the leased one */
    const char *error;         /* non-NULL and non-empty: this attempt failed
                                  with this reason (outputs/states ignored) */
} ss_complete_item;

/* Complete items of lease l in one transaction: saves the states, stores
 * the outputs, retires the segments (or records a failed attempt for
 * items with error). already_applied (NULL or n entries) reports items
 * this lease had already resolved. A lease that expired gives
 * SS_ERR_STATUS(FAILED_PRECONDITION). */
int ss_client_complete(ss_client *c, const ss_lease *l, const ss_complete_item *items,
                       size_t n, bool *already_applied);

/* ss_client_complete in two halves, so a worker can keep one Complete in
 * flight while it leases and computes the next batch (requests on one
 * connection are pipelined; replies are matched by id). _send packs and
 * sends the request (items are only read during the call) and sets *id;
 * _recv waits for that reply (the client's timeout) and fills
 * already_applied (NULL or n entries, n as sent). Other calls may run on
 * the client in between; their replies do not disturb each other. After a
 * transport error in either half, the Complete may or may not have been
 * applied: retry it on a new connection (a lease already resolved answers
 * FAILED_PRECONDITION; the work is stored). */
int ss_client_complete_send(ss_client *c, const ss_lease *l, const ss_complete_item *items,
                            size_t n, uint64_t *id);
int ss_client_complete_recv(ss_client *c, uint64_t id, size_t n, bool *already_applied);

#ifdef __cplusplus
}
#endif

#endif
