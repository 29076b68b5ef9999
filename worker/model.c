/* model -- load an RNN model from a safetensors file and validate it
 * against DESIGN.md (metadata keys, tensor names and exact shapes).
 */
#include "model.h"

#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fileio.h"
#include "safetensors.h"
#include "ss_error.h"
#include "ss_limits.h"
#include "ss_log.h"
#include "ss_parse.h"

/* Largest num_units / input_size / num_proj accepted: keeps every product
 * such as 4H and in+P far inside int. */
#define SS_MODEL_MAX_WIDTH (1 << 20)

/* Metadata key names (the contract in DESIGN.md). */
static const char *const known_keys[] = {
    "cell",      "input_size",  "num_units", "num_layers", "activation", "forget_bias",
    "use_peepholes", "cell_clip", "num_proj", "reset_after", "state_names",
    "embedding", "head", "head_activation",
};

static int meta_int(const ss_st_file *f, const char *path, const char *key, int def,
                    int lo, int hi, int *out, char *err, size_t errsz)
{
    const char *v = ss_st_meta(f, key);
    if (v == NULL) {
        if (def < 0) {
            ss_fileio_err(err, errsz, "%s: required __metadata__ key '%s' is missing", path, key);
            return SS_ERR_FORMAT;
        }
        *out = def;
        return 0;
    }
    uint64_t n = 0;
    if (lo < 0 || ss_parse_u64(v, (uint64_t)lo, (uint64_t)hi, &n) < 0) {
        ss_fileio_err(err, errsz, "%s: __metadata__ '%s' = \"%.40s\": expected an integer in [%d, %d]",
                      path, key, v, lo, hi);
        return SS_ERR_FORMAT;
    }
    *out = (int)n;
    return 0;
}

static int meta_float(const ss_st_file *f, const char *path, const char *key,
                      float *out, bool *present, char *err, size_t errsz)
{
    const char *v = ss_st_meta(f, key);
    *present = v != NULL;
    if (v == NULL)
        return 0;
    double d = 0;
    if (ss_parse_double(v, &d) < 0 || fabs(d) > FLT_MAX) {
        ss_fileio_err(err, errsz, "%s: __metadata__ '%s' = \"%.40s\": expected a finite number",
                      path, key, v);
        return SS_ERR_FORMAT;
    }
    *out = (float)d;
    return 0;
}

static int meta_bool(const ss_st_file *f, const char *path, const char *key,
                     bool *out, char *err, size_t errsz)
{
    const char *v = ss_st_meta(f, key);
    if (v == NULL)
        return 0;
    /* "True"/"False" too: that is what Python's str() of a bool gives. */
    if (strcmp(v, "true") == 0 || strcmp(v, "True") == 0)
        *out = true;
    else if (strcmp(v, "false") == 0 || strcmp(v, "False") == 0)
        *out = false;
    else {
        ss_fileio_err(err, errsz, "%s: __metadata__ '%s' = \"%.40s\": expected true or false",
                      path, key, v);
        return SS_ERR_FORMAT;
    }
    return 0;
}

/* An integer or a comma list of at most SS_MODEL_MAX_LAYERS integers in
 * [lo, SS_MODEL_MAX_WIDTH] (key required). */
static int meta_int_list(const ss_st_file *f, const char *path, const char *key, int lo,
                         int *vals, int *n, char *err, size_t errsz)
{
    const char *v = ss_st_meta(f, key);
    if (v == NULL) {
        ss_fileio_err(err, errsz, "%s: required __metadata__ key '%s' is missing", path, key);
        return SS_ERR_FORMAT;
    }
    *n = 0;
    const char *p = v;
    for (;;) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        char one[24];
        uint64_t x = 0;
        if (*n == SS_MODEL_MAX_LAYERS || len == 0 || len >= sizeof one) {
            ss_fileio_err(err, errsz,
                          "%s: __metadata__ '%s' = \"%.40s\": expected an integer in [%d, %d] "
                          "or a comma list of at most %d of them",
                          path, key, v, lo, SS_MODEL_MAX_WIDTH, SS_MODEL_MAX_LAYERS);
            return SS_ERR_FORMAT;
        }
        memcpy(one, p, len);
        one[len] = '\0';
        if (ss_parse_u64(one, (uint64_t)lo, SS_MODEL_MAX_WIDTH, &x) < 0) {
            ss_fileio_err(err, errsz,
                          "%s: __metadata__ '%s' = \"%.40s\": expected an integer in [%d, %d] "
                          "or a comma list of at most %d of them",
                          path, key, v, lo, SS_MODEL_MAX_WIDTH, SS_MODEL_MAX_LAYERS);
            return SS_ERR_FORMAT;
        }
        vals[(*n)++] = (int)x;
        if (!comma)
            break;
        p = comma + 1;
    }
    return 0;
}

/* num_proj: one integer >= 1 for every layer, or a comma list with one
 * entry per layer (0 = no projection for that layer). */
static int meta_proj(const ss_st_file *f, const char *path, ss_model *m, char *err,
                     size_t errsz)
{
    const char *v = ss_st_meta(f, "num_proj");
    if (v == NULL)
        return 0;
    if (strchr(v, ',') == NULL) {
        int rc = meta_int(f, path, "num_proj", 0, 1, SS_MODEL_MAX_WIDTH, &m->num_proj, err,
                          errsz);
        for (int l = 0; rc == 0 && l < m->num_layers; l++)
            m->layers[l].P = m->num_proj;
        return rc;
    }
    int vals[SS_MODEL_MAX_LAYERS], n = 0;
    int rc = meta_int_list(f, path, "num_proj", 0, vals, &n, err, errsz);
    if (rc)
        return rc;
    if (n != m->num_layers) {
        ss_fileio_err(err, errsz, "%s: __metadata__ 'num_proj' lists %d sizes, the model has %d "
                      "layers", path, n, m->num_layers);
        return SS_ERR_FORMAT;
    }
    for (int l = 0; l < n; l++)
        m->layers[l].P = vals[l];
    m->num_proj = vals[0];
    return 0;
}

/* Find a float32 tensor of exactly the given shape. */
static int need_named(const ss_st_file *f, const char *path, const char *name, int ndim,
                      const int64_t *shape, const float **out, char *err, size_t errsz)
{
    char want[64], got[160];
    want[0] = '[';
    size_t o = 1;
    for (int i = 0; i < ndim; i++)
        o += (size_t)snprintf(want + o, sizeof want - o, "%s%lld", i ? ", " : "",
                              (long long)shape[i]);
    snprintf(want + o, sizeof want - o, "]");
    const ss_st_tensor *t = ss_st_find(f, name);
    if (t == NULL) {
        ss_fileio_err(err, errsz, "%s: missing tensor '%s' (expected float32 %s)", path, name, want);
        return SS_ERR_FORMAT;
    }
    if (strcmp(t->dtype, "F32") != 0) {
        ss_fileio_err(err, errsz, "%s: tensor '%s' has dtype %s, expected F32", path, name,
                      t->dtype);
        return SS_ERR_SHAPE;
    }
    bool same = t->ndim == ndim;
    for (int i = 0; same && i < ndim; i++)
        same = t->shape[i] == shape[i];
    if (!same) {
        got[0] = '[';
        o = 1;
        for (int i = 0; i < t->ndim && o < sizeof got; i++)
            o += (size_t)snprintf(got + o, sizeof got - o, "%s%lld", i ? ", " : "",
                                  (long long)t->shape[i]);
        if (o < sizeof got)
            snprintf(got + o, sizeof got - o, "]");
        ss_fileio_err(err, errsz, "%s: tensor '%s' has shape %s, expected %s", path, name, got, want);
        return SS_ERR_SHAPE;
    }
    *out = t->data;
    return 0;
}

static int need_tensor(const ss_st_file *f, const char *path, int layer,
                       const char *suffix, int ndim, const int64_t *shape,
                       const float **out, char *err, size_t errsz)
{
    char name[64];
    snprintf(name, sizeof name, "cell_%d/%s", layer, suffix);
    return need_named(f, path, name, ndim, shape, out, err, errsz);
}

#define SHAPE1(a) 1, (const int64_t[]){(a)}
#define SHAPE2(a, b) 2, (const int64_t[]){(a), (b)}

static int load_layer(ss_model *m, const ss_st_file *f, const char *path, int l,
                      int in, char *err, size_t errsz)
{
    ss_layer *L = &m->layers[l];
    int64_t H = L->H;
    int64_t P = L->P > 0 ? L->P : H;
    int rc = 0;
    L->in = in;
    switch (m->cell) {
    case SS_CELL_BASIC_RNN:
        if ((rc = need_tensor(f, path, l, "kernel", SHAPE2(in + H, H), &L->kernel, err, errsz)) ||
            (rc = need_tensor(f, path, l, "bias", SHAPE1(H), &L->bias, err, errsz)))
            return rc;
        break;
    case SS_CELL_LSTM:
        if ((rc = need_tensor(f, path, l, "kernel", SHAPE2(in + P, 4 * H), &L->kernel, err,
                              errsz)) ||
            (rc = need_tensor(f, path, l, "bias", SHAPE1(4 * H), &L->bias, err, errsz)))
            return rc;
        if (m->use_peepholes &&
            ((rc = need_tensor(f, path, l, "w_i_diag", SHAPE1(H), &L->w_i_diag, err, errsz)) ||
             (rc = need_tensor(f, path, l, "w_f_diag", SHAPE1(H), &L->w_f_diag, err, errsz)) ||
             (rc = need_tensor(f, path, l, "w_o_diag", SHAPE1(H), &L->w_o_diag, err, errsz))))
            return rc;
        if (L->P > 0 &&
            (rc = need_tensor(f, path, l, "projection/kernel", SHAPE2(H, P), &L->proj, err,
                              errsz)))
            return rc;
        break;
    case SS_CELL_GRU:
        if (m->reset_after) {
            if ((rc = need_tensor(f, path, l, "kernel", SHAPE2(in, 3 * H), &L->kernel, err,
                                  errsz)) ||
                (rc = need_tensor(f, path, l, "recurrent_kernel", SHAPE2(H, 3 * H),
                                  &L->recurrent_kernel, err, errsz)) ||
                (rc = need_tensor(f, path, l, "bias", SHAPE2(2, 3 * H), &L->bias, err, errsz)))
                return rc;
        } else {
            if ((rc = need_tensor(f, path, l, "gates/kernel", SHAPE2(in + H, 2 * H),
                                  &L->kernel, err, errsz)) ||
                (rc = need_tensor(f, path, l, "gates/bias", SHAPE1(2 * H), &L->bias, err,
                                  errsz)) ||
                (rc = need_tensor(f, path, l, "candidate/kernel", SHAPE2(in + H, H),
                                  &L->cand_kernel, err, errsz)) ||
                (rc = need_tensor(f, path, l, "candidate/bias", SHAPE1(H), &L->cand_bias,
                                  err, errsz)))
                return rc;
        }
        break;
    }
    return 0;
}

/* The embedding and the head (DESIGN.md, "Models beyond the RNN core"). */
static int load_io(ss_model *m, const ss_st_file *f, const char *path, char *err, size_t errsz)
{
    int rc = meta_bool(f, path, "embedding", &m->embedding, err, errsz);
    if (rc)
        return rc;
    if (m->embedding) {
        const ss_st_tensor *t = ss_st_find(f, "embedding/weights");
        if (t == NULL) {
            ss_fileio_err(err, errsz,
                          "%s: missing tensor 'embedding/weights' (expected float32 [vocab, %d])",
                          path, m->input_size);
            return SS_ERR_FORMAT;
        }
        int64_t vocab = t->ndim == 2 ? t->shape[0] : -1;
        if (vocab < 1 || vocab > INT32_MAX)
            vocab = 1; /* need_named reports the shape */
        if ((rc = need_named(f, path, "embedding/weights", SHAPE2(vocab, m->input_size),
                             &m->emb, err, errsz)))
            return rc;
        m->vocab = (int)vocab;
    } else if (ss_st_find(f, "embedding/weights") != NULL) {
        SS_LOG(SS_LOG_WARN, "%s: tensor 'embedding/weights' is ignored: __metadata__ "
               "'embedding' is not true", path);
    }
    const char *head = ss_st_meta(f, "head");
    const char *act = ss_st_meta(f, "head_activation");
    if (head == NULL || strcmp(head, "none") == 0) {
        if (act != NULL)
            SS_LOG(SS_LOG_WARN, "%s: __metadata__ 'head_activation' is ignored without a head",
                   path);
        return 0;
    }
    if (strcmp(head, "linear") != 0) {
        ss_fileio_err(err, errsz, "%s: __metadata__ 'head' = \"%.40s\": expected linear or none",
                      path, head);
        return SS_ERR_FORMAT;
    }
    static const char *const acts[] = {"none", "softmax", "log_softmax", "sigmoid", "tanh"};
    m->head_act = SS_HEAD_NONE;
    if (act != NULL) {
        size_t i = 0;
        while (i < sizeof acts / sizeof acts[0] && strcmp(acts[i], act) != 0)
            i++;
        if (i == sizeof acts / sizeof acts[0]) {
            ss_fileio_err(err, errsz,
                          "%s: __metadata__ 'head_activation' = \"%.40s\": expected none, "
                          "softmax, log_softmax, sigmoid or tanh",
                          path, act);
            return SS_ERR_FORMAT;
        }
        m->head_act = (ss_head_act)i;
    }
    const ss_st_tensor *t = ss_st_find(f, "head/kernel");
    if (t == NULL) {
        ss_fileio_err(err, errsz, "%s: missing tensor 'head/kernel' (expected float32 [%d, out])",
                      path, m->output_size);
        return SS_ERR_FORMAT;
    }
    int64_t out = t->ndim == 2 ? t->shape[1] : -1;
    if (out < 1 || out > SS_MODEL_MAX_WIDTH)
        out = 1;
    if ((rc = need_named(f, path, "head/kernel", SHAPE2(m->output_size, out), &m->head_kernel,
                         err, errsz)) ||
        (rc = need_named(f, path, "head/bias", SHAPE1(out), &m->head_bias, err, errsz)))
        return rc;
    m->head_out = (int)out;
    return 0;
}

/* Is t one of the tensors this model uses? */
static bool tensor_used(const ss_model *m, const void *data)
{
    if (data != NULL && (data == m->emb || data == m->head_kernel || data == m->head_bias))
        return true;
    for (int l = 0; l < m->num_layers; l++) {
        const ss_layer *L = &m->layers[l];
        const void *ps[] = {L->kernel,   L->bias,     L->cand_kernel, L->cand_bias,
                            L->recurrent_kernel, L->w_i_diag, L->w_f_diag, L->w_o_diag,
                            L->proj};
        for (size_t i = 0; i < sizeof ps / sizeof ps[0]; i++)
            if (ps[i] != NULL && ps[i] == data)
                return true;
    }
    return false;
}

static int set_state_names(ss_model *m, const ss_st_file *f, const char *path,
                           char *err, size_t errsz)
{
    int per = m->cell == SS_CELL_LSTM ? 2 : 1;
    m->n_states = (size_t)(per * m->num_layers);
    m->state_names = calloc(m->n_states, sizeof *m->state_names);
    m->state_sizes = calloc(m->n_states, sizeof *m->state_sizes);
    if (m->state_names == NULL || m->state_sizes == NULL)
        return SS_ERR_NOMEM;
    for (int l = 0; l < m->num_layers; l++) {
        if (per == 2) {
            m->state_sizes[2 * l] = ss_model_units(m, l);          /* c */
            m->state_sizes[2 * l + 1] = ss_model_layer_out(m, l); /* h (m) */
        } else {
            m->state_sizes[l] = ss_model_units(m, l);
        }
    }
    const char *given = ss_st_meta(f, "state_names");
    if (given == NULL) {
        for (int l = 0; l < m->num_layers; l++)
            for (int k = 0; k < per; k++)
                if (asprintf(&m->state_names[(size_t)(l * per + k)], "cell_%d/%s", l,
                             per == 2 && k == 0 ? "c" : "h") < 0) {
                    m->state_names[(size_t)(l * per + k)] = NULL;
                    return SS_ERR_NOMEM;
                }
        return 0;
    }
    size_t i = 0;
    const char *p = given;
    for (;;) {
        const char *comma = strchr(p, ',');
        size_t len = comma != NULL ? (size_t)(comma - p) : strlen(p);
        if (i == m->n_states) {
            i++;
            break;
        }
        if (len == 0 || len > SS_STATE_NAME_MAX || memchr(p, '=', len) != NULL) {
            ss_fileio_err(err, errsz,
                          "%s: __metadata__ 'state_names': name %zu is empty, longer than %u "
                          "bytes or contains '='",
                          path, i, SS_STATE_NAME_MAX);
            return SS_ERR_FORMAT;
        }
        m->state_names[i] = strndup(p, len);
        if (m->state_names[i] == NULL)
            return SS_ERR_NOMEM;
        for (size_t j = 0; j < i; j++)
            if (strcmp(m->state_names[j], m->state_names[i]) == 0) {
                ss_fileio_err(err, errsz, "%s: __metadata__ 'state_names': '%s' appears twice",
                              path, m->state_names[i]);
                return SS_ERR_FORMAT;
            }
        i++;
        if (comma == NULL)
            break;
        p = comma + 1;
    }
    if (i != m->n_states) {
        size_t found = 1;
        for (const char *q = given; *q; q++)
            found += *q == ',';
        ss_fileio_err(err, errsz,
                      "%s: __metadata__ 'state_names' lists %zu names, the model has %zu states "
                      "(%s)",
                      path, found, m->n_states,
                      m->cell == SS_CELL_LSTM ? "c and h per layer" : "h per layer");
        return SS_ERR_FORMAT;
    }
    return 0;
}

int ss_model_load(const char *path, ss_model **out, char *err, size_t errsz)
{
    int rc = SS_ERR_NOMEM;
    ss_st_file *f = NULL;
    ss_model *m = calloc(1, sizeof *m);
    if (m == NULL) {
        ss_fileio_err(err, errsz, "%s: out of memory", path);
        goto out;
    }
    rc = ss_st_open(path, &f, err, errsz);
    if (rc != 0)
        goto out;

    rc = SS_ERR_FORMAT;
    const char *cell = ss_st_meta(f, "cell");
    if (cell == NULL) {
        ss_fileio_err(err, errsz, "%s: required __metadata__ key 'cell' is missing", path);
        goto out;
    }
    if (strcmp(cell, "basic_rnn") == 0)
        m->cell = SS_CELL_BASIC_RNN;
    else if (strcmp(cell, "lstm") == 0)
        m->cell = SS_CELL_LSTM;
    else if (strcmp(cell, "gru") == 0)
        m->cell = SS_CELL_GRU;
    else {
        ss_fileio_err(err, errsz,
                      "%s: __metadata__ 'cell' = \"%.40s\": expected basic_rnn, lstm or gru", path,
                      cell);
        goto out;
    }
    int units[SS_MODEL_MAX_LAYERS], n_units = 0;
    if ((rc = meta_int(f, path, "input_size", -1, 1, SS_MODEL_MAX_WIDTH, &m->input_size, err,
                       errsz)) ||
        (rc = meta_int_list(f, path, "num_units", 1, units, &n_units, err, errsz)) ||
        (rc = meta_int(f, path, "num_layers", n_units > 1 ? n_units : 1, 1,
                       SS_MODEL_MAX_LAYERS, &m->num_layers, err, errsz)))
        goto out;
    if (n_units > 1 && n_units != m->num_layers) {
        ss_fileio_err(err, errsz,
                      "%s: __metadata__ 'num_units' lists %d sizes, 'num_layers' is %d", path,
                      n_units, m->num_layers);
        rc = SS_ERR_FORMAT;
        goto out;
    }
    m->num_units = units[0];
    for (int l = 0; l < m->num_layers; l++)
        m->layers[l].H = n_units > 1 ? units[l] : units[0];
    const char *act = ss_st_meta(f, "activation");
    if (act == NULL || strcmp(act, "tanh") == 0)
        m->activation = SS_ACT_TANH;
    else if (strcmp(act, "relu") == 0)
        m->activation = SS_ACT_RELU;
    else {
        ss_fileio_err(err, errsz, "%s: __metadata__ 'activation' = \"%.40s\": expected tanh or relu",
                      path, act);
        rc = SS_ERR_FORMAT;
        goto out;
    }
    /* Parsed for every cell so a typo never passes silently; applied only
     * where the cell uses it. */
    bool fb_given = false, clip_given = false;
    m->forget_bias = 1.0f;
    if ((rc = meta_float(f, path, "forget_bias", &m->forget_bias, &fb_given, err, errsz)) ||
        (rc = meta_float(f, path, "cell_clip", &m->cell_clip, &clip_given, err, errsz)) ||
        (rc = meta_bool(f, path, "use_peepholes", &m->use_peepholes, err, errsz)) ||
        (rc = meta_bool(f, path, "reset_after", &m->reset_after, err, errsz)) ||
        (rc = meta_proj(f, path, m, err, errsz)))
        goto out;
    if (clip_given && m->cell_clip < 0.0f) {
        ss_fileio_err(err, errsz, "%s: __metadata__ 'cell_clip' = \"%s\": expected a value >= 0",
                      path, ss_st_meta(f, "cell_clip"));
        rc = SS_ERR_FORMAT;
        goto out;
    }
    m->has_cell_clip = clip_given;
    if (m->cell != SS_CELL_LSTM) {
        static const char *const lstm_only[] = {"forget_bias", "use_peepholes", "cell_clip",
                                                "num_proj"};
        for (size_t i = 0; i < sizeof lstm_only / sizeof lstm_only[0]; i++)
            if (ss_st_meta(f, lstm_only[i]) != NULL)
                SS_LOG(SS_LOG_WARN, "%s: __metadata__ '%s' applies to lstm only; ignored for %s",
                       path, lstm_only[i], cell);
        m->forget_bias = 0.0f;
        m->use_peepholes = false;
        m->has_cell_clip = false;
        m->cell_clip = 0.0f;
        m->num_proj = 0;
        for (int l = 0; l < m->num_layers; l++)
            m->layers[l].P = 0;
    }
    if (m->cell != SS_CELL_GRU) {
        if (ss_st_meta(f, "reset_after") != NULL)
            SS_LOG(SS_LOG_WARN, "%s: __metadata__ 'reset_after' applies to gru only; ignored for %s",
                   path, cell);
        m->reset_after = false;
    }
    for (size_t i = 0; i < ss_st_meta_count(f); i++) {
        const char *k, *v;
        ss_st_meta_at(f, i, &k, &v);
        bool known = false;
        for (size_t j = 0; j < sizeof known_keys / sizeof known_keys[0]; j++)
            known |= strcmp(k, known_keys[j]) == 0;
        if (!known)
            SS_LOG(SS_LOG_DEBUG, "%s: ignoring __metadata__ key '%s'", path, k);
    }
    m->output_size = ss_model_layer_out(m, m->num_layers - 1);

    int in = m->input_size;
    for (int l = 0; l < m->num_layers; l++) {
        rc = load_layer(m, f, path, l, in, err, errsz);
        if (rc != 0)
            goto out;
        in = ss_model_layer_out(m, l);
    }
    if ((rc = load_io(m, f, path, err, errsz)))
        goto out;
    for (size_t i = 0; i < ss_st_count(f); i++) {
        const ss_st_tensor *t = ss_st_at(f, i);
        if (!tensor_used(m, t->data))
            SS_LOG(SS_LOG_DEBUG, "%s: ignoring tensor '%s' (not used by this model)", path,
                   t->name);
    }
    rc = set_state_names(m, f, path, err, errsz);
    if (rc != 0) {
        if (rc == SS_ERR_NOMEM)
            ss_fileio_err(err, errsz, "%s: out of memory", path);
        goto out;
    }
    m->mem = f;
    m->mem_len = ss_st_mem_len(f);
    f = NULL;
    *out = m;
    m = NULL;
    rc = 0;
out:
    ss_st_close(f);
    ss_model_free(m);
    return rc;
}

void ss_model_free(ss_model *m)
{
    if (m == NULL)
        return;
    if (m->state_names != NULL)
        for (size_t i = 0; i < m->n_states; i++)
            free(m->state_names[i]);
    free(m->state_names);
    free(m->state_sizes);
    /* mem is the open safetensors file: it owns the mapping (or copy) the
     * layer pointers point into. */
    ss_st_close(m->mem);
    free(m);
}

int ss_model_units(const ss_model *m, int l)
{
    return m->layers[l].H > 0 ? m->layers[l].H : m->num_units;
}

int ss_model_proj(const ss_model *m, int l)
{
    if (m->cell != SS_CELL_LSTM)
        return 0;
    return m->layers[l].H > 0 ? m->layers[l].P : m->num_proj;
}

int ss_model_layer_out(const ss_model *m, int l)
{
    int p = ss_model_proj(m, l);
    return p > 0 ? p : ss_model_units(m, l);
}

int ss_model_out_width(const ss_model *m)
{
    return m->head_out > 0 ? m->head_out : m->output_size;
}

const char *ss_head_act_name(ss_head_act a)
{
    switch (a) {
    case SS_HEAD_SOFTMAX: return "softmax";
    case SS_HEAD_LOG_SOFTMAX: return "log_softmax";
    case SS_HEAD_SIGMOID: return "sigmoid";
    case SS_HEAD_TANH: return "tanh";
    default: return "none";
    }
}
