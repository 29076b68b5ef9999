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
#include <stddef.h>
#include <stdint.h>

#include "pgemm_w.h"

/* Round to nearest even (NaN stays a quiet NaN). */
uint16_t ss_bf16_from_float(float f);
/* Exact widening. */
float ss_bf16_to_float(uint16_t b);

/* bf16 kernels (pgemm_bf16.c, pgemm_amx.c). */
typedef enum ss_bf16_kernel {
    SS_BF16_KERNEL_AUTO = 0, /* amx where available, else fma (default) */
    SS_BF16_KERNEL_FMA = 1,  /* weight widened to fp32, FMA */
    SS_BF16_KERNEL_DPBF16 = 2, /* vdpbf16ps on bf16 pairs */
    SS_BF16_KERNEL_AMX = 3,  /* TDPBF16PS tiles (packing fails without AMX) */
} ss_bf16_kernel;

/* The kernel later ss_pgemm_pack_bf16 calls pick. Not thread-safe: set
 * before packing (tests, bench). */
void ss_pgemm_bf16_set_kernel(ss_bf16_kernel k);
/* "fma", "dpbf16", "amx" for a packed weight's isa ("fp32" otherwise). */
const char *ss_pgemm_bf16_kernel_name(int isa);
/* Pack W [K, N] (leading dimension ldw) as bfloat16 panels for the kernel
 * chosen by ss_pgemm_bf16_set_kernel. Returns 0, SS_ERR_INVALID for bad
 * sizes, a CPU without AVX512_BF16 (ss_vmath_has_bf16) or AMX asked for
 * where it is absent, or SS_ERR_NOMEM. Free with ss_pgemm_w_free. */
int ss_pgemm_pack_bf16(ss_pgemm_w *pw, const float *W, int K, int N, int ldw);

/* ss_pgemm for pw->isa == SS_PGEMM_BF16 (same arguments). */
void ss_pgemm_bf16_run(const ss_pgemm_w *pw, int M, const float *A1, int lda1, int K1,
                       const float *A2, int lda2, float *C, int ldc, bool accumulate,
                       float *scratch);

/* ss_pgemm for pw->isa == SS_PGEMM_BF16W (same arguments). */
void ss_pgemm_bf16w_run(const ss_pgemm_w *pw, int M, const float *A1, int lda1, int K1,
                        const float *A2, int lda2, float *C, int ldc, bool accumulate,
                        float *scratch);

#endif
