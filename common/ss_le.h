/* ss_le -- little-endian loads and stores of 16/32/64-bit integers at any
 * alignment: the one codec of every on-disk and in-record integer (store
 * records, job records, training extensions). Header-only (static inline).
 */
#ifndef SS_LE_H
#define SS_LE_H

#include <stdint.h>

static inline uint16_t ss_le16_get(const uint8_t *p)
{
    return (uint16_t)(p[0] | (p[1] << 8));
}

static inline void ss_le16_put(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

static inline uint32_t ss_le32_get(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
           (uint32_t)p[3] << 24;
}

static inline void ss_le32_put(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static inline uint64_t ss_le64_get(const uint8_t *p)
{
    return (uint64_t)ss_le32_get(p) | (uint64_t)ss_le32_get(p + 4) << 32;
}

static inline void ss_le64_put(uint8_t *p, uint64_t v)
{
    ss_le32_put(p, (uint32_t)v);
    ss_le32_put(p + 4, (uint32_t)(v >> 32));
}

#endif
