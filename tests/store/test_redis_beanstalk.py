"""The Redis store's side of the beanstalk operations (#16): the per-queue indexes of
the dead jobs (P:dead) and of the scheduled and retrying ones (P:delayed) that kick
and peek read stay exact through every operation that moves jobs in or out of those
states; a format 3 store gets them built when it opens; members left stale are
passed over; a kick of one type reads that type's jobs only."""

from __future__ import annotations

import os
from collections import defaultdict
from typing import Any

import pytest
import redis.asyncio as aioredis

from distqueue.jobs import JobError, JobSpec, JobState
from distqueue.policy import Retention
from distqueue.store import open_store
from distqueue.store import redis as redis_store
from distqueue.store.base import Heartbeat
from distqueue.store.redis import FORMAT, RedisStore
from tests.redis_server import redis_url

S = JobState
T0 = 1_000_000.0
BURIED = JobError(kind="buried", message="set aside")
_COUNT = iter(range(1, 10**9))


async def shared_store(**options: Any) -> RedisStore:
    store = await open_store(redis_url(), prefix=f"bean{os.getpid()}x{next(_COUNT)}", **options)
    assert isinstance(store, RedisStore)
    return store


async def indexes(store: RedisStore) -> dict[str, dict[str, list[tuple[int, float]]]]:
    """Every P:dead:* and P:delayed:* zset: kind -> queue or pair -> (id, score) in order."""
    raw = store._redis
    out: dict[str, dict[str, list[tuple[int, float]]]] = {"dead": {}, "delayed": {}}
    for kind in out:
        head = store._key(kind).encode() + b":"
        async for key in raw.scan_iter(match=head + b"*"):
            members = await raw.zrange(key, 0, -1, withscores=True)
            out[kind][key[len(head) :].decode()] = [(int(m), s) for m, s in members]
    return out


async def expected(store: RedisStore) -> dict[str, dict[str, list[tuple[int, float]]]]:
    """What the indexes should hold, from the jobs themselves."""
    out: dict[str, dict[str, list[tuple[int, float]]]] = {"dead": {}, "delayed": {}}
    found: dict[str, dict[str, list[tuple[float, int]]]] = {k: defaultdict(list) for k in out}
    for job in await store.list(limit=1000):
        full = await store.get(job.id)
        assert full is not None
        if full.state is S.DEAD:
            kind, score = "dead", full.finished_at
        elif full.state in (S.SCHEDULED, S.RETRYING):
            kind, score = "delayed", full.run_at
        else:
            continue
        assert score is not None
        for name in (full.queue, f"{full.queue}\t{full.type}"):
            found[kind][name].append((score, full.id))
    for kind, names in found.items():
        out[kind] = {n: [(i, s) for s, i in sorted(v)] for n, v in names.items()}
    return out


async def check(store: RedisStore) -> None:
    assert await indexes(store) == await expected(store)


async def test_the_indexes_follow_every_move() -> None:
    store = await shared_store(poison_limit=0)
    try:
        specs = [
            JobSpec(type="t", max_retries=0),  # dies (fail)
            JobSpec(type="u", max_retries=2),  # retrying
            JobSpec(type="t", run_at=T0 + 50),  # scheduled
            JobSpec(type="t", queue="q2", run_at=T0 + 60),  # scheduled, then cancelled
            JobSpec(type="u", deadline=T0 - 1),  # expires on its claim
            JobSpec(type="t", queue="q2"),  # lost: poison (limit 0)
            JobSpec(type="t"),  # requeued with a delay
        ]
        ids = [e.id for e in await store.enqueue(specs, T0)]
        [w1] = [e.id for e in await store.enqueue([JobSpec(type="w", after=(ids[2],),
                                                          run_at=T0 + 70)], T0)]  # fmt: skip
        await check(store)
        jobs = {j.id: j for j in await store.claim("w", 10, T0, lease=10)}
        assert set(jobs) == {ids[0], ids[1], ids[5], ids[6]}  # ids[4] expired
        await store.fail(ids[0], jobs[ids[0]].token, BURIED, T0 + 1, retryable=False)
        await store.fail(ids[1], jobs[ids[1]].token, BURIED, T0 + 2, priority=3)
        assert await store.requeue(ids[6], jobs[ids[6]].token, T0 + 3, run_at=T0 + 40) is (
            S.SCHEDULED
        )
        await check(store)
        assert await store.expire(T0 + 10) == [ids[5]]  # poison: dead
        assert await store.cancel(ids[3], T0 + 11) is S.CANCELLED
        await check(store)
        assert (await store.get(ids[5])).state is S.DEAD  # type: ignore[union-attr]
        # three dead in default's index: ids[4] (T0), ids[0] (T0 + 1); ids[5] in q2
        peeked = await store.peek("default", S.DEAD)
        assert peeked is not None and peeked.id == ids[4]
        assert await store.kick("default", 1, T0 + 12, type="t") == [ids[0]]
        await check(store)
        await store.retry(ids[4], T0 + 13)
        await check(store)
        # the soonest due of default: ids[1] (retrying), ids[6] (T0 + 40), ids[2] (T0 + 50)
        assert sorted(await store.kick("default", 2, T0 + 14)) == sorted([ids[1], ids[6]])
        await check(store)
        assert await store.kick_job(ids[2], T0 + 15) is S.SCHEDULED
        await check(store)
        done = await store.claim("w", 10, T0 + 16, types=["t"], queues=["default"])
        assert [j.id for j in done] == [ids[0], ids[6], ids[2]]
        for job in done:
            await store.complete(job.id, job.token, None, T0 + 16)
        await check(store)
        assert (await store.get(w1)).state is S.SCHEDULED  # type: ignore[union-attr]
        assert await store.promote(T0 + 70) == [w1]
        await check(store)
        await store.delete(ids[5])
        await check(store)
        jobs = {j.id: j for j in await store.claim("w", 10, T0 + 71, lease=10)}
        for job in jobs.values():
            await store.fail(job.id, job.token, BURIED, T0 + 72, retryable=False)
        await check(store)
        assert (await indexes(store))["dead"]
        assert await store.sweep(T0 + 10_000, Retention(succeeded=1, failed=1)) > 0
        await check(store)
        assert await indexes(store) == {"dead": {}, "delayed": {}}
    finally:
        await store.close()


async def test_a_cancel_sticks_and_its_waiters_move_on() -> None:
    """tests/contract's test_a_cancel_sticks, with ``after`` a tuple (JobSpec wants one)."""
    store = await shared_store()
    try:
        [a] = [e.id for e in await store.enqueue([JobSpec(type="t")], T0)]
        [waiter] = [e.id for e in await store.enqueue([JobSpec(type="w2", after=(a,))], T0)]
        [ja] = await store.claim("w", 1, T0, lease=60, types=["t"])
        assert await store.cancel(a, T0) is S.RUNNING
        assert await store.requeue(a, ja.token, T0, priority=1) is S.CANCELLED
        job = await store.get(a)
        assert job is not None and (job.state, job.priority) == (S.CANCELLED, 1)
        assert (await store.get(waiter)).state is S.CANCELLED  # type: ignore[union-attr]
        stats = await store.stats()
        assert stats.by_state["cancelled"] == 2 and stats.by_state["running"] == 0
        assert stats.totals["cancelled"] == 2
        assert await store.heartbeat("w", T0) == Heartbeat(held={}, cancel=[])
    finally:
        await store.close()


async def test_requeue_counts_nothing_and_keeps_the_counts() -> None:
    store = await shared_store()
    try:
        ids = [e.id for e in await store.enqueue([JobSpec(type="t", priority=5)] * 2, T0)]
        jobs = await store.claim("w", 2, T0, lease=60)
        before = (await store.stats()).totals
        assert await store.requeue(ids[0], jobs[0].token, T0 + 1, priority=2**32 - 1) is S.QUEUED
        assert await store.requeue(ids[1], jobs[1].token, T0 + 1, run_at=T0 + 9) is S.SCHEDULED
        stats = await store.stats()
        assert stats.totals == before
        assert stats.by_state["queued"] == 1 and stats.by_state["scheduled"] == 1
        assert stats.by_queue == {"default": {"queued": 1, "scheduled": 1}}
        assert stats.queued_by_priority == {2**32 - 1: 1}
        assert stats.oldest_queued_at == T0 + 1
        assert await store.heartbeat("w", T0 + 1) == Heartbeat(held={}, cancel=[])
        peeked = await store.peek("default", S.SCHEDULED, type="t")
        assert peeked is not None and (peeked.id, peeked.run_at) == (ids[1], T0 + 9)
        await check(store)
    finally:
        await store.close()


async def test_a_format_3_store_is_migrated(monkeypatch: pytest.MonkeyPatch) -> None:
    """A store of format 3 has no P:dead or P:delayed: opening it builds them, a few
    jobs a step (here 2)."""
    a = await shared_store()
    prefix = a.prefix[1:-1]
    try:
        ids = [e.id for e in await a.enqueue(
            [JobSpec(type=t, queue=q, max_retries=m, run_at=r)
             for t, q, m, r in [("t", "default", 0, None), ("u", "default", 0, None),
                                ("t", "q2", 0, None), ("t", "default", 1, None),
                                ("t", "default", 0, T0 + 30), ("u", "q2", 0, T0 + 20),
                                ("t", "default", 0, None)]],
            T0)]  # fmt: skip
        jobs = {j.id: j for j in await a.claim("w", 10, T0, lease=60)}
        for k, i in enumerate((2, 0, 1, 3)):
            await a.fail(ids[i], jobs[ids[i]].token, BURIED, T0 + k, retryable=i == 3)
        want = await indexes(a)
        assert want == await expected(a) and len(want["dead"]) == 5  # 3 queues+pairs ...
        raw = a._redis
        for kind in ("dead", "delayed"):
            async for key in raw.scan_iter(match=a._key(kind).encode() + b":*"):
                await raw.delete(key)
        await raw.set(a._key("format"), b"3")
    finally:
        await a.close()
    monkeypatch.setattr(redis_store, "MIGRATE_SCAN", 2)
    b = await open_store(redis_url(), prefix=prefix)
    assert isinstance(b, RedisStore)
    try:
        assert await b._redis.get(b._key("format")) == FORMAT == b"4"
        assert await indexes(b) == want
        peeked = await b.peek("default", S.DEAD)
        assert peeked is not None and peeked.id == ids[0]
        assert await b.kick("default", 10, T0 + 5) == [ids[0], ids[1]]
        assert await b.kick("q2", 10, T0 + 5) == [ids[2]]
        assert await b.kick("q2", 10, T0 + 5) == [ids[5]]
        await check(b)
    finally:
        await b.close()


async def test_stale_members_are_passed_over_and_dropped() -> None:
    """Members of P:dead or P:delayed whose job is not there (a crash of an earlier
    version, a process of format 3 still running): peek passes them over, kick drops
    them."""
    store = await shared_store()
    try:
        ids = [e.id for e in await store.enqueue([JobSpec(type="t", max_retries=0)] * 2, T0)]
        [queued] = [e.id for e in await store.enqueue([JobSpec(type="t")], T0)]
        jobs = await store.claim("w", 2, T0, lease=60)
        for job in jobs:
            await store.fail(job.id, job.token, BURIED, T0 + 5, retryable=False)
        raw = store._redis
        for name in ("default", "default\tt"):
            key = store._key("dead", name)
            await raw.zadd(key, {b"%020d" % 999_999: T0 - 2, b"%020d" % queued: T0 - 1})
        peeked = await store.peek("default", S.DEAD, type="t")
        assert peeked is not None and peeked.id == ids[0]
        assert await store.kick("default", 1, T0 + 6) == [ids[0]]
        assert await raw.zrange(store._key("dead", "default"), 0, -1) == [b"%020d" % ids[1]]
        # the pair's index keeps the gone job's member (nothing says its type) until a
        # kick of that type drops it; the queued job's went with the queue's
        assert await store.kick("default", 5, T0 + 6, type="t") == [ids[1]]
        assert await indexes(store) == {"dead": {}, "delayed": {}}
        assert (await store.stats()).by_state["queued"] == 3
    finally:
        await store.close()


async def test_a_kick_of_one_type_reads_that_type_only(own_redis: str) -> None:
    store = await open_store(own_redis, prefix="kick")
    assert isinstance(store, RedisStore)
    raw = aioredis.Redis.from_url(own_redis)
    try:
        others = [JobSpec(type="other", max_retries=0)] * 200
        await store.enqueue(others, T0)
        [mine] = [e.id for e in await store.enqueue([JobSpec(type="t", max_retries=0)], T0)]
        for job in await store.claim("w", 300, T0, lease=60):
            await store.fail(job.id, job.token, BURIED, T0 + job.id, retryable=False)
        await raw.config_resetstat()
        peeked = await store.peek("default", S.DEAD, type="t")
        assert peeked is not None and peeked.id == mine
        assert await store.kick("default", 5, T0 + 1000, type="t") == [mine]
        info = await raw.info("commandstats")
        calls = {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in info.items()}
        # the peek: one ZRANGE, one HMGET, one HGETALL; the kick: a ZRANGE, an HMGET of
        # the job (and of P:parked, as every job made ready costs) - never the others'
        assert calls.get("hmget", 0) <= 3 and calls.get("zrange", 0) <= 2, calls
    finally:
        await raw.aclose()
        await store.close()
