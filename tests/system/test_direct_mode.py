"""Direct mode: workers and clients on Redis without a server, side by side with
a server-connected worker on the same queue."""

from __future__ import annotations

import time

from distqueue.client import AsyncClient, Client
from distqueue.jobs import JobState


def test_direct_and_server_workers_share_one_redis_queue(
    own_redis: str, server_proc, worker_proc
) -> None:  # type: ignore[no-untyped-def]
    # Given a server on the Redis, a worker through the server, a worker on Redis
    server = server_proc("--store", own_redis)
    via_server = worker_proc(server.address, "-c", "4")
    direct = worker_proc(own_redis, "-c", "4")  # --server takes a store URL too
    via_server.wait_connected()
    direct.wait_connected()
    with Client(own_redis) as straight, Client(server.address) as through:
        # When jobs come in both ways
        ids = straight.submit_many([{"type": "sleep", "args": 0.01} for _ in range(300)])
        ids += through.submit_many([{"type": "sleep", "args": 0.01} for _ in range(300)])
        deadline = time.monotonic() + 120
        while straight.stats()["jobs"]["succeeded"] < 600:
            assert time.monotonic() < deadline, straight.stats()["jobs"]
            time.sleep(0.1)
        # Then every job ran exactly once, and both workers took part
        stats = through.stats()
        assert stats["jobs"]["succeeded"] == 600 and stats["totals"]["succeeded"] == 600
        ran_on = {straight.status(i).worker for i in ids}
        assert ran_on == {via_server.id, direct.id}
        assert all(straight.status(i).state is JobState.SUCCEEDED for i in ids[::37])


async def test_async_client_in_direct_mode(own_redis: str) -> None:
    async with AsyncClient(own_redis) as client:
        job_id = await client.submit("echo", "straight to redis")
        job = await client.status(job_id)
        assert job.state is JobState.QUEUED and job.args == ["straight to redis"]
        assert await client.cancel(job_id) == "cancelled"


def test_direct_mode_lease_sets_how_soon_a_dead_workers_job_runs_again(
    own_redis: str, worker_proc
) -> None:  # type: ignore[no-untyped-def]
    # Given a direct-mode worker with a 2 s lease running a job
    first = worker_proc(own_redis, "--lease", "2", "-c", "1")
    first.wait_connected()
    with Client(own_redis) as client:
        job_id = client.submit("sleep", 1.0, retries=3)
        deadline = time.monotonic() + 30
        while client.status(job_id).state is not JobState.RUNNING:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert client.status(job_id).worker == first.id
        # When it dies with -9 (no connection to drop in direct mode: only the lease tells)
        first.kill()
        second = worker_proc(own_redis, "--lease", "2", "-c", "1")
        # Then its job runs again on the other worker once the 2 s lease is out; with
        # the default 30 s lease it would still be running (lost) at this bound
        job = client.wait(job_id, timeout=20)
        assert job.state is JobState.SUCCEEDED and job.worker == second.id
        assert job.attempts == 2 and job.lost == 1


def test_lease_is_refused_with_a_server(server_proc) -> None:  # type: ignore[no-untyped-def]
    from tests.procs import cli

    server = server_proc()
    for command in (["worker"], ["workers", "2"]):
        out = cli(*command, "--server", server.address, "--lease", "5", timeout=30)
        assert out.returncode != 0
        assert "--lease is for direct mode" in out.stderr and "Traceback" not in out.stderr
