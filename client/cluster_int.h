/* cluster_int -- internals of libstatesaver's cluster handle, shared by
 * cluster.c (topology, connections, fan-out calls) and cluster_calls.c
 * (the keyed calls: split by shard, merged in key order, retried on a
 * redirect or a frozen slot).
 *
 * Not installed.
 */
#ifndef SS_CLUSTER_INT_H
#define SS_CLUSTER_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "client_int.h"
#include "ss_topology.h"

/* First and longest pause between two retries of a frozen slot (ms). */
#define SS_CLUSTER_BACKOFF_MIN_MS 10u
#define SS_CLUSTER_BACKOFF_MAX_MS 500u
/* Pause before the second and later redirect of one call (doubling). */
#define SS_CLUSTER_REDIRECT_PAUSE_MS 25u

struct ss_cluster {
    ss_client_options conn;    /* per-shard options (server set per shard) */
    void *token;               /* owned copy of conn.token */
    char **seeds;              /* owned copies of the seed addresses */
    size_t n_seeds;            /* entries of seeds */
    ss_topology *topo;         /* current topology (owned) */
    char **addr;               /* per shard index: address used (owned) */
    ss_client **conns;         /* per shard index: connection or NULL */
    size_t n_conns;            /* entries of addr and conns (= shards) */
    ss_client *spare;          /* the connection a topology came over when it
                                  was no shard's yet (adopt reuses it) */
    char *spare_addr;          /* its address (owned) */
    uint32_t max_redirects;    /* redirects one call may follow */
    uint32_t unavailable_ms;   /* retry window of UNAVAILABLE */
    uint64_t redirects;        /* redirects followed since open */
    char err[SS_CLIENT_ERRMSG_MAX]; /* last error ("" after success) */
};

/* Retry bookkeeping of one public call. */
typedef struct ss_cluster_try {
    uint32_t redirects;        /* MOVED answers followed so far */
    int64_t start_ms;          /* when the call began (monotonic) */
    uint32_t backoff_ms;       /* next pause after UNAVAILABLE */
} ss_cluster_try;

/* Set c->err (printf-style) and return rc. */
SS_CLIENT_INTERNAL int ss_cluster_fail(ss_cluster *c, int rc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* c->err = "shard ID (ADDR): <client's last error>"; returns rc. */
SS_CLIENT_INTERNAL int ss_cluster_fail_shard(ss_cluster *c, size_t shard,
                                             ss_client *sc, int rc);

SS_CLIENT_INTERNAL void ss_cluster_try_init(ss_cluster_try *t);
/* After a failed attempt with rc on shard client sc (may be NULL): 0 when
 * the call should be retried (topology refreshed, paused as needed), else
 * the error to return (c->err set). */
SS_CLIENT_INTERNAL int ss_cluster_retry(ss_cluster *c, ss_cluster_try *t, int rc,
                                        ss_client *sc);

/* Owner shard index of every key (owner[n]); counts[shard] (n_shards
 * entries) gets how many keys each shard has. */
SS_CLIENT_INTERNAL int ss_cluster_route_keys(ss_cluster *c, const ss_key *keys,
                                             size_t n, size_t *owner, size_t *counts);

#endif
