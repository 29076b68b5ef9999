"""convert_util -- shared by the converter tests: paths, the converter's
package (entered without the protocol, as scripts/statesaver-convert
does), running the CLI, and the worker's unroll whole and in chunks."""
import os
import subprocess
import sys
import types

import numpy as np

SOURCE_ROOT = os.environ.get("SS_SOURCE_ROOT") or os.path.abspath(
    os.path.join(os.path.dirname(__file__), "..", ".."))
BUILD_ROOT = os.environ.get("SS_BUILD_ROOT") or os.path.join(SOURCE_ROOT, "build")
WORKER = os.path.join(BUILD_ROOT, "worker", "statesaver-worker")
CONVERT = os.path.join(SOURCE_ROOT, "scripts", "statesaver-convert")
PY = "/usr/bin/python3"
TOL = 1e-5

if "statesaver" not in sys.modules:
    _m = types.ModuleType("statesaver")
    _m.__path__ = [os.path.join(SOURCE_ROOT, "client", "python", "statesaver")]
    sys.modules["statesaver"] = _m

from statesaver.convert import runner  # noqa: E402

FAILURES = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        FAILURES.append(what)
    return cond


def convert(*args):
    """Run statesaver-convert; (exit status, stdout, stderr)."""
    here = os.path.dirname(os.path.abspath(__file__))
    env = dict(os.environ, STATESAVER_WORKER=WORKER,
               PYTHONPATH=here + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([PY, CONVERT] + list(args), capture_output=True, text=True, env=env,
                       timeout=300)
    return r.returncode, r.stdout, r.stderr


def unroll(model, inputs, names, lengths, states, chunks=None):
    """Worker outputs and final states, in one call or in chunks of the
    given step counts carrying the state (lengths cut per chunk)."""
    T = inputs.shape[0]
    if not chunks:
        return runner.unroll(WORKER, model, inputs, names, lengths=lengths, states=states)
    outs, st, t0 = [], dict(states), 0
    for n in chunks:
        l = np.clip(np.asarray(lengths) - t0, 0, n).astype(np.int32)
        o, st = runner.unroll(WORKER, model, inputs[t0:t0 + n], names, lengths=l, states=st)
        outs.append(o)
        t0 += n
    assert t0 == T
    return np.concatenate(outs), st


def rel(a, b):
    return runner.worst_rel(a, b)


def done():
    if FAILURES:
        print("%d failure(s):" % len(FAILURES))
        for f in FAILURES:
            print("  " + f)
        return 1
    print("all passed")
    return 0
