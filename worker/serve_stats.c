/* serve_stats -- `serve --stats-json FILE`: per non-empty lease, the time
 * of the Lease call, of the unroll, the time the loop was blocked on the
 * Complete, and from its send to its reply; their percentiles are written
 * atomically at exit.
 */
#include <cjson/cJSON.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "atomic_file.h"
#include "serve_int.h"
#include "ss_error.h"
#include "ss_log.h"

/* Keep one lease's timings for --stats-json; done = reply in hand (us). */
void ss_serve_times_add(lease_times *t, const lease_clock *k, int64_t done, size_t items)
{
    if (t->n == t->cap) {
        size_t nc = t->cap ? t->cap * 2 : 1024;
        if (nc > SERVE_STATS_SAMPLES_MAX)
            nc = SERVE_STATS_SAMPLES_MAX;
        if (nc <= t->n) {
            t->dropped++;
            return;
        }
        /* Each array keeps its own result, so a failure leaves them valid. */
        double **a[5] = {&t->lease, &t->compute, &t->complete, &t->reply, &t->total};
        for (int i = 0; i < 5; i++) {
            double *na = realloc(*a[i], nc * sizeof *na);
            if (!na) {
                t->dropped++;
                return;
            }
            *a[i] = na;
        }
        uint64_t *ni = realloc(t->items, nc * sizeof *ni);
        if (!ni) {
            t->dropped++;
            return;
        }
        t->items = ni;
        t->cap = nc;
    }
    t->lease[t->n] = (double)(k->leased - k->lease) / 1000.0;
    t->compute[t->n] = (double)(k->computed - k->leased) / 1000.0;
    t->complete[t->n] = (double)(k->sent - k->computed + k->blocked) / 1000.0;
    t->reply[t->n] = (double)(done - k->computed) / 1000.0;
    t->total[t->n] = (double)(done - k->lease) / 1000.0;
    t->items[t->n] = items;
    t->n++;
}

void ss_serve_times_free(lease_times *t)
{
    free(t->lease);
    free(t->compute);
    free(t->complete);
    free(t->reply);
    free(t->total);
    free(t->items);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* {"p50", "p99", "mean", "max"} of v[0..n) (sorted in place), in ms. */
static cJSON *percentiles(double *v, size_t n)
{
    cJSON *o = cJSON_CreateObject();
    if (!o || n == 0)
        return o;
    double sum = 0;
    for (size_t i = 0; i < n; i++)
        sum += v[i];
    qsort(v, n, sizeof *v, cmp_double);
    /* Nearest rank: the smallest value with at least p% of samples <= it. */
    size_t i50 = (n * 50 + 99) / 100, i99 = (n * 99 + 99) / 100;
    cJSON_AddNumberToObject(o, "p50", v[i50 ? i50 - 1 : 0]);
    cJSON_AddNumberToObject(o, "p99", v[i99 ? i99 - 1 : 0]);
    cJSON_AddNumberToObject(o, "mean", sum / (double)n);
    cJSON_AddNumberToObject(o, "max", v[n - 1]);
    return o;
}

int ss_serve_write_json(const char *path, const struct cJSON *o)
{
    char err[SERVE_ERRSZ];
    ss_afile *af = NULL;
    int rc = SS_ERR_NOMEM;
    char *text = cJSON_Print(o);
    if (!text)
        goto out;
    if ((rc = ss_afile_open(path, &af, err, sizeof err)) < 0) {
        SS_LOG(SS_LOG_ERROR, "serve: --stats-json: %s", err);
        goto out;
    }
    fputs(text, ss_afile_stream(af));
    fputc('\n', ss_afile_stream(af));
    rc = ss_afile_commit(af, err, sizeof err);
    af = NULL;
    if (rc < 0)
        SS_LOG(SS_LOG_ERROR, "serve: --stats-json: %s", err);
out:
    if (rc == SS_ERR_NOMEM)
        SS_LOG(SS_LOG_ERROR, "serve: --stats-json: out of memory");
    ss_afile_abort(af);
    free(text);
    return rc;
}

/* Write --stats-json; 0 or a negative code (message logged). */
int ss_serve_write_stats(worker *w, double seconds)
{
    lease_times *t = &w->lt;
    uint64_t items = 0;
    cJSON *o = cJSON_CreateObject();

    for (size_t i = 0; i < t->n; i++)
        items += t->items[i];
    if (!o) {
        SS_LOG(SS_LOG_ERROR, "serve: --stats-json: out of memory");
        return SS_ERR_NOMEM;
    }
    cJSON_AddNumberToObject(o, "batches", (double)w->batches);
    cJSON_AddNumberToObject(o, "segments", (double)w->segments);
    cJSON_AddNumberToObject(o, "failed_items", (double)w->failed_items);
    cJSON_AddNumberToObject(o, "seconds", seconds);
    cJSON_AddNumberToObject(o, "batch", w->o.batch);
    cJSON_AddNumberToObject(o, "samples", (double)t->n);
    cJSON_AddNumberToObject(o, "samples_dropped", (double)t->dropped);
    cJSON_AddNumberToObject(o, "items_per_lease", t->n ? (double)items / (double)t->n : 0);
    cJSON_AddItemToObject(o, "lease_ms", percentiles(t->lease, t->n));
    cJSON_AddItemToObject(o, "compute_ms", percentiles(t->compute, t->n));
    cJSON_AddItemToObject(o, "complete_ms", percentiles(t->complete, t->n));
    cJSON_AddItemToObject(o, "complete_reply_ms", percentiles(t->reply, t->n));
    cJSON_AddItemToObject(o, "round_trip_ms", percentiles(t->total, t->n));
    int rc = ss_serve_write_json(w->o.stats_json, o);
    cJSON_Delete(o);
    return rc;
}
