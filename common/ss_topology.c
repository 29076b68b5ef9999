/* ss_topology -- a cluster topology, its JSON and wire forms (see
 * ss_topology.h). */
#include "ss_topology.h"

#include <cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fileio.h"
#include "ss_error.h"
#include "ss_parse.h"
#include "ss_slot.h"

#define NO_OWNER (-1)

typedef struct topo_shard {
    char *id;          /* shard id, malloc'ed */
    char *primary;     /* HOST:PORT, malloc'ed */
    char **replicas;   /* n_replicas HOST:PORT strings, malloc'ed */
    size_t n_replicas; /* entries of replicas */
} topo_shard;

struct ss_topology {
    char *cluster;                  /* cluster name, malloc'ed ("" allowed) */
    uint64_t epoch;                 /* bumped by every change of ownership */
    topo_shard *shards;             /* n_shards entries, malloc'ed */
    size_t n_shards;                /* shards in use */
    size_t cap;                     /* entries allocated in shards */
    int16_t owner[SS_SLOT_COUNT];   /* shard index per slot, NO_OWNER if none */
};

#define seterr ss_fileio_err

static bool id_ok(const char *id)
{
    size_t n = id ? strlen(id) : 0;
    if (n == 0 || n > SS_TOPO_MAX_ID)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = id[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_' || c == '.'))
            return false;
    }
    return true;
}

bool ss_topology_addr_ok(const char *addr)
{
    size_t n = addr ? strlen(addr) : 0;
    if (n < 3 || n > SS_TOPO_MAX_ADDR)
        return false;
    for (size_t i = 0; i < n; i++)
        if (addr[i] <= ' ' || addr[i] > '~')
            return false;
    const char *colon = strrchr(addr, ':');
    if (!colon || colon == addr)
        return false;
    if (addr[0] == '[') {
        if (colon[-1] != ']' || colon - addr < 3)
            return false;
    } else if (memchr(addr, ':', (size_t)(colon - addr))) {
        return false; /* a bare IPv6 address needs brackets */
    }
    uint64_t port;
    if (ss_parse_u64(colon + 1, 1, 65535, &port) != 0)
        return false;
    return true;
}

ss_topology *ss_topology_new(const char *cluster)
{
    ss_topology *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    t->cluster = strdup(cluster ? cluster : "");
    if (!t->cluster) {
        free(t);
        return NULL;
    }
    for (unsigned s = 0; s < SS_SLOT_COUNT; s++)
        t->owner[s] = NO_OWNER;
    return t;
}

ss_topology *ss_topology_new_single(const char *cluster, const char *shard,
                                    const char *address)
{
    ss_topology *t = ss_topology_new(cluster);
    if (!t)
        return NULL;
    int i = ss_topology_add_shard(t, shard, address);
    if (i < 0 || ss_topology_assign(t, 0, SS_SLOT_COUNT - 1, (size_t)i) != 0) {
        ss_topology_free(t);
        return NULL;
    }
    return t;
}

static void shard_clear(topo_shard *s)
{
    free(s->id);
    free(s->primary);
    for (size_t j = 0; j < s->n_replicas; j++)
        free(s->replicas[j]);
    free(s->replicas);
}

void ss_topology_free(ss_topology *t)
{
    if (!t)
        return;
    for (size_t i = 0; i < t->n_shards; i++)
        shard_clear(&t->shards[i]);
    free(t->shards);
    free(t->cluster);
    free(t);
}

ss_topology *ss_topology_copy(const ss_topology *t)
{
    ss_topology *c = ss_topology_new(t->cluster);
    if (!c)
        return NULL;
    c->epoch = t->epoch;
    for (size_t i = 0; i < t->n_shards; i++) {
        const topo_shard *s = &t->shards[i];
        if (ss_topology_add_shard(c, s->id, s->primary) < 0)
            goto fail;
        for (size_t j = 0; j < s->n_replicas; j++)
            if (ss_topology_add_replica(c, i, s->replicas[j]) != 0)
                goto fail;
    }
    memcpy(c->owner, t->owner, sizeof c->owner);
    return c;
fail:
    ss_topology_free(c);
    return NULL;
}

const char *ss_topology_cluster(const ss_topology *t) { return t->cluster; }
uint64_t ss_topology_epoch(const ss_topology *t) { return t->epoch; }
void ss_topology_set_epoch(ss_topology *t, uint64_t epoch) { t->epoch = epoch; }
size_t ss_topology_n_shards(const ss_topology *t) { return t->n_shards; }

const char *ss_topology_shard_id(const ss_topology *t, size_t i)
{
    return i < t->n_shards ? t->shards[i].id : NULL;
}

const char *ss_topology_shard_primary(const ss_topology *t, size_t i)
{
    return i < t->n_shards ? t->shards[i].primary : NULL;
}

size_t ss_topology_shard_n_replicas(const ss_topology *t, size_t i)
{
    return i < t->n_shards ? t->shards[i].n_replicas : 0;
}

const char *ss_topology_shard_replica(const ss_topology *t, size_t i, size_t j)
{
    if (i >= t->n_shards || j >= t->shards[i].n_replicas)
        return NULL;
    return t->shards[i].replicas[j];
}

int ss_topology_find_shard(const ss_topology *t, const char *id)
{
    for (size_t i = 0; i < t->n_shards; i++)
        if (strcmp(t->shards[i].id, id) == 0)
            return (int)i;
    return SS_ERR_NOT_FOUND;
}

int ss_topology_add_shard(ss_topology *t, const char *id, const char *primary)
{
    if (!id_ok(id) || !ss_topology_addr_ok(primary))
        return SS_ERR_INVALID;
    if (ss_topology_find_shard(t, id) >= 0)
        return SS_ERR_CONFLICT;
    if (t->n_shards >= SS_TOPO_MAX_SHARDS)
        return SS_ERR_FULL;
    if (t->n_shards == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 4;
        topo_shard *n = realloc(t->shards, cap * sizeof *n);
        if (!n)
            return SS_ERR_NOMEM;
        t->shards = n;
        t->cap = cap;
    }
    topo_shard *s = &t->shards[t->n_shards];
    memset(s, 0, sizeof *s);
    s->id = strdup(id);
    s->primary = strdup(primary);
    if (!s->id || !s->primary) {
        shard_clear(s);
        return SS_ERR_NOMEM;
    }
    return (int)t->n_shards++;
}

int ss_topology_set_primary(ss_topology *t, size_t i, const char *primary)
{
    if (i >= t->n_shards || !ss_topology_addr_ok(primary))
        return SS_ERR_INVALID;
    char *p = strdup(primary);
    if (!p)
        return SS_ERR_NOMEM;
    free(t->shards[i].primary);
    t->shards[i].primary = p;
    return 0;
}

int ss_topology_add_replica(ss_topology *t, size_t i, const char *addr)
{
    if (i >= t->n_shards || !ss_topology_addr_ok(addr))
        return SS_ERR_INVALID;
    topo_shard *s = &t->shards[i];
    if (s->n_replicas >= SS_TOPO_MAX_REPLICAS)
        return SS_ERR_FULL;
    char **n = realloc(s->replicas, (s->n_replicas + 1) * sizeof *n);
    if (!n)
        return SS_ERR_NOMEM;
    s->replicas = n;
    if (!(s->replicas[s->n_replicas] = strdup(addr)))
        return SS_ERR_NOMEM;
    s->n_replicas++;
    return 0;
}

int ss_topology_owner(const ss_topology *t, unsigned slot)
{
    if (slot >= SS_SLOT_COUNT || t->owner[slot] == NO_OWNER)
        return SS_ERR_NOT_FOUND;
    return t->owner[slot];
}

int ss_topology_assign(ss_topology *t, unsigned first, unsigned last, size_t shard)
{
    if (first > last || last >= SS_SLOT_COUNT || shard >= t->n_shards)
        return SS_ERR_INVALID;
    for (unsigned s = first; s <= last; s++)
        t->owner[s] = (int16_t)shard;
    return 0;
}

int ss_topology_assign_even(ss_topology *t)
{
    if (t->n_shards == 0)
        return SS_ERR_INVALID;
    unsigned per = SS_SLOT_COUNT / (unsigned)t->n_shards;
    unsigned extra = SS_SLOT_COUNT % (unsigned)t->n_shards;
    unsigned first = 0;
    for (size_t i = 0; i < t->n_shards; i++) {
        unsigned n = per + (i < extra ? 1u : 0u);
        if (n && ss_topology_assign(t, first, first + n - 1, i) != 0)
            return SS_ERR_INVALID;
        first += n;
    }
    return 0;
}

size_t ss_topology_n_ranges(const ss_topology *t)
{
    size_t n = 0;
    for (unsigned s = 0; s < SS_SLOT_COUNT; s++)
        if (t->owner[s] != NO_OWNER && (s == 0 || t->owner[s - 1] != t->owner[s]))
            n++;
    return n;
}

void ss_topology_range(const ss_topology *t, size_t i, unsigned *first,
                       unsigned *last, int *shard)
{
    size_t n = 0;
    *first = *last = 0;
    *shard = NO_OWNER;
    for (unsigned s = 0; s < SS_SLOT_COUNT; s++) {
        if (t->owner[s] == NO_OWNER || (s > 0 && t->owner[s - 1] == t->owner[s]))
            continue;
        if (n++ != i)
            continue;
        unsigned e = s;
        while (e + 1 < SS_SLOT_COUNT && t->owner[e + 1] == t->owner[s])
            e++;
        *first = s;
        *last = e;
        *shard = t->owner[s];
        return;
    }
}

unsigned ss_topology_shard_slots(const ss_topology *t, size_t i)
{
    unsigned n = 0;
    for (unsigned s = 0; s < SS_SLOT_COUNT; s++)
        if (t->owner[s] == (int)i)
            n++;
    return n;
}

int ss_topology_validate(const ss_topology *t, char *err, size_t errlen)
{
    if (t->n_shards == 0) {
        seterr(err, errlen, "topology has no shards");
        return SS_ERR_FORMAT;
    }
    for (unsigned s = 0; s < SS_SLOT_COUNT; s++) {
        if (t->owner[s] != NO_OWNER)
            continue;
        unsigned e = s;
        while (e + 1 < SS_SLOT_COUNT && t->owner[e + 1] == NO_OWNER)
            e++;
        seterr(err, errlen, "slots %u-%u are not assigned to any shard", s, e);
        return SS_ERR_FORMAT;
    }
    return 0;
}

bool ss_topology_equal(const ss_topology *a, const ss_topology *b)
{
    if (a->epoch != b->epoch || strcmp(a->cluster, b->cluster) != 0 ||
        a->n_shards != b->n_shards || memcmp(a->owner, b->owner, sizeof a->owner) != 0)
        return false;
    for (size_t i = 0; i < a->n_shards; i++) {
        const topo_shard *x = &a->shards[i], *y = &b->shards[i];
        if (strcmp(x->id, y->id) || strcmp(x->primary, y->primary) ||
            x->n_replicas != y->n_replicas)
            return false;
        for (size_t j = 0; j < x->n_replicas; j++)
            if (strcmp(x->replicas[j], y->replicas[j]))
                return false;
    }
    return true;
}

/* Assign first..last to the shard named `id` while building from an outside
 * form: refuses unknown shards, bad bounds and overlaps, naming them. */
static int assign_checked(ss_topology *t, double first_d, double last_d,
                          const char *id, size_t idx, char *err, size_t errlen)
{
    if (!(first_d >= 0 && last_d >= first_d && last_d < SS_SLOT_COUNT) ||
        first_d != (double)(unsigned)first_d || last_d != (double)(unsigned)last_d) {
        seterr(err, errlen, "slot range %zu (%g-%g): slots are integers 0-%u, first <= last",
               idx, first_d, last_d, SS_SLOT_COUNT - 1);
        return SS_ERR_FORMAT;
    }
    int sh = id ? ss_topology_find_shard(t, id) : SS_ERR_NOT_FOUND;
    if (sh < 0) {
        seterr(err, errlen, "slot range %zu (%u-%u) names unknown shard '%s'", idx,
               (unsigned)first_d, (unsigned)last_d, id ? id : "");
        return SS_ERR_FORMAT;
    }
    unsigned first = (unsigned)first_d, last = (unsigned)last_d;
    for (unsigned s = first; s <= last; s++) {
        if (t->owner[s] != NO_OWNER) {
            seterr(err, errlen,
                   "slot range %zu (%u-%u, shard '%s') overlaps slot %u already owned by shard '%s'",
                   idx, first, last, id, s, t->shards[t->owner[s]].id);
            return SS_ERR_FORMAT;
        }
        t->owner[s] = (int16_t)sh;
    }
    return 0;
}

static int add_shard_checked(ss_topology *t, const char *id, const char *primary,
                             size_t idx, char *err, size_t errlen)
{
    int rc = ss_topology_add_shard(t, id ? id : "", primary ? primary : "");
    if (rc == SS_ERR_CONFLICT)
        seterr(err, errlen, "shard %zu: id '%s' appears twice", idx, id);
    else if (rc == SS_ERR_FULL)
        seterr(err, errlen, "more than %u shards", SS_TOPO_MAX_SHARDS);
    else if (rc == SS_ERR_INVALID)
        seterr(err, errlen,
               "shard %zu: bad id '%s' (1-%u of [A-Za-z0-9._-]) or primary '%s' (HOST:PORT)",
               idx, id ? id : "", SS_TOPO_MAX_ID, primary ? primary : "");
    else if (rc == SS_ERR_NOMEM)
        seterr(err, errlen, "out of memory");
    if (rc == SS_ERR_NOMEM)
        return rc;
    return rc < 0 ? SS_ERR_FORMAT : rc;
}

int ss_topology_parse(const char *json, size_t len, ss_topology **out, char *err,
                      size_t errlen)
{
    *out = NULL;
    ss_topology *t = NULL;
    int rc = SS_ERR_FORMAT;
    if (len > SS_TOPO_MAX_JSON) {
        seterr(err, errlen, "topology is %zu bytes, more than the %u allowed", len,
               SS_TOPO_MAX_JSON);
        return SS_ERR_TOO_BIG;
    }
    cJSON *root = cJSON_ParseWithLength(json, len);
    if (!root || !cJSON_IsObject(root)) {
        seterr(err, errlen, "topology is not a JSON object");
        goto out;
    }
    const cJSON *cl = cJSON_GetObjectItemCaseSensitive(root, "cluster");
    const cJSON *ep = cJSON_GetObjectItemCaseSensitive(root, "epoch");
    const cJSON *shards = cJSON_GetObjectItemCaseSensitive(root, "shards");
    const cJSON *slots = cJSON_GetObjectItemCaseSensitive(root, "slots");
    if (cl && (!cJSON_IsString(cl) || (strlen(cl->valuestring) > SS_TOPO_MAX_ID))) {
        seterr(err, errlen, "\"cluster\" must be a string of at most %u bytes", SS_TOPO_MAX_ID);
        goto out;
    }
    if (!cJSON_IsNumber(ep) || ep->valuedouble < 0 || ep->valuedouble > 9007199254740992.0 ||
        ep->valuedouble != (double)(uint64_t)ep->valuedouble) {
        seterr(err, errlen, "\"epoch\" must be a non-negative integer");
        goto out;
    }
    if (!cJSON_IsArray(shards) || !cJSON_IsArray(slots)) {
        seterr(err, errlen, "\"shards\" and \"slots\" must be arrays");
        goto out;
    }
    if (!(t = ss_topology_new(cl ? cl->valuestring : ""))) {
        rc = SS_ERR_NOMEM;
        goto out;
    }
    t->epoch = (uint64_t)ep->valuedouble;
    size_t idx = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, shards)
    {
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(it, "id");
        const cJSON *pr = cJSON_GetObjectItemCaseSensitive(it, "primary");
        const cJSON *reps = cJSON_GetObjectItemCaseSensitive(it, "replicas");
        int sh = add_shard_checked(t, cJSON_IsString(id) ? id->valuestring : NULL,
                                   cJSON_IsString(pr) ? pr->valuestring : NULL, idx, err, errlen);
        if (sh < 0) {
            rc = sh;
            goto out;
        }
        if (reps && !cJSON_IsArray(reps)) {
            seterr(err, errlen, "shard '%s': \"replicas\" must be an array", id->valuestring);
            goto out;
        }
        const cJSON *r;
        cJSON_ArrayForEach(r, reps)
        {
            int rr = cJSON_IsString(r) ? ss_topology_add_replica(t, (size_t)sh, r->valuestring)
                                       : SS_ERR_INVALID;
            if (rr != 0) {
                seterr(err, errlen, "shard '%s': bad replica (HOST:PORT, at most %u)",
                       id->valuestring, SS_TOPO_MAX_REPLICAS);
                rc = rr == SS_ERR_NOMEM ? rr : SS_ERR_FORMAT;
                goto out;
            }
        }
        idx++;
    }
    idx = 0;
    cJSON_ArrayForEach(it, slots)
    {
        const cJSON *f = cJSON_GetObjectItemCaseSensitive(it, "first");
        const cJSON *l = cJSON_GetObjectItemCaseSensitive(it, "last");
        const cJSON *s = cJSON_GetObjectItemCaseSensitive(it, "shard");
        if (!cJSON_IsNumber(f) || !cJSON_IsNumber(l) || !cJSON_IsString(s)) {
            seterr(err, errlen, "slot range %zu needs \"first\", \"last\" (numbers) and \"shard\"", idx);
            goto out;
        }
        if ((rc = assign_checked(t, f->valuedouble, l->valuedouble, s->valuestring, idx, err,
                                 errlen)) != 0)
            goto out;
        rc = SS_ERR_FORMAT;
        idx++;
    }
    if ((rc = ss_topology_validate(t, err, errlen)) != 0)
        goto out;
    *out = t;
    t = NULL;
out:
    ss_topology_free(t);
    cJSON_Delete(root);
    return rc;
}

int ss_topology_load_file(const char *path, ss_topology **out, char *err, size_t errlen)
{
    *out = NULL;
    char *buf = NULL;
    size_t len = 0;
    char why[256];
    int rc = ss_fileio_read_all(path, SS_TOPO_MAX_JSON, &buf, &len, err, errlen);
    if (rc != 0)
        return rc;
    rc = ss_topology_parse(buf, len, out, why, sizeof why);
    if (rc != 0)
        seterr(err, errlen, "%s: %s", path, why);
    free(buf);
    return rc;
}

char *ss_topology_to_json(const ss_topology *t)
{
    char *s = NULL;
    cJSON *root = cJSON_CreateObject();
    cJSON *shards = cJSON_CreateArray();
    cJSON *slots = cJSON_CreateArray();
    if (!root || !shards || !slots)
        goto out;
    cJSON_AddItemToObject(root, "cluster", cJSON_CreateString(t->cluster));
    cJSON_AddItemToObject(root, "epoch", cJSON_CreateNumber((double)t->epoch));
    for (size_t i = 0; i < t->n_shards; i++) {
        cJSON *o = cJSON_CreateObject();
        cJSON *reps = cJSON_CreateArray();
        if (!o || !reps) {
            cJSON_Delete(o);
            cJSON_Delete(reps);
            goto out;
        }
        cJSON_AddItemToArray(shards, o);
        cJSON_AddItemToObject(o, "id", cJSON_CreateString(t->shards[i].id));
        cJSON_AddItemToObject(o, "primary", cJSON_CreateString(t->shards[i].primary));
        for (size_t j = 0; j < t->shards[i].n_replicas; j++)
            cJSON_AddItemToArray(reps, cJSON_CreateString(t->shards[i].replicas[j]));
        cJSON_AddItemToObject(o, "replicas", reps);
    }
    size_t n = ss_topology_n_ranges(t);
    for (size_t i = 0; i < n; i++) {
        unsigned f, l;
        int sh;
        ss_topology_range(t, i, &f, &l, &sh);
        cJSON *o = cJSON_CreateObject();
        if (!o)
            goto out;
        cJSON_AddItemToArray(slots, o);
        cJSON_AddItemToObject(o, "first", cJSON_CreateNumber(f));
        cJSON_AddItemToObject(o, "last", cJSON_CreateNumber(l));
        cJSON_AddItemToObject(o, "shard", cJSON_CreateString(t->shards[sh].id));
    }
    cJSON_AddItemToObject(root, "shards", shards);
    cJSON_AddItemToObject(root, "slots", slots);
    shards = slots = NULL;
    s = cJSON_PrintUnformatted(root);
out:
    cJSON_Delete(slots);
    cJSON_Delete(shards);
    cJSON_Delete(root);
    return s;
}

int ss_topology_from_pb(const Statesaver__V1__TopologyResponse *pb, ss_topology **out,
                        char *err, size_t errlen)
{
    *out = NULL;
    int rc = SS_ERR_NOMEM;
    ss_topology *t = ss_topology_new(pb->cluster);
    if (!t)
        goto out;
    t->epoch = pb->epoch;
    for (size_t i = 0; i < pb->n_shards; i++) {
        const Statesaver__V1__ShardInfo *s = pb->shards[i];
        int sh = add_shard_checked(t, s->id, s->primary, i, err, errlen);
        if (sh < 0) {
            rc = sh;
            goto out;
        }
        for (size_t j = 0; j < s->n_replicas; j++)
            if ((rc = ss_topology_add_replica(t, (size_t)sh, s->replicas[j])) != 0) {
                seterr(err, errlen, "shard '%s': bad replica", s->id);
                rc = rc == SS_ERR_NOMEM ? rc : SS_ERR_FORMAT;
                goto out;
            }
    }
    for (size_t i = 0; i < pb->n_ranges; i++) {
        const Statesaver__V1__SlotRange *r = pb->ranges[i];
        if ((rc = assign_checked(t, r->first, r->last, r->shard, i, err, errlen)) != 0)
            goto out;
    }
    if ((rc = ss_topology_validate(t, err, errlen)) != 0)
        goto out;
    *out = t;
    t = NULL;
out:
    if (rc == SS_ERR_NOMEM)
        seterr(err, errlen, "out of memory");
    ss_topology_free(t);
    return rc;
}

Statesaver__V1__TopologyResponse *ss_topology_to_pb(const ss_topology *t)
{
    Statesaver__V1__TopologyResponse *pb = malloc(sizeof *pb);
    if (!pb)
        return NULL;
    statesaver__v1__topology_response__init(pb);
    pb->epoch = t->epoch;
    if (!(pb->cluster = strdup(t->cluster)))
        goto fail;
    size_t nr = ss_topology_n_ranges(t);
    if (nr && !(pb->ranges = calloc(nr, sizeof *pb->ranges)))
        goto fail;
    for (size_t i = 0; i < nr; i++) {
        unsigned f, l;
        int sh;
        ss_topology_range(t, i, &f, &l, &sh);
        Statesaver__V1__SlotRange *r = malloc(sizeof *r);
        if (!r)
            goto fail;
        statesaver__v1__slot_range__init(r);
        pb->ranges[pb->n_ranges++] = r;
        r->first = f;
        r->last = l;
        if (!(r->shard = strdup(t->shards[sh].id)))
            goto fail;
    }
    if (t->n_shards && !(pb->shards = calloc(t->n_shards, sizeof *pb->shards)))
        goto fail;
    for (size_t i = 0; i < t->n_shards; i++) {
        const topo_shard *s = &t->shards[i];
        Statesaver__V1__ShardInfo *si = malloc(sizeof *si);
        if (!si)
            goto fail;
        statesaver__v1__shard_info__init(si);
        pb->shards[pb->n_shards++] = si;
        if (!(si->id = strdup(s->id)) || !(si->primary = strdup(s->primary)))
            goto fail;
        if (s->n_replicas && !(si->replicas = calloc(s->n_replicas, sizeof *si->replicas)))
            goto fail;
        for (size_t j = 0; j < s->n_replicas; j++) {
            if (!(si->replicas[j] = strdup(s->replicas[j])))
                goto fail;
            si->n_replicas++;
        }
    }
    return pb;
fail:
    protobuf_c_message_free_unpacked(&pb->base, NULL);
    return NULL;
}
