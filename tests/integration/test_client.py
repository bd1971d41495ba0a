"""The client library against a real server in the test's own event loop (real TCP,
real SQLite store): the uvicorn ``run_server`` style, fast enough for many cases."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from distqueue import codec
from distqueue.client import AsyncClient, Client
from distqueue.client.connection import AsyncConnection
from distqueue.config import ServerConfig
from distqueue.errors import JobFailed, NotFinished, Timeout
from distqueue.jobs import JobState
from distqueue.server.server import Server


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    srv = Server(ServerConfig(port=0, data=str(tmp_path / "data"), lease=5.0))
    await srv.start()
    yield srv
    await srv.shutdown()


def addr(server: Server) -> str:
    return f"127.0.0.1:{server.port}"


async def worker_conn(server: Server, wid: str, types: str = "echo,file") -> AsyncConnection:
    conn = AsyncConnection(addr(server), role="worker", hello=["ID", wid, "TYPES", types])
    await conn.connect()
    return conn


async def test_concurrent_submits_share_one_pipelined_connection(server: Server) -> None:
    async with AsyncClient(addr(server)) as client:
        ids = await asyncio.gather(*(client.submit("echo", str(i)) for i in range(300)))
        assert sorted(ids) == list(range(1, 301))
        jobs = await asyncio.gather(*(client.status(i) for i in ids))
        assert [j.args for j in jobs] == [[str(i)] for i in range(300)]


async def test_payload_in_bytes_result_out_round_trip(server: Server) -> None:
    payload = os.urandom(3 * 1024 * 1024)
    async with AsyncClient(addr(server)) as client:
        [job_id] = await client.submit_many(
            [{"type": "file", "payload": payload, "check_type": False}]
        )
        assert (await client.status(job_id)).payload_size == len(payload)
        worker = await worker_conn(server, "w1")
        [[jid, token, meta, got]] = await worker.call("FETCH", 1, 1)
        assert (jid, got) == (job_id, payload)
        assert codec.loads(meta)["type"] == "file"
        await worker.call("ACK", jid, token, payload[::-1], "bytes")
        assert await client.result(job_id) == payload[::-1]
        status = await client.status(job_id)
        assert status.state is JobState.SUCCEEDED
        await worker.close()


async def test_cancel_running_job_reaches_worker_through_beat(server: Server) -> None:
    async with AsyncClient(addr(server)) as client:
        job_id = await client.submit("echo", "long")
        worker = await worker_conn(server, "w2")
        [[jid, token, _, _]] = await worker.call("FETCH", 1, 1)
        assert await client.cancel(job_id) == "cancelling"
        beat = codec.loads(await worker.call("BEAT"))
        assert beat == {"held": [jid], "cancel": [jid]}
        waiting = asyncio.ensure_future(client.wait(job_id, timeout=10))
        error = codec.dumps({"kind": "cancelled", "message": "stopped"})
        assert await worker.call("FAIL", jid, token, error) == b"cancelled"
        job = await waiting
        assert job.state is JobState.CANCELLED
        with pytest.raises(JobFailed):
            await client.result(job_id)
        await worker.close()


async def test_unique_key_delay_and_promotion(server: Server) -> None:
    async with AsyncClient(addr(server)) as client:
        a = await client.submit("echo", "x", unique_key="k1")
        b = await client.submit("echo", "y", unique_key="k1")
        assert a == b
        later = await client.submit("echo", "later", delay=0.3)
        assert (await client.status(later)).state is JobState.SCHEDULED
        with pytest.raises(NotFinished):
            await client.result(later)
        worker = await worker_conn(server, "w3")
        got = await worker.call("FETCH", 10, 1)
        assert [j[0] for j in got] == [a]
        got = await worker.call("FETCH", 10, 5)  # blocks until the housekeeper promotes it
        assert [j[0] for j in got] == [later]
        await worker.close()


async def test_worker_disconnect_requeues_at_once(server: Server) -> None:
    async with AsyncClient(addr(server)) as client:
        job_id = await client.submit("echo", "x")
        worker = await worker_conn(server, "w4")
        [[_, token, _, _]] = await worker.call("FETCH", 1, 1)
        await worker.close()  # no BYE: the server sees it vanish
        for _ in range(100):
            job = await client.status(job_id)
            if job.state is JobState.QUEUED:
                break
            await asyncio.sleep(0.02)
        assert job.state is JobState.QUEUED and job.lost == 1
        other = await worker_conn(server, "w5")
        [[jid2, token2, _, _]] = await other.call("FETCH", 1, 1)
        assert (jid2, token2) == (job_id, token + 1)
        await other.close()


async def test_wait_times_out_and_list_pages(server: Server) -> None:
    async with AsyncClient(addr(server)) as client:
        ids = await client.submit_many([{"type": "echo", "args": str(i)} for i in range(25)])
        with pytest.raises(Timeout):
            await client.wait(ids[0], timeout=0.1)
        seen, before = [], None
        while True:
            page = await client.list(limit=10, before=before)
            if not page:
                break
            seen += [j.id for j in page]
            before = page[-1].id
        assert seen == sorted(ids, reverse=True)


async def test_sync_client_in_a_thread(server: Server) -> None:
    def use() -> tuple[int, dict[str, object]]:
        with Client(addr(server)) as client:
            job_id = client.submit("echo", "sync")
            return job_id, client.stats()

    job_id, stats = await asyncio.to_thread(use)
    assert stats["jobs"]["queued"] == 1  # type: ignore[index]
    assert job_id == 1


async def test_pipelined_acks_each_get_their_own_reply(server: Server) -> None:
    async with AsyncClient(addr(server)) as client:
        ids = await client.submit_many([{"type": "echo", "args": str(i)} for i in range(3)])
        worker = await worker_conn(server, "w6")
        jobs = await worker.call("FETCH", 3, 1)
        tokens = {j[0]: j[1] for j in jobs}
        replies = await worker.pipeline([
            ["ACK", ids[0], tokens[ids[0]], b'"a"'],
            ["ACK", ids[1], 999, b'"stale"'],
            ["STATUS", ids[0]],
            ["ACK", ids[2], tokens[ids[2]], b"not json"],
            ["ACK", ids[2], tokens[ids[2]], b'"c"'],
        ])  # fmt: skip
        assert replies[0] == b"OK" and replies[4] == b"OK"
        assert type(replies[1]).__name__ == "LeaseLost"
        assert codec.loads(replies[2])["state"] == "succeeded"  # the ACK before it landed first
        assert type(replies[3]).__name__ == "InvalidJob"
        assert [await client.result(i) for i in (ids[0], ids[2])] == ["a", "c"]
        assert (await client.status(ids[1])).state is JobState.RUNNING
        await worker.close()


async def test_wait_blocked_before_the_ack_gets_the_finished_job(server: Server) -> None:
    async with AsyncClient(addr(server)) as client:
        job_id = await client.submit("echo", "waited for")
        worker = await worker_conn(server, "w7")
        [[jid, token, _, _]] = await worker.call("FETCH", 1, 1)
        waiting = asyncio.ensure_future(client.wait(job_id, timeout=10))
        for _ in range(500):  # until the WAIT blocks on the server
            if job_id in server.service.done:
                break
            await asyncio.sleep(0.01)
        assert job_id in server.service.done
        # a stale ACK wakes nobody with a finished job: the WAIT goes on waiting
        replies = await worker.pipeline([["ACK", jid, token + 1, b'"stale"']])
        assert type(replies[0]).__name__ == "LeaseLost"
        await asyncio.sleep(0.05)
        assert not waiting.done()
        # the real ACK: the WAIT gets the job as the ACK left it, result and all
        assert await worker.call("ACK", jid, token, b'"the result"') == b"OK"
        job = await waiting
        assert job.state is JobState.SUCCEEDED and job.result == "the result"
        assert job.worker == "w7" and job.finished_at is not None
        await worker.close()


async def test_blocked_fetch_takes_a_job_submitted_while_it_waits(server: Server) -> None:
    server.service.config.poll = 60  # only a wake-up, not its own look, can find the job
    async with AsyncClient(addr(server)) as client:
        first = await client.submit("echo", "one", unique_key="u1")
        worker = await worker_conn(server, "w8")
        [[taken, token, *_]] = await worker.call("FETCH", 1, 1)
        assert taken == first
        assert await worker.call("ACK", taken, token, b'"one"') == b"OK"  # no lease left
        fetching = asyncio.ensure_future(worker.call("FETCH", 1, 30))
        for _ in range(500):  # until the FETCH blocks on the server
            if len(server.service.ready):
                break
            await asyncio.sleep(0.01)
        assert len(server.service.ready) == 1
        # a submit that creates nothing (the same unique key) wakes it for nothing
        assert await client.submit("echo", "again", unique_key="u1") == first
        later = await client.submit("echo", "later", delay=60)  # not ready: not for it
        await asyncio.sleep(0.05)
        assert not fetching.done()
        # a job it can take: the woken FETCH's claim finds it (a bound on liveness:
        # without the wake-up it would answer only at its own 30 s deadline)
        second = await client.submit("echo", "two")
        [[got, *_]] = await asyncio.wait_for(fetching, 5)
        assert got == second
        assert (await client.status(later)).state is JobState.SCHEDULED
        await worker.close()
