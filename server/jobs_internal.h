/* jobs_internal -- shared structs of the job queue's files (private).
 *
 * The job queue (jobs.h) is split by role:
 *   jobs_index.c     the in-memory index: savers -> sequences -> jobs, the
 *                    ready order, timers, small reply helpers
 *   jobs_ops.c       the writer-side ops: the ONLY code that runs on the
 *                    writer thread (job records and the state save)
 *   jobs_done.c      loop side of writer ops: building, submitting, and
 *                    applying their results to the index after the commit
 *   jobs_lease.c     Lease, serving parked leases, lease expiry
 *   jobs_complete.c  Complete and its commit
 *   jobs_await.c     Await, collecting, cancelling parked requests
 *   jobs.c           open (rebuild from disk), Submit, stats, close
 *   jobs_train.c     the training fields of Submit and Lease (sequences,
 *                    context records, initial states)
 *   jobs_cancel.c    Cancel, and the queue's side of a Drop
 * Everything except jobs_ops.c runs on the loop thread. Names here are
 * prefixed jq_ (internal to the queue).
 *
 * In memory (loop thread): savers -> sequences (hash map by key) -> jobs
 * (one per submitted segment, sorted by segment). A sequence is *ready*
 * when the job at its cached next_segment is queued and no op is changing
 * it; ready sequences sit in their saver's heap ordered by the sequence's
 * first submit time, so Lease pops the oldest first. Leases, parked Lease
 * and Await requests carry a deadline in one timer heap served by a single
 * uv timer. Durable changes are writer ops (patches on job records, plus
 * the state compare-and-set for Complete); memory follows in the op's done
 * callback, after the commit.
 */
#ifndef SS_JOBS_INTERNAL_H
#define SS_JOBS_INTERNAL_H

#include <inttypes.h>
#include <lmdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jobs.h"
#include "jobs_heap.h"
#include "jobs_map.h"
#include "jobs_store.h"
#include "ss_error.h"
#include "ss_keyfmt.h"
#include "ss_log.h"


#define CODE(name) STATESAVER__V1__CODE__##name
#define WORKER_NAME_MAX 64u /* bytes of LeaseRequest.worker kept for logs */

/* In-memory job states; 1..4 equal SegmentState numbers. */
enum { J_SUBMITTING = 0, J_QUEUED = 1, J_LEASED = 2, J_DONE = 3, J_FAILED = 4, J_NSTATES = 5 };
/* Timer heap entries. */
enum { T_LEASE = 1, T_WAIT_LEASE = 2, T_WAIT_AWAIT = 3, T_HOLD = 4 };
/* How long a queued job whose record write failed is kept from Lease (so a
 * failing disk is retried once a second, not once per writer round). */
#define SS_JOBS_HOLD_MS 1000u
/* Lease item progress. */
enum { LI_PENDING = 0, LI_BUSY = 1, LI_DONE = 2 };
/* Writer op kinds and patch kinds. */
enum { OP_SUBMIT, OP_COMPLETE, OP_EXPIRE, OP_PROPAGATE, OP_DELETE, OP_CTXDEL, OP_CANCEL };
/* Bytes of a training extension's header (jobs_train.c). */
#define JQ_EXT_HEAD 24u
/* Kinds of a training extension entry (jobs_train.c). */
enum { JX_INPUTS = 1, JX_SEQ = 2, JX_CTX = 3, JX_INIT = 4 };
enum { P_INSERT, P_DONE, P_RETRY, P_FAIL, P_DELETE };

typedef struct job job;
typedef struct seq seq;
typedef struct saverq saverq;
typedef struct lease lease;
typedef struct waiter waiter;

/* Header of everything in the timer heap (first member, so casts work). */
typedef struct timed {
    ss_heap_node hn; /* k1 = deadline (uv_now ms), k2 = tie counter */
    int kind;        /* T_* */
} timed;

struct waiter {
    timed t;                 /* deadline of the wait */
    ss_map_node pn;          /* in jobs->parked, keyed by the bytes of arg */
    bool parked;             /* in jobs->parked (cancel can find it) */
    ss_jobs_reply_fn cb;     /* reply */
    void *arg;               /* cb argument */
    waiter *prev, *next;     /* saver's lease waiters or job's awaits */
    saverq *sv;              /* T_WAIT_LEASE: the saver */
    uint32_t max_batch;      /* T_WAIT_LEASE */
    uint32_t lease_ms;       /* T_WAIT_LEASE */
    uint32_t min_batch;      /* T_WAIT_LEASE: served only with this many ready
                                while delaying (0/1: anything ready) */
    bool delaying;           /* T_WAIT_LEASE: the timer is max_delay_ms's */
    uint32_t wait_after;     /* T_WAIT_LEASE: ms of wait left once the delay ends */
    char worker[WORKER_NAME_MAX]; /* T_WAIT_LEASE, for logs */
    job *jb;                 /* T_WAIT_AWAIT: awaited job */
    bool collect;            /* T_WAIT_AWAIT */
    bool without_tensors;    /* T_WAIT_AWAIT: reply without outputs */
};

struct job {
    uint64_t id;          /* record id in the jobs database */
    seq *sq;              /* owning sequence; NULL once removed */
    uint64_t segment;     /* segment number */
    uint32_t length;      /* real rows */
    uint32_t in_rows;     /* T of the inputs (outputs must match) */
    bool last;            /* last segment */
    uint32_t attempts;    /* failed/expired attempts (committed) */
    int state;            /* J_* */
    int busy;             /* writer ops in flight that change this job */
    int submits;          /* submit ops in flight for this job */
    bool removed;         /* out of its sequence (collected/abandoned) */
    uint64_t submit_ms;   /* wall clock of the submit */
    char *reason;         /* failure reason when J_FAILED (owned) */
    lease *ls;            /* lease holding it while J_LEASED and unresolved */
    waiter *awaits;       /* parked Await requests (list head) */
    bool waking;          /* wake_awaits is answering them (keep jb) */
    bool held;            /* on jobs->held: not ready until the hold ends */
    job *held_next;       /* next on jobs->held */
    bool collecting;      /* a delete of its record is in flight: it
                             leaves the index only once that commits */
};

struct seq {
    ss_map_node mn;       /* in saver->seqs, keyed by key */
    saverq *sv;           /* owning saver */
    uint8_t *key;         /* owned key bytes */
    size_t key_len;       /* bytes of key */
    uint64_t next;        /* cached next_segment of the sequence record */
    ss_heap_node rn;      /* in saver->ready; k1 = first submit ms */
    job **jobs;           /* n_jobs jobs sorted by segment, owned */
    size_t n_jobs;        /* jobs in the array */
    size_t cap_jobs;      /* allocated slots */
    uint64_t ctx_id;      /* record id of the sequence's context, 0 = none */
    size_t ctx_len;       /* bytes of its encoded context */
    uint32_t ctx_crc;     /* CRC32C of it (a later Submit must match) */
    int pins;             /* cancel/drop ops holding it: not freed while > 0 */
};

struct saverq {
    ss_map_node mn;       /* in jobs->savers, keyed by name */
    char *name;           /* NUL-terminated, owned */
    ss_map seqs;          /* sequences with jobs */
    ss_heap ready;        /* ready sequences, oldest first */
    waiter *w_head, *w_tail; /* parked Lease requests, FIFO */
    uint64_t n[J_NSTATES];   /* jobs per in-memory state */
    uint64_t n_collecting;   /* done/failed jobs whose delete is in flight */
    uint32_t max_in_flight;  /* the schema's cap on leased sequences (cached
                                at each Lease; 0 = none) */
};

typedef struct lease_item {
    job *jb;              /* leased job; NULL once cancelled */
    int st;               /* LI_* */
    uint8_t *ckey;        /* cancelled: copy of its key (owned), for the
                             error a later Complete of it gets */
    size_t ckey_len;      /* bytes of ckey */
    uint64_t cseg;        /* cancelled: its segment */
} lease_item;

struct lease {
    timed t;              /* expiry */
    ss_map_node mn;       /* in jobs->leases while live */
    bool live;            /* in the map (Complete accepted) */
    uint64_t id;          /* lease id */
    uint8_t idkey[8];     /* map key bytes */
    saverq *sv;           /* saver */
    size_t n;             /* items */
    size_t unresolved;    /* items not LI_DONE */
    lease_item *items;    /* n items, owned */
    char worker[WORKER_NAME_MAX]; /* for logs */
    bool has_cancelled;   /* an item was cancelled: the lease stays until its
                             deadline so a Complete of it is told so */
};

typedef struct patch {
    job *jb;              /* loop side: the job (holds a busy count) */
    uint64_t id;          /* record id (all the writer side uses) */
    int kind;             /* P_* */
    uint8_t *buf;         /* owned copies of everything borrowed below */
    ss_job_rec rec;       /* P_INSERT: record to write */
    ss_bytes key;         /* P_DONE: sequence key */
    uint64_t segment;     /* P_DONE: segment saved */
    bool final;           /* P_DONE: last segment (final save) */
    const void **states;  /* P_DONE: one per schema state (owned array) */
    uint32_t out_rows;    /* P_DONE */
    uint32_t out_cols;    /* P_DONE */
    const void *outputs;  /* P_DONE */
    ss_job_tensor *finals; /* P_DONE && final: n_finals tensors (owned array) */
    size_t n_finals;      /* count of finals */
    uint32_t attempts;    /* P_RETRY / P_FAIL: new attempts count */
    char *reason;         /* P_RETRY / P_FAIL (owned) */
    size_t req_index;     /* OP_COMPLETE: index of the request item */
    bool inserted;        /* result P_INSERT: the record was written */
    bool already;         /* result P_INSERT: identical record existed;
                             P_DONE: the state save was already applied */
    bool conflict;        /* result P_DONE: the state CAS failed */
    char cmsg[SS_STORE_MSG]; /* P_DONE conflict text */
    seq *sq;              /* P_DELETE of a context record by a cancel: its
                             sequence (alive: it has a busy job) */
} patch;

typedef struct jobs_op {
    ss_write_op base;     /* first: the writer's view */
    ss_jobs *jobs;        /* owner */
    int kind;             /* OP_* */
    ss_jobs_reply_fn cb;  /* reply (submit, complete) */
    void *arg;            /* cb argument */
    ss_schema *schema;    /* OP_COMPLETE: reference held */
    MDB_dbi dbi;          /* jobs database */
    int fault_rc;         /* test seam: fail the op with this (0 = run it) */
    uint64_t now_ms;      /* wall clock at creation */
    size_t n;             /* patches */
    patch *p;             /* n patches, owned */
    size_t n_req;         /* OP_COMPLETE: request items */
    bool *already;        /* OP_COMPLETE: reply flags per request item */
    char *saver;          /* OP_CANCEL: saver (owned copy) */
    ss_bytes *keys;       /* OP_CANCEL: keys whose state is dropped (data in kbuf) */
    uint8_t *kbuf;        /* OP_CANCEL: owned key bytes */
    size_t n_keys;        /* OP_CANCEL: keys */
    bool *had_state;      /* OP_CANCEL: per key, a state record was dropped */
    seq **seqs;           /* OP_CANCEL: the sequences touched (n_keys slots) */
    size_t n_seqs;        /* OP_CANCEL: filled slots */
} jobs_op;

struct ss_jobs {
    ss_store *st;         /* borrowed */
    ss_writer *w;         /* borrowed */
    uv_loop_t *loop;      /* borrowed */
    ss_jobs_options opt;  /* limits */
    MDB_env *env;         /* the store's env */
    MDB_dbi dbi;          /* jobs database */
    ss_map savers;        /* saverq by name */
    ss_map leases;        /* live leases by id */
    ss_heap timers;       /* leases and parked requests by deadline */
    ss_map parked;        /* parked requests by reply arg (O(1) cancel) */
    timed hold_t;         /* T_HOLD: when the held jobs become ready again */
    job *held;            /* jobs held after a failed record write (list) */
    uv_timer_t timer;     /* fires at the earliest deadline */
    size_t frame_max;     /* frame limit a Lease reply must fit (resolved) */
    uint64_t next_id;     /* next job record id */
    uint64_t next_lease;  /* next lease id */
    uint64_t tie;         /* counter for heap ties and sequence order */
    uint64_t n_active;    /* submitting + queued + leased jobs */
    uint64_t inflight;    /* writer ops not yet done */
    uint64_t completed;   /* counter */
    uint64_t failed;      /* counter */
    uint64_t expired;     /* counter */
    uint64_t saves;       /* counter */
    uint64_t waiting;     /* parked requests */
    bool kicking;         /* serving parked leases (reentrancy guard) */
    bool kick_again;      /* a kick was asked for while kicking */
    bool closing;         /* ss_jobs_close called */
    bool fault_write;     /* test seam: new writer ops fail (ss_jobs_test_fault) */
    bool fault_state_read; /* test seam: Lease's state reads fail */
    bool timer_closed;    /* the uv timer's close callback ran */
    void (*closed)(void *arg); /* ss_jobs_close callback */
    void *closed_arg;     /* its argument */
};

/* Room kept for the " (attempt N of M, giving up)" suffix: a longer reason
 * is cut so the attempt count always shows. */
#define REASON_WHY_MAX ((int)SS_JOB_REASON_MAX - 64)

/* jobs_index.c */
uint64_t jq_wall_ms(void);
int jq_reply_status(ss_jobs_reply_fn cb, void *arg, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
int jq_err_code(int rc);
char *jq_dup_bytes(const void *p, size_t n);
void jq_rearm(ss_jobs *j);
int jq_reply_ok(ss_jobs_reply_fn cb, void *arg, Statesaver__V1__Response__BodyCase body_case,
    void *body);
int jq_timer_add(ss_jobs *j, timed *t, int kind, uint64_t after_ms);
void jq_timer_del(ss_jobs *j, timed *t);
void jq_job_set_state(job *jb, saverq *sv, ss_jobs *j, int state);
saverq *jq_saver_find(ss_jobs *j, const char *name);
saverq *jq_saver_get(ss_jobs *j, const char *name, size_t len);
waiter *jq_waiter_new(ss_jobs *j, int kind, uint32_t wait_ms, ss_jobs_reply_fn cb, void *arg);
void jq_waiter_unlink_lease(saverq *sv, waiter *w);
void jq_waiter_unlink_await(waiter *w);
waiter *jq_waiter_find(ss_jobs *j, void *arg);
/* Take a parked request out of the timer heap, the parked map and its
 * saver's or job's list (it must be linked there); the caller answers and
 * frees it, and releases w->jb for an Await. */
void jq_waiter_unpark(ss_jobs *j, waiter *w);
size_t jq_saver_name_check(const char *name, ss_jobs_reply_fn cb, void *arg);
int jq_schema_get(ss_jobs *j, const char *name, ss_schema **out, ss_jobs_reply_fn cb,
    void *arg);
saverq *jq_saver_declared(ss_jobs *j, const char *name, size_t len, ss_jobs_reply_fn cb,
    void *arg);
seq *jq_seq_find(saverq *sv, const uint8_t *key, size_t len);
seq *jq_seq_new(ss_jobs *j, saverq *sv, const uint8_t *key, size_t len, uint64_t first_ms);
job *jq_seq_job(const seq *sq, uint64_t s);
int jq_seq_insert(seq *sq, job *jb);
job *jq_seq_failed(const seq *sq);
void jq_job_free(job *jb);
/* A new job (not linked anywhere) of stored record id: its fields from rec
 * (the reason copied when failed). NULL when out of memory. */
job *jq_job_from_record(uint64_t id, const ss_job_rec *rec);
void jq_job_detach(ss_jobs *j, job *jb);
void jq_job_release(job *jb);
void jq_seq_settle(ss_jobs *j, seq *sq);
/* Keep queued jb from Lease for SS_JOBS_HOLD_MS (a write about it failed). */
void jq_job_hold(ss_jobs *j, job *jb);
/* The hold timer fired: the held jobs may be leased again. */
void jq_release_holds(ss_jobs *j);

/* jobs_done.c */
void jq_op_done(ss_write_op *base, int rc, const char *msg);
jobs_op *jq_op_new(ss_jobs *j, int kind, size_t n);
void jq_op_free(jobs_op *op);
void jq_op_submit(ss_jobs *j, jobs_op *op);
void jq_propagate(ss_jobs *j, seq *sq);
void jq_refresh_next(ss_jobs *j, seq *sq);
void jq_apply_retry_fail(ss_jobs *j, patch *p);
void jq_finish_patches(ss_jobs *j, jobs_op *op);
int jq_patch_attempt(ss_jobs *j, patch *p, job *jb, const char *why);

/* jobs_ops.c */
int jq_op_run(ss_write_op *base, ss_store_txn *stxn, char msg[SS_STORE_MSG]);

/* jobs_complete.c */
void jq_done_complete(ss_jobs *j, jobs_op *op, int rc, const char *msg);

/* jobs_lease.c */
void jq_lease_resolve(ss_jobs *j, lease *ls, job *jb);
size_t jq_lease_envelope_size(const ss_schema *schema);
size_t jq_lease_item_size(const Statesaver__V1__LeasedSegment *s);
/* 0 when a Lease reply carrying this one segment (key, inputs of in_dims
 * and in_bytes, the saver's state) fits the frame limit, else
 * SS_ERR_TOO_BIG; *need gets the reply's bytes (with the margin). */
int jq_lease_fit(const ss_jobs *j, const ss_schema *schema, const ss_bytes *key,
                 uint64_t segment, uint32_t length, const int64_t in_dims[2], size_t in_bytes,
                 size_t *need);
void jq_expire_lease(ss_jobs *j, lease *ls);
void jq_kick(ss_jobs *j, saverq *sv);
/* The max_delay_ms of a parked min_batch Lease passed (its timer fired):
 * serve it with whatever is ready, or keep it parked for the rest of its
 * wait_ms. */
void jq_lease_delay_over(ss_jobs *j, waiter *w);
int jq_reply_empty_lease(ss_jobs_reply_fn cb, void *arg);

/* jobs_await.c */
/* mem: the committed P_DONE patch of jb to answer from, or NULL (read
 * the record). */
void jq_wake_awaits(ss_jobs *j, job *jb, const patch *mem);

/* jobs_train.c: the training fields of Submit and Lease. */
typedef struct jq_named {
    const char *name;          /* borrowed from the request */
    const ss_tensor_msg *t;    /* borrowed from the request */
} jq_named;
typedef struct jq_train {
    uint32_t T;                /* rows of every time-major tensor */
    const ss_tensor_msg *fin;  /* float32 [T, n] inputs (the record's classic place) */
    const ss_tensor_msg *xin;  /* int32/int64 [T] inputs (in the extension) */
    size_t n_seq;              /* named sequences (without "inputs") */
    jq_named seq[SS_JOBS_NAMED_MAX];
    size_t n_ctx;              /* context tensors */
    jq_named ctx[SS_JOBS_NAMED_MAX];
    size_t n_init;             /* per-sequence initial states */
    jq_named init[SS_STATES_PER_SAVER_MAX];
    uint64_t total_length;     /* as submitted */
    uint64_t sequence_count;   /* as submitted */
    size_t ext_len;            /* bytes of the job record's extension (0 = none) */
    size_t ctx_len;            /* bytes of the context blob (0 = none) */
} jq_train;
/* Check every field of a Submit (inputs, sequences, context, counts,
 * initial states) into t; on a bad field fills err naming it and returns
 * -1 (INVALID_ARGUMENT). */
int jq_train_check(const ss_jobs *j, const Statesaver__V1__SubmitRequest *req,
                   const ss_schema *schema, const char *kbuf, jq_train *t, char *err,
                   size_t errsz);
void jq_train_encode_ext(const jq_train *t, uint8_t *buf);   /* t->ext_len bytes */
void jq_train_encode_ctx(const jq_train *t, uint8_t *buf);   /* t->ctx_len bytes */
uint32_t jq_train_crc(const uint8_t *blob, size_t len);
/* 0 when blob is a well-formed extension, else SS_ERR_FORMAT. */
int jq_train_blob_check(const uint8_t *b, size_t len);
/* Fill the training fields of a Lease item from its record and the
 * sequence's context blob (may be NULL); at segment 0 the per-sequence
 * initial states overwrite state (schema order). *mem gets the block the
 * item points into (free() it after the reply); data is borrowed from the
 * records (the read transaction). */
int jq_train_lease_item(Statesaver__V1__LeasedSegment *s, const ss_job_rec *rec,
                        const uint8_t *ctx, size_t ctx_len, const ss_schema *schema,
                        uint8_t *state, bool seg0, void **mem);
/* A context record patch for sq in p (blob: t->ctx_len bytes, already
 * encoded, owned by the op); saver and key point into the op's copies.
 * Sets sq's context id, length and CRC. */
void jq_ctx_patch(ss_jobs *j, seq *sq, const jq_train *t, patch *p, const uint8_t *saver,
                  size_t slen, const uint8_t *key, size_t klen, const uint8_t *blob);
/* Delete a context record (a writer op of its own; failures are logged). */
void jq_ctx_delete(ss_jobs *j, uint64_t ctx_id);

/* jobs_cancel.c */
/* The writer side of a cancel: drop each key's state (one by one, to
 * count them). Writer thread. */
int jq_cancel_run_states(jobs_op *op, ss_store_txn *stxn, char msg[SS_STORE_MSG]);

/* jobs.c */
void jq_on_timer(uv_timer_t *t);
bool jq_closing_reply(ss_jobs *j, ss_jobs_reply_fn cb, void *arg);
void jq_maybe_finish_close(ss_jobs *j);

#endif
