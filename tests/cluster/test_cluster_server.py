"""test_cluster_server -- the server side of the cluster against a real etcd
and real shards: Topology from etcd, from a file and without either; MOVED
with the right owner; frozen slots refuse writes (also after a restart);
an etcd change reaches a server within a second; export/import/delete of a
slot range keeps every byte and the job records working; bad topologies
and an unreachable etcd exit 2; etcd lost later keeps the owned slots
served and says so in /readyz, the metric and Topology.stale.

Run by meson (suite cluster): test_cluster_server.py <build>/tests/python
"""
import json
import os
import struct
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cluster_util as cu  # noqa: E402

OK, NOT_FOUND, FAILED_PRECONDITION, UNAVAILABLE, INVALID_ARGUMENT = 0, 5, 9, 14, 3
MOVED = 32


def status(resp):
    return resp.status.code


def expect(resp, code, text=None):
    assert resp.status.code == code, "expected code %d, got %d: %s" % (
        code, resp.status.code, resp.status.message)
    if text:
        assert text in resp.status.message, "%r not in %r" % (text, resp.status.message)


def topo(conn):
    r = conn.call(topology={})
    expect(r, OK)
    return r.topology


# ---- modes ----

def test_no_cluster():
    """No flags: one shard owning every slot, epoch 0, today's behaviour."""
    s = cu.Shard("solo")
    try:
        c = cu.Conn(s.address)
        t = topo(c)
        assert t.source == "none" and t.self == "s0" and t.epoch == 0, t
        assert [(r.first, r.last, r.shard) for r in t.ranges] == [(0, 16383, "s0")], t
        assert t.shards[0].primary == s.address, t.shards[0].primary
        assert not t.stale and len(t.frozen) == 0
        cu.declare(c)
        for k in (b"a", b"b", b"{x}y"):
            expect(cu.save(c, [k], 0, [[1, 2, 3, 4]]), OK)
        expect(c.call(slot_freeze={"ranges": [{"first": 0, "last": 1}], "freeze": True}),
               FAILED_PRECONDITION, "not part of a cluster")
        st = c.call(stats={})
        expect(st, OK)
        assert st.stats.shard == "s0" and st.stats.owned_slots == 16384, st.stats
    finally:
        s.stop()


def write_topology_file(doc):
    fd, path = tempfile.mkstemp(prefix="ss-topo-", suffix=".json")
    with os.fdopen(fd, "w") as f:
        json.dump(doc, f)
    return path


def test_static_file_and_moved():
    """--cluster-config: Topology from the file; a key of the other shard's
    slot gets MOVED naming that shard, its address, the epoch and the slot."""
    p0, p1 = cu.free_port(), cu.free_port()
    doc = cu.topology("f1", 5, [("a", "127.0.0.1:%d" % p0), ("b", "127.0.0.1:%d" % p1)],
                      [(0, 8191, "a"), (8192, 16383, "b")])
    path = write_topology_file(doc)
    s = cu.Shard("a", ["--cluster-config", path, "--shard", "a"], port=p0)
    try:
        c = cu.Conn(s.address)
        t = topo(c)
        assert t.source == "file" and t.self == "a" and t.epoch == 5 and t.cluster == "f1", t
        assert [(r.first, r.last, r.shard) for r in t.ranges] == [(0, 8191, "a"),
                                                                 (8192, 16383, "b")]
        cu.declare(c)
        mine = cu.key_in_slots("k", 0, 8191)[0]
        theirs = cu.key_in_slots("k", 8192, 16383)[0]
        expect(cu.save(c, [mine], 0, [[1, 2, 3, 4]]), OK)
        r = cu.save(c, [mine, theirs], 1, [[1, 2, 3, 4], [5, 6, 7, 8]])
        expect(r, MOVED, "owned by shard b")
        rd = r.status.redirect
        assert (rd.shard, rd.address, rd.epoch, rd.slot) == (
            "b", "127.0.0.1:%d" % p1, 5, cu.slot_of(theirs)), rd
        # nothing of the refused batch was applied
        f = cu.fetch(c, [mine])
        expect(f, OK)
        assert f.fetch.next_segment[0] == 1
        # every keyed request is checked; a hash tag routes by the tag
        expect(cu.fetch(c, [theirs]), MOVED)
        expect(c.call(drop={"saver": "s", "keys": [theirs]}), MOVED)
        expect(c.call(await_segment={"saver": "s", "key": theirs, "segment": 0}), MOVED)
        expect(c.call(submit={"saver": "s", "key": theirs, "segment": 0, "length": 1,
                              "inputs": cu.f32_tensor([0.0], [1, 1])}), MOVED)
        tagged = b"{" + theirs + b"}.other"
        expect(cu.fetch(c, [tagged]), MOVED)
        # local requests are not redirected
        expect(c.call(list={"saver": "s"}), OK)
        expect(c.call(drop={"saver": "nosuch", "all": True}), NOT_FOUND)
    finally:
        s.stop()
        os.unlink(path)


def test_bad_inputs_exit_2():
    """Unknown shard, overlapping or missing ranges, unreachable etcd, a
    missing topology key and bad flag combinations: exit 2, clear text."""
    p = cu.free_port()
    good = cu.topology("f", 1, [("a", "127.0.0.1:%d" % p)], [(0, 16383, "a")])
    overlap = cu.topology("f", 1, [("a", "127.0.0.1:1"), ("b", "127.0.0.1:2")],
                          [(0, 9000, "a"), (8000, 16383, "b")])
    missing = cu.topology("f", 1, [("a", "127.0.0.1:1")], [(0, 100, "a"), (200, 16383, "a")])
    unknown_owner = cu.topology("f", 1, [("a", "127.0.0.1:1")],
                                [(0, 100, "a"), (101, 16383, "zz")])
    cases = []
    for name, doc, shard in (("unknown --shard", good, "nope"), ("overlap", overlap, "a"),
                             ("missing", missing, "a"), ("unknown owner", unknown_owner, "a")):
        cases.append((name, ["--cluster-config", write_topology_file(doc), "--shard", shard]))
    dead = "http://127.0.0.1:%d" % cu.free_port()
    cases.append(("etcd unreachable", ["--etcd", dead, "--cluster", "c", "--shard", "a"]))
    cases.append(("etcd without --cluster", ["--etcd", dead, "--shard", "a"]))
    cases.append(("both sources", ["--etcd", dead, "--cluster-config", "/x", "--cluster",
                                   "c", "--shard", "a"]))
    cases.append(("--shard alone", ["--shard", "a"]))
    expect_text = {"unknown --shard": "'nope'", "overlap": "overlap", "missing": "slot",
                   "unknown owner": "zz", "etcd unreachable": dead,
                   "etcd without --cluster": "--cluster", "both sources": "exclude",
                   "--shard alone": "need --etcd"}
    etcd = cu.Etcd()
    try:
        cases.append(("topology missing", ["--etcd", etcd.url, "--cluster", "nothing",
                                           "--shard", "a", "--topology-wait-ms", "300"]))
        expect_text["topology missing"] = "/statesaver/nothing/topology"
        for name, args in cases:
            s = cu.Shard("bad", args, expect_exit=True)
            try:
                rc = s.wait_exit(30)
                log = s.log_text()
                assert rc == 2, "%s: exit %d, log: %s" % (name, rc, log)
                assert expect_text[name] in log, "%s: %r not in %r" % (name, expect_text[name],
                                                                        log)
            finally:
                s.stop()
    finally:
        etcd.stop()
        for _, args in cases:
            if args[0] == "--cluster-config" and os.path.exists(args[1]):
                os.unlink(args[1])


# ---- etcd ----

def test_etcd_topology_and_change():
    """Three shards read their topology from etcd; a change written to etcd
    reaches every server within a second and moves ownership."""
    etcd = cu.Etcd()
    shards = []
    try:
        shards, doc = cu.start_shards(3, etcd=etcd, cluster="c1")
        conns = [cu.Conn(s.address) for s in shards]
        for i, c in enumerate(conns):
            t = topo(c)
            assert t.source == "etcd" and t.self == "s%d" % i and t.epoch == 1, t
            assert len(t.shards) == 3 and not t.stale
            cu.declare(c)
        # a key of s1's range, asked on s0: MOVED to s1
        k1 = cu.key_in_slots("m", 5462, 10922)[0]
        r = cu.save(conns[0], [k1], 0, [[1, 1, 1, 1]])
        expect(r, MOVED)
        assert r.status.redirect.shard == "s1"
        assert r.status.redirect.address == shards[1].address
        expect(cu.save(conns[1], [k1], 0, [[1, 1, 1, 1]]), OK)
        # epoch 2: s0 takes k1's slot
        sl = cu.slot_of(k1)
        ids = [(s.id, s.address) for s in shards]
        ranges = [(0, sl, "s0"), (sl + 1, 10922, "s1"), (10923, 16383, "s2")]
        if sl > 5461:
            ranges = [(0, 5461, "s0"), (5462, sl - 1, "s1"), (sl, sl, "s0"),
                      (sl + 1, 10922, "s1"), (10923, 16383, "s2")]
        t0 = time.monotonic()
        etcd.put_topology("c1", cu.topology("c1", 2, ids, ranges))
        for c in conns:
            cu.wait_until(lambda: topo(c).epoch == 2, 1.0, "epoch 2 on a shard")
        elapsed = time.monotonic() - t0
        assert elapsed < 1.0, elapsed
        expect(cu.fetch(conns[0], [k1]), OK)
        r = cu.fetch(conns[1], [k1])
        expect(r, MOVED)
        assert r.status.redirect.shard == "s0" and r.status.redirect.epoch == 2
        # an older epoch in etcd is ignored
        etcd.put_topology("c1", doc)
        time.sleep(0.5)
        assert topo(conns[0]).epoch == 2
        st = conns[0].call(stats={}).stats
        assert st.shard == "s0" and st.topology_epoch == 2 and not st.topology_stale, st
    finally:
        for s in shards:
            s.stop()
        etcd.stop()


def test_topology_init():
    """--topology-init FILE creates a missing etcd key (every shard may pass
    the same file) and never overwrites one that exists."""
    etcd = cu.Etcd()
    shards = []
    path = None
    try:
        ports = [cu.free_port(), cu.free_port()]
        ids = [("s0", "127.0.0.1:%d" % ports[0]), ("s1", "127.0.0.1:%d" % ports[1])]
        path = write_topology_file(cu.topology("ci", 1, ids, cu.even_ranges(["s0", "s1"])))
        for (sid, _), p in zip(ids, ports):
            shards.append(cu.Shard(sid, ["--etcd", etcd.url, "--cluster", "ci", "--shard",
                                         sid, "--topology-init", path], port=p))
        for s in shards:
            t = topo(cu.Conn(s.address))
            assert t.epoch == 1 and t.source == "etcd" and len(t.shards) == 2, t
        value, _ = etcd.range("/statesaver/ci/topology")
        assert json.loads(value)["epoch"] == 1
        # an existing key wins over the file
        etcd.put_topology("ci", cu.topology("ci", 9, ids, cu.even_ranges(["s0", "s1"])))
        shards[0].kill()
        shards[0].start()
        assert topo(cu.Conn(shards[0].address)).epoch == 9
        assert json.loads(etcd.range("/statesaver/ci/topology")[0])["epoch"] == 9
    finally:
        for s in shards:
            s.stop()
        etcd.stop()
        if path:
            os.unlink(path)


def test_new_shard_waits_to_be_named():
    """A shard whose id the etcd topology does not name yet waits (bounded)
    until it does; past --topology-wait-ms it exits 2 naming itself. A
    shard may own no slots."""
    etcd = cu.Etcd()
    shards = []
    try:
        shards, doc = cu.start_shards(1, etcd=etcd, cluster="cw")
        late = cu.Shard("s9", ["--etcd", etcd.url, "--cluster", "cw", "--shard", "s9",
                               "--topology-wait-ms", "300"], expect_exit=True)
        try:
            assert late.wait_exit(30) == 2
            assert "'s9'" in late.log_text(), late.log_text()
        finally:
            late.stop()
        p = cu.free_port()
        new = cu.Shard("s1", ["--etcd", etcd.url, "--cluster", "cw", "--shard", "s1",
                              "--topology-wait-ms", "20000"], port=p, expect_exit=True)
        shards.append(new)
        time.sleep(0.5)
        assert new.proc.poll() is None, new.log_text()
        doc2 = cu.topology("cw", 2, [("s0", shards[0].address), ("s1", new.address)],
                           [(0, 16383, "s0")])
        etcd.put_topology("cw", doc2)
        new.expect_exit = False
        cu.wait_until(lambda: os.path.exists(os.path.join(new.tmp, "port")) and
                      open(os.path.join(new.tmp, "port")).read().strip(), 10,
                      "the new shard to listen")
        c = cu.Conn(new.address)
        t = topo(c)
        assert t.self == "s1" and t.epoch == 2, t
        assert c.call(stats={}).stats.owned_slots == 0
        cu.declare(c)
        r = cu.save(c, [b"anything"], 0, [[1, 2, 3, 4]])
        expect(r, MOVED)
        assert r.status.redirect.shard == "s0"
    finally:
        for s in shards:
            s.stop()
        etcd.stop()


def test_etcd_lost_later():
    """etcd killed after start: the shard keeps serving its slots, /readyz
    says not ready with the reason, the metrics and Topology say stale; all
    of it recovers when etcd is back."""
    etcd = cu.Etcd()
    shards = []
    try:
        shards, _ = cu.start_shards(1, etcd=etcd, cluster="c2", metrics=True)
        s = shards[0]
        c = cu.Conn(s.address)
        cu.declare(c)
        code, body = s.http("/readyz")
        assert code == 200, (code, body)
        assert s.metric("statesaver_topology_stale") == 0
        etcd.kill()
        cu.wait_until(lambda: topo(c).stale, 5, "Topology.stale")
        code, body = s.http("/readyz")
        assert code == 503 and "topology stale" in body, (code, body)
        assert s.metric("statesaver_topology_stale") == 1
        assert s.metric("statesaver_etcd_errors_total") >= 1
        st = c.call(stats={}).stats
        assert st.topology_stale and st.topology_error, st
        # still serving the slots it owns
        expect(cu.save(c, [b"kept"], 0, [[1, 2, 3, 4]]), OK)
        expect(cu.fetch(c, [b"kept"]), OK)
        etcd.start()
        cu.wait_until(lambda: not topo(c).stale, 10, "Topology.stale cleared")
        cu.wait_until(lambda: s.http("/readyz")[0] == 200, 5, "/readyz ready again")
        assert s.metric("statesaver_topology_stale") == 0
    finally:
        for sh in shards:
            sh.stop()
        etcd.stop()


# ---- freezing ----

def test_frozen_slots_survive_restart():
    """A write to a frozen slot gets a retryable UNAVAILABLE naming the
    slot; reads go on; a restarted source is still frozen; thaw ends it."""
    etcd = cu.Etcd()
    shards = []
    try:
        shards, _ = cu.start_shards(1, etcd=etcd, cluster="c3")
        s = shards[0]
        c = cu.Conn(s.address)
        cu.declare(c)
        k = b"frozen-key"
        sl = cu.slot_of(k)
        expect(cu.save(c, [k], 0, [[1, 2, 3, 4]]), OK)
        expect(c.call(slot_freeze={"ranges": [{"first": sl, "last": sl}], "freeze": True,
                                   "move_id": "m1"}), OK)
        expect(cu.save(c, [k], 1, [[5, 6, 7, 8]]), UNAVAILABLE,
               "slot %d is being moved, retry" % sl)
        expect(c.call(drop={"saver": "s", "keys": [k]}), UNAVAILABLE)
        expect(cu.fetch(c, [k]), OK)
        other = cu.key_in_slots("o", sl + 1, 16383)[0]
        expect(cu.save(c, [other], 0, [[1, 1, 1, 1]]), OK)
        t = topo(c)
        assert [(r.first, r.last) for r in t.frozen] == [(sl, sl)], t.frozen
        assert c.call(stats={}).stats.frozen_slots == 1
        c.close()
        s.kill()
        s.start()
        c = cu.Conn(s.address)
        expect(cu.save(c, [k], 1, [[5, 6, 7, 8]]), UNAVAILABLE, "being moved")
        expect(c.call(slot_freeze={"ranges": [{"first": sl, "last": sl}], "freeze": False}),
               OK)
        expect(cu.save(c, [k], 1, [[5, 6, 7, 8]]), OK)
        assert len(topo(c).frozen) == 0
        expect(c.call(slot_freeze={"ranges": [{"first": 5, "last": 3}], "freeze": True}),
               INVALID_ARGUMENT)
    finally:
        for sh in shards:
            sh.stop()
        etcd.stop()


# ---- export / import / delete ----

def export_all(conn, first, last, max_bytes=0):
    recs, cursor, pages = [], b"", 0
    while True:
        r = conn.call(slot_export={"first": first, "last": last, "cursor": cursor,
                                   "max_bytes": max_bytes})
        expect(r, OK)
        recs.extend((x.db, x.key, x.value) for x in r.slot_export.records)
        pages += 1
        assert pages < 10000
        if r.slot_export.done:
            return recs, pages
        cursor = r.slot_export.cursor


def import_all(conn, recs, batch=7):
    total = 0
    for i in range(0, len(recs), batch):
        req = cu.pb.Request()
        for db, key, value in recs[i:i + batch]:
            req.slot_import.records.add(db=db, key=key, value=value)
        req.slot_import.move_id = "m"
        r = conn.request(req)
        expect(r, OK)
        total += r.slot_import.imported
    return total


def f32(t):
    return list(struct.unpack("<%df" % (len(t.data) // 4), t.data))


def test_export_import_delete_round_trip():
    """Copy a slot range s0 -> s1: sequence records byte for byte, queued
    and done job records (a lease on the target after the import works,
    Await returns the stored outputs); importing twice is a no-op; after
    the flip, SlotDelete empties the range on s0 in bounded batches."""
    etcd = cu.Etcd()
    shards = []
    try:
        shards, doc = cu.start_shards(2, etcd=etcd, cluster="c4", extra=["--lease-ms", "2000"])
        src, dst = cu.Conn(shards[0].address), cu.Conn(shards[1].address)
        for c in (src, dst):
            cu.declare(c)
        first, last = 0, 2000  # part of s0's range 0..8191
        keys = cu.key_in_slots("seq", first, last, n=12)
        for i, k in enumerate(keys[:8]):
            expect(cu.save(src, [k], 0, [[i, i + 0.5, -i, 1e-3 * i]]), OK)
            expect(cu.save(src, [k], 1, [[i * 2, 1, 2, 3]]), OK)
        # a long key (stored under prefix + hash, full key in the record)
        long_key = cu.key_in_slots("L" * 600, first, last, n=1)[0]
        expect(cu.save(src, [long_key], 0, [[9, 9, 9, 9]]), OK)
        # a finished marker: a final save deletes the record and leaves it
        k_fin = keys[10]
        expect(cu.save(src, [k_fin], 0, [[1, 1, 1, 1]]), OK)
        r = src.call(save={"saver": "s", "keys": [k_fin], "segment": [1], "final": [True],
                           "states": [cu.f32_tensor([2, 2, 2, 2], [1, 4])]})
        expect(r, OK)
        # jobs: k8 queued segment 0; k9 done (leased + completed) with outputs
        jk_queued, jk_done = keys[8], keys[9]
        for k in (jk_queued, jk_done):
            req = cu.pb.Request()
            sub = req.submit
            sub.saver, sub.key, sub.segment, sub.length = "s", k, 0, 2
            sub.inputs.CopyFrom(cu.f32_tensor([1, 2, 3, 4], [2, 2]))
            # a training context: its own record in the jobs database
            sub.context["c"].CopyFrom(cu.f32_tensor([0.5, 1.5, 2.5], [3]))
            expect(src.request(req), OK)
        # lease until we hold jk_done (the other one goes back by expiry)
        lease = src.call(lease={"saver": "s", "max_batch": 2, "wait_ms": 2000})
        expect(lease, OK)
        items = {it.key: it for it in lease.lease.items}
        assert jk_done in items, list(items)
        outputs = cu.f32_tensor([0.25, 0.5, 0.75, 1.0], [2, 2])
        r = src.call(complete={"saver": "s", "lease_id": lease.lease.lease_id, "items": [
            {"key": jk_done, "segment": 0, "outputs": outputs,
             "states": [cu.f32_tensor([7, 7, 7, 7], [4])]}]})
        expect(r, OK)
        before = cu.fetch(src, keys[:8] + [long_key])
        expect(before, OK)
        # freeze, then export in small pages
        expect(src.call(slot_freeze={"ranges": [{"first": first, "last": last}],
                                     "freeze": True, "move_id": "m"}), OK)
        # a leased segment of a frozen slot cannot complete (retryable), and
        # once its lease expires it is not leased again on the source
        r = src.call(complete={"saver": "s", "lease_id": lease.lease.lease_id, "items": [
            {"key": jk_queued, "segment": 0, "outputs": outputs,
             "states": [cu.f32_tensor([1, 1, 1, 1], [4])]}]})
        expect(r, UNAVAILABLE, "being moved")
        again = src.call(lease={"saver": "s", "max_batch": 4, "wait_ms": 2600})
        expect(again, OK)
        assert len(again.lease.items) == 0, [it.key for it in again.lease.items]
        recs, pages = export_all(src, first, last, max_bytes=300)
        dbs = sorted(set(r[0] for r in recs))
        assert "seqs" in dbs and "jobs" in dbs, dbs
        assert pages > 3, pages
        assert sum(1 for r in recs if r[0] == "seqs") == 10, recs  # 8 + long + jk_done
        assert sum(1 for r in recs if r[0] == "jobs") == 4  # 2 segments, 2 contexts
        assert sum(1 for r in recs if r[0] == "finished") == 1
        expect(src.call(slot_export={"first": first, "last": last, "cursor": b"\x09zz"}),
               INVALID_ARGUMENT, "cursor")
        # nothing outside the range
        recs_all, _ = export_all(src, 0, 16383)
        assert len(recs_all) >= len(recs)
        # import twice: the second changes nothing
        n1 = import_all(dst, recs)
        assert n1 == len(recs), (n1, len(recs))
        n2 = import_all(dst, recs)
        assert n2 == 0, n2
        # the target holds the same bytes (job records under its own ids)
        got, _ = export_all(dst, first, last)
        store_src = sorted((d, k, v) for d, k, v in recs if d != "jobs")
        store_dst = sorted((d, k, v) for d, k, v in got if d != "jobs")
        assert store_src == store_dst
        assert sorted(v for d, k, v in recs if d == "jobs") == \
            sorted(v for d, k, v in got if d == "jobs")
        st = dst.call(stats={"saver": "s"}).stats
        assert st.sequences == 10, st
        # imported before the flip: the target does not lease them yet
        early = dst.call(lease={"saver": "s", "max_batch": 4, "wait_ms": 300})
        expect(early, OK)
        assert len(early.lease.items) == 0, [it.key for it in early.lease.items]
        # flip the topology: first..last now belong to s1
        ids = [(s.id, s.address) for s in shards]
        etcd.put_topology("c4", cu.topology("c4", 2, ids, [
            (first, last, "s1"), (last + 1, 8191, "s0"), (8192, 16383, "s1")]))
        for c in (src, dst):
            cu.wait_until(lambda: topo(c).epoch == 2, 2, "epoch 2")
        after = cu.fetch(dst, keys[:8] + [long_key])
        expect(after, OK)
        assert after.fetch.states[0].data == before.fetch.states[0].data
        assert list(after.fetch.next_segment) == list(before.fetch.next_segment)
        expect(cu.fetch(src, [keys[0]]), MOVED)
        # the finished marker moved too: retrying that final save is
        # recognised on the target
        r = dst.call(save={"saver": "s", "keys": [k_fin], "segment": [1], "final": [True],
                           "states": [cu.f32_tensor([2, 2, 2, 2], [1, 4])]})
        expect(r, OK)
        assert list(r.save.already_applied) == [True], r.save
        # the done segment's outputs, on the target
        aw = dst.call(await_segment={"saver": "s", "key": jk_done, "segment": 0})
        expect(aw, OK)
        assert aw.await_segment.state == cu.pb.SEG_DONE
        assert f32(aw.await_segment.outputs)[:4] == [0.25, 0.5, 0.75, 1.0]
        # the queued one is leased on the target and completes there
        got_lease = cu.wait_until(
            lambda: (lambda r: r if r.lease.items else None)(
                dst.call(lease={"saver": "s", "max_batch": 4, "wait_ms": 500})),
            10, "a lease on the target")
        it = got_lease.lease.items[0]
        assert it.key == jk_queued and it.segment == 0
        assert f32(it.inputs) == [1, 2, 3, 4]
        assert f32(it.context["c"]) == [0.5, 1.5, 2.5], it.context
        r = dst.call(complete={"saver": "s", "lease_id": got_lease.lease.lease_id, "items": [
            {"key": jk_queued, "segment": 0, "outputs": outputs,
             "states": [cu.f32_tensor([3, 3, 3, 3], [4])]}]})
        expect(r, OK)
        f = cu.fetch(dst, [jk_queued])
        assert f.fetch.next_segment[0] == 1
        # delete on the source in batches of 3 until done
        expect(src.call(slot_delete={"first": 0, "last": 8191, "max_records": 3}),
               UNAVAILABLE, "owned by this shard")
        deleted, calls = 0, 0
        deadline = time.monotonic() + 30
        while True:
            r = src.call(slot_delete={"first": first, "last": last, "max_records": 3})
            if r.status.code == UNAVAILABLE:  # a leased job still expiring
                assert time.monotonic() < deadline, r.status.message
                time.sleep(0.1)
                continue
            expect(r, OK)
            deleted += r.slot_delete.deleted
            calls += 1
            assert r.slot_delete.deleted <= 3
            if r.slot_delete.done:
                break
            assert time.monotonic() < deadline, "delete did not finish"
        # a context record may go with its sequence's last segment (the
        # queue deletes it itself), so up to 2 are not counted here
        assert len(recs) - 2 <= deleted <= len(recs), (deleted, len(recs))
        assert calls > 3
        left, _ = export_all(src, first, last)
        assert left == [], left
        st = src.call(stats={"saver": "s"}).stats
        assert st.sequences == 0, st
        expect(src.call(slot_freeze={"ranges": [{"first": first, "last": last}],
                                     "freeze": False}), OK)
        # import validation
        req = cu.pb.Request()
        req.slot_import.records.add(db="nosuch", key=b"k", value=b"v")
        expect(dst.request(req), INVALID_ARGUMENT, "unknown database")
        req = cu.pb.Request()
        d, k, v = store_src[0]
        req.slot_import.records.add(db=d, key=k, value=v[:-1] + bytes([v[-1] ^ 1]))
        expect(dst.request(req), INVALID_ARGUMENT, "checksum")
        # a slot the target owns already (after the flip) is not imported
        # again: a late batch of a second mover must not overwrite writes
        # the new owner has accepted
        req = cu.pb.Request()
        req.slot_import.records.add(db=d, key=k, value=v)
        expect(dst.request(req), FAILED_PRECONDITION, "already owned by this shard")
    finally:
        for s in shards:
            s.stop()
        etcd.stop()


TESTS = [test_no_cluster, test_static_file_and_moved, test_bad_inputs_exit_2,
         test_etcd_topology_and_change, test_topology_init, test_new_shard_waits_to_be_named,
         test_etcd_lost_later,
         test_frozen_slots_survive_restart, test_export_import_delete_round_trip]


def main(argv):
    argv = cu.setup(argv)
    only = argv[1:]
    failed = []
    for t in TESTS:
        if only and t.__name__ not in only:
            continue
        t0 = time.monotonic()
        try:
            t()
            print("ok   %s (%.1f s)" % (t.__name__, time.monotonic() - t0), flush=True)
        except Exception as e:  # report every test, fail at the end
            failed.append("%s: %s" % (t.__name__, e))
            import traceback
            traceback.print_exc()
            print("FAIL %s: %s" % (t.__name__, e), flush=True)
    for what in failed:  # again, last: a CI log often keeps only the tail
        print("FAIL " + what[:2000])
    print("%d failure(s)" % len(failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
