/* fuzz_npy -- libFuzzer harness for the .npy readers: the worker's
 * (worker/npy.h, model inputs and lengths) and the CLI's (client/npy_io.h,
 * `statesaver save` and `submit` inputs), on the same bytes.
 *
 * The input is the file. When a reader accepts it: the rank is in range,
 * no dimension is negative, the element count (worker) or byte count (CLI)
 * equals the product of the shape times the element size, and the data is
 * readable to its end (ASan). When it refuses, the message is not empty.
 */
#include <stdint.h>
#include <stdlib.h>

#include "fuzz_file.h"
#include "npy.h"
#include "npy_io.h"
#include "ss_tensor.h"

static void worker_reader(const char *path)
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
    size_t es = a->dtype == SS_NPY_F32 ? 4 : a->dtype == SS_NPY_I32 ? 4
              : a->dtype == SS_NPY_I64 ? 8 : 0;
    if (es == 0 || n != a->count || ((uintptr_t)a->data & 63u))
        abort();
    if (a->count)
        fuzz_touch(a->data, a->count * es);
    ss_npy_free(a);
}

static void cli_reader(const char *path)
{
    npy_io_array a;
    char err[512] = "";
    int rc = npy_io_read(path, &a, err, sizeof err);
    if (rc != 0) {
        if (rc > 0 || !err[0])
            abort();
        npy_io_array_clear(&a);
        return;
    }
    size_t es = ss_dtype_size(a.dtype);
    if (es == 0 || a.rank > SS_TENSOR_MAX_RANK)
        abort();
    unsigned __int128 n = es;
    for (size_t d = 0; d < a.rank; d++) {
        if (a.shape[d] < 0)
            abort();
        n *= (unsigned __int128)a.shape[d];
    }
    if (n != a.nbytes || a.nbytes > NPY_IO_MAX_BYTES)
        abort();
    if (a.nbytes)
        fuzz_touch(a.data, a.nbytes);
    npy_io_array_clear(&a);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *path = fuzz_file_put(data, size, ".npy");
    worker_reader(path);
    cli_reader(path);
    return 0;
}
