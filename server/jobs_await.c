/* jobs_await -- Await: answer from a done/failed job record (or from the
 * Complete that just committed it), park until a job ends, collect
 * records, cancel parked requests.
 */
#include "jobs_internal.h"

/* ---- await ------------------------------------------------------------ */

static void collect_job(ss_jobs *j, job *jb);

/* What an Await reply says about a done or failed job, borrowed from its
 * record in LMDB or from the Complete that just committed it. */
typedef struct await_view {
    int state;                  /* SS_JOB_DONE or SS_JOB_FAILED */
    uint32_t length;            /* real rows */
    bool last;                  /* last segment */
    uint32_t attempts;          /* failed tries */
    const uint8_t *reason;      /* failure reason (not NUL-terminated) */
    size_t reason_len;          /* bytes of reason */
    const void *outputs;        /* float32 out_rows x out_cols, or NULL */
    uint32_t out_rows;          /* T */
    uint32_t out_cols;          /* output size */
    size_t n_final;             /* final states at finals */
    const ss_job_tensor *finals;/* n_final tensors (names not
                                   NUL-terminated) */
} await_view;

/* Reply from v; without_tensors leaves outputs and final states out.
 * Tensor data is borrowed by the reply (packed before returning). */
static void send_await(const await_view *v, bool without_tensors,
                       ss_jobs_reply_fn cb, void *arg)
{
    size_t nf = without_tensors || v->state != SS_JOB_DONE ? 0 : v->n_final;
    char **names = calloc(nf + 1, sizeof *names);
    Statesaver__V1__Tensor *tens = calloc(nf + 1, sizeof *tens);
    Statesaver__V1__Tensor **tenp = calloc(nf + 1, sizeof *tenp);
    int64_t (*dims)[SS_TENSOR_MAX_RANK] = calloc(nf + 1, sizeof *dims);
    char *reason = jq_dup_bytes(v->reason, v->reason_len);
    if (!names || !tens || !tenp || !dims || !reason) {
        jq_reply_status(cb, arg, CODE(INTERNAL), "await: out of memory");
        goto out;
    }
    Statesaver__V1__AwaitResponse body = STATESAVER__V1__AWAIT_RESPONSE__INIT;
    body.state = v->state == SS_JOB_DONE ? STATESAVER__V1__SEGMENT_STATE__SEG_DONE
                                         : STATESAVER__V1__SEGMENT_STATE__SEG_FAILED;
    body.length = v->length;
    body.last = v->last;
    body.attempts = v->attempts;
    body.reason = reason;
    if (v->state == SS_JOB_DONE && !without_tensors) {
        statesaver__v1__tensor__init(&tens[0]);
        dims[nf][0] = v->out_rows;
        dims[nf][1] = v->out_cols;
        ss_tensor_borrow(&tens[0], STATESAVER__V1__DTYPE__DT_FLOAT32, dims[nf], 2,
                         v->outputs, (size_t)v->out_rows * v->out_cols * 4u);
        if (v->out_cols) /* a trainer's Complete stores no outputs */
            body.outputs = &tens[0];
        for (size_t i = 0; i < nf; i++) {
            const ss_job_tensor *t = &v->finals[i];
            names[i] = jq_dup_bytes(t->name, t->name_len);
            if (!names[i]) {
                jq_reply_status(cb, arg, CODE(INTERNAL), "await: out of memory");
                goto out;
            }
            memcpy(dims[i], t->dims, sizeof t->dims);
            /* tens[0] is the outputs: final state i is tens[1 + i]. */
            statesaver__v1__tensor__init(&tens[1 + i]);
            ss_tensor_borrow(&tens[1 + i], t->dtype, dims[i], t->rank, t->data,
                             t->nbytes);
            tenp[i] = &tens[1 + i];
        }
        body.n_names = nf;
        body.names = names;
        body.n_final_states = nf;
        body.final_states = tenp;
    }
    jq_reply_ok(cb, arg, STATESAVER__V1__RESPONSE__BODY_AWAIT_SEGMENT, &body);
out:
    if (names)
        for (size_t i = 0; i < nf && names[i]; i++)
            free(names[i]);
    free(names);
    free(tens);
    free(tenp);
    free(dims);
    free(reason);
}
/* Reply to an Await for a done or failed job. Without tensors a done job
 * is answered from memory; otherwise from its record (one read
 * transaction, tensors borrowed from the map until the reply is packed). */
static void reply_await(ss_jobs *j, job *jb, bool without_tensors,
                        ss_jobs_reply_fn cb, void *arg)
{
    await_view v = {.state = SS_JOB_DONE, .length = jb->length, .last = jb->last,
                    .attempts = jb->attempts};
    if (without_tensors && jb->state == J_DONE) {
        send_await(&v, true, cb, arg);
        return;
    }
    MDB_txn *txn = NULL;
    ss_job_tensor *finals = NULL;
    ss_job_rec rec;
    char msg[SS_STORE_MSG];
    int rc = ss_jobs_db_read_begin(j->env, &txn, msg);
    if (rc == 0)
        rc = ss_jobs_db_get(txn, j->dbi, jb->id, &rec, msg);
    if (rc < 0) {
        jq_reply_status(cb, arg, CODE(INTERNAL), "await: %s", msg);
        goto out;
    }
    v.state = rec.state == SS_JOB_DONE ? SS_JOB_DONE : SS_JOB_FAILED;
    v.length = rec.length;
    v.last = rec.last;
    v.attempts = rec.attempts;
    v.reason = rec.reason.data;
    v.reason_len = rec.reason.len;
    if (v.state == SS_JOB_DONE && !without_tensors) {
        v.outputs = rec.outputs;
        v.out_rows = rec.out_rows;
        v.out_cols = rec.out_cols;
        finals = calloc(rec.n_final + 1, sizeof *finals);
        if (!finals) {
            jq_reply_status(cb, arg, CODE(INTERNAL), "await: out of memory");
            goto out;
        }
        size_t pos = 0;
        while (v.n_final < rec.n_final &&
               ss_job_rec_final_next(&rec, &pos, &finals[v.n_final]) == 1)
            v.n_final++;
        v.finals = finals;
    }
    send_await(&v, without_tensors, cb, arg);
out:
    ss_jobs_db_read_end(txn);
    free(finals);
}

/* Reply to an Await of jb from the Complete patch p that just committed
 * its outputs: the bytes are already in memory (the op owns them until
 * its done callback returns), so there is no read and no copy. */
static void reply_await_mem(const job *jb, const patch *p, bool without_tensors,
                            ss_jobs_reply_fn cb, void *arg)
{
    await_view v = {.state = SS_JOB_DONE, .length = jb->length, .last = jb->last,
                    .attempts = jb->attempts, .outputs = p->outputs,
                    .out_rows = p->out_rows, .out_cols = p->out_cols,
                    .n_final = p->n_finals, .finals = p->finals};
    send_await(&v, without_tensors, cb, arg);
}

/* Answer every parked Await of jb (done, failed, or gone); mem, when not
 * NULL, is the committed P_DONE patch of jb to answer from. Each waiter is
 * unparked before its reply, so a reply callback that cancels another
 * parked request (its client went away) finds a consistent list; jb is
 * kept alive meanwhile (waking). */
void jq_wake_awaits(ss_jobs *j, job *jb, const patch *mem)
{
    bool collect = false, was_waking = jb->waking;
    jb->waking = true;
    waiter *w;
    while ((w = jb->awaits)) {
        jq_waiter_unpark(j, w);
        if (jb->removed || jb->state < J_DONE)
            jq_reply_status(w->cb, w->arg, CODE(NOT_FOUND),
                            "segment %" PRIu64 " is no longer queued (never stored)",
                            jb->segment);
        else if (mem && jb->state == J_DONE)
            reply_await_mem(jb, mem, w->without_tensors, w->cb, w->arg);
        else
            reply_await(j, jb, w->without_tensors, w->cb, w->arg);
        collect |= w->collect;
        free(w);
    }
    jb->waking = was_waking;
    if (collect && !jb->removed && jb->state >= J_DONE)
        collect_job(j, jb);
}

/* Delete a done/failed job's record; the job leaves the index when the
 * delete commits (jobs_done.c), so a failed commit leaves both in place. */
static void collect_job(ss_jobs *j, job *jb)
{
    if (jb->collecting)
        return;
    jobs_op *op = jq_op_new(j, OP_DELETE, 1);
    if (!op) {
        SS_LOG(SS_LOG_ERROR, "jobs: out of memory collecting a job");
        return;
    }
    op->p[0].jb = jb;
    op->p[0].id = jb->id;
    op->p[0].kind = P_DELETE;
    jb->busy++;
    jb->collecting = true;
    jb->sq->sv->n_collecting++;
    jq_op_submit(j, op);
}

void ss_jobs_await(ss_jobs *j, const Statesaver__V1__AwaitRequest *req,
                   ss_jobs_reply_fn cb, void *arg)
{
    if (jq_closing_reply(j, cb, arg))
        return;
    size_t slen = req->saver ? strlen(req->saver) : 0;
    if (slen == 0 || slen > SS_SAVER_NAME_MAX || req->key.len < SS_KEY_MIN ||
        req->key.len > j->opt.max_key_bytes) {
        jq_reply_status(cb, arg, CODE(INVALID_ARGUMENT),
                     "await needs a saver name (1..%u bytes) and a key (1..%zu bytes)",
                     SS_SAVER_NAME_MAX, j->opt.max_key_bytes);
        return;
    }
    char kbuf[96];
    ss_keyfmt(kbuf, sizeof kbuf, req->key.data, req->key.len);
    saverq *sv = jq_saver_find(j, req->saver);
    seq *sq = sv ? jq_seq_find(sv, req->key.data, req->key.len) : NULL;
    job *jb = sq ? jq_seq_job(sq, req->segment) : NULL;
    if (!jb || jb->collecting) { /* a collected job is gone for readers */
        jq_reply_status(cb, arg, CODE(NOT_FOUND),
                     "no job for saver %s key %s segment %" PRIu64
                     " (never submitted, or collected)", req->saver, kbuf, req->segment);
        return;
    }
    if (jb->state >= J_DONE) {
        bool collect = req->collect; /* req may be gone once answered */
        reply_await(j, jb, req->without_tensors, cb, arg);
        if (collect)
            collect_job(j, jb);
        return;
    }
    uint32_t wait_ms = req->wait_ms > SS_WAIT_MS_MAX ? SS_WAIT_MS_MAX : req->wait_ms;
    if (wait_ms == 0) {
        jq_reply_status(cb, arg, CODE(DEADLINE_EXCEEDED),
                     "key %s segment %" PRIu64 " is not done yet (%s)", kbuf, req->segment,
                     jb->state == J_LEASED ? "leased" : "queued");
        return;
    }
    waiter *w = jq_waiter_new(j, T_WAIT_AWAIT, wait_ms, cb, arg);
    if (!w)
        return;
    w->jb = jb;
    w->collect = req->collect;
    w->without_tensors = req->without_tensors;
    w->next = jb->awaits;
    if (jb->awaits)
        jb->awaits->prev = w;
    jb->awaits = w;
}

bool ss_jobs_cancel(ss_jobs *j, void *arg)
{
    waiter *w = jq_waiter_find(j, arg);
    if (!w)
        return false;
    job *jb = w->t.kind == T_WAIT_AWAIT ? w->jb : NULL;
    bool was_min = ss_heap_min(&j->timers) == &w->t.hn;
    jq_waiter_unpark(j, w);
    Statesaver__V1__Status status = STATESAVER__V1__STATUS__INIT;
    status.code = CODE(CANCELLED);
    status.message = (char *)"the client went away";
    Statesaver__V1__Response resp = STATESAVER__V1__RESPONSE__INIT;
    resp.status = &status;
    w->cb(w->arg, &resp);
    free(w);
    if (jb)
        jq_job_release(jb);
    if (was_min)
        jq_rearm(j); /* else the timer still points at the same deadline */
    return true;
}
