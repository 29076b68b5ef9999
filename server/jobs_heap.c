/* jobs_heap -- intrusive binary min-heap used by the job queue. */
#include "jobs_heap.h"

#include <stdlib.h>

#include "ss_error.h"

static bool less(const ss_heap_slot *a, const ss_heap_slot *b)
{
    return a->k1 < b->k1 || (a->k1 == b->k1 && a->k2 < b->k2);
}

static void place(ss_heap *h, size_t i, ss_heap_slot s)
{
    h->v[i] = s;
    s.node->pos = i + 1;
}

static void sift_up(ss_heap *h, size_t i)
{
    ss_heap_slot s = h->v[i];
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!less(&s, &h->v[p]))
            break;
        place(h, i, h->v[p]);
        i = p;
    }
    place(h, i, s);
}

static void sift_down(ss_heap *h, size_t i)
{
    ss_heap_slot s = h->v[i];
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= h->n)
            break;
        if (c + 1 < h->n && less(&h->v[c + 1], &h->v[c]))
            c++;
        if (!less(&h->v[c], &s))
            break;
        place(h, i, h->v[c]);
        i = c;
    }
    place(h, i, s);
}

int ss_heap_reserve(ss_heap *h, size_t n)
{
    if (n <= h->cap)
        return 0;
    size_t cap = h->cap ? h->cap : 16;
    while (cap < n)
        cap *= 2;
    ss_heap_slot *v = realloc(h->v, cap * sizeof *v);
    if (!v)
        return SS_ERR_NOMEM;
    h->v = v;
    h->cap = cap;
    return 0;
}

int ss_heap_push(ss_heap *h, ss_heap_node *node)
{
    if (h->n == h->cap && ss_heap_reserve(h, h->n + 1) < 0)
        return SS_ERR_NOMEM;
    ss_heap_slot s = {node->k1, node->k2, node};
    place(h, h->n, s);
    h->n++;
    sift_up(h, h->n - 1);
    return 0;
}

void ss_heap_remove(ss_heap *h, ss_heap_node *node)
{
    if (node->pos == 0)
        return;
    size_t i = node->pos - 1;
    node->pos = 0;
    h->n--;
    if (i == h->n)
        return;
    ss_heap_slot last = h->v[h->n];
    place(h, i, last);
    if (i > 0 && less(&last, &h->v[(i - 1) / 2]))
        sift_up(h, i);
    else
        sift_down(h, i);
}

ss_heap_node *ss_heap_min(const ss_heap *h)
{
    return h->n ? h->v[0].node : NULL;
}

void ss_heap_free(ss_heap *h)
{
    if (!h)
        return;
    free(h->v);
    h->v = NULL;
    h->n = h->cap = 0;
}
