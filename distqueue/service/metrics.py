"""What one server counts as it serves: plain integers and fixed-bucket histograms,
updated on the hot path for the cost of an index and an add, read at scrape time.

No Prometheus import here (the core stays light): distqueue.web turns a snapshot of
these into the exposition format, and STATS / METRICS_GET return the same numbers.
Labels are bounded by construction — a priority (0-10, ">10" for every priority
beyond distqueue's own scale, or "unknown" for a job this server did not hand out), a
store operation, a protocol verb; never a worker, host, queue or job id.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, cast

__all__ = [
    "BEYOND",
    "DURATION_BUCKETS",
    "PRIORITY_LABELS",
    "STORE_BUCKETS",
    "Histogram",
    "Metrics",
    "TimedStore",
    "priority_label",
]

#: seconds: a task's run time, and a job's wait from submit to its first start
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                    60.0, 300.0, 900.0, 3600.0)  # fmt: skip
#: seconds: one store call
STORE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0)
#: the label of a job whose priority this server does not know (another server, or
#: this one before a restart, handed it out)
UNKNOWN = "unknown"
#: the label of every priority above 10 (up to 2**32-1: beanstalkd's clients use the
#: whole range, and a label per value would be unbounded)
BEYOND = ">10"
#: the labels a priority may have, in order (UNKNOWN aside)
PRIORITY_LABELS = (*(str(p) for p in range(11)), BEYOND)


def priority_label(priority: int | None) -> str:
    """A priority's metric label: 0..10 as themselves, the rest BEYOND."""
    if priority is None:
        return UNKNOWN
    return str(priority) if priority <= 10 else BEYOND


T = TypeVar("T")


class Histogram:
    """Counts of observations per bucket (``le`` bounds, +Inf last), their sum and count."""

    __slots__ = ("bounds", "count", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1

    def cumulative(self) -> list[tuple[float, int]]:
        """(upper bound, observations at or below it), +Inf last: Prometheus's buckets."""
        out, total = [], 0
        for bound, n in zip((*self.bounds, float("inf")), self.counts, strict=True):
            total += n
            out.append((bound, total))
        return out

    def to_wire(self) -> dict[str, Any]:
        return {"count": self.count, "sum": round(self.sum, 6),
                "buckets": [[b if b != float("inf") else "+Inf", n]
                            for b, n in self.cumulative()]}  # fmt: skip


class ByPriority:
    """A counter per priority label."""

    __slots__ = ("values",)

    def __init__(self) -> None:
        self.values: dict[str, int] = {}

    def inc(self, priority: int | None, n: int = 1) -> None:
        key = priority_label(priority)
        self.values[key] = self.values.get(key, 0) + n

    def total(self) -> int:
        return sum(self.values.values())


class Metrics:
    """One server's counters (since it started: Prometheus counters, to ``sum()``
    across servers) and histograms."""

    def __init__(self) -> None:
        #: jobs created by SUBMIT (a unique key's existing job is not counted again)
        self.submitted = ByPriority()
        #: jobs that succeeded (an ACK taken)
        self.completed = ByPriority()
        #: attempts that failed (a FAIL taken), whatever followed
        self.failed = ByPriority()
        #: ... of which the job will run again, ended dead, ended cancelled
        self.retried = ByPriority()
        self.dead = ByPriority()
        self.cancelled = 0
        #: leases this server took back because they ran out (expired)
        self.lease_expired = 0
        #: jobs taken back from workers whose connection dropped without BYE
        self.worker_vanished_jobs = 0
        #: workers whose connections dropped without BYE and did not come back
        self.workers_vanished = 0
        #: ACK/FAIL/PROGRESS refused because the worker no longer held the job
        self.stale_refused = 0
        #: protocol commands by verb (unknown verbs under "unknown")
        self.commands: dict[str, int] = {}
        #: a task's run time: from its hand-out to its result, as this server saw them
        self.duration: dict[str, Histogram] = {}
        #: a job's wait from its submit to its first hand-out
        self.wait: dict[str, Histogram] = {}
        #: store calls by operation: latency, and the ones that raised StoreError
        self.store_calls: dict[str, Histogram] = {}
        self.store_errors: dict[str, int] = {}
        #: the monotonic time something last moved (a hand-out or a result): /health's
        #: stuck check
        self.last_progress = time.monotonic()

    def _hist(self, table: dict[str, Histogram], key: str, bounds: tuple[float, ...]) -> Histogram:
        h = table.get(key)
        if h is None:
            h = table[key] = Histogram(bounds)
        return h

    def observe_duration(self, priority: int | None, seconds: float) -> None:
        self._hist(self.duration, priority_label(priority), DURATION_BUCKETS).observe(seconds)

    def observe_wait(self, priority: int, seconds: float) -> None:
        hist = self._hist(self.wait, priority_label(priority), DURATION_BUCKETS)
        hist.observe(max(0.0, seconds))

    def command(self, verb: str) -> None:
        self.commands[verb] = self.commands.get(verb, 0) + 1

    def to_wire(self) -> dict[str, Any]:
        """Everything, as METRICS_GET answers it."""
        return {
            "submitted": self.submitted.values, "completed": self.completed.values,
            "failed": self.failed.values, "retried": self.retried.values,
            "dead": self.dead.values, "cancelled": self.cancelled,
            "lease_expired": self.lease_expired, "workers_vanished": self.workers_vanished,
            "worker_vanished_jobs": self.worker_vanished_jobs,
            "stale_refused": self.stale_refused, "commands": self.commands,
            "duration": {k: h.to_wire() for k, h in self.duration.items()},
            "wait": {k: h.to_wire() for k, h in self.wait.items()},
            "store_calls": {k: h.to_wire() for k, h in self.store_calls.items()},
            "store_errors": self.store_errors,
        }  # fmt: skip


class TimedStore:
    """A Store that times every call into ``metrics`` (latency by operation, and
    the StoreErrors): wraps the store the service uses, attribute for attribute."""

    def __init__(self, store: Any, metrics: Metrics) -> None:
        self._store = store
        self._metrics = metrics
        self._wrapped: dict[str, Any] = {}

    @property
    def inner(self) -> Any:
        return self._store

    def __getattr__(self, name: str) -> Any:
        wrapped = self._wrapped.get(name)
        if wrapped is not None:
            return wrapped
        attr = getattr(self._store, name)
        if name.startswith("_") or name in ("watch", "close") or not callable(attr):
            return attr
        import inspect

        if not inspect.iscoroutinefunction(attr):
            return attr
        wrapped = self._timed(name, attr)
        self._wrapped[name] = wrapped
        setattr(self, name, wrapped)  # found directly from now on, not via __getattr__
        return wrapped

    def _timed(self, name: str, call: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
        from distqueue.errors import StoreError

        metrics = self._metrics
        hist = metrics._hist(metrics.store_calls, name, STORE_BUCKETS)
        clock = time.perf_counter

        async def timed(*args: Any, **kwargs: Any) -> T:
            start = clock()
            try:
                return await call(*args, **kwargs)
            except StoreError:
                metrics.store_errors[name] = metrics.store_errors.get(name, 0) + 1
                raise
            finally:
                hist.observe(clock() - start)

        return cast(Callable[..., Awaitable[T]], timed)
