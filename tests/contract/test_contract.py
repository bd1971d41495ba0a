"""The Store contract (distqueue/store/base.py), once, for every backend.

Every test goes through the ``store``/``backend`` fixtures only, so redis and
postgres run the same tests when they join tests/conftest.py's BACKENDS.
Time is passed in; nothing sleeps.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
from typing import Any

import pytest

from distqueue.errors import IllegalTransition, InvalidJob, JobNotFound, LeaseLost
from distqueue.jobs import JobError, JobSpec, JobState
from distqueue.policy import Retention, RetryPolicy
from distqueue.store import Store
from tests.conftest import Backend

S = JobState
T0 = 1_000_000.0


def spec(type: str = "t", **kw: Any) -> JobSpec:
    return JobSpec(type=type, **kw)


async def ids_of(store: Store, *specs: JobSpec, now: float = T0) -> list[int]:
    return [e.id for e in await store.enqueue(list(specs), now)]


async def state(store: Store, job_id: int) -> JobState:
    job = await store.get(job_id)
    assert job is not None
    return job.state


async def total_jobs(store: Store) -> int:
    return sum((await store.stats()).by_state.values())


ERR = JobError(kind="Boom", message="it broke", traceback="Traceback ...\nBoom: it broke")


class TestEnqueue:
    async def test_many_at_once_in_order(self, store: Store) -> None:
        res = await store.enqueue([spec(args=[i]) for i in range(5)], T0)
        ids = [r.id for r in res]
        assert ids == sorted(ids) and len(set(ids)) == 5
        assert all(r.created and r.state is S.QUEUED for r in res)
        for i, job_id in enumerate(ids):
            job = await store.get(job_id)
            assert job is not None and job.args == [i] and job.created_at == T0

    async def test_delay_makes_it_scheduled(self, store: Store) -> None:
        [later, now] = await store.enqueue([spec(run_at=T0 + 10), spec(run_at=T0)], T0)
        assert later.state is S.SCHEDULED and now.state is S.QUEUED

    @pytest.mark.parametrize(
        "bad",
        [{"type": "has space"}, {"priority": 2**32}, {"priority": "high"}, {"max_retries": -1},
         {"args": {1, 2}}, {"timeout": 0}, {"queue": ""}, {"unique_key": ""}],
    )  # fmt: skip
    async def test_invalid_spec_stores_nothing_of_the_batch(
        self, store: Store, bad: dict[str, Any]
    ) -> None:
        await ids_of(store, spec())
        fields = {"type": "t", **bad}
        with pytest.raises(InvalidJob, match="job 1"):
            await store.enqueue([spec(), JobSpec(**fields), spec()], T0)
        assert await total_jobs(store) == 1

    async def test_unique_key_yields_one_job(self, store: Store) -> None:
        [a] = await store.enqueue([spec(unique_key="k")], T0)
        [b] = await store.enqueue([spec(unique_key="k", args="other")], T0)
        assert (b.id, b.created) == (a.id, False)
        res = await store.enqueue([spec(unique_key="j"), spec(unique_key="j")], T0)
        assert res[0].id == res[1].id and res[0].created and not res[1].created
        assert await total_jobs(store) == 2

    async def test_unique_key_freed_by_purge(self, store: Store) -> None:
        [a] = await store.enqueue([spec(unique_key="k")], T0)
        [job] = await store.claim("w", 1, T0)
        await store.complete(job.id, job.token, None, T0)
        await store.delete(a.id)
        [b] = await store.enqueue([spec(unique_key="k")], T0)
        assert b.created and b.id > a.id


class TestClaim:
    async def test_priority_then_fifo(self, store: Store) -> None:
        ids = await ids_of(store, spec(priority=5), spec(priority=10), spec(priority=0),
                           spec(priority=5), spec(priority=0))  # fmt: skip
        got = await store.claim("w", 10, T0)
        assert [j.id for j in got] == [ids[2], ids[4], ids[0], ids[3], ids[1]]

    async def test_n_limits_and_empty(self, store: Store) -> None:
        await ids_of(store, *[spec() for _ in range(5)])
        assert len(await store.claim("w", 2, T0)) == 2
        assert len(await store.claim("w", 10, T0)) == 3
        assert await store.claim("w", 10, T0) == []

    async def test_only_served_queues_and_types(self, store: Store) -> None:
        a, b, c = await ids_of(store, spec("x", queue="q1"), spec("y", queue="q1"),
                               spec("x", queue="q2"))  # fmt: skip
        assert [j.id for j in await store.claim("w", 9, T0, types=["x"], queues=["q2"])] == [c]
        assert [j.id for j in await store.claim("w", 9, T0, types=["z"])] == []
        assert [j.id for j in await store.claim("w", 9, T0, queues=["q1"])] == [a, b]

    async def test_token_lease_and_payload(self, store: Store) -> None:
        payload = os.urandom(5 * 1024 * 1024)
        [job_id] = await ids_of(store, spec(payload=payload, args={"k": [1, "x", None]}))
        [job] = await store.claim("w", 1, T0, lease=7.5)
        assert (job.id, job.attempts, job.token) == (job_id, 1, 1)  # fresh: token 1
        assert job.state is S.RUNNING and job.worker == "w" and job.lease_until == T0 + 7.5
        assert job.payload == payload and job.args == {"k": [1, "x", None]}

    async def test_deadline_passed_is_not_handed_out(self, store: Store) -> None:
        late, ok = await ids_of(store, spec(deadline=T0 + 1), spec(deadline=T0 + 100))
        got = await store.claim("w", 5, T0 + 10)
        assert [j.id for j in got] == [ok]
        job = await store.get(late)
        assert job is not None and job.state is S.DEAD
        assert job.error is not None and job.error.kind == "expired"

    async def test_concurrent_claims_never_share_a_job(self, store: Store) -> None:
        await store.enqueue([spec() for _ in range(500)], T0)
        batches = await asyncio.gather(*(store.claim(f"w{i}", 13, T0) for i in range(50)))
        claimed = [j.id for batch in batches for j in batch]
        assert len(claimed) == len(set(claimed)) == 500


class TestComplete:
    @pytest.mark.parametrize(
        "result", [None, 0, "text", [1, {"a": None}], b"", b"\x00" * 3_000_000]
    )
    async def test_result_round_trips(self, store: Store, result: Any) -> None:
        await ids_of(store, spec())
        [job] = await store.claim("w", 1, T0)
        await store.complete(job.id, job.token, result, T0 + 1)
        done = await store.get(job.id)
        assert done is not None and done.state is S.SUCCEEDED
        assert done.result == result and done.finished_at == T0 + 1

    async def test_stale_tokens_change_nothing(self, store: Store) -> None:
        await ids_of(store, spec())
        [first] = await store.claim("w1", 1, T0, lease=5)
        await store.expire(T0 + 6)
        [second] = await store.claim("w2", 1, T0 + 6)
        assert second.token > first.token and second.attempts == first.attempts + 1
        before = await store.get(first.id)
        for token in (first.token, second.token + 99):
            with pytest.raises(LeaseLost):
                await store.complete(first.id, token, "late", T0 + 7)
            with pytest.raises(LeaseLost):
                await store.fail(first.id, token, ERR, T0 + 7)
        assert await store.get(first.id) == before
        await store.complete(second.id, second.token, "ok", T0 + 7)
        with pytest.raises(LeaseLost):
            await store.complete(second.id, second.token, "twice", T0 + 8)
        done = await store.get(first.id)
        assert done is not None and done.result == "ok"

    async def test_unknown_id(self, store: Store) -> None:
        with pytest.raises(JobNotFound):
            await store.complete(12345, 1, None, T0)

    async def test_only_the_holder_may_answer(self, store: Store) -> None:
        """With ``worker`` given, the right token from another worker is refused too."""
        await ids_of(store, spec(), spec())
        a, b = await store.claim("w1", 2, T0)
        before = await store.get(a.id)
        with pytest.raises(LeaseLost):
            await store.complete(a.id, a.token, "not mine", T0, worker="w2")
        with pytest.raises(LeaseLost):
            await store.fail(a.id, a.token, ERR, T0, worker="w2")
        with pytest.raises(LeaseLost):
            await store.progress(a.id, a.token, 50, "x", T0, worker="w2")
        [refused] = await store.complete_many([(a.id, a.token, 1)], T0, worker="w2")
        assert isinstance(refused, LeaseLost)
        assert await store.get(a.id) == before
        await store.complete(a.id, a.token, "mine", T0, worker="w1")
        await store.fail(b.id, b.token, ERR, T0, worker="w1")
        assert await state(store, a.id) is S.SUCCEEDED
        assert await state(store, b.id) is S.RETRYING

    async def test_non_json_result_is_refused(self, store: Store) -> None:
        await ids_of(store, spec())
        [job] = await store.claim("w", 1, T0)
        with pytest.raises(InvalidJob):
            await store.complete(job.id, job.token, {1, 2}, T0)
        assert await state(store, job.id) is S.RUNNING


class TestFail:
    async def test_retry_with_backoff_then_dead(self, backend: Backend) -> None:
        policy = RetryPolicy(base=2.0, factor=2.0, cap=100.0, jitter=0.5)
        store = await backend.open(retry_policy=policy, rng=random.Random(3))
        [job_id] = await ids_of(store, spec(max_retries=2))
        now = T0
        for failures, ceiling in [(1, 2.0), (2, 4.0)]:
            [job] = await store.claim("w", 1, now)
            out = await store.fail(job.id, job.token, ERR, now)
            assert out.state is S.RETRYING and out.run_at is not None
            assert now + ceiling / 2 <= out.run_at <= now + ceiling
            assert await store.promote(out.run_at - 0.001) == []
            assert await store.claim("w", 1, out.run_at) == []
            assert await store.promote(out.run_at) == [job_id]
            now = out.run_at
            retried = await store.get(job_id)
            assert retried is not None and retried.failures == failures
        [job] = await store.claim("w", 1, now)
        out = await store.fail(job.id, job.token, ERR, now)
        assert out.state is S.DEAD and out.run_at is None
        dead = await store.get(job_id)
        assert dead is not None and dead.attempts == 3 and dead.error == ERR

    async def test_permanent_error_is_dead_at_once(self, store: Store) -> None:
        await ids_of(store, spec(max_retries=5))
        [job] = await store.claim("w", 1, T0)
        out = await store.fail(job.id, job.token, ERR, T0, retryable=False)
        assert out.state is S.DEAD

    async def test_no_retries(self, store: Store) -> None:
        await ids_of(store, spec(max_retries=0))
        [job] = await store.claim("w", 1, T0)
        assert (await store.fail(job.id, job.token, ERR, T0)).state is S.DEAD


class TestLeases:
    async def test_heartbeat_extends_and_reports(self, store: Store) -> None:
        a, b = await ids_of(store, spec(), spec())
        jobs = await store.claim("w", 2, T0, lease=10)
        await store.cancel(b, T0)
        beat = await store.heartbeat("w", T0 + 8, lease=10)
        assert beat.held == {j.id: j.token for j in jobs} and beat.cancel == [b]
        assert await store.expire(T0 + 11) == []  # the old lease time passed: extended
        assert sorted(await store.expire(T0 + 18)) == [a, b]
        assert (await store.heartbeat("nobody", T0)).held == {}

    async def test_expire_requeues_counts_lost_then_poison(self, backend: Backend) -> None:
        store = await backend.open(poison_limit=1)
        [job_id] = await ids_of(store, spec())
        [job] = await store.claim("w", 1, T0, lease=1)
        assert await store.expire(T0 + 1) == [job_id]
        lost = await store.get(job_id)
        assert lost is not None and lost.state is S.QUEUED and lost.lost == 1
        with pytest.raises(LeaseLost):
            await store.complete(job_id, job.token, None, T0 + 1)
        [job] = await store.claim("w", 1, T0 + 2, lease=1)
        assert await store.expire(T0 + 5) == [job_id]
        dead = await store.get(job_id)
        assert dead is not None and dead.state is S.DEAD
        assert dead.error is not None and dead.error.kind == "poison"

    async def test_release_graceful_vanished_and_some(self, store: Store) -> None:
        a, b, c = await ids_of(store, spec(), spec(), spec())
        await store.claim("w", 3, T0)
        assert await store.release("w", T0, ids=[b]) == [b]
        assert await store.release("w", T0) == [a, c]
        for job_id in (a, b, c):
            job = await store.get(job_id)
            assert job is not None and job.state is S.QUEUED and job.lost == 0
        await store.claim("w2", 3, T0)
        assert await store.release("w2", T0, vanished=True) == [a, b, c]
        job = await store.get(a)
        assert job is not None and job.lost == 1

    async def test_beats_keep_a_long_job_and_their_end_takes_it_back(self, store: Store) -> None:
        a, b = await ids_of(store, spec(), spec())
        [ja] = await store.claim("w", 1, T0, lease=10)
        # beats every 8 s keep a job that outlives its own lease four times over
        for t in (8.0, 16.0, 24.0, 32.0):
            beat = await store.heartbeat("w", T0 + t, lease=10)
            assert beat.held == {a: ja.token}
            assert await store.expire(T0 + t + 1.5) == []
            job = await store.get(a)
            assert job is not None and job.lease_until == T0 + t + 10
        # a job claimed after the last beat has its own lease, not the beat's
        [jb] = await store.claim("w", 1, T0 + 33, lease=10)
        assert jb.id == b
        job = await store.get(b)
        assert job is not None and job.lease_until == T0 + 43
        # the beats stop: each job is taken back when its lease ends, not before
        assert await store.expire(T0 + 41.9) == []
        assert await store.expire(T0 + 42) == [a]
        assert await store.expire(T0 + 42.9) == []
        assert await store.expire(T0 + 43) == [b]
        assert await state(store, a) is S.QUEUED and await state(store, b) is S.QUEUED
        assert (await store.heartbeat("w", T0 + 44)).held == {}
        # and a job claimed again by the same worker starts from a lease of its own
        [again] = await store.claim("w", 1, T0 + 50, lease=10)
        assert again.id == a and await store.expire(T0 + 59.9) == []
        assert await store.expire(T0 + 60) == [a]

    async def test_next_wakeup(self, store: Store) -> None:
        assert await store.next_wakeup() is None
        await ids_of(store, spec(run_at=T0 + 50), spec())
        await store.claim("w", 1, T0, lease=20)
        wakeup = await store.next_wakeup()
        assert wakeup is not None and wakeup <= T0 + 20


class TestCancelRetry:
    async def test_cancel_waiting_jobs(self, store: Store) -> None:
        q, s = await ids_of(store, spec(), spec(run_at=T0 + 5))
        [r] = await ids_of(store, spec(max_retries=1))
        [job] = await store.claim("w", 1, T0, queues=None)
        assert job.id == q
        await store.fail(job.id, job.token, ERR, T0)  # q is retrying now
        for job_id in (q, s, r):
            assert await store.cancel(job_id, T0) is S.CANCELLED
        assert await store.promote(T0 + 100) == []
        assert await store.claim("w", 5, T0 + 100) == []

    async def test_cancel_running(self, store: Store) -> None:
        a, b = await ids_of(store, spec(), spec())
        [ja, _] = await store.claim("w", 2, T0, lease=5)
        assert await store.cancel(a, T0) is S.RUNNING
        running = await store.get(a)
        assert running is not None and running.cancel_requested
        out = await store.fail(a, ja.token, JobError(kind="cancelled", message="stopped"), T0)
        assert out.state is S.CANCELLED
        await store.cancel(b, T0)
        await store.expire(T0 + 6)  # its worker vanished after the cancel
        assert await state(store, b) is S.CANCELLED

    async def test_cancel_sticks_through_a_hand_back(self, store: Store) -> None:
        """A cancel asked while the job ran is never undone: the worker returning the
        job (BYE, a drain, an orphan) or vanishing ends it cancelled, not queued."""
        a, b, c = await ids_of(store, spec(), spec(), spec())
        await store.claim("w", 3, T0, lease=30)
        for job_id in (a, b, c):
            assert await store.cancel(job_id, T0) is S.RUNNING
        assert await store.release("w", T0, ids=[a]) == [a]  # an orphan returned
        assert await store.release("w", T0, ids=[b], vanished=True) == [b]
        assert await store.release("w", T0) == [c]  # BYE
        for job_id in (a, b, c):
            assert await state(store, job_id) is S.CANCELLED
        assert await store.claim("w", 3, T0) == []
        assert (await store.stats()).by_state["cancelled"] == 3

    async def test_cancel_finished_or_unknown(self, store: Store) -> None:
        [job_id] = await ids_of(store, spec())
        [job] = await store.claim("w", 1, T0)
        await store.complete(job.id, job.token, None, T0)
        with pytest.raises(IllegalTransition):
            await store.cancel(job_id, T0)
        with pytest.raises(JobNotFound):
            await store.cancel(999_999, T0)

    async def test_retry_dead_and_cancelled_only(self, store: Store) -> None:
        d, c, q = await ids_of(store, spec(max_retries=0), spec(), spec(priority=10))
        [job] = await store.claim("w", 1, T0)
        await store.fail(job.id, job.token, ERR, T0)
        await store.cancel(c, T0)
        for job_id in (d, c):
            await store.retry(job_id, T0)
            again = await store.get(job_id)
            assert again is not None and again.state is S.QUEUED and again.failures == 0
        with pytest.raises(IllegalTransition):
            await store.retry(q, T0)
        [job] = await store.claim("w", 1, T0)
        assert job.id == d and job.attempts == 2


class TestReading:
    async def test_list_filters_and_pages(self, store: Store) -> None:
        ids = await ids_of(store, *[spec("x" if i % 2 else "y", queue=f"q{i % 3}",
                                         payload=b"p" * i) for i in range(30)])  # fmt: skip
        seen: list[int] = []
        before = None
        while page := await store.list(limit=7, before=before):
            seen += [j.id for j in page]
            before = page[-1].id
            assert all(j.payload is None and j.payload_size == j.id - ids[0] for j in page)
        assert seen == sorted(ids, reverse=True)
        xs = await store.list(type="x", queue="q1")
        assert [j.id for j in xs] == [i for i in sorted(ids, reverse=True)
                                      if (i - ids[0]) % 2 and (i - ids[0]) % 3 == 1]  # fmt: skip
        assert await store.list(state=S.RUNNING) == []
        for bad in (0, 1001):
            with pytest.raises(InvalidJob):
                await store.list(limit=bad)

    async def test_stats_add_up(self, store: Store) -> None:
        await ids_of(store, spec(priority=0), spec(priority=0, queue="b"), spec(priority=9),
                     spec(run_at=T0 + 9))  # fmt: skip
        [job] = await store.claim("w", 1, T0)
        await store.complete(job.id, job.token, None, T0)
        stats = await store.stats()
        assert stats.by_state == {"waiting": 0, "scheduled": 1, "queued": 2, "running": 0,
                                  "retrying": 0, "succeeded": 1, "dead": 0,
                                  "cancelled": 0}  # fmt: skip
        assert stats.by_queue == {"default": {"scheduled": 1, "queued": 1, "succeeded": 1},
                                  "b": {"queued": 1}}  # fmt: skip
        assert stats.queued_by_priority == {0: 1, 9: 1}
        assert stats.totals["submitted"] == 4 and stats.totals["succeeded"] == 1

    async def test_purge_by_retention(self, store: Store) -> None:
        ok, dead, run = await ids_of(store, spec(), spec(max_retries=0), spec())
        jobs = {j.id: j for j in await store.claim("w", 3, T0)}
        await store.complete(ok, jobs[ok].token, None, T0)
        await store.fail(dead, jobs[dead].token, ERR, T0)
        retention = Retention(succeeded=10, failed=100)
        assert await store.sweep(T0 + 9, retention) == 0
        assert await store.sweep(T0 + 10, retention) == 1
        assert await store.get(ok) is None and await store.get(dead) is not None
        assert await store.sweep(T0 + 1000, retention) == 1
        assert await state(store, run) is S.RUNNING  # unfinished jobs are never purged
        with pytest.raises(IllegalTransition):
            await store.delete(run)
        with pytest.raises(JobNotFound):
            await store.delete(dead)


class TestReopen:
    async def test_everything_survives_a_restart(self, backend: Backend) -> None:
        store = await backend.open()
        ids = await ids_of(store, spec(priority=5, unique_key="u"), spec(priority=0),
                           spec(priority=5), spec(run_at=T0 + 5))  # fmt: skip
        [running] = await store.claim("w", 1, T0, lease=30)
        assert running.id == ids[1]
        before = {i: await store.get(i) for i in ids}
        stats = await store.stats()
        await store.close()
        store = await backend.open()
        assert {i: await store.get(i) for i in ids} == before
        assert (await store.stats()) == stats
        # the lease goes on, and the token still completes it
        await store.complete(running.id, running.token, "after restart", T0 + 1)
        # the queue order and the unique key survived
        [dup] = await store.enqueue([spec(unique_key="u")], T0)
        assert dup.id == ids[0] and not dup.created
        assert [j.id for j in await store.claim("w", 5, T0 + 5)] == [ids[0], ids[2]]
        assert await store.promote(T0 + 5) == [ids[3]]

    async def test_tokens_never_reused_across_a_restart(self, backend: Backend) -> None:
        """A claim answered just before a crash may never have been committed; the
        token the next claim of that job gets must still differ from it."""
        store = await backend.open()
        [job_id] = await ids_of(store, spec())
        [first] = await store.claim("w1", 1, T0, lease=1)
        await store.expire(T0 + 2)
        await store.close()
        store = await backend.open()
        [second] = await store.claim("w2", 1, T0 + 3)
        assert second.id == job_id and second.token > first.token
        with pytest.raises(LeaseLost):
            await store.complete(job_id, first.token, "stale", T0 + 3)
        await store.complete(job_id, second.token, "ok", T0 + 3)

    async def test_ids_never_reused(self, backend: Backend) -> None:
        store = await backend.open()
        [a] = await ids_of(store, spec())
        [job] = await store.claim("w", 1, T0)
        await store.complete(job.id, job.token, None, T0)
        await store.delete(a)
        await store.close()
        store = await backend.open()
        [b] = await ids_of(store, spec())
        assert b > a


class TestSameInstant:
    """Jobs due at the same instant keep their submit order (ids 9 and 10 included:
    a Redis sorted set orders equal scores by text, "10" before "9")."""

    async def test_promoted_together_keep_their_order(self, store: Store) -> None:
        ids = await ids_of(store, *[spec(run_at=T0 + 5) for _ in range(12)])
        assert await store.promote(T0 + 5) == ids
        assert [j.id for j in await store.claim("w", 12, T0 + 5)] == ids

    async def test_expired_together_keep_their_order(self, store: Store) -> None:
        ids = await ids_of(store, *[spec() for _ in range(12)])
        assert [j.id for j in await store.claim("w", 12, T0, lease=30)] == ids
        assert await store.expire(T0 + 31) == ids
        assert [j.id for j in await store.claim("w2", 12, T0 + 31)] == ids


class TestWatch:
    """Events between the processes sharing one store (Store.watch)."""

    async def test_reports_what_other_openers_did(self, backend: Backend) -> None:
        a = await backend.open()
        if backend.name == "sqlite":  # one process owns the file: nothing to watch
            await asyncio.wait_for(a.watch(lambda: None, lambda ids: None), 5)
            return
        b = await backend.open()
        readies = asyncio.Queue[None]()
        dones = asyncio.Queue[list[int]]()
        seen_done: list[int] = []

        def on_done(ids: Any) -> None:
            seen_done.extend(ids)
            dones.put_nowait(list(ids))

        watcher = asyncio.ensure_future(a.watch(lambda: readies.put_nowait(None), on_done))
        try:
            await asyncio.wait_for(readies.get(), 10)  # subscribed (reported as ready)

            async def next_done() -> list[int]:
                return await asyncio.wait_for(dones.get(), 10)

            # a's own work is not reported back to a (its publish is flushed by close)
            [own] = await ids_of(a, spec(type="own"))
            [job] = await a.claim("w", 1, T0)
            await a.complete(job.id, job.token, None, T0)
            await a.close()
            # garbage on the channel is ignored, and the watch goes on
            await _publish_garbage(backend)
            # what b does reaches a: enqueue (ready), complete (done)
            [x, y, z] = await ids_of(b, spec(), spec(), spec())
            await asyncio.wait_for(readies.get(), 10)
            jobs = {j.id: j for j in await b.claim("w", 3, T0)}
            await b.complete(x, jobs[x].token, None, T0)
            assert await next_done() == [x]
            # a terminal failure, a cancel, a release (ready and done), a retry
            await b.fail(y, jobs[y].token, ERR, T0, retryable=False)
            assert await next_done() == [y]
            while not readies.empty():
                readies.get_nowait()
            assert await b.release("w", T0) == [z]
            await asyncio.wait_for(readies.get(), 10)
            assert await next_done() == [z]
            assert await b.cancel(z, T0) is S.CANCELLED
            assert await next_done() == [z]
            await b.retry(y, T0)
            await asyncio.wait_for(readies.get(), 10)
            assert own not in seen_done
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher


async def _publish_garbage(backend: Backend) -> None:
    """Something that is no event on the backend's events channel."""
    if backend.name == "postgres":
        import psycopg

        from tests.postgres_server import postgres_url

        async with await psycopg.AsyncConnection.connect(postgres_url(), autocommit=True) as c:
            await c.execute("SELECT pg_notify(%s, %s)", (f"{backend.schema}_events", "garbage"))
        return
    import redis.asyncio as aioredis

    url = await _plain_url(backend)
    raw = aioredis.Redis.from_url(url)
    await raw.publish(f"{{{backend.prefix}}}:events", b"garbage \xff")
    await raw.aclose()


async def _plain_url(backend: Backend) -> str:
    from tests.redis_server import redis_cluster_url, redis_url

    if backend.name == "redis":
        return redis_url()
    return "redis://" + redis_cluster_url().split("://", 1)[1]


async def test_out_of_range_ids_are_invalid_and_harmless(store: Store) -> None:
    [job_id] = await ids_of(store, spec())
    for bad in (2**63, -1, 2**70):
        with pytest.raises(InvalidJob):
            await store.get(bad)
        with pytest.raises(InvalidJob):
            await store.complete(job_id, bad, None, T0)
    assert await state(store, job_id) is S.QUEUED  # and the store still works


async def test_complete_many_answers_each_item_on_its_own(store: Store) -> None:
    a, b, c = await ids_of(store, spec(), spec(), spec())
    jobs = {j.id: j for j in await store.claim("w", 3, T0)}
    errors = await store.complete_many(
        [(a, jobs[a].token, "A"), (b, 99, "stale"), (c, jobs[c].token, b"C"),
         (a, jobs[a].token, "twice"), (424242, 1, None)],
        T0,
    )  # fmt: skip
    assert [type(e).__name__ if e else None for e in errors] == [
        None, "LeaseLost", None, "LeaseLost", "JobNotFound"
    ]  # fmt: skip
    assert [(await store.get(i)).result for i in (a, c)] == ["A", b"C"]  # type: ignore[union-attr]
    assert await state(store, b) is S.RUNNING
    assert (await store.stats()).totals["succeeded"] == 2
    with pytest.raises(InvalidJob):
        await store.complete_many([(b, jobs[b].token, {1})], T0)
    assert await state(store, b) is S.RUNNING
