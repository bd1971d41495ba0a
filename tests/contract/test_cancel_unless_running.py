"""``Store.cancel(..., running=False)``: cancel unless the job is running.

beanstalkd's ``delete`` of a job another connection reserved must fail and change
nothing, even when that reserve came a moment before the delete: the check is in
the store's atomic step. Runs on every backend of tests/conftest.py.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from distqueue.errors import IllegalTransition, JobNotFound
from distqueue.jobs import Job, JobError, JobSpec, JobState
from distqueue.store import Store

S = JobState
T0 = 1_000_000.0
ERR = JobError(kind="Boom", message="it broke", traceback="Traceback ...\nBoom: it broke")


def spec(type: str = "t", **kw: Any) -> JobSpec:
    return JobSpec(type=type, **kw)


async def ids_of(store: Store, *specs: JobSpec, now: float = T0) -> list[int]:
    return [e.id for e in await store.enqueue(list(specs), now)]


async def get(store: Store, job_id: int) -> Job:
    job = await store.get(job_id)
    assert job is not None
    return job


async def test_running_job_is_refused_and_unchanged(store: Store) -> None:
    [job_id] = await ids_of(store, spec())
    [job] = await store.claim("w", 1, T0, lease=60)
    assert job.id == job_id
    before = await get(store, job_id)
    with pytest.raises(IllegalTransition, match="running"):
        await store.cancel(job_id, T0, running=False)
    after = await get(store, job_id)
    assert after.state is S.RUNNING and not after.cancel_requested
    assert after == before
    beat = await store.heartbeat("w", T0 + 1, lease=60)
    assert job_id not in beat.cancel
    await store.complete(job_id, job.token, {"ok": True}, T0 + 2)
    assert (await get(store, job_id)).state is S.SUCCEEDED


async def test_refused_keeps_an_earlier_cancel_request(store: Store) -> None:
    [job_id] = await ids_of(store, spec())
    [job] = await store.claim("w", 1, T0, lease=60)
    assert await store.cancel(job_id, T0) is S.RUNNING
    with pytest.raises(IllegalTransition):
        await store.cancel(job_id, T0, running=False)
    after = await get(store, job_id)
    assert after.state is S.RUNNING and after.cancel_requested
    out = await store.fail(job_id, job.token, JobError(kind="cancelled", message="x"), T0)
    assert out.state is S.CANCELLED


async def test_other_states_are_cancelled_as_usual(store: Store) -> None:
    [r] = await ids_of(store, spec(max_retries=1))
    [job] = await store.claim("w", 1, T0, lease=60)
    assert job.id == r
    await store.fail(r, job.token, ERR, T0)
    q, s = await ids_of(store, spec(), spec(run_at=T0 + 5))
    [w] = await ids_of(store, spec(after=(q,), on_failure="run"))
    assert (await get(store, r)).state is S.RETRYING
    assert (await get(store, s)).state is S.SCHEDULED
    assert (await get(store, w)).state is S.WAITING
    assert (await get(store, q)).state is S.QUEUED
    for job_id in (w, r, s):
        assert await store.cancel(job_id, T0, running=False) is S.CANCELLED
        assert (await get(store, job_id)).state is S.CANCELLED
    # q's waiter was cancelled first; now q itself
    assert await store.cancel(q, T0, running=False) is S.CANCELLED
    assert (await get(store, q)).state is S.CANCELLED
    assert await store.promote(T0 + 100) == []
    assert await store.claim("w", 5, T0 + 100) == []


async def test_waiters_move_on_as_usual(store: Store) -> None:
    [dep] = await ids_of(store, spec())
    [cancels, runs] = await ids_of(store, spec(after=(dep,)), spec(after=(dep,), on_failure="run"))
    assert await store.cancel(dep, T0, running=False) is S.CANCELLED
    assert (await get(store, cancels)).state is S.CANCELLED
    assert (await get(store, runs)).state is S.QUEUED


async def test_default_still_requests_cancel_of_a_running_job(store: Store) -> None:
    a, b = await ids_of(store, spec(), spec())
    await store.claim("w", 2, T0, lease=60)
    assert await store.cancel(a, T0) is S.RUNNING
    assert await store.cancel(b, T0, running=True) is S.RUNNING
    for job_id in (a, b):
        job = await get(store, job_id)
        assert job.state is S.RUNNING and job.cancel_requested


async def test_missing_and_finished(store: Store) -> None:
    with pytest.raises(JobNotFound):
        await store.cancel(999_999, T0, running=False)
    [job_id] = await ids_of(store, spec())
    [job] = await store.claim("w", 1, T0, lease=60)
    await store.complete(job.id, job.token, None, T0)
    with pytest.raises(IllegalTransition):
        await store.cancel(job_id, T0, running=False)
    assert (await get(store, job_id)).state is S.SUCCEEDED
    [c] = await ids_of(store, spec())
    await store.cancel(c, T0, running=False)
    with pytest.raises(IllegalTransition):
        await store.cancel(c, T0, running=False)


async def test_racing_a_claim_never_requests_a_cancel(store: Store) -> None:
    """A claim and a cancel(running=False) sent together: either the cancel won (the
    job is cancelled, the claim got nothing) or the claim did (the cancel is refused
    and the claimed job carries no cancel request)."""
    for i in range(20):
        [job_id] = await ids_of(store, spec(queue=f"race{i}"))
        claimed, cancelled = await asyncio.gather(
            store.claim("w", 1, T0, queues=[f"race{i}"], lease=60),
            store.cancel(job_id, T0, running=False),
            return_exceptions=True,
        )
        assert not isinstance(claimed, BaseException)
        job = await get(store, job_id)
        if isinstance(cancelled, IllegalTransition):
            assert [c.id for c in claimed] == [job_id]
            assert job.state is S.RUNNING and not job.cancel_requested
        else:
            assert cancelled is S.CANCELLED and claimed == []
            assert job.state is S.CANCELLED
