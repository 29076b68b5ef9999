/* bench_onednn -- the oneDNN peer of `statesaver-worker bench`: one chunk of
 * T steps through oneDNN's lstm_forward or lbr_gru_forward (inference,
 * one layer, left to right), in f32 or bf16, timed like ours (warm-up,
 * then the median of --repeat runs).
 *
 * Fairness: the weights are reordered once into the primitive's preferred
 * layout (format_tag_any) outside the timing, as we pack ours once; the
 * inputs and initial states are prepared (and for bf16 converted) outside
 * the timing too, so oneDNN's bf16 figure excludes the input conversion
 * that our bf16 path does inside ss_unroll_run. Threads: OpenMP
 * (omp_set_num_threads(--threads)). A benchmark, not a test, and not a
 * dependency of any program; built only when meson finds dnnl.
 *
 * usage: bench-onednn --cell lstm|gru --input-size I --num-units H
 *        --batch B --steps T [--dtype f32|bf16] [--threads N] [--repeat N]
 * Prints one JSON line.
 */
#include <oneapi/dnnl/dnnl.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define CHECK(call)                                                                    \
    do {                                                                               \
        dnnl_status_t st_ = (call);                                                    \
        if (st_ != dnnl_success) {                                                     \
            fprintf(stderr, "bench-onednn: %s failed: status %d\n", #call, (int)st_); \
            exit(1);                                                                   \
        }                                                                              \
    } while (0)

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

/* A user-side f32 memory with plain layout `tag`, random contents. */
static dnnl_memory_t user_mem(dnnl_engine_t eng, int nd, const dnnl_dims_t dims,
                              dnnl_format_tag_t tag, float scale, unsigned *seed)
{
    dnnl_memory_desc_t md;
    dnnl_memory_t m;
    CHECK(dnnl_memory_desc_init_by_tag(&md, nd, dims, dnnl_f32, tag));
    CHECK(dnnl_memory_create(&m, &md, eng, DNNL_MEMORY_ALLOCATE));
    float *p = NULL;
    CHECK(dnnl_memory_get_data_handle(m, (void **)&p));
    size_t n = dnnl_memory_desc_get_size(&md) / sizeof(float);
    for (size_t i = 0; i < n; i++) {
        *seed = *seed * 1103515245u + 12345u;
        p[i] = scale * ((float)((*seed >> 8) & 0xffff) / 32768.0f - 1.0f);
    }
    return m;
}

/* Memory of the primitive's desc for `arg`, filled from `src` by a reorder
 * (layout and data type conversion), outside any timing. */
static dnnl_memory_t prim_mem(dnnl_engine_t eng, dnnl_stream_t st, const_dnnl_primitive_desc_t pd,
                              int arg, dnnl_memory_t src)
{
    const dnnl_memory_desc_t *md = dnnl_primitive_desc_query_md(pd, dnnl_query_exec_arg_md, arg);
    dnnl_memory_t m;
    CHECK(dnnl_memory_create(&m, md, eng, DNNL_MEMORY_ALLOCATE));
    if (src) {
        const dnnl_memory_desc_t *smd;
        CHECK(dnnl_memory_get_memory_desc(src, &smd));
        dnnl_primitive_desc_t rpd;
        dnnl_primitive_t r;
        CHECK(dnnl_reorder_primitive_desc_create(&rpd, smd, eng, md, eng, NULL));
        CHECK(dnnl_primitive_create(&r, rpd));
        dnnl_exec_arg_t a[2] = {{DNNL_ARG_FROM, src}, {DNNL_ARG_TO, m}};
        CHECK(dnnl_primitive_execute(r, st, 2, a));
        CHECK(dnnl_stream_wait(st));
        dnnl_primitive_destroy(r);
        dnnl_primitive_desc_destroy(rpd);
    }
    return m;
}

int main(int argc, char **argv)
{
    const char *cell = NULL, *dtype = "f32";
    int I = 0, H = 0, B = 0, T = 0, threads = 1, repeat = 20;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--cell")) cell = argv[i + 1];
        else if (!strcmp(argv[i], "--input-size")) I = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--num-units")) H = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--batch")) B = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--steps")) T = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--dtype")) dtype = argv[i + 1];
        else if (!strcmp(argv[i], "--threads")) threads = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--repeat")) repeat = atoi(argv[i + 1]);
        else {
            fprintf(stderr, "bench-onednn: unknown option %s\n", argv[i]);
            return 2;
        }
    }
    const int lstm = cell && !strcmp(cell, "lstm"), gru = cell && !strcmp(cell, "gru");
    const int bf16 = !strcmp(dtype, "bf16");
    if ((!lstm && !gru) || I < 1 || H < 1 || B < 1 || T < 1 || threads < 1 || repeat < 1 ||
        (!bf16 && strcmp(dtype, "f32"))) {
        fprintf(stderr, "usage: bench-onednn --cell lstm|gru --input-size I --num-units H "
                        "--batch B --steps T [--dtype f32|bf16] [--threads N] [--repeat N]\n");
        return 2;
    }
    omp_set_num_threads(threads);
    const int G = lstm ? 4 : 3, GB = lstm ? 4 : 4; /* lbr gru: 4 bias gates */
    const dnnl_data_type_t dt = bf16 ? dnnl_bf16 : dnnl_f32;
    dnnl_engine_t eng;
    dnnl_stream_t st;
    CHECK(dnnl_engine_create(&eng, dnnl_cpu, 0));
    CHECK(dnnl_stream_create(&st, eng, dnnl_stream_default_flags));
    dnnl_dims_t d_src = {T, B, I}, d_iter = {1, 1, B, H}, d_wl = {1, 1, I, G, H},
                d_wi = {1, 1, H, G, H}, d_bias = {1, 1, GB, H}, d_dst = {T, B, H};
    dnnl_memory_desc_t src, iter, iter_c, wl, wi, bias, dst, dst_iter, dst_iter_c;
    CHECK(dnnl_memory_desc_init_by_tag(&src, 3, d_src, dt, dnnl_tnc));
    CHECK(dnnl_memory_desc_init_by_tag(&iter, 4, d_iter, dt, dnnl_ldnc));
    CHECK(dnnl_memory_desc_init_by_tag(&iter_c, 4, d_iter, dnnl_f32, dnnl_ldnc));
    CHECK(dnnl_memory_desc_init_by_tag(&wl, 5, d_wl, dt, dnnl_format_tag_any));
    CHECK(dnnl_memory_desc_init_by_tag(&wi, 5, d_wi, dt, dnnl_format_tag_any));
    CHECK(dnnl_memory_desc_init_by_tag(&bias, 4, d_bias, dnnl_f32, dnnl_ldgo));
    CHECK(dnnl_memory_desc_init_by_tag(&dst, 3, d_dst, dt, dnnl_tnc));
    CHECK(dnnl_memory_desc_init_by_tag(&dst_iter, 4, d_iter, dt, dnnl_ldnc));
    CHECK(dnnl_memory_desc_init_by_tag(&dst_iter_c, 4, d_iter, dnnl_f32, dnnl_ldnc));
    dnnl_rnn_desc_t rd;
    if (lstm)
        CHECK(dnnl_lstm_forward_desc_init(&rd, dnnl_forward_inference,
                                          dnnl_unidirectional_left2right, &src, &iter, &iter_c,
                                          &wl, &wi, &bias, &dst, &dst_iter, &dst_iter_c, 0));
    else
        CHECK(dnnl_lbr_gru_forward_desc_init(&rd, dnnl_forward_inference,
                                             dnnl_unidirectional_left2right, &src, &iter, &wl,
                                             &wi, &bias, &dst, &dst_iter, 0));
    dnnl_primitive_desc_t pd;
    dnnl_primitive_t prim;
    CHECK(dnnl_primitive_desc_create(&pd, &rd, NULL, eng, NULL));
    CHECK(dnnl_primitive_create(&prim, pd));
    const char *impl = NULL;
    CHECK(dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl));
    unsigned seed = 42;
    const float ws = 1.0f / (float)(I + H);
    dnnl_memory_t u_src = user_mem(eng, 3, d_src, dnnl_tnc, 1.0f, &seed);
    dnnl_memory_t u_iter = user_mem(eng, 4, d_iter, dnnl_ldnc, 0.5f, &seed);
    dnnl_memory_t u_wl = user_mem(eng, 5, d_wl, dnnl_ldigo, ws, &seed);
    dnnl_memory_t u_wi = user_mem(eng, 5, d_wi, dnnl_ldigo, ws, &seed);
    dnnl_memory_t u_bias = user_mem(eng, 4, d_bias, dnnl_ldgo, 0.1f, &seed);
    dnnl_memory_t m_src = prim_mem(eng, st, pd, DNNL_ARG_SRC_LAYER, u_src);
    dnnl_memory_t m_iter = prim_mem(eng, st, pd, DNNL_ARG_SRC_ITER, u_iter);
    dnnl_memory_t m_wl = prim_mem(eng, st, pd, DNNL_ARG_WEIGHTS_LAYER, u_wl);
    dnnl_memory_t m_wi = prim_mem(eng, st, pd, DNNL_ARG_WEIGHTS_ITER, u_wi);
    dnnl_memory_t m_bias = prim_mem(eng, st, pd, DNNL_ARG_BIAS, u_bias);
    dnnl_memory_t m_dst = prim_mem(eng, st, pd, DNNL_ARG_DST_LAYER, NULL);
    dnnl_memory_t m_dst_iter = prim_mem(eng, st, pd, DNNL_ARG_DST_ITER, NULL);
    dnnl_memory_t m_iter_c = NULL, m_dst_iter_c = NULL;
    dnnl_exec_arg_t args[9] = {
        {DNNL_ARG_SRC_LAYER, m_src}, {DNNL_ARG_SRC_ITER, m_iter},
        {DNNL_ARG_WEIGHTS_LAYER, m_wl}, {DNNL_ARG_WEIGHTS_ITER, m_wi},
        {DNNL_ARG_BIAS, m_bias}, {DNNL_ARG_DST_LAYER, m_dst}, {DNNL_ARG_DST_ITER, m_dst_iter},
    };
    int nargs = 7;
    if (lstm) {
        m_iter_c = prim_mem(eng, st, pd, DNNL_ARG_SRC_ITER_C, u_iter);
        m_dst_iter_c = prim_mem(eng, st, pd, DNNL_ARG_DST_ITER_C, NULL);
        args[nargs++] = (dnnl_exec_arg_t){DNNL_ARG_SRC_ITER_C, m_iter_c};
        args[nargs++] = (dnnl_exec_arg_t){DNNL_ARG_DST_ITER_C, m_dst_iter_c};
    }
    double *times = malloc((size_t)repeat * sizeof(double));
    if (!times)
        return 1;
    for (int r = 0; r < 3 + repeat; r++) {
        double t0 = now_s();
        CHECK(dnnl_primitive_execute(prim, st, nargs, args));
        CHECK(dnnl_stream_wait(st));
        if (r >= 3)
            times[r - 3] = now_s() - t0;
    }
    qsort(times, (size_t)repeat, sizeof(double), cmp_double);
    double med = repeat % 2 ? times[repeat / 2] : 0.5 * (times[repeat / 2 - 1] + times[repeat / 2]);
    double flops = 2.0 * T * B * (double)(I + H) * G * H;
    printf("{\"impl\":\"onednn\",\"cell\":\"%s\",\"dtype\":\"%s\",\"input_size\":%d,"
           "\"num_units\":%d,\"batch\":%d,\"steps\":%d,\"threads\":%d,\"ms_per_chunk\":%.4f,"
           "\"ms_min\":%.4f,\"gflops\":%.1f,\"repeat\":%d,\"impl_info\":\"%s\","
           "\"dnnl_version\":\"%d.%d.%d\"}\n",
           lstm ? "lstm" : "gru", dtype, I, H, B, T, threads, med * 1e3, times[0] * 1e3,
           flops / med * 1e-9, repeat, impl ? impl : "?", dnnl_version()->major,
           dnnl_version()->minor, dnnl_version()->patch);
    free(times);
    dnnl_memory_t all[] = {u_src, u_iter, u_wl, u_wi, u_bias, m_src, m_iter, m_wl, m_wi,
                           m_bias, m_dst, m_dst_iter, m_iter_c, m_dst_iter_c};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        if (all[i])
            dnnl_memory_destroy(all[i]);
    dnnl_primitive_destroy(prim);
    dnnl_primitive_desc_destroy(pd);
    dnnl_stream_destroy(st);
    dnnl_engine_destroy(eng);
    return 0;
}
