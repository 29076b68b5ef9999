#!/usr/bin/python3
"""gen_golden -- golden vectors for the worker's static unroll (tests/worker/golden/).

Each case directory holds:
  model.safetensors     weights in TensorFlow layouts + __metadata__ (DESIGN.md)
  inputs.npy            float32 [T, B, I]
  lengths.npy           int32 or int64 [B] (absent: every step computed)
  state_in_<i>.npy      float32 [B, size_i], i-th state in flattened TF order
  outputs.npy           float32 [T, B, output_size]
  state_out_<i>.npy     float32 [B, size_i]

Expected values are computed INDEPENDENTLY of the C code, in float64, with
torch: torch.nn.RNNCell / LSTM / GRU wherever torch has the cell (after
converting TF's layouts to torch's), and plain torch ops step by step where
it has none (peepholes, cell_clip, relu LSTM/GRU, GRU reset_after=false).
The sequence_length rule of tf.nn.static_rnn is applied in the Python loop:
for t >= length[b] the output row is zero and the state is copied through.

Run with /usr/bin/python3 (Debian python3-torch + python3-numpy):
  /usr/bin/python3 tests/worker/gen_golden.py [OUTDIR]
"""
import json
import os
import shutil
import struct
import sys

import numpy as np
import torch

T, B = 5, 4
DT = torch.float64


def write_safetensors(path, tensors, metadata):
    """safetensors by hand: u64 LE header length, JSON header, raw F32 data."""
    header = {"__metadata__": {k: str(v) for k, v in metadata.items()}}
    blobs, off = [], 0
    for name, arr in tensors.items():
        a = np.ascontiguousarray(arr, dtype="<f4")
        raw = a.tobytes()
        header[name] = {"dtype": "F32", "shape": list(a.shape),
                        "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)  # keep the data 8-byte aligned
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for raw in blobs:
            f.write(raw)


def t64(a):
    return torch.tensor(np.asarray(a, dtype=np.float64), dtype=DT)


def act_fn(name):
    return torch.tanh if name == "tanh" else torch.relu


class Case:
    def __init__(self, name, cell, I, H, rng, layers=1, activation="tanh",
                 forget_bias=1.0, peepholes=False, cell_clip=None, num_proj=0,
                 reset_after=False, lengths=(5, 0, 1, 3), len_dtype=np.int32):
        self.name, self.cell, self.I, self.H = name, cell, I, H
        self.layers, self.activation = layers, activation
        self.forget_bias, self.peepholes = forget_bias, peepholes
        self.cell_clip, self.num_proj, self.reset_after = cell_clip, num_proj, reset_after
        self.lengths = None if lengths is None else np.array(lengths, dtype=len_dtype)
        self.P = num_proj if (cell == "lstm" and num_proj) else H
        self.rng = rng
        self.tensors = {}
        self.make_weights()

    def u(self, *shape, scale=0.5):
        return self.rng.uniform(-scale, scale, size=shape).astype(np.float32)

    def make_weights(self):
        H, P = self.H, self.P
        for l in range(self.layers):
            inl = self.I if l == 0 else P
            p = f"cell_{l}/"
            if self.cell == "basic_rnn":
                self.tensors[p + "kernel"] = self.u(inl + H, H)
                self.tensors[p + "bias"] = self.u(H)
            elif self.cell == "lstm":
                self.tensors[p + "kernel"] = self.u(inl + P, 4 * H)
                self.tensors[p + "bias"] = self.u(4 * H)
                if self.peepholes:
                    for g in ("w_i_diag", "w_f_diag", "w_o_diag"):
                        self.tensors[p + g] = self.u(H)
                if self.num_proj:
                    self.tensors[p + "projection/kernel"] = self.u(H, P)
            elif self.reset_after:
                self.tensors[p + "kernel"] = self.u(inl, 3 * H)
                self.tensors[p + "recurrent_kernel"] = self.u(H, 3 * H)
                self.tensors[p + "bias"] = self.u(2, 3 * H)
            else:
                self.tensors[p + "gates/kernel"] = self.u(inl + H, 2 * H)
                self.tensors[p + "gates/bias"] = self.u(2 * H)
                self.tensors[p + "candidate/kernel"] = self.u(inl + H, H)
                self.tensors[p + "candidate/bias"] = self.u(H)

    def state_sizes(self):
        if self.cell == "lstm":
            return [s for _ in range(self.layers) for s in (self.H, self.P)]
        return [self.H] * self.layers

    def state_names(self):
        if self.cell == "lstm":
            return [f"cell_{l}/{n}" for l in range(self.layers) for n in ("c", "h")]
        return [f"cell_{l}/h" for l in range(self.layers)]

    def metadata(self):
        md = {"cell": self.cell, "input_size": self.I, "num_units": self.H,
              "num_layers": self.layers, "activation": self.activation,
              "state_names": ",".join(self.state_names())}
        if self.cell == "lstm":
            md["forget_bias"] = repr(float(self.forget_bias))
            md["use_peepholes"] = "true" if self.peepholes else "false"
            if self.cell_clip is not None:
                md["cell_clip"] = repr(float(self.cell_clip))
            if self.num_proj:
                md["num_proj"] = self.num_proj
        if self.cell == "gru":
            md["reset_after"] = "true" if self.reset_after else "false"
        return md

    # ---- one step of layer l: (x [B, in], state tuple) -> (out, state) ----
    def torch_module(self, l):
        """A torch module for layer l when torch has this cell, else None."""
        H, P = self.H, self.P
        inl = self.I if l == 0 else P
        p = f"cell_{l}/"
        if self.cell == "basic_rnn":
            k, b = t64(self.tensors[p + "kernel"]), t64(self.tensors[p + "bias"])
            mod = torch.nn.RNNCell(inl, H, nonlinearity=self.activation).to(DT)
            with torch.no_grad():
                mod.weight_ih.copy_(k[:inl].T)
                mod.weight_hh.copy_(k[inl:].T)
                mod.bias_ih.copy_(b)
                mod.bias_hh.zero_()
            return mod
        if self.cell == "lstm":
            if self.peepholes or self.cell_clip is not None or self.activation != "tanh":
                return None
            k, b = t64(self.tensors[p + "kernel"]), t64(self.tensors[p + "bias"])
            ki, kj, kf, ko = k.split(H, dim=1)
            bi, bj, bf, bo = b.split(H)
            mod = torch.nn.LSTM(inl, H, proj_size=self.num_proj or 0).to(DT)
            with torch.no_grad():
                # TF i, j, f, o -> torch i, f, g, o; forget_bias into b_f.
                w = torch.cat([ki, kf, kj, ko], dim=1)
                mod.weight_ih_l0.copy_(w[:inl].T)
                mod.weight_hh_l0.copy_(w[inl:].T)
                mod.bias_ih_l0.copy_(torch.cat([bi, bf + self.forget_bias, bj, bo]))
                mod.bias_hh_l0.zero_()
                if self.num_proj:
                    mod.weight_hr_l0.copy_(t64(self.tensors[p + "projection/kernel"]).T)
            return mod
        if self.reset_after and self.activation == "tanh":
            k = t64(self.tensors[p + "kernel"])
            rk = t64(self.tensors[p + "recurrent_kernel"])
            b = t64(self.tensors[p + "bias"])

            def zrh_to_rzn(m):  # keras z, r, h blocks -> torch r, z, n
                z, r, h = m.split(H, dim=-1)
                return torch.cat([r, z, h], dim=-1)
            mod = torch.nn.GRU(inl, H).to(DT)
            with torch.no_grad():
                mod.weight_ih_l0.copy_(zrh_to_rzn(k).T)
                mod.weight_hh_l0.copy_(zrh_to_rzn(rk).T)
                mod.bias_ih_l0.copy_(zrh_to_rzn(b[0]))
                mod.bias_hh_l0.copy_(zrh_to_rzn(b[1]))
            return mod
        return None

    def step_plain(self, l, x, state):
        """Plain torch ops, straight from the TF / Keras cell definitions."""
        H, P = self.H, self.P
        inl = self.I if l == 0 else P
        p = f"cell_{l}/"
        act = act_fn(self.activation)
        sig = torch.sigmoid
        if self.cell == "lstm":
            c, m = state
            k, b = t64(self.tensors[p + "kernel"]), t64(self.tensors[p + "bias"])
            z = torch.cat([x, m], dim=1) @ k + b
            i, j, f, o = z.split(H, dim=1)
            if self.peepholes:
                wi, wf, wo = (t64(self.tensors[p + n]) for n in ("w_i_diag", "w_f_diag", "w_o_diag"))
                c2 = sig(f + self.forget_bias + wf * c) * c + sig(i + wi * c) * act(j)
            else:
                c2 = sig(f + self.forget_bias) * c + sig(i) * act(j)
            if self.cell_clip is not None:
                c2 = torch.clamp(c2, -self.cell_clip, self.cell_clip)
            if self.peepholes:
                m2 = sig(o + wo * c2) * act(c2)
            else:
                m2 = sig(o) * act(c2)
            if self.num_proj:
                m2 = m2 @ t64(self.tensors[p + "projection/kernel"])
            return m2, (c2, m2)
        (h,) = state
        if self.cell == "basic_rnn":
            k, b = t64(self.tensors[p + "kernel"]), t64(self.tensors[p + "bias"])
            h2 = act(torch.cat([x, h], dim=1) @ k + b)
            return h2, (h2,)
        if self.reset_after:
            k = t64(self.tensors[p + "kernel"])
            rk = t64(self.tensors[p + "recurrent_kernel"])
            b = t64(self.tensors[p + "bias"])
            xz, xr, xh = (x @ k + b[0]).split(H, dim=1)
            hz, hr, hh = (h @ rk + b[1]).split(H, dim=1)
            z = sig(xz + hz)
            r = sig(xr + hr)
            n = act(xh + r * hh)
            h2 = z * h + (1 - z) * n
            return h2, (h2,)
        gk, gb = t64(self.tensors[p + "gates/kernel"]), t64(self.tensors[p + "gates/bias"])
        ck, cb = t64(self.tensors[p + "candidate/kernel"]), t64(self.tensors[p + "candidate/bias"])
        r, u = sig(torch.cat([x, h], dim=1) @ gk + gb).split(H, dim=1)
        cand = act(torch.cat([x, r * h], dim=1) @ ck + cb)
        h2 = u * h + (1 - u) * cand
        return h2, (h2,)

    def step(self, l, mod, x, state):
        if mod is None:
            return self.step_plain(l, x, state)
        if isinstance(mod, torch.nn.RNNCell):
            h2 = mod(x, state[0])
            return h2, (h2,)
        if isinstance(mod, torch.nn.LSTM):
            c, m = state
            out, (m2, c2) = mod(x.unsqueeze(0), (m.unsqueeze(0), c.unsqueeze(0)))
            return out[0], (c2[0], m2[0])
        out, h2 = mod(x.unsqueeze(0), state[0].unsqueeze(0))  # nn.GRU
        return out[0], (h2[0],)

    def run(self, x, states, plain=False):
        """static_rnn over a MultiRNNCell: per step, every layer, masked rows
        keep the state of every layer and output zero. plain=True uses the
        plain-ops cells only (to cross-check the torch layout conversions)."""
        mods = [None if plain else self.torch_module(l) for l in range(self.layers)]
        per = 2 if self.cell == "lstm" else 1
        st = [tuple(t64(s) for s in states[per * l: per * (l + 1)]) for l in range(self.layers)]
        xs = t64(x)
        outs = torch.zeros(T, B, self.P, dtype=DT)
        lens = self.lengths if self.lengths is not None else np.full(B, T)
        active = torch.tensor([[bool(t < lens[b]) for b in range(B)] for t in range(T)])
        with torch.no_grad():
            for t in range(T):
                inp = xs[t]
                new = []
                for l in range(self.layers):
                    inp, s2 = self.step(l, mods[l], inp, st[l])
                    new.append(s2)
                mask = active[t].unsqueeze(1)
                outs[t] = torch.where(mask, inp, torch.zeros_like(inp))
                st = [tuple(torch.where(mask, n, o) for n, o in zip(ns, os_))
                      for ns, os_ in zip(new, st)]
        flat = [s for layer in st for s in layer]
        return outs.numpy().astype(np.float32), [s.numpy().astype(np.float32) for s in flat]

    def write(self, outdir):
        d = os.path.join(outdir, self.name)
        os.makedirs(d, exist_ok=True)
        write_safetensors(os.path.join(d, "model.safetensors"), self.tensors, self.metadata())
        x = self.rng.normal(0.0, 1.0, size=(T, B, self.I)).astype(np.float32)
        states = [self.u(B, n) for n in self.state_sizes()]
        np.save(os.path.join(d, "inputs.npy"), x)
        if self.lengths is not None:
            np.save(os.path.join(d, "lengths.npy"), self.lengths)
        for i, s in enumerate(states):
            np.save(os.path.join(d, f"state_in_{i}.npy"), s)
        outs, final = self.run(x, states)
        # The torch modules and the plain formulas must agree: this checks
        # the TF -> torch weight conversions, not the C code.
        outs_p, final_p = self.run(x, states, plain=True)
        assert np.allclose(outs, outs_p, rtol=1e-6, atol=1e-7), self.name
        for a, b in zip(final, final_p):
            assert np.allclose(a, b, rtol=1e-6, atol=1e-7), self.name
        self.uses_torch_module = any(self.torch_module(l) is not None for l in range(self.layers))
        np.save(os.path.join(d, "outputs.npy"), outs)
        for i, s in enumerate(final):
            np.save(os.path.join(d, f"state_out_{i}.npy"), s)


def cases(rng):
    return [
        Case("basic_tanh", "basic_rnn", 3, 4, rng),
        Case("basic_relu", "basic_rnn", 3, 4, rng, activation="relu"),
        Case("basic_tanh_nolengths", "basic_rnn", 3, 4, rng, lengths=None),
        Case("lstm_plain", "lstm", 3, 5, rng, len_dtype=np.int64),
        Case("lstm_forget_bias", "lstm", 3, 5, rng, forget_bias=0.5),
        Case("lstm_peepholes", "lstm", 3, 5, rng, peepholes=True),
        Case("lstm_cell_clip", "lstm", 3, 5, rng, cell_clip=0.3),
        Case("lstm_num_proj", "lstm", 3, 6, rng, num_proj=4),
        Case("lstm_relu", "lstm", 3, 5, rng, activation="relu"),
        Case("lstm_all", "lstm", 3, 6, rng, forget_bias=0.5, peepholes=True,
             cell_clip=0.4, num_proj=4),
        Case("lstm_stack2", "lstm", 3, 5, rng, layers=2, num_proj=4,
             lengths=(4, 0, 1, 2)),
        Case("gru", "gru", 3, 5, rng),
        Case("gru_reset_after", "gru", 3, 5, rng, reset_after=True, len_dtype=np.int64),
        Case("gru_relu", "gru", 3, 5, rng, activation="relu"),
        Case("gru_reset_after_relu", "gru", 3, 5, rng, reset_after=True, activation="relu"),
        Case("gru_stack2", "gru", 3, 4, rng, layers=2),
        Case("gru_reset_after_stack2", "gru", 3, 4, rng, layers=2, reset_after=True,
             lengths=(3, 0, 1, 2)),
    ]


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    outdir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, "golden")
    if os.path.isdir(outdir):
        shutil.rmtree(outdir)
    os.makedirs(outdir)
    rng = np.random.default_rng(20240611)
    torch.manual_seed(0)
    names = []
    for c in cases(rng):
        c.write(outdir)
        names.append(c.name)
        print(f"{c.name}: reference from {'torch.nn module' if c.uses_torch_module else 'plain torch ops'}")
    with open(os.path.join(outdir, "CASES"), "w") as f:
        f.write("\n".join(names) + "\n")


if __name__ == "__main__":
    main()
