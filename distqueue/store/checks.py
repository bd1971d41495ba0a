"""Argument checks every store makes before it touches anything (InvalidJob)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from distqueue import codec
from distqueue.errors import InvalidJob
from distqueue.jobs import MAX_PRIORITY, MIN_PRIORITY, JobSpec, JobState, check_name
from distqueue.store.base import ALL_QUEUES, MAX_WORKER_ID, MAX_WORKER_INFO, Limit, Periodic

__all__ = [
    "MAX_INT", "check_claim", "check_id", "check_limit", "check_list", "check_pause",
    "check_periodic", "check_priority", "check_seconds", "check_specs", "check_worker",
    "check_worker_info", "check_workers", "encode_result", "periodic_key",
]  # fmt: skip

#: ids, tokens and counts are 64-bit signed integers in every store
MAX_INT = 2**63 - 1


def check_id(what: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_INT:
        raise InvalidJob(f"{what} must be an integer 0..2**63-1, not {value!r}")
    return value


def check_priority(priority: object) -> int:
    """A priority given to fail, requeue or kick: an integer MIN_PRIORITY..MAX_PRIORITY."""
    if (
        isinstance(priority, bool)
        or not isinstance(priority, int)
        or not MIN_PRIORITY <= priority <= MAX_PRIORITY
    ):
        raise InvalidJob(f"priority must be an integer 0-{MAX_PRIORITY}, not {priority!r}")
    return priority


def check_seconds(what: str, value: object, *, positive: bool = False) -> float:
    """A time (run_at, a pause's end) or, ``positive``, a duration (a lease): a finite
    number of seconds."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or (positive and value <= 0)
    ):
        kind = "a finite number of seconds > 0" if positive else "a finite number of seconds"
        raise InvalidJob(f"{what} must be {kind}, not {value!r}")
    return float(value)


def check_pause(queue: str, paused: bool, until: object) -> float | None:
    """Store.pause's arguments checked; returns ``until`` as a float (or None)."""
    check_name("queue", queue)
    if until is None:
        return None
    if not paused:
        raise InvalidJob("until is the end of a pause: not with paused=False")
    return check_seconds("until", until)


def check_specs(specs: Sequence[JobSpec]) -> list[tuple[JobSpec, bytes | None]]:
    """Each spec validated, with its args as JSON; InvalidJob names the bad one."""
    out: list[tuple[JobSpec, bytes | None]] = []
    for i, spec in enumerate(specs):
        if not isinstance(spec, JobSpec):
            raise InvalidJob(f"job {i}: not a JobSpec")
        try:
            spec.validate()
            args = None if spec.args is None else codec.dumps(spec.args, "args")
        except InvalidJob as exc:
            raise InvalidJob(f"job {i}: {exc}") from None
        out.append((spec, args))
    return out


def check_claim(worker: object, n: object, lease: float) -> int:
    """A claim's worker, n and lease checked; returns n."""
    if not isinstance(worker, str) or not worker:
        raise InvalidJob("worker must be a non-empty string")
    count = check_id("n", n)
    if not lease > 0:
        raise InvalidJob("lease must be greater than 0")
    return count


def check_list(state: JobState | None, limit: int, before: int | None) -> str | None:
    """LIST's arguments checked; returns the state's name."""
    if not 1 <= limit <= 1000:
        raise InvalidJob("limit must be 1-1000")
    if before is not None:
        check_id("before", before)
    try:
        return None if state is None else JobState(state).value
    except ValueError:
        raise InvalidJob(f"no state {state!r}") from None


def encode_result(result: Any) -> tuple[bytes, str]:
    """A result as stored: (bytes, "bytes") for a file result, else (JSON, "json")."""
    if isinstance(result, bytes | bytearray | memoryview):
        return bytes(result), "bytes"
    return codec.dumps(result, "result"), "json"


def check_worker(worker: object) -> str:
    """A worker id for the registry: a string of 1..MAX_WORKER_ID characters."""
    if not isinstance(worker, str) or not 1 <= len(worker) <= MAX_WORKER_ID:
        raise InvalidJob(f"worker must be a string of 1-{MAX_WORKER_ID} characters")
    return worker


def check_worker_info(info: object) -> bytes:
    """A worker's info as the registry stores it: a JSON object, at most
    MAX_WORKER_INFO bytes encoded."""
    if not isinstance(info, Mapping):
        raise InvalidJob("worker info must be a JSON object")
    data = codec.dumps(dict(info), "worker info")
    if len(data) > MAX_WORKER_INFO:
        raise InvalidJob(f"worker info is {len(data)} bytes of JSON: at most {MAX_WORKER_INFO}")
    return data


def check_workers(max_age: float, limit: int) -> None:
    """The arguments of Store.workers."""
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 1000:
        raise InvalidJob("limit must be 1-1000")
    if not isinstance(max_age, int | float) or math.isnan(max_age) or max_age < 0:
        raise InvalidJob("max_age must be a number of seconds, 0 or more")


def _count(what: str, value: object) -> None:
    if value is not None and (
        isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_INT
    ):
        raise InvalidJob(f"{what} must be a whole number 1 or more, not {value!r}")


def check_limit(limit: object) -> Limit:
    """A Limit for Store.set_limit: scope, name and every count checked."""
    if not isinstance(limit, Limit):
        raise InvalidJob("not a Limit")
    if limit.scope not in ("queue", "type"):
        raise InvalidJob(f"a limit's scope is queue or type, not {limit.scope!r}")
    if limit.name == ALL_QUEUES:
        if limit.scope != "queue" or limit.concurrency is not None or limit.rate is not None:
            raise InvalidJob(f"a limit on {ALL_QUEUES} (every queue) takes max_depth alone")
    else:
        check_name(limit.scope, limit.name)
    _count("concurrency", limit.concurrency)
    _count("rate", limit.rate)
    _count("burst", limit.burst)
    _count("max_depth", limit.max_depth)
    period = limit.period
    if (
        isinstance(period, bool)
        or not isinstance(period, int | float)
        or not math.isfinite(period)
        or period <= 0
    ):
        raise InvalidJob(f"a limit's period must be a number of seconds > 0, not {period!r}")
    if limit.max_depth is not None and limit.scope != "queue":
        raise InvalidJob("max_depth is a limit of a queue, not of a job type")
    return limit


def check_periodic(periodic: object) -> Periodic:
    """A Periodic for Store.set_periodic (its cron expression and time zone are
    distqueue.schedules' to check)."""
    if not isinstance(periodic, Periodic):
        raise InvalidJob("not a Periodic")
    check_name("schedule name", periodic.name)
    if (periodic.cron is None) == (periodic.every is None):
        raise InvalidJob("a schedule has a cron expression or an interval (every), one of them")
    if periodic.cron is not None and (
        not isinstance(periodic.cron, str) or not 1 <= len(periodic.cron) <= 200
    ):
        raise InvalidJob("a cron expression is a string of 1-200 characters")
    if periodic.every is not None:
        every = periodic.every
        if (
            isinstance(every, bool)
            or not isinstance(every, int | float)
            or not math.isfinite(every)
            or every < 1
        ):
            raise InvalidJob(f"every must be a number of seconds, 1 or more, not {every!r}")
    if not isinstance(periodic.timezone, str) or not 1 <= len(periodic.timezone) <= 64:
        raise InvalidJob("timezone must be an IANA name such as UTC or Europe/Paris")
    if not isinstance(periodic.spec, dict) or not isinstance(periodic.spec.get("type"), str):
        raise InvalidJob("a schedule's spec is a JSON object with a job type")
    codec.dumps(periodic.spec, "schedule spec")
    if periodic.catch_up not in ("once", "skip"):
        raise InvalidJob(f"catch_up must be once or skip, not {periodic.catch_up!r}")
    if not isinstance(periodic.paused, bool):
        raise InvalidJob("paused must be true or false")
    if not isinstance(periodic.next_at, int | float) or not math.isfinite(periodic.next_at):
        raise InvalidJob("next_at must be a time (epoch seconds)")
    return periodic


def periodic_key(name: str, tick: float) -> str:
    """The unique key of the job a schedule's tick submits (Store.fire_periodic)."""
    return f"periodic:{name}:{tick:.6f}"
