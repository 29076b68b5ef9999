"""statesaver -- Python client of the statesaver server.

    from statesaver import Client, SequenceStateSaver, FailedPrecondition

Client speaks the framed protobuf protocol (docs/protocol.md) with numpy
arrays in and out; SequenceStateSaver is the state(name) / save_state(name,
value) interface of TensorFlow's static_state_saving_rnn for a batch of
sequence keys. statesaver.training is the networked
batch_sequences_with_states for trainers (submit_sequences,
SequenceBatcher; numpy or PyTorch). See docs/python.md, docs/training.md.
"""
from .errors import (AlreadyExists, Cancelled, DeadlineExceeded, FailedPrecondition,
                     Internal, InvalidArgument, Moved, NotFound, ProtocolError,
                     ResourceExhausted, SegmentFailed, StatesaverError,
                     Unauthenticated, Unavailable, Unimplemented)
from .client import Client, from_tensor, parse_server, to_tensor
from .sqss import SequenceStateSaver
from .training import SequenceBatcher, submit_sequences
from .cluster import ClusterClient, RedirectLoop

__version__ = "0.1.0"

__all__ = [
    "Client", "ClusterClient", "RedirectLoop", "Moved", "SequenceStateSaver", "SequenceBatcher", "submit_sequences", "to_tensor", "from_tensor", "parse_server",
    "StatesaverError", "Cancelled", "InvalidArgument", "DeadlineExceeded", "NotFound",
    "AlreadyExists", "ResourceExhausted", "FailedPrecondition", "Unimplemented",
    "Internal", "Unavailable", "Unauthenticated", "ProtocolError", "SegmentFailed",
]
