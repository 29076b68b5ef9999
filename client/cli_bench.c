/* cli_bench -- `statesaver bench`: a redis-benchmark-style load generator.
 *
 * One libuv loop drives N connections; each keeps exactly one request in
 * flight, built and parsed with the wire library (no blocking client
 * calls on the hot path). Every request's latency goes into a
 * preallocated array (uv_hrtime), percentiles come from sorting it.
 * Save requests are correct compare-and-set traffic: each connection owns
 * a disjoint set of keys and advances each key's segment after every
 * acknowledged save. Setup (declare, prepopulate) and teardown (drop) use
 * the blocking library.
 *
 * On a cluster (every run, unless --no-route) connection i talks to shard
 * i mod shards and draws its keys from that shard's keys only; every key
 * of every request is routed on the hot path (slot and owner from the
 * cluster handle's topology, as a routing client does) and checked
 * against the connection's shard. --no-route skips that and talks to
 * --server directly: the baseline of the routing cost (client CPU per
 * state is in the report).
 */
#include "cli.h"

#include <cjson/cJSON.h>
#include <getopt.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>
#include <uv.h>

#include "ss_parse.h"
#include "ss_frame.h"
#include "ss_limits.h"
#include "ss_tensor.h"
#include "statesaver.pb-c.h"

#define BENCH_CLIENTS_DEFAULT 50
#define BENCH_CLIENTS_MAX 10000
#define BENCH_REQUESTS_DEFAULT 100000
#define BENCH_REQUESTS_MAX 100000000ull
#define BENCH_STATE_BYTES_DEFAULT 4096
#define BENCH_KEYS_DEFAULT 10000
#define BENCH_KEY_LEN 32                 /* room for "bench-key-%012zu" + NUL */
#define BENCH_PREFILL_BATCH 256          /* keys per setup save/fetch */
#define BENCH_RBUF_MIN (64u * 1024u)

typedef struct bench bench;

/* One benchmark connection. */
typedef struct bench_conn {
    uv_tcp_t tcp;             /* the connection (closed via uv_close) */
    uv_connect_t connect_req; /* pending connect */
    uv_write_t write_req;     /* the one write in flight */
    bench *b;                 /* owner */
    size_t index;             /* connection number */
    bool open;                /* tcp handle initialised, not yet closed */
    bool writing;             /* write_req in use */
    bool send_next;           /* a send waits for write_req to be free */
    bool ready;               /* connected (and authenticated) */
    uint64_t pending_id;      /* id of the request in flight, 0 = none */
    uint64_t next_id;         /* next request id */
    uint64_t t_sent;          /* uv_hrtime() of the request in flight */
    uint8_t *rbuf;            /* received bytes not yet decoded */
    size_t rlen;              /* bytes in rbuf */
    size_t rcap;              /* allocated size of rbuf */
    uint8_t *wbuf;            /* frame being written */
    size_t wcap;              /* allocated size of wbuf */
    size_t *own;              /* save: indices of the keys this conn owns */
    size_t n_own;             /* number of owned keys */
    size_t cursor;            /* save: next owned key to use */
    size_t batch_start;       /* save: cursor of the request in flight */
    uint64_t rng;             /* fetch: xorshift state for key choice */
    size_t shard;             /* shard this connection talks to */
} bench_conn;

struct bench {
    uv_loop_t loop;           /* the one event loop */
    struct sockaddr_storage *addrs; /* per shard: address */
    size_t n_shards;          /* shards (1 with --no-route) */
    size_t **shard_keys;      /* per shard: indices of the keys it owns */
    size_t *n_shard_keys;     /* per shard: how many */
    ss_cluster *cl;           /* routing: the topology (NULL: --no-route) */
    const char *direct;       /* --no-route: the one address (the first shard) */
    uint64_t misrouted;       /* keys whose owner was not the conn's shard */
    bool is_save;             /* --op save */
    size_t clients;           /* --clients */
    size_t requests;          /* --requests (total) */
    size_t batch;             /* --batch (states per request) */
    size_t state_bytes;       /* --state-bytes */
    size_t n_keys;            /* --keys */
    const char *saver;        /* --saver */
    const cli_ctx *ctx;       /* token for Hello */
    char *keys;               /* n_keys * BENCH_KEY_LEN key strings */
    uint64_t *segments;       /* save: next segment of every key */
    float *payload;           /* batch rows of state_bytes (save data) */
    ProtobufCBinaryData *kbuf; /* scratch key list for one request */
    uint64_t *seg_buf;        /* scratch segment list for one request */
    bench_conn *conns;        /* clients connections */
    size_t connected;         /* conns ready */
    size_t issued;            /* requests sent (timed) */
    size_t completed;         /* responses received (timed) */
    uint64_t *lat_ns;         /* requests entries: latency per request */
    uint64_t t_start;         /* uv_hrtime() when traffic began */
    uint64_t t_end;           /* uv_hrtime() of the last response */
    uv_timer_t watchdog;      /* fails the run when nothing moves */
    bool watchdog_open;       /* watchdog initialised, not yet closed */
    uint64_t last_progress;   /* uv_hrtime() of the last connect or reply */
    uint64_t stall_ns;        /* --timeout-ms: longest time without progress */
    size_t open_conns;        /* connections not yet closed */
    bool failed;              /* an error stopped the run */
    char err[512];            /* first error */
};

static const char bench_usage[] =
    "usage: statesaver bench [--op fetch|save] [--clients N] [--requests N]\n"
    "                        [--batch B] [--state-bytes N] [--keys N]\n"
    "                        [--saver NAME] [--keep] [--json]\n"
    "Load generator: one event loop drives N connections, each with one\n"
    "request in flight. Declares SAVER (default bench-<pid>) with one float32\n"
    "state of state-bytes/4 values, prepopulates the keys for fetch, and drops\n"
    "the saver afterwards (unless --keep).\n"
    "  --op fetch|save    request type (default fetch)\n"
    "  --clients N        parallel connections (default 50)\n"
    "  --requests N       total requests (default 100000)\n"
    "  --batch B          keys (states) per request (default 1)\n"
    "  --state-bytes N    bytes per state, multiple of 4 (default 4096)\n"
    "  --keys N           key space (default 10000; save needs >= clients*batch)\n"
    "  --keep             do not drop the saver afterwards\n"
    "  --no-route         send every key to the first shard, without routing (the\n"
    "                     baseline of the routing cost, for a cluster of one);\n"
    "                     default: each key to its shard\n"
    "  --json             one JSON object: op, clients, requests, batch,\n"
    "                     state_bytes, keys, seconds, requests_per_sec,\n"
    "                     states_per_sec, p50_ms, p90_ms, p99_ms, max_ms\n"
    "The global --timeout-ms bounds every setup call and, during the run, the\n"
    "time without any reply: a stalled server ends the run with exit 1.\n";

static void bench_fail(bench *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void close_all(bench *b);

static void on_close(uv_handle_t *h)
{
    (void)h; /* conns live in an array freed after uv_run returns */
}

static void conn_close(bench_conn *c)
{
    bench *b = c->b;
    if (c->open) {
        c->open = false;
        uv_close((uv_handle_t *)&c->tcp, on_close);
        /* The last connection gone: the watchdog must not keep the loop. */
        if (--b->open_conns == 0 && b->watchdog_open) {
            b->watchdog_open = false;
            uv_close((uv_handle_t *)&b->watchdog, on_close);
        }
    }
}

static void on_watchdog(uv_timer_t *t)
{
    bench *b = t->data;
    uint64_t idle = uv_hrtime() - b->last_progress;
    if (idle > b->stall_ns)
        bench_fail(b, "no reply for %llu ms (--timeout-ms)",
                   (unsigned long long)(idle / 1000000u));
}

static void close_all(bench *b)
{
    for (size_t i = 0; i < b->clients; i++)
        conn_close(&b->conns[i]);
}

static void bench_fail(bench *b, const char *fmt, ...)
{
    if (!b->failed) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(b->err, sizeof b->err, fmt, ap);
        va_end(ap);
        b->failed = true;
    }
    close_all(b);
}

static const char *key_at(const bench *b, size_t i)
{
    return b->keys + i * BENCH_KEY_LEN;
}

static uint64_t xorshift(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
}

static void on_write(uv_write_t *req, int status);

/* The routing a cluster client does per key (slot, owner), checked. */
static void route_check(bench *b, const bench_conn *c, const ProtobufCBinaryData *key)
{
    if (!b->cl)
        return;
    ss_key k = {key->data, key->len};
    int o = ss_cluster_shard_of(b->cl, &k);
    if (o < 0 || (size_t)o != c->shard)
        b->misrouted++;
}

/* Pack req into c->wbuf and write it. */
static int write_request(bench_conn *c, Statesaver__V1__Request *req)
{
    bench *b = c->b;
    req->id = c->next_id++;
    size_t n = protobuf_c_message_get_packed_size(&req->base);
    size_t total = SS_FRAME_HEADER + n;
    if (total > c->wcap) {
        uint8_t *nb = realloc(c->wbuf, total);
        if (!nb) {
            bench_fail(b, "out of memory");
            return -1;
        }
        c->wbuf = nb;
        c->wcap = total;
    }
    ss_frame_put_header(c->wbuf, (uint32_t)n);
    protobuf_c_message_pack(&req->base, c->wbuf + SS_FRAME_HEADER);
    uv_buf_t buf = uv_buf_init((char *)c->wbuf, (unsigned)total);
    c->pending_id = req->id;
    c->writing = true;
    int rc = uv_write(&c->write_req, (uv_stream_t *)&c->tcp, &buf, 1, on_write);
    if (rc < 0) {
        c->writing = false;
        bench_fail(b, "write: %s", uv_strerror(rc));
        return -1;
    }
    return 0;
}

/* Build and send the next timed request of connection c. */
static void send_next(bench_conn *c)
{
    bench *b = c->b;
    if (c->writing) {
        /* write_req (and wbuf) still belong to the previous write. */
        c->send_next = true;
        return;
    }
    if (b->issued >= b->requests || b->failed) {
        conn_close(c);
        return;
    }
    b->issued++;
    Statesaver__V1__Request req = STATESAVER__V1__REQUEST__INIT;
    ProtobufCBinaryData *keys = b->kbuf;
    if (b->is_save) {
        Statesaver__V1__SaveRequest s = STATESAVER__V1__SAVE_REQUEST__INIT;
        Statesaver__V1__Tensor t = STATESAVER__V1__TENSOR__INIT, *tp = &t;
        uint64_t *segs = b->seg_buf;
        int64_t dims[2] = {(int64_t)b->batch, (int64_t)(b->state_bytes / 4)};
        c->batch_start = c->cursor;
        for (size_t i = 0; i < b->batch; i++) {
            size_t k = c->own[(c->cursor + i) % c->n_own];
            keys[i].data = (uint8_t *)(uintptr_t)key_at(b, k);
            keys[i].len = strlen(key_at(b, k));
            segs[i] = b->segments[k];
            route_check(b, c, &keys[i]);
        }
        c->cursor = (c->cursor + b->batch) % c->n_own;
        ss_tensor_borrow(&t, SS_DTYPE_FLOAT32, dims, 2, b->payload,
                         b->batch * b->state_bytes);
        s.saver = (char *)(uintptr_t)b->saver;
        s.n_keys = b->batch;
        s.keys = keys;
        s.n_segment = b->batch;
        s.segment = segs;
        s.n_states = 1;
        s.states = &tp;
        req.body_case = STATESAVER__V1__REQUEST__BODY_SAVE;
        req.save = &s;
        c->t_sent = uv_hrtime();
        write_request(c, &req);
    } else {
        Statesaver__V1__FetchRequest f = STATESAVER__V1__FETCH_REQUEST__INIT;
        for (size_t i = 0; i < b->batch; i++) {
            size_t mine = b->n_shard_keys[c->shard];
            size_t k = b->shard_keys[c->shard][xorshift(&c->rng) % mine];
            keys[i].data = (uint8_t *)(uintptr_t)key_at(b, k);
            keys[i].len = strlen(key_at(b, k));
            route_check(b, c, &keys[i]);
        }
        f.saver = (char *)(uintptr_t)b->saver;
        f.n_keys = b->batch;
        f.keys = keys;
        req.body_case = STATESAVER__V1__REQUEST__BODY_FETCH;
        req.fetch = &f;
        c->t_sent = uv_hrtime();
        write_request(c, &req);
    }
}

static void start_traffic(bench *b)
{
    b->t_start = uv_hrtime();
    for (size_t i = 0; i < b->clients && !b->failed; i++)
        send_next(&b->conns[i]);
}

static void conn_ready(bench_conn *c)
{
    c->ready = true;
    c->b->last_progress = uv_hrtime();
    if (++c->b->connected == c->b->clients)
        start_traffic(c->b);
}

static void on_write(uv_write_t *req, int status)
{
    bench_conn *c = req->data;
    c->writing = false;
    if (status == UV_ECANCELED)
        return; /* the connection is being closed */
    if (status < 0) {
        bench_fail(c->b, "write: %s", uv_strerror(status));
        return;
    }
    if (c->send_next) {
        c->send_next = false;
        send_next(c);
    }
}

/* Handle one response frame. */
static void on_response(bench_conn *c, Statesaver__V1__Response *r)
{
    bench *b = c->b;
    if (r->id != c->pending_id) {
        bench_fail(b, "connection %zu: response id %llu, expected %llu", c->index,
                   (unsigned long long)r->id, (unsigned long long)c->pending_id);
        return;
    }
    c->pending_id = 0;
    if (r->status && r->status->code != STATESAVER__V1__CODE__OK) {
        bench_fail(b, "connection %zu: %s: %s", c->index,
                   ss_status_name((int)r->status->code), r->status->message);
        return;
    }
    if (!c->ready) { /* Hello answered */
        conn_ready(c);
        return;
    }
    uint64_t now = uv_hrtime();
    if (b->is_save) {
        if (r->body_case != STATESAVER__V1__RESPONSE__BODY_SAVE) {
            bench_fail(b, "save answered with body %d", (int)r->body_case);
            return;
        }
        for (size_t i = 0; i < b->batch; i++)
            b->segments[c->own[(c->batch_start + i) % c->n_own]]++;
    } else if (r->body_case != STATESAVER__V1__RESPONSE__BODY_FETCH ||
               r->fetch->n_states != 1 || r->fetch->states[0]->data.len !=
               b->batch * b->state_bytes) {
        bench_fail(b, "malformed fetch response");
        return;
    }
    b->lat_ns[b->completed++] = now - c->t_sent;
    b->t_end = now;
    b->last_progress = now;
    send_next(c);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    bench_conn *c = h->data;
    (void)suggested;
    if (c->rcap - c->rlen < BENCH_RBUF_MIN / 2) {
        size_t cap = c->rcap ? c->rcap * 2 : BENCH_RBUF_MIN;
        uint8_t *nb = realloc(c->rbuf, cap);
        if (!nb) {
            *buf = uv_buf_init(NULL, 0); /* libuv reports UV_ENOBUFS */
            return;
        }
        c->rbuf = nb;
        c->rcap = cap;
    }
    *buf = uv_buf_init((char *)c->rbuf + c->rlen, (unsigned)(c->rcap - c->rlen));
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    bench_conn *c = s->data;
    bench *b = c->b;
    (void)buf;
    if (nread < 0) {
        if (c->open)
            bench_fail(b, "connection %zu: %s", c->index,
                       nread == UV_EOF ? "server closed the connection"
                                       : uv_strerror((int)nread));
        return;
    }
    c->rlen += (size_t)nread;
    size_t off = 0;
    while (c->open) {
        const uint8_t *payload;
        size_t plen, consumed, need = 0;
        int rc = ss_frame_decode(c->rbuf + off, c->rlen - off, SS_FRAME_MAX_DEFAULT,
                                 &payload, &plen, &consumed, &need);
        if (rc == SS_FRAME_NEED_MORE) {
            if (need > c->rcap) {
                uint8_t *nb = realloc(c->rbuf, need);
                if (!nb) {
                    bench_fail(b, "out of memory");
                    return;
                }
                c->rbuf = nb;
                c->rcap = need;
            }
            break;
        }
        if (rc < 0) {
            bench_fail(b, "connection %zu: response frame too big", c->index);
            return;
        }
        Statesaver__V1__Response *r =
            statesaver__v1__response__unpack(NULL, plen, payload);
        off += consumed;
        if (!r) {
            bench_fail(b, "connection %zu: malformed response", c->index);
            return;
        }
        on_response(c, r);
        statesaver__v1__response__free_unpacked(r, NULL);
    }
    if (off) {
        memmove(c->rbuf, c->rbuf + off, c->rlen - off);
        c->rlen -= off;
    }
}

static void on_connect(uv_connect_t *req, int status)
{
    bench_conn *c = req->data;
    bench *b = c->b;
    if (status < 0) {
        bench_fail(b, "connect: %s", uv_strerror(status));
        return;
    }
    if (!c->open)
        return;
    uv_tcp_nodelay(&c->tcp, 1);
    int rc = uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
    if (rc < 0) {
        bench_fail(b, "read: %s", uv_strerror(rc));
        return;
    }
    if (b->ctx->token) {
        Statesaver__V1__Request r = STATESAVER__V1__REQUEST__INIT;
        Statesaver__V1__HelloRequest h = STATESAVER__V1__HELLO_REQUEST__INIT;
        h.token.data = (uint8_t *)b->ctx->token;
        h.token.len = b->ctx->token_len;
        h.client = (char *)(uintptr_t)"statesaver-bench/" SS_VERSION;
        r.body_case = STATESAVER__V1__REQUEST__BODY_HELLO;
        r.hello = &h;
        write_request(c, &r);
        return;
    }
    conn_ready(c);
}

/* ---- setup and teardown with the blocking library ---------------------- */

static int resolve(struct sockaddr_storage *addr, const char *server)
{
    char host[256], port[32];
    const char *colon = strchr(server, ':');
    if (server[0] == '[') {
        const char *end = strchr(server, ']');
        if (!end || end[1] != ':')
            return -1;
        snprintf(host, sizeof host, "%.*s", (int)(end - server - 1), server + 1);
        snprintf(port, sizeof port, "%s", end + 2);
    } else if (colon && !strchr(colon + 1, ':')) {
        snprintf(host, sizeof host, "%.*s", (int)(colon - server), server);
        snprintf(port, sizeof port, "%s", colon + 1);
    } else {
        /* No port, or a bare IPv6 literal: the default port. */
        snprintf(host, sizeof host, "%s", server);
        snprintf(port, sizeof port, "%u", SS_DEFAULT_PORT);
    }
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    struct addrinfo *res = NULL;
    if (getaddrinfo(host, port, &hints, &res) != 0 || !res)
        return -1;
    memcpy(addr, res->ai_addr, res->ai_addrlen);
    freeaddrinfo(res);
    return 0;
}

/* Declare the saver; for fetch write segment 0 of every key; for save read
 * every key's next_segment (a reused --saver may have history). */
static int setup(bench *b, ss_cluster *c)
{
    int64_t dim = (int64_t)(b->state_bytes / 4);
    ss_state_def def = {.name = "s", .dtype = SS_DTYPE_FLOAT32, .shape = &dim, .rank = 1};
    int rc = ss_cluster_declare(c, b->saver, &def, 1, 0, false, NULL);
    if (rc < 0)
        return cli_cfail(c, "bench: declare", rc);
    size_t chunk = BENCH_PREFILL_BATCH;
    ss_key *keys = calloc(chunk, sizeof *keys);
    uint64_t *segs = calloc(chunk, sizeof *segs);
    float *rows = calloc(chunk, b->state_bytes);
    int status = CLI_EXIT_OK;
    if (!keys || !segs || !rows) {
        cli_error("out of memory");
        status = CLI_EXIT_FAIL;
        goto out;
    }
    for (size_t i = 0; i < chunk * (b->state_bytes / 4); i++)
        rows[i] = (float)(i % 1000) * 0.001f;
    for (size_t base = 0; base < b->n_keys; base += chunk) {
        size_t n = b->n_keys - base < chunk ? b->n_keys - base : chunk;
        for (size_t i = 0; i < n; i++) {
            keys[i].data = key_at(b, base + i);
            keys[i].len = strlen(key_at(b, base + i));
        }
        ss_fetch_result *r = NULL;
        rc = ss_cluster_fetch(c, b->saver, keys, n, 0, 0, &r);
        if (rc < 0) {
            status = cli_cfail(c, "bench: prepare keys", rc);
            goto out;
        }
        for (size_t i = 0; i < n; i++)
            b->segments[base + i] = ss_fetch_result_next_segment(r, i);
        ss_fetch_result_free(r);
        if (b->is_save)
            continue;
        /* Fetch should read stored records, not initial states. */
        size_t m = 0;
        for (size_t i = 0; i < n; i++) {
            if (b->segments[base + i] == 0) {
                keys[m] = keys[i];
                segs[m++] = 0;
            }
        }
        if (m == 0)
            continue;
        ss_state_data sd = {.dtype = SS_DTYPE_FLOAT32, .shape = &dim, .rank = 1,
                            .data = rows};
        rc = ss_cluster_save(c, b->saver, keys, m, segs, NULL, &sd, 1, NULL);
        if (rc < 0) {
            status = cli_cfail(c, "bench: prepopulate", rc);
            goto out;
        }
    }
out:
    free(rows);
    free(segs);
    free(keys);
    return status;
}

/* Keys by owner shard, addresses of the shards; conns owning save keys of
 * their shard (connection i owns every (i / shards)-th key of shard i mod
 * shards). */
static int plan(bench *b, ss_cluster *cl)
{
    size_t ns = b->n_shards;
    b->addrs = calloc(ns, sizeof *b->addrs);
    b->shard_keys = calloc(ns, sizeof *b->shard_keys);
    b->n_shard_keys = calloc(ns, sizeof *b->n_shard_keys);
    if (!b->addrs || !b->shard_keys || !b->n_shard_keys)
        goto nomem;
    for (size_t s = 0; s < ns; s++) {
        const char *a = cl ? ss_cluster_shard_address(cl, s) : b->direct;
        if (resolve(&b->addrs[s], a) < 0) {
            cli_error("bench: cannot resolve '%s'", a);
            return CLI_EXIT_FAIL;
        }
        if (!(b->shard_keys[s] = calloc(b->n_keys, sizeof **b->shard_keys)))
            goto nomem;
    }
    for (size_t i = 0; i < b->n_keys; i++) {
        ss_key k = {key_at(b, i), strlen(key_at(b, i))};
        int o = cl ? ss_cluster_shard_of(cl, &k) : 0;
        if (o < 0) {
            cli_error("bench: the topology has no owner for key %zu", i);
            return CLI_EXIT_FAIL;
        }
        b->shard_keys[o][b->n_shard_keys[o]++] = i;
    }
    for (size_t s = 0; s < ns; s++) {
        size_t conns_here = b->clients / ns + (s < b->clients % ns);
        if (conns_here && b->n_shard_keys[s] < (b->is_save ? conns_here * b->batch : 1)) {
            cli_error("bench: shard %zu owns %zu of the %zu keys, too few for its %zu "
                      "connections (raise --keys)",
                      s, b->n_shard_keys[s], b->n_keys, conns_here);
            return CLI_EXIT_FAIL;
        }
    }
    if (!b->is_save)
        return CLI_EXIT_OK;
    for (size_t i = 0; i < b->clients; i++) {
        bench_conn *bc = &b->conns[i];
        size_t s = i % ns, j0 = i / ns, step = b->clients / ns + (s < b->clients % ns);
        size_t have = b->n_shard_keys[s];
        bc->n_own = have > j0 ? (have - j0 + step - 1) / step : 0;
        bc->own = calloc(bc->n_own ? bc->n_own : 1, sizeof *bc->own);
        if (!bc->own)
            goto nomem;
        for (size_t j = 0; j < bc->n_own; j++)
            bc->own[j] = b->shard_keys[s][j0 + j * step];
    }
    return CLI_EXIT_OK;
nomem:
    cli_error("out of memory");
    return CLI_EXIT_FAIL;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static double pct_ms(const uint64_t *sorted, size_t n, double p)
{
    if (n == 0)
        return 0;
    size_t i = (size_t)(p * (double)n);
    if (i >= n)
        i = n - 1;
    return (double)sorted[i] / 1e6;
}

static int report(const bench *b, bool json, double cpu_s)
{
    size_t n = b->completed;
    double cpu_us_state = n ? cpu_s * 1e6 / ((double)n * (double)b->batch) : 0;
    qsort(b->lat_ns, n, sizeof *b->lat_ns, cmp_u64);
    double secs = (double)(b->t_end - b->t_start) / 1e9;
    if (secs <= 0)
        secs = 1e-9;
    double rps = (double)n / secs, sps = rps * (double)b->batch;
    double p50 = pct_ms(b->lat_ns, n, 0.50), p90 = pct_ms(b->lat_ns, n, 0.90);
    double p99 = pct_ms(b->lat_ns, n, 0.99);
    double max = n ? (double)b->lat_ns[n - 1] / 1e6 : 0;
    const char *op = b->is_save ? "save" : "fetch";
    if (!json) {
        printf("====== %s ======\n", b->is_save ? "SAVE" : "FETCH");
        printf("  %zu requests completed in %.3f seconds\n", n, secs);
        printf("  %zu parallel clients, batch %zu, %zu bytes per state, %zu keys\n",
               b->clients, b->batch, b->state_bytes, b->n_keys);
        printf("  latency ms: p50 %.3f  p90 %.3f  p99 %.3f  max %.3f\n", p50, p90,
               p99, max);
        printf("  %.1f requests per second, %.1f states per second\n", rps, sps);
        printf("  %zu shard(s)%s, client CPU %.3f us per state\n", b->n_shards,
               b->cl ? ", routed" : ", direct (--no-route)", cpu_us_state);
        return CLI_EXIT_OK;
    }
    cJSON *o = cJSON_CreateObject();
    if (!o)
        return CLI_EXIT_FAIL;
    cJSON_AddStringToObject(o, "op", op);
    cJSON_AddNumberToObject(o, "clients", (double)b->clients);
    cJSON_AddNumberToObject(o, "requests", (double)n);
    cJSON_AddNumberToObject(o, "batch", (double)b->batch);
    cJSON_AddNumberToObject(o, "state_bytes", (double)b->state_bytes);
    cJSON_AddNumberToObject(o, "keys", (double)b->n_keys);
    cJSON_AddNumberToObject(o, "seconds", secs);
    cJSON_AddNumberToObject(o, "requests_per_sec", rps);
    cJSON_AddNumberToObject(o, "states_per_sec", sps);
    cJSON_AddNumberToObject(o, "p50_ms", p50);
    cJSON_AddNumberToObject(o, "p90_ms", p90);
    cJSON_AddNumberToObject(o, "p99_ms", p99);
    cJSON_AddNumberToObject(o, "max_ms", max);
    cJSON_AddNumberToObject(o, "shards", (double)b->n_shards);
    cJSON_AddBoolToObject(o, "routed", b->cl != NULL);
    cJSON_AddNumberToObject(o, "client_cpu_s", cpu_s);
    cJSON_AddNumberToObject(o, "client_cpu_us_per_state", cpu_us_state);
    char *text = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    if (!text)
        return CLI_EXIT_FAIL;
    printf("%s\n", text);
    free(text);
    return CLI_EXIT_OK;
}

/* Run the timed phase on the event loop. */
static int run_loop(bench *b)
{
    int rc = uv_loop_init(&b->loop);
    if (rc < 0) {
        cli_error("bench: uv_loop_init: %s", uv_strerror(rc));
        return CLI_EXIT_FAIL;
    }
    b->stall_ns = (uint64_t)b->ctx->timeout_ms * 1000000u;
    b->last_progress = uv_hrtime();
    if ((rc = uv_timer_init(&b->loop, &b->watchdog)) < 0) {
        cli_error("bench: uv_timer_init: %s", uv_strerror(rc));
        uv_loop_close(&b->loop);
        return CLI_EXIT_FAIL;
    }
    b->watchdog_open = true;
    b->watchdog.data = b;
    uint64_t period = b->ctx->timeout_ms < 1000 ? (uint64_t)b->ctx->timeout_ms : 1000;
    uv_timer_start(&b->watchdog, on_watchdog, period, period);
    for (size_t i = 0; i < b->clients; i++) {
        bench_conn *c = &b->conns[i];
        c->b = b;
        c->index = i;
        c->next_id = 1;
        c->rng = 0x9e3779b97f4a7c15ull ^ ((uint64_t)i * 0x2545f4914f6cdd1dull) ^ 1;
        c->shard = i % b->n_shards;
        if ((rc = uv_tcp_init(&b->loop, &c->tcp)) < 0) {
            bench_fail(b, "uv_tcp_init: %s", uv_strerror(rc));
            break;
        }
        c->open = true;
        b->open_conns++;
        c->tcp.data = c;
        c->connect_req.data = c;
        c->write_req.data = c;
        rc = uv_tcp_connect(&c->connect_req, &c->tcp,
                            (struct sockaddr *)&b->addrs[c->shard], on_connect);
        if (rc < 0) {
            bench_fail(b, "connect: %s", uv_strerror(rc));
            break;
        }
    }
    if (b->open_conns == 0 && b->watchdog_open) {
        b->watchdog_open = false;
        uv_close((uv_handle_t *)&b->watchdog, on_close);
    }
    uv_run(&b->loop, UV_RUN_DEFAULT);
    uv_loop_close(&b->loop);
    if (b->failed) {
        cli_error("bench: %s", b->err);
        return CLI_EXIT_FAIL;
    }
    return CLI_EXIT_OK;
}

int cli_cmd_bench(const cli_ctx *ctx, int argc, char **argv)
{
    static const struct option opts[] = {
        {"op", required_argument, NULL, 'o'},
        {"clients", required_argument, NULL, 'c'},
        {"requests", required_argument, NULL, 'n'},
        {"batch", required_argument, NULL, 'b'},
        {"state-bytes", required_argument, NULL, 's'},
        {"keys", required_argument, NULL, 'k'},
        {"saver", required_argument, NULL, 'S'},
        {"keep", no_argument, NULL, 'K'},
        {"no-route", no_argument, NULL, 'D'},
        {"json", no_argument, NULL, 'j'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0}};
    uint64_t clients = BENCH_CLIENTS_DEFAULT, requests = BENCH_REQUESTS_DEFAULT,
             batch = 1, state_bytes = BENCH_STATE_BYTES_DEFAULT, keys = 0;
    bool json = false, keep = false, is_save = false, direct = false;
    char saver_buf[64];
    const char *saver = NULL;
    ss_cluster *c = NULL;
    bench *b = NULL;
    int o, status;

    while ((o = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (o) {
        case 'h': fputs(bench_usage, stdout); return CLI_EXIT_OK;
        case 'o':
            if (strcmp(optarg, "save") == 0)
                is_save = true;
            else if (strcmp(optarg, "fetch") != 0)
                return cli_usage("bench", "--op wants fetch or save");
            break;
        case 'c':
            if (ss_parse_u64(optarg, 0, BENCH_CLIENTS_MAX, &clients) < 0 || !clients)
                return cli_usage("bench", "--clients wants 1..%d", BENCH_CLIENTS_MAX);
            break;
        case 'n':
            if (ss_parse_u64(optarg, 0, BENCH_REQUESTS_MAX, &requests) < 0 || !requests)
                return cli_usage("bench", "--requests wants 1..%llu", BENCH_REQUESTS_MAX);
            break;
        case 'b':
            if (ss_parse_u64(optarg, 0, SS_KEYS_PER_REQUEST_DEFAULT, &batch) < 0 || !batch)
                return cli_usage("bench", "--batch wants 1..%u",
                                 SS_KEYS_PER_REQUEST_DEFAULT);
            break;
        case 's':
            if (ss_parse_u64(optarg, 0, 16u << 20, &state_bytes) < 0 || !state_bytes ||
                state_bytes % 4)
                return cli_usage("bench", "--state-bytes wants a multiple of 4 "
                                          "up to 16 MiB");
            break;
        case 'k':
            if (ss_parse_u64(optarg, 0, 100000000ull, &keys) < 0 || !keys)
                return cli_usage("bench", "--keys wants 1..100000000");
            break;
        case 'S': saver = optarg; break;
        case 'K': keep = true; break;
        case 'D': direct = true; break;
        case 'j': json = true; break;
        default: return cli_usage("bench", "bad option '%s'", argv[optind - 1]);
        }
    }
    if (optind < argc)
        return cli_usage("bench", "unexpected argument '%s'", argv[optind]);
    if (keys == 0)
        keys = BENCH_KEYS_DEFAULT > clients * batch ? BENCH_KEYS_DEFAULT : clients * batch;
    if (is_save && keys < clients * batch)
        return cli_usage("bench", "--op save needs --keys >= clients * batch (%llu)",
                         (unsigned long long)(clients * batch));
    if (batch * state_bytes > SS_FRAME_MAX_DEFAULT / 2)
        return cli_usage("bench", "batch * state-bytes exceeds the frame limit");
    if (!saver) {
        snprintf(saver_buf, sizeof saver_buf, "bench-%ld", (long)getpid());
        saver = saver_buf;
    }
    if (requests < clients)
        clients = requests;

    b = calloc(1, sizeof *b);
    if (!b) {
        cli_error("out of memory");
        return CLI_EXIT_FAIL;
    }
    b->is_save = is_save;
    b->clients = clients;
    b->requests = requests;
    b->batch = batch;
    b->state_bytes = state_bytes;
    b->n_keys = keys;
    b->saver = saver;
    b->ctx = ctx;
    b->keys = calloc(keys, BENCH_KEY_LEN);
    b->segments = calloc(keys, sizeof *b->segments);
    b->payload = calloc(batch, state_bytes);
    b->kbuf = calloc(batch, sizeof *b->kbuf);
    b->seg_buf = calloc(batch, sizeof *b->seg_buf);
    b->conns = calloc(clients, sizeof *b->conns);
    b->lat_ns = calloc(requests, sizeof *b->lat_ns);
    if (!b->keys || !b->segments || !b->payload || !b->kbuf || !b->seg_buf || !b->conns || !b->lat_ns) {
        cli_error("out of memory");
        status = CLI_EXIT_FAIL;
        goto out;
    }
    for (size_t i = 0; i < keys; i++)
        snprintf(b->keys + i * BENCH_KEY_LEN, BENCH_KEY_LEN, "bench-key-%012zu", i);
    for (size_t i = 0; i < batch * state_bytes / 4; i++)
        b->payload[i] = (float)(i % 997) * 0.01f;
    if ((status = cli_cluster(ctx, &c)) != CLI_EXIT_OK)
        goto out;
    b->cl = direct ? NULL : c;
    b->direct = ss_cluster_shard_address(c, 0);
    b->n_shards = direct ? 1 : ss_cluster_shards(c);
    if ((status = plan(b, b->cl)) != CLI_EXIT_OK)
        goto out;
    if ((status = setup(b, c)) != CLI_EXIT_OK)
        goto drop;
    struct rusage ru0, ru1;
    getrusage(RUSAGE_SELF, &ru0);
    if ((status = run_loop(b)) == CLI_EXIT_OK) {
        getrusage(RUSAGE_SELF, &ru1);
        double cpu = (double)(ru1.ru_utime.tv_sec - ru0.ru_utime.tv_sec) +
                     (double)(ru1.ru_stime.tv_sec - ru0.ru_stime.tv_sec) +
                     (double)(ru1.ru_utime.tv_usec - ru0.ru_utime.tv_usec) / 1e6 +
                     (double)(ru1.ru_stime.tv_usec - ru0.ru_stime.tv_usec) / 1e6;
        if (b->misrouted) {
            cli_error("bench: %llu keys were routed to a shard that does not own them",
                      (unsigned long long)b->misrouted);
            status = CLI_EXIT_FAIL;
        } else {
            status = report(b, json, cpu);
        }
    }
drop:
    if (!keep) {
        int rc = ss_cluster_drop(c, saver, NULL, 0, true, NULL);
        if (rc < 0 && status == CLI_EXIT_OK)
            status = cli_cfail(c, "bench: drop", rc);
    }
out:
    ss_cluster_close(c);
    if (b) {
        for (size_t i = 0; b->conns && i < b->clients; i++) {
            free(b->conns[i].own);
            free(b->conns[i].rbuf);
            free(b->conns[i].wbuf);
        }
        free(b->conns);
        for (size_t s = 0; b->shard_keys && s < b->n_shards; s++)
            free(b->shard_keys[s]);
        free(b->shard_keys);
        free(b->n_shard_keys);
        free(b->addrs);
        free(b->lat_ns);
        free(b->kbuf);
        free(b->seg_buf);
        free(b->payload);
        free(b->segments);
        free(b->keys);
        free(b);
    }
    return status;
}
