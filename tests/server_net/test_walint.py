#!/usr/bin/python3
"""test_walint -- the server's write-ahead log on the real binaries.

Each scenario runs statesaver-server (log on, the default) on its own data
directory under a temporary directory, driven by the real `statesaver` CLI:

  replay      a clean stop (checkpoint), then acknowledged saves, a final
              save and a drop, then SIGKILL: the restart goes back to the
              checkpoint, replays the log ("replayed N records") and every
              acknowledged write is there with its exact bytes.
  torn-tail   garbage written after the last record of the log (a torn
              write at a crash): the server starts, nothing acknowledged
              is lost.
  corrupt     a byte flipped inside an early record followed by valid
              ones: the server refuses to start naming the segment file
              and offset; with --wal-truncate-corrupt it starts (cut).
  fsync-fail  SS_WAL_FAIL_SYNC_AFTER=3: the 4th group's sync fails; that
              write and every later one get UNAVAILABLE "write-ahead log
              failed ... restart required", reads keep working; after a
              restart every acknowledged save is there.
  lost-data   data.mdb removed (and, separately, emptied) beside a log
              whose marker says the store held data: refuses to start.
  sync-off    --sync off: acknowledged saves survive SIGTERM and SIGKILL.
  wal-off     --wal off on a directory that had a log, then the log on
              again: nothing goes back in time.
  full        --map-size 1M fills: RESOURCE_EXHAUSTED, reads and a Drop
              work, writing resumes without a restart.

Every wait is bounded; every process started is killed at the end.
"""
import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np

SOURCE_ROOT = os.environ.get("SS_SOURCE_ROOT") or os.path.abspath(
    os.path.join(os.path.dirname(__file__), "..", ".."))
BUILD_ROOT = os.environ.get("SS_BUILD_ROOT") or os.path.join(SOURCE_ROOT, "build")
SERVER = os.path.join(BUILD_ROOT, "server", "statesaver-server")
CLI = os.path.join(BUILD_ROOT, "client", "statesaver")
TIMEOUT = 30  # seconds for any one command or start

FAILURES = []
PROCS = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        FAILURES.append(what)
    return cond


class Server:
    def __init__(self, root, name):
        self.root = os.path.join(root, name)
        self.data = os.path.join(self.root, "data")
        os.makedirs(self.root, exist_ok=True)
        self.log_path = os.path.join(self.root, "server.log")
        self.proc = None
        self.addr = None

    def start(self, *args, env=None, expect_fail=False):
        port_file = os.path.join(self.root, "port")
        if os.path.exists(port_file):
            os.unlink(port_file)
        self.mark = os.path.getsize(self.log_path) if os.path.exists(self.log_path) else 0
        log = open(self.log_path, "ab")
        e = dict(os.environ)
        e.update(env or {})
        self.proc = subprocess.Popen(
            [SERVER, "--data", self.data, "--listen", "127.0.0.1:0",
             "--port-file", port_file] + list(args),
            stdout=log, stderr=log, env=e)
        PROCS.append(self.proc)
        deadline = time.time() + TIMEOUT
        while time.time() < deadline:
            if os.path.exists(port_file) and os.path.getsize(port_file) > 0:
                with open(port_file) as f:
                    self.addr = "127.0.0.1:" + f.read().strip()
                return True
            if self.proc.poll() is not None:
                return False
            time.sleep(0.02)
        return False

    def log(self):
        with open(self.log_path, "rb") as f:
            f.seek(self.mark)
            return f.read().decode("utf-8", "replace")

    def stop(self, sig=signal.SIGTERM):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=TIMEOUT)
        rc = self.proc.returncode if self.proc else None
        self.proc = None
        return rc

    def cli(self, *args):
        p = subprocess.run([CLI, "--server", self.addr, "--timeout-ms", "10000"] +
                           list(args), capture_output=True, timeout=TIMEOUT)
        return p.returncode, (p.stdout + p.stderr).decode("utf-8", "replace")


def content(key, seg):
    """The state saved for (key, segment): derived from both, exact."""
    h = sum(key.encode()) * 1000 + seg
    return np.arange(4, dtype=np.float32) + np.float32(h)


def save(srv, tmp, key, seg, final=False):
    path = os.path.join(tmp, "s_%s_%d.npy" % (key, seg))
    np.save(path, content(key, seg))
    args = ["save", "sv", key, "--segment", str(seg), "--state", "h=" + path]
    if final:
        args.append("--final")
    return srv.cli(*args)


def fetch(srv, tmp, keys):
    """{key: (next_segment, array)} from `fetch --out`."""
    out = tempfile.mkdtemp(dir=tmp)
    rc, text = srv.cli("fetch", "sv", *keys, "--out", out)
    if rc != 0:
        return None, text
    res = {}
    for line in text.splitlines():
        parts = line.split()
        if parts and parts[0] in keys and len(parts) > 1 and parts[1].startswith("next_segment="):
            res[parts[0]] = [int(parts[1].split("=")[1]), None]
    for k in keys:
        path = os.path.join(out, k + ".h.npy")
        if k in res and os.path.exists(path):
            res[k][1] = np.load(path)
    return res, text


def expect_keys(srv, tmp, want, what):
    """want: {key: next_segment} (0 = no record, initial zeros)."""
    got, text = fetch(srv, tmp, list(want))
    if not check(got is not None, what + ": fetch works (%s)" % (text.strip()[:200] if got is None else "")):
        return
    bad = []
    for k, seg in want.items():
        g = got.get(k)
        if g is None or g[0] != seg:
            bad.append("%s next_segment %s want %d" % (k, g and g[0], seg))
            continue
        exp = content(k, seg - 1) if seg > 0 else np.zeros(4, np.float32)
        if g[1] is None or g[1].tobytes() != exp.tobytes():
            bad.append("%s content %r want %r" % (k, g[1], exp))
    check(not bad, what + ": every acknowledged write exact" + (" (%s)" % "; ".join(bad[:4]) if bad else ""))


def newest_segment(srv):
    segs = sorted(glob.glob(os.path.join(srv.data, "wal", "*.wal")),
                  key=os.path.getmtime)
    return segs[-1] if segs else None


def declare(srv):
    return srv.cli("declare", "sv", "--state", "h:float32:4")


def scenario_replay(root, tmp):
    srv = Server(root, "replay")
    check(srv.start(), "replay: server starts")
    check(declare(srv)[0] == 0, "replay: declare")
    check(save(srv, tmp, "k0", 0)[0] == 0, "replay: save k0")
    check(srv.stop() == 0, "replay: clean stop")
    check(srv.start(), "replay: restart")
    acked = {"k0": 1}
    for i in range(1, 31):
        rc, _ = save(srv, tmp, "k%d" % i, 0)
        if rc == 0:
            acked["k%d" % i] = 1
    rc1, _ = save(srv, tmp, "k1", 1)
    if rc1 == 0:
        acked["k1"] = 2
    rc2, _ = save(srv, tmp, "k2", 1, final=True)
    if rc2 == 0:
        acked["k2"] = 0  # final: record deleted
    rc3, _ = srv.cli("drop", "sv", "k3")
    if rc3 == 0:
        acked["k3"] = 0
    check(len(acked) == 31 and rc1 == 0 and rc2 == 0 and rc3 == 0,
          "replay: every write acknowledged")
    srv.stop(signal.SIGKILL)
    check(srv.start(), "replay: restart after SIGKILL")
    log = srv.log()
    check("back at its last checkpoint" in log, "replay: store went back to its checkpoint")
    check("replayed 33 records" in log, "replay: the 33 groups since the checkpoint replayed (%s)" %
          [l for l in log.splitlines() if "replayed" in l][:1])
    expect_keys(srv, tmp, acked, "replay")
    # A retry of the final save is still recognised after the replay.
    rc, text = save(srv, tmp, "k2", 1, final=True)
    check(rc == 0 and "already" in text, "replay: final save retry reports already applied (%s)" % text.strip())
    return srv, acked


def scenario_torn(srv, tmp, acked):
    srv.stop(signal.SIGKILL)
    seg = newest_segment(srv)
    with open(seg, "rb") as f:
        data = f.read()
    end = len(data.rstrip(b"\0"))
    check(0 < end < len(data) - 64, "torn-tail: log end found at %d" % end)
    with open(seg, "r+b") as f:
        f.seek(end)
        f.write(bytes([0x5a, 0x01, 0x00, 0x00, 0x37, 0x13, 0x00, 0x00]) + os.urandom(29))
    check(srv.start(), "torn-tail: server starts")
    expect_keys(srv, tmp, acked, "torn-tail")
    check(save(srv, tmp, "k40", 0)[0] == 0, "torn-tail: writes go on")
    acked["k40"] = 1
    srv.stop(signal.SIGKILL)
    check(srv.start(), "torn-tail: restart after the next SIGKILL")
    expect_keys(srv, tmp, acked, "torn-tail after more writes")
    srv.stop()


def scenario_corrupt(root, tmp):
    srv = Server(root, "corrupt")
    check(srv.start(), "corrupt: server starts")
    declare(srv)
    check(srv.stop() == 0, "corrupt: clean stop")
    check(srv.start(), "corrupt: restart")
    for i in range(20):
        save(srv, tmp, "c%d" % i, 0)
    srv.stop(signal.SIGKILL)
    seg = newest_segment(srv)
    with open(seg, "rb") as f:
        data = bytearray(f.read())
    needle = content("c3", 0).tobytes()
    pos = data.find(needle)
    check(pos > 0, "corrupt: c3's record found in %s" % os.path.basename(seg))
    data[pos + 2] ^= 0x40
    with open(seg, "r+b") as f:
        f.write(data)
    started = srv.start()
    rc = srv.proc.wait(timeout=TIMEOUT) if not started else None
    log = srv.log()
    check(not started and rc not in (0, None), "corrupt: refuses to start (exit %s)" % rc)
    check(os.path.basename(seg) in log and "offset" in log,
          "corrupt: the message names the segment and offset (%s)" %
          [l for l in log.splitlines() if "ERROR" in l][:2])
    check(srv.start("--wal-truncate-corrupt"), "corrupt: --wal-truncate-corrupt starts")
    expect_keys(srv, tmp, {"c0": 1, "c1": 1, "c2": 1}, "corrupt: before the damage")
    check(save(srv, tmp, "c50", 0)[0] == 0, "corrupt: writes after the cut")
    srv.stop()
    check(srv.start(), "corrupt: normal start after the cut")
    expect_keys(srv, tmp, {"c0": 1, "c50": 1}, "corrupt: after the cut and a restart")
    srv.stop()


def scenario_fsync(root, tmp):
    srv = Server(root, "fsync")
    check(srv.start(env={"SS_WAL_FAIL_SYNC_AFTER": "3"}), "fsync-fail: server starts")
    check(declare(srv)[0] == 0, "fsync-fail: declare (sync 1)")
    acked = {}
    for k in ("f1", "f2"):
        if save(srv, tmp, k, 0)[0] == 0:
            acked[k] = 1
    check(len(acked) == 2, "fsync-fail: syncs 2 and 3 acknowledged")
    rc, text = save(srv, tmp, "f3", 0)
    check(rc != 0 and "UNAVAILABLE" in text and "write-ahead log failed" in text and
          "restart required" in text, "fsync-fail: failing sync -> UNAVAILABLE with the reason (%s)" % text.strip())
    rc, text = save(srv, tmp, "f4", 0)
    check(rc != 0 and "UNAVAILABLE" in text, "fsync-fail: never acknowledged again (%s)" % text.strip())
    rc, text = srv.cli("drop", "sv", "f1")
    check(rc != 0 and "UNAVAILABLE" in text, "fsync-fail: drops refused too")
    expect_keys(srv, tmp, dict(acked, f4=0), "fsync-fail: reads keep working")
    check("write-ahead log failed" in srv.log(), "fsync-fail: logged")
    rc, text = srv.cli("stats", "--json")
    st = json.loads(text) if rc == 0 else {}
    check(st.get("wal_failed") == 1 and "Input/output error" in st.get("wal_failure", ""),
          "fsync-fail: Stats says the log failed and why (%s)" % text.strip())
    srv.stop()
    check(srv.start(), "fsync-fail: restart")
    expect_keys(srv, tmp, acked, "fsync-fail: after restart")
    check(save(srv, tmp, "f5", 0)[0] == 0, "fsync-fail: writes work after the restart")
    srv.stop()


def scenario_lost(root, tmp):
    srv = Server(root, "lost")
    check(srv.start(), "lost-data: server starts")
    declare(srv)
    save(srv, tmp, "l1", 0)
    check(srv.stop() == 0, "lost-data: clean stop (checkpoint sets the marker)")
    keep = os.path.join(srv.root, "data.mdb.keep")
    shutil.copy(os.path.join(srv.data, "data.mdb"), keep)
    os.unlink(os.path.join(srv.data, "data.mdb"))
    started = srv.start()
    rc = srv.proc.wait(timeout=TIMEOUT) if not started else None
    log = srv.log()
    check(not started and rc not in (0, None), "lost-data: missing data.mdb refuses to start")
    check("data.mdb is missing" in log, "lost-data: says why (%s)" %
          [l for l in log.splitlines() if "ERROR" in l][:1])
    started = srv.start()
    rc = srv.proc.wait(timeout=TIMEOUT) if not started else None
    check(not started, "lost-data: still refuses on the next start")
    open(os.path.join(srv.data, "data.mdb"), "wb").close()
    started = srv.start()
    rc = srv.proc.wait(timeout=TIMEOUT) if not started else None
    check(not started and rc not in (0, None), "lost-data: 0-byte data.mdb refuses to start")
    shutil.copy(keep, os.path.join(srv.data, "data.mdb"))
    check(srv.start(), "lost-data: starts with data.mdb restored")
    expect_keys(srv, tmp, {"l1": 1}, "lost-data: restored")
    srv.stop()


def scenario_sync_off(root, tmp):
    srv = Server(root, "syncoff")
    check(srv.start("--sync", "off"), "sync-off: server starts")
    declare(srv)
    acked = {}
    for i in range(10):
        if save(srv, tmp, "s%d" % i, 0)[0] == 0:
            acked["s%d" % i] = 1
    check(srv.stop() == 0, "sync-off: SIGTERM")
    check(srv.start("--sync", "off"), "sync-off: restart")
    expect_keys(srv, tmp, acked, "sync-off after SIGTERM")
    for i in range(10, 20):
        if save(srv, tmp, "s%d" % i, 0)[0] == 0:
            acked["s%d" % i] = 1
    srv.stop(signal.SIGKILL)
    check(srv.start("--sync", "off"), "sync-off: restart after SIGKILL")
    expect_keys(srv, tmp, acked, "sync-off after SIGKILL")
    srv.stop()
    return srv, acked


def scenario_wal_off(srv, tmp, acked):
    check(srv.start("--wal", "off"), "wal-off: starts on a directory with a log")
    expect_keys(srv, tmp, acked, "wal-off: data there")
    for i in range(30, 35):
        if save(srv, tmp, "s%d" % i, 0)[0] == 0:
            acked["s%d" % i] = 1
    srv.stop(signal.SIGKILL)
    check(srv.start(), "wal-off: log on again")
    expect_keys(srv, tmp, acked, "wal-off: log on again, nothing went back")
    srv.stop()


def scenario_full(root, tmp):
    """A map that fills with the log on: RESOURCE_EXHAUSTED, reads work, and
    the first save after a Drop succeeds without a restart (the commit that
    freed pages near a full map has the writer checkpoint, which moves the
    snapshot pin on, so the dropped pages are reusable at once)."""
    srv = Server(root, "full")
    check(srv.start("--map-size", "1M"), "full: server starts with --map-size 1M")
    rc, _ = srv.cli("declare", "big", "--state", "h:float32:8192")
    check(rc == 0, "full: declare a 32 KiB state")
    path = os.path.join(tmp, "big.npy")
    np.save(path, np.arange(8192, dtype=np.float32))
    saved, full_text = [], ""
    for i in range(200):
        rc, text = srv.cli("save", "big", "b%d" % i, "--segment", "0", "--state", "h=" + path)
        if rc != 0:
            full_text = text
            break
        saved.append("b%d" % i)
    check(saved and "RESOURCE_EXHAUSTED" in full_text,
          "full: %d saves then RESOURCE_EXHAUSTED (%s)" % (len(saved), full_text.strip()[:160]))
    rc, _ = srv.cli("fetch", "big", saved[0])
    check(rc == 0, "full: reads work when full")
    rc, text = srv.cli("drop", "big", *saved[:len(saved) // 2])
    check(rc == 0, "full: drop works when full (%s)" % text.strip()[:120])
    rc, text = srv.cli("save", "big", "again", "--segment", "0", "--state", "h=" + path)
    check(rc == 0, "full: the next save after the drop succeeds (%s)" % text.strip()[:160])
    check(srv.stop() == 0, "full: clean stop")
    check(srv.start("--map-size", "1M"), "full: restarts")
    rc, text = srv.cli("fetch", "big", "again", saved[-1])
    check(rc == 0 and "next_segment=1" in text, "full: data after the restart")
    srv.stop()


def main():
    root = tempfile.mkdtemp(prefix="ss-walint-")
    tmp = os.path.join(root, "tmp")
    os.makedirs(tmp)
    def run(name, fn, *args):
        try:
            return fn(*args)
        except Exception as e:  # a scenario that breaks is a failure, not a skip
            check(False, "%s: raised %r" % (name, e))
            return None

    try:
        r = run("replay", scenario_replay, root, tmp)
        if r:
            run("torn-tail", scenario_torn, r[0], tmp, r[1])
        else:
            check(False, "torn-tail: not run (replay failed)")
        run("corrupt", scenario_corrupt, root, tmp)
        run("fsync-fail", scenario_fsync, root, tmp)
        run("lost-data", scenario_lost, root, tmp)
        run("full", scenario_full, root, tmp)
        r = run("sync-off", scenario_sync_off, root, tmp)
        if r:
            run("wal-off", scenario_wal_off, r[0], tmp, r[1])
        else:
            check(False, "wal-off: not run (sync-off failed)")
    finally:
        for p in PROCS:
            if p.poll() is None:
                p.kill()
                p.wait()
        if not FAILURES:
            shutil.rmtree(root, ignore_errors=True)
        else:
            print("logs kept in", root)
    print("%d failures" % len(FAILURES))
    return 1 if FAILURES else 0


if __name__ == "__main__":
    sys.exit(main())
