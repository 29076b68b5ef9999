/* ss_crc32c -- CRC-32C with an SSE4.2 path and a portable table path.
 *
 * Hand-written: Debian 12 packages no CRC32C library with a pkg-config
 * file (see docs/decisions.md). */
#include "ss_crc32c.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define SS_CRC32C_POLY 0x82F63B78u

static uint32_t g_table[8][256];       /* slicing-by-8 tables */
static int g_have_sse42;               /* CPU has the crc32 instruction */
static pthread_once_t g_once = PTHREAD_ONCE_INIT;

static void crc32c_init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = (c & 1) ? (c >> 1) ^ SS_CRC32C_POLY : c >> 1;
        g_table[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; i++)
        for (int t = 1; t < 8; t++)
            g_table[t][i] = (g_table[t - 1][i] >> 8) ^ g_table[0][g_table[t - 1][i] & 0xff];
#if defined(__x86_64__)
    __builtin_cpu_init();
    /* SS_CRC32C_NO_HW=1 forces the table path (tests compare both). */
    g_have_sse42 = __builtin_cpu_supports("sse4.2") && !getenv("SS_CRC32C_NO_HW");
#endif
}

static uint32_t crc32c_table(uint32_t crc, const uint8_t *p, size_t len)
{
    while (len >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        w ^= crc; /* little-endian: the low 4 bytes take the CRC */
        crc = g_table[7][w & 0xff] ^ g_table[6][(w >> 8) & 0xff] ^
              g_table[5][(w >> 16) & 0xff] ^ g_table[4][(w >> 24) & 0xff] ^
              g_table[3][(w >> 32) & 0xff] ^ g_table[2][(w >> 40) & 0xff] ^
              g_table[1][(w >> 48) & 0xff] ^ g_table[0][w >> 56];
        p += 8;
        len -= 8;
    }
    while (len--)
        crc = (crc >> 8) ^ g_table[0][(crc ^ *p++) & 0xff];
    return crc;
}

#if defined(__x86_64__)
__attribute__((target("sse4.2")))
static uint32_t crc32c_hw(uint32_t crc, const uint8_t *p, size_t len)
{
    uint64_t c = crc;
    while (len >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        c = __builtin_ia32_crc32di(c, w);
        p += 8;
        len -= 8;
    }
    uint32_t c32 = (uint32_t)c;
    while (len--)
        c32 = __builtin_ia32_crc32qi(c32, *p++);
    return c32;
}
#endif

uint32_t ss_crc32c(uint32_t crc, const void *buf, size_t len)
{
    pthread_once(&g_once, crc32c_init);
    const uint8_t *p = buf;
    crc = ~crc;
#if defined(__x86_64__)
    if (g_have_sse42)
        return ~crc32c_hw(crc, p, len);
#endif
    return ~crc32c_table(crc, p, len);
}
