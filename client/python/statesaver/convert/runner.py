"""runner -- run `statesaver-worker unroll` on a converted model (for
--check and the tests).

The binary is, in this order: the --worker flag, $STATESAVER_WORKER,
build/worker/statesaver-worker of the source tree this package sits in
(scripts/statesaver-convert run from a checkout), then `statesaver-worker`
on PATH.
"""
import os
import shutil
import subprocess
import tempfile

import numpy as np

from .errors import ConvertError

ENV = "STATESAVER_WORKER"


def find_worker(explicit=None):
    if explicit:
        if not os.access(explicit, os.X_OK):
            raise ConvertError("--worker %s: not an executable file" % explicit)
        return explicit
    env = os.environ.get(ENV)
    if env:
        if not os.access(env, os.X_OK):
            raise ConvertError("$%s=%s: not an executable file" % (ENV, env))
        return env
    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.normpath(os.path.join(here, "..", "..", "..", ".."))
    for build in ("build", "build-asan", "builddir"):
        p = os.path.join(root, build, "worker", "statesaver-worker")
        if os.access(p, os.X_OK):
            return p
    p = shutil.which("statesaver-worker")
    if p:
        return p
    raise ConvertError("statesaver-worker not found: pass --worker PATH or set $%s" % ENV)


def unroll(worker, model_path, inputs, state_names, lengths=None, states=None, threads=1):
    """Outputs [T, B, out] and {name: final state [B, size]} of one unroll.
    inputs: float32 [T, B, I] or int64 ids [T, B]; states: {name: [B, size]}."""
    with tempfile.TemporaryDirectory(prefix="ss-convert-") as d:
        x = os.path.join(d, "x.npy")
        arr = np.ascontiguousarray(inputs)
        if arr.dtype.kind in "iu":
            arr = arr.astype(np.int64)
        else:
            arr = arr.astype(np.float32)
        np.save(x, arr)
        cmd = [worker, "unroll", "--model", model_path, "--inputs", x,
               "--outputs", os.path.join(d, "o.npy"), "--threads", str(threads)]
        if lengths is not None:
            np.save(os.path.join(d, "l.npy"), np.asarray(lengths, np.int32))
            cmd += ["--lengths", os.path.join(d, "l.npy")]
        for i, name in enumerate(state_names):
            if states is not None and name in states:
                p = os.path.join(d, "s%d.npy" % i)
                np.save(p, np.ascontiguousarray(states[name], np.float32))
                cmd += ["--state", "%s=%s" % (name, p)]
            cmd += ["--final-state", "%s=%s" % (name, os.path.join(d, "f%d.npy" % i))]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            raise ConvertError("%s unroll failed (exit %d): %s"
                               % (worker, r.returncode, r.stderr.strip()))
        out = np.load(os.path.join(d, "o.npy"))
        finals = {name: np.load(os.path.join(d, "f%d.npy" % i))
                  for i, name in enumerate(state_names)}
        return out, finals


def worst_rel(a, b):
    """max |a - b| / max(1, |b|) (b the reference)."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    if a.shape != b.shape:
        raise ConvertError("shapes differ: %s vs %s" % (a.shape, b.shape))
    if a.size == 0:
        return 0.0
    return float(np.max(np.abs(a - b) / np.maximum(1.0, np.abs(b))))


def random_case(model, T, B, seed):
    """Random inputs (ids with an embedding), lengths in [1, T] (row 0 = T)
    and initial states for a --check."""
    rng = np.random.default_rng(seed)
    if model.embedding is not None:
        inputs = rng.integers(0, model.embedding.shape[0], size=(T, B)).astype(np.int64)
    else:
        inputs = rng.uniform(-1, 1, size=(T, B, model.input_size)).astype(np.float32)
    lengths = rng.integers(1, T + 1, size=B)
    lengths[0] = T
    states = {n: rng.uniform(-0.5, 0.5, size=(B, s)).astype(np.float32)
              for n, s in zip(model.state_names(), model.state_sizes())}
    return inputs, lengths, states
