#!/usr/bin/python3
"""test_serve_models -- `statesaver-worker serve` with an embedding, per-
layer sizes and a head, end to end through a real server (no torch).

  - An embedding + 2-layer LSTM (sizes 9 and 6) + log_softmax head
    (tests/worker/golden_io/emb_lstm_softmax's model file): token-id
    sequences (int64 and int32 [T]) submitted in segments, served, awaited;
    outputs and final states equal `statesaver-worker unroll` over the
    whole sequence within 1e-5.
  - A token id outside [0, vocab): that segment FAILS with a reason naming
    the id (after the server's attempts), the worker stays up and a good
    sequence submitted afterwards is served.
  - A saver declared beforehand with the model's names and shapes but its
    own initial values and keep_final: the worker serves it (it used to
    exit with a schema conflict), and the initial values are used.
  - A saver whose state shapes differ: the worker exits 1 naming the state.
"""
import os
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

pb = _pb.pb
FAILURES = []
MODEL = os.path.join(harness.SOURCE_ROOT, "tests", "worker", "golden_io", "emb_lstm_softmax",
                     "model.safetensors")
VOCAB, OUT = 11, 7
NAMES = ["cell_0/c", "cell_0/h", "cell_1/c", "cell_1/h"]
SIZES = [9, 9, 6, 6]
NUM_UNROLL = 4


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        FAILURES.append(what)
    return cond


def submit_ids(c, saver, key, ids, dtype):
    """Segments of NUM_UNROLL token ids [T] (the last padded)."""
    n = -(-len(ids) // NUM_UNROLL)
    for s in range(n):
        chunk = np.asarray(ids[s * NUM_UNROLL:(s + 1) * NUM_UNROLL], dtype)
        length = len(chunk)
        chunk = np.concatenate([chunk, np.zeros(NUM_UNROLL - length, dtype)])
        c.call("submit", pb.SubmitRequest(saver=saver, key=key.encode(), segment=s,
                                          inputs=statesaver.to_tensor(chunk), length=length,
                                          last=s == n - 1))
    return n


def reference(ids, states=None):
    """unroll over the whole sequence (B = 1)."""
    with tempfile.TemporaryDirectory() as d:
        np.save(os.path.join(d, "x.npy"), np.asarray(ids, np.int64).reshape(-1, 1))
        cmd = [harness.WORKER, "unroll", "--model", MODEL, "--inputs", os.path.join(d, "x.npy"),
               "--outputs", os.path.join(d, "o.npy")]
        for i, n in enumerate(NAMES):
            if states is not None:
                np.save(os.path.join(d, "s%d.npy" % i), states[n].reshape(1, -1))
                cmd += ["--state", "%s=%s" % (n, os.path.join(d, "s%d.npy" % i))]
            cmd += ["--final-state", "%s=%s" % (n, os.path.join(d, "f%d.npy" % i))]
        subprocess.run(cmd, check=True, capture_output=True, timeout=60)
        return (np.load(os.path.join(d, "o.npy"))[:, 0],
                {n: np.load(os.path.join(d, "f%d.npy" % i))[0] for i, n in enumerate(NAMES)})


def rel(a, b):
    return float(np.max(np.abs(np.asarray(a, np.float64) - b) / np.maximum(1.0, np.abs(b))))


def wait_exit(proc, timeout):
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        return None


def body(srv, tmp):
    c = statesaver.Client(srv.address, timeout=30)
    w = harness.Worker(srv.address, MODEL, "lm", batch=4, log_dir=tmp)
    try:
        rng = np.random.default_rng(3)
        seqs = {"a": rng.integers(0, VOCAB, 10), "b": rng.integers(0, VOCAB, 7),
                "c": rng.integers(0, VOCAB, 4)}
        nseg = {}
        deadline = time.monotonic() + 30
        while True:  # the worker declares the saver
            try:
                for k, ids in seqs.items():
                    nseg[k] = submit_ids(c, "lm", k, ids, np.int64 if k != "b" else np.int32)
                break
            except statesaver.StatesaverError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        for k, ids in seqs.items():
            out, finals = c.await_sequence("lm", k, nseg[k], timeout=60)
            want_y, want_s = reference(ids)
            check(out.shape == (len(ids), OUT), "%s: outputs [T, %d] (%s)" % (k, OUT, out.shape))
            w_all = max([rel(out, want_y)] + [rel(finals[n].reshape(-1), want_s[n])
                                              for n in NAMES])
            check(w_all <= 1e-5, "%s: served outputs and final states equal unroll (worst %.3g)"
                  % (k, w_all))
        # An out-of-range id fails that segment with the id named.
        submit_ids(c, "lm", "bad", [1, 2, VOCAB, 3], np.int64)
        try:
            c.await_sequence("lm", "bad", 1, timeout=60)
            check(False, "a token id outside the vocabulary fails its segment")
        except statesaver.SegmentFailed as e:
            check("token id %d" % VOCAB in str(e) and "[0, %d)" % VOCAB in str(e),
                  "out-of-range id: segment FAILED naming the id (%s)" % e)
        check(w.proc.poll() is None, "the worker is still running after the bad id")
        submit_ids(c, "lm", "after", [4, 5], np.int64)
        out, _ = c.await_sequence("lm", "after", 1, timeout=60)
        check(np.allclose(out, reference([4, 5])[0], atol=1e-5),
              "a good sequence after the bad one is served")
    finally:
        w.stop()

    # A saver declared with initial values and keep_final, same names/shapes.
    init = {n: np.full(s, 0.25 if n.endswith("/c") else -0.125, np.float32)
            for n, s in zip(NAMES, SIZES)}
    c.declare("pre", [(n, (s,), init[n]) for n, s in zip(NAMES, SIZES)], keep_final=True)
    w = harness.Worker(srv.address, MODEL, "pre", log_dir=tmp)
    try:
        ids = [3, 1, 4, 1, 5, 9]
        n = submit_ids(c, "pre", "x", ids, np.int64)
        out, finals = c.await_sequence("pre", "x", n, timeout=60)
        want_y, want_s = reference(ids, init)
        check(rel(out, want_y) <= 1e-5 and rel(finals["cell_1/h"].reshape(-1),
                                                 want_s["cell_1/h"]) <= 1e-5,
              "a saver with its own initial values and keep_final is served, from its "
              "initial values")
        check(w.proc.poll() is None, "the worker accepted the existing saver")
    finally:
        w.stop()

    # A real mismatch is still refused, naming the state.
    c.declare("other", [(n, (s + 1,)) for n, s in zip(NAMES, SIZES)])
    w = harness.Worker(srv.address, MODEL, "other", log_dir=tmp)
    rc = wait_exit(w.proc, 30)
    log = w.log_text()
    check(rc == 1 and "differs from model" in log and "cell_0/c" in log,
          "a saver with other shapes: the worker exits 1 naming the state (%s: %s)"
          % (rc, log.strip().splitlines()[-1] if log.strip() else ""))
    w.stop()
    c.close()


def main():
    srv = harness.Server()
    tmp = tempfile.mkdtemp(prefix="ss-serve-models-")
    try:
        body(srv, tmp)
    finally:
        srv.cleanup()
    if FAILURES:
        for f in os.listdir(tmp):
            print("---- " + f)
            print(open(os.path.join(tmp, f), errors="replace").read()[-3000:])
        print("%d failure(s)" % len(FAILURES))
        return 1
    print("all passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
