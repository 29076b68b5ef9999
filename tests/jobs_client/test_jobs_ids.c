/* test_jobs_ids -- Check suite for the token-id submit calls of
 * libstatesaver (ss_client_submit_ids, ss_client_submit_sequences_ids,
 * ss_client_submit_segments_ids) and for leased items without inputs,
 * against the real server, with the test playing the worker:
 *   - ids submitted whole sequence at a time come back from Lease as ids
 *     [T] (inputs NULL, cols 1), the real ids then zero padding, with
 *     length, last and the segment count as for float32 sequences;
 *   - a single id segment, and picks of an id sequence;
 *   - bad arguments refused before anything is sent;
 *   - a segment submitted with named sequences only (a trainer's) leases
 *     in the same lease as a normal one: inputs and ids NULL, cols 0, rows
 *     its T, states present; Complete accepts outputs [T, out] for it.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jobs_fixture.h"
#include "ss_testserver.h"
#include "statesaver.pb-c.h"
#include "statesaver_jobs.h"



#define KEY(s) ((ss_key){(s), sizeof(s) - 1})

static const int64_t shape_h[] = {2};

/* Declare saver with one state h[2]. */
static void declare(const char *saver)
{
    ss_state_def defs[] = {
        {.name = "h", .dtype = SS_DTYPE_FLOAT32, .shape = shape_h, .rank = 1},
    };
    ck_assert_int_eq(ss_client_declare(c, saver, defs, 1, 0, false, NULL), 0);
}

static ss_lease *lease(const char *saver, size_t want)
{
    ss_lease *l = NULL;
    int rc = ss_client_lease(c, saver, 8, 2000, 0, "test", &l);
    ck_assert_msg(rc == 0, "lease: %s", ss_client_last_error(c));
    ck_assert_uint_eq(ss_lease_items(l), want);
    return l;
}

/* Complete item i of l with new state h = {v, v}, outputs [rows, 1]. */
static void complete(ss_lease *l, size_t i, float v)
{
    ss_lease_item it;
    ck_assert_int_eq(ss_lease_item_get(l, i, &it), 0);
    float h[2] = {v, v};
    const float *st[1] = {h};
    float *out = calloc(it.rows ? it.rows : 1, sizeof *out);
    ck_assert_ptr_nonnull(out);
    ss_complete_item ci = {.item = i, .outputs = out, .out_cols = 1, .states = st};
    ck_assert_msg(ss_client_complete(c, l, &ci, 1, NULL) == 0, "complete: %s",
                  ss_client_last_error(c));
    free(out);
}

static int n_reports;
static void count_cb(void *arg, size_t i, uint64_t s, int rc, const char *m)
{
    (void)arg;
    (void)i;
    (void)s;
    ck_assert_msg(rc == 0, "segment refused: %s", m);
    n_reports++;
}

/* Two id sequences (10 and 3 steps, T = 4) through Lease: ids exact, then
 * zero padding; inputs NULL, cols 1; lengths and last as for floats. */
START_TEST(test_sequences_ids)
{
    enum { T = 4 };
    int64_t a[10], b[3] = {7, 8, 9000000000LL};
    for (int i = 0; i < 10; i++)
        a[i] = 100 + i;
    ss_sequence_ids seqs[2] = {{KEY("a"), a, 10}, {KEY("b"), b, 3}};
    declare("ids");
    n_reports = 0;
    ck_assert_msg(ss_client_submit_sequences_ids(c, "ids", seqs, 2, T, NULL, count_cb, NULL) == 0,
                  "submit: %s", ss_client_last_error(c));
    ck_assert_int_eq(n_reports, 3 + 1);
    for (uint64_t s = 0; s < 3; s++) {
        ss_lease *l = lease("ids", s == 0 ? 2 : 1);
        for (size_t i = 0; i < ss_lease_items(l); i++) {
            ss_lease_item it;
            ck_assert_int_eq(ss_lease_item_get(l, i, &it), 0);
            bool is_a = it.key.len == 1 && ((const char *)it.key.data)[0] == 'a';
            const int64_t *src = is_a ? a : b;
            uint64_t len = is_a ? 10 : 3;
            uint32_t want = (uint32_t)(len - s * T < T ? len - s * T : T);
            ck_assert_uint_eq(it.segment, s);
            ck_assert_ptr_null(it.inputs);
            ck_assert_ptr_nonnull(it.ids);
            ck_assert_uint_eq(it.rows, T);
            ck_assert_uint_eq(it.cols, 1);
            ck_assert_uint_eq(it.length, want);
            ck_assert(it.last == ((s + 1) * T >= len));
            for (uint32_t t = 0; t < T; t++)
                ck_assert_int_eq(it.ids[t], t < want ? src[s * T + t] : 0);
            complete(l, i, (float)s);
        }
        ss_lease_free(l);
    }
}
END_TEST

/* One segment with ss_client_submit_ids; an id sequence resumed by picks
 * (segment 1 only, then 0: both acknowledged, 0 leased first). */
START_TEST(test_single_and_picks)
{
    int64_t ids[3] = {5, 6, 0};
    ss_key k = KEY("one");
    bool again = true;
    declare("one");
    ck_assert_int_eq(ss_client_submit_ids(c, "one", &k, 0, ids, 3, 2, true, &again), 0);
    ck_assert(!again);
    ck_assert_int_eq(ss_client_submit_ids(c, "one", &k, 0, ids, 3, 2, true, &again), 0);
    ck_assert(again);
    ss_lease *l = lease("one", 1);
    ss_lease_item it;
    ck_assert_int_eq(ss_lease_item_get(l, 0, &it), 0);
    ck_assert_uint_eq(it.rows, 3);
    ck_assert_uint_eq(it.length, 2);
    ck_assert(it.last);
    ck_assert_int_eq(it.ids[0], 5);
    ck_assert_int_eq(it.ids[1], 6);
    ss_lease_free(l);

    int64_t p[6] = {1, 2, 3, 4, 5, 6};
    ss_sequence_ids q = {KEY("p"), p, 6};
    ss_segment_pick picks[2] = {{0, 1}, {0, 0}};
    declare("picks");
    n_reports = 0;
    ck_assert_int_eq(ss_client_submit_segments_ids(c, "picks", &q, 1, 4, picks, 2, NULL,
                                                   count_cb, NULL), 0);
    ck_assert_int_eq(n_reports, 2);
    ck_assert_int_eq(ss_client_submit_segments_ids(c, "picks", &q, 1, 4, picks, 0, NULL,
                                                   count_cb, NULL), 0);
    l = lease("picks", 1);
    ck_assert_int_eq(ss_lease_item_get(l, 0, &it), 0);
    ck_assert_uint_eq(it.segment, 0);
    ck_assert_int_eq(it.ids[3], 4);
    ss_lease_free(l);
}
END_TEST

/* Refused before anything is sent. */
START_TEST(test_ids_bad_args)
{
    int64_t ids[2] = {1, 2};
    ss_key k = KEY("x");
    ss_sequence_ids q = {k, ids, 2};
    ss_sequence_ids nodata = {k, NULL, 2};
    ss_segment_pick far = {0, 1};
    ck_assert_int_eq(ss_client_submit_ids(c, "nosuch", &k, 0, NULL, 2, 2, true, NULL),
                     SS_ERR_INVALID);
    ck_assert_int_eq(ss_client_submit_ids(c, "nosuch", &k, 0, ids, 0, 0, true, NULL),
                     SS_ERR_INVALID);
    ck_assert_int_eq(ss_client_submit_ids(c, "nosuch", &k, 0, ids, 2, 3, true, NULL),
                     SS_ERR_INVALID);
    ck_assert_int_eq(ss_client_submit_sequences_ids(c, "nosuch", NULL, 1, 4, NULL, NULL, NULL),
                     SS_ERR_INVALID);
    ck_assert_int_eq(ss_client_submit_sequences_ids(c, "nosuch", &nodata, 1, 4, NULL, NULL,
                                                    NULL), SS_ERR_INVALID);
    ck_assert_int_eq(ss_client_submit_sequences_ids(c, "nosuch", &q, 1, 0, NULL, NULL, NULL),
                     SS_ERR_INVALID);
    ck_assert_int_eq(ss_client_submit_segments_ids(c, "nosuch", &q, 1, 4, &far, 1, NULL, NULL,
                                                   NULL), SS_ERR_INVALID);
    /* The connection is still good: nothing was sent. */
    ck_assert_int_eq(ss_client_ping(c, NULL), 0);
}
END_TEST

/* A trainer's segment (named sequence only, T = 5, length 3) leased with
 * a normal one: decoded with no inputs, its T as rows; both complete. */
START_TEST(test_lease_without_inputs)
{
    declare("mixed");
    int64_t tg[5] = {1, 2, 3, 0, 0};
    int64_t dims[1] = {5};
    Statesaver__V1__Tensor t = STATESAVER__V1__TENSOR__INIT;
    t.dtype = STATESAVER__V1__DTYPE__DT_INT64;
    t.n_shape = 1;
    t.shape = dims;
    t.data.data = (uint8_t *)tg;
    t.data.len = sizeof tg;
    Statesaver__V1__SubmitRequest__SequencesEntry e =
        STATESAVER__V1__SUBMIT_REQUEST__SEQUENCES_ENTRY__INIT;
    e.key = "targets";
    e.value = &t;
    Statesaver__V1__SubmitRequest__SequencesEntry *ep = &e;
    Statesaver__V1__SubmitRequest sub = STATESAVER__V1__SUBMIT_REQUEST__INIT;
    sub.saver = "mixed";
    sub.key.data = (uint8_t *)"trainer";
    sub.key.len = 7;
    sub.length = 3;
    sub.last = true;
    sub.n_sequences = 1;
    sub.sequences = &ep;
    Statesaver__V1__Request req = STATESAVER__V1__REQUEST__INIT;
    req.body_case = STATESAVER__V1__REQUEST__BODY_SUBMIT;
    req.submit = &sub;
    Statesaver__V1__Response *r = NULL;
    ck_assert_msg(ss_client_call(c, &req, 0, &r) == 0, "submit: %s", ss_client_last_error(c));
    ss_client_response_free(r);
    int64_t ids[2] = {4, 4};
    ss_key k = KEY("plain");
    ck_assert_int_eq(ss_client_submit_ids(c, "mixed", &k, 0, ids, 2, 2, true, NULL), 0);

    ss_lease *l = lease("mixed", 2);
    bool seen[2] = {false, false};
    for (size_t i = 0; i < 2; i++) {
        ss_lease_item it;
        size_t count = 0;
        ck_assert_int_eq(ss_lease_item_get(l, i, &it), 0);
        ck_assert_ptr_nonnull(ss_lease_item_state(l, i, 0, &count));
        ck_assert_uint_eq(count, 2);
        if (it.key.len == 7) {
            ck_assert_ptr_null(it.inputs);
            ck_assert_ptr_null(it.ids);
            ck_assert_uint_eq(it.rows, 5);
            ck_assert_uint_eq(it.cols, 0);
            ck_assert_uint_eq(it.length, 3);
            seen[0] = true;
        } else {
            ck_assert_ptr_nonnull(it.ids);
            ck_assert_uint_eq(it.rows, 2);
            seen[1] = true;
        }
        complete(l, i, 1.5f); /* outputs [rows, 1]: [T, 1] for the trainer's */
    }
    ck_assert(seen[0] && seen[1]);
    ss_lease_free(l);
    ss_await_result *res = NULL;
    ss_key tk = KEY("trainer");
    ck_assert_int_eq(ss_client_await(c, "mixed", &tk, 0, 2000, true, &res), 0);
    ck_assert_int_eq(ss_await_result_state(res), SS_SEG_DONE);
    uint32_t rows = 0, cols = 0;
    ck_assert_ptr_nonnull(ss_await_result_outputs(res, &rows, &cols));
    ck_assert_uint_eq(rows, 5);
    ck_assert_uint_eq(cols, 1);
    ss_await_result_free(res);
}
END_TEST

static Suite *jobs_ids_suite(void)
{
    Suite *s = suite_create("jobs_ids");
    TCase *tc = tcase_create("ids");
    tcase_add_unchecked_fixture(tc, jobs_fx_start_srv, jobs_fx_stop_srv);
    tcase_add_checked_fixture(tc, jobs_fx_open_client, jobs_fx_close_client);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_sequences_ids);
    tcase_add_test(tc, test_single_and_picks);
    tcase_add_test(tc, test_ids_bad_args);
    tcase_add_test(tc, test_lease_without_inputs);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(jobs_ids_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
