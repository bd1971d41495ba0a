"""Store.claim's byte budget (``max_bytes``), on every backend: a claim stops before
the job that would take its total past the budget, always takes a first job, and
leaves the job it stopped at first in line.

A job's size is its stored args (their JSON) plus its payload; the jobs here carry
payloads (args None), except where args are the point.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from distqueue import codec
from distqueue.client import AsyncClient
from distqueue.client.client import submit_command
from distqueue.config import ServerConfig
from distqueue.errors import InvalidJob
from distqueue.jobs import JobSpec, JobState
from distqueue.server.server import Server
from distqueue.store import Store
from distqueue.store.memindex import SMALL_JOB
from tests.conftest import Backend
from tests.integration.test_client import addr, worker_conn

S = JobState
T0 = 1_000_000.0
KiB = 1024


def sized(size: int, **kw: Any) -> JobSpec:
    return JobSpec(type="t", payload=b"x" * size, **kw)


async def enqueue(store: Store, *specs: JobSpec, now: float = T0) -> list[int]:
    return [e.id for e in await store.enqueue(list(specs), now)]


async def claimed(store: Store, n: int, max_bytes: int | None, **kw: Any) -> list[int]:
    return [j.id for j in await store.claim("w", n, T0, max_bytes=max_bytes, **kw)]


async def test_stops_before_the_job_past_the_budget(store: Store) -> None:
    ids = await enqueue(store, *(sized(10 * KiB) for _ in range(5)))
    assert await claimed(store, 10, 25 * KiB) == ids[:2]
    assert await claimed(store, 10, 25 * KiB) == ids[2:4]
    assert await claimed(store, 10, 25 * KiB) == ids[4:]
    assert await claimed(store, 10, 25 * KiB) == []


async def test_a_job_that_fits_exactly_is_taken(store: Store) -> None:
    ids = await enqueue(store, *(sized(10 * KiB) for _ in range(3)))
    assert await claimed(store, 10, 20 * KiB) == ids[:2]
    assert await claimed(store, 10, 20 * KiB - 1) == ids[2:]


async def test_a_job_larger_than_the_budget_is_claimed_alone(store: Store) -> None:
    big, small = await enqueue(store, sized(100 * KiB), sized(10))
    [job] = await store.claim("w", 10, T0, max_bytes=10 * KiB)
    assert job.id == big and job.payload == b"x" * 100 * KiB
    assert await claimed(store, 10, 10 * KiB) == [small]
    # also with a budget of nothing: one job per claim
    more = await enqueue(store, sized(5), sized(5))
    assert await claimed(store, 10, 0) == more[:1]
    assert await claimed(store, 10, 0) == more[1:]


async def test_the_job_not_taken_is_first_in_line_across_priorities(store: Store) -> None:
    low = await enqueue(store, *(sized(10 * KiB, priority=9) for _ in range(2)))
    high = await enqueue(store, *(sized(10 * KiB, priority=1) for _ in range(3)))
    normal = await enqueue(store, sized(10 * KiB, priority=5))
    order = [*high, *normal, *low]
    assert await claimed(store, 10, 25 * KiB) == order[:2]
    # a newer, more urgent and smaller job comes first, as it would have anyway
    [urgent] = await enqueue(store, sized(10, priority=0))
    assert await claimed(store, 10, 25 * KiB) == [urgent, *order[2:4]]
    # a later small job of the same priority does not jump the one that did not fit
    [tiny] = await enqueue(store, sized(10, priority=9))
    assert await claimed(store, 10, 15 * KiB) == order[4:5]
    assert await claimed(store, 1, None) == order[5:6]
    assert await claimed(store, 10, None) == [tiny]


async def test_the_budget_never_skips_to_a_smaller_job(store: Store) -> None:
    a, b, c = await enqueue(store, sized(10 * KiB), sized(20 * KiB), sized(10))
    assert await claimed(store, 10, 25 * KiB) == [a]  # c would fit, but b is next
    assert await claimed(store, 10, 25 * KiB) == [b, c]


async def test_none_is_no_byte_limit(store: Store) -> None:
    ids = await enqueue(store, *(sized(64 * KiB) for _ in range(20)))
    assert await claimed(store, 15, None) == ids[:15]
    assert await claimed(store, 100, None) == ids[15:]


async def test_args_count_as_their_json(store: Store) -> None:
    # args "xxx...": its JSON is the text in quotes, 2 bytes more than the text
    text = "y" * (10 * KiB - 2)
    ids = await enqueue(store, *(JobSpec(type="t", args=text) for _ in range(3)))
    both = await enqueue(store, JobSpec(type="t", args=text, payload=b"p" * 10 * KiB))
    assert await claimed(store, 10, 20 * KiB) == ids[:2]
    assert await claimed(store, 10, 20 * KiB - 1) == ids[2:]
    [job] = await store.claim("w", 10, T0, max_bytes=20 * KiB)
    assert job.id == both[0] and job.args == text


async def test_small_jobs_are_counted_exactly(store: Store) -> None:
    """Jobs below the embedded store's SMALL_JOB bound are counted by their real
    size, not by the bound (a budget of 10 small jobs takes 10, not fewer)."""
    size = SMALL_JOB // 4
    ids = await enqueue(store, *(sized(size) for _ in range(30)))
    assert await claimed(store, 100, 10 * size) == ids[:10]
    assert await claimed(store, 100, 10 * size + size - 1) == ids[10:20]
    # mixed: small ones around a large one
    mixed = await enqueue(store, sized(10), sized(3 * SMALL_JOB), sized(10), sized(10))
    assert await claimed(store, 100, 10 * size) == ids[20:30]
    assert await claimed(store, 100, 3 * SMALL_JOB + 30) == mixed
    assert await claimed(store, 100, 3 * SMALL_JOB + 30) == []


async def test_a_budget_stop_is_not_a_short_queue(store: Store) -> None:
    """n counts jobs, max_bytes bytes: whichever ends the claim first."""
    ids = await enqueue(store, *(sized(KiB) for _ in range(10)))
    assert await claimed(store, 3, 100 * KiB) == ids[:3]
    assert await claimed(store, 100, 4 * KiB) == ids[3:7]


async def test_expired_jobs_cost_nothing(store: Store) -> None:
    gone = await enqueue(store, sized(50 * KiB, deadline=T0 - 1))
    ids = await enqueue(store, sized(10 * KiB), sized(10 * KiB))
    assert await claimed(store, 10, 25 * KiB) == ids
    job = await store.get(gone[0])
    assert job is not None and job.state is S.DEAD and job.error is not None
    assert job.error.kind == "expired"


async def test_requeued_jobs_keep_their_size(store: Store) -> None:
    """A job back in the queue (released, lost, retried, promoted) is counted at its
    size again: the store's bookkeeping follows every way into the ready set."""
    ids = await enqueue(store, *(sized(10 * KiB) for _ in range(4)))
    assert await claimed(store, 10, None) == ids
    await store.release("w", T0)  # back in id order
    assert await claimed(store, 10, 25 * KiB) == ids[:2]
    assert sorted(await store.expire(T0 + 3600)) == ids[:2]  # lost: queued again, behind
    assert await claimed(store, 10, 25 * KiB) == ids[2:]
    assert await claimed(store, 10, 25 * KiB) == ids[:2]


async def test_the_budget_holds_after_a_restart(backend: Backend) -> None:
    store = await backend.open()
    ids = await enqueue(store, *(sized(10 * KiB) for _ in range(3)), sized(10))
    await store.close()
    store = await backend.open()
    assert await claimed(store, 10, 25 * KiB) == ids[:2]
    assert await claimed(store, 10, 25 * KiB) == ids[2:]


async def test_many_jobs_in_one_claim(store: Store) -> None:
    """More jobs than one step of the store takes at once (Redis: CLAIM_BATCH per
    script call): the budget carries over from step to step."""
    ids = await enqueue(store, *(sized(100) for _ in range(700)))
    assert await claimed(store, 1000, 600 * 100) == ids[:600]
    assert await claimed(store, 1000, 600 * 100) == ids[600:]


@pytest.mark.parametrize("bad", [-1, 1.5, "10"])
async def test_a_bad_budget_is_refused(store: Store, bad: Any) -> None:
    await enqueue(store, sized(10))
    with pytest.raises(InvalidJob):
        await store.claim("w", 1, T0, max_bytes=bad)
    assert await claimed(store, 1, None) != []  # nothing was taken


# -- a real server: FETCH answers are bounded by max_fetch_bytes -------------------------


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
@pytest.mark.parametrize("max_fetch_bytes", [None, 1024 * KiB])
async def test_a_fetch_answer_carries_at_most_max_fetch_bytes(
    request: pytest.FixtureRequest, tmp_path: Path, kind: str, max_fetch_bytes: int | None
) -> None:
    """None: the shipped default (16 MiB), with 1 MiB jobs; else 100 KiB jobs."""
    data = str(tmp_path / "data") if kind == "sqlite" else request.getfixturevalue("own_redis")
    config = ServerConfig(port=0, data=data)
    if max_fetch_bytes is not None:
        config.max_fetch_bytes = max_fetch_bytes
    budget = config.max_fetch_bytes
    job_size = 1024 * KiB if max_fetch_bytes is None else 100 * KiB
    server = Server(config)
    await server.start()
    try:
        async with AsyncClient(addr(server)) as client:
            specs = [{"type": "file", "payload": bytes([i % 256]) * job_size,
                      "check_type": False} for i in range(40)]  # fmt: skip
            ids = [int(i) for i in await client.call(*submit_command(specs))]
        w = await worker_conn(server, "w1")
        assert w.info["max_fetch_bytes"] == budget
        fetched: list[int] = []
        sizes: list[int] = []
        while True:
            answer = await w.call("FETCH", 1000, 0)
            if not answer:
                break
            assert all(codec.loads(spec)["args"] is None for _, _, spec, _ in answer)
            # args none: a job's size is its payload's
            assert sum(len(payload) for _, _, _, payload in answer) <= budget + job_size
            fetched += [job_id for job_id, _, _, _ in answer]
            sizes.append(len(answer))
        assert fetched == ids  # every job once, in order
        per_fetch = budget // job_size
        assert sizes == [per_fetch] * (40 // per_fetch) + [40 % per_fetch] * bool(40 % per_fetch)
        await w.close()
    finally:
        await server.shutdown()
