/* ss_tensor -- helpers for Tensor messages on the wire.
 *
 * Tensor data is little-endian and row-major. These helpers check a
 * received tensor's dtype/shape/data agreement without allocating, and
 * fill a Tensor message that borrows caller memory (no copy).
 */
#ifndef SS_TENSOR_H
#define SS_TENSOR_H

#include <stddef.h>
#include <stdint.h>

#include "statesaver.pb-c.h"

/* Largest rank accepted anywhere. */
#define SS_TENSOR_MAX_RANK 8

typedef Statesaver__V1__Tensor ss_tensor_msg;

/* Bytes per element of a dtype, or 0 for an unknown dtype. */
size_t ss_dtype_size(int dtype);

/* Lower-case name ("float32"); never NULL ("invalid" when unknown). */
const char *ss_dtype_name(int dtype);

/* Parse "float32" / "int32" / "int64" / "float64"; returns the dtype or
 * SS_ERR_INVALID. */
int ss_dtype_parse(const char *name);

/* Product of dims into *count. Fails with SS_ERR_TOO_BIG on overflow or
 * if the count exceeds limit elements, SS_ERR_INVALID on a negative dim or
 * rank above SS_TENSOR_MAX_RANK. */
int ss_shape_count(const int64_t *dims, size_t rank, uint64_t limit,
                   uint64_t *count);

/* Check that t is well formed: known dtype, sane shape, and data length
 * equal to count * dtype size. Returns 0 or a negative code. */
int ss_tensor_check(const ss_tensor_msg *t);

/* Fill t (already initialised with STATESAVER__V1__TENSOR__INIT) to borrow
 * data and dims: t keeps pointers to both, which must outlive its use. */
void ss_tensor_borrow(ss_tensor_msg *t, int dtype, const int64_t *dims,
                      size_t rank, const void *data, size_t nbytes);

/* Format a shape as "[2, 3]" into buf (always NUL-terminated). */
void ss_shape_format(const int64_t *dims, size_t rank, char *buf, size_t size);

#endif
