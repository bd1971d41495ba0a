"""The job model: states, the spec a client submits, and the job a store keeps."""

from __future__ import annotations

import enum
import math
import re
from dataclasses import dataclass, field
from typing import Any

from distqueue import defaults
from distqueue.errors import InvalidJob

__all__ = [
    "DEFAULT_PRIORITY",
    "DEFAULT_QUEUE",
    "MAX_AFTER",
    "MAX_WAITERS",
    "PRIORITY_NAMES",
    "TERMINAL_STATES",
    "Job",
    "JobError",
    "JobSpec",
    "JobState",
    "parse_priority",
]


class JobState(enum.StrEnum):
    """Where a job is in its life; docs/lifecycle.md draws the edges."""

    #: waiting for the jobs it was submitted ``after`` to finish (JobSpec.after)
    WAITING = "waiting"
    #: waiting for its run-at time (submitted with a delay)
    SCHEDULED = "scheduled"
    #: ready to be handed to a worker
    QUEUED = "queued"
    #: leased to one worker, which holds its current fencing token
    RUNNING = "running"
    #: failed with retries left; becomes queued again at its run-at time
    RETRYING = "retrying"
    #: finished with a result (terminal)
    SUCCEEDED = "succeeded"
    #: failed for good: permanent error, retries exhausted, expired or poison (terminal)
    DEAD = "dead"
    #: cancelled before it finished (terminal)
    CANCELLED = "cancelled"

    def __str__(self) -> str:
        return self.value


#: states a job never leaves except by an explicit RETRY (dead, cancelled) or a purge
TERMINAL_STATES = frozenset({JobState.SUCCEEDED, JobState.DEAD, JobState.CANCELLED})

#: priority names and their numbers; 0 is the most urgent, 10 the least of the names
PRIORITY_NAMES = {"high": 0, "normal": 5, "low": 10}
DEFAULT_PRIORITY = defaults.PRIORITY
DEFAULT_QUEUE = defaults.QUEUE
#: the range: 0..10 is distqueue's own scale; up to 2**32-1 (beanstalkd's range),
#: less urgent than ``low``
MIN_PRIORITY, MAX_PRIORITY = 0, 2**32 - 1
#: the most jobs one job may wait for (JobSpec.after)
MAX_AFTER = 100
#: the most jobs that may wait for one job: the ACK that finishes it releases them
#: all in one store operation, so this bounds that operation's work
MAX_WAITERS = 1000
#: what a waiting job does when a job it waits for ends dead or cancelled
ON_FAILURE = ("cancel", "run")

#: a type or queue name: letters, digits and _ . : - / (so import paths fit) and the
#: + ; $ ( ) beanstalkd's tube names may hold, at most 200 characters, not starting
#: with a hyphen; no spaces or commas, so names can be listed comma-separated on the wire
_NAME = re.compile(r"^[A-Za-z0-9_.:/+;$()][A-Za-z0-9_.:/+;$()-]{0,199}\Z")


def parse_priority(value: int | str) -> int:
    """Turn ``high``/``normal``/``low`` or ``0``..``2**32-1`` into the number; raise
    InvalidJob."""
    if isinstance(value, str):
        named = PRIORITY_NAMES.get(value.strip().lower())
        if named is not None:
            return named
        try:
            value = int(value)
        except ValueError:
            raise InvalidJob(
                f"priority must be high, normal, low or 0-{MAX_PRIORITY}, not {value!r}"
            ) from None
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidJob(f"priority must be an integer 0-{MAX_PRIORITY}, not {value!r}")
    if not MIN_PRIORITY <= value <= MAX_PRIORITY:
        raise InvalidJob(f"priority must be 0-{MAX_PRIORITY} (0 most urgent), not {value}")
    return value


def check_name(what: str, value: object) -> str:
    """Validate a job type or queue name; return it."""
    if not isinstance(value, str) or not _NAME.match(value):
        raise InvalidJob(f"{what} must be 1-200 printable characters without spaces, not {value!r}")
    return value


def _check_time(what: str, value: object, *, positive: bool = False) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidJob(f"{what} must be a finite number of seconds, not {value!r}")
    if positive and value <= 0:
        raise InvalidJob(f"{what} must be greater than 0, not {value!r}")
    return float(value)


@dataclass(frozen=True, kw_only=True, slots=True)
class JobSpec:
    """What a client submits. ``validate()`` checks every field; stores call it."""

    #: the job type a worker must serve: a built-in name or a task's import path
    type: str
    #: the arguments, any JSON value (a list for positional, an object for keywords)
    args: Any = None
    #: optional raw bytes travelling with the job (a file job's input)
    payload: bytes | None = None
    #: the queue; workers say which queues they serve
    queue: str = DEFAULT_QUEUE
    #: 0 (most urgent) .. 10 (least); see PRIORITY_NAMES
    priority: int = DEFAULT_PRIORITY
    #: how many times a retryable failure is retried before the job is dead
    max_retries: int = defaults.MAX_RETRIES
    #: seconds a single attempt may run (the worker enforces it); None = no limit
    timeout: float | None = None
    #: epoch seconds after which the job must not start; None = no deadline
    deadline: float | None = None
    #: epoch seconds before which the job must not start (a delay); None = now
    run_at: float | None = None
    #: idempotency key: a second submit with the same key returns the first job
    unique_key: str | None = None
    #: ids of jobs this one waits for: it is ``waiting`` until every one of them has
    #: succeeded, then queued (or scheduled, if its run_at is still ahead). Each must
    #: exist; at most MAX_AFTER, and at most MAX_WAITERS jobs may wait for one job.
    #: Empty = no dependencies.
    after: tuple[int, ...] = ()
    #: when one of ``after`` ends dead or cancelled: "cancel" (this job is cancelled
    #: too, and so, in turn, are the jobs waiting for it) or "run" (it counts as done)
    on_failure: str = "cancel"
    #: hand the results of ``after`` to the task (the worker fetches them when it
    #: starts the job: one job's result as the first argument, several as a list)
    pass_results: bool = False

    #: validate() passed (the spec is frozen, so it stays valid): the server checks a
    #: spec as it parses it, and the store's own check then costs nothing
    _valid: bool = field(default=False, init=False, repr=False, compare=False)

    def validate(self) -> None:
        """Raise InvalidJob naming the first bad field."""
        if self._valid:
            return
        check_name("job type", self.type)
        check_name("queue", self.queue)
        if self.payload is not None and not isinstance(self.payload, bytes | bytearray):
            raise InvalidJob("payload must be bytes")
        if (
            isinstance(self.priority, bool)
            or not isinstance(self.priority, int)
            or not MIN_PRIORITY <= self.priority <= MAX_PRIORITY
        ):
            raise InvalidJob(f"priority must be an integer 0-{MAX_PRIORITY}, not {self.priority!r}")
        if (
            isinstance(self.max_retries, bool)
            or not isinstance(self.max_retries, int)
            or not 0 <= self.max_retries <= 1000
        ):
            raise InvalidJob(f"max_retries must be an integer 0-1000, not {self.max_retries!r}")
        _check_time("timeout", self.timeout, positive=True)
        _check_time("deadline", self.deadline)
        _check_time("run_at", self.run_at)
        if self.unique_key is not None and (
            not isinstance(self.unique_key, str) or not 1 <= len(self.unique_key) <= 512
        ):
            raise InvalidJob("unique_key must be a string of 1-512 characters")
        if (
            not isinstance(self.after, tuple)
            or len(self.after) > MAX_AFTER
            or any(
                isinstance(i, bool) or not isinstance(i, int) or not 0 < i < 2**63
                for i in self.after
            )
        ):
            raise InvalidJob(f"after must be at most {MAX_AFTER} job ids")
        if len(set(self.after)) != len(self.after):
            raise InvalidJob("after names a job twice")
        if self.on_failure not in ON_FAILURE:
            raise InvalidJob(f"on_failure must be cancel or run, not {self.on_failure!r}")
        if not isinstance(self.pass_results, bool):
            raise InvalidJob("pass_results must be true or false")
        if self.pass_results and not self.after:
            raise InvalidJob("pass_results needs jobs to wait for (after)")
        object.__setattr__(self, "_valid", True)


@dataclass(frozen=True, kw_only=True, slots=True)
class JobError:
    """Why an attempt failed."""

    #: a short class of failure: an exception name, "timeout", "expired", "lost", ...
    kind: str
    #: the human-readable message
    message: str
    #: the traceback text, if any; never truncated
    traceback: str = ""

    def to_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "message": self.message, "traceback": self.traceback}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobError:
        return cls(
            kind=str(data.get("kind", "")),
            message=str(data.get("message", "")),
            traceback=str(data.get("traceback", "")),
        )


@dataclass(frozen=True, kw_only=True, slots=True)
class Job:
    """A job as the store knows it. Values are a snapshot; the store is the truth."""

    #: the job's id: a small integer, typeable by hand
    id: int
    #: the job type
    type: str
    #: the arguments (any JSON value)
    args: Any
    #: the payload bytes (None in list() summaries and when the job has none)
    payload: bytes | None
    #: size of the payload in bytes (0 when none), present in summaries too
    payload_size: int
    #: the queue
    queue: str
    #: 0..2**32-1, 0 most urgent (distqueue's own scale: 0..10)
    priority: int
    #: retryable failures allowed before the job is dead
    max_retries: int
    #: seconds one attempt may run, or None
    timeout: float | None
    #: must not start after this epoch time, or None
    deadline: float | None
    #: scheduled/retrying: when it becomes queued; otherwise None
    run_at: float | None
    #: the idempotency key, or None
    unique_key: str | None
    #: where the job is in its life
    state: JobState
    #: how many times the job was claimed; the current claim's fencing token
    attempts: int
    #: how many attempts failed (counts against max_retries)
    failures: int
    #: how many times a worker lost the lease without answering (poison count)
    lost: int
    #: the worker running it, or the last worker that ran it
    worker: str | None
    #: running: when the lease runs out unless renewed
    lease_until: float | None
    #: running: a cancel was asked for and the worker should stop the job
    cancel_requested: bool
    #: the result: a JSON value, or bytes for a file result (None in summaries)
    result: Any
    #: the last error, or None
    error: JobError | None
    #: the last progress report: {"percent": float, "message": str}, or None
    progress: dict[str, Any] | None
    #: epoch seconds of the submit
    created_at: float
    #: epoch seconds the last attempt started, or None
    started_at: float | None
    #: epoch seconds the job reached a terminal state, or None
    finished_at: float | None
    #: the fencing token of the current (or last) claim, 0 before the first: it grows
    #: with every claim and is never handed out twice, even across a crash
    token: int = 0
    #: the ids it was submitted to wait for (JobSpec.after), in the order given
    after: tuple[int, ...] = ()
    #: JobSpec.on_failure
    on_failure: str = "cancel"
    #: JobSpec.pass_results
    pass_results: bool = False
