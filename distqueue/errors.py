"""The exception tree of distqueue.

Every error carries a stable wire ``code`` so the protocol can send it and a
client can raise the same class again on the other side::

    DistQueueError                 ERR        anything distqueue refuses
     ├── InvalidJob                INVALID    a job spec or argument is malformed
     │    └── UnknownType          NOTYPE     no worker serves that job type
     ├── JobNotFound               NOTFOUND   no job with that id
     ├── IllegalTransition         STATE      the job's state does not allow that
     ├── LeaseLost                 STALE      the fencing token is not the job's
     │                                        current one (lease expired, job moved on)
     ├── StoreError                STORE      the store is closed, locked or broken
     ├── ProtocolError             PROTO      a malformed frame
     │    ├── UnknownCommand       UNKNOWN    no such command
     │    ├── WrongArguments       ARGS       wrong number or form of arguments
     │    └── TooLarge             TOOBIG     a request over the size limit
     ├── AuthError                 AUTH       not authenticated, or a wrong token
     ├── NotAllowed                ROLE       the command is not for this connection's role
     ├── NotFinished               PENDING    RESULT of a job that has not finished
     ├── JobFailed                 FAILED     RESULT of a job that ended dead or cancelled
     ├── Timeout                   TIMEOUT    WAIT or FETCH ran out of time
     └── ServerUnavailable         UNAVAILABLE  (client side) cannot reach any server
"""

from __future__ import annotations

__all__ = [
    "AuthError",
    "DistQueueError",
    "IllegalTransition",
    "InvalidJob",
    "JobFailed",
    "JobNotFound",
    "LeaseLost",
    "NotAllowed",
    "NotFinished",
    "ProtocolError",
    "QueueFull",
    "ServerUnavailable",
    "StoreError",
    "Timeout",
    "TooLarge",
    "UnknownCommand",
    "UnknownType",
    "WrongArguments",
    "from_wire",
]


class DistQueueError(Exception):
    """Base of every error distqueue raises on purpose."""

    code = "ERR"


class InvalidJob(DistQueueError):
    """A job spec, an id or an argument is malformed; nothing was changed."""

    code = "INVALID"


class JobNotFound(DistQueueError):
    """No job with that id exists (never did, or was purged)."""

    code = "NOTFOUND"

    def __init__(self, job_id: int) -> None:
        super().__init__(f"no job {job_id}")
        self.job_id = job_id


class IllegalTransition(DistQueueError):
    """The operation would move a job along an edge docs/lifecycle.md does not have."""

    code = "STATE"


class LeaseLost(DistQueueError):
    """The caller's fencing token is stale: it no longer holds the job."""

    code = "STALE"

    def __init__(self, job_id: int, token: int) -> None:
        super().__init__(f"job {job_id}: token {token} does not hold the job any more")
        self.job_id = job_id
        self.token = token


class StoreError(DistQueueError):
    """The store cannot serve: closed, locked by another process, or broken by an I/O error."""

    code = "STORE"


class QueueFull(DistQueueError):
    """A submit would take a queue (or all queues) past its maximum depth: nothing was
    stored; try again once workers have drained some (Limit.max_depth)."""

    code = "FULL"


class UnknownType(InvalidJob):
    """No worker serves that job type (a typo, or workers never started)."""

    code = "NOTYPE"


class ProtocolError(DistQueueError):
    """A malformed frame: the connection cannot be read any further."""

    code = "PROTO"


class UnknownCommand(ProtocolError):
    """The command verb is not one the protocol has."""

    code = "UNKNOWN"


class WrongArguments(ProtocolError):
    """A known command with the wrong number or form of arguments."""

    code = "ARGS"


class TooLarge(ProtocolError):
    """A request over the server's size limit; refused before it is buffered whole."""

    code = "TOOBIG"


class AuthError(DistQueueError):
    """The server wants a token first, or the token is wrong."""

    code = "AUTH"


class NotAllowed(DistQueueError):
    """The command is not for this connection's role (a worker command from a client)."""

    code = "ROLE"


class NotFinished(DistQueueError):
    """The job has no result yet: it has not finished."""

    code = "PENDING"


class JobFailed(DistQueueError):
    """The job has no result and never will: it is dead or cancelled."""

    code = "FAILED"


class Timeout(DistQueueError):
    """A blocking command ran out of time before it had an answer."""

    code = "TIMEOUT"


class ServerUnavailable(DistQueueError):
    """The client could not reach any server (refused, reset, timed out)."""

    code = "UNAVAILABLE"


def _subclasses(cls: type[DistQueueError]) -> list[type[DistQueueError]]:
    out = [cls]
    for sub in cls.__subclasses__():
        out.extend(_subclasses(sub))
    return out


#: wire code -> exception class
CODES: dict[str, type[DistQueueError]] = {c.code: c for c in _subclasses(DistQueueError)}


def from_wire(code: str, message: str) -> DistQueueError:
    """The exception a ``-CODE message`` error reply stands for (DistQueueError if the
    code is unknown, keeping the code)."""
    cls = CODES.get(code, DistQueueError)
    exc = cls.__new__(cls)
    # skip subclasses' own __init__ (they take ids): the message is all the wire has
    DistQueueError.__init__(exc, message)
    if cls is DistQueueError and code != "ERR":
        exc.code = code
    return exc
