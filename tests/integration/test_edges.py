"""The edges issue 9 found, against a real server in the test's own loop (real TCP,
real SQLite store): who may answer for a job, a worker's brief disconnect, a cancel
that must stick, a FETCH larger than the server's cap."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from distqueue import codec
from distqueue.client import AsyncClient
from distqueue.config import ServerConfig
from distqueue.errors import LeaseLost
from distqueue.jobs import JobState
from distqueue.server.server import Server
from tests.integration.test_client import addr, worker_conn


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    srv = Server(ServerConfig(port=0, data=str(tmp_path / "data"), lease=30.0))
    await srv.start()
    yield srv
    await srv.shutdown()


async def test_a_token_from_another_worker_is_refused(server: Server) -> None:
    async with AsyncClient(addr(server)) as client:
        job_id = await client.submit("echo", "x")
        w1, w2 = await worker_conn(server, "w1"), await worker_conn(server, "w2")
        [[jid, token, _, _]] = await w1.call("FETCH", 1, 1)
        for command in (["ACK", jid, token, '"forged"'],
                        ["FAIL", jid, token, '{"kind": "X", "retryable": false}'],
                        ["PROGRESS", jid, token, 50]):  # fmt: skip
            with pytest.raises(LeaseLost):
                await w2.call(*command)
        job = await client.status(job_id)
        assert (job.state, job.worker, job.progress) == (JobState.RUNNING, "w1", None)
        assert await w1.call("ACK", jid, token, '"mine"') == b"OK"
        assert (await client.result(job_id)) == "mine"
        await w1.close()
        await w2.close()


async def test_a_worker_that_reconnects_at_once_keeps_its_jobs(server: Server) -> None:
    async with AsyncClient(addr(server)) as client:
        job_id = await client.submit("echo", "x")
        w1 = await worker_conn(server, "w1")
        [[jid, token, _, _]] = await w1.call("FETCH", 1, 1)
        await w1.close()  # a blip: the connection drops, no BYE
        await asyncio.sleep(0.2)
        w1 = await worker_conn(server, "w1")
        assert codec.loads(await w1.call("BEAT", "HOLDING", jid))["held"] == [jid]
        assert await w1.call("ACK", jid, token, '"done"') == b"OK"
        job = await client.status(job_id)
        assert (job.state, job.lost, job.attempts) == (JobState.SUCCEEDED, 0, 1)
        await w1.close()


async def test_a_worker_that_stays_away_loses_its_jobs_after_the_grace(server: Server) -> None:
    async with AsyncClient(addr(server)) as client:
        job_id = await client.submit("echo", "x")
        w1 = await worker_conn(server, "w1")
        await w1.call("FETCH", 1, 1)
        await w1.close()
        job = None
        for _ in range(200):  # the grace is 3 s; bounded wait, not a timing assertion
            job = await client.status(job_id)
            if job.state is JobState.QUEUED:
                break
            await asyncio.sleep(0.1)
        assert job is not None and (job.state, job.lost) == (JobState.QUEUED, 1)


async def test_a_cancel_asked_while_running_sticks_through_bye(server: Server) -> None:
    async with AsyncClient(addr(server)) as client:
        job_id = await client.submit("echo", "x")
        w1 = await worker_conn(server, "w1")
        await w1.call("FETCH", 1, 1)
        assert await client.cancel(job_id) == "cancelling"
        assert await w1.call("BYE") == b"OK"  # the worker hands the job back
        job = await client.status(job_id)
        assert job.state is JobState.CANCELLED
        w2 = await worker_conn(server, "w2")
        assert await w2.call("FETCH", 1, 0) == []  # it never runs again
        await w2.close()


async def test_fetch_over_the_cap_is_refused_and_the_cap_is_announced(server: Server) -> None:
    w1 = await worker_conn(server, "w1")
    assert w1.info["max_fetch"] == 1000
    assert w1.info["max_payload"] == server.config.max_payload
    with pytest.raises(Exception, match="n must be 1-1000"):
        await w1.call("FETCH", 1024, 0)
    await w1.close()


async def test_stats_say_the_store_is_healthy(server: Server) -> None:
    async with AsyncClient(addr(server)) as client:
        stats = await client.stats()
        assert stats["store"] == {"ok": True, "error": None, "since": None, "outages": 0}
