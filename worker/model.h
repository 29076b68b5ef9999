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
    int H;                   /* num_units of this layer (0 in a hand-built
                              * model: ss_model_units() falls back to num_units) */
    int P;                   /* lstm num_proj of this layer, 0 for none (in a
                              * hand-built model with H == 0: num_proj) */
} ss_layer;

/* Output head after the RNN stack. */
typedef enum ss_head_act {
    SS_HEAD_NONE = 0,        /* identity */
    SS_HEAD_SOFTMAX = 1,     /* softmax over the out columns of a row */
    SS_HEAD_LOG_SOFTMAX = 2, /* log of the softmax */
    SS_HEAD_SIGMOID = 3,     /* element-wise */
    SS_HEAD_TANH = 4,        /* element-wise */
} ss_head_act;

typedef struct ss_model {
    ss_cell_kind cell;       /* cell type */
    int input_size;          /* width of x */
    int num_units;           /* H of layer 0 (every layer unless layers[l].H is set) */
    int num_layers;          /* stacked layers (MultiRNNCell) */
    ss_activation activation; /* tanh or relu */
    float forget_bias;       /* lstm, default 1.0 */
    bool use_peepholes;      /* lstm */
    bool has_cell_clip;      /* lstm: cell_clip given */
    float cell_clip;         /* lstm: clip value when has_cell_clip */
    int num_proj;            /* lstm: P of layer 0, or 0 for none (every layer
                              * unless layers[l].H is set) */
    bool reset_after;        /* gru variant */
    int output_size;         /* of the RNN stack: the last layer's P (lstm
                              * with projection) or H */
    bool embedding;          /* inputs are token ids looked up in emb */
    int vocab;               /* embedding rows */
    const float *emb;        /* embedding/weights [vocab, input_size] */
    int head_out;            /* head: output columns, 0 for no head */
    ss_head_act head_act;    /* head activation */
    const float *head_kernel; /* head/kernel [output_size, head_out] */
    const float *head_bias;  /* head/bias [head_out] */
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

/* Units H of layer l (layers[l].H, or num_units when that is 0). */
int ss_model_units(const ss_model *m, int l);
/* Projection width of layer l, 0 for none. */
int ss_model_proj(const ss_model *m, int l);
/* Output width of layer l: its projection, else its H. */
int ss_model_layer_out(const ss_model *m, int l);
/* Width of what the model finally outputs: head_out with a head, else
 * output_size. */
int ss_model_out_width(const ss_model *m);
/* "none", "softmax", ... */
const char *ss_head_act_name(ss_head_act a);

#endif
