"""How fast the dashboard's pages answer with a million jobs stored (issue #11).

Fills an embedded store with ``--jobs`` jobs (default 1,000,000: 4 queues, 6 types,
a rare queue and a rare type of 100 jobs each; 10% run to success, 1% dead), starts
a server with its admin port on it, and times each page through HTTP: the median
and 95th percentile of ``--repeat`` requests, the first of each discarded.

    python benchmarks/dashboard_pages.py [--jobs N] [--data DIR] [--repeat 20]

The store is kept in --data (reused when it holds the jobs already).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from pathlib import Path

import aiohttp

from distqueue.config import ServerConfig
from distqueue.jobs import JobError, JobSpec, JobState
from distqueue.server.server import Server
from distqueue.store import open_store

QUEUES = ["default", "emails", "reports", "images"]
TYPES = ["echo", "wordcount", "charcount", "capitalize", "noop", "gzip"]
RARE = 100


async def fill(data: Path, n: int) -> None:
    store = await open_store(str(data), synchronous="NORMAL")
    try:
        have = (await store.stats()).by_state
        if sum(have.values()) >= n:
            print(f"store already holds {sum(have.values())} jobs")
            return
        now = time.time()
        start = time.monotonic()
        batch = 10_000
        rare_every = n // RARE
        for base in range(0, n, batch):
            specs = []
            for i in range(base, min(n, base + batch)):
                queue = QUEUES[i % len(QUEUES)]
                type_ = TYPES[i % len(TYPES)]
                if i % rare_every == 1:
                    queue = "rare"
                if i % rare_every == 2:
                    type_ = "raretype"
                specs.append(JobSpec(type=type_, args=[f"job {i}", "<b>text</b>"], queue=queue,
                                     priority=i % 11))  # fmt: skip
            await store.enqueue(specs, now)
        print(f"enqueued {n} jobs in {time.monotonic() - start:.0f}s")
        done = 0
        while done < n // 10:
            jobs = await store.claim("bench", 1000, now, queues=None, types=None)
            if not jobs:
                break
            items = [(j.id, j.token, "ok") for j in jobs[:990]]
            await store.complete_many(items, now, worker="bench")
            for j in jobs[990:]:
                await store.fail(j.id, j.token, JobError(kind="ValueError", message="bad <i>"),
                                 now, retryable=False, worker="bench")  # fmt: skip
            done += len(jobs)
        print(f"ran {done} of them (99% succeeded, 1% dead)")
    finally:
        await store.close()


async def timed(session: aiohttp.ClientSession, url: str, repeat: int) -> tuple[float, float, int]:
    times = []
    size = 0
    for i in range(repeat + 1):
        start = time.perf_counter()
        async with session.get(url, headers={"Accept": "text/html"}) as response:
            body = await response.read()
            assert response.status == 200, (url, response.status, body[:200])
        if i:
            times.append(time.perf_counter() - start)
            size = len(body)
    times.sort()
    return statistics.median(times), times[int(len(times) * 0.95) - 1], size


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--data", default="/tmp/dq-dashboard-bench")
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    data = Path(args.data)
    await fill(data, args.jobs)
    server = Server(ServerConfig(port=0, data=str(data), http="127.0.0.1:0"))
    await server.start()
    assert server.admin is not None
    base = f"http://127.0.0.1:{server.admin.port}"
    try:
        await asyncio.sleep(1.5)  # the first snapshot
        async with aiohttp.ClientSession() as session:
            # the oldest jobs' ids: a page deep in the list
            store = server.service.store
            some = await store.list(state=JobState.QUEUED, limit=1)
            deep = max(1, some[0].id - args.jobs // 2) if some else 1
            dead = await store.list(state=JobState.DEAD, limit=1)
            pages = {
                "/ (overview)": "/",
                "/jobs (newest)": "/jobs",
                "/jobs?state=queued": "/jobs?state=queued",
                f"/jobs?state=queued&before={deep}": f"/jobs?state=queued&before={deep}",
                "/jobs?state=succeeded": "/jobs?state=succeeded",
                "/jobs?queue=rare (100 of N)": "/jobs?queue=rare",
                "/jobs?type=raretype (100 of N)": "/jobs?type=raretype",
                "/jobs?queue=nosuch (none: the whole table)": "/jobs?queue=nosuch",
                "/jobs?queue=emails&state=queued": "/jobs?queue=emails&state=queued",
                "/dead": "/dead",
                "/jobs/{id}": f"/jobs/{dead[0].id if dead else 1}",
                "/workers": "/workers",
                "/metrics": "/metrics",
                "/health": "/health",
            }
            print(f"\n{args.jobs:,} jobs stored; {args.repeat} requests per page\n")
            print("| page | median ms | p95 ms | bytes |")
            print("|---|---|---|---|")
            for name, path in pages.items():
                med, p95, size = await timed(session, base + path, args.repeat)
                print(f"| `{name}` | {med * 1000:.1f} | {p95 * 1000:.1f} | {size:,} |")
    finally:
        await server.shutdown()


if __name__ == "__main__":
    asyncio.run(main())
