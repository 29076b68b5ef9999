#!/usr/bin/python3
"""bench_compute -- the Compute table of docs/benchmarks.md in one run.

Interleaved rounds; in each round, for every shape, cell (lstm, gru with
reset_after) and thread count (1 pinned to one CPU, 2 pinned to two):
statesaver fp32, statesaver bf16, oneDNN f32, oneDNN bf16 (if
bench-onednn was built) and PyTorch fp32 (bench_torch.py). Prints every
JSON line as it goes (to --out as well), then a markdown table of medians
with ratios, and the load average at each round boundary.

  /usr/bin/python3 tests/worker/bench_compute.py --build build [--rounds 3]
      [--out results.jsonl] [--cpus 0,1]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

SHAPES = [  # I, H, B, T, repeat (ours and oneDNN), torch repeat
    (256, 512, 8, 16, 40, 20),
    (256, 512, 64, 32, 10, 5),
    (512, 1024, 64, 32, 4, 3),
    (64, 128, 16, 16, 100, 40),
]
CELLS = ["lstm", "gru"]


def run(cmd):
    p = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if p.returncode != 0:
        sys.stderr.write(f"failed ({p.returncode}): {' '.join(cmd)}\n{p.stderr}\n")
        return None
    return json.loads(p.stdout.strip().splitlines()[-1])


def load():
    return os.getloadavg()[0]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build", default="build")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", default=None)
    ap.add_argument("--cpus", default="0,1")
    ap.add_argument("--shapes", default=None, help="indices into SHAPES, e.g. 0,1")
    a = ap.parse_args()
    here = os.path.dirname(os.path.abspath(__file__))
    worker = os.path.join(a.build, "worker", "statesaver-worker")
    dnnl = os.path.join(a.build, "tests", "worker", "bench-onednn")
    have_dnnl = os.path.exists(dnnl)
    torch_py = os.path.join(here, "bench_torch.py")
    cpus = a.cpus.split(",")
    shapes = SHAPES if not a.shapes else [SHAPES[int(i)] for i in a.shapes.split(",")]
    out = open(a.out, "w") if a.out else None
    results = {}  # key -> list of ms
    loads = []
    for rnd in range(a.rounds):
        loads.append((rnd, "start", load(), time.strftime("%H:%M:%S", time.gmtime())))
        for (I, H, B, T, rep, trep) in shapes:
            for cell in CELLS:
                for th in (1, 2):
                    pin = ["taskset", "-c", ",".join(cpus[:th])]
                    base = ["--input-size", str(I), "--num-units", str(H), "--batch", str(B),
                            "--steps", str(T)]
                    jobs = []
                    for prec in ("fp32", "bf16"):
                        cmd = pin + [worker, "bench", "--cell", cell] + \
                            (["--reset-after"] if cell == "gru" else []) + base + \
                            ["--repeat", str(rep), "--threads", str(th), "--precision", prec,
                             "--no-sgemm", "--json"]
                        jobs.append((("ours", prec), cmd))
                    if have_dnnl:
                        for dt in ("f32", "bf16"):
                            cmd = pin + [dnnl, "--cell", cell] + base + \
                                ["--dtype", dt, "--threads", str(th), "--repeat", str(rep)]
                            jobs.append((("onednn", dt), cmd))
                    cmd = pin + ["/usr/bin/python3", torch_py, "--cell", cell] + base + \
                        ["--repeat", str(trep), "--warmup", "2", "--threads", str(th), "--json"]
                    jobs.append((("torch", "fp32"), cmd))
                    for (who, prec), cmd in jobs:
                        d = run(cmd)
                        if d is None:
                            continue
                        ms = d["best_ms_per_chunk"] if who == "torch" else d["ms_per_chunk"]
                        key = (I, H, B, T, cell, th, who, prec)
                        results.setdefault(key, []).append(ms)
                        line = {"round": rnd + 1, "who": who, "prec": prec, "threads": th,
                                "cell": cell, "shape": [I, H, B, T], "ms": ms, "raw": d}
                        print(json.dumps(line), flush=True)
                        if out:
                            out.write(json.dumps(line) + "\n")
                            out.flush()
        loads.append((rnd, "end", load(), time.strftime("%H:%M:%S", time.gmtime())))
    med = {k: statistics.median(v) for k, v in results.items()}
    print("\n| cell | I | H | B | T | threads | ours fp32 ms | ours bf16 ms | oneDNN f32 ms |"
          " oneDNN bf16 ms | torch ms | fp32 vs oneDNN f32 | bf16 vs oneDNN bf16 |"
          " bf16 vs our fp32 | fp32 vs torch |")
    print("|" + "---|" * 15)
    for (I, H, B, T, _, _) in shapes:
        for cell in CELLS:
            for th in (1, 2):
                def g(who, prec):
                    return med.get((I, H, B, T, cell, th, who, prec))
                o32, o16 = g("ours", "fp32"), g("ours", "bf16")
                d32, d16, tt = g("onednn", "f32"), g("onednn", "bf16"), g("torch", "fp32")

                def f(x):
                    return "-" if x is None else f"{x:.3f}"

                def r(a_, b_):
                    return "-" if a_ is None or b_ is None else f"{b_ / a_:.2f}x"
                name = "lstm" if cell == "lstm" else "gru reset_after"
                print(f"| {name} | {I} | {H} | {B} | {T} | {th} | {f(o32)} | {f(o16)} | "
                      f"{f(d32)} | {f(d16)} | {f(tt)} | {r(o32, d32)} | {r(o16, d16)} | "
                      f"{r(o16, o32)} | {r(o32, tt)} |")
    print("\nload average (1 min):", ", ".join(f"round {r_ + 1} {w} {t} {l:.2f}"
                                               for r_, w, l, t in loads))
    print("rounds per cell:", {str(k): len(v) for k, v in list(results.items())[:1]})


if __name__ == "__main__":
    main()
