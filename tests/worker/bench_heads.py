#!/usr/bin/python3
"""bench_heads -- cost of the embedding and the head relative to the RNN
stack (docs/benchmarks.md, "Embedding and head"), ours against PyTorch
running the same whole module, in the same run.

Shape: a char-level LM, vocab 256, embedding 64, 2 x 512 LSTM, head
512 x 256 with log_softmax, B = 64, T = 32 (one chunk). Ours:
`statesaver-worker bench ... --vocab 256 --head-out 256 --head-activation
log_softmax --json` (embedding lookup, the head's one packed product and
the whole model, medians). PyTorch (float32, no_grad, 1 thread): the same
parts timed one by one and the whole module (Embedding -> LSTM -> Linear
-> log_softmax), medians. Rounds alternate ours / torch; both pinned to
one CPU with taskset.

  /usr/bin/python3 tests/worker/bench_heads.py WORKER [--rounds 3] [--repeat 30] [--cpu 1]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

V, E, H, L, B, T, O = 256, 64, 512, 2, 64, 32, 256


def ours(worker, cpu, repeat):
    cmd = ["taskset", "-c", str(cpu), worker, "bench", "--cell", "lstm", "--input-size", str(E),
           "--num-units", str(H), "--layers", str(L), "--batch", str(B), "--steps", str(T),
           "--vocab", str(V), "--head-out", str(O), "--head-activation", "log_softmax",
           "--threads", "1", "--repeat", str(repeat), "--no-sgemm", "--json"]
    r = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=600)
    j = json.loads(r.stdout)
    return {"embedding": j["ms_embedding"], "rnn": j["ms_per_chunk"], "head": j["ms_head"],
            "model": j["ms_model"]}


def torch_round(cpu, repeat):
    os.sched_setaffinity(0, {cpu})
    import torch
    import torch.nn as nn
    torch.set_num_threads(1)
    torch.manual_seed(0)
    emb, lstm, fc = nn.Embedding(V, E), nn.LSTM(E, H, num_layers=L), nn.Linear(H, O)
    ids = torch.randint(0, V, (T, B))
    h0 = (torch.zeros(L, B, H), torch.zeros(L, B, H))
    x = emb(ids).detach()
    y = lstm(x, h0)[0].detach()

    def whole():
        return torch.log_softmax(fc(lstm(emb(ids), h0)[0]), -1)

    parts = {"embedding": lambda: emb(ids), "rnn": lambda: lstm(x, h0),
             "head": lambda: torch.log_softmax(fc(y), -1), "model": whole}
    out = {}
    with torch.no_grad():
        for name, f in parts.items():
            for _ in range(3):
                f()
            ts = []
            for _ in range(repeat):
                t0 = time.perf_counter()
                f()
                ts.append(time.perf_counter() - t0)
            out[name] = statistics.median(ts) * 1e3
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("worker")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--repeat", type=int, default=30)
    ap.add_argument("--cpu", type=int, default=1)
    a = ap.parse_args()
    rows = {"ours": [], "torch": []}
    for _ in range(a.rounds):
        rows["ours"].append(ours(a.worker, a.cpu, a.repeat))
        r = subprocess.run([sys.executable, __file__, "--torch-round", str(a.cpu),
                            str(a.repeat)], capture_output=True, text=True, check=True,
                           timeout=600)
        rows["torch"].append(json.loads(r.stdout))
    print("load average before/after: see caller; %s" % open("/proc/loadavg").read().strip())
    print("%-6s %10s %10s %10s %10s %12s %12s" % ("who", "embed ms", "rnn ms", "head ms",
                                                  "model ms", "embed/rnn", "head/rnn"))
    for who, rs in rows.items():
        med = {k: statistics.median(r[k] for r in rs) for k in rs[0]}
        print("%-6s %10.3f %10.3f %10.3f %10.3f %11.2f%% %11.2f%%"
              % (who, med["embedding"], med["rnn"], med["head"], med["model"],
                 100 * med["embedding"] / med["rnn"], 100 * med["head"] / med["rnn"]))
    print(json.dumps(rows))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--torch-round":
        print(json.dumps(torch_round(int(sys.argv[2]), int(sys.argv[3]))))
    else:
        main()
