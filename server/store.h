/* store -- LMDB-backed storage of savers, schemas and sequence states.
 *
 * Threads: exactly one writer thread calls the ss_store_* write functions,
 * always inside a transaction handed to it by the writer (writer.h). Any
 * thread may call the read functions; each read runs in its own short
 * LMDB read transaction and never waits for the writer.
 *
 * Layout (LMDB named databases, byte layouts in docs/store-format.md):
 *   savers   saver name -> generation + serialized schema
 *   seqs     saver '\0' key -> record {next_segment, updated_ms, states...}
 *   evicted  saver '\0' key -> eviction time (for NOT_FOUND after expiry)
 *   finished saver '\0' key -> segments reached by a final save, and when
 *            (so retrying that final save reports already_applied)
 *   counts   saver name -> {sequences, evicted since declare}
 * All state tensors of one sequence live in one record, so they are always
 * replaced together. Keys too long for an LMDB key (LMDB's limit is 511
 * bytes) are stored under their first bytes plus a 128-bit hash (XXH3-128),
 * with the full key inside the record; lookups always compare the full key.
 * Every value ends with a CRC32C checked on every read (format 2).
 *
 * Other modules may keep their own named databases in the same environment
 * (ss_store_env): the environment allows SS_STORE_MAX_DBS named databases
 * and the store uses SS_STORE_OWN_DBS of them. Open yours with your own
 * write transaction before ss_writer_start (mdb_dbi_open must not race
 * another transaction opening a database).
 *
 * Semantics decided here (see docs/store-format.md):
 * - The same key twice in one save batch is processed in order: the second
 *   item sees the first one's result (seg 0 then seg 1 both apply).
 * - A save of segment 0 for an evicted key starts the sequence afresh and
 *   clears the eviction marker; other segments get SS_ERR_CONFLICT whose
 *   message says the key was evicted. Drop clears markers too.
 * - A final save that deletes a record leaves a "finished" marker for the
 *   finished retention (ss_store_set_finished_retention): retrying that
 *   final save reports already_applied, a save of segment 0 starts afresh
 *   (and clears it), any other save gets SS_ERR_CONFLICT saying the
 *   sequence finished. Fetch ignores the marker (initial state,
 *   next_segment 0).
 */
#ifndef SS_STORE_H
#define SS_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ss_error.h"
#include "ss_limits.h"
#include "ss_tensor.h"

typedef struct ss_store ss_store;         /* opaque: env + database handles */
typedef struct ss_store_txn ss_store_txn; /* opaque: one write transaction */

/* Size of error messages written by store functions (always NUL-terminated). */
#define SS_STORE_MSG 256

typedef struct ss_store_options {
    const char *dir;       /* LMDB directory; created if missing */
    uint64_t map_size;     /* LMDB map size in bytes (at open, when it
                              grows: ss_store_open_growing) */
    bool sync;             /* false: MDB_NOSYNC (acks may be lost on crash) */
    unsigned max_readers;  /* LMDB reader slots (0 = LMDB default, 126) */
} ss_store_options;

/* Server default of --max-map-size: this many times --map-size. */
#define SS_STORE_MAP_GROWTH_DEFAULT 4
#define SS_STORE_MAP_GROWTH_STR "4" /* the same, for usage text */

/* Finished markers older than this are ignored by saves and deleted by
 * ss_store_evict_idle (server flag --finished-retention-ms). */
#define SS_STORE_FINISHED_RETENTION_MS_DEFAULT 3600000u /* 1 hour */

/* Named databases the environment allows / the store itself uses. */
#define SS_STORE_MAX_DBS 16
#define SS_STORE_OWN_DBS 5
/* Largest state of one sequence (sum over a schema's states), fixed. */
#define SS_STORE_STATE_BYTES_MAX (16u << 20)
/* Largest key the store accepts (longer ones get SS_ERR_INVALID); the
 * server clamps --max-key-bytes to it. */
#define SS_STORE_KEY_MAX 65535u
/* Read transactions kept for reuse (reads renew them instead of
 * allocating a reader slot each time). */
#define SS_STORE_READ_POOL 16
/* Nesting depth of ss_store_txn_child_begin. */
#define SS_STORE_TXN_DEPTH 8
/* ss_store_evict_idle examines at most this many records per evicted
 * record allowed (max * factor), resuming where the last call stopped. */
#define SS_STORE_EVICT_SCAN_FACTOR 16

/* One state of a schema. */
typedef struct ss_state_spec {
    char *name;                          /* NUL-terminated, owned by schema */
    int dtype;                           /* Statesaver__V1__DType */
    int64_t shape[SS_TENSOR_MAX_RANK];   /* per-sequence shape */
    size_t rank;                         /* dims used in shape */
    size_t nbytes;                       /* bytes of one sequence's state */
    uint8_t *initial;                    /* nbytes, or NULL for zeros */
} ss_state_spec;

/* A saver's schema. Immutable once published; shared by reference count. */
typedef struct ss_schema {
    char *saver;            /* saver name, NUL-terminated */
    ss_state_spec *states;  /* n_states specs, in declared order */
    size_t n_states;        /* number of specs */
    uint64_t idle_ttl_ms;   /* 0 = sequences never expire */
    bool keep_final;        /* keep the record after a final save */
    uint32_t max_in_flight; /* job queue: sequences leased at once, 0 = no cap */
    size_t state_bytes;     /* sum of states[i].nbytes */
    int refs;               /* reference count (atomic); use ref/unref */
    uint64_t generation;    /* set when stored: tells a redeclared saver
                               apart (0 in a schema not yet stored) */
} ss_schema;

/* A byte string borrowed from the caller. */
typedef struct ss_bytes {
    const uint8_t *data; /* not NUL-terminated */
    size_t len;          /* bytes */
} ss_bytes;

/* On-disk format written by this code (docs/store-format.md). Format 1
 * (no checksums) is migrated on open; a newer one is refused. */
#define SS_STORE_FORMAT_VERSION 2u

/* A damaged stored value (checksum mismatch): an alias of SS_ERR_STORE,
 * reported to clients as INTERNAL; the message names the saver and key. */
#define SS_STORE_ERR_CORRUPT SS_ERR_STORE

/* Open (or create) the store in opt->dir. Refuses, with a message naming
 * the file, a data.mdb of 0 bytes (a lost store, not a new one: a new
 * directory has no data.mdb) or shorter than LMDB's last used page. */
int ss_store_open(ss_store **out, const ss_store_options *opt);
/* The same, also returning the error message (logged by both). */
int ss_store_open_msg(ss_store **out, const ss_store_options *opt,
                      char msg[SS_STORE_MSG]);
/* ss_store_open_msg with a map that grows at run time from opt->map_size
 * up to max_map_size (0 or less than opt->map_size: no growth), which
 * --max-map-size sets. The address space of all of it (plus the reserve)
 * is mapped at open; the file grows with use (store_space.c). A function
 * rather than an ss_store_options field for the reason given at
 * ss_store_set_finished_retention. */
int ss_store_open_growing(ss_store **out, const ss_store_options *opt,
                          uint64_t max_map_size, char msg[SS_STORE_MSG]);
/* The --max-map-size st was opened with (its map_size when it does not
 * grow), so a caller that reopens the store keeps the same growth. */
uint64_t ss_store_max_map_size(const ss_store *st);
/* Closes the environment. Accepts NULL. No other call may be in flight. */
void ss_store_close(ss_store *st);
/* How long (ms) a final save that deleted its record stays retryable as
 * already_applied; 0 = SS_STORE_FINISHED_RETENTION_MS_DEFAULT (the value
 * after ss_store_open). Call before the writer starts (ss_writer_start):
 * the writer thread reads it without a lock. A setter rather than an
 * ss_store_options field so that positional initializers of the options
 * elsewhere keep compiling under -Wmissing-field-initializers. */
void ss_store_set_finished_retention(ss_store *st, uint64_t ms);

/* Damaged values (checksum mismatch) found by reads since open, for a
 * metric. Any thread. */
uint64_t ss_store_corrupt_records(const ss_store *st);
/* Does any declared saver have idle_ttl_ms > 0? (Any thread; from the
 * schema cache.) Not needed to keep an idle server from syncing: a sweep
 * with nothing to evict or expire changes nothing, so its commit writes
 * nothing (the writer does not count it). Note ss_store_evict_idle also
 * deletes expired finished markers of savers without a TTL. */
bool ss_store_has_ttl_savers(ss_store *st);

/* Build a schema from a DeclareRequest (validates names, dtypes, shapes,
 * initial tensors). On error returns a negative code and fills msg. The
 * result has one reference; release with ss_schema_unref. Errors are
 * SS_ERR_INVALID. An all-zero initial tensor is stored as NULL (zeros), so
 * declaring it explicitly or not gives equal schemas. */
int ss_schema_from_declare(const Statesaver__V1__DeclareRequest *req,
                           ss_schema **out, char msg[SS_STORE_MSG]);
ss_schema *ss_schema_ref(ss_schema *s);
void ss_schema_unref(ss_schema *s); /* accepts NULL; frees at zero */
/* Same name, states (name, dtype, shape, initial), ttl and keep_final;
 * generation is ignored. */
bool ss_schema_equal(const ss_schema *a, const ss_schema *b);
/* Fill a StateSpec array describing s for a reply: specs[i] borrows names,
 * shapes and initial data from s (keep s referenced while they are used);
 * tensors[i] is the storage for specs[i].initial. Both arrays hold
 * s->n_states entries. States without an initial get initial = NULL. */
void ss_schema_to_specs(const ss_schema *s, Statesaver__V1__StateSpec *specs,
                        Statesaver__V1__Tensor *tensors);

/* Look up a saver's schema (any thread). On success *out holds a new
 * reference. SS_ERR_NOT_FOUND if the saver is not declared. */
int ss_store_schema(ss_store *st, const char *saver, ss_schema **out);

/* ---- reads (any thread, own read transaction) ---- */

/* Fetch n keys. out[i] (one per schema state, in schema order) must hold
 * n * schema->states[i].nbytes bytes; row k receives key k's state, or the
 * initial state when the key has no record. next_segment[k] and
 * updated_ms[k] are filled (0 for no record). Returns SS_ERR_NOT_FOUND with
 * msg naming the key if a key was evicted by idle expiry ("key 'k' evicted
 * after idle ttl at 2026-01-02T03:04:05.678Z"), SS_ERR_NOT_FOUND if the
 * saver is no longer declared, SS_ERR_CONFLICT if it was redeclared with a
 * different schema, SS_ERR_INVALID for a key of 0 or > SS_STORE_KEY_MAX
 * bytes. All in one read snapshot. */
int ss_store_fetch(ss_store *st, const ss_schema *schema, size_t n,
                   const ss_bytes *keys, void *const *out,
                   uint64_t *next_segment, uint64_t *updated_ms,
                   char msg[SS_STORE_MSG]);

/* Only next_segment of n keys (0 when absent or evicted); for barrier
 * checks. */
int ss_store_segments(ss_store *st, const char *saver, size_t n,
                      const ss_bytes *keys, uint64_t *next_segment);

/* Counts for Stats. */
typedef struct ss_store_stats {
    uint64_t savers;     /* declared savers */
    uint64_t sequences;  /* sequence records (all savers, or one) */
    uint64_t map_size;   /* current map size: --map-size, grown at run
                            time up to --max-map-size (LMDB's map is
                            larger by a reserve for Drop: store_space.c) */
    uint64_t map_used;   /* bytes up to the last used page, free pages
                            included (may pass map_size by the reserve) */
    uint64_t evicted;    /* idle evictions since each saver was declared
                            (summed over declared savers) */
} ss_store_stats;
/* saver NULL or "" = whole store; an undeclared saver -> SS_ERR_NOT_FOUND. */
int ss_store_stats_get(ss_store *st, const char *saver, ss_store_stats *out);

/* List sequences of a saver with keys starting with prefix, after
 * start_after (exclusive; len 0 = from the beginning), at most limit
 * (0 = SS_LIST_LIMIT_DEFAULT). Calls cb for each; *more is set when entries
 * remain. Order is byte order of the key, except that keys longer than the
 * LMDB key limit sort by their first bytes then by hash (still a stable
 * order, so paging with start_after works). The key passed to cb points
 * into the map: valid only during the call. A non-zero cb return stops the
 * listing and is returned. SS_ERR_NOT_FOUND for an undeclared saver. */
typedef int (*ss_store_list_cb)(void *arg, const ss_bytes *key,
                                uint64_t next_segment, uint64_t updated_ms);
int ss_store_list(ss_store *st, const char *saver, ss_bytes prefix,
                  ss_bytes start_after, size_t limit, ss_store_list_cb cb,
                  void *arg, bool *more);
/* List savers: cb receives each schema (borrowed for the call) and its
 * sequence count. */
typedef int (*ss_store_saver_cb)(void *arg, const ss_schema *schema,
                                 uint64_t sequences);
int ss_store_list_savers(ss_store *st, ss_store_saver_cb cb, void *arg);

/* ---- writes (writer thread only, inside txn) ---- */

/* Declare: same schema -> 0 and *created=false; new -> *created=true;
 * different schema -> SS_ERR_CONFLICT with msg. */
int ss_store_declare(ss_store_txn *txn, const ss_schema *schema, bool *created,
                     char msg[SS_STORE_MSG]);

/* One save of a batch. */
typedef struct ss_save_item {
    ss_bytes key;          /* sequence key */
    uint64_t segment;      /* the state is the end of this segment */
    bool final;            /* delete the record (unless keep_final) */
    const void *const *states; /* one pointer per schema state, nbytes each */
} ss_save_item;

/* Compare-and-set for every item, all or nothing (the batch runs in its own
 * nested transaction, so a failure leaves txn as it was). already_applied[i] is
 * set when next_segment == segment+1 already (idempotent retry; that item
 * is left unchanged), and for a final item whose key has no record but a
 * finished marker (younger than the retention) with next_segment ==
 * segment+1: the retry of a final save that deleted the record. Any other
 * mismatch -> SS_ERR_CONFLICT with msg naming key, expected and found
 * segment (and why, for an evicted or finished key), and nothing of the
 * batch is applied. */
int ss_store_save(ss_store_txn *txn, const ss_schema *schema, size_t n,
                  const ss_save_item *items, bool *already_applied,
                  uint64_t now_ms, char msg[SS_STORE_MSG]);

/* Drop keys (returns count in *dropped: keys that had a record or an
 * eviction marker; their finished markers are deleted too but not
 * counted) or, with all, the saver itself with every record and marker
 * (*dropped = records). SS_ERR_NOT_FOUND for an undeclared saver.
 * The schema cache forgets a dropped saver when the transaction commits. */
int ss_store_drop(ss_store_txn *txn, const char *saver, size_t n,
                  const ss_bytes *keys, bool all, uint64_t *dropped,
                  char msg[SS_STORE_MSG]);

/* Evict up to max sequences of savers with idle_ttl_ms whose updated_ms +
 * ttl <= now_ms; records them in `evicted`. *evicted gets the count.
 * Examines at most max * SS_STORE_EVICT_SCAN_FACTOR records and resumes
 * from there on the next call (wrapping around), so call it periodically.
 * Records evicted are logged at INFO with the saver and count.
 * The same call deletes up to max finished markers older than the
 * retention (examining at most max * SS_STORE_EVICT_SCAN_FACTOR of them,
 * resuming likewise); they are not counted in *evicted. */
int ss_store_evict_idle(ss_store_txn *txn, uint64_t now_ms, size_t max,
                        uint64_t *evicted);

/* ---- transactions (the writer uses these; tests may too) ---- */

/* Begin a write transaction (one at a time: LMDB serialises writers). */
int ss_store_txn_begin(ss_store *st, ss_store_txn **out, char msg[SS_STORE_MSG]);
/* Commit and free txn (also on failure). Schema cache changes made in txn
 * (declare, drop all) become visible to ss_store_schema only after a
 * successful commit. Errors: SS_ERR_FULL (map full), SS_ERR_STORE. */
int ss_store_txn_commit(ss_store_txn *txn, char msg[SS_STORE_MSG]);
/* Abort and free. Accepts NULL. */
void ss_store_txn_abort(ss_store_txn *txn);
/* Nested transaction: until the matching child_end, every store call on
 * txn (and ss_store_txn_mdb) works inside the child. end with commit=false
 * rolls back exactly what happened since child_begin. */
int ss_store_txn_child_begin(ss_store_txn *txn, char msg[SS_STORE_MSG]);
int ss_store_txn_child_end(ss_store_txn *txn, bool commit,
                           char msg[SS_STORE_MSG]);

/* Raw access for other modules that keep data in the same environment
 * (the job queue): the LMDB write transaction behind txn (the innermost
 * child when one is open; valid until that child or txn ends). */
struct MDB_txn *ss_store_txn_mdb(ss_store_txn *txn);
struct MDB_env *ss_store_env(ss_store *st);
/* For modules writing raw through ss_store_txn_mdb: call before putting a
 * value of `bytes` that adds data. SS_ERR_FULL with advice in msg when it
 * would pass --map-size, so that the reserve beyond it stays for Drop
 * (store_space.c); 0 otherwise. Writer thread, inside txn. */
int ss_store_reserve_check(ss_store_txn *txn, size_t bytes,
                           char msg[SS_STORE_MSG]);
/* Id of the last committed write transaction (LMDB's me_last_txnid). It
 * advances only when a commit wrote, and so synced, something: a
 * transaction that changed nothing commits as a no-op. Any thread. */
uint64_t ss_store_last_txnid(ss_store *st);

/* The store's one LMDB error mapping, for modules that keep their own
 * databases in the env (the job queue): MDB_MAP_FULL, MDB_TXN_FULL and
 * MDB_READERS_FULL -> SS_ERR_FULL with advice, anything else
 * SS_ERR_STORE; the message names `what`. */
int ss_store_lmdb_error(int rc, const char *what, char msg[SS_STORE_MSG]);

/* ---- write-ahead log (store_log.c; wal_records.h has the op format) ----
 * With logging on, every put and delete a writer transaction (begun with
 * ss_store_txn_begin) makes is also encoded as an op into a buffer the
 * writer appends to the log before committing; a nested transaction that
 * rolls back drops its ops. Writes outside writer transactions (open,
 * migration, the space flush commit) are not logged. Writer thread only,
 * except enable (before the writer starts). */
void ss_store_log_enable(ss_store *st, bool on);
/* For modules writing raw through ss_store_txn_mdb (the job queue): log a
 * put/delete just made in database `db` (its mdb_dbi_open name). 0, or
 * SS_ERR_NOMEM / SS_ERR_TOO_BIG (fail the op: it cannot be logged). A
 * no-op outside a writer transaction or with logging off. */
struct MDB_val;
int ss_store_log_put(struct MDB_txn *t, const char *db, const struct MDB_val *k,
                     const struct MDB_val *v);
int ss_store_log_del(struct MDB_txn *t, const char *db, const struct MDB_val *k);
/* The ops logged in txn so far (borrowed, valid until txn ends or writes). */
void ss_store_txn_log(ss_store_txn *txn, const uint8_t **ops, size_t *len,
                      size_t *n_ops);
/* Record, in txn (not logged), that the log is applied up to lsn. */
int ss_store_txn_set_applied(ss_store_txn *txn, uint64_t lsn,
                             char msg[SS_STORE_MSG]);
/* The applied LSN of the last committed transaction (0 = none). */
int ss_store_applied_lsn(ss_store *st, uint64_t *lsn, char msg[SS_STORE_MSG]);
/* Apply an OPS record body (after its header) in txn, unlogged (replay). */
int ss_store_replay_ops(ss_store_txn *txn, const uint8_t *body, size_t len,
                        char msg[SS_STORE_MSG]);
/* Checkpoint (store_ckpt.c): everything committed is on disk
 * (mdb_env_sync, forced); with pin (the log is on: commits unsynced) the
 * meta pages are saved to DIR/checkpoint.meta and the snapshot is kept
 * from page reuse until the next checkpoint, and ss_store_open goes back to
 * it (the log replays the rest); without pin that file is removed (synced
 * commits follow). Writer thread (or before the writer starts). */
int ss_store_checkpoint(ss_store *st, bool pin, char msg[SS_STORE_MSG]);
/* Pin the current snapshot (if none is pinned) until the next checkpoint:
 * for replay, which commits unsynced on top of the restored checkpoint. */
int ss_store_pin(ss_store *st, char msg[SS_STORE_MSG]);
/* Did a commit free pages near a full map that the pin keeps from reuse?
 * Then checkpoint before the next write (a Drop's space is reusable at
 * once). Writer thread. */
bool ss_store_checkpoint_wanted(const ss_store *st);

#endif
