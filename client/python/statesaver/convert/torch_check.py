"""torch_check -- --check for the torch converter: run the source model in
PyTorch and the converted file in `statesaver-worker unroll` on the same
random inputs (token ids when there is an embedding), random initial
states and per-row lengths (packed sequences on the torch side), and
report the worst relative difference |ours - torch| / max(1, |torch|) of
the outputs (valid steps; rows past their length are zero on both sides)
and of every final state.

The source model is the file's own module objects for a whole module, or
nn.RNN/LSTM/GRU/Embedding/Linear built from the state_dict's sizes and
loaded with load_state_dict(strict=True) for a state_dict.
"""
import numpy as np

from . import runner
from .runner import random_case
from .errors import ConvertError


def _modules(src, parts):
    import torch.nn as nn
    out = {}
    for p in parts["rnn"]:
        mod = src.modules.get(p)
        if mod is None:
            info = src.rnn_info[p]
            kw = dict(input_size=info["input"], hidden_size=info["H"], num_layers=info["layers"],
                      bias=info["bias"])
            if info["cell"] == "lstm":
                mod = nn.LSTM(proj_size=info["P"], **kw)
            elif info["cell"] == "gru":
                mod = nn.GRU(**kw)
            else:
                mod = nn.RNN(nonlinearity=info["activation"], **kw)
            mod.load_state_dict(_sub(src, p), strict=True)
        out[p] = mod
    for role in ("embedding", "head"):
        p = parts[role]
        if p is None:
            continue
        mod = src.modules.get(p)
        if mod is None:
            sd = _sub(src, p)
            w = sd["weight"]
            if role == "embedding":
                mod = nn.Embedding(w.shape[0], w.shape[1])
            else:
                mod = nn.Linear(w.shape[1], w.shape[0], bias="bias" in sd)
            mod.load_state_dict(sd, strict=True)
        out[p] = mod
    for m in out.values():
        m.eval()
    return out


def _sub(src, prefix):
    import torch
    d = prefix + "." if prefix else ""
    return {k[len(d):]: torch.from_numpy(v.copy()) for k, v in src.tensors.items()
            if k.startswith(d) and "." not in k[len(d):]}


def torch_forward(src, parts, model, inputs, lengths, states):
    """Torch's outputs [T, B, out] (zero past each length) and final
    states {name: [B, size]}; inputs time-major, states as ours."""
    import torch
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence
    mods = _modules(src, parts)
    T, B = inputs.shape[0], inputs.shape[1]
    with torch.no_grad():
        x = torch.from_numpy(np.ascontiguousarray(inputs))
        if parts["embedding"] is not None:
            x = mods[parts["embedding"]](x.long())
        lens = torch.from_numpy(np.asarray(lengths, np.int64))
        seq = pack_padded_sequence(x, lens, batch_first=False, enforce_sorted=False)
        finals = {}
        layer = 0
        for p in parts["rnn"]:
            mod = mods[p]
            n = mod.num_layers
            if model.cell == "lstm":
                c0 = torch.stack([torch.from_numpy(states["cell_%d/c" % (layer + i)])
                                  for i in range(n)])
                h0 = torch.stack([torch.from_numpy(states["cell_%d/h" % (layer + i)])
                                  for i in range(n)])
                seq, (hn, cn) = mod(seq, (h0, c0))
                for i in range(n):
                    finals["cell_%d/c" % (layer + i)] = cn[i].numpy()
                    finals["cell_%d/h" % (layer + i)] = hn[i].numpy()
            else:
                h0 = torch.stack([torch.from_numpy(states["cell_%d/h" % (layer + i)])
                                  for i in range(n)])
                seq, hn = mod(seq, h0)
                for i in range(n):
                    finals["cell_%d/h" % (layer + i)] = hn[i].numpy()
            layer += n
        y, _ = pad_packed_sequence(seq, batch_first=False, total_length=T)
        if parts["head"] is not None:
            y = mods[parts["head"]](y)
            a = model.head_activation
            if a == "softmax":
                y = torch.softmax(y, -1)
            elif a == "log_softmax":
                y = torch.log_softmax(y, -1)
            elif a == "sigmoid":
                y = torch.sigmoid(y)
            elif a == "tanh":
                y = torch.tanh(y)
        y = y.numpy().copy()
    for b in range(B):
        y[int(lengths[b]):, b] = 0.0
    return y, finals


def check(src, parts, model, path, worker=None, T=9, B=4, seed=1234):
    """Worst relative difference between torch and the worker on `path`."""
    try:
        import torch  # noqa: F401
    except ImportError:
        raise ConvertError("--check needs torch") from None
    inputs, lengths, states = random_case(model, T, B, seed)
    want_y, want_s = torch_forward(src, parts, model, inputs, lengths, states)
    got_y, got_s = runner.unroll(runner.find_worker(worker), path, inputs, model.state_names(),
                                 lengths=lengths, states=states)
    worst = {"outputs": runner.worst_rel(got_y, want_y)}
    for n in model.state_names():
        worst[n] = runner.worst_rel(got_s[n], want_s[n])
    return worst
