/* jobs_index -- the job queue's in-memory index: savers, sequences, jobs,
 * the ready order and the timer heap, plus small reply helpers.
 */
#include "jobs_internal.h"

#include <stdarg.h>
#include <time.h>

/* ---- small helpers ---------------------------------------------------- */

uint64_t jq_wall_ms(void)
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

int jq_reply_status(ss_jobs_reply_fn cb, void *arg, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
int jq_reply_status(ss_jobs_reply_fn cb, void *arg, int code, const char *fmt, ...)
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
int jq_err_code(int rc)
{
    switch (rc) {
    case SS_ERR_FULL: return CODE(RESOURCE_EXHAUSTED);
    case SS_ERR_NOT_FOUND: return CODE(NOT_FOUND);
    case SS_ERR_CONFLICT: return CODE(FAILED_PRECONDITION);
    case SS_ERR_INVALID: case SS_ERR_SHAPE: case SS_ERR_TOO_BIG: return CODE(INVALID_ARGUMENT);
    default: return CODE(INTERNAL);
    }
}

char *jq_dup_bytes(const void *p, size_t n)
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

void jq_rearm(ss_jobs *j)
{
    if (j->timer_closed || uv_is_closing((uv_handle_t *)&j->timer))
        return;
    ss_heap_node *min = ss_heap_min(&j->timers);
    if (!min) {
        uv_timer_stop(&j->timer);
        return;
    }
    uint64_t now = uv_now(j->loop);
    uv_timer_start(&j->timer, jq_on_timer, min->k1 > now ? min->k1 - now : 0, 0);
}

/* Answer OK with one of the job bodies (body must match body_case). */
int jq_reply_ok(ss_jobs_reply_fn cb, void *arg, Statesaver__V1__Response__BodyCase body_case,
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
    case STATESAVER__V1__RESPONSE__BODY_CANCEL: resp.cancel = body; break;
    default: return SS_ERR_INTERNAL;
    }
    return cb(arg, &resp);
}

int jq_timer_add(ss_jobs *j, timed *t, int kind, uint64_t after_ms)
{
    t->kind = kind;
    t->hn.k1 = mono_ms(j) + after_ms;
    t->hn.k2 = ++j->tie;
    int rc = ss_heap_push(&j->timers, &t->hn);
    if (rc == 0)
        jq_rearm(j);
    return rc;
}

void jq_timer_del(ss_jobs *j, timed *t)
{
    ss_heap_remove(&j->timers, &t->hn);
}

/* ---- index maintenance ------------------------------------------------- */

void jq_job_set_state(job *jb, saverq *sv, ss_jobs *j, int state)
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

saverq *jq_saver_find(ss_jobs *j, const char *name)
{
    ss_map_node *n = ss_map_find(&j->savers, name, strlen(name));
    return n ? (saverq *)n : NULL;
}

saverq *jq_saver_get(ss_jobs *j, const char *name, size_t len)
{
    ss_map_node *n = ss_map_find(&j->savers, name, len);
    if (n)
        return (saverq *)n;
    saverq *sv = calloc(1, sizeof *sv);
    if (!sv)
        return NULL;
    sv->name = jq_dup_bytes(name, len);
    if (!sv->name || ss_map_insert(&j->savers, &sv->mn, sv->name, len) < 0) {
        free(sv->name);
        free(sv);
        return NULL;
    }
    return sv;
}

/* A parked request of the given kind: its timer armed for wait_ms, in the
 * parked map, counted in waiting. The caller links it into its saver's or
 * job's list at once. On failure the request is answered (INTERNAL) and
 * NULL returned. */
waiter *jq_waiter_new(ss_jobs *j, int kind, uint32_t wait_ms, ss_jobs_reply_fn cb, void *arg)
{
    waiter *w = calloc(1, sizeof *w);
    if (!w || jq_timer_add(j, &w->t, kind, wait_ms) < 0) {
        free(w);
        jq_reply_status(cb, arg, CODE(INTERNAL), "out of memory");
        return NULL;
    }
    w->cb = cb;
    w->arg = arg;
    if (ss_map_insert(&j->parked, &w->pn, &w->arg, sizeof w->arg) < 0) {
        jq_timer_del(j, &w->t);
        free(w);
        jq_reply_status(cb, arg, CODE(INTERNAL), "out of memory");
        return NULL;
    }
    w->parked = true;
    j->waiting++;
    return w;
}

void jq_waiter_unlink_lease(saverq *sv, waiter *w)
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
void jq_waiter_unlink_await(waiter *w)
{
    if (w->prev)
        w->prev->next = w->next;
    else
        w->jb->awaits = w->next;
    if (w->next)
        w->next->prev = w->prev;
    w->prev = w->next = NULL;
}

/* The parked request whose reply argument is arg, or NULL. O(1). */
waiter *jq_waiter_find(ss_jobs *j, void *arg)
{
    ss_map_node *n = ss_map_find(&j->parked, &arg, sizeof arg);
    return n ? (waiter *)((char *)n - offsetof(waiter, pn)) : NULL;
}

void jq_waiter_unpark(ss_jobs *j, waiter *w)
{
    jq_timer_del(j, &w->t);
    if (w->parked) {
        ss_map_remove(&j->parked, &w->pn);
        w->parked = false;
    }
    if (w->t.kind == T_WAIT_LEASE)
        jq_waiter_unlink_lease(w->sv, w);
    else
        jq_waiter_unlink_await(w);
    j->waiting--;
}

size_t jq_saver_name_check(const char *name, ss_jobs_reply_fn cb, void *arg)
{
    size_t len = name ? strlen(name) : 0;
    if (len == 0 || len > SS_SAVER_NAME_MAX) {
        jq_reply_status(cb, arg, CODE(INVALID_ARGUMENT), "saver name must be 1..%u bytes",
                     SS_SAVER_NAME_MAX);
        return 0;
    }
    return len;
}

/* The saver's schema in *out (caller unrefs); on failure replies NOT_FOUND
 * or INTERNAL and returns the negative code, *out left NULL. */
int jq_schema_get(ss_jobs *j, const char *name, ss_schema **out, ss_jobs_reply_fn cb,
                      void *arg)
{
    *out = NULL;
    int rc = ss_store_schema(j->st, name, out);
    if (rc < 0)
        jq_reply_status(cb, arg, rc == SS_ERR_NOT_FOUND ? CODE(NOT_FOUND) : CODE(INTERNAL),
                     "saver %s: %s", name,
                     rc == SS_ERR_NOT_FOUND ? "not declared" : ss_strerror(rc));
    return rc;
}

/* The queue of a declared saver (created on first use), or NULL after
 * replying the error: jobs are only taken for savers the store knows. */
saverq *jq_saver_declared(ss_jobs *j, const char *name, size_t len, ss_jobs_reply_fn cb,
                              void *arg)
{
    ss_schema *schema = NULL;
    int rc = jq_schema_get(j, name, &schema, cb, arg);
    ss_schema_unref(schema);
    if (rc < 0)
        return NULL;
    saverq *sv = jq_saver_get(j, name, len);
    if (!sv)
        jq_reply_status(cb, arg, CODE(INTERNAL), "out of memory");
    return sv;
}

seq *jq_seq_find(saverq *sv, const uint8_t *key, size_t len)
{
    ss_map_node *n = ss_map_find(&sv->seqs, key, len);
    return n ? (seq *)n : NULL;
}

seq *jq_seq_new(ss_jobs *j, saverq *sv, const uint8_t *key, size_t len, uint64_t first_ms)
{
    seq *sq = calloc(1, sizeof *sq);
    if (!sq)
        return NULL;
    sq->key = malloc(len ? len : 1);
    if (sq->key)
        memcpy(sq->key, key, len);
    /* Room in the ready heap for every sequence, so that making one ready
     * (seq_settle) never fails to push it. */
    if (!sq->key || ss_heap_reserve(&sv->ready, sv->seqs.n + 1) < 0 ||
        ss_map_insert(&sv->seqs, &sq->mn, sq->key, len) < 0) {
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

job *jq_seq_job(const seq *sq, uint64_t s)
{
    size_t i = seq_lower(sq, s);
    return i < sq->n_jobs && sq->jobs[i]->segment == s ? sq->jobs[i] : NULL;
}

int jq_seq_insert(seq *sq, job *jb)
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
job *jq_seq_failed(const seq *sq)
{
    for (size_t i = 0; i < sq->n_jobs; i++)
        if (sq->jobs[i]->state == J_FAILED)
            return sq->jobs[i];
    return NULL;
}

job *jq_job_from_record(uint64_t id, const ss_job_rec *rec)
{
    job *jb = calloc(1, sizeof *jb);
    if (!jb)
        return NULL;
    jb->id = id;
    jb->segment = rec->segment;
    jb->length = rec->length;
    jb->in_rows = rec->in_rows;
    jb->last = rec->last;
    jb->attempts = rec->attempts;
    jb->submit_ms = rec->submit_ms;
    jb->state = rec->state;
    if (rec->state == SS_JOB_FAILED)
        jb->reason = jq_dup_bytes(rec->reason.data, rec->reason.len);
    return jb;
}

void jq_job_free(job *jb)
{
    if (!jb)
        return;
    free(jb->reason);
    free(jb);
}

/* Take jb out of its sequence (it stays allocated while ops hold it). */
void jq_job_detach(ss_jobs *j, job *jb)
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

void jq_job_release(job *jb)
{
    if (jb->removed && jb->busy == 0 && jb->submits == 0 && !jb->awaits && !jb->waking &&
        !jb->held)
        jq_job_free(jb);
}

static bool seq_ready(const seq *sq)
{
    job *jb = jq_seq_job(sq, sq->next);
    return jb && jb->state == J_QUEUED && jb->busy == 0 && !jb->held;
}

void jq_job_hold(ss_jobs *j, job *jb)
{
    if (jb->held || j->closing)
        return;
    if (!ss_heap_contains(&j->hold_t.hn) &&
        jq_timer_add(j, &j->hold_t, T_HOLD, SS_JOBS_HOLD_MS) < 0)
        return; /* no timer, no hold */
    jb->held = true;
    jb->held_next = j->held;
    j->held = jb;
}

void jq_release_holds(ss_jobs *j)
{
    job *jb = j->held;
    j->held = NULL;
    while (jb) {
        job *next = jb->held_next;
        jb->held = false;
        jb->held_next = NULL;
        if (jb->removed)
            jq_job_release(jb);
        else
            jq_seq_settle(j, jb->sq);
        jb = next;
    }
}

/* Bring the sequence's ready-heap membership up to date, free it when it
 * has no jobs left, and serve parked leases if it became ready. sq must not
 * be used afterwards. */
void jq_seq_settle(ss_jobs *j, seq *sq)
{
    saverq *sv = sq->sv;
    if (sq->n_jobs == 0 && sq->pins == 0) {
        jq_ctx_delete(j, sq->ctx_id); /* the context goes with the sequence */
        ss_heap_remove(&sv->ready, &sq->rn);
        ss_map_remove(&sv->seqs, &sq->mn);
        free(sq->jobs);
        free(sq->key);
        free(sq);
        return;
    }
    bool ready = seq_ready(sq);
    if (ready && !ss_heap_contains(&sq->rn)) {
        int rc = ss_heap_push(&sv->ready, &sq->rn); /* reserved by seq_new */
        if (rc < 0)
            SS_LOG(SS_LOG_ERROR, "jobs: queueing a ready sequence: %s", ss_strerror(rc));
        jq_kick(j, sv);
    } else if (!ready) {
        ss_heap_remove(&sv->ready, &sq->rn);
    }
}
