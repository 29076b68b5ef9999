/* jobs_map -- intrusive chained hash map keyed by byte strings.
 *
 * Nodes are embedded in the caller's structs; node->key points at bytes the
 * caller owns and keeps alive while the node is in the map. The map never
 * frees nodes. Not thread-safe (loop thread only).
 */
#ifndef SS_JOBS_MAP_H
#define SS_JOBS_MAP_H

#include <stddef.h>
#include <stdint.h>

typedef struct ss_map_node {
    struct ss_map_node *next; /* bucket chain */
    uint64_t hash;            /* hash of key, cached */
    const void *key;          /* borrowed key bytes */
    size_t len;               /* key length */
} ss_map_node;

typedef struct ss_map {
    ss_map_node **b;  /* nb buckets, owned */
    size_t nb;        /* bucket count (power of two, or 0) */
    size_t n;         /* nodes in the map */
} ss_map;

/* Find the node with this key, or NULL. */
ss_map_node *ss_map_find(const ss_map *m, const void *key, size_t len);
/* Insert node (key set by the caller, not already present). Returns
 * SS_ERR_NOMEM only when the map has no buckets and cannot get any; a
 * failed resize later just keeps the old table. */
int ss_map_insert(ss_map *m, ss_map_node *node, const void *key, size_t len);
/* Remove node (must be in m). */
void ss_map_remove(ss_map *m, ss_map_node *node);
/* Calls fn for every node; fn may remove (and free) the node it is given,
 * but must not insert or remove any other node. */
void ss_map_each(const ss_map *m, void (*fn)(void *arg, ss_map_node *node), void *arg);
/* Release the buckets (not the nodes). Accepts NULL. */
void ss_map_free(ss_map *m);

#endif
