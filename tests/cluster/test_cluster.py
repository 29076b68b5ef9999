#!/usr/bin/python3
"""test_cluster -- the cluster from the clients' side: a real etcd and three
statesaver-server shards on loopback (tests/cluster/cluster_util.py), the
`statesaver` CLI, the Python ClusterClient and `statesaver-worker serve`.

Scenarios (each reports its checks; any failure makes the exit status 1):
  routing      every request type lands on the shard owning its key (CLI and
               Python): declare/drop --all fan out, fetch/save/drop split,
               ls/stats aggregate (--per-shard), ping, cluster status, and
               the job calls (submit, lease, complete, await; a non-owner
               answers MOVED naming the owner)
  equal        batched fetch/save spanning shards give exactly what one
               server gives for the same calls (states, segments,
               already_applied, listings)
  hashtag      keys of one {tag} share a shard and a batch of them is saved
               all or nothing
  stale        a client holding the old topology follows the redirects
               after a move and reads the moved data
  loop         two shards whose topologies disagree: bounded redirects and
               a clear "redirect loop" error (CLI exit 1, Python RedirectLoop)
  pipeline     the job pipeline over 3 shards with 2 `statesaver-worker
               serve` (leasing from every shard) equals the offline unroll
  training     statesaver.training (submit_sequences, SequenceBatcher) on a
               ClusterClient: routed submits (a stale client following
               MOVED), leases from every shard, states applied exactly once
  worker-obs   the sharded manifests' worker through the entrypoint: one
               /metrics for every shard's process (valid, labelled by
               shard), /readyz naming a lost shard, one --stats-json
  move-*       move-slots under load (saves, submits and a worker running):
               every acknowledged save and every completed segment is there
               exactly once afterwards; also with the mover killed during
               the copy and after the flip, and with the source and the
               target shard killed during the copy (the mover rerun), and a
               second mover taking the move over while the first copies.
Usage: test_cluster.py PB2_DIR [scenario...]
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cluster_util as cu  # noqa: E402

ARGV = cu.setup(sys.argv)
sys.path.insert(0, os.path.join(cu.SOURCE_ROOT, "client", "python"))
import numpy as np  # noqa: E402
from statesaver import Client, errors  # noqa: E402
from statesaver.cluster import ClusterClient, RedirectLoop, key_slot  # noqa: E402

pb = cu.pb
CLI = cu.CLI
WORKER = os.path.join(cu.BUILD_ROOT, "worker", "statesaver-worker")
PY = "/usr/bin/python3"
MAKE_MODEL = os.path.join(cu.SOURCE_ROOT, "scripts", "make-model.py")
FAILURES = []


def check(cond, what):
    print("%s: %s" % ("ok" if cond else "FAIL", what), flush=True)
    if not cond:
        FAILURES.append(what)
    return cond


def cli(seeds, *args, timeout=120):
    cmd = [CLI, "--cluster", ",".join(seeds)] + [str(a) for a in args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


Cluster = cu.Cluster


def owned_ranges(owner, sid):
    out, start = [], None
    for s in range(cu.SLOTS + 1):
        mine = s < cu.SLOTS and owner[s] == sid
        if mine and start is None:
            start = s
        if not mine and start is not None:
            out.append((start, s - 1))
            start = None
    return out


def not_owned(owner, sid):
    return owned_ranges(["x" if o == sid else sid for o in owner], sid)


def export_count(addr, first, last):
    """Raw records a shard holds in slots first..last (SlotExport)."""
    c = cu.Conn(addr)
    n, cursor = 0, b""
    try:
        while True:
            r = c.call(slot_export={"first": first, "last": last, "cursor": cursor})
            if r.status.code != 0:
                raise RuntimeError("export from %s: %s" % (addr, r.status.message))
            n += len(r.slot_export.records)
            if r.slot_export.done:
                return n
            cursor = r.slot_export.cursor
    finally:
        c.close()


def raw_keys(addr, saver):
    c = cu.Conn(addr)
    keys, after = [], b""
    try:
        while True:
            r = c.call(list={"saver": saver, "start_after": after})
            if r.status.code != 0:
                raise RuntimeError("list on %s: %s" % (addr, r.status.message))
            keys += [q.key for q in r.list.sequences]
            if not r.list.more or not r.list.sequences:
                return keys
            after = r.list.sequences[-1].key
    finally:
        c.close()


def state_of(key, seg):
    """The value saved for key at segment seg (deterministic)."""
    base = (sum(key) % 97) * 1000.0 + seg
    return np.array([base, base + 0.25, base + 0.5, base + 0.75], dtype=np.float32)


# ---- routing -----------------------------------------------------------------

def test_routing(etcd):
    cl = Cluster(etcd, "route")
    try:
        cc = ClusterClient(cl.seeds[:1])
        owner = cc.topology.owner
        addr_of = dict(zip(cl.ids, cl.seeds))
        r = cli(cl.seeds, "declare", "s", "--state", "h:float32:4")
        check(r.returncode == 0, "CLI declare on a cluster (%s)" % r.stderr.strip())
        have = [any(sv.name == "s" for sv in Client(a).savers()) for a in cl.seeds]
        check(all(have), "declare fanned out to every shard (%s)" % have)
        keys = [("key-%03d" % i).encode() for i in range(300)] + \
               [("{tag7}.%d" % i).encode() for i in range(5)]
        vals = np.stack([state_of(k, 0) for k in keys])
        applied = cc.save("s", keys, 0, [vals])
        check(applied == [False] * len(keys), "Python save of %d keys over 3 shards" % len(keys))
        placed = {sid: raw_keys(addr_of[sid], "s") for sid in cl.ids}
        right = all(owner[key_slot(k)] == sid for sid, ks in placed.items() for k in ks)
        union = sorted(k for ks in placed.values() for k in ks)
        check(right and union == sorted(keys),
              "every key stored once, on the shard owning its slot (%s)" %
              {s: len(k) for s, k in placed.items()})
        check(all(len(k) > 50 for k in placed.values()), "the keys spread over all 3 shards")
        with tempfile.TemporaryDirectory() as d:
            pick = [keys[0], keys[150], keys[299], keys[301]]
            r = cli(cl.seeds, "fetch", "s", *[k.decode() for k in pick], "--out", d)
            ok = r.returncode == 0 and all(
                np.array_equal(np.load(os.path.join(d, "%s.h.npy" % k.decode()
                                                    .replace("/", "_"))), state_of(k, 0))
                for k in pick)
            check(ok, "CLI fetch of keys on several shards returns each key's state (%s)"
                  % r.stderr.strip())
            np.save(os.path.join(d, "x.npy"), state_of(b"cli-key", 0))
            r = cli(cl.seeds, "save", "s", "cli-key", "--segment", 0, "--state",
                    "h=" + os.path.join(d, "x.npy"))
            got = cc.fetch("s", [b"cli-key"])
            check(r.returncode == 0 and got.next_segment[0] == 1 and
                  np.array_equal(got.states["h"][0], state_of(b"cli-key", 0)) and
                  b"cli-key" in raw_keys(addr_of[owner[key_slot(b"cli-key")]], "s"),
                  "CLI save goes to the owner")
        r = cli(cl.seeds, "ls", "s")
        check(r.returncode == 0 and len(r.stdout.splitlines()) == len(keys) + 1,
              "CLI ls merges the shards (%d rows)" % len(r.stdout.splitlines()))
        lines = [ln.split()[0] for ln in r.stdout.splitlines()]
        check(lines == sorted(lines), "CLI ls lists the merged keys in key order")
        r = cli(cl.seeds, "ls", "s", "--per-shard")
        check(r.returncode == 0 and r.stdout.count("# shard ") == 3,
              "CLI ls --per-shard lists each shard")
        r = cli(cl.seeds, "ls")
        check(r.returncode == 0 and "sequences=%d" % (len(keys) + 1) in r.stdout,
              "CLI ls of savers sums the shards' sequence counts (%s)" % r.stdout.strip())
        r = cli(cl.seeds, "stats", "s", "--json", "--per-shard")
        st = json.loads(r.stdout) if r.returncode == 0 else {}
        check(st.get("sequences") == len(keys) + 1 and len(st.get("shards", [])) == 3 and
              sum(x["sequences"] for x in st["shards"]) == len(keys) + 1,
              "CLI stats --per-shard: the sum and each shard's figures")
        tot, each = cc.stats("s", per_shard=True)
        check(tot["sequences"] == len(keys) + 1 and len(each) == 3, "Python stats aggregate")
        r = cli(cl.seeds, "ping")
        check(r.returncode == 0 and r.stdout.count("PONG from") == 3, "CLI ping pings every shard")
        r = cli(cl.seeds[2:], "cluster", "status", "--json")
        st = json.loads(r.stdout) if r.returncode == 0 else {}
        check(st.get("epoch") == 1 and len(st.get("shards", [])) == 3 and
              all(s["up"] for s in st["shards"]) and
              sum(s["slots"] for s in st["shards"]) == cu.SLOTS,
              "cluster status: 3 shards up, every slot owned")
        drop = [keys[1], keys[151], keys[298]]
        r = cli(cl.seeds, "drop", "s", *[k.decode() for k in drop])
        check(r.returncode == 0 and "dropped 3 sequences" in r.stdout,
              "CLI drop of keys on several shards (%s)" % r.stdout.strip())
        check(all(k not in raw_keys(addr_of[owner[key_slot(k)]], "s") for k in drop),
              "dropped keys are gone from their owners")
        # Job requests: each routed to the key's owner.
        cc.declare("j", {"h": (4,)})
        jkeys = [("job-%02d" % i).encode() for i in range(12)]
        for k in jkeys:
            cc.submit("j", k, 0, np.ones((2, 3), np.float32) * (sum(k) % 7), last=True)
        queued = {sid: Client(addr_of[sid]).stats("j")["queued"] for sid in cl.ids}
        want = {sid: sum(1 for k in jkeys if owner[key_slot(k)] == sid) for sid in cl.ids}
        check(queued == want, "submit queued each segment on its key's owner (%s)" % queued)
        done = 0
        for _ in range(20):
            lease = cc.lease("j", max_batch=8, wait_ms=100)
            items = [{"key": it.key, "segment": it.segment, "outputs": it.inputs * 2,
                      "states": [it.states["h"] + 1]} for it in lease.items]
            if items:
                cc.complete("j", lease.lease_id, items)
                done += len(items)
            if done == len(jkeys):
                break
        check(done == len(jkeys), "lease from every shard, complete at the shard leased from")
        ok = True
        for k in jkeys:
            res = cc.await_segment("j", k, 0, wait_ms=2000)
            ok = ok and res.state == "DONE" and np.array_equal(
                res.outputs, np.ones((2, 3), np.float32) * (sum(k) % 7) * 2)
        check(ok, "await of each segment at its owner gives its outputs")
        k1 = jkeys[1]
        out, _ = cc.await_sequence("j", k1, 1, timeout=10, collect=False)
        check(np.array_equal(out, np.ones((2, 3), np.float32) * (sum(k1) % 7) * 2),
              "await_sequence through the cluster client")
        k = jkeys[0]
        other = [a for sid, a in addr_of.items() if sid != owner[key_slot(k)]][0]
        resp = cu.Conn(other).call(await_segment={"saver": "j", "key": k, "segment": 0})
        check(resp.status.code == 32 and
              resp.status.redirect.address == addr_of[owner[key_slot(k)]] and
              resp.status.redirect.slot == key_slot(k),
              "a non-owner answers MOVED with the owner's address and the slot")
        try:
            Client(other).fetch("j", [k])
            moved = None
        except errors.Moved as e:
            moved = e
        check(moved is not None and moved.address == addr_of[owner[key_slot(k)]] and
              moved.slot == key_slot(k) and moved.shard == owner[key_slot(k)] and
              moved.epoch >= 1,
              "a plain Client raises Moved carrying the redirect (%r)" % (moved,))
        r = cli(cl.seeds, "drop", "s", "--all")
        gone = [not any(sv.name == "s" for sv in Client(a).savers()) for a in cl.seeds]
        check(r.returncode == 0 and all(gone), "CLI drop --all fans out (%s)" % gone)
        cc.close()
    finally:
        cl.stop()


# ---- batched calls equal one server ----------------------------------------------

def test_equal(etcd):
    cl = Cluster(etcd, "equal")
    single = None
    try:
        single = cu.Shard("single")
        cc, one = ClusterClient(cl.seeds), Client(single.address)
        for c in (cc, one):
            c.declare("e", [("a", (3,)), ("b", (2, 2))])
        rng = np.random.default_rng(5)
        keys = [("eq-%d" % i).encode() for i in range(120)] + [b"{t}x", b"{t}y"]
        a0 = rng.standard_normal((len(keys), 3)).astype(np.float32)
        b0 = rng.standard_normal((len(keys), 2, 2)).astype(np.float32)
        out = []
        for c in (cc, one):
            r = [c.save("e", keys, 0, [a0, b0])]
            half = keys[::2]
            r.append(c.save("e", half, 1, [a0[::2] + 1, b0[::2] - 1],
                            final=[i >= 50 for i in range(len(half))]))
            r.append(c.save("e", half[:10], 1, [a0[::2][:10] + 1, b0[::2][:10] - 1]))
            f = c.fetch("e", keys[::-1] + [b"never-saved"])
            r.append((f.next_segment.tolist(), f.states["a"].tobytes(), f.states["b"].tobytes()))
            r.append([(q.key, q.next_segment) for q in c.sequences("e")])
            r.append(c.drop("e", keys[:7] + [b"nope"]))
            r.append(sorted((q.key, q.next_segment) for q in c.sequences("e")))
            out.append(r)
        for i, what in enumerate(["save flags", "second save (some final)", "retried save "
                                  "(already_applied)", "fetch in reverse key order", "listing",
                                  "drop count", "listing after drop"]):
            check(out[0][i] == out[1][i], "cluster == one server: %s" % what)
        check(out[0][2] == [True] * 10, "the retried save reports already_applied for all 10")
        with tempfile.TemporaryDirectory() as d1, tempfile.TemporaryDirectory() as d2:
            ks = [k.decode() for k in keys[10:40]]
            r1 = cli(cl.seeds, "fetch", "e", *ks, "--out", d1)
            r2 = subprocess.run([CLI, "--server", single.address, "fetch", "e", *ks, "--out", d2],
                                capture_output=True, text=True, timeout=60)
            same = r1.returncode == 0 and r2.returncode == 0 and sorted(os.listdir(d1)) == \
                sorted(os.listdir(d2)) and all(
                    open(os.path.join(d1, f), "rb").read() == open(os.path.join(d2, f), "rb").read()
                    for f in os.listdir(d1))
            check(same, "CLI fetch of 30 keys over 3 shards == one server, byte for byte")
            r1 = cli(cl.seeds, "ls", "e")
            r2 = subprocess.run([CLI, "--server", single.address, "ls", "e"],
                                capture_output=True, text=True, timeout=60)
            strip = [" ".join(x.split()[:2]) for x in r1.stdout.splitlines()]
            strip2 = [" ".join(x.split()[:2]) for x in r2.stdout.splitlines()]
            check(strip == strip2 and strip, "CLI ls over 3 shards == one server")
        cc.close()
        one.close()
    finally:
        if single:
            single.stop()
        cl.stop()


# ---- hash tags ----------------------------------------------------------------------

def test_hashtag(etcd):
    cl = Cluster(etcd, "tag")
    try:
        cc = ClusterClient(cl.seeds)
        cc.declare("t", {"h": (4,)})
        keys = [b"{user42}.c", b"{user42}.h", b"{user42}.x"]
        check(len({key_slot(k) for k in keys}) == 1, "keys of one {tag} share a slot")
        cc.save("t", keys, 0, [np.stack([state_of(k, 0) for k in keys])])
        try:
            cc.save("t", keys, [1, 1, 7], [np.stack([state_of(k, 1) for k in keys])])
            check(False, "a batch of one tag with one wrong segment is refused")
        except errors.FailedPrecondition:
            check(True, "a batch of one tag with one wrong segment is refused")
        f = cc.fetch("t", keys)
        check(f.next_segment.tolist() == [1, 1, 1] and
              np.array_equal(f.states["h"], np.stack([state_of(k, 0) for k in keys])),
              "... and none of its keys was saved (all or nothing)")
        cc.save("t", keys, 1, [np.stack([state_of(k, 1) for k in keys])])
        f = cc.fetch("t", keys)
        check(f.next_segment.tolist() == [2, 2, 2], "the corrected batch saves all of them")
        cc.close()
    finally:
        cl.stop()


# ---- a stale client and a redirect loop --------------------------------------------

def mover(cl, *args):
    return [CLI, "cluster", "move-slots", "--etcd", cl.etcd.url, "--cluster", cl.name] + \
        [str(a) for a in args]


def test_stale(etcd):
    cl = Cluster(etcd, "stale")
    try:
        stale = ClusterClient(cl.seeds)
        stale.declare("m", {"h": (4,)})
        keys = cu.key_in_slots("st-", 0, 999, 20) + cu.key_in_slots("st-", 6000, 7000, 5)
        stale.save("m", keys, 0, [np.stack([state_of(k, 0) for k in keys])])
        r = subprocess.run(mover(cl, "--from", "s0", "--to", "s2", "--slots", "0-999"),
                           capture_output=True, text=True, timeout=120)
        check(r.returncode == 0 and "done:" in r.stdout, "move-slots 0-999 s0 -> s2 (%s)"
              % (r.stderr.strip() or r.stdout.strip().splitlines()[-1:]))
        before = stale.topology.epoch
        f = stale.fetch("m", keys)
        check(before == 1 and stale.redirects >= 1 and stale.topology.epoch == 2,
              "the stale client was redirected and refreshed (epoch %d -> %d, %d redirects)"
              % (before, stale.topology.epoch, stale.redirects))
        check(f.next_segment.tolist() == [1] * len(keys) and
              np.array_equal(f.states["h"], np.stack([state_of(k, 0) for k in keys])),
              "... and read every moved key's state")
        stale2 = ClusterClient(cl.seeds)
        stale2.topology = stale2.topology._replace(
            epoch=1, owner=["s0"] * 5462 + stale2.topology.owner[5462:])
        stale2.save("m", keys[:20], 1, [np.stack([state_of(k, 1) for k in keys[:20]])])
        check(stale2.redirects >= 1 and cc_next(cl, keys[:20]) == [2] * 20,
              "a save with a stale topology lands on the new owner")
        stale.close()
        stale2.close()
    finally:
        cl.stop()


def test_add_shard(etcd):
    """docs/deploy.md's recipe for growing a cluster: `cluster add-shard`
    names an empty s3 (epoch + 1), s3 starts and serves nothing, Declare
    fans out to it, move-slots gives it a range with its data."""
    cl = Cluster(etcd, "grow")
    s3 = None
    try:
        with ClusterClient(cl.seeds) as c:
            c.declare("m", {"h": (4,)})
            keys = cu.key_in_slots("gr-", 0, 1364, 30)
            c.save("m", keys, 0, [np.stack([state_of(k, 0) for k in keys])])
        port = cu.free_port()
        add = [CLI, "cluster", "add-shard", "--etcd", etcd.url, "--cluster", "grow",
               "--shard", "s3=127.0.0.1:%d" % port]
        r = subprocess.run(add, capture_output=True, text=True, timeout=60)
        check(r.returncode == 0 and "epoch 2" in r.stdout,
              "cluster add-shard names s3 with no slots, epoch 2 (%s)" % (r.stdout + r.stderr).strip())
        r = subprocess.run(add, capture_output=True, text=True, timeout=60)
        check(r.returncode == 0 and "already" in r.stdout, "add-shard again is a no-op")
        r = subprocess.run(add[:-1] + ["s3=127.0.0.1:1"], capture_output=True, text=True,
                           timeout=60)
        check(r.returncode != 0 and "already at" in r.stderr,
              "add-shard of a known id at another address is refused (%s)" % r.stderr.strip())
        s3 = cu.Shard("s3", ["--etcd", etcd.url, "--cluster", "grow", "--shard", "s3"],
                      port=port)
        with ClusterClient(cl.seeds) as c:
            check(len(c.topology.shards) == 4 and "s3" not in c.topology.owner,
                  "clients see s3, owning nothing")
            c.declare("m", {"h": (4,)})
        r = subprocess.run(mover(cl, "--from", "s0", "--to", "s3", "--slots", "0-1364"),
                           capture_output=True, text=True, timeout=120)
        check(r.returncode == 0 and "done:" in r.stdout, "move-slots 0-1364 s0 -> s3 (%s)"
              % (r.stderr.strip() or r.stdout.strip().splitlines()[-1:]))
        check(export_count(s3.address, 0, 1364) == len(keys) and
              export_count(cl.by_id("s0").address, 0, 1364) == 0,
              "s3 holds the moved keys, s0 none")
        with ClusterClient(cl.seeds) as c:
            f = c.fetch("m", keys)
            check(f.next_segment.tolist() == [1] * len(keys) and
                  np.array_equal(f.states["h"], np.stack([state_of(k, 0) for k in keys])),
                  "every moved state reads back through the cluster")
            c.save("m", keys, 1, [np.stack([state_of(k, 1) for k in keys])])
        check(cc_next(cl, keys) == [2] * len(keys), "and is saved on s3 afterwards")
    finally:
        if s3:
            s3.stop()
        cl.stop()


def cc_next(cl, keys, saver="m"):
    with ClusterClient(cl.seeds) as c:
        return c.fetch(saver, keys).next_segment.tolist()


def test_loop(etcd):
    pa, pb_ = cu.free_port(), cu.free_port()
    tmp = tempfile.mkdtemp(prefix="ss-loop-")
    shards = [("a", "127.0.0.1:%d" % pa), ("b", "127.0.0.1:%d" % pb_)]
    files = {}
    for me, other in (("a", "b"), ("b", "a")):
        files[me] = os.path.join(tmp, me + ".json")
        with open(files[me], "w") as f:
            json.dump(cu.topology("loop", 3, shards, [(0, cu.SLOTS - 1, other)]), f)
    sa = cu.Shard("a", ["--cluster-config", files["a"], "--shard", "a"], port=pa)
    sb = cu.Shard("b", ["--cluster-config", files["b"], "--shard", "b"], port=pb_)
    try:
        t0 = time.monotonic()
        r = subprocess.run([CLI, "--server", sa.address, "--max-redirects", "4", "fetch", "s",
                            "k1"], capture_output=True, text=True, timeout=60)
        dt = time.monotonic() - t0
        check(r.returncode == 1 and "redirect loop" in r.stderr and "5 times" in r.stderr,
              "CLI: shards that disagree give a redirect loop error after --max-redirects "
              "(%s)" % r.stderr.strip())
        check(dt < 15, "... within bounded time (%.1f s)" % dt)
        cc = ClusterClient([sa.address], max_redirects=3)
        try:
            cc.fetch("s", [b"k1"])
            check(False, "Python: RedirectLoop")
        except RedirectLoop as e:
            check("redirect loop" in str(e) and cc.redirects == 3,
                  "Python: RedirectLoop after max_redirects (%s)" % e)
        cc.close()
    finally:
        sa.stop()
        sb.stop()


# ---- the job pipeline with real workers -------------------------------------------

def test_pipeline(etcd):
    cl = Cluster(etcd, "pipe")
    tmp = tempfile.mkdtemp(prefix="ss-pipe-")
    workers = []
    try:
        model = os.path.join(tmp, "lstm.safetensors")
        r = subprocess.run([PY, MAKE_MODEL, model, "--cell", "lstm", "--input-size", "6",
                            "--num-units", "16", "--num-layers", "2"],
                           capture_output=True, text=True, timeout=120)
        if not check(r.returncode == 0, "model generated"):
            return
        for i in range(2):
            log = open(os.path.join(tmp, "w%d.log" % i), "wb")
            workers.append(subprocess.Popen(
                [WORKER, "serve", "--cluster", ",".join(cl.seeds[i:i + 1]), "--model", model,
                 "--saver", "p", "--wait-ms", "100", "--batch", str(2 + i)],
                stdout=log, stderr=subprocess.STDOUT))
        cu.wait_until(lambda: all(any(sv.name == "p" for sv in Client(a).savers())
                                  for a in cl.seeds), 30, "the workers to declare p")
        in_dir, out_dir = os.path.join(tmp, "in"), os.path.join(tmp, "out")
        os.makedirs(in_dir)
        rng = np.random.default_rng(3)
        seqs = {}
        for i, n in enumerate([1, 5, 9, 12, 17, 23, 30, 4, 8, 16, 11, 2]):
            key = "seq%02d" % i
            seqs[key] = rng.standard_normal((n, 6)).astype("<f4")
            np.save(os.path.join(in_dir, key + ".npy"), seqs[key])
        owners = {ClusterClient(cl.seeds).shard_of(k) for k in seqs}
        check(len(owners) == 3, "the sequences live on all 3 shards")
        r = cli(cl.seeds, "submit", "p", "--inputs", in_dir, "--num-unroll", 4, "--outputs",
                out_dir, "--wait-ms", 500, "--max-wait-ms", 90000, timeout=150)
        check(r.returncode == 0, "statesaver submit over 3 shards (%s)" % r.stderr.strip()[-300:])
        names = None
        with ClusterClient(cl.seeds) as c:
            names = [s.name for s in [x for x in c.savers() if x.name == "p"][0].states]
        ok = True
        for key, x in seqs.items():
            xin = os.path.join(tmp, key + ".x.npy")
            np.save(xin, x[:, None, :])
            ref = os.path.join(tmp, key + ".ref.npy")
            args = [WORKER, "unroll", "--model", model, "--inputs", xin, "--outputs", ref]
            finals = {}
            for n in names:
                finals[n] = os.path.join(tmp, "%s.ref.%s.npy" % (key, n.replace("/", "_")))
                args += ["--final-state", "%s=%s" % (n, finals[n])]
            rr = subprocess.run(args, capture_output=True, text=True, timeout=60)
            want = np.load(ref)[:, 0, :] if rr.returncode == 0 else None
            got_p = os.path.join(out_dir, key + ".npy")
            good = want is not None and os.path.exists(got_p) and \
                np.allclose(np.load(got_p), want, rtol=1e-5, atol=1e-5)
            for n in names:
                fp = os.path.join(out_dir, "%s.final.%s.npy" % (key, n.replace("/", "_")))
                good = good and os.path.exists(fp) and np.allclose(
                    np.load(fp), np.load(finals[n])[0], rtol=1e-5, atol=1e-5)
            ok = ok and good
        check(ok, "outputs and final states of %d sequences over 3 shards equal the offline "
              "unroll" % len(seqs))
        served = []
        for i in range(2):
            with open(os.path.join(tmp, "w%d.log" % i), errors="replace") as f:
                served.append(f.read())
        check(all("leasing from 3 shards" in s for s in served),
              "each worker leases from all 3 shards (given one seed)")
    finally:
        for w in workers:
            if w.poll() is None:
                w.send_signal(signal.SIGTERM)
                try:
                    w.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    w.kill()
        if FAILURES:
            for f in sorted(os.listdir(tmp)):
                if f.endswith(".log"):
                    print("---- " + f)
                    print(open(os.path.join(tmp, f), errors="replace").read()[-2000:])
        cl.stop()



def test_training(etcd):
    """statesaver.training over a cluster: submit_sequences and a
    SequenceBatcher on a ClusterClient (each Submit to its key's owner,
    leases from every shard, each Complete to the shard the lease came
    from), a stale topology followed, and every segment's state applied
    exactly once: the final states equal the sums computed here."""
    from statesaver import training as tr
    cl = Cluster(etcd, "train")
    try:
        cc = ClusterClient(cl.seeds[2:])
        cc.declare("tr", [("h", (3,))], keep_final=True)  # finished states stay readable
        rng = np.random.default_rng(21)
        keys = ["t%02d" % i for i in range(18)]
        lengths = [int(n) for n in rng.integers(1, 23, len(keys))]
        # small integers: every sum is exact in float32, whatever the order
        xs = [rng.integers(-4, 5, (n, 3)).astype(np.float32) for n in lengths]
        owners = {cc.shard_of(k) for k in keys}
        check(len(owners) == 3, "training: the sequences live on all 3 shards")
        # a client whose topology is stale: moved slots answer MOVED and
        # its keyed requests follow them (submit_sequences pipelines them)
        stale = ClusterClient(cl.seeds[:1])
        first = cu.slot_of(keys[0])
        src = stale.shard_of(keys[0])
        r = subprocess.run(mover(cl, "--from", src, "--to", [x for x in cl.ids if x != src][0],
                                 "--slots", "%d-%d" % (first, first)),
                           capture_output=True, text=True, timeout=120)
        check(r.returncode == 0, "training: slot of %s moved (%s)" % (keys[0], r.stderr[-300:]))
        got = tr.submit_sequences(stale, "tr", keys, {"x": xs}, num_unroll=4)
        check(got == [k.encode() for k in keys] and stale.redirects >= 1,
              "training: submit_sequences through a stale ClusterClient follows MOVED "
              "(%d redirects)" % stale.redirects)
        total = sum(max(1, -(-n // 4)) for n in lengths)
        b = tr.SequenceBatcher(cc, "tr", batch_size=4, min_batch=2, max_delay_ms=50,
                               wait_ms=100)
        sums = {k.encode(): np.zeros(3, np.float32) for k in keys}
        shards, done, deadline = set(), 0, time.monotonic() + 60
        while done < total and time.monotonic() < deadline:
            batch = b.next_batch()
            if batch is None:
                continue
            shards.add(batch.lease_id[0])
            h = np.asarray(batch.state("h")).copy()
            x = np.asarray(batch.sequences["x"])
            for j, key in enumerate(batch.keys):
                n = int(batch.length[j])
                h[j] += x[j][:n].sum(0)
                sums[key] += x[j][:n].sum(0)
            batch.save_state("h", h)
            batch.complete()
            done += len(batch.keys)
        check(done == total and shards == set(cl.ids),
              "training: %d of %d segments trained, leased from shards %s"
              % (done, total, sorted(shards)))
        f = cc.fetch("tr", [k.encode() for k in keys])
        want = np.stack([x.sum(0) for x in xs])
        counts = [max(1, -(-n // 4)) for n in lengths]
        check(np.array_equal(np.asarray(f.states["h"]), want) and
              [int(v) for v in f.next_segment] == counts,
              "training: every sequence's state is the sum of its inputs and its "
              "next_segment its segment count (each segment applied exactly once)%s" %
              ("" if np.array_equal(np.asarray(f.states["h"]), want) else
               ": %s != %s, %s != %s" % (np.asarray(f.states["h"])[:3].tolist(),
                                         want[:3].tolist(), list(f.next_segment), counts)))
        st = cc.stats("tr")
        check(st.get("queued") == 0 and st.get("leased") == 0 and
              st.get("saves_applied") == total,
              "training: nothing left queued or leased, saves_applied %s of %d"
              % (st.get("saves_applied"), total))
        # token ids through ClusterClient.submit_sequence (Client's, routed)
        cc.declare("ids", [("h", (3,))])
        n = cc.submit_sequence("ids", "tok", np.arange(7, dtype=np.int64), 4)
        lease = cc.lease("ids", max_batch=4, wait_ms=2000)
        it = lease.items[0] if lease.items else None
        check(n == 2 and it is not None and it.key == b"tok" and
              lease.lease_id[0] == cc.shard_of("tok") and it.inputs.dtype == np.int64 and
              it.inputs.tolist() == [0, 1, 2, 3],
              "training: ClusterClient.submit_sequence takes token ids [T], queued at the "
              "owner (%s)" % (it,))
        bad = None
        try:
            cc.call_many("complete", [pb.CompleteRequest(saver="tr")])
        except errors.InvalidArgument as e:
            bad = str(e)
        check(bad is not None and "no key" in bad,
              "training: an unkeyed request given to ClusterClient.call_many is refused (%s)"
              % bad)
        stale.close()
        cc.close()
    finally:
        cl.stop()


def http_get(port, path):
    """(status, body) of GET http://127.0.0.1:port/path (0 when nothing answers)."""
    import urllib.error
    import urllib.request
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open("http://127.0.0.1:%d%s" % (port, path), timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except OSError:
        return 0, ""


def exposition_problems(text):
    """What makes text invalid Prometheus exposition: a family's HELP or
    TYPE given twice, or its samples not contiguous after its TYPE."""
    problems, seen, cur, closed = [], set(), None, set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            name = line.split()[2]
            if name in seen:
                problems.append("TYPE %s twice" % name)
            seen.add(name)
            if cur:
                closed.add(cur)
            cur = name
        elif line and not line.startswith("#"):
            metric = line.split("{")[0].split(" ")[0]
            fam = cur if cur and (metric == cur or metric.startswith(cur + "_")) else None
            if fam is None:
                problems.append("sample %s outside its family" % metric)
            elif fam in closed:
                problems.append("samples of %s not contiguous" % fam)
    return problems


def samples(text, name):
    """{shard: value} of the samples of name (summed over other labels)."""
    out = {}
    for line in text.splitlines():
        if line.startswith(name + "{"):
            labels, value = line[len(name) + 1:].rsplit("} ", 1)
            shard = [l.split("=", 1)[1].strip('"') for l in labels.split(",")
                     if l.startswith("shard=")]
            if shard:
                out[shard[0]] = out.get(shard[0], 0.0) + float(value)
    return out


def test_worker_obs(etcd):
    """The sharded manifests' worker (deploy/k8s/sharded/worker.yaml,
    compose.cluster.yaml): through the container entrypoint with their
    environment and a metrics listener, the worker finds the 3 shards from
    one address, serves one /metrics with every shard's families once and
    each sample labelled by shard, /readyz naming a shard that went away,
    and one --stats-json for all shards."""
    cl = Cluster(etcd, "obs")
    tmp = tempfile.mkdtemp(prefix="ss-obs-")
    w = None
    try:
        model = os.path.join(tmp, "m.safetensors")
        r = subprocess.run([PY, MAKE_MODEL, model, "--cell", "gru", "--input-size", "3",
                            "--num-units", "8", "--num-layers", "1"],
                           capture_output=True, text=True, timeout=120)
        if not check(r.returncode == 0, "obs: model generated"):
            return
        port_file, stats = os.path.join(tmp, "metrics.port"), os.path.join(tmp, "stats.json")
        env = dict(os.environ, STATESAVER_SERVER=cl.seeds[1], STATESAVER_MODEL=model,
                   STATESAVER_SAVER="obs", STATESAVER_BATCH="4",
                   STATESAVER_WORKER_METRICS_LISTEN="127.0.0.1:0",
                   PATH=os.pathsep.join([os.path.dirname(WORKER), os.environ.get("PATH", "")]))
        w = subprocess.Popen(["sh", os.path.join(cu.SOURCE_ROOT, "deploy", "entrypoint.sh"),
                              "statesaver-worker", "serve", "--wait-ms", "100",
                              "--metrics-port-file", port_file, "--stats-json", stats],
                             env=env, stdout=open(os.path.join(tmp, "w.log"), "wb"),
                             stderr=subprocess.STDOUT)
        cu.wait_until(lambda: os.path.exists(port_file) or w.poll() is not None, 30,
                      "the worker's metrics port file")
        if not check(w.poll() is None, "obs: the worker runs with --metrics-listen and "
                     "--stats-json on a cluster (exit %s)" % w.poll()):
            return
        port = int(open(port_file).read())
        ready = cu.wait_until(lambda: http_get(port, "/readyz")[0] == 200, 30,
                              "/readyz of the cluster worker", step=0.1)
        check(bool(ready), "obs: /readyz 200 once the processes of all 3 shards are connected")
        in_dir, out_dir = os.path.join(tmp, "in"), os.path.join(tmp, "out")
        os.makedirs(in_dir)
        rng = np.random.default_rng(7)
        lengths = [3, 7, 9, 12, 5, 10, 2, 8, 11]
        for i, n in enumerate(lengths):
            np.save(os.path.join(in_dir, "k%02d.npy" % i),
                    rng.standard_normal((n, 3)).astype("<f4"))
        n_segs = sum((n + 3) // 4 for n in lengths)
        r = cli(cl.seeds, "submit", "obs", "--inputs", in_dir, "--num-unroll", 4, "--outputs",
                out_dir, "--wait-ms", 500, "--max-wait-ms", 60000, timeout=90)
        check(r.returncode == 0, "obs: %d segments over 3 shards done (%s)" %
              (n_segs, r.stderr.strip()[-300:]))
        # A worker counts a segment when it reads its Complete's reply,
        # which it does after its next Lease (pipelined): poll, bounded.
        got = [None]

        def counted():
            got[0] = http_get(port, "/metrics")
            return sum(samples(got[0][1], "statesaver_worker_segments_total").values()) >= n_segs
        try:
            cu.wait_until(counted, 15, "the workers to count every segment", step=0.1)
        except AssertionError:
            pass  # the check below reports the counts
        status, text = got[0]
        probs = exposition_problems(text)
        check(status == 200 and not probs,
              "obs: /metrics is one valid exposition (%s: %s)" % (status, probs[:5]))
        up = samples(text, "statesaver_worker_shard_up")
        check(sorted(up) == sorted(cl.seeds) and all(v == 1 for v in up.values()) and
              "statesaver_worker_cluster_shards 3" in text,
              "obs: statesaver_worker_shard_up is 1 for each of the 3 shards (%s)" % up)
        segs = samples(text, "statesaver_worker_segments_total")
        check(sorted(segs) == sorted(cl.seeds) and sum(segs.values()) == n_segs,
              "obs: statesaver_worker_segments_total by shard sums to the %d segments (%s)" %
              (n_segs, segs))
        conn = samples(text, "statesaver_worker_connected")
        check(len(conn) == 3 and all(v == 1 for v in conn.values()),
              "obs: statesaver_worker_connected{shard} is 1 for every shard (%s)" % conn)
        gone = cl.shards[2]
        gone.kill()
        why = cu.wait_until(lambda: (lambda s: s[1] if s[0] == 503 else None)(
            http_get(port, "/readyz")), 30, "/readyz to go 503", step=0.1)
        check(bool(why) and gone.address in why,
              "obs: a shard killed: /readyz 503 naming it (%r)" % why)
        check(http_get(port, "/healthz")[0] == 200,
              "obs: /healthz stays 200 (the worker is live, one shard is away)")
        w.send_signal(signal.SIGTERM)
        rc = w.wait(timeout=30)
        check(rc == 0, "obs: the worker exits 0 on SIGTERM (%s)" % rc)
        try:
            sj = json.load(open(stats))
        except (OSError, ValueError) as e:
            sj = {"error": repr(e)}
        check(sorted(sj.get("shards", {})) == sorted(cl.seeds) and
              sj.get("segments") == n_segs and
              sum(v.get("segments", 0) for v in sj["shards"].values()) == n_segs,
              "obs: --stats-json has each shard's figures and their sum of %d segments (%s)" %
              (n_segs, {k: v for k, v in sj.items() if k != "shards"}))
        left = [f for f in os.listdir(tmp) if ".shard-" in f]
        check(not left, "obs: the per-shard stats files are merged and removed (%s)" % left)
    finally:
        if w is not None and w.poll() is None:
            w.kill()
            w.wait()
        if FAILURES:
            print(open(os.path.join(tmp, "w.log"), errors="replace").read()[-3000:])
        shutil.rmtree(tmp, ignore_errors=True)
        cl.stop()

# ---- move-slots under load, and killed mid-move -------------------------------------

class Load:
    """Saves, submits and a lease/complete worker, each in a thread with its
    own ClusterClient, retrying anything (a shard may be down) until every
    operation is acknowledged."""

    def __init__(self, seeds, save_keys, job_keys, segments):
        self.seeds, self.save_keys, self.job_keys = seeds, save_keys, job_keys
        self.segments = segments
        self.acked = {k: 0 for k in save_keys}     # saves acknowledged per key
        self.submitted = {k: 0 for k in job_keys}  # segments acknowledged per key
        self.completed = set()                     # (key, segment) completed OK
        self.stop = threading.Event()
        self.worker_done = False
        self.errors = 0
        self.threads = [threading.Thread(target=f, daemon=True)
                        for f in (self._saves, self._submits, self._worker)]

    def start(self):
        for t in self.threads:
            t.start()

    def finish(self, timeout=90):
        self.stop.set()
        for t in self.threads[:2]:
            t.join(timeout)
        # The worker goes on until every submitted segment is completed.
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and len(self.completed) < sum(self.submitted.values()):
            time.sleep(0.05)
        self.worker_done = True
        self.threads[2].join(timeout)

    def _client(self):
        while True:
            try:
                return ClusterClient(self.seeds, timeout=10, unavailable_retry=60)
            except Exception:  # a seed may be down
                time.sleep(0.05)

    def _retrying(self, cc, fn):
        while True:
            try:
                return fn(cc), cc
            except Exception:
                self.errors += 1
                time.sleep(0.02)
                try:
                    cc.close()
                except Exception:
                    pass
                cc = self._client()

    def _saves(self):
        cc = self._client()
        i = 0
        while not self.stop.is_set():
            k = self.save_keys[i % len(self.save_keys)]
            seg = self.acked[k]
            _, cc = self._retrying(cc, lambda c: c.save("m", [k], seg, [state_of(k, seg)[None]]))
            self.acked[k] = seg + 1
            i += 1
        cc.close()

    def _submits(self):
        cc = self._client()
        for seg in range(self.segments):
            for k in self.job_keys:
                if self.stop.is_set():
                    cc.close()
                    return
                x = np.full((2, 3), float(seg + 1), np.float32)
                _, cc = self._retrying(cc, lambda c: c.submit(
                    "j", k, seg, x, last=seg == self.segments - 1))
                self.submitted[k] = seg + 1
                time.sleep(0.008)  # spread the submits over the whole move
        cc.close()

    def _worker(self):
        cc = self._client()
        while not self.worker_done:
            try:
                lease = cc.lease("j", max_batch=8, wait_ms=50, lease_ms=3000)
                items = [{"key": it.key, "segment": it.segment, "outputs": it.inputs * 2,
                          "states": [it.states["h"] + it.inputs.sum()]} for it in lease.items]
                if items:
                    cc.complete("j", lease.lease_id, items)
                    for it in lease.items:
                        self.completed.add((it.key, it.segment))
            except Exception:
                self.errors += 1
                time.sleep(0.02)
                try:
                    cc.close()
                except Exception:
                    pass
                cc = self._client()
        cc.close()


def verify_move(cl, load, label):
    with ClusterClient(cl.seeds) as cc:
        keys = list(load.acked)
        f = cc.fetch("m", keys)
        want = [load.acked[k] for k in keys]
        ok_seg = f.next_segment.tolist() == want
        ok_val = all(np.array_equal(f.states["h"][i], state_of(k, want[i] - 1))
                     for i, k in enumerate(keys) if want[i] > 0)
        check(ok_seg and ok_val, "%s: every acknowledged save is there (%d saves over %d keys)"
              % (label, sum(want), len(keys)))
        check(load.completed == {(k, s) for k, n in load.submitted.items() for s in range(n)},
              "%s: every submitted segment was completed (%d)" % (label, len(load.completed)))
        ok = True
        for k, n in load.submitted.items():
            for s in range(n):
                r = cc.await_segment("j", k, s, wait_ms=1000)
                ok = ok and r.state == "DONE" and np.array_equal(
                    r.outputs, np.full((2, 3), 2.0 * (s + 1), np.float32))
        check(ok, "%s: every completed segment's outputs are at its owner" % label)
        js = cc.fetch("j", list(load.submitted))
        exp = [sum(6.0 * (s + 1) for s in range(n)) for n in load.submitted.values()]
        check(js.next_segment.tolist() == list(load.submitted.values()) and
              np.allclose(js.states["h"][:, 0], exp),
              "%s: each job sequence's state counts every completed segment once (%s / %s)"
              % (label, js.next_segment.tolist()[:4], js.states["h"][:4, 0].tolist()))
        owner = cc.topology.owner
        extra = {sid: sum(export_count(cl.by_id(sid).address, a, b)
                          for a, b in not_owned(owner, sid)) for sid in cl.ids}
        check(all(v == 0 for v in extra.values()),
              "%s: no shard keeps records of slots it does not own (%s)" % (label, extra))
        placed = [k for sid in cl.ids for k in raw_keys(cl.by_id(sid).address, "m")]
        check(sorted(placed) == sorted(k for k in keys if load.acked[k] > 0),
              "%s: every saved key is stored exactly once" % label)
        check(cc.topology.epoch == 2 and owner[0] == "s1" and owner[1999] == "s1",
              "%s: the topology gives slots 0-1999 to s1 (epoch %d)" % (label, cc.topology.epoch))


def test_move(etcd, kill):
    cl = Cluster(etcd, "mv-" + kill)
    label = "move (%s)" % kill
    try:
        with ClusterClient(cl.seeds) as cc:
            cc.declare("m", {"h": (4,)})
            cc.declare("j", {"h": (4,)}, keep_final=True)
        save_keys = cu.key_in_slots("ld-", 0, 1999, 40) + cu.key_in_slots("ld-", 2000, 16383, 12)
        job_keys = cu.key_in_slots("jb-", 0, 1999, 10) + cu.key_in_slots("jb-", 9000, 16383, 4)
        load = Load(cl.seeds, save_keys, job_keys, segments=24)
        # Data before the move, so the copy has something to do from the start.
        with ClusterClient(cl.seeds) as cc:
            for seg in range(3):
                cc.save("m", save_keys, seg, [np.stack([state_of(k, seg) for k in save_keys])])
        for k in save_keys:
            load.acked[k] = 3
        load.start()
        time.sleep(0.5)
        args = ["--from", "s0", "--to", "s1", "--slots", "0-1999", "--batch-bytes", 1500]
        slow = args + ["--throttle-ms", 150]
        at_start = (sum(load.acked.values()), sum(load.submitted.values()))
        m = subprocess.Popen(mover(cl, *(slow if kill != "none" else args + ["--throttle-ms", 50])),
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        trigger = {"mover-copy": "copy s0 -> s1: batch 2", "mover-flip": "flip:",
                   "source": "copy s0 -> s1: batch 2", "target": "copy s0 -> s1: batch 2",
                   "takeover": "copy s0 -> s1: batch 2"}
        out = []
        if kill == "takeover":
            # A second mover resumes the move while the first still copies:
            # it takes the move over, the first stops before its next import.
            for line in m.stdout:
                out.append(line)
                if trigger[kill] in line:
                    break
            r = subprocess.run(mover(cl), capture_output=True, text=True, timeout=180)
            rest = m.communicate(timeout=120)[0]
            check(r.returncode == 0 and "done:" in r.stdout,
                  "%s: the second mover takes the move over and finishes (%s)" %
                  (label, (r.stderr.strip() or r.stdout.strip())[-200:]))
            check(m.returncode == 1 and "took this move over" in rest,
                  "%s: the first mover stops (%s)" % (label, rest.strip()[-200:]))
        elif kill != "none":
            for line in m.stdout:
                out.append(line)
                if trigger[kill] in line:
                    break
            if kill.startswith("mover"):
                m.kill()
            else:
                victim = cl.by_id("s0" if kill == "source" else "s1")
                victim.kill()
                time.sleep(0.3)
                victim.start()
            rest = m.communicate(timeout=120)[0]
            out.append(rest)
            check(any(trigger[kill] in x for x in out), "%s: killed at '%s'" % (label, trigger[kill]))
            r = subprocess.run(mover(cl), capture_output=True, text=True, timeout=180)
            check(r.returncode == 0 and "done:" in r.stdout and "resuming" in r.stdout,
                  "%s: the rerun mover resumes and finishes (%s)" %
                  (label, (r.stderr.strip() or r.stdout.strip())[-300:]))
        else:
            rest = m.communicate(timeout=180)[0]
            check(m.returncode == 0 and "done:" in rest, "%s: move-slots finished (%s)" %
                  (label, rest.strip()[-300:]))
        at_end = (sum(load.acked.values()), sum(load.submitted.values()))
        check(at_end[0] > at_start[0] and at_end[1] > at_start[1] and
              at_start[1] < len(job_keys) * load.segments,
              "%s: saves and submits were acknowledged while the move ran (saves %d -> %d, "
              "submits %d -> %d)" % (label, at_start[0], at_end[0], at_start[1], at_end[1]))
        time.sleep(0.5)  # load on the new topology too
        load.finish()
        r = subprocess.run(mover(cl), capture_output=True, text=True, timeout=60)
        check(r.returncode == 2 and "no move in progress" in r.stderr,
              "%s: no move is left recorded" % label)
        verify_move(cl, load, label)
    finally:
        cl.stop()


SCENARIOS = {
    "routing": test_routing,
    "equal": test_equal,
    "hashtag": test_hashtag,
    "stale": test_stale,
    "loop": test_loop,
    "pipeline": test_pipeline,
    "move-none": lambda e: test_move(e, "none"),
    "move-mover-copy": lambda e: test_move(e, "mover-copy"),
    "move-mover-flip": lambda e: test_move(e, "mover-flip"),
    "move-source": lambda e: test_move(e, "source"),
    "move-target": lambda e: test_move(e, "target"),
    "move-takeover": lambda e: test_move(e, "takeover"),
    "add-shard": test_add_shard,
    "worker-obs": test_worker_obs,
    "training": test_training,
}


def main():
    for p in (cu.SERVER, CLI):
        if not os.access(p, os.X_OK):
            print("not built: " + p)
            return 1
    names = ARGV[1:] or list(SCENARIOS)
    etcd = cu.Etcd()
    try:
        for n in names:
            t0 = time.monotonic()
            print("---- %s" % n, flush=True)
            try:
                SCENARIOS[n](etcd)
            except Exception as e:  # a scenario that crashed is a failure, not a skip
                import traceback
                traceback.print_exc()
                check(False, "%s: raised %r" % (n, e))
            print("---- %s: %.1f s" % (n, time.monotonic() - t0), flush=True)
    finally:
        etcd.stop()
    for what in FAILURES:  # again, last: a CI log often keeps only the tail
        print("FAIL " + what[:2000])
    print("%d failure(s)" % len(FAILURES))
    return 1 if FAILURES else 0


if __name__ == "__main__":
    sys.exit(main())
