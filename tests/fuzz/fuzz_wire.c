/* fuzz_wire -- Request/Response unpack checks shared by the wire harnesses. */
#include "fuzz_wire.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "statesaver.pb-c.h"

ProtobufCAllocator *fuzz_request_allocator(void)
{
    return NULL;
}

/* pack(msg) into a fresh buffer; checks the size agreement. */
static uint8_t *pack_checked(const ProtobufCMessage *msg, size_t *len)
{
    size_t n = protobuf_c_message_get_packed_size(msg);
    uint8_t *buf = malloc(n ? n : 1);
    if (!buf)
        abort();
    if (protobuf_c_message_pack(msg, buf) != n)
        abort();
    *len = n;
    return buf;
}

/* True when m or any message inside it kept unknown fields. protobuf-c
 * keeps them verbatim, including ones it would not accept again (a
 * non-canonical tag of field 0), so the round trip below only holds for
 * messages without them. The server never re-packs a received message. */
static bool has_unknown(const ProtobufCMessage *m)
{
    if (!m)
        return false;
    if (m->n_unknown_fields)
        return true;
    const ProtobufCMessageDescriptor *d = m->descriptor;
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        if (f->type != PROTOBUF_C_TYPE_MESSAGE)
            continue;
        const char *base = (const char *)m;
        if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            size_t n = *(const size_t *)(base + f->quantifier_offset);
            ProtobufCMessage *const *arr =
                *(ProtobufCMessage *const *const *)(base + f->offset);
            for (size_t k = 0; k < n; k++)
                if (has_unknown(arr[k]))
                    return true;
            continue;
        }
        if ((f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) &&
            *(const uint32_t *)(base + f->quantifier_offset) != f->id)
            continue;
        if (has_unknown(*(ProtobufCMessage *const *)(base + f->offset)))
            return true;
    }
    return false;
}

/* unpack x; if it decodes (and kept no unknown fields), y = pack(x'),
 * z = pack(unpack(y)): y == z. */
static void round_trip(const ProtobufCMessageDescriptor *desc,
                       ProtobufCAllocator *alloc, const uint8_t *payload,
                       size_t len)
{
    ProtobufCMessage *m = protobuf_c_message_unpack(desc, alloc, len, payload);
    if (!m)
        return;
    if (has_unknown(m)) {
        protobuf_c_message_free_unpacked(m, alloc);
        return;
    }
    size_t ylen = 0, zlen = 0;
    uint8_t *y = pack_checked(m, &ylen);
    ProtobufCMessage *m2 = protobuf_c_message_unpack(desc, alloc, ylen, y);
    if (!m2)
        abort(); /* what we packed does not unpack */
    uint8_t *z = pack_checked(m2, &zlen);
    if (ylen != zlen || memcmp(y, z, ylen) != 0)
        abort(); /* packing is not stable */
    free(z);
    free(y);
    protobuf_c_message_free_unpacked(m2, alloc);
    protobuf_c_message_free_unpacked(m, alloc);
}

void fuzz_wire_request(const uint8_t *payload, size_t len)
{
    round_trip(&statesaver__v1__request__descriptor, fuzz_request_allocator(),
               payload, len);
}

void fuzz_wire_response(const uint8_t *payload, size_t len)
{
    round_trip(&statesaver__v1__response__descriptor, NULL, payload, len);
}
