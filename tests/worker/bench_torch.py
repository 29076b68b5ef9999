#!/usr/bin/python3
"""bench_torch -- PyTorch baseline for `statesaver-worker bench` (docs/benchmarks.md).

Times torch.nn.LSTM / torch.nn.GRU (CPU, float32, no_grad, inference) on a
time-major input [T, B, I] with a given initial state -- the same work as
one statesaver unroll of one chunk with all lengths = T. For each thread
count in --threads (default 1 and 2) it runs warm-up passes, then --repeat
timed passes, and reports the median; "best" is the faster thread count.
torch's GRU is the reset_after=true variant.

  /usr/bin/python3 tests/worker/bench_torch.py --cell lstm --input-size 256 \
      --num-units 512 --batch 64 --steps 32 [--repeat 20] [--threads 1,2] [--json]
"""
import argparse
import json
import statistics
import time

import torch


def flops(cell, I, H, B, T, L):
    g = 4 if cell == "lstm" else 3
    total, inp = 0.0, I
    for _ in range(L):
        total += 2.0 * T * B * (inp + H) * g * H
        inp = H
    return total


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cell", choices=["lstm", "gru"], required=True)
    ap.add_argument("--input-size", type=int, required=True)
    ap.add_argument("--num-units", type=int, required=True)
    ap.add_argument("--batch", type=int, required=True)
    ap.add_argument("--steps", type=int, required=True)
    ap.add_argument("--layers", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()

    torch.manual_seed(0)
    mod_cls = torch.nn.LSTM if a.cell == "lstm" else torch.nn.GRU
    mod = mod_cls(a.input_size, a.num_units, num_layers=a.layers).eval()
    x = torch.randn(a.steps, a.batch, a.input_size)
    h0 = torch.randn(a.layers, a.batch, a.num_units) * 0.5
    state = (h0, torch.randn_like(h0) * 0.5) if a.cell == "lstm" else h0
    fl = flops(a.cell, a.input_size, a.num_units, a.batch, a.steps, a.layers)
    per_threads = {}
    with torch.no_grad():
        for n in [int(t) for t in a.threads.split(",")]:
            torch.set_num_threads(n)
            for _ in range(a.warmup):
                mod(x, state)
            times = []
            for _ in range(a.repeat):
                t0 = time.perf_counter()
                mod(x, state)
                times.append(time.perf_counter() - t0)
            per_threads[n] = statistics.median(times)
    best_n = min(per_threads, key=per_threads.get)
    res = {
        "cell": a.cell, "input_size": a.input_size, "num_units": a.num_units,
        "batch": a.batch, "steps": a.steps, "layers": a.layers,
        "torch": torch.__version__,
        "ms_per_chunk": {str(n): t * 1e3 for n, t in per_threads.items()},
        "best_threads": best_n,
        "best_ms_per_chunk": per_threads[best_n] * 1e3,
        "gflops": fl / per_threads[best_n] * 1e-9,
    }
    if a.json:
        print(json.dumps(res))
    else:
        ms = ", ".join(f"{n} thr {t * 1e3:.3f} ms" for n, t in per_threads.items())
        print(f"torch {torch.__version__} {a.cell} I={a.input_size} H={a.num_units} "
              f"B={a.batch} T={a.steps} L={a.layers}: {ms}; best {res['best_ms_per_chunk']:.3f} ms "
              f"({res['gflops']:.1f} GFLOP/s)")


if __name__ == "__main__":
    main()
