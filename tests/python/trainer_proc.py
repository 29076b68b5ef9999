#!/usr/bin/python3
"""trainer_proc -- trainer processes for test_training_dist.py.

  trainer_proc.py dist PB2_DIR PORT SAVER RANK WORLD INIT_FILE OUT
      truncated-BPTT training of a tiny Embedding+LSTM+Linear model with
      torch.distributed (gloo, gradient all-reduce). WORLD = 1 is the
      single-process reference: it leases the two ranks' batches itself
      each step and adds their gradients as the all-reduce does (a + b).
      Writes the final state_dict to OUT.
  trainer_proc.py count PB2_DIR PORT SAVER HANG_AFTER LEASE_MS WAIT_MS
      a numpy trainer of the counting 'model' (c += sum(tokens), h += 1),
      printing one line per batch; with HANG_AFTER > 0 it prints HOLDING
      after leasing that many batches and sleeps (the test SIGKILLs it).
"""
import os
import sys
import time

import harness

mode = sys.argv[1]
sys.argv = harness.setup_path(sys.argv[:1] + sys.argv[2:])
import numpy as np  # noqa: E402
from statesaver import Client  # noqa: E402
from statesaver import training as tr  # noqa: E402

V, E, H, U, B = 16, 6, 8, 6, 4   # vocab, embedding, hidden, num_unroll, batch per rank
NORM = 2.0 * B * U               # the loss is summed over both ranks' steps / NORM


def make_model():
    import torch
    torch.manual_seed(1234)
    emb = torch.nn.Embedding(V, E)
    lstm = torch.nn.LSTM(E, H, batch_first=True)
    head = torch.nn.Linear(H, V)
    return torch.nn.ModuleDict({"emb": emb, "lstm": lstm, "head": head})


def grads_of(model, batch):
    """Gradients of one batch's loss (zeros without a batch) and the new
    states (h, c) [1, B, H] to save."""
    import torch
    model.zero_grad(set_to_none=False)
    if batch is None:
        return [torch.zeros_like(p) for p in model.parameters()], None
    x = batch.sequences["inputs"]
    y = batch.sequences["targets"]
    h0, c0 = tr.torch_lstm_state(batch, 1)
    out, (h1, c1) = model["lstm"](model["emb"](x), (h0, c0))
    logits = model["head"](out)
    mask = (torch.arange(U)[None, :] < batch.length[:, None]).float()
    ce = torch.nn.functional.cross_entropy(logits.reshape(-1, V), y.reshape(-1),
                                           reduction="none").reshape(mask.shape)
    loss = (ce * mask).sum() / NORM
    loss.backward()
    return [p.grad.clone() for p in model.parameters()], (h1.detach(), c1.detach())


def apply(model, grads, lr=0.5):
    import torch
    with torch.no_grad():
        for p, g in zip(model.parameters(), grads):
            p -= lr * g


def run_dist(port, saver, rank, world, init_file, out):
    import torch
    import torch.distributed as dist
    torch.set_num_threads(1)
    if world > 1:
        dist.init_process_group("gloo", init_method="file://" + init_file, rank=rank,
                                world_size=world)
    c = Client(port=port)
    model = make_model()
    batcher = tr.SequenceBatcher(c, saver, batch_size=B, min_batch=0, max_delay_ms=0,
                                 wait_ms=0, framework="torch")
    steps = 0
    while True:
        if world > 1:
            batch = batcher.next_batch()
            n = torch.tensor([len(batch) if batch else 0])
            dist.all_reduce(n)  # also: every rank has leased before any completes
            if int(n) == 0:
                break
            g, st = grads_of(model, batch)
            for t in g:
                dist.all_reduce(t)
            apply(model, g)
            if batch is not None:
                tr.save_torch_lstm_state(batch, st)
            dist.barrier()  # every Complete is in before the next Lease
        else:
            b1, b2 = batcher.next_batch(), batcher.next_batch()
            if b1 is None and b2 is None:
                break
            g1, s1 = grads_of(model, b1)
            g2, s2 = grads_of(model, b2)
            apply(model, [a + b for a, b in zip(g1, g2)])
            for b, s in ((b1, s1), (b2, s2)):
                if b is not None:
                    tr.save_torch_lstm_state(b, s)
        steps += 1
    if rank == 0 or world == 1:
        torch.save(model.state_dict(), out)
    print("steps", steps, flush=True)
    if world > 1:
        dist.destroy_process_group()


def run_count(port, saver, hang_after, lease_ms, wait_ms):
    c = Client(port=port)
    b = tr.SequenceBatcher(c, saver, batch_size=2, min_batch=0, max_delay_ms=0,
                           lease_ms=lease_ms, wait_ms=wait_ms, worker="count-%d" % os.getpid())
    n = 0
    for batch in b:
        n += 1
        if hang_after and n == hang_after:
            print("HOLDING", b",".join(batch.keys).decode(), flush=True)
            time.sleep(3600)
        x = batch.sequences["inputs"]
        mask = np.arange(x.shape[1])[None, :] < batch.length[:, None]
        cst = batch.state("c") + (x * mask).sum(1, keepdims=True).astype(np.float32)
        batch.save_state("c", cst)
        batch.save_state("h", batch.state("h") + 1)
        print("BATCH", b",".join(batch.keys).decode(), [int(x) for x in batch.sequence],
              "attempts", [int(x) for x in batch.attempts], flush=True)
    print("DRAINED", n, flush=True)


if __name__ == "__main__":
    a = sys.argv[1:]
    if mode == "dist":
        run_dist(int(a[0]), a[1], int(a[2]), int(a[3]), a[4], a[5])
    else:
        run_count(int(a[0]), a[1], int(a[2]), int(a[3]), int(a[4]))
