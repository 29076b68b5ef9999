#!/usr/bin/python3
"""test_make_model -- scripts/make-model.py is the one model generator.

Asserts: there is no second copy (deploy/make-model.py); the image's modes
(--preset image, --inputs, --configmap) run with numpy unimportable, as in
the image's build stage; --configmap reproduces deploy/k8s/model-configmap
.yaml byte for byte; the default sized model is the bundled
models/small-lstm.safetensors; and statesaver-worker unroll runs the image
model over the demo inputs, giving finite outputs [20, 1, 8].
"""
import os
import subprocess
import sys
import tempfile

import numpy as np

SOURCE_ROOT = os.environ.get("SS_SOURCE_ROOT") or os.path.abspath(
    os.path.join(os.path.dirname(__file__), "..", ".."))
BUILD_ROOT = os.environ.get("SS_BUILD_ROOT") or os.path.join(SOURCE_ROOT, "build")
WORKER = os.path.join(BUILD_ROOT, "worker", "statesaver-worker")
MAKE_MODEL = os.path.join(SOURCE_ROOT, "scripts", "make-model.py")
PY = "/usr/bin/python3"
# Runs the script with `import numpy` failing, like the image's build stage.
NO_NUMPY = ("import runpy, sys; sys.modules['numpy'] = None; sys.argv = sys.argv[1:]; "
            "runpy.run_path(sys.argv[0], run_name='__main__')")
FAILURES = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what)
    if not cond:
        FAILURES.append(what)
    return cond


def run(args):
    return subprocess.run(args, capture_output=True, text=True, timeout=120)


def main():
    tmp = tempfile.mkdtemp(prefix="ss-make-model-")
    check(not os.path.exists(os.path.join(SOURCE_ROOT, "deploy", "make-model.py")),
          "no second make-model.py in deploy/")
    model = os.path.join(tmp, "image.safetensors")
    inputs = os.path.join(tmp, "inputs.npy")
    cm = os.path.join(tmp, "cm.yaml")
    for args in ([model, "--preset", "image"], ["--inputs", inputs], ["--configmap", cm]):
        r = run([PY, "-c", NO_NUMPY, MAKE_MODEL] + args)
        check(r.returncode == 0, "make-model.py %s runs without numpy (%s)"
              % (" ".join(args), r.stderr.strip()[-200:]))
    r = run([PY, "-c", NO_NUMPY, MAKE_MODEL, os.path.join(tmp, "sized.safetensors")])
    check(r.returncode != 0, "a sized model does need numpy (so the check above means something)")
    want = open(os.path.join(SOURCE_ROOT, "deploy", "k8s", "model-configmap.yaml"), "rb").read()
    got = open(cm, "rb").read() if os.path.exists(cm) else b""
    check(got == want, "--configmap reproduces deploy/k8s/model-configmap.yaml byte for byte")
    small = os.path.join(tmp, "small.safetensors")
    r = run([PY, MAKE_MODEL, small])
    check(r.returncode == 0 and open(small, "rb").read() ==
          open(os.path.join(SOURCE_ROOT, "models", "small-lstm.safetensors"), "rb").read(),
          "the default sized model is models/small-lstm.safetensors")
    if os.path.exists(inputs) and os.path.exists(model):
        x = np.load(inputs)
        check(x.dtype == np.float32 and x.shape == (20, 4), "demo inputs are float32 [20, 4]")
        tm = os.path.join(tmp, "x.npy")
        np.save(tm, x[:, None, :])
        out = os.path.join(tmp, "y.npy")
        r = run([WORKER, "unroll", "--model", model, "--inputs", tm, "--outputs", out])
        y = np.load(out) if r.returncode == 0 else None
        check(y is not None and y.shape == (20, 1, 8) and bool(np.all(np.isfinite(y))),
              "statesaver-worker unroll runs the image model (%s)" % r.stderr.strip()[-200:])
    # Per-layer sizes, an embedding and a softmax head (issue 11).
    lm = os.path.join(tmp, "lm.safetensors")
    r = run([PY, MAKE_MODEL, lm, "--input-size", "6", "--num-units", "12,7", "--vocab", "20",
             "--head-out", "5", "--head-activation", "softmax"])
    check(r.returncode == 0, "make-model.py --num-units 12,7 --vocab 20 --head-out 5 (%s)"
          % r.stderr.strip()[-200:])
    ids = os.path.join(tmp, "ids.npy")
    np.save(ids, np.arange(12, dtype=np.int64).reshape(4, 3) % 20)
    out = os.path.join(tmp, "p.npy")
    fin = os.path.join(tmp, "h1.npy")
    r = run([WORKER, "unroll", "--model", lm, "--inputs", ids, "--outputs", out,
             "--final-state", "cell_1/h=" + fin])
    y = np.load(out) if r.returncode == 0 else None
    check(y is not None and y.shape == (4, 3, 5) and np.allclose(y.sum(-1), 1, atol=1e-5) and
          np.load(fin).shape == (3, 7),
          "unroll runs it: softmax rows [4, 3, 5] sum to 1, layer 1 state is 7 wide (%s)"
          % r.stderr.strip()[-200:])
    r = run([PY, MAKE_MODEL, lm, "--num-units", "12,7", "--num-layers", "3"])
    check(r.returncode != 0 and "lists 2 sizes" in r.stderr,
          "--num-units list against --num-layers is refused")
    for f in os.listdir(tmp):
        os.unlink(os.path.join(tmp, f))
    os.rmdir(tmp)
    print("%d failure(s)" % len(FAILURES))
    return 1 if FAILURES else 0


if __name__ == "__main__":
    sys.exit(main())
