#!/usr/bin/python3
"""train -- truncated-BPTT training of a character-level LSTM language model
with statesaver keeping the states and handing out the batches, and
torch.distributed (gloo) averaging the gradients of N trainer processes.

The text is cut into --streams contiguous streams, each one sequence of the
job queue (tokens and next-character targets, segments of --num-unroll
steps). Every step each trainer leases a batch of segments from different
streams together with their saved LSTM states (h, c), runs
nn.Embedding -> nn.LSTM -> nn.Linear over them, and after the gradient
all-reduce and the optimizer step saves the final states back, which makes
each stream's next segment ready for whichever trainer leases it. An
epoch ends when the queue is drained; the next one queues the streams again
under new keys (make_keys_unique), starting from zero states.

    statesaver-server --listen 127.0.0.1:7450 --data /tmp/charlm-data &
    /usr/bin/python3 examples/charlm/train.py --server 127.0.0.1:7450 --nproc 2

Writes --out (a state_dict of the ModuleDict {emb, lstm, fc}, what
`statesaver-convert torch` reads) and --out with .vocab.json (the
characters). See examples/charlm/README.md.
"""
import argparse
import json
import math
import os
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

import numpy as np  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--server", default=os.environ.get("STATESAVER_SERVER", "127.0.0.1:7450"))
    p.add_argument("--saver", default="charlm-train")
    p.add_argument("--text", default=os.path.join(HERE, "text.txt"))
    p.add_argument("--max-chars", type=int, default=0, help="use only the first N characters")
    p.add_argument("--nproc", type=int, default=2, help="trainer processes (gloo)")
    p.add_argument("--streams", type=int, default=64, help="sequences the text is cut into")
    p.add_argument("--num-unroll", type=int, default=64)
    p.add_argument("--batch", type=int, default=32, help="segments per trainer and step")
    p.add_argument("--embed", type=int, default=32)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--layers", type=int, default=1)
    p.add_argument("--lr", type=float, default=0.003)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--max-steps", type=int, default=0, help="stop after N steps (0: no cap)")
    p.add_argument("--lease-ms", type=int, default=60000)
    p.add_argument("--max-delay-ms", type=int, default=2000,
                   help="wait this long for a full batch before taking what is ready")
    p.add_argument("--threads", type=int, default=1, help="torch threads per trainer")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="charlm.pt")
    return p.parse_args(argv)


def load_text(args):
    with open(args.text, encoding="utf-8") as f:
        text = f.read()
    if args.max_chars:
        text = text[:args.max_chars]
    vocab = sorted(set(text))
    ids = np.array([vocab.index(ch) for ch in text], dtype=np.int64)
    return vocab, ids


def make_model(args, vocab_size):
    import torch.nn as nn
    return nn.ModuleDict({"emb": nn.Embedding(vocab_size, args.embed),
                          "lstm": nn.LSTM(args.embed, args.hidden, num_layers=args.layers,
                                          batch_first=True),
                          "fc": nn.Linear(args.hidden, vocab_size)})


def queue_epoch(client, args, ids, epoch):
    """Queue the text's streams as sequences (inputs = characters, targets =
    the next characters) under keys unique to this epoch."""
    from statesaver import training as tr
    n = (len(ids) - 1) // args.streams
    inputs = [ids[i * n:(i + 1) * n] for i in range(args.streams)]
    targets = [ids[i * n + 1:(i + 1) * n + 1] for i in range(args.streams)]
    return tr.submit_sequences(client, args.saver, ["stream%03d" % i for i in range(args.streams)],
                               {"inputs": inputs, "targets": targets},
                               num_unroll=args.num_unroll, make_keys_unique=True,
                               make_keys_unique_seed=args.seed * 1000 + epoch)


def trainer(rank, args, vocab, ids, init_file):
    import torch
    import torch.distributed as dist
    from statesaver import Client
    from statesaver import training as tr
    torch.set_num_threads(args.threads)
    dist.init_process_group("gloo", init_method="file://" + init_file, rank=rank,
                            world_size=args.nproc)
    torch.manual_seed(args.seed)  # the same initial weights in every trainer
    model = make_model(args, len(vocab))
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    client = Client(args.server)
    batcher = tr.SequenceBatcher(client, args.saver, batch_size=args.batch,
                                 max_delay_ms=args.max_delay_ms, lease_ms=args.lease_ms,
                                 wait_ms=args.max_delay_ms, framework="torch",
                                 worker="charlm-rank%d" % rank)
    V, U, step = len(vocab), args.num_unroll, 0
    t_start = time.time()
    for epoch in range(args.epochs):
        if rank == 0:
            queue_epoch(client, args, ids, epoch)
        dist.barrier()  # the epoch is queued before anyone leases
        while not (args.max_steps and step >= args.max_steps):
            t0 = time.perf_counter()
            batch = batcher.next_batch()
            t_lease = time.perf_counter() - t0
            n = len(batch) if batch is not None else 0
            counts = torch.tensor([float(n), float(batch.length.sum()) if n else 0.0])
            dist.all_reduce(counts)  # segments and real characters of the whole step
            if counts[0] == 0:
                break  # drained: every trainer sees the same total
            model.zero_grad()
            loss_sum = torch.zeros(())
            if n:
                h0, c0 = tr.torch_lstm_state(batch, args.layers)
                out, (h1, c1) = model["lstm"](model["emb"](batch.sequences["inputs"]), (h0, c0))
                logits = model["fc"](out)
                mask = (torch.arange(U)[None, :] < batch.length[:, None]).float()
                ce = torch.nn.functional.cross_entropy(
                    logits.reshape(-1, V), batch.sequences["targets"].reshape(-1),
                    reduction="none").reshape(mask.shape)
                loss_sum = (ce * mask).sum()
                (loss_sum / counts[1]).backward()  # the global mean over characters
            for p in model.parameters():
                if p.grad is None:
                    p.grad = torch.zeros_like(p)
                dist.all_reduce(p.grad)
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            t1 = time.perf_counter()
            if n:
                tr.save_torch_lstm_state(batch, (h1.detach(), c1.detach()))  # completes
            t_complete = time.perf_counter() - t1
            total = loss_sum.detach().clone()
            dist.all_reduce(total)
            step += 1
            if rank == 0:
                print("epoch %d step %d loss %.4f bpc %.3f segments %d lease %.1f ms "
                      "complete %.1f ms elapsed %.1f s"
                      % (epoch, step, float(total / counts[1]),
                         float(total / counts[1]) / math.log(2), int(counts[0]),
                         t_lease * 1e3, t_complete * 1e3, time.time() - t_start), flush=True)
        if args.max_steps and step >= args.max_steps:
            break
    if rank == 0:
        torch.save(model.state_dict(), args.out)
        with open(os.path.splitext(args.out)[0] + ".vocab.json", "w") as f:
            json.dump({"vocab": vocab, "embed": args.embed, "hidden": args.hidden,
                       "layers": args.layers}, f)
        print("checkpoint %s (%d steps, %.1f s)" % (args.out, step, time.time() - t_start),
              flush=True)
    dist.barrier()
    dist.destroy_process_group()
    client.close()


def main(argv=None):
    args = parse_args(argv)
    from statesaver import Client
    from statesaver import training as tr
    import torch.multiprocessing as mp
    vocab, ids = load_text(args)
    c = Client(args.server)
    tr.declare_lstm(c, args.saver, args.layers, args.hidden)
    c.close()
    print("text %d characters, vocabulary %d, %d streams of %d, %d trainers x batch %d"
          % (len(ids), len(vocab), args.streams, (len(ids) - 1) // args.streams, args.nproc,
             args.batch), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        mp.spawn(trainer, args=(args, vocab, ids, os.path.join(tmp, "gloo-init")),
                 nprocs=args.nproc, join=True)


if __name__ == "__main__":
    main()
