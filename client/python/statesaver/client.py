"""client -- blocking Python client of statesaver-server.

One Client is one TCP connection speaking the framed protobuf protocol of
docs/protocol.md: a 4-byte big-endian length, then a Request; the Response
with the same id comes back, possibly after others (responses are matched
by id, and a reply for another id is kept until its caller asks for it).

Tensors go in and out as numpy arrays (little-endian, row-major). Keys may
be bytes or str (encoded as UTF-8). A non-OK status raises the matching
StatesaverError subclass with the server's message.

Thread safety: one call at a time per Client (a lock serializes calls);
use one Client per thread for parallel calls.
"""
import collections
import os
import socket
import struct
import threading

import numpy as np

from . import errors
from ._pb import pb

DEFAULT_PORT = 7450
DEFAULT_TIMEOUT = 30.0
FRAME_MAX_DEFAULT = 64 * 1024 * 1024

_NP_OF_DT = {
    pb.DT_FLOAT32: np.dtype("<f4"),
    pb.DT_INT32: np.dtype("<i4"),
    pb.DT_INT64: np.dtype("<i8"),
    pb.DT_FLOAT64: np.dtype("<f8"),
}
_DT_OF_KIND = {("f", 4): pb.DT_FLOAT32, ("i", 4): pb.DT_INT32,
               ("i", 8): pb.DT_INT64, ("f", 8): pb.DT_FLOAT64}
_DT_NAMES = {"float32": pb.DT_FLOAT32, "int32": pb.DT_INT32,
             "int64": pb.DT_INT64, "float64": pb.DT_FLOAT64}

FetchResult = collections.namedtuple(
    "FetchResult", "states next_segment updated_ms")
FetchResult.__doc__ = ("states: dict name -> array [n_keys, ...] in schema "
                       "order; next_segment, updated_ms: uint64 arrays [n_keys]")
DeclareResult = collections.namedtuple(
    "DeclareResult", "created states idle_ttl_ms keep_final max_in_flight", defaults=(0,))
StateSpec = collections.namedtuple("StateSpec", "name shape dtype initial")
SaverInfo = collections.namedtuple(
    "SaverInfo", "name states idle_ttl_ms keep_final sequences max_in_flight", defaults=(0,))
SequenceInfo = collections.namedtuple("SequenceInfo", "key next_segment updated_ms")
ListResult = collections.namedtuple("ListResult", "savers sequences more")
SegmentResult = collections.namedtuple(
    "SegmentResult", "state outputs length last final_states reason attempts")
SegmentResult.__doc__ = ("state: 'QUEUED', 'LEASED', 'DONE', 'FAILED' or "
                         "'UNKNOWN'; outputs [T, output_size] of which the "
                         "first `length` rows are real; final_states: dict")
Lease = collections.namedtuple("Lease", "lease_id deadline_ms names items")
LeasedSegment = collections.namedtuple(
    "LeasedSegment", "key segment length last inputs states attempts sequences context "
    "total_length sequence_count", defaults=({}, {}, 0, 0))
LeasedSegment.__doc__ = ("inputs: the inputs tensor (None when the segment has only "
                         "named sequences); sequences, context: dicts name -> array; "
                         "total_length, sequence_count: as submitted (0 = not told)")
CancelResult = collections.namedtuple("CancelResult", "cancelled segments")


def to_tensor(a, dtype=None):
    """numpy array (or nested list) -> Tensor message (little-endian)."""
    a = np.asarray(a, dtype=dtype)
    if a.dtype.kind == "f" and a.dtype.itemsize not in (4, 8):
        a = a.astype(np.float32)
    dt = _DT_OF_KIND.get((a.dtype.kind, a.dtype.itemsize))
    if dt is None:
        raise errors.InvalidArgument("unsupported dtype %s (float32, float64, "
                                     "int32, int64)" % a.dtype)
    t = pb.Tensor(dtype=dt, shape=list(a.shape))
    t.data = np.ascontiguousarray(a, dtype=_NP_OF_DT[dt]).tobytes()
    return t


def from_tensor(t):
    """Tensor message -> writable numpy array of its shape."""
    dt = _NP_OF_DT.get(t.dtype)
    if dt is None:
        raise errors.ProtocolError("tensor with unknown dtype %d" % t.dtype)
    shape = tuple(int(d) for d in t.shape)
    n = int(np.prod(shape, dtype=np.int64)) if shape else 1
    if len(t.data) != n * dt.itemsize:
        raise errors.ProtocolError("tensor of shape %s has %d bytes, expected %d"
                                   % (shape, len(t.data), n * dt.itemsize))
    return np.frombuffer(t.data, dtype=dt).reshape(shape).astype(dt.newbyteorder("="))


def _key(k):
    if isinstance(k, str):
        return k.encode("utf-8")
    if isinstance(k, (bytes, bytearray, memoryview)):
        return bytes(k)
    raise TypeError("a key must be bytes or str, not %s" % type(k).__name__)


def _spec_out(s):
    init = from_tensor(s.initial) if s.HasField("initial") else None
    dt = {v: k for k, v in _DT_NAMES.items()}.get(s.dtype, "invalid")
    return StateSpec(s.name, tuple(int(d) for d in s.shape), dt, init)


def parse_server(server):
    """'host:port', '[v6]:port' or 'host' -> (host, port)."""
    if server.startswith("["):
        host, _, rest = server[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else DEFAULT_PORT
    if server.count(":") == 1:
        host, port = server.split(":")
        return host, int(port)
    return server, DEFAULT_PORT


class Client:
    """A connection to statesaver-server.

    Client(host=None, port=None, timeout=30.0, token=None): with no host,
    $STATESAVER_SERVER ("host:port") or 127.0.0.1:7450. timeout (seconds)
    bounds connecting and each call; calls that wait on the server (fetch
    barrier, lease, await) add their wait_ms. token (bytes or str) is sent in
    a Hello as the connection's first request, as the server requires when
    it runs with --auth-token-file.
    """

    def __init__(self, host=None, port=None, timeout=DEFAULT_TIMEOUT,
                 token=None, client_name="statesaver-python",
                 max_frame_bytes=FRAME_MAX_DEFAULT):
        if host is None:
            host, p = parse_server(os.environ.get("STATESAVER_SERVER",
                                                  "127.0.0.1:%d" % DEFAULT_PORT))
            port = port or p
        elif port is None:
            host, port = parse_server(host)
        self.host, self.port, self.timeout = host, int(port), float(timeout)
        self.max_frame_bytes = int(max_frame_bytes)
        self.server_info = None  # HelloResponse after a Hello
        self._lock = threading.Lock()
        self._next_id = 1
        self._pending = {}   # id -> Response that arrived before its caller asked
        self._schemas = {}   # saver -> [state names] in schema order
        self._buf = bytearray()
        self._sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if token is not None:
            try:
                self.hello(token, client_name)
            except BaseException:
                self.close()
                raise

    # ---- plumbing ------------------------------------------------------

    def close(self):
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _recv_exact(self, n):
        while len(self._buf) < n:
            chunk = self._sock.recv(max(65536, n - len(self._buf)))
            if not chunk:
                raise errors.ProtocolError("server closed the connection")
            self._buf += chunk
        out = bytes(self._buf[:n])
        del self._buf[:n]
        return out

    def _read_response(self):
        (n,) = struct.unpack(">I", self._recv_exact(4))
        if n > self.max_frame_bytes:  # checked before buffering the body
            self.close()
            raise errors.ProtocolError("response frame of %d bytes exceeds the "
                                       "limit of %d" % (n, self.max_frame_bytes))
        resp = pb.Response()
        try:
            resp.ParseFromString(self._recv_exact(n))
        except Exception as e:  # google.protobuf.message.DecodeError
            self.close()
            raise errors.ProtocolError("malformed response: %s" % e) from None
        return resp

    def call(self, field, msg, wait_ms=0):
        """Send one request with body `field` = msg; return the body of the
        matching response, or raise its status as an exception."""
        return self.call_many(field, [msg], wait_ms)[0]

    def call_many(self, field, msgs, wait_ms=0, raise_first=True):
        """Pipelined calls: send every request of `msgs` (bodies of kind
        `field`), then read the replies. Returns the bodies in order; with
        raise_first (default) the first failed one's status is raised after
        all replies are read (so the connection stays in step), else the
        list holds the exception objects in their places."""
        with self._lock:
            if self._sock is None:
                raise errors.ProtocolError("connection is closed")
            frames, ids = [], []
            for msg in msgs:
                rid = self._next_id
                self._next_id += 1
                req = pb.Request(id=rid)
                getattr(req, field).CopyFrom(msg)
                data = req.SerializeToString()
                if len(data) > self.max_frame_bytes:
                    raise errors.InvalidArgument("request of %d bytes exceeds the frame "
                                                 "limit of %d" % (len(data), self.max_frame_bytes))
                frames.append(struct.pack(">I", len(data)) + data)
                ids.append(rid)
            self._sock.settimeout(self.timeout + wait_ms / 1000.0)
            got = {}
            try:
                self._sock.sendall(b"".join(frames))
                for rid in ids:
                    resp = self._pending.pop(rid, None)
                    while resp is None:
                        r = self._read_response()
                        if r.id == rid:
                            resp = r
                        else:
                            self._pending[r.id] = r
                    got[rid] = resp
            except socket.timeout:
                # The reply may still come; the stream stays usable only if
                # we drop the connection rather than mismatch ids later.
                self.close()
                raise errors.DeadlineExceeded("no response to %s within %.1f s"
                                              % (field, self.timeout + wait_ms / 1000.0)) from None
            except OSError as e:
                self.close()
                raise errors.ProtocolError("connection to %s:%d failed: %s"
                                           % (self.host, self.port, e)) from None
        out = []
        for rid in ids:
            resp = got[rid]
            if resp.status.code != pb.OK:
                name = (pb.Code.Name(resp.status.code)
                        if resp.status.code in pb.Code.values() else None)
                exc = errors.from_status(resp.status.code, name, resp.status.message,
                                         resp.status.redirect
                                         if resp.status.HasField("redirect") else None)
                if raise_first:
                    raise exc
                out.append(exc)
            elif resp.WhichOneof("body") != field:
                raise errors.ProtocolError("response to %s carries %s"
                                           % (field, resp.WhichOneof("body")))
            else:
                out.append(getattr(resp, field))
        return out

    # ---- calls ----------------------------------------------------------

    def hello(self, token=b"", client_name="statesaver-python"):
        if isinstance(token, str):
            token = token.encode()
        self.server_info = self.call("hello", pb.HelloRequest(token=token, client=client_name))
        if self.server_info.max_frame_bytes:
            self.max_frame_bytes = max(self.max_frame_bytes, self.server_info.max_frame_bytes)
        return self.server_info

    def ping(self, payload=b""):
        """Round trip; returns the server's clock (ms since the epoch)."""
        r = self.call("ping", pb.PingRequest(payload=payload))
        if r.payload != payload:
            raise errors.ProtocolError("ping payload not echoed")
        return r.server_time_ms

    def declare(self, saver, states, idle_ttl_ms=0, keep_final=False, max_in_flight=0):
        """Declare saver with states: a dict name -> shape (or -> initial
        array), or a list of (name, shape[, initial[, dtype]]). max_in_flight
        caps the distinct sequences leased at once (0: no cap; SQSS's batch
        slots, docs/training.md). Returns a DeclareResult; created is False
        when the same schema existed."""
        items = states.items() if isinstance(states, dict) else states
        req = pb.DeclareRequest(saver=saver, idle_ttl_ms=idle_ttl_ms, keep_final=keep_final,
                                max_in_flight=max_in_flight)
        for it in items:
            name, shape = it[0], it[1]
            initial = it[2] if len(it) > 2 else None
            dtype = it[3] if len(it) > 3 else "float32"
            if isinstance(shape, np.ndarray):  # name -> initial value
                initial, shape = shape, shape.shape
            spec = req.states.add(name=name, dtype=_DT_NAMES[dtype],
                                  shape=[int(d) for d in np.atleast_1d(shape)] if shape != () else [])
            if initial is not None:
                spec.initial.CopyFrom(to_tensor(np.asarray(initial, dtype=np.dtype(dtype))))
        r = self.call("declare", req)
        self._schemas[saver] = [s.name for s in r.states]
        return DeclareResult(r.created, [_spec_out(s) for s in r.states],
                             r.idle_ttl_ms, r.keep_final, r.max_in_flight)

    def fetch(self, saver, keys, min_segment=0, wait_ms=0):
        """States of keys (initial state and next_segment 0 for new keys).
        With wait_ms, wait until every key's next_segment >= min_segment."""
        r = self.call("fetch", pb.FetchRequest(saver=saver, keys=[_key(k) for k in keys],
                                               min_segment=min_segment, wait_ms=wait_ms),
                      wait_ms=wait_ms)
        self._schemas[saver] = list(r.names)
        states = collections.OrderedDict(
            (n, from_tensor(t)) for n, t in zip(r.names, r.states))
        return FetchResult(states, np.array(r.next_segment, dtype=np.uint64),
                           np.array(r.updated_ms, dtype=np.uint64))

    def schema(self, saver):
        """State names of saver in schema order (cached per Client)."""
        if saver not in self._schemas:
            for info in self.savers():
                self._schemas[info.name] = [s.name for s in info.states]
            if saver not in self._schemas:
                raise errors.NotFound("no saver named %r" % saver)
        return self._schemas[saver]

    def save(self, saver, keys, segments, states, final=None):
        """Save the state at the end of segments[i] for keys[i] (compare-and-
        set). states: dict name -> array [n_keys, ...] (every schema name) or
        a list in schema order. segments and final: one per key, or a scalar
        for all. Returns the per-key already_applied flags. Raises
        FailedPrecondition on a segment mismatch; nothing is applied then."""
        keys = [_key(k) for k in keys]
        segs = np.broadcast_to(np.asarray(segments, dtype=np.uint64), (len(keys),))
        if isinstance(states, dict):
            names = self.schema(saver)
            missing = [n for n in names if n not in states]
            extra = [n for n in states if n not in names]
            if missing or extra:
                raise errors.InvalidArgument("states must name exactly the schema %s "
                                             "(missing %s, unknown %s)" % (names, missing, extra))
            states = [states[n] for n in names]
        req = pb.SaveRequest(saver=saver, keys=keys, segment=[int(s) for s in segs],
                             states=[to_tensor(s) for s in states])
        if final is not None:
            req.final.extend(bool(f) for f in np.broadcast_to(np.asarray(final, dtype=bool),
                                                              (len(keys),)))
        return list(self.call("save", req).already_applied)

    def drop(self, saver, keys=None, all=False):
        """Drop keys of saver, or the whole saver with all=True; returns the
        number dropped."""
        r = self.call("drop", pb.DropRequest(saver=saver, keys=[_key(k) for k in keys or []],
                                             all=all))
        if all:
            self._schemas.pop(saver, None)
        return r.dropped

    def list(self, saver="", prefix=b"", start_after=b"", limit=0):
        """One page: savers (saver empty) or saver's sequences."""
        r = self.call("list", pb.ListRequest(saver=saver, prefix=_key(prefix) if prefix else b"",
                                             start_after=_key(start_after) if start_after else b"",
                                             limit=limit))
        return ListResult(
            [SaverInfo(s.name, [_spec_out(x) for x in s.states], s.idle_ttl_ms,
                       s.keep_final, s.sequences, s.max_in_flight) for s in r.savers],
            [SequenceInfo(s.key, s.next_segment, s.updated_ms) for s in r.sequences],
            r.more)

    def savers(self):
        """Every saver (all pages)."""
        out, after = [], b""
        while True:
            page = self.list("", start_after=after)
            out += page.savers
            if not page.more or not page.savers:
                return out
            after = page.savers[-1].name.encode()

    def sequences(self, saver, prefix=b"", page_size=0):
        """Iterate over every sequence of saver (all pages)."""
        after = b""
        while True:
            page = self.list(saver, prefix=prefix, start_after=after, limit=page_size)
            yield from page.sequences
            if not page.more or not page.sequences:
                return
            after = page.sequences[-1].key

    def stats(self, saver=""):
        """Server (or saver) counters as a dict of field name -> int."""
        r = self.call("stats", pb.StatsRequest(saver=saver))
        return {f.name: getattr(r, f.name) for f in r.DESCRIPTOR.fields}

    # ---- job API --------------------------------------------------------

    def submit_request(self, saver, key, segment, inputs=None, length=None, last=False,
                       sequences=None, context=None, total_length=0, sequence_count=0,
                       initial_states=None):
        """The SubmitRequest of one segment (see submit)."""
        req = pb.SubmitRequest(saver=saver, key=_key(key), segment=segment, last=last,
                               total_length=total_length, sequence_count=sequence_count)
        T = None
        if inputs is not None:
            inputs = np.asarray(inputs)
            if inputs.ndim == 1 and inputs.dtype.kind in "iu":
                inputs = inputs.astype(np.int64 if inputs.dtype.itemsize > 4 else np.int32)
            else:
                inputs = np.asarray(inputs, dtype=np.float32)
                if inputs.ndim != 2:
                    raise errors.InvalidArgument("inputs must be float32 [T, input_size] or "
                                                 "int32/int64 [T], got shape %s"
                                                 % (inputs.shape,))
            req.inputs.CopyFrom(to_tensor(inputs))
            T = inputs.shape[0]
        for name, a in (sequences or {}).items():
            a = np.asarray(a)
            req.sequences[name].CopyFrom(to_tensor(a))
            if T is None and a.ndim >= 1:
                T = a.shape[0]
        for name, a in (context or {}).items():
            req.context[name].CopyFrom(to_tensor(a))
        for name, a in (initial_states or {}).items():
            req.initial_states[name].CopyFrom(to_tensor(a))
        req.length = (T or 0) if length is None else length
        return req

    def submit(self, saver, key, segment, inputs=None, length=None, last=False, **training):
        """Queue one segment: inputs float32 [T, input_size] or int32/int64
        [T] (token ids), the first `length` rows real (default T). Training
        keywords (docs/training.md): sequences (dict name -> [T, ...]),
        context (dict name -> array, per sequence), total_length,
        sequence_count, initial_states (dict state name -> array, segment 0).
        Returns True if it was already queued."""
        r = self.call("submit", self.submit_request(saver, key, segment, inputs, length, last,
                                                    **training))
        return r.already_queued

    def submit_sequence(self, saver, key, inputs, num_unroll, start_segment=0, last=True):
        """Split a whole sequence into segments of num_unroll steps (the last
        padded with zeros, like SQSS pad=True) and submit them: inputs is
        float32 [T, input_size], or integer token ids [T] for a model with an
        embedding (int32/int64 kept; other integer types widened). Returns
        the number of segments."""
        inputs = np.asarray(inputs)
        ids = inputs.ndim == 1 and np.issubdtype(inputs.dtype, np.integer)
        if ids:
            inputs = inputs.astype(np.int64 if inputs.dtype.itemsize > 4 else np.int32)
        else:
            inputs = inputs.astype(np.float32)
        if (inputs.ndim != 2 and not ids) or num_unroll < 1:
            raise errors.InvalidArgument("inputs must be float32 [T, input_size] or integer "
                                         "token ids [T], and num_unroll >= 1")
        n = max(1, -(-inputs.shape[0] // num_unroll))
        for s in range(n):
            chunk = inputs[s * num_unroll:(s + 1) * num_unroll]
            length = chunk.shape[0]
            if length < num_unroll:
                chunk = np.concatenate(
                    [chunk, np.zeros((num_unroll - length,) + inputs.shape[1:], inputs.dtype)])
            self.submit(saver, key, start_segment + s, chunk, length=length,
                        last=last and s == n - 1)
        return n

    def await_segment(self, saver, key, segment, wait_ms=10000, collect=False,
                      without_tensors=False):
        """Outputs of one submitted segment, waiting up to wait_ms. Returns a
        SegmentResult (state may still be QUEUED/LEASED if time ran out).
        without_tensors: the reply has no outputs or final states (None and
        {}), e.g. to collect a segment whose outputs are stored already."""
        r = self.call("await_segment", pb.AwaitRequest(saver=saver, key=_key(key),
                                                       segment=segment, wait_ms=wait_ms,
                                                       collect=collect,
                                                       without_tensors=without_tensors),
                      wait_ms=wait_ms)
        state = pb.SegmentState.Name(r.state)[4:] if r.state in pb.SegmentState.values() else "UNKNOWN"
        outputs = from_tensor(r.outputs) if r.HasField("outputs") else None
        finals = collections.OrderedDict(
            (n, from_tensor(t)) for n, t in zip(r.names, r.final_states))
        return SegmentResult(state, outputs, r.length, r.last, finals, r.reason, r.attempts)

    def collect_segment(self, saver, key, segment):
        """Retire a done or failed segment whose outputs the caller already
        holds (from await_segment with collect=False): the server deletes
        them without sending them again. Returns the SegmentResult (no
        tensors); raises NotFound if it was collected already, DeadlineExceeded
        if it is not done yet."""
        return self.await_segment(saver, key, segment, wait_ms=0, collect=True,
                                  without_tensors=True)

    def await_sequence(self, saver, key, n_segments, start_segment=0, timeout=60.0,
                       collect=True):
        """Wait for segments start..start+n-1 and return (outputs [T_real,
        output_size] concatenated without padding, final_states dict of the
        last segment). Raises SegmentFailed or DeadlineExceeded."""
        import time
        deadline = time.monotonic() + timeout
        outs, finals = [], {}
        for s in range(start_segment, start_segment + n_segments):
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise errors.DeadlineExceeded("segment %d of %r not done within %.1f s"
                                                  % (s, key, timeout))
                try:
                    r = self.await_segment(saver, key, s, wait_ms=int(min(left, 5.0) * 1000),
                                           collect=collect)
                except errors.DeadlineExceeded:
                    continue
                if r.state == "FAILED":
                    raise errors.SegmentFailed("segment %d of %r failed after %d attempts: %s"
                                               % (s, key, r.attempts, r.reason))
                if r.state == "DONE":
                    break
            outs.append(r.outputs[:r.length])
            finals = r.final_states
        return np.concatenate(outs), finals

    def lease(self, saver, max_batch=1, wait_ms=0, lease_ms=0, worker="statesaver-python",
              min_batch=0, max_delay_ms=0):
        """Lease up to max_batch ready segments (for workers and trainers
        written in Python). min_batch/max_delay_ms: wait up to max_delay_ms
        for at least min_batch ready segments, then take what is ready."""
        wait = max(wait_ms, max_delay_ms)
        r = self.call("lease", pb.LeaseRequest(saver=saver, max_batch=max_batch, wait_ms=wait_ms,
                                               lease_ms=lease_ms, worker=worker,
                                               min_batch=min_batch, max_delay_ms=max_delay_ms),
                      wait_ms=wait)
        items = [LeasedSegment(i.key, i.segment, i.length, i.last,
                               from_tensor(i.inputs) if i.HasField("inputs") else None,
                               collections.OrderedDict((n, from_tensor(t))
                                                       for n, t in zip(r.names, i.states)),
                               i.attempts,
                               {k: from_tensor(v) for k, v in i.sequences.items()},
                               {k: from_tensor(v) for k, v in i.context.items()},
                               i.total_length, i.sequence_count) for i in r.items]
        return Lease(r.lease_id, r.deadline_ms, list(r.names), items)

    def lease_client(self, lease_id):
        """(the client to complete lease_id at, the id to send): this one.
        ClusterClient answers with the shard the lease came from."""
        return self, lease_id

    def complete(self, saver, lease_id, items):
        """Complete a lease: items are dicts with key, segment and either
        states (list in schema order or dict) with optional outputs, or
        error. A trainer sends states only."""
        req = pb.CompleteRequest(saver=saver, lease_id=lease_id)
        for it in items:
            c = req.items.add(key=_key(it["key"]), segment=it["segment"], error=it.get("error", ""))
            if it.get("outputs") is not None:
                c.outputs.CopyFrom(to_tensor(np.asarray(it["outputs"], np.float32)))
            st = it.get("states") or []
            if isinstance(st, dict):
                st = [st[n] for n in self.schema(saver)]
            c.states.extend(to_tensor(np.asarray(s, np.float32)) for s in st)
        return list(self.call("complete", req).already_applied)

    def cancel(self, saver, keys):
        """Cancel sequences: their queued and leased segments, stored outputs,
        context and state go in one transaction. Returns CancelResult(
        cancelled keys, job records removed)."""
        r = self.call("cancel", pb.CancelRequest(saver=saver, keys=[_key(k) for k in keys]))
        return CancelResult(r.cancelled, r.segments)
