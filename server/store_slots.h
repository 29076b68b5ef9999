/* store_slots -- the store side of moving hash slots between shards: find every
 * record of a slot range (sequence records, eviction and finished markers,
 * job records with their inputs and outputs), export them as exact bytes,
 * write imported ones, delete a range, and keep the frozen-slot set in
 * LMDB (docs/cluster.md).
 *
 * A record's slot is the slot of its sequence key: the key in the DB key
 * (saver '\0' key), or for long keys the full key inside the value, or the
 * key field of a job record. Records travel as SlotRecord {db, key, value}
 * with db one of "seqs", "evicted", "finished", "jobs"; store values keep
 * their CRC32C trailer (checked on import), so they land byte for byte.
 * Job records are keyed by a shard-local id: the importer gives each a
 * fresh id (the caller's), so `key` of a "jobs" record is informative.
 * `counts` (per-saver sequence counts) is maintained by import and delete,
 * never exported; savers are declared on every shard by the clients.
 *
 * Threads: scan functions run on the loop thread in their own read
 * transaction; the *_run functions on the writer thread inside its
 * transaction (writes are logged, so they are in the WAL and durable when
 * the group commits).
 */
#ifndef SS_STORE_SLOTS_H
#define SS_STORE_SLOTS_H

#include <lmdb.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "store.h"

#define SS_STORE_SLOTS_SCAN_MAX 65536u      /* records examined per export/delete call */
#define SS_STORE_SLOTS_DELETE_DEFAULT 1000u /* records deleted per SlotDelete by default */
#define SS_STORE_SLOTS_DELETE_MAX 100000u   /* largest max_records accepted */
#define SS_STORE_SLOTS_CURSOR_MAX 600u      /* bytes of an export cursor */
#define SS_STORE_SLOTS_IMPORT_MAX 100000u   /* records in one SlotImport */

/* The databases a slot's records live in, in export order. */
typedef enum ss_store_slots_db {
    SS_STORE_SLOTS_SEQS = 0,
    SS_STORE_SLOTS_EVICTED,
    SS_STORE_SLOTS_FINISHED,
    SS_STORE_SLOTS_JOBS,
    SS_STORE_SLOTS_NDB,
} ss_store_slots_db;

/* "seqs", ... ; and back (-1 for an unknown name). */
const char *ss_store_slots_db_name(ss_store_slots_db db);
int ss_store_slots_db_from_name(const char *name);

/* One record found by a scan (borrowed from the read transaction: valid
 * during the callback). saver/key: the sequence it belongs to. */
typedef struct ss_store_slots_rec {
    ss_store_slots_db db;       /* which database */
    MDB_val dk;           /* DB key */
    MDB_val val;          /* value, exact bytes */
    ss_bytes saver;       /* saver name (not NUL-terminated) */
    ss_bytes key;         /* full sequence key */
    unsigned slot;        /* its slot */
} ss_store_slots_rec;

/* The saver and key of a job record's value (its format belongs to the
 * job queue, jobs_store.h, which this layer does not include): 0, or < 0
 * when the value does not decode. */
typedef int (*ss_store_slots_job_fn)(const void *val, size_t len, ss_bytes *saver,
                                     ss_bytes *key);

/* Return 0 to go on, 1 to stop before this record (it is not consumed:
 * the cursor points before it), < 0 to fail. */
typedef int (*ss_store_slots_scan_cb)(void *arg, const ss_store_slots_rec *r);

/* Visit records of slots first..last in (db, DB key) order, starting after
 * cursor (len 0 = the beginning), examining at most SS_STORE_SLOTS_SCAN_MAX
 * records. next/next_len receive the resume cursor (SS_STORE_SLOTS_CURSOR_MAX
 * bytes), *done whether the end was reached. jobs_dbi is the jobs
 * database. 0, SS_ERR_INVALID (bad cursor), or a store error with msg. */
int ss_store_slots_scan(ss_store *st, MDB_dbi jobs_dbi, ss_store_slots_job_fn job_fn,
                  unsigned first, unsigned last,
                  const uint8_t *cursor, size_t cursor_len, ss_store_slots_scan_cb cb,
                  void *arg, uint8_t *next, size_t *next_len, bool *done,
                  char msg[SS_STORE_MSG]);

/* One record to import. For SS_STORE_SLOTS_JOBS, job_id is the id to store it
 * under (0 = skip: the queue has it already). */
typedef struct ss_store_slots_in {
    ss_store_slots_db db;       /* target database */
    ss_bytes dk;          /* DB key (store dbs) */
    ss_bytes val;         /* exact value */
    uint64_t job_id;      /* jobs: local id, 0 = skip */
} ss_store_slots_in;

/* Check a record before import (loop thread): known db, a store value's
 * checksum, a decodable job record, the saver declared in this store;
 * *slot receives the record's slot. 0 or SS_ERR_INVALID / SS_ERR_NOT_FOUND
 * (saver) with msg. */
int ss_store_slots_check_in(ss_store *st, ss_store_slots_job_fn job_fn,
                            const ss_store_slots_in *in, unsigned *slot,
                            char msg[SS_STORE_MSG]);

/* Writer thread: write n records (unchanged ones are skipped: importing
 * twice is a no-op); *written = records that changed something. */
int ss_store_slots_import_run(ss_store_txn *txn, ss_store *st, MDB_dbi jobs_dbi,
                        size_t n, const ss_store_slots_in *in, uint64_t *written,
                        char msg[SS_STORE_MSG]);

/* One record to delete (copied DB key). */
typedef struct ss_store_slots_del {
    ss_store_slots_db db;       /* database */
    uint8_t *dk;          /* DB key (owned) */
    size_t dk_len;        /* its bytes */
} ss_store_slots_del;

/* Writer thread: delete n records (absent ones are fine), adjusting
 * counts for sequence records; *deleted = records removed. */
int ss_store_slots_delete_run(ss_store_txn *txn, ss_store *st, MDB_dbi jobs_dbi,
                        size_t n, const ss_store_slots_del *del, uint64_t *deleted,
                        char msg[SS_STORE_MSG]);

/* The frozen-slot bitmap (SS_SLOT_COUNT bits) kept in `counts` under the
 * store-private key "\0frozen_slots". load: all zero when absent (any
 * thread); put: writer thread. */
#define SS_STORE_SLOTS_BITMAP_BYTES 2048u
int ss_store_slots_frozen_load(ss_store *st, uint8_t out[SS_STORE_SLOTS_BITMAP_BYTES],
                         char msg[SS_STORE_MSG]);
int ss_store_slots_frozen_put(ss_store_txn *txn, ss_store *st,
                        const uint8_t bits[SS_STORE_SLOTS_BITMAP_BYTES],
                        char msg[SS_STORE_MSG]);

#endif
