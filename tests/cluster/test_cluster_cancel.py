#!/usr/bin/python3
"""test_cluster_cancel -- `statesaver --cluster ... cancel` on a real etcd
and three statesaver-server shards (tests/cluster/cluster_util.py, topology
written by `statesaver cluster init`): keys living on all three shards, each
with a leased and a queued segment, are cancelled in one command; every
shard loses exactly its keys' job records (the other sequences stay), the
printed counts (and --json) are the sums over the shards, a late Complete
on each shard is refused, and cancelling again counts 0.

Each check prints ok/FAIL; any failure makes the exit status 1.
Usage: test_cluster_cancel.py PB2_DIR
"""
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cluster_util as cu  # noqa: E402

ARGV = cu.setup(sys.argv)
sys.path.insert(0, os.path.join(cu.SOURCE_ROOT, "client", "python"))
import numpy as np  # noqa: E402
from statesaver import Client, errors  # noqa: E402
from statesaver.cluster import ClusterClient  # noqa: E402

CLI = cu.CLI
FAILURES = []
PER_SHARD = 2  # cancelled keys per shard


def check(cond, what):
    print("%s: %s" % ("ok" if cond else "FAIL", what), flush=True)
    if not cond:
        FAILURES.append(what)
    return cond


def cli(seeds, *args, timeout=120):
    cmd = [CLI, "--cluster", ",".join(seeds)] + [str(a) for a in args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def queued_leased(addr, saver):
    c = Client(addr)
    try:
        st = c.stats(saver)
        return st["queued"] + st["leased"]
    finally:
        c.close()


def scenario(etcd):
    cl = cu.Cluster(etcd, "cancel")
    shards = cl.shards
    seeds = [s.address for s in shards]
    cc = ClusterClient(seeds)
    locals_ = {}
    try:
        cc.declare("cv", {"h": (3,)})
        owner = cc.topology.owner
        ids = [sh.id for sh in shards]
        # PER_SHARD keys to cancel and one to keep on every shard.
        doomed, kept = {}, {}
        i = 0
        while any(len(doomed.get(s, [])) < PER_SHARD + 1 for s in ids):
            k = b"cx-%d" % i
            i += 1
            s = owner[cu.slot_of(k)]
            doomed.setdefault(s, [])
            if len(doomed[s]) < PER_SHARD + 1:
                doomed[s].append(k)
        for s in ids:
            kept[s] = doomed[s].pop()
        x = np.ones((4, 2), np.float32)
        for s in ids:
            for k in doomed[s] + [kept[s]]:
                check(cc.submit_sequence("cv", k, x, 2) == 2, "submit %r (2 segments)" % k)
        # Segment 0 of every sequence leased from its shard, segment 1 queued.
        for s, sh in zip(ids, shards):
            c = Client(sh.address)
            locals_[s] = c
            lease = c.lease("cv", max_batch=16, wait_ms=2000)
            got = sorted(it.key for it in lease.items)
            check(got == sorted(doomed[s] + [kept[s]]),
                  "shard %s leased segment 0 of its %d sequences" % (s, PER_SHARD + 1))
            locals_[s + ".lease"] = lease
            check(queued_leased(sh.address, "cv") == 2 * (PER_SHARD + 1),
                  "shard %s holds %d job records" % (s, 2 * (PER_SHARD + 1)))

        keys = [k.decode() for s in ids for k in doomed[s]]
        r = cli(seeds, "cancel", "cv", *keys)
        n = PER_SHARD * len(ids)
        check(r.returncode == 0 and
              r.stdout == "cv: cancelled %d sequences, %d job records\n" % (n, 2 * n),
              "cancel of %d keys on %d shards: counts summed (%r %r)"
              % (n, len(ids), r.stdout, r.stderr))
        for s, sh in zip(ids, shards):
            check(queued_leased(sh.address, "cv") == 2,
                  "shard %s: only the kept sequence's 2 records are left" % s)
            c = locals_[s]
            for k in doomed[s]:
                try:
                    c.await_segment("cv", k, 1, wait_ms=0)
                    check(False, "shard %s: %r segment 1 is gone" % (s, k))
                except errors.NotFound:
                    check(True, "shard %s: %r segment 1 is gone" % (s, k))
            lease = locals_[s + ".lease"]
            items = {it.key: it for it in lease.items}
            k = doomed[s][0]
            try:
                c.complete("cv", lease.lease_id, [{"key": k, "segment": 0,
                                                   "outputs": items[k].inputs,
                                                   "states": [np.ones(3, np.float32)]}])
                check(False, "shard %s: the late Complete of %r is refused" % (s, k))
            except errors.FailedPrecondition as e:
                check("cancelled" in str(e),
                      "shard %s: the late Complete of %r is refused (%s)" % (s, k, e))
            k = kept[s]
            c.complete("cv", lease.lease_id, [{"key": k, "segment": 0,
                                               "outputs": items[k].inputs,
                                               "states": [np.ones(3, np.float32)]}])
            check(c.await_segment("cv", k, 0, wait_ms=0).state == "DONE",
                  "shard %s: the kept sequence completes" % s)

        r = cli(seeds, "cancel", "cv", *keys)
        check(r.returncode == 0 and r.stdout == "cv: cancelled 0 sequences, 0 job records\n",
              "cancelling again counts 0 (%r %r)" % (r.stdout, r.stderr))
        # The kept sequences (done segment 0, queued segment 1) on all shards.
        kk = [kept[s].decode() for s in ids]
        r = cli(seeds, "cancel", "--json", "cv", *kk)
        ok = r.returncode == 0
        if ok:
            ok = json.loads(r.stdout) == {"saver": "cv", "cancelled": len(ids),
                                          "segments": 2 * len(ids)}
        check(ok, "--json sums over the shards (%r %r)" % (r.stdout, r.stderr))
        for s, sh in zip(ids, shards):
            check(queued_leased(sh.address, "cv") == 0, "shard %s: queue empty" % s)
        r = cli(seeds, "cancel", "nosuch", *kk)
        check(r.returncode == 1 and "not declared" in r.stderr,
              "an undeclared saver fails with the shard's NOT_FOUND (%r)" % r.stderr)
    finally:
        for k, c in locals_.items():
            if not k.endswith(".lease"):
                c.close()
        cc.close()
        for s in shards:
            s.stop()


def main():
    for p in (cu.SERVER, CLI):
        if not os.access(p, os.X_OK):
            print("not built: " + p)
            return 1
    etcd = cu.Etcd()
    try:
        try:
            scenario(etcd)
        except Exception as e:  # a crash is a failure, not a skip
            import traceback
            traceback.print_exc()
            check(False, "raised %r" % (e,))
    finally:
        etcd.stop()
    for what in FAILURES:
        print("FAIL " + what[:2000])
    print("%d failure(s)" % len(FAILURES))
    return 1 if FAILURES else 0


if __name__ == "__main__":
    sys.exit(main())
