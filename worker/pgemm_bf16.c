/* pgemm_bf16 -- bfloat16 weights, fp32 accumulation (see pgemm_bf16.h
 * and pgemm.h).
 *
 * On CPUs with AMX-BF16 the products run on the tile unit (pgemm_amx.c,
 * the default there). Elsewhere, two micro-kernels over the same packed
 * weight, both 8 x 48 (24 zmm accumulators; tail panels 1 or 2 vectors):
 *  - "fma" (the default): each 64-byte load holds 16 columns x 2 k of
 *    bf16; a shift and a mask widen them to two fp32 vectors (exact), and
 *    fp32 FMAs multiply them by the fp32 left operand. Half the weight
 *    bytes of the fp32 kernel at the fp32 kernel's FMA rate.
 *  - "dpbf16": the left operand is rounded to bf16 pairs as well and
 *    vdpbf16ps multiplies two k per instruction (what oneDNN's bf16 does).
 * Measured on this machine (docs/benchmarks.md, Compute): vdpbf16ps zmm
 * delivers about half the flops of fp32 FMA (54-73 against 110-150
 * GFLOP/s in the kernel), so "dpbf16" loses to fp32 whenever the weight is
 * in cache, while "fma" is 0.8x fp32 in cache and 1.5-1.8x fp32 when the
 * weight streams from L3 (small batches). Hence "fma" is the default
 * without AMX; every kernel stays selectable (ss_pgemm_bf16_set_kernel,
 * bench --bf16-kernel).
 */
#include "pgemm_bf16.h"

#include <immintrin.h>
#include <stdlib.h>
#include <string.h>

#include "pgemm_amx.h"
#include "ss_error.h"
#include "vmath.h"

#define MR_BF 8
#define NV_BF 3
#define NR_BF (16 * NV_BF)

#define BF16_TARGET "avx512bf16,avx512f,avx512bw,avx512vl"

/* Kernel chosen at packing time (see the top comment). */
static ss_bf16_kernel kernel_choice = SS_BF16_KERNEL_AUTO;

void ss_pgemm_bf16_set_kernel(ss_bf16_kernel k)
{
    kernel_choice = k;
}

const char *ss_pgemm_bf16_kernel_name(int isa)
{
    switch (isa) {
    case SS_PGEMM_BF16: return "dpbf16";
    case SS_PGEMM_BF16W: return "fma";
    case SS_PGEMM_BF16_AMX: return "amx";
    default: return "fp32";
    }
}


uint16_t ss_bf16_from_float(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    if ((u & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((u >> 16) | 0x40u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

float ss_bf16_to_float(uint16_t b)
{
    uint32_t u = (uint32_t)b << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

int ss_pgemm_pack_bf16(ss_pgemm_w *pw, const float *W, int K, int N, int ldw)
{
    memset(pw, 0, sizeof *pw);
    if (!W || K < 1 || N < 1 || ldw < N || !ss_vmath_has_bf16())
        return SS_ERR_INVALID;
    int isa;
    switch (kernel_choice) {
    case SS_BF16_KERNEL_FMA: isa = SS_PGEMM_BF16W; break;
    case SS_BF16_KERNEL_DPBF16: isa = SS_PGEMM_BF16; break;
    case SS_BF16_KERNEL_AMX:
        if (!ss_pgemm_amx_available())
            return SS_ERR_INVALID;
        isa = SS_PGEMM_BF16_AMX;
        break;
    default: isa = ss_pgemm_amx_available() ? SS_PGEMM_BF16_AMX : SS_PGEMM_BF16W; break;
    }
    /* Rows padded to 16 pairs (the AMX tile), zero. */
    const size_t kp = ss_pgemm_bf16_kpad(K);
    size_t panels = ((size_t)N + NR_BF - 1) / NR_BF;
    size_t per = kp * NR_BF * 2; /* uint16 per full panel */
    if (panels > SIZE_MAX / sizeof(uint16_t) / per)
        return SS_ERR_NOMEM;
    size_t bytes = (panels * per * sizeof(uint16_t) + 63) & ~(size_t)63;
    uint16_t *d = aligned_alloc(64, bytes);
    if (!d)
        return SS_ERR_NOMEM;
    memset(d, 0, bytes);
    for (size_t p = 0; p < panels; p++) {
        size_t c0 = p * NR_BF;
        size_t nc = (size_t)N - c0 < NR_BF ? (size_t)N - c0 : NR_BF;
        size_t w = (nc + 15) / 16 * 16;
        uint16_t *dst = d + p * per;
        for (size_t k = 0; k < (size_t)K; k++)
            for (size_t j = 0; j < nc; j++)
                dst[((k / 2) * w + j) * 2 + (k & 1)] =
                    ss_bf16_from_float(W[k * (size_t)ldw + c0 + j]);
    }
    /* mr: rows per kernel call, which the unroll's split rule pads to (AMX: 16). */
    *pw = (ss_pgemm_w){.K = K, .N = N, .isa = isa, .mr = isa == SS_PGEMM_BF16_AMX ? 16 : MR_BF,
                       .nr = NR_BF,
                       .nv = 16, .bdata = d};
    return 0;
}

/* Rows [r0, r0 + 8) of [A1 | A2] as bf16 pairs [kp][8]; rows >= M are
 * zero. tmp holds K + 1 bf16 (one row). */
static void pack_tile_bf16(uint32_t *dst, int r0, int M, const float *A1, int lda1, int K1,
                           const float *A2, int lda2, int K, uint16_t *tmp)
{
    const int kp = (K + 1) / 2;
    for (int r = 0; r < MR_BF; r++) {
        int row = r0 + r;
        if (row >= M) {
            for (int k = 0; k < kp; k++)
                dst[(size_t)k * MR_BF + (size_t)r] = 0;
            continue;
        }
        const float *a1 = A1 + (size_t)row * (size_t)lda1;
        for (int k = 0; k < K1; k++)
            tmp[k] = ss_bf16_from_float(a1[k]);
        if (K > K1) {
            const float *a2 = A2 + (size_t)row * (size_t)lda2;
            for (int k = K1; k < K; k++)
                tmp[k] = ss_bf16_from_float(a2[k - K1]);
        }
        tmp[K] = 0;
        for (int k = 0; k < kp; k++)
            dst[(size_t)k * MR_BF + (size_t)r] =
                (uint32_t)tmp[2 * k] | ((uint32_t)tmp[2 * k + 1] << 16);
    }
}

__attribute__((target(BF16_TARGET), always_inline)) static inline void
kernel_bf16_n(const int nvec, int kp, const uint32_t *restrict a, const uint16_t *restrict w,
              float *c, int ldc, int rows, int nc, bool acc)
{
    __m512 r[MR_BF][NV_BF];
    const int ws = 32 * nvec; /* uint16 per k pair */
#pragma GCC unroll 32
    for (int i = 0; i < MR_BF; i++)
#pragma GCC unroll 4
        for (int j = 0; j < nvec; j++)
            r[i][j] = _mm512_setzero_ps();
    for (int k = 0; k < kp; k++) {
        __m512bh wv[NV_BF];
#pragma GCC unroll 4
        for (int j = 0; j < nvec; j++)
            wv[j] = (__m512bh)_mm512_load_si512((const void *)(w + 32 * j));
#pragma GCC unroll 32
        for (int i = 0; i < MR_BF; i++) {
            __m512bh av = (__m512bh)_mm512_set1_epi32((int)a[i]);
#pragma GCC unroll 4
            for (int j = 0; j < nvec; j++)
                r[i][j] = _mm512_dpbf16_ps(r[i][j], wv[j], av);
        }
        a += MR_BF;
        w += ws;
    }
    __mmask16 m[NV_BF];
#pragma GCC unroll 4
    for (int j = 0; j < nvec; j++) {
        int n = nc - 16 * j;
        m[j] = n >= 16 ? (__mmask16)0xffff : n <= 0 ? (__mmask16)0 : (__mmask16)((1u << n) - 1u);
    }
#pragma GCC unroll 32
    for (int i = 0; i < MR_BF; i++) {
        if (i >= rows)
            break;
        float *cr = c + (size_t)i * (size_t)ldc;
#pragma GCC unroll 4
        for (int j = 0; j < nvec; j++) {
            __m512 v = r[i][j];
            if (acc)
                v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(m[j], cr + 16 * j));
            _mm512_mask_storeu_ps(cr + 16 * j, m[j], v);
        }
    }
}

/* The full 8 x 48 panel in assembly: GCC does not fold the broadcast pair
 * into vdpbf16ps's embedded-broadcast operand ({1to16}); with a separate
 * vpbroadcastd per row the kernel ran at a quarter of the instruction's
 * rate on Zen 4. a: [kp][8] pairs, w: [kp][48][2]. */
#define DP_ROW(i, r0, r1, r2)                                      \
    "vdpbf16ps " #i "*4(%[a])%{1to16%}, %%zmm0, %%zmm" #r0 "\n\t"  \
    "vdpbf16ps " #i "*4(%[a])%{1to16%}, %%zmm1, %%zmm" #r1 "\n\t"  \
    "vdpbf16ps " #i "*4(%[a])%{1to16%}, %%zmm2, %%zmm" #r2 "\n\t"
#define ST_ROW(i, r0, r1, r2)                               \
    "vmovups %%zmm" #r0 ", " #i "*192(%[o])\n\t"          \
    "vmovups %%zmm" #r1 ", " #i "*192+64(%[o])\n\t"       \
    "vmovups %%zmm" #r2 ", " #i "*192+128(%[o])\n\t"

__attribute__((target(BF16_TARGET))) static void kernel_bf16_full(long kp, const uint32_t *a,
                                                                  const uint16_t *w, float *c,
                                                                  int ldc, int rows, bool acc)
{
    float blk[MR_BF * NR_BF] __attribute__((aligned(64)));
    __asm__ volatile(
        "vpxord %%zmm3, %%zmm3, %%zmm3\n\t"
        "vmovaps %%zmm3, %%zmm4\n\t vmovaps %%zmm3, %%zmm5\n\t vmovaps %%zmm3, %%zmm6\n\t"
        "vmovaps %%zmm3, %%zmm7\n\t vmovaps %%zmm3, %%zmm8\n\t vmovaps %%zmm3, %%zmm9\n\t"
        "vmovaps %%zmm3, %%zmm10\n\t vmovaps %%zmm3, %%zmm11\n\t vmovaps %%zmm3, %%zmm12\n\t"
        "vmovaps %%zmm3, %%zmm13\n\t vmovaps %%zmm3, %%zmm14\n\t vmovaps %%zmm3, %%zmm15\n\t"
        "vmovaps %%zmm3, %%zmm16\n\t vmovaps %%zmm3, %%zmm17\n\t vmovaps %%zmm3, %%zmm18\n\t"
        "vmovaps %%zmm3, %%zmm19\n\t vmovaps %%zmm3, %%zmm20\n\t vmovaps %%zmm3, %%zmm21\n\t"
        "vmovaps %%zmm3, %%zmm22\n\t vmovaps %%zmm3, %%zmm23\n\t vmovaps %%zmm3, %%zmm24\n\t"
        "vmovaps %%zmm3, %%zmm25\n\t vmovaps %%zmm3, %%zmm26\n\t"
        "test %[n], %[n]\n\t"
        "jz 2f\n\t"
        "1:\n\t"
        "vmovdqa64 (%[w]), %%zmm0\n\t"
        "vmovdqa64 64(%[w]), %%zmm1\n\t"
        "vmovdqa64 128(%[w]), %%zmm2\n\t"
        DP_ROW(0, 3, 4, 5) DP_ROW(1, 6, 7, 8) DP_ROW(2, 9, 10, 11) DP_ROW(3, 12, 13, 14)
        DP_ROW(4, 15, 16, 17) DP_ROW(5, 18, 19, 20) DP_ROW(6, 21, 22, 23) DP_ROW(7, 24, 25, 26)
        "add $32, %[a]\n\t"
        "add $192, %[w]\n\t"
        "dec %[n]\n\t"
        "jnz 1b\n\t"
        "2:\n\t"
        ST_ROW(0, 3, 4, 5) ST_ROW(1, 6, 7, 8) ST_ROW(2, 9, 10, 11) ST_ROW(3, 12, 13, 14)
        ST_ROW(4, 15, 16, 17) ST_ROW(5, 18, 19, 20) ST_ROW(6, 21, 22, 23) ST_ROW(7, 24, 25, 26)
        : [a] "+r"(a), [w] "+r"(w), [n] "+r"(kp)
        : [o] "r"(blk)
        : "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9",
          "xmm10", "xmm11", "xmm12", "xmm13", "xmm14", "xmm15", "xmm16", "xmm17", "xmm18",
          "xmm19", "xmm20", "xmm21", "xmm22", "xmm23", "xmm24", "xmm25", "xmm26", "memory",
          "cc");
    for (int i = 0; i < MR_BF && i < rows; i++) {
        float *cr = c + (size_t)i * (size_t)ldc;
        for (int j = 0; j < NV_BF; j++) {
            __m512 v = _mm512_load_ps(blk + i * NR_BF + 16 * j);
            if (acc)
                v = _mm512_add_ps(v, _mm512_loadu_ps(cr + 16 * j));
            _mm512_storeu_ps(cr + 16 * j, v);
        }
    }
}

__attribute__((target(BF16_TARGET))) static void kernel_bf16(int nvec, int kp, const uint32_t *a,
                                                             const uint16_t *w, float *c,
                                                             int ldc, int rows, int nc, bool acc)
{
    switch (nvec) {
    case 1: kernel_bf16_n(1, kp, a, w, c, ldc, rows, nc, acc); break;
    case 2: kernel_bf16_n(2, kp, a, w, c, ldc, rows, nc, acc); break;
    default:
        if (nc == NR_BF)
            kernel_bf16_full(kp, a, w, c, ldc, rows, acc);
        else
            kernel_bf16_n(3, kp, a, w, c, ldc, rows, nc, acc);
        break;
    }
}

/* The "fma" kernel: bf16 weights widened in registers, fp32 FMA with
 * a [2*kp][8] fp32. */
__attribute__((target(BF16_TARGET), always_inline)) static inline void
kernel_w16_n(const int nvec, int kp, const float *restrict a, const uint16_t *restrict w,
             float *c, int ldc, int rows, int nc, bool acc)
{
    __m512 r[MR_BF][NV_BF];
    const int ws = 32 * nvec;
    const __m512i hi = _mm512_set1_epi32((int)0xffff0000u);
#pragma GCC unroll 32
    for (int i = 0; i < MR_BF; i++)
#pragma GCC unroll 4
        for (int j = 0; j < nvec; j++)
            r[i][j] = _mm512_setzero_ps();
    for (int k = 0; k < kp; k++) {
        __m512 we[NV_BF], wo[NV_BF];
#pragma GCC unroll 4
        for (int j = 0; j < nvec; j++) {
            __m512i v = _mm512_load_si512((const void *)(w + 32 * j));
            we[j] = _mm512_castsi512_ps(_mm512_slli_epi32(v, 16));
            wo[j] = _mm512_castsi512_ps(_mm512_and_si512(v, hi));
        }
#pragma GCC unroll 32
        for (int i = 0; i < MR_BF; i++) {
            __m512 ae = _mm512_set1_ps(a[i]);
#pragma GCC unroll 4
            for (int j = 0; j < nvec; j++)
                r[i][j] = _mm512_fmadd_ps(ae, we[j], r[i][j]);
        }
#pragma GCC unroll 32
        for (int i = 0; i < MR_BF; i++) {
            __m512 ao = _mm512_set1_ps(a[MR_BF + i]);
#pragma GCC unroll 4
            for (int j = 0; j < nvec; j++)
                r[i][j] = _mm512_fmadd_ps(ao, wo[j], r[i][j]);
        }
        a += 2 * MR_BF;
        w += ws;
    }
    __mmask16 m[NV_BF];
#pragma GCC unroll 4
    for (int j = 0; j < nvec; j++) {
        int n = nc - 16 * j;
        m[j] = n >= 16 ? (__mmask16)0xffff : n <= 0 ? (__mmask16)0 : (__mmask16)((1u << n) - 1u);
    }
#pragma GCC unroll 32
    for (int i = 0; i < MR_BF; i++) {
        if (i >= rows)
            break;
        float *cr = c + (size_t)i * (size_t)ldc;
#pragma GCC unroll 4
        for (int j = 0; j < nvec; j++) {
            __m512 v = r[i][j];
            if (acc)
                v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(m[j], cr + 16 * j));
            _mm512_mask_storeu_ps(cr + 16 * j, m[j], v);
        }
    }
}

__attribute__((target(BF16_TARGET))) static void kernel_w16(int nvec, int kp, const float *a,
                                                            const uint16_t *w, float *c,
                                                            int ldc, int rows, int nc, bool acc)
{
    switch (nvec) {
    case 1: kernel_w16_n(1, kp, a, w, c, ldc, rows, nc, acc); break;
    case 2: kernel_w16_n(2, kp, a, w, c, ldc, rows, nc, acc); break;
    default: kernel_w16_n(3, kp, a, w, c, ldc, rows, nc, acc); break;
    }
}

/* Rows [r0, r0 + 8) of [A1 | A2] as fp32 [2*kp][8]; rows >= M and the
 * pad k are zero. */
static void pack_tile_f32(float *dst, int r0, int M, const float *A1, int lda1, int K1,
                          const float *A2, int lda2, int K)
{
    const int kk = (K + 1) / 2 * 2;
    for (int r = 0; r < MR_BF; r++) {
        int row = r0 + r;
        for (int k = 0; k < kk; k++) {
            float v = 0.0f;
            if (row < M && k < K)
                v = k < K1 ? A1[(size_t)row * (size_t)lda1 + (size_t)k]
                           : A2[(size_t)row * (size_t)lda2 + (size_t)(k - K1)];
            dst[(size_t)k * MR_BF + (size_t)r] = v;
        }
    }
}

void ss_pgemm_bf16w_run(const ss_pgemm_w *pw, int M, const float *A1, int lda1, int K1,
                        const float *A2, int lda2, float *C, int ldc, bool accumulate,
                        float *scratch)
{
    const int K = pw->K, kp = (K + 1) / 2;
    const int tiles = (M + MR_BF - 1) / MR_BF;
    const size_t tsz = (size_t)kp * 2 * MR_BF, psz = ss_pgemm_bf16_kpad(K) * NR_BF * 2;
    for (int t = 0; t < tiles; t++)
        pack_tile_f32(scratch + (size_t)t * tsz, t * MR_BF, M, A1, lda1, K1, A2, lda2, K);
    const int panels = (pw->N + NR_BF - 1) / NR_BF;
    for (int p = 0; p < panels; p++) {
        const uint16_t *w = pw->bdata + (size_t)p * psz;
        const int nc = pw->N - p * NR_BF < NR_BF ? pw->N - p * NR_BF : NR_BF;
        const int nvec = (nc + 15) / 16;
        for (int t = 0; t < tiles; t++) {
            float *c = C + (size_t)t * MR_BF * (size_t)ldc + (size_t)p * NR_BF;
            const int rows = M - t * MR_BF < MR_BF ? M - t * MR_BF : MR_BF;
            kernel_w16(nvec, kp, scratch + (size_t)t * tsz, w, c, ldc, rows, nc, accumulate);
        }
    }
}

void ss_pgemm_bf16_run(const ss_pgemm_w *pw, int M, const float *A1, int lda1, int K1,
                       const float *A2, int lda2, float *C, int ldc, bool accumulate,
                       float *scratch)
{
    const int K = pw->K, kp = (K + 1) / 2;
    const int tiles = (M + MR_BF - 1) / MR_BF;
    const size_t tsz = (size_t)kp * MR_BF, psz = ss_pgemm_bf16_kpad(K) * NR_BF * 2;
    /* The scratch was sized for fp32 tiles (ss_pgemm_scratch_floats): the
     * bf16 tiles take about half, the row buffer goes after them. */
    uint32_t *ap = (uint32_t *)(void *)scratch;
    uint16_t *tmp = (uint16_t *)(void *)(ap + (size_t)tiles * tsz);
    for (int t = 0; t < tiles; t++)
        pack_tile_bf16(ap + (size_t)t * tsz, t * MR_BF, M, A1, lda1, K1, A2, lda2, K, tmp);
    const int panels = (pw->N + NR_BF - 1) / NR_BF;
    for (int p = 0; p < panels; p++) {
        const uint16_t *w = pw->bdata + (size_t)p * psz;
        const int nc = pw->N - p * NR_BF < NR_BF ? pw->N - p * NR_BF : NR_BF;
        const int nvec = (nc + 15) / 16;
        for (int t = 0; t < tiles; t++) {
            float *c = C + (size_t)t * MR_BF * (size_t)ldc + (size_t)p * NR_BF;
            const int rows = M - t * MR_BF < MR_BF ? M - t * MR_BF : MR_BF;
            kernel_bf16(nvec, kp, ap + (size_t)t * tsz, w, c, ldc, rows, nc, accumulate);
        }
    }
}
