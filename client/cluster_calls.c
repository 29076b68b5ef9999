/* cluster_calls -- the keyed calls of the cluster handle, split by the
 * shard owning each key: fetch and save (one sub-request per shard, all in
 * flight together, replies merged in key order), drop and cancel (one
 * shard after the other, counts summed); list merged over every shard. A
 * redirect or a frozen slot retries through ss_cluster_retry.
 */
#include "cluster_int.h"
#include "statesaver_jobs.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ss_limits.h"
#include "ss_slot.h"
#include "ss_tensor.h"

/* Per-shard working arrays of one routed call. */
typedef struct route {
    size_t n_shards;   /* shards of the topology the call was split with */
    size_t *owner;     /* per key: shard index */
    size_t *counts;    /* per shard: keys */
    size_t *start;     /* per shard: first index into order */
    size_t *order;     /* key indices grouped by shard, in key order */
    ss_key *keys;      /* keys in `order` order */
} route;

static void route_free(route *r)
{
    free(r->owner);
    free(r->counts);
    free(r->start);
    free(r->order);
    free(r->keys);
    memset(r, 0, sizeof *r);
}

/* Split keys (only those with pick[k], or all when pick is NULL). */
static int route_make(ss_cluster *c, const ss_key *keys, size_t n, const bool *pick,
                      route *r)
{
    size_t ns = c->n_conns;
    memset(r, 0, sizeof *r);
    r->n_shards = ns;
    r->owner = calloc(n ? n : 1, sizeof *r->owner);
    r->counts = calloc(ns ? ns : 1, sizeof *r->counts);
    r->start = calloc(ns + 1, sizeof *r->start);
    r->order = calloc(n ? n : 1, sizeof *r->order);
    r->keys = calloc(n ? n : 1, sizeof *r->keys);
    if (!r->owner || !r->counts || !r->start || !r->order || !r->keys) {
        route_free(r);
        return ss_cluster_fail(c, SS_ERR_NOMEM, "out of memory");
    }
    int rc = ss_cluster_route_keys(c, keys, n, r->owner, r->counts);
    if (rc < 0) {
        route_free(r);
        return rc;
    }
    if (pick) {
        memset(r->counts, 0, ns * sizeof *r->counts);
        for (size_t k = 0; k < n; k++)
            if (pick[k])
                r->counts[r->owner[k]]++;
    }
    for (size_t s = 0; s < ns; s++)
        r->start[s + 1] = r->start[s] + r->counts[s];
    size_t *fill = calloc(ns ? ns : 1, sizeof *fill);
    if (!fill) {
        route_free(r);
        return ss_cluster_fail(c, SS_ERR_NOMEM, "out of memory");
    }
    for (size_t k = 0; k < n; k++) {
        if (pick && !pick[k])
            continue;
        size_t s = r->owner[k], at = r->start[s] + fill[s]++;
        r->order[at] = k;
        r->keys[at] = keys[k];
    }
    free(fill);
    return 0;
}

/* The one shard owning every key, or -1 (several, or none: n == 0). The
 * common case (one key, or keys of one {tag}) then costs a CRC16 and a
 * table lookup per key and no allocation. */
static int single_owner(const ss_cluster *c, const ss_key *keys, size_t n)
{
    int o = -1;
    for (size_t k = 0; k < n; k++) {
        if (!keys[k].data && keys[k].len)
            return -1;
        int s = ss_topology_owner(c->topo, ss_slot_of(keys[k].data, keys[k].len));
        if (s < 0 || (o >= 0 && s != o))
            return -1;
        o = s;
    }
    return o;
}

/* ---- fetch ---------------------------------------------------------------- */

/* One attempt: every shard's sub-request sent, then every reply read. On
 * failure *bad is the shard client whose reply decides the retry. */
static int fetch_once(ss_cluster *c, const char *saver, const ss_key *keys, size_t n,
                      uint64_t min_segment, uint32_t wait_ms, ss_fetch_result **out,
                      ss_client **bad)
{
    route r;
    ss_fetch_result **parts = NULL;
    uint64_t *ids = NULL;
    bool *sent = NULL;
    uint32_t *kpart = NULL;
    size_t *krow = NULL, n_parts = 0;
    int rc, first = 0;

    *bad = NULL;
    int one = single_owner(c, keys, n);
    if (one >= 0) {
        ss_client *sc;
        rc = ss_cluster_client(c, (size_t)one, &sc);
        if (rc == 0 && (rc = ss_client_fetch(sc, saver, keys, n, min_segment, wait_ms, out)) < 0) {
            *bad = sc;
            ss_cluster_fail_shard(c, (size_t)one, sc, rc);
        }
        return rc;
    }
    rc = route_make(c, keys, n, NULL, &r);
    if (rc < 0)
        return rc;
    size_t ns = r.n_shards;
    parts = calloc(ns ? ns : 1, sizeof *parts);
    ids = calloc(ns ? ns : 1, sizeof *ids);
    sent = calloc(ns ? ns : 1, sizeof *sent);
    kpart = calloc(n ? n : 1, sizeof *kpart);
    krow = calloc(n ? n : 1, sizeof *krow);
    if (!parts || !ids || !sent || !kpart || !krow) {
        rc = ss_cluster_fail(c, SS_ERR_NOMEM, "out of memory");
        goto out;
    }
    for (size_t s = 0; s < ns && first == 0; s++) {
        ss_client *sc;
        if (r.counts[s] == 0)
            continue;
        first = ss_cluster_client(c, s, &sc);
        if (first == 0) {
            first = ss_client_fetch_send(sc, saver, r.keys + r.start[s], r.counts[s],
                                         min_segment, wait_ms, &ids[s]);
            if (first < 0) {
                *bad = sc;
                ss_cluster_fail_shard(c, s, sc, first);
            } else {
                sent[s] = true;
            }
        }
    }
    /* Read every reply that was sent, even after a failure, so no reply is
     * left behind on a connection. */
    size_t *part_of = calloc(ns ? ns : 1, sizeof *part_of);
    if (!part_of) {
        rc = first ? first : ss_cluster_fail(c, SS_ERR_NOMEM, "out of memory");
        goto out;
    }
    for (size_t s = 0; s < ns; s++) {
        if (!sent[s])
            continue;
        ss_fetch_result *p = NULL;
        ss_client *sc = c->conns[s];
        int prc = ss_client_fetch_recv(sc, ids[s], r.counts[s], wait_ms, &p);
        if (prc < 0 && first == 0) {
            first = prc;
            *bad = sc;
            ss_cluster_fail_shard(c, s, sc, prc);
        }
        if (prc == 0) {
            part_of[s] = n_parts;
            parts[n_parts++] = p;
        }
    }
    if (first < 0) {
        free(part_of);
        rc = first;
        goto out;
    }
    for (size_t s = 0; s < ns; s++) {
        for (size_t j = r.start[s]; j < r.start[s + 1]; j++) {
            kpart[r.order[j]] = (uint32_t)part_of[s];
            krow[r.order[j]] = j - r.start[s];
        }
    }
    free(part_of);
    rc = ss_fetch_result_merge(parts, n_parts, kpart, krow, n, out, c->err, sizeof c->err);
    parts = NULL;
    kpart = NULL;
    krow = NULL;
    n_parts = 0;
out:
    for (size_t i = 0; i < n_parts; i++)
        ss_fetch_result_free(parts[i]);
    free(parts);
    free(ids);
    free(sent);
    free(kpart);
    free(krow);
    route_free(&r);
    return rc;
}

int ss_cluster_fetch(ss_cluster *c, const char *saver, const ss_key *keys,
                     size_t n_keys, uint64_t min_segment, uint32_t wait_ms,
                     ss_fetch_result **out)
{
    ss_cluster_try t;
    *out = NULL;
    if (!c)
        return SS_ERR_INVALID;
    c->err[0] = '\0';
    if (!saver || (n_keys && !keys))
        return ss_cluster_fail(c, SS_ERR_INVALID, "saver or keys is NULL");
    ss_cluster_try_init(&t);
    for (;;) {
        ss_client *bad = NULL;
        int rc = fetch_once(c, saver, keys, n_keys, min_segment, wait_ms, out, &bad);
        if (rc == 0)
            return 0;
        char keep[SS_CLIENT_ERRMSG_MAX];
        snprintf(keep, sizeof keep, "%s", c->err);
        rc = ss_cluster_retry(c, &t, rc, bad);
        if (rc < 0) {
            if (!c->err[0])
                snprintf(c->err, sizeof c->err, "%s", keep);
            return rc;
        }
    }
}

/* ---- save ------------------------------------------------------------------ */

/* The rows of state data for one shard's keys, copied contiguous. */
typedef struct save_part {
    uint64_t *segments;    /* per key of the part */
    bool *final;           /* per key, or NULL */
    ss_state_data *states; /* per state, data owned in bufs */
    void **bufs;           /* per state: the rows */
    bool *applied;         /* per key: already_applied from the reply */
} save_part;

static void save_part_free(save_part *p, size_t n_states)
{
    for (size_t i = 0; p->bufs && i < n_states; i++)
        free(p->bufs[i]);
    free(p->bufs);
    free(p->states);
    free(p->segments);
    free(p->final);
    free(p->applied);
    memset(p, 0, sizeof *p);
}

/* Row bytes of state i for one key (its dtype and shape). */
static int row_bytes(const ss_state_data *sd, size_t *out)
{
    uint64_t count = 1;
    size_t es = ss_dtype_size(sd->dtype);
    if (es == 0 || sd->rank + 1 > SS_TENSOR_MAX_RANK || (sd->rank && !sd->shape) ||
        !sd->data)
        return SS_ERR_INVALID;
    if (sd->rank && ss_shape_count(sd->shape, sd->rank, SIZE_MAX / es, &count) < 0)
        return SS_ERR_TOO_BIG;
    *out = (size_t)count * es;
    return 0;
}

static int save_part_make(ss_cluster *c, const route *r, size_t s, const uint64_t *segments,
                          const bool *final, const ss_state_data *states, size_t n_states,
                          const size_t *rowb, save_part *p)
{
    size_t m = r->counts[s];
    memset(p, 0, sizeof *p);
    p->segments = calloc(m, sizeof *p->segments);
    p->applied = calloc(m, sizeof *p->applied);
    p->final = final ? calloc(m, sizeof *p->final) : NULL;
    p->states = calloc(n_states ? n_states : 1, sizeof *p->states);
    p->bufs = calloc(n_states ? n_states : 1, sizeof *p->bufs);
    if (!p->segments || !p->applied || (final && !p->final) || !p->states || !p->bufs)
        goto nomem;
    for (size_t j = 0; j < m; j++) {
        size_t k = r->order[r->start[s] + j];
        p->segments[j] = segments[k];
        if (final)
            p->final[j] = final[k];
    }
    for (size_t i = 0; i < n_states; i++) {
        p->states[i] = states[i];
        p->bufs[i] = malloc(m * rowb[i] + 1);
        if (!p->bufs[i])
            goto nomem;
        for (size_t j = 0; j < m; j++)
            memcpy((char *)p->bufs[i] + j * rowb[i],
                   (const char *)states[i].data + r->order[r->start[s] + j] * rowb[i],
                   rowb[i]);
        p->states[i].data = p->bufs[i];
    }
    return 0;
nomem:
    save_part_free(p, n_states);
    return ss_cluster_fail(c, SS_ERR_NOMEM, "out of memory");
}

/* One attempt over the keys not done yet; keys of shards that answered OK
 * are marked done (and their already_applied set). */
static int save_once(ss_cluster *c, const char *saver, const ss_key *keys, size_t n,
                     const uint64_t *segments, const bool *final,
                     const ss_state_data *states, size_t n_states, const size_t *rowb,
                     bool *todo, bool *applied, ss_client **bad)
{
    route r;
    save_part *parts = NULL;
    uint64_t *ids = NULL;
    bool *sent = NULL;
    size_t left = 0;
    int first = 0, rc;

    *bad = NULL;
    for (size_t k = 0; k < n; k++)
        left += todo[k];
    int one = left == n ? single_owner(c, keys, n) : -1;
    if (one >= 0) {
        ss_client *sc;
        rc = ss_cluster_client(c, (size_t)one, &sc);
        if (rc == 0)
            rc = ss_client_save(sc, saver, keys, n, segments, final, states, n_states,
                                applied);
        if (rc < 0) {
            *bad = sc;
            ss_cluster_fail_shard(c, (size_t)one, sc, rc);
        } else {
            memset(todo, 0, n * sizeof *todo);
        }
        return rc;
    }
    rc = route_make(c, keys, n, todo, &r);
    if (rc < 0)
        return rc;
    size_t ns = r.n_shards;
    parts = calloc(ns ? ns : 1, sizeof *parts);
    ids = calloc(ns ? ns : 1, sizeof *ids);
    sent = calloc(ns ? ns : 1, sizeof *sent);
    if (!parts || !ids || !sent) {
        first = ss_cluster_fail(c, SS_ERR_NOMEM, "out of memory");
        goto out;
    }
    for (size_t s = 0; s < ns && first == 0; s++) {
        ss_client *sc;
        if (r.counts[s] == 0)
            continue;
        first = save_part_make(c, &r, s, segments, final, states, n_states, rowb, &parts[s]);
        if (first == 0)
            first = ss_cluster_client(c, s, &sc);
        if (first == 0) {
            first = ss_client_save_send(sc, saver, r.keys + r.start[s], r.counts[s],
                                        parts[s].segments, parts[s].final,
                                        parts[s].states, n_states, &ids[s]);
            if (first < 0) {
                *bad = sc;
                ss_cluster_fail_shard(c, s, sc, first);
            } else {
                sent[s] = true;
            }
        }
    }
    for (size_t s = 0; s < ns; s++) {
        if (!sent[s])
            continue;
        ss_client *sc = c->conns[s];
        int prc = ss_client_save_recv(sc, ids[s], r.counts[s], parts[s].applied);
        if (prc < 0) {
            if (first == 0) {
                first = prc;
                *bad = sc;
                ss_cluster_fail_shard(c, s, sc, prc);
            }
            continue;
        }
        for (size_t j = 0; j < r.counts[s]; j++) {
            size_t k = r.order[r.start[s] + j];
            todo[k] = false;
            if (applied)
                applied[k] = parts[s].applied[j];
        }
    }
out:
    for (size_t s = 0; parts && s < ns; s++)
        save_part_free(&parts[s], n_states);
    free(parts);
    free(ids);
    free(sent);
    route_free(&r);
    return first;
}

int ss_cluster_save(ss_cluster *c, const char *saver, const ss_key *keys,
                    size_t n_keys, const uint64_t *segments, const bool *final,
                    const ss_state_data *states, size_t n_states,
                    bool *already_applied)
{
    ss_cluster_try t;
    size_t *rowb = NULL;
    bool *todo = NULL;
    int rc;

    if (!c)
        return SS_ERR_INVALID;
    c->err[0] = '\0';
    if (!saver || (n_keys && (!keys || !segments)) || (n_states && !states))
        return ss_cluster_fail(c, SS_ERR_INVALID, "saver, keys, segments or states is NULL");
    if (n_states > SS_STATES_PER_SAVER_MAX)
        return ss_cluster_fail(c, SS_ERR_TOO_BIG, "%zu states (limit %u)", n_states,
                               SS_STATES_PER_SAVER_MAX);
    rowb = calloc(n_states ? n_states : 1, sizeof *rowb);
    todo = calloc(n_keys ? n_keys : 1, sizeof *todo);
    if (!rowb || !todo) {
        rc = ss_cluster_fail(c, SS_ERR_NOMEM, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < n_states; i++) {
        rc = row_bytes(&states[i], &rowb[i]);
        if (rc < 0) {
            ss_cluster_fail(c, rc, "state %zu: bad dtype, rank or data", i);
            goto out;
        }
    }
    for (size_t k = 0; k < n_keys; k++)
        todo[k] = true;
    if (already_applied)
        memset(already_applied, 0, n_keys * sizeof *already_applied);
    ss_cluster_try_init(&t);
    for (;;) {
        ss_client *bad = NULL;
        rc = save_once(c, saver, keys, n_keys, segments, final, states, n_states, rowb,
                       todo, already_applied, &bad);
        if (rc == 0)
            break;
        char keep[SS_CLIENT_ERRMSG_MAX];
        snprintf(keep, sizeof keep, "%s", c->err);
        rc = ss_cluster_retry(c, &t, rc, bad);
        if (rc < 0) {
            if (!c->err[0])
                snprintf(c->err, sizeof c->err, "%s", keep);
            goto out;
        }
    }
    rc = 0;
out:
    free(rowb);
    free(todo);
    return rc;
}

/* ---- drop, cancel ----------------------------------------------------------- */

/* One shard's part of a keyed call that answers with counts (out[0],
 * out[1]; zeroed by the caller). */
typedef int (*keyed_count_fn)(ss_client *sc, const char *saver, const ss_key *keys,
                              size_t n, uint64_t out[2]);

/* Run fn for the keys of each shard, summing the counts into sum[] (also
 * on failure: those shards' parts are done); a redirect or a frozen slot
 * retries the keys not done yet through ss_cluster_retry. */
static int keyed_counts(ss_cluster *c, const char *saver, const ss_key *keys, size_t n_keys,
                        keyed_count_fn fn, uint64_t sum[2])
{
    ss_cluster_try t;
    bool *todo = calloc(n_keys ? n_keys : 1, sizeof *todo);
    int rc = 0;

    if (!todo)
        return ss_cluster_fail(c, SS_ERR_NOMEM, "out of memory");
    for (size_t k = 0; k < n_keys; k++)
        todo[k] = true;
    ss_cluster_try_init(&t);
    for (;;) {
        route r;
        ss_client *bad = NULL;
        rc = route_make(c, keys, n_keys, todo, &r);
        if (rc < 0)
            goto out;
        for (size_t s = 0; s < r.n_shards && rc == 0; s++) {
            ss_client *sc;
            uint64_t d[2] = {0, 0};
            if (r.counts[s] == 0)
                continue;
            rc = ss_cluster_client(c, s, &sc);
            if (rc == 0)
                rc = fn(sc, saver, r.keys + r.start[s], r.counts[s], d);
            if (rc < 0) {
                bad = sc;
                ss_cluster_fail_shard(c, s, sc, rc);
                break;
            }
            sum[0] += d[0];
            sum[1] += d[1];
            for (size_t j = r.start[s]; j < r.start[s + 1]; j++)
                todo[r.order[j]] = false;
        }
        route_free(&r);
        if (rc == 0)
            break;
        rc = ss_cluster_retry(c, &t, rc, bad);
        if (rc < 0)
            goto out;
    }
out:
    free(todo);
    return rc;
}

static int drop_part(ss_client *sc, const char *saver, const ss_key *keys, size_t n,
                     uint64_t out[2])
{
    return ss_client_drop(sc, saver, keys, n, false, &out[0]);
}

int ss_cluster_drop(ss_cluster *c, const char *saver, const ss_key *keys,
                    size_t n_keys, bool all, uint64_t *dropped)
{
    uint64_t sum[2] = {0, 0};
    int rc = 0;

    if (!c)
        return SS_ERR_INVALID;
    c->err[0] = '\0';
    if (dropped)
        *dropped = 0;
    if (!saver || (!all && n_keys && !keys))
        return ss_cluster_fail(c, SS_ERR_INVALID, "saver or keys is NULL");
    if (all) {
        for (size_t s = 0; s < c->n_conns; s++) {
            ss_client *sc;
            uint64_t d = 0;
            rc = ss_cluster_client(c, s, &sc);
            if (rc < 0)
                return rc;
            rc = ss_client_drop(sc, saver, NULL, 0, true, &d);
            if (rc < 0)
                return ss_cluster_fail_shard(c, s, sc, rc);
            sum[0] += d;
        }
        if (dropped)
            *dropped = sum[0];
        return 0;
    }
    rc = keyed_counts(c, saver, keys, n_keys, drop_part, sum);
    if (rc == 0 && dropped)
        *dropped = sum[0];
    return rc;
}

static int cancel_part(ss_client *sc, const char *saver, const ss_key *keys, size_t n,
                       uint64_t out[2])
{
    return ss_client_cancel(sc, saver, keys, n, &out[0], &out[1]);
}

int ss_cluster_cancel(ss_cluster *c, const char *saver, const ss_key *keys,
                      size_t n_keys, uint64_t *cancelled, uint64_t *segments)
{
    uint64_t sum[2] = {0, 0};

    if (cancelled)
        *cancelled = 0;
    if (segments)
        *segments = 0;
    if (!c)
        return SS_ERR_INVALID;
    c->err[0] = '\0';
    if (!saver || n_keys == 0 || !keys)
        return ss_cluster_fail(c, SS_ERR_INVALID,
                               "cancel: saver or keys missing (need 1 key or more)");
    for (size_t k = 0; k < n_keys; k++)
        if (!keys[k].data || keys[k].len < SS_KEY_MIN)
            return ss_cluster_fail(c, SS_ERR_INVALID, "cancel: keys[%zu] is empty", k);
    int rc = keyed_counts(c, saver, keys, n_keys, cancel_part, sum);
    if (cancelled)
        *cancelled = sum[0];
    if (segments)
        *segments = sum[1];
    return rc;
}

/* ---- list ------------------------------------------------------------------------ */

static int cmp_bytes(const ProtobufCBinaryData *a, const ProtobufCBinaryData *b)
{
    size_t m = a->len < b->len ? a->len : b->len;
    int d = m ? memcmp(a->data, b->data, m) : 0;
    if (d)
        return d;
    return a->len < b->len ? -1 : a->len > b->len;
}

int ss_cluster_list(ss_cluster *c, const char *saver, const ss_key *prefix,
                    const ss_key *start_after, uint32_t limit, ss_list_result **out)
{
    ss_list_result **parts = NULL;
    Statesaver__V1__SequenceInfo **seqs = NULL;
    Statesaver__V1__SaverInfo **savers = NULL;
    size_t *pos = NULL, n_seqs = 0, n_savers = 0, total_seqs = 0, total_savers = 0;
    bool more = false;
    int rc = 0;

    *out = NULL;
    if (!c)
        return SS_ERR_INVALID;
    c->err[0] = '\0';
    size_t ns = c->n_conns;
    parts = calloc(ns ? ns : 1, sizeof *parts);
    pos = calloc(ns ? ns : 1, sizeof *pos);
    if (!parts || !pos) {
        rc = ss_cluster_fail(c, SS_ERR_NOMEM, "out of memory");
        goto fail;
    }
    for (size_t s = 0; s < ns; s++) {
        ss_client *sc = NULL;
        rc = ss_cluster_client(c, s, &sc);
        if (rc == 0)
            rc = ss_client_list(sc, saver, prefix, start_after, limit, &parts[s]);
        if (rc < 0) {
            if (sc)
                ss_cluster_fail_shard(c, s, sc, rc);
            goto fail;
        }
        const Statesaver__V1__ListResponse *l = ss_list_result_pb(parts[s]);
        total_seqs += l->n_sequences;
        total_savers += l->n_savers;
        more = more || l->more;
    }
    seqs = calloc(total_seqs ? total_seqs : 1, sizeof *seqs);
    savers = calloc(total_savers ? total_savers : 1, sizeof *savers);
    if (!seqs || !savers) {
        rc = ss_cluster_fail(c, SS_ERR_NOMEM, "out of memory");
        goto fail;
    }
    /* Sequences: a k-way merge by key, cut at limit (the server default
     * when 0); rows left over mean another page. */
    size_t cap = limit ? limit : SS_LIST_LIMIT_DEFAULT;
    for (;;) {
        size_t best = ns;
        for (size_t s = 0; s < ns; s++) {
            const Statesaver__V1__ListResponse *l = ss_list_result_pb(parts[s]);
            if (pos[s] >= l->n_sequences)
                continue;
            if (best == ns ||
                cmp_bytes(&l->sequences[pos[s]]->key,
                          &ss_list_result_pb(parts[best])->sequences[pos[best]]->key) < 0)
                best = s;
        }
        if (best == ns)
            break;
        if (n_seqs == cap) {
            more = true;
            break;
        }
        seqs[n_seqs++] = ss_list_result_pb(parts[best])->sequences[pos[best]++];
    }
    /* Savers: the same on every shard; merged by name, counts summed into
     * the first shard's row (its reply is ours now). */
    for (size_t s = 0; s < ns; s++) {
        const Statesaver__V1__ListResponse *l = ss_list_result_pb(parts[s]);
        for (size_t i = 0; i < l->n_savers; i++) {
            size_t j = 0;
            while (j < n_savers && strcmp(savers[j]->name, l->savers[i]->name) != 0)
                j++;
            if (j == n_savers)
                savers[n_savers++] = l->savers[i];
            else
                savers[j]->sequences += l->savers[i]->sequences;
        }
    }
    free(pos);
    rc = ss_list_result_merge(parts, ns, seqs, n_seqs, savers, n_savers, more, out);
    if (rc < 0)
        return ss_cluster_fail(c, rc, "out of memory");
    return 0;
fail:
    for (size_t s = 0; parts && s < ns; s++)
        ss_list_result_free(parts[s]);
    free(parts);
    free(pos);
    free(seqs);
    free(savers);
    return rc;
}
