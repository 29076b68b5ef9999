/* vmath -- in-place vector sigmoid, tanh and relu over float arrays.
 *
 * tanh and exp come from glibc's libmvec (the SIMD variants of libm,
 * reached through -lm on glibc): the widest variant the CPU supports is
 * picked at run time (AVX-512, AVX2, else SSE). libmvec documents at most
 * 4 ulp; tests/worker and docs/benchmarks.md give the measured error
 * against double-precision references. Functions are thread-safe and
 * allocate nothing.
 */
#ifndef SS_VMATH_H
#define SS_VMATH_H

#include <stdbool.h>
#include <stddef.h>

#include "model.h"

/* x[i] = 1 / (1 + exp(-x[i])) for i < n. */
void ss_vmath_sigmoid(float *x, size_t n);
/* x[i] = tanh(x[i]) for i < n. */
void ss_vmath_tanh(float *x, size_t n);
/* x[i] = max(x[i], 0) for i < n (NaN stays NaN). */
void ss_vmath_relu(float *x, size_t n);
/* The cell activation (tanh or relu) in place. */
void ss_vmath_act(ss_activation act, float *x, size_t n);

/* Instruction-set variants, narrowest first. */
typedef enum ss_isa { SS_ISA_SSE = 0, SS_ISA_AVX2 = 1, SS_ISA_AVX512 = 2 } ss_isa;

/* The variant in use (pgemm picks its micro-kernel from it too). */
ss_isa ss_vmath_isa_id(void);

/* Name of the variant in use ("avx512", "avx2" or "sse"), for reports. */
const char *ss_vmath_isa(void);

/* Environment variable that makes ss_vmath_has_bf16() report false
 * whatever the CPU (set to a non-empty value other than "0"), so that
 * tests cover the refusal on any machine. */
#define SS_CPU_NO_BF16_ENV "SS_CPU_NO_BF16"

/* Whether the CPU has AVX512_BF16 (with AVX512F/BW/VL) for the bfloat16
 * products, and SS_CPU_NO_BF16 is not set. */
bool ss_vmath_has_bf16(void);

/* Force a variant by name (tests cover every variant the CPU runs), or
 * NULL for the default, the widest supported. SS_ERR_INVALID for an
 * unknown name or one the CPU lacks. Not thread-safe: call before use. */
int ss_vmath_set_isa(const char *name);

#endif
