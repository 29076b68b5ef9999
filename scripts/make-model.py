#!/usr/bin/python3
"""make-model -- write a small RNN model as safetensors (numpy only).

The layout is the one of docs/worker.md (TensorFlow kernels [in+H, gates*H],
LSTM gate order i, j, f, o; GRU gates r, u plus candidate). Weights are
uniform in [-1/sqrt(H), 1/sqrt(H)] from numpy's PCG64 with a fixed seed,
and the header is written with sorted keys, so the same arguments always
give the same bytes.

The bundled models/small-lstm.safetensors is
    scripts/make-model.py models/small-lstm.safetensors
(2-layer LSTM, input_size 8, num_units 32, seed 7450).

usage: make-model.py OUT.safetensors [--cell lstm|gru|basic_rnn]
           [--input-size N] [--num-units N] [--num-layers N] [--seed N]
           [--reset-after] [--forget-bias F]
"""
import argparse
import json
import struct
import sys

import numpy as np


def layer_tensors(cell, layer, in_l, h, reset_after):
    """(name, shape) of one layer's tensors, in file order."""
    p = "cell_%d/" % layer
    if cell == "lstm":
        return [(p + "kernel", [in_l + h, 4 * h]), (p + "bias", [4 * h])]
    if cell == "basic_rnn":
        return [(p + "kernel", [in_l + h, h]), (p + "bias", [h])]
    if reset_after:
        return [(p + "kernel", [in_l, 3 * h]), (p + "recurrent_kernel", [h, 3 * h]),
                (p + "bias", [2, 3 * h])]
    return [(p + "gates/kernel", [in_l + h, 2 * h]), (p + "gates/bias", [2 * h]),
            (p + "candidate/kernel", [in_l + h, h]), (p + "candidate/bias", [h])]


def state_names(cell, layers):
    names = []
    for l in range(layers):
        if cell == "lstm":
            names += ["cell_%d/c" % l, "cell_%d/h" % l]
        else:
            names.append("cell_%d/h" % l)
    return names


def model_bytes(cell, input_size, num_units, num_layers, seed, reset_after, forget_bias):
    rng = np.random.Generator(np.random.PCG64(seed))
    scale = 1.0 / np.sqrt(num_units)
    meta = {
        "cell": cell,
        "input_size": str(input_size),
        "num_units": str(num_units),
        "num_layers": str(num_layers),
        "state_names": ",".join(state_names(cell, num_layers)),
    }
    if cell == "lstm":
        meta["forget_bias"] = repr(float(forget_bias))
    if cell == "gru":
        meta["reset_after"] = "true" if reset_after else "false"
    header = {"__metadata__": meta}
    blobs = []
    offset = 0
    for layer in range(num_layers):
        in_l = input_size if layer == 0 else num_units
        for name, shape in layer_tensors(cell, layer, in_l, num_units, reset_after):
            data = rng.uniform(-scale, scale, size=shape).astype("<f4").tobytes()
            header[name] = {"dtype": "F32", "shape": shape,
                            "data_offsets": [offset, offset + len(data)]}
            offset += len(data)
            blobs.append(data)
    text = json.dumps(header, separators=(",", ":"), sort_keys=True).encode()
    text += b" " * (-len(text) % 8)  # keep the data 8-byte aligned
    return struct.pack("<Q", len(text)) + text + b"".join(blobs)


def main(argv):
    ap = argparse.ArgumentParser(description="Write a small RNN model (safetensors).")
    ap.add_argument("out")
    ap.add_argument("--cell", choices=["lstm", "gru", "basic_rnn"], default="lstm")
    ap.add_argument("--input-size", type=int, default=8)
    ap.add_argument("--num-units", type=int, default=32)
    ap.add_argument("--num-layers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=7450)
    ap.add_argument("--reset-after", action="store_true", help="gru: Keras/cuDNN variant")
    ap.add_argument("--forget-bias", type=float, default=1.0)
    a = ap.parse_args(argv[1:])
    if min(a.input_size, a.num_units, a.num_layers) < 1 or a.num_layers > 16:
        ap.error("sizes must be >= 1 and --num-layers <= 16")
    data = model_bytes(a.cell, a.input_size, a.num_units, a.num_layers, a.seed,
                       a.reset_after, a.forget_bias)
    with open(a.out, "wb") as f:
        f.write(data)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
