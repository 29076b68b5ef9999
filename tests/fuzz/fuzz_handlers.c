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
 * Input: a sequence of records, each a 2-byte little-endian length and that
 * many bytes of a Request payload (at most FUZZ_REQUESTS per input). A
 * payload that unpacks is re-packed with id = its position + 1 and its
 * waits shortened (wait_ms to below FUZZ_WAIT_MS_MAX, lease_ms below
 * FUZZ_LEASE_MS_MAX) so parked requests, lease expiry and connection close
 * with requests parked are all reached within milliseconds; one that does
 * not unpack is sent as it is (the server must refuse it and close). All
 * frames are written at once (pipelined), then the harness reads.
 *
 * Checked: every request is answered exactly once, by a Response that
 * unpacks, carries a status with a known code and the id of a request in
 * flight (0 only for a connection-level refusal, after which the server
 * closes); nothing is answered within FUZZ_REPLY_MS is a hang (abort).
 * The store persists across inputs (state accumulates, as in a long-lived
 * server); ASan/UBSan watch the server thread too. At exit the server shuts
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
static pthread_t g_thread;     /* runs ss_server_run */
static uv_async_t g_stop;      /* wakes the loop to shut down */
static int g_port;             /* the port it listens on */
static char g_dir[PATH_MAX];   /* temporary directory of the store */

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
    if (ss_server_create(&g_srv, &cfg) != 0) {
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

/* Build the frames; returns the number of requests that expect a reply
 * with their own id, and sets *refused when a malformed frame was sent
 * last (the server answers it with id 0 and closes). */
static size_t build(const uint8_t *data, size_t size, out_buf *o, bool *refused)
{
    size_t n = 0, pos = 0;
    *refused = false;
    while (n < FUZZ_REQUESTS && size - pos >= 2) {
        size_t len = (size_t)data[pos] | ((size_t)data[pos + 1] << 8);
        pos += 2;
        if (len > size - pos)
            len = size - pos;
        const uint8_t *p = data + pos;
        pos += len;
        Statesaver__V1__Request *m = statesaver__v1__request__unpack(NULL, len, p);
        if (!m) {
            out_frame(o, p, len); /* malformed: refused, then closed */
            *refused = true;
            break;
        }
        m->id = n + 1;
        shorten_waits(m);
        size_t plen = statesaver__v1__request__get_packed_size(m);
        uint8_t *buf = malloc(plen ? plen : 1);
        if (!buf)
            abort();
        statesaver__v1__request__pack(m, buf);
        out_frame(o, buf, plen);
        free(buf);
        statesaver__v1__request__free_unpacked(m, NULL);
        n++;
    }
    return n;
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int connect_server(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        abort();
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)g_port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        fprintf(stderr, "fuzz_handlers: cannot connect to the server: %s\n",
                strerror(errno));
        abort();
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

/* Check one Response payload; returns its id. */
static uint64_t check_response(const uint8_t *p, size_t n, const bool *answered,
                               size_t expect, int *code_out)
{
    Statesaver__V1__Response *r = statesaver__v1__response__unpack(NULL, n, p);
    if (!r) {
        fprintf(stderr, "fuzz_handlers: a reply does not unpack as a Response\n");
        abort();
    }
    uint64_t id = r->id;
    int code = r->status ? (int)r->status->code : 0;
    if (id > expect || (id > 0 && answered[id - 1]) ||
        !protobuf_c_enum_descriptor_get_value(&statesaver__v1__code__descriptor,
                                              code)) {
        fprintf(stderr, "fuzz_handlers: bad reply: id %llu (of %zu, %s), code %d\n",
                (unsigned long long)id, expect,
                id > 0 && id <= expect && answered[id - 1] ? "answered twice" : "",
                code);
        abort();
    }
    if (id == 0 && code == 0) {
        fprintf(stderr, "fuzz_handlers: an OK reply with id 0\n");
        abort();
    }
    statesaver__v1__response__free_unpacked(r, NULL);
    *code_out = code;
    return id;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    out_buf o = {0};
    bool refused = false;
    size_t expect = build(data, size, &o, &refused);
    if (o.len == 0)
        return 0;
    bool answered[FUZZ_REQUESTS] = {false};
    size_t got = 0;
    bool closed = false, saw_refusal = false, saw_error = false;
    int fd = connect_server();
    size_t sent = 0, in_len = 0, in_cap = 1 << 16;
    uint8_t *in = malloc(in_cap);
    if (!in)
        abort();
    int64_t deadline = now_ms() + FUZZ_REPLY_MS;
    while (!closed && (got < expect || (refused && !saw_refusal))) {
        struct pollfd pfd = {fd, POLLIN | (sent < o.len ? POLLOUT : 0), 0};
        int64_t left = deadline - now_ms();
        if (left <= 0) {
            fprintf(stderr, "fuzz_handlers: %zu of %zu requests unanswered after "
                    "%d ms (hang)\n", expect - got, expect, FUZZ_REPLY_MS);
            abort();
        }
        if (poll(&pfd, 1, (int)left) < 0) {
            if (errno == EINTR)
                continue;
            abort();
        }
        if ((pfd.revents & POLLOUT) && sent < o.len) {
            ssize_t w = send(fd, o.data + sent, o.len - sent, MSG_DONTWAIT | MSG_NOSIGNAL);
            if (w > 0)
                sent += (size_t)w;
            else if (w < 0 && errno != EAGAIN && errno != EINTR)
                sent = o.len; /* the server closed on us: read what it said */
        }
        if (!(pfd.revents & (POLLIN | POLLHUP | POLLERR)))
            continue;
        if (in_len == in_cap) {
            in_cap *= 2;
            in = realloc(in, in_cap);
            if (!in)
                abort();
        }
        ssize_t r = recv(fd, in + in_len, in_cap - in_len, MSG_DONTWAIT);
        if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR)) {
            closed = true;
        } else if (r > 0) {
            in_len += (size_t)r;
        }
        size_t start = 0;
        for (;;) {
            const uint8_t *payload;
            size_t plen, consumed, need;
            int rc = ss_frame_decode(in + start, in_len - start, SIZE_MAX,
                                     &payload, &plen, &consumed, &need);
            if (rc != SS_FRAME_OK)
                break;
            int code = 0;
            uint64_t id = check_response(payload, plen, answered, expect, &code);
            if (code != 0)
                saw_error = true;
            if (id == 0)
                saw_refusal = true;
            else {
                answered[id - 1] = true;
                got++;
            }
            start += consumed;
        }
        memmove(in, in + start, in_len - start);
        in_len -= start;
    }
    /* The server may close after an error reply (a refusal with id 0, a
     * failed Hello, a protocol violation): requests pipelined behind it may
     * go unanswered. A close after nothing but OK replies is a bug. */
    if (got < expect && !saw_refusal && !saw_error) {
        fprintf(stderr, "fuzz_handlers: the server closed with %zu of %zu "
                "requests unanswered and no refusal\n", expect - got, expect);
        abort();
    }
    close(fd);
    free(in);
    free(o.data);
    return 0;
}
