/* store -- open and close of the LMDB environment and the schema cache.
 *
 * The store's other modules: store_codec.c (keys and record codec),
 * store_read.c (read path), store_write.c (write path), store_evict.c
 * (eviction), store_txn.c (nested-transaction stack), store_space.c
 * (a full map stays recoverable), store_format.c (file checks at open,
 * format version and migration), store_schema.c (schemas). Byte layouts:
 * store_codec.c and docs/store-format.md.
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

/* ---- schema cache ---- */

static size_t name_hash(const char *s)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (; *s; s++)
        h = (h ^ (uint8_t)*s) * 0x100000001b3ull;
    return (size_t)store_mix64(h);
}

static store_cache_ent **cache_slot(ss_store *st, const char *name)
{
    store_cache_ent **pp = &st->buckets[name_hash(name) & (st->n_buckets - 1)];
    while (*pp && strcmp((*pp)->schema->saver, name) != 0)
        pp = &(*pp)->next;
    return pp;
}

/* Publish s (takes over one reference). cache_mu held. */
int store_cache_put(ss_store *st, ss_schema *s)
{
    if (st->n_cached >= st->n_buckets) {
        size_t nb = st->n_buckets * 2;
        store_cache_ent **b = calloc(nb, sizeof *b);
        if (b) {
            for (size_t i = 0; i < st->n_buckets; i++) {
                store_cache_ent *e = st->buckets[i];
                while (e) {
                    store_cache_ent *next = e->next;
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
    store_cache_ent **pp = cache_slot(st, s->saver);
    if (*pp) {
        ss_schema_unref((*pp)->schema);
        (*pp)->schema = s;
        return 0;
    }
    store_cache_ent *e = calloc(1, sizeof *e);
    if (!e) {
        ss_schema_unref(s);
        return SS_ERR_NOMEM;
    }
    e->schema = s;
    *pp = e;
    st->n_cached++;
    return 0;
}

void store_cache_remove(ss_store *st, const char *name)
{
    store_cache_ent **pp = cache_slot(st, name);
    store_cache_ent *e = *pp;
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
    store_cache_ent *e = *cache_slot(st, saver);
    if (e)
        *out = ss_schema_ref(e->schema);
    pthread_mutex_unlock(&st->cache_mu);
    return e ? 0 : SS_ERR_NOT_FOUND;
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
        return store_mdb_fail(rc, "open cursor", msg);
    int ret = 0;
    for (rc = mdb_cursor_get(c, &k, &v, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
        ss_schema *s = NULL;
        if (v.mv_size >= 8 && ss_le64_get(v.mv_data) >= st->next_gen)
            st->next_gen = ss_le64_get(v.mv_data) + 1;
        if (store_schema_get(st, &k, &v, &s, msg) < 0) {
            /* Damaged (counted, logged): the saver reads as not declared
             * and refuses a redeclare; Drop it to clear it. */
            msg[0] = '\0';
            continue;
        }
        if (s->generation >= st->next_gen)
            st->next_gen = s->generation + 1;
        ret = store_cache_put(st, s);
        if (ret < 0)
            goto out;
    }
    if (rc != MDB_NOTFOUND)
        ret = store_mdb_fail(rc, "scan savers", msg);
out:
    mdb_cursor_close(c);
    return ret;
}

int ss_store_open(ss_store **out, const ss_store_options *opt)
{
    char msg[SS_STORE_MSG];
    return ss_store_open_msg(out, opt, msg);
}

int ss_store_open_msg(ss_store **out, const ss_store_options *opt,
                      char msg[SS_STORE_MSG])
{
    return ss_store_open_growing(out, opt, 0, msg);
}

int ss_store_open_growing(ss_store **out, const ss_store_options *opt,
                          uint64_t max_map_size, char msg[SS_STORE_MSG])
{
    char path[4096];
    bool fresh = false;
    MDB_txn *t = NULL;
    int rc, ret = 0;
    *out = NULL;
    msg[0] = '\0';
    ss_store *st = calloc(1, sizeof *st);
    if (!st)
        return SS_ERR_NOMEM;
    st->lock_fd = -1;
    st->next_gen = 1;
    st->map_size = opt->map_size ? opt->map_size : SS_MAP_SIZE_DEFAULT;
    /* The whole --max-map-size is mapped now (address space only; the
     * file grows with use); map_size is the soft limit (store_space.c). */
    st->max_map_size = max_map_size > st->map_size ? max_map_size
                                                   : st->map_size;
    st->fin_retention = SS_STORE_FINISHED_RETENTION_MS_DEFAULT;
    st->reserve = store_reserve_bytes(st->max_map_size);
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
    /* A 0-byte data.mdb would be taken by LMDB for a new store. */
    ret = store_file_check(opt->dir, &fresh, msg);
    if (ret < 0)
        goto out;
    rc = mdb_env_create(&st->env);
    if (rc == 0)
        rc = mdb_env_set_maxdbs(st->env, SS_STORE_MAX_DBS);
    if (rc == 0)
        rc = mdb_env_set_mapsize(st->env,
                                 (size_t)(st->max_map_size + st->reserve));
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
        ret = store_mdb_fail(rc, "open LMDB environment", msg);
        goto out;
    }
    int dead = 0;
    mdb_reader_check(st->env, &dead);
    unsigned readers = 126;
    mdb_env_get_maxreaders(st->env, &readers);
    st->pool_max = readers / 4 < SS_STORE_READ_POOL ? readers / 4 : SS_STORE_READ_POOL;
    st->maxkey = (size_t)mdb_env_get_maxkeysize(st->env);
    MDB_stat es;
    mdb_env_stat(st->env, &es);
    st->psize = es.ms_psize ? es.ms_psize : 4096;
    /* Before any page is read through the map: a file shorter than the
     * last used page would raise SIGBUS on the first read past its end. */
    ret = store_size_check(st, opt->dir, msg);
    if (ret < 0)
        goto out;
    store_space_open(st);
    if (st->maxkey < MAXKEY_MIN || st->maxkey > DBKEY_MAX) {
        snprintf(msg, SS_STORE_MSG, "LMDB max key size %zu not in %u..%u",
                 st->maxkey, MAXKEY_MIN, DBKEY_MAX);
        ret = SS_ERR_STORE;
        goto out;
    }
    rc = mdb_txn_begin(st->env, NULL, 0, &t);
    if (rc != 0) {
        ret = store_mdb_fail(rc, "begin", msg);
        goto out;
    }
    if ((rc = mdb_dbi_open(t, "savers", MDB_CREATE, &st->savers)) != 0 ||
        (rc = mdb_dbi_open(t, "seqs", MDB_CREATE, &st->seqs)) != 0 ||
        (rc = mdb_dbi_open(t, "evicted", MDB_CREATE, &st->evicted)) != 0 ||
        (rc = mdb_dbi_open(t, "counts", MDB_CREATE, &st->counts)) != 0 ||
        (rc = mdb_dbi_open(t, "finished", MDB_CREATE, &st->finished)) != 0) {
        ret = store_mdb_fail(rc, "open databases", msg);
        goto out;
    }
    rc = mdb_txn_commit(t);
    t = NULL;
    if (rc != 0) {
        ret = store_mdb_fail(rc, "commit", msg);
        goto out;
    }
    ret = store_format_check(st, opt->dir, msg);
    if (ret < 0)
        goto out;
    rc = mdb_txn_begin(st->env, NULL, MDB_RDONLY, &t);
    if (rc != 0) {
        ret = store_mdb_fail(rc, "begin", msg);
        goto out;
    }
    ret = load_savers(st, t, msg);
    if (ret < 0)
        goto out;
    mdb_txn_abort(t);
    t = NULL;
    SS_LOG(SS_LOG_INFO, "store: opened '%s' (%zu savers, map %llu bytes, "
           "growing up to %llu, sync %s)",
           opt->dir, st->n_cached, (unsigned long long)st->map_size,
           (unsigned long long)st->max_map_size, opt->sync ? "on" : "off");
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
            store_cache_ent *e = st->buckets[i];
            while (e) {
                store_cache_ent *next = e->next;
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

uint64_t ss_store_corrupt_records(const ss_store *st)
{
    return __atomic_load_n(&st->corrupt, __ATOMIC_RELAXED);
}

bool ss_store_has_ttl_savers(ss_store *st)
{
    bool any = false;
    pthread_mutex_lock(&st->cache_mu);
    for (size_t i = 0; i < st->n_buckets && !any; i++)
        for (store_cache_ent *e = st->buckets[i]; e && !any; e = e->next)
            any = e->schema->idle_ttl_ms > 0;
    pthread_mutex_unlock(&st->cache_mu);
    return any;
}

uint64_t ss_store_last_txnid(ss_store *st)
{
    MDB_envinfo ei;
    mdb_env_info(st->env, &ei);
    return (uint64_t)ei.me_last_txnid;
}
