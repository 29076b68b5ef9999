/* model_run -- embedding lookup, static unroll and output head over one
 * segment (see model_run.h).
 */
#include "model_run.h"

#include <limits.h>
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "pgemm.h"
#include "pgemm_bf16.h"
#include "ss_error.h"
#include "vmath.h"

struct ss_mrun {
    const ss_model *m;      /* borrowed; outlives the workspace */
    ss_unroll *u;           /* owned: the RNN stack */
    ss_pgemm_w head;        /* packed head/kernel [output_size, head_out] (head only) */
    size_t x_cap;           /* floats x holds */
    float *x;               /* embedded inputs [T, B, input_size] (embedding only) */
    size_t y_cap;           /* floats y holds */
    float *y;               /* RNN outputs [T, B, output_size] (head only) */
    size_t ap_cap;          /* floats ap holds */
    float *ap;              /* pgemm scratch of the head product */
};

/* Make *p hold n floats (64-byte aligned; contents scratch). */
static int grow(float **p, size_t *cap, size_t n)
{
    if (n <= *cap && *p)
        return 0;
    if (n == 0)
        n = 16;
    if (n > SIZE_MAX / sizeof(float) - 16)
        return SS_ERR_NOMEM;
    size_t bytes = (n * sizeof(float) + 63) & ~(size_t)63;
    float *q = aligned_alloc(64, bytes);
    if (!q)
        return SS_ERR_NOMEM;
    free(*p);
    *p = q;
    *cap = n;
    return 0;
}

/* bf16 head: its product against an fp32 packing of the same kernel on
 * the self-check's rows; *err the worst relative difference (as the
 * unroll's self-check, whose tolerance applies). */
static int head_check(ss_mrun *r, double *err)
{
    const ss_model *m = r->m;
    const int R = SS_UNROLL_CHECK_T * SS_UNROLL_CHECK_B, K = m->output_size, N = m->head_out;
    ss_pgemm_w ref;
    float *x = NULL, *y1 = NULL, *y2 = NULL, *scratch = NULL;
    size_t cx = 0, c1 = 0, c2 = 0, cs = 0;
    memset(&ref, 0, sizeof ref);
    int rc = ss_pgemm_pack(&ref, m->head_kernel, K, N, N);
    if (!rc)
        rc = grow(&x, &cx, (size_t)R * (size_t)K);
    if (!rc)
        rc = grow(&y1, &c1, (size_t)R * (size_t)N);
    if (!rc)
        rc = grow(&y2, &c2, (size_t)R * (size_t)N);
    if (!rc) {
        size_t a = ss_pgemm_scratch_floats(&ref, R), b = ss_pgemm_scratch_floats(&r->head, R);
        rc = grow(&scratch, &cs, a > b ? a : b);
    }
    if (rc)
        goto out;
    ss_unroll_check_fill(x, (size_t)R * (size_t)K, 0x4ead5eed);
    ss_pgemm(&ref, R, x, K, K, NULL, 0, y1, N, false, scratch);
    ss_pgemm(&r->head, R, x, K, K, NULL, 0, y2, N, false, scratch);
    *err = ss_unroll_check_diff(y2, y1, (size_t)R * (size_t)N);
out:
    free(scratch);
    free(y2);
    free(y1);
    free(x);
    ss_pgemm_w_free(&ref);
    return rc;
}

int ss_mrun_new(ss_mrun **out, const ss_model *m, ss_precision p, double *check_err)
{
    if (!out || !m)
        return SS_ERR_INVALID;
    *out = NULL;
    if ((m->embedding && (!m->emb || m->vocab < 1)) ||
        (m->head_out > 0 && (!m->head_kernel || !m->head_bias)) || m->head_out < 0)
        return SS_ERR_INVALID;
    ss_mrun *r = calloc(1, sizeof *r);
    if (!r)
        return SS_ERR_NOMEM;
    r->m = m;
    int rc = ss_unroll_new_prec(&r->u, m, p, check_err);
    if (!rc && m->head_out > 0)
        rc = p == SS_PRECISION_BF16
                 ? ss_pgemm_pack_bf16(&r->head, m->head_kernel, m->output_size, m->head_out,
                                      m->head_out)
                 : ss_pgemm_pack(&r->head, m->head_kernel, m->output_size, m->head_out,
                                 m->head_out);
    if (!rc && m->head_out > 0 && p == SS_PRECISION_BF16) {
        double herr = 0.0;
        rc = head_check(r, &herr);
        if (!rc && check_err && !(herr <= *check_err))
            *check_err = herr; /* the worst of the stack's and the head's */
        if (!rc && !(herr <= SS_UNROLL_BF16_TOL))
            rc = SS_ERR_INTERNAL;
    }
    if (rc) {
        ss_mrun_free(r);
        return rc;
    }
    *out = r;
    return 0;
}

void ss_mrun_free(ss_mrun *r)
{
    if (!r)
        return;
    free(r->ap);
    free(r->y);
    free(r->x);
    ss_pgemm_w_free(&r->head);
    ss_unroll_free(r->u);
    free(r);
}

ss_unroll *ss_mrun_unroll(ss_mrun *r)
{
    return r ? r->u : NULL;
}

int ss_mrun_embed(const ss_model *m, const int64_t *ids, size_t n, float *out, size_t *bad)
{
    if (!m->embedding)
        return SS_ERR_INVALID;
    const size_t I = (size_t)m->input_size;
    for (size_t i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= m->vocab) {
            if (bad)
                *bad = i;
            return SS_ERR_INVALID;
        }
        memcpy(out + i * I, m->emb + (size_t)ids[i] * I, I * sizeof(float));
    }
    return 0;
}

/* act over one row of n values. */
static void head_act(ss_head_act a, float *v, size_t n)
{
    switch (a) {
    case SS_HEAD_SOFTMAX:
    case SS_HEAD_LOG_SOFTMAX: {
        float mx = v[0];
        for (size_t j = 1; j < n; j++)
            mx = v[j] > mx ? v[j] : mx;
        /* expf of values <= 0 (no overflow), summed in double. */
        double sum = 0.0;
        if (a == SS_HEAD_SOFTMAX) {
            for (size_t j = 0; j < n; j++) {
                v[j] = expf(v[j] - mx);
                sum += (double)v[j];
            }
            const float inv = (float)(1.0 / sum);
            for (size_t j = 0; j < n; j++)
                v[j] *= inv;
        } else {
            for (size_t j = 0; j < n; j++)
                sum += (double)expf(v[j] - mx);
            double lse = (double)mx + log(sum);
            for (size_t j = 0; j < n; j++)
                v[j] = (float)((double)v[j] - lse);
        }
        break;
    }
    case SS_HEAD_SIGMOID:
        ss_vmath_sigmoid(v, n);
        break;
    case SS_HEAD_TANH:
        ss_vmath_tanh(v, n);
        break;
    default:
        break;
    }
}

int ss_mrun_head(ss_mrun *r, int T, int B, const float *in, const int32_t *lengths,
                 float *out)
{
    const ss_model *m = r->m;
    if (m->head_out <= 0 || T < 0 || B < 0)
        return SS_ERR_INVALID;
    if (B > 0 && T > INT_MAX / B)
        return SS_ERR_INVALID;
    const int rows = T * B;
    if (rows == 0)
        return 0;
    const size_t O = (size_t)m->head_out;
    int rc = grow(&r->ap, &r->ap_cap, ss_pgemm_scratch_floats(&r->head, rows));
    if (rc)
        return rc;
    ss_pgemm(&r->head, rows, in, m->output_size, m->output_size, NULL, 0, out, m->head_out,
             false, r->ap);
    for (int t = 0; t < T; t++) {
        for (int b = 0; b < B; b++) {
            float *v = out + ((size_t)t * (size_t)B + (size_t)b) * O;
            if (lengths && t >= lengths[b]) {
                memset(v, 0, O * sizeof(float));
                continue;
            }
            for (size_t j = 0; j < O; j++)
                v[j] += m->head_bias[j];
            head_act(m->head_act, v, O);
        }
    }
    return 0;
}

int ss_mrun_run(ss_mrun *r, int T, int B, const float *inputs, const int64_t *ids,
                const int32_t *lengths, const float *const *states_in, float *outputs,
                float *const *states_out, size_t *bad_id)
{
    const ss_model *m = r->m;
    if (T < 0 || B < 0 || (B > 0 && T > INT_MAX / B))
        return SS_ERR_INVALID;
    const size_t rows = (size_t)T * (size_t)B;
    if (bad_id)
        *bad_id = SIZE_MAX;
    int rc = 0;
    if (m->embedding) {
        if ((!ids && rows) || inputs)
            return SS_ERR_INVALID;
        if ((rc = grow(&r->x, &r->x_cap, rows * (size_t)m->input_size)))
            return rc;
        const size_t I = (size_t)m->input_size;
        for (int b = 0; lengths && b < B; b++)
            if (lengths[b] < 0 || lengths[b] > T)
                return SS_ERR_INVALID;
        /* Ids past a row's length are padding: not looked up (any value). */
        for (size_t i = 0; i < rows; i++) {
            size_t t = i / (size_t)B, b = i % (size_t)B;
            if (lengths && t >= (size_t)lengths[b]) {
                memset(r->x + i * I, 0, I * sizeof(float));
                continue;
            }
            size_t bad = 0;
            if ((rc = ss_mrun_embed(m, ids + i, 1, r->x + i * I, &bad))) {
                if (bad_id)
                    *bad_id = i;
                return rc;
            }
        }
        inputs = r->x;
    } else if (ids) {
        return SS_ERR_INVALID;
    }
    if (m->head_out <= 0)
        return ss_unroll_run(r->u, T, B, inputs, lengths, states_in, outputs, states_out);
    float *y = NULL;
    if (outputs) {
        if ((rc = grow(&r->y, &r->y_cap, rows * (size_t)m->output_size)))
            return rc;
        y = r->y;
    }
    rc = ss_unroll_run(r->u, T, B, inputs, lengths, states_in, y, states_out);
    if (!rc && outputs)
        rc = ss_mrun_head(r, T, B, y, lengths, outputs);
    return rc;
}
