"""Several servers on one store (Redis or PostgreSQL), workers failing over, a
direct-mode worker beside them, a server killed with -9."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator

import pytest

from distqueue.client import Client
from distqueue.errors import ServerUnavailable
from distqueue.jobs import JobState
from tests.redis_server import free_port, redis_url, start_redis


@pytest.fixture
def redis() -> Iterator[str]:
    redis_url()  # skips (or fails under DISTQUEUE_REQUIRE_REDIS) without redis-server
    port = free_port()
    proc = start_redis(port, tempfile.mkdtemp(prefix="dq-redis-"))
    yield f"redis://127.0.0.1:{port}/0"
    proc.kill()
    proc.wait()


@pytest.fixture(params=["redis", "postgres"])
def shared_store(request: pytest.FixtureRequest) -> Iterator[str]:
    """A store several servers share: a redis-server of the test's own, or a schema of
    its own on the session's PostgreSQL."""
    if request.param == "redis":
        yield request.getfixturevalue("redis")
        return
    from tests.postgres_server import drop_schema, new_schema, postgres_url

    schema = new_schema("servers")
    yield f"{postgres_url()}?schema={schema}"
    drop_schema(schema)


def submit_with_retry(client: Client, specs: list[dict[str, object]]) -> list[int]:
    """A SUBMIT whose answer was lost may or may not have landed: unique keys make
    sending it again safe (each key is one job)."""
    for _ in range(50):
        try:
            return client.submit_many(specs)
        except ServerUnavailable:
            time.sleep(0.1)
    raise AssertionError("no server took the submit")


def test_two_servers_one_store_one_killed_halfway(
    shared_store: str, server_proc, worker_proc
) -> None:  # type: ignore[no-untyped-def]
    # Given two servers on one store, four workers, two on each, each worker told
    # both addresses (its own first), and a fifth worker on the store itself
    a = server_proc("--store", shared_store)
    b = server_proc("--store", shared_store)
    both_a, both_b = f"{a.address},{b.address}", f"{b.address},{a.address}"
    workers = [worker_proc(both_a, "-c", "8"), worker_proc(both_a, "-c", "8"),
               worker_proc(both_b, "-c", "8"), worker_proc(both_b, "-c", "8"),
               worker_proc(shared_store, "-c", "8")]  # fmt: skip
    for w in workers:
        w.wait_connected()
    n = 10_000
    specs = [{"type": "wordcount", "args": f"job {i} words", "unique_key": f"k{i}"}
             for i in range(n)]  # fmt: skip
    ids: list[int] = []
    with Client(both_a, timeout=10) as ca, Client(both_b, timeout=10) as cb:
        for start in range(0, n, 500):
            client = ca if (start // 500) % 2 else cb
            ids += submit_with_retry(client, specs[start : start + 500])
            if start == n // 2:
                a.kill()  # When one server dies with -9, halfway through
        assert len(set(ids)) == n  # one job per key, retries included
        # Then every job succeeds exactly once, as the store records it
        deadline = time.monotonic() + 60
        while cb.stats()["jobs"]["succeeded"] < n:
            assert time.monotonic() < deadline, (cb.stats(), [w.output[-2000:] for w in workers])
            time.sleep(0.2)
        stats = cb.stats()
        assert stats["jobs"]["succeeded"] == n and stats["jobs"]["running"] == 0
        assert stats["totals"]["succeeded"] == n  # no job ended twice
        assert stats["totals"]["submitted"] == n
        for job_id in ids[:: max(1, n // 500)]:
            job = cb.status(job_id)
            assert job.state is JobState.SUCCEEDED and job.attempts >= 1
            assert cb.result(job_id) == 3
        # the workers of the dead server failed over and are still working, and the
        # direct-mode worker took its share
        assert all(w.alive for w in workers)
        assert stats["workers"]["connected"] == 4  # the direct one is on no server
        ran_on = {cb.status(i).worker for i in ids[::50]}
        assert workers[4].id in ran_on


def test_jobs_through_one_server_wake_workers_and_waiters_of_another(
    shared_store: str, server_proc, worker_proc
) -> None:  # type: ignore[no-untyped-def]
    # Given two servers on one store that look at the store on their own only once a
    # minute (--poll 60), and the only worker on server B
    a = server_proc("--store", shared_store, "--poll", "60")
    b = server_proc("--store", shared_store, "--poll", "60")
    worker = worker_proc(b.address, "-c", "2")
    worker.wait_connected()
    # When a client submits through A and waits through A, one job after another
    with Client(a.address, timeout=30) as client:
        started = time.monotonic()
        for i in range(20):
            job_id = client.submit("echo", f"job {i}")
            # Then B's blocked FETCH wakes on A's submit, and A's WAIT on B's ACK:
            # the store's events. Without the first, the job waits for the worker's
            # next FETCH (every 5 s) and this WAIT times out; without the second,
            # each WAIT only sees the job at its 4 s deadline: 80 s for the 20.
            job = client.wait(job_id, timeout=4)
            assert job.state is JobState.SUCCEEDED and job.result == f"job {i}"
            assert job.worker == worker.id
        # a bound on liveness, not a speed claim: half of what polling alone needs
        assert time.monotonic() - started < 40
