/* test_topology -- Check suite for common/ss_slot (CRC16 slots, {tag}) and
 * common/ss_topology (JSON and wire forms, validation, ranges). */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ss_error.h"
#include "ss_slot.h"
#include "ss_topology.h"

/* Redis Cluster specification, appendix A: CRC16("123456789") == 0x31C3. */
START_TEST(crc16_matches_the_redis_cluster_vector)
{
    ck_assert_uint_eq(ss_slot_crc16("123456789", 9), 0x31C3);
    ck_assert_uint_eq(ss_slot_crc16("", 0), 0);
}
END_TEST

/* Slots Redis' CLUSTER KEYSLOT reports for these keys, and its tag rules. */
START_TEST(slots_follow_redis_keyslot_and_hash_tags)
{
    ck_assert_uint_eq(ss_slot_of("foo", 3), 12182);
    ck_assert_uint_eq(ss_slot_of("bar", 3), 5061);
    ck_assert_uint_eq(ss_slot_of("hello", 5), 866);
    /* {tag}: only the tag is hashed */
    ck_assert_uint_eq(ss_slot_of("{user1000}.following", 20), ss_slot_of("user1000", 8));
    ck_assert_uint_eq(ss_slot_of("{user1000}.followers", 20), ss_slot_of("user1000", 8));
    /* the first '{' and the first '}' after it */
    ck_assert_uint_eq(ss_slot_of("foo{bar}{zap}", 13), ss_slot_of("bar", 3));
    ck_assert_uint_eq(ss_slot_of("foo{{bar}}zap", 13), ss_slot_of("{bar", 4));
    /* an empty tag or no closing brace hashes the whole key */
    ck_assert_uint_eq(ss_slot_of("foo{}{bar}", 10), ss_slot_crc16("foo{}{bar}", 10) % 16384);
    ck_assert_uint_eq(ss_slot_of("foo{bar", 7), ss_slot_crc16("foo{bar", 7) % 16384);
    ck_assert_uint_eq(ss_slot_of("}{", 2), ss_slot_crc16("}{", 2) % 16384);
    /* binary keys: bytes after a NUL count */
    ck_assert_uint_ne(ss_slot_of("a\0b", 3), ss_slot_of("a", 1));
}
END_TEST

static const char *good_json =
    "{\"cluster\":\"c1\",\"epoch\":7,\"shards\":["
    "{\"id\":\"s0\",\"primary\":\"127.0.0.1:7451\",\"replicas\":[\"127.0.0.1:7461\"]},"
    "{\"id\":\"s1\",\"primary\":\"[::1]:7452\"}],"
    "\"slots\":[{\"first\":0,\"last\":99,\"shard\":\"s1\"},"
    "{\"first\":100,\"last\":16383,\"shard\":\"s0\"}]}";

START_TEST(json_round_trip)
{
    ss_topology *t = NULL, *u = NULL;
    char err[256] = "";
    ck_assert_int_eq(ss_topology_parse(good_json, strlen(good_json), &t, err, sizeof err), 0);
    ck_assert_str_eq(ss_topology_cluster(t), "c1");
    ck_assert_uint_eq(ss_topology_epoch(t), 7);
    ck_assert_uint_eq(ss_topology_n_shards(t), 2);
    ck_assert_int_eq(ss_topology_owner(t, 0), 1);
    ck_assert_int_eq(ss_topology_owner(t, 99), 1);
    ck_assert_int_eq(ss_topology_owner(t, 100), 0);
    ck_assert_str_eq(ss_topology_shard_replica(t, 0, 0), "127.0.0.1:7461");
    ck_assert_uint_eq(ss_topology_shard_slots(t, 1), 100);
    ck_assert_uint_eq(ss_topology_n_ranges(t), 2);
    char *js = ss_topology_to_json(t);
    ck_assert_ptr_nonnull(js);
    ck_assert_int_eq(ss_topology_parse(js, strlen(js), &u, err, sizeof err), 0);
    ck_assert(ss_topology_equal(t, u));
    free(js);
    ss_topology_free(u);

    /* wire form */
    Statesaver__V1__TopologyResponse *pb = ss_topology_to_pb(t);
    ck_assert_ptr_nonnull(pb);
    ck_assert_uint_eq(pb->n_ranges, 2);
    ck_assert_uint_eq(pb->ranges[0]->last, 99);
    ck_assert_str_eq(pb->ranges[0]->shard, "s1");
    ck_assert_int_eq(ss_topology_from_pb(pb, &u, err, sizeof err), 0);
    ck_assert(ss_topology_equal(t, u));
    protobuf_c_message_free_unpacked(&pb->base, NULL);
    ss_topology_free(u);
    ss_topology_free(t);
}
END_TEST

static void expect_refused(const char *json, const char *needle)
{
    ss_topology *t = (ss_topology *)1;
    char err[256] = "";
    int rc = ss_topology_parse(json, strlen(json), &t, err, sizeof err);
    ck_assert_msg(rc == SS_ERR_FORMAT, "accepted %s (rc %d)", json, rc);
    ck_assert_ptr_null(t);
    ck_assert_msg(strstr(err, needle) != NULL, "message '%s' lacks '%s'", err, needle);
}

START_TEST(bad_topologies_are_refused_naming_the_entry)
{
    const char *sh = "\"shards\":[{\"id\":\"s0\",\"primary\":\"h:1\"},{\"id\":\"s1\",\"primary\":\"h:2\"}]";
    char buf[1024];
    snprintf(buf, sizeof buf, "{\"epoch\":1,%s,\"slots\":[{\"first\":0,\"last\":16383,\"shard\":\"s9\"}]}", sh);
    expect_refused(buf, "unknown shard 's9'");
    snprintf(buf, sizeof buf,
             "{\"epoch\":1,%s,\"slots\":[{\"first\":0,\"last\":9000,\"shard\":\"s0\"},"
             "{\"first\":9000,\"last\":16383,\"shard\":\"s1\"}]}", sh);
    expect_refused(buf, "overlaps slot 9000 already owned by shard 's0'");
    snprintf(buf, sizeof buf,
             "{\"epoch\":1,%s,\"slots\":[{\"first\":0,\"last\":8000,\"shard\":\"s0\"},"
             "{\"first\":8192,\"last\":16383,\"shard\":\"s1\"}]}", sh);
    expect_refused(buf, "slots 8001-8191 are not assigned");
    snprintf(buf, sizeof buf, "{\"epoch\":1,%s,\"slots\":[{\"first\":0,\"last\":16384,\"shard\":\"s0\"}]}", sh);
    expect_refused(buf, "slots are integers 0-16383");
    snprintf(buf, sizeof buf, "{\"epoch\":1,%s,\"slots\":[{\"first\":5,\"last\":4,\"shard\":\"s0\"}]}", sh);
    expect_refused(buf, "first <= last");
    expect_refused("{\"epoch\":1,\"shards\":[{\"id\":\"s0\",\"primary\":\"h:1\"},"
                   "{\"id\":\"s0\",\"primary\":\"h:2\"}],\"slots\":[]}", "appears twice");
    expect_refused("{\"epoch\":1,\"shards\":[{\"id\":\"s0\",\"primary\":\"nohost\"}],\"slots\":[]}",
                   "primary 'nohost'");
    expect_refused("{\"epoch\":1,\"shards\":[{\"id\":\"s 0\",\"primary\":\"h:1\"}],\"slots\":[]}",
                   "bad id 's 0'");
    expect_refused("{\"epoch\":-1,\"shards\":[],\"slots\":[]}", "epoch");
    expect_refused("{\"epoch\":1,\"shards\":[],\"slots\":[]}", "no shards");
    expect_refused("[1,2]", "not a JSON object");
    expect_refused("{\"epoch\":1,", "not a JSON object");
}
END_TEST

START_TEST(addresses)
{
    ck_assert(ss_topology_addr_ok("127.0.0.1:7450"));
    ck_assert(ss_topology_addr_ok("[::1]:7450"));
    ck_assert(ss_topology_addr_ok("ss-0.ss.default.svc:7450"));
    ck_assert(!ss_topology_addr_ok("::1:7450"));
    ck_assert(!ss_topology_addr_ok("host:0"));
    ck_assert(!ss_topology_addr_ok("host:65536"));
    ck_assert(!ss_topology_addr_ok("host:"));
    ck_assert(!ss_topology_addr_ok(":7450"));
    ck_assert(!ss_topology_addr_ok("ho st:1"));
    ck_assert(!ss_topology_addr_ok(NULL));
}
END_TEST

START_TEST(even_split_and_single)
{
    ss_topology *t = ss_topology_new("c");
    ck_assert_int_eq(ss_topology_assign_even(t), SS_ERR_INVALID);
    ck_assert_int_eq(ss_topology_add_shard(t, "a", "h:1"), 0);
    ck_assert_int_eq(ss_topology_add_shard(t, "b", "h:2"), 1);
    ck_assert_int_eq(ss_topology_add_shard(t, "c", "h:3"), 2);
    ck_assert_int_eq(ss_topology_add_shard(t, "c", "h:4"), SS_ERR_CONFLICT);
    char err[128];
    ck_assert_int_eq(ss_topology_validate(t, err, sizeof err), SS_ERR_FORMAT);
    ck_assert_int_eq(ss_topology_assign_even(t), 0);
    ck_assert_int_eq(ss_topology_validate(t, err, sizeof err), 0);
    ck_assert_uint_eq(ss_topology_shard_slots(t, 0), 5462);
    ck_assert_uint_eq(ss_topology_shard_slots(t, 1), 5461);
    ck_assert_uint_eq(ss_topology_shard_slots(t, 2), 5461);
    unsigned f, l;
    int sh;
    ss_topology_range(t, 1, &f, &l, &sh);
    ck_assert_uint_eq(f, 5462);
    ck_assert_uint_eq(l, 10922);
    ck_assert_int_eq(sh, 1);
    /* a move: slots 0-9 to c */
    ck_assert_int_eq(ss_topology_assign(t, 0, 9, 2), 0);
    ck_assert_uint_eq(ss_topology_n_ranges(t), 4);
    ss_topology *c = ss_topology_copy(t);
    ck_assert(ss_topology_equal(t, c));
    ss_topology_set_epoch(c, 2);
    ck_assert(!ss_topology_equal(t, c));
    ss_topology_free(c);
    ss_topology_free(t);

    t = ss_topology_new_single("", "local", "127.0.0.1:7450");
    ck_assert_ptr_nonnull(t);
    ck_assert_uint_eq(ss_topology_n_ranges(t), 1);
    ck_assert_int_eq(ss_topology_owner(t, 16383), 0);
    ss_topology_free(t);
    ss_topology_free(NULL);
}
END_TEST

START_TEST(load_file_names_the_file)
{
    char path[] = "/tmp/ss-topo-XXXXXX";
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    const char *bad = "{\"epoch\":1,\"shards\":[{\"id\":\"s0\",\"primary\":\"h:1\"}],\"slots\":[]}";
    ck_assert_int_eq(write(fd, bad, strlen(bad)), (ssize_t)strlen(bad));
    close(fd);
    ss_topology *t = NULL;
    char err[512];
    ck_assert_int_eq(ss_topology_load_file(path, &t, err, sizeof err), SS_ERR_FORMAT);
    ck_assert_ptr_nonnull(strstr(err, path));
    ck_assert_ptr_nonnull(strstr(err, "slots 0-16383 are not assigned"));
    unlink(path);
    ck_assert_int_eq(ss_topology_load_file(path, &t, err, sizeof err), SS_ERR_IO);
    ck_assert_ptr_nonnull(strstr(err, "cannot open"));
}
END_TEST

int main(void)
{
    Suite *s = suite_create("topology");
    TCase *tc = tcase_create("all");
    tcase_add_test(tc, crc16_matches_the_redis_cluster_vector);
    tcase_add_test(tc, slots_follow_redis_keyslot_and_hash_tags);
    tcase_add_test(tc, json_round_trip);
    tcase_add_test(tc, bad_topologies_are_refused_naming_the_entry);
    tcase_add_test(tc, addresses);
    tcase_add_test(tc, even_split_and_single);
    tcase_add_test(tc, load_file_names_the_file);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
