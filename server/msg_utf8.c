/* msg_utf8 -- every proto3 `string` field of a decoded message is UTF-8. */
#include "msg_utf8.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>

bool ss_utf8_valid(const char *str, size_t len)
{
    const uint8_t *s = (const uint8_t *)str;
    size_t i = 0;
    while (i < len) {
        uint8_t c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t n;
        uint32_t min, cp;
        if ((c & 0xe0) == 0xc0) {
            n = 1, min = 0x80, cp = c & 0x1f;
        } else if ((c & 0xf0) == 0xe0) {
            n = 2, min = 0x800, cp = c & 0x0f;
        } else if ((c & 0xf8) == 0xf0) {
            n = 3, min = 0x10000, cp = c & 0x07;
        } else {
            return false; /* continuation byte or 0xf8..0xff first */
        }
        if (len - i - 1 < n)
            return false;
        for (size_t k = 1; k <= n; k++) {
            if ((s[i + k] & 0xc0) != 0x80)
                return false;
            cp = (cp << 6) | (s[i + k] & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return false;
        i += n + 1;
    }
    return true;
}

/* Append ".name" or "name" (and "[i]" when i >= 0) to path at *o. */
static void path_push(char *path, size_t size, size_t *o, const char *name,
                      long i)
{
    if (!path || *o + 1 >= size)
        return;
    int n = i >= 0 ? snprintf(path + *o, size - *o, "%s%s[%ld]",
                              *o ? "." : "", name, i)
                   : snprintf(path + *o, size - *o, "%s%s", *o ? "." : "",
                              name);
    if (n > 0)
        *o = *o + (size_t)n < size ? *o + (size_t)n : size - 1;
}

static bool check_msg(const ProtobufCMessage *m, char *path, size_t size,
                      size_t o);

/* One value of field f (a string or a message): valid? */
static bool check_value(const ProtobufCFieldDescriptor *f, const void *value,
                        long index, char *path, size_t size, size_t o)
{
    if (f->type == PROTOBUF_C_TYPE_STRING) {
        const char *s = *(const char *const *)value;
        if (!s || ss_utf8_valid(s, strlen(s)))
            return true;
        path_push(path, size, &o, f->name, index);
        return false;
    }
    const ProtobufCMessage *sub = *(const ProtobufCMessage *const *)value;
    if (!sub)
        return true;
    path_push(path, size, &o, f->name, index);
    return check_msg(sub, path, size, o);
}

static bool check_msg(const ProtobufCMessage *m, char *path, size_t size,
                      size_t o)
{
    const ProtobufCMessageDescriptor *d = m->descriptor;
    const char *base = (const char *)m;
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        if (f->type != PROTOBUF_C_TYPE_STRING &&
            f->type != PROTOBUF_C_TYPE_MESSAGE)
            continue;
        if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
            uint32_t which = *(const uint32_t *)(base + f->quantifier_offset);
            if (which != f->id)
                continue;
        }
        if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            size_t n = *(const size_t *)(base + f->quantifier_offset);
            const char *arr = *(const char *const *)(base + f->offset);
            for (size_t k = 0; k < n; k++)
                if (!check_value(f, arr + k * sizeof(void *), (long)k, path,
                                 size, o))
                    return false;
            continue;
        }
        if (!check_value(f, base + f->offset, -1, path, size, o))
            return false;
    }
    return true;
}

bool ss_msg_utf8_check(const ProtobufCMessage *m, char *path, size_t size)
{
    if (size == 0)
        return check_msg(m, NULL, 0, 0);
    path[0] = '\0';
    return check_msg(m, path, size, 0);
}
