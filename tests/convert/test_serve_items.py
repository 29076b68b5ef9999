#!/usr/bin/python3
"""test_serve_items -- `statesaver-worker serve` on a lease that mixes a
segment without an `inputs` tensor (a trainer's segment with named
sequences only, legal since issue 10) with normal segments, through a real
server (no torch).

For an embedding model (token ids) and for a float32 model:
  - the segments are submitted before the worker starts, so its first lease
    holds [good, sequences-only, good] (the log names item 1 of a lease);
  - the sequences-only segment FAILS, as the submitter sees it, with the
    worker's reason (no `inputs` tensor, named sequences only, the model
    reads `inputs`) after the server's --max-attempts tries;
  - the good segments' outputs and final states equal
    `statesaver-worker unroll` over the whole sequence (1e-5);
  - the worker keeps serving (a sequence submitted afterwards is served),
    no Lease call failed (the lease used to be refused whole as "item N is
    malformed"), and its --stats-json counts exactly the failed attempts.
"""
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "python"))
import harness  # noqa: E402

sys.argv = harness.setup_path(sys.argv)
import statesaver  # noqa: E402
from statesaver import _pb  # noqa: E402
from statesaver import training as tr  # noqa: E402

pb = _pb.pb
FAILURES = []
EMB_MODEL = os.path.join(harness.SOURCE_ROOT, "tests", "worker", "golden_io",
                         "emb_lstm_softmax", "model.safetensors")
EMB_NAMES = ["cell_0/c", "cell_0/h", "cell_1/c", "cell_1/h"]
EMB_SIZES = [9, 9, 6, 6]
VOCAB = 11
FL_NAMES = ["cell_0/c", "cell_0/h"]
FL_SIZES = [5, 5]
FL_INPUT = 3
NUM_UNROLL = 4
MAX_ATTEMPTS = 2
TIMEOUT = 60


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        FAILURES.append(what)
    return cond


def submit_plain(c, saver, key, x):
    """Segments of NUM_UNROLL rows of x (token ids [T] or float32 [T, I])
    in Submit's inputs field, the last padded with zeros."""
    n = -(-len(x) // NUM_UNROLL)
    for s in range(n):
        chunk = np.asarray(x[s * NUM_UNROLL:(s + 1) * NUM_UNROLL])
        length = len(chunk)
        pad = np.zeros((NUM_UNROLL - length,) + chunk.shape[1:], chunk.dtype)
        c.call("submit", pb.SubmitRequest(saver=saver, key=key.encode(), segment=s,
                                          inputs=statesaver.to_tensor(np.concatenate([chunk, pad])),
                                          length=length, last=s == n - 1))
    return n


def reference(model, names, x):
    """unroll over the whole sequence (B = 1): outputs [T, O], finals."""
    with tempfile.TemporaryDirectory() as d:
        x = np.asarray(x)
        arr = x.reshape(-1, 1) if x.ndim == 1 else x.reshape(x.shape[0], 1, x.shape[1])
        np.save(os.path.join(d, "x.npy"), arr)
        cmd = [harness.WORKER, "unroll", "--model", model, "--inputs", os.path.join(d, "x.npy"),
               "--outputs", os.path.join(d, "o.npy")]
        for i, n in enumerate(names):
            cmd += ["--final-state", "%s=%s" % (n, os.path.join(d, "f%d.npy" % i))]
        subprocess.run(cmd, check=True, capture_output=True, timeout=TIMEOUT)
        return (np.load(os.path.join(d, "o.npy"))[:, 0],
                {n: np.load(os.path.join(d, "f%d.npy" % i))[0] for i, n in enumerate(names)})


def rel(a, b):
    return float(np.max(np.abs(np.asarray(a, np.float64) - b) / np.maximum(1.0, np.abs(b))))


def await_seq(c, saver, key, n, w):
    """await_sequence, giving up early when the worker has exited."""
    deadline = time.monotonic() + TIMEOUT
    while True:
        try:
            return c.await_sequence(saver, key, n, timeout=2, collect=False)
        except statesaver.DeadlineExceeded:
            if w.poll() is not None:
                raise statesaver.DeadlineExceeded("%s: the worker exited (%s)" %
                                                  (key, w.returncode))
            if time.monotonic() > deadline:
                raise


def start_worker(srv, model, saver, tmp):
    log = open(os.path.join(tmp, "worker-%s.log" % saver), "wb")
    stats = os.path.join(tmp, "stats-%s.json" % saver)
    p = subprocess.Popen([harness.WORKER, "serve", "--server", srv.address, "--model", model,
                          "--saver", saver, "--batch", "4", "--lease-ms", "3000",
                          "--stats-json", stats], stdout=log, stderr=subprocess.STDOUT)
    p.log_path, p.stats_path = log.name, stats
    log.close()
    return p


def stop_worker(p):
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(15)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)
    with open(p.log_path, "rb") as f:
        return p.returncode, f.read().decode(errors="replace")


def scenario(srv, tmp, saver, model, names, sizes, good):
    """good: key -> inputs (ids [T] or float32 [T, I]); the sequences-only
    segment is submitted between the first and the second of them."""
    print("-- saver %s, model %s" % (saver, os.path.basename(model)), flush=True)
    c = statesaver.Client(srv.address, timeout=30)
    c.declare(saver, [(n, (s,)) for n, s in zip(names, sizes)])
    keys = list(good)
    nseg = {keys[0]: submit_plain(c, saver, keys[0], good[keys[0]])}
    # A trainer's segment: named sequences only, no inputs.
    tr.submit_sequences(c, saver, ["seqonly"],
                        {"targets": [np.arange(NUM_UNROLL, dtype=np.int64) % VOCAB],
                         "weights": [np.ones(NUM_UNROLL, np.float32)]},
                        num_unroll=NUM_UNROLL)
    for k in keys[1:]:
        nseg[k] = submit_plain(c, saver, k, good[k])
    w = start_worker(srv, model, saver, tmp)
    try:
        for k in keys:
            try:
                out, finals = await_seq(c, saver, k, nseg[k], w)
            except statesaver.StatesaverError as e:
                check(False, "%s: good sequence %s served (%s: %s)" % (saver, k,
                                                                      type(e).__name__, e))
                continue
            want_y, want_s = reference(model, names, good[k])
            worst = max([rel(out, want_y)] + [rel(finals[n].reshape(-1), want_s[n])
                                              for n in names])
            check(out.shape == want_y.shape and worst <= 1e-5,
                  "%s: %s (in the lease with the sequences-only segment) equals unroll "
                  "(worst %.3g)" % (saver, k, worst))
        try:
            await_seq(c, saver, "seqonly", 1, w)
            check(False, "%s: the sequences-only segment fails" % saver)
        except statesaver.SegmentFailed as e:
            msg = str(e)
            check("no `inputs` tensor" in msg and "named sequences only" in msg and
                  os.path.basename(model) in msg and "reads `inputs`" in msg,
                  "%s: sequences-only segment FAILED with the worker's reason (%s)"
                  % (saver, msg))
        except statesaver.StatesaverError as e:
            check(False, "%s: the sequences-only segment fails with a reason (%s: %s)"
                  % (saver, type(e).__name__, e))
        check(w.poll() is None, "%s: the worker is still running" % saver)
        after = good[keys[-1]][:3]
        n = submit_plain(c, saver, "after", after)
        try:
            out, _ = await_seq(c, saver, "after", n, w)
            check(rel(out, reference(model, names, after)[0]) <= 1e-5,
                  "%s: a sequence submitted afterwards is served" % saver)
        except statesaver.StatesaverError as e:
            check(False, "%s: a sequence submitted afterwards is served (%s)" % (saver, e))
    finally:
        rc, log = stop_worker(w)
        c.close()
    check(rc == 0, "%s: the worker exits 0 on SIGTERM (%s)" % (saver, rc))
    check("malformed" not in log and "serve: lease from" not in log,
          "%s: no Lease call failed (log: %s)" % (saver, log.strip().splitlines()[-1:]))
    check("item 1: segment has no `inputs` tensor" in log,
          "%s: the worker's first lease held the sequences-only segment among others "
          "(item 1)" % saver)
    try:
        with open(w.stats_path) as f:
            st = json.load(f)
        check(st["failed_items"] == MAX_ATTEMPTS,
              "%s: --stats-json counts %d failed items, one per attempt (%s)"
              % (saver, MAX_ATTEMPTS, st["failed_items"]))
        want_segs = sum(nseg.values()) + n + MAX_ATTEMPTS
        check(st["segments"] == want_segs, "%s: --stats-json counts %d segments (%s)"
              % (saver, want_segs, st["segments"]))
    except (OSError, ValueError, KeyError) as e:
        check(False, "%s: --stats-json readable (%s)" % (saver, e))
    if FAILURES:
        print(log[-3000:])


def main():
    srv = harness.Server(extra=["--max-attempts", str(MAX_ATTEMPTS), "--lease-ms", "3000"])
    tmp = tempfile.mkdtemp(prefix="ss-serve-items-")
    try:
        rng = np.random.default_rng(5)
        scenario(srv, tmp, "emb", EMB_MODEL, EMB_NAMES, EMB_SIZES,
                 {"g1": rng.integers(0, VOCAB, 6).astype(np.int64),
                  "g2": rng.integers(0, VOCAB, 3).astype(np.int32)})
        fl_model = os.path.join(tmp, "fl.safetensors")
        subprocess.run([sys.executable, harness.MAKE_MODEL, fl_model, "--cell", "lstm",
                        "--input-size", str(FL_INPUT), "--num-units", str(FL_SIZES[0]),
                        "--num-layers", "1", "--seed", "3"], check=True, capture_output=True,
                       timeout=TIMEOUT)
        scenario(srv, tmp, "fl", fl_model, FL_NAMES, FL_SIZES,
                 {"f1": rng.standard_normal((7, FL_INPUT)).astype(np.float32),
                  "f2": rng.standard_normal((4, FL_INPUT)).astype(np.float32)})
    finally:
        srv.cleanup()
    if FAILURES:
        print("%d failure(s):" % len(FAILURES))
        for f in FAILURES:
            print("  " + f)
        return 1
    print("all passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
