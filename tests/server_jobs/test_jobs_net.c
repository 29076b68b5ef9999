/* test_jobs_net -- the job API through the real statesaver-server binary,
 * raw frames on TCP: submit / lease / complete / await end to end, the
 * Fetch barrier woken by Complete, expiry, errors keep the connection
 * serving, Stats queue fields, restart keeps queued work. */
#include <check.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "net_helper.h"

#define T_WAIT 10000 /* ms: bound on any single reply */
#define CODE(x) STATESAVER__V1__CODE__##x
#define SAVER "lm"
#define T 3      /* steps per segment */
#define IN 2     /* input size */
#define OUT 1    /* output size */

static const char *const state_names[] = {"h"};
static const int64_t state_dims[] = {2};

static tsrv g_srv;

/* Receive one reply; on nothing, show the server's log before failing. */
static tresp *recv_or_dump(int fd)
{
    tresp *r = tc_recv(fd, T_WAIT, NULL);
    if (!r)
        tsrv_dump_log(&g_srv);
    ck_assert_msg(r != NULL, "no reply (server log above)");
    return r;
}

static tresp *call(int fd, treq *q)
{
    tresp *r = tc_call(fd, q, T_WAIT);
    if (!r)
        tsrv_dump_log(&g_srv);
    ck_assert_msg(r != NULL, "no reply to request %llu", (unsigned long long)q->id);
    ck_assert_uint_eq(r->id, q->id);
    return r;
}

static void expect_code(tresp *r, int code, const char *what)
{
    ck_assert_msg(tresp_code(r) == code, "%s: status %d (%s), want %d", what, tresp_code(r),
                  r->status && r->status->message ? r->status->message : "", code);
}

static int submit(int fd, uint64_t id, const char *saver, const char *key, uint64_t seg,
                  bool last)
{
    float x[T * IN];
    for (int i = 0; i < T * IN; i++)
        x[i] = (float)(seg * 10 + (uint64_t)i);
    int64_t dims[2] = {T, IN};
    Statesaver__V1__Tensor in = STATESAVER__V1__TENSOR__INIT;
    in.dtype = STATESAVER__V1__DTYPE__DT_FLOAT32;
    in.n_shape = 2;
    in.shape = dims;
    in.data.data = (uint8_t *)x;
    in.data.len = sizeof x;
    Statesaver__V1__SubmitRequest s = STATESAVER__V1__SUBMIT_REQUEST__INIT;
    s.saver = (char *)saver;
    s.key.data = (uint8_t *)key;
    s.key.len = strlen(key);
    s.segment = seg;
    s.inputs = &in;
    s.length = last ? T - 1 : T;
    s.last = last;
    treq q = STATESAVER__V1__REQUEST__INIT;
    q.id = id;
    q.body_case = STATESAVER__V1__REQUEST__BODY_SUBMIT;
    q.submit = &s;
    tresp *r = call(fd, &q);
    int code = tresp_code(r);
    tresp_free(r);
    return code;
}

static void send_lease(int fd, uint64_t id, uint32_t max_batch, uint32_t wait_ms,
                       uint32_t lease_ms)
{
    Statesaver__V1__LeaseRequest l = STATESAVER__V1__LEASE_REQUEST__INIT;
    l.saver = (char *)SAVER;
    l.max_batch = max_batch;
    l.wait_ms = wait_ms;
    l.lease_ms = lease_ms;
    l.worker = (char *)"net-test";
    treq q = STATESAVER__V1__REQUEST__INIT;
    q.id = id;
    q.body_case = STATESAVER__V1__REQUEST__BODY_LEASE;
    q.lease = &l;
    ck_assert_int_eq(tc_send(fd, &q), 0);
}

static tresp *lease(int fd, uint64_t id, uint32_t max_batch, uint32_t lease_ms)
{
    send_lease(fd, id, max_batch, 0, lease_ms);
    tresp *r = recv_or_dump(fd);
    ck_assert_uint_eq(r->id, id);
    expect_code(r, 0, "lease");
    ck_assert_int_eq(r->body_case, STATESAVER__V1__RESPONSE__BODY_LEASE);
    return r;
}

/* Complete one leased item: state' = state + {1, 2}, outputs = 7. */
static int complete_one(int fd, uint64_t id, uint64_t lease_id,
                        const Statesaver__V1__LeasedSegment *it, const char *error)
{
    float st[2], out[T * OUT];
    const float *cur = (const float *)it->states[0]->data.data;
    st[0] = cur[0] + 1.0f;
    st[1] = cur[1] + 2.0f;
    for (int i = 0; i < T * OUT; i++)
        out[i] = 7.0f;
    int64_t odims[2] = {T, OUT}, sdims[1] = {2};
    Statesaver__V1__Tensor o = STATESAVER__V1__TENSOR__INIT, s = STATESAVER__V1__TENSOR__INIT;
    o.dtype = s.dtype = STATESAVER__V1__DTYPE__DT_FLOAT32;
    o.n_shape = 2;
    o.shape = odims;
    o.data.data = (uint8_t *)out;
    o.data.len = sizeof out;
    s.n_shape = 1;
    s.shape = sdims;
    s.data.data = (uint8_t *)st;
    s.data.len = sizeof st;
    Statesaver__V1__Tensor *sp[1] = {&s};
    Statesaver__V1__CompletedSegment c = STATESAVER__V1__COMPLETED_SEGMENT__INIT;
    c.key = it->key;
    c.segment = it->segment;
    if (error) {
        c.error = (char *)error;
    } else {
        c.outputs = &o;
        c.n_states = 1;
        c.states = sp;
    }
    Statesaver__V1__CompletedSegment *cp[1] = {&c};
    Statesaver__V1__CompleteRequest cr = STATESAVER__V1__COMPLETE_REQUEST__INIT;
    cr.saver = (char *)SAVER;
    cr.lease_id = lease_id;
    cr.n_items = 1;
    cr.items = cp;
    treq q = STATESAVER__V1__REQUEST__INIT;
    q.id = id;
    q.body_case = STATESAVER__V1__REQUEST__BODY_COMPLETE;
    q.complete = &cr;
    tresp *r = call(fd, &q);
    int code = tresp_code(r);
    tresp_free(r);
    return code;
}

static void send_await(int fd, uint64_t id, const char *key, uint64_t seg, uint32_t wait_ms,
                       bool collect)
{
    Statesaver__V1__AwaitRequest a = STATESAVER__V1__AWAIT_REQUEST__INIT;
    a.saver = (char *)SAVER;
    a.key.data = (uint8_t *)key;
    a.key.len = strlen(key);
    a.segment = seg;
    a.wait_ms = wait_ms;
    a.collect = collect;
    treq q = STATESAVER__V1__REQUEST__INIT;
    q.id = id;
    q.body_case = STATESAVER__V1__REQUEST__BODY_AWAIT_SEGMENT;
    q.await_segment = &a;
    ck_assert_int_eq(tc_send(fd, &q), 0);
}

static Statesaver__V1__StatsResponse *stats(int fd, tresp **hold)
{
    Statesaver__V1__StatsRequest s = STATESAVER__V1__STATS_REQUEST__INIT;
    treq q = STATESAVER__V1__REQUEST__INIT;
    q.id = 77;
    q.body_case = STATESAVER__V1__REQUEST__BODY_STATS;
    q.stats = &s;
    *hold = call(fd, &q);
    expect_code(*hold, 0, "stats");
    return (*hold)->stats;
}

static void start(void)
{
    static const char *const extra[] = {"--sync", "off", "--max-attempts", "2", NULL};
    tsrv_start(&g_srv, extra);
}

static void declare(int fd)
{
    treq *q = treq_declare(1, SAVER, 1, state_names, state_dims);
    tresp *r = call(fd, q);
    expect_code(r, 0, "declare");
    tresp_free(r);
    treq_free(q);
}

START_TEST(test_jobs_end_to_end)
{
    tsrv_init(&g_srv);
    start();
    int fd = tc_connect(g_srv.port), fd2 = tc_connect(g_srv.port);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_ge(fd2, 0);
    declare(fd);
    ck_assert_int_eq(submit(fd, 2, SAVER, "k", 0, false), 0);
    ck_assert_int_eq(submit(fd, 3, SAVER, "k", 1, true), 0);
    ck_assert_int_eq(submit(fd, 4, SAVER, "k", 1, true), 0); /* idempotent */
    /* Bad requests get errors and the connection keeps serving. */
    ck_assert_int_eq(submit(fd, 5, "nope", "k", 0, false), CODE(NOT_FOUND));
    ck_assert_int_eq(submit(fd, 6, SAVER, "", 0, false), CODE(INVALID_ARGUMENT));
    /* A parked Await on the second connection, and a Fetch barrier on k
     * reaching segment 1 (woken by Complete, not by a Save). */
    send_await(fd2, 10, "k", 1, T_WAIT, false);
    treq *fq = treq_fetch(11, SAVER, 1, (const char *const[]){"k"}, 1, T_WAIT);
    ck_assert_int_eq(tc_send(fd2, fq), 0);
    treq_free(fq);
    tresp *l = lease(fd, 20, 8, 10000);
    ck_assert_uint_eq(l->lease->n_items, 1);
    const Statesaver__V1__LeasedSegment *it = l->lease->items[0];
    ck_assert_uint_eq(it->segment, 0);
    ck_assert_uint_eq(it->length, T);
    ck_assert_str_eq(l->lease->names[0], "h");
    ck_assert_float_eq(((const float *)it->states[0]->data.data)[1], 0.0f);
    ck_assert_int_eq(complete_one(fd, 21, l->lease->lease_id, it, NULL), 0);
    /* The same lease again: finished. */
    ck_assert_int_eq(complete_one(fd, 22, l->lease->lease_id, it, NULL), CODE(FAILED_PRECONDITION));
    tresp_free(l);
    tresp *fr = recv_or_dump(fd2);
    ck_assert_uint_eq(fr->id, 11);
    expect_code(fr, 0, "fetch barrier");
    ck_assert_uint_eq(fr->fetch->next_segment[0], 1);
    tresp_free(fr);
    l = lease(fd, 23, 8, 10000);
    ck_assert_uint_eq(l->lease->n_items, 1);
    it = l->lease->items[0];
    ck_assert_uint_eq(it->segment, 1);
    ck_assert(it->last);
    ck_assert_uint_eq(it->length, T - 1);
    /* The state carried from segment 0. */
    ck_assert_float_eq(((const float *)it->states[0]->data.data)[0], 1.0f);
    ck_assert_float_eq(((const float *)it->states[0]->data.data)[1], 2.0f);
    ck_assert_int_eq(complete_one(fd, 24, l->lease->lease_id, it, NULL), 0);
    tresp_free(l);
    tresp *aw = recv_or_dump(fd2);
    ck_assert_uint_eq(aw->id, 10);
    expect_code(aw, 0, "await");
    ck_assert_int_eq(aw->await_segment->state, STATESAVER__V1__SEGMENT_STATE__SEG_DONE);
    ck_assert(aw->await_segment->last);
    ck_assert_uint_eq(aw->await_segment->n_final_states, 1);
    ck_assert_float_eq(((const float *)aw->await_segment->final_states[0]->data.data)[1], 4.0f);
    ck_assert_float_eq(((const float *)aw->await_segment->outputs->data.data)[0], 7.0f);
    tresp_free(aw);
    tresp *hold;
    Statesaver__V1__StatsResponse *st = stats(fd, &hold);
    ck_assert_uint_eq(st->completed, 2);
    ck_assert_uint_eq(st->saves_applied, 2);
    ck_assert_uint_eq(st->queued, 0);
    tresp_free(hold);
    /* Empty lease after wait_ms: OK with no items. */
    send_lease(fd, 30, 4, 100, 0);
    tresp *el = recv_or_dump(fd);
    expect_code(el, 0, "empty lease");
    ck_assert_uint_eq(el->lease->n_items, 0);
    tresp_free(el);
    /* Expiry and the poison limit (--max-attempts 2): x/0 fails, x/1 too. */
    ck_assert_int_eq(submit(fd, 40, SAVER, "x", 0, false), 0);
    ck_assert_int_eq(submit(fd, 41, SAVER, "x", 1, false), 0);
    l = lease(fd, 42, 1, 100);
    tresp_free(l);
    usleep(400 * 1000);
    l = lease(fd, 43, 1, 10000);
    ck_assert_uint_eq(l->lease->n_items, 1);
    ck_assert_uint_eq(l->lease->items[0]->attempts, 1);
    ck_assert_int_eq(complete_one(fd, 44, l->lease->lease_id, l->lease->items[0], "worker crashed"), 0);
    tresp_free(l);
    send_await(fd, 45, "x", 1, T_WAIT, true);
    aw = recv_or_dump(fd);
    expect_code(aw, 0, "await failed");
    ck_assert_int_eq(aw->await_segment->state, STATESAVER__V1__SEGMENT_STATE__SEG_FAILED);
    ck_assert_ptr_nonnull(strstr(aw->await_segment->reason, "worker crashed"));
    tresp_free(aw);
    st = stats(fd, &hold);
    ck_assert_uint_eq(st->expired_leases, 1);
    ck_assert_uint_eq(st->failed, 2);
    tresp_free(hold);
    /* Restart: queued work survives, a lease does not. */
    ck_assert_int_eq(submit(fd, 50, SAVER, "r", 0, false), 0);
    ck_assert_int_eq(submit(fd, 51, SAVER, "q", 0, false), 0);
    l = lease(fd, 52, 1, 60000);
    ck_assert_uint_eq(l->lease->n_items, 1);
    tresp_free(l);
    close(fd);
    close(fd2);
    ck_assert_int_eq(tsrv_stop(&g_srv, SIGTERM, T_WAIT), 0);
    start();
    fd = tc_connect(g_srv.port);
    ck_assert_int_ge(fd, 0);
    st = stats(fd, &hold);
    ck_assert_uint_eq(st->queued, 2);
    ck_assert_uint_eq(st->leased, 0);
    tresp_free(hold);
    l = lease(fd, 53, 8, 10000);
    ck_assert_uint_eq(l->lease->n_items, 2);
    tresp_free(l);
    close(fd);
    ck_assert_int_eq(tsrv_stop(&g_srv, SIGTERM, T_WAIT), 0);
    tsrv_cleanup(&g_srv);
}
END_TEST

static Suite *jobs_net_suite(void)
{
    Suite *s = suite_create("jobs_net");
    TCase *tc = tcase_create("server");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_jobs_end_to_end);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(jobs_net_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
