/* fuzz_request -- libFuzzer harness for Request unpack (and Response
 * unpack, the client's side) on one frame payload.
 *
 * The input is one payload. It is unpacked as a statesaver.v1.Request with
 * the allocator the server uses (fuzz_request_allocator(), fuzz_wire.h) and
 * round-tripped; then the same bytes as a Response. ASan catches reads past
 * the payload, UBSan undefined arithmetic, libFuzzer's -rss_limit_mb and
 * -malloc_limit_mb unbounded allocation.
 */
#include <stddef.h>
#include <stdint.h>

#include "fuzz_wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_wire_request(data, size);
    fuzz_wire_response(data, size);
    return 0;
}
