/* jobs_cancel -- Cancel of sequences and the queue's side of a Drop.
 *
 * Cancel(saver, keys): one writer op, one transaction, deletes each key's
 * job records (queued, leased, done and failed: the stored outputs), its
 * context record and its state; memory follows at the commit (the queue
 * slots are freed, leased items are marked cancelled so a later Complete
 * of them is told so). Drop: the same deletions of job records for the
 * dropped keys (or the whole saver), in an op queued just before the
 * Drop's own, so they stop counting against the queue's capacity.
 */
#include "jobs_internal.h"

/* Writer thread: drop each key's state, counting those that had one. */
int jq_cancel_run_states(jobs_op *op, ss_store_txn *stxn, char msg[SS_STORE_MSG])
{
    for (size_t k = 0; k < op->n_keys; k++) {
        uint64_t dropped = 0;
        int rc = ss_store_drop(stxn, op->saver, 1, &op->keys[k], false, &dropped, msg);
        if (rc < 0)
            return rc;
        op->had_state[k] = dropped > 0;
    }
    return 0;
}

/* A leased job was cancelled: its lease item keeps a copy of the key so a
 * later Complete of it gets a clear error; the lease lives on until its
 * deadline for that. */
static void cancel_leased(ss_jobs *j, job *jb)
{
    lease *ls = jb->ls;
    for (size_t k = 0; k < ls->n; k++) {
        lease_item *li = &ls->items[k];
        if (li->jb != jb)
            continue;
        li->ckey = malloc(jb->sq->key_len ? jb->sq->key_len : 1);
        if (li->ckey) {
            memcpy(li->ckey, jb->sq->key, jb->sq->key_len);
            li->ckey_len = jb->sq->key_len;
        }
        li->cseg = jb->segment;
        if (li->st != LI_DONE) {
            li->st = LI_DONE;
            ls->unresolved--;
        }
        li->jb = NULL;
    }
    ls->has_cancelled = true;
    jb->ls = NULL;
    (void)j;
}

/* After the commit: the jobs leave the index, parked Awaits of them learn
 * they are gone, the sequences are settled (freed when empty). */
static void apply_removal(ss_jobs *j, jobs_op *op)
{
    for (size_t i = 0; i < op->n; i++) {
        job *jb = op->p[i].jb;
        if (!jb)
            continue;
        jb->busy--;
        if (jb->removed)
            continue;
        if (jb->ls)
            cancel_leased(j, jb);
        jq_job_detach(j, jb);
        if (jb->awaits)
            jq_wake_awaits(j, jb, NULL);
    }
    for (size_t i = 0; i < op->n; i++)
        if (op->p[i].jb)
            jq_job_release(op->p[i].jb);
    for (size_t s = 0; s < op->n_seqs; s++) {
        seq *sq = op->seqs[s];
        sq->pins--;
        if (op->kind == OP_CANCEL && sq->n_jobs)
            jq_refresh_next(j, sq); /* its state is gone: back to segment 0 */
        jq_seq_settle(j, sq);
    }
}

/* The op failed: memory stays as the disk has it. */
static void undo_removal(ss_jobs *j, jobs_op *op)
{
    for (size_t i = 0; i < op->n; i++) {
        patch *p = &op->p[i];
        if (p->jb)
            p->jb->busy--;
        else if (p->sq && p->sq->ctx_id == 0)
            p->sq->ctx_id = p->id; /* the context record is still there */
    }
    for (size_t i = 0; i < op->n; i++)
        if (op->p[i].jb)
            jq_job_release(op->p[i].jb);
    for (size_t s = 0; s < op->n_seqs; s++) {
        op->seqs[s]->pins--;
        jq_seq_settle(j, op->seqs[s]);
    }
}

static void cancel_done(ss_write_op *base, int rc, const char *msg)
{
    jobs_op *op = (jobs_op *)base;
    ss_jobs *j = op->jobs;
    if (rc < 0) {
        if (op->kind == OP_CANCEL)
            jq_reply_status(op->cb, op->arg, jq_err_code(rc), "cancel: %s",
                            msg && *msg ? msg : ss_strerror(rc));
        else
            SS_LOG(SS_LOG_ERROR, "jobs: deleting the job records of a Drop failed: %s",
                   msg && *msg ? msg : ss_strerror(rc));
        undo_removal(j, op);
    } else {
        uint64_t segments = 0, cancelled = 0;
        for (size_t i = 0; i < op->n; i++)
            segments += op->p[i].jb != NULL;
        /* A key counts when it had a state, job records or a context. */
        for (size_t k = 0; k < op->n_keys; k++) {
            bool any = op->had_state && op->had_state[k];
            for (size_t s = 0; s < op->n_seqs && !any; s++)
                any = op->seqs[s]->key_len == op->keys[k].len &&
                      memcmp(op->seqs[s]->key, op->keys[k].data, op->keys[k].len) == 0;
            cancelled += any;
        }
        saverq *sv = op->saver ? jq_saver_find(j, op->saver) : NULL;
        apply_removal(j, op);
        if (op->kind == OP_CANCEL) {
            if (j->opt.on_saved && op->n_keys)
                j->opt.on_saved(j->opt.on_saved_arg, op->saver, op->n_keys, op->keys);
            Statesaver__V1__CancelResponse body = STATESAVER__V1__CANCEL_RESPONSE__INIT;
            body.cancelled = cancelled;
            body.segments = segments;
            jq_reply_ok(op->cb, op->arg, STATESAVER__V1__RESPONSE__BODY_CANCEL, &body);
        }
        if (sv)
            jq_kick(j, sv); /* freed slots: nothing to lease, but keep waiters moving */
    }
    jq_op_free(op);
    j->inflight--;
    jq_rearm(j);
    jq_maybe_finish_close(j);
}

/* Count the patches for removing sq's jobs (those without a write in
 * flight when skip_busy, else all) and its context. */
static size_t seq_patches(const seq *sq)
{
    return sq->n_jobs + (sq->ctx_id ? 1 : 0);
}

/* A write of jb is in flight that a cancel must not race (a Submit, a
 * Complete, an expiry); a collect in flight is not one: the record goes
 * anyway, so the cancel leaves that job to it. */
static bool job_busy(const job *jb)
{
    return !jb->collecting && (jb->busy || jb->submits || jb->state == J_SUBMITTING);
}

/* Add sq's patches to op (from *k); marks the jobs busy. */
static void add_seq(jobs_op *op, seq *sq, size_t *k, bool skip_busy)
{
    for (size_t i = 0; i < sq->n_jobs; i++) {
        job *jb = sq->jobs[i];
        if (jb->collecting || (skip_busy && job_busy(jb)))
            continue;
        patch *p = &op->p[(*k)++];
        p->jb = jb;
        p->id = jb->id;
        p->kind = P_DELETE;
        jb->busy++;
    }
    if (sq->ctx_id) {
        patch *p = &op->p[(*k)++];
        p->jb = NULL;
        p->sq = sq;
        p->id = sq->ctx_id;
        p->kind = P_DELETE;
        sq->ctx_id = 0; /* a Submit meanwhile writes a new one */
    }
    op->seqs[op->n_seqs++] = sq;
    sq->pins++;
}

void ss_jobs_cancel_seqs(ss_jobs *j, const Statesaver__V1__CancelRequest *req,
                         ss_jobs_reply_fn cb, void *arg)
{
    if (jq_closing_reply(j, cb, arg))
        return;
    size_t slen = jq_saver_name_check(req->saver, cb, arg);
    if (slen == 0)
        return;
    size_t n = req->n_keys;
    if (n == 0 || n > j->opt.max_batch) {
        jq_reply_status(cb, arg, CODE(INVALID_ARGUMENT), "keys: 1..%" PRIu32 " keys, got %zu",
                        j->opt.max_batch, n);
        return;
    }
    size_t kbytes = 0;
    for (size_t k = 0; k < n; k++) {
        const ProtobufCBinaryData *key = &req->keys[k];
        if (key->len < SS_KEY_MIN || key->len > j->opt.max_key_bytes) {
            jq_reply_status(cb, arg, CODE(INVALID_ARGUMENT),
                            "keys[%zu]: a key must be %u..%zu bytes, got %zu", k, SS_KEY_MIN,
                            j->opt.max_key_bytes, key->len);
            return;
        }
        for (size_t m = 0; m < k; m++)
            if (req->keys[m].len == key->len && memcmp(req->keys[m].data, key->data, key->len) == 0) {
                char kbuf[96];
                jq_reply_status(cb, arg, CODE(INVALID_ARGUMENT), "keys: key %s given twice",
                                ss_keyfmt(kbuf, sizeof kbuf, key->data, key->len));
                return;
            }
        kbytes += key->len;
    }
    saverq *sv = jq_saver_declared(j, req->saver, slen, cb, arg);
    if (!sv)
        return;
    size_t np = 0;
    for (size_t k = 0; k < n; k++) {
        seq *sq = jq_seq_find(sv, req->keys[k].data, req->keys[k].len);
        if (!sq)
            continue;
        for (size_t i = 0; i < sq->n_jobs; i++)
            if (job_busy(sq->jobs[i])) {
                char kbuf[96];
                jq_reply_status(cb, arg, CODE(UNAVAILABLE), "key %s: a write of segment %"
                                PRIu64 " is in flight; cancel again",
                                ss_keyfmt(kbuf, sizeof kbuf, sq->key, sq->key_len),
                                sq->jobs[i]->segment);
                return;
            }
        np += seq_patches(sq);
    }
    jobs_op *op = jq_op_new(j, OP_CANCEL, np);
    if (op) {
        op->saver = jq_dup_bytes(req->saver, slen);
        op->keys = calloc(n, sizeof *op->keys);
        op->kbuf = malloc(kbytes ? kbytes : 1);
        op->had_state = calloc(n, sizeof *op->had_state);
        op->seqs = calloc(n, sizeof *op->seqs);
    }
    if (!op || !op->saver || !op->keys || !op->kbuf || !op->had_state || !op->seqs) {
        jq_op_free(op);
        jq_reply_status(cb, arg, CODE(INTERNAL), "cancel: out of memory");
        return;
    }
    op->base.done = cancel_done;
    op->cb = cb;
    op->arg = arg;
    op->n_keys = n;
    uint8_t *q = op->kbuf;
    size_t k2 = 0;
    for (size_t k = 0; k < n; k++) {
        memcpy(q, req->keys[k].data, req->keys[k].len);
        op->keys[k].data = q;
        op->keys[k].len = req->keys[k].len;
        q += req->keys[k].len;
        seq *sq = jq_seq_find(sv, req->keys[k].data, req->keys[k].len);
        if (sq)
            add_seq(op, sq, &k2, false);
    }
    op->n = k2;
    jq_op_submit(j, op);
}

typedef struct forget_ctx {
    jobs_op *op;   /* being filled (NULL: counting) */
    size_t np;     /* patches counted / filled */
    size_t ns;     /* sequences counted */
} forget_ctx;

static void forget_count_cb(void *arg, ss_map_node *node)
{
    forget_ctx *c = arg;
    c->np += seq_patches((seq *)node);
    c->ns++;
}

static void forget_fill_cb(void *arg, ss_map_node *node)
{
    forget_ctx *c = arg;
    add_seq(c->op, (seq *)node, &c->np, true);
}

void ss_jobs_forget(ss_jobs *j, const char *saver, size_t n, const ss_bytes *keys, bool all)
{
    if (j->closing || !saver)
        return;
    saverq *sv = jq_saver_find(j, saver);
    if (!sv)
        return;
    forget_ctx c = {NULL, 0, 0};
    if (all) {
        ss_map_each(&sv->seqs, forget_count_cb, &c);
    } else {
        for (size_t k = 0; k < n; k++) {
            seq *sq = jq_seq_find(sv, keys[k].data, keys[k].len);
            if (sq) {
                c.np += seq_patches(sq);
                c.ns++;
            }
        }
    }
    if (c.ns == 0)
        return;
    jobs_op *op = jq_op_new(j, OP_DELETE, c.np);
    if (op) {
        op->seqs = calloc(c.ns, sizeof *op->seqs);
        op->saver = jq_dup_bytes(saver, strlen(saver));
    }
    if (!op || !op->seqs || !op->saver) {
        jq_op_free(op);
        SS_LOG(SS_LOG_ERROR, "jobs: out of memory deleting the job records of a Drop");
        return;
    }
    op->base.done = cancel_done;
    c.op = op;
    c.np = 0;
    if (all) {
        ss_map_each(&sv->seqs, forget_fill_cb, &c);
    } else {
        for (size_t k = 0; k < n; k++) {
            seq *sq = jq_seq_find(sv, keys[k].data, keys[k].len);
            bool seen = false;
            for (size_t s = 0; s < op->n_seqs && !seen; s++)
                seen = op->seqs[s] == sq;
            if (sq && !seen)
                add_seq(op, sq, &c.np, true);
        }
    }
    op->n = c.np;
    jq_op_submit(j, op);
}
