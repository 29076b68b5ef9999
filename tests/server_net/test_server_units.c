/* test_server_units -- server modules without a network: flag parsing
 * (config), the error-to-status mapping (dispatch). */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "dispatch.h"
#include "commit_events.h"
#include "msg_utf8.h"
#include "ss_error.h"

typedef struct listen_case {
    const char *arg;  /* --listen value */
    int ok;           /* 1 = accepted */
    const char *host; /* expected host */
    int port;         /* expected port */
} listen_case;

static const listen_case listen_cases[] = {
    {"127.0.0.1:7450", 1, "127.0.0.1", 7450},
    {"0.0.0.0:0", 1, "0.0.0.0", 0},
    {"[::1]:80", 1, "::1", 80},
    {"[::]:65535", 1, "::", 65535},
    {"::1:80", 0, NULL, 0},          /* IPv6 needs brackets */
    {"127.0.0.1", 0, NULL, 0},       /* no port */
    {"127.0.0.1:", 0, NULL, 0},
    {":7450", 0, NULL, 0},           /* no host */
    {"127.0.0.1:65536", 0, NULL, 0},
    {"127.0.0.1:-1", 0, NULL, 0},
    {"127.0.0.1:80x", 0, NULL, 0},
    {"[::1]80", 0, NULL, 0},
    {"[::1", 0, NULL, 0},
};

START_TEST(test_listen)
{
    const listen_case *lc = &listen_cases[_i];
    char host[SS_HOST_MAX] = "";
    int port = -1;
    int rc = ss_config_parse_listen(lc->arg, host, &port);
    ck_assert_msg((rc == 0) == lc->ok, "'%s': rc %d", lc->arg, rc);
    if (lc->ok) {
        ck_assert_str_eq(host, lc->host);
        ck_assert_int_eq(port, lc->port);
    }
}
END_TEST

typedef struct argv_case {
    const char *args[8]; /* after argv[0], NULL-terminated */
    int rc;              /* 0 run, 1 help/version, <0 error */
} argv_case;

static const argv_case argv_cases[] = {
    {{"--data", "d", NULL}, 0},
    {{"--data", "d", "--sync", "off", "--max-keys", "10", NULL}, 0},
    {{"--data", "d", "--max-frame-bytes", "1M", NULL}, 0},
    {{"--data", "d", "--map-size", "2G", "--idle-timeout-ms", "0", NULL}, 0},
    {{"--help", NULL}, 1},
    {{"--version", NULL}, 1},
    {{NULL}, SS_ERR_INVALID},                                /* no --data */
    {{"--data", "d", "--sync", "yes", NULL}, SS_ERR_INVALID},
    {{"--data", "d", "--max-keys", "0", NULL}, SS_ERR_INVALID},
    {{"--data", "d", "--max-keys", "-5", NULL}, SS_ERR_INVALID},
    {{"--data", "d", "--max-frame-bytes", "10", NULL}, SS_ERR_INVALID},
    {{"--data", "d", "--max-frame-bytes", "5G", NULL}, SS_ERR_INVALID},
    {{"--data", "d", "--max-key-bytes", "1kb", NULL}, SS_ERR_INVALID},
    {{"--data", "d", "--log-level", "trace", NULL}, SS_ERR_INVALID},
    {{"--data", "d", "--listen", NULL}, SS_ERR_INVALID},     /* no value */
    {{"--data", "d", "extra", NULL}, SS_ERR_INVALID},
    {{"--data", "d", "--nope", NULL}, SS_ERR_INVALID},
    {{"--data", "d", "--auth-token-file", "/nonexistent/t", NULL}, SS_ERR_IO},
    /* issue 8: strict integers (ss_parse_u64) and keys the store accepts */
    {{"--data", "d", "--max-keys", " -1", NULL}, SS_ERR_INVALID},
    {{"--data", "d", "--max-keys", " 5", NULL}, SS_ERR_INVALID},
    {{"--data", "d", "--max-keys", "+5", NULL}, SS_ERR_INVALID},
    {{"--data", "d", "--max-key-bytes", "65535", NULL}, 0},
    {{"--data", "d", "--max-key-bytes", "65536", NULL}, SS_ERR_INVALID},
    {{"--data", "d", "--max-key-bytes", "1M", NULL}, SS_ERR_INVALID},
    {{"--data", "d", "--max-unauth-frame-bytes", "100", NULL}, SS_ERR_INVALID},
    {{"--data", "d", "--frame-timeout-ms", "0", "--max-parked-total", "7",
      NULL}, 0},
};

START_TEST(test_argv)
{
    const argv_case *ac = &argv_cases[_i];
    char *argv[10];
    int argc = 0;
    argv[argc++] = "statesaver-server";
    for (int i = 0; ac->args[i]; i++)
        argv[argc++] = (char *)ac->args[i];
    argv[argc] = NULL;
    ss_config cfg;
    ss_config_init(&cfg);
    FILE *null = fopen("/dev/null", "w");
    int rc = ss_config_parse(&cfg, argc, argv, null, null);
    fclose(null);
    ck_assert_msg(rc == ac->rc, "case %d: rc %d, want %d", _i, rc, ac->rc);
    ss_config_clear(&cfg);
}
END_TEST

START_TEST(test_values)
{
    char *argv[] = {"s", "--data", "d", "--max-frame-bytes", "1M",
                    "--max-output-bytes", "64k", "--sync", "off",
                    "--listen", "[::1]:0", NULL};
    ss_config cfg;
    ss_config_init(&cfg);
    ck_assert_int_eq(ss_config_parse(&cfg, 11, argv, stdout, stderr), 0);
    ck_assert_uint_eq(cfg.max_frame_bytes, 1u << 20);
    ck_assert_uint_eq(cfg.max_output_bytes, 64u << 10);
    ck_assert(!cfg.sync);
    ck_assert_str_eq(cfg.host, "::1");
    ck_assert_int_eq(cfg.port, 0);
    ck_assert_str_eq(cfg.data_dir, "d");
    ck_assert_uint_eq(cfg.max_keys, SS_KEYS_PER_REQUEST_DEFAULT);
    ss_config copy;
    ck_assert_int_eq(ss_config_copy(&copy, &cfg), 0);
    ck_assert_str_eq(copy.data_dir, "d");
    ss_config_clear(&copy);
    ss_config_clear(&cfg);
}
END_TEST

/* Token files: one trailing line ending stripped (common/ss_token.h, the
 * same rule as the CLI and the worker, so both ends read the same token),
 * empty refused. */
typedef struct token_case {
    const char *content; /* file bytes */
    size_t len;          /* bytes */
    int rc;              /* expected */
    const char *token;   /* expected token */
} token_case;

static const token_case token_cases[] = {
    {"abc\n", 4, 0, "abc"},
    {"abc\r\n", 5, 0, "abc"},
    {"abc", 3, 0, "abc"},
    {"a b\n\n", 5, 0, "a b\n"},
    {"\n", 1, SS_ERR_INVALID, NULL},
    {"", 0, SS_ERR_INVALID, NULL},
};

START_TEST(test_token)
{
    const token_case *tc = &token_cases[_i];
    char path[] = "/tmp/ss-token-XXXXXX";
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, tc->content, tc->len), (ssize_t)tc->len);
    close(fd);
    uint8_t *tok = NULL;
    size_t len = 0;
    FILE *null = fopen("/dev/null", "w");
    int rc = ss_config_read_token(path, &tok, &len, null);
    fclose(null);
    unlink(path);
    ck_assert_int_eq(rc, tc->rc);
    if (rc == 0) {
        ck_assert_uint_eq(len, strlen(tc->token));
        ck_assert(memcmp(tok, tc->token, len) == 0);
    }
    free(tok);
}
END_TEST

START_TEST(test_token_too_big)
{
    char path[] = "/tmp/ss-token-XXXXXX";
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    char buf[SS_TOKEN_MAX + 1];
    memset(buf, 'x', sizeof buf);
    ck_assert_int_eq(write(fd, buf, sizeof buf), (ssize_t)sizeof buf);
    close(fd);
    uint8_t *tok = NULL;
    size_t len = 0;
    FILE *null = fopen("/dev/null", "w");
    ck_assert_int_eq(ss_config_read_token(path, &tok, &len, null),
                     SS_ERR_TOO_BIG);
    fclose(null);
    unlink(path);
}
END_TEST

typedef struct code_case {
    int err;  /* ss_error.h code */
    int code; /* status */
} code_case;

static const code_case code_cases[] = {
    {SS_OK, STATESAVER__V1__CODE__OK},
    {SS_ERR_INVALID, STATESAVER__V1__CODE__INVALID_ARGUMENT},
    {SS_ERR_PROTO, STATESAVER__V1__CODE__INVALID_ARGUMENT},
    {SS_ERR_SHAPE, STATESAVER__V1__CODE__INVALID_ARGUMENT},
    {SS_ERR_FORMAT, STATESAVER__V1__CODE__INVALID_ARGUMENT},
    {SS_ERR_NOT_FOUND, STATESAVER__V1__CODE__NOT_FOUND},
    {SS_ERR_CONFLICT, STATESAVER__V1__CODE__FAILED_PRECONDITION},
    {SS_ERR_TOO_BIG, STATESAVER__V1__CODE__RESOURCE_EXHAUSTED},
    {SS_ERR_FULL, STATESAVER__V1__CODE__RESOURCE_EXHAUSTED},
    {SS_ERR_NOMEM, STATESAVER__V1__CODE__RESOURCE_EXHAUSTED},
    {SS_ERR_TIMEOUT, STATESAVER__V1__CODE__DEADLINE_EXCEEDED},
    {SS_ERR_AUTH, STATESAVER__V1__CODE__UNAUTHENTICATED},
    {SS_ERR_CLOSED, STATESAVER__V1__CODE__UNAVAILABLE},
    {SS_ERR_STORE, STATESAVER__V1__CODE__INTERNAL},
    {SS_ERR_IO, STATESAVER__V1__CODE__INTERNAL},
    {SS_ERR_INTERNAL, STATESAVER__V1__CODE__INTERNAL},
    {SS_ERR_STATUS(STATESAVER__V1__CODE__ALREADY_EXISTS),
     STATESAVER__V1__CODE__ALREADY_EXISTS},
};

START_TEST(test_status_code)
{
    ck_assert_int_eq(ss_dispatch_status_code(code_cases[_i].err),
                     code_cases[_i].code);
}
END_TEST

#define N(a) (int)(sizeof(a) / sizeof((a)[0]))

/* Strict UTF-8: RFC 3629 forms only. */
START_TEST(test_utf8)
{
    static const struct { const char *s; bool ok; } cases[] = {
        {"", true}, {"plain", true}, {"caf\xc3\xa9", true},
        {"\xe2\x82\xac", true}, {"\xf0\x9f\x98\x80", true},
        {"\xf4\x8f\xbf\xbf", true},
        {"bad\xff\xfe", false}, {"\x80", false}, {"\xc3", false},
        {"\xc0\xaf", false}, {"\xe0\x80\xaf", false},  /* overlong */
        {"\xed\xa0\x80", false},                       /* surrogate */
        {"\xf4\x90\x80\x80", false},                   /* > U+10FFFF */
        {"\xf8\x88\x80\x80\x80", false}, {"\xe2\x82", false},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        ck_assert_msg(ss_utf8_valid(cases[i].s, strlen(cases[i].s)) ==
                      cases[i].ok, "case %zu", i);
}
END_TEST

/* The commit event: every subscriber but the publisher's own is called,
 * in subscription order; unsubscribed ones are not. */
static int g_calls[4];
static size_t g_seen_n;

static void sub_fn(void *arg, const char *saver, size_t n, const ss_bytes *keys)
{
    int *slot = arg;
    (*slot)++;
    g_seen_n = n;
    ck_assert_str_eq(saver, "s");
    ck_assert_uint_eq(keys[0].len, 1);
}

START_TEST(test_commit_events)
{
    ss_commit_events *e = NULL;
    ck_assert_int_eq(ss_commit_events_new(&e), 0);
    int a = ss_commit_events_subscribe(e, sub_fn, &g_calls[0]);
    int b = ss_commit_events_subscribe(e, sub_fn, &g_calls[1]);
    ck_assert_int_ge(a, 0);
    ck_assert_int_ge(b, 0);
    ss_bytes k = {(const uint8_t *)"k", 1};
    ss_commit_events_publish(e, -1, "s", 1, &k);
    ck_assert_int_eq(g_calls[0], 1);
    ck_assert_int_eq(g_calls[1], 1);
    ss_commit_events_publish(e, b, "s", 1, &k); /* b published: skip it */
    ck_assert_int_eq(g_calls[0], 2);
    ck_assert_int_eq(g_calls[1], 1);
    ss_commit_events_unsubscribe(e, a);
    ss_commit_events_publish(e, -1, "s", 1, &k);
    ck_assert_int_eq(g_calls[0], 2);
    ck_assert_int_eq(g_calls[1], 2);
    ck_assert_uint_eq(g_seen_n, 1);
    for (int i = 0; i < SS_COMMIT_SUBSCRIBERS_MAX - 1; i++)
        ck_assert_int_ge(ss_commit_events_subscribe(e, sub_fn, &g_calls[2]), 0);
    ck_assert_int_eq(ss_commit_events_subscribe(e, sub_fn, &g_calls[2]),
                     SS_ERR_FULL);
    ss_commit_events_free(e);
    ss_commit_events_free(NULL);
}
END_TEST

static Suite *units_suite(void)
{
    Suite *s = suite_create("server_units");
    TCase *tc = tcase_create("config");
    tcase_add_loop_test(tc, test_listen, 0, N(listen_cases));
    tcase_add_loop_test(tc, test_argv, 0, N(argv_cases));
    tcase_add_test(tc, test_values);
    tcase_add_loop_test(tc, test_token, 0, N(token_cases));
    tcase_add_test(tc, test_token_too_big);
    suite_add_tcase(s, tc);
    tc = tcase_create("dispatch");
    tcase_add_test(tc, test_utf8);
    tcase_add_test(tc, test_commit_events);
    tcase_add_loop_test(tc, test_status_code, 0, N(code_cases));
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(units_suite());
    srunner_run_all(sr, CK_ENV);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
