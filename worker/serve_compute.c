/* serve_compute -- one lease through the model: items are grouped by
 * their segment length T (clients may use different num_unroll), each
 * group is assembled time-major [T, B, I] with its lengths and states
 * [B, size], unrolled once, and scattered back to per-item outputs [T, O]
 * and states. An item the model cannot run (wrong input width, wrong
 * state sizes, a token id outside the embedding, no `inputs` tensor at all:
 * a trainer's segment with named sequences only) gets an error text
 * instead, so the server counts the attempt and its poison limit applies;
 * the other items are unaffected. A model with an embedding takes token
 * ids [T] (item_ids); a head's product runs once over the group's T*B
 * rows (model_run.c).
 */
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "serve_int.h"
#include "ss_error.h"
#include "ss_log.h"

void ss_serve_results_free(results *r)
{
    for (size_t i = 0; i < r->n; i++) {
        if (r->outputs)
            free(r->outputs[i]);
        if (r->states)
            free(r->states[i]);
        if (r->sptr)
            free(r->sptr[i]);
    }
    free(r->items);
    free(r->outputs);
    free(r->states);
    free(r->sptr);
    free(r->why);
    memset(r, 0, sizeof *r);
}

/* The token ids of item it into ids[0..it->rows) (rows past its length
 * are padding: 0). 0, or SS_ERR_INVALID with why filled. */
static int item_ids(const worker *w, const ss_lease_item *it, int64_t *ids, char *why,
                    size_t size)
{
    const ss_model *m = w->m;
    for (uint32_t t = 0; t < it->rows; t++) {
        int64_t v = 0;
        if (t < it->length) {
            if (it->ids)
                v = it->ids[t];
            else {
                float f = it->inputs[t];
                /* float32 [T, 1] holding whole numbers is accepted too. */
                if (!(f >= -1e18f && f <= 1e18f) || f != (float)(int64_t)f) {
                    snprintf(why, size, "input %u is %g, model %s expects token ids", t,
                             (double)f, w->o.model);
                    return SS_ERR_INVALID;
                }
                v = (int64_t)f;
            }
            if (v < 0 || v >= m->vocab) {
                snprintf(why, size, "token id %lld at step %u is outside [0, %d) (vocab of %s)",
                         (long long)v, t, m->vocab, w->o.model);
                return SS_ERR_INVALID;
            }
        }
        ids[t] = v;
    }
    return 0;
}

/* Why item i cannot run on this model ("" if it can). */
static void check_item(const worker *w, const ss_lease *l, size_t i, char *why, size_t size)
{
    ss_lease_item it;
    why[0] = '\0';
    ss_lease_item_get(l, i, &it);
    if (!it.inputs && !it.ids) {
        /* A trainer's segment (named sequences only): nothing to unroll. */
        snprintf(why, size, "segment has no `inputs` tensor (named sequences only); model %s "
                 "reads `inputs`", w->o.model);
        return;
    }
    if (w->m->embedding) {
        if (!it.ids && it.cols != 1) {
            snprintf(why, size, "inputs have %u columns, model %s (embedding) expects token "
                     "ids [T]", it.cols, w->o.model);
            return;
        }
        int64_t *ids = malloc(((size_t)it.rows + 1) * sizeof *ids);
        if (!ids) {
            snprintf(why, size, "out of memory");
            return;
        }
        item_ids(w, &it, ids, why, size);
        free(ids);
        if (why[0])
            return;
    } else if (it.ids) {
        snprintf(why, size, "inputs are token ids, model %s has no embedding (expects float32 "
                 "[T, %d])", w->o.model, w->m->input_size);
        return;
    } else if (it.cols != (uint32_t)w->m->input_size) {
        snprintf(why, size, "inputs have %u columns, model %s expects input_size %d", it.cols,
                 w->o.model, w->m->input_size);
        return;
    }
    if (ss_lease_states(l) != w->m->n_states) {
        snprintf(why, size, "the saver has %zu states, model %s has %zu", ss_lease_states(l),
                 w->o.model, w->m->n_states);
        return;
    }
    for (size_t s = 0; s < w->m->n_states; s++) {
        size_t count = 0;
        ss_lease_item_state(l, i, s, &count);
        if (count != (size_t)w->m->state_sizes[s] ||
            strcmp(ss_lease_state_name(l, s), w->m->state_names[s]) != 0) {
            snprintf(why, size, "state %s has %zu values, model %s expects %s with %d",
                     ss_lease_state_name(l, s), count, w->o.model, w->m->state_names[s],
                     w->m->state_sizes[s]);
            return;
        }
    }
}

/* Unroll the items idx[0..B) (all with T rows) in one batch. */
static int run_group(worker *w, const ss_lease *l, results *r, const size_t *idx, size_t B,
                     uint32_t T)
{
    const ss_model *m = w->m;
    size_t in_w = (size_t)m->input_size, out_w = (size_t)ss_model_out_width(m);
    size_t ns = m->n_states;
    float *x = NULL, *y = NULL, *st[SS_MODEL_MAX_LAYERS * 2] = {0};
    int32_t *len = NULL;
    int64_t *ids = NULL;
    int rc = SS_ERR_NOMEM;

    if (m->embedding)
        ids = malloc(((size_t)T * B + 1) * sizeof *ids);
    else
        x = malloc((size_t)T * B * in_w * sizeof *x);
    y = malloc((size_t)T * B * out_w * sizeof *y);
    len = malloc(B * sizeof *len);
    if ((!x && !ids) || !y || !len)
        goto out;
    for (size_t s = 0; s < ns; s++)
        if (!(st[s] = malloc(B * (size_t)m->state_sizes[s] * sizeof(float))))
            goto out;
    for (size_t b = 0; b < B; b++) {
        ss_lease_item it;
        ss_lease_item_get(l, idx[b], &it);
        len[b] = (int32_t)it.length;
        if (ids) {
            char why[SERVE_REASON_MAX];
            int64_t one[1];
            for (uint32_t t = 0; t < T; t++) {
                ss_lease_item row = it;
                /* one step at a time into the time-major [T, B] ids */
                row.rows = 1;
                row.length = t < it.length ? 1 : 0;
                row.inputs = it.inputs ? it.inputs + t : NULL;
                row.ids = it.ids ? it.ids + t : NULL;
                if (item_ids(w, &row, one, why, sizeof why) < 0) {
                    rc = SS_ERR_INVALID; /* checked before: cannot happen */
                    goto out;
                }
                ids[(size_t)t * B + b] = one[0];
            }
        } else {
            for (uint32_t t = 0; t < T; t++)
                memcpy(x + ((size_t)t * B + b) * in_w, it.inputs + (size_t)t * in_w,
                       in_w * sizeof *x);
        }
        for (size_t s = 0; s < ns; s++)
            memcpy(st[s] + b * (size_t)m->state_sizes[s], ss_lease_item_state(l, idx[b], s, NULL),
                   (size_t)m->state_sizes[s] * sizeof(float));
    }
    rc = ss_mrun_run(w->mr, (int)T, (int)B, x, ids, len, (const float *const *)st, y, st, NULL);
    if (rc < 0)
        goto out;
    for (size_t b = 0; b < B; b++) {
        size_t i = idx[b];
        size_t total = 0;
        for (size_t s = 0; s < ns; s++)
            total += (size_t)m->state_sizes[s];
        r->outputs[i] = malloc((size_t)T * out_w * sizeof(float));
        r->states[i] = malloc((total ? total : 1) * sizeof(float));
        r->sptr[i] = calloc(ns ? ns : 1, sizeof *r->sptr[i]);
        if (!r->outputs[i] || !r->states[i] || !r->sptr[i]) {
            rc = SS_ERR_NOMEM;
            goto out;
        }
        for (uint32_t t = 0; t < T; t++)
            memcpy(r->outputs[i] + (size_t)t * out_w, y + ((size_t)t * B + b) * out_w, out_w * sizeof(float));
        float *p = r->states[i];
        for (size_t s = 0; s < ns; s++) {
            size_t sz = (size_t)m->state_sizes[s];
            memcpy(p, st[s] + b * sz, sz * sizeof(float));
            r->sptr[i][s] = p;
            p += sz;
        }
        r->items[i].outputs = r->outputs[i];
        r->items[i].out_cols = (uint32_t)out_w;
        r->items[i].states = r->sptr[i];
    }
    rc = 0;
out:
    for (size_t s = 0; s < ns; s++)
        free(st[s]);
    free(len);
    free(y);
    free(x);
    free(ids);
    return rc;
}

/* Compute every item of the lease into r (errors per item in r->why). */
int ss_serve_compute(worker *w, const ss_lease *l, results *r)
{
    size_t n = ss_lease_items(l);
    size_t *idx = NULL;
    bool *done = NULL;
    int rc = SS_ERR_NOMEM;

    r->n = n;
    r->items = calloc(n, sizeof *r->items);
    r->outputs = calloc(n, sizeof *r->outputs);
    r->states = calloc(n, sizeof *r->states);
    r->sptr = calloc(n, sizeof *r->sptr);
    r->why = calloc(n, sizeof *r->why);
    idx = malloc(n * sizeof *idx);
    done = calloc(n, sizeof *done);
    if (!r->items || !r->outputs || !r->states || !r->sptr || !r->why || !idx || !done)
        goto out;
    for (size_t i = 0; i < n; i++) {
        r->items[i].item = i;
        check_item(w, l, i, r->why[i], sizeof r->why[i]);
        if (r->why[i][0]) {
            r->items[i].error = r->why[i];
            done[i] = true;
            SS_LOG(SS_LOG_WARN, "serve: lease %" PRIu64 " item %zu: %s", ss_lease_id(l), i,
                   r->why[i]);
        }
    }
    /* One unroll per distinct T, in order of first appearance. */
    for (size_t i = 0; i < n; i++) {
        if (done[i])
            continue;
        ss_lease_item first;
        ss_lease_item_get(l, i, &first);
        size_t B = 0;
        for (size_t k = i; k < n; k++) {
            ss_lease_item it;
            ss_lease_item_get(l, k, &it);
            if (!done[k] && it.rows == first.rows) {
                idx[B++] = k;
                done[k] = true;
            }
        }
        int grc = run_group(w, l, r, idx, B, first.rows);
        if (grc == SS_ERR_NOMEM) {
            rc = grc;
            goto out;
        }
        if (grc < 0) {
            for (size_t b = 0; b < B; b++) {
                snprintf(r->why[idx[b]], sizeof r->why[idx[b]],
                         "unroll of T=%u B=%zu failed: %s", first.rows, B, ss_strerror(grc));
                r->items[idx[b]].error = r->why[idx[b]];
            }
            SS_LOG(SS_LOG_WARN, "serve: lease %" PRIu64 ": unroll of T=%u B=%zu failed: %s",
                   ss_lease_id(l), first.rows, B, ss_strerror(grc));
        }
    }
    rc = 0;
out:
    free(done);
    free(idx);
    return rc;
}
