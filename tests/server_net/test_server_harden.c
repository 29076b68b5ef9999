/* test_server_harden -- the real statesaver-server against hostile clients
 * (issue 8): big frames before Hello, decode budgets, slowloris and idle
 * connections, parked-request caps, the global output limit, names that
 * are not UTF-8, and flag errors of the binary.
 *
 * Every test starts its own server (ephemeral port, LMDB under mkdtemp);
 * every wait is bounded. Server memory is read from /proc/PID/status. */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "net_helper.h"

#define T_WAIT 10000 /* ms: bound on any single reply */
#define TOKEN "harden-token"
#define CODE(x) STATESAVER__V1__CODE__##x
#define MIB (1024u * 1024u)

static const char *const state_names[] = {"c", "h"};
static const int64_t state_dims[] = {4, 2};

/* ---- helpers ---- */

/* Resident set of pid in bytes (VmRSS), or 0 when unreadable. */
static uint64_t rss_bytes(pid_t pid)
{
    char path[64], line[256];
    uint64_t kb = 0;
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %lu kB", &kb) == 1)
            break;
    fclose(f);
    return kb * 1024u;
}

static void start_with(tsrv *s, const char *const *extra, bool token)
{
    const char *args[40];
    size_t n = 0;
    char tokfile[400];
    tsrv_init(s);
    if (token) {
        snprintf(tokfile, sizeof tokfile, "%s/token", s->root);
        FILE *f = fopen(tokfile, "w");
        ck_assert_ptr_nonnull(f);
        fputs(TOKEN "\n", f);
        fclose(f);
        args[n++] = "--auth-token-file";
        args[n++] = tokfile;
    }
    for (size_t i = 0; extra && extra[i] && n < 38; i++)
        args[n++] = extra[i];
    args[n] = NULL;
    tsrv_start(s, args);
}

static void expect_code(tresp *r, int code, const char *what)
{
    ck_assert_msg(r != NULL, "%s: no reply", what);
    ck_assert_msg(tresp_code(r) == code, "%s: status %d (want %d): %s", what,
                  tresp_code(r), code, r->status ? r->status->message : "");
}

static void call_expect(int fd, treq *q, int code, const char *what)
{
    tresp *r = tc_call(fd, q, T_WAIT);
    expect_code(r, code, what);
    tresp_free(r);
    treq_free(q);
}

static void hello_ok(int fd)
{
    call_expect(fd, treq_hello(1, TOKEN), 0, "hello");
}

static void ping_ok(int port, bool token)
{
    int fd = tc_connect(port);
    ck_assert_int_ge(fd, 0);
    if (token)
        hello_ok(fd);
    call_expect(fd, treq_ping(2, "abc", 3), 0, "ping");
    close(fd);
}

static void set_nonblock(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

static void set_block(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
}

/* Raise RLIMIT_NOFILE's soft limit to want (or the hard limit); the
 * server started afterwards inherits it. */
static void raise_nofile(rlim_t want)
{
    struct rlimit rl;
    ck_assert_int_eq(getrlimit(RLIMIT_NOFILE, &rl), 0);
    if (rl.rlim_cur < want) {
        rl.rlim_cur = want < rl.rlim_max ? want : rl.rlim_max;
        ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &rl), 0);
    }
    ck_assert_msg(rl.rlim_cur >= want, "RLIMIT_NOFILE %lu < %lu",
                  (unsigned long)rl.rlim_cur, (unsigned long)want);
}

static void put_u32(uint8_t *p, uint32_t n)
{
    p[0] = (uint8_t)(n >> 24);
    p[1] = (uint8_t)(n >> 16);
    p[2] = (uint8_t)(n >> 8);
    p[3] = (uint8_t)n;
}


/* GET /metrics from the server's --metrics-listen port (written to path
 * by --metrics-port-file); returns the malloc'd response or NULL. */
static char *scrape(const char *path)
{
    int port = 0;
    for (int i = 0; i < 200 && port == 0; i++) {
        FILE *f = fopen(path, "r");
        if (f) {
            if (fscanf(f, "%d", &port) != 1)
                port = 0;
            fclose(f);
        }
        if (port == 0)
            usleep(10000);
    }
    if (port == 0)
        return NULL;
    int fd = tc_connect(port);
    if (fd < 0)
        return NULL;
    const char *get = "GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
    if (tc_write_all(fd, get, strlen(get), T_WAIT) < 0) {
        close(fd);
        return NULL;
    }
    size_t cap = 1 << 20, len = 0;
    char *buf = malloc(cap);
    uint64_t deadline = tnow_ms() + T_WAIT;
    while (buf && len + 1 < cap && tnow_ms() < deadline) {
        struct pollfd p = {fd, POLLIN, 0};
        if (poll(&p, 1, 100) <= 0)
            continue;
        ssize_t n = read(fd, buf + len, cap - 1 - len);
        if (n <= 0)
            break;
        len += (size_t)n;
    }
    close(fd);
    if (buf)
        buf[len] = '\0';
    return buf;
}

/* A per-process path for --metrics-port-file. */
static void mport_path(char *buf, size_t size)
{
    const char *tmp = getenv("TMPDIR");
    snprintf(buf, size, "%s/ss-harden-mport-%d", tmp ? tmp : "/tmp",
             (int)getpid());
    unlink(buf);
}

static double metric_value(const char *text, const char *series);

/* statesaver_rejected_total{reason=...} from a scrape, or -1. */
static double rejected(const char *mport, const char *reason)
{
    char *text = scrape(mport);
    ck_assert_ptr_nonnull(text);
    char series[128];
    snprintf(series, sizeof series,
             "statesaver_rejected_total{reason=\"%s\"}", reason);
    double v = metric_value(text, series);
    free(text);
    return v;
}

/* The value of the line starting with series in a scrape, or -1. */
static double metric_value(const char *text, const char *series)
{
    size_t n = strlen(series);
    for (const char *p = text; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL)
        if (strncmp(p, series, n) == 0 && p[n] == ' ')
            return atof(p + n + 1);
    return -1;
}

/* ---- item 2: big frames before Hello; the decode budget ---- */

#define N_BIG 20
#define BIG_FRAME (60u * MIB)
#define RSS_LIMIT (64ull * MIB)

/* 20 connections each declare a 60 MiB frame before Hello and send its
 * bytes (half of them all but the last byte, half as much as the server
 * takes in a few seconds): the server never buffers them (RSS < 64 MB),
 * answers UNAUTHENTICATED and closes, and keeps serving. */
START_TEST(test_unauth_big_frames)
{
    tsrv s;
    char mport[400];
    mport_path(mport, sizeof mport);
    const char *metrics[] = {"--metrics-listen", "127.0.0.1:0",
                             "--metrics-port-file", mport, NULL};
    start_with(&s, metrics, true);
    int fds[N_BIG];
    size_t sent[N_BIG];
    size_t want[N_BIG];
    static uint8_t chunk[1u << 20];
    memset(chunk, 'x', sizeof chunk);
    for (int i = 0; i < N_BIG; i++) {
        fds[i] = tc_connect(s.port);
        ck_assert_int_ge(fds[i], 0);
        uint8_t h[4];
        put_u32(h, BIG_FRAME);
        ck_assert_int_eq(tc_write_all(fds[i], h, 4, T_WAIT), 0);
        set_nonblock(fds[i]);
        sent[i] = 0;
        want[i] = i % 2 ? BIG_FRAME - 1 : BIG_FRAME;
    }
    uint64_t peak = 0;
    uint64_t deadline = tnow_ms() + 4000;
    while (tnow_ms() < deadline) {
        bool any = false;
        for (int i = 0; i < N_BIG; i++) {
            if (fds[i] < 0 || sent[i] >= want[i])
                continue;
            size_t n = want[i] - sent[i];
            if (n > sizeof chunk)
                n = sizeof chunk;
            ssize_t w = send(fds[i], chunk, n, MSG_NOSIGNAL);
            if (w > 0) {
                sent[i] += (size_t)w;
                any = true;
            } else if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
                sent[i] = want[i]; /* the server closed: fine */
            }
        }
        uint64_t r = rss_bytes(s.pid);
        if (r > peak)
            peak = r;
        if (!any)
            usleep(2000);
    }
    uint64_t r = rss_bytes(s.pid);
    if (r > peak)
        peak = r;
    fprintf(stderr, "unauth big frames: server peak RSS %.1f MB\n",
            (double)peak / MIB);
    ck_assert_msg(peak > 0 && peak < RSS_LIMIT,
                  "server RSS peaked at %llu bytes",
                  (unsigned long long)peak);
    for (int i = 0; i < N_BIG; i++) {
        set_block(fds[i]);
        tresp *rep = tc_recv(fds[i], T_WAIT, NULL);
        expect_code(rep, CODE(UNAUTHENTICATED), "oversized frame before Hello");
        ck_assert_ptr_nonnull(strstr(rep->status->message,
                                     "--max-unauth-frame-bytes"));
        tresp_free(rep);
        close(fds[i]);
    }
    ping_ok(s.port, true);
    char *text = scrape(mport);
    unlink(mport);
    ck_assert_ptr_nonnull(text);
    double refused = metric_value(
        text, "statesaver_rejected_total{reason=\"unauth_frame\"}");
    free(text);
    ck_assert_msg(refused == N_BIG, "unauth_frame refusals: %g", refused);
    tsrv_cleanup(&s);
}
END_TEST

/* A 4 MiB Save of empty repeated Tensor messages (2 wire bytes, ~70 bytes
 * of heap each) is refused by the decode budget (RESOURCE_EXHAUSTED naming
 * it) without the server growing by the ~140 MB it would take. */
START_TEST(test_unpack_budget)
{
    tsrv s;
    start_with(&s, NULL, false);
    const size_t pairs = 2u * MIB;
    size_t body = pairs * 2;            /* SaveRequest: states = 5, len 0 */
    uint8_t *frame = malloc(4 + 16 + body);
    ck_assert_ptr_nonnull(frame);
    size_t o = 4;
    frame[o++] = 0x08;                  /* Request.id = 7 */
    frame[o++] = 7;
    frame[o++] = 0x6a;                  /* Request.save (13), bytes */
    size_t v = body;
    while (v >= 0x80) {
        frame[o++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    frame[o++] = (uint8_t)v;
    for (size_t i = 0; i < pairs; i++) {
        frame[o++] = 0x2a;              /* SaveRequest.states (5), bytes */
        frame[o++] = 0x00;
    }
    put_u32(frame, (uint32_t)(o - 4));
    uint64_t before = rss_bytes(s.pid);
    int fd = tc_connect(s.port);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(tc_write_all(fd, frame, o, T_WAIT), 0);
    free(frame);
    tresp *r = tc_recv(fd, T_WAIT, NULL);
    expect_code(r, CODE(RESOURCE_EXHAUSTED), "empty-message flood");
    ck_assert_ptr_nonnull(strstr(r->status->message, "--unpack-budget"));
    tresp_free(r);
    close(fd);
    uint64_t after = rss_bytes(s.pid);
    fprintf(stderr, "unpack budget: RSS %.1f -> %.1f MB\n",
            (double)before / MIB, (double)after / MIB);
    ck_assert_msg(after < before + 40ull * MIB, "RSS grew to %llu",
                  (unsigned long long)after);
    ping_ok(s.port, false);
    tsrv_cleanup(&s);
}
END_TEST


/* ---- item 3: slowloris, frame deadline, idle timeout ---- */

#define N_SLOW 1100

/* 1100 connections, half idle and half trickling a frame at 1 byte/s, on
 * a server with the default limits (--max-connections 1024): a new
 * client's Ping is still answered within 100 ms, again and again. */
START_TEST(test_slowloris)
{
    raise_nofile(N_SLOW + 512);
    tsrv s;
    char mport[400];
    mport_path(mport, sizeof mport);
    const char *metrics[] = {"--metrics-listen", "127.0.0.1:0",
                             "--metrics-port-file", mport, NULL};
    start_with(&s, metrics, false);
    static int fds[N_SLOW];
    for (int i = 0; i < N_SLOW; i++) {
        fds[i] = tc_connect(s.port);
        ck_assert_msg(fds[i] >= 0, "connection %d", i);
        if (i % 2) {
            uint8_t h[4];
            put_u32(h, 100);
            ck_assert_int_eq(tc_write_all(fds[i], h, 4, T_WAIT), 0);
            set_nonblock(fds[i]);
        }
    }
    uint64_t worst = 0;
    for (int round = 0; round < 3; round++) {
        /* One byte on every trickling connection (closed ones ignored). */
        for (int i = 1; i < N_SLOW; i += 2)
            (void)send(fds[i], "x", 1, MSG_NOSIGNAL);
        usleep(300000);
        for (int k = 0; k < 3; k++) {
            int fd = tc_connect(s.port);
            ck_assert_int_ge(fd, 0);
            uint64_t t0 = tnow_ms();
            treq *q = treq_ping(5, "hi", 2);
            tresp *r = tc_call(fd, q, T_WAIT);
            uint64_t dt = tnow_ms() - t0;
            treq_free(q);
            expect_code(r, 0, "ping beside 1100 slowloris connections");
            tresp_free(r);
            if (dt > worst)
                worst = dt;
            close(fd);
        }
        usleep(700000);
    }
    fprintf(stderr, "slowloris: slowest new-client Ping %llu ms\n",
            (unsigned long long)worst);
    ck_assert_msg(worst < 100, "a new client waited %llu ms",
                  (unsigned long long)worst);
    double evicted = rejected(mport, "evicted");
    unlink(mport);
    fprintf(stderr, "slowloris: %g fresh connections evicted\n", evicted);
    ck_assert_msg(evicted >= N_SLOW - 256, "evicted %g", evicted);
    for (int i = 0; i < N_SLOW; i++)
        close(fds[i]);
    tsrv_cleanup(&s);
}
END_TEST

/* --frame-timeout-ms: a frame trickled a byte every 50 ms is cut off at
 * the deadline (bytes do not extend it); the server keeps serving. */
START_TEST(test_frame_timeout)
{
    char mport[400];
    mport_path(mport, sizeof mport);
    const char *extra[] = {"--frame-timeout-ms", "300", "--metrics-listen",
                           "127.0.0.1:0", "--metrics-port-file", mport, NULL};
    tsrv s;
    start_with(&s, extra, false);
    int fd = tc_connect(s.port);
    ck_assert_int_ge(fd, 0);
    uint8_t h[4];
    put_u32(h, 1000);
    ck_assert_int_eq(tc_write_all(fd, h, 4, T_WAIT), 0);
    uint64_t t0 = tnow_ms();
    bool closed = false;
    while (tnow_ms() - t0 < 3000) {
        if (send(fd, "y", 1, MSG_NOSIGNAL) < 0) {
            closed = true;
            break;
        }
        struct pollfd p = {fd, POLLIN, 0};
        if (poll(&p, 1, 50) > 0) {
            char b[64];
            ssize_t n = recv(fd, b, sizeof b, MSG_DONTWAIT);
            if (n <= 0) {
                closed = true;
                break;
            }
        }
    }
    uint64_t dt = tnow_ms() - t0;
    ck_assert_msg(closed, "a trickled frame outlived its deadline");
    ck_assert_msg(dt >= 250 && dt < 2000, "closed after %llu ms",
                  (unsigned long long)dt);
    close(fd);
    ping_ok(s.port, false);
    ck_assert(rejected(mport, "frame_timeout") == 1);
    unlink(mport);
    tsrv_cleanup(&s);
}
END_TEST

/* --idle-timeout-ms counts whole requests only: a connection trickling
 * bytes of a frame (no frame deadline) is closed as idle, one sending a
 * Ping now and then is kept. */
START_TEST(test_idle_whole_requests)
{
    static const char *const extra[] = {"--idle-timeout-ms", "400",
                                        "--frame-timeout-ms", "0", NULL};
    tsrv s;
    start_with(&s, extra, false);
    int trickle = tc_connect(s.port);
    int busy = tc_connect(s.port);
    ck_assert_int_ge(trickle, 0);
    ck_assert_int_ge(busy, 0);
    uint8_t h[4];
    put_u32(h, 1000);
    ck_assert_int_eq(tc_write_all(trickle, h, 4, T_WAIT), 0);
    bool trickle_closed = false;
    uint64_t t0 = tnow_ms();
    int id = 10;
    while (tnow_ms() - t0 < 2000) {
        if (!trickle_closed) {
            if (send(trickle, "z", 1, MSG_NOSIGNAL) < 0)
                trickle_closed = true;
            char b[64];
            ssize_t n = recv(trickle, b, sizeof b, MSG_DONTWAIT);
            if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK))
                trickle_closed = true;
        }
        call_expect(busy, treq_ping((uint64_t)id++, "p", 1), 0,
                    "ping keeping a connection active");
        usleep(100000);
    }
    ck_assert_msg(trickle_closed, "bytes of an unfinished frame kept an idle "
                  "connection open");
    close(trickle);
    close(busy);
    tsrv_cleanup(&s);
}
END_TEST

/* ---- item 4: parked and pending caps, global output limit ---- */

static void declare_ok(int fd, const char *saver)
{
    call_expect(fd, treq_declare(3, saver, 2, state_names, state_dims), 0,
                "declare");
}

/* --max-parked-per-conn 8: 20 pipelined barrier Fetches (500 ms waits)
 * and a Ping: the connection is not read while 8 wait, so the Ping comes
 * only after the first rounds expired; every Fetch is answered. */
START_TEST(test_parked_per_conn)
{
    static const char *const extra[] = {"--max-parked-per-conn", "8", NULL};
    tsrv s;
    start_with(&s, extra, false);
    int fd = tc_connect(s.port);
    ck_assert_int_ge(fd, 0);
    declare_ok(fd, "s");
    tbuf buf = {NULL, 0, 0};
    const char *k = "never-saved";
    for (int i = 0; i < 20; i++) {
        treq *q = treq_fetch((uint64_t)(100 + i), "s", 1, &k, 3, 500);
        tc_frame_append(&buf, q);
        treq_free(q);
    }
    treq *q = treq_ping(99, "x", 1);
    tc_frame_append(&buf, q);
    treq_free(q);
    uint64_t t0 = tnow_ms();
    ck_assert_int_eq(tc_write_all(fd, buf.data, buf.len, T_WAIT), 0);
    tbuf_free(&buf);
    int fetches = 0;
    uint64_t ping_at = 0;
    for (int i = 0; i < 21; i++) {
        tresp *r = tc_recv(fd, T_WAIT, NULL);
        ck_assert_msg(r != NULL, "reply %d missing", i);
        if (r->id == 99) {
            ck_assert_int_eq(tresp_code(r), 0);
            ping_at = tnow_ms() - t0;
        } else {
            ck_assert_int_eq(tresp_code(r), CODE(DEADLINE_EXCEEDED));
            fetches++;
        }
        tresp_free(r);
    }
    ck_assert_int_eq(fetches, 20);
    fprintf(stderr, "parked per conn: Ping answered after %llu ms\n",
            (unsigned long long)ping_at);
    ck_assert_msg(ping_at >= 900, "Ping answered after %llu ms: the "
                  "connection was read past its cap",
                  (unsigned long long)ping_at);
    close(fd);
    tsrv_cleanup(&s);
}
END_TEST

/* --max-parked-total 4: four Fetches wait on one connection; a fifth on
 * another gets RESOURCE_EXHAUSTED at once; once they are answered it
 * parks again. */
START_TEST(test_parked_total)
{
    static const char *const extra[] = {"--max-parked-total", "4", NULL};
    tsrv s;
    start_with(&s, extra, false);
    int a = tc_connect(s.port), b = tc_connect(s.port);
    ck_assert_int_ge(a, 0);
    ck_assert_int_ge(b, 0);
    declare_ok(a, "s");
    const char *k = "nk";
    for (int i = 0; i < 4; i++) {
        treq *q = treq_fetch((uint64_t)(10 + i), "s", 1, &k, 3, 1500);
        ck_assert_int_eq(tc_send(a, q), 0);
        treq_free(q);
    }
    call_expect(a, treq_ping(20, "x", 1), 0, "ping beside parked fetches");
    uint64_t t0 = tnow_ms();
    treq *q = treq_fetch(30, "s", 1, &k, 3, 1500);
    tresp *r = tc_call(b, q, T_WAIT);
    treq_free(q);
    expect_code(r, CODE(RESOURCE_EXHAUSTED), "fetch over --max-parked-total");
    ck_assert_ptr_nonnull(strstr(r->status->message, "--max-parked-total"));
    ck_assert_uint_lt(tnow_ms() - t0, 500);
    tresp_free(r);
    for (int i = 0; i < 4; i++) {
        r = tc_recv(a, T_WAIT, NULL);
        expect_code(r, CODE(DEADLINE_EXCEEDED), "parked fetch");
        tresp_free(r);
    }
    q = treq_fetch(31, "s", 1, &k, 3, 100);
    r = tc_call(b, q, T_WAIT);
    treq_free(q);
    expect_code(r, CODE(DEADLINE_EXCEEDED), "fetch under the cap again");
    tresp_free(r);
    close(a);
    close(b);
    tsrv_cleanup(&s);
}
END_TEST

/* --max-pending-writes-per-conn 1: a Ping pipelined behind a Save is read
 * only once the Save committed, so the Save's reply comes first (without
 * the cap the Ping overtakes the fsync). */
START_TEST(test_pending_writes_per_conn)
{
    static const char *const extra[] = {"--max-pending-writes-per-conn", "1",
                                        NULL};
    tsrv s;
    start_with(&s, extra, false);
    int fd = tc_connect(s.port);
    ck_assert_int_ge(fd, 0);
    declare_ok(fd, "s");
    for (int round = 0; round < 5; round++) {
        tbuf buf = {NULL, 0, 0};
        const char *k = "w";
        uint64_t seg = (uint64_t)round;
        treq *q = treq_save(40, "s", 1, &k, &seg, 2, state_dims, 1.0f);
        tc_frame_append(&buf, q);
        treq_free(q);
        q = treq_ping(41, "x", 1);
        tc_frame_append(&buf, q);
        treq_free(q);
        ck_assert_int_eq(tc_write_all(fd, buf.data, buf.len, T_WAIT), 0);
        tbuf_free(&buf);
        tresp *r = tc_recv(fd, T_WAIT, NULL);
        ck_assert_ptr_nonnull(r);
        ck_assert_msg(r->id == 40, "round %d: reply %llu came first", round,
                      (unsigned long long)r->id);
        ck_assert_int_eq(tresp_code(r), 0);
        tresp_free(r);
        r = tc_recv(fd, T_WAIT, NULL);
        ck_assert_ptr_nonnull(r);
        ck_assert_uint_eq(r->id, 41);
        tresp_free(r);
    }
    close(fd);
    tsrv_cleanup(&s);
}
END_TEST


#define N_PARK 50000
/* The loop-stall bound; sanitizer builds (their own allocator, every
 * access checked) run several times slower, so they get a looser one. */
#ifdef __SANITIZE_ADDRESS__
#define STALL_MAX_MS 500
#else
#define STALL_MAX_MS 50
#endif

/* A connection with 50k parked Fetches is reset: cancelling them all is
 * linear, so a Ping on another connection waits under 50 ms. */
START_TEST(test_close_many_parked)
{
    tsrv s;
    start_with(&s, NULL, false);
    int a = tc_connect(s.port), b = tc_connect(s.port);
    ck_assert_int_ge(a, 0);
    ck_assert_int_ge(b, 0);
    declare_ok(a, "s");
    tbuf buf = {NULL, 0, 0};
    const char *k = "parked";
    for (int i = 0; i < N_PARK; i++) {
        treq *q = treq_fetch((uint64_t)(1000 + i), "s", 1, &k, 3, 60000);
        tc_frame_append(&buf, q);
        treq_free(q);
    }
    treq *q = treq_ping(7, "x", 1);
    tc_frame_append(&buf, q);
    treq_free(q);
    ck_assert_int_eq(tc_write_all(a, buf.data, buf.len, T_WAIT), 0);
    tbuf_free(&buf);
    tresp *r = tc_recv(a, T_WAIT, NULL); /* in order: all 50k are parked */
    expect_code(r, 0, "ping behind 50k parked fetches");
    ck_assert_uint_eq(r->id, 7);
    tresp_free(r);
    uint64_t base = 0;
    for (uint64_t t = tnow_ms(); tnow_ms() - t < 200;) {
        uint64_t t1 = tnow_ms();
        call_expect(b, treq_ping(9, "y", 1), 0, "ping");
        if (tnow_ms() - t1 > base)
            base = tnow_ms() - t1;
    }
    struct linger lg = {1, 0}; /* close with a reset */
    setsockopt(a, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    close(a);
    uint64_t worst = 0;
    uint64_t t0 = tnow_ms();
    for (int i = 0; tnow_ms() - t0 < 400; i++) {
        uint64_t t1 = tnow_ms();
        call_expect(b, treq_ping((uint64_t)(10 + i), "y", 1), 0, "ping");
        uint64_t dt = tnow_ms() - t1;
        if (dt > worst)
            worst = dt;
    }
    fprintf(stderr, "close 50k parked: slowest Ping meanwhile %llu ms "
            "(%llu ms before the close)\n", (unsigned long long)worst,
            (unsigned long long)base);
    ck_assert_msg(worst < STALL_MAX_MS, "the loop stalled %llu ms (bound %d)",
                  (unsigned long long)worst, STALL_MAX_MS);
    close(b);
    tsrv_cleanup(&s);
}
END_TEST

#define N_HOG 8

/* --max-output-bytes-total: 8 connections pipeline 512 KiB Pings and never
 * read. Each stops being read past --max-output-bytes (4 MiB), and the
 * server closes the biggest holders until all hold at most 12 MiB; a new
 * client is still served. */
START_TEST(test_output_total)
{
    static const char *const extra[] = {"--max-output-bytes", "4M",
                                        "--max-output-bytes-total", "12M",
                                        NULL};
    tsrv s;
    start_with(&s, extra, false);
    int fds[N_HOG];
    size_t sent[N_HOG];
    tbuf req = {NULL, 0, 0};
    static uint8_t payload[512 * 1024];
    memset(payload, 'p', sizeof payload);
    treq *q = treq_ping(7, payload, sizeof payload);
    tc_frame_append(&req, q);
    treq_free(q);
    const size_t want = 40 * req.len;
    for (int i = 0; i < N_HOG; i++) {
        fds[i] = socket(AF_INET, SOCK_STREAM, 0);
        int small = 16 * 1024;
        setsockopt(fds[i], SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
        close(fds[i]);
        fds[i] = tc_connect(s.port);
        ck_assert_int_ge(fds[i], 0);
        setsockopt(fds[i], SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
        set_nonblock(fds[i]);
        sent[i] = 0;
    }
    uint64_t peak = 0;
    uint64_t t0 = tnow_ms();
    while (tnow_ms() - t0 < 4000) {
        bool any = false;
        for (int i = 0; i < N_HOG; i++) {
            if (sent[i] >= want)
                continue;
            size_t off = sent[i] % req.len;
            ssize_t w = send(fds[i], req.data + off, req.len - off,
                             MSG_NOSIGNAL);
            if (w > 0) {
                sent[i] += (size_t)w;
                any = true;
            } else if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
                sent[i] = want;
            }
        }
        uint64_t r = rss_bytes(s.pid);
        if (r > peak)
            peak = r;
        if (!any)
            usleep(5000);
    }
    tbuf_free(&req);
    int closed = 0;
    for (int i = 0; i < N_HOG; i++) {
        set_block(fds[i]);
        /* A closed one ends (EOF or reset) once its buffered bytes are
         * read; an open one keeps sending replies. */
        if (tc_wait_closed(fds[i], 1500))
            closed++;
        close(fds[i]);
    }
    fprintf(stderr, "output total: %d of %d hogs closed, server peak RSS "
            "%.1f MB\n", closed, N_HOG, (double)peak / MIB);
    ck_assert_msg(closed >= 3, "only %d connections closed", closed);
    ping_ok(s.port, false);
    tsrv_cleanup(&s);
}
END_TEST


/* ---- item 7: names that are not UTF-8 ---- */

#define BAD_NAME "bad\xff\xfe"

static void expect_utf8_refusal(int fd, treq *q, const char *field)
{
    tresp *r = tc_call(fd, q, T_WAIT);
    treq_free(q);
    expect_code(r, CODE(INVALID_ARGUMENT), field);
    ck_assert_msg(strstr(r->status->message, field) != NULL &&
                  strstr(r->status->message, "UTF-8") != NULL,
                  "message '%s' does not name %s", r->status->message, field);
    tresp_free(r);
}

/* Every string field of every Request is checked before any handler:
 * nothing with such a name is stored, and List stays decodable. */
START_TEST(test_utf8_names)
{
    tsrv s;
    start_with(&s, NULL, false);
    int fd = tc_connect(s.port);
    ck_assert_int_ge(fd, 0);
    expect_utf8_refusal(fd, treq_declare(1, BAD_NAME, 2, state_names,
                                         state_dims), "declare.saver");
    static const char *const bad_states[] = {"c", "h\xc0\xaf"}; /* overlong */
    expect_utf8_refusal(fd, treq_declare(2, "ok", 2, bad_states, state_dims),
                        "declare.states[1].name");
    static const char *const surrogate[] = {"\xed\xa0\x80", "h"};
    expect_utf8_refusal(fd, treq_declare(3, "ok", 2, surrogate, state_dims),
                        "declare.states[0].name");
    const char *k = "k";
    uint64_t seg = 0;
    expect_utf8_refusal(fd, treq_save(4, BAD_NAME, 1, &k, &seg, 2, state_dims,
                                      1.0f), "save.saver");
    expect_utf8_refusal(fd, treq_fetch(5, BAD_NAME, 1, &k, 0, 0),
                        "fetch.saver");

    treq *q = treq_new(6);
    Statesaver__V1__SubmitRequest sub = STATESAVER__V1__SUBMIT_REQUEST__INIT;
    sub.saver = BAD_NAME;
    sub.key.data = (uint8_t *)"k";
    sub.key.len = 1;
    q->body_case = STATESAVER__V1__REQUEST__BODY_SUBMIT;
    q->submit = &sub;
    tresp *r = tc_call(fd, q, T_WAIT);
    q->submit = NULL;
    q->body_case = STATESAVER__V1__REQUEST__BODY__NOT_SET;
    treq_free(q);
    expect_code(r, CODE(INVALID_ARGUMENT), "submit.saver");
    ck_assert_ptr_nonnull(strstr(r->status->message, "submit.saver"));
    tresp_free(r);

    q = treq_new(7);
    Statesaver__V1__LeaseRequest lease = STATESAVER__V1__LEASE_REQUEST__INIT;
    lease.saver = "ok";
    lease.worker = "w\x80";
    q->body_case = STATESAVER__V1__REQUEST__BODY_LEASE;
    q->lease = &lease;
    r = tc_call(fd, q, T_WAIT);
    q->lease = NULL;
    q->body_case = STATESAVER__V1__REQUEST__BODY__NOT_SET;
    treq_free(q);
    expect_code(r, CODE(INVALID_ARGUMENT), "lease.worker");
    ck_assert_ptr_nonnull(strstr(r->status->message, "lease.worker"));
    tresp_free(r);

    /* Valid multi-byte UTF-8 is fine. */
    static const char *const good[] = {"c\xc3\xa9", "h\xf0\x9f\x98\x80"};
    call_expect(fd, treq_declare(8, "s\xe2\x82\xac", 2, good, state_dims), 0,
                "declare with UTF-8 names");

    q = treq_new(9);
    Statesaver__V1__ListRequest lr = STATESAVER__V1__LIST_REQUEST__INIT;
    q->body_case = STATESAVER__V1__REQUEST__BODY_LIST;
    q->list = &lr;
    r = tc_call(fd, q, T_WAIT);
    q->list = NULL;
    q->body_case = STATESAVER__V1__REQUEST__BODY__NOT_SET;
    treq_free(q);
    expect_code(r, 0, "list");
    ck_assert_uint_eq(r->list->n_savers, 1);
    ck_assert_str_eq(r->list->savers[0]->name, "s\xe2\x82\xac");
    tresp_free(r);
    close(fd);
    tsrv_cleanup(&s);
}
END_TEST


/* ---- item 8: an idle server does not commit ---- */

static uint64_t stats_field(int fd, bool ops)
{
    treq *q = treq_new(50);
    Statesaver__V1__StatsRequest sr = STATESAVER__V1__STATS_REQUEST__INIT;
    q->body_case = STATESAVER__V1__REQUEST__BODY_STATS;
    q->stats = &sr;
    tresp *r = tc_call(fd, q, T_WAIT);
    q->stats = NULL;
    q->body_case = STATESAVER__V1__REQUEST__BODY__NOT_SET;
    treq_free(q);
    expect_code(r, 0, "stats");
    uint64_t n = ops ? r->stats->committed_ops : r->stats->commits;
    tresp_free(r);
    return n;
}

static uint64_t stats_commits(int fd) { return stats_field(fd, false); }
/* Ops run by the writer in groups, including groups that changed nothing
 * (an eviction sweep with nothing to evict writes nothing, so LMDB
 * commits nothing and `commits` stays put). */
static uint64_t stats_ops(int fd) { return stats_field(fd, true); }

/* With no saver, the idle-eviction sweep (every 1000 ms by default) has
 * nothing to do and commits nothing; once a saver exists it runs. */
START_TEST(test_idle_no_commits)
{
    tsrv s;
    start_with(&s, NULL, false);
    int fd = tc_connect(s.port);
    ck_assert_int_ge(fd, 0);
    uint64_t c0 = stats_commits(fd);
    usleep(2500000);
    uint64_t c1 = stats_commits(fd);
    ck_assert_msg(c1 == c0, "an idle server without savers committed %llu "
                  "times in 2.5 s", (unsigned long long)(c1 - c0));
    ck_assert_uint_eq(stats_ops(fd), 0);
    declare_ok(fd, "s");
    uint64_t c2 = stats_commits(fd), o2 = stats_ops(fd);
    usleep(2500000);
    ck_assert_uint_gt(stats_ops(fd), o2);      /* the sweep runs again */
    ck_assert_uint_eq(stats_commits(fd), c2);  /* ...and writes nothing */
    close(fd);
    tsrv_cleanup(&s);
}
END_TEST

/* ---- item 8: flag errors of the binary ---- */

/* Run the server binary with args; returns its exit status and its stderr
 * (first bytes) in err. */
static int run_binary(const char *const *args, char *err, size_t errsz)
{
    char bin[1024];
    const char *env = getenv("SS_SERVER_BIN");
    if (env)
        snprintf(bin, sizeof bin, "%s", env);
    else
        snprintf(bin, sizeof bin, "%s/server/statesaver-server",
                 getenv("SS_BUILD_ROOT") ? getenv("SS_BUILD_ROOT") : ".");
    int pfd[2];
    ck_assert_int_eq(pipe(pfd), 0);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        const char *argv[16];
        size_t n = 0;
        argv[n++] = bin;
        for (size_t i = 0; args[i] && n < 15; i++)
            argv[n++] = args[i];
        argv[n] = NULL;
        dup2(pfd[1], 2);
        close(pfd[0]);
        close(pfd[1]);
        execv(bin, (char *const *)argv);
        _exit(127);
    }
    close(pfd[1]);
    size_t got = 0;
    struct pollfd p = {pfd[0], POLLIN, 0};
    uint64_t deadline = tnow_ms() + T_WAIT;
    while (got + 1 < errsz && tnow_ms() < deadline &&
           poll(&p, 1, 100) >= 0) {
        if (!(p.revents & (POLLIN | POLLHUP)))
            continue;
        ssize_t n = read(pfd[0], err + got, errsz - 1 - got);
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    err[got] = '\0';
    close(pfd[0]);
    int st = 0;
    for (;;) {
        pid_t w = waitpid(pid, &st, WNOHANG);
        if (w == pid)
            break;
        if (tnow_ms() > deadline) {
            kill(pid, SIGKILL);
            waitpid(pid, &st, 0);
            return -1;
        }
        usleep(10000);
    }
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

START_TEST(test_flag_errors)
{
    char err[2048];
    static const char *const neg[] = {"--data", "/nonexistent/x",
                                      "--max-keys", " -1", NULL};
    ck_assert_int_eq(run_binary(neg, err, sizeof err), 2);
    ck_assert_msg(strstr(err, "bad --max-keys") != NULL, "stderr: %s", err);
    static const char *const big[] = {"--data", "/nonexistent/x",
                                      "--max-key-bytes", "65536", NULL};
    ck_assert_int_eq(run_binary(big, err, sizeof err), 2);
    ck_assert_msg(strstr(err, "bad --max-key-bytes") != NULL &&
                  strstr(err, "65535") != NULL, "stderr: %s", err);
    static const char *const mib[] = {"--data", "/nonexistent/x",
                                      "--max-key-bytes", "1M", NULL};
    ck_assert_int_eq(run_binary(mib, err, sizeof err), 2);
}
END_TEST

Suite *harden_suite(void);
Suite *harden_suite(void)
{
    Suite *s = suite_create("server_harden");
    TCase *tc = tcase_create("frames");
    tcase_add_test(tc, test_unauth_big_frames);
    tcase_add_test(tc, test_unpack_budget);
    tcase_add_test(tc, test_flag_errors);
    tcase_add_test(tc, test_utf8_names);
    tcase_set_timeout(tc, 120);
    suite_add_tcase(s, tc);
    tc = tcase_create("connections");
    tcase_add_test(tc, test_slowloris);
    tcase_add_test(tc, test_frame_timeout);
    tcase_add_test(tc, test_idle_whole_requests);
    tcase_set_timeout(tc, 120);
    suite_add_tcase(s, tc);
    tc = tcase_create("caps");
    tcase_add_test(tc, test_parked_per_conn);
    tcase_add_test(tc, test_parked_total);
    tcase_add_test(tc, test_pending_writes_per_conn);
    tcase_add_test(tc, test_output_total);
    tcase_add_test(tc, test_close_many_parked);
    tcase_add_test(tc, test_idle_no_commits);
    tcase_set_timeout(tc, 120);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    SRunner *sr = srunner_create(harden_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
