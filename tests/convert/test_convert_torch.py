#!/usr/bin/python3
"""test_convert_torch -- statesaver-convert torch against torch itself.

For each module configuration (2-layer LSTM of different sizes as two
stacked modules, proj_size, GRU (2 layers), RNN relu, Embedding + LSTM +
Linear + LogSoftmax, bias=False; state_dicts and whole modules): convert,
then the worker's unroll outputs and final states equal torch's within
1e-5 (|d| / max(1, |torch|)), whole and in three chunks carrying the
state, with per-row lengths (torch side: pack_padded_sequence) and random
initial states. The torch reference is computed here from the test's own
modules, not by the converter's --check code; --check is run too.

Bad input, each a clear error naming the tensor or layer, exit 2, nothing
written (and a file already at --out left as it was): missing and extra
tensors, wrong shapes, a layer the converter does not know (attention),
bidirectional, an ambiguous state_dict (candidates listed), mixed cell
types; --check above the tolerance exits 3 and removes its output.
"""
import os
import sys
import tempfile

import numpy as np
import torch
import torch.nn as nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from convert_util import check, convert, done, rel, unroll, TOL
from torch_models import Attn, CharLM, Stacked  # importable: whole modules unpickle

T, B = 11, 5


def rnn_parts(module):
    """(embedding, [rnn modules], linear, activation) of the test modules."""
    if isinstance(module, (nn.RNN, nn.LSTM, nn.GRU)):
        return None, [module], None, None
    if isinstance(module, Stacked):
        return None, [module.lstm1, module.lstm2], None, None
    return module.emb, [module.lstm], module.fc, torch.log_softmax


def reference(module, inputs, lengths, states, cell):
    """torch's outputs [T, B, out] (zero past lengths) and final states."""
    emb, rnns, fc, act = rnn_parts(module)
    with torch.no_grad():
        x = torch.from_numpy(inputs)
        if emb is not None:
            x = emb(x.long())
        seq = pack_padded_sequence(x, torch.tensor(lengths), enforce_sorted=False)
        finals, l = {}, 0
        for m in rnns:
            n = m.num_layers
            h0 = torch.stack([torch.from_numpy(states["cell_%d/h" % (l + i)]) for i in range(n)])
            if cell == "lstm":
                c0 = torch.stack([torch.from_numpy(states["cell_%d/c" % (l + i)])
                                  for i in range(n)])
                seq, (hn, cn) = m(seq, (h0, c0))
                for i in range(n):
                    finals["cell_%d/c" % (l + i)] = cn[i].numpy()
            else:
                seq, hn = m(seq, h0)
            for i in range(n):
                finals["cell_%d/h" % (l + i)] = hn[i].numpy()
            l += n
        y, _ = pad_packed_sequence(seq, total_length=T)
        if fc is not None:
            y = act(fc(y), -1)
        y = y.numpy().copy()
    for b in range(B):
        y[lengths[b]:, b] = 0
    return y, finals


def state_layout(cell, rnns):
    names, sizes, l = [], [], 0
    for m in rnns:
        for _ in range(m.num_layers):
            P = getattr(m, "proj_size", 0) or m.hidden_size
            if cell == "lstm":
                names.append("cell_%d/c" % l)
                sizes.append(m.hidden_size)
            names.append("cell_%d/h" % l)
            sizes.append(P if cell == "lstm" else m.hidden_size)
            l += 1
    return names, sizes


CONFIGS = [
    # name, module factory, cell, save whole module?, extra converter args
    ("lstm_stacked_sizes_proj", lambda: Stacked(), "lstm", False, []),
    ("lstm_stacked_whole", lambda: Stacked(), "lstm", True, []),
    ("lstm_proj_2layers", lambda: nn.LSTM(5, 12, num_layers=2, proj_size=4), "lstm", False, []),
    ("gru_2layers", lambda: nn.GRU(5, 9, num_layers=2), "gru", False, []),
    ("rnn_relu_whole", lambda: nn.RNN(5, 7, nonlinearity="relu"), "basic_rnn", True, []),
    ("rnn_relu_state_dict", lambda: nn.RNN(5, 7, nonlinearity="relu"), "basic_rnn", False,
     ["--rnn-activation", "relu"]),
    ("charlm_log_softmax", lambda: CharLM(), "lstm", False, ["--head-activation", "log_softmax"]),
    ("charlm_whole", lambda: CharLM(), "lstm", True, []),
    ("charlm_bias_false", lambda: CharLM(bias=False), "lstm", False,
     ["--head-activation", "log_softmax"]),
    ("lstm_bias_false", lambda: nn.LSTM(4, 6, bias=False), "lstm", False, []),
    ("gru_bias_false", lambda: nn.GRU(4, 6, bias=False), "gru", False, []),
]


def run_good(d):
    rng = np.random.default_rng(5)
    for name, make, cell, whole, extra in CONFIGS:
        torch.manual_seed(hash(name) % 1000)
        module = make().eval()
        pt = os.path.join(d, name + ".pt")
        torch.save(module if whole else module.state_dict(), pt)
        out = os.path.join(d, name + ".safetensors")
        rc, so, se = convert("torch", pt, "--out", out, "--check", *extra)
        check(rc == 0 and os.path.exists(out), "%s: converted and --check passed (%s%s)"
              % (name, so.strip().splitlines()[-1] if so.strip() else "", se.strip()))
        if rc != 0:
            continue
        emb, rnns, _, _ = rnn_parts(module)
        names, sizes = state_layout(cell, rnns)
        if emb is not None:
            inputs = rng.integers(0, emb.num_embeddings, (T, B)).astype(np.int64)
        else:
            inputs = rng.uniform(-1, 1, (T, B, rnns[0].input_size)).astype(np.float32)
        lengths = [T, 1, 7, 4, T - 1]
        states = {n: rng.uniform(-0.5, 0.5, (B, s)).astype(np.float32)
                  for n, s in zip(names, sizes)}
        want_y, want_s = reference(module, inputs, lengths, states, cell)
        for label, chunks in (("whole", None), ("chunked 4+3+4", [4, 3, 4])):
            got_y, got_s = unroll(out, inputs, names, lengths, states, chunks)
            w = max([rel(got_y, want_y)] + [rel(got_s[n], want_s[n]) for n in names])
            check(w <= TOL, "%s %s: worst relative difference %.3g <= %g over outputs and %s"
                  % (name, label, w, TOL, ", ".join(names)))


def expect_bad(d, label, payload, want, extra=(), whole=False, preexisting=False):
    pt = os.path.join(d, "bad.pt")
    torch.save(payload, pt)
    out = os.path.join(d, "bad.safetensors")
    if os.path.exists(out):
        os.unlink(out)
    if preexisting:
        with open(out, "wb") as f:
            f.write(b"old")
    rc, so, se = convert("torch", pt, "--out", out, *extra)
    ok = rc == 2 and all(w in se for w in ([want] if isinstance(want, str) else want))
    check(ok, "%s: exit 2 naming %s (exit %d: %s)" % (label, want, rc, se.strip()))
    if preexisting:
        with open(out, "rb") as f:
            check(f.read() == b"old", "%s: the file already at --out is unchanged" % label)
    else:
        check(not os.path.exists(out), "%s: nothing written" % label)
    left = [f for f in os.listdir(d) if f.startswith(".convert-")]
    check(not left, "%s: no temporary file left (%s)" % (label, left))


def run_bad(d):
    torch.manual_seed(1)
    sd = CharLM().state_dict()
    s = dict(sd)
    del s["lstm.bias_hh_l1"]
    expect_bad(d, "missing tensor", s, "missing tensor 'lstm.bias_hh_l1'")
    s = dict(sd)
    s["extra.weight"] = torch.zeros(3, 3, 3)
    expect_bad(d, "extra tensor", s, "extra tensor 'extra.weight'", preexisting=True)
    s = dict(sd)
    s["lstm.weight_hh_l1"] = torch.zeros(64, 15)
    expect_bad(d, "wrong shape", s, ["'lstm.weight_hh_l1'", "[64, 15]", "[64, 16]"])
    s = dict(sd)
    s["emb.weight"] = torch.zeros(40, 9)
    expect_bad(d, "embedding width", s, ["'emb.weight'", "[40, 9]"],
               extra=["--map", "embedding=emb,rnn=lstm,head=fc"])
    s = dict(sd)
    s["fc.bias"] = torch.zeros(39)
    expect_bad(d, "head bias shape", s, ["'fc.bias'", "[39]", "[40]"])
    expect_bad(d, "unknown layer", Attn(), "'att' (MultiheadAttention)")
    expect_bad(d, "bidirectional", nn.LSTM(4, 5, bidirectional=True).state_dict(),
               ["bidirectional", "weight_ih_l0_reverse"])
    amb = dict(sd)
    amb["fc2.weight"] = torch.zeros(7, 16)
    amb["fc2.bias"] = torch.zeros(7)
    expect_bad(d, "ambiguous head", amb, ["head is ambiguous", "'fc'", "'fc2'", "--map"])
    mixed = {"a." + k: v for k, v in nn.LSTM(4, 6).state_dict().items()}
    mixed.update({"b." + k: v for k, v in nn.GRU(6, 6).state_dict().items()})
    expect_bad(d, "mixed cells", mixed, ["'b' is gru", "one cell type"])
    expect_bad(d, "not a model", [1, 2, 3], "neither a state_dict nor an nn.Module")
    # --map choosing the head among the candidates works.
    pt = os.path.join(d, "amb.pt")
    amb2 = dict(sd)
    amb2["aux.weight"] = torch.zeros(7, 16)
    torch.save(amb2, pt)
    rc, so, se = convert("torch", pt, "--out", os.path.join(d, "amb.safetensors"), "--map",
                         "embedding=emb,rnn=lstm,head=fc")
    check(rc == 2 and "extra tensor 'aux.weight'" in se,
          "--map with a leftover tensor: refused naming it (%s)" % se.strip())
    # --check above the tolerance: exit 3, output removed.
    torch.save(nn.GRU(3, 4).state_dict(), pt)
    out = os.path.join(d, "tol.safetensors")
    rc, so, se = convert("torch", pt, "--out", out, "--check", "--tolerance", "0")
    check(rc in (0, 3), "--check --tolerance 0: exit 0 (exact) or 3 (exit %d)" % rc)
    if rc == 3:
        check(not os.path.exists(out) and "--check failed" in se,
              "--check failing removes its output and says why (%s)" % se.strip())


def main():
    with tempfile.TemporaryDirectory(prefix="ss-convert-torch-") as d:
        run_good(d)
        run_bad(d)
    return done()


if __name__ == "__main__":
    sys.exit(main())
