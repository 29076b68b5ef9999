/* ss_slot -- hash slots of the cluster: CRC16 of a key (or of its {tag})
 * modulo 16384, the Redis Cluster key-to-slot function, so a key's slot is
 * the same in statesaver and in every Redis Cluster tool.
 *
 * Hash tags: when the key contains '{' and a later '}' with at least one
 * byte between them, only the bytes between the first '{' and the first
 * '}' after it are hashed, so "{user7}.c" and "{user7}.h" share a slot and
 * can be saved in one transaction. Keys are bytes; no NUL is implied.
 *
 * Threads: pure functions.
 */
#ifndef SS_SLOT_H
#define SS_SLOT_H

#include <stddef.h>
#include <stdint.h>

#define SS_SLOT_COUNT 16384u /* hash slots of a cluster */

/* CRC16-CCITT (XMODEM: polynomial 0x1021, initial value 0, no reflection,
 * no final xor) of buf[0..len); "123456789" gives 0x31C3. */
uint16_t ss_slot_crc16(const void *buf, size_t len);

/* The slot of a key, honouring {tag}: 0 .. SS_SLOT_COUNT-1. */
unsigned ss_slot_of(const void *key, size_t len);

#endif
