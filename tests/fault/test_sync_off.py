#!/usr/bin/python3
"""test_sync_off -- a --sync off server: what it keeps on a clean stop and on
a crash.

  term  SIGTERM_CYCLES (10) cycles: the CAS client processes of
        test_crash_cycles save under load, the server gets SIGTERM 50-400 ms
        into the load, must exit 0 (it syncs at shutdown), and after the
        restart every acknowledged save is present with its exact content
        and no request is half-applied.
  kill  KILL_CYCLES (20) cycles of the same load ended by SIGKILL: the server
        restarts cleanly every time and the store is prefix-consistent: each
        key's stored state is the exact content of the segment before its
        next_segment, which is at most the highest attempted + 1, and the
        request in flight is applied to all of its keys or none. Losing
        acknowledged saves is allowed with --sync off (only what the docs
        call the sync window); the count is reported.

Behaviour only: passes on the LMDB store and on a store with a write-ahead
log. Run: python3 test_sync_off.py PB2_DIR [term|kill].
"""
import multiprocessing as mp
import os
import random
import signal
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "python"))
import test_crash_cycles as cc  # noqa: E402  (CAS clients, records, checks)
import test_fault as tf  # noqa: E402

SIGTERM_CYCLES = 10
KILL_CYCLES = 20
SYNC_OFF = ["--sync", "off"]  # after start_server's --sync on: the last one wins


def cycles(tmp, label, sig, n, durable):
    d = os.path.join(tmp, label)
    os.makedirs(d)
    port = tf.free_port()
    data = os.path.join(d, "data")
    srv = tf.start_server(d, data, port, SYNC_OFF)
    procs, keys, paths = cc.cas_setup(d, port)
    rng = random.Random(sig)
    all_bad, done, lost_keys, total = [], 0, 0, 0
    t0 = time.monotonic()
    try:
        for cycle in range(n):
            procs.run()
            srv, down, problems = cc.kill_cycle(srv, procs, rng, d, data, port, sig, SYNC_OFF)
            bad, total, lost = cc.verify_cas(port, keys, paths, durable)
            lost_keys += lost
            done += 1
            if problems or bad:
                all_bad.append("cycle %d: %s" % (cycle, "; ".join(problems + bad)[:600]))
                if len(all_bad) >= 3:
                    break
    finally:
        procs.stop()
    n_acked = sum(1 for p in paths for l in cc.rec_lines(p) if l[0] == "K")
    return srv, done, n_acked, total, lost_keys, all_bad, time.monotonic() - t0


def test_term(tmp):
    label = "term"
    srv, done, n_acked, total, lost, bad, secs = cycles(tmp, label, signal.SIGTERM,
                                                       SIGTERM_CYCLES, True)
    tf.check(done == SIGTERM_CYCLES and not bad,
             "%s: %d SIGTERM cycles of a --sync off server under load: exit 0 each time, "
             "%d acknowledged key saves, all present with their exact content after the "
             "restart (%d segments stored, %.1f s)%s" %
             (label, done, n_acked, total, secs, "".join("\n     " + b for b in bad)))
    tf.check(tf.stop(srv) == 0, "%s: the last server stops cleanly" % label)


def test_kill(tmp):
    label = "kill"
    srv, done, n_acked, total, lost, bad, secs = cycles(tmp, label, signal.SIGKILL,
                                                       KILL_CYCLES, False)
    tf.check(done == KILL_CYCLES and not bad,
             "%s: %d kill -9 cycles of a --sync off server under load: it restarts every "
             "time and every key holds the exact content of an acknowledged or attempted "
             "segment, no request half-applied (%d acknowledged key saves, %d segments "
             "stored, %d key-cycles lost acknowledged saves, %.1f s)%s" %
             (label, done, n_acked, total, lost, secs, "".join("\n     " + b for b in bad)))
    tf.check(tf.stop(srv) == 0, "%s: the last server stops cleanly" % label)


def main():
    return tf.run_scenarios("ss-syncoff-", (("term", test_term), ("kill", test_kill)), sys.argv[1:])


if __name__ == "__main__":
    mp.set_start_method("fork")
    sys.exit(main())
