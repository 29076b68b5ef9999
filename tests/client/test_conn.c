/* test_conn -- Check suite for libstatesaver's connection layer against a
 * misbehaving peer: a real TCP listener in a thread that reads the
 * client's request and answers with scripted bytes (malformed, oversized,
 * truncated, out of order, late, or never). Every case must end in a clear
 * error code within the timeout, and a stream that can no longer be
 * trusted must be marked broken.
 */
#include <check.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "ss_frame.h"
#include "statesaver.h"
#include "statesaver.pb-c.h"

enum peer_act {
    P_OK,            /* a proper Ping reply */
    P_GARBAGE,       /* a frame whose payload is not a Response */
    P_OVERSIZED,     /* a header announcing more than the client's limit */
    P_TRUNCATED,     /* half a frame, then close */
    P_CLOSE,         /* close without replying */
    P_SILENT,        /* never reply (keep the connection open) */
    P_OTHER_ID_FIRST, /* a reply to an unknown id, then the right one */
    P_ID_ZERO,       /* an error reply with id 0 (connection-level) */
    P_WRONG_BODY,    /* a Stats body for a Ping */
    P_STATUS,        /* an INTERNAL status with a message */
    P_BYTEWISE,      /* a proper reply written one byte at a time */
};

struct conn_case {
    const char *name;    /* what the peer does */
    enum peer_act act;   /* the script */
    int want;            /* expected result of ss_client_ping */
    bool broken;         /* connection must be unusable afterwards */
    const char *msg;     /* expected part of ss_client_last_error, or NULL */
};

static const struct conn_case cases[] = {
    {"proper reply", P_OK, 0, false, NULL},
    {"garbage payload", P_GARBAGE, SS_ERR_PROTO, true, "malformed"},
    {"oversized frame", P_OVERSIZED, SS_ERR_TOO_BIG, true, "limit"},
    {"truncated frame", P_TRUNCATED, SS_ERR_CLOSED, true, "closed"},
    {"close without reply", P_CLOSE, SS_ERR_CLOSED, true, "closed"},
    {"no reply", P_SILENT, SS_ERR_TIMEOUT, false, "timed out"},
    {"unknown id first", P_OTHER_ID_FIRST, 0, false, NULL},
    {"id 0 error", P_ID_ZERO, SS_ERR_STATUS(3), true, "bad frame"},
    {"wrong body", P_WRONG_BODY, SS_ERR_PROTO, false, "body"},
    {"error status", P_STATUS, SS_ERR_STATUS(13), false, "INTERNAL: boom"},
    {"reply byte by byte", P_BYTEWISE, 0, false, NULL},
};

/* Client-side limit on response frames in these tests. */
#define TEST_MAX_FRAME 4096u

struct peer {
    int lfd;            /* listening socket */
    int fd;             /* accepted connection */
    enum peer_act act;  /* script */
    pthread_t thread;   /* the peer */
};

static void send_all(int fd, const uint8_t *p, size_t n)
{
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w <= 0)
            return;
        p += w;
        n -= (size_t)w;
    }
}

static void send_resp(int fd, Statesaver__V1__Response *r, bool bytewise)
{
    uint8_t buf[1024];
    size_t n = statesaver__v1__response__pack(r, buf + 4);
    ss_frame_put_header(buf, (uint32_t)n);
    if (!bytewise) {
        send_all(fd, buf, n + 4);
        return;
    }
    for (size_t i = 0; i < n + 4; i++) {
        send_all(fd, buf + i, 1);
        usleep(1000);
    }
}

/* Read one request frame; returns its id (0 on failure). */
static uint64_t read_request(int fd)
{
    uint8_t hdr[4], body[4096];
    size_t got = 0;
    while (got < 4) {
        ssize_t n = recv(fd, hdr + got, 4 - got, 0);
        if (n <= 0)
            return 0;
        got += (size_t)n;
    }
    uint32_t len = ((uint32_t)hdr[0] << 24) | ((uint32_t)hdr[1] << 16) |
                   ((uint32_t)hdr[2] << 8) | hdr[3];
    if (len > sizeof body)
        return 0;
    got = 0;
    while (got < len) {
        ssize_t n = recv(fd, body + got, len - got, 0);
        if (n <= 0)
            return 0;
        got += (size_t)n;
    }
    Statesaver__V1__Request *req = statesaver__v1__request__unpack(NULL, len, body);
    if (!req)
        return 0;
    uint64_t id = req->id;
    statesaver__v1__request__free_unpacked(req, NULL);
    return id;
}

static void *peer_main(void *arg)
{
    struct peer *p = arg;
    p->fd = accept(p->lfd, NULL, NULL);
    if (p->fd < 0)
        return NULL;
    uint64_t id = read_request(p->fd);
    Statesaver__V1__Response r = STATESAVER__V1__RESPONSE__INIT;
    Statesaver__V1__PingResponse pr = STATESAVER__V1__PING_RESPONSE__INIT;
    Statesaver__V1__StatsResponse sr = STATESAVER__V1__STATS_RESPONSE__INIT;
    Statesaver__V1__Status st = STATESAVER__V1__STATUS__INIT;
    r.id = id;
    r.body_case = STATESAVER__V1__RESPONSE__BODY_PING;
    r.ping = &pr;
    pr.server_time_ms = 42;
    switch (p->act) {
    case P_OK:
        send_resp(p->fd, &r, false);
        break;
    case P_BYTEWISE:
        send_resp(p->fd, &r, true);
        break;
    case P_GARBAGE: {
        static const uint8_t g[] = {0, 0, 0, 3, 0xff, 0xff, 0xff};
        send_all(p->fd, g, sizeof g);
        break;
    }
    case P_OVERSIZED: {
        uint8_t h[4];
        ss_frame_put_header(h, TEST_MAX_FRAME + 1);
        send_all(p->fd, h, sizeof h);
        break;
    }
    case P_TRUNCATED: {
        static const uint8_t t[] = {0, 0, 0, 100, 8, 1, 2, 3};
        send_all(p->fd, t, sizeof t);
        shutdown(p->fd, SHUT_WR);
        break;
    }
    case P_CLOSE:
        shutdown(p->fd, SHUT_WR);
        break;
    case P_SILENT:
        break;
    case P_OTHER_ID_FIRST:
        r.id = id + 1000;
        send_resp(p->fd, &r, false);
        r.id = id;
        send_resp(p->fd, &r, false);
        break;
    case P_ID_ZERO:
        r.id = 0;
        r.body_case = STATESAVER__V1__RESPONSE__BODY__NOT_SET;
        st.code = STATESAVER__V1__CODE__INVALID_ARGUMENT;
        st.message = "bad frame";
        r.status = &st;
        send_resp(p->fd, &r, false);
        break;
    case P_WRONG_BODY:
        r.body_case = STATESAVER__V1__RESPONSE__BODY_STATS;
        r.stats = &sr;
        send_resp(p->fd, &r, false);
        break;
    case P_STATUS:
        r.body_case = STATESAVER__V1__RESPONSE__BODY__NOT_SET;
        st.code = STATESAVER__V1__CODE__INTERNAL;
        st.message = "boom";
        r.status = &st;
        send_resp(p->fd, &r, false);
        break;
    }
    return NULL;
}

START_TEST(test_peer)
{
    const struct conn_case *cc = &cases[_i];
    struct peer p = {.fd = -1, .act = cc->act};
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof sa;
    p.lfd = socket(AF_INET, SOCK_STREAM, 0);
    ck_assert_int_eq(bind(p.lfd, (struct sockaddr *)&sa, sizeof sa), 0);
    ck_assert_int_eq(listen(p.lfd, 4), 0);
    ck_assert_int_eq(getsockname(p.lfd, (struct sockaddr *)&sa, &sl), 0);
    ck_assert_int_eq(pthread_create(&p.thread, NULL, peer_main, &p), 0);

    char addr[64], err[256];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", ntohs(sa.sin_port));
    ss_client_options o;
    ss_client_options_init(&o);
    o.server = addr;
    o.timeout_ms = 300;
    o.max_frame_bytes = TEST_MAX_FRAME;
    ss_client *c = NULL;
    ck_assert_int_eq(ss_client_open(&c, &o, err, sizeof err), 0);
    uint64_t t = 0;
    int rc = ss_client_ping(c, &t);
    ck_assert_msg(rc == cc->want, "%s: got %d (%s: %s), want %d", cc->name, rc,
                  ss_strerror(rc), ss_client_last_error(c), cc->want);
    if (rc == 0)
        ck_assert_uint_eq(t, 42);
    if (cc->msg)
        ck_assert_msg(strstr(ss_client_last_error(c), cc->msg) != NULL,
                      "%s: message '%s' lacks '%s'", cc->name, ss_client_last_error(c),
                      cc->msg);
    ck_assert_msg(ss_client_broken(c) == cc->broken, "%s: broken=%d", cc->name,
                  ss_client_broken(c));
    if (cc->broken)
        ck_assert_int_eq(ss_client_ping(c, NULL), SS_ERR_CLOSED);
    pthread_join(p.thread, NULL);
    ss_client_close(c);
    if (p.fd >= 0)
        close(p.fd);
    close(p.lfd);
}
END_TEST

static Suite *conn_suite(void)
{
    Suite *s = suite_create("client_conn");
    TCase *tc = tcase_create("peer");
    tcase_set_timeout(tc, 30);
    tcase_add_loop_test(tc, test_peer, 0, sizeof cases / sizeof cases[0]);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(conn_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
