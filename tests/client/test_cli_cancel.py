#!/usr/bin/python3
"""test_cli_cancel -- `statesaver cancel` against the real server (real
LMDB, real socket; the Python client plays the submitter and the worker):
a full queue (--queue-capacity) refuses a submit, `cancel` of a sequence
with a leased and queued segments prints the counts and frees the slots
(the refused submit then goes in), the late Complete of the cancelled
lease is refused, --json, an unknown key counts 0 (exit 0), an undeclared
saver is the server's NOT_FOUND (exit 1), bad usage exits 2, and
`statesaver --help` lists the command.

Run: python3 tests/client/test_cli_cancel.py PB2_DIR   (meson test client-cli-cancel)
"""
import json
import os
import subprocess
import sys
import unittest

import numpy as np

sys.path.insert(0, os.path.join(os.environ.get("SS_SOURCE_ROOT", os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "..")), "tests", "python"))
import harness  # noqa: E402

sys.argv = harness.setup_path(sys.argv)
import statesaver  # noqa: E402
from statesaver import Client  # noqa: E402

CLI = os.path.join(harness.BUILD_ROOT, "client", "statesaver")
CAPACITY = 4


class CliCancel(unittest.TestCase):
    def setUp(self):
        self.srv = harness.Server(extra=["--queue-capacity", str(CAPACITY)])
        self.c = Client(self.srv.address)

    def tearDown(self):
        self.c.close()
        code = self.srv.stop()
        log = self.srv.log_text()
        self.srv.cleanup()
        self.assertEqual(code, 0, log)

    def cli(self, *args):
        return subprocess.run([CLI, "--server", self.srv.address] + list(args),
                              capture_output=True, text=True, timeout=60)

    def test_cancel_frees_slots(self):
        c = self.c
        c.declare("cv", {"h": [3]})
        x = np.ones((6, 2), np.float32)
        self.assertEqual(c.submit_sequence("cv", b"a", x, 2), 3)  # 3 slots
        self.assertEqual(c.submit_sequence("cv", b"b", x[:2], 2), 1)  # full
        with self.assertRaises(statesaver.errors.ResourceExhausted):
            c.submit("cv", b"c", 0, x[:2], last=True)
        lease = c.lease("cv", max_batch=2, wait_ms=2000)
        self.assertEqual(sorted(it.key for it in lease.items), [b"a", b"b"])
        st = c.stats("cv")
        self.assertEqual(st["queued"] + st["leased"], CAPACITY)

        r = self.cli("cancel", "cv", "a")
        self.assertEqual(r.returncode, 0, r.stderr)
        # a: 1 leased + 2 queued segments.
        self.assertEqual(r.stdout, "cv: cancelled 1 sequences, 3 job records\n")
        st = c.stats("cv")
        self.assertEqual(st["queued"] + st["leased"], 1)  # b's leased segment
        # The freed slots take the submit that was refused.
        c.submit("cv", b"c", 0, x[:2], last=True)
        # The worker's late Complete of a's segment is refused; b's goes in.
        items = {it.key: it for it in lease.items}
        with self.assertRaises(statesaver.errors.FailedPrecondition) as e:
            c.complete("cv", lease.lease_id, [{"key": b"a", "segment": 0,
                                               "outputs": items[b"a"].inputs,
                                               "states": [np.ones(3, np.float32)]}])
        self.assertIn("cancelled", str(e.exception))
        c.complete("cv", lease.lease_id, [{"key": b"b", "segment": 0,
                                           "outputs": items[b"b"].inputs,
                                           "states": [np.ones(3, np.float32)]}])
        self.assertEqual(c.await_segment("cv", b"b", 0, wait_ms=0).state, "DONE")
        # b: its done segment (outputs stored, not collected); an unknown key
        # counts 0.
        r = self.cli("cancel", "--json", "cv", "b", "never-submitted")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(json.loads(r.stdout), {"saver": "cv", "cancelled": 1, "segments": 1})
        with self.assertRaises(statesaver.errors.NotFound):
            c.await_segment("cv", b"b", 0, wait_ms=0)
        r = self.cli("cancel", "cv", "a", "never-submitted")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout, "cv: cancelled 0 sequences, 0 job records\n")
        # c is untouched.
        self.assertEqual(c.stats("cv")["queued"], 1)

    def test_cancel_again_retried(self):
        """A Cancel racing a Complete of the same key: the server refuses it
        (UNAVAILABLE "cancel again") while the Complete is in flight. The
        test hook SS_WRITER_DELAY_MS holds every write group 1.5 s, so the
        window is wide: with --retries 0 the command fails naming the
        refusal; with retries it cancels once the Complete committed."""
        import struct
        from statesaver._pb import pb
        from statesaver.client import to_tensor
        srv = harness.Server(env={"SS_WRITER_DELAY_MS": "1500"})
        try:
            c = Client(srv.address)
            c.declare("race", {"h": [3]})
            c.submit_sequence("race", b"r", np.ones((4, 2), np.float32), 2)
            lease = c.lease("race", max_batch=1, wait_ms=5000)
            self.assertEqual([it.key for it in lease.items], [b"r"])
            req = pb.Request(id=777)
            req.complete.saver, req.complete.lease_id = "race", lease.lease_id
            it = req.complete.items.add(key=b"r", segment=0)
            it.states.extend([to_tensor(np.ones(3, np.float32))])
            data = req.SerializeToString()
            c._sock.sendall(struct.pack(">I", len(data)) + data)  # reply read below
            run = lambda *a: subprocess.run([CLI, "--server", srv.address] + list(a),
                                            capture_output=True, text=True, timeout=60)
            r = run("cancel", "race", "r", "--retries", "0")
            self.assertEqual(r.returncode, 1, (r.stdout, r.stderr))
            self.assertIn("cancel again", r.stderr)
            r = run("cancel", "race", "r", "--retries", "100")
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertIn("cancelled 1 sequences", r.stdout)
            with c._lock:
                resp = c._read_response()
            self.assertEqual((resp.id, resp.status.code), (777, pb.OK), resp.status.message)
            self.assertEqual(c.stats("race")["queued"] + c.stats("race")["leased"], 0)
            c.close()
        finally:
            code = srv.stop()
            srv.cleanup()
            self.assertEqual(code, 0)

    def test_undeclared_saver(self):
        r = self.cli("cancel", "nosuch", "k")
        self.assertEqual(r.returncode, 1)
        self.assertEqual(r.stdout, "")
        self.assertIn("cancel:", r.stderr)
        self.assertIn("not declared", r.stderr)

    def test_usage(self):
        self.c.declare("cv", {"h": [3]})
        for args in (["cancel"], ["cancel", "cv"], ["cancel", "--bogus", "cv", "k"],
                     ["cancel", "cv", ""], ["cancel", "--retries", "x", "cv", "k"],
                     ["cancel", "--retries", "101", "cv", "k"]):
            r = self.cli(*args)
            self.assertEqual(r.returncode, 2, (args, r.stdout, r.stderr))
            self.assertEqual(r.stdout, "")
            self.assertIn("statesaver cancel", r.stderr)
        r = self.cli("cancel", "--help")
        self.assertEqual(r.returncode, 0)
        self.assertIn("usage: statesaver cancel SAVER KEY...", r.stdout)
        r = subprocess.run([CLI, "--help"], capture_output=True, text=True, timeout=20)
        self.assertEqual(r.returncode, 0)
        self.assertIn("cancel SAVER KEY...", r.stdout)
        r = self.cli("cancel", "--retries", "0", "cv", "k")
        self.assertEqual(r.returncode, 0, r.stderr)


if __name__ == "__main__":
    unittest.main(verbosity=2)
