/* ss_tensor -- helpers for Tensor messages on the wire. */
#include "ss_tensor.h"

#include <stdio.h>
#include <string.h>

#include "ss_error.h"

size_t ss_dtype_size(int dtype)
{
    switch (dtype) {
    case STATESAVER__V1__DTYPE__DT_FLOAT32: return 4;
    case STATESAVER__V1__DTYPE__DT_INT32: return 4;
    case STATESAVER__V1__DTYPE__DT_INT64: return 8;
    case STATESAVER__V1__DTYPE__DT_FLOAT64: return 8;
    default: return 0;
    }
}

const char *ss_dtype_name(int dtype)
{
    switch (dtype) {
    case STATESAVER__V1__DTYPE__DT_FLOAT32: return "float32";
    case STATESAVER__V1__DTYPE__DT_INT32: return "int32";
    case STATESAVER__V1__DTYPE__DT_INT64: return "int64";
    case STATESAVER__V1__DTYPE__DT_FLOAT64: return "float64";
    default: return "invalid";
    }
}

int ss_dtype_parse(const char *name)
{
    static const int all[] = {
        STATESAVER__V1__DTYPE__DT_FLOAT32, STATESAVER__V1__DTYPE__DT_INT32,
        STATESAVER__V1__DTYPE__DT_INT64, STATESAVER__V1__DTYPE__DT_FLOAT64,
    };
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        if (strcmp(name, ss_dtype_name(all[i])) == 0)
            return all[i];
    return SS_ERR_INVALID;
}

int ss_shape_count(const int64_t *dims, size_t rank, uint64_t limit,
                   uint64_t *count)
{
    if (rank > SS_TENSOR_MAX_RANK)
        return SS_ERR_INVALID;
    uint64_t n = 1;
    for (size_t i = 0; i < rank; i++) {
        if (dims[i] < 0)
            return SS_ERR_INVALID;
        uint64_t d = (uint64_t)dims[i];
        if (d != 0 && n > limit / d)
            return SS_ERR_TOO_BIG;
        n *= d;
    }
    if (n > limit)
        return SS_ERR_TOO_BIG;
    *count = n;
    return 0;
}

int ss_tensor_check(const ss_tensor_msg *t)
{
    size_t es = ss_dtype_size(t->dtype);
    if (es == 0)
        return SS_ERR_SHAPE;
    uint64_t count;
    int rc = ss_shape_count(t->shape, t->n_shape, UINT64_MAX / es, &count);
    if (rc < 0)
        return rc;
    if (count * es != (uint64_t)t->data.len)
        return SS_ERR_SHAPE;
    return 0;
}

void ss_tensor_borrow(ss_tensor_msg *t, int dtype, const int64_t *dims,
                      size_t rank, const void *data, size_t nbytes)
{
    t->dtype = (Statesaver__V1__DType)dtype;
    /* protobuf-c's structs are not const-correct; packing only reads. */
    t->shape = (int64_t *)(uintptr_t)dims;
    t->n_shape = rank;
    t->data.data = (uint8_t *)(uintptr_t)data;
    t->data.len = nbytes;
}

void ss_shape_format(const int64_t *dims, size_t rank, char *buf, size_t size)
{
    size_t off = 0;
    if (size == 0)
        return;
    buf[0] = '\0';
    off += (size_t)snprintf(buf + off, size - off, "[");
    for (size_t i = 0; i < rank && off < size; i++)
        off += (size_t)snprintf(buf + off, size - off, "%s%lld", i ? ", " : "",
                                (long long)dims[i]);
    if (off < size)
        snprintf(buf + off, size - off, "]");
}
