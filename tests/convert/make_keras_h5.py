#!/usr/bin/python3
"""make_keras_h5 -- write Keras HDF5 model files with h5py alone (no
TensorFlow), in the layout Keras 2.11 (TensorFlow 2.11) writes for
`model.save("m.h5")`:

  /                      attrs keras_version="2.11.0", backend="tensorflow",
                         model_config=<JSON: {"class_name": "Sequential",
                         "config": {"name": ..., "layers": [{"class_name",
                         "config": {...}}, ...]}}>
  /model_weights         attrs layer_names=[b"embedding", b"lstm", ...],
                         backend, keras_version
  /model_weights/<layer> attrs weight_names=[b"lstm/lstm_cell/kernel:0", ...]
  /model_weights/<layer>/<weight_name>   the float32 dataset

Weight names as Keras 2.11 gives them: Embedding `embedding/embeddings:0`;
SimpleRNN/LSTM/GRU `<layer>/<cell>_cell/{kernel,recurrent_kernel,bias}:0`
(cells simple_rnn_cell, lstm_cell, gru_cell); Dense
`dense/{kernel,bias}:0`; TimeDistributed(Dense) `time_distributed/{kernel,bias}:0`.
A save_weights file (WEIGHTS_ONLY) has the layer groups at the root and no
model_config. Keras layouts: kernel [in, G*units],
recurrent_kernel [units, G*units]; LSTM gates i, f, c, o; GRU z, r, h
(bias [2, 3*units] with reset_after=True, [3*units] without).
unit_forget_bias=True is reproduced as Keras initialises it (forget block
of the bias at 1) plus noise, as after training.

usage: make_keras_h5.py OUT_DIR     writes every case of CASES (and the
                                    bad-input files) into OUT_DIR
"""
import json
import os
import sys

import h5py
import numpy as np

KERAS_VERSION = "2.11.0"


def rnn_layer(cls, name, units, in_dim, rng, return_sequences=True, **cfg):
    G = {"SimpleRNN": 1, "LSTM": 4, "GRU": 3}[cls]
    cell = {"SimpleRNN": "simple_rnn_cell", "LSTM": "lstm_cell", "GRU": "gru_cell"}[cls]
    s = 1.0 / np.sqrt(units)
    k = rng.uniform(-s, s, (in_dim, G * units))
    r = rng.uniform(-s, s, (units, G * units))
    config = {"name": name, "trainable": True, "dtype": "float32", "units": units,
              "activation": cfg.get("activation", "tanh"),
              "return_sequences": return_sequences, "return_state": False,
              "go_backwards": cfg.get("go_backwards", False), "stateful": False,
              "unroll": False, "time_major": False, "use_bias": cfg.get("use_bias", True),
              "dropout": cfg.get("dropout", 0.0), "recurrent_dropout": 0.0}
    weights = [("kernel", k), ("recurrent_kernel", r)]
    if cls != "SimpleRNN":
        config["recurrent_activation"] = cfg.get("recurrent_activation", "sigmoid")
    if cls == "LSTM":
        config["unit_forget_bias"] = cfg.get("unit_forget_bias", True)
        config["implementation"] = 2
        b = rng.uniform(-0.1, 0.1, 4 * units)
        if config["unit_forget_bias"]:
            b[units:2 * units] += 1.0
    elif cls == "GRU":
        config["reset_after"] = cfg.get("reset_after", True)
        config["implementation"] = 2
        b = rng.uniform(-0.1, 0.1, (2, 3 * units) if config["reset_after"] else 3 * units)
    else:
        b = rng.uniform(-0.1, 0.1, units)
    if config["use_bias"]:
        weights.append(("bias", b))
    names = ["%s/%s/%s:0" % (name, cell, w) for w, _ in weights]
    return {"class_name": cls, "config": config}, list(zip(names, [w for _, w in weights]))


def embedding_layer(name, vocab, dim, rng, mask_zero=False):
    cfg = {"name": name, "trainable": True, "dtype": "float32", "input_dim": vocab,
           "output_dim": dim, "mask_zero": mask_zero, "input_length": None}
    return {"class_name": "Embedding", "config": cfg}, [
        ("%s/embeddings:0" % name, rng.uniform(-0.5, 0.5, (vocab, dim)))]


def dense_layer(name, units, in_dim, rng, activation="linear"):
    cfg = {"name": name, "trainable": True, "dtype": "float32", "units": units,
           "activation": activation, "use_bias": True}
    return {"class_name": "Dense", "config": cfg}, [
        ("%s/kernel:0" % name, rng.uniform(-0.3, 0.3, (in_dim, units))),
        ("%s/bias:0" % name, rng.uniform(-0.1, 0.1, units))]


def time_distributed_dense(name, units, in_dim, rng, activation="linear"):
    inner, ws = dense_layer("dense", units, in_dim, rng, activation)
    cfg = {"name": name, "trainable": True, "dtype": "float32", "layer": inner}
    return {"class_name": "TimeDistributed", "config": cfg}, [
        (n.replace("dense/", name + "/", 1), a) for n, a in ws]


def other_layer(cls, name, weights=(), **cfg):
    c = {"name": name, "trainable": True, "dtype": "float32"}
    c.update(cfg)
    return {"class_name": cls, "config": c}, list(weights)


def write_weights_only(path, layers):
    """The layout of model.save_weights("w.h5"): the layer groups at the
    root (attribute layer_names there), no model_config."""
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = [lc["config"]["name"].encode() for lc, _ in layers]
        f.attrs["backend"] = "tensorflow"
        f.attrs["keras_version"] = KERAS_VERSION
        for lc, ws in layers:
            lg = f.create_group(lc["config"]["name"])
            lg.attrs["weight_names"] = [n.encode() for n, _ in ws]
            for n, a in ws:
                lg.create_dataset(n, data=np.asarray(a, np.float32))


def write(path, layers, drop_weight=None):
    """Write the layers ((config, [(weight_name, array)])) as Keras does."""
    cfg = {"class_name": "Sequential",
           "config": {"name": "sequential", "layers": [lc for lc, _ in layers]}}
    with h5py.File(path, "w") as f:
        f.attrs["keras_version"] = KERAS_VERSION
        f.attrs["backend"] = "tensorflow"
        f.attrs["model_config"] = json.dumps(cfg)
        g = f.create_group("model_weights")
        g.attrs["layer_names"] = [lc["config"]["name"].encode() for lc, _ in layers]
        g.attrs["backend"] = "tensorflow"
        g.attrs["keras_version"] = KERAS_VERSION
        for lc, ws in layers:
            lg = g.create_group(lc["config"]["name"])
            lg.attrs["weight_names"] = [n.encode() for n, _ in ws]
            for n, a in ws:
                if n == drop_weight:
                    continue
                lg.create_dataset(n, data=np.asarray(a, np.float32))


def cases(rng):
    """name -> layer list of the good cases."""
    c = {}
    c["lstm2_sizes"] = [rnn_layer("LSTM", "lstm", 12, 5, rng),
                        rnn_layer("LSTM", "lstm_1", 7, 12, rng)]
    c["lstm_no_ufb"] = [rnn_layer("LSTM", "lstm", 6, 3, rng, unit_forget_bias=False)]
    c["gru_reset_after"] = [rnn_layer("GRU", "gru", 8, 4, rng, reset_after=True),
                            rnn_layer("GRU", "gru_1", 5, 8, rng, reset_after=True)]
    c["gru_reset_before"] = [rnn_layer("GRU", "gru", 8, 4, rng, reset_after=False)]
    c["simple_rnn_relu"] = [rnn_layer("SimpleRNN", "simple_rnn", 6, 3, rng, activation="relu")]
    c["emb_lstm_dense_softmax"] = [
        other_layer("InputLayer", "input_1", batch_input_shape=[None, None]),
        embedding_layer("embedding", 30, 6, rng),
        rnn_layer("LSTM", "lstm", 10, 6, rng, dropout=0.2),
        other_layer("Dropout", "dropout", rate=0.5),
        dense_layer("dense", 13, 10, rng, activation="softmax")]
    c["emb_gru_dense_sigmoid"] = [embedding_layer("embedding", 20, 4, rng),
                                  rnn_layer("GRU", "gru", 6, 4, rng, reset_after=False),
                                  dense_layer("dense", 3, 6, rng, activation="sigmoid")]
    c["lstm_timedistributed_tanh"] = [rnn_layer("LSTM", "lstm", 8, 3, rng),
                                      time_distributed_dense("time_distributed", 4, 8, rng,
                                                             activation="tanh")]
    c["weights_only_gru_dense"] = [embedding_layer("embedding", 15, 4, rng),
                                   rnn_layer("GRU", "gru", 6, 4, rng, reset_after=True),
                                   dense_layer("dense", 5, 6, rng)]
    return c


WEIGHTS_ONLY = ("weights_only_gru_dense",)  # written in the save_weights layout


def bad_cases(rng):
    """name -> (layers, weight to leave out or None, what the error names)."""
    return {
        "bad_bidirectional": ([other_layer("Bidirectional", "bidirectional",
                                           layer={"class_name": "LSTM"})], None,
                              "'bidirectional'"),
        "bad_attention": ([rnn_layer("LSTM", "lstm", 4, 3, rng),
                           other_layer("Attention", "attention")], None, "'attention'"),
        "bad_missing_weight": ([rnn_layer("LSTM", "lstm", 4, 3, rng)],
                               "lstm/lstm_cell/recurrent_kernel:0", "'lstm'"),
        "bad_hard_sigmoid": ([rnn_layer("LSTM", "lstm", 4, 3, rng,
                                        recurrent_activation="hard_sigmoid")], None,
                             "hard_sigmoid"),
        "bad_go_backwards": ([rnn_layer("GRU", "gru", 4, 3, rng, go_backwards=True)], None,
                             "'gru'"),
    }


def main(argv):
    out = argv[1]
    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng(20261201)
    for name, layers in cases(rng).items():
        (write_weights_only if name in WEIGHTS_ONLY else write)(os.path.join(out, name + ".h5"),
                                                                layers)
    for name, (layers, drop, _) in bad_cases(rng).items():
        write(os.path.join(out, name + ".h5"), layers, drop_weight=drop)
    # A corrupt file: a good one cut in half.
    good = os.path.join(out, "lstm2_sizes.h5")
    with open(good, "rb") as f:
        data = f.read()
    with open(os.path.join(out, "bad_corrupt.h5"), "wb") as f:
        f.write(data[:len(data) // 2])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
