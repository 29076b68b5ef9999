/* jobs_map -- intrusive chained hash map keyed by byte strings. */
#include "jobs_map.h"

#include <stdlib.h>
#include <string.h>

#include "ss_error.h"

/* FNV-1a 64: keys are short and not attacker-chosen in bulk beyond the
 * queue capacity, so a simple hash keeps chains short enough. */
static uint64_t hash_bytes(const void *key, size_t len)
{
    const uint8_t *p = key;
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < len; i++) {
        h ^= p[i];
        h *= 1099511628211ull;
    }
    return h;
}

ss_map_node *ss_map_find(const ss_map *m, const void *key, size_t len)
{
    if (m->nb == 0)
        return NULL;
    uint64_t h = hash_bytes(key, len);
    for (ss_map_node *n = m->b[h & (m->nb - 1)]; n; n = n->next)
        if (n->hash == h && n->len == len && memcmp(n->key, key, len) == 0)
            return n;
    return NULL;
}

static void grow(ss_map *m, size_t nb)
{
    ss_map_node **b = calloc(nb, sizeof *b);
    if (!b)
        return;
    for (size_t i = 0; i < m->nb; i++) {
        ss_map_node *n = m->b[i];
        while (n) {
            ss_map_node *next = n->next;
            size_t j = n->hash & (nb - 1);
            n->next = b[j];
            b[j] = n;
            n = next;
        }
    }
    free(m->b);
    m->b = b;
    m->nb = nb;
}

int ss_map_insert(ss_map *m, ss_map_node *node, const void *key, size_t len)
{
    if (m->nb == 0)
        grow(m, 64);
    else if (m->n >= m->nb)
        grow(m, m->nb * 2);
    if (m->nb == 0)
        return SS_ERR_NOMEM;
    node->key = key;
    node->len = len;
    node->hash = hash_bytes(key, len);
    size_t j = node->hash & (m->nb - 1);
    node->next = m->b[j];
    m->b[j] = node;
    m->n++;
    return 0;
}

void ss_map_remove(ss_map *m, ss_map_node *node)
{
    ss_map_node **pp = &m->b[node->hash & (m->nb - 1)];
    while (*pp && *pp != node)
        pp = &(*pp)->next;
    if (*pp) {
        *pp = node->next;
        node->next = NULL;
        m->n--;
    }
}

void ss_map_each(const ss_map *m, void (*fn)(void *arg, ss_map_node *node), void *arg)
{
    for (size_t i = 0; i < m->nb; i++) {
        ss_map_node *n = m->b[i];
        while (n) {
            ss_map_node *next = n->next;
            fn(arg, n);
            n = next;
        }
    }
}

void ss_map_free(ss_map *m)
{
    if (!m)
        return;
    free(m->b);
    m->b = NULL;
    m->nb = m->n = 0;
}
