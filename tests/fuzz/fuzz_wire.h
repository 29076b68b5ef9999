/* fuzz_wire -- Request/Response unpack checks shared by the wire harnesses.
 *
 * fuzz_request_allocator() is the one place that chooses the
 * ProtobufCAllocator the harnesses unpack Requests with. It returns what the
 * server's dispatch passes to statesaver__v1__request__unpack: today NULL
 * (protobuf-c's plain malloc allocator). When the server gets its budgeted
 * per-request allocator, return that here (same budget as the server) and
 * both harnesses fuzz the budgeted path.
 */
#ifndef FUZZ_WIRE_H
#define FUZZ_WIRE_H

#include <protobuf-c/protobuf-c.h>
#include <stddef.h>
#include <stdint.h>

/* The allocator Request unpack uses (see above); NULL = plain malloc. */
ProtobufCAllocator *fuzz_request_allocator(void);

/* Unpack payload as a Request the way the server does; when it decodes,
 * check that pack(unpack(x)) is stable under a second round trip and that
 * get_packed_size agrees with pack. Aborts on a violation. */
void fuzz_wire_request(const uint8_t *payload, size_t len);

/* The same for a Response (what a client unpacks from a server). */
void fuzz_wire_response(const uint8_t *payload, size_t len);

#endif
