/* model_run -- a whole model over one segment: the embedding lookup in
 * front of the RNN stack, the static unroll (unroll.h), and the output
 * head after it (DESIGN.md, "Models beyond the RNN core").
 *
 * The head is one packed product over all T*B rows of the segment, after
 * the unroll, not one per step: out = act(y . head/kernel + head/bias).
 * Rows past a row's sequence_length are zero in the output (as the RNN's
 * own outputs are, static_rnn's rule), not act(bias).
 *
 * A workspace is tied to one model (which must outlive it), reused across
 * calls, and not shared between threads (as ss_unroll). Buffers grow to the
 * largest T*B seen and never shrink.
 */
#ifndef SS_MODEL_RUN_H
#define SS_MODEL_RUN_H

#include <stddef.h>
#include <stdint.h>

#include "model.h"
#include "unroll.h"

typedef struct ss_mrun ss_mrun; /* opaque: the unroll workspace, packed head, buffers */

/* Build the workspace (unroll in precision p; the head is packed in the
 * same precision). With bf16 the head's product is self-checked against
 * fp32 as the stack is, and *check_err is the worse of the two. Errors as
 * ss_unroll_new_prec. */
int ss_mrun_new(ss_mrun **out, const ss_model *m, ss_precision p, double *check_err);
void ss_mrun_free(ss_mrun *r); /* accepts NULL */

/* The unroll workspace inside (borrowed; for threads and splits). */
ss_unroll *ss_mrun_unroll(ss_mrun *r);

/* Embedding lookup: out[i] = embedding/weights[ids[i]] for n ids (out is
 * [n, input_size]). Returns 0, or SS_ERR_INVALID when an id is outside
 * [0, vocab): *bad (may be NULL) receives the index of the first such id
 * and nothing past it is written. */
int ss_mrun_embed(const ss_model *m, const int64_t *ids, size_t n, float *out, size_t *bad);

/* The head over rows = T*B rows: in [T, B, output_size], out [T, B,
 * head_out]; rows of step t >= lengths[b] get zeros (lengths may be NULL).
 * One product (plus bias and activation per row). Returns 0 or
 * SS_ERR_NOMEM / SS_ERR_INVALID (no head). */
int ss_mrun_head(ss_mrun *r, int T, int B, const float *in, const int32_t *lengths,
                 float *out);

/* The whole model. Without an embedding `inputs` is float32 [T, B,
 * input_size] and ids NULL; with one, ids is [T, B] and inputs NULL.
 * lengths, states_in, states_out as ss_unroll_run. outputs [T, B,
 * ss_model_out_width(m)] or NULL. Ids at t >= lengths[b] are padding and
 * not looked up. A bad id: SS_ERR_INVALID with *bad_id
 * (may be NULL) = its index in ids (t*B + b), nothing computed; a bad
 * length: SS_ERR_INVALID with *bad_id = SIZE_MAX. */
int ss_mrun_run(ss_mrun *r, int T, int B, const float *inputs, const int64_t *ids,
                const int32_t *lengths, const float *const *states_in, float *outputs,
                float *const *states_out, size_t *bad_id);

#endif
