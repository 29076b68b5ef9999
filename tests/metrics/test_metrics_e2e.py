#!/usr/bin/python3
"""test_metrics_e2e -- /metrics, /healthz and /readyz of the real server and
worker during a run.

Starts statesaver-server with --metrics-listen 127.0.0.1:0 (port learnt from
--metrics-port-file) and one `statesaver-worker serve` with its own
--metrics-listen, scrapes both, runs declares, saves, fetches, a submit
through the job queue and a few malformed frames, scrapes again, and checks:
  - every scrape is valid Prometheus text exposition format 0.0.4, checked
    by a strict line parser (metric and label names, escapes, values, one
    HELP and TYPE per family before its samples, families not interleaved,
    no duplicate series, histogram buckets increasing in le and cumulative
    counts, +Inf bucket == _count, _sum present, counters >= 0);
  - the counters moved by what the run did (requests by op and code,
    latency histograms, commits, bytes, rejections by reason, segments,
    leases, worker steps and segments) and never went down;
  - /healthz and /readyz answer 200, an unknown path 404, POST 405;
  - when the server stops, the worker's /readyz turns 503 (not connected)
    while its /healthz stays 200, and the server exits 0.
Standard library only. Every process is killed at the end; every wait is
bounded.
"""
import math
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

SOURCE_ROOT = os.environ.get("SS_SOURCE_ROOT") or os.path.abspath(
    os.path.join(os.path.dirname(__file__), "..", ".."))
BUILD_ROOT = os.environ.get("SS_BUILD_ROOT") or os.path.join(SOURCE_ROOT, "build")
SERVER = os.path.join(BUILD_ROOT, "server", "statesaver-server")
WORKER = os.path.join(BUILD_ROOT, "worker", "statesaver-worker")
CLI = os.path.join(BUILD_ROOT, "client", "statesaver")
MAKE_MODEL = os.path.join(SOURCE_ROOT, "scripts", "make-model.py")
PY = "/usr/bin/python3"
CMD_TIMEOUT = 60

FAILURES = []
PROCS = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what)
    if not cond:
        FAILURES.append(what)
    return cond


# ---- a strict parser of the text exposition format ---------------------------

NAME_RE = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
LABEL_RE = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
FLOAT_RE = re.compile(r"^(?:[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|[+-]?Inf|NaN)$")
TYPES = {"counter", "gauge", "histogram", "summary", "untyped"}


class ExpositionError(Exception):
    pass


def parse_value(text, where):
    if not FLOAT_RE.match(text):
        raise ExpositionError("%s: bad value %r" % (where, text))
    return float(text.replace("Inf", "inf"))


def parse_labels(text, pos, where):
    """Parse {a="x",b="y"} starting at text[pos] == '{'. Returns (dict, end)."""
    labels = {}
    pos += 1
    while True:
        if pos < len(text) and text[pos] == "}":
            return labels, pos + 1
        m = LABEL_RE.match(text, pos)
        if not m:
            raise ExpositionError("%s: bad label name at %r" % (where, text[pos:pos + 20]))
        name = m.group(0)
        pos = m.end()
        if text[pos:pos + 2] != '="':
            raise ExpositionError("%s: label %s without =\"" % (where, name))
        pos += 2
        val = []
        while True:
            if pos >= len(text):
                raise ExpositionError("%s: unterminated label value" % where)
            c = text[pos]
            if c == "\\":
                nxt = text[pos + 1:pos + 2]
                if nxt not in ("\\", '"', "n"):
                    raise ExpositionError("%s: bad escape \\%s" % (where, nxt))
                val.append("\n" if nxt == "n" else nxt)
                pos += 2
            elif c == '"':
                pos += 1
                break
            elif c == "\n":
                raise ExpositionError("%s: newline in a label value" % where)
            else:
                val.append(c)
                pos += 1
        if name in labels:
            raise ExpositionError("%s: label %s twice" % (where, name))
        labels[name] = "".join(val)
        if pos < len(text) and text[pos] == ",":
            pos += 1
        elif pos < len(text) and text[pos] == "}":
            continue
        else:
            raise ExpositionError("%s: expected , or } after label %s" % (where, name))


def family_of(sample, families):
    """The family a sample name belongs to (histogram suffixes stripped)."""
    if sample in families:
        return sample, ""
    for suffix in ("_bucket", "_sum", "_count"):
        if sample.endswith(suffix) and sample[:-len(suffix)] in families:
            return sample[:-len(suffix)], suffix
    return None, None


def parse_exposition(text):
    """Validate text; return {family: {"type", "help", "samples": [(name, labels, value)]}}."""
    if not text.endswith("\n"):
        raise ExpositionError("output does not end with a newline")
    families = {}
    order = []          # families in order of first appearance
    current = None      # family whose samples are being read
    seen_series = set()
    for n, line in enumerate(text.split("\n")[:-1], 1):
        where = "line %d" % n
        if line == "":
            continue
        if line.startswith("#"):
            parts = line.split(" ", 3)
            if len(parts) >= 2 and parts[1] in ("HELP", "TYPE"):
                if len(parts) < 4 and not (parts[1] == "HELP" and len(parts) == 3):
                    raise ExpositionError("%s: short %s line" % (where, parts[1]))
                name = parts[2]
                if not NAME_RE.fullmatch(name):
                    raise ExpositionError("%s: bad metric name %r" % (where, name))
                fam = families.setdefault(name, {"type": None, "help": None, "samples": []})
                if name not in order:
                    if fam["samples"]:
                        raise ExpositionError("%s: %s after its samples" % (where, parts[1]))
                    order.append(name)
                elif current is not None and current != name:
                    raise ExpositionError("%s: family %s interleaved" % (where, name))
                current = name
                if parts[1] == "HELP":
                    if fam["help"] is not None:
                        raise ExpositionError("%s: second HELP for %s" % (where, name))
                    help_text = parts[3] if len(parts) == 4 else ""
                    if re.search(r"\\[^\\n]", help_text.replace("\\\\", "")):
                        raise ExpositionError("%s: bad escape in HELP" % where)
                    fam["help"] = help_text
                else:
                    if fam["type"] is not None:
                        raise ExpositionError("%s: second TYPE for %s" % (where, name))
                    if fam["samples"]:
                        raise ExpositionError("%s: TYPE after samples of %s" % (where, name))
                    if parts[3] not in TYPES:
                        raise ExpositionError("%s: unknown type %r" % (where, parts[3]))
                    fam["type"] = parts[3]
            continue  # other comments are allowed
        m = NAME_RE.match(line)
        if not m:
            raise ExpositionError("%s: bad sample line %r" % (where, line))
        sname = m.group(0)
        pos = m.end()
        labels = {}
        if pos < len(line) and line[pos] == "{":
            labels, pos = parse_labels(line, pos, where)
        if pos >= len(line) or line[pos] != " ":
            raise ExpositionError("%s: no space before the value" % where)
        rest = line[pos + 1:].split(" ")
        if len(rest) not in (1, 2) or rest[0] == "":
            raise ExpositionError("%s: bad value/timestamp %r" % (where, line[pos:]))
        value = parse_value(rest[0], where)
        if len(rest) == 2 and not re.fullmatch(r"-?\d+", rest[1]):
            raise ExpositionError("%s: bad timestamp %r" % (where, rest[1]))
        fname, suffix = family_of(sname, families)
        if fname is None:
            raise ExpositionError("%s: sample %s has no TYPE/HELP before it" % (where, sname))
        if fname != current:
            raise ExpositionError("%s: sample of %s outside its family block" % (where, fname))
        fam = families[fname]
        if fam["type"] is None:
            raise ExpositionError("%s: sample of %s before its TYPE" % (where, fname))
        if fam["type"] == "histogram":
            if suffix not in ("_bucket", "_sum", "_count"):
                raise ExpositionError("%s: histogram sample %s without a suffix" % (where, sname))
            if (suffix == "_bucket") != ("le" in labels):
                raise ExpositionError("%s: le label on %s" % (where, sname))
        elif suffix:
            raise ExpositionError("%s: %s is not a histogram" % (where, sname))
        if fam["type"] == "counter" and not (value >= 0):
            raise ExpositionError("%s: counter %s is %r" % (where, sname, value))
        key = (sname, tuple(sorted(labels.items())))
        if key in seen_series:
            raise ExpositionError("%s: duplicate series %s%s" % (where, sname, labels))
        seen_series.add(key)
        fam["samples"].append((sname, labels, value))
    for name, fam in families.items():
        if fam["type"] is None or fam["help"] is None:
            raise ExpositionError("family %s lacks TYPE or HELP" % name)
        if fam["type"] == "histogram":
            check_histogram(name, fam["samples"])
    return families


def check_histogram(name, samples):
    groups = {}
    for sname, labels, value in samples:
        base = tuple(sorted((k, v) for k, v in labels.items() if k != "le"))
        g = groups.setdefault(base, {"buckets": [], "sum": None, "count": None})
        if sname.endswith("_bucket"):
            g["buckets"].append((parse_value(labels["le"], name + " le"), value))
        elif sname.endswith("_sum"):
            g["sum"] = value
        else:
            g["count"] = value
    for base, g in groups.items():
        what = "%s%s" % (name, dict(base))
        if g["sum"] is None or g["count"] is None or not g["buckets"]:
            raise ExpositionError("%s: needs _bucket, _sum and _count" % what)
        les = [le for le, _ in g["buckets"]]
        if les != sorted(les) or len(set(les)) != len(les):
            raise ExpositionError("%s: buckets not in increasing le order" % what)
        if not math.isinf(les[-1]) or les[-1] < 0:
            raise ExpositionError("%s: no +Inf bucket" % what)
        counts = [c for _, c in g["buckets"]]
        if any(b < a for a, b in zip(counts, counts[1:])):
            raise ExpositionError("%s: bucket counts not cumulative" % what)
        if counts[-1] != g["count"]:
            raise ExpositionError("%s: +Inf bucket %r != _count %r" % (what, counts[-1], g["count"]))


def value(fams, name, **labels):
    """Value of the sample `name` with exactly these labels (0 if absent)."""
    fname, _ = family_of(name, fams)
    if fname is None:
        return None
    for sname, l, v in fams[fname]["samples"]:
        if sname == name and l == labels:
            return v
    return 0.0


def self_test_parser():
    """The parser must accept good text and reject known breakages."""
    good = ('# HELP a_total A.\n# TYPE a_total counter\na_total{op="x\\"y"} 1\n'
            '# HELP h H.\n# TYPE h histogram\nh_bucket{le="0.5"} 1\nh_bucket{le="+Inf"} 2\n'
            'h_sum 3.5\nh_count 2\n')
    try:
        parse_exposition(good)
        check(True, "parser accepts a valid exposition")
    except ExpositionError as e:
        check(False, "parser accepts a valid exposition (%s)" % e)
    bad = {
        "no newline at the end": good[:-1],
        "sample before TYPE": "a 1\n# TYPE a gauge\n# HELP a x\n",
        "bad value": "# HELP a A.\n# TYPE a gauge\na one\n",
        "bad label escape": '# HELP a A.\n# TYPE a gauge\na{x="\\t"} 1\n',
        "duplicate series": "# HELP a A.\n# TYPE a gauge\na 1\na 2\n",
        "+Inf != count": good.replace("h_count 2", "h_count 3"),
        "non-cumulative buckets": good.replace('h_bucket{le="+Inf"} 2', 'h_bucket{le="+Inf"} 0')
                                      .replace("h_count 2", "h_count 0"),
        "missing +Inf": good.replace('h_bucket{le="+Inf"} 2\n', ""),
        "negative counter": good.replace("a_total{op=\"x\\\"y\"} 1", "a_total -1"),
        "bad metric name": "# HELP 1a A.\n# TYPE 1a gauge\n1a 1\n",
        "interleaved family": ("# HELP a A.\n# TYPE a gauge\na{x=\"1\"} 1\n"
                               "# HELP b B.\n# TYPE b gauge\nb 1\na{x=\"2\"} 1\n"),
        "unknown type": "# HELP a A.\n# TYPE a meter\na 1\n",
    }
    for what, text in bad.items():
        try:
            parse_exposition(text)
            check(False, "parser rejects: " + what)
        except ExpositionError:
            check(True, "parser rejects: " + what)


# ---- processes and HTTP ------------------------------------------------------

def start(args, log_path):
    log = open(log_path, "wb")
    p = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
    p.log_path = log_path
    PROCS.append(p)
    return p


def log_text(p):
    with open(p.log_path, errors="replace") as f:
        return f.read()[-3000:]


def wait_file_int(path, proc, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with open(path) as f:
                t = f.read().strip()
            if t:
                return int(t)
        except FileNotFoundError:
            pass
        time.sleep(0.02)
    raise RuntimeError("no port in %s: %s" % (path, log_text(proc)))


def http(port, path, method="GET"):
    """(status, content type, body) of one request to 127.0.0.1:port."""
    req = urllib.request.Request("http://127.0.0.1:%d%s" % (port, path), method=method,
                                 data=b"x" if method == "POST" else None)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.headers.get("Content-Type", ""), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type", ""), e.read().decode()


def scrape(port, label):
    status, ctype, body = http(port, "/metrics")
    check(status == 200, "%s: /metrics answers 200" % label)
    check(ctype.startswith("text/plain; version=0.0.4"),
          "%s: content type is the text format 0.0.4 (%s)" % (label, ctype))
    try:
        fams = parse_exposition(body)
        check(True, "%s: valid exposition format (%d families, %d lines)"
              % (label, len(fams), body.count("\n")))
        return fams
    except ExpositionError as e:
        check(False, "%s: valid exposition format: %s" % (label, e))
        return {}


def run(args, **kw):
    return subprocess.run(args, capture_output=True, text=True, timeout=CMD_TIMEOUT, **kw)


def write_npy(path, rows, cols, seed):
    """float32 [rows, cols] .npy (format 1.0) with the standard library."""
    vals = [((i * 7919 + seed * 104729) % 1000) / 1000.0 - 0.5 for i in range(rows * cols)]
    header = "{'descr': '<f4', 'fortran_order': False, 'shape': (%d, %d), }" % (rows, cols)
    pad = 64 - (10 + len(header) + 1) % 64
    header += " " * pad + "\n"
    with open(path, "wb") as f:
        f.write(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode())
        f.write(struct.pack("<%df" % len(vals), *vals))


def raw_frame(port, payload_len_claim, payload=b""):
    """Send one frame (length prefix + payload) and read until close."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        s.sendall(struct.pack(">I", payload_len_claim) + payload)
        while s.recv(4096):
            pass
    except OSError:
        pass
    finally:
        s.close()


def counters_never_decrease(before, after, label):
    bad = []
    for name, fam in before.items():
        if fam["type"] not in ("counter", "histogram"):
            continue
        for sname, labels, v in fam["samples"]:
            if fam["type"] == "histogram" and sname.endswith("_sum"):
                continue
            w = value(after, sname, **labels)
            if w is None or w < v:
                bad.append("%s%s %s -> %s" % (sname, labels, v, w))
    check(not bad, "%s: no counter went down %s" % (label, bad[:3]))


# ---- the test ------------------------------------------------------------------

def main():
    self_test_parser()
    for p in (SERVER, WORKER, CLI):
        if not os.access(p, os.X_OK):
            print("not built: " + p)
            return 1
    tmp = tempfile.mkdtemp(prefix="ss-metrics-e2e-")
    try:
        body(tmp)
    finally:
        for p in PROCS:
            if p.poll() is None:
                p.kill()
                p.wait()
        if FAILURES:
            for f in sorted(os.listdir(tmp)):
                if f.endswith(".log"):
                    print("---- " + f)
                    print(open(os.path.join(tmp, f), errors="replace").read()[-3000:])
        shutil.rmtree(tmp, ignore_errors=True)
    print("%d failures" % len(FAILURES))
    return 1 if FAILURES else 0


def body(tmp):
    model = os.path.join(tmp, "model.safetensors")
    r = run([PY, MAKE_MODEL, model, "--preset", "image"])
    if not check(r.returncode == 0, "model written by scripts/make-model.py --preset image"):
        print(r.stderr)
        return
    # Bad flags are refused before anything starts.
    r = run([SERVER, "--data", os.path.join(tmp, "x"), "--metrics-listen", "127.0.0.1"])
    check(r.returncode == 2 and "--metrics-listen" in r.stderr,
          "server: --metrics-listen without a port exits 2 (%s)" % r.stderr.strip())
    r = run([WORKER, "serve", "--model", model, "--saver", "x", "--metrics-listen", "nohost:x"])
    check(r.returncode == 2 and "--metrics-listen" in r.stderr,
          "worker: a bad --metrics-listen exits 2 (%s)" % r.stderr.strip())

    data = os.path.join(tmp, "data")
    port_file = os.path.join(tmp, "port")
    mport_file = os.path.join(tmp, "mport")
    srv = start([SERVER, "--listen", "127.0.0.1:0", "--data", data, "--sync", "on",
                 "--port-file", port_file, "--metrics-listen", "127.0.0.1:0",
                 "--metrics-port-file", mport_file, "--max-frame-bytes", "1M",
                 "--log-level", "warn"], os.path.join(tmp, "server.log"))
    port = wait_file_int(port_file, srv)
    mport = wait_file_int(mport_file, srv)
    addr = "127.0.0.1:%d" % port
    check(mport != port and mport > 0, "server metrics on their own port %d" % mport)

    for path, want, text in (("/healthz", 200, "ok"), ("/readyz", 200, "ready"),
                             ("/nope", 404, "not found"), ("/metrics/x", 404, "not found")):
        status, _, b = http(mport, path)
        check(status == want and text in b, "server %s answers %d (%d %r)" % (path, want, status, b))
    status, _, _ = http(mport, "/metrics", method="POST")
    check(status == 405, "server POST /metrics answers 405 (%d)" % status)

    before = scrape(mport, "server before")
    for fam in ("statesaver_requests_total", "statesaver_request_duration_seconds",
                "statesaver_rejected_total", "statesaver_connections",
                "statesaver_sequences", "statesaver_lmdb_map_used_bytes",
                "statesaver_lmdb_map_size_bytes", "statesaver_commit_batch_ops",
                "statesaver_commit_duration_seconds", "statesaver_queue_queued",
                "statesaver_queue_leased", "statesaver_leases_total",
                "statesaver_leases_expired_total", "statesaver_segments_failed_total",
                "statesaver_segments_completed_total", "statesaver_evicted_total",
                "statesaver_received_bytes_total", "statesaver_build_info",
                "statesaver_store_corrupt_records_total"):
        check(fam in before, "server exposes %s" % fam)
    check(before.get("statesaver_request_duration_seconds", {}).get("type") == "histogram",
          "request_duration_seconds is a histogram")
    check(value(before, "statesaver_lmdb_map_size_bytes") == 4 * 1024 ** 3,
          "map size gauge is the --map-size default (%s)"
          % value(before, "statesaver_lmdb_map_size_bytes"))

    wport_file = os.path.join(tmp, "wport")
    wrk = start([WORKER, "serve", "--server", addr, "--model", model, "--saver", "m",
                 "--wait-ms", "200", "--metrics-listen", "127.0.0.1:0",
                 "--metrics-port-file", wport_file, "--log-level", "warn"],
                os.path.join(tmp, "worker.log"))
    wport = wait_file_int(wport_file, wrk)
    deadline = time.monotonic() + 20
    status = 0
    while time.monotonic() < deadline:
        status, _, _ = http(wport, "/readyz")
        if status == 200:
            break
        time.sleep(0.05)
    check(status == 200, "worker /readyz turns 200 once connected")
    check(http(wport, "/healthz")[0] == 200, "worker /healthz answers 200")
    check(http(wport, "/nope")[0] == 404, "worker unknown path answers 404")
    wbefore = scrape(wport, "worker before")
    check(value(wbefore, "statesaver_worker_connected") == 1, "worker_connected is 1")

    # State API traffic: declare, saves, fetches.
    states = os.path.join(tmp, "st")
    os.makedirs(states)
    write_npy(os.path.join(states, "h.npy"), 1, 4, 1)
    r = run([CLI, "--server", addr, "declare", "plain", "--state", "h:float32:4"])
    check(r.returncode == 0, "declare plain (%s)" % r.stderr.strip())
    for seg in range(3):
        r = run([CLI, "--server", addr, "save", "plain", "k1", "--segment", str(seg),
                 "--state", "h=" + os.path.join(states, "h.npy")])
        check(r.returncode == 0, "save k1 segment %d (%s)" % (seg, r.stderr.strip()))
    r = run([CLI, "--server", addr, "save", "plain", "k1", "--segment", "7",
             "--state", "h=" + os.path.join(states, "h.npy")])
    check(r.returncode != 0, "save with a wrong segment fails (FAILED_PRECONDITION)")
    for _ in range(2):
        r = run([CLI, "--server", addr, "fetch", "plain", "k1", "k2"])
        check(r.returncode == 0, "fetch k1 k2 (%s)" % r.stderr.strip())

    # Job traffic: 2 sequences of 20 and 9 steps, num_unroll 8 -> 3 + 2 segments.
    inputs = os.path.join(tmp, "in")
    os.makedirs(inputs)
    write_npy(os.path.join(inputs, "a.npy"), 20, 4, 2)
    write_npy(os.path.join(inputs, "b.npy"), 9, 4, 3)
    r = run([CLI, "--server", addr, "submit", "m", "--inputs", inputs, "--num-unroll", "8",
             "--outputs", os.path.join(tmp, "out"), "--wait-ms", "500"])
    check(r.returncode == 0, "submit through the worker (%s)" % r.stderr.strip()[-300:])

    # Malformed traffic: an oversized frame and a frame that is not a Request.
    raw_frame(port, 64 * 1024 * 1024)
    raw_frame(port, 5, b"\xff\xff\xff\xff\xff")

    after = scrape(mport, "server after")
    counters_never_decrease(before, after, "server")

    def moved(name, by_at_least=1, **labels):
        a, b = value(before, name, **labels) or 0, value(after, name, **labels)
        check(b is not None and b - a >= by_at_least,
              "server %s%s moved by >= %s (%s -> %s)" % (name, labels or "", by_at_least, a, b))

    moved("statesaver_requests_total", 1, op="declare", code="OK")
    moved("statesaver_requests_total", 3, op="save", code="OK")
    moved("statesaver_requests_total", 1, op="save", code="FAILED_PRECONDITION")
    moved("statesaver_requests_total", 2, op="fetch", code="OK")
    moved("statesaver_requests_total", 1, op="submit", code="OK")
    moved("statesaver_requests_total", 1, op="lease", code="OK")
    moved("statesaver_requests_total", 1, op="complete", code="OK")
    moved("statesaver_request_duration_seconds_count", 2, op="fetch")
    moved("statesaver_request_duration_seconds_count", 4, op="save")
    moved("statesaver_rejected_total", 1, reason="frame_too_big")
    moved("statesaver_rejected_total", 1, reason="bad_frame")
    moved("statesaver_commit_batch_ops_count", 3)
    moved("statesaver_commit_batch_ops_sum", 3)
    moved("statesaver_commit_duration_seconds_count", 3)
    moved("statesaver_connections_total", 5)
    moved("statesaver_received_bytes_total", 100)
    moved("statesaver_sent_bytes_total", 100)
    moved("statesaver_segments_completed_total", 5)
    moved("statesaver_leases_total", 1)
    moved("statesaver_leased_segments_total", 5)
    moved("statesaver_saves_applied_total", 3, via="save")
    moved("statesaver_saves_applied_total", 5, via="complete")
    check(value(after, "statesaver_savers") == 2, "savers gauge is 2 (%s)"
          % value(after, "statesaver_savers"))
    check(value(after, "statesaver_sequences") >= 1, "sequences gauge counts k1 (%s)"
          % value(after, "statesaver_sequences"))
    check(value(after, "statesaver_lmdb_map_used_bytes") > 0, "map used > 0")
    check(value(after, "statesaver_store_corrupt_records_total") == 0,
          "no record failed its checksum (%s)"
          % value(after, "statesaver_store_corrupt_records_total"))
    check(value(after, "statesaver_connections") >= 1,
          "connections gauge counts the worker (%s)" % value(after, "statesaver_connections"))
    check(value(after, "statesaver_queue_queued") == 0 and
          value(after, "statesaver_queue_leased") == 0, "queue empty after the submit")
    fsync = value(after, "statesaver_commit_duration_seconds_sum")
    check(fsync is not None and fsync > 0, "fsync time recorded (%s s)" % fsync)

    wafter = scrape(wport, "worker after")
    counters_never_decrease(wbefore, wafter, "worker")
    check(value(wafter, "statesaver_worker_segments_total") == 5,
          "worker segments_total is 5 (%s)" % value(wafter, "statesaver_worker_segments_total"))
    check(value(wafter, "statesaver_worker_steps_total") == 29,
          "worker steps_total is 20 + 9 (%s)" % value(wafter, "statesaver_worker_steps_total"))
    check(value(wafter, "statesaver_worker_unroll_duration_seconds_count") >= 1,
          "worker unroll histogram observed")
    check(value(wafter, "statesaver_worker_lease_roundtrip_seconds_count") >= 1,
          "worker lease round-trip histogram observed")
    check(value(wafter, "statesaver_worker_errors_total", kind="item") == 0,
          "no worker item errors")

    # Stop the server while scrapers hammer its endpoint (the HTTP thread
    # must be stopped cleanly under load); the worker stays alive but is no
    # longer ready.
    seen = {"metrics": [], "readyz": []}
    halt = threading.Event()

    def hammer(path, key):
        while not halt.is_set():
            try:
                seen[key].append(http(mport, path)[0])
            except OSError:
                seen[key].append("refused")
                time.sleep(0.01)

    threads = [threading.Thread(target=hammer, args=("/metrics", "metrics")),
               threading.Thread(target=hammer, args=("/readyz", "readyz"))]
    for t in threads:
        t.start()
    time.sleep(0.2)
    srv.send_signal(signal.SIGTERM)
    try:
        rc = srv.wait(timeout=30)
    except subprocess.TimeoutExpired:
        rc = None
    time.sleep(0.1)
    halt.set()
    for t in threads:
        t.join(timeout=30)
    check(rc == 0, "server exits 0 on SIGTERM while being scraped (%s)" % rc)
    ok_scrapes = seen["metrics"].count(200)
    bad = [x for x in seen["metrics"] + seen["readyz"] if x not in (200, 503, "refused")]
    check(ok_scrapes >= 1 and not bad,
          "scrapes during shutdown: %d answered 200, then refused; nothing else (%s)"
          % (ok_scrapes, bad[:5]))
    check(seen["metrics"][-1] == "refused", "the endpoint is gone after exit")
    deadline = time.monotonic() + 20
    status, b = 0, ""
    while time.monotonic() < deadline:
        status, _, b = http(wport, "/readyz")
        if status == 503:
            break
        time.sleep(0.05)
    check(status == 503 and "not connected" in b,
          "worker /readyz turns 503 without its server (%d %r)" % (status, b))
    check(http(wport, "/healthz")[0] == 200, "worker /healthz stays 200")
    wlast = scrape(wport, "worker without server")
    check(value(wlast, "statesaver_worker_connected") == 0, "worker_connected is 0")
    errs = sum(value(wlast, "statesaver_worker_errors_total", kind=k) or 0
               for k in ("connect", "lease"))
    check(errs >= 1, "worker counted lease/connect errors (%s)" % errs)
    wrk.send_signal(signal.SIGTERM)
    try:
        rc = wrk.wait(timeout=30)
    except subprocess.TimeoutExpired:
        rc = None
    check(rc == 0, "worker exits 0 on SIGTERM (%s)" % rc)
    for name, p in (("server", srv), ("worker", wrk)):
        text = log_text(p)
        check("ERROR: AddressSanitizer" not in text and "runtime error" not in text,
              "%s log has no sanitizer report" % name)


if __name__ == "__main__":
    sys.exit(main())
