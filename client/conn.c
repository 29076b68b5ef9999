/* conn -- libstatesaver's connection: resolve, connect with a timeout,
 * frame requests, and match responses to requests by id.
 *
 * The socket is non-blocking and every wait is a poll() bounded by the
 * call's deadline, so a dead server can never hang a caller for longer
 * than its timeout.
 */
#include "client_int.h"

#include <errno.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "ss_frame.h"
#include "ss_limits.h"

/* Receive buffer grows in steps of at least this many bytes. */
#define SS_CLIENT_RBUF_MIN (64u * 1024u)
/* Longest host name or port text accepted in "host:port". */
#define SS_CLIENT_HOST_MAX 256u
#define SS_CLIENT_PORT_MAX 32u

const char *ss_client_version(void)
{
    return SS_VERSION;
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Milliseconds left until deadline, for poll(); 0 when passed. */
static int remaining(int64_t deadline)
{
    int64_t left = deadline - now_ms();
    if (left <= 0)
        return 0;
    return left > INT_MAX ? INT_MAX : (int)left;
}

static int64_t deadline_after(int timeout_ms)
{
    return now_ms() + (timeout_ms > 0 ? timeout_ms : 0);
}

int ss_client_fail(ss_client *c, int rc, const char *fmt, ...)
{
    if (c) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(c->err, sizeof c->err, fmt, ap);
        va_end(ap);
    }
    return rc;
}

void ss_client_clear_error(ss_client *c)
{
    c->err[0] = '\0';
    c->moved = false;
}

bool ss_client_last_redirect(const ss_client *c, ss_redirect *out)
{
    if (!c || !c->moved)
        return false;
    if (out)
        *out = c->redirect;
    return true;
}

void ss_client_copy_str(char *dst, size_t size, const char *src)
{
    if (size == 0)
        return;
    snprintf(dst, size, "%s", src ? src : "");
}

const char *ss_client_last_error(const ss_client *c)
{
    return c ? c->err : "";
}

void ss_client_set_timeout(ss_client *c, int timeout_ms)
{
    if (c && timeout_ms > 0)
        c->timeout_ms = timeout_ms;
}

bool ss_client_broken(const ss_client *c)
{
    return c == NULL || c->broken;
}

void ss_client_options_init(ss_client_options *o)
{
    memset(o, 0, sizeof *o);
    o->timeout_ms = SS_CLIENT_TIMEOUT_MS_DEFAULT;
    o->connect_timeout_ms = SS_CLIENT_TIMEOUT_MS_DEFAULT;
}

/* Split "host:port", "[v6]:port", "host" or a bare IPv6 literal. */
static int split_hostport(const char *s, char *host, char *port)
{
    const char *h = s, *p = NULL;
    size_t hlen;
    if (s[0] == '[') {
        const char *end = strchr(s, ']');
        if (!end)
            return SS_ERR_INVALID;
        h = s + 1;
        hlen = (size_t)(end - h);
        if (end[1] == ':')
            p = end + 2;
        else if (end[1] != '\0')
            return SS_ERR_INVALID;
    } else {
        const char *colon = strchr(s, ':');
        if (colon && strchr(colon + 1, ':') == NULL) {
            hlen = (size_t)(colon - s);
            p = colon + 1;
        } else {
            /* No colon, or several: a bare IPv6 literal. */
            hlen = strlen(s);
        }
    }
    if (hlen == 0 || hlen >= SS_CLIENT_HOST_MAX)
        return SS_ERR_INVALID;
    memcpy(host, h, hlen);
    host[hlen] = '\0';
    if (p) {
        if (*p == '\0' || strlen(p) >= SS_CLIENT_PORT_MAX)
            return SS_ERR_INVALID;
        snprintf(port, SS_CLIENT_PORT_MAX, "%s", p);
    } else {
        snprintf(port, SS_CLIENT_PORT_MAX, "%u", SS_DEFAULT_PORT);
    }
    return 0;
}

/* Connect one address before deadline. Returns the fd, or -errno-ish:
 * on failure *why gets errno (ETIMEDOUT when the deadline passed). */
static int connect_one(const struct addrinfo *ai, int64_t deadline, int *why)
{
    int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
                    ai->ai_protocol);
    if (fd < 0) {
        *why = errno;
        return -1;
    }
    if (connect(fd, ai->ai_addr, ai->ai_addrlen) < 0) {
        if (errno != EINPROGRESS) {
            *why = errno;
            goto fail;
        }
        struct pollfd pfd = {.fd = fd, .events = POLLOUT};
        int n;
        do {
            n = poll(&pfd, 1, remaining(deadline));
        } while (n < 0 && errno == EINTR);
        if (n == 0) {
            *why = ETIMEDOUT;
            goto fail;
        }
        if (n < 0) {
            *why = errno;
            goto fail;
        }
        int soerr = 0;
        socklen_t sl = sizeof soerr;
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) < 0)
            soerr = errno;
        if (soerr != 0) {
            *why = soerr;
            goto fail;
        }
    }
    int one = 1;
    /* Requests are small and latency-bound: do not wait for Nagle. */
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
fail:
    close(fd);
    return -1;
}

static void set_err(char *err, size_t errsz, const char *msg)
{
    if (err && errsz)
        snprintf(err, errsz, "%s", msg);
}

int ss_client_open(ss_client **out, const ss_client_options *opt, char *err,
                   size_t errsz)
{
    char host[SS_CLIENT_HOST_MAX], port[SS_CLIENT_PORT_MAX], msg[512];
    struct addrinfo hints, *res = NULL;
    ss_client *c = NULL;
    int rc, fd = -1;

    *out = NULL;
    if (!opt || !opt->server) {
        set_err(err, errsz, "no server address given");
        return SS_ERR_INVALID;
    }
    if (split_hostport(opt->server, host, port) < 0) {
        snprintf(msg, sizeof msg, "bad server address '%s' (want HOST:PORT)",
                 opt->server);
        set_err(err, errsz, msg);
        return SS_ERR_INVALID;
    }
    int timeout = opt->timeout_ms > 0 ? opt->timeout_ms : SS_CLIENT_TIMEOUT_MS_DEFAULT;
    int ctimeout = opt->connect_timeout_ms > 0 ? opt->connect_timeout_ms : timeout;

    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_ADDRCONFIG;
    int gai = getaddrinfo(host, port, &hints, &res);
    if (gai != 0) {
        snprintf(msg, sizeof msg, "cannot resolve '%s': %s", opt->server,
                 gai_strerror(gai));
        set_err(err, errsz, msg);
        rc = SS_ERR_CONNECT;
        goto out;
    }
    int64_t deadline = deadline_after(ctimeout);
    int why = 0;
    for (const struct addrinfo *ai = res; ai && fd < 0; ai = ai->ai_next) {
        fd = connect_one(ai, deadline, &why);
        if (why == ETIMEDOUT)
            break;
    }
    if (fd < 0) {
        snprintf(msg, sizeof msg, "connect to %s: %s", opt->server,
                 why == ETIMEDOUT ? "timed out" : strerror(why));
        set_err(err, errsz, msg);
        rc = why == ETIMEDOUT ? SS_ERR_TIMEOUT : SS_ERR_CONNECT;
        goto out;
    }
    c = calloc(1, sizeof *c);
    if (!c) {
        set_err(err, errsz, "out of memory");
        rc = SS_ERR_NOMEM;
        goto out;
    }
    c->fd = fd;
    fd = -1;
    c->next_id = 1;
    c->timeout_ms = timeout;
    c->max_frame = opt->max_frame_bytes ? opt->max_frame_bytes : SS_FRAME_MAX_DEFAULT;
    if (opt->token) {
        rc = ss_client_hello(c, opt->token, opt->token_len, NULL);
        if (rc < 0) {
            if (err && errsz)
                snprintf(err, errsz, "hello to %s: %s", opt->server,
                         c->err[0] ? c->err : ss_strerror(rc));
            goto out;
        }
    }
    *out = c;
    c = NULL;
    rc = 0;
out:
    ss_client_close(c);
    if (fd >= 0)
        close(fd);
    if (res)
        freeaddrinfo(res);
    return rc;
}

int ss_client_connect(ss_client **out, const char *hostport, int timeout_ms)
{
    ss_client_options o;
    ss_client_options_init(&o);
    o.server = hostport;
    if (timeout_ms > 0) {
        o.timeout_ms = timeout_ms;
        o.connect_timeout_ms = timeout_ms;
    }
    return ss_client_open(out, &o, NULL, 0);
}

void ss_client_close(ss_client *c)
{
    if (!c)
        return;
    for (size_t i = 0; i < c->n_stash; i++)
        statesaver__v1__response__free_unpacked(c->stash[i], NULL);
    free(c->stash);
    free(c->outstanding);
    free(c->wbuf);
    free(c->rbuf);
    if (c->fd >= 0)
        close(c->fd);
    free(c);
}

void ss_client_response_free(struct Statesaver__V1__Response *resp)
{
    if (resp)
        statesaver__v1__response__free_unpacked(resp, NULL);
}

/* ---- bytes on the socket ---------------------------------------------- */

static int write_all(ss_client *c, const uint8_t *buf, size_t len, int64_t deadline)
{
    size_t off = 0;
    while (off < len) {
        ssize_t n = send(c->fd, buf + off, len - off, MSG_NOSIGNAL);
        if (n > 0) {
            off += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            struct pollfd pfd = {.fd = c->fd, .events = POLLOUT};
            int w = remaining(deadline);
            int p = w > 0 ? poll(&pfd, 1, w) : 0;
            if (p < 0 && errno == EINTR)
                continue;
            if (p <= 0) {
                /* A half-written frame would desynchronise the stream. */
                if (off > 0)
                    c->broken = true;
                return ss_client_fail(c, SS_ERR_TIMEOUT,
                                      "timed out sending a request");
            }
            continue;
        }
        c->broken = true;
        return ss_client_fail(c, errno == EPIPE || errno == ECONNRESET
                                     ? SS_ERR_CLOSED : SS_ERR_IO,
                              "send: %s", strerror(errno));
    }
    return 0;
}

/* Read until one whole response frame is decoded into *out. */
static int read_response(ss_client *c, int64_t deadline, ss_resp **out)
{
    for (;;) {
        const uint8_t *payload;
        size_t plen = 0, consumed = 0, need = 0;
        int rc = ss_frame_decode(c->rbuf, c->rlen, c->max_frame, &payload, &plen,
                                 &consumed, &need);
        if (rc == SS_FRAME_OK) {
            ss_resp *r = statesaver__v1__response__unpack(NULL, plen, payload);
            memmove(c->rbuf, c->rbuf + consumed, c->rlen - consumed);
            c->rlen -= consumed;
            if (!r) {
                c->broken = true;
                return ss_client_fail(c, SS_ERR_PROTO,
                                      "malformed response from the server");
            }
            *out = r;
            return 0;
        }
        if (rc < 0) {
            c->broken = true;
            return ss_client_fail(c, rc,
                                  "response frame larger than the limit (%u bytes)",
                                  c->max_frame);
        }
        if (need > c->rcap) {
            size_t cap = c->rcap ? c->rcap : SS_CLIENT_RBUF_MIN;
            while (cap < need)
                cap *= 2;
            uint8_t *nb = realloc(c->rbuf, cap);
            if (!nb)
                return ss_client_fail(c, SS_ERR_NOMEM, "out of memory");
            c->rbuf = nb;
            c->rcap = cap;
        }
        ssize_t n = recv(c->fd, c->rbuf + c->rlen, c->rcap - c->rlen, 0);
        if (n > 0) {
            c->rlen += (size_t)n;
            continue;
        }
        if (n == 0) {
            c->broken = true;
            return ss_client_fail(c, SS_ERR_CLOSED,
                                  "server closed the connection");
        }
        if (errno == EINTR)
            continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK) {
            c->broken = true;
            return ss_client_fail(c, errno == ECONNRESET ? SS_ERR_CLOSED : SS_ERR_IO,
                                  "recv: %s", strerror(errno));
        }
        struct pollfd pfd = {.fd = c->fd, .events = POLLIN};
        int w = remaining(deadline);
        int p = w > 0 ? poll(&pfd, 1, w) : 0;
        if (p < 0 && errno != EINTR) {
            c->broken = true;
            return ss_client_fail(c, SS_ERR_IO, "poll: %s", strerror(errno));
        }
        if (p == 0)
            return ss_client_fail(c, SS_ERR_TIMEOUT,
                                  "timed out waiting for the server");
    }
}

/* ---- request ids ------------------------------------------------------- */

static ssize_t find_outstanding(const ss_client *c, uint64_t id)
{
    for (size_t i = 0; i < c->n_outstanding; i++)
        if (c->outstanding[i] == id)
            return (ssize_t)i;
    return -1;
}

static void drop_outstanding(ss_client *c, size_t i)
{
    c->outstanding[i] = c->outstanding[--c->n_outstanding];
}

static int grow(void **arr, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap)
        return 0;
    size_t nc = *cap ? *cap * 2 : 8;
    while (nc < need)
        nc *= 2;
    void *na = realloc(*arr, nc * elem);
    if (!na)
        return SS_ERR_NOMEM;
    *arr = na;
    *cap = nc;
    return 0;
}

/* Turn a matched response into the caller's result. */
static int finish(ss_client *c, ss_resp *r, ss_resp **out)
{
    if (r->status && r->status->code != STATESAVER__V1__CODE__OK) {
        int code = (int)r->status->code;
        const char *m = r->status->message;
        const Statesaver__V1__Redirect *rd = r->status->redirect;
        ss_client_fail(c, SS_ERR_STATUS(code), "%s: %s",
                       ss_status_name(code),
                       m && m[0] ? m : "(no message)");
        if (code == SS_CODE_MOVED) {
            c->moved = true;
            memset(&c->redirect, 0, sizeof c->redirect);
            if (rd) {
                ss_client_copy_str(c->redirect.address, sizeof c->redirect.address,
                                   rd->address);
                ss_client_copy_str(c->redirect.shard, sizeof c->redirect.shard,
                                   rd->shard);
                c->redirect.epoch = rd->epoch;
                c->redirect.slot = rd->slot;
            }
        }
        statesaver__v1__response__free_unpacked(r, NULL);
        return SS_ERR_STATUS(code);
    }
    *out = r;
    return 0;
}

int ss_client_send(ss_client *c, struct Statesaver__V1__Request *req, uint64_t *id)
{
    ss_client_clear_error(c);
    if (c->broken)
        return ss_client_fail(c, SS_ERR_CLOSED,
                              "connection is unusable after an earlier error");
    if (grow((void **)&c->outstanding, &c->cap_outstanding, c->n_outstanding + 1,
             sizeof *c->outstanding) < 0)
        return ss_client_fail(c, SS_ERR_NOMEM, "out of memory");
    req->id = c->next_id++;
    size_t n = protobuf_c_message_get_packed_size(&req->base);
    if (n > UINT32_MAX - SS_FRAME_HEADER)
        return ss_client_fail(c, SS_ERR_TOO_BIG, "request of %zu bytes is too big", n);
    size_t total = SS_FRAME_HEADER + n;
    if (total > c->wcap) {
        uint8_t *nb = realloc(c->wbuf, total);
        if (!nb)
            return ss_client_fail(c, SS_ERR_NOMEM, "out of memory");
        c->wbuf = nb;
        c->wcap = total;
    }
    ss_frame_put_header(c->wbuf, (uint32_t)n);
    protobuf_c_message_pack(&req->base, c->wbuf + SS_FRAME_HEADER);
    int rc = write_all(c, c->wbuf, total, deadline_after(c->timeout_ms));
    if (rc < 0)
        return rc;
    c->outstanding[c->n_outstanding++] = req->id;
    if (id)
        *id = req->id;
    return 0;
}

int ss_client_recv(ss_client *c, uint64_t id, int timeout_ms,
                   struct Statesaver__V1__Response **resp)
{
    *resp = NULL;
    ss_client_clear_error(c);
    for (size_t i = 0; i < c->n_stash; i++) {
        if (c->stash[i]->id == id) {
            ss_resp *r = c->stash[i];
            c->stash[i] = c->stash[--c->n_stash];
            return finish(c, r, resp);
        }
    }
    ssize_t slot = find_outstanding(c, id);
    if (slot < 0)
        return ss_client_fail(c, SS_ERR_INVALID, "no request %llu is pending",
                              (unsigned long long)id);
    if (c->broken)
        return ss_client_fail(c, SS_ERR_CLOSED,
                              "connection is unusable after an earlier error");
    int64_t deadline = deadline_after(timeout_ms > 0 ? timeout_ms : c->timeout_ms);
    for (;;) {
        ss_resp *r = NULL;
        int rc = read_response(c, deadline, &r);
        if (rc < 0) {
            slot = find_outstanding(c, id);
            if (slot >= 0)
                drop_outstanding(c, (size_t)slot); /* abandoned */
            return rc;
        }
        if (r->id == id) {
            drop_outstanding(c, (size_t)find_outstanding(c, id));
            return finish(c, r, resp);
        }
        if (r->id == 0) {
            /* The server could not tell which request this answers (bad
             * frame, auth): it closes the connection after it. */
            c->broken = true;
            int frc = finish(c, r, resp);
            if (frc == 0) {
                statesaver__v1__response__free_unpacked(*resp, NULL);
                *resp = NULL;
                frc = ss_client_fail(c, SS_ERR_PROTO, "unexpected response id 0");
            }
            return frc;
        }
        ssize_t other = find_outstanding(c, r->id);
        if (other < 0) {
            /* Reply to an abandoned (timed out) request. */
            statesaver__v1__response__free_unpacked(r, NULL);
            continue;
        }
        if (grow((void **)&c->stash, &c->cap_stash, c->n_stash + 1,
                 sizeof *c->stash) < 0) {
            statesaver__v1__response__free_unpacked(r, NULL);
            return ss_client_fail(c, SS_ERR_NOMEM, "out of memory");
        }
        drop_outstanding(c, (size_t)other);
        c->stash[c->n_stash++] = r;
    }
}

int ss_client_call(ss_client *c, struct Statesaver__V1__Request *req,
                   uint32_t extra_wait_ms, struct Statesaver__V1__Response **resp)
{
    uint64_t id;
    *resp = NULL;
    int rc = ss_client_send(c, req, &id);
    if (rc < 0)
        return rc;
    int64_t t = (int64_t)c->timeout_ms + extra_wait_ms;
    return ss_client_recv(c, id, t > INT_MAX ? INT_MAX : (int)t, resp);
}
