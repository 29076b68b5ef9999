#!/usr/bin/python3
"""test_serve_backoff -- `statesaver-worker serve` survives refused leases.

A real statesaver-server runs with a small --max-frame-bytes, and a segment
is submitted whose Submit frame fits but whose Lease reply (inputs plus the
saver's state) does not. The landed server answers every Lease of that
saver with RESOURCE_EXHAUSTED ("lease reply ... exceeds the frame limit");
a server that fails or refuses such a segment instead never does. Either
way the worker must:
  - stay alive for several backoff periods (it used to exit 1 within
    0.03 s on RESOURCE_EXHAUSTED);
  - log the refusal at most once per streak, and not spin: its lease-error
    counter (/metrics) stays within what the bounded exponential backoff
    allows;
  - serve good segments submitted afterwards (the server is restarted on
    the same data with the default frame limit, so on the landed server the
    blocked segment drains too, and the worker reconnects through
    UNAVAILABLE/connection loss);
  - exit 0 on SIGTERM.
Every process is killed at the end; every wait is bounded.
"""
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

import numpy as np

SOURCE_ROOT = os.environ.get("SS_SOURCE_ROOT") or os.path.abspath(
    os.path.join(os.path.dirname(__file__), "..", ".."))
BUILD_ROOT = os.environ.get("SS_BUILD_ROOT") or os.path.join(SOURCE_ROOT, "build")
SERVER = os.environ.get("SS_TEST_SERVER") or os.path.join(BUILD_ROOT, "server",
                                                          "statesaver-server")
WORKER = os.environ.get("SS_TEST_WORKER") or os.path.join(BUILD_ROOT, "worker",
                                                          "statesaver-worker")
CLI = os.path.join(BUILD_ROOT, "client", "statesaver")
MAKE_MODEL = os.path.join(SOURCE_ROOT, "scripts", "make-model.py")
PY = "/usr/bin/python3"

FRAME = 65536          # --max-frame-bytes of the first server
INPUT_SIZE = 256       # wide rows: the oversized segment is few steps, cheap to run
NUM_UNITS = 64         # 2 layers x (c, h) x 64 floats: 1 KiB of state per lease item
BAD_ROWS = (FRAME - 512) // (4 * INPUT_SIZE)    # inputs just under the frame limit
HOLD_S = 4.0           # time the refused segment is held (several backoffs)
BACKOFF_MIN_MS = 100   # SS_SERVE_BACKOFF_MIN_MS
CMD_TIMEOUT = 60

FAILURES = []
PROCS = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what)
    if not cond:
        FAILURES.append(what)
    return cond


def start(args, log_path):
    log = open(log_path, "wb")
    p = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
    p.log_path = log_path
    PROCS.append(p)
    return p


def log_text(p):
    with open(p.log_path, "rb") as f:
        return f.read().decode(errors="replace")


def stop(p, sig=signal.SIGTERM, timeout=20):
    if p.poll() is None:
        p.send_signal(sig)
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    return p.returncode


def run(args):
    return subprocess.run(args, capture_output=True, text=True, timeout=CMD_TIMEOUT)


def read_port(path, proc, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with open(path) as f:
                t = f.read().strip()
            if t:
                return int(t)
        except FileNotFoundError:
            pass
        time.sleep(0.02)
    return None


def server(tmp, data, listen, extra=()):
    pf = os.path.join(tmp, "port-%d" % time.monotonic_ns())
    p = start([SERVER, "--listen", listen, "--data", data, "--sync", "off", "--port-file", pf,
               "--log-level", "warn"] + list(extra),
              os.path.join(tmp, "server-%d.log" % time.monotonic_ns()))
    port = read_port(pf, p)
    if port is None:
        raise RuntimeError("server did not start: " + log_text(p))
    return p, port


def wait_declared(addr, saver, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = run([CLI, "--server", addr, "ls"])
        if r.returncode == 0 and saver in r.stdout.split():
            return True
        time.sleep(0.05)
    return False


def worker_errors(port, kind):
    """statesaver_worker_errors_total{kind=...} from the worker's /metrics."""
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=10) as r:
        text = r.read().decode()
    m = re.search(r'^statesaver_worker_errors_total\{kind="%s"\} (\S+)$' % kind, text, re.M)
    return float(m.group(1)) if m else 0.0


def lease_errors(port):
    return worker_errors(port, "lease")


def max_refusals(seconds):
    """Most Lease calls a worker backing off from BACKOFF_MIN_MS (jittered to
    at least half of it, doubling) can make in `seconds`, plus slack."""
    n, t, nominal = 0, 0.0, BACKOFF_MIN_MS / 1000.0
    while t <= seconds:
        n += 1
        t += nominal / 2
        nominal = min(nominal * 2, 5.0)
    return n + 2


def main():
    for p in (SERVER, WORKER, CLI):
        if not os.access(p, os.X_OK):
            print("not built: " + p)
            return 1
    tmp = tempfile.mkdtemp(prefix="ss-serve-backoff-")
    try:
        return body(tmp)
    finally:
        for p in PROCS:
            if p.poll() is None:
                p.kill()
                p.wait()
        if FAILURES:
            for f in sorted(os.listdir(tmp)):
                if f.endswith(".log"):
                    print("---- " + f)
                    print(open(os.path.join(tmp, f), errors="replace").read()[-3000:])
        shutil.rmtree(tmp, ignore_errors=True)


def body(tmp):
    model = os.path.join(tmp, "lstm.safetensors")
    r = run([PY, MAKE_MODEL, model, "--cell", "lstm", "--input-size", str(INPUT_SIZE),
             "--num-units", str(NUM_UNITS), "--num-layers", "2"])
    if not check(r.returncode == 0, "model generated (%s)" % r.stderr.strip()):
        return 1
    data = os.path.join(tmp, "data")
    srv, port = server(tmp, data, "127.0.0.1:0", ["--max-frame-bytes", str(FRAME)])
    addr = "127.0.0.1:%d" % port
    mport_file = os.path.join(tmp, "metrics-port")
    w = start([WORKER, "serve", "--server", addr, "--model", model, "--saver", "big",
               "--wait-ms", "200", "--metrics-listen", "127.0.0.1:0",
               "--metrics-port-file", mport_file],
              os.path.join(tmp, "worker.log"))
    mport = read_port(mport_file, w)
    check(mport is not None, "worker serves metrics")
    check(wait_declared(addr, "big"), "the worker declared the saver")

    # The segment: its Submit fits the frame, its Lease reply does not.
    bad = os.path.join(tmp, "bad-in")
    os.makedirs(bad)
    np.save(os.path.join(bad, "huge.npy"),
            np.ones((BAD_ROWS, INPUT_SIZE), dtype="<f4"))
    before = lease_errors(mport) if mport else 0.0
    t0 = time.monotonic()
    sub = start([CLI, "--server", addr, "submit", "big", "--inputs", bad, "--num-unroll",
                 str(BAD_ROWS), "--outputs", os.path.join(tmp, "bad-out"), "--max-wait-ms",
                 str(int(HOLD_S * 1000))], os.path.join(tmp, "submit-bad.log"))
    try:
        sub.wait(HOLD_S + 30)
    except subprocess.TimeoutExpired:
        pass
    held = time.monotonic() - t0
    check(sub.returncode is not None, "the submit of the oversized segment returned "
          "(exit %s after %.1f s)" % (sub.returncode, held))
    # At least HOLD_S: several backoff periods (100, 200, 400, 800, 1600 ms ...).
    if held < HOLD_S:
        time.sleep(HOLD_S - held)
    held = time.monotonic() - t0
    alive = w.poll() is None
    check(alive, "the worker is alive %.1f s after the oversized segment (exit %s)"
          % (held, w.returncode))
    if not alive:
        return 1
    errors = lease_errors(mport) - before if mport else 0.0
    limit = max_refusals(held)
    check(errors <= limit, "the worker backs off: %d failed leases in %.1f s (at most %d)"
          % (errors, held, limit))
    text = log_text(w)
    said = len(re.findall(r"lease from .*RESOURCE_EXHAUSTED|lease from .*exceeds", text))
    check(said <= 1, "a streak of refused leases is logged at most once (%d lines, %d "
          "failed leases)" % (said, errors))
    if errors > 0:
        check(said == 1, "the refusal streak is logged exactly once")

    # Restart the server on the same data with the default frame limit: the
    # worker reconnects (the landed server drains the held segment too) and
    # serves segments submitted now.
    check(stop(srv) == 0, "server stops on SIGTERM")
    # The server stays away for at least two failed connects: one line.
    c0 = worker_errors(mport, "connect") if mport else 0.0
    deadline = time.monotonic() + 30
    while mport and time.monotonic() < deadline and worker_errors(mport, "connect") < c0 + 2:
        time.sleep(0.1)
    failed = worker_errors(mport, "connect") - c0 if mport else 0.0
    lines = log_text(w).count("serve: connecting to")
    check(failed >= 2 and lines == 1 and w.poll() is None,
          "the server away: %d failed connects, logged in %d line, worker alive"
          % (failed, lines))
    srv, port2 = server(tmp, data, addr)
    good = os.path.join(tmp, "good-in")
    os.makedirs(good)
    rng = np.random.default_rng(5)
    for i, n in enumerate([3, 9, 17]):
        np.save(os.path.join(good, "good%d.npy" % i),
                rng.standard_normal((n, INPUT_SIZE)).astype("<f4"))
    r = run([CLI, "--server", addr, "submit", "big", "--inputs", good, "--num-unroll", "4",
             "--outputs", os.path.join(tmp, "good-out"), "--max-wait-ms", "40000"])
    check(r.returncode == 0, "good segments submitted afterwards are served (%s)"
          % r.stderr.strip()[-300:])
    outs = [np.load(os.path.join(tmp, "good-out", "good%d.npy" % i))
            if os.path.exists(os.path.join(tmp, "good-out", "good%d.npy" % i)) else None
            for i in range(3)]
    check(all(o is not None and o.shape == (n, NUM_UNITS) and np.all(np.isfinite(o))
              for o, n in zip(outs, [3, 9, 17])),
          "each good sequence has its outputs [length, %d]" % NUM_UNITS)
    check(w.poll() is None, "the worker is still running")
    check(stop(w) == 0, "the worker exits 0 on SIGTERM")
    check(stop(srv) == 0, "server exits 0")
    print("%d failure(s)" % len(FAILURES))
    return 1 if FAILURES else 0


if __name__ == "__main__":
    sys.exit(main())
