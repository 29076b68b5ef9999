/* barrier -- requests parked until sequences reach a segment. */
#include "barrier.h"

#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "ss_error.h"
#include "ss_log.h"

#define BARRIER_BUCKETS_INITIAL 64u

typedef struct ss_barrier_waiter waiter;

/* One (saver, key) a waiter waits on: a node of a hash bucket chain. */
typedef struct bentry {
    struct bentry *prev; /* bucket chain */
    struct bentry *next; /* bucket chain */
    uint64_t hash;       /* hash of saver '\0' key */
    size_t bucket;       /* index it is chained in */
    ss_bytes key;        /* borrowed from the request */
    waiter *w;           /* owner */
} bentry;

struct ss_barrier_waiter {
    ss_barrier *b;             /* owning barrier */
    ss_request *req;           /* the parked request */
    const char *saver;         /* borrowed from the request */
    uv_timer_t timer;          /* expiry; waiter freed in its close cb */
    ss_barrier_ready_fn ready; /* may it proceed? */
    ss_barrier_wake_fn wake;   /* answer it */
    void *arg;                 /* for ready and wake */
    size_t n;                  /* entries */
    bentry *entries;           /* one per key (same allocation) */
    waiter *prev;              /* list of all waiters */
    waiter *next;              /* list of all waiters */
    waiter *check_next;        /* notify's work list */
    uint64_t gen;              /* notify generation that queued it */
    bool linked;               /* still parked */
};

struct ss_barrier {
    uv_loop_t *loop;  /* timers run here */
    bentry **buckets; /* hash table */
    size_t nbuckets;  /* power of two */
    size_t nentries;  /* entries in the table */
    waiter *all;      /* every parked waiter */
    size_t count;     /* waiters parked */
    uint64_t gen;     /* notify generation */
};

static uint64_t hash_key(const char *saver, const uint8_t *key, size_t len)
{
    uint64_t h = 1469598103934665603ull;
    for (const char *p = saver; *p; p++) {
        h ^= (uint8_t)*p;
        h *= 1099511628211ull;
    }
    h ^= 0;
    h *= 1099511628211ull;
    for (size_t i = 0; i < len; i++) {
        h ^= key[i];
        h *= 1099511628211ull;
    }
    return h;
}

int ss_barrier_new(ss_barrier **out, uv_loop_t *loop)
{
    ss_barrier *b = calloc(1, sizeof *b);
    if (!b)
        return SS_ERR_NOMEM;
    b->buckets = calloc(BARRIER_BUCKETS_INITIAL, sizeof *b->buckets);
    if (!b->buckets) {
        free(b);
        return SS_ERR_NOMEM;
    }
    b->nbuckets = BARRIER_BUCKETS_INITIAL;
    b->loop = loop;
    *out = b;
    return 0;
}

void ss_barrier_free(ss_barrier *b)
{
    if (!b)
        return;
    free(b->buckets);
    free(b);
}

size_t ss_barrier_count(const ss_barrier *b)
{
    return b->count;
}

static void chain_insert(ss_barrier *b, bentry *e)
{
    size_t i = (size_t)e->hash & (b->nbuckets - 1);
    e->bucket = i;
    e->prev = NULL;
    e->next = b->buckets[i];
    if (e->next)
        e->next->prev = e;
    b->buckets[i] = e;
}

static void chain_remove(ss_barrier *b, bentry *e)
{
    if (e->prev)
        e->prev->next = e->next;
    else
        b->buckets[e->bucket] = e->next;
    if (e->next)
        e->next->prev = e->prev;
    e->prev = e->next = NULL;
}

/* Double the table; on allocation failure keep the longer chains. */
static void maybe_grow(ss_barrier *b)
{
    if (b->nentries <= b->nbuckets * 2 || b->nbuckets > (SIZE_MAX >> 2))
        return;
    size_t nb = b->nbuckets * 2;
    bentry **fresh = calloc(nb, sizeof *fresh);
    if (!fresh)
        return;
    bentry **old = b->buckets;
    size_t old_n = b->nbuckets;
    b->buckets = fresh;
    b->nbuckets = nb;
    for (size_t i = 0; i < old_n; i++) {
        bentry *e = old[i];
        while (e) {
            bentry *next = e->next;
            chain_insert(b, e);
            e = next;
        }
    }
    free(old);
}

static void on_timer_close(uv_handle_t *h)
{
    free(h->data);
}

/* Remove w from every index; its memory goes in the timer's close cb. */
static void waiter_unlink(waiter *w)
{
    ss_barrier *b = w->b;
    if (!w->linked)
        return;
    w->linked = false;
    for (size_t i = 0; i < w->n; i++)
        chain_remove(b, &w->entries[i]);
    b->nentries -= w->n;
    if (w->prev)
        w->prev->next = w->next;
    else
        b->all = w->next;
    if (w->next)
        w->next->prev = w->prev;
    b->count--;
    uv_timer_stop(&w->timer);
    uv_close((uv_handle_t *)&w->timer, on_timer_close);
}

static void waiter_wake(waiter *w, ss_barrier_event ev)
{
    ss_request *req = w->req;
    ss_barrier_wake_fn wake = w->wake;
    void *arg = w->arg;
    waiter_unlink(w);
    wake(req, ev, arg);
}

static void on_timeout(uv_timer_t *t)
{
    waiter_wake(t->data, SS_BARRIER_TIMEOUT);
}

void ss_barrier_cancel(ss_barrier_waiter *w)
{
    if (w->linked)
        waiter_wake(w, SS_BARRIER_CLOSED);
}

int ss_barrier_park(ss_barrier *b, ss_request *req, const char *saver,
                    size_t n, const ss_bytes *keys, uint64_t timeout_ms,
                    ss_barrier_ready_fn ready, ss_barrier_wake_fn wake,
                    void *arg, ss_barrier_waiter **out)
{
    if (n == 0 || n > SIZE_MAX / sizeof(bentry) - 1)
        return SS_ERR_INVALID;
    waiter *w = calloc(1, sizeof *w + n * sizeof(bentry));
    if (!w)
        return SS_ERR_NOMEM;
    w->b = b;
    w->req = req;
    w->saver = saver;
    w->ready = ready;
    w->wake = wake;
    w->arg = arg;
    w->n = n;
    w->entries = (bentry *)(w + 1);
    uv_timer_init(b->loop, &w->timer);
    w->timer.data = w;
    for (size_t i = 0; i < n; i++) {
        bentry *e = &w->entries[i];
        e->key = keys[i];
        e->w = w;
        e->hash = hash_key(saver, keys[i].data, keys[i].len);
        chain_insert(b, e);
    }
    b->nentries += n;
    w->next = b->all;
    if (b->all)
        b->all->prev = w;
    b->all = w;
    b->count++;
    w->linked = true;
    uv_timer_start(&w->timer, on_timeout, timeout_ms, 0);
    maybe_grow(b);
    *out = w;
    return 0;
}

void ss_barrier_notify(ss_barrier *b, const char *saver, size_t n,
                       const ss_bytes *keys)
{
    if (b->count == 0)
        return;
    uint64_t gen = ++b->gen;
    waiter *work = NULL;
    for (size_t k = 0; k < n; k++) {
        uint64_t h = hash_key(saver, keys[k].data, keys[k].len);
        for (bentry *e = b->buckets[(size_t)h & (b->nbuckets - 1)]; e;
             e = e->next) {
            if (e->hash != h || e->key.len != keys[k].len ||
                memcmp(e->key.data, keys[k].data, keys[k].len) != 0 ||
                strcmp(e->w->saver, saver) != 0)
                continue;
            if (e->w->gen != gen) {
                e->w->gen = gen;
                e->w->check_next = work;
                work = e->w;
            }
        }
    }
    /* Waiters stay allocated until their timer's close callback, which
     * runs in a later loop phase, so the list stays valid here. */
    while (work) {
        waiter *w = work;
        work = w->check_next;
        if (w->linked && w->ready(w->req, w->arg))
            waiter_wake(w, SS_BARRIER_READY);
    }
}

void ss_barrier_shutdown(ss_barrier *b)
{
    while (b->all)
        waiter_wake(b->all, SS_BARRIER_SHUTDOWN);
}
