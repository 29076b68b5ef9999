/* unroll -- TensorFlow static_rnn over one segment (see unroll.h): the
 * API, weight packing into unit slices, buffers, threads and the bf16
 * self-check. The step loop is unroll_step.c; the layout unroll_internal.h.
 *
 * Each layer runs over all computed steps before the next layer starts
 * (equivalent to MultiRNNCell inside static_rnn, because layer l+1 at step
 * t only needs layer l's output at step t).
 *
 * Threads: the caller runs part 0, persistent workers the others; a run
 * starts and ends at two spin barriers (no mutex anywhere). Split by rows,
 * each thread runs its contiguous block of batch rows through every slice
 * of every layer and step with no synchronisation inside; split by units,
 * each thread runs one unit slice for all rows and the threads meet at a
 * barrier twice per step (oneDNN's split for small batches). The choice
 * is made per call: the split that pads fewer rows into the
 * micro-kernel's tiles for the same columns; ties go to rows. Every
 * element of a product is one dot product summed in k order, and slices
 * cut the gate blocks at multiples of 16 units, so neither the thread
 * count nor the split changes a bit of the result.
 */
#include "unroll.h"

#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "pgemm_bf16.h"
#include "ss_error.h"
#include "unroll_internal.h"
#include "vmath.h"

int ss_precision_parse(const char *s, ss_precision *out)
{
    if (s && !strcmp(s, "fp32")) {
        *out = SS_PRECISION_FP32;
        return 0;
    }
    if (s && !strcmp(s, "bf16")) {
        *out = SS_PRECISION_BF16;
        return 0;
    }
    return SS_ERR_INVALID;
}

const char *ss_precision_name(ss_precision p)
{
    return p == SS_PRECISION_BF16 ? "bf16" : "fp32";
}

const char *ss_precision_unsupported(ss_precision p)
{
    if (p != SS_PRECISION_BF16)
        return NULL;
    if (ss_vmath_has_bf16())
        return NULL;
    const char *off = getenv(SS_CPU_NO_BF16_ENV);
    if (off && *off && strcmp(off, "0") != 0)
        return "--precision bf16 needs AVX512_BF16, reported absent (" SS_CPU_NO_BF16_ENV
               " is set); use --precision fp32";
    return "--precision bf16 needs a CPU with AVX512_BF16 (vdpbf16ps), which this one "
           "lacks; use --precision fp32";
}

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
    if (m->input_size > INT_MAX / 4)
        return SS_ERR_INVALID;
    size_t want = m->cell == SS_CELL_LSTM ? 2 * (size_t)m->num_layers : (size_t)m->num_layers;
    if (m->n_states != want)
        return SS_ERR_INVALID;
    int in = m->input_size;
    for (int l = 0; l < m->num_layers; l++) {
        const ss_layer *ly = &m->layers[l];
        const int H = ss_model_units(m, l), pj = ss_model_proj(m, l), P = ss_model_layer_out(m, l);
        /* Keep every matrix dimension an int (G*H and in+P included). */
        if (H < 1 || pj < 0 || H > INT_MAX / 4 / 4 || P > INT_MAX / 4)
            return SS_ERR_INVALID;
        if (ly->in != in || !ly->kernel || !ly->bias)
            return SS_ERR_INVALID;
        if (m->cell == SS_CELL_GRU && !m->reset_after && (!ly->cand_kernel || !ly->cand_bias))
            return SS_ERR_INVALID;
        if (m->cell == SS_CELL_GRU && m->reset_after && !ly->recurrent_kernel)
            return SS_ERR_INVALID;
        if (m->cell == SS_CELL_LSTM && m->use_peepholes &&
            (!ly->w_i_diag || !ly->w_f_diag || !ly->w_o_diag))
            return SS_ERR_INVALID;
        if (pj > 0 && !ly->proj)
            return SS_ERR_INVALID;
        in = P;
    }
    if (m->output_size != in)
        return SS_ERR_INVALID;
    return 0;
}

/* Pack columns {g*blk + c0 + j : g < G, j < nc} of W [K, ldw] (gate
 * blocks of blk columns) as one [K, G*nc] weight. */
static int pack_cols(ss_precision prec, ss_pgemm_w *pw, const float *W, int K, int ldw, int G,
                     int blk, int c0, int nc)
{
    const size_t w = (size_t)G * (size_t)nc;
    float *tmp = malloc((size_t)K * w * sizeof(float));
    if (!tmp)
        return SS_ERR_NOMEM;
    for (size_t k = 0; k < (size_t)K; k++)
        for (int g = 0; g < G; g++)
            memcpy(tmp + k * w + (size_t)g * (size_t)nc,
                   W + k * (size_t)ldw + (size_t)g * (size_t)blk + (size_t)c0,
                   (size_t)nc * sizeof(float));
    int rc = prec == SS_PRECISION_BF16 ? ss_pgemm_pack_bf16(pw, tmp, K, (int)w, (int)w)
                                       : ss_pgemm_pack(pw, tmp, K, (int)w, (int)w);
    free(tmp);
    return rc;
}

static void slice_free(unroll_slice *sl)
{
    ss_pgemm_w_free(&sl->w);
    ss_pgemm_w_free(&sl->w2);
    ss_pgemm_w_free(&sl->wp);
    free(sl->bias);
    memset(sl, 0, sizeof *sl);
}

static void slices_free(unroll_slice *sl, int S)
{
    if (!sl)
        return;
    for (int s = 0; s < S; s++)
        slice_free(&sl[s]);
    free(sl);
}

/* Copy nu floats of each of G blocks (stride blk, from c0) into dst. */
static void gather(float *dst, const float *src, int G, int blk, int c0, int nu)
{
    for (int g = 0; g < G; g++)
        memcpy(dst + (size_t)g * (size_t)nu, src + (size_t)g * (size_t)blk + (size_t)c0,
               (size_t)nu * sizeof(float));
}

/* Pack slice sl (units [sl->u0, +nu), projection columns [p0, +np)) of
 * layer l. */
static int pack_slice(const ss_unroll *u, int l, unroll_slice *sl)
{
    const ss_model *m = u->m;
    const ss_layer *ly = &m->layers[l];
    const unroll_layer *ul = &u->layers[l];
    const int H = ul->H, P = ul->P, in = ly->in, u0 = sl->u0, nu = sl->nu;
    const int rw = ul->rw;
    int rc = 0;
    sl->args = (ss_cell_args){.H = nu, .ld = H, .act = m->activation,
                              .forget_bias = m->forget_bias,
                              .has_clip = m->cell == SS_CELL_LSTM && m->has_cell_clip,
                              .clip = m->cell_clip};
    if (m->cell == SS_CELL_LSTM && m->use_peepholes) {
        sl->args.w_i_diag = ly->w_i_diag + u0;
        sl->args.w_f_diag = ly->w_f_diag + u0;
        sl->args.w_o_diag = ly->w_o_diag + u0;
    }
    if (sl->np > 0)
        rc = pack_cols(u->prec, &sl->wp, ly->proj, H, P, 1, P, sl->p0, sl->np);
    if (rc || nu == 0)
        return rc;
    sl->bias = malloc(6 * (size_t)nu * sizeof(float));
    if (!sl->bias)
        return SS_ERR_NOMEM;
    sl->args.bias = sl->bias;
    switch (m->cell) {
    case SS_CELL_BASIC_RNN:
    case SS_CELL_LSTM:
        gather(sl->bias, ly->bias, u->G, H, u0, nu);
        rc = pack_cols(u->prec, &sl->w, ly->kernel, in + rw, u->G * H, u->G, H, u0, nu);
        break;
    case SS_CELL_GRU:
        if (m->reset_after) {
            gather(sl->bias, ly->bias, 3, H, u0, nu);
            gather(sl->bias + 3 * (size_t)nu, ly->bias + 3 * (size_t)H, 3, H, u0, nu);
            rc = pack_cols(u->prec, &sl->w, ly->kernel, in, 3 * H, 3, H, u0, nu);
            if (!rc)
                rc = pack_cols(u->prec, &sl->w2, ly->recurrent_kernel, H, 3 * H, 3, H, u0, nu);
            break;
        }
        gather(sl->bias, ly->bias, 2, H, u0, nu);
        gather(sl->bias + 2 * (size_t)nu, ly->cand_bias, 1, H, u0, nu);
        rc = pack_cols(u->prec, &sl->w, ly->kernel, in + H, 2 * H, 2, H, u0, nu);
        if (!rc)
            rc = pack_cols(u->prec, &sl->w2, ly->cand_kernel, in + H, H, 1, H, u0, nu);
        break;
    }
    return rc;
}

/* Start and width of part s of n over w columns (multiples of the slice
 * alignment, the last one takes the rest). */
static void cut(int w, int n, int s, int *c0, int *nc)
{
    int q = (w + n - 1) / n;
    q = (q + SS_UNROLL_SLICE_ALIGN - 1) / SS_UNROLL_SLICE_ALIGN * SS_UNROLL_SLICE_ALIGN;
    long a = (long)q * s;
    *c0 = a < w ? (int)a : w;
    *nc = w - *c0 < q ? w - *c0 : q;
}

/* Cut every layer into S slices (packed anew); on failure the old slices
 * stay. */
static int reslice(ss_unroll *u, int S)
{
    unroll_slice *ns[SS_MODEL_MAX_LAYERS] = {0};
    int rc = 0;
    for (int l = 0; l < u->L && !rc; l++) {
        ns[l] = calloc((size_t)S, sizeof(*ns[l]));
        if (!ns[l]) {
            rc = SS_ERR_NOMEM;
            break;
        }
        for (int s = 0; s < S && !rc; s++) {
            cut(u->layers[l].H, S, s, &ns[l][s].u0, &ns[l][s].nu);
            if (u->layers[l].proj)
                cut(u->layers[l].P, S, s, &ns[l][s].p0, &ns[l][s].np);
            rc = pack_slice(u, l, &ns[l][s]);
        }
    }
    for (int l = 0; l < u->L; l++) {
        if (rc) {
            slices_free(ns[l], S);
        } else {
            slices_free(u->layers[l].sl, u->S);
            u->layers[l].sl = ns[l];
        }
    }
    if (!rc)
        u->S = S;
    return rc;
}

static int workspace_new(ss_unroll **out, const ss_model *m, ss_precision prec)
{
    int rc = 0;
    ss_unroll *u = NULL;
    if (!out || !m)
        return SS_ERR_INVALID;
    *out = NULL;
    if (prec != SS_PRECISION_FP32 && prec != SS_PRECISION_BF16)
        return SS_ERR_INVALID;
    if (ss_precision_unsupported(prec))
        return SS_ERR_INVALID;
    rc = check_model(m);
    if (rc)
        goto out;
    u = calloc(1, sizeof(*u));
    if (!u) {
        rc = SS_ERR_NOMEM;
        goto out;
    }
    u->m = m;
    u->prec = prec;
    u->P = m->output_size;
    u->G = gates_of(m);
    u->L = m->num_layers;
    u->n_states = (int)m->n_states;
    for (int l = 0; l < u->L; l++) {
        unroll_layer *ul = &u->layers[l];
        ul->in = m->layers[l].in;
        ul->H = ss_model_units(m, l);
        ul->P = ss_model_layer_out(m, l);
        ul->proj = ss_model_proj(m, l) > 0;
        ul->rw = m->cell == SS_CELL_LSTM ? ul->P : ul->H;
        u->Hmax = ul->H > u->Hmax ? ul->H : u->Hmax;
        u->Pmax = ul->P > u->Pmax ? ul->P : u->Pmax;
        if (m->cell == SS_CELL_LSTM) {
            u->state_w[2 * l] = ul->H;
            u->state_w[2 * l + 1] = ul->P;
        } else {
            u->state_w[l] = ul->H;
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
    u->parts = calloc(1, sizeof(*u->parts));
    if (!u->parts) {
        rc = SS_ERR_NOMEM;
        goto out;
    }
    u->threads = 1;
    u->last = SS_UNROLL_SPLIT_ROWS;
    ss_barrier_init(&u->start, 1);
    ss_barrier_init(&u->end, 1);
    ss_barrier_init(&u->step, 1);
    rc = reslice(u, 1);
    if (rc)
        goto out;
    *out = u;
    u = NULL;
out:
    ss_unroll_free(u);
    return rc;
}

int ss_unroll_new(ss_unroll **out, const ss_model *m)
{
    return workspace_new(out, m, SS_PRECISION_FP32);
}

static float check_rnd(uint64_t *s)
{
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((*s >> 40) & 0xffffff) / (float)0x800000 - 1.0f;
}

void ss_unroll_check_fill(float *x, size_t n, uint64_t seed)
{
    for (size_t i = 0; i < n; i++)
        x[i] = check_rnd(&seed);
}

double ss_unroll_check_diff(const float *got, const float *want, size_t n)
{
    double w = 0.0;
    for (size_t i = 0; i < n; i++) {
        double e = fabs((double)got[i] - (double)want[i]) / fmax(1.0, fabs((double)want[i]));
        if (!(e <= w)) /* NaN counts as the worst */
            w = isnan(e) ? INFINITY : e;
    }
    return w;
}

/* Run u and an fp32 workspace of the same model over one fixed random
 * segment; *err = the worst relative difference of outputs and states. */
static int self_check(ss_unroll *u, double *err)
{
    const ss_model *m = u->m;
    const int T = SS_UNROLL_CHECK_T, B = SS_UNROLL_CHECK_B;
    ss_unroll *ref = NULL;
    float *buf = NULL;
    int rc = ss_unroll_new(&ref, m);
    if (rc)
        goto out;
    size_t n_x = (size_t)T * B * (size_t)m->input_size, n_y = (size_t)T * B * (size_t)u->P;
    size_t n_s = 0;
    for (int i = 0; i < u->n_states; i++)
        n_s += (size_t)B * (size_t)u->state_w[i];
    buf = malloc((n_x + 2 * n_y + 2 * n_s) * sizeof(float));
    if (!buf) {
        rc = SS_ERR_NOMEM;
        goto out;
    }
    float *x = buf, *y1 = x + n_x, *y2 = y1 + n_y, *s1 = y2 + n_y, *s2 = s1 + n_s;
    float *so1[2 * SS_MODEL_MAX_LAYERS], *so2[2 * SS_MODEL_MAX_LAYERS];
    size_t off = 0;
    for (int i = 0; i < u->n_states; i++) {
        so1[i] = s1 + off;
        so2[i] = s2 + off;
        off += (size_t)B * (size_t)u->state_w[i];
    }
    ss_unroll_check_fill(x, n_x, 0x5e1fc4ec);
    rc = ss_unroll_run(ref, T, B, x, NULL, NULL, y1, so1);
    if (!rc)
        rc = ss_unroll_run(u, T, B, x, NULL, NULL, y2, so2);
    if (rc)
        goto out;
    double w = ss_unroll_check_diff(y2, y1, n_y), ws = ss_unroll_check_diff(s2, s1, n_s);
    *err = w > ws ? w : ws;
out:
    free(buf);
    ss_unroll_free(ref);
    return rc;
}

int ss_unroll_new_prec(ss_unroll **out, const ss_model *m, ss_precision p, double *check_err)
{
    ss_unroll *u = NULL;
    double err = 0.0;
    if (!out)
        return SS_ERR_INVALID;
    *out = NULL;
    if (check_err)
        *check_err = 0.0;
    int rc = workspace_new(&u, m, p);
    if (rc)
        return rc;
    if (p == SS_PRECISION_BF16) {
        rc = self_check(u, &err);
        if (!rc && !(err <= SS_UNROLL_BF16_TOL))
            rc = SS_ERR_INTERNAL;
        if (check_err)
            *check_err = err;
        if (rc) {
            ss_unroll_free(u);
            return rc;
        }
    }
    *out = u;
    return 0;
}

ss_precision ss_unroll_precision(const ss_unroll *u)
{
    return u->prec;
}

const char *ss_unroll_kernel(const ss_unroll *u)
{
    const unroll_slice *sl = &u->layers[0].sl[0];
    return ss_pgemm_bf16_kernel_name(sl->w.bdata ? sl->w.isa : sl->wp.isa);
}

static void part_free(unroll_part *p)
{
    free(p->proj);
    free(p->aux);
    free(p->g);
    free(p->ap);
    memset(p, 0, sizeof *p);
}

/* Stop and join the first `started` workers of a barrier set up for
 * u->threads; parts beyond the first are released. */
static void stop_workers(ss_unroll *u, int started)
{
    if (u->threads > 1) {
        u->quit = true;
        /* Stand in for the workers that never started. */
        ss_barrier_wait_as(&u->start, u->threads - started);
        for (int i = 0; i < started; i++)
            pthread_join(u->workers[i], NULL);
        u->quit = false;
        for (int i = 1; i < u->threads; i++)
            part_free(&u->parts[i]);
    }
    free(u->workers);
    u->workers = NULL;
    u->threads = 1;
    ss_barrier_init(&u->start, 1);
    ss_barrier_init(&u->end, 1);
    ss_barrier_init(&u->step, 1);
}

void ss_unroll_free(ss_unroll *u)
{
    if (!u)
        return;
    if (u->parts) {
        stop_workers(u, u->threads - 1);
        part_free(&u->parts[0]);
        free(u->parts);
    }
    for (int l = 0; l < SS_MODEL_MAX_LAYERS; l++)
        slices_free(u->layers[l].sl, u->S);
    free(u->mbuf);
    free(u->state);
    free(u->ybuf[0]);
    free(u->ybuf[1]);
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
        for (int s = 0; s < u->S; s++) {
            const unroll_slice *sl = &u->layers[l].sl[s];
            const ss_pgemm_w *ws[3] = {&sl->w, &sl->w2, &sl->wp};
            for (int i = 0; i < 3; i++) {
                if (!ws[i]->data && !ws[i]->bdata)
                    continue;
                size_t f = ss_pgemm_scratch_floats(ws[i], (int)rows);
                if (f > mx)
                    mx = f;
            }
        }
    }
    return mx ? mx : 16;
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
    rc = grow(&p->g, &c, rows, (size_t)u->G * (size_t)u->Hmax);
    c = p->cap;
    if (!rc)
        rc = grow(&p->aux, &c, rows, 3 * (size_t)u->Hmax);
    c = p->cap;
    if (!rc)
        rc = grow(&p->proj, &c, rows, (size_t)u->Pmax);
    /* The pgemm scratch is one block sized for `rows`: it is reallocated
     * whenever the rows grow (its capacity is not counted in rows). */
    c = 0;
    if (!rc)
        rc = grow(&p->ap, &c, 1, ap_floats(u, rows));
    if (!rc)
        p->cap = rows;
    return rc;
}

/* Padded columns of slice s of layer 0's main product (the split's cost). */
static long slice_cols(const ss_unroll *u, int s)
{
    long w = (long)u->G * u->layers[0].sl[s].nu;
    return (w + 15) / 16 * 16;
}

/* Whether a run of B rows goes by units (see the top comment). */
static bool choose_units(const ss_unroll *u, int B)
{
    const int n = u->threads;
    if (n == 1 || u->S != n || u->split == SS_UNROLL_SPLIT_ROWS)
        return false;
    if (u->split == SS_UNROLL_SPLIT_UNITS)
        return true;
    const long mr = u->layers[0].sl[0].w.mr > 0 ? u->layers[0].sl[0].w.mr : 8;
    long per = (B + n - 1) / n, sum = 0, mx = 0;
    for (int s = 0; s < u->S; s++) {
        long c = slice_cols(u, s);
        sum += c;
        mx = c > mx ? c : mx;
    }
    long cost_rows = (per + mr - 1) / mr * mr * sum;
    long cost_units = ((long)B + mr - 1) / mr * mr * mx;
    return cost_units < cost_rows;
}

/* Give the parts their rows and slices for a run of B rows. */
static void assign_parts(ss_unroll *u, int B, bool units)
{
    const int n = u->threads;
    if (units) {
        for (int i = 0; i < n; i++)
            u->parts[i] = (unroll_part){.b0 = 0, .nb = B, .s0 = i, .s1 = i + 1,
                                        .cap = u->parts[i].cap, .ap = u->parts[i].ap,
                                        .g = u->parts[i].g, .aux = u->parts[i].aux,
                                        .proj = u->parts[i].proj};
        return;
    }
    const int base = B / n, extra = B % n;
    int b0 = 0;
    for (int i = 0; i < n; i++) {
        int nb = base + (i < extra ? 1 : 0);
        u->parts[i].b0 = b0;
        u->parts[i].nb = nb;
        u->parts[i].s0 = 0;
        u->parts[i].s1 = u->S;
        b0 += nb;
    }
}

/* Grow the buffers for T*B rows and B batch rows; never shrinks. */
static int ensure(ss_unroll *u, size_t rows, int B, bool need_ybuf)
{
    int rc = 0;
    if (need_ybuf)
        rc = grow(&u->ybuf[0], &u->ybuf_cap[0], rows ? rows : 1, (size_t)u->Pmax);
    if (!rc && need_ybuf && u->L > 1)
        rc = grow(&u->ybuf[1], &u->ybuf_cap[1], rows ? rows : 1, (size_t)u->Pmax);
    if (!rc && (size_t)B > u->b_cap)
        rc = grow(&u->state, &u->b_cap, (size_t)B, state_floats(u, 1));
    if (!rc && (size_t)B > u->m_cap)
        rc = grow(&u->mbuf, &u->m_cap, (size_t)B, (size_t)u->Hmax);
    for (int i = 0; !rc && i < u->threads; i++)
        rc = part_grow(u, &u->parts[i], (size_t)(u->parts[i].nb > 0 ? u->parts[i].nb : 1));
    return rc;
}

float *ss_unroll_state_ptr(ss_unroll *u, int i, int B)
{
    size_t off = 0;
    for (int k = 0; k < i; k++)
        off += (size_t)u->state_w[k] * (size_t)B;
    return u->state + off;
}

/* Worker thread: runs part `idx` of every run until quit. */
typedef struct worker_arg {
    ss_unroll *u;           /* the workspace */
    int idx;                /* part index, >= 1 */
} worker_arg;

static void *worker_main(void *arg)
{
    worker_arg wa = *(worker_arg *)arg;
    free(arg);
    ss_unroll *u = wa.u;
    for (;;) {
        ss_barrier_wait(&u->start);
        if (u->quit)
            break;
        ss_unroll_run_part(u, wa.idx);
        ss_barrier_wait(&u->end);
    }
    return NULL;
}

int ss_unroll_set_threads(ss_unroll *u, int n)
{
    int rc = 0, started = 0;
    if (!u || n < 1 || n > SS_UNROLL_THREADS_MAX)
        return SS_ERR_INVALID;
    if (n == u->threads && n == u->S)
        return 0;
    stop_workers(u, u->threads - 1);
    if (n != u->S) {
        rc = reslice(u, n);
        if (rc)
            return rc;
    }
    if (n == 1)
        return 0;
    unroll_part *parts = realloc(u->parts, (size_t)n * sizeof(*parts));
    if (!parts)
        return SS_ERR_NOMEM;
    u->parts = parts;
    memset(parts + 1, 0, (size_t)(n - 1) * sizeof(*parts));
    u->workers = calloc((size_t)n - 1, sizeof(*u->workers));
    if (!u->workers)
        return SS_ERR_NOMEM;
    ss_barrier_init(&u->start, n);
    ss_barrier_init(&u->end, n);
    ss_barrier_init(&u->step, n);
    u->threads = n;
    for (int i = 1; i < n; i++) {
        worker_arg *wa = malloc(sizeof(*wa));
        if (!wa) {
            rc = SS_ERR_NOMEM;
            goto out;
        }
        *wa = (worker_arg){u, i};
        if (pthread_create(&u->workers[i - 1], NULL, worker_main, wa)) {
            free(wa);
            rc = SS_ERR_NOMEM;
            goto out;
        }
        started = i;
    }
out:
    if (rc)
        stop_workers(u, started);
    return rc;
}

int ss_unroll_threads(const ss_unroll *u)
{
    return u ? u->threads : 0;
}

void ss_unroll_set_split(ss_unroll *u, ss_unroll_split s)
{
    if (u)
        u->split = s;
}

ss_unroll_split ss_unroll_last_split(const ss_unroll *u)
{
    return u ? u->last : SS_UNROLL_SPLIT_ROWS;
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
    bool units = choose_units(u, B);
    assign_parts(u, B, units);
    int rc = ensure(u, rows, B, need_ybuf);
    if (rc)
        return rc;
    for (int i = 0; i < u->n_states; i++) {
        size_t n = (size_t)B * (size_t)u->state_w[i];
        float *s = ss_unroll_state_ptr(u, i, B);
        if (states_in && states_in[i])
            memcpy(s, states_in[i], n * sizeof(float));
        else
            memset(s, 0, n * sizeof(float));
    }
    if (rows > 0) {
        u->call = (unroll_call){teff, B, inputs, lengths, outputs, units};
        u->last = units ? SS_UNROLL_SPLIT_UNITS : SS_UNROLL_SPLIT_ROWS;
        ss_barrier_wait(&u->start);
        ss_unroll_run_part(u, 0);
        ss_barrier_wait(&u->end);
    }
    if (outputs && teff < T)
        memset(outputs + rows * (size_t)u->P, 0,
               (size_t)(T - teff) * (size_t)B * (size_t)u->P * sizeof(float));
    if (states_out) {
        for (int i = 0; i < u->n_states; i++) {
            if (states_out[i])
                memcpy(states_out[i], ss_unroll_state_ptr(u, i, B),
                       (size_t)B * (size_t)u->state_w[i] * sizeof(float));
        }
    }
    return 0;
}

double ss_unroll_flops(const ss_model *m, int T, int B)
{
    const double tb = (double)T * (double)B;
    double f = 0.0;
    for (int l = 0; l < m->num_layers; l++) {
        const double H = ss_model_units(m, l);
        const double P = ss_model_layer_out(m, l);
        double in = l == 0 ? m->input_size : ss_model_layer_out(m, l - 1);
        switch (m->cell) {
        case SS_CELL_LSTM:
            f += 2.0 * tb * (in + P) * 4.0 * H;
            if (ss_model_proj(m, l) > 0)
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
