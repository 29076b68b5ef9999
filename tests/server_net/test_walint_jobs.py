#!/usr/bin/python3
"""test_walint_jobs -- Submit/Lease/Complete through the write-ahead log.

On the real statesaver-server (log on, the default) with the Python client
as the worker: a checkpoint (clean stop), then 12 sequences of 2 segments
submitted (the second once the first is done), every first segment and half of the second ones completed
(outputs and states derived from key and segment), then SIGKILL. After the
restart (back at the checkpoint, the log replayed) every acknowledged
Submit and Complete is there: each completed segment is DONE with its exact
outputs, each sequence's state and next_segment are those of its last
completed segment (a Complete applied twice would fail the compare-and-set
or move next_segment past it), and the segments not completed are queued
and leased again; completing them finishes every sequence exactly once.

Usage: test_walint_jobs.py  (SS_BUILD_ROOT / SS_SOURCE_ROOT from meson).
"""
import os
import signal
import subprocess
import sys
import tempfile
import shutil
import time

import numpy as np

SOURCE_ROOT = os.environ.get("SS_SOURCE_ROOT") or os.path.abspath(
    os.path.join(os.path.dirname(__file__), "..", ".."))
BUILD_ROOT = os.environ.get("SS_BUILD_ROOT") or os.path.join(SOURCE_ROOT, "build")
SERVER = os.path.join(BUILD_ROOT, "server", "statesaver-server")
os.environ.setdefault("STATESAVER_PB2_DIR", os.path.join(BUILD_ROOT, "tests", "python"))
sys.path.insert(0, os.path.join(SOURCE_ROOT, "client", "python"))
from statesaver import Client  # noqa: E402

TIMEOUT = 30
FAILURES = []
T, IN = 2, 3
KEYS = ["j%d" % i for i in range(12)]


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        FAILURES.append(what)
    return cond


def start(data, log_path):
    port_file = os.path.join(os.path.dirname(data), "port")
    if os.path.exists(port_file):
        os.unlink(port_file)
    log = open(log_path, "ab")
    p = subprocess.Popen([SERVER, "--data", data, "--listen", "127.0.0.1:0",
                          "--port-file", port_file], stdout=log, stderr=log)
    deadline = time.time() + TIMEOUT
    while time.time() < deadline:
        if os.path.exists(port_file) and os.path.getsize(port_file) > 0:
            with open(port_file) as f:
                return p, int(f.read().strip())
        if p.poll() is not None:
            break
        time.sleep(0.02)
    raise RuntimeError("server did not start (log %s)" % log_path)


def inputs(key):
    base = sum(key.encode())
    return (np.arange(2 * T * IN, dtype=np.float32).reshape(2 * T, IN) + base)


def outputs_of(key, seg, inp):
    return inp * 2 + np.float32(seg)


def state_of(key, seg):
    return np.arange(4, dtype=np.float32) + np.float32(sum(key.encode()) * 10 + seg)


def work(c, want):
    """Lease and complete segments until `want` of them are done; returns
    {(key, segment): outputs} of the acknowledged completes."""
    done = {}
    deadline = time.time() + TIMEOUT
    while len(done) < want and time.time() < deadline:
        lease = c.lease("jv", max_batch=min(8, want - len(done)), wait_ms=1000)
        items = []
        for it in lease.items:
            k = it.key.decode() if isinstance(it.key, bytes) else it.key
            items.append({"key": k, "segment": it.segment,
                          "outputs": outputs_of(k, it.segment, it.inputs),
                          "states": [state_of(k, it.segment)]})
        if items:
            c.complete("jv", lease.lease_id, items)
            for i in items:
                done[(i["key"], i["segment"])] = i["outputs"]
    return done


def verify(c, done, what):
    bad = []
    for (k, s), out in done.items():
        r = c.await_segment("jv", k, s, wait_ms=0, collect=False)
        if r.state != "DONE" or r.outputs is None or \
                r.outputs.tobytes() != out.astype(np.float32).tobytes():
            bad.append("%s/%d %s" % (k, s, r.state))
    last = {}
    for (k, s) in done:
        last[k] = max(last.get(k, -1), s)
    f = c.fetch("jv", KEYS)
    for i, k in enumerate(KEYS):
        seg = last.get(k, -1)
        if int(f.next_segment[i]) != seg + 1:
            bad.append("%s next_segment %d want %d" % (k, f.next_segment[i], seg + 1))
        elif seg >= 0 and f.states["h"][i].tobytes() != state_of(k, seg).tobytes():
            bad.append("%s state %r" % (k, f.states["h"][i]))
    check(not bad, what + ": every acknowledged complete exact, none twice" +
          (" (%s)" % "; ".join(bad[:4]) if bad else ""))


def main():
    root = tempfile.mkdtemp(prefix="ss-walint-jobs-")
    data = os.path.join(root, "data")
    log_path = os.path.join(root, "server.log")
    p = None
    try:
        p, port = start(data, log_path)
        c = Client("127.0.0.1", port)
        c.declare("jv", {"h": (4,)}, keep_final=True)
        c.close() if hasattr(c, "close") else None
        p.send_signal(signal.SIGTERM)
        check(p.wait(timeout=TIMEOUT) == 0, "clean stop (checkpoint)")
        p, port = start(data, log_path)
        c = Client("127.0.0.1", port)
        for k in KEYS:
            c.submit("jv", k, 0, inputs(k)[:T])
        done = work(c, len(KEYS))
        check(len(done) == len(KEYS) and all(s == 0 for _, s in done),
              "every first segment completed")
        for k in KEYS:
            c.submit("jv", k, 1, inputs(k)[T:], last=True)
        done.update(work(c, len(KEYS) // 2))
        check(len(done) == len(KEYS) + len(KEYS) // 2, "half of the second segments completed")
        p.kill()
        p.wait(timeout=TIMEOUT)
        mark = os.path.getsize(log_path)
        p, port = start(data, log_path)
        with open(log_path, "rb") as f:
            f.seek(mark)
            log = f.read().decode("utf-8", "replace")
        check("back at its last checkpoint" in log and "replayed" in log and
              "replayed 0 records" not in log, "restart replayed the log")
        c = Client("127.0.0.1", port)
        verify(c, done, "after SIGKILL")
        rest = work(c, len(KEYS) - len(KEYS) // 2)
        check(len(rest) == len(KEYS) - len(KEYS) // 2 and all(s == 1 for _, s in rest),
              "the segments not completed are leased again, nothing else")
        done.update(rest)
        verify(c, done, "all completed")
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=TIMEOUT)
        p, port = start(data, log_path)
        verify(Client("127.0.0.1", port), done, "after a clean restart")
    except Exception as e:
        check(False, "raised %r" % (e,))
    finally:
        if p and p.poll() is None:
            p.kill()
            p.wait()
        if FAILURES:
            print("logs kept in", root)
        else:
            shutil.rmtree(root, ignore_errors=True)
    print("%d failures" % len(FAILURES))
    return 1 if FAILURES else 0


if __name__ == "__main__":
    sys.exit(main())
