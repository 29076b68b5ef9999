/* test_jobs_cancel -- Check suite for ss_client_cancel against the real
 * server (real LMDB, real socket), the test playing the worker: a
 * sequence with a done segment (outputs stored), a leased one and a
 * queued one is cancelled in one call; its job records and state are gone,
 * the counts are right, its queue slots are free, a late Complete of the
 * cancelled lease is refused, another sequence is untouched; unknown keys
 * count 0, an undeclared saver is NOT_FOUND, duplicate keys are refused by
 * the server; bad arguments are refused before anything is sent.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jobs_fixture.h"
#include "ss_testserver.h"
#include "statesaver_jobs.h"

#define ST_INVALID_ARGUMENT 3
#define ST_NOT_FOUND 5
#define ST_FAILED_PRECONDITION 9


#define KEY(s) ((ss_key){(s), sizeof(s) - 1})

static const int64_t shape_a[] = {3};

/* Declare saver with one state a[3]. */
static void declare(const char *saver)
{
    ss_state_def def = {.name = "a", .dtype = SS_DTYPE_FLOAT32, .shape = shape_a, .rank = 1};
    ck_assert_int_eq(ss_client_declare(c, saver, &def, 1, 0, false, NULL), 0);
}

/* Lease exactly one item of saver (max_batch 1). */
static ss_lease *lease_one(const char *saver, ss_lease_item *it)
{
    ss_lease *l = NULL;
    int rc = ss_client_lease(c, saver, 1, 2000, 0, "test", &l);
    ck_assert_msg(rc == 0, "lease: %s", ss_client_last_error(c));
    ck_assert_uint_eq(ss_lease_items(l), 1);
    ck_assert_int_eq(ss_lease_item_get(l, 0, it), 0);
    return l;
}

static int complete_one(ss_lease *l, const ss_lease_item *it, float *state)
{
    float out[8] = {0};
    const float *states[] = {state};
    ck_assert_uint_le((size_t)it->rows * it->cols, 8);
    ss_complete_item ci = {.item = 0, .outputs = out, .out_cols = it->cols, .states = states};
    return ss_client_complete(c, l, &ci, 1, NULL);
}

static ss_server_stats stats(const char *saver)
{
    ss_server_stats st;
    ck_assert_msg(ss_client_stats(c, saver, &st) == 0, "stats: %s", ss_client_last_error(c));
    return st;
}

START_TEST(test_cancel_sequence)
{
    enum { LEN = 6, IN = 2, T = 2 };
    float x[LEN * IN] = {0};
    ss_key ka = KEY("seq-a"), kb = KEY("seq-b");
    uint64_t nseg = 0, cancelled = 99, segments = 99;
    float sa[3] = {1.0f, 2.0f, 3.0f};
    ss_lease_item it;

    declare("cx");
    ck_assert_int_eq(ss_client_submit_sequence(c, "cx", &ka, x, LEN, IN, T, &nseg), 0);
    ck_assert_uint_eq(nseg, 3);
    /* Segment 0 done (its outputs stored, not collected), segment 1 leased,
     * segment 2 queued behind it. */
    ss_lease *l0 = lease_one("cx", &it);
    ck_assert_uint_eq(it.segment, 0);
    ck_assert_int_eq(complete_one(l0, &it, sa), 0);
    ss_lease_free(l0);
    ss_lease *l1 = lease_one("cx", &it);
    ck_assert_uint_eq(it.segment, 1);
    /* Another sequence, untouched by the cancel. */
    ck_assert_int_eq(ss_client_submit_sequence(c, "cx", &kb, x, T, IN, T, &nseg), 0);
    ss_server_stats st = stats("cx");
    ck_assert_uint_eq(st.queued + st.leased, 3); /* a: 1 leased + 1 queued; b: 1 queued */
    ss_fetch_result *f = NULL;
    ck_assert_int_eq(ss_client_fetch(c, "cx", &ka, 1, 0, 0, &f), 0);
    ck_assert_uint_eq(ss_fetch_result_next_segment(f, 0), 1);
    ss_fetch_result_free(f);

    ck_assert_msg(ss_client_cancel(c, "cx", &ka, 1, &cancelled, &segments) == 0, "cancel: %s",
                  ss_client_last_error(c));
    ck_assert_uint_eq(cancelled, 1);
    ck_assert_uint_eq(segments, 3); /* done 0, leased 1, queued 2 */

    /* The slots are free: only b's segment is left. */
    st = stats("cx");
    ck_assert_uint_eq(st.queued + st.leased, 1);
    /* Its state is gone: a fetch sees a sequence that never saved. */
    f = NULL;
    int rc = ss_client_fetch(c, "cx", &ka, 1, 0, 0, &f);
    ck_assert_msg(rc == SS_ERR_STATUS(ST_NOT_FOUND) ||
                      (rc == 0 && ss_fetch_result_next_segment(f, 0) == 0),
                  "fetch after cancel: rc %d", rc);
    ss_fetch_result_free(f);
    /* Its job records are gone, the stored outputs of segment 0 too. */
    for (uint64_t s = 0; s < 3; s++) {
        ss_await_result *r = NULL;
        ck_assert_int_eq(ss_client_await(c, "cx", &ka, s, 0, false, &r),
                         SS_ERR_STATUS(ST_NOT_FOUND));
        ck_assert_ptr_null(r);
    }
    /* The late Complete of the cancelled lease is refused. */
    float sb[3] = {4.0f, 5.0f, 6.0f};
    rc = complete_one(l1, &it, sb);
    ck_assert_int_eq(rc, SS_ERR_STATUS(ST_FAILED_PRECONDITION));
    ck_assert_msg(strstr(ss_client_last_error(c), "cancelled"), "message: %s",
                  ss_client_last_error(c));
    ss_lease_free(l1);
    /* ... and saved nothing. */
    f = NULL;
    rc = ss_client_fetch(c, "cx", &ka, 1, 0, 0, &f);
    ck_assert(rc == SS_ERR_STATUS(ST_NOT_FOUND) ||
              (rc == 0 && ss_fetch_result_next_segment(f, 0) == 0));
    ss_fetch_result_free(f);
    /* b is still there to lease. */
    ss_lease *lb = lease_one("cx", &it);
    ck_assert_uint_eq(it.key.len, kb.len);
    ck_assert(memcmp(it.key.data, kb.data, kb.len) == 0);
    ss_lease_free(lb);

    /* Cancelled again, and a key never seen: nothing to remove, no error. */
    ss_key twice[] = {ka, KEY("never-submitted")};
    ck_assert_int_eq(ss_client_cancel(c, "cx", twice, 2, &cancelled, &segments), 0);
    ck_assert_uint_eq(cancelled, 0);
    ck_assert_uint_eq(segments, 0);
    /* Counts may be NULL. */
    ck_assert_int_eq(ss_client_cancel(c, "cx", &kb, 1, NULL, NULL), 0);
    st = stats("cx");
    ck_assert_uint_eq(st.queued + st.leased, 0);
    ck_assert(!ss_client_broken(c));
}
END_TEST

START_TEST(test_cancel_refused_by_server)
{
    uint64_t cancelled = 99, segments = 99;
    ss_key k = KEY("k");
    int rc = ss_client_cancel(c, "never-declared", &k, 1, &cancelled, &segments);
    ck_assert_int_eq(rc, SS_ERR_STATUS(ST_NOT_FOUND));
    ck_assert_msg(strstr(ss_client_last_error(c), "not declared"), "message: %s",
                  ss_client_last_error(c));
    ck_assert_uint_eq(cancelled, 0);
    ck_assert_uint_eq(segments, 0);
    declare("dup");
    ss_key two[] = {k, k};
    rc = ss_client_cancel(c, "dup", two, 2, &cancelled, &segments);
    ck_assert_int_eq(rc, SS_ERR_STATUS(ST_INVALID_ARGUMENT));
    ck_assert_msg(strstr(ss_client_last_error(c), "given twice"), "message: %s",
                  ss_client_last_error(c));
    ck_assert(!ss_client_broken(c));
    ck_assert_int_eq(ss_client_ping(c, NULL), 0);
}
END_TEST

/* Bad arguments: SS_ERR_INVALID with a message, nothing sent (the
 * server's request counter moves only by the stats calls around them). */
static const struct bad_cancel {
    const char *what;   /* case name */
    const char *saver;  /* saver argument */
    bool keys;          /* pass the key array */
    size_t n;           /* keys */
    ss_key key;         /* the one key */
} bad_cancels[] = {
    {"no saver", NULL, true, 1, {"k", 1}},
    {"no keys", "args", true, 0, {"k", 1}},
    {"keys NULL", "args", false, 1, {"k", 1}},
    {"empty key", "args", true, 1, {"", 0}},
    {"key data NULL", "args", true, 1, {NULL, 1}},
};

START_TEST(test_cancel_bad_args)
{
    const struct bad_cancel *b = &bad_cancels[_i];
    uint64_t cancelled = 99, segments = 99;
    declare("args");
    uint64_t r0 = stats(NULL).requests, r1 = stats(NULL).requests;
    int rc = ss_client_cancel(c, b->saver, b->keys ? &b->key : NULL, b->n, &cancelled,
                              &segments);
    ck_assert_msg(rc == SS_ERR_INVALID, "%s: got %d", b->what, rc);
    ck_assert_msg(strstr(ss_client_last_error(c), "cancel"), "%s: message '%s'", b->what,
                  ss_client_last_error(c));
    uint64_t r2 = stats(NULL).requests;
    ck_assert_uint_eq(cancelled, 0);
    ck_assert_uint_eq(segments, 0);
    ck_assert_msg(r2 - r1 == r1 - r0, "%s: a request was sent", b->what);
    ck_assert_int_eq(ss_client_cancel(NULL, "args", &b->key, 1, NULL, NULL), SS_ERR_INVALID);
    ck_assert(!ss_client_broken(c));
}
END_TEST

static Suite *jobs_cancel_suite(void)
{
    Suite *s = suite_create("jobs-cancel");
    TCase *tc = tcase_create("cancel");
    tcase_add_unchecked_fixture(tc, jobs_fx_start_srv, jobs_fx_stop_srv);
    tcase_add_checked_fixture(tc, jobs_fx_open_client, jobs_fx_close_client);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_cancel_sequence);
    tcase_add_test(tc, test_cancel_refused_by_server);
    tcase_add_loop_test(tc, test_cancel_bad_args, 0, sizeof bad_cancels / sizeof bad_cancels[0]);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(jobs_cancel_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
