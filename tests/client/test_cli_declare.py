#!/usr/bin/python3
"""test_cli_declare -- `statesaver declare --max-in-flight N` (the Declare
field of the job queue's per-saver cap, issue 10) through libstatesaver's
ss_client_declare_opts, against the real server: the cap is set (the
Python client reads it back, `ls` prints it) and enforced (a Lease gets
segments of at most N sequences), declaring the same saver with another
cap is the server's ALREADY_EXISTS (exit 1), and a bad value exits 2.

Run: python3 tests/client/test_cli_declare.py PB2_DIR   (meson test client-cli-declare)
"""
import os
import subprocess
import sys
import unittest

import numpy as np

sys.path.insert(0, os.path.join(os.environ.get("SS_SOURCE_ROOT", os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "..")), "tests", "python"))
import harness  # noqa: E402

sys.argv = harness.setup_path(sys.argv)
from statesaver import Client  # noqa: E402

CLI = os.path.join(harness.BUILD_ROOT, "client", "statesaver")


class CliDeclare(unittest.TestCase):
    def setUp(self):
        self.srv = harness.Server()
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

    def test_max_in_flight(self):
        r = self.cli("declare", "mif", "--state", "h:float32:2", "--max-in-flight", "2")
        self.assertEqual((r.returncode, r.stdout.strip()), (0, "mif: created"), r.stderr)
        self.assertEqual([s.max_in_flight for s in self.c.savers() if s.name == "mif"], [2])
        r = self.cli("ls")
        self.assertIn("max_in_flight=2", r.stdout)
        # the same schema again: a no-op; another cap: refused by the server
        r = self.cli("declare", "mif", "--state", "h:float32:2", "--max-in-flight", "2")
        self.assertEqual((r.returncode, r.stdout.strip()), (0, "mif: exists with the same schema"))
        r = self.cli("declare", "mif", "--state", "h:float32:2", "--max-in-flight", "3")
        self.assertEqual(r.returncode, 1)
        self.assertIn("ALREADY_EXISTS", r.stderr)
        # enforced: 3 sequences queued, a Lease takes 2 of them
        for k in ("a", "b", "c"):
            self.c.submit("mif", k, 0, np.zeros((2, 1), np.float32), last=True)
        lease = self.c.lease("mif", max_batch=3)
        self.assertEqual(len({it.key for it in lease.items}), 2)
        for bad in ("x", "-1", "4294967296"):
            r = self.cli("declare", "bad", "--state", "h:float32:2", "--max-in-flight", bad)
            self.assertEqual(r.returncode, 2, (bad, r.stderr))
            self.assertIn("--max-in-flight", r.stderr)
        # without the flag: no cap, and ls says nothing about it
        r = self.cli("declare", "free", "--state", "h:float32:2")
        self.assertEqual(r.returncode, 0)
        line = [l for l in self.cli("ls").stdout.splitlines() if l.startswith("free ")]
        self.assertTrue(line and "max_in_flight" not in line[0], line)


if __name__ == "__main__":
    unittest.main(argv=sys.argv[:1], verbosity=2)
