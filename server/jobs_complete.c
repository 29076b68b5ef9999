/* jobs_complete -- Complete: validate a lease's results, save the states
 * and outputs in one writer op, and apply the commit to the index.
 */
#include "jobs_internal.h"

/* ---- after the commit (loop thread) ------------------------------------ */

/* The op failed as a whole: nothing committed, the items stay leased (the
 * worker may retry), except those whose lease expired meanwhile. */
static void complete_failed(ss_jobs *j, jobs_op *op, int rc, const char *msg)
{
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
            jq_lease_resolve(j, ls, jb);
            if (!jb->removed) {
                jq_job_set_state(jb, jb->sq->sv, j, J_QUEUED);
                jq_seq_settle(j, jb->sq);
            }
        }
    }
    jq_reply_status(op->cb, op->arg, jq_err_code(rc), "complete: %s",
                    msg && *msg ? msg : ss_strerror(rc));
}

/* Keys whose state a Complete saved (for on_saved). */
typedef struct saved_keys {
    ss_bytes *keys;        /* up to op->n keys (borrowed from sequences) */
    size_t n;              /* keys filled */
    const char *saver;     /* their saver */
} saved_keys;

/* Pass 1: memory follows the commit, one patch at a time (no callbacks
 * yet, so every sequence touched stays alive). */
static void apply_patch(ss_jobs *j, jobs_op *op, patch *p, saved_keys *sk)
{
    job *jb = p->jb;
    if (jb->ls)
        jq_lease_resolve(j, jb->ls, jb);
    if (p->kind != P_DONE) {
        jq_apply_retry_fail(j, p);
        return;
    }
    jb->busy--;
    if (p->conflict) {
        SS_LOG(SS_LOG_WARN, "jobs: complete of segment %" PRIu64 " failed: %s", jb->segment,
               p->cmsg);
        if (!jb->removed) {
            free(jb->reason);
            jb->reason = jq_dup_bytes(p->cmsg, strlen(p->cmsg));
            jq_job_set_state(jb, jb->sq->sv, j, J_FAILED);
            j->failed++;
        }
        return;
    }
    if (!p->already)
        j->saves++;
    op->already[p->req_index] = p->already;
    if (jb->removed)
        return;
    jq_job_set_state(jb, jb->sq->sv, j, J_DONE);
    j->completed++;
    if (sk->keys) {
        sk->keys[sk->n].data = jb->sq->key;
        sk->keys[sk->n++].len = jb->sq->key_len;
        sk->saver = jb->sq->sv->name;
    }
}

static void reply_complete(jobs_op *op)
{
    Statesaver__V1__CompleteResponse body = STATESAVER__V1__COMPLETE_RESPONSE__INIT;
    body.n_already_applied = op->n_req;
    body.already_applied = (protobuf_c_boolean *)calloc(op->n_req ? op->n_req : 1,
                                                         sizeof(protobuf_c_boolean));
    if (!body.already_applied) {
        jq_reply_status(op->cb, op->arg, CODE(INTERNAL),
                        "complete committed, reply: out of memory");
        return;
    }
    for (size_t i = 0; i < op->n_req; i++)
        body.already_applied[i] = op->already[i];
    jq_reply_ok(op->cb, op->arg, STATESAVER__V1__RESPONSE__BODY_COMPLETE, &body);
    free(body.already_applied);
}

void jq_done_complete(ss_jobs *j, jobs_op *op, int rc, const char *msg)
{
    if (rc < 0) {
        complete_failed(j, op, rc, msg);
        return;
    }
    saved_keys sk = {calloc(op->n ? op->n : 1, sizeof *sk.keys), 0, NULL};
    for (size_t i = 0; i < op->n; i++)
        apply_patch(j, op, &op->p[i], &sk);
    for (size_t i = 0; i < op->n; i++) {
        job *jb = op->p[i].jb;
        if (!jb->removed) {
            jq_refresh_next(j, jb->sq);
            jq_propagate(j, jb->sq);
        }
    }
    reply_complete(op);
    if (sk.n && j->opt.on_saved)
        j->opt.on_saved(j->opt.on_saved_arg, sk.saver, sk.n, sk.keys);
    free(sk.keys);
    jq_finish_patches(j, op);
    /* Leases ended: under max_in_flight parked Leases may go on now. */
    saverq *sv = jq_saver_find(j, op->schema->saver);
    if (sv && sv->max_in_flight)
        jq_kick(j, sv);
}

/* ---- the request (loop thread) ----------------------------------------- */

/* The live lease named by req, or NULL after replying. */
static lease *find_lease(ss_jobs *j, const Statesaver__V1__CompleteRequest *req,
                         ss_jobs_reply_fn cb, void *arg)
{
    uint8_t idkey[8];
    for (int i = 0; i < 8; i++)
        idkey[i] = (uint8_t)(req->lease_id >> (56 - 8 * i));
    ss_map_node *mn = ss_map_find(&j->leases, idkey, 8);
    if (!mn) {
        jq_reply_status(cb, arg, CODE(FAILED_PRECONDITION), "lease %" PRIu64
                        " expired or unknown", req->lease_id);
        return NULL;
    }
    lease *ls = (lease *)((char *)mn - offsetof(lease, mn));
    if (req->saver && req->saver[0] && strcmp(req->saver, ls->sv->name) != 0) {
        jq_reply_status(cb, arg, CODE(INVALID_ARGUMENT), "lease %" PRIu64 " belongs to "
                        "saver %s, not %s", ls->id, ls->sv->name, req->saver);
        return NULL;
    }
    if (req->n_items == 0) {
        jq_reply_status(cb, arg, CODE(INVALID_ARGUMENT), "complete: no items");
        return NULL;
    }
    return ls;
}

/* Index in ls of the item it names, or ls->n after replying. */
static size_t find_item(const lease *ls, const Statesaver__V1__CompletedSegment *it,
                        const char *kbuf, ss_jobs_reply_fn cb, void *arg)
{
    for (size_t k = 0; k < ls->n; k++) {
        const lease_item *li = &ls->items[k];
        if (!li->jb) {
            if (li->ckey && li->cseg == it->segment && li->ckey_len == it->key.len &&
                memcmp(li->ckey, it->key.data, it->key.len) == 0) {
                jq_reply_status(cb, arg, CODE(FAILED_PRECONDITION),
                                "key %s segment %" PRIu64 " was cancelled while leased "
                                "(lease %" PRIu64 "): nothing of it is stored", kbuf,
                                it->segment, ls->id);
                return ls->n;
            }
            continue;
        }
        job *jb = li->jb;
        seq *sq = jb->sq;
        if (sq && jb->segment == it->segment && sq->key_len == it->key.len &&
            memcmp(sq->key, it->key.data, it->key.len) == 0)
            return k;
    }
    jq_reply_status(cb, arg, CODE(INVALID_ARGUMENT),
                    "key %s segment %" PRIu64 " is not part of lease %" PRIu64, kbuf,
                    it->segment, ls->id);
    return ls->n;
}

/* The outputs and states of a successful item match jb and the schema;
 * else replies INVALID_ARGUMENT and returns SS_ERR_INVALID. */
static int check_results(const Statesaver__V1__CompletedSegment *it, const job *jb,
                         const ss_schema *schema, const char *kbuf, ss_jobs_reply_fn cb,
                         void *arg)
{
    const ss_tensor_msg *o = it->outputs; /* optional: a trainer sends states only */
    if (o && (o->dtype != STATESAVER__V1__DTYPE__DT_FLOAT32 || o->n_shape != 2 ||
              o->shape[0] != (int64_t)jb->in_rows || o->shape[1] < 1 ||
              o->shape[1] > UINT32_MAX || ss_tensor_check(o) < 0)) {
        char shp[64] = "none";
        ss_shape_format(o->shape, o->n_shape <= SS_TENSOR_MAX_RANK ? o->n_shape : 0, shp,
                        sizeof shp);
        jq_reply_status(cb, arg, CODE(INVALID_ARGUMENT),
                        "key %s segment %" PRIu64 ": outputs must be float32 [%" PRIu32
                        ", output_size] matching their data; got %s %s", kbuf, it->segment,
                        jb->in_rows, ss_dtype_name(o->dtype), shp);
        return SS_ERR_INVALID;
    }
    if (it->n_states != schema->n_states) {
        jq_reply_status(cb, arg, CODE(INVALID_ARGUMENT),
                        "key %s segment %" PRIu64 ": states: %zu given, saver %s has %zu "
                        "(every item carries its final states; outputs are optional)",
                        kbuf, it->segment, it->n_states, schema->saver, schema->n_states);
        return SS_ERR_INVALID;
    }
    for (size_t s = 0; s < it->n_states; s++) {
        const ss_state_spec *sp = &schema->states[s];
        const ss_tensor_msg *t = it->states[s];
        bool ok = t && t->dtype == (Statesaver__V1__DType)sp->dtype && t->n_shape == sp->rank &&
                  t->data.len == sp->nbytes &&
                  (sp->rank == 0 || memcmp(t->shape, sp->shape, sp->rank * sizeof(int64_t)) == 0);
        if (!ok) {
            char want[64], got[64] = "none";
            ss_shape_format(sp->shape, sp->rank, want, sizeof want);
            if (t)
                ss_shape_format(t->shape, t->n_shape, got, sizeof got);
            jq_reply_status(cb, arg, CODE(INVALID_ARGUMENT),
                            "key %s segment %" PRIu64 ": state %s must be %s %s, got %s %s",
                            kbuf, it->segment, sp->name, ss_dtype_name(sp->dtype), want,
                            t ? ss_dtype_name(t->dtype) : "", got);
            return SS_ERR_INVALID;
        }
    }
    return 0;
}

/* Step 1: validate every item before changing anything; idx[i] gets the
 * lease item of request item i. Replies and returns < 0 on the first
 * problem. */
static int validate_items(const lease *ls, const Statesaver__V1__CompleteRequest *req,
                          const ss_schema *schema, size_t *idx, ss_jobs_reply_fn cb,
                          void *arg)
{
    for (size_t i = 0; i < req->n_items; i++) {
        const Statesaver__V1__CompletedSegment *it = req->items[i];
        char kbuf[96];
        ss_keyfmt(kbuf, sizeof kbuf, it->key.data, it->key.len);
        size_t k = find_item(ls, it, kbuf, cb, arg);
        if (k == ls->n)
            return SS_ERR_INVALID; /* or cancelled: replied already */
        for (size_t m = 0; m < i; m++)
            if (idx[m] == k) {
                jq_reply_status(cb, arg, CODE(INVALID_ARGUMENT),
                                "key %s segment %" PRIu64 " appears twice", kbuf, it->segment);
                return SS_ERR_INVALID;
            }
        idx[i] = k;
        if (ls->items[k].st == LI_BUSY) {
            jq_reply_status(cb, arg, CODE(FAILED_PRECONDITION),
                            "key %s segment %" PRIu64 " is being completed by another request",
                            kbuf, it->segment);
            return SS_ERR_CONFLICT;
        }
        if (ls->items[k].st == LI_DONE || (it->error && it->error[0]))
            continue;
        if (check_results(it, ls->items[k].jb, schema, kbuf, cb, arg) < 0)
            return SS_ERR_INVALID;
    }
    return 0;
}

/* Fill a P_DONE patch for jb with copies of the item's key, outputs and
 * states (and the final states of a last segment). */
static int patch_done(patch *p, const Statesaver__V1__CompletedSegment *it, job *jb,
                      const ss_schema *schema)
{
    size_t ns = schema->n_states;
    size_t olen = it->outputs ? it->outputs->data.len : 0;
    size_t nb = it->key.len + olen + schema->state_bytes;
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
        return SS_ERR_NOMEM;
    }
    uint8_t *q = p->buf;
    memcpy(q, it->key.data, it->key.len);
    p->key.data = q;
    p->key.len = it->key.len;
    q += it->key.len;
    if (it->outputs) {
        if (olen)
            memcpy(q, it->outputs->data.data, olen);
        p->outputs = q;
        p->out_rows = (uint32_t)it->outputs->shape[0];
        p->out_cols = (uint32_t)it->outputs->shape[1];
        q += olen;
    }
    for (size_t s = 0; s < ns; s++) {
        const ss_state_spec *sp = &schema->states[s];
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
    return 0;
}

/* Undo build_patches: the items become pending again. */
static void unwind_patches(lease *ls, jobs_op *op)
{
    for (size_t i = 0; i < op->n; i++) {
        patch *p = &op->p[i];
        p->jb->busy--;
        for (size_t k = 0; k < ls->n; k++)
            if (ls->items[k].jb == p->jb)
                ls->items[k].st = LI_PENDING;
    }
}

/* Step 2: one patch per unresolved item (an error item counts an attempt,
 * a result saves the state); the items become busy. On out of memory
 * everything is undone, the reply sent, and < 0 returned. */
static int build_patches(ss_jobs *j, lease *ls, const Statesaver__V1__CompleteRequest *req,
                         jobs_op *op, const size_t *idx)
{
    op->n = 0;
    for (size_t i = 0; i < req->n_items; i++) {
        const Statesaver__V1__CompletedSegment *it = req->items[i];
        lease_item *li = &ls->items[idx[i]];
        if (li->st == LI_DONE) {
            op->already[i] = true;
            continue;
        }
        patch *p = &op->p[op->n];
        p->req_index = i;
        int rc;
        if (it->error && it->error[0]) {
            char why[SS_JOB_REASON_MAX];
            snprintf(why, sizeof why, "worker %s: %.900s", ls->worker[0] ? ls->worker : "",
                     it->error);
            rc = jq_patch_attempt(j, p, li->jb, why);
        } else {
            rc = patch_done(p, it, li->jb, op->schema);
        }
        if (rc < 0) {
            jq_reply_status(op->cb, op->arg, CODE(INTERNAL), "out of memory");
            unwind_patches(ls, op);
            return rc;
        }
        op->n++;
        li->st = LI_BUSY;
    }
    return 0;
}

void ss_jobs_complete(ss_jobs *j, const Statesaver__V1__CompleteRequest *req,
                      ss_jobs_reply_fn cb, void *arg)
{
    if (jq_closing_reply(j, cb, arg))
        return;
    lease *ls = find_lease(j, req, cb, arg);
    if (!ls)
        return;
    ss_schema *schema = NULL;
    if (jq_schema_get(j, ls->sv->name, &schema, cb, arg) < 0)
        return;
    size_t n = req->n_items;
    size_t *idx = calloc(n, sizeof *idx);
    jobs_op *op = idx ? jq_op_new(j, OP_COMPLETE, n) : NULL;
    if (op)
        op->already = calloc(n, sizeof *op->already);
    if (!idx || !op || !op->already) {
        jq_reply_status(cb, arg, CODE(INTERNAL), "out of memory");
        goto fail;
    }
    op->schema = schema;
    schema = NULL;
    op->n_req = n;
    op->cb = cb;
    op->arg = arg;
    if (validate_items(ls, req, op->schema, idx, cb, arg) < 0 ||
        build_patches(j, ls, req, op, idx) < 0)
        goto fail;
    free(idx);
    if (op->n == 0) {
        /* Every item was already resolved under this lease. */
        j->inflight++;
        jq_op_done(&op->base, 0, "");
        return;
    }
    jq_op_submit(j, op);
    return;
fail:
    free(idx);
    jq_op_free(op);
    ss_schema_unref(schema);
}
