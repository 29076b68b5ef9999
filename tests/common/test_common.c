/* test_common -- Check suite for common/: strict integer parsing, CRC32C,
 * backoff, the token-file reader and the key formatter. */
#include <check.h>
#include <stdio.h>
#include <unistd.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ss_backoff.h"
#include "ss_crc32c.h"
#include "ss_error.h"
#include "ss_keyfmt.h"
#include "ss_parse.h"
#include "ss_token.h"

START_TEST(parse_u64_accepts_plain_decimals)
{
    uint64_t v = 7;
    ck_assert_int_eq(ss_parse_u64("0", 0, 10, &v), 0);
    ck_assert_uint_eq(v, 0);
    ck_assert_int_eq(ss_parse_u64("18446744073709551615", 0, UINT64_MAX, &v), 0);
    ck_assert_uint_eq(v, UINT64_MAX);
    ck_assert_int_eq(ss_parse_u64("42", 1, 42, &v), 0);
    ck_assert_uint_eq(v, 42);
}
END_TEST

START_TEST(parse_u64_refuses_everything_else)
{
    static const char *bad[] = {"", " 1", " -1", "-1", "+1", "1 ", "1e3", "12k",
                                "0x10", "1.0", "\t5", NULL};
    uint64_t v = 99;
    for (int i = 0; bad[i]; i++) {
        ck_assert_msg(ss_parse_u64(bad[i], 0, UINT64_MAX, &v) == SS_ERR_INVALID,
                      "accepted '%s'", bad[i]);
        ck_assert_uint_eq(v, 99);
    }
    ck_assert_int_eq(ss_parse_u64(NULL, 0, 1, &v), SS_ERR_INVALID);
    ck_assert_int_eq(ss_parse_u64("18446744073709551616", 0, UINT64_MAX, &v), SS_ERR_TOO_BIG);
    ck_assert_int_eq(ss_parse_u64("11", 0, 10, &v), SS_ERR_TOO_BIG);
    ck_assert_int_eq(ss_parse_u64("0", 1, 10, &v), SS_ERR_TOO_BIG);
    ck_assert_uint_eq(v, 99);
}
END_TEST

START_TEST(parse_double_strict)
{
    double d = 0;
    ck_assert_int_eq(ss_parse_double("0.5", &d), 0);
    ck_assert(d == 0.5);
    ck_assert_int_eq(ss_parse_double("-1e-3", &d), 0);
    ck_assert(d == -1e-3);
    ck_assert_int_eq(ss_parse_double(" 1", &d), SS_ERR_INVALID);
    ck_assert_int_eq(ss_parse_double("1x", &d), SS_ERR_INVALID);
    ck_assert_int_eq(ss_parse_double("", &d), SS_ERR_INVALID);
    ck_assert_int_eq(ss_parse_double("inf", &d), SS_ERR_INVALID);
    ck_assert_int_eq(ss_parse_double("nan", &d), SS_ERR_INVALID);
}
END_TEST

/* Published CRC-32C check values (RFC 3720 B.4 and the "123456789" check). */
static void crc_vectors(void)
{
    ck_assert_uint_eq(ss_crc32c(0, "123456789", 9), 0xE3069283u);
    uint8_t zeros[32] = {0}, ones[32], inc[32];
    memset(ones, 0xff, sizeof ones);
    for (int i = 0; i < 32; i++)
        inc[i] = (uint8_t)i;
    ck_assert_uint_eq(ss_crc32c(0, zeros, 32), 0x8A9136AAu);
    ck_assert_uint_eq(ss_crc32c(0, ones, 32), 0x62A8AB43u);
    ck_assert_uint_eq(ss_crc32c(0, inc, 32), 0x46DD794Eu);
    ck_assert_uint_eq(ss_crc32c(0, "", 0), 0);
    /* Chaining over any split equals the whole. */
    uint8_t buf[1000];
    for (int i = 0; i < 1000; i++)
        buf[i] = (uint8_t)(i * 131 + 7);
    uint32_t whole = ss_crc32c(0, buf, sizeof buf);
    for (size_t cut = 0; cut <= sizeof buf; cut += 37)
        ck_assert_uint_eq(ss_crc32c(ss_crc32c(0, buf, cut), buf + cut, sizeof buf - cut), whole);
}

/* Waits stay in [nominal/2, nominal], double up to the ceiling, reset. */
START_TEST(backoff_bounded_jittered_exponential)
{
    ss_backoff b;
    ss_backoff_init(&b, 100, 5000, 42);
    uint32_t nominal = 100;
    bool varied = false;
    uint32_t first = 0;
    for (int i = 0; i < 20; i++) {
        uint32_t w = ss_backoff_next(&b);
        ck_assert_uint_ge(w, nominal / 2);
        ck_assert_uint_le(w, nominal);
        nominal = nominal * 2 > 5000 ? 5000 : nominal * 2;
        ck_assert_uint_eq(ss_backoff_current(&b), nominal);
    }
    /* At the ceiling the waits still vary (jitter), never above it. */
    for (int i = 0; i < 50; i++) {
        uint32_t w = ss_backoff_next(&b);
        ck_assert_uint_ge(w, 2500);
        ck_assert_uint_le(w, 5000);
        if (i == 0)
            first = w;
        else if (w != first)
            varied = true;
    }
    ck_assert(varied);
    ss_backoff_reset(&b);
    ck_assert_uint_eq(ss_backoff_current(&b), 100);
    ck_assert_uint_le(ss_backoff_next(&b), 100);
    /* Degenerate bounds are raised, never zero. */
    ss_backoff_init(&b, 0, 0, 0);
    ck_assert_uint_eq(ss_backoff_current(&b), 1);
    ck_assert_uint_le(ss_backoff_next(&b), 1);
    ck_assert_uint_eq(ss_backoff_current(&b), 1);
}
END_TEST

START_TEST(crc32c_vectors) { crc_vectors(); }
END_TEST

/* Write n bytes to a new temporary file; returns its path (static). */
static const char *token_file(const void *data, size_t n)
{
    static char path[256];
    const char *tmp = getenv("TMPDIR");
    snprintf(path, sizeof path, "%s/ss-token-XXXXXX", tmp ? tmp : "/tmp");
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, data, n), (ssize_t)n);
    close(fd);
    return path;
}

/* Read a token from a file holding data; returns rc, token in tok/len. */
static int read_tok(const void *data, size_t n, char **tok, size_t *len, char *err, size_t errsz)
{
    const char *path = token_file(data, n);
    *tok = NULL;
    *len = 0;
    int rc = ss_token_read(path, tok, len, err, errsz);
    if (rc < 0)
        ck_assert_msg(strstr(err, path) != NULL, "message does not name the file: %s", err);
    unlink(path);
    return rc;
}

START_TEST(token_file_rules)
{
    char err[512], *tok;
    size_t len;
    /* One trailing line ending is not part of the token; nothing else is trimmed. */
    static const struct {
        const char *file;
        size_t n;
        const char *want;
        size_t want_len;
    } ok[] = {
        {"secret", 6, "secret", 6},
        {"secret\n", 7, "secret", 6},
        {"secret\r\n", 8, "secret", 6},
        {"secret\n\n", 8, "secret\n", 7},
        {" secret \n", 9, " secret ", 8},
        {"se\0cret\n", 8, "se\0cret", 7},
        {"\r", 1, "\r", 1},
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        ck_assert_int_eq(read_tok(ok[i].file, ok[i].n, &tok, &len, err, sizeof err), 0);
        ck_assert_uint_eq(len, ok[i].want_len);
        ck_assert_int_eq(memcmp(tok, ok[i].want, len), 0);
        ck_assert_int_eq(tok[len], '\0');
        ss_token_free(tok, len);
    }
    /* Empty, or only a line ending: refused. */
    ck_assert_int_eq(read_tok("", 0, &tok, &len, err, sizeof err), SS_ERR_INVALID);
    ck_assert_ptr_nonnull(strstr(err, "empty"));
    ck_assert_ptr_null(tok);
    ck_assert_int_eq(read_tok("\n", 1, &tok, &len, err, sizeof err), SS_ERR_INVALID);
    ck_assert_int_eq(read_tok("\r\n", 2, &tok, &len, err, sizeof err), SS_ERR_INVALID);
    /* The limit counts the file's bytes: SS_TOKEN_FILE_MAX passes, one more does not. */
    char *big = malloc(SS_TOKEN_FILE_MAX + 1);
    memset(big, 'a', SS_TOKEN_FILE_MAX + 1);
    ck_assert_int_eq(read_tok(big, SS_TOKEN_FILE_MAX, &tok, &len, err, sizeof err), 0);
    ck_assert_uint_eq(len, SS_TOKEN_FILE_MAX);
    ss_token_free(tok, len);
    ck_assert_int_eq(read_tok(big, SS_TOKEN_FILE_MAX + 1, &tok, &len, err, sizeof err),
                     SS_ERR_TOO_BIG);
    ck_assert_ptr_nonnull(strstr(err, "larger than 4096"));
    free(big);
    /* A missing file. */
    ck_assert_int_eq(ss_token_read("/nonexistent/ss-token", &tok, &len, err, sizeof err),
                     SS_ERR_IO);
    ck_assert_ptr_nonnull(strstr(err, "/nonexistent/ss-token"));
    ss_token_free(NULL, 0);
}
END_TEST

START_TEST(keyfmt_printable_form)
{
    char buf[64];
    ck_assert_str_eq(ss_keyfmt(buf, sizeof buf, "seq/1", 5), "seq/1");
    ck_assert_str_eq(ss_keyfmt(buf, sizeof buf, "a\\b", 3), "a\\x5cb");
    ck_assert_str_eq(ss_keyfmt(buf, sizeof buf, "\xff\x00z\n", 4), "\\xff\\x00z\\x0a");
    ck_assert_str_eq(ss_keyfmt(buf, sizeof buf, "", 0), "");
    ck_assert_uint_eq(ss_keyfmt_size(0), 1);
    ck_assert_uint_eq(ss_keyfmt_size(3), 13);
    /* Exactly fits: no truncation. */
    ck_assert_str_eq(ss_keyfmt(buf, 6, "abcde", 5), "abcde");
    ck_assert_str_eq(ss_keyfmt(buf, 5, "\x01", 1), "\\x01");
    /* Does not fit: whole bytes then "...", never half an escape. */
    ck_assert_str_eq(ss_keyfmt(buf, 6, "abcdef", 6), "ab...");
    ck_assert_str_eq(ss_keyfmt(buf, 8, "a\x01\x02", 3), "a...");
    ck_assert_str_eq(ss_keyfmt(buf, 3, "abcdef", 6), "..");
    ck_assert_str_eq(ss_keyfmt(buf, 1, "abcdef", 6), "");
    buf[0] = 'x';
    ss_keyfmt(buf, 0, "abc", 3);
    ck_assert_int_eq(buf[0], 'x');
    /* A long binary key in a bounded buffer. */
    uint8_t key[1000];
    for (size_t i = 0; i < sizeof key; i++)
        key[i] = (uint8_t)i;
    char out[100];
    ss_keyfmt(out, sizeof out, key, sizeof key);
    ck_assert_uint_lt(strlen(out), sizeof out);
    ck_assert_str_eq(out + strlen(out) - 3, "...");
    ck_assert_int_eq(strncmp(out, "\\x00\\x01", 8), 0);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("common");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, parse_u64_accepts_plain_decimals);
    tcase_add_test(tc, parse_u64_refuses_everything_else);
    tcase_add_test(tc, parse_double_strict);
    tcase_add_test(tc, crc32c_vectors);
    tcase_add_test(tc, backoff_bounded_jittered_exponential);
    tcase_add_test(tc, token_file_rules);
    tcase_add_test(tc, keyfmt_printable_form);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
