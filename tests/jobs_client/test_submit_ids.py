#!/usr/bin/python3
"""test_submit_ids -- `statesaver submit` with token-id .npy files for a
model with an embedding, end to end on the real binaries (numpy, no torch).

  - int64 [T], int32 [T] and int64 [T, 1] files (lengths 1, T, 2T+1, 3T+1)
    through `statesaver submit --inputs DIR` and `statesaver-worker serve`
    (tests/worker/golden_io/emb_lstm_softmax: embedding, 2-layer LSTM,
    log_softmax head): outputs and final states equal
    `statesaver-worker unroll` on the same ids offline (rtol 1e-5);
  - bad files, each beside good ones: float64, 2-D ids with 3 columns, a
    negative id, an id >= --vocab, an empty id file, ids mixed with float32
    files: exit 2, stderr names the file and the problem, nothing is
    submitted (the server's queued and completed counters do not move);
  - without --vocab an id outside the model's vocabulary reaches the
    worker, which fails that segment naming the id: exit 1 naming the
    sequence, the other sequence of the run is still written.
"""
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "python"))
import harness  # noqa: E402

CLI = os.path.join(harness.BUILD_ROOT, "client", "statesaver")
MODEL = os.path.join(harness.SOURCE_ROOT, "tests", "worker", "golden_io", "emb_lstm_softmax",
                     "model.safetensors")
NAMES = ["cell_0/c", "cell_0/h", "cell_1/c", "cell_1/h"]
VOCAB, OUT = 11, 7
NUM_UNROLL = 4
RTOL = 1e-5
CMD_TIMEOUT = 120
FAILURES = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        FAILURES.append(what)
    return cond


def run(args):
    return subprocess.run(args, capture_output=True, text=True, timeout=CMD_TIMEOUT)


def submit(addr, in_dir, out_dir, extra=()):
    return run([CLI, "--server", addr, "submit", "lm", "--inputs", in_dir, "--num-unroll",
                str(NUM_UNROLL), "--outputs", out_dir, "--wait-ms", "500"] + list(extra))


def stats(addr):
    r = run([CLI, "--server", addr, "stats", "--json"])
    return json.loads(r.stdout) if r.returncode == 0 else {}


def reference(tmp, ids):
    """Whole-sequence unroll (B = 1) of the ids: outputs [T, OUT], finals."""
    d = tempfile.mkdtemp(dir=tmp)
    np.save(os.path.join(d, "x.npy"), np.asarray(ids, np.int64).reshape(-1, 1))
    cmd = [harness.WORKER, "unroll", "--model", MODEL, "--inputs", os.path.join(d, "x.npy"),
           "--outputs", os.path.join(d, "o.npy")]
    for i, n in enumerate(NAMES):
        cmd += ["--final-state", "%s=%s" % (n, os.path.join(d, "f%d.npy" % i))]
    r = run(cmd)
    if r.returncode != 0:
        raise RuntimeError("unroll failed: " + r.stderr)
    return (np.load(os.path.join(d, "o.npy"))[:, 0],
            {n: np.load(os.path.join(d, "f%d.npy" % i))[0] for i, n in enumerate(NAMES)})


def close(a, b):
    return a.shape == b.shape and float(np.max(np.abs(a - b))) <= RTOL * max(
        1.0, float(np.max(np.abs(b))))


def good_inputs(d, rng):
    """Files of every accepted layout; key -> ids."""
    os.makedirs(d, exist_ok=True)
    seqs = {}
    for key, n, dt, two_d in [("a-int64", 1, np.int64, False),
                              ("b-int32", NUM_UNROLL, np.int32, False),
                              ("c-int64-col", 2 * NUM_UNROLL + 1, np.int64, True),
                              ("d-int32-col", 3 * NUM_UNROLL + 1, np.int32, True)]:
        ids = rng.integers(0, VOCAB, n).astype(dt)
        np.save(os.path.join(d, key + ".npy"), ids.reshape(-1, 1) if two_d else ids)
        seqs[key] = ids.astype(np.int64)
    return seqs


def wait_declared(addr, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = run([CLI, "--server", addr, "ls"])
        if r.returncode == 0 and "lm" in r.stdout.split():
            return True
        time.sleep(0.05)
    return False


def body(srv, tmp):
    rng = np.random.default_rng(11)
    w = harness.Worker(srv.address, MODEL, "lm", batch=3, log_dir=tmp)
    try:
        if not check(wait_declared(srv.address), "the worker declared the saver"):
            return
        in_dir, out_dir = os.path.join(tmp, "in"), os.path.join(tmp, "out")
        seqs = good_inputs(in_dir, rng)
        r = submit(srv.address, in_dir, out_dir, ["--vocab", str(VOCAB)])
        check(r.returncode == 0, "submit of id files: exit 0 (%s)" % r.stderr.strip()[-300:])
        for key, ids in seqs.items():
            want_y, want_s = reference(tmp, ids)
            try:
                got = np.load(os.path.join(out_dir, key + ".npy"))
                fin = {n: np.load(os.path.join(out_dir, "%s.final.%s.npy" %
                                               (key, n.replace("/", "_")))) for n in NAMES}
            except OSError as e:
                check(False, "%s: outputs written (%s)" % (key, e))
                continue
            ok = got.dtype == np.float32 and got.shape == (len(ids), OUT) and \
                close(got, want_y) and all(close(fin[n].reshape(-1), want_s[n]) for n in NAMES)
            check(ok, "%s: submit's outputs [%d, %d] and final states equal unroll on the "
                  "same ids" % (key, len(ids), OUT))

        # Bad files: exit 2 naming the file, nothing submitted.
        before = stats(srv.address)
        bad_cases = [
            ("zz-f64", np.arange(5, dtype=np.float64), [], "float64"),
            ("zz-wide", np.zeros((5, 3), np.int64), [], "2-D token ids with 3 columns"),
            ("zz-neg", np.array([1, 2, -1, 3], np.int64), [], "token id -1 at step 2 is negative"),
            ("zz-vocab", np.array([1, VOCAB, 2], np.int32), ["--vocab", str(VOCAB)],
             "token id %d at step 1 is outside [0, %d) (--vocab)" % (VOCAB, VOCAB)),
            ("zz-empty", np.zeros(0, np.int64), [], "length >= 1"),
            ("zz-float", np.zeros((3, 5), np.float32), [], "all float32 inputs or all token ids"),
        ]
        for name, arr, extra, want in bad_cases:
            d = os.path.join(tmp, "bad-" + name)
            good_inputs(d, rng)
            np.save(os.path.join(d, name + ".npy"), arr)
            r = submit(srv.address, d, os.path.join(tmp, "bad-out"), extra)
            err = r.stderr.strip()
            check(r.returncode == 2 and name + ".npy" in err and want in err,
                  "%s: exit 2 naming the file and '%s' (%d: %s)" % (name, want, r.returncode,
                                                                   err))
        after = stats(srv.address)
        check(before.get("requests") is not None and
              after.get("queued") == before.get("queued") == 0 and
              after.get("completed") == before.get("completed"),
              "bad id files submitted nothing (queued %s, completed %s -> %s)"
              % (after.get("queued"), before.get("completed"), after.get("completed")))

        # Without --vocab the worker finds the id outside its vocabulary.
        d = os.path.join(tmp, "oov")
        os.makedirs(d)
        np.save(os.path.join(d, "good.npy"), np.array([1, 2, 3], np.int64))
        np.save(os.path.join(d, "oov.npy"), np.array([1, 2, 3, 4, 5, VOCAB], np.int64))
        r = submit(srv.address, d, os.path.join(tmp, "oov-out"))
        err = r.stderr
        check(r.returncode == 1 and "sequence oov failed" in err and
              "token id %d" % VOCAB in err,
              "an id >= vocab without --vocab: the worker fails it, exit 1 naming the "
              "sequence and the id (%s)" % err.strip().splitlines()[-1:])
        check(os.path.exists(os.path.join(tmp, "oov-out", "good.npy")) and
              not os.path.exists(os.path.join(tmp, "oov-out", "oov.npy")),
              "the good sequence of that run is written, the failed one is not")
        check(w.proc.poll() is None, "the worker is still running")
    finally:
        w.stop()


def main():
    srv = harness.Server(extra=["--max-attempts", "2"])
    tmp = tempfile.mkdtemp(prefix="ss-submit-ids-")
    try:
        body(srv, tmp)
    finally:
        log = srv.log_text()
        srv.cleanup()
    if FAILURES:
        print(log[-2000:])
        print("%d failure(s):" % len(FAILURES))
        for f in FAILURES:
            print("  " + f)
        return 1
    print("all passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
