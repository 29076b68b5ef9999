"""sqss -- SequenceStateSaver: the state-saver side of TensorFlow's
static_state_saving_rnn for a batch of sequence keys, backed by the server.

static_state_saving_rnn reads each state with state_saver.state(name) before
unrolling a segment and writes it back with state_saver.save_state(name,
value) after. This adapter offers the same two calls for a fixed batch of
keys, so a Python training loop can keep its RNN state in statesaver:

    ss = SequenceStateSaver(client, "lm", keys=[b"a", b"b"])
    for segment in range(n_segments):
        c, h = ss.state("cell_0/c"), ss.state("cell_0/h")   # [B, units]
        ... unroll num_unroll steps ...
        ss.save_state("cell_0/c", c2); ss.save_state("cell_0/h", h2)
        # the second save_state committed the segment and advanced

state(name) fetches all names once per segment (one Fetch) and caches them.
save_state(name, value) buffers; when every state name has been given, one
batched Save (compare-and-set on each key's segment, all or nothing) commits
them and the adapter moves to the next segment, whose states are the values
just saved. A conflict (another writer advanced a key) raises
FailedPrecondition: with the server's message when the stored segment is
elsewhere, or from the adapter when the server reports the segment as
already applied although this adapter never sent it (a concurrent writer
saved the same segment first). After a conflict the adapter drops its cache
and buffered values; the next state() fetches what is stored.

Retrying commit() after a connection error is safe: the server reports the
repeated save as already applied, which the adapter then accepts.
"""
import collections

import numpy as np

from . import errors


class SequenceStateSaver:
    """State saver for a batch of sequences of one saver.

    client: a statesaver.Client; saver: the saver name (declared); keys: the
    batch's sequence keys (bytes or str). state_names: the names to carry
    (default: the saver's whole schema, which Save requires anyway).
    wait_ms/min_segment: optional barrier for the first Fetch.
    """

    def __init__(self, client, saver, keys, state_names=None, wait_ms=0, min_segment=0):
        self.client = client
        self.saver = saver
        self.keys = [k.encode() if isinstance(k, str) else bytes(k) for k in keys]
        if not self.keys:
            raise errors.InvalidArgument("a SequenceStateSaver needs at least one key")
        schema = client.schema(saver)
        self.state_names = list(state_names) if state_names is not None else list(schema)
        if sorted(self.state_names) != sorted(schema):
            raise errors.InvalidArgument("state_names %s must be the saver's schema %s "
                                         "(states are saved together)"
                                         % (self.state_names, schema))
        self._wait_ms, self._min_segment = wait_ms, min_segment
        self._states = None       # name -> [B, ...] for the current segment
        self._segment = None      # uint64 [B]: segment each key is at
        self._pending = collections.OrderedDict()  # name -> value saved this segment
        self._final = np.zeros(len(self.keys), dtype=bool)
        self._sent = False        # a Save of this segment may have reached the server

    @property
    def batch_size(self):
        return len(self.keys)

    @property
    def segment(self):
        """Per-key segment being computed (uint64 [B]); fetches if needed."""
        self._load()
        return self._segment.copy()

    def _load(self):
        if self._states is None:
            r = self.client.fetch(self.saver, self.keys, min_segment=self._min_segment,
                                  wait_ms=self._wait_ms)
            self._states, self._segment = r.states, r.next_segment
            self._wait_ms = 0

    def state(self, name):
        """The state `name` at the start of the current segment, [B, ...]."""
        self._load()
        if name not in self._states:
            raise KeyError("no state named %r (schema: %s)" % (name, list(self._states)))
        return self._states[name].copy()

    def set_final(self, final=True):
        """Mark keys (bool or per-key bools) as ending with this segment: the
        commit saves with final=True (SQSS STOP), deleting their records."""
        self._final = np.broadcast_to(np.asarray(final, dtype=bool), (len(self.keys),)).copy()

    def save_state(self, name, value):
        """Buffer the state `name` at the end of the current segment; the last
        missing name commits the segment (one Save). Returns True when this
        call committed."""
        if name not in self.state_names:
            raise KeyError("no state named %r (schema: %s)" % (name, self.state_names))
        value = np.asarray(value)
        if value.shape[:1] != (len(self.keys),):
            raise errors.InvalidArgument("state %r must have batch dimension %d, got shape %s"
                                         % (name, len(self.keys), value.shape))
        self._pending[name] = value
        if len(self._pending) < len(self.state_names):
            return False
        self.commit()
        return True

    def commit(self):
        """Save the buffered states of every name with compare-and-set on each
        key's current segment, then advance to the next segment."""
        self._load()
        missing = [n for n in self.state_names if n not in self._pending]
        if missing:
            raise errors.InvalidArgument("cannot commit: no value for %s" % missing)
        states = {n: self._pending[n] for n in self.state_names}
        retry, self._sent = self._sent, True
        try:
            applied = self.client.save(self.saver, self.keys, self._segment, states,
                                       final=self._final if self._final.any() else None)
        except errors.FailedPrecondition:
            self.reset()
            raise
        if any(applied) and not retry:
            taken = [k for k, a in zip(self.keys, applied) if a]
            seg = self._segment.tolist()
            self.reset()
            raise errors.FailedPrecondition(
                "segment %s of keys %s was already saved by another writer; this "
                "adapter's states were not applied" % (seg, taken))
        self._sent = False
        # The next segment starts from what was just stored.
        self._states = collections.OrderedDict(
            (n, np.array(states[n], dtype=self._states[n].dtype)) for n in self._states)
        self._segment = self._segment + np.uint64(1)
        self._pending.clear()
        if self._final.any():
            # Finished sequences start over from the initial state.
            self._states = None
            self._final[:] = False

    def reset(self):
        """Drop the cache and unsaved values; the next state() fetches."""
        self._states = None
        self._pending.clear()
        self._sent = False
