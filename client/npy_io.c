/* npy_io -- minimal NumPy .npy reader/writer for the `statesaver` CLI. */
#include "npy_io.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ss_error.h"
#include "statesaver.h"

/* Longest header dict accepted (bytes). */
#define NPY_IO_HEADER_MAX 65536u

static const char magic[6] = {'\x93', 'N', 'U', 'M', 'P', 'Y'};

static const struct {
    const char *descr; /* numpy dtype string */
    int dtype;         /* enum ss_dtype */
} descrs[] = {
    {"<f4", SS_DTYPE_FLOAT32},
    {"<i4", SS_DTYPE_INT32},
    {"<i8", SS_DTYPE_INT64},
    {"<f8", SS_DTYPE_FLOAT64},
};

void npy_io_array_clear(npy_io_array *a)
{
    if (!a)
        return;
    free(a->data);
    a->data = NULL;
    a->nbytes = 0;
}

/* Find 'key': in the header dict and return the text after the colon. */
static const char *dict_value(const char *hdr, const char *key)
{
    char pat[32];
    snprintf(pat, sizeof pat, "'%s'", key);
    const char *p = strstr(hdr, pat);
    if (!p)
        return NULL;
    p += strlen(pat);
    while (*p == ' ')
        p++;
    if (*p != ':')
        return NULL;
    p++;
    while (*p == ' ')
        p++;
    return p;
}

static int parse_header(const char *hdr, npy_io_array *a)
{
    const char *d = dict_value(hdr, "descr");
    const char *f = dict_value(hdr, "fortran_order");
    const char *s = dict_value(hdr, "shape");
    if (!d || !f || !s)
        return SS_ERR_FORMAT;
    a->dtype = 0;
    for (size_t i = 0; i < sizeof descrs / sizeof descrs[0]; i++) {
        size_t n = strlen(descrs[i].descr);
        /* '|' byte order is not meaningful for these widths; '<' only. */
        if (d[0] == '\'' && strncmp(d + 1, descrs[i].descr, n) == 0 && d[1 + n] == '\'')
            a->dtype = descrs[i].dtype;
    }
    if (a->dtype == 0)
        return SS_ERR_SHAPE;
    if (strncmp(f, "False", 5) != 0)
        return SS_ERR_SHAPE;
    if (*s != '(')
        return SS_ERR_FORMAT;
    s++;
    a->rank = 0;
    for (;;) {
        while (*s == ' ' || *s == ',')
            s++;
        if (*s == ')')
            break;
        if (*s < '0' || *s > '9' || a->rank == SS_TENSOR_MAX_RANK)
            return SS_ERR_FORMAT;
        char *end;
        errno = 0;
        long long v = strtoll(s, &end, 10);
        if (errno || v < 0)
            return SS_ERR_FORMAT;
        a->shape[a->rank++] = v;
        s = end;
    }
    return 0;
}

int npy_io_read(const char *path, npy_io_array *out, char *err, size_t errsz)
{
    uint8_t pre[12];
    char *hdr = NULL;
    FILE *fp = NULL;
    int rc;

    memset(out, 0, sizeof *out);
    fp = fopen(path, "rb");
    if (!fp) {
        snprintf(err, errsz, "%s: %s", path, strerror(errno));
        rc = SS_ERR_IO;
        goto out;
    }
    if (fread(pre, 1, 10, fp) != 10 || memcmp(pre, magic, 6) != 0 ||
        pre[6] < 1 || pre[6] > 3) {
        snprintf(err, errsz, "%s: not a .npy file (bad magic or version)", path);
        rc = SS_ERR_FORMAT;
        goto out;
    }
    uint32_t hlen;
    if (pre[6] == 1) {
        hlen = (uint32_t)pre[8] | ((uint32_t)pre[9] << 8);
    } else {
        if (fread(pre + 10, 1, 2, fp) != 2) {
            snprintf(err, errsz, "%s: truncated header", path);
            rc = SS_ERR_FORMAT;
            goto out;
        }
        hlen = (uint32_t)pre[8] | ((uint32_t)pre[9] << 8) |
               ((uint32_t)pre[10] << 16) | ((uint32_t)pre[11] << 24);
    }
    if (hlen > NPY_IO_HEADER_MAX) {
        snprintf(err, errsz, "%s: header of %u bytes is too long", path, hlen);
        rc = SS_ERR_FORMAT;
        goto out;
    }
    hdr = malloc((size_t)hlen + 1);
    if (!hdr) {
        rc = SS_ERR_NOMEM;
        snprintf(err, errsz, "%s: out of memory", path);
        goto out;
    }
    if (fread(hdr, 1, hlen, fp) != hlen) {
        snprintf(err, errsz, "%s: truncated header", path);
        rc = SS_ERR_FORMAT;
        goto out;
    }
    hdr[hlen] = '\0';
    rc = parse_header(hdr, out);
    if (rc == SS_ERR_SHAPE) {
        snprintf(err, errsz,
                 "%s: unsupported dtype or order (want little-endian float32, "
                 "int32, int64 or float64 in C order)", path);
        goto out;
    }
    if (rc < 0) {
        snprintf(err, errsz, "%s: malformed header", path);
        goto out;
    }
    uint64_t count;
    size_t es = ss_dtype_size(out->dtype);
    if (ss_shape_count(out->shape, out->rank, NPY_IO_MAX_BYTES / es, &count) < 0) {
        snprintf(err, errsz, "%s: more than %u bytes of data", path, NPY_IO_MAX_BYTES);
        rc = SS_ERR_TOO_BIG;
        goto out;
    }
    out->nbytes = (size_t)count * es;
    out->data = malloc(out->nbytes ? out->nbytes : 1);
    if (!out->data) {
        rc = SS_ERR_NOMEM;
        snprintf(err, errsz, "%s: out of memory", path);
        goto out;
    }
    if (fread(out->data, 1, out->nbytes, fp) != out->nbytes || fgetc(fp) != EOF) {
        snprintf(err, errsz, "%s: data length does not match the shape", path);
        rc = SS_ERR_FORMAT;
        goto out;
    }
    rc = 0;
out:
    if (rc < 0)
        npy_io_array_clear(out);
    free(hdr);
    if (fp)
        fclose(fp);
    return rc;
}

int npy_io_write(const char *path, int dtype, const int64_t *shape, size_t rank,
                 const void *data, size_t nbytes, char *err, size_t errsz)
{
    char dict[512], tmp[4096];
    const char *descr = NULL;
    FILE *fp = NULL;
    int rc;
    uint64_t count;

    for (size_t i = 0; i < sizeof descrs / sizeof descrs[0]; i++)
        if (descrs[i].dtype == dtype)
            descr = descrs[i].descr;
    size_t es = ss_dtype_size(dtype);
    if (!descr || ss_shape_count(shape, rank, SIZE_MAX / (es ? es : 1), &count) < 0 ||
        count * es != nbytes) {
        snprintf(err, errsz, "%s: bad dtype or shape for %zu bytes", path, nbytes);
        return SS_ERR_INVALID;
    }
    size_t off = (size_t)snprintf(dict, sizeof dict,
                                  "{'descr': '%s', 'fortran_order': False, 'shape': (",
                                  descr);
    for (size_t i = 0; i < rank; i++)
        off += (size_t)snprintf(dict + off, sizeof dict - off, "%lld%s",
                                (long long)shape[i], rank == 1 ? "," : (i + 1 < rank ? ", " : ""));
    off += (size_t)snprintf(dict + off, sizeof dict - off, "), }");
    /* Pad with spaces so that data starts at a multiple of 64 bytes. */
    size_t total = 10 + off + 1;
    size_t pad = (64 - total % 64) % 64;
    if (off + pad + 1 >= sizeof dict) {
        snprintf(err, errsz, "%s: header too long", path);
        return SS_ERR_INVALID;
    }
    memset(dict + off, ' ', pad);
    off += pad;
    dict[off++] = '\n';
    if ((size_t)snprintf(tmp, sizeof tmp, "%s.tmp", path) >= sizeof tmp) {
        snprintf(err, errsz, "%s: path too long", path);
        return SS_ERR_INVALID;
    }
    uint8_t pre[10];
    memcpy(pre, magic, 6);
    pre[6] = 1;
    pre[7] = 0;
    pre[8] = (uint8_t)(off & 0xff);
    pre[9] = (uint8_t)(off >> 8);
    fp = fopen(tmp, "wb");
    if (!fp) {
        snprintf(err, errsz, "%s: %s", tmp, strerror(errno));
        rc = SS_ERR_IO;
        goto out;
    }
    if (fwrite(pre, 1, sizeof pre, fp) != sizeof pre ||
        fwrite(dict, 1, off, fp) != off ||
        (nbytes && fwrite(data, 1, nbytes, fp) != nbytes)) {
        snprintf(err, errsz, "%s: %s", tmp, strerror(errno));
        rc = SS_ERR_IO;
        goto out;
    }
    rc = fclose(fp);
    fp = NULL;
    if (rc != 0 || rename(tmp, path) != 0) {
        snprintf(err, errsz, "%s: %s", path, strerror(errno));
        rc = SS_ERR_IO;
        goto out;
    }
    rc = 0;
out:
    if (fp)
        fclose(fp);
    if (rc < 0)
        unlink(tmp);
    return rc;
}
