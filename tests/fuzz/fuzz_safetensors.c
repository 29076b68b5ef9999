/* fuzz_safetensors -- libFuzzer harness for the safetensors reader
 * (worker/safetensors.h), the file every worker maps at start.
 *
 * The input is the file. When ss_st_open accepts it: every tensor's dtype
 * is known, its rank is in range, nbytes equals prod(shape) * elem_size,
 * its data is readable to the end (ASan), an F32 tensor is 4-byte aligned,
 * ss_st_find finds each tensor by name, and every metadata pair reads.
 * When it refuses, the message is not empty.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_file.h"
#include "safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *path = fuzz_file_put(data, size, ".safetensors");
    ss_st_file *f = NULL;
    char err[512] = "";
    int rc = ss_st_open(path, &f, err, sizeof err);
    if (rc != 0) {
        if (rc > 0 || f || !err[0])
            abort();
        return 0;
    }
    for (size_t i = 0; i < ss_st_count(f); i++) {
        const ss_st_tensor *t = ss_st_at(f, i);
        if (!t || !t->name || !t->dtype || t->ndim < 0 ||
            t->ndim > SS_ST_MAX_DIMS || t->elem_size == 0)
            abort();
        unsigned __int128 n = t->elem_size;
        for (int d = 0; d < t->ndim; d++) {
            if (t->shape[d] < 0)
                abort();
            n *= (unsigned __int128)t->shape[d];
        }
        if (n != t->nbytes)
            abort();
        if (strcmp(t->dtype, "F32") == 0 && ((uintptr_t)t->data & 3u))
            abort();
        if (t->nbytes)
            fuzz_touch(t->data, t->nbytes);
        const ss_st_tensor *found = ss_st_find(f, t->name);
        if (!found || strcmp(found->name, t->name) != 0)
            abort();
    }
    for (size_t i = 0; i < ss_st_meta_count(f); i++) {
        const char *k = NULL, *v = NULL;
        ss_st_meta_at(f, i, &k, &v);
        if (!k || !v)
            abort();
        fuzz_touch(k, strlen(k));
        if (ss_st_meta(f, k) == NULL)
            abort();
    }
    ss_st_close(f);
    return 0;
}
