"""The Redis store's side of #14 (dependencies, limits, pauses), where the contract
tests (tests/contract/test_flow.py) cannot look: what it costs Redis, and the keys
behind it (_lib.lua's key schema). Each test has a redis-server of its own.

- Parking: a (queue, type) pair whose queue or type is blocked (paused, at its
  concurrency, out of rate tokens) leaves P:pairs, so 1,000 limited types at their
  limit cost a claim of other jobs nothing; what may unblock it puts it back.
- A cascade of cancellations goes down a whole chain of waiting jobs in one script.
- Enqueues grouped into one script call are refused (InvalidJob, QueueFull) one by one.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from distqueue.errors import InvalidJob, QueueFull
from distqueue.jobs import JobSpec, JobState
from distqueue.store import open_store
from distqueue.store.base import Limit
from distqueue.store.redis import RedisStore

S = JobState
T0 = 1_000_000.0
LONG = 100_000.0
P = "{flow}"


@pytest.fixture
async def raw(own_redis: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(own_redis, decode_responses=True)
    yield client
    await client.aclose()


@pytest.fixture
async def store(own_redis: str) -> AsyncIterator[RedisStore]:
    s = await open_store(own_redis, prefix="flow")
    assert isinstance(s, RedisStore)
    yield s
    await s.close()


async def calls(raw: aioredis.Redis) -> dict[str, int]:
    info = await raw.info("commandstats")
    out = {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in info.items()}
    return {k: v for k, v in out.items() if k not in ("config|resetstat", "info")}


async def test_limited_types_at_their_limit_cost_other_claims_nothing(
    store: RedisStore, raw: aioredis.Redis
) -> None:
    types = [f"lim{i}" for i in range(1000)]
    for t in types:
        await store.set_limit(Limit(scope="type", name=t, concurrency=1))
    await store.enqueue([JobSpec(type=t) for t in types for _ in range(2)], T0)
    # one claim hands out one job of each, and parks every pair: at its limit, jobs left
    got = await store.claim("w", 5000, T0, lease=LONG)
    assert sorted(j.type for j in got) == sorted(types)
    assert await raw.scard(f"{P}:pairs") == 0
    assert await raw.scard(f"{P}:parked:conc\ttype\tlim7") == 1
    # more jobs of a parked pair leave it parked
    await store.enqueue([JobSpec(type="lim7"), JobSpec(type="free")], T0)
    assert await raw.smembers(f"{P}:pairs") == {"default\tfree"}
    await store.enqueue([JobSpec(type="free") for _ in range(99)], T0)
    await raw.config_resetstat()
    for _ in range(10):
        assert len(await store.claim("w", 10, T0, lease=LONG)) == 10
    used = await calls(raw)
    # the 1,000 parked pairs are never read: per claim a few commands and per job two
    assert used.get("zrange", 0) <= 10 and used["evalsha"] == 10, used
    assert sum(used.values()) <= 10 * 20 + 100 * 2, used
    # a job of lim7 finishing frees a slot: its pair goes back, and gives its next job
    [held] = [j for j in got if j.type == "lim7"]
    await store.complete(held.id, held.token, None, T0 + 1)
    assert await raw.sismember(f"{P}:pairs", "default\tlim7")
    again = await store.claim("w", 10, T0 + 1, lease=LONG)
    assert [j.type for j in again] == ["lim7"]
    assert await raw.scard(f"{P}:pairs") == 0  # at its limit again (one job left): parked
    stats = await store.stats()  # the parked pairs' jobs are queued still
    assert stats.by_state["queued"] == 1000 and stats.oldest_queued_at == T0


async def test_a_pause_parks_and_a_resume_unparks(store: RedisStore, raw: aioredis.Redis) -> None:
    await store.enqueue([JobSpec(type=t, queue="q") for t in ("a", "b", "c")], T0)
    await store.pause("q", True)
    assert await store.claim("w", 10, T0) == []
    assert await raw.smembers(f"{P}:parked:pause\tqueue\tq") == {"q\ta", "q\tb", "q\tc"}
    assert await raw.hget(f"{P}:parked", "q\ta") == "pause\tqueue\tq"
    await store.pause("q", False)
    assert await raw.scard(f"{P}:pairs") == 3 and not await raw.exists(f"{P}:parked")
    assert len(await store.claim("w", 10, T0)) == 3
    assert not await raw.exists(f"{P}:flow")  # nothing limited or paused: claims check nothing


async def test_a_rate_parked_pair_comes_back_at_its_time(
    store: RedisStore, raw: aioredis.Redis
) -> None:
    await store.set_limit(Limit(scope="type", name="r", rate=1, period=10))
    await store.enqueue([JobSpec(type="r"), JobSpec(type="r")], T0)
    assert len(await store.claim("w", 10, T0, lease=LONG)) == 1
    assert await raw.sismember(f"{P}:parked:rate\ttype\tr", "default\tr")
    assert await raw.zscore(f"{P}:unpark_at", "rate\ttype\tr") == T0 + 10
    assert await store.next_wakeup() == T0 + 10  # the server's tick comes then
    assert await store.promote(T0 + 9) == [] and await raw.scard(f"{P}:pairs") == 0
    assert await store.promote(T0 + 10) == []  # nothing to promote, but the pair is back
    assert await raw.smembers(f"{P}:pairs") == {"default\tr"}
    assert len(await store.claim("w", 10, T0 + 10, lease=LONG)) == 1


async def test_a_chain_of_waiting_jobs_is_cancelled_in_one_step(
    store: RedisStore, raw: aioredis.Redis
) -> None:
    [head] = await store.enqueue([JobSpec(type="t")], T0)
    ids = [head.id]
    for _ in range(300):
        [e] = await store.enqueue([JobSpec(type="t", after=(ids[-1],))], T0)
        ids.append(e.id)
    # and a fan-out below the chain's end: its last job has MAX_WAITERS-sized company
    fan = await store.enqueue([JobSpec(type="t", after=(ids[-1],)) for _ in range(500)], T0)
    await raw.config_resetstat()
    assert await store.cancel(head.id, T0 + 1) is S.CANCELLED
    used = await calls(raw)
    assert used["evalsha"] - used.get("script|load", 0) == 1  # (a first call loads it)
    stats = await store.stats()
    assert stats.by_state["cancelled"] == 801 and stats.by_state["waiting"] == 0
    assert (await store.get(fan[-1].id)).state is S.CANCELLED  # type: ignore[union-attr]
    # the waiter sets went with the jobs that ended
    assert not [k async for k in raw.scan_iter(f"{P}:waiters:*")]


async def test_grouped_enqueues_are_refused_one_by_one(
    store: RedisStore, raw: aioredis.Redis
) -> None:
    await store.set_limit(Limit(scope="queue", name="small", max_depth=2))
    [a] = await store.enqueue([JobSpec(type="t")], T0)
    batches = [[JobSpec(type="t", args=i)] for i in range(12)]
    batches[3] = [JobSpec(type="t", after=(a.id,)), JobSpec(type="t", after=(999,))]
    batches[5] = [JobSpec(type="t", queue="small") for _ in range(3)]
    batches[7] = [JobSpec(type="t", queue="small") for _ in range(2)]
    batches[9] = [JobSpec(type="t", queue="small")]  # full by then: 7 took both places
    await raw.config_resetstat()
    answers = await asyncio.gather(*(store.enqueue(b, T0) for b in batches), return_exceptions=True)
    assert (await calls(raw))["evalsha"] < len(batches)  # grouped
    assert isinstance(answers[3], InvalidJob) and "999" in str(answers[3])
    assert str(answers[5]) == "queue small holds 0 jobs (max_depth 2)"
    assert str(answers[9]) == "queue small holds 2 jobs (max_depth 2)"
    assert isinstance(answers[5], QueueFull) and isinstance(answers[9], QueueFull)
    made = [e for i, got in enumerate(answers) if i not in (3, 5, 9) for e in got]  # type: ignore[union-attr]
    assert all(e.created for e in made) and len(made) == 10
    # no id was taken by a refused enqueue, and none stored anything
    assert sorted(e.id for e in made) == list(range(a.id + 1, a.id + 11))
    assert sum((await store.stats()).by_state.values()) == 11
    assert not await raw.exists(f"{P}:waiters:{a.id}")


async def test_running_jobs_of_an_earlier_version_are_not_uncounted(
    store: RedisStore, raw: aioredis.Redis
) -> None:
    """A job claimed before P:running existed (no 'tc' in its hash) does not take its
    type's running count below what the claims counted."""
    await store.enqueue([JobSpec(type="t"), JobSpec(type="t")], T0)
    old, new = await store.claim("w", 2, T0, lease=LONG)
    await raw.hdel(f"{P}:job:{old.id}", "tc")
    await raw.hincrby(f"{P}:running", "t", -1)  # as if the old version had claimed it
    await store.complete(old.id, old.token, None, T0)
    assert await raw.hget(f"{P}:running", "t") == "1"
    await store.complete(new.id, new.token, None, T0)
    assert await raw.hget(f"{P}:running", "t") == "0"
