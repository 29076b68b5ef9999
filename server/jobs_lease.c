/* jobs_lease -- Lease: hand ready segments to workers with their state,
 * serve parked Lease requests, and expire leases.
 */
#include "jobs_internal.h"

/* ---- leases ----------------------------------------------------------- */

static void lease_free(ss_jobs *j, lease *ls)
{
    if (ls->live) {
        ss_map_remove(&j->leases, &ls->mn);
        ls->live = false;
    }
    jq_timer_del(j, &ls->t);
    for (size_t k = 0; k < ls->n; k++)
        free(ls->items[k].ckey);
    free(ls->items);
    free(ls);
}

/* jb no longer belongs to ls (completed, failed, returned). */
void jq_lease_resolve(ss_jobs *j, lease *ls, job *jb)
{
    for (size_t k = 0; k < ls->n; k++) {
        if (ls->items[k].jb == jb && ls->items[k].st != LI_DONE) {
            ls->items[k].st = LI_DONE;
            ls->unresolved--;
        }
    }
    jb->ls = NULL;
    if (ls->unresolved == 0 && !ls->has_cancelled)
        lease_free(j, ls);
}

void jq_expire_lease(ss_jobs *j, lease *ls)
{
    if (ls->unresolved == 0) { /* kept only to name its cancelled items */
        lease_free(j, ls);
        return;
    }
    j->expired++;
    ls->live = false;
    ss_map_remove(&j->leases, &ls->mn);
    size_t n = 0;
    for (size_t k = 0; k < ls->n; k++)
        n += ls->items[k].st == LI_PENDING;
    SS_LOG(SS_LOG_INFO, "jobs: lease %" PRIu64 " (%s) expired with %zu segment(s) pending",
           ls->id, ls->worker[0] ? ls->worker : "unnamed worker", n);
    jobs_op *op = n ? jq_op_new(j, OP_EXPIRE, n) : NULL;
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
        if (op && jq_patch_attempt(j, &op->p[used], jb, why) == 0) {
            used++; /* stays leased (busy) until the attempt is recorded */
        } else {
            SS_LOG(SS_LOG_ERROR, "jobs: out of memory recording an expiry; requeued");
            jq_job_set_state(jb, jb->sq->sv, j, J_QUEUED);
            jq_seq_settle(j, jb->sq);
        }
    }
    if (op) {
        op->n = used;
        jq_op_submit(j, op);
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
        jq_job_set_state(jb, jb->sq->sv, j, J_QUEUED);
    }
    ls->unresolved = 0;
    seq *last = NULL;
    for (size_t k = 0; k < ls->n; k++) {
        seq *sq = ls->items[k].jb->sq;
        if (sq != last)
            jq_seq_settle(j, sq);
        last = sq;
    }
    lease_free(j, ls);
}

/* ---- reply sizes (the frame limit) ------------------------------------ */

/* Bytes a Lease reply takes without its items: the Response envelope with
 * id, OK status, lease id and deadline at their widest, the state names,
 * and room for the lease body's length prefix to grow. */
size_t jq_lease_envelope_size(const ss_schema *schema)
{
    char *names[SS_STATES_PER_SAVER_MAX];
    for (size_t k = 0; k < schema->n_states; k++)
        names[k] = schema->states[k].name;
    Statesaver__V1__LeaseResponse body = STATESAVER__V1__LEASE_RESPONSE__INIT;
    body.lease_id = UINT64_MAX;
    body.deadline_ms = UINT64_MAX;
    body.n_names = schema->n_states;
    body.names = names;
    Statesaver__V1__Status status = STATESAVER__V1__STATUS__INIT;
    status.message = (char *)"";
    Statesaver__V1__Response resp = STATESAVER__V1__RESPONSE__INIT;
    resp.id = UINT64_MAX;
    resp.status = &status;
    resp.body_case = STATESAVER__V1__RESPONSE__BODY_LEASE;
    resp.lease = &body;
    return statesaver__v1__response__get_packed_size(&resp) + 5;
}

/* Bytes one item adds to a Lease reply: field tag, length prefix, body. */
size_t jq_lease_item_size(const Statesaver__V1__LeasedSegment *s)
{
    return statesaver__v1__leased_segment__get_packed_size(s) + 6;
}

/* Largest reply payload a frame may carry (the limit less the margin the
 * server keeps for the frame header). */
static size_t frame_room(const ss_jobs *j)
{
    return j->frame_max > SS_JOBS_FRAME_MARGIN ? j->frame_max - SS_JOBS_FRAME_MARGIN : 0;
}

int jq_lease_fit(const ss_jobs *j, const ss_schema *schema, const ss_bytes *key,
                 uint64_t segment, uint32_t length, const int64_t in_dims[2], size_t in_bytes,
                 size_t *need)
{
    Statesaver__V1__Tensor tens[1 + SS_STATES_PER_SAVER_MAX], *tenp[SS_STATES_PER_SAVER_MAX];
    Statesaver__V1__LeasedSegment s = STATESAVER__V1__LEASED_SEGMENT__INIT;
    s.key.data = (uint8_t *)key->data;
    s.key.len = key->len;
    s.segment = segment;
    s.length = length;
    s.last = true;
    s.attempts = j->opt.max_attempts;
    /* Sizes only: the packer's size pass reads lengths, never the data. */
    statesaver__v1__tensor__init(&tens[0]);
    ss_tensor_borrow(&tens[0], STATESAVER__V1__DTYPE__DT_FLOAT32, in_dims, 2, NULL, in_bytes);
    s.inputs = &tens[0];
    s.n_states = schema->n_states;
    s.states = tenp;
    for (size_t k = 0; k < schema->n_states; k++) {
        const ss_state_spec *sp = &schema->states[k];
        statesaver__v1__tensor__init(&tens[1 + k]);
        ss_tensor_borrow(&tens[1 + k], sp->dtype, sp->shape, sp->rank, NULL, sp->nbytes);
        tenp[k] = &tens[1 + k];
    }
    *need = jq_lease_envelope_size(schema) + jq_lease_item_size(&s) + SS_JOBS_FRAME_MARGIN;
    return *need <= j->frame_max ? 0 : SS_ERR_TOO_BIG;
}

/* Per-item scratch for building a Lease reply. */
typedef struct lease_build {
    seq *sq;               /* sequence */
    job *jb;               /* its ready job */
    uint8_t *state;        /* schema->state_bytes of fetched state */
    bool skipped;          /* not leased (over budget or unreadable) */
    int64_t in_dims[2];    /* inputs shape */
    void *tmem;            /* training fields of the item (jobs_train.c), owned */
} lease_build;

/* Everything one Lease reply owns or borrows while it is built. */
typedef struct lease_reply {
    ss_schema *schema;     /* the saver's schema (reference held) */
    size_t ns;             /* schema->n_states */
    lease_build *b;        /* max_batch slots, owned */
    size_t max_batch;      /* slots in b */
    size_t n;              /* items picked */
    size_t kept;           /* items in the reply (first kept of segs) */
    MDB_txn *txn;          /* read txn the inputs point into, or NULL */
    Statesaver__V1__LeasedSegment *segs;  /* n items, owned */
    Statesaver__V1__LeasedSegment **segp; /* n pointers, owned */
    Statesaver__V1__Tensor *tens;         /* n * (ns + 1) tensors, owned */
    Statesaver__V1__Tensor **tenp;        /* n * ns pointers, owned */
    char **names;          /* ns names borrowed from schema, owned array */
    lease *ls;             /* the lease being built, owned until started */
    size_t frame_used;     /* reply bytes so far (envelope + kept items) */
} lease_reply;

/* Fail jb for good (no attempt counted) with reason; the op's done
 * callback applies it and fails the later segments. */
static void fail_job(ss_jobs *j, job *jb, const char *reason)
{
    jobs_op *op = jq_op_new(j, OP_PROPAGATE, 1);
    if (!op)
        return;
    patch *p = &op->p[0];
    p->jb = jb;
    p->id = jb->id;
    p->kind = P_FAIL;
    p->attempts = jb->attempts;
    p->reason = jq_dup_bytes(reason, strlen(reason));
    jb->busy++;
    jq_op_submit(j, op);
}

/* Reading jb's state or record failed: count it as a failed attempt (the
 * write takes jb off the ready heap until it commits, and max_attempts
 * ends it), so a persistent read error cannot spin the lease loop. */
static void read_failed(ss_jobs *j, job *jb, const char *what, const char *msg)
{
    char why[SS_JOB_REASON_MAX];
    snprintf(why, sizeof why, "lease: reading %s: %.900s", what, msg);
    SS_LOG(SS_LOG_ERROR, "jobs: %s", why);
    jobs_op *op = jq_op_new(j, OP_EXPIRE, 1);
    if (!op || jq_patch_attempt(j, &op->p[0], jb, why) < 0) {
        jq_op_free(op);
        return;
    }
    jq_op_submit(j, op);
}

/* Step 1: take up to max_batch ready sequences of sv off the ready heap and
 * fetch each one's state into r->b. Stops early on a store error. */
static void pick_ready(ss_jobs *j, saverq *sv, lease_reply *r)
{
    const ss_schema *schema = r->schema;
    while (r->n < r->max_batch) {
        ss_heap_node *hn = ss_heap_min(&sv->ready);
        if (!hn)
            break;
        seq *sq = (seq *)((char *)hn - offsetof(seq, rn));
        job *jb = jq_seq_job(sq, sq->next);
        ss_heap_remove(&sv->ready, &sq->rn);
        uint8_t *state = malloc(schema->state_bytes ? schema->state_bytes : 1);
        if (!state) {
            jq_seq_settle(j, sq);
            break;
        }
        void *outs[SS_STATES_PER_SAVER_MAX];
        size_t off = 0;
        for (size_t i = 0; i < r->ns; i++) {
            outs[i] = state + off;
            off += schema->states[i].nbytes;
        }
        ss_bytes key = {sq->key, sq->key_len};
        uint64_t next = 0, upd = 0;
        char msg[SS_STORE_MSG] = "";
        int rc = j->fault_state_read ? SS_ERR_STORE
                                     : ss_store_fetch(j->st, schema, 1, &key, outs, &next,
                                                      &upd, msg);
        if (j->fault_state_read)
            snprintf(msg, sizeof msg, "test fault: state read");
        if (rc == SS_ERR_NOT_FOUND) {
            /* The sequence was evicted: its state is gone for good. */
            free(state);
            fail_job(j, jb, msg);
            continue;
        }
        if (rc < 0) {
            free(state);
            read_failed(j, jb, "the state", msg);
            jq_seq_settle(j, sq);
            continue;
        }
        if (next != sq->next) {
            /* Someone else moved the state: re-evaluate with the new value. */
            free(state);
            sq->next = next;
            jq_propagate(j, sq);
            jq_seq_settle(j, sq);
            continue;
        }
        lease_build *b = &r->b[r->n++];
        b->sq = sq;
        b->jb = jb;
        b->state = state;
        b->in_dims[0] = jb->in_rows;
    }
}

/* Step 2: the reply's arrays and the lease, for r->n items. */
static int reply_alloc(lease_reply *r)
{
    size_t n = r->n, ns = r->ns;
    r->segs = calloc(n, sizeof *r->segs);
    r->segp = calloc(n, sizeof *r->segp);
    r->tens = calloc(n * (ns + 1), sizeof *r->tens);
    r->tenp = calloc(n * (ns ? ns : 1), sizeof *r->tenp);
    r->names = calloc(ns ? ns : 1, sizeof *r->names);
    r->ls = calloc(1, sizeof *r->ls);
    if (r->ls)
        r->ls->items = calloc(n, sizeof *r->ls->items);
    if (!r->segs || !r->segp || !r->tens || !r->tenp || !r->names || !r->ls || !r->ls->items)
        return SS_ERR_NOMEM;
    for (size_t k = 0; k < ns; k++)
        r->names[k] = r->schema->states[k].name;
    return 0;
}

/* Fill reply item r->kept from picked item b, its record's inputs and
 * training fields, and the sequence's context record (or NULL). Fails
 * only for memory. */
static int fill_item(lease_reply *r, lease_build *b, const ss_job_rec *rec,
                     const ss_job_rec *ctx)
{
    size_t ns = r->ns, kept = r->kept;
    Statesaver__V1__LeasedSegment *s = &r->segs[kept];
    statesaver__v1__leased_segment__init(s);
    s->key.data = b->sq->key;
    s->key.len = b->sq->key_len;
    s->segment = b->jb->segment;
    s->length = b->jb->length;
    s->last = b->jb->last;
    s->attempts = b->jb->attempts;
    Statesaver__V1__Tensor *t = &r->tens[kept * (ns + 1)];
    statesaver__v1__tensor__init(t);
    b->in_dims[0] = rec->in_rows;
    b->in_dims[1] = rec->in_cols;
    ss_tensor_borrow(t, STATESAVER__V1__DTYPE__DT_FLOAT32, b->in_dims, 2, rec->inputs,
                     (size_t)rec->in_rows * rec->in_cols * 4u);
    if (rec->in_cols)
        s->inputs = t;
    free(b->tmem);
    b->tmem = NULL;
    if (jq_train_lease_item(s, rec, ctx ? ctx->ext : NULL, ctx ? ctx->ext_len : 0, r->schema,
                            b->state, b->jb->segment == 0, &b->tmem) < 0)
        return SS_ERR_NOMEM;
    s->n_states = ns;
    s->states = &r->tenp[kept * ns];
    size_t off = 0;
    for (size_t k = 0; k < ns; k++) {
        const ss_state_spec *sp = &r->schema->states[k];
        Statesaver__V1__Tensor *st = &r->tens[kept * (ns + 1) + 1 + k];
        statesaver__v1__tensor__init(st);
        ss_tensor_borrow(st, sp->dtype, sp->shape, sp->rank, b->state + off, sp->nbytes);
        off += sp->nbytes;
        s->states[k] = st;
    }
    r->segp[kept] = s;
    r->ls->items[kept].jb = b->jb;
    r->ls->items[kept].st = LI_PENDING;
    return 0;
}

/* A segment whose reply alone exceeds the frame limit can never be
 * delivered: fail it with the sizes (its later segments fail with it). */
static void fail_undeliverable(ss_jobs *j, lease_build *b, size_t need)
{
    char why[SS_JOB_REASON_MAX], kbuf[96];
    snprintf(why, sizeof why, "key %s segment %" PRIu64 " cannot be delivered: its Lease "
             "reply would take %zu bytes (inputs %" PRId64 "x%" PRId64 " float32 and the "
             "saver's state), over the frame limit of %zu bytes",
             ss_keyfmt(kbuf, sizeof kbuf, b->sq->key, b->sq->key_len), b->jb->segment,
             need, b->in_dims[0], b->in_dims[1], j->frame_max);
    SS_LOG(SS_LOG_WARN, "jobs: %s", why);
    fail_job(j, b->jb, why);
}

/* Step 3: read the inputs of the picked items (in r->txn) and fill the
 * reply with those that fit the tensor budget and the frame limit; the
 * others are marked skipped (they stay queued), except a segment that
 * could not fit any reply, which is failed. */
static void fill_items(ss_jobs *j, lease_reply *r)
{
    size_t budget = j->opt.max_reply_bytes, used = 0, room = frame_room(j);
    r->frame_used = jq_lease_envelope_size(r->schema);
    for (size_t i = 0; i < r->n; i++) {
        ss_job_rec rec;
        char msg[SS_STORE_MSG];
        lease_build *b = &r->b[i];
        int rc = ss_jobs_db_get(r->txn, j->dbi, b->jb->id, &rec, msg);
        ss_job_rec crec;
        bool has_ctx = false;
        if (rc == 0 && b->sq->ctx_id) {
            char cmsg[SS_STORE_MSG];
            int crc = ss_jobs_db_get(r->txn, j->dbi, b->sq->ctx_id, &crec, cmsg);
            has_ctx = crc == 0 && crec.is_ctx;
            if (crc < 0 && crc != SS_ERR_NOT_FOUND) {
                rc = crc;
                snprintf(msg, sizeof msg, "%s", cmsg);
            }
        }
        size_t in_bytes = rc == 0 ? (size_t)rec.in_rows * rec.in_cols * 4u + rec.ext_len +
                                        (has_ctx ? crec.ext_len : 0) : 0;
        if (rc < 0 || (r->kept > 0 && used + in_bytes + r->schema->state_bytes > budget)) {
            if (rc < 0)
                read_failed(j, b->jb, "the job record", msg);
            b->skipped = true; /* stays queued; settled after the txn */
            continue;
        }
        if (fill_item(r, b, &rec, has_ctx ? &crec : NULL) < 0) {
            b->skipped = true;
            continue;
        }
        size_t item = jq_lease_item_size(&r->segs[r->kept]);
        if (r->frame_used + item > room) {
            b->skipped = true;
            if (r->kept == 0 && jq_lease_envelope_size(r->schema) + item > room)
                fail_undeliverable(j, b, r->frame_used + item + SS_JOBS_FRAME_MARGIN);
            continue;
        }
        r->frame_used += item;
        used += in_bytes + r->schema->state_bytes;
        r->kept++;
    }
}

/* Settle the sequences of every picked item (all: the lease is off), or of
 * the skipped ones only. */
static void settle_picked(ss_jobs *j, lease_reply *r, bool skipped_only)
{
    for (size_t i = 0; i < r->n; i++)
        if (!skipped_only || r->b[i].skipped)
            jq_seq_settle(j, r->b[i].sq);
}

/* Step 4: give the lease an id and a deadline and index it. */
static int lease_start(ss_jobs *j, saverq *sv, lease_reply *r, uint32_t lease_ms,
                       const char *worker)
{
    lease *ls = r->ls;
    ls->id = ++j->next_lease;
    for (int i = 0; i < 8; i++)
        ls->idkey[i] = (uint8_t)(ls->id >> (56 - 8 * i));
    ls->sv = sv;
    ls->n = ls->unresolved = r->kept;
    snprintf(ls->worker, sizeof ls->worker, "%s", worker ? worker : "");
    if (ss_map_insert(&j->leases, &ls->mn, ls->idkey, 8) < 0 ||
        jq_timer_add(j, &ls->t, T_LEASE, lease_ms) < 0) {
        if (ls->mn.len)
            ss_map_remove(&j->leases, &ls->mn);
        return SS_ERR_NOMEM;
    }
    ls->live = true;
    for (size_t i = 0; i < r->kept; i++) {
        job *jb = ls->items[i].jb;
        jb->ls = ls;
        jq_job_set_state(jb, sv, j, J_LEASED);
    }
    return 0;
}

/* Step 5: send the reply; an undeliverable one gives the segments back. */
static void deliver(ss_jobs *j, lease_reply *r, uint32_t lease_ms, ss_jobs_reply_fn cb,
                    void *arg)
{
    lease *ls = r->ls;
    r->ls = NULL; /* live now: freed by its resolution */
    Statesaver__V1__LeaseResponse body = STATESAVER__V1__LEASE_RESPONSE__INIT;
    body.lease_id = ls->id;
    body.deadline_ms = jq_wall_ms() + lease_ms;
    body.n_names = r->ns;
    body.names = r->names;
    body.n_items = r->kept;
    body.items = r->segp;
    int rc = jq_reply_ok(cb, arg, STATESAVER__V1__RESPONSE__BODY_LEASE, &body);
    ss_jobs_db_read_end(r->txn);
    r->txn = NULL;
    settle_picked(j, r, true);
    if (rc == SS_ERR_TOO_BIG && ls->n == 1) {
        /* The server refused even one segment as too big for a frame
         * (its limit is lower than the queue was told): never retry it. */
        job *jb = ls->items[0].jb;
        unlease(j, ls);
        char why[SS_JOB_REASON_MAX];
        snprintf(why, sizeof why, "segment %" PRIu64 " cannot be delivered: its Lease reply "
                 "exceeds the server's frame limit", jb->segment);
        fail_job(j, jb, why);
    } else if (rc < 0) {
        SS_LOG(SS_LOG_INFO, "jobs: lease %" PRIu64 " undeliverable, segments requeued", ls->id);
        unlease(j, ls);
    }
}

static void reply_free(lease_reply *r)
{
    ss_jobs_db_read_end(r->txn);
    if (r->ls) {
        free(r->ls->items);
        free(r->ls);
    }
    if (r->b)
        for (size_t i = 0; i < r->max_batch; i++) {
            free(r->b[i].state);
            free(r->b[i].tmem);
        }
    free(r->b);
    free(r->segs);
    free(r->segp);
    free(r->tens);
    free(r->tenp);
    free(r->names);
    ss_schema_unref(r->schema);
}

/* Sequences sv may still lease under its max_in_flight (UINT32_MAX when
 * it has no cap). Each leased job is a distinct sequence. */
static uint32_t lease_room(const saverq *sv)
{
    if (sv->max_in_flight == 0)
        return UINT32_MAX;
    uint64_t leased = sv->n[J_LEASED];
    return leased >= sv->max_in_flight ? 0 : (uint32_t)(sv->max_in_flight - leased);
}

/* Ready segments a Lease of sv could get now (heap size within the room). */
static size_t ready_now(const saverq *sv)
{
    size_t n = sv->ready.n, room = lease_room(sv);
    return n < room ? n : room;
}

/* May parked waiter w be served now? A min_batch one that is still
 * delaying waits for min_batch ready segments; the others take any. */
static bool eligible(const saverq *sv, const waiter *w)
{
    return !w->delaying || w->min_batch <= 1 || ready_now(sv) >= w->min_batch;
}

/* Try to lease up to max_batch ready segments of sv and reply. Returns 1
 * when a reply was sent (items, or an error), 0 when nothing was ready
 * (no reply sent). */
static int serve(ss_jobs *j, saverq *sv, uint32_t max_batch, uint32_t lease_ms,
                 const char *worker, ss_jobs_reply_fn cb, void *arg)
{
    if (!ss_heap_min(&sv->ready))
        return 0;
    ss_schema *schema = NULL;
    if (jq_schema_get(j, sv->name, &schema, cb, arg) < 0)
        return 1;
    sv->max_in_flight = schema->max_in_flight;
    uint32_t room = lease_room(sv);
    if (room == 0) { /* max_in_flight sequences are leased already */
        ss_schema_unref(schema);
        return 0;
    }
    if (max_batch > room)
        max_batch = room;
    lease_reply r = {.max_batch = max_batch};
    r.schema = schema;
    int ret = 1;
    r.ns = r.schema->n_states;
    r.b = calloc(max_batch, sizeof *r.b);
    if (!r.b) {
        jq_reply_status(cb, arg, CODE(INTERNAL), "lease: out of memory");
        goto out;
    }
    pick_ready(j, sv, &r);
    if (r.n == 0) {
        ret = 0;
        goto out;
    }
    /* Inputs: one read transaction, pointers valid until it ends. */
    char msg[SS_STORE_MSG];
    if (ss_jobs_db_read_begin(j->env, &r.txn, msg) < 0) {
        settle_picked(j, &r, false);
        jq_reply_status(cb, arg, CODE(INTERNAL), "lease: %s", msg);
        goto out;
    }
    if (reply_alloc(&r) < 0) {
        settle_picked(j, &r, false);
        jq_reply_status(cb, arg, CODE(INTERNAL), "lease: out of memory");
        goto out;
    }
    fill_items(j, &r);
    if (r.kept == 0) {
        ss_jobs_db_read_end(r.txn);
        r.txn = NULL;
        settle_picked(j, &r, false);
        ret = 0;
        goto out;
    }
    if (lease_start(j, sv, &r, lease_ms, worker) < 0) {
        ss_jobs_db_read_end(r.txn);
        r.txn = NULL;
        settle_picked(j, &r, false);
        jq_reply_status(cb, arg, CODE(INTERNAL), "lease: out of memory");
        goto out;
    }
    deliver(j, &r, lease_ms, cb, arg);
out:
    reply_free(&r);
    return ret;
}

/* Serve parked leases of sv while segments are ready. */
void jq_kick(ss_jobs *j, saverq *sv)
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
        while (ss_heap_min(&sv->ready) && lease_room(sv) > 0) {
            /* The first waiter that may be served: a min_batch Lease
             * still waiting for its batch does not hold up the others. */
            waiter *w = sv->w_head;
            while (w && !eligible(sv, w))
                w = w->next;
            if (!w)
                break;
            /* While it is served, the waiter is off the list and the
             * parked map (a cancel from inside its reply cannot find it)
             * but keeps its timer, so a re-park needs no allocation. */
            jq_waiter_unlink_lease(sv, w);
            ss_map_remove(&j->parked, &w->pn);
            w->parked = false;
            if (serve(j, sv, w->max_batch, w->lease_ms, w->worker, w->cb, w->arg)) {
                jq_timer_del(j, &w->t);
                j->waiting--;
                free(w);
            } else {
                /* Nothing was actually leasable: park it again, in front
                 * (the map has buckets: inserting cannot fail). */
                w->next = sv->w_head;
                if (sv->w_head)
                    sv->w_head->prev = w;
                else
                    sv->w_tail = w;
                sv->w_head = w;
                w->parked = ss_map_insert(&j->parked, &w->pn, &w->arg, sizeof w->arg) == 0;
                break;
            }
        }
    } while (j->kick_again);
    j->kicking = false;
    jq_rearm(j);
}

int jq_reply_empty_lease(ss_jobs_reply_fn cb, void *arg)
{
    Statesaver__V1__LeaseResponse body = STATESAVER__V1__LEASE_RESPONSE__INIT;
    return jq_reply_ok(cb, arg, STATESAVER__V1__RESPONSE__BODY_LEASE, &body);
}

void ss_jobs_lease(ss_jobs *j, const Statesaver__V1__LeaseRequest *req,
                   ss_jobs_reply_fn cb, void *arg)
{
    if (jq_closing_reply(j, cb, arg))
        return;
    size_t slen = jq_saver_name_check(req->saver, cb, arg);
    if (slen == 0)
        return;
    if (req->lease_ms > SS_JOBS_LEASE_MS_MAX) {
        jq_reply_status(cb, arg, CODE(INVALID_ARGUMENT), "lease_ms %" PRIu32 " exceeds %u",
                     req->lease_ms, SS_JOBS_LEASE_MS_MAX);
        return;
    }
    saverq *sv = jq_saver_declared(j, req->saver, slen, cb, arg);
    if (!sv)
        return;
    uint32_t max_batch = req->max_batch ? req->max_batch : 1;
    if (req->min_batch > max_batch) {
        jq_reply_status(cb, arg, CODE(INVALID_ARGUMENT), "min_batch %" PRIu32 " exceeds "
                        "max_batch %" PRIu32, req->min_batch, max_batch);
        return;
    }
    if (max_batch > j->opt.max_batch)
        max_batch = j->opt.max_batch;
    uint32_t min_batch = req->min_batch > max_batch ? max_batch : req->min_batch;
    uint32_t delay = req->max_delay_ms > SS_WAIT_MS_MAX ? SS_WAIT_MS_MAX : req->max_delay_ms;
    bool delaying = min_batch > 1 && delay > 0;
    uint32_t lease_ms = req->lease_ms ? req->lease_ms : j->opt.lease_ms;
    /* Served at once unless a waiter that could be served now is ahead
     * of it (FIFO), or it waits for a batch that is not ready yet. */
    bool ahead = false;
    for (waiter *o = sv->w_head; o && !ahead; o = o->next)
        ahead = eligible(sv, o);
    if (!ahead && (!delaying || ready_now(sv) >= min_batch) &&
        serve(j, sv, max_batch, lease_ms, req->worker, cb, arg))
        return;
    uint32_t wait_ms = req->wait_ms > SS_WAIT_MS_MAX ? SS_WAIT_MS_MAX : req->wait_ms;
    if (wait_ms == 0 && !delaying) {
        jq_reply_empty_lease(cb, arg);
        return;
    }
    waiter *w = jq_waiter_new(j, T_WAIT_LEASE, delaying ? delay : wait_ms, cb, arg);
    if (!w)
        return;
    w->sv = sv;
    w->max_batch = max_batch;
    w->lease_ms = lease_ms;
    w->min_batch = min_batch;
    w->delaying = delaying;
    w->wait_after = delaying && wait_ms > delay ? wait_ms - delay : 0;
    snprintf(w->worker, sizeof w->worker, "%s", req->worker ? req->worker : "");
    w->prev = sv->w_tail;
    if (sv->w_tail)
        sv->w_tail->next = w;
    else
        sv->w_head = w;
    sv->w_tail = w;
}

void jq_lease_delay_over(ss_jobs *j, waiter *w)
{
    saverq *sv = w->sv;
    w->delaying = false;
    /* The rest of its wait: a timer of 0 answers it empty on the next
     * pass of the timer loop unless the kick below serves it first. */
    if (jq_timer_add(j, &w->t, T_WAIT_LEASE, w->wait_after) < 0) {
        jq_waiter_unlink_lease(sv, w);
        if (w->parked) {
            ss_map_remove(&j->parked, &w->pn);
            w->parked = false;
        }
        j->waiting--;
        jq_reply_empty_lease(w->cb, w->arg);
        free(w);
        return;
    }
    jq_kick(j, sv);
}
