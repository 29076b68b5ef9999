"""cluster_util -- shared helpers of the cluster tests: a real etcd on
loopback (ports from the OS, temp data dir), N statesaver-server shards in
temp dirs, topology documents, and a raw protobuf client (one socket,
Request/Response frames) that exposes Status.redirect.

Paths come from SS_BUILD_ROOT / SS_SOURCE_ROOT (meson's test_env); the
generated statesaver_pb2 module from the directory given as the test's
first argument (meson passes <build>/tests/python).

    etcd = Etcd()                       # started, reachable at etcd.url
    etcd.put_topology("c1", topo_doc)   # JSON form of ss_topology.h
    shards = start_shards(3, etcd=etcd, cluster="c1")   # s0, s1, s2
    c = Conn(shards[0].address); r = c.call(topology={})
    ...
    for s in shards: s.stop(); etcd.stop()
"""
import base64
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

SOURCE_ROOT = os.environ.get("SS_SOURCE_ROOT") or os.path.abspath(
    os.path.join(os.path.dirname(__file__), "..", ".."))
BUILD_ROOT = os.environ.get("SS_BUILD_ROOT") or os.path.join(SOURCE_ROOT, "build")
SERVER = os.path.join(BUILD_ROOT, "server", "statesaver-server")
ETCD = "/usr/bin/etcd"
SLOTS = 16384

pb = None  # statesaver_pb2, set by setup()


def setup(argv):
    """Import statesaver_pb2 from argv[1] (or $STATESAVER_PB2_DIR); return
    argv without it."""
    global pb
    d = os.environ.get("STATESAVER_PB2_DIR")
    if len(argv) > 1 and os.path.isdir(argv[1]):
        d = argv[1]
        argv = argv[:1] + argv[2:]
    if d:
        sys.path.insert(0, d)
    import statesaver_pb2  # noqa: E402
    pb = statesaver_pb2
    return argv


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def wait_until(pred, timeout, what, step=0.02):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError("timed out after %.1f s waiting for %s" % (timeout, what))
        time.sleep(step)


# ---- CRC16 slots (the Redis Cluster function, as common/ss_slot.c) ----

def _crc16(data):
    crc = 0
    for b in data:
        crc ^= b << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


def slot_of(key):
    if isinstance(key, str):
        key = key.encode()
    s = key.find(b"{")
    if s >= 0:
        e = key.find(b"}", s + 1)
        if e > s + 1:
            key = key[s + 1:e]
    return _crc16(key) % SLOTS


def key_in_slots(prefix, first, last, n=1, start=0):
    """n keys prefix+i whose slot is in first..last."""
    out, i = [], start
    while len(out) < n:
        k = ("%s%d" % (prefix, i)).encode()
        if first <= slot_of(k) <= last:
            out.append(k)
        i += 1
    return out


# ---- etcd ----

class Etcd:
    """etcd on 127.0.0.1 with OS-picked client and peer ports."""

    def __init__(self):
        if not os.access(ETCD, os.X_OK):
            raise FileNotFoundError("etcd not installed: %s (scripts/install-deps --test)" % ETCD)
        self.tmp = tempfile.mkdtemp(prefix="ss-etcd-")
        self.port = free_port()
        self.peer = free_port()
        self.url = "http://127.0.0.1:%d" % self.port
        self.proc = None
        self.start()

    def start(self):
        peer = "http://127.0.0.1:%d" % self.peer
        self.log = open(os.path.join(self.tmp, "etcd.log"), "ab")
        self.proc = subprocess.Popen(
            [ETCD, "--data-dir", os.path.join(self.tmp, "data"), "--name", "default",
             "--listen-client-urls", self.url, "--advertise-client-urls", self.url,
             "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
             "--initial-cluster", "default=" + peer, "--log-level", "error"],
            stdout=self.log, stderr=subprocess.STDOUT)
        wait_until(self._up, 30, "etcd to answer")

    def _up(self):
        if self.proc.poll() is not None:
            raise RuntimeError("etcd exited with %d" % self.proc.returncode)
        try:
            self.range("/probe")
            return True
        except OSError:
            return False

    def _post(self, path, body):
        req = urllib.request.Request(self.url + path, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=5) as r:
            return json.loads(r.read())

    @staticmethod
    def _b64(s):
        if isinstance(s, str):
            s = s.encode()
        return base64.b64encode(s).decode()

    def put(self, key, value):
        return self._post("/v3/kv/put", {"key": self._b64(key), "value": self._b64(value)})

    def range(self, key):
        """(value bytes or None, mod_revision)."""
        r = self._post("/v3/kv/range", {"key": self._b64(key)})
        kvs = r.get("kvs") or []
        if not kvs:
            return None, 0
        return base64.b64decode(kvs[0].get("value", "")), int(kvs[0]["mod_revision"])

    def delete(self, key):
        return self._post("/v3/kv/deleterange", {"key": self._b64(key)})

    def put_topology(self, cluster, doc):
        self.put("/statesaver/%s/topology" % cluster, json.dumps(doc))

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def stop(self):
        self.kill()
        shutil.rmtree(self.tmp, ignore_errors=True)


def topology(cluster, epoch, shards, ranges):
    """shards: [(id, "host:port")]; ranges: [(first, last, id)]."""
    return {"cluster": cluster, "epoch": epoch,
            "shards": [{"id": i, "primary": a, "replicas": []} for i, a in shards],
            "slots": [{"first": f, "last": l, "shard": s} for f, l, s in ranges]}


def even_ranges(ids):
    n = len(ids)
    out, first = [], 0
    for i, sid in enumerate(ids):
        size = SLOTS // n + (1 if i < SLOTS % n else 0)
        out.append((first, first + size - 1, sid))
        first += size
    return out


# ---- shards ----

class Shard:
    """statesaver-server on 127.0.0.1 with a fixed port (so the topology
    can name it before it starts) and a temp data dir."""

    def __init__(self, shard_id, args=(), port=None, data=None, metrics=False,
                 expect_exit=False):
        self.id = shard_id
        self.tmp = tempfile.mkdtemp(prefix="ss-shard-%s-" % shard_id)
        self.data = data or os.path.join(self.tmp, "data")
        self.port = port or free_port()
        self.address = "127.0.0.1:%d" % self.port
        self.metrics_port = free_port() if metrics else None
        self.args = list(args)
        self.proc = None
        self.expect_exit = expect_exit
        self.start()

    def start(self):
        port_file = os.path.join(self.tmp, "port")
        if os.path.exists(port_file):
            os.unlink(port_file)
        cmd = [SERVER, "--listen", self.address, "--data", self.data, "--sync", "off",
               "--port-file", port_file, "--log-level", "info"] + self.args
        if self.metrics_port:
            cmd += ["--metrics-listen", "127.0.0.1:%d" % self.metrics_port]
        self.logf = open(os.path.join(self.tmp, "server.log"), "ab")
        self.proc = subprocess.Popen(cmd, stdout=self.logf, stderr=subprocess.STDOUT)
        if self.expect_exit:
            return

        def up():
            if self.proc.poll() is not None:
                raise RuntimeError("shard %s exited with %d: %s" % (
                    self.id, self.proc.returncode, self.log_text()))
            try:
                with open(port_file) as f:
                    return f.read().strip() != ""
            except FileNotFoundError:
                return False
        wait_until(up, 30, "shard %s to listen" % self.id)

    def wait_exit(self, timeout=30):
        return self.proc.wait(timeout=timeout)

    def log_text(self):
        self.logf.flush()
        with open(os.path.join(self.tmp, "server.log"), "rb") as f:
            return f.read().decode(errors="replace")[-6000:]

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def terminate(self):
        """SIGTERM; the exit status (None when it was not running)."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
                return "hung"
        return None

    def stop(self):
        """Stop it and check it shut down cleanly (exit 0 on SIGTERM, no
        sanitizer report in its log)."""
        rc = self.terminate()
        log = self.log_text() if self.proc else ""
        shutil.rmtree(self.tmp, ignore_errors=True)
        bad = [m for m in ("AddressSanitizer", "runtime error:", "LeakSanitizer")
               if m in log]
        if bad or (rc is not None and rc != 0 and not self.expect_exit):
            raise AssertionError("shard %s: exit %r on SIGTERM, %s: %s" % (
                self.id, rc, bad, log[-3000:]))

    def http(self, path):
        """(status, body text) of the metrics endpoint."""
        try:
            with urllib.request.urlopen("http://127.0.0.1:%d%s" % (self.metrics_port, path),
                                        timeout=5) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def metric(self, name):
        _, text = self.http("/metrics")
        for line in text.splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                return float(line.rsplit(" ", 1)[1])
        return None


def start_shards(n, etcd=None, cluster="c1", ids=None, epoch=1, extra=(), metrics=False):
    """n shards s0.. with an even topology written to etcd first."""
    ids = ids or ["s%d" % i for i in range(n)]
    ports = [free_port() for _ in ids]
    doc = topology(cluster, epoch, [(i, "127.0.0.1:%d" % p) for i, p in zip(ids, ports)],
                   even_ranges(ids))
    etcd.put_topology(cluster, doc)
    shards = [Shard(i, ["--etcd", etcd.url, "--cluster", cluster, "--shard", i] + list(extra),
                    port=p, metrics=metrics) for i, p in zip(ids, ports)]
    return shards, doc


# ---- raw protocol client ----

class Conn:
    """One connection; call(kind=message fields) sends a Request with that
    body and returns the Response."""

    def __init__(self, address, timeout=20):
        host, port = address.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=timeout)
        self.next_id = 1

    def _recv(self, n):
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("server closed the connection")
            buf += chunk
        return buf

    def request(self, req):
        req.id = self.next_id
        self.next_id += 1
        data = req.SerializeToString()
        self.sock.sendall(struct.pack(">I", len(data)) + data)
        (n,) = struct.unpack(">I", self._recv(4))
        resp = pb.Response()
        resp.ParseFromString(self._recv(n))
        return resp

    def call(self, **kw):
        (kind, body), = kw.items()
        req = pb.Request()
        getattr(req, kind).CopyFrom(body if not isinstance(body, dict) else
                                    _build(getattr(req, kind), body))
        return self.request(req)

    def close(self):
        self.sock.close()


def _build(msg, fields):
    m = type(msg)()
    for k, v in fields.items():
        f = getattr(m, k)
        if isinstance(v, list):
            if v and isinstance(v[0], dict):
                for item in v:
                    _build_into(f.add(), item)
            else:
                f.extend(v)
        elif isinstance(v, dict):
            f.CopyFrom(_build(f, v))
        elif hasattr(v, "DESCRIPTOR"):
            f.CopyFrom(v)
        else:
            setattr(m, k, v)
    return m


def _build_into(m, fields):
    m.CopyFrom(_build(m, fields))


def f32_tensor(values, shape):
    return pb.Tensor(dtype=pb.DT_FLOAT32, shape=shape, data=struct.pack("<%df" % len(values),
                                                                          *values))


def declare(conn, saver="s", size=4):
    r = conn.call(declare={"saver": saver, "states": [
        {"name": "h", "dtype": pb.DT_FLOAT32, "shape": [size]}]})
    assert r.status.code == 0, r.status.message
    return r


def save(conn, keys, segment, values, saver="s", size=4):
    """Save one float32 [size] state per key (values: list of floats per key)."""
    flat = [x for v in values for x in v]
    return conn.call(save={"saver": saver, "keys": keys, "segment": [segment] * len(keys),
                           "states": [f32_tensor(flat, [len(keys), size])]})


def fetch(conn, keys, saver="s"):
    return conn.call(fetch={"saver": saver, "keys": keys})


CLI = os.path.join(BUILD_ROOT, "client", "statesaver")


class Cluster:
    """etcd + n shards under one cluster name, the first topology written by
    `statesaver cluster init`."""

    def __init__(self, etcd, name, n=3):
        self.etcd, self.name = etcd, name
        self.ports = [free_port() for _ in range(n)]
        self.ids = ["s%d" % i for i in range(n)]
        spec = ",".join("%s=127.0.0.1:%d" % (i, p) for i, p in zip(self.ids, self.ports))
        r = subprocess.run([CLI, "cluster", "init", "--etcd", etcd.url, "--cluster", name,
                            "--shards", spec], capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            raise RuntimeError("cluster init failed: " + r.stderr)
        self.shards = [Shard(i, ["--etcd", etcd.url, "--cluster", name, "--shard", i], port=p)
                       for i, p in zip(self.ids, self.ports)]
        self.seeds = [s.address for s in self.shards]

    def by_id(self, sid):
        return self.shards[self.ids.index(sid)]

    def stop(self):
        for s in self.shards:
            s.stop()
