/* jobs -- the job queue: open (rebuild the index from disk), Submit,
 * notifications, stats and close. See jobs.h, and jobs_internal.h for
 * how the queue is split across files.
 */
#include "jobs_internal.h"

/* ---- timer callback ---------------------------------------------------- */

void jq_on_timer(uv_timer_t *t)
{
    ss_jobs *j = t->data;
    uint64_t now = uv_now(j->loop);
    ss_heap_node *hn;
    while ((hn = ss_heap_min(&j->timers)) && hn->k1 <= now) {
        ss_heap_remove(&j->timers, hn);
        timed *tm = (timed *)hn;
        if (tm->kind == T_LEASE) {
            jq_expire_lease(j, (lease *)tm);
        } else if (tm->kind == T_HOLD) {
            jq_release_holds(j);
        } else if (tm->kind == T_WAIT_LEASE && ((waiter *)tm)->delaying) {
            jq_lease_delay_over(j, (waiter *)tm);
        } else if (tm->kind == T_WAIT_LEASE) {
            waiter *w = (waiter *)tm;
            jq_waiter_unpark(j, w);
            jq_reply_empty_lease(w->cb, w->arg);
            free(w);
        } else {
            waiter *w = (waiter *)tm;
            job *jb = w->jb;
            jq_waiter_unpark(j, w);
            jq_reply_status(w->cb, w->arg, CODE(DEADLINE_EXCEEDED),
                         "segment %" PRIu64 " is not done yet (%s)", jb->segment,
                         jb->state == J_LEASED ? "leased" : "queued");
            free(w);
            jq_job_release(jb);
        }
    }
    jq_rearm(j);
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
    saverq *sv = jq_saver_get(j, (const char *)rec->saver.data, rec->saver.len);
    if (!sv)
        return SS_ERR_NOMEM;
    seq *sq = jq_seq_find(sv, rec->key.data, rec->key.len);
    if (!sq && !(sq = jq_seq_new(j, sv, rec->key.data, rec->key.len, rec->submit_ms)))
        return SS_ERR_NOMEM;
    if (rec->submit_ms < sq->rn.k1)
        sq->rn.k1 = rec->submit_ms;
    if (rec->is_ctx) {
        if (!rec->ext || jq_train_blob_check(rec->ext, rec->ext_len) < 0) {
            SS_LOG(SS_LOG_WARN, "jobs: context record %" PRIu64 " does not decode; skipped", id);
            return 0;
        }
        if (sq->ctx_id) /* an older one (ids grow): the newer is the sequence's */
            jq_ctx_delete(j, sq->ctx_id);
        sq->ctx_id = id;
        sq->ctx_len = rec->ext_len;
        sq->ctx_crc = jq_train_crc(rec->ext, rec->ext_len);
        return 0;
    }
    if (jq_seq_job(sq, rec->segment)) {
        SS_LOG(SS_LOG_WARN, "jobs: record %" PRIu64 " duplicates segment %" PRIu64
               " of a sequence; skipped", id, rec->segment);
        return 0;
    }
    job *jb = jq_job_from_record(id, rec);
    if (!jb)
        return SS_ERR_NOMEM;
    if (jq_seq_insert(sq, jb) < 0) {
        jq_job_free(jb);
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
    jq_refresh_next(j, sq);
    jq_propagate(j, sq);
    jq_seq_settle(j, sq);
}

static void settle_saver_cb(void *arg, ss_map_node *node)
{
    ss_map_each(&((saverq *)node)->seqs, settle_all_cb, arg);
}

int ss_jobs_prepare(ss_store *st, char msg[SS_STORE_MSG])
{
    msg[0] = 0;
    return ss_jobs_db_create(ss_store_env(st), msg);
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
    j->frame_max = opt->max_frame_bytes ? opt->max_frame_bytes
                                        : opt->max_reply_bytes + SS_JOBS_FRAME_FROM_REPLY;
    j->env = ss_store_env(st);
    int rc = ss_jobs_db_open(j->env, &j->dbi, msg);
    if (rc == SS_ERR_NOT_FOUND) {
        SS_LOG(SS_LOG_WARN, "jobs: ss_jobs_prepare was not called before the writer "
               "started; creating the jobs database now");
        rc = ss_jobs_db_create(j->env, msg);
        if (rc == 0)
            rc = ss_jobs_db_open(j->env, &j->dbi, msg);
    }
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

bool jq_closing_reply(ss_jobs *j, ss_jobs_reply_fn cb, void *arg)
{
    if (!j->closing)
        return false;
    jq_reply_status(cb, arg, CODE(UNAVAILABLE), "server is shutting down");
    return true;
}

/* The queue of the Submit's declared saver, or NULL after replying: checks
 * every field (jobs_train.c) and refuses a segment whose Lease reply
 * (inputs, sequences, context + the saver's state + the envelope) could
 * never fit the frame limit, so nothing undeliverable is queued. */
static saverq *submit_saver(ss_jobs *j, const Statesaver__V1__SubmitRequest *req, size_t slen,
                            const char *kbuf, jq_train *t, ss_jobs_reply_fn cb, void *arg)
{
    ss_schema *schema = NULL;
    if (jq_schema_get(j, req->saver, &schema, cb, arg) < 0)
        return NULL;
    char err[512];
    if (jq_train_check(j, req, schema, kbuf, t, err, sizeof err) < 0) {
        jq_reply_status(cb, arg, CODE(INVALID_ARGUMENT), "%s", err);
        ss_schema_unref(schema);
        return NULL;
    }
    ss_bytes key = {req->key.data, req->key.len};
    size_t need = 0;
    int64_t dims[2] = {t->T, t->fin ? t->fin->shape[1] : 0};
    size_t in_bytes = (t->fin ? t->fin->data.len : 0) + t->ext_len + t->ctx_len +
                      (t->n_seq + t->n_ctx + (t->xin ? 1u : 0u)) * 64u;
    int rc = jq_lease_fit(j, schema, &key, req->segment, req->length, dims, in_bytes, &need);
    if (rc < 0) {
        jq_reply_status(cb, arg, CODE(INVALID_ARGUMENT),
                        "key %s segment %" PRIu64 ": inputs of %zu bytes plus the state of "
                        "saver %s (%zu bytes) make a Lease reply of %zu bytes, over the frame "
                        "limit of %zu bytes (--max-frame-bytes): submit shorter segments",
                        kbuf, req->segment, in_bytes, req->saver,
                        schema->state_bytes, need, j->frame_max);
        ss_schema_unref(schema);
        return NULL;
    }
    ss_schema_unref(schema);
    saverq *sv = jq_saver_get(j, req->saver, slen);
    if (!sv)
        jq_reply_status(cb, arg, CODE(INTERNAL), "out of memory");
    return sv;
}

void ss_jobs_submit(ss_jobs *j, const Statesaver__V1__SubmitRequest *req,
                    ss_jobs_reply_fn cb, void *arg)
{
    if (jq_closing_reply(j, cb, arg))
        return;
    char kbuf[96];
    if (req->key.len < SS_KEY_MIN || req->key.len > j->opt.max_key_bytes) {
        jq_reply_status(cb, arg, CODE(INVALID_ARGUMENT), "key must be %u..%zu bytes, got %zu",
                     SS_KEY_MIN, j->opt.max_key_bytes, req->key.len);
        return;
    }
    ss_keyfmt(kbuf, sizeof kbuf, req->key.data, req->key.len);
    size_t slen = jq_saver_name_check(req->saver, cb, arg);
    if (slen == 0)
        return;
    jq_train t;
    saverq *sv = submit_saver(j, req, slen, kbuf, &t, cb, arg);
    if (!sv)
        return;
    const ss_tensor_msg *in = t.fin;
    size_t in_len = in ? in->data.len : 0;
    seq *sq = jq_seq_find(sv, req->key.data, req->key.len);
    job *jb = sq ? jq_seq_job(sq, req->segment) : NULL;
    bool created_seq = false, collecting = jb && jb->collecting;
    if (collecting)
        jb = NULL; /* gone for clients; its delete has not committed yet */
    if (!jb) {
        if (!sq) {
            sq = jq_seq_new(j, sv, req->key.data, req->key.len, jq_wall_ms());
            if (!sq) {
                jq_reply_status(cb, arg, CODE(INTERNAL), "out of memory");
                return;
            }
            created_seq = true;
            jq_refresh_next(j, sq);
        }
        job *bad = jq_seq_failed(sq);
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
        if (!why && collecting) {
            snprintf(text, sizeof text, "key %s: segment %" PRIu64 " is being collected; "
                     "submit it again", kbuf, req->segment);
            why = text;
            code = CODE(UNAVAILABLE);
        }
        if (!why && j->n_active >= j->opt.queue_capacity) {
            snprintf(text, sizeof text, "job queue is full (capacity %" PRIu64
                     " queued + leased segments)", j->opt.queue_capacity);
            why = text;
            code = CODE(RESOURCE_EXHAUSTED);
        }
        if (why) {
            jq_reply_status(cb, arg, code, "%s", why);
            if (created_seq)
                jq_seq_settle(j, sq);
            return;
        }
        jb = calloc(1, sizeof *jb);
        if (jb) {
            jb->segment = req->segment; /* before seq_insert: it sorts by it */
            jb->length = req->length;
            jb->in_rows = t.T;
            jb->last = req->last;
            jb->submit_ms = jq_wall_ms();
            jb->state = J_SUBMITTING;
        }
        if (!jb || jq_seq_insert(sq, jb) < 0) {
            free(jb);
            jq_reply_status(cb, arg, CODE(INTERNAL), "out of memory");
            if (created_seq)
                jq_seq_settle(j, sq);
            return;
        }
        jb->id = j->next_id++;
        sv->n[J_SUBMITTING]++;
        j->n_active++;
    }
    /* The context: fixed by the first Submit that carries one; a later
     * one must carry the same bytes (compared by length and CRC32C). */
    bool new_ctx = false;
    if (t.n_ctx) {
        uint8_t *tmp = malloc(t.ctx_len);
        if (!tmp) {
            jq_reply_status(cb, arg, CODE(INTERNAL), "out of memory");
            goto drop_new;
        }
        jq_train_encode_ctx(&t, tmp);
        uint32_t crc = jq_train_crc(tmp, t.ctx_len);
        free(tmp);
        if (sq->ctx_id && (sq->ctx_len != t.ctx_len || sq->ctx_crc != crc)) {
            jq_reply_status(cb, arg, CODE(INVALID_ARGUMENT),
                            "key %s segment %" PRIu64 ": context: differs from the context "
                            "this sequence was submitted with (a context is per sequence and "
                            "the same on every Submit)", kbuf, req->segment);
            goto drop_new;
        }
        new_ctx = sq->ctx_id == 0;
    }
    /* One writer op; it compares with an existing record in the txn. */
    jobs_op *op = jq_op_new(j, OP_SUBMIT, new_ctx ? 2 : 1);
    size_t klen = req->key.len, slen2 = slen;
    size_t nbuf = klen + slen2 + in_len + t.ext_len + (new_ctx ? t.ctx_len : 0) + 1;
    uint8_t *buf = op ? malloc(nbuf) : NULL;
    if (!buf) {
        jq_op_free(op);
        jq_reply_status(cb, arg, CODE(INTERNAL), "out of memory");
        goto drop_new;
    }
    patch *p = &op->p[0];
    p->buf = buf;
    memcpy(buf, req->saver, slen2);
    memcpy(buf + slen2, req->key.data, klen);
    if (in_len)
        memcpy(buf + slen2 + klen, in->data.data, in_len);
    uint8_t *ext = buf + slen2 + klen + in_len;
    if (t.ext_len)
        jq_train_encode_ext(&t, ext);
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
    p->rec.in_rows = t.T;
    p->rec.in_cols = in ? (uint32_t)in->shape[1] : 0;
    p->rec.inputs = buf + slen2 + klen;
    p->rec.ext = t.ext_len ? ext : NULL;
    p->rec.ext_len = t.ext_len;
    if (new_ctx) {
        uint8_t *cb2 = ext + t.ext_len;
        jq_train_encode_ctx(&t, cb2);
        jq_ctx_patch(j, sq, &t, &op->p[1], buf, slen2, buf + slen2, klen, cb2);
    }
    op->cb = cb;
    op->arg = arg;
    jb->submits++;
    jq_op_submit(j, op);
    return;
drop_new:
    if (jb->state == J_SUBMITTING && jb->submits == 0) {
        jq_job_detach(j, jb);
        jq_job_release(jb);
    }
    jq_seq_settle(j, sq);
}

void ss_jobs_notify_saved(ss_jobs *j, const char *saver, size_t n, const ss_bytes *keys)
{
    if (j->closing || !saver)
        return;
    saverq *sv = jq_saver_find(j, saver);
    if (!sv)
        return;
    for (size_t i = 0; i < n; i++) {
        seq *sq = jq_seq_find(sv, keys[i].data, keys[i].len);
        if (!sq)
            continue;
        jq_refresh_next(j, sq);
        jq_propagate(j, sq);
        jq_seq_settle(j, sq);
    }
    jq_rearm(j);
}

void ss_jobs_test_fault(ss_jobs *j, unsigned faults)
{
    j->fault_write = (faults & SS_JOBS_FAULT_WRITE) != 0;
    j->fault_state_read = (faults & SS_JOBS_FAULT_STATE_READ) != 0;
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
            out->done_stored += sv->n[J_DONE] + sv->n[J_FAILED] - sv->n_collecting;
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
        jq_job_free(sq->jobs[i]);
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
    for (size_t k = 0; k < ls->n; k++)
        free(ls->items[k].ckey);
    free(ls->items);
    free(ls);
}

void jq_maybe_finish_close(ss_jobs *j)
{
    if (!j->closing || !j->timer_closed || j->inflight > 0)
        return;
    /* Dead leases (expired, awaiting an op) are gone with the ops; what is
     * left is live leases and the index. */
    for (job *jb = j->held, *next; jb; jb = next) { /* held ones out of any sequence */
        next = jb->held_next;
        if (jb->removed)
            jq_job_free(jb);
    }
    ss_map_each(&j->leases, free_lease_cb, NULL);
    ss_map_free(&j->leases);
    ss_map_each(&j->savers, free_saver_cb, NULL);
    ss_map_free(&j->savers);
    ss_heap_free(&j->timers);
    ss_map_free(&j->parked);
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
    jq_maybe_finish_close(j);
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
        if (tm->kind == T_LEASE || tm->kind == T_HOLD)
            continue;
        waiter *w = (waiter *)tm;
        jq_waiter_unpark(j, w);
        jq_reply_status(w->cb, w->arg, CODE(UNAVAILABLE), "server is shutting down");
        free(w);
    }
    if (direct)
        jq_maybe_finish_close(j);
    else
        uv_close((uv_handle_t *)&j->timer, on_timer_closed);
}
