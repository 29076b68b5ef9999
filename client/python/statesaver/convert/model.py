"""model -- the worker's model in TensorFlow layouts (DESIGN.md, "Worker"
and "Models beyond the RNN core") and its safetensors writer.

A Model is what every converter produces: the cell, per-layer sizes and
kernels in TF layout (kernel [in+R, G*H], LSTM gates i, j, f, o; GRU
reset_after=true kernel [in, 3H] / recurrent_kernel [H, 3H] / bias [2, 3H],
gates z, r, h; reset_after=false gates r, u plus candidate), an optional
embedding [vocab, input_size] and an optional linear head. validate()
checks every shape against the metadata before anything is written;
write() is atomic (a temporary file beside the target, fsync, rename), so a
failed conversion leaves nothing at the target path.
"""
import json
import os
import struct
import tempfile

import numpy as np

from .errors import ConvertError

HEAD_ACTIVATIONS = ("none", "softmax", "log_softmax", "sigmoid", "tanh")
CELLS = ("basic_rnn", "lstm", "gru")


class Layer:
    """One recurrent layer: units H, projection P (lstm, 0 = none) and its
    tensors by suffix (kernel, bias, recurrent_kernel, gates/kernel, ...)."""

    def __init__(self, units, tensors, proj=0, source=""):
        self.units = int(units)
        self.proj = int(proj)
        self.tensors = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in tensors.items()}
        self.source = source  # the source layer's name, for messages

    def out_width(self):
        return self.proj if self.proj else self.units


class Model:
    """A converted model (see the module doc)."""

    def __init__(self, cell, input_size, layers, activation="tanh", reset_after=False,
                 forget_bias=0.0, embedding=None, head=None, head_activation="none",
                 notes=None):
        if cell not in CELLS:
            raise ConvertError("cell %r: expected one of %s" % (cell, ", ".join(CELLS)))
        if activation not in ("tanh", "relu"):
            raise ConvertError("activation %r: the worker has tanh and relu" % activation)
        if head_activation not in HEAD_ACTIVATIONS:
            raise ConvertError("head activation %r: expected one of %s"
                               % (head_activation, ", ".join(HEAD_ACTIVATIONS)))
        self.cell = cell
        self.input_size = int(input_size)
        self.layers = list(layers)
        self.activation = activation
        self.reset_after = bool(reset_after)
        self.forget_bias = float(forget_bias)
        self.embedding = None if embedding is None else np.ascontiguousarray(embedding, np.float32)
        self.head = None
        if head is not None:
            self.head = tuple(np.ascontiguousarray(t, np.float32) for t in head)
        self.head_activation = head_activation
        self.notes = list(notes or [])  # what was ignored (dropout, ...), printed by the CLI

    # -- shapes ----------------------------------------------------------------
    def expected(self, l, layer, in_l):
        """{suffix: shape} of layer l with input width in_l."""
        H, P = layer.units, layer.out_width()
        if self.cell == "basic_rnn":
            return {"kernel": (in_l + H, H), "bias": (H,)}
        if self.cell == "lstm":
            e = {"kernel": (in_l + P, 4 * H), "bias": (4 * H,)}
            if layer.proj:
                e["projection/kernel"] = (H, P)
            return e
        if self.reset_after:
            return {"kernel": (in_l, 3 * H), "recurrent_kernel": (H, 3 * H), "bias": (2, 3 * H)}
        return {"gates/kernel": (in_l + H, 2 * H), "gates/bias": (2 * H,),
                "candidate/kernel": (in_l + H, H), "candidate/bias": (H,)}

    def output_size(self):
        return self.layers[-1].out_width()

    def validate(self):
        """Every tensor has the shape the worker will demand (raises)."""
        if not self.layers:
            raise ConvertError("no recurrent layer found")
        if len(self.layers) > 16:
            raise ConvertError("%d recurrent layers: the worker takes at most 16" % len(self.layers))
        if self.cell != "lstm" and any(l.proj for l in self.layers):
            raise ConvertError("a projection applies to lstm only")
        in_l = self.input_size
        for i, layer in enumerate(self.layers):
            want = self.expected(i, layer, in_l)
            got = set(layer.tensors)
            if got != set(want):
                raise ConvertError("layer %d (%s): tensors %s, expected %s"
                                   % (i, layer.source, sorted(got), sorted(want)))
            for k, shape in want.items():
                t = layer.tensors[k]
                if tuple(t.shape) != tuple(shape):
                    raise ConvertError("layer %d (%s): cell_%d/%s has shape %s, expected %s"
                                       % (i, layer.source, i, k, list(t.shape), list(shape)))
                if not np.all(np.isfinite(t)):
                    raise ConvertError("layer %d (%s): cell_%d/%s holds NaN or infinity"
                                       % (i, layer.source, i, k))
            in_l = layer.out_width()
        if self.embedding is not None:
            e = self.embedding
            if e.ndim != 2 or e.shape[1] != self.input_size or e.shape[0] < 1:
                raise ConvertError("embedding has shape %s, expected [vocab, %d]"
                                   % (list(e.shape), self.input_size))
        if self.head is not None:
            k, b = self.head
            if k.ndim != 2 or k.shape[0] != self.output_size() or b.shape != (k.shape[1],):
                raise ConvertError("head kernel %s / bias %s: expected [%d, out] and [out]"
                                   % (list(k.shape), list(b.shape), self.output_size()))

    def state_names(self):
        names = []
        for i in range(len(self.layers)):
            if self.cell == "lstm":
                names.append("cell_%d/c" % i)
            names.append("cell_%d/h" % i)
        return names

    def state_sizes(self):
        sizes = []
        for layer in self.layers:
            if self.cell == "lstm":
                sizes.append(layer.units)
                sizes.append(layer.out_width())
            else:
                sizes.append(layer.units)
        return sizes

    def metadata(self):
        units = [l.units for l in self.layers]
        meta = {
            "cell": self.cell,
            "input_size": str(self.input_size),
            "num_layers": str(len(self.layers)),
            "num_units": ",".join(str(u) for u in units) if len(set(units)) > 1 else str(units[0]),
            "activation": self.activation,
        }
        if self.cell == "lstm":
            meta["forget_bias"] = repr(self.forget_bias)
            projs = [l.proj for l in self.layers]
            if any(projs):
                meta["num_proj"] = (",".join(str(p) for p in projs) if len(set(projs)) > 1
                                    else str(projs[0]))
        if self.cell == "gru":
            meta["reset_after"] = "true" if self.reset_after else "false"
        if self.embedding is not None:
            meta["embedding"] = "true"
        if self.head is not None:
            meta["head"] = "linear"
            meta["head_activation"] = self.head_activation
        return meta

    def tensors(self):
        out = {}
        for i, layer in enumerate(self.layers):
            for k, v in layer.tensors.items():
                out["cell_%d/%s" % (i, k)] = v
        if self.embedding is not None:
            out["embedding/weights"] = self.embedding
        if self.head is not None:
            out["head/kernel"], out["head/bias"] = self.head
        return out

    def describe(self):
        s = "%s, input %d, layers %s" % (self.cell, self.input_size,
                                          "x".join(str(l.units) for l in self.layers))
        if any(l.proj for l in self.layers):
            s += " (proj %s)" % ",".join(str(l.proj) for l in self.layers)
        if self.cell == "gru":
            s += ", reset_after=%s" % str(self.reset_after).lower()
        if self.embedding is not None:
            s += ", embedding %dx%d" % self.embedding.shape
        if self.head is not None:
            s += ", head %dx%d %s" % (self.head[0].shape + (self.head_activation,))
        return s

    def write(self, path):
        self.validate()
        write_safetensors(path, self.tensors(), self.metadata())


def safetensors_bytes(tensors, metadata):
    """The file's bytes: sorted header (same input, same bytes), F32 data."""
    header = {"__metadata__": dict(metadata)}
    blobs = []
    off = 0
    for name in sorted(tensors):
        a = np.ascontiguousarray(tensors[name], dtype="<f4")
        b = a.tobytes()
        header[name] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    text = json.dumps(header, separators=(",", ":"), sort_keys=True).encode()
    text += b" " * (-len(text) % 64)  # the worker then uses the data in place
    return struct.pack("<Q", len(text)) + text + b"".join(blobs)


def write_safetensors(path, tensors, metadata):
    """Atomic write: nothing at path unless the whole file is there."""
    data = safetensors_bytes(tensors, metadata)
    d = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".convert-", suffix=".tmp", dir=d)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def read_safetensors(path):
    """(tensors, metadata) of a safetensors file of F32 tensors."""
    with open(path, "rb") as f:
        raw = f.read()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    meta = header.pop("__metadata__", {})
    base = 8 + n
    out = {}
    for name, e in header.items():
        b, end = e["data_offsets"]
        dt = {"F32": "<f4", "I32": "<i4", "I64": "<i8", "F64": "<f8"}[e["dtype"]]
        out[name] = np.frombuffer(raw[base + b:base + end], dtype=dt).reshape(e["shape"]).copy()
    return out, meta
