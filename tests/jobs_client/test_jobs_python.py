#!/usr/bin/env python3
"""test_jobs_python -- the Python client's collect without tensors
(AwaitRequest.without_tensors, issue 9 item 4) against the real server:
await_segment(without_tensors=True) reports the state without outputs and
keeps them; collect_segment retires them without sending them again (a
second await or collect: NotFound); the outputs awaited first are exact.

Run: python3 tests/jobs_client/test_jobs_python.py PB2_DIR   (meson test jobs-python)
"""
import os
import sys
import unittest

import numpy as np

sys.path.insert(0, os.path.join(os.environ.get("SS_SOURCE_ROOT", os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "..")), "tests", "python"))
import harness  # noqa: E402

sys.argv = harness.setup_path(sys.argv)
import statesaver  # noqa: E402
from statesaver import Client  # noqa: E402


class CollectWithoutTensors(unittest.TestCase):
    def setUp(self):
        self.srv = harness.Server()
        self.c = Client(self.srv.address)

    def tearDown(self):
        self.c.close()
        code = self.srv.stop()
        log = self.srv.log_text()
        self.srv.cleanup()
        self.assertEqual(code, 0, log)

    def test_collect_segment(self):
        c = self.c
        c.declare("py", {"h": [3]})
        x = np.arange(12, dtype=np.float32).reshape(6, 2)
        self.assertEqual(c.submit_sequence("py", b"k", x, 4), 2)
        h = np.zeros(3, np.float32)
        for s in range(2):
            lease = c.lease("py", max_batch=1, wait_ms=2000)
            self.assertEqual(len(lease.items), 1)
            it = lease.items[0]
            self.assertEqual(it.segment, s)
            h = h + 1.0
            c.complete("py", lease.lease_id, [{"key": it.key, "segment": s,
                                               "outputs": it.inputs * 2.0 + s,
                                               "states": [h]}])
        for s in range(2):
            r = c.await_segment("py", b"k", s, wait_ms=0)
            self.assertEqual(r.state, "DONE")
            want = x[4 * s:4 * s + r.length] * 2.0 + s
            np.testing.assert_array_equal(r.outputs[:r.length], want)
            bare = c.await_segment("py", b"k", s, wait_ms=0, without_tensors=True)
            self.assertEqual(bare.state, "DONE")
            self.assertIsNone(bare.outputs)
            self.assertEqual(dict(bare.final_states), {})
            self.assertEqual(bare.length, r.length)
            self.assertEqual(bare.last, s == 1)
            if s == 1:  # still there, with its final state
                again = c.await_segment("py", b"k", s, wait_ms=0)
                np.testing.assert_array_equal(again.final_states["h"], h)
            got = c.collect_segment("py", b"k", s)
            self.assertEqual(got.state, "DONE")
            self.assertIsNone(got.outputs)
            self.assertEqual(dict(got.final_states), {})
            with self.assertRaises(statesaver.errors.NotFound):
                c.await_segment("py", b"k", s, wait_ms=0)
            with self.assertRaises(statesaver.errors.NotFound):
                c.collect_segment("py", b"k", s)


if __name__ == "__main__":
    unittest.main(verbosity=2)
