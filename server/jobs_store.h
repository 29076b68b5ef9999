/* jobs_store -- persistent job records of the queue in the store's LMDB env.
 *
 * One named database `jobs` in the same environment as the store:
 *   jobs   be64 job id -> job record (format below, docs/jobs.md)
 * Ids are assigned by the loop thread, increasing; the in-memory index
 * (jobs.c) maps (saver, key, segment) to an id, so the database is only
 * scanned at startup. A record keeps the segment's inputs until it is
 * collected, its outputs once done, and for a last segment the final states
 * (so they survive the deletion of the sequence record by a final save).
 *
 * Record (all integers little-endian), 64-byte header then the blobs:
 *   u8 version(1) u8 state u8 last u8 n_final
 *   u32 length u32 attempts u32 in_rows u32 in_cols u32 out_rows u32 out_cols
 *   u16 saver_len u16 key_len u32 reason_len u32 ext_len
 *   u64 segment u64 submit_ms u64 done_ms
 *   saver, key, reason, inputs (float32 in_rows*in_cols), outputs (float32
 *   out_rows*out_cols), n_final * {u16 name_len u8 dtype u8 rank
 *   i64 dims[rank] u64 nbytes, name, data}, ext (ext_len bytes)
 * ext_len was a reserved zero before the training fields, so every older
 * record decodes with no extension. The extension (training: named
 * sequences, non-float inputs, per-sequence initial states, total_length,
 * sequence_count) is opaque here; its format is in jobs_train.c.
 *
 * A context record (version byte SS_JOB_CTX_VERSION) has the same header
 * with state 0 and only saver, key and ext (the sequence's context): one
 * per sequence, not per segment (docs/training.md).
 *
 * Threads: decode/encode are pure. ss_jobs_db_create runs before the
 * writer starts; ss_jobs_db_open and ss_jobs_db_scan on the opening thread
 * before any op; get/put/del run in the writer's
 * transaction (writer thread) or, for get, in a read transaction.
 */
#ifndef SS_JOBS_STORE_H
#define SS_JOBS_STORE_H

#include <lmdb.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "store.h"

/* Persisted states (numbers match SegmentState in the schema). */
enum {
    SS_JOB_QUEUED = 1,
    SS_JOB_DONE = 3,
    SS_JOB_FAILED = 4,
};

#define SS_JOB_REC_VERSION 1u
#define SS_JOB_CTX_VERSION 2u /* a sequence's context record */
#define SS_JOB_REC_HEADER 64u
#define SS_JOB_REASON_MAX 1024u /* bytes of a stored failure reason (fixed) */

/* One final state kept in a done last-segment record. */
typedef struct ss_job_tensor {
    const char *name;     /* not NUL-terminated in a decoded record */
    size_t name_len;      /* bytes of name */
    int dtype;            /* Statesaver__V1__DType */
    size_t rank;          /* dims used */
    int64_t dims[SS_TENSOR_MAX_RANK]; /* per-sequence shape */
    const void *data;     /* nbytes */
    size_t nbytes;        /* bytes of data */
} ss_job_tensor;

/* A job record, decoded (borrowing the value's memory) or to encode
 * (borrowing the caller's buffers). */
typedef struct ss_job_rec {
    int state;             /* SS_JOB_* */
    bool last;             /* last segment of its sequence */
    uint32_t length;       /* real rows of inputs */
    uint32_t attempts;     /* failed or expired attempts so far */
    uint64_t segment;      /* segment number */
    uint64_t submit_ms;    /* wall clock at submit */
    uint64_t done_ms;      /* wall clock when done/failed, else 0 */
    ss_bytes saver;        /* saver name */
    ss_bytes key;          /* sequence key */
    ss_bytes reason;       /* failure reason (empty unless failed/retried) */
    uint32_t in_rows;      /* T */
    uint32_t in_cols;      /* input size */
    const void *inputs;    /* float32 in_rows * in_cols */
    uint32_t out_rows;     /* T once done, else 0 */
    uint32_t out_cols;     /* output size once done, else 0 */
    const void *outputs;   /* float32 out_rows * out_cols, or NULL */
    size_t n_final;        /* final states stored (last segment, done) */
    const uint8_t *final_blob; /* decoded: encoded final states (see next) */
    size_t final_len;      /* decoded: bytes of final_blob */
    const ss_job_tensor *final; /* encode: n_final tensors to store */
    bool is_ctx;           /* a context record (SS_JOB_CTX_VERSION) */
    const uint8_t *ext;    /* training extension blob, or NULL */
    size_t ext_len;        /* bytes of ext (0: none, every older record) */
} ss_job_rec;

/* Encoded size of rec, or 0 if a field exceeds the format's widths. */
size_t ss_job_rec_size(const ss_job_rec *rec);
/* Encode rec into buf (ss_job_rec_size bytes). */
void ss_job_rec_encode(const ss_job_rec *rec, uint8_t *buf);
/* Decode buf (len bytes) into rec, which then borrows buf. Checks every
 * length against len: SS_ERR_FORMAT on any inconsistency. */
int ss_job_rec_decode(const uint8_t *buf, size_t len, ss_job_rec *rec);
/* Iterate the final states of a decoded record: *pos starts at 0; fills t
 * (borrowing the record) and returns 1, or 0 at the end, or SS_ERR_FORMAT. */
int ss_job_rec_final_next(const ss_job_rec *rec, size_t *pos, ss_job_tensor *t);

/* Create the `jobs` database if missing, with a short write transaction of
 * its own: call before ss_writer_start, as store.h requires of any module
 * keeping a database in the store's environment. */
int ss_jobs_db_create(MDB_env *env, char msg[SS_STORE_MSG]);
/* Open the existing `jobs` database with a read-only transaction (no write
 * transaction: safe while the writer runs). SS_ERR_NOT_FOUND if it was
 * never created. */
int ss_jobs_db_open(MDB_env *env, MDB_dbi *dbi, char msg[SS_STORE_MSG]);

/* Read every record in id order (one read transaction); cb gets borrowed
 * records valid during the call. A record that does not decode is logged
 * and skipped. *max_id receives the largest id seen (0 if none). */
typedef int (*ss_jobs_scan_cb)(void *arg, uint64_t id, const ss_job_rec *rec);
int ss_jobs_db_scan(MDB_env *env, MDB_dbi dbi, ss_jobs_scan_cb cb, void *arg,
                    uint64_t *max_id, char msg[SS_STORE_MSG]);

/* A read transaction for ss_jobs_db_get on the loop thread (Lease and
 * Await replies borrow record memory until it ends). read_end accepts
 * NULL. */
int ss_jobs_db_read_begin(MDB_env *env, MDB_txn **txn, char msg[SS_STORE_MSG]);
void ss_jobs_db_read_end(MDB_txn *txn);

/* Record id in txn: SS_ERR_NOT_FOUND when absent; rec borrows the value
 * (valid until the transaction ends or writes). */
int ss_jobs_db_get(MDB_txn *txn, MDB_dbi dbi, uint64_t id, ss_job_rec *rec,
                   char msg[SS_STORE_MSG]);
/* Write rec under id (replaces). rec must not borrow this db's pages:
 * encode copies first, so passing a record decoded from the same txn is
 * safe. */
int ss_jobs_db_put(MDB_txn *txn, MDB_dbi dbi, uint64_t id, const ss_job_rec *rec,
                   char msg[SS_STORE_MSG]);
/* Delete id; absent is not an error. */
int ss_jobs_db_del(MDB_txn *txn, MDB_dbi dbi, uint64_t id, char msg[SS_STORE_MSG]);

#endif
