/* npy_io -- minimal NumPy .npy reader/writer for the `statesaver` CLI.
 *
 * Reads versions 1.0-3.0, little-endian float32/int32/int64/float64, C
 * order. Writes version 1.0. Kept in client/ so the CLI does not depend on
 * worker code (the worker has its own loader for model inputs).
 */
#ifndef SS_NPY_IO_H
#define SS_NPY_IO_H

#include <stddef.h>
#include <stdint.h>

#include "ss_tensor.h"

/* Largest .npy data accepted (bytes); matches the default frame limit. */
#define NPY_IO_MAX_BYTES (64u * 1024u * 1024u)

typedef struct npy_io_array {
    int dtype;                         /* enum ss_dtype */
    int64_t shape[SS_TENSOR_MAX_RANK]; /* dimensions */
    size_t rank;                       /* dims used in shape (0 = scalar) */
    void *data;                        /* nbytes, owned (npy_io_array_clear) */
    size_t nbytes;                     /* bytes of data */
} npy_io_array;

/* Read path into *out. On error returns SS_ERR_IO / SS_ERR_FORMAT /
 * SS_ERR_TOO_BIG and writes a message naming the file into err. */
int npy_io_read(const char *path, npy_io_array *out, char *err, size_t errsz);

/* Write data (nbytes, must equal the shape's size) to path, replacing it
 * atomically (temporary file + rename). */
int npy_io_write(const char *path, int dtype, const int64_t *shape, size_t rank,
                 const void *data, size_t nbytes, char *err, size_t errsz);

/* Free the data of a; accepts a zeroed or already cleared array. */
void npy_io_array_clear(npy_io_array *a);

#endif
