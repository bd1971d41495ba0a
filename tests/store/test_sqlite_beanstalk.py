"""The embedded store's side of beanstalk's operations (#16): requeue, touch, fail
with a priority, kick, kick_job and peek keep the in-memory indexes in step with the
rows (across a restart too), go through flow control's parking as release does, and
find what they kick or peek through the partial indexes (made on an older file at
open as well): work bounded by what they return."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from distqueue.errors import IllegalTransition
from distqueue.jobs import Job, JobError, JobSpec, JobState
from distqueue.store.base import Limit
from distqueue.store.sqlite import DB_NAME, FULL_COLS, SQLiteStore, _by_queue

S = JobState
T0 = 1_000_000.0
BURIED = JobError(kind="buried", message="set aside")
INDEXES = ("jobs_dead_queue", "jobs_dead_queue_type", "jobs_due_queue", "jobs_due_queue_type")


def spec(**kw: Any) -> JobSpec:
    kw.setdefault("type", "t")
    return JobSpec(**kw)


async def ids_of(store: SQLiteStore, *specs: JobSpec, now: float = T0) -> list[int]:
    return [e.id for e in await store.enqueue(list(specs), now)]


async def get(store: SQLiteStore, job_id: int) -> Job:
    job = await store.get(job_id)
    assert job is not None
    return job


def _in_step(store: SQLiteStore) -> None:
    """(writer thread) The memory says what the rows say."""
    db = store._conn
    counts = {k: v for k, v in store._counts.items() if v}
    rows = {(q, s): n for q, s, n in db.execute(
        "SELECT queue, state, count(*) FROM jobs GROUP BY queue, state")}  # fmt: skip
    assert counts == rows
    by_prio = dict(db.execute("SELECT priority, count(*) FROM jobs WHERE state = 'queued'"
                              " GROUP BY priority"))  # fmt: skip
    assert store._ready.by_priority == by_prio
    queued = {jid for (jid,) in db.execute("SELECT id FROM jobs WHERE state = 'queued'")}
    assert set(store._ready._entry) == queued
    due = {
        jid: (run_at, q, t, p)
        for jid, run_at, q, t, p in db.execute(
            "SELECT id, run_at, queue, type, priority FROM jobs"
            " WHERE state IN ('scheduled', 'retrying')"
        )
    }
    assert store._schedule._jobs == due
    running = dict(db.execute(
        "SELECT id, lease_until FROM jobs WHERE state = 'running'"))  # fmt: skip
    assert {jid: r.lease_until for jid, r in store._running.items()} == running
    # every pair the ready index has is in its per-queue index of types, and back
    pairs = set(store._ready._queues) | set(store._ready._parked)
    assert {(q, t) for q, ts in store._ready._types.items() for t in ts} == pairs


async def in_step(store: SQLiteStore) -> None:
    await store._writer.call(_in_step, store, durable=False)


@pytest.fixture
async def store(tmp_path: Path) -> Any:
    s = await SQLiteStore.open(tmp_path, synchronous="OFF")
    yield s
    await s.close()


async def test_the_indexes_come_to_an_older_file_at_open(tmp_path: Path) -> None:
    store = await SQLiteStore.open(tmp_path)
    [a] = await ids_of(store, spec(max_retries=0))
    [ja] = await store.claim("w", 1, T0)
    await store.fail(a, ja.token, BURIED, T0, retryable=False)
    await store.close()
    db = sqlite3.connect(tmp_path / DB_NAME)
    for name in INDEXES:
        db.execute(f"DROP INDEX {name}")
    db.commit()
    db.close()
    store = await SQLiteStore.open(tmp_path)
    try:
        found = store._conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")
        names = {name for (name,) in found}
        assert set(INDEXES) <= names
        peeked = await store.peek("default", S.DEAD, type="t")
        assert peeked is not None and peeked.id == a
        assert await store.kick("default", 5, T0) == [a]
        await in_step(store)
    finally:
        await store.close()


async def test_kick_and_peek_search_their_index_without_a_sort(store: SQLiteStore) -> None:
    for kind in ("dead", "due"):
        for type_ in (None, "t"):
            sql = _by_queue(kind, FULL_COLS, type_)
            params = ("q", 1) if type_ is None else ("q", type_, 1)
            plan = " ".join(row[3] for row in store._conn.execute(
                "EXPLAIN QUERY PLAN " + sql, params))  # fmt: skip
            assert "SEARCH jobs USING INDEX jobs_" in plan, plan
            assert "TEMP B-TREE" not in plan, plan


async def test_a_type_kick_skips_other_types_in_the_index(store: SQLiteStore) -> None:
    many = await ids_of(store, *[spec(type="other", max_retries=0) for _ in range(50)])
    [mine] = await ids_of(store, spec(max_retries=0))
    jobs = await store.claim("w", 51, T0, lease=60)
    for k, job in enumerate(sorted(jobs, key=lambda j: j.id != mine)):
        await store.fail(job.id, job.token, BURIED, T0 + k, retryable=False)
    assert await store.kick("default", 1, T0 + 99, type="t") == [mine]
    assert await store.kick("default", 1, T0 + 99, type="t") == []
    assert await store.kick("default", 3, T0 + 99) == many[:3]
    await in_step(store)


async def test_a_cancel_sticks_and_its_waiters_move_on(store: SQLiteStore) -> None:
    [a] = await ids_of(store, spec())
    [waiter] = await ids_of(store, spec(type="w2", after=(a,)))
    [ja] = await store.claim("w", 1, T0, lease=60, types=["t"])
    assert await store.cancel(a, T0) is S.RUNNING
    assert await store.requeue(a, ja.token, T0, priority=1) is S.CANCELLED
    assert (await get(store, waiter)).state is S.CANCELLED
    assert (await get(store, a)).priority == 1
    stats = await store.stats()
    assert stats.by_state["cancelled"] == 2 and stats.totals["cancelled"] == 2
    await in_step(store)


async def test_requeue_frees_a_concurrency_slot_and_goes_back_in(store: SQLiteStore) -> None:
    await store.set_limit(Limit(scope="type", name="t", concurrency=1))
    a, b = await ids_of(store, spec(priority=5), spec(priority=5))
    [ja] = await store.claim("w", 2, T0, lease=60)
    assert await store.claim("w", 1, T0) == []  # the pair is parked at the limit
    peeked = await store.peek("default", S.QUEUED)  # limits aside
    assert peeked is not None and peeked.id == b
    assert await store.requeue(a, ja.token, T0, priority=9) is S.QUEUED
    await in_step(store)
    [jb] = await store.claim("w", 2, T0)
    assert jb.id == b
    assert await store.requeue(b, jb.token, T0, run_at=T0 + 5) is S.SCHEDULED
    assert [j.id for j in await store.claim("w", 2, T0)] == [a]
    await in_step(store)


async def test_a_retrying_job_comes_back_at_the_priority_its_fail_gave(
    store: SQLiteStore,
) -> None:
    [a] = await ids_of(store, spec(priority=5, max_retries=3))
    [b] = await ids_of(store, spec(priority=3))
    [ja] = await store.claim("w", 1, T0, lease=60)
    assert ja.id == b  # the most urgent first
    [ja] = await store.claim("w", 1, T0, lease=60)
    out = await store.fail(a, ja.token, BURIED, T0, priority=1)
    assert out.state is S.RETRYING and out.run_at is not None
    await in_step(store)
    assert await store.promote(out.run_at) == [a]
    assert (await store.stats()).queued_by_priority == {1: 1}
    await in_step(store)


async def test_all_of_it_survives_a_restart(tmp_path: Path) -> None:
    store = await SQLiteStore.open(tmp_path)
    a, b, c, d = await ids_of(store, spec(), spec(), spec(max_retries=0), spec(max_retries=5))
    jobs = {j.id: j for j in await store.claim("w", 4, T0, lease=10)}
    assert await store.requeue(a, jobs[a].token, T0, run_at=T0 + 50, priority=7) is S.SCHEDULED
    assert await store.touch(b, jobs[b].token, T0, 100) == T0 + 100
    await store.fail(c, jobs[c].token, BURIED, T0, retryable=False, priority=2)
    out = await store.fail(d, jobs[d].token, BURIED, T0, priority=4)
    await store.close()
    store = await SQLiteStore.open(tmp_path)
    try:
        await in_step(store)
        assert (await get(store, a)).priority == 7
        assert await store.expire(T0 + 99) == []
        assert await store.expire(T0 + 100) == [b]
        peeked = await store.peek("default", S.SCHEDULED)
        assert out.run_at is not None and out.run_at < T0 + 50
        assert peeked is not None and peeked.id == d
        assert await store.kick_job(a, T0 + 1) is S.SCHEDULED
        assert await store.kick("default", 10, T0 + 1) == [c]
        assert await store.kick("default", 10, T0 + 1) == [d]
        assert await store.promote(T0 + 1000) == []  # nothing left scheduled
        await in_step(store)
        stats = await store.stats()
        assert stats.queued_by_priority == {2: 1, 4: 1, 5: 1, 7: 1}
        order = [j.id for j in await store.claim("w", 4, T0 + 2)]
        assert order == [c, d, b, a]
    finally:
        await store.close()


async def test_peek_ready_skips_what_left_the_queue(store: SQLiteStore) -> None:
    a, b, c = await ids_of(store, spec(priority=2), spec(priority=2, type="u"), spec(priority=1))
    peeked = await store.peek("default", S.QUEUED)
    assert peeked is not None and peeked.id == c
    await store.cancel(c, T0)
    peeked = await store.peek("default", S.QUEUED)
    assert peeked is not None and peeked.id == a  # queued before b, same priority
    await store.cancel(a, T0)
    peeked = await store.peek("default", S.QUEUED, type="t")
    assert peeked is None
    peeked = await store.peek("default", S.QUEUED)
    assert peeked is not None and peeked.id == b
    await store.pause("default", True)
    assert await store.claim("w", 1, T0) == []  # parks the pair
    peeked = await store.peek("default", S.QUEUED, type="u")
    assert peeked is not None and peeked.id == b
    await in_step(store)


async def test_peek_ready_reads_on_the_writer_when_the_reader_keeps_missing_it(
    store: SQLiteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    [a] = await ids_of(store, spec(payload=b"body"))
    monkeypatch.setattr(store, "_read_queued", lambda jid: None)
    peeked = await store.peek("default", S.QUEUED)
    assert peeked is not None and (peeked.id, peeked.payload) == (a, b"body")


async def test_kick_job_of_a_retrying_job_and_refusals(store: SQLiteStore) -> None:
    [a] = await ids_of(store, spec(max_retries=3))
    [ja] = await store.claim("w", 1, T0)
    assert (await store.fail(a, ja.token, BURIED, T0)).state is S.RETRYING
    assert await store.kick_job(a, T0) is S.RETRYING
    job = await get(store, a)
    assert (job.state, job.failures, job.run_at) == (S.QUEUED, 1, None)  # nothing reset
    [ja] = await store.claim("w", 1, T0)
    with pytest.raises(IllegalTransition, match="only dead, scheduled or retrying"):
        await store.kick_job(a, T0)
    assert (await get(store, a)).state is S.RUNNING
    await store.complete(a, ja.token, None, T0)
    with pytest.raises(IllegalTransition):
        await store.kick_job(a, T0)
    await in_step(store)
