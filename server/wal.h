/* wal -- the server's write-ahead log: fixed-size, preallocated, recycled
 * segment files under DATA/wal/, logical records with a CRC32C each, one
 * fdatasync (or O_DSYNC writes) per group, replay at open with torn-tail and
 * mid-log-corruption detection, and the "store holds data" marker.
 *
 * Format (byte by byte): docs/store-format.md, "Write-ahead log". Why:
 * docs/decisions.md, "Write-ahead log format".
 *
 * LSNs are byte positions in the logical record stream: a record's LSN is
 * the stream length up to and including the record (header + payload +
 * padding), so the first record's LSN is > 0, LSNs strictly increase, the
 * LSN of the next record is lsn + its size, and ss_wal_bytes_since() is a
 * subtraction. Segment headers and the unused tail of a full segment are
 * not counted. 0 means "no record".
 *
 * Threading: all functions are called from one thread at a time (the writer
 * thread, or the starting thread before the writer starts); the object is
 * not thread-safe otherwise. Record types are the caller's
 * (server/wal_records.h): payloads are bytes here.
 */
#ifndef SS_WAL_H
#define SS_WAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

typedef struct ss_wal ss_wal; /* opaque: directory, segments, buffer, state */

#define SS_WAL_SEGMENT_BYTES_DEFAULT (64u << 20) /* --wal-segment-bytes */
#define SS_WAL_SEGMENT_BYTES_MIN (64u << 10)     /* smallest segment size */
#define SS_WAL_SEGMENT_BYTES_MAX (1u << 30)      /* largest segment size */
#define SS_WAL_RECORD_MAX (256u << 20)           /* largest payload */
/* Buffered bytes after which an append first writes (without syncing)
 * what is buffered, so a group's memory stays bounded (one record larger
 * than this is still buffered whole). */
#define SS_WAL_GROUP_BYTES (16u << 20)
#define SS_WAL_SPARES 2 /* recycled segments kept for reuse; more are deleted */

typedef enum ss_wal_sync_method {
    SS_WAL_SYNC_FDATASYNC = 0, /* write() then one fdatasync per ss_wal_sync */
    SS_WAL_SYNC_ODSYNC = 1,    /* segments opened O_DSYNC, one pwrite per group */
} ss_wal_sync_method;

typedef struct ss_wal_options {
    const char *dir;         /* DATA/wal, created if missing (parent must exist) */
    uint64_t segment_bytes;  /* fixed size, preallocated, recycled; 0 = default;
                                SS_WAL_SEGMENT_BYTES_MIN..MAX */
    ss_wal_sync_method sync; /* how ss_wal_sync makes bytes durable */
    bool truncate_corrupt;   /* operator flag: cut the log at mid-log corruption
                                (logged loudly) instead of refusing to open */
} ss_wal_options;

typedef struct ss_wal_replay_stats {
    uint64_t records;             /* records handed to the callback */
    uint64_t bytes;               /* payload + header bytes replayed */
    uint64_t first_lsn, last_lsn; /* of the records handed over; 0 when none */
    double seconds;               /* wall time of the scan+apply */
    bool torn_tail;               /* the log ended in a torn/short record */
    bool truncated;               /* truncate_corrupt cut the log at corruption */
    uint64_t scanned_records;     /* valid records in the log (also <= after_lsn) */
} ss_wal_replay_stats;

/* Called for every valid record with lsn > after_lsn, in LSN order.
 * payload is valid only during the call. Return 0 or a negative code
 * (stops the replay, ss_wal_open returns it). */
typedef int (*ss_wal_record_fn)(void *arg, uint64_t lsn, uint16_t type,
                                const uint8_t *payload, size_t len);

/* Open (creating if needed) the log in o->dir and replay every record with
 * LSN > after_lsn through fn (fn may be NULL to only scan). A torn tail (bad
 * CRC, short or zeroed record at the very end of the log) ends the log: it
 * is cut off and appending continues after the last good record,
 * overwriting it. A bad record followed by a valid one that was written
 * after the bad one was durable (anywhere later, also in a later segment)
 * is corruption: returns SS_ERR_FORMAT with msg "wal: corrupt record in
 * <file> at offset <n>", unless o->truncate_corrupt (then the log is cut
 * there, everything after it is erased, and it is logged at ERROR). After
 * success, appends get LSNs after the last valid record. st (may be NULL)
 * gets the replay figures. Also reads the marker (below): a damaged marker
 * file is SS_ERR_FORMAT. On error *out is NULL and msg says why.
 * Environment (read here): SS_WAL_FAIL_SYNC_AFTER (test hook, below). */
int ss_wal_open(ss_wal **out, const ss_wal_options *o, uint64_t after_lsn,
                ss_wal_record_fn fn, void *arg, ss_wal_replay_stats *st,
                char *msg, size_t msgsz);

/* Buffer one record (header: LSN, type, length, CRC32C over header and
 * payload). *lsn (may be NULL) gets its LSN. Nothing is durable until
 * ss_wal_sync. The payload is copied. SS_ERR_TOO_BIG past
 * SS_WAL_RECORD_MAX; SS_ERR_IO after a failed write/sync (sticky);
 * SS_ERR_NOMEM. len 0 is allowed. */
int ss_wal_append(ss_wal *w, uint16_t type, const void *payload, size_t len,
                  uint64_t *lsn);
/* Same with the payload gathered from n pieces (no copy by the caller). */
int ss_wal_appendv(ss_wal *w, uint16_t type, const struct iovec *iov, int n,
                   uint64_t *lsn);

/* Write everything buffered and make it durable (one fdatasync, or O_DSYNC
 * writes). Moves to the next (recycled or preallocated) segment when one is
 * full (syncing the full one first); a record never spans two segments.
 * After ANY write/sync failure the log is failed for good: this and every
 * later append/flush/sync/checkpoint return SS_ERR_IO and ss_wal_failed()
 * gives the reason; never retried (fsyncgate). A sync with nothing written
 * since the last one does nothing and returns 0 (or the sticky error). */
int ss_wal_sync(ss_wal *w);
/* Write buffered bytes without syncing (for --sync off); durable at the
 * next ss_wal_sync. With SS_WAL_SYNC_ODSYNC writes are durable anyway. */
int ss_wal_flush(ss_wal *w);

/* Everything with LSN <= lsn is in a synced LMDB: segments whose records
 * are all <= lsn (never the one being written) are recycled: renamed to a
 * future segment name for reuse (up to SS_WAL_SPARES kept), deleted beyond
 * that or when their size is not the configured one. The directory is
 * fsynced. lsn may be past the durable LSN (LMDB synced after a flush):
 * a segment that is not the current one was synced when it was left.
 * SS_ERR_IO when the log has failed or a rename/unlink fails. */
int ss_wal_checkpoint(ss_wal *w, uint64_t lsn);

/* Make sure SS_WAL_SPARES zero-filled spare segments exist, so that moving
 * to the next segment does not create one on the write path (optional:
 * a missing spare is created when needed). */
int ss_wal_preallocate(ss_wal *w);

/* "This data directory holds data": the LSN of the first checkpoint, kept
 * in DATA/wal/marker (a small CRC'd file written with fsync + rename + dir
 * fsync). 0 = never set. Set once: the first call with lsn > 0 writes it,
 * later calls return 0 and change nothing. lsn 0 is SS_ERR_INVALID. */
int ss_wal_set_marker(ss_wal *w, uint64_t first_checkpoint_lsn);
uint64_t ss_wal_marker(const ss_wal *w);

uint64_t ss_wal_last_lsn(const ss_wal *w);    /* last appended LSN (0: none) */
uint64_t ss_wal_durable_lsn(const ss_wal *w); /* last synced LSN */
/* Log bytes (record headers + payloads + padding) after lsn, up to the
 * last appended record: ss_wal_last_lsn(w) - lsn, 0 when lsn is later. */
uint64_t ss_wal_bytes_since(const ss_wal *w, uint64_t lsn);
const char *ss_wal_failed(const ss_wal *w); /* NULL, or why the log failed */
uint64_t ss_wal_syncs(const ss_wal *w);     /* ss_wal_sync calls that wrote */
/* Closes the files and frees w; accepts NULL. Records appended but not
 * written (ss_wal_flush/ss_wal_sync) are dropped: sync first. */
void ss_wal_free(ss_wal *w);

/* Test hook: SS_WAL_FAIL_SYNC_AFTER=N in the environment (read at open)
 * makes the (N+1)-th ss_wal_sync that has something to sync fail with EIO
 * (after writing, in place of the fdatasync), to test the sticky failure. */

#endif
