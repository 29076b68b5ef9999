/* pgemm_amx -- bf16 products on AMX tiles (see pgemm_amx.h).
 *
 * Per call the left operand is rounded to bf16 into [round16(M)][round32(K)]
 * (zero-padded rows and columns, AVX-512 conversion with round to nearest
 * even). Loop: panel (48 columns), then row blocks, then k blocks; the
 * panel (at most a few hundred KiB) stays in L2 across row blocks. Pairs
 * of 16-row blocks go 2 x 2 (C tiles 0-3, A 4-5, B 6-7: each loaded tile
 * serves two products), a last single block and tail panels 1 x 3 (C 0-2,
 * A 3, B 4-6). A finished block goes through a buffer into C, so partial
 * rows and columns need no tile reconfiguration. Each element is summed in k-block order by
 * one tile element, whatever its row or column position, so the result of
 * a row does not depend on how the batch or the units are split.
 */
#include "pgemm_amx.h"

#include <immintrin.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>


#define AMX_TARGET "amx-tile,amx-bf16,avx512f,avx512bw,avx512bf16,avx512vl"
#define ARCH_REQ_XCOMP_PERM 0x1023
#define XFEATURE_XTILEDATA 18
#define NR_AMX 48

static pthread_once_t amx_once = PTHREAD_ONCE_INIT;
static bool amx_ok = false;

static void amx_probe(void)
{
    unsigned a, b, c, d;
    __asm__ volatile("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(7), "c"(0));
    const bool tile = (d >> 24) & 1u, bf16 = (d >> 22) & 1u;
    if (!tile || !bf16 || !__builtin_cpu_supports("avx512bw"))
        return;
    amx_ok = syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0;
}

bool ss_pgemm_amx_available(void)
{
    pthread_once(&amx_once, amx_probe);
    return amx_ok;
}

size_t ss_pgemm_amx_scratch_floats(int M, int K)
{
    size_t mp = ((size_t)(M > 0 ? M : 1) + 15) / 16 * 16, kp = ((size_t)K + 31) / 32 * 32;
    return mp * kp / 2 + 32 * NR_AMX + 16;
}

/* Tile configuration (the LDTILECFG memory format, palette 1). */
typedef struct amx_cfg {
    uint8_t palette;        /* 1 */
    uint8_t start_row;      /* 0 */
    uint8_t reserved[14];   /* 0 */
    uint16_t colsb[16];     /* bytes per row of each tile */
    uint8_t rows[16];       /* rows of each tile */
} amx_cfg;

/* n floats of src as bf16 into dst (n may be 0). */
__attribute__((target(AMX_TARGET))) static void to_bf16(uint16_t *dst, const float *src, int n)
{
    int i = 0;
    for (; i + 32 <= n; i += 32) {
        __m512bh v = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(src + i + 16), _mm512_loadu_ps(src + i));
        _mm512_storeu_si512((void *)(dst + i), (__m512i)v);
    }
    if (i < n) {
        int left = n - i;
        __mmask16 lo = (__mmask16)(left >= 16 ? 0xffff : (1u << left) - 1u);
        __mmask16 hi = (__mmask16)(left <= 16 ? 0 : (1u << (left - 16)) - 1u);
        __m512bh v = _mm512_cvtne2ps_pbh(_mm512_maskz_loadu_ps(hi, src + i + 16),
                                         _mm512_maskz_loadu_ps(lo, src + i));
        __mmask32 m = (__mmask32)(left >= 32 ? 0xffffffffu : (1u << left) - 1u);
        _mm512_mask_storeu_epi16(dst + i, m, (__m512i)v);
    }
}

/* One 16-row block of one panel with nv (1..3) 16-column sub-panels. */
#define AMX_BLOCK(nv)                                                              \
    do {                                                                           \
        _tile_zero(0);                                                             \
        if (nv > 1)                                                                \
            _tile_zero(1);                                                         \
        if (nv > 2)                                                                \
            _tile_zero(2);                                                         \
        for (int kb = 0; kb < nkb; kb++) {                                         \
            const uint16_t *wk = w + (size_t)kb * 16 * (size_t)wrow;               \
            _tile_loadd(3, ar + (size_t)kb * 32, astride);                          \
            _tile_loadd(4, wk, bstride);                                            \
            _tile_dpbf16ps(0, 3, 4);                                               \
            if (nv > 1) {                                                          \
                _tile_loadd(5, wk + 32, bstride);                                   \
                _tile_dpbf16ps(1, 3, 5);                                           \
            }                                                                      \
            if (nv > 2) {                                                          \
                _tile_loadd(6, wk + 64, bstride);                                   \
                _tile_dpbf16ps(2, 3, 6);                                           \
            }                                                                      \
        }                                                                          \
        _tile_stored(0, tmp, NR_AMX * 4);                                          \
        if (nv > 1)                                                                \
            _tile_stored(1, tmp + 16, NR_AMX * 4);                                 \
        if (nv > 2)                                                                \
            _tile_stored(2, tmp + 32, NR_AMX * 4);                                 \
    } while (0)

/* Two 16-row blocks (rows rb, rb + 16) of a full 48-column panel: first
 * columns 0-31 as a 2 x 2 block of C tiles (each A and B tile loaded once
 * per k block serves two products), then columns 32-47 as 2 x 1. Tiles:
 * C 0-3, A 4-5, B 6-7. Results go to tmp [32][48]. */
#define AMX_2X2(ar0, ar1)                                                          \
    do {                                                                           \
        _tile_zero(0);                                                             \
        _tile_zero(1);                                                             \
        _tile_zero(2);                                                             \
        _tile_zero(3);                                                             \
        for (int kb = 0; kb < nkb; kb++) {                                         \
            const uint16_t *wk = w + (size_t)kb * 16 * (size_t)wrow;               \
            _tile_loadd(4, ar0 + (size_t)kb * 32, astride);                         \
            _tile_loadd(5, ar1 + (size_t)kb * 32, astride);                         \
            _tile_loadd(6, wk, bstride);                                            \
            _tile_loadd(7, wk + 32, bstride);                                       \
            _tile_dpbf16ps(0, 4, 6);                                               \
            _tile_dpbf16ps(1, 4, 7);                                               \
            _tile_dpbf16ps(2, 5, 6);                                               \
            _tile_dpbf16ps(3, 5, 7);                                               \
        }                                                                          \
        _tile_stored(0, tmp, NR_AMX * 4);                                          \
        _tile_stored(1, tmp + 16, NR_AMX * 4);                                     \
        _tile_stored(2, tmp + 16 * NR_AMX, NR_AMX * 4);                            \
        _tile_stored(3, tmp + 16 * NR_AMX + 16, NR_AMX * 4);                       \
        _tile_zero(0);                                                             \
        _tile_zero(2);                                                             \
        for (int kb = 0; kb < nkb; kb++) {                                         \
            const uint16_t *wk = w + (size_t)kb * 16 * (size_t)wrow;               \
            _tile_loadd(4, ar0 + (size_t)kb * 32, astride);                         \
            _tile_loadd(5, ar1 + (size_t)kb * 32, astride);                         \
            _tile_loadd(6, wk + 64, bstride);                                       \
            _tile_dpbf16ps(0, 4, 6);                                               \
            _tile_dpbf16ps(2, 5, 6);                                               \
        }                                                                          \
        _tile_stored(0, tmp + 32, NR_AMX * 4);                                     \
        _tile_stored(2, tmp + 16 * NR_AMX + 32, NR_AMX * 4);                       \
    } while (0)

/* Rows [rb, rb + n) of tmp (row stride 48) into C, nc columns. */
static void store_rows(float *C, int ldc, int rb, int n, int col0, int nc, const float *tmp,
                       bool accumulate)
{
    for (int i = 0; i < n; i++) {
        float *cr = C + (size_t)(rb + i) * (size_t)ldc + (size_t)col0;
        const float *tr = tmp + (size_t)i * NR_AMX;
        if (accumulate) {
            for (int j = 0; j < nc; j++)
                cr[j] = tr[j] + cr[j];
        } else {
            memcpy(cr, tr, (size_t)nc * sizeof(float));
        }
    }
}

__attribute__((target(AMX_TARGET))) void ss_pgemm_amx_run(const ss_pgemm_w *pw, int M,
                                                           const float *A1, int lda1, int K1,
                                                           const float *A2, int lda2, float *C,
                                                           int ldc, bool accumulate,
                                                           float *scratch)
{
    const int K = pw->K, K2 = K - K1;
    const int kp32 = (K + 31) / 32 * 32, nkb = kp32 / 32;
    const int mp = (M + 15) / 16 * 16;
    uint16_t *ab = (uint16_t *)(void *)scratch;
    float *tmp = scratch + (size_t)mp * (size_t)kp32 / 2;
    for (int r = 0; r < mp; r++) {
        uint16_t *d = ab + (size_t)r * (size_t)kp32;
        if (r >= M) {
            memset(d, 0, (size_t)kp32 * sizeof(uint16_t));
            continue;
        }
        to_bf16(d, A1 + (size_t)r * (size_t)lda1, K1);
        if (K2 > 0)
            to_bf16(d + K1, A2 + (size_t)r * (size_t)lda2, K2);
        memset(d + K, 0, (size_t)(kp32 - K) * sizeof(uint16_t));
    }
    amx_cfg cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.palette = 1;
    for (int t = 0; t < 8; t++) {
        cfg.rows[t] = 16;
        cfg.colsb[t] = 64;
    }
    _tile_loadconfig(&cfg);
    const size_t kpad = ss_pgemm_bf16_kpad(K);
    const size_t psz = kpad * NR_AMX * 2;
    const long astride = (long)kp32 * 2;
    const int panels = (pw->N + NR_AMX - 1) / NR_AMX;
    for (int p = 0; p < panels; p++) {
        const uint16_t *w = pw->bdata + (size_t)p * psz;
        const int nc = pw->N - p * NR_AMX < NR_AMX ? pw->N - p * NR_AMX : NR_AMX;
        const int nvec = (nc + 15) / 16;
        const int wrow = nvec * 32; /* uint16 per k pair of the panel */
        const long bstride = (long)wrow * 2;
        int rb = 0;
        if (nvec == 3) {
            for (; rb + 32 <= mp; rb += 32) {
                const uint16_t *ar0 = ab + (size_t)rb * (size_t)kp32;
                const uint16_t *ar1 = ar0 + 16 * (size_t)kp32;
                AMX_2X2(ar0, ar1);
                const int rows = M - rb < 32 ? M - rb : 32;
                store_rows(C, ldc, rb, rows, p * NR_AMX, nc, tmp, accumulate);
            }
        }
        for (; rb < mp; rb += 16) {
            const uint16_t *ar = ab + (size_t)rb * (size_t)kp32;
            switch (nvec) {
            case 1: AMX_BLOCK(1); break;
            case 2: AMX_BLOCK(2); break;
            default: AMX_BLOCK(3); break;
            }
            const int rows = M - rb < 16 ? M - rb : 16;
            store_rows(C, ldc, rb, rows, p * NR_AMX, nc, tmp, accumulate);
        }
    }
    _tile_release();
}
