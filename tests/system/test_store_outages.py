"""Faults are weather: real servers and workers outlive a store that fails for a
while, and a job whose result the server cannot take ends for good instead of
running again and again. Real processes, a real redis-server of the test's own."""

from __future__ import annotations

import gzip
import os
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from distqueue.client import Client
from distqueue.errors import StoreError
from distqueue.jobs import TERMINAL_STATES, JobState
from tests.procs import wait_until
from tests.redis_server import free_port, redis_url, start_redis


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


def test_a_redis_restart_stops_nothing(redis: OwnRedis, server_proc, worker_proc) -> None:  # type: ignore[no-untyped-def]
    server = server_proc("--store", redis.url)
    connected = worker_proc(server.address, "-c", "8")
    direct = worker_proc(redis.url, "-c", "8")  # direct mode: on the store itself
    with Client(server.address) as client:
        before = [client.submit("sleep", 0.01) for _ in range(100)]
        wait_until(lambda: all_finished(client, before), what="the first 100 jobs")
        # a client blocked in WAIT across the outage gets its answer afterwards
        later = client.submit("echo", "later", queue="later")
        waited: list[Any] = []

        def wait_for_later() -> None:
            with Client(server.address) as other:
                waited.append(other.wait(later, timeout=120))

        waiter = threading.Thread(target=wait_for_later)
        waiter.start()

        redis.kill()
        # while Redis is away: every process stays up, says so, and refuses writes
        wait_until(lambda: not client.stats()["store"]["ok"], what="STATS to see the outage")
        with pytest.raises(StoreError):
            client.submit("echo", "x")
        time.sleep(3)  # FETCH, BEAT and housekeeping all hit the dead store meanwhile
        assert server.alive and connected.alive and direct.alive

        redis.start()
        wait_until(lambda: client.stats()["store"]["ok"], what="STATS to see the store back")
        after = [client.submit("sleep", 0.01) for _ in range(100)]
        wait_until(lambda: all_finished(client, after), what="the 100 jobs after")
        jobs = [client.status(i) for i in before + after]
        assert [j.state for j in jobs] == [JobState.SUCCEEDED] * 200
        worker_proc(server.address, "-q", "later")
        waiter.join(60)
        assert [j.state for j in waited] == [JobState.SUCCEEDED]
        assert client.stats()["store"]["outages"] == 1
    assert server.alive and connected.alive and direct.alive
    assert "store unavailable" in server.output


@pytest.fixture
def small_disk(tmp_path):  # type: ignore[no-untyped-def]
    """A 24 MiB tmpfs: a disk that can be filled and freed (needs root, as CI has)."""
    if os.geteuid() != 0:
        if os.environ.get("CI"):
            pytest.fail("the full-disk test needs root to mount a tmpfs (CI runs as root)")
        pytest.skip("the full-disk test needs root to mount a tmpfs")
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(path: str) -> None:
    """Write zeros to ``path`` until the disk is full."""
    with open(path, "wb") as f:
        try:
            while True:
                f.write(b"\0" * (1 << 20))
                f.flush()
        except OSError:
            pass


def test_a_full_disk_stops_nothing_and_loses_nothing(small_disk, server_proc, worker_proc) -> None:  # type: ignore[no-untyped-def]
    server = server_proc(data=small_disk / "data")
    with Client(server.address) as client:
        before = [client.submit("echo", str(i), check_type=False, queue="later")
                  for i in range(200)]  # fmt: skip
        filler = str(small_disk / "filler")
        fill(filler)
        accepted, refused = [], 0
        for _ in range(50):  # payloads the full disk cannot take
            try:
                accepted.append(client.submit("echo", "x", payload=os.urandom(64 * 1024),
                                              queue="later"))  # fmt: skip
            except StoreError:
                refused += 1
        assert len(accepted) + refused == 50 and refused != 0
        wait_until(lambda: not client.stats()["store"]["ok"], what="STATS to see the fault")
        assert server.alive
        os.unlink(filler)
        # the store comes back by itself: the next writes work
        after = wait_until(lambda: _try_submit(client), what="a submit to work again")
        wait_until(lambda: client.stats()["store"]["ok"], what="STATS to see the store back")
        worker_proc(server.address, "-q", "later")
        ids = [*before, *accepted, after]
        wait_until(lambda: all_finished(client, ids), what="every acknowledged job")
        assert [client.result(i) for i in before] == [str(i) for i in range(200)]
        assert [client.result(i) for i in accepted] == ["x"] * len(accepted)
        assert client.result(after) == "again"
        # what was refused was not stored: exactly the acknowledged jobs exist
        stats = client.stats()
        assert stats["totals"]["submitted"] == len(ids)
        assert stats["jobs"]["succeeded"] == len(ids)
    assert server.alive


def _try_submit(client: Client) -> int | None:
    try:
        return client.submit("echo", "again", queue="later")
    except StoreError:
        return None


def test_leases_outlive_an_outage_longer_than_themselves(
    redis: OwnRedis, server_proc, worker_proc
) -> None:  # type: ignore[no-untyped-def]
    """Workers cannot renew a lease while the store is away: after the outage they
    get half a lease to heartbeat before any lease is taken back."""
    server = server_proc("--store", redis.url, "--lease", "3")
    w = worker_proc(server.address, "--tasks", "tests.sample_tasks")
    w.wait_connected()
    with Client(server.address) as client:
        job_id = client.submit("progressive", 16, 0.5)  # 8 s, progress every 0.5 s
        # running in the worker (not merely claimed for it): it reported progress
        wait_until(lambda: client.status(job_id).progress is not None, what="it to run")
        redis.kill()
        time.sleep(5)  # longer than the 3 s lease
        redis.start()
        job = client.wait(job_id, timeout=60)
        assert (job.state, job.attempts, job.lost) == (JobState.SUCCEEDED, 1, 0), (
            server.output + "\n-----\n" + w.output
        )
