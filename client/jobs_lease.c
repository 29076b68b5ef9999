/* jobs_lease -- libstatesaver's job calls of the worker's side: Lease
 * (with accessors that hand out aligned, shape-checked views of the
 * leased inputs and states) and Complete (whole, or send and receive
 * apart so a worker can compute the next lease meanwhile).
 *
 * Requests borrow the caller's memory (the frame is packed during the
 * send). A lease owns its Response; it is checked for consistency before
 * any accessor hands out a pointer.
 */
#include "client_int.h"
#include "jobs_int.h"
#include "statesaver_jobs.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ss_limits.h"
#include "ss_tensor.h"

struct ss_lease {
    ss_resp *resp;                          /* owned response */
    const Statesaver__V1__LeaseResponse *l; /* its lease body */
    char *saver;                            /* owned copy of the saver name */
    const float **inputs;                   /* per item: aligned inputs (NULL for ids) */
    const int64_t **ids;                    /* per item: token ids int32/int64 [T] as
                                             * int64 (owned copies), else NULL */
    uint32_t *rows;                         /* per item: its T (of the inputs, or of the
                                             * named sequences when it has no inputs) */
    const float **states;                   /* per item x state: aligned state */
    void **owned;                           /* copies made for misaligned data */
    size_t n_owned;                         /* used entries of owned */
};

/* ---- lease --------------------------------------------------------------- */

void ss_lease_free(ss_lease *l)
{
    if (!l)
        return;
    for (size_t i = 0; i < l->n_owned; i++)
        free(l->owned[i]);
    free(l->owned);
    free(l->states);
    free(l->rows);
    free(l->ids);
    free(l->inputs);
    free(l->saver);
    ss_client_response_free(l->resp);
    free(l);
}

/* Aligned pointer to t's floats, copying into l->owned when needed. */
static const float *lease_floats(ss_lease *l, const tensor_t *t)
{
    float *copy;
    const float *p = aligned_floats(t->data.data, t->data.len, &copy);
    if (copy)
        l->owned[l->n_owned++] = copy;
    return p;
}

/* Token ids: an int32 or int64 tensor [T]. */
static bool is_id_vector(const tensor_t *t)
{
    return t && t->n_shape == 1 &&
           (t->dtype == STATESAVER__V1__DTYPE__DT_INT32 ||
            t->dtype == STATESAVER__V1__DTYPE__DT_INT64) &&
           ss_tensor_check(t) == 0;
}

/* t's ids widened to int64 (a copy kept in l->owned). */
static const int64_t *lease_ids(ss_lease *l, const tensor_t *t)
{
    size_t n = (size_t)t->shape[0];
    int64_t *v = malloc((n ? n : 1) * sizeof *v);
    if (!v)
        return NULL;
    for (size_t k = 0; k < n; k++) {
        if (t->dtype == STATESAVER__V1__DTYPE__DT_INT32) {
            int32_t x;
            memcpy(&x, t->data.data + k * sizeof x, sizeof x);
            v[k] = x;
        } else {
            memcpy(&v[k], t->data.data + k * sizeof v[k], sizeof v[k]);
        }
    }
    l->owned[l->n_owned++] = v;
    return v;
}

/* T of an item without inputs: the first dimension its named sequences
 * share (a trainer's segment, docs/training.md); -1 if it has none or
 * they disagree (the server never sends that). */
static int64_t sequences_T(const Statesaver__V1__LeasedSegment *it)
{
    int64_t T = -1;
    for (size_t k = 0; k < it->n_sequences; k++) {
        const tensor_t *t = it->sequences[k] ? it->sequences[k]->value : NULL;
        if (!t || t->n_shape < 1 || t->shape[0] < 1 || t->shape[0] > UINT32_MAX ||
            (T >= 0 && t->shape[0] != T))
            return -1;
        T = t->shape[0];
    }
    return T;
}

/* Check the lease body and index its tensors. An item without inputs
 * (named sequences only) is indexed with no inputs and no ids. */
static int lease_index(ss_client *c, ss_lease *l)
{
    const Statesaver__V1__LeaseResponse *b = l->l;
    size_t ni = b->n_items, ns = b->n_names;
    if (ns > SS_STATES_PER_SAVER_MAX)
        return ss_client_fail(c, SS_ERR_PROTO, "lease reply: %zu states", ns);
    l->inputs = calloc(ni ? ni : 1, sizeof *l->inputs);
    l->ids = calloc(ni ? ni : 1, sizeof *l->ids);
    l->rows = calloc(ni ? ni : 1, sizeof *l->rows);
    l->states = calloc(ni * ns + 1, sizeof *l->states);
    l->owned = calloc(ni * (ns + 1) + 1, sizeof *l->owned);
    if (!l->inputs || !l->ids || !l->rows || !l->states || !l->owned)
        return ss_client_fail(c, SS_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < ni; i++) {
        const Statesaver__V1__LeasedSegment *it = b->items[i];
        int64_t T = -1;
        if (it && it->inputs && (is_f32_matrix(it->inputs) || is_id_vector(it->inputs)))
            T = it->inputs->shape[0];
        else if (it && !it->inputs)
            T = sequences_T(it);
        if (!it || it->key.len == 0 || T < 0 || it->length > T || it->n_states != ns)
            return ss_client_fail(c, SS_ERR_PROTO, "lease reply: item %zu is malformed", i);
        l->rows[i] = (uint32_t)T;
        if (it->inputs && it->inputs->n_shape == 1) {
            l->ids[i] = lease_ids(l, it->inputs);
            if (!l->ids[i])
                return ss_client_fail(c, SS_ERR_NOMEM, "out of memory");
        } else if (it->inputs) {
            l->inputs[i] = lease_floats(l, it->inputs);
            if (!l->inputs[i])
                return ss_client_fail(c, SS_ERR_NOMEM, "out of memory");
        }
        for (size_t s = 0; s < ns; s++) {
            const tensor_t *t = it->states[s];
            if (!t || t->dtype != STATESAVER__V1__DTYPE__DT_FLOAT32 ||
                ss_tensor_check(t) < 0)
                return ss_client_fail(c, SS_ERR_PROTO,
                                      "lease reply: item %zu state %s is not float32", i,
                                      b->names[s]);
            l->states[i * ns + s] = lease_floats(l, t);
            if (!l->states[i * ns + s])
                return ss_client_fail(c, SS_ERR_NOMEM, "out of memory");
        }
    }
    return 0;
}

int ss_client_lease(ss_client *c, const char *saver, uint32_t max_batch,
                    uint32_t wait_ms, uint32_t lease_ms, const char *worker,
                    ss_lease **out)
{
    ss_lease_opts o = {.max_batch = max_batch, .wait_ms = wait_ms, .lease_ms = lease_ms,
                       .worker = worker};
    return ss_client_lease_opts(c, saver, &o, out);
}

int ss_client_lease_opts(ss_client *c, const char *saver, const ss_lease_opts *o,
                         ss_lease **out)
{
    Statesaver__V1__LeaseRequest lr = STATESAVER__V1__LEASE_REQUEST__INIT;
    ss_req req = STATESAVER__V1__REQUEST__INIT;
    ss_resp *r = NULL;
    ss_lease *l = NULL;
    int rc;

    *out = NULL;
    rc = ss_client_begin(c, !saver || !o, "lease: saver or options missing");
    if (rc < 0)
        return rc;
    lr.saver = ss_client_unconst(saver);
    lr.max_batch = o->max_batch;
    lr.min_batch = o->min_batch;
    lr.max_delay_ms = o->max_delay_ms;
    lr.wait_ms = o->wait_ms;
    lr.lease_ms = o->lease_ms;
    lr.worker = ss_client_unconst(o->worker);
    req.body_case = STATESAVER__V1__REQUEST__BODY_LEASE;
    req.lease = &lr;
    /* The reply may take the longer of the two waits. */
    rc = ss_client_call(c, &req, o->wait_ms > o->max_delay_ms ? o->wait_ms : o->max_delay_ms, &r);
    if (rc < 0)
        return rc;
    rc = want_body(c, r, STATESAVER__V1__RESPONSE__BODY_LEASE, "a lease");
    if (rc < 0)
        goto out;
    l = calloc(1, sizeof *l);
    if (l)
        l->saver = strdup(saver);
    if (!l || !l->saver) {
        rc = ss_client_fail(c, SS_ERR_NOMEM, "out of memory");
        goto out;
    }
    l->resp = r;
    l->l = r->lease;
    r = NULL;
    rc = lease_index(c, l);
    if (rc < 0)
        goto out;
    *out = l;
    l = NULL;
    rc = 0;
out:
    ss_lease_free(l);
    ss_client_response_free(r);
    return rc;
}

uint64_t ss_lease_id(const ss_lease *l)
{
    return l ? l->l->lease_id : 0;
}

uint64_t ss_lease_deadline_ms(const ss_lease *l)
{
    return l ? l->l->deadline_ms : 0;
}

const char *ss_lease_saver(const ss_lease *l)
{
    return l ? l->saver : NULL;
}

size_t ss_lease_items(const ss_lease *l)
{
    return l ? l->l->n_items : 0;
}

size_t ss_lease_states(const ss_lease *l)
{
    return l ? l->l->n_names : 0;
}

const char *ss_lease_state_name(const ss_lease *l, size_t s)
{
    return l && s < l->l->n_names ? l->l->names[s] : NULL;
}

int ss_lease_item_get(const ss_lease *l, size_t i, ss_lease_item *out)
{
    if (!l || !out || i >= l->l->n_items)
        return SS_ERR_INVALID;
    const Statesaver__V1__LeasedSegment *it = l->l->items[i];
    out->key.data = it->key.data;
    out->key.len = it->key.len;
    out->segment = it->segment;
    out->length = it->length;
    out->last = it->last;
    out->attempts = it->attempts;
    out->inputs = l->inputs[i];
    out->ids = l->ids[i];
    out->rows = l->rows[i];
    out->cols = !it->inputs ? 0 : it->inputs->n_shape > 1 ? (uint32_t)it->inputs->shape[1] : 1;
    return 0;
}

const float *ss_lease_item_state(const ss_lease *l, size_t i, size_t s, size_t *count)
{
    if (!l || i >= l->l->n_items || s >= l->l->n_names)
        return NULL;
    if (count)
        *count = l->l->items[i]->states[s]->data.len / sizeof(float);
    return l->states[i * l->l->n_names + s];
}

/* ---- complete ------------------------------------------------------------ */

/* Reply of a Complete: body check and already_applied (NULL or n). */
static int complete_reply(ss_client *c, const ss_resp *r, size_t n, bool *already_applied)
{
    int rc = want_body(c, r, STATESAVER__V1__RESPONSE__BODY_COMPLETE, "a complete");
    if (rc < 0)
        return rc;
    if (already_applied) {
        size_t na = r->complete->n_already_applied;
        if (na != 0 && na != n)
            return ss_client_fail(c, SS_ERR_PROTO, "complete reply: %zu flags for %zu items",
                                  na, n);
        for (size_t k = 0; k < n; k++)
            already_applied[k] = na && r->complete->already_applied[k];
    }
    return 0;
}

/* Build the Complete request for items of l and send it (*id set); with
 * resp non-NULL, also wait for its reply. */
static int complete_run(ss_client *c, const ss_lease *l, const ss_complete_item *items,
                        size_t n, uint64_t *id, ss_resp **resp)
{
    Statesaver__V1__CompleteRequest cr = STATESAVER__V1__COMPLETE_REQUEST__INIT;
    ss_req req = STATESAVER__V1__REQUEST__INIT;
    Statesaver__V1__CompletedSegment *segs = NULL, **segp = NULL;
    tensor_t *ts = NULL, **tsp = NULL; /* per item: outputs, then states */
    int64_t (*odims)[2] = NULL;
    int rc;

    rc = ss_client_begin(c, !l || !items || n == 0, "complete: lease or items missing");
    if (rc < 0)
        return rc;
    size_t ns = l->l->n_names, per = ns + 1;
    segs = calloc(n, sizeof *segs);
    segp = calloc(n, sizeof *segp);
    ts = calloc(n * per, sizeof *ts);
    tsp = calloc(n * per, sizeof *tsp);
    odims = calloc(n, sizeof *odims);
    if (!segs || !segp || !ts || !tsp || !odims) {
        rc = ss_client_fail(c, SS_ERR_NOMEM, "out of memory");
        goto out;
    }
    for (size_t k = 0; k < n; k++) {
        const ss_complete_item *ci = &items[k];
        if (ci->item >= l->l->n_items) {
            rc = ss_client_fail(c, SS_ERR_INVALID, "complete: item %zu is not in the lease",
                                ci->item);
            goto out;
        }
        const Statesaver__V1__LeasedSegment *it = l->l->items[ci->item];
        Statesaver__V1__CompletedSegment s0 = STATESAVER__V1__COMPLETED_SEGMENT__INIT;
        Statesaver__V1__CompletedSegment *cs = &segs[k];
        *cs = s0;
        cs->key = it->key;
        cs->segment = it->segment;
        segp[k] = cs;
        if (ci->error && ci->error[0]) {
            cs->error = ss_client_unconst(ci->error);
            continue;
        }
        /* Outputs are optional (a trainer completes with states only). */
        if ((ci->outputs && ci->out_cols == 0) || (ns > 0 && !ci->states)) {
            rc = ss_client_fail(c, SS_ERR_INVALID,
                                "complete: item %zu has no states, or outputs of 0 columns",
                                ci->item);
            goto out;
        }
        tensor_t t0 = STATESAVER__V1__TENSOR__INIT;
        if (ci->outputs) {
            tensor_t *o = &ts[k * per];
            *o = t0;
            odims[k][0] = l->rows[ci->item]; /* the segment's T */
            odims[k][1] = ci->out_cols;
            ss_tensor_borrow(o, STATESAVER__V1__DTYPE__DT_FLOAT32, odims[k], 2, ci->outputs,
                             (size_t)odims[k][0] * ci->out_cols * sizeof(float));
            cs->outputs = o;
        }
        for (size_t s = 0; s < ns; s++) {
            const tensor_t *leased = it->states[s];
            tensor_t *t = &ts[k * per + 1 + s];
            if (!ci->states[s]) {
                rc = ss_client_fail(c, SS_ERR_INVALID, "complete: item %zu state %zu missing",
                                    ci->item, s);
                goto out;
            }
            *t = t0;
            /* The new state has the leased state's (the schema's) shape. */
            ss_tensor_borrow(t, STATESAVER__V1__DTYPE__DT_FLOAT32, leased->shape,
                             leased->n_shape, ci->states[s], leased->data.len);
            tsp[k * per + 1 + s] = t;
        }
        cs->n_states = ns;
        cs->states = &tsp[k * per + 1];
    }
    cr.saver = ss_client_unconst(l->saver);
    cr.lease_id = l->l->lease_id;
    cr.n_items = n;
    cr.items = segp;
    req.body_case = STATESAVER__V1__REQUEST__BODY_COMPLETE;
    req.complete = &cr;
    rc = resp ? ss_client_call(c, &req, 0, resp) : ss_client_send(c, &req, id);
out:
    free(odims);
    free(tsp);
    free(ts);
    free(segp);
    free(segs);
    return rc;
}

int ss_client_complete(ss_client *c, const ss_lease *l, const ss_complete_item *items,
                       size_t n, bool *already_applied)
{
    ss_resp *r = NULL;
    int rc = complete_run(c, l, items, n, NULL, &r);
    if (rc == 0)
        rc = complete_reply(c, r, n, already_applied);
    ss_client_response_free(r);
    return rc;
}

int ss_client_complete_send(ss_client *c, const ss_lease *l, const ss_complete_item *items,
                            size_t n, uint64_t *id)
{
    if (!id)
        return c ? ss_client_fail(c, SS_ERR_INVALID, "complete: id missing") : SS_ERR_INVALID;
    return complete_run(c, l, items, n, id, NULL);
}

int ss_client_complete_recv(ss_client *c, uint64_t id, size_t n, bool *already_applied)
{
    ss_resp *r = NULL;
    if (!c)
        return SS_ERR_INVALID;
    int rc = ss_client_recv(c, id, 0, &r);
    if (rc == 0)
        rc = complete_reply(c, r, n, already_applied);
    ss_client_response_free(r);
    return rc;
}
