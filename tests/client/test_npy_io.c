/* test_npy_io -- Check suite for the CLI's .npy reader/writer (client/npy_io.c):
 * round trips for every dtype and rank, files written by NumPy, and a
 * table of malformed files that must be refused with a message naming
 * the file.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "npy_io.h"
#include "ss_error.h"
#include "statesaver.h"

static char dir[256];

static void make_dir(void)
{
    const char *tmp = getenv("TMPDIR");
    snprintf(dir, sizeof dir, "%s/ss-npy-test-XXXXXX", tmp ? tmp : "/tmp");
    ck_assert_ptr_nonnull(mkdtemp(dir));
}

static void remove_dir(void)
{
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    ck_assert_int_eq(system(cmd), 0);
}

static void write_bytes(const char *path, const void *data, size_t n)
{
    FILE *fp = fopen(path, "wb");
    ck_assert_ptr_nonnull(fp);
    ck_assert_uint_eq(fwrite(data, 1, n, fp), n);
    ck_assert_int_eq(fclose(fp), 0);
}

/* A v1.0 file with the given header dict and n data bytes of 0x11. */
static void write_npy(const char *path, const char *dict, size_t ndata)
{
    uint8_t buf[1024];
    size_t hl = strlen(dict);
    memcpy(buf, "\x93NUMPY\x01\x00", 8);
    buf[8] = (uint8_t)(hl & 0xff);
    buf[9] = (uint8_t)(hl >> 8);
    memcpy(buf + 10, dict, hl);
    memset(buf + 10 + hl, 0x11, ndata);
    write_bytes(path, buf, 10 + hl + ndata);
}

struct roundtrip_case {
    int dtype;             /* enum ss_dtype */
    size_t rank;           /* dims */
    int64_t shape[3];      /* dims */
};

static const struct roundtrip_case rt_cases[] = {
    {SS_DTYPE_FLOAT32, 1, {7}},
    {SS_DTYPE_FLOAT32, 2, {3, 5}},
    {SS_DTYPE_FLOAT32, 3, {2, 1, 4}},
    {SS_DTYPE_FLOAT32, 0, {0}},
    {SS_DTYPE_FLOAT32, 2, {0, 4}},
    {SS_DTYPE_INT32, 1, {9}},
    {SS_DTYPE_INT64, 2, {2, 2}},
    {SS_DTYPE_FLOAT64, 1, {3}},
};

START_TEST(test_roundtrip)
{
    const struct roundtrip_case *rc = &rt_cases[_i];
    size_t count = 1;
    for (size_t d = 0; d < rc->rank; d++)
        count *= (size_t)rc->shape[d];
    size_t es = rc->dtype == SS_DTYPE_INT64 || rc->dtype == SS_DTYPE_FLOAT64 ? 8 : 4;
    uint8_t *data = malloc(count * es + 1);
    for (size_t i = 0; i < count * es; i++)
        data[i] = (uint8_t)(i * 7 + 3);
    char path[512], err[512];
    snprintf(path, sizeof path, "%s/rt%d.npy", dir, _i);
    ck_assert_int_eq(npy_io_write(path, rc->dtype, rc->shape, rc->rank, data, count * es,
                                  err, sizeof err), 0);
    npy_io_array a;
    ck_assert_msg(npy_io_read(path, &a, err, sizeof err) == 0, "%s", err);
    ck_assert_int_eq(a.dtype, rc->dtype);
    ck_assert_uint_eq(a.rank, rc->rank);
    for (size_t d = 0; d < rc->rank; d++)
        ck_assert_int_eq(a.shape[d], rc->shape[d]);
    ck_assert_uint_eq(a.nbytes, count * es);
    ck_assert_int_eq(memcmp(a.data, data, count * es), 0);
    /* NumPy's rule: the data starts at a multiple of 64 bytes. */
    FILE *fp = fopen(path, "rb");
    fseek(fp, 0, SEEK_END);
    ck_assert_uint_eq(((size_t)ftell(fp) - count * es) % 64, 0);
    fclose(fp);
    npy_io_array_clear(&a);
    npy_io_array_clear(&a);
    free(data);
}
END_TEST

START_TEST(test_write_rejects_size_mismatch)
{
    char path[512], err[512] = "";
    int64_t shape[1] = {4};
    float d[3] = {1, 2, 3};
    snprintf(path, sizeof path, "%s/mismatch.npy", dir);
    ck_assert_int_eq(npy_io_write(path, SS_DTYPE_FLOAT32, shape, 1, d, sizeof d, err,
                                  sizeof err), SS_ERR_INVALID);
    ck_assert(strstr(err, "mismatch.npy") != NULL);
    ck_assert_int_ne(access(path, F_OK), 0);
    ck_assert_int_eq(npy_io_write(path, 0, shape, 1, d, 16, err, sizeof err),
                     SS_ERR_INVALID);
}
END_TEST

/* Files written by NumPy itself, v1 and v2 headers. */
START_TEST(test_numpy_files)
{
    char cmd[1024], path[512], err[512];
    snprintf(cmd, sizeof cmd,
             "/usr/bin/python3 -c \"import numpy as np, numpy.lib.format as f; "
             "a = np.arange(6, dtype=np.float32).reshape(2, 3); np.save('%s/np1.npy', a); "
             "fp = open('%s/np2.npy', 'wb'); f.write_array(fp, a.astype(np.int64), "
             "version=(2, 0)); fp.close()\"", dir, dir);
    ck_assert_int_eq(system(cmd), 0);
    npy_io_array a;
    snprintf(path, sizeof path, "%s/np1.npy", dir);
    ck_assert_msg(npy_io_read(path, &a, err, sizeof err) == 0, "%s", err);
    ck_assert_int_eq(a.dtype, SS_DTYPE_FLOAT32);
    ck_assert_uint_eq(a.rank, 2);
    ck_assert_int_eq(a.shape[0], 2);
    ck_assert_int_eq(a.shape[1], 3);
    ck_assert_float_eq(((float *)a.data)[5], 5.0f);
    npy_io_array_clear(&a);
    snprintf(path, sizeof path, "%s/np2.npy", dir);
    ck_assert_msg(npy_io_read(path, &a, err, sizeof err) == 0, "%s", err);
    ck_assert_int_eq(a.dtype, SS_DTYPE_INT64);
    ck_assert_int_eq(((int64_t *)a.data)[4], 4);
    npy_io_array_clear(&a);
}
END_TEST

struct bad_case {
    const char *name;  /* what is wrong */
    const char *dict;  /* header dict, or NULL for raw bytes */
    const char *raw;   /* raw file bytes when dict is NULL */
    size_t raw_len;    /* bytes of raw */
    size_t ndata;      /* data bytes after the header */
    int want;          /* expected error */
};

static const struct bad_case bad_cases[] = {
    {"empty file", NULL, "", 0, 0, SS_ERR_FORMAT},
    {"bad magic", NULL, "\x93NUMPX\x01\x00\x10\x00", 10, 0, SS_ERR_FORMAT},
    {"version 9", NULL, "\x93NUMPY\x09\x00\x10\x00", 10, 0, SS_ERR_FORMAT},
    {"truncated header", NULL, "\x93NUMPY\x01\x00\x40\x00{'descr'", 17, 0, SS_ERR_FORMAT},
    {"big-endian float32", "{'descr': '>f4', 'fortran_order': False, 'shape': (2,), }", NULL, 0, 8, SS_ERR_SHAPE},
    {"float16", "{'descr': '<f2', 'fortran_order': False, 'shape': (2,), }", NULL, 0, 4, SS_ERR_SHAPE},
    {"fortran order", "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 2), }", NULL, 0, 16, SS_ERR_SHAPE},
    {"missing shape", "{'descr': '<f4', 'fortran_order': False, }", NULL, 0, 4, SS_ERR_FORMAT},
    {"negative dim", "{'descr': '<f4', 'fortran_order': False, 'shape': (-2,), }", NULL, 0, 8, SS_ERR_FORMAT},
    {"short data", "{'descr': '<f4', 'fortran_order': False, 'shape': (4,), }", NULL, 0, 12, SS_ERR_FORMAT},
    {"trailing data", "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }", NULL, 0, 9, SS_ERR_FORMAT},
    {"huge shape", "{'descr': '<f4', 'fortran_order': False, 'shape': (100000, 100000), }", NULL, 0, 0, SS_ERR_TOO_BIG},
    {"rank 9", "{'descr': '<f4', 'fortran_order': False, 'shape': (1,1,1,1,1,1,1,1,1), }", NULL, 0, 4, SS_ERR_FORMAT},
};

START_TEST(test_bad_files)
{
    const struct bad_case *bc = &bad_cases[_i];
    char path[512], err[512] = "";
    snprintf(path, sizeof path, "%s/bad%d.npy", dir, _i);
    if (bc->dict)
        write_npy(path, bc->dict, bc->ndata);
    else
        write_bytes(path, bc->raw, bc->raw_len);
    npy_io_array a;
    int rc = npy_io_read(path, &a, err, sizeof err);
    ck_assert_msg(rc == bc->want, "%s: got %d (%s) want %d", bc->name, rc, err, bc->want);
    ck_assert_msg(strstr(err, path) != NULL, "%s: message does not name the file: %s",
                  bc->name, err);
    ck_assert_ptr_null(a.data);
}
END_TEST

START_TEST(test_missing_file)
{
    char path[512], err[512] = "";
    npy_io_array a;
    snprintf(path, sizeof path, "%s/none.npy", dir);
    ck_assert_int_eq(npy_io_read(path, &a, err, sizeof err), SS_ERR_IO);
    ck_assert(strstr(err, "none.npy") != NULL);
}
END_TEST

static Suite *npy_suite(void)
{
    Suite *s = suite_create("npy_io");
    TCase *tc = tcase_create("files");
    tcase_add_checked_fixture(tc, make_dir, remove_dir);
    tcase_add_loop_test(tc, test_roundtrip, 0, sizeof rt_cases / sizeof rt_cases[0]);
    tcase_add_test(tc, test_write_rejects_size_mismatch);
    tcase_add_test(tc, test_numpy_files);
    tcase_add_loop_test(tc, test_bad_files, 0, sizeof bad_cases / sizeof bad_cases[0]);
    tcase_add_test(tc, test_missing_file);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(npy_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
