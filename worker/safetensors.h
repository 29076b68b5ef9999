/* safetensors -- read and write safetensors files (8-byte little-endian
 * header length, JSON header, raw little-endian data).
 *
 * Reading maps the file read-only. Tensor data pointers point into the
 * mapping (or, when a float32 tensor would be misaligned in the mapping,
 * into one 64-byte aligned private copy of all tensors) and stay valid
 * until ss_st_close. The file must not be truncated while it is open
 * (as with any mapping, that would raise SIGBUS).
 */
#ifndef SS_SAFETENSORS_H
#define SS_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

/* Largest JSON header accepted (the reference implementation uses the same). */
#define SS_ST_MAX_HEADER (100u * 1024u * 1024u)
/* Largest tensor rank accepted. */
#define SS_ST_MAX_DIMS 8

typedef struct ss_st_file ss_st_file; /* opaque: mapping + parsed header */

/* One tensor of an open file. Owned by the file. */
typedef struct ss_st_tensor {
    const char *name;            /* tensor name (NUL-terminated) */
    const char *dtype;           /* dtype string as in the file: "F32", "F64", ... */
    size_t elem_size;            /* bytes per element of dtype */
    int ndim;                    /* rank, 0..SS_ST_MAX_DIMS */
    int64_t shape[SS_ST_MAX_DIMS]; /* dimensions */
    const void *data;            /* first byte; aligned to elem_size for F32 */
    size_t nbytes;               /* data_offsets end - begin */
} ss_st_tensor;

/* Open and validate path: header length bounded by SS_ST_MAX_HEADER and the
 * file size, header is a JSON object, every tensor has a known dtype, a
 * shape and data_offsets inside the data section whose size matches the
 * shape, tensors do not overlap, __metadata__ maps strings to strings.
 * On error returns SS_ERR_IO, SS_ERR_FORMAT, SS_ERR_TOO_BIG or SS_ERR_NOMEM
 * and writes a message naming the file (and tensor or key) into err. */
int ss_st_open(const char *path, ss_st_file **out, char *err, size_t errsz);
void ss_st_close(ss_st_file *f); /* accepts NULL; invalidates all pointers */

/* Tensor called name, or NULL. */
const ss_st_tensor *ss_st_find(const ss_st_file *f, const char *name);
/* Number of tensors and the i-th one (file order), for listings. */
size_t ss_st_count(const ss_st_file *f);
const ss_st_tensor *ss_st_at(const ss_st_file *f, size_t i);

/* Value of __metadata__[key], or NULL when absent. */
const char *ss_st_meta(const ss_st_file *f, const char *key);
/* Number of metadata entries and the i-th key/value (file order). */
size_t ss_st_meta_count(const ss_st_file *f);
void ss_st_meta_at(const ss_st_file *f, size_t i, const char **key, const char **value);

/* Bytes of backing memory (mapping or copy) the file holds. */
size_t ss_st_mem_len(const ss_st_file *f);

/* A float32 tensor to write: data holds prod(shape) floats. */
typedef struct ss_st_wtensor {
    const char *name;            /* tensor name */
    int ndim;                    /* rank, 0..SS_ST_MAX_DIMS */
    int64_t shape[SS_ST_MAX_DIMS]; /* dimensions */
    const float *data;           /* prod(shape) values, row-major */
} ss_st_wtensor;

/* Write a safetensors file with float32 tensors and n_meta metadata pairs
 * (meta_keys[i] -> meta_values[i]). The header is padded with spaces to a
 * multiple of 8 bytes so the data stays aligned. The file is written to a
 * temporary name beside path and renamed, so on error nothing is left at
 * path. */
int ss_st_write(const char *path, const char *const *meta_keys,
                const char *const *meta_values, size_t n_meta,
                const ss_st_wtensor *tensors, size_t n_tensors, char *err,
                size_t errsz);

#endif
