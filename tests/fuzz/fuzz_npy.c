/* fuzz_npy -- libFuzzer harness for the one .npy library (common/ss_npy.h),
 * used by the worker (model inputs, lengths) and the CLI (`statesaver
 * save` and `submit` inputs).
 *
 * The input is the file. When the reader accepts it: the rank is in range,
 * no dimension is negative, the element count equals the product of the
 * shape, the byte count is the count times the element size, the data is
 * 64-byte aligned and readable to its end (ASan). When it refuses, the
 * message is not empty and nothing is returned. The same bytes after the
 * 10-byte preamble also go to the header parser alone, which must either
 * accept with a rank in range or give a reason.
 */
#include <stdint.h>
#include <stdlib.h>

#include "fuzz_file.h"
#include "ss_npy.h"

static void read_file(const char *path)
{
    ss_npy *a = NULL;
    char err[512] = "";
    int rc = ss_npy_read(path, &a, err, sizeof err);
    if (rc != 0) {
        if (rc > 0 || a || !err[0])
            abort();
        return;
    }
    if (!a || a->ndim < 0 || a->ndim > SS_NPY_MAX_DIMS)
        abort();
    unsigned __int128 n = 1;
    for (int d = 0; d < a->ndim; d++) {
        if (a->shape[d] < 0)
            abort();
        n *= (unsigned __int128)a->shape[d];
    }
    size_t es = ss_npy_dtype_size(a->dtype);
    if (es == 0 || n != a->count || a->nbytes != a->count * es ||
        ((uintptr_t)a->data & 63u))
        abort();
    if (a->nbytes)
        fuzz_touch(a->data, a->nbytes);
    ss_npy_free(a);
}

static void parse_header(const uint8_t *data, size_t size)
{
    if (size < 10)
        return;
    ss_npy_header h;
    const char *why = NULL;
    int rc = ss_npy_parse_header((const char *)data + 10, size - 10, &h, &why);
    if (rc == 0) {
        if (h.ndim < 0 || h.ndim > SS_NPY_MAX_DIMS)
            abort();
    } else if (!why || !*why) {
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *path = fuzz_file_put(data, size, ".npy");
    read_file(path);
    parse_header(data, size);
    return 0;
}
