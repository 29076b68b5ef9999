/* store_schema -- saver schemas: validation, reference counts, comparison,
 * and their serialized form in the `savers` database. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ss_error.h"
#include "store_internal.h"

uint64_t ss_le64_get(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

void ss_le64_put(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++) {
        p[i] = (uint8_t)v;
        v >>= 8;
    }
}

static void schema_free(ss_schema *s)
{
    if (!s)
        return;
    if (s->states) {
        for (size_t i = 0; i < s->n_states; i++) {
            free(s->states[i].name);
            free(s->states[i].initial);
        }
        free(s->states);
    }
    free(s->saver);
    free(s);
}

ss_schema *ss_schema_ref(ss_schema *s)
{
    if (s)
        __atomic_fetch_add(&s->refs, 1, __ATOMIC_RELAXED);
    return s;
}

void ss_schema_unref(ss_schema *s)
{
    if (s && __atomic_sub_fetch(&s->refs, 1, __ATOMIC_ACQ_REL) == 0)
        schema_free(s);
}

static bool all_zero(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i])
            return false;
    return true;
}

/* Validate one spec into st (name, dtype, shape, nbytes, initial). */
static int spec_build(const Statesaver__V1__StateSpec *sp, size_t idx,
                      ss_state_spec *st, char msg[SS_STORE_MSG])
{
    const char *name = sp->name ? sp->name : "";
    size_t nlen = strlen(name);
    char shp[96], want[96];
    if (nlen == 0) {
        snprintf(msg, SS_STORE_MSG, "state %zu has an empty name", idx);
        return SS_ERR_INVALID;
    }
    if (nlen > SS_STATE_NAME_MAX) {
        snprintf(msg, SS_STORE_MSG, "state %zu: name is %zu bytes, limit %u",
                 idx, nlen, SS_STATE_NAME_MAX);
        return SS_ERR_INVALID;
    }
    size_t es = ss_dtype_size((int)sp->dtype);
    if (es == 0) {
        snprintf(msg, SS_STORE_MSG, "state '%.64s': unknown dtype %d", name,
                 (int)sp->dtype);
        return SS_ERR_INVALID;
    }
    if (sp->n_shape > SS_TENSOR_MAX_RANK) {
        snprintf(msg, SS_STORE_MSG, "state '%.64s': rank %zu exceeds %d", name,
                 sp->n_shape, SS_TENSOR_MAX_RANK);
        return SS_ERR_INVALID;
    }
    for (size_t d = 0; d < sp->n_shape; d++) {
        if (sp->shape[d] <= 0) {
            snprintf(msg, SS_STORE_MSG,
                     "state '%.64s': dimension %zu is %lld, must be > 0", name,
                     d, (long long)sp->shape[d]);
            return SS_ERR_INVALID;
        }
    }
    uint64_t count = 0;
    int rc = ss_shape_count(sp->shape, sp->n_shape,
                            SS_STORE_STATE_BYTES_MAX / es, &count);
    if (rc < 0) {
        ss_shape_format(sp->shape, sp->n_shape, shp, sizeof shp);
        snprintf(msg, SS_STORE_MSG,
                 "state '%.64s': shape %s exceeds %u bytes per sequence", name,
                 shp, SS_STORE_STATE_BYTES_MAX);
        return SS_ERR_INVALID;
    }
    st->name = strdup(name);
    if (!st->name)
        return SS_ERR_NOMEM;
    st->dtype = (int)sp->dtype;
    st->rank = sp->n_shape;
    for (size_t d = 0; d < sp->n_shape; d++)
        st->shape[d] = sp->shape[d];
    st->nbytes = (size_t)count * es;
    st->initial = NULL;
    const Statesaver__V1__Tensor *init = sp->initial;
    if (!init)
        return 0;
    if ((int)init->dtype != st->dtype) {
        snprintf(msg, SS_STORE_MSG,
                 "state '%.64s': initial tensor is %s, state is %s", name,
                 ss_dtype_name((int)init->dtype), ss_dtype_name(st->dtype));
        return SS_ERR_INVALID;
    }
    bool same = init->n_shape == st->rank;
    for (size_t d = 0; same && d < st->rank; d++)
        same = init->shape[d] == st->shape[d];
    if (!same) {
        ss_shape_format(init->shape,
                        init->n_shape > SS_TENSOR_MAX_RANK ? SS_TENSOR_MAX_RANK
                                                           : init->n_shape,
                        shp, sizeof shp);
        ss_shape_format(st->shape, st->rank, want, sizeof want);
        snprintf(msg, SS_STORE_MSG,
                 "state '%.64s': initial tensor has shape %.60s, expected %.60s",
                 name, shp, want);
        return SS_ERR_INVALID;
    }
    if (init->data.len != st->nbytes) {
        snprintf(msg, SS_STORE_MSG,
                 "state '%.64s': initial tensor has %zu data bytes, expected %zu",
                 name, init->data.len, st->nbytes);
        return SS_ERR_INVALID;
    }
    if (all_zero(init->data.data, st->nbytes))
        return 0;
    st->initial = malloc(st->nbytes ? st->nbytes : 1);
    if (!st->initial)
        return SS_ERR_NOMEM;
    memcpy(st->initial, init->data.data, st->nbytes);
    return 0;
}

int ss_schema_from_declare(const Statesaver__V1__DeclareRequest *req,
                           ss_schema **out, char msg[SS_STORE_MSG])
{
    ss_schema *s = NULL;
    int rc = 0;
    msg[0] = '\0';
    *out = NULL;
    const char *saver = req->saver ? req->saver : "";
    size_t slen = strlen(saver);
    if (slen == 0) {
        snprintf(msg, SS_STORE_MSG, "saver name is empty");
        return SS_ERR_INVALID;
    }
    if (slen > SS_SAVER_NAME_MAX) {
        snprintf(msg, SS_STORE_MSG, "saver name is %zu bytes, limit %u", slen,
                 SS_SAVER_NAME_MAX);
        return SS_ERR_INVALID;
    }
    if (req->n_states == 0) {
        snprintf(msg, SS_STORE_MSG, "saver '%.64s' declares no states", saver);
        return SS_ERR_INVALID;
    }
    if (req->n_states > SS_STATES_PER_SAVER_MAX) {
        snprintf(msg, SS_STORE_MSG, "saver '%.64s' declares %zu states, limit %u",
                 saver, req->n_states, SS_STATES_PER_SAVER_MAX);
        return SS_ERR_INVALID;
    }
    s = calloc(1, sizeof *s);
    if (!s)
        return SS_ERR_NOMEM;
    s->refs = 1;
    s->saver = strdup(saver);
    s->states = calloc(req->n_states, sizeof *s->states);
    if (!s->saver || !s->states) {
        rc = SS_ERR_NOMEM;
        goto out;
    }
    s->idle_ttl_ms = req->idle_ttl_ms;
    s->keep_final = req->keep_final;
    s->max_in_flight = req->max_in_flight; /* 0 in records older than the field */
    for (size_t i = 0; i < req->n_states; i++) {
        if (!req->states[i]) {
            snprintf(msg, SS_STORE_MSG, "state %zu is missing", i);
            rc = SS_ERR_INVALID;
            goto out;
        }
        s->n_states = i + 1; /* so schema_free releases this spec */
        rc = spec_build(req->states[i], i, &s->states[i], msg);
        if (rc < 0)
            goto out;
        for (size_t j = 0; j < i; j++) {
            if (strcmp(s->states[j].name, s->states[i].name) == 0) {
                snprintf(msg, SS_STORE_MSG, "duplicate state name '%.64s'",
                         s->states[i].name);
                rc = SS_ERR_INVALID;
                goto out;
            }
        }
        if (s->states[i].nbytes > SS_STORE_STATE_BYTES_MAX - s->state_bytes) {
            snprintf(msg, SS_STORE_MSG,
                     "saver '%.64s': states exceed %u bytes per sequence",
                     saver, SS_STORE_STATE_BYTES_MAX);
            rc = SS_ERR_INVALID;
            goto out;
        }
        s->state_bytes += s->states[i].nbytes;
    }
out:
    if (rc < 0) {
        if (rc == SS_ERR_NOMEM && !msg[0])
            snprintf(msg, SS_STORE_MSG, "out of memory building schema");
        schema_free(s);
        return rc;
    }
    *out = s;
    return 0;
}

static bool spec_equal(const ss_state_spec *a, const ss_state_spec *b)
{
    if (strcmp(a->name, b->name) != 0 || a->dtype != b->dtype ||
        a->rank != b->rank || a->nbytes != b->nbytes)
        return false;
    for (size_t d = 0; d < a->rank; d++)
        if (a->shape[d] != b->shape[d])
            return false;
    if (!a->initial != !b->initial)
        return false;
    return !a->initial || memcmp(a->initial, b->initial, a->nbytes) == 0;
}

bool ss_schema_equal(const ss_schema *a, const ss_schema *b)
{
    if (strcmp(a->saver, b->saver) != 0 || a->n_states != b->n_states ||
        a->idle_ttl_ms != b->idle_ttl_ms || a->keep_final != b->keep_final ||
        a->max_in_flight != b->max_in_flight)
        return false;
    for (size_t i = 0; i < a->n_states; i++)
        if (!spec_equal(&a->states[i], &b->states[i]))
            return false;
    return true;
}

void ss_schema_diff(const ss_schema *a, const ss_schema *b, char *msg,
                    size_t size)
{
    char sa[96], sb[96];
    if (a->n_states != b->n_states) {
        snprintf(msg, size, "%zu states vs %zu", a->n_states, b->n_states);
        return;
    }
    if (a->idle_ttl_ms != b->idle_ttl_ms) {
        snprintf(msg, size, "idle_ttl_ms %llu vs %llu",
                 (unsigned long long)a->idle_ttl_ms,
                 (unsigned long long)b->idle_ttl_ms);
        return;
    }
    if (a->keep_final != b->keep_final) {
        snprintf(msg, size, "keep_final %s vs %s",
                 a->keep_final ? "true" : "false",
                 b->keep_final ? "true" : "false");
        return;
    }
    if (a->max_in_flight != b->max_in_flight) {
        snprintf(msg, size, "max_in_flight %u vs %u", (unsigned)a->max_in_flight,
                 (unsigned)b->max_in_flight);
        return;
    }
    for (size_t i = 0; i < a->n_states; i++) {
        const ss_state_spec *x = &a->states[i], *y = &b->states[i];
        if (strcmp(x->name, y->name) != 0) {
            snprintf(msg, size, "state %zu is '%.48s' vs '%.48s'", i, x->name,
                     y->name);
            return;
        }
        if (x->dtype != y->dtype) {
            snprintf(msg, size, "state '%.64s': dtype %s vs %s", x->name,
                     ss_dtype_name(x->dtype), ss_dtype_name(y->dtype));
            return;
        }
        if (!spec_equal(x, y)) {
            ss_shape_format(x->shape, x->rank, sa, sizeof sa);
            ss_shape_format(y->shape, y->rank, sb, sizeof sb);
            if (strcmp(sa, sb) != 0)
                snprintf(msg, size, "state '%.64s': shape %s vs %s", x->name,
                         sa, sb);
            else
                snprintf(msg, size, "state '%.64s': different initial value",
                         x->name);
            return;
        }
    }
    snprintf(msg, size, "same schema");
}

void ss_schema_to_specs(const ss_schema *s, Statesaver__V1__StateSpec *specs,
                        Statesaver__V1__Tensor *tensors)
{
    for (size_t i = 0; i < s->n_states; i++) {
        const ss_state_spec *sp = &s->states[i];
        Statesaver__V1__StateSpec init = STATESAVER__V1__STATE_SPEC__INIT;
        Statesaver__V1__Tensor tinit = STATESAVER__V1__TENSOR__INIT;
        specs[i] = init;
        tensors[i] = tinit;
        /* protobuf-c's structs are not const-correct; packing only reads. */
        specs[i].name = sp->name;
        specs[i].dtype = (Statesaver__V1__DType)sp->dtype;
        specs[i].shape = (int64_t *)(uintptr_t)sp->shape;
        specs[i].n_shape = sp->rank;
        if (sp->initial) {
            ss_tensor_borrow(&tensors[i], sp->dtype, sp->shape, sp->rank,
                             sp->initial, sp->nbytes);
            specs[i].initial = &tensors[i];
        }
    }
}

int ss_schema_pack(const ss_schema *s, uint64_t generation, uint8_t **out,
                   size_t *len)
{
    Statesaver__V1__DeclareRequest req = STATESAVER__V1__DECLARE_REQUEST__INIT;
    Statesaver__V1__StateSpec *specs = NULL;
    Statesaver__V1__StateSpec **ptrs = NULL;
    Statesaver__V1__Tensor *tensors = NULL;
    uint8_t *buf = NULL;
    int rc = 0;
    specs = calloc(s->n_states, sizeof *specs);
    ptrs = calloc(s->n_states, sizeof *ptrs);
    tensors = calloc(s->n_states, sizeof *tensors);
    if (!specs || !ptrs || !tensors) {
        rc = SS_ERR_NOMEM;
        goto out;
    }
    ss_schema_to_specs(s, specs, tensors);
    for (size_t i = 0; i < s->n_states; i++)
        ptrs[i] = &specs[i];
    req.saver = s->saver;
    req.states = ptrs;
    req.n_states = s->n_states;
    req.idle_ttl_ms = s->idle_ttl_ms;
    req.keep_final = s->keep_final;
    req.max_in_flight = s->max_in_flight;
    size_t n = statesaver__v1__declare_request__get_packed_size(&req);
    buf = malloc(8 + n);
    if (!buf) {
        rc = SS_ERR_NOMEM;
        goto out;
    }
    ss_le64_put(buf, generation);
    statesaver__v1__declare_request__pack(&req, buf + 8);
    *out = buf;
    *len = 8 + n;
out:
    free(tensors);
    free(ptrs);
    free(specs);
    return rc;
}

int ss_schema_unpack(const uint8_t *buf, size_t len, ss_schema **out,
                     char msg[SS_STORE_MSG])
{
    char why[SS_STORE_MSG];
    *out = NULL;
    if (len < 8) {
        snprintf(msg, SS_STORE_MSG, "corrupt schema record (%zu bytes)", len);
        return SS_ERR_STORE;
    }
    Statesaver__V1__DeclareRequest *req =
        statesaver__v1__declare_request__unpack(NULL, len - 8, buf + 8);
    if (!req) {
        snprintf(msg, SS_STORE_MSG, "corrupt schema record (bad protobuf)");
        return SS_ERR_STORE;
    }
    int rc = ss_schema_from_declare(req, out, why);
    statesaver__v1__declare_request__free_unpacked(req, NULL);
    if (rc < 0) {
        snprintf(msg, SS_STORE_MSG, "corrupt schema record: %.200s", why);
        return rc == SS_ERR_NOMEM ? rc : SS_ERR_STORE;
    }
    (*out)->generation = ss_le64_get(buf);
    return 0;
}
