/* fuzz_handlers -- libFuzzer harness for every request handler of
 * statesaver-server against a real store (LMDB in a temporary directory).
 *
 * How: the real server runs in this process. LLVMFuzzerInitialize creates
 * it with ss_server_create (server/server.h) on an ephemeral 127.0.0.1
 * port and runs ss_server_run on a thread of its own; each input is sent
 * over a fresh TCP connection, exactly as a client would. This drives the
 * handlers through the same path as production (conn -> frame -> dispatch
 * -> handler -> writer -> reply) without depending on the server's internal
 * module boundaries, which are free to change.
 *
 * Input: one mode byte (bit 0: pipelined), then records, each a 2-byte
 * little-endian length and that many bytes of a Request payload (at most
 * FUZZ_REQUESTS per input). A payload that unpacks is re-packed with
 * id = its position + 1, its waits shortened (wait_ms below
 * FUZZ_WAIT_MS_MAX, lease_ms below FUZZ_LEASE_MS_MAX, so parked requests,
 * lease expiry and a close with requests parked happen within
 * milliseconds) and its saver name prefixed with "f<input number>." (so
 * inputs are independent of one another); one that does not unpack is sent
 * as it is (the server must refuse it and close). Pipelined, all frames
 * are written at once; otherwise one at a time, each after the previous
 * reply, and a Complete with lease_id 0 then carries the lease id of the
 * last Lease reply (so Complete reaches past the lease check). After the
 * input, the savers it named are dropped (keeps the store small).
 * SS_FUZZ_VERBOSE=1 prints every reply (to check what a seed reaches).
 *
 * Checked: every request is answered exactly once, by a Response that
 * unpacks, carries a status with a known code and the id of a request in
 * flight (0 only for a connection-level refusal, after which the server
 * closes); nothing is answered within FUZZ_REPLY_MS is a hang (abort).
 * The server and its store live for the whole run (global counters, TTL
 * sweeps and the queue's capacity are shared by all inputs, as in a
 * long-lived server); ASan/UBSan watch the server thread too. The output
 * limit (default 64 MiB) exceeds FUZZ_REQUESTS replies of FUZZ_FRAME_MAX,
 * so it never closes a connection here. At exit the server shuts
 * down gracefully and is freed, so LSan checks it for leaks.
 */
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <ftw.h>
#include <uv.h>

#include "config.h"
#include "dispatch.h"
#include "server.h"
#include "ss_frame.h"
#include "ss_log.h"
#include "statesaver.pb-c.h"

#define FUZZ_REQUESTS 32          /* requests per input */
#define FUZZ_WAIT_MS_MAX 16u      /* wait_ms is taken modulo this */
#define FUZZ_LEASE_MS_MAX 64u     /* lease_ms is taken modulo this */
#define FUZZ_REPLY_MS 10000       /* longest wait for all replies */
#define FUZZ_FRAME_MAX (1u << 20) /* server's --max-frame-bytes here */
#define FUZZ_MAP_SIZE (256ull << 20) /* server's --map-size here */

static ss_server *g_srv;       /* the in-process server */
static ss_dispatch *g_dispatch; /* its request layer (handlers) */
static pthread_t g_thread;     /* runs ss_server_run */
static uv_async_t g_stop;      /* wakes the loop to shut down */
static int g_port;             /* the port it listens on */
static char g_dir[PATH_MAX];   /* temporary directory of the store */
static bool g_verbose;         /* SS_FUZZ_VERBOSE set: print every reply */

static void on_stop(uv_async_t *h)
{
    ss_server_shutdown(g_srv);
    uv_close((uv_handle_t *)h, NULL);
}

static void *run_server(void *arg)
{
    (void)arg;
    if (ss_server_run(g_srv) != 0)
        fprintf(stderr, "fuzz_handlers: ss_server_run failed\n");
    return NULL;
}

static int rm_entry(const char *path, const struct stat *sb, int flag,
                    struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void stop_server(void)
{
    uv_async_send(&g_stop);
    pthread_join(g_thread, NULL);
    ss_dispatch_free(g_dispatch);
    g_dispatch = NULL;
    ss_server_free(g_srv);
    g_srv = NULL;
    nftw(g_dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    signal(SIGPIPE, SIG_IGN);
    g_verbose = getenv("SS_FUZZ_VERBOSE") != NULL;
    const char *tmp = getenv("TMPDIR");
    snprintf(g_dir, sizeof g_dir, "%s/ss-fuzz-handlers.XXXXXX",
             tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(g_dir))
        abort();
    ss_config cfg;
    ss_config_init(&cfg);
    cfg.port = 0;
    cfg.sync = false; /* no fsync: the harness tests logic, not durability */
    cfg.map_size = FUZZ_MAP_SIZE;
    cfg.max_frame_bytes = FUZZ_FRAME_MAX;
    cfg.log_level = SS_LOG_ERROR;
    cfg.ttl_interval_ms = 20; /* idle-TTL eviction runs during fuzzing */
    size_t dl = strlen(g_dir) + sizeof "/data";
    cfg.data_dir = malloc(dl);
    if (!cfg.data_dir)
        abort();
    snprintf(cfg.data_dir, dl, "%s/data", g_dir);
    ss_log_set_component("fuzz-server");
    /* As main.c wires it: the core, the request layer, then listening. */
    if (ss_server_create(&g_srv, &cfg) != 0 || ss_dispatch_new(&g_dispatch, g_srv) != 0 ||
        ss_server_start(g_srv) != 0) {
        fprintf(stderr, "fuzz_handlers: cannot start the server in %s\n", g_dir);
        abort();
    }
    ss_config_clear(&cfg);
    g_port = ss_server_port(g_srv);
    if (uv_async_init(ss_server_loop(g_srv), &g_stop, on_stop) != 0 ||
        pthread_create(&g_thread, NULL, run_server, NULL) != 0)
        abort();
    atexit(stop_server);
    return 0;
}

/* ---- one input ---- */

typedef struct out_buf {
    uint8_t *data; /* frames to send */
    size_t len;    /* bytes used */
    size_t cap;    /* bytes allocated */
} out_buf;

static void out_put(out_buf *o, const uint8_t *p, size_t n)
{
    if (o->len + n > o->cap) {
        size_t cap = o->cap ? o->cap : 4096;
        while (cap < o->len + n)
            cap *= 2;
        o->data = realloc(o->data, cap);
        if (!o->data)
            abort();
        o->cap = cap;
    }
    memcpy(o->data + o->len, p, n);
    o->len += n;
}

static void out_frame(out_buf *o, const uint8_t *payload, size_t n)
{
    uint8_t hdr[SS_FRAME_HEADER];
    ss_frame_put_header(hdr, (uint32_t)n);
    out_put(o, hdr, sizeof hdr);
    out_put(o, payload, n);
}

static void out_request(out_buf *o, const Statesaver__V1__Request *m)
{
    size_t plen = statesaver__v1__request__get_packed_size(m);
    uint8_t *buf = malloc(plen ? plen : 1);
    if (!buf)
        abort();
    statesaver__v1__request__pack(m, buf);
    out_frame(o, buf, plen);
    free(buf);
}

/* Shorten every wait and lease so the input finishes in milliseconds. */
static void shorten_waits(Statesaver__V1__Request *m)
{
    switch (m->body_case) {
    case STATESAVER__V1__REQUEST__BODY_FETCH:
        m->fetch->wait_ms %= FUZZ_WAIT_MS_MAX;
        break;
    case STATESAVER__V1__REQUEST__BODY_LEASE:
        m->lease->wait_ms %= FUZZ_WAIT_MS_MAX;
        m->lease->lease_ms %= FUZZ_LEASE_MS_MAX;
        break;
    case STATESAVER__V1__REQUEST__BODY_AWAIT_SEGMENT:
        m->await_segment->wait_ms %= FUZZ_WAIT_MS_MAX;
        break;
    default:
        break;
    }
}

/* The saver field of a request body, or NULL (Hello, Ping). */
static char **saver_field(Statesaver__V1__Request *m)
{
    switch (m->body_case) {
    case STATESAVER__V1__REQUEST__BODY_DECLARE: return &m->declare->saver;
    case STATESAVER__V1__REQUEST__BODY_FETCH: return &m->fetch->saver;
    case STATESAVER__V1__REQUEST__BODY_SAVE: return &m->save->saver;
    case STATESAVER__V1__REQUEST__BODY_DROP: return &m->drop->saver;
    case STATESAVER__V1__REQUEST__BODY_LIST: return &m->list->saver;
    case STATESAVER__V1__REQUEST__BODY_STATS: return &m->stats->saver;
    case STATESAVER__V1__REQUEST__BODY_SUBMIT: return &m->submit->saver;
    case STATESAVER__V1__REQUEST__BODY_LEASE: return &m->lease->saver;
    case STATESAVER__V1__REQUEST__BODY_COMPLETE: return &m->complete->saver;
    case STATESAVER__V1__REQUEST__BODY_AWAIT_SEGMENT: return &m->await_segment->saver;
    default: return NULL;
    }
}

#define FUZZ_NS_MAX 32u /* bytes of the per-input saver name prefix */

/* One request of the input's script. */
typedef struct entry {
    Statesaver__V1__Request *msg; /* unpacked, or NULL: sent raw */
    const uint8_t *raw;           /* the payload as in the input */
    size_t raw_len;               /* its bytes */
    char *orig_saver;             /* saver pointer unpack made (restored) */
    char *ns_saver;               /* the namespaced name sent (owned) */
} entry;

typedef struct script {
    bool pipelined;               /* all frames at once, else one by one */
    size_t n;                     /* entries used */
    entry e[FUZZ_REQUESTS];       /* the requests */
} script;

static uint64_t g_inputs; /* inputs run: the saver namespace of the next */

/* Parse the input: byte 0 holds the mode (bit 0: pipelined), then records
 * of a 2-byte little-endian length and a Request payload. A payload that
 * does not unpack ends the script (the server closes after refusing it).
 * Every non-empty saver name gets the prefix "f<input number>." so inputs
 * do not see one another's savers, sequences and jobs. */
static void parse(const uint8_t *data, size_t size, script *sc)
{
    memset(sc, 0, sizeof *sc);
    if (size == 0)
        return;
    sc->pipelined = data[0] & 1u;
    char ns[FUZZ_NS_MAX];
    snprintf(ns, sizeof ns, "f%llu.", (unsigned long long)g_inputs++);
    size_t pos = 1;
    while (sc->n < FUZZ_REQUESTS && size - pos >= 2) {
        size_t len = (size_t)data[pos] | ((size_t)data[pos + 1] << 8);
        pos += 2;
        if (len > size - pos)
            len = size - pos;
        entry *e = &sc->e[sc->n++];
        e->raw = data + pos;
        e->raw_len = len;
        pos += len;
        e->msg = statesaver__v1__request__unpack(NULL, len, e->raw);
        if (!e->msg)
            break;
        shorten_waits(e->msg);
        char **sv = saver_field(e->msg);
        if (sv && *sv && **sv) {
            size_t n = strlen(ns) + strlen(*sv) + 1;
            e->ns_saver = malloc(n);
            if (!e->ns_saver)
                abort();
            snprintf(e->ns_saver, n, "%s%s", ns, *sv);
            e->orig_saver = *sv;
            *sv = e->ns_saver;
        }
    }
}

static void script_free(script *sc)
{
    for (size_t i = 0; i < sc->n; i++) {
        entry *e = &sc->e[i];
        if (e->msg) {
            if (e->ns_saver)
                *saver_field(e->msg) = e->orig_saver;
            statesaver__v1__request__free_unpacked(e->msg, NULL);
        }
        free(e->ns_saver);
    }
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* One client connection and what came back on it. */
typedef struct peer {
    int fd;                       /* the socket */
    uint8_t *in;                  /* bytes received, not yet framed */
    size_t in_len;                /* bytes in `in` */
    size_t in_cap;                /* bytes allocated */
    bool closed;                  /* the server closed (EOF or error) */
    bool saw_refusal;             /* a reply with id 0 came */
    bool saw_error;               /* a reply with a non-OK status came */
    size_t sent;                  /* requests sent with an id (1..sent) */
    size_t got;                   /* of them, answered */
    bool answered[FUZZ_REQUESTS + 1]; /* by id */
    uint64_t last_lease;          /* lease_id of the last OK Lease reply */
} peer;

static void peer_open(peer *p)
{
    memset(p, 0, sizeof *p);
    p->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (p->fd < 0)
        abort();
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)g_port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(p->fd, (struct sockaddr *)&a, sizeof a) != 0) {
        fprintf(stderr, "fuzz_handlers: cannot connect to the server: %s\n",
                strerror(errno));
        abort();
    }
    int one = 1;
    setsockopt(p->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    p->in_cap = 1 << 16;
    p->in = malloc(p->in_cap);
    if (!p->in)
        abort();
}

static void peer_close(peer *p)
{
    close(p->fd);
    free(p->in);
}

/* Check one Response payload against what is in flight on p. */
static void on_response(peer *p, const uint8_t *payload, size_t n)
{
    Statesaver__V1__Response *r = statesaver__v1__response__unpack(NULL, n, payload);
    if (!r) {
        fprintf(stderr, "fuzz_handlers: a reply does not unpack as a Response\n");
        abort();
    }
    uint64_t id = r->id;
    int code = r->status ? (int)r->status->code : 0;
    bool twice = id > 0 && id <= p->sent && p->answered[id];
    if (id > p->sent || twice ||
        !protobuf_c_enum_descriptor_get_value(&statesaver__v1__code__descriptor,
                                              code) ||
        (id == 0 && code == 0)) {
        fprintf(stderr, "fuzz_handlers: bad reply: id %llu (%zu sent)%s, code %d\n",
                (unsigned long long)id, p->sent, twice ? ", answered twice" : "",
                code);
        abort();
    }
    if (g_verbose)
        fprintf(stderr, "fuzz_handlers: reply id %llu body %d code %d %s\n",
                (unsigned long long)id, (int)r->body_case, code,
                r->status && r->status->message ? r->status->message : "");
    if (code != 0)
        p->saw_error = true;
    if (id == 0) {
        p->saw_refusal = true;
    } else {
        p->answered[id] = true;
        p->got++;
    }
    if (code == 0 && r->body_case == STATESAVER__V1__RESPONSE__BODY_LEASE &&
        r->lease->lease_id)
        p->last_lease = r->lease->lease_id;
    statesaver__v1__response__free_unpacked(r, NULL);
}

/* Send o, then read until every request sent so far is answered, a
 * refusal came (when want_refusal), or the server closed. Aborts on a
 * hang (FUZZ_REPLY_MS). */
static void exchange(peer *p, const out_buf *o, bool want_refusal)
{
    size_t off = 0;
    int64_t deadline = now_ms() + FUZZ_REPLY_MS;
    while (!p->closed && (p->got < p->sent || (want_refusal && !p->saw_refusal))) {
        struct pollfd pfd = {p->fd, POLLIN | (off < o->len ? POLLOUT : 0), 0};
        int64_t left = deadline - now_ms();
        if (left <= 0) {
            fprintf(stderr, "fuzz_handlers: %zu of %zu requests unanswered after "
                    "%d ms (hang)\n", p->sent - p->got, p->sent, FUZZ_REPLY_MS);
            abort();
        }
        if (poll(&pfd, 1, (int)left) < 0) {
            if (errno == EINTR)
                continue;
            abort();
        }
        if ((pfd.revents & POLLOUT) && off < o->len) {
            ssize_t w = send(p->fd, o->data + off, o->len - off,
                             MSG_DONTWAIT | MSG_NOSIGNAL);
            if (w > 0)
                off += (size_t)w;
            else if (w < 0 && errno != EAGAIN && errno != EINTR)
                off = o->len; /* the server closed on us: read what it said */
        }
        if (!(pfd.revents & (POLLIN | POLLHUP | POLLERR)))
            continue;
        if (p->in_len == p->in_cap) {
            p->in_cap *= 2;
            p->in = realloc(p->in, p->in_cap);
            if (!p->in)
                abort();
        }
        ssize_t r = recv(p->fd, p->in + p->in_len, p->in_cap - p->in_len, MSG_DONTWAIT);
        if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR))
            p->closed = true;
        else if (r > 0)
            p->in_len += (size_t)r;
        size_t start = 0;
        for (;;) {
            const uint8_t *payload;
            size_t plen, consumed, need;
            if (ss_frame_decode(p->in + start, p->in_len - start, SIZE_MAX, &payload,
                                &plen, &consumed, &need) != SS_FRAME_OK)
                break;
            on_response(p, payload, plen);
            start += consumed;
        }
        memmove(p->in, p->in + start, p->in_len - start);
        p->in_len -= start;
    }
}

/* Append entry i (id i + 1) to o. Sent one by one, a Complete with
 * lease_id 0 gets the lease of the last Lease reply on this connection. */
static bool put_entry(peer *p, script *sc, size_t i, out_buf *o)
{
    entry *e = &sc->e[i];
    if (!e->msg) {
        out_frame(o, e->raw, e->raw_len); /* malformed: refused, then closed */
        return true;
    }
    e->msg->id = i + 1;
    uint64_t keep = 0;
    bool swap = !sc->pipelined &&
                e->msg->body_case == STATESAVER__V1__REQUEST__BODY_COMPLETE &&
                e->msg->complete->lease_id == 0;
    if (swap) {
        keep = e->msg->complete->lease_id;
        e->msg->complete->lease_id = p->last_lease;
    }
    out_request(o, e->msg);
    if (swap)
        e->msg->complete->lease_id = keep;
    p->sent = i + 1;
    return false;
}

/* Drop every saver the input named, on a fresh connection, so the store
 * stays small over a long run. */
static void drop_savers(const script *sc)
{
    peer p;
    out_buf o = {0};
    peer_open(&p);
    for (size_t i = 0; i < sc->n && p.sent < FUZZ_REQUESTS; i++) {
        if (!sc->e[i].ns_saver)
            continue;
        bool seen = false;
        for (size_t j = 0; j < i && !seen; j++)
            seen = sc->e[j].ns_saver && strcmp(sc->e[j].ns_saver, sc->e[i].ns_saver) == 0;
        if (seen)
            continue;
        Statesaver__V1__Request m = STATESAVER__V1__REQUEST__INIT;
        Statesaver__V1__DropRequest d = STATESAVER__V1__DROP_REQUEST__INIT;
        d.saver = sc->e[i].ns_saver;
        d.all = true;
        m.id = ++p.sent;
        m.body_case = STATESAVER__V1__REQUEST__BODY_DROP;
        m.drop = &d;
        out_request(&o, &m);
    }
    if (o.len)
        exchange(&p, &o, false);
    peer_close(&p);
    free(o.data);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    script sc;
    parse(data, size, &sc);
    if (sc.n == 0) {
        script_free(&sc);
        return 0;
    }
    peer p;
    peer_open(&p);
    out_buf o = {0};
    if (sc.pipelined) {
        bool refused = false;
        for (size_t i = 0; i < sc.n; i++)
            refused = put_entry(&p, &sc, i, &o);
        exchange(&p, &o, refused);
    } else {
        for (size_t i = 0; i < sc.n && !p.closed; i++) {
            o.len = 0;
            bool refused = put_entry(&p, &sc, i, &o);
            exchange(&p, &o, refused);
        }
    }
    /* The server may close after an error reply (a refusal with id 0, a
     * failed Hello, a protocol violation): requests behind it may go
     * unanswered. A close after nothing but OK replies is a bug. */
    if (p.got < p.sent && !p.saw_refusal && !p.saw_error) {
        fprintf(stderr, "fuzz_handlers: the server closed with %zu of %zu "
                "requests unanswered and no refusal\n", p.sent - p.got, p.sent);
        abort();
    }
    peer_close(&p);
    free(o.data);
    drop_savers(&sc);
    script_free(&sc);
    return 0;
}
