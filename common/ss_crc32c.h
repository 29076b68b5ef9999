/* ss_crc32c -- CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), the
 * checksum of stored records and log records.
 *
 * Uses the SSE4.2 crc32 instruction when the CPU has it (checked once),
 * (three chains in flight, combined by shifting over zero bytes), else a
 * slicing-by-8 table (forced with SS_CRC32C_NO_HW=1 in the
 * environment, for tests). Both give identical results. Thread-safe.
 */
#ifndef SS_CRC32C_H
#define SS_CRC32C_H

#include <stddef.h>
#include <stdint.h>

/* Extend crc (0 for a new checksum) over len bytes of buf; returns the
 * new CRC. ss_crc32c(0, "123456789", 9) == 0xE3069283. Chaining is
 * allowed: ss_crc32c(ss_crc32c(0, a, n), b, m) == CRC of a||b. */
uint32_t ss_crc32c(uint32_t crc, const void *buf, size_t len);

/* The same CRC by the portable table path only (tests compare the two). */
uint32_t ss_crc32c_portable(uint32_t crc, const void *buf, size_t len);

#endif
