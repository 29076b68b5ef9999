/* jobs -- the job queue: the networked SequenceQueueingStateSaver.
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
#include "jobs.h"

#include <inttypes.h>
#include <lmdb.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "jobs_heap.h"
#include "jobs_map.h"
#include "jobs_store.h"
#include "ss_error.h"
#include "ss_log.h"

#define CODE(name) STATESAVER__V1__CODE__##name
#define WORKER_NAME_MAX 64u /* bytes of LeaseRequest.worker kept for logs */

/* In-memory job states; 1..4 equal SegmentState numbers. */
enum { J_SUBMITTING = 0, J_QUEUED = 1, J_LEASED = 2, J_DONE = 3, J_FAILED = 4, J_NSTATES = 5 };
/* Timer heap entries. */
enum { T_LEASE = 1, T_WAIT_LEASE = 2, T_WAIT_AWAIT = 3 };
/* Lease item progress. */
enum { LI_PENDING = 0, LI_BUSY = 1, LI_DONE = 2 };
/* Writer op kinds and patch kinds. */
enum { OP_SUBMIT, OP_COMPLETE, OP_EXPIRE, OP_PROPAGATE, OP_DELETE };
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
    ss_jobs_reply_fn cb;     /* reply */
    void *arg;               /* cb argument */
    waiter *prev, *next;     /* saver's lease waiters or job's awaits */
    saverq *sv;              /* T_WAIT_LEASE: the saver */
    uint32_t max_batch;      /* T_WAIT_LEASE */
    uint32_t lease_ms;       /* T_WAIT_LEASE */
    char worker[WORKER_NAME_MAX]; /* T_WAIT_LEASE, for logs */
    job *jb;                 /* T_WAIT_AWAIT: awaited job */
    bool collect;            /* T_WAIT_AWAIT */
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
};

struct saverq {
    ss_map_node mn;       /* in jobs->savers, keyed by name */
    char *name;           /* NUL-terminated, owned */
    ss_map seqs;          /* sequences with jobs */
    ss_heap ready;        /* ready sequences, oldest first */
    waiter *w_head, *w_tail; /* parked Lease requests, FIFO */
    uint64_t n[J_NSTATES];   /* jobs per in-memory state */
};

typedef struct lease_item {
    job *jb;              /* leased job */
    int st;               /* LI_* */
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
} patch;

typedef struct jobs_op {
    ss_write_op base;     /* first: the writer's view */
    ss_jobs *jobs;        /* owner */
    int kind;             /* OP_* */
    ss_jobs_reply_fn cb;  /* reply (submit, complete) */
    void *arg;            /* cb argument */
    ss_schema *schema;    /* OP_COMPLETE: reference held */
    MDB_dbi dbi;          /* jobs database */
    uint64_t now_ms;      /* wall clock at creation */
    size_t n;             /* patches */
    patch *p;             /* n patches, owned */
    size_t n_req;         /* OP_COMPLETE: request items */
    bool *already;        /* OP_COMPLETE: reply flags per request item */
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
    uv_timer_t timer;     /* fires at the earliest deadline */
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
    bool timer_closed;    /* the uv timer's close callback ran */
    void (*closed)(void *arg); /* ss_jobs_close callback */
    void *closed_arg;     /* its argument */
};

/* ---- small helpers ---------------------------------------------------- */

static uint64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static uint64_t mono_ms(ss_jobs *j)
{
    uv_update_time(j->loop);
    return uv_now(j->loop);
}

/* Printable, truncated form of a key for messages. */
static const char *fmt_key(char *buf, size_t size, const uint8_t *key, size_t len)
{
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        if (o + 4 + 4 >= size) { /* room for "\\xNN" or "..." and the NUL */
            memcpy(buf + o, "...", 3);
            o += 3;
            break;
        }
        uint8_t c = key[i];
        if (c >= 0x20 && c < 0x7f && c != '\\')
            buf[o++] = (char)c;
        else
            o += (size_t)snprintf(buf + o, size - o, "\\x%02x", c);
    }
    buf[o] = 0;
    return buf;
}

static int reply_status(ss_jobs_reply_fn cb, void *arg, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int reply_status(ss_jobs_reply_fn cb, void *arg, int code, const char *fmt, ...)
{
    char text[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    Statesaver__V1__Status status = STATESAVER__V1__STATUS__INIT;
    status.code = (Statesaver__V1__Code)code;
    status.message = text;
    Statesaver__V1__Response resp = STATESAVER__V1__RESPONSE__INIT;
    resp.status = &status;
    return cb(arg, &resp);
}

/* Map a writer/store error to a status code. */
static int err_code(int rc)
{
    switch (rc) {
    case SS_ERR_FULL: return CODE(RESOURCE_EXHAUSTED);
    case SS_ERR_NOT_FOUND: return CODE(NOT_FOUND);
    case SS_ERR_CONFLICT: return CODE(FAILED_PRECONDITION);
    case SS_ERR_INVALID: case SS_ERR_SHAPE: case SS_ERR_TOO_BIG: return CODE(INVALID_ARGUMENT);
    default: return CODE(INTERNAL);
    }
}

static char *dup_bytes(const void *p, size_t n)
{
    char *s = malloc(n + 1);
    if (s) {
        if (n)
            memcpy(s, p, n);
        s[n] = 0;
    }
    return s;
}

/* ---- timers ----------------------------------------------------------- */

static void on_timer(uv_timer_t *t);

static void rearm(ss_jobs *j)
{
    if (j->timer_closed || uv_is_closing((uv_handle_t *)&j->timer))
        return;
    ss_heap_node *min = ss_heap_min(&j->timers);
    if (!min) {
        uv_timer_stop(&j->timer);
        return;
    }
    uint64_t now = uv_now(j->loop);
    uv_timer_start(&j->timer, on_timer, min->k1 > now ? min->k1 - now : 0, 0);
}

/* Answer OK with one of the job bodies (body must match body_case). */
static int reply_ok(ss_jobs_reply_fn cb, void *arg, Statesaver__V1__Response__BodyCase body_case,
                    void *body)
{
    Statesaver__V1__Status status = STATESAVER__V1__STATUS__INIT;
    status.message = (char *)"";
    Statesaver__V1__Response resp = STATESAVER__V1__RESPONSE__INIT;
    resp.status = &status;
    resp.body_case = body_case;
    switch (body_case) {
    case STATESAVER__V1__RESPONSE__BODY_SUBMIT: resp.submit = body; break;
    case STATESAVER__V1__RESPONSE__BODY_LEASE: resp.lease = body; break;
    case STATESAVER__V1__RESPONSE__BODY_COMPLETE: resp.complete = body; break;
    case STATESAVER__V1__RESPONSE__BODY_AWAIT_SEGMENT: resp.await_segment = body; break;
    default: return SS_ERR_INTERNAL;
    }
    return cb(arg, &resp);
}

static int timer_add(ss_jobs *j, timed *t, int kind, uint64_t after_ms)
{
    t->kind = kind;
    t->hn.k1 = mono_ms(j) + after_ms;
    t->hn.k2 = ++j->tie;
    int rc = ss_heap_push(&j->timers, &t->hn);
    if (rc == 0)
        rearm(j);
    return rc;
}

static void timer_del(ss_jobs *j, timed *t)
{
    ss_heap_remove(&j->timers, &t->hn);
}

/* ---- index maintenance ------------------------------------------------- */

static void job_set_state(job *jb, saverq *sv, ss_jobs *j, int state)
{
    bool was_active = jb->state <= J_LEASED, now_active = state <= J_LEASED;
    sv->n[jb->state]--;
    sv->n[state]++;
    if (was_active && !now_active)
        j->n_active--;
    else if (!was_active && now_active)
        j->n_active++;
    jb->state = state;
}

static saverq *saver_find(ss_jobs *j, const char *name)
{
    ss_map_node *n = ss_map_find(&j->savers, name, strlen(name));
    return n ? (saverq *)n : NULL;
}

static saverq *saver_get(ss_jobs *j, const char *name, size_t len)
{
    ss_map_node *n = ss_map_find(&j->savers, name, len);
    if (n)
        return (saverq *)n;
    saverq *sv = calloc(1, sizeof *sv);
    if (!sv)
        return NULL;
    sv->name = dup_bytes(name, len);
    if (!sv->name || ss_map_insert(&j->savers, &sv->mn, sv->name, len) < 0) {
        free(sv->name);
        free(sv);
        return NULL;
    }
    return sv;
}

/* The saver name's length, or 0 after replying INVALID_ARGUMENT. */
/* A parked request of the given kind, its timer armed for wait_ms. On
 * failure the request is answered (INTERNAL) and NULL returned. */
static waiter *waiter_new(ss_jobs *j, int kind, uint32_t wait_ms, ss_jobs_reply_fn cb,
                          void *arg)
{
    waiter *w = calloc(1, sizeof *w);
    if (!w || timer_add(j, &w->t, kind, wait_ms) < 0) {
        free(w);
        reply_status(cb, arg, CODE(INTERNAL), "out of memory");
        return NULL;
    }
    w->cb = cb;
    w->arg = arg;
    return w;
}

static size_t saver_name_check(const char *name, ss_jobs_reply_fn cb, void *arg)
{
    size_t len = name ? strlen(name) : 0;
    if (len == 0 || len > SS_SAVER_NAME_MAX) {
        reply_status(cb, arg, CODE(INVALID_ARGUMENT), "saver name must be 1..%u bytes",
                     SS_SAVER_NAME_MAX);
        return 0;
    }
    return len;
}

/* The saver's schema in *out (caller unrefs); on failure replies NOT_FOUND
 * or INTERNAL and returns the negative code, *out left NULL. */
static int schema_get(ss_jobs *j, const char *name, ss_schema **out, ss_jobs_reply_fn cb,
                      void *arg)
{
    *out = NULL;
    int rc = ss_store_schema(j->st, name, out);
    if (rc < 0)
        reply_status(cb, arg, rc == SS_ERR_NOT_FOUND ? CODE(NOT_FOUND) : CODE(INTERNAL),
                     "saver %s: %s", name,
                     rc == SS_ERR_NOT_FOUND ? "not declared" : ss_strerror(rc));
    return rc;
}

/* The queue of a declared saver (created on first use), or NULL after
 * replying the error: jobs are only taken for savers the store knows. */
static saverq *saver_declared(ss_jobs *j, const char *name, size_t len, ss_jobs_reply_fn cb,
                              void *arg)
{
    ss_schema *schema = NULL;
    int rc = schema_get(j, name, &schema, cb, arg);
    ss_schema_unref(schema);
    if (rc < 0)
        return NULL;
    saverq *sv = saver_get(j, name, len);
    if (!sv)
        reply_status(cb, arg, CODE(INTERNAL), "out of memory");
    return sv;
}

static seq *seq_find(saverq *sv, const uint8_t *key, size_t len)
{
    ss_map_node *n = ss_map_find(&sv->seqs, key, len);
    return n ? (seq *)n : NULL;
}

static seq *seq_new(ss_jobs *j, saverq *sv, const uint8_t *key, size_t len, uint64_t first_ms)
{
    seq *sq = calloc(1, sizeof *sq);
    if (!sq)
        return NULL;
    sq->key = malloc(len ? len : 1);
    if (sq->key)
        memcpy(sq->key, key, len);
    if (!sq->key || ss_map_insert(&sv->seqs, &sq->mn, sq->key, len) < 0) {
        free(sq->key);
        free(sq);
        return NULL;
    }
    sq->key_len = len;
    sq->sv = sv;
    sq->rn.k1 = first_ms;
    sq->rn.k2 = ++j->tie;
    return sq;
}

/* Index of the first job with segment >= s. */
static size_t seq_lower(const seq *sq, uint64_t s)
{
    size_t lo = 0, hi = sq->n_jobs;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (sq->jobs[mid]->segment < s)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static job *seq_job(const seq *sq, uint64_t s)
{
    size_t i = seq_lower(sq, s);
    return i < sq->n_jobs && sq->jobs[i]->segment == s ? sq->jobs[i] : NULL;
}

static int seq_insert(seq *sq, job *jb)
{
    if (sq->n_jobs == sq->cap_jobs) {
        size_t cap = sq->cap_jobs ? sq->cap_jobs * 2 : 4;
        job **v = realloc(sq->jobs, cap * sizeof *v);
        if (!v)
            return SS_ERR_NOMEM;
        sq->jobs = v;
        sq->cap_jobs = cap;
    }
    size_t i = seq_lower(sq, jb->segment);
    memmove(sq->jobs + i + 1, sq->jobs + i, (sq->n_jobs - i) * sizeof *sq->jobs);
    sq->jobs[i] = jb;
    sq->n_jobs++;
    jb->sq = sq;
    return 0;
}

/* Lowest failed job of the sequence, or NULL. */
static job *seq_failed(const seq *sq)
{
    for (size_t i = 0; i < sq->n_jobs; i++)
        if (sq->jobs[i]->state == J_FAILED)
            return sq->jobs[i];
    return NULL;
}

static void job_free(job *jb)
{
    if (!jb)
        return;
    free(jb->reason);
    free(jb);
}

/* Take jb out of its sequence (it stays allocated while ops hold it). */
static void job_detach(ss_jobs *j, job *jb)
{
    seq *sq = jb->sq;
    if (!sq)
        return;
    size_t i = seq_lower(sq, jb->segment);
    if (i < sq->n_jobs && sq->jobs[i] == jb) {
        memmove(sq->jobs + i, sq->jobs + i + 1, (sq->n_jobs - i - 1) * sizeof *sq->jobs);
        sq->n_jobs--;
    }
    sq->sv->n[jb->state]--;
    if (jb->state <= J_LEASED)
        j->n_active--;
    jb->sq = NULL;
    jb->removed = true;
}

static void job_release(job *jb)
{
    if (jb->removed && jb->busy == 0 && jb->submits == 0 && !jb->awaits)
        job_free(jb);
}

static bool seq_ready(const seq *sq)
{
    job *jb = seq_job(sq, sq->next);
    return jb && jb->state == J_QUEUED && jb->busy == 0;
}

static void kick(ss_jobs *j, saverq *sv);

/* Bring the sequence's ready-heap membership up to date, free it when it
 * has no jobs left, and serve parked leases if it became ready. sq must not
 * be used afterwards. */
static void seq_settle(ss_jobs *j, seq *sq)
{
    saverq *sv = sq->sv;
    if (sq->n_jobs == 0) {
        ss_heap_remove(&sv->ready, &sq->rn);
        ss_map_remove(&sv->seqs, &sq->mn);
        free(sq->jobs);
        free(sq->key);
        free(sq);
        return;
    }
    bool ready = seq_ready(sq);
    if (ready && !ss_heap_contains(&sq->rn)) {
        if (ss_heap_push(&sv->ready, &sq->rn) < 0)
            SS_LOG(SS_LOG_ERROR, "jobs: out of memory queueing a ready sequence");
        kick(j, sv);
    } else if (!ready) {
        ss_heap_remove(&sv->ready, &sq->rn);
    }
}

/* ---- writer ops ------------------------------------------------------- */

static void op_done(ss_write_op *base, int rc, const char *msg);

static int op_run(ss_write_op *base, ss_store_txn *stxn, char msg[SS_STORE_MSG]);

static jobs_op *op_new(ss_jobs *j, int kind, size_t n)
{
    jobs_op *op = calloc(1, sizeof *op);
    if (!op)
        return NULL;
    op->p = calloc(n ? n : 1, sizeof *op->p);
    if (!op->p) {
        free(op);
        return NULL;
    }
    op->base.run = op_run;
    op->base.done = op_done;
    op->jobs = j;
    op->kind = kind;
    op->dbi = j->dbi;
    op->now_ms = wall_ms();
    op->n = n;
    return op;
}

static void op_free(jobs_op *op)
{
    if (!op)
        return;
    for (size_t i = 0; i < op->n; i++) {
        free(op->p[i].buf);
        free(op->p[i].states);
        free(op->p[i].finals);
        free(op->p[i].reason);
    }
    free(op->p);
    free(op->already);
    ss_schema_unref(op->schema);
    free(op);
}

static void op_submit(ss_jobs *j, jobs_op *op)
{
    j->inflight++;
    ss_writer_submit(j->w, &op->base);
}

/* Writer thread: apply one patch. */
static int patch_run(jobs_op *op, patch *p, MDB_txn *txn, ss_store_txn *stxn,
                     char msg[SS_STORE_MSG])
{
    ss_job_rec old, rec;
    int rc;
    switch (p->kind) {
    case P_INSERT:
        rc = ss_jobs_db_get(txn, op->dbi, p->id, &old, msg);
        if (rc == SS_ERR_NOT_FOUND) {
            rc = ss_jobs_db_put(txn, op->dbi, p->id, &p->rec, msg);
            p->inserted = rc == 0;
            return rc;
        }
        if (rc < 0)
            return rc;
        if (old.length == p->rec.length && old.last == p->rec.last &&
            old.in_rows == p->rec.in_rows && old.in_cols == p->rec.in_cols &&
            memcmp(old.inputs, p->rec.inputs, (size_t)old.in_rows * old.in_cols * 4u) == 0) {
            p->already = true;
            return 0;
        }
        snprintf(msg, SS_STORE_MSG,
                 "segment %" PRIu64 " was already submitted with different inputs, "
                 "length or last flag", p->rec.segment);
        return SS_ERR_CONFLICT;
    case P_DONE: {
        ss_save_item item = {p->key, p->segment, p->final, p->states};
        bool already = false;
        rc = ss_store_save(stxn, op->schema, 1, &item, &already, op->now_ms, p->cmsg);
        if (rc == SS_ERR_CONFLICT) {
            p->conflict = true;
        } else if (rc < 0) {
            snprintf(msg, SS_STORE_MSG, "%s", p->cmsg);
            return rc;
        }
        p->already = already;
        rc = ss_jobs_db_get(txn, op->dbi, p->id, &old, msg);
        if (rc < 0)
            return rc;
        rec = old;
        rec.done_ms = op->now_ms;
        if (p->conflict) {
            rec.state = SS_JOB_FAILED;
            rec.reason.data = (const uint8_t *)p->cmsg;
            rec.reason.len = strlen(p->cmsg);
        } else {
            rec.state = SS_JOB_DONE;
            rec.reason.len = 0;
            rec.out_rows = p->out_rows;
            rec.out_cols = p->out_cols;
            rec.outputs = p->outputs;
            rec.n_final = p->n_finals;
            rec.final = p->finals;
        }
        if (rec.n_final && !rec.final)
            rec.n_final = 0; /* a failed record keeps no final states */
        return ss_jobs_db_put(txn, op->dbi, p->id, &rec, msg);
    }
    case P_RETRY:
    case P_FAIL:
        rc = ss_jobs_db_get(txn, op->dbi, p->id, &old, msg);
        if (rc == SS_ERR_NOT_FOUND)
            return 0; /* collected meanwhile: nothing to record */
        if (rc < 0)
            return rc;
        rec = old;
        rec.n_final = 0;
        rec.final = NULL;
        rec.attempts = p->attempts;
        rec.reason.data = (const uint8_t *)p->reason;
        rec.reason.len = p->reason ? strlen(p->reason) : 0;
        if (p->kind == P_FAIL) {
            rec.state = SS_JOB_FAILED;
            rec.done_ms = op->now_ms;
        }
        return ss_jobs_db_put(txn, op->dbi, p->id, &rec, msg);
    case P_DELETE:
        return ss_jobs_db_del(txn, op->dbi, p->id, msg);
    }
    snprintf(msg, SS_STORE_MSG, "jobs: unknown patch kind %d", p->kind);
    return SS_ERR_INTERNAL;
}

static int op_run(ss_write_op *base, ss_store_txn *stxn, char msg[SS_STORE_MSG])
{
    jobs_op *op = (jobs_op *)base;
    MDB_txn *txn = ss_store_txn_mdb(stxn);
    for (size_t i = 0; i < op->n; i++) {
        int rc = patch_run(op, &op->p[i], txn, stxn, msg);
        if (rc < 0)
            return rc;
    }
    return 0;
}

static void wake_awaits(ss_jobs *j, job *jb);
static void propagate(ss_jobs *j, seq *sq);
static void refresh_next(ss_jobs *j, seq *sq);

/* Apply a retry/fail patch to memory (after commit); the caller wakes
 * awaits and settles the sequence. */
static void apply_retry_fail(ss_jobs *j, patch *p)
{
    job *jb = p->jb;
    jb->busy--;
    jb->attempts = p->attempts;
    if (jb->removed)
        return;
    saverq *sv = jb->sq->sv;
    if (p->kind == P_FAIL) {
        free(jb->reason);
        jb->reason = p->reason;
        p->reason = NULL;
        job_set_state(jb, sv, j, J_FAILED);
        j->failed++;
    } else {
        job_set_state(jb, sv, j, J_QUEUED);
    }
}

static void lease_resolve(ss_jobs *j, lease *ls, job *jb);
static void finish_patches(ss_jobs *j, jobs_op *op);

static void done_submit(ss_jobs *j, jobs_op *op, int rc, const char *msg)
{
    patch *p = &op->p[0];
    job *jb = p->jb;
    jb->submits--;
    if (rc == 0 && p->inserted && jb->state == J_SUBMITTING && !jb->removed)
        job_set_state(jb, jb->sq->sv, j, J_QUEUED);
    if (rc == 0) {
        Statesaver__V1__SubmitResponse body = STATESAVER__V1__SUBMIT_RESPONSE__INIT;
        body.already_queued = p->already;
        reply_ok(op->cb, op->arg, STATESAVER__V1__RESPONSE__BODY_SUBMIT, &body);
    } else {
        reply_status(op->cb, op->arg, rc == SS_ERR_CONFLICT ? CODE(ALREADY_EXISTS) : err_code(rc),
                     "%s", msg && *msg ? msg : ss_strerror(rc));
    }
    if (jb->removed) {
        job_release(jb);
        return;
    }
    seq *sq = jb->sq;
    if (jb->state == J_SUBMITTING && jb->submits == 0) {
        /* Never written: forget it; parked awaits learn it does not exist. */
        job_detach(j, jb);
        wake_awaits(j, jb);
        job_release(jb);
    } else {
        propagate(j, sq);
    }
    seq_settle(j, sq);
}

static void done_complete(ss_jobs *j, jobs_op *op, int rc, const char *msg)
{
    if (rc < 0) {
        /* Nothing committed: the items stay leased, the worker may retry. */
        for (size_t i = 0; i < op->n; i++) {
            job *jb = op->p[i].jb;
            jb->busy--;
            lease *ls = jb->ls;
            for (size_t k = 0; ls && k < ls->n; k++)
                if (ls->items[k].jb == jb && ls->items[k].st == LI_BUSY)
                    ls->items[k].st = LI_PENDING;
            if (ls && !ls->live) {
                /* It expired meanwhile: hand the job back like an expiry
                 * would have, without counting an attempt (no write). */
                lease_resolve(j, ls, jb);
                if (!jb->removed) {
                    job_set_state(jb, jb->sq->sv, j, J_QUEUED);
                    seq_settle(j, jb->sq);
                }
            }
        }
        reply_status(op->cb, op->arg, err_code(rc), "complete: %s",
                     msg && *msg ? msg : ss_strerror(rc));
        return;
    }
    /* Pass 1: memory follows the commit (no callbacks yet, so every
     * sequence touched stays alive). */
    size_t n_saved = 0;
    ss_bytes *saved = calloc(op->n ? op->n : 1, sizeof *saved);
    const char *saver = NULL;
    for (size_t i = 0; i < op->n; i++) {
        patch *p = &op->p[i];
        job *jb = p->jb;
        if (jb->ls)
            lease_resolve(j, jb->ls, jb);
        if (p->kind != P_DONE) {
            apply_retry_fail(j, p);
            continue;
        }
        jb->busy--;
        if (p->conflict) {
            SS_LOG(SS_LOG_WARN, "jobs: complete of segment %" PRIu64 " failed: %s",
                   jb->segment, p->cmsg);
            if (!jb->removed) {
                free(jb->reason);
                jb->reason = dup_bytes(p->cmsg, strlen(p->cmsg));
                job_set_state(jb, jb->sq->sv, j, J_FAILED);
                j->failed++;
            }
            continue;
        }
        if (!p->already)
            j->saves++;
        op->already[p->req_index] = p->already;
        if (jb->removed)
            continue;
        job_set_state(jb, jb->sq->sv, j, J_DONE);
        j->completed++;
        if (saved) {
            saved[n_saved].data = jb->sq->key;
            saved[n_saved++].len = jb->sq->key_len;
            saver = jb->sq->sv->name;
        }
    }
    for (size_t i = 0; i < op->n; i++) {
        job *jb = op->p[i].jb;
        if (!jb->removed) {
            refresh_next(j, jb->sq);
            propagate(j, jb->sq);
        }
    }
    Statesaver__V1__CompleteResponse body = STATESAVER__V1__COMPLETE_RESPONSE__INIT;
    body.n_already_applied = op->n_req;
    body.already_applied = (protobuf_c_boolean *)calloc(op->n_req ? op->n_req : 1,
                                                         sizeof(protobuf_c_boolean));
    if (body.already_applied) {
        for (size_t i = 0; i < op->n_req; i++)
            body.already_applied[i] = op->already[i];
        reply_ok(op->cb, op->arg, STATESAVER__V1__RESPONSE__BODY_COMPLETE, &body);
        free(body.already_applied);
    } else {
        reply_status(op->cb, op->arg, CODE(INTERNAL), "complete committed, reply: out of memory");
    }
    if (n_saved && j->opt.on_saved)
        j->opt.on_saved(j->opt.on_saved_arg, saver, n_saved, saved);
    free(saved);
    finish_patches(j, op);
}

/* After an op's memory changes: answer awaits of jobs that ended, settle
 * the sequences (may serve parked leases), release removed jobs. */
static void finish_patches(ss_jobs *j, jobs_op *op)
{
    for (size_t i = 0; i < op->n; i++) {
        job *jb = op->p[i].jb;
        if (!jb->removed && jb->state >= J_DONE && jb->awaits)
            wake_awaits(j, jb); /* may collect: jb can be removed after */
    }
    for (size_t i = 0; i < op->n; i++) {
        job *jb = op->p[i].jb;
        if (!jb->removed)
            seq_settle(j, jb->sq);
    }
    for (size_t i = 0; i < op->n; i++)
        job_release(op->p[i].jb);
}

static void done_patches(ss_jobs *j, jobs_op *op, int rc, const char *msg)
{
    if (rc < 0)
        SS_LOG(SS_LOG_ERROR, "jobs: recording %s failed: %s (applied in memory only)",
               op->kind == OP_EXPIRE ? "expired leases" :
               op->kind == OP_PROPAGATE ? "failed segments" : "a collect",
               msg && *msg ? msg : ss_strerror(rc));
    for (size_t i = 0; i < op->n; i++) {
        patch *p = &op->p[i];
        if (p->kind == P_DELETE)
            p->jb->busy--;
        else
            apply_retry_fail(j, p);
    }
    for (size_t i = 0; i < op->n; i++) {
        job *jb = op->p[i].jb;
        if (!jb->removed && op->p[i].kind != P_DELETE)
            propagate(j, jb->sq);
    }
    finish_patches(j, op);
}

static void maybe_finish_close(ss_jobs *j);

static void op_done(ss_write_op *base, int rc, const char *msg)
{
    jobs_op *op = (jobs_op *)base;
    ss_jobs *j = op->jobs;
    switch (op->kind) {
    case OP_SUBMIT: done_submit(j, op, rc, msg); break;
    case OP_COMPLETE: done_complete(j, op, rc, msg); break;
    default: done_patches(j, op, rc, msg); break;
    }
    op_free(op);
    j->inflight--;
    rearm(j);
    maybe_finish_close(j);
}

/* Room kept for the " (attempt N of M, giving up)" suffix: a longer reason
 * is cut so the attempt count always shows. */
#define REASON_WHY_MAX ((int)SS_JOB_REASON_MAX - 64)

/* Fill a retry-or-fail patch for jb after one more failed attempt. */
static int patch_attempt(ss_jobs *j, patch *p, job *jb, const char *why)
{
    p->jb = jb;
    p->id = jb->id;
    p->attempts = jb->attempts + 1;
    char text[SS_JOB_REASON_MAX];
    if (p->attempts >= j->opt.max_attempts) {
        p->kind = P_FAIL;
        snprintf(text, sizeof text, "%.*s (attempt %" PRIu32 " of %" PRIu32 ", giving up)",
                 REASON_WHY_MAX, why,
                 p->attempts, j->opt.max_attempts);
    } else {
        p->kind = P_RETRY;
        snprintf(text, sizeof text, "%.*s (attempt %" PRIu32 " of %" PRIu32 ")",
                 REASON_WHY_MAX, why,
                 p->attempts, j->opt.max_attempts);
    }
    p->reason = dup_bytes(text, strlen(text));
    if (!p->reason)
        return SS_ERR_NOMEM;
    jb->busy++;
    return 0;
}

/* Fail the queued jobs of sq that follow a failed segment (and those whose
 * segment the sequence state has already passed). */
static void propagate(ss_jobs *j, seq *sq)
{
    if (j->closing)
        return;
    job *bad = seq_failed(sq);
    size_t n = 0;
    for (size_t i = 0; i < sq->n_jobs; i++) {
        job *jb = sq->jobs[i];
        if (jb->state == J_QUEUED && jb->busy == 0 &&
            ((bad && jb->segment > bad->segment) || jb->segment < sq->next))
            n++;
    }
    if (n == 0)
        return;
    jobs_op *op = op_new(j, OP_PROPAGATE, n);
    if (!op) {
        SS_LOG(SS_LOG_ERROR, "jobs: out of memory failing later segments");
        return;
    }
    size_t k = 0;
    for (size_t i = 0; i < sq->n_jobs && k < n; i++) {
        job *jb = sq->jobs[i];
        if (!(jb->state == J_QUEUED && jb->busy == 0 &&
              ((bad && jb->segment > bad->segment) || jb->segment < sq->next)))
            continue;
        patch *p = &op->p[k++];
        char text[SS_JOB_REASON_MAX];
        if (bad && jb->segment > bad->segment)
            snprintf(text, sizeof text, "segment %" PRIu64 " failed: %s", bad->segment,
                     bad->reason ? bad->reason : "unknown reason");
        else
            snprintf(text, sizeof text,
                     "the sequence state is already past segment %" PRIu64
                     " (next_segment %" PRIu64 ")", jb->segment, sq->next);
        p->jb = jb;
        p->id = jb->id;
        p->kind = P_FAIL;
        p->attempts = jb->attempts;
        p->reason = dup_bytes(text, strlen(text));
        jb->busy++;
    }
    op_submit(j, op);
}

/* Re-read the sequence's next_segment from the store. */
static void refresh_next(ss_jobs *j, seq *sq)
{
    ss_bytes key = {sq->key, sq->key_len};
    uint64_t next = 0;
    int rc = ss_store_segments(j->st, sq->sv->name, 1, &key, &next);
    if (rc < 0) {
        SS_LOG(SS_LOG_WARN, "jobs: reading next_segment: %s", ss_strerror(rc));
        return;
    }
    sq->next = next;
}

/* ---- leases ----------------------------------------------------------- */

static void lease_free(ss_jobs *j, lease *ls)
{
    if (ls->live) {
        ss_map_remove(&j->leases, &ls->mn);
        ls->live = false;
    }
    timer_del(j, &ls->t);
    free(ls->items);
    free(ls);
}

/* jb no longer belongs to ls (completed, failed, returned). */
static void lease_resolve(ss_jobs *j, lease *ls, job *jb)
{
    for (size_t k = 0; k < ls->n; k++) {
        if (ls->items[k].jb == jb && ls->items[k].st != LI_DONE) {
            ls->items[k].st = LI_DONE;
            ls->unresolved--;
        }
    }
    jb->ls = NULL;
    if (ls->unresolved == 0)
        lease_free(j, ls);
}

static void expire_lease(ss_jobs *j, lease *ls)
{
    j->expired++;
    ls->live = false;
    ss_map_remove(&j->leases, &ls->mn);
    size_t n = 0;
    for (size_t k = 0; k < ls->n; k++)
        n += ls->items[k].st == LI_PENDING;
    SS_LOG(SS_LOG_INFO, "jobs: lease %" PRIu64 " (%s) expired with %zu segment(s) pending",
           ls->id, ls->worker[0] ? ls->worker : "unnamed worker", n);
    jobs_op *op = n ? op_new(j, OP_EXPIRE, n) : NULL;
    char why[128];
    snprintf(why, sizeof why, "lease %" PRIu64 " expired", ls->id);
    size_t used = 0;
    for (size_t k = 0; k < ls->n; k++) {
        if (ls->items[k].st != LI_PENDING)
            continue;
        job *jb = ls->items[k].jb;
        ls->items[k].st = LI_DONE;
        ls->unresolved--;
        jb->ls = NULL;
        if (op && patch_attempt(j, &op->p[used], jb, why) == 0) {
            used++; /* stays leased (busy) until the attempt is recorded */
        } else {
            SS_LOG(SS_LOG_ERROR, "jobs: out of memory recording an expiry; requeued");
            job_set_state(jb, jb->sq->sv, j, J_QUEUED);
            seq_settle(j, jb->sq);
        }
    }
    if (op) {
        op->n = used;
        op_submit(j, op);
    }
    if (ls->unresolved == 0)
        lease_free(j, ls);
}

/* Return the just-leased segments of an undeliverable reply to the queue. */
static void unlease(ss_jobs *j, lease *ls)
{
    for (size_t k = 0; k < ls->n; k++) {
        job *jb = ls->items[k].jb;
        jb->ls = NULL;
        job_set_state(jb, jb->sq->sv, j, J_QUEUED);
    }
    ls->unresolved = 0;
    seq *last = NULL;
    for (size_t k = 0; k < ls->n; k++) {
        seq *sq = ls->items[k].jb->sq;
        if (sq != last)
            seq_settle(j, sq);
        last = sq;
    }
    lease_free(j, ls);
}

/* Per-item scratch for building a Lease reply. */
typedef struct lease_build {
    seq *sq;               /* sequence */
    job *jb;               /* its ready job */
    uint8_t *state;        /* schema->state_bytes of fetched state */
    bool skipped;          /* not leased (over budget or unreadable) */
    int64_t in_dims[2];    /* inputs shape */
} lease_build;

/* Try to lease up to max_batch ready segments of sv and reply. Returns 1
 * when a reply was sent (items, or an error), 0 when nothing was ready
 * (no reply sent). */
static int serve(ss_jobs *j, saverq *sv, uint32_t max_batch, uint32_t lease_ms,
                 const char *worker, ss_jobs_reply_fn cb, void *arg)
{
    if (!ss_heap_min(&sv->ready))
        return 0;
    ss_schema *schema = NULL;
    int rc = schema_get(j, sv->name, &schema, cb, arg);
    if (rc < 0)
        return 1;
    int ret = 1;
    lease_build *b = calloc(max_batch, sizeof *b);
    Statesaver__V1__LeasedSegment *segs = NULL, **segp = NULL;
    Statesaver__V1__Tensor *tens = NULL, **tenp = NULL;
    char **names = NULL;
    lease *ls = NULL;
    MDB_txn *txn = NULL;
    size_t n = 0, ns = schema->n_states;
    if (!b) {
        reply_status(cb, arg, CODE(INTERNAL), "lease: out of memory");
        goto out;
    }
    while (n < max_batch) {
        ss_heap_node *hn = ss_heap_min(&sv->ready);
        if (!hn)
            break;
        seq *sq = (seq *)((char *)hn - offsetof(seq, rn));
        job *jb = seq_job(sq, sq->next);
        ss_heap_remove(&sv->ready, &sq->rn);
        uint8_t *state = malloc(schema->state_bytes ? schema->state_bytes : 1);
        if (!state) {
            seq_settle(j, sq);
            break;
        }
        void *outs[SS_STATES_PER_SAVER_MAX];
        size_t off = 0;
        for (size_t i = 0; i < ns; i++) {
            outs[i] = state + off;
            off += schema->states[i].nbytes;
        }
        ss_bytes key = {sq->key, sq->key_len};
        uint64_t next = 0, upd = 0;
        char msg[SS_STORE_MSG] = "";
        rc = ss_store_fetch(j->st, schema, 1, &key, outs, &next, &upd, msg);
        if (rc == SS_ERR_NOT_FOUND) {
            /* The sequence was evicted: its state is gone for good. */
            free(state);
            jobs_op *op = op_new(j, OP_PROPAGATE, 1);
            if (op) {
                patch *p = &op->p[0];
                p->jb = jb;
                p->id = jb->id;
                p->kind = P_FAIL;
                p->attempts = jb->attempts;
                p->reason = dup_bytes(msg, strlen(msg));
                jb->busy++;
                op_submit(j, op);
            }
            continue;
        }
        if (rc < 0) {
            free(state);
            seq_settle(j, sq);
            SS_LOG(SS_LOG_ERROR, "jobs: lease: fetching state: %s", msg);
            break;
        }
        if (next != sq->next) {
            /* Someone else moved the state: re-evaluate with the new value. */
            free(state);
            sq->next = next;
            propagate(j, sq);
            seq_settle(j, sq);
            continue;
        }
        b[n].sq = sq;
        b[n].jb = jb;
        b[n].state = state;
        b[n].in_dims[0] = jb->in_rows;
        n++;
    }
    if (n == 0) {
        ret = 0;
        goto out;
    }
    /* Inputs: one read transaction, pointers valid until it ends. */
    rc = mdb_txn_begin(j->env, NULL, MDB_RDONLY, &txn);
    if (rc != 0) {
        txn = NULL;
        for (size_t i = 0; i < n; i++)
            seq_settle(j, b[i].sq);
        reply_status(cb, arg, CODE(INTERNAL), "lease: %s", mdb_strerror(rc));
        goto out;
    }
    segs = calloc(n, sizeof *segs);
    segp = calloc(n, sizeof *segp);
    tens = calloc(n * (ns + 1), sizeof *tens);
    tenp = calloc(n * (ns ? ns : 1), sizeof *tenp);
    names = calloc(ns ? ns : 1, sizeof *names);
    ls = calloc(1, sizeof *ls);
    if (ls)
        ls->items = calloc(n, sizeof *ls->items);
    if (!segs || !segp || !tens || !tenp || !names || !ls || !ls->items) {
        for (size_t i = 0; i < n; i++)
            seq_settle(j, b[i].sq);
        reply_status(cb, arg, CODE(INTERNAL), "lease: out of memory");
        goto out;
    }
    size_t budget = j->opt.max_reply_bytes, used = 0, kept = 0;
    for (size_t i = 0; i < n; i++) {
        ss_job_rec rec;
        char msg[SS_STORE_MSG];
        rc = ss_jobs_db_get(txn, j->dbi, b[i].jb->id, &rec, msg);
        size_t in_bytes = rc == 0 ? (size_t)rec.in_rows * rec.in_cols * 4u : 0;
        if (rc < 0 || (kept > 0 && used + in_bytes + schema->state_bytes > budget)) {
            if (rc < 0)
                SS_LOG(SS_LOG_ERROR, "jobs: lease: %s", msg);
            b[i].skipped = true; /* stays queued; settled after the txn */
            continue;
        }
        used += in_bytes + schema->state_bytes;
        Statesaver__V1__LeasedSegment *s = &segs[kept];
        statesaver__v1__leased_segment__init(s);
        s->key.data = b[i].sq->key;
        s->key.len = b[i].sq->key_len;
        s->segment = b[i].jb->segment;
        s->length = b[i].jb->length;
        s->last = b[i].jb->last;
        s->attempts = b[i].jb->attempts;
        Statesaver__V1__Tensor *t = &tens[kept * (ns + 1)];
        statesaver__v1__tensor__init(t);
        b[i].in_dims[0] = rec.in_rows;
        b[i].in_dims[1] = rec.in_cols;
        ss_tensor_borrow(t, STATESAVER__V1__DTYPE__DT_FLOAT32, b[i].in_dims, 2, rec.inputs, in_bytes);
        s->inputs = t;
        s->n_states = ns;
        s->states = &tenp[kept * ns];
        size_t off = 0;
        for (size_t k = 0; k < ns; k++) {
            const ss_state_spec *sp = &schema->states[k];
            Statesaver__V1__Tensor *st = &tens[kept * (ns + 1) + 1 + k];
            statesaver__v1__tensor__init(st);
            ss_tensor_borrow(st, sp->dtype, sp->shape, sp->rank, b[i].state + off, sp->nbytes);
            off += sp->nbytes;
            s->states[k] = st;
        }
        segp[kept] = s;
        ls->items[kept].jb = b[i].jb;
        ls->items[kept].st = LI_PENDING;
        kept++;
    }
    if (kept == 0) {
        mdb_txn_abort(txn);
        txn = NULL;
        for (size_t i = 0; i < n; i++)
            seq_settle(j, b[i].sq);
        ret = 0;
        goto out;
    }
    for (size_t k = 0; k < ns; k++)
        names[k] = schema->states[k].name;
    ls->id = ++j->next_lease;
    for (int i = 0; i < 8; i++)
        ls->idkey[i] = (uint8_t)(ls->id >> (56 - 8 * i));
    ls->sv = sv;
    ls->n = ls->unresolved = kept;
    snprintf(ls->worker, sizeof ls->worker, "%s", worker ? worker : "");
    if (ss_map_insert(&j->leases, &ls->mn, ls->idkey, 8) < 0 ||
        timer_add(j, &ls->t, T_LEASE, lease_ms) < 0) {
        if (ls->mn.len)
            ss_map_remove(&j->leases, &ls->mn);
        mdb_txn_abort(txn);
        txn = NULL;
        for (size_t i = 0; i < n; i++)
            seq_settle(j, b[i].sq);
        reply_status(cb, arg, CODE(INTERNAL), "lease: out of memory");
        goto out;
    }
    ls->live = true;
    for (size_t i = 0; i < kept; i++) {
        job *jb = ls->items[i].jb;
        jb->ls = ls;
        job_set_state(jb, sv, j, J_LEASED);
    }
    Statesaver__V1__LeaseResponse body = STATESAVER__V1__LEASE_RESPONSE__INIT;
    body.lease_id = ls->id;
    body.deadline_ms = wall_ms() + lease_ms;
    body.n_names = ns;
    body.names = names;
    body.n_items = kept;
    body.items = segp;
    rc = reply_ok(cb, arg, STATESAVER__V1__RESPONSE__BODY_LEASE, &body);
    mdb_txn_abort(txn);
    txn = NULL;
    for (size_t i = 0; i < n; i++)
        if (b[i].skipped)
            seq_settle(j, b[i].sq);
    if (rc < 0) {
        SS_LOG(SS_LOG_INFO, "jobs: lease %" PRIu64 " undeliverable, segments requeued", ls->id);
        unlease(j, ls);
    }
    ls = NULL;
out:
    if (txn)
        mdb_txn_abort(txn);
    if (ls) {
        free(ls->items);
        free(ls);
    }
    if (b)
        for (size_t i = 0; i < max_batch; i++)
            free(b[i].state);
    free(b);
    free(segs);
    free(segp);
    free(tens);
    free(tenp);
    free(names);
    ss_schema_unref(schema);
    return ret;
}

static void waiter_unlink_lease(saverq *sv, waiter *w)
{
    if (w->prev)
        w->prev->next = w->next;
    else
        sv->w_head = w->next;
    if (w->next)
        w->next->prev = w->prev;
    else
        sv->w_tail = w->prev;
    w->prev = w->next = NULL;
}

/* Take an Await waiter off its job's list (the job keeps its reference). */
static void waiter_unlink_await(waiter *w)
{
    if (w->prev)
        w->prev->next = w->next;
    else
        w->jb->awaits = w->next;
    if (w->next)
        w->next->prev = w->prev;
    w->prev = w->next = NULL;
}

/* Serve parked leases of sv while segments are ready. */
static void kick(ss_jobs *j, saverq *sv)
{
    if (j->closing)
        return;
    if (j->kicking) {
        j->kick_again = true;
        return;
    }
    j->kicking = true;
    do {
        j->kick_again = false;
        while (sv->w_head && ss_heap_min(&sv->ready)) {
            waiter *w = sv->w_head;
            waiter_unlink_lease(sv, w);
            timer_del(j, &w->t);
            j->waiting--;
            if (serve(j, sv, w->max_batch, w->lease_ms, w->worker, w->cb, w->arg)) {
                free(w);
            } else {
                /* Nothing was actually leasable: park it again, in front. */
                w->next = sv->w_head;
                if (sv->w_head)
                    sv->w_head->prev = w;
                else
                    sv->w_tail = w;
                sv->w_head = w;
                ss_heap_push(&j->timers, &w->t.hn);
                j->waiting++;
                break;
            }
        }
    } while (j->kick_again);
    j->kicking = false;
    rearm(j);
}

static int reply_empty_lease(ss_jobs_reply_fn cb, void *arg)
{
    Statesaver__V1__LeaseResponse body = STATESAVER__V1__LEASE_RESPONSE__INIT;
    return reply_ok(cb, arg, STATESAVER__V1__RESPONSE__BODY_LEASE, &body);
}

/* ---- await ------------------------------------------------------------ */

static void collect_job(ss_jobs *j, job *jb);

/* Reply to an Await for a done or failed job from its record. */
static void reply_await(ss_jobs *j, job *jb, ss_jobs_reply_fn cb, void *arg)
{
    MDB_txn *txn = NULL;
    char **names = NULL, *reason = NULL;
    Statesaver__V1__Tensor *tens = NULL, **tenp = NULL;
    int64_t (*dims)[SS_TENSOR_MAX_RANK] = NULL;
    int rc = mdb_txn_begin(j->env, NULL, MDB_RDONLY, &txn);
    if (rc != 0) {
        txn = NULL;
        reply_status(cb, arg, CODE(INTERNAL), "await: %s", mdb_strerror(rc));
        goto out;
    }
    ss_job_rec rec;
    char msg[SS_STORE_MSG];
    rc = ss_jobs_db_get(txn, j->dbi, jb->id, &rec, msg);
    if (rc < 0) {
        reply_status(cb, arg, CODE(INTERNAL), "await: %s", msg);
        goto out;
    }
    size_t nf = rec.n_final;
    names = calloc(nf + 1, sizeof *names);
    tens = calloc(nf + 2, sizeof *tens);
    tenp = calloc(nf + 1, sizeof *tenp);
    dims = calloc(nf + 1, sizeof *dims);
    reason = dup_bytes(rec.reason.data, rec.reason.len);
    if (!names || !tens || !tenp || !dims || !reason) {
        reply_status(cb, arg, CODE(INTERNAL), "await: out of memory");
        goto out;
    }
    Statesaver__V1__AwaitResponse body = STATESAVER__V1__AWAIT_RESPONSE__INIT;
    body.state = rec.state == SS_JOB_DONE ? STATESAVER__V1__SEGMENT_STATE__SEG_DONE
                                          : STATESAVER__V1__SEGMENT_STATE__SEG_FAILED;
    body.length = rec.length;
    body.last = rec.last;
    body.attempts = rec.attempts;
    body.reason = reason;
    if (rec.state == SS_JOB_DONE) {
        statesaver__v1__tensor__init(&tens[0]);
        dims[nf][0] = rec.out_rows;
        dims[nf][1] = rec.out_cols;
        ss_tensor_borrow(&tens[0], STATESAVER__V1__DTYPE__DT_FLOAT32, dims[nf], 2,
                         rec.outputs, (size_t)rec.out_rows * rec.out_cols * 4u);
        body.outputs = &tens[0];
        size_t pos = 0;
        for (size_t i = 0; i < nf; i++) {
            ss_job_tensor t;
            if (ss_job_rec_final_next(&rec, &pos, &t) != 1)
                break;
            names[i] = dup_bytes(t.name, t.name_len);
            if (!names[i]) {
                reply_status(cb, arg, CODE(INTERNAL), "await: out of memory");
                goto out;
            }
            memcpy(dims[i], t.dims, sizeof t.dims);
            statesaver__v1__tensor__init(&tens[1 + i]);
            ss_tensor_borrow(&tens[1 + i], t.dtype, dims[i], t.rank, t.data, t.nbytes);
            tenp[i] = &tens[1 + i];
        }
        body.n_names = nf;
        body.names = names;
        body.n_final_states = nf;
        body.final_states = tenp;
    }
    reply_ok(cb, arg, STATESAVER__V1__RESPONSE__BODY_AWAIT_SEGMENT, &body);
out:
    if (txn)
        mdb_txn_abort(txn);
    if (names)
        for (size_t i = 0; names[i]; i++)
            free(names[i]);
    free(names);
    free(tens);
    free(tenp);
    free(dims);
    free(reason);
}

/* Answer every parked Await of jb (done, failed, or gone). */
static void wake_awaits(ss_jobs *j, job *jb)
{
    waiter *w = jb->awaits;
    jb->awaits = NULL;
    bool collect = false;
    while (w) {
        waiter *next = w->next;
        timer_del(j, &w->t);
        j->waiting--;
        if (jb->removed || jb->state < J_DONE)
            reply_status(w->cb, w->arg, CODE(NOT_FOUND),
                         "segment %" PRIu64 " is no longer queued (never stored)", jb->segment);
        else
            reply_await(j, jb, w->cb, w->arg);
        collect |= w->collect;
        free(w);
        w = next;
    }
    if (collect && !jb->removed && jb->state >= J_DONE)
        collect_job(j, jb);
}

/* Remove a done/failed job from the index and delete its record. */
static void collect_job(ss_jobs *j, job *jb)
{
    seq *sq = jb->sq;
    jobs_op *op = op_new(j, OP_DELETE, 1);
    if (!op) {
        SS_LOG(SS_LOG_ERROR, "jobs: out of memory collecting a job");
        return;
    }
    op->p[0].jb = jb;
    op->p[0].id = jb->id;
    op->p[0].kind = P_DELETE;
    jb->busy++;
    job_detach(j, jb);
    op_submit(j, op);
    seq_settle(j, sq);
}

/* ---- timer callback ---------------------------------------------------- */

static void on_timer(uv_timer_t *t)
{
    ss_jobs *j = t->data;
    uint64_t now = uv_now(j->loop);
    ss_heap_node *hn;
    while ((hn = ss_heap_min(&j->timers)) && hn->k1 <= now) {
        ss_heap_remove(&j->timers, hn);
        timed *tm = (timed *)hn;
        if (tm->kind == T_LEASE) {
            expire_lease(j, (lease *)tm);
        } else if (tm->kind == T_WAIT_LEASE) {
            waiter *w = (waiter *)tm;
            waiter_unlink_lease(w->sv, w);
            j->waiting--;
            reply_empty_lease(w->cb, w->arg);
            free(w);
        } else {
            waiter *w = (waiter *)tm;
            job *jb = w->jb;
            waiter_unlink_await(w);
            j->waiting--;
            reply_status(w->cb, w->arg, CODE(DEADLINE_EXCEEDED),
                         "segment %" PRIu64 " is not done yet (%s)", jb->segment,
                         jb->state == J_LEASED ? "leased" : "queued");
            free(w);
            job_release(jb);
        }
    }
    rearm(j);
}

/* ---- public entry points ---------------------------------------------- */

void ss_jobs_options_default(ss_jobs_options *opt)
{
    memset(opt, 0, sizeof *opt);
    opt->queue_capacity = SS_JOBS_QUEUE_CAPACITY_DEFAULT;
    opt->max_attempts = SS_JOBS_MAX_ATTEMPTS_DEFAULT;
    opt->lease_ms = SS_JOBS_LEASE_MS_DEFAULT;
    opt->max_batch = SS_JOBS_MAX_BATCH_DEFAULT;
    opt->max_key_bytes = SS_KEY_MAX_DEFAULT;
    opt->max_reply_bytes = SS_JOBS_REPLY_BYTES_DEFAULT;
}

/* Restart: one record -> one job in the index. */
static int scan_cb(void *arg, uint64_t id, const ss_job_rec *rec)
{
    ss_jobs *j = arg;
    if (rec->saver.len == 0 || rec->saver.len > SS_SAVER_NAME_MAX ||
        memchr(rec->saver.data, 0, rec->saver.len)) {
        SS_LOG(SS_LOG_WARN, "jobs: record %" PRIu64 " has a bad saver name; skipped", id);
        return 0;
    }
    saverq *sv = saver_get(j, (const char *)rec->saver.data, rec->saver.len);
    if (!sv)
        return SS_ERR_NOMEM;
    seq *sq = seq_find(sv, rec->key.data, rec->key.len);
    if (!sq && !(sq = seq_new(j, sv, rec->key.data, rec->key.len, rec->submit_ms)))
        return SS_ERR_NOMEM;
    if (rec->submit_ms < sq->rn.k1)
        sq->rn.k1 = rec->submit_ms;
    if (seq_job(sq, rec->segment)) {
        SS_LOG(SS_LOG_WARN, "jobs: record %" PRIu64 " duplicates segment %" PRIu64
               " of a sequence; skipped", id, rec->segment);
        return 0;
    }
    job *jb = calloc(1, sizeof *jb);
    if (!jb)
        return SS_ERR_NOMEM;
    jb->id = id;
    jb->segment = rec->segment;
    jb->length = rec->length;
    jb->in_rows = rec->in_rows;
    jb->last = rec->last;
    jb->attempts = rec->attempts;
    jb->submit_ms = rec->submit_ms;
    jb->state = rec->state;
    if (rec->state == SS_JOB_FAILED)
        jb->reason = dup_bytes(rec->reason.data, rec->reason.len);
    if (seq_insert(sq, jb) < 0) {
        job_free(jb);
        return SS_ERR_NOMEM;
    }
    sv->n[jb->state]++;
    if (jb->state <= J_LEASED)
        j->n_active++;
    return 0;
}

static void settle_all_cb(void *arg, ss_map_node *node)
{
    ss_jobs *j = arg;
    seq *sq = (seq *)node;
    refresh_next(j, sq);
    propagate(j, sq);
    seq_settle(j, sq);
}

static void settle_saver_cb(void *arg, ss_map_node *node)
{
    ss_map_each(&((saverq *)node)->seqs, settle_all_cb, arg);
}

int ss_jobs_open(ss_jobs **out, ss_store *st, ss_writer *w, uv_loop_t *loop,
                 const ss_jobs_options *opt, char msg[SS_STORE_MSG])
{
    *out = NULL;
    msg[0] = 0;
    if (opt->max_attempts < 1 || opt->max_batch < 1 || opt->lease_ms < 1 ||
        opt->lease_ms > SS_JOBS_LEASE_MS_MAX || opt->queue_capacity < 1) {
        snprintf(msg, SS_STORE_MSG, "jobs: bad options (max attempts, batch, lease ms "
                 "and capacity must be >= 1, lease ms <= %u)", SS_JOBS_LEASE_MS_MAX);
        return SS_ERR_INVALID;
    }
    ss_jobs *j = calloc(1, sizeof *j);
    if (!j) {
        snprintf(msg, SS_STORE_MSG, "jobs: out of memory");
        return SS_ERR_NOMEM;
    }
    j->st = st;
    j->w = w;
    j->loop = loop;
    j->opt = *opt;
    j->env = ss_store_env(st);
    int rc = ss_jobs_db_open(j->env, &j->dbi, msg);
    if (rc < 0)
        goto fail;
    uint64_t max_id = 0;
    rc = ss_jobs_db_scan(j->env, j->dbi, scan_cb, j, &max_id, msg);
    if (rc < 0)
        goto fail;
    j->next_id = max_id + 1;
    rc = uv_timer_init(loop, &j->timer);
    if (rc < 0) {
        snprintf(msg, SS_STORE_MSG, "jobs: timer: %s", uv_strerror(rc));
        rc = SS_ERR_INTERNAL;
        goto fail;
    }
    j->timer.data = j;
    ss_map_each(&j->savers, settle_saver_cb, j);
    uint64_t queued = 0, done = 0;
    for (size_t i = 0; i < j->savers.nb; i++)
        for (ss_map_node *n = j->savers.b[i]; n; n = n->next) {
            saverq *sv = (saverq *)n;
            queued += sv->n[J_QUEUED];
            done += sv->n[J_DONE] + sv->n[J_FAILED];
        }
    SS_LOG(SS_LOG_INFO, "jobs: %" PRIu64 " queued and %" PRIu64 " done/failed segments "
           "restored", queued, done);
    *out = j;
    return 0;
fail:
    /* Nothing of the index escaped yet: free it directly. */
    j->closing = true;
    j->timer_closed = true;
    ss_jobs_close(j, NULL, NULL);
    return rc;
}

static bool closing_reply(ss_jobs *j, ss_jobs_reply_fn cb, void *arg)
{
    if (!j->closing)
        return false;
    reply_status(cb, arg, CODE(UNAVAILABLE), "server is shutting down");
    return true;
}

void ss_jobs_submit(ss_jobs *j, const Statesaver__V1__SubmitRequest *req,
                    ss_jobs_reply_fn cb, void *arg)
{
    if (closing_reply(j, cb, arg))
        return;
    char kbuf[96];
    const ss_tensor_msg *in = req->inputs;
    if (req->key.len < SS_KEY_MIN || req->key.len > j->opt.max_key_bytes) {
        reply_status(cb, arg, CODE(INVALID_ARGUMENT), "key must be %u..%zu bytes, got %zu",
                     SS_KEY_MIN, j->opt.max_key_bytes, req->key.len);
        return;
    }
    fmt_key(kbuf, sizeof kbuf, req->key.data, req->key.len);
    if (!in || in->dtype != STATESAVER__V1__DTYPE__DT_FLOAT32 || in->n_shape != 2 ||
        in->shape[0] < 1 || in->shape[1] < 1 || in->shape[0] > (int64_t)SS_JOBS_STEPS_MAX ||
        ss_tensor_check(in) < 0) {
        char shp[64] = "none";
        if (in)
            ss_shape_format(in->shape, in->n_shape, shp, sizeof shp);
        reply_status(cb, arg, CODE(INVALID_ARGUMENT),
                     "key %s segment %" PRIu64 ": inputs must be float32 [T, input_size] "
                     "with 1 <= T <= %u and data matching the shape; got %s %s (%zu bytes)",
                     kbuf, req->segment, SS_JOBS_STEPS_MAX, in ? ss_dtype_name(in->dtype) : "",
                     shp, in ? in->data.len : 0);
        return;
    }
    if (req->length > (uint64_t)in->shape[0] || in->shape[1] > UINT32_MAX) {
        reply_status(cb, arg, CODE(INVALID_ARGUMENT),
                     "key %s segment %" PRIu64 ": length %" PRIu32 " exceeds T = %" PRId64,
                     kbuf, req->segment, req->length, in->shape[0]);
        return;
    }
    size_t slen = saver_name_check(req->saver, cb, arg);
    if (slen == 0)
        return;
    saverq *sv = saver_declared(j, req->saver, slen, cb, arg);
    if (!sv)
        return;
    seq *sq = seq_find(sv, req->key.data, req->key.len);
    job *jb = sq ? seq_job(sq, req->segment) : NULL;
    bool created_seq = false;
    if (!jb) {
        if (!sq) {
            sq = seq_new(j, sv, req->key.data, req->key.len, wall_ms());
            if (!sq) {
                reply_status(cb, arg, CODE(INTERNAL), "out of memory");
                return;
            }
            created_seq = true;
            refresh_next(j, sq);
        }
        job *bad = seq_failed(sq);
        const char *why = NULL;
        char text[SS_JOB_REASON_MAX + 128];
        int code = CODE(FAILED_PRECONDITION);
        if (req->segment < sq->next) {
            snprintf(text, sizeof text, "key %s: segment %" PRIu64 " is already saved "
                     "(next_segment %" PRIu64 ")", kbuf, req->segment, sq->next);
            why = text;
        } else if (bad && bad->segment < req->segment) {
            snprintf(text, sizeof text, "key %s: segment %" PRIu64 " failed: %s", kbuf,
                     bad->segment, bad->reason ? bad->reason : "unknown reason");
            why = text;
        } else {
            for (size_t i = 0; i < sq->n_jobs && !why; i++) {
                job *o = sq->jobs[i];
                if (o->last && o->segment < req->segment) {
                    snprintf(text, sizeof text, "key %s: the sequence ends at segment %" PRIu64
                             " (last), segment %" PRIu64 " cannot follow", kbuf, o->segment,
                             req->segment);
                    why = text;
                } else if (req->last && o->segment > req->segment) {
                    snprintf(text, sizeof text, "key %s: segment %" PRIu64 " cannot be last: "
                             "segment %" PRIu64 " is queued", kbuf, req->segment, o->segment);
                    why = text;
                }
            }
        }
        if (!why && j->n_active >= j->opt.queue_capacity) {
            snprintf(text, sizeof text, "job queue is full (capacity %" PRIu64
                     " queued + leased segments)", j->opt.queue_capacity);
            why = text;
            code = CODE(RESOURCE_EXHAUSTED);
        }
        if (why) {
            reply_status(cb, arg, code, "%s", why);
            if (created_seq)
                seq_settle(j, sq);
            return;
        }
        jb = calloc(1, sizeof *jb);
        if (jb) {
            jb->segment = req->segment; /* before seq_insert: it sorts by it */
            jb->length = req->length;
            jb->in_rows = (uint32_t)in->shape[0];
            jb->last = req->last;
            jb->submit_ms = wall_ms();
            jb->state = J_SUBMITTING;
        }
        if (!jb || seq_insert(sq, jb) < 0) {
            free(jb);
            reply_status(cb, arg, CODE(INTERNAL), "out of memory");
            if (created_seq)
                seq_settle(j, sq);
            return;
        }
        jb->id = j->next_id++;
        sv->n[J_SUBMITTING]++;
        j->n_active++;
    }
    /* One writer op; it compares with an existing record in the txn. */
    jobs_op *op = op_new(j, OP_SUBMIT, 1);
    size_t klen = req->key.len, slen2 = slen;
    uint8_t *buf = op ? malloc(klen + slen2 + in->data.len + 1) : NULL;
    if (!buf) {
        op_free(op);
        reply_status(cb, arg, CODE(INTERNAL), "out of memory");
        if (jb->state == J_SUBMITTING && jb->submits == 0) {
            job_detach(j, jb);
            job_release(jb);
        }
        seq_settle(j, sq);
        return;
    }
    patch *p = &op->p[0];
    p->buf = buf;
    memcpy(buf, req->saver, slen2);
    memcpy(buf + slen2, req->key.data, klen);
    if (in->data.len)
        memcpy(buf + slen2 + klen, in->data.data, in->data.len);
    p->jb = jb;
    p->id = jb->id;
    p->kind = P_INSERT;
    p->rec.state = SS_JOB_QUEUED;
    p->rec.last = req->last;
    p->rec.length = req->length;
    p->rec.segment = req->segment;
    p->rec.submit_ms = jb->submit_ms;
    p->rec.saver.data = buf;
    p->rec.saver.len = slen2;
    p->rec.key.data = buf + slen2;
    p->rec.key.len = klen;
    p->rec.in_rows = (uint32_t)in->shape[0];
    p->rec.in_cols = (uint32_t)in->shape[1];
    p->rec.inputs = buf + slen2 + klen;
    op->cb = cb;
    op->arg = arg;
    jb->submits++;
    op_submit(j, op);
}

void ss_jobs_lease(ss_jobs *j, const Statesaver__V1__LeaseRequest *req,
                   ss_jobs_reply_fn cb, void *arg)
{
    if (closing_reply(j, cb, arg))
        return;
    size_t slen = saver_name_check(req->saver, cb, arg);
    if (slen == 0)
        return;
    if (req->lease_ms > SS_JOBS_LEASE_MS_MAX) {
        reply_status(cb, arg, CODE(INVALID_ARGUMENT), "lease_ms %" PRIu32 " exceeds %u",
                     req->lease_ms, SS_JOBS_LEASE_MS_MAX);
        return;
    }
    saverq *sv = saver_declared(j, req->saver, slen, cb, arg);
    if (!sv)
        return;
    uint32_t max_batch = req->max_batch ? req->max_batch : 1;
    if (max_batch > j->opt.max_batch)
        max_batch = j->opt.max_batch;
    uint32_t lease_ms = req->lease_ms ? req->lease_ms : j->opt.lease_ms;
    if (!sv->w_head && serve(j, sv, max_batch, lease_ms, req->worker, cb, arg))
        return;
    uint32_t wait_ms = req->wait_ms > SS_WAIT_MS_MAX ? SS_WAIT_MS_MAX : req->wait_ms;
    if (wait_ms == 0) {
        reply_empty_lease(cb, arg);
        return;
    }
    waiter *w = waiter_new(j, T_WAIT_LEASE, wait_ms, cb, arg);
    if (!w)
        return;
    w->sv = sv;
    w->max_batch = max_batch;
    w->lease_ms = lease_ms;
    snprintf(w->worker, sizeof w->worker, "%s", req->worker ? req->worker : "");
    w->prev = sv->w_tail;
    if (sv->w_tail)
        sv->w_tail->next = w;
    else
        sv->w_head = w;
    sv->w_tail = w;
    j->waiting++;
}

void ss_jobs_complete(ss_jobs *j, const Statesaver__V1__CompleteRequest *req,
                      ss_jobs_reply_fn cb, void *arg)
{
    if (closing_reply(j, cb, arg))
        return;
    uint8_t idkey[8];
    for (int i = 0; i < 8; i++)
        idkey[i] = (uint8_t)(req->lease_id >> (56 - 8 * i));
    ss_map_node *mn = ss_map_find(&j->leases, idkey, 8);
    if (!mn) {
        reply_status(cb, arg, CODE(FAILED_PRECONDITION), "lease %" PRIu64 " expired or unknown",
                     req->lease_id);
        return;
    }
    lease *ls = (lease *)((char *)mn - offsetof(lease, mn));
    if (req->saver && req->saver[0] && strcmp(req->saver, ls->sv->name) != 0) {
        reply_status(cb, arg, CODE(INVALID_ARGUMENT), "lease %" PRIu64 " belongs to saver %s, "
                     "not %s", ls->id, ls->sv->name, req->saver);
        return;
    }
    if (req->n_items == 0) {
        reply_status(cb, arg, CODE(INVALID_ARGUMENT), "complete: no items");
        return;
    }
    ss_schema *schema = NULL;
    if (schema_get(j, ls->sv->name, &schema, cb, arg) < 0)
        return;
    size_t n = req->n_items;
    size_t *idx = calloc(n, sizeof *idx);
    jobs_op *op = idx ? op_new(j, OP_COMPLETE, n) : NULL;
    if (op)
        op->already = calloc(n, sizeof *op->already);
    if (!idx || !op || !op->already) {
        reply_status(cb, arg, CODE(INTERNAL), "out of memory");
        goto fail;
    }
    op->schema = schema;
    schema = NULL;
    op->n_req = n;
    op->cb = cb;
    op->arg = arg;
    /* Validate everything before changing anything. */
    for (size_t i = 0; i < n; i++) {
        const Statesaver__V1__CompletedSegment *it = req->items[i];
        char kbuf[96];
        fmt_key(kbuf, sizeof kbuf, it->key.data, it->key.len);
        size_t k;
        for (k = 0; k < ls->n; k++) {
            job *jb = ls->items[k].jb;
            seq *sq = jb->sq;
            if (sq && jb->segment == it->segment && sq->key_len == it->key.len &&
                memcmp(sq->key, it->key.data, it->key.len) == 0)
                break;
        }
        if (k == ls->n) {
            reply_status(cb, arg, CODE(INVALID_ARGUMENT),
                         "key %s segment %" PRIu64 " is not part of lease %" PRIu64, kbuf,
                         it->segment, ls->id);
            goto fail;
        }
        for (size_t m = 0; m < i; m++)
            if (idx[m] == k) {
                reply_status(cb, arg, CODE(INVALID_ARGUMENT),
                             "key %s segment %" PRIu64 " appears twice", kbuf, it->segment);
                goto fail;
            }
        idx[i] = k;
        if (ls->items[k].st == LI_BUSY) {
            reply_status(cb, arg, CODE(FAILED_PRECONDITION),
                         "key %s segment %" PRIu64 " is being completed by another request",
                         kbuf, it->segment);
            goto fail;
        }
        if (ls->items[k].st == LI_DONE)
            continue;
        job *jb = ls->items[k].jb;
        if (it->error && it->error[0])
            continue;
        const ss_tensor_msg *o = it->outputs;
        if (!o || o->dtype != STATESAVER__V1__DTYPE__DT_FLOAT32 || o->n_shape != 2 ||
            o->shape[0] != (int64_t)jb->in_rows || o->shape[1] < 1 ||
            o->shape[1] > UINT32_MAX || ss_tensor_check(o) < 0) {
            char shp[64] = "none";
            if (o)
                ss_shape_format(o->shape, o->n_shape, shp, sizeof shp);
            reply_status(cb, arg, CODE(INVALID_ARGUMENT),
                         "key %s segment %" PRIu64 ": outputs must be float32 [%" PRIu32
                         ", output_size] matching their data; got %s %s", kbuf, it->segment,
                         jb->in_rows, o ? ss_dtype_name(o->dtype) : "", shp);
            goto fail;
        }
        if (it->n_states != op->schema->n_states) {
            reply_status(cb, arg, CODE(INVALID_ARGUMENT),
                         "key %s segment %" PRIu64 ": %zu states given, saver %s has %zu",
                         kbuf, it->segment, it->n_states, ls->sv->name, op->schema->n_states);
            goto fail;
        }
        for (size_t s = 0; s < it->n_states; s++) {
            const ss_state_spec *sp = &op->schema->states[s];
            const ss_tensor_msg *t = it->states[s];
            bool ok = t && t->dtype == (Statesaver__V1__DType)sp->dtype &&
                      t->n_shape == sp->rank && t->data.len == sp->nbytes &&
                      (sp->rank == 0 || memcmp(t->shape, sp->shape, sp->rank * sizeof(int64_t)) == 0);
            if (!ok) {
                char want[64], got[64] = "none";
                ss_shape_format(sp->shape, sp->rank, want, sizeof want);
                if (t)
                    ss_shape_format(t->shape, t->n_shape, got, sizeof got);
                reply_status(cb, arg, CODE(INVALID_ARGUMENT),
                             "key %s segment %" PRIu64 ": state %s must be %s %s, got %s %s",
                             kbuf, it->segment, sp->name, ss_dtype_name(sp->dtype), want,
                             t ? ss_dtype_name(t->dtype) : "", got);
                goto fail;
            }
        }
    }
    /* Build the patches (copies of outputs and states). */
    op->n = 0;
    for (size_t i = 0; i < n; i++) {
        const Statesaver__V1__CompletedSegment *it = req->items[i];
        lease_item *li = &ls->items[idx[i]];
        if (li->st == LI_DONE) {
            op->already[i] = true;
            continue;
        }
        job *jb = li->jb;
        patch *p = &op->p[op->n];
        p->req_index = i;
        if (it->error && it->error[0]) {
            char why[SS_JOB_REASON_MAX];
            snprintf(why, sizeof why, "worker %s: %.900s", ls->worker[0] ? ls->worker : "",
                     it->error);
            if (patch_attempt(j, p, jb, why) < 0) {
                reply_status(cb, arg, CODE(INTERNAL), "out of memory");
                goto unwind;
            }
            op->n++;
            li->st = LI_BUSY;
            continue;
        }
        size_t ns = op->schema->n_states;
        size_t nb = it->key.len + it->outputs->data.len + op->schema->state_bytes;
        p->buf = malloc(nb ? nb : 1);
        p->states = calloc(ns ? ns : 1, sizeof *p->states);
        if (jb->last)
            p->finals = calloc(ns ? ns : 1, sizeof *p->finals);
        if (!p->buf || !p->states || (jb->last && !p->finals)) {
            free(p->buf);
            free(p->states);
            free(p->finals);
            p->buf = NULL;
            p->states = NULL;
            p->finals = NULL;
            reply_status(cb, arg, CODE(INTERNAL), "out of memory");
            goto unwind;
        }
        uint8_t *q = p->buf;
        memcpy(q, it->key.data, it->key.len);
        p->key.data = q;
        p->key.len = it->key.len;
        q += it->key.len;
        memcpy(q, it->outputs->data.data, it->outputs->data.len);
        p->outputs = q;
        p->out_rows = (uint32_t)it->outputs->shape[0];
        p->out_cols = (uint32_t)it->outputs->shape[1];
        q += it->outputs->data.len;
        for (size_t s = 0; s < ns; s++) {
            const ss_state_spec *sp = &op->schema->states[s];
            memcpy(q, it->states[s]->data.data, sp->nbytes);
            p->states[s] = q;
            if (p->finals) {
                ss_job_tensor *t = &p->finals[s];
                t->name = sp->name;
                t->name_len = strlen(sp->name);
                t->dtype = sp->dtype;
                t->rank = sp->rank;
                memcpy(t->dims, sp->shape, sizeof t->dims);
                t->data = q;
                t->nbytes = sp->nbytes;
            }
            q += sp->nbytes;
        }
        p->n_finals = p->finals ? ns : 0;
        p->jb = jb;
        p->id = jb->id;
        p->kind = P_DONE;
        p->segment = jb->segment;
        p->final = jb->last;
        jb->busy++;
        op->n++;
        li->st = LI_BUSY;
    }
    free(idx);
    if (op->n == 0) {
        /* Every item was already resolved under this lease. */
        j->inflight++;
        op_done(&op->base, 0, "");
        return;
    }
    op_submit(j, op);
    return;
unwind:
    for (size_t i = 0; i < op->n; i++) {
        patch *p = &op->p[i];
        p->jb->busy--;
        for (size_t k = 0; k < ls->n; k++)
            if (ls->items[k].jb == p->jb)
                ls->items[k].st = LI_PENDING;
    }
fail:
    free(idx);
    op_free(op);
    ss_schema_unref(schema);
}

void ss_jobs_await(ss_jobs *j, const Statesaver__V1__AwaitRequest *req,
                   ss_jobs_reply_fn cb, void *arg)
{
    if (closing_reply(j, cb, arg))
        return;
    size_t slen = req->saver ? strlen(req->saver) : 0;
    if (slen == 0 || slen > SS_SAVER_NAME_MAX || req->key.len < SS_KEY_MIN ||
        req->key.len > j->opt.max_key_bytes) {
        reply_status(cb, arg, CODE(INVALID_ARGUMENT),
                     "await needs a saver name (1..%u bytes) and a key (1..%zu bytes)",
                     SS_SAVER_NAME_MAX, j->opt.max_key_bytes);
        return;
    }
    char kbuf[96];
    fmt_key(kbuf, sizeof kbuf, req->key.data, req->key.len);
    saverq *sv = saver_find(j, req->saver);
    seq *sq = sv ? seq_find(sv, req->key.data, req->key.len) : NULL;
    job *jb = sq ? seq_job(sq, req->segment) : NULL;
    if (!jb) {
        reply_status(cb, arg, CODE(NOT_FOUND),
                     "no job for saver %s key %s segment %" PRIu64
                     " (never submitted, or collected)", req->saver, kbuf, req->segment);
        return;
    }
    if (jb->state >= J_DONE) {
        bool collect = req->collect; /* req may be gone once answered */
        reply_await(j, jb, cb, arg);
        if (collect)
            collect_job(j, jb);
        return;
    }
    uint32_t wait_ms = req->wait_ms > SS_WAIT_MS_MAX ? SS_WAIT_MS_MAX : req->wait_ms;
    if (wait_ms == 0) {
        reply_status(cb, arg, CODE(DEADLINE_EXCEEDED),
                     "key %s segment %" PRIu64 " is not done yet (%s)", kbuf, req->segment,
                     jb->state == J_LEASED ? "leased" : "queued");
        return;
    }
    waiter *w = waiter_new(j, T_WAIT_AWAIT, wait_ms, cb, arg);
    if (!w)
        return;
    w->jb = jb;
    w->collect = req->collect;
    w->next = jb->awaits;
    if (jb->awaits)
        jb->awaits->prev = w;
    jb->awaits = w;
    j->waiting++;
}

bool ss_jobs_cancel(ss_jobs *j, void *arg)
{
    /* Every parked request has a deadline, so the timer heap lists them all;
     * a close is rare enough for a linear scan. */
    for (size_t i = 0; i < j->timers.n; i++) {
        timed *tm = (timed *)j->timers.v[i];
        if (tm->kind == T_LEASE || ((waiter *)tm)->arg != arg)
            continue;
        waiter *w = (waiter *)tm;
        ss_heap_remove(&j->timers, &tm->hn);
        job *jb = NULL;
        if (tm->kind == T_WAIT_LEASE) {
            waiter_unlink_lease(w->sv, w);
        } else {
            jb = w->jb;
            waiter_unlink_await(w);
        }
        j->waiting--;
        reply_status(w->cb, w->arg, CODE(CANCELLED), "the client went away");
        free(w);
        if (jb)
            job_release(jb);
        rearm(j);
        return true;
    }
    return false;
}

void ss_jobs_notify_saved(ss_jobs *j, const char *saver, size_t n, const ss_bytes *keys)
{
    if (j->closing || !saver)
        return;
    saverq *sv = saver_find(j, saver);
    if (!sv)
        return;
    for (size_t i = 0; i < n; i++) {
        seq *sq = seq_find(sv, keys[i].data, keys[i].len);
        if (!sq)
            continue;
        refresh_next(j, sq);
        propagate(j, sq);
        seq_settle(j, sq);
    }
    rearm(j);
}

void ss_jobs_stats_get(ss_jobs *j, const char *saver, ss_jobs_stats *out)
{
    memset(out, 0, sizeof *out);
    for (size_t i = 0; i < j->savers.nb; i++)
        for (ss_map_node *n = j->savers.b[i]; n; n = n->next) {
            saverq *sv = (saverq *)n;
            if (saver && saver[0] && strcmp(saver, sv->name) != 0)
                continue;
            out->queued += sv->n[J_SUBMITTING] + sv->n[J_QUEUED];
            out->leased += sv->n[J_LEASED];
            out->done_stored += sv->n[J_DONE] + sv->n[J_FAILED];
        }
    out->completed = j->completed;
    out->failed = j->failed;
    out->expired_leases = j->expired;
    out->saves_applied = j->saves;
    out->waiting = j->waiting;
}

/* ---- close ------------------------------------------------------------ */

static void free_seq_cb(void *arg, ss_map_node *node)
{
    seq *sq = (seq *)node;
    (void)arg;
    for (size_t i = 0; i < sq->n_jobs; i++)
        job_free(sq->jobs[i]);
    free(sq->jobs);
    free(sq->key);
    free(sq);
}

static void free_saver_cb(void *arg, ss_map_node *node)
{
    saverq *sv = (saverq *)node;
    ss_map_each(&sv->seqs, free_seq_cb, arg);
    ss_map_free(&sv->seqs);
    ss_heap_free(&sv->ready);
    free(sv->name);
    free(sv);
}

static void free_lease_cb(void *arg, ss_map_node *node)
{
    lease *ls = (lease *)((char *)node - offsetof(lease, mn));
    (void)arg;
    free(ls->items);
    free(ls);
}

static void maybe_finish_close(ss_jobs *j)
{
    if (!j->closing || !j->timer_closed || j->inflight > 0)
        return;
    /* Dead leases (expired, awaiting an op) are gone with the ops; what is
     * left is live leases and the index. */
    ss_map_each(&j->leases, free_lease_cb, NULL);
    ss_map_free(&j->leases);
    ss_map_each(&j->savers, free_saver_cb, NULL);
    ss_map_free(&j->savers);
    ss_heap_free(&j->timers);
    void (*closed)(void *) = j->closed;
    void *arg = j->closed_arg;
    free(j);
    if (closed)
        closed(arg);
}

static void on_timer_closed(uv_handle_t *h)
{
    ss_jobs *j = h->data;
    j->timer_closed = true;
    maybe_finish_close(j);
}

void ss_jobs_close(ss_jobs *j, void (*closed)(void *arg), void *arg)
{
    if (!j) {
        if (closed)
            closed(arg);
        return;
    }
    bool direct = j->timer_closed; /* open failed before the timer existed */
    j->closing = true;
    j->closed = closed;
    j->closed_arg = arg;
    /* Answer everything parked; leases simply end (not persisted). */
    ss_heap_node *hn;
    while ((hn = ss_heap_min(&j->timers))) {
        ss_heap_remove(&j->timers, hn);
        timed *tm = (timed *)hn;
        if (tm->kind == T_LEASE)
            continue;
        waiter *w = (waiter *)tm;
        if (tm->kind == T_WAIT_LEASE) {
            waiter_unlink_lease(w->sv, w);
        } else {
            waiter_unlink_await(w);
        }
        j->waiting--;
        reply_status(w->cb, w->arg, CODE(UNAVAILABLE), "server is shutting down");
        free(w);
    }
    if (direct)
        maybe_finish_close(j);
    else
        uv_close((uv_handle_t *)&j->timer, on_timer_closed);
}
