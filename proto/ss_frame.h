/* ss_frame -- length-prefixed framing of protobuf messages.
 *
 * A frame is a 4-byte unsigned big-endian length N followed by N bytes of
 * payload. The decoder never allocates: it only tells whether a whole frame
 * is present at the front of a buffer, so the caller can check the length
 * against its limit before buffering the body.
 */
#ifndef SS_FRAME_H
#define SS_FRAME_H

#include <stddef.h>
#include <stdint.h>

#define SS_FRAME_HEADER 4u
/* Default upper bound on a frame's payload; every program has a flag. */
#define SS_FRAME_MAX_DEFAULT (64u * 1024u * 1024u)

enum {
    SS_FRAME_OK = 0,        /* a whole frame is present */
    SS_FRAME_NEED_MORE = 1, /* not enough bytes yet; nothing consumed */
    /* negative: SS_ERR_TOO_BIG when the length exceeds max */
};

/* Look at buf[0..len). On SS_FRAME_OK, *payload points into buf at the
 * payload, *payload_len is its length and *consumed is the whole frame's
 * size (header + payload). On SS_FRAME_NEED_MORE, *need (if not NULL) is the
 * total bytes required to make progress (header, or header + payload; the
 * length is checked against max first). Returns SS_ERR_TOO_BIG when the
 * declared length exceeds max. Pointers stay valid as long as buf does. */
int ss_frame_decode(const uint8_t *buf, size_t len, size_t max,
                    const uint8_t **payload, size_t *payload_len,
                    size_t *consumed, size_t *need);

/* Write the 4-byte header for a payload of n bytes into out. */
void ss_frame_put_header(uint8_t out[SS_FRAME_HEADER], uint32_t n);

#endif
