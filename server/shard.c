/* shard -- the server's cluster view: topology source (none, file,
 * etcd with a watcher thread), ownership and frozen slots. */
#include "shard.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ss_error.h"
#include "ss_etcd.h"
#include "ss_log.h"
#include "ss_slot.h"

#define NO_OWNER UINT16_MAX /* owner_of entry of an unassigned slot */

/* What the watcher thread hands to the loop (under mu). */
typedef struct mailbox {
    ss_topology *topo;           /* a newer topology, or NULL */
    bool status;                 /* stale/err below changed */
    bool stale;                  /* etcd unreachable or key gone */
    char err[SS_CLUSTER_ERR_MAX]; /* why */
    uint64_t errors;             /* etcd failures so far (monotonic) */
} mailbox;

struct ss_shard {
    ss_shard_source source;    /* where the topology comes from */
    char *self;                  /* this shard's id (owned) */
    char *advertise;             /* --advertise or NULL (owned) */
    char host[SS_HOST_MAX];      /* --listen host (the no-cluster address) */
    char key[SS_TOPO_MAX_ID + 32]; /* etcd key */
    ss_topology *topo;           /* served topology (owned; loop thread) */
    int self_idx;                /* index of self in topo, or -1 */
    uint16_t owner_of[SS_SLOT_COUNT]; /* shard index per slot */
    unsigned owned;              /* slots owned by self */
    uint8_t frozen[SS_CLUSTER_BITMAP_BYTES]; /* frozen slots (bit per slot) */
    unsigned n_frozen;           /* bits set in frozen */
    bool stale;                  /* loop copy of the etcd status */
    char err[SS_CLUSTER_ERR_MAX]; /* loop copy of the last error */
    uint64_t errors;             /* loop copy of the failure count */
    /* etcd */
    ss_etcd *etcd;               /* client (owned) */
    ss_etcd_watch *watch;        /* the watcher's stream (owned) */
    int64_t rev;                 /* store revision of the initial read */
    uint64_t wait_ms;            /* --topology-wait-ms */
    pthread_t thread;            /* watcher */
    bool thread_running;         /* thread created, not joined */
    pthread_mutex_t mu;          /* guards box, stopping */
    pthread_cond_t cv;           /* wakes the watcher's sleeps on stop */
    bool stopping;               /* the watcher must end */
    mailbox box;                 /* watcher -> loop */
    uv_async_t async;            /* wakes the loop for box */
    bool async_open;             /* async initialised, not closed */
    ss_shard_change_fn on_change; /* after a topology is applied, or NULL */
    void *on_change_arg;         /* its argument */
};

static void set_err(char *err, size_t n, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void set_err(char *err, size_t n, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, n, fmt, ap);
    va_end(ap);
}

/* Make t the served topology (takes ownership; frees the old one). */
static void apply(ss_shard *c, ss_topology *t)
{
    ss_topology_free(c->topo);
    c->topo = t;
    int idx = ss_topology_find_shard(t, c->self);
    c->self_idx = idx >= 0 ? idx : -1;
    c->owned = 0;
    for (unsigned s = 0; s < SS_SLOT_COUNT; s++) {
        int o = ss_topology_owner(t, s);
        c->owner_of[s] = o >= 0 ? (uint16_t)o : NO_OWNER;
        if (o >= 0 && o == c->self_idx)
            c->owned++;
    }
    if (c->self_idx < 0)
        SS_LOG(SS_LOG_WARN, "cluster: shard '%s' is not in the topology (epoch %"
               PRIu64 "): this server owns no slot and redirects every key",
               c->self, ss_topology_epoch(t));
}

/* --advertise against the topology's primary of this shard. */
static void check_advertise(const ss_shard *c)
{
    if (!c->advertise || c->self_idx < 0)
        return;
    const char *p = ss_topology_shard_primary(c->topo, (size_t)c->self_idx);
    if (strcmp(p, c->advertise) != 0)
        SS_LOG(SS_LOG_WARN, "cluster: --advertise %s but the topology names %s "
               "as shard '%s''s primary; clients will use %s", c->advertise, p,
               c->self, p);
}

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void sleep_ms(unsigned ms)
{
    struct timespec ts = {ms / 1000u, (long)(ms % 1000u) * 1000000L};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

/* Parse a topology value and check that it names this shard. */
static int parse_value(const ss_shard *c, const char *v, size_t len,
                       ss_topology **out, bool need_self, char *err, size_t n)
{
    char why[512];
    int rc = ss_topology_parse(v, len, out, why, sizeof why);
    if (rc < 0) {
        set_err(err, n, "topology in etcd key %s is invalid: %s", c->key, why);
        return rc;
    }
    if (need_self && ss_topology_find_shard(*out, c->self) < 0) {
        set_err(err, n, "shard '%s' (--shard) is not in the topology of etcd key "
                "%s", c->self, c->key);
        ss_topology_free(*out);
        *out = NULL;
        return SS_ERR_NOT_FOUND;
    }
    return 0;
}

/* --topology-init: create the missing key from the file, only if it is
 * still missing (CAS on "must not exist"): 0 (created, or someone else
 * did first) or an error in err. */
static int init_key(ss_shard *c, const char *path, char *err, size_t n)
{
    ss_topology *t = NULL;
    char why[512];
    int rc = ss_topology_load_file(path, &t, why, sizeof why);
    if (rc < 0) {
        set_err(err, n, "--topology-init: %s", why);
        return rc;
    }
    char *json = ss_topology_to_json(t);
    ss_topology_free(t);
    if (!json) {
        set_err(err, n, "out of memory");
        return SS_ERR_NOMEM;
    }
    rc = ss_etcd_cas(c->etcd, c->key, json, strlen(json), 0, NULL, why, sizeof why);
    free(json);
    if (rc == SS_ERR_CONFLICT)
        return 0; /* another shard created it first */
    if (rc < 0) {
        set_err(err, n, "--topology-init: cannot create etcd key %s: %s", c->key, why);
        return rc;
    }
    SS_LOG(SS_LOG_INFO, "cluster: created etcd key %s from %s", c->key, path);
    return 0;
}

static int open_etcd(ss_shard *c, const ss_config *cfg, char *err, size_t n)
{
    snprintf(c->key, sizeof c->key, SS_CLUSTER_KEY_FMT, cfg->cluster);
    int rc = ss_etcd_new(cfg->etcd, 0, &c->etcd);
    if (rc < 0) {
        set_err(err, n, "bad --etcd '%s' (want http://HOST:PORT)", cfg->etcd);
        return rc;
    }
    uint64_t t0 = mono_ms();
    bool said = false;
    for (;;) {
        char *v = NULL;
        size_t len = 0;
        int64_t mod = 0, rev = 0;
        char why[512];
        rc = ss_etcd_get(c->etcd, c->key, &v, &len, &mod, &rev, why, sizeof why);
        if (rc == 0) {
            ss_topology *t = NULL;
            rc = parse_value(c, v, len, &t, true, err, n);
            free(v);
            if (rc == 0) {
                c->rev = rev;
                apply(c, t);
                return 0;
            }
            /* a shard being added starts before the topology names it:
             * wait for that as for a missing key */
            if (rc != SS_ERR_NOT_FOUND || mono_ms() - t0 >= c->wait_ms)
                return rc;
            if (!said) {
                SS_LOG(SS_LOG_INFO, "cluster: waiting up to %" PRIu64 " ms for the "
                       "topology in %s to name shard '%s'", c->wait_ms, c->key, c->self);
                said = true;
            }
            sleep_ms(SS_CLUSTER_POLL_MS);
            continue;
        }
        if (rc != SS_ERR_NOT_FOUND) {
            set_err(err, n, "cannot read the topology from etcd at %s: %s",
                    cfg->etcd, why);
            return rc;
        }
        if (cfg->topology_init) {
            if ((rc = init_key(c, cfg->topology_init, err, n)) < 0)
                return rc;
            continue; /* read what is there now */
        }
        if (mono_ms() - t0 >= c->wait_ms) {
            set_err(err, n, "no topology in etcd key %s (after waiting %" PRIu64
                    " ms, --topology-wait-ms); write one with `statesaver "
                    "cluster init`", c->key, c->wait_ms);
            return SS_ERR_NOT_FOUND;
        }
        if (!said) {
            SS_LOG(SS_LOG_INFO, "cluster: waiting up to %" PRIu64 " ms for etcd key %s",
                   c->wait_ms, c->key);
            said = true;
        }
        sleep_ms(SS_CLUSTER_POLL_MS);
    }
}

int ss_shard_open(ss_shard **out, const ss_config *cfg, char *err, size_t n)
{
    int rc = SS_ERR_NOMEM;
    *out = NULL;
    err[0] = '\0';
    ss_shard *c = calloc(1, sizeof *c);
    if (!c) {
        set_err(err, n, "out of memory");
        return rc;
    }
    pthread_mutex_init(&c->mu, NULL);
    pthread_cond_init(&c->cv, NULL);
    c->self_idx = -1;
    c->wait_ms = cfg->topology_wait_ms;
    snprintf(c->host, sizeof c->host, "%s", cfg->host);
    const char *self = cfg->shard ? cfg->shard : SS_CLUSTER_SINGLE_SHARD;
    if (!(c->self = strdup(self)) ||
        (cfg->advertise && !(c->advertise = strdup(cfg->advertise)))) {
        set_err(err, n, "out of memory");
        goto fail;
    }
    if (cfg->etcd) {
        c->source = SS_CLUSTER_ETCD;
        if ((rc = open_etcd(c, cfg, err, n)) < 0)
            goto fail;
    } else if (cfg->cluster_config) {
        c->source = SS_CLUSTER_FILE;
        ss_topology *t = NULL;
        char why[512];
        rc = ss_topology_load_file(cfg->cluster_config, &t, why, sizeof why);
        if (rc < 0) {
            set_err(err, n, "--cluster-config: %s", why);
            goto fail;
        }
        if (ss_topology_find_shard(t, self) < 0) {
            set_err(err, n, "shard '%s' (--shard) is not in the topology file %s",
                    self, cfg->cluster_config);
            ss_topology_free(t);
            rc = SS_ERR_NOT_FOUND;
            goto fail;
        }
        apply(c, t);
    } else {
        c->source = SS_CLUSTER_NONE;
        /* the address is filled in by start, once the port is bound */
    }
    if (c->topo)
        check_advertise(c);
    *out = c;
    return 0;
fail:
    ss_shard_free(c);
    return rc;
}

/* ---- watcher thread (etcd) ---- */

static void post(ss_shard *c, ss_topology *t, bool stale, const char *why,
                 bool failure)
{
    pthread_mutex_lock(&c->mu);
    if (t) {
        ss_topology_free(c->box.topo);
        c->box.topo = t;
    }
    if (c->box.stale != stale || (why && strcmp(c->box.err, why) != 0) || failure) {
        c->box.status = true;
        c->box.stale = stale;
        snprintf(c->box.err, sizeof c->box.err, "%s", why ? why : "");
    }
    if (failure)
        c->box.errors++;
    bool open = c->async_open && !c->stopping;
    pthread_mutex_unlock(&c->mu);
    if (open)
        uv_async_send(&c->async);
}

/* Sleep ms unless stopping; true when stopping. */
static bool nap(ss_shard *c, unsigned ms)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += ms / 1000u;
    until.tv_nsec += (long)(ms % 1000u) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&c->mu);
    while (!c->stopping)
        if (pthread_cond_timedwait(&c->cv, &c->mu, &until) == ETIMEDOUT)
            break;
    bool s = c->stopping;
    pthread_mutex_unlock(&c->mu);
    return s;
}

static bool stopping(ss_shard *c)
{
    pthread_mutex_lock(&c->mu);
    bool s = c->stopping;
    pthread_mutex_unlock(&c->mu);
    return s;
}

static int on_event(void *arg, ss_etcd_event_type type, const char *key,
                    const char *value, size_t len, int64_t mod)
{
    ss_shard *c = arg;
    char why[SS_CLUSTER_ERR_MAX];
    if (type == SS_ETCD_EVENT_DELETE) {
        snprintf(why, sizeof why, "topology key %s was deleted from etcd; serving "
                 "the last one", key);
        SS_LOG(SS_LOG_ERROR, "cluster: %s", why);
        post(c, NULL, true, why, false);
        return 0;
    }
    ss_topology *t = NULL;
    if (parse_value(c, value, len, &t, false, why, sizeof why) < 0) {
        SS_LOG(SS_LOG_ERROR, "cluster: revision %" PRId64 ": %s; keeping the last "
               "topology", mod, why);
        post(c, NULL, true, why, false);
        return 0;
    }
    post(c, t, false, "", false);
    return 0;
}

/* Re-read the key; *rev gets the store revision to watch after. */
static int reread(ss_shard *c, int64_t *rev)
{
    char *v = NULL;
    size_t len = 0;
    int64_t mod = 0, r = 0;
    char why[SS_CLUSTER_ERR_MAX];
    int rc = ss_etcd_get(c->etcd, c->key, &v, &len, &mod, &r, why, sizeof why);
    if (rc == SS_ERR_NOT_FOUND) {
        *rev = r;
        snprintf(why, sizeof why, "topology key %s is missing from etcd; serving "
                 "the last one", c->key);
        post(c, NULL, true, why, false);
        return 0;
    }
    if (rc < 0) {
        post(c, NULL, true, why, true);
        return rc;
    }
    *rev = r;
    ss_topology *t = NULL;
    rc = parse_value(c, v, len, &t, false, why, sizeof why);
    free(v);
    if (rc < 0) {
        post(c, NULL, true, why, false);
        return 0;
    }
    post(c, t, false, "", false);
    return 0;
}

static void *watch_main(void *arg)
{
    ss_shard *c = arg;
    int64_t rev = c->rev;
    unsigned backoff = SS_CLUSTER_RETRY_MS;
    bool ok = true; /* the last etcd call succeeded */
    while (!stopping(c)) {
        if (ok) {
            char why[SS_CLUSTER_ERR_MAX];
            int64_t next = rev + 1;
            int rc = ss_etcd_watch_run(c->watch, c->key, rev + 1, SS_CLUSTER_RECHECK_MS,
                                       on_event, c, &next, why, sizeof why);
            if (stopping(c))
                break;
            if (rc < 0 && rc != SS_ERR_NOT_FOUND) {
                SS_LOG(SS_LOG_WARN, "cluster: etcd watch failed: %s", why);
                post(c, NULL, true, why, true);
                ok = false;
                continue;
            }
            rev = next - 1;
        } else if (nap(c, backoff)) {
            break;
        }
        /* span over, compacted, or retrying: read the key again */
        if (reread(c, &rev) < 0) {
            ok = false;
            backoff = backoff * 2 > SS_CLUSTER_RETRY_MAX_MS ? SS_CLUSTER_RETRY_MAX_MS
                                                            : backoff * 2;
            continue;
        }
        if (!ok)
            SS_LOG(SS_LOG_INFO, "cluster: etcd reachable again");
        ok = true;
        backoff = SS_CLUSTER_RETRY_MS;
    }
    return NULL;
}

/* Loop thread: take what the watcher posted. */
static void on_async(uv_async_t *a)
{
    ss_shard *c = a->data;
    pthread_mutex_lock(&c->mu);
    ss_topology *t = c->box.topo;
    c->box.topo = NULL;
    bool status = c->box.status;
    c->box.status = false;
    bool stale = c->box.stale;
    char err[SS_CLUSTER_ERR_MAX];
    memcpy(err, c->box.err, sizeof err);
    c->errors = c->box.errors;
    pthread_mutex_unlock(&c->mu);
    if (status) {
        if (stale && !c->stale)
            SS_LOG(SS_LOG_WARN, "cluster: topology stale: %s", err);
        else if (!stale && c->stale)
            SS_LOG(SS_LOG_INFO, "cluster: topology current again (epoch %" PRIu64 ")",
                   ss_topology_epoch(c->topo));
        c->stale = stale;
        memcpy(c->err, err, sizeof err);
    }
    if (!t)
        return;
    uint64_t old = ss_topology_epoch(c->topo), now = ss_topology_epoch(t);
    if (ss_topology_equal(t, c->topo)) {
        ss_topology_free(t);
        return;
    }
    if (now < old) {
        SS_LOG(SS_LOG_WARN, "cluster: etcd holds topology epoch %" PRIu64 ", older "
               "than the served %" PRIu64 "; ignored", now, old);
        ss_topology_free(t);
        return;
    }
    if (now == old)
        SS_LOG(SS_LOG_WARN, "cluster: the topology changed without an epoch bump "
               "(epoch %" PRIu64 "); applied", now);
    apply(c, t);
    check_advertise(c);
    SS_LOG(SS_LOG_INFO, "cluster: topology epoch %" PRIu64 " applied: shard '%s' "
           "owns %u slots", now, c->self, c->owned);
    if (c->on_change)
        c->on_change(c->on_change_arg);
}

void ss_shard_on_change(ss_shard *c, ss_shard_change_fn fn, void *arg)
{
    c->on_change = fn;
    c->on_change_arg = arg;
}

int ss_shard_start(ss_shard *c, uv_loop_t *loop, int port)
{
    if (c->source == SS_CLUSTER_NONE) {
        char addr[SS_HOST_MAX + 16];
        bool v6 = strchr(c->host, ':') != NULL;
        snprintf(addr, sizeof addr, "%s%s%s:%d", v6 ? "[" : "", c->host, v6 ? "]" : "",
                 port);
        ss_topology *t = ss_topology_new_single("", SS_CLUSTER_SINGLE_SHARD, addr);
        if (!t)
            return SS_ERR_NOMEM;
        apply(c, t);
        return 0;
    }
    if (c->source != SS_CLUSTER_ETCD)
        return 0;
    int rc = uv_async_init(loop, &c->async, on_async);
    if (rc < 0) {
        SS_LOG(SS_LOG_ERROR, "cluster: uv_async_init: %s", uv_strerror(rc));
        return SS_ERR_IO;
    }
    c->async.data = c;
    uv_unref((uv_handle_t *)&c->async);
    pthread_mutex_lock(&c->mu);
    c->async_open = true;
    pthread_mutex_unlock(&c->mu);
    if ((rc = ss_etcd_watch_new(c->etcd, &c->watch)) < 0)
        return rc;
    if (pthread_create(&c->thread, NULL, watch_main, c) != 0) {
        SS_LOG(SS_LOG_ERROR, "cluster: cannot start the etcd watcher thread");
        return SS_ERR_NOMEM;
    }
    c->thread_running = true;
    SS_LOG(SS_LOG_INFO, "cluster: shard '%s', topology epoch %" PRIu64 " from etcd "
           "%s key %s (watched); owns %u slots", c->self, ss_topology_epoch(c->topo),
           ss_etcd_endpoint(c->etcd), c->key, c->owned);
    return 0;
}

static void async_closed(uv_handle_t *h)
{
    (void)h;
}

void ss_shard_stop(ss_shard *c)
{
    if (!c)
        return;
    pthread_mutex_lock(&c->mu);
    c->stopping = true;
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
    if (c->watch)
        ss_etcd_watch_stop(c->watch);
    if (c->thread_running) {
        pthread_join(c->thread, NULL);
        c->thread_running = false;
    }
    if (c->async_open) {
        pthread_mutex_lock(&c->mu);
        c->async_open = false;
        pthread_mutex_unlock(&c->mu);
        uv_close((uv_handle_t *)&c->async, async_closed);
    }
}

void ss_shard_free(ss_shard *c)
{
    if (!c)
        return;
    if (c->thread_running) {
        pthread_mutex_lock(&c->mu);
        c->stopping = true;
        pthread_cond_broadcast(&c->cv);
        pthread_mutex_unlock(&c->mu);
        ss_etcd_watch_stop(c->watch);
        pthread_join(c->thread, NULL);
    }
    ss_etcd_watch_free(c->watch);
    ss_etcd_free(c->etcd);
    ss_topology_free(c->topo);
    ss_topology_free(c->box.topo);
    pthread_cond_destroy(&c->cv);
    pthread_mutex_destroy(&c->mu);
    free(c->self);
    free(c->advertise);
    free(c);
}

/* ---- accessors ---- */

ss_shard_source ss_shard_source_of(const ss_shard *c) { return c->source; }

const char *ss_shard_source_name(const ss_shard *c)
{
    static const char *const names[] = {"none", "file", "etcd"};
    return names[c->source];
}

const ss_topology *ss_shard_topology(const ss_shard *c) { return c->topo; }
const char *ss_shard_self(const ss_shard *c) { return c->self; }
bool ss_shard_stale(const ss_shard *c) { return c->stale; }
const char *ss_shard_error(const ss_shard *c) { return c->err; }
uint64_t ss_shard_etcd_errors(const ss_shard *c) { return c->errors; }

bool ss_shard_owns(const ss_shard *c, unsigned slot)
{
    return c->topo && slot < SS_SLOT_COUNT && c->self_idx >= 0 &&
           c->owner_of[slot] == (uint16_t)c->self_idx;
}

unsigned ss_shard_owned_slots(const ss_shard *c) { return c->owned; }

bool ss_shard_frozen(const ss_shard *c, unsigned slot)
{
    return slot < SS_SLOT_COUNT && (c->frozen[slot / 8] >> (slot % 8) & 1u);
}

void ss_shard_set_frozen(ss_shard *c, unsigned first, unsigned last, bool on)
{
    for (unsigned s = first; s <= last && s < SS_SLOT_COUNT; s++) {
        bool was = ss_shard_frozen(c, s);
        if (on && !was) {
            c->frozen[s / 8] |= (uint8_t)(1u << (s % 8));
            c->n_frozen++;
        } else if (!on && was) {
            c->frozen[s / 8] &= (uint8_t)~(1u << (s % 8));
            c->n_frozen--;
        }
    }
}

unsigned ss_shard_frozen_count(const ss_shard *c) { return c->n_frozen; }

void ss_shard_frozen_bitmap(const ss_shard *c, uint8_t out[SS_CLUSTER_BITMAP_BYTES])
{
    memcpy(out, c->frozen, SS_CLUSTER_BITMAP_BYTES);
}

void ss_shard_frozen_load(ss_shard *c, const uint8_t in[SS_CLUSTER_BITMAP_BYTES])
{
    memcpy(c->frozen, in, SS_CLUSTER_BITMAP_BYTES);
    c->n_frozen = 0;
    for (unsigned s = 0; s < SS_SLOT_COUNT; s++)
        if (ss_shard_frozen(c, s))
            c->n_frozen++;
}

Statesaver__V1__SlotRange **ss_shard_frozen_ranges(const ss_shard *c, size_t *n)
{
    size_t cnt = 0, cap = 0;
    Statesaver__V1__SlotRange **r = NULL;
    *n = 0;
    for (unsigned s = 0; s < SS_SLOT_COUNT; s++) {
        if (!ss_shard_frozen(c, s))
            continue;
        unsigned e = s;
        while (e + 1 < SS_SLOT_COUNT && ss_shard_frozen(c, e + 1))
            e++;
        if (cnt == cap) {
            cap = cap ? cap * 2 : 8;
            Statesaver__V1__SlotRange **nr = realloc(r, cap * sizeof *nr);
            if (!nr)
                break;
            r = nr;
        }
        Statesaver__V1__SlotRange *x = malloc(sizeof *x);
        if (!x)
            break;
        statesaver__v1__slot_range__init(x);
        x->first = s;
        x->last = e;
        r[cnt++] = x;
        s = e;
    }
    *n = cnt;
    return r;
}

void ss_shard_ranges_free(Statesaver__V1__SlotRange **r, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(r[i]);
    free(r);
}

ss_shard_verdict ss_shard_check_key(const ss_shard *c, const uint8_t *key,
                                        size_t len, bool write,
                                        ss_shard_where *where)
{
    unsigned slot = ss_slot_of(key, len);
    where->slot = slot;
    where->shard = NULL;
    where->address = NULL;
    where->epoch = c->topo ? ss_topology_epoch(c->topo) : 0;
    if (!c->topo || c->source == SS_CLUSTER_NONE)
        return SS_CLUSTER_OK;
    uint16_t o = c->owner_of[slot];
    if (c->self_idx < 0 || o != (uint16_t)c->self_idx) {
        if (o != NO_OWNER) {
            where->shard = ss_topology_shard_id(c->topo, o);
            where->address = ss_topology_shard_primary(c->topo, o);
        }
        return SS_CLUSTER_MOVED;
    }
    if (write && ss_shard_frozen(c, slot))
        return SS_CLUSTER_FROZEN;
    return SS_CLUSTER_OK;
}
