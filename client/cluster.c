/* cluster -- libstatesaver's cluster handle: the topology (learned with a
 * Topology request, refreshed on a redirect), one connection per shard,
 * the retry rules of a routed call, and the calls that fan out to every
 * shard (ping, declare, drop --all, stats).
 *
 * The keyed calls (fetch, save, drop of keys, list) are in cluster_calls.c.
 */
#include "cluster_int.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ss_slot.h"

typedef Statesaver__V1__TopologyResponse topo_pb;

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void pause_ms(uint32_t ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

int ss_cluster_fail(ss_cluster *c, int rc, const char *fmt, ...)
{
    if (c) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(c->err, sizeof c->err, fmt, ap);
        va_end(ap);
    }
    return rc;
}

int ss_cluster_fail_shard(ss_cluster *c, size_t shard, ss_client *sc, int rc)
{
    const char *m = sc ? ss_client_last_error(sc) : "";
    if (c->err[0] && !sc)
        return rc; /* already set (connect failure) */
    return ss_cluster_fail(c, rc, "shard %s (%s): %s",
                           shard < c->n_conns ? ss_topology_shard_id(c->topo, shard) : "?",
                           shard < c->n_conns ? c->addr[shard] : "?",
                           m[0] ? m : ss_strerror(rc));
}

const char *ss_cluster_last_error(const ss_cluster *c)
{
    return c ? c->err : "";
}

void ss_cluster_options_init(ss_cluster_options *o)
{
    memset(o, 0, sizeof *o);
    ss_client_options_init(&o->conn);
}

/* ---- connections -------------------------------------------------------- */

static int connect_addr(ss_cluster *c, const char *addr, ss_client **out)
{
    ss_client_options o = c->conn;
    char err[SS_CLIENT_ERRMSG_MAX];
    o.server = addr;
    int rc = ss_client_open(out, &o, err, sizeof err);
    if (rc < 0)
        ss_cluster_fail(c, rc, "%s", err);
    return rc;
}

int ss_cluster_client(ss_cluster *c, size_t i, ss_client **out)
{
    *out = NULL;
    if (!c || i >= c->n_conns)
        return c ? ss_cluster_fail(c, SS_ERR_INVALID, "no shard %zu", i) : SS_ERR_INVALID;
    if (c->conns[i] && ss_client_broken(c->conns[i])) {
        ss_client_close(c->conns[i]);
        c->conns[i] = NULL;
    }
    if (!c->conns[i]) {
        int rc = connect_addr(c, c->addr[i], &c->conns[i]);
        if (rc < 0)
            return ss_cluster_fail(c, rc, "shard %s: %s", ss_topology_shard_id(c->topo, i),
                                   c->err);
    }
    *out = c->conns[i];
    return 0;
}

/* ---- topology ------------------------------------------------------------ */

/* Ask sc for the topology. A server that does not know the request (older
 * than the cluster) or runs without a cluster is one shard at addr. */
static int ask_topology(ss_cluster *c, ss_client *sc, const char *addr,
                        ss_topology **out)
{
    Statesaver__V1__TopologyRequest t = STATESAVER__V1__TOPOLOGY_REQUEST__INIT;
    ss_req req = STATESAVER__V1__REQUEST__INIT;
    ss_resp *r = NULL;
    char err[512];
    int rc;

    *out = NULL;
    req.body_case = STATESAVER__V1__REQUEST__BODY_TOPOLOGY;
    req.topology = &t;
    rc = ss_client_run(sc, &req, 0, STATESAVER__V1__RESPONSE__BODY_TOPOLOGY, &r);
    if (rc == SS_ERR_STATUS(12) || rc == SS_ERR_STATUS(3)) {
        /* UNIMPLEMENTED / INVALID_ARGUMENT: a server without Topology. */
        *out = ss_topology_new_single("", "single", addr);
        return *out ? 0 : ss_cluster_fail(c, SS_ERR_NOMEM, "out of memory");
    }
    if (rc < 0)
        return ss_cluster_fail(c, rc, "topology from %s: %s", addr,
                               ss_client_last_error(sc));
    rc = ss_topology_from_pb(r->topology, out, err, sizeof err);
    if (rc < 0) {
        ss_cluster_fail(c, rc, "topology from %s: %s", addr, err);
    } else if (r->topology->source && strcmp(r->topology->source, "none") == 0 &&
               ss_topology_n_shards(*out) == 1) {
        /* No cluster: the server may not know the address it is reached
         * at (it listens on 0.0.0.0): use the one that reached it. */
        rc = ss_topology_set_primary(*out, 0, addr);
        if (rc < 0) {
            ss_topology_free(*out);
            *out = ss_topology_new_single("", "single", addr);
            rc = *out ? 0 : ss_cluster_fail(c, SS_ERR_NOMEM, "out of memory");
        }
    }
    ss_client_response_free(r);
    return rc;
}

static void drop_spare(ss_cluster *c)
{
    ss_client_close(c->spare);
    c->spare = NULL;
    free(c->spare_addr);
    c->spare_addr = NULL;
}

/* Make t the topology: connections to addresses still in use are kept. */
static int adopt(ss_cluster *c, ss_topology *t)
{
    size_t n = ss_topology_n_shards(t);
    char **addr = calloc(n ? n : 1, sizeof *addr);
    ss_client **conns = calloc(n ? n : 1, sizeof *conns);
    if (!addr || !conns) {
        free(addr);
        free(conns);
        ss_topology_free(t);
        return ss_cluster_fail(c, SS_ERR_NOMEM, "out of memory");
    }
    for (size_t i = 0; i < n; i++) {
        addr[i] = strdup(ss_topology_shard_primary(t, i));
        if (!addr[i]) {
            for (size_t j = 0; j < i; j++)
                free(addr[j]);
            free(addr);
            free(conns);
            ss_topology_free(t);
            return ss_cluster_fail(c, SS_ERR_NOMEM, "out of memory");
        }
        for (size_t j = 0; j < c->n_conns; j++) {
            if (c->conns[j] && strcmp(c->addr[j], addr[i]) == 0) {
                conns[i] = c->conns[j];
                c->conns[j] = NULL;
                break;
            }
        }
        if (!conns[i] && c->spare && strcmp(c->spare_addr, addr[i]) == 0) {
            conns[i] = c->spare; /* the seed's connection serves on */
            c->spare = NULL;
        }
    }
    drop_spare(c);
    for (size_t j = 0; j < c->n_conns; j++) {
        ss_client_close(c->conns[j]);
        free(c->addr[j]);
    }
    free(c->conns);
    free(c->addr);
    ss_topology_free(c->topo);
    c->topo = t;
    c->addr = addr;
    c->conns = conns;
    c->n_conns = n;
    return 0;
}

/* Try one address: a shard connection when we have one to it, else a
 * short-lived connection. */
static int topology_from(ss_cluster *c, const char *addr, ss_topology **out)
{
    for (size_t i = 0; i < c->n_conns; i++) {
        if (strcmp(c->addr[i], addr) != 0)
            continue;
        ss_client *sc;
        int rc = ss_cluster_client(c, i, &sc);
        return rc < 0 ? rc : ask_topology(c, sc, addr, out);
    }
    ss_client *tmp = NULL;
    int rc = connect_addr(c, addr, &tmp);
    if (rc == 0)
        rc = ask_topology(c, tmp, addr, out);
    drop_spare(c);
    if (rc == 0 && !ss_client_broken(tmp) && (c->spare_addr = strdup(addr))) {
        c->spare = tmp; /* kept for adopt: likely a shard of the topology */
        tmp = NULL;
    }
    ss_client_close(tmp);
    return rc;
}

/* Refresh, asking `first` (may be NULL) before the shards and the seeds. */
static int refresh_from(ss_cluster *c, const char *first)
{
    ss_topology *t = NULL;
    int rc = SS_ERR_CONNECT;
    char *prefer = first ? strdup(first) : NULL;
    if (first && !prefer)
        return ss_cluster_fail(c, SS_ERR_NOMEM, "out of memory");
    if (prefer)
        rc = topology_from(c, prefer, &t);
    for (size_t i = 0; rc < 0 && i < c->n_conns; i++)
        rc = topology_from(c, c->addr[i], &t);
    for (size_t i = 0; rc < 0 && i < c->n_seeds; i++)
        rc = topology_from(c, c->seeds[i], &t);
    free(prefer);
    if (rc < 0)
        return rc; /* c->err: the last address's failure */
    if (c->topo && ss_topology_epoch(t) < ss_topology_epoch(c->topo)) {
        ss_topology_free(t); /* an older topology (that server lags): keep ours */
        drop_spare(c);
        return 0;
    }
    return adopt(c, t);
}

int ss_cluster_refresh(ss_cluster *c)
{
    if (!c)
        return SS_ERR_INVALID;
    c->err[0] = '\0';
    return refresh_from(c, NULL);
}

void ss_cluster_close(ss_cluster *c)
{
    if (!c)
        return;
    drop_spare(c);
    for (size_t i = 0; i < c->n_conns; i++) {
        ss_client_close(c->conns[i]);
        free(c->addr[i]);
    }
    free(c->conns);
    free(c->addr);
    ss_topology_free(c->topo);
    for (size_t i = 0; i < c->n_seeds; i++)
        free(c->seeds[i]);
    free(c->seeds);
    if (c->token) {
        memset(c->token, 0, c->conn.token_len);
        free(c->token);
    }
    free(c);
}

int ss_cluster_open(ss_cluster **out, const ss_cluster_options *opt, char *err,
                    size_t errsz)
{
    ss_cluster *c = NULL;
    int rc;

    *out = NULL;
    if (!opt || opt->n_seeds == 0 || !opt->seeds || opt->n_seeds > SS_CLUSTER_SEEDS_MAX) {
        if (err && errsz)
            snprintf(err, errsz, "no cluster address given (or more than %u)",
                     SS_CLUSTER_SEEDS_MAX);
        return SS_ERR_INVALID;
    }
    c = calloc(1, sizeof *c);
    if (!c)
        goto nomem;
    c->conn = opt->conn;
    c->conn.server = NULL;
    if (opt->conn.token) {
        c->token = malloc(opt->conn.token_len ? opt->conn.token_len : 1);
        if (!c->token)
            goto nomem;
        memcpy(c->token, opt->conn.token, opt->conn.token_len);
        c->conn.token = c->token;
    }
    c->conn.client_name = NULL; /* borrowed pointer: not kept */
    c->max_redirects = opt->max_redirects ? opt->max_redirects : SS_CLUSTER_REDIRECTS_DEFAULT;
    if (c->max_redirects > SS_CLUSTER_REDIRECTS_MAX)
        c->max_redirects = SS_CLUSTER_REDIRECTS_MAX;
    c->unavailable_ms = opt->unavailable_retry_ms ? opt->unavailable_retry_ms
                                                  : SS_CLUSTER_UNAVAILABLE_RETRY_MS_DEFAULT;
    c->seeds = calloc(opt->n_seeds, sizeof *c->seeds);
    if (!c->seeds)
        goto nomem;
    for (size_t i = 0; i < opt->n_seeds; i++) {
        if (!opt->seeds[i] || !(c->seeds[i] = strdup(opt->seeds[i])))
            goto nomem;
        c->n_seeds++;
    }
    rc = refresh_from(c, NULL);
    if (rc < 0) {
        if (err && errsz)
            snprintf(err, errsz, "%s", c->err);
        ss_cluster_close(c);
        return rc;
    }
    *out = c;
    return 0;
nomem:
    if (err && errsz)
        snprintf(err, errsz, "out of memory (or a NULL seed)");
    ss_cluster_close(c);
    return SS_ERR_NOMEM;
}

uint64_t ss_cluster_epoch(const ss_cluster *c)
{
    return c && c->topo ? ss_topology_epoch(c->topo) : 0;
}

const char *ss_cluster_name(const ss_cluster *c)
{
    const char *n = c && c->topo ? ss_topology_cluster(c->topo) : NULL;
    return n ? n : "";
}

size_t ss_cluster_shards(const ss_cluster *c)
{
    return c ? c->n_conns : 0;
}

const char *ss_cluster_shard_id(const ss_cluster *c, size_t i)
{
    return c && i < c->n_conns ? ss_topology_shard_id(c->topo, i) : NULL;
}

const char *ss_cluster_shard_address(const ss_cluster *c, size_t i)
{
    return c && i < c->n_conns ? c->addr[i] : NULL;
}

unsigned ss_cluster_shard_slots(const ss_cluster *c, size_t i)
{
    return c && i < c->n_conns ? ss_topology_shard_slots(c->topo, i) : 0;
}

uint64_t ss_cluster_redirects(const ss_cluster *c)
{
    return c ? c->redirects : 0;
}

unsigned ss_cluster_slot(const ss_key *key)
{
    return key ? ss_slot_of(key->data, key->len) : 0;
}

int ss_cluster_shard_of(const ss_cluster *c, const ss_key *key)
{
    if (!c || !key)
        return SS_ERR_INVALID;
    return ss_topology_owner(c->topo, ss_slot_of(key->data, key->len));
}

int ss_cluster_route_keys(ss_cluster *c, const ss_key *keys, size_t n, size_t *owner,
                          size_t *counts)
{
    memset(counts, 0, c->n_conns * sizeof *counts);
    for (size_t k = 0; k < n; k++) {
        if (!keys[k].data && keys[k].len)
            return ss_cluster_fail(c, SS_ERR_INVALID, "key %zu is NULL", k);
        unsigned slot = ss_slot_of(keys[k].data, keys[k].len);
        int o = ss_topology_owner(c->topo, slot);
        if (o < 0)
            return ss_cluster_fail(c, SS_ERR_INTERNAL,
                                   "topology epoch %llu: slot %u has no owner",
                                   (unsigned long long)ss_cluster_epoch(c), slot);
        owner[k] = (size_t)o;
        counts[o]++;
    }
    return 0;
}

/* ---- retries --------------------------------------------------------------- */

/* Does the shard behind sc have frozen slots (a move in progress)? Only
 * then is its UNAVAILABLE worth waiting for: the same code also reports a
 * failed write-ahead log, which waiting does not fix. */
static bool shard_frozen(ss_client *sc)
{
    Statesaver__V1__TopologyRequest t = STATESAVER__V1__TOPOLOGY_REQUEST__INIT;
    ss_req req = STATESAVER__V1__REQUEST__INIT;
    ss_resp *r = NULL;
    char keep[SS_CLIENT_ERRMSG_MAX];
    if (!sc || ss_client_broken(sc))
        return false;
    snprintf(keep, sizeof keep, "%s", ss_client_last_error(sc));
    req.body_case = STATESAVER__V1__REQUEST__BODY_TOPOLOGY;
    req.topology = &t;
    bool frozen = ss_client_run(sc, &req, 0, STATESAVER__V1__RESPONSE__BODY_TOPOLOGY, &r) == 0 &&
                  r->topology->n_frozen > 0;
    ss_client_response_free(r);
    ss_client_copy_str(sc->err, sizeof sc->err, keep); /* the refusal stays the error */
    return frozen;
}

bool ss_cluster_moving(ss_cluster *c)
{
    for (size_t i = 0; c && i < c->n_conns; i++) {
        ss_client *sc;
        if (ss_cluster_client(c, i, &sc) == 0 && shard_frozen(sc))
            return true;
    }
    return false;
}

void ss_cluster_try_init(ss_cluster_try *t)
{
    t->redirects = 0;
    t->start_ms = mono_ms();
    t->backoff_ms = SS_CLUSTER_BACKOFF_MIN_MS;
}

int ss_cluster_retry(ss_cluster *c, ss_cluster_try *t, int rc, ss_client *sc)
{
    ss_redirect rd;
    if (rc == SS_ERR_STATUS(SS_CODE_MOVED) && sc && ss_client_last_redirect(sc, &rd)) {
        char msg[SS_CLIENT_ERRMSG_MAX];
        snprintf(msg, sizeof msg, "%s", ss_client_last_error(sc));
        if (t->redirects >= c->max_redirects)
            return ss_cluster_fail(c, rc,
                                   "redirect loop: slot %u moved %u times in one call "
                                   "(last to shard %s at %s, epoch %llu; ours %llu); "
                                   "the shards disagree about the topology",
                                   rd.slot, t->redirects + 1, rd.shard, rd.address,
                                   (unsigned long long)rd.epoch,
                                   (unsigned long long)ss_cluster_epoch(c));
        if (t->redirects > 0) {
            uint32_t p = SS_CLUSTER_REDIRECT_PAUSE_MS << (t->redirects - 1 > 5 ? 5 : t->redirects - 1);
            pause_ms(p > SS_CLUSTER_BACKOFF_MAX_MS * 2 ? SS_CLUSTER_BACKOFF_MAX_MS * 2 : p);
        }
        t->redirects++;
        c->redirects++;
        int r2 = refresh_from(c, rd.address[0] ? rd.address : NULL);
        if (r2 < 0)
            return ss_cluster_fail(c, rc, "%s; refreshing the topology failed: %s", msg,
                                   c->err);
        return 0;
    }
    if (rc == SS_ERR_STATUS(SS_CODE_UNAVAILABLE) && c->unavailable_ms != UINT32_MAX &&
        mono_ms() - t->start_ms < (int64_t)c->unavailable_ms && shard_frozen(sc)) {
        char msg[SS_CLIENT_ERRMSG_MAX];
        snprintf(msg, sizeof msg, "%s", sc ? ss_client_last_error(sc) : c->err);
        pause_ms(t->backoff_ms);
        t->backoff_ms = t->backoff_ms * 2 > SS_CLUSTER_BACKOFF_MAX_MS
                            ? SS_CLUSTER_BACKOFF_MAX_MS : t->backoff_ms * 2;
        /* A move may have finished meanwhile: the next try goes to the new
         * owner instead of collecting a redirect first. */
        if (refresh_from(c, NULL) < 0)
            ss_cluster_fail(c, rc, "%s", msg);
        return 0;
    }
    return rc;
}

/* ---- fan-out calls ------------------------------------------------------------ */

int ss_cluster_ping(ss_cluster *c)
{
    if (!c)
        return SS_ERR_INVALID;
    c->err[0] = '\0';
    for (size_t i = 0; i < c->n_conns; i++) {
        ss_client *sc;
        int rc = ss_cluster_client(c, i, &sc);
        if (rc < 0)
            return rc;
        rc = ss_client_ping(sc, NULL);
        if (rc < 0)
            return ss_cluster_fail_shard(c, i, sc, rc);
    }
    return 0;
}

int ss_cluster_declare(ss_cluster *c, const char *saver, const ss_state_def *states,
                       size_t n_states, uint64_t idle_ttl_ms, bool keep_final,
                       bool *created)
{
    ss_declare_opts o = {.idle_ttl_ms = idle_ttl_ms, .keep_final = keep_final};
    return ss_cluster_declare_opts(c, saver, states, n_states, &o, created);
}

int ss_cluster_declare_opts(ss_cluster *c, const char *saver, const ss_state_def *states,
                            size_t n_states, const ss_declare_opts *o, bool *created)
{
    if (!c || !o)
        return SS_ERR_INVALID;
    c->err[0] = '\0';
    if (created)
        *created = false;
    for (size_t i = 0; i < c->n_conns; i++) {
        ss_client *sc;
        bool cr = false;
        int rc = ss_cluster_client(c, i, &sc);
        if (rc < 0)
            return rc;
        rc = ss_client_declare_opts(sc, saver, states, n_states, o, &cr);
        if (rc < 0)
            return ss_cluster_fail_shard(c, i, sc, rc);
        if (created && cr)
            *created = true;
    }
    return 0;
}

int ss_cluster_stats(ss_cluster *c, const char *saver, ss_server_stats *out)
{
    if (!c || !out)
        return SS_ERR_INVALID;
    c->err[0] = '\0';
    memset(out, 0, sizeof *out);
    for (size_t i = 0; i < c->n_conns; i++) {
        ss_client *sc;
        ss_server_stats s;
        int rc = ss_cluster_client(c, i, &sc);
        if (rc < 0)
            return rc;
        rc = ss_client_stats(sc, saver, &s);
        if (rc < 0)
            return ss_cluster_fail_shard(c, i, sc, rc);
#define MAXOF(f) out->f = s.f > out->f ? s.f : out->f
#define SUM(f) out->f += s.f
        MAXOF(uptime_ms);
        MAXOF(savers); /* every saver exists on every shard */
        SUM(sequences);
        SUM(connections);
        SUM(requests);
        SUM(commits);
        SUM(committed_ops);
        SUM(evicted);
        SUM(map_size);
        SUM(map_used);
        SUM(rejected);
        SUM(queued);
        SUM(leased);
        SUM(completed);
        SUM(failed);
        SUM(expired_leases);
        SUM(saves_applied);
        SUM(wal_records);
        SUM(wal_bytes);
        SUM(checkpoints);
        MAXOF(applied_lsn);
        MAXOF(checkpoint_lsn);
        MAXOF(wal_failed);
#undef MAXOF
#undef SUM
        if (s.wal_failed && !out->wal_failure[0])
            snprintf(out->wal_failure, sizeof out->wal_failure, "shard %.60s: %.180s",
                     ss_topology_shard_id(c->topo, i), s.wal_failure);
    }
    return 0;
}
