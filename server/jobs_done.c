/* jobs_done -- loop side of the queue's writer ops: build and submit them,
 * and make the index follow each op after its commit (or failure).
 */
#include "jobs_internal.h"

/* ---- writer ops ------------------------------------------------------- */

jobs_op *jq_op_new(ss_jobs *j, int kind, size_t n)
{
    jobs_op *op = calloc(1, sizeof *op);
    if (!op)
        return NULL;
    op->p = calloc(n ? n : 1, sizeof *op->p);
    if (!op->p) {
        free(op);
        return NULL;
    }
    op->base.run = jq_op_run;
    op->base.done = jq_op_done;
    op->jobs = j;
    op->kind = kind;
    op->dbi = j->dbi;
    op->fault_rc = j->fault_write ? SS_ERR_FULL : 0;
    op->now_ms = jq_wall_ms();
    op->n = n;
    return op;
}

void jq_op_free(jobs_op *op)
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
    free(op->saver);
    free(op->keys);
    free(op->kbuf);
    free(op->had_state);
    free(op->seqs);
    ss_schema_unref(op->schema);
    free(op);
}

void jq_op_submit(ss_jobs *j, jobs_op *op)
{
    j->inflight++;
    ss_writer_submit(j->w, &op->base);
}

/* Apply a retry/fail patch to memory (after commit); the caller wakes
 * awaits and settles the sequence. */
void jq_apply_retry_fail(ss_jobs *j, patch *p)
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
        jq_job_set_state(jb, sv, j, J_FAILED);
        j->failed++;
    } else {
        jq_job_set_state(jb, sv, j, J_QUEUED);
    }
}

static void done_submit(ss_jobs *j, jobs_op *op, int rc, const char *msg)
{
    patch *p = &op->p[0];
    job *jb = p->jb;
    jb->submits--;
    if (rc == 0 && p->inserted && jb->state == J_SUBMITTING && !jb->removed)
        jq_job_set_state(jb, jb->sq->sv, j, J_QUEUED);
    if (rc == 0) {
        Statesaver__V1__SubmitResponse body = STATESAVER__V1__SUBMIT_RESPONSE__INIT;
        body.already_queued = p->already;
        jq_reply_ok(op->cb, op->arg, STATESAVER__V1__RESPONSE__BODY_SUBMIT, &body);
    } else {
        jq_reply_status(op->cb, op->arg, rc == SS_ERR_CONFLICT ? CODE(ALREADY_EXISTS) : jq_err_code(rc),
                     "%s", msg && *msg ? msg : ss_strerror(rc));
    }
    /* A context record that did not commit is not the sequence's. */
    if (rc < 0 && op->n > 1 && !jb->removed && jb->sq->ctx_id == op->p[1].id)
        jb->sq->ctx_id = 0;
    if (jb->removed) {
        jq_job_release(jb);
        return;
    }
    seq *sq = jb->sq;
    if (jb->state == J_SUBMITTING && jb->submits == 0) {
        /* Never written: forget it; parked awaits learn it does not exist. */
        jq_job_detach(j, jb);
        jq_wake_awaits(j, jb, NULL);
        jq_job_release(jb);
    } else {
        jq_propagate(j, sq);
    }
    jq_seq_settle(j, sq);
}

/* After an op's memory changes: answer awaits of jobs that ended, settle
 * the sequences (may serve parked leases), release removed jobs. */
void jq_finish_patches(ss_jobs *j, jobs_op *op)
{
    for (size_t i = 0; i < op->n; i++) {
        const patch *p = &op->p[i];
        job *jb = p->jb;
        /* A Complete's outputs are answered from the op's own copy. */
        const patch *mem = op->kind == OP_COMPLETE && p->kind == P_DONE &&
                           !p->conflict ? p : NULL;
        if (!jb->removed && jb->state >= J_DONE && jb->awaits)
            jq_wake_awaits(j, jb, mem); /* may collect: jb can be removed after */
    }
    for (size_t i = 0; i < op->n; i++) {
        job *jb = op->p[i].jb;
        if (!jb->removed)
            jq_seq_settle(j, jb->sq);
    }
    for (size_t i = 0; i < op->n; i++)
        jq_job_release(op->p[i].jb);
}

/* A retry/fail/delete patch whose write did not commit: memory stays as
 * the disk has it. A job whose lease expired is queued again with its
 * stored attempt count (the disk never had the lease); a collected job
 * stays in the index (its record is still there). */
static void undo_patch(ss_jobs *j, patch *p)
{
    job *jb = p->jb;
    jb->busy--;
    if (p->kind == P_DELETE) {
        jb->collecting = false;
        if (!jb->removed)
            jb->sq->sv->n_collecting--;
    } else if (!jb->removed && jb->state == J_LEASED && !jb->ls) {
        jq_job_set_state(jb, jb->sq->sv, j, J_QUEUED);
    } else if (!jb->removed && jb->state == J_QUEUED) {
        /* Failing it (or counting a failed read) did not commit: try
         * again after a hold, not at once in a loop with the writer. */
        jq_job_hold(j, jb);
    }
}

/* A collect committed: the job leaves the index now. */
static void apply_delete(ss_jobs *j, patch *p)
{
    job *jb = p->jb;
    jb->busy--;
    jb->collecting = false;
    if (jb->removed)
        return;
    seq *sq = jb->sq;
    sq->sv->n_collecting--;
    jq_job_detach(j, jb);
    jq_seq_settle(j, sq);
}

static void done_patches(ss_jobs *j, jobs_op *op, int rc, const char *msg)
{
    if (rc < 0) {
        SS_LOG(SS_LOG_ERROR, "jobs: recording %s failed: %s (left as stored)",
               op->kind == OP_EXPIRE ? "expired leases" :
               op->kind == OP_PROPAGATE ? "failed segments" : "a collect",
               msg && *msg ? msg : ss_strerror(rc));
        /* No propagate here: it would retry the same write at once. */
        for (size_t i = 0; i < op->n; i++)
            undo_patch(j, &op->p[i]);
        jq_finish_patches(j, op);
        return;
    }
    for (size_t i = 0; i < op->n; i++) {
        patch *p = &op->p[i];
        if (p->kind == P_DELETE)
            apply_delete(j, p);
        else
            jq_apply_retry_fail(j, p);
    }
    for (size_t i = 0; i < op->n; i++) {
        job *jb = op->p[i].jb;
        if (!jb->removed && op->p[i].kind != P_DELETE)
            jq_propagate(j, jb->sq);
    }
    jq_finish_patches(j, op);
}

void jq_op_done(ss_write_op *base, int rc, const char *msg)
{
    jobs_op *op = (jobs_op *)base;
    ss_jobs *j = op->jobs;
    switch (op->kind) {
    case OP_SUBMIT: done_submit(j, op, rc, msg); break;
    case OP_COMPLETE: jq_done_complete(j, op, rc, msg); break;
    default: done_patches(j, op, rc, msg); break;
    }
    jq_op_free(op);
    j->inflight--;
    jq_rearm(j);
    jq_maybe_finish_close(j);
}

/* Room kept for the " (attempt N of M, giving up)" suffix: a longer reason
 * is cut so the attempt count always shows. */
#define REASON_WHY_MAX ((int)SS_JOB_REASON_MAX - 64)

/* Fill a retry-or-fail patch for jb after one more failed attempt. */
int jq_patch_attempt(ss_jobs *j, patch *p, job *jb, const char *why)
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
    p->reason = jq_dup_bytes(text, strlen(text));
    if (!p->reason)
        return SS_ERR_NOMEM;
    jb->busy++;
    return 0;
}

/* Fail the queued jobs of sq that follow a failed segment (and those whose
 * segment the sequence state has already passed). */
void jq_propagate(ss_jobs *j, seq *sq)
{
    if (j->closing)
        return;
    job *bad = jq_seq_failed(sq);
    size_t n = 0;
    for (size_t i = 0; i < sq->n_jobs; i++) {
        job *jb = sq->jobs[i];
        if (jb->state == J_QUEUED && jb->busy == 0 &&
            ((bad && jb->segment > bad->segment) || jb->segment < sq->next))
            n++;
    }
    if (n == 0)
        return;
    jobs_op *op = jq_op_new(j, OP_PROPAGATE, n);
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
        p->reason = jq_dup_bytes(text, strlen(text));
        jb->busy++;
    }
    jq_op_submit(j, op);
}

/* Re-read the sequence's next_segment from the store. */
void jq_refresh_next(ss_jobs *j, seq *sq)
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
