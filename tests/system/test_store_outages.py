"""Faults are weather: real servers and workers outlive a store that fails for a
while, and a job whose result the server cannot take ends for good instead of
running again and again. Real processes, a real redis-server of the test's own."""

from __future__ import annotations

import gzip
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from distqueue.client import Client
from distqueue.errors import StoreError
from distqueue.jobs import TERMINAL_STATES, JobState
from tests.redis_server import free_port, redis_url, start_redis


def wait_until(check: Callable[[], Any], timeout: float = 60.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or check}")
        time.sleep(0.1)


def all_finished(client: Client, ids: list[int]) -> bool:
    return all(client.status(i).state in TERMINAL_STATES for i in ids)


def test_a_result_over_the_limit_fails_the_job_once_and_for_good(server_proc, worker_proc) -> None:  # type: ignore[no-untyped-def]
    server = server_proc("--max-payload", "100000")
    worker_proc(server.address, "--grace", "1")
    payload = gzip.compress(b"\0" * 1_000_000)  # 1 MB once unzipped: 10x the limit
    with Client(server.address) as client:
        job_id = client.submit("gunzip", payload=payload, retries=3)
        wait_until(lambda: all_finished(client, [job_id]), what="the job to end")
        job = client.status(job_id)
        assert (job.state, job.attempts, job.failures, job.lost) == (JobState.DEAD, 1, 1, 0)
        assert job.error is not None and job.error.kind == "ResultTooLarge"
        assert job.error.message == "result too large: 1000000 bytes > limit 100000"
        # the worker goes on serving
        ok = client.submit("echo", "still here")
        assert client.result(ok, wait=30) == "still here"


def test_a_worker_with_more_slots_than_one_fetch_may_ask_for(server_proc, worker_proc) -> None:  # type: ignore[no-untyped-def]
    server = server_proc()
    worker = worker_proc(server.address, "-c", "1024")
    with Client(server.address) as client:
        ids = [client.submit("echo", str(i)) for i in range(5)]
        wait_until(lambda: all_finished(client, ids), what="5 jobs")
        assert [client.result(i) for i in ids] == [str(i) for i in range(5)]
    assert worker.alive


class OwnRedis:
    """A redis-server of this test's own that can be stopped and started again on the
    same port and files (AOF, fsync at every write: nothing acknowledged is lost)."""

    def __init__(self) -> None:
        redis_url()  # skips (or fails under DISTQUEUE_REQUIRE_REDIS) without redis-server
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="dq-outage-")
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = start_redis(self.port, self.dir, "--appendonly", "yes",
                                "--appendfsync", "always")  # fmt: skip

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
            self.proc = None


@pytest.fixture
def redis() -> Iterator[OwnRedis]:
    r = OwnRedis()
    yield r
    r.kill()


def test_a_redis_restart_stops_no_server_and_no_worker(redis: OwnRedis, server_proc, worker_proc) -> None:  # type: ignore[no-untyped-def]
    server = server_proc("--store", redis.url)
    connected = worker_proc(server.address, "-c", "8")
    direct = worker_proc(redis.url, "-c", "8")  # direct mode: on the store itself
    with Client(server.address) as client:
        before = [client.submit("sleep", "0.01") for _ in range(100)]
        wait_until(lambda: all_finished(client, before), what="the first 100 jobs")

        redis.kill()
        # while Redis is away: every process stays up, says so, and refuses writes
        wait_until(lambda: not client.stats()["store"]["ok"], what="STATS to see the outage")
        with pytest.raises(StoreError):
            client.submit("echo", "x")
        time.sleep(3)  # FETCH, BEAT and housekeeping all hit the dead store meanwhile
        assert server.alive and connected.alive and direct.alive

        redis.start()
        wait_until(lambda: client.stats()["store"]["ok"], what="STATS to see the store back")
        after = [client.submit("sleep", "0.01") for _ in range(100)]
        wait_until(lambda: all_finished(client, after), what="the 100 jobs after")
        jobs = [client.status(i) for i in before + after]
        assert [j.state for j in jobs] == [JobState.SUCCEEDED] * 200
        assert client.stats()["store"]["outages"] == 1
    assert server.alive and connected.alive and direct.alive
    assert "store unavailable" in server.output
