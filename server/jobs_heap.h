/* jobs_heap -- intrusive binary min-heap used by the job queue.
 *
 * Nodes are embedded in the caller's structs and ordered by (k1, k2). A
 * node knows its position, so it can be removed in O(log n) wherever it
 * is. The heap stores pointers only: it never owns or frees the nodes.
 * A node's keys must not change while it is in a heap.
 * Not thread-safe (loop thread only).
 */
#ifndef SS_JOBS_HEAP_H
#define SS_JOBS_HEAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct ss_heap_node {
    uint64_t k1;  /* primary key (e.g. a deadline or an age) */
    uint64_t k2;  /* tie breaker (e.g. an insertion counter) */
    size_t pos;   /* index + 1 while in a heap, 0 when not */
} ss_heap_node;

/* A heap slot carries a copy of its node's keys, so sifting compares
 * within the array instead of loading every node it passes (with 100k
 * scattered nodes those loads are cache misses: 3 us per removal). */
typedef struct ss_heap_slot {
    uint64_t k1;          /* node->k1 */
    uint64_t k2;          /* node->k2 */
    ss_heap_node *node;   /* the node (borrowed) */
} ss_heap_slot;

typedef struct ss_heap {
    ss_heap_slot *v;   /* array of n slots (heap order), owned */
    size_t n;          /* nodes in the heap */
    size_t cap;        /* allocated slots in v */
} ss_heap;

/* Insert node (must not be in a heap). SS_ERR_NOMEM if growing fails; the
 * heap is then unchanged. */
int ss_heap_push(ss_heap *h, ss_heap_node *node);
/* Make room for n nodes in all, so that pushes up to n cannot fail.
 * SS_ERR_NOMEM if growing fails (the heap is then unchanged). */
int ss_heap_reserve(ss_heap *h, size_t n);
/* Remove node if it is in h (no-op when node->pos == 0). */
void ss_heap_remove(ss_heap *h, ss_heap_node *node);
/* Smallest node or NULL when empty. */
ss_heap_node *ss_heap_min(const ss_heap *h);
static inline bool ss_heap_contains(const ss_heap_node *node) { return node->pos != 0; }
/* Release the array (not the nodes). Accepts NULL. */
void ss_heap_free(ss_heap *h);

#endif
