/* test_unroll_cmd -- runs the real `statesaver-worker unroll` on good and
 * bad files: bad input must exit 2, name the file with the expected and
 * found shape, and leave no output (nor temporary) file behind. */
#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "ss_npy.h"
#include "safetensors.h"
#include "ss_error.h"

/* Longest a single run of the binary may take before the test fails. */
#define RUN_TIMEOUT_MS 30000
#define MAX_ARGS 64

static char tmpdir[256];
static char binary[512];
static char out_text[16384]; /* stderr + stdout of the last run */

/* Model: basic_rnn relu, input 1, units 1: h' = relu(x + 0.5 h + 0.25). */
#define T_STEPS 4
#define BATCH 2

static void tpath(char *buf, size_t sz, const char *name)
{
    snprintf(buf, sz, "%s/%s", tmpdir, name);
}

static void write_npy(const char *name, ss_npy_dtype dt, int ndim, const int64_t *shape,
                      const void *data)
{
    char p[512], err[512];
    tpath(p, sizeof p, name);
    ck_assert_msg(ss_npy_write(p, dt, ndim, shape, data, err, sizeof err) == 0, "%s", err);
}

static void write_model(const char *name, const char *bias_name, int kernel_rows)
{
    char p[512], err[512];
    tpath(p, sizeof p, name);
    static const char *const keys[] = {"cell", "input_size", "num_units", "activation"};
    static const char *const vals[] = {"basic_rnn", "1", "1", "relu"};
    static const float kernel[3] = {1.0f, 0.5f, 0.0f};
    static const float bias[1] = {0.25f};
    ss_st_wtensor ts[2] = {
        {.name = "cell_0/kernel", .ndim = 2, .shape = {kernel_rows, 1}, .data = kernel},
        {.name = bias_name, .ndim = 1, .shape = {1}, .data = bias},
    };
    ck_assert_msg(ss_st_write(p, keys, vals, 4, ts, 2, err, sizeof err) == 0, "%s", err);
}

static const float x_vals[T_STEPS * BATCH] = {1, -1, 2, 3, -4, 0.5f, 1, 2};

static void setup(void)
{
    const char *base = getenv("TMPDIR");
    snprintf(tmpdir, sizeof tmpdir, "%s/test-unroll-cmd-XXXXXX", base ? base : "/tmp");
    ck_assert_ptr_nonnull(mkdtemp(tmpdir));
    const char *root = getenv("SS_BUILD_ROOT");
    ck_assert_msg(root != NULL, "SS_BUILD_ROOT not set (run through meson test)");
    snprintf(binary, sizeof binary, "%s/worker/statesaver-worker", root);
    ck_assert_msg(access(binary, X_OK) == 0, "%s not built", binary);

    write_model("m.st", "cell_0/bias", 2);
    write_npy("X.npy", SS_NPY_F32, 3, (const int64_t[]){T_STEPS, BATCH, 1}, x_vals);
    write_npy("L.npy", SS_NPY_I32, 1, (const int64_t[]){BATCH}, (const int32_t[]){4, 2});
    write_npy("S.npy", SS_NPY_F32, 2, (const int64_t[]){BATCH, 1}, (const float[]){2, -3});
}

static void teardown(void)
{
    DIR *d = opendir(tmpdir);
    if (d != NULL) {
        struct dirent *e;
        char p[600];
        while ((e = readdir(d)) != NULL) {
            if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
                continue;
            snprintf(p, sizeof p, "%s/%s", tmpdir, e->d_name);
            unlink(p);
        }
        closedir(d);
    }
    rmdir(tmpdir);
}

static int count_entries(void)
{
    int n = 0;
    DIR *d = opendir(tmpdir);
    ck_assert_ptr_nonnull(d);
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
            n++;
    closedir(d);
    return n;
}

/* Run the binary with space-separated args ('@' stands for the temp dir);
 * returns the exit status; output lands in out_text. */
static int run(const char *args)
{
    char buf[8192], expanded[8192];
    size_t o = 0;
    for (const char *p = args; *p && o + sizeof tmpdir < sizeof expanded; p++) {
        if (*p == '@') {
            o += (size_t)snprintf(expanded + o, sizeof expanded - o, "%s", tmpdir);
        } else {
            expanded[o++] = *p;
        }
    }
    expanded[o] = '\0';
    snprintf(buf, sizeof buf, "%s", expanded);
    char *argv[MAX_ARGS];
    int argc = 0;
    argv[argc++] = binary;
    char *save = NULL;
    for (char *t = strtok_r(buf, " ", &save); t && argc < MAX_ARGS - 1;
         t = strtok_r(NULL, " ", &save))
        argv[argc++] = t;
    argv[argc] = NULL;

    char outp[512];
    snprintf(outp, sizeof outp, "%s.out", tmpdir);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        int fd = open(outp, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        if (fd < 0)
            _exit(127);
        dup2(fd, 1);
        dup2(fd, 2);
        close(fd);
        execv(binary, argv);
        _exit(127);
    }
    int status = 0;
    int waited_ms = 0;
    for (;;) {
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid)
            break;
        ck_assert_int_eq(r, 0);
        if (waited_ms >= RUN_TIMEOUT_MS) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            ck_abort_msg("timeout running: %s", expanded);
        }
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
        waited_ms += 10;
    }
    FILE *f = fopen(outp, "r");
    ck_assert_ptr_nonnull(f);
    size_t n = fread(out_text, 1, sizeof out_text - 1, f);
    out_text[n] = '\0';
    fclose(f);
    unlink(outp);
    ck_assert_msg(WIFEXITED(status), "'%s' did not exit normally", expanded);
    return WEXITSTATUS(status);
}

/* ---- bad input ---------------------------------------------------------- */

static void prep_none(void)
{
}
static void prep_x_int(void)
{
    int32_t v[8] = {0};
    write_npy("xi.npy", SS_NPY_I32, 3, (const int64_t[]){4, 2, 1}, v);
}
static void prep_x_rank(void)
{
    write_npy("x2.npy", SS_NPY_F32, 2, (const int64_t[]){4, 2}, x_vals);
}
static void prep_x_width(void)
{
    float v[24] = {0};
    write_npy("x3.npy", SS_NPY_F32, 3, (const int64_t[]){4, 2, 3}, v);
}
static void prep_s_batch(void)
{
    write_npy("s3.npy", SS_NPY_F32, 2, (const int64_t[]){3, 1}, (const float[]){1, 2, 3});
}
static void prep_s_dtype(void)
{
    write_npy("si.npy", SS_NPY_I64, 2, (const int64_t[]){2, 1}, (const int64_t[]){1, 2});
}
static void prep_l_batch(void)
{
    write_npy("l3.npy", SS_NPY_I32, 1, (const int64_t[]){3}, (const int32_t[]){1, 2, 3});
}
static void prep_l_float(void)
{
    write_npy("lf.npy", SS_NPY_F32, 1, (const int64_t[]){2}, (const float[]){1, 2});
}
static void prep_l_big(void)
{
    write_npy("lb.npy", SS_NPY_I64, 1, (const int64_t[]){2}, (const int64_t[]){4, 5});
}
static void prep_l_neg(void)
{
    write_npy("ln.npy", SS_NPY_I32, 1, (const int64_t[]){2}, (const int32_t[]){-1, 0});
}
static void prep_model_nobias(void)
{
    write_model("m_nobias.st", "cell_0/other", 2);
}
static void prep_model_shape(void)
{
    write_model("m_shape.st", "cell_0/bias", 3);
}
static void prep_x_trunc(void)
{
    write_npy("xt.npy", SS_NPY_F32, 3, (const int64_t[]){4, 2, 1}, x_vals);
    char p[512];
    tpath(p, sizeof p, "xt.npy");
    struct stat st;
    ck_assert_int_eq(stat(p, &st), 0);
    ck_assert_int_eq(truncate(p, st.st_size - 4), 0);
}

struct bad_case {
    const char *name;       /* what the case exercises */
    void (*prep)(void);     /* writes the bad file(s) */
    const char *args;       /* arguments before the standard outputs */
    const char *want[3];    /* substrings of the message (NULL = unused) */
};

#define BASE "unroll --model @/m.st --inputs @/X.npy "

static const struct bad_case bad_cases[] = {
    {"inputs wrong dtype", prep_x_int, "unroll --model @/m.st --inputs @/xi.npy",
     {"/xi.npy", "expected float32 [T, B, 1]", "found int32 [4, 2, 1]"}},
    {"inputs wrong rank", prep_x_rank, "unroll --model @/m.st --inputs @/x2.npy",
     {"/x2.npy", "expected float32 [T, B, 1]", "found float32 [4, 2]"}},
    {"inputs wrong input size", prep_x_width, "unroll --model @/m.st --inputs @/x3.npy",
     {"/x3.npy", "expected float32 [T, B, 1]", "found float32 [4, 2, 3]"}},
    {"state batch mismatch", prep_s_batch, BASE "--state cell_0/h=@/s3.npy",
     {"/s3.npy", "expected float32 [2, 1]", "found float32 [3, 1]"}},
    {"state wrong dtype", prep_s_dtype, BASE "--state cell_0/h=@/si.npy",
     {"/si.npy", "expected float32 [2, 1]", "found int64 [2, 1]"}},
    {"lengths batch mismatch", prep_l_batch, BASE "--lengths @/l3.npy",
     {"/l3.npy", "expected int32 or int64 [2]", "found int32 [3]"}},
    {"lengths wrong dtype", prep_l_float, BASE "--lengths @/lf.npy",
     {"/lf.npy", "expected int32 or int64 [2]", "found float32 [2]"}},
    {"length above T", prep_l_big, BASE "--lengths @/lb.npy",
     {"/lb.npy", "lengths[1] = 5", "outside [0, 4]"}},
    {"negative length", prep_l_neg, BASE "--lengths @/ln.npy",
     {"/ln.npy", "lengths[0] = -1", "outside [0, 4]"}},
    {"missing tensor in model", prep_model_nobias, "unroll --model @/m_nobias.st --inputs @/X.npy",
     {"/m_nobias.st", "missing tensor 'cell_0/bias'", "expected float32 [1]"}},
    {"wrong tensor shape in model", prep_model_shape, "unroll --model @/m_shape.st --inputs @/X.npy",
     {"/m_shape.st", "has shape [3, 1]", "expected [2, 1]"}},
    {"truncated npy", prep_x_trunc, "unroll --model @/m.st --inputs @/xt.npy",
     {"/xt.npy", "truncated", "shape [4, 2, 1]"}},
    {"inputs missing", prep_none, "unroll --model @/m.st --inputs @/nope.npy",
     {"/nope.npy", "cannot open", NULL}},
    {"unknown state name", prep_none, BASE "--state cell_9/c=@/S.npy",
     {"no state 'cell_9/c'", "cell_0/h [1]", NULL}},
    {"unknown final-state name", prep_none, BASE "--final-state bogus=@/G.npy",
     {"no state 'bogus'", "cell_0/h [1]", NULL}},
    {"state given twice", prep_none, BASE "--state cell_0/h=@/S.npy --state cell_0/h=@/S.npy",
     {"twice", "cell_0/h", NULL}},
    {"state without path", prep_none, BASE "--state cell_0/h",
     {"NAME=PATH", NULL, NULL}},
    {"--inputs missing", prep_none, "unroll --model @/m.st", {"required", NULL, NULL}},
    {"bad --threads", prep_none, BASE "--threads 0", {"--threads", "[1, ", NULL}},
    {"unknown option", prep_none, BASE "--frobnicate", {"unknown option", "--help", NULL}},
    {"output dir missing", prep_none, BASE "--final-state cell_0/h=@/nodir/G.npy",
     {"/nodir/G.npy", "directory", NULL}},
    {"same output twice", prep_none, BASE "--final-state cell_0/h=@/O.npy",
     {"O.npy", "twice", NULL}},
};

START_TEST(test_unroll_bad_input)
{
    const struct bad_case *c = &bad_cases[_i];
    c->prep();
    int before = count_entries();
    char args[1024];
    snprintf(args, sizeof args, "%s --outputs @/O.npy", c->args);
    int st = run(args);
    ck_assert_msg(st == 2, "%s: exit %d, output: %s", c->name, st, out_text);
    for (int k = 0; k < 3; k++)
        if (c->want[k] != NULL)
            ck_assert_msg(strstr(out_text, c->want[k]) != NULL, "%s: '%s' lacks '%s'", c->name,
                          out_text, c->want[k]);
    char p[512];
    tpath(p, sizeof p, "O.npy");
    ck_assert_msg(access(p, F_OK) != 0, "%s: O.npy was written", c->name);
    ck_assert_msg(count_entries() == before, "%s: files were left behind", c->name);
}
END_TEST

/* ---- good runs --------------------------------------------------------- */

static void expect_unroll(const float *s0, const int32_t *len, float *out, float *fin)
{
    for (int b = 0; b < BATCH; b++) {
        float h = s0 ? s0[b] : 0.0f;
        for (int t = 0; t < T_STEPS; t++) {
            if (len && t >= len[b]) {
                out[t * BATCH + b] = 0.0f;
                continue;
            }
            float v = x_vals[t * BATCH + b] + 0.5f * h + 0.25f;
            h = v > 0 ? v : 0;
            out[t * BATCH + b] = h;
        }
        fin[b] = h;
    }
}

static ss_npy *read_out(const char *name)
{
    char p[512], err[512];
    tpath(p, sizeof p, name);
    ss_npy *a = NULL;
    ck_assert_msg(ss_npy_read(p, &a, err, sizeof err) == 0, "%s", err);
    return a;
}

START_TEST(test_unroll_good)
{
    int st = run(BASE "--lengths @/L.npy --state cell_0/h=@/S.npy --outputs @/O.npy "
                      "--final-state cell_0/h=@/F.npy --threads 1");
    ck_assert_msg(st == 0, "exit %d: %s", st, out_text);
    float want_out[T_STEPS * BATCH], want_fin[BATCH];
    expect_unroll((const float[]){2, -3}, (const int32_t[]){4, 2}, want_out, want_fin);
    ss_npy *o = read_out("O.npy");
    ck_assert_int_eq(o->dtype, SS_NPY_F32);
    ck_assert_int_eq(o->ndim, 3);
    ck_assert_int_eq(o->shape[0], T_STEPS);
    ck_assert_int_eq(o->shape[1], BATCH);
    ck_assert_int_eq(o->shape[2], 1);
    for (int i = 0; i < T_STEPS * BATCH; i++)
        ck_assert_float_eq_tol(((float *)o->data)[i], want_out[i], 1e-6f);
    ss_npy *f = read_out("F.npy");
    ck_assert_int_eq(f->ndim, 2);
    ck_assert_int_eq(f->shape[0], BATCH);
    ck_assert_int_eq(f->shape[1], 1);
    for (int b = 0; b < BATCH; b++)
        ck_assert_float_eq_tol(((float *)f->data)[b], want_fin[b], 1e-6f);
    ss_npy_free(o);
    ss_npy_free(f);

    /* No lengths, no initial state: zeros, every step computed; int64
     * lengths equal to T give the same result. */
    st = run(BASE "--outputs @/O2.npy --final-state cell_0/h=@/F2.npy");
    ck_assert_msg(st == 0, "exit %d: %s", st, out_text);
    expect_unroll(NULL, NULL, want_out, want_fin);
    o = read_out("O2.npy");
    for (int i = 0; i < T_STEPS * BATCH; i++)
        ck_assert_float_eq_tol(((float *)o->data)[i], want_out[i], 1e-6f);
    ss_npy_free(o);
    write_npy("L64.npy", SS_NPY_I64, 1, (const int64_t[]){BATCH}, (const int64_t[]){4, 4});
    st = run(BASE "--lengths @/L64.npy --outputs @/O3.npy");
    ck_assert_msg(st == 0, "exit %d: %s", st, out_text);
    o = read_out("O3.npy");
    for (int i = 0; i < T_STEPS * BATCH; i++)
        ck_assert_float_eq_tol(((float *)o->data)[i], want_out[i], 1e-6f);
    ss_npy_free(o);
    /* Nothing requested: runs and writes nothing. */
    int before = count_entries();
    ck_assert_int_eq(run(BASE), 0);
    ck_assert_int_eq(count_entries(), before);
}
END_TEST

START_TEST(test_unroll_help_version)
{
    ck_assert_int_eq(run("unroll --help"), 0);
    ck_assert_ptr_nonnull(strstr(out_text, "usage: statesaver-worker unroll"));
    ck_assert_ptr_nonnull(strstr(out_text, "--final-state"));
    ck_assert_int_eq(run("unroll --version"), 0);
    ck_assert_ptr_nonnull(strstr(out_text, SS_VERSION));
    ck_assert_int_eq(run("--version"), 0);
    ck_assert_ptr_nonnull(strstr(out_text, SS_VERSION));
    ck_assert_int_eq(run("--help"), 0);
    ck_assert_ptr_nonnull(strstr(out_text, "unroll"));
    ck_assert_ptr_nonnull(strstr(out_text, "bench"));
    ck_assert_int_eq(run("bench --help"), 0);
    ck_assert_ptr_nonnull(strstr(out_text, "usage: statesaver-worker bench"));
    ck_assert_int_eq(run("frobnicate"), 2);
    ck_assert_ptr_nonnull(strstr(out_text, "unknown command 'frobnicate'"));
    ck_assert_int_eq(run(""), 2);
}
END_TEST

static Suite *unroll_cmd_suite(void)
{
    Suite *s = suite_create("unroll_cmd");
    TCase *tc = tcase_create("unroll_cmd");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 100);
    tcase_add_loop_test(tc, test_unroll_bad_input, 0,
                        (int)(sizeof bad_cases / sizeof bad_cases[0]));
    tcase_add_test(tc, test_unroll_good);
    tcase_add_test(tc, test_unroll_help_version);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(unroll_cmd_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
