/* wal_records -- record types of the write-ahead log and their payloads.
 *
 * The log (wal.h) treats payloads as bytes; this module defines them. The
 * server logs at the level of the store's key-value writes: every put and
 * delete that a writer transaction makes in the LMDB environment (saves,
 * final saves, drops, declares, evictions, finished markers, counters, job
 * records: everything the store and the job queue write) is one op, and
 * the ops of one writer group (one LMDB transaction) are logged as one or
 * more OPS records, the first flagged FIRST and the last flagged LAST.
 * Replay applies a group only when its LAST record is present, in one
 * nested transaction, so a group is applied whole or not at all. Ops are
 * deterministic (the values are the exact bytes written, timestamps and
 * generations included) and idempotent (a put replaces, a delete of an
 * absent key is a no-op), so applying a record twice is harmless and a
 * replica applies exactly what the primary wrote (docs/wal.md,
 * docs/store-format.md).
 *
 * OPS payload, little-endian:
 *   u8 version (1) u8 flags (1 = FIRST, 2 = LAST) u16 reserved (0)
 *   u32 n_ops, then n_ops times:
 *   u8 kind (1 = put, 2 = delete) u8 db_len u32 key_len u32 val_len
 *   db name (db_len bytes, "" = LMDB's main database), key, value
 *   (val_len is 0 for a delete).
 *
 * Threads: pure functions; a buffer is used by one thread at a time.
 */
#ifndef SS_WAL_RECORDS_H
#define SS_WAL_RECORDS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Record types (uint16 in the log's record header). */
#define SS_WALREC_OPS 1u

#define SS_WALREC_VERSION 1u
#define SS_WALREC_FIRST 1u /* flags: first record of its group */
#define SS_WALREC_LAST 2u  /* flags: last record of its group (commit) */
#define SS_WALREC_HDR 8u   /* OPS payload header bytes */
#define SS_WALREC_OP_HDR 10u /* per-op header bytes (before the db name) */

enum { SS_WALOP_PUT = 1, SS_WALOP_DEL = 2 };

/* A growable buffer of encoded ops (the body of OPS records). */
typedef struct ss_walrec_buf {
    uint8_t *data;  /* encoded ops, malloc'ed */
    size_t len;     /* bytes used */
    size_t cap;     /* bytes allocated */
    size_t n_ops;   /* ops in data */
} ss_walrec_buf;

/* Append one op (copies db, key and value). SS_ERR_NOMEM, or
 * SS_ERR_TOO_BIG when the op alone could not fit in one record. */
int ss_walrec_add(ss_walrec_buf *b, int kind, const char *db, size_t db_len,
                  const void *key, size_t klen, const void *val, size_t vlen);
/* Drop everything after len bytes / n_ops ops (a rolled-back child). */
void ss_walrec_truncate(ss_walrec_buf *b, size_t len, size_t n_ops);
void ss_walrec_buf_free(ss_walrec_buf *b); /* frees data; accepts NULL */

/* One decoded op, borrowing the payload. */
typedef struct ss_walrec_op {
    int kind;            /* SS_WALOP_* */
    const char *db;      /* not NUL-terminated */
    size_t db_len;       /* bytes of db */
    const uint8_t *key;  /* key bytes */
    size_t klen;         /* bytes of key */
    const uint8_t *val;  /* value bytes (put) */
    size_t vlen;         /* bytes of val */
} ss_walrec_op;

/* Size of the op starting at p (left bytes available): 0 when malformed. */
size_t ss_walrec_op_size(const uint8_t *p, size_t left);
/* Parse an OPS payload header: flags and op count; SS_ERR_FORMAT. */
int ss_walrec_parse_hdr(const uint8_t *payload, size_t len, unsigned *flags,
                        uint32_t *n_ops);
/* Decode the op at *pos of an OPS body (after the header); advances *pos.
 * 1 = op decoded, 0 = end, SS_ERR_FORMAT when malformed. */
int ss_walrec_next(const uint8_t *body, size_t len, size_t *pos,
                   ss_walrec_op *op);
/* Fill an OPS payload header. */
void ss_walrec_put_hdr(uint8_t hdr[SS_WALREC_HDR], unsigned flags,
                       uint32_t n_ops);

#endif
