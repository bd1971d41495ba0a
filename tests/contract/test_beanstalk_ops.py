"""The Store operations beanstalkd's protocol needs (#16), on every backend:
requeue (release with a priority and a delay), fail with a priority (bury), touch
(one job's lease), kick and kick_job, peek. Time is passed in; nothing sleeps."""

from __future__ import annotations

from typing import Any

import pytest

from distqueue.errors import IllegalTransition, InvalidJob, JobNotFound, LeaseLost
from distqueue.jobs import JobError, JobState
from distqueue.store import Store
from distqueue.store.base import MAX_KICK
from tests.contract.test_contract import T0, ids_of, spec
from tests.contract.test_flow import get

S = JobState
BURIED = JobError(kind="buried", message="set aside")


async def claim_ids(store: Store, n: int, now: float, **kw: Any) -> list[int]:
    return [j.id for j in await store.claim("w", n, now, lease=kw.pop("lease", 60), **kw)]


class TestRequeue:
    async def test_back_at_a_new_priority(self, store: Store) -> None:
        a, b, c = await ids_of(store, spec(priority=5), spec(priority=5), spec(priority=2**20))
        [ja] = await store.claim("w", 1, T0, lease=60)
        assert await store.requeue(a, ja.token, T0 + 1, priority=2**30) is S.QUEUED
        job = await get(store, a)
        assert (job.state, job.priority) == (S.QUEUED, 2**30)
        assert (job.failures, job.lost, job.attempts) == (0, 0, 1)
        assert (await store.stats()).queued_by_priority == {5: 1, 2**20: 1, 2**30: 1}
        assert await claim_ids(store, 3, T0 + 1) == [b, c, a]

    async def test_back_at_its_own_priority_behind_its_peers(self, store: Store) -> None:
        a, b = await ids_of(store, spec(priority=3), spec(priority=3))
        [ja] = await store.claim("w", 1, T0, lease=60)
        assert await store.requeue(a, ja.token, T0) is S.QUEUED
        assert await claim_ids(store, 2, T0) == [b, a]

    async def test_with_a_delay(self, store: Store) -> None:
        [a] = await ids_of(store, spec())
        [ja] = await store.claim("w", 1, T0, lease=60)
        assert await store.requeue(a, ja.token, T0, run_at=T0 + 5, priority=1) is S.SCHEDULED
        job = await get(store, a)
        assert (job.state, job.run_at, job.priority) == (S.SCHEDULED, T0 + 5, 1)
        assert await store.claim("w", 1, T0 + 4.9) == []
        assert await store.promote(T0 + 4.9) == []
        assert await store.promote(T0 + 5) == [a]
        [again] = await store.claim("w", 1, T0 + 5, lease=60)
        assert (again.id, again.attempts, again.token > ja.token) == (a, 2, True)

    async def test_a_run_at_already_passed_queues_it(self, store: Store) -> None:
        [a] = await ids_of(store, spec())
        [ja] = await store.claim("w", 1, T0, lease=60)
        assert await store.requeue(a, ja.token, T0, run_at=T0 - 1) is S.QUEUED

    async def test_fenced(self, store: Store) -> None:
        [a] = await ids_of(store, spec())
        [ja] = await store.claim("w", 1, T0, lease=60)
        with pytest.raises(LeaseLost):
            await store.requeue(a, ja.token + 1, T0)
        with pytest.raises(LeaseLost):
            await store.requeue(a, ja.token, T0, worker="someone-else")
        with pytest.raises(InvalidJob):
            await store.requeue(a, ja.token, T0, priority=2**32)
        with pytest.raises(JobNotFound):
            await store.requeue(a + 1000, 1, T0)
        assert (await get(store, a)).state is S.RUNNING  # none of those changed it
        assert await store.requeue(a, ja.token, T0, worker="w") is S.QUEUED
        with pytest.raises(LeaseLost):
            await store.requeue(a, ja.token, T0)  # not running any more

    async def test_a_cancel_sticks(self, store: Store) -> None:
        [a] = await ids_of(store, spec())
        [waiter] = await ids_of(store, spec(type="w2", after=(a,)))
        [ja] = await store.claim("w", 1, T0, lease=60, types=["t"])
        assert await store.cancel(a, T0) is S.RUNNING
        assert await store.requeue(a, ja.token, T0, priority=1) is S.CANCELLED
        assert (await get(store, waiter)).state is S.CANCELLED  # it moved on with it


class TestBuryAndKick:
    async def test_fail_with_a_priority(self, store: Store) -> None:
        [a] = await ids_of(store, spec(priority=5, max_retries=3))
        [ja] = await store.claim("w", 1, T0, lease=60)
        out = await store.fail(a, ja.token, BURIED, T0, retryable=False, priority=1000)
        assert out.state is S.DEAD
        job = await get(store, a)
        assert (job.state, job.priority, job.error.kind) == (S.DEAD, 1000, "buried")
        assert (await store.stats()).queued_by_priority == {}
        [b] = await ids_of(store, spec(priority=5, max_retries=3))
        [jb] = await store.claim("w", 1, T0, lease=60)
        with pytest.raises(InvalidJob):
            await store.fail(b, jb.token, BURIED, T0, priority=-1)
        assert (await get(store, b)).state is S.RUNNING
        # a retryable failure keeps the new priority when it comes back
        out = await store.fail(b, jb.token, BURIED, T0, priority=9)
        assert out.state is S.RETRYING and (await get(store, b)).priority == 9

    async def test_kick_dead_first_oldest_first(self, store: Store) -> None:
        ids = await ids_of(store, *[spec(max_retries=0) for _ in range(4)])
        later = await ids_of(store, spec(run_at=T0 + 50), spec(run_at=T0 + 40))
        jobs = await store.claim("w", 4, T0, lease=60)
        # they die in the order 2, 0, 3, 1
        for k, i in enumerate((2, 0, 3, 1)):
            job = next(j for j in jobs if j.id == ids[i])
            await store.fail(job.id, job.token, BURIED, T0 + k, retryable=False)
        assert await store.kick("default", 3, T0 + 10) == [ids[2], ids[0], ids[3]]
        for i in (2, 0, 3):
            job = await get(store, ids[i])
            assert (job.state, job.failures, job.lost) == (S.QUEUED, 0, 0)
        # the last dead one, then (none dead left) the scheduled ones, soonest first
        assert await store.kick("default", 5, T0 + 10) == [ids[1]]
        assert await store.kick("default", 5, T0 + 10) == [later[1], later[0]]
        assert await store.kick("default", 5, T0 + 10) == []
        assert (await store.stats()).by_state["queued"] == 6

    async def test_kick_is_per_queue_and_type(self, store: Store) -> None:
        [a] = await ids_of(store, spec(queue="q1", max_retries=0))
        [b] = await ids_of(store, spec(queue="q2", max_retries=0))
        [c] = await ids_of(store, spec(queue="q1", type="other", max_retries=0))
        for job in await store.claim("w", 3, T0, lease=60, queues=None, types=None):
            await store.fail(job.id, job.token, BURIED, T0, retryable=False)
        assert await store.kick("q1", 10, T0, type="t") == [a]
        assert await store.kick("q1", 10, T0) == [c]
        assert await store.kick("q2", 10, T0, type="other") == []
        assert (await get(store, b)).state is S.DEAD
        assert await store.kick("nothing-here", 10, T0) == []
        for bad in (0, -1, MAX_KICK + 1):
            with pytest.raises(InvalidJob):
                await store.kick("q2", bad, T0)
        with pytest.raises(InvalidJob):
            await store.kick("has space", 1, T0)

    async def test_kick_job(self, store: Store) -> None:
        [dead, sched, queued] = await ids_of(store, spec(max_retries=0), spec(run_at=T0 + 99),
                                             spec(priority=9))  # fmt: skip
        [jd] = await store.claim("w", 1, T0, lease=60)
        await store.fail(dead, jd.token, BURIED, T0, retryable=False)
        assert await store.kick_job(dead, T0 + 1) is S.DEAD
        assert await store.kick_job(sched, T0 + 1) is S.SCHEDULED
        with pytest.raises(IllegalTransition):
            await store.kick_job(queued, T0 + 1)
        with pytest.raises(JobNotFound):
            await store.kick_job(queued + 1000, T0 + 1)
        assert await claim_ids(store, 3, T0 + 1) == [dead, sched, queued]


class TestTouch:
    async def test_one_job_only(self, store: Store) -> None:
        a, b = await ids_of(store, spec(), spec())
        ja, _ = await store.claim("w", 2, T0, lease=10)
        assert await store.touch(a, ja.token, T0 + 5, 30) == T0 + 35
        assert (await get(store, a)).lease_until == T0 + 35
        assert (await get(store, b)).lease_until == T0 + 10
        assert await store.expire(T0 + 10) == [b]
        assert await store.expire(T0 + 34.9) == []
        assert await store.expire(T0 + 35) == [a]

    async def test_it_sets_the_end_sooner_too(self, store: Store) -> None:
        [a] = await ids_of(store, spec())
        [ja] = await store.claim("w", 1, T0, lease=60)
        assert await store.touch(a, ja.token, T0 + 1, 2) == T0 + 3
        assert await store.expire(T0 + 3) == [a]

    async def test_fenced(self, store: Store) -> None:
        [a] = await ids_of(store, spec())
        [ja] = await store.claim("w", 1, T0, lease=10)
        with pytest.raises(LeaseLost):
            await store.touch(a, ja.token + 1, T0, 30)
        with pytest.raises(LeaseLost):
            await store.touch(a, ja.token, T0, 30, worker="other")
        for bad in (0, -1, float("inf"), float("nan")):
            with pytest.raises(InvalidJob):
                await store.touch(a, ja.token, T0, bad)
        with pytest.raises(JobNotFound):
            await store.touch(a + 1000, 1, T0, 30)
        assert (await get(store, a)).lease_until == T0 + 10


class TestPeek:
    async def test_ready_is_the_next_claim(self, store: Store) -> None:
        assert await store.peek("default", S.QUEUED) is None
        a, b, c = await ids_of(store, spec(priority=7), spec(priority=2, type="u"),
                               spec(priority=2, payload=b"body"))  # fmt: skip
        peeked = await store.peek("default", S.QUEUED)
        assert peeked is not None and peeked.id == b
        peeked = await store.peek("default", S.QUEUED, type="t")
        assert peeked is not None and (peeked.id, peeked.payload) == (c, b"body")
        assert await store.peek("other", S.QUEUED) is None
        assert await claim_ids(store, 1, T0) == [b]  # the peek took nothing
        await store.pause("default", True)
        peeked = await store.peek("default", S.QUEUED)
        assert peeked is not None and peeked.id == c  # pauses aside
        assert a

    async def test_delayed_is_the_soonest_due(self, store: Store) -> None:
        assert await store.peek("default", S.SCHEDULED) is None
        a, b = await ids_of(store, spec(run_at=T0 + 30), spec(run_at=T0 + 20))
        [r] = await ids_of(store, spec(max_retries=2))
        [jr] = await store.claim("w", 1, T0, lease=60)
        out = await store.fail(r, jr.token, BURIED, T0)
        assert out.state is S.RETRYING and out.run_at is not None
        peeked = await store.peek("default", S.SCHEDULED)
        soonest = min((out.run_at, r), (T0 + 20, b))[1]
        assert peeked is not None and peeked.id == soonest
        assert a

    async def test_buried_is_the_oldest_dead(self, store: Store) -> None:
        assert await store.peek("default", S.DEAD) is None
        ids = await ids_of(store, *[spec(max_retries=0) for _ in range(3)])
        jobs = {j.id: j for j in await store.claim("w", 3, T0, lease=60)}
        for k, i in enumerate((1, 2, 0)):
            await store.fail(ids[i], jobs[ids[i]].token, BURIED, T0 + k, retryable=False)
        peeked = await store.peek("default", S.DEAD)
        assert peeked is not None and peeked.id == ids[1]
        await store.delete(ids[1])
        peeked = await store.peek("default", S.DEAD)
        assert peeked is not None and peeked.id == ids[2]

    async def test_other_states_are_refused(self, store: Store) -> None:
        for state in (S.RUNNING, S.SUCCEEDED, S.CANCELLED, S.WAITING, S.RETRYING):
            with pytest.raises(ValueError):
                await store.peek("default", state)
        with pytest.raises(InvalidJob):
            await store.peek("has space", S.QUEUED)
