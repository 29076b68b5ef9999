/* test_client -- Check suite for libstatesaver against the real server.
 *
 * An unchecked fixture starts statesaver-server (tests/client/ss_testserver)
 * once per test case; every test connects its own client and uses its own
 * saver names, so tests do not depend on each other's data.
 */
#include <check.h>
#include <math.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "ss_testserver.h"
#include "statesaver.h"
#include "statesaver.pb-c.h"

#define TEST_TIMEOUT_MS 10000
#define ST_INVALID_ARGUMENT 3
#define ST_DEADLINE_EXCEEDED 4
#define ST_NOT_FOUND 5
#define ST_ALREADY_EXISTS 6
#define ST_FAILED_PRECONDITION 9
#define ST_UNAUTHENTICATED 16
#define AUTH_TOKEN "s3cret-token"

static ss_testserver srv;      /* plain server for most cases */
static ss_testserver auth_srv; /* server with AUTH_TOKEN */
static ss_testserver v6_srv;   /* server on [::1] */
static ss_client *c;           /* per-test connection to srv */

#define KEY(s) ((ss_key){(s), sizeof(s) - 1})

static void start_plain(void)
{
    ck_assert_msg(ss_testserver_start(&srv, NULL) == 0, "server did not start");
}

static void stop_plain(void)
{
    ss_testserver_stop(&srv);
}

static void start_auth(void)
{
    ck_assert_msg(ss_testserver_start(&auth_srv, AUTH_TOKEN) == 0,
                  "auth server did not start");
}

static void stop_auth(void)
{
    ss_testserver_stop(&auth_srv);
}

static void start_v6(void)
{
    ck_assert_msg(ss_testserver_start_v6(&v6_srv, NULL) == 0, "IPv6 server did not start");
}

static void stop_v6(void)
{
    ss_testserver_stop(&v6_srv);
}

static void connect_client(void)
{
    int rc = ss_client_connect(&c, srv.addr, TEST_TIMEOUT_MS);
    ck_assert_msg(rc == 0, "connect %s: %s", srv.addr, ss_strerror(rc));
}

static void close_client(void)
{
    ss_client_close(c);
    c = NULL;
}

/* Schema used by most tests: h float32[4] (initial 0.5..), c float32[2]. */
static const int64_t dim4[] = {4}, dim2[] = {2};
static const float h_init[4] = {0.5f, -1.0f, 2.0f, 0.25f};

static void declare_std(const char *saver, bool keep_final)
{
    ss_state_def defs[2] = {
        {"h", SS_DTYPE_FLOAT32, dim4, 1, h_init, sizeof h_init},
        {"c", SS_DTYPE_FLOAT32, dim2, 1, NULL, 0},
    };
    bool created = false;
    int rc = ss_client_declare(c, saver, defs, 2, 0, keep_final, &created);
    ck_assert_msg(rc == 0, "declare %s: %s", saver, ss_client_last_error(c));
    ck_assert(created);
}

/* Save n keys at segments seg[], h row k = base + k + i/10, c row = -base. */
static int save_std(const char *saver, const ss_key *keys, size_t n,
                    const uint64_t *seg, const bool *final, float base,
                    bool *applied)
{
    float h[64 * 4], cc[64 * 2];
    ck_assert(n <= 64);
    for (size_t k = 0; k < n; k++) {
        for (size_t i = 0; i < 4; i++)
            h[k * 4 + i] = base + (float)k + (float)i / 10;
        cc[k * 2] = -base;
        cc[k * 2 + 1] = (float)k;
    }
    ss_state_data sd[2] = {
        {SS_DTYPE_FLOAT32, dim4, 1, h},
        {SS_DTYPE_FLOAT32, dim2, 1, cc},
    };
    return ss_client_save(c, saver, keys, n, seg, final, sd, 2, applied);
}

static float h_at(const ss_fetch_result *r, size_t k, size_t i)
{
    size_t nb;
    const float *row = ss_fetch_result_state(r, 0, k, &nb);
    ck_assert_ptr_nonnull(row);
    ck_assert_uint_eq(nb, 16);
    return row[i];
}

/* ---- connection ---------------------------------------------------------- */

START_TEST(test_connect_refused)
{
    /* A port that was just bound and released: nothing listens there. */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof sa;
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&sa, &sl), 0);
    close(fd);
    char addr[64], err[256] = "";
    snprintf(addr, sizeof addr, "127.0.0.1:%d", ntohs(sa.sin_port));
    ss_client_options o;
    ss_client_options_init(&o);
    o.server = addr;
    o.connect_timeout_ms = 5000;
    ss_client *x = NULL;
    int rc = ss_client_open(&x, &o, err, sizeof err);
    ck_assert_int_eq(rc, SS_ERR_CONNECT);
    ck_assert_ptr_null(x);
    ck_assert_msg(strstr(err, "refused") != NULL, "message: %s", err);
}
END_TEST

/* A listener whose accept queue is full drops new SYNs, so a connect
 * there can only end by the client's own connect timeout. */
START_TEST(test_connect_timeout)
{
    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof sa;
    ck_assert_int_eq(bind(lfd, (struct sockaddr *)&sa, sizeof sa), 0);
    ck_assert_int_eq(listen(lfd, 0), 0);
    ck_assert_int_eq(getsockname(lfd, (struct sockaddr *)&sa, &sl), 0);
    /* Fill the accept queue (never accepted). */
    int fill[4];
    for (int i = 0; i < 4; i++) {
        fill[i] = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
        (void)connect(fill[i], (struct sockaddr *)&sa, sizeof sa);
    }
    usleep(100 * 1000);
    char addr[64], err[256] = "";
    snprintf(addr, sizeof addr, "127.0.0.1:%d", ntohs(sa.sin_port));
    ss_client_options o;
    ss_client_options_init(&o);
    o.server = addr;
    o.connect_timeout_ms = 300;
    ss_client *x = NULL;
    int rc = ss_client_open(&x, &o, err, sizeof err);
    ck_assert_msg(rc == SS_ERR_TIMEOUT, "got %d (%s): %s", rc, ss_strerror(rc), err);
    ck_assert_ptr_null(x);
    ck_assert_msg(strstr(err, "timed out") != NULL, "message: %s", err);
    for (int i = 0; i < 4; i++)
        close(fill[i]);
    close(lfd);
}
END_TEST

struct addr_case {
    const char *addr; /* server address text */
    int want;         /* expected return of ss_client_connect */
};

static const struct addr_case addr_cases[] = {
    {"", SS_ERR_INVALID},
    {":7450", SS_ERR_INVALID},
    {"127.0.0.1:", SS_ERR_INVALID},
    {"[::1", SS_ERR_INVALID},
    {"[::1]x", SS_ERR_INVALID},
    {"no-such-host.invalid:7450", SS_ERR_CONNECT},
    {"127.0.0.1:notaport", SS_ERR_CONNECT},
};

START_TEST(test_connect_bad_address)
{
    ss_client *x = NULL;
    int rc = ss_client_connect(&x, addr_cases[_i].addr, 2000);
    ck_assert_msg(rc == addr_cases[_i].want, "'%s': got %d (%s) want %d",
                  addr_cases[_i].addr, rc, ss_strerror(rc), addr_cases[_i].want);
    ck_assert_ptr_null(x);
}
END_TEST

START_TEST(test_connect_hostname_and_ping)
{
    char addr[64];
    ss_client *x = NULL;
    uint64_t t = 0;
    snprintf(addr, sizeof addr, "localhost:%d", srv.port);
    int rc = ss_client_connect(&x, addr, TEST_TIMEOUT_MS);
    ck_assert_msg(rc == 0, "%s: %s", addr, ss_strerror(rc));
    ck_assert_int_eq(ss_client_ping(x, &t), 0);
    ck_assert_uint_gt(t, 1600000000000ull); /* a wall clock in ms */
    ck_assert_str_eq(ss_client_last_error(x), "");
    ck_assert(!ss_client_broken(x));
    ss_client_close(x);
    ck_assert_str_eq(ss_client_last_error(NULL), "");
}
END_TEST

START_TEST(test_hello_info)
{
    ss_server_info info;
    memset(&info, 0, sizeof info);
    ck_assert_int_eq(ss_client_hello(c, NULL, 0, &info), 0);
    ck_assert_uint_eq(info.protocol_version, 1);
    ck_assert_uint_gt(info.max_frame_bytes, 0);
    ck_assert_uint_gt(info.max_keys, 0);
    ck_assert(info.server_version[0] != '\0');
}
END_TEST

/* ---- declare ----------------------------------------------------------- */

START_TEST(test_declare_same_and_different)
{
    bool created = true;
    declare_std("decl", false);
    ss_state_def same[2] = {
        {"h", SS_DTYPE_FLOAT32, dim4, 1, h_init, sizeof h_init},
        {"c", SS_DTYPE_FLOAT32, dim2, 1, NULL, 0},
    };
    ck_assert_int_eq(ss_client_declare(c, "decl", same, 2, 0, false, &created), 0);
    ck_assert(!created);
    ss_state_def other[1] = {{"h", SS_DTYPE_FLOAT32, dim2, 1, NULL, 0}};
    int rc = ss_client_declare(c, "decl", other, 1, 0, false, &created);
    ck_assert_int_eq(rc, SS_ERR_STATUS(ST_ALREADY_EXISTS));
    ck_assert_msg(strlen(ss_client_last_error(c)) > 0, "no server message");
    /* The connection keeps working after an error status. */
    ck_assert_int_eq(ss_client_ping(c, NULL), 0);
}
END_TEST

/* Bad declarations: the server refuses, the connection stays usable. */
struct declare_case {
    const char *name;     /* what is wrong */
    const char *saver;    /* saver name */
    const char *state;    /* state name */
    int dtype;            /* dtype */
    int64_t dim;          /* single dimension */
    size_t init_bytes;    /* bytes of initial (0 = none) */
};

static const struct declare_case declare_cases[] = {
    {"empty saver name", "", "h", SS_DTYPE_FLOAT32, 4, 0},
    {"empty state name", "bad-decl", "", SS_DTYPE_FLOAT32, 4, 0},
    {"invalid dtype", "bad-decl", "h", 0, 4, 0},
    {"negative dimension", "bad-decl", "h", SS_DTYPE_FLOAT32, -1, 0},
    {"initial of wrong size", "bad-decl", "h", SS_DTYPE_FLOAT32, 4, 8},
};

START_TEST(test_declare_bad)
{
    const struct declare_case *dc = &declare_cases[_i];
    static const float init[4] = {1, 2, 3, 4};
    ss_state_def def = {dc->state, dc->dtype, &dc->dim, 1,
                        dc->init_bytes ? init : NULL, dc->init_bytes};
    int rc = ss_client_declare(c, dc->saver, &def, 1, 0, false, NULL);
    ck_assert_msg(rc == SS_ERR_STATUS(ST_INVALID_ARGUMENT), "%s: got %d (%s: %s)",
                  dc->name, rc, ss_strerror(rc), ss_client_last_error(c));
    ck_assert_int_eq(ss_client_ping(c, NULL), 0);
}
END_TEST

/* ---- fetch and save ------------------------------------------------------ */

START_TEST(test_fetch_initial)
{
    ss_fetch_result *r = NULL;
    ss_key k[2] = {KEY("a"), KEY("b")};
    declare_std("init", false);
    ck_assert_int_eq(ss_client_fetch(c, "init", k, 2, 0, 0, &r), 0);
    ck_assert_uint_eq(ss_fetch_result_keys(r), 2);
    ck_assert_uint_eq(ss_fetch_result_states(r), 2);
    ck_assert_str_eq(ss_fetch_result_name(r, 0), "h");
    ck_assert_str_eq(ss_fetch_result_name(r, 1), "c");
    ck_assert_ptr_null(ss_fetch_result_name(r, 2));
    ck_assert_int_eq(ss_fetch_result_find(r, "c"), 1);
    ck_assert_int_eq(ss_fetch_result_find(r, "zz"), SS_ERR_NOT_FOUND);
    ck_assert_int_eq(ss_fetch_result_dtype(r, 0), SS_DTYPE_FLOAT32);
    size_t rank = 0;
    const int64_t *shape = ss_fetch_result_shape(r, 1, &rank);
    ck_assert_uint_eq(rank, 1);
    ck_assert_int_eq(shape[0], 2);
    for (size_t k2 = 0; k2 < 2; k2++) {
        ck_assert_uint_eq(ss_fetch_result_next_segment(r, k2), 0);
        ck_assert_uint_eq(ss_fetch_result_updated_ms(r, k2), 0);
        for (size_t i = 0; i < 4; i++)
            ck_assert_float_eq(h_at(r, k2, i), h_init[i]);
        const float *cz = ss_fetch_result_state(r, 1, k2, NULL);
        ck_assert_float_eq(cz[0], 0.0f);
        ck_assert_float_eq(cz[1], 0.0f);
    }
    ck_assert_ptr_null(ss_fetch_result_state(r, 0, 2, NULL));
    ss_fetch_result_free(r);
    ss_fetch_result_free(NULL);
}
END_TEST

START_TEST(test_save_fetch_roundtrip)
{
    ss_key k = KEY("seq-1");
    uint64_t seg = 0;
    bool applied = true;
    ss_fetch_result *r = NULL;
    declare_std("rt", false);
    ck_assert_int_eq(save_std("rt", &k, 1, &seg, NULL, 7.0f, &applied), 0);
    ck_assert(!applied);
    ck_assert_int_eq(ss_client_fetch(c, "rt", &k, 1, 0, 0, &r), 0);
    ck_assert_uint_eq(ss_fetch_result_next_segment(r, 0), 1);
    ck_assert_uint_gt(ss_fetch_result_updated_ms(r, 0), 0);
    for (size_t i = 0; i < 4; i++)
        ck_assert_float_eq(h_at(r, 0, i), 7.0f + (float)i / 10);
    const float *cc = ss_fetch_result_state(r, 1, 0, NULL);
    ck_assert_float_eq(cc[0], -7.0f);
    ss_fetch_result_free(r);
    seg = 1;
    ck_assert_int_eq(save_std("rt", &k, 1, &seg, NULL, 9.0f, &applied), 0);
    ck_assert_int_eq(ss_client_fetch(c, "rt", &k, 1, 0, 0, &r), 0);
    ck_assert_uint_eq(ss_fetch_result_next_segment(r, 0), 2);
    ck_assert_float_eq(h_at(r, 0, 0), 9.0f);
    ss_fetch_result_free(r);
}
END_TEST

START_TEST(test_cas_conflict_message)
{
    ss_key k = KEY("cas-key");
    uint64_t seg = 0;
    ss_fetch_result *r = NULL;
    declare_std("cas", false);
    ck_assert_int_eq(save_std("cas", &k, 1, &seg, NULL, 1.0f, NULL), 0);
    seg = 5;
    int rc = save_std("cas", &k, 1, &seg, NULL, 2.0f, NULL);
    ck_assert_int_eq(rc, SS_ERR_STATUS(ST_FAILED_PRECONDITION));
    const char *m = ss_client_last_error(c);
    ck_assert_msg(strstr(m, "cas-key") != NULL, "message does not name the key: %s", m);
    ck_assert_msg(strstr(m, "FAILED_PRECONDITION") != NULL, "message: %s", m);
    /* Nothing changed. */
    ck_assert_int_eq(ss_client_fetch(c, "cas", &k, 1, 0, 0, &r), 0);
    ck_assert_uint_eq(ss_fetch_result_next_segment(r, 0), 1);
    ck_assert_float_eq(h_at(r, 0, 0), 1.0f);
    ck_assert_str_eq(ss_client_last_error(c), "");
    ss_fetch_result_free(r);
}
END_TEST

START_TEST(test_already_applied)
{
    ss_key k = KEY("retry");
    uint64_t seg = 0;
    bool applied = false;
    ss_fetch_result *r = NULL;
    declare_std("retry", false);
    ck_assert_int_eq(save_std("retry", &k, 1, &seg, NULL, 3.0f, &applied), 0);
    ck_assert(!applied);
    /* A retry after a lost reply: same segment again. */
    ck_assert_int_eq(save_std("retry", &k, 1, &seg, NULL, 3.0f, &applied), 0);
    ck_assert(applied);
    ck_assert_int_eq(ss_client_fetch(c, "retry", &k, 1, 0, 0, &r), 0);
    ck_assert_uint_eq(ss_fetch_result_next_segment(r, 0), 1);
    ss_fetch_result_free(r);
}
END_TEST

START_TEST(test_batch_save_fetch)
{
    enum { N = 16 };
    char names[N][16];
    ss_key keys[N];
    uint64_t seg[N];
    bool applied[N];
    ss_fetch_result *r = NULL;
    declare_std("batch", false);
    for (size_t k = 0; k < N; k++) {
        snprintf(names[k], sizeof names[k], "b%02zu", k);
        keys[k].data = names[k];
        keys[k].len = strlen(names[k]);
        seg[k] = 0;
    }
    ck_assert_int_eq(save_std("batch", keys, N, seg, NULL, 100.0f, applied), 0);
    ck_assert_int_eq(ss_client_fetch(c, "batch", keys, N, 0, 0, &r), 0);
    for (size_t k = 0; k < N; k++) {
        ck_assert_msg(!applied[k], "key %zu of a fresh batch reported already_applied "
                      "(per-key flags must be protobuf_c_boolean on the wire)", k);
        ck_assert_uint_eq(ss_fetch_result_next_segment(r, k), 1);
        ck_assert_float_eq(h_at(r, k, 1), 100.0f + (float)k + 0.1f);
    }
    ss_fetch_result_free(r);
    /* One stale segment in a batch: nothing of the batch applies. */
    for (size_t k = 0; k < N; k++)
        seg[k] = 1;
    seg[N - 1] = 0;
    bool fin[N] = {false};
    seg[N - 1] = 7;
    int rc = save_std("batch", keys, N, seg, fin, 200.0f, NULL);
    ck_assert_int_eq(rc, SS_ERR_STATUS(ST_FAILED_PRECONDITION));
    ck_assert_int_eq(ss_client_fetch(c, "batch", keys, N, 0, 0, &r), 0);
    for (size_t k = 0; k < N; k++) {
        ck_assert_uint_eq(ss_fetch_result_next_segment(r, k), 1);
        ck_assert_float_eq(h_at(r, k, 0), 100.0f + (float)k);
    }
    ss_fetch_result_free(r);
}
END_TEST

START_TEST(test_final_save)
{
    ss_key k[2] = {KEY("f1"), KEY("f2")};
    uint64_t seg[2] = {0, 0};
    bool fin[2] = {true, true};
    ss_fetch_result *r = NULL;
    declare_std("fin", false);
    declare_std("finkeep", true);
    ck_assert_int_eq(save_std("fin", k, 2, seg, fin, 1.0f, NULL), 0);
    ck_assert_int_eq(save_std("finkeep", k, 2, seg, fin, 1.0f, NULL), 0);
    /* Without keep_final the record is gone: back to the initial state. */
    ck_assert_int_eq(ss_client_fetch(c, "fin", k, 2, 0, 0, &r), 0);
    ck_assert_uint_eq(ss_fetch_result_next_segment(r, 0), 0);
    ck_assert_float_eq(h_at(r, 0, 0), h_init[0]);
    ss_fetch_result_free(r);
    ck_assert_int_eq(ss_client_fetch(c, "finkeep", k, 2, 0, 0, &r), 0);
    ck_assert_uint_eq(ss_fetch_result_next_segment(r, 1), 1);
    ck_assert_float_eq(h_at(r, 1, 0), 2.0f);
    ss_fetch_result_free(r);
}
END_TEST

/* Malformed saves: refused with a status, nothing stored, still serving. */
enum save_fault { F_DTYPE, F_SHAPE, F_NO_STATES, F_EMPTY_KEY, F_NO_SAVER };
struct save_case {
    const char *name;     /* what is wrong */
    enum save_fault fault; /* which fault to inject */
    int want;             /* expected return */
};

static const struct save_case save_cases[] = {
    {"int32 data for a float32 state", F_DTYPE, SS_ERR_STATUS(ST_INVALID_ARGUMENT)},
    {"wrong per-sequence shape", F_SHAPE, SS_ERR_STATUS(ST_INVALID_ARGUMENT)},
    {"missing states", F_NO_STATES, SS_ERR_STATUS(ST_INVALID_ARGUMENT)},
    {"empty key", F_EMPTY_KEY, SS_ERR_STATUS(ST_INVALID_ARGUMENT)},
    {"undeclared saver", F_NO_SAVER, SS_ERR_STATUS(ST_NOT_FOUND)},
};

START_TEST(test_save_bad)
{
    const struct save_case *sc = &save_cases[_i];
    float h[4] = {1, 2, 3, 4}, cc[2] = {5, 6};
    int32_t hi[4] = {1, 2, 3, 4};
    int64_t dim3 = 3;
    ss_state_data sd[2] = {
        {SS_DTYPE_FLOAT32, dim4, 1, h},
        {SS_DTYPE_FLOAT32, dim2, 1, cc},
    };
    ss_key k = KEY("victim");
    uint64_t seg = 0;
    size_t n_states = 2;
    char saver_name[32];
    const char *saver = saver_name;
    ss_fetch_result *r = NULL;
    snprintf(saver_name, sizeof saver_name, "badsave%d", _i);
    declare_std(saver_name, false);
    switch (sc->fault) {
    case F_DTYPE: sd[0].dtype = SS_DTYPE_INT32; sd[0].data = hi; break;
    case F_SHAPE: sd[0].shape = &dim3; break;
    case F_NO_STATES: n_states = 1; break;
    case F_EMPTY_KEY: k.len = 0; break;
    case F_NO_SAVER: saver = "never-declared"; break;
    }
    int rc = ss_client_save(c, saver, &k, 1, &seg, NULL, sd, n_states, NULL);
    ck_assert_msg(rc == sc->want, "%s: got %d (%s: %s)", sc->name, rc, ss_strerror(rc),
                  ss_client_last_error(c));
    ck_assert(ss_client_last_error(c)[0] != '\0');
    ss_key v = KEY("victim");
    ck_assert_int_eq(ss_client_fetch(c, saver_name, &v, 1, 0, 0, &r), 0);
    ck_assert_uint_eq(ss_fetch_result_next_segment(r, 0), 0);
    ss_fetch_result_free(r);
}
END_TEST

/* ---- barrier and pipelining ---------------------------------------------- */

START_TEST(test_barrier_timeout)
{
    ss_key k = KEY("slow");
    ss_fetch_result *r = NULL;
    declare_std("barrier1", false);
    int rc = ss_client_fetch(c, "barrier1", &k, 1, 1, 100, &r);
    ck_assert_int_eq(rc, SS_ERR_STATUS(ST_DEADLINE_EXCEEDED));
    ck_assert_ptr_null(r);
    /* Already reached: answers at once. */
    ck_assert_int_eq(ss_client_fetch(c, "barrier1", &k, 1, 0, 100, &r), 0);
    ss_fetch_result_free(r);
}
END_TEST

/* A held barrier fetch and a ping pipelined on one connection: the ping's
 * reply overtakes the fetch's, and each is matched to its request. */
START_TEST(test_barrier_out_of_order)
{
    ss_client *other = NULL;
    ss_key k = KEY("ooo");
    uint64_t seg = 0, id_fetch, id_ping;
    Statesaver__V1__FetchRequest f = STATESAVER__V1__FETCH_REQUEST__INIT;
    Statesaver__V1__PingRequest p = STATESAVER__V1__PING_REQUEST__INIT;
    Statesaver__V1__Request rf = STATESAVER__V1__REQUEST__INIT;
    Statesaver__V1__Request rp = STATESAVER__V1__REQUEST__INIT;
    Statesaver__V1__Response *resp = NULL;
    ProtobufCBinaryData kb = {k.len, (uint8_t *)"ooo"};

    declare_std("barrier2", false);
    f.saver = "barrier2";
    f.n_keys = 1;
    f.keys = &kb;
    f.min_segment = 1;
    f.wait_ms = 8000;
    rf.body_case = STATESAVER__V1__REQUEST__BODY_FETCH;
    rf.fetch = &f;
    rp.body_case = STATESAVER__V1__REQUEST__BODY_PING;
    rp.ping = &p;
    ck_assert_int_eq(ss_client_send(c, &rf, &id_fetch), 0);
    ck_assert_int_eq(ss_client_send(c, &rp, &id_ping), 0);
    ck_assert_uint_ne(id_fetch, id_ping);
    ck_assert_int_eq(ss_client_recv(c, id_ping, 5000, &resp), 0);
    ck_assert_uint_eq(resp->id, id_ping);
    ck_assert_int_eq(resp->body_case, STATESAVER__V1__RESPONSE__BODY_PING);
    ss_client_response_free(resp);
    /* Release the barrier from another connection. */
    ck_assert_int_eq(ss_client_connect(&other, srv.addr, TEST_TIMEOUT_MS), 0);
    ss_client *mine = c;
    c = other;
    ck_assert_int_eq(save_std("barrier2", &k, 1, &seg, NULL, 4.0f, NULL), 0);
    c = mine;
    ss_client_close(other);
    ck_assert_int_eq(ss_client_recv(c, id_fetch, 8000, &resp), 0);
    ck_assert_int_eq(resp->body_case, STATESAVER__V1__RESPONSE__BODY_FETCH);
    ck_assert_uint_eq(resp->fetch->next_segment[0], 1);
    ss_client_response_free(resp);
    /* Unknown id. */
    ck_assert_int_eq(ss_client_recv(c, 987654, 100, &resp), SS_ERR_INVALID);
}
END_TEST

/* A call that times out abandons its id; the connection stays usable and
 * the late reply is discarded. */
START_TEST(test_recv_timeout_abandons)
{
    Statesaver__V1__FetchRequest f = STATESAVER__V1__FETCH_REQUEST__INIT;
    Statesaver__V1__Request rf = STATESAVER__V1__REQUEST__INIT;
    Statesaver__V1__Response *resp = NULL;
    ProtobufCBinaryData kb = {4, (uint8_t *)"late"};
    uint64_t id;
    declare_std("late", false);
    f.saver = "late";
    f.n_keys = 1;
    f.keys = &kb;
    f.min_segment = 3;
    f.wait_ms = 300;
    rf.body_case = STATESAVER__V1__REQUEST__BODY_FETCH;
    rf.fetch = &f;
    ck_assert_int_eq(ss_client_send(c, &rf, &id), 0);
    ck_assert_int_eq(ss_client_recv(c, id, 50, &resp), SS_ERR_TIMEOUT);
    ck_assert_ptr_null(resp);
    ck_assert(!ss_client_broken(c));
    usleep(400 * 1000); /* the DEADLINE_EXCEEDED reply arrives meanwhile */
    ck_assert_int_eq(ss_client_ping(c, NULL), 0);
    ck_assert_int_eq(ss_client_recv(c, id, 50, &resp), SS_ERR_INVALID);
}
END_TEST

/* ---- drop, list, stats ------------------------------------------------- */

START_TEST(test_drop)
{
    ss_key k[3] = {KEY("d1"), KEY("d2"), KEY("d3")};
    uint64_t seg[3] = {0, 0, 0}, dropped = 0;
    ss_fetch_result *r = NULL;
    declare_std("drop", false);
    ck_assert_int_eq(save_std("drop", k, 3, seg, NULL, 1.0f, NULL), 0);
    ck_assert_int_eq(ss_client_drop(c, "drop", k, 2, false, &dropped), 0);
    ck_assert_uint_eq(dropped, 2);
    ck_assert_int_eq(ss_client_fetch(c, "drop", k, 3, 0, 0, &r), 0);
    ck_assert_uint_eq(ss_fetch_result_next_segment(r, 0), 0);
    ck_assert_uint_eq(ss_fetch_result_next_segment(r, 1), 0);
    ck_assert_uint_eq(ss_fetch_result_next_segment(r, 2), 1);
    ss_fetch_result_free(r);
    ck_assert_int_eq(ss_client_drop(c, "drop", NULL, 0, true, &dropped), 0);
    int rc = ss_client_fetch(c, "drop", k, 1, 0, 0, &r);
    ck_assert_int_eq(rc, SS_ERR_STATUS(ST_NOT_FOUND));
    ck_assert_ptr_null(r);
    /* The name is free again, for any schema. */
    ss_state_def one = {"x", SS_DTYPE_FLOAT32, dim2, 1, NULL, 0};
    bool created = false;
    ck_assert_int_eq(ss_client_declare(c, "drop", &one, 1, 0, false, &created), 0);
    ck_assert(created);
}
END_TEST

START_TEST(test_list_paging)
{
    enum { N = 25 };
    char names[N][16];
    ss_key keys[N];
    uint64_t seg[N];
    ss_list_result *page = NULL;
    declare_std("listing", false);
    for (size_t k = 0; k < N; k++) {
        snprintf(names[k], sizeof names[k], "%s%02zu", k % 5 == 0 ? "p" : "k", k);
        keys[k].data = names[k];
        keys[k].len = strlen(names[k]);
        seg[k] = 0;
    }
    ck_assert_int_eq(save_std("listing", keys, N, seg, NULL, 0.0f, NULL), 0);
    ss_key after = {NULL, 0};
    char last[16] = "";
    size_t total = 0, pages = 0;
    for (;;) {
        ck_assert_int_eq(ss_client_list(c, "listing", NULL, after.len ? &after : NULL,
                                        10, &page), 0);
        size_t n = ss_list_result_sequences(page);
        ck_assert_uint_le(n, 10);
        for (size_t i = 0; i < n; i++) {
            size_t len;
            const char *key = ss_list_result_key(page, i, &len);
            char cur[16];
            snprintf(cur, sizeof cur, "%.*s", (int)len, key);
            ck_assert_msg(strcmp(cur, last) > 0, "keys out of order: %s after %s", cur, last);
            snprintf(last, sizeof last, "%s", cur);
            ck_assert_uint_eq(ss_list_result_next_segment(page, i), 1);
            ck_assert_uint_gt(ss_list_result_updated_ms(page, i), 0);
        }
        total += n;
        pages++;
        bool more = ss_list_result_more(page);
        ss_list_result_free(page);
        page = NULL;
        if (!more)
            break;
        after.data = last;
        after.len = strlen(last);
        ck_assert_uint_lt(pages, 10);
    }
    ck_assert_uint_eq(total, N);
    ck_assert_uint_eq(pages, 3);
    /* Prefix: the five "p" keys. */
    ss_key pfx = KEY("p");
    ck_assert_int_eq(ss_client_list(c, "listing", &pfx, NULL, 0, &page), 0);
    ck_assert_uint_eq(ss_list_result_sequences(page), 5);
    ck_assert(!ss_list_result_more(page));
    ss_list_result_free(page);
    /* Savers: "listing" with its schema and count. */
    ck_assert_int_eq(ss_client_list(c, NULL, NULL, NULL, 0, &page), 0);
    bool found = false;
    for (size_t i = 0; i < ss_list_result_savers(page); i++) {
        ss_saver_info info;
        ck_assert_int_eq(ss_list_result_saver(page, i, &info), 0);
        if (strcmp(info.name, "listing") != 0)
            continue;
        found = true;
        ck_assert_uint_eq(info.sequences, N);
        ck_assert_uint_eq(info.n_states, 2);
        int dtype;
        const int64_t *shape;
        size_t rank;
        const char *sn = ss_list_result_saver_state(page, i, 0, &dtype, &shape, &rank);
        ck_assert_str_eq(sn, "h");
        ck_assert_int_eq(dtype, SS_DTYPE_FLOAT32);
        ck_assert_uint_eq(rank, 1);
        ck_assert_int_eq(shape[0], 4);
        ck_assert_ptr_null(ss_list_result_saver_state(page, i, 2, NULL, NULL, NULL));
    }
    ck_assert(found);
    ss_saver_info none;
    ck_assert_int_eq(ss_list_result_saver(page, 9999, &none), SS_ERR_INVALID);
    ss_list_result_free(page);
    ss_list_result_free(NULL);
}
END_TEST

START_TEST(test_stats)
{
    ss_server_stats s, s2;
    ss_key k[3] = {KEY("s1"), KEY("s2"), KEY("s3")};
    uint64_t seg[3] = {0, 0, 0};
    declare_std("stats", false);
    ck_assert_int_eq(save_std("stats", k, 3, seg, NULL, 1.0f, NULL), 0);
    ck_assert_int_eq(ss_client_stats(c, NULL, &s), 0);
    ck_assert_uint_ge(s.savers, 1);
    ck_assert_uint_ge(s.sequences, 3);
    ck_assert_uint_ge(s.connections, 1);
    ck_assert_uint_ge(s.requests, 3);
    ck_assert_uint_ge(s.commits, 1);
    ck_assert_uint_gt(s.map_size, 0);
    ck_assert_int_eq(ss_client_stats(c, "stats", &s2), 0);
    ck_assert_uint_eq(s2.sequences, 3);
    ck_assert_int_eq(ss_client_stats(c, "no-such-saver", &s2),
                     SS_ERR_STATUS(ST_NOT_FOUND));
}
END_TEST

/* ---- IPv6 ----------------------------------------------------------------- */

START_TEST(test_ipv6_literal)
{
    ss_client *x = NULL;
    uint64_t t = 0;
    int rc = ss_client_connect(&x, v6_srv.addr, TEST_TIMEOUT_MS);
    ck_assert_msg(rc == 0, "%s: %s", v6_srv.addr, ss_strerror(rc));
    ck_assert_int_eq(ss_client_ping(x, &t), 0);
    ck_assert_uint_gt(t, 0);
    ss_client_close(x);
}
END_TEST

/* ---- authentication ------------------------------------------------------ */

struct auth_case {
    const char *name;  /* what is presented */
    const char *token; /* token or NULL */
    int want;          /* expected result of ss_client_open + ping */
};

static const struct auth_case auth_cases[] = {
    {"right token", AUTH_TOKEN, 0},
    {"wrong token", "s3cret-tokeX", SS_ERR_STATUS(ST_UNAUTHENTICATED)},
    {"prefix of the token", "s3cret", SS_ERR_STATUS(ST_UNAUTHENTICATED)},
    {"empty token", "", SS_ERR_STATUS(ST_UNAUTHENTICATED)},
    {"no hello", NULL, SS_ERR_STATUS(ST_UNAUTHENTICATED)},
};

START_TEST(test_auth)
{
    const struct auth_case *ac = &auth_cases[_i];
    ss_client_options o;
    ss_client *x = NULL;
    char err[512] = "";
    ss_client_options_init(&o);
    o.server = auth_srv.addr;
    o.timeout_ms = TEST_TIMEOUT_MS;
    o.token = ac->token;
    o.token_len = ac->token ? strlen(ac->token) : 0;
    int rc = ss_client_open(&x, &o, err, sizeof err);
    if (rc == 0) {
        rc = ss_client_ping(x, NULL);
        if (rc < 0)
            snprintf(err, sizeof err, "%s", ss_client_last_error(x));
    }
    ck_assert_msg(rc == ac->want, "%s: got %d (%s: %s)", ac->name, rc, ss_strerror(rc), err);
    if (ac->want != 0)
        ck_assert_msg(strstr(err, "UNAUTHENTICATED") != NULL, "%s: message %s", ac->name, err);
    ss_client_close(x);
}
END_TEST

static Suite *client_suite(void)
{
    Suite *s = suite_create("client");
    TCase *tc = tcase_create("offline");
    tcase_add_test(tc, test_connect_refused);
    tcase_add_test(tc, test_connect_timeout);
    tcase_add_loop_test(tc, test_connect_bad_address, 0,
                        sizeof addr_cases / sizeof addr_cases[0]);
    suite_add_tcase(s, tc);

    tc = tcase_create("server");
    tcase_add_unchecked_fixture(tc, start_plain, stop_plain);
    tcase_add_checked_fixture(tc, connect_client, close_client);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_connect_hostname_and_ping);
    tcase_add_test(tc, test_hello_info);
    tcase_add_test(tc, test_declare_same_and_different);
    tcase_add_loop_test(tc, test_declare_bad, 0,
                        sizeof declare_cases / sizeof declare_cases[0]);
    tcase_add_test(tc, test_fetch_initial);
    tcase_add_test(tc, test_save_fetch_roundtrip);
    tcase_add_test(tc, test_cas_conflict_message);
    tcase_add_test(tc, test_already_applied);
    tcase_add_test(tc, test_batch_save_fetch);
    tcase_add_test(tc, test_final_save);
    tcase_add_loop_test(tc, test_save_bad, 0, sizeof save_cases / sizeof save_cases[0]);
    tcase_add_test(tc, test_barrier_timeout);
    tcase_add_test(tc, test_barrier_out_of_order);
    tcase_add_test(tc, test_recv_timeout_abandons);
    tcase_add_test(tc, test_drop);
    tcase_add_test(tc, test_list_paging);
    tcase_add_test(tc, test_stats);
    suite_add_tcase(s, tc);

    tc = tcase_create("ipv6");
    tcase_add_unchecked_fixture(tc, start_v6, stop_v6);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_ipv6_literal);
    suite_add_tcase(s, tc);

    tc = tcase_create("auth");
    tcase_add_unchecked_fixture(tc, start_auth, stop_auth);
    tcase_set_timeout(tc, 60);
    tcase_add_loop_test(tc, test_auth, 0, sizeof auth_cases / sizeof auth_cases[0]);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(client_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
