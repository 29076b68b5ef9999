#!/usr/bin/python3
"""test_jobs_e2e -- the job pipeline end to end on the real binaries.

statesaver-server + two `statesaver-worker serve` + `statesaver submit`,
for a 2-layer LSTM and a 2-layer GRU made by scripts/make-model.py, over
sequences whose lengths are not multiples of num_unroll (including 1). The
outputs and final states must match one whole-sequence
`statesaver-worker unroll` per sequence. Also: bad input files (exit 2,
nothing submitted), sequences the model cannot run (workers complete them
with an error, the poison limit fails them, submit names them, exit 1),
a schema conflict, SIGTERM, --max-batches, the server restarting under the
workers (they reconnect), and the progress bar on a terminal.

Needs numpy (not torch). Every process is killed at the end; every wait is
bounded.
"""
import json
import os
import pty
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
CLI = os.path.join(BUILD_ROOT, "client", "statesaver")
MAKE_MODEL = os.path.join(SOURCE_ROOT, "scripts", "make-model.py")
PY = "/usr/bin/python3"

RTOL = 1e-5          # relative tolerance against the whole-sequence unroll
CMD_TIMEOUT = 60     # seconds for any one command
LENGTHS = [1, 2, 7, 8, 9, 16, 23, 50]
NUM_UNROLL = 8

FAILURES = []
PROCS = []


def check(cond, what):
    if cond:
        print("ok   " + what)
    else:
        print("FAIL " + what)
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


def stop(p, sig=signal.SIGTERM, timeout=15):
    """Signal p and return its exit status (SIGKILL after timeout)."""
    if p.poll() is None:
        p.send_signal(sig)
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    return p.returncode


def run(args, **kw):
    return subprocess.run(args, capture_output=True, text=True, timeout=CMD_TIMEOUT, **kw)


class Server:
    def __init__(self, tmp, data, listen="127.0.0.1:0", extra=()):
        self.port_file = os.path.join(tmp, "port-%d" % time.monotonic_ns())
        self.p = start([SERVER, "--listen", listen, "--data", data, "--sync", "off",
                        "--port-file", self.port_file, "--log-level", "warn",
                        "--max-attempts", "2"] + list(extra),
                       os.path.join(tmp, "server-%d.log" % time.monotonic_ns()))
        deadline = time.monotonic() + 20
        self.port = None
        while time.monotonic() < deadline and self.p.poll() is None:
            try:
                with open(self.port_file) as f:
                    t = f.read().strip()
                if t:
                    self.port = int(t)
                    break
            except FileNotFoundError:
                pass
            time.sleep(0.02)
        if self.port is None:
            raise RuntimeError("server did not start: " + log_text(self.p))
        self.addr = "127.0.0.1:%d" % self.port


def worker(tmp, addr, model, saver, name, extra=()):
    return start([WORKER, "serve", "--server", addr, "--model", model, "--saver", saver,
                  "--wait-ms", "200", "--log-every", "1000"] + list(extra),
                 os.path.join(tmp, "worker-%s.log" % name))


def wait_declared(addr, saver, timeout=20):
    """Workers declare the saver when they connect; submit needs it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = run([CLI, "--server", addr, "ls"])
        if r.returncode == 0 and saver in r.stdout.split():
            return True
        time.sleep(0.05)
    return False


def make_inputs(d, input_size, seed, lengths=LENGTHS):
    os.makedirs(d, exist_ok=True)
    rng = np.random.default_rng(seed)
    seqs = {}
    for i, n in enumerate(lengths):
        key = "seq%02d-len%d" % (i, n)
        x = rng.standard_normal((n, input_size)).astype("<f4")
        np.save(os.path.join(d, key + ".npy"), x)
        seqs[key] = x
    return seqs


def close(a, b):
    if a.shape != b.shape:
        return False
    scale = max(1.0, float(np.max(np.abs(b))) if b.size else 1.0)
    return float(np.max(np.abs(a - b))) <= RTOL * scale if a.size else True


def reference(tmp, model, key, x, names):
    """Whole-sequence unroll of x (one batch row) with the offline command."""
    ref = os.path.join(tmp, "ref")
    os.makedirs(ref, exist_ok=True)
    xin = os.path.join(ref, key + ".x.npy")
    np.save(xin, x[:, None, :])
    args = [WORKER, "unroll", "--model", model, "--inputs", xin,
            "--outputs", os.path.join(ref, key + ".o.npy")]
    for n in names:
        args += ["--final-state", "%s=%s" % (n, os.path.join(ref, key + "." +
                                                             n.replace("/", "_") + ".npy"))]
    r = run(args)
    if r.returncode != 0:
        raise RuntimeError("unroll failed: " + r.stderr)
    out = np.load(os.path.join(ref, key + ".o.npy"))[:, 0, :]
    finals = {n: np.load(os.path.join(ref, key + "." + n.replace("/", "_") + ".npy"))[0]
              for n in names}
    return out, finals


def compare_outputs(tmp, model, out_dir, seqs, names, label):
    all_ok = True
    for key, x in seqs.items():
        path = os.path.join(out_dir, key + ".npy")
        if not os.path.exists(path):
            check(False, "%s: %s written" % (label, path))
            all_ok = False
            continue
        got = np.load(path)
        want, finals = reference(tmp, model, key, x, names)
        ok = got.dtype == np.float32 and close(got, want)
        for n in names:
            fp = os.path.join(out_dir, "%s.final.%s.npy" % (key, n.replace("/", "_")))
            ok = ok and os.path.exists(fp) and close(np.load(fp), finals[n])
        all_ok = all_ok and ok
        if not ok:
            check(False, "%s: %s matches the whole-sequence unroll" % (label, key))
    check(all_ok, "%s: outputs and final states of %d sequences match the "
          "whole-sequence unroll (rtol %g)" % (label, len(seqs), RTOL))


def submit(addr, saver, in_dir, out_dir, extra=()):
    return run([CLI, "--server", addr, "submit", saver, "--inputs", in_dir,
                "--num-unroll", str(NUM_UNROLL), "--outputs", out_dir, "--wait-ms", "500"]
               + list(extra))


def stats(addr):
    r = run([CLI, "--server", addr, "stats", "--json"])
    return json.loads(r.stdout) if r.returncode == 0 else {}


def test_pipeline(tmp, srv, model, saver, input_size, seed, label):
    w1 = worker(tmp, srv.addr, model, saver, label + "-1")
    w2 = worker(tmp, srv.addr, model, saver, label + "-2", ["--batch", "3"])
    in_dir = os.path.join(tmp, label + "-in")
    out_dir = os.path.join(tmp, label + "-out")
    seqs = make_inputs(in_dir, input_size, seed)
    check(wait_declared(srv.addr, saver), "%s: the workers declared %s" % (label, saver))
    r = submit(srv.addr, saver, in_dir, out_dir, ["--json"])
    check(r.returncode == 0, "%s: submit exits 0 (%s)" % (label, r.stderr.strip()[-300:]))
    try:
        summ = json.loads(r.stdout)
    except ValueError:
        summ = {}
    check(summ.get("sequences") == len(LENGTHS) and summ.get("steps") == sum(LENGTHS)
          and summ.get("failed") == 0 and summ.get("steps_per_sec", 0) > 0,
          "%s: --json summary counts every sequence and step: %s" % (label, r.stdout.strip()))
    check("ETA" in r.stderr and "\r" not in r.stderr,
          "%s: plain progress lines when stderr is not a terminal" % label)
    # State names of the model, from the final-state files written.
    names = sorted({f.split(".final.")[1][:-4] for f in os.listdir(out_dir) if ".final." in f})
    model_names = {"lstm": ["cell_0/c", "cell_0/h", "cell_1/c", "cell_1/h"],
                   "gru": ["cell_0/h", "cell_1/h"]}[label.split("-")[0]]
    check(names == sorted(n.replace("/", "_") for n in model_names),
          "%s: one final-state file per state name ('/' -> '_'): %s" % (label, names))
    compare_outputs(tmp, model, out_dir, seqs, model_names, label)
    return w1, w2


def main():
    for p in (SERVER, WORKER, CLI):
        if not os.access(p, os.X_OK):
            print("not built: " + p)
            return 1
    tmp = tempfile.mkdtemp(prefix="ss-jobs-e2e-")
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
    lstm = os.path.join(tmp, "lstm.safetensors")
    gru = os.path.join(tmp, "gru.safetensors")
    r1 = run([PY, MAKE_MODEL, lstm, "--cell", "lstm", "--input-size", "8",
              "--num-units", "32", "--num-layers", "2"])
    r2 = run([PY, MAKE_MODEL, gru, "--cell", "gru", "--input-size", "5",
              "--num-units", "16", "--num-layers", "2", "--seed", "11"])
    if not check(r1.returncode == 0 and r2.returncode == 0, "models generated"):
        print(r1.stderr, r2.stderr)
        return 1
    data = os.path.join(tmp, "data")
    srv = Server(tmp, data)

    workers = []
    workers += test_pipeline(tmp, srv, lstm, "lstm-saver", 8, 1, "lstm")
    workers += test_pipeline(tmp, srv, gru, "gru-saver", 5, 2, "gru")

    # Bad input files: exit 2 naming the file, nothing submitted.
    before = stats(srv.addr)
    bad = os.path.join(tmp, "bad-in")
    make_inputs(bad, 8, 3, [4, 5])
    np.save(os.path.join(bad, "zz-int.npy"), np.zeros((3, 8), dtype=np.int32))
    r = submit(srv.addr, "lstm-saver", bad, os.path.join(tmp, "bad-out"))
    check(r.returncode == 2 and "zz-int.npy" in r.stderr,
          "int32 input file: exit 2 naming it (%s)" % r.stderr.strip())
    os.remove(os.path.join(bad, "zz-int.npy"))
    np.save(os.path.join(bad, "zz-wide.npy"), np.zeros((3, 9), dtype=np.float32))
    r = submit(srv.addr, "lstm-saver", bad, os.path.join(tmp, "bad-out"))
    check(r.returncode == 2 and "zz-wide.npy" in r.stderr,
          "input_size differing between files: exit 2 naming the file (%s)" % r.stderr.strip())
    os.remove(os.path.join(bad, "zz-wide.npy"))
    with open(os.path.join(bad, "zz-junk.npy"), "wb") as f:
        f.write(b"not a numpy file at all")
    r = submit(srv.addr, "lstm-saver", bad, os.path.join(tmp, "bad-out"))
    check(r.returncode == 2 and "zz-junk.npy" in r.stderr,
          "malformed .npy: exit 2 naming it (%s)" % r.stderr.strip())
    np.save(os.path.join(bad, "zz-3d.npy"), np.zeros((3, 8, 1), dtype=np.float32))
    os.remove(os.path.join(bad, "zz-junk.npy"))
    r = submit(srv.addr, "lstm-saver", bad, os.path.join(tmp, "bad-out"))
    check(r.returncode == 2 and "zz-3d.npy" in r.stderr,
          "3-d input: exit 2 naming it (%s)" % r.stderr.strip())
    empty = os.path.join(tmp, "empty-in")
    os.makedirs(empty)
    r = submit(srv.addr, "lstm-saver", empty, os.path.join(tmp, "bad-out"))
    check(r.returncode == 2 and "no .npy" in r.stderr, "empty --inputs: exit 2")
    r = run([CLI, "--server", srv.addr, "submit", "lstm-saver", "--inputs", bad,
             "--outputs", os.path.join(tmp, "bad-out")])
    check(r.returncode == 2, "missing --num-unroll: exit 2")
    after = stats(srv.addr)
    check(before.get("requests") is not None and
          after.get("queued") == before.get("queued") == 0 and
          after.get("completed") == before.get("completed"),
          "bad inputs submitted nothing (queued %s, completed %s -> %s)" % (
              after.get("queued"), before.get("completed"), after.get("completed")))

    # Sequences the model cannot run: 5 columns to the 8-input LSTM saver.
    # Each attempt is completed with an error; after --max-attempts 2 the
    # segment fails; submit names the sequences with the reason, exit 1.
    wrong = os.path.join(tmp, "wrong-in")
    make_inputs(wrong, 5, 4, [3, 12])
    r = submit(srv.addr, "lstm-saver", wrong, os.path.join(tmp, "wrong-out"))
    check(r.returncode == 1 and "seq00-len3 failed" in r.stderr and
          "seq01-len12 failed" in r.stderr and "input_size 8" in r.stderr and
          "giving up" in r.stderr,
          "unrunnable sequences: exit 1 naming each with the worker's reason (%s)" %
          r.stderr.strip()[-600:])
    st = stats(srv.addr)
    check(st.get("failed", 0) >= 2, "server counted the failed segments (%s)" % st.get("failed"))

    # Schema conflict: the GRU model on the LSTM saver.
    wc = worker(tmp, srv.addr, gru, "lstm-saver", "conflict")
    try:
        wc.wait(20)
    except subprocess.TimeoutExpired:
        pass
    check(wc.returncode == 1 and "differs" in log_text(wc),
          "schema conflict: worker exits 1 with a clear message")

    # --max-batches: exits 0 after that many non-empty leases.
    stats_json = os.path.join(tmp, "maxb-stats.json")
    wm = worker(tmp, srv.addr, lstm, "maxb-saver", "maxb", ["--max-batches", "2", "--batch", "1",
                                                           "--stats-json", stats_json])
    mb_in = os.path.join(tmp, "maxb-in")
    make_inputs(mb_in, 8, 5, [3, 3])
    wait_declared(srv.addr, "maxb-saver")
    # The worker is alone on this saver; submit in the background.
    sub = subprocess.Popen([CLI, "--server", srv.addr, "submit", "maxb-saver", "--inputs",
                            mb_in, "--num-unroll", "4", "--outputs",
                            os.path.join(tmp, "maxb-out")],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    PROCS.append(sub)
    try:
        wm.wait(30)
        sub.wait(30)
    except subprocess.TimeoutExpired:
        pass
    check(wm.returncode == 0 and sub.returncode == 0,
          "--max-batches 2 with batch 1: worker exits 0 after both segments (%s, submit %s)"
          % (wm.returncode, sub.returncode))
    try:
        sj = json.load(open(stats_json))
    except (OSError, ValueError):
        sj = {}
    rt = sj.get("round_trip_ms", {})
    check(sj.get("batches") == 2 and sj.get("segments") == 2 and sj.get("samples") == 2 and
          sj.get("items_per_lease") == 1 and 0 < rt.get("p50", 0) <= rt.get("p99", 0) and
          all(k in sj for k in ("lease_ms", "compute_ms", "complete_ms")) and
          rt.get("p99", 0) >= sj["compute_ms"].get("p99", -1),
          "--stats-json: per-lease timings of the 2 leases at exit (%s)" % json.dumps(sj))

    # Server restart under the workers: they reconnect with backoff.
    port = srv.port
    rc = stop(srv.p)
    check(rc == 0, "server stops on SIGTERM")
    time.sleep(0.5)
    srv2 = Server(tmp, data, listen="127.0.0.1:%d" % port)
    in2 = os.path.join(tmp, "again-in")
    seqs2 = make_inputs(in2, 8, 6, [5, 17])
    r = submit(srv2.addr, "lstm-saver", in2, os.path.join(tmp, "again-out"))
    check(r.returncode == 0, "after a server restart the workers reconnect and serve (%s)"
          % r.stderr.strip()[-300:])
    compare_outputs(tmp, lstm, os.path.join(tmp, "again-out"), seqs2,
                    ["cell_0/c", "cell_0/h", "cell_1/c", "cell_1/h"], "restart")
    logs = "".join(log_text(w) for w in workers)
    check("reconnecting" in logs or "connecting to" in logs,
          "workers logged the lost connection")

    # Progress bar on a terminal.
    in3 = os.path.join(tmp, "tty-in")
    make_inputs(in3, 8, 7, [9, 30])
    master, slave = pty.openpty()
    p = subprocess.Popen([CLI, "--server", srv2.addr, "submit", "lstm-saver", "--inputs", in3,
                          "--num-unroll", "4", "--outputs", os.path.join(tmp, "tty-out")],
                         stdout=subprocess.DEVNULL, stderr=slave)
    PROCS.append(p)
    os.close(slave)
    chunks = []
    deadline = time.monotonic() + CMD_TIMEOUT
    while time.monotonic() < deadline:
        try:
            b = os.read(master, 4096)
        except OSError:
            break
        if not b:
            break
        chunks.append(b)
    os.close(master)
    p.wait(CMD_TIMEOUT)
    text = b"".join(chunks).decode(errors="replace")
    check(p.returncode == 0 and "\r" in text and "[" in text and "#" in text and
          "ETA" in text and "/s" in text,
          "terminal: a progress bar with rate and ETA (%r)" % text[-160:])

    # SIGTERM: every worker finishes and exits 0.
    codes = [stop(w) for w in workers]
    check(codes == [0] * len(workers), "workers exit 0 on SIGTERM (%s)" % codes)
    check(stop(srv2.p) == 0, "server exits 0")

    print("%d failure(s)" % len(FAILURES))
    return 1 if FAILURES else 0


if __name__ == "__main__":
    sys.exit(main())
