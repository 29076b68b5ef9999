/* test_model_io -- per-layer sizes, the embedding and the output head.
 *
 * Golden vectors (tests/worker/golden_io, written by gen_golden_io.py with
 * a float64 numpy implementation of DESIGN.md's formulas, no torch): the
 * model run (ss_mrun_run) whole and in two chunks carrying the state, on
 * 1 and 2 threads, equals them within 1e-5 (|d| / max(1, |ref|)). Plus the
 * loader's errors for the new keys and tensors and the per-item error of
 * an out-of-range token id.
 */
#include <check.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "model.h"
#include "model_run.h"
#include "ss_error.h"
#include "ss_npy.h"
#include "unroll.h"

#define TOL 1e-5

static const char *const cases[] = {
    "lstm_sizes_proj", "lstm_sizes3",         "gru_ra_sizes",    "gru_sizes",
    "basic_sizes_relu", "emb_lstm_none",      "emb_lstm_softmax", "emb_lstm_log_softmax",
    "emb_gru_sigmoid", "lstm_head_tanh",
};
#define N_CASES (sizeof(cases) / sizeof(cases[0]))

static void gpath(char *buf, size_t n, const char *c, const char *file)
{
    const char *root = getenv("SS_SOURCE_ROOT");
    snprintf(buf, n, "%s/tests/worker/golden_io/%s/%s", root ? root : ".", c, file);
}

static ss_npy *gnpy(const char *c, const char *file)
{
    char path[1024], err[512];
    ss_npy *a = NULL;
    gpath(path, sizeof path, c, file);
    int rc = ss_npy_read(path, &a, err, sizeof err);
    ck_assert_msg(rc == 0, "%s: %s", path, err);
    return a;
}

static double worst(const float *got, const float *want, size_t n)
{
    double w = 0.0;
    for (size_t i = 0; i < n; i++) {
        double e = fabs((double)got[i] - (double)want[i]) / fmax(1.0, fabs((double)want[i]));
        if (!(e <= w))
            w = isnan(e) ? INFINITY : e;
    }
    return w;
}

/* _i = threads-1 (0, 1) * N_CASES + case */
START_TEST(test_golden_io)
{
    const char *c = cases[_i % N_CASES];
    const int threads = 1 + (int)(_i / N_CASES);
    char path[1024], err[512];
    ss_model *m = NULL;
    gpath(path, sizeof path, c, "model.safetensors");
    ck_assert_msg(ss_model_load(path, &m, err, sizeof err) == 0, "%s", err);
    ss_npy *x = gnpy(c, "inputs.npy"), *len = gnpy(c, "lengths.npy");
    ss_npy *want = gnpy(c, "outputs.npy");
    const int T = (int)want->shape[0], B = (int)want->shape[1];
    const int O = ss_model_out_width(m);
    ck_assert_int_eq(want->shape[2], O);
    ck_assert(m->embedding == (x->dtype == SS_NPY_I64));
    size_t ns = m->n_states;
    ss_npy *sin[2 * SS_MODEL_MAX_LAYERS], *swant[2 * SS_MODEL_MAX_LAYERS];
    float *sout[2 * SS_MODEL_MAX_LAYERS];
    const float *sinp[2 * SS_MODEL_MAX_LAYERS];
    for (size_t i = 0; i < ns; i++) {
        char f[64];
        snprintf(f, sizeof f, "state_in_%zu.npy", i);
        sin[i] = gnpy(c, f);
        snprintf(f, sizeof f, "state_out_%zu.npy", i);
        swant[i] = gnpy(c, f);
        ck_assert_int_eq(sin[i]->shape[1], m->state_sizes[i]);
        sout[i] = malloc((size_t)B * (size_t)m->state_sizes[i] * sizeof(float));
        sinp[i] = sin[i]->data;
    }
    ss_mrun *r = NULL;
    ck_assert_int_eq(ss_mrun_new(&r, m, SS_PRECISION_FP32, NULL), 0);
    ck_assert_int_eq(ss_unroll_set_threads(ss_mrun_unroll(r), threads), 0);
    float *y = malloc((size_t)T * B * (size_t)O * sizeof(float));
    const float *xf = m->embedding ? NULL : x->data;
    const int64_t *ids = m->embedding ? x->data : NULL;

    /* Whole. */
    ck_assert_int_eq(ss_mrun_run(r, T, B, xf, ids, len->data, sinp, y, sout, NULL), 0);
    double w = worst(y, want->data, want->count);
    ck_assert_msg(w <= TOL, "%s (%d threads): outputs off by %g", c, threads, w);
    for (size_t i = 0; i < ns; i++) {
        w = worst(sout[i], swant[i]->data, swant[i]->count);
        ck_assert_msg(w <= TOL, "%s: state %zu off by %g", c, i, w);
    }

    /* Two chunks (T1 steps, then the rest), the state carried. */
    const int T1 = 2, T2 = T - T1;
    const int32_t *L = len->data;
    int32_t l1[64], l2[64];
    for (int b = 0; b < B; b++) {
        l1[b] = L[b] < T1 ? L[b] : T1;
        l2[b] = L[b] > T1 ? L[b] - T1 : 0;
    }
    const size_t I = m->embedding ? 1 : (size_t)m->input_size;
    ck_assert_int_eq(ss_mrun_run(r, T1, B, xf, ids, l1, sinp, y, sout, NULL), 0);
    const float *mid[2 * SS_MODEL_MAX_LAYERS];
    for (size_t i = 0; i < ns; i++)
        mid[i] = sout[i];
    ck_assert_int_eq(ss_mrun_run(r, T2, B, xf ? xf + (size_t)T1 * B * I : NULL,
                                 ids ? ids + (size_t)T1 * B : NULL, l2, mid,
                                 y + (size_t)T1 * B * (size_t)O, sout, NULL),
                     0);
    w = worst(y, want->data, want->count);
    ck_assert_msg(w <= TOL, "%s chunked: outputs off by %g", c, w);
    for (size_t i = 0; i < ns; i++) {
        w = worst(sout[i], swant[i]->data, swant[i]->count);
        ck_assert_msg(w <= TOL, "%s chunked: state %zu off by %g", c, i, w);
    }

    for (size_t i = 0; i < ns; i++) {
        ss_npy_free(sin[i]);
        ss_npy_free(swant[i]);
        free(sout[i]);
    }
    free(y);
    ss_mrun_free(r);
    ss_npy_free(x);
    ss_npy_free(len);
    ss_npy_free(want);
    ss_model_free(m);
}
END_TEST

START_TEST(test_golden_io_list_complete)
{
    char path[1024], line[256];
    gpath(path, sizeof path, "", "CASES");
    FILE *f = fopen(path, "r");
    ck_assert_msg(f != NULL, "%s", path);
    size_t n = 0;
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\n")] = '\0';
        if (!line[0])
            continue;
        bool found = false;
        for (size_t i = 0; i < N_CASES; i++)
            found |= strcmp(cases[i], line) == 0;
        ck_assert_msg(found, "case %s of CASES is not tested", line);
        n++;
    }
    fclose(f);
    ck_assert_uint_eq(n, N_CASES);
}
END_TEST

/* The embedding refuses an id outside [0, vocab) and names its index;
 * ids past a row's length are padding and never looked up. */
START_TEST(test_bad_id)
{
    char path[1024], err[512];
    ss_model *m = NULL;
    gpath(path, sizeof path, "emb_lstm_none", "model.safetensors");
    ck_assert_msg(ss_model_load(path, &m, err, sizeof err) == 0, "%s", err);
    ck_assert_int_eq(m->vocab, 11);
    ss_mrun *r = NULL;
    ck_assert_int_eq(ss_mrun_new(&r, m, SS_PRECISION_FP32, NULL), 0);
    int64_t ids[3 * 2] = {1, 2, 3, 11, 5, 6}; /* [T=3, B=2]: id 11 at t=1, b=1 */
    float y[3 * 2 * 7];
    size_t bad = 0;
    ck_assert_int_eq(ss_mrun_run(r, 3, 2, NULL, ids, NULL, NULL, y, NULL, &bad), SS_ERR_INVALID);
    ck_assert_uint_eq(bad, 3);
    ids[3] = -1;
    ck_assert_int_eq(ss_mrun_run(r, 3, 2, NULL, ids, NULL, NULL, y, NULL, &bad), SS_ERR_INVALID);
    ck_assert_uint_eq(bad, 3);
    int32_t lens[2] = {3, 1}; /* row 1 stops after t=0: ids[3] and ids[5] are padding */
    ck_assert_int_eq(ss_mrun_run(r, 3, 2, NULL, ids, lens, NULL, y, NULL, &bad), 0);
    for (int j = 0; j < 7; j++) /* head output past the length is zero */
        ck_assert(y[(1 * 2 + 1) * 7 + j] == 0.0f);
    float x[3 * 2 * 5] = {0};
    ck_assert_int_eq(ss_mrun_run(r, 3, 2, x, NULL, NULL, NULL, y, NULL, NULL), SS_ERR_INVALID);
    ss_mrun_free(r);
    ss_model_free(m);
}
END_TEST

/* A model file from a golden case with its metadata / tensors edited. */
static char *tmp_model(const char *meta_json, const char *tensors_json, const float *data,
                       size_t nfloats)
{
    char *path = NULL;
    const char *base = getenv("TMPDIR");
    if (asprintf(&path, "%s/ss-model-io-XXXXXX", base ? base : "/tmp") < 0)
        return NULL;
    int fd = mkstemp(path);
    ck_assert(fd >= 0);
    char hdr[4096];
    int n = snprintf(hdr, sizeof hdr, "{\"__metadata__\":%s%s%s}", meta_json,
                     tensors_json[0] ? "," : "", tensors_json);
    while (n % 8)
        hdr[n++] = ' ';
    uint64_t len = (uint64_t)n;
    ck_assert(write(fd, &len, 8) == 8);
    ck_assert(write(fd, hdr, (size_t)n) == n);
    ck_assert(write(fd, data, nfloats * 4) == (ssize_t)(nfloats * 4));
    close(fd);
    return path;
}

typedef struct bad_case {
    const char *name;       /* what is wrong */
    const char *meta;       /* __metadata__ JSON */
    const char *tensors;    /* tensor entries */
    int rc;                 /* expected code */
    const char *want;       /* substring of the message */
} bad_case;

/* basic_rnn, input 1, units 1 (kernel [2, 1] at 0, bias [1] at 8). */
#define BASIC "\"cell\":\"basic_rnn\",\"input_size\":\"1\""
#define KB "\"cell_0/kernel\":{\"dtype\":\"F32\",\"shape\":[2,1],\"data_offsets\":[0,8]}," \
           "\"cell_0/bias\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}"
#define KB2 KB ",\"cell_1/kernel\":{\"dtype\":\"F32\",\"shape\":[3,2],\"data_offsets\":[12,36]}," \
           "\"cell_1/bias\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[36,44]}"

static const bad_case bad_cases[] = {
    {"units list longer than num_layers", "{" BASIC ",\"num_units\":\"1,2\",\"num_layers\":\"3\"}",
     KB2, SS_ERR_FORMAT, "lists 2 sizes, 'num_layers' is 3"},
    {"units list bad entry", "{" BASIC ",\"num_units\":\"1,x\"}", KB2, SS_ERR_FORMAT,
     "'num_units' = \"1,x\""},
    {"units list empty entry", "{" BASIC ",\"num_units\":\"1,\"}", KB2, SS_ERR_FORMAT,
     "'num_units'"},
    {"second layer wrong for its size", "{" BASIC ",\"num_units\":\"1,3\"}", KB2, SS_ERR_SHAPE,
     "'cell_1/kernel' has shape [3, 2], expected [4, 3]"},
    {"embedding missing", "{" BASIC ",\"num_units\":\"1\",\"embedding\":\"true\"}", KB,
     SS_ERR_FORMAT, "missing tensor 'embedding/weights' (expected float32 [vocab, 1])"},
    {"embedding wrong width", "{" BASIC ",\"num_units\":\"1\",\"embedding\":\"true\"}",
     KB ",\"embedding/weights\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[12,28]}",
     SS_ERR_SHAPE, "'embedding/weights' has shape [2, 2], expected [2, 1]"},
    {"embedding flag bad", "{" BASIC ",\"num_units\":\"1\",\"embedding\":\"yes\"}", KB,
     SS_ERR_FORMAT, "'embedding' = \"yes\""},
    {"head unknown", "{" BASIC ",\"num_units\":\"1\",\"head\":\"mlp\"}", KB, SS_ERR_FORMAT,
     "'head' = \"mlp\": expected linear or none"},
    {"head activation unknown",
     "{" BASIC ",\"num_units\":\"1\",\"head\":\"linear\",\"head_activation\":\"relu\"}", KB,
     SS_ERR_FORMAT, "'head_activation' = \"relu\""},
    {"head kernel missing", "{" BASIC ",\"num_units\":\"1\",\"head\":\"linear\"}", KB,
     SS_ERR_FORMAT, "missing tensor 'head/kernel' (expected float32 [1, out])"},
    {"head kernel rows", "{" BASIC ",\"num_units\":\"1\",\"head\":\"linear\"}",
     KB ",\"head/kernel\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[12,28]},"
        "\"head/bias\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[28,36]}",
     SS_ERR_SHAPE, "'head/kernel' has shape [2, 2], expected [1, 2]"},
    {"head bias missing", "{" BASIC ",\"num_units\":\"1\",\"head\":\"linear\"}",
     KB ",\"head/kernel\":{\"dtype\":\"F32\",\"shape\":[1,2],\"data_offsets\":[12,20]}",
     SS_ERR_FORMAT, "missing tensor 'head/bias' (expected float32 [2])"},
};
#define N_BAD (sizeof(bad_cases) / sizeof(bad_cases[0]))

START_TEST(test_bad_model)
{
    const bad_case *bc = &bad_cases[_i];
    float data[16] = {0};
    char *path = tmp_model(bc->meta, bc->tensors, data, 16);
    ck_assert(path != NULL);
    ss_model *m = NULL;
    char err[512] = "";
    int rc = ss_model_load(path, &m, err, sizeof err);
    ck_assert_msg(rc == bc->rc, "%s: rc %d, want %d (%s)", bc->name, rc, bc->rc, err);
    ck_assert_msg(strstr(err, bc->want) != NULL, "%s: message \"%s\" lacks \"%s\"", bc->name,
                  err, bc->want);
    ck_assert(m == NULL);
    unlink(path);
    free(path);
}
END_TEST

/* num_units "1,2" gives per-layer states; a good file loads. */
START_TEST(test_sizes_states)
{
    float data[16] = {0};
    char *path = tmp_model("{" BASIC ",\"num_units\":\"1,2\"}", KB2, data, 16);
    ss_model *m = NULL;
    char err[512] = "";
    ck_assert_msg(ss_model_load(path, &m, err, sizeof err) == 0, "%s", err);
    ck_assert_int_eq(m->num_layers, 2);
    ck_assert_int_eq(m->state_sizes[0], 1);
    ck_assert_int_eq(m->state_sizes[1], 2);
    ck_assert_int_eq(m->output_size, 2);
    ck_assert_int_eq(ss_model_out_width(m), 2);
    ck_assert_int_eq(ss_model_units(m, 1), 2);
    ss_model_free(m);
    unlink(path);
    free(path);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("model_io");
    TCase *tc = tcase_create("golden");
    tcase_set_timeout(tc, 60);
    tcase_add_loop_test(tc, test_golden_io, 0, (int)(2 * N_CASES));
    tcase_add_test(tc, test_golden_io_list_complete);
    tcase_add_test(tc, test_bad_id);
    tcase_add_loop_test(tc, test_bad_model, 0, (int)N_BAD);
    tcase_add_test(tc, test_sizes_states);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
