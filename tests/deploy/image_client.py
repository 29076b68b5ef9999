#!/usr/bin/env python3
"""image_client -- host-side checks for deploy/test-image.sh, through the
Python client (client/python) against a server running from the image.

  image_client.py ADDR save OUT.npz      declare + save known states, keep them
  image_client.py ADDR check OUT.npz     the states saved before are still there
  image_client.py ADDR jobs DIR          submit sequences for the workers; write
                                         DIR/x-KEY.npy inputs and, once done,
                                         DIR/y-KEY.npy outputs (from Await)
  image_client.py - demo DIR             check statesaver-demo's DIR/demo-out/demo.npy,
                                         write x-demo.npy / y-demo.npy for compare
  image_client.py - compare DIR          every DIR/y-KEY.npy == DIR/u-KEY.npy (unroll)
Needs STATESAVER_PB2_DIR (protoc output) and SS_SOURCE_ROOT. Exit 0 on success.
"""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.environ.get("SS_SOURCE_ROOT", "."), "client", "python"))
import statesaver  # noqa: E402

SAVER = "image-test"
KEYS = [b"img-a", b"img-b"]
LENGTHS = {"img-a": 23, "img-b": 9}
NUM_UNROLL = 5


def main(argv):
    addr, cmd, path = argv[1], argv[2], argv[3]
    if cmd == "demo":
        # statesaver-demo's outputs, and its inputs (the same bytes as the
        # image's, from make-model.py) time-major for the unroll.
        sys.path.insert(0, os.path.join(os.environ.get("SS_SOURCE_ROOT", "."), "scripts"))
        import importlib
        mm = importlib.import_module("make-model")
        tmp = os.path.join(path, "demo-in.npy")
        with open(tmp, "wb") as f:
            f.write(mm.inputs_npy())
        x = np.load(tmp)
        y = np.load(os.path.join(path, "demo-out", "demo.npy"))
        if y.shape != (x.shape[0], 8):
            print("image_client: demo outputs have shape %s, want (%d, 8)" % (y.shape, x.shape[0]))
            return 1
        np.save(os.path.join(path, "x-demo.npy"), x[:, None, :])
        np.save(os.path.join(path, "y-demo.npy"), y)
        return 0
    if cmd == "compare":
        keys = sorted(f[2:-4] for f in os.listdir(path) if f.startswith("y-") and f.endswith(".npy"))
        if not keys:
            print("image_client: nothing to compare in", path)
            return 1
        for k in keys:
            y = np.load(os.path.join(path, "y-%s.npy" % k))
            u = np.load(os.path.join(path, "u-%s.npy" % k))[:, 0, :]
            if y.shape != u.shape or not np.allclose(y, u, rtol=1e-5, atol=1e-6):
                print("image_client: %s: job outputs %s differ from unroll %s (max diff %s)"
                      % (k, y.shape, u.shape,
                         np.abs(y - u).max() if y.shape == u.shape else "n/a"))
                return 1
            print("image_client: %s: %d steps through the job queue == whole unroll"
                  % (k, y.shape[0]))
        return 0
    c = statesaver.Client(addr, timeout=30)
    if cmd == "save":
        c.declare(SAVER, {"cell_0/c": [8], "cell_0/h": [8]})
        rng = np.random.default_rng(11)
        st = [rng.standard_normal((2, 8)).astype(np.float32) for _ in range(2)]
        c.save(SAVER, KEYS, 0, st)
        np.savez(path, c=st[0], h=st[1])
        print("image_client: saved 2 sequences to", addr)
    elif cmd == "check":
        want = np.load(path)
        r = c.fetch(SAVER, KEYS)
        if r.next_segment.tolist() != [1, 1]:
            print("image_client: next_segment %s, want [1, 1]" % r.next_segment.tolist())
            return 1
        np.testing.assert_array_equal(r.states["cell_0/c"], want["c"])
        np.testing.assert_array_equal(r.states["cell_0/h"], want["h"])
        print("image_client: states survived the server restart (same /data)")
    elif cmd == "jobs":
        rng = np.random.default_rng(5)
        jobs = "image-jobs"
        c.declare(jobs, {"cell_0/c": [8], "cell_0/h": [8]})
        n = {}
        for k, t in LENGTHS.items():
            x = rng.standard_normal((t, 4)).astype(np.float32)
            np.save(os.path.join(path, "x-%s.npy" % k), x[:, None, :])
            n[k] = c.submit_sequence(jobs, k, x, num_unroll=NUM_UNROLL)
        for k in LENGTHS:
            out, _ = c.await_sequence(jobs, k, n[k], timeout=90)
            np.save(os.path.join(path, "y-%s.npy" % k), out)
        st = c.stats()
        print("image_client: %d segments done by the workers (completed=%d)"
              % (sum(n.values()), st.get("completed", 0)))
    else:
        print(__doc__)
        return 2
    c.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
