/* serve_cluster_obs -- one metrics endpoint and one --stats-json for a
 * cluster worker's per-shard processes (see serve_cluster_obs.h).
 *
 * The HTTP side is common/ss_http (libmicrohttpd) with a render callback;
 * the fetches from the shard processes are libcurl GETs to 127.0.0.1.
 */
#include "serve_cluster_obs.h"

#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fileio.h"
#include "ss_error.h"
#include "ss_http.h"
#include "ss_log.h"
#include "ss_metrics.h"
#include "serve_int.h"

/* Bytes of a shard address kept (HOST:PORT). */
#define COBS_ADDR_MAX 256
/* Most distinct metric families merged (the worker has a few dozen). */
#define COBS_FAMILIES_MAX 256
/* Longest metric name taken from a shard process's text. */
#define COBS_NAME_MAX 200
/* Bytes of one per-shard stats file read back. */
#define COBS_STATS_MAX (64u << 20)

/* One shard process. */
typedef struct cobs_slot {
    char addr[COBS_ADDR_MAX]; /* shard HOST:PORT */
    int port;                 /* its process's metrics port, 0 = none */
    bool present;             /* slot in use */
} cobs_slot;

struct ss_serve_cobs {
    ss_http *http;                         /* the endpoint (owned) */
    pthread_mutex_t mu;                    /* guards slots and n_slots */
    cobs_slot slots[SS_SERVE_COBS_SHARDS_MAX]; /* shard processes */
    size_t n_slots;                        /* slots[0..n_slots) may be present */
    _Atomic uint64_t beat_ns;              /* parent's last loop beat */
};

/* A growing text buffer; on allocation failure it sets failed and stops. */
typedef struct sbuf {
    char *p;      /* text (NUL-terminated when not failed) */
    size_t len;   /* bytes used */
    size_t cap;   /* bytes allocated */
    size_t max;   /* most bytes accepted (0 = no bound) */
    bool failed;  /* out of memory or over max */
} sbuf;

static void sb_put(sbuf *b, const char *s, size_t n)
{
    if (b->failed)
        return;
    if ((b->max && b->len + n > b->max) || b->len + n + 1 < b->len) {
        b->failed = true;
        return;
    }
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 1024;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->failed = true;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void sb_str(sbuf *b, const char *s) { sb_put(b, s, strlen(s)); }

/* ---- fetching from a shard process ----------------------------------------- */

static size_t on_body(char *data, size_t size, size_t n, void *arg)
{
    sbuf *b = arg;
    sb_put(b, data, size * n);
    return b->failed ? 0 : size * n;
}

/* GET http://127.0.0.1:port/path into body; *status is the HTTP status,
 * 0 when the process did not answer. */
static void fetch(int port, const char *path, sbuf *body, long *status)
{
    char url[64];
    *status = 0;
    CURL *h = curl_easy_init();
    if (!h)
        return;
    snprintf(url, sizeof url, "http://127.0.0.1:%d%s", port, path);
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_NOPROXY, "*"); /* loopback, whatever the environment says */
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)SS_SERVE_COBS_FETCH_MS);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, (long)SS_SERVE_COBS_FETCH_MS);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, body);
    if (curl_easy_perform(h) == CURLE_OK && !body->failed)
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, status);
    curl_easy_cleanup(h);
}

/* The present slots with a port, copied out under the mutex. */
static size_t snapshot(ss_serve_cobs *s, cobs_slot *out, size_t *n_shards)
{
    size_t n = 0;
    pthread_mutex_lock(&s->mu);
    *n_shards = 0;
    for (size_t i = 0; i < s->n_slots; i++) {
        if (!s->slots[i].present)
            continue;
        (*n_shards)++;
        out[n++] = s->slots[i];
    }
    pthread_mutex_unlock(&s->mu);
    return n;
}

/* ---- merging Prometheus text ------------------------------------------------- */

/* One metric family of the merged text. */
typedef struct family {
    char name[COBS_NAME_MAX + 1]; /* family name (from # HELP / # TYPE) */
    sbuf head;                    /* its HELP and TYPE lines, from the first process */
    sbuf samples;                 /* every process's samples, labelled */
    size_t owner;                 /* the process whose header lines are kept */
} family;

typedef struct merge {
    family *f;     /* families in order of first appearance */
    size_t n;      /* used */
    bool failed;   /* too many families or out of memory */
} merge;

static family *family_get(merge *m, const char *name, size_t len, size_t proc, bool *created)
{
    *created = false;
    if (len > COBS_NAME_MAX)
        len = COBS_NAME_MAX;
    for (size_t i = 0; i < m->n; i++)
        if (strlen(m->f[i].name) == len && memcmp(m->f[i].name, name, len) == 0)
            return &m->f[i];
    if (m->n == COBS_FAMILIES_MAX) {
        m->failed = true;
        return NULL;
    }
    family *f = &m->f[m->n++];
    memset(f, 0, sizeof *f);
    memcpy(f->name, name, len);
    f->owner = proc;
    *created = true;
    return f;
}

/* The label value escaped as the exposition format wants. */
static void put_label_value(sbuf *b, const char *v)
{
    for (; *v; v++) {
        if (*v == '\\' || *v == '"')
            sb_put(b, "\\", 1);
        if (*v == '\n')
            sb_str(b, "\\n");
        else
            sb_put(b, v, 1);
    }
}

/* One process's text into m, each sample labelled shard=addr. */
static void merge_text(merge *m, const char *text, const char *addr, size_t proc)
{
    family *cur = NULL;
    const char *p = text;
    while (*p && !m->failed) {
        const char *eol = strchr(p, '\n');
        size_t len = eol ? (size_t)(eol - p) : strlen(p);
        bool created;
        if (len > 7 && (memcmp(p, "# HELP ", 7) == 0 || memcmp(p, "# TYPE ", 7) == 0)) {
            const char *name = p + 7;
            size_t nl = 0;
            while (nl < len - 7 && name[nl] != ' ')
                nl++;
            cur = family_get(m, name, nl, proc, &created);
            if (cur && cur->owner == proc) {
                sb_put(&cur->head, p, len);
                sb_put(&cur->head, "\n", 1);
            }
        } else if (len > 0 && p[0] != '#') {
            size_t nl = 0;
            while (nl < len && p[nl] != '{' && p[nl] != ' ')
                nl++;
            if (!cur)
                cur = family_get(m, p, nl, proc, &created);
            if (cur) {
                sbuf *b = &cur->samples;
                sb_put(b, p, nl);
                sb_str(b, "{shard=\"");
                put_label_value(b, addr);
                sb_put(b, "\"", 1);
                if (nl < len && p[nl] == '{') {
                    if (nl + 1 < len && p[nl + 1] != '}')
                        sb_put(b, ",", 1);
                    sb_put(b, p + nl + 1, len - nl - 1);
                } else {
                    sb_put(b, "}", 1);
                    sb_put(b, p + nl, len - nl);
                }
                sb_put(b, "\n", 1);
            }
        }
        p = eol ? eol + 1 : p + len;
    }
}

static int render(void *arg, char **out, size_t *len)
{
    ss_serve_cobs *s = arg;
    cobs_slot *slots = malloc(SS_SERVE_COBS_SHARDS_MAX * sizeof *slots);
    family *fams = calloc(COBS_FAMILIES_MAX, sizeof *fams);
    int *up = calloc(SS_SERVE_COBS_SHARDS_MAX, sizeof *up);
    merge m = {.f = fams};
    sbuf o = {0};
    int rc = SS_ERR_NOMEM;
    size_t n_shards = 0, n = 0;
    if (!slots || !fams || !up)
        goto out;
    n = snapshot(s, slots, &n_shards);
    for (size_t i = 0; i < n; i++) {
        sbuf body = {.max = SS_SERVE_COBS_BODY_MAX};
        long status = 0;
        if (slots[i].port > 0)
            fetch(slots[i].port, "/metrics", &body, &status);
        up[i] = status == 200 && body.p;
        if (up[i])
            merge_text(&m, body.p, slots[i].addr, i);
        free(body.p);
    }
    char line[COBS_ADDR_MAX + 96];
    sb_str(&o, "# HELP statesaver_worker_cluster_shards Shards this worker serves (a worker "
               "process each).\n# TYPE statesaver_worker_cluster_shards gauge\n");
    snprintf(line, sizeof line, "statesaver_worker_cluster_shards %zu\n", n_shards);
    sb_str(&o, line);
    sb_str(&o, "# HELP statesaver_worker_shard_up 1 when the shard's worker process answered "
               "this scrape.\n# TYPE statesaver_worker_shard_up gauge\n");
    for (size_t i = 0; i < n; i++) {
        sb_str(&o, "statesaver_worker_shard_up{shard=\"");
        put_label_value(&o, slots[i].addr);
        snprintf(line, sizeof line, "\"} %d\n", up[i]);
        sb_str(&o, line);
    }
    for (size_t i = 0; i < m.n; i++) {
        if (m.f[i].head.failed || m.f[i].samples.failed)
            m.failed = true;
        if (m.f[i].head.p)
            sb_put(&o, m.f[i].head.p, m.f[i].head.len);
        if (m.f[i].samples.p)
            sb_put(&o, m.f[i].samples.p, m.f[i].samples.len);
    }
    if (m.failed)
        SS_LOG(SS_LOG_WARN, "serve: metrics of the shard processes: more than %d families "
               "or out of memory; some left out", COBS_FAMILIES_MAX);
    if (o.failed)
        goto out;
    *out = o.p;
    *len = o.len;
    o.p = NULL;
    rc = 0;
out:
    for (size_t i = 0; fams && i < m.n; i++) {
        free(fams[i].head.p);
        free(fams[i].samples.p);
    }
    free(o.p);
    free(up);
    free(fams);
    free(slots);
    return rc;
}

static bool h_healthy(void *arg)
{
    ss_serve_cobs *s = arg;
    if (ss_metrics_since(atomic_load(&s->beat_ns)) * 1000.0 > SS_SERVE_COBS_STALL_MS)
        return false;
    cobs_slot *slots = malloc(SS_SERVE_COBS_SHARDS_MAX * sizeof *slots);
    size_t n_shards = 0;
    bool ok = true;
    if (!slots)
        return true; /* cannot tell: not a reason to restart the pod */
    size_t n = snapshot(s, slots, &n_shards);
    for (size_t i = 0; i < n && ok; i++) {
        sbuf body = {.max = SS_HTTP_REASON_MAX + 64};
        long status = 0;
        if (slots[i].port > 0)
            fetch(slots[i].port, "/healthz", &body, &status);
        ok = status != 503; /* no answer: restarting, the parent handles it */
        free(body.p);
    }
    free(slots);
    return ok;
}

static bool h_ready(void *arg, char *reason, size_t size)
{
    ss_serve_cobs *s = arg;
    cobs_slot *slots = malloc(SS_SERVE_COBS_SHARDS_MAX * sizeof *slots);
    size_t n_shards = 0;
    bool ok = true;
    if (!slots) {
        snprintf(reason, size, "out of memory");
        return false;
    }
    size_t n = snapshot(s, slots, &n_shards);
    if (n == 0) {
        snprintf(reason, size, "no shard known yet");
        ok = false;
    }
    for (size_t i = 0; i < n && ok; i++) {
        sbuf body = {.max = SS_HTTP_REASON_MAX + 64};
        long status = 0;
        if (slots[i].port > 0)
            fetch(slots[i].port, "/readyz", &body, &status);
        if (status == 200) {
            free(body.p);
            continue;
        }
        ok = false;
        const char *why = body.p ? body.p : "";
        if (strncmp(why, "not ready: ", 11) == 0)
            why += 11;
        size_t wl = strcspn(why, "\n");
        snprintf(reason, size, "shard %s: %.*s", slots[i].addr, (int)wl,
                 slots[i].port == 0 ? "its worker process is starting"
                 : status == 0 ? "its worker process does not answer" : why);
        free(body.p);
        break;
    }
    free(slots);
    return ok;
}

int ss_serve_cobs_start(ss_serve_cobs **out, const char *listen, const char *port_file)
{
    char err[256];
    int rc = SS_ERR_NOMEM;
    *out = NULL;
    ss_serve_cobs *s = calloc(1, sizeof *s);
    if (!s) {
        fprintf(stderr, "serve: metrics: out of memory\n");
        return rc;
    }
    pthread_mutex_init(&s->mu, NULL);
    atomic_store(&s->beat_ns, ss_metrics_now());
    /* Before the daemon's thread exists: curl_global_init is not
     * thread-safe on every libcurl build. */
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        fprintf(stderr, "serve: metrics: libcurl did not initialise\n");
        rc = SS_ERR_IO;
        goto fail;
    }
    ss_http_handlers h = {.healthy = h_healthy, .ready = h_ready, .render = render, .arg = s};
    if ((rc = ss_http_start(&s->http, listen, NULL, &h, err, sizeof err)) < 0) {
        fprintf(stderr, "serve: --metrics-listen: %s\n", err);
        goto fail;
    }
    if (port_file && (rc = ss_http_write_port_file(port_file, ss_http_port(s->http))) < 0) {
        fprintf(stderr, "serve: cannot write --metrics-port-file %s\n", port_file);
        goto fail;
    }
    SS_LOG(SS_LOG_INFO, "serve: metrics of every shard's worker on %s (port %d): /metrics, "
           "/healthz, /readyz", listen, ss_http_port(s->http));
    *out = s;
    return 0;
fail:
    ss_serve_cobs_stop(s);
    return rc;
}

void ss_serve_cobs_stop(ss_serve_cobs *s)
{
    if (!s)
        return;
    ss_http_stop(s->http);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

void ss_serve_cobs_set(ss_serve_cobs *s, size_t i, const char *addr, int port, bool present)
{
    if (!s || i >= SS_SERVE_COBS_SHARDS_MAX)
        return;
    pthread_mutex_lock(&s->mu);
    cobs_slot *sl = &s->slots[i];
    snprintf(sl->addr, sizeof sl->addr, "%s", addr ? addr : "");
    sl->port = port;
    sl->present = present;
    if (present && i >= s->n_slots)
        s->n_slots = i + 1;
    pthread_mutex_unlock(&s->mu);
}

void ss_serve_cobs_beat(ss_serve_cobs *s)
{
    if (s)
        atomic_store(&s->beat_ns, ss_metrics_now());
}

/* ---- --stats-json -------------------------------------------------------------- */

int ss_serve_cobs_stats_path(char *buf, size_t size, const char *path, size_t i)
{
    int n = snprintf(buf, size, "%s.shard-%zu", path, i);
    return n < 0 || (size_t)n >= size ? SS_ERR_TOO_BIG : 0;
}

int ss_serve_cobs_write_stats(const char *path, const char *const *addrs, size_t n,
                              double seconds)
{
    char err[512], file[4096];
    double batches = 0, segments = 0, failed = 0;
    cJSON *o = cJSON_CreateObject(), *shards = cJSON_CreateObject();
    int rc = SS_ERR_NOMEM;
    if (!o || !shards)
        goto out;
    for (size_t i = 0; i < n; i++) {
        char *buf = NULL;
        size_t len = 0;
        if (!addrs[i] || ss_serve_cobs_stats_path(file, sizeof file, path, i) < 0 ||
            access(file, F_OK) != 0)
            continue; /* no process ran for that slot, or it wrote nothing */
        if (ss_fileio_read_all(file, COBS_STATS_MAX, &buf, &len, err, sizeof err) < 0) {
            SS_LOG(SS_LOG_WARN, "serve: --stats-json: %s", err);
            continue;
        }
        cJSON *one = cJSON_ParseWithLength(buf, len);
        free(buf);
        if (!one) {
            SS_LOG(SS_LOG_WARN, "serve: --stats-json: %s is not JSON; left out", file);
            continue;
        }
        const cJSON *v;
        if ((v = cJSON_GetObjectItemCaseSensitive(one, "batches")) && cJSON_IsNumber(v))
            batches += v->valuedouble;
        if ((v = cJSON_GetObjectItemCaseSensitive(one, "segments")) && cJSON_IsNumber(v))
            segments += v->valuedouble;
        if ((v = cJSON_GetObjectItemCaseSensitive(one, "failed_items")) && cJSON_IsNumber(v))
            failed += v->valuedouble;
        cJSON_AddItemToObject(shards, addrs[i], one);
        unlink(file);
    }
    cJSON_AddNumberToObject(o, "batches", batches);
    cJSON_AddNumberToObject(o, "segments", segments);
    cJSON_AddNumberToObject(o, "failed_items", failed);
    cJSON_AddNumberToObject(o, "seconds", seconds);
    cJSON_AddItemToObject(o, "shards", shards);
    shards = NULL;
    rc = ss_serve_write_json(path, o);
out:
    if (rc == SS_ERR_NOMEM && (!o || shards))
        SS_LOG(SS_LOG_ERROR, "serve: --stats-json: out of memory");
    cJSON_Delete(shards);
    cJSON_Delete(o);
    return rc;
}
