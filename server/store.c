/* store -- LMDB-backed storage of savers, schemas and sequence states.
 *
 * Byte layouts (all integers little-endian; see docs/store-format.md):
 *
 *   seqs key      saver bytes, 0x00, key bytes          (when it fits)
 *                 saver bytes, 0x00, key[0..P), hash16  (long keys: the DB
 *                 key is exactly maxkey bytes long, short ones are shorter;
 *                 P = maxkey - 16 - len(saver) - 1)
 *   seqs value    u8 version (1), u8 flags (0), u16 reserved (0),
 *                 u32 key_len (bytes of the full key that follow the header;
 *                 0 when the DB key holds the whole key),
 *                 u64 next_segment, u64 updated_ms,        -- 24 bytes
 *                 key bytes (key_len), then every state's bytes in schema
 *                 order (states[i].nbytes each, as sent on the wire).
 *   evicted key   as seqs key
 *   evicted value u8 version (1), u8 0, u16 0, u32 key_len, u64 next_segment,
 *                 u64 updated_ms, u64 evicted_ms,          -- 32 bytes
 *                 key bytes (key_len).
 *   finished key  as seqs key
 *   finished val  u8 version (1), u8 0, u16 0, u32 key_len, u64 next_segment
 *                 (segment + 1 of the final save), u64 finished_ms, -- 24
 *                 bytes, key bytes (key_len).
 *   savers        saver name -> u64 generation + packed DeclareRequest
 *   counts        saver name -> u64 sequences, u64 evicted  (16 bytes)
 */
#include "store.h"

#include <errno.h>
#include <fcntl.h>
#include <lmdb.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "ss_error.h"
#include "ss_log.h"
#include "store_internal.h"

#define REC_VERSION 1u
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
typedef struct cache_ent {
    ss_schema *schema;      /* one reference held by the cache */
    struct cache_ent *next; /* bucket chain */
} cache_ent;

/* A schema cache change waiting for its transaction to commit. */
typedef struct pending {
    ss_schema *add; /* publish this schema (reference held), or NULL */
    char *remove;   /* forget this saver name (owned), when add is NULL */
} pending;

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
    uint64_t map_size;       /* configured map size */
    pthread_mutex_t pool_mu; /* guards pool */
    MDB_txn *pool[SS_STORE_READ_POOL]; /* reset read transactions */
    size_t n_pool;           /* entries in pool */
    size_t pool_max;         /* pool capacity (bounded by reader slots) */
    pthread_mutex_t cache_mu;/* guards the cache */
    cache_ent **buckets;     /* schema cache, by name hash */
    size_t n_buckets;        /* power of two */
    size_t n_cached;         /* entries */
    uint64_t next_gen;       /* next schema generation (writer thread) */
    uint8_t evict_pos[DBKEY_MAX]; /* where the eviction scan resumes */
    size_t evict_pos_len;    /* 0 = from the start */
    uint8_t fin_pos[DBKEY_MAX]; /* where the finished-marker scan resumes */
    size_t fin_pos_len;      /* 0 = from the start */
};

struct ss_store_txn {
    ss_store *st;                        /* owning store */
    MDB_txn *stack[SS_STORE_TXN_DEPTH + 2]; /* [0] top, then children */
    size_t depth;                        /* entries in stack */
    size_t marks[SS_STORE_TXN_DEPTH + 2];/* n_pending at each child begin */
    pending *pend;                       /* cache changes to publish */
    size_t n_pend;                       /* entries in pend */
    size_t cap_pend;                     /* allocated entries */
};

/* ---- small helpers ---- */

static uint32_t le32_get(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
           (uint32_t)p[3] << 24;
}

static void le32_put(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

static MDB_txn *cur_txn(ss_store_txn *t)
{
    return t->stack[t->depth - 1];
}

/* Map an LMDB error to ours with a message. */
static int mdb_fail(int rc, const char *what, char *msg)
{
    if (rc == MDB_MAP_FULL) {
        snprintf(msg, SS_STORE_MSG,
                 "%s: LMDB map is full; restart the server with a larger "
                 "--map-size or drop data", what);
        return SS_ERR_FULL;
    }
    if (rc == MDB_TXN_FULL) {
        snprintf(msg, SS_STORE_MSG,
                 "%s: transaction too large for LMDB (%s); use smaller batches",
                 what, mdb_strerror(rc));
        return SS_ERR_FULL;
    }
    if (rc == MDB_READERS_FULL) {
        snprintf(msg, SS_STORE_MSG, "%s: %s; raise the reader slots", what,
                 mdb_strerror(rc));
        return SS_ERR_FULL;
    }
    snprintf(msg, SS_STORE_MSG, "%s: %s", what, mdb_strerror(rc));
    return SS_ERR_STORE;
}

/* Printable form of a key for messages: ASCII as is, the rest as \xHH,
 * cut with "..." when longer than the buffer allows. */
static void key_escape(const uint8_t *k, size_t n, char *out, size_t size)
{
    static const char hex[] = "0123456789abcdef";
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        uint8_t c = k[i];
        bool plain = c >= 0x20 && c < 0x7f && c != '\\' && c != '\'';
        size_t need = plain ? 1 : 4;
        if (o + need + 4 > size) {
            memcpy(out + o, "...", 3);
            o += 3;
            break;
        }
        if (plain) {
            out[o++] = (char)c;
        } else {
            out[o++] = '\\';
            out[o++] = 'x';
            out[o++] = hex[c >> 4];
            out[o++] = hex[c & 15];
        }
    }
    out[o] = '\0';
}

static void fmt_time(uint64_t ms, char *out, size_t size)
{
    time_t sec = (time_t)(ms / 1000);
    struct tm tm;
    char base[32];
    gmtime_r(&sec, &tm);
    if (strftime(base, sizeof base, "%Y-%m-%dT%H:%M:%S", &tm) == 0)
        base[0] = '\0';
    snprintf(out, size, "%.24s.%03uZ", base, (unsigned)(ms % 1000));
}

static uint64_t mix64(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    x ^= x >> 31;
    return x;
}

/* 128-bit hash of a long key. Lookups compare the full key stored in the
 * record, so a collision is detected (and refused), never silently merged. */
static void key_hash(const uint8_t *p, size_t n, uint8_t out[HASH_BYTES])
{
    uint64_t a = 0x9e3779b97f4a7c15ull ^ n, b = 0x6a09e667f3bcc909ull + n;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w = ss_le64_get(p + i);
        a = mix64(a ^ w) + 0x9e3779b97f4a7c15ull;
        b = mix64(b + (w * 0xff51afd7ed558ccdull)) ^ a;
    }
    uint8_t tail[8] = {0};
    memcpy(tail, p + i, n - i);
    uint64_t w = ss_le64_get(tail);
    a = mix64(a ^ w ^ 0x243f6a8885a308d3ull);
    b = mix64(b + w + a);
    ss_le64_put(out, a);
    ss_le64_put(out + 8, b);
}

/* Build the DB key of (saver, key) into buf. *is_long tells whether the
 * key was shortened (then the full key lives in the record). */
static void dbkey_make(const ss_store *st, const char *saver, size_t slen,
                       const uint8_t *key, size_t klen, uint8_t *buf,
                       size_t *len, bool *is_long)
{
    memcpy(buf, saver, slen);
    buf[slen] = 0;
    if (slen + 1 + klen < st->maxkey) {
        memcpy(buf + slen + 1, key, klen);
        *len = slen + 1 + klen;
        *is_long = false;
        return;
    }
    size_t p = st->maxkey - HASH_BYTES - slen - 1;
    memcpy(buf + slen + 1, key, p);
    key_hash(key, klen, buf + slen + 1 + p);
    *len = st->maxkey;
    *is_long = true;
}

/* A parsed seqs record. */
typedef struct rec {
    uint64_t next_segment; /* segments committed */
    uint64_t updated_ms;   /* last save */
    const uint8_t *key;    /* full key when stored (long keys), else NULL */
    size_t key_len;        /* bytes at key */
    const uint8_t *states; /* state bytes in schema order */
    size_t states_len;     /* bytes at states */
} rec;

static int rec_parse(const MDB_val *v, rec *r)
{
    const uint8_t *p = v->mv_data;
    if (v->mv_size < REC_HDR || p[0] != REC_VERSION)
        return SS_ERR_STORE;
    size_t kl = le32_get(p + 4);
    if (kl > v->mv_size - REC_HDR)
        return SS_ERR_STORE;
    r->next_segment = ss_le64_get(p + 8);
    r->updated_ms = ss_le64_get(p + 16);
    r->key = kl ? p + REC_HDR : NULL;
    r->key_len = kl;
    r->states = p + REC_HDR + kl;
    r->states_len = v->mv_size - REC_HDR - kl;
    return 0;
}

/* Does a record found under a long DB key belong to this very key? */
static bool rec_key_matches(const rec *r, bool is_long, const uint8_t *key,
                            size_t klen)
{
    if (!is_long)
        return r->key_len == 0;
    return r->key_len == klen && memcmp(r->key, key, klen) == 0;
}

static int key_check(const ss_bytes *k, char *msg)
{
    if (k->len == 0 || k->len > SS_STORE_KEY_MAX) {
        snprintf(msg, SS_STORE_MSG, "key of %zu bytes (must be 1..%u)", k->len,
                 SS_STORE_KEY_MAX);
        return SS_ERR_INVALID;
    }
    return 0;
}

/* ---- schema cache ---- */

static size_t name_hash(const char *s)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (; *s; s++)
        h = (h ^ (uint8_t)*s) * 0x100000001b3ull;
    return (size_t)mix64(h);
}

static cache_ent **cache_slot(ss_store *st, const char *name)
{
    cache_ent **pp = &st->buckets[name_hash(name) & (st->n_buckets - 1)];
    while (*pp && strcmp((*pp)->schema->saver, name) != 0)
        pp = &(*pp)->next;
    return pp;
}

/* Publish s (takes over one reference). cache_mu held. */
static int cache_put(ss_store *st, ss_schema *s)
{
    if (st->n_cached >= st->n_buckets) {
        size_t nb = st->n_buckets * 2;
        cache_ent **b = calloc(nb, sizeof *b);
        if (b) {
            for (size_t i = 0; i < st->n_buckets; i++) {
                cache_ent *e = st->buckets[i];
                while (e) {
                    cache_ent *next = e->next;
                    size_t h = name_hash(e->schema->saver) & (nb - 1);
                    e->next = b[h];
                    b[h] = e;
                    e = next;
                }
            }
            free(st->buckets);
            st->buckets = b;
            st->n_buckets = nb;
        } /* else keep the longer chains */
    }
    cache_ent **pp = cache_slot(st, s->saver);
    if (*pp) {
        ss_schema_unref((*pp)->schema);
        (*pp)->schema = s;
        return 0;
    }
    cache_ent *e = calloc(1, sizeof *e);
    if (!e) {
        ss_schema_unref(s);
        return SS_ERR_NOMEM;
    }
    e->schema = s;
    *pp = e;
    st->n_cached++;
    return 0;
}

static void cache_remove(ss_store *st, const char *name)
{
    cache_ent **pp = cache_slot(st, name);
    cache_ent *e = *pp;
    if (!e)
        return;
    *pp = e->next;
    ss_schema_unref(e->schema);
    free(e);
    st->n_cached--;
}

int ss_store_schema(ss_store *st, const char *saver, ss_schema **out)
{
    *out = NULL;
    pthread_mutex_lock(&st->cache_mu);
    cache_ent *e = *cache_slot(st, saver);
    if (e)
        *out = ss_schema_ref(e->schema);
    pthread_mutex_unlock(&st->cache_mu);
    return e ? 0 : SS_ERR_NOT_FOUND;
}

/* ---- read transactions (pooled, MDB_NOTLS) ---- */

static int rd_begin(ss_store *st, MDB_txn **out, char *msg)
{
    MDB_txn *t = NULL;
    pthread_mutex_lock(&st->pool_mu);
    if (st->n_pool)
        t = st->pool[--st->n_pool];
    pthread_mutex_unlock(&st->pool_mu);
    if (t) {
        int rc = mdb_txn_renew(t);
        if (rc == 0) {
            *out = t;
            return 0;
        }
        mdb_txn_abort(t);
    }
    int rc = mdb_txn_begin(st->env, NULL, MDB_RDONLY, &t);
    if (rc != 0)
        return mdb_fail(rc, "begin read transaction", msg);
    *out = t;
    return 0;
}

static void rd_end(ss_store *st, MDB_txn *t)
{
    if (!t)
        return;
    mdb_txn_reset(t);
    pthread_mutex_lock(&st->pool_mu);
    if (st->n_pool < st->pool_max) {
        st->pool[st->n_pool++] = t;
        t = NULL;
    }
    pthread_mutex_unlock(&st->pool_mu);
    if (t)
        mdb_txn_abort(t);
}

/* ---- counts ---- */

static int counts_get(MDB_txn *t, ss_store *st, const char *saver,
                      uint64_t *seqs, uint64_t *evicted, char *msg)
{
    MDB_val k = {strlen(saver), (void *)(uintptr_t)saver}, v;
    int rc = mdb_get(t, st->counts, &k, &v);
    *seqs = *evicted = 0;
    if (rc == MDB_NOTFOUND)
        return 0;
    if (rc != 0)
        return mdb_fail(rc, "read counts", msg);
    if (v.mv_size != COUNTS_BYTES) {
        snprintf(msg, SS_STORE_MSG, "corrupt counts of saver '%.64s'", saver);
        return SS_ERR_STORE;
    }
    *seqs = ss_le64_get(v.mv_data);
    *evicted = ss_le64_get((const uint8_t *)v.mv_data + 8);
    return 0;
}

static int counts_add(MDB_txn *t, ss_store *st, const char *saver,
                      int64_t dseqs, uint64_t devicted, char *msg)
{
    uint64_t seqs, ev;
    int rc = counts_get(t, st, saver, &seqs, &ev, msg);
    if (rc < 0)
        return rc;
    seqs = (dseqs < 0 && (uint64_t)-dseqs > seqs) ? 0 : seqs + (uint64_t)dseqs;
    ev += devicted;
    uint8_t buf[COUNTS_BYTES];
    ss_le64_put(buf, seqs);
    ss_le64_put(buf + 8, ev);
    MDB_val k = {strlen(saver), (void *)(uintptr_t)saver}, v = {sizeof buf, buf};
    rc = mdb_put(t, st->counts, &k, &v, 0);
    return rc ? mdb_fail(rc, "write counts", msg) : 0;
}

/* Check that the saver still exists in this snapshot with schema's
 * generation (or an equal schema): guards against a drop or redeclare
 * between the caller's ss_store_schema and this transaction. */
static int saver_check(MDB_txn *t, ss_store *st, const ss_schema *schema,
                       char *msg)
{
    MDB_val k = {strlen(schema->saver), schema->saver}, v;
    int rc = mdb_get(t, st->savers, &k, &v);
    if (rc == MDB_NOTFOUND) {
        snprintf(msg, SS_STORE_MSG, "saver '%.128s' is not declared",
                 schema->saver);
        return SS_ERR_NOT_FOUND;
    }
    if (rc != 0)
        return mdb_fail(rc, "read saver", msg);
    if (v.mv_size >= 8 && schema->generation != 0 &&
        ss_le64_get(v.mv_data) == schema->generation)
        return 0;
    ss_schema *now = NULL;
    rc = ss_schema_unpack(v.mv_data, v.mv_size, &now, msg);
    if (rc < 0)
        return rc;
    bool same = ss_schema_equal(now, schema);
    ss_schema_unref(now);
    if (!same) {
        snprintf(msg, SS_STORE_MSG,
                 "saver '%.128s' was redeclared with a different schema",
                 schema->saver);
        return SS_ERR_CONFLICT;
    }
    return 0;
}

/* ---- open / close ---- */

static int mkdir_p(const char *dir)
{
    char path[4096];
    size_t n = strlen(dir);
    if (n == 0 || n >= sizeof path)
        return -1;
    memcpy(path, dir, n + 1);
    for (size_t i = 1; i <= n; i++) {
        if (path[i] == '/' || path[i] == '\0') {
            char c = path[i];
            path[i] = '\0';
            if (mkdir(path, 0755) != 0 && errno != EEXIST)
                return -1;
            path[i] = c;
        }
    }
    return 0;
}

/* Fill the cache from the savers database; find the highest generation. */
static int load_savers(ss_store *st, MDB_txn *t, char *msg)
{
    MDB_cursor *c = NULL;
    MDB_val k, v;
    int rc = mdb_cursor_open(t, st->savers, &c);
    if (rc != 0)
        return mdb_fail(rc, "open cursor", msg);
    int ret = 0;
    for (rc = mdb_cursor_get(c, &k, &v, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
        ss_schema *s = NULL;
        ret = ss_schema_unpack(v.mv_data, v.mv_size, &s, msg);
        if (ret < 0)
            goto out;
        if (s->generation >= st->next_gen)
            st->next_gen = s->generation + 1;
        ret = cache_put(st, s);
        if (ret < 0)
            goto out;
    }
    if (rc != MDB_NOTFOUND)
        ret = mdb_fail(rc, "scan savers", msg);
out:
    mdb_cursor_close(c);
    return ret;
}

int ss_store_open(ss_store **out, const ss_store_options *opt)
{
    char msg[SS_STORE_MSG] = "";
    char path[4096];
    MDB_txn *t = NULL;
    int rc, ret = 0;
    *out = NULL;
    ss_store *st = calloc(1, sizeof *st);
    if (!st)
        return SS_ERR_NOMEM;
    st->lock_fd = -1;
    st->next_gen = 1;
    st->map_size = opt->map_size ? opt->map_size : SS_MAP_SIZE_DEFAULT;
    st->fin_retention = SS_STORE_FINISHED_RETENTION_MS_DEFAULT;
    pthread_mutex_init(&st->pool_mu, NULL);
    pthread_mutex_init(&st->cache_mu, NULL);
    st->n_buckets = 64;
    st->buckets = calloc(st->n_buckets, sizeof *st->buckets);
    if (!st->buckets) {
        ret = SS_ERR_NOMEM;
        goto out;
    }
    if (!opt->dir || mkdir_p(opt->dir) != 0) {
        SS_LOG(SS_LOG_ERROR, "store: cannot create data dir '%s': %s",
               opt->dir ? opt->dir : "(none)", strerror(errno));
        ret = opt->dir ? SS_ERR_IO : SS_ERR_INVALID;
        goto out;
    }
    /* LMDB lets several processes share an environment; only one server
     * may own a data dir, so hold an exclusive lock on a file in it. */
    snprintf(path, sizeof path, "%s/server.lock", opt->dir);
    st->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (st->lock_fd < 0 || flock(st->lock_fd, LOCK_EX | LOCK_NB) != 0) {
        SS_LOG(SS_LOG_ERROR, "store: cannot lock '%s': %s%s", path,
               strerror(errno),
               errno == EWOULDBLOCK ? " (another server uses this dir)" : "");
        ret = SS_ERR_IO;
        goto out;
    }
    rc = mdb_env_create(&st->env);
    if (rc == 0)
        rc = mdb_env_set_maxdbs(st->env, SS_STORE_MAX_DBS);
    if (rc == 0)
        rc = mdb_env_set_mapsize(st->env, (size_t)st->map_size);
    if (rc == 0 && opt->max_readers)
        rc = mdb_env_set_maxreaders(st->env, opt->max_readers);
    if (rc == 0)
        /* Not MDB_NOMEMINIT: it would skip zeroing the unused tail of
         * overflow pages (~5 % of CPU at batch 64), but then uninitialised
         * heap bytes reach the file and valgrind is no longer clean
         * (docs/decisions.md, "Durable save speed-ups measured"). */
        rc = mdb_env_open(st->env, opt->dir,
                          MDB_NOTLS | MDB_NORDAHEAD | (opt->sync ? 0 : MDB_NOSYNC),
                          0644);
    if (rc != 0) {
        ret = mdb_fail(rc, "open LMDB environment", msg);
        goto out;
    }
    int dead = 0;
    mdb_reader_check(st->env, &dead);
    unsigned readers = 126;
    mdb_env_get_maxreaders(st->env, &readers);
    st->pool_max = readers / 4 < SS_STORE_READ_POOL ? readers / 4 : SS_STORE_READ_POOL;
    st->maxkey = (size_t)mdb_env_get_maxkeysize(st->env);
    if (st->maxkey < MAXKEY_MIN || st->maxkey > DBKEY_MAX) {
        snprintf(msg, SS_STORE_MSG, "LMDB max key size %zu not in %u..%u",
                 st->maxkey, MAXKEY_MIN, DBKEY_MAX);
        ret = SS_ERR_STORE;
        goto out;
    }
    rc = mdb_txn_begin(st->env, NULL, 0, &t);
    if (rc != 0) {
        ret = mdb_fail(rc, "begin", msg);
        goto out;
    }
    if ((rc = mdb_dbi_open(t, "savers", MDB_CREATE, &st->savers)) != 0 ||
        (rc = mdb_dbi_open(t, "seqs", MDB_CREATE, &st->seqs)) != 0 ||
        (rc = mdb_dbi_open(t, "evicted", MDB_CREATE, &st->evicted)) != 0 ||
        (rc = mdb_dbi_open(t, "counts", MDB_CREATE, &st->counts)) != 0 ||
        (rc = mdb_dbi_open(t, "finished", MDB_CREATE, &st->finished)) != 0) {
        ret = mdb_fail(rc, "open databases", msg);
        goto out;
    }
    ret = load_savers(st, t, msg);
    if (ret < 0)
        goto out;
    rc = mdb_txn_commit(t);
    t = NULL;
    if (rc != 0) {
        ret = mdb_fail(rc, "commit", msg);
        goto out;
    }
    SS_LOG(SS_LOG_INFO, "store: opened '%s' (%zu savers, map %llu bytes, sync %s)",
           opt->dir, st->n_cached, (unsigned long long)st->map_size,
           opt->sync ? "on" : "off");
out:
    if (t)
        mdb_txn_abort(t);
    if (ret < 0) {
        if (msg[0])
            SS_LOG(SS_LOG_ERROR, "store: %s: %s", opt->dir ? opt->dir : "", msg);
        ss_store_close(st);
        return ret;
    }
    *out = st;
    return 0;
}

void ss_store_close(ss_store *st)
{
    if (!st)
        return;
    for (size_t i = 0; i < st->n_pool; i++)
        mdb_txn_abort(st->pool[i]);
    if (st->env)
        mdb_env_close(st->env);
    if (st->buckets) {
        for (size_t i = 0; i < st->n_buckets; i++) {
            cache_ent *e = st->buckets[i];
            while (e) {
                cache_ent *next = e->next;
                ss_schema_unref(e->schema);
                free(e);
                e = next;
            }
        }
        free(st->buckets);
    }
    if (st->lock_fd >= 0)
        close(st->lock_fd);
    pthread_mutex_destroy(&st->pool_mu);
    pthread_mutex_destroy(&st->cache_mu);
    free(st);
}

void ss_store_set_finished_retention(ss_store *st, uint64_t ms)
{
    st->fin_retention = ms ? ms : SS_STORE_FINISHED_RETENTION_MS_DEFAULT;
}

struct MDB_env *ss_store_env(ss_store *st)
{
    return st->env;
}

/* ---- reads ---- */

/* Fill msg for an evicted key from its marker value. */
static void evicted_msg(const MDB_val *v, const uint8_t *key, size_t klen,
                        char *msg)
{
    char ek[96], when[40] = "unknown time";
    key_escape(key, klen, ek, sizeof ek);
    if (v->mv_size >= EVICT_HDR)
        fmt_time(ss_le64_get((const uint8_t *)v->mv_data + 24), when,
                 sizeof when);
    snprintf(msg, SS_STORE_MSG, "key '%s' evicted after idle ttl at %s", ek,
             when);
}

/* Look up a marker in dbi (evicted or finished: both keep key_len at
 * offset 4 and the full key of a long key after a hdr-byte header).
 * Returns 0 (found, *v set), 1 (none, or another long key's) or an error. */
static int marker_get(MDB_txn *t, MDB_dbi dbi, size_t hdr, const MDB_val *dk,
                      bool is_long, const uint8_t *key, size_t klen,
                      MDB_val *v, char *msg)
{
    MDB_val k = *dk;
    int rc = mdb_get(t, dbi, &k, v);
    if (rc == MDB_NOTFOUND)
        return 1;
    if (rc != 0)
        return mdb_fail(rc, "read marker", msg);
    if (is_long) {
        const uint8_t *p = v->mv_data;
        size_t kl = v->mv_size >= hdr ? le32_get(p + 4) : 0;
        if (kl != klen || v->mv_size < hdr + kl ||
            memcmp(p + hdr, key, klen) != 0)
            return 1;
    }
    return 0;
}

static int evicted_get(MDB_txn *t, ss_store *st, const MDB_val *dk,
                       bool is_long, const uint8_t *key, size_t klen,
                       MDB_val *v, char *msg)
{
    return marker_get(t, st->evicted, EVICT_HDR, dk, is_long, key, klen, v,
                      msg);
}

/* A parsed finished marker. */
typedef struct fin_mark {
    uint64_t next_segment; /* segment + 1 of the final save */
    uint64_t finished_ms;  /* when that save ran */
} fin_mark;

/* Has a marker written at finished_ms expired by now_ms? */
static bool fin_expired(const ss_store *st, uint64_t finished_ms,
                        uint64_t now_ms)
{
    return finished_ms <= UINT64_MAX - st->fin_retention &&
           finished_ms + st->fin_retention <= now_ms;
}

/* Look up the finished marker of a key. Returns 0 (found and within the
 * retention, *f set), 1 (none, expired or malformed) or an error. An
 * expired marker is ignored here so the outcome of a save does not depend
 * on when the periodic cleanup last ran. */
static int finished_get(MDB_txn *t, ss_store *st, const MDB_val *dk,
                        bool is_long, const uint8_t *key, size_t klen,
                        uint64_t now_ms, fin_mark *f, char *msg)
{
    MDB_val v;
    int rc = marker_get(t, st->finished, FIN_HDR, dk, is_long, key, klen, &v,
                        msg);
    if (rc != 0)
        return rc;
    const uint8_t *p = v.mv_data;
    if (v.mv_size < FIN_HDR || p[0] != REC_VERSION)
        return 1;
    f->next_segment = ss_le64_get(p + 8);
    f->finished_ms = ss_le64_get(p + 16);
    return fin_expired(st, f->finished_ms, now_ms) ? 1 : 0;
}

int ss_store_fetch(ss_store *st, const ss_schema *schema, size_t n,
                   const ss_bytes *keys, void *const *out,
                   uint64_t *next_segment, uint64_t *updated_ms,
                   char msg[SS_STORE_MSG])
{
    MDB_txn *t = NULL;
    uint8_t dkb[DBKEY_MAX];
    size_t slen = strlen(schema->saver);
    msg[0] = '\0';
    int ret = rd_begin(st, &t, msg);
    if (ret < 0)
        return ret;
    ret = saver_check(t, st, schema, msg);
    if (ret < 0)
        goto out;
    for (size_t k = 0; k < n; k++) {
        ret = key_check(&keys[k], msg);
        if (ret < 0)
            goto out;
        size_t dlen;
        bool is_long;
        dbkey_make(st, schema->saver, slen, keys[k].data, keys[k].len, dkb,
                   &dlen, &is_long);
        MDB_val dk = {dlen, dkb}, v;
        int rc = mdb_get(t, st->seqs, &dk, &v);
        rec r;
        if (rc == 0) {
            if (rec_parse(&v, &r) < 0 || r.states_len != schema->state_bytes) {
                char ek[96];
                key_escape(keys[k].data, keys[k].len, ek, sizeof ek);
                snprintf(msg, SS_STORE_MSG,
                         "corrupt record for key '%s' (%zu state bytes, schema "
                         "has %zu)", ek, v.mv_size, schema->state_bytes);
                ret = SS_ERR_STORE;
                goto out;
            }
            if (!rec_key_matches(&r, is_long, keys[k].data, keys[k].len))
                rc = MDB_NOTFOUND; /* a different long key: not ours */
        }
        if (rc == 0) {
            size_t off = 0;
            for (size_t i = 0; i < schema->n_states; i++) {
                size_t nb = schema->states[i].nbytes;
                memcpy((uint8_t *)out[i] + k * nb, r.states + off, nb);
                off += nb;
            }
            next_segment[k] = r.next_segment;
            updated_ms[k] = r.updated_ms;
            continue;
        }
        if (rc != MDB_NOTFOUND) {
            ret = mdb_fail(rc, "read record", msg);
            goto out;
        }
        rc = evicted_get(t, st, &dk, is_long, keys[k].data, keys[k].len, &v,
                         msg);
        if (rc < 0) {
            ret = rc;
            goto out;
        }
        if (rc == 0) {
            evicted_msg(&v, keys[k].data, keys[k].len, msg);
            ret = SS_ERR_NOT_FOUND;
            goto out;
        }
        for (size_t i = 0; i < schema->n_states; i++) {
            const ss_state_spec *sp = &schema->states[i];
            uint8_t *dst = (uint8_t *)out[i] + k * sp->nbytes;
            if (sp->initial)
                memcpy(dst, sp->initial, sp->nbytes);
            else
                memset(dst, 0, sp->nbytes);
        }
        next_segment[k] = 0;
        updated_ms[k] = 0;
    }
out:
    rd_end(st, t);
    return ret;
}

int ss_store_segments(ss_store *st, const char *saver, size_t n,
                      const ss_bytes *keys, uint64_t *next_segment)
{
    char msg[SS_STORE_MSG];
    MDB_txn *t = NULL;
    uint8_t dkb[DBKEY_MAX];
    size_t slen = strlen(saver);
    if (slen == 0 || slen > SS_SAVER_NAME_MAX)
        return SS_ERR_INVALID;
    int ret = rd_begin(st, &t, msg);
    if (ret < 0)
        return ret;
    for (size_t k = 0; k < n; k++) {
        next_segment[k] = 0;
        if (keys[k].len == 0 || keys[k].len > SS_STORE_KEY_MAX)
            continue;
        size_t dlen;
        bool is_long;
        dbkey_make(st, saver, slen, keys[k].data, keys[k].len, dkb, &dlen,
                   &is_long);
        MDB_val dk = {dlen, dkb}, v;
        int rc = mdb_get(t, st->seqs, &dk, &v);
        rec r;
        if (rc == 0 && rec_parse(&v, &r) == 0 &&
            rec_key_matches(&r, is_long, keys[k].data, keys[k].len))
            next_segment[k] = r.next_segment;
        else if (rc != 0 && rc != MDB_NOTFOUND) {
            ret = mdb_fail(rc, "read record", msg);
            break;
        }
    }
    rd_end(st, t);
    return ret;
}

static bool saver_declared(MDB_txn *t, ss_store *st, const char *saver,
                           int *err, char *msg)
{
    MDB_val k = {strlen(saver), (void *)(uintptr_t)saver}, v;
    int rc = mdb_get(t, st->savers, &k, &v);
    *err = 0;
    if (rc == 0)
        return true;
    if (rc == MDB_NOTFOUND)
        snprintf(msg, SS_STORE_MSG, "saver '%.128s' is not declared", saver);
    else
        *err = mdb_fail(rc, "read saver", msg);
    return false;
}

int ss_store_stats_get(ss_store *st, const char *saver, ss_store_stats *out)
{
    char msg[SS_STORE_MSG];
    MDB_txn *t = NULL;
    MDB_stat ms;
    MDB_envinfo ei;
    memset(out, 0, sizeof *out);
    int ret = rd_begin(st, &t, msg);
    if (ret < 0)
        return ret;
    int rc = mdb_stat(t, st->savers, &ms);
    if (rc != 0) {
        ret = mdb_fail(rc, "stat", msg);
        goto out;
    }
    out->savers = ms.ms_entries;
    mdb_env_info(st->env, &ei);
    out->map_size = ei.me_mapsize;
    out->map_used = ((uint64_t)ei.me_last_pgno + 1) * ms.ms_psize;
    if (saver && saver[0]) {
        if (!saver_declared(t, st, saver, &ret, msg)) {
            if (ret == 0)
                ret = SS_ERR_NOT_FOUND;
            goto out;
        }
        ret = counts_get(t, st, saver, &out->sequences, &out->evicted, msg);
        goto out;
    }
    rc = mdb_stat(t, st->seqs, &ms);
    if (rc != 0) {
        ret = mdb_fail(rc, "stat", msg);
        goto out;
    }
    out->sequences = ms.ms_entries;
    MDB_cursor *c = NULL;
    rc = mdb_cursor_open(t, st->counts, &c);
    if (rc != 0) {
        ret = mdb_fail(rc, "cursor", msg);
        goto out;
    }
    MDB_val k, v;
    for (rc = mdb_cursor_get(c, &k, &v, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(c, &k, &v, MDB_NEXT))
        if (v.mv_size == COUNTS_BYTES)
            out->evicted += ss_le64_get((const uint8_t *)v.mv_data + 8);
    mdb_cursor_close(c);
out:
    rd_end(st, t);
    return ret;
}

static int cmp_bytes(const uint8_t *a, size_t al, const uint8_t *b, size_t bl)
{
    int c = memcmp(a, b, al < bl ? al : bl);
    if (c)
        return c;
    return al < bl ? -1 : al > bl;
}

int ss_store_list(ss_store *st, const char *saver, ss_bytes prefix,
                  ss_bytes start_after, size_t limit, ss_store_list_cb cb,
                  void *arg, bool *more)
{
    char msg[SS_STORE_MSG];
    MDB_txn *t = NULL;
    MDB_cursor *c = NULL;
    uint8_t lo[DBKEY_MAX], sa[DBKEY_MAX];
    size_t slen = strlen(saver);
    *more = false;
    if (slen == 0 || slen > SS_SAVER_NAME_MAX || prefix.len > SS_STORE_KEY_MAX ||
        start_after.len > SS_STORE_KEY_MAX)
        return SS_ERR_INVALID;
    if (limit == 0)
        limit = SS_LIST_LIMIT_DEFAULT;
    int ret = rd_begin(st, &t, msg);
    if (ret < 0)
        return ret;
    if (!saver_declared(t, st, saver, &ret, msg)) {
        if (ret == 0)
            ret = SS_ERR_NOT_FOUND;
        goto out;
    }
    /* Every DB key of a key starting with prefix starts with base+dprefix:
     * long keys keep their first P bytes visible. */
    size_t pvis = st->maxkey - HASH_BYTES - slen - 1;
    size_t dplen = prefix.len < pvis ? prefix.len : pvis;
    memcpy(lo, saver, slen);
    lo[slen] = 0;
    if (dplen)
        memcpy(lo + slen + 1, prefix.data, dplen);
    size_t lolen = slen + 1 + dplen;
    MDB_val k = {lolen, lo}, v;
    size_t salen = 0;
    if (start_after.len) {
        bool is_long;
        dbkey_make(st, saver, slen, start_after.data, start_after.len, sa,
                   &salen, &is_long);
        if (cmp_bytes(sa, salen, lo, lolen) > 0) {
            k.mv_data = sa;
            k.mv_size = salen;
        } else {
            salen = 0; /* start_after sorts before the prefix: ignore */
        }
    }
    int rc = mdb_cursor_open(t, st->seqs, &c);
    if (rc != 0) {
        ret = mdb_fail(rc, "cursor", msg);
        goto out;
    }
    size_t emitted = 0;
    for (rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE); rc == 0;
         rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
        if (k.mv_size < lolen || memcmp(k.mv_data, lo, lolen) != 0)
            break;
        if (salen && cmp_bytes(k.mv_data, k.mv_size, sa, salen) == 0)
            continue;
        rec r;
        if (rec_parse(&v, &r) < 0)
            continue; /* corrupt record: skip rather than fail a listing */
        ss_bytes key;
        if (r.key_len) {
            key.data = r.key;
            key.len = r.key_len;
        } else {
            key.data = (const uint8_t *)k.mv_data + slen + 1;
            key.len = k.mv_size - slen - 1;
        }
        if (key.len < prefix.len ||
            (prefix.len && memcmp(key.data, prefix.data, prefix.len) != 0))
            continue;
        if (emitted == limit) {
            *more = true;
            break;
        }
        ret = cb(arg, &key, r.next_segment, r.updated_ms);
        if (ret != 0)
            goto out;
        emitted++;
    }
    if (rc != 0 && rc != MDB_NOTFOUND)
        ret = mdb_fail(rc, "list", msg);
out:
    if (c)
        mdb_cursor_close(c);
    rd_end(st, t);
    return ret;
}

int ss_store_list_savers(ss_store *st, ss_store_saver_cb cb, void *arg)
{
    char msg[SS_STORE_MSG];
    MDB_txn *t = NULL;
    MDB_cursor *c = NULL;
    int ret = rd_begin(st, &t, msg);
    if (ret < 0)
        return ret;
    int rc = mdb_cursor_open(t, st->savers, &c);
    if (rc != 0) {
        ret = mdb_fail(rc, "cursor", msg);
        goto out;
    }
    MDB_val k, v;
    for (rc = mdb_cursor_get(c, &k, &v, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
        ss_schema *s = NULL;
        uint64_t seqs = 0, ev = 0;
        ret = ss_schema_unpack(v.mv_data, v.mv_size, &s, msg);
        if (ret < 0)
            goto out;
        ret = counts_get(t, st, s->saver, &seqs, &ev, msg);
        if (ret == 0)
            ret = cb(arg, s, seqs);
        ss_schema_unref(s);
        if (ret != 0)
            goto out;
    }
    if (rc != MDB_NOTFOUND)
        ret = mdb_fail(rc, "list savers", msg);
out:
    if (ret == SS_ERR_STORE)
        SS_LOG(SS_LOG_ERROR, "store: %s", msg);
    if (c)
        mdb_cursor_close(c);
    rd_end(st, t);
    return ret;
}

/* ---- transactions ---- */

int ss_store_txn_begin(ss_store *st, ss_store_txn **out, char msg[SS_STORE_MSG])
{
    *out = NULL;
    ss_store_txn *t = calloc(1, sizeof *t);
    if (!t) {
        snprintf(msg, SS_STORE_MSG, "out of memory");
        return SS_ERR_NOMEM;
    }
    t->st = st;
    int rc = mdb_txn_begin(st->env, NULL, 0, &t->stack[0]);
    if (rc != 0) {
        free(t);
        return mdb_fail(rc, "begin write transaction", msg);
    }
    t->depth = 1;
    *out = t;
    return 0;
}

static void pend_release(pending *p)
{
    ss_schema_unref(p->add);
    free(p->remove);
}

static void txn_free(ss_store_txn *t)
{
    for (size_t i = 0; i < t->n_pend; i++)
        pend_release(&t->pend[i]);
    free(t->pend);
    free(t);
}

void ss_store_txn_abort(ss_store_txn *t)
{
    if (!t)
        return;
    /* Aborting the top transaction aborts its children too. */
    mdb_txn_abort(t->stack[0]);
    txn_free(t);
}

int ss_store_txn_commit(ss_store_txn *t, char msg[SS_STORE_MSG])
{
    int ret = 0;
    if (t->depth != 1) {
        snprintf(msg, SS_STORE_MSG, "commit with %zu child transactions open",
                 t->depth - 1);
        mdb_txn_abort(t->stack[0]);
        txn_free(t);
        return SS_ERR_INTERNAL;
    }
    int rc = mdb_txn_commit(t->stack[0]);
    if (rc != 0) {
        ret = mdb_fail(rc, "commit", msg);
        txn_free(t);
        return ret;
    }
    ss_store *st = t->st;
    pthread_mutex_lock(&st->cache_mu);
    for (size_t i = 0; i < t->n_pend; i++) {
        pending *p = &t->pend[i];
        if (p->add) {
            if (cache_put(st, p->add) < 0)
                SS_LOG(SS_LOG_ERROR, "store: out of memory caching a schema");
            p->add = NULL; /* reference moved to the cache */
        } else {
            cache_remove(st, p->remove);
        }
    }
    pthread_mutex_unlock(&st->cache_mu);
    txn_free(t);
    return 0;
}

int ss_store_txn_child_begin(ss_store_txn *t, char msg[SS_STORE_MSG])
{
    if (t->depth >= SS_STORE_TXN_DEPTH + 1) {
        snprintf(msg, SS_STORE_MSG, "transactions nested deeper than %d",
                 SS_STORE_TXN_DEPTH);
        return SS_ERR_INTERNAL;
    }
    MDB_txn *child = NULL;
    int rc = mdb_txn_begin(t->st->env, cur_txn(t), 0, &child);
    if (rc != 0)
        return mdb_fail(rc, "begin nested transaction", msg);
    t->marks[t->depth] = t->n_pend;
    t->stack[t->depth++] = child;
    return 0;
}

int ss_store_txn_child_end(ss_store_txn *t, bool commit, char msg[SS_STORE_MSG])
{
    if (t->depth < 2) {
        snprintf(msg, SS_STORE_MSG, "no nested transaction to end");
        return SS_ERR_INTERNAL;
    }
    MDB_txn *child = t->stack[--t->depth];
    size_t mark = t->marks[t->depth];
    int ret = 0;
    if (commit) {
        int rc = mdb_txn_commit(child);
        if (rc != 0)
            ret = mdb_fail(rc, "commit nested transaction", msg);
    } else {
        mdb_txn_abort(child);
    }
    if (!commit || ret < 0) {
        for (size_t i = mark; i < t->n_pend; i++)
            pend_release(&t->pend[i]);
        t->n_pend = mark;
    }
    return ret;
}

struct MDB_txn *ss_store_txn_mdb(ss_store_txn *t)
{
    return cur_txn(t);
}

static int pend_push(ss_store_txn *t, ss_schema *add, const char *remove)
{
    if (t->n_pend == t->cap_pend) {
        size_t cap = t->cap_pend ? t->cap_pend * 2 : 4;
        pending *p = realloc(t->pend, cap * sizeof *p);
        if (!p)
            return SS_ERR_NOMEM;
        t->pend = p;
        t->cap_pend = cap;
    }
    pending *p = &t->pend[t->n_pend];
    p->add = add;
    p->remove = NULL;
    if (!add) {
        if (!remove)
            return SS_ERR_INTERNAL; /* one of the two is required */
        p->remove = strdup(remove);
        if (!p->remove)
            return SS_ERR_NOMEM;
    }
    t->n_pend++;
    return 0;
}

/* ---- writes ---- */

int ss_store_declare(ss_store_txn *txn, const ss_schema *schema, bool *created,
                     char msg[SS_STORE_MSG])
{
    ss_store *st = txn->st;
    MDB_txn *t = cur_txn(txn);
    uint8_t *buf = NULL;
    size_t len = 0;
    ss_schema *copy = NULL;
    int ret = 0;
    msg[0] = '\0';
    *created = false;
    MDB_val k = {strlen(schema->saver), schema->saver}, v;
    int rc = mdb_get(t, st->savers, &k, &v);
    if (rc == 0) {
        ss_schema *old = NULL;
        ret = ss_schema_unpack(v.mv_data, v.mv_size, &old, msg);
        if (ret < 0)
            return ret;
        if (!ss_schema_equal(old, schema)) {
            char diff[160];
            ss_schema_diff(old, schema, diff, sizeof diff);
            snprintf(msg, SS_STORE_MSG,
                     "saver '%.64s' already declared with a different schema "
                     "(stored vs requested: %.100s)", schema->saver, diff);
            ret = SS_ERR_CONFLICT;
        }
        ss_schema_unref(old);
        return ret;
    }
    if (rc != MDB_NOTFOUND)
        return mdb_fail(rc, "read saver", msg);
    uint64_t gen = st->next_gen++;
    ret = ss_schema_pack(schema, gen, &buf, &len);
    if (ret < 0)
        goto out;
    /* The cached schema is parsed back from the stored bytes, so it
     * carries the generation and is exactly what a restart would load. */
    ret = ss_schema_unpack(buf, len, &copy, msg);
    if (ret < 0)
        goto out;
    v.mv_data = buf;
    v.mv_size = len;
    rc = mdb_put(t, st->savers, &k, &v, 0);
    if (rc != 0) {
        ret = mdb_fail(rc, "store schema", msg);
        goto out;
    }
    /* A stale counts entry cannot exist (drop removes it); start at 0. */
    uint8_t zero[COUNTS_BYTES] = {0};
    MDB_val cv = {sizeof zero, zero};
    rc = mdb_put(t, st->counts, &k, &cv, 0);
    if (rc != 0) {
        ret = mdb_fail(rc, "store counts", msg);
        goto out;
    }
    ret = pend_push(txn, copy, NULL);
    if (ret < 0)
        goto out;
    copy = NULL;
    *created = true;
out:
    if (ret == SS_ERR_NOMEM && !msg[0])
        snprintf(msg, SS_STORE_MSG, "out of memory");
    ss_schema_unref(copy);
    free(buf);
    return ret;
}

static int conflict(const ss_save_item *it, uint64_t found, const MDB_val *ev,
                    const fin_mark *fin, char *msg)
{
    char ek[96], when[40];
    key_escape(it->key.data, it->key.len, ek, sizeof ek);
    if (fin) {
        fmt_time(fin->finished_ms, when, sizeof when);
        snprintf(msg, SS_STORE_MSG,
                 "key '%s': save of segment %llu expected next_segment %llu, "
                 "found 0 (finished at next_segment %llu at %.29s; save segment "
                 "0 to start again)", ek,
                 (unsigned long long)it->segment,
                 (unsigned long long)it->segment,
                 (unsigned long long)fin->next_segment, when);
    } else if (ev) {
        fmt_time(ev->mv_size >= EVICT_HDR
                     ? ss_le64_get((const uint8_t *)ev->mv_data + 24) : 0,
                 when, sizeof when);
        snprintf(msg, SS_STORE_MSG,
                 "key '%s': save of segment %llu expected next_segment %llu, "
                 "found 0 (evicted after idle ttl at %s; save segment 0 to "
                 "restart)", ek, (unsigned long long)it->segment,
                 (unsigned long long)it->segment, when);
    } else {
        snprintf(msg, SS_STORE_MSG,
                 "key '%s': save of segment %llu expected next_segment %llu, "
                 "found %llu", ek, (unsigned long long)it->segment,
                 (unsigned long long)it->segment, (unsigned long long)found);
    }
    return SS_ERR_CONFLICT;
}

/* One CAS step. *dseqs tracks records created (+1) and deleted (-1). */
static int save_one(ss_store *st, MDB_txn *t, const ss_schema *schema,
                    size_t slen, const ss_save_item *it, bool *applied,
                    uint64_t now_ms, int64_t *dseqs, char *msg)
{
    uint8_t dkb[DBKEY_MAX];
    size_t dlen;
    bool is_long;
    int ret = key_check(&it->key, msg);
    if (ret < 0)
        return ret;
    dbkey_make(st, schema->saver, slen, it->key.data, it->key.len, dkb, &dlen,
               &is_long);
    MDB_val dk = {dlen, dkb}, v;
    int rc = mdb_get(t, st->seqs, &dk, &v);
    bool found = rc == 0;
    uint64_t cur = 0;
    if (rc != 0 && rc != MDB_NOTFOUND)
        return mdb_fail(rc, "read record", msg);
    if (found) {
        rec r;
        if (rec_parse(&v, &r) < 0 || r.states_len != schema->state_bytes) {
            snprintf(msg, SS_STORE_MSG, "corrupt record (%zu bytes)", v.mv_size);
            return SS_ERR_STORE;
        }
        if (!rec_key_matches(&r, is_long, it->key.data, it->key.len)) {
            char ek[96];
            key_escape(it->key.data, it->key.len, ek, sizeof ek);
            snprintf(msg, SS_STORE_MSG,
                     "key '%s' collides with another long key's hash", ek);
            return SS_ERR_CONFLICT;
        }
        cur = r.next_segment;
    }
    *applied = false;
    if (found && it->segment != UINT64_MAX && cur == it->segment + 1) {
        *applied = true;
        return 0;
    }
    fin_mark fin;
    int has_fin = 1;
    if (!found && it->segment != 0) {
        has_fin = finished_get(t, st, &dk, is_long, it->key.data, it->key.len,
                               now_ms, &fin, msg);
        if (has_fin < 0)
            return has_fin;
        if (has_fin == 0 && it->final && it->segment != UINT64_MAX &&
            fin.next_segment == it->segment + 1) {
            *applied = true; /* retry of the final save that ended it */
            return 0;
        }
    }
    if (cur != it->segment || it->segment == UINT64_MAX) {
        MDB_val ev;
        if (!found) {
            if (has_fin == 0)
                return conflict(it, cur, NULL, &fin, msg);
            rc = evicted_get(t, st, &dk, is_long, it->key.data, it->key.len,
                             &ev, msg);
            if (rc < 0)
                return rc;
            return conflict(it, cur, rc == 0 ? &ev : NULL, NULL, msg);
        }
        return conflict(it, cur, NULL, NULL, msg);
    }
    if (!found) {
        /* Segment 0 of a key without a record: (re)start. Clear any
         * eviction marker so fetch no longer reports NOT_FOUND, and any
         * finished marker so the new sequence's saves are judged alone. */
        rc = mdb_del(t, st->evicted, &dk, NULL);
        if (rc != 0 && rc != MDB_NOTFOUND)
            return mdb_fail(rc, "clear eviction marker", msg);
        rc = mdb_del(t, st->finished, &dk, NULL);
        if (rc != 0 && rc != MDB_NOTFOUND)
            return mdb_fail(rc, "clear finished marker", msg);
    }
    if (it->final && !schema->keep_final) {
        if (found) {
            rc = mdb_del(t, st->seqs, &dk, NULL);
            if (rc != 0)
                return mdb_fail(rc, "delete final record", msg);
            (*dseqs)--;
            /* Remember the end so a retry of this very save (reply lost)
             * reports already_applied instead of a conflict. */
            size_t fkl = is_long ? it->key.len : 0;
            MDB_val fv = {FIN_HDR + fkl, NULL};
            rc = mdb_put(t, st->finished, &dk, &fv, MDB_RESERVE);
            if (rc != 0)
                return mdb_fail(rc, "write finished marker", msg);
            uint8_t *fp = fv.mv_data;
            fp[0] = REC_VERSION;
            fp[1] = fp[2] = fp[3] = 0;
            le32_put(fp + 4, (uint32_t)fkl);
            ss_le64_put(fp + 8, it->segment + 1);
            ss_le64_put(fp + 16, now_ms);
            if (fkl)
                memcpy(fp + FIN_HDR, it->key.data, fkl);
        }
        return 0;
    }
    size_t kl = is_long ? it->key.len : 0;
    v.mv_size = REC_HDR + kl + schema->state_bytes;
    v.mv_data = NULL;
    rc = mdb_put(t, st->seqs, &dk, &v, MDB_RESERVE);
    if (rc != 0)
        return mdb_fail(rc, "write record", msg);
    uint8_t *p = v.mv_data;
    p[0] = REC_VERSION;
    p[1] = 0;
    p[2] = p[3] = 0;
    le32_put(p + 4, (uint32_t)kl);
    ss_le64_put(p + 8, it->segment + 1);
    ss_le64_put(p + 16, now_ms);
    p += REC_HDR;
    if (kl) {
        memcpy(p, it->key.data, kl);
        p += kl;
    }
    for (size_t i = 0; i < schema->n_states; i++) {
        size_t nb = schema->states[i].nbytes;
        memcpy(p, it->states[i], nb);
        p += nb;
    }
    if (!found)
        (*dseqs)++;
    return 0;
}

int ss_store_save(ss_store_txn *txn, const ss_schema *schema, size_t n,
                  const ss_save_item *items, bool *already_applied,
                  uint64_t now_ms, char msg[SS_STORE_MSG])
{
    ss_store *st = txn->st;
    size_t slen = strlen(schema->saver);
    int64_t dseqs = 0;
    bool nested = false;
    msg[0] = '\0';
    if (n == 0)
        return 0;
    int ret = saver_check(cur_txn(txn), st, schema, msg);
    if (ret < 0)
        return ret;
    /* A failure after some items were written must leave nothing behind.
     * A single item that is neither final nor segment 0 writes only its
     * record (after every check), so it needs no child transaction; the
     * others may write twice (clear a marker and write the record; delete
     * the record and write a finished marker) and the second can fail. */
    if (n > 1 || items[0].final || items[0].segment == 0) {
        ret = ss_store_txn_child_begin(txn, msg);
        if (ret < 0)
            return ret;
        nested = true;
    }
    MDB_txn *t = cur_txn(txn);
    for (size_t i = 0; i < n && ret == 0; i++)
        ret = save_one(st, t, schema, slen, &items[i], &already_applied[i],
                       now_ms, &dseqs, msg);
    if (ret == 0 && dseqs != 0)
        ret = counts_add(t, st, schema->saver, dseqs, 0, msg);
    if (nested) {
        char m2[SS_STORE_MSG];
        int rc = ss_store_txn_child_end(txn, ret == 0, m2);
        if (ret == 0 && rc < 0) {
            memcpy(msg, m2, SS_STORE_MSG);
            ret = rc;
        }
    }
    return ret;
}

/* Delete every entry of dbi whose key starts with pfx; count them. */
static int del_prefix(MDB_txn *t, MDB_dbi dbi, const uint8_t *pfx, size_t plen,
                      uint64_t *count, char *msg)
{
    MDB_cursor *c = NULL;
    int rc = mdb_cursor_open(t, dbi, &c);
    if (rc != 0)
        return mdb_fail(rc, "cursor", msg);
    MDB_val k = {plen, (void *)(uintptr_t)pfx}, v;
    int ret = 0;
    *count = 0;
    for (rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE); rc == 0;
         rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
        if (k.mv_size < plen || memcmp(k.mv_data, pfx, plen) != 0)
            break;
        rc = mdb_cursor_del(c, 0);
        if (rc != 0)
            break;
        (*count)++;
    }
    if (rc != 0 && rc != MDB_NOTFOUND)
        ret = mdb_fail(rc, "delete", msg);
    mdb_cursor_close(c);
    return ret;
}

int ss_store_drop(ss_store_txn *txn, const char *saver, size_t n,
                  const ss_bytes *keys, bool all, uint64_t *dropped,
                  char msg[SS_STORE_MSG])
{
    ss_store *st = txn->st;
    MDB_txn *t = cur_txn(txn);
    uint8_t dkb[DBKEY_MAX];
    size_t slen = strlen(saver);
    int ret = 0;
    msg[0] = '\0';
    *dropped = 0;
    if (slen == 0 || slen > SS_SAVER_NAME_MAX) {
        snprintf(msg, SS_STORE_MSG, "saver name of %zu bytes (must be 1..%u)",
                 slen, SS_SAVER_NAME_MAX);
        return SS_ERR_INVALID;
    }
    if (!saver_declared(t, st, saver, &ret, msg))
        return ret ? ret : SS_ERR_NOT_FOUND;
    if (all) {
        uint64_t recs = 0, marks = 0, fins = 0;
        memcpy(dkb, saver, slen);
        dkb[slen] = 0;
        ret = del_prefix(t, st->seqs, dkb, slen + 1, &recs, msg);
        if (ret == 0)
            ret = del_prefix(t, st->evicted, dkb, slen + 1, &marks, msg);
        if (ret == 0)
            ret = del_prefix(t, st->finished, dkb, slen + 1, &fins, msg);
        if (ret < 0)
            return ret;
        MDB_val k = {slen, (void *)(uintptr_t)saver};
        int rc = mdb_del(t, st->savers, &k, NULL);
        if (rc == 0)
            rc = mdb_del(t, st->counts, &k, NULL);
        if (rc != 0 && rc != MDB_NOTFOUND)
            return mdb_fail(rc, "drop saver", msg);
        ret = pend_push(txn, NULL, saver);
        if (ret < 0) {
            snprintf(msg, SS_STORE_MSG, "out of memory");
            return ret;
        }
        *dropped = recs;
        SS_LOG(SS_LOG_INFO, "store: dropped saver '%s' (%llu sequences)", saver,
               (unsigned long long)recs);
        return 0;
    }
    int64_t dseqs = 0;
    for (size_t i = 0; i < n; i++) {
        ret = key_check(&keys[i], msg);
        if (ret < 0)
            return ret;
        size_t dlen;
        bool is_long, hit = false;
        dbkey_make(st, saver, slen, keys[i].data, keys[i].len, dkb, &dlen,
                   &is_long);
        MDB_val dk = {dlen, dkb}, v;
        int rc = mdb_get(t, st->seqs, &dk, &v);
        rec r;
        if (rc == 0 && (!is_long || (rec_parse(&v, &r) == 0 &&
                                     rec_key_matches(&r, true, keys[i].data,
                                                     keys[i].len)))) {
            rc = mdb_del(t, st->seqs, &dk, NULL);
            if (rc != 0)
                return mdb_fail(rc, "delete record", msg);
            dseqs--;
            hit = true;
        } else if (rc != 0 && rc != MDB_NOTFOUND) {
            return mdb_fail(rc, "read record", msg);
        }
        rc = evicted_get(t, st, &dk, is_long, keys[i].data, keys[i].len, &v,
                         msg);
        if (rc < 0)
            return rc;
        if (rc == 0) {
            rc = mdb_del(t, st->evicted, &dk, NULL);
            if (rc != 0)
                return mdb_fail(rc, "delete eviction marker", msg);
            hit = true;
        }
        /* A finished key has no data left to drop, so it is not counted;
         * its marker goes so a later save is judged afresh. */
        rc = marker_get(t, st->finished, FIN_HDR, &dk, is_long, keys[i].data,
                        keys[i].len, &v, msg);
        if (rc < 0)
            return rc;
        if (rc == 0) {
            rc = mdb_del(t, st->finished, &dk, NULL);
            if (rc != 0)
                return mdb_fail(rc, "delete finished marker", msg);
        }
        if (hit)
            (*dropped)++;
    }
    if (dseqs)
        ret = counts_add(t, st, saver, dseqs, 0, msg);
    return ret;
}

/* Write the eviction marker of the record the cursor is on. */
static int mark_evicted(MDB_txn *t, ss_store *st, const MDB_val *k,
                        const rec *r, uint64_t now_ms, char *msg)
{
    MDB_val v = {EVICT_HDR + r->key_len, NULL};
    MDB_val kk = *k;
    int rc = mdb_put(t, st->evicted, &kk, &v, MDB_RESERVE);
    if (rc != 0)
        return mdb_fail(rc, "write eviction marker", msg);
    uint8_t *p = v.mv_data;
    p[0] = REC_VERSION;
    p[1] = p[2] = p[3] = 0;
    le32_put(p + 4, (uint32_t)r->key_len);
    ss_le64_put(p + 8, r->next_segment);
    ss_le64_put(p + 16, r->updated_ms);
    ss_le64_put(p + 24, now_ms);
    if (r->key_len)
        memcpy(p + EVICT_HDR, r->key, r->key_len);
    return 0;
}

/* Per-saver progress of one eviction pass. */
typedef struct evict_cur {
    char saver[SS_SAVER_NAME_MAX + 1]; /* saver of the last record seen */
    size_t slen;                        /* its length */
    uint64_t ttl;                       /* its idle_ttl_ms (0 = none) */
    uint64_t count;                     /* evicted, not yet in counts */
} evict_cur;

static int evict_flush(MDB_txn *t, ss_store *st, evict_cur *e, char *msg)
{
    if (e->count == 0)
        return 0;
    int rc = counts_add(t, st, e->saver, -(int64_t)e->count, e->count, msg);
    if (rc == 0)
        SS_LOG(SS_LOG_INFO, "store: evicted %llu idle sequences of saver '%s'",
               (unsigned long long)e->count, e->saver);
    e->count = 0;
    return rc;
}

/* Delete up to max finished markers older than the retention, examining
 * at most budget of them from where the last call stopped (wrapping
 * around). *expired gets the count. */
static int expire_finished(MDB_txn *t, ss_store *st, uint64_t now_ms,
                           size_t max, size_t budget, uint64_t *expired,
                           char *msg)
{
    MDB_cursor *c = NULL;
    int ret = 0;
    *expired = 0;
    int rc = mdb_cursor_open(t, st->finished, &c);
    if (rc != 0)
        return mdb_fail(rc, "cursor", msg);
    MDB_val k = {st->fin_pos_len, st->fin_pos}, v;
    rc = st->fin_pos_len ? mdb_cursor_get(c, &k, &v, MDB_SET_RANGE)
                         : mdb_cursor_get(c, &k, &v, MDB_FIRST);
    size_t examined = 0;
    while (rc == 0 && examined < budget && *expired < max) {
        examined++;
        const uint8_t *p = v.mv_data;
        /* A malformed marker is useless to saves (finished_get ignores
         * it): drop it like an expired one. */
        if (v.mv_size < FIN_HDR || p[0] != REC_VERSION ||
            fin_expired(st, ss_le64_get(p + 16), now_ms)) {
            rc = mdb_cursor_del(c, 0);
            if (rc != 0)
                break;
            (*expired)++;
        }
        rc = mdb_cursor_get(c, &k, &v, MDB_NEXT);
    }
    if (rc == 0) {
        st->fin_pos_len = k.mv_size <= DBKEY_MAX ? k.mv_size : 0;
        if (st->fin_pos_len)
            memcpy(st->fin_pos, k.mv_data, k.mv_size);
    } else if (rc == MDB_NOTFOUND) {
        st->fin_pos_len = 0;
    } else {
        ret = mdb_fail(rc, "expire finished markers", msg);
    }
    mdb_cursor_close(c);
    return ret;
}

int ss_store_evict_idle(ss_store_txn *txn, uint64_t now_ms, size_t max,
                        uint64_t *evicted)
{
    ss_store *st = txn->st;
    MDB_txn *t = cur_txn(txn);
    MDB_cursor *c = NULL;
    char msg[SS_STORE_MSG] = "";
    evict_cur e = {.slen = 0};
    uint8_t skip[SS_SAVER_NAME_MAX + 2];
    bool have_saver = false;
    int ret = 0;
    *evicted = 0;
    if (max == 0)
        return 0;
    size_t budget = max > SIZE_MAX / SS_STORE_EVICT_SCAN_FACTOR
                        ? SIZE_MAX : max * SS_STORE_EVICT_SCAN_FACTOR;
    int rc = mdb_cursor_open(t, st->seqs, &c);
    if (rc != 0) {
        ret = mdb_fail(rc, "cursor", msg);
        goto out;
    }
    MDB_val k = {st->evict_pos_len, st->evict_pos}, v;
    rc = st->evict_pos_len ? mdb_cursor_get(c, &k, &v, MDB_SET_RANGE)
                           : mdb_cursor_get(c, &k, &v, MDB_FIRST);
    size_t examined = 0;
    while (rc == 0 && examined < budget && *evicted < max) {
        examined++;
        const uint8_t *kp = k.mv_data;
        const uint8_t *nul = memchr(kp, 0, k.mv_size);
        size_t slen = nul ? (size_t)(nul - kp) : 0;
        if (!nul || slen == 0 || slen > SS_SAVER_NAME_MAX) {
            rc = mdb_cursor_get(c, &k, &v, MDB_NEXT); /* not ours: skip */
            continue;
        }
        if (!have_saver || slen != e.slen || memcmp(kp, e.saver, slen) != 0) {
            ret = evict_flush(t, st, &e, msg);
            if (ret < 0)
                goto out;
            memcpy(e.saver, kp, slen);
            e.saver[slen] = '\0';
            e.slen = slen;
            ss_schema *s = NULL;
            e.ttl = 0;
            if (ss_store_schema(st, e.saver, &s) == 0) {
                e.ttl = s->idle_ttl_ms;
                ss_schema_unref(s);
            }
            have_saver = true;
        }
        if (e.ttl == 0) {
            /* Jump past every key of this saver: "saver\x01" follows
             * all "saver\0..." keys. */
            memcpy(skip, e.saver, slen);
            skip[slen] = 1;
            k.mv_data = skip;
            k.mv_size = slen + 1;
            rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
            continue;
        }
        rec r;
        if (rec_parse(&v, &r) == 0 && r.updated_ms <= UINT64_MAX - e.ttl &&
            r.updated_ms + e.ttl <= now_ms) {
            ret = mark_evicted(t, st, &k, &r, now_ms, msg);
            if (ret < 0)
                goto out;
            rc = mdb_cursor_del(c, 0);
            if (rc != 0)
                break;
            e.count++;
            (*evicted)++;
        }
        rc = mdb_cursor_get(c, &k, &v, MDB_NEXT);
    }
    if (rc == 0) {
        /* Resume here next time (this record was not examined yet). */
        st->evict_pos_len = k.mv_size <= DBKEY_MAX ? k.mv_size : 0;
        if (st->evict_pos_len)
            memcpy(st->evict_pos, k.mv_data, k.mv_size);
    } else if (rc == MDB_NOTFOUND) {
        st->evict_pos_len = 0; /* reached the end: wrap around */
    } else {
        ret = mdb_fail(rc, "evict", msg);
        goto out;
    }
    ret = evict_flush(t, st, &e, msg);
    if (ret < 0)
        goto out;
    uint64_t expired = 0;
    ret = expire_finished(t, st, now_ms, max, budget, &expired, msg);
    if (ret == 0 && expired > 0)
        SS_LOG(SS_LOG_DEBUG, "store: deleted %llu expired finished markers",
               (unsigned long long)expired);
out:
    if (ret < 0)
        SS_LOG(SS_LOG_ERROR, "store: idle eviction failed: %s", msg);
    if (c)
        mdb_cursor_close(c);
    return ret;
}
