/* wal_records -- encoding of the write-ahead log's OPS records. */
#include "wal_records.h"

#include <stdlib.h>
#include <string.h>

#include "ss_error.h"

/* Largest op (header, names, key and value) a record may hold; the log
 * refuses payloads beyond its own limit (wal.h SS_WAL_RECORD_MAX). */
#define OP_MAX ((size_t)256u << 20)

static void le32_put(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t le32_get(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
           (uint32_t)p[3] << 24;
}

int ss_walrec_add(ss_walrec_buf *b, int kind, const char *db, size_t db_len,
                  const void *key, size_t klen, const void *val, size_t vlen)
{
    if (db_len > 255 || klen > UINT32_MAX || vlen > UINT32_MAX ||
        klen + vlen > OP_MAX - SS_WALREC_HDR - SS_WALREC_OP_HDR - 255)
        return SS_ERR_TOO_BIG;
    size_t need = SS_WALREC_OP_HDR + db_len + klen + vlen;
    if (b->cap - b->len < need) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap - b->len < need)
            cap *= 2;
        uint8_t *d = realloc(b->data, cap);
        if (!d)
            return SS_ERR_NOMEM;
        b->data = d;
        b->cap = cap;
    }
    uint8_t *p = b->data + b->len;
    p[0] = (uint8_t)kind;
    p[1] = (uint8_t)db_len;
    le32_put(p + 2, (uint32_t)klen);
    le32_put(p + 6, (uint32_t)vlen);
    p += SS_WALREC_OP_HDR;
    if (db_len)
        memcpy(p, db, db_len);
    p += db_len;
    if (klen)
        memcpy(p, key, klen);
    p += klen;
    if (vlen)
        memcpy(p, val, vlen);
    b->len += need;
    b->n_ops++;
    return 0;
}

void ss_walrec_truncate(ss_walrec_buf *b, size_t len, size_t n_ops)
{
    if (len < b->len) {
        b->len = len;
        b->n_ops = n_ops;
    }
}

void ss_walrec_buf_free(ss_walrec_buf *b)
{
    if (!b)
        return;
    free(b->data);
    b->data = NULL;
    b->len = b->cap = b->n_ops = 0;
}

size_t ss_walrec_op_size(const uint8_t *p, size_t left)
{
    if (left < SS_WALREC_OP_HDR)
        return 0;
    uint64_t n = (uint64_t)SS_WALREC_OP_HDR + p[1] + le32_get(p + 2) +
                 le32_get(p + 6);
    if ((p[0] != SS_WALOP_PUT && p[0] != SS_WALOP_DEL) || n > left)
        return 0;
    return (size_t)n;
}

int ss_walrec_parse_hdr(const uint8_t *payload, size_t len, unsigned *flags,
                        uint32_t *n_ops)
{
    if (len < SS_WALREC_HDR || payload[0] != SS_WALREC_VERSION ||
        (payload[1] & ~(SS_WALREC_FIRST | SS_WALREC_LAST)) != 0)
        return SS_ERR_FORMAT;
    *flags = payload[1];
    *n_ops = le32_get(payload + 4);
    return 0;
}

int ss_walrec_next(const uint8_t *body, size_t len, size_t *pos,
                   ss_walrec_op *op)
{
    if (*pos == len)
        return 0;
    const uint8_t *p = body + *pos;
    size_t n = ss_walrec_op_size(p, len - *pos);
    if (n == 0)
        return SS_ERR_FORMAT;
    op->kind = p[0];
    op->db_len = p[1];
    op->klen = le32_get(p + 2);
    op->vlen = le32_get(p + 6);
    op->db = (const char *)p + SS_WALREC_OP_HDR;
    op->key = p + SS_WALREC_OP_HDR + op->db_len;
    op->val = op->key + op->klen;
    if (op->kind == SS_WALOP_DEL && op->vlen != 0)
        return SS_ERR_FORMAT;
    *pos += n;
    return 1;
}

void ss_walrec_put_hdr(uint8_t hdr[SS_WALREC_HDR], unsigned flags,
                       uint32_t n_ops)
{
    hdr[0] = SS_WALREC_VERSION;
    hdr[1] = (uint8_t)flags;
    hdr[2] = hdr[3] = 0;
    le32_put(hdr + 4, n_ops);
}
