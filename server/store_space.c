/* store_space -- keeps a full map recoverable, and grows the map.
 *
 * LMDB reuses the pages a transaction frees only from the second commit
 * after it (the previous snapshot must stay intact), and committing a
 * transaction that frees pages itself needs a few fresh pages (copy-on-write
 * of the touched leaves and the freelist record). On a map filled to the
 * last page a Drop could therefore not commit, and the pages it freed were
 * never usable by the next Save. Two measures fix that:
 *
 * 1. Reserve. The LMDB map is opened a reserve (store_reserve_bytes)
 *    larger than --max-map-size, and a save is refused with SS_ERR_FULL
 *    (and rolled back) once the pages in use would pass --max-map-size:
 *    the committed last page + 1, minus the free pages reusable now, plus
 *    the pages the open transaction added to the store's trees (exact,
 *    from mdb_stat). Only Drop, eviction and the job queue use the reserve
 *    (raw writers may ask ss_store_reserve_check first).
 * 2. Flush commit. After a commit that freed pages (any module's) while
 *    the map is tight, ss_store_txn_commit commits once more with one
 *    dirty page (a store-private key in `counts`), so the freed pages are
 *    reusable by the very next transaction.
 *
 * Growth. mdb_env_set_mapsize may only run while no transaction is open
 * in the process (readers included), so the map is never resized: the
 * whole --max-map-size (plus the reserve) is mapped at open -- address
 * space only, the file grows with use -- and map_size, the current size
 * that Stats and the metrics report, is a soft limit starting at
 * --map-size. A save that would pass it raises it (doubling, clamped to
 * --max-map-size, logged); only --max-map-size refuses saves. A Drop
 * frees room there at once, so writes resume without a restart
 * (docs/decisions.md, "LMDB map growth").
 */
#include "store.h"

#include <lmdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ss_error.h"
#include "ss_log.h"
#include "store_internal.h"

/* Key of the flush commit's page in `counts`: saver names never start
 * with NUL, and readers of counts skip keys that do (store-private). */
static const char flush_key[] = "\0flush";

uint64_t store_reserve_bytes(uint64_t map_size)
{
    uint64_t r = map_size / 8;
    if (r < SS_STORE_RESERVE_MIN)
        r = SS_STORE_RESERVE_MIN;
    if (r > SS_STORE_RESERVE_MAX)
        r = SS_STORE_RESERVE_MAX;
    return r;
}

/* Free pages reusable by the next write transaction: every freelist
 * record but the one the last commit wrote (keys are txn ids). Read from
 * a snapshot of the committed state (own read transaction, ended before
 * returning). *last_freed tells whether the last commit freed pages. */
static uint64_t free_pages(ss_store *st, bool *last_freed)
{
    MDB_txn *t = NULL;
    MDB_cursor *c = NULL;
    MDB_val k, v;
    uint64_t total = 0;
    *last_freed = false;
    if (mdb_txn_begin(st->env, NULL, MDB_RDONLY, &t) != 0)
        return 0;
    MDB_envinfo ei;
    mdb_env_info(st->env, &ei);
    if (mdb_cursor_open(t, 0 /* FREE_DBI */, &c) == 0) {
        int rc;
        for (rc = mdb_cursor_get(c, &k, &v, MDB_FIRST); rc == 0;
             rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
            size_t id = 0;
            if (k.mv_size == sizeof id)
                memcpy(&id, k.mv_data, sizeof id);
            if (id == ei.me_last_txnid) {
                *last_freed = true;
                continue;
            }
            total += v.mv_size >= sizeof(size_t)
                         ? v.mv_size / sizeof(size_t) - 1 : 0;
        }
        mdb_cursor_close(c);
    }
    mdb_txn_abort(t);
    return total;
}

/* Pages in use by the committed state, net of reusable free pages. */
static uint64_t used_pages(ss_store *st)
{
    MDB_envinfo ei;
    mdb_env_info(st->env, &ei);
    uint64_t used = (uint64_t)ei.me_last_pgno + 1;
    if (used * st->psize + st->reserve <= st->max_map_size)
        return used; /* far from the limit: no freelist scan */
    /* The committed state cannot change while the writer thread is in a
     * transaction: count the freelist once per committed txn. */
    if (st->fp_txnid != (uint64_t)ei.me_last_txnid) {
        bool last_freed;
        st->fp_pages = free_pages(st, &last_freed);
        st->fp_txnid = (uint64_t)ei.me_last_txnid;
    }
    uint64_t fp = st->fp_pages;
    return fp < used ? used - fp : 0;
}

/* Tree pages (branch, leaf, overflow) of the store's databases as t
 * sees them: what its records occupy, free pages excluded. */
static uint64_t tree_pages(ss_store *st, MDB_txn *t)
{
    MDB_dbi dbis[] = {st->savers, st->seqs, st->evicted, st->counts,
                      st->finished};
    uint64_t n = 0;
    for (size_t i = 0; i < sizeof dbis / sizeof dbis[0]; i++) {
        MDB_stat ms;
        if (mdb_stat(t, dbis[i], &ms) == 0)
            n += ms.ms_branch_pages + ms.ms_leaf_pages + ms.ms_overflow_pages;
    }
    return n;
}

void store_space_begin(ss_store_txn *txn)
{
    txn->base_pages = tree_pages(txn->st, txn->stack[0]);
}

bool store_space_near(ss_store *st)
{
    MDB_envinfo ei;
    mdb_env_info(st->env, &ei);
    return ((uint64_t)ei.me_last_pgno + 1) * st->psize + st->reserve >
           st->max_map_size;
}

/* Raise the soft limit so that `pages` fit: double it until they do,
 * clamped to --max-map-size. Writer thread (or open); Stats reads it with
 * an atomic load. */
static void grow_to(ss_store *st, uint64_t pages)
{
    uint64_t cur = st->map_size, next = cur;
    uint64_t want = pages > st->max_map_size / st->psize ? st->max_map_size
                                                         : pages * st->psize;
    while (next < want)
        next = next > st->max_map_size / 2 ? st->max_map_size : next * 2;
    if (next > st->max_map_size)
        next = st->max_map_size;
    if (next <= cur)
        return;
    __atomic_store_n(&st->map_size, next, __ATOMIC_RELAXED);
    SS_LOG(SS_LOG_INFO, "store: LMDB map grew from %llu to %llu bytes "
           "(--max-map-size %llu)", (unsigned long long)cur,
           (unsigned long long)next, (unsigned long long)st->max_map_size);
}

void store_space_open(ss_store *st)
{
    MDB_envinfo ei;
    mdb_env_info(st->env, &ei);
    grow_to(st, (uint64_t)ei.me_last_pgno + 1);
}

/* A put of `bytes` adds at most its own pages (twice: leaves split half
 * full) plus copies of the path to it (LMDB trees here are < 6 deep). */
void store_space_note(ss_store_txn *txn, size_t bytes)
{
    txn->bound_pages += 2 * ((bytes + txn->st->psize - 1) / txn->st->psize) + 6;
}

int store_space_check(ss_store_txn *txn, size_t bytes, char *msg)
{
    ss_store *st = txn->st;
    uint64_t soft = st->map_size / st->psize;
    uint64_t hard = st->max_map_size / st->psize;
    int64_t extra = bytes ? (int64_t)((bytes + st->psize - 1) / st->psize + 1)
                          : 0;
    MDB_envinfo ei;
    mdb_env_info(st->env, &ei);
    uint64_t top = (uint64_t)ei.me_last_pgno + 1;
    if (top + txn->bound_pages + (uint64_t)extra <= soft)
        return 0; /* far from full: not even the bound can reach it */
    /* Pages the open transaction added to (or removed from) the store's
     * trees so far, exact (LMDB keeps the counts per database). */
    int64_t delta = (int64_t)tree_pages(st, store_cur_txn(txn)) -
                    (int64_t)txn->base_pages;
    int64_t grow = delta + extra > 0 ? delta + extra : 0;
    if (top + (uint64_t)grow <= soft)
        return 0; /* fits even without reusing a free page */
    if (top + (uint64_t)grow <= hard) {
        grow_to(st, top + (uint64_t)grow); /* the map grows */
        return 0;
    }
    int64_t net = (int64_t)used_pages(st) + delta + extra;
    if (net <= (int64_t)hard) {
        grow_to(st, hard); /* at its largest, reusing free pages */
        return 0;
    }
    snprintf(msg, SS_STORE_MSG,
             "LMDB map is full (--max-map-size %llu bytes, about %llu with "
             "this save); "
             "Drop sequences or savers (their space is reusable at once) or "
             "restart the server with a larger --max-map-size (and "
             "--map-size)",
             (unsigned long long)st->max_map_size,
             (unsigned long long)((uint64_t)net * st->psize));
    return SS_ERR_FULL;
}

bool store_space_tight(ss_store *st)
{
    MDB_envinfo ei;
    mdb_env_info(st->env, &ei);
    if (((uint64_t)ei.me_last_pgno + 1) * st->psize + st->reserve <=
        st->max_map_size)
        return false;
    bool last_freed;
    free_pages(st, &last_freed);
    return last_freed;
}

int store_space_flush(ss_store *st, char *msg)
{
    MDB_txn *t = NULL;
    MDB_envinfo ei;
    int rc = mdb_txn_begin(st->env, NULL, 0, &t);
    if (rc != 0)
        return store_mdb_fail(rc, "begin flush commit", msg);
    mdb_env_info(st->env, &ei);
    uint8_t buf[8];
    ss_le64_put(buf, (uint64_t)ei.me_last_txnid);
    MDB_val k = {sizeof flush_key - 1, (void *)(uintptr_t)flush_key};
    MDB_val v = {sizeof buf, buf};
    rc = mdb_put(t, st->counts, &k, &v, 0);
    if (rc != 0) {
        mdb_txn_abort(t);
        return store_mdb_fail(rc, "flush commit", msg);
    }
    rc = mdb_txn_commit(t);
    if (rc != 0)
        return store_mdb_fail(rc, "flush commit", msg);
    st->flushes++;
    return 0;
}

int ss_store_reserve_check(ss_store_txn *txn, size_t bytes,
                           char msg[SS_STORE_MSG])
{
    int ret = store_space_check(txn, bytes, msg);
    if (ret == 0)
        store_space_note(txn, bytes); /* the caller puts it now */
    return ret;
}
