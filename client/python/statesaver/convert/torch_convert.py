"""torch_convert -- a torch.save'd state_dict or whole module to a Model.

Recognised: nn.RNN (tanh/relu), nn.LSTM (proj_size, bias=False),
nn.GRU, any number of layers and several stacked modules of the same cell
type (per-layer sizes), one nn.Embedding in front, one nn.Linear behind
(optionally followed, in a whole module, by nn.Softmax/LogSoftmax/Sigmoid/
Tanh over the last dimension: the head activation). Dropout is ignored
(inference). Refused, naming the layer: bidirectional RNNs, mixed cell
types, Embedding with max_norm, modules the worker cannot run (attention,
convolutions, norms, ...), and, in a state_dict, tensors that belong to
none of the parts (extra) or parts without their tensors (missing).

Without --map the parts are found by their tensors: an RNN by
`<p>.weight_ih_l0`, the embedding by a 2-D `<p>.weight` (no bias) of
width input_size, the head by `<p>.weight` [out, P_last] (+ bias [out]).
More than one candidate: refused with the candidates listed (--map).
"""
import re

import numpy as np

from . import mapping
from .errors import ConvertError
from .model import Layer, Model

RNN_KEY = re.compile(r"^(.*?)(weight_ih|weight_hh|bias_ih|bias_hh|weight_hr)_l(\d+)(_reverse)?$")


def parse_map(text):
    """'embedding=emb,rnn=lstm1+lstm2,head=fc' -> dict (rnn: list)."""
    out = {}
    if not text:
        return out
    for part in text.split(","):
        if "=" not in part:
            raise ConvertError("--map %r: expected ROLE=PREFIX items (roles embedding, rnn, head)"
                               % text)
        role, prefix = part.split("=", 1)
        role = role.strip()
        if role not in ("embedding", "rnn", "head"):
            raise ConvertError("--map: unknown role %r (embedding, rnn, head)" % role)
        prefix = prefix.strip().rstrip(".")
        out[role] = [p.rstrip(".") for p in prefix.split("+")] if role == "rnn" else prefix
    return out


def _np(t):
    return t.detach().cpu().numpy().astype(np.float32)


def _dot(prefix):
    return prefix + "." if prefix else ""


class Source:
    """What the file holds: its tensors and, for a whole module, the
    module objects by prefix."""

    def __init__(self, tensors, modules=None, notes=None):
        self.tensors = tensors            # name -> numpy float32
        self.modules = modules or {}      # prefix -> nn.Module (whole module only)
        self.notes = notes or []
        self.order = list(tensors)        # registration order
        self.rnn_info = {}                # prefix -> sizes found (for --check)
        self.activation = None            # (layer, name) of a whole module's final activation


def load(path):
    import torch
    try:
        obj = torch.load(path, map_location="cpu")
    except Exception as e:  # noqa: BLE001 -- every torch.load failure is the file's
        hint = ""
        if isinstance(e, AttributeError) and "Can't get attribute" in str(e):
            hint = (" (a whole module needs its class importable: put the module defining it "
                    "on PYTHONPATH, or save model.state_dict() instead)")
        raise ConvertError("torch.load failed: %s%s" % (e, hint)) from None
    if isinstance(obj, torch.nn.Module):
        return from_module(obj)
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]  # a checkpoint dict
    if not isinstance(obj, dict) or not obj:
        raise ConvertError("neither a state_dict nor an nn.Module (found %s)"
                           % type(obj).__name__)
    tensors = {}
    for k, v in obj.items():
        if not isinstance(v, torch.Tensor):
            raise ConvertError("entry %r is a %s, not a tensor" % (k, type(v).__name__))
        if not v.is_floating_point():
            raise ConvertError("tensor %r has dtype %s: expected floating point" % (k, v.dtype))
        tensors[k] = _np(v)
    return Source(tensors)


ACTIVATION_MODULES = {"Softmax": "softmax", "LogSoftmax": "log_softmax", "Sigmoid": "sigmoid",
                      "Tanh": "tanh"}


def from_module(root):
    import torch.nn as nn
    notes = []
    modules = {}
    activation = None
    for name, mod in root.named_modules():
        kind = type(mod).__name__
        direct = list(mod.named_parameters(recurse=False))
        if isinstance(mod, (nn.RNN, nn.LSTM, nn.GRU, nn.Embedding, nn.Linear)):
            modules[name] = mod
            if isinstance(mod, nn.Embedding) and mod.max_norm is not None:
                raise ConvertError("layer %r (Embedding): max_norm renormalises rows at lookup; "
                                   "the worker looks rows up as they are" % name)
            if isinstance(mod, (nn.RNN, nn.LSTM, nn.GRU)) and mod.dropout:
                notes.append("layer %r: dropout %g between layers ignored (inference)"
                             % (name, mod.dropout))
            continue
        if isinstance(mod, nn.Dropout) or kind in ("Dropout1d", "Dropout2d", "AlphaDropout"):
            notes.append("layer %r (%s): ignored at inference" % (name, kind))
            continue
        if isinstance(mod, nn.Identity):
            continue
        if kind in ACTIVATION_MODULES:
            dim = getattr(mod, "dim", -1)
            if kind in ("Softmax", "LogSoftmax") and dim not in (-1, 2, None):
                raise ConvertError("layer %r (%s over dim %s): the head's softmax runs over the "
                                   "last dimension" % (name, kind, dim))
            if activation is not None:
                raise ConvertError("layer %r (%s): a second output activation" % (name, kind))
            activation = (name, ACTIVATION_MODULES[kind])
            continue
        if direct or kind not in ("Sequential", "ModuleList", "ModuleDict") and name and \
                not list(mod.children()):
            # a leaf we do not know, or a container with parameters of its own
            raise ConvertError("layer %r (%s): not a layer the converter knows (it maps "
                               "Embedding, RNN/LSTM/GRU, Linear, Dropout and a final "
                               "Softmax/LogSoftmax/Sigmoid/Tanh)" % (name, kind))
    tensors = {k: _np(v) for k, v in root.state_dict().items()}
    src = Source(tensors, modules, notes)
    src.activation = activation
    return src


def _rnn_prefixes(src):
    found = []
    for k in src.order:
        m = RNN_KEY.match(k)
        if m and m.group(2) == "weight_ih" and m.group(3) == "0" and not m.group(4):
            p = m.group(1).rstrip(".")
            if p not in found:
                found.append(p)
    return found


def _rnn_layers(src, prefix, act_override):
    """(cell, activation, [(tensors, H, P, source)]) of one RNN module."""
    d = _dot(prefix)
    keys = [k for k in src.tensors if RNN_KEY.match(k) and RNN_KEY.match(k).group(1) == d]
    rev = sorted((not k.startswith(d + "weight_ih"), k) for k in keys if k.endswith("_reverse"))
    if rev:
        raise ConvertError("layer %r is bidirectional (%s): the worker runs one direction"
                           % (prefix or "<root>", rev[0][1]))
    mod = src.modules.get(prefix)
    n = 0
    while (d + "weight_ih_l%d" % n) in src.tensors:
        n += 1
    for k in keys:
        idx = int(RNN_KEY.match(k).group(3))
        if idx >= n:
            raise ConvertError("tensor %r: layer %d of %r has no %sweight_ih_l%d"
                               % (k, idx, prefix, d, idx))

    def need(name):
        if name not in src.tensors:
            raise ConvertError("missing tensor %r" % name)
        return src.tensors[name]

    w_hh0 = need(d + "weight_hh_l0")
    has_proj = (d + "weight_hr_l0") in src.tensors
    if mod is not None:
        kind = type(mod).__name__
        cell = {"LSTM": "lstm", "GRU": "gru", "RNN": "basic_rnn"}[kind]
        activation = "relu" if kind == "RNN" and mod.nonlinearity == "relu" else "tanh"
        if getattr(mod, "bidirectional", False):
            raise ConvertError("layer %r is bidirectional: the worker runs one direction" % prefix)
    else:
        ratio = w_hh0.shape[0] / max(1, w_hh0.shape[1])
        if has_proj:
            cell = "lstm"
        elif ratio == 4:
            cell = "lstm"
        elif ratio == 3:
            cell = "gru"
        elif ratio == 1:
            cell = "basic_rnn"
        else:
            raise ConvertError("tensor %r has shape %s: not an RNN, LSTM or GRU weight_hh"
                               % (d + "weight_hh_l0", list(w_hh0.shape)))
        activation = act_override or "tanh"
    G = {"lstm": 4, "gru": 3, "basic_rnn": 1}[cell]
    has_bias = (d + "bias_ih_l0") in src.tensors or (d + "bias_hh_l0") in src.tensors
    layers = []
    for l in range(n):
        sfx = "_l%d" % l
        w_ih = need(d + "weight_ih" + sfx)
        w_hh = need(d + "weight_hh" + sfx)
        if w_ih.ndim != 2 or w_ih.shape[0] % G:
            raise ConvertError("tensor %r has shape %s: expected [%d*H, in]"
                               % (d + "weight_ih" + sfx, list(w_ih.shape), G))
        H = w_ih.shape[0] // G
        w_hr = src.tensors.get(d + "weight_hr" + sfx)
        if has_proj and w_hr is None:
            raise ConvertError("missing tensor %r" % (d + "weight_hr" + sfx))
        P = w_hr.shape[0] if w_hr is not None else 0
        if w_hr is not None and w_hr.shape != (P, H):
            raise ConvertError("tensor %r has shape %s: expected [proj, %d]"
                               % (d + "weight_hr" + sfx, list(w_hr.shape), H))
        R = P or H
        if w_hh.shape != (G * H, R):
            raise ConvertError("tensor %r has shape %s, expected %s"
                               % (d + "weight_hh" + sfx, list(w_hh.shape), [G * H, R]))
        b_ih = b_hh = None
        if has_bias:
            b_ih = need(d + "bias_ih" + sfx)
            b_hh = need(d + "bias_hh" + sfx)
            for nm, b in ((d + "bias_ih" + sfx, b_ih), (d + "bias_hh" + sfx, b_hh)):
                if b.shape != (G * H,):
                    raise ConvertError("tensor %r has shape %s, expected [%d]"
                                       % (nm, list(b.shape), G * H))
        if cell == "lstm":
            t = mapping.torch_lstm(w_ih, w_hh, b_ih, b_hh, w_hr)
        elif cell == "gru":
            t = mapping.torch_gru(w_ih, w_hh, b_ih, b_hh)
        else:
            t = mapping.torch_rnn(w_ih, w_hh, b_ih, b_hh)
        layers.append((t, H, P, "%s layer %d" % (prefix or "<root>", l), w_ih.shape[1]))
    used = {d + "%s_l%d" % (w, l) for l in range(n)
            for w in ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr")}
    src.rnn_info[prefix] = {"cell": cell, "activation": activation, "layers": n,
                            "bias": has_bias, "H": layers[0][1], "P": layers[0][2],
                            "input": layers[0][4]}
    return cell, activation, layers, used


def _candidates(src, taken, want_bias, width):
    """Prefixes p with a 2-D p.weight of width `width` not yet taken
    (want_bias: True = needs p.bias [out], False = must have no bias,
    None = either)."""
    out = []
    for k in src.order:
        if not k.endswith("weight") or k in taken:
            continue
        p = k[:-len("weight")].rstrip(".")
        if RNN_KEY.match(k):
            continue
        w = src.tensors[k]
        b = src.tensors.get(_dot(p) + "bias")
        if w.ndim != 2 or w.shape[1] != width:
            continue
        if want_bias is False and b is not None:
            continue
        if want_bias is True and b is None:
            continue
        mod = src.modules.get(p)
        if mod is not None:
            import torch.nn as nn
            if want_bias is False and not isinstance(mod, nn.Embedding):
                continue
            if want_bias is not False and not isinstance(mod, nn.Linear):
                continue
        out.append(p)
    return out


def convert(src, mp=None, head_activation=None, rnn_activation=None):
    """A Model and the parts used ({'embedding': p, 'rnn': [p...], 'head': p})."""
    mp = dict(mp or {})
    rnns = mp.get("rnn") or _rnn_prefixes(src)
    if not rnns:
        raise ConvertError("no RNN found: no tensor named '<prefix>weight_ih_l0' (nn.RNN, "
                           "nn.LSTM or nn.GRU); tensors: %s" % ", ".join(src.order[:12]))
    for p in rnns:
        if (_dot(p) + "weight_ih_l0") not in src.tensors:
            raise ConvertError("--map rnn=%s: no tensor %r" % (p, _dot(p) + "weight_ih_l0"))
    used = set()
    cell = act = None
    layers = []
    for p in rnns:
        c, a, ls, u = _rnn_layers(src, p, rnn_activation)
        if cell is not None and (c, a) != (cell, act):
            raise ConvertError("layer %r is %s (%s) after %s (%s): the worker runs one cell type"
                               % (p, c, a, cell, act))
        cell, act = c, a
        layers.extend(ls)
        used |= u
    in0 = layers[0][4]
    for i in range(1, len(layers)):
        prev = layers[i - 1][2] or layers[i - 1][1]
        if layers[i][4] != prev:
            raise ConvertError("%s takes input width %d, %s outputs %d: the stack does not chain"
                               % (layers[i][3], layers[i][4], layers[i - 1][3], prev))
    out_w = layers[-1][2] or layers[-1][1]
    taken = set(used)

    def pick(role, cands):
        if role in mp:
            return mp[role]
        if len(cands) > 1:
            raise ConvertError("%s is ambiguous: candidates %s; choose one with --map %s=PREFIX"
                               % (role, ", ".join(repr(c) for c in cands), role))
        return cands[0] if cands else None

    emb = pick("embedding", _candidates(src, taken, False, in0))
    emb_w = None
    if emb is not None:
        k = _dot(emb) + "weight"
        if k not in src.tensors:
            raise ConvertError("--map embedding=%s: no tensor %r" % (emb, k))
        emb_w = src.tensors[k]
        if emb_w.ndim != 2 or emb_w.shape[1] != in0:
            raise ConvertError("tensor %r has shape %s, expected [vocab, %d] (input width of %s)"
                               % (k, list(emb_w.shape), in0, layers[0][3]))
        taken.add(k)
    head = pick("head", [c for c in _candidates(src, taken, None, out_w) if c != emb])
    head_t = None
    if head is not None:
        k = _dot(head) + "weight"
        if k not in src.tensors:
            raise ConvertError("--map head=%s: no tensor %r" % (head, k))
        w = src.tensors[k]
        if w.ndim != 2 or w.shape[1] != out_w:
            raise ConvertError("tensor %r has shape %s, expected [out, %d] (output width of %s)"
                               % (k, list(w.shape), out_w, layers[-1][3]))
        b = src.tensors.get(_dot(head) + "bias")
        if b is None:
            b = np.zeros(w.shape[0], np.float32)
        else:
            taken.add(_dot(head) + "bias")
            if b.shape != (w.shape[0],):
                raise ConvertError("tensor %r has shape %s, expected [%d]"
                                   % (_dot(head) + "bias", list(b.shape), w.shape[0]))
        taken.add(k)
        head_t = (w.T.copy(), b)
    extra = [k for k in src.order if k not in taken]
    if extra:
        raise ConvertError("extra tensor%s %s: not part of the embedding, the RNN or the head "
                           "(use --map to choose the parts)"
                           % ("s" if len(extra) > 1 else "", ", ".join(repr(k) for k in extra)))
    hact = head_activation
    mod_act = getattr(src, "activation", None)
    if hact is None:
        hact = mod_act[1] if mod_act else "none"
    if head_t is None and hact != "none":
        raise ConvertError("head activation %s without a head (nn.Linear)" % hact)
    model = Model(cell, in0, [Layer(H, t, P, source=s) for t, H, P, s, _ in layers],
                  activation=act, reset_after=(cell == "gru"), forget_bias=0.0,
                  embedding=emb_w, head=head_t, head_activation=hact, notes=list(src.notes))
    model.validate()
    return model, {"embedding": emb, "rnn": rnns, "head": head}
