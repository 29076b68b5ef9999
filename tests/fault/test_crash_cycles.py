#!/usr/bin/python3
"""test_crash_cycles -- kill -9 of a --sync on server, again and again, under
concurrent writes from several client processes; after every restart on the
same data directory nothing acknowledged is lost and nothing is half-applied.

  cas   CAS_CYCLES (50) cycles. CAS_CLIENTS (4) client processes, each owning
        KEYS_PER_CLIENT keys, send compare-and-set Saves of 1-3 of their keys
        per request (all-or-nothing batches); the state of key k at the end of
        segment s is derived from a hash of (k, s) (two states, 1 KiB + 64 B).
        Each client appends "A" (attempted) lines before a request and "K"
        (acknowledged) lines after its reply, flushed before the next request.
        The server is killed with SIGKILL 50-400 ms after the load starts,
        restarted, and for every key: highest acked + 1 <= next_segment <=
        highest attempted + 1, the stored states are exactly the content of
        (k, next_segment - 1) (or the initial zeros), and the request in flight
        at the kill was applied to all of its keys or to none.
  jobs  JOB_CYCLES (50) cycles of the same kill under Submit/Complete traffic:
        a submitter process keeps JOB_KEYS sequences JOB_WINDOW segments ahead
        of their stored state (inputs derived from (key, segment), so there
        is work whatever the server's speed), a Python worker process leases and
        completes them with a deterministic, non-idempotent step
        (s = s/2 + x[t]); both record attempts and acknowledgements. After each
        restart, for every key: acked completes <= next_segment <= attempted
        completes + 1, the stored state equals an offline unroll of
        next_segment segments (a segment applied twice would change it), every
        completed segment's outputs (Await without collect) equal the offline
        outputs, and every acknowledged Submit still exists. At the end the
        queue drains, every sequence equals the offline unroll, and the last
        server life counts saves_applied == completed. Both scenarios then put
        back a crash image taken mid-run and check that the checks report the
        lost writes (the checks can fail).

Behaviour only (no file layout is assumed): passes on the LMDB store and on
a store with a write-ahead log. Run: python3 test_crash_cycles.py PB2_DIR
[cas|jobs]. Every wait is bounded; every process started is killed.
"""
import hashlib
import multiprocessing as mp
import os
import random
import shutil
import signal
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "python"))
import harness  # noqa: E402
import test_fault as tf  # noqa: E402  (check, start_server, free_port, ...)

sys.argv = harness.setup_path(sys.argv)
from statesaver import Client, errors  # noqa: E402

CAS_CYCLES = int(os.environ.get("SS_CRASH_CYCLES", "50"))
JOB_CYCLES = int(os.environ.get("SS_CRASH_JOB_CYCLES", "50"))
CAS_CLIENTS = 4
KEYS_PER_CLIENT = 6
A_N, B_N = 256, 16           # float32 elements of the two CAS states
JOB_KEYS = 16
JOB_WINDOW = 6               # submitted segments per sequence ahead of its state
JOB_SEGS_MAX = 100000        # bound on the segments of one sequence
DRAIN_LOAD_S = 0.3           # traffic in the last life before submitting stops
T, D = 4, 8                  # rows per segment, state/input width
KILL_MIN_S, KILL_MAX_S = 0.05, 0.4
MSG_TIMEOUT = 15             # seconds to wait for a client process's report
CONN_ERRORS = (errors.ProtocolError, errors.DeadlineExceeded, OSError)


def seeded(*parts):
    h = hashlib.sha256(b"\0".join(p if isinstance(p, bytes) else str(p).encode()
                                  for p in parts)).digest()
    return np.random.default_rng(int.from_bytes(h[:8], "little"))


def cas_content(key, seg):
    """The states of key at the end of segment seg: a hash of (key, seg)."""
    rng = seeded(b"cas", key, seg)
    return (rng.standard_normal(A_N).astype(np.float32),
            rng.standard_normal(B_N).astype(np.float32))


def job_inputs(key, seg):
    """(inputs [T, D], length) of segment seg of key."""
    rng = seeded(b"job", key, seg)
    length = T - (1 if seg % 5 == 4 else 0)
    x = rng.standard_normal((T, D)).astype(np.float32)
    x[length:] = 0
    return x, length


def job_step(x, length, s):
    """The worker's computation: outputs [T, D] and the state after it."""
    s = np.array(s, dtype=np.float32)
    out = np.zeros((T, D), np.float32)
    for t in range(length):
        s = (s * np.float32(0.5) + x[t]).astype(np.float32)
        out[t] = s
    return out, s


def rec_lines(path):
    try:
        with open(path) as f:
            return [l.split() for l in f if l.endswith("\n")]
    except FileNotFoundError:
        return []


def client_loop(conn, port, body):
    """Run body(client) on every "run" from the parent until the connection
    breaks; then report ("down", n) and wait for the next "run"."""
    while conn.poll(60) and conn.recv() == "run":
        n = [0]
        try:
            c = Client("127.0.0.1", port, timeout=5)
            try:
                conn.send(("up", 0))
                body(c, n)
            finally:
                c.close()
        except CONN_ERRORS:
            conn.send(("down", n[0]))
        except Exception as e:  # a wrong answer from the server: a defect
            conn.send(("error", "%r" % e))


# ---- the compare-and-set client process ------------------------------------

def cas_client(conn, port, idx, keys, path):
    rec = open(path, "a")
    rng = random.Random(idx)
    batch = [idx * 10_000_000]

    def body(c, n):
        f = c.fetch("crash", keys)
        nxt = {k: int(s) for k, s in zip(keys, f.next_segment)}
        while True:
            ks = rng.sample(keys, rng.randint(1, 3))
            segs = [nxt[k] for k in ks]
            batch[0] += 1
            rec.write("".join("A %d %s %d\n" % (batch[0], k.decode(), s)
                              for k, s in zip(ks, segs)))
            rec.flush()
            cont = [cas_content(k, s) for k, s in zip(ks, segs)]
            applied = c.save("crash", ks, segs, [np.stack([a for a, _ in cont]),
                                                 np.stack([b for _, b in cont])])
            rec.write("".join("K %d %s %d %d\n" % (batch[0], k.decode(), s, int(a))
                              for k, s, a in zip(ks, segs, applied)))
            rec.flush()
            for k in ks:
                nxt[k] += 1
            n[0] += 1

    client_loop(conn, port, body)


class Procs:
    """Client processes driven through pipes: run() starts a load phase,
    wait(kind) collects one report from each."""

    def __init__(self):
        self.procs, self.conns = [], []

    def add(self, target, *args):
        a, b = mp.Pipe()
        p = mp.Process(target=target, args=(b,) + args, daemon=True)
        p.start()
        self.procs.append(p)
        self.conns.append(a)

    def run(self):
        for c in self.conns:
            c.send("run")

    def wait(self, kind):
        """One report from every process; returns (all of kind, reports)."""
        out = []
        for c in self.conns:
            while True:
                if not c.poll(MSG_TIMEOUT):
                    out.append(("timeout", 0))
                    break
                m = c.recv()
                if m[0] == kind or m[0] in ("error", "down"):
                    out.append(m)
                    break
        return all(m[0] == kind for m in out), out

    def stop(self):
        for c in self.conns:
            try:
                c.send("stop")
            except OSError:
                pass
        for p in self.procs:
            p.join(5)
            if p.is_alive():
                p.kill()
                p.join()


def kill_cycle(srv, procs, rng, d, data, port, sig=signal.SIGKILL, extra=(), between=None):
    """Let the load run 50-400 ms, kill the server with sig, wait until every
    client noticed, call between() (server down), restart. Returns (new
    server, load reports, problems)."""
    ok, up = procs.wait("up")
    problems = [] if ok else ["clients not up: %s" % up]
    time.sleep(rng.uniform(KILL_MIN_S, KILL_MAX_S))
    srv.send_signal(sig)
    srv.wait(10)
    if sig != signal.SIGKILL and srv.returncode != 0:
        problems.append("server exited with %s on signal %d" % (srv.returncode, sig))
    ok, down = procs.wait("down")
    if not ok:
        problems.append("client reports: %s" % down)
    if between is not None:
        between()
    return tf.start_server(d, data, port, extra), down, problems


# ---- scenario 1: compare-and-set saves -------------------------------------

def verify_cas(addr_port, keys, paths, durable=True):
    """Problems found in the store against the clients' records, the sum of
    next_segment and the number of keys that lost acknowledged saves. With
    durable False, losing acknowledged saves is allowed (counted only)."""
    acked, tried, last = {}, {}, []
    for p in paths:
        batches, order = {}, []
        for l in rec_lines(p):
            if l[0] == "A":
                tried[l[2]] = max(tried.get(l[2], -1), int(l[3]))
                if l[1] not in batches:
                    order.append(l[1])
                batches.setdefault(l[1], []).append((l[2], int(l[3])))
            elif l[0] == "K":
                acked[l[2]] = max(acked.get(l[2], -1), int(l[3]))
                batches.pop(l[1], None)
        # A client has one request in flight at most: its last one, if it
        # got no reply (earlier unacknowledged ones were checked before).
        if order and order[-1] in batches:
            last.append((order[-1], batches[order[-1]]))
    with Client("127.0.0.1", addr_port, timeout=10) as c:
        f = c.fetch("crash", keys)
    stored = {k.decode(): int(n) for k, n in zip(keys, f.next_segment)}
    bad, lost = [], 0
    for i, k in enumerate(keys):
        name = k.decode()
        ns = stored[name]
        lo, hi = acked.get(name, -1) + 1, tried.get(name, -1) + 1
        lost += ns < lo
        if not durable:
            lo = 0
        if not lo <= ns <= hi:
            bad.append("%s: next_segment %d outside [%d, %d]" % (name, ns, lo, hi))
        want = cas_content(k, ns - 1) if ns > 0 else (np.zeros(A_N, np.float32),
                                                      np.zeros(B_N, np.float32))
        if (f.states["a"][i].tobytes() != want[0].tobytes() or
                f.states["b"][i].tobytes() != want[1].tobytes()):
            bad.append("%s: stored state is not the content of segment %d" % (name, ns - 1))
    for b, items in last:  # attempted, never acknowledged (one transaction)
        done = [stored[k] == s + 1 for k, s in items]
        if any(done) and not all(done):
            bad.append("unacknowledged batch %s half-applied: %s stored %s" %
                       (b, items, [stored[k] for k, _ in items]))
    return bad, sum(stored.values()), lost


def snapshot(data, snap):
    """A copy of the data directory of a killed server: a crash image."""
    return lambda: shutil.copytree(data, snap)


def checker_sanity(srv, d, data, port, snap, verify, label):
    """The checks must see lost writes: put back the crash image taken
    mid-run (as if every later write were lost) and verify again; it must
    report problems. Returns the server (stopped)."""
    tf.stop(srv)
    shutil.rmtree(data)
    shutil.copytree(snap, data)
    srv = tf.start_server(d, data, port)
    bad = verify()
    tf.check(len(bad) > 0, "%s: the checks catch lost writes: with the data directory put "
             "back to a mid-run crash image they report %d problems (%s)" %
             (label, len(bad), (bad or ["none"])[0][:160]))
    return srv


def cas_setup(d, port):
    """Declare the saver; start the CAS client processes (waiting for "run").
    Returns (Procs, every key, every record file)."""
    with Client("127.0.0.1", port, timeout=10) as c:
        c.declare("crash", [("a", (A_N,)), ("b", (B_N,))])
    procs = Procs()
    keys, paths = [], []
    for i in range(CAS_CLIENTS):
        ks = [b"c%d-k%02d" % (i, j) for j in range(KEYS_PER_CLIENT)]
        path = os.path.join(d, "client-%d.rec" % i)
        procs.add(cas_client, port, i, ks, path)
        keys += ks
        paths.append(path)
    return procs, keys, paths


def test_cas(tmp):
    label = "cas"
    d = os.path.join(tmp, label)
    os.makedirs(d)
    port = tf.free_port()
    data = os.path.join(d, "data")
    srv = tf.start_server(d, data, port)
    procs, keys, paths = cas_setup(d, port)
    rng = random.Random(42)
    t0 = time.monotonic()
    all_bad, acks, cycles = [], 0, 0
    try:
        snap = os.path.join(d, "snapshot")
        for cycle in range(CAS_CYCLES):
            procs.run()
            srv, down, problems = kill_cycle(
                srv, procs, rng, d, data, port,
                between=snapshot(data, snap) if cycle == CAS_CYCLES // 2 else None)
            bad, total, _ = verify_cas(port, keys, paths)
            acks += sum(m[1] for m in down if m[0] == "down")
            cycles += 1
            if problems or bad:
                all_bad.append("cycle %d: %s" % (cycle, "; ".join(problems + bad)[:600]))
                if len(all_bad) >= 3:
                    break
    finally:
        procs.stop()
    n_acked = sum(1 for p in paths for l in rec_lines(p) if l[0] == "K")
    tf.check(not all_bad, "%s: %d kill -9 cycles, %d acknowledged requests (%d key saves, "
             "%d segments stored): every acknowledged save present with its exact content, "
             "no request half-applied (%.1f s)%s" %
             (label, cycles, acks, n_acked, total, time.monotonic() - t0,
              "".join("\n     " + b for b in all_bad)))
    tf.check(cycles == CAS_CYCLES and acks >= CAS_CYCLES,
             "%s: every cycle ran under load (%d of %d cycles, %d acknowledged requests)" %
             (label, cycles, CAS_CYCLES, acks))
    tf.check(tf.stop(srv) == 0, "%s: the last server stops cleanly" % label)
    if os.path.isdir(snap):
        srv = checker_sanity(srv, d, data, port, snap,
                             lambda: verify_cas(port, keys, paths)[0], label)
        tf.stop(srv)


# ---- scenario 2: Submit/Complete traffic -----------------------------------

def submitter(conn, port, keys, path):
    """Keeps every sequence JOB_WINDOW segments ahead of its stored state,
    so the worker always has work whatever the server's speed, until the
    parent sends "finish"; then reports ("idle", n) and stays connected."""
    rec = open(path, "a")

    def body(c, n):
        nxt = {}
        for l in rec_lines(path):
            if l[0] == "S":
                nxt[l[1]] = max(nxt.get(l[1], 0), int(l[2]) + 1)
        while not (conn.poll() and conn.recv() == "finish"):
            f = c.fetch("jobs", keys)
            sent = 0
            for k, ns in zip(keys, f.next_segment):
                name = k.decode()
                while nxt.get(name, 0) < min(int(ns) + JOB_WINDOW, JOB_SEGS_MAX):
                    seg = nxt.get(name, 0)
                    x, length = job_inputs(k, seg)
                    rec.write("A %s %d\n" % (name, seg))
                    rec.flush()
                    again = c.submit("jobs", k, seg, x, length=length)
                    rec.write("S %s %d %d\n" % (name, seg, int(again)))
                    rec.flush()
                    nxt[name] = seg + 1
                    n[0] += 1
                    sent += 1
            if not sent:
                time.sleep(0.005)  # pacing only: wait for the worker
        conn.send(("idle", n[0]))
        while True:  # nothing more to submit: stay connected until the kill
            c.ping()
            time.sleep(0.02)

    client_loop(conn, port, body)


def job_worker(conn, port, path):
    rec = open(path, "a")

    def body(c, n):
        while True:
            lease = c.lease("jobs", max_batch=8, wait_ms=200, lease_ms=1000, worker="crash")
            if not lease.items:
                continue
            items = []
            for it in lease.items:
                out, s = job_step(it.inputs, it.length, it.states["s"])
                items.append(dict(key=it.key, segment=it.segment, outputs=out, states=[s]))
            rec.write("".join("T %s %d\n" % (it.key.decode(), it.segment)
                              for it in lease.items))
            rec.flush()
            applied = c.complete("jobs", lease.lease_id, items)
            rec.write("".join("C %s %d %d\n" % (it.key.decode(), it.segment, int(a))
                              for it, a in zip(lease.items, applied)))
            rec.flush()
            n[0] += 1

    client_loop(conn, port, body)


class Offline:
    """The offline unroll of every key, extended on demand: outs[seg] and
    states[n] (the state after n segments)."""

    def __init__(self, keys):
        self.keys = keys
        self.ref = {k.decode(): ([], [np.zeros(D, np.float32)]) for k in keys}

    def upto(self, n):
        for k in self.keys:
            outs, states = self.ref[k.decode()]
            while len(outs) < n:
                x, length = job_inputs(k, len(outs))
                o, s = job_step(x, length, states[-1])
                outs.append(o)
                states.append(s)

    def __getitem__(self, name):
        return self.ref[name]


def verify_jobs(port, keys, ref, sub_paths, wrk_path, checked):
    acked_sub = {}  # key -> segments whose Submit was acknowledged
    done_hi, tried_hi = {}, {}
    for l in sum((rec_lines(p) for p in sub_paths), []):
        if l[0] == "S":
            acked_sub.setdefault(l[1], set()).add(int(l[2]))
    for l in rec_lines(wrk_path):
        if l[0] == "C":
            done_hi[l[1]] = max(done_hi.get(l[1], -1), int(l[2]))
        elif l[0] == "T":
            tried_hi[l[1]] = max(tried_hi.get(l[1], -1), int(l[2]))
    bad, total = [], 0
    with Client("127.0.0.1", port, timeout=10) as c:
        f = c.fetch("jobs", keys)
        ref.upto(int(max(f.next_segment)))
        for i, k in enumerate(keys):
            name = k.decode()
            ns = int(f.next_segment[i])
            total += ns
            lo, hi = done_hi.get(name, -1) + 1, tried_hi.get(name, -1) + 1
            if not lo <= ns <= hi:
                bad.append("%s: next_segment %d outside [%d, %d] (acked/attempted "
                           "completes)" % (name, ns, lo, hi))
                continue
            outs, states = ref[name]
            if f.states["s"][i].tobytes() != states[ns].tobytes():
                bad.append("%s: state is not the offline state after %d segments" % (name, ns))
            # Outputs of completed segments: new ones every cycle, all at the end.
            for seg in range(checked.get(name, 0), ns):
                r = c.await_segment("jobs", k, seg, wait_ms=0, collect=False)
                if r.state != "DONE" or r.outputs is None or \
                        r.outputs.tobytes() != outs[seg].tobytes():
                    bad.append("%s segment %d: %s, outputs %s the offline outputs" %
                               (name, seg, r.state, "differ from" if r.outputs is not None
                                else "missing, not"))
                    break
            else:
                checked[name] = ns
            # Every acknowledged Submit past the stored state is still queued.
            for seg in sorted(x for x in acked_sub.get(name, ()) if x >= ns):
                try:
                    r = c.await_segment("jobs", k, seg, wait_ms=0, collect=False)
                    bad.append("%s segment %d: %s before segment %d was stored" %
                               (name, seg, r.state, seg - 1))
                except errors.DeadlineExceeded:  # not done yet (queued or leased): present
                    pass
                except errors.StatesaverError as e:
                    bad.append("%s segment %d acknowledged by Submit but %s" % (name, seg, e))
                    break
    return bad, total


def test_jobs(tmp):
    label = "jobs"
    d = os.path.join(tmp, label)
    os.makedirs(d)
    port = tf.free_port()
    data = os.path.join(d, "data")
    srv = tf.start_server(d, data, port)
    keys = [b"seq%02d" % i for i in range(JOB_KEYS)]
    with Client("127.0.0.1", port, timeout=10) as c:
        c.declare("jobs", [("s", (D,))])
    ref = Offline(keys)
    sub_path, wrk_path = os.path.join(d, "submit.rec"), os.path.join(d, "worker.rec")
    subs, wrk = Procs(), Procs()
    subs.add(submitter, port, keys, sub_path)
    wrk.add(job_worker, port, wrk_path)
    both = Procs()
    both.procs, both.conns = subs.procs + wrk.procs, subs.conns + wrk.conns
    rng = random.Random(7)
    snap = os.path.join(d, "snapshot")
    checked, all_bad, cycles, total = {}, [], 0, 0
    loaded_sub = loaded_wrk = 0
    t0 = time.monotonic()
    try:
        for cycle in range(JOB_CYCLES):
            both.run()
            srv, down, problems = kill_cycle(
                srv, both, rng, d, data, port,
                between=snapshot(data, snap) if cycle == JOB_CYCLES // 2 else None)
            bad, total = verify_jobs(port, keys, ref, (sub_path,), wrk_path, checked)
            cycles += 1
            loaded_sub += down[0][0] == "down" and down[0][1] > 0
            loaded_wrk += down[1][0] == "down" and down[1][1] > 0
            if problems or bad:
                all_bad.append("cycle %d: %s" % (cycle, "; ".join(problems + bad)[:600]))
                if len(all_bad) >= 3:
                    break
        tf.check(cycles == JOB_CYCLES and min(loaded_wrk, loaded_sub) >= cycles * 3 // 4,
                 "%s: the kills hit live traffic: Completes acknowledged in %d and Submits in "
                 "%d of %d cycles" % (label, loaded_wrk, loaded_sub, cycles))
        n_sub = sum(1 for l in rec_lines(sub_path) if l[0] == "S")
        n_done = sum(1 for l in rec_lines(wrk_path) if l[0] == "C")
        tf.check(not all_bad, "%s: %d kill -9 cycles, %d Submits and %d Completes "
                 "acknowledged, %d segments stored: every completed segment's outputs and "
                 "state intact, none applied twice, no acknowledged Submit lost (%.1f s)%s" %
                 (label, cycles, n_sub, n_done, total, time.monotonic() - t0,
                  "".join("\n     " + b for b in all_bad)))
        # Drain: a last life with traffic, then submitting stops and it runs
        # to the end without a kill.
        both.run()
        both.wait("up")
        time.sleep(DRAIN_LOAD_S)
        subs.conns[0].send("finish")
        idle = subs.conns[0].poll(MSG_TIMEOUT) and subs.conns[0].recv()
        want = {}
        for l in rec_lines(sub_path):
            if l[0] == "S":
                want[l[1]] = max(want.get(l[1], 0), int(l[2]) + 1)
        n_want = sum(want.values())

        def drained():
            with Client("127.0.0.1", port, timeout=10) as c:
                f = c.fetch("jobs", keys)
                if any(int(n) < want.get(k.decode(), 0) for k, n in zip(keys, f.next_segment)):
                    return None
                s = c.stats()
                return s if s.get("queued") == 0 and s.get("leased") == 0 else None
        st = tf.wait_for(drained, 90, 0.05) if idle and idle[0] == "idle" else None
        srv.send_signal(signal.SIGKILL)
        srv.wait(10)
        both.wait("down")
        srv = tf.start_server(d, data, port)
        checked.clear()
        bad, total = verify_jobs(port, keys, ref, (sub_path,), wrk_path, checked)
        tf.check(st is not None and not bad and total == n_want and
                 st.get("completed", 0) > 0 and st.get("failed") == 0 and
                 st.get("saves_applied") == st.get("completed"),
                 "%s: drained after the last kill: %d of %d segments stored, all outputs and "
                 "states equal the offline unroll; last life saves_applied %s == completed "
                 "%s, failed %s%s" %
                 (label, total, n_want, (st or {}).get("saves_applied"),
                  (st or {}).get("completed"), (st or {}).get("failed"),
                  "".join("\n     " + b for b in bad[:5])))
    finally:
        both.stop()
    tf.check(tf.stop(srv) == 0, "%s: the last server stops cleanly" % label)
    if os.path.isdir(snap):
        srv = checker_sanity(srv, d, data, port, snap, lambda: verify_jobs(
            port, keys, ref, (sub_path,), wrk_path, {})[0], label)
        tf.stop(srv)


def main():
    return tf.run_scenarios("ss-crash-", (("cas", test_cas), ("jobs", test_jobs)), sys.argv[1:])


if __name__ == "__main__":
    mp.set_start_method("fork")
    sys.exit(main())
