/* cell -- the per-step gate math of the RNN cells, fused per batch row.
 *
 * The matrix products are done by the caller (unroll.c, with pgemm); the
 * functions here take the pre-activations of one time step, g [B, width]
 * (x·W_x + h·W_h, bias NOT added), add the bias, apply the gate
 * nonlinearities and update the state, one batch row at a time so that
 * the row's gates stay in L1. They overwrite g (it is scratch).
 *
 * A call may cover a slice of the units (the unroll's unit split across
 * threads): then H is the slice's width, g holds the slice's gates
 * ([B, G*H], gate blocks of H columns), bias and peepholes point at the
 * slice, and c, h, rh point at the slice's first column inside rows of
 * `ld` floats (the full num_units). Each gate block goes through the
 * vector math on its own, so a unit's result does not depend on the slice
 * it falls in when slices start at multiples of 16 units.
 *
 * Masking (TF static_rnn with sequence_length): row b is active at step t
 * when lengths == NULL or t < lengths[b]. An inactive row keeps its state
 * and gets a zero output row. `out` may be NULL when no output row is
 * wanted (then inactive rows are not touched at all).
 *
 * Nothing here allocates; all pointers are borrowed for the call.
 */
#ifndef SS_CELL_H
#define SS_CELL_H

#include <stdbool.h>
#include <stdint.h>

#include "model.h"

/* Per-layer constants of the gate math. */
typedef struct ss_cell_args {
    int H;                  /* units of this call (num_units, or a slice) */
    int ld;                 /* row stride of c, h and rh (num_units) */
    ss_activation act;      /* activation of the candidate / j / c' */
    const float *bias;      /* basic [H]; lstm [4H] (i, j, f, o);
                             * gru reset_after=false [3H] (r, u, candidate);
                             * gru reset_after=true [2, 3H] (input row, recurrent row) */
    float forget_bias;      /* lstm: added to f before its sigmoid */
    const float *w_i_diag;  /* lstm peepholes [H], or NULL for none */
    const float *w_f_diag;  /* lstm peepholes [H] (set with w_i_diag) */
    const float *w_o_diag;  /* lstm peepholes [H] (set with w_i_diag) */
    bool has_clip;          /* lstm: clip c' to [-clip, clip] */
    float clip;             /* lstm: the cell_clip value */
} ss_cell_args;

/* Masking inputs shared by every function below. */
typedef struct ss_cell_mask {
    const int32_t *lengths; /* [B] or NULL: every row active */
    int t;                  /* current step */
} ss_cell_mask;

/* basic_rnn: g [B, H]; active rows: h = act(g + b), out = h.
 * h has row stride ld, out row stride ldo. */
void ss_cell_basic(const ss_cell_args *a, int B, ss_cell_mask mk, float *g,
                   float *h, float *out, int ldo);

/* lstm: g [B, 4H] (i, j, f, o); c [B, ld] updated in place for active rows;
 * m (= sigmoid(o) * act(c')) written to h (row stride ld) and to out (row
 * stride ldo). With a projection the caller passes a scratch h and
 * out == NULL, then projects h itself. */
void ss_cell_lstm(const ss_cell_args *a, int B, ss_cell_mask mk, float *g,
                  float *c, float *h, float *out, int ldo);

/* gru reset_after=false, first half: g [B, 3H] whose r, u blocks hold the
 * gate pre-activations; applies bias and sigmoid to r, u and writes
 * rh = r * h (row stride ld, active rows only). */
void ss_cell_gru_gates(const ss_cell_args *a, int B, ss_cell_mask mk, float *g,
                       const float *h, float *rh);

/* gru reset_after=false, second half: g's candidate block now holds
 * [x, r*h]·W_c; c = act(. + b_c), h = u*h + (1-u)*c, out = h. */
void ss_cell_gru_cand(const ss_cell_args *a, int B, ss_cell_mask mk, float *g,
                      float *h, float *out, int ldo);

/* gru reset_after=true: g [B, 3H] = x·kernel, rec [B, 3H] = h·recurrent_kernel
 * (z, r, h blocks). z = sig(gz+bz + rz+rbz), r = sig(gr+br + rr+rbr),
 * n = act(gh+bh + r*(rh+rbh)), h = z*h + (1-z)*n, out = h. */
void ss_cell_gru_ra(const ss_cell_args *a, int B, ss_cell_mask mk, float *g,
                    const float *rec, float *h, float *out, int ldo);

#endif
