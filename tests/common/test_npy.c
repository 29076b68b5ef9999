/* test_npy -- Check suite for the one .npy library (common/ss_npy.c), used
 * by the worker and the CLI: malformed headers each refused with a message
 * naming the file and the fault, headers NumPy writes accepted, round
 * trips of every dtype (float64 included), files written by NumPy itself,
 * the size cap, and atomic writes that leave no temporary behind. */
#include <check.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ss_npy.h"
#include "ss_error.h"

static char tmpdir[256];

static void setup(void)
{
    const char *base = getenv("TMPDIR");
    snprintf(tmpdir, sizeof tmpdir, "%s/test-npy-XXXXXX", base ? base : "/tmp");
    ck_assert_ptr_nonnull(mkdtemp(tmpdir));
}

static void teardown(void)
{
    DIR *d = opendir(tmpdir);
    if (d != NULL) {
        struct dirent *e;
        char p[512];
        while ((e = readdir(d)) != NULL) {
            if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
                continue;
            snprintf(p, sizeof p, "%s/%s", tmpdir, e->d_name);
            unlink(p);
        }
        closedir(d);
    }
    rmdir(tmpdir);
}

static int count_entries(const char *dir)
{
    int n = 0;
    DIR *d = opendir(dir);
    ck_assert_ptr_nonnull(d);
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
            n++;
    closedir(d);
    return n;
}

/* Write a .npy by hand: magic, version, header (padded to 64 with '\n'),
 * then data_len bytes of 0x01. hdr_len_override >= 0 replaces the length
 * field. */
static void write_raw(const char *path, const char *magic, int major, int minor,
                      const char *dict, size_t data_len, long hdr_len_override)
{
    FILE *f = fopen(path, "wb");
    ck_assert_ptr_nonnull(f);
    size_t pre = major >= 2 ? 12 : 10;
    size_t dl = strlen(dict);
    size_t total = (pre + dl + 1 + 63) / 64 * 64;
    size_t hl = total - pre;
    unsigned long field = hdr_len_override >= 0 ? (unsigned long)hdr_len_override : hl;
    fwrite(magic, 1, 6, f);
    fputc(major, f);
    fputc(minor, f);
    fputc((int)(field & 0xff), f);
    fputc((int)((field >> 8) & 0xff), f);
    if (major >= 2) {
        fputc((int)((field >> 16) & 0xff), f);
        fputc((int)((field >> 24) & 0xff), f);
    }
    fwrite(dict, 1, dl, f);
    for (size_t i = dl; i + 1 < hl; i++)
        fputc(' ', f);
    fputc('\n', f);
    for (size_t i = 0; i < data_len; i++)
        fputc(1, f);
    ck_assert_int_eq(fclose(f), 0);
}

#define MAGIC "\x93NUMPY"
#define D_F4_3 "{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }"

/* Malformed files: every one must fail with a message naming the file. */
struct bad_case {
    const char *name;   /* what the case exercises */
    const char *magic;  /* 6 magic bytes */
    int major, minor;   /* version */
    const char *dict;   /* header text */
    size_t data_len;    /* data bytes after the header */
    long hdr_len;       /* length field override, or -1 */
    const char *want;   /* substring of the message */
};

static const struct bad_case bad_cases[] = {
    {"bad magic", "\x93NUMPX", 1, 0, D_F4_3, 12, -1, "bad magic"},
    {"bad version 4.0", MAGIC, 4, 0, D_F4_3, 12, -1, "version 4.0"},
    {"bad version 1.1", MAGIC, 1, 1, D_F4_3, 12, -1, "version 1.1"},
    {"fortran order", MAGIC, 1, 0,
     "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3), }", 24, -1, "fortran_order"},
    {"big-endian", MAGIC, 1, 0,
     "{'descr': '>f4', 'fortran_order': False, 'shape': (3,), }", 12, -1, "big-endian"},
    {"unsupported dtype f2", MAGIC, 1, 0,
     "{'descr': '<f2', 'fortran_order': False, 'shape': (3,), }", 6, -1, "unsupported dtype '<f2'"},
    {"unsupported dtype u1", MAGIC, 1, 0,
     "{'descr': '|u1', 'fortran_order': False, 'shape': (3,), }", 3, -1, "unsupported dtype"},
    {"structured dtype", MAGIC, 1, 0,
     "{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (3,), }", 12, -1, "structured"},
    {"truncated data", MAGIC, 1, 0, D_F4_3, 11, -1, "truncated data"},
    {"no data", MAGIC, 1, 0, D_F4_3, 0, -1, "truncated data"},
    {"trailing data", MAGIC, 1, 0, D_F4_3, 13, -1, "trailing bytes"},
    {"huge shape overflows", MAGIC, 1, 0,
     "{'descr': '<f4', 'fortran_order': False, 'shape': (1099511627776, 1099511627776), }", 0, -1,
     "too large"},
    {"huge shape, small file", MAGIC, 1, 0,
     "{'descr': '<i8', 'fortran_order': False, 'shape': (1000000000000,), }", 16, -1,
     "needs 8000000000000"},
    {"dimension beyond int64", MAGIC, 1, 0,
     "{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999,), }", 0, -1,
     "too large"},
    {"negative dimension", MAGIC, 1, 0,
     "{'descr': '<f4', 'fortran_order': False, 'shape': (-1,), }", 0, -1, "shape"},
    {"shape is a list", MAGIC, 1, 0,
     "{'descr': '<f4', 'fortran_order': False, 'shape': [3], }", 12, -1, "shape"},
    {"missing shape", MAGIC, 1, 0, "{'descr': '<f4', 'fortran_order': False, }", 4, -1,
     "header keys"},
    {"extra key", MAGIC, 1, 0,
     "{'descr': '<f4', 'fortran_order': False, 'shape': (3,), 'x': 1, }", 12, -1, "header keys"},
    {"duplicate key", MAGIC, 1, 0,
     "{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (3,), }", 12, -1,
     "header keys"},
    {"not a dict", MAGIC, 1, 0, "hello", 0, -1, "dict"},
    {"text after dict", MAGIC, 1, 0, D_F4_3 " junk", 12, -1, "after the header"},
    {"fortran_order not bool", MAGIC, 1, 0,
     "{'descr': '<f4', 'fortran_order': 0, 'shape': (3,), }", 12, -1, "fortran_order"},
    {"shape (,,3 4)", MAGIC, 1, 0,
     "{'descr': '<f4', 'fortran_order': False, 'shape': (,,3 4), }", 48, -1, "shape is not a tuple"},
    {"shape (3 4)", MAGIC, 1, 0,
     "{'descr': '<f4', 'fortran_order': False, 'shape': (3 4), }", 48, -1, "shape is not a tuple"},
    {"shape (3) is an int", MAGIC, 1, 0,
     "{'descr': '<f4', 'fortran_order': False, 'shape': (3), }", 12, -1, "shape is not a tuple"},
    {"shape (3,,)", MAGIC, 1, 0,
     "{'descr': '<f4', 'fortran_order': False, 'shape': (3,,), }", 12, -1, "shape is not a tuple"},
    {"shape (,)", MAGIC, 1, 0,
     "{'descr': '<f4', 'fortran_order': False, 'shape': (,), }", 4, -1, "shape is not a tuple"},
    {"shape unterminated", MAGIC, 1, 0,
     "{'descr': '<f4', 'fortran_order': False, 'shape': (3,", 12, -1, "shape is not a tuple"},
    {"shape of 33 dims", MAGIC, 1, 0,
     "{'descr': '<f4', 'fortran_order': False, 'shape': (1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,"
     "1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1), }", 4, -1, "too many dimensions"},
    {"key that contains 'descr'", MAGIC, 1, 0,
     "{'xdescr': '<f4', 'fortran_order': False, 'shape': (3,), }", 12, -1, "header keys"},
    {"keys only inside a value", MAGIC, 1, 0,
     "{'note': \"'descr': '<f4', 'fortran_order': False, 'shape': (3,)\"}", 12, -1,
     "header keys"},
    {"extra key holding a shape", MAGIC, 1, 0,
     "{'descr': '<f4', 'fortran_order': False, 'shape': (3,), 'x': \"'shape': (9,)\"}", 12, -1,
     "header keys"},
    {"descr not quoted", MAGIC, 1, 0,
     "{'descr': <f4, 'fortran_order': False, 'shape': (3,), }", 12, -1, "'descr' is not a string"},
    {"descr too long", MAGIC, 1, 0,
     "{'descr': '<f4aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa', 'fortran_order': False, "
     "'shape': (3,), }", 12, -1, "'descr' is not a string"},
    {"Falsey", MAGIC, 1, 0,
     "{'descr': '<f4', 'fortran_order': Falsey, 'shape': (3,), }", 12, -1, "dict"},
    {"unquoted key", MAGIC, 1, 0,
     "{descr: '<f4', 'fortran_order': False, 'shape': (3,), }", 12, -1, "dict"},
    {"escape in a key", MAGIC, 1, 0,
     "{'des\\cr': '<f4', 'fortran_order': False, 'shape': (3,), }", 12, -1, "dict"},
    {"header length past end", MAGIC, 1, 0, D_F4_3, 0, 60000, "truncated .npy header"},
    {"v2 header over limit", MAGIC, 2, 0, D_F4_3, 12, 1L << 24, "exceeds the limit"},
};

START_TEST(test_npy_bad)
{
    const struct bad_case *c = &bad_cases[_i];
    char path[512], err[512] = "";
    snprintf(path, sizeof path, "%s/bad.npy", tmpdir);
    write_raw(path, c->magic, c->major, c->minor, c->dict, c->data_len, c->hdr_len);
    ss_npy *a = NULL;
    int rc = ss_npy_read(path, &a, err, sizeof err);
    ck_assert_msg(rc == SS_ERR_FORMAT, "%s: rc %d (%s)", c->name, rc, err);
    ck_assert_ptr_null(a);
    ck_assert_msg(strstr(err, path) != NULL, "%s: message does not name the file: %s",
                  c->name, err);
    ck_assert_msg(strstr(err, c->want) != NULL, "%s: message '%s' lacks '%s'", c->name,
                  err, c->want);
}
END_TEST

/* Files too short to hold the fixed prefix. */
START_TEST(test_npy_short_files)
{
    static const char *const contents[] = {"", "\x93NUM", "\x93NUMPY\x01"};
    for (size_t i = 0; i < 3; i++) {
        char path[512], err[512] = "";
        snprintf(path, sizeof path, "%s/short.npy", tmpdir);
        FILE *f = fopen(path, "wb");
        fwrite(contents[i], 1, strlen(contents[i]), f);
        fclose(f);
        ss_npy *a = NULL;
        ck_assert_int_eq(ss_npy_read(path, &a, err, sizeof err), SS_ERR_FORMAT);
        ck_assert_ptr_nonnull(strstr(err, path));
    }
    char err[512] = "";
    ss_npy *a = NULL;
    char path[512];
    snprintf(path, sizeof path, "%s/does-not-exist.npy", tmpdir);
    ck_assert_int_eq(ss_npy_read(path, &a, err, sizeof err), SS_ERR_IO);
    ck_assert_ptr_nonnull(strstr(err, path));
    ck_assert_int_eq(ss_npy_read(tmpdir, &a, err, sizeof err), SS_ERR_IO);
}
END_TEST

/* Headers NumPy (or older NumPy) writes that must be accepted. */
struct good_case {
    const char *name;  /* what the case exercises */
    int major;         /* version */
    const char *dict;  /* header */
    size_t data_len;   /* bytes */
    ss_npy_dtype dtype; /* expected */
    int ndim;          /* expected */
    int64_t d0, d1;    /* expected first dims */
};

static const struct good_case good_cases[] = {
    {"v1 1-d", 1, D_F4_3, 12, SS_NPY_F32, 1, 3, 0},
    {"v2", 2, "{'descr': '<i4', 'fortran_order': False, 'shape': (2, 2), }", 16, SS_NPY_I32, 2,
     2, 2},
    {"v3", 3, "{'descr': '<i8', 'fortran_order': False, 'shape': (2,), }", 16, SS_NPY_I64, 1, 2,
     0},
    {"keys reordered, no trailing comma", 1,
     "{'shape': (1, 3), 'fortran_order': False, 'descr': '<f4'}", 12, SS_NPY_F32, 2, 1, 3},
    {"double quotes and L suffix", 1,
     "{\"descr\": \"<f4\", \"fortran_order\": False, \"shape\": (3L,)}", 12, SS_NPY_F32, 1, 3, 0},
    {"scalar", 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (), }", 4, SS_NPY_F32, 0, 0,
     0},
    {"zero-size", 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (0, 5), }", 0,
     SS_NPY_F32, 2, 0, 5},
};

START_TEST(test_npy_good_headers)
{
    const struct good_case *c = &good_cases[_i];
    char path[512], err[512] = "";
    snprintf(path, sizeof path, "%s/good.npy", tmpdir);
    write_raw(path, MAGIC, c->major, 0, c->dict, c->data_len, -1);
    ss_npy *a = NULL;
    int rc = ss_npy_read(path, &a, err, sizeof err);
    ck_assert_msg(rc == 0, "%s: %s", c->name, err);
    ck_assert_int_eq(a->dtype, c->dtype);
    ck_assert_int_eq(a->ndim, c->ndim);
    if (c->ndim > 0)
        ck_assert_int_eq(a->shape[0], c->d0);
    if (c->ndim > 1)
        ck_assert_int_eq(a->shape[1], c->d1);
    ck_assert_ptr_nonnull(a->data);
    if (c->data_len > 0)
        ck_assert_int_eq(((unsigned char *)a->data)[c->data_len - 1], 1);
    ss_npy_free(a);
}
END_TEST

START_TEST(test_npy_roundtrip)
{
    float f[24];
    int32_t i4[24];
    int64_t i8[24];
    double f8[24];
    for (int k = 0; k < 24; k++) {
        f8[k] = (double)k * 1e-300 + 1.0 / 3.0;
        f[k] = (float)k * 0.5f - 3.25f;
        i4[k] = k * 1000003 - 7;
        i8[k] = (int64_t)k * 1000000000007LL - 5;
    }
    const void *datas[] = {f, i4, i8, f8};
    size_t sizes[] = {4, 4, 8, 8};
    static const int64_t shapes[][3] = {{2, 3, 4}, {24, 0, 0}, {0, 7, 0}, {0, 0, 0}};
    static const int ndims[] = {3, 1, 2, 0};
    ck_assert_int_eq(SS_NPY_F64, 3);
    for (int dt = 0; dt < 4; dt++) {
        for (int s = 0; s < 4; s++) {
            char path[512], err[512] = "";
            snprintf(path, sizeof path, "%s/rt.npy", tmpdir);
            ck_assert_int_eq(ss_npy_write(path, (ss_npy_dtype)dt, ndims[s], shapes[s],
                                          datas[dt], err, sizeof err), 0);
            struct stat st;
            ck_assert_int_eq(stat(path, &st), 0);
            ss_npy *a = NULL;
            ck_assert_msg(ss_npy_read(path, &a, err, sizeof err) == 0, "%s", err);
            ck_assert_int_eq(a->dtype, dt);
            ck_assert_int_eq(a->ndim, ndims[s]);
            size_t count = 1;
            for (int d = 0; d < ndims[s]; d++) {
                ck_assert_int_eq(a->shape[d], shapes[s][d]);
                count *= (size_t)shapes[s][d];
            }
            ck_assert_uint_eq(a->count, count);
            ck_assert_uint_eq(a->nbytes, count * sizes[dt]);
            ck_assert_uint_eq(ss_npy_dtype_size((ss_npy_dtype)dt), sizes[dt]);
            /* NumPy aligns the data to 64 bytes. */
            ck_assert_int_eq((st.st_size - (off_t)(count * sizes[dt])) % 64, 0);
            ck_assert_int_eq(memcmp(a->data, datas[dt], count * sizes[dt]), 0);
            ss_npy_free(a);
            /* Nothing but the target is left in the directory. */
            ck_assert_int_eq(count_entries(tmpdir), 1);
        }
    }
}
END_TEST

START_TEST(test_npy_write_failure_leaves_nothing)
{
    char path[512], err[512] = "";
    float v[2] = {1, 2};
    int64_t shape[1] = {2};
    snprintf(path, sizeof path, "%s/no-such-dir/x.npy", tmpdir);
    ck_assert_int_eq(ss_npy_write(path, SS_NPY_F32, 1, shape, v, err, sizeof err), SS_ERR_IO);
    ck_assert_ptr_nonnull(strstr(err, path));
    ck_assert_int_eq(access(path, F_OK), -1);

    /* Staged then discarded: target untouched, no temporary left. */
    snprintf(path, sizeof path, "%s/keep.npy", tmpdir);
    FILE *f = fopen(path, "w");
    fputs("old", f);
    fclose(f);
    ss_npy_staged *s = NULL;
    ck_assert_int_eq(ss_npy_stage(path, SS_NPY_F32, 1, shape, v, &s, err, sizeof err), 0);
    ck_assert_int_eq(count_entries(tmpdir), 2);
    ss_npy_discard(s);
    ck_assert_int_eq(count_entries(tmpdir), 1);
    struct stat st;
    ck_assert_int_eq(stat(path, &st), 0);
    ck_assert_int_eq(st.st_size, 3);

    /* A bad shape is refused before anything is created. */
    int64_t neg[1] = {-1};
    ck_assert_int_eq(ss_npy_write(path, SS_NPY_F32, 1, neg, v, err, sizeof err), SS_ERR_INVALID);
    ck_assert_int_eq(count_entries(tmpdir), 1);
}
END_TEST

/* Files written by NumPy itself (v1 and v2 headers, float64 too); our
 * files read back by NumPy. */
START_TEST(test_npy_numpy_interop)
{
    char cmd[2048], path[512], err[512];
    snprintf(cmd, sizeof cmd,
             "/usr/bin/python3 -c \"import numpy as np, numpy.lib.format as f; "
             "a = np.arange(6, dtype=np.float32).reshape(2, 3); np.save('%s/np1.npy', a); "
             "fp = open('%s/np2.npy', 'wb'); f.write_array(fp, a.astype(np.int64), "
             "version=(2, 0)); fp.close(); np.save('%s/np3.npy', a.astype(np.float64) / 3)\"",
             tmpdir, tmpdir, tmpdir);
    ck_assert_int_eq(system(cmd), 0);
    ss_npy *a = NULL;
    snprintf(path, sizeof path, "%s/np1.npy", tmpdir);
    ck_assert_msg(ss_npy_read(path, &a, err, sizeof err) == 0, "%s", err);
    ck_assert_int_eq(a->dtype, SS_NPY_F32);
    ck_assert_int_eq(a->ndim, 2);
    ck_assert_int_eq(a->shape[0], 2);
    ck_assert_int_eq(a->shape[1], 3);
    ck_assert_float_eq(((float *)a->data)[5], 5.0f);
    ss_npy_free(a);
    snprintf(path, sizeof path, "%s/np2.npy", tmpdir);
    ck_assert_msg(ss_npy_read(path, &a, err, sizeof err) == 0, "%s", err);
    ck_assert_int_eq(a->dtype, SS_NPY_I64);
    ck_assert_int_eq(((int64_t *)a->data)[4], 4);
    ss_npy_free(a);
    snprintf(path, sizeof path, "%s/np3.npy", tmpdir);
    ck_assert_msg(ss_npy_read(path, &a, err, sizeof err) == 0, "%s", err);
    ck_assert_int_eq(a->dtype, SS_NPY_F64);
    ck_assert_double_eq(((double *)a->data)[4], 4.0 / 3.0);
    /* Written back by us, read by NumPy: same values, same dtype. */
    snprintf(path, sizeof path, "%s/ours.npy", tmpdir);
    ck_assert_int_eq(ss_npy_write(path, SS_NPY_F64, a->ndim, a->shape, a->data, err,
                                  sizeof err), 0);
    ss_npy_free(a);
    snprintf(cmd, sizeof cmd,
             "/usr/bin/python3 -c \"import numpy as np, sys; b = np.load('%s/ours.npy'); "
             "sys.exit(0 if b.dtype == np.float64 and b.shape == (2, 3) and "
             "np.array_equal(b, np.arange(6).reshape(2, 3) / 3) else 1)\"", tmpdir);
    ck_assert_int_eq(system(cmd), 0);
}
END_TEST

/* ss_npy_read_max refuses oversized arrays before allocating. */
START_TEST(test_npy_read_max)
{
    char path[512], err[512] = "";
    snprintf(path, sizeof path, "%s/big.npy", tmpdir);
    write_raw(path, MAGIC, 1, 0, "{'descr': '<f4', 'fortran_order': False, 'shape': (4, 4), }",
              64, -1);
    ss_npy *a = NULL;
    ck_assert_int_eq(ss_npy_read_max(path, 63, &a, err, sizeof err), SS_ERR_TOO_BIG);
    ck_assert_ptr_null(a);
    ck_assert_ptr_nonnull(strstr(err, path));
    ck_assert_ptr_nonnull(strstr(err, "limit of 63"));
    ck_assert_int_eq(ss_npy_read_max(path, 64, &a, err, sizeof err), 0);
    ck_assert_uint_eq(a->nbytes, 64);
    ss_npy_free(a);
    /* A shape far beyond the file: refused by the cap, nothing allocated. */
    write_raw(path, MAGIC, 1, 0,
              "{'descr': '<f4', 'fortran_order': False, 'shape': (100000, 100000), }", 0, -1);
    ck_assert_int_eq(ss_npy_read_max(path, 64u << 20, &a, err, sizeof err), SS_ERR_TOO_BIG);
}
END_TEST

/* The header parser alone (what a fuzzer drives). */
START_TEST(test_npy_parse_header)
{
    ss_npy_header h;
    const char *why = NULL;
    const char *ok = "{'descr': '<f8', 'fortran_order': True, 'shape': (2, 0, 5), }   \n";
    ck_assert_int_eq(ss_npy_parse_header(ok, strlen(ok), &h, &why), 0);
    ck_assert_str_eq(h.descr, "<f8");
    ck_assert(h.fortran_order);
    ck_assert_int_eq(h.ndim, 3);
    ck_assert_int_eq(h.shape[2], 5);
    /* Not NUL-terminated: the length bounds the parse. */
    ck_assert_int_eq(ss_npy_parse_header(ok, 20, &h, &why), SS_ERR_FORMAT);
    ck_assert_int_eq(ss_npy_parse_header("", 0, &h, &why), SS_ERR_FORMAT);
    ck_assert_ptr_nonnull(why);
}
END_TEST

START_TEST(test_npy_shape_str)
{
    char buf[64];
    int64_t s[3] = {2, 30, 4};
    ck_assert_str_eq(ss_npy_shape_str(3, s, buf, sizeof buf), "[2, 30, 4]");
    ck_assert_str_eq(ss_npy_shape_str(0, s, buf, sizeof buf), "[]");
    ck_assert_str_eq(ss_npy_shape_str(3, s, buf, 5), "[2, ");
    ck_assert_str_eq(ss_npy_dtype_name(SS_NPY_I64), "int64");
}
END_TEST

static Suite *npy_suite(void)
{
    Suite *s = suite_create("npy");
    TCase *tc = tcase_create("npy");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_loop_test(tc, test_npy_bad, 0, (int)(sizeof bad_cases / sizeof bad_cases[0]));
    tcase_add_loop_test(tc, test_npy_good_headers, 0,
                        (int)(sizeof good_cases / sizeof good_cases[0]));
    tcase_add_test(tc, test_npy_short_files);
    tcase_add_test(tc, test_npy_roundtrip);
    tcase_add_test(tc, test_npy_write_failure_leaves_nothing);
    tcase_add_test(tc, test_npy_shape_str);
    tcase_add_test(tc, test_npy_numpy_interop);
    tcase_add_test(tc, test_npy_read_max);
    tcase_add_test(tc, test_npy_parse_header);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(npy_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
