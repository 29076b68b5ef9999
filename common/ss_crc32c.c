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

#define CRC_LONG 8192u  /* bytes per lane of the long 3-lane loop */
#define CRC_SHORT 256u  /* bytes per lane of the short 3-lane loop */
static uint32_t g_shift_long[4][256];  /* shift over CRC_LONG zero bytes */
static uint32_t g_shift_short[4][256]; /* shift over CRC_SHORT zero bytes */
static void shift_table(uint32_t t[4][256], size_t bytes);

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
    shift_table(g_shift_long, CRC_LONG);
    shift_table(g_shift_short, CRC_SHORT);
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

/* ---- shifting a CRC over zero bytes (to combine independent blocks) ----
 * CRC-32C is linear over GF(2): the register after a block B that began
 * from register r equals shift(r, |B|) ^ crc_of_B_from_0, where shift(r, n)
 * is the register after n zero bytes. shift is a 32x32 bit matrix; for the
 * two fixed block lengths the hardware path uses, it is tabulated per byte
 * of r (4 x 256 entries), so a shift costs four lookups. */


/* mat (32 columns) times vec over GF(2). */
static uint32_t gf2_times(const uint32_t mat[32], uint32_t vec)
{
    uint32_t sum = 0;
    for (int i = 0; vec; i++, vec >>= 1)
        if (vec & 1)
            sum ^= mat[i];
    return sum;
}

/* out = m * m. */
static void gf2_square(uint32_t out[32], const uint32_t m[32])
{
    for (int i = 0; i < 32; i++)
        out[i] = gf2_times(m, m[i]);
}

/* The matrix that moves a register over `bytes` zero bytes (bytes a power
 * of two, >= 1). */
static void shift_matrix(uint32_t out[32], size_t bytes)
{
    uint32_t a[32], b[32];
    /* One zero bit: shift right, xor the polynomial when bit 0 falls out. */
    a[0] = SS_CRC32C_POLY;
    for (int i = 1; i < 32; i++)
        a[i] = 1u << (i - 1);
    /* Square three times: 2, 4, 8 bits = one byte. */
    gf2_square(b, a);
    gf2_square(a, b);
    gf2_square(b, a);
    memcpy(a, b, sizeof a);
    for (size_t n = 1; n < bytes; n <<= 1) {
        gf2_square(b, a);
        memcpy(a, b, sizeof a);
    }
    memcpy(out, a, sizeof a);
}

static void shift_table(uint32_t t[4][256], size_t bytes)
{
    uint32_t m[32];
    shift_matrix(m, bytes);
    for (uint32_t n = 0; n < 256; n++)
        for (int k = 0; k < 4; k++)
            t[k][n] = gf2_times(m, n << (8 * k));
}

static uint32_t shift(const uint32_t t[4][256], uint32_t crc)
{
    return t[0][crc & 0xff] ^ t[1][(crc >> 8) & 0xff] ^ t[2][(crc >> 16) & 0xff] ^
           t[3][crc >> 24];
}

#if defined(__x86_64__)
/* Three independent crc32 chains in flight (the instruction's latency is
 * three times its throughput), over three consecutive lanes of `lane`
 * bytes each, combined with the shift tables. */
__attribute__((target("sse4.2")))
static uint64_t crc32c_lanes(uint64_t c0, const uint8_t **pp, size_t *lenp, size_t lane,
                             const uint32_t t[4][256])
{
    const uint8_t *p = *pp;
    size_t len = *lenp;
    while (len >= 3 * lane) {
        uint64_t c1 = 0, c2 = 0;
        for (size_t i = 0; i < lane; i += 8) {
            uint64_t w0, w1, w2;
            memcpy(&w0, p + i, 8);
            memcpy(&w1, p + lane + i, 8);
            memcpy(&w2, p + 2 * lane + i, 8);
            c0 = __builtin_ia32_crc32di(c0, w0);
            c1 = __builtin_ia32_crc32di(c1, w1);
            c2 = __builtin_ia32_crc32di(c2, w2);
        }
        c0 = shift(t, (uint32_t)c0) ^ (uint32_t)c1;
        c0 = shift(t, (uint32_t)c0) ^ (uint32_t)c2;
        p += 3 * lane;
        len -= 3 * lane;
    }
    *pp = p;
    *lenp = len;
    return c0;
}

__attribute__((target("sse4.2")))
static uint32_t crc32c_hw(uint32_t crc, const uint8_t *p, size_t len)
{
    uint64_t c = crc;
    c = crc32c_lanes(c, &p, &len, CRC_LONG, g_shift_long);
    c = crc32c_lanes(c, &p, &len, CRC_SHORT, g_shift_short);
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

uint32_t ss_crc32c_portable(uint32_t crc, const void *buf, size_t len)
{
    pthread_once(&g_once, crc32c_init);
    return ~crc32c_table(~crc, buf, len);
}

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
