/* test_unroll -- Check suite for the static unroll, the cell math and vmath.
 *
 * Golden vectors (tests/worker/golden, written by gen_golden.py with torch
 * in float64) are loaded with the worker's own model and npy readers and
 * compared within |a - b| <= 1e-5 * max(1, |b|). Chunking tests check that
 * one T-step unroll equals several shorter unrolls with the state carried
 * over (the whole point of a state saver). Thread tests check that any
 * thread count gives the 1-thread result bit for bit; pgemm is checked
 * against a double-precision product for every instruction-set variant.
 */
#include <check.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model.h"
#include "ss_npy.h"
#include "pgemm.h"
#include "ss_error.h"
#include "unroll.h"
#include "vmath.h"

#define GOLDEN_TOL 1e-5
/* Chunked and whole unrolls run the same arithmetic: pgemm sums every
 * element in k order whatever the number of rows, so they agree bit for
 * bit. */
#define CHUNK_TOL 0.0

static const char *const golden_cases[] = {
    "basic_tanh", "basic_relu", "basic_tanh_nolengths", "lstm_plain",
    "lstm_forget_bias", "lstm_peepholes", "lstm_cell_clip", "lstm_num_proj",
    "lstm_relu", "lstm_all", "lstm_stack2", "gru", "gru_reset_after", "gru_relu",
    "gru_reset_after_relu", "gru_stack2", "gru_reset_after_stack2",
};
#define N_GOLDEN (sizeof(golden_cases) / sizeof(golden_cases[0]))

static void golden_path(char *buf, size_t n, const char *c, const char *file)
{
    const char *root = getenv("SS_SOURCE_ROOT");
    snprintf(buf, n, "%s/tests/worker/golden/%s/%s", root ? root : ".", c, file);
}

/* Read an npy from the golden dir; NULL when the file does not exist and
 * optional is set. */
static ss_npy *golden_npy(const char *c, const char *file, bool optional)
{
    char path[1024], err[512];
    ss_npy *a = NULL;
    golden_path(path, sizeof path, c, file);
    if (optional) {
        FILE *f = fopen(path, "rb");
        if (!f)
            return NULL;
        fclose(f);
    }
    int rc = ss_npy_read(path, &a, err, sizeof err);
    ck_assert_msg(rc == 0, "%s: %s", path, err);
    return a;
}

static double worst_err(const float *got, const float *want, size_t n)
{
    double w = 0.0;
    for (size_t i = 0; i < n; i++) {
        double e = fabs((double)got[i] - (double)want[i]) / fmax(1.0, fabs((double)want[i]));
        if (!(e <= w)) /* NaN counts as the worst */
            w = isnan(e) ? INFINITY : e;
    }
    return w;
}

/* Instruction-set variants (vmath and the pgemm micro-kernels). */
static const char *const isas[] = {"sse", "avx2", "avx512"};

/* _i = isa * N_GOLDEN + case: every golden case under every variant the
 * CPU runs, on 1 and on 2 threads. */
START_TEST(test_golden)
{
    const char *c = golden_cases[_i % N_GOLDEN];
    if (ss_vmath_set_isa(isas[_i / N_GOLDEN]) != 0)
        return; /* CPU lacks this variant */
    char path[1024], err[512];
    ss_model *m = NULL;
    ss_unroll *u = NULL;
    golden_path(path, sizeof path, c, "model.safetensors");
    int rc = ss_model_load(path, &m, err, sizeof err);
    ck_assert_msg(rc == 0, "%s: %s", c, err);
    ss_npy *x = golden_npy(c, "inputs.npy", false);
    ss_npy *len = golden_npy(c, "lengths.npy", true);
    ss_npy *want_out = golden_npy(c, "outputs.npy", false);
    ck_assert_int_eq(x->ndim, 3);
    const int T = (int)x->shape[0], B = (int)x->shape[1];
    int32_t lengths[64];
    ck_assert_int_le(B, 64);
    if (len) {
        ck_assert_int_eq((int)len->count, B);
        for (int b = 0; b < B; b++)
            lengths[b] = len->dtype == SS_NPY_I64 ? (int32_t)((int64_t *)len->data)[b]
                                                  : ((int32_t *)len->data)[b];
    }
    ss_npy *sin[2 * SS_MODEL_MAX_LAYERS] = {0}, *sw[2 * SS_MODEL_MAX_LAYERS] = {0};
    const float *sin_p[2 * SS_MODEL_MAX_LAYERS];
    float *sout_p[2 * SS_MODEL_MAX_LAYERS];
    for (size_t i = 0; i < m->n_states; i++) {
        char f[64];
        snprintf(f, sizeof f, "state_in_%zu.npy", i);
        sin[i] = golden_npy(c, f, false);
        snprintf(f, sizeof f, "state_out_%zu.npy", i);
        sw[i] = golden_npy(c, f, false);
        ck_assert_int_eq((int)sin[i]->count, B * m->state_sizes[i]);
        sin_p[i] = sin[i]->data;
        sout_p[i] = malloc(sin[i]->count * sizeof(float));
    }
    size_t n_out = (size_t)T * (size_t)B * (size_t)m->output_size;
    ck_assert_uint_eq(n_out, want_out->count);
    float *out = malloc(n_out * sizeof(float));
    ck_assert_int_eq(ss_unroll_new(&u, m), 0);
    /* Twice through the same workspace: reuse must not change results. */
    for (int rep = 0; rep < 2; rep++) {
        memset(out, 0xff, n_out * sizeof(float)); /* NaN: every element must be written */
        rc = ss_unroll_run(u, T, B, x->data, len ? lengths : NULL, sin_p, out, sout_p);
        ck_assert_int_eq(rc, 0);
        double w = worst_err(out, want_out->data, n_out);
        ck_assert_msg(w <= GOLDEN_TOL, "%s: outputs off by %g (rep %d)", c, w, rep);
        for (size_t i = 0; i < m->n_states; i++) {
            w = worst_err(sout_p[i], sw[i]->data, sw[i]->count);
            ck_assert_msg(w <= GOLDEN_TOL, "%s: final state %zu off by %g", c, i, w);
        }
    }
    /* Two threads split the batch; every row's arithmetic is unchanged, so
     * the result is the same bit for bit. */
    float *out1 = malloc(n_out * sizeof(float));
    float *st1[2 * SS_MODEL_MAX_LAYERS];
    for (size_t i = 0; i < m->n_states; i++) {
        st1[i] = malloc(sin[i]->count * sizeof(float));
        memcpy(st1[i], sout_p[i], sin[i]->count * sizeof(float));
    }
    memcpy(out1, out, n_out * sizeof(float));
    ck_assert_int_eq(ss_unroll_set_threads(u, 2), 0);
    memset(out, 0xff, n_out * sizeof(float));
    ck_assert_int_eq(ss_unroll_run(u, T, B, x->data, len ? lengths : NULL, sin_p, out, sout_p), 0);
    ck_assert_msg(memcmp(out, out1, n_out * sizeof(float)) == 0, "%s: 2 threads differ", c);
    for (size_t i = 0; i < m->n_states; i++) {
        ck_assert(memcmp(st1[i], sout_p[i], sin[i]->count * sizeof(float)) == 0);
        free(st1[i]);
    }
    free(out1);
    /* Rows past their length output exactly zero. */
    if (len) {
        for (int t = 0; t < T; t++)
            for (int b = 0; b < B; b++)
                if (t >= lengths[b])
                    for (int k = 0; k < m->output_size; k++)
                        ck_assert(out[((size_t)t * B + b) * m->output_size + k] == 0.0f);
    }
    for (size_t i = 0; i < m->n_states; i++) {
        free(sout_p[i]);
        ss_npy_free(sin[i]);
        ss_npy_free(sw[i]);
    }
    free(out);
    ss_unroll_free(u);
    ss_npy_free(want_out);
    ss_npy_free(len);
    ss_npy_free(x);
    ss_model_free(m);
}
END_TEST

START_TEST(test_golden_list_complete)
{
    /* The C table and gen_golden.py's CASES file must name the same cases. */
    char path[1024], line[256];
    golden_path(path, sizeof path, "", "CASES");
    FILE *f = fopen(path, "r");
    ck_assert_msg(f != NULL, "cannot open %s", path);
    size_t n = 0;
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\n")] = 0;
        if (!*line)
            continue;
        ck_assert_uint_lt(n, N_GOLDEN);
        ck_assert_str_eq(line, golden_cases[n]);
        n++;
    }
    fclose(f);
    ck_assert_uint_eq(n, N_GOLDEN);
}
END_TEST

/* ---- in-memory random models (odd sizes, to hit every vector tail) ---- */

typedef struct test_model {
    ss_model m;             /* the model, pointing into w */
    float *w;               /* all weights */
    int sizes[2 * SS_MODEL_MAX_LAYERS]; /* state widths */
} test_model;

static float lcg(uint64_t *s)
{
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((*s >> 40) & 0xffffff) / (float)0x1000000 - 0.5f;
}

static void make_model(test_model *tm, ss_cell_kind cell, int I, int H, int L,
                       bool reset_after, bool peep, bool clip, int proj, uint64_t seed)
{
    memset(tm, 0, sizeof *tm);
    ss_model *m = &tm->m;
    const int P = proj ? proj : H;
    m->cell = cell;
    m->input_size = I;
    m->num_units = H;
    m->num_layers = L;
    m->forget_bias = 1.0f;
    m->use_peepholes = peep;
    m->has_cell_clip = clip;
    m->cell_clip = 0.8f;
    m->num_proj = proj;
    m->reset_after = reset_after;
    m->output_size = P;
    m->n_states = (size_t)L * (cell == SS_CELL_LSTM ? 2 : 1);
    m->state_sizes = tm->sizes;
    size_t total = 0;
    for (int l = 0; l < L; l++) {
        size_t in = l ? (size_t)P : (size_t)I;
        total += (in + (size_t)P + 2) * 4 * (size_t)H + 4 * (size_t)H + (size_t)H * (size_t)P +
                 (size_t)H * 3 * (size_t)H;
    }
    tm->w = malloc(total * sizeof(float));
    for (size_t i = 0; i < total; i++)
        tm->w[i] = lcg(&seed);
    float *p = tm->w;
    for (int l = 0; l < L; l++) {
        ss_layer *ly = &m->layers[l];
        size_t in = l ? (size_t)P : (size_t)I, Hs = (size_t)H;
        ly->in = (int)in;
        if (cell == SS_CELL_LSTM) {
            tm->sizes[2 * l] = H;
            tm->sizes[2 * l + 1] = P;
            ly->kernel = p; p += (in + (size_t)P) * 4 * Hs;
            ly->bias = p; p += 4 * Hs;
            if (peep) {
                ly->w_i_diag = p; p += Hs;
                ly->w_f_diag = p; p += Hs;
                ly->w_o_diag = p; p += Hs;
            }
            if (proj) {
                ly->proj = p; p += Hs * (size_t)P;
            }
            continue;
        }
        tm->sizes[l] = H;
        if (cell == SS_CELL_GRU && reset_after) {
            ly->kernel = p; p += in * 3 * Hs;
            ly->recurrent_kernel = p; p += Hs * 3 * Hs;
            ly->bias = p; p += 6 * Hs;
        } else if (cell == SS_CELL_GRU) {
            ly->kernel = p; p += (in + Hs) * 2 * Hs;
            ly->bias = p; p += 2 * Hs;
            ly->cand_kernel = p; p += (in + Hs) * Hs;
            ly->cand_bias = p; p += Hs;
        } else {
            ly->kernel = p; p += (in + Hs) * Hs;
            ly->bias = p; p += Hs;
        }
    }
}

/* Chunking cases: model and chunk sizes (0-terminated). */
struct chunk_case {
    const char *name;       /* what the case exercises */
    ss_cell_kind cell;      /* cell */
    int I, H, L;            /* sizes */
    bool reset_after;       /* gru variant */
    bool peep, clip;        /* lstm options */
    int proj;               /* lstm num_proj */
    int chunks[8];          /* chunk lengths summing to T */
};

static const struct chunk_case chunk_cases[] = {
    {"lstm", SS_CELL_LSTM, 19, 37, 1, false, false, false, 0, {7, 7, 7, 2}},
    {"lstm peep clip proj 2 layers", SS_CELL_LSTM, 19, 37, 2, false, true, true, 13, {1, 5, 17}},
    {"gru", SS_CELL_GRU, 19, 37, 1, false, false, false, 0, {10, 13}},
    {"gru reset_after 2 layers", SS_CELL_GRU, 19, 37, 2, true, false, false, 0, {3, 3, 3, 3, 11}},
    {"basic_rnn", SS_CELL_BASIC_RNN, 19, 37, 1, false, false, false, 0, {22, 1}},
};

START_TEST(test_chunking)
{
    const struct chunk_case *cc = &chunk_cases[_i];
    test_model tm;
    make_model(&tm, cc->cell, cc->I, cc->H, cc->L, cc->reset_after, cc->peep, cc->clip,
               cc->proj, 1234 + (uint64_t)_i);
    const ss_model *m = &tm.m;
    int T = 0;
    for (int k = 0; cc->chunks[k]; k++)
        T += cc->chunks[k];
    const int B = 9, I = cc->I, P = m->output_size;
    /* lengths: 0, 1, T and values that end inside every chunk. */
    int32_t lengths[9] = {0, 1, T, T - 1, 2, 7, 13, 5, T};
    uint64_t seed = 99;
    float *x = malloc((size_t)T * B * I * sizeof(float));
    for (size_t i = 0; i < (size_t)T * B * I; i++)
        x[i] = 2.0f * lcg(&seed);
    size_t nst = m->n_states;
    float *s0[2 * SS_MODEL_MAX_LAYERS], *s_whole[2 * SS_MODEL_MAX_LAYERS],
        *s_chunk[2 * SS_MODEL_MAX_LAYERS];
    for (size_t i = 0; i < nst; i++) {
        size_t n = (size_t)B * m->state_sizes[i];
        s0[i] = malloc(n * sizeof(float));
        s_whole[i] = malloc(n * sizeof(float));
        s_chunk[i] = malloc(n * sizeof(float));
        for (size_t k = 0; k < n; k++)
            s0[i][k] = lcg(&seed);
        memcpy(s_chunk[i], s0[i], n * sizeof(float));
    }
    float *y_whole = malloc((size_t)T * B * P * sizeof(float));
    float *y_chunk = malloc((size_t)T * B * P * sizeof(float));
    ss_unroll *u = NULL;
    ck_assert_int_eq(ss_unroll_new(&u, m), 0);
    ck_assert_int_eq(ss_unroll_run(u, T, B, x, lengths, (const float *const *)s0, y_whole,
                                   s_whole), 0);
    /* Chunks through the same workspace, states updated in place. */
    int t0 = 0;
    for (int k = 0; cc->chunks[k]; k++) {
        int Tc = cc->chunks[k];
        int32_t lc[9];
        for (int b = 0; b < B; b++) {
            int r = lengths[b] - t0;
            lc[b] = r < 0 ? 0 : (r > Tc ? Tc : r);
        }
        ck_assert_int_eq(ss_unroll_run(u, Tc, B, x + (size_t)t0 * B * I, lc,
                                       (const float *const *)s_chunk,
                                       y_chunk + (size_t)t0 * B * P, s_chunk), 0);
        t0 += Tc;
    }
    double w = worst_err(y_chunk, y_whole, (size_t)T * B * P);
    ck_assert_msg(w <= CHUNK_TOL, "%s: chunked outputs differ by %g", cc->name, w);
    for (size_t i = 0; i < nst; i++) {
        w = worst_err(s_chunk[i], s_whole[i], (size_t)B * m->state_sizes[i]);
        ck_assert_msg(w <= CHUNK_TOL, "%s: chunked state %zu differs by %g", cc->name, i, w);
    }
    /* Row with length 0 keeps its initial state bit for bit; steps at or
     * past a row's length output exact zeros. */
    for (size_t i = 0; i < nst; i++)
        for (int k = 0; k < m->state_sizes[i]; k++)
            ck_assert(s_whole[i][k] == s0[i][k]);
    for (int t = 0; t < T; t++)
        for (int b = 0; b < B; b++)
            if (t >= lengths[b])
                for (int k = 0; k < P; k++)
                    ck_assert(y_whole[((size_t)t * B + b) * P + k] == 0.0f);
    ss_unroll_free(u);
    for (size_t i = 0; i < nst; i++) {
        free(s0[i]);
        free(s_whole[i]);
        free(s_chunk[i]);
    }
    free(y_whole);
    free(y_chunk);
    free(x);
    free(tm.w);
}
END_TEST

START_TEST(test_steps_past_max_length)
{
    /* max(length) = 3 < T = 8: steps 3..7 are not computed and output zero;
     * the result equals a 3-step unroll. */
    test_model tm;
    make_model(&tm, SS_CELL_LSTM, 5, 6, 1, false, false, false, 0, 7);
    const int T = 8, B = 3, H = 6;
    int32_t len[3] = {3, 0, 2};
    uint64_t seed = 5;
    float x[8 * 3 * 5], y[8 * 3 * 6], y3[3 * 3 * 6];
    float c[18], h[18], c3[18], h3[18];
    for (size_t i = 0; i < sizeof x / sizeof x[0]; i++)
        x[i] = lcg(&seed);
    memset(y, 0x7f, sizeof y);
    float *so[2] = {c, h}, *so3[2] = {c3, h3};
    ss_unroll *u = NULL;
    ck_assert_int_eq(ss_unroll_new(&u, &tm.m), 0);
    ck_assert_int_eq(ss_unroll_run(u, T, B, x, len, NULL, y, so), 0);
    ck_assert_int_eq(ss_unroll_run(u, 3, B, x, len, NULL, y3, so3), 0);
    for (int i = 3 * B * H; i < T * B * H; i++)
        ck_assert(y[i] == 0.0f);
    ck_assert(worst_err(y, y3, 3 * 3 * 6) <= CHUNK_TOL);
    ck_assert(worst_err(c, c3, 18) <= CHUNK_TOL);
    ck_assert(worst_err(h, h3, 18) <= CHUNK_TOL);
    /* lengths NULL: every step computed, so the last rows are not zero. */
    ck_assert_int_eq(ss_unroll_run(u, T, B, x, NULL, NULL, y, so), 0);
    bool nonzero = false;
    for (int i = (T - 1) * B * H; i < T * B * H; i++)
        nonzero |= y[i] != 0.0f;
    ck_assert(nonzero);
    /* All lengths 0: nothing computed, NULL states_in means zeros. */
    int32_t zero[3] = {0, 0, 0};
    ck_assert_int_eq(ss_unroll_run(u, T, B, x, zero, NULL, y, so), 0);
    for (int i = 0; i < T * B * H; i++)
        ck_assert(y[i] == 0.0f);
    for (int i = 0; i < 18; i++)
        ck_assert(c[i] == 0.0f && h[i] == 0.0f);
    ss_unroll_free(u);
    free(tm.w);
}
END_TEST

START_TEST(test_invalid_arguments)
{
    test_model tm;
    make_model(&tm, SS_CELL_GRU, 4, 4, 1, true, false, false, 0, 3);
    ss_unroll *u = NULL;
    float x[2 * 2 * 4] = {0}, y[2 * 2 * 4], h[8];
    float *so[1] = {h};
    ck_assert_int_eq(ss_unroll_new(&u, &tm.m), 0);
    int32_t too_long[2] = {3, 1}, negative[2] = {-1, 1};
    ck_assert_int_eq(ss_unroll_run(u, 2, 2, x, too_long, NULL, y, so), SS_ERR_INVALID);
    ck_assert_int_eq(ss_unroll_run(u, 2, 2, x, negative, NULL, y, so), SS_ERR_INVALID);
    ck_assert_int_eq(ss_unroll_run(u, -1, 2, x, NULL, NULL, y, so), SS_ERR_INVALID);
    ck_assert_int_eq(ss_unroll_run(u, 2, 2, NULL, NULL, NULL, y, so), SS_ERR_INVALID);
    /* T = 0 and B = 0 are valid and compute nothing. */
    ck_assert_int_eq(ss_unroll_run(u, 0, 2, x, NULL, NULL, y, so), 0);
    ck_assert_int_eq(ss_unroll_run(u, 2, 0, x, NULL, NULL, y, so), 0);
    ss_unroll_free(u);
    /* Inconsistent models are refused. */
    ss_model bad = tm.m;
    bad.layers[0].recurrent_kernel = NULL;
    ck_assert_int_eq(ss_unroll_new(&u, &bad), SS_ERR_INVALID);
    ck_assert_ptr_null(u);
    bad = tm.m;
    bad.num_layers = 0;
    ck_assert_int_eq(ss_unroll_new(&u, &bad), SS_ERR_INVALID);
    bad = tm.m;
    bad.output_size = 7;
    ck_assert_int_eq(ss_unroll_new(&u, &bad), SS_ERR_INVALID);
    ss_unroll_free(NULL);
    free(tm.w);
}
END_TEST

/* Thread-count cases: batch size and lengths (NULL: all T). */
struct thread_case {
    int B;                  /* batch rows */
    int threads;            /* threads of the second workspace run */
};

static const struct thread_case thread_cases[] = {
    {9, 2}, {9, 4}, {1, 2}, {2, 3}, {64, 2}, {5, 5},
};
#define N_THREAD_CASES (sizeof thread_cases / sizeof thread_cases[0])

/* _i = chunk case * N_THREAD_CASES + thread case: an unroll on n threads
 * equals the 1-thread unroll bit for bit (B not divisible by n, B < n,
 * B = 1), with and without lengths, switching threads on one workspace. */
START_TEST(test_threads)
{
    const struct chunk_case *cc = &chunk_cases[_i / N_THREAD_CASES];
    const struct thread_case *tc = &thread_cases[_i % N_THREAD_CASES];
    test_model tm;
    make_model(&tm, cc->cell, cc->I, cc->H, cc->L, cc->reset_after, cc->peep, cc->clip,
               cc->proj, 77 + (uint64_t)_i);
    const ss_model *m = &tm.m;
    const int T = 11, B = tc->B, I = cc->I, P = m->output_size;
    uint64_t seed = 3;
    int32_t *len = malloc((size_t)B * sizeof(int32_t));
    for (int b = 0; b < B; b++)
        len[b] = (int32_t)((b * 5 + 3) % (T + 1));
    float *x = malloc((size_t)T * B * I * sizeof(float));
    for (size_t i = 0; i < (size_t)T * B * I; i++)
        x[i] = 2.0f * lcg(&seed);
    size_t nst = m->n_states, n_y = (size_t)T * B * P;
    float *s0[2 * SS_MODEL_MAX_LAYERS], *s1[2 * SS_MODEL_MAX_LAYERS], *sn[2 * SS_MODEL_MAX_LAYERS];
    for (size_t i = 0; i < nst; i++) {
        size_t n = (size_t)B * m->state_sizes[i];
        s0[i] = malloc(n * sizeof(float));
        s1[i] = malloc(n * sizeof(float));
        sn[i] = malloc(n * sizeof(float));
        for (size_t k = 0; k < n; k++)
            s0[i][k] = lcg(&seed);
    }
    float *y1 = malloc(n_y * sizeof(float)), *yn = malloc(n_y * sizeof(float));
    ss_unroll *u = NULL;
    ck_assert_int_eq(ss_unroll_new(&u, m), 0);
    ck_assert_int_eq(ss_unroll_threads(u), 1);
    for (int with_len = 0; with_len < 2; with_len++) {
        const int32_t *l = with_len ? len : NULL;
        ck_assert_int_eq(ss_unroll_set_threads(u, 1), 0);
        ck_assert_int_eq(ss_unroll_run(u, T, B, x, l, (const float *const *)s0, y1, s1), 0);
        ck_assert_int_eq(ss_unroll_set_threads(u, tc->threads), 0);
        ck_assert_int_eq(ss_unroll_threads(u), tc->threads);
        /* Twice: parked workers must pick up the second run too. */
        for (int rep = 0; rep < 2; rep++) {
            memset(yn, 0xff, n_y * sizeof(float));
            ck_assert_int_eq(ss_unroll_run(u, T, B, x, l, (const float *const *)s0, yn, sn), 0);
            ck_assert_msg(memcmp(y1, yn, n_y * sizeof(float)) == 0,
                          "%s B=%d threads=%d lengths=%d: outputs differ", cc->name, B,
                          tc->threads, with_len);
            for (size_t i = 0; i < nst; i++)
                ck_assert_msg(memcmp(s1[i], sn[i], (size_t)B * m->state_sizes[i] *
                                                       sizeof(float)) == 0,
                              "%s B=%d threads=%d: state %zu differs", cc->name, B,
                              tc->threads, i);
        }
    }
    ss_unroll_free(u); /* joins the workers */
    for (size_t i = 0; i < nst; i++) {
        free(s0[i]);
        free(s1[i]);
        free(sn[i]);
    }
    free(y1);
    free(yn);
    free(x);
    free(len);
    free(tm.w);
}
END_TEST

/* Every cell for the split tests: odd H (every vector tail), H = 20 (with
 * 3 threads the third slice is empty), stacks, lstm with all options. */
static const struct chunk_case split_cases[] = {
    {"basic_rnn", SS_CELL_BASIC_RNN, 19, 37, 1, false, false, false, 0, {0}},
    {"lstm", SS_CELL_LSTM, 19, 37, 1, false, false, false, 0, {0}},
    {"lstm peep clip proj 2 layers", SS_CELL_LSTM, 19, 37, 2, false, true, true, 13, {0}},
    {"lstm peep clip proj H=20", SS_CELL_LSTM, 7, 20, 1, false, true, true, 33, {0}},
    {"gru", SS_CELL_GRU, 19, 37, 1, false, false, false, 0, {0}},
    {"gru 2 layers H=20", SS_CELL_GRU, 19, 20, 2, false, false, false, 0, {0}},
    {"gru reset_after", SS_CELL_GRU, 19, 37, 1, true, false, false, 0, {0}},
    {"gru reset_after 2 layers", SS_CELL_GRU, 19, 37, 2, true, false, false, 0, {0}},
};
#define N_SPLIT_CASES (sizeof split_cases / sizeof split_cases[0])

/* _i = split case * 3 + isa: for B = 1, 3, 8, 64, with and without
 * lengths, 2 and 3 threads split by rows, by units and as chosen give the
 * 1-thread result bit for bit (outputs and final states). */
START_TEST(test_split_bit_identical)
{
    const struct chunk_case *cc = &split_cases[_i / 3];
    if (ss_vmath_set_isa(isas[_i % 3]) != 0)
        return; /* CPU lacks this variant */
    static const int Bs[] = {1, 3, 8, 64};
    static const ss_unroll_split splits[] = {SS_UNROLL_SPLIT_ROWS, SS_UNROLL_SPLIT_UNITS,
                                             SS_UNROLL_SPLIT_AUTO};
    test_model tm;
    make_model(&tm, cc->cell, cc->I, cc->H, cc->L, cc->reset_after, cc->peep, cc->clip,
               cc->proj, 500 + (uint64_t)_i);
    const ss_model *m = &tm.m;
    const int T = 6, Bmax = 64, I = cc->I, P = m->output_size;
    uint64_t seed = 17;
    float *x = malloc((size_t)T * Bmax * I * sizeof(float));
    for (size_t i = 0; i < (size_t)T * Bmax * I; i++)
        x[i] = 2.0f * lcg(&seed);
    int32_t len[64];
    for (int b = 0; b < Bmax; b++)
        len[b] = (int32_t)((b * 5 + 2) % (T + 1));
    size_t nst = m->n_states, n_y = (size_t)T * Bmax * P;
    float *s0[2 * SS_MODEL_MAX_LAYERS], *s1[2 * SS_MODEL_MAX_LAYERS], *sn[2 * SS_MODEL_MAX_LAYERS];
    for (size_t i = 0; i < nst; i++) {
        size_t n = (size_t)Bmax * m->state_sizes[i];
        s0[i] = malloc(n * sizeof(float));
        s1[i] = malloc(n * sizeof(float));
        sn[i] = malloc(n * sizeof(float));
        for (size_t k = 0; k < n; k++)
            s0[i][k] = lcg(&seed);
    }
    float *y1 = malloc(n_y * sizeof(float)), *yn = malloc(n_y * sizeof(float));
    ss_unroll *one = NULL, *u2 = NULL, *u3 = NULL;
    ck_assert_int_eq(ss_unroll_new(&one, m), 0);
    ck_assert_int_eq(ss_unroll_new(&u2, m), 0);
    ck_assert_int_eq(ss_unroll_new(&u3, m), 0);
    ck_assert_int_eq(ss_unroll_set_threads(u2, 2), 0);
    ck_assert_int_eq(ss_unroll_set_threads(u3, 3), 0);
    ss_unroll *multi[2] = {u2, u3};
    bool saw_units = false;
    for (size_t bi = 0; bi < sizeof Bs / sizeof Bs[0]; bi++) {
        const int B = Bs[bi];
        for (int with_len = 0; with_len < 2; with_len++) {
            const int32_t *l = with_len ? len : NULL;
            ck_assert_int_eq(ss_unroll_run(one, T, B, x, l, (const float *const *)s0, y1, s1), 0);
            for (int k = 0; k < 2; k++) {
                for (size_t sp = 0; sp < 3; sp++) {
                    ss_unroll_set_split(multi[k], splits[sp]);
                    memset(yn, 0xff, n_y * sizeof(float));
                    ck_assert_int_eq(ss_unroll_run(multi[k], T, B, x, l,
                                                   (const float *const *)s0, yn, sn), 0);
                    if (splits[sp] != SS_UNROLL_SPLIT_AUTO)
                        ck_assert_int_eq(ss_unroll_last_split(multi[k]), splits[sp]);
                    saw_units |= ss_unroll_last_split(multi[k]) == SS_UNROLL_SPLIT_UNITS;
                    ck_assert_msg(memcmp(y1, yn, (size_t)T * B * P * sizeof(float)) == 0,
                                  "%s (%s) B=%d threads=%d split=%zu lengths=%d: outputs differ",
                                  cc->name, isas[_i % 3], B, k + 2, sp, with_len);
                    for (size_t i = 0; i < nst; i++)
                        ck_assert_msg(memcmp(s1[i], sn[i], (size_t)B * m->state_sizes[i] *
                                                               sizeof(float)) == 0,
                                      "%s B=%d threads=%d split=%zu: state %zu differs",
                                      cc->name, B, k + 2, sp, i);
                }
            }
        }
    }
    ck_assert(saw_units);
    ss_unroll_free(one);
    ss_unroll_free(u2);
    ss_unroll_free(u3);
    for (size_t i = 0; i < nst; i++) {
        free(s0[i]);
        free(s1[i]);
        free(sn[i]);
    }
    free(y1);
    free(yn);
    free(x);
    free(tm.w);
    ck_assert_int_eq(ss_vmath_set_isa(NULL), 0);
}
END_TEST

/* Auto split: a small batch on 2 threads goes by units, a large one by
 * rows (the cost rule of unroll.c). */
START_TEST(test_split_choice)
{
    test_model tm;
    make_model(&tm, SS_CELL_LSTM, 32, 256, 1, false, false, false, 0, 8);
    ss_unroll *u = NULL;
    const int T = 2;
    float *x = calloc((size_t)T * 64 * 32, sizeof(float));
    float *y = malloc((size_t)T * 64 * 256 * sizeof(float));
    ck_assert_int_eq(ss_unroll_new(&u, &tm.m), 0);
    ck_assert_int_eq(ss_unroll_run(u, T, 8, x, NULL, NULL, y, NULL), 0);
    ck_assert_int_eq(ss_unroll_last_split(u), SS_UNROLL_SPLIT_ROWS); /* 1 thread */
    ck_assert_int_eq(ss_unroll_set_threads(u, 2), 0);
    ck_assert_int_eq(ss_unroll_run(u, T, 8, x, NULL, NULL, y, NULL), 0);
    ck_assert_int_eq(ss_unroll_last_split(u), SS_UNROLL_SPLIT_UNITS);
    ck_assert_int_eq(ss_unroll_run(u, T, 64, x, NULL, NULL, y, NULL), 0);
    ck_assert_int_eq(ss_unroll_last_split(u), SS_UNROLL_SPLIT_ROWS);
    ss_unroll_free(u);
    free(x);
    free(y);
    free(tm.w);
}
END_TEST

/* One workspace reused with a growing and shrinking batch (as `serve` does
 * from lease to lease): every run equals a fresh workspace's, and the
 * scratch buffers grow with B (ASan catches an undersized one). */
START_TEST(test_batch_regrow)
{
    const struct chunk_case *cc = &chunk_cases[_i];
    test_model tm;
    make_model(&tm, cc->cell, cc->I, cc->H, cc->L, cc->reset_after, cc->peep, cc->clip,
               cc->proj, 99 + (uint64_t)_i);
    const ss_model *m = &tm.m;
    static const int Bs[] = {1, 3, 17, 64, 5, 65, 2};
    const int T = 4, I = cc->I, P = m->output_size, Bmax = 65;
    uint64_t seed = 11;
    float *x = malloc((size_t)T * Bmax * I * sizeof(float));
    for (size_t i = 0; i < (size_t)T * Bmax * I; i++)
        x[i] = 2.0f * lcg(&seed);
    float *y1 = malloc((size_t)T * Bmax * P * sizeof(float));
    float *y2 = malloc((size_t)T * Bmax * P * sizeof(float));
    float *s1[2 * SS_MODEL_MAX_LAYERS], *s2[2 * SS_MODEL_MAX_LAYERS];
    for (size_t i = 0; i < m->n_states; i++) {
        s1[i] = malloc((size_t)Bmax * m->state_sizes[i] * sizeof(float));
        s2[i] = malloc((size_t)Bmax * m->state_sizes[i] * sizeof(float));
    }
    ss_unroll *u = NULL;
    ck_assert_int_eq(ss_unroll_new(&u, m), 0);
    ck_assert_int_eq(ss_unroll_set_threads(u, 2), 0);
    for (size_t k = 0; k < sizeof Bs / sizeof Bs[0]; k++) {
        const int B = Bs[k];
        ss_unroll *fresh = NULL;
        ck_assert_int_eq(ss_unroll_new(&fresh, m), 0);
        ck_assert_int_eq(ss_unroll_run(fresh, T, B, x, NULL, NULL, y1, s1), 0);
        ck_assert_int_eq(ss_unroll_run(u, T, B, x, NULL, NULL, y2, s2), 0);
        ck_assert_msg(memcmp(y1, y2, (size_t)T * B * P * sizeof(float)) == 0,
                      "%s: B=%d after a different B differs", cc->name, B);
        for (size_t i = 0; i < m->n_states; i++)
            ck_assert(memcmp(s1[i], s2[i], (size_t)B * m->state_sizes[i] * sizeof(float)) == 0);
        ss_unroll_free(fresh);
    }
    ss_unroll_free(u);
    for (size_t i = 0; i < m->n_states; i++) {
        free(s1[i]);
        free(s2[i]);
    }
    free(y1);
    free(y2);
    free(x);
    free(tm.w);
}
END_TEST

START_TEST(test_set_threads_invalid)
{
    test_model tm;
    make_model(&tm, SS_CELL_BASIC_RNN, 3, 4, 1, false, false, false, 0, 1);
    ss_unroll *u = NULL;
    ck_assert_int_eq(ss_unroll_new(&u, &tm.m), 0);
    ck_assert_int_eq(ss_unroll_set_threads(u, 0), SS_ERR_INVALID);
    ck_assert_int_eq(ss_unroll_set_threads(u, SS_UNROLL_THREADS_MAX + 1), SS_ERR_INVALID);
    ck_assert_int_eq(ss_unroll_set_threads(NULL, 2), SS_ERR_INVALID);
    ck_assert_int_eq(ss_unroll_threads(u), 1);
    /* Workers started and never used are joined by free. */
    ck_assert_int_eq(ss_unroll_set_threads(u, 3), 0);
    ss_unroll_free(u);
    free(tm.w);
}
END_TEST

/* pgemm against a double-precision product: odd sizes hit every row and
 * column tail; one or two left blocks; overwrite and accumulate. Per
 * variant the CPU runs. */
START_TEST(test_pgemm)
{
    if (ss_vmath_set_isa(isas[_i]) != 0)
        return;
    static const int Ms[] = {1, 3, 4, 7, 8, 9, 17};
    static const int Ns[] = {1, 15, 16, 23, 24, 47, 48, 49, 100};
    static const int K2s[] = {0, 19};
    const int K1 = 13, lda1 = 14, lda2 = 21, ldc = 101;
    uint64_t seed = 11;
    float A1[17 * 14], A2[17 * 21], W[32 * 100], C[17 * 101], C0[17 * 101];
    for (size_t i = 0; i < sizeof A1 / sizeof A1[0]; i++)
        A1[i] = lcg(&seed);
    for (size_t i = 0; i < sizeof A2 / sizeof A2[0]; i++)
        A2[i] = lcg(&seed);
    for (size_t i = 0; i < sizeof W / sizeof W[0]; i++)
        W[i] = lcg(&seed);
    for (size_t i = 0; i < sizeof C0 / sizeof C0[0]; i++)
        C0[i] = lcg(&seed);
    for (size_t ik = 0; ik < 2; ik++)
        for (size_t in = 0; in < sizeof Ns / sizeof Ns[0]; in++) {
            const int K2 = K2s[ik], K = K1 + K2, N = Ns[in];
            ss_pgemm_w pw;
            ck_assert_int_eq(ss_pgemm_pack(&pw, W, K, N, 100), 0);
            float *scr = aligned_alloc(64, ((ss_pgemm_scratch_floats(&pw, 17) * 4 + 63) / 64) * 64);
            for (size_t im = 0; im < sizeof Ms / sizeof Ms[0]; im++)
                for (int acc = 0; acc < 2; acc++) {
                    const int M = Ms[im];
                    memcpy(C, C0, sizeof C);
                    ss_pgemm(&pw, M, A1, lda1, K1, K2 ? A2 : NULL, lda2, C, ldc, acc, scr);
                    for (int r = 0; r < 17; r++)
                        for (int c = 0; c < 101; c++) {
                            float got = C[r * ldc + c];
                            if (r >= M || c >= N) { /* outside the product: untouched */
                                ck_assert(got == C0[r * ldc + c]);
                                continue;
                            }
                            double want = acc ? C0[r * ldc + c] : 0.0, mag = fabs(want);
                            for (int k = 0; k < K; k++) {
                                double a = k < K1 ? A1[r * lda1 + k] : A2[r * lda2 + k - K1];
                                want += a * W[k * 100 + c];
                                mag += fabs(a * W[k * 100 + c]);
                            }
                            ck_assert_msg(fabs(got - want) <= 1e-6 * mag + 1e-30,
                                          "%s M=%d N=%d K=%d acc=%d C[%d,%d] = %g, want %g",
                                          isas[_i], M, N, K, acc, r, c, got, want);
                        }
                }
            free(scr);
            ss_pgemm_w_free(&pw);
        }
    ss_pgemm_w_free(NULL);
    ss_pgemm_w pw;
    ck_assert_int_eq(ss_pgemm_pack(&pw, W, 0, 3, 3), SS_ERR_INVALID);
    ck_assert_int_eq(ss_pgemm_pack(&pw, W, 3, 4, 3), SS_ERR_INVALID);
    ck_assert_int_eq(ss_vmath_set_isa(NULL), 0);
}
END_TEST

START_TEST(test_flops)
{
    test_model tm;
    make_model(&tm, SS_CELL_LSTM, 256, 512, 1, false, false, false, 0, 1);
    ck_assert(ss_unroll_flops(&tm.m, 32, 64) == 2.0 * 32 * 64 * (256 + 512) * 4 * 512);
    free(tm.w);
    make_model(&tm, SS_CELL_GRU, 3, 5, 2, true, false, false, 0, 1);
    ck_assert(ss_unroll_flops(&tm.m, 2, 3) == 2.0 * 2 * 3 * ((3 + 5) + (5 + 5)) * 15);
    free(tm.w);
}
END_TEST

/* vmath against double references on a dense sweep, for every variant the
 * CPU runs (the exhaustive 2^32 sweep is in docs/benchmarks.md). */

START_TEST(test_vmath_accuracy)
{
    if (ss_vmath_set_isa(isas[_i]) != 0)
        return; /* CPU lacks this variant */
    enum { N = 200003 };
    float *x = malloc(N * sizeof(float)), *y = malloc(N * sizeof(float));
    for (int i = 0; i < N; i++)
        x[i] = -40.0f + 80.0f * (float)i / (float)(N - 1);
    x[0] = 0.0f;
    x[1] = -0.0f;
    x[2] = 1e-30f;
    x[3] = -3e-8f;
    memcpy(y, x, N * sizeof(float));
    ss_vmath_tanh(y, N); /* N is odd: the tail path runs too */
    for (int i = 0; i < N; i++) {
        double r = tanh((double)x[i]);
        ck_assert_msg(fabs(y[i] - r) <= 1e-6 * fabs(r) || (r == 0 && y[i] == 0),
                      "%s tanh(%g) = %g, want %g", isas[_i], x[i], y[i], r);
    }
    memcpy(y, x, N * sizeof(float));
    ss_vmath_sigmoid(y, N);
    for (int i = 0; i < N; i++) {
        double r = 1.0 / (1.0 + exp(-(double)x[i]));
        ck_assert_msg(fabs(y[i] - r) <= 1e-6 * r, "%s sigmoid(%g) = %g, want %g", isas[_i],
                      x[i], y[i], r);
    }
    memcpy(y, x, N * sizeof(float));
    ss_vmath_relu(y, N);
    for (int i = 0; i < N; i++)
        ck_assert(y[i] == (x[i] > 0 ? x[i] : 0.0f));
    ck_assert_int_eq(ss_vmath_set_isa(NULL), 0);
    ck_assert_int_eq(ss_vmath_set_isa("mmx"), SS_ERR_INVALID);
    free(x);
    free(y);
}
END_TEST

static Suite *unroll_suite(void)
{
    Suite *s = suite_create("unroll");
    TCase *tc = tcase_create("golden");
    tcase_add_loop_test(tc, test_golden, 0, 3 * (int)N_GOLDEN);
    tcase_add_test(tc, test_golden_list_complete);
    suite_add_tcase(s, tc);
    tc = tcase_create("chunking");
    tcase_add_loop_test(tc, test_chunking, 0,
                        (int)(sizeof chunk_cases / sizeof chunk_cases[0]));
    tcase_add_test(tc, test_steps_past_max_length);
    suite_add_tcase(s, tc);
    tc = tcase_create("threads");
    tcase_add_loop_test(tc, test_threads, 0,
                        (int)(N_THREAD_CASES * (sizeof chunk_cases / sizeof chunk_cases[0])));
    tcase_add_test(tc, test_set_threads_invalid);
    tcase_add_loop_test(tc, test_batch_regrow, 0,
                        (int)(sizeof chunk_cases / sizeof chunk_cases[0]));
    tcase_add_loop_test(tc, test_split_bit_identical, 0, 3 * (int)N_SPLIT_CASES);
    tcase_add_test(tc, test_split_choice);
    suite_add_tcase(s, tc);
    tc = tcase_create("pgemm");
    tcase_add_loop_test(tc, test_pgemm, 0, 3);
    suite_add_tcase(s, tc);
    tc = tcase_create("api");
    tcase_add_test(tc, test_invalid_arguments);
    tcase_add_test(tc, test_flops);
    suite_add_tcase(s, tc);
    tc = tcase_create("vmath");
    tcase_add_loop_test(tc, test_vmath_accuracy, 0, 3);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(unroll_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
