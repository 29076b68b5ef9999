/* safetensors -- mapped, validated safetensors reader and a float32 writer. */
#include "safetensors.h"

#include <cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "atomic_file.h"
#include "fileio.h"
#include "ss_error.h"

/* Largest integer a JSON number (a double) holds exactly. */
#define ST_MAX_JSON_INT 9007199254740992.0
/* Alignment of each tensor in the private copy. */
#define ST_COPY_ALIGN 64u

struct ss_st_file {
    void *map;              /* read-only mapping of the whole file, or NULL */
    size_t map_len;         /* its length */
    void *copy;             /* aligned private copy of the tensors, or NULL */
    size_t copy_len;        /* its length */
    ss_st_tensor *tensors;  /* n_tensors entries, file order */
    size_t n_tensors;       /* count */
    char **meta_keys;       /* n_meta metadata keys */
    char **meta_values;     /* n_meta metadata values */
    size_t n_meta;          /* count */
};

static const struct {
    const char *name; /* dtype string of the format */
    size_t size;      /* bytes per element */
} st_dtypes[] = {
    {"BOOL", 1}, {"U8", 1},   {"I8", 1},   {"F8_E5M2", 1}, {"F8_E4M3", 1},
    {"I16", 2},  {"U16", 2},  {"F16", 2},  {"BF16", 2},    {"I32", 4},
    {"U32", 4},  {"F32", 4},  {"I64", 8},  {"U64", 8},     {"F64", 8},
};

static const char *st_dtype_canon(const char *s, size_t *size)
{
    for (size_t i = 0; i < sizeof st_dtypes / sizeof st_dtypes[0]; i++)
        if (strcmp(s, st_dtypes[i].name) == 0) {
            *size = st_dtypes[i].size;
            return st_dtypes[i].name;
        }
    return NULL;
}

/* A non-negative integer held exactly by a JSON number. */
static bool st_json_uint(const cJSON *j, uint64_t *v)
{
    if (!cJSON_IsNumber(j))
        return false;
    double d = j->valuedouble;
    if (!(d >= 0.0) || d > ST_MAX_JSON_INT || floor(d) != d)
        return false;
    *v = (uint64_t)d;
    return true;
}

static int st_parse_meta(ss_st_file *f, const char *path, const cJSON *meta,
                         char *err, size_t errsz)
{
    if (!cJSON_IsObject(meta)) {
        ss_fileio_err(err, errsz, "%s: __metadata__ is not a JSON object", path);
        return SS_ERR_FORMAT;
    }
    size_t n = (size_t)cJSON_GetArraySize(meta);
    f->meta_keys = calloc(n ? n : 1, sizeof *f->meta_keys);
    f->meta_values = calloc(n ? n : 1, sizeof *f->meta_values);
    if (f->meta_keys == NULL || f->meta_values == NULL)
        return SS_ERR_NOMEM;
    const cJSON *kv;
    cJSON_ArrayForEach(kv, meta)
    {
        if (!cJSON_IsString(kv)) {
            ss_fileio_err(err, errsz,
                          "%s: __metadata__ key '%s' must have a string value", path,
                          kv->string);
            return SS_ERR_FORMAT;
        }
        for (size_t i = 0; i < f->n_meta; i++)
            if (strcmp(f->meta_keys[i], kv->string) == 0) {
                ss_fileio_err(err, errsz, "%s: __metadata__ key '%s' appears twice",
                              path, kv->string);
                return SS_ERR_FORMAT;
            }
        f->meta_keys[f->n_meta] = strdup(kv->string);
        f->meta_values[f->n_meta] = strdup(kv->valuestring);
        f->n_meta++;
        if (f->meta_keys[f->n_meta - 1] == NULL ||
            f->meta_values[f->n_meta - 1] == NULL)
            return SS_ERR_NOMEM;
    }
    return 0;
}

static int st_parse_tensor(ss_st_tensor *t, const char *path, const cJSON *j,
                           const uint8_t *data, size_t data_len,
                           uint64_t *begin_out, char *err, size_t errsz)
{
    const char *name = j->string;
    if (!cJSON_IsObject(j)) {
        ss_fileio_err(err, errsz, "%s: tensor '%s': entry is not a JSON object", path, name);
        return SS_ERR_FORMAT;
    }
    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(j, "dtype");
    const cJSON *sh = cJSON_GetObjectItemCaseSensitive(j, "shape");
    const cJSON *off = cJSON_GetObjectItemCaseSensitive(j, "data_offsets");
    if (!cJSON_IsString(dt)) {
        ss_fileio_err(err, errsz, "%s: tensor '%s': missing string \"dtype\"", path, name);
        return SS_ERR_FORMAT;
    }
    t->dtype = st_dtype_canon(dt->valuestring, &t->elem_size);
    if (t->dtype == NULL) {
        ss_fileio_err(err, errsz, "%s: tensor '%s': unknown dtype \"%.32s\"", path, name,
                      dt->valuestring);
        return SS_ERR_FORMAT;
    }
    if (!cJSON_IsArray(sh)) {
        ss_fileio_err(err, errsz, "%s: tensor '%s': missing array \"shape\"", path, name);
        return SS_ERR_FORMAT;
    }
    int nd = cJSON_GetArraySize(sh);
    if (nd > SS_ST_MAX_DIMS) {
        ss_fileio_err(err, errsz, "%s: tensor '%s': rank %d, at most %d supported", path,
                      name, nd, SS_ST_MAX_DIMS);
        return SS_ERR_FORMAT;
    }
    t->ndim = nd;
    uint64_t count = 1;
    for (int i = 0; i < nd; i++) {
        uint64_t d;
        if (!st_json_uint(cJSON_GetArrayItem(sh, i), &d)) {
            ss_fileio_err(err, errsz,
                          "%s: tensor '%s': shape[%d] is not a non-negative integer",
                          path, name, i);
            return SS_ERR_FORMAT;
        }
        t->shape[i] = (int64_t)d;
        if (__builtin_mul_overflow(count, d, &count)) {
            ss_fileio_err(err, errsz, "%s: tensor '%s': shape overflows", path, name);
            return SS_ERR_FORMAT;
        }
    }
    uint64_t want;
    if (__builtin_mul_overflow(count, (uint64_t)t->elem_size, &want)) {
        ss_fileio_err(err, errsz, "%s: tensor '%s': shape overflows", path, name);
        return SS_ERR_FORMAT;
    }
    uint64_t b, e;
    if (!cJSON_IsArray(off) || cJSON_GetArraySize(off) != 2 ||
        !st_json_uint(cJSON_GetArrayItem(off, 0), &b) ||
        !st_json_uint(cJSON_GetArrayItem(off, 1), &e)) {
        ss_fileio_err(err, errsz,
                      "%s: tensor '%s': \"data_offsets\" must be [begin, end] of "
                      "non-negative integers",
                      path, name);
        return SS_ERR_FORMAT;
    }
    if (b > e || e > data_len) {
        ss_fileio_err(err, errsz,
                      "%s: tensor '%s': data_offsets [%llu, %llu] outside the data "
                      "section of %zu bytes",
                      path, name, (unsigned long long)b, (unsigned long long)e, data_len);
        return SS_ERR_FORMAT;
    }
    if (e - b != want) {
        ss_fileio_err(err, errsz,
                      "%s: tensor '%s': data_offsets span %llu bytes, shape needs %llu",
                      path, name, (unsigned long long)(e - b), (unsigned long long)want);
        return SS_ERR_FORMAT;
    }
    t->name = name; /* replaced by a copy by the caller */
    t->data = data + b;
    t->nbytes = (size_t)(e - b);
    *begin_out = b;
    return 0;
}

/* Order of tensor indices by data begin, for the overlap check. */
struct st_span {
    uint64_t begin; /* data_offsets begin */
    uint64_t end;   /* data_offsets end */
    size_t idx;     /* tensor index */
};

static int st_span_cmp(const void *a, const void *b)
{
    const struct st_span *x = a, *y = b;
    if (x->begin != y->begin)
        return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end)
        return x->end < y->end ? -1 : 1;
    return 0;
}

/* Copy every tensor to its own 64-byte aligned slot and drop the mapping. */
static int st_make_copy(ss_st_file *f)
{
    size_t total = 0;
    for (size_t i = 0; i < f->n_tensors; i++) {
        size_t n = f->tensors[i].nbytes;
        size_t padded = (n + ST_COPY_ALIGN - 1) / ST_COPY_ALIGN * ST_COPY_ALIGN;
        total += padded; /* bounded by the mapped file size plus padding */
    }
    void *copy = NULL;
    if (posix_memalign(&copy, ST_COPY_ALIGN, total ? total : ST_COPY_ALIGN) != 0)
        return SS_ERR_NOMEM;
    size_t off = 0;
    for (size_t i = 0; i < f->n_tensors; i++) {
        ss_st_tensor *t = &f->tensors[i];
        uint8_t *dst = (uint8_t *)copy + off;
        if (t->nbytes)
            memcpy(dst, t->data, t->nbytes);
        t->data = dst;
        off += (t->nbytes + ST_COPY_ALIGN - 1) / ST_COPY_ALIGN * ST_COPY_ALIGN;
    }
    munmap(f->map, f->map_len);
    f->map = NULL;
    f->map_len = 0;
    f->copy = copy;
    f->copy_len = total;
    return 0;
}

int ss_st_open(const char *path, ss_st_file **out, char *err, size_t errsz)
{
    int rc = SS_ERR_NOMEM;
    int fd = -1;
    cJSON *root = NULL;
    struct st_span *spans = NULL;
    ss_st_file *f = calloc(1, sizeof *f);
    if (f == NULL)
        goto out;

    uint64_t fsize;
    /* rc stays SS_ERR_NOMEM for the allocations below. */
    if (ss_fileio_open_regular(path, &fd, &fsize, err, errsz) < 0) {
        rc = SS_ERR_IO;
        goto out;
    }
    size_t size = (size_t)fsize;
    if (size < 8) {
        ss_fileio_err(err, errsz,
                      "%s: file is %zu bytes, too short for the 8-byte header length",
                      path, size);
        rc = SS_ERR_FORMAT;
        goto out;
    }
    uint8_t lenbuf[8];
    if (pread(fd, lenbuf, 8, 0) != 8) {
        ss_fileio_err(err, errsz, "%s: cannot read the header length", path);
        rc = SS_ERR_IO;
        goto out;
    }
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--)
        hlen = (hlen << 8) | lenbuf[i];
    if (hlen > SS_ST_MAX_HEADER) {
        ss_fileio_err(err, errsz, "%s: header length %llu exceeds the limit of %u bytes",
                      path, (unsigned long long)hlen, SS_ST_MAX_HEADER);
        rc = SS_ERR_TOO_BIG;
        goto out;
    }
    if (hlen > size - 8) {
        ss_fileio_err(err, errsz,
                      "%s: header length %llu exceeds the %zu bytes after the length field",
                      path, (unsigned long long)hlen, size - 8);
        rc = SS_ERR_FORMAT;
        goto out;
    }
    f->map = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (f->map == MAP_FAILED) {
        f->map = NULL;
        ss_fileio_err(err, errsz, "%s: cannot map: %s", path, strerror(errno));
        rc = SS_ERR_IO;
        goto out;
    }
    f->map_len = size;
    const char *hdr = (const char *)f->map + 8;
    const uint8_t *data = (const uint8_t *)f->map + 8 + hlen;
    size_t data_len = size - 8 - (size_t)hlen;

    const char *end = NULL;
    root = cJSON_ParseWithLengthOpts(hdr, (size_t)hlen, &end, 0);
    /* The format pads the header with spaces; anything else after the
     * object is garbage that cJSON alone would silently ignore. */
    if (root != NULL) {
        for (const char *p = end; p < hdr + hlen; p++)
            if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r') {
                ss_fileio_err(err, errsz, "%s: unexpected bytes after the JSON header object (at byte %ld)",
                              path, (long)(p - hdr));
                rc = SS_ERR_FORMAT;
                goto out;
            }
    }
    if (root == NULL) {
        const char *at = cJSON_GetErrorPtr();
        long pos = at != NULL && at >= hdr && at <= hdr + hlen ? (long)(at - hdr) : -1;
        ss_fileio_err(err, errsz, "%s: header is not valid JSON (error near byte %ld of the header)",
                      path, pos);
        rc = SS_ERR_FORMAT;
        goto out;
    }
    if (!cJSON_IsObject(root)) {
        ss_fileio_err(err, errsz, "%s: header is not a JSON object", path);
        rc = SS_ERR_FORMAT;
        goto out;
    }
    size_t n = (size_t)cJSON_GetArraySize(root);
    f->tensors = calloc(n ? n : 1, sizeof *f->tensors);
    spans = calloc(n ? n : 1, sizeof *spans);
    if (f->tensors == NULL || spans == NULL)
        goto out;
    const cJSON *j;
    bool have_meta = false;
    cJSON_ArrayForEach(j, root)
    {
        if (strcmp(j->string, "__metadata__") == 0) {
            if (have_meta) {
                ss_fileio_err(err, errsz, "%s: __metadata__ appears twice", path);
                rc = SS_ERR_FORMAT;
                goto out;
            }
            have_meta = true;
            rc = st_parse_meta(f, path, j, err, errsz);
            if (rc != 0)
                goto out;
            continue;
        }
        if (ss_st_find(f, j->string) != NULL) {
            ss_fileio_err(err, errsz, "%s: tensor '%s' appears twice", path, j->string);
            rc = SS_ERR_FORMAT;
            goto out;
        }
        ss_st_tensor *t = &f->tensors[f->n_tensors];
        uint64_t begin = 0;
        rc = st_parse_tensor(t, path, j, data, data_len, &begin, err, errsz);
        if (rc != 0)
            goto out;
        t->name = strdup(j->string);
        if (t->name == NULL) {
            rc = SS_ERR_NOMEM;
            goto out;
        }
        spans[f->n_tensors] = (struct st_span){begin, begin + t->nbytes, f->n_tensors};
        f->n_tensors++;
    }
    qsort(spans, f->n_tensors, sizeof *spans, st_span_cmp);
    for (size_t i = 1; i < f->n_tensors; i++)
        if (spans[i].begin < spans[i - 1].end) {
            ss_fileio_err(err, errsz, "%s: tensors '%s' and '%s' overlap in the data section",
                          path, f->tensors[spans[i - 1].idx].name,
                          f->tensors[spans[i].idx].name);
            rc = SS_ERR_FORMAT;
            goto out;
        }
    bool misaligned = false;
    for (size_t i = 0; i < f->n_tensors; i++)
        if ((uintptr_t)f->tensors[i].data % f->tensors[i].elem_size != 0)
            misaligned = true;
    if (misaligned) {
        rc = st_make_copy(f);
        if (rc != 0)
            goto out;
    }
    *out = f;
    f = NULL;
    rc = 0;
out:
    if (rc == SS_ERR_NOMEM)
        ss_fileio_err(err, errsz, "%s: out of memory", path);
    free(spans);
    cJSON_Delete(root);
    if (fd >= 0)
        close(fd);
    ss_st_close(f);
    return rc;
}

void ss_st_close(ss_st_file *f)
{
    if (f == NULL)
        return;
    for (size_t i = 0; i < f->n_tensors; i++)
        free((char *)f->tensors[i].name);
    free(f->tensors);
    for (size_t i = 0; i < f->n_meta; i++) {
        free(f->meta_keys[i]);
        free(f->meta_values[i]);
    }
    free(f->meta_keys);
    free(f->meta_values);
    if (f->map != NULL)
        munmap(f->map, f->map_len);
    free(f->copy);
    free(f);
}

const ss_st_tensor *ss_st_find(const ss_st_file *f, const char *name)
{
    for (size_t i = 0; i < f->n_tensors; i++)
        if (strcmp(f->tensors[i].name, name) == 0)
            return &f->tensors[i];
    return NULL;
}

size_t ss_st_count(const ss_st_file *f)
{
    return f->n_tensors;
}

const ss_st_tensor *ss_st_at(const ss_st_file *f, size_t i)
{
    return i < f->n_tensors ? &f->tensors[i] : NULL;
}

const char *ss_st_meta(const ss_st_file *f, const char *key)
{
    for (size_t i = 0; i < f->n_meta; i++)
        if (strcmp(f->meta_keys[i], key) == 0)
            return f->meta_values[i];
    return NULL;
}

size_t ss_st_meta_count(const ss_st_file *f)
{
    return f->n_meta;
}

void ss_st_meta_at(const ss_st_file *f, size_t i, const char **key, const char **value)
{
    *key = i < f->n_meta ? f->meta_keys[i] : NULL;
    *value = i < f->n_meta ? f->meta_values[i] : NULL;
}

size_t ss_st_mem_len(const ss_st_file *f)
{
    return f->map != NULL ? f->map_len : f->copy_len;
}

int ss_st_write(const char *path, const char *const *meta_keys,
                const char *const *meta_values, size_t n_meta,
                const ss_st_wtensor *tensors, size_t n_tensors, char *err,
                size_t errsz)
{
    int rc = SS_ERR_NOMEM;
    char *text = NULL;
    ss_afile *af = NULL;
    cJSON *root = cJSON_CreateObject();
    if (root == NULL)
        goto out;
    if (n_meta > 0) {
        cJSON *meta = cJSON_AddObjectToObject(root, "__metadata__");
        if (meta == NULL)
            goto out;
        for (size_t i = 0; i < n_meta; i++)
            if (cJSON_AddStringToObject(meta, meta_keys[i], meta_values[i]) == NULL)
                goto out;
    }
    uint64_t off = 0;
    for (size_t i = 0; i < n_tensors; i++) {
        const ss_st_wtensor *t = &tensors[i];
        if (t->ndim < 0 || t->ndim > SS_ST_MAX_DIMS) {
            ss_fileio_err(err, errsz, "%s: tensor '%s': rank %d not supported", path,
                          t->name, t->ndim);
            rc = SS_ERR_INVALID;
            goto out;
        }
        uint64_t count = 1;
        for (int d = 0; d < t->ndim; d++) {
            if (t->shape[d] < 0 ||
                __builtin_mul_overflow(count, (uint64_t)t->shape[d], &count)) {
                ss_fileio_err(err, errsz, "%s: tensor '%s': bad shape", path, t->name);
                rc = SS_ERR_INVALID;
                goto out;
            }
        }
        cJSON *jt = cJSON_AddObjectToObject(root, t->name);
        if (jt == NULL || cJSON_AddStringToObject(jt, "dtype", "F32") == NULL)
            goto out;
        cJSON *sh = cJSON_AddArrayToObject(jt, "shape");
        cJSON *of = cJSON_AddArrayToObject(jt, "data_offsets");
        if (sh == NULL || of == NULL)
            goto out;
        for (int d = 0; d < t->ndim; d++) {
            cJSON *num = cJSON_CreateNumber((double)t->shape[d]);
            if (num == NULL || !cJSON_AddItemToArray(sh, num)) {
                cJSON_Delete(num);
                goto out;
            }
        }
        double ends[2] = {(double)off, (double)(off + count * 4)};
        for (int k = 0; k < 2; k++) {
            cJSON *num = cJSON_CreateNumber(ends[k]);
            if (num == NULL || !cJSON_AddItemToArray(of, num)) {
                cJSON_Delete(num);
                goto out;
            }
        }
        off += count * 4;
    }
    text = cJSON_PrintUnformatted(root);
    if (text == NULL)
        goto out;
    size_t tlen = strlen(text);
    size_t hlen = (tlen + 7) / 8 * 8; /* keeps the data 8-byte aligned */
    rc = ss_afile_open(path, &af, err, errsz);
    if (rc != 0)
        goto out;
    FILE *fp = ss_afile_stream(af);
    uint8_t lenbuf[8];
    for (int i = 0; i < 8; i++)
        lenbuf[i] = (uint8_t)((uint64_t)hlen >> (8 * i));
    fwrite(lenbuf, 1, 8, fp);
    fwrite(text, 1, tlen, fp);
    for (size_t i = tlen; i < hlen; i++)
        fputc(' ', fp);
    for (size_t i = 0; i < n_tensors; i++) {
        size_t count = 1;
        for (int d = 0; d < tensors[i].ndim; d++)
            count *= (size_t)tensors[i].shape[d];
        if (count > 0)
            fwrite(tensors[i].data, sizeof(float), count, fp);
    }
    rc = ss_afile_commit(af, err, errsz);
    af = NULL;
out:
    if (rc == SS_ERR_NOMEM)
        ss_fileio_err(err, errsz, "%s: out of memory", path);
    ss_afile_abort(af);
    free(text);
    cJSON_Delete(root);
    return rc;
}
