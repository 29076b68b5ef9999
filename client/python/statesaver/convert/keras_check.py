"""keras_check -- --check for the keras converter without TensorFlow: a
numpy (float64) reference of the Keras formulas, run on the file's own
Keras weights in Keras's gate orders, against `statesaver-worker unroll`
on the converted file (same random inputs, initial states and lengths; a
row past its length keeps its state and outputs zeros, as Keras's mask).

Keras (keras/layers/rnn/*.py, 2.x), x_t input, h/c state:
  SimpleRNN  h = act(x K + h R + b)
  LSTM       z = x K + h R + b; i, f, c~, o = split(z, 4);
             c = sig(f) c + sig(i) act(c~); h = sig(o) act(c)
  GRU reset_after=True   xz = x K + b[0], hz = h R + b[1] (blocks z, r, h);
             z = sig(xz_z + hz_z), r = sig(xz_r + hz_r),
             hh = act(xz_h + r * hz_h); h = z h + (1 - z) hh
  GRU reset_after=False  xz = x K + b; z = sig(xz_z + h R_z),
             r = sig(xz_r + h R_r), hh = act(xz_h + (r h) R_h);
             h = z h + (1 - z) hh
  Dense      y = act(h K + b)
"""
import numpy as np

from . import runner
from .runner import random_case


def _sig(x):
    return 1.0 / (1.0 + np.exp(-x))


def _act(name, x):
    return np.tanh(x) if name == "tanh" else np.maximum(x, 0.0)


def _head(name, y):
    if name == "softmax":
        e = np.exp(y - y.max(-1, keepdims=True))
        return e / e.sum(-1, keepdims=True)
    if name == "log_softmax":
        m = y.max(-1, keepdims=True)
        return y - m - np.log(np.exp(y - m).sum(-1, keepdims=True))
    if name == "sigmoid":
        return _sig(y)
    if name == "tanh":
        return np.tanh(y)
    return y


def reference(model, inputs, lengths, states):
    """Keras's outputs [T, B, out] and final states {name: [B, size]}."""
    src = model.keras
    T, B = inputs.shape[0], inputs.shape[1]
    if model.embedding is not None:
        x = model.embedding.astype(np.float64)[inputs]
    else:
        x = inputs.astype(np.float64)
    mask = (np.arange(T)[:, None] < np.asarray(lengths)[None, :])  # [T, B]
    finals = {}
    li = 0
    for name, cls, c, w in src.layers:
        if name not in src.used or cls not in ("SimpleRNN", "LSTM", "GRU"):
            continue
        K = w["kernel"].astype(np.float64)
        R = w["recurrent_kernel"].astype(np.float64)
        H = R.shape[0]
        b = w.get("bias")
        a = c.get("activation", "tanh")
        h = states["cell_%d/h" % li].astype(np.float64)
        cc = states["cell_%d/c" % li].astype(np.float64) if cls == "LSTM" else None
        ys = np.zeros((T, B, H))
        for t in range(T):
            xt = x[t]
            if cls == "SimpleRNN":
                nh = _act(a, xt @ K + h @ R + (0 if b is None else b))
                nc = None
            elif cls == "LSTM":
                z = xt @ K + h @ R + (0 if b is None else b)
                i, f, g, o = np.split(z, 4, axis=1)
                nc = _sig(f) * cc + _sig(i) * _act(a, g)
                nh = _sig(o) * _act(a, nc)
            elif model.reset_after:
                bb = np.zeros((2, 3 * H)) if b is None else b.astype(np.float64)
                xz = xt @ K + bb[0]
                hz = h @ R + bb[1]
                z = _sig(xz[:, :H] + hz[:, :H])
                r = _sig(xz[:, H:2 * H] + hz[:, H:2 * H])
                hh = _act(a, xz[:, 2 * H:] + r * hz[:, 2 * H:])
                nh = z * h + (1 - z) * hh
                nc = None
            else:
                bb = np.zeros(3 * H) if b is None else b.astype(np.float64)
                xz = xt @ K + bb
                z = _sig(xz[:, :H] + h @ R[:, :H])
                r = _sig(xz[:, H:2 * H] + h @ R[:, H:2 * H])
                hh = _act(a, xz[:, 2 * H:] + (r * h) @ R[:, 2 * H:])
                nh = z * h + (1 - z) * hh
                nc = None
            m = mask[t][:, None]
            h = np.where(m, nh, h)
            if cc is not None:
                cc = np.where(m, nc, cc)
            ys[t] = np.where(m, nh, 0.0)
        if cc is not None:
            finals["cell_%d/c" % li] = cc
        finals["cell_%d/h" % li] = h
        x = ys
        li += 1
    y = x
    if model.head is not None:
        k, bh = model.head
        y = _head(model.head_activation, y @ k.astype(np.float64) + bh.astype(np.float64))
        y = np.where(mask[:, :, None], y, 0.0)
    return y, finals


def check(src, model, path, worker=None, T=9, B=4, seed=4321):
    inputs, lengths, states = random_case(model, T, B, seed)
    want_y, want_s = reference(model, inputs, lengths, states)
    got_y, got_s = runner.unroll(runner.find_worker(worker), path, inputs, model.state_names(),
                                 lengths=lengths, states=states)
    worst = {"outputs": runner.worst_rel(got_y, want_y)}
    for n in model.state_names():
        worst[n] = runner.worst_rel(got_s[n], want_s[n])
    return worst
