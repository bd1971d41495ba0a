"""Workflows and flow control (#14), once, for every backend.

Dependencies (JobSpec.after: waiting jobs, released by whatever finishes the last
job they wait for), limits (Limit: concurrency, rate, max_depth), paused queues and
periodic schedules (Periodic, distqueue.schedules.tick) — written from the Store
contract (distqueue/store/base.py), through the ``store``/``backend`` fixtures only.
Time is passed in; nothing sleeps. Every assertion names exact ids, counts and order.
"""

from __future__ import annotations

import asyncio
import random
import re
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from distqueue.errors import IllegalTransition, InvalidJob, QueueFull
from distqueue.jobs import MAX_WAITERS, Job, JobError, JobSpec, JobState
from distqueue.schedules import make_periodic
from distqueue.schedules import tick as run_tick
from distqueue.store import Store
from distqueue.store.base import ALL_QUEUES, Enqueued, Limit, Periodic
from distqueue.store.checks import periodic_key
from tests.conftest import Backend
from tests.contract.test_contract import ids_of, spec

S = JobState
T0 = 1_000_000.0
#: a lease no test outlives: only the tests of leases let one run out
LONG = 100_000.0
ERR = JobError(kind="Boom", message="it broke")
WORKERS = ["w1", "w2", "w3"]


async def get(store: Store, job_id: int) -> Job:
    job = await store.get(job_id)
    assert job is not None, job_id
    return job


async def states(store: Store, *ids: int) -> list[JobState]:
    return [(await get(store, i)).state for i in ids]


async def total_jobs(store: Store) -> int:
    return sum((await store.stats()).by_state.values())


def names(exc: BaseException, *patterns: str) -> None:
    """The error's message names each of ``patterns`` (regular expressions)."""
    for pattern in patterns:
        assert re.search(pattern, str(exc)), (pattern, str(exc))


async def run_one(store: Store, job_id: int, now: float = T0, *, result: Any = None) -> None:
    """Claim the job (it must be the one handed out) and complete it."""
    [job] = await store.claim("w", 1, now, types=[(await get(store, job_id)).type], lease=LONG)
    assert job.id == job_id
    await store.complete(job.id, job.token, result, now)


# -- dependencies ---------------------------------------------------------------------------


class TestDependencies:
    async def test_diamond_runs_in_order(self, store: Store) -> None:
        """a -> b, a -> c, b + c -> d: a first, then b and c, then d after both."""
        [a] = await ids_of(store, spec("a"))
        got = await store.enqueue([spec("b", after=(a,)), spec("c", after=(a,))], T0)
        assert [e.state for e in got] == [S.WAITING, S.WAITING]
        b, c = (e.id for e in got)
        [dd] = await store.enqueue([spec("d", after=(b, c))], T0)
        assert dd.created and dd.state is S.WAITING
        d = dd.id
        assert await states(store, a, b, c, d) == [S.QUEUED, S.WAITING, S.WAITING, S.WAITING]

        [ja] = await store.claim("w", 10, T0, lease=LONG)
        assert ja.id == a
        assert await store.claim("w", 10, T0, lease=LONG) == []
        await store.complete(a, ja.token, "A", T0 + 1)
        assert await states(store, b, c, d) == [S.QUEUED, S.QUEUED, S.WAITING]

        jobs = await store.claim("w", 10, T0 + 2, lease=LONG)
        assert [j.id for j in jobs] == [b, c]
        await store.complete(b, jobs[0].token, "B", T0 + 3)
        assert await states(store, d) == [S.WAITING]
        assert await store.claim("w", 10, T0 + 3, lease=LONG) == []
        await store.complete(c, jobs[1].token, "C", T0 + 4)
        assert await states(store, d) == [S.QUEUED]

        [jd] = await store.claim("w", 10, T0 + 5, lease=LONG)
        assert jd.id == d and jd.after == (b, c)
        await store.complete(d, jd.token, "D", T0 + 6)
        done = [await get(store, i) for i in (a, b, c, d)]
        assert [j.state for j in done] == [S.SUCCEEDED] * 4
        assert [j.started_at for j in done] == [T0, T0 + 2, T0 + 2, T0 + 5]

    async def test_a_dead_dependency_cancels_waiters_in_turn(self, store: Store) -> None:
        """b dies: d (b + c -> d) is cancelled at once, and e (d -> e) in turn."""
        [a] = await ids_of(store, spec("a"))
        b, c = await ids_of(store, spec("b", after=(a,)), spec("c", after=(a,)))
        [d] = await ids_of(store, spec("d", after=(b, c)))
        [e] = await ids_of(store, spec("e", after=(d,)))
        await run_one(store, a)
        jobs = {j.id: j for j in await store.claim("w", 10, T0 + 1, lease=LONG)}
        assert sorted(jobs) == [b, c]
        out = await store.fail(b, jobs[b].token, ERR, T0 + 2, retryable=False)
        assert out.state is S.DEAD
        assert await states(store, c, d, e) == [S.RUNNING, S.CANCELLED, S.CANCELLED]
        # c finishing later changes nothing for d
        await store.complete(c, jobs[c].token, None, T0 + 3)
        assert await states(store, d, e) == [S.CANCELLED, S.CANCELLED]
        assert await store.claim("w", 10, T0 + 4) == []
        stats = await store.stats()
        assert stats.by_state["waiting"] == 0 and stats.by_state["cancelled"] == 2
        # retrying b later does not revive the jobs cancelled because of it
        await store.retry(b, T0 + 5)
        assert await states(store, b, d, e) == [S.QUEUED, S.CANCELLED, S.CANCELLED]

    async def test_on_failure_run_counts_a_dead_dependency_as_done(self, store: Store) -> None:
        [a] = await ids_of(store, spec("a"))
        b, c = await ids_of(store, spec("b", after=(a,)), spec("c", after=(a,)))
        [d] = await ids_of(store, spec("d", after=(b, c), on_failure="run"))
        [e] = await ids_of(store, spec("e", after=(d,)))
        await run_one(store, a)
        jobs = {j.id: j for j in await store.claim("w", 10, T0 + 1, lease=LONG)}
        await store.fail(b, jobs[b].token, ERR, T0 + 2, retryable=False)
        assert await states(store, d, e) == [S.WAITING, S.WAITING]  # c is not done yet
        await store.complete(c, jobs[c].token, None, T0 + 3)
        assert await states(store, d, e) == [S.QUEUED, S.WAITING]
        [jd] = await store.claim("w", 10, T0 + 4, lease=LONG)
        assert jd.id == d and jd.on_failure == "run"
        await store.complete(d, jd.token, None, T0 + 5)
        assert await states(store, e) == [S.QUEUED]

    async def test_dependencies_finished_at_enqueue(self, store: Store) -> None:
        ok, dead, cancelled, pending = await ids_of(
            store, spec("x"), spec("y", max_retries=0), spec("z"), spec("p", priority=10)
        )
        await run_one(store, ok)
        [job] = await store.claim("w", 1, T0, types=["y"], lease=LONG)
        await store.fail(job.id, job.token, ERR, T0)
        await store.cancel(cancelled, T0)
        assert await states(store, ok, dead, cancelled, pending) == [
            S.SUCCEEDED, S.DEAD, S.CANCELLED, S.QUEUED
        ]  # fmt: skip
        got = await store.enqueue(
            [
                spec(after=(ok,)),  # all succeeded: queued at once
                spec(after=(ok,), run_at=T0 + 50),  # ... or scheduled
                spec(after=(dead,)),  # a dead one, on_failure cancel: created cancelled
                spec(after=(ok, cancelled)),  # a cancelled one: the same
                spec(after=(pending, dead)),  # cancelled, without waiting for pending
                spec(after=(dead, cancelled, ok), on_failure="run"),  # all ended: queued
                spec(after=(dead, pending), on_failure="run"),  # pending: waiting
                spec(after=(ok, pending)),  # waiting
            ],
            T0 + 1,
        )
        want = [S.QUEUED, S.SCHEDULED, S.CANCELLED, S.CANCELLED, S.CANCELLED, S.QUEUED,
                S.WAITING, S.WAITING]  # fmt: skip
        assert [e.state for e in got] == want
        assert all(e.created for e in got)
        assert await states(store, *(e.id for e in got)) == want
        assert await store.promote(T0 + 50) == [got[1].id]
        # cancelled at its creation, it never runs; the waiting ones follow pending
        await run_one(store, pending, T0 + 51)
        assert await states(store, got[6].id, got[7].id) == [S.QUEUED, S.QUEUED]

    async def test_released_into_scheduled_when_its_run_at_is_ahead(self, store: Store) -> None:
        [a] = await ids_of(store, spec("a"))
        soon, later = await ids_of(
            store, spec(after=(a,), run_at=T0 + 5), spec(after=(a,), run_at=T0 + 100)
        )
        assert await states(store, soon, later) == [S.WAITING, S.WAITING]
        await run_one(store, a, T0 + 10)
        assert await states(store, soon, later) == [S.QUEUED, S.SCHEDULED]
        assert [j.id for j in await store.claim("w", 10, T0 + 10, types=["t"])] == [soon]
        assert await store.promote(T0 + 99) == []
        assert await store.promote(T0 + 100) == [later]

    async def test_unknown_dependency_stores_nothing(self, store: Store) -> None:
        [a] = await ids_of(store, spec("a"))
        with pytest.raises(InvalidJob) as exc:
            await store.enqueue([spec(), spec(after=(a, 987654)), spec()], T0)
        names(exc.value, r"\bjob 1\b", r"\b987654\b")
        assert await total_jobs(store) == 1
        # nor a job of the same call: specs wait only for jobs that existed before it
        with pytest.raises(InvalidJob):
            await store.enqueue([spec(), spec(after=(a + 1,))], T0)
        assert await total_jobs(store) == 1
        # nor a job purged
        await run_one(store, a)
        await store.delete(a)
        with pytest.raises(InvalidJob, match=rf"\b{a}\b"):
            await store.enqueue([spec(after=(a,))], T0)
        assert await total_jobs(store) == 0

    async def test_cancel_a_waiting_job(self, store: Store) -> None:
        [a] = await ids_of(store, spec("a"))
        [w] = await ids_of(store, spec(after=(a,)))
        chained, runs = await ids_of(store, spec(after=(w,)), spec(after=(w,), on_failure="run"))
        assert await store.cancel(w, T0 + 1) is S.CANCELLED
        cancelled = await get(store, w)
        assert cancelled.state is S.CANCELLED and cancelled.finished_at == T0 + 1
        # its own waiters move on: cancelled in turn, or queued (on_failure run)
        assert await states(store, chained, runs) == [S.CANCELLED, S.QUEUED]
        with pytest.raises(IllegalTransition):
            await store.cancel(w, T0 + 1)
        # the job it waited for finishing changes nothing
        await run_one(store, a, T0 + 2)
        assert await states(store, w, chained) == [S.CANCELLED, S.CANCELLED]

    async def test_waiting_in_stats_and_list(self, store: Store) -> None:
        [a] = await ids_of(store, spec("a", queue="q1"))
        w1, w2, w3 = await ids_of(
            store,
            spec(after=(a,), queue="q1", priority=0),
            spec(after=(a,), queue="q2"),
            spec(after=(a,), queue="q1"),
        )
        stats = await store.stats()
        assert stats.by_state == {
            "waiting": 3, "scheduled": 0, "queued": 1, "running": 0, "retrying": 0,
            "succeeded": 0, "dead": 0, "cancelled": 0,
        }  # fmt: skip
        assert stats.by_queue == {"q1": {"queued": 1, "waiting": 2}, "q2": {"waiting": 1}}
        assert stats.queued_by_priority == {5: 1}
        assert [j.id for j in await store.list(state=S.WAITING)] == [w3, w2, w1]
        assert [j.id for j in await store.list(state=S.WAITING, queue="q1")] == [w3, w1]
        assert [j.id for j in await store.list(state=S.WAITING, limit=1, before=w3)] == [w2]
        await run_one(store, a)
        stats = await store.stats()
        assert stats.by_state["waiting"] == 0 and stats.by_state["queued"] == 3
        assert stats.queued_by_priority == {0: 1, 5: 2}
        assert await store.list(state=S.WAITING) == []
        # released in priority order, FIFO within one
        got = await store.claim("w", 10, T0 + 1)
        assert [j.id for j in got] == [w1, w2, w3]

    async def test_dependency_fields_round_trip(self, store: Store) -> None:
        a, b = await ids_of(store, spec("a"), spec("b"))
        [plain, dep] = await ids_of(
            store, spec("c"), spec("c", after=(b, a), on_failure="run", pass_results=True)
        )
        job = await get(store, dep)
        assert (job.after, job.on_failure, job.pass_results) == ((b, a), "run", True)
        job = await get(store, plain)
        assert (job.after, job.on_failure, job.pass_results) == ((), "cancel", False)
        await run_one(store, a, result=1)
        await run_one(store, b, result=2)
        # the claim hands them to the worker (it fetches the results of pass_results)
        got = await store.claim("w", 10, T0, types=["c"])
        assert [(j.id, j.after, j.on_failure, j.pass_results) for j in got] == [
            (plain, (), "cancel", False), (dep, (b, a), "run", True)
        ]  # fmt: skip

    async def test_max_waiters(self, store: Store) -> None:
        [a] = await ids_of(store, spec("a"))
        first = await ids_of(store, *[spec(after=(a,)) for _ in range(MAX_WAITERS - 1)])
        assert len(first) == MAX_WAITERS - 1
        # one more would do; two (in one call) would make MAX_WAITERS + 1
        with pytest.raises(InvalidJob, match=rf"\b{a}\b"):
            await store.enqueue([spec(after=(a,)), spec(after=(a,))], T0)
        assert await total_jobs(store) == MAX_WAITERS
        [last] = await ids_of(store, spec(after=(a,)))
        with pytest.raises(InvalidJob) as exc:
            await store.enqueue([spec(after=(a,))], T0)
        names(exc.value, r"\bjob 0\b", rf"\b{a}\b")
        assert (await store.stats()).by_state["waiting"] == MAX_WAITERS
        # the ACK that finishes a releases every one of them
        await run_one(store, a, T0 + 1)
        stats = await store.stats()
        assert stats.by_state["waiting"] == 0 and stats.by_state["queued"] == MAX_WAITERS
        # a job that waits for none any more takes new specs: queued at once
        [e] = await store.enqueue([spec(after=(a,))], T0 + 2)
        assert e.created and e.state is S.QUEUED
        got = await store.claim("w", 3, T0 + 2)
        assert [j.id for j in got] == [*first[:3]]
        assert last > first[-1]

    async def test_unique_key_match_of_a_waiting_job(self, store: Store) -> None:
        [a] = await ids_of(store, spec("a"))
        [w] = await store.enqueue([spec(after=(a,), unique_key="k")], T0)
        [again] = await store.enqueue([spec(after=(a,), unique_key="k")], T0)
        assert (again.id, again.created, again.state) == (w.id, False, S.WAITING)
        assert (await store.stats()).by_state["waiting"] == 1


Driver = Callable[[Store, int, Callable[[], Awaitable[None]]], Awaitable[None]]


async def _complete(store: Store, x: int, _: Any) -> None:
    [job] = await store.claim("w", 1, T0, types=["x"], lease=LONG)
    await store.complete(x, job.token, "ok", T0 + 1)


async def _complete_many(store: Store, x: int, _: Any) -> None:
    [job] = await store.claim("w", 1, T0, types=["x"], lease=LONG)
    assert await store.complete_many([(x, job.token, "ok")], T0 + 1) == [None]


async def _fail_permanent(store: Store, x: int, _: Any) -> None:
    [job] = await store.claim("w", 1, T0, types=["x"], lease=LONG)
    assert (await store.fail(x, job.token, ERR, T0 + 1, retryable=False)).state is S.DEAD


async def _fail_exhausted(store: Store, x: int, still_waiting: Any) -> None:
    [job] = await store.claim("w", 1, T0, types=["x"], lease=LONG)
    out = await store.fail(x, job.token, ERR, T0 + 1)
    assert out.state is S.RETRYING and out.run_at is not None
    await still_waiting()  # retrying is not finished
    assert await store.promote(out.run_at) == [x]
    [job] = await store.claim("w", 1, out.run_at, types=["x"], lease=LONG)
    assert (await store.fail(x, job.token, ERR, out.run_at)).state is S.DEAD


async def _fail_after_cancel(store: Store, x: int, still_waiting: Any) -> None:
    [job] = await store.claim("w", 1, T0, types=["x"], lease=LONG)
    assert await store.cancel(x, T0) is S.RUNNING
    await still_waiting()  # asked, not yet cancelled
    stopped = JobError(kind="cancelled", message="stopped")
    assert (await store.fail(x, job.token, stopped, T0 + 1)).state is S.CANCELLED


async def _expire_poison(store: Store, x: int, still_waiting: Any) -> None:
    await store.claim("w", 1, T0, types=["x"], lease=1)
    assert await store.expire(T0 + 1) == [x]
    await still_waiting()  # lost once: queued again
    await store.claim("w", 1, T0 + 2, types=["x"], lease=1)
    assert await store.expire(T0 + 3) == [x]


async def _expire_after_cancel(store: Store, x: int, still_waiting: Any) -> None:
    await store.claim("w", 1, T0, types=["x"], lease=1)
    await store.cancel(x, T0)
    await still_waiting()
    assert await store.expire(T0 + 1) == [x]


async def _release_after_cancel(store: Store, x: int, still_waiting: Any) -> None:
    await store.claim("w", 1, T0, types=["x"], lease=LONG)
    await store.cancel(x, T0)
    assert await store.release("w", T0 + 1) == [x]


async def _release_vanished_poison(store: Store, x: int, still_waiting: Any) -> None:
    await store.claim("w", 1, T0, types=["x"], lease=LONG)
    assert await store.release("w", T0 + 1) == [x]  # handed back: not lost
    await still_waiting()
    await store.claim("w", 1, T0 + 1, types=["x"], lease=LONG)
    assert await store.release("w", T0 + 1, vanished=True) == [x]
    await still_waiting()  # lost once: queued again
    await store.claim("w", 1, T0 + 2, types=["x"], lease=LONG)
    assert await store.release("w", T0 + 3, vanished=True) == [x]


async def _claim_past_deadline(store: Store, x: int, _: Any) -> None:
    assert await store.claim("w", 5, T0 + 10, types=["x"]) == []


async def _cancel(store: Store, x: int, _: Any) -> None:
    assert await store.cancel(x, T0 + 1) is S.CANCELLED


async def _cancel_retrying(store: Store, x: int, still_waiting: Any) -> None:
    [job] = await store.claim("w", 1, T0, types=["x"], lease=LONG)
    assert (await store.fail(x, job.token, ERR, T0)).state is S.RETRYING
    await still_waiting()
    assert await store.cancel(x, T0 + 1) is S.CANCELLED


#: path -> (the spec of the job waited for, what finishes it, the state it ends in)
RELEASE_PATHS: dict[str, tuple[dict[str, Any], Driver, JobState]] = {
    "complete": ({}, _complete, S.SUCCEEDED),
    "complete_many": ({}, _complete_many, S.SUCCEEDED),
    "fail_permanent": ({}, _fail_permanent, S.DEAD),
    "fail_retries_exhausted": ({"max_retries": 1}, _fail_exhausted, S.DEAD),
    "fail_after_cancel": ({}, _fail_after_cancel, S.CANCELLED),
    "expire_poison": ({}, _expire_poison, S.DEAD),
    "expire_after_cancel": ({}, _expire_after_cancel, S.CANCELLED),
    "release_after_cancel": ({}, _release_after_cancel, S.CANCELLED),
    "release_vanished_poison": ({}, _release_vanished_poison, S.DEAD),
    "claim_past_deadline": ({"deadline": T0 + 5}, _claim_past_deadline, S.DEAD),
    "cancel_queued": ({}, _cancel, S.CANCELLED),
    "cancel_scheduled": ({"run_at": T0 + 50}, _cancel, S.CANCELLED),
    "cancel_retrying": ({"max_retries": 1}, _cancel_retrying, S.CANCELLED),
}


@pytest.mark.parametrize("path", list(RELEASE_PATHS))
async def test_every_finishing_path_releases_the_waiters(backend: Backend, path: str) -> None:
    """Whatever finishes the job waited for moves its waiters on in the same step."""
    store = await backend.open(poison_limit=1)
    fields, drive, end = RELEASE_PATHS[path]
    [x] = await ids_of(store, spec("x", **fields))
    cancels, runs, two = await ids_of(
        store, spec("w", after=(x,)), spec("w", after=(x,), on_failure="run"), spec("w", after=(x,))
    )
    [chained] = await ids_of(store, spec("w", after=(cancels,)))
    [other] = await ids_of(store, spec("w", after=(two, x)))

    async def still_waiting() -> None:
        assert await states(store, cancels, runs, two, chained, other) == [S.WAITING] * 5

    await still_waiting()
    await drive(store, x, still_waiting)
    assert await states(store, x) == [end]
    if end is S.SUCCEEDED:
        want = [S.QUEUED, S.QUEUED, S.QUEUED, S.WAITING, S.WAITING]
    else:  # on_failure cancel: cancelled, and its own waiters in turn
        want = [S.CANCELLED, S.QUEUED, S.CANCELLED, S.CANCELLED, S.CANCELLED]
    assert await states(store, cancels, runs, two, chained, other) == want
    stats = await store.stats()
    assert stats.by_state["waiting"] == want.count(S.WAITING)


# -- concurrency limits -----------------------------------------------------------------------


def max_overlap(jobs: list[Job]) -> int:
    """The most jobs running at one moment, from the store's started_at/finished_at."""
    spans = [(j.started_at, j.finished_at) for j in jobs]
    assert all(s is not None and f is not None and s < f for s, f in spans), spans
    return max(sum(1 for s, f in spans if s <= t < f) for t, _ in spans)  # type: ignore[operator]


class TestConcurrency:
    async def test_a_type_limit_of_two_holds_with_three_workers(self, store: Store) -> None:
        """3 workers of 8 slots each, ~50 jobs of a type limited to 2 at once: never 3."""
        await store.set_limit(Limit(scope="type", name="lim", concurrency=2))
        ids = await ids_of(store, *[spec("lim", args=[i]) for i in range(50)])
        # three workers ask at once: two jobs between them, the first two
        first = await asyncio.gather(*(store.claim(w, 8, T0, lease=LONG) for w in WORKERS))
        assert sorted(j.id for got in first for j in got) == ids[:2]
        running = {j.id: j.token for got in first for j in got}
        handed = 2
        rng = random.Random(14)
        now = T0
        for _ in range(2000):
            if handed == len(ids) and not running:
                break
            now += rng.choice([0.01, 0.05, 0.25, 1.0])  # every operation at its own time
            action = rng.random()
            if running and action < 0.45:
                job_id = rng.choice(sorted(running))
                await store.complete(job_id, running.pop(job_id), None, now)
            elif running and action < 0.55:
                done = [(i, t, i) for i, t in sorted(running.items())]
                assert await store.complete_many(done, now) == [None] * len(done)
                running.clear()
            else:
                workers = rng.sample(WORKERS, rng.choice([1, 3]))
                got = await asyncio.gather(*(store.claim(w, 8, now, lease=LONG) for w in workers))
                claimed = sorted(j.id for batch in got for j in batch)
                room = min(2 - len(running), len(ids) - handed)
                assert claimed == ids[handed : handed + room]
                handed += room
                running.update({j.id: j.token for batch in got for j in batch})
        assert handed == len(ids) and not running
        jobs = [await get(store, i) for i in ids]
        assert all(j.state is S.SUCCEEDED and j.attempts == 1 for j in jobs)
        assert max_overlap(jobs) == 2

    async def test_unlimited_types_hand_out_fully(self, store: Store) -> None:
        """A limited type at its limit, its jobs first in line, holds up no other type."""
        await store.set_limit(Limit(scope="type", name="lim", concurrency=1))
        lim = await ids_of(store, *[spec("lim", priority=0) for _ in range(20)])
        free = await ids_of(store, *[spec("free", priority=10) for _ in range(6)], now=T0 + 1)
        got = await store.claim("w1", 8, T0 + 2, lease=LONG)
        assert [j.id for j in got] == [lim[0], *free]
        assert await store.claim("w2", 8, T0 + 2) == []
        more = await ids_of(store, spec("free", priority=10), spec("lim", priority=0))
        got2 = await store.claim("w3", 8, T0 + 3, lease=LONG)
        assert [j.id for j in got2] == [more[0]]
        await store.complete(lim[0], got[0].token, None, T0 + 4)
        assert [j.id for j in await store.claim("w3", 8, T0 + 4)] == [lim[1]]

    async def test_a_queue_limit_counts_every_type(self, store: Store) -> None:
        await store.set_limit(Limit(scope="queue", name="q", concurrency=3))
        xs = await ids_of(store, *[spec("x", queue="q") for _ in range(4)])
        ys = await ids_of(store, *[spec("y", queue="q") for _ in range(4)])
        others = await ids_of(store, *[spec("x", queue="other") for _ in range(4)])
        got = await store.claim("w", 20, T0, lease=LONG)
        assert [j.id for j in got] == [*xs[:3], *others]
        assert await store.claim("w", 20, T0, types=["y"]) == []
        await store.complete(xs[0], got[0].token, None, T0 + 1)
        assert [j.id for j in await store.claim("w", 20, T0 + 1, types=["y"])] == [ys[0]]

    async def test_queue_and_type_limits_both_hold(self, store: Store) -> None:
        await store.set_limit(Limit(scope="queue", name="q", concurrency=3))
        await store.set_limit(Limit(scope="type", name="x", concurrency=1))
        xs = await ids_of(store, *[spec("x", queue="q") for _ in range(5)])
        ys = await ids_of(store, *[spec("y", queue="q") for _ in range(5)])
        [elsewhere] = await ids_of(store, spec("x", queue="r"))
        got = await store.claim("w", 10, T0, lease=LONG)
        assert [j.id for j in got] == [xs[0], ys[0], ys[1]]
        assert await store.claim("w", 10, T0) == []  # x in r too: the type is at its limit
        await store.complete(xs[0], got[0].token, None, T0 + 1)
        assert [j.id for j in await store.claim("w", 10, T0 + 1)] == [xs[1]]
        await store.complete(ys[0], got[1].token, None, T0 + 2)
        assert [j.id for j in await store.claim("w", 10, T0 + 2)] == [ys[2]]
        assert (await get(store, elsewhere)).state is S.QUEUED

    async def test_what_frees_a_slot(self, store: Store) -> None:
        """A slot is a running job: expire, release and a retryable fail free it; a
        cancel asked of a running job does not (it still runs)."""
        await store.set_limit(Limit(scope="type", name="t", concurrency=2))
        ids = await ids_of(store, *[spec(max_retries=5) for _ in range(6)])
        a, b = await store.claim("w", 8, T0, lease=5)
        assert (a.id, b.id) == (ids[0], ids[1])
        assert await store.cancel(a.id, T0) is S.RUNNING
        assert await store.claim("w2", 8, T0) == []
        assert await store.expire(T0 + 5) == [a.id, b.id]  # a ends cancelled, b queued again
        got = await store.claim("w2", 8, T0 + 6, lease=LONG)
        assert [j.id for j in got] == [ids[2], ids[3]]
        assert (await store.fail(ids[2], got[0].token, ERR, T0 + 6)).state is S.RETRYING
        assert [j.id for j in await store.claim("w2", 8, T0 + 7, lease=LONG)] == [ids[4]]
        assert await store.release("w2", T0 + 8) == [ids[3], ids[4]]
        got = await store.claim("w3", 8, T0 + 8, lease=LONG)
        assert [j.id for j in got] == [ids[5], ids[1]]

    async def test_a_lower_limit_leaves_running_jobs_running(self, store: Store) -> None:
        ids = await ids_of(store, *[spec() for _ in range(5)])
        jobs = await store.claim("w", 3, T0, lease=LONG)
        await store.set_limit(Limit(scope="type", name="t", concurrency=2))
        assert [j.state for j in await store.list(state=S.RUNNING)] == [S.RUNNING] * 3
        assert await store.claim("w", 5, T0) == []
        await store.complete(jobs[0].id, jobs[0].token, None, T0 + 1)
        assert await store.claim("w", 5, T0 + 1) == []
        await store.complete(jobs[1].id, jobs[1].token, None, T0 + 2)
        assert [j.id for j in await store.claim("w", 5, T0 + 2)] == [ids[3]]
        # removed: hands out fully again
        await store.set_limit(Limit(scope="type", name="t"))
        assert [j.id for j in await store.claim("w", 5, T0 + 3)] == [ids[4]]


# -- rate limits ------------------------------------------------------------------------------


class TestRate:
    async def test_a_rate_holds_within_one_token_over_ten_seconds(self, store: Store) -> None:
        rate = 3
        await store.set_limit(Limit(scope="type", name="r", rate=rate, period=1, burst=1))
        ids = await ids_of(store, *[spec("r") for _ in range(rate * 10 + 10)])
        [free] = await ids_of(store, spec("free"))
        rng = random.Random(7)
        now = T0
        handed: list[int] = []
        while now <= T0 + 10:
            got = await store.claim(rng.choice(WORKERS), 50, now, lease=LONG)
            if free in [j.id for j in got]:
                got = [j for j in got if j.id != free]
            assert len(got) <= 1  # burst 1: evenly spaced, one at a time
            handed += [j.id for j in got]
            now += rng.uniform(0.001, 0.01)
        assert handed == ids[: len(handed)]  # in FIFO order
        assert rate * 10 - 1 <= len(handed) <= rate * 10 + 1
        jobs = [await get(store, i) for i in handed]
        starts = sorted(j.started_at or 0.0 for j in jobs)
        assert starts[0] == T0  # a new limit starts with a full bucket
        # never more than burst + rate in any one second
        assert max(sum(1 for t in starts if s <= t <= s + 1) for s in starts) <= rate + 1

    async def test_a_burst_allows_that_many_at_once(self, store: Store) -> None:
        await store.set_limit(Limit(scope="type", name="t", rate=1, period=1, burst=5))
        ids = await ids_of(store, *[spec() for _ in range(20)])
        handed: list[int] = []
        for at, want in [(0, 5), (0.5, 0), (1, 1), (3, 2), (100, 5), (100, 0)]:
            got = await store.claim("w", 10, T0 + at, lease=LONG)
            assert len(got) == want, at
            handed += [j.id for j in got]
        assert handed == ids[:13]

    async def test_a_period_of_ten_seconds(self, store: Store) -> None:
        await store.set_limit(Limit(scope="queue", name="q", rate=2, period=10, burst=2))
        ids = await ids_of(store, *[spec(queue="q") for _ in range(10)])
        [other] = await ids_of(store, spec(queue="other"))
        got = await store.claim("w", 10, T0, lease=LONG)
        assert [j.id for j in got] == [*ids[:2], other]  # the other queue is not limited
        for at, want in [(4, 0), (5.5, 1), (9, 0), (11, 1), (40, 2)]:
            assert len(await store.claim("w", 10, T0 + at, lease=LONG)) == want, at

    async def test_expired_jobs_cost_no_token(self, store: Store) -> None:
        await store.set_limit(Limit(scope="type", name="t", rate=1, period=60, burst=1))
        late = await ids_of(store, *[spec(deadline=T0 + 1) for _ in range(3)])
        [ok] = await ids_of(store, spec())
        assert [j.id for j in await store.claim("w", 10, T0 + 2)] == [ok]
        assert await states(store, *late) == [S.DEAD] * 3

    async def test_a_type_out_of_tokens_holds_up_no_other(self, store: Store) -> None:
        await store.set_limit(Limit(scope="type", name="r", rate=1, period=60))
        rs = await ids_of(store, *[spec("r", priority=0) for _ in range(5)])
        others = await ids_of(store, *[spec("o", priority=9) for _ in range(3)])
        assert [j.id for j in await store.claim("w", 10, T0)] == [rs[0], *others]
        [late] = await ids_of(store, spec("o", priority=9))
        assert [j.id for j in await store.claim("w", 10, T0 + 1)] == [late]
        assert [j.id for j in await store.claim("w", 10, T0 + 60)] == [rs[1]]


# -- paused queues ----------------------------------------------------------------------------


class TestPause:
    async def test_a_paused_queue_hands_out_nothing(self, store: Store) -> None:
        q = await ids_of(store, *[spec(queue="q") for _ in range(3)])
        others = await ids_of(store, spec(queue="other"), spec(queue="other"))
        [running] = await store.claim("w", 1, T0, queues=["q"], lease=LONG)
        assert running.id == q[0]
        assert await store.paused() == []
        await store.pause("q", True)
        await store.pause("q", True)  # idempotent
        await store.pause("empty", True)  # a queue with no jobs yet
        assert await store.paused() == ["empty", "q"]
        assert await store.claim("w", 10, T0, queues=["q"]) == []
        got = await store.claim("w", 10, T0, lease=LONG)
        assert [j.id for j in got] == others
        # the running job finishes; new jobs are still accepted, and wait
        await store.complete(running.id, running.token, "done", T0 + 1)
        [new] = await ids_of(store, spec(queue="q"))
        assert await states(store, q[1], q[2], new) == [S.QUEUED] * 3
        assert await store.claim("w", 10, T0 + 1) == []
        await store.pause("q", False)
        await store.pause("q", False)
        assert await store.paused() == ["empty"]
        got = await store.claim("w", 10, T0 + 2)
        assert [j.id for j in got] == [q[1], q[2], new]

    async def test_bad_queue_name(self, store: Store) -> None:
        for bad in ("", "has space", "a,b"):
            with pytest.raises(InvalidJob):
                await store.pause(bad, True)
        assert await store.paused() == []

    async def test_a_timed_pause_ends_at_its_end_and_not_before(self, store: Store) -> None:
        q = await ids_of(store, spec(queue="q"), spec(queue="q"))
        [other] = await ids_of(store, spec(queue="other"))
        await store.pause("q", True, until=T0 + 30)
        await store.pause("forever", True)
        assert await store.paused() == ["forever", "q"]
        assert await store.pauses() == {"forever": None, "q": T0 + 30}
        # the housekeeping tick is timed to the end (next_wakeup counts it)
        assert await store.next_wakeup() == T0 + 30
        assert await store.resume_due(T0 + 29.9) == []
        assert await store.paused() == ["forever", "q"]
        # a pause whose end has come holds until resume_due ends it: claims obey it
        assert [j.id for j in await store.claim("w", 10, T0 + 31, lease=LONG)] == [other]
        assert await store.resume_due(T0 + 30) == ["q"]
        assert await store.resume_due(T0 + 30) == []  # ended once
        assert await store.pauses() == {"forever": None}
        # the pause without an end times no tick: the next is the lease of `other`
        assert await store.next_wakeup() == T0 + 31 + LONG
        assert [j.id for j in await store.claim("w", 10, T0 + 31, lease=LONG)] == q

    async def test_a_new_pause_replaces_the_old_one_and_its_end(self, store: Store) -> None:
        await store.pause("a", True, until=T0 + 10)
        await store.pause("a", True, until=T0 + 50)  # later: the first end is gone
        await store.pause("b", True, until=T0 + 10)
        await store.pause("b", True)  # without an end now
        await store.pause("c", True)
        await store.pause("c", True, until=T0 + 20)  # an end given to an open pause
        await store.pause("d", True, until=T0 + 5)
        await store.pause("d", False)  # resumed: its end goes with it
        assert await store.pauses() == {"a": T0 + 50, "b": None, "c": T0 + 20}
        assert await store.next_wakeup() == T0 + 20
        assert await store.resume_due(T0 + 49) == ["c"]
        assert await store.paused() == ["a", "b"]
        assert await store.resume_due(T0 + 50) == ["a"]
        assert await store.pauses() == {"b": None}
        await store.pause("d", True, until=T0 + 60)  # paused again after its resume
        assert await store.resume_due(T0 + 60) == ["d"]

    async def test_resume_due_ends_at_most_max_resume_at_a_time(self, store: Store) -> None:
        from distqueue.store.base import MAX_RESUME

        queues = [f"q{i:03d}" for i in range(MAX_RESUME + 3)]
        for i, queue in enumerate(queues):  # ends in order of the names
            await store.pause(queue, True, until=T0 + i)
        first = await store.resume_due(T0 + 1000)
        assert first == queues[:MAX_RESUME]  # the earliest ends first
        assert await store.next_wakeup() == T0 + MAX_RESUME  # due already: at once
        assert await store.resume_due(T0 + 1000) == queues[MAX_RESUME:]
        assert await store.paused() == []

    async def test_bad_pause_ends_change_nothing(self, store: Store) -> None:
        await store.pause("q", True, until=T0 + 10)
        for bad in (float("nan"), float("inf"), "soon", True):
            with pytest.raises(InvalidJob, match="until"):
                await store.pause("q", True, until=bad)  # type: ignore[arg-type]
        with pytest.raises(InvalidJob, match="until"):
            await store.pause("q", False, until=T0 + 20)  # an end is for a pause
        assert await store.pauses() == {"q": T0 + 10}

    async def test_a_timed_pause_survives_a_restart(self, backend: Backend) -> None:
        store = await backend.open()
        await store.pause("q", True, until=T0 + 30)
        [queued] = await ids_of(store, spec(queue="q"))
        await store.close()
        store = await backend.open()
        assert await store.pauses() == {"q": T0 + 30}
        assert await store.claim("w", 10, T0 + 31, lease=LONG) == []
        assert await store.resume_due(T0 + 31) == ["q"]
        assert [j.id for j in await store.claim("w", 10, T0 + 31, lease=LONG)] == [queued]


# -- queue depth ------------------------------------------------------------------------------


def full(queue: str, held: int, depth: int) -> str:
    """QueueFull's message, as a pattern: ``queue <q> holds <n> jobs (max_depth <m>)``;
    for ALL_QUEUES ``queue * holds ...`` (the contract's words) or ``all queues hold
    ...`` (what the backends say)."""
    said = re.escape(f"queue {queue} holds {held} jobs (max_depth {depth})")
    if queue == ALL_QUEUES:
        said += "|" + re.escape(f"all queues hold {held} jobs (max_depth {depth})")
    return f"^(?:{said})$"


class TestDepth:
    async def test_a_full_queue_refuses_then_accepts_once_drained(self, store: Store) -> None:
        await store.set_limit(Limit(scope="queue", name="q", max_depth=5))
        ids = await ids_of(store, *[spec(queue="q", unique_key=f"k{i}") for i in range(5)])
        with pytest.raises(QueueFull, match=full("q", 5, 5)):
            await store.enqueue([spec(queue="q")], T0)
        assert await total_jobs(store) == 5
        # other queues are not limited; a unique key that matches creates nothing
        await ids_of(store, spec(queue="other"))
        [dup] = await store.enqueue([spec(queue="q", unique_key="k3")], T0)
        assert (dup.id, dup.created) == (ids[3], False)
        with pytest.raises(QueueFull, match=full("q", 5, 5)):
            await store.enqueue([spec(queue="q", unique_key="k0"), spec(queue="q")], T0)
        # drain two: room for two more, not three (a batch is stored whole or not at all)
        for job in await store.claim("w", 2, T0, queues=["q"]):
            await store.complete(job.id, job.token, None, T0)
        with pytest.raises(QueueFull, match=full("q", 3, 5)):
            await store.enqueue([spec(queue="q"), spec(queue="other"), spec(queue="q"),
                                 spec(queue="q")], T0)  # fmt: skip
        assert await total_jobs(store) == 6
        # two specs with one key make one job
        got = await store.enqueue(
            [spec(queue="q", unique_key="n"), spec(queue="q", unique_key="n"), spec(queue="q")],
            T0,
        )
        assert [e.created for e in got] == [True, False, True]
        assert (await store.stats()).by_queue["q"] == {"queued": 5, "succeeded": 2}

    async def test_every_unfinished_state_counts(self, store: Store) -> None:
        await store.set_limit(Limit(scope="queue", name="q", max_depth=5))
        run, retry, queued, dead = await ids_of(
            store, spec("r", queue="q"), spec("f", queue="q", max_retries=3), spec(queue="q"),
            spec("d", queue="q", max_retries=0),
        )  # fmt: skip
        jobs = {j.id: j for j in await store.claim("w", 3, T0, types=["r", "f", "d"])}
        await store.fail(retry, jobs[retry].token, ERR, T0)
        await store.fail(dead, jobs[dead].token, ERR, T0)
        await ids_of(store, spec(queue="q", run_at=T0 + 60), spec(queue="q", after=(run,)))
        assert await states(store, run, retry, queued, dead) == [
            S.RUNNING, S.RETRYING, S.QUEUED, S.DEAD
        ]  # fmt: skip
        # running, retrying, queued, scheduled, waiting: 5; the dead one is not counted
        with pytest.raises(QueueFull, match=full("q", 5, 5)):
            await store.enqueue([spec(queue="q")], T0)
        await store.cancel(queued, T0)
        [e] = await store.enqueue([spec(queue="q")], T0)
        assert e.created and e.state is S.QUEUED

    async def test_all_queues_together(self, store: Store) -> None:
        await store.set_limit(Limit(scope="queue", name=ALL_QUEUES, max_depth=4))
        await store.set_limit(Limit(scope="queue", name="small", max_depth=1))
        await ids_of(store, spec(queue="a"), spec(queue="b"), spec(queue="small"))
        with pytest.raises(QueueFull, match=full("small", 1, 1)):
            await store.enqueue([spec(queue="small")], T0)
        [last] = await ids_of(store, spec(queue="c"))
        for q in ("a", "d"):
            with pytest.raises(QueueFull, match=full("*", 4, 4)):
                await store.enqueue([spec(queue=q)], T0)
        assert await total_jobs(store) == 4
        await store.cancel(last, T0)
        await ids_of(store, spec(queue="d"))
        assert await total_jobs(store) == 5

    async def test_a_lower_max_depth_keeps_what_is_held(self, store: Store) -> None:
        await ids_of(store, *[spec(queue="q") for _ in range(7)])
        await store.set_limit(Limit(scope="queue", name="q", max_depth=3))
        with pytest.raises(QueueFull, match=full("q", 7, 3)):
            await store.enqueue([spec(queue="q")], T0)
        assert (await store.stats()).by_state["queued"] == 7
        await store.set_limit(Limit(scope="queue", name="q"))
        await ids_of(store, spec(queue="q"))
        assert (await store.stats()).by_state["queued"] == 8


# -- the limits themselves --------------------------------------------------------------------


class TestLimits:
    async def test_set_replace_remove(self, store: Store) -> None:
        assert await store.limits() == []
        t = Limit(scope="type", name="t", concurrency=2)
        q = Limit(scope="queue", name="q", max_depth=5, concurrency=7)
        every = Limit(scope="queue", name=ALL_QUEUES, max_depth=100)
        a = Limit(scope="type", name="a", rate=3, period=2.5, burst=4)
        for limit in (t, q, every, a):
            await store.set_limit(limit)
        assert await store.limits() == [every, q, a, t]  # by (scope, name)
        # replaced whole: the concurrency set before is gone
        t2 = Limit(scope="type", name="t", rate=5)
        await store.set_limit(t2)
        assert await store.limits() == [every, q, a, t2]
        await store.set_limit(Limit(scope="type", name="a"))  # empty: removes it
        await store.set_limit(Limit(scope="type", name="never-set"))  # nothing to remove
        assert await store.limits() == [every, q, t2]

    @pytest.mark.parametrize(
        "bad",
        [
            {"scope": "job", "name": "t", "concurrency": 1},
            {"scope": "type", "name": "has space", "concurrency": 1},
            {"scope": "queue", "name": "", "concurrency": 1},
            {"scope": "type", "name": "t", "concurrency": 0},
            {"scope": "type", "name": "t", "concurrency": -1},
            {"scope": "type", "name": "t", "rate": 0},
            {"scope": "type", "name": "t", "rate": 1, "burst": 0},
            {"scope": "type", "name": "t", "rate": 1, "period": 0},
            {"scope": "type", "name": "t", "rate": 1, "period": -5},
            {"scope": "queue", "name": "q", "max_depth": 0},
            {"scope": "type", "name": "t", "max_depth": 5},
            {"scope": "queue", "name": ALL_QUEUES, "rate": 5},
            {"scope": "queue", "name": ALL_QUEUES, "concurrency": 5},
            {"scope": "type", "name": ALL_QUEUES, "max_depth": 5},
            {"scope": "type", "name": "t", "concurrency": True},
        ],
    )
    async def test_bad_limits_are_refused(self, store: Store, bad: dict[str, Any]) -> None:
        kept = Limit(scope="type", name="t", concurrency=3)
        await store.set_limit(kept)
        with pytest.raises(InvalidJob):
            await store.set_limit(Limit(**bad))
        assert await store.limits() == [kept]

    async def test_limits_and_pauses_survive_a_restart(self, backend: Backend) -> None:
        store = await backend.open()
        limits = [
            Limit(scope="queue", name=ALL_QUEUES, max_depth=50),
            Limit(scope="queue", name="q", max_depth=4),
            Limit(scope="type", name="t", concurrency=1, rate=100, period=0.5, burst=3),
        ]
        for limit in reversed(limits):
            await store.set_limit(limit)
        await store.pause("stopped", True)
        ids = await ids_of(store, spec(), spec(), spec(queue="stopped"))
        await store.close()
        store = await backend.open()
        assert await store.limits() == limits
        assert await store.paused() == ["stopped"]
        assert [j.id for j in await store.claim("w", 10, T0, lease=LONG)] == [ids[0]]
        await ids_of(store, *[spec(queue="q") for _ in range(4)])
        with pytest.raises(QueueFull, match=full("q", 4, 4)):
            await store.enqueue([spec(queue="q")], T0)


# -- periodic schedules -----------------------------------------------------------------------

#: a Friday, midnight UTC; the US moves to summer time on Sunday the 10th
DAY0 = datetime(2024, 3, 8, tzinfo=UTC).timestamp()
NY = ZoneInfo("America/New_York")
JOB = JobSpec(type="report", args={"k": [1, 2]}, queue="cron", priority=2, max_retries=1,
              timeout=30.0)  # fmt: skip


async def next_at(store: Store, name: str) -> float:
    [p] = [p for p in await store.periodics() if p.name == name]
    return p.next_at


async def check_fired(store: Store, fired: list[Enqueued], name: str, tick: float,
                      now: float, job: JobSpec = JOB) -> None:  # fmt: skip
    """Exactly one job for the tick: its unique key, the schedule's spec, queued now."""
    assert len(fired) == 1, (now, fired)
    assert fired[0].created and fired[0].state is S.QUEUED
    got = await get(store, fired[0].id)
    assert got.unique_key == periodic_key(name, tick)
    assert (got.type, got.args, got.queue, got.priority, got.max_retries, got.timeout) == (
        job.type, job.args, job.queue, job.priority, job.max_retries, job.timeout
    )  # fmt: skip
    assert got.created_at == now and got.state is S.QUEUED


async def run_clock(store: Store, name: str, start: float, end: float, step: float,
                    ticks: list[float], job: JobSpec = JOB) -> None:  # fmt: skip
    """Call tick() at every ``step`` from start to end: a job exactly at each of
    ``ticks`` (which lie on the clock's grid), none in between."""
    now = start
    while now <= end:
        fired = await run_tick(store, now)
        if now in ticks:
            await check_fired(store, fired, name, now, now, job)
            later = [t for t in ticks if t > now]
            if later:
                assert await next_at(store, name) == later[0]
        else:
            assert fired == [], now
        now += step


class TestPeriodic:
    async def test_a_5_field_cron_in_a_time_zone(self, store: Store) -> None:
        p = make_periodic("daily", JOB, DAY0, cron="0 9 * * *", timezone="America/New_York")
        ticks = [datetime(2024, 3, day, 9, tzinfo=NY).timestamp() for day in range(8, 13)]
        # 9:00 in New York: 14:00 UTC, and 13:00 from the 10th (summer time)
        assert [t - DAY0 - 86400 * i for i, t in enumerate(ticks)] == [50400.0] * 2 + [46800.0] * 3
        assert p.next_at == ticks[0]
        assert await store.set_periodic(p) == p
        assert await store.periodics() == [p]
        await run_clock(store, "daily", DAY0, DAY0 + 5 * 86400 - 1, 1800, ticks)
        assert await next_at(store, "daily") == datetime(2024, 3, 13, 9, tzinfo=NY).timestamp()
        assert (await store.stats()).by_queue["cron"] == {"queued": 5}

    async def test_a_6_field_cron_with_seconds(self, store: Store) -> None:
        job = JobSpec(type="beat", args=[1])
        p = make_periodic("beat", job, DAY0, cron="15,45 */2 * * * *", timezone="Europe/Paris")
        # seconds 15 and 45 of every even minute
        ticks = [DAY0 + m * 60 + s for m in range(0, 6, 2) for s in (15, 45)]
        assert p.next_at == ticks[0]
        await store.set_periodic(p)
        await run_clock(store, "beat", DAY0, DAY0 + 359, 5, ticks, job)
        assert await next_at(store, "beat") == DAY0 + 360 + 15
        assert await total_jobs(store) == 6

    async def test_an_interval_keeps_its_phase(self, store: Store) -> None:
        p = make_periodic("int", JOB, DAY0 + 0.5, every=30)
        assert p.next_at == DAY0 + 30.5
        await store.set_periodic(p)
        assert await run_tick(store, DAY0 + 30) == []
        fired = await run_tick(store, DAY0 + 31)  # a second late: on its grid still
        await check_fired(store, fired, "int", DAY0 + 30.5, DAY0 + 31)
        assert await next_at(store, "int") == DAY0 + 60.5
        assert await run_tick(store, DAY0 + 45) == []
        await check_fired(store, await run_tick(store, DAY0 + 61), "int", DAY0 + 60.5,
                          DAY0 + 61)  # fmt: skip
        # missed (more than schedules.MISSED late): one job for it, then the grid again
        await check_fired(store, await run_tick(store, DAY0 + 400), "int", DAY0 + 90.5,
                          DAY0 + 400)  # fmt: skip
        assert await next_at(store, "int") == DAY0 + 420.5
        assert await total_jobs(store) == 3

    async def test_paused_ticks_pass_without_jobs(self, store: Store) -> None:
        await store.set_periodic(make_periodic("p", JOB, DAY0, every=60))
        await check_fired(store, await run_tick(store, DAY0 + 60), "p", DAY0 + 60, DAY0 + 60)
        await store.pause_periodic("p", True)
        [p] = await store.periodics()
        assert p.paused and p.next_at == DAY0 + 120
        for t in (120, 180, 240):
            assert await run_tick(store, DAY0 + t) == []
            assert await next_at(store, "p") == DAY0 + t + 60
        await store.pause_periodic("p", False)
        await check_fired(store, await run_tick(store, DAY0 + 300), "p", DAY0 + 300,
                          DAY0 + 300)  # fmt: skip
        assert await total_jobs(store) == 2
        with pytest.raises(InvalidJob):
            await store.pause_periodic("nope", True)

    async def test_remove(self, store: Store) -> None:
        await store.set_periodic(make_periodic("gone", JOB, DAY0, every=60))
        await store.set_periodic(make_periodic("kept", JOB, DAY0, every=120))
        assert await store.remove_periodic("gone") is True
        assert await store.remove_periodic("gone") is False
        assert [p.name for p in await store.periodics()] == ["kept"]
        assert await run_tick(store, DAY0 + 60) == []
        await check_fired(store, await run_tick(store, DAY0 + 120), "kept", DAY0 + 120,
                          DAY0 + 120)  # fmt: skip
        assert await total_jobs(store) == 1

    async def test_set_again_keeps_or_replaces(self, store: Store) -> None:
        first = make_periodic("s", JOB, DAY0, cron="*/5 * * * *")
        assert first.next_at == DAY0 + 300
        await store.set_periodic(first)
        await check_fired(store, await run_tick(store, DAY0 + 300), "s", DAY0 + 300,
                          DAY0 + 300)  # fmt: skip
        await store.pause_periodic("s", True)
        # a worker starting later sets the same definition: the ticks do not move
        again = make_periodic("s", JOB, DAY0 + 610, cron="*/5  *  * * *")
        assert again.next_at == DAY0 + 900 and again.definition == first.definition
        kept = await store.set_periodic(again)
        assert (kept.next_at, kept.paused) == (DAY0 + 600, True)
        assert await store.periodics() == [kept]
        # a changed definition replaces it, as given
        changed = make_periodic("s", spec("other"), DAY0 + 610, cron="*/5 * * * *")
        assert await store.set_periodic(changed) == changed
        assert await store.periodics() == [changed]
        assert await run_tick(store, DAY0 + 610) == []
        job = spec("other")
        await check_fired(store, await run_tick(store, DAY0 + 900), "s", DAY0 + 900,
                          DAY0 + 900, job)  # fmt: skip

    async def test_catch_up_once(self, store: Store) -> None:
        await store.set_periodic(make_periodic("m", JOB, DAY0, cron="* * * * *"))
        await check_fired(store, await run_tick(store, DAY0 + 60), "m", DAY0 + 60, DAY0 + 60)
        # nothing ran for an hour: one job, for the first tick missed
        now = DAY0 + 3630
        await check_fired(store, await run_tick(store, now), "m", DAY0 + 120, now)
        assert await next_at(store, "m") == DAY0 + 3660
        assert await run_tick(store, now + 1) == []
        await check_fired(store, await run_tick(store, DAY0 + 3660), "m", DAY0 + 3660,
                          DAY0 + 3660)  # fmt: skip
        assert await total_jobs(store) == 3

    async def test_catch_up_skip(self, store: Store) -> None:
        p = make_periodic("m", JOB, DAY0, cron="* * * * *", catch_up="skip")
        await store.set_periodic(p)
        # late, but not missed (schedules.MISSED): submitted
        await check_fired(store, await run_tick(store, DAY0 + 90), "m", DAY0 + 60, DAY0 + 90)
        assert await run_tick(store, DAY0 + 3630) == []
        assert await next_at(store, "m") == DAY0 + 3660
        await check_fired(store, await run_tick(store, DAY0 + 3660), "m", DAY0 + 3660,
                          DAY0 + 3660)  # fmt: skip
        assert await total_jobs(store) == 2

    async def test_a_full_queue_passes_the_tick(self, store: Store) -> None:
        await store.set_limit(Limit(scope="queue", name="cron", max_depth=1))
        [held] = await ids_of(store, spec(queue="cron"))
        await store.set_periodic(make_periodic("f", JOB, DAY0, every=60))
        assert await run_tick(store, DAY0 + 60) == []
        assert await next_at(store, "f") == DAY0 + 120
        assert await total_jobs(store) == 1
        await run_one(store, held)
        await check_fired(store, await run_tick(store, DAY0 + 120), "f", DAY0 + 120,
                          DAY0 + 120)  # fmt: skip

    async def test_fire_is_a_compare_and_set(self, store: Store) -> None:
        await store.set_periodic(make_periodic("c", JOB, DAY0, every=60))
        tick = DAY0 + 60
        assert await store.fire_periodic("c", tick - 1, tick + 60, JOB, tick) is None
        assert await store.fire_periodic("nope", tick, tick + 60, JOB, tick) is None
        assert await next_at(store, "c") == tick and await total_jobs(store) == 0
        first = await store.fire_periodic("c", tick, tick + 60, JOB, tick)
        assert first is not None
        await check_fired(store, [first], "c", tick, tick)
        assert await store.fire_periodic("c", tick, tick + 60, JOB, tick) is None
        assert await next_at(store, "c") == tick + 60
        # no spec: the tick passes without a job
        assert await store.fire_periodic("c", tick + 60, tick + 120, None, tick + 60) is None
        assert await next_at(store, "c") == tick + 120
        # an enqueue refused leaves next_at as it was
        await store.set_limit(Limit(scope="queue", name="cron", max_depth=1))
        with pytest.raises(QueueFull):
            await store.fire_periodic("c", tick + 120, tick + 180, JOB, tick + 120)
        assert await next_at(store, "c") == tick + 120
        assert await total_jobs(store) == 1

    async def test_due_periodics(self, store: Store) -> None:
        await store.set_periodic(make_periodic("late", JOB, DAY0 + 50, every=60))
        await store.set_periodic(make_periodic("early", JOB, DAY0, every=60, paused=True))
        await store.set_periodic(make_periodic("mid", JOB, DAY0 + 20, every=60))
        assert await store.due_periodics(DAY0 + 59) == []
        assert [p.name for p in await store.due_periodics(DAY0 + 80)] == ["early", "mid"]
        assert [p.name for p in await store.due_periodics(DAY0 + 200)] == ["early", "mid", "late"]
        assert [p.name for p in await store.due_periodics(DAY0 + 200, 1)] == ["early"]

    @pytest.mark.parametrize(
        "bad",
        [
            {"name": "has space", "every": 60},
            {"name": "x"},
            {"name": "x", "every": 60, "cron": "* * * * *"},
            {"name": "x", "every": 60, "spec": {"args": [1]}},
            {"name": "x", "every": 60, "catch_up": "sometimes"},
            {"name": "x", "every": 0.5},
            {"name": "x", "every": 60, "spec": ["t"]},
        ],
    )
    async def test_bad_schedules_are_refused(self, store: Store, bad: dict[str, Any]) -> None:
        fields = {"spec": {"type": "t"}, **bad}
        with pytest.raises(InvalidJob):
            await store.set_periodic(Periodic(**fields))
        assert await store.periodics() == []

    async def test_bad_cron_or_zone(self) -> None:
        with pytest.raises(InvalidJob):
            make_periodic("x", JOB, DAY0, cron="61 * * * *")
        with pytest.raises(InvalidJob):
            make_periodic("x", JOB, DAY0, cron="* * * *")
        with pytest.raises(InvalidJob):
            make_periodic("x", JOB, DAY0, cron="* * * * *", timezone="Mars/Olympus")

    async def test_schedules_survive_a_restart(self, backend: Backend) -> None:
        store = await backend.open()
        a = make_periodic("a", JOB, DAY0, cron="0 9 * * 1-5", timezone="Europe/Paris")
        b = make_periodic("b", JOB, DAY0, every=90, catch_up="skip", paused=True)
        await store.set_periodic(b)
        await store.set_periodic(a)
        await store.close()
        store = await backend.open()
        assert await store.periodics() == [a, b]

    async def test_two_servers_fire_each_tick_once(self, backend: Backend) -> None:
        """Servers sharing one store, ticking at the same moments: one job a tick."""
        one = await backend.open()
        # one process owns an embedded store: its servers are tasks sharing the store
        two = one if backend.name == "sqlite" else await backend.open()
        await one.set_periodic(make_periodic("sec", JOB, DAY0, every=1))
        await two.set_periodic(make_periodic("even", JOB, DAY0, cron="*/2 * * * * *"))
        await two.set_periodic(make_periodic("sec", JOB, DAY0 + 5, every=1))  # same: kept
        keys: list[str] = []
        for t in range(1, 61):
            now = DAY0 + t
            answers = await asyncio.gather(
                run_tick(one, now), run_tick(two, now), run_tick(one, now)
            )
            fired = [e for answer in answers for e in answer]
            assert all(e.created for e in fired)
            assert len(fired) == (2 if t % 2 == 0 else 1), t
            for e in fired:
                job = await get(one, e.id)
                assert job.unique_key is not None
                keys.append(job.unique_key)
        want = [periodic_key("sec", DAY0 + t) for t in range(1, 61)]
        want += [periodic_key("even", DAY0 + t) for t in range(2, 61, 2)]
        assert sorted(keys) == sorted(want)
        assert await total_jobs(two) == 90
