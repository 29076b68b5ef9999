#!/usr/bin/python3
"""test_fault -- the job pipeline under faults, on the real binaries.

Four scenarios, each on its own statesaver-server (--sync on, real LMDB in
a temporary directory), real `statesaver-worker serve` processes and the
real `statesaver submit`; results are always compared with ONE offline
`statesaver-worker unroll` over the whole sequences:

  worker-kill  A worker is frozen (SIGSTOP) while the server reports its
               lease live, then killed with SIGKILL. Its segments come back
               after the lease deadline (1 s), a new worker runs them; the
               results are identical and the server's counters show every
               segment's state applied exactly once (saves_applied ==
               completed == segments, expired_leases >= 1, failed == 0).
  server-kill  The server is killed with SIGKILL twice during a run (once
               while submit is still submitting, once while it is awaiting)
               and restarted on the same data directory and port. Workers
               and submit reconnect; nothing submitted or committed is lost
               and the results are identical.
  collect-kill The server is killed with SIGKILL again and again (every
               0.2-0.6 s, up to 6 times) while submit is awaiting and
               collecting, and restarted each time. submit awaits without
               collecting and collects a sequence only after writing its
               files, so no kill can lose a result: no sequence is
               reported failed and every result is identical.
  poison       Two submits share one saver and its workers: one sequence
               whose inputs the model cannot run (5 columns for an 8-input
               LSTM) and 16 good ones. The bad segment is completed with an
               error at every attempt, reaches --max-attempts 3 and is
               reported failed (submit exit 1 naming it); the good sequences
               finish with identical results (exit 0).

Needs numpy (not torch). Every wait is bounded; every process started is
killed at the end.
"""
import json
import os
import shutil
import signal
import socket
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
SMALL_MODEL = os.path.join(SOURCE_ROOT, "models", "small-lstm.safetensors")
PY = "/usr/bin/python3"

RTOL = 1e-5        # relative to the largest magnitude of the offline result
CMD_TIMEOUT = 120  # seconds for any one command

FAILURES = []
PROCS = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        FAILURES.append(what)
    return cond


def start(args, log_path, **kw):
    log = open(log_path, "ab")
    p = subprocess.Popen(args, stdout=kw.pop("stdout", log), stderr=log, **kw)
    p.log_path = log_path
    PROCS.append(p)
    return p


def log_text(path):
    try:
        with open(path, "rb") as f:
            return f.read().decode(errors="replace")
    except FileNotFoundError:
        return ""


def stop(p, sig=signal.SIGTERM, timeout=15):
    if p.poll() is None:
        p.send_signal(sig)
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    return p.returncode


def run(args, timeout=CMD_TIMEOUT):
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout)


def free_port():
    """A port that is free now (the server must come back on the same one)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def start_server(tmp, data, port, extra=()):
    """Start the server on 127.0.0.1:port and wait until it listens. A
    restart must come back on the same port; while the server was down a
    client's outgoing connection may have been given that port as its
    local one, so "address already in use" is retried for a few seconds."""
    log_path = os.path.join(tmp, "server.log")
    deadline = time.monotonic() + 20
    while True:
        port_file = os.path.join(tmp, "port-%d" % time.monotonic_ns())
        before = len(log_text(log_path))
        p = start([SERVER, "--listen", "127.0.0.1:%d" % port, "--data", data, "--sync", "on",
                   "--port-file", port_file, "--log-level", "warn"] + list(extra), log_path)
        while time.monotonic() < deadline and p.poll() is None:
            if os.path.exists(port_file) and open(port_file).read().strip():
                return p
            time.sleep(0.02)
        if (p.poll() is None or time.monotonic() >= deadline or
                "address already in use" not in log_text(log_path)[before:]):
            raise RuntimeError("server did not start: " + log_text(log_path)[-2000:])
        time.sleep(0.2)


def worker(tmp, addr, model, saver, name, extra=()):
    return start([WORKER, "serve", "--server", addr, "--model", model, "--saver", saver,
                  "--wait-ms", "200", "--threads", "1", "--log-every", "1000000"]
                 + list(extra), os.path.join(tmp, "worker-%s.log" % name))


def stats(addr):
    r = run([CLI, "--server", addr, "--timeout-ms", "2000", "stats", "--json"], timeout=10)
    try:
        return json.loads(r.stdout) if r.returncode == 0 else {}
    except ValueError:
        return {}


def wait_for(pred, timeout, step=0.01):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(step)
    return None


def wait_declared(addr, saver, timeout=20):
    def declared():
        r = run([CLI, "--server", addr, "ls"], timeout=10)
        return r.returncode == 0 and any(l.split()[:1] == [saver] for l in r.stdout.splitlines())
    return wait_for(declared, timeout, 0.05)


def make_inputs(d, lengths, input_size, seed, prefix="seq"):
    os.makedirs(d, exist_ok=True)
    rng = np.random.default_rng(seed)
    seqs = {}
    for i, n in enumerate(lengths):
        key = "%s%03d" % (prefix, i)
        x = rng.standard_normal((int(n), input_size)).astype("<f4")
        np.save(os.path.join(d, key + ".npy"), x)
        seqs[key] = x
    return seqs


def state_names(model):
    with open(model, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        meta = json.loads(f.read(n))["__metadata__"]
    return meta["state_names"].split(",")


def compare(tmp, model, out_dir, seqs, label):
    """One offline unroll over all whole sequences; compare every file."""
    names = state_names(model)
    keys = sorted(seqs)
    lengths = np.array([len(seqs[k]) for k in keys], dtype=np.int32)
    X = np.zeros((int(lengths.max()), len(keys), seqs[keys[0]].shape[1]), dtype=np.float32)
    for b, k in enumerate(keys):
        X[:lengths[b], b] = seqs[k]
    ref = os.path.join(tmp, "ref-" + label)
    os.makedirs(ref)
    np.save(os.path.join(ref, "X.npy"), X)
    np.save(os.path.join(ref, "L.npy"), lengths)
    args = [WORKER, "unroll", "--model", model, "--inputs", os.path.join(ref, "X.npy"),
            "--lengths", os.path.join(ref, "L.npy"), "--outputs", os.path.join(ref, "Y.npy"),
            "--threads", "1"]
    for n in names:
        args += ["--final-state", "%s=%s" % (n, os.path.join(ref, n.replace("/", "_") + ".npy"))]
    r = run(args)
    if not check(r.returncode == 0, "%s: offline unroll ran (%s)" % (label, r.stderr.strip())):
        return
    Y = np.load(os.path.join(ref, "Y.npy"))
    F = {n: np.load(os.path.join(ref, n.replace("/", "_") + ".npy")) for n in names}
    worst, bad = 0.0, []
    for b, k in enumerate(keys):
        pairs = [(os.path.join(out_dir, k + ".npy"), Y[:lengths[b], b])]
        pairs += [(os.path.join(out_dir, "%s.final.%s.npy" % (k, n.replace("/", "_"))), F[n][b])
                  for n in names]
        for path, want in pairs:
            if not os.path.exists(path):
                bad.append(k + " (missing " + os.path.basename(path) + ")")
                break
            got = np.load(path)
            if got.shape != want.shape or got.dtype != np.float32:
                bad.append("%s (%s %s)" % (k, got.dtype, got.shape))
                break
            d = float(np.max(np.abs(got.astype(np.float64) - want))) / max(
                float(np.max(np.abs(want))), 1e-30)
            worst = max(worst, d)
            if d > RTOL:
                bad.append("%s (%s: %.3g)" % (k, os.path.basename(path), d))
    check(not bad, "%s: outputs and final states of %d sequences equal one offline unroll "
          "(worst relative difference %.3g)%s" % (label, len(keys), worst,
                                                  ": " + ", ".join(bad[:5]) if bad else ""))


def segments(seqs, T):
    return sum((len(x) + T - 1) // T for x in seqs.values())


def submit_cmd(addr, saver, in_dir, out_dir, T, extra=()):
    return [CLI, "--server", addr, "submit", saver, "--inputs", in_dir, "--num-unroll",
            str(T), "--outputs", out_dir, "--wait-ms", "500", "--json"] + list(extra)


def summary(path):
    try:
        return json.loads(open(path).read().strip().splitlines()[-1])
    except (ValueError, IndexError, FileNotFoundError):
        return {}


# ---- scenario 1: a worker killed while holding a lease ----------------------

def kill_children():
    """Kill and reap every child still running."""
    for p in PROCS:
        if p.poll() is None:
            p.kill()
            p.wait()


def run_scenarios(prefix, scenarios, only=()):
    """Run (name, fn(tmp)) scenarios (those named in `only`, or all) in one
    temp dir: an exception is a failure, children are killed after each,
    the logs under tmp are printed when anything failed. Returns the exit
    status (1 when the server is not built or any check failed)."""
    if not os.access(SERVER, os.X_OK):
        print("not built: " + SERVER)
        return 1
    tmp = tempfile.mkdtemp(prefix=prefix)
    try:
        for name, fn in scenarios:
            if only and name not in only:
                continue
            t0 = time.monotonic()
            try:
                fn(tmp)
            except Exception as e:
                check(False, "%s: raised %r" % (name, e))
            print("---- %s: %.1f s" % (name, time.monotonic() - t0), flush=True)
            kill_children()
    finally:
        kill_children()
        if FAILURES:
            for root, _, files in os.walk(tmp):
                for f in sorted(files):
                    if f.endswith(".log"):
                        print("---- %s/%s" % (os.path.basename(root), f))
                        print(log_text(os.path.join(root, f))[-3000:])
        shutil.rmtree(tmp, ignore_errors=True)
    # The failed checks again, last: a CI log often keeps only the tail.
    for what in FAILURES:
        print("FAIL " + what[:2000])
    print("%d failure(s)" % len(FAILURES))
    return 1 if FAILURES else 0


def test_worker_kill(tmp):
    label = "worker-kill"
    d = os.path.join(tmp, label)
    os.makedirs(d)
    # A model big enough that one lease takes a visible time to compute.
    model = os.path.join(d, "model.safetensors")
    r = run([PY, MAKE_MODEL, model, "--cell", "lstm", "--input-size", "32",
             "--num-units", "256", "--num-layers", "1", "--seed", "3"])
    if not check(r.returncode == 0, "%s: model generated (%s)" % (label, r.stderr.strip())):
        return
    T = 100
    seqs = make_inputs(os.path.join(d, "in"), np.random.default_rng(1).integers(150, 420, 32),
                       32, 2)
    n_segs = segments(seqs, T)
    port = free_port()
    addr = "127.0.0.1:%d" % port
    srv = start_server(d, os.path.join(d, "data"), port)
    # Declare the schema the workers will declare (same names, sizes, ttl),
    # so everything is queued before the first worker leases.
    r = run([CLI, "--server", addr, "declare", "faulty", "--state", "cell_0/c:float32:256",
             "--state", "cell_0/h:float32:256"])
    check(r.returncode == 0, "%s: saver declared (%s)" % (label, r.stderr.strip()))
    sub = start(submit_cmd(addr, "faulty", os.path.join(d, "in"), os.path.join(d, "out"), T),
                os.path.join(d, "submit.log"), stdout=open(os.path.join(d, "submit.json"), "wb"))
    check(bool(wait_for(lambda: "[await]" in log_text(sub.log_path), 30)),
          "%s: %d segments submitted" % (label, n_segs))
    # The first worker asks for 1 s leases; it gets every sequence's segment 0.
    w1 = worker(d, addr, model, "faulty", "1", ["--batch", "64", "--lease-ms", "1000"])
    # Freeze it while it holds a lease: it cannot complete that lease any
    # more. On a loaded machine it may complete a lease between the poll
    # and the SIGSTOP; then it is thawed and frozen again on its next one.
    held = {}
    for _ in range(20):
        st = wait_for(lambda: (lambda s: s if s.get("leased", 0) > 0 else None)(stats(addr)),
                      30)
        w1.send_signal(signal.SIGSTOP)
        held = stats(addr)
        if st is None or held.get("leased", 0) > 0:
            break
        w1.send_signal(signal.SIGCONT)
    check(held.get("leased", 0) > 0,
          "%s: worker 1 holds a lease of %s segments when it is frozen (completed %s)" %
          (label, held.get("leased"), held.get("completed")))
    w1.send_signal(signal.SIGKILL)
    w1.wait(10)
    t_kill = time.monotonic()
    check(w1.returncode == -signal.SIGKILL, "%s: worker 1 killed with SIGKILL" % label)
    # A new worker: it finds nothing ready until the dead worker's lease expires.
    w2 = worker(d, addr, model, "faulty", "2", ["--batch", "64"])
    exp = wait_for(lambda: (lambda s: s if s.get("expired_leases", 0) >= 1 else None)(
        stats(addr)), 20)
    t_exp = time.monotonic()
    check(exp is not None, "%s: the dead worker's lease expired (%.1f s after the kill)" %
          (label, t_exp - t_kill))
    try:
        sub.wait(CMD_TIMEOUT)
    except subprocess.TimeoutExpired:
        pass
    s = summary(os.path.join(d, "submit.json"))
    check(sub.returncode == 0 and s.get("failed") == 0 and s.get("segments") == n_segs,
          "%s: submit finished with every sequence (%s, %s)" %
          (label, sub.returncode, log_text(sub.log_path).strip()[-300:]))
    compare(d, model, os.path.join(d, "out"), seqs, label)
    final = stats(addr)
    check(final.get("completed") == n_segs and final.get("saves_applied") == n_segs and
          final.get("failed") == 0 and final.get("expired_leases", 0) >= 1 and
          final.get("queued") == 0 and final.get("leased") == 0,
          "%s: each segment's state applied exactly once: %d segments, completed %s, "
          "saves_applied %s, expired_leases %s, failed %s" %
          (label, n_segs, final.get("completed"), final.get("saves_applied"),
           final.get("expired_leases"), final.get("failed")))
    check(stop(w2) == 0 and stop(srv) == 0, "%s: worker 2 and server stop cleanly" % label)


# ---- scenario 2: the server killed and restarted mid-run ---------------------

def test_server_kill(tmp):
    label = "server-kill"
    d = os.path.join(tmp, label)
    os.makedirs(d)
    T = 16
    seqs = make_inputs(os.path.join(d, "in"),
                       np.random.default_rng(5).integers(1000, 6000, 48), 8, 6)
    n_segs = segments(seqs, T)
    port = free_port()
    addr = "127.0.0.1:%d" % port
    data = os.path.join(d, "data")
    srv = start_server(d, data, port)
    workers = [worker(d, addr, SMALL_MODEL, "crash", str(i), ["--batch", "32"])
               for i in (1, 2)]
    check(bool(wait_declared(addr, "crash")), "%s: the workers declared the saver" % label)
    sub = start(submit_cmd(addr, "crash", os.path.join(d, "in"), os.path.join(d, "out"), T),
                os.path.join(d, "submit.log"), stdout=open(os.path.join(d, "submit.json"), "wb"))
    # Kill 1: while submit is still submitting (some segments acknowledged).
    got = wait_for(lambda: "segments queued" in log_text(sub.log_path) or
                   "[await]" in log_text(sub.log_path), 30)
    time.sleep(0.3)
    phase1 = "[await]" not in log_text(sub.log_path)
    srv.send_signal(signal.SIGKILL)
    srv.wait(10)
    check(got is not None and srv.returncode == -signal.SIGKILL,
          "%s: server killed with SIGKILL %s" %
          (label, "while submit was submitting" if phase1 else "(submit already awaiting)"))
    time.sleep(0.5)
    srv = start_server(d, data, port)
    # Kill 2: while submit is awaiting, after some segments completed again.
    got = wait_for(lambda: "[await]" in log_text(sub.log_path) and
                   stats(addr).get("completed", 0) >= 200, 60, 0.05)
    srv.send_signal(signal.SIGKILL)
    srv.wait(10)
    check(got is not None and sub.poll() is None,
          "%s: server killed with SIGKILL again while submit was awaiting" % label)
    time.sleep(1.0)
    srv = start_server(d, data, port)
    try:
        sub.wait(CMD_TIMEOUT)
    except subprocess.TimeoutExpired:
        pass
    slog = log_text(sub.log_path)
    s = summary(os.path.join(d, "submit.json"))
    check(sub.returncode == 0 and s.get("failed") == 0 and s.get("segments") == n_segs and
          s.get("steps") == sum(len(x) for x in seqs.values()),
          "%s: submit finished every sequence after two server crashes (exit %s, %s)" %
          (label, sub.returncode, json.dumps(s)))
    check(slog.count("reconnected to") >= 2,
          "%s: submit reconnected after each crash (%d times)" %
          (label, slog.count("reconnected to")))
    compare(d, SMALL_MODEL, os.path.join(d, "out"), seqs, label)
    final = stats(addr)
    check(final.get("queued") == 0 and final.get("leased") == 0 and final.get("failed") == 0,
          "%s: nothing left queued or failed on the server (%s)" % (label, final))
    wlogs = "".join(log_text(w.log_path) for w in workers)
    check("reconnecting" in wlogs, "%s: the workers reconnected" % label)
    codes = [stop(w) for w in workers]
    check(codes == [0, 0] and stop(srv) == 0,
          "%s: workers and server stop cleanly (%s)" % (label, codes))


# ---- scenario 3: the server killed repeatedly while results are collected ----

def test_collect_kill(tmp):
    label = "collect-kill"
    d = os.path.join(tmp, label)
    os.makedirs(d)
    T = 16
    # Lengths spread widely, so sequences finish (and are collected) all
    # through the await phase rather than together at the end.
    seqs = make_inputs(os.path.join(d, "in"),
                       np.random.default_rng(11).integers(40, 2400, 96), 8, 12)
    n_segs = segments(seqs, T)
    port = free_port()
    addr = "127.0.0.1:%d" % port
    data = os.path.join(d, "data")
    srv = start_server(d, data, port)
    # The schema the workers declare, so everything is queued before they
    # start; small leases keep the await phase long enough for the kills.
    r = run([CLI, "--server", addr, "declare", "acks"] +
            sum([["--state", "%s:float32:32" % n] for n in state_names(SMALL_MODEL)], []))
    check(r.returncode == 0, "%s: saver declared (%s)" % (label, r.stderr.strip()))
    sub = start(submit_cmd(addr, "acks", os.path.join(d, "in"), os.path.join(d, "out"), T,
                           ["--window", "16"]),
                os.path.join(d, "submit.log"), stdout=open(os.path.join(d, "submit.json"), "wb"))
    check(bool(wait_for(lambda: "[await]" in log_text(sub.log_path), 60)),
          "%s: submit is awaiting" % label)
    workers = [worker(d, addr, SMALL_MODEL, "acks", str(i), ["--batch", "4"])
               for i in (1, 2)]
    out = os.path.join(d, "out")

    def written():
        try:
            return len([f for f in os.listdir(out)
                        if f.endswith(".npy") and ".final." not in f and not f.startswith(".")])
        except FileNotFoundError:
            return 0

    # Kill at progress milestones (1/8 .. 6/8 of the sequences written), not
    # after fixed sleeps: on a quiet machine the workers can finish the
    # whole run between two timed kills. The long sequences finish last,
    # so every milestone falls inside the collect phase.
    kills = 0
    for k in range(1, 7):
        target = len(seqs) * k // 8
        wait_for(lambda: sub.poll() is not None or written() >= target, 60, 0.005)
        if sub.poll() is not None:
            break
        srv.send_signal(signal.SIGKILL)
        srv.wait(10)
        kills += 1
        time.sleep(0.2)
        srv = start_server(d, data, port)
    n_written = written()
    check(kills >= 6, "%s: server killed with SIGKILL %d times while submit was awaiting "
          "and collecting (%d of %d sequences written by then)" %
          (label, kills, n_written, len(seqs)))
    try:
        sub.wait(CMD_TIMEOUT)
    except subprocess.TimeoutExpired:
        pass
    slog = log_text(sub.log_path)
    s = summary(os.path.join(d, "submit.json"))
    check(sub.returncode == 0 and s.get("failed") == 0 and s.get("segments") == n_segs and
          s.get("steps") == sum(len(x) for x in seqs.values()),
          "%s: no sequence reported failed after %d server crashes (exit %s, %s)" %
          (label, kills, sub.returncode, json.dumps(s)))
    check("failed" not in slog and "collecting" not in slog,
          "%s: submit reported no failed sequence and no collect error" % label)
    check(slog.count("reconnected to") >= min(kills, 1),
          "%s: submit reconnected (%d times)" % (label, slog.count("reconnected to")))
    compare(d, SMALL_MODEL, os.path.join(d, "out"), seqs, label)
    final = stats(addr)
    check(final.get("queued") == 0 and final.get("leased") == 0 and final.get("failed") == 0,
          "%s: nothing left queued or failed on the server (%s)" % (label, final))
    codes = [stop(w) for w in workers]
    check(codes == [0, 0] and stop(srv) == 0,
          "%s: workers and server stop cleanly (%s)" % (label, codes))


# ---- scenario 4: a poison segment ------------------------------------------

def test_poison(tmp):
    label = "poison"
    d = os.path.join(tmp, label)
    os.makedirs(d)
    T = 20
    good = make_inputs(os.path.join(d, "good"), np.random.default_rng(8).integers(30, 400, 16),
                       8, 9)
    bad = make_inputs(os.path.join(d, "bad"), [50], 5, 10, prefix="poison")
    n_good = segments(good, T)
    n_bad = segments(bad, T)
    port = free_port()
    addr = "127.0.0.1:%d" % port
    srv = start_server(d, os.path.join(d, "data"), port, ["--max-attempts", "3"])
    workers = [worker(d, addr, SMALL_MODEL, "mixed", str(i), ["--batch", "64"])
               for i in (1, 2)]
    check(bool(wait_declared(addr, "mixed")), "%s: the workers declared the saver" % label)
    sb = start(submit_cmd(addr, "mixed", os.path.join(d, "bad"), os.path.join(d, "bad-out"), T),
               os.path.join(d, "submit-bad.log"),
               stdout=open(os.path.join(d, "submit-bad.json"), "wb"))
    sg = start(submit_cmd(addr, "mixed", os.path.join(d, "good"), os.path.join(d, "out"), T),
               os.path.join(d, "submit-good.log"),
               stdout=open(os.path.join(d, "submit-good.json"), "wb"))
    for p in (sb, sg):
        try:
            p.wait(CMD_TIMEOUT)
        except subprocess.TimeoutExpired:
            pass
    blog = log_text(sb.log_path)
    check(sb.returncode == 1 and "sequence poison000 failed" in blog and
          "inputs have 5 columns" in blog and "attempt 3 of 3" in blog,
          "%s: the poison sequence is reported failed after 3 attempts, exit 1 (%s)" %
          (label, blog.strip()[-400:]))
    check(not os.path.exists(os.path.join(d, "bad-out", "poison000.npy")),
          "%s: no output file for the failed sequence" % label)
    s = summary(os.path.join(d, "submit-good.json"))
    check(sg.returncode == 0 and s.get("failed") == 0 and s.get("sequences") == len(good),
          "%s: the %d good sequences on the same saver and workers finish (exit %s)" %
          (label, len(good), sg.returncode))
    compare(d, SMALL_MODEL, os.path.join(d, "out"), good, label)
    st = stats(addr)
    check(st.get("failed") == n_bad and st.get("completed") == n_good and
          st.get("saves_applied") == n_good and st.get("queued") == 0,
          "%s: server counters: failed %s (want %d: the segment and the ones after it), "
          "completed %s, saves_applied %s (want %d)" %
          (label, st.get("failed"), n_bad, st.get("completed"), st.get("saves_applied"), n_good))
    wlogs = "".join(log_text(w.log_path) for w in workers)
    check(wlogs.count("inputs have 5 columns") >= 3,
          "%s: workers completed the poison item with an error at each attempt" % label)
    codes = [stop(w) for w in workers]
    check(codes == [0, 0] and stop(srv) == 0, "%s: workers and server stop cleanly" % label)


def main():
    for p in (SERVER, WORKER, CLI):
        if not os.access(p, os.X_OK):
            print("not built: " + p)
            return 1
    return run_scenarios("ss-fault-", (("worker-kill", test_worker_kill),
                                       ("server-kill", test_server_kill),
                                       ("collect-kill", test_collect_kill),
                                       ("poison", test_poison)), sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
