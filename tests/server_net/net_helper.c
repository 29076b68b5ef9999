/* net_helper -- run the real statesaver-server and talk raw frames to it. */
#include "net_helper.h"

#include <check.h>
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define START_TIMEOUT_MS 15000
#define CONNECT_TIMEOUT_MS 5000
#define MAX_ARGS 64

uint64_t tnow_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

void tsrv_init(tsrv *s)
{
    memset(s, 0, sizeof *s);
    const char *tmp = getenv("TMPDIR");
    snprintf(s->root, sizeof s->root, "%s/ss-net-XXXXXX", tmp ? tmp : "/tmp");
    ck_assert_msg(mkdtemp(s->root) != NULL, "mkdtemp: %s", strerror(errno));
    snprintf(s->data, sizeof s->data, "%s/data", s->root);
    snprintf(s->log, sizeof s->log, "%s/server.log", s->root);
    snprintf(s->portfile, sizeof s->portfile, "%s/port", s->root);
}

static const char *server_binary(void)
{
    static char path[1024];
    const char *env = getenv("SS_SERVER_BIN");
    if (env)
        return env;
    const char *root = getenv("SS_BUILD_ROOT");
    snprintf(path, sizeof path, "%s/server/statesaver-server",
             root ? root : ".");
    return path;
}

void tsrv_dump_log(const tsrv *s)
{
    FILE *f = fopen(s->log, "r");
    if (!f)
        return;
    char line[1024];
    fprintf(stderr, "---- server log %s ----\n", s->log);
    while (fgets(line, sizeof line, f))
        fputs(line, stderr);
    fprintf(stderr, "---- end of server log ----\n");
    fclose(f);
}

void tsrv_start(tsrv *s, const char *const *extra)
{
    const char *argv[MAX_ARGS];
    size_t n = 0;
    argv[n++] = server_binary();
    argv[n++] = "--listen";
    argv[n++] = "127.0.0.1:0";
    argv[n++] = "--data";
    argv[n++] = s->data;
    argv[n++] = "--port-file";
    argv[n++] = s->portfile;
    for (size_t i = 0; extra && extra[i] && n < MAX_ARGS - 1; i++)
        argv[n++] = extra[i];
    argv[n] = NULL;
    unlink(s->portfile);
    fflush(NULL);
    pid_t pid = fork();
    ck_assert_msg(pid >= 0, "fork: %s", strerror(errno));
    if (pid == 0) {
        int fd = open(s->log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            dup2(fd, 2);
            close(fd);
        }
        execv(argv[0], (char *const *)argv);
        fprintf(stderr, "exec %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    s->pid = pid;
    uint64_t deadline = tnow_ms() + START_TIMEOUT_MS;
    while (tnow_ms() < deadline) {
        FILE *f = fopen(s->portfile, "r");
        if (f) {
            int port = 0;
            int ok = fscanf(f, "%d", &port);
            fclose(f);
            if (ok == 1 && port > 0) {
                s->port = port;
                return;
            }
        }
        int status;
        if (waitpid(pid, &status, WNOHANG) == pid) {
            s->pid = 0;
            tsrv_dump_log(s);
            ck_abort_msg("server exited during start (status %d)", status);
        }
        sleep_ms(10);
    }
    tsrv_dump_log(s);
    ck_abort_msg("server did not write its port file within %d ms",
                 START_TIMEOUT_MS);
}

int tsrv_stop(tsrv *s, int sig, int timeout_ms)
{
    if (s->pid <= 0)
        return -1;
    kill(s->pid, sig);
    uint64_t deadline = tnow_ms() + (uint64_t)timeout_ms;
    int status = 0;
    for (;;) {
        pid_t r = waitpid(s->pid, &status, WNOHANG);
        if (r == s->pid)
            break;
        if (tnow_ms() >= deadline) {
            kill(s->pid, SIGKILL);
            waitpid(s->pid, &status, 0);
            s->pid = 0;
            return -1;
        }
        sleep_ms(5);
    }
    s->pid = 0;
    if (WIFEXITED(status))
        return WEXITSTATUS(status);
    if (WIFSIGNALED(status))
        return 128 + WTERMSIG(status);
    return -1;
}

static int rm_tree(const char *path)
{
    char cmd[600];
    /* Paths come from mkdtemp under TMPDIR: no quoting issues. */
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", path);
    return system(cmd);
}

void tsrv_cleanup(tsrv *s)
{
    if (s->pid > 0)
        tsrv_stop(s, SIGKILL, 5000);
    if (s->root[0])
        rm_tree(s->root);
    s->root[0] = '\0';
}

/* ---- sockets ---- */

int tc_connect(int port)
{
    return tc_connect_host("127.0.0.1", port);
}

int tc_connect_host(const char *host, int port)
{
    struct sockaddr_storage sa;
    socklen_t salen;
    memset(&sa, 0, sizeof sa);
    if (strchr(host, ':')) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&sa;
        a->sin6_family = AF_INET6;
        a->sin6_port = htons((uint16_t)port);
        if (inet_pton(AF_INET6, host, &a->sin6_addr) != 1)
            return -1;
        salen = sizeof *a;
    } else {
        struct sockaddr_in *a = (struct sockaddr_in *)&sa;
        a->sin_family = AF_INET;
        a->sin_port = htons((uint16_t)port);
        if (inet_pton(AF_INET, host, &a->sin_addr) != 1)
            return -1;
        salen = sizeof *a;
    }
    int fd = socket(sa.ss_family, SOCK_STREAM, 0);
    if (fd < 0)
        return -1;
    int fl = fcntl(fd, F_GETFL);
    fcntl(fd, F_SETFL, fl | O_NONBLOCK);
    int rc = connect(fd, (struct sockaddr *)&sa, salen);
    if (rc < 0 && errno != EINPROGRESS) {
        close(fd);
        return -1;
    }
    if (rc < 0) {
        struct pollfd p = {fd, POLLOUT, 0};
        int err = 0;
        socklen_t el = sizeof err;
        if (poll(&p, 1, CONNECT_TIMEOUT_MS) != 1 ||
            getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el) < 0 || err) {
            close(fd);
            return -1;
        }
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

int tc_write_all(int fd, const void *buf, size_t len, int timeout_ms)
{
    const uint8_t *p = buf;
    uint64_t deadline = tnow_ms() + (uint64_t)timeout_ms;
    while (len > 0) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
        if (n > 0) {
            p += n;
            len -= (size_t)n;
            continue;
        }
        if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
            return -1;
        uint64_t now = tnow_ms();
        if (now >= deadline)
            return -1;
        struct pollfd pf = {fd, POLLOUT, 0};
        poll(&pf, 1, (int)(deadline - now));
    }
    return 0;
}

static void tbuf_reserve(tbuf *b, size_t extra)
{
    if (b->len + extra <= b->cap)
        return;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + extra)
        cap *= 2;
    b->data = realloc(b->data, cap);
    ck_assert_ptr_nonnull(b->data);
    b->cap = cap;
}

void tbuf_append(tbuf *b, const void *data, size_t len)
{
    tbuf_reserve(b, len);
    memcpy(b->data + b->len, data, len);
    b->len += len;
}

void tbuf_free(tbuf *b)
{
    free(b->data);
    memset(b, 0, sizeof *b);
}

void tc_frame_append(tbuf *b, const treq *r)
{
    size_t n = statesaver__v1__request__get_packed_size(r);
    tbuf_reserve(b, 4 + n);
    uint8_t *p = b->data + b->len;
    p[0] = (uint8_t)(n >> 24);
    p[1] = (uint8_t)(n >> 16);
    p[2] = (uint8_t)(n >> 8);
    p[3] = (uint8_t)n;
    statesaver__v1__request__pack(r, p + 4);
    b->len += 4 + n;
}

int tc_send(int fd, const treq *r)
{
    tbuf b = {NULL, 0, 0};
    tc_frame_append(&b, r);
    int rc = tc_write_all(fd, b.data, b.len, 10000);
    tbuf_free(&b);
    return rc;
}

/* Read exactly len bytes. 0 ok, -1 timeout/error, -2 EOF. */
static int read_exact(int fd, uint8_t *buf, size_t len, uint64_t deadline)
{
    while (len > 0) {
        ssize_t n = recv(fd, buf, len, 0);
        if (n > 0) {
            buf += n;
            len -= (size_t)n;
            continue;
        }
        if (n == 0)
            return -2;
        if (errno == ECONNRESET)
            return -2;
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
            return -1;
        uint64_t now = tnow_ms();
        if (now >= deadline)
            return -1;
        struct pollfd pf = {fd, POLLIN, 0};
        poll(&pf, 1, (int)(deadline - now));
    }
    return 0;
}

tresp *tc_recv(int fd, int timeout_ms, bool *eof)
{
    uint64_t deadline = tnow_ms() + (uint64_t)timeout_ms;
    uint8_t hdr[4];
    if (eof)
        *eof = false;
    int rc = read_exact(fd, hdr, 4, deadline);
    if (rc < 0) {
        if (eof)
            *eof = rc == -2;
        return NULL;
    }
    uint32_t n = ((uint32_t)hdr[0] << 24) | ((uint32_t)hdr[1] << 16) |
                 ((uint32_t)hdr[2] << 8) | hdr[3];
    if (n > (256u << 20))
        return NULL;
    uint8_t *body = malloc(n ? n : 1);
    ck_assert_ptr_nonnull(body);
    rc = read_exact(fd, body, n, deadline);
    if (rc < 0) {
        if (eof)
            *eof = rc == -2;
        free(body);
        return NULL;
    }
    tresp *r = statesaver__v1__response__unpack(NULL, n, body);
    free(body);
    return r;
}

tresp *tc_call(int fd, const treq *r, int timeout_ms)
{
    if (tc_send(fd, r) < 0)
        return NULL;
    return tc_recv(fd, timeout_ms, NULL);
}

bool tc_wait_closed(int fd, int timeout_ms)
{
    uint64_t deadline = tnow_ms() + (uint64_t)timeout_ms;
    uint8_t buf[4096];
    for (;;) {
        ssize_t n = recv(fd, buf, sizeof buf, 0);
        if (n == 0)
            return true;
        if (n < 0 && errno == ECONNRESET)
            return true;
        if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
            return true;
        uint64_t now = tnow_ms();
        if (now >= deadline)
            return false;
        if (n < 0) {
            struct pollfd pf = {fd, POLLIN, 0};
            poll(&pf, 1, (int)(deadline - now));
        }
    }
}

void tresp_free(tresp *r)
{
    if (r)
        statesaver__v1__response__free_unpacked(r, NULL);
}

int tresp_code(const tresp *r)
{
    if (!r)
        return -1;
    return r->status ? (int)r->status->code : 0;
}

/* ---- request builders ----
 * Every piece a builder allocates is recorded in the request's arena and
 * freed by treq_free, so the message needs no knowledge of protobuf-c's
 * own freeing rules. */

#define ARENA_MAX 4096

typedef struct treq_box {
    treq r;               /* the message (first member) */
    void *allocs[ARENA_MAX]; /* owned allocations */
    size_t n;             /* used */
} treq_box;

static void *talloc(treq *r, size_t size)
{
    treq_box *b = (treq_box *)r;
    ck_assert_uint_lt(b->n, ARENA_MAX);
    void *p = calloc(1, size ? size : 1);
    ck_assert_ptr_nonnull(p);
    b->allocs[b->n++] = p;
    return p;
}

static char *tstrdup(treq *r, const char *s)
{
    size_t n = strlen(s) + 1;
    char *p = talloc(r, n);
    memcpy(p, s, n);
    return p;
}

treq *treq_new(uint64_t id)
{
    treq_box *b = calloc(1, sizeof *b);
    ck_assert_ptr_nonnull(b);
    statesaver__v1__request__init(&b->r);
    b->r.id = id;
    return &b->r;
}

void treq_free(treq *r)
{
    if (!r)
        return;
    treq_box *b = (treq_box *)r;
    for (size_t i = 0; i < b->n; i++)
        free(b->allocs[i]);
    free(b);
}

treq *treq_hello(uint64_t id, const char *token)
{
    treq *r = treq_new(id);
    Statesaver__V1__HelloRequest *h = talloc(r, sizeof *h);
    statesaver__v1__hello_request__init(h);
    if (token) {
        h->token.len = strlen(token);
        h->token.data = (uint8_t *)tstrdup(r, token);
    }
    h->client = tstrdup(r, "server_net test");
    r->body_case = STATESAVER__V1__REQUEST__BODY_HELLO;
    r->hello = h;
    return r;
}

treq *treq_ping(uint64_t id, const void *payload, size_t len)
{
    treq *r = treq_new(id);
    Statesaver__V1__PingRequest *p = talloc(r, sizeof *p);
    statesaver__v1__ping_request__init(p);
    if (len) {
        p->payload.data = talloc(r, len);
        memcpy(p->payload.data, payload, len);
        p->payload.len = len;
    }
    r->body_case = STATESAVER__V1__REQUEST__BODY_PING;
    r->ping = p;
    return r;
}

treq *treq_declare(uint64_t id, const char *saver, size_t n,
                   const char *const *names, const int64_t *dims)
{
    treq *r = treq_new(id);
    Statesaver__V1__DeclareRequest *d = talloc(r, sizeof *d);
    statesaver__v1__declare_request__init(d);
    d->saver = tstrdup(r, saver);
    d->n_states = n;
    d->states = talloc(r, n * sizeof *d->states);
    for (size_t i = 0; i < n; i++) {
        Statesaver__V1__StateSpec *sp = talloc(r, sizeof *sp);
        statesaver__v1__state_spec__init(sp);
        sp->name = tstrdup(r, names[i]);
        sp->dtype = STATESAVER__V1__DTYPE__DT_FLOAT32;
        sp->n_shape = 1;
        sp->shape = talloc(r, sizeof(int64_t));
        sp->shape[0] = dims[i];
        d->states[i] = sp;
    }
    r->body_case = STATESAVER__V1__REQUEST__BODY_DECLARE;
    r->declare = d;
    return r;
}

static ProtobufCBinaryData *keys_copy(treq *r, size_t n,
                                      const char *const *keys)
{
    ProtobufCBinaryData *k = talloc(r, n * sizeof *k);
    for (size_t i = 0; i < n; i++) {
        k[i].len = strlen(keys[i]);
        k[i].data = (uint8_t *)tstrdup(r, keys[i]);
    }
    return k;
}

treq *treq_fetch(uint64_t id, const char *saver, size_t n,
                 const char *const *keys, uint64_t min_segment,
                 uint32_t wait_ms)
{
    treq *r = treq_new(id);
    Statesaver__V1__FetchRequest *f = talloc(r, sizeof *f);
    statesaver__v1__fetch_request__init(f);
    f->saver = tstrdup(r, saver);
    f->n_keys = n;
    f->keys = keys_copy(r, n, keys);
    f->min_segment = min_segment;
    f->wait_ms = wait_ms;
    r->body_case = STATESAVER__V1__REQUEST__BODY_FETCH;
    r->fetch = f;
    return r;
}

void treq_save_add_tensor(treq *r, int dtype, size_t rank,
                          const int64_t *shape, const void *data, size_t len)
{
    Statesaver__V1__SaveRequest *s = r->save;
    Statesaver__V1__Tensor **old = s->states;
    s->states = talloc(r, (s->n_states + 1) * sizeof *s->states);
    if (s->n_states)
        memcpy(s->states, old, s->n_states * sizeof *s->states);
    Statesaver__V1__Tensor *t = talloc(r, sizeof *t);
    statesaver__v1__tensor__init(t);
    t->dtype = dtype;
    t->n_shape = rank;
    t->shape = talloc(r, (rank ? rank : 1) * sizeof(int64_t));
    memcpy(t->shape, shape, rank * sizeof(int64_t));
    t->data.len = len;
    t->data.data = talloc(r, len);
    memcpy(t->data.data, data, len);
    s->states[s->n_states++] = t;
}

treq *treq_save(uint64_t id, const char *saver, size_t n,
                const char *const *keys, const uint64_t *segs,
                size_t n_states, const int64_t *dims, float base)
{
    treq *r = treq_new(id);
    Statesaver__V1__SaveRequest *s = talloc(r, sizeof *s);
    statesaver__v1__save_request__init(s);
    s->saver = tstrdup(r, saver);
    s->n_keys = n;
    s->keys = keys_copy(r, n, keys);
    s->n_segment = n;
    s->segment = talloc(r, n * sizeof(uint64_t));
    memcpy(s->segment, segs, n * sizeof(uint64_t));
    r->body_case = STATESAVER__V1__REQUEST__BODY_SAVE;
    r->save = s;
    for (size_t i = 0; i < n_states; i++) {
        size_t cnt = n * (size_t)dims[i];
        float *v = malloc(cnt * sizeof(float) + 1);
        ck_assert_ptr_nonnull(v);
        for (size_t k = 0; k < n; k++)
            for (int64_t j = 0; j < dims[i]; j++)
                v[k * (size_t)dims[i] + (size_t)j] =
                    base + (float)k * 100.0f + (float)i * 10.0f + (float)j;
        int64_t shape[2] = {(int64_t)n, dims[i]};
        treq_save_add_tensor(r, STATESAVER__V1__DTYPE__DT_FLOAT32, 2, shape, v,
                             cnt * sizeof(float));
        free(v);
    }
    return r;
}
