#!/usr/bin/python3
"""test_charlm -- the examples/charlm recipe end to end, small.

train.py with 2 trainer processes (torch.distributed gloo) against the real
server: loss printed every step and going down, a checkpoint written; the
checkpoint converted with scripts/statesaver-convert torch and served by two
`statesaver-worker serve` processes; generate.py streams text one one-step
segment at a time while one worker is SIGKILLed, and every generated
character is the argmax of PyTorch's own next-character distribution (up
to float ties of 1e-4) given the same history; the session is cancelled at
the end (nothing left in the queue).

Run: python3 tests/python/test_charlm.py [PB2_DIR]   (meson test python-charlm)
"""
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import unittest

import numpy as np

import harness

sys.argv = harness.setup_path(sys.argv)
from statesaver import Client  # noqa: E402

try:
    import torch
except ImportError:
    torch = None

EX = os.path.join(harness.SOURCE_ROOT, "examples", "charlm")
CONVERT = os.path.join(harness.SOURCE_ROOT, "scripts", "statesaver-convert")


def worker(address, model, log):
    return subprocess.Popen([harness.WORKER, "serve", "--server", address, "--model", model,
                             "--saver", "charlm", "--batch", "4", "--lease-ms", "1000",
                             "--wait-ms", "200", "--threads", "1", "--log-level", "warn"],
                            stdout=log, stderr=subprocess.STDOUT)


@unittest.skipIf(torch is None, "torch not installed")
class CharLM(unittest.TestCase):

    def test_train_convert_generate(self):
        srv = harness.Server()
        workers = []
        tmp = tempfile.mkdtemp(prefix="ss-charlm-")
        try:
            ckpt = os.path.join(tmp, "charlm.pt")
            r = subprocess.run([sys.executable, os.path.join(EX, "train.py"), "--server",
                                srv.address, "--nproc", "2", "--max-chars", "20000",
                                "--streams", "16", "--batch", "8", "--num-unroll", "32",
                                "--hidden", "64", "--max-steps", "25", "--out", ckpt],
                               capture_output=True, text=True, timeout=400)
            self.assertEqual(r.returncode, 0, r.stdout[-3000:] + r.stderr[-3000:])
            losses = [float(m) for m in re.findall(r"step \d+ loss ([0-9.]+)", r.stdout)]
            self.assertEqual(len(losses), 25, r.stdout)
            self.assertLess(np.mean(losses[-5:]), np.mean(losses[:5]) - 0.2, losses)
            self.assertIn("checkpoint", r.stdout)
            sd = torch.load(ckpt)
            self.assertEqual(sorted({k.split(".")[0] for k in sd}), ["emb", "fc", "lstm"])
            vocab_file = os.path.join(tmp, "charlm.vocab.json")
            vocab = json.load(open(vocab_file))["vocab"]
            st = Client(port=srv.port).stats("charlm-train")
            self.assertEqual(st["saves_applied"], 25 * 16)  # one save per segment and step
            # convert, serve with two workers
            model = os.path.join(tmp, "charlm.safetensors")
            r = subprocess.run([sys.executable, CONVERT, "torch", ckpt, "--out", model,
                                "--head-activation", "log_softmax"], capture_output=True,
                               text=True, timeout=200)
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
            logs = [open(os.path.join(tmp, "w%d.log" % i), "wb") for i in range(2)]
            workers = [worker(srv.address, model, logs[i]) for i in range(2)]
            n_chars, prompt = 60, "The "
            gen = subprocess.Popen([sys.executable, os.path.join(EX, "generate.py"), "--server",
                                    srv.address, "--vocab", vocab_file, "--prompt", prompt,
                                    "--chars", str(n_chars), "--key", "session-1"],
                                   stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
            got = b""
            while len(got) < len(prompt) + 15:  # mid-generation ...
                ch = gen.stdout.read(1)
                self.assertTrue(ch, "generate.py stopped early")
                got += ch
            workers[0].send_signal(signal.SIGKILL)  # ... one worker dies
            workers[0].wait(10)
            rest = gen.stdout.read()  # the buffered reader holds what came already
            gen.stdout.close()
            self.assertEqual(gen.wait(200), 0)
            text = (got + rest).decode()
            self.assertTrue(text.endswith("\n"))
            text = text[:-1]  # generate.py ends the stream with one newline
            self.assertTrue(text.startswith(prompt))
            served = text[len(prompt):]
            self.assertEqual(len(served), n_chars)
            # every served character is torch's argmax given the same history
            meta = json.load(open(vocab_file))
            m = torch.nn.ModuleDict({
                "emb": torch.nn.Embedding(len(vocab), meta["embed"]),
                "lstm": torch.nn.LSTM(meta["embed"], meta["hidden"], batch_first=True),
                "fc": torch.nn.Linear(meta["hidden"], len(vocab))})
            m.load_state_dict(sd)
            state, history = None, [vocab.index(c) for c in prompt]
            with torch.no_grad():
                for t in history:
                    y, state = m["lstm"](m["emb"](torch.tensor([[t]])), state)
                for i, ch in enumerate(served):
                    logp = torch.log_softmax(m["fc"](y[0, 0]), -1).numpy()
                    best = float(logp.max())
                    self.assertGreaterEqual(float(logp[vocab.index(ch)]), best - 1e-4,
                                            "character %d %r: torch prefers %r" %
                                            (i, ch, vocab[int(logp.argmax())]))
                    y, state = m["lstm"](m["emb"](torch.tensor([[vocab.index(ch)]])), state)
            c = Client(port=srv.port)
            gs = c.stats("charlm")
            self.assertEqual(gs["queued"] + gs["leased"], 0)  # the session was cancelled
            self.assertEqual(int(c.fetch("charlm", [b"session-1"]).next_segment[0]), 0)
            c.close()
            self.assertIsNone(workers[1].poll(), "the surviving worker exited")
        finally:
            for f in locals().get("logs", []):
                f.close()
            for w in workers:
                if w.poll() is None:
                    w.kill()
                    w.wait(10)
            srv.cleanup()
            import shutil
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    unittest.main(verbosity=2)
