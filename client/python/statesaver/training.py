"""training -- the networked SequenceQueueingStateSaver for trainers.

TensorFlow's batch_sequences_with_states cut long sequences into segments
of num_unroll steps and handed a training step a batch of segments from
different sequences with each one's saved state (NextQueuedSequenceBatch);
the step saved the new states back and the next segment of each sequence
followed in a later batch. Here the queue and the states live in
statesaver-server, so any number of trainer processes (torch.distributed
for the gradients) share it, and a dead trainer's segments go to another
one when its lease expires:

    keys = submit_sequences(client, "lm", keys, {"tokens": toks, "targets": tgts},
                            num_unroll=64)
    batcher = SequenceBatcher(client, "lm", batch_size=32, framework="torch")
    for batch in batcher:                       # until the queue is drained
        h0, c0 = torch_lstm_state(batch, num_layers=2)
        out, (h1, c1) = lstm(embed(batch.sequences["tokens"]), (h0, c0))
        ... loss, backward, step ...
        save_torch_lstm_state(batch, (h1, c1))  # the last save commits

Field by field against TensorFlow: docs/training.md.
"""
import random
import time

import numpy as np

from . import errors
from ._pb import pb
from .client import _key, from_tensor, to_tensor

STOP = b"STOP:"


def segment_key(segment, count, key):
    """TensorFlow's per-segment key: "%05d_of_%05d:%s" % (segment, count, key)."""
    return b"%05d_of_%05d:" % (segment, count) + _key(key)


def next_segment_key(segment, count, key, last=False):
    """The key of the segment after `segment`, or b"STOP:" + key after the
    last one (TensorFlow's NextQueuedSequenceBatch.next_key). count 0 (not
    told) falls back on the last flag."""
    if (count and segment + 1 >= count) or (not count and last):
        return STOP + _key(key)
    return segment_key(segment + 1, count, key)


def segment_lengths(total_length, num_unroll):
    """Real steps of each segment: max(0, min(num_unroll, total - s*num_unroll))
    for s < max(1, ceil(total / num_unroll))."""
    count = max(1, -(-int(total_length) // num_unroll))
    return [max(0, min(num_unroll, int(total_length) - s * num_unroll)) for s in range(count)]


def _per_example(value, n, what):
    """A dict of per-example values: a list/tuple of n arrays, or an array
    whose first axis is the example."""
    if isinstance(value, (list, tuple)):
        if len(value) != n:
            raise errors.InvalidArgument("%s: %d values for %d keys" % (what, len(value), n))
        return [np.asarray(v) for v in value]
    a = np.asarray(value)
    if a.ndim < 1 or a.shape[0] != n:
        raise errors.InvalidArgument("%s: first dimension %s for %d keys"
                                     % (what, a.shape[:1], n))
    return [a[i] for i in range(n)]


def unique_keys(keys, seed=None):
    """keys with a random suffix ":%016x" (batch_sequences_with_states'
    make_keys_unique), so the same example can be queued more than once."""
    rng = random.Random(seed)
    return [_key(k) + b":%016x" % rng.getrandbits(64) for k in keys]


def submit_sequences(client, saver, keys, sequences, context=None, num_unroll=None,
                     initial_states=None, make_keys_unique=False, make_keys_unique_seed=None,
                     pad=True, context_every_segment=False, pipeline=64, full_retry_s=60.0):
    """Queue whole sequences for training (batch_sequences_with_states'
    producer side). Returns the keys used (with the unique suffix when
    make_keys_unique).

    keys: one key per example. sequences: dict name -> per-example arrays
    [T_i, ...] (a list, or an array [B, T, ...]); every name of an example
    has the same T_i. The name "inputs" goes into Submit's inputs field
    (float32 [T, input_size] or int32/int64 [T] token ids, what a C worker
    reads); the others are named sequences of any of float32, float64,
    int32, int64. context: dict name -> per-example arrays without a time
    axis (stored once per sequence, sent with segment 0 unless
    context_every_segment). initial_states: dict state name -> per-example
    arrays of the saver's per-sequence shape (the state at segment 0).

    Each sequence is cut into max(1, ceil(T_i / num_unroll)) segments of
    num_unroll steps; the last one is padded with zeros (pad=True, as
    SQSS); with pad=False every T_i must be a multiple of num_unroll.
    Segments carry length (real steps), total_length = T_i and
    sequence_count. Requests are pipelined `pipeline` at a time; a full
    queue (RESOURCE_EXHAUSTED) is retried for up to full_retry_s seconds.
    """
    if not num_unroll or num_unroll < 1:
        raise errors.InvalidArgument("num_unroll must be >= 1")
    keys = [_key(k) for k in keys]
    n = len(keys)
    if make_keys_unique:
        keys = unique_keys(keys, make_keys_unique_seed)
    if not sequences:
        raise errors.InvalidArgument("sequences: at least one named sequence")
    seqs = {name: _per_example(v, n, "sequences." + name) for name, v in sequences.items()}
    ctx = {name: _per_example(v, n, "context." + name) for name, v in (context or {}).items()}
    init = {name: _per_example(v, n, "initial_states." + name)
            for name, v in (initial_states or {}).items()}
    reqs = []
    for i, key in enumerate(keys):
        lengths = {name: (a[i].shape[0] if a[i].ndim >= 1 else None) for name, a in seqs.items()}
        if None in lengths.values() or len(set(lengths.values())) != 1:
            raise errors.InvalidArgument("key %r: every sequence needs the same leading "
                                         "(time) dimension, got %s" % (key, lengths))
        total = next(iter(lengths.values()))
        if not pad and total % num_unroll:
            raise errors.InvalidArgument("key %r: length %d is not a multiple of num_unroll "
                                         "%d (pad=False)" % (key, total, num_unroll))
        seg_len = segment_lengths(total, num_unroll)
        count = len(seg_len)
        for s, length in enumerate(seg_len):
            named = {}
            for name, a in seqs.items():
                chunk = a[i][s * num_unroll:s * num_unroll + length]
                if length < num_unroll:
                    padded = np.zeros((num_unroll,) + a[i].shape[1:], dtype=a[i].dtype)
                    padded[:length] = chunk
                    chunk = padded
                named[name] = chunk
            inputs = named.pop("inputs", None)
            reqs.append(client.submit_request(
                saver, key, s, inputs=inputs, length=length, last=s == count - 1,
                sequences=named,
                context={k: v[i] for k, v in ctx.items()} if (s == 0 or context_every_segment)
                else None,
                total_length=total, sequence_count=count,
                initial_states={k: v[i] for k, v in init.items()} if s == 0 else None))
    deadline = time.monotonic() + full_retry_s
    pending, delay = reqs, 0.01
    while pending:
        retry = []
        for at in range(0, len(pending), max(1, pipeline)):
            chunk = pending[at:at + max(1, pipeline)]
            res = client.call_many("submit", chunk, raise_first=False)
            for req, r in zip(chunk, res):
                if isinstance(r, errors.ResourceExhausted):
                    retry.append(req)
                elif isinstance(r, Exception):
                    raise r
        if retry and time.monotonic() > deadline:
            raise errors.ResourceExhausted("job queue still full after %.0f s (%d segments "
                                           "not queued)" % (full_retry_s, len(retry)))
        if retry:
            time.sleep(delay)
            delay = min(delay * 2, 1.0)
        pending = retry
    return keys


# ---- the trainer side -------------------------------------------------------


def _torch():
    import torch  # optional dependency: only framework="torch" needs it
    return torch


class Batch:
    """One batch of leased segments (NextQueuedSequenceBatch).

    Fields (B = len(batch), in the order the server handed them out:
    oldest sequence first):
      keys            the sequences' keys (bytes)
      key             b"%05d_of_%05d:%s" % (sequence, sequence_count, key)
      next_key        the next segment's key, or b"STOP:" + key after the last
      sequences       dict name -> [B, num_unroll, ...] (padded; "inputs" too)
      context         dict name -> [B, ...], the same for every segment
      length          [B] real steps of each segment
      total_length    [B] whole sequence lengths
      sequence        [B] segment index of each entry (0-based)
      sequence_count  [B] segments of each sequence
      attempts        [B] earlier failed or expired attempts of the segment
    state(name) -> [B, ...]; save_state(name, value) buffers; once every
    state of the saver has a value the batch is completed (one Complete with
    the states, no outputs) unless auto_complete=False, then complete().
    Arrays are numpy, or torch tensors with framework="torch".
    """

    def __init__(self, batcher, lease):
        self._b = batcher
        self.lease_id = lease.lease_id
        self.deadline_ms = lease.deadline_ms
        self.state_names = list(lease.names)
        self._items = lease.items
        items = lease.items
        conv = batcher._to_framework
        self.keys = [bytes(it.key) for it in items]
        self.sequence = np.array([it.segment for it in items], dtype=np.int64)
        self.sequence_count = np.array([it.sequence_count for it in items], dtype=np.int64)
        self.total_length = np.array([it.total_length for it in items], dtype=np.int64)
        self.length = np.array([it.length for it in items], dtype=np.int64)
        self.attempts = np.array([it.attempts for it in items], dtype=np.int64)
        self.last = np.array([it.last for it in items], dtype=bool)
        self.key = [segment_key(it.segment, it.sequence_count, it.key) for it in items]
        self.next_key = [next_segment_key(it.segment, it.sequence_count, it.key, it.last)
                         for it in items]
        self.sequences = {name: conv(a) for name, a in _stack(items, "sequences").items()}
        self.context = {name: conv(a) for name, a in _stack(items, "context").items()}
        self._states = {n: np.stack([it.states[n] for it in items]) for n in self.state_names}
        self._saved = {}
        self.completed = False
        if batcher.framework == "torch":
            torch = _torch()
            self.length = torch.from_numpy(self.length)
            self.total_length = torch.from_numpy(self.total_length)
            self.sequence = torch.from_numpy(self.sequence)
            self.sequence_count = torch.from_numpy(self.sequence_count)

    def __len__(self):
        return len(self._items)

    @property
    def batch_size(self):
        return len(self._items)

    def state(self, name):
        """The saved state `name` of every entry, [B, ...] (a copy)."""
        if name not in self._states:
            raise errors.InvalidArgument("state %r: the saver's states are %s"
                                         % (name, self.state_names))
        return self._b._to_framework(self._states[name].copy())

    def save_state(self, name, value):
        """Buffer the new state `name` [B, ...]; the last name of the saver
        completes the batch (auto_complete)."""
        if name not in self._states:
            raise errors.InvalidArgument("state %r: the saver's states are %s"
                                         % (name, self.state_names))
        if self.completed:
            raise errors.FailedPrecondition("batch of lease %s is completed already"
                                            % (self.lease_id,))
        v = _to_numpy(value)
        want = self._states[name].shape
        if v.shape != want:
            raise errors.InvalidArgument("state %r: shape %s, want %s" % (name, v.shape, want))
        self._saved[name] = np.ascontiguousarray(v, dtype=self._states[name].dtype)
        if self._b.auto_complete and len(self._saved) == len(self.state_names):
            self.complete()

    def complete(self):
        """Save every buffered state (all names needed) in one Complete.
        Returns the keys whose save was already applied. A segment cancelled
        while leased is skipped (it is gone); a lease that expired raises
        FailedPrecondition (another trainer may have the segments now)."""
        if self.completed:
            return []
        missing = [n for n in self.state_names if n not in self._saved]
        if missing:
            raise errors.InvalidArgument("complete: states %s not saved" % missing)
        items = [self._item(i) for i in range(len(self._items))]
        t0 = time.perf_counter()
        try:
            already = self._b._complete(self.lease_id, items)
        except errors.FailedPrecondition as e:
            if "cancelled" not in e.message:
                raise
            already = []
            for it in items:  # one at a time: the cancelled ones are refused
                try:
                    already += self._b._complete(self.lease_id, [it])
                except errors.FailedPrecondition as e2:
                    if "cancelled" not in e2.message:
                        raise
                    already.append(False)
        self.completed = True
        if self._b.collect:
            self._b._collect(self._items)
        self._b.stats["complete_s"] += time.perf_counter() - t0
        return [k for k, a in zip(self.keys, already) if a]

    def abandon(self, reason="trainer gave up on the batch"):
        """Give the segments back as a failed attempt (counted against the
        server's --max-attempts), e.g. after a NaN loss."""
        conn, lid = self._b.client.lease_client(self.lease_id)
        req = pb.CompleteRequest(saver=self._b.saver, lease_id=lid)
        for it in self._items:
            req.items.add(key=it.key, segment=it.segment, error=reason)
        conn.call("complete", req)
        self.completed = True

    def _item(self, i):
        it = self._items[i]
        c = pb.CompletedSegment(key=it.key, segment=it.segment)
        c.states.extend(to_tensor(self._saved[n][i]) for n in self.state_names)
        return c


def _to_numpy(value):
    if hasattr(value, "detach"):  # a torch tensor
        return value.detach().cpu().numpy()
    return np.asarray(value)


def _stack(items, field):
    """Stack a per-item dict field (plus inputs for sequences) into [B, ...]."""
    per = []
    for it in items:
        d = dict(getattr(it, field))
        if field == "sequences" and it.inputs is not None:
            d["inputs"] = it.inputs
        per.append(d)
    names = sorted(per[0]) if per else []
    for d in per:
        if sorted(d) != names:
            raise errors.InvalidArgument("segments of one batch carry different %s: %s vs %s"
                                         % (field, names, sorted(d)))
    out = {}
    for name in names:
        try:
            out[name] = np.stack([d[name] for d in per])
        except ValueError:
            raise errors.InvalidArgument("%s.%s: shapes differ across the batch (%s); submit "
                                         "every sequence with the same num_unroll"
                                         % (field, name, [d[name].shape for d in per])) from None
    return out


class SequenceBatcher:
    """Batches of ready segments for a training loop (the consumer side of
    batch_sequences_with_states, NextQueuedSequenceBatch per batch).

    next_batch() leases up to batch_size ready segments of distinct
    sequences (oldest sequence first), waiting up to max_delay_ms for
    min_batch of them (default batch_size: full batches, as SQSS), then up
    to wait_ms for any. Returns a Batch, or None when nothing came within
    wait_ms (the queue is drained). lease_ms: how long the trainer may
    hold a batch before it goes to another trainer (0 = server default).
    framework: "numpy" or "torch" (tensors via torch.from_numpy, moved to
    device when given). collect (default True): after a batch is completed
    its done records are collected (one pipelined round trip of Awaits with
    collect, without tensors), so a training run leaves no job records
    behind; False keeps them for Await. Iterating yields batches until
    next_batch gives None.
    """

    def __init__(self, client, saver, batch_size, min_batch=None, max_delay_ms=1000,
                 lease_ms=0, wait_ms=30000, framework="numpy", device=None, worker=None,
                 auto_complete=True, collect=True):
        if framework not in ("numpy", "torch"):
            raise errors.InvalidArgument("framework must be 'numpy' or 'torch'")
        if batch_size < 1:
            raise errors.InvalidArgument("batch_size must be >= 1")
        self.client, self.saver, self.batch_size = client, saver, int(batch_size)
        self.min_batch = self.batch_size if min_batch is None else int(min_batch)
        if self.min_batch > self.batch_size:
            raise errors.InvalidArgument("min_batch %d exceeds batch_size %d"
                                         % (self.min_batch, self.batch_size))
        self.max_delay_ms, self.lease_ms, self.wait_ms = max_delay_ms, lease_ms, wait_ms
        self.framework, self.device = framework, device
        self.worker = worker or "statesaver-trainer"
        self.auto_complete = auto_complete
        self.collect = collect
        self.stats = {"lease_s": 0.0, "complete_s": 0.0, "batches": 0, "segments": 0}

    def _to_framework(self, a):
        if self.framework == "torch":
            t = _torch().from_numpy(np.ascontiguousarray(a))
            return t.to(self.device) if self.device is not None else t
        return a

    def _complete(self, lease_id, items):
        # On a cluster the lease's shard (the owner of its keys) completes it.
        conn, lid = self.client.lease_client(lease_id)
        req = pb.CompleteRequest(saver=self.saver, lease_id=lid)
        req.items.extend(items)
        return list(conn.call("complete", req).already_applied) or [False] * len(items)

    def _collect(self, items):
        """Retire the done records of completed items (NotFound: gone
        already, e.g. cancelled)."""
        reqs = [pb.AwaitRequest(saver=self.saver, key=it.key, segment=it.segment, wait_ms=0,
                                collect=True, without_tensors=True) for it in items]
        for r in self.client.call_many("await_segment", reqs, raise_first=False):
            if isinstance(r, Exception) and not isinstance(r, errors.NotFound):
                raise r

    def next_batch(self, wait_ms=None):
        """The next Batch, or None if no segment became ready within wait_ms."""
        wait = self.wait_ms if wait_ms is None else wait_ms
        t0 = time.perf_counter()
        lease = self.client.lease(self.saver, max_batch=self.batch_size, wait_ms=wait,
                                  lease_ms=self.lease_ms, worker=self.worker,
                                  min_batch=self.min_batch if self.max_delay_ms else 0,
                                  max_delay_ms=self.max_delay_ms)
        self.stats["lease_s"] += time.perf_counter() - t0
        if not lease.items:
            return None
        self.stats["batches"] += 1
        self.stats["segments"] += len(lease.items)
        return Batch(self, lease)

    def __iter__(self):
        while True:
            b = self.next_batch()
            if b is None:
                return
            yield b


# ---- nn.LSTM / nn.GRU state layouts -------------------------------------------


def lstm_state_names(num_layers, prefix="cell_"):
    """Saver state names of a stacked LSTM, the convention statesaver-convert
    and statesaver-worker use: cell_{i}/c and cell_{i}/h per layer."""
    names = []
    for i in range(num_layers):
        names += ["%s%d/c" % (prefix, i), "%s%d/h" % (prefix, i)]
    return names


def gru_state_names(num_layers, prefix="cell_"):
    """cell_{i}/h per layer."""
    return ["%s%d/h" % (prefix, i) for i in range(num_layers)]


def declare_lstm(client, saver, num_layers, hidden_size, prefix="cell_", proj_size=0, **kw):
    """Declare a saver holding an nn.LSTM's states (h of proj_size when set)."""
    states = []
    for i in range(num_layers):
        states.append(("%s%d/c" % (prefix, i), (hidden_size,)))
        states.append(("%s%d/h" % (prefix, i), (proj_size or hidden_size,)))
    return client.declare(saver, states, **kw)


def declare_gru(client, saver, num_layers, hidden_size, prefix="cell_", **kw):
    return client.declare(saver, [("%s%d/h" % (prefix, i), (hidden_size,))
                                  for i in range(num_layers)], **kw)


def torch_lstm_state(batch, num_layers, prefix="cell_"):
    """(h_0, c_0) for nn.LSTM: each [num_layers, B, H] from the saver states."""
    torch = _torch()
    h = torch.stack([_as_torch(batch.state("%s%d/h" % (prefix, i))) for i in range(num_layers)])
    c = torch.stack([_as_torch(batch.state("%s%d/c" % (prefix, i))) for i in range(num_layers)])
    return h, c


def save_torch_lstm_state(batch, hc, prefix="cell_"):
    """Save nn.LSTM's (h_n, c_n) [num_layers, B, H] into the saver states
    (detached); the last one completes the batch."""
    h, c = hc
    for i in range(h.shape[0]):
        batch.save_state("%s%d/c" % (prefix, i), c[i])
        batch.save_state("%s%d/h" % (prefix, i), h[i])


def torch_gru_state(batch, num_layers, prefix="cell_"):
    """h_0 for nn.GRU: [num_layers, B, H]."""
    torch = _torch()
    return torch.stack([_as_torch(batch.state("%s%d/h" % (prefix, i)))
                        for i in range(num_layers)])


def save_torch_gru_state(batch, h, prefix="cell_"):
    for i in range(h.shape[0]):
        batch.save_state("%s%d/h" % (prefix, i), h[i])


def _as_torch(a):
    torch = _torch()
    return a if isinstance(a, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(a))
