#!/usr/bin/python3
"""test_training -- statesaver.training (the networked SQSS for trainers)
against the real statesaver-server on 127.0.0.1 with a temp LMDB dir.

Every NextQueuedSequenceBatch field against TensorFlow's documented
expectation (key / next_key with the STOP: marker, length per segment
max(0, min(num_unroll, total - s*num_unroll)), total_length, sequence,
sequence_count, context tiled to every segment, per-example initial states,
tuple states carried across segments) for numpy and torch; nn.LSTM/nn.GRU
state layouts; Cancel frees queue slots, and is refused (UNAVAILABLE, nothing
removed) while a Complete of the key is in flight; bad input is a clear error naming
the field, the server keeps serving and nothing stored changes.

Run: python3 tests/python/test_training.py [PB2_DIR]   (meson test python-training)
"""
import sys
import unittest

import numpy as np

import harness

sys.argv = harness.setup_path(sys.argv)
from statesaver import Client, InvalidArgument, ResourceExhausted  # noqa: E402
from statesaver import training as tr  # noqa: E402
from statesaver._pb import pb  # noqa: E402
from statesaver.client import to_tensor  # noqa: E402

try:
    import torch
except ImportError:  # the torch cases say so and fail: CI installs python3-torch
    torch = None

SERVER = None
U = 4  # num_unroll


def setUpModule():
    global SERVER
    SERVER = harness.Server(extra=["--queue-capacity", "1000"])


def tearDownModule():
    if SERVER is not None:
        code = SERVER.stop()
        log = SERVER.log_text()
        SERVER.cleanup()
        if code != 0:
            raise RuntimeError("server exited with %d on SIGTERM: %s" % (code, log))


def client():
    return Client(port=SERVER.port)


def examples(seed):
    """Four examples of lengths 10, 7, 4, 1 (3, 2, 1, 1 segments of U=4)."""
    rng = np.random.default_rng(seed)
    lengths = [10, 7, 4, 1]
    toks = [rng.integers(0, 50, size=n).astype(np.int64) for n in lengths]
    feats = [rng.standard_normal((n, 2)) for n in lengths]           # float64
    ctx = rng.standard_normal((4, 3)).astype(np.float32)             # per example
    h0 = rng.standard_normal((4, 2)).astype(np.float32)              # per-example h
    return lengths, toks, feats, ctx, h0


C_INIT = np.array([0.5, -0.5], np.float32)  # the saver's initial value of c


def step(c, h, tok, feat, length):
    """The deterministic 'cell' of the tests: a tuple state (c, h)."""
    c2 = c + np.float32(tok[:length].sum()) + feat[:length].sum(0).astype(np.float32)
    h2 = np.float32(0.5) * h + c2
    return c2.astype(np.float32), h2.astype(np.float32)


class SqssFields(unittest.TestCase):

    def run_fields(self, saver, framework):
        c = client()
        c.declare(saver, [("c", (2,), C_INIT), ("h", (2,))], keep_final=True)
        lengths, toks, feats, ctx, h0 = examples(1)
        keys = tr.submit_sequences(c, saver, ["e0", "e1", "e2", "e3"],
                                   {"inputs": toks, "feat": feats}, context={"spk": ctx},
                                   num_unroll=U, initial_states={"h": h0})
        self.assertEqual(keys, [b"e0", b"e1", b"e2", b"e3"])
        idx = {k: i for i, k in enumerate(keys)}
        counts = [max(1, -(-n // U)) for n in lengths]
        ref = {i: (C_INIT.copy(), h0[i].copy()) for i in range(4)}
        seen = {i: [] for i in range(4)}
        b = tr.SequenceBatcher(c, saver, batch_size=3, min_batch=0, max_delay_ms=0,
                               wait_ms=300, framework=framework)
        n_batches = 0
        for batch in b:
            n_batches += 1
            self.assertGreaterEqual(len(batch), 1)
            self.assertLessEqual(len(batch), 3)
            conv = (lambda t: t.numpy()) if framework == "torch" else np.asarray
            if framework == "torch":
                self.assertIsInstance(batch.sequences["inputs"], torch.Tensor)
                self.assertIsInstance(batch.state("c"), torch.Tensor)
            seqs = {k: conv(v) for k, v in batch.sequences.items()}
            cx = conv(batch.context["spk"])
            cst, hst = conv(batch.state("c")), conv(batch.state("h"))
            new_c, new_h = [], []
            for j, key in enumerate(batch.keys):
                i = idx[key]
                s = int(batch.sequence[j])
                n, cnt = lengths[i], counts[i]
                seen[i].append(s)
                self.assertEqual(batch.key[j], b"%05d_of_%05d:%s" % (s, cnt, key))
                want_next = (b"STOP:" + key if s + 1 == cnt
                             else b"%05d_of_%05d:%s" % (s + 1, cnt, key))
                self.assertEqual(batch.next_key[j], want_next)
                self.assertEqual(int(batch.length[j]), max(0, min(U, n - s * U)))
                self.assertEqual(int(batch.total_length[j]), n)
                self.assertEqual(int(batch.sequence_count[j]), cnt)
                np.testing.assert_array_equal(cx[j], ctx[i])           # tiled every segment
                want_in = np.zeros(U, np.int64)
                part = toks[i][s * U:(s + 1) * U]
                want_in[:len(part)] = part                               # padded (pad=True)
                np.testing.assert_array_equal(seqs["inputs"][j], want_in)
                self.assertEqual(seqs["inputs"].dtype, np.int64)
                self.assertEqual(seqs["feat"].dtype, np.float64)
                np.testing.assert_array_equal(seqs["feat"][j][:len(part)],
                                              feats[i][s * U:(s + 1) * U])
                # the carried tuple state (segment 0: per-example h, saver's c)
                np.testing.assert_array_equal(cst[j], ref[i][0])
                np.testing.assert_array_equal(hst[j], ref[i][1])
                c2, h2 = step(cst[j], hst[j], seqs["inputs"][j], seqs["feat"][j],
                              int(batch.length[j]))
                ref[i] = (c2, h2)
                new_c.append(c2)
                new_h.append(h2)
            if framework == "torch":
                batch.save_state("c", torch.from_numpy(np.stack(new_c)))
                self.assertFalse(batch.completed)
                batch.save_state("h", torch.from_numpy(np.stack(new_h)))
            else:
                batch.save_state("c", np.stack(new_c))
                self.assertFalse(batch.completed)
                batch.save_state("h", np.stack(new_h))
            self.assertTrue(batch.completed)  # the last state completes the batch
        self.assertGreaterEqual(n_batches, 3)
        for i in range(4):
            self.assertEqual(seen[i], list(range(counts[i])))
        # keep_final: the final states are the reference's, each applied once
        f = c.fetch(saver, keys)
        np.testing.assert_array_equal(f.next_segment, counts)
        for i in range(4):
            np.testing.assert_array_equal(f.states["c"][i], ref[i][0])
            np.testing.assert_array_equal(f.states["h"][i], ref[i][1])
        # the batcher collected the done records: nothing is left behind
        from statesaver import NotFound
        for i in range(4):
            with self.assertRaises(NotFound):
                c.await_segment(saver, keys[i], counts[i] - 1, wait_ms=0)
        c.close()

    def test_fields_numpy(self):
        self.run_fields("sqss-np", "numpy")

    @unittest.skipIf(torch is None, "torch not installed")
    def test_fields_torch(self):
        self.run_fields("sqss-torch", "torch")

    def test_context_stored_once(self):
        """A 64 KiB context sent with each of 40 segments costs the store
        about one copy, not 40 (it is kept once per sequence). Measured in
        bytes written to the write-ahead log (the exact puts of every
        commit), not in LMDB pages, whose count depends on how the 40
        commits were grouped and on the checkpoint's snapshot pin."""
        c = client()
        c.declare("ctx-once", [("h", (1,))])
        big = np.arange(16384, dtype=np.float32)  # 64 KiB
        before = c.stats()["wal_bytes"]
        tr.submit_sequences(c, "ctx-once", ["long"], {"inputs": [np.arange(40)]},
                            context={"big": big[None]}, num_unroll=1,
                            context_every_segment=True)
        written = c.stats()["wal_bytes"] - before
        self.assertGreater(written, 65536, "the context was not written (%d bytes)" % written)
        self.assertLess(written, 3 * 65536, "40 segments wrote %d bytes" % written)
        lease = c.lease("ctx-once", max_batch=1)
        np.testing.assert_array_equal(lease.items[0].context["big"], big)
        c.close()

    def test_keys_unique_and_helpers(self):
        self.assertEqual(tr.segment_lengths(10, 4), [4, 4, 2])
        self.assertEqual(tr.segment_lengths(8, 4), [4, 4])
        self.assertEqual(tr.segment_lengths(0, 4), [0])
        self.assertEqual(tr.next_segment_key(1, 2, b"k"), b"STOP:k")
        self.assertEqual(tr.next_segment_key(0, 0, b"k", last=True), b"STOP:k")
        c = client()
        c.declare("uniq", [("h", (1,))])
        toks = [np.arange(3)]
        k1 = tr.submit_sequences(c, "uniq", ["same"], {"inputs": toks}, num_unroll=2,
                                 make_keys_unique=True, make_keys_unique_seed=7)
        k2 = tr.submit_sequences(c, "uniq", ["same"], {"inputs": toks}, num_unroll=2,
                                 make_keys_unique=True, make_keys_unique_seed=8)
        self.assertNotEqual(k1, k2)
        for k in k1 + k2:
            self.assertRegex(k, rb"^same:[0-9a-f]{16}$")
        with self.assertRaises(InvalidArgument):
            tr.submit_sequences(c, "uniq", ["p"], {"inputs": [np.arange(3)]}, num_unroll=2,
                                pad=False)
        c.close()


class CSplit(unittest.TestCase):

    def test_c_split_fills_counts(self):
        """The C library's split (here through `statesaver submit`) sends
        total_length and sequence_count with every segment."""
        import os
        import subprocess
        import tempfile
        cli = os.path.join(harness.BUILD_ROOT, "client", "statesaver")
        self.assertTrue(os.access(cli, os.X_OK), cli)
        c = client()
        c.declare("csplit", [("h", (2,))])
        with tempfile.TemporaryDirectory() as tmp:
            os.mkdir(os.path.join(tmp, "in"))
            np.save(os.path.join(tmp, "in", "k.npy"), np.ones((10, 3), np.float32))
            r = subprocess.run([cli, "--server", SERVER.address, "submit", "csplit", "--inputs",
                                os.path.join(tmp, "in"), "--outputs", os.path.join(tmp, "out"),
                                "--num-unroll", "4", "--max-wait-ms", "300", "--wait-ms", "100"],
                               capture_output=True, text=True, timeout=60)
            self.assertEqual(r.returncode, 1, r.stdout + r.stderr)  # no worker: it gave up
        seen = []
        for _ in range(3):
            lease = c.lease("csplit", max_batch=1, wait_ms=2000)
            it = lease.items[0]
            seen.append((it.segment, it.length, it.total_length, it.sequence_count))
            c.complete("csplit", lease.lease_id,
                       [{"key": it.key, "segment": it.segment, "states": [np.zeros(2)]}])
        self.assertEqual(seen, [(0, 4, 10, 3), (1, 4, 10, 3), (2, 2, 10, 3)])
        c.close()


@unittest.skipIf(torch is None, "torch not installed")
class TorchLayouts(unittest.TestCase):

    def test_lstm_gru_layouts(self):
        c = client()
        tr.declare_lstm(c, "lstm2", num_layers=2, hidden_size=3, keep_final=True)
        tr.declare_gru(c, "gru2", num_layers=2, hidden_size=3, keep_final=True)
        self.assertEqual(list(c.schema("lstm2")), tr.lstm_state_names(2))
        toks = [np.arange(5), np.arange(5) + 1]
        for saver in ("lstm2", "gru2"):
            tr.submit_sequences(c, saver, ["a", "b"], {"inputs": toks}, num_unroll=5)
        torch.manual_seed(0)
        lstm = torch.nn.LSTM(4, 3, num_layers=2)
        emb = torch.nn.Embedding(10, 4)
        b = tr.SequenceBatcher(c, "lstm2", 2, framework="torch", max_delay_ms=0, wait_ms=200)
        batch = b.next_batch()
        h0, c0 = tr.torch_lstm_state(batch, 2)
        self.assertEqual(tuple(h0.shape), (2, 2, 3))
        self.assertEqual(float(h0.abs().sum()), 0.0)
        x = emb(batch.sequences["inputs"]).transpose(0, 1)  # [T, B, 4]
        _, (h1, c1) = lstm(x, (h0, c0))
        tr.save_torch_lstm_state(batch, (h1, c1))
        self.assertTrue(batch.completed)
        f = c.fetch("lstm2", batch.keys)
        for layer in range(2):
            np.testing.assert_array_equal(f.states["cell_%d/h" % layer], h1[layer].detach().numpy())
            np.testing.assert_array_equal(f.states["cell_%d/c" % layer], c1[layer].detach().numpy())
        gru = torch.nn.GRU(4, 3, num_layers=2)
        g = tr.SequenceBatcher(c, "gru2", 2, framework="torch", max_delay_ms=0, wait_ms=200)
        batch = g.next_batch()
        h0 = tr.torch_gru_state(batch, 2)
        self.assertEqual(tuple(h0.shape), (2, 2, 3))
        _, h1 = gru(emb(batch.sequences["inputs"]).transpose(0, 1), h0)
        tr.save_torch_gru_state(batch, h1)
        f = c.fetch("gru2", batch.keys)
        np.testing.assert_array_equal(f.states["cell_1/h"], h1[1].detach().numpy())
        c.close()


class CancelAndBadInput(unittest.TestCase):

    def test_cancel_frees_slots(self):
        srv = harness.Server(extra=["--queue-capacity", "4"])
        try:
            c = Client(port=srv.port)
            c.declare("cap", [("h", (2,))])
            toks = [np.arange(8), np.arange(8)]
            tr.submit_sequences(c, "cap", ["a", "b"], {"inputs": toks}, num_unroll=4)
            with self.assertRaises(ResourceExhausted):
                tr.submit_sequences(c, "cap", ["c"], {"inputs": [np.arange(4)]}, num_unroll=4,
                                    full_retry_s=0.2)
            lease = c.lease("cap", max_batch=1)
            self.assertEqual(lease.items[0].key, b"a")
            r = c.cancel("cap", [b"a"])
            self.assertEqual((r.cancelled, r.segments), (1, 2))
            self.assertEqual(c.stats("cap")["queued"], 2)
            tr.submit_sequences(c, "cap", ["c"], {"inputs": [np.arange(4)]}, num_unroll=4,
                                full_retry_s=0.2)
            # the cancelled leased segment: a clear error naming it
            from statesaver import FailedPrecondition
            with self.assertRaisesRegex(FailedPrecondition, "key a segment 0 was cancelled"):
                c.complete("cap", lease.lease_id,
                           [{"key": b"a", "segment": 0, "states": [np.zeros(2)]}])
            c.close()
        finally:
            srv.cleanup()

    def test_max_in_flight(self):
        """Declare(max_in_flight=2) from the Python client: echoed by
        Declare and the saver listing, and a Lease hands out segments of at
        most 2 distinct sequences until a Complete frees them."""
        c = client()
        d = c.declare("mif", [("h", (2,))], max_in_flight=2)
        self.assertEqual(d.max_in_flight, 2)
        self.assertEqual([s.max_in_flight for s in c.savers() if s.name == "mif"], [2])
        tr.submit_sequences(c, "mif", ["a", "b", "c", "d"], {"inputs": [np.arange(8)] * 4},
                            num_unroll=4)
        l1 = c.lease("mif", max_batch=4)
        self.assertEqual(len({it.key for it in l1.items}), 2)
        self.assertEqual(len(c.lease("mif", max_batch=4, wait_ms=0).items), 0)
        c.complete("mif", l1.lease_id, [{"key": it.key, "segment": it.segment,
                                         "states": [np.zeros(2)]} for it in l1.items])
        l2 = c.lease("mif", max_batch=4)
        self.assertEqual(len({it.key for it in l2.items}), 2)
        c.cancel("mif", [b"a", b"b", b"c", b"d"])
        c.close()

    def test_cancel_while_complete_in_flight(self):
        """Cancel of a key whose Complete is not committed yet: UNAVAILABLE
        ("cancel again"), nothing removed; once the Complete committed, the
        retried Cancel removes the state it wrote. The Complete and the
        Cancel go in one send, so the server reads both before the writer
        can report the Complete's commit."""
        import struct
        c = client()
        c.declare("inflight", [("h", (2,))])
        tr.submit_sequences(c, "inflight", ["k"], {"inputs": [np.arange(8)]}, num_unroll=4)
        lease = c.lease("inflight", max_batch=1)
        self.assertEqual(lease.items[0].key, b"k")
        comp = pb.Request(id=9001)
        it = comp.complete.items.add(key=b"k", segment=0)
        comp.complete.saver, comp.complete.lease_id = "inflight", lease.lease_id
        it.states.extend([to_tensor(np.ones(2, np.float32))])
        canc = pb.Request(id=9002)
        canc.cancel.saver = "inflight"
        canc.cancel.keys.extend([b"k"])
        frames = b"".join(struct.pack(">I", len(d)) + d
                          for d in (comp.SerializeToString(), canc.SerializeToString()))
        with c._lock:
            c._sock.sendall(frames)
            got = {}
            while len(got) < 2:
                r = c._read_response()
                got[r.id] = r
        self.assertEqual(got[9001].status.code, pb.OK, got[9001].status.message)
        self.assertEqual(got[9002].status.code, pb.UNAVAILABLE, got[9002].status.message)
        self.assertIn("cancel again", got[9002].status.message)
        # Nothing was removed by the refused Cancel: the Complete's state is
        # there and segment 1 is queued.
        self.assertEqual(int(c.fetch("inflight", [b"k"]).next_segment[0]), 1)
        self.assertEqual(c.stats("inflight")["queued"], 1)
        r = c.cancel("inflight", [b"k"])
        # job records removed: segment 0 (done) and segment 1 (queued)
        self.assertEqual((r.cancelled, r.segments), (1, 2))
        self.assertEqual(c.stats("inflight")["queued"], 0)
        self.assertEqual(int(c.fetch("inflight", [b"k"]).next_segment[0]), 0)
        c.close()

    def test_bad_input(self):
        c = client()
        c.declare("bad", [("h", (2,))])
        tr.submit_sequences(c, "bad", ["ok"], {"inputs": [np.arange(8)]}, num_unroll=4)
        before = c.stats("bad")

        def submit(**kw):
            return c.call("submit", pb.SubmitRequest(saver="bad", key=b"x", segment=0,
                                                     length=4, **kw))
        t4 = to_tensor(np.arange(4, dtype=np.int64))
        t5 = to_tensor(np.arange(5, dtype=np.int64))
        cases = [
            ("sequences.tgt", dict(inputs=t4, sequences={"tgt": t5})),
            ("unknown dtype", dict(inputs=t4, sequences={
                "x": pb.Tensor(dtype=9, shape=[4], data=b"\0" * 16)})),
            ("context.c", dict(inputs=t4, context={"c": to_tensor(np.zeros((4, 2), np.float32))})),
            ("initial_states.h", dict(inputs=t4, initial_states={
                "h": to_tensor(np.zeros(3, np.float32))})),
        ]
        for field, kw in cases:
            with self.assertRaises(InvalidArgument) as cm:
                submit(**kw)
            self.assertIn(field, cm.exception.message)
        # Python-side refusal of mismatched T before anything is sent
        with self.assertRaises(InvalidArgument):
            tr.submit_sequences(c, "bad", ["y"], {"inputs": [np.arange(4)],
                                                  "t": [np.arange(5)]}, num_unroll=4)
        with self.assertRaisesRegex(InvalidArgument, "min_batch"):
            c.lease("bad", max_batch=2, min_batch=3)
        with self.assertRaises(InvalidArgument):
            tr.SequenceBatcher(c, "bad", batch_size=2, min_batch=3)
        lease = c.lease("bad", max_batch=1)
        req = pb.CompleteRequest(saver="bad", lease_id=lease.lease_id)
        req.items.add(key=b"ok", segment=0)
        with self.assertRaisesRegex(InvalidArgument, "states"):
            c.call("complete", req)
        # nothing changed, the server serves, the lease is still live
        after = c.stats("bad")
        self.assertEqual((after["queued"], after["leased"]), (before["queued"] - 1, 1))
        self.assertEqual(c.complete("bad", lease.lease_id,
                                    [{"key": b"ok", "segment": 0, "states": [np.ones(2)]}]),
                         [False])
        self.assertEqual(int(c.fetch("bad", [b"ok"]).next_segment[0]), 1)
        c.close()


if __name__ == "__main__":
    unittest.main(verbosity=2)
