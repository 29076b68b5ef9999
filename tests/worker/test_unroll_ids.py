#!/usr/bin/python3
"""test_unroll_ids -- `statesaver-worker unroll` with an embedding model
(tests/worker/golden_io/emb_lstm_none: vocab 11, input 5, head 7).

Asserts: a token id outside [0, vocab) exits 2 with a message naming the
id, its [t, b] position and the vocabulary, and writes nothing; float
inputs to an embedding model and ids to a model without one exit 2 naming
the expected dtype and shape; ids past a row's length are padding (any
value); int32 and int64 ids give the same outputs [T, B, 7]. And `bench`
with per-layer sizes, an embedding and a head reports the three timings
(--json), and refuses a size list that contradicts --layers.
"""
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

SOURCE_ROOT = os.environ.get("SS_SOURCE_ROOT") or os.path.abspath(
    os.path.join(os.path.dirname(__file__), "..", ".."))
BUILD_ROOT = os.environ.get("SS_BUILD_ROOT") or os.path.join(SOURCE_ROOT, "build")
WORKER = os.path.join(BUILD_ROOT, "worker", "statesaver-worker")
GOLDEN = os.path.join(SOURCE_ROOT, "tests", "worker", "golden_io")
EMB = os.path.join(GOLDEN, "emb_lstm_none", "model.safetensors")
PLAIN = os.path.join(GOLDEN, "lstm_sizes_proj", "model.safetensors")
FAILURES = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what)
    if not cond:
        FAILURES.append(what)
    return cond


def unroll(model, x, out, lengths=None):
    cmd = [WORKER, "unroll", "--model", model, "--inputs", x, "--outputs", out]
    if lengths:
        cmd += ["--lengths", lengths]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


def main():
    with tempfile.TemporaryDirectory(prefix="ss-unroll-ids-") as d:
        x, out = os.path.join(d, "ids.npy"), os.path.join(d, "o.npy")
        ids = np.array([[1, 2], [3, 11], [4, 5]], np.int64)  # id 11 at [1, 1]
        np.save(x, ids)
        r = unroll(EMB, x, out)
        check(r.returncode == 2 and "token id 11 at [1, 1] is outside [0, 11)" in r.stderr,
              "out-of-range id: exit 2 naming the id and position (%s)" % r.stderr.strip())
        check(not os.path.exists(out), "out-of-range id: nothing written")
        ids[1, 1] = -3
        np.save(x, ids)
        r = unroll(EMB, x, out)
        check(r.returncode == 2 and "token id -3 at [1, 1]" in r.stderr,
              "negative id: exit 2 (%s)" % r.stderr.strip())
        # Past row 1's length (1) the ids are padding.
        np.save(os.path.join(d, "l.npy"), np.array([3, 1], np.int32))
        r = unroll(EMB, x, out, os.path.join(d, "l.npy"))
        y = np.load(out) if r.returncode == 0 else None
        check(y is not None and y.shape == (3, 2, 7) and not y[1:, 1].any(),
              "padding ids past the length are not looked up; head rows there are zero (%s)"
              % r.stderr.strip())
        os.unlink(out) if os.path.exists(out) else None
        ids[1, 1] = 7
        np.save(x, ids)
        r64 = unroll(EMB, x, out)
        y64 = np.load(out) if r64.returncode == 0 else None
        np.save(x, ids.astype(np.int32))
        r32 = unroll(EMB, x, out)
        y32 = np.load(out) if r32.returncode == 0 else None
        check(y64 is not None and y32 is not None and np.array_equal(y64, y32),
              "int32 and int64 ids give the same outputs")
        np.save(x, np.zeros((3, 2, 5), np.float32))
        os.unlink(out)
        r = unroll(EMB, x, out)
        check(r.returncode == 2 and "expected int32 or int64 [T, B] (token ids" in r.stderr
              and not os.path.exists(out),
              "float inputs to an embedding model: exit 2 (%s)" % r.stderr.strip())
        np.save(x, ids)
        r = unroll(PLAIN, x, out)
        check(r.returncode == 2 and "expected float32 [T, B, 4]" in r.stderr,
              "ids to a model without an embedding: exit 2 (%s)" % r.stderr.strip())
    base = [WORKER, "bench", "--cell", "lstm", "--input-size", "8", "--num-units", "16,8",
            "--batch", "4", "--steps", "3", "--repeat", "1", "--threads", "1"]
    r = subprocess.run(base + ["--vocab", "20", "--head-out", "5", "--head-activation",
                               "softmax", "--json"], capture_output=True, text=True, timeout=60)
    j = json.loads(r.stdout) if r.returncode == 0 else {}
    check(j.get("num_units_list") == "16,8" and j.get("layers") == 2 and
          all(j.get(k, -1) >= 0 for k in ("ms_embedding", "ms_head", "ms_model")),
          "bench --num-units 16,8 --vocab --head-out: timings in --json (%s)" % r.stderr.strip())
    r = subprocess.run(base + ["--layers", "3"], capture_output=True, text=True, timeout=60)
    check(r.returncode == 2 and "lists 2 sizes, --layers is 3" in r.stderr,
          "bench: a size list against --layers is refused (%s)" % r.stderr.strip()[:80])
    print("%d failure(s)" % len(FAILURES))
    return 1 if FAILURES else 0


if __name__ == "__main__":
    sys.exit(main())
