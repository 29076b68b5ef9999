/* ss_metrics -- counters, gauges and histograms in Prometheus text format.
 *
 * Every value is a uint64_t slot updated with relaxed __atomic builtins:
 * counters and histogram bucket counts as integers, gauges and histogram
 * sums as the bits of a double (added with a compare-and-swap loop).
 * A histogram series uses n_buckets + 2 slots: the finite buckets, +Inf,
 * and the sum; buckets are stored per interval and made cumulative when
 * rendered.
 */
#include "ss_metrics.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ss_error.h"

struct ss_metric {
    ss_metric_type type;      /* counter, gauge or histogram */
    char *name;               /* family name (owned) */
    char *help;               /* help text (owned) */
    size_t n_labels;          /* labels in use */
    char *label_names[SS_METRIC_LABELS_MAX];   /* owned */
    char **label_values[SS_METRIC_LABELS_MAX]; /* owned arrays of owned strings */
    size_t n_values[SS_METRIC_LABELS_MAX];     /* values per label */
    size_t n_series;          /* product of n_values (1 without labels) */
    double *bounds;           /* histogram upper bounds (owned) */
    size_t n_buckets;         /* finite buckets */
    size_t stride;            /* slots per series */
    unsigned flags;           /* SS_METRIC_SKIP_ZERO */
    uint64_t *slots;          /* n_series * stride atomic slots (owned) */
};

struct ss_metrics {
    ss_metric *fam[SS_METRICS_FAMILIES_MAX]; /* registered families (owned) */
    size_t n;                                /* families in use */
};

const double ss_metrics_latency_buckets[] = {
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
    0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30,
};
const size_t ss_metrics_latency_buckets_n =
    sizeof ss_metrics_latency_buckets / sizeof ss_metrics_latency_buckets[0];
const double ss_metrics_size_buckets[] = {
    1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096,
};
const size_t ss_metrics_size_buckets_n =
    sizeof ss_metrics_size_buckets / sizeof ss_metrics_size_buckets[0];

uint64_t ss_metrics_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

double ss_metrics_since(uint64_t start_ns)
{
    uint64_t now = ss_metrics_now();
    return now > start_ns ? (double)(now - start_ns) / 1e9 : 0.0;
}

static uint64_t d2u(double d)
{
    uint64_t u;
    memcpy(&u, &d, sizeof u);
    return u;
}

static double u2d(uint64_t u)
{
    double d;
    memcpy(&d, &u, sizeof d);
    return d;
}

int ss_metrics_new(ss_metrics **out)
{
    *out = calloc(1, sizeof **out);
    return *out ? 0 : SS_ERR_NOMEM;
}

static void family_free(ss_metric *f)
{
    if (!f)
        return;
    for (size_t l = 0; l < SS_METRIC_LABELS_MAX; l++) {
        if (f->label_values[l])
            for (size_t i = 0; i < f->n_values[l]; i++)
                free(f->label_values[l][i]);
        free(f->label_values[l]);
        free(f->label_names[l]);
    }
    free(f->slots);
    free(f->bounds);
    free(f->help);
    free(f->name);
    free(f);
}

void ss_metrics_free(ss_metrics *m)
{
    if (!m)
        return;
    for (size_t i = 0; i < m->n; i++)
        family_free(m->fam[i]);
    free(m);
}

static bool valid_name(const char *s, bool colon)
{
    if (!s || !*s)
        return false;
    for (const char *p = s; *p; p++) {
        char c = *p;
        bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                     c == '_' || (colon && c == ':');
        if (!alpha && !(p > s && c >= '0' && c <= '9'))
            return false;
    }
    return true;
}

static int check_def(const ss_metrics *m, const ss_metric_def *d)
{
    if (d->type != SS_METRIC_COUNTER && d->type != SS_METRIC_GAUGE &&
        d->type != SS_METRIC_HISTOGRAM)
        return SS_ERR_INVALID;
    if (!valid_name(d->name, true) || !d->help || strchr(d->help, '\n'))
        return SS_ERR_INVALID;
    for (size_t i = 0; i < m->n; i++)
        if (strcmp(m->fam[i]->name, d->name) == 0)
            return SS_ERR_INVALID;
    if (d->n_labels > SS_METRIC_LABELS_MAX || (d->n_labels && !d->labels))
        return SS_ERR_INVALID;
    size_t series = 1;
    for (size_t l = 0; l < d->n_labels; l++) {
        const ss_metric_label *lb = &d->labels[l];
        /* "le" is the histogram bucket label; "__" names are reserved. */
        if (!valid_name(lb->name, false) || strncmp(lb->name, "__", 2) == 0 ||
            strcmp(lb->name, "le") == 0 || lb->n_values == 0 || !lb->values)
            return SS_ERR_INVALID;
        for (size_t k = 0; k < l; k++)
            if (strcmp(d->labels[k].name, lb->name) == 0)
                return SS_ERR_INVALID;
        for (size_t i = 0; i < lb->n_values; i++)
            if (!lb->values[i])
                return SS_ERR_INVALID;
        if (lb->n_values > SS_METRIC_SERIES_MAX / series)
            return SS_ERR_FULL;
        series *= lb->n_values;
    }
    if (d->type == SS_METRIC_HISTOGRAM) {
        if (d->n_buckets == 0 || d->n_buckets > SS_METRIC_BUCKETS_MAX ||
            !d->buckets)
            return SS_ERR_INVALID;
        for (size_t b = 0; b < d->n_buckets; b++) {
            if (!isfinite(d->buckets[b]))
                return SS_ERR_INVALID;
            if (b > 0 && !(d->buckets[b] > d->buckets[b - 1]))
                return SS_ERR_INVALID;
        }
    }
    return 0;
}

int ss_metrics_add(ss_metrics *m, const ss_metric_def *d, ss_metric **out)
{
    *out = NULL;
    int rc = check_def(m, d);
    if (rc < 0)
        return rc;
    if (m->n >= SS_METRICS_FAMILIES_MAX)
        return SS_ERR_FULL;
    rc = SS_ERR_NOMEM;
    ss_metric *f = calloc(1, sizeof *f);
    if (!f)
        goto out;
    f->type = d->type;
    f->flags = d->flags;
    f->n_labels = d->n_labels;
    if (!(f->name = strdup(d->name)) || !(f->help = strdup(d->help)))
        goto out;
    f->n_series = 1;
    for (size_t l = 0; l < d->n_labels; l++) {
        const ss_metric_label *lb = &d->labels[l];
        if (!(f->label_names[l] = strdup(lb->name)))
            goto out;
        if (!(f->label_values[l] = calloc(lb->n_values, sizeof(char *))))
            goto out;
        f->n_values[l] = lb->n_values;
        for (size_t i = 0; i < lb->n_values; i++)
            if (!(f->label_values[l][i] = strdup(lb->values[i])))
                goto out;
        f->n_series *= lb->n_values;
    }
    f->stride = 1;
    if (d->type == SS_METRIC_HISTOGRAM) {
        f->n_buckets = d->n_buckets;
        if (!(f->bounds = malloc(d->n_buckets * sizeof *f->bounds)))
            goto out;
        memcpy(f->bounds, d->buckets, d->n_buckets * sizeof *f->bounds);
        f->stride = d->n_buckets + 2;
    }
    /* Zeroed slots are 0 for integers and +0.0 for doubles alike. */
    if (!(f->slots = calloc(f->n_series * f->stride, sizeof *f->slots)))
        goto out;
    m->fam[m->n++] = f;
    *out = f;
    f = NULL;
    rc = 0;
out:
    family_free(f);
    return rc;
}

size_t ss_metric_series_count(const ss_metric *f)
{
    return f ? f->n_series : 0;
}

size_t ss_metric_series(const ss_metric *f, size_t i0, size_t i1)
{
    if (!f)
        return SIZE_MAX;
    if (f->n_labels == 0)
        return 0;
    if (i0 >= f->n_values[0])
        return SIZE_MAX;
    if (f->n_labels == 1)
        return i0;
    if (i1 >= f->n_values[1])
        return SIZE_MAX;
    return i0 * f->n_values[1] + i1;
}

static uint64_t *slot(ss_metric *f, size_t series)
{
    if (!f || series >= f->n_series)
        return NULL;
    return f->slots + series * f->stride;
}

static void add_double(uint64_t *p, double delta)
{
    uint64_t old = __atomic_load_n(p, __ATOMIC_RELAXED);
    for (;;) {
        uint64_t nv = d2u(u2d(old) + delta);
        if (__atomic_compare_exchange_n(p, &old, nv, true, __ATOMIC_RELAXED,
                                        __ATOMIC_RELAXED))
            return;
    }
}

void ss_metric_inc(ss_metric *f, size_t series, uint64_t n)
{
    uint64_t *p = slot(f, series);
    if (!p || f->type != SS_METRIC_COUNTER)
        return;
    __atomic_fetch_add(p, n, __ATOMIC_RELAXED);
}

void ss_metric_set_u64(ss_metric *f, size_t series, uint64_t v)
{
    uint64_t *p = slot(f, series);
    if (!p)
        return;
    if (f->type == SS_METRIC_COUNTER)
        __atomic_store_n(p, v, __ATOMIC_RELAXED);
    else if (f->type == SS_METRIC_GAUGE)
        __atomic_store_n(p, d2u((double)v), __ATOMIC_RELAXED);
}

void ss_metric_set(ss_metric *f, size_t series, double v)
{
    uint64_t *p = slot(f, series);
    if (!p || f->type != SS_METRIC_GAUGE)
        return;
    __atomic_store_n(p, d2u(v), __ATOMIC_RELAXED);
}

void ss_metric_add(ss_metric *f, size_t series, double delta)
{
    uint64_t *p = slot(f, series);
    if (!p || f->type != SS_METRIC_GAUGE)
        return;
    add_double(p, delta);
}

void ss_metric_observe(ss_metric *f, size_t series, double v)
{
    uint64_t *p = slot(f, series);
    if (!p || f->type != SS_METRIC_HISTOGRAM || isnan(v))
        return;
    size_t b = 0;
    while (b < f->n_buckets && v > f->bounds[b])
        b++;
    __atomic_fetch_add(&p[b], 1, __ATOMIC_RELAXED);
    add_double(&p[f->n_buckets + 1], v);
}

double ss_metric_value(const ss_metric *f, size_t series)
{
    uint64_t *p = slot((ss_metric *)f, series);
    if (!p)
        return 0;
    switch (f->type) {
    case SS_METRIC_COUNTER:
        return (double)__atomic_load_n(p, __ATOMIC_RELAXED);
    case SS_METRIC_GAUGE:
        return u2d(__atomic_load_n(p, __ATOMIC_RELAXED));
    default: {
        uint64_t n = 0;
        for (size_t b = 0; b <= f->n_buckets; b++)
            n += __atomic_load_n(&p[b], __ATOMIC_RELAXED);
        return (double)n;
    }
    }
}

double ss_metric_sum(const ss_metric *f, size_t series)
{
    uint64_t *p = slot((ss_metric *)f, series);
    if (!p || f->type != SS_METRIC_HISTOGRAM)
        return 0;
    return u2d(__atomic_load_n(&p[f->n_buckets + 1], __ATOMIC_RELAXED));
}

/* ---- rendering ---- */

typedef struct buf {
    char *p;     /* text (owned) */
    size_t len;  /* bytes used */
    size_t cap;  /* bytes allocated */
    bool oom;    /* an allocation failed: output is incomplete */
} buf;

static void put(buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void put(buf *b, const char *fmt, ...)
{
    if (b->oom)
        return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->oom = true;
            return;
        }
        if ((size_t)n < b->cap - b->len) {
            b->len += (size_t)n;
            return;
        }
        size_t cap = b->cap * 2 + (size_t)n;
        char *np = realloc(b->p, cap);
        if (!np) {
            b->oom = true;
            return;
        }
        b->p = np;
        b->cap = cap;
    }
}

/* Escape for a label value (\\, \", \n) or, with quote=false, for HELP
 * text (\\, \n). */
static void put_escaped(buf *b, const char *s, bool quote)
{
    for (; *s; s++) {
        if (*s == '\\')
            put(b, "\\\\");
        else if (*s == '\n')
            put(b, "\\n");
        else if (quote && *s == '"')
            put(b, "\\\"");
        else
            put(b, "%c", *s);
    }
}

/* A float in a form Prometheus parses (Go ParseFloat): NaN, +Inf, -Inf or
 * the shortest number that reads back exactly. */
static void put_double(buf *b, double v)
{
    if (isnan(v))
        put(b, "NaN");
    else if (isinf(v))
        put(b, v > 0 ? "+Inf" : "-Inf");
    else if (v == (double)(int64_t)v && fabs(v) < 9e15)
        put(b, "%lld", (long long)v);
    else {
        /* The shortest of %.15g..%.17g that reads back exactly. */
        char t[40];
        for (int prec = 15; prec <= 17; prec++) {
            snprintf(t, sizeof t, "%.*g", prec, v);
            if (strtod(t, NULL) == v)
                break;
        }
        put(b, "%s", t);
    }
}

/* The labels of series s, plus le when le_text is set, as {a="x",le="y"};
 * nothing when there are none. */
static void put_labels(buf *b, const ss_metric *f, size_t s, const char *le_text)
{
    if (f->n_labels == 0 && !le_text)
        return;
    size_t idx[SS_METRIC_LABELS_MAX] = {0};
    size_t rest = s;
    for (size_t l = f->n_labels; l-- > 0;) {
        idx[l] = rest % f->n_values[l];
        rest /= f->n_values[l];
    }
    put(b, "{");
    for (size_t l = 0; l < f->n_labels; l++) {
        put(b, "%s%s=\"", l ? "," : "", f->label_names[l]);
        put_escaped(b, f->label_values[l][idx[l]], true);
        put(b, "\"");
    }
    if (le_text)
        put(b, "%sle=\"%s\"", f->n_labels ? "," : "", le_text);
    put(b, "}");
}

/* A bucket bound in its shortest exact form: %.17g prints 0.001 as
 * 0.0010000000000000000208, %g is enough whenever it round-trips. */
static void format_le(char *out, size_t size, double v)
{
    snprintf(out, size, "%g", v);
    if (strtod(out, NULL) != v)
        snprintf(out, size, "%.17g", v);
}

static void render_family(buf *b, const ss_metric *f)
{
    static const char *const types[] = {"counter", "gauge", "histogram"};
    put(b, "# HELP %s ", f->name);
    put_escaped(b, f->help, false);
    put(b, "\n# TYPE %s %s\n", f->name, types[f->type]);
    for (size_t s = 0; s < f->n_series; s++) {
        const uint64_t *p = f->slots + s * f->stride;
        if (f->type == SS_METRIC_COUNTER) {
            uint64_t v = __atomic_load_n(p, __ATOMIC_RELAXED);
            if (v == 0 && (f->flags & SS_METRIC_SKIP_ZERO))
                continue;
            put(b, "%s", f->name);
            put_labels(b, f, s, NULL);
            put(b, " %llu\n", (unsigned long long)v);
        } else if (f->type == SS_METRIC_GAUGE) {
            put(b, "%s", f->name);
            put_labels(b, f, s, NULL);
            put(b, " ");
            put_double(b, u2d(__atomic_load_n(p, __ATOMIC_RELAXED)));
            put(b, "\n");
        } else {
            uint64_t cum = 0;
            char le[64];
            for (size_t k = 0; k <= f->n_buckets; k++) {
                cum += __atomic_load_n(&p[k], __ATOMIC_RELAXED);
                if (k < f->n_buckets)
                    format_le(le, sizeof le, f->bounds[k]);
                else
                    snprintf(le, sizeof le, "+Inf");
                put(b, "%s_bucket", f->name);
                put_labels(b, f, s, le);
                put(b, " %llu\n", (unsigned long long)cum);
            }
            put(b, "%s_sum", f->name);
            put_labels(b, f, s, NULL);
            put(b, " ");
            put_double(b, u2d(__atomic_load_n(&p[f->n_buckets + 1],
                                              __ATOMIC_RELAXED)));
            put(b, "\n%s_count", f->name);
            put_labels(b, f, s, NULL);
            put(b, " %llu\n", (unsigned long long)cum);
        }
    }
}

int ss_metrics_render(ss_metrics *m, char **out, size_t *len)
{
    buf b = {.cap = 4096};
    *out = NULL;
    *len = 0;
    if (!(b.p = malloc(b.cap)))
        return SS_ERR_NOMEM;
    b.p[0] = '\0';
    for (size_t i = 0; i < m->n; i++)
        render_family(&b, m->fam[i]);
    if (b.oom) {
        free(b.p);
        return SS_ERR_NOMEM;
    }
    *out = b.p;
    *len = b.len;
    return 0;
}
