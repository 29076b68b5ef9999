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
 * the sizes already seen. A workspace may run its batch on several threads
 * (ss_unroll_set_threads): the batch rows are split between the caller and
 * persistent worker threads the workspace owns; results do not depend on
 * the thread count (bit for bit). Calls on one workspace must not overlap:
 * one workspace per calling thread.
 */
#ifndef SS_UNROLL_H
#define SS_UNROLL_H

#include <stdint.h>

#include "model.h"

typedef struct ss_unroll ss_unroll; /* opaque: model pointer + scratch buffers */

/* Largest thread count of one workspace. */
#define SS_UNROLL_THREADS_MAX 1024

/* m must outlive the workspace. The workspace starts with 1 thread (the
 * caller's). */
int ss_unroll_new(ss_unroll **out, const ss_model *m);
void ss_unroll_free(ss_unroll *u); /* accepts NULL; joins the workers */

/* Run each ss_unroll_run on n threads: the caller plus n-1 workers,
 * started here and parked between runs (they use no CPU while parked).
 * Each thread takes a contiguous block of about B/n batch rows; use at
 * most the cores available. Not while a run is in progress. Returns 0,
 * SS_ERR_INVALID for n outside [1, SS_UNROLL_THREADS_MAX], or
 * SS_ERR_NOMEM (a thread could not be started; the workspace is then back
 * to 1 thread and still usable). */
int ss_unroll_set_threads(ss_unroll *u, int n);
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
