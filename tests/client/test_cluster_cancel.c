/* test_cluster_cancel -- ss_cluster_cancel against three real
 * statesaver-server shards of a static topology (--cluster-config): keys
 * on every shard, each with a leased and a queued segment, cancelled in
 * one call (counts summed, each shard's queue emptied); with a handle
 * whose topology is stale (the shards restarted under a newer topology
 * that rotates every range to the next shard), the non-owners' MOVED
 * answers refresh the topology and the keys not cancelled yet are retried,
 * so the counts are still exact; bad arguments are refused before
 * anything is sent.
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
#include "statesaver_jobs.h"

#define NSHARDS 3
#define PER_SHARD 2 /* keys per shard */
#define NKEYS (NSHARDS * PER_SHARD)
#define T 2         /* steps per segment; every sequence has 2 segments */
#define IN 2

static ss_testserver shards[NSHARDS];
static char addrs[NSHARDS][64];
static char dir[256];
static ss_topology *topo[2]; /* epoch 1 and epoch 2 (ranges rotated) */
static ss_cluster *cl;
static char names[NKEYS][24];
static ss_key keys[NKEYS];
static int key_owner[NKEYS]; /* shard index under topo[1] (the one running) */

static const int64_t shape_h[] = {3};

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

static void write_config(const ss_topology *t)
{
    char cfg[512];
    snprintf(cfg, sizeof cfg, "%s/topology.json", dir);
    char *json = ss_topology_to_json(t);
    FILE *fp = fopen(cfg, "w");
    ck_assert(json && fp && fputs(json, fp) >= 0 && fclose(fp) == 0);
    free(json);
}

static void start_shards(void)
{
    char cfg[512], id[8];
    snprintf(cfg, sizeof cfg, "%s/topology.json", dir);
    for (int i = 0; i < NSHARDS; i++) {
        snprintf(id, sizeof id, "s%d", i);
        ck_assert_int_eq(ss_testserver_start_shard(&shards[i], addrs[i], cfg, id), 0);
    }
}

static void stop_shards(void)
{
    for (int i = 0; i < NSHARDS; i++)
        ss_testserver_stop(&shards[i]);
}

static void open_cluster(void)
{
    const char *seeds[] = {addrs[0]};
    ss_cluster_options o;
    char err[512];
    ss_cluster_options_init(&o);
    o.seeds = seeds;
    o.n_seeds = 1;
    o.conn.timeout_ms = 10000;
    ck_assert_msg(ss_cluster_open(&cl, &o, err, sizeof err) == 0, "%s", err);
}

static void setup(void)
{
    char id[8];
    const char *tmp = getenv("TMPDIR");
    snprintf(dir, sizeof dir, "%s/ss-cluster-cancel-XXXXXX", tmp ? tmp : "/tmp");
    ck_assert_ptr_nonnull(mkdtemp(dir));
    topo[0] = ss_topology_new("cancel");
    ck_assert_ptr_nonnull(topo[0]);
    for (int i = 0; i < NSHARDS; i++) {
        int port = free_port();
        ck_assert_int_gt(port, 0);
        snprintf(addrs[i], sizeof addrs[i], "127.0.0.1:%d", port);
        snprintf(id, sizeof id, "s%d", i);
        ck_assert_int_eq(ss_topology_add_shard(topo[0], id, addrs[i]), i);
    }
    ss_topology_set_epoch(topo[0], 1);
    ck_assert_int_eq(ss_topology_assign_even(topo[0]), 0);
    topo[1] = ss_topology_copy(topo[0]);
    ck_assert_ptr_nonnull(topo[1]);
    for (size_t r = 0; r < ss_topology_n_ranges(topo[0]); r++) {
        unsigned first, last;
        int sh;
        ss_topology_range(topo[0], r, &first, &last, &sh);
        ck_assert_int_eq(ss_topology_assign(topo[1], first, last, (size_t)(sh + 1) % NSHARDS), 0);
    }
    ss_topology_set_epoch(topo[1], 2);
    write_config(topo[0]);
    start_shards();
    open_cluster();
}

static void teardown(void)
{
    char cfg[512];
    ss_cluster_close(cl);
    cl = NULL;
    stop_shards();
    ss_topology_free(topo[0]);
    ss_topology_free(topo[1]);
    snprintf(cfg, sizeof cfg, "%s/topology.json", dir);
    unlink(cfg);
    rmdir(dir);
}

/* PER_SHARD keys owned by every shard under topology t. */
static void make_keys(const ss_topology *t)
{
    int per[NSHARDS] = {0};
    size_t n = 0;
    for (int i = 0; n < NKEYS; i++) {
        char buf[24];
        snprintf(buf, sizeof buf, "cx-%d", i);
        int o = ss_topology_owner(t, ss_slot_of(buf, strlen(buf)));
        ck_assert_int_ge(o, 0);
        if (per[o] == PER_SHARD)
            continue;
        per[o]++;
        memcpy(names[n], buf, sizeof buf);
        keys[n] = (ss_key){names[n], strlen(names[n])};
        key_owner[n] = o;
        n++;
    }
}

/* Declare on every shard, submit each key's 2 segments to its owner (under
 * topology t), lease segment 0 of all of them. The leases are returned in
 * l[] (one per shard). */
static void submit_and_lease(const ss_topology *t, ss_lease *l[NSHARDS])
{
    ss_state_def def = {.name = "h", .dtype = SS_DTYPE_FLOAT32, .shape = shape_h, .rank = 1};
    float x[2 * T * IN] = {0};
    ck_assert_msg(ss_cluster_declare(cl, "cv", &def, 1, 0, false, NULL) == 0, "declare: %s",
                  ss_cluster_last_error(cl));
    make_keys(t);
    for (size_t k = 0; k < NKEYS; k++) {
        ss_client *sc;
        uint64_t nseg = 0;
        ck_assert_int_eq(ss_cluster_client(cl, (size_t)key_owner[k], &sc), 0);
        ck_assert_msg(ss_client_submit_sequence(sc, "cv", &keys[k], x, 2 * T, IN, T, &nseg) == 0,
                      "submit: %s", ss_client_last_error(sc));
        ck_assert_uint_eq(nseg, 2);
    }
    for (size_t s = 0; s < NSHARDS; s++) {
        ss_client *sc;
        ss_server_stats st;
        ck_assert_int_eq(ss_cluster_client(cl, s, &sc), 0);
        ck_assert_int_eq(ss_client_lease(sc, "cv", 16, 2000, 0, "test", &l[s]), 0);
        ck_assert_uint_eq(ss_lease_items(l[s]), PER_SHARD);
        ck_assert_int_eq(ss_client_stats(sc, "cv", &st), 0);
        ck_assert_uint_eq(st.queued + st.leased, 2 * PER_SHARD);
    }
}

/* Every shard's queue is empty and a late Complete is refused. */
static void check_cancelled(ss_lease *l[NSHARDS])
{
    for (size_t s = 0; s < NSHARDS; s++) {
        ss_client *sc;
        ss_server_stats st;
        ss_lease_item it;
        float out[T * IN] = {0}, h[3] = {1, 2, 3};
        const float *states[] = {h};
        ck_assert_int_eq(ss_cluster_client(cl, s, &sc), 0);
        ck_assert_int_eq(ss_client_stats(sc, "cv", &st), 0);
        ck_assert_uint_eq(st.queued + st.leased, 0);
        ck_assert_int_eq(ss_lease_item_get(l[s], 0, &it), 0);
        ss_complete_item ci = {.item = 0, .outputs = out, .out_cols = IN, .states = states};
        ck_assert_int_eq(ss_client_complete(sc, l[s], &ci, 1, NULL),
                         SS_ERR_STATUS(9 /* FAILED_PRECONDITION */));
        ss_lease_free(l[s]);
    }
}

START_TEST(cancel_split_and_summed)
{
    ss_lease *l[NSHARDS];
    uint64_t cancelled = 0, segments = 0;
    submit_and_lease(topo[0], l);
    ck_assert_msg(ss_cluster_cancel(cl, "cv", keys, NKEYS, &cancelled, &segments) == 0,
                  "cancel: %s", ss_cluster_last_error(cl));
    ck_assert_uint_eq(cancelled, NKEYS);
    ck_assert_uint_eq(segments, 2 * NKEYS);
    ck_assert_uint_eq(ss_cluster_redirects(cl), 0);
    check_cancelled(l);
    ck_assert_int_eq(ss_cluster_cancel(cl, "cv", keys, NKEYS, &cancelled, &segments), 0);
    ck_assert_uint_eq(cancelled, 0);
    ck_assert_uint_eq(segments, 0);
    /* Undeclared saver: the shard's NOT_FOUND, counts 0. */
    ck_assert_int_eq(ss_cluster_cancel(cl, "nosuch", keys, NKEYS, &cancelled, &segments),
                     SS_ERR_STATUS(5 /* NOT_FOUND */));
    ck_assert_ptr_nonnull(strstr(ss_cluster_last_error(cl), "not declared"));
    ck_assert_uint_eq(cancelled, 0);
}
END_TEST

START_TEST(cancel_follows_moved)
{
    ss_lease *l[NSHARDS];
    uint64_t cancelled = 0, segments = 0;
    ck_assert_uint_eq(ss_cluster_epoch(cl), 1);
    /* The shards come back under epoch 2: the handle's topology is stale. */
    stop_shards();
    write_config(topo[1]);
    start_shards();
    /* Reconnect every shard (a broken connection is replaced on its next
     * use; ping does not refresh the topology). */
    for (int i = 0; i < 2 * NSHARDS && ss_cluster_ping(cl) != 0; i++)
        ;
    ck_assert_int_eq(ss_cluster_ping(cl), 0);
    ck_assert_uint_eq(ss_cluster_epoch(cl), 1);
    submit_and_lease(topo[1], l);
    ck_assert_msg(ss_cluster_cancel(cl, "cv", keys, NKEYS, &cancelled, &segments) == 0,
                  "cancel: %s", ss_cluster_last_error(cl));
    ck_assert_uint_eq(ss_cluster_epoch(cl), 2);
    ck_assert_uint_ge(ss_cluster_redirects(cl), 1);
    ck_assert_uint_eq(cancelled, NKEYS);
    ck_assert_uint_eq(segments, 2 * NKEYS);
    check_cancelled(l);
}
END_TEST

START_TEST(cancel_bad_args)
{
    uint64_t cancelled = 7, segments = 7;
    ss_key empty = {"", 0}, null_data = {NULL, 1};
    ck_assert_int_eq(ss_cluster_cancel(NULL, "cv", keys, 1, &cancelled, &segments),
                     SS_ERR_INVALID);
    ck_assert_uint_eq(cancelled, 0);
    ck_assert_uint_eq(segments, 0);
    make_keys(topo[0]);
    ck_assert_int_eq(ss_cluster_cancel(cl, NULL, keys, 1, NULL, NULL), SS_ERR_INVALID);
    ck_assert_int_eq(ss_cluster_cancel(cl, "cv", keys, 0, NULL, NULL), SS_ERR_INVALID);
    ck_assert_int_eq(ss_cluster_cancel(cl, "cv", NULL, 1, NULL, NULL), SS_ERR_INVALID);
    ck_assert_int_eq(ss_cluster_cancel(cl, "cv", &empty, 1, NULL, NULL), SS_ERR_INVALID);
    ck_assert_int_eq(ss_cluster_cancel(cl, "cv", &null_data, 1, NULL, NULL), SS_ERR_INVALID);
    ck_assert_ptr_nonnull(strstr(ss_cluster_last_error(cl), "cancel"));
    /* Refused before routing: the handle still works. */
    ck_assert_int_eq(ss_cluster_ping(cl), 0);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("cluster-cancel-handle");
    TCase *tc = tcase_create("cancel");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, cancel_split_and_summed);
    tcase_add_test(tc, cancel_follows_moved);
    tcase_add_test(tc, cancel_bad_args);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
