#!/usr/bin/python3
"""gen_golden_io -- golden vectors for per-layer sizes, the embedding and
the output head (tests/worker/golden_io/, read by test_model_io.c).

Each case directory holds model.safetensors, inputs.npy (float32 [T, B, I],
or int64 token ids [T, B] with an embedding), lengths.npy (int32 [B]),
state_in_<i>.npy / state_out_<i>.npy (float32 [B, size_i]) and outputs.npy
(float32 [T, B, out]); CASES lists the cases. The expected values are a
float64 numpy implementation of the formulas of DESIGN.md (TF layouts:
LSTM i, j, f, o with forget_bias and projection; GRU reset_after both
ways; basic RNN), independent of the C code and of torch (CI's C tests
need neither torch nor this script: the files are committed).

Head rule: rows past a row's length are zero, as the RNN's own outputs.

  /usr/bin/python3 tests/worker/gen_golden_io.py [OUTDIR]
"""
import json
import os
import shutil
import struct
import sys

import numpy as np

T, B = 6, 3


def write_safetensors(path, tensors, metadata):
    header = {"__metadata__": {k: str(v) for k, v in metadata.items()}}
    blobs, off = [], 0
    for name, arr in tensors.items():
        raw = np.ascontiguousarray(arr, dtype="<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(np.shape(arr)),
                        "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    h = json.dumps(header, separators=(",", ":"), sort_keys=True).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def sig(x):
    return 1.0 / (1.0 + np.exp(-x))


def act(a, x):
    return np.tanh(x) if a == "tanh" else np.maximum(x, 0.0)


def head_act(a, y):
    if a == "softmax":
        e = np.exp(y - y.max(-1, keepdims=True))
        return e / e.sum(-1, keepdims=True)
    if a == "log_softmax":
        m = y.max(-1, keepdims=True)
        return y - m - np.log(np.exp(y - m).sum(-1, keepdims=True))
    if a == "sigmoid":
        return sig(y)
    if a == "tanh":
        return np.tanh(y)
    return y


def make_case(rng, cell, input_size, units, projs=None, reset_after=False, activation="tanh",
              forget_bias=1.0, vocab=0, head=0, head_activation="none"):
    """(tensors, metadata, inputs, lengths, states_in, outputs, states_out)."""
    L = len(units)
    projs = projs or [0] * L
    t = {}
    in_l = input_size
    for l in range(L):
        H, P = units[l], projs[l] or units[l]
        s = 1.0 / np.sqrt(H + in_l)
        u = lambda *shape: rng.uniform(-s, s, shape)  # noqa: E731
        if cell == "lstm":
            t["cell_%d/kernel" % l] = u(in_l + P, 4 * H)
            t["cell_%d/bias" % l] = u(4 * H)
            if projs[l]:
                t["cell_%d/projection/kernel" % l] = u(H, P)
        elif cell == "basic_rnn":
            t["cell_%d/kernel" % l] = u(in_l + H, H)
            t["cell_%d/bias" % l] = u(H)
        elif reset_after:
            t["cell_%d/kernel" % l] = u(in_l, 3 * H)
            t["cell_%d/recurrent_kernel" % l] = u(H, 3 * H)
            t["cell_%d/bias" % l] = u(2, 3 * H)
        else:
            t["cell_%d/gates/kernel" % l] = u(in_l + H, 2 * H)
            t["cell_%d/gates/bias" % l] = u(2 * H)
            t["cell_%d/candidate/kernel" % l] = u(in_l + H, H)
            t["cell_%d/candidate/bias" % l] = u(H)
        in_l = P
    meta = {"cell": cell, "input_size": input_size, "num_layers": L,
            "num_units": ",".join(str(x) for x in units), "activation": activation}
    if cell == "lstm":
        meta["forget_bias"] = forget_bias
        if any(projs):
            meta["num_proj"] = ",".join(str(p) for p in projs)
    if cell == "gru":
        meta["reset_after"] = "true" if reset_after else "false"
    if vocab:
        meta["embedding"] = "true"
        t["embedding/weights"] = rng.uniform(-1, 1, (vocab, input_size))
    if head:
        meta["head"] = "linear"
        meta["head_activation"] = head_activation
        t["head/kernel"] = rng.uniform(-0.5, 0.5, (in_l, head))
        t["head/bias"] = rng.uniform(-0.2, 0.2, head)
    t = {k: v.astype(np.float32) for k, v in t.items()}  # the file's values are the truth
    lengths = np.array([T, 2, 0][:B] if B == 3 else rng.integers(0, T + 1, B), np.int32)
    if vocab:
        inputs = rng.integers(0, vocab, (T, B)).astype(np.int64)
        # padding past a row's length may hold anything: not looked up
        for b in range(B):
            inputs[lengths[b]:, b] = -7
        x = np.zeros((T, B, input_size))
        for ti in range(T):
            for b in range(B):
                if ti < lengths[b]:
                    x[ti, b] = t["embedding/weights"][inputs[ti, b]]
    else:
        inputs = rng.uniform(-1, 1, (T, B, input_size)).astype(np.float32)
        x = inputs.astype(np.float64)
    sizes = []
    for l in range(L):
        if cell == "lstm":
            sizes += [units[l], projs[l] or units[l]]
        else:
            sizes.append(units[l])
    states_in = [rng.uniform(-0.5, 0.5, (B, s)).astype(np.float32) for s in sizes]
    st = [s.astype(np.float64) for s in states_in]
    mask = np.arange(T)[:, None] < lengths[None, :]
    si = 0
    for l in range(L):
        H = units[l]
        g = lambda k: t["cell_%d/%s" % (l, k)].astype(np.float64)  # noqa: E731
        ys = []
        for ti in range(T):
            m = mask[ti][:, None]
            xt = x[ti]
            if cell == "lstm":
                c, h = st[si], st[si + 1]
                z = np.concatenate([xt, h], 1) @ g("kernel") + g("bias")
                i, j, f, o = np.split(z, 4, axis=1)
                nc = sig(f + forget_bias) * c + sig(i) * act(activation, j)
                nm = sig(o) * act(activation, nc)
                if projs[l]:
                    nm = nm @ g("projection/kernel")
                st[si] = np.where(m, nc, c)
                st[si + 1] = np.where(m, nm, h)
                ys.append(np.where(m, nm, 0.0))
            else:
                h = st[si]
                if cell == "basic_rnn":
                    nh = act(activation, np.concatenate([xt, h], 1) @ g("kernel") + g("bias"))
                elif reset_after:
                    b = g("bias")
                    xz = xt @ g("kernel") + b[0]
                    hz = h @ g("recurrent_kernel") + b[1]
                    zz = sig(xz[:, :H] + hz[:, :H])
                    r = sig(xz[:, H:2 * H] + hz[:, H:2 * H])
                    n = act(activation, xz[:, 2 * H:] + r * hz[:, 2 * H:])
                    nh = zz * h + (1 - zz) * n
                else:
                    ru = sig(np.concatenate([xt, h], 1) @ g("gates/kernel") + g("gates/bias"))
                    r, uu = ru[:, :H], ru[:, H:]
                    cc = act(activation, np.concatenate([xt, r * h], 1) @ g("candidate/kernel")
                             + g("candidate/bias"))
                    nh = uu * h + (1 - uu) * cc
                st[si] = np.where(m, nh, h)
                ys.append(np.where(m, nh, 0.0))
        x = np.stack(ys)
        si += 2 if cell == "lstm" else 1
    y = x
    if head:
        y = head_act(head_activation, y @ t["head/kernel"].astype(np.float64) +
                     t["head/bias"].astype(np.float64))
        y = np.where(mask[:, :, None], y, 0.0)
    return t, meta, inputs, lengths, states_in, y.astype(np.float32), \
        [s.astype(np.float32) for s in st]


CASES = {
    "lstm_sizes_proj": dict(cell="lstm", input_size=4, units=[12, 7], projs=[5, 0]),
    "lstm_sizes3": dict(cell="lstm", input_size=3, units=[20, 9, 17], forget_bias=0.0),
    "gru_ra_sizes": dict(cell="gru", input_size=4, units=[8, 5, 6], reset_after=True),
    "gru_sizes": dict(cell="gru", input_size=4, units=[7, 18], reset_after=False),
    "basic_sizes_relu": dict(cell="basic_rnn", input_size=3, units=[6, 33], activation="relu"),
    "emb_lstm_none": dict(cell="lstm", input_size=5, units=[9], vocab=11, head=7),
    "emb_lstm_softmax": dict(cell="lstm", input_size=5, units=[9, 6], vocab=11, head=7,
                             head_activation="softmax"),
    "emb_lstm_log_softmax": dict(cell="lstm", input_size=5, units=[9], vocab=11, head=19,
                                 head_activation="log_softmax", projs=[4]),
    "emb_gru_sigmoid": dict(cell="gru", input_size=5, units=[9], vocab=11, head=7,
                            head_activation="sigmoid"),
    "lstm_head_tanh": dict(cell="lstm", input_size=5, units=[9], head=3, head_activation="tanh"),
}


def main(argv):
    out = argv[1] if len(argv) > 1 else os.path.join(os.path.dirname(__file__), "golden_io")
    if os.path.isdir(out):
        shutil.rmtree(out)
    os.makedirs(out)
    rng = np.random.default_rng(1112026)
    for name, kw in CASES.items():
        t, meta, inputs, lengths, sin, y, sout = make_case(rng, **kw)
        d = os.path.join(out, name)
        os.makedirs(d)
        write_safetensors(os.path.join(d, "model.safetensors"), t, meta)
        np.save(os.path.join(d, "inputs.npy"), inputs)
        np.save(os.path.join(d, "lengths.npy"), lengths)
        np.save(os.path.join(d, "outputs.npy"), y)
        for i, (a, b) in enumerate(zip(sin, sout)):
            np.save(os.path.join(d, "state_in_%d.npy" % i), a)
            np.save(os.path.join(d, "state_out_%d.npy" % i), b)
    with open(os.path.join(out, "CASES"), "w") as f:
        f.write("\n".join(CASES) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
