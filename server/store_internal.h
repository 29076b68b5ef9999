/* store_internal -- private declarations shared by the store's modules
 * (store.c, store_codec.c, store_read.c, store_write.c, store_evict.c,
 * store_txn.c, store_space.c, store_format.c, store_schema.c).
 *
 * Not a public header: only the store's own modules include it.
 */
#ifndef SS_STORE_INTERNAL_H
#define SS_STORE_INTERNAL_H

#include "ss_le.h"
#include <lmdb.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ss_keyfmt.h"
#include "store.h"
#include "wal_records.h"

#define REC_VERSION 2u    /* seqs/evicted/finished value version (format 2) */
#define REC_VERSION_V1 1u /* format 1: no checksum (migrated on open) */
#define CRC_BYTES 4u      /* CRC32C trailer of every value (format 2) */
#define REC_HDR 24u      /* seqs value header */
#define EVICT_HDR 32u    /* evicted value header */
#define FIN_HDR 24u      /* finished value header */
#define HASH_BYTES 16u   /* hash suffix of long DB keys */
#define DBKEY_MAX 512u   /* buffer for a DB key; maxkey must not exceed it */
#define COUNTS_BYTES 16u /* counts value */
/* The long-key scheme needs room for the longest saver name, the NUL, the
 * hash and a useful prefix of the key. */
#define MAXKEY_MIN (SS_SAVER_NAME_MAX + 1u + HASH_BYTES + 64u)

/* One schema cache entry (chained hash table). */
typedef struct store_cache_ent {
    ss_schema *schema;      /* one reference held by the cache */
    struct store_cache_ent *next; /* bucket chain */
} store_cache_ent;

/* A schema cache change waiting for its transaction to commit. */
typedef struct store_pending {
    ss_schema *add; /* publish this schema (reference held), or NULL */
    char *remove;   /* forget this saver name (owned), when add is NULL */
} store_pending;

struct ss_store {
    MDB_env *env;            /* the environment */
    MDB_dbi savers;          /* saver name -> schema */
    MDB_dbi seqs;            /* sequence records */
    MDB_dbi evicted;         /* eviction markers */
    MDB_dbi counts;          /* per-saver counters */
    MDB_dbi finished;        /* finished markers (final saves) */
    uint64_t fin_retention;  /* ms a finished marker counts */
    size_t maxkey;           /* mdb_env_get_maxkeysize */
    int lock_fd;             /* flock'ed file keeping other servers out */
    uint64_t map_size;       /* current map size, the soft limit: starts
                                at --map-size, raised by the writer thread
                                (atomic store; read with atomic loads) */
    uint64_t max_map_size;   /* --max-map-size: saves stop here */
    pthread_mutex_t pool_mu; /* guards pool */
    MDB_txn *pool[SS_STORE_READ_POOL]; /* reset read transactions */
    size_t n_pool;           /* entries in pool */
    size_t pool_max;         /* pool capacity (bounded by reader slots) */
    pthread_mutex_t cache_mu;/* guards the cache */
    store_cache_ent **buckets;     /* schema cache, by name hash */
    size_t n_buckets;        /* power of two */
    size_t n_cached;         /* entries */
    uint64_t next_gen;       /* next schema generation (writer thread) */
    uint8_t evict_pos[DBKEY_MAX]; /* where the eviction scan resumes */
    size_t evict_pos_len;    /* 0 = from the start */
    uint8_t fin_pos[DBKEY_MAX]; /* where the finished-marker scan resumes */
    size_t fin_pos_len;      /* 0 = from the start */
    uint64_t psize;          /* LMDB page size */
    uint64_t reserve;        /* bytes of map beyond max_map_size
                                (store_space.c) */
    uint64_t flushes;        /* flush commits made (writer thread) */
    uint64_t fp_txnid;       /* committed txn fp_pages was counted at */
    uint64_t fp_pages;       /* reusable free pages then (writer thread) */
    uint64_t corrupt;        /* damaged values found (atomic) */
    /* write-ahead log (store_log.c; writer thread) */
    bool log_on;             /* log the writer transactions' ops */
    bool log_active;         /* a writer transaction is open */
    ss_walrec_buf log;       /* ops of the open writer transaction */
    char *dir;               /* data directory (owned; store_ckpt.c) */
    MDB_txn *pin;            /* read txn on the last checkpoint, or NULL */
    bool ckpt_wanted;        /* a commit freed pages the pin holds while
                                the map is near full (writer thread) */
};

struct ss_store_txn {
    ss_store *st;                        /* owning store */
    MDB_txn *stack[SS_STORE_TXN_DEPTH + 2]; /* [0] top, then children */
    size_t depth;                        /* entries in stack */
    size_t marks[SS_STORE_TXN_DEPTH + 2];/* n_pending at each child begin */
    size_t log_len[SS_STORE_TXN_DEPTH + 2]; /* log bytes at child begin */
    size_t log_ops[SS_STORE_TXN_DEPTH + 2]; /* log ops at child begin */
    store_pending *pend;                       /* cache changes to publish */
    size_t n_pend;                       /* entries in pend */
    size_t cap_pend;                     /* allocated entries */
    uint64_t base_pages;                 /* store tree pages at begin */
    uint64_t bound_pages;                /* upper bound of pages saves
                                            added (skips mdb_stat far
                                            from full) */
};

/* A parsed seqs record. */
typedef struct store_rec {
    uint64_t next_segment; /* segments committed */
    uint64_t updated_ms;   /* last save */
    const uint8_t *key;    /* full key when stored (long keys), else NULL */
    size_t key_len;        /* bytes at key */
    const uint8_t *states; /* state bytes in schema order */
    size_t states_len;     /* bytes at states */
} store_rec;


/* A parsed finished marker. */
typedef struct store_fin_mark {
    uint64_t next_segment; /* segment + 1 of the final save */
    uint64_t finished_ms;  /* when that save ran */
} store_fin_mark;


/* ---- schemas (store_schema.c) ---- */

/* Serialize s as the value of its `savers` entry: 8-byte little-endian
 * generation followed by a packed DeclareRequest. *out is malloc'ed, the
 * caller frees it. Returns 0 or SS_ERR_NOMEM. */
int ss_schema_pack(const ss_schema *s, uint64_t generation, uint8_t **out,
                   size_t *len);

/* Parse a `savers` value back into a schema (one reference) whose
 * generation is the stored one. SS_ERR_STORE with msg when corrupt. */
int ss_schema_unpack(const uint8_t *buf, size_t len, ss_schema **out,
                     char msg[SS_STORE_MSG]);

/* Describe the first difference between a and b into msg ("state 'h':
 * shape [4] vs [8]"). */
void ss_schema_diff(const ss_schema *a, const ss_schema *b, char *msg,
                    size_t size);

/* Little-endian loads/stores (LMDB values are not aligned): ss_le.h. */

/* ---- keys and record codec (store_codec.c) ---- */

/* Map an LMDB error to ours with a message naming `what` into msg
 * (SS_STORE_MSG bytes). */
int store_mdb_fail(int rc, const char *what, char *msg);
/* ms since the epoch as 2026-01-02T03:04:05.678Z. */
void store_fmt_time(uint64_t ms, char *out, size_t size);
/* 64-bit finaliser (splitmix64), also used by the schema cache. */
uint64_t store_mix64(uint64_t x);
/* Build the DB key of (saver, key) into buf (DBKEY_MAX bytes). *is_long
 * tells whether the key was shortened (then the full key lives in the
 * record). */
void store_dbkey_make(const ss_store *st, const char *saver, size_t slen,
                      const uint8_t *key, size_t klen, uint8_t *buf,
                      size_t *len, bool *is_long);
/* Checksums (format 2): every value ends with a little-endian CRC32C of
 * the DB key followed by the value's other bytes. */
uint32_t store_crc(const MDB_val *dk, const void *v, size_t n);
/* Write the trailer after the first n bytes of v (n + CRC_BYTES long). */
void store_seal(const MDB_val *dk, uint8_t *v, size_t n);
/* Does v end with the right trailer? */
bool store_sealed(const MDB_val *dk, const MDB_val *v);
/* A damaged value of `what` under dk: count it, log it, fill msg naming
 * the saver and key; returns SS_STORE_ERR_CORRUPT. */
int store_corrupt(ss_store *st, const MDB_val *dk, const char *what,
                  char *msg);
/* Parse a seqs value (dk its DB key) after checking its checksum;
 * store_corrupt's error with msg (may be NULL) when damaged. r borrows
 * from v. */
int store_rec_parse(ss_store *st, const MDB_val *dk, const MDB_val *v,
                    store_rec *r, char *msg);
/* The same without the checksum (Drop, which deletes damaged records). */
int store_rec_parse_raw(const MDB_val *v, store_rec *r);
/* A `savers` value (k the saver name) -> schema, checksum checked. */
int store_schema_get(ss_store *st, const MDB_val *k, const MDB_val *v,
                     ss_schema **out, char *msg);
/* Store schema under generation gen (sealed); *copy gets the schema
 * parsed back from the stored bytes (one reference). */
int store_schema_put(MDB_txn *t, ss_store *st, const ss_schema *schema,
                     uint64_t gen, ss_schema **copy, char *msg);
/* Does a record found under a long DB key belong to this very key? */
bool store_rec_key_matches(const store_rec *r, bool is_long,
                           const uint8_t *key, size_t klen);
/* SS_ERR_INVALID with msg for a key of 0 or > SS_STORE_KEY_MAX bytes. */
int store_key_check(const ss_bytes *k, char *msg);
/* Per-saver counters in `counts` (absent = zeros). */
int store_counts_get(MDB_txn *t, ss_store *st, const char *saver,
                     uint64_t *seqs, uint64_t *evicted, char *msg);
int store_counts_add(MDB_txn *t, ss_store *st, const char *saver,
                     int64_t dseqs, uint64_t devicted, char *msg);
/* Check that the saver still exists in this snapshot with schema's
 * generation (or an equal schema). */
int store_saver_check(MDB_txn *t, ss_store *st, const ss_schema *schema,
                      char *msg);
/* Is saver in `savers`? false with *err = 0 and msg when not declared,
 * false with *err < 0 on a read error. */
bool store_saver_declared(MDB_txn *t, ss_store *st, const char *saver,
                          int *err, char *msg);
/* Look up a marker in dbi (evicted or finished). Returns 0 (found, *v
 * set, its size without the checksum trailer), 1 (none, or another long
 * key's) or an error (SS_STORE_ERR_CORRUPT when damaged). */
int store_marker_get(MDB_txn *t, ss_store *st, MDB_dbi dbi, size_t hdr,
                     const MDB_val *dk, bool is_long, const uint8_t *key,
                     size_t klen, MDB_val *v, char *msg);
int store_evicted_get(MDB_txn *t, ss_store *st, const MDB_val *dk,
                      bool is_long, const uint8_t *key, size_t klen,
                      MDB_val *v, char *msg);
/* Has a finished marker written at finished_ms expired by now_ms? */
bool store_fin_expired(const ss_store *st, uint64_t finished_ms,
                       uint64_t now_ms);
/* The finished marker of a key: 0 (found and within the retention, *f
 * set), 1 (none, expired or malformed) or an error. */
int store_finished_get(MDB_txn *t, ss_store *st, const MDB_val *dk,
                       bool is_long, const uint8_t *key, size_t klen,
                       uint64_t now_ms, store_fin_mark *f, char *msg);

/* ---- schema cache (store.c; cache_mu held by the caller) ---- */

/* Publish s (takes over one reference). */
int store_cache_put(ss_store *st, ss_schema *s);
void store_cache_remove(ss_store *st, const char *name);

/* ---- space (store_space.c) ---- */

/* Reserve for a map of map_size bytes: map_size / 8 clamped to
 * SS_STORE_RESERVE_MIN..SS_STORE_RESERVE_MAX. A Drop of k keys in
 * different leaves copies about k pages, so the minimum (128 pages of
 * 4 KiB) lets a Drop of about 100 scattered keys through a full map. */
#define SS_STORE_RESERVE_MIN (512u << 10)
#define SS_STORE_RESERVE_MAX (256u << 20)
uint64_t store_reserve_bytes(uint64_t map_size);
/* At open, once psize is known: the soft limit covers the pages the file
 * already uses (a map that grew before a restart stays grown). */
void store_space_open(ss_store *st);
/* Record the store's tree pages at the start of txn. */
void store_space_begin(ss_store_txn *txn);
/* Is the committed map within the reserve of --max-map-size? */
bool store_space_near(ss_store *st);
/* After a save's put (bytes 0), or before a raw put of `bytes`:
 * SS_ERR_FULL with advice in msg when the store would pass
 * --max-map-size (the reserve stays for Drop); the caller rolls the put
 * back. Past the soft limit (map_size) but within it: the soft limit is
 * raised (doubled, clamped) and the put stays. */
int store_space_check(ss_store_txn *txn, size_t bytes, char *msg);
/* A save put a value of `bytes` in txn (for store_space_check's bound). */
void store_space_note(ss_store_txn *txn, size_t bytes);
/* Is the map near --max-map-size and did the last commit free pages? */
bool store_space_tight(ss_store *st);
/* Commit one tiny transaction so pages freed by the last commit become
 * reusable by the next one. */
int store_space_flush(ss_store *st, char *msg);

/* ---- file checks and format (store_format.c) ---- */

/* Before mdb_env_open: refuse a 0-byte data.mdb; *fresh when there is
 * none yet. */
int store_file_check(const char *dir, bool *fresh, char *msg);
/* After mdb_env_open, before any read: refuse a data.mdb shorter than
 * (last used page + 1) * page size. */
int store_size_check(ss_store *st, const char *dir, char *msg);
/* Is every page of data.mdb at path past its end (file_bytes long) on
 * LMDB's freelist, read with pread (store_pages.c)? 0 or an error. */
int store_tail_free(const char *path, uint64_t psize, uint64_t file_bytes,
                    bool *free_tail);
/* Check the format version; write it into a new store, migrate format 1,
 * refuse others. */
int store_format_check(ss_store *st, const char *dir, char *msg);

/* ---- write-ahead log hooks (store_log.c) ---- */

/* mdb_put (flags 0) / mdb_del / mdb_cursor_del that also log the op in
 * the open writer transaction (when the log is on). LMDB codes; ENOMEM
 * when the op could not be logged (the caller fails the op). */
int store_put(MDB_txn *t, MDB_dbi dbi, MDB_val *k, MDB_val *v);
int store_del(MDB_txn *t, MDB_dbi dbi, MDB_val *k);
int store_cursor_del(MDB_cursor *c);
/* Log a put done with MDB_RESERVE, once v's bytes are filled in. */
int store_log_put(MDB_txn *t, MDB_dbi dbi, const MDB_val *k, const MDB_val *v);

/* Before mdb_env_open: put back the meta pages of the last checkpoint
 * (store_ckpt.c) when DIR/checkpoint.meta exists. 0 or an error. */
int store_ckpt_restore(const char *dir, char *msg);

/* ---- transactions (store_txn.c) ---- */

/* The innermost open LMDB transaction of t. */
MDB_txn *store_cur_txn(ss_store_txn *t);
/* Queue a cache change (publish add, or forget remove) for commit. */
int store_pend_push(ss_store_txn *t, ss_schema *add, const char *remove);

#endif
