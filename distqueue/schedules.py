"""Periodic jobs: schedules that submit a job at each tick, however many servers run.

A schedule (Store's ``Periodic``) lives in the store with its next tick; every
server calls ``tick(store, now)`` about once a second, and the store's
``fire_periodic`` makes each tick submit its job once: it is a compare-and-set on
the schedule's next tick, and the job carries the unique key of that tick. The
ticks are computed here: a cron expression (5 fields, or 6 with seconds first, read
in the schedule's IANA time zone, by the cronsim library) or an interval.

A tick found more than MISSED seconds late was missed while nothing ran: with
``catch_up="once"`` one job is submitted for it on recovery (one, however many
ticks were missed), with ``"skip"`` none; either way the next tick is the first one
after now.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from distqueue.errors import InvalidJob, QueueFull
from distqueue.jobs import JobSpec
from distqueue.store.base import Enqueued, Periodic, Store

__all__ = [
    "MISSED", "SPEC_FIELDS", "make_periodic", "next_tick", "spec_from_dict", "spec_to_dict",
    "tick",
]  # fmt: skip

log = logging.getLogger("distqueue.schedules")

#: seconds after which a tick not yet fired counts as missed (see catch_up)
MISSED = 60.0
#: the JobSpec fields a schedule's job may set (a tick's unique key is its own)
SPEC_FIELDS = ("type", "args", "queue", "priority", "max_retries", "timeout")
#: schedules one tick() fires at most (the rest at the next call)
TICK_BATCH = 100


def spec_to_dict(spec: JobSpec) -> dict[str, Any]:
    """The JSON object a schedule keeps of the job it submits."""
    spec.validate()
    if spec.payload is not None or spec.after or spec.unique_key is not None:
        raise InvalidJob("a periodic job has no payload, unique key or dependencies")
    if spec.run_at is not None or spec.deadline is not None:
        raise InvalidJob("a periodic job's run-at is its tick: no run_at or deadline")
    return {name: getattr(spec, name) for name in SPEC_FIELDS}


def spec_from_dict(data: Mapping[str, Any]) -> JobSpec:
    """The JobSpec of a schedule's job; InvalidJob for a field it may not set."""
    unknown = set(data) - set(SPEC_FIELDS)
    if unknown:
        raise InvalidJob(f"a periodic job's spec has no field {sorted(unknown)[0]!r}")
    spec = JobSpec(**data)
    spec.validate()
    return spec


def _zone(name: str) -> ZoneInfo:
    if not name:
        raise InvalidJob("timezone must be an IANA name such as UTC or Europe/Paris, not ''")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidJob(f"unknown time zone {name!r} (an IANA name: UTC, Europe/Paris)") from None


def _cron_next(expr: str, zone: ZoneInfo, after: float) -> float:
    from cronsim import CronSim, CronSimError

    start = datetime.fromtimestamp(math.floor(after), zone)
    try:
        it = CronSim(expr, start)
        nxt = next(it)
        while nxt.timestamp() <= after:  # (CronSim gives times after a whole second)
            nxt = next(it)
    except CronSimError as exc:
        raise InvalidJob(f"bad cron expression {expr!r}: {exc}") from None
    except StopIteration:
        raise InvalidJob(f"cron expression {expr!r} never matches") from None
    return nxt.timestamp()


def next_tick(periodic: Periodic, after: float) -> float:
    """The schedule's first tick strictly after ``after``."""
    if periodic.cron is not None:
        return _cron_next(periodic.cron, _zone(periodic.timezone), after)
    assert periodic.every is not None
    every = periodic.every
    # on the grid of its last tick, so an interval keeps its phase
    steps = math.floor((after - periodic.next_at) / every) + 1
    return periodic.next_at + max(steps, 1) * every


def make_periodic(
    name: str,
    spec: JobSpec,
    now: float,
    *,
    cron: str | None = None,
    every: float | None = None,
    timezone: str = "UTC",
    catch_up: str = "once",
    paused: bool = False,
) -> Periodic:
    """A schedule checked whole (cron expression and time zone included), its first
    tick the first after ``now`` (an interval's: ``now + every``)."""
    data = spec_to_dict(spec)
    if (cron is None) == (every is None):
        raise InvalidJob("a schedule has a cron expression or an interval (every), one of them")
    if cron is not None:
        cron = " ".join(cron.split())
    periodic = Periodic(
        name=name, cron=cron, every=every, timezone=timezone, spec=data, catch_up=catch_up,
        paused=paused, next_at=now,
    )  # fmt: skip
    from distqueue.store.checks import check_periodic

    check_periodic(periodic)
    first = next_tick(periodic, now)
    return Periodic(
        name=name, cron=cron, every=every, timezone=timezone, spec=data, catch_up=catch_up,
        paused=paused, next_at=first,
    )  # fmt: skip


async def tick(store: Store, now: float, *, limit: int = TICK_BATCH) -> list[Enqueued]:
    """Fire every schedule due at ``now`` (at most ``limit``); return the jobs submitted.

    Safe to run on every server at once: each tick submits its job once. A tick whose
    job cannot be stored (its queue is full, its spec no longer valid) passes
    without one, with a warning: the schedule goes on at its next tick.
    """
    out: list[Enqueued] = []
    for periodic in await store.due_periodics(now, limit):
        due = periodic.next_at
        try:
            following = next_tick(periodic, now)
        except InvalidJob as exc:  # a time zone this machine lacks, say
            log.error("schedule %s cannot compute its next tick: %s", periodic.name, exc)
            continue
        missed = now - due > MISSED
        spec = None
        if not periodic.paused and not (missed and periodic.catch_up == "skip"):
            try:
                spec = spec_from_dict(periodic.spec)
            except InvalidJob as exc:
                log.error("schedule %s: its job is invalid, tick skipped: %s", periodic.name, exc)
        try:
            done = await store.fire_periodic(periodic.name, due, following, spec, now)
        except (QueueFull, InvalidJob) as exc:
            log.warning("schedule %s: tick %.3f passes without a job: %s", periodic.name, due, exc)
            await store.fire_periodic(periodic.name, due, following, None, now)
            continue
        if done is not None:
            out.append(done)
            if missed:
                log.info("schedule %s: missed tick %.3f submitted on recovery", periodic.name, due)
    return out
