/* ss_topology -- a cluster's topology: epoch, shards (id, primary address,
 * replica addresses) and the owner of each of the 16384 hash slots; its
 * JSON form (the etcd value and the --cluster-config file) and its wire
 * form (TopologyResponse).
 *
 * JSON form (docs/cluster.md):
 *   {"cluster": "NAME", "epoch": 7,
 *    "shards": [{"id": "s0", "primary": "10.0.0.1:7450", "replicas": []}, ...],
 *    "slots":  [{"first": 0, "last": 5460, "shard": "s0"}, ...]}
 * A valid topology has 1..SS_TOPO_MAX_SHARDS shards with distinct
 * non-empty ids (at most SS_TOPO_MAX_ID bytes, printable ASCII) and
 * HOST:PORT primaries (at most SS_TOPO_MAX_ADDR bytes), and slot ranges
 * that cover every slot exactly once and name known shards. Parsing
 * refuses anything else with a message naming the offending entry.
 *
 * Ownership: an ss_topology is owned by whoever created it (new, parse,
 * load, from_pb, copy) and freed with ss_topology_free (accepts NULL).
 * Strings returned by the accessors are owned by the topology and valid
 * until it is modified or freed. Not thread-safe: share a topology between
 * threads only read-only (or copy it).
 */
#ifndef SS_TOPOLOGY_H
#define SS_TOPOLOGY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "statesaver.pb-c.h"

#define SS_TOPO_MAX_SHARDS 1024u   /* shards in one cluster */
#define SS_TOPO_MAX_REPLICAS 16u   /* replicas per shard */
#define SS_TOPO_MAX_ID 64u         /* bytes of a shard id or cluster name */
#define SS_TOPO_MAX_ADDR 255u      /* bytes of a HOST:PORT address */
#define SS_TOPO_MAX_JSON (4u << 20) /* bytes of a topology's JSON form */

typedef struct ss_topology ss_topology;

/* An empty topology (no shards, no slot owned): build it with add_shard and
 * assign, then validate. NULL on allocation failure. */
ss_topology *ss_topology_new(const char *cluster);
/* The one-shard topology of a server without a cluster: shard `shard`
 * at `address` owns every slot, epoch 0. NULL on allocation failure or a
 * bad id/address. */
ss_topology *ss_topology_new_single(const char *cluster, const char *shard,
                                    const char *address);
ss_topology *ss_topology_copy(const ss_topology *t);
void ss_topology_free(ss_topology *t);

/* Parse and validate the JSON form. 0, SS_ERR_NOMEM, or SS_ERR_FORMAT with
 * a message in err (errlen bytes, always NUL-terminated). */
int ss_topology_parse(const char *json, size_t len, ss_topology **out,
                      char *err, size_t errlen);
/* Read and parse a file (at most SS_TOPO_MAX_JSON bytes); SS_ERR_IO /
 * SS_ERR_TOO_BIG / SS_ERR_FORMAT with a message naming the file. */
int ss_topology_load_file(const char *path, ss_topology **out, char *err,
                          size_t errlen);
/* The JSON form (compact, ranges coalesced), malloc'ed, NUL-terminated;
 * the caller frees it. NULL on allocation failure. */
char *ss_topology_to_json(const ss_topology *t);

/* Convert from a TopologyResponse (validated like parse); the response is
 * only read. */
int ss_topology_from_pb(const Statesaver__V1__TopologyResponse *pb,
                        ss_topology **out, char *err, size_t errlen);
/* Fill a TopologyResponse: epoch, cluster, ranges, shards (self, source,
 * stale and frozen are the caller's). Every allocation is a separate
 * malloc, so the caller releases the message with
 * protobuf_c_message_free_unpacked(&pb->base, NULL). NULL on allocation
 * failure. */
Statesaver__V1__TopologyResponse *ss_topology_to_pb(const ss_topology *t);

/* Check the invariants above; 0 or SS_ERR_FORMAT with a message. */
int ss_topology_validate(const ss_topology *t, char *err, size_t errlen);
bool ss_topology_equal(const ss_topology *a, const ss_topology *b);

const char *ss_topology_cluster(const ss_topology *t);
uint64_t ss_topology_epoch(const ss_topology *t);
void ss_topology_set_epoch(ss_topology *t, uint64_t epoch);

size_t ss_topology_n_shards(const ss_topology *t);
const char *ss_topology_shard_id(const ss_topology *t, size_t i);
const char *ss_topology_shard_primary(const ss_topology *t, size_t i);
size_t ss_topology_shard_n_replicas(const ss_topology *t, size_t i);
const char *ss_topology_shard_replica(const ss_topology *t, size_t i, size_t j);
/* Index of the shard with this id, or SS_ERR_NOT_FOUND. */
int ss_topology_find_shard(const ss_topology *t, const char *id);
/* Add a shard (id unique, address HOST:PORT); its index, or SS_ERR_INVALID /
 * SS_ERR_CONFLICT (id taken) / SS_ERR_FULL / SS_ERR_NOMEM. */
int ss_topology_add_shard(ss_topology *t, const char *id, const char *primary);
/* Replace a shard's primary address; 0 or SS_ERR_INVALID. */
int ss_topology_set_primary(ss_topology *t, size_t i, const char *primary);
/* Add a replica address to shard i; 0 or SS_ERR_INVALID / SS_ERR_FULL /
 * SS_ERR_NOMEM. */
int ss_topology_add_replica(ss_topology *t, size_t i, const char *addr);

/* The shard index owning a slot (slot < SS_SLOT_COUNT), or SS_ERR_NOT_FOUND
 * when unassigned (only in a topology still being built). */
int ss_topology_owner(const ss_topology *t, unsigned slot);
/* Give slots first..last (inclusive) to shard index `shard`. The epoch is
 * not changed (the caller bumps it). 0 or SS_ERR_INVALID. */
int ss_topology_assign(ss_topology *t, unsigned first, unsigned last,
                       size_t shard);
/* Split every slot evenly over the shards in index order (cluster init):
 * shard i gets a contiguous range, the first ones one slot more when 16384
 * does not divide evenly. 0 or SS_ERR_INVALID (no shards). */
int ss_topology_assign_even(ss_topology *t);

/* Maximal runs of consecutive slots with one owner (unassigned slots are
 * skipped), in slot order. */
size_t ss_topology_n_ranges(const ss_topology *t);
void ss_topology_range(const ss_topology *t, size_t i, unsigned *first,
                       unsigned *last, int *shard);
/* Slots owned by shard index i. */
unsigned ss_topology_shard_slots(const ss_topology *t, size_t i);

/* Check a HOST:PORT address ("127.0.0.1:7450", "[::1]:7450",
 * "shard-0.ss:7450"): true when well-formed. */
bool ss_topology_addr_ok(const char *addr);

#endif
