/* test_cluster_handle -- libstatesaver's ss_cluster against three real
 * statesaver-server shards of a static topology (--cluster-config, ports
 * picked by the OS and named in the file), and against one server without
 * a cluster: topology discovery from one seed, keyed calls split by shard
 * and merged in key order, per-shard atomicity, fan-out, list paging over
 * shards, stats sums, and the redirect a non-owner answers with.
 */
#include <check.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "ss_slot.h"
#include "ss_testserver.h"
#include "ss_topology.h"
#include "statesaver.h"

#define NSHARDS 3
#define NKEYS 200
#define DIM 4

static ss_testserver shards[NSHARDS];
static char addrs[NSHARDS][64];
static char dir[256];
static ss_cluster *cl;

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) < 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) < 0)
        return -1;
    close(fd);
    return ntohs(a.sin_port);
}

static void setup(void)
{
    char cfg[512], id[8];
    const char *tmp = getenv("TMPDIR");
    snprintf(dir, sizeof dir, "%s/ss-cluster-handle-XXXXXX", tmp ? tmp : "/tmp");
    ck_assert_ptr_nonnull(mkdtemp(dir));
    ss_topology *t = ss_topology_new("handle");
    ck_assert_ptr_nonnull(t);
    for (int i = 0; i < NSHARDS; i++) {
        int port = free_port();
        ck_assert_int_gt(port, 0);
        snprintf(addrs[i], sizeof addrs[i], "127.0.0.1:%d", port);
        snprintf(id, sizeof id, "s%d", i);
        ck_assert_int_eq(ss_topology_add_shard(t, id, addrs[i]), i);
    }
    ss_topology_set_epoch(t, 4);
    ck_assert_int_eq(ss_topology_assign_even(t), 0);
    char *json = ss_topology_to_json(t);
    snprintf(cfg, sizeof cfg, "%s/topology.json", dir);
    FILE *fp = fopen(cfg, "w");
    ck_assert(fp && fputs(json, fp) >= 0 && fclose(fp) == 0);
    free(json);
    ss_topology_free(t);
    for (int i = 0; i < NSHARDS; i++) {
        snprintf(id, sizeof id, "s%d", i);
        ck_assert_int_eq(ss_testserver_start_shard(&shards[i], addrs[i], cfg, id), 0);
    }
    const char *seeds[] = {addrs[1]};
    ss_cluster_options o;
    char err[512];
    ss_cluster_options_init(&o);
    o.seeds = seeds;
    o.n_seeds = 1;
    o.conn.timeout_ms = 10000;
    ck_assert_msg(ss_cluster_open(&cl, &o, err, sizeof err) == 0, "%s", err);
}

static void teardown(void)
{
    char cfg[512];
    ss_cluster_close(cl);
    cl = NULL;
    for (int i = 0; i < NSHARDS; i++)
        ss_testserver_stop(&shards[i]);
    snprintf(cfg, sizeof cfg, "%s/topology.json", dir);
    unlink(cfg);
    rmdir(dir);
}

static char names[NKEYS][24];
static ss_key keys[NKEYS];

static void make_keys(void)
{
    for (int i = 0; i < NKEYS; i++) {
        snprintf(names[i], sizeof names[i], "key-%03d", i);
        keys[i] = (ss_key){names[i], strlen(names[i])};
    }
}

static float value(int key, uint64_t seg, int j)
{
    return (float)key * 10.0f + (float)seg + (float)j * 0.25f;
}

static int declare(void)
{
    int64_t dim = DIM;
    ss_state_def def = {.name = "h", .dtype = SS_DTYPE_FLOAT32, .shape = &dim, .rank = 1};
    return ss_cluster_declare(cl, "c", &def, 1, 0, false, NULL);
}

static int save_all(uint64_t seg, const uint64_t *segs, bool *applied)
{
    static float rows[NKEYS * DIM];
    uint64_t s[NKEYS];
    int64_t dim = DIM;
    for (int k = 0; k < NKEYS; k++) {
        s[k] = segs ? segs[k] : seg;
        for (int j = 0; j < DIM; j++)
            rows[k * DIM + j] = value(k, s[k], j);
    }
    ss_state_data sd = {.dtype = SS_DTYPE_FLOAT32, .shape = &dim, .rank = 1, .data = rows};
    return ss_cluster_save(cl, "c", keys, NKEYS, s, NULL, &sd, 1, applied);
}

START_TEST(discovers_the_topology)
{
    ck_assert_uint_eq(ss_cluster_shards(cl), NSHARDS);
    ck_assert_uint_eq(ss_cluster_epoch(cl), 4);
    ck_assert_str_eq(ss_cluster_name(cl), "handle");
    unsigned total = 0;
    for (size_t i = 0; i < NSHARDS; i++) {
        ck_assert_str_eq(ss_cluster_shard_address(cl, i), addrs[i]);
        total += ss_cluster_shard_slots(cl, i);
    }
    ck_assert_uint_eq(total, SS_SLOT_COUNT);
    ss_key k = {"{user1000}.following", 20};
    ck_assert_uint_eq(ss_cluster_slot(&k), ss_slot_of("user1000", 8));
    ck_assert_int_eq(ss_cluster_ping(cl), 0);
}
END_TEST

START_TEST(split_and_merged_in_key_order)
{
    make_keys();
    ck_assert_int_eq(declare(), 0);
    bool applied[NKEYS];
    ck_assert_msg(save_all(0, NULL, applied) == 0, "%s", ss_cluster_last_error(cl));
    int per[NSHARDS] = {0};
    for (int k = 0; k < NKEYS; k++) {
        ck_assert(!applied[k]);
        per[ss_cluster_shard_of(cl, &keys[k])]++;
    }
    for (int i = 0; i < NSHARDS; i++)
        ck_assert_int_gt(per[i], 30);
    /* Fetch in reverse order plus a key never saved. */
    ss_key rev[NKEYS + 1];
    for (int k = 0; k < NKEYS; k++)
        rev[k] = keys[NKEYS - 1 - k];
    rev[NKEYS] = (ss_key){"never", 5};
    ss_fetch_result *r = NULL;
    ck_assert_int_eq(ss_cluster_fetch(cl, "c", rev, NKEYS + 1, 0, 0, &r), 0);
    ck_assert_uint_eq(ss_fetch_result_keys(r), NKEYS + 1);
    ck_assert_uint_eq(ss_fetch_result_states(r), 1);
    ck_assert_str_eq(ss_fetch_result_name(r, 0), "h");
    ck_assert_int_eq(ss_fetch_result_find(r, "h"), 0);
    ck_assert_int_eq(ss_fetch_result_dtype(r, 0), SS_DTYPE_FLOAT32);
    size_t rank = 0;
    const int64_t *shape = ss_fetch_result_shape(r, 0, &rank);
    ck_assert(rank == 1 && shape[0] == DIM);
    for (int k = 0; k < NKEYS; k++) {
        size_t nb = 0;
        const float *v = ss_fetch_result_state(r, 0, (size_t)k, &nb);
        ck_assert_uint_eq(nb, DIM * sizeof(float));
        for (int j = 0; j < DIM; j++)
            ck_assert_float_eq(v[j], value(NKEYS - 1 - k, 0, j));
        ck_assert_uint_eq(ss_fetch_result_next_segment(r, (size_t)k), 1);
        ck_assert_uint_gt(ss_fetch_result_updated_ms(r, (size_t)k), 0);
    }
    ck_assert_uint_eq(ss_fetch_result_next_segment(r, NKEYS), 0);
    ck_assert_ptr_null(ss_fetch_result_state(r, 0, NKEYS + 1, NULL));
    ss_fetch_result_free(r);
}
END_TEST

START_TEST(atomic_per_shard_and_safe_to_repeat)
{
    make_keys();
    ck_assert_int_eq(declare(), 0);
    ck_assert_int_eq(save_all(0, NULL, NULL), 0);
    /* One key of shard 0 gets a wrong segment: shard 0's part is refused
     * whole, the other shards' parts are applied. */
    uint64_t segs[NKEYS];
    int bad = -1;
    for (int k = 0; k < NKEYS; k++) {
        segs[k] = 1;
        if (bad < 0 && ss_cluster_shard_of(cl, &keys[k]) == 0)
            bad = k;
    }
    segs[bad] = 9;
    int rc = save_all(0, segs, NULL);
    ck_assert_int_eq(rc, SS_ERR_STATUS(9));
    ck_assert_ptr_nonnull(strstr(ss_cluster_last_error(cl), "shard s0"));
    ss_fetch_result *r = NULL;
    ck_assert_int_eq(ss_cluster_fetch(cl, "c", keys, NKEYS, 0, 0, &r), 0);
    for (int k = 0; k < NKEYS; k++)
        ck_assert_uint_eq(ss_fetch_result_next_segment(r, (size_t)k),
                          ss_cluster_shard_of(cl, &keys[k]) == 0 ? 1 : 2);
    ss_fetch_result_free(r);
    /* The corrected batch again: the other shards' keys say already_applied. */
    segs[bad] = 1;
    bool applied[NKEYS];
    ck_assert_int_eq(save_all(0, segs, applied), 0);
    for (int k = 0; k < NKEYS; k++)
        ck_assert(applied[k] == (ss_cluster_shard_of(cl, &keys[k]) != 0));
}
END_TEST

START_TEST(list_stats_drop_fan_out)
{
    make_keys();
    ck_assert_int_eq(declare(), 0);
    ck_assert_int_eq(save_all(0, NULL, NULL), 0);
    /* Pages of 37 rows over three shards: every key once, in key order. */
    char seen[NKEYS] = {0};
    char last[32] = "";
    int rows = 0;
    for (int page = 0; page < 100; page++) {
        ss_list_result *l = NULL;
        ss_key after = {last, strlen(last)};
        ck_assert_int_eq(ss_cluster_list(cl, "c", NULL, last[0] ? &after : NULL, 37, &l), 0);
        size_t n = ss_list_result_sequences(l);
        ck_assert_uint_le(n, 37);
        for (size_t i = 0; i < n; i++) {
            size_t len;
            const char *k = ss_list_result_key(l, i, &len);
            char buf[32];
            snprintf(buf, sizeof buf, "%.*s", (int)len, k);
            ck_assert_int_gt(strcmp(buf, last), 0);
            snprintf(last, sizeof last, "%s", buf);
            int idx = atoi(buf + 4);
            ck_assert(!seen[idx]);
            seen[idx] = 1;
            rows++;
        }
        bool more = ss_list_result_more(l);
        ss_list_result_free(l);
        if (!more)
            break;
    }
    ck_assert_int_eq(rows, NKEYS);
    ss_list_result *l = NULL;
    ck_assert_int_eq(ss_cluster_list(cl, NULL, NULL, NULL, 0, &l), 0);
    ck_assert_uint_eq(ss_list_result_savers(l), 1);
    ss_saver_info si;
    ck_assert_int_eq(ss_list_result_saver(l, 0, &si), 0);
    ck_assert_str_eq(si.name, "c");
    ck_assert_uint_eq(si.sequences, NKEYS);
    ss_list_result_free(l);
    ss_server_stats st;
    ck_assert_int_eq(ss_cluster_stats(cl, "c", &st), 0);
    ck_assert_uint_eq(st.sequences, NKEYS);
    ck_assert_uint_eq(st.savers, 1);
    uint64_t dropped = 0;
    ck_assert_int_eq(ss_cluster_drop(cl, "c", keys, 50, false, &dropped), 0);
    ck_assert_uint_eq(dropped, 50);
    ck_assert_int_eq(ss_cluster_drop(cl, "c", NULL, 0, true, &dropped), 0);
    ck_assert_uint_eq(dropped, NKEYS - 50);
    ck_assert_int_eq(ss_cluster_stats(cl, NULL, &st), 0);
    ck_assert_uint_eq(st.savers, 0);
}
END_TEST

START_TEST(a_non_owner_redirects)
{
    make_keys();
    ck_assert_int_eq(declare(), 0);
    int k = 0;
    while (ss_cluster_shard_of(cl, &keys[k]) != 2)
        k++;
    ss_client *c0 = NULL;
    ck_assert_int_eq(ss_cluster_client(cl, 0, &c0), 0);
    ss_fetch_result *r = NULL;
    ck_assert_int_eq(ss_client_fetch(c0, "c", &keys[k], 1, 0, 0, &r), SS_ERR_STATUS(SS_CODE_MOVED));
    ss_redirect rd;
    ck_assert(ss_client_last_redirect(c0, &rd));
    ck_assert_str_eq(rd.address, addrs[2]);
    ck_assert_str_eq(rd.shard, "s2");
    ck_assert_uint_eq(rd.epoch, 4);
    ck_assert_uint_eq(rd.slot, ss_cluster_slot(&keys[k]));
    ck_assert_int_eq(ss_client_ping(c0, NULL), 0);
    ck_assert(!ss_client_last_redirect(c0, NULL));
}
END_TEST

START_TEST(one_plain_server_is_a_cluster_of_one)
{
    ss_testserver one;
    ck_assert_int_eq(ss_testserver_start(&one, NULL), 0);
    const char *seeds[] = {"127.0.0.1:1", one.addr}; /* the first seed is down */
    ss_cluster_options o;
    ss_cluster *c = NULL;
    char err[512];
    ss_cluster_options_init(&o);
    o.seeds = seeds;
    o.n_seeds = 2;
    ck_assert_msg(ss_cluster_open(&c, &o, err, sizeof err) == 0, "%s", err);
    ck_assert_uint_eq(ss_cluster_shards(c), 1);
    ck_assert_str_eq(ss_cluster_shard_address(c, 0), one.addr);
    ck_assert_uint_eq(ss_cluster_shard_slots(c, 0), SS_SLOT_COUNT);
    ss_cluster_close(c);
    ss_testserver_stop(&one);
    const char *none[] = {"127.0.0.1:1"};
    o.seeds = none;
    o.n_seeds = 1;
    ck_assert_int_lt(ss_cluster_open(&c, &o, err, sizeof err), 0);
    ck_assert_ptr_null(c);
    ck_assert_ptr_nonnull(strstr(err, "127.0.0.1:1"));
}
END_TEST

int main(void)
{
    Suite *s = suite_create("cluster-handle");
    TCase *tc = tcase_create("three shards");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, discovers_the_topology);
    tcase_add_test(tc, split_and_merged_in_key_order);
    tcase_add_test(tc, atomic_per_shard_and_safe_to_repeat);
    tcase_add_test(tc, list_stats_drop_fan_out);
    tcase_add_test(tc, a_non_owner_redirects);
    suite_add_tcase(s, tc);
    TCase *t1 = tcase_create("one server");
    tcase_set_timeout(t1, 60);
    tcase_add_test(t1, one_plain_server_is_a_cluster_of_one);
    suite_add_tcase(s, t1);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
