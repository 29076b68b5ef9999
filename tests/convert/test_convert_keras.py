#!/usr/bin/python3
"""test_convert_keras -- statesaver-convert keras on HDF5 files in Keras
2.11's layout, written by make_keras_h5.py with h5py (no TensorFlow).

Good files (stacked LSTMs of different sizes with unit_forget_bias, LSTM
without it, GRU reset_after=True stacked and reset_after=False, SimpleRNN
relu, Embedding + LSTM + Dropout + Dense softmax, Embedding + GRU + Dense
sigmoid, LSTM + TimeDistributed(Dense tanh), a save_weights file of
Embedding + GRU + Dense): converted with --check (exit 0), and the worker's unroll, whole
and in chunks carrying the state, with lengths and random initial states,
equals the numpy reference of the Keras formulas (keras_check.reference,
computed from the file's own Keras weights in Keras's gate orders) within
1e-5. Bad files (Bidirectional, an Attention layer, a missing weight,
hard_sigmoid, go_backwards, a truncated HDF5 file): exit 2, the message
names the layer (or says the file is not readable HDF5), nothing written.
"""
import os
import subprocess
import sys
import tempfile

import numpy as np

from convert_util import PY, check, convert, done, rel, unroll, TOL
from statesaver.convert import keras_check, keras_convert

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import make_keras_h5  # noqa: E402

T, B = 9, 4


def main():
    with tempfile.TemporaryDirectory(prefix="ss-convert-keras-") as d:
        r = subprocess.run([PY, os.path.join(HERE, "make_keras_h5.py"), d], capture_output=True,
                           text=True, timeout=120)
        check(r.returncode == 0, "make_keras_h5.py wrote the files (%s)" % r.stderr.strip())
        rng = np.random.default_rng(9)
        for name in make_keras_h5.cases(np.random.default_rng(0)):
            h5 = os.path.join(d, name + ".h5")
            out = os.path.join(d, name + ".safetensors")
            rc, so, se = convert("keras", h5, "--out", out, "--check")
            check(rc == 0 and os.path.exists(out), "%s: converted, --check passed (%s%s)"
                  % (name, so.strip().splitlines()[-1] if so.strip() else "", se.strip()))
            if rc != 0:
                continue
            model = keras_convert.convert(keras_convert.load(h5))
            names = model.state_names()
            if model.embedding is not None:
                inputs = rng.integers(0, model.embedding.shape[0], (T, B)).astype(np.int64)
            else:
                inputs = rng.uniform(-1, 1, (T, B, model.input_size)).astype(np.float32)
            lengths = [T, 3, 0, 6]
            states = {n: rng.uniform(-0.5, 0.5, (B, s)).astype(np.float32)
                      for n, s in zip(names, model.state_sizes())}
            want_y, want_s = keras_check.reference(model, inputs, lengths, states)
            for label, chunks in (("whole", None), ("chunked 2+5+2", [2, 5, 2])):
                got_y, got_s = unroll(out, inputs, names, lengths, states, chunks)
                w = max([rel(got_y, want_y)] + [rel(got_s[n], want_s[n]) for n in names])
                check(w <= TOL, "%s %s: worst relative difference %.3g <= %g" % (name, label, w,
                                                                                 TOL))
        bad = dict(make_keras_h5.bad_cases(np.random.default_rng(0)))
        bad["bad_corrupt"] = (None, None, "not a readable HDF5 file")
        for name, (_, _, want) in bad.items():
            out = os.path.join(d, name + ".safetensors")
            rc, so, se = convert("keras", os.path.join(d, name + ".h5"), "--out", out)
            check(rc == 2 and want in se, "%s: exit 2 naming %s (exit %d: %s)"
                  % (name, want, rc, se.strip()))
            check(not os.path.exists(out), "%s: nothing written" % name)
        left = [f for f in os.listdir(d) if f.startswith(".convert-")]
        check(not left, "no temporary file left (%s)" % left)
    return done()


if __name__ == "__main__":
    sys.exit(main())
