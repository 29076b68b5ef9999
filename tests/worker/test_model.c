/* test_model -- Check suite for safetensors parsing and model loading
 * (worker/safetensors.c, worker/model.c). Model files are written from C. */
#include <check.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "model.h"
#include "safetensors.h"
#include "ss_error.h"
#include "ss_log.h"

static char tmpdir[256];
static char path[512];

static void setup(void)
{
    const char *base = getenv("TMPDIR");
    snprintf(tmpdir, sizeof tmpdir, "%s/test-model-XXXXXX", base ? base : "/tmp");
    ck_assert_ptr_nonnull(mkdtemp(tmpdir));
    snprintf(path, sizeof path, "%s/m.safetensors", tmpdir);
    ss_log_threshold = SS_LOG_ERROR; /* the ignored-key warnings are expected */
}

static void teardown(void)
{
    unlink(path);
    rmdir(tmpdir);
}

/* Value of element j of the k-th tensor written by write_model. */
static float fill_value(int k, size_t j)
{
    return (float)k * 1000.0f + (float)j;
}

/* Write a float32 model. meta: "k=v;k=v"; tensors: "name:AxB;name:C". */
static void write_model(const char *meta, const char *tensors)
{
    const char *keys[32], *vals[32];
    ss_st_wtensor ts[32];
    float *bufs[32];
    size_t nm = 0, nt = 0;
    char *mcopy = strdup(meta), *tcopy = strdup(tensors);
    char *save = NULL;
    for (char *kv = strtok_r(mcopy, ";", &save); kv; kv = strtok_r(NULL, ";", &save)) {
        char *eq = strchr(kv, '=');
        ck_assert_ptr_nonnull(eq);
        *eq = '\0';
        keys[nm] = kv;
        vals[nm++] = eq + 1;
    }
    for (char *t = strtok_r(tcopy, ";", &save); t; t = strtok_r(NULL, ";", &save)) {
        char *colon = strchr(t, ':');
        ck_assert_ptr_nonnull(colon);
        *colon = '\0';
        ss_st_wtensor *w = &ts[nt];
        memset(w, 0, sizeof *w);
        w->name = t;
        size_t count = 1;
        for (char *p = colon + 1; *p;) {
            char *end;
            w->shape[w->ndim++] = strtoll(p, &end, 10);
            count *= (size_t)w->shape[w->ndim - 1];
            p = *end == 'x' ? end + 1 : end;
        }
        bufs[nt] = malloc((count ? count : 1) * sizeof(float));
        for (size_t j = 0; j < count; j++)
            bufs[nt][j] = fill_value((int)nt, j);
        w->data = bufs[nt];
        nt++;
    }
    char err[512] = "";
    int rc = ss_st_write(path, keys, vals, nm, ts, nt, err, sizeof err);
    ck_assert_msg(rc == 0, "write: %s", err);
    for (size_t i = 0; i < nt; i++)
        free(bufs[i]);
    free(mcopy);
    free(tcopy);
}

/* Write a file byte for byte: length field, header text, data_len zero
 * bytes. len_field -1: strlen(header); -2: only the data_len bytes. */
static void write_raw(long long len_field, const char *header, size_t data_len)
{
    FILE *f = fopen(path, "wb");
    ck_assert_ptr_nonnull(f);
    if (len_field == -2) {
        for (size_t i = 0; i < data_len; i++)
            fputc(0, f);
        ck_assert_int_eq(fclose(f), 0);
        return;
    }
    uint64_t n = len_field >= 0 ? (uint64_t)len_field : strlen(header);
    for (int i = 0; i < 8; i++)
        fputc((int)((n >> (8 * i)) & 0xff), f);
    fputs(header, f);
    for (size_t i = 0; i < data_len; i++)
        fputc(0, f);
    ck_assert_int_eq(fclose(f), 0);
}

static ss_model *load_ok(void)
{
    ss_model *m = NULL;
    char err[512] = "";
    int rc = ss_model_load(path, &m, err, sizeof err);
    ck_assert_msg(rc == 0, "load: %s", err);
    return m;
}

#define LSTM "cell=lstm;input_size=3;num_units=4"
#define LSTM0 "cell_0/kernel:7x16;cell_0/bias:16"
#define BASIC_META "\"__metadata__\":{\"cell\":\"basic_rnn\",\"input_size\":\"1\",\"num_units\":\"1\"}"
#define K_OK "\"cell_0/kernel\":{\"dtype\":\"F32\",\"shape\":[2,1],\"data_offsets\":[0,8]}"
#define B_OK "\"cell_0/bias\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}"

struct bad_case {
    const char *name;     /* what the case exercises */
    const char *meta;     /* write_model metadata (when raw == NULL) */
    const char *tensors;  /* write_model tensors (when raw == NULL) */
    const char *raw;      /* raw header text, or NULL */
    size_t raw_data;      /* raw: data bytes */
    long long raw_len;    /* raw: length field, -1 = strlen(raw) */
    int want_rc;          /* expected return code */
    const char *want1;    /* substrings the message must contain */
    const char *want2;
};

static const struct bad_case bad_cases[] = {
    /* metadata */
    {"missing cell", "input_size=3;num_units=4", LSTM0, NULL, 0, 0, SS_ERR_FORMAT, "'cell'", "missing"},
    {"missing input_size", "cell=lstm;num_units=4", LSTM0, NULL, 0, 0, SS_ERR_FORMAT, "'input_size'", "missing"},
    {"missing num_units", "cell=lstm;input_size=3", LSTM0, NULL, 0, 0, SS_ERR_FORMAT, "'num_units'", "missing"},
    {"unknown cell", "cell=transformer;input_size=3;num_units=4", LSTM0, NULL, 0, 0, SS_ERR_FORMAT, "transformer", "basic_rnn, lstm or gru"},
    {"unknown activation", LSTM ";activation=gelu", LSTM0, NULL, 0, 0, SS_ERR_FORMAT, "gelu", "tanh or relu"},
    {"bad integer", "cell=lstm;input_size=3x;num_units=4", LSTM0, NULL, 0, 0, SS_ERR_FORMAT, "'input_size' = \"3x\"", "integer"},
    {"zero input_size", "cell=lstm;input_size=0;num_units=4", LSTM0, NULL, 0, 0, SS_ERR_FORMAT, "'input_size'", "integer"},
    {"negative num_units", "cell=lstm;input_size=3;num_units=-4", LSTM0, NULL, 0, 0, SS_ERR_FORMAT, "'num_units'", "integer"},
    {"huge num_units", "cell=lstm;input_size=3;num_units=99999999999999", LSTM0, NULL, 0, 0, SS_ERR_FORMAT, "'num_units'", "integer"},
    {"too many layers", LSTM ";num_layers=17", LSTM0, NULL, 0, 0, SS_ERR_FORMAT, "'num_layers'", "[1, 16]"},
    {"bad bool", LSTM ";use_peepholes=yes", LSTM0, NULL, 0, 0, SS_ERR_FORMAT, "'use_peepholes'", "true or false"},
    {"bad float", LSTM ";forget_bias=abc", LSTM0, NULL, 0, 0, SS_ERR_FORMAT, "'forget_bias'", "number"},
    {"infinite float", LSTM ";forget_bias=inf", LSTM0, NULL, 0, 0, SS_ERR_FORMAT, "'forget_bias'", "finite"},
    {"negative cell_clip", LSTM ";cell_clip=-1", LSTM0, NULL, 0, 0, SS_ERR_FORMAT, "'cell_clip'", ">= 0"},
    {"zero num_proj", LSTM ";num_proj=0", LSTM0, NULL, 0, 0, SS_ERR_FORMAT, "'num_proj'", "integer"},
    {"state_names count", LSTM ";state_names=a,b,c", LSTM0, NULL, 0, 0, SS_ERR_FORMAT, "lists 3 names", "2 states"},
    {"state_names duplicate", LSTM ";state_names=a,a", LSTM0, NULL, 0, 0, SS_ERR_FORMAT, "'a' appears twice", "state_names"},
    {"state_names empty", LSTM ";state_names=a,", LSTM0, NULL, 0, 0, SS_ERR_FORMAT, "state_names", "empty"},
    {"state_names with =", LSTM ";state_names=a=1,b", LSTM0, NULL, 0, 0, SS_ERR_FORMAT, "state_names", "'='"},
    /* tensors */
    {"missing tensor", LSTM, "cell_0/kernel:7x16", NULL, 0, 0, SS_ERR_FORMAT, "missing tensor 'cell_0/bias'", "[16]"},
    {"wrong shape", LSTM, "cell_0/kernel:6x16;cell_0/bias:16", NULL, 0, 0, SS_ERR_SHAPE, "'cell_0/kernel' has shape [6, 16]", "expected [7, 16]"},
    {"wrong rank", LSTM, "cell_0/kernel:7x16;cell_0/bias:1x16", NULL, 0, 0, SS_ERR_SHAPE, "'cell_0/bias' has shape [1, 16]", "expected [16]"},
    {"second layer missing", LSTM ";num_layers=2", LSTM0, NULL, 0, 0, SS_ERR_FORMAT, "'cell_1/kernel'", "[8, 16]"},
    {"peephole missing", LSTM ";use_peepholes=true", LSTM0 ";cell_0/w_i_diag:4;cell_0/w_o_diag:4", NULL, 0, 0, SS_ERR_FORMAT, "'cell_0/w_f_diag'", "[4]"},
    {"projection missing", LSTM ";num_proj=2", "cell_0/kernel:5x16;cell_0/bias:16", NULL, 0, 0, SS_ERR_FORMAT, "'cell_0/projection/kernel'", "[4, 2]"},
    {"projected layer 0 input width", LSTM ";num_proj=2", LSTM0 ";cell_0/projection/kernel:4x2", NULL, 0, 0, SS_ERR_SHAPE, "'cell_0/kernel' has shape [7, 16]", "expected [5, 16]"},
    {"projected layer 1 input width", LSTM ";num_proj=2;num_layers=2",
     "cell_0/kernel:5x16;cell_0/bias:16;cell_0/projection/kernel:4x2;cell_1/kernel:6x16;cell_1/bias:16;cell_1/projection/kernel:4x2", NULL, 0, 0, SS_ERR_SHAPE, "'cell_1/kernel' has shape [6, 16]", "expected [4, 16]"},
    {"gru reset_after missing recurrent", "cell=gru;input_size=3;num_units=4;reset_after=true",
     "cell_0/kernel:3x12;cell_0/bias:2x12", NULL, 0, 0, SS_ERR_FORMAT, "'cell_0/recurrent_kernel'", "[4, 12]"},
    {"gru candidate shape", "cell=gru;input_size=3;num_units=4",
     "cell_0/gates/kernel:7x8;cell_0/gates/bias:8;cell_0/candidate/kernel:7x8;cell_0/candidate/bias:4", NULL, 0, 0, SS_ERR_SHAPE, "'cell_0/candidate/kernel' has shape [7, 8]", "expected [7, 4]"},
    {"basic wrong bias", "cell=basic_rnn;input_size=3;num_units=4", "cell_0/kernel:7x4;cell_0/bias:5", NULL, 0, 0, SS_ERR_SHAPE, "'cell_0/bias' has shape [5]", "expected [4]"},
    {"dtype F64", NULL, NULL, "{" BASIC_META ",\"cell_0/kernel\":{\"dtype\":\"F64\",\"shape\":[2,1],\"data_offsets\":[0,16]}," "\"cell_0/bias\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[16,20]}}", 20, -1, SS_ERR_SHAPE, "'cell_0/kernel' has dtype F64", "expected F32"},
    /* safetensors container */
    {"file too short", NULL, NULL, "", 3, -2, SS_ERR_FORMAT, "too short", "8-byte"},
    {"header over 100 MiB", NULL, NULL, "{}", 0, 100LL * 1024 * 1024 + 1, SS_ERR_TOO_BIG, "header length 104857601", "limit"},
    {"header past end of file", NULL, NULL, "{}", 0, 1000, SS_ERR_FORMAT, "header length 1000", "exceeds"},
    {"header not JSON", NULL, NULL, "{\"a\": nope}", 0, -1, SS_ERR_FORMAT, "not valid JSON", "byte"},
    {"header is an array", NULL, NULL, "[1, 2]", 0, -1, SS_ERR_FORMAT, "not a JSON object", ""},
    {"garbage after header", NULL, NULL, "{" BASIC_META "}xyz", 0, -1, SS_ERR_FORMAT, "unexpected bytes", "byte"},
    {"offsets out of range", NULL, NULL, "{" BASIC_META "," K_OK ",\"cell_0/bias\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}}", 11, -1, SS_ERR_FORMAT, "'cell_0/bias'", "outside the data section of 11 bytes"},
    {"offsets reversed", NULL, NULL, "{" BASIC_META "," K_OK ",\"cell_0/bias\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[12,8]}}", 12, -1, SS_ERR_FORMAT, "'cell_0/bias'", "outside"},
    {"offsets span mismatch", NULL, NULL, "{" BASIC_META "," K_OK ",\"cell_0/bias\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,16]}}", 16, -1, SS_ERR_FORMAT, "span 8 bytes", "needs 4"},
    {"tensors overlap", NULL, NULL, "{" BASIC_META "," K_OK ",\"cell_0/bias\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8, -1, SS_ERR_FORMAT, "overlap", "cell_0/bias"},
    {"unknown dtype", NULL, NULL, "{" BASIC_META "," K_OK ",\"cell_0/bias\":{\"dtype\":\"Q7\",\"shape\":[1],\"data_offsets\":[8,12]}}", 12, -1, SS_ERR_FORMAT, "unknown dtype \"Q7\"", "cell_0/bias"},
    {"fractional dimension", NULL, NULL, "{" BASIC_META "," K_OK ",\"cell_0/bias\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[8,12]}}", 12, -1, SS_ERR_FORMAT, "shape[0]", "cell_0/bias"},
    {"offsets arity", NULL, NULL, "{" BASIC_META "," K_OK ",\"cell_0/bias\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8]}}", 12, -1, SS_ERR_FORMAT, "data_offsets", "cell_0/bias"},
    {"missing dtype", NULL, NULL, "{" BASIC_META "," K_OK ",\"cell_0/bias\":{\"shape\":[1],\"data_offsets\":[8,12]}}", 12, -1, SS_ERR_FORMAT, "dtype", "cell_0/bias"},
    {"tensor twice", NULL, NULL, "{" BASIC_META "," K_OK "," B_OK "," B_OK "}", 12, -1, SS_ERR_FORMAT, "'cell_0/bias' appears twice", ""},
    {"metadata not strings", NULL, NULL, "{\"__metadata__\":{\"cell\":\"basic_rnn\",\"input_size\":1,\"num_units\":\"1\"}," K_OK "," B_OK "}", 12, -1, SS_ERR_FORMAT, "'input_size'", "string value"},
    {"metadata not object", NULL, NULL, "{\"__metadata__\":[1]," K_OK "," B_OK "}", 12, -1, SS_ERR_FORMAT, "__metadata__", "object"},
    {"no metadata at all", NULL, NULL, "{" K_OK "," B_OK "}", 12, -1, SS_ERR_FORMAT, "'cell'", "missing"},
};

START_TEST(test_model_bad)
{
    const struct bad_case *c = &bad_cases[_i];
    if (c->raw != NULL)
        write_raw(c->raw_len, c->raw, c->raw_data);
    else
        write_model(c->meta, c->tensors);
    ss_model *m = NULL;
    char err[512] = "";
    int rc = ss_model_load(path, &m, err, sizeof err);
    ck_assert_msg(rc == c->want_rc, "%s: rc %d want %d (%s)", c->name, rc, c->want_rc, err);
    ck_assert_ptr_null(m);
    ck_assert_msg(strstr(err, path) != NULL, "%s: message does not name the file: %s",
                  c->name, err);
    ck_assert_msg(strstr(err, c->want1) != NULL, "%s: '%s' lacks '%s'", c->name, err, c->want1);
    ck_assert_msg(strstr(err, c->want2) != NULL, "%s: '%s' lacks '%s'", c->name, err, c->want2);
}
END_TEST

START_TEST(test_model_missing_file)
{
    ss_model *m = NULL;
    char err[512] = "";
    ck_assert_int_eq(ss_model_load("/nonexistent/m.safetensors", &m, err, sizeof err), SS_ERR_IO);
    ck_assert_ptr_nonnull(strstr(err, "/nonexistent/m.safetensors"));
    ss_model_free(NULL);
}
END_TEST

START_TEST(test_model_lstm_defaults)
{
    write_model(LSTM, LSTM0 ";extra/unused:3");
    ss_model *m = load_ok();
    ck_assert_int_eq(m->cell, SS_CELL_LSTM);
    ck_assert_int_eq(m->input_size, 3);
    ck_assert_int_eq(m->num_units, 4);
    ck_assert_int_eq(m->num_layers, 1);
    ck_assert_int_eq(m->activation, SS_ACT_TANH);
    ck_assert_float_eq(m->forget_bias, 1.0f);
    ck_assert(!m->use_peepholes && !m->has_cell_clip && !m->reset_after);
    ck_assert_int_eq(m->num_proj, 0);
    ck_assert_int_eq(m->output_size, 4);
    ck_assert_uint_eq(m->n_states, 2);
    ck_assert_str_eq(m->state_names[0], "cell_0/c");
    ck_assert_str_eq(m->state_names[1], "cell_0/h");
    ck_assert_int_eq(m->state_sizes[0], 4);
    ck_assert_int_eq(m->state_sizes[1], 4);
    ck_assert_int_eq(m->layers[0].in, 3);
    for (size_t j = 0; j < 7 * 16; j++)
        ck_assert_float_eq(m->layers[0].kernel[j], fill_value(0, j));
    for (size_t j = 0; j < 16; j++)
        ck_assert_float_eq(m->layers[0].bias[j], fill_value(1, j));
    ck_assert_ptr_null(m->layers[0].w_i_diag);
    ck_assert_ptr_null(m->layers[0].proj);
    ck_assert_ptr_null(m->layers[0].recurrent_kernel);
    ck_assert_ptr_nonnull(m->mem);
    ck_assert_uint_gt(m->mem_len, 0);
    ss_model_free(m);
}
END_TEST

START_TEST(test_model_lstm_everything)
{
    write_model(LSTM ";num_layers=2;activation=relu;forget_bias=0.5;use_peepholes=True;"
                "cell_clip=3.5;num_proj=2;state_names=a/c,a/h,b/c,b/h;format=pt",
                "cell_0/kernel:5x16;cell_0/bias:16;cell_0/w_i_diag:4;cell_0/w_f_diag:4;"
                "cell_0/w_o_diag:4;cell_0/projection/kernel:4x2;"
                "cell_1/kernel:4x16;cell_1/bias:16;cell_1/w_i_diag:4;cell_1/w_f_diag:4;"
                "cell_1/w_o_diag:4;cell_1/projection/kernel:4x2");
    ss_model *m = load_ok();
    ck_assert_int_eq(m->num_layers, 2);
    ck_assert_int_eq(m->activation, SS_ACT_RELU);
    ck_assert_float_eq(m->forget_bias, 0.5f);
    ck_assert(m->use_peepholes);
    ck_assert(m->has_cell_clip);
    ck_assert_float_eq(m->cell_clip, 3.5f);
    ck_assert_int_eq(m->num_proj, 2);
    ck_assert_int_eq(m->output_size, 2);
    ck_assert_int_eq(m->layers[0].in, 3);
    ck_assert_int_eq(m->layers[1].in, 2);
    ck_assert_uint_eq(m->n_states, 4);
    static const char *const names[] = {"a/c", "a/h", "b/c", "b/h"};
    static const int sizes[] = {4, 2, 4, 2};
    for (int i = 0; i < 4; i++) {
        ck_assert_str_eq(m->state_names[i], names[i]);
        ck_assert_int_eq(m->state_sizes[i], sizes[i]);
    }
    ck_assert_float_eq(m->layers[0].w_f_diag[3], fill_value(3, 3));
    ck_assert_float_eq(m->layers[1].proj[7], fill_value(11, 7));
    ck_assert_float_eq(m->layers[1].kernel[0], fill_value(6, 0));
    ss_model_free(m);
}
END_TEST

START_TEST(test_model_gru)
{
    write_model("cell=gru;input_size=3;num_units=4;num_layers=2;forget_bias=2",
                "cell_0/gates/kernel:7x8;cell_0/gates/bias:8;cell_0/candidate/kernel:7x4;"
                "cell_0/candidate/bias:4;cell_1/gates/kernel:8x8;cell_1/gates/bias:8;"
                "cell_1/candidate/kernel:8x4;cell_1/candidate/bias:4");
    ss_model *m = load_ok();
    ck_assert_int_eq(m->cell, SS_CELL_GRU);
    ck_assert(!m->reset_after);
    ck_assert_float_eq(m->forget_bias, 0.0f); /* lstm-only key ignored */
    ck_assert_uint_eq(m->n_states, 2);
    ck_assert_str_eq(m->state_names[0], "cell_0/h");
    ck_assert_str_eq(m->state_names[1], "cell_1/h");
    ck_assert_int_eq(m->layers[1].in, 4);
    ck_assert_float_eq(m->layers[0].cand_kernel[5], fill_value(2, 5));
    ck_assert_float_eq(m->layers[1].cand_bias[3], fill_value(7, 3));
    ck_assert_float_eq(m->layers[1].bias[1], fill_value(5, 1));
    ss_model_free(m);

    write_model("cell=gru;input_size=3;num_units=4;reset_after=true",
                "cell_0/kernel:3x12;cell_0/recurrent_kernel:4x12;cell_0/bias:2x12");
    m = load_ok();
    ck_assert(m->reset_after);
    ck_assert_ptr_null(m->layers[0].cand_kernel);
    ck_assert_float_eq(m->layers[0].recurrent_kernel[47], fill_value(1, 47));
    ck_assert_float_eq(m->layers[0].bias[23], fill_value(2, 23));
    ss_model_free(m);
}
END_TEST

START_TEST(test_model_basic)
{
    write_model("cell=basic_rnn;input_size=2;num_units=3;activation=relu;reset_after=false",
                "cell_0/kernel:5x3;cell_0/bias:3");
    ss_model *m = load_ok();
    ck_assert_int_eq(m->cell, SS_CELL_BASIC_RNN);
    ck_assert_int_eq(m->activation, SS_ACT_RELU);
    ck_assert_uint_eq(m->n_states, 1);
    ck_assert_str_eq(m->state_names[0], "cell_0/h");
    ck_assert_int_eq(m->state_sizes[0], 3);
    ck_assert_int_eq(m->output_size, 3);
    ss_model_free(m);
}
END_TEST

/* A header whose length is not a multiple of 4 leaves the float data
 * misaligned in the mapping; the loader must hand out aligned copies. */
START_TEST(test_model_misaligned)
{
    char hdr[512];
    snprintf(hdr, sizeof hdr, "{" BASIC_META "," K_OK "," B_OK "}");
    while ((8 + strlen(hdr)) % 4 != 2)
        strcat(hdr, " ");
    write_raw(-1, hdr, 0);
    /* Append real values: kernel [2, 1] = {1.5, -2}, bias [1] = {0.25}. */
    FILE *f = fopen(path, "ab");
    float vals[3] = {1.5f, -2.0f, 0.25f};
    fwrite(vals, sizeof(float), 3, f);
    fclose(f);
    ss_model *m = load_ok();
    ck_assert_uint_eq((uintptr_t)m->layers[0].kernel % 4, 0);
    ck_assert_uint_eq((uintptr_t)m->layers[0].bias % 4, 0);
    ck_assert_float_eq(m->layers[0].kernel[0], 1.5f);
    ck_assert_float_eq(m->layers[0].kernel[1], -2.0f);
    ck_assert_float_eq(m->layers[0].bias[0], 0.25f);
    ss_model_free(m);
}
END_TEST

/* Files written by tests/worker/gen_golden.py (Python) load. */
START_TEST(test_model_golden_files)
{
    const char *src = getenv("SS_SOURCE_ROOT");
    ck_assert_msg(src != NULL, "SS_SOURCE_ROOT not set");
    char p[1024];
    snprintf(p, sizeof p, "%s/tests/worker/golden/CASES", src);
    FILE *cases = fopen(p, "r");
    ck_assert_msg(cases != NULL, "cannot open %s", p);
    char name[256];
    int n = 0;
    while (fscanf(cases, "%255s", name) == 1) {
        snprintf(p, sizeof p, "%s/tests/worker/golden/%s/model.safetensors", src, name);
        ss_model *m = NULL;
        char err[512] = "";
        ck_assert_msg(ss_model_load(p, &m, err, sizeof err) == 0, "%s: %s", name, err);
        ck_assert_uint_gt(m->n_states, 0);
        ck_assert_ptr_nonnull(m->layers[0].kernel);
        ss_model_free(m);
        n++;
    }
    fclose(cases);
    ck_assert_int_gt(n, 0);
}
END_TEST

START_TEST(test_st_roundtrip)
{
    write_model("a=1;b=two", "x:2x3;y:0;z:1x1x1x1");
    ss_st_file *f = NULL;
    char err[512] = "";
    ck_assert_msg(ss_st_open(path, &f, err, sizeof err) == 0, "%s", err);
    ck_assert_uint_eq(ss_st_count(f), 3);
    ck_assert_uint_eq(ss_st_meta_count(f), 2);
    ck_assert_str_eq(ss_st_meta(f, "b"), "two");
    ck_assert_ptr_null(ss_st_meta(f, "c"));
    const ss_st_tensor *x = ss_st_find(f, "x");
    ck_assert_ptr_nonnull(x);
    ck_assert_str_eq(x->dtype, "F32");
    ck_assert_int_eq(x->ndim, 2);
    ck_assert_int_eq(x->shape[1], 3);
    ck_assert_uint_eq(x->nbytes, 24);
    ck_assert_float_eq(((const float *)x->data)[5], fill_value(0, 5));
    ck_assert_uint_eq(ss_st_find(f, "y")->nbytes, 0);
    ck_assert_int_eq(ss_st_at(f, 2)->ndim, 4);
    ck_assert_ptr_null(ss_st_at(f, 3));
    const char *k, *v;
    ss_st_meta_at(f, 0, &k, &v);
    ck_assert_str_eq(k, "a");
    ck_assert_str_eq(v, "1");
    ss_st_close(f);
    ss_st_close(NULL);

    /* A failed write leaves nothing. */
    char bad[600];
    snprintf(bad, sizeof bad, "%s/missing-dir/m.safetensors", tmpdir);
    ss_st_wtensor t = {.name = "x", .ndim = 1, .shape = {1}, .data = (const float[]){1}};
    ck_assert_int_eq(ss_st_write(bad, NULL, NULL, 0, &t, 1, err, sizeof err), SS_ERR_IO);
    ck_assert_int_eq(access(bad, F_OK), -1);
}
END_TEST

static Suite *model_suite(void)
{
    Suite *s = suite_create("model");
    TCase *tc = tcase_create("model");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_loop_test(tc, test_model_bad, 0, (int)(sizeof bad_cases / sizeof bad_cases[0]));
    tcase_add_test(tc, test_model_missing_file);
    tcase_add_test(tc, test_model_lstm_defaults);
    tcase_add_test(tc, test_model_lstm_everything);
    tcase_add_test(tc, test_model_gru);
    tcase_add_test(tc, test_model_basic);
    tcase_add_test(tc, test_model_misaligned);
    tcase_add_test(tc, test_model_golden_files);
    tcase_add_test(tc, test_st_roundtrip);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(model_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
