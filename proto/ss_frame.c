/* ss_frame -- length-prefixed framing of protobuf messages. */
#include "ss_frame.h"
#include "ss_error.h"

int ss_frame_decode(const uint8_t *buf, size_t len, size_t max,
                    const uint8_t **payload, size_t *payload_len,
                    size_t *consumed, size_t *need)
{
    if (len < SS_FRAME_HEADER) {
        if (need)
            *need = SS_FRAME_HEADER;
        return SS_FRAME_NEED_MORE;
    }
    uint32_t n = ((uint32_t)buf[0] << 24) | ((uint32_t)buf[1] << 16) |
                 ((uint32_t)buf[2] << 8) | (uint32_t)buf[3];
    /* The limit is checked before the caller buffers the body. */
    if ((size_t)n > max)
        return SS_ERR_TOO_BIG;
    size_t total = SS_FRAME_HEADER + (size_t)n;
    if (len < total) {
        if (need)
            *need = total;
        return SS_FRAME_NEED_MORE;
    }
    *payload = buf + SS_FRAME_HEADER;
    *payload_len = n;
    *consumed = total;
    return SS_FRAME_OK;
}

void ss_frame_put_header(uint8_t out[SS_FRAME_HEADER], uint32_t n)
{
    out[0] = (uint8_t)(n >> 24);
    out[1] = (uint8_t)(n >> 16);
    out[2] = (uint8_t)(n >> 8);
    out[3] = (uint8_t)n;
}
