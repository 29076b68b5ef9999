/* ss_npy -- NumPy .npy reader (v1/v2/v3 headers) and v1 writer.
 *
 * Hand-written: Debian has no C library for the .npy format; the header is
 * a small Python dict literal with three fixed keys, parsed here by a
 * small recursive-descent reader (no substring matching).
 */
#include "ss_npy.h"

#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "atomic_file.h"
#include "fileio.h"
#include "ss_error.h"

#define NPY_MAGIC "\x93NUMPY"
#define NPY_MAGIC_LEN 6
#define NPY_ALIGN 64u /* data offset alignment NumPy uses when writing */

struct ss_npy_staged {
    ss_afile *af; /* finished temporary file, not yet renamed */
};

static const struct {
    const char *descr; /* NumPy dtype string */
    size_t size;       /* bytes per element */
    const char *name;  /* human name */
} npy_types[] = {
    [SS_NPY_F32] = {"<f4", 4, "float32"},
    [SS_NPY_I32] = {"<i4", 4, "int32"},
    [SS_NPY_I64] = {"<i8", 8, "int64"},
    [SS_NPY_F64] = {"<f8", 8, "float64"},
};

size_t ss_npy_dtype_size(ss_npy_dtype d)
{
    return (unsigned)d < sizeof npy_types / sizeof npy_types[0] ? npy_types[d].size : 0;
}

const char *ss_npy_dtype_name(ss_npy_dtype d)
{
    return (unsigned)d < sizeof npy_types / sizeof npy_types[0] ? npy_types[d].name
                                                               : "unknown";
}

char *ss_npy_shape_str(int ndim, const int64_t *shape, char *buf, size_t bufsz)
{
    size_t off = 0;
    if (bufsz == 0)
        return buf;
    buf[0] = '\0';
    int n = snprintf(buf, bufsz, "[");
    off = n > 0 ? (size_t)n : 0;
    for (int i = 0; i < ndim && off < bufsz; i++) {
        n = snprintf(buf + off, bufsz - off, "%s%" PRId64, i ? ", " : "", shape[i]);
        if (n < 0)
            break;
        off += (size_t)n;
    }
    if (off < bufsz)
        snprintf(buf + off, bufsz - off, "]");
    return buf;
}

/* Cursor over the header text. */
struct npy_cur {
    const char *p;   /* next character */
    const char *end; /* one past the last */
};

static void npy_ws(struct npy_cur *c)
{
    while (c->p < c->end && (*c->p == ' ' || *c->p == '\t' || *c->p == '\n' || *c->p == '\r'))
        c->p++;
}

static bool npy_lit(struct npy_cur *c, const char *s)
{
    size_t n = strlen(s);
    if ((size_t)(c->end - c->p) < n || memcmp(c->p, s, n) != 0)
        return false;
    c->p += n;
    return true;
}

/* A quoted Python string without escapes, shorter than outsz bytes. */
static bool npy_str(struct npy_cur *c, char *out, size_t outsz)
{
    if (c->p >= c->end || (*c->p != '\'' && *c->p != '"'))
        return false;
    char q = *c->p++;
    size_t n = 0;
    while (c->p < c->end && *c->p != q) {
        if (*c->p == '\\')
            return false;
        if (n + 1 >= outsz)
            return false; /* longer than any key or dtype we know */
        out[n++] = *c->p;
        c->p++;
    }
    if (c->p >= c->end)
        return false;
    c->p++;
    out[n] = '\0';
    return true;
}

/* Parse "(d0, d1, ...)" with an optional trailing comma. */
static bool npy_shape(struct npy_cur *c, int *ndim, int64_t *shape, const char **why)
{
    *why = "shape is not a tuple of non-negative integers";
    if (!npy_lit(c, "("))
        return false;
    int n = 0;
    for (;;) {
        npy_ws(c);
        if (npy_lit(c, ")"))
            break;
        if (c->p >= c->end || *c->p < '0' || *c->p > '9')
            return false;
        uint64_t v = 0;
        while (c->p < c->end && *c->p >= '0' && *c->p <= '9') {
            if (v > (uint64_t)INT64_MAX / 10 ||
                v * 10 + (uint64_t)(*c->p - '0') > (uint64_t)INT64_MAX) {
                *why = "a shape dimension is too large";
                return false;
            }
            v = v * 10 + (uint64_t)(*c->p - '0');
            c->p++;
        }
        if (c->p < c->end && *c->p == 'L') /* Python 2 long */
            c->p++;
        if (n == SS_NPY_MAX_DIMS) {
            *why = "shape has too many dimensions";
            return false;
        }
        shape[n++] = (int64_t)v;
        npy_ws(c);
        if (npy_lit(c, ","))
            continue;
        /* "(3)" is an integer in Python, not a tuple. */
        if (n > 1 && npy_lit(c, ")"))
            break;
        return false;
    }
    *ndim = n;
    return true;
}

int ss_npy_parse_header(const char *h, size_t len, ss_npy_header *out, const char **why)
{
    struct npy_cur c = {h, h + len};
    char *descr = out->descr;
    size_t descrsz = sizeof out->descr;
    bool *fortran = &out->fortran_order;
    int *ndim = &out->ndim;
    int64_t *shape = out->shape;
    memset(out, 0, sizeof *out);
    bool got_descr = false, got_fortran = false, got_shape = false;
    *why = "header is not a Python dict literal";
    npy_ws(&c);
    if (!npy_lit(&c, "{"))
        return SS_ERR_FORMAT;
    for (;;) {
        npy_ws(&c);
        if (npy_lit(&c, "}"))
            break;
        char key[32];
        if (!npy_str(&c, key, sizeof key))
            return SS_ERR_FORMAT;
        npy_ws(&c);
        if (!npy_lit(&c, ":"))
            return SS_ERR_FORMAT;
        npy_ws(&c);
        if (strcmp(key, "descr") == 0 && !got_descr) {
            if (c.p < c.end && *c.p == '[') {
                *why = "structured dtypes are not supported";
                return SS_ERR_FORMAT;
            }
            if (!npy_str(&c, descr, descrsz)) {
                *why = "'descr' is not a string";
                return SS_ERR_FORMAT;
            }
            got_descr = true;
        } else if (strcmp(key, "fortran_order") == 0 && !got_fortran) {
            if (npy_lit(&c, "True"))
                *fortran = true;
            else if (npy_lit(&c, "False"))
                *fortran = false;
            else {
                *why = "'fortran_order' is not True or False";
                return SS_ERR_FORMAT;
            }
            got_fortran = true;
        } else if (strcmp(key, "shape") == 0 && !got_shape) {
            if (!npy_shape(&c, ndim, shape, why))
                return SS_ERR_FORMAT;
            got_shape = true;
        } else {
            *why = "header keys must be exactly 'descr', 'fortran_order' and 'shape'";
            return SS_ERR_FORMAT;
        }
        npy_ws(&c);
        if (npy_lit(&c, ","))
            continue;
        if (npy_lit(&c, "}"))
            break;
        *why = "header is not a Python dict literal";
        return SS_ERR_FORMAT;
    }
    npy_ws(&c);
    if (c.p != c.end) {
        *why = "unexpected text after the header dict";
        return SS_ERR_FORMAT;
    }
    if (!got_descr || !got_fortran || !got_shape) {
        *why = "header keys must be exactly 'descr', 'fortran_order' and 'shape'";
        return SS_ERR_FORMAT;
    }
    return 0;
}

static int npy_read_all(int fd, void *buf, size_t len, off_t off)
{
    uint8_t *p = buf;
    while (len > 0) {
        ssize_t n = pread(fd, p, len, off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return SS_ERR_IO;
        p += n;
        len -= (size_t)n;
        off += n;
    }
    return 0;
}

int ss_npy_read(const char *path, ss_npy **out, char *err, size_t errsz)
{
    return ss_npy_read_max(path, UINT64_MAX, out, err, errsz);
}

int ss_npy_read_max(const char *path, uint64_t max_bytes, ss_npy **out, char *err,
                    size_t errsz)
{
    int rc = SS_ERR_NOMEM;
    char *hdr = NULL;
    int fd = -1;
    ss_npy *a = calloc(1, sizeof *a);
    if (a == NULL)
        goto out;
    uint64_t size;
    /* rc stays SS_ERR_NOMEM for the allocations below. */
    if (ss_fileio_open_regular(path, &fd, &size, err, errsz) < 0) {
        rc = SS_ERR_IO;
        goto out;
    }
    uint8_t pre[12];
    if (size < 10 || npy_read_all(fd, pre, 10, 0) != 0 ||
        memcmp(pre, NPY_MAGIC, NPY_MAGIC_LEN) != 0) {
        ss_fileio_err(err, errsz, "%s: not a .npy file (bad magic)", path);
        rc = SS_ERR_FORMAT;
        goto out;
    }
    int major = pre[6], minor = pre[7];
    uint64_t hlen, hstart;
    if (major == 1 && minor == 0) {
        hlen = (uint64_t)pre[8] | (uint64_t)pre[9] << 8;
        hstart = 10;
    } else if ((major == 2 || major == 3) && minor == 0) {
        if (size < 12 || npy_read_all(fd, pre, 12, 0) != 0) {
            ss_fileio_err(err, errsz, "%s: truncated .npy header", path);
            rc = SS_ERR_FORMAT;
            goto out;
        }
        hlen = (uint64_t)pre[8] | (uint64_t)pre[9] << 8 | (uint64_t)pre[10] << 16 |
               (uint64_t)pre[11] << 24;
        hstart = 12;
    } else {
        ss_fileio_err(err, errsz, "%s: unsupported .npy format version %d.%d (expected 1.0, 2.0 or 3.0)",
                      path, major, minor);
        rc = SS_ERR_FORMAT;
        goto out;
    }
    if (hlen > SS_NPY_MAX_HEADER) {
        ss_fileio_err(err, errsz, "%s: .npy header of %" PRIu64 " bytes exceeds the limit of %u",
                      path, hlen, SS_NPY_MAX_HEADER);
        rc = SS_ERR_FORMAT;
        goto out;
    }
    if (hstart + hlen > size) {
        ss_fileio_err(err, errsz, "%s: truncated .npy header (%" PRIu64 " bytes announced, %" PRIu64
                      " in the file)", path, hlen, size - hstart);
        rc = SS_ERR_FORMAT;
        goto out;
    }
    hdr = malloc(hlen ? hlen : 1);
    if (hdr == NULL)
        goto out;
    if (npy_read_all(fd, hdr, hlen, (off_t)hstart) != 0) {
        ss_fileio_err(err, errsz, "%s: cannot read the header: %s", path, strerror(errno));
        rc = SS_ERR_IO;
        goto out;
    }
    ss_npy_header h;
    const char *why = NULL;
    if (ss_npy_parse_header(hdr, hlen, &h, &why) != 0) {
        ss_fileio_err(err, errsz, "%s: bad .npy header: %s", path, why);
        rc = SS_ERR_FORMAT;
        goto out;
    }
    const char *descr = h.descr;
    bool fortran = h.fortran_order;
    a->ndim = h.ndim;
    memcpy(a->shape, h.shape, sizeof a->shape);
    char shs[256];
    ss_npy_shape_str(a->ndim, a->shape, shs, sizeof shs);
    if (fortran) {
        ss_fileio_err(err, errsz,
                      "%s: fortran_order array (shape %s) is not supported; save a C-order array "
                      "(numpy.ascontiguousarray)", path, shs);
        rc = SS_ERR_FORMAT;
        goto out;
    }
    bool found = false;
    for (size_t i = 0; i < sizeof npy_types / sizeof npy_types[0]; i++)
        if (strcmp(descr, npy_types[i].descr) == 0) {
            a->dtype = (ss_npy_dtype)i;
            found = true;
        }
    if (!found) {
        if (descr[0] == '>')
            ss_fileio_err(err, errsz, "%s: big-endian dtype '%s' (shape %s) is not supported (use '<%s')",
                          path, descr, shs, descr + 1);
        else
            ss_fileio_err(err, errsz,
                          "%s: unsupported dtype '%s' (shape %s; expected float32 '<f4', float64 "
                          "'<f8', int32 '<i4' or int64 '<i8')", path, descr, shs);
        rc = SS_ERR_FORMAT;
        goto out;
    }
    uint64_t count = 1, nbytes;
    bool overflow = false;
    for (int i = 0; i < a->ndim; i++)
        overflow |= __builtin_mul_overflow(count, (uint64_t)a->shape[i], &count);
    overflow |= __builtin_mul_overflow(count, (uint64_t)npy_types[a->dtype].size, &nbytes);
    if (overflow || nbytes > SIZE_MAX) {
        ss_fileio_err(err, errsz, "%s: shape %s is too large", path, shs);
        rc = SS_ERR_FORMAT;
        goto out;
    }
    if (nbytes > max_bytes) {
        ss_fileio_err(err, errsz, "%s: shape %s of %s is %" PRIu64 " bytes, more than the "
                      "limit of %" PRIu64, path, shs, npy_types[a->dtype].name, nbytes,
                      max_bytes);
        rc = SS_ERR_TOO_BIG;
        goto out;
    }
    uint64_t have = size - hstart - hlen;
    if (have != nbytes) {
        ss_fileio_err(err, errsz,
                      "%s: %s: file holds %" PRIu64 " data bytes, shape %s of %s needs %" PRIu64,
                      path, have < nbytes ? "truncated data" : "trailing bytes after the data",
                      have, shs, npy_types[a->dtype].name, nbytes);
        rc = SS_ERR_FORMAT;
        goto out;
    }
    /* Size is now bounded by the file that exists, so allocating is safe. */
    if (posix_memalign(&a->data, NPY_ALIGN, nbytes ? (size_t)nbytes : NPY_ALIGN) != 0) {
        a->data = NULL;
        goto out;
    }
    if (npy_read_all(fd, a->data, (size_t)nbytes, (off_t)(hstart + hlen)) != 0) {
        ss_fileio_err(err, errsz, "%s: cannot read the data: %s", path, strerror(errno));
        rc = SS_ERR_IO;
        goto out;
    }
    a->count = (size_t)count;
    a->nbytes = (size_t)nbytes;
    *out = a;
    a = NULL;
    rc = 0;
out:
    if (rc == SS_ERR_NOMEM)
        ss_fileio_err(err, errsz, "%s: out of memory", path);
    free(hdr);
    if (fd >= 0)
        close(fd);
    ss_npy_free(a);
    return rc;
}

void ss_npy_free(ss_npy *a)
{
    if (a == NULL)
        return;
    free(a->data);
    free(a);
}

int ss_npy_stage(const char *path, ss_npy_dtype dtype, int ndim,
                 const int64_t *shape, const void *data, ss_npy_staged **out,
                 char *err, size_t errsz)
{
    int rc = SS_ERR_INVALID;
    ss_afile *af = NULL;
    ss_npy_staged *s = NULL;
    if ((unsigned)dtype >= sizeof npy_types / sizeof npy_types[0] || ndim < 0 ||
        ndim > SS_NPY_MAX_DIMS) {
        ss_fileio_err(err, errsz, "%s: bad dtype or rank for writing", path);
        goto out;
    }
    char dict[64 + 24 * SS_NPY_MAX_DIMS];
    int n = snprintf(dict, sizeof dict, "{'descr': '%s', 'fortran_order': False, 'shape': (",
                     npy_types[dtype].descr);
    size_t off = (size_t)n;
    uint64_t count = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0 || __builtin_mul_overflow(count, (uint64_t)shape[i], &count)) {
            ss_fileio_err(err, errsz, "%s: bad shape for writing", path);
            goto out;
        }
        n = snprintf(dict + off, sizeof dict - off, "%s%" PRId64, i ? ", " : "", shape[i]);
        off += (size_t)n;
    }
    n = snprintf(dict + off, sizeof dict - off, "%s), }", ndim == 1 ? "," : "");
    off += (size_t)n;
    /* magic(6) + version(2) + length(2) + dict + padding + '\n' */
    size_t total = (10 + off + 1 + NPY_ALIGN - 1) / NPY_ALIGN * NPY_ALIGN;
    size_t hlen = total - 10;
    s = calloc(1, sizeof *s);
    if (s == NULL) {
        ss_fileio_err(err, errsz, "%s: out of memory", path);
        rc = SS_ERR_NOMEM;
        goto out;
    }
    rc = ss_afile_open(path, &af, err, errsz);
    if (rc != 0)
        goto out;
    FILE *fp = ss_afile_stream(af);
    uint8_t pre[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, (uint8_t)(hlen & 0xff),
                       (uint8_t)(hlen >> 8)};
    fwrite(pre, 1, sizeof pre, fp);
    fwrite(dict, 1, off, fp);
    for (size_t i = off; i + 1 < hlen; i++)
        fputc(' ', fp);
    fputc('\n', fp);
    if (count > 0)
        fwrite(data, npy_types[dtype].size, (size_t)count, fp);
    if (fflush(fp) != 0 || ferror(fp)) {
        ss_fileio_err(err, errsz, "%s: write failed: %s", path, strerror(errno));
        rc = SS_ERR_IO;
        goto out;
    }
    s->af = af;
    af = NULL;
    *out = s;
    s = NULL;
    rc = 0;
out:
    ss_afile_abort(af);
    free(s);
    return rc;
}

int ss_npy_commit(ss_npy_staged *s, char *err, size_t errsz)
{
    int rc = ss_afile_commit(s->af, err, errsz);
    free(s);
    return rc;
}

void ss_npy_discard(ss_npy_staged *s)
{
    if (s == NULL)
        return;
    ss_afile_abort(s->af);
    free(s);
}

int ss_npy_write(const char *path, ss_npy_dtype dtype, int ndim,
                 const int64_t *shape, const void *data, char *err, size_t errsz)
{
    ss_npy_staged *s = NULL;
    int rc = ss_npy_stage(path, dtype, ndim, shape, data, &s, err, errsz);
    if (rc != 0)
        return rc;
    return ss_npy_commit(s, err, errsz);
}
