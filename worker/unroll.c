/* unroll -- TensorFlow static_rnn over one segment on OpenBLAS (see unroll.h).
 *
 * Each layer runs over all computed steps before the next layer starts
 * (equivalent to MultiRNNCell inside static_rnn, because layer l+1 at step
 * t only needs layer l's output at step t). Per layer:
 *   1. one sgemm projects the inputs of all steps: pre[T*B, G*H] = X · W_x;
 *   2. per step, one sgemm adds h · W_h onto that step's slice of pre
 *      (gru reset_after=false needs a second one for (r*h) · W_c; gru
 *      reset_after=true writes h · R into a scratch because r multiplies
 *      it; lstm num_proj adds the projection);
 *   3. the fused gate math (cell.c) adds the bias, applies the
 *      nonlinearities and masks rows past their length.
 * TF kernels [in+R, out] are used in place: rows [0, in) are W_x and rows
 * [in, in+R) are W_h, both with leading dimension out. Only the two x-parts
 * of gru reset_after=false are packed, once, into one [in, 3H] matrix.
 */
#include "unroll.h"

#include <cblas.h>
#include <limits.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "cell.h"
#include "ss_error.h"

/* Per-layer view of the weights, prepared once by ss_unroll_new. */
typedef struct unroll_layer {
    int in;                 /* input width of the layer */
    int rw;                 /* width of the recurrent input h (P or H) */
    const float *wx;        /* [in, gw] input part, leading dimension gw */
    const float *wh;        /* recurrent part [rw, ldwh] */
    int ldwh;               /* leading dimension of wh */
    const float *wch;       /* gru reset_after=false: candidate h-part [H, H] */
    float *wx_packed;       /* owned: gru reset_after=false [in, 3H], else NULL */
    float *bias_packed;     /* owned: gru reset_after=false [3H] (r, u, c), else NULL */
    ss_cell_args args;      /* constants for the gate math */
} unroll_layer;

struct ss_unroll {
    const ss_model *m;      /* borrowed; outlives the workspace */
    int H;                  /* num_units */
    int P;                  /* output width of every layer (num_proj or H) */
    int gw;                 /* columns of the pre-activation buffer (G*H) */
    int L;                  /* number of layers */
    int n_states;           /* states in the flattened TF order */
    int state_w[2 * SS_MODEL_MAX_LAYERS]; /* width of each state */
    unroll_layer layers[SS_MODEL_MAX_LAYERS]; /* L used */
    size_t pre_cap;         /* T*B rows pre can hold */
    float *pre;             /* [pre_cap, gw] pre-activations */
    size_t ybuf_cap;        /* T*B rows ybuf can hold */
    float *ybuf;            /* [ybuf_cap, P] outputs of inner layers */
    size_t b_cap;           /* batch rows the per-batch buffers hold */
    float *state;           /* per layer: c [B, H] (lstm) then h [B, P] */
    float *scratch;         /* [B, 3H]: gru r*h or h·R, lstm m before projection */
    float *proj_out;        /* lstm num_proj: [B, P] */
};

static int gates_of(const ss_model *m)
{
    switch (m->cell) {
    case SS_CELL_LSTM: return 4;
    case SS_CELL_GRU: return 3;
    default: return 1;
    }
}

static int check_model(const ss_model *m)
{
    if (m->cell != SS_CELL_BASIC_RNN && m->cell != SS_CELL_LSTM && m->cell != SS_CELL_GRU)
        return SS_ERR_INVALID;
    if (m->num_layers < 1 || m->num_layers > SS_MODEL_MAX_LAYERS)
        return SS_ERR_INVALID;
    if (m->input_size < 1 || m->num_units < 1 || m->num_proj < 0)
        return SS_ERR_INVALID;
    if (m->activation != SS_ACT_TANH && m->activation != SS_ACT_RELU)
        return SS_ERR_INVALID;
    if (m->num_proj > 0 && m->cell != SS_CELL_LSTM)
        return SS_ERR_INVALID;
    int P = m->num_proj > 0 ? m->num_proj : m->num_units;
    if (m->output_size != P)
        return SS_ERR_INVALID;
    /* Keep every matrix dimension an int for cblas (G*H and in+P included). */
    if (m->num_units > INT_MAX / 4 / 4 || P > INT_MAX / 4 || m->input_size > INT_MAX / 4)
        return SS_ERR_INVALID;
    size_t want = m->cell == SS_CELL_LSTM ? 2 * (size_t)m->num_layers : (size_t)m->num_layers;
    if (m->n_states != want)
        return SS_ERR_INVALID;
    for (int l = 0; l < m->num_layers; l++) {
        const ss_layer *ly = &m->layers[l];
        if (ly->in != (l == 0 ? m->input_size : P) || !ly->kernel || !ly->bias)
            return SS_ERR_INVALID;
        if (m->cell == SS_CELL_GRU && !m->reset_after && (!ly->cand_kernel || !ly->cand_bias))
            return SS_ERR_INVALID;
        if (m->cell == SS_CELL_GRU && m->reset_after && !ly->recurrent_kernel)
            return SS_ERR_INVALID;
        if (m->cell == SS_CELL_LSTM && m->use_peepholes &&
            (!ly->w_i_diag || !ly->w_f_diag || !ly->w_o_diag))
            return SS_ERR_INVALID;
        if (m->cell == SS_CELL_LSTM && m->num_proj > 0 && !ly->proj)
            return SS_ERR_INVALID;
    }
    return 0;
}

static int prepare_layer(ss_unroll *u, int l)
{
    const ss_model *m = u->m;
    const ss_layer *ly = &m->layers[l];
    unroll_layer *ul = &u->layers[l];
    const int H = u->H;
    ul->in = ly->in;
    ul->rw = m->cell == SS_CELL_LSTM ? u->P : H;
    ul->args.H = H;
    ul->args.act = m->activation;
    ul->args.bias = ly->bias;
    ul->args.forget_bias = m->forget_bias;
    ul->args.has_clip = m->cell == SS_CELL_LSTM && m->has_cell_clip;
    ul->args.clip = m->cell_clip;
    if (m->cell == SS_CELL_LSTM && m->use_peepholes) {
        ul->args.w_i_diag = ly->w_i_diag;
        ul->args.w_f_diag = ly->w_f_diag;
        ul->args.w_o_diag = ly->w_o_diag;
    }
    size_t in = (size_t)ly->in;
    switch (m->cell) {
    case SS_CELL_BASIC_RNN:
    case SS_CELL_LSTM:
        ul->wx = ly->kernel;
        ul->wh = ly->kernel + in * (size_t)u->gw;
        ul->ldwh = u->gw;
        break;
    case SS_CELL_GRU:
        if (m->reset_after) {
            ul->wx = ly->kernel;
            ul->wh = ly->recurrent_kernel;
            ul->ldwh = 3 * H;
            break;
        }
        /* One input sgemm for the gates and the candidate: pack their
         * x-parts side by side, [in, 2H | H]. */
        ul->wx_packed = malloc(in * 3 * (size_t)H * sizeof(float));
        ul->bias_packed = malloc(3 * (size_t)H * sizeof(float));
        if (!ul->wx_packed || !ul->bias_packed)
            return SS_ERR_NOMEM;
        for (size_t r = 0; r < in; r++) {
            memcpy(ul->wx_packed + r * 3 * (size_t)H, ly->kernel + r * 2 * (size_t)H,
                   2 * (size_t)H * sizeof(float));
            memcpy(ul->wx_packed + r * 3 * (size_t)H + 2 * (size_t)H,
                   ly->cand_kernel + r * (size_t)H, (size_t)H * sizeof(float));
        }
        memcpy(ul->bias_packed, ly->bias, 2 * (size_t)H * sizeof(float));
        memcpy(ul->bias_packed + 2 * (size_t)H, ly->cand_bias, (size_t)H * sizeof(float));
        ul->wx = ul->wx_packed;
        ul->wh = ly->kernel + in * 2 * (size_t)H;
        ul->ldwh = 2 * H;
        ul->wch = ly->cand_kernel + in * (size_t)H;
        ul->args.bias = ul->bias_packed;
        break;
    }
    return 0;
}

int ss_unroll_new(ss_unroll **out, const ss_model *m)
{
    int rc = 0;
    ss_unroll *u = NULL;
    if (!out || !m)
        return SS_ERR_INVALID;
    *out = NULL;
    rc = check_model(m);
    if (rc)
        goto out;
    u = calloc(1, sizeof(*u));
    if (!u) {
        rc = SS_ERR_NOMEM;
        goto out;
    }
    u->m = m;
    u->H = m->num_units;
    u->P = m->output_size;
    u->gw = gates_of(m) * m->num_units;
    u->L = m->num_layers;
    u->n_states = (int)m->n_states;
    for (int l = 0; l < u->L; l++) {
        if (m->cell == SS_CELL_LSTM) {
            u->state_w[2 * l] = u->H;
            u->state_w[2 * l + 1] = u->P;
        } else {
            u->state_w[l] = u->H;
        }
    }
    if (m->state_sizes) {
        for (int i = 0; i < u->n_states; i++) {
            if (m->state_sizes[i] != u->state_w[i]) {
                rc = SS_ERR_INVALID;
                goto out;
            }
        }
    }
    for (int l = 0; l < u->L; l++) {
        rc = prepare_layer(u, l);
        if (rc)
            goto out;
    }
    *out = u;
    u = NULL;
out:
    ss_unroll_free(u);
    return rc;
}

void ss_unroll_free(ss_unroll *u)
{
    if (!u)
        return;
    for (int l = 0; l < SS_MODEL_MAX_LAYERS; l++) {
        free(u->layers[l].bias_packed);
        free(u->layers[l].wx_packed);
    }
    free(u->proj_out);
    free(u->scratch);
    free(u->state);
    free(u->ybuf);
    free(u->pre);
    free(u);
}

/* Floats of per-layer state for B rows. */
static size_t state_floats(const ss_unroll *u, int B)
{
    size_t per = 0;
    for (int i = 0; i < u->n_states; i++)
        per += (size_t)u->state_w[i];
    return per * (size_t)B;
}

/* Make *p hold at least need*width floats (capacity counted in rows).
 * Contents are scratch; new memory is zeroed so that BLAS never reads
 * uninitialised memory (rows of masked batch entries). */
static int grow(float **p, size_t *cap, size_t need, size_t width)
{
    if (need <= *cap && *p)
        return 0;
    if (width == 0 || need > SIZE_MAX / sizeof(float) / width)
        return SS_ERR_NOMEM;
    float *n = calloc(need * width, sizeof(float));
    if (!n)
        return SS_ERR_NOMEM;
    free(*p);
    *p = n;
    *cap = need;
    return 0;
}

/* Grow the buffers to `rows` = T*B rows and B batch rows; never shrinks. */
static int ensure(ss_unroll *u, size_t rows, int B, bool need_ybuf)
{
    int rc = 0;
    if (rows == 0)
        rows = 1;
    rc = grow(&u->pre, &u->pre_cap, rows, (size_t)u->gw);
    if (!rc && need_ybuf)
        rc = grow(&u->ybuf, &u->ybuf_cap, rows, (size_t)u->P);
    if (rc || (size_t)B <= u->b_cap)
        return rc;
    size_t bcap = u->b_cap;
    rc = grow(&u->state, &bcap, (size_t)B, state_floats(u, 1));
    bcap = u->b_cap;
    if (!rc)
        rc = grow(&u->scratch, &bcap, (size_t)B, 3 * (size_t)u->H);
    bcap = u->b_cap;
    if (!rc)
        rc = grow(&u->proj_out, &bcap, (size_t)B, (size_t)u->P);
    if (!rc)
        u->b_cap = (size_t)B;
    return rc;
}

/* State i of the workspace for a batch of B rows (states packed in order). */
static float *state_ptr(ss_unroll *u, int i, int B)
{
    size_t off = 0;
    for (int k = 0; k < i; k++)
        off += (size_t)u->state_w[k] * (size_t)B;
    return u->state + off;
}

static void sgemm(int M, int N, int K, const float *A, int lda, const float *Bm, int ldb,
                  float beta, float *C, int ldc)
{
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, N, K, 1.0f, A, lda, Bm, ldb,
                beta, C, ldc);
}

/* One layer over steps [0, teff): x [teff*B, in] in, y [teff*B, P] out. */
static void run_layer(ss_unroll *u, int l, int teff, int B, const float *x,
                      const int32_t *lengths, float *y)
{
    const ss_model *m = u->m;
    const unroll_layer *ul = &u->layers[l];
    const int H = u->H, P = u->P, gw = u->gw;
    float *c = NULL, *h;
    if (m->cell == SS_CELL_LSTM) {
        c = state_ptr(u, 2 * l, B);
        h = state_ptr(u, 2 * l + 1, B);
    } else {
        h = state_ptr(u, l, B);
    }
    const size_t step = (size_t)B * (size_t)gw;
    sgemm(teff * B, gw, ul->in, x, ul->in, ul->wx, gw, 0.0f, u->pre, gw);
    for (int t = 0; t < teff; t++) {
        float *g = u->pre + (size_t)t * step;
        float *yt = y + (size_t)t * (size_t)B * (size_t)P;
        ss_cell_mask mk = {lengths, t};
        switch (m->cell) {
        case SS_CELL_BASIC_RNN:
            sgemm(B, H, H, h, H, ul->wh, ul->ldwh, 1.0f, g, gw);
            ss_cell_basic(&ul->args, B, mk, g, h, yt, P);
            break;
        case SS_CELL_LSTM:
            sgemm(B, gw, P, h, P, ul->wh, ul->ldwh, 1.0f, g, gw);
            if (m->num_proj == 0) {
                ss_cell_lstm(&ul->args, B, mk, g, c, h, yt, P);
                break;
            }
            ss_cell_lstm(&ul->args, B, mk, g, c, u->scratch, NULL, 0);
            sgemm(B, P, H, u->scratch, H, m->layers[l].proj, P, 0.0f, u->proj_out, P);
            for (int b = 0; b < B; b++) {
                float *yr = yt + (size_t)b * (size_t)P;
                if (lengths && t >= lengths[b]) {
                    memset(yr, 0, (size_t)P * sizeof(float));
                    continue;
                }
                memcpy(h + (size_t)b * (size_t)P, u->proj_out + (size_t)b * (size_t)P,
                       (size_t)P * sizeof(float));
                memcpy(yr, u->proj_out + (size_t)b * (size_t)P, (size_t)P * sizeof(float));
            }
            break;
        case SS_CELL_GRU:
            if (m->reset_after) {
                sgemm(B, gw, H, h, H, ul->wh, ul->ldwh, 0.0f, u->scratch, gw);
                ss_cell_gru_ra(&ul->args, B, mk, g, u->scratch, h, yt, P);
                break;
            }
            sgemm(B, 2 * H, H, h, H, ul->wh, ul->ldwh, 1.0f, g, gw);
            ss_cell_gru_gates(&ul->args, B, mk, g, h, u->scratch);
            sgemm(B, H, H, u->scratch, H, ul->wch, H, 1.0f, g + 2 * (size_t)H, gw);
            ss_cell_gru_cand(&ul->args, B, mk, g, h, yt, P);
            break;
        }
    }
}

int ss_unroll_run(ss_unroll *u, int T, int B, const float *inputs,
                  const int32_t *lengths, const float *const *states_in,
                  float *outputs, float *const *states_out)
{
    if (!u || T < 0 || B < 0 || (T > 0 && B > 0 && !inputs))
        return SS_ERR_INVALID;
    if (B > 0 && T > INT_MAX / B)
        return SS_ERR_INVALID;
    int teff = T;
    if (lengths) {
        teff = 0;
        for (int b = 0; b < B; b++) {
            if (lengths[b] < 0 || lengths[b] > T)
                return SS_ERR_INVALID;
            if (lengths[b] > teff)
                teff = lengths[b];
        }
    }
    size_t rows = (size_t)teff * (size_t)B;
    bool need_ybuf = u->L > 1 || !outputs;
    int rc = ensure(u, rows, B, need_ybuf);
    if (rc)
        return rc;
    for (int i = 0; i < u->n_states; i++) {
        size_t n = (size_t)B * (size_t)u->state_w[i];
        float *s = state_ptr(u, i, B);
        if (states_in && states_in[i])
            memcpy(s, states_in[i], n * sizeof(float));
        else
            memset(s, 0, n * sizeof(float));
    }
    if (rows > 0) {
        const float *x = inputs;
        for (int l = 0; l < u->L; l++) {
            float *y = (l == u->L - 1 && outputs) ? outputs : u->ybuf;
            run_layer(u, l, teff, B, x, lengths, y);
            x = u->ybuf;
        }
    }
    if (outputs && teff < T)
        memset(outputs + rows * (size_t)u->P, 0,
               (size_t)(T - teff) * (size_t)B * (size_t)u->P * sizeof(float));
    if (states_out) {
        for (int i = 0; i < u->n_states; i++) {
            if (states_out[i])
                memcpy(states_out[i], state_ptr(u, i, B),
                       (size_t)B * (size_t)u->state_w[i] * sizeof(float));
        }
    }
    return 0;
}

double ss_unroll_flops(const ss_model *m, int T, int B)
{
    const double tb = (double)T * (double)B;
    const double H = m->num_units;
    const double P = m->num_proj > 0 ? m->num_proj : H;
    double f = 0.0;
    for (int l = 0; l < m->num_layers; l++) {
        double in = l == 0 ? m->input_size : P;
        switch (m->cell) {
        case SS_CELL_LSTM:
            f += 2.0 * tb * (in + P) * 4.0 * H;
            if (m->num_proj > 0)
                f += 2.0 * tb * H * P;
            break;
        case SS_CELL_GRU:
            f += 2.0 * tb * (in + H) * 3.0 * H;
            break;
        default:
            f += 2.0 * tb * (in + H) * H;
            break;
        }
    }
    return f;
}
