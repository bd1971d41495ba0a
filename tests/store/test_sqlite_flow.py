"""The embedded store's side of workflows and flow control (#14): what its file keeps
across a restart (waiting jobs, a cascade left half done, token buckets), the
partial index's migration, and the structure that keeps a claim's work bounded by
the (queue, type) pairs that can give a job (parking). Checked by what the store
holds, never by the clock."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from distqueue.errors import InvalidJob, QueueFull
from distqueue.jobs import MAX_WAITERS, JobError, JobSpec, JobState
from distqueue.store.base import ALL_QUEUES, Limit, Periodic
from distqueue.store.sqlite import CASCADE, DB_NAME, SQLiteStore

S = JobState
T0 = 1_000_000.0
LONG = 100_000.0
ERR = JobError(kind="Boom", message="it broke")


async def _open(path: Path) -> SQLiteStore:
    return await SQLiteStore.open(path, synchronous="OFF")


async def _state(store: SQLiteStore, jid: int) -> JobState:
    job = await store.get(jid)
    assert job is not None
    return job.state


async def _run(store: SQLiteStore, jid: int, now: float, *, ok: bool = True) -> None:
    found = await store.get(jid)
    assert found is not None
    [job] = await store.claim("w", 1, now, types=[found.type], lease=LONG)
    assert job.id == jid
    if ok:
        await store.complete(jid, job.token, None, now)
    else:
        await store.fail(jid, job.token, ERR, now, retryable=False)


async def test_waiting_jobs_survive_a_restart(tmp_path: Path) -> None:
    store = await _open(tmp_path)
    [a, b, c] = [e.id for e in await store.enqueue(
        [JobSpec(type="a"), JobSpec(type="b"), JobSpec(type="c")], T0)]  # fmt: skip
    [d, e] = [x.id for x in await store.enqueue(
        [JobSpec(type="d", after=(a, b)), JobSpec(type="e", after=(b, c), on_failure="run",
                                                  run_at=T0 + 50)],
        T0)]  # fmt: skip
    await _run(store, a, T0, ok=False)  # d: cancelled at once, waits for b no more
    assert await _state(store, d) is S.CANCELLED
    await store.close()
    store = await _open(tmp_path)
    try:
        assert list(store._waiting) == [e] and store._waiting[e].pending == {b, c}
        assert store._waiters == {b: {e}, c: {e}}
        await _run(store, b, T0 + 1, ok=False)  # counts as done for e (on_failure run)
        assert await _state(store, e) is S.WAITING
        await _run(store, c, T0 + 2)
        job = await store.get(e)
        assert job is not None and (job.state, job.run_at) == (S.SCHEDULED, T0 + 50)
        assert store._waiting == {} and store._waiters == {}
        assert store._conn.execute("SELECT count(*) FROM waits").fetchone() == (0,)
    finally:
        await store.close()


async def test_a_retried_dependency_is_not_waited_for_again(tmp_path: Path) -> None:
    """e (on_failure run) counted a as done when it died; a retried (even across a
    restart) does not hold e back again, and b's end releases it."""
    store = await _open(tmp_path)
    [a, b] = [x.id for x in await store.enqueue([JobSpec(type="a"), JobSpec(type="b")], T0)]
    [e] = [x.id for x in await store.enqueue([JobSpec(type="e", after=(a, b), on_failure="run")],
                                               T0)]  # fmt: skip
    await _run(store, a, T0, ok=False)
    await store.retry(a, T0 + 1)
    await store.close()
    store = await _open(tmp_path)
    try:
        assert await _state(store, a) is S.QUEUED
        await _run(store, b, T0 + 2)
        assert await _state(store, e) is S.QUEUED
    finally:
        await store.close()


async def test_a_long_cascade_goes_on_in_bounded_operations(tmp_path: Path) -> None:
    """A chain of jobs each waiting for the one before: its head dying cancels CASCADE
    waiters in that operation, the rest by the next promotes (next_wakeup says now),
    and what is left when the store closes goes on after the reopen."""
    n = 2 * CASCADE + 50
    store = await _open(tmp_path)
    [head] = [x.id for x in await store.enqueue([JobSpec(type="head")], T0)]
    chain = [head]
    for _ in range(n):
        [x] = await store.enqueue([JobSpec(type="link", after=(chain[-1],))], T0)
        chain.append(x.id)
    await _run(store, head, T0, ok=False)
    stats = await store.stats()
    # the direct waiter, then CASCADE more
    assert stats.by_state["cancelled"] == 1 + CASCADE
    assert stats.by_state["waiting"] == n - 1 - CASCADE
    assert await store.next_wakeup() == 0.0
    await store.close()
    store = await _open(tmp_path)
    try:
        assert len(store._cascade) == 1
        assert await store._writer.call(store._op_promote, T0 + 1, 1000) == []
        assert (await store.stats()).by_state["waiting"] == n - 1 - CASCADE - 1000
        await store.promote(T0 + 1)
        stats = await store.stats()
        assert stats.by_state["waiting"] == 0 and stats.by_state["cancelled"] == n
        assert await store.next_wakeup() is None
        assert store._conn.execute("SELECT count(*) FROM waits").fetchone() == (0,)
    finally:
        await store.close()


async def test_retry_of_a_job_whose_cascade_is_left_moves_its_waiters_first(
    tmp_path: Path,
) -> None:
    store = await _open(tmp_path)
    try:
        [head] = [x.id for x in await store.enqueue([JobSpec(type="head")], T0)]
        chain = [head]
        for _ in range(CASCADE + 3):
            [x] = await store.enqueue([JobSpec(type="link", after=(chain[-1],))], T0)
            chain.append(x.id)
        await _run(store, head, T0, ok=False)
        left = chain[CASCADE + 1]  # cancelled; its waiter not moved on yet
        assert await _state(store, left) is S.CANCELLED
        assert await _state(store, chain[CASCADE + 2]) is S.WAITING
        await store.retry(left, T0 + 1)
        assert await _state(store, chain[CASCADE + 2]) is S.CANCELLED
        await store.promote(T0 + 1)
        assert (await store.stats()).by_state["waiting"] == 0
    finally:
        await store.close()


async def test_max_waiters_counts_live_waiters(tmp_path: Path) -> None:
    store = await _open(tmp_path)
    try:
        [a] = [x.id for x in await store.enqueue([JobSpec(type="a")], T0)]
        await store.enqueue([JobSpec(type="w", after=(a,)) for _ in range(MAX_WAITERS - 1)], T0)
        with pytest.raises(InvalidJob, match="job 1: 1000 jobs wait for job"):
            await store.enqueue([JobSpec(type="w", after=(a,))] * 2, T0)
        assert len(store._waiters[a]) == MAX_WAITERS - 1
        [last] = await store.enqueue([JobSpec(type="w", after=(a,))], T0)
        await store.cancel(last.id, T0)  # a cancelled waiter frees its place
        await store.enqueue([JobSpec(type="w", after=(a,))], T0)
        await _run(store, a, T0)  # one operation moves every waiter
        assert (await store.stats()).by_state["queued"] == MAX_WAITERS
    finally:
        await store.close()


async def test_a_token_bucket_survives_a_restart(tmp_path: Path) -> None:
    store = await _open(tmp_path)
    await store.set_limit(Limit(scope="type", name="r", rate=1, period=60.0, burst=2))
    await store.enqueue([JobSpec(type="r") for _ in range(5)], T0)
    assert len(await store.claim("w", 5, T0, lease=LONG)) == 2
    await store.close()
    store = await _open(tmp_path)
    try:
        assert await store.claim("w", 5, T0 + 1) == []  # no fresh burst
        wake = await store.next_wakeup()
        assert wake is not None and T0 + 59 < wake <= T0 + 60
        assert len(await store.claim("w", 5, T0 + 60)) == 1
        # the same limit set again keeps its bucket; a changed one starts full
        await store.set_limit(Limit(scope="type", name="r", rate=1, period=60.0, burst=2))
        assert await store.claim("w", 5, T0 + 61) == []
        await store.set_limit(Limit(scope="type", name="r", rate=1, period=60.0, burst=3))
        assert len(await store.claim("w", 5, T0 + 61)) == 2
    finally:
        await store.close()


async def test_pairs_held_back_are_parked_and_unparked(tmp_path: Path) -> None:
    """1000 types at their concurrency limit, with jobs queued, stay out of the walk of
    every claim; a slot freed puts just its pair back."""
    store = await _open(tmp_path)
    try:
        for i in range(1000):
            await store.set_limit(Limit(scope="type", name=f"lim{i}", concurrency=1))
        await store.enqueue([JobSpec(type=f"lim{i}") for i in range(1000) for _ in range(2)], T0)
        held = await store.claim("w", 5000, T0, lease=LONG)
        assert len(held) == 1000
        await store.enqueue([JobSpec(type="free") for _ in range(10)], T0)
        assert len(await store.claim("w", 5, T0, lease=LONG)) == 5
        assert list(store._ready._queues) == [("default", "free")]
        assert len(store._ready._parked) == 1000
        first = held[0]
        await store.complete(first.id, first.token, None, T0)
        assert ("default", first.type) in store._ready._queues
        [again] = await store.claim("w", 1, T0, types=[first.type], lease=LONG)
        assert again.type == first.type
        # removing every limit puts every pair back
        for i in range(1000):
            await store.set_limit(Limit(scope="type", name=f"lim{i}"))
        assert store._ready._parked == {} and not store._gated
        assert len(await store.claim("w", 5000, T0)) == 999 + 5
    finally:
        await store.close()


async def test_a_paused_queue_is_parked_until_resumed(tmp_path: Path) -> None:
    store = await _open(tmp_path)
    try:
        await store.enqueue([JobSpec(type="t", queue="q"), JobSpec(type="t", queue="r")], T0)
        await store.pause("q", True)
        [job] = await store.claim("w", 5, T0)
        assert job.queue == "r" and ("q", "t") in store._ready._parked
        await store.close()
        store = await _open(tmp_path)
        assert await store.paused() == ["q"]
        assert await store.claim("w", 5, T0) == []
        await store.pause("q", False)
        assert [j.queue for j in await store.claim("w", 5, T0)] == ["q"]
    finally:
        await store.close()


async def test_depth_messages(tmp_path: Path) -> None:
    store = await _open(tmp_path)
    try:
        await store.set_limit(Limit(scope="queue", name="q", max_depth=2))
        await store.set_limit(Limit(scope="queue", name=ALL_QUEUES, max_depth=3))
        await store.enqueue([JobSpec(type="t", queue="q")], T0)
        with pytest.raises(QueueFull, match=r"^queue q holds 1 jobs \(max_depth 2\)$"):
            await store.enqueue([JobSpec(type="t", queue="q")] * 2, T0)
        await store.enqueue([JobSpec(type="t", queue="r")] * 2, T0)
        with pytest.raises(QueueFull, match=r"^all queues hold 3 jobs \(max_depth 3\)$"):
            await store.enqueue([JobSpec(type="t", queue="s")], T0)
        assert (await store.stats()).totals["submitted"] == 3
        assert store._next_id == 4  # a refused enqueue takes no id
    finally:
        await store.close()


async def test_an_older_file_gets_the_new_index_and_columns(tmp_path: Path) -> None:
    store = await _open(tmp_path)
    await store.enqueue([JobSpec(type="t")], T0)
    await store.close()
    db = sqlite3.connect(tmp_path / DB_NAME)
    db.executescript(
        "DROP INDEX jobs_state;"
        " CREATE INDEX jobs_state ON jobs (state, id)"
        " WHERE state IN ('scheduled', 'retrying', 'dead', 'cancelled');"
        " ALTER TABLE jobs DROP COLUMN after_ids; ALTER TABLE jobs DROP COLUMN on_failure;"
        " ALTER TABLE jobs DROP COLUMN pass_results;"
        " DROP TABLE waits; DROP TABLE limits; DROP TABLE paused; DROP TABLE periodics;"
    )
    db.close()
    store = await _open(tmp_path)
    try:
        [w] = await store.enqueue([JobSpec(type="t", after=(1,), pass_results=True)], T0)
        assert w.state is S.WAITING
        [job] = await store.list(state=S.WAITING)
        assert (job.id, job.after, job.pass_results) == (w.id, (1,), True)
        plan = store._conn.execute(
            "EXPLAIN QUERY PLAN SELECT id FROM jobs WHERE state = 'waiting'"
            " AND state IN ('waiting', 'scheduled', 'retrying', 'dead', 'cancelled')"
        ).fetchall()
        assert "jobs_state" in str(plan)
    finally:
        await store.close()


async def test_next_wakeup_sees_the_earliest_schedule(tmp_path: Path) -> None:
    store = await _open(tmp_path)
    try:
        await store.set_periodic(Periodic(name="p", every=60, spec={"type": "t"}, next_at=T0 + 30))
        await store.enqueue([JobSpec(type="t", run_at=T0 + 40)], T0)
        assert await store.next_wakeup() == T0 + 30
        answer = await store.fire_periodic("p", T0 + 30, T0 + 90, JobSpec(type="t"), T0 + 30)
        assert answer is not None and answer.state is S.QUEUED
        assert await store.next_wakeup() == T0 + 40
    finally:
        await store.close()
