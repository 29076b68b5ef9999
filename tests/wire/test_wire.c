/* test_wire -- Check suite for the shared wire library (frame, tensor, error). */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "ss_error.h"
#include "ss_frame.h"
#include "ss_tensor.h"

struct frame_case {
    const char *name;        /* what the case exercises */
    const uint8_t *buf;      /* input bytes */
    size_t len;              /* bytes available */
    size_t max;              /* frame limit */
    int want;                /* expected return */
    size_t want_payload_len; /* when SS_FRAME_OK */
    size_t want_need;        /* when SS_FRAME_NEED_MORE */
};

static const uint8_t f_empty[] = {0};
static const uint8_t f_hdr3[] = {0, 0, 0};
static const uint8_t f_zero[] = {0, 0, 0, 0};
static const uint8_t f_two[] = {0, 0, 0, 2, 'h', 'i', 'x'};
static const uint8_t f_trunc[] = {0, 0, 0, 5, 'a', 'b'};
static const uint8_t f_huge[] = {0xff, 0xff, 0xff, 0xff};
static const uint8_t f_over[] = {0, 0, 1, 1};

static const struct frame_case frame_cases[] = {
    {"empty buffer", f_empty, 0, 1024, SS_FRAME_NEED_MORE, 0, 4},
    {"partial header", f_hdr3, 3, 1024, SS_FRAME_NEED_MORE, 0, 4},
    {"zero-length frame", f_zero, 4, 1024, SS_FRAME_OK, 0, 0},
    {"whole frame with trailing byte", f_two, 7, 1024, SS_FRAME_OK, 2, 0},
    {"truncated body", f_trunc, 6, 1024, SS_FRAME_NEED_MORE, 0, 9},
    {"4 GiB length prefix", f_huge, 4, 1024, SS_ERR_TOO_BIG, 0, 0},
    {"one byte over limit", f_over, 4, 256, SS_ERR_TOO_BIG, 0, 0},
    {"exactly at limit, body missing", f_over, 4, 257, SS_FRAME_NEED_MORE, 0, 261},
};

START_TEST(test_frame_table)
{
    const struct frame_case *c = &frame_cases[_i];
    const uint8_t *payload = NULL;
    size_t plen = 0, consumed = 0, need = 0;
    int rc = ss_frame_decode(c->buf, c->len, c->max, &payload, &plen, &consumed, &need);
    ck_assert_msg(rc == c->want, "%s: got %d want %d", c->name, rc, c->want);
    if (rc == SS_FRAME_OK) {
        ck_assert_uint_eq(plen, c->want_payload_len);
        ck_assert_uint_eq(consumed, 4 + c->want_payload_len);
        ck_assert_ptr_eq(payload, c->buf + 4);
    } else if (rc == SS_FRAME_NEED_MORE) {
        ck_assert_msg(need == c->want_need, "%s: need %zu want %zu", c->name, need,
                      c->want_need);
    }
}
END_TEST

START_TEST(test_frame_header_roundtrip)
{
    uint32_t vals[] = {0, 1, 255, 256, 65535, 0x01020304u, 0xffffffffu};
    for (size_t i = 0; i < sizeof vals / sizeof vals[0]; i++) {
        uint8_t h[4];
        ss_frame_put_header(h, vals[i]);
        uint32_t back = ((uint32_t)h[0] << 24) | ((uint32_t)h[1] << 16) |
                        ((uint32_t)h[2] << 8) | h[3];
        ck_assert_uint_eq(back, vals[i]);
    }
}
END_TEST

START_TEST(test_shape_count)
{
    int64_t ok[] = {2, 3, 4};
    uint64_t n = 0;
    ck_assert_int_eq(ss_shape_count(ok, 3, 1000, &n), 0);
    ck_assert_uint_eq(n, 24);
    ck_assert_int_eq(ss_shape_count(ok, 3, 23, &n), SS_ERR_TOO_BIG);
    int64_t neg[] = {2, -1};
    ck_assert_int_eq(ss_shape_count(neg, 2, 1000, &n), SS_ERR_INVALID);
    int64_t big[] = {INT64_MAX, INT64_MAX, 4};
    ck_assert_int_eq(ss_shape_count(big, 3, UINT64_MAX, &n), SS_ERR_TOO_BIG);
    int64_t deep[SS_TENSOR_MAX_RANK + 1] = {1, 1, 1, 1, 1, 1, 1, 1, 1};
    ck_assert_int_eq(ss_shape_count(deep, SS_TENSOR_MAX_RANK + 1, 10, &n), SS_ERR_INVALID);
    ck_assert_int_eq(ss_shape_count(NULL, 0, 10, &n), 0);
    ck_assert_uint_eq(n, 1);
}
END_TEST

START_TEST(test_tensor_check)
{
    float data[6] = {0};
    int64_t dims[] = {2, 3};
    ss_tensor_msg t = STATESAVER__V1__TENSOR__INIT;
    ss_tensor_borrow(&t, STATESAVER__V1__DTYPE__DT_FLOAT32, dims, 2, data, sizeof data);
    ck_assert_int_eq(ss_tensor_check(&t), 0);
    t.data.len = sizeof data - 4;
    ck_assert_int_eq(ss_tensor_check(&t), SS_ERR_SHAPE);
    t.data.len = sizeof data;
    t.dtype = STATESAVER__V1__DTYPE__DT_INVALID;
    ck_assert_int_eq(ss_tensor_check(&t), SS_ERR_SHAPE);
    t.dtype = STATESAVER__V1__DTYPE__DT_INT64;
    ck_assert_int_eq(ss_tensor_check(&t), SS_ERR_SHAPE);
    t.dtype = STATESAVER__V1__DTYPE__DT_FLOAT32;
    /* Packing and unpacking keeps every field. */
    size_t n = statesaver__v1__tensor__get_packed_size(&t);
    uint8_t *buf = malloc(n);
    ck_assert_ptr_nonnull(buf);
    statesaver__v1__tensor__pack(&t, buf);
    ss_tensor_msg *u = statesaver__v1__tensor__unpack(NULL, n, buf);
    ck_assert_ptr_nonnull(u);
    ck_assert_int_eq(ss_tensor_check(u), 0);
    ck_assert_uint_eq(u->n_shape, 2);
    ck_assert_int_eq(u->shape[1], 3);
    statesaver__v1__tensor__free_unpacked(u, NULL);
    free(buf);
}
END_TEST

START_TEST(test_dtype_names)
{
    ck_assert_int_eq(ss_dtype_parse("float32"), STATESAVER__V1__DTYPE__DT_FLOAT32);
    ck_assert_int_eq(ss_dtype_parse("int64"), STATESAVER__V1__DTYPE__DT_INT64);
    ck_assert_int_eq(ss_dtype_parse("float16"), SS_ERR_INVALID);
    ck_assert_str_eq(ss_dtype_name(99), "invalid");
    ck_assert_uint_eq(ss_dtype_size(STATESAVER__V1__DTYPE__DT_FLOAT64), 8);
    char buf[32];
    int64_t dims[] = {4, 512};
    ss_shape_format(dims, 2, buf, sizeof buf);
    ck_assert_str_eq(buf, "[4, 512]");
    ss_shape_format(dims, 0, buf, sizeof buf);
    ck_assert_str_eq(buf, "[]");
    char tiny[4];
    ss_shape_format(dims, 2, tiny, sizeof tiny);
    ck_assert_uint_lt(strlen(tiny), sizeof tiny);
}
END_TEST

START_TEST(test_strerror)
{
    ck_assert_str_eq(ss_strerror(SS_ERR_STATUS(9)), "FAILED_PRECONDITION");
    ck_assert_str_eq(ss_strerror(SS_ERR_NOMEM), "out of memory");
    ck_assert_str_eq(ss_strerror(-99), "unknown error");
    for (int e = 0; e >= -16; e--)
        ck_assert_ptr_nonnull(ss_strerror(e));
}
END_TEST

static Suite *wire_suite(void)
{
    Suite *s = suite_create("wire");
    TCase *tc = tcase_create("core");
    tcase_add_loop_test(tc, test_frame_table, 0,
                        (int)(sizeof frame_cases / sizeof frame_cases[0]));
    tcase_add_test(tc, test_frame_header_roundtrip);
    tcase_add_test(tc, test_shape_count);
    tcase_add_test(tc, test_tensor_check);
    tcase_add_test(tc, test_dtype_names);
    tcase_add_test(tc, test_strerror);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(wire_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
