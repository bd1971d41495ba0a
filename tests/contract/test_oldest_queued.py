"""Stats.oldest_queued_at on every backend: when the queued job that has waited
longest became queued — the ``now`` of its enqueue, of the promote that queued it,
of the release or expire that took it back, of the retry of a dead job — or None
with nothing queued. Exact values: times are a realistic epoch plus offsets, so a
backend that rounds them (Redis keeps floats as text) would fail.
"""

from __future__ import annotations

from typing import Any

from distqueue.config import ServerConfig
from distqueue.jobs import JobError, JobSpec, JobState
from distqueue.service.core import Service
from distqueue.store import Store
from tests.conftest import Backend

S = JobState
T0 = 1_700_000_000.123
ERR = JobError(kind="Boom", message="it broke")


def at(offset: float) -> float:
    return T0 + offset


async def enqueue(store: Store, offset: float, **kw: Any) -> int:
    kw.setdefault("type", "t")
    [e] = await store.enqueue([JobSpec(**kw)], at(offset))
    return e.id


async def claimed(store: Store, offset: float, n: int = 1, **kw: Any) -> list[int]:
    return [j.id for j in await store.claim("w", n, at(offset), **kw)]


async def oldest(store: Store) -> float | None:
    return (await store.stats()).oldest_queued_at


async def test_none_when_nothing_is_queued(store: Store) -> None:
    assert await oldest(store) is None
    await enqueue(store, 0, run_at=at(50))  # scheduled: not queued yet
    assert await oldest(store) is None


async def test_fifo_the_first_job_waits_longest(store: Store) -> None:
    a = await enqueue(store, 100)
    b = await enqueue(store, 200)
    assert await oldest(store) == at(100)
    assert await claimed(store, 250) == [a]
    assert await oldest(store) == at(200)
    assert await claimed(store, 260) == [b]
    assert await oldest(store) is None


async def test_a_cancelled_first_job_no_longer_counts(store: Store) -> None:
    a = await enqueue(store, 100)
    await enqueue(store, 200)
    assert await store.cancel(a, at(150)) is S.CANCELLED
    assert await oldest(store) == at(200)


async def test_a_scheduled_job_counts_from_its_promote(store: Store) -> None:
    await enqueue(store, 0, run_at=at(300))
    late = await enqueue(store, 0, run_at=at(400))
    assert await store.promote(at(299)) == []
    assert await oldest(store) is None
    await store.promote(at(300))  # on time: queued at its run-at
    assert await oldest(store) == at(300)
    await claimed(store, 305)
    assert await store.promote(at(410)) == [late]  # due at 400, queued at 410
    assert await oldest(store) == at(410)


async def test_a_retrying_job_counts_from_its_promote(store: Store) -> None:
    job_id = await enqueue(store, 100)
    [job] = await store.claim("w", 1, at(150))
    out = await store.fail(job_id, job.token, ERR, at(200))
    assert out.state is S.RETRYING and out.run_at is not None
    assert await oldest(store) is None
    assert await store.promote(out.run_at + 5) == [job_id]
    assert await oldest(store) == out.run_at + 5


async def test_a_released_job_counts_from_its_release(store: Store) -> None:
    a = await enqueue(store, 100)
    assert await claimed(store, 150) == [a]
    assert await store.release("w", at(450)) == [a]  # not its submit, not its claim
    assert await oldest(store) == at(450)
    assert await claimed(store, 460) == [a]
    assert await store.release("w", at(470), vanished=True) == [a]
    assert await oldest(store) == at(470)


async def test_a_released_job_goes_behind_the_others(store: Store) -> None:
    a = await enqueue(store, 100)
    await enqueue(store, 200)
    assert await claimed(store, 250) == [a]
    await store.release("w", at(300))
    assert await oldest(store) == at(200)  # a is behind b, queued later


async def test_an_expired_lease_counts_from_the_expire(store: Store) -> None:
    a = await enqueue(store, 100)
    assert await claimed(store, 500, lease=10) == [a]
    assert await store.expire(at(520)) == [a]  # the lease ended at 510
    assert await oldest(store) == at(520)


async def test_a_retried_dead_job_counts_from_its_retry(store: Store) -> None:
    a = await enqueue(store, 100)
    [job] = await store.claim("w", 1, at(150))
    out = await store.fail(a, job.token, ERR, at(600), retryable=False)
    assert out.state is S.DEAD
    await store.retry(a, at(700))
    assert await oldest(store) == at(700)


async def test_the_oldest_of_every_queue_type_and_priority(store: Store) -> None:
    low = await enqueue(store, 100, queue="a", type="x", priority=5)
    mid = await enqueue(store, 150, queue="c", type="x", priority=3)
    urgent_b = await enqueue(store, 200, queue="b", type="y", priority=0)
    urgent_a = await enqueue(store, 300, queue="a", type="x", priority=0)  # low's FIFO pair
    other = await enqueue(store, 120, queue="a", type="z", priority=5)
    assert await oldest(store) == at(100)  # the least urgent job waits longest
    assert await claimed(store, 400, queues=["a"], types=["x"]) == [urgent_a]
    assert await oldest(store) == at(100)
    assert await claimed(store, 400, queues=["a"], types=["x"]) == [low]
    assert await oldest(store) == at(120)
    assert await claimed(store, 400, types=["z"]) == [other]
    assert await oldest(store) == at(150)
    assert await claimed(store, 400, queues=["c"]) == [mid]
    assert await oldest(store) == at(200)
    assert await claimed(store, 400) == [urgent_b]
    assert await oldest(store) is None


async def test_kept_across_a_restart(backend: Backend) -> None:
    store = await backend.open()
    a = await enqueue(store, 100)
    await claimed(store, 150)
    await store.release("w", at(450))
    await enqueue(store, 500)
    await store.close()
    store = await backend.open()
    assert await oldest(store) == at(450)
    assert await claimed(store, 600) == [a]
    assert await oldest(store) == at(500)


async def test_the_service_reports_the_age(store: Store) -> None:
    now = at(1000)
    service = Service(store, ServerConfig(), clock=lambda: now)
    assert (await service.stats())["oldest_ready_age"] is None
    await enqueue(store, 400)
    assert (await service.stats())["oldest_ready_age"] == now - at(400)
    now = at(300)  # a clock that stepped back: never a negative age
    assert (await service.stats())["oldest_ready_age"] == 0.0
