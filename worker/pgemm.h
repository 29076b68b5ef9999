/* pgemm -- single-threaded sgemm with the weight packed once.
 *
 * An RNN multiplies the same weight by a small batch at every step.
 * OpenBLAS re-packs the weight on every call (a full read and write of it
 * per step, ~15 % of the unroll); here the weight is packed once, when
 * the workspace is built, into column panels the micro-kernel streams
 * directly. The left operand (the batch rows, B x K) is packed per call;
 * it is small.
 *
 * C[M, N] (+)= [A1 | A2][M, K1 + K2] . W[K1 + K2, N], row-major. The left
 * operand is the concatenation of two row-major blocks (an RNN step's
 * input x and state h), so the TF kernel [in + R, out] is one product.
 *
 * Every element of C is one dot product summed in k order by one
 * accumulator, whatever M, the row offset or the thread: a row's result
 * does not depend on how the batch is split (bit for bit).
 *
 * The micro-kernel is picked from ss_vmath_isa() when the weight is packed
 * (avx512, avx2 or a portable C one); a packed weight keeps that choice.
 * ss_pgemm_pack_bf16 (pgemm_bf16.h) packs the weight as bfloat16 instead (rounded to
 * nearest even), half the bytes; the products widen it back in registers
 * and use fp32 FMA on the fp32 left operand (or, switched in
 * pgemm_bf16.h, round the left operand to bf16 and use AVX512_BF16
 * vdpbf16ps); accumulation and C stay fp32. Every element is still summed in one fixed
 * order whatever the rows, so the bit-for-bit property above holds for
 * bf16 too.
 * Thread-safe: a packed weight is read-only; each thread passes its own
 * scratch buffer.
 */
#ifndef SS_PGEMM_H
#define SS_PGEMM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "pgemm_w.h"


/* Pack W (row-major, leading dimension ldw) into *pw. Returns 0,
 * SS_ERR_INVALID for bad sizes or SS_ERR_NOMEM. Free with
 * ss_pgemm_w_free. */
int ss_pgemm_pack(ss_pgemm_w *pw, const float *W, int K, int N, int ldw);
/* Release the packed data (accepts an all-zero struct); zeroes *pw. */
void ss_pgemm_w_free(ss_pgemm_w *pw);

/* Floats of scratch ss_pgemm needs for M rows of weight pw. */
size_t ss_pgemm_scratch_floats(const ss_pgemm_w *pw, int M);

/* C[M, N] = (or += when accumulate) [A1 | A2] . W.
 * A1 [M, K1] (lda1), A2 [M, K2] (lda2) with K1 + K2 = pw->K; K2 may be 0
 * (A2 unused, may be NULL). C has leading dimension ldc. scratch holds
 * ss_pgemm_scratch_floats(pw, M) floats, 64-byte aligned. Allocates
 * nothing. */
void ss_pgemm(const ss_pgemm_w *pw, int M, const float *A1, int lda1, int K1,
              const float *A2, int lda2, float *C, int ldc, bool accumulate,
              float *scratch);

#endif
