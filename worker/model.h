/* model -- an RNN model loaded from a safetensors file (see DESIGN.md).
 *
 * The weights are float32 in TensorFlow layouts: a kernel [in, out] is
 * row-major with `in` rows, so x[B, in] * kernel gives [B, out].
 * Pointers in ss_layer point into memory owned by the model (the file's
 * mapping or a copy) and stay valid until ss_model_free.
 */
#ifndef SS_MODEL_H
#define SS_MODEL_H

#include <stdbool.h>
#include <stddef.h>

typedef enum ss_cell_kind {
    SS_CELL_BASIC_RNN = 0,
    SS_CELL_LSTM = 1,
    SS_CELL_GRU = 2,
} ss_cell_kind;

typedef enum ss_activation {
    SS_ACT_TANH = 0,
    SS_ACT_RELU = 1,
} ss_activation;

#define SS_MODEL_MAX_LAYERS 16

/* Weights of one layer; unused pointers are NULL. */
typedef struct ss_layer {
    int in;                  /* input width of this layer */
    /* basic_rnn: kernel [in+H, H], bias [H]
     * lstm:      kernel [in+P, 4H], bias [4H] (i, j, f, o)
     * gru (reset_after=false): kernel = gates/kernel [in+H, 2H],
     *            bias = gates/bias [2H] (r, u)
     * gru (reset_after=true):  kernel [in, 3H], bias [2, 3H] (z, r, h) */
    const float *kernel;     /* see above */
    const float *bias;       /* see above */
    const float *cand_kernel;      /* gru !reset_after: candidate/kernel [in+H, H] */
    const float *cand_bias;        /* gru !reset_after: candidate/bias [H] */
    const float *recurrent_kernel; /* gru reset_after: [H, 3H] */
    const float *w_i_diag;   /* lstm peepholes [H] */
    const float *w_f_diag;   /* lstm peepholes [H] */
    const float *w_o_diag;   /* lstm peepholes [H] */
    const float *proj;       /* lstm num_proj: projection/kernel [H, P] */
} ss_layer;

typedef struct ss_model {
    ss_cell_kind cell;       /* cell type */
    int input_size;          /* width of x */
    int num_units;           /* H */
    int num_layers;          /* stacked layers (MultiRNNCell) */
    ss_activation activation; /* tanh or relu */
    float forget_bias;       /* lstm, default 1.0 */
    bool use_peepholes;      /* lstm */
    bool has_cell_clip;      /* lstm: cell_clip given */
    float cell_clip;         /* lstm: clip value when has_cell_clip */
    int num_proj;            /* lstm: P, or 0 for none */
    bool reset_after;        /* gru variant */
    int output_size;         /* P for lstm with projection, else H */
    size_t n_states;         /* lstm: 2 per layer (c, h); else 1 per layer */
    char **state_names;      /* n_states names, flattened TF order */
    int *state_sizes;        /* n_states widths (per sequence, floats) */
    ss_layer layers[SS_MODEL_MAX_LAYERS]; /* num_layers used */
    void *mem;               /* owned backing memory (mapping or copy) */
    size_t mem_len;          /* its length */
} ss_model;

/* Load and validate a safetensors model file. On error returns a negative
 * code and writes a message naming the file, tensor or key, and what was
 * expected, into err (errsz bytes, NUL-terminated). */
int ss_model_load(const char *path, ss_model **out, char *err, size_t errsz);
void ss_model_free(ss_model *m); /* accepts NULL */

#endif
