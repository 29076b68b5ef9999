#!/usr/bin/python3
"""bench -- what statesaver costs a trainer of the charlm example.

1. Overhead per step: one trainer process, batch 32 of 64-step segments of
   the example model (Embedding 32, LSTM 128, Linear), timing each step's
   Lease (with the states) + Complete (the new states) against the step's
   compute (forward, backward, optimizer step). Prints p50 and mean of each
   and the fraction (lease + complete) / compute.
2. Throughput: examples/charlm/train.py with 1 and with 2 trainer processes
   (gloo all-reduce), batch 32 per trainer, segments (and characters) per
   second over --steps steps after the first.

Every run gets its own statesaver-server (temporary LMDB dir, --sync on,
the default). Usage:

    /usr/bin/python3 examples/charlm/bench.py --server-bin build/server/statesaver-server
"""
import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

# One BLAS/OpenMP thread per trainer process unless the caller says
# otherwise (set before numpy and torch load their thread pools): torch's
# set_num_threads() does not reach numpy's OpenBLAS pool, and N trainers
# with a pool each oversubscribe the cores (measured on 2 cores: 2 trainers
# 0.8-0.96x of one with the default pools, 1.3-1.55x with one thread each;
# docs/benchmarks.md).
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "client", "python"))
sys.path.insert(0, HERE)

import numpy as np  # noqa: E402


class Server:
    def __init__(self, binary):
        self.tmp = tempfile.mkdtemp(prefix="charlm-bench-")
        port_file = os.path.join(self.tmp, "port")
        self.log = open(os.path.join(self.tmp, "server.log"), "wb")
        self.proc = subprocess.Popen([binary, "--listen", "127.0.0.1:0", "--data",
                                      os.path.join(self.tmp, "data"), "--port-file", port_file,
                                      "--log-level", "warn"], stdout=self.log,
                                     stderr=subprocess.STDOUT)
        for _ in range(400):
            if os.path.exists(port_file) and open(port_file).read().strip():
                break
            time.sleep(0.025)
        self.address = "127.0.0.1:" + open(port_file).read().strip()

    def close(self):
        self.proc.terminate()
        self.proc.wait(20)
        self.log.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


def overhead(args):
    import torch
    import train
    from statesaver import Client
    from statesaver import training as tr
    torch.set_num_threads(args.threads)
    srv = Server(args.server_bin)
    try:
        targs = train.parse_args(["--server", srv.address, "--streams", "64", "--batch", "32",
                                  "--num-unroll", "64"])
        vocab, ids = train.load_text(targs)
        c = Client(srv.address)
        tr.declare_lstm(c, targs.saver, 1, targs.hidden)
        train.queue_epoch(c, targs, ids, 0)
        torch.manual_seed(0)
        model = train.make_model(targs, len(vocab))
        opt = torch.optim.Adam(model.parameters(), lr=targs.lr)
        b = tr.SequenceBatcher(c, targs.saver, batch_size=32, max_delay_ms=1000, wait_ms=1000,
                               framework="torch")
        V, U = len(vocab), 64
        rows = []
        for step in range(args.steps + 2):
            t0 = time.perf_counter()
            batch = b.next_batch()
            t1 = time.perf_counter()
            h0, c0 = tr.torch_lstm_state(batch, 1)
            out, (h1, c1) = model["lstm"](model["emb"](batch.sequences["inputs"]), (h0, c0))
            logits = model["fc"](out)
            mask = (torch.arange(U)[None, :] < batch.length[:, None]).float()
            ce = torch.nn.functional.cross_entropy(logits.reshape(-1, V),
                                                   batch.sequences["targets"].reshape(-1),
                                                   reduction="none").reshape(mask.shape)
            opt.zero_grad()
            ((ce * mask).sum() / mask.sum()).backward()
            opt.step()
            t2 = time.perf_counter()
            tr.save_torch_lstm_state(batch, (h1.detach(), c1.detach()))
            t3 = time.perf_counter()
            if step >= 2:  # warm-up
                rows.append((t1 - t0, t2 - t1, t3 - t2, len(batch)))
        c.close()
    finally:
        srv.close()
    a = np.array(rows)
    lease, comp, done = a[:, 0] * 1e3, a[:, 1] * 1e3, a[:, 2] * 1e3
    print("overhead: %d steps of batch %d x 64 steps, %d torch thread(s)"
          % (len(a), int(a[:, 3].min()), args.threads))
    for name, v in (("lease", lease), ("compute", comp), ("complete", done)):
        print("  %-8s p50 %7.2f ms  mean %7.2f ms" % (name, np.median(v), v.mean()))
    print("  (lease + complete) / compute: p50 %.2f %%, mean %.2f %%"
          % (100 * np.median((lease + done) / comp), 100 * (lease + done).sum() / comp.sum()))


def throughput(args, nproc):
    srv = Server(args.server_bin)
    try:
        t0 = time.time()
        r = subprocess.run([sys.executable, os.path.join(HERE, "train.py"), "--server",
                            srv.address, "--nproc", str(nproc), "--streams", str(64 * nproc),
                            "--batch", "32", "--num-unroll", "64",
                            "--max-steps", str(args.steps + 1), "--threads", str(args.threads),
                            "--out", os.path.join(srv.tmp, "m.pt")],
                           capture_output=True, text=True, timeout=1800)
        wall = time.time() - t0
    finally:
        srv.close()
    if r.returncode != 0:
        raise SystemExit("train.py failed: %s %s" % (r.stdout[-2000:], r.stderr[-2000:]))
    steps = re.findall(r"step (\d+) loss [0-9.]+ bpc [0-9.]+ segments (\d+) lease ([0-9.]+) ms "
                       r"complete ([0-9.]+) ms elapsed ([0-9.]+) s", r.stdout)
    first, last = steps[0], steps[-1]
    segs = sum(int(s[1]) for s in steps[1:])
    secs = float(last[4]) - float(first[4])
    print("throughput, %d trainer(s) x batch 32: %d segments in %.2f s after step 1: %.1f "
          "segments/s, %.0f characters/s (wall %.1f s with start-up)"
          % (nproc, segs, secs, segs / secs, segs * 64 / secs, wall))
    return segs / secs


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--server-bin", default=os.path.join(HERE, "..", "..", "build", "server",
                                                        "statesaver-server"))
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    print("load before: %s" % open("/proc/loadavg").read().strip())
    overhead(args)
    one = throughput(args, 1)
    two = throughput(args, 2)
    print("2 trainers / 1 trainer: %.2fx" % (two / one))
    print("load after: %s" % open("/proc/loadavg").read().strip())


if __name__ == "__main__":
    main()
