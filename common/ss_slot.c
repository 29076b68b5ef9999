/* ss_slot -- CRC16 hash slots with {tag} hash tags (see ss_slot.h). */
#include "ss_slot.h"

#include <string.h>

/* Table-driven CRC16-CCITT; the table is built once from the polynomial
 * (256 entries, computed on first use: no hand-copied table to mistype). */
static uint16_t crc_table[256];
static int crc_ready;

static void crc_init(void)
{
    for (unsigned i = 0; i < 256; i++) {
        uint16_t c = (uint16_t)(i << 8);
        for (int b = 0; b < 8; b++)
            c = (c & 0x8000u) ? (uint16_t)((c << 1) ^ 0x1021u) : (uint16_t)(c << 1);
        crc_table[i] = c;
    }
    __atomic_store_n(&crc_ready, 1, __ATOMIC_RELEASE);
}

uint16_t ss_slot_crc16(const void *buf, size_t len)
{
    /* Racing first callers compute the same table: harmless. */
    if (!__atomic_load_n(&crc_ready, __ATOMIC_ACQUIRE))
        crc_init();
    const uint8_t *p = buf;
    uint16_t crc = 0;
    for (size_t i = 0; i < len; i++)
        crc = (uint16_t)((crc << 8) ^ crc_table[((crc >> 8) ^ p[i]) & 0xffu]);
    return crc;
}

unsigned ss_slot_of(const void *key, size_t len)
{
    const uint8_t *k = key;
    const uint8_t *open = len ? memchr(k, '{', len) : NULL;
    if (open) {
        size_t start = (size_t)(open - k) + 1;
        const uint8_t *close = start < len ? memchr(k + start, '}', len - start) : NULL;
        if (close && close > k + start)
            return ss_slot_crc16(k + start, (size_t)(close - (k + start))) & (SS_SLOT_COUNT - 1);
    }
    return ss_slot_crc16(k, len) & (SS_SLOT_COUNT - 1);
}
