/* unroll_cmd -- `statesaver-worker unroll`: validate .npy inputs against the
 * model, run ss_unroll_run once, write the requested outputs all-or-nothing.
 */
#include "unroll_cmd.h"

#include <cblas.h>
#include <errno.h>
#include <getopt.h>
#include <libgen.h>
#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "model.h"
#include "model_run.h"
#include "ss_npy.h"
#include "ss_error.h"
#include "ss_log.h"
#include "unroll.h"
#include "ss_parse.h"

#define ERRSZ 1024

/* One NAME=PATH pair from --state or --final-state. */
typedef struct named_path {
    const char *name; /* state name (points into a copy of the argument) */
    const char *path; /* file path (same copy) */
    char *arg;        /* owned copy of the argument, split at the first '=' */
    size_t index;     /* index of the state in the model, once resolved */
} named_path;

/* Parsed command line. */
typedef struct unroll_opts {
    const char *model;        /* --model */
    const char *inputs;       /* --inputs */
    const char *lengths;      /* --lengths, or NULL */
    const char *outputs;      /* --outputs, or NULL */
    named_path *states;       /* --state pairs */
    size_t n_states;          /* count */
    named_path *finals;       /* --final-state pairs */
    size_t n_finals;          /* count */
    int threads;              /* --threads, or 0 for the default */
    ss_precision precision;   /* --precision */
} unroll_opts;

static void usage(FILE *f)
{
    fprintf(f,
            "usage: statesaver-worker unroll --model M.safetensors --inputs X.npy\n"
            "         [--lengths L.npy] [--state NAME=IN.npy]... [--outputs O.npy]\n"
            "         [--final-state NAME=OUT.npy]... [--threads N] [--precision P]\n"
            "         [--log-level LEVEL]\n"
            "\n"
            "Runs tf.compat.v1.nn.static_rnn over one segment, offline.\n"
            "  --model PATH         safetensors model (see docs/worker.md)\n"
            "  --inputs PATH        float32 [T, B, input_size], time-major; with an\n"
            "                       embedding, int32 or int64 token ids [T, B]\n"
            "  --lengths PATH       int32 or int64 [B], values in [0, T]; rows stop\n"
            "                       at their length (outputs zero, state copied)\n"
            "  --state NAME=PATH    initial state NAME, float32 [B, size];\n"
            "                       states not given start at zeros\n"
            "  --outputs PATH       write float32 [T, B, output_size] (the head's\n"
            "                       output width with a head)\n"
            "  --final-state NAME=PATH  write the final state NAME, float32 [B, size]\n"
            "  --threads N          unroll threads, splitting the batch rows or the\n"
            "                       units (default: OPENBLAS_NUM_THREADS or\n"
            "                       OMP_NUM_THREADS if set, else %d)\n"
            "  --precision P        fp32 (default) or bf16: bfloat16 weights and\n"
            "                       products, fp32 accumulation, states and outputs;\n"
            "                       needs AVX512_BF16 (exit 2 without); self-checked\n"
            "                       against fp32 at load (see docs/worker.md)\n"
            "  --log-level LEVEL    error, warn, info (default) or debug\n"
            "  --help, --version\n"
            "Exit status: 0 success, 2 bad arguments or input files (nothing is\n"
            "written), 1 other failures (nothing is written).\n",
            SS_UNROLL_DEFAULT_THREADS);
}

static int add_pair(named_path **arr, size_t *n, const char *flag, const char *arg)
{
    const char *eq = strchr(arg, '=');
    if (eq == NULL || eq == arg || eq[1] == '\0') {
        fprintf(stderr, "unroll: %s expects NAME=PATH, got '%s'\n", flag, arg);
        return SS_ERR_INVALID;
    }
    named_path *grown = realloc(*arr, (*n + 1) * sizeof **arr);
    if (grown == NULL)
        return SS_ERR_NOMEM;
    *arr = grown;
    named_path *p = &grown[*n];
    p->arg = strdup(arg);
    if (p->arg == NULL)
        return SS_ERR_NOMEM;
    p->arg[eq - arg] = '\0';
    p->name = p->arg;
    p->path = p->arg + (eq - arg) + 1;
    p->index = 0;
    (*n)++;
    return 0;
}

static void free_pairs(named_path *arr, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(arr[i].arg);
    free(arr);
}

static void list_state_names(const ss_model *m, char *buf, size_t bufsz)
{
    size_t off = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < m->n_states && off < bufsz; i++) {
        int n = snprintf(buf + off, bufsz - off, "%s%s [%d]", i ? ", " : "",
                         m->state_names[i], m->state_sizes[i]);
        if (n < 0)
            break;
        off += (size_t)n;
    }
}

/* Resolve names to state indices; reject unknown names and duplicates. */
static int resolve_pairs(const ss_model *m, named_path *arr, size_t n, const char *flag)
{
    for (size_t i = 0; i < n; i++) {
        bool found = false;
        for (size_t s = 0; s < m->n_states; s++)
            if (strcmp(m->state_names[s], arr[i].name) == 0) {
                arr[i].index = s;
                found = true;
            }
        if (!found) {
            char names[2048];
            list_state_names(m, names, sizeof names);
            fprintf(stderr, "unroll: %s %s: the model has no state '%s'; its states are: %s\n",
                    flag, arr[i].path, arr[i].name, names);
            return SS_ERR_INVALID;
        }
        for (size_t j = 0; j < i; j++)
            if (arr[j].index == arr[i].index) {
                fprintf(stderr, "unroll: %s given twice for state '%s'\n", flag, arr[i].name);
                return SS_ERR_INVALID;
            }
    }
    return 0;
}

/* Check an array's dtype and shape; print "file: what: expected ..., found ...". */
static bool check_array(const char *path, const char *what, const ss_npy *a, bool int_ok,
                        int ndim, const int64_t *shape, const char *expect_text)
{
    bool ok = int_ok ? (a->dtype == SS_NPY_I32 || a->dtype == SS_NPY_I64)
                     : a->dtype == SS_NPY_F32;
    ok = ok && a->ndim == ndim;
    for (int i = 0; ok && i < ndim; i++)
        ok = shape[i] < 0 || a->shape[i] == shape[i];
    if (!ok) {
        char found[256];
        ss_npy_shape_str(a->ndim, a->shape, found, sizeof found);
        fprintf(stderr, "unroll: %s: %s: expected %s, found %s %s\n", path, what,
                expect_text, ss_npy_dtype_name(a->dtype), found);
    }
    return ok;
}

/* Read a file; on error say what was expected of it too. */
static int read_npy(const char *path, const char *expect, ss_npy **out)
{
    char err[ERRSZ];
    int rc = ss_npy_read(path, out, err, sizeof err);
    if (rc != 0)
        fprintf(stderr, "unroll: %s; expected %s\n", err, expect);
    return rc;
}

static int parse_args(int argc, char **argv, unroll_opts *o, int *exit_now)
{
    enum { OPT_STATE = 1000, OPT_FINAL, OPT_THREADS, OPT_LOG, OPT_HELP, OPT_VERSION,
           OPT_PRECISION };
    static const struct option longopts[] = {
        {"model", required_argument, NULL, 'm'},
        {"inputs", required_argument, NULL, 'i'},
        {"lengths", required_argument, NULL, 'l'},
        {"outputs", required_argument, NULL, 'o'},
        {"state", required_argument, NULL, OPT_STATE},
        {"final-state", required_argument, NULL, OPT_FINAL},
        {"threads", required_argument, NULL, OPT_THREADS},
        {"precision", required_argument, NULL, OPT_PRECISION},
        {"log-level", required_argument, NULL, OPT_LOG},
        {"help", no_argument, NULL, OPT_HELP},
        {"version", no_argument, NULL, OPT_VERSION},
        {NULL, 0, NULL, 0},
    };
    *exit_now = -1;
    optind = 1;
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, ":", longopts, NULL)) != -1) {
        int rc = 0;
        switch (c) {
        case 'm': o->model = optarg; break;
        case 'i': o->inputs = optarg; break;
        case 'l': o->lengths = optarg; break;
        case 'o': o->outputs = optarg; break;
        case OPT_STATE: rc = add_pair(&o->states, &o->n_states, "--state", optarg); break;
        case OPT_FINAL:
            rc = add_pair(&o->finals, &o->n_finals, "--final-state", optarg);
            break;
        case OPT_THREADS: {
            uint64_t v = 0;
            if (ss_parse_u64(optarg, 1, SS_UNROLL_MAX_THREADS, &v) < 0) {
                fprintf(stderr, "unroll: --threads must be an integer in [1, %d], got '%s'\n",
                        SS_UNROLL_MAX_THREADS, optarg);
                rc = SS_ERR_INVALID;
            }
            o->threads = (int)v;
            break;
        }
        case OPT_PRECISION:
            if (ss_precision_parse(optarg, &o->precision) != 0) {
                fprintf(stderr, "unroll: --precision must be fp32 or bf16, got '%s'\n", optarg);
                rc = SS_ERR_INVALID;
            }
            break;
        case OPT_LOG: {
            int lvl = ss_log_parse_level(optarg);
            if (lvl < 0) {
                fprintf(stderr, "unroll: --log-level must be error, warn, info or debug\n");
                rc = SS_ERR_INVALID;
            }
            ss_log_threshold = lvl;
            break;
        }
        case OPT_HELP:
            usage(stdout);
            *exit_now = SS_UNROLL_EXIT_OK;
            return 0;
        case OPT_VERSION:
            printf("statesaver-worker unroll %s\n", SS_VERSION);
            *exit_now = SS_UNROLL_EXIT_OK;
            return 0;
        case ':':
            fprintf(stderr, "unroll: option %s needs an argument\n", argv[optind - 1]);
            rc = SS_ERR_INVALID;
            break;
        default:
            fprintf(stderr, "unroll: unknown option '%s'\n", argv[optind - 1]);
            rc = SS_ERR_INVALID;
            break;
        }
        if (rc == SS_ERR_NOMEM) {
            fprintf(stderr, "unroll: out of memory\n");
            *exit_now = SS_UNROLL_EXIT_FAIL;
            return rc;
        }
        if (rc != 0)
            goto usage_error;
    }
    if (optind < argc) {
        fprintf(stderr, "unroll: unexpected argument '%s'\n", argv[optind]);
        goto usage_error;
    }
    if (o->model == NULL || o->inputs == NULL) {
        fprintf(stderr, "unroll: --model and --inputs are required\n");
        goto usage_error;
    }
    const char *why = ss_precision_unsupported(o->precision);
    if (why != NULL) {
        fprintf(stderr, "unroll: %s\n", why);
        *exit_now = SS_UNROLL_EXIT_USAGE;
        return SS_ERR_INVALID;
    }
    /* Two outputs on one path would silently keep only the last rename. */
    for (size_t i = 0; i < o->n_finals; i++) {
        bool dup = o->outputs != NULL && strcmp(o->outputs, o->finals[i].path) == 0;
        for (size_t j = 0; j < i; j++)
            dup = dup || strcmp(o->finals[j].path, o->finals[i].path) == 0;
        if (dup) {
            fprintf(stderr, "unroll: output file %s is named twice\n", o->finals[i].path);
            goto usage_error;
        }
    }
    return 0;
usage_error:
    fprintf(stderr, "Try 'statesaver-worker unroll --help'.\n");
    *exit_now = SS_UNROLL_EXIT_USAGE;
    return SS_ERR_INVALID;
}

/* Fail before computing when an output could not be created at all. */
static bool output_dir_ok(const char *path)
{
    char *copy = strdup(path);
    if (copy == NULL)
        return true; /* the write itself will report it */
    const char *dir = dirname(copy);
    bool ok = access(dir, W_OK | X_OK) == 0;
    if (!ok)
        fprintf(stderr, "unroll: %s: cannot write there: directory %s: %s\n", path, dir,
                strerror(errno));
    free(copy);
    return ok;
}

static void set_threads(int threads)
{
    if (threads == 0) {
        /* OpenBLAS reads these itself at start-up; respect them. */
        if (getenv("OPENBLAS_NUM_THREADS") != NULL || getenv("OMP_NUM_THREADS") != NULL)
            return;
        threads = SS_UNROLL_DEFAULT_THREADS;
    }
    openblas_set_num_threads(threads);
}

int ss_unroll_cmd_main(int argc, char **argv)
{
    int status = SS_UNROLL_EXIT_USAGE;
    char err[ERRSZ];
    unroll_opts o = {0};
    ss_model *m = NULL;
    ss_mrun *u = NULL;
    ss_npy *x = NULL, *len = NULL;
    int64_t *ids = NULL;
    ss_npy **sin = NULL;
    float **zeros = NULL, **sout = NULL;
    const float **states_in = NULL;
    float *outputs = NULL;
    int32_t *len32 = NULL;
    ss_npy_staged **staged = NULL;
    size_t n_staged = 0;

    int exit_now = -1;
    if (parse_args(argc, argv, &o, &exit_now) != 0 || exit_now >= 0) {
        status = exit_now >= 0 ? exit_now : SS_UNROLL_EXIT_USAGE;
        goto out;
    }

    /* 1. Validate everything before computing. */
    int rc = ss_model_load(o.model, &m, err, sizeof err);
    if (rc != 0) {
        fprintf(stderr, "unroll: %s\n", err);
        status = rc == SS_ERR_NOMEM ? SS_UNROLL_EXIT_FAIL : SS_UNROLL_EXIT_USAGE;
        goto out;
    }
    if (resolve_pairs(m, o.states, o.n_states, "--state") != 0 ||
        resolve_pairs(m, o.finals, o.n_finals, "--final-state") != 0)
        goto out;

    if (o.outputs != NULL && !output_dir_ok(o.outputs))
        goto out;
    for (size_t i = 0; i < o.n_finals; i++)
        if (!output_dir_ok(o.finals[i].path))
            goto out;

    char expect[1024];
    if (m->embedding)
        snprintf(expect, sizeof expect, "int32 or int64 [T, B] (token ids: %s has an embedding)",
                 o.model);
    else
        snprintf(expect, sizeof expect, "float32 [T, B, %d] (input_size of %s)", m->input_size,
                 o.model);
    if ((rc = read_npy(o.inputs, expect, &x)) != 0)
        goto nomem_or_usage;
    if (!check_array(o.inputs, "inputs", x, m->embedding, m->embedding ? 2 : 3,
                     (const int64_t[]){-1, -1, m->input_size}, expect))
        goto out;
    if (x->shape[0] > INT_MAX || x->shape[1] > INT_MAX) {
        fprintf(stderr, "unroll: %s: inputs: T and B must each be at most %d\n", o.inputs,
                INT_MAX);
        goto out;
    }
    int T = (int)x->shape[0], B = (int)x->shape[1];

    if (o.lengths != NULL) {
        snprintf(expect, sizeof expect, "int32 or int64 [%d] (batch of %s)", B, o.inputs);
        if ((rc = read_npy(o.lengths, expect, &len)) != 0)
            goto nomem_or_usage;
        if (!check_array(o.lengths, "lengths", len, true, 1, (const int64_t[]){B}, expect))
            goto out;
        len32 = malloc((size_t)B * sizeof *len32 + 1);
        if (len32 == NULL)
            goto nomem;
        for (int b = 0; b < B; b++) {
            int64_t v = len->dtype == SS_NPY_I32 ? ((const int32_t *)len->data)[b]
                                                 : ((const int64_t *)len->data)[b];
            if (v < 0 || v > T) {
                fprintf(stderr,
                        "unroll: %s: lengths[%d] = %lld is outside [0, %d] (T of %s)\n",
                        o.lengths, b, (long long)v, T, o.inputs);
                goto out;
            }
            len32[b] = (int32_t)v;
        }
    }
    if (m->embedding) {
        /* Ids as int64, each in [0, vocab) up to its row's length (the rest
         * is padding). */
        size_t n = (size_t)T * (size_t)B;
        ids = malloc(n * sizeof *ids + 1);
        if (ids == NULL)
            goto nomem;
        for (size_t i = 0; i < n; i++) {
            int64_t v = x->dtype == SS_NPY_I32 ? ((const int32_t *)x->data)[i]
                                               : ((const int64_t *)x->data)[i];
            size_t t = i / (size_t)B, b = i % (size_t)B;
            if ((len32 == NULL || t < (size_t)len32[b]) && (v < 0 || v >= m->vocab)) {
                fprintf(stderr,
                        "unroll: %s: token id %lld at [%zu, %zu] is outside [0, %d) (vocab of "
                        "%s)\n",
                        o.inputs, (long long)v, t, b, m->vocab, o.model);
                goto out;
            }
            ids[i] = v;
        }
    }

    size_t ns = m->n_states;
    sin = calloc(ns, sizeof *sin);
    zeros = calloc(ns, sizeof *zeros);
    sout = calloc(ns, sizeof *sout);
    states_in = calloc(ns, sizeof *states_in);
    staged = calloc(1 + o.n_finals, sizeof *staged);
    if (sin == NULL || zeros == NULL || sout == NULL || states_in == NULL || staged == NULL)
        goto nomem;
    for (size_t i = 0; i < o.n_states; i++) {
        size_t s = o.states[i].index;
        char what[320];
        snprintf(what, sizeof what, "state '%s'", m->state_names[s]);
        snprintf(expect, sizeof expect, "float32 [%d, %d] (batch of %s, size of the state)",
                 B, m->state_sizes[s], o.inputs);
        if ((rc = read_npy(o.states[i].path, expect, &sin[s])) != 0)
            goto nomem_or_usage;
        if (!check_array(o.states[i].path, what, sin[s], false, 2,
                         (const int64_t[]){B, m->state_sizes[s]}, expect))
            goto out;
    }

    /* 2. Compute. Sizes are bounded by the input files that exist. */
    status = SS_UNROLL_EXIT_FAIL;
    for (size_t s = 0; s < ns; s++) {
        size_t n = (size_t)B * (size_t)m->state_sizes[s];
        sout[s] = calloc(n ? n : 1, sizeof(float));
        if (sout[s] == NULL)
            goto nomem;
        if (sin[s] != NULL) {
            states_in[s] = sin[s]->data;
        } else {
            zeros[s] = calloc(n ? n : 1, sizeof(float));
            if (zeros[s] == NULL)
                goto nomem;
            states_in[s] = zeros[s];
        }
    }
    size_t n_out = 0;
    const int out_w = ss_model_out_width(m);
    if (o.outputs != NULL) {
        if (__builtin_mul_overflow((size_t)T * (size_t)B, (size_t)out_w, &n_out) ||
            n_out > SIZE_MAX / sizeof(float)) {
            fprintf(stderr, "unroll: %s: outputs [%d, %d, %d] are too large\n", o.outputs, T,
                    B, out_w);
            goto out;
        }
        outputs = malloc(n_out ? n_out * sizeof(float) : 1);
        if (outputs == NULL)
            goto nomem;
    }
    set_threads(o.threads);
    double check_err = 0.0;
    rc = ss_mrun_new(&u, m, o.precision, &check_err);
    if (rc == SS_ERR_INTERNAL) {
        fprintf(stderr, "unroll: %s: bf16 self-check failed: worst difference from fp32 %g "
                "exceeds the bound %g; refusing to run in bf16\n", o.model, check_err,
                SS_UNROLL_BF16_TOL);
        goto out;
    }
    /* The unroll runs on its own threads (not OpenBLAS's): the same count. */
    if (rc == 0)
        rc = ss_unroll_set_threads(ss_mrun_unroll(u),
                                   o.threads > 0 ? o.threads : openblas_get_num_threads());
    if (rc == 0)
        rc = ss_mrun_run(u, T, B, m->embedding ? NULL : x->data, ids, len32,
                         o.n_states > 0 ? states_in : NULL, outputs, sout, NULL);
    if (rc != 0) {
        fprintf(stderr, "unroll: %s: unroll failed: %s\n", o.model, ss_strerror(rc));
        goto out;
    }

    /* 3. Write: stage every file, then rename them all. */
    if (o.outputs != NULL) {
        int64_t shp[3] = {T, B, out_w};
        if (ss_npy_stage(o.outputs, SS_NPY_F32, 3, shp, outputs, &staged[n_staged], err,
                         sizeof err) != 0) {
            fprintf(stderr, "unroll: %s\n", err);
            goto out;
        }
        n_staged++;
    }
    for (size_t i = 0; i < o.n_finals; i++) {
        size_t s = o.finals[i].index;
        int64_t shp[2] = {B, m->state_sizes[s]};
        if (ss_npy_stage(o.finals[i].path, SS_NPY_F32, 2, shp, sout[s], &staged[n_staged],
                         err, sizeof err) != 0) {
            fprintf(stderr, "unroll: %s\n", err);
            goto out;
        }
        n_staged++;
    }
    for (size_t i = 0; i < n_staged; i++) {
        rc = ss_npy_commit(staged[i], err, sizeof err);
        staged[i] = NULL;
        if (rc != 0) {
            fprintf(stderr, "unroll: %s\n", err);
            goto out;
        }
    }
    status = SS_UNROLL_EXIT_OK;
    goto out;

nomem_or_usage:
    if (rc != SS_ERR_NOMEM)
        goto out;
nomem:
    fprintf(stderr, "unroll: out of memory\n");
    status = SS_UNROLL_EXIT_FAIL;
out:
    if (staged != NULL)
        for (size_t i = 0; i < n_staged; i++)
            ss_npy_discard(staged[i]);
    free(staged);
    ss_mrun_free(u);
    free(ids);
    if (m != NULL)
        for (size_t s = 0; s < m->n_states; s++) {
            if (sin != NULL)
                ss_npy_free(sin[s]);
            if (zeros != NULL)
                free(zeros[s]);
            if (sout != NULL)
                free(sout[s]);
        }
    free(sin);
    free(zeros);
    free(sout);
    free(states_in);
    free(outputs);
    free(len32);
    ss_npy_free(len);
    ss_npy_free(x);
    ss_model_free(m);
    free_pairs(o.states, o.n_states);
    free_pairs(o.finals, o.n_finals);
    return status;
}
