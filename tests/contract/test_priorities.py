"""Priorities 0..2**32-1 on every backend (the range beanstalkd's clients use, #16):
most urgent first (0), FIFO within one priority, however many distinct priorities
are queued and however far apart they are. distqueue's own names stay 0..10
(high 0, normal 5, low 10); a priority above 10 is simply less urgent than low.
"""

from __future__ import annotations

import random

import pytest

from distqueue.errors import InvalidJob
from distqueue.jobs import MAX_PRIORITY, JobError, JobSpec, JobState
from distqueue.store import Store
from tests.conftest import Backend

S = JobState
T0 = 1_000_000.0
TOP = 2**32 - 1
ERR = JobError(kind="Boom", message="it broke")


async def ids_of(store: Store, specs: list[JobSpec], now: float = T0) -> list[int]:
    return [e.id for e in await store.enqueue(specs, now)]


def in_order(prios: list[int], ids: list[int]) -> list[int]:
    """The ids as a claim must hand them out: by priority, then in order of enqueue."""
    keyed = sorted(zip(prios, range(len(ids)), ids, strict=True))
    return [job_id for _, _, job_id in keyed]


async def claim_all(store: Store, now: float, n: int) -> list[int]:
    out: list[int] = []
    while len(out) < n:
        got = await store.claim("w", min(64, n - len(out)), now, lease=600)
        if not got:
            break
        out += [j.id for j in got]
    return out


def test_the_range_is_32_bits() -> None:
    assert MAX_PRIORITY == TOP
    JobSpec(type="t", priority=TOP).validate()
    for bad in (TOP + 1, -1, 2**63, 1.5, True, "5"):
        with pytest.raises(InvalidJob, match="priority"):
            JobSpec(type="t", priority=bad).validate()  # type: ignore[arg-type]


async def test_most_urgent_first_fifo_within_each(store: Store) -> None:
    prios = [TOP, 0, 1024, 11, 5, 1024, 2**31, 10, TOP, 0, 65536, 2**31 - 1, 1024]
    ids = await ids_of(store, [JobSpec(type="t", priority=p) for p in prios])
    for job_id, p in zip(ids, prios, strict=True):
        job = await store.get(job_id)
        assert job is not None and job.priority == p
    expected = in_order(prios, ids)
    assert await claim_all(store, T0, len(ids)) == expected
    stats = await store.stats()
    assert stats.queued_by_priority == {}
    assert stats.by_state["running"] == len(ids)


async def test_counts_and_oldest_by_priority(store: Store) -> None:
    await ids_of(store, [JobSpec(type="t", priority=p) for p in (TOP, 7, TOP, 1024)], T0)
    await ids_of(store, [JobSpec(type="u", priority=3000)], T0 - 50)
    stats = await store.stats()
    assert stats.queued_by_priority == {TOP: 2, 7: 1, 1024: 1, 3000: 1}
    assert stats.oldest_queued_at == T0 - 50


async def test_back_in_line_keeps_the_priority(store: Store) -> None:
    """A job that fails, is lost, released or retried comes back at its own priority."""
    big, small = await ids_of(store, [JobSpec(type="t", priority=2**31, max_retries=3),
                                      JobSpec(type="t", priority=2**31 + 1)])  # fmt: skip
    [jb] = await store.claim("w", 1, T0, lease=10)
    assert jb.id == big
    out = await store.fail(big, jb.token, ERR, T0)
    assert out.state is S.RETRYING and out.run_at is not None
    assert await store.promote(out.run_at) == [big]
    # queued again behind nothing: the smaller number goes first
    assert await claim_all(store, out.run_at, 2) == [big, small]
    assert sorted(await store.release("w", out.run_at)) == [big, small]
    assert await claim_all(store, out.run_at, 2) == [big, small]
    assert sorted(await store.expire(out.run_at + 601)) == [big, small]
    assert await claim_all(store, out.run_at + 601, 2) == [big, small]
    for job_id, p in ((big, 2**31), (small, 2**31 + 1)):
        job = await store.get(job_id)
        assert job is not None and job.priority == p


async def test_cancel_a_queued_job_of_a_far_priority(store: Store) -> None:
    a, b, c = await ids_of(store, [JobSpec(type="t", priority=p) for p in (TOP, 12, TOP)])
    assert await store.cancel(a, T0) is S.CANCELLED
    assert (await store.stats()).queued_by_priority == {TOP: 1, 12: 1}
    assert await claim_all(store, T0, 3) == [b, c]


async def test_thousands_of_distinct_priorities(backend: Backend) -> None:
    store = await backend.open(fast=True)
    rng = random.Random(16)
    prios = [rng.choice([rng.randrange(0, 11), rng.randrange(0, TOP + 1)]) for _ in range(3000)]
    ids: list[int] = []
    for start in range(0, len(prios), 500):
        batch = [JobSpec(type="t", priority=p) for p in prios[start : start + 500]]
        ids += await ids_of(store, batch)
    expected = in_order(prios, ids)
    assert await claim_all(store, T0, len(ids)) == expected


async def test_priorities_across_types_and_queues(store: Store) -> None:
    """One claim over several pairs takes the most urgent of all of them."""
    specs = [JobSpec(type="a", priority=2**20), JobSpec(type="b", priority=2**19),
             JobSpec(type="a", queue="q2", priority=2**21), JobSpec(type="b", priority=4),
             JobSpec(type="a", priority=TOP)]  # fmt: skip
    ids = await ids_of(store, specs)
    got = await store.claim("w", 5, T0, queues=None)
    assert [j.id for j in got] == [ids[3], ids[1], ids[0], ids[2], ids[4]]
