#!/usr/bin/python3
"""test_disk_full -- the store at its edges: a full disk and a full map.

  disk  The data directory is on an 8 MiB tmpfs mounted for the test (we run
        as root; a failed mount FAILS the test, it is never skipped). A
        --sync on server takes 64 KiB compare-and-set saves, then a ballast
        file fills the file system and saves go on until one fails. The
        failure must be RESOURCE_EXHAUSTED or UNAVAILABLE with a reason; the
        server must stay up and keep answering reads with exactly the
        acknowledged data. The ballast is deleted; if the server said
        UNAVAILABLE (a failed write: restart required, which its reason must
        say) it is restarted, else writes must resume without a restart. Then a restart on the same
        directory: every acknowledged save is intact.
  ext4  The same on a 16 MiB loop-mounted ext4 image (mkfs.ext4 -m 0), where
        a full disk can also surface at fdatasync (delayed allocation), not
        only at write.
  map   A server with a small --map-size (and --max-map-size when the server
        has it) on a disk with room: saves of 64 KiB states until
        RESOURCE_EXHAUSTED; reads return the acknowledged data, Drops work,
        and a save after the Drop works, without a restart; after a restart
        everything acknowledged is intact.

Behaviour only: passes on the LMDB store and on a store with a write-ahead
log. Run: python3 test_disk_full.py PB2_DIR [disk|ext4|map]. Bounded; every
process started is killed and the file systems unmounted.
"""
import errno
import hashlib
import os
import signal
import subprocess
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "python"))
import harness  # noqa: E402
import test_fault as tf  # noqa: E402

sys.argv = harness.setup_path(sys.argv)
from statesaver import Client, errors  # noqa: E402

STATE_N = 16384              # float32 elements: 64 KiB states
TMPFS_SIZE = "8m"
MAX_SAVES = 2000             # bound on the fill loops
MAP_SIZE = 2 << 20           # --map-size of the full-map scenario
SMALL_WAL = 1 << 20          # --wal-segment-bytes when the server has a log
EXT4_BYTES = 16 << 20        # the loop-mounted ext4 image


def content(key, seg):
    """The state of key at the end of segment seg: a hash of (key, seg)."""
    h = hashlib.sha256(key + b"\0%d" % seg).digest()
    rng = np.random.default_rng(int.from_bytes(h[:8], "little"))
    return rng.standard_normal(STATE_N).astype(np.float32)


def server_flags(**wanted):
    """Flags the server binary knows (from --help), for sizes that only exist
    on some store versions: a small log segment on a small disk, a map that
    cannot grow."""
    r = subprocess.run([tf.SERVER, "--help"], capture_output=True, text=True, timeout=10)
    out = []
    for flag, value in wanted.items():
        name = "--" + flag.replace("_", "-")
        if name + " " in r.stdout + r.stderr:
            out += [name, str(value)]
    return out


class Book:
    """What was acknowledged: key -> last acknowledged segment."""

    def __init__(self, saver):
        self.saver, self.acked = saver, {}
        # key -> segment of a save answered with an error that does not say
        # "not applied" (a failed write: UNAVAILABLE, INTERNAL); it may show
        # up after a restart, like a write whose fsync failed in PostgreSQL.
        # RESOURCE_EXHAUSTED is a refusal: such a save must never appear.
        self.uncertain = {}

    def save(self, c, key, seg=None):
        seg = self.acked.get(key, -1) + 1 if seg is None else seg
        try:
            c.save(self.saver, [key], [seg], [content(key, seg)[None]])
        except errors.StatesaverError as e:
            if not isinstance(e, errors.ResourceExhausted):
                self.uncertain[key] = seg
            raise
        self.acked[key] = seg

    def verify(self, c):
        """Problems: keys whose stored state is not their acknowledged one
        (or the uncertain one after it)."""
        keys = sorted(set(self.acked) | set(self.uncertain))
        bad = []
        for i in range(0, len(keys), 16):
            ks = keys[i:i + 16]
            f = c.fetch(self.saver, ks)
            for j, k in enumerate(ks):
                ns = int(f.next_segment[j])
                got = f.states["s"][j].tobytes()
                ok = [s for s in (self.acked.get(k), self.uncertain.get(k)) if s is not None]
                if k not in self.acked:
                    ok.append(-1)
                if not any(ns == s + 1 and (s < 0 or got == content(k, s).tobytes())
                           for s in ok):
                    bad.append("%s: next_segment %d, acknowledged %s, uncertain %s%s" %
                               (k, ns, self.acked.get(k), self.uncertain.get(k),
                                " (content differs)" if any(ns == s + 1 for s in ok) else ""))
        return bad


def fill(c, book, prefix, limit):
    """Save new keys and advance old ones until a save fails; returns the
    exception (None if `limit` saves all succeeded)."""
    for i in range(limit):
        key = b"%s%04d" % (prefix, i // 2) if i % 2 == 0 else \
            sorted(book.acked)[i % max(1, len(book.acked))]
        try:
            book.save(c, key)
        except errors.StatesaverError as e:  # the check says which are right
            return e
    return None


def restart(d, data, port, srv, label, extra):
    code = tf.stop(srv)
    tf.check(code is not None and code >= 0,
             "%s: the server exits on SIGTERM without a crash (exit %s)" % (label, code))
    return tf.start_server(d, data, port, extra)


def mount_small(label, d, mnt):
    """Mount the small file system of scenario label on mnt; False (and a
    failed check saying why) if that is impossible: never a skip."""
    if label == "disk":
        what = "an %s tmpfs" % TMPFS_SIZE
        cmds = [["mount", "-t", "tmpfs", "-o", "size=" + TMPFS_SIZE, "tmpfs", mnt]]
    else:
        img = os.path.join(d, "fs.img")
        what = "a %d MiB loop-mounted ext4 image" % (EXT4_BYTES >> 20)
        with open(img, "wb") as f:
            f.truncate(EXT4_BYTES)
        cmds = [["mkfs.ext4", "-q", "-F", "-m", "0", img], ["mount", "-o", "loop", img, mnt]]
    for cmd in cmds:
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
            err = r.stderr.strip() if r.returncode else ""
        except OSError as e:
            err = str(e)
        if err or r.returncode:
            break
    return tf.check(not err and r.returncode == 0,
                    "%s: %s mounted for the data directory (the test needs root, mount(8)%s; "
                    "%s)" % (label, what, "" if label == "disk" else ", mkfs.ext4 and loop "
                             "devices", err or "ok"))


def test_disk(tmp, label="disk"):
    d = os.path.join(tmp, label)
    mnt = os.path.join(d, "mnt")
    os.makedirs(mnt)
    if not mount_small(label, d, mnt):
        return
    srv = None
    try:
        data = os.path.join(mnt, "data")
        extra = server_flags(wal_segment_bytes=SMALL_WAL)
        port = tf.free_port()
        srv = tf.start_server(d, data, port, extra)
        book = Book("big")
        with Client("127.0.0.1", port, timeout=20) as c:
            c.declare("big", [("s", (STATE_N,))])
            for i in range(16):  # 1 MiB of acknowledged states
                book.save(c, b"base%02d" % i)
            ballast = os.path.join(mnt, "ballast")
            with open(ballast, "wb") as f:
                try:
                    while True:
                        f.write(b"\xa5" * (64 << 10))
                        f.flush()
                except OSError as e:
                    full = e.errno == errno.ENOSPC
            st = os.statvfs(mnt)
            tf.check(full, "%s: ballast filled the file system (%d KiB free)" %
                     (label, st.f_bavail * st.f_frsize >> 10))
            err = fill(c, book, b"fill", MAX_SAVES)
            n_acked = len(book.acked)
            tf.check(isinstance(err, (errors.ResourceExhausted, errors.Unavailable)) and
                     not isinstance(err, errors.ProtocolError) and bool(err.message),
                     "%s: a save on the full disk is refused with RESOURCE_EXHAUSTED or "
                     "UNAVAILABLE and a reason (%r) after %d keys acknowledged" %
                     (label, err, n_acked))
            more = []  # more writes on the full disk: each refused or acknowledged
            for i in range(20):
                try:
                    book.save(c, b"more%02d" % i)
                    more.append("ok")
                except errors.StatesaverError as e:
                    more.append(e.code)
            tf.check(srv.poll() is None, "%s: the server is still running after 20 more "
                     "writes on the full disk (exit %s; answers %s)" %
                     (label, srv.poll(), sorted(set(more))))
            restart_required = isinstance(err, errors.Unavailable) and \
                not isinstance(err, errors.ProtocolError)
            if restart_required:
                tf.check("restart" in err.message.lower(),
                         "%s: the UNAVAILABLE reason tells the operator a restart is needed "
                         "(%s)" % (label, err.message))
                try:
                    book2 = Book("big")
                    book2.save(c, b"after-fail", 0)
                    again = None
                except errors.StatesaverError as e:
                    again = e
                tf.check(isinstance(again, errors.Unavailable) and
                         not isinstance(again, errors.ProtocolError),
                         "%s: after UNAVAILABLE the next write is refused too, not retried "
                         "(%r)" % (label, again))
            bad = tf.check(srv.poll() is None, "%s: server alive for reads" % label) and \
                book.verify(c)
            tf.check(bad == [], "%s: reads on the full disk return every acknowledged state "
                     "exactly (%d keys)%s" % (label, len(book.acked),
                                              "; ".join((bad or [])[:3])))
        os.unlink(ballast)
        if restart_required:
            print("     the server asked for a restart: %s" % err.message)
            srv = restart(d, data, port, srv, label, extra)
        with Client("127.0.0.1", port, timeout=20) as c:
            try:
                for i in range(4):
                    book.save(c, b"room%d" % i)
                resumed = None
            except errors.StatesaverError as e:
                resumed = e
            tf.check(resumed is None, "%s: with the ballast deleted writes work again%s (%r)" %
                     (label, " after the restart" if restart_required else
                      " without a restart", resumed))
        srv = restart(d, data, port, srv, label, extra)
        with Client("127.0.0.1", port, timeout=20) as c:
            bad = book.verify(c)
        tf.check(not bad, "%s: after a restart every acknowledged save is intact "
                 "(%d keys)%s" % (label, len(book.acked), "; ".join(bad[:3])))
        tf.check(tf.stop(srv) == 0, "%s: the server stops cleanly" % label)
    finally:
        if srv is not None and srv.poll() is None:
            srv.kill()
            srv.wait()
        r = subprocess.run(["umount", mnt], capture_output=True, text=True, timeout=20)
        tf.check(r.returncode == 0, "%s: file system unmounted (%s)" %
                 (label, r.stderr.strip()))


def test_map(tmp):
    label = "map"
    d = os.path.join(tmp, label)
    os.makedirs(d)
    data = os.path.join(d, "data")
    extra = ["--map-size", str(MAP_SIZE)] + server_flags(max_map_size=MAP_SIZE)
    port = tf.free_port()
    srv = tf.start_server(d, data, port, extra)
    book = Book("big")
    with Client("127.0.0.1", port, timeout=20) as c:
        c.declare("big", [("s", (STATE_N,))])
        err = fill(c, book, b"k", MAX_SAVES)
        tf.check(isinstance(err, errors.ResourceExhausted) and bool(err.message),
                 "%s: a save into the full map (--map-size %d) is refused with "
                 "RESOURCE_EXHAUSTED and a reason (%r) after %d keys" %
                 (label, MAP_SIZE, err, len(book.acked)))
        tf.check(srv.poll() is None, "%s: the server is still running" % label)
        bad = book.verify(c)
        tf.check(not bad, "%s: reads of the full map return every acknowledged state "
                 "(%d keys)%s" % (label, len(book.acked), "; ".join(bad[:3])))
        victims = sorted(book.acked)[:max(1, len(book.acked) // 2)]
        try:
            dropped = c.drop("big", victims)
        except errors.StatesaverError as e:
            dropped = e
        for k in victims:
            if dropped == len(victims):
                book.acked.pop(k)
        tf.check(dropped == len(victims), "%s: Drop of %d keys works on the full map (%r)" %
                 (label, len(victims), dropped))
        try:
            book.save(c, b"after-drop")
            for k in sorted(book.acked)[:2]:
                book.save(c, k)
            after = None
        except errors.StatesaverError as e:
            after = e
        tf.check(after is None, "%s: saves work after the Drop, without a restart (%r)" %
                 (label, after))
        bad = book.verify(c)
        f = c.fetch("big", victims[:4])
        tf.check(not bad and all(int(n) == 0 for n in f.next_segment),
                 "%s: acknowledged states intact, dropped keys gone%s" %
                 (label, "; ".join(bad[:3])))
    srv = restart(d, data, port, srv, label, extra)
    with Client("127.0.0.1", port, timeout=20) as c:
        bad = book.verify(c)
    tf.check(not bad, "%s: after a restart every acknowledged save is intact (%d keys)%s" %
             (label, len(book.acked), "; ".join(bad[:3])))
    tf.check(tf.stop(srv) == 0, "%s: the server stops cleanly" % label)


def main():
    scenarios = (("disk", test_disk), ("ext4", lambda t: test_disk(t, "ext4")),
                 ("map", test_map))
    return tf.run_scenarios("ss-diskfull-", scenarios, sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
