/* unroll -- TensorFlow static_rnn over one segment, on packed-weight sgemm.
 *
 * Semantics (tf.compat.v1.nn.static_rnn with sequence_length): for step t
 * and batch row b, if t >= length[b] the output row is zero and the state
 * is copied through; otherwise (output, state) = cell(x[t, b], state).
 * Steps at or past max(length) are not computed. lengths == NULL means
 * every step of every row is computed. Stacks run layer after layer.
 *
 * A workspace is tied to one model and reused across calls: no allocation
 * happens inside the step loop, and none at all when T and B stay within
 * the sizes already seen. A workspace may run on several threads
 * (ss_unroll_set_threads): the caller plus persistent worker threads the
 * workspace owns. Per call the work is split either by batch rows (each
 * thread runs its rows through every step with no synchronisation) or by
 * units (each thread owns a slice of every layer's units and of the packed
 * weight and computes its gate columns for all rows, meeting the others at
 * a spin barrier twice per step), whichever wastes less of the
 * micro-kernel's 8-row tiles (small batches go by units). Results do not
 * depend on the thread count or the split (bit for bit). Calls on one
 * workspace must not overlap: one workspace per calling thread.
 *
 * Precision: fp32 (default) or bf16 (ss_unroll_new_prec): bfloat16
 * weights packed once, products on AVX512_BF16 with the left operand
 * rounded to bfloat16 and fp32 accumulation; gate math, states, inputs and
 * outputs stay fp32. A bf16 workspace checks itself when built against an
 * fp32 one of the same model (SS_UNROLL_BF16_TOL) and is refused if off.
 */
#ifndef SS_UNROLL_H
#define SS_UNROLL_H

#include <stdint.h>

#include "model.h"

typedef struct ss_unroll ss_unroll; /* opaque: model pointer + scratch buffers */

/* Largest thread count of one workspace. */
#define SS_UNROLL_THREADS_MAX 1024

/* Precision of the products. */
typedef enum ss_precision {
    SS_PRECISION_FP32 = 0,  /* float32 weights and products (default) */
    SS_PRECISION_BF16 = 1,  /* bfloat16 weights and products, fp32 accumulation */
} ss_precision;

/* "fp32" or "bf16" into *out; SS_ERR_INVALID otherwise. */
int ss_precision_parse(const char *s, ss_precision *out);
/* "fp32" or "bf16". */
const char *ss_precision_name(ss_precision p);
/* NULL when p can run on this CPU, else a sentence saying why not (bf16
 * needs AVX512_BF16; SS_CPU_NO_BF16=1 in the environment forces "absent").
 * The string is static. */
const char *ss_precision_unsupported(ss_precision p);

/* Bound of the bf16 self-check: every output and final state of a fixed
 * random segment (SS_UNROLL_CHECK_T steps of SS_UNROLL_CHECK_B rows,
 * inputs uniform in [-1, 1], zero initial state) is within
 * |bf16 - fp32| <= SS_UNROLL_BF16_TOL * max(1, |fp32|).
 * docs/worker.md gives the errors measured per cell. */
#define SS_UNROLL_BF16_TOL 0.02
/* The self-check's pieces, shared with the head's check (model_run.c):
 * n deterministic values in [-1, 1) from seed, and the worst
 * |got - want| / max(1, |want|) over n values (a NaN counts as infinite). */
void ss_unroll_check_fill(float *x, size_t n, uint64_t seed);
double ss_unroll_check_diff(const float *got, const float *want, size_t n);
#define SS_UNROLL_CHECK_T 8
#define SS_UNROLL_CHECK_B 3

/* m must outlive the workspace. The workspace starts with 1 thread (the
 * caller's). fp32. */
int ss_unroll_new(ss_unroll **out, const ss_model *m);
/* The same with a precision. For bf16: SS_ERR_INVALID when
 * ss_precision_unsupported(p) says so; SS_ERR_INTERNAL when the self-check
 * is off by more than the bound (nothing is returned then). *check_err
 * (may be NULL) receives the self-check's worst error (0 for fp32). */
int ss_unroll_new_prec(ss_unroll **out, const ss_model *m, ss_precision p, double *check_err);
/* Precision of the workspace. */
ss_precision ss_unroll_precision(const ss_unroll *u);
/* The micro-kernel its products run on, for reports: "fp32" or the bf16
 * kernel ("amx", "fma" or "dpbf16"). Static string. */
const char *ss_unroll_kernel(const ss_unroll *u);
void ss_unroll_free(ss_unroll *u); /* accepts NULL; joins the workers */

/* Run each ss_unroll_run on n threads: the caller plus n-1 workers,
 * started here and parked between runs (they spin for a bounded time,
 * ~0.3 ms, then sleep on a futex). The packed weights are re-cut into n
 * unit slices here (a copy of the model's weights in the new layout). Use
 * at most the cores available. Not while a run is in progress. Returns 0,
 * SS_ERR_INVALID for n outside [1, SS_UNROLL_THREADS_MAX], or
 * SS_ERR_NOMEM (the workspace is then back to 1 thread and still
 * usable). */
int ss_unroll_set_threads(ss_unroll *u, int n);

/* How a run is split across threads. */
typedef enum ss_unroll_split {
    SS_UNROLL_SPLIT_AUTO = 0,  /* per call, from the batch size (default) */
    SS_UNROLL_SPLIT_ROWS = 1,  /* batch rows, no synchronisation per step */
    SS_UNROLL_SPLIT_UNITS = 2, /* unit slices, two barriers per step */
} ss_unroll_split;
/* Force a split (tests, benchmarks); not during a run. */
void ss_unroll_set_split(ss_unroll *u, ss_unroll_split s);
/* The split the last run used (ROWS or UNITS; ROWS on 1 thread). */
ss_unroll_split ss_unroll_last_split(const ss_unroll *u);
/* Threads of the workspace (1 after ss_unroll_new). */
int ss_unroll_threads(const ss_unroll *u);

/* inputs:     [T, B, input_size] float32, time-major, row-major
 * lengths:    B values in [0, T], or NULL
 * states_in:  m->n_states pointers, each [B, state_sizes[i]]; NULL (the
 *             array) means initial zeros for all
 * outputs:    [T, B, output_size], or NULL if not wanted
 * states_out: m->n_states pointers, each [B, state_sizes[i]]; may alias
 *             states_in (in-place update)
 * Returns 0, SS_ERR_INVALID for a length out of range or bad sizes, or
 * SS_ERR_NOMEM. */
int ss_unroll_run(ss_unroll *u, int T, int B, const float *inputs,
                  const int32_t *lengths, const float *const *states_in,
                  float *outputs, float *const *states_out);

/* Floating-point operations one ss_unroll_run of T x B performs with all
 * lengths = T (for GFLOP/s figures). */
double ss_unroll_flops(const ss_model *m, int T, int B);

#endif
