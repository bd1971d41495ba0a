"""Transactional enqueue on the PostgreSQL store: a job that exists if, and only if,
the application's own transaction commits.

Jobs go into the store's tables through the application's own psycopg connection, in
whatever transaction it has open: the order row and the job that ships it are
committed together, or neither is. Example::

    import psycopg
    from distqueue import JobSpec
    from distqueue.postgres import enqueue

    with psycopg.connect("postgresql://app@db/shop") as conn:
        with conn.transaction():
            conn.execute("INSERT INTO orders (id, total) VALUES (%s, %s)", (42, 99.5))
            enqueue(conn, JobSpec(type="shop.tasks.ship", args={"order": 42}))
    # committed: the job is queued; a rollback would have left no job at all

``enqueue_async`` is the same for an ``AsyncConnection``. Both take one JobSpec (and
return its Enqueued) or a list (and return a list), check the specs as every store
does (InvalidJob, QueueFull: raised, and the application's transaction is left as it
was: the enqueue ran in a savepoint), keep the store's counters right, and wake the
servers sharing the store with a NOTIFY, which PostgreSQL delivers at commit (and
drops at rollback). A connection in autocommit mode gets a transaction of its own.

The store's schema must exist (``distqueue migrate --store postgresql://...``, or any
server or worker opening the store); ``schema`` names it when it is not the default.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Any, overload

import psycopg
from psycopg.rows import tuple_row

from distqueue.jobs import JobSpec, JobState
from distqueue.store.base import Enqueued
from distqueue.store.checks import check_specs
from distqueue.store.postgres import DEFAULT_SCHEMA, Deltas, Step, enqueue_steps, sql_for

__all__ = ["enqueue", "enqueue_async"]

#: what the servers' watch reads as "jobs became ready, from someone else"
_ORIGIN = f"app{os.getpid()}"


def _steps(specs: Sequence[JobSpec], schema: str, now: float) -> Step[list[Enqueued]]:
    sql = sql_for(schema)
    items = check_specs(specs)
    if not items:
        return []
    deltas = Deltas()
    out = yield from enqueue_steps(sql, items, now, deltas)
    yield from deltas.flush(sql)
    if any(e.created and e.state is JobState.QUEUED for e in out):
        # inside the transaction: delivered when (and only if) it commits
        yield sql["notify"], {"channel": sql.channel, "payload": f"{_ORIGIN} 1 "}
    return out


def _specs(spec_or_specs: JobSpec | Sequence[JobSpec]) -> tuple[list[JobSpec], bool]:
    if isinstance(spec_or_specs, JobSpec):
        return [spec_or_specs], True
    return list(spec_or_specs), False


@overload
def enqueue(
    conn: psycopg.Connection[Any], spec_or_specs: JobSpec, *, schema: str = ...,
    now: float | None = ...,
) -> Enqueued: ...  # fmt: skip
@overload
def enqueue(
    conn: psycopg.Connection[Any], spec_or_specs: Sequence[JobSpec], *, schema: str = ...,
    now: float | None = ...,
) -> list[Enqueued]: ...  # fmt: skip
def enqueue(
    conn: psycopg.Connection[Any],
    spec_or_specs: JobSpec | Sequence[JobSpec],
    *,
    schema: str = DEFAULT_SCHEMA,
    now: float | None = None,
) -> Enqueued | list[Enqueued]:
    """Enqueue in the transaction ``conn`` has open (see the module's doc)."""
    specs, one = _specs(spec_or_specs)
    steps = _steps(specs, schema, time.time() if now is None else now)
    with conn.transaction(), conn.cursor(row_factory=tuple_row) as cur:
        rows: Any = None
        while True:
            try:
                sql, params = steps.send(rows)
            except StopIteration as stop:
                out: list[Enqueued] = stop.value
                break
            cur.execute(sql, params)
            rows = cur.fetchall() if cur.description is not None else []
    return out[0] if one else out


@overload
async def enqueue_async(
    conn: psycopg.AsyncConnection[Any], spec_or_specs: JobSpec, *, schema: str = ...,
    now: float | None = ...,
) -> Enqueued: ...  # fmt: skip
@overload
async def enqueue_async(
    conn: psycopg.AsyncConnection[Any], spec_or_specs: Sequence[JobSpec], *,
    schema: str = ..., now: float | None = ...,
) -> list[Enqueued]: ...  # fmt: skip
async def enqueue_async(
    conn: psycopg.AsyncConnection[Any],
    spec_or_specs: JobSpec | Sequence[JobSpec],
    *,
    schema: str = DEFAULT_SCHEMA,
    now: float | None = None,
) -> Enqueued | list[Enqueued]:
    """``enqueue`` for an asyncio connection."""
    specs, one = _specs(spec_or_specs)
    steps = _steps(specs, schema, time.time() if now is None else now)
    async with conn.transaction(), conn.cursor(row_factory=tuple_row) as cur:
        rows: Any = None
        while True:
            try:
                sql, params = steps.send(rows)
            except StopIteration as stop:
                out: list[Enqueued] = stop.value
                break
            await cur.execute(sql, params)
            rows = await cur.fetchall() if cur.description is not None else []
    return out[0] if one else out
