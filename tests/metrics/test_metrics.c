/* test_metrics -- Check suite for ss_metrics (registry, exposition format,
 * concurrent updates) and ss_http (routes, status codes, bad addresses)
 * over a real socket on 127.0.0.1. */
#include <arpa/inet.h>
#include <check.h>
#include <math.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "ss_error.h"
#include "ss_http.h"
#include "ss_metrics.h"

static const char *const ops[] = {"fetch", "save"};
static const char *const codes[] = {"OK", "NOT_FOUND", "INTERNAL"};

static char *render(ss_metrics *m)
{
    char *text = NULL;
    size_t len = 0;
    ck_assert_int_eq(ss_metrics_render(m, &text, &len), 0);
    ck_assert_uint_eq(strlen(text), len);
    return text;
}

START_TEST(test_counter_and_gauge_text)
{
    ss_metrics *m = NULL;
    ss_metric *c = NULL, *g = NULL, *plain = NULL;
    ck_assert_int_eq(ss_metrics_new(&m), 0);
    ss_metric_label lop = {"op", ops, 2};
    ss_metric_def dc = {.type = SS_METRIC_COUNTER, .name = "t_requests_total",
                        .help = "Requests by op.", .labels = &lop, .n_labels = 1};
    ck_assert_int_eq(ss_metrics_add(m, &dc, &c), 0);
    ss_metric_def dg = {.type = SS_METRIC_GAUGE, .name = "t_depth",
                        .help = "Depth with a back\\slash\nand newline."};
    /* A newline in HELP is refused (the text must be one line). */
    ck_assert_int_eq(ss_metrics_add(m, &dg, &g), SS_ERR_INVALID);
    dg.help = "Depth with a back\\slash.";
    ck_assert_int_eq(ss_metrics_add(m, &dg, &g), 0);
    ss_metric_def dp = {.type = SS_METRIC_COUNTER, .name = "t_plain_total",
                        .help = "No labels."};
    ck_assert_int_eq(ss_metrics_add(m, &dp, &plain), 0);
    ss_metric_inc(c, ss_metric_series(c, 1, 0), 3);
    ss_metric_inc(c, 0, 1);
    ss_metric_set(g, 0, 2.5);
    ss_metric_add(g, 0, -1.0);
    ss_metric_inc(plain, 0, 7);
    char *t = render(m);
    const char *want =
        "# HELP t_requests_total Requests by op.\n"
        "# TYPE t_requests_total counter\n"
        "t_requests_total{op=\"fetch\"} 1\n"
        "t_requests_total{op=\"save\"} 3\n"
        "# HELP t_depth Depth with a back\\\\slash.\n"
        "# TYPE t_depth gauge\n"
        "t_depth 1.5\n"
        "# HELP t_plain_total No labels.\n"
        "# TYPE t_plain_total counter\n"
        "t_plain_total 7\n";
    ck_assert_str_eq(t, want);
    free(t);
    ck_assert(ss_metric_value(c, 1) == 3.0);
    ck_assert(ss_metric_value(g, 0) == 1.5);
    ss_metrics_free(m);
}
END_TEST

START_TEST(test_two_labels_skip_zero_and_escaping)
{
    static const char *const odd[] = {"a\"b\\c\nd"};
    ss_metrics *m = NULL;
    ss_metric *f = NULL, *e = NULL;
    ck_assert_int_eq(ss_metrics_new(&m), 0);
    ss_metric_label l2[] = {{"op", ops, 2}, {"code", codes, 3}};
    ss_metric_def d = {.type = SS_METRIC_COUNTER, .name = "t_codes_total",
                       .help = "By op and code.", .labels = l2, .n_labels = 2,
                       .flags = SS_METRIC_SKIP_ZERO};
    ck_assert_int_eq(ss_metrics_add(m, &d, &f), 0);
    ck_assert_uint_eq(ss_metric_series_count(f), 6);
    ck_assert_uint_eq(ss_metric_series(f, 1, 2), 5);
    ck_assert_uint_eq(ss_metric_series(f, 2, 0), SIZE_MAX);
    ck_assert_uint_eq(ss_metric_series(f, 0, 3), SIZE_MAX);
    ss_metric_inc(f, ss_metric_series(f, 1, 1), 2);
    ss_metric_inc(f, ss_metric_series(f, 0, 0), 1);
    ss_metric_inc(f, SIZE_MAX, 100); /* ignored */
    ss_metric_label le = {"v", odd, 1};
    ss_metric_def de = {.type = SS_METRIC_GAUGE, .name = "t_escape",
                        .help = "Escaping.", .labels = &le, .n_labels = 1};
    ck_assert_int_eq(ss_metrics_add(m, &de, &e), 0);
    char *t = render(m);
    const char *want =
        "# HELP t_codes_total By op and code.\n"
        "# TYPE t_codes_total counter\n"
        "t_codes_total{op=\"fetch\",code=\"OK\"} 1\n"
        "t_codes_total{op=\"save\",code=\"NOT_FOUND\"} 2\n"
        "# HELP t_escape Escaping.\n"
        "# TYPE t_escape gauge\n"
        "t_escape{v=\"a\\\"b\\\\c\\nd\"} 0\n";
    ck_assert_str_eq(t, want);
    free(t);
    ss_metrics_free(m);
}
END_TEST

START_TEST(test_histogram_text)
{
    static const double b[] = {0.001, 0.5, 2};
    ss_metrics *m = NULL;
    ss_metric *h = NULL;
    ck_assert_int_eq(ss_metrics_new(&m), 0);
    ss_metric_label lop = {"op", ops, 2};
    ss_metric_def d = {.type = SS_METRIC_HISTOGRAM, .name = "t_seconds",
                       .help = "Latency.", .labels = &lop, .n_labels = 1,
                       .buckets = b, .n_buckets = 3};
    ck_assert_int_eq(ss_metrics_add(m, &d, &h), 0);
    ss_metric_observe(h, 0, 0.0005); /* le 0.001 */
    ss_metric_observe(h, 0, 0.001);  /* le 0.001: bounds are inclusive */
    ss_metric_observe(h, 0, 1.0);    /* le 2 */
    ss_metric_observe(h, 0, 100.0);  /* +Inf */
    ss_metric_observe(h, 0, NAN);    /* ignored */
    char *t = render(m);
    const char *want =
        "# HELP t_seconds Latency.\n"
        "# TYPE t_seconds histogram\n"
        "t_seconds_bucket{op=\"fetch\",le=\"0.001\"} 2\n"
        "t_seconds_bucket{op=\"fetch\",le=\"0.5\"} 2\n"
        "t_seconds_bucket{op=\"fetch\",le=\"2\"} 3\n"
        "t_seconds_bucket{op=\"fetch\",le=\"+Inf\"} 4\n"
        "t_seconds_sum{op=\"fetch\"} 101.0015\n"
        "t_seconds_count{op=\"fetch\"} 4\n"
        "t_seconds_bucket{op=\"save\",le=\"0.001\"} 0\n"
        "t_seconds_bucket{op=\"save\",le=\"0.5\"} 0\n"
        "t_seconds_bucket{op=\"save\",le=\"2\"} 0\n"
        "t_seconds_bucket{op=\"save\",le=\"+Inf\"} 0\n"
        "t_seconds_sum{op=\"save\"} 0\n"
        "t_seconds_count{op=\"save\"} 0\n";
    ck_assert_str_eq(t, want);
    free(t);
    ck_assert(ss_metric_value(h, 0) == 4.0);
    ck_assert(fabs(ss_metric_sum(h, 0) - 101.0015) < 1e-9);
    ss_metrics_free(m);
}
END_TEST

/* Registration errors, one per row. */
struct bad_def {
    const char *what;       /* the case */
    ss_metric_def def;      /* what is registered */
    int want;               /* expected error */
};

static const double inc[] = {1, 2};
static const double dec[] = {2, 1};
static const double infb[] = {1, INFINITY};
static const char *const two[] = {"x", "y"};
static const ss_metric_label bad_label_name = {"9x", two, 2};
static const ss_metric_label le_label = {"le", two, 2};
static const ss_metric_label reserved_label = {"__x", two, 2};
static const ss_metric_label empty_values = {"op", two, 0};
static const ss_metric_label dup_labels[] = {{"op", two, 2}, {"op", two, 2}};
static const ss_metric_label three[] = {{"a", two, 2}, {"b", two, 2}, {"c", two, 2}};

static const struct bad_def bad_defs[] = {
    {"empty name", {.type = SS_METRIC_COUNTER, .name = "", .help = "h"}, SS_ERR_INVALID},
    {"name starts with digit", {.type = SS_METRIC_COUNTER, .name = "1x", .help = "h"}, SS_ERR_INVALID},
    {"name with dash", {.type = SS_METRIC_COUNTER, .name = "a-b", .help = "h"}, SS_ERR_INVALID},
    {"no help", {.type = SS_METRIC_COUNTER, .name = "a", .help = NULL}, SS_ERR_INVALID},
    {"duplicate name", {.type = SS_METRIC_GAUGE, .name = "dup", .help = "h"}, SS_ERR_INVALID},
    {"bad type", {.type = (ss_metric_type)7, .name = "a", .help = "h"}, SS_ERR_INVALID},
    {"bad label name", {.type = SS_METRIC_COUNTER, .name = "a", .help = "h",
                        .labels = &bad_label_name, .n_labels = 1}, SS_ERR_INVALID},
    {"label le", {.type = SS_METRIC_COUNTER, .name = "a", .help = "h",
                  .labels = &le_label, .n_labels = 1}, SS_ERR_INVALID},
    {"reserved label", {.type = SS_METRIC_COUNTER, .name = "a", .help = "h",
                        .labels = &reserved_label, .n_labels = 1}, SS_ERR_INVALID},
    {"label without values", {.type = SS_METRIC_COUNTER, .name = "a", .help = "h",
                              .labels = &empty_values, .n_labels = 1}, SS_ERR_INVALID},
    {"same label twice", {.type = SS_METRIC_COUNTER, .name = "a", .help = "h",
                          .labels = dup_labels, .n_labels = 2}, SS_ERR_INVALID},
    {"three labels", {.type = SS_METRIC_COUNTER, .name = "a", .help = "h",
                      .labels = three, .n_labels = 3}, SS_ERR_INVALID},
    {"histogram without buckets", {.type = SS_METRIC_HISTOGRAM, .name = "a", .help = "h"}, SS_ERR_INVALID},
    {"decreasing buckets", {.type = SS_METRIC_HISTOGRAM, .name = "a", .help = "h",
                            .buckets = dec, .n_buckets = 2}, SS_ERR_INVALID},
    {"infinite bucket", {.type = SS_METRIC_HISTOGRAM, .name = "a", .help = "h",
                         .buckets = infb, .n_buckets = 2}, SS_ERR_INVALID},
    {"too many buckets", {.type = SS_METRIC_HISTOGRAM, .name = "a", .help = "h",
                          .buckets = inc, .n_buckets = SS_METRIC_BUCKETS_MAX + 1}, SS_ERR_INVALID},
};

START_TEST(test_bad_defs)
{
    const struct bad_def *c = &bad_defs[_i];
    ss_metrics *m = NULL;
    ss_metric *f = NULL, *dup = NULL;
    ck_assert_int_eq(ss_metrics_new(&m), 0);
    ss_metric_def d = {.type = SS_METRIC_COUNTER, .name = "dup", .help = "h"};
    ck_assert_int_eq(ss_metrics_add(m, &d, &dup), 0);
    int rc = ss_metrics_add(m, &c->def, &f);
    ck_assert_msg(rc == c->want, "%s: got %d want %d", c->what, rc, c->want);
    ck_assert_ptr_null(f);
    /* The registry still renders only what was registered. */
    char *t = render(m);
    ck_assert_str_eq(t, "# HELP dup h\n# TYPE dup counter\ndup 0\n");
    free(t);
    ss_metrics_free(m);
}
END_TEST

START_TEST(test_series_limit)
{
    static const char *vals[65];
    for (size_t i = 0; i < 65; i++)
        vals[i] = "v";
    ss_metrics *m = NULL;
    ss_metric *f = NULL;
    ck_assert_int_eq(ss_metrics_new(&m), 0);
    ss_metric_label l[] = {{"a", vals, 65}, {"b", vals, 64}};
    ss_metric_def d = {.type = SS_METRIC_COUNTER, .name = "big", .help = "h",
                       .labels = l, .n_labels = 2};
    ck_assert_int_eq(ss_metrics_add(m, &d, &f), SS_ERR_FULL);
    l[0].n_values = 64;
    ck_assert_int_eq(ss_metrics_add(m, &d, &f), 0);
    ck_assert_uint_eq(ss_metric_series_count(f), SS_METRIC_SERIES_MAX);
    ss_metrics_free(m);
}
END_TEST

/* ---- concurrency: two threads add to the same series ---- */

#define RACE_N 200000

typedef struct race {
    ss_metric *c;  /* counter */
    ss_metric *g;  /* gauge */
    ss_metric *h;  /* histogram */
} race;

static void *race_thread(void *arg)
{
    race *r = arg;
    for (int i = 0; i < RACE_N; i++) {
        ss_metric_inc(r->c, 0, 1);
        ss_metric_add(r->g, 0, 1.0);
        ss_metric_observe(r->h, 0, (i % 2) ? 0.25 : 4.0);
    }
    return NULL;
}

START_TEST(test_concurrent_updates)
{
    static const double b[] = {1};
    ss_metrics *m = NULL;
    race r;
    ck_assert_int_eq(ss_metrics_new(&m), 0);
    ss_metric_def dc = {.type = SS_METRIC_COUNTER, .name = "c", .help = "h"};
    ss_metric_def dg = {.type = SS_METRIC_GAUGE, .name = "g", .help = "h"};
    ss_metric_def dh = {.type = SS_METRIC_HISTOGRAM, .name = "hi", .help = "h",
                        .buckets = b, .n_buckets = 1};
    ck_assert_int_eq(ss_metrics_add(m, &dc, &r.c), 0);
    ck_assert_int_eq(ss_metrics_add(m, &dg, &r.g), 0);
    ck_assert_int_eq(ss_metrics_add(m, &dh, &r.h), 0);
    pthread_t t1, t2;
    ck_assert_int_eq(pthread_create(&t1, NULL, race_thread, &r), 0);
    ck_assert_int_eq(pthread_create(&t2, NULL, race_thread, &r), 0);
    /* Render while they run: every snapshot must stay consistent. */
    for (int k = 0; k < 20; k++) {
        char *t = render(m);
        ck_assert_ptr_nonnull(strstr(t, "# TYPE hi histogram\n"));
        unsigned long long inf = 0, count = 1;
        const char *p = strstr(t, "hi_bucket{le=\"+Inf\"} ");
        ck_assert_ptr_nonnull(p);
        sscanf(p, "hi_bucket{le=\"+Inf\"} %llu", &inf);
        p = strstr(t, "hi_count ");
        sscanf(p, "hi_count %llu", &count);
        ck_assert_uint_eq(inf, count);
        free(t);
    }
    pthread_join(t1, NULL);
    pthread_join(t2, NULL);
    ck_assert(ss_metric_value(r.c, 0) == 2.0 * RACE_N);
    ck_assert(ss_metric_value(r.g, 0) == 2.0 * RACE_N);
    ck_assert(ss_metric_value(r.h, 0) == 2.0 * RACE_N);
    ck_assert(ss_metric_sum(r.h, 0) == (double)RACE_N * (0.25 + 4.0));
    char *t = render(m);
    char want[256];
    snprintf(want, sizeof want, "hi_bucket{le=\"1\"} %d\nhi_bucket{le=\"+Inf\"} %d\n",
             RACE_N, 2 * RACE_N);
    ck_assert_ptr_nonnull(strstr(t, want));
    free(t);
    ss_metrics_free(m);
}
END_TEST

/* ---- ss_http over a real socket ---- */

typedef struct probe {
    int collects;      /* collect calls */
    bool healthy;      /* what healthy() answers */
    bool ready;        /* what ready() answers */
    ss_metric *g;      /* gauge set by collect */
} probe;

static void p_collect(void *arg)
{
    probe *p = arg;
    p->collects++;
    ss_metric_set(p->g, 0, 42);
}

static bool p_healthy(void *arg)
{
    return ((probe *)arg)->healthy;
}

static bool p_ready(void *arg, char *reason, size_t size)
{
    probe *p = arg;
    if (!p->ready)
        snprintf(reason, size, "shutting down");
    return p->ready;
}

/* One HTTP/1.0 request; returns the status and the whole reply in out. */
static int http_get(int port, const char *method, const char *path, char *out,
                    size_t size)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    ck_assert_int_ge(fd, 0);
    struct timeval tv = {.tv_sec = 10};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_int_eq(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    char req[256];
    int n = snprintf(req, sizeof req, "%s %s HTTP/1.0\r\nHost: x\r\n\r\n", method, path);
    ck_assert_int_eq(write(fd, req, (size_t)n), n);
    size_t got = 0;
    ssize_t r;
    while (got + 1 < size && (r = read(fd, out + got, size - 1 - got)) > 0)
        got += (size_t)r;
    out[got] = '\0';
    close(fd);
    int status = 0;
    sscanf(out, "HTTP/1.%*d %d", &status);
    return status;
}

START_TEST(test_http_routes)
{
    ss_metrics *m = NULL;
    probe p = {.healthy = true, .ready = true};
    ck_assert_int_eq(ss_metrics_new(&m), 0);
    ss_metric_def dg = {.type = SS_METRIC_GAUGE, .name = "t_collected", .help = "h"};
    ck_assert_int_eq(ss_metrics_add(m, &dg, &p.g), 0);
    ss_http_handlers h = {.collect = p_collect, .healthy = p_healthy,
                          .ready = p_ready, .arg = &p};
    ss_http *srv = NULL;
    char err[256];
    ck_assert_int_eq(ss_http_start(&srv, "127.0.0.1:0", m, &h, err, sizeof err), 0);
    int port = ss_http_port(srv);
    ck_assert_int_gt(port, 0);
    static char out[65536];
    ck_assert_int_eq(http_get(port, "GET", "/metrics", out, sizeof out), 200);
    ck_assert_ptr_nonnull(strstr(out, "text/plain; version=0.0.4"));
    ck_assert_ptr_nonnull(strstr(out, "\r\n\r\n# HELP t_collected h\n# TYPE t_collected gauge\nt_collected 42\n"));
    ck_assert_int_eq(p.collects, 1);
    ck_assert_int_eq(http_get(port, "GET", "/healthz", out, sizeof out), 200);
    ck_assert_ptr_nonnull(strstr(out, "\r\n\r\nok\n"));
    ck_assert_int_eq(http_get(port, "GET", "/readyz", out, sizeof out), 200);
    ck_assert_int_eq(http_get(port, "HEAD", "/metrics", out, sizeof out), 200);
    ck_assert_int_eq(http_get(port, "GET", "/nope", out, sizeof out), 404);
    ck_assert_int_eq(http_get(port, "GET", "/metricsx", out, sizeof out), 404);
    ck_assert_int_eq(http_get(port, "POST", "/metrics", out, sizeof out), 405);
    ck_assert_ptr_nonnull(strstr(out, "Allow: GET, HEAD"));
    p.healthy = false;
    p.ready = false;
    ck_assert_int_eq(http_get(port, "GET", "/healthz", out, sizeof out), 503);
    ck_assert_int_eq(http_get(port, "GET", "/readyz", out, sizeof out), 503);
    ck_assert_ptr_nonnull(strstr(out, "not ready: shutting down"));
    /* Garbage instead of HTTP: the daemon answers or drops it and keeps
     * serving. */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_int_eq(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    ck_assert_int_eq(write(fd, "\x01\x02garbage\r\n\r\n", 13), 13);
    char junk[512];
    struct timeval tv = {.tv_sec = 10};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    while (read(fd, junk, sizeof junk) > 0)
        ;
    close(fd);
    ck_assert_int_eq(http_get(port, "GET", "/metrics", out, sizeof out), 200);
    ck_assert_int_eq(p.collects, 3); /* GET, HEAD, GET */
    ss_http_stop(srv);
    ss_metrics_free(m);
}
END_TEST

START_TEST(test_http_port_taken)
{
    ss_metrics *m = NULL;
    ck_assert_int_eq(ss_metrics_new(&m), 0);
    ss_http *a = NULL, *b = NULL;
    char err[256], addr[64];
    ck_assert_int_eq(ss_http_start(&a, "127.0.0.1:0", m, NULL, err, sizeof err), 0);
    snprintf(addr, sizeof addr, "127.0.0.1:%d", ss_http_port(a));
    ck_assert_int_eq(ss_http_start(&b, addr, m, NULL, err, sizeof err), SS_ERR_IO);
    ck_assert_ptr_null(b);
    ck_assert_ptr_nonnull(strstr(err, addr));
    ss_http_stop(a);
    ss_http_stop(NULL);
    ss_metrics_free(m);
}
END_TEST

struct addr_case {
    const char *in;   /* --metrics-listen text */
    int want;         /* 0 or the error */
    int family;       /* AF_INET / AF_INET6 when accepted */
    int port;         /* port when accepted */
};

static const struct addr_case addr_cases[] = {
    {"127.0.0.1:9450", 0, AF_INET, 9450},
    {"0.0.0.0:0", 0, AF_INET, 0},
    {"[::1]:9451", 0, AF_INET6, 9451},
    {"localhost:80", 0, 0, 80},
    {":9450", 0, 0, 9450},
    {"", SS_ERR_INVALID, 0, 0},
    {"127.0.0.1", SS_ERR_INVALID, 0, 0},
    {"127.0.0.1:", SS_ERR_INVALID, 0, 0},
    {"127.0.0.1:65536", SS_ERR_INVALID, 0, 0},
    {"127.0.0.1:-1", SS_ERR_INVALID, 0, 0},
    {"127.0.0.1:80x", SS_ERR_INVALID, 0, 0},
    {"::1:80", SS_ERR_INVALID, 0, 0},
    {"[::1]80", SS_ERR_INVALID, 0, 0},
    {"[]:80", SS_ERR_INVALID, 0, 0},
    {"no-such-host.invalid:80", SS_ERR_INVALID, 0, 0},
};

START_TEST(test_parse_listen)
{
    const struct addr_case *c = &addr_cases[_i];
    struct sockaddr_storage sa;
    unsigned len = 0;
    char err[256] = "";
    int rc = ss_http_parse_listen(c->in, &sa, &len, err, sizeof err);
    ck_assert_msg(rc == c->want, "'%s': got %d want %d (%s)", c->in, rc, c->want, err);
    if (rc < 0) {
        ck_assert_msg(err[0], "'%s': no message", c->in);
        return;
    }
    if (c->family)
        ck_assert_int_eq(sa.ss_family, c->family);
    int port = sa.ss_family == AF_INET6
                   ? ntohs(((struct sockaddr_in6 *)&sa)->sin6_port)
                   : ntohs(((struct sockaddr_in *)&sa)->sin_port);
    ck_assert_int_eq(port, c->port);
}
END_TEST

START_TEST(test_port_file)
{
    char dir[] = "/tmp/ss-metrics-test.XXXXXX";
    ck_assert_ptr_nonnull(mkdtemp(dir));
    char path[256];
    snprintf(path, sizeof path, "%s/port", dir);
    ck_assert_int_eq(ss_http_write_port_file(path, 12345), 0);
    FILE *f = fopen(path, "r");
    ck_assert_ptr_nonnull(f);
    int port = 0;
    ck_assert_int_eq(fscanf(f, "%d", &port), 1);
    fclose(f);
    ck_assert_int_eq(port, 12345);
    unlink(path);
    char bad[300];
    snprintf(bad, sizeof bad, "%s/missing/port", dir);
    ck_assert_int_eq(ss_http_write_port_file(bad, 1), SS_ERR_IO);
    rmdir(dir);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("metrics");
    TCase *t = tcase_create("registry");
    tcase_add_test(t, test_counter_and_gauge_text);
    tcase_add_test(t, test_two_labels_skip_zero_and_escaping);
    tcase_add_test(t, test_histogram_text);
    tcase_add_loop_test(t, test_bad_defs, 0, sizeof bad_defs / sizeof bad_defs[0]);
    tcase_add_test(t, test_series_limit);
    tcase_add_test(t, test_concurrent_updates);
    suite_add_tcase(s, t);
    TCase *h = tcase_create("http");
    tcase_set_timeout(h, 60);
    tcase_add_test(h, test_http_routes);
    tcase_add_test(h, test_http_port_taken);
    tcase_add_loop_test(h, test_parse_listen, 0, sizeof addr_cases / sizeof addr_cases[0]);
    tcase_add_test(h, test_port_file);
    suite_add_tcase(s, h);
    return s;
}

int main(void)
{
    SRunner *r = srunner_create(suite());
    srunner_run_all(r, CK_NORMAL);
    int failed = srunner_ntests_failed(r);
    srunner_free(r);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
