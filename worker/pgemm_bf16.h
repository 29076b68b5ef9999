/* pgemm_bf16 -- the bfloat16 half of pgemm (internal to pgemm.c).
 *
 * Packing and products for a weight packed by ss_pgemm_pack_bf16; reached
 * through ss_pgemm (tests and bench may call the kernel switch). Layout:
 * panels of 48 columns as [ceil(K/2)][width][2] bfloat16 (k pairs
 * interleaved per column, the layout vdpbf16ps reads), the left operand per
 * call as tiles of 8 rows: [ceil(K/2)][8] bf16 pairs (dpbf16) or
 * [2*ceil(K/2)][8] fp32 (fma). Odd K is zero-padded.
 */
#ifndef SS_PGEMM_BF16_H
#define SS_PGEMM_BF16_H

#include <stdbool.h>
#include <stdint.h>

#include "pgemm.h"

/* Round to nearest even (NaN stays a quiet NaN). */
uint16_t ss_bf16_from_float(float f);
/* Exact widening. */
float ss_bf16_to_float(uint16_t b);

/* Pack later bf16 weights for the vdpbf16ps kernel (true) or the
 * widen-and-FMA kernel (false, the default). Not thread-safe: set before
 * packing (tests, bench). */
void ss_pgemm_bf16_set_dpbf16(bool on);

/* ss_pgemm for pw->isa == SS_PGEMM_BF16 (same arguments). */
void ss_pgemm_bf16_run(const ss_pgemm_w *pw, int M, const float *A1, int lda1, int K1,
                       const float *A2, int lda2, float *C, int ldc, bool accumulate,
                       float *scratch);

/* ss_pgemm for pw->isa == SS_PGEMM_BF16W (same arguments). */
void ss_pgemm_bf16w_run(const ss_pgemm_w *pw, int M, const float *A1, int lda1, int K1,
                        const float *A2, int lda2, float *C, int ldc, bool accumulate,
                        float *scratch);

#endif
