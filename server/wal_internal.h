/* wal_internal -- the log's on-disk layout and the state shared by
 * wal.c (append, write, sync, checkpoint, marker), wal_segment.c (segment
 * files and headers) and wal_replay.c (open and replay). Not for other
 * modules. Layout: docs/store-format.md, "Write-ahead log".
 */
#ifndef SS_WAL_INTERNAL_H
#define SS_WAL_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "wal.h"

#define WAL_SEG_MAGIC 0x4C575353u   /* "SSWL" little-endian, segment header */
#define WAL_SEG_VERSION 1u          /* segment and record format version */
#define WAL_SEG_HDR 64u             /* segment header bytes; records follow */
#define WAL_REC_HDR 32u             /* record header bytes; payload follows */
#define WAL_REC_MAGIC 0x5257u       /* "WR" little-endian, in every record */
#define WAL_MARKER_MAGIC 0x4B4D5353u /* "SSMK" little-endian, marker file */
#define WAL_MARKER_BYTES 24u        /* marker file size */
#define WAL_NAME_MAX 64             /* "<16 hex>.wal.tmp" and NUL fit */
#define WAL_ZERO_CHUNK (1u << 20)   /* zero-fill write size */
#define WAL_FAIL_MAX 320            /* failure reason buffer */

/* Bytes a record of len payload bytes takes: header + payload padded to 8. */
static inline uint64_t wal_rec_size(uint64_t len)
{
    return WAL_REC_HDR + ((len + 7u) & ~(uint64_t)7u);
}

static inline void wal_put16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}
static inline void wal_put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}
static inline void wal_put64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}
static inline uint16_t wal_get16(const uint8_t *p)
{
    return (uint16_t)(p[0] | (p[1] << 8));
}
static inline uint32_t wal_get32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) |
           ((uint32_t)p[3] << 24);
}
static inline uint64_t wal_get64(const uint8_t *p)
{
    return (uint64_t)wal_get32(p) | ((uint64_t)wal_get32(p + 4) << 32);
}

/* A decoded record header (see the layout in docs/store-format.md). */
typedef struct wal_rec {
    uint32_t crc;        /* CRC32C over header (crc zeroed) + payload + padding */
    uint32_t len;        /* payload bytes */
    uint64_t lsn;        /* stream position after this record */
    uint64_t synced_lsn; /* the log's durable LSN when it was appended */
    uint32_t prev_crc;   /* crc of the record before it (0: first ever) */
    uint16_t type;       /* caller's record type */
    uint16_t magic;      /* WAL_REC_MAGIC */
} wal_rec;

void wal_rec_decode(const uint8_t *p, wal_rec *r);
/* CRC of a record whose 32-byte header is at p and payload follows it:
 * over the header with its crc field zeroed, the payload and its zero
 * padding to 8 bytes. */
uint32_t wal_rec_crc(const uint8_t *p, uint32_t len);

/* A decoded segment header. */
typedef struct wal_seg_hdr {
    uint32_t crc;           /* CRC32C over the 64 bytes with crc zeroed */
    uint32_t magic;         /* WAL_SEG_MAGIC */
    uint16_t version;       /* WAL_SEG_VERSION */
    uint16_t hdr_bytes;     /* WAL_SEG_HDR */
    uint64_t seq;           /* segment sequence = file name */
    uint64_t start_lsn;     /* stream position of its first record */
    uint64_t segment_bytes; /* the file's full (preallocated) size */
} wal_seg_hdr;

void wal_seg_hdr_encode(uint8_t out[WAL_SEG_HDR], uint64_t seq,
                        uint64_t start_lsn, uint64_t segment_bytes);
/* 1: valid header; 0: not a header (zeros, bad CRC or magic); -1: a valid
 * header of an unsupported version. */
int wal_seg_hdr_decode(const uint8_t *p, size_t n, wal_seg_hdr *h);

/* One live segment (holding records of the log). */
typedef struct wal_seg {
    uint64_t seq;       /* sequence, file name */
    uint64_t start_lsn; /* stream position of its first record */
    uint64_t end_lsn;   /* stream position after its last written record */
    uint64_t size;      /* file size (preallocated) */
} wal_seg;

struct ss_wal {
    char *dir;                  /* log directory (owned copy) */
    int dirfd;                  /* open directory, for *at() and fsync */
    uint64_t seg_bytes;         /* configured segment size */
    ss_wal_sync_method sync;    /* durability method */
    wal_seg *segs;              /* live segments, oldest first; last = current */
    size_t nsegs, capsegs;      /* count and capacity of segs */
    uint64_t *spares;           /* spare segment file seqs (reusable) */
    size_t nspares, capspares;  /* count and capacity of spares */
    uint64_t max_seq;           /* highest segment seq ever named */
    int fd;                     /* current segment, -1 when none */
    uint64_t off;               /* next write offset in the current segment */
    bool hdr_pending;           /* current segment's header not yet written */
    bool fd_dirty;              /* written to fd since its last fdatasync */
    uint8_t *buf;               /* buffered records (encoded) */
    size_t len, cap;            /* bytes buffered, buffer capacity */
    uint64_t last_lsn;          /* last appended */
    uint64_t written_lsn;       /* last written to a segment file */
    uint64_t durable_lsn;       /* last made durable by ss_wal_sync */
    uint32_t last_crc;          /* crc of the last appended record */
    uint64_t marker;            /* first checkpoint LSN, 0 = not set */
    long fail_after;            /* SS_WAL_FAIL_SYNC_AFTER, -1 = off */
    uint64_t syncs;             /* ss_wal_sync calls that had work */
    char failed[WAL_FAIL_MAX];  /* sticky failure reason, "" = healthy */
};

/* "<16 hex digits>.wal" into out (WAL_NAME_MAX bytes). */
void wal_seg_name(char *out, uint64_t seq);
/* Record the sticky failure (first reason wins); returns SS_ERR_IO. */
int wal_fail(ss_wal *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* fsync the log directory. */
int wal_dir_sync(ss_wal *w);
/* Write zeros to [from, to) of fd. 0 or -errno. */
int wal_zero_range(int fd, uint64_t from, uint64_t to);
/* Create segment file seq of size bytes, preallocated and zero-filled,
 * synced, under a temporary name renamed into place, dir fsynced.
 * 0 or -errno. */
int wal_seg_create(ss_wal *w, uint64_t seq, uint64_t size);
/* Open segment seq for writing (O_DSYNC per w->sync). fd or -errno. */
int wal_seg_open_write(ss_wal *w, uint64_t seq);
/* Make segment seq+start the current one (w->segs grows), taking a spare
 * or creating a file; size is the file size it needs. 0 or SS_ERR_*
 * (sticky on I/O errors). Syncs and closes the previous current segment. */
int wal_activate(ss_wal *w, uint64_t start_lsn, uint64_t size);
/* Recycle or delete live segments (never the current one unless all) whose
 * records are all <= lsn; fsyncs the directory. */
int wal_recycle(ss_wal *w, uint64_t lsn, bool all);
int wal_spare_add(ss_wal *w, uint64_t seq);
int wal_seg_push(ss_wal *w, const wal_seg *s);
/* Read the marker file into w->marker; SS_ERR_FORMAT with msg if damaged. */
int wal_marker_load(ss_wal *w, char *msg, size_t msgsz);

#endif
