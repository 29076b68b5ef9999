/* unroll -- TensorFlow static_rnn over one segment (see unroll.h).
 *
 * Each layer runs over all computed steps before the next layer starts
 * (equivalent to MultiRNNCell inside static_rnn, because layer l+1 at step
 * t only needs layer l's output at step t). Per step and layer:
 *   1. one product [x_t | h] . W with the whole TF kernel [in+R, G*H]
 *      (pgemm.c: the weight was packed once by ss_unroll_new, so nothing
 *      is re-packed per step); gru reset_after=false needs a second one,
 *      [x_t | r*h] . W_c, gru reset_after=true multiplies x_t and h
 *      separately because r scales h . R; an lstm projection adds m . W_p;
 *   2. the fused gate math (cell.c) adds the bias, applies the
 *      nonlinearities and masks rows past their length.
 *
 * Threads: batch rows are independent in an RNN, so the batch is cut into
 * one contiguous block of rows per thread and every thread runs the whole
 * unroll (all layers, all steps, products and gate math) on its block. No
 * synchronisation happens inside the step loop, only at the start and end
 * of ss_unroll_run. The caller's thread runs block 0; the others run on
 * persistent workers started by ss_unroll_set_threads. Every element of a
 * product is summed in the same order whatever the block (pgemm.h), so the
 * result does not depend on the thread count, bit for bit.
 */
#include "unroll.h"

#include <limits.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "cell.h"
#include "pgemm.h"
#include "ss_error.h"

/* Per-layer weights, packed once by ss_unroll_new. */
typedef struct unroll_layer {
    int in;                 /* input width of the layer */
    int rw;                 /* width of the recurrent input h (P or H) */
    ss_pgemm_w w;           /* basic, lstm: kernel [in+R, G*H]; gru: gates kernel
                             * [in+H, 2H]; gru reset_after: kernel [in, 3H] */
    ss_pgemm_w w2;          /* gru: candidate kernel [in+H, H]; gru reset_after:
                             * recurrent kernel [H, 3H]; else unused */
    ss_pgemm_w wp;          /* lstm num_proj: projection [H, P]; else unused */
    float *bias_packed;     /* owned: gru reset_after=false [3H] (r, u, c), else NULL */
    ss_cell_args args;      /* constants for the gate math */
} unroll_layer;

/* Per-thread scratch and the rows the thread works on in the current run. */
typedef struct unroll_part {
    int b0;                 /* first batch row of the block */
    int nb;                 /* rows in the block (0: nothing to do) */
    size_t cap;             /* rows the buffers below hold */
    float *ap;              /* pgemm scratch for cap rows */
    float *g;               /* [cap, gw] pre-activations of one step */
    float *aux;             /* [cap, 3H]: gru r*h or h.R, lstm m before projection */
    float *proj;            /* lstm num_proj: [cap, P] */
} unroll_part;

/* Arguments of the ss_unroll_run in progress, read by every thread. */
typedef struct unroll_call {
    int teff;               /* steps computed */
    int B;                  /* batch rows */
    const float *inputs;    /* [T, B, input_size] */
    const int32_t *lengths; /* [B] or NULL */
    float *outputs;         /* [T, B, P] or NULL */
} unroll_call;

struct ss_unroll {
    const ss_model *m;      /* borrowed; outlives the workspace */
    int H;                  /* num_units */
    int P;                  /* output width of every layer (num_proj or H) */
    int gw;                 /* columns of the pre-activation buffer (G*H) */
    int L;                  /* number of layers */
    int n_states;           /* states in the flattened TF order */
    int state_w[2 * SS_MODEL_MAX_LAYERS]; /* width of each state */
    unroll_layer layers[SS_MODEL_MAX_LAYERS]; /* L used */
    size_t ybuf_cap;        /* T*B rows ybuf can hold */
    float *ybuf;            /* [ybuf_cap, P] outputs of inner layers */
    size_t b_cap;           /* batch rows the state buffer holds */
    float *state;           /* states packed in order, each [B, width] */
    int threads;            /* parts per run: the caller plus threads-1 workers */
    unroll_part *parts;     /* owned: [threads] */
    pthread_t *workers;     /* owned: [threads-1], running while threads > 1 */
    pthread_mutex_t mu;     /* guards gen, pending, quit */
    pthread_cond_t go;      /* signalled when gen changes or quit is set */
    pthread_cond_t done;    /* signalled when pending drops to 0 */
    unsigned long gen;      /* run counter: workers start a part when it changes */
    int pending;            /* workers still running the current run */
    bool quit;              /* workers exit */
    bool sync_init;         /* mu, go, done are initialised */
    unroll_call call;       /* the run in progress */
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
    /* Keep every matrix dimension an int (G*H and in+P included). */
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
    const int H = u->H, in = ly->in;
    int rc = 0;
    ul->in = in;
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
    switch (m->cell) {
    case SS_CELL_BASIC_RNN:
    case SS_CELL_LSTM:
        rc = ss_pgemm_pack(&ul->w, ly->kernel, in + ul->rw, u->gw, u->gw);
        if (!rc && m->num_proj > 0)
            rc = ss_pgemm_pack(&ul->wp, ly->proj, H, u->P, u->P);
        break;
    case SS_CELL_GRU:
        if (m->reset_after) {
            rc = ss_pgemm_pack(&ul->w, ly->kernel, in, 3 * H, 3 * H);
            if (!rc)
                rc = ss_pgemm_pack(&ul->w2, ly->recurrent_kernel, H, 3 * H, 3 * H);
            break;
        }
        rc = ss_pgemm_pack(&ul->w, ly->kernel, in + H, 2 * H, 2 * H);
        if (!rc)
            rc = ss_pgemm_pack(&ul->w2, ly->cand_kernel, in + H, H, H);
        if (rc)
            break;
        ul->bias_packed = malloc(3 * (size_t)H * sizeof(float));
        if (!ul->bias_packed)
            return SS_ERR_NOMEM;
        memcpy(ul->bias_packed, ly->bias, 2 * (size_t)H * sizeof(float));
        memcpy(ul->bias_packed + 2 * (size_t)H, ly->cand_bias, (size_t)H * sizeof(float));
        ul->args.bias = ul->bias_packed;
        break;
    }
    return rc;
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
    u->parts = calloc(1, sizeof(*u->parts));
    if (!u->parts) {
        rc = SS_ERR_NOMEM;
        goto out;
    }
    u->threads = 1;
    *out = u;
    u = NULL;
out:
    ss_unroll_free(u);
    return rc;
}

static void part_free(unroll_part *p)
{
    free(p->proj);
    free(p->aux);
    free(p->g);
    free(p->ap);
    memset(p, 0, sizeof *p);
}

/* Stop and join every worker; parts beyond the first are released. */
static void stop_workers(ss_unroll *u)
{
    if (u->threads > 1) {
        pthread_mutex_lock(&u->mu);
        u->quit = true;
        pthread_cond_broadcast(&u->go);
        pthread_mutex_unlock(&u->mu);
        for (int i = 0; i < u->threads - 1; i++)
            pthread_join(u->workers[i], NULL);
        u->quit = false;
        for (int i = 1; i < u->threads; i++)
            part_free(&u->parts[i]);
    }
    free(u->workers);
    u->workers = NULL;
    u->threads = 1;
}

void ss_unroll_free(ss_unroll *u)
{
    if (!u)
        return;
    if (u->parts) {
        stop_workers(u);
        part_free(&u->parts[0]);
        free(u->parts);
    }
    if (u->sync_init) {
        pthread_cond_destroy(&u->done);
        pthread_cond_destroy(&u->go);
        pthread_mutex_destroy(&u->mu);
    }
    for (int l = 0; l < SS_MODEL_MAX_LAYERS; l++) {
        ss_pgemm_w_free(&u->layers[l].w);
        ss_pgemm_w_free(&u->layers[l].w2);
        ss_pgemm_w_free(&u->layers[l].wp);
        free(u->layers[l].bias_packed);
    }
    free(u->state);
    free(u->ybuf);
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
 * Contents are scratch; new memory is zeroed so that a product never reads
 * uninitialised memory (rows of masked batch entries). 64-byte aligned for
 * the pgemm scratch. */
static int grow(float **p, size_t *cap, size_t need, size_t width)
{
    if (need <= *cap && *p)
        return 0;
    if (width == 0 || need > SIZE_MAX / sizeof(float) / width - 16)
        return SS_ERR_NOMEM;
    size_t bytes = (need * width * sizeof(float) + 63) & ~(size_t)63;
    float *n = aligned_alloc(64, bytes);
    if (!n)
        return SS_ERR_NOMEM;
    memset(n, 0, bytes);
    free(*p);
    *p = n;
    *cap = need;
    return 0;
}

/* Floats of pgemm scratch for `rows` rows: the largest product's. */
static size_t ap_floats(const ss_unroll *u, size_t rows)
{
    size_t mx = 0;
    for (int l = 0; l < u->L; l++) {
        const unroll_layer *ul = &u->layers[l];
        const ss_pgemm_w *ws[3] = {&ul->w, &ul->w2, &ul->wp};
        for (int i = 0; i < 3; i++) {
            if (!ws[i]->data)
                continue;
            size_t f = ss_pgemm_scratch_floats(ws[i], (int)rows);
            if (f > mx)
                mx = f;
        }
    }
    return mx;
}

static int part_grow(ss_unroll *u, unroll_part *p, size_t rows)
{
    if (rows <= p->cap && p->g)
        return 0;
    if (rows > INT_MAX)
        return SS_ERR_NOMEM;
    size_t c;
    int rc;
    c = p->cap;
    rc = grow(&p->g, &c, rows, (size_t)u->gw);
    c = p->cap;
    if (!rc)
        rc = grow(&p->aux, &c, rows, 3 * (size_t)u->H);
    c = p->cap;
    if (!rc)
        rc = grow(&p->proj, &c, rows, (size_t)u->P);
    /* The pgemm scratch is one block sized for `rows`: it is reallocated
     * whenever the rows grow (its capacity is not counted in rows). */
    c = 0;
    if (!rc)
        rc = grow(&p->ap, &c, 1, ap_floats(u, rows));
    if (!rc)
        p->cap = rows;
    return rc;
}

/* Cut B rows into the parts: contiguous blocks, sizes differing by <= 1. */
static void split_rows(ss_unroll *u, int B)
{
    const int n = u->threads, base = B / n, extra = B % n;
    int b0 = 0;
    for (int i = 0; i < n; i++) {
        int nb = base + (i < extra ? 1 : 0);
        u->parts[i].b0 = b0;
        u->parts[i].nb = nb;
        b0 += nb;
    }
}

/* Grow the buffers for T*B rows and B batch rows; never shrinks. */
static int ensure(ss_unroll *u, size_t rows, int B, bool need_ybuf)
{
    int rc = 0;
    if (need_ybuf)
        rc = grow(&u->ybuf, &u->ybuf_cap, rows ? rows : 1, (size_t)u->P);
    if (!rc && (size_t)B > u->b_cap)
        rc = grow(&u->state, &u->b_cap, (size_t)B, state_floats(u, 1));
    for (int i = 0; !rc && i < u->threads; i++)
        rc = part_grow(u, &u->parts[i], (size_t)(u->parts[i].nb > 0 ? u->parts[i].nb : 1));
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

/* Layer l over steps [0, teff) for rows [b0, b0+nb) of the batch:
 * x [teff, B, in] in, y [teff, B, P] out (row stride B between steps). */
static void run_layer(ss_unroll *u, unroll_part *pt, int l, int teff, int B, const float *x,
                      const int32_t *lengths, float *y)
{
    const ss_model *m = u->m;
    const unroll_layer *ul = &u->layers[l];
    const int H = u->H, P = u->P, gw = u->gw, in = ul->in, nb = pt->nb, b0 = pt->b0;
    float *c = NULL, *h;
    if (m->cell == SS_CELL_LSTM) {
        c = state_ptr(u, 2 * l, B) + (size_t)b0 * (size_t)H;
        h = state_ptr(u, 2 * l + 1, B) + (size_t)b0 * (size_t)P;
    } else {
        h = state_ptr(u, l, B) + (size_t)b0 * (size_t)H;
    }
    const int32_t *len = lengths ? lengths + b0 : NULL;
    /* Steps past this block's longest row only output zeros. */
    int tp = teff;
    if (len) {
        tp = 0;
        for (int b = 0; b < nb; b++)
            tp = len[b] > tp ? len[b] : tp;
    }
    float *g = pt->g, *aux = pt->aux, *ap = pt->ap;
    for (int t = 0; t < teff; t++) {
        const float *xt = x + ((size_t)t * (size_t)B + (size_t)b0) * (size_t)in;
        float *yt = y + ((size_t)t * (size_t)B + (size_t)b0) * (size_t)P;
        if (t >= tp) {
            memset(yt, 0, (size_t)nb * (size_t)P * sizeof(float));
            continue;
        }
        ss_cell_mask mk = {len, t};
        switch (m->cell) {
        case SS_CELL_BASIC_RNN:
            ss_pgemm(&ul->w, nb, xt, in, in, h, H, g, gw, false, ap);
            ss_cell_basic(&ul->args, nb, mk, g, h, yt, P);
            break;
        case SS_CELL_LSTM:
            ss_pgemm(&ul->w, nb, xt, in, in, h, P, g, gw, false, ap);
            if (m->num_proj == 0) {
                ss_cell_lstm(&ul->args, nb, mk, g, c, h, yt, P);
                break;
            }
            ss_cell_lstm(&ul->args, nb, mk, g, c, aux, NULL, 0);
            ss_pgemm(&ul->wp, nb, aux, H, H, NULL, 0, pt->proj, P, false, ap);
            for (int b = 0; b < nb; b++) {
                float *yr = yt + (size_t)b * (size_t)P;
                if (len && t >= len[b]) {
                    memset(yr, 0, (size_t)P * sizeof(float));
                    continue;
                }
                memcpy(h + (size_t)b * (size_t)P, pt->proj + (size_t)b * (size_t)P,
                       (size_t)P * sizeof(float));
                memcpy(yr, pt->proj + (size_t)b * (size_t)P, (size_t)P * sizeof(float));
            }
            break;
        case SS_CELL_GRU:
            if (m->reset_after) {
                ss_pgemm(&ul->w, nb, xt, in, in, NULL, 0, g, gw, false, ap);
                ss_pgemm(&ul->w2, nb, h, H, H, NULL, 0, aux, gw, false, ap);
                ss_cell_gru_ra(&ul->args, nb, mk, g, aux, h, yt, P);
                break;
            }
            ss_pgemm(&ul->w, nb, xt, in, in, h, H, g, gw, false, ap);
            ss_cell_gru_gates(&ul->args, nb, mk, g, h, aux);
            ss_pgemm(&ul->w2, nb, xt, in, in, aux, H, g + 2 * (size_t)H, gw, false, ap);
            ss_cell_gru_cand(&ul->args, nb, mk, g, h, yt, P);
            break;
        }
    }
}

/* Every layer for one block of rows (one thread's share of a run). */
static void run_part(ss_unroll *u, int idx)
{
    unroll_part *pt = &u->parts[idx];
    const unroll_call *c = &u->call;
    if (pt->nb == 0)
        return;
    const float *x = c->inputs;
    for (int l = 0; l < u->L; l++) {
        float *y = (l == u->L - 1 && c->outputs) ? c->outputs : u->ybuf;
        run_layer(u, pt, l, c->teff, c->B, x, c->lengths, y);
        x = u->ybuf;
    }
}

/* Worker thread: runs part `idx` of every run until quit. */
typedef struct worker_arg {
    ss_unroll *u;           /* the workspace */
    int idx;                /* part index, >= 1 */
    unsigned long gen;      /* u->gen when started: runs after it are new */
} worker_arg;

static void *worker_main(void *arg)
{
    worker_arg wa = *(worker_arg *)arg;
    free(arg);
    ss_unroll *u = wa.u;
    /* Not u->gen read here: a run may already have started. */
    unsigned long seen = wa.gen;
    pthread_mutex_lock(&u->mu);
    for (;;) {
        while (u->gen == seen && !u->quit)
            pthread_cond_wait(&u->go, &u->mu);
        if (u->quit)
            break;
        seen = u->gen;
        pthread_mutex_unlock(&u->mu);
        run_part(u, wa.idx);
        pthread_mutex_lock(&u->mu);
        if (--u->pending == 0)
            pthread_cond_signal(&u->done);
    }
    pthread_mutex_unlock(&u->mu);
    return NULL;
}

int ss_unroll_set_threads(ss_unroll *u, int n)
{
    int rc = 0;
    if (!u || n < 1 || n > SS_UNROLL_THREADS_MAX)
        return SS_ERR_INVALID;
    if (n == u->threads)
        return 0;
    stop_workers(u);
    if (n == 1)
        return 0;
    if (!u->sync_init) {
        if (pthread_mutex_init(&u->mu, NULL))
            return SS_ERR_NOMEM;
        if (pthread_cond_init(&u->go, NULL)) {
            pthread_mutex_destroy(&u->mu);
            return SS_ERR_NOMEM;
        }
        if (pthread_cond_init(&u->done, NULL)) {
            pthread_cond_destroy(&u->go);
            pthread_mutex_destroy(&u->mu);
            return SS_ERR_NOMEM;
        }
        u->sync_init = true;
    }
    unroll_part *parts = realloc(u->parts, (size_t)n * sizeof(*parts));
    if (!parts)
        return SS_ERR_NOMEM;
    u->parts = parts;
    memset(parts + 1, 0, (size_t)(n - 1) * sizeof(*parts));
    u->workers = calloc((size_t)n - 1, sizeof(*u->workers));
    if (!u->workers)
        return SS_ERR_NOMEM;
    for (int i = 1; i < n; i++) {
        worker_arg *wa = malloc(sizeof(*wa));
        if (!wa) {
            rc = SS_ERR_NOMEM;
            goto out;
        }
        *wa = (worker_arg){u, i, u->gen};
        if (pthread_create(&u->workers[i - 1], NULL, worker_main, wa)) {
            free(wa);
            rc = SS_ERR_NOMEM;
            goto out;
        }
        /* Counted as soon as it runs, so stop_workers joins exactly these. */
        u->threads = i + 1;
    }
out:
    if (rc)
        stop_workers(u);
    return rc;
}

int ss_unroll_threads(const ss_unroll *u)
{
    return u ? u->threads : 0;
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
    split_rows(u, B);
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
        u->call = (unroll_call){teff, B, inputs, lengths, outputs};
        int busy = u->threads > B ? B : u->threads;
        if (busy > 1) {
            pthread_mutex_lock(&u->mu);
            u->pending = u->threads - 1;
            u->gen++;
            pthread_cond_broadcast(&u->go);
            pthread_mutex_unlock(&u->mu);
        }
        run_part(u, 0);
        if (busy > 1) {
            pthread_mutex_lock(&u->mu);
            while (u->pending > 0)
                pthread_cond_wait(&u->done, &u->mu);
            pthread_mutex_unlock(&u->mu);
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
