/* jobs_int -- what the two files of libstatesaver's job calls share
 * (jobs.c: submit, await, collect; jobs_lease.c: lease, complete): reply
 * checks and the aligned view of tensor data. Internal, not installed.
 */
#ifndef SS_JOBS_INT_H
#define SS_JOBS_INT_H

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "client_int.h"
#include "ss_tensor.h"

typedef Statesaver__V1__Tensor tensor_t;

/* p if it is aligned for float, else a copy (recorded in *copy). */
static inline const float *aligned_floats(const uint8_t *p, size_t nbytes, float **copy)
{
    *copy = NULL;
    if (((uintptr_t)p % _Alignof(float)) == 0)
        return (const float *)(const void *)p;
    *copy = malloc(nbytes ? nbytes : 1);
    if (*copy && nbytes)
        memcpy(*copy, p, nbytes);
    return *copy;
}

/* A float32 matrix [rows, cols] whose data matches its shape. */
static inline bool is_f32_matrix(const tensor_t *t)
{
    return t && t->dtype == STATESAVER__V1__DTYPE__DT_FLOAT32 && t->n_shape == 2 &&
           t->shape[0] >= 0 && t->shape[0] <= UINT32_MAX && t->shape[1] >= 0 &&
           t->shape[1] <= UINT32_MAX && ss_tensor_check(t) == 0;
}

/* Fail with SS_ERR_PROTO unless r's body is want_case; what names the
 * request with its article ("a submit"). */
static inline int want_body(ss_client *c, const ss_resp *r, int want_case, const char *what)
{
    if ((int)r->body_case != want_case)
        return ss_client_fail(c, SS_ERR_PROTO, "server answered %s with body %d", what,
                              (int)r->body_case);
    return 0;
}

#endif
