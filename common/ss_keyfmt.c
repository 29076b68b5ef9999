/* ss_keyfmt -- printable form of a binary key (see ss_keyfmt.h). */
#include "ss_keyfmt.h"

#include <stdint.h>
#include <string.h>

static int plain(uint8_t c)
{
    return c >= 0x20 && c < 0x7f && c != '\\' && c != '\'';
}

size_t ss_keyfmt_size(size_t len)
{
    return len > (SIZE_MAX - 1) / 4 ? SIZE_MAX : len * 4 + 1;
}

const char *ss_keyfmt(char *buf, size_t size, const void *key, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    const uint8_t *k = key;
    size_t o = 0;
    if (size == 0)
        return buf;
    size_t full = 1;
    for (size_t i = 0; i < len && full <= size; i++)
        full += plain(k[i]) ? 1 : 4;
    /* When the whole form does not fit, keep room for "..." throughout. */
    size_t reserve = full > size ? 3 : 0;
    for (size_t i = 0; i < len; i++) {
        size_t need = plain(k[i]) ? 1 : 4;
        if (o + need + reserve + 1 > size) {
            size_t dots = size - 1 - o < 3 ? size - 1 - o : 3;
            memcpy(buf + o, "...", dots);
            o += dots;
            break;
        }
        if (need == 1) {
            buf[o++] = (char)k[i];
        } else {
            buf[o++] = '\\';
            buf[o++] = 'x';
            buf[o++] = hex[k[i] >> 4];
            buf[o++] = hex[k[i] & 15];
        }
    }
    buf[o] = '\0';
    return buf;
}
