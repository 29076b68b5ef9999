#!/usr/bin/python3
"""generate -- stream text from the trained charlm model served by
`statesaver-worker serve`, one character (a one-step segment) at a time.

Each character is a Submit of segment s (token id [1], length 1) of one
generation session (a sequence key); a worker leases it with the session's
LSTM state, runs one step and completes it with the log-probabilities of the
next character and the new state; this program awaits them, picks the next
character and submits it as segment s + 1. The state never leaves the
server, so the session goes on through any worker: kill one mid-sentence
and the next segment (or the leased one, once its lease expires) is run by
another. At the end the session is cancelled (state and records removed).

    statesaver-convert torch charlm.pt --out charlm.safetensors --head-activation log_softmax
    statesaver-worker serve --model charlm.safetensors --saver charlm &
    /usr/bin/python3 examples/charlm/generate.py --vocab charlm.vocab.json --prompt "The "

--reference runs the same greedy/seeded decoding locally with PyTorch from
the checkpoint instead (what the test compares against).
"""
import argparse
import json
import os
import random
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "client", "python"))

import numpy as np  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--server", default=os.environ.get("STATESAVER_SERVER", "127.0.0.1:7450"))
    p.add_argument("--saver", default="charlm")
    p.add_argument("--vocab", default="charlm.vocab.json")
    p.add_argument("--prompt", default="The ")
    p.add_argument("--chars", type=int, default=200)
    p.add_argument("--temperature", type=float, default=0.0, help="0: greedy (argmax)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--key", default="", help="session key (default: random)")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds per character")
    p.add_argument("--reference", default="", help="a .pt checkpoint: decode locally with torch")
    return p.parse_args(argv)


def pick(logp, temperature, rng):
    """The next character id from log-probabilities [V]."""
    if temperature <= 0:
        return int(np.argmax(logp))
    z = np.asarray(logp, np.float64) / temperature
    p = np.exp(z - z.max())
    p /= p.sum()
    return int(np.searchsorted(np.cumsum(p), rng.random() * p.sum()))


def step_served(client, saver, key, segment, token, timeout):
    """Submit one one-step segment and wait for its outputs [V]."""
    from statesaver import DeadlineExceeded, SegmentFailed
    client.submit(saver, key, segment, inputs=np.array([token], np.int64), length=1)
    deadline = time.monotonic() + timeout
    while True:
        try:
            r = client.await_segment(saver, key, segment, wait_ms=1000)
        except DeadlineExceeded:
            if time.monotonic() > deadline:
                raise
            continue
        if r.state == "FAILED":
            raise SegmentFailed("segment %d failed: %s" % (segment, r.reason))
        if r.state == "DONE":
            client.collect_segment(saver, key, segment)
            return r.outputs[0]


def cancel_session(client, saver, key, tries=50):
    """Remove the session's state and records (Cancel), retrying while the
    server still commits a write of it (UNAVAILABLE)."""
    from statesaver import ProtocolError, Unavailable
    for _ in range(tries):
        try:
            client.cancel(saver, [key])
            return
        except Unavailable:
            time.sleep(0.02)
        except ProtocolError:  # the server is gone: nothing to clean
            return


def generate_served(args, vocab, out=sys.stdout):
    from statesaver import Client
    rng = random.Random(args.seed)
    key = args.key or "gen-%016x" % random.getrandbits(64)
    client = Client(args.server)
    ids = [vocab.index(ch) for ch in args.prompt]
    text, seg, logp = [], 0, None
    try:
        for t in ids:  # the prompt primes the state
            logp = step_served(client, args.saver, key, seg, t, args.timeout)
            seg += 1
        out.write(args.prompt)
        out.flush()
        for _ in range(args.chars):
            t = pick(logp, args.temperature, rng)
            text.append(vocab[t])
            out.write(vocab[t])
            out.flush()
            logp = step_served(client, args.saver, key, seg, t, args.timeout)
            seg += 1
    finally:
        cancel_session(client, args.saver, key)
        client.close()
    out.write("\n")
    return "".join(text)


def generate_reference(args, vocab, out=sys.stdout):
    """The same decoding with PyTorch, one step at a time."""
    import torch
    import torch.nn as nn
    meta = json.load(open(args.vocab))
    model = nn.ModuleDict({"emb": nn.Embedding(len(vocab), meta["embed"]),
                           "lstm": nn.LSTM(meta["embed"], meta["hidden"],
                                           num_layers=meta["layers"], batch_first=True),
                           "fc": nn.Linear(meta["hidden"], len(vocab))})
    model.load_state_dict(torch.load(args.reference))
    model.eval()
    rng = random.Random(args.seed)
    state, logp, text = None, None, []

    def step(t):
        nonlocal state
        x = model["emb"](torch.tensor([[t]]))
        y, state = model["lstm"](x, state)
        return torch.log_softmax(model["fc"](y[0, 0]), -1).numpy()

    with torch.no_grad():
        for ch in args.prompt:
            logp = step(vocab.index(ch))
        out.write(args.prompt)
        for _ in range(args.chars):
            t = pick(logp, args.temperature, rng)
            text.append(vocab[t])
            out.write(vocab[t])
            out.flush()
            logp = step(t)
    out.write("\n")
    return "".join(text)


def main(argv=None):
    args = parse_args(argv)
    vocab = json.load(open(args.vocab))["vocab"]
    for ch in args.prompt:
        if ch not in vocab:
            sys.exit("generate: prompt character %r is not in the vocabulary" % ch)
    if args.reference:
        generate_reference(args, vocab)
    else:
        generate_served(args, vocab)


if __name__ == "__main__":
    main()
