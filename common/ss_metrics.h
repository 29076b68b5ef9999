/* ss_metrics -- counters, gauges and histograms in Prometheus text format.
 *
 * A registry holds metric families. Each family has a fixed set of series
 * decided at registration: up to SS_METRIC_LABELS_MAX labels, each with a
 * fixed list of values, and one series per combination (the cartesian
 * product, row-major: series = i0 * n1 + i1). Nothing is allocated after
 * registration, so updates are lock-free relaxed atomics from any thread,
 * and ss_metrics_render() may run on another thread at the same time.
 *
 * Threads: register every family before any other thread updates or
 * renders (registration is not synchronised); after that, updates and
 * rendering are safe from any thread. Values read by one render are each
 * read atomically but not as one snapshot (as with every Prometheus
 * client); a histogram's +Inf bucket and _count are always equal because
 * _count is rendered as the sum of its buckets.
 *
 * Output: Prometheus text exposition format 0.0.4 (# HELP, # TYPE, then
 * one line per sample; histograms as _bucket{le=...} (cumulative), _sum,
 * _count).
 */
#ifndef SS_METRICS_H
#define SS_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct ss_metrics ss_metrics; /* opaque: the registry */
typedef struct ss_metric ss_metric;   /* opaque: one family */

/* Limits (fixed: a registry is built by code, not by input). */
#define SS_METRIC_LABELS_MAX 2     /* labels per family */
#define SS_METRIC_SERIES_MAX 4096  /* series per family (product of values) */
#define SS_METRIC_BUCKETS_MAX 32   /* finite buckets of a histogram */
#define SS_METRICS_FAMILIES_MAX 128 /* families per registry */

typedef enum ss_metric_type {
    SS_METRIC_COUNTER = 0,   /* monotonic uint64 */
    SS_METRIC_GAUGE = 1,     /* double, set or added */
    SS_METRIC_HISTOGRAM = 2, /* fixed buckets, sum and count */
} ss_metric_type;

/* One label of a family and the values its series take. */
typedef struct ss_metric_label {
    const char *name;           /* label name ([a-zA-Z_][a-zA-Z0-9_]*) */
    const char *const *values;  /* n_values values (any UTF-8; escaped) */
    size_t n_values;            /* >= 1 */
} ss_metric_label;

/* Family flag: series whose value is still zero are left out of the
 * output (for sparse label products such as op x code). Histograms and
 * gauges ignore it. */
#define SS_METRIC_SKIP_ZERO 1u

typedef struct ss_metric_def {
    ss_metric_type type;           /* counter, gauge or histogram */
    const char *name;              /* [a-zA-Z_:][a-zA-Z0-9_:]*; copied */
    const char *help;              /* one line of text; copied */
    const ss_metric_label *labels; /* n_labels labels; strings copied */
    size_t n_labels;               /* 0..SS_METRIC_LABELS_MAX */
    const double *buckets;         /* histogram upper bounds, strictly
                                      increasing, finite; +Inf is implicit */
    size_t n_buckets;              /* 1..SS_METRIC_BUCKETS_MAX (histograms) */
    unsigned flags;                /* SS_METRIC_SKIP_ZERO */
} ss_metric_def;

/* New empty registry. Returns 0 or SS_ERR_NOMEM. */
int ss_metrics_new(ss_metrics **out);
/* Free the registry and its families. Accepts NULL. No other thread may
 * use it any more. */
void ss_metrics_free(ss_metrics *m);

/* Register a family. *out stays valid until ss_metrics_free(m). Errors:
 * SS_ERR_INVALID (bad name, label, buckets or duplicate name), SS_ERR_FULL
 * (too many families or series), SS_ERR_NOMEM. */
int ss_metrics_add(ss_metrics *m, const ss_metric_def *def, ss_metric **out);

/* Number of series of a family. */
size_t ss_metric_series_count(const ss_metric *f);
/* Series index of label value indexes (i0 of the first label, i1 of the
 * second); for a family with fewer labels the extra indexes are ignored.
 * Out-of-range indexes give SIZE_MAX, which the update functions ignore. */
size_t ss_metric_series(const ss_metric *f, size_t i0, size_t i1);

/* Updates (any thread, lock-free). A NULL family or an out-of-range series
 * is ignored, so callers need not check whether metrics are enabled. */
void ss_metric_inc(ss_metric *f, size_t series, uint64_t n);      /* counter */
void ss_metric_set_u64(ss_metric *f, size_t series, uint64_t v);  /* counter
    mirrored from a monotonic source, or gauge */
void ss_metric_set(ss_metric *f, size_t series, double v);        /* gauge */
void ss_metric_add(ss_metric *f, size_t series, double delta);    /* gauge */
void ss_metric_observe(ss_metric *f, size_t series, double v);    /* histogram */

/* Read back (tests, health logic). Counter/gauge value; histogram: count. */
double ss_metric_value(const ss_metric *f, size_t series);
/* Histogram sum. */
double ss_metric_sum(const ss_metric *f, size_t series);

/* Render every family into a new NUL-terminated buffer (*out, *len without
 * the NUL); the caller frees it with free(). Returns 0 or SS_ERR_NOMEM. */
int ss_metrics_render(ss_metrics *m, char **out, size_t *len);

/* Seconds elapsed since a CLOCK_MONOTONIC time taken with ss_metrics_now(). */
uint64_t ss_metrics_now(void); /* monotonic nanoseconds */
double ss_metrics_since(uint64_t start_ns);

/* Bucket sets used by statesaver (seconds and counts). */
extern const double ss_metrics_latency_buckets[]; /* 50 us .. 30 s */
extern const size_t ss_metrics_latency_buckets_n;
extern const double ss_metrics_size_buckets[];    /* 1 .. 4096, powers of 2 */
extern const size_t ss_metrics_size_buckets_n;

#endif
