"""Workflow and flow-control edges against a real server in the test's own loop, with
an in-process worker: a pass_results job stopped while its parents' results are on
their way, a parent whose result is gone, rate limits delivering their rate, and a
direct-mode worker releasing waiting jobs without waiting for a poll."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from distqueue.client import AsyncClient
from distqueue.config import ServerConfig
from distqueue.jobs import JobState
from distqueue.server.server import Server
from distqueue.worker.worker import Worker, WorkerOptions
from tests.integration.test_client import addr

S = JobState
TASKS = ["tests.sample_tasks"]


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    # a 6 s lease: the worker heartbeats every 2 s, and a cancel of a running job
    # reaches it with the next beat (with 30 s, a test waited 10 s for it)
    srv = Server(ServerConfig(port=0, data=str(tmp_path / "data"), lease=6.0))
    await srv.start()
    yield srv
    await srv.shutdown()


@pytest.fixture
async def worker() -> AsyncIterator[Callable[..., Awaitable[Worker]]]:
    started: list[tuple[Worker, asyncio.Task[None]]] = []

    async def start(address: str, **options: Any) -> Worker:
        w = Worker(WorkerOptions(server=address, tasks=TASKS, **options))
        task = asyncio.create_task(w.run())
        started.append((w, task))
        for _ in range(200):
            if w.connected:
                return w
            await asyncio.sleep(0.05)
        raise AssertionError("the worker did not connect")

    yield start
    for w, task in started:
        w.stop()
        await asyncio.wait_for(task, 30)


async def _state(client: AsyncClient, job_id: int, state: JobState, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while (job := await client.status(job_id)).state is not state:
        assert time.monotonic() < deadline, f"job {job_id} is {job.state}, not {state}"
        await asyncio.sleep(0.05)


async def test_a_job_cancelled_while_its_parents_results_are_read_is_cancelled(
    server: Server, worker: Callable[..., Awaitable[Worker]]
) -> None:
    w = await worker(addr(server), concurrency=2)
    reading = asyncio.Event()
    answered = asyncio.Event()
    pipeline = w.control.pipeline

    async def slow(commands: Any) -> Any:
        if commands and commands[0][0] == "RESULT":
            reading.set()
            await answered.wait()  # the results arrive only after the cancel
        return await pipeline(commands)

    w.control.pipeline = slow  # type: ignore[method-assign]
    async with AsyncClient(addr(server)) as client:
        a = await client.submit("tests.sample_tasks.add", 1, 2)
        b = await client.submit("tests.sample_tasks.add", 10, after=a, pass_results=True)
        await asyncio.wait_for(reading.wait(), 20)
        assert await client.cancel(b) == "cancelling"
        await _state(client, b, S.CANCELLED)  # the heartbeat told the worker: dropped
        answered.set()
        await asyncio.sleep(0.2)
        assert b not in w.running and not w._waiting
        assert (await client.status(b)).attempts == 1  # it never ran


async def test_a_parent_whose_result_is_gone_fails_its_child_for_good(
    server: Server, worker: Callable[..., Awaitable[Worker]]
) -> None:
    async with AsyncClient(addr(server)) as client:
        a = await client.submit("tests.sample_tasks.add", 1, 2, queue="first")
        b = await client.submit("tests.sample_tasks.collect", after=a, pass_results=True,
                                retries=3)  # fmt: skip
        # a runs and is purged before b starts: b's worker cannot read its result
        first = await worker(addr(server), concurrency=1, queues=["first"])
        assert await client.result(a, wait=20) == 3
        await client.purge(a)
        await worker(addr(server), concurrency=1)
        await _state(client, b, S.DEAD)
        job = await client.status(b)
        assert (
            job.error is not None and job.error.message == f"the result of job {a} is gone (purged)"
        )
        assert job.attempts == 1  # not retried: retrying cannot bring it back
        first.stop()


@pytest.mark.serial  # asserts on elapsed time: alone (tests/conftest.py)
async def test_a_rate_limit_delivers_its_rate(
    server: Server, worker: Callable[..., Awaitable[Worker]]
) -> None:
    # 60 starts at 50/s, burst 1: about 1.2 s. A FETCH that slept until its poll
    # or the next housekeeping tick instead of the tokens' time did ~4 a second (15 s)
    async with AsyncClient(addr(server)) as client:
        await client.set_limit(type="tests.sample_tasks.add", rate="50/s")
        await worker(addr(server), concurrency=8)
        began = time.monotonic()
        ids = [await client.submit("tests.sample_tasks.add", i, 0) for i in range(60)]
        for job_id in ids:
            await client.wait(job_id, 60)
        took = time.monotonic() - began
        jobs = [await client.status(i) for i in ids]
        starts = sorted(j.started_at for j in jobs if j.started_at is not None)
        assert len(starts) == 60
        # never more than the rate: 60 starts span at least 59 token intervals
        assert starts[-1] - starts[0] >= 59 / 50 - 0.05
        assert took < 8, f"60 jobs at 50/s took {took:.1f}s"


@pytest.mark.serial  # asserts on elapsed time: alone (tests/conftest.py)
async def test_a_direct_mode_worker_releases_a_chain_without_waiting_for_polls(
    own_redis: str, worker: Callable[..., Awaitable[Worker]]
) -> None:
    await worker(own_redis, concurrency=4)
    async with AsyncClient(own_redis) as client:
        began = time.monotonic()
        ids = await client.chain([("tests.sample_tasks.add", 1, 1)] + [
            ("tests.sample_tasks.add", 1) for _ in range(7)], pass_results=True)  # fmt: skip
        assert await client.result(ids[-1], wait=30) == 9
        took = time.monotonic() - began
        # each step released by the ACK of the one before, through the shared service:
        # a poll a step (1 s) would take 8 s
        assert took < 4, f"a chain of 8 took {took:.1f}s"
