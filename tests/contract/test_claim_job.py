"""Store.claim_job (beanstalkd's ``reserve-job <id>``, #16) on every backend: one given
queued job leased to a worker exactly as a claim that happened to pick it would —
whatever its place in its queue, pauses and limits aside. Time is passed in."""

from __future__ import annotations

import pytest

from distqueue.errors import IllegalTransition, InvalidJob, JobNotFound
from distqueue.jobs import JobSpec, JobState
from distqueue.store import Store
from distqueue.store.base import Limit
from tests.conftest import Backend
from tests.contract.test_beanstalk_ops import BURIED, claim_ids
from tests.contract.test_contract import ids_of as contract_ids_of
from tests.contract.test_contract import spec
from tests.contract.test_flow import get

S = JobState
T0 = 1_700_000_000.123


async def ids_of(store: Store, *specs: JobSpec, now: float = T0) -> list[int]:
    """(test_contract's, at this module's T0)"""
    return await contract_ids_of(store, *specs, now=now)


def nonzero(by_state: dict[str, int]) -> dict[str, int]:
    return {k: v for k, v in by_state.items() if v}


class TestClaimJob:
    async def test_the_third_of_three(self, store: Store) -> None:
        a, b, c = await ids_of(store, spec(priority=5), spec(priority=5), spec(priority=7,
                               payload=b"body", args={"x": 1}))  # fmt: skip
        job = await store.claim_job("w1", c, T0 + 1, lease=60)
        assert (job.id, job.state, job.attempts, job.worker) == (c, S.RUNNING, 1, "w1")
        assert job.token > 0
        assert (job.payload, job.args) == (b"body", {"x": 1})
        assert job.lease_until == T0 + 61
        assert job.started_at == T0 + 1
        stored = await get(store, c)
        assert (stored.state, stored.attempts, stored.token) == (S.RUNNING, 1, job.token)
        assert (stored.worker, stored.lease_until) == ("w1", T0 + 61)
        stats = await store.stats()
        assert nonzero(stats.by_state) == {"queued": 2, "running": 1}
        assert stats.queued_by_priority == {5: 2}
        assert stats.by_queue == {"default": {"queued": 2, "running": 1}}
        # the other two in FIFO order, the taken one no longer handed out
        jobs = await store.claim("w2", 3, T0 + 2, lease=60)
        assert [j.id for j in jobs] == [a, b]
        assert all(j.attempts == 1 for j in jobs)
        stats = await store.stats()
        assert nonzero(stats.by_state) == {"running": 3}
        assert stats.queued_by_priority == {}
        assert stats.by_queue == {"default": {"running": 3}}
        assert stats.oldest_queued_at is None

    async def test_complete_with_its_token(self, store: Store) -> None:
        [a] = await ids_of(store, spec())
        job = await store.claim_job("w", a, T0, lease=60)
        await store.complete(a, job.token, {"ok": True}, T0 + 1, worker="w")
        done = await get(store, a)
        assert (done.state, done.result) == (S.SUCCEEDED, {"ok": True})
        stats = await store.stats()
        assert nonzero(stats.by_state) == {"succeeded": 1}
        assert stats.by_queue == {"default": {"succeeded": 1}}
        assert stats.totals.get("succeeded") == 1

    async def test_the_first_of_a_fifo(self, store: Store) -> None:
        [a] = await ids_of(store, spec(priority=3), now=T0)
        [b] = await ids_of(store, spec(priority=3), now=T0 + 1)
        await store.claim_job("w", a, T0 + 2, lease=60)
        stats = await store.stats()
        assert stats.queued_by_priority == {3: 1}
        assert stats.oldest_queued_at == T0 + 1
        assert await claim_ids(store, 2, T0 + 2) == [b]

    async def test_its_token_grows(self, store: Store) -> None:
        [a] = await ids_of(store, spec())
        [ja] = await store.claim("w", 1, T0, lease=60)
        assert await store.release("w", T0 + 1) == [a]
        job = await store.claim_job("w", a, T0 + 2, lease=60)
        assert (job.attempts, job.token > ja.token) == (2, True)
        # taken back, then claimed again: attempts 3, a newer token
        assert await store.release("w", T0 + 3, ids=[a]) == [a]
        again = await store.claim_job("w", a, T0 + 4, lease=60)
        assert (again.attempts, again.token > job.token) == (3, True)
        [jb] = await ids_of(store, spec())
        assert await store.expire(T0 + 64) == [a]
        ids = await claim_ids(store, 2, T0 + 64)
        assert ids == [jb, a] and (await get(store, a)).token > again.token

    async def test_a_second_claim_job_is_refused(self, store: Store) -> None:
        [a] = await ids_of(store, spec())
        job = await store.claim_job("w", a, T0, lease=60)
        with pytest.raises(IllegalTransition):
            await store.claim_job("w2", a, T0 + 1, lease=60)
        with pytest.raises(IllegalTransition):
            await store.claim_job("w", a, T0 + 1, lease=60)
        stored = await get(store, a)
        assert (stored.state, stored.token, stored.worker) == (S.RUNNING, job.token, "w")
        assert (stored.attempts, stored.lease_until) == (1, T0 + 60)
        assert nonzero((await store.stats()).by_state) == {"running": 1}

    async def test_other_states_are_refused(self, store: Store) -> None:
        sched, dead, done, queued = await ids_of(
            store, spec(run_at=T0 + 99), spec(max_retries=0), spec(), spec(priority=9)
        )
        [waiting] = await ids_of(store, spec(after=(sched,)))
        jd, jdone = await store.claim("w", 2, T0, lease=60)
        assert (jd.id, jdone.id) == (dead, done)
        await store.fail(dead, jd.token, BURIED, T0, retryable=False)
        await store.complete(done, jdone.token, None, T0)
        [cancelled] = await ids_of(store, spec(priority=9))
        assert await store.cancel(cancelled, T0) is S.CANCELLED
        before = await store.stats()
        for job_id, state in ((sched, S.SCHEDULED), (dead, S.DEAD), (done, S.SUCCEEDED),
                              (waiting, S.WAITING), (cancelled, S.CANCELLED)):  # fmt: skip
            with pytest.raises(IllegalTransition):
                await store.claim_job("w", job_id, T0 + 1, lease=60)
            assert (await get(store, job_id)).state is state
        after = await store.stats()
        assert after.by_state == before.by_state
        assert after.queued_by_priority == before.queued_by_priority == {9: 1}
        assert after.by_queue == before.by_queue
        assert await claim_ids(store, 5, T0 + 1) == [queued]

    async def test_a_retrying_job_is_refused(self, store: Store) -> None:
        [a] = await ids_of(store, spec(max_retries=3))
        [ja] = await store.claim("w", 1, T0, lease=60)
        out = await store.fail(a, ja.token, BURIED, T0)
        assert out.state is S.RETRYING
        with pytest.raises(IllegalTransition):
            await store.claim_job("w", a, T0, lease=60)
        assert (await get(store, a)).state is S.RETRYING

    async def test_missing(self, store: Store) -> None:
        [a] = await ids_of(store, spec())
        with pytest.raises(JobNotFound):
            await store.claim_job("w", a + 1000, T0, lease=60)
        assert await store.cancel(a, T0) is S.CANCELLED
        await store.delete(a)
        with pytest.raises(JobNotFound):
            await store.claim_job("w", a, T0, lease=60)
        assert nonzero((await store.stats()).by_state) == {}

    async def test_bad_arguments(self, store: Store) -> None:
        [a] = await ids_of(store, spec())
        with pytest.raises(InvalidJob):
            await store.claim_job("", a, T0, lease=60)
        for bad in (0, -1, float("nan")):
            with pytest.raises(InvalidJob):
                await store.claim_job("w", a, T0, lease=bad)
        job = await get(store, a)
        assert (job.state, job.attempts) == (S.QUEUED, 0)
        assert (await store.stats()).queued_by_priority == {job.priority: 1}

    async def test_expire_after_its_lease_takes_it_back(self, store: Store) -> None:
        a, b = await ids_of(store, spec(), spec())
        job = await store.claim_job("w", b, T0, lease=10)
        assert await store.expire(T0 + 9.9) == []
        assert await store.expire(T0 + 10) == [b]
        back = await get(store, b)
        assert (back.state, back.lost, back.attempts) == (S.QUEUED, 1, 1)
        stats = await store.stats()
        assert nonzero(stats.by_state) == {"queued": 2}
        assert stats.by_queue == {"default": {"queued": 2}}
        assert sum(stats.queued_by_priority.values()) == 2
        jobs = await store.claim("w", 2, T0 + 10, lease=60)
        assert [j.id for j in jobs] == [a, b]
        assert jobs[1].attempts == 2 and jobs[1].token > job.token

    async def test_the_worker_holds_it(self, store: Store) -> None:
        [a] = await ids_of(store, spec())
        job = await store.claim_job("w", a, T0, lease=10)
        beat = await store.heartbeat("w", T0 + 5, 30)
        assert beat.held == {a: job.token}
        assert (await get(store, a)).lease_until == T0 + 35
        assert await store.touch(a, job.token, T0 + 6, 30) == T0 + 36
        assert (await store.heartbeat("other", T0 + 6, 30)).held == {}
        assert await store.release("w", T0 + 7) == [a]
        back = await get(store, a)
        assert (back.state, back.lost) == (S.QUEUED, 0)
        assert nonzero((await store.stats()).by_state) == {"queued": 1}

    async def test_a_paused_queue(self, store: Store) -> None:
        a, b = await ids_of(store, spec(queue="q"), spec(queue="q"))
        await store.pause("q", True)
        assert await claim_ids(store, 2, T0) == []
        job = await store.claim_job("w", b, T0, lease=60)
        assert (job.id, job.state) == (b, S.RUNNING)
        stats = await store.stats()
        assert stats.by_queue == {"q": {"queued": 1, "running": 1}}
        assert stats.queued_by_priority == {(await get(store, a)).priority: 1}
        assert await claim_ids(store, 2, T0) == []
        await store.pause("q", False)
        assert await claim_ids(store, 2, T0) == [a]

    async def test_limits_aside_and_counted(self, store: Store) -> None:
        a, b, c = await ids_of(store, spec(), spec(), spec(type="u"))
        await store.set_limit(Limit(scope="type", name="t", concurrency=1))
        [ja] = await store.claim("w", 1, T0, lease=60, types=["t"])
        assert ja.id == a
        # at its limit: a claim gives nothing of t, claim_job takes it all the same
        assert await claim_ids(store, 1, T0, types=["t"]) == []
        job = await store.claim_job("w", b, T0, lease=60)
        assert job.state is S.RUNNING
        # both count as running: finishing one still leaves the type at its limit
        await store.complete(a, ja.token, None, T0 + 1)
        [d] = await ids_of(store, spec(), now=T0 + 1)
        assert await claim_ids(store, 1, T0 + 1, types=["t"]) == []
        await store.complete(b, job.token, None, T0 + 2)
        assert await claim_ids(store, 2, T0 + 2) == [c, d]

    async def test_a_queue_limit_counts_it(self, store: Store) -> None:
        a, b = await ids_of(store, spec(queue="q"), spec(queue="q"))
        await store.set_limit(Limit(scope="queue", name="q", concurrency=1))
        job = await store.claim_job("w", b, T0, lease=60)
        assert await claim_ids(store, 1, T0) == []
        await store.complete(b, job.token, None, T0 + 1)
        assert await claim_ids(store, 1, T0 + 1) == [a]

    async def test_other_queues_and_types(self, store: Store) -> None:
        a, b, c = await ids_of(store, spec(queue="q1"), spec(queue="q2", type="u",
                               priority=4), spec(queue="q1", type="u"))  # fmt: skip
        await store.claim_job("w", b, T0, lease=60)
        stats = await store.stats()
        assert stats.by_queue == {"q1": {"queued": 2}, "q2": {"running": 1}}
        assert 4 not in stats.queued_by_priority
        assert await claim_ids(store, 3, T0, queues=["q2"]) == []
        assert await claim_ids(store, 3, T0, types=["u"]) == [c]
        assert await claim_ids(store, 3, T0) == [a]

    async def test_past_its_deadline(self, store: Store) -> None:
        """Either ended as a claim would end it (dead, error kind expired, and
        IllegalTransition), or leased like any queued job: the counts agree either way."""
        a, b = await ids_of(store, spec(deadline=T0 + 5), spec())
        try:
            job = await store.claim_job("w", a, T0 + 10, lease=60)
        except IllegalTransition as exc:
            assert "expired" in str(exc)
            dead = await get(store, a)
            assert (dead.state, dead.error.kind) == (S.DEAD, "expired")
            stats = await store.stats()
            assert nonzero(stats.by_state) == {"queued": 1, "dead": 1}
            assert stats.by_queue == {"default": {"queued": 1, "dead": 1}}
            assert sum(stats.queued_by_priority.values()) == 1
            assert stats.totals.get("expired") == 1
        else:
            assert (job.state, job.attempts) == (S.RUNNING, 1)
            stats = await store.stats()
            assert nonzero(stats.by_state) == {"queued": 1, "running": 1}
            assert stats.by_queue == {"default": {"queued": 1, "running": 1}}
            assert sum(stats.queued_by_priority.values()) == 1
        assert await claim_ids(store, 2, T0 + 10) == [b]


async def test_it_survives_a_restart(backend: Backend) -> None:
    store = await backend.open()
    a, b, c = await ids_of(store, spec(priority=5), spec(priority=5), spec(priority=5))
    job = await store.claim_job("w", b, T0, lease=30)
    before = {i: await store.get(i) for i in (a, b, c)}
    stats = await store.stats()
    await store.close()
    store = await backend.open()
    assert {i: await store.get(i) for i in (a, b, c)} == before
    assert (await store.stats()) == stats
    await store.complete(b, job.token, None, T0 + 1)
    assert await claim_ids(store, 3, T0 + 1) == [a, c]
