/* store_txn -- the nested-transaction stack: top write transaction,
 * children, and schema cache changes published on commit. */
#include "store.h"

#include <lmdb.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ss_error.h"
#include "ss_log.h"
#include "store_internal.h"

MDB_txn *store_cur_txn(ss_store_txn *t)
{
    return t->stack[t->depth - 1];
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
        return store_mdb_fail(rc, "begin write transaction", msg);
    }
    t->depth = 1;
    store_space_begin(t);
    *out = t;
    return 0;
}

static void pend_release(store_pending *p)
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
        ret = store_mdb_fail(rc, "commit", msg);
        txn_free(t);
        return ret;
    }
    ss_store *st = t->st;
    /* Make what this commit freed usable by the next transaction when
     * the map is nearly full (store_space.c). Its failure leaves the
     * commit above intact: log it, the next freeing commit retries. */
    if (store_space_tight(st)) {
        char m2[SS_STORE_MSG];
        if (store_space_flush(st, m2) < 0)
            SS_LOG(SS_LOG_WARN, "store: %s", m2);
    }
    pthread_mutex_lock(&st->cache_mu);
    for (size_t i = 0; i < t->n_pend; i++) {
        store_pending *p = &t->pend[i];
        if (p->add) {
            if (store_cache_put(st, p->add) < 0)
                SS_LOG(SS_LOG_ERROR, "store: out of memory caching a schema");
            p->add = NULL; /* reference moved to the cache */
        } else {
            store_cache_remove(st, p->remove);
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
    int rc = mdb_txn_begin(t->st->env, store_cur_txn(t), 0, &child);
    if (rc != 0)
        return store_mdb_fail(rc, "begin nested transaction", msg);
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
            ret = store_mdb_fail(rc, "commit nested transaction", msg);
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
    return store_cur_txn(t);
}

int store_pend_push(ss_store_txn *t, ss_schema *add, const char *remove)
{
    if (t->n_pend == t->cap_pend) {
        size_t cap = t->cap_pend ? t->cap_pend * 2 : 4;
        store_pending *p = realloc(t->pend, cap * sizeof *p);
        if (!p)
            return SS_ERR_NOMEM;
        t->pend = p;
        t->cap_pend = cap;
    }
    store_pending *p = &t->pend[t->n_pend];
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
