/* cell -- fused per-row gate math of basic_rnn, lstm and gru (see cell.h). */
#include "cell.h"

#include <string.h>

#include "vmath.h"

/* The gate math's element-wise loops are vectorized for the widest ISA
 * the CPU has (function clones picked at load time). Contraction into FMA
 * is off so that every clone, and the vector body and its scalar tail,
 * compute each element the same way: the result of a unit does not depend
 * on the clone or on where its slice starts. */
#if defined(__clang__)
/* clang (only the fuzz build uses it) has no per-function optimize
 * attribute and clang 14 does not export target_clones functions: plain
 * functions there, contraction off for the whole file. */
#pragma STDC FP_CONTRACT OFF
#define CELL_FN
#else
#define CELL_FN                                                                 \
    __attribute__((target_clones("avx512f", "avx2", "default"),                 \
                   optimize("tree-vectorize", "fp-contract=off")))
#endif

static inline bool row_active(ss_cell_mask mk, int b)
{
    return mk.lengths == NULL || mk.t < mk.lengths[b];
}

static inline void zero_row(float *out, int ldo, int b, int n)
{
    if (out)
        memset(out + (size_t)b * (size_t)ldo, 0, (size_t)n * sizeof(float));
}

CELL_FN void ss_cell_basic(const ss_cell_args *a, int B, ss_cell_mask mk, float *g,
                   float *h, float *out, int ldo)
{
    const int H = a->H;
    const float *restrict bias = a->bias;
    for (int b = 0; b < B; b++) {
        if (!row_active(mk, b)) {
            zero_row(out, ldo, b, H);
            continue;
        }
        float *restrict gr = g + (size_t)b * (size_t)H;
        float *restrict hr = h + (size_t)b * (size_t)a->ld;
        for (int k = 0; k < H; k++)
            gr[k] += bias[k];
        ss_vmath_act(a->act, gr, (size_t)H);
        memcpy(hr, gr, (size_t)H * sizeof(float));
        if (out)
            memcpy(out + (size_t)b * (size_t)ldo, gr, (size_t)H * sizeof(float));
    }
}

CELL_FN void ss_cell_lstm(const ss_cell_args *a, int B, ss_cell_mask mk, float *g,
                  float *c, float *h, float *out, int ldo)
{
    const int H = a->H;
    const size_t Hs = (size_t)H;
    const float *restrict bi = a->bias;
    const float *restrict bj = a->bias + Hs;
    const float *restrict bf = a->bias + 2 * Hs;
    const float *restrict bo = a->bias + 3 * Hs;
    const float fb = a->forget_bias;
    const float *restrict wi = a->w_i_diag;
    const float *restrict wf = a->w_f_diag;
    const float *restrict wo = a->w_o_diag;
    const bool peep = wi != NULL;
    for (int b = 0; b < B; b++) {
        if (!row_active(mk, b)) {
            zero_row(out, ldo, b, H);
            continue;
        }
        float *restrict gi = g + (size_t)b * 4 * Hs;
        float *restrict gj = gi + Hs;
        float *restrict gf = gi + 2 * Hs;
        float *restrict go = gi + 3 * Hs;
        float *restrict cr = c + (size_t)b * (size_t)a->ld;
        float *restrict hr = h + (size_t)b * (size_t)a->ld;
        /* One loop per gate: each vectorizes on its own. */
        for (int k = 0; k < H; k++)
            gi[k] += bi[k];
        for (int k = 0; k < H; k++)
            gj[k] += bj[k];
        for (int k = 0; k < H; k++)
            gf[k] = (gf[k] + bf[k]) + fb;
        for (int k = 0; k < H; k++)
            go[k] += bo[k];
        if (peep) {
            for (int k = 0; k < H; k++)
                gi[k] += wi[k] * cr[k];
            for (int k = 0; k < H; k++)
                gf[k] += wf[k] * cr[k];
        }
        ss_vmath_sigmoid(gi, Hs);
        ss_vmath_act(a->act, gj, Hs);
        ss_vmath_sigmoid(gf, Hs);
        /* c' replaces j (consumed) so that act(c') runs in place. */
        for (int k = 0; k < H; k++)
            gj[k] = gf[k] * cr[k] + gi[k] * gj[k];
        if (a->has_clip) {
            const float lim = a->clip;
            for (int k = 0; k < H; k++)
                gj[k] = gj[k] > lim ? lim : (gj[k] < -lim ? -lim : gj[k]);
        }
        memcpy(cr, gj, Hs * sizeof(float));
        if (peep) {
            for (int k = 0; k < H; k++)
                go[k] += wo[k] * gj[k];
        }
        ss_vmath_sigmoid(go, Hs);
        ss_vmath_act(a->act, gj, Hs);
        for (int k = 0; k < H; k++)
            hr[k] = go[k] * gj[k];
        if (out)
            memcpy(out + (size_t)b * (size_t)ldo, hr, Hs * sizeof(float));
    }
}

CELL_FN void ss_cell_gru_gates(const ss_cell_args *a, int B, ss_cell_mask mk, float *g,
                       const float *h, float *rh)
{
    const size_t Hs = (size_t)a->H;
    const float *restrict bias = a->bias;
    for (int b = 0; b < B; b++) {
        if (!row_active(mk, b))
            continue;
        float *restrict gr = g + (size_t)b * 3 * Hs;
        const float *restrict hr = h + (size_t)b * (size_t)a->ld;
        float *restrict rhr = rh + (size_t)b * (size_t)a->ld;
        for (size_t k = 0; k < 2 * Hs; k++)
            gr[k] += bias[k];
        ss_vmath_sigmoid(gr, Hs);
        ss_vmath_sigmoid(gr + Hs, Hs);
        for (size_t k = 0; k < Hs; k++)
            rhr[k] = gr[k] * hr[k];
    }
}

CELL_FN void ss_cell_gru_cand(const ss_cell_args *a, int B, ss_cell_mask mk, float *g,
                      float *h, float *out, int ldo)
{
    const size_t Hs = (size_t)a->H;
    const float *restrict bc = a->bias + 2 * Hs;
    for (int b = 0; b < B; b++) {
        if (!row_active(mk, b)) {
            zero_row(out, ldo, b, a->H);
            continue;
        }
        const float *restrict u = g + (size_t)b * 3 * Hs + Hs;
        float *restrict cand = g + (size_t)b * 3 * Hs + 2 * Hs;
        float *restrict hr = h + (size_t)b * (size_t)a->ld;
        for (size_t k = 0; k < Hs; k++)
            cand[k] += bc[k];
        ss_vmath_act(a->act, cand, Hs);
        for (size_t k = 0; k < Hs; k++)
            hr[k] = u[k] * hr[k] + (1.0f - u[k]) * cand[k];
        if (out)
            memcpy(out + (size_t)b * (size_t)ldo, hr, Hs * sizeof(float));
    }
}

CELL_FN void ss_cell_gru_ra(const ss_cell_args *a, int B, ss_cell_mask mk, float *g,
                    const float *rec, float *h, float *out, int ldo)
{
    const size_t Hs = (size_t)a->H;
    const float *restrict bx = a->bias;          /* input bias row */
    const float *restrict bh = a->bias + 3 * Hs; /* recurrent bias row */
    for (int b = 0; b < B; b++) {
        if (!row_active(mk, b)) {
            zero_row(out, ldo, b, a->H);
            continue;
        }
        float *restrict gr = g + (size_t)b * 3 * Hs;
        const float *restrict rr = rec + (size_t)b * 3 * Hs;
        float *restrict hr = h + (size_t)b * (size_t)a->ld;
        for (size_t k = 0; k < 2 * Hs; k++)
            gr[k] = (gr[k] + bx[k]) + (rr[k] + bh[k]);
        ss_vmath_sigmoid(gr, Hs);
        ss_vmath_sigmoid(gr + Hs, Hs);
        const float *restrict z = gr;
        const float *restrict r = gr + Hs;
        float *restrict n = gr + 2 * Hs;
        for (size_t k = 0; k < Hs; k++)
            n[k] = (n[k] + bx[2 * Hs + k]) + r[k] * (rr[2 * Hs + k] + bh[2 * Hs + k]);
        ss_vmath_act(a->act, n, Hs);
        for (size_t k = 0; k < Hs; k++)
            hr[k] = z[k] * hr[k] + (1.0f - z[k]) * n[k];
        if (out)
            memcpy(out + (size_t)b * (size_t)ldo, hr, Hs * sizeof(float));
    }
}
