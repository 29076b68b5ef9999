/* ss_etcd -- etcd v3 client over the HTTP/JSON gateway (libcurl + cJSON):
 * get, put, compare-and-swap, delete, and a streaming watch of one key. */
#include "ss_etcd.h"

#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ss_error.h"

struct ss_etcd {
    char endpoint[SS_ETCD_MAX_ENDPOINT]; /* "http://host:port", no trailing '/' */
    unsigned timeout_ms;                 /* total time of one unary call */
    pthread_mutex_t mu;                  /* serialises calls on `curl` */
    CURL *curl;                          /* reused easy handle (keeps the connection) */
};

struct ss_etcd_watch {
    char endpoint[SS_ETCD_MAX_ENDPOINT]; /* copied from the client */
    atomic_bool stop;                    /* set by ss_etcd_watch_stop */
    pthread_mutex_t mu;                  /* guards `multi` for a wakeup */
    CURLM *multi;                        /* the running transfer's multi handle, or NULL */
};

/* A growing response body, bounded by SS_ETCD_MAX_RESPONSE. */
typedef struct body {
    char *buf;     /* malloc'ed, NUL-terminated when len > 0 */
    size_t len;    /* bytes held */
    size_t cap;    /* bytes allocated */
    bool too_big;  /* the limit was hit (the transfer is aborted) */
    bool nomem;    /* an allocation failed (the transfer is aborted) */
} body;

static pthread_once_t g_curl_once = PTHREAD_ONCE_INIT;
static CURLcode g_curl_init_rc = CURLE_OK;

static void curl_init_once(void) { g_curl_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT); }

static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || errlen == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* ---- base64 --------------------------------------------------------------- */

static const char b64_alpha[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

char *ss_etcd_b64_encode(const void *buf, size_t len)
{
    if (len > (SIZE_MAX / 4) * 3 - 3)
        return NULL;
    const unsigned char *p = buf;
    size_t out_len = (len + 2) / 3 * 4;
    char *out = malloc(out_len + 1);
    if (!out)
        return NULL;
    size_t o = 0;
    for (size_t i = 0; i < len; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16;
        if (i + 1 < len)
            v |= (uint32_t)p[i + 1] << 8;
        if (i + 2 < len)
            v |= p[i + 2];
        out[o++] = b64_alpha[(v >> 18) & 63];
        out[o++] = b64_alpha[(v >> 12) & 63];
        out[o++] = i + 1 < len ? b64_alpha[(v >> 6) & 63] : '=';
        out[o++] = i + 2 < len ? b64_alpha[v & 63] : '=';
    }
    out[o] = '\0';
    return out;
}

static int b64_val(char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

char *ss_etcd_b64_decode(const char *text, size_t *len)
{
    size_t n = strlen(text);
    if (n % 4 != 0)
        return NULL;
    char *out = malloc(n / 4 * 3 + 1);
    if (!out)
        return NULL;
    size_t o = 0;
    for (size_t i = 0; i < n; i += 4) {
        int v[4];
        int pad = 0;
        for (int j = 0; j < 4; j++) {
            char c = text[i + (size_t)j];
            if (c == '=' && i + 4 == n && j >= 2) {
                v[j] = 0;
                pad++;
            } else if (pad > 0 || (v[j] = b64_val(c)) < 0) {
                free(out);
                return NULL;
            }
        }
        uint32_t w = (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12 |
                     (uint32_t)v[2] << 6 | (uint32_t)v[3];
        out[o++] = (char)(w >> 16);
        if (pad < 2)
            out[o++] = (char)(w >> 8 & 0xff);
        if (pad < 1)
            out[o++] = (char)(w & 0xff);
    }
    out[o] = '\0';
    *len = o;
    return out;
}

/* ---- HTTP ----------------------------------------------------------------- */

static int body_append(body *b, const char *p, size_t n)
{
    if (b->len + n + 1 > SS_ETCD_MAX_RESPONSE) {
        b->too_big = true;
        return -1;
    }
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + n + 1)
            cap *= 2;
        if (cap > SS_ETCD_MAX_RESPONSE)
            cap = SS_ETCD_MAX_RESPONSE;
        char *nb = realloc(b->buf, cap);
        if (!nb) {
            b->nomem = true;
            return -1;
        }
        b->buf = nb;
        b->cap = cap;
    }
    memcpy(b->buf + b->len, p, n);
    b->len += n;
    b->buf[b->len] = '\0';
    return 0;
}

static size_t body_write_cb(char *p, size_t size, size_t nmemb, void *arg)
{
    size_t n = size * nmemb;
    return body_append(arg, p, n) == 0 ? n : 0;
}

static int curl_err(CURLcode rc, const char *url, char *err, size_t errlen)
{
    set_err(err, errlen, "etcd %s: %s", url, curl_easy_strerror(rc));
    switch (rc) {
    case CURLE_COULDNT_CONNECT:
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
        return SS_ERR_CONNECT;
    case CURLE_OPERATION_TIMEDOUT:
        return SS_ERR_TIMEOUT;
    case CURLE_GOT_NOTHING:
    case CURLE_RECV_ERROR:
    case CURLE_SEND_ERROR:
    case CURLE_PARTIAL_FILE:
        return SS_ERR_CLOSED;
    default:
        return SS_ERR_CONNECT;
    }
}

/* POST json to endpoint+path, parse the reply. */
static int post_json(ss_etcd *e, const char *path, const cJSON *req, cJSON **reply,
                     char *err, size_t errlen)
{
    int rc = 0;
    char url[SS_ETCD_MAX_ENDPOINT + 64];
    body b = {0};
    char *text = cJSON_PrintUnformatted(req);
    *reply = NULL;
    if (!text)
        return SS_ERR_NOMEM;
    snprintf(url, sizeof url, "%s%s", e->endpoint, path);
    pthread_mutex_lock(&e->mu);
    CURL *c = e->curl;
    curl_easy_reset(c);
    struct curl_slist *hdr = curl_slist_append(NULL, "Content-Type: application/json");
    if (!hdr) {
        rc = SS_ERR_NOMEM;
        goto out;
    }
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdr);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, text);
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)strlen(text));
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)e->timeout_ms);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, (long)SS_ETCD_CONNECT_TIMEOUT_MS);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_PROXY, "");
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, body_write_cb);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
    CURLcode cr = curl_easy_perform(c);
    if (b.nomem) {
        rc = SS_ERR_NOMEM;
        goto out;
    }
    if (b.too_big) {
        set_err(err, errlen, "etcd %s: reply larger than %u bytes", url,
                SS_ETCD_MAX_RESPONSE);
        rc = SS_ERR_TOO_BIG;
        goto out;
    }
    if (cr != CURLE_OK) {
        rc = curl_err(cr, url, err, errlen);
        goto out;
    }
    long status = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    cJSON *j = b.len ? cJSON_ParseWithLength(b.buf, b.len) : NULL;
    if (status != 200) {
        const cJSON *m = j ? cJSON_GetObjectItemCaseSensitive(j, "message") : NULL;
        if (!cJSON_IsString(m) && j)
            m = cJSON_GetObjectItemCaseSensitive(j, "error");
        set_err(err, errlen, "etcd %s: HTTP %ld%s%s", url, status,
                cJSON_IsString(m) ? ": " : "", cJSON_IsString(m) ? m->valuestring : "");
        cJSON_Delete(j);
        rc = status >= 500 ? SS_ERR_CONNECT : SS_ERR_PROTO;
        goto out;
    }
    if (!cJSON_IsObject(j)) {
        set_err(err, errlen, "etcd %s: reply is not a JSON object", url);
        cJSON_Delete(j);
        rc = SS_ERR_PROTO;
        goto out;
    }
    *reply = j;
out:
    pthread_mutex_unlock(&e->mu);
    curl_slist_free_all(hdr);
    free(b.buf);
    free(text);
    return rc;
}

/* An int64 the gateway writes as a string ("42"), or absent (= 0). */
static int json_i64(const cJSON *obj, const char *name, int64_t *out)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, name);
    *out = 0;
    if (!v)
        return 0;
    if (cJSON_IsNumber(v)) {
        *out = (int64_t)v->valuedouble;
        return 0;
    }
    if (!cJSON_IsString(v))
        return SS_ERR_PROTO;
    char *end = NULL;
    long long x = strtoll(v->valuestring, &end, 10);
    if (end == v->valuestring || *end != '\0')
        return SS_ERR_PROTO;
    *out = (int64_t)x;
    return 0;
}

static int header_revision(const cJSON *reply, int64_t *rev)
{
    const cJSON *h = cJSON_GetObjectItemCaseSensitive(reply, "header");
    if (!cJSON_IsObject(h))
        return SS_ERR_PROTO;
    return json_i64(h, "revision", rev);
}

/* Add a base64 string member; 0 or SS_ERR_NOMEM. */
static int add_b64(cJSON *obj, const char *name, const void *buf, size_t len)
{
    char *t = ss_etcd_b64_encode(buf, len);
    if (!t)
        return SS_ERR_NOMEM;
    cJSON *s = cJSON_AddStringToObject(obj, name, t);
    free(t);
    return s ? 0 : SS_ERR_NOMEM;
}

/* ---- client --------------------------------------------------------------- */

int ss_etcd_new(const char *endpoint, unsigned timeout_ms, ss_etcd **out)
{
    *out = NULL;
    size_t n = endpoint ? strlen(endpoint) : 0;
    if (n == 0 || n >= SS_ETCD_MAX_ENDPOINT ||
        (strncmp(endpoint, "http://", 7) != 0 && strncmp(endpoint, "https://", 8) != 0))
        return SS_ERR_INVALID;
    pthread_once(&g_curl_once, curl_init_once);
    if (g_curl_init_rc != CURLE_OK)
        return SS_ERR_NOMEM;
    ss_etcd *e = calloc(1, sizeof *e);
    if (!e)
        return SS_ERR_NOMEM;
    memcpy(e->endpoint, endpoint, n + 1);
    while (n > 0 && e->endpoint[n - 1] == '/')
        e->endpoint[--n] = '\0';
    e->timeout_ms = timeout_ms ? timeout_ms : SS_ETCD_TIMEOUT_MS;
    e->curl = curl_easy_init();
    if (!e->curl) {
        free(e);
        return SS_ERR_NOMEM;
    }
    pthread_mutex_init(&e->mu, NULL);
    *out = e;
    return 0;
}

void ss_etcd_free(ss_etcd *e)
{
    if (!e)
        return;
    curl_easy_cleanup(e->curl);
    pthread_mutex_destroy(&e->mu);
    free(e);
}

const char *ss_etcd_endpoint(const ss_etcd *e) { return e->endpoint; }

static int check_key(const char *key, char *err, size_t errlen)
{
    size_t n = key ? strlen(key) : 0;
    if (n == 0 || n > SS_ETCD_MAX_KEY) {
        set_err(err, errlen, "etcd: key empty or over %u bytes", SS_ETCD_MAX_KEY);
        return SS_ERR_INVALID;
    }
    return 0;
}

int ss_etcd_get(ss_etcd *e, const char *key, char **value, size_t *len,
                int64_t *mod_revision, int64_t *revision, char *err, size_t errlen)
{
    int rc;
    cJSON *req = NULL, *reply = NULL;
    *value = NULL;
    *len = 0;
    *mod_revision = 0;
    if ((rc = check_key(key, err, errlen)) < 0)
        return rc;
    req = cJSON_CreateObject();
    if (!req || add_b64(req, "key", key, strlen(key)) < 0) {
        rc = SS_ERR_NOMEM;
        goto out;
    }
    if ((rc = post_json(e, "/v3/kv/range", req, &reply, err, errlen)) < 0)
        goto out;
    int64_t rev = 0;
    if (header_revision(reply, &rev) < 0) {
        rc = SS_ERR_PROTO;
        set_err(err, errlen, "etcd range: reply without a header revision");
        goto out;
    }
    if (revision)
        *revision = rev;
    const cJSON *kvs = cJSON_GetObjectItemCaseSensitive(reply, "kvs");
    const cJSON *kv = cJSON_IsArray(kvs) ? cJSON_GetArrayItem(kvs, 0) : NULL;
    if (!kv) {
        set_err(err, errlen, "etcd: key %s not found", key);
        rc = SS_ERR_NOT_FOUND;
        goto out;
    }
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(kv, "value");
    if (json_i64(kv, "mod_revision", mod_revision) < 0 || (v && !cJSON_IsString(v))) {
        set_err(err, errlen, "etcd range: malformed kv");
        rc = SS_ERR_PROTO;
        goto out;
    }
    *value = ss_etcd_b64_decode(v ? v->valuestring : "", len);
    if (!*value) {
        set_err(err, errlen, "etcd range: value is not base64");
        rc = SS_ERR_PROTO;
        goto out;
    }
out:
    cJSON_Delete(req);
    cJSON_Delete(reply);
    return rc;
}

static int put_body(cJSON *obj, const char *key, const void *value, size_t len)
{
    if (add_b64(obj, "key", key, strlen(key)) < 0)
        return SS_ERR_NOMEM;
    return add_b64(obj, "value", value, len);
}

int ss_etcd_put(ss_etcd *e, const char *key, const void *value, size_t len,
                int64_t *revision, char *err, size_t errlen)
{
    int rc;
    cJSON *req = NULL, *reply = NULL;
    if ((rc = check_key(key, err, errlen)) < 0)
        return rc;
    if (len > SS_ETCD_MAX_VALUE) {
        set_err(err, errlen, "etcd: value over %u bytes", SS_ETCD_MAX_VALUE);
        return SS_ERR_TOO_BIG;
    }
    req = cJSON_CreateObject();
    if (!req || put_body(req, key, value, len) < 0) {
        rc = SS_ERR_NOMEM;
        goto out;
    }
    if ((rc = post_json(e, "/v3/kv/put", req, &reply, err, errlen)) < 0)
        goto out;
    int64_t rev = 0;
    if (header_revision(reply, &rev) < 0) {
        set_err(err, errlen, "etcd put: reply without a header revision");
        rc = SS_ERR_PROTO;
        goto out;
    }
    if (revision)
        *revision = rev;
out:
    cJSON_Delete(req);
    cJSON_Delete(reply);
    return rc;
}

int ss_etcd_cas(ss_etcd *e, const char *key, const void *value, size_t len,
                int64_t expect_mod_revision, int64_t *revision, char *err,
                size_t errlen)
{
    int rc;
    cJSON *req = NULL, *reply = NULL;
    char revtext[32];
    if ((rc = check_key(key, err, errlen)) < 0)
        return rc;
    if (len > SS_ETCD_MAX_VALUE) {
        set_err(err, errlen, "etcd: value over %u bytes", SS_ETCD_MAX_VALUE);
        return SS_ERR_TOO_BIG;
    }
    if (expect_mod_revision < 0)
        return SS_ERR_INVALID;
    snprintf(revtext, sizeof revtext, "%" PRId64, expect_mod_revision);
    req = cJSON_CreateObject();
    cJSON *cmps = req ? cJSON_AddArrayToObject(req, "compare") : NULL;
    cJSON *succ = req ? cJSON_AddArrayToObject(req, "success") : NULL;
    cJSON *cmp = cJSON_CreateObject();
    cJSON *op = cJSON_CreateObject();
    cJSON *put = op ? cJSON_AddObjectToObject(op, "request_put") : NULL;
    if (!cmps || !succ || !cmp || !op || !put) {
        cJSON_Delete(cmp);
        cJSON_Delete(op);
        rc = SS_ERR_NOMEM;
        goto out;
    }
    cJSON_AddItemToArray(cmps, cmp);
    cJSON_AddItemToArray(succ, op);
    if (add_b64(cmp, "key", key, strlen(key)) < 0 ||
        !cJSON_AddStringToObject(cmp, "target", "MOD") ||
        !cJSON_AddStringToObject(cmp, "result", "EQUAL") ||
        !cJSON_AddStringToObject(cmp, "mod_revision", revtext) ||
        put_body(put, key, value, len) < 0) {
        rc = SS_ERR_NOMEM;
        goto out;
    }
    if ((rc = post_json(e, "/v3/kv/txn", req, &reply, err, errlen)) < 0)
        goto out;
    int64_t rev = 0;
    if (header_revision(reply, &rev) < 0) {
        set_err(err, errlen, "etcd txn: reply without a header revision");
        rc = SS_ERR_PROTO;
        goto out;
    }
    if (!cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(reply, "succeeded"))) {
        set_err(err, errlen, "etcd: %s changed (expected mod_revision %" PRId64 ")",
                key, expect_mod_revision);
        rc = SS_ERR_CONFLICT;
        goto out;
    }
    if (revision)
        *revision = rev;
out:
    cJSON_Delete(req);
    cJSON_Delete(reply);
    return rc;
}

int ss_etcd_delete(ss_etcd *e, const char *key, int *deleted, char *err, size_t errlen)
{
    int rc;
    cJSON *req = NULL, *reply = NULL;
    if (deleted)
        *deleted = 0;
    if ((rc = check_key(key, err, errlen)) < 0)
        return rc;
    req = cJSON_CreateObject();
    if (!req || add_b64(req, "key", key, strlen(key)) < 0) {
        rc = SS_ERR_NOMEM;
        goto out;
    }
    if ((rc = post_json(e, "/v3/kv/deleterange", req, &reply, err, errlen)) < 0)
        goto out;
    int64_t n = 0;
    if (json_i64(reply, "deleted", &n) < 0) {
        set_err(err, errlen, "etcd deleterange: malformed reply");
        rc = SS_ERR_PROTO;
        goto out;
    }
    if (deleted)
        *deleted = n > 0;
out:
    cJSON_Delete(req);
    cJSON_Delete(reply);
    return rc;
}

/* ---- watch ---------------------------------------------------------------- */

int ss_etcd_watch_new(const ss_etcd *e, ss_etcd_watch **out)
{
    ss_etcd_watch *w = calloc(1, sizeof *w);
    *out = NULL;
    if (!w)
        return SS_ERR_NOMEM;
    memcpy(w->endpoint, e->endpoint, sizeof w->endpoint);
    atomic_init(&w->stop, false);
    pthread_mutex_init(&w->mu, NULL);
    *out = w;
    return 0;
}

void ss_etcd_watch_free(ss_etcd_watch *w)
{
    if (!w)
        return;
    pthread_mutex_destroy(&w->mu);
    free(w);
}

void ss_etcd_watch_stop(ss_etcd_watch *w)
{
    atomic_store(&w->stop, true);
    pthread_mutex_lock(&w->mu);
    if (w->multi)
        curl_multi_wakeup(w->multi);
    pthread_mutex_unlock(&w->mu);
}

void ss_etcd_watch_reset(ss_etcd_watch *w) { atomic_store(&w->stop, false); }

/* State of one watch stream while it runs. */
typedef struct watch_ctx {
    body line;             /* bytes of the current (incomplete) JSON line */
    ss_etcd_watch_cb cb;   /* the caller's callback */
    void *arg;             /* its argument */
    const char *key;       /* the watched key (for messages) */
    int64_t next_rev;      /* revision to resume from */
    int rc;                /* first error seen in the stream, or 0 */
    bool created;          /* etcd confirmed the watch */
    bool ended;            /* the callback asked to end */
    char *err;             /* caller's buffer */
    size_t errlen;         /* its size */
} watch_ctx;

static int watch_event(watch_ctx *x, const cJSON *ev)
{
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(ev, "type");
    const cJSON *kv = cJSON_GetObjectItemCaseSensitive(ev, "kv");
    if (!cJSON_IsObject(kv))
        return SS_ERR_PROTO;
    ss_etcd_event_type t = SS_ETCD_EVENT_PUT;
    if (cJSON_IsString(type) && strcmp(type->valuestring, "DELETE") == 0)
        t = SS_ETCD_EVENT_DELETE;
    else if (cJSON_IsNumber(type) && type->valueint == 1)
        t = SS_ETCD_EVENT_DELETE;
    int64_t mod = 0;
    if (json_i64(kv, "mod_revision", &mod) < 0)
        return SS_ERR_PROTO;
    const cJSON *k = cJSON_GetObjectItemCaseSensitive(kv, "key");
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(kv, "value");
    size_t klen = 0, vlen = 0;
    char *kb = ss_etcd_b64_decode(cJSON_IsString(k) ? k->valuestring : "", &klen);
    char *vb = ss_etcd_b64_decode(cJSON_IsString(v) ? v->valuestring : "", &vlen);
    int rc = 0;
    if (!kb || !vb) {
        rc = SS_ERR_PROTO;
    } else {
        if (mod >= x->next_rev)
            x->next_rev = mod + 1;
        if (x->cb(x->arg, t, kb, vb, vlen, mod) != 0)
            x->ended = true;
    }
    free(kb);
    free(vb);
    return rc;
}

/* One JSON line of the stream: {"result": {...}} or {"error": {...}}. */
static int watch_line(watch_ctx *x, const char *p, size_t n)
{
    cJSON *j = cJSON_ParseWithLength(p, n);
    int rc = 0;
    if (!cJSON_IsObject(j)) {
        set_err(x->err, x->errlen, "etcd watch %s: malformed stream line", x->key);
        rc = SS_ERR_PROTO;
        goto out;
    }
    const cJSON *res = cJSON_GetObjectItemCaseSensitive(j, "result");
    if (!cJSON_IsObject(res)) {
        const cJSON *e = cJSON_GetObjectItemCaseSensitive(j, "error");
        const cJSON *m = cJSON_IsObject(e) ? cJSON_GetObjectItemCaseSensitive(e, "message") : NULL;
        set_err(x->err, x->errlen, "etcd watch %s: %s", x->key,
                cJSON_IsString(m) ? m->valuestring : "stream error");
        rc = SS_ERR_CLOSED;
        goto out;
    }
    int64_t compact = 0;
    if (json_i64(res, "compact_revision", &compact) == 0 && compact > 0) {
        set_err(x->err, x->errlen,
                "etcd watch %s: revision %" PRId64 " compacted (now %" PRId64 ")",
                x->key, x->next_rev, compact);
        rc = SS_ERR_NOT_FOUND;
        goto out;
    }
    if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(res, "created")))
        x->created = true;
    if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(res, "canceled"))) {
        const cJSON *m = cJSON_GetObjectItemCaseSensitive(res, "cancel_reason");
        set_err(x->err, x->errlen, "etcd watch %s: canceled%s%s", x->key,
                cJSON_IsString(m) ? ": " : "", cJSON_IsString(m) ? m->valuestring : "");
        rc = SS_ERR_CLOSED;
        goto out;
    }
    const cJSON *evs = cJSON_GetObjectItemCaseSensitive(res, "events");
    const cJSON *ev;
    cJSON_ArrayForEach(ev, evs)
    {
        if ((rc = watch_event(x, ev)) < 0) {
            set_err(x->err, x->errlen, "etcd watch %s: malformed event", x->key);
            goto out;
        }
        if (x->ended)
            break;
    }
out:
    cJSON_Delete(j);
    return rc;
}

static size_t watch_write_cb(char *p, size_t size, size_t nmemb, void *arg)
{
    watch_ctx *x = arg;
    size_t n = size * nmemb;
    if (x->rc < 0 || x->ended)
        return 0;
    for (size_t i = 0; i < n; i++) {
        if (p[i] != '\n') {
            /* bytes up to the next newline go into the line buffer at once */
            size_t j = i;
            while (j < n && p[j] != '\n')
                j++;
            if (body_append(&x->line, p + i, j - i) < 0) {
                x->rc = x->line.nomem ? SS_ERR_NOMEM : SS_ERR_TOO_BIG;
                if (x->rc == SS_ERR_TOO_BIG)
                    set_err(x->err, x->errlen, "etcd watch %s: event over %u bytes",
                            x->key, SS_ETCD_MAX_RESPONSE);
                return 0;
            }
            i = j - 1;
            continue;
        }
        if (x->line.len > 0) {
            int rc = watch_line(x, x->line.buf, x->line.len);
            x->line.len = 0;
            if (rc < 0) {
                x->rc = rc;
                return 0;
            }
            if (x->ended)
                return 0;
        }
    }
    return n;
}

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

int ss_etcd_watch_run(ss_etcd_watch *w, const char *key, int64_t start_revision,
                      unsigned max_ms, ss_etcd_watch_cb cb, void *arg,
                      int64_t *next_revision, char *err, size_t errlen)
{
    int rc = 0;
    char url[SS_ETCD_MAX_ENDPOINT + 16];
    char revtext[32];
    watch_ctx x = {.cb = cb, .arg = arg, .key = key, .next_rev = start_revision,
                   .err = err, .errlen = errlen};
    CURL *c = NULL;
    CURLM *m = NULL;
    struct curl_slist *hdr = NULL;
    char *text = NULL;
    cJSON *req = NULL;
    if (next_revision)
        *next_revision = start_revision;
    if ((rc = check_key(key, err, errlen)) < 0)
        return rc;
    req = cJSON_CreateObject();
    cJSON *cr = req ? cJSON_AddObjectToObject(req, "create_request") : NULL;
    snprintf(revtext, sizeof revtext, "%" PRId64, start_revision > 0 ? start_revision : 0);
    if (!cr || add_b64(cr, "key", key, strlen(key)) < 0 ||
        (start_revision > 0 && !cJSON_AddStringToObject(cr, "start_revision", revtext)) ||
        !(text = cJSON_PrintUnformatted(req))) {
        rc = SS_ERR_NOMEM;
        goto out;
    }
    snprintf(url, sizeof url, "%s/v3/watch", w->endpoint);
    c = curl_easy_init();
    m = curl_multi_init();
    hdr = curl_slist_append(NULL, "Content-Type: application/json");
    if (!c || !m || !hdr) {
        rc = SS_ERR_NOMEM;
        goto out;
    }
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdr);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, text);
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)strlen(text));
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, (long)SS_ETCD_CONNECT_TIMEOUT_MS);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_PROXY, "");
    curl_easy_setopt(c, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(c, CURLOPT_TCP_KEEPIDLE, 2L);
    curl_easy_setopt(c, CURLOPT_TCP_KEEPINTVL, 1L);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, watch_write_cb);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &x);
    curl_multi_add_handle(m, c);
    pthread_mutex_lock(&w->mu);
    w->multi = m;
    pthread_mutex_unlock(&w->mu);

    uint64_t t0 = mono_ms();
    int running = 1;
    bool timed_out = false;
    while (running) {
        CURLMcode mc = curl_multi_perform(m, &running);
        if (mc != CURLM_OK) {
            set_err(err, errlen, "etcd watch %s: %s", key, curl_multi_strerror(mc));
            rc = SS_ERR_CONNECT;
            break;
        }
        if (!running || x.rc < 0 || x.ended)
            break;
        if (atomic_load(&w->stop))
            break;
        if (max_ms && mono_ms() - t0 >= max_ms) {
            timed_out = true;
            break;
        }
        curl_multi_poll(m, NULL, 0, SS_ETCD_WATCH_POLL_MS, NULL);
    }
    pthread_mutex_lock(&w->mu);
    w->multi = NULL;
    pthread_mutex_unlock(&w->mu);
    if (rc == 0 && x.rc < 0) {
        rc = x.rc;
    } else if (rc == 0 && !running && !x.ended && !atomic_load(&w->stop) && !timed_out) {
        /* the transfer finished by itself: the stream broke or never started */
        int left = 0;
        CURLMsg *msg = curl_multi_info_read(m, &left);
        CURLcode res = msg && msg->msg == CURLMSG_DONE ? msg->data.result : CURLE_GOT_NOTHING;
        long status = 0;
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
        if (res != CURLE_OK) {
            rc = curl_err(res, url, err, errlen);
        } else if (status != 200) {
            set_err(err, errlen, "etcd %s: HTTP %ld", url, status);
            rc = SS_ERR_PROTO;
        } else {
            set_err(err, errlen, "etcd watch %s: stream closed by etcd", key);
            rc = SS_ERR_CLOSED;
        }
    }
out:
    if (next_revision)
        *next_revision = x.next_rev;
    if (m && c)
        curl_multi_remove_handle(m, c);
    curl_easy_cleanup(c);
    curl_multi_cleanup(m);
    curl_slist_free_all(hdr);
    cJSON_Delete(req);
    free(text);
    free(x.line.buf);
    return rc;
}
