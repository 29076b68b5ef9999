"""cluster -- ClusterClient: the statesaver Client API over a sharded cluster.

    from statesaver.cluster import ClusterClient
    cc = ClusterClient(["10.0.0.1:7450", "10.0.0.2:7450"])   # any shards
    cc.fetch("lm", [b"a", b"b"])          # split by shard, merged in key order

A key belongs to hash slot CRC16(key) mod 16384 (with Redis Cluster's
{tag} rule: "{user7}.c" and "{user7}.h" share a slot); each slot is owned
by one shard. ClusterClient learns the topology with a Topology request
from any seed, keeps one statesaver.Client per shard (connected on first
use), and:

  * routes keyed calls (fetch, save, drop of keys, submit, await_segment,
    collect_segment, ...) to the owner; batched fetch/save/drop are split
    by shard and the replies merged in the callers' key order. A batched
    save is one transaction per shard (keys of one {tag} are atomic
    together); when one shard's part fails, the other parts may have been
    applied, and repeating the whole call is safe (they report
    already_applied);
  * fans declare, drop(all=True) and stats out to every shard; list,
    savers and sequences merge the shards' rows (sequences in key order);
  * on MOVED (the slot moved) refreshes the topology and retries, at most
    max_redirects times per call, then raises RedirectLoop; on UNAVAILABLE
    (a slot frozen by a move in progress) retries with backoff for up to
    unavailable_retry seconds;
  * lease() leases from the shards in turn; the lease id it returns is
    (shard id, lease id), which complete() routes back to that shard.

A server without a cluster (or older than Topology) is a cluster of one
shard at the seed's address, so ClusterClient also works against it.
Thread safety: as Client (one call at a time; one ClusterClient per thread).
"""
import collections
import time

import numpy as np

from . import errors
from ._pb import pb
from .client import (DEFAULT_TIMEOUT, Client, FetchResult, Lease, ListResult,
                     SaverInfo, _key)

SLOT_COUNT = 16384
MOVED = 32                       # Code.MOVED
REDIRECTS_DEFAULT = 8            # redirects one call follows (then RedirectLoop)
UNAVAILABLE_RETRY_DEFAULT = 30.0  # seconds a call retries a frozen slot
BACKOFF_MIN, BACKOFF_MAX = 0.01, 0.5   # seconds between UNAVAILABLE retries
REDIRECT_PAUSE = 0.025           # before the 2nd and later redirect (doubling)

Topology = collections.namedtuple("Topology", "cluster epoch shards owner source")
Topology.__doc__ = ("shards: OrderedDict id -> primary address; owner: list of "
                    "SLOT_COUNT shard ids; source: 'none', 'file' or 'etcd'")


class RedirectLoop(errors.StatesaverError):
    """More redirects in one call than max_redirects: the shards disagree."""
    code, code_value = "MOVED", MOVED


def _crc16_table():
    t = []
    for i in range(256):
        c = i << 8
        for _ in range(8):
            c = ((c << 1) ^ 0x1021) if c & 0x8000 else (c << 1)
        t.append(c & 0xFFFF)
    return t


_CRC16 = _crc16_table()


def crc16(data):
    """CRC16-CCITT (XMODEM), the Redis Cluster key hash: b"123456789" -> 0x31C3."""
    c = 0
    for b in data:
        c = ((c << 8) & 0xFFFF) ^ _CRC16[((c >> 8) ^ b) & 0xFF]
    return c


def key_slot(key):
    """The hash slot of a key (bytes or str), honouring {tag}."""
    k = _key(key)
    s = k.find(b"{")
    if s >= 0:
        e = k.find(b"}", s + 1)
        if e > s + 1:
            k = k[s + 1:e]
    return crc16(k) % SLOT_COUNT


def _is_moved(e):
    return isinstance(e, errors.StatesaverError) and e.code_value == MOVED


def _is_unavailable(e):
    return isinstance(e, errors.Unavailable) and not isinstance(e, errors.ProtocolError)


def topology_from_pb(t, seed):
    """A Topology from a TopologyResponse; a server without a cluster is
    one shard at `seed` (it may not know the address it is reached at)."""
    shards = collections.OrderedDict((s.id, s.primary) for s in t.shards)
    if not shards or not t.ranges:
        raise errors.ProtocolError("topology from %s has no shards or slots" % seed)
    if t.source == "none" and len(shards) == 1:
        shards = collections.OrderedDict([(next(iter(shards)), seed)])
    owner = [None] * SLOT_COUNT
    for r in t.ranges:
        if r.shard not in shards or r.last >= SLOT_COUNT or r.first > r.last:
            raise errors.ProtocolError("topology from %s: bad range %d-%d -> %r"
                                       % (seed, r.first, r.last, r.shard))
        owner[r.first:r.last + 1] = [r.shard] * (r.last - r.first + 1)
    if None in owner:
        raise errors.ProtocolError("topology from %s leaves slot %d unowned"
                                   % (seed, owner.index(None)))
    return Topology(t.cluster, t.epoch, shards, owner, t.source)


class ClusterClient:
    """The Client API over every shard of a cluster (see the module doc).

    ClusterClient(seeds, timeout=30.0, token=None, max_redirects=8,
    unavailable_retry=30.0): seeds is an address or a list of addresses
    ("host:port") of any shards.
    """

    def __init__(self, seeds, timeout=DEFAULT_TIMEOUT, token=None,
                 max_redirects=REDIRECTS_DEFAULT,
                 unavailable_retry=UNAVAILABLE_RETRY_DEFAULT,
                 client_name="statesaver-python-cluster"):
        self.seeds = [seeds] if isinstance(seeds, str) else list(seeds)
        if not self.seeds:
            raise errors.InvalidArgument("no cluster address given")
        self.timeout, self.token, self.client_name = timeout, token, client_name
        self.max_redirects = int(max_redirects)
        self.unavailable_retry = float(unavailable_retry)
        self.redirects = 0          # redirects followed since the client was made
        self.topology = None
        self._clients = {}          # address -> Client
        self._lease_rr = 0          # next shard to lease from
        self.refresh()

    # ---- topology and connections ------------------------------------------

    def close(self):
        for c in self._clients.values():
            c.close()
        self._clients = {}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _conn(self, addr):
        c = self._clients.get(addr)
        if c is not None and c._sock is None:  # closed after a transport error
            self._clients.pop(addr, None)
            c = None
        if c is None:
            c = Client(addr, timeout=self.timeout, token=self.token,
                       client_name=self.client_name)
            self._clients[addr] = c
        return c

    def client(self, shard):
        """The Client of a shard id (connected now if needed)."""
        return self._conn(self.topology.shards[shard])

    def _ask(self, addr):
        try:
            t = self._conn(addr).call("topology", pb.TopologyRequest())
        except (errors.Unimplemented, errors.InvalidArgument):
            # A server older than the cluster: one shard owning everything.
            return Topology("", 0, collections.OrderedDict([("single", addr)]),
                            ["single"] * SLOT_COUNT, "none")
        return topology_from_pb(t, addr)

    def refresh(self, prefer=None):
        """Fetch the topology again (from prefer, the shards, then the seeds);
        an older epoch than the one held is ignored. Returns the topology."""
        addrs = ([prefer] if prefer else []) + \
            (list(self.topology.shards.values()) if self.topology else []) + self.seeds
        last = None
        for a in dict.fromkeys(addrs):
            try:
                t = self._ask(a)
            except (errors.StatesaverError, OSError) as e:
                last = e
                continue
            if self.topology is None or t.epoch >= self.topology.epoch:
                self.topology = t
                live = set(t.shards.values())
                for addr in [x for x in self._clients if x not in live]:
                    self._clients.pop(addr).close()
            return self.topology
        raise errors.Unavailable("no shard of the cluster answered a Topology request "
                                 "(last error: %s)" % last)

    def moving(self):
        """True when some shard has frozen slots (a move in progress): only
        then is UNAVAILABLE retried (it also reports a failed log)."""
        for s in self.topology.shards:
            try:
                if self.topology_of(s).frozen:
                    return True
            except (errors.StatesaverError, OSError):
                continue
        return False

    def shard_of(self, key):
        return self.topology.owner[key_slot(key)]

    def _retry(self, fn):
        """Run fn() under the redirect and frozen-slot rules."""
        moved, start, pause = 0, time.monotonic(), BACKOFF_MIN
        while True:
            try:
                return fn()
            except errors.StatesaverError as e:
                if _is_moved(e):
                    if moved >= self.max_redirects:
                        raise RedirectLoop(
                            "redirect loop: %d redirects in one call (topology epoch %d); "
                            "the shards disagree about the topology: %s"
                            % (moved + 1, self.topology.epoch, e.message)) from None
                    if moved:
                        time.sleep(min(REDIRECT_PAUSE * (2 ** (moved - 1)), 2 * BACKOFF_MAX))
                    moved += 1
                    self.redirects += 1
                    self.refresh()
                    continue
                if _is_unavailable(e) and time.monotonic() - start < self.unavailable_retry \
                        and self.moving():
                    time.sleep(pause)
                    pause = min(pause * 2, BACKOFF_MAX)
                    try:
                        self.refresh()
                    except errors.StatesaverError:
                        pass
                    continue
                raise

    def _split(self, keys):
        """OrderedDict shard -> list of key indices, in key order."""
        parts = collections.OrderedDict()
        for i, k in enumerate(keys):
            parts.setdefault(self.shard_of(k), []).append(i)
        return parts

    # ---- fan-out calls ------------------------------------------------------

    def ping(self, payload=b""):
        """Ping every shard; returns {shard: server clock (ms)}."""
        return {s: self.client(s).ping(payload) for s in self.topology.shards}

    def declare(self, saver, states, idle_ttl_ms=0, keep_final=False, max_in_flight=0):
        """Declare on every shard (savers exist everywhere); created is True
        when any shard created it. max_in_flight is per shard (each shard
        caps the sequences it has leased)."""
        out = None
        for s in self.topology.shards:
            r = self.client(s).declare(saver, states, idle_ttl_ms, keep_final, max_in_flight)
            out = r if out is None or r.created else out
        return out

    def stats(self, saver="", per_shard=False):
        """Counters summed over the shards (uptime, savers and log positions:
        the largest). per_shard=True returns (total, {shard: counters})."""
        each = {s: self.client(s).stats(saver) for s in self.topology.shards}
        total = {}
        for st in each.values():
            for k, v in st.items():
                if isinstance(v, bool) or not isinstance(v, int):
                    continue
                if k in ("uptime_ms", "savers", "applied_lsn", "checkpoint_lsn",
                         "wal_failed", "topology_epoch"):
                    total[k] = max(total.get(k, 0), v)
                else:
                    total[k] = total.get(k, 0) + v
        return (total, each) if per_shard else total

    def drop(self, saver, keys=None, all=False):
        if all:
            return sum(self.client(s).drop(saver, all=True) for s in self.topology.shards)
        keys = [_key(k) for k in keys or []]
        todo = set(range(len(keys)))
        total = [0]

        def attempt():
            pending = sorted(todo)
            for shard, idx in self._split([keys[i] for i in pending]).items():
                mine = [pending[j] for j in idx]
                total[0] += self.client(shard).drop(saver, [keys[i] for i in mine])
                todo.difference_update(mine)
        self._retry(attempt)
        return total[0]

    # ---- keyed calls --------------------------------------------------------

    def fetch(self, saver, keys, min_segment=0, wait_ms=0):
        keys = [_key(k) for k in keys]

        def attempt():
            parts = self._split(keys)
            if len(parts) == 1:
                shard = next(iter(parts))
                return self.client(shard).fetch(saver, keys, min_segment, wait_ms)
            got = {s: self.client(s).fetch(saver, [keys[i] for i in idx], min_segment, wait_ms)
                   for s, idx in parts.items()}
            first = next(iter(got.values()))
            states = collections.OrderedDict()
            for name, arr in first.states.items():
                out = np.empty((len(keys),) + arr.shape[1:], dtype=arr.dtype)
                for s, idx in parts.items():
                    out[idx] = got[s].states[name]
                states[name] = out
            nseg = np.zeros(len(keys), dtype=np.uint64)
            upd = np.zeros(len(keys), dtype=np.uint64)
            for s, idx in parts.items():
                nseg[idx] = got[s].next_segment
                if len(got[s].updated_ms):
                    upd[idx] = got[s].updated_ms
            return FetchResult(states, nseg, upd)
        return self._retry(attempt)

    def schema(self, saver):
        return self.client(next(iter(self.topology.shards))).schema(saver)

    def save(self, saver, keys, segments, states, final=None):
        keys = [_key(k) for k in keys]
        n = len(keys)
        segs = np.broadcast_to(np.asarray(segments, dtype=np.uint64), (n,))
        fin = None if final is None else np.broadcast_to(np.asarray(final, dtype=bool), (n,))
        if isinstance(states, dict):
            names = self.schema(saver)
            missing = [x for x in names if x not in states]
            extra = [x for x in states if x not in names]
            if missing or extra:
                raise errors.InvalidArgument("states must name exactly the schema %s "
                                             "(missing %s, unknown %s)" % (names, missing, extra))
            states = [states[x] for x in names]
        states = [np.asarray(s) for s in states]
        applied = [False] * n
        todo = set(range(n))

        def attempt():
            pending = sorted(todo)
            for shard, idx in self._split([keys[i] for i in pending]).items():
                mine = [pending[j] for j in idx]
                got = self.client(shard).save(
                    saver, [keys[i] for i in mine], segs[mine], [s[mine] for s in states],
                    None if fin is None else fin[mine])
                for j, i in enumerate(mine):
                    applied[i] = bool(got[j]) if j < len(got) else False
                todo.difference_update(mine)
        self._retry(attempt)
        return applied

    def list(self, saver="", prefix=b"", start_after=b"", limit=0):
        """One merged page over every shard: at most limit rows (the server
        default when 0), sequences in key order; more when any shard has more."""
        pages = {s: self.client(s).list(saver, prefix, start_after, limit)
                 for s in self.topology.shards}
        cap = limit or 1000
        seqs = sorted((q for p in pages.values() for q in p.sequences), key=lambda q: q.key)
        more = any(p.more for p in pages.values()) or len(seqs) > cap
        savers = collections.OrderedDict()
        for p in pages.values():
            for sv in p.savers:
                if sv.name in savers:
                    savers[sv.name] = savers[sv.name]._replace(
                        sequences=savers[sv.name].sequences + sv.sequences)
                else:
                    savers[sv.name] = sv
        return ListResult(list(savers.values()), seqs[:cap], more)

    def savers(self):
        out = collections.OrderedDict()
        for s in self.topology.shards:
            for sv in self.client(s).savers():
                prev = out.get(sv.name)
                out[sv.name] = sv if prev is None else SaverInfo(
                    sv.name, sv.states, sv.idle_ttl_ms, sv.keep_final,
                    prev.sequences + sv.sequences, sv.max_in_flight)
        return list(out.values())

    def sequences(self, saver, prefix=b"", page_size=0):
        """Every sequence of saver over all shards, in key order."""
        per = [list(self.client(s).sequences(saver, prefix, page_size))
               for s in self.topology.shards]
        yield from sorted((q for p in per for q in p), key=lambda q: q.key)

    # ---- job API ------------------------------------------------------------

    def submit(self, saver, key, segment, inputs=None, length=None, last=False, **kw):
        """Client.submit at the key's owner (further keywords passed on)."""
        return self._retry(lambda: self.client(self.shard_of(key)).submit(
            saver, key, segment, inputs, length, last, **kw))

    def cancel(self, saver, keys):
        """Client.cancel split by shard; the shards' results (namedtuples of
        counts) summed field by field."""
        keys = [_key(k) for k in keys]
        parts = []

        def attempt():
            del parts[:]
            for shard, idx in self._split(keys).items():
                parts.append(self.client(shard).cancel(saver, [keys[i] for i in idx]))
        self._retry(attempt)
        if not parts:
            return None
        return type(parts[0])(*[sum(p[i] for p in parts) for i in range(len(parts[0]))])

    # Client's: it splits (float32 [T, I] or token ids [T]) and calls
    # self.submit, which routes each segment to the key's owner.
    submit_sequence = Client.submit_sequence

    def await_segment(self, saver, key, segment, wait_ms=10000, collect=False,
                      without_tensors=False):
        return self._retry(lambda: self.client(self.shard_of(key)).await_segment(
            saver, key, segment, wait_ms, collect, without_tensors))

    def collect_segment(self, saver, key, segment):
        return self._retry(lambda: self.client(self.shard_of(key)).collect_segment(
            saver, key, segment))

    # The whole-sequence wait is the single-server one: it only calls
    # self.await_segment, which routes here.
    await_sequence = Client.await_sequence

    def lease(self, saver, max_batch=1, wait_ms=0, lease_ms=0, worker="statesaver-python",
              **kw):
        """Lease from the shards in turn: the first shard with ready segments
        answers (only the last one asked may park up to wait_ms). The lease
        id is (shard id, lease id). Batch formation (min_batch,
        max_delay_ms) is asked of the first shard of the turn only, the
        others hand out what is ready, so one call waits at most one delay
        (the turn rotates, so every shard gets to form batches)."""
        shards = list(self.topology.shards)
        for i in range(len(shards)):
            shard = shards[(self._lease_rr + i) % len(shards)]
            last = i == len(shards) - 1
            kws = dict(kw)
            if i > 0:
                kws.pop("min_batch", None)
                kws.pop("max_delay_ms", None)
            got = self.client(shard).lease(saver, max_batch, wait_ms if last else 0,
                                           lease_ms, worker, **kws)
            if got.items or last:
                self._lease_rr = (self._lease_rr + i + 1) % len(shards)
                return Lease((shard, got.lease_id), got.deadline_ms, got.names, got.items)

    def complete(self, saver, lease_id, items):
        """Complete a lease from lease() at the shard it came from (the
        segments' owner); lease_id is the (shard id, lease id) pair."""
        shard, lid = lease_id
        return self.client(shard).complete(saver, lid, items)

    def lease_client(self, lease_id):
        """(the shard's Client, its lease id) for a lease id from lease():
        the Complete of a lease goes to the shard it came from."""
        shard, lid = lease_id
        return self.client(shard), lid

    # ---- raw keyed requests (statesaver.training builds its own) -------------

    submit_request = Client.submit_request  # builds a message; no connection used

    def call_many(self, field, msgs, wait_ms=0, raise_first=True):
        """Client.call_many for requests that carry one `key` (submit,
        await_segment, ...): each sent to its key's owner, pipelined per
        shard; replies in the order of msgs. A MOVED reply refreshes the
        topology and that request goes again to the new owner, at most
        max_redirects passes (then RedirectLoop in its place); an
        UNAVAILABLE one while slots are frozen is retried as in every other
        call. With raise_first the first failure is raised after all
        replies are in, else the list holds the exceptions in their places."""
        for m in msgs:
            if not hasattr(m, "key") or not isinstance(getattr(m, "key"), bytes):
                raise errors.InvalidArgument("%s requests have no key to route by; use the "
                                             "shard's client (ClusterClient.client)" % field)
        out = [None] * len(msgs)
        pending = list(range(len(msgs)))
        moved, start, pause = 0, time.monotonic(), BACKOFF_MIN
        while pending:
            parts = collections.OrderedDict()
            for i in pending:
                parts.setdefault(self.shard_of(msgs[i].key), []).append(i)
            again, frozen = [], []
            for shard, idx in parts.items():
                res = self.client(shard).call_many(field, [msgs[i] for i in idx], wait_ms,
                                                   raise_first=False)
                for i, r in zip(idx, res):
                    out[i] = r
                    if isinstance(r, errors.StatesaverError) and _is_moved(r):
                        again.append(i)
                    elif isinstance(r, errors.StatesaverError) and _is_unavailable(r):
                        frozen.append(i)
            if frozen and time.monotonic() - start < self.unavailable_retry and \
                    self.moving():
                again += frozen
                time.sleep(pause)
                pause = min(pause * 2, BACKOFF_MAX)
            if again and moved >= self.max_redirects:
                for i in again:
                    if _is_moved(out[i]):
                        out[i] = RedirectLoop(
                            "redirect loop: %d redirects in one call (topology epoch %d); "
                            "the shards disagree about the topology: %s"
                            % (moved + 1, self.topology.epoch, out[i].message))
                break
            if again:
                if any(_is_moved(out[i]) for i in again):
                    moved += 1
                    self.redirects += 1
                try:
                    self.refresh()
                except errors.StatesaverError:
                    pass
            pending = sorted(again)
        if raise_first:
            for r in out:
                if isinstance(r, Exception):
                    raise r
        return out

    def topology_of(self, shard):
        """What one shard says (its TopologyResponse: epoch, frozen, stale)."""
        return self.client(shard).call("topology", pb.TopologyRequest())
