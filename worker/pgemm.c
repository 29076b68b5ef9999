/* pgemm -- sgemm against a weight packed once (see pgemm.h).
 *
 * Layout: the weight is cut into panels of nr columns, each stored as
 * [K][nr] (the tail panel as [K][w], w = its columns rounded up to one
 * vector, zero-padded), so the micro-kernel reads one contiguous stream
 * per panel and a narrow tail costs only the vectors it needs. The left
 * operand is packed per call into tiles of mr rows stored [K][mr] (the
 * tail tile zero-padded), so the kernel broadcasts a[k][r] from one
 * stream. Loop order: panel outer, tile inner, so a panel (K * nr floats,
 * at most a few hundred KiB) is read from memory once per call and then
 * from L2 for the other tiles.
 *
 * Micro-kernels keep an mr x nr block of C in registers over the whole K:
 * avx512 8 x 48 (24 zmm accumulators; tails 8 x 16, 8 x 32), avx2 4 x 24
 * (12 ymm; tails 4 x 8, 4 x 16), portable C 4 x 16. The bfloat16 kernel
 * is in pgemm_bf16.c.
 */
#include "pgemm.h"

#include <immintrin.h>
#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "pgemm_amx.h"
#include "pgemm_bf16.h"
#include "ss_error.h"
#include "vmath.h"

/* Micro-kernel shapes per instruction set (rows of C, columns of C). */
#define MR_512 8
#define NV_512 3
#define NR_512 (16 * NV_512)
#define MR_256 4
#define NV_256 3
#define NR_256 (8 * NV_256)
#define MR_C 4
#define NR_C 16

static void shape_of(int isa, int *mr, int *nr, int *nv)
{
    switch (isa) {
    case SS_ISA_AVX512: *mr = MR_512; *nr = NR_512; *nv = 16; break;
    case SS_ISA_AVX2: *mr = MR_256; *nr = NR_256; *nv = 8; break;
    default: *mr = MR_C; *nr = NR_C; *nv = NR_C; break;
    }
}

/* Columns and padded width of panel p. */
static void panel_dims(const ss_pgemm_w *pw, int p, int *nc, int *width)
{
    int left = pw->N - p * pw->nr;
    *nc = left < pw->nr ? left : pw->nr;
    *width = (*nc + pw->nv - 1) / pw->nv * pw->nv;
}

int ss_pgemm_pack(ss_pgemm_w *pw, const float *W, int K, int N, int ldw)
{
    memset(pw, 0, sizeof *pw);
    if (!W || K < 1 || N < 1 || ldw < N)
        return SS_ERR_INVALID;
    int isa = (int)ss_vmath_isa_id(), mr, nr, nv;
    shape_of(isa, &mr, &nr, &nv);
    /* Every panel is counted full width: a bound on the padded size. */
    size_t panels = ((size_t)N + (size_t)nr - 1) / (size_t)nr;
    size_t per = (size_t)K * (size_t)nr;
    if (panels > SIZE_MAX / sizeof(float) / per)
        return SS_ERR_NOMEM;
    size_t bytes = panels * per * sizeof(float);
    /* aligned_alloc wants a multiple of the alignment. */
    bytes = (bytes + 63) & ~(size_t)63;
    float *d = aligned_alloc(64, bytes);
    if (!d)
        return SS_ERR_NOMEM;
    *pw = (ss_pgemm_w){.K = K, .N = N, .isa = isa, .mr = mr, .nr = nr, .nv = nv, .data = d};
    for (size_t p = 0; p < panels; p++) {
        int nc, w;
        panel_dims(pw, (int)p, &nc, &w);
        size_t c0 = p * (size_t)nr;
        float *dst = d + p * per;
        for (size_t k = 0; k < (size_t)K; k++) {
            memcpy(dst + k * (size_t)w, W + k * (size_t)ldw + c0, (size_t)nc * sizeof(float));
            memset(dst + k * (size_t)w + nc, 0, (size_t)(w - nc) * sizeof(float));
        }
    }
    return 0;
}

void ss_pgemm_w_free(ss_pgemm_w *pw)
{
    if (!pw)
        return;
    free(pw->data);
    free(pw->bdata);
    memset(pw, 0, sizeof *pw);
}

size_t ss_pgemm_scratch_floats(const ss_pgemm_w *pw, int M)
{
    size_t tiles = ((size_t)(M > 0 ? M : 1) + (size_t)pw->mr - 1) / (size_t)pw->mr;
    /* bf16 tiles: fp32 with K rounded up to even (the K + 1), or bf16
     * pairs (fewer) and one row of K + 1 bf16 after them (the K + 16). */
    size_t f = tiles * (size_t)pw->mr * ((size_t)pw->K + 1) + (size_t)pw->K + 16;
    size_t amx = ss_pgemm_amx_scratch_floats(M, pw->K);
    return f > amx ? f : amx;
}

/* dst[k][r] = p[r][k] for 8 rows and k < n: 8 x 8 blocks transposed in
 * registers (unpack, shuffle, lane permute), the tail one by one. */
__attribute__((target("avx2"))) static void transpose8(float *dst, const float *const p[8], int n)
{
    int k = 0;
    for (; k + 8 <= n; k += 8) {
        __m256 r0 = _mm256_loadu_ps(p[0] + k), r1 = _mm256_loadu_ps(p[1] + k);
        __m256 r2 = _mm256_loadu_ps(p[2] + k), r3 = _mm256_loadu_ps(p[3] + k);
        __m256 r4 = _mm256_loadu_ps(p[4] + k), r5 = _mm256_loadu_ps(p[5] + k);
        __m256 r6 = _mm256_loadu_ps(p[6] + k), r7 = _mm256_loadu_ps(p[7] + k);
        __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1);
        __m256 t2 = _mm256_unpacklo_ps(r2, r3), t3 = _mm256_unpackhi_ps(r2, r3);
        __m256 t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5);
        __m256 t6 = _mm256_unpacklo_ps(r6, r7), t7 = _mm256_unpackhi_ps(r6, r7);
        __m256 s0 = _mm256_shuffle_ps(t0, t2, 0x44), s1 = _mm256_shuffle_ps(t0, t2, 0xee);
        __m256 s2 = _mm256_shuffle_ps(t1, t3, 0x44), s3 = _mm256_shuffle_ps(t1, t3, 0xee);
        __m256 s4 = _mm256_shuffle_ps(t4, t6, 0x44), s5 = _mm256_shuffle_ps(t4, t6, 0xee);
        __m256 s6 = _mm256_shuffle_ps(t5, t7, 0x44), s7 = _mm256_shuffle_ps(t5, t7, 0xee);
        float *d = dst + (size_t)k * 8;
        _mm256_storeu_ps(d + 0, _mm256_permute2f128_ps(s0, s4, 0x20));
        _mm256_storeu_ps(d + 8, _mm256_permute2f128_ps(s1, s5, 0x20));
        _mm256_storeu_ps(d + 16, _mm256_permute2f128_ps(s2, s6, 0x20));
        _mm256_storeu_ps(d + 24, _mm256_permute2f128_ps(s3, s7, 0x20));
        _mm256_storeu_ps(d + 32, _mm256_permute2f128_ps(s0, s4, 0x31));
        _mm256_storeu_ps(d + 40, _mm256_permute2f128_ps(s1, s5, 0x31));
        _mm256_storeu_ps(d + 48, _mm256_permute2f128_ps(s2, s6, 0x31));
        _mm256_storeu_ps(d + 56, _mm256_permute2f128_ps(s3, s7, 0x31));
    }
    for (; k < n; k++)
        for (int r = 0; r < 8; r++)
            dst[(size_t)k * 8 + (size_t)r] = p[r][k];
}

/* Pack rows [r0, r0 + mr) of [A1 | A2] as [K][mr]; rows >= M are zero. */
static void pack_tile(float *dst, int mr, int r0, int M, const float *A1, int lda1, int K1,
                      const float *A2, int lda2, int K2)
{
    if (mr == 8 && r0 + 8 <= M) {
        /* A full tile of the avx512 kernel (the CPU has AVX2 then). */
        const float *p[8];
        for (int r = 0; r < 8; r++)
            p[r] = A1 + (size_t)(r0 + r) * (size_t)lda1;
        transpose8(dst, p, K1);
        if (K2 > 0) {
            for (int r = 0; r < 8; r++)
                p[r] = A2 + (size_t)(r0 + r) * (size_t)lda2;
            transpose8(dst + (size_t)K1 * 8, p, K2);
        }
        return;
    }
    for (int r = 0; r < mr; r++) {
        int row = r0 + r;
        if (row >= M) {
            for (int k = 0; k < K1 + K2; k++)
                dst[(size_t)k * (size_t)mr + (size_t)r] = 0.0f;
            continue;
        }
        const float *a1 = A1 + (size_t)row * (size_t)lda1;
        for (int k = 0; k < K1; k++)
            dst[(size_t)k * (size_t)mr + (size_t)r] = a1[k];
        if (K2 > 0) {
            const float *a2 = A2 + (size_t)row * (size_t)lda2;
            float *d2 = dst + (size_t)K1 * (size_t)mr;
            for (int k = 0; k < K2; k++)
                d2[(size_t)k * (size_t)mr + (size_t)r] = a2[k];
        }
    }
}

/* ---- micro-kernels: C[mr', nc] (+)= a[K][MR] . w[K][nvec vectors] ---- */

/* One body for 1, 2 or 3 vectors of 16 columns (nvec is a constant in
 * every caller, so the accumulators stay in registers). */
__attribute__((target("avx512f"), always_inline)) static inline void
kernel_avx512_n(const int nvec, int K, const float *restrict a, const float *restrict w,
                float *c, int ldc, int rows, int nc, bool acc)
{
    __m512 r[MR_512][NV_512];
    const int ws = 16 * nvec;
#pragma GCC unroll 32
    for (int i = 0; i < MR_512; i++)
#pragma GCC unroll 4
        for (int j = 0; j < nvec; j++)
            r[i][j] = _mm512_setzero_ps();
    for (int k = 0; k < K; k++) {
        __m512 wv[NV_512];
#pragma GCC unroll 4
        for (int j = 0; j < nvec; j++) {
            /* 32 k rows ahead: measured best (docs/benchmarks.md). */
            _mm_prefetch((const char *)(w + 32 * ws + 16 * j), _MM_HINT_T0);
            wv[j] = _mm512_load_ps(w + 16 * j);
        }
#pragma GCC unroll 32
        for (int i = 0; i < MR_512; i++) {
            __m512 av = _mm512_set1_ps(a[i]);
#pragma GCC unroll 4
            for (int j = 0; j < nvec; j++)
                r[i][j] = _mm512_fmadd_ps(av, wv[j], r[i][j]);
        }
        a += MR_512;
        w += ws;
    }
    __mmask16 m[NV_512];
#pragma GCC unroll 4
    for (int j = 0; j < nvec; j++) {
        int n = nc - 16 * j;
        m[j] = n >= 16 ? (__mmask16)0xffff : n <= 0 ? (__mmask16)0 : (__mmask16)((1u << n) - 1u);
    }
#pragma GCC unroll 32
    for (int i = 0; i < MR_512; i++) {
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

__attribute__((target("avx512f"))) static void kernel_avx512(int nvec, int K, const float *a,
                                                             const float *w, float *c, int ldc,
                                                             int rows, int nc, bool acc)
{
    switch (nvec) {
    case 1: kernel_avx512_n(1, K, a, w, c, ldc, rows, nc, acc); break;
    case 2: kernel_avx512_n(2, K, a, w, c, ldc, rows, nc, acc); break;
    default: kernel_avx512_n(3, K, a, w, c, ldc, rows, nc, acc); break;
    }
}

/* Copy a finished mr x nr register block into C (partial rows/columns). */
static void store_block(const float *blk, int nr, float *c, int ldc, int rows, int nc, bool acc)
{
    for (int i = 0; i < rows; i++) {
        float *cr = c + (size_t)i * (size_t)ldc;
        const float *br = blk + (size_t)i * (size_t)nr;
        if (acc) {
            for (int j = 0; j < nc; j++)
                cr[j] = br[j] + cr[j];
        } else {
            memcpy(cr, br, (size_t)nc * sizeof(float));
        }
    }
}

__attribute__((target("avx2,fma"), always_inline)) static inline void
kernel_avx2_n(const int nvec, int K, const float *restrict a, const float *restrict w, float *c,
              int ldc, int rows, int nc, bool acc)
{
    __m256 r[MR_256][NV_256];
    const int ws = 8 * nvec;
#pragma GCC unroll 16
    for (int i = 0; i < MR_256; i++)
#pragma GCC unroll 4
        for (int j = 0; j < nvec; j++)
            r[i][j] = _mm256_setzero_ps();
    for (int k = 0; k < K; k++) {
        __m256 wv[NV_256];
#pragma GCC unroll 4
        for (int j = 0; j < nvec; j++)
            wv[j] = _mm256_load_ps(w + 8 * j);
#pragma GCC unroll 16
        for (int i = 0; i < MR_256; i++) {
            __m256 av = _mm256_broadcast_ss(a + i);
#pragma GCC unroll 4
            for (int j = 0; j < nvec; j++)
                r[i][j] = _mm256_fmadd_ps(av, wv[j], r[i][j]);
        }
        a += MR_256;
        w += ws;
    }
    float blk[MR_256 * NR_256] __attribute__((aligned(32)));
#pragma GCC unroll 16
    for (int i = 0; i < MR_256; i++)
#pragma GCC unroll 4
        for (int j = 0; j < nvec; j++)
            _mm256_store_ps(blk + i * NR_256 + 8 * j, r[i][j]);
    store_block(blk, NR_256, c, ldc, rows, nc, acc);
}

__attribute__((target("avx2,fma"))) static void kernel_avx2(int nvec, int K, const float *a,
                                                            const float *w, float *c, int ldc,
                                                            int rows, int nc, bool acc)
{
    switch (nvec) {
    case 1: kernel_avx2_n(1, K, a, w, c, ldc, rows, nc, acc); break;
    case 2: kernel_avx2_n(2, K, a, w, c, ldc, rows, nc, acc); break;
    default: kernel_avx2_n(3, K, a, w, c, ldc, rows, nc, acc); break;
    }
}

static void kernel_c(int K, const float *restrict a, const float *restrict w, float *c, int ldc,
                     int rows, int nc, bool acc)
{
    float blk[MR_C * NR_C] = {0};
    for (int k = 0; k < K; k++) {
        for (int i = 0; i < MR_C; i++)
            for (int j = 0; j < NR_C; j++)
                blk[i * NR_C + j] += a[i] * w[j];
        a += MR_C;
        w += NR_C;
    }
    store_block(blk, NR_C, c, ldc, rows, nc, acc);
}

void ss_pgemm(const ss_pgemm_w *pw, int M, const float *A1, int lda1, int K1,
              const float *A2, int lda2, float *C, int ldc, bool accumulate,
              float *scratch)
{
    if (M <= 0)
        return;
    if (pw->isa == SS_PGEMM_BF16) {
        ss_pgemm_bf16_run(pw, M, A1, lda1, K1, A2, lda2, C, ldc, accumulate, scratch);
        return;
    }
    if (pw->isa == SS_PGEMM_BF16_AMX) {
        ss_pgemm_amx_run(pw, M, A1, lda1, K1, A2, lda2, C, ldc, accumulate, scratch);
        return;
    }
    if (pw->isa == SS_PGEMM_BF16W) {
        ss_pgemm_bf16w_run(pw, M, A1, lda1, K1, A2, lda2, C, ldc, accumulate, scratch);
        return;
    }
    const int K = pw->K, mr = pw->mr, nr = pw->nr;
    const int K2 = K - K1;
    const int tiles = (M + mr - 1) / mr;
    const size_t tsz = (size_t)K * (size_t)mr, psz = (size_t)K * (size_t)nr;
    for (int t = 0; t < tiles; t++)
        pack_tile(scratch + (size_t)t * tsz, mr, t * mr, M, A1, lda1, K1, A2, lda2, K2);
    const int panels = (pw->N + nr - 1) / nr;
    for (int p = 0; p < panels; p++) {
        const float *w = pw->data + (size_t)p * psz;
        int nc, width;
        panel_dims(pw, p, &nc, &width);
        const int nvec = width / pw->nv;
        for (int t = 0; t < tiles; t++) {
            const float *a = scratch + (size_t)t * tsz;
            float *c = C + (size_t)t * (size_t)mr * (size_t)ldc + (size_t)p * (size_t)nr;
            const int rows = M - t * mr < mr ? M - t * mr : mr;
            switch (pw->isa) {
            case SS_ISA_AVX512: kernel_avx512(nvec, K, a, w, c, ldc, rows, nc, accumulate); break;
            case SS_ISA_AVX2: kernel_avx2(nvec, K, a, w, c, ldc, rows, nc, accumulate); break;
            default: kernel_c(K, a, w, c, ldc, rows, nc, accumulate); break;
            }
        }
    }
}
