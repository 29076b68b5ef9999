#!/usr/bin/python3
"""test_client -- the Python client (client/python/statesaver) against the
real statesaver-server on 127.0.0.1 with a temp LMDB dir.

Covers: round trip of states (float32 and initial values, any-bytes keys),
compare-and-set conflicts surfaced as FailedPrecondition with the server's
message, all-or-nothing batches, bad input (clear error, server keeps
serving, nothing changes), list/drop/stats, auth tokens, the SQSS adapter
carrying LSTM state across segments (against a numpy reference unroll), and
a chunked run through submit/await with real workers equal to a whole-
sequence `statesaver-worker unroll`.

Run: python3 tests/python/test_client.py [PB2_DIR]   (meson test python-client)
"""
import os
import subprocess
import sys
import tempfile
import unittest

import numpy as np

import harness

sys.argv = harness.setup_path(sys.argv)
import statesaver  # noqa: E402
from statesaver import Client, SequenceStateSaver  # noqa: E402

SERVER = None


def setUpModule():
    global SERVER
    SERVER = harness.Server()


def tearDownModule():
    if SERVER is not None:
        code = SERVER.stop()
        log = SERVER.log_text()
        SERVER.cleanup()
        if code != 0:
            raise RuntimeError("server exited with %d on SIGTERM: %s" % (code, log))


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def lstm_reference(x, c, h, kernel, bias, lengths=None, forget_bias=1.0):
    """static_rnn with a TF LSTMCell in float64: x [T, B, in] -> outputs
    [T, B, H], (c, h); rows past their length keep state, output zeros."""
    T, B = x.shape[:2]
    H = h.shape[1]
    lengths = np.full(B, T) if lengths is None else np.asarray(lengths)
    c, h = c.astype(np.float64), h.astype(np.float64)
    out = np.zeros((T, B, H))
    for t in range(T):
        z = np.concatenate([x[t], h], axis=1) @ kernel + bias
        i, j, f, o = np.split(z, 4, axis=1)
        c2 = sigmoid(f + forget_bias) * c + sigmoid(i) * np.tanh(j)
        h2 = sigmoid(o) * np.tanh(c2)
        live = (t < lengths)[:, None]
        c, h = np.where(live, c2, c), np.where(live, h2, h)
        out[t] = np.where(live, h2, 0.0)
    return out, c, h


def read_safetensors(path):
    import json
    import struct
    with open(path, "rb") as f:
        blob = f.read()
    (n,) = struct.unpack("<Q", blob[:8])
    head = json.loads(blob[8:8 + n])
    data = blob[8 + n:]
    out = {}
    for k, v in head.items():
        if k == "__metadata__":
            continue
        a, b = v["data_offsets"]
        out[k] = np.frombuffer(data[a:b], dtype="<f4").reshape(v["shape"]).astype(np.float64)
    return out, head["__metadata__"]


class ClientTest(unittest.TestCase):

    def setUp(self):
        self.c = Client(SERVER.address, timeout=20)
        self.saver = "py-" + self.id().rsplit(".", 1)[-1]
        self.c.drop(self.saver, all=True) if self.saver in [s.name for s in self.c.savers()] else None

    def tearDown(self):
        self.c.close()

    def declare_lstm(self, units=8, **kw):
        return self.c.declare(self.saver, {"cell_0/c": [units], "cell_0/h": [units]}, **kw)

    # ---- basics ---------------------------------------------------------

    def test_ping_and_env_address(self):
        self.assertGreater(self.c.ping(b"abc"), 1_600_000_000_000)
        old = os.environ.get("STATESAVER_SERVER")
        os.environ["STATESAVER_SERVER"] = SERVER.address
        try:
            with Client() as c2:
                self.assertGreater(c2.ping(), 0)
        finally:
            if old is None:
                del os.environ["STATESAVER_SERVER"]
            else:
                os.environ["STATESAVER_SERVER"] = old

    def test_declare_idempotent_and_conflicting_schema(self):
        r = self.declare_lstm()
        self.assertTrue(r.created)
        self.assertEqual([(s.name, s.shape, s.dtype) for s in r.states],
                         [("cell_0/c", (8,), "float32"), ("cell_0/h", (8,), "float32")])
        self.assertFalse(self.declare_lstm().created)
        with self.assertRaises(statesaver.AlreadyExists) as cm:
            self.declare_lstm(units=9)
        self.assertEqual(cm.exception.code, "ALREADY_EXISTS")
        self.assertEqual(cm.exception.code_value, 6)
        self.assertIn(self.saver, cm.exception.message)

    def test_fetch_new_keys_gives_initial_state(self):
        init = np.arange(4, dtype=np.float32) - 1.5
        self.c.declare(self.saver, [("h", [4], init), ("c", [2, 3])])
        r = self.c.fetch(self.saver, [b"a", "b"])
        self.assertEqual(list(r.states), ["h", "c"])
        np.testing.assert_array_equal(r.states["h"], np.stack([init, init]))
        np.testing.assert_array_equal(r.states["c"], np.zeros((2, 2, 3), np.float32))
        self.assertEqual(r.next_segment.tolist(), [0, 0])
        self.assertEqual(r.states["h"].dtype, np.float32)

    def test_round_trip(self):
        self.declare_lstm()
        rng = np.random.default_rng(1)
        keys = [b"seq-1", b"\x00\xff binary \x01", "ünïcode".encode(), b"k" * 1024]
        c = rng.standard_normal((4, 8)).astype(np.float32)
        h = rng.standard_normal((4, 8)).astype(np.float32)
        applied = self.c.save(self.saver, keys, 0, {"cell_0/h": h, "cell_0/c": c})
        self.assertEqual(applied, [False] * 4)
        r = self.c.fetch(self.saver, keys)
        np.testing.assert_array_equal(r.states["cell_0/c"], c)  # bit-exact
        np.testing.assert_array_equal(r.states["cell_0/h"], h)
        self.assertEqual(r.next_segment.tolist(), [1] * 4)
        self.assertTrue(all(u > 0 for u in r.updated_ms))
        # Second segment, list order of states.
        self.c.save(self.saver, keys, [1, 1, 1, 1], [c * 2, h * 2])
        r = self.c.fetch(self.saver, keys)
        np.testing.assert_array_equal(r.states["cell_0/c"], c * 2)
        self.assertEqual(r.next_segment.tolist(), [2] * 4)
        seqs = {s.key: s.next_segment for s in self.c.sequences(self.saver)}
        self.assertEqual(seqs, {k: 2 for k in keys})

    # ---- compare-and-set ------------------------------------------------

    def test_cas_conflict_raises_with_server_message(self):
        self.declare_lstm()
        z = np.zeros((1, 8), np.float32)
        self.c.save(self.saver, [b"k"], 0, [z, z])
        with self.assertRaises(statesaver.FailedPrecondition) as cm:
            self.c.save(self.saver, [b"k"], 5, [z + 1, z + 1])
        e = cm.exception
        self.assertIsInstance(e, statesaver.StatesaverError)
        self.assertEqual(e.code, "FAILED_PRECONDITION")
        self.assertEqual(e.code_value, 9)
        # The server's message names the key, the expected and found segment.
        self.assertIn("k", e.message)
        self.assertRegex(e.message, r"\b5\b")
        self.assertRegex(e.message, r"\b1\b")
        self.assertTrue(str(e).startswith("FAILED_PRECONDITION: "))
        r = self.c.fetch(self.saver, [b"k"])
        self.assertEqual(r.next_segment.tolist(), [1])
        np.testing.assert_array_equal(r.states["cell_0/c"], z)

    def test_repeated_save_reports_already_applied(self):
        self.declare_lstm()
        v = np.full((1, 8), 3.0, np.float32)
        self.assertEqual(self.c.save(self.saver, ["r"], 0, [v, v]), [False])
        self.assertEqual(self.c.save(self.saver, ["r"], 0, [v, v]), [True])
        self.assertEqual(self.c.fetch(self.saver, ["r"]).next_segment.tolist(), [1])

    def test_batch_is_all_or_nothing(self):
        self.declare_lstm()
        z = np.zeros((2, 8), np.float32)
        self.c.save(self.saver, [b"a", b"b"], 0, [z, z])
        with self.assertRaises(statesaver.FailedPrecondition):
            # a is at 1 (ok), b claims segment 3 (conflict): nothing applies.
            self.c.save(self.saver, [b"a", b"b"], [1, 3], [z + 7, z + 7])
        r = self.c.fetch(self.saver, [b"a", b"b"])
        self.assertEqual(r.next_segment.tolist(), [1, 1])
        np.testing.assert_array_equal(r.states["cell_0/h"], z)

    # ---- bad input --------------------------------------------------------

    def test_bad_input_is_refused_and_server_keeps_serving(self):
        self.declare_lstm()
        z = np.zeros((1, 8), np.float32)
        cases = [
            ("wrong state width", lambda: self.c.save(self.saver, [b"x"], 0,
                                                      [np.zeros((1, 9), np.float32), z]),
             statesaver.InvalidArgument),
            ("batch mismatch", lambda: self.c.save(self.saver, [b"x", b"y"], 0, [z, z]),
             statesaver.InvalidArgument),
            ("empty key", lambda: self.c.fetch(self.saver, [b""]), statesaver.InvalidArgument),
            ("key too long", lambda: self.c.fetch(self.saver, [b"k" * 1025]),
             statesaver.InvalidArgument),
            ("unknown saver", lambda: self.c.fetch("no-such-saver", [b"x"]), statesaver.NotFound),
            ("missing state name", lambda: self.c.save(self.saver, [b"x"], 0, {"cell_0/c": z}),
             statesaver.InvalidArgument),
        ]
        for name, call, exc in cases:
            with self.subTest(name):
                with self.assertRaises(exc) as cm:
                    call()
                self.assertTrue(cm.exception.message)
                self.assertGreater(self.c.ping(), 0)
        r = self.c.fetch(self.saver, [b"x", b"y"])
        self.assertEqual(r.next_segment.tolist(), [0, 0])

    def test_frame_limit_checked_before_sending(self):
        self.declare_lstm()
        with Client(SERVER.address, max_frame_bytes=256) as small:
            big = np.zeros((16, 8), np.float32)
            with self.assertRaises(statesaver.InvalidArgument):
                small.save(self.saver, ["k%d" % i for i in range(16)], 0, [big, big])
            self.assertGreater(small.ping(), 0)

    # ---- list, drop, stats ------------------------------------------------

    def test_list_drop_stats(self):
        self.declare_lstm(idle_ttl_ms=0, keep_final=False)
        z = np.zeros((30, 8), np.float32)
        keys = [b"p-%02d" % i for i in range(25)] + [b"q-%02d" % i for i in range(5)]
        self.c.save(self.saver, keys, 0, [z, z])
        got = [s.key for s in self.c.sequences(self.saver, page_size=7)]
        self.assertEqual(got, sorted(keys))
        got = [s.key for s in self.c.sequences(self.saver, prefix=b"q-", page_size=2)]
        self.assertEqual(got, keys[25:])
        info = [s for s in self.c.savers() if s.name == self.saver][0]
        self.assertEqual(info.sequences, 30)
        self.assertEqual(self.c.drop(self.saver, keys[:3]), 3)
        self.assertEqual(len(list(self.c.sequences(self.saver))), 27)
        st = self.c.stats()
        for f in ("uptime_ms", "savers", "sequences", "commits", "requests", "map_size"):
            self.assertIn(f, st)
        self.assertGreaterEqual(st["sequences"], 27)
        self.assertGreater(st["map_size"], 0)
        self.assertGreater(self.c.drop(self.saver, all=True), 0)
        self.assertNotIn(self.saver, [s.name for s in self.c.savers()])

    def test_final_save_ends_sequence(self):
        self.declare_lstm()
        v = np.ones((1, 8), np.float32)
        self.c.save(self.saver, [b"f"], 0, [v, v], final=True)
        r = self.c.fetch(self.saver, [b"f"])
        self.assertEqual(r.next_segment.tolist(), [0])
        np.testing.assert_array_equal(r.states["cell_0/c"], np.zeros((1, 8), np.float32))

    # ---- the SQSS adapter -------------------------------------------------

    def test_sqss_adapter_carries_state_across_segments(self):
        units, in_size, T, num_unroll = 8, 3, 14, 4
        self.declare_lstm(units)
        rng = np.random.default_rng(7)
        kernel = rng.uniform(-0.5, 0.5, (in_size + units, 4 * units))
        bias = rng.uniform(-0.1, 0.1, 4 * units)
        keys = [b"u-0", b"u-1", b"u-2"]
        x = rng.standard_normal((T, len(keys), in_size))
        want_out, want_c, want_h = lstm_reference(
            x, np.zeros((3, units)), np.zeros((3, units)), kernel, bias)

        ss = SequenceStateSaver(self.c, self.saver, keys)
        outs = []
        for seg, t0 in enumerate(range(0, T, num_unroll)):
            self.assertEqual(ss.segment.tolist(), [seg] * 3)
            c, h = ss.state("cell_0/c"), ss.state("cell_0/h")
            if seg > 0:
                # The state really lives in the server, not just the cache.
                r = self.c.fetch(self.saver, keys)
                np.testing.assert_array_equal(r.states["cell_0/c"], c)
                self.assertEqual(r.next_segment.tolist(), [seg] * 3)
            out, c, h = lstm_reference(x[t0:t0 + num_unroll], c, h, kernel, bias)
            outs.append(out)
            self.assertFalse(ss.save_state("cell_0/h", h.astype(np.float32)))
            self.assertTrue(ss.save_state("cell_0/c", c.astype(np.float32)))
        got = np.concatenate(outs)
        np.testing.assert_allclose(got, want_out, rtol=1e-5, atol=1e-6)
        r = self.c.fetch(self.saver, keys)
        self.assertEqual(r.next_segment.tolist(), [4] * 3)
        np.testing.assert_allclose(r.states["cell_0/h"], want_h, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(r.states["cell_0/c"], want_c, rtol=1e-5, atol=1e-6)

        # A fresh adapter (another trainer process) resumes where it stopped.
        ss2 = SequenceStateSaver(self.c, self.saver, keys)
        self.assertEqual(ss2.segment.tolist(), [4] * 3)
        np.testing.assert_array_equal(ss2.state("cell_0/h"), r.states["cell_0/h"])

        # Two adapters on the same keys. ss2 commits segment 4; ss, still at
        # segment 4, finds it already saved by another writer.
        ones = np.ones((3, units), np.float32)
        zeros = np.zeros((3, units), np.float32)
        ss2.save_state("cell_0/c", zeros)
        ss2.save_state("cell_0/h", zeros)
        ss.state("cell_0/c")
        ss.save_state("cell_0/h", ones)
        with self.assertRaises(statesaver.FailedPrecondition) as cm:
            ss.save_state("cell_0/c", ones)
        self.assertIn("another writer", cm.exception.message)
        r = self.c.fetch(self.saver, keys)
        self.assertEqual(r.next_segment.tolist(), [5] * 3)
        np.testing.assert_array_equal(r.states["cell_0/h"], zeros)
        # ss refetched: it is at segment 5 now. Once ss2 is two segments
        # ahead, a stale commit is refused by the server, with its message.
        self.assertEqual(ss.segment.tolist(), [5] * 3)
        for _ in range(2):
            ss2.save_state("cell_0/c", zeros)
            ss2.save_state("cell_0/h", zeros)
        ss.save_state("cell_0/h", ones)
        with self.assertRaises(statesaver.FailedPrecondition) as cm:
            ss.save_state("cell_0/c", ones)
        self.assertEqual(cm.exception.code, "FAILED_PRECONDITION")
        self.assertNotIn("another writer", cm.exception.message)
        self.assertIn("u-", cm.exception.message)
        r = self.c.fetch(self.saver, keys)
        self.assertEqual(r.next_segment.tolist(), [7] * 3)
        np.testing.assert_array_equal(r.states["cell_0/h"], zeros)

        # Final segment: records are deleted (SQSS STOP), next fetch restarts.
        ss2.set_final(True)
        ss2.save_state("cell_0/c", np.ones((3, units), np.float32))
        ss2.save_state("cell_0/h", np.ones((3, units), np.float32))
        self.assertEqual(self.c.fetch(self.saver, keys).next_segment.tolist(), [0] * 3)
        self.assertEqual(ss2.segment.tolist(), [0] * 3)

    def test_sqss_adapter_rejects_partial_schema_and_bad_batch(self):
        self.declare_lstm()
        with self.assertRaises(statesaver.InvalidArgument):
            SequenceStateSaver(self.c, self.saver, [b"a"], state_names=["cell_0/c"])
        ss = SequenceStateSaver(self.c, self.saver, [b"a", b"b"])
        with self.assertRaises(statesaver.InvalidArgument):
            ss.save_state("cell_0/c", np.zeros((3, 8), np.float32))
        with self.assertRaises(KeyError):
            ss.state("nope")


class AuthTest(unittest.TestCase):

    def test_token_required(self):
        tmp = tempfile.mkdtemp(prefix="ss-pyauth-")
        tok = os.path.join(tmp, "token")
        with open(tok, "w") as f:
            f.write("s3cret-token\n")
        srv = harness.Server(extra=["--auth-token-file", tok])
        try:
            with Client(srv.address) as c:
                with self.assertRaises(statesaver.Unauthenticated) as cm:
                    c.ping()
                self.assertEqual(cm.exception.code, "UNAUTHENTICATED")
            with self.assertRaises(statesaver.Unauthenticated):
                Client(srv.address, token="wrong")
            with Client(srv.address, token="s3cret-token") as c:
                self.assertGreater(c.ping(), 0)
                self.assertEqual(c.server_info.protocol_version, 1)
        finally:
            srv.cleanup()
            os.unlink(tok)
            os.rmdir(tmp)


def unroll_whole(model, x, tmp):
    """`statesaver-worker unroll` of one whole sequence x [T, in]: returns
    (outputs [T, H], c [H], h [H])."""
    xin, yout = os.path.join(tmp, "x.npy"), os.path.join(tmp, "y.npy")
    fc, fh = os.path.join(tmp, "c.npy"), os.path.join(tmp, "h.npy")
    np.save(xin, x[:, None, :].astype(np.float32))
    subprocess.run([harness.WORKER, "unroll", "--model", model, "--inputs", xin,
                    "--outputs", yout, "--final-state", "cell_0/c=" + fc,
                    "--final-state", "cell_0/h=" + fh], check=True, timeout=60)
    return np.load(yout)[:, 0, :], np.load(fc).reshape(-1), np.load(fh).reshape(-1)


class JobApiTest(unittest.TestCase):
    """Submit/Lease/Complete/Await through the Python client, with a numpy
    LSTM worker in a thread (the Python side of a worker), against the C
    whole-sequence unroll."""

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="ss-pyjobapi-")
        self.model = os.path.join(self.tmp, "model.safetensors")
        subprocess.run([sys.executable, harness.MAKE_MODEL, self.model, "--preset", "image"],
                       check=True)
        self.w, self.meta = read_safetensors(self.model)
        self.c = Client(SERVER.address, timeout=30)
        self.saver = "py-jobapi-" + self.id().rsplit(".", 1)[-1]
        self.c.declare(self.saver, {"cell_0/c": [8], "cell_0/h": [8]})

    def tearDown(self):
        self.c.close()
        for f in os.listdir(self.tmp):
            os.unlink(os.path.join(self.tmp, f))
        os.rmdir(self.tmp)

    def python_worker(self, stop, done, errors_out):
        try:
            with Client(SERVER.address, timeout=30) as wc:
                while not stop.is_set():
                    lease = wc.lease(self.saver, max_batch=2, wait_ms=100, worker="py-test")
                    items = []
                    for it in lease.items:
                        T = it.inputs.shape[0]
                        out, c, h = lstm_reference(
                            it.inputs[:it.length, None, :].astype(np.float64),
                            it.states["cell_0/c"][None].astype(np.float64),
                            it.states["cell_0/h"][None].astype(np.float64),
                            self.w["cell_0/kernel"], self.w["cell_0/bias"])
                        y = np.zeros((T, out.shape[2]), np.float32)
                        y[:it.length] = out[:, 0, :]
                        items.append(dict(key=it.key, segment=it.segment, outputs=y,
                                          states={"cell_0/c": c[0], "cell_0/h": h[0]}))
                    if items:
                        wc.complete(self.saver, lease.lease_id, items)
                        done.extend((i["key"], i["segment"]) for i in items)
        except Exception as e:  # reported by the test thread
            errors_out.append(e)

    def test_chunked_jobs_equal_whole_sequence_unroll(self):
        import threading
        stop, done, errs = threading.Event(), [], []
        t = threading.Thread(target=self.python_worker, args=(stop, done, errs))
        t.start()
        try:
            rng = np.random.default_rng(9)
            xs = {b"a": rng.standard_normal((23, 4)), b"b": rng.standard_normal((10, 4)),
                  b"c": rng.standard_normal((3, 4))}
            nseg = {k: self.c.submit_sequence(self.saver, k, x, num_unroll=5)
                    for k, x in xs.items()}
            self.assertEqual(nseg, {b"a": 5, b"b": 2, b"c": 1})
            for k, x in xs.items():
                out, finals = self.c.await_sequence(self.saver, k, nseg[k], timeout=60)
                y, fc, fh = unroll_whole(self.model, x, self.tmp)
                np.testing.assert_allclose(out, y, rtol=1e-5, atol=1e-5)
                np.testing.assert_allclose(finals["cell_0/c"], fc, rtol=1e-5, atol=1e-5)
                np.testing.assert_allclose(finals["cell_0/h"], fh, rtol=1e-5, atol=1e-5)
            # Collected outputs are gone; each segment ran exactly once.
            with self.assertRaises(statesaver.NotFound):
                self.c.await_segment(self.saver, b"a", 0, wait_ms=10)
            self.assertEqual(sorted(done), sorted((k, s) for k in xs for s in range(nseg[k])))
            # Every sequence's record ended with its last segment (final save).
            r = self.c.fetch(self.saver, list(xs))
            self.assertEqual(r.next_segment.tolist(), [0, 0, 0])
        finally:
            stop.set()
            t.join(10)
        self.assertEqual(errs, [])

    def test_submit_sequence_of_token_ids(self):
        # integer ids [T] (a model with an embedding) are split and padded
        # like float inputs, keeping an integer dtype
        ids = np.array([5, 1, 4, 1, 5, 9, 2], np.int64)
        self.assertEqual(self.c.submit_sequence(self.saver, "ids", ids, num_unroll=3), 3)
        got = []
        for _ in range(3):
            lease = self.c.lease(self.saver, max_batch=4, wait_ms=2000)
            self.assertEqual(len(lease.items), 1)
            it = lease.items[0]
            got.append((it.segment, it.length, it.last, it.inputs.dtype, it.inputs.tolist()))
            self.c.complete(self.saver, lease.lease_id, [dict(key=it.key, segment=it.segment,
                                                 outputs=np.zeros((3, 4), np.float32),
                                                 states=[s for s in it.states.values()])])
        self.assertEqual(got, [(0, 3, False, np.int64, [5, 1, 4]),
                               (1, 3, False, np.int64, [1, 5, 9]),
                               (2, 1, True, np.int64, [2, 0, 0])])
        with self.assertRaises(statesaver.InvalidArgument):
            self.c.submit_sequence(self.saver, "bad", np.ones((2, 3, 4)), num_unroll=2)

    def test_job_bad_input(self):
        x = np.ones((5, 4), np.float32)
        cases = [
            ("undeclared saver", lambda: self.c.submit("py-no-such", "k", 0, x),
             statesaver.NotFound),
            ("length beyond T", lambda: self.c.submit(self.saver, "k", 0, x, length=6),
             statesaver.InvalidArgument),
            ("inputs not 2-D", lambda: self.c.submit(self.saver, "k", 0, x[None]),
             statesaver.InvalidArgument),
            ("await never submitted", lambda: self.c.await_segment(self.saver, "zz", 0, wait_ms=10),
             statesaver.NotFound),
            ("complete unknown lease",
             lambda: self.c.complete(self.saver, 987654, [dict(key="k", segment=0, error="x")]),
             statesaver.FailedPrecondition),
        ]
        for name, call, exc in cases:
            with self.subTest(name):
                with self.assertRaises(exc) as cm:
                    call()
                self.assertTrue(cm.exception.message)
        # Identical resubmission is accepted as already queued; different
        # inputs for a queued segment are refused.
        self.assertFalse(self.c.submit(self.saver, "d", 0, x))
        self.assertTrue(self.c.submit(self.saver, "d", 0, x))
        with self.assertRaises(statesaver.AlreadyExists):
            self.c.submit(self.saver, "d", 0, x * 2)
        self.assertEqual(self.c.stats(self.saver)["queued"] >= 1, True)


class JobTest(unittest.TestCase):
    """Chunked run through submit/await with real workers == whole unroll."""

    def test_chunked_jobs_equal_whole_sequence_unroll(self):
        tmp = tempfile.mkdtemp(prefix="ss-pyjobs-")
        model = os.path.join(tmp, "model.safetensors")
        subprocess.run([sys.executable, harness.MAKE_MODEL, model, "--preset", "image"],
                       check=True)
        weights, meta = read_safetensors(model)
        in_size, units = int(meta["input_size"]), int(meta["num_units"])
        saver = "py-jobs"
        c = Client(SERVER.address, timeout=30)
        c.declare(saver, {"cell_0/c": [units], "cell_0/h": [units]})
        workers = [harness.Worker(SERVER.address, model, saver, batch=2) for _ in range(2)]
        try:
            rng = np.random.default_rng(3)
            lengths = {b"job-a": 23, b"job-b": 17, b"job-c": 5}
            xs = {k: rng.standard_normal((n, in_size)).astype(np.float32)
                  for k, n in lengths.items()}
            nseg = {k: c.submit_sequence(saver, k, x, num_unroll=5) for k, x in xs.items()}
            self.assertEqual(nseg, {b"job-a": 5, b"job-b": 4, b"job-c": 1})
            for k, x in xs.items():
                out, finals = c.await_sequence(saver, k, nseg[k], timeout=60)
                self.assertEqual(out.shape, (lengths[k], units))
                # The whole sequence in one offline unroll, time-major [T, 1, in].
                whole, fc, fh = unroll_whole(model, x, tmp)
                np.testing.assert_allclose(out, whole, rtol=1e-5, atol=1e-6)
                np.testing.assert_allclose(finals["cell_0/c"].reshape(-1), fc, rtol=1e-5, atol=1e-6)
                np.testing.assert_allclose(finals["cell_0/h"].reshape(-1), fh, rtol=1e-5, atol=1e-6)
                # And both equal the float64 numpy reference of TF's LSTMCell.
                ref, _, _ = lstm_reference(x[:, None, :].astype(np.float64),
                                           np.zeros((1, units)), np.zeros((1, units)),
                                           weights["cell_0/kernel"], weights["cell_0/bias"])
                np.testing.assert_allclose(out, ref[:, 0, :], rtol=1e-4, atol=1e-5)
        finally:
            logs = [w.log_text() for w in workers]
            codes = [w.stop() for w in workers]
            c.close()
            for f in os.listdir(tmp):
                os.unlink(os.path.join(tmp, f))
            os.rmdir(tmp)
        self.assertEqual(codes, [0, 0], "workers did not stop cleanly: %s" % logs)


if __name__ == "__main__":
    unittest.main(argv=sys.argv, verbosity=2)
