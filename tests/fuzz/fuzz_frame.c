/* fuzz_frame -- libFuzzer harness for the frame decoder (proto/ss_frame.h)
 * on a byte stream as a connection sees it.
 *
 * The input is the stream. It is decoded twice: once whole, and once fed in
 * chunks whose sizes come from the stream's own bytes (as reads of any size
 * would deliver it), the way conn.c buffers a connection. Both must yield
 * the same frames and the same final verdict; every OK result must point
 * inside the buffer with consumed == header + payload; NEED_MORE must ask
 * for more than is there. Each frame's payload then goes through Request
 * unpack exactly as the server does (fuzz_wire.h).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_wire.h"
#include "ss_error.h"
#include "ss_frame.h"

/* A small frame limit so the TOO_BIG path is reached often. */
#define FUZZ_FRAME_MAX 4096u

typedef struct frame_ref {
    size_t off; /* payload offset in the stream */
    size_t len; /* payload bytes */
} frame_ref;

/* Decode data[0..size) whole. Returns the verdict (0 = clean end, 1 = need
 * more at the end, or SS_ERR_TOO_BIG) and fills frames. */
static int decode_whole(const uint8_t *data, size_t size, frame_ref *frames,
                        size_t *n_frames)
{
    size_t pos = 0;
    *n_frames = 0;
    while (pos < size) {
        const uint8_t *payload = NULL;
        size_t plen = 0, consumed = 0, need = 0;
        int rc = ss_frame_decode(data + pos, size - pos, FUZZ_FRAME_MAX,
                                 &payload, &plen, &consumed, &need);
        if (rc == SS_FRAME_NEED_MORE) {
            if (need <= size - pos)
                abort(); /* asked for no more than it had */
            return 1;
        }
        if (rc < 0) {
            if (rc != SS_ERR_TOO_BIG)
                abort();
            return rc;
        }
        if (rc != SS_FRAME_OK || consumed != SS_FRAME_HEADER + plen ||
            consumed > size - pos || payload != data + pos + SS_FRAME_HEADER ||
            plen > FUZZ_FRAME_MAX)
            abort();
        frames[*n_frames].off = pos + SS_FRAME_HEADER;
        frames[*n_frames].len = plen;
        (*n_frames)++;
        pos += consumed;
    }
    return 0;
}

/* Decode the same stream arriving in chunks into a growing buffer; compare
 * with the whole decode. */
static void decode_chunked(const uint8_t *data, size_t size,
                           const frame_ref *frames, size_t n_frames, int verdict)
{
    uint8_t *buf = malloc(size ? size : 1);
    if (!buf)
        abort();
    size_t have = 0, start = 0, seen = 0, chunk_i = 0;
    int err = 0;
    while (have < size && err == 0) {
        /* The next read: 1..16 bytes, sized by a byte of the stream. */
        size_t n = 1 + (data[chunk_i++ % size] & 15u);
        if (n > size - have)
            n = size - have;
        memcpy(buf + have, data + have, n);
        have += n;
        for (;;) {
            const uint8_t *payload = NULL;
            size_t plen = 0, consumed = 0, need = 0;
            int rc = ss_frame_decode(buf + start, have - start, FUZZ_FRAME_MAX,
                                     &payload, &plen, &consumed, &need);
            if (rc == SS_FRAME_NEED_MORE) {
                if (need <= have - start)
                    abort();
                break;
            }
            if (rc < 0) {
                err = rc;
                break;
            }
            if (seen >= n_frames || plen != frames[seen].len ||
                payload != buf + frames[seen].off ||
                memcmp(payload, data + frames[seen].off, plen) != 0)
                abort(); /* a frame the whole decode did not see */
            seen++;
            start += consumed;
        }
    }
    int got = err < 0 ? err : (start == size ? 0 : 1);
    if (seen != n_frames || got != verdict)
        abort();
    free(buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* A frame takes at least its header: size / 4 frames at most. */
    frame_ref *frames = malloc((size / SS_FRAME_HEADER + 1) * sizeof *frames);
    if (!frames)
        abort();
    size_t n = 0;
    int verdict = decode_whole(data, size, frames, &n);
    decode_chunked(data, size, frames, n, verdict);
    for (size_t i = 0; i < n; i++)
        fuzz_wire_request(data + frames[i].off, frames[i].len);
    free(frames);
    return 0;
}
