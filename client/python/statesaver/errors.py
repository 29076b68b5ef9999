"""errors -- exceptions of the statesaver Python client.

A non-OK server status becomes a StatesaverError subclass chosen by its
gRPC-style code; .code is the code's name ("FAILED_PRECONDITION"),
.code_value its number and .message the server's message, unchanged.
"""


class StatesaverError(Exception):
    """A server status other than OK, or a client-side failure."""

    code = "UNKNOWN"
    code_value = 2

    def __init__(self, message, code=None, code_value=None):
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if code_value is not None:
            self.code_value = code_value

    def __str__(self):
        return "%s: %s" % (self.code, self.message)


class Cancelled(StatesaverError):
    code, code_value = "CANCELLED", 1


class InvalidArgument(StatesaverError):
    code, code_value = "INVALID_ARGUMENT", 3


class DeadlineExceeded(StatesaverError):
    code, code_value = "DEADLINE_EXCEEDED", 4


class NotFound(StatesaverError):
    code, code_value = "NOT_FOUND", 5


class AlreadyExists(StatesaverError):
    code, code_value = "ALREADY_EXISTS", 6


class ResourceExhausted(StatesaverError):
    code, code_value = "RESOURCE_EXHAUSTED", 8


class FailedPrecondition(StatesaverError):
    """Compare-and-set mismatch: the message names key, expected and found."""
    code, code_value = "FAILED_PRECONDITION", 9


class Unimplemented(StatesaverError):
    code, code_value = "UNIMPLEMENTED", 12


class Internal(StatesaverError):
    code, code_value = "INTERNAL", 13


class Unavailable(StatesaverError):
    code, code_value = "UNAVAILABLE", 14


class Unauthenticated(StatesaverError):
    code, code_value = "UNAUTHENTICATED", 16


class Moved(StatesaverError):
    """The key's hash slot belongs to another shard of the cluster: address,
    shard, epoch and slot say where (Status.redirect). ClusterClient follows
    it; a plain Client raises it."""
    code, code_value = "MOVED", 32

    def __init__(self, message, code=None, code_value=None, redirect=None):
        super().__init__(message, code=code, code_value=code_value)
        self.address = redirect.address if redirect is not None else ""
        self.shard = redirect.shard if redirect is not None else ""
        self.epoch = redirect.epoch if redirect is not None else 0
        self.slot = redirect.slot if redirect is not None else 0


class ProtocolError(StatesaverError):
    """The connection broke or carried something that is not our protocol."""
    code, code_value = "UNAVAILABLE", 14


class SegmentFailed(StatesaverError):
    """A submitted segment was marked failed by the server (reason inside)."""
    code, code_value = "FAILED_PRECONDITION", 9


_BY_VALUE = {c.code_value: c for c in (
    Cancelled, InvalidArgument, DeadlineExceeded, NotFound, AlreadyExists,
    ResourceExhausted, FailedPrecondition, Unimplemented, Internal,
    Unavailable, Unauthenticated, Moved)}


def from_status(code_value, code_name, message, redirect=None):
    """The exception for a server status (code number, its name, message;
    redirect: the Status.redirect of a MOVED)."""
    cls = _BY_VALUE.get(code_value, StatesaverError)
    if cls is Moved:
        return Moved(message, code=code_name or cls.code, code_value=code_value,
                     redirect=redirect)
    return cls(message, code=code_name or cls.code, code_value=code_value)
