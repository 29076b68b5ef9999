/* cli_submit_inputs -- the input files of `statesaver submit`: every *.npy
 * of --inputs read and checked before anything is submitted (dtype and
 * shape, one kind per run: float32 [length, input_size] or token ids
 * int32/int64 [length] or [length, 1], ids >= 0 and < --vocab when given),
 * each error naming the file (exit 2).
 */
#include "cli_submit.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ss_limits.h"
#include "ss_npy.h"
#include "ss_tensor.h"
#include "statesaver_jobs.h"

/* Most input files one run accepts. */
#define SUBMIT_FILES_MAX 1000000u

static bool has_suffix(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n > m && strcmp(s + n - m, suffix) == 0;
}

static int cmp_seq(const void *a, const void *b)
{
    return strcmp(((const seq *)a)->key, ((const seq *)b)->key);
}

/* q's token ids as int64 [length] (int32 widened into an owned copy),
 * each >= 0 and < --vocab (when given). CLI exit status. */
static int load_ids(const run *r, seq *q)
{
    if (q->in->dtype == SS_NPY_I64) {
        q->ids = q->in->data; /* ss_npy data is 64-byte aligned */
    } else {
        q->ids = malloc((size_t)q->length * sizeof *q->ids);
        if (!q->ids) {
            cli_error("out of memory");
            return CLI_EXIT_FAIL;
        }
        q->ids_owned = true;
        const int32_t *v = q->in->data;
        for (uint64_t t = 0; t < q->length; t++)
            q->ids[t] = v[t];
    }
    for (uint64_t t = 0; t < q->length; t++) {
        int64_t id = q->ids[t];
        if (id < 0 || (r->vocab && (uint64_t)id >= r->vocab)) {
            if (r->vocab)
                cli_error("%s: token id %lld at step %llu is outside [0, %llu) (--vocab)",
                          q->path, (long long)id, (unsigned long long)t,
                          (unsigned long long)r->vocab);
            else
                cli_error("%s: token id %lld at step %llu is negative", q->path,
                          (long long)id, (unsigned long long)t);
            return CLI_EXIT_USAGE;
        }
    }
    return CLI_EXIT_OK;
}

/* Check input i's dtype and shape (and that it is of file 0's kind, and
 * width for float32), set its length, load its ids. CLI exit status. */
static int check_input(run *r, size_t i)
{
    seq *q = &r->seqs[i];
    const ss_npy *a = q->in;
    const char *dt = ss_npy_dtype_name(a->dtype);
    bool ids = a->dtype == SS_NPY_I32 || a->dtype == SS_NPY_I64;
    char shp[96];
    ss_shape_format(a->shape, (size_t)a->ndim, shp, sizeof shp);
    if (ids && a->ndim == 2 && a->shape[1] != 1) {
        cli_error("%s: 2-D token ids with %lld columns (%s %s); token ids are int32 or "
                  "int64 [length] or [length, 1], one sequence per file", q->path,
                  (long long)a->shape[1], dt, shp);
        return CLI_EXIT_USAGE;
    }
    if (ids && (a->ndim < 1 || a->ndim > 2 || a->shape[0] < 1)) {
        cli_error("%s: expected token ids int32 or int64 [length] or [length, 1] with "
                  "length >= 1, found %s %s", q->path, dt, shp);
        return CLI_EXIT_USAGE;
    }
    if (!ids && a->dtype != SS_NPY_F32) {
        cli_error("%s: expected float32 [length, input_size], or token ids int32/int64 "
                  "[length], found %s %s", q->path, dt, shp);
        return CLI_EXIT_USAGE;
    }
    if (!ids && (a->ndim != 2 || a->shape[0] < 1 || a->shape[1] < 1 ||
                 a->shape[1] > UINT32_MAX)) {
        cli_error("%s: expected float32 [length, input_size] with length >= 1, "
                  "found %s %s", q->path, dt, shp);
        return CLI_EXIT_USAGE;
    }
    if (i == 0) {
        r->ids = ids;
        r->input_size = ids ? 1 : (uint32_t)a->shape[1];
    }
    if (ids != r->ids) {
        cli_error("%s: %s %s, but %s holds %s; the files of one run are all float32 "
                  "inputs or all token ids", q->path, dt, shp, r->seqs[0].path,
                  r->ids ? "token ids" : "float32 inputs");
        return CLI_EXIT_USAGE;
    }
    if (!ids && a->shape[1] != (int64_t)r->input_size) {
        cli_error("%s: expected float32 [length, %u] like %s, found %s", q->path,
                  r->input_size, r->seqs[0].path, shp);
        return CLI_EXIT_USAGE;
    }
    q->length = (uint64_t)a->shape[0];
    return ids ? load_ids(r, q) : CLI_EXIT_OK;
}

int cli_submit_load_inputs(run *r, const char *dir)
{
    DIR *d = opendir(dir);
    size_t cap = 0;
    int status = CLI_EXIT_OK;
    if (!d) {
        cli_error("--inputs %s: %s", dir, strerror(errno));
        return CLI_EXIT_USAGE;
    }
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!has_suffix(e->d_name, ".npy") || e->d_name[0] == '.')
            continue;
        if (r->n == SUBMIT_FILES_MAX) {
            cli_error("--inputs %s: more than %u .npy files", dir, SUBMIT_FILES_MAX);
            status = CLI_EXIT_USAGE;
            goto out;
        }
        if (r->n == cap) {
            size_t nc = cap ? cap * 2 : 64;
            seq *ns = realloc(r->seqs, nc * sizeof *ns);
            if (!ns) {
                cli_error("out of memory");
                status = CLI_EXIT_FAIL;
                goto out;
            }
            r->seqs = ns;
            cap = nc;
        }
        seq *q = &r->seqs[r->n];
        memset(q, 0, sizeof *q);
        size_t klen = strlen(e->d_name) - 4;
        q->key = strndup(e->d_name, klen);
        if (q->key && asprintf(&q->path, "%s/%s", dir, e->d_name) < 0)
            q->path = NULL;
        r->n++;
        if (!q->key || !q->path) {
            cli_error("out of memory");
            status = CLI_EXIT_FAIL;
            goto out;
        }
        if (klen > SS_KEY_MAX_DEFAULT) {
            cli_error("%s: key '%s' is longer than %u bytes", q->path, q->key,
                      SS_KEY_MAX_DEFAULT);
            status = CLI_EXIT_USAGE;
            goto out;
        }
    }
    if (r->n == 0) {
        cli_error("--inputs %s: no .npy files", dir);
        status = CLI_EXIT_USAGE;
        goto out;
    }
    qsort(r->seqs, r->n, sizeof *r->seqs, cmp_seq);
    for (size_t i = 0; i < r->n; i++) {
        seq *q = &r->seqs[i];
        char err[1024];
        if (cli_npy_read(q->path, &q->in, err, sizeof err) < 0) {
            cli_error("%s", err);
            status = CLI_EXIT_USAGE;
            goto out;
        }
        if ((status = check_input(r, i)) != CLI_EXIT_OK)
            goto out;
        q->n_segments = ss_jobs_segments(q->length, r->T);
        q->first_ref = r->segs_total;
        r->total_steps += q->length;
        r->segs_total += q->n_segments;
    }
out:
    closedir(d);
    return status;
}
