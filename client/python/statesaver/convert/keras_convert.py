"""keras_convert -- a Keras model saved as HDF5 to a Model.

Layout followed: Keras 2.x `model.save("m.h5")` / `save_format="h5"`
(checked against the layout Keras 2.11, TensorFlow 2.11, writes;
unchanged since Keras 2.2): root attributes `keras_version`, `backend`
and `model_config` (the model's JSON: class_name Sequential, Functional
or Model, config.layers[] each with class_name and config), and a group
`model_weights` whose attribute `layer_names` lists the layers in order;
each `model_weights/<layer>` group has the attribute `weight_names`
(e.g. `lstm/lstm_cell/kernel:0`), and each weight is the dataset
`model_weights/<layer>/<weight_name>`. A `save_weights("w.h5")` file
(the layer groups at the root, no model_config) is read too: the layer
types then come from the weight names, the activations are Keras's
defaults (tanh), and GRU's reset_after from the bias shape.

Recognised: Embedding (first), SimpleRNN / LSTM / GRU (one cell type,
stacked; all but the last with return_sequences=True), one Dense or
TimeDistributed(Dense) after them (activation linear, softmax, sigmoid or
tanh; or an Activation layer after a linear Dense); InputLayer, Dropout,
SpatialDropout1D, GaussianNoise/GaussianDropout (identity at inference)
and Masking (use sequence_length) are skipped with a note. Refused, naming
the layer: Bidirectional, go_backwards, recurrent activations other than
sigmoid (hard_sigmoid), activations other than tanh/relu, attention and
every other layer.
"""
import json

import numpy as np

from . import mapping
from .errors import ConvertError
from .model import Layer, Model

SKIP = {"InputLayer": None, "Dropout": "ignored at inference",
        "SpatialDropout1D": "ignored at inference", "GaussianNoise": "identity at inference",
        "GaussianDropout": "identity at inference",
        "Masking": "masking skipped: pass sequence_length for padded rows instead"}
RNNS = {"SimpleRNN": "basic_rnn", "LSTM": "lstm", "GRU": "gru"}
DENSE_ACT = {"linear": "none", None: "none", "softmax": "softmax", "sigmoid": "sigmoid",
             "tanh": "tanh"}
CELL_OF_WEIGHT = {"lstm_cell": "LSTM", "gru_cell": "GRU", "simple_rnn_cell": "SimpleRNN"}


class Source:
    """The layers of the file in order: (name, class_name, config, {weight: array})."""

    def __init__(self, layers, version, notes):
        self.layers = layers
        self.version = version
        self.notes = notes
        self.used = []


def _str(v):
    return v.decode("utf-8") if isinstance(v, bytes) else str(v)


def load(path):
    try:
        import h5py
    except ImportError:
        raise ConvertError("the keras converter needs h5py (Debian: python3-h5py)") from None
    try:
        f = h5py.File(path, "r")
    except Exception as e:  # noqa: BLE001 -- any failure to open is the file's
        raise ConvertError("not a readable HDF5 file: %s" % e) from None
    try:
        return _read(f, path)
    except ConvertError:
        raise
    except (KeyError, ValueError, OSError, TypeError) as e:
        raise ConvertError("damaged or not a Keras HDF5 model: %s" % e) from None
    finally:
        f.close()


def _read(f, path):
    notes = []
    version = _str(f.attrs.get("keras_version", "unknown"))
    g = f["model_weights"] if "model_weights" in f else f
    if "layer_names" not in g.attrs:
        raise ConvertError("no 'layer_names' attribute (model_weights): not a Keras HDF5 "
                           "model")
    names = [_str(n) for n in g.attrs["layer_names"]]
    configs = {}
    if "model_config" in f.attrs:
        cfg = json.loads(_str(f.attrs["model_config"]))
        cls = cfg.get("class_name")
        if cls not in ("Sequential", "Functional", "Model"):
            raise ConvertError("model_config class %r: expected Sequential or Functional" % cls)
        for lc in cfg["config"]["layers"]:
            c = lc.get("config", {})
            inbound = lc.get("inbound_nodes") or []
            if len(inbound) > 1 or (inbound and len(inbound[0]) > 1):
                raise ConvertError("layer %r (%s) has several inputs: only a chain of layers "
                                   "converts" % (c.get("name"), lc.get("class_name")))
            configs[c.get("name")] = (lc.get("class_name"), c)
        order = [lc.get("config", {}).get("name") for lc in cfg["config"]["layers"]]
    else:
        notes.append("no model_config (a save_weights file): layer types from the weight "
                     "names, Keras's default activations")
        order = names
    layers = []
    for name in order:
        weights = {}
        if name in g:
            lg = g[name]
            for wn in (_str(w) for w in lg.attrs.get("weight_names", [])):
                if wn not in lg:
                    raise ConvertError("layer %r: weight %r listed in weight_names is missing"
                                       % (name, wn))
                short = wn.split("/")[-1].split(":")[0]
                weights[short] = np.asarray(lg[wn][()], dtype=np.float32)
                weights.setdefault("_names", []).append(wn)
        if name in configs:
            cls, c = configs[name]
        else:
            cls, c = _infer(name, weights), {"name": name}
        layers.append((name, cls, c, weights))
    return Source(layers, version, notes)


def _infer(name, weights):
    wn = " ".join(weights.get("_names", []))
    for cell, cls in CELL_OF_WEIGHT.items():
        if cell in wn:
            return cls
    if "embeddings" in weights:
        return "Embedding"
    if "kernel" in weights:
        return "Dense"
    if not weights:
        return "InputLayer"
    raise ConvertError("layer %r: cannot tell its type from weights %s" % (name, wn))


def _need(name, weights, key, shape=None):
    if key not in weights:
        raise ConvertError("layer %r: missing weight %r (has %s)"
                           % (name, key, ", ".join(weights.get("_names", [])) or "none"))
    w = weights[key]
    if shape is not None and tuple(w.shape) != tuple(shape):
        raise ConvertError("layer %r: weight %r has shape %s, expected %s"
                           % (name, key, list(w.shape), list(shape)))
    return w


def convert(src):
    notes = list(src.notes)
    emb = None
    cell = act = None
    reset_after = None
    layers = []
    in0 = None
    head = None
    head_act = "none"
    rnn_cfgs = []
    for name, cls, c, w in src.layers:
        if cls in SKIP:
            if SKIP[cls]:
                notes.append("layer %r (%s): %s" % (name, cls, SKIP[cls]))
            continue
        if cls == "Bidirectional":
            raise ConvertError("layer %r is Bidirectional: the worker runs one direction" % name)
        if cls == "Embedding":
            if layers or emb is not None:
                raise ConvertError("layer %r (Embedding) is not the first layer" % name)
            e = _need(name, w, "embeddings")
            if e.ndim != 2:
                raise ConvertError("layer %r: weight 'embeddings' has shape %s, expected "
                                   "[input_dim, output_dim]" % (name, list(e.shape)))
            if "input_dim" in c and (c["input_dim"], c["output_dim"]) != e.shape:
                raise ConvertError("layer %r: weight 'embeddings' has shape %s, its config says "
                                   "[%d, %d]" % (name, list(e.shape), c["input_dim"],
                                                 c["output_dim"]))
            if c.get("mask_zero"):
                notes.append("layer %r: mask_zero skipped: pass sequence_length for padded rows"
                             % name)
            emb = e
            src.used.append(name)
            continue
        if cls in RNNS:
            if head is not None:
                raise ConvertError("layer %r (%s) after the Dense head" % (name, cls))
            if cell is not None and RNNS[cls] != cell:
                raise ConvertError("layer %r is %s after %s layers: the worker runs one cell type"
                                   % (name, cls, cell))
            if c.get("go_backwards"):
                raise ConvertError("layer %r (%s): go_backwards runs the sequence in reverse; "
                                   "the worker runs it forwards" % (name, cls))
            a = c.get("activation", "tanh")
            if a not in ("tanh", "relu"):
                raise ConvertError("layer %r (%s): activation %r (the worker has tanh and relu)"
                                   % (name, cls, a))
            if act is not None and a != act:
                raise ConvertError("layer %r: activation %s after %s layers" % (name, a, act))
            ra = c.get("recurrent_activation", "sigmoid")
            if cls != "SimpleRNN" and ra != "sigmoid":
                raise ConvertError("layer %r (%s): recurrent_activation %r (the worker's gates "
                                   "use the exact sigmoid)" % (name, cls, ra))
            if c.get("dropout") or c.get("recurrent_dropout"):
                notes.append("layer %r: dropout/recurrent_dropout ignored at inference" % name)
            if c.get("stateful"):
                notes.append("layer %r: stateful: statesaver keeps the state between segments"
                             % name)
            cell, act = RNNS[cls], a
            k = _need(name, w, "kernel")
            r = _need(name, w, "recurrent_kernel")
            if k.ndim != 2 or r.ndim != 2:
                raise ConvertError("layer %r: kernel %s / recurrent_kernel %s are not matrices"
                                   % (name, list(k.shape), list(r.shape)))
            H = r.shape[0]
            G = {"basic_rnn": 1, "lstm": 4, "gru": 3}[cell]
            in_l = k.shape[0]
            if layers and in_l != layers[-1].out_width():
                raise ConvertError("layer %r: kernel has shape %s, expected [%d, %d] (the "
                                   "previous layer's output width)"
                                   % (name, list(k.shape), layers[-1].out_width(), G * H))
            if emb is not None and not layers and in_l != emb.shape[1]:
                raise ConvertError("layer %r: kernel has shape %s, expected [%d, %d] (the "
                                   "embedding's width)" % (name, list(k.shape), emb.shape[1],
                                                           G * H))
            _need(name, w, "kernel", (in_l, G * H))
            _need(name, w, "recurrent_kernel", (H, G * H))
            if "units" in c and c["units"] != H:
                raise ConvertError("layer %r: recurrent_kernel has %d rows, its config says "
                                   "units=%d" % (name, H, c["units"]))
            use_bias = c.get("use_bias", "bias" in w)
            b = None
            if cell == "gru":
                ra_flag = c.get("reset_after")
                if ra_flag is None:
                    ra_flag = "bias" in w and w["bias"].ndim == 2
                if reset_after is not None and ra_flag != reset_after:
                    raise ConvertError("layer %r: reset_after=%s after layers with %s"
                                       % (name, ra_flag, reset_after))
                reset_after = bool(ra_flag)
                if use_bias:
                    b = _need(name, w, "bias", (2, 3 * H) if reset_after else (3 * H,))
                t = mapping.keras_gru(k, r, b, reset_after)
            else:
                if use_bias:
                    b = _need(name, w, "bias", (G * H,))
                t = (mapping.keras_lstm if cell == "lstm" else mapping.keras_simple_rnn)(k, r, b)
            if in0 is None:
                in0 = in_l
            layers.append(Layer(H, t, 0, source=name))
            rnn_cfgs.append((name, c))
            src.used.append(name)
            continue
        if cls in ("Dense", "TimeDistributed"):
            if cls == "TimeDistributed":
                inner = c.get("layer", {})
                if inner.get("class_name") != "Dense":
                    raise ConvertError("layer %r: TimeDistributed(%s): only Dense converts"
                                       % (name, inner.get("class_name")))
                c = inner.get("config", {})
            if not layers:
                raise ConvertError("layer %r (Dense) before any recurrent layer" % name)
            if head is not None:
                raise ConvertError("layer %r: a second Dense; the worker has one linear head"
                                   % name)
            a = c.get("activation", "linear")
            if a not in DENSE_ACT:
                raise ConvertError("layer %r (Dense): activation %r (the head has linear, "
                                   "softmax, sigmoid, tanh)" % (name, a))
            k = _need(name, w, "kernel")
            P = layers[-1].out_width()
            if k.ndim != 2 or k.shape[0] != P:
                raise ConvertError("layer %r: weight 'kernel' has shape %s, expected [%d, units]"
                                   % (name, list(k.shape), P))
            if c.get("use_bias", "bias" in w):
                b = _need(name, w, "bias", (k.shape[1],))
            else:
                b = np.zeros(k.shape[1], np.float32)
            head = (k, b)
            head_act = DENSE_ACT[a]
            src.used.append(name)
            continue
        if cls == "Activation" and head is not None and head_act == "none":
            a = c.get("activation")
            if a not in DENSE_ACT:
                raise ConvertError("layer %r (Activation %r): the head has softmax, sigmoid, "
                                   "tanh" % (name, a))
            head_act = DENSE_ACT[a]
            src.used.append(name)
            continue
        raise ConvertError("layer %r (%s): not a layer the converter knows (it maps Embedding, "
                           "SimpleRNN/LSTM/GRU, Dense)" % (name, cls))
    if not layers:
        raise ConvertError("no SimpleRNN, LSTM or GRU layer found")
    for name, c in rnn_cfgs[:-1]:
        if c.get("return_sequences") is False:
            raise ConvertError("layer %r has return_sequences=False but feeds another recurrent "
                               "layer: the worker feeds every step" % name)
    last, lc = rnn_cfgs[-1]
    if lc.get("return_sequences") is False:
        notes.append("layer %r: return_sequences=False: the worker outputs every step; Keras's "
                     "output is the one at each row's last step" % last)
    model = Model(cell, in0, layers, activation=act, reset_after=bool(reset_after),
                  forget_bias=0.0, embedding=emb, head=head, head_activation=head_act,
                  notes=notes)
    model.validate()
    model.keras = src  # the source layers, for --check
    return model
