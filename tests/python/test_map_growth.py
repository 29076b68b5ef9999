#!/usr/bin/env python3
"""test_map_growth -- the real server's LMDB map grows at run time.

`statesaver-server --map-size 1M --max-map-size 8M`: saves go well past
1 MiB (the map doubles, Stats reports the current size), then at 8 MiB a
save gets RESOURCE_EXHAUSTED naming --max-map-size; fetches return the
exact stored states, a Drop works, and a save right after it succeeds, all
without a restart. A restart keeps the grown size.

Run: python3 tests/python/test_map_growth.py [PB2_DIR]   (meson test map-growth)
"""
import hashlib
import sys
import unittest

import numpy as np

import harness

sys.argv = harness.setup_path(sys.argv)
from statesaver import Client, ResourceExhausted  # noqa: E402

MiB = 1 << 20
UNITS = 256          # float32 -> 1 KiB state per key
BATCH = 16           # keys per save request
MAX_SAVES = 20000    # bound on the fill loop (8 MiB holds far fewer)


def state_of(i):
    """Deterministic 1 KiB state of key i."""
    seed = int.from_bytes(hashlib.sha256(b"k%d" % i).digest()[:4], "little")
    return np.random.default_rng(seed).standard_normal(UNITS).astype(np.float32)


class MapGrowth(unittest.TestCase):
    def test_grows_then_refuses_then_recovers(self):
        srv = harness.Server(["--map-size", "1M", "--max-map-size", "8M"])
        try:
            data = srv.data
            with Client(srv.address, timeout=30) as c:
                c.declare("g", {"h": [UNITS]})
                self.assertEqual(c.stats("g")["map_size"], MiB)
                saved, full = 0, None
                while saved < MAX_SAVES:
                    keys = ["k%d" % i for i in range(saved, saved + BATCH)]
                    st = np.stack([state_of(i) for i in range(saved, saved + BATCH)])
                    try:
                        c.save("g", keys, 0, {"h": st})
                    except ResourceExhausted as e:
                        full = e
                        break
                    saved += BATCH
                self.assertIsNotNone(full, "8 MiB never filled after %d saves" % saved)
                self.assertIn("--max-map-size", str(full))
                # Well past the initial 1 MiB: 1 KiB states, so > 2 MiB of them.
                self.assertGreater(saved * UNITS * 4, 2 * MiB)
                grown = c.stats("g")["map_size"]
                self.assertGreater(grown, MiB)
                self.assertLessEqual(grown, 8 * MiB)
                # Reads keep working with the exact data.
                for i in (0, saved // 2, saved - 1):
                    r = c.fetch("g", ["k%d" % i])
                    self.assertEqual(int(r.next_segment[0]), 1)
                    np.testing.assert_array_equal(r.states["h"][0], state_of(i))
                # A Drop works and frees room for the next save at once (a
                # Drop's own copy-on-write pages come from a bounded reserve,
                # so one Drop of many scattered keys at the very limit can be
                # refused with advice to drop fewer per request).
                c.drop("g", ["k%d" % i for i in range(0, 64)])
                c.save("g", ["again"], 0, {"h": state_of(0)[None, :]})
                self.assertEqual(int(c.fetch("g", ["k0"]).next_segment[0]), 0)
            self.assertEqual(srv.stop(), 0, srv.log_text())
            srv2 = harness.Server(["--map-size", "1M", "--max-map-size", "8M"],
                                  data_dir=data)
            try:
                with Client(srv2.address, timeout=30) as c:
                    self.assertGreater(c.stats("g")["map_size"], MiB)
                    r = c.fetch("g", ["k%d" % (saved - 1), "again"])
                    np.testing.assert_array_equal(r.states["h"][0], state_of(saved - 1))
                    np.testing.assert_array_equal(r.states["h"][1], state_of(0))
            finally:
                srv2.stop()
                srv2.cleanup()
        finally:
            srv.stop()
            srv.cleanup()


if __name__ == "__main__":
    unittest.main(verbosity=2)
