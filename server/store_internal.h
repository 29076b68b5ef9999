/* store_internal -- private helpers shared by store.c and store_schema.c.
 *
 * Not a public header: only the store's own modules include it.
 */
#ifndef SS_STORE_INTERNAL_H
#define SS_STORE_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "store.h"

/* Serialize s as the value of its `savers` entry: 8-byte little-endian
 * generation followed by a packed DeclareRequest. *out is malloc'ed, the
 * caller frees it. Returns 0 or SS_ERR_NOMEM. */
int ss_schema_pack(const ss_schema *s, uint64_t generation, uint8_t **out,
                   size_t *len);

/* Parse a `savers` value back into a schema (one reference) whose
 * generation is the stored one. SS_ERR_STORE with msg when corrupt. */
int ss_schema_unpack(const uint8_t *buf, size_t len, ss_schema **out,
                     char msg[SS_STORE_MSG]);

/* Describe the first difference between a and b into msg ("state 'h':
 * shape [4] vs [8]"). */
void ss_schema_diff(const ss_schema *a, const ss_schema *b, char *msg,
                    size_t size);

/* Little-endian 64-bit load/store (LMDB values are not aligned). */
uint64_t ss_le64_get(const uint8_t *p);
void ss_le64_put(uint8_t *p, uint64_t v);

#endif
