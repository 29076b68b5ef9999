/* ss_npy -- read and write NumPy .npy arrays (float32, float64, int32,
 * int64; C order, little-endian; format versions 1.0, 2.0 and 3.0 read, 1.0
 * written). The one .npy library of the worker and the CLI.
 *
 * The reader parses the header dict: exactly the keys 'descr',
 * 'fortran_order' and 'shape', each once, in any order; a shape is a tuple
 * of non-negative integers ("(3,)", "(2, 3)", "()"), so "(,,3 4)", "(3)"
 * and "[3]" are refused; the header is at most SS_NPY_MAX_HEADER bytes.
 * The writer goes through atomic_file: a temporary name beside the target,
 * fsync, rename, fsync of the directory.
 */
#ifndef SS_NPY_H
#define SS_NPY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Largest header accepted when reading (NumPy itself writes < 1 KiB and
 * refuses headers over 10000 bytes unless told otherwise). */
#define SS_NPY_MAX_HEADER 65536u
/* Largest rank accepted (NumPy's own limit). */
#define SS_NPY_MAX_DIMS 32

typedef enum ss_npy_dtype {
    SS_NPY_F32 = 0, /* '<f4' */
    SS_NPY_I32 = 1, /* '<i4' */
    SS_NPY_I64 = 2, /* '<i8' */
    SS_NPY_F64 = 3, /* '<f8' */
} ss_npy_dtype;

/* An array read from a file. Owns its data; free with ss_npy_free. */
typedef struct ss_npy {
    ss_npy_dtype dtype;               /* element type */
    int ndim;                         /* rank, 0..SS_NPY_MAX_DIMS */
    int64_t shape[SS_NPY_MAX_DIMS];   /* dimensions */
    size_t count;                     /* elements: prod(shape) */
    size_t nbytes;                    /* bytes of data: count * element size */
    void *data;                       /* count elements, C order, 64-byte aligned */
} ss_npy;

/* Read path. Rejects bad magic, unknown versions, headers that are not
 * the dict NumPy writes, fortran_order True, big-endian or unsupported
 * dtypes, shapes that overflow, and files whose data size is not exactly
 * what the shape needs. On error returns SS_ERR_IO, SS_ERR_FORMAT or
 * SS_ERR_NOMEM and writes a message naming the file into err. */
int ss_npy_read(const char *path, ss_npy **out, char *err, size_t errsz);
/* The same, refusing (SS_ERR_TOO_BIG, before allocating) arrays of more
 * than max_bytes data bytes. */
int ss_npy_read_max(const char *path, uint64_t max_bytes, ss_npy **out, char *err,
                    size_t errsz);

/* The header dict, parsed. */
typedef struct ss_npy_header {
    char descr[32];                 /* the 'descr' string (truncated to fit) */
    bool fortran_order;             /* the 'fortran_order' value */
    int ndim;                       /* entries of shape */
    int64_t shape[SS_NPY_MAX_DIMS]; /* the 'shape' tuple */
} ss_npy_header;

/* Parse len bytes of header text (the dict and its padding, not NUL
 * terminated). Returns 0, or SS_ERR_FORMAT with a static reason in *why.
 * Exposed for tests and fuzzing; ss_npy_read uses it. */
int ss_npy_parse_header(const char *text, size_t len, ss_npy_header *out, const char **why);
/* Element size of d in bytes (0 for an unknown type). */
size_t ss_npy_dtype_size(ss_npy_dtype d);
void ss_npy_free(ss_npy *a); /* accepts NULL */

/* "float32", "int32", "int64", "float64". */
const char *ss_npy_dtype_name(ss_npy_dtype d);
/* Writes "[2, 3, 4]" (or "[]" for a scalar) into buf; returns buf. */
char *ss_npy_shape_str(int ndim, const int64_t *shape, char *buf, size_t bufsz);

/* Write a version 1.0 file whose header is padded so the data starts at a
 * multiple of 64 bytes. The data goes to a temporary file beside path that
 * is renamed onto path at the end: on error nothing is left at path. */
int ss_npy_write(const char *path, ss_npy_dtype dtype, int ndim,
                 const int64_t *shape, const void *data, char *err, size_t errsz);

/* Two-phase write for callers that produce several files and want all or
 * none: stage each (temporary file written and closed), then commit each
 * (rename) or discard each. */
typedef struct ss_npy_staged ss_npy_staged; /* opaque: a finished temporary file */
int ss_npy_stage(const char *path, ss_npy_dtype dtype, int ndim,
                 const int64_t *shape, const void *data, ss_npy_staged **out,
                 char *err, size_t errsz);
int ss_npy_commit(ss_npy_staged *s, char *err, size_t errsz); /* frees s */
void ss_npy_discard(ss_npy_staged *s);                         /* frees s; accepts NULL */

#endif
