/* test_bf16 -- Check suite for --precision bf16 (bfloat16 weights and
 * products on AVX512_BF16, fp32 accumulation).
 *
 * On a CPU with AVX512_BF16, for every bf16 kernel (AMX tiles where the
 * CPU has them; widen + FMA; vdpbf16ps): the bf16 pgemm equals a double-precision product of
 * the bf16-rounded operands; every golden case (torch, float64)
 * run in bf16 is within SS_UNROLL_BF16_TOL; 10,000 random steps per cell
 * against our fp32 unroll stay within it too (the worst absolute and
 * relative differences are printed: docs/worker.md quotes them); threads
 * and splits give identical bits in bf16 as in fp32. On every CPU: with
 * SS_CPU_NO_BF16=1 the precision is refused with a message naming
 * AVX512_BF16, and a CPU without the instruction refuses it the same way.
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
#include "pgemm_amx.h"
#include "pgemm_bf16.h"
#include "ss_error.h"
#include "unroll.h"
#include "vmath.h"

static const char *const golden_cases[] = {
    "basic_tanh", "basic_relu", "basic_tanh_nolengths", "lstm_plain",
    "lstm_forget_bias", "lstm_peepholes", "lstm_cell_clip", "lstm_num_proj",
    "lstm_relu", "lstm_all", "lstm_stack2", "gru", "gru_reset_after", "gru_relu",
    "gru_reset_after_relu", "gru_stack2", "gru_reset_after_stack2",
};
#define N_GOLDEN (sizeof(golden_cases) / sizeof(golden_cases[0]))

/* Whether this CPU runs bf16 (the environment override not set). */
static bool cpu_bf16(void)
{
    return ss_precision_unsupported(SS_PRECISION_BF16) == NULL;
}

static ss_npy *golden_npy(const char *c, const char *file, bool optional)
{
    char path[1024], err[512];
    const char *root = getenv("SS_SOURCE_ROOT");
    snprintf(path, sizeof path, "%s/tests/worker/golden/%s/%s", root ? root : ".", c, file);
    if (optional) {
        FILE *f = fopen(path, "rb");
        if (!f)
            return NULL;
        fclose(f);
    }
    ss_npy *a = NULL;
    ck_assert_msg(ss_npy_read(path, &a, err, sizeof err) == 0, "%s: %s", path, err);
    return a;
}

/* Worst |a - b| / max(1, |b|) and worst |a - b| (NaN: infinite). */
static void errs(const float *got, const float *want, size_t n, double *rel, double *abs_)
{
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - (double)want[i]);
        double r = d / fmax(1.0, fabs((double)want[i]));
        if (isnan(d))
            d = r = INFINITY;
        *rel = r > *rel ? r : *rel;
        *abs_ = d > *abs_ ? d : *abs_;
    }
}

static float lcg(uint64_t *s)
{
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((*s >> 40) & 0xffffff) / (float)0x800000 - 1.0f;
}

/* The bf16 kernels (pgemm_bf16.c, pgemm_amx.c), by loop index. */
static const char *const kernels[] = {"fma", "dpbf16", "amx"};
#define N_KERNELS 3
static const ss_bf16_kernel kernel_ids[N_KERNELS] = {SS_BF16_KERNEL_FMA, SS_BF16_KERNEL_DPBF16,
                                                     SS_BF16_KERNEL_AMX};
static const int kernel_isas[N_KERNELS] = {SS_PGEMM_BF16W, SS_PGEMM_BF16, SS_PGEMM_BF16_AMX};

/* Select kernel k; false when this CPU lacks it (amx), and then packing
 * must refuse it. */
static bool use_kernel(int k)
{
    ss_pgemm_bf16_set_kernel(kernel_ids[k]);
    if (kernel_ids[k] == SS_BF16_KERNEL_AMX && !ss_pgemm_amx_available()) {
        float w[4] = {1, 2, 3, 4};
        ss_pgemm_w pw;
        ck_assert_int_eq(ss_pgemm_pack_bf16(&pw, w, 2, 2, 2), SS_ERR_INVALID);
        ss_pgemm_bf16_set_kernel(SS_BF16_KERNEL_AUTO);
        return false;
    }
    return true;
}

START_TEST(test_pgemm_bf16)
{
    const bool dp = _i != 0; /* dpbf16 and amx round the left operand too */
    if (!cpu_bf16()) {
        ss_pgemm_w pw;
        float w[4] = {1, 2, 3, 4};
        ck_assert_int_eq(ss_pgemm_pack_bf16(&pw, w, 2, 2, 2), SS_ERR_INVALID);
        return;
    }
    if (!use_kernel(_i))
        return;
    static const int Ms[] = {1, 3, 8, 9, 17, 33};
    static const int Ns[] = {1, 16, 17, 33, 48, 49, 100};
    static const int Ks[][2] = {{13, 0}, {13, 19}, {12, 20}, {1, 0}, {40, 35}};
    uint64_t seed = 3;
    const int lda1 = 40, lda2 = 41, ldc = 101, ldw = 100;
    float *A1 = malloc(33 * lda1 * sizeof(float)), *A2 = malloc(33 * lda2 * sizeof(float));
    float *W = malloc(80 * ldw * sizeof(float)), *C = malloc(33 * ldc * sizeof(float));
    for (int i = 0; i < 33 * lda1; i++)
        A1[i] = lcg(&seed);
    for (int i = 0; i < 33 * lda2; i++)
        A2[i] = lcg(&seed);
    for (int i = 0; i < 80 * ldw; i++)
        W[i] = lcg(&seed);
    for (size_t kk = 0; kk < sizeof Ks / sizeof Ks[0]; kk++) {
        const int K1 = Ks[kk][0], K2 = Ks[kk][1], K = K1 + K2;
        for (size_t ni = 0; ni < sizeof Ns / sizeof Ns[0]; ni++) {
            const int N = Ns[ni];
            ss_pgemm_w pw;
            ck_assert_int_eq(ss_pgemm_pack_bf16(&pw, W, K, N, ldw), 0);
            ck_assert_int_eq(pw.isa, kernel_isas[_i]);
            float *scr = aligned_alloc(64, (ss_pgemm_scratch_floats(&pw, 33) * 4 + 63) / 64 * 64);
            for (size_t mi = 0; mi < sizeof Ms / sizeof Ms[0]; mi++) {
                const int M = Ms[mi];
                for (int acc = 0; acc < 2; acc++) {
                    for (int i = 0; i < 33 * ldc; i++)
                        C[i] = 0.25f;
                    ss_pgemm(&pw, M, A1, lda1, K1, K2 ? A2 : NULL, lda2, C, ldc, acc, scr);
                    for (int r = 0; r < M; r++) {
                        for (int j = 0; j < N; j++) {
                            double ref = acc ? 0.25 : 0.0, mag = 0.0;
                            for (int k = 0; k < K; k++) {
                                float a = k < K1 ? A1[r * lda1 + k] : A2[r * lda2 + k - K1];
                                /* dpbf16 rounds the left operand too. */
                                double ab = dp ? ss_bf16_to_float(ss_bf16_from_float(a)) : a;
                                double wb = ss_bf16_to_float(ss_bf16_from_float(W[k * ldw + j]));
                                ref += ab * wb;
                                mag += fabs(ab * wb);
                            }
                            double got = C[r * ldc + j];
                            ck_assert_msg(fabs(got - ref) <= 1e-6 * (mag + 1.0),
                                          "%s M=%d N=%d K=%d acc=%d [%d,%d]: %g vs %g",
                                          kernels[_i], M, N, K, acc, r, j, got, ref);
                        }
                        /* Columns past N are untouched. */
                        ck_assert(C[r * ldc + N] == 0.25f);
                    }
                }
            }
            free(scr);
            ss_pgemm_w_free(&pw);
        }
    }
    ck_assert_uint_eq(ss_bf16_from_float(1.0f), 0x3f80);
    ck_assert_uint_eq(ss_bf16_from_float(1.00390625f), 0x3f80); /* tie: even */
    ck_assert_uint_eq(ss_bf16_from_float(1.01171875f), 0x3f82); /* tie: even (up) */
    ck_assert_uint_eq(ss_bf16_from_float(NAN) & 0x7fc0, 0x7fc0);
    free(A1);
    free(A2);
    free(W);
    free(C);
    ss_pgemm_bf16_set_kernel(SS_BF16_KERNEL_AUTO);
}
END_TEST

/* Worst errors over all golden cases, printed at the end. */
static double golden_rel[N_KERNELS][N_GOLDEN], golden_abs[N_KERNELS][N_GOLDEN];

/* _i = kernel * N_GOLDEN + case. */
START_TEST(test_golden_bf16)
{
    const char *c = golden_cases[_i % N_GOLDEN];
    const int kern = _i / (int)N_GOLDEN;
    if (cpu_bf16() && !use_kernel(kern))
        return;
    char path[1024], err[512];
    const char *root = getenv("SS_SOURCE_ROOT");
    snprintf(path, sizeof path, "%s/tests/worker/golden/%s/model.safetensors",
             root ? root : ".", c);
    ss_model *m = NULL;
    ck_assert_msg(ss_model_load(path, &m, err, sizeof err) == 0, "%s: %s", c, err);
    ss_unroll *u = NULL;
    double chk = -1.0;
    if (!cpu_bf16()) {
        ck_assert_int_eq(ss_unroll_new_prec(&u, m, SS_PRECISION_BF16, &chk), SS_ERR_INVALID);
        ss_model_free(m);
        return;
    }
    ck_assert_int_eq(ss_unroll_new_prec(&u, m, SS_PRECISION_BF16, &chk), 0);
    ck_assert_int_eq(ss_unroll_precision(u), SS_PRECISION_BF16);
    ck_assert(chk > 0.0 && chk <= SS_UNROLL_BF16_TOL);
    ss_npy *x = golden_npy(c, "inputs.npy", false);
    ss_npy *len = golden_npy(c, "lengths.npy", true);
    ss_npy *want = golden_npy(c, "outputs.npy", false);
    const int T = (int)x->shape[0], B = (int)x->shape[1];
    int32_t lengths[64];
    ck_assert_int_le(B, 64);
    for (int b = 0; len && b < B; b++)
        lengths[b] = len->dtype == SS_NPY_I64 ? (int32_t)((int64_t *)len->data)[b]
                                              : ((int32_t *)len->data)[b];
    ss_npy *sin[2 * SS_MODEL_MAX_LAYERS] = {0}, *sw[2 * SS_MODEL_MAX_LAYERS] = {0};
    const float *sin_p[2 * SS_MODEL_MAX_LAYERS];
    float *sout[2 * SS_MODEL_MAX_LAYERS], *sout2[2 * SS_MODEL_MAX_LAYERS];
    for (size_t i = 0; i < m->n_states; i++) {
        char f[64];
        snprintf(f, sizeof f, "state_in_%zu.npy", i);
        sin[i] = golden_npy(c, f, false);
        snprintf(f, sizeof f, "state_out_%zu.npy", i);
        sw[i] = golden_npy(c, f, false);
        sin_p[i] = sin[i]->data;
        sout[i] = malloc(sin[i]->count * sizeof(float));
        sout2[i] = malloc(sin[i]->count * sizeof(float));
    }
    size_t n_out = want->count;
    float *out = malloc(n_out * sizeof(float)), *out2 = malloc(n_out * sizeof(float));
    ck_assert_int_eq(ss_unroll_run(u, T, B, x->data, len ? lengths : NULL, sin_p, out, sout), 0);
    double rel = 0.0, ab = 0.0;
    errs(out, want->data, n_out, &rel, &ab);
    for (size_t i = 0; i < m->n_states; i++)
        errs(sout[i], sw[i]->data, sw[i]->count, &rel, &ab);
    golden_rel[kern][_i % N_GOLDEN] = rel;
    golden_abs[kern][_i % N_GOLDEN] = ab;
    ck_assert_msg(rel <= SS_UNROLL_BF16_TOL, "%s (%s): bf16 off by %g (bound %g)", c,
                  kernels[kern], rel, SS_UNROLL_BF16_TOL);
    /* Threads and splits: the same bits in bf16 too. */
    for (int th = 2; th <= 3; th++) {
        ck_assert_int_eq(ss_unroll_set_threads(u, th), 0);
        for (int sp = SS_UNROLL_SPLIT_ROWS; sp <= SS_UNROLL_SPLIT_UNITS; sp++) {
            ss_unroll_set_split(u, (ss_unroll_split)sp);
            ck_assert_int_eq(ss_unroll_run(u, T, B, x->data, len ? lengths : NULL, sin_p, out2,
                                           sout2), 0);
            ck_assert_msg(memcmp(out, out2, n_out * sizeof(float)) == 0,
                          "%s: %d threads split %d differ", c, th, sp);
            for (size_t i = 0; i < m->n_states; i++)
                ck_assert(memcmp(sout[i], sout2[i], sin[i]->count * sizeof(float)) == 0);
        }
    }
    for (size_t i = 0; i < m->n_states; i++) {
        free(sout[i]);
        free(sout2[i]);
        ss_npy_free(sin[i]);
        ss_npy_free(sw[i]);
    }
    free(out);
    free(out2);
    ss_unroll_free(u);
    ss_npy_free(want);
    ss_npy_free(len);
    ss_npy_free(x);
    ss_model_free(m);
    ss_pgemm_bf16_set_kernel(SS_BF16_KERNEL_AUTO);
}
END_TEST

/* ---- 10,000 random steps per cell against our fp32 unroll ---- */

struct rnd_case {
    const char *name;       /* printed */
    ss_cell_kind cell;      /* cell */
    bool reset_after;       /* gru variant */
    bool all;               /* lstm: peepholes, cell_clip 3, num_proj 96 */
};

static const struct rnd_case rnd_cases[] = {
    {"basic_rnn", SS_CELL_BASIC_RNN, false, false},
    {"lstm", SS_CELL_LSTM, false, false},
    {"lstm peepholes+clip+proj", SS_CELL_LSTM, false, true},
    {"gru", SS_CELL_GRU, false, false},
    {"gru reset_after", SS_CELL_GRU, true, false},
};
#define N_RND (sizeof rnd_cases / sizeof rnd_cases[0])

/* Random model I=64, H=128, weights uniform in +-1/sqrt(I+H) (training's
 * scale, gates out of saturation); T = 1000 steps of B = 10 rows, inputs
 * uniform in [-1, 1]. */
/* _i = kernel * N_RND + case. */
START_TEST(test_random_steps)
{
    const struct rnd_case *rc = &rnd_cases[_i % N_RND];
    const int kern = _i / (int)N_RND;
    if (!cpu_bf16())
        return; /* test_refused covers this CPU */
    if (!use_kernel(kern))
        return;
    const int I = 64, H = 128, P = rc->all ? 96 : H, T = 1000, B = 10;
    ss_model m = {.cell = rc->cell, .input_size = I, .num_units = H, .num_layers = 1,
                  .activation = SS_ACT_TANH, .forget_bias = 1.0f,
                  .reset_after = rc->reset_after, .output_size = P,
                  .use_peepholes = rc->all, .has_cell_clip = rc->all, .cell_clip = 3.0f,
                  .num_proj = rc->all ? P : 0};
    int sizes[2] = {H, P};
    m.n_states = rc->cell == SS_CELL_LSTM ? 2 : 1;
    m.state_sizes = sizes;
    const size_t n_w = (size_t)(I + P + H) * 4 * H * 2 + 8 * H + (size_t)H * P;
    float *w = malloc(n_w * sizeof(float)), *p = w;
    uint64_t seed = 1000 + (uint64_t)(_i % N_RND);
    const float sc = 1.0f / sqrtf((float)(I + H));
    for (size_t i = 0; i < n_w; i++)
        w[i] = sc * lcg(&seed);
    ss_layer *ly = &m.layers[0];
    ly->in = I;
    switch (rc->cell) {
    case SS_CELL_LSTM:
        ly->kernel = p; p += (size_t)(I + P) * 4 * H;
        ly->bias = p; p += 4 * H;
        ly->w_i_diag = p; p += H;
        ly->w_f_diag = p; p += H;
        ly->w_o_diag = p; p += H;
        ly->proj = p; p += (size_t)H * P;
        break;
    case SS_CELL_GRU:
        if (rc->reset_after) {
            ly->kernel = p; p += (size_t)I * 3 * H;
            ly->recurrent_kernel = p; p += (size_t)H * 3 * H;
            ly->bias = p; p += 6 * H;
        } else {
            ly->kernel = p; p += (size_t)(I + H) * 2 * H;
            ly->bias = p; p += 2 * H;
            ly->cand_kernel = p; p += (size_t)(I + H) * H;
            ly->cand_bias = p; p += H;
        }
        break;
    default:
        ly->kernel = p; p += (size_t)(I + H) * H;
        ly->bias = p; p += H;
        break;
    }
    float *x = malloc((size_t)T * B * I * sizeof(float));
    for (size_t i = 0; i < (size_t)T * B * I; i++)
        x[i] = lcg(&seed);
    float *y32 = malloc((size_t)T * B * P * sizeof(float));
    float *y16 = malloc((size_t)T * B * P * sizeof(float));
    ss_unroll *u32 = NULL, *u16 = NULL;
    ck_assert_int_eq(ss_unroll_new(&u32, &m), 0);
    ck_assert_int_eq(ss_unroll_new_prec(&u16, &m, SS_PRECISION_BF16, NULL), 0);
    ck_assert_int_eq(ss_unroll_run(u32, T, B, x, NULL, NULL, y32, NULL), 0);
    ck_assert_int_eq(ss_unroll_run(u16, T, B, x, NULL, NULL, y16, NULL), 0);
    double rel = 0.0, ab = 0.0;
    errs(y16, y32, (size_t)T * B * P, &rel, &ab);
    printf("bf16 (%s) vs fp32, %s, I=%d H=%d, %d steps x %d rows: worst abs %.3g, "
           "worst rel %.3g\n", kernels[kern], rc->name, I, H, T, B, ab, rel);
    ck_assert_msg(rel <= SS_UNROLL_BF16_TOL, "%s: %g", rc->name, rel);
    ss_unroll_free(u32);
    ss_unroll_free(u16);
    free(x);
    free(y32);
    free(y16);
    free(w);
    ss_pgemm_bf16_set_kernel(SS_BF16_KERNEL_AUTO);
}
END_TEST

START_TEST(test_refused)
{
    const bool had = cpu_bf16();
    ck_assert_int_eq(setenv(SS_CPU_NO_BF16_ENV, "1", 1), 0);
    const char *why = ss_precision_unsupported(SS_PRECISION_BF16);
    ck_assert_ptr_nonnull(why);
    ck_assert_ptr_nonnull(strstr(why, "AVX512_BF16"));
    ck_assert_ptr_null(ss_precision_unsupported(SS_PRECISION_FP32));
    ck_assert(!ss_vmath_has_bf16());
    float w[64];
    for (int i = 0; i < 64; i++)
        w[i] = 0.01f * (float)i;
    ss_model m = {.cell = SS_CELL_BASIC_RNN, .input_size = 4, .num_units = 4, .num_layers = 1,
                  .activation = SS_ACT_TANH, .output_size = 4, .n_states = 1};
    m.layers[0] = (ss_layer){.in = 4, .kernel = w, .bias = w + 32};
    ss_unroll *u = (ss_unroll *)&m; /* must be reset to NULL */
    ck_assert_int_eq(ss_unroll_new_prec(&u, &m, SS_PRECISION_BF16, NULL), SS_ERR_INVALID);
    ck_assert_ptr_null(u);
    ss_pgemm_w pw;
    ck_assert_int_eq(ss_pgemm_pack_bf16(&pw, w, 4, 4, 4), SS_ERR_INVALID);
    /* fp32 is unaffected. */
    ck_assert_int_eq(ss_unroll_new_prec(&u, &m, SS_PRECISION_FP32, NULL), 0);
    ss_unroll_free(u);
    /* "0" means not set. */
    ck_assert_int_eq(setenv(SS_CPU_NO_BF16_ENV, "0", 1), 0);
    ck_assert(cpu_bf16() == had);
    ck_assert_int_eq(unsetenv(SS_CPU_NO_BF16_ENV), 0);
    ss_precision pr;
    ck_assert_int_eq(ss_precision_parse("bf16", &pr), 0);
    ck_assert_int_eq(pr, SS_PRECISION_BF16);
    ck_assert_int_eq(ss_precision_parse("fp32", &pr), 0);
    ck_assert_int_eq(pr, SS_PRECISION_FP32);
    ck_assert_int_eq(ss_precision_parse("fp16", &pr), SS_ERR_INVALID);
    ck_assert_str_eq(ss_precision_name(SS_PRECISION_BF16), "bf16");
}
END_TEST

static Suite *bf16_suite(void)
{
    Suite *s = suite_create("bf16");
    TCase *tc = tcase_create("bf16");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_refused);
    tcase_add_loop_test(tc, test_pgemm_bf16, 0, N_KERNELS);
    tcase_add_loop_test(tc, test_golden_bf16, 0, N_KERNELS * (int)N_GOLDEN);
    tcase_add_loop_test(tc, test_random_steps, 0, N_KERNELS * (int)N_RND);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(bf16_suite());
    /* One process: the golden errors are gathered for the summary. */
    srunner_set_fork_status(sr, CK_NOFORK);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    for (int k = 0; k < N_KERNELS; k++)
        for (size_t i = 0; i < N_GOLDEN; i++)
            printf("bf16 (%s) vs golden (float64 torch), %s: worst abs %.3g, worst rel %.3g\n",
                   kernels[k], golden_cases[i], golden_abs[k][i], golden_rel[k][i]);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
