"""The worker registry of the Store contract (note_worker, workers, forget_worker), on
every backend: records replace each other, age out and are deleted, and each lists
exactly the jobs its worker holds in the store right now.
"""

from __future__ import annotations

from typing import Any

import pytest

from distqueue.errors import InvalidJob
from distqueue.jobs import JobError, JobSpec
from distqueue.store import Store, WorkerRecord
from distqueue.store.base import MAX_WORKER_ID, MAX_WORKER_INFO, WORKER_JOBS
from tests.conftest import Backend

T0 = 1_000_000.0
ERR = JobError(kind="Boom", message="it broke")
INFO = {"name": "w1", "host": "h", "pid": 42, "types": ["t"], "queues": ["default"],
        "concurrency": 4, "server": "s1", "since": T0, "tags": {"a": [1, None, 2.5]}}  # fmt: skip


async def enqueue(store: Store, n: int) -> list[int]:
    return [e.id for e in await store.enqueue([JobSpec(type="t") for _ in range(n)], T0)]


async def claim(store: Store, worker: str, n: int, lease: float = 30.0) -> dict[int, int]:
    """Claim n jobs for worker: id -> token."""
    jobs = await store.claim(worker, n, T0, lease=lease)
    assert len(jobs) == n
    return {j.id: j.token for j in jobs}


async def listed(
    store: Store, now: float = T0, max_age: float = 60.0, **kw: Any
) -> dict[str, WorkerRecord]:
    """The workers listed, by id (and checks they came by id)."""
    records = await store.workers(now, max_age=max_age, **kw)
    assert [r.id for r in records] == sorted(r.id for r in records)
    return {r.id: r for r in records}


async def test_note_list_forget(store: Store) -> None:
    assert await store.workers(T0, max_age=60) == []
    await store.note_worker("w1", INFO, T0)
    await store.note_worker("w2", {}, T0 + 1)
    assert await store.workers(T0 + 1, max_age=60) == [
        WorkerRecord(id="w1", info=INFO, seen=T0, jobs=[]),
        WorkerRecord(id="w2", info={}, seen=T0 + 1, jobs=[]),
    ]
    await store.forget_worker("w1")
    await store.forget_worker("w1")  # idempotent
    await store.forget_worker("never-noted")
    assert await store.workers(T0 + 1, max_age=60) == [
        WorkerRecord(id="w2", info={}, seen=T0 + 1, jobs=[])
    ]
    await store.forget_worker("w2")
    assert await store.workers(T0 + 1, max_age=60) == []


async def test_listed_by_id(store: Store) -> None:
    names = ["b", "a", "é", "A", "w10", "w9", "z-1", "Z"]
    for i, name in enumerate(names):
        await store.note_worker(name, {"i": i}, T0 + i)
    records = await store.workers(T0 + 10, max_age=60)
    assert [r.id for r in records] == sorted(names)  # by code point, on every backend
    assert {r.id: r.info["i"] for r in records} == {n: i for i, n in enumerate(names)}


async def test_info_and_seen_replaced(store: Store) -> None:
    await store.note_worker("w", INFO, T0)
    await store.note_worker("w", {"name": "again"}, T0 + 5)
    assert await store.workers(T0 + 5, max_age=1) == [
        WorkerRecord(id="w", info={"name": "again"}, seen=T0 + 5, jobs=[])
    ]
    # the given mapping is copied: changing it afterwards changes nothing stored
    info: dict[str, Any] = {"k": [1]}
    await store.note_worker("w", info, T0 + 6)
    info["k"].append(2)
    info["x"] = 1
    [record] = await store.workers(T0 + 6, max_age=1)
    assert record.info == {"k": [1]} and record.seen == T0 + 6


async def test_max_age_filters_and_deletes_the_stale(store: Store) -> None:
    await store.note_worker("old", {}, T0)
    await store.note_worker("mid", {}, T0 + 10)
    await store.note_worker("new", {}, T0 + 20)
    # seen at or after now - max_age is in (the boundary included)
    assert list(await listed(store, T0 + 30, max_age=20)) == ["mid", "new"]
    # "old" was deleted by that call: a longer max_age does not bring it back
    assert list(await listed(store, T0 + 30, max_age=1000)) == ["mid", "new"]
    assert list(await listed(store, T0 + 30, max_age=10)) == ["new"]
    assert list(await listed(store, T0 + 30, max_age=1000)) == ["new"]
    # noted again, a deleted worker is back
    await store.note_worker("old", {"v": 2}, T0 + 31)
    assert list(await listed(store, T0 + 31, max_age=0)) == ["old"]
    assert list(await listed(store, T0 + 31, max_age=1000)) == ["old"]
    # a worker seen "after now" (another server's clock ahead) is listed
    await store.note_worker("ahead", {}, T0 + 100)
    assert list(await listed(store, T0 + 31, max_age=0)) == ["ahead", "old"]
    # an infinite max_age lists every record
    assert list(await listed(store, T0 + 10_000, max_age=float("inf"))) == ["ahead", "old"]


async def test_stale_workers_keep_their_jobs(store: Store) -> None:
    [job_id] = await enqueue(store, 1)
    await claim(store, "w", 1, lease=1000)
    await store.note_worker("w", {}, T0)
    assert await store.workers(T0 + 100, max_age=10) == []  # deleted
    beat = await store.heartbeat("w", T0 + 100)
    assert list(beat.held) == [job_id]  # the registry does not touch jobs
    await store.note_worker("w", {}, T0 + 101)
    assert (await listed(store, T0 + 101))["w"].jobs == [job_id]


async def test_jobs_are_exactly_the_ones_held(store: Store) -> None:
    ids = await enqueue(store, 12)
    await store.note_worker("a", {}, T0)
    await store.note_worker("b", {}, T0)
    await store.note_worker("c", {}, T0)
    a = await claim(store, "a", 5, lease=10)
    b = await claim(store, "b", 4, lease=100)
    # "d" holds jobs but was never noted: it is not listed
    d = await claim(store, "d", 1, lease=100)
    assert sorted([*a, *b, *d]) == ids[:10]
    got = await listed(store)
    assert list(got) == ["a", "b", "c"]
    assert got["a"].jobs == sorted(a) and got["b"].jobs == sorted(b) and got["c"].jobs == []

    a1, a2, a3, a4, a5 = sorted(a)
    await store.complete(a1, a[a1], "ok", T0)
    await store.fail(a2, a[a2], ERR, T0)  # retrying: no longer held
    await store.release("a", T0, ids=[a3])
    assert (await listed(store))["a"].jobs == [a4, a5]
    await store.cancel(a4, T0)  # cancel asked: still running, still held
    assert (await listed(store))["a"].jobs == [a4, a5]
    # both leases run out (b's do not): expired, no longer held
    assert sorted(await store.expire(T0 + 11)) == [a4, a5]
    got = await listed(store, T0 + 11)
    assert got["a"].jobs == [] and got["b"].jobs == sorted(b)
    # claimed again by another worker, they show there
    c = await store.claim("c", 10, T0 + 11, lease=100)
    assert sorted(j.id for j in c) == sorted([a3, a5, ids[10], ids[11]])  # a4 was cancelled
    got = await listed(store, T0 + 11)
    assert got["c"].jobs == sorted([a3, a5, ids[10], ids[11]])
    b1 = min(b)
    await store.complete_many([(b1, b[b1], None)], T0 + 11, worker="b")
    await store.release("b", T0 + 11, vanished=True)
    got = await listed(store, T0 + 11)
    assert got["b"].jobs == [] and got["a"].jobs == []
    # forgetting a worker does not touch its jobs
    await store.forget_worker("c")
    assert "c" not in await listed(store, T0 + 11)
    assert sorted((await store.heartbeat("c", T0 + 11)).held) == got["c"].jobs


async def test_jobs_are_the_smallest_ids_at_most_the_cap(store: Store) -> None:
    ids = await enqueue(store, WORKER_JOBS + 20)
    await store.note_worker("w", {}, T0)
    held = await claim(store, "w", WORKER_JOBS + 20)
    assert sorted(held) == ids
    assert (await listed(store))["w"].jobs == ids[:WORKER_JOBS]
    await store.release("w", T0, ids=ids[:30])
    assert (await listed(store))["w"].jobs == ids[30:]


async def test_limit(store: Store) -> None:
    names = [f"w{i:03}" for i in range(30)]
    for name in reversed(names):
        await store.note_worker(name, {}, T0)
    assert [r.id for r in await store.workers(T0, max_age=1, limit=7)] == names[:7]
    assert [r.id for r in await store.workers(T0, max_age=1, limit=1)] == names[:1]
    assert [r.id for r in await store.workers(T0, max_age=1)] == names
    # the limit counts live records only: stale ones before them are skipped
    for name in names[:5]:
        await store.note_worker(name, {}, T0 - 100)
    assert [r.id for r in await store.workers(T0, max_age=1, limit=3)] == names[5:8]
    for bad in (0, 1001, -1):
        with pytest.raises(InvalidJob):
            await store.workers(T0, max_age=1, limit=bad)
    with pytest.raises(InvalidJob):
        await store.workers(T0, max_age=-1)
    with pytest.raises(InvalidJob):
        await store.workers(T0, max_age=float("nan"))


@pytest.mark.parametrize(
    ("worker", "info"),
    [
        ("w", ["not", "an", "object"]),
        ("w", "a string"),
        ("w", None),
        ("w", 42),
        ("w", {1: "non-string key"}),
        ("w", {"x": object()}),
        ("w", {"x": b"bytes"}),
        ("w", {"x": "y" * MAX_WORKER_INFO}),
        ("", {}),
        ("x" * (MAX_WORKER_ID + 1), {}),
    ],
    ids=lambda v: str(v)[:20],
)
async def test_bad_input_is_refused_and_changes_nothing(
    store: Store, worker: str, info: Any
) -> None:
    await store.note_worker("w", {"v": 1}, T0)
    with pytest.raises(InvalidJob):
        await store.note_worker(worker, info, T0 + 1)
    assert await store.workers(T0 + 1, max_age=10) == [
        WorkerRecord(id="w", info={"v": 1}, seen=T0, jobs=[])
    ]


async def test_limits_of_id_and_info_are_inclusive(store: Store) -> None:
    long_id = "x" * MAX_WORKER_ID
    # {"k":"..."} is 8 bytes of JSON around the value
    big = {"k": "y" * (MAX_WORKER_INFO - 8)}
    await store.note_worker(long_id, big, T0)
    assert await store.workers(T0, max_age=0) == [
        WorkerRecord(id=long_id, info=big, seen=T0, jobs=[])
    ]
    with pytest.raises(InvalidJob):
        await store.note_worker(long_id, {"k": "y" * (MAX_WORKER_INFO - 7)}, T0)
    for bad in ("", "x" * (MAX_WORKER_ID + 1)):
        with pytest.raises(InvalidJob):
            await store.forget_worker(bad)
    assert len(await store.workers(T0, max_age=0)) == 1


async def test_shared_by_every_store_on_the_same_data(backend: Backend) -> None:
    """On a shared store (Redis) every process sees every worker; the embedded store
    keeps its registry in memory, so a restart starts it empty."""
    one = await backend.open()
    await one.note_worker("w", {"server": "one"}, T0)
    if backend.name == "sqlite":
        await one.close()
        two = await backend.open()
        assert await two.workers(T0, max_age=10) == []
        return
    two = await backend.open()
    assert await two.workers(T0, max_age=10) == [
        WorkerRecord(id="w", info={"server": "one"}, seen=T0, jobs=[])
    ]
    await two.forget_worker("w")
    assert await one.workers(T0, max_age=10) == []


def shrink(monkeypatch: pytest.MonkeyPatch, **limits: int) -> None:
    """Make the registry's caps small (base.py's constants, as each backend took them)."""
    import distqueue.store.redis as redis_store
    import distqueue.store.sqlite as sqlite_store

    modules: list[Any] = [redis_store, sqlite_store]
    try:
        import distqueue.store.postgres as postgres_store
    except ImportError:  # no psycopg: no postgres store to shrink
        pass
    else:
        modules.append(postgres_store)
    for name, value in limits.items():
        for module in modules:
            monkeypatch.setattr(module, name, value)


async def test_the_registry_is_capped(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    shrink(monkeypatch, MAX_WORKERS=3)
    await store.note_worker("a", {}, T0 + 2)
    await store.note_worker("b", {}, T0 + 1)
    await store.note_worker("c", {}, T0 + 3)
    await store.note_worker("b", {"v": 2}, T0 + 4)  # noted again: not a new one
    assert list(await listed(store, T0 + 4)) == ["a", "b", "c"]
    await store.note_worker("d", {}, T0 + 5)  # a new one: "a", seen longest ago, goes
    assert list(await listed(store, T0 + 5)) == ["b", "c", "d"]


async def test_stale_records_are_deleted_a_batch_per_call(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    shrink(monkeypatch, WORKERS_PURGE=10)
    names = [f"w{i:03}" for i in range(600)]
    stale, live = names[:550], names[550:]
    for i, name in enumerate(stale):  # the larger the id, the older
        await store.note_worker(name, {}, T0 - 10 - i)
    for name in live:
        await store.note_worker(name, {}, T0)
    # the stale ones come first by id (past the registry walk's 500 per step): skipped
    assert [r.id for r in await store.workers(T0, max_age=1, limit=20)] == live[:20]
    # that call deleted the 10 stale ones seen longest ago; the rest are still there
    every = {"max_age": float("inf"), "limit": 1000}
    assert [r.id for r in await store.workers(T0, **every)] == stale[:540] + live
    assert [r.id for r in await store.workers(T0, max_age=1)] == live
    assert [r.id for r in await store.workers(T0, **every)] == stale[:530] + live
