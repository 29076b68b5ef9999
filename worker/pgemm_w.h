/* pgemm_w -- the packed-weight type shared by pgemm and its bf16 and AMX
 * kernels (a header of its own so that the kernels need not include
 * pgemm.h, which dispatches to them).
 */
#ifndef SS_PGEMM_W_H
#define SS_PGEMM_W_H

#include <stddef.h>
#include <stdint.h>

/* Micro-kernels of a bfloat16 weight (beyond the ss_isa values): vdpbf16ps
 * on bf16 pairs, or the weight widened to fp32 and FMA (pgemm_bf16.c). */
#define SS_PGEMM_BF16 16
#define SS_PGEMM_BF16W 17
#define SS_PGEMM_BF16_AMX 18

/* A weight [K, N] packed into panels of nr columns (opaque layout). */
typedef struct ss_pgemm_w {
    int K;                  /* rows of the weight */
    int N;                  /* columns of the weight */
    int isa;                /* micro-kernel chosen at packing time (ss_isa or SS_PGEMM_BF16) */
    int mr;                 /* rows of C per micro-kernel call */
    int nr;                 /* columns per full panel */
    int nv;                 /* columns of the kernel's vector (the tail panel's
                             * width is rounded up to it) */
    float *data;            /* owned fp32: panels of [K][nr] (tail [K][tail width]), 64-byte aligned */
    uint16_t *bdata;        /* owned bf16: panels of [ceil(K/2)][width][2], 64-byte aligned */
} ss_pgemm_w;

/* Pairs of k per bf16 panel row block: ceil(K/2) rounded up to 16 (the AMX
 * tile's rows), the extra rows zero. */
static inline size_t ss_pgemm_bf16_kpad(int K)
{
    return (((size_t)K + 1) / 2 + 15) / 16 * 16;
}

#endif
