"""Bounded work, on every backend: promote, expire and purge of a few thousand jobs
due at once return every one of them, in order (jobs due at the same instant in id
order, ties straddling the batch boundaries included), but no single step of the
store handles more than MAX_PER_STEP of them, so other work runs in between.

A step is one script call on Redis, one writer operation on SQLite; the helper
``steps`` counts them through each backend's internals (the only backend-specific
part). Bounded, not timed: ids per step are counted, never milliseconds.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from distqueue.jobs import JobError, JobSpec, JobState
from distqueue.policy import Retention
from distqueue.store import Store
from tests.conftest import Backend

S = JobState
T0 = 1_000_000.0
#: the most jobs one step of promote, expire or purge may handle
MAX_PER_STEP = 1000
#: the jobs due at once in each test: several steps' worth
N = 2500
ERR = JobError(kind="Boom", message="it broke")


@contextmanager
def steps(backend: Backend, store: Store, op: str) -> Iterator[list[int]]:
    """Record how many jobs each step of ``op`` (promote, expire or sweep) handled."""
    sizes: list[int] = []

    def size(answer: Any) -> int:
        if isinstance(answer, tuple):  # (ids, more): the postgres expire's step
            answer = answer[0]
        return len(answer) if isinstance(answer, list) else int(answer)

    if backend.name == "sqlite":
        writer: Any = store._writer  # type: ignore[attr-defined]
        call = writer.call

        async def counted_call(fn: Any, *args: Any, **kw: Any) -> Any:
            answer = await call(fn, *args, **kw)
            if getattr(fn, "__name__", "") == f"_op_{op}":
                sizes.append(size(answer))
            return answer

        writer.call = counted_call
        try:
            yield sizes
        finally:
            del writer.call
    else:
        run = store._run  # type: ignore[attr-defined]

        async def counted_run(name: str, *args: Any) -> Any:
            answer = await run(name, *args)
            if name == {"sweep": "purge"}.get(op, op):  # (the sweep's script is purge.lua)
                sizes.append(size(answer))
            return answer

        store._run = counted_run  # type: ignore[attr-defined]
        try:
            yield sizes
        finally:
            del store._run  # type: ignore[attr-defined]


def assert_bounded(sizes: list[int], total: int) -> None:
    assert sum(sizes) == total
    assert max(sizes) <= MAX_PER_STEP, f"one step handled {max(sizes)} jobs: {sizes}"
    assert len(sizes) >= -(-total // MAX_PER_STEP)


async def ids_of(store: Store, specs: list[JobSpec], now: float = T0) -> list[int]:
    out: list[int] = []
    for i in range(0, len(specs), 500):
        out += [e.id for e in await store.enqueue(specs[i : i + 500], now)]
    return out


async def claim_all(store: Store, now: float, lease: float, n: int) -> list[int]:
    got: list[int] = []
    while len(got) < n:
        batch = await store.claim("w", min(500, n - len(got)), now, lease=lease)
        assert batch, f"only {len(got)} of {n} jobs could be claimed"
        got += [j.id for j in batch]
    return got


async def test_promote_many_due_at_once(backend: Backend) -> None:
    store = await backend.open(fast=True)
    # ids 1..1200 due at one instant: their ids cross 9/10, 99/100 and 999/1000, and
    # batch boundaries fall among them
    ties = await ids_of(store, [JobSpec(type="t", run_at=T0 + 5) for _ in range(1200)])
    # later: 1200 due at one instant, after 1300 due at instants of their own, in the
    # reverse order of their ids
    ties2 = await ids_of(store, [JobSpec(type="t", run_at=T0 + 100) for _ in range(1200)])
    spread = await ids_of(store, [JobSpec(type="t", run_at=T0 + 50 - i * 0.001)
                                  for i in range(N - 1200)])  # fmt: skip
    assert await store.promote(T0 + 4.9) == []
    with steps(backend, store, "promote") as sizes:
        assert await store.promote(T0 + 5) == ties
    assert_bounded(sizes, len(ties))
    with steps(backend, store, "promote") as sizes:
        assert await store.promote(T0 + 100) == spread[::-1] + ties2
    assert_bounded(sizes, N)
    assert await store.promote(T0 + 100) == []
    # queued in that order (FIFO)
    assert await claim_all(store, T0 + 100, 30, N + 1200) == ties + spread[::-1] + ties2
    assert (await store.stats()).by_state["scheduled"] == 0


async def test_expire_many_at_once(backend: Backend) -> None:
    store = await backend.open(fast=True)
    first = await ids_of(store, [JobSpec(type="t") for _ in range(1200)])
    second = await ids_of(store, [JobSpec(type="t") for _ in range(N - 1200)])
    assert await claim_all(store, T0, 30, len(first)) == first  # leases end at T0 + 30
    assert await claim_all(store, T0, 20, len(second)) == second  # at T0 + 20
    with steps(backend, store, "expire") as sizes:
        expired = await store.expire(T0 + 31)
    assert expired == second + first
    assert_bounded(sizes, N)
    stats = await store.stats()
    assert stats.by_state["queued"] == N and stats.totals["lost"] == N
    assert await claim_all(store, T0 + 31, 30, N) == second + first


async def test_purge_many_at_once(backend: Backend) -> None:
    store = await backend.open(fast=True)
    ok = await ids_of(store, [JobSpec(type="t") for _ in range(1500)])
    dead = await ids_of(store, [JobSpec(type="t", max_retries=0) for _ in range(N - 1500)])
    assert await claim_all(store, T0, 30, N) == ok + dead
    for i in range(0, len(ok), 500):
        errors = await store.complete_many([(j, 1, None) for j in ok[i : i + 500]], T0)
        assert errors == [None] * len(ok[i : i + 500])
    for job_id in dead:
        assert (await store.fail(job_id, 1, ERR, T0)).state is S.DEAD
    retention = Retention(succeeded=5, failed=5)
    assert await store.sweep(T0 + 4, retention) == 0
    with steps(backend, store, "sweep") as sizes:
        assert await store.sweep(T0 + 5, retention) == N
    assert_bounded(sizes, N)
    assert sum((await store.stats()).by_state.values()) == 0
    assert await store.get(ok[0]) is None and await store.get(dead[-1]) is None
    assert await store.sweep(T0 + 5, retention) == 0


async def test_filtered_list_finds_rare_jobs_among_many(store: Store) -> None:
    """A list filtered by queue and type pages through thousands of other jobs."""
    rare = []
    for _ in range(6):
        rare += await ids_of(store, [JobSpec(type="rare", queue="q")])
        await ids_of(store, [JobSpec(type="common", queue="q") for _ in range(500)])
    found: list[int] = []
    before = None
    while page := await store.list(queue="q", type="rare", limit=4, before=before):
        found += [j.id for j in page]
        before = page[-1].id
    assert found == sorted(rare, reverse=True)
    assert [j.id for j in await store.list(type="rare", limit=1000)] == found
    assert await store.list(type="none", limit=1000) == []
