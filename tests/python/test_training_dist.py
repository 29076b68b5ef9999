#!/usr/bin/python3
"""test_training_dist -- trainer processes sharing one statesaver-server.

- Two trainer processes (torch.distributed, gloo, gradient all-reduce) of a
  small Embedding+LSTM+Linear model with truncated BPTT through the saver
  end with parameters and saved states equal bit for bit to a
  single-process reference that leases both ranks' batches itself and adds
  their gradients as the all-reduce does.
- One trainer SIGKILLed while it holds a lease: its segments are leased
  again once the lease expires, another trainer finishes the epoch, and
  every sequence's state was applied exactly once per segment (the counts
  in the state, next_segment, saves_applied).

Run: python3 tests/python/test_training_dist.py [PB2_DIR]   (meson test python-training-dist)
"""
import os
import signal
import subprocess
import sys
import tempfile
import time
import unittest

import numpy as np

import harness

PB2 = sys.argv[1] if len(sys.argv) > 1 and os.path.isdir(sys.argv[1]) else ""
sys.argv = harness.setup_path(sys.argv)
from statesaver import Client  # noqa: E402
from statesaver import training as tr  # noqa: E402

try:
    import torch
except ImportError:
    torch = None

HERE = os.path.dirname(os.path.abspath(__file__))
PROC = os.path.join(HERE, "trainer_proc.py")
V, H, U = 16, 8, 6


def trainer(*args):
    return subprocess.Popen([sys.executable, PROC] + [args[0], PB2 or HERE] +
                            [str(a) for a in args[1:]], cwd=HERE,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(p, timeout=120):
    try:
        out, _ = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        out, _ = p.communicate()
        raise AssertionError("trainer did not finish: %s" % out[-3000:])
    if p.returncode != 0:
        raise AssertionError("trainer exited %d: %s" % (p.returncode, out[-3000:]))
    return out


def fill(c, saver):
    """8 sequences of token ids (lengths 18..5: 1..3 segments of U=6)."""
    tr.declare_lstm(c, saver, num_layers=1, hidden_size=H, keep_final=True)
    rng = np.random.default_rng(5)
    lengths = [18, 12, 18, 6, 18, 12, 17, 5]
    toks = [rng.integers(0, V, size=n + 1).astype(np.int64) for n in lengths]
    keys = ["seq%d" % i for i in range(8)]
    tr.submit_sequences(c, saver, keys, {"inputs": [t[:-1] for t in toks],
                                         "targets": [t[1:] for t in toks]}, num_unroll=U)
    return [k.encode() for k in keys], lengths


@unittest.skipIf(torch is None, "torch not installed")
class TwoTrainers(unittest.TestCase):

    def run_world(self, world, tmp):
        srv = harness.Server()
        try:
            c = Client(port=srv.port)
            keys, lengths = fill(c, "lm")
            init = os.path.join(tmp, "init-%d" % world)
            outs = [os.path.join(tmp, "model-%d-%d.pt" % (world, r)) for r in range(world)]
            procs = [trainer("dist", srv.port, "lm", r, world, init, outs[r])
                     for r in range(world)]
            logs = [finish(p) for p in procs]
            f = c.fetch("lm", keys)
            st = c.stats("lm")
            c.close()
            return torch.load(outs[0]), f, st, logs, lengths
        finally:
            srv.cleanup()

    def test_two_processes_equal_reference(self):
        with tempfile.TemporaryDirectory() as tmp:
            m2, f2, st2, logs2, lengths = self.run_world(2, tmp)
            m1, f1, st1, logs1, _ = self.run_world(1, tmp)
        self.assertEqual(set(m1), set(m2))
        for name in m1:
            self.assertTrue(torch.equal(m1[name], m2[name]), name)
            self.assertEqual(m1[name].numpy().tobytes(), m2[name].numpy().tobytes(), name)
        counts = [-(-n // U) for n in lengths]
        np.testing.assert_array_equal(f1.next_segment, counts)
        np.testing.assert_array_equal(f2.next_segment, counts)
        for name in f1.states:
            self.assertEqual(f1.states[name].tobytes(), f2.states[name].tobytes(), name)
        self.assertEqual(st1["saves_applied"], sum(counts))
        self.assertEqual(st2["saves_applied"], sum(counts))
        # the parameters moved (not two untrained models compared)
        torch.manual_seed(1234)
        fresh = torch.nn.Embedding(V, 6).weight.detach()
        self.assertFalse(torch.equal(m1["emb.weight"], fresh))
        self.assertIn("steps 3", logs1[0])
        self.assertIn("steps 3", logs2[0])


class KilledTrainer(unittest.TestCase):

    def test_sigkill_mid_epoch(self):
        srv = harness.Server()
        try:
            c = Client(port=srv.port)
            c.declare("cnt", [("c", (1,)), ("h", (1,))], keep_final=True)
            rng = np.random.default_rng(9)
            toks = [rng.integers(0, 100, size=12).astype(np.int64) for _ in range(6)]
            keys = tr.submit_sequences(c, "cnt", ["s%d" % i for i in range(6)],
                                       {"inputs": toks}, num_unroll=3)
            a = trainer("count", srv.port, "cnt", 2, 1000, 5000)
            line = a.stdout.readline()
            while line and not line.startswith("HOLDING"):
                line = a.stdout.readline()
            self.assertTrue(line.startswith("HOLDING"), "trainer A never held a batch")
            held = line.split()[1].split(",")
            b = trainer("count", srv.port, "cnt", 0, 1000, 5000)
            time.sleep(0.2)
            a.send_signal(signal.SIGKILL)  # mid-epoch, holding a lease
            a.wait(10)
            a.stdout.close()
            out = finish(b)
            self.assertIn("DRAINED", out)
            # the held segments were leased again, by B, after the expiry
            re_leased = [ln for ln in out.splitlines()
                         if ln.startswith("BATCH") and "1" in ln.split("attempts")[-1]]
            self.assertTrue(re_leased, out)
            self.assertTrue(any(k in re_leased[0] for k in held), (held, re_leased))
            f = c.fetch("cnt", keys)
            np.testing.assert_array_equal(f.next_segment, [4] * 6)
            for i in range(6):
                self.assertEqual(float(f.states["c"][i][0]), float(toks[i].sum()))
                self.assertEqual(float(f.states["h"][i][0]), 4.0)  # once per segment
            st = c.stats("cnt")
            self.assertEqual(st["saves_applied"], 24)
            self.assertGreaterEqual(st["expired_leases"], 1)
            self.assertEqual(st["queued"] + st["leased"], 0)
            c.close()
        finally:
            srv.cleanup()


if __name__ == "__main__":
    unittest.main(verbosity=2)
