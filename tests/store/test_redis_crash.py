"""Redis with AOF ``appendfsync always``, killed with -9 at random moments (its
client too), restarted from its append-only file: every acknowledged change is
there, the counts agree with the jobs, and the store goes on working. On the
Redis Cluster the client is killed mid-work (the cluster stays up): every script
it had answered is whole, none half-applied."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import tempfile
import time

import pytest

from distqueue.jobs import JobState
from distqueue.store import open_store
from tests.redis_server import free_port, redis_cluster_url, redis_url, start_redis

ROUNDS = 30 if os.environ.get("DISTQUEUE_SOAK") == "1" else 6
AOF = ("--appendonly", "yes", "--appendfsync", "always")

CHILD = r"""
import asyncio, random, sys, time
from distqueue.jobs import JobSpec
from distqueue.store.redis import RedisStore

async def main(url, seed):
    rng = random.Random(seed)
    from distqueue.store import open_store
    store = await open_store(url, prefix="crash")
    print("R", flush=True)
    n = 0
    while True:
        specs = [JobSpec(type="t", args=[n + i]) for i in range(rng.randint(1, 20))]
        n += len(specs)
        ids = [e.id for e in await store.enqueue(specs, time.time())]
        print("E", *ids, flush=True)
        for job in await store.claim("child", rng.randint(1, 10), time.time()):
            if rng.random() < 0.8:
                await store.complete(job.id, job.token, job.id * 2, time.time())
                print("C", job.id, flush=True)

asyncio.run(main(sys.argv[1], int(sys.argv[2])))
"""


async def _check(url: str, enqueued: list[int], completed: set[int]) -> None:
    store = await open_store(url, prefix="crash")
    try:
        for job_id in enqueued:
            assert await store.get(job_id) is not None, f"acknowledged job {job_id} lost"
        for job_id in completed:
            job = await store.get(job_id)
            assert job is not None and job.state is JobState.SUCCEEDED
            assert job.result == job_id * 2
        stats = await store.stats()
        listed = await store.list(limit=1000)
        total = sum(stats.by_state.values())
        assert total >= len(listed) and total >= len(enqueued)
        now = time.time() + 3600
        await store.expire(now)
        while jobs := await store.claim("checker", 100, now):
            for job in jobs:
                await store.complete(job.id, job.token, job.id * 2, now)
        after = await store.stats()
        assert after.by_state["queued"] == after.by_state["running"] == 0
        assert after.by_state["succeeded"] == total
    finally:
        await store.close()


@pytest.mark.timeout(600)
def test_redis_killed_with_aof_always_loses_nothing_acknowledged() -> None:
    redis_url()  # skips (or fails under DISTQUEUE_REQUIRE_REDIS) without redis-server
    rng = random.Random(11)
    directory = tempfile.mkdtemp(prefix="dq-aof-")
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    server = start_redis(port, directory, *AOF)
    try:
        for round_ in range(ROUNDS):
            child = subprocess.Popen([sys.executable, "-c", CHILD, url, str(round_)],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
            assert child.stdout is not None
            assert child.stdout.readline() == b"R\n"
            time.sleep(rng.uniform(0.05, 0.4))
            server.send_signal(signal.SIGKILL)  # Redis dies first, mid-write
            server.wait()
            child.kill()
            out, _ = child.communicate(timeout=30)
            lines = [line for line in out.decode().split("\n")[:-1] if line]
            enqueued = [int(i) for line in lines if line[0] == "E" for i in line.split()[1:]]
            completed = {int(line.split()[1]) for line in lines if line[0] == "C"}
            assert enqueued, "the kill came before any work"
            server = start_redis(port, directory, *AOF)  # replays its append-only file
            asyncio.run(_check(url, enqueued, completed))
    finally:
        server.kill()
        server.wait()


def test_cluster_client_killed_mid_work_leaves_nothing_half_done() -> None:
    url = redis_cluster_url()
    rng = random.Random(5)
    for round_ in range(ROUNDS):
        child = subprocess.Popen([sys.executable, "-c", CHILD, url, str(round_)],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
        assert child.stdout is not None
        assert child.stdout.readline() == b"R\n", child.stderr.read() if child.stderr else ""
        time.sleep(rng.uniform(0.05, 0.4))
        child.kill()
        out, _ = child.communicate(timeout=30)
        lines = [line for line in out.decode().split("\n")[:-1] if line]
        enqueued = [int(i) for line in lines if line[0] == "E" for i in line.split()[1:]]
        completed = {int(line.split()[1]) for line in lines if line[0] == "C"}
        assert enqueued, "the kill came before any work"
        asyncio.run(_check(url, enqueued, completed))
