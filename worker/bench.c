/* bench -- `statesaver-worker bench`: unroll throughput against in-process sgemm.
 *
 * Builds a model with random weights (fixed seed) directly in memory, times
 * ss_unroll_run over one chunk (all lengths = T) on --threads threads and,
 * in the same process with OpenBLAS set to the same thread count, the
 * matrix products of that unroll done as if there were no recurrence, with
 * OpenBLAS's cblas_sgemm (the machine's best large GEMM): per layer one sgemm
 * [T*B, in_l + R] x [in_l + R, G*H] (R = recurrent width, G gates; gru
 * reset_after=false uses the same flop count since 2H + H = 3H columns),
 * plus [T*B, H] x [H, P] for an lstm projection. That is exactly
 * ss_unroll_flops, so `ratio` = sgemm time / unroll time = the fraction of
 * the machine's sgemm speed the unroll reaches. Times are medians.
 */
#include "bench.h"

#include <cblas.h>
#include <cJSON.h>
#include <getopt.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "pgemm_bf16.h"
#include "model_run.h"
#include "ss_error.h"
#include "unroll.h"
#include "vmath.h"
#include "ss_parse.h"

/* Largest accepted dimension (input size, units, batch, steps). */
#define SS_BENCH_MAX_DIM 65536
/* Default cap on the floats the benchmark allocates (--max-mb). */
#define SS_BENCH_DEFAULT_MAX_MB 4096
/* Default timed repeats and warm-up runs. */
#define SS_BENCH_DEFAULT_REPEAT 20
#define SS_BENCH_WARMUP 3
#define SS_BENCH_MAX_REPEAT 100000

/* Options of one bench run. */
typedef struct bench_opts {
    ss_cell_kind cell;      /* --cell */
    int input_size;         /* --input-size */
    int num_units;          /* --num-units: the largest layer's units */
    int units[SS_MODEL_MAX_LAYERS]; /* --num-units N1,N2,...: per layer */
    int n_units;            /* entries of units (1: every layer num_units) */
    int batch;              /* --batch */
    int steps;              /* --steps */
    int layers;             /* --layers */
    bool reset_after;       /* --reset-after (gru) */
    ss_activation act;      /* --activation */
    int repeat;             /* --repeat */
    int threads;            /* --threads */
    long max_mb;            /* --max-mb: allocation cap */
    bool json;              /* --json */
    bool no_sgemm;          /* --no-sgemm: skip the reference */
    ss_precision prec;      /* --precision */
    ss_unroll_split split;  /* --split */
    ss_bf16_kernel bf16k;   /* --bf16-kernel */
    int vocab;              /* --vocab: an embedding of that many rows, 0 for none */
    int head_out;           /* --head-out: a linear head of that width, 0 for none */
    ss_head_act head_act;   /* --head-activation */
} bench_opts;

/* Model weights owned by the benchmark (the ss_model points into them). */
typedef struct bench_model {
    ss_model m;             /* model filled directly, no file */
    float *weights;         /* one block holding every tensor */
    int sizes[2 * SS_MODEL_MAX_LAYERS]; /* state widths */
    float *io;              /* embedding [vocab, I], head kernel [H, out] and bias [out] */
} bench_model;

static void usage(FILE *f)
{
    fprintf(f,
            "usage: statesaver-worker bench --cell lstm|gru|basic_rnn --input-size I\n"
            "         --num-units H[,H2,...] --batch B --steps T [--layers L] [--reset-after]\n"
            "         [--activation tanh|relu] [--repeat N] [--threads N]\n"
            "         [--max-mb MB] [--precision fp32|bf16] [--split auto|rows|units]\n"
            "         [--bf16-kernel auto|fma|dpbf16|amx] [--no-sgemm] [--json]\n"
            "         [--vocab V] [--head-out N] [--head-activation A]\n"
            "Times one unroll of T steps (all lengths = T) against an in-process sgemm\n"
            "of the same flop count; prints medians (and the fastest run). --threads sets\n"
            "the unroll's threads and OpenBLAS's for the sgemm (default: online cores).\n"
            "--precision bf16 runs the unroll on bfloat16 weights (AVX512_BF16 only; the\n"
            "sgemm stays fp32); --bf16-kernel picks its products: amx (tiles, the\n"
            "default where the CPU has AMX-BF16), fma (weights widened to fp32 in\n"
            "registers, the default elsewhere) or dpbf16 (vdpbf16ps).\n"
            "--split forces how threads share the work (default: chosen per batch).\n"
            "--no-sgemm skips the reference sgemm (no ratio is reported).\n"
            "--max-mb caps the memory allocated (default %d).\n"
            "--vocab V puts an embedding of V rows in front (inputs are token ids),\n"
            "--head-out N a linear head of N columns behind (--head-activation none,\n"
            "softmax, log_softmax, sigmoid or tanh); then the embedding lookup, the head\n"
            "product and the whole model are timed too (medians, same repeats).\n",
            SS_BENCH_DEFAULT_MAX_MB);
}

/* Parse a decimal in [lo, hi], lo >= 0 (strict: common/ss_parse). */
static int parse_int(const char *flag, const char *s, int lo, int hi, int *out)
{
    uint64_t v;
    if (lo < 0 || ss_parse_u64(s, (uint64_t)lo, (uint64_t)hi, &v) < 0) {
        fprintf(stderr, "bench: %s must be an integer in [%d, %d], got '%s'\n", flag, lo, hi, s);
        return SS_ERR_INVALID;
    }
    *out = (int)v;
    return 0;
}

static int parse_opts(int argc, char **argv, bench_opts *o, bool *help)
{
    enum { O_CELL = 256, O_IN, O_UNITS, O_BATCH, O_STEPS, O_LAYERS, O_RA, O_ACT,
           O_REPEAT, O_THREADS, O_MAXMB, O_JSON, O_HELP, O_PREC, O_SPLIT, O_BFK, O_NOSGEMM,
           O_VOCAB, O_HEAD, O_HEADACT };
    static const struct option longopts[] = {
        {"cell", required_argument, NULL, O_CELL},
        {"input-size", required_argument, NULL, O_IN},
        {"num-units", required_argument, NULL, O_UNITS},
        {"batch", required_argument, NULL, O_BATCH},
        {"steps", required_argument, NULL, O_STEPS},
        {"layers", required_argument, NULL, O_LAYERS},
        {"reset-after", no_argument, NULL, O_RA},
        {"activation", required_argument, NULL, O_ACT},
        {"repeat", required_argument, NULL, O_REPEAT},
        {"threads", required_argument, NULL, O_THREADS},
        {"max-mb", required_argument, NULL, O_MAXMB},
        {"json", no_argument, NULL, O_JSON},
        {"precision", required_argument, NULL, O_PREC},
        {"split", required_argument, NULL, O_SPLIT},
        {"bf16-kernel", required_argument, NULL, O_BFK},
        {"no-sgemm", no_argument, NULL, O_NOSGEMM},
        {"vocab", required_argument, NULL, O_VOCAB},
        {"head-out", required_argument, NULL, O_HEAD},
        {"head-activation", required_argument, NULL, O_HEADACT},
        {"help", no_argument, NULL, O_HELP},
        {NULL, 0, NULL, 0},
    };
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    bool have_cell = false, layers_given = false;
    int mb = 0;
    *o = (bench_opts){.layers = 1, .repeat = SS_BENCH_DEFAULT_REPEAT,
                      .threads = ncpu > 0 ? (int)ncpu : 1, .max_mb = SS_BENCH_DEFAULT_MAX_MB};
    optind = 1;
    opterr = 0;
    int c, rc = 0;
    while (!rc && (c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (c) {
        case O_CELL:
            have_cell = true;
            if (!strcmp(optarg, "lstm"))
                o->cell = SS_CELL_LSTM;
            else if (!strcmp(optarg, "gru"))
                o->cell = SS_CELL_GRU;
            else if (!strcmp(optarg, "basic_rnn"))
                o->cell = SS_CELL_BASIC_RNN;
            else {
                fprintf(stderr, "bench: --cell must be lstm, gru or basic_rnn, got '%s'\n", optarg);
                rc = SS_ERR_INVALID;
            }
            break;
        case O_IN: rc = parse_int("--input-size", optarg, 1, SS_BENCH_MAX_DIM, &o->input_size); break;
        case O_UNITS: {
            /* N, or a comma list of per-layer sizes */
            char buf[256];
            snprintf(buf, sizeof buf, "%s", optarg);
            o->n_units = 0;
            o->num_units = 0;
            for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok && !rc;
                 tok = strtok_r(NULL, ",", &save)) {
                if (o->n_units == SS_MODEL_MAX_LAYERS) {
                    fprintf(stderr, "bench: --num-units lists more than %d sizes\n",
                            SS_MODEL_MAX_LAYERS);
                    rc = SS_ERR_INVALID;
                    break;
                }
                rc = parse_int("--num-units", tok, 1, SS_BENCH_MAX_DIM, &o->units[o->n_units]);
                if (!rc && o->units[o->n_units] > o->num_units)
                    o->num_units = o->units[o->n_units];
                o->n_units++;
            }
            if (!rc && (o->n_units == 0 || optarg[strlen(optarg) - 1] == ',')) {
                fprintf(stderr, "bench: --num-units must be N or N1,N2,..., got '%s'\n", optarg);
                rc = SS_ERR_INVALID;
            }
            break;
        }
        case O_BATCH: rc = parse_int("--batch", optarg, 1, SS_BENCH_MAX_DIM, &o->batch); break;
        case O_STEPS: rc = parse_int("--steps", optarg, 1, SS_BENCH_MAX_DIM, &o->steps); break;
        case O_LAYERS:
            rc = parse_int("--layers", optarg, 1, SS_MODEL_MAX_LAYERS, &o->layers);
            layers_given = true;
            break;
        case O_RA: o->reset_after = true; break;
        case O_ACT:
            if (!strcmp(optarg, "tanh"))
                o->act = SS_ACT_TANH;
            else if (!strcmp(optarg, "relu"))
                o->act = SS_ACT_RELU;
            else {
                fprintf(stderr, "bench: --activation must be tanh or relu, got '%s'\n", optarg);
                rc = SS_ERR_INVALID;
            }
            break;
        case O_REPEAT: rc = parse_int("--repeat", optarg, 1, SS_BENCH_MAX_REPEAT, &o->repeat); break;
        case O_THREADS: rc = parse_int("--threads", optarg, 1, 1024, &o->threads); break;
        case O_MAXMB: rc = parse_int("--max-mb", optarg, 1, 1 << 30, &mb); o->max_mb = mb; break;
        case O_JSON: o->json = true; break;
        case O_PREC:
            if (ss_precision_parse(optarg, &o->prec)) {
                fprintf(stderr, "bench: --precision must be fp32 or bf16, got '%s'\n", optarg);
                rc = SS_ERR_INVALID;
            }
            break;
        case O_NOSGEMM: o->no_sgemm = true; break;
        case O_VOCAB: rc = parse_int("--vocab", optarg, 1, 1 << 24, &o->vocab); break;
        case O_HEAD: rc = parse_int("--head-out", optarg, 1, SS_BENCH_MAX_DIM, &o->head_out); break;
        case O_HEADACT: {
            int i = 0;
            while (i <= SS_HEAD_TANH && strcmp(ss_head_act_name((ss_head_act)i), optarg))
                i++;
            if (i > SS_HEAD_TANH) {
                fprintf(stderr, "bench: --head-activation must be none, softmax, log_softmax, "
                        "sigmoid or tanh, got '%s'\n", optarg);
                rc = SS_ERR_INVALID;
            }
            o->head_act = (ss_head_act)i;
            break;
        }
        case O_BFK:
            if (!strcmp(optarg, "auto"))
                o->bf16k = SS_BF16_KERNEL_AUTO;
            else if (!strcmp(optarg, "fma"))
                o->bf16k = SS_BF16_KERNEL_FMA;
            else if (!strcmp(optarg, "dpbf16"))
                o->bf16k = SS_BF16_KERNEL_DPBF16;
            else if (!strcmp(optarg, "amx"))
                o->bf16k = SS_BF16_KERNEL_AMX;
            else {
                fprintf(stderr, "bench: --bf16-kernel must be auto, fma, dpbf16 or amx, got '%s'\n",
                        optarg);
                rc = SS_ERR_INVALID;
            }
            break;
        case O_SPLIT:
            if (!strcmp(optarg, "auto"))
                o->split = SS_UNROLL_SPLIT_AUTO;
            else if (!strcmp(optarg, "rows"))
                o->split = SS_UNROLL_SPLIT_ROWS;
            else if (!strcmp(optarg, "units"))
                o->split = SS_UNROLL_SPLIT_UNITS;
            else {
                fprintf(stderr, "bench: --split must be auto, rows or units, got '%s'\n", optarg);
                rc = SS_ERR_INVALID;
            }
            break;
        case O_HELP: *help = true; return 0;
        default:
            fprintf(stderr, "bench: unknown or incomplete option '%s'\n", argv[optind - 1]);
            rc = SS_ERR_INVALID;
        }
    }
    if (rc)
        return rc;
    if (optind < argc) {
        fprintf(stderr, "bench: unexpected argument '%s'\n", argv[optind]);
        return SS_ERR_INVALID;
    }
    if (!have_cell || !o->input_size || !o->num_units || !o->batch || !o->steps) {
        fprintf(stderr, "bench: --cell, --input-size, --num-units, --batch and --steps are required\n");
        return SS_ERR_INVALID;
    }
    if (o->n_units > 1) {
        if (layers_given && o->layers != o->n_units) {
            fprintf(stderr, "bench: --num-units lists %d sizes, --layers is %d\n", o->n_units,
                    o->layers);
            return SS_ERR_INVALID;
        }
        o->layers = o->n_units;
    }
    if (o->reset_after && o->cell != SS_CELL_GRU) {
        fprintf(stderr, "bench: --reset-after applies to --cell gru only\n");
        return SS_ERR_INVALID;
    }
    const char *why = ss_precision_unsupported(o->prec);
    if (why) {
        fprintf(stderr, "bench: %s\n", why);
        return SS_ERR_INVALID;
    }
    return 0;
}

/* xorshift64*: a fixed-seed generator, so every run uses the same weights. */
static float rnd(uint64_t *s)
{
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    uint64_t r = *s * 2685821657736338717ull;
    return (float)((double)(r >> 40) / (double)(1ull << 24)) * 2.0f - 1.0f;
}

static void fill(float *p, size_t n, float scale, uint64_t *s)
{
    for (size_t i = 0; i < n; i++)
        p[i] = scale * rnd(s);
}

/* Units of layer l. */
static int units_of(const bench_opts *o, int l)
{
    return o->n_units > 1 ? o->units[l] : o->num_units;
}

/* Floats of all weights of one layer (see DESIGN.md layouts). */
static size_t layer_floats(const bench_opts *o, size_t in, size_t H)
{
    switch (o->cell) {
    case SS_CELL_LSTM: return (in + H) * 4 * H + 4 * H;
    case SS_CELL_GRU:
        return o->reset_after ? in * 3 * H + H * 3 * H + 6 * H
                              : (in + H) * 2 * H + 2 * H + (in + H) * H + H;
    default: return (in + H) * H + H;
    }
}

static int build_model(const bench_opts *o, bench_model *bm, double *floats)
{
    ss_model *m = &bm->m;
    const size_t H0 = (size_t)units_of(o, 0), Hlast = (size_t)units_of(o, o->layers - 1);
    size_t total = 0;
    for (int l = 0; l < o->layers; l++)
        total += layer_floats(o, l == 0 ? (size_t)o->input_size : (size_t)units_of(o, l - 1),
                              (size_t)units_of(o, l));
    *floats += (double)total;
    if (*floats * 4.0 > (double)o->max_mb * 1048576.0)
        return SS_ERR_TOO_BIG;
    bm->weights = malloc(total * sizeof(float));
    if (!bm->weights)
        return SS_ERR_NOMEM;
    uint64_t seed = 0x5eed5eed12345678ull;
    /* Glorot-like scale keeps the gates out of saturation, as in training. */
    fill(bm->weights, total, 1.0f / sqrtf((float)(H0 + (size_t)o->input_size)), &seed);
    *m = (ss_model){.cell = o->cell, .input_size = o->input_size, .num_units = (int)H0,
                    .num_layers = o->layers, .activation = o->act, .forget_bias = 1.0f,
                    .reset_after = o->reset_after, .output_size = (int)Hlast};
    m->n_states = (size_t)o->layers * (o->cell == SS_CELL_LSTM ? 2 : 1);
    for (size_t i = 0; i < m->n_states; i++)
        bm->sizes[i] = units_of(o, (int)(o->cell == SS_CELL_LSTM ? i / 2 : i));
    m->state_sizes = bm->sizes;
    if (o->vocab || o->head_out) {
        size_t nio = (size_t)o->vocab * (size_t)o->input_size +
                     (Hlast + 1) * (size_t)o->head_out;
        *floats += (double)nio;
        if (*floats * 4.0 > (double)o->max_mb * 1048576.0)
            return SS_ERR_TOO_BIG;
        bm->io = malloc((nio ? nio : 1) * sizeof(float));
        if (!bm->io)
            return SS_ERR_NOMEM;
        fill(bm->io, nio, 1.0f / sqrtf((float)H0), &seed);
        m->embedding = o->vocab > 0;
        m->vocab = o->vocab;
        m->emb = o->vocab ? bm->io : NULL;
        m->head_out = o->head_out;
        m->head_act = o->head_act;
        m->head_kernel = o->head_out ? bm->io + (size_t)o->vocab * (size_t)o->input_size : NULL;
        m->head_bias = o->head_out ? m->head_kernel + Hlast * (size_t)o->head_out : NULL;
    }
    float *p = bm->weights;
    for (int l = 0; l < o->layers; l++) {
        ss_layer *ly = &m->layers[l];
        size_t in = l == 0 ? (size_t)o->input_size : (size_t)units_of(o, l - 1);
        const size_t H = (size_t)units_of(o, l);
        ly->in = (int)in;
        ly->H = (int)H;
        switch (o->cell) {
        case SS_CELL_LSTM:
            ly->kernel = p; p += (in + H) * 4 * H;
            ly->bias = p; p += 4 * H;
            break;
        case SS_CELL_GRU:
            if (o->reset_after) {
                ly->kernel = p; p += in * 3 * H;
                ly->recurrent_kernel = p; p += H * 3 * H;
                ly->bias = p; p += 6 * H;
            } else {
                ly->kernel = p; p += (in + H) * 2 * H;
                ly->bias = p; p += 2 * H;
                ly->cand_kernel = p; p += (in + H) * H;
                ly->cand_bias = p; p += H;
            }
            break;
        default:
            ly->kernel = p; p += (in + H) * H;
            ly->bias = p; p += H;
            break;
        }
    }
    return 0;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof(double), cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* The unroll's matrix products without the recurrence (see top comment). */
static void ref_sgemm(const bench_opts *o, const float *a, const float *w, float *c)
{
    const int TB = o->steps * o->batch;
    const int G = o->cell == SS_CELL_LSTM ? 4 : o->cell == SS_CELL_GRU ? 3 : 1;
    for (int l = 0; l < o->layers; l++) {
        const int H = units_of(o, l);
        int K = (l == 0 ? o->input_size : units_of(o, l - 1)) + H;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, TB, G * H, K, 1.0f, a, K,
                    w, G * H, 0.0f, c, G * H);
    }
}

/* Medians of the embedding lookup, the head and the whole model. */
typedef struct bench_io {
    double embed;           /* s per chunk: ids -> inputs */
    double head;            /* s per chunk: the head product, bias, activation */
    double model;           /* s per chunk: ss_mrun_run (all three) */
} bench_io;

/* Time the embedding, the head and the whole model on the model's
 * precision and threads (y holds T*B rows of RNN output to feed the head;
 * x is overwritten by the lookup). */
static int time_io(const bench_opts *o, const ss_model *m, float *x, float *y,
                   const float *const *sin, float *const *sout, double *times, bench_io *io)
{
    const size_t TB = (size_t)o->steps * (size_t)o->batch;
    ss_mrun *r = NULL;
    int64_t *ids = NULL;
    float *out = NULL;
    int rc = ss_mrun_new(&r, m, o->prec, NULL);
    if (!rc)
        rc = ss_unroll_set_threads(ss_mrun_unroll(r), o->threads);
    if (rc)
        goto out;
    ss_unroll_set_split(ss_mrun_unroll(r), o->split);
    ids = malloc(TB * sizeof *ids);
    out = malloc(TB * (size_t)ss_model_out_width(m) * sizeof *out);
    if (!ids || !out) {
        rc = SS_ERR_NOMEM;
        goto out;
    }
    uint64_t seed = 7;
    for (size_t i = 0; i < TB; i++)
        ids[i] = o->vocab ? (int64_t)((rnd(&seed) * 0.5f + 0.5f) * (float)(o->vocab - 1)) : 0;
    for (int part = 0; part < 3 && !rc; part++) {
        if ((part == 0 && !o->vocab) || (part == 1 && !o->head_out))
            continue;
        for (int i = 0; i < SS_BENCH_WARMUP + o->repeat && !rc; i++) {
            double t0 = now_s();
            if (part == 0)
                rc = ss_mrun_embed(m, ids, TB, x, NULL);
            else if (part == 1)
                rc = ss_mrun_head(r, o->steps, o->batch, y, NULL, out);
            else
                rc = ss_mrun_run(r, o->steps, o->batch, o->vocab ? NULL : x,
                                 o->vocab ? ids : NULL, NULL, sin, out, sout, NULL);
            if (i >= SS_BENCH_WARMUP)
                times[i - SS_BENCH_WARMUP] = now_s() - t0;
        }
        double t = median(times, o->repeat);
        *(part == 0 ? &io->embed : part == 1 ? &io->head : &io->model) = t;
    }
out:
    free(out);
    free(ids);
    ss_mrun_free(r);
    return rc;
}

int ss_bench_main(int argc, char **argv)
{
    bench_opts o;
    bench_model bm = {0};
    ss_unroll *u = NULL;
    float *buf = NULL;
    double *times = NULL;
    int status = 2, rc = 0;
    bool help = false;
    if (parse_opts(argc, argv, &o, &help)) {
        usage(stderr);
        goto out;
    }
    if (help) {
        usage(stdout);
        status = 0;
        goto out;
    }
    /* Sizes: inputs [T*B, I], outputs [T*B, H], states, and for the
     * reference a [T*B, in+H], b [in+H, G*H], c [T*B, G*H]. */
    const size_t TB = (size_t)o.steps * (size_t)o.batch, H = (size_t)o.num_units;
    const size_t In = (size_t)o.input_size, K = (In > H ? In : H) + H;
    const size_t nstates = (size_t)o.layers * (o.cell == SS_CELL_LSTM ? 2 : 1);
    const size_t n_in = TB * In, n_out = TB * H, n_st = nstates * (size_t)o.batch * H;
    const size_t n_a = TB * K, n_b = K * 4 * H, n_c = TB * 4 * H;
    double floats = (double)n_in + (double)n_out + 2.0 * (double)n_st + (double)n_a +
                    (double)n_b + (double)n_c;
    rc = build_model(&o, &bm, &floats);
    if (rc) {
        fprintf(stderr, "bench: %s (needs %.0f MB, --max-mb %ld)\n", ss_strerror(rc),
                floats * 4.0 / 1048576.0, o.max_mb);
        goto out;
    }
    buf = malloc((size_t)floats * sizeof(float));
    times = malloc((size_t)o.repeat * sizeof(double));
    if (!buf || !times) {
        fprintf(stderr, "bench: %s\n", ss_strerror(SS_ERR_NOMEM));
        goto out;
    }
    float *x = buf, *y = x + n_in, *st = y + n_out, *st_out = st + n_st;
    float *ra = st_out + n_st, *rb = ra + n_a, *rc_ = rb + n_b;
    uint64_t seed = 42;
    fill(x, n_in, 1.0f, &seed);
    fill(st, n_st, 0.5f, &seed);
    fill(ra, n_a, 1.0f, &seed);
    fill(rb, n_b, 0.05f, &seed);
    const float *sin[2 * SS_MODEL_MAX_LAYERS];
    float *sout[2 * SS_MODEL_MAX_LAYERS];
    for (size_t i = 0; i < nstates; i++) {
        sin[i] = st + i * (size_t)o.batch * H;
        sout[i] = st_out + i * (size_t)o.batch * H;
    }
    int32_t *lengths = malloc((size_t)o.batch * sizeof(int32_t));
    if (!lengths) {
        fprintf(stderr, "bench: %s\n", ss_strerror(SS_ERR_NOMEM));
        goto out;
    }
    for (int b = 0; b < o.batch; b++)
        lengths[b] = o.steps;
    /* OpenBLAS gets its threads only for the reference, after the unroll
     * is timed: its idle threads would otherwise compete with ours. */
    openblas_set_num_threads(1);
    double check_err = 0.0;
    ss_pgemm_bf16_set_kernel(o.bf16k);
    rc = ss_unroll_new_prec(&u, &bm.m, o.prec, &check_err);
    if (!rc)
        rc = ss_unroll_set_threads(u, o.threads);
    if (!rc)
        ss_unroll_set_split(u, o.split);
    if (rc) {
        fprintf(stderr, "bench: ss_unroll_new/set_threads: %s\n", ss_strerror(rc));
        free(lengths);
        goto out;
    }
    for (int r = 0; r < SS_BENCH_WARMUP + o.repeat && !rc; r++) {
        double t0 = now_s();
        rc = ss_unroll_run(u, o.steps, o.batch, x, lengths, sin, y, sout);
        if (r >= SS_BENCH_WARMUP)
            times[r - SS_BENCH_WARMUP] = now_s() - t0;
    }
    free(lengths);
    if (rc) {
        fprintf(stderr, "bench: ss_unroll_run: %s\n", ss_strerror(rc));
        goto out;
    }
    double t_unroll = median(times, o.repeat), t_min = times[0]; /* sorted by median() */
    const char *split = ss_unroll_last_split(u) == SS_UNROLL_SPLIT_UNITS ? "units" : "rows";
    const char *kernel = ss_unroll_kernel(u);
    double t_ref = NAN;
    if (!o.no_sgemm) {
        openblas_set_num_threads(o.threads);
        for (int r = 0; r < SS_BENCH_WARMUP + o.repeat; r++) {
            double t0 = now_s();
            ref_sgemm(&o, ra, rb, rc_);
            if (r >= SS_BENCH_WARMUP)
                times[r - SS_BENCH_WARMUP] = now_s() - t0;
        }
        t_ref = median(times, o.repeat);
    }
    bench_io io = {NAN, NAN, NAN};
    /* The model workspace of time_io starts threads of its own: park none
     * of the unroll's meanwhile (split and kernel are noted above). */
    if ((o.vocab || o.head_out) && o.threads > 1)
        ss_unroll_set_threads(u, 1);
    if ((o.vocab || o.head_out) && (rc = time_io(&o, &bm.m, x, y, sin, sout, times, &io))) {
        fprintf(stderr, "bench: embedding/head: %s\n", ss_strerror(rc));
        goto out;
    }
    double flops = ss_unroll_flops(&bm.m, o.steps, o.batch);
    double gf = flops / t_unroll * 1e-9, gf_ref = flops / t_ref * 1e-9;
    static const char *const cells[] = {"basic_rnn", "lstm", "gru"};
    if (o.json) {
        cJSON *j = cJSON_CreateObject();
        if (!j) {
            fprintf(stderr, "bench: %s\n", ss_strerror(SS_ERR_NOMEM));
            goto out;
        }
        cJSON_AddStringToObject(j, "cell", cells[o.cell]);
        cJSON_AddNumberToObject(j, "input_size", o.input_size);
        cJSON_AddNumberToObject(j, "num_units", o.num_units);
        if (o.n_units > 1) {
            char list[256];
            size_t off = 0;
            for (int l = 0; l < o.n_units && off < sizeof list; l++)
                off += (size_t)snprintf(list + off, sizeof list - off, "%s%d", l ? "," : "",
                                        o.units[l]);
            cJSON_AddStringToObject(j, "num_units_list", list);
        }
        cJSON_AddNumberToObject(j, "batch", o.batch);
        cJSON_AddNumberToObject(j, "steps", o.steps);
        cJSON_AddNumberToObject(j, "layers", o.layers);
        cJSON_AddNumberToObject(j, "threads", o.threads);
        cJSON_AddNumberToObject(j, "ms_per_chunk", t_unroll * 1e3);
        cJSON_AddNumberToObject(j, "ms_min", t_min * 1e3);
        cJSON_AddStringToObject(j, "precision", ss_precision_name(o.prec));
        cJSON_AddStringToObject(j, "split", split);
        cJSON_AddStringToObject(j, "kernel", kernel);
        cJSON_AddNumberToObject(j, "selfcheck_err", check_err);
        cJSON_AddNumberToObject(j, "gflops", gf);
        if (!o.no_sgemm) {
            cJSON_AddNumberToObject(j, "sgemm_gflops", gf_ref);
            cJSON_AddNumberToObject(j, "ratio", gf / gf_ref);
        }
        cJSON_AddBoolToObject(j, "reset_after", o.reset_after);
        if (o.vocab) {
            cJSON_AddNumberToObject(j, "vocab", o.vocab);
            cJSON_AddNumberToObject(j, "ms_embedding", io.embed * 1e3);
        }
        if (o.head_out) {
            cJSON_AddNumberToObject(j, "head_out", o.head_out);
            cJSON_AddStringToObject(j, "head_activation", ss_head_act_name(o.head_act));
            cJSON_AddNumberToObject(j, "ms_head", io.head * 1e3);
        }
        if (o.vocab || o.head_out)
            cJSON_AddNumberToObject(j, "ms_model", io.model * 1e3);
        cJSON_AddNumberToObject(j, "repeat", o.repeat);
        cJSON_AddStringToObject(j, "blas_core", openblas_get_corename());
        cJSON_AddStringToObject(j, "vmath", ss_vmath_isa());
        char *s = cJSON_PrintUnformatted(j);
        cJSON_Delete(j);
        if (!s) {
            fprintf(stderr, "bench: %s\n", ss_strerror(SS_ERR_NOMEM));
            goto out;
        }
        printf("%s\n", s);
        cJSON_free(s);
    } else {
        printf("%s%s I=%d H=%d B=%d T=%d L=%d threads=%d %s (%s) split=%s: %.3f ms/chunk "
               "(min %.3f), %.1f GFLOP/s; sgemm %.1f GFLOP/s; ratio %.3f (median of %d; "
               "blas %s, vmath %s)\n",
               cells[o.cell], o.reset_after ? "(reset_after)" : "", o.input_size,
               o.num_units, o.batch, o.steps, o.layers, o.threads, ss_precision_name(o.prec),
               kernel, split, t_unroll * 1e3, t_min * 1e3, gf, gf_ref, gf / gf_ref, o.repeat,
               openblas_get_corename(), ss_vmath_isa());
        if (o.vocab || o.head_out)
            printf("embedding (vocab %d) %.3f ms, head (%d, %s) %.3f ms, whole model %.3f ms "
                   "per chunk (medians)\n",
                   o.vocab, o.vocab ? io.embed * 1e3 : 0.0, o.head_out,
                   ss_head_act_name(o.head_act), o.head_out ? io.head * 1e3 : 0.0,
                   io.model * 1e3);
    }
    status = 0;
out:
    ss_unroll_free(u);
    free(times);
    free(buf);
    free(bm.weights);
    free(bm.io);
    return status;
}
