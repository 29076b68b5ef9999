/* jobs_train -- the training fields of the job queue: named sequences,
 * token-id inputs, the per-sequence context, total_length, sequence_count
 * and per-sequence initial states. Their checks at Submit, their encoding
 * in a job record's extension and in the sequence's context record, and
 * the Lease fields built from them. Semantics: docs/training.md.
 *
 * Extension blob (job record tail, and the body of a context record), all
 * little-endian:
 *   u64 total_length u64 sequence_count u32 n_tensors u32 reserved(0)
 *   n_tensors * {u8 kind u8 dtype u8 rank u8 0 u32 name_len
 *                i64 dims[rank] u64 nbytes, name, data}
 * kind: JX_INPUTS (int32/int64 [T] inputs), JX_SEQ (a named sequence),
 * JX_CTX (a context tensor), JX_INIT (an initial state, segment 0).
 */
#include "jobs_internal.h"

#include "ss_crc32c.h"

#define EXT_HEAD JQ_EXT_HEAD /* bytes of the blob header */
#define ENT_HEAD 8u   /* bytes of an entry before its dims */

static void put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}
static void put64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}
static uint32_t get32(const uint8_t *p)
{
    uint32_t v = 0;
    for (int i = 3; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}
static uint64_t get64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

/* The dtypes a named sequence or a context tensor may have. */
static bool dtype_ok(int dt)
{
    return dt == STATESAVER__V1__DTYPE__DT_FLOAT32 || dt == STATESAVER__V1__DTYPE__DT_FLOAT64 ||
           dt == STATESAVER__V1__DTYPE__DT_INT32 || dt == STATESAVER__V1__DTYPE__DT_INT64;
}

/* Common check of one named tensor: name, dtype, shape against data. */
static int named_check(const char *field, const char *name, const ss_tensor_msg *t,
                       char *err, size_t errsz)
{
    size_t nl = name ? strlen(name) : 0;
    if (nl == 0 || nl > SS_JOBS_NAME_MAX) {
        snprintf(err, errsz, "%s: a name must be 1..%u bytes, got %zu", field,
                 SS_JOBS_NAME_MAX, nl);
        return -1;
    }
    if (!t) {
        snprintf(err, errsz, "%s.%s: no tensor", field, name);
        return -1;
    }
    if (!dtype_ok(t->dtype)) {
        snprintf(err, errsz, "%s.%s: unknown dtype %d (float32, float64, int32 or int64)",
                 field, name, (int)t->dtype);
        return -1;
    }
    if (t->n_shape > SS_TENSOR_MAX_RANK || ss_tensor_check(t) < 0) {
        char shp[96];
        ss_shape_format(t->shape, t->n_shape > SS_TENSOR_MAX_RANK ? 0 : t->n_shape, shp,
                        sizeof shp);
        snprintf(err, errsz, "%s.%s: %s %s with %zu bytes of data does not match its shape "
                 "(rank at most %u)", field, name, ss_dtype_name(t->dtype), shp, t->data.len,
                 SS_TENSOR_MAX_RANK);
        return -1;
    }
    return 0;
}

/* Entries of the three Submit maps share one layout (key, value). */
typedef struct map_entry {
    ProtobufCMessage base; /* protobuf-c header */
    char *key;             /* name */
    ss_tensor_msg *value;  /* tensor */
} map_entry;

static bool name_seen(const jq_named *v, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(v[i].name, name) == 0)
            return true;
    return false;
}

/* The inputs rule: float32 [T, input_size] or int32/int64 [T]. */
static int inputs_check(const char *field, const ss_tensor_msg *in, const char *kbuf,
                        uint64_t segment, char *err, size_t errsz)
{
    bool fl = in->dtype == STATESAVER__V1__DTYPE__DT_FLOAT32 && in->n_shape == 2 &&
              in->shape[1] >= 1 && in->shape[1] <= UINT32_MAX;
    bool ids = (in->dtype == STATESAVER__V1__DTYPE__DT_INT32 ||
                in->dtype == STATESAVER__V1__DTYPE__DT_INT64) && in->n_shape == 1;
    if ((!fl && !ids) || in->shape[0] < 1 || in->shape[0] > (int64_t)SS_JOBS_STEPS_MAX ||
        ss_tensor_check(in) < 0) {
        char shp[64];
        ss_shape_format(in->shape, in->n_shape <= SS_TENSOR_MAX_RANK ? in->n_shape : 0, shp,
                        sizeof shp);
        snprintf(err, errsz, "key %s segment %" PRIu64 ": %s must be float32 [T, input_size] "
                 "or int32/int64 [T] (token ids) with 1 <= T <= %u and data matching the "
                 "shape; got %s %s (%zu bytes)", kbuf, segment, field, SS_JOBS_STEPS_MAX,
                 ss_dtype_name(in->dtype), shp, in->data.len);
        return -1;
    }
    return 0;
}

static size_t ent_size(const jq_named *e)
{
    return ENT_HEAD + 8u * e->t->n_shape + 8u + strlen(e->name) + e->t->data.len;
}

int jq_train_check(const ss_jobs *j, const Statesaver__V1__SubmitRequest *req,
                   const ss_schema *schema, const char *kbuf, jq_train *t, char *err,
                   size_t errsz)
{
    (void)j;
    memset(t, 0, sizeof *t);
    const ss_tensor_msg *in = req->inputs;
    /* Named sequences; "inputs" among them stands for the inputs field. */
    if (req->n_sequences > SS_JOBS_NAMED_MAX || req->n_context > SS_JOBS_NAMED_MAX) {
        snprintf(err, errsz, "%s: at most %u named tensors, got %zu",
                 req->n_sequences > SS_JOBS_NAMED_MAX ? "sequences" : "context",
                 SS_JOBS_NAMED_MAX,
                 req->n_sequences > SS_JOBS_NAMED_MAX ? req->n_sequences : req->n_context);
        return -1;
    }
    for (size_t i = 0; i < req->n_sequences; i++) {
        const map_entry *e = (const map_entry *)req->sequences[i];
        if (e->key && strcmp(e->key, "inputs") == 0) {
            if (in) {
                snprintf(err, errsz, "sequences.inputs: the inputs are given twice (also as "
                         "the inputs field)");
                return -1;
            }
            if (!e->value) {
                snprintf(err, errsz, "sequences.inputs: no tensor");
                return -1;
            }
            in = e->value;
            continue;
        }
        if (named_check("sequences", e->key, e->value, err, errsz) < 0)
            return -1;
        if (e->value->n_shape < 1) {
            snprintf(err, errsz, "sequences.%s: a sequence is [T, ...], got a scalar", e->key);
            return -1;
        }
        if (name_seen(t->seq, t->n_seq, e->key)) {
            snprintf(err, errsz, "sequences.%s: given twice", e->key);
            return -1;
        }
        t->seq[t->n_seq].name = e->key;
        t->seq[t->n_seq++].t = e->value;
    }
    if (!in && t->n_seq == 0) {
        snprintf(err, errsz, "key %s segment %" PRIu64 ": inputs: none given (the inputs "
                 "field or at least one named sequence)", kbuf, req->segment);
        return -1;
    }
    if (in) {
        if (inputs_check("inputs", in, kbuf, req->segment, err, errsz) < 0)
            return -1;
        t->T = (uint32_t)in->shape[0];
        if (in->n_shape == 2)
            t->fin = in;
        else
            t->xin = in;
    } else {
        int64_t T0 = t->seq[0].t->shape[0];
        if (T0 < 1 || T0 > (int64_t)SS_JOBS_STEPS_MAX) {
            snprintf(err, errsz, "sequences.%s: T = %" PRId64 " outside 1..%u", t->seq[0].name,
                     T0, SS_JOBS_STEPS_MAX);
            return -1;
        }
        t->T = (uint32_t)T0;
    }
    for (size_t i = 0; i < t->n_seq; i++)
        if (t->seq[i].t->shape[0] != (int64_t)t->T) {
            snprintf(err, errsz, "sequences.%s: T = %" PRId64 " but %s has T = %" PRIu32
                     " (every sequence of a segment has the same T)", t->seq[i].name,
                     t->seq[i].t->shape[0], in ? "inputs" : t->seq[0].name, t->T);
            return -1;
        }
    if (req->length > t->T) {
        snprintf(err, errsz, "key %s segment %" PRIu64 ": length %" PRIu32 " exceeds T = %"
                 PRIu32, kbuf, req->segment, req->length, t->T);
        return -1;
    }
    t->total_length = req->total_length;
    t->sequence_count = req->sequence_count;
    if (t->sequence_count && req->segment >= t->sequence_count) {
        snprintf(err, errsz, "sequence_count: segment %" PRIu64 " is not below "
                 "sequence_count %" PRIu64, req->segment, t->sequence_count);
        return -1;
    }
    /* Context: per-sequence, no time axis (docs/decisions.md). */
    for (size_t i = 0; i < req->n_context; i++) {
        const map_entry *e = (const map_entry *)req->context[i];
        if (named_check("context", e->key, e->value, err, errsz) < 0)
            return -1;
        if (name_seen(t->ctx, t->n_ctx, e->key)) {
            snprintf(err, errsz, "context.%s: given twice", e->key);
            return -1;
        }
        const ss_tensor_msg *c = e->value;
        if (c->n_shape >= 1 && ((t->T > 1 && c->shape[0] == (int64_t)t->T) ||
                                (t->total_length > 1 &&
                                 (uint64_t)c->shape[0] == t->total_length))) {
            snprintf(err, errsz, "context.%s: its first dimension %" PRId64 " equals the "
                     "%s (%" PRIu64 "): a context has no time axis; per-step data belongs "
                     "in sequences", e->key, c->shape[0],
                     (t->T > 1 && c->shape[0] == (int64_t)t->T) ? "segment's T"
                                                                : "total_length",
                     (t->T > 1 && c->shape[0] == (int64_t)t->T) ? (uint64_t)t->T
                                                                : t->total_length);
            return -1;
        }
        t->ctx[t->n_ctx].name = e->key;
        t->ctx[t->n_ctx++].t = c;
    }
    /* Initial states: schema names, dtypes and shapes; segment 0 only. */
    if (req->n_initial_states && req->segment != 0) {
        snprintf(err, errsz, "initial_states: given on segment %" PRIu64 "; only segment 0 "
                 "takes a sequence's initial state", req->segment);
        return -1;
    }
    if (req->n_initial_states > schema->n_states) {
        snprintf(err, errsz, "initial_states: %zu given, saver %s has %zu states",
                 req->n_initial_states, schema->saver, schema->n_states);
        return -1;
    }
    for (size_t i = 0; i < req->n_initial_states; i++) {
        const map_entry *e = (const map_entry *)req->initial_states[i];
        const ss_state_spec *sp = NULL;
        for (size_t k = 0; k < schema->n_states && e->key; k++)
            if (strcmp(schema->states[k].name, e->key) == 0)
                sp = &schema->states[k];
        if (!sp) {
            snprintf(err, errsz, "initial_states.%s: not a state of saver %s",
                     e->key ? e->key : "", schema->saver);
            return -1;
        }
        const ss_tensor_msg *v = e->value;
        bool shape_ok = v && v->n_shape == sp->rank;
        for (size_t d = 0; shape_ok && d < sp->rank; d++)
            shape_ok = v->shape[d] == sp->shape[d];
        if (!v || (int)v->dtype != sp->dtype || !shape_ok || ss_tensor_check(v) < 0 ||
            v->data.len != sp->nbytes) {
            char want[96];
            ss_shape_format(sp->shape, sp->rank, want, sizeof want);
            snprintf(err, errsz, "initial_states.%s: must be %s %s (the saver's per-sequence "
                     "shape)", e->key, ss_dtype_name(sp->dtype), want);
            return -1;
        }
        if (name_seen(t->init, t->n_init, e->key)) {
            snprintf(err, errsz, "initial_states.%s: given twice", e->key);
            return -1;
        }
        t->init[t->n_init].name = e->key;
        t->init[t->n_init++].t = v;
    }
    /* Sizes of what is stored. */
    bool any = t->xin || t->n_seq || t->n_init || t->total_length || t->sequence_count;
    if (any) {
        size_t n = EXT_HEAD;
        if (t->xin) {
            jq_named e = {"inputs", t->xin};
            n += ent_size(&e);
        }
        for (size_t i = 0; i < t->n_seq; i++)
            n += ent_size(&t->seq[i]);
        for (size_t i = 0; i < t->n_init; i++)
            n += ent_size(&t->init[i]);
        t->ext_len = n;
    }
    if (t->n_ctx) {
        size_t n = EXT_HEAD;
        for (size_t i = 0; i < t->n_ctx; i++)
            n += ent_size(&t->ctx[i]);
        t->ctx_len = n;
    }
    return 0;
}

static uint8_t *put_ent(uint8_t *p, int kind, const jq_named *e)
{
    const ss_tensor_msg *t = e->t;
    size_t nl = strlen(e->name);
    p[0] = (uint8_t)kind;
    p[1] = (uint8_t)t->dtype;
    p[2] = (uint8_t)t->n_shape;
    p[3] = 0;
    put32(p + 4, (uint32_t)nl);
    p += ENT_HEAD;
    for (size_t d = 0; d < t->n_shape; d++, p += 8)
        put64(p, (uint64_t)t->shape[d]);
    put64(p, t->data.len);
    p += 8;
    memcpy(p, e->name, nl);
    p += nl;
    if (t->data.len)
        memcpy(p, t->data.data, t->data.len);
    return p + t->data.len;
}

static uint8_t *put_head(uint8_t *p, uint64_t total, uint64_t count, uint32_t n)
{
    put64(p, total);
    put64(p + 8, count);
    put32(p + 16, n);
    put32(p + 20, 0);
    return p + EXT_HEAD;
}

void jq_train_encode_ext(const jq_train *t, uint8_t *buf)
{
    uint32_t n = (uint32_t)((t->xin ? 1 : 0) + t->n_seq + t->n_init);
    uint8_t *p = put_head(buf, t->total_length, t->sequence_count, n);
    if (t->xin) {
        jq_named e = {"inputs", t->xin};
        p = put_ent(p, JX_INPUTS, &e);
    }
    for (size_t i = 0; i < t->n_seq; i++)
        p = put_ent(p, JX_SEQ, &t->seq[i]);
    for (size_t i = 0; i < t->n_init; i++)
        p = put_ent(p, JX_INIT, &t->init[i]);
}

void jq_train_encode_ctx(const jq_train *t, uint8_t *buf)
{
    uint8_t *p = put_head(buf, 0, 0, (uint32_t)t->n_ctx);
    for (size_t i = 0; i < t->n_ctx; i++)
        p = put_ent(p, JX_CTX, &t->ctx[i]);
}

uint32_t jq_train_crc(const uint8_t *blob, size_t len)
{
    return ss_crc32c(0, blob, len);
}

/* ---- reading a blob ----------------------------------------------------- */

/* One decoded entry (borrows the blob). */
typedef struct ext_ent {
    int kind;              /* JX_* */
    int dtype;             /* DType */
    size_t rank;           /* dims used */
    const uint8_t *dims;   /* rank little-endian i64 */
    const char *name;      /* not NUL-terminated */
    size_t name_len;       /* bytes of name */
    const uint8_t *data;   /* nbytes */
    size_t nbytes;         /* bytes of data */
} ext_ent;

/* 1 and the next entry, 0 at the end, SS_ERR_FORMAT on a bad blob. */
static int ext_next(const uint8_t *b, size_t len, size_t *pos, ext_ent *e)
{
    if (*pos >= len)
        return 0;
    size_t left = len - *pos;
    const uint8_t *p = b + *pos;
    if (left < ENT_HEAD)
        return SS_ERR_FORMAT;
    e->kind = p[0];
    e->dtype = p[1];
    e->rank = p[2];
    e->name_len = get32(p + 4);
    if (e->rank > SS_TENSOR_MAX_RANK || left < ENT_HEAD + 8u * e->rank + 8u)
        return SS_ERR_FORMAT;
    size_t head = ENT_HEAD + 8u * e->rank + 8u;
    e->dims = p + ENT_HEAD;
    uint64_t nb = get64(p + ENT_HEAD + 8u * e->rank);
    if (nb > left || e->name_len > left - head || nb > left - head - e->name_len)
        return SS_ERR_FORMAT;
    e->name = (const char *)p + head;
    e->data = p + head + e->name_len;
    e->nbytes = (size_t)nb;
    *pos += head + e->name_len + e->nbytes;
    return 1;
}

int jq_train_blob_check(const uint8_t *b, size_t len)
{
    if (len < EXT_HEAD)
        return SS_ERR_FORMAT;
    uint32_t n = get32(b + 16);
    size_t pos = EXT_HEAD;
    ext_ent e;
    for (uint32_t i = 0; i < n; i++)
        if (ext_next(b, len, &pos, &e) != 1)
            return SS_ERR_FORMAT;
    return pos == len ? 0 : SS_ERR_FORMAT;
}

/* ---- Lease fields --------------------------------------------------------- */

/* Memory of one item's training fields (one block, freed with free()). */
typedef struct item_mem {
    Statesaver__V1__LeasedSegment__SequencesEntry *seq;  /* n_seq entries */
    Statesaver__V1__LeasedSegment__SequencesEntry **seqp; /* pointers */
    Statesaver__V1__LeasedSegment__ContextEntry *ctx;    /* n_ctx entries */
    Statesaver__V1__LeasedSegment__ContextEntry **ctxp;  /* pointers */
    ss_tensor_msg *tens;   /* one per entry (+ inputs) */
    int64_t *dims;         /* SS_TENSOR_MAX_RANK per tensor */
    char *names;           /* NUL-terminated names */
} item_mem;

static size_t count_kind(const uint8_t *b, size_t len, int kind, size_t *name_bytes)
{
    size_t pos = EXT_HEAD, n = 0;
    ext_ent e;
    while (ext_next(b, len, &pos, &e) == 1)
        if (kind < 0 ? e.kind != JX_INIT : e.kind == kind) {
            n++;
            *name_bytes += e.name_len + 1;
        }
    return n;
}

static void fill_tensor(ss_tensor_msg *t, int64_t *dims, const ext_ent *e)
{
    statesaver__v1__tensor__init(t);
    for (size_t d = 0; d < e->rank; d++)
        dims[d] = (int64_t)get64(e->dims + 8 * d);
    ss_tensor_borrow(t, e->dtype, dims, e->rank, e->data, e->nbytes);
}

int jq_train_lease_item(Statesaver__V1__LeasedSegment *s, const ss_job_rec *rec,
                        const uint8_t *ctx, size_t ctx_len, const ss_schema *schema,
                        uint8_t *state, bool seg0, void **mem)
{
    *mem = NULL;
    const uint8_t *x = rec->ext;
    size_t xl = rec->ext_len;
    if (x && jq_train_blob_check(x, xl) < 0)
        x = NULL, xl = 0;
    if (ctx && jq_train_blob_check(ctx, ctx_len) < 0)
        ctx = NULL, ctx_len = 0;
    if (!x && !ctx)
        return 0;
    size_t names = 0;
    size_t n_x = x ? count_kind(x, xl, -1, &names) : 0; /* inputs + sequences */
    size_t n_c = ctx ? count_kind(ctx, ctx_len, JX_CTX, &names) : 0;
    size_t nt = n_x + n_c;
    size_t sz = nt * (sizeof(ss_tensor_msg) + SS_TENSOR_MAX_RANK * sizeof(int64_t)) +
                n_x * (sizeof(Statesaver__V1__LeasedSegment__SequencesEntry) + sizeof(void *)) +
                n_c * (sizeof(Statesaver__V1__LeasedSegment__ContextEntry) + sizeof(void *)) +
                names + 16;
    /* Laid out by decreasing alignment: tensors, entries, pointers, dims, names. */
    uint8_t *blk = calloc(1, sz);
    if (!blk)
        return SS_ERR_NOMEM;
    item_mem m;
    uint8_t *p = blk;
    m.tens = (ss_tensor_msg *)p;
    p += nt * sizeof(ss_tensor_msg);
    m.seq = (void *)p;
    p += n_x * sizeof *m.seq;
    m.ctx = (void *)p;
    p += n_c * sizeof *m.ctx;
    m.seqp = (void *)p;
    p += n_x * sizeof(void *);
    m.ctxp = (void *)p;
    p += n_c * sizeof(void *);
    m.dims = (int64_t *)p;
    p += nt * SS_TENSOR_MAX_RANK * sizeof(int64_t);
    m.names = (char *)p;
    size_t ti = 0, si = 0;
    ext_ent e;
    if (x) {
        s->total_length = get64(x);
        s->sequence_count = get64(x + 8);
        size_t pos = EXT_HEAD;
        while (ext_next(x, xl, &pos, &e) == 1) {
            if (e.kind == JX_INIT) {
                if (!seg0)
                    continue;
                /* Overrides the saver's initial value of that state. */
                size_t off = 0;
                for (size_t k = 0; k < schema->n_states; k++) {
                    const ss_state_spec *sp = &schema->states[k];
                    if (strlen(sp->name) == e.name_len &&
                        memcmp(sp->name, e.name, e.name_len) == 0 && sp->nbytes == e.nbytes)
                        memcpy(state + off, e.data, e.nbytes);
                    off += sp->nbytes;
                }
                continue;
            }
            ss_tensor_msg *t = &m.tens[ti];
            fill_tensor(t, m.dims + ti * SS_TENSOR_MAX_RANK, &e);
            ti++;
            if (e.kind == JX_INPUTS) {
                s->inputs = t;
                continue;
            }
            Statesaver__V1__LeasedSegment__SequencesEntry *se = &m.seq[si];
            statesaver__v1__leased_segment__sequences_entry__init(se);
            memcpy(m.names, e.name, e.name_len);
            m.names[e.name_len] = 0;
            se->key = m.names;
            m.names += e.name_len + 1;
            se->value = t;
            m.seqp[si++] = se;
        }
        s->n_sequences = si;
        s->sequences = si ? m.seqp : NULL;
    }
    if (ctx) {
        size_t pos = EXT_HEAD, ci = 0;
        while (ext_next(ctx, ctx_len, &pos, &e) == 1) {
            if (e.kind != JX_CTX)
                continue;
            ss_tensor_msg *t = &m.tens[ti];
            fill_tensor(t, m.dims + ti * SS_TENSOR_MAX_RANK, &e);
            ti++;
            Statesaver__V1__LeasedSegment__ContextEntry *ce = &m.ctx[ci];
            statesaver__v1__leased_segment__context_entry__init(ce);
            memcpy(m.names, e.name, e.name_len);
            m.names[e.name_len] = 0;
            ce->key = m.names;
            m.names += e.name_len + 1;
            ce->value = t;
            m.ctxp[ci++] = ce;
        }
        s->n_context = ci;
        s->context = ci ? m.ctxp : NULL;
    }
    *mem = blk;
    return 0;
}

/* ---- context records -------------------------------------------------------- */

static void ctxdel_done(ss_write_op *base, int rc, const char *msg)
{
    jobs_op *op = (jobs_op *)base;
    ss_jobs *j = op->jobs;
    if (rc < 0)
        SS_LOG(SS_LOG_WARN, "jobs: deleting context record %" PRIu64 " failed: %s (removed "
               "at the next start)", op->p[0].id, msg && *msg ? msg : ss_strerror(rc));
    jq_op_free(op);
    j->inflight--;
    jq_rearm(j);
    jq_maybe_finish_close(j);
}

void jq_ctx_delete(ss_jobs *j, uint64_t ctx_id)
{
    if (ctx_id == 0 || j->closing)
        return;
    jobs_op *op = jq_op_new(j, OP_CTXDEL, 1);
    if (!op) {
        SS_LOG(SS_LOG_ERROR, "jobs: out of memory deleting a context record");
        return;
    }
    op->base.done = ctxdel_done;
    op->p[0].id = ctx_id;
    op->p[0].kind = P_DELETE;
    jq_op_submit(j, op);
}

void jq_ctx_patch(ss_jobs *j, seq *sq, const jq_train *t, patch *p, const uint8_t *saver,
                  size_t slen, const uint8_t *key, size_t klen, const uint8_t *blob)
{
    uint64_t id = j->next_id++;
    p->jb = NULL;
    p->id = id;
    p->kind = P_INSERT;
    p->rec.is_ctx = true;
    p->rec.saver.data = saver;
    p->rec.saver.len = slen;
    p->rec.key.data = key;
    p->rec.key.len = klen;
    p->rec.ext = blob;
    p->rec.ext_len = t->ctx_len;
    p->rec.submit_ms = jq_wall_ms();
    sq->ctx_id = id;
    sq->ctx_len = t->ctx_len;
    sq->ctx_crc = jq_train_crc(blob, t->ctx_len);
}
