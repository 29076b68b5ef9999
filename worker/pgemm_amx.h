/* pgemm_amx -- the AMX half of the bf16 pgemm (internal to pgemm.c and
 * pgemm_bf16.c).
 *
 * On CPUs with AMX-BF16 (Intel Sapphire Rapids and later) the products of
 * a bf16 weight run on the tile unit: TDPBF16PS multiplies a 16 x 32 bf16
 * tile of the left operand by a 16-pair x 16 column tile of the weight
 * into 16 x 16 fp32, several times the flops of AVX-512 per cycle. The
 * weight layout is pgemm_bf16's ([kpad][width][2], kpad a multiple of
 * 16 pairs), so the same packed weight serves every bf16 kernel.
 */
#ifndef SS_PGEMM_AMX_H
#define SS_PGEMM_AMX_H

#include <stdbool.h>

#include <stddef.h>

#include "pgemm_w.h"

/* Whether AMX-BF16 is usable: the CPU has it and Linux granted this
 * process the tile state (arch_prctl ARCH_REQ_XCOMP_PERM, asked once). */
bool ss_pgemm_amx_available(void);

/* Floats of scratch for M rows and K columns of the left operand. */
size_t ss_pgemm_amx_scratch_floats(int M, int K);

/* ss_pgemm for pw->isa == SS_PGEMM_BF16_AMX (same arguments). */
void ss_pgemm_amx_run(const ss_pgemm_w *pw, int M, const float *A1, int lda1, int K1,
                      const float *A2, int lda2, float *C, int ldc, bool accumulate,
                      float *scratch);

#endif
