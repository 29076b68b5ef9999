/* test_etcd -- Check suite for common/ss_etcd against a real etcd
 * (/usr/bin/etcd, Debian etcd-server) started on loopback with ports the
 * OS picked, in a temporary data directory, and stopped at the end. */
#include <check.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "ss_error.h"
#include "ss_etcd.h"

#define ETCD_BIN "/usr/bin/etcd"
#define ETCD_START_MS 20000 /* how long etcd may take to answer */

static pid_t g_etcd = -1;
static char g_dir[256];
static char g_url[64];

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    close(fd);
    return ntohs(a.sin_port);
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static void etcd_start(void)
{
    char peer[64], listen_c[80], listen_p[80], cluster[96], data[300];
    snprintf(g_dir, sizeof g_dir, "/tmp/ss-etcd-test-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(g_dir));
    int cport = free_port(), pport = free_port();
    snprintf(g_url, sizeof g_url, "http://127.0.0.1:%d", cport);
    snprintf(peer, sizeof peer, "http://127.0.0.1:%d", pport);
    snprintf(listen_c, sizeof listen_c, "%s", g_url);
    snprintf(listen_p, sizeof listen_p, "%s", peer);
    snprintf(cluster, sizeof cluster, "default=%s", peer);
    snprintf(data, sizeof data, "%s/data", g_dir);
    g_etcd = fork();
    ck_assert_int_ge(g_etcd, 0);
    if (g_etcd == 0) {
        char logp[300];
        snprintf(logp, sizeof logp, "%s/etcd.log", g_dir);
        FILE *f = freopen(logp, "w", stderr);
        (void)f;
        execl(ETCD_BIN, ETCD_BIN, "--data-dir", data, "--name", "default",
              "--listen-client-urls", listen_c, "--advertise-client-urls", listen_c,
              "--listen-peer-urls", listen_p, "--initial-advertise-peer-urls", listen_p,
              "--initial-cluster", cluster, "--log-level", "error", (char *)NULL);
        _exit(127);
    }
    ss_etcd *e = NULL;
    ck_assert_int_eq(ss_etcd_new(g_url, 500, &e), 0);
    char err[256];
    for (int waited = 0;; waited += 50) {
        int64_t rev = 0;
        int rc = ss_etcd_put(e, "/probe", "x", 1, &rev, err, sizeof err);
        if (rc == 0)
            break;
        ck_assert_msg(waited < ETCD_START_MS, "etcd did not start: %s", err);
        sleep_ms(50);
    }
    ss_etcd_free(e);
}

static void etcd_stop(void)
{
    if (g_etcd > 0) {
        kill(g_etcd, SIGKILL);
        waitpid(g_etcd, NULL, 0);
        g_etcd = -1;
    }
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", g_dir);
}

START_TEST(test_b64)
{
    const char *cases[][2] = {{"", ""}, {"f", "Zg=="}, {"fo", "Zm8="}, {"foo", "Zm9v"},
                              {"foob", "Zm9vYg=="}, {"foobar", "Zm9vYmFy"}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *t = ss_etcd_b64_encode(cases[i][0], strlen(cases[i][0]));
        ck_assert_str_eq(t, cases[i][1]);
        size_t n = 0;
        char *d = ss_etcd_b64_decode(t, &n);
        ck_assert_uint_eq(n, strlen(cases[i][0]));
        ck_assert_mem_eq(d, cases[i][0], n);
        free(t);
        free(d);
    }
    unsigned char all[256];
    for (int i = 0; i < 256; i++)
        all[i] = (unsigned char)i;
    char *t = ss_etcd_b64_encode(all, sizeof all);
    size_t n = 0;
    char *d = ss_etcd_b64_decode(t, &n);
    ck_assert_uint_eq(n, 256);
    ck_assert_mem_eq(d, all, 256);
    free(t);
    free(d);
    ck_assert_ptr_null(ss_etcd_b64_decode("Zm9", &n));
    ck_assert_ptr_null(ss_etcd_b64_decode("Zm=v", &n));
    ck_assert_ptr_null(ss_etcd_b64_decode("Zm9*", &n));
}
END_TEST

START_TEST(test_bad_endpoint)
{
    ss_etcd *e = NULL;
    ck_assert_int_eq(ss_etcd_new("127.0.0.1:2379", 0, &e), SS_ERR_INVALID);
    ck_assert_int_eq(ss_etcd_new("", 0, &e), SS_ERR_INVALID);
    ck_assert_ptr_null(e);
    ss_etcd_free(NULL);
    ss_etcd_watch_free(NULL);
}
END_TEST

START_TEST(test_unreachable)
{
    /* a port nothing listens on: connect refused at once, SS_ERR_CONNECT */
    char url[64], err[256];
    snprintf(url, sizeof url, "http://127.0.0.1:%d", free_port());
    ss_etcd *e = NULL;
    ck_assert_int_eq(ss_etcd_new(url, 1000, &e), 0);
    char *v = NULL;
    size_t n = 0;
    int64_t mod = 0;
    int rc = ss_etcd_get(e, "/k", &v, &n, &mod, NULL, err, sizeof err);
    ck_assert_int_eq(rc, SS_ERR_CONNECT);
    ck_assert_ptr_nonnull(strstr(err, url));
    ss_etcd_watch *w = NULL;
    ck_assert_int_eq(ss_etcd_watch_new(e, &w), 0);
    rc = ss_etcd_watch_run(w, "/k", 0, 2000, NULL, NULL, NULL, err, sizeof err);
    ck_assert_int_eq(rc, SS_ERR_CONNECT);
    ss_etcd_watch_free(w);
    ss_etcd_free(e);
}
END_TEST

START_TEST(test_kv)
{
    char err[256];
    ss_etcd *e = NULL;
    ck_assert_int_eq(ss_etcd_new(g_url, 0, &e), 0);
    char *v = NULL;
    size_t n = 0;
    int64_t mod = 0, rev = 0, rev2 = 0;
    ck_assert_int_eq(ss_etcd_get(e, "/t/kv", &v, &n, &mod, &rev, err, sizeof err),
                     SS_ERR_NOT_FOUND);
    ck_assert_int_gt(rev, 0);
    /* binary value round trip */
    const char val[] = {'a', 0, 'b', (char)0xff, '\n'};
    ck_assert_int_eq(ss_etcd_put(e, "/t/kv", val, sizeof val, &rev, err, sizeof err), 0);
    ck_assert_int_eq(ss_etcd_get(e, "/t/kv", &v, &n, &mod, &rev2, err, sizeof err), 0);
    ck_assert_uint_eq(n, sizeof val);
    ck_assert_mem_eq(v, val, sizeof val);
    ck_assert_int_eq(mod, rev);
    ck_assert_int_ge(rev2, rev);
    free(v);
    /* empty value */
    ck_assert_int_eq(ss_etcd_put(e, "/t/empty", "", 0, NULL, err, sizeof err), 0);
    ck_assert_int_eq(ss_etcd_get(e, "/t/empty", &v, &n, &mod, NULL, err, sizeof err), 0);
    ck_assert_uint_eq(n, 0);
    free(v);
    /* delete */
    int deleted = 0;
    ck_assert_int_eq(ss_etcd_delete(e, "/t/kv", &deleted, err, sizeof err), 0);
    ck_assert_int_eq(deleted, 1);
    ck_assert_int_eq(ss_etcd_delete(e, "/t/kv", &deleted, err, sizeof err), 0);
    ck_assert_int_eq(deleted, 0);
    ck_assert_int_eq(ss_etcd_get(e, "/t/kv", &v, &n, &mod, NULL, err, sizeof err),
                     SS_ERR_NOT_FOUND);
    ck_assert_ptr_null(v);
    ck_assert_int_eq(ss_etcd_put(e, "", "x", 1, NULL, err, sizeof err), SS_ERR_INVALID);
    ss_etcd_free(e);
}
END_TEST

START_TEST(test_cas)
{
    char err[256];
    ss_etcd *e = NULL;
    ck_assert_int_eq(ss_etcd_new(g_url, 0, &e), 0);
    int64_t r1 = 0, r2 = 0, mod = 0;
    /* 0 = must not exist */
    ck_assert_int_eq(ss_etcd_cas(e, "/t/cas", "one", 3, 0, &r1, err, sizeof err), 0);
    ck_assert_int_eq(ss_etcd_cas(e, "/t/cas", "two", 3, 0, &r2, err, sizeof err),
                     SS_ERR_CONFLICT);
    ck_assert_ptr_nonnull(strstr(err, "/t/cas"));
    /* wrong revision refused, nothing written */
    ck_assert_int_eq(ss_etcd_cas(e, "/t/cas", "two", 3, r1 + 1000, &r2, err, sizeof err),
                     SS_ERR_CONFLICT);
    char *v = NULL;
    size_t n = 0;
    ck_assert_int_eq(ss_etcd_get(e, "/t/cas", &v, &n, &mod, NULL, err, sizeof err), 0);
    ck_assert_str_eq(v, "one");
    ck_assert_int_eq(mod, r1);
    free(v);
    /* right revision accepted */
    ck_assert_int_eq(ss_etcd_cas(e, "/t/cas", "two", 3, r1, &r2, err, sizeof err), 0);
    ck_assert_int_gt(r2, r1);
    ck_assert_int_eq(ss_etcd_get(e, "/t/cas", &v, &n, &mod, NULL, err, sizeof err), 0);
    ck_assert_str_eq(v, "two");
    ck_assert_int_eq(mod, r2);
    free(v);
    /* the old revision no longer matches */
    ck_assert_int_eq(ss_etcd_cas(e, "/t/cas", "three", 5, r1, NULL, err, sizeof err),
                     SS_ERR_CONFLICT);
    ss_etcd_free(e);
}
END_TEST

/* ---- watch ---- */

typedef struct seen {
    int n;                 /* events seen */
    char last[64];         /* last value */
    int last_type;         /* last event type */
    int64_t last_mod;      /* last mod_revision */
    int stop_after;        /* end the watch after this many events (0 = never) */
} seen;

static int on_event(void *arg, ss_etcd_event_type type, const char *key,
                    const char *value, size_t len, int64_t mod)
{
    seen *s = arg;
    ck_assert_str_eq(key, "/t/w");
    s->n++;
    snprintf(s->last, sizeof s->last, "%.*s", (int)len, value);
    s->last_type = (int)type;
    s->last_mod = mod;
    return s->stop_after && s->n >= s->stop_after;
}

START_TEST(test_watch_history)
{
    /* events from a start revision arrive in order; the callback ends it */
    char err[256];
    ss_etcd *e = NULL;
    ck_assert_int_eq(ss_etcd_new(g_url, 0, &e), 0);
    int64_t r1 = 0, r3 = 0;
    ck_assert_int_eq(ss_etcd_put(e, "/t/w", "v1", 2, &r1, err, sizeof err), 0);
    ck_assert_int_eq(ss_etcd_put(e, "/t/w", "v2", 2, NULL, err, sizeof err), 0);
    ck_assert_int_eq(ss_etcd_delete(e, "/t/w", NULL, err, sizeof err), 0);
    ck_assert_int_eq(ss_etcd_put(e, "/t/w", "v3", 2, &r3, err, sizeof err), 0);
    ss_etcd_watch *w = NULL;
    ck_assert_int_eq(ss_etcd_watch_new(e, &w), 0);
    seen s = {.stop_after = 4};
    int64_t next = 0;
    int rc = ss_etcd_watch_run(w, "/t/w", r1, 10000, on_event, &s, &next, err, sizeof err);
    ck_assert_msg(rc == 0, "watch: %s", err);
    ck_assert_int_eq(s.n, 4);
    ck_assert_str_eq(s.last, "v3");
    ck_assert_int_eq(s.last_type, SS_ETCD_EVENT_PUT);
    ck_assert_int_eq(s.last_mod, r3);
    ck_assert_int_eq(next, r3 + 1);
    /* a max_ms with no event returns 0 with the same resume revision */
    s = (seen){0};
    rc = ss_etcd_watch_run(w, "/t/w", next, 300, on_event, &s, &next, err, sizeof err);
    ck_assert_int_eq(rc, 0);
    ck_assert_int_eq(s.n, 0);
    ck_assert_int_eq(next, r3 + 1);
    ss_etcd_watch_free(w);
    ss_etcd_free(e);
}
END_TEST

typedef struct watcher {
    ss_etcd_watch *w;      /* the watch */
    seen s;                /* what it saw */
    atomic_int created;    /* the thread started watching */
    int rc;                /* ss_etcd_watch_run's result */
    char err[256];         /* its message */
} watcher;

static void *watch_thread(void *arg)
{
    watcher *x = arg;
    atomic_store(&x->created, 1);
    x->rc = ss_etcd_watch_run(x->w, "/t/w", 0, 0, on_event, &x->s, NULL, x->err,
                              sizeof x->err);
    return NULL;
}

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

START_TEST(test_watch_live_and_stop)
{
    /* a watch in its own thread sees a put made after it started, quickly,
     * and stop ends it well within a second */
    char err[256];
    ss_etcd *e = NULL;
    ck_assert_int_eq(ss_etcd_new(g_url, 0, &e), 0);
    watcher x = {0};
    ck_assert_int_eq(ss_etcd_watch_new(e, &x.w), 0);
    pthread_t th;
    ck_assert_int_eq(pthread_create(&th, NULL, watch_thread, &x), 0);
    while (!atomic_load(&x.created))
        sleep_ms(5);
    /* put until the watcher sees one (the stream may not be open yet) */
    uint64_t t0 = now_ms();
    int seen_n = 0;
    for (int i = 0; i < 200 && seen_n == 0; i++) {
        ck_assert_int_eq(ss_etcd_put(e, "/t/w", "live", 4, NULL, err, sizeof err), 0);
        for (int j = 0; j < 10 && (seen_n = __atomic_load_n(&x.s.n, __ATOMIC_SEQ_CST)) == 0; j++)
            sleep_ms(5);
    }
    ck_assert_int_gt(seen_n, 0);
    ck_assert_uint_lt(now_ms() - t0, 2000);
    uint64_t t1 = now_ms();
    ss_etcd_watch_stop(x.w);
    pthread_join(th, NULL);
    ck_assert_uint_lt(now_ms() - t1, 1000);
    ck_assert_msg(x.rc == 0, "watch: %s", x.err);
    ck_assert_str_eq(x.s.last, "live");
    /* a stopped watch returns at once until reset */
    ck_assert_int_eq(ss_etcd_watch_run(x.w, "/t/w", 0, 5000, on_event, &x.s, NULL, err,
                                       sizeof err), 0);
    ss_etcd_watch_reset(x.w);
    ss_etcd_watch_free(x.w);
    ss_etcd_free(e);
}
END_TEST

START_TEST(test_watch_etcd_dies)
{
    /* killing etcd breaks a running watch with an error (runs last: the
     * fixture restarts nothing afterwards) */
    ss_etcd *e = NULL;
    ck_assert_int_eq(ss_etcd_new(g_url, 0, &e), 0);
    watcher x = {0};
    ck_assert_int_eq(ss_etcd_watch_new(e, &x.w), 0);
    pthread_t th;
    ck_assert_int_eq(pthread_create(&th, NULL, watch_thread, &x), 0);
    while (!atomic_load(&x.created))
        sleep_ms(5);
    sleep_ms(300);
    uint64_t t0 = now_ms();
    kill(g_etcd, SIGKILL);
    waitpid(g_etcd, NULL, 0);
    g_etcd = -1;
    pthread_join(th, NULL);
    ck_assert_uint_lt(now_ms() - t0, 3000);
    ck_assert_int_lt(x.rc, 0);
    ck_assert_msg(x.rc == SS_ERR_CLOSED || x.rc == SS_ERR_CONNECT, "rc %d: %s", x.rc, x.err);
    char err[256], *v = NULL;
    size_t n = 0;
    int64_t mod = 0;
    ck_assert_int_eq(ss_etcd_get(e, "/t/w", &v, &n, &mod, NULL, err, sizeof err),
                     SS_ERR_CONNECT);
    ss_etcd_watch_free(x.w);
    ss_etcd_free(e);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("etcd");
    TCase *offline = tcase_create("offline");
    tcase_add_test(offline, test_b64);
    tcase_add_test(offline, test_bad_endpoint);
    tcase_add_test(offline, test_unreachable);
    suite_add_tcase(s, offline);
    TCase *live = tcase_create("live");
    tcase_add_unchecked_fixture(live, etcd_start, etcd_stop);
    tcase_set_timeout(live, 60);
    tcase_add_test(live, test_kv);
    tcase_add_test(live, test_cas);
    tcase_add_test(live, test_watch_history);
    tcase_add_test(live, test_watch_live_and_stop);
    tcase_add_test(live, test_watch_etcd_dies);
    suite_add_tcase(s, live);
    SRunner *sr = srunner_create(s);
    srunner_set_fork_status(sr, CK_NOFORK);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
