/* vmath -- in-place vector sigmoid, tanh and relu on libmvec (see vmath.h). */
#include "vmath.h"

#include <immintrin.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ss_error.h"

/* libmvec's vector-ABI entry points (glibc >= 2.35 for tanhf). They are
 * declared here because math.h only exposes them under -ffast-math; the
 * target attributes make the AVX argument passing match the vector ABI. */
__attribute__((target("avx512f"))) __m512 _ZGVeN16v_tanhf(__m512 x);
__attribute__((target("avx512f"))) __m512 _ZGVeN16v_expf(__m512 x);
__attribute__((target("avx2"))) __m256 _ZGVdN8v_tanhf(__m256 x);
__attribute__((target("avx2"))) __m256 _ZGVdN8v_expf(__m256 x);
__m128 _ZGVbN4v_tanhf(__m128 x);
__m128 _ZGVbN4v_expf(__m128 x);

enum { ISA_SSE = SS_ISA_SSE, ISA_AVX2 = SS_ISA_AVX2, ISA_AVX512 = SS_ISA_AVX512 };

static const char *const isa_names[] = {"sse", "avx2", "avx512"};

/* Variant chosen by ss_vmath_set_isa, or -1 for the widest supported. */
static int forced_isa = -1;

static int best_isa(void)
{
    /* __builtin_cpu_supports reads a table libgcc fills before main. */
    if (__builtin_cpu_supports("avx512f"))
        return ISA_AVX512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        return ISA_AVX2;
    return ISA_SSE;
}

static int isa(void)
{
    return forced_isa >= 0 ? forced_isa : best_isa();
}

ss_isa ss_vmath_isa_id(void)
{
    return (ss_isa)isa();
}

const char *ss_vmath_isa(void)
{
    return isa_names[isa()];
}

bool ss_vmath_has_bf16(void)
{
    const char *off = getenv(SS_CPU_NO_BF16_ENV);
    if (off && *off && strcmp(off, "0") != 0)
        return false;
    return __builtin_cpu_supports("avx512bf16") && __builtin_cpu_supports("avx512f") &&
           __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl");
}

int ss_vmath_set_isa(const char *name)
{
    if (!name) {
        forced_isa = -1;
        return 0;
    }
    for (int i = 0; i <= ISA_AVX512; i++) {
        if (!strcmp(name, isa_names[i])) {
            if (i > best_isa())
                return SS_ERR_INVALID;
            forced_isa = i;
            return 0;
        }
    }
    return SS_ERR_INVALID;
}

__attribute__((target("avx512f"))) static void tanh_avx512(float *x, size_t n)
{
    size_t i = 0;
    for (; i + 16 <= n; i += 16)
        _mm512_storeu_ps(x + i, _ZGVeN16v_tanhf(_mm512_loadu_ps(x + i)));
    if (i < n) {
        __mmask16 k = (__mmask16)((1u << (n - i)) - 1u);
        __m512 v = _mm512_maskz_loadu_ps(k, x + i);
        _mm512_mask_storeu_ps(x + i, k, _ZGVeN16v_tanhf(v));
    }
}

/* 1 / d for d >= 1 without the divider: the 14-bit estimate and one
 * Newton step (relative error ~2^-27, below float's half ulp most of the
 * time and within 1 ulp always); d = inf gives 0. */
__attribute__((target("avx512f"))) static inline __m512 recip_avx512(__m512 d)
{
    const __m512 one = _mm512_set1_ps(1.0f);
    __m512 r = _mm512_rcp14_ps(d);
    __m512 e = _mm512_fnmadd_ps(d, r, one);
    r = _mm512_fmadd_ps(r, e, r);
    __mmask16 fin = _mm512_cmp_ps_mask(d, _mm512_set1_ps(INFINITY), _CMP_LT_OQ);
    return _mm512_maskz_mov_ps(fin, r);
}

__attribute__((target("avx512f"))) static void sigmoid_avx512(float *x, size_t n)
{
    const __m512 one = _mm512_set1_ps(1.0f);
    const __m512 zero = _mm512_setzero_ps();
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512 e = _ZGVeN16v_expf(_mm512_sub_ps(zero, _mm512_loadu_ps(x + i)));
        _mm512_storeu_ps(x + i, recip_avx512(_mm512_add_ps(one, e)));
    }
    if (i < n) {
        __mmask16 k = (__mmask16)((1u << (n - i)) - 1u);
        __m512 e = _ZGVeN16v_expf(_mm512_sub_ps(zero, _mm512_maskz_loadu_ps(k, x + i)));
        _mm512_mask_storeu_ps(x + i, k, recip_avx512(_mm512_add_ps(one, e)));
    }
}

__attribute__((target("avx2"))) static void tanh_avx2(float *x, size_t n)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(x + i, _ZGVdN8v_tanhf(_mm256_loadu_ps(x + i)));
    for (; i < n; i++)
        x[i] = tanhf(x[i]);
}

__attribute__((target("avx2"))) static void sigmoid_avx2(float *x, size_t n)
{
    const __m256 one = _mm256_set1_ps(1.0f);
    const __m256 zero = _mm256_setzero_ps();
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 e = _ZGVdN8v_expf(_mm256_sub_ps(zero, _mm256_loadu_ps(x + i)));
        _mm256_storeu_ps(x + i, _mm256_div_ps(one, _mm256_add_ps(one, e)));
    }
    for (; i < n; i++)
        x[i] = 1.0f / (1.0f + expf(-x[i]));
}

static void tanh_sse(float *x, size_t n)
{
    size_t i = 0;
    for (; i + 4 <= n; i += 4)
        _mm_storeu_ps(x + i, _ZGVbN4v_tanhf(_mm_loadu_ps(x + i)));
    for (; i < n; i++)
        x[i] = tanhf(x[i]);
}

static void sigmoid_sse(float *x, size_t n)
{
    const __m128 one = _mm_set1_ps(1.0f);
    const __m128 zero = _mm_setzero_ps();
    size_t i = 0;
    for (; i + 4 <= n; i += 4) {
        __m128 e = _ZGVbN4v_expf(_mm_sub_ps(zero, _mm_loadu_ps(x + i)));
        _mm_storeu_ps(x + i, _mm_div_ps(one, _mm_add_ps(one, e)));
    }
    for (; i < n; i++)
        x[i] = 1.0f / (1.0f + expf(-x[i]));
}

void ss_vmath_tanh(float *x, size_t n)
{
    switch (isa()) {
    case ISA_AVX512: tanh_avx512(x, n); break;
    case ISA_AVX2: tanh_avx2(x, n); break;
    default: tanh_sse(x, n); break;
    }
}

void ss_vmath_sigmoid(float *x, size_t n)
{
    switch (isa()) {
    case ISA_AVX512: sigmoid_avx512(x, n); break;
    case ISA_AVX2: sigmoid_avx2(x, n); break;
    default: sigmoid_sse(x, n); break;
    }
}

void ss_vmath_relu(float *x, size_t n)
{
    for (size_t i = 0; i < n; i++)
        x[i] = x[i] < 0.0f ? 0.0f : x[i];
}

void ss_vmath_act(ss_activation act, float *x, size_t n)
{
    if (act == SS_ACT_RELU)
        ss_vmath_relu(x, n);
    else
        ss_vmath_tanh(x, n);
}
