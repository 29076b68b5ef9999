#!/usr/bin/python3
"""test_serve_batching -- `statesaver-worker serve --min-batch N
--max-delay-ms MS`: batch formation on the server (Lease min_batch /
max_delay_ms, issue 10) from the C worker.

A real statesaver-server and worker; segments of distinct sequences are
submitted one at a time, 150 ms apart:
  - with --min-batch 4 --max-delay-ms 5000 the worker's first lease holds
    all 4 (it waited to form the batch), and they complete;
  - without, the first lease holds the first segment alone (a Lease is
    served as soon as one segment is ready; the second comes 1 s later);
  - --min-batch above --batch, or without --max-delay-ms: exit 2.
The worker runs with --max-batches 1 and reports its lease through
--stats-json. Every wait is bounded.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np

SOURCE_ROOT = os.environ.get("SS_SOURCE_ROOT") or os.path.abspath(
    os.path.join(os.path.dirname(__file__), "..", ".."))
BUILD_ROOT = os.environ.get("SS_BUILD_ROOT") or os.path.join(SOURCE_ROOT, "build")
SERVER = os.path.join(BUILD_ROOT, "server", "statesaver-server")
WORKER = os.path.join(BUILD_ROOT, "worker", "statesaver-worker")
MAKE_MODEL = os.path.join(SOURCE_ROOT, "scripts", "make-model.py")
sys.path.insert(0, os.path.join(SOURCE_ROOT, "client", "python"))
from statesaver import Client  # noqa: E402  (ships its statesaver_pb2)

FAILURES = []
PROCS = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        FAILURES.append(what)
    return cond


def wait_for(pred, timeout, step=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(step)
    return None


def log_text(path):
    try:
        return open(path, errors="replace").read()
    except FileNotFoundError:
        return ""


def run_case(tmp, port, model, saver, extra, gaps):
    """A worker leasing once from saver; 4 segments submitted with the
    pauses gaps after each. Returns (worker exit status, its --stats-json,
    the client)."""
    stats, log = os.path.join(tmp, saver + ".json"), os.path.join(tmp, saver + ".log")
    w = subprocess.Popen([WORKER, "serve", "--server", "127.0.0.1:%d" % port, "--model", model,
                          "--saver", saver, "--batch", "8", "--wait-ms", "10000",
                          "--max-batches", "1", "--threads", "1", "--stats-json", stats]
                         + extra, stdout=open(log, "wb"), stderr=subprocess.STDOUT)
    PROCS.append(w)
    c = Client("127.0.0.1:%d" % port)
    # connected with the saver declared, and its first Lease parked
    wait_for(lambda: "declared" in log_text(log), 20)
    time.sleep(0.3)
    rng = np.random.default_rng(5)
    for i in range(4):
        c.submit(saver, "k%d" % i, 0, rng.standard_normal((3, 4)).astype(np.float32),
                 length=3, last=True)
        time.sleep(gaps[i])
    try:
        rc = w.wait(30)
    except subprocess.TimeoutExpired:
        w.kill()
        rc = w.wait()
    try:
        sj = json.load(open(stats))
    except (OSError, ValueError):
        sj = {}
    if rc != 0:
        print(log_text(log)[-2000:])
    return rc, sj, c


def main():
    for p in (SERVER, WORKER):
        if not os.access(p, os.X_OK):
            print("not built: " + p)
            return 1
    tmp = tempfile.mkdtemp(prefix="ss-batching-")
    srv = None
    try:
        model = os.path.join(tmp, "m.safetensors")
        r = subprocess.run(["/usr/bin/python3", MAKE_MODEL, model, "--cell", "lstm",
                            "--input-size", "4", "--num-units", "8", "--num-layers", "1"],
                           capture_output=True, text=True, timeout=60)
        if not check(r.returncode == 0, "model generated (%s)" % r.stderr.strip()):
            return 1
        port_file = os.path.join(tmp, "port")
        srv = subprocess.Popen([SERVER, "--listen", "127.0.0.1:0", "--data",
                                os.path.join(tmp, "data"), "--port-file", port_file,
                                "--log-level", "warn"],
                               stdout=open(os.path.join(tmp, "server.log"), "wb"),
                               stderr=subprocess.STDOUT)
        PROCS.append(srv)
        if not check(bool(wait_for(lambda: log_text(port_file).strip(), 20)), "server up"):
            return 1
        port = int(log_text(port_file))

        rc, sj, c = run_case(tmp, port, model, "formed", ["--min-batch", "4",
                                                          "--max-delay-ms", "5000"],
                            [0.15] * 4)
        check(rc == 0 and sj.get("batches") == 1 and sj.get("segments") == 4,
              "--min-batch 4 --max-delay-ms 5000: one lease of the 4 segments submitted "
              "150 ms apart (exit %s, %s)" % (rc, {k: sj.get(k) for k in ("batches",
                                                                         "segments")}))
        done = [c.await_segment("formed", "k%d" % i, 0, wait_ms=5000) for i in range(4)]
        check(all(d.state == "DONE" and d.outputs.shape == (3, 8) for d in done),
              "... and all 4 are done with their outputs")
        c.close()

        # a second apart after the first: the worker's Lease takes it alone
        rc, sj, c = run_case(tmp, port, model, "plain", [], [1.0, 0.15, 0.15, 0.15])
        check(rc == 0 and sj.get("batches") == 1 and sj.get("segments") == 1,
              "without --min-batch: the first lease holds the first segment alone "
              "(exit %s, %s)" % (rc, {k: sj.get(k) for k in ("batches", "segments")}))
        c.close()

        for extra, why in ((["--batch", "2", "--min-batch", "4", "--max-delay-ms", "100"],
                            "exceeds --batch"),
                           (["--min-batch", "4"], "go together"),
                           (["--max-delay-ms", "100"], "go together"),
                           (["--min-batch", "0", "--max-delay-ms", "100"], "--min-batch")):
            r = subprocess.run([WORKER, "serve", "--server", "127.0.0.1:%d" % port, "--model",
                                model, "--saver", "bad"] + extra,
                               capture_output=True, text=True, timeout=30)
            check(r.returncode == 2 and why in r.stderr,
                  "serve %s: exit 2 naming the problem (exit %s: %s)"
                  % (" ".join(extra), r.returncode, r.stderr.strip()[-160:]))
    finally:
        if srv is not None and srv.poll() is None:
            srv.send_signal(signal.SIGTERM)
            try:
                srv.wait(20)
            except subprocess.TimeoutExpired:
                pass
        for p in PROCS:
            if p.poll() is None:
                p.kill()
                p.wait()
        shutil.rmtree(tmp, ignore_errors=True)
    for what in FAILURES:
        print("FAIL " + what)
    print("%d failure(s)" % len(FAILURES))
    return 1 if FAILURES else 0


if __name__ == "__main__":
    sys.exit(main())
