/* msg_utf8 -- every proto3 `string` field of a decoded message is UTF-8.
 *
 * protobuf-c does not check that string fields hold UTF-8, but proto3
 * requires it and other clients (Python's protobuf) refuse to decode a
 * message that breaks it: one stored name that is not UTF-8 would break
 * every later reply that carries it. The server runs this once on every
 * decoded Request, before any handler, walking the message through its
 * descriptors (nested messages, repeated fields and the set member of a
 * oneof included), so no handler can forget a field.
 *
 * Strict UTF-8 (RFC 3629): no overlong forms, no surrogates, nothing above
 * U+10FFFF.
 */
#ifndef SS_MSG_UTF8_H
#define SS_MSG_UTF8_H

#include <stdbool.h>
#include <stddef.h>

#include <protobuf-c/protobuf-c.h>

/* True when s[0..len) is valid UTF-8. */
bool ss_utf8_valid(const char *s, size_t len);

/* Check every string field of m. Returns true when all are valid; else
 * false with the first bad field's path written to path (NUL-terminated,
 * e.g. "declare.states[1].name"; truncated to size). */
bool ss_msg_utf8_check(const ProtobufCMessage *m, char *path, size_t size);

#endif
