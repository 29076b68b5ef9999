/* shard -- the server's view of its cluster: which topology it serves
 * (none, a static file, or etcd, watched), which shard it is, which slots
 * it owns and which are frozen for a move; the ownership check run before
 * every keyed request.
 *
 * Sources (docs/cluster.md):
 *   none:  one shard "s0" owning every slot, epoch 0 (today's behaviour);
 *   file:  --cluster-config FILE --shard ID, read once at start;
 *   etcd:  --etcd URL --cluster NAME --shard ID: the JSON form of
 *          ss_topology.h under /statesaver/NAME/topology, read at start
 *          (waiting up to --topology-wait-ms for a missing key) and then
 *          watched from a thread this module owns; a change reaches the
 *          loop through a uv_async. When etcd cannot be reached the server
 *          keeps the last topology, is "stale" (Topology.stale, Stats,
 *          /readyz, metrics) and retries; it recovers by itself.
 *
 * Frozen slots (SlotFreeze) are kept here on the loop thread and persisted
 * by the caller (slots.h) so a restarted source stays frozen.
 *
 * Threads: ss_shard_open runs before the loop; everything else on the
 * loop thread, except the watcher inside (private).
 */
#ifndef SS_SHARD_H
#define SS_SHARD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "config.h"
#include "ss_topology.h"
#include "statesaver.pb-c.h"

#define SS_CLUSTER_KEY_FMT "/statesaver/%s/topology" /* etcd key of a cluster */
#define SS_CLUSTER_RECHECK_MS 2000u   /* a watch span: then re-read the key */
#define SS_CLUSTER_RETRY_MS 250u      /* first wait after an etcd failure */
#define SS_CLUSTER_RETRY_MAX_MS 2000u /* longest wait between retries */
#define SS_CLUSTER_POLL_MS 200u       /* poll period for a missing key at start */
#define SS_CLUSTER_ERR_MAX 256u       /* bytes of a stored error text */
#define SS_CLUSTER_SINGLE_SHARD "s0"  /* shard id without a cluster */

typedef enum ss_shard_source {
    SS_CLUSTER_NONE = 0, /* no cluster: one shard owning everything */
    SS_CLUSTER_FILE,     /* --cluster-config */
    SS_CLUSTER_ETCD,     /* --etcd */
} ss_shard_source;

typedef struct ss_shard ss_shard;

/* Read the topology named by cfg (before the loop runs). Errors (etcd
 * unreachable, key missing after --topology-wait-ms, invalid topology,
 * --shard not in it) return a negative code with the reason in err; main
 * exits 2. The caller frees the result with ss_shard_free. */
int ss_shard_open(ss_shard **out, const ss_config *cfg, char *err,
                    size_t errlen);
/* Start watching (etcd) on loop; port is the bound port (for the
 * no-cluster topology's address). 0 or a negative code. */
int ss_shard_start(ss_shard *c, uv_loop_t *loop, int port);
/* Stop the watcher and close the async (loop thread, at shutdown).
 * Idempotent. */
void ss_shard_stop(ss_shard *c);
/* After the loop has closed. Accepts NULL. */
void ss_shard_free(ss_shard *c);

ss_shard_source ss_shard_source_of(const ss_shard *c);
const char *ss_shard_source_name(const ss_shard *c);
/* The topology now served (owned by c, valid until the next loop
 * iteration that applies a change). */
const ss_topology *ss_shard_topology(const ss_shard *c);
const char *ss_shard_self(const ss_shard *c);
bool ss_shard_stale(const ss_shard *c);
/* The last etcd error text ("" when fine). */
const char *ss_shard_error(const ss_shard *c);
uint64_t ss_shard_etcd_errors(const ss_shard *c);

/* Called on the loop thread after a new topology was applied (ownership
 * may have changed). One callback; NULL to clear. */
typedef void (*ss_shard_change_fn)(void *arg);
void ss_shard_on_change(ss_shard *c, ss_shard_change_fn fn, void *arg);

/* Does this shard own slot? */
bool ss_shard_owns(const ss_shard *c, unsigned slot);
unsigned ss_shard_owned_slots(const ss_shard *c);

/* Frozen slots (loop thread). set_frozen changes first..last. */
bool ss_shard_frozen(const ss_shard *c, unsigned slot);
void ss_shard_set_frozen(ss_shard *c, unsigned first, unsigned last, bool on);
unsigned ss_shard_frozen_count(const ss_shard *c);
/* The frozen set as a bitmap of SS_SLOT_COUNT bits (for persisting) and
 * back. */
#define SS_CLUSTER_BITMAP_BYTES (16384u / 8u)
void ss_shard_frozen_bitmap(const ss_shard *c, uint8_t out[SS_CLUSTER_BITMAP_BYTES]);
void ss_shard_frozen_load(ss_shard *c, const uint8_t in[SS_CLUSTER_BITMAP_BYTES]);

/* Ranges of frozen slots as SlotRange messages (malloc'ed array of
 * malloc'ed messages, shard ""): free with ss_shard_ranges_free. */
Statesaver__V1__SlotRange **ss_shard_frozen_ranges(const ss_shard *c, size_t *n);
void ss_shard_ranges_free(Statesaver__V1__SlotRange **r, size_t n);

/* The ownership verdict for one key. */
typedef enum ss_shard_verdict {
    SS_CLUSTER_OK = 0,  /* owned (and not frozen for a write) */
    SS_CLUSTER_MOVED,   /* owned by another shard: redirect filled */
    SS_CLUSTER_FROZEN,  /* a write to a frozen slot */
} ss_shard_verdict;

/* Where a key goes: slot, and for MOVED the owner's shard id and address
 * (borrowed from the topology) and the epoch. */
typedef struct ss_shard_where {
    unsigned slot;        /* the key's hash slot */
    const char *shard;    /* owner id (MOVED), else NULL */
    const char *address;  /* owner primary (MOVED), else NULL */
    uint64_t epoch;       /* topology epoch */
} ss_shard_where;

ss_shard_verdict ss_shard_check_key(const ss_shard *c, const uint8_t *key,
                                        size_t len, bool write,
                                        ss_shard_where *where);

#endif
