"""PostgreSQL killed with -9 at random moments mid-traffic (its client too), then
started again (crash recovery from the WAL): every acknowledged enqueue and
completion is there, no fencing token is handed out twice, the counters agree with
the jobs, and the store goes on working. And a client killed mid-work on a server
that stays up leaves nothing half done (every operation is one transaction).

The cluster is the test's own: initdb and pg_ctl's postgres on a free port, in a
temp dir (tests/postgres_server.py).
"""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys
import time

import pytest

from distqueue.jobs import JobState
from distqueue.store import open_store
from tests.postgres_server import drop_schema, new_schema, postgres_url, start_cluster
from tests.redis_server import free_port

pytest.importorskip("psycopg")

ROUNDS = 20 if os.environ.get("DISTQUEUE_SOAK") == "1" else 4

CHILD = r"""
import asyncio, random, sys, time
from distqueue.jobs import JobSpec
from distqueue.store import open_store

async def main(url, seed):
    rng = random.Random(seed)
    store = await open_store(url)
    print("R", flush=True)
    n = 0
    while True:
        specs = [JobSpec(type="t", args=[n + i]) for i in range(rng.randint(1, 20))]
        n += len(specs)
        ids = [e.id for e in await store.enqueue(specs, time.time())]
        print("E", *ids, flush=True)
        for job in await store.claim("child", rng.randint(1, 10), time.time(), lease=1):
            print("L", job.id, job.token, flush=True)
            if rng.random() < 0.8:
                await store.complete(job.id, job.token, job.id * 2, time.time())
                print("C", job.id, flush=True)

asyncio.run(main(sys.argv[1], int(sys.argv[2])))
"""


def _parse(out: bytes) -> tuple[list[int], set[int], dict[int, int]]:
    lines = [line for line in out.decode().split("\n")[:-1] if line]
    enqueued = [int(i) for line in lines if line[0] == "E" for i in line.split()[1:]]
    completed = {int(line.split()[1]) for line in lines if line[0] == "C"}
    tokens: dict[int, int] = {}
    for line in lines:
        if line[0] == "L":
            _, job_id, token = line.split()
            tokens[int(job_id)] = max(tokens.get(int(job_id), 0), int(token))
    return enqueued, completed, tokens


async def _check(
    url: str, enqueued: list[int], completed: set[int], tokens: dict[int, int]
) -> None:
    import psycopg

    store = await open_store(url)
    try:
        for job_id in enqueued:
            assert await store.get(job_id) is not None, f"acknowledged job {job_id} lost"
        for job_id in completed:
            job = await store.get(job_id)
            assert job is not None and job.state is JobState.SUCCEEDED
            assert job.result == job_id * 2
        # the counters agree with the jobs (counted here, once, the slow way)
        stats = await store.stats()
        base, _, _ = url.partition("?")
        schema = url.split("schema=")[1] if "schema=" in url else "distqueue"
        async with await psycopg.AsyncConnection.connect(base) as conn:
            cur = await conn.execute(f"SELECT state, count(*) FROM {schema}.jobs GROUP BY state")
            counted = {list(JobState)[s].value: n for s, n in await cur.fetchall()}
        assert {k: v for k, v in stats.by_state.items() if v} == counted
        total = sum(stats.by_state.values())
        now = time.time() + 3600
        await store.expire(now)
        while jobs := await store.claim("checker", 100, now):
            for job in jobs:
                # a token is never handed out twice, even for a claim the crash lost
                assert job.token > tokens.get(job.id, 0)
                await store.complete(job.id, job.token, job.id * 2, now)
        after = await store.stats()
        assert after.by_state["queued"] == after.by_state["running"] == 0
        assert after.by_state["succeeded"] == total
    finally:
        await store.close()


def _working(url: str, round_: int) -> subprocess.Popen[bytes]:
    """The CHILD process, once it has said it is at work."""
    child = subprocess.Popen([sys.executable, "-c", CHILD, url, str(round_)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    assert child.stdout is not None
    ready = child.stdout.readline()
    assert ready == b"R\n", child.stderr.read() if child.stderr else ready
    return child


def _killed(child: subprocess.Popen[bytes]) -> tuple[list[int], set[int], dict[int, int]]:
    """What a killed CHILD had acknowledged (enqueued, completed, tokens)."""
    child.kill()
    out, _ = child.communicate(timeout=30)
    enqueued, completed, tokens = _parse(out)
    assert enqueued, "the kill came before any work"
    return enqueued, completed, tokens


@pytest.mark.timeout(600)
def test_postgres_killed_mid_traffic_loses_nothing_acknowledged() -> None:
    postgres_url()  # skips (or fails under DISTQUEUE_REQUIRE_POSTGRES) without a server
    rng = random.Random(13)
    cluster = start_cluster(free_port())
    url = cluster.url + "?schema=crash"
    try:
        for round_ in range(ROUNDS):
            child = _working(url, round_)
            time.sleep(rng.uniform(0.1, 0.6))
            cluster.kill()  # the postmaster dies first, mid-transaction
            enqueued, completed, tokens = _killed(child)
            cluster.restart()  # crash recovery: replays the WAL
            asyncio.run(_check(url, enqueued, completed, tokens))
    finally:
        cluster.stop()


def test_client_killed_mid_work_leaves_nothing_half_done() -> None:
    schema = new_schema("crash")
    url = postgres_url() + f"?schema={schema}"
    rng = random.Random(5)
    try:
        for round_ in range(ROUNDS):
            child = _working(url, round_)
            time.sleep(rng.uniform(0.05, 0.4))
            enqueued, completed, tokens = _killed(child)
            asyncio.run(_check(url, enqueued, completed, tokens))
    finally:
        drop_schema(schema)
